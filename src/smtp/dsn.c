/* dsn: RFC 3464 delivery status notifications, built in memory. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/dsn.h"
#include "sdps/util.h"

#define DSN_TEXT_MAX	900	/* octets of remote text per line */

struct buf {
	char	*p;
	size_t	 len, cap;
	int	 failed;
};

static void buf_printf(struct buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;
	size_t	 want;
	char	*np;

	if (b->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		want = b->cap * 2 + (size_t)n + 1;
		if ((np = realloc(b->p, want)) == NULL) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = want;
	}
}

static void
buf_add(struct buf *b, const char *s, size_t len)
{
	char	*np;
	size_t	 want;

	if (b->failed)
		return;
	if (b->cap - b->len <= len) {
		want = b->cap * 2 + len + 1;
		if ((np = realloc(b->p, want)) == NULL) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = want;
	}
	memcpy(b->p + b->len, s, len);
	b->len += len;
	b->p[b->len] = '\0';
}

/*
 * A remote server's reply text goes into header-like fields: keep it on
 * one line, 7-bit (the parts say us-ascii), and well inside RFC 5322's
 * 998 octets.  Returns a static buffer.
 */
static const char *
one_line(const char *s)
{
	static char	 out[DSN_TEXT_MAX + 1];
	size_t		 i;

	for (i = 0; s[i] != '\0' && i < DSN_TEXT_MAX; i++)
		out[i] = (unsigned char)s[i] < 0x20 ||
		    (unsigned char)s[i] >= 0x7f ? '?' : s[i];
	out[i] = '\0';
	return out;
}

/*
 * The text/rfc822-headers part must hold only the header block: stop at
 * the first empty line even if the caller passed more.
 */
static size_t
header_block_len(const char *h, size_t len)
{
	size_t	 i;

	for (i = 0; i + 1 < len; i++)
		if (h[i] == '\n' && (h[i + 1] == '\n' ||
		    (h[i + 1] == '\r' && i + 2 < len && h[i + 2] == '\n')))
			return i + 1;
	return len;
}

int
dsn_build(const struct dsn *d, char **out, size_t *len)
{
	struct buf	 b = { NULL, 0, 4096, 0 };
	unsigned char	 rnd[8];
	char		 boundary[64], now[64], arrival[64];
	FILE		*urandom;
	size_t		 i;

	if ((b.p = malloc(b.cap)) == NULL)
		return -1;
	/* The boundary only has to be absent from the parts; a random
	 * token with a fixed prefix is the usual way to make sure. */
	memset(rnd, 0, sizeof(rnd));
	if ((urandom = fopen("/dev/urandom", "re")) != NULL) {
		if (fread(rnd, 1, sizeof(rnd), urandom) != sizeof(rnd))
			memset(rnd, 0x5a, sizeof(rnd));
		fclose(urandom);
	}
	snprintf(boundary, sizeof(boundary),
	    "sdps-dsn-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
	    rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	util_rfc5322_date(util_now_us(), now, sizeof(now));
	util_rfc5322_date(d->arrival_us, arrival, sizeof(arrival));

	buf_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: Undelivered Mail Returned to Sender\r\n"
	    "Date: %s\r\n"
	    "Message-ID: <%s@%s>\r\n"
	    "Auto-Submitted: auto-replied\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n"
	    "\r\n"
	    "This is a MIME-encapsulated message.\r\n"
	    "\r\n"
	    "--%s\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "\r\n"
	    "%s\r\n"
	    "\r\n",
	    d->reporting_host, d->sender, now, boundary, d->reporting_host,
	    boundary, boundary, d->reason);
	for (i = 0; i < d->nrcpts; i++)
		buf_printf(&b, "<%s>: %s\r\n", d->rcpts[i].addr,
		    one_line(d->rcpts[i].diag != NULL ? d->rcpts[i].diag :
		    d->rcpts[i].status));
	buf_printf(&b, "\r\n--%s\r\n"
	    "Content-Type: message/delivery-status\r\n"
	    "\r\n"
	    "Reporting-MTA: dns; %s\r\n"
	    "Arrival-Date: %s\r\n",
	    boundary, d->reporting_host, arrival);
	for (i = 0; i < d->nrcpts; i++) {
		buf_printf(&b, "\r\n"
		    "Final-Recipient: rfc822; %s\r\n"
		    "Action: failed\r\n"
		    "Status: %s\r\n",
		    d->rcpts[i].addr, d->rcpts[i].status);
		if (d->rcpts[i].diag != NULL)
			buf_printf(&b, "Diagnostic-Code: smtp; %s\r\n",
			    one_line(d->rcpts[i].diag));
	}
	buf_printf(&b, "\r\n--%s\r\n"
	    "Content-Type: text/rfc822-headers\r\n"
	    "\r\n", boundary);
	if (d->headers != NULL)
		buf_add(&b, d->headers, header_block_len(d->headers,
		    d->headers_len));
	buf_printf(&b, "\r\n--%s--\r\n", boundary);
	if (b.failed) {
		free(b.p);
		errno = ENOMEM;
		return -1;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}
