/* session: one POP3 session (RFC 1939 + SDPS) on an accepted socket. */
#ifndef SDPS_SESSION_H
#define SDPS_SESSION_H

#include "sdps/session_env.h"

/*
 * Serve the POP3 session on fd (already accepted; the caller closes it)
 * from the greeting to the end: QUIT, drop, timeout, too many bad
 * commands, or *w->kill_session.  Updates w->slot.  RD flags are committed
 * and locks released before this returns, however the session ends.
 */
void	session_run(struct session_env *w, int fd, const char *peer);

#endif
