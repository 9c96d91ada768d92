/*
 * worker: a pre-forked worker process: after-fork setup, the accept loop,
 * recycling.  Only the master calls worker_main; sessions get a
 * struct worker_ctx.
 */
#ifndef SDPS_WORKER_H
#define SDPS_WORKER_H

#include <signal.h>

#include "sdps/config.h"
#include "sdps/scoreboard.h"

struct auth;
struct puntset;

/*
 * A bound listener (issue 9): the master's socket and the config entry it
 * was made from (a copy: a reload may replace the config).  Master and
 * worker carry one array of these; a worker polls those of its pool's
 * protocol.
 */
struct listener {
	int			 fd;
	struct config_listener	 cl;
};

/* What a session may use.  Everything is owned by the worker. */
struct worker_ctx {
	const struct config	*cf;
	struct scoreboard	*sb;
	struct sb_slot		*slot;
	struct auth		*auth;
	/* The configured punts (puntset_get opens, reopens, and records
	 * each punt's health in the scoreboard). */
	struct puntset		*punts;
	/* Set by SIGUSR2 (sdps-ctl kill): end the session at once, without
	 * UPDATE.  The worker clears it between sessions. */
	volatile sig_atomic_t	*kill_session;
	/* Set by SIGTERM: finish the session, then exit. */
	volatile sig_atomic_t	*terminate;
	/* Issue 9 (h-conn): the listener the current connection came in
	 * on (protocol, TLS mode: CAPA depends on it). */
	const struct config_listener *listener;
};

/*
 * Punt i if it is usable now: opens it if it was not open, reopens it if
 * store_is_available says the directory changed, and records the result
 * in the scoreboard's punt health.  NULL if unavailable (logged).
 */
struct store *worker_punt(struct worker_ctx *w, int i);

/*
 * Refuse a connection just accepted: send line (CRLF included) without
 * blocking, then close fd.  The master uses it too, when every POP3
 * worker is busy.
 */
void	worker_refuse(int fd, const char *line);

/*
 * Master, in the child right after fork(): run a worker with scoreboard
 * slot slot_idx, accepting on those of the nls listeners ls whose
 * protocol is the slot's pool's (set by the master before the fork).
 * Never returns; exit status per docs/design.md §7.7 (0 recycled,
 * WORKER_EX_SICK, WORKER_EX_FATAL).
 */
#define WORKER_EX_SICK	70
#define WORKER_EX_FATAL	78
void	worker_main(const struct config *cf, struct scoreboard *sb,
	    int slot_idx, const struct listener *ls, int nls)
	    __attribute__((noreturn));

#endif
