/*
 * master: the sdpsd master process: binds the listeners, creates the
 * scoreboard, drops privileges, keeps a pool of pre-forked workers, and
 * turns signals into reload, auth-cache flush and an orderly stop.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/authcache.h"
#include "sdps/log.h"
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
	int		 pop3_fds[CONFIG_LISTEN_MAX];
	int		 npop3;
	int		 lmtp_fds[CONFIG_LISTEN_MAX];
	int		 nlmtp;
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
	/* Saturated POP3 pool (master_wait, master_answer_busy). */
	bool		 busy_declined;	/* last wake left it to a worker */
	unsigned	 busy_answered;	/* since busy_logged_us */
	uint64_t	 busy_logged_us;
};

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

/* ---------------------------------------------------------- listeners */

static int
master_listen_unix(const char *path)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_warnx("listen %s: path too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	/* A stale socket from a previous run; never remove anything else. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_warnx("listen %s: exists and is not a socket",
			    path);
			return -1;
		}
		(void)unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1) {
		log_warn("listen %s: socket", path);
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		log_warn("listen %s: bind", path);
		close(fd);
		return -1;
	}
	/* The MTA runs as its own user; who may connect is a matter for
	 * the directory's permissions (as Dovecot's lmtp socket). */
	(void)chmod(path, 0666);
	if (listen(fd, MASTER_BACKLOG) == -1) {
		log_warn("listen %s: listen", path);
		close(fd);
		return -1;
	}
	return fd;
}

static int
master_listen_inet(const char *addr)
{
	struct addrinfo		 hints, *res = NULL, *ai;
	char			 host[CONFIG_ADDR_MAX], *port, *p;
	const char		*node;
	int			 fd = -1, one = 1, rc, saved = 0;

	snprintf(host, sizeof(host), "%s", addr);
	if (host[0] == '[') {
		if ((p = strchr(host, ']')) == NULL || p[1] != ':') {
			log_warnx("listen %s: bad address", addr);
			return -1;
		}
		*p = '\0';
		port = p + 2;
		node = host + 1;
	} else {
		if ((p = strrchr(host, ':')) == NULL) {
			log_warnx("listen %s: bad address", addr);
			return -1;
		}
		*p = '\0';
		port = p + 1;
		node = host;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (strcmp(node, "*") == 0 || node[0] == '\0') {
		/* Any address: IPv4 here; add [::]:port for IPv6. */
		node = NULL;
		hints.ai_family = AF_INET;
	}
	if ((rc = getaddrinfo(node, port, &hints, &res)) != 0) {
		log_warnx("listen %s: getaddrinfo: %s", addr,
		    gai_strerror(rc));
		return -1;
	}
	/* The first address that binds; a name with several addresses
	 * should be written as several listen lines. */
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
		if (fd == -1) {
			saved = errno;
			continue;
		}
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
		    sizeof(one));
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
			    sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, MASTER_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		errno = saved;
		log_warn("listen %s: bind", addr);
	}
	return fd;
}

static int
master_listen(struct master *m)
{
	const struct config	*cf = m->cf;
	int			 i, fd;

	for (i = 0; i < cf->nlisten; i++) {
		fd = cf->listen[i][0] == '/' ?
		    master_listen_unix(cf->listen[i]) :
		    master_listen_inet(cf->listen[i]);
		if (fd == -1)
			return -1;
		m->pop3_fds[m->npop3++] = fd;
		log_info("listening for POP3 on %s", cf->listen[i]);
	}
	for (i = 0; i < cf->nlmtp_listen; i++) {
		fd = cf->lmtp_listen[i][0] == '/' ?
		    master_listen_unix(cf->lmtp_listen[i]) :
		    master_listen_inet(cf->lmtp_listen[i]);
		if (fd == -1)
			return -1;
		m->lmtp_fds[m->nlmtp++] = fd;
		log_info("listening for LMTP on %s", cf->lmtp_listen[i]);
	}
	if (m->npop3 + m->nlmtp == 0) {
		log_warnx("no listen address configured");
		return -1;
	}
	return 0;
}

