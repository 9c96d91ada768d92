/*
 * worker: one pre-forked sdpsd worker: after-fork setup, the accept loop
 * over the shared listeners, one session at a time, and recycling.
 */
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <netinet/in.h>

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/lmtp.h"
#include "sdps/log.h"
#include "sdps/puntsrv.h"
#include "sdps/puntset.h"
#include "sdps/session.h"
#include "sdps/slot.h"
#include "sdps/worker.h"

#define WORKER_POLL_MS		1000
#define WORKER_FDS_MAX		CONFIG_LISTENERS_MAX

static volatile sig_atomic_t	 worker_terminate;
static volatile sig_atomic_t	 worker_kill_session;

static void
worker_sig(int signo)
{
	int	 saved = errno;

	if (signo == SIGTERM)
		worker_terminate = 1;
	else if (signo == SIGUSR2)
		worker_kill_session = 1;
	errno = saved;
}

/*
 * The master's handlers and blocked mask are inherited; replace them
 * before unblocking.  No SA_RESTART: SIGUSR2 must interrupt a session
 * blocked in read/poll so it can see *kill_session.  SIGHUP, SIGINT and
 * SIGUSR1 are the master's business (a terminal's ^C reaches the whole
 * process group; the master then stops the workers in order).
 */
static void
worker_signals(void)
{
	static const int	 ignored[] = { SIGPIPE, SIGHUP, SIGINT, SIGUSR1 };
	static const int	 dflt[] = { SIGCHLD, SIGALRM };
	struct sigaction	 sa;
	sigset_t		 all;
	size_t			 i;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = SIG_IGN;
	for (i = 0; i < NITEMS(ignored); i++)
		sigaction(ignored[i], &sa, NULL);
	sa.sa_handler = SIG_DFL;
	for (i = 0; i < NITEMS(dflt); i++)
		sigaction(dflt[i], &sa, NULL);
	sa.sa_handler = worker_sig;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
}

/* puntset health hook: the scoreboard's punt health row for punt i. */
static void
worker_punt_health(void *arg, int i, const char *name, bool ok)
{
	struct session_env	*w = arg;
	struct sb_punt_health	*h;

	if ((uint32_t)i >= w->sb->hdr->npunts ||
	    strcmp(w->sb->hdr->punts[i].name, name) != 0)
		return;
	h = &w->sb->hdr->punts[i];
	atomic_store(&h->ok, ok ? 1 : 0);
	atomic_store(&h->checked_us, util_now_us());
}

static void
worker_auth(struct session_env *w)
{
	static bool	 logged;
	char		 err[256];

	if (w->auth != NULL)
		return;
	w->auth = auth_open(w->cf->auth_path, w->cf->auth_map_size, false,
	    w->cf->hash_cost, err, sizeof(err));
	if (w->auth == NULL && !logged) {
		log_warnx("auth %s: %s", w->cf->auth_path, err);
		logged = true;
	} else if (w->auth != NULL && logged) {
		log_info("auth %s: available again", w->cf->auth_path);
		logged = false;
	}
}

/*
 * After a worker died the master asks for the punts' housekeeping (the
 * local punt's LMDB reader check, punt_local.c).
 */
static void
worker_reader_check(struct session_env *w)
{
	if (atomic_exchange(&w->sb->hdr->reader_check, 0) == 0)
		return;
	puntset_maintain(w->punts);
}

static void
worker_peer(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char	 a[INET6_ADDRSTRLEN];

	switch (ss->ss_family) {
	case AF_INET:
		if (inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)ss)->sin_addr, a,
		    sizeof(a)) == NULL)
			break;
		snprintf(buf, len, "%s", a);
		return;
	case AF_INET6:
		if (inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)ss)->sin6_addr, a,
		    sizeof(a)) == NULL)
			break;
		snprintf(buf, len, "[%s]", a);
		return;
	case AF_UNIX:
		snprintf(buf, len, "unix");
		return;
	}
	snprintf(buf, len, "unknown");
}

/* Slot fields for a new connection (the session refines them). */
static void
worker_slot_begin(struct session_env *w, uint32_t state, const char *peer)
{
	slot_connect(w->slot, state, sb_session_id(w->sb), peer,
	    util_now_us());
}

static void
worker_slot_idle(struct session_env *w, bool served)
{
	slot_idle(w->slot, served, util_now_us());
}

