/*
 * master: the sdpsd master process: binds the listeners, creates the
 * scoreboard, drops privileges, keeps a pool of pre-forked workers, and
 * turns signals into reload, auth-cache flush and an orderly stop.  This
 * file holds the signals, start-up, readiness, reload, stop and the main
 * loop; master_listen.c the sockets and ids, master_pool.c the workers.
 */
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/authcache.h"
#include "sdps/throttle.h"
#include "sdps/tls_client.h"
#include "sdps/log.h"
#include "master_int.h"

static volatile sig_atomic_t	 sig_chld, sig_hup, sig_term, sig_usr1;
static volatile sig_atomic_t	 sig_alrm;

/* The master's signals (nginx's signals[]): handlers only set a flag. */
static const struct {
	int			 signo;
	volatile sig_atomic_t	*flag;
} master_signals[] = {
	{ SIGCHLD,	&sig_chld },
	{ SIGHUP,	&sig_hup },
	{ SIGTERM,	&sig_term },
	{ SIGINT,	&sig_term },
	{ SIGUSR1,	&sig_usr1 },
	{ SIGALRM,	&sig_alrm },
};

static void
master_sig(int signo)
{
	int	 saved = errno;
	size_t	 i;

	for (i = 0; i < NITEMS(master_signals); i++) {
		if (master_signals[i].signo == signo)
			*master_signals[i].flag = 1;
	}
	errno = saved;
}

