/*
 * master_keys: the master's side of TLS (issue 10, docs/design.md §17).
 *
 * At start-up, as root and before any worker is forked, the master makes
 * the shared session-ticket keys and builds the server context from the
 * certificate and key it reads itself; an error stops start-up with the
 * file:line of the config key.  Workers inherit the context in memory.
 *
 * A reload (SIGHUP) comes after the privilege drop, when the master can
 * no longer read a root-only (0600) key file.  So before the drop it
 * forks a tiny root "key reader" (the privilege separation of OpenSMTPD's
 * parent process), joined by a socketpair.  Asked with one octet, the
 * reader loads the config file itself, from the path fixed at start, and
 * answers the PEM text of the cert and key it names, or the error.  It
 * never takes a path from the master: a compromised master can make it
 * read nothing but what the operator configured, which it holds in memory
 * already.  The reader exists whenever TLS is configured, with or without
 * a user to drop to (one code path).  It leaves on EOF (the master is
 * gone) or with it (PR_SET_PDEATHSIG); the master reaps it and does not
 * count it as a worker.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "sdps/log.h"
#include "sdps/tls.h"
#include "sdps/util.h"
#include "master_int.h"

#define KEYS_ASK	'R'
#define KEYS_WAIT_MS	10000		/* for the reader's whole answer */
#define KEYS_PEM_MAX	(2u << 20)	/* tls.c reads at most 1 MiB */
#define KEYS_ERR_MAX	512

/* The answer's head; then cert_len, key_len and err_len octets. */
struct keys_reply {
	int32_t		 status;	/* 0, or -1 with the error text */
	uint32_t	 cert_len, key_len, err_len;
};

/* Issue 11: is there a punt listener (its own context)? */
static bool
master_has_punt(const struct config *cf)
{
	return config_nlisteners(cf, CONFIG_PROTO_PUNT) > 0;
}

static bool
master_has_tls(const struct config *cf)
{
	int	 i;

	for (i = 0; i < cf->nlisteners; i++)
		if (cf->listeners[i].tls != CONFIG_TLS_NONE)
			return true;
	return false;
}

/*
 * Start-up, as root, before the detach (stderr still works) and before
 * any fork.  0, or the MASTER_EX_* status with the reason logged.
 */