static bool
worker_should_exit(struct session_env *w, pid_t master, const char **why)
{
	struct sb_header *h = w->sb->hdr;
	unsigned	 max = w->cf->max_sessions_per_worker;

	if (atomic_load(&h->stopping) || worker_terminate)
		*why = "stopping";
	else if (atomic_load(&w->slot->please_exit))
		*why = "too many idle workers";
	else if (w->slot->generation != atomic_load(&h->generation))
		*why = "configuration reloaded";
	else if (max != 0 && w->slot->sessions_served >= max)
		*why = "max_sessions_per_worker reached";
	else if (getppid() != master)
		*why = "master gone";
	else
		return false;
	return true;
}

void
worker_refuse(int fd, const char *line)
{
	char	 junk[512];
	int	 i;

	/* A fresh socket's send buffer is empty: this does not block. */
	(void)!send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)shutdown(fd, SHUT_WR);
	/* Input left unread would turn close(2) into a reset that can
	 * take our line with it; take what has come (bounded). */
	for (i = 0; i < 8; i++)
		if (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) <= 0)
			break;
	close(fd);
}

/*
 * A connection over max_conn_per_ip: one line and close.  Logged at
 * most once per WORKER_REFUSE_LOG_S per worker, with the number left
 * unlogged, so a flood does not flood the log too.
 */
#define WORKER_REFUSE_LOG_S	10
static void
worker_refuse_conn(struct session_env *w, int fd, const char *peer)
{
	static uint64_t	 logged_us;
	static unsigned	 quiet;
	uint64_t	 now = util_now_us();

	worker_refuse(fd, "-ERR [SYS/TEMP] too many connections from your "
	    "address\r\n");
	if (logged_us != 0 && now - logged_us <
	    (uint64_t)WORKER_REFUSE_LOG_S * 1000000) {
		quiet++;
		return;
	}
	log_info("peer=%s event=conn-limit max_conn_per_ip=%u unlogged=%u",
	    peer, w->cf->max_conn_per_ip, quiet);
	logged_us = now;
	quiet = 0;
}

/* A source address the per-address cap applies to (not a unix socket). */
static bool
worker_capped_peer(const char *peer)
{
	return strcmp(peer, "unix") != 0 && strcmp(peer, "unknown") != 0;
}

/*
 * Take one connection from lfd.  The listeners are non-blocking and every
 * idle worker polls them, so several may wake for one connection; the
 * accept mutex lets one at a time try, and the losers see EAGAIN (as
 * Apache's SAFE_ACCEPT does with several listeners).
 *
 * Still under the mutex, a POP3 connection (not a punt link: a front
 * end opens many from one address) is checked against
 * max_conn_per_ip (the other workers' slots with the same peer) and the
 * slot records this one's peer before the mutex is released, so the
 * next worker's count includes it: the cap is exact across workers.
 * Returns the fd with the slot begun, -1 for "nothing, go on" (also for
 * a refused connection), or -2 when this worker should give up (no fds).
 */
static int
worker_accept(struct session_env *w, int lfd, enum config_proto proto,
    char *peer, size_t peerlen)
{
	static const uint32_t	 state[] = {
		[CONFIG_PROTO_POP3] = SB_AUTH,
		[CONFIG_PROTO_LMTP] = SB_LMTP,
		[CONFIG_PROTO_PUNT] = SB_LINK,
	};
	struct sockaddr_storage	 ss;
	socklen_t		 slen = sizeof(ss);
	unsigned		 max = w->cf->max_conn_per_ip;
	int			 fd, saved;
	bool			 refuse = false;

	if (sb_accept_lock(w->sb) == -1)
		return -2;
	fd = accept4(lfd, (struct sockaddr *)&ss, &slen, SOCK_CLOEXEC);
	saved = errno;
	if (fd != -1) {
		memset(peer, 0, peerlen);
		if (slen == 0)
			ss.ss_family = AF_UNIX;
		worker_peer(&ss, peer, peerlen);
		if (proto == CONFIG_PROTO_POP3 && max > 0 &&
		    worker_capped_peer(peer) &&
		    sb_count_peer(w->sb, w->slot, peer) >= max)
			refuse = true;
		else
			worker_slot_begin(w, state[proto], peer);
	}
	sb_accept_unlock(w->sb);
	if (fd == -1) {
		switch (saved) {
		case EAGAIN:
#if EWOULDBLOCK != EAGAIN
		case EWOULDBLOCK:
#endif
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
			return -1;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			errno = saved;
			log_warn("accept4");
			return -2;
		default:
			errno = saved;
			log_warn("accept4");
			return -1;
		}
	}
	if (refuse) {
		worker_refuse_conn(w, fd, peer);
		return -1;
	}
	return fd;
}

