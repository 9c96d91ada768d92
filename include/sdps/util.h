/*
 * util: validation of names that reach paths and keys, small I/O helpers.
 *
 * Error convention: 0 or -1, nothing logged: the validators set no errno,
 * the I/O helpers (util_write_all, util_fsync_dir, util_mkdir_p) leave errno.
 */
#ifndef SDPS_UTIL_H
#define SDPS_UTIL_H

#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NITEMS(a)	(sizeof(a) / sizeof((a)[0]))

#define UTIL_HOST_MAX	253	/* octets, RFC 1035 */
#define UTIL_USER_MAX	64	/* local part, RFC 5321 §4.5.3.1.1 */
#define UTIL_ADDR_MAX	(UTIL_USER_MAX + 1 + UTIL_HOST_MAX)
#define UTIL_SENDER_MAX	UTIL_ADDR_MAX

/*
 * Validate and lowercase a host name: letters, digits, hyphen and dots,
 * 1..253 octets, no empty label, no label over 63 octets, no label that
 * starts or ends with a hyphen.  out must hold UTIL_HOST_MAX + 1 octets.
 * Returns 0, or -1 if the name is not valid (out is then undefined).
 */
int	util_host_normalize(const char *in, char *out);

/*
 * Validate and lowercase a user part (envelope local part): 1..64 octets of
 * printable ASCII without '@', space, '/' or control characters,
 * and neither "." nor "..".
 * out must hold UTIL_USER_MAX + 1 octets.  Returns 0 or -1.
 */
int	util_user_normalize(const char *in, char *out);

/*
 * Split "user@host" at the last '@' and normalize both parts.
 * Returns 0, or -1 if either part is invalid or there is no '@'.
 */
int	util_addr_split(const char *addr, char *user, char *host);

/*
 * Validate an envelope sender: "" and "<>" mean the null sender (out = "").
 * Angle brackets around an address are stripped.  Otherwise the address
 * must be user@host with valid parts (the host part is lowercased, the
 * user part kept as given).  out must hold UTIL_SENDER_MAX + 1 octets.
 * Returns 0 or -1.
 */
int	util_sender_normalize(const char *in, char *out);

/*
 * Parse a decimal number of digits only: no sign, no space, no junk, no
 * overflow past max.  Returns 0 or -1.
 */
int	util_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* Microseconds since the epoch (CLOCK_REALTIME). */
uint64_t util_now_us(void);

/* write(2) until done, retrying EINTR.  Returns 0, or -1 with errno. */
int	util_write_all(int fd, const void *buf, size_t len);

/* Open path (a directory) and fsync it.  Returns 0, or -1 with errno. */
int	util_fsync_dir(const char *path);

/* mkdir -p with mode for every created component.  Returns 0 or -1. */
int	util_mkdir_p(const char *path, mode_t mode);

/*
 * Format an RFC 5322 date (e.g. "Sat, 28 Nov 2026 03:30:50 +0000") of a
 * time in microseconds into buf.  Returns buf.
 */
char	*util_rfc5322_date(uint64_t us, char *buf, size_t len);

/*
 * Append one "; "-separated reason to why (whylen octets, NUL-terminated;
 * NULL or 0 appends nothing): the reasons a caller reports when every
 * punt refused a message.
 */
void	util_why(char *why, size_t whylen, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

#endif