static void
master_unlisten(struct master *m)
{
	const struct config	*cf = m->cf;
	int			 i;

	for (i = 0; i < m->npop3; i++)
		close(m->pop3_fds[i]);
	for (i = 0; i < m->nlmtp; i++)
		close(m->lmtp_fds[i]);
	m->npop3 = m->nlmtp = 0;
	for (i = 0; i < cf->nlisten; i++) {
		if (cf->listen[i][0] == '/')
			(void)unlink(cf->listen[i]);
	}
	for (i = 0; i < cf->nlmtp_listen; i++) {
		if (cf->lmtp_listen[i][0] == '/')
			(void)unlink(cf->lmtp_listen[i]);
	}
}

/* ------------------------------------------------------------ start-up */

/* Refuse to start over a live daemon: sb_create would truncate its map. */
static int
master_check_running(struct master *m)
{
	FILE	*f;
	long	 pid;

	if ((f = fopen(m->pidfile, "r")) == NULL)
		return 0;
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

static int
master_drop_privs(struct master *m)
{
	struct passwd	*pw;
	char		 path[PATH_MAX + 16];
	uid_t		 uid;
	gid_t		 gid;

	if (m->cf->user[0] == '\0')
		return 0;
	if (geteuid() != 0) {
		log_info("not root: running as uid %ld, not as %s",
		    (long)geteuid(), m->cf->user);
		return 0;
	}
	if ((pw = getpwnam(m->cf->user)) == NULL) {
		log_warnx("user %s: no such user", m->cf->user);
		return -1;
	}
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	/* Workers create lock files under run_dir and write the map. */
	if (chown(m->cf->run_dir, uid, gid) == -1) {
		log_warn("chown %s", m->cf->run_dir);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/scoreboard", m->cf->run_dir);
	(void)chown(path, uid, gid);
	if (setgroups(1, &gid) == -1 ||
	    setresgid(gid, gid, gid) == -1 ||
	    setresuid(uid, uid, uid) == -1) {
		log_warn("dropping privileges to %s", m->cf->user);
		return -1;
	}
	if (geteuid() != uid || getegid() != gid || setuid(0) == 0) {
		log_warnx("dropping privileges to %s did not stick",
		    m->cf->user);
		return -1;
	}
	log_info("running as %s (uid %ld)", m->cf->user, (long)uid);
	return 0;
}

/* ------------------------------------------------------------- workers */

static void
master_slot_clear(struct master *m, unsigned i)
{
	struct sb_slot	*s = &m->sb.slots[i];

	sb_slot_write_begin(s);
	s->state = SB_FREE;
	s->session_id = 0;
	s->peer[0] = s->maildrop[0] = s->command[0] = '\0';
	s->started_us = s->login_us = s->last_us = 0;
	s->sessions_served = 0;
	s->retr = s->top = s->dele = s->octets_out = 0;
	s->punts_used = 0;
	sb_slot_write_end(s);
	s->hashing = 0;
	atomic_store(&s->please_exit, 0);
	atomic_store(&s->pid, 0);
	m->pids[i] = 0;
	m->forked_us[i] = 0;
}

static void
master_backoff(struct master *m, uint64_t now, const char *why)
{
	m->backoff_s = m->backoff_s == 0 ? 1 : m->backoff_s * 2;
	if (m->backoff_s > MASTER_BACKOFF_MAX_S)
		m->backoff_s = MASTER_BACKOFF_MAX_S;
	m->hold_until_us = now + (uint64_t)m->backoff_s * 1000000;
	m->spawn_batch = 1;
	log_warnx("%s: no new workers for %u s", why, m->backoff_s);
}

static int
master_spawn(struct master *m, unsigned i, enum sb_pool pool)
{
	struct sb_slot	*s = &m->sb.slots[i];
	uint64_t	 now = util_now_us();
	pid_t		 pid;

	master_slot_clear(m, i);
	s->generation = atomic_load(&m->sb.hdr->generation);
	/* Before the fork: the worker reads it to pick its listeners. */
	s->pool = (uint32_t)pool;
	m->pool[i] = (uint32_t)pool;
	sb_slot_write_begin(s);
	s->state = SB_STARTING;
	sb_slot_write_end(s);
	if ((pid = fork()) == -1) {
		log_warn("fork");
		master_slot_clear(m, i);
		/* Like Apache: a failed fork usually means a process or
		 * memory limit; hammering it only makes things worse. */
		master_backoff(m, now, "fork failed");
		return -1;
	}
	if (pid == 0) {
		if (m->ready_fd != -1)
			close(m->ready_fd);
		free(m->pids);
		free(m->forked_us);
		free(m->pool);
		worker_main(m->cf, &m->sb, (int)i, m->pop3_fds, m->npop3,
		    m->lmtp_fds, m->nlmtp);
	}
	m->pids[i] = pid;
	m->forked_us[i] = now;
	atomic_store(&s->pid, pid);
	log_debug("worker %u: forked pid %ld", i, (long)pid);
	return 0;
}

static unsigned
master_live(const struct master *m)
{
	unsigned	 i, n = 0;

	for (i = 0; i < m->nslots; i++)
		if (m->pids[i] != 0)
			n++;
	return n;
}

static void
master_reap(struct master *m)
{
	struct sb_slot	 copy;
	uint64_t	 now;
	unsigned	 i;
	pid_t		 pid;
	int		 st;
	bool		 early;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		now = util_now_us();
		for (i = 0; i < m->nslots; i++)
			if (m->pids[i] == pid)
				break;
		if (i == m->nslots) {
			log_debug("reaped unknown child %ld", (long)pid);
			continue;
		}
		sb_slot_read(&m->sb.slots[i], &copy);
		/* A crash inside a session says nothing about start-up;
		 * one before the first session soon after fork does. */
		early = copy.state == SB_STARTING ||
		    (copy.sessions_served == 0 && copy.session_id == 0 &&
		    now - m->forked_us[i] < MASTER_EARLY_DEATH_US);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			log_debug("worker %u (pid %ld) exited", i, (long)pid);
		else if (WIFEXITED(st))
			log_warnx("worker %u (pid %ld) exited with status %d%s",
			    i, (long)pid, WEXITSTATUS(st),
			    WEXITSTATUS(st) == WORKER_EX_SICK ?
			    " (resource shortage)" :
			    WEXITSTATUS(st) == WORKER_EX_FATAL ?
			    " (fatal error)" : "");
		else if (WIFSIGNALED(st))
			log_warnx("worker %u (pid %ld) killed by signal %d%s%s%s",
			    i, (long)pid, WTERMSIG(st),
			    WCOREDUMP(st) ? " (core dumped)" : "",
			    copy.session_id != 0 ? " in session " : "",
			    copy.session_id != 0 ? copy.peer : "");
		/*
		 * It may have died inside an LMDB read transaction; the next
		 * worker clears its reader slots (the master holds no env).
		 */
		master_slot_clear(m, i);
		atomic_store(&m->sb.hdr->reader_check, 1);
		if (atomic_load(&m->sb.hdr->stopping))
			continue;
		if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EX_FATAL)
			m->fatal_child = true;
		else if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EX_SICK)
			master_backoff(m, now, "worker reported a shortage");
		else if (early && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			master_backoff(m, now, "worker died at start-up");
	}
}