/*
 * Issue 12 (idle memory): a worker holds one session, so whatever its
 * heap keeps after a session is paid again by every idle worker.  Fixed
 * thresholds (mallopt turns glibc's sliding ones off, which a freed big
 * block had raised past argon2id's 128 KB index buffer and a large
 * listing, leaving them on the heap for good): blocks of
 * WORKER_MMAP_MIN and more are mapped and unmapped at free, and free
 * memory above WORKER_TRIM_MIN at the top of the heap goes back at once.
 * After each session malloc_trim also returns the free pages inside the
 * heap (MADV_DONTNEED), so a worker goes back to what its next session
 * needs.
 */
#define WORKER_MMAP_MIN		(64 * 1024)
#define WORKER_TRIM_MIN		(64 * 1024)

static void
worker_malloc_init(void)
{
	(void)mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_MIN);
	(void)mallopt(M_TRIM_THRESHOLD, WORKER_TRIM_MIN);
}

/* The slot was begun by worker_accept. */
static void
worker_serve(struct session_env *w, int fd, const struct listener *l,
    const char *peer)
{
	worker_kill_session = 0;
	if (l->cl.proto == CONFIG_PROTO_LMTP)
		lmtp_run(w, fd, peer);
	else if (l->cl.proto == CONFIG_PROTO_PUNT)
		puntsrv_run(w, fd, peer, l->tls);
	else {
		atomic_fetch_add(&w->sb->hdr->total_sessions, 1);
		worker_auth(w);
		session_run(w, fd, peer);
	}
	close(fd);
	worker_kill_session = 0;
	(void)malloc_trim(0);
	worker_slot_idle(w, true);
}

static void __attribute__((noreturn))
worker_exit(struct session_env *w, int status)
{
	slot_state(w->slot, SB_EXITING);
	puntset_free(w->punts);
	w->punts = NULL;
	if (w->auth != NULL)
		auth_close(w->auth);
	w->auth = NULL;
	exit(status);
}

/*
 * The listeners of pool lmtp into pfd (pl[i]: pfd[i]'s); how many.  The
 * POP3 pool also serves the punt listeners (issue 11).
 */
static int
worker_pollset(const struct listener *ls, int nls, bool lmtp,
    struct pollfd *pfd, const struct listener **pl)
{
	int	 i, n = 0;

	for (i = 0; i < nls && n < WORKER_FDS_MAX; i++) {
		if ((ls[i].cl.proto == CONFIG_PROTO_LMTP) != lmtp)
			continue;
		pl[n] = &ls[i];
		pfd[n].fd = ls[i].fd;
		pfd[n].events = POLLIN;
		n++;
	}
	return n;
}

/*
 * The idle wait.  Every idle worker waits on the same listening sockets;
 * with poll(2) each connection woke all of them (a thundering herd: 32
 * context switches per poll session with 34 idle workers, most of them
 * a wake-up, a turn at the accept mutex and an EAGAIN).  An epoll set
 * with EPOLLEXCLUSIVE wakes one waiting worker per connection (a busy
 * worker's set has no waiter and is passed over).  The mutex stays: it
 * keeps max_conn_per_ip exact.  ep is -1 if the set could not be made;
 * then this is the plain poll(2).  Fills pfd[].revents like poll(2).
 */
static int
worker_pollset_ep(struct pollfd *pfd, int nfds)
{
	struct epoll_event	 ev;
	int			 ep, i;

	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		log_warn("epoll_create1 (waiting with poll)");
		return -1;
	}
	for (i = 0; i < nfds; i++) {
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN | EPOLLEXCLUSIVE;
		ev.data.u32 = (uint32_t)i;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, pfd[i].fd, &ev) == -1) {
			log_warn("epoll_ctl (waiting with poll)");
			close(ep);
			return -1;
		}
	}
	return ep;
}

