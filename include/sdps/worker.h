/*
 * worker: a pre-forked worker process: after-fork setup, the accept loop,
 * recycling.  Only the master calls worker_main; sessions get a
 * struct session_env (session_env.h), not this header.
 */
#ifndef SDPS_WORKER_H
#define SDPS_WORKER_H

#include <signal.h>

#include "sdps/config.h"
#include "sdps/scoreboard.h"

/*
 * A bound listener (issue 9): the master's socket and the config entry it
 * was made from (a copy: a reload may replace the config).  Master and
 * worker carry one array of these; a worker polls those of its pool's
 * protocol.
 */
struct tls_server;

struct listener {
	int			 fd;
	struct config_listener	 cl;
	/* A punt listener's TLS context (client certificates, issue 11),
	 * the master's, inherited over fork; NULL for the others. */
	struct tls_server	*tls;
};

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
