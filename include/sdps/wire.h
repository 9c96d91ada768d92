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

#include <stdbool.h>
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

/*
 * TOP's cut of a stored message (RFC 1939 TOP): the header block, the
 * blank line, then body lines while any are left.  One rule for the POP3
 * session (which sends the cut) and the punt server (which counts it for
 * the link's "+OK N", docs/punt-protocol.md).  Feed the stored data in
 * order: wire_top_feed returns how many octets of the chunk belong to the
 * cut, and sets done once it is complete (nothing more belongs to it).
 */
struct wire_top {
	uint64_t	 body_left;
	bool		 in_header;
	bool		 line_empty;
	bool		 done;
};

void	wire_top_init(struct wire_top *t, uint64_t lines);
size_t	wire_top_feed(struct wire_top *t, const char *p, size_t len);

/* A short English reason for res. */
const char *wire_strerror(enum wire_res res);

#endif
