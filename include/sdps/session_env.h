/*
 * session_env: what a session (POP3 or LMTP) may use of the process that
 * runs it.  The worker fills one in and owns everything it points to;
 * sessions only read the pointers.  This header names no worker: the
 * sessions depend on it, not on worker.h (issue 9).
 */
#ifndef SDPS_SESSION_ENV_H
#define SDPS_SESSION_ENV_H

#include <signal.h>

#include "sdps/config.h"
#include "sdps/scoreboard.h"

struct auth;
struct puntset;
struct tls_server;

struct session_env {
	const struct config	*cf;
	/* The scoreboard and this process's slot (both may be NULL in
	 * tests); the slot is written only through slot.h. */
	struct scoreboard	*sb;
	struct sb_slot		*slot;
	struct auth		*auth;		/* NULL: auth unavailable */
	/* The configured punts (puntset_get opens, reopens, and records
	 * each punt's health in the scoreboard). */
	struct puntset		*punts;
	/* Set by SIGUSR2 (sdps-ctl kill): end the session at once, without
	 * UPDATE.  The worker clears it between sessions. */
	volatile sig_atomic_t	*kill_session;
	/* Set by SIGTERM: finish the session, then exit. */
	volatile sig_atomic_t	*terminate;
	/* The listener the current connection came in on (protocol, TLS
	 * mode: CAPA depends on it); NULL if none. */
	const struct config_listener *listener;
	/* The TLS context (tls.h) the master built before fork; NULL when
	 * no [tls] certificate is configured. */
	struct tls_server	*tls;
};

#endif
