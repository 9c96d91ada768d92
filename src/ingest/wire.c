/*
 * wire: convert an incoming message (any line ends) into the stored wire
 * format, so RETR and an SMTP DATA phase can send the spool file as is;
 * and TOP's cut of that format (the POP3 session and the punt server).
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/wire.h"

/* st_hdr: where the check of the first line ("name:") stands. */
#define HDR_START	0	/* nothing of the first line seen yet */
#define HDR_NAME	1	/* inside the field name */
#define HDR_OK		2	/* the colon came after a non-empty name */
#define HDR_BAD		3

void
wire_init(struct wire *w, uint64_t max_octets)
{
	memset(w, 0, sizeof(*w));
	w->max_octets = max_octets;
	w->st_bol = 1;
	w->st_hdr = HDR_START;
}

void
wire_free(struct wire *w)
{
	free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

void
wire_drain(struct wire *w)
{
	w->drained += w->len;
	w->len = 0;
}

const char *
wire_strerror(enum wire_res res)
{
	switch (res) {
	case WIRE_OK:
		return "ok";
	case WIRE_NUL:
		return "message contains a NUL octet";
	case WIRE_NO_HEADER:
		return "message does not start with a header field";
	case WIRE_TOO_BIG:
		return "message too big";
	case WIRE_NOMEM:
		return "out of memory";
	}
	return "unknown error";
}

/* Make room for need more octets; doubling keeps appends amortised O(1). */
static enum wire_res
reserve(struct wire *w, size_t need)
{
	size_t	 ncap;
	char	*nbuf;

	if (need > SIZE_MAX - w->len)
		return WIRE_NOMEM;
	if (w->len + need <= w->cap)
		return WIRE_OK;
	ncap = w->cap ? w->cap : 4096;
	while (ncap < w->len + need) {
		if (ncap > SIZE_MAX / 2)
			return WIRE_NOMEM;
		ncap *= 2;
	}
	if ((nbuf = realloc(w->buf, ncap)) == NULL)
		return WIRE_NOMEM;
	w->buf = nbuf;
	w->cap = ncap;
	return WIRE_OK;
}

static enum wire_res
line_end(struct wire *w)
{
	w->buf[w->len++] = '\r';
	w->buf[w->len++] = '\n';
	w->body_octets += 2;
	w->st_bol = 1;
	w->st_lines++;
	/* A first line that ended before its colon is not a header field. */
	if (w->st_hdr != HDR_OK)
		w->st_hdr = HDR_BAD;
	if (w->st_hdr == HDR_BAD)
		return WIRE_NO_HEADER;
	if (w->max_octets != 0 && w->body_octets > w->max_octets)
		return WIRE_TOO_BIG;
	return WIRE_OK;
}

static void
check_header(struct wire *w, unsigned char c)
{
	if (w->st_hdr == HDR_OK || w->st_hdr == HDR_BAD)
		return;
	if (c == ':' && w->st_hdr == HDR_NAME)
		w->st_hdr = HDR_OK;
	else if (c > ' ' && c < 0x7f && c != ':')
		w->st_hdr = HDR_NAME;
	else
		w->st_hdr = HDR_BAD;
}

enum wire_res
wire_feed(struct wire *w, const void *data, size_t len)
{
	const unsigned char	*p = data;
	enum wire_res		 r;
	size_t			 i;

	if (len == 0)
		return WIRE_OK;
	/* Worst case every octet doubles (LF, lone CR, stuffed dot). */
	if (len > SIZE_MAX / 2 - 2)
		return WIRE_NOMEM;
	if ((r = reserve(w, 2 * len + 2)) != WIRE_OK)
		return r;
	for (i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (w->st_cr) {
			w->st_cr = 0;
			if ((r = line_end(w)) != WIRE_OK)
				return r;
			if (c == '\n')
				continue;
		}
		if (c == '\r') {
			w->st_cr = 1;
			continue;
		}
		if (c == '\n') {
			if ((r = line_end(w)) != WIRE_OK)
				return r;
			continue;
		}
		if (c == '\0')
			return WIRE_NUL;
		if (w->st_lines == 0)
			check_header(w, c);
		if (w->st_hdr == HDR_BAD)
			return WIRE_NO_HEADER;
		/* RFC 5321 §4.5.2: the stuffed dot is not part of the size. */
		if (w->st_bol && c == '.')
			w->buf[w->len++] = '.';
		w->buf[w->len++] = (char)c;
		w->body_octets++;
		w->st_bol = 0;
		if (w->max_octets != 0 && w->body_octets > w->max_octets)
			return WIRE_TOO_BIG;
	}
	return WIRE_OK;
}

enum wire_res
wire_finish(struct wire *w)
{
	enum wire_res	 r;

	if (w->st_cr || !w->st_bol) {
		if ((r = reserve(w, 2)) != WIRE_OK)
			return r;
		w->st_cr = 0;
		if ((r = line_end(w)) != WIRE_OK)
			return r;
	}
	if (w->st_hdr != HDR_OK)
		return WIRE_NO_HEADER;
	return WIRE_OK;
}

void
wire_top_init(struct wire_top *t, uint64_t lines)
{
	t->body_left = lines;
	t->in_header = true;
	t->line_empty = true;
	t->done = false;
}

size_t
wire_top_feed(struct wire_top *t, const char *p, size_t len)
{
	size_t	 i;

	for (i = 0; i < len && !t->done; i++) {
		if (p[i] == '\n') {
			if (t->in_header) {
				if (t->line_empty) {
					t->in_header = false;
					t->done = t->body_left == 0;
				}
			} else if (--t->body_left == 0)
				t->done = true;
			t->line_empty = true;
		} else if (p[i] != '\r')
			t->line_empty = false;
	}
	return i;
}
