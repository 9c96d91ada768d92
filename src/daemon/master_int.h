/*
 * master_int.h: NOT A PUBLIC HEADER.  What the master's own files share
 * (master.c: signals, start-up, readiness, reload, stop and the main
 * loop; master_listen.c: listeners, ids, run_dir and the privilege drop;
 * master_pool.c: the worker pools, reaping and the "busy" answer;
 * master_keys.c: the TLS context, ticket keys and the root key reader)
 * and nothing else may include.  include/sdps/master.h stays the module's
 * whole surface (master_run); this file only lets that one module span
 * files of a readable size.  It lives in src/, not include/sdps/, so no
 * other module can reach it by the include path.
 *
 * Error convention: int functions return 0 or -1 with the reason logged,
 * except master_run_dir and master_tls_start, which return 0 or a
 * MASTER_EX_* exit status.
 */
#ifndef SDPS_MASTER_INT_H
#define SDPS_MASTER_INT_H

#include <sys/types.h>

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "sdps/config.h"
#include "sdps/master.h"
#include "sdps/scoreboard.h"
#include "sdps/worker.h"

#define MASTER_TICK_US		1000000	/* maintenance period */
#define MASTER_FAST_TICK_US	50000	/* until ready, and while stopping */
#define MASTER_SPAWN_BATCH_MAX	32	/* forks per maintenance pass */
#define MASTER_BACKOFF_MAX_S	60
#define MASTER_EARLY_DEATH_US	2000000	/* a death this soon = start-up */
#define MASTER_KILL_WAIT_S	2	/* after SIGUSR2, before SIGKILL */
#define MASTER_BACKLOG		511
#define MASTER_DETACH_WAIT_MS	60000	/* parent waits for "ready" */
/* Issue 8: answering POP3 clients while every POP3 worker is busy. */
#define MASTER_BUSY_BATCH	64	/* connections answered per wake */
#define MASTER_BUSY_RETRY_NS	20000000 /* after leaving one to a worker */
#define MASTER_BUSY_LOG_US	10000000
#define MASTER_BUSY_LINE	"-ERR [SYS/TEMP] server busy, try again later\r\n"

struct master {
	struct config	*cf;
	const char	*conf_path;
	bool		 foreground;
	bool		 verbose;
	struct scoreboard sb;
	/* Issue 9: the bound listeners, one array (worker.h). */
	struct listener	 ls[CONFIG_LISTENERS_MAX];
	int		 nls;
	int		 npop3, nlmtp;	/* of ls, by protocol */
	char		 pidfile[PATH_MAX + 16];
	int		 ready_fd;	/* pipe to the waiting parent, or -1 */
	bool		 ready;
	/* Local copies: the master trusts its own memory, not the map. */
	pid_t		*pids;
	uint64_t	*forked_us;
	uint32_t	*pool;		/* enum sb_pool of a live slot */
	unsigned	 nslots;
	unsigned	 spawn_batch;
	unsigned	 backoff_s;
	uint64_t	 hold_until_us;	/* no forks before this (back-off) */
	uint64_t	 last_maint_us;
	bool		 maxed_logged;
	bool		 fatal_child;
	/* Issue 8 (h-sb): ids resolved once at start, and run_dir held
	 * open so nothing in it is ever reached by name as root. */
	bool		 drop;		/* root, and a user to become */
	uid_t		 uid;		/* the service user (or our own) */
	gid_t		 gid;
	gid_t		 admin_gid;	/* group of the scoreboard */
	gid_t		 sock_gid;	/* group of unix LMTP sockets */
	int		 run_fd;	/* RUN_DIR, O_DIRECTORY, or -1 */
	/* Saturated POP3 pool (master_wait, master_answer_busy). */
	bool		 busy_declined;	/* last wake left it to a worker */
	unsigned	 busy_answered;	/* since busy_logged_us */
	uint64_t	 busy_logged_us;
	/* Issue 10 (master_keys.c): the context (also sb.tls, which the
	 * workers read once the scoreboard exists), the shared ticket
	 * keys, and the root key reader, which answers on keys_fd. */
	struct tls_server *tls;		/* NULL: no TLS listener */
	struct tls_tickets *tickets;
	/* Issue 11: the punt listeners' context (tls_punt_server_new),
	 * also in their ls[].tls; NULL without a punt listener. */
	struct tls_server *punt_tls;
	int		 keys_fd;	/* -1: no key reader (any more) */
	pid_t		 keys_pid;	/* 0: none to reap */
};

/* master_listen.c */
int	 master_listen(struct master *);
void	 master_unlisten(struct master *);
int	 master_ids(struct master *);
int	 master_run_dir(struct master *);
int	 master_drop_privs(struct master *);

/* master_keys.c */
int	 master_tls_start(struct master *);
int	 master_keys_fork(struct master *);
void	 master_tls_reload(struct master *, const struct config *);
void	 master_tls_tick(struct master *);
bool	 master_keys_reaped(struct master *, pid_t, int);
void	 master_tls_stop(struct master *);

/* master_pool.c */
void	 master_limits(const struct master *, unsigned *, unsigned *);
unsigned master_live(const struct master *);
void	 master_reap(struct master *);
void	 master_maintain(struct master *);
void	 master_initial_spawn(struct master *);
void	 master_wait(struct master *, const sigset_t *);
void	 master_signal_workers(struct master *, int);

#endif