/* Block the handled signals (sigsuspend opens them) and install them. */
static void
master_signals_init(sigset_t *waitmask)
{
	struct sigaction	 sa;
	sigset_t		 set;
	size_t			 i;

	sigemptyset(&set);
	for (i = 0; i < NITEMS(master_signals); i++)
		sigaddset(&set, master_signals[i].signo);
	sigprocmask(SIG_BLOCK, &set, waitmask);
	for (i = 0; i < NITEMS(master_signals); i++)
		sigdelset(waitmask, master_signals[i].signo);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = master_sig;
	sa.sa_mask = set;
	sa.sa_flags = SA_RESTART;
	for (i = 0; i < NITEMS(master_signals); i++)
		sigaction(master_signals[i].signo, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sa.sa_flags = 0;
	sigaction(SIGPIPE, &sa, NULL);
}

static void
master_timer(uint64_t us)
{
	struct itimerval	 it;

	it.it_interval.tv_sec = (time_t)(us / 1000000);
	it.it_interval.tv_usec = (suseconds_t)(us % 1000000);
	it.it_value = it.it_interval;
	setitimer(ITIMER_REAL, &it, NULL);
}

/* ------------------------------------------------------------ start-up */

/* Refuse to start over a live daemon: sb_create would truncate its map. */
static int
master_check_running(struct master *m)
{
	FILE	*f;
	long	 pid;
	int	 fd;

	/* In run_dir, not followed (root reads it). */
	if ((fd = openat(m->run_fd, MASTER_PIDFILE, O_RDONLY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1)
		return 0;
	if ((f = fdopen(fd, "r")) == NULL) {
		close(fd);
		return 0;
	}
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	if (pid > 0 && pid != (long)getpid() &&
	    (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
		log_warnx("%s: sdpsd already running as pid %ld", m->pidfile,
		    pid);
		return -1;
	}
	return 0;
}

static int
master_write_pidfile(struct master *m)
{
	char	 tmp[PATH_MAX + 32], buf[32];
	int	 fd, n;

	snprintf(tmp, sizeof(tmp), "%s.tmp", m->pidfile);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0644);
	if (fd == -1) {
		log_warn("pid file %s", tmp);
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (util_write_all(fd, buf, (size_t)n) == -1 || close(fd) == -1) {
		log_warn("pid file %s", tmp);
		(void)unlink(tmp);
		return -1;
	}
	/* rename: a reader sees no file or a whole one, never a half. */
	if (rename(tmp, m->pidfile) == -1) {
		log_warn("pid file %s", m->pidfile);
		(void)unlink(tmp);
		return -1;
	}
	return 0;
}

/*
 * Detach (not in the foreground): the parent stays until the daemon says
 * it is ready through a pipe, so "sdpsd && next" and systemd's
 * Type=forking see a daemon that serves, or an error exit.
 */
static int
master_detach(struct master *m)
{
	struct pollfd	 pfd;
	int		 p[2], fd;
	char		 c;
	pid_t		 pid;
	ssize_t		 n;

	if (pipe2(p, O_CLOEXEC) == -1) {
		log_warn("pipe");
		return -1;
	}
	if ((pid = fork()) == -1) {
		log_warn("fork");
		return -1;
	}
	if (pid != 0) {
		close(p[1]);
		pfd.fd = p[0];
		pfd.events = POLLIN;
		n = 0;
		if (poll(&pfd, 1, MASTER_DETACH_WAIT_MS) == 1) {
			do
				n = read(p[0], &c, 1);
			while (n == -1 && errno == EINTR);
		}
		if (n == 1)
			_exit(0);
		fprintf(stderr, "sdpsd: %s; see the mail log\n", n == 0 &&
		    pfd.revents == 0 ? "not ready in time, still starting" :
		    "start-up failed");
		_exit(MASTER_EX_OSERR);
	}
	close(p[0]);
	m->ready_fd = p[1];
	if (setsid() == -1)
		log_warn("setsid");
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		(void)dup2(fd, STDIN_FILENO);
		(void)dup2(fd, STDOUT_FILENO);
		(void)dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	log_init("sdpsd", false, LOG_MAIL, m->verbose);
	return 0;
}

/* Ready once the first workers wait in accept: then the pid file. */
static void
master_check_ready(struct master *m)
{
	struct sb_slot	 copy;
	unsigned	 i, idle = 0, want, limit, lmtp_idle = 0, lmtp_want;
	char		 c = 'r';

	if (m->ready)
		return;
	want = m->cf->min_spare > 0 ? m->cf->min_spare : 1;
	master_limits(m, &limit, &lmtp_want);
	if (want > limit)
		want = limit;
	/* Ready means both pools accept: one LMTP worker is enough. */
	if (lmtp_want > 1)
		lmtp_want = 1;
	for (i = 0; i < m->nslots; i++) {
		if (m->pids[i] == 0)
			continue;
		if (sb_slot_read(&m->sb.slots[i], &copy) != 0 ||
		    copy.state != SB_IDLE)
			continue;
		if (m->pool[i] == SB_POOL_LMTP)
			lmtp_idle++;
		else
			idle++;
	}
	if (idle < want || lmtp_idle < lmtp_want)
		return;
	if (master_write_pidfile(m) == -1)
		return;
	m->ready = true;
	master_timer(MASTER_TICK_US);
	log_info("ready: pid %ld, %u workers", (long)getpid(), idle);
	if (m->ready_fd != -1) {
		(void)!write(m->ready_fd, &c, 1);
		close(m->ready_fd);
		m->ready_fd = -1;
	}
}

/* --------------------------------------------------------------- reload */

static void
master_timeout_warning(const struct config *cf)
{
	if (cf->idle_timeout_s < 600)
		log_warnx("idle_timeout %u s is below the RFC 1939 minimum "
		    "of 600 s", cf->idle_timeout_s);
}

/*
 * Keys the running master cannot change: the sockets are bound, the map
 * is sized and privileges are gone.  The old values stay, with a warning
 * (nginx re-binds on reload; we ask for a restart instead).
 */
static void
master_keep_fixed(const struct config *old, struct config *cf,
    unsigned nslots)
{
	bool	 same = old->nlisteners == cf->nlisteners;
	int	 i;

	for (i = 0; same && i < cf->nlisteners; i++)
		same = strcmp(old->listeners[i].addr,
		    cf->listeners[i].addr) == 0 &&
		    old->listeners[i].proto == cf->listeners[i].proto &&
		    old->listeners[i].tls == cf->listeners[i].tls;
	if (!same) {
		log_warnx("reload: listen/lmtp_listen changes need a restart; "
		    "keeping the old addresses");
		memcpy(cf->listeners, old->listeners, sizeof(cf->listeners));
		cf->nlisteners = old->nlisteners;
	}
	if (strcmp(old->run_dir, cf->run_dir) != 0) {
		log_warnx("reload: run_dir changes need a restart");
		memcpy(cf->run_dir, old->run_dir, sizeof(cf->run_dir));
	}
	if (strcmp(old->user, cf->user) != 0) {
		log_warnx("reload: user changes need a restart");
		memcpy(cf->user, old->user, sizeof(cf->user));
	}
	if (cf->max_workers > nslots) {
		log_warnx("reload: max_workers above %u needs a restart",
		    nslots);
		cf->max_workers = nslots;
	}
}

static void
master_reload(struct master *m)
{
	struct sb_header *h = m->sb.hdr;
	struct config	*cf;
	char		 err[512];
	uint64_t	 gen;
	int		 i;

	if ((cf = malloc(sizeof(*cf))) == NULL) {
		log_warn("reload: malloc");
		return;
	}
	if (config_load(m->conf_path, cf, err, sizeof(err)) == -1) {
		log_warnx("reload failed, keeping the old configuration: %s",
		    err);
		free(cf);
		return;
	}
	master_keep_fixed(m->cf, cf, m->nslots);
	master_timeout_warning(cf);
	/* A bad certificate keeps the old one; the rest still applies. */
	master_tls_reload(m, cf);
	/* Punt health is indexed like the config's punts. */
	for (i = 0; i < cf->npunts && i < CONFIG_PUNT_MAX; i++) {
		if (strcmp(h->punts[i].name, cf->punts[i].name) != 0) {
			memcpy(h->punts[i].name, cf->punts[i].name,
			    sizeof(h->punts[i].name));
			atomic_store(&h->punts[i].checked_us, 0);
		}
	}
	h->npunts = (uint32_t)i;
	free(m->cf);
	m->cf = cf;
	gen = atomic_fetch_add(&h->generation, 1) + 1;
	m->spawn_batch = 1;
	log_info("reloaded %s: generation %llu", m->conf_path,
	    (unsigned long long)gen);
	/* New workers now; the old ones leave after their session. */
	master_maintain(m);
}

/* ----------------------------------------------------------------- stop */

static void
master_stop(struct master *m, const sigset_t *waitmask)
{
	uint64_t	 now, deadline;
	int		 phase = 0;

	atomic_store(&m->sb.hdr->stopping, 1);
	master_unlisten(m);
	log_info("stopping: %u workers, grace %u s", master_live(m),
	    m->cf->shutdown_grace_s);
	master_signal_workers(m, SIGTERM);
	deadline = util_now_us() + (uint64_t)m->cf->shutdown_grace_s * 1000000;
	master_timer(MASTER_FAST_TICK_US);
	sig_term = 0;
	for (;;) {
		master_reap(m);
		if (master_live(m) == 0)
			break;
		now = util_now_us();
		/* A second SIGTERM/SIGINT skips the rest of a step. */
		if (sig_term) {
			sig_term = 0;
			deadline = now;
		}
		if (now >= deadline && phase == 0) {
			/* Sessions end without UPDATE; their RD flags are
			 * still committed (session.h). */
			log_info("grace period over: ending %u sessions",
			    master_live(m));
			master_signal_workers(m, SIGUSR2);
			deadline = now + MASTER_KILL_WAIT_S * 1000000;
			phase = 1;
		} else if (now >= deadline && phase == 1) {
			log_warnx("killing %u workers", master_live(m));
			master_signal_workers(m, SIGKILL);
			phase = 2;
		}
		sigsuspend(waitmask);
	}
	master_timer(0);
	(void)unlink(m->pidfile);
	log_info("stopped");
}

/* ----------------------------------------------------------------- main */

static int
master_setup(struct master *m)
{
	const struct config *cf = m->cf;
	char		 err[512];
	int		 rc;

	if (master_ids(m) == -1)
		return MASTER_EX_CONFIG;
	if (util_mkdir_p(cf->run_dir, 0755) == -1) {
		log_warn("run_dir %s", cf->run_dir);
		return MASTER_EX_OSERR;
	}
	if ((rc = master_run_dir(m)) != 0)
		return rc;
	if (master_check_running(m) == -1)
		return MASTER_EX_OSERR;
	if (auth_global_init() == -1) {
		log_warnx("auth_global_init failed");
		return MASTER_EX_OSERR;
	}
	/* As root, before the detach: a bad certificate is reported on
	 * stderr with its file:line and the exit status says config. */
	if ((rc = master_tls_start(m)) != 0)
		return rc;
	/* The remote punts' client keys (issue 11, tls_client.h): read
	 * here as root; workers inherit the contexts over fork. */
	if (tls_clients_load(cf, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return MASTER_EX_CONFIG;
	}
	if (master_listen(m) == -1)
		return MASTER_EX_OSERR;
	if (!m->foreground && master_detach(m) == -1)
		return MASTER_EX_OSERR;
	/* The root key reader for reloads: a child of the master that
	 * stays, made before the scoreboard and caches it must not hold. */
	if (master_keys_fork(m) == -1)
		return MASTER_EX_OSERR;
	/* After detaching: the header records the master's final pid. */
	/* POP3 workers plus the LMTP pool (master_limits). */
	m->nslots = cf->max_workers > 0 ? cf->max_workers : 1;
	if (m->nlmtp > 0)
		m->nslots += cf->lmtp_workers;
	/* root (or our own) and the admin group, mode 0640. */
	if (sb_create_at(m->run_fd, cf->run_dir, m->nslots, cf, (uid_t)-1,
	    m->admin_gid, &m->sb) == -1)
		return MASTER_EX_OSERR;
	m->sb.tls = m->tls;	/* sb_create_at filled sb afresh */
	/*
	 * Before any fork, so every worker inherits the same anonymous
	 * mapping; its key never leaves memory.  Size and TTL are fixed at
	 * start (a reload keeps them).
	 */
	if (cf->auth_cache_ttl_s > 0 && (m->sb.authcache =
	    authcache_create(cf->auth_cache_entries, cf->auth_cache_ttl_s))
	    == NULL) {
		log_warn("authcache_create");
		return MASTER_EX_OSERR;
	}
	/* Auth throttle (issue 8): the same way, always on (budgets of 0
	 * only stop it refusing); its size is fixed at start too. */
	if ((m->sb.throttle = throttle_create(cf->auth_throttle_entries)) ==
	    NULL) {
		log_warn("throttle_create");
		return MASTER_EX_OSERR;
	}
	m->pids = calloc(m->nslots, sizeof(*m->pids));
	m->forked_us = calloc(m->nslots, sizeof(*m->forked_us));
	m->pool = calloc(m->nslots, sizeof(*m->pool));
	if (m->pids == NULL || m->forked_us == NULL || m->pool == NULL) {
		log_warn("calloc");
		return MASTER_EX_OSERR;
	}
	if (master_drop_privs(m) == -1)
		return MASTER_EX_CONFIG;
	master_timeout_warning(cf);
	return 0;
}

int
master_run(struct config *cf, const char *conf_path, bool foreground,
    bool verbose)
{
	struct master	 m;
	sigset_t	 waitmask;
	int		 rc;

	memset(&m, 0, sizeof(m));
	m.cf = cf;
	m.conf_path = conf_path;
	m.foreground = foreground;
	m.verbose = verbose;
	m.ready_fd = -1;
	m.run_fd = -1;
	m.keys_fd = -1;
	m.spawn_batch = 1;
	log_init("sdpsd", true, LOG_MAIL, verbose);
	log_setproc("master");
	snprintf(m.pidfile, sizeof(m.pidfile), "%s/%s", cf->run_dir,
	    MASTER_PIDFILE);

	/* Blocked from here on, so no signal is lost before the loop. */
	master_signals_init(&waitmask);
	/* A refused start frees what it made too (sanitizer builds count
	 * a leak as a failure and would change the exit status). */
	if ((rc = master_setup(&m)) != 0)
		goto out;
	log_info("starting: %s, %u worker slots", conf_path, m.nslots);
	master_initial_spawn(&m);
	master_timer(MASTER_FAST_TICK_US);

	for (;;) {
		if (sig_chld) {
			sig_chld = 0;
			master_reap(&m);
		}
		if (m.fatal_child) {
			log_warnx("a worker hit a fatal error; stopping");
			rc = MASTER_EX_CONFIG;
			break;
		}
		if (sig_term)
			break;
		if (sig_hup) {
			sig_hup = 0;
			master_reload(&m);
		}
		if (sig_usr1) {
			sig_usr1 = 0;
			atomic_fetch_add(&m.sb.hdr->auth_cache_epoch, 1);
			log_info("auth cache flushed");
		}
		if (sig_alrm) {
			sig_alrm = 0;
			if (util_now_us() - m.last_maint_us >= MASTER_TICK_US -
			    MASTER_FAST_TICK_US) {
				master_maintain(&m);
				master_tls_tick(&m);
			}
			master_check_ready(&m);
		}
		master_wait(&m, &waitmask);
	}
	master_stop(&m, &waitmask);
 out:
	if (m.ready_fd != -1)
		close(m.ready_fd);
	master_tls_stop(&m);
	authcache_destroy(m.sb.authcache);
	throttle_destroy(m.sb.throttle);
	sb_close(&m.sb);
	if (m.run_fd != -1)
		close(m.run_fd);
	free(m.pids);
	free(m.forked_us);
	free(m.pool);
	free(m.cf);
	return rc;
}
