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
#include "sdps/throttle.h"
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

/*
 * A unix socket at path, with the configured mode and group, made safely
 * although its directory may belong to the service user (RUN_DIR/lmtp.sock
 * is the usual place, and root binds it).  There is no fchmod for a
 * socket and chmod/chown by name follow a symlink swapped in after bind,
 * so: bind in a fresh 0700 directory of our own next to path (nobody else
 * can touch names in it), under a umask that gives the socket its mode
 * from the start; set the owner there with AT_SYMLINK_NOFOLLOW; check it
 * with fstatat; then rename it onto path, which replaces a stale socket
 * or a planted symlink without following it.
 */
static int
master_listen_unix(struct master *m, const char *path)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	char			 dir[PATH_MAX], tmp[PATH_MAX + 16], *slash;
	const char		*base, *tbase = NULL;
	mode_t			 mode = (mode_t)m->cf->lmtp_socket_mode, omask;
	int			 fd = -1, pfd = -1, tfd = -1, cwd = -1, rc;
	bool			 made = false;

	if (strlen(path) >= sizeof(dir) ||
	    (slash = strrchr(path, '/')) == NULL || slash[1] == '\0') {
		log_warnx("listen %s: bad socket path", path);
		return -1;
	}
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	if (dir[0] == '\0')
		strcpy(dir, "/");
	base = slash + 1;
	if ((pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		log_warn("listen %s: %s", path, dir);
		return -1;
	}
	/* A stale socket or a symlink is replaced; never anything else. */
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISLNK(st.st_mode))
			log_warnx("listen %s: replacing a symlink (not "
			    "following it)", path);
		else if (!S_ISSOCK(st.st_mode)) {
			log_warnx("listen %s: exists and is not a socket",
			    path);
			goto fail;
		}
	}
	rc = snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, base);
	if (rc < 0 || (size_t)rc >= sizeof(tmp) ||
	    strlen(base) + 1 >= sizeof(sun.sun_path)) {
		log_warnx("listen %s: path too long", path);
		goto fail;
	}
	if (mkdtemp(tmp) == NULL) {
		log_warn("listen %s: mkdtemp %s", path, tmp);
		goto fail;
	}
	made = true;
	tbase = strrchr(tmp, '/') + 1;
	/* Ours, by descriptor: a directory swapped in by the parent's
	 * owner between mkdtemp and here is refused. */
	if ((tfd = openat(pfd, tbase, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1 || fstat(tfd, &st) == -1 ||
	    st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		log_warnx("listen %s: private directory %s not ours", path,
		    tmp);
		goto fail;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1) {
		log_warn("listen %s: socket", path);
		goto fail;
	}
	/* bind by a name relative to the private directory: nothing on
	 * the way can be redirected. */
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, base);
	if ((cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fchdir(tfd) == -1) {
		log_warn("listen %s: fchdir", path);
		goto fail;
	}
	omask = umask(0777 & ~mode);
	rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	(void)umask(omask);
	if (fchdir(cwd) == -1) {
		log_warn("listen %s: fchdir back", path);
		goto fail;
	}
	if (rc == -1) {
		log_warn("listen %s: bind", path);
		goto fail;
	}
	if ((m->uid != geteuid() || m->sock_gid != getegid()) &&
	    fchownat(tfd, base, m->uid, m->sock_gid,
	    AT_SYMLINK_NOFOLLOW) == -1) {
		log_warn("listen %s: chown to uid %ld gid %ld", path,
		    (long)m->uid, (long)m->sock_gid);
		goto fail;
	}
	if (fstatat(tfd, base, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    !S_ISSOCK(st.st_mode) || (st.st_mode & 07777) != mode) {
		log_warnx("listen %s: socket has mode %o, not %o", path,
		    (unsigned)(st.st_mode & 07777), (unsigned)mode);
		goto fail;
	}
	if (renameat(tfd, base, pfd, base) == -1) {
		log_warn("listen %s: rename into place", path);
		goto fail;
	}
	(void)unlinkat(pfd, tbase, AT_REMOVEDIR);
	close(tfd);
	close(pfd);
	close(cwd);
	if (listen(fd, MASTER_BACKLOG) == -1) {
		log_warn("listen %s: listen", path);
		close(fd);
		return -1;
	}
	return fd;
fail:
	if (tfd != -1) {
		(void)unlinkat(tfd, base, 0);
		close(tfd);
	}
	if (made)
		(void)unlinkat(pfd, tbase, AT_REMOVEDIR);
	if (fd != -1)
		close(fd);
	if (cwd != -1)
		close(cwd);
	close(pfd);
	return -1;
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
	const struct config_listener	*cl;
	int				 i, fd;

	for (i = 0; i < m->cf->nlisteners; i++) {
		cl = &m->cf->listeners[i];
		fd = cl->addr[0] == '/' ? master_listen_unix(m, cl->addr) :
		    master_listen_inet(cl->addr);
		if (fd == -1)
			return -1;
		m->ls[m->nls].fd = fd;
		m->ls[m->nls++].cl = *cl;
		if (cl->proto == CONFIG_PROTO_LMTP)
			m->nlmtp++;
		else
			m->npop3++;
		log_info("listening for %s on %s", cl->proto ==
		    CONFIG_PROTO_LMTP ? "LMTP" : "POP3", cl->addr);
	}
	if (m->nls == 0) {
		log_warnx("no listen address configured");
		return -1;
	}
	return 0;
}

static void
master_unlisten(struct master *m)
{
	int	 i;

	for (i = 0; i < m->nls; i++) {
		close(m->ls[i].fd);
		if (m->ls[i].cl.addr[0] == '/')
			(void)unlink(m->ls[i].cl.addr);
	}
	m->nls = m->npop3 = m->nlmtp = 0;
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

/* ------------------------------------------- ids and run_dir (h-sb) */

/* "" = dflt, else the named group's id.  0, or -1 (logged). */
static int
master_group(const char *key, const char *name, gid_t dflt, gid_t *gid)
{
	struct group	*gr;

	if (name[0] == '\0') {
		*gid = dflt;
		return 0;
	}
	if ((gr = getgrnam(name)) == NULL) {
		log_warnx("%s %s: no such group", key, name);
		return -1;
	}
	*gid = gr->gr_gid;
	return 0;
}

/*
 * Who the daemon will run as, and the groups of what it creates, before
 * anything is created: the service user when root and user is set, our
 * own ids otherwise.  0, or -1 (logged).
 */
static int
master_ids(struct master *m)
{
	const struct config	*cf = m->cf;
	struct passwd		*pw;

	m->drop = cf->user[0] != '\0' && geteuid() == 0;
	m->uid = geteuid();
	m->gid = getegid();
	if (m->drop) {
		if ((pw = getpwnam(cf->user)) == NULL) {
			log_warnx("user %s: no such user", cf->user);
			return -1;
		}
		m->uid = pw->pw_uid;
		m->gid = pw->pw_gid;
	}
	if (master_group("admin_group", cf->admin_group, m->gid,
	    &m->admin_gid) == -1 ||
	    master_group("lmtp_socket_group", cf->lmtp_socket_group, m->gid,
	    &m->sock_gid) == -1)
		return -1;
	return 0;
}

/*
 * Open run_dir and refuse one that others could plant names in: it must
 * be a real directory (not a symlink), owned by root or the service
 * user, and not group- or world-writable unless sticky.  Everything in
 * it is then reached through m->run_fd.  0, or an exit status.
 */
static int
master_run_dir(struct master *m)
{
	const char	*dir = m->cf->run_dir;
	struct stat	 st;

	m->run_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (m->run_fd == -1) {
		if (errno == ELOOP || errno == ENOTDIR) {
			log_warnx("run_dir %s: a symlink or not a directory; "
			    "refusing to use it", dir);
			return MASTER_EX_CONFIG;
		}
		log_warn("run_dir %s", dir);
		return MASTER_EX_OSERR;
	}
	if (fstat(m->run_fd, &st) == -1) {
		log_warn("run_dir %s", dir);
		return MASTER_EX_OSERR;
	}
	if (st.st_uid != 0 && st.st_uid != m->uid) {
		log_warnx("run_dir %s: owned by uid %ld, not by root or the "
		    "service user (uid %ld); refusing to use it", dir,
		    (long)st.st_uid, (long)m->uid);
		return MASTER_EX_CONFIG;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
	    (st.st_mode & S_ISVTX) == 0) {
		log_warnx("run_dir %s: mode %04o is group- or world-writable "
		    "without the sticky bit; refusing to use it", dir,
		    (unsigned)(st.st_mode & 07777));
		return MASTER_EX_CONFIG;
	}
	return 0;
}

static int
master_drop_privs(struct master *m)
{
	uid_t		 uid = m->uid;
	gid_t		 gid = m->gid;

	if (m->cf->user[0] == '\0')
		return 0;
	if (!m->drop) {
		log_info("not root: running as uid %ld, not as %s",
		    (long)geteuid(), m->cf->user);
		return 0;
	}
	/* Workers create lock files under run_dir.  By descriptor: the
	 * name may have been swapped since it was checked.  (The
	 * scoreboard stays root's: workers write it through the map.) */
	if (fchown(m->run_fd, uid, gid) == -1) {
		log_warn("chown %s", m->cf->run_dir);
		return -1;
	}
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

/*
 * No worker on slot i (reaped, or not forked yet).  sb_slot_reset, not a
 * seqlock write: a worker SIGKILLed inside a write left seq odd, and the
 * master must neither wait for it to turn even nor trip the workers'
 * fault point.
 */
static void
master_slot_clear(struct master *m, unsigned i)
{
	struct sb_slot	*s = &m->sb.slots[i];

	sb_slot_reset(s, SB_FREE);
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
	sb_slot_reset(s, SB_STARTING);
	/* Before the fork: the worker reads it to pick its listeners. */
	s->pool = (uint32_t)pool;
	m->pool[i] = (uint32_t)pool;
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
		worker_main(m->cf, &m->sb, (int)i, m->ls, m->nls);
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
	bool		 early, torn;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		now = util_now_us();
		for (i = 0; i < m->nslots; i++)
			if (m->pids[i] == pid)
				break;
		if (i == m->nslots) {
			log_debug("reaped unknown child %ld", (long)pid);
			continue;
		}
		/*
		 * The worker is gone, so nobody writes its slot: peek, do
		 * not seqlock-read (a worker killed inside a write left seq
		 * odd for good; waiting for it hung the master).  A torn
		 * copy still has each word old or new, good enough for the
		 * start-up guess and the log line.
		 */
		torn = sb_slot_peek(&m->sb.slots[i], &copy);
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
			log_warnx("worker %u (pid %ld) killed by signal "
			    "%d%s%s%s%s", i, (long)pid, WTERMSIG(st),
			    WCOREDUMP(st) ? " (core dumped)" : "",
			    torn ? " inside a scoreboard write" : "",
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
/* Auth throttle (issue 8): sdps-ctl status shows what is blocked now,
 * and only the master's processes can see the anonymous table. */
static void
master_throttle_gauges(struct master *m)
{
	struct throttle_limits	 lim;
	struct throttle_stats	 st;

	if (m->sb.throttle == NULL)
		return;
	lim.source_budget = m->cf->auth_source_budget;
	lim.host_budget = m->cf->auth_host_budget;
	lim.window_s = m->cf->auth_budget_window_s;
	throttle_stats(m->sb.throttle, &lim, (uint64_t)time(NULL), &st);
	atomic_store(&m->sb.hdr->auth_blocked_sources, st.blocked_sources);
	atomic_store(&m->sb.hdr->auth_blocked_hosts, st.blocked_hosts);
}

static void
master_maintain(struct master *m)
{
	const struct config *cf = m->cf;
	struct sb_slot	 copy;
	uint64_t	 gen, now = util_now_us();
	unsigned	 i, idle = 0, live = 0, limit, lmtp_limit, target, n;
	int		 last_idle = -1;

	m->last_maint_us = now;
	master_throttle_gauges(m);
	if (!atomic_load(&m->sb.hdr->stopping))
		master_maintain_lmtp(m, now);
	master_limits(m, &limit, &lmtp_limit);
	master_busy_log(m, now, limit);
	gen = atomic_load(&m->sb.hdr->generation);
	for (i = 0; i < m->nslots; i++) {
		if (m->pids[i] == 0 || m->pool[i] != SB_POOL_POP3)
			continue;
		live++;
		/* Busy (a writer dead, not reaped yet): not idle. */
		if (sb_slot_read(&m->sb.slots[i], &copy) == -1)
			continue;
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
		if (sb_slot_read(&m->sb.slots[i], &copy) != 0)
			continue;	/* a writer died: not idle */
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
	for (i = 0; i < m->nls; i++) {
		if (m->ls[i].cl.proto != CONFIG_PROTO_POP3)
			continue;
		while (n < MASTER_BUSY_BATCH) {
			fd = accept4(m->ls[i].fd, NULL, NULL,
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
	struct pollfd	 pfd[CONFIG_LISTENERS_MAX];
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
	for (i = 0; i < m->nls; i++) {
		if (m->ls[i].cl.proto != CONFIG_PROTO_POP3)
			continue;
		pfd[n].fd = m->ls[i].fd;
		pfd[n].events = POLLIN;
		pfd[n].revents = 0;
		n++;
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
	if (master_listen(m) == -1)
		return MASTER_EX_OSERR;
	if (!m->foreground && master_detach(m) == -1)
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
			    MASTER_FAST_TICK_US)
				master_maintain(&m);
			master_check_ready(&m);
		}
		master_wait(&m, &waitmask);
	}
	master_stop(&m, &waitmask);
 out:
	if (m.ready_fd != -1)
		close(m.ready_fd);
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