/*
 * The two pools' sizes (issue 8).  LMTP workers are a fixed pool of
 * lmtp_workers when there is an LMTP listener, carved out of the slots
 * first, so POP3 can never take the slots mail delivery needs; POP3 gets
 * max_workers of the rest.
 */
static void
master_limits(const struct master *m, unsigned *pop3, unsigned *lmtp)
{
	const struct config *cf = m->cf;

	*lmtp = 0;
	if (m->nlmtp > 0)
		*lmtp = cf->lmtp_workers < m->nslots ? cf->lmtp_workers :
		    m->nslots - 1;
	*pop3 = cf->max_workers < m->nslots - *lmtp ? cf->max_workers :
	    m->nslots - *lmtp;
}

/* Fork up to n workers of pool into free slots; the number forked. */
static unsigned
master_spawn_n(struct master *m, unsigned n, enum sb_pool pool)
{
	unsigned	 i, done = 0;

	for (i = 0; i < m->nslots && done < n; i++) {
		if (m->pids[i] != 0)
			continue;
		if (master_spawn(m, i, pool) == -1)
			break;
		done++;
	}
	return done;
}

/*
 * The LMTP pool is kept at lmtp_workers, old generations included: a
 * worker that leaves (recycled, reloaded, crashed) is replaced at the
 * next pass, unless forks are held back.
 */
