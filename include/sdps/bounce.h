/*
 * bounce: send a DSN for a stored message to its envelope sender, through
 * the configured sendmail command or into the outbox directory.
 *
 * Error convention: 0 or -1, nothing logged: the caller logs, naming
 * the message, and keeps it.
 */
#ifndef SDPS_BOUNCE_H
#define SDPS_BOUNCE_H

#include <stddef.h>

#include "sdps/config.h"
#include "sdps/dsn.h"
#include "sdps/store.h"

/*
 * Bounce message m of punt st for the n recipients in rcpts, with reason
 * as the human-readable text.  The original header block is read from the
 * stored file.  A null sender is never bounced to (returns 0 at once).
 * Returns 0 when the bounce was handed over (command exited 0, or the
 * outbox file is durable), -1 otherwise (the caller keeps the message).
 */
int	bounce_msg(const struct config *cf, struct store *st,
	    const struct store_msg *m, const struct dsn_rcpt *rcpts, size_t n,
	    const char *reason);

#endif
