/* test_dsn: the structure of RFC 3464 bounces built by dsn_build. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sdps/dsn.h"

#define HDRS	"From: a@example.org\r\nSubject: hello\r\n" \
		"X-Long: folded\r\n\tcontinued\r\n"

struct row {
	const char	*name;
	size_t		 nrcpts;
	const char	*diag;		/* for every recipient, may be NULL */
	const char	*headers;	/* may be NULL */
	const char	*headers_part;	/* what the rfc822-headers part holds */
};

static const struct row rows[] = {
	{ "one rcpt, diag", 1, "550 5.1.1 no such user", HDRS, HDRS },
	{ "three rcpts, no diag", 3, NULL, HDRS, HDRS },
	{ "body cut off", 2, "554 5.7.1 refused",
	    HDRS "\r\nbody text\r\n--sdps-dsn-fake\r\n", HDRS },
	{ "no headers", 1, "451 x", NULL, "" },
	{ "control chars in diag", 1, "550 bad\r\nInjected: yes\x01", HDRS,
	    HDRS },
};

static const char *const addrs[] = {
	"alice@fred.example.net", "bob@fred.example.net",
	"carol@fred.example.net"
};

static size_t
count(const char *hay, const char *needle)
{
	size_t		 n = 0;
	const char	*p = hay;

	while ((p = strstr(p, needle)) != NULL) {
		n++;
		p += strlen(needle);
	}
	return n;
}

/* Every line ends in CRLF, none is over 998 octets, all is 7-bit. */
static void
check_lines(const char *name, const char *msg, size_t len)
{
	size_t	 i, col = 0;

	for (i = 0; i < len; i++) {
		if (msg[i] == '\n') {
			if (i == 0 || msg[i - 1] != '\r')
				fail_msg("%s: bare LF at %zu", name, i);
			col = 0;
			continue;
		}
		if (msg[i] == '\r' && (i + 1 == len || msg[i + 1] != '\n'))
			fail_msg("%s: bare CR at %zu", name, i);
		if ((unsigned char)msg[i] >= 0x80 || msg[i] == '\0')
			fail_msg("%s: non-ASCII octet at %zu", name, i);
		if (++col > 999)
			fail_msg("%s: line over 998 octets at %zu", name, i);
	}
	if (len < 2 || msg[len - 2] != '\r' || msg[len - 1] != '\n')
		fail_msg("%s: does not end in CRLF", name);
}

/* The MIME boundary from the top-level Content-Type. */
static void
get_boundary(const char *name, const char *msg, char *out, size_t outlen)
{
	const char	*p, *q;

	if ((p = strstr(msg, "boundary=\"")) == NULL)
		fail_msg("%s: no boundary", name);
	p += strlen("boundary=\"");
	if ((q = strchr(p, '"')) == NULL || (size_t)(q - p) >= outlen)
		fail_msg("%s: bad boundary", name);
	memcpy(out, p, (size_t)(q - p));
	out[q - p] = '\0';
}