static int
worker_wait(int ep, struct pollfd *pfd, int nfds)
{
	struct epoll_event	 ev[WORKER_FDS_MAX];
	int			 i, n;

	if (ep == -1)
		return poll(pfd, (nfds_t)nfds, WORKER_POLL_MS);
	for (i = 0; i < nfds; i++)
		pfd[i].revents = 0;
	if ((n = epoll_wait(ep, ev, nfds, WORKER_POLL_MS)) <= 0)
		return n;
	for (i = 0; i < n; i++)
		pfd[ev[i].data.u32].revents = (short)
		    ((ev[i].events & EPOLLIN ? POLLIN : 0) |
		    (ev[i].events & EPOLLERR ? POLLERR : 0));
	return n;
}

/* The session environment of the worker in slot slot_idx. */
static void
worker_env(struct session_env *w, const struct config *cf,
    struct scoreboard *sb, int slot_idx)
{
	memset(w, 0, sizeof(*w));
	w->cf = cf;
	w->sb = sb;
	w->slot = &sb->slots[slot_idx];
	w->tls = sb->tls;	/* the master's, inherited over fork */
	w->kill_session = &worker_kill_session;
	w->terminate = &worker_terminate;
	atomic_store(&w->slot->pid, getpid());
}

/* Environments are opened here, after fork (LMDB caveat). */
static void
worker_open(struct session_env *w)
{
	int	 i;

	worker_auth(w);
	if ((w->punts = puntset_new(w->cf, PUNTSET_LOG)) == NULL) {
		log_warnx("puntset: out of memory");
		worker_exit(w, WORKER_EX_SICK);
	}
	puntset_on_health(w->punts, worker_punt_health, w);
	/* Remote punts share their down memory and rtt in the scoreboard. */
	puntset_on_remote(w->punts, w->sb->hdr->punts,
	    (int)w->sb->hdr->npunts, w->kill_session);
	for (i = 0; i < w->cf->npunts; i++)
		(void)puntset_get(w->punts, i);
	worker_reader_check(w);
}

void
worker_main(const struct config *cf, struct scoreboard *sb, int slot_idx,
    const struct listener *ls, int nls)
{
	static char		 proc[32];
	struct session_env	 w;
	struct pollfd		 pfd[WORKER_FDS_MAX];
	const struct listener	*pl[WORKER_FDS_MAX];	/* of pfd[i] */
	char			 peer[SB_PEER_MAX];
	const char		*why;
	pid_t			 master;
	int			 i, n, nfds, fd, ep;
	bool			 lmtp;

	worker_signals();
	worker_malloc_init();
	snprintf(proc, sizeof(proc), "worker %d", slot_idx);
	log_setproc(proc);
	master = sb->hdr->master_pid;
	worker_env(&w, cf, sb, slot_idx);

	/*
	 * Issue 8: a POP3 worker accepts only POP3 (and punt links), an
	 * LMTP worker only LMTP, so a POP3 flood cannot take the workers mail delivery
	 * needs (the master sizes the two pools).
	 */
	lmtp = w.slot->pool == SB_POOL_LMTP;
	nfds = worker_pollset(ls, nls, lmtp, pfd, pl);
	ep = worker_pollset_ep(pfd, nfds);

	worker_open(&w);
	worker_slot_idle(&w, false);
	log_debug("started, generation %llu",
	    (unsigned long long)w.slot->generation);

	for (;;) {
		if (worker_should_exit(&w, master, &why)) {
			log_debug("exiting: %s", why);
			worker_exit(&w, 0);
		}
		worker_reader_check(&w);
		n = worker_wait(ep, pfd, nfds);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			log_warn("poll");
			worker_exit(&w, WORKER_EX_SICK);
		}
		if (n == 0)
			continue;
		for (i = 0; i < nfds; i++) {
			if ((pfd[i].revents & (POLLIN | POLLERR)) == 0)
				continue;
			fd = worker_accept(&w, pfd[i].fd, pl[i]->cl.proto,
			    peer, sizeof(peer));
			if (fd == -2)
				worker_exit(&w, WORKER_EX_SICK);
			if (fd == -1)
				continue;
			w.listener = &pl[i]->cl;
			worker_serve(&w, fd, pl[i], peer);
			w.listener = NULL;
			/* Re-check the exit conditions between sessions. */
			break;
		}
	}
}