static void
master_maintain_lmtp(struct master *m, uint64_t now)
{
	unsigned	 i, live = 0, pop3_limit, limit;

	master_limits(m, &pop3_limit, &limit);
	for (i = 0; i < m->nslots; i++)
		if (m->pids[i] != 0 && m->pool[i] == SB_POOL_LMTP)
			live++;
	if (live < limit && now >= m->hold_until_us)
		(void)master_spawn_n(m, limit - live, SB_POOL_LMTP);
}

/* Log now and then how many clients were told the server is busy. */
static void
master_busy_log(struct master *m, uint64_t now, unsigned limit)
{
	if (m->busy_answered == 0 ||
	    now - m->busy_logged_us < MASTER_BUSY_LOG_US)
		return;
	log_warnx("all %u POP3 workers busy: %u clients told to try again "
	    "later", limit, m->busy_answered);
	m->busy_answered = 0;
	m->busy_logged_us = now;
}

/*
 * Apache's perform_idle_server_maintenance: count the idle workers of the
 * current generation; below min_spare fork a batch that doubles on each
 * consecutive pass (up to 32), above max_spare ask one idle worker to
 * leave per pass, so the pool shrinks gently after a burst.  This is the
 * POP3 pool; the LMTP pool is master_maintain_lmtp.
 */
static void
master_maintain(struct master *m)
{
	const struct config *cf = m->cf;
	struct sb_slot	 copy;
	uint64_t	 gen, now = util_now_us();
	unsigned	 i, idle = 0, live = 0, limit, lmtp_limit, target, n;
	int		 last_idle = -1;

	m->last_maint_us = now;
	if (!atomic_load(&m->sb.hdr->stopping))
		master_maintain_lmtp(m, now);
	master_limits(m, &limit, &lmtp_limit);
	master_busy_log(m, now, limit);
	gen = atomic_load(&m->sb.hdr->generation);
	for (i = 0; i < m->nslots; i++) {
		if (m->pids[i] == 0 || m->pool[i] != SB_POOL_POP3)
			continue;
		live++;
		sb_slot_read(&m->sb.slots[i], &copy);
		if (copy.generation != gen ||
		    atomic_load(&m->sb.slots[i].please_exit))
			continue;
		/* A starting worker counts, or each pass would fork more
		 * while the last batch is still opening its stores. */
		if (copy.state == SB_IDLE || copy.state == SB_STARTING)
			idle++;
		if (copy.state == SB_IDLE)
			last_idle = (int)i;
	}
	target = cf->min_spare > 0 ? cf->min_spare : 1;
	if (live < limit)
		m->maxed_logged = false;

	if (idle > cf->max_spare && last_idle != -1) {
		atomic_store(&m->sb.slots[last_idle].please_exit, 1);
		m->spawn_batch = 1;
		return;
	}
	if (idle >= target) {
		m->spawn_batch = 1;
		if (now >= m->hold_until_us)
			m->backoff_s = 0;
		return;
	}
	if (now < m->hold_until_us)
		return;
	if (live >= limit) {
		if (!m->maxed_logged)
			log_warnx("max_workers reached (%u): consider raising "
			    "it", limit);
		m->maxed_logged = true;
		m->spawn_batch = 1;
		return;
	}
	n = target - idle;
	if (n > m->spawn_batch)
		n = m->spawn_batch;
	/* Every worker busy (a burst, or a flood): clients are waiting in
	 * the listen queue for no one, so grow by the whole doubling batch
	 * instead of min_spare at a time (issue 8: reach max_workers, and
	 * so the "busy" answer, in seconds, not max_workers/min_spare). */
	if (idle == 0)
		n = m->spawn_batch;
	if (n > limit - live)
		n = limit - live;
	if (master_spawn_n(m, n, SB_POOL_POP3) < n)
		return;
	if (m->spawn_batch < MASTER_SPAWN_BATCH_MAX)
		m->spawn_batch *= 2;
}

