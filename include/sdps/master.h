/*
 * master: the sdpsd master process: listeners, scoreboard, privilege
 * drop, pre-forked workers kept between min_spare and max_spare idle,
 * reload on SIGHUP, orderly stop on SIGTERM (docs/design.md §7).
 *
 * Error convention: master_run returns a process exit status (0 or
 * MASTER_EX_*), the reason logged; it is the module's only function.
 */
#ifndef SDPS_MASTER_H
#define SDPS_MASTER_H

#include <stdbool.h>

#include "sdps/config.h"

#define MASTER_PIDFILE	"sdpsd.pid"	/* in run_dir */

/* Exit statuses of master_run besides 0. */
#define MASTER_EX_CONFIG	78	/* EX_CONFIG: bad config, user, ... */
#define MASTER_EX_OSERR		71	/* EX_OSERR: bind, fork, mmap ... */

/*
 * Run the daemon with cf (heap-allocated; master_run owns it from here,
 * and replaces it on reload).  conf_path is re-read on SIGHUP.  Without
 * foreground the process detaches (the parent exits 0 only once the
 * daemon is ready) and logs to syslog LOG_MAIL; with it, stays attached
 * and logs to stderr.
 *
 * Readiness: RUN_DIR/sdpsd.pid is written only after the listeners are
 * bound and the first workers are idle in accept, and the log then says
 * "ready".  Returns the process exit status: 0 after an orderly stop,
 * MASTER_EX_CONFIG or MASTER_EX_OSERR when start-up fails, or
 * MASTER_EX_CONFIG when a worker reported a fatal configuration error.
 */
int	master_run(struct config *cf, const char *conf_path, bool foreground,
	    bool verbose);

#endif
