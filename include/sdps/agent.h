/*
 * agent: the SMTP delivery agent behind sdps-smtp.  It pushes a host's
 * spooled mail, across every punt, to the host's SMTP server, taking each
 * message with an SMTP claim (docs/design.md §4.1, §4.2).
 *
 * Error convention: 0 or -1 with the reason logged; per-message outcomes
 * are counted in struct agent_stats, not returned.
 */
#ifndef SDPS_AGENT_H
#define SDPS_AGENT_H

#include <stdint.h>

#include "sdps/config.h"

struct agent_stats {
	uint64_t sent;		/* messages fully accepted and removed */
	uint64_t bounced;	/* messages with at least one permanent failure */
	uint64_t deferred;	/* released for a later run (4xx, trouble) */
	uint64_t skipped;	/* gone or claimed by someone else */
};

/*
 * Deliver every message of host to target ("addr:port", "[v6]:port" or
 * "name:port") over one SMTP connection (EHLO, PIPELINING when offered).
 * Per message: claim; MAIL/RCPT/DATA from the envelope and the stored
 * wire-format file; 250 -> removed; 4xx -> released; 5xx -> a DSN to the
 * sender for the failed recipients, which are removed.  Returns 0 when the
 * run completed (some messages may be deferred), -1 when the server could
 * not be reached or the session broke (claims taken are released).
 */
int	agent_deliver_host(const struct config *cf, const char *host,
	    const char *target, struct agent_stats *stats);

#endif