static void
master_initial_spawn(struct master *m)
{
	unsigned	 n, limit, lmtp;

	master_limits(m, &limit, &lmtp);
	n = m->cf->min_spare > 0 ? m->cf->min_spare : 1;
	if (n > limit)
		n = limit;
	if (master_spawn_n(m, n, SB_POOL_POP3) == n)
		(void)master_spawn_n(m, lmtp, SB_POOL_LMTP);
	m->last_maint_us = util_now_us();
}

/*
 * True when a POP3 client would wait for no one: every POP3 worker is
 * busy and no new one is coming (max_workers reached, or forks held back
 * after failures).  Starting workers count as coming.
 */
static bool
master_pop3_saturated(struct master *m)
{
	struct sb_slot	 copy;
	unsigned	 i, live = 0, limit, lmtp;

	if (m->npop3 == 0 || !m->ready || atomic_load(&m->sb.hdr->stopping))
		return false;
	master_limits(m, &limit, &lmtp);
	for (i = 0; i < m->nslots; i++) {
		if (m->pids[i] == 0 || m->pool[i] != SB_POOL_POP3)
			continue;
		live++;
		sb_slot_read(&m->sb.slots[i], &copy);
		if ((copy.state == SB_IDLE || copy.state == SB_STARTING) &&
		    !atomic_load(&m->sb.slots[i].please_exit))
			return false;
	}
	return live >= limit || util_now_us() < m->hold_until_us;
}

/*
 * A POP3 listener is readable while the pool is saturated: answer the
 * waiting clients "busy" at once instead of leaving them without a
 * greeting until a worker frees up (issue 8).  Under the accept mutex,
 * taken without waiting, and only while still saturated, so a worker
 * that has just become idle gets the connection instead.
 */
static void
master_answer_busy(struct master *m)
{
	unsigned	 n = 0;
	int		 i, fd;

	if (sb_accept_trylock(&m->sb) == -1) {
		m->busy_declined = true;
		return;
	}
	if (!master_pop3_saturated(m)) {
		sb_accept_unlock(&m->sb);
		m->busy_declined = true;
		return;
	}
	for (i = 0; i < m->npop3; i++) {
		while (n < MASTER_BUSY_BATCH) {
			fd = accept4(m->pop3_fds[i], NULL, NULL,
			    SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd == -1)
				break;
			worker_refuse(fd, MASTER_BUSY_LINE);
			n++;
		}
	}
	sb_accept_unlock(&m->sb);
	m->busy_answered += n;
	/* Readable but nothing to accept (an error, or someone was
	 * quicker): do not spin on it. */
	if (n == 0)
		m->busy_declined = true;
}

/*
 * Wait for a signal, as sigsuspend does; while the POP3 pool is
 * saturated also for a POP3 connection to answer "busy".  Having just
 * left a connection to a worker, wait a moment without the listeners so
 * the master does not spin on a readable socket.
 */
