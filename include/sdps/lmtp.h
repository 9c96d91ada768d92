/*
 * lmtp: one LMTP session (RFC 2033) on an accepted socket, storing mail
 * into the punts like sdps-deliver does.
 *
 * Error convention: lmtp_run returns nothing; every failure is logged
 * and answered on the wire (4xx/5xx), and the caller closes the socket.
 */
#ifndef SDPS_LMTP_H
#define SDPS_LMTP_H

#include "sdps/session_env.h"

/*
 * Serve the LMTP session on fd (already accepted; the caller closes it)
 * until QUIT, drop, idle timeout or *w->kill_session.  A message is
 * stored durably, once per host, before its 250 replies are sent.
 */
void	lmtp_run(struct session_env *w, int fd, const char *peer);

#endif
