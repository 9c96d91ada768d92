/*
 * dsn: delivery status notifications (RFC 3464) for bounces from the SMTP
 * agent and from expiry.
 *
 * Error convention: 0 or -1 (ENOMEM), nothing logged.
 */
#ifndef SDPS_DSN_H
#define SDPS_DSN_H

#include <stddef.h>
#include <stdint.h>

struct dsn_rcpt {
	const char *addr;	/* original recipient, local@host */
	const char *status;	/* "5.1.1", "4.4.7" ... */
	const char *diag;	/* remote reply text or reason; may be NULL */
};

struct dsn {
	const char	*reporting_host;	/* Reporting-MTA dns; */
	const char	*sender;	/* envelope sender: the bounce goes here */
	uint64_t	 arrival_us;
	const char	*reason;	/* human-readable first part */
	const struct dsn_rcpt *rcpts;
	size_t		 nrcpts;
	const char	*headers;	/* original header block (CRLF), may be NULL */
	size_t		 headers_len;
};

/*
 * Build the bounce as a complete RFC 5322 message (CRLF line ends, not
 * dot-stuffed): multipart/report; report-type=delivery-status with a text
 * part, a message/delivery-status part and a text/rfc822-headers part.
 * *out is malloc'd.  Returns 0 or -1 (ENOMEM).
 */
int	dsn_build(const struct dsn *d, char **out, size_t *len);

#endif