static void
master_wait(struct master *m, const sigset_t *waitmask)
{
	struct pollfd	 pfd[CONFIG_LISTEN_MAX];
	struct timespec	 ts = { 0, MASTER_BUSY_RETRY_NS };
	int		 i, n = 0;

	if (!master_pop3_saturated(m)) {
		m->busy_declined = false;
		sigsuspend(waitmask);
		return;
	}
	if (m->busy_declined) {
		m->busy_declined = false;
		(void)ppoll(NULL, 0, &ts, waitmask);
		return;
	}
	for (i = 0; i < m->npop3; i++, n++) {
		pfd[n].fd = m->pop3_fds[i];
		pfd[n].events = POLLIN;
		pfd[n].revents = 0;
	}
	if (ppoll(pfd, (nfds_t)n, NULL, waitmask) > 0)
		master_answer_busy(m);
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
		sb_slot_read(&m->sb.slots[i], &copy);
		if (copy.state == SB_IDLE && m->pool[i] == SB_POOL_LMTP)
			lmtp_idle++;
		else if (copy.state == SB_IDLE)
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

static void
master_signal_workers(struct master *m, int signo)
{
	unsigned	 i;

	for (i = 0; i < m->nslots; i++)
		if (m->pids[i] != 0)
			(void)kill(m->pids[i], signo);
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
	bool	 same = old->nlisten == cf->nlisten &&
	    old->nlmtp_listen == cf->nlmtp_listen;
	int	 i;

	for (i = 0; same && i < cf->nlisten; i++)
		same = strcmp(old->listen[i], cf->listen[i]) == 0;
	for (i = 0; same && i < cf->nlmtp_listen; i++)
		same = strcmp(old->lmtp_listen[i], cf->lmtp_listen[i]) == 0;
	if (!same) {
		log_warnx("reload: listen/lmtp_listen changes need a restart; "
		    "keeping the old addresses");
		memcpy(cf->listen, old->listen, sizeof(cf->listen));
		cf->nlisten = old->nlisten;
		memcpy(cf->lmtp_listen, old->lmtp_listen,
		    sizeof(cf->lmtp_listen));
		cf->nlmtp_listen = old->nlmtp_listen;
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

	if (util_mkdir_p(cf->run_dir, 0755) == -1) {
		log_warn("run_dir %s", cf->run_dir);
		return MASTER_EX_OSERR;
	}
	if (master_check_running(m) == -1)
		return MASTER_EX_OSERR;
	if (auth_global_init() == -1) {
		log_warnx("auth_global_init failed");
		return MASTER_EX_OSERR;
	}
	if (master_listen(m) == -1)
		return MASTER_EX_OSERR;
	if (!m->foreground && master_detach(m) == -1)
		return MASTER_EX_OSERR;
	/* After detaching: the header records the master's final pid. */
	/* POP3 workers plus the LMTP pool (master_limits). */
	m->nslots = cf->max_workers > 0 ? cf->max_workers : 1;
	if (m->nlmtp > 0)
		m->nslots += cf->lmtp_workers;
	if (sb_create(cf->run_dir, m->nslots, cf, &m->sb) == -1)
		return MASTER_EX_OSERR;
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
	m.spawn_batch = 1;
	log_init("sdpsd", true, LOG_MAIL, verbose);
	log_setproc("master");
	snprintf(m.pidfile, sizeof(m.pidfile), "%s/%s", cf->run_dir,
	    MASTER_PIDFILE);

	/* Blocked from here on, so no signal is lost before the loop. */
	master_signals_init(&waitmask);
	if ((rc = master_setup(&m)) != 0) {
		if (m.ready_fd != -1)
			close(m.ready_fd);
		return rc;
	}
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
			    MASTER_FAST_TICK_US)
				master_maintain(&m);
			master_check_ready(&m);
		}
		master_wait(&m, &waitmask);
	}
	master_stop(&m, &waitmask);
	if (m.ready_fd != -1)
		close(m.ready_fd);
	authcache_destroy(m.sb.authcache);
	sb_close(&m.sb);
	free(m.pids);
	free(m.forked_us);
	free(m.pool);
	free(m.cf);
	return rc;
}
