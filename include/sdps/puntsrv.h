/*
 * puntsrv: the punt server's end of the punt protocol
 * (docs/punt-protocol.md): one front end's link to one local punt, in an
 * sdpsd worker of the POP3 pool, accepted on a punt_listen listener.
 *
 * Error convention: puntsrv_run returns nothing; every failure is logged
 * and answered on the link (-ERR [CODE]) or ends it, and the caller
 * closes the socket.
 */
#ifndef SDPS_PUNTSRV_H
#define SDPS_PUNTSRV_H

#include "sdps/session_env.h"

struct tls_server;

/*
 * Serve the link on fd (accepted; the caller closes it) for the punt
 * w->listener->punt: the TLS 1.3 handshake with t (tls_punt_server_new:
 * client certificate and allow-list), then commands until QUIT, EOF, the
 * [punt_server] idle_timeout or *w->kill_session.  The maildrop lock a
 * SELECT took is released whichever way the link ends.
 */
void	puntsrv_run(struct session_env *w, int fd, const char *peer,
	    struct tls_server *t);

#endif
