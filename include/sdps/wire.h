/*
 * wire: turn an incoming message into the stored wire format: CRLF line
 * ends (bare LF and bare CR become CRLF), dot-stuffing applied, a final
 * CRLF added if missing, and no terminating "." line.
 *
 * Error convention: enum wire_res, the first error in the input, which
 * the caller maps to its protocol's reply (wire_strerror for text).
 */
#ifndef SDPS_WIRE_H
#define SDPS_WIRE_H

#include <stddef.h>
#include <stdint.h>

enum wire_res {
	WIRE_OK,
	WIRE_NUL,		/* a NUL octet in the message */
	WIRE_NO_HEADER,		/* does not start with a header field */
	WIRE_TOO_BIG,		/* over max_octets */
	WIRE_NOMEM
};

struct wire {
	char	*buf;		/* wire-format data, malloc'd */
	size_t	 len, cap;
	uint64_t body_octets;	/* unstuffed CRLF size (what POP3 counts) */
	uint64_t max_octets;	/* limit on body_octets; 0 = none */
	uint64_t drained;	/* octets handed out by wire_drain so far */
	/* private parser state */
	int	 st_bol, st_cr, st_hdr;
	uint64_t st_lines;
};

/* Start a conversion; max_octets 0 means no limit. */
void	wire_init(struct wire *w, uint64_t max_octets);

/*
 * Feed raw input (any line ends).  Returns WIRE_OK or the first error;
 * after an error the struct only needs wire_free.
 */
enum wire_res wire_feed(struct wire *w, const void *data, size_t len);

/* End of input: final CRLF, header check.  Returns WIRE_OK or an error. */
enum wire_res wire_finish(struct wire *w);

void	wire_free(struct wire *w);

/*
 * Streaming: once the caller has written out buf[0..len), forget it
 * (drained grows by len; the octet counts and the parser state stay), so
 * the buffer holds at most what the feeds since the last drain produced.
 * The whole output so far is drained + len octets.
 */
void	wire_drain(struct wire *w);

/* A short English reason for res. */
const char *wire_strerror(enum wire_res res);

#endif
