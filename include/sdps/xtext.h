/*
 * xtext: RFC 3461 §4's encoding of envelope fields on the punt link
 * (docs/punt-protocol.md §2): every octet outside "!".."~", and "+" and
 * "=", becomes "+XX" (two upper-case hex digits).  So a sender or a
 * recipient is always one space-free token.  Used by both ends of the
 * link (the punt server and link.c).
 *
 * Error convention: 0, or -1 (nothing logged).
 */
#ifndef SDPS_XTEXT_H
#define SDPS_XTEXT_H

#include <stddef.h>

/* The encoded length of s (without the NUL). */
size_t	xtext_len(const char *s);

/*
 * Encode s into buf (len octets, NUL-terminated).  -1 if it does not
 * fit (buf then holds "").  The null sender's "<>" is the caller's.
 */
int	xtext_encode(const char *s, char *buf, size_t len);

/*
 * Decode s in place.  -1 if malformed: an octet outside "!".."~", a raw
 * "=", a "+" not followed by two hex digits, or one that decodes to NUL.
 * Hex digits are accepted in either case (RFC 3461 sends upper case).
 */
int	xtext_decode(char *s);

#endif