static void
check_row(const struct row *r)
{
	struct dsn_rcpt	 rc[3];
	struct dsn	 d;
	char		*msg, *hdr_end, *part, *end, bnd[128], delim[140];
	char		 want[256];
	size_t		 len, i;

	memset(&d, 0, sizeof(d));
	for (i = 0; i < r->nrcpts; i++) {
		rc[i].addr = addrs[i];
		rc[i].status = "5.1.1";
		rc[i].diag = r->diag;
	}
	d.reporting_host = "punt1.example.net";
	d.sender = "sender@example.org";
	d.arrival_us = 1700000000ULL * 1000000;
	d.reason = "It could not be delivered.";
	d.rcpts = rc;
	d.nrcpts = r->nrcpts;
	d.headers = r->headers;
	d.headers_len = r->headers != NULL ? strlen(r->headers) : 0;
	if (dsn_build(&d, &msg, &len) == -1)
		fail_msg("%s: dsn_build failed", r->name);
	if (strlen(msg) != len)
		fail_msg("%s: length %zu, strlen %zu", r->name, len,
		    strlen(msg));
	check_lines(r->name, msg, len);

	/* Top-level header block. */
	if ((hdr_end = strstr(msg, "\r\n\r\n")) == NULL)
		fail_msg("%s: no header/body separator", r->name);
	*hdr_end = '\0';
	if (strstr(msg, "\r\nTo: <sender@example.org>\r\n") == NULL ||
	    strstr(msg, "MIME-Version: 1.0\r\n") == NULL ||
	    strstr(msg, "Content-Type: multipart/report; "
	    "report-type=delivery-status;") == NULL ||
	    strstr(msg, "\r\nDate: ") == NULL ||
	    strncmp(msg, "From: ", 6) != 0 ||
	    strstr(msg, "Auto-Submitted: auto-replied") == NULL)
		fail_msg("%s: top-level header missing something:\n%s",
		    r->name, msg);
	get_boundary(r->name, msg, bnd, sizeof(bnd));
	*hdr_end = '\r';

	/* Exactly three parts, in RFC 3462 order, then the close. */
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", bnd);
	if (count(msg, delim) != 3)
		fail_msg("%s: %zu part delimiters", r->name,
		    count(msg, delim));
	snprintf(want, sizeof(want), "\r\n--%s--\r\n", bnd);
	if (len < strlen(want) || strcmp(msg + len - strlen(want), want) != 0)
		fail_msg("%s: no close delimiter at the end", r->name);
	part = strstr(msg, delim) + strlen(delim);
	if (strncmp(part, "Content-Type: text/plain", 24) != 0)
		fail_msg("%s: first part is not text/plain", r->name);
	part = strstr(part, delim) + strlen(delim);
	if (strncmp(part, "Content-Type: message/delivery-status\r\n\r\n",
	    41) != 0)
		fail_msg("%s: second part is not message/delivery-status",
		    r->name);
	if (strstr(part, "Reporting-MTA: dns; punt1.example.net\r\n") ==
	    NULL || strstr(part, "Arrival-Date: ") == NULL)
		fail_msg("%s: per-message fields missing", r->name);
	if (count(part, "Final-Recipient: rfc822; ") != r->nrcpts ||
	    count(part, "Action: failed\r\n") != r->nrcpts ||
	    count(part, "Status: 5.1.1\r\n") != r->nrcpts ||
	    count(part, "Diagnostic-Code: smtp; ") !=
	    (r->diag != NULL ? r->nrcpts : 0))
		fail_msg("%s: per-recipient fields wrong", r->name);
	for (i = 0; i < r->nrcpts; i++) {
		snprintf(want, sizeof(want), "\r\nFinal-Recipient: rfc822; "
		    "%s\r\n", addrs[i]);
		if (strstr(part, want) == NULL)
			fail_msg("%s: no Final-Recipient for %s", r->name,
			    addrs[i]);
	}
	if (strstr(msg, "\r\nInjected: yes") != NULL)
		fail_msg("%s: diag text broke out of its line", r->name);
	part = strstr(part, delim) + strlen(delim);
	if (strncmp(part, "Content-Type: text/rfc822-headers\r\n\r\n", 37)
	    != 0)
		fail_msg("%s: third part is not text/rfc822-headers", r->name);
	part += 37;
	snprintf(want, sizeof(want), "\r\n--%s--\r\n", bnd);
	end = strstr(part, want);
	if (end == NULL)
		fail_msg("%s: third part not closed", r->name);
	/* The part holds the header block and nothing after it. */
	if ((size_t)(end - part) != strlen(r->headers_part) ||
	    strncmp(part, r->headers_part, (size_t)(end - part)) != 0)
		fail_msg("%s: headers part is %zu octets, want %zu",
		    r->name, (size_t)(end - part), strlen(r->headers_part));
	if (strstr(part, "body text") != NULL)
		fail_msg("%s: body leaked into the headers part", r->name);
	free(msg);
}

static void
test_rows(void **state)
{
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		check_row(&rows[i]);
}

/* Two bounces get different boundaries (and ids), so nesting one in the
 * other cannot confuse a parser. */
static void
test_boundary_random(void **state)
{
	struct dsn_rcpt	 rc = { "a@b.example", "5.0.0", NULL };
	struct dsn	 d;
	char		*m1, *m2, b1[128], b2[128];
	size_t		 l1, l2;

	(void)state;
	memset(&d, 0, sizeof(d));
	d.reporting_host = "h";
	d.sender = "s@example.org";
	d.reason = "r";
	d.rcpts = &rc;
	d.nrcpts = 1;
	assert_int_equal(dsn_build(&d, &m1, &l1), 0);
	assert_int_equal(dsn_build(&d, &m2, &l2), 0);
	get_boundary("first", m1, b1, sizeof(b1));
	get_boundary("second", m2, b2, sizeof(b2));
	assert_string_not_equal(b1, b2);
	free(m1);
	free(m2);
}

/* A very long remote reply is cut, not allowed to make a line > 998. */
static void
test_long_diag(void **state)
{
	struct dsn_rcpt	 rc;
	struct dsn	 d;
	char		 diag[4000], *m;
	size_t		 len;

	(void)state;
	memset(diag, 'x', sizeof(diag) - 1);
	diag[sizeof(diag) - 1] = '\0';
	rc.addr = "a@b.example";
	rc.status = "5.0.0";
	rc.diag = diag;
	memset(&d, 0, sizeof(d));
	d.reporting_host = "h";
	d.sender = "s@example.org";
	d.reason = "r";
	d.rcpts = &rc;
	d.nrcpts = 1;
	assert_int_equal(dsn_build(&d, &m, &len), 0);
	check_lines("long diag", m, len);
	assert_non_null(strstr(m, "Diagnostic-Code: smtp; xxx"));
	free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rows),
		cmocka_unit_test(test_boundary_random),
		cmocka_unit_test(test_long_diag),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