int
master_tls_start(struct master *m)
{
	struct tls_pem	 pem;
	char		 err[512], desc[256];

	m->keys_fd = -1;
	if (!master_has_tls(m->cf))
		return 0;
	if ((m->tickets = tls_tickets_create()) == NULL)
		return MASTER_EX_OSERR;
	if (tls_pem_read(m->cf, &pem, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return MASTER_EX_CONFIG;
	}
	m->tls = tls_server_new(m->cf, &pem, m->tickets, err, sizeof(err));
	if (m->tls != NULL && master_has_punt(m->cf) &&
	    (m->punt_tls = tls_punt_server_new(m->cf, &pem, err,
	    sizeof(err))) == NULL) {
		tls_server_free(m->tls);
		m->tls = NULL;
	}
	tls_pem_wipe(&pem);
	if (m->tls == NULL) {
		log_warnx("%s", err);
		return MASTER_EX_CONFIG;
	}
	tls_server_describe(m->tls, desc, sizeof(desc));
	log_info("tls: %s", desc);
	if (m->punt_tls != NULL)
		log_info("tls: punt links: TLS 1.3, client certificates from "
		    "%s, allow %s", m->cf->ps_ca, m->cf->ps_allow);
	return 0;
}

/* ------------------------------------------------------ the key reader */

/* Send the answer for the config at path (the reader, as root). */
static int
keys_answer(int fd, const char *path)
{
	struct keys_reply r;
	struct tls_pem	 pem = { NULL, 0, NULL, 0 };
	struct config	*cf;
	char		 err[KEYS_ERR_MAX];
	int		 rc;

	memset(&r, 0, sizeof(r));
	r.status = -1;
	if ((cf = malloc(sizeof(*cf))) == NULL)
		snprintf(err, sizeof(err), "key reader: out of memory");
	else if (config_load(path, cf, err, sizeof(err)) == 0) {
		if (cf->tls.cert[0] == '\0')
			snprintf(err, sizeof(err), "%s:0: no [tls] cert and "
			    "key (listener changes need a restart)", path);
		else if (tls_pem_read(cf, &pem, err, sizeof(err)) == 0)
			r.status = 0;
	}
	free(cf);
	if (r.status == 0) {
		r.cert_len = (uint32_t)pem.cert_len;
		r.key_len = (uint32_t)pem.key_len;
	} else
		r.err_len = (uint32_t)strlen(err);
	rc = util_write_all(fd, &r, sizeof(r));
	if (rc == 0 && r.status == 0)
		rc = util_write_all(fd, pem.cert, pem.cert_len) == 0 &&
		    util_write_all(fd, pem.key, pem.key_len) == 0 ? 0 : -1;
	else if (rc == 0)
		rc = util_write_all(fd, err, r.err_len);
	if (r.status == 0)
		tls_pem_wipe(&pem);
	return rc;
}

/* The reader's signals: the master's handlers and mask are not for it. */
static void
keys_signals(void)
{
	static const int	 dfl[] = { SIGTERM, SIGINT, SIGCHLD, SIGPIPE };
	static const int	 ign[] = { SIGHUP, SIGUSR1, SIGUSR2, SIGALRM };
	struct sigaction	 sa;
	sigset_t		 none;
	size_t			 i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (i = 0; i < NITEMS(dfl); i++)
		sigaction(dfl[i], &sa, NULL);
	sa.sa_handler = SIG_IGN;
	for (i = 0; i < NITEMS(ign); i++)
		sigaction(ign[i], &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static void __attribute__((noreturn))
keys_main(struct master *m, int fd, pid_t master)
{
	char	 c;
	ssize_t	 n;

	/* Gone with the master, even if it dies before the next read. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != master)
		_exit(0);
	(void)prctl(PR_SET_NAME, "sdpsd-keys");
	keys_signals();
	/* Nothing of the master's but the socket and stderr: no
	 * listeners, no ready pipe, no run_dir descriptor. */
	if (dup2(fd, STDERR_FILENO + 1) == -1)
		_exit(1);
	fd = STDERR_FILENO + 1;
	closelog();
	(void)close_range(STDERR_FILENO + 2, ~0u, 0);
	log_init("sdpsd", m->foreground, LOG_MAIL, m->verbose);
	log_setproc("keys");
	log_debug("key reader: pid %ld", (long)getpid());
	for (;;) {
		do
			n = read(fd, &c, 1);
		while (n == -1 && errno == EINTR);
		if (n == 0)
			_exit(0);	/* the master is gone */
		if (n == -1 || c != KEYS_ASK) {
			log_warnx("key reader: bad request; exiting");
			_exit(1);
		}
		if (keys_answer(fd, m->conf_path) == -1)
			_exit(1);
	}
}

/*
 * After the detach (the reader's parent must be the master that stays),
 * before the privilege drop and the scoreboard.  0 or -1 (logged).
 */
int
master_keys_fork(struct master *m)
{
	pid_t	 master = getpid(), pid;
	int	 sv[2];

	if (m->tls == NULL)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		log_warn("socketpair");
		return -1;
	}
	if ((pid = fork()) == -1) {
		log_warn("fork");
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		keys_main(m, sv[1], master);
	}
	close(sv[1]);
	m->keys_fd = sv[0];
	m->keys_pid = pid;
	return 0;
}

/* The key reader is gone for good: say so once, and stop asking it. */
static void
keys_gone(struct master *m, const char *why, bool stop)
{
	if (m->keys_fd == -1)
		return;
	close(m->keys_fd);
	m->keys_fd = -1;
	/* A broken protocol: stop it (master_reap collects it). */
	if (stop && m->keys_pid > 0)
		(void)kill(m->keys_pid, SIGKILL);
	log_warnx("key reader (pid %ld): %s; a new certificate now needs a "
	    "restart", (long)m->keys_pid, why);
}

/* Read len octets by the deadline; -1 with err on EOF, error, timeout. */
static int
keys_read(int fd, void *buf, size_t len, uint64_t deadline_us, char *err,
    size_t errlen)
{
	struct pollfd	 pfd = { .fd = fd, .events = POLLIN };
	uint64_t	 now;
	size_t		 off = 0;
	ssize_t		 n;

	while (off < len) {
		if ((now = util_now_us()) >= deadline_us) {
			snprintf(err, errlen, "no answer in %d ms",
			    KEYS_WAIT_MS);
			return -1;
		}
		if (poll(&pfd, 1, (int)((deadline_us - now) / 1000) + 1) < 1)
			continue;	/* EINTR, or the deadline above */
		if ((n = read(fd, (char *)buf + off, len - off)) == -1 &&
		    errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "%s", n == 0 ? "gone" :
			    strerror(errno));
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

/* A NUL-terminated copy of len octets from the reader, into *out. */
static int
keys_read_blob(int fd, size_t len, char **out, uint64_t deadline_us,
    char *err, size_t errlen)
{
	if ((*out = malloc(len + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	(*out)[len] = '\0';
	return keys_read(fd, *out, len, deadline_us, err, errlen);
}

/*
 * Ask the reader for the PEM of the config file as it is now.  0, or -1
 * with err the reader's reason (a config or file error, as file:line)
 * or ours (the reader is gone, or broke the protocol: then it is stopped).
 */
static int
keys_ask(struct master *m, struct tls_pem *pem, char *err, size_t errlen)
{
	struct keys_reply r;
	char		 why[128], c = KEYS_ASK;
	uint64_t	 deadline = util_now_us() + KEYS_WAIT_MS * 1000ULL;

	memset(pem, 0, sizeof(*pem));
	if (m->keys_fd == -1) {
		snprintf(err, errlen, "the key reader is gone (see above); "
		    "a restart loads a new certificate");
		return -1;
	}
	if (util_write_all(m->keys_fd, &c, 1) == -1)
		snprintf(why, sizeof(why), "%s", strerror(errno));
	else if (keys_read(m->keys_fd, &r, sizeof(r), deadline, why,
	    sizeof(why)) == 0) {
		if (r.status == 0 && r.cert_len <= KEYS_PEM_MAX &&
		    r.key_len <= KEYS_PEM_MAX && r.err_len == 0) {
			pem->cert_len = r.cert_len;
			pem->key_len = r.key_len;
			if (keys_read_blob(m->keys_fd, r.cert_len, &pem->cert,
			    deadline, why, sizeof(why)) == 0 &&
			    keys_read_blob(m->keys_fd, r.key_len, &pem->key,
			    deadline, why, sizeof(why)) == 0)
				return 0;
			tls_pem_wipe(pem);
		} else if (r.status == -1 && r.err_len < errlen &&
		    r.err_len < KEYS_ERR_MAX) {
			if (keys_read(m->keys_fd, err, r.err_len, deadline, why,
			    sizeof(why)) == 0) {
				err[r.err_len] = '\0';
				return -1;
			}
		} else
			snprintf(why, sizeof(why), "bad answer");
	}
	keys_gone(m, why, true);
	snprintf(err, errlen, "key reader: %s", why);
	return -1;
}

/*
 * SIGHUP, with the new config cf (not yet the master's): a new context
 * from the reader's PEM, or the old one kept with the reason logged.
 * Workers forked from now on get the new one; open sessions keep theirs.
 */
void
master_tls_reload(struct master *m, const struct config *cf)
{
	struct tls_server *t, *pt;
	struct tls_pem	 pem;
	char		 err[512], desc[256];
	int		 i;

	if (m->tls == NULL)
		return;
	if (keys_ask(m, &pem, err, sizeof(err)) == -1) {
		log_warnx("reload: keeping the old TLS certificate: %s", err);
		return;
	}
	t = tls_server_new(cf, &pem, m->tickets, err, sizeof(err));
	/* The punt listeners' context: the same certificate, and the
	 * [punt_server] ca and allow of the new config (the CA file is
	 * public, so the master reads it itself).  Both or neither. */
	pt = NULL;
	if (t != NULL && m->punt_tls != NULL &&
	    (pt = tls_punt_server_new(cf, &pem, err, sizeof(err))) == NULL) {
		tls_server_free(t);
		t = NULL;
	}
	tls_pem_wipe(&pem);
	if (t == NULL) {
		log_warnx("reload: keeping the old TLS certificate: %s", err);
		return;
	}
	tls_server_free(m->tls);
	m->tls = m->sb.tls = t;
	if (pt != NULL) {
		for (i = 0; i < m->nls; i++)
			if (m->ls[i].cl.proto == CONFIG_PROTO_PUNT)
				m->ls[i].tls = pt;
		tls_server_free(m->punt_tls);
		m->punt_tls = pt;
	}
	tls_server_describe(t, desc, sizeof(desc));
	log_info("reload: tls: %s", desc);
}

/* On the master's timer: a fresh ticket key once the current one is a
 * ticket_lifetime old (tls.h). */
void
master_tls_tick(struct master *m)
{
	unsigned	 life = m->cf->tls.ticket_lifetime_s;

	if (m->tickets != NULL && life > 0 && tls_tickets_rotate(m->tickets,
	    util_now_us() / 1000000, life))
		log_debug("tls: new session-ticket key");
}

/* master_reap: true if pid was the key reader (then it is forgotten). */
bool
master_keys_reaped(struct master *m, pid_t pid, int st)
{
	char	 why[64];

	if (m->keys_pid <= 0 || pid != m->keys_pid)
		return false;
	if (WIFSIGNALED(st))
		snprintf(why, sizeof(why), "killed by signal %d",
		    WTERMSIG(st));
	else
		snprintf(why, sizeof(why), "exited with status %d",
		    WEXITSTATUS(st));
	keys_gone(m, why, false);
	m->keys_pid = 0;
	return true;
}

/* Stop: the reader leaves on EOF; collect it, then free the context. */
void
master_tls_stop(struct master *m)
{
	int	 i;

	if (m->keys_fd != -1)
		close(m->keys_fd);
	m->keys_fd = -1;
	if (m->keys_pid > 0) {
		(void)kill(m->keys_pid, SIGKILL);
		while (waitpid(m->keys_pid, NULL, 0) == -1 && errno == EINTR)
			;
		m->keys_pid = 0;
	}
	tls_server_free(m->tls);
	m->tls = m->sb.tls = NULL;
	for (i = 0; i < m->nls; i++)
		m->ls[i].tls = NULL;
	tls_server_free(m->punt_tls);
	m->punt_tls = NULL;
	tls_tickets_destroy(m->tickets);
	m->tickets = NULL;
}
