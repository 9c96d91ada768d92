/*
 * sdps-bench: a closed-loop POP3 load generator (epoll, a few threads) that
 * checks every reply and prints one key=value summary line.
 *
 * TLS (issue 10): -S implicit (pop3s) or -S stls (RFC 2595) runs every
 * session over OpenSSL; -V/-X/-G pin the protocol, the cipher suite and
 * the key-exchange group so two servers are compared doing the same
 * work; -A verifies the server against a CA file (default: no chain
 * check); -R offers each slot's previous session (a TLS 1.3 ticket or a
 * 1.2 session) on its next connection and counts how many resumed.  The
 * plain path does not touch OpenSSL.
 */
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

enum scenario { SC_POLL, SC_FETCH, SC_BIG, SC_IDLE };

enum tls_mode { TM_NONE, TM_IMPLICIT, TM_STLS };

static const char *const tls_mode_names[] = { "none", "implicit", "stls" };

static const char *const scenario_names[] = { "poll", "fetch", "big", "idle" };

/* Where a connection is in its script; the reply awaited is for this. */
enum phase {
	PH_FREE,	/* no connection; start one when allowed */
	PH_CONNECT,	/* non-blocking connect in progress */
	PH_HANDSHAKE,	/* TLS handshake in progress */
	PH_GREET,
	PH_STLS,	/* awaiting +OK to STLS */
	PH_USER,
	PH_PASS,
	PH_STAT,
	PH_UIDL,
	PH_LIST,
	PH_RETR,
	PH_QUIT,
	PH_HOLD,	/* idle: logged in, waiting for the stop */
	PH_DONE		/* once mode: this slot has no more work */
};

struct cred {
	char	*user;
	char	*pass;
};

struct conn {
	int		 fd;
	enum phase	 phase;
	SSL		*ssl;		/* NULL: plain */
	SSL_SESSION	*sess;		/* -R: offered on the next connect */
	struct thread	*t;
	int		 slot;		/* global slot number */
	size_t		 ncred_seq;	/* position in this slot's credentials */
	size_t		 cred;		/* index of the credential in use */
	bool		 counted_login;	/* idle: counted in logged_in */
	uint32_t	 ev;		/* epoll events registered */
	/* Reply parser. */
	bool		 got_status;	/* multi-line: status line seen */
	bool		 bol;		/* RETR body: at beginning of line */
	uint64_t	 body_octets;	/* RETR body so far, unstuffed */
	size_t		 body_lines;	/* UIDL/LIST lines */
	/* Maildrop from LIST. */
	uint64_t	*sizes;
	size_t		 nsizes, capsizes;
	size_t		 uidl_lines;
	size_t		 retr_msn;	/* 1-based message being retrieved */
	/* Buffers. */
	char		*in;
	size_t		 inlen;
	char		 out[512];
	size_t		 outlen, outoff;
	uint64_t	 start_ns;	/* session start (before connect) */
	uint64_t	 last_ns;	/* last progress */
	uint64_t	 retry_ns;	/* PH_FREE: do not start before this */
};

struct stats {
	uint64_t	 sessions, msgs, octets, errors, mismatch;
	uint64_t	 handshakes, resumed;
	char		 tls_desc[96];	/* protocol/cipher/group, first seen */
	uint32_t	*lat_us;
	size_t		 nlat, caplat;
};

struct thread {
	pthread_t	 tid;
	int		 epfd;
	struct conn	*conns;
	size_t		 nconns;
	unsigned	 inflight_max;	/* idle: logins at once */
	struct stats	 st;
};

static struct {
	enum scenario	 sc;
	struct sockaddr_storage addr;
	socklen_t	 addrlen;
	unsigned	 conc;
	double		 duration_s;
	unsigned	 idle_n;
	double		 hold_s;
	unsigned	 nthreads;
	bool		 once;
	struct cred	*creds;
	size_t		 ncreds;
	size_t		 bufsize;
	unsigned	 timeout_s;
	int		 verbose;
	/* TLS */
	enum tls_mode	 tls;
	const char	*host;
	const char	*cafile;
	const char	*tls_version;
	const char	*cipher;
	const char	*groups;
	bool		 resume;
	SSL_CTX		*ctx;
} opt;

static atomic_bool	 stop;
static atomic_uint	 logged_in;
static atomic_uint	 slots_done;
static volatile sig_atomic_t got_signal;
static atomic_uint	 err_reported;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: sdps-bench [-h host] [-p port] [-s poll|fetch|big|idle] "
	    "[-c conc]\n"
	    "                  [-d secs] [-n idle_sessions] [-H hold_secs] "
	    "[-t threads]\n"
	    "                  [-T timeout_secs] [-o] [-v] -f credentials\n"
	    "                  [-S none|implicit|stls] [-A cafile] "
	    "[-V TLSv1.2|TLSv1.3]\n"
	    "                  [-X cipher] [-G groups] [-R]\n"
	    "  credentials: lines \"user password\"\n"
	    "  -o: every slot uses each of its credentials once, then stops\n"
	    "  idle: prints \"all_logged_in=N\" when N sessions are logged "
	    "in,\n"
	    "        holds them for -H secs (default -d) or until SIGUSR1/"
	    "SIGINT/SIGTERM\n"
	    "  -S: TLS from the first octet (implicit) or after STLS; -A: "
	    "verify against\n"
	    "      this CA (default: no chain check); -V: only this "
	    "version; -X: only this\n"
	    "      suite (TLS_*: a 1.3 suite, else a 1.2 cipher list); -G: "
	    "groups; -R: resume\n"
	    "      each slot's previous session\n");
	exit(2);
}

static void fatalx(const char *, ...)
    __attribute__((__format__(__printf__, 1, 2), __noreturn__));
static void conn_send(struct thread *, struct conn *, enum phase,
    const char *, ...) __attribute__((__format__(__printf__, 4, 5)));
static int conn_events(struct thread *, struct conn *, uint32_t);
static void conn_read(struct thread *, struct conn *);

static void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("sdps-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void
on_signal(int sig)
{
	got_signal = sig;
}

static void
load_creds(const char *path)
{
	FILE	*fp;
	char	*line = NULL, *sp;
	size_t	 cap = 0, alloc = 0;
	ssize_t	 len;

	if ((fp = fopen(path, "r")) == NULL)
		fatalx("%s: %s", path, strerror(errno));
	while ((len = getline(&line, &cap, fp)) != -1) {
		while (len > 0 && (line[len - 1] == '\n' ||
		    line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		if ((sp = strchr(line, ' ')) == NULL || sp == line ||
		    sp[1] == '\0')
			fatalx("%s: line without \"user password\"", path);
		*sp = '\0';
		if (opt.ncreds == alloc) {
			alloc = alloc ? alloc * 2 : 64;
			opt.creds = realloc(opt.creds,
			    alloc * sizeof(*opt.creds));
			if (opt.creds == NULL)
				fatalx("out of memory");
		}
		opt.creds[opt.ncreds].user = strdup(line);
		opt.creds[opt.ncreds].pass = strdup(sp + 1);
		if (opt.creds[opt.ncreds].user == NULL ||
		    opt.creds[opt.ncreds].pass == NULL)
			fatalx("out of memory");
		opt.ncreds++;
	}
	free(line);
	fclose(fp);
	if (opt.ncreds == 0)
		fatalx("%s: no credentials", path);
}

static void
resolve(const char *host, const char *port)
{
	struct addrinfo	 hints, *res;
	int		 rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
		fatalx("%s:%s: %s", host, port, gai_strerror(rc));
	memcpy(&opt.addr, res->ai_addr, res->ai_addrlen);
	opt.addrlen = res->ai_addrlen;
	freeaddrinfo(res);
}

/*
 * Slot c uses the credentials j with j % nslots == c, in turn, so two
 * slots never log in to the same maildrop at the same time (sdps answers
 * a second session on a host with [IN-USE]).  With fewer credentials
 * than slots some slots have to share.
 */
static size_t
slot_ncreds(int slot, unsigned nslots)
{
	if ((size_t)slot >= opt.ncreds)
		return 1;
	return (opt.ncreds - (size_t)slot + nslots - 1) / nslots;
}

static size_t
slot_cred(int slot, unsigned nslots, size_t seq)
{
	if ((size_t)slot >= opt.ncreds)
		return (size_t)slot % opt.ncreds;
	return (size_t)slot + (seq % slot_ncreds(slot, nslots)) * nslots;
}

static void
report_error(struct conn *c, const char *what, const char *line,
    size_t len)
{
	if (opt.verbose == 0 && atomic_fetch_add(&err_reported, 1) >= 10)
		return;
	if (len > 120)
		len = 120;
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	fprintf(stderr, "sdps-bench: slot %d user %s phase %d: %s%s%.*s\n",
	    c->slot, opt.creds[c->cred].user, (int)c->phase, what,
	    len ? ": " : "", (int)len, line ? line : "");
}

static void
conn_close(struct thread *t, struct conn *c)
{
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd != -1) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	c->inlen = 0;
	c->outlen = c->outoff = 0;
	if (c->counted_login) {
		atomic_fetch_sub(&logged_in, 1);
		c->counted_login = false;
	}
}

/* The session failed: count it, drop it, start over a little later. */
static void
conn_fail(struct thread *t, struct conn *c, const char *what,
    const char *line, size_t len)
{
	if (!atomic_load(&stop)) {
		t->st.errors++;
		report_error(c, what, line, len);
	}
	if (c->sess != NULL) {
		/* A failed session may have left it unusable: start afresh. */
		SSL_SESSION_free(c->sess);
		c->sess = NULL;
	}
	conn_close(t, c);
	c->phase = PH_FREE;
	c->retry_ns = now_ns() + 10 * 1000000u;
}

/* The OpenSSL error queue as one line, for a report (and emptied). */
static const char *
tls_errstr(char *buf, size_t len)
{
	unsigned long e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		snprintf(buf, len, "%s", errno ? strerror(errno) : "EOF");
	else
		ERR_error_string_n(last, buf, len);
	return buf;
}

/* A TLS call returned r <= 0: wait for what it wants, or fail. */
static void
tls_wait(struct thread *t, struct conn *c, int r, const char *what)
{
	char	 buf[256];

	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		conn_events(t, c, EPOLLIN);
		break;
	case SSL_ERROR_WANT_WRITE:
		conn_events(t, c, EPOLLIN | EPOLLOUT);
		break;
	case SSL_ERROR_ZERO_RETURN:
		conn_fail(t, c, what, "close_notify", 12);
		break;
	default:
		tls_errstr(buf, sizeof(buf));
		conn_fail(t, c, what, buf, strlen(buf));
		break;
	}
}

static int
conn_events(struct thread *t, struct conn *c, uint32_t ev)
{
	struct epoll_event e;

	if (c->ev == ev)
		return 0;
	c->ev = ev;
	memset(&e, 0, sizeof(e));
	e.events = ev;
	e.data.ptr = c;
	return epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void
conn_flush(struct thread *t, struct conn *c)
{
	ssize_t	 w;
	int	 r;

	while (c->ssl != NULL && c->outoff < c->outlen) {
		r = SSL_write(c->ssl, c->out + c->outoff,
		    (int)(c->outlen - c->outoff));
		if (r <= 0) {
			tls_wait(t, c, r, "SSL_write");
			return;
		}
		c->outoff += (size_t)r;
	}
	while (c->outoff < c->outlen) {
		w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && errno == EAGAIN) {
			conn_events(t, c, EPOLLIN | EPOLLOUT);
			return;
		}
		if (w <= 0) {
			conn_fail(t, c, "send failed", strerror(errno),
			    strlen(strerror(errno)));
			return;
		}
		c->outoff += (size_t)w;
	}
	c->outlen = c->outoff = 0;
}

static void
conn_send(struct thread *t, struct conn *c, enum phase next,
    const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(c->out, sizeof(c->out), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(c->out)) {
		conn_fail(t, c, "command too long", NULL, 0);
		return;
	}
	c->outlen = (size_t)n;
	c->outoff = 0;
	c->phase = next;
	c->got_status = false;
	c->body_lines = 0;
	c->body_octets = 0;
	c->bol = true;
	conn_flush(t, c);
}

static void
stats_latency(struct stats *st, uint64_t ns)
{
	if (st->nlat == st->caplat) {
		st->caplat = st->caplat ? st->caplat * 2 : 4096;
		st->lat_us = realloc(st->lat_us,
		    st->caplat * sizeof(*st->lat_us));
		if (st->lat_us == NULL)
			fatalx("out of memory");
	}
	st->lat_us[st->nlat++] = ns / 1000 > UINT32_MAX ? UINT32_MAX :
	    (uint32_t)(ns / 1000);
}

static unsigned
thread_inflight(struct thread *t)
{
	unsigned n = 0;
	size_t	 i;

	for (i = 0; i < t->nconns; i++)
		if (t->conns[i].phase >= PH_CONNECT &&
		    t->conns[i].phase < PH_HOLD)
			n++;
	return n;
}

static void
conn_start(struct thread *t, struct conn *c)
{
	struct epoll_event e;
	int	 fd, one = 1;

	if (opt.once && c->ncred_seq >= slot_ncreds(c->slot, opt.conc)) {
		c->phase = PH_DONE;
		atomic_fetch_add(&slots_done, 1);
		return;
	}
	if (opt.sc == SC_IDLE)
		c->cred = (size_t)c->slot % opt.ncreds;
	else
		c->cred = slot_cred(c->slot, opt.conc, c->ncred_seq);
	c->ncred_seq++;
	c->nsizes = 0;
	c->uidl_lines = 0;
	c->start_ns = c->last_ns = now_ns();
	fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatalx("socket: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->phase = PH_CONNECT;
	c->ev = EPOLLOUT;
	memset(&e, 0, sizeof(e));
	e.events = EPOLLOUT;
	e.data.ptr = c;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &e) == -1)
		fatalx("epoll_ctl: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&opt.addr, opt.addrlen) == -1 &&
	    errno != EINPROGRESS)
		conn_fail(t, c, "connect", strerror(errno),
		    strlen(strerror(errno)));
}

static void
session_done(struct thread *t, struct conn *c)
{
	t->st.sessions++;
	stats_latency(&t->st, now_ns() - c->start_ns);
	/*
	 * The server closes after +OK to QUIT.  Marking the shutdown done
	 * keeps SSL_free from flagging the session as not resumable (it
	 * does that to sessions that end without close_notify), without a
	 * close_notify write that a real client would rarely wait for.
	 */
	if (c->ssl != NULL)
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN |
		    SSL_RECEIVED_SHUTDOWN);
	conn_close(t, c);
	c->phase = PH_FREE;
	c->retry_ns = 0;
}

/* -R: the server sent a session (a 1.3 ticket): keep the newest. */
static int
tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (c == NULL || !opt.resume)
		return 0;
	if (c->sess != NULL)
		SSL_SESSION_free(c->sess);
	c->sess = sess;
	return 1;
}

/* Begin TLS on the connected socket (implicit, or after +OK to STLS). */
static void
tls_begin(struct thread *t, struct conn *c)
{
	char	 buf[256];

	if ((c->ssl = SSL_new(opt.ctx)) == NULL ||
	    SSL_set_fd(c->ssl, c->fd) != 1) {
		tls_errstr(buf, sizeof(buf));
		conn_fail(t, c, "SSL_new", buf, strlen(buf));
		return;
	}
	SSL_set_app_data(c->ssl, c);
	SSL_set_connect_state(c->ssl);
	if (opt.cafile != NULL) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);

		if (X509_VERIFY_PARAM_set1_ip_asc(vp, opt.host) != 1)
			X509_VERIFY_PARAM_set1_host(vp, opt.host, 0);
	}
	if (c->sess != NULL)
		SSL_set_session(c->ssl, c->sess);
	c->phase = PH_HANDSHAKE;
}

static void
tls_handshake(struct thread *t, struct conn *c)
{
	int	 r;

	if ((r = SSL_do_handshake(c->ssl)) != 1) {
		tls_wait(t, c, r, "handshake");
		return;
	}
	t->st.handshakes++;
	if (SSL_session_reused(c->ssl))
		t->st.resumed++;
	if (t->st.tls_desc[0] == '\0') {
		int	 nid = SSL_get_negotiated_group(c->ssl);
		const char *g = nid > 0 ? OBJ_nid2sn(nid & ~TLSEXT_nid_unknown)
		    : "-";

		snprintf(t->st.tls_desc, sizeof(t->st.tls_desc), "%s/%s/%s",
		    SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
		    g ? g : "-");
	}
	conn_events(t, c, EPOLLIN);
	if (opt.tls == TM_STLS) {
		/* No greeting after STLS (RFC 2595 §4): go on with USER. */
		conn_send(t, c, PH_USER, "USER %s\r\n",
		    opt.creds[c->cred].user);
		return;
	}
	c->phase = PH_GREET;
	c->got_status = false;
	if (SSL_has_pending(c->ssl))
		conn_read(t, c);
}

static void
send_retr_or_quit(struct thread *t, struct conn *c)
{
	if (c->retr_msn < c->nsizes) {
		c->retr_msn++;
		conn_send(t, c, PH_RETR, "RETR %zu\r\n", c->retr_msn);
	} else
		conn_send(t, c, PH_QUIT, "QUIT\r\n");
}

/* A complete reply for c->phase arrived. */
static void
reply_done(struct thread *t, struct conn *c)
{
	switch (c->phase) {
	case PH_GREET:
		if (opt.tls == TM_STLS)
			conn_send(t, c, PH_STLS, "STLS\r\n");
		else
			conn_send(t, c, PH_USER, "USER %s\r\n",
			    opt.creds[c->cred].user);
		break;
	case PH_STLS:
		/* The handshake starts once this reply is consumed. */
		tls_begin(t, c);
		break;
	case PH_USER:
		conn_send(t, c, PH_PASS, "PASS %s\r\n",
		    opt.creds[c->cred].pass);
		break;
	case PH_PASS:
		switch (opt.sc) {
		case SC_POLL:
			conn_send(t, c, PH_STAT, "STAT\r\n");
			break;
		case SC_FETCH:
			conn_send(t, c, PH_UIDL, "UIDL\r\n");
			break;
		case SC_BIG:
			conn_send(t, c, PH_LIST, "LIST\r\n");
			break;
		case SC_IDLE:
			c->phase = PH_HOLD;
			stats_latency(&t->st, now_ns() - c->start_ns);
			t->st.sessions++;
			c->counted_login = true;
			atomic_fetch_add(&logged_in, 1);
			break;
		}
		break;
	case PH_STAT:
		conn_send(t, c, PH_QUIT, "QUIT\r\n");
		break;
	case PH_UIDL:
		c->uidl_lines = c->body_lines;
		conn_send(t, c, PH_LIST, "LIST\r\n");
		break;
	case PH_LIST:
		if (opt.sc == SC_FETCH && c->uidl_lines != c->nsizes) {
			conn_fail(t, c, "UIDL and LIST counts differ", NULL,
			    0);
			return;
		}
		c->retr_msn = 0;
		send_retr_or_quit(t, c);
		break;
	case PH_RETR:
		t->st.msgs++;
		if (c->body_octets != c->sizes[c->retr_msn - 1]) {
			t->st.mismatch++;
			if (opt.verbose)
				fprintf(stderr, "sdps-bench: %s msg %zu: LIST "
				    "%llu, RETR %llu octets\n",
				    opt.creds[c->cred].user, c->retr_msn,
				    (unsigned long long)
				    c->sizes[c->retr_msn - 1],
				    (unsigned long long)c->body_octets);
		}
		send_retr_or_quit(t, c);
		break;
	case PH_QUIT:
		session_done(t, c);
		break;
	case PH_FREE:
	case PH_CONNECT:
	case PH_HANDSHAKE:
	case PH_HOLD:
	case PH_DONE:
		conn_fail(t, c, "unexpected data", NULL, 0);
		break;
	}
}

static bool
phase_multi(enum phase p)
{
	return p == PH_UIDL || p == PH_LIST || p == PH_RETR;
}

/* One line of a LIST or UIDL body (dot-terminator excluded). */
static int
body_line(struct conn *c, const char *line, size_t len)
{
	unsigned long long msn, octets;
	char	 buf[64];

	c->body_lines++;
	if (c->phase != PH_LIST)
		return 0;
	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, line, len);
	buf[len] = '\0';
	if (sscanf(buf, "%llu %llu", &msn, &octets) != 2 ||
	    msn != c->nsizes + 1)
		return -1;
	if (c->nsizes == c->capsizes) {
		c->capsizes = c->capsizes ? c->capsizes * 2 : 64;
		c->sizes = realloc(c->sizes, c->capsizes * sizeof(*c->sizes));
		if (c->sizes == NULL)
			fatalx("out of memory");
	}
	c->sizes[c->nsizes++] = octets;
	return 0;
}

/*
 * Consume what can be consumed of c->in.  Returns the number of octets
 * used; -1 after conn_fail.  Status lines and LIST/UIDL lines need the
 * whole line in the buffer; a RETR body is counted as it streams, with
 * dot-unstuffing, so a line may span reads.
 */
static ssize_t
parse(struct thread *t, struct conn *c, char *p, size_t len)
{
	char	*nl;
	size_t	 used = 0, n;

	while (used < len && c->fd != -1 && c->phase != PH_FREE) {
		char   *q = p + used;
		size_t	left = len - used;

		if (c->phase == PH_HANDSHAKE) {
			/* Sent in clear after the +OK to STLS. */
			conn_fail(t, c, "data after the STLS reply", q, left);
			return -1;
		}
		if (c->phase == PH_HOLD || c->phase == PH_CONNECT ||
		    c->phase == PH_DONE) {
			conn_fail(t, c, "unexpected data", q, left);
			return -1;
		}
		if (!c->got_status) {
			if ((nl = memchr(q, '\n', left)) == NULL)
				break;
			n = (size_t)(nl - q) + 1;
			if (n < 3 || strncmp(q, "+OK", 3) != 0) {
				conn_fail(t, c, "bad reply", q, n);
				return -1;
			}
			used += n;
			if (phase_multi(c->phase))
				c->got_status = true;
			else
				reply_done(t, c);
			continue;
		}
		if (c->phase == PH_RETR && !c->bol) {
			if ((nl = memchr(q, '\n', left)) == NULL) {
				c->body_octets += left;
				t->st.octets += left;
				used += left;
				break;
			}
			n = (size_t)(nl - q) + 1;
			c->body_octets += n;
			t->st.octets += n;
			used += n;
			c->bol = true;
			continue;
		}
		/* At the start of a body line. */
		if (q[0] == '.') {
			if (left < 3)
				break;
			if (q[1] == '\r' && q[2] == '\n') {
				used += 3;
				reply_done(t, c);
				continue;
			}
		}
		if (c->phase == PH_RETR) {
			if (q[0] == '.')
				used++;		/* dot-stuffing */
			c->bol = false;
			continue;
		}
		if ((nl = memchr(q, '\n', left)) == NULL)
			break;
		n = (size_t)(nl - q) + 1;
		if (n < 2 || q[n - 2] != '\r' ||
		    body_line(c, q, n - 2) == -1) {
			conn_fail(t, c, "bad listing line", q, n);
			return -1;
		}
		used += n;
	}
	return (ssize_t)used;
}

/* r octets arrived in c->in: parse them.  False if c is gone. */
static bool
conn_input(struct thread *t, struct conn *c, size_t r)
{
	ssize_t	 used;

	c->last_ns = now_ns();
	c->inlen += (size_t)r;
	if ((used = parse(t, c, c->in, c->inlen)) == -1)
		return false;
	if (c->fd == -1) {
		c->inlen = 0;
		return false;
	}
	c->inlen -= (size_t)used;
	if (c->inlen > 0)
		memmove(c->in, c->in + used, c->inlen);
	if (c->inlen == opt.bufsize) {
		conn_fail(t, c, "line longer than the buffer", c->in, 80);
		return false;
	}
	if (c->phase == PH_HANDSHAKE) {
		tls_handshake(t, c);	/* after +OK to STLS */
		return false;
	}
	return true;
}

/*
 * TLS: read records until OpenSSL has nothing buffered, since epoll
 * only sees the socket, not a record already decrypted.
 */
static void
conn_read_tls(struct thread *t, struct conn *c)
{
	int	 r;

	do {
		r = SSL_read(c->ssl, c->in + c->inlen,
		    (int)(opt.bufsize - c->inlen));
		if (r <= 0) {
			if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ||
			    (SSL_get_error(c->ssl, r) == SSL_ERROR_SYSCALL &&
			    ERR_peek_error() == 0))
				conn_fail(t, c, "connection closed", NULL, 0);
			else
				tls_wait(t, c, r, "SSL_read");
			return;
		}
		if (!conn_input(t, c, (size_t)r))
			return;
	} while (c->ssl != NULL);
}

static void
conn_read(struct thread *t, struct conn *c)
{
	ssize_t	 r;

	if (c->ssl != NULL) {
		conn_read_tls(t, c);
		return;
	}
	r = recv(c->fd, c->in + c->inlen, opt.bufsize - c->inlen, 0);
	if (r == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		conn_fail(t, c, r == 0 ? "connection closed" : "recv failed",
		    NULL, 0);
		return;
	}
	(void)conn_input(t, c, (size_t)r);
}

static void
conn_event(struct thread *t, struct conn *c, uint32_t ev)
{
	int	 err = 0;
	socklen_t elen = sizeof(err);

	if (c->phase == PH_CONNECT) {
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) ==
		    -1 || err != 0) {
			conn_fail(t, c, "connect", strerror(err),
			    strlen(strerror(err)));
			return;
		}
		c->phase = PH_GREET;
		c->got_status = false;
		conn_events(t, c, EPOLLIN);
		if (opt.tls == TM_IMPLICIT) {
			tls_begin(t, c);
			if (c->ssl != NULL)
				tls_handshake(t, c);
		}
		return;
	}
	if (c->phase == PH_HANDSHAKE) {
		tls_handshake(t, c);
		return;
	}
	if (ev & EPOLLOUT) {
		conn_flush(t, c);
		if (c->fd != -1 && c->outlen == 0)
			conn_events(t, c, EPOLLIN);
	}
	if (c->fd != -1 && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		conn_read(t, c);
}

static void
thread_maintain(struct thread *t, uint64_t now)
{
	unsigned inflight = 0;
	size_t	 i;
	struct conn *c;

	if (opt.sc == SC_IDLE)
		inflight = thread_inflight(t);
	for (i = 0; i < t->nconns; i++) {
		c = &t->conns[i];
		if (c->phase == PH_FREE && now >= c->retry_ns) {
			if (opt.sc == SC_IDLE) {
				if (inflight >= t->inflight_max)
					continue;
				inflight++;
			}
			conn_start(t, c);
		} else if (c->phase != PH_FREE && c->phase != PH_HOLD &&
		    c->phase != PH_DONE &&
		    now - c->last_ns > (uint64_t)opt.timeout_s * 1000000000u)
			conn_fail(t, c, "timeout", NULL, 0);
	}
}

static void *
thread_main(void *arg)
{
	struct thread	*t = arg;
	struct epoll_event evs[256];
	uint64_t	 last_maint = 0, now;
	int		 n, i;
	size_t		 k;

	while (!atomic_load(&stop)) {
		now = now_ns();
		if (now - last_maint > 5 * 1000000u) {
			thread_maintain(t, now);
			last_maint = now;
		}
		n = epoll_wait(t->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), 5);
		if (n == -1 && errno != EINTR)
			fatalx("epoll_wait: %s", strerror(errno));
		if (atomic_load(&stop))
			break;
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c->fd != -1)
				conn_event(t, c, evs[i].events);
		}
		/* A finished session starts the next one at once. */
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c->phase == PH_FREE && c->retry_ns == 0)
				conn_start(t, c);
		}
	}
	for (k = 0; k < t->nconns; k++) {
		struct conn *c = &t->conns[k];

		if (c->phase == PH_HOLD && c->ssl != NULL)
			(void)SSL_write(c->ssl, "QUIT\r\n", 6);
		else if (c->phase == PH_HOLD)
			(void)send(c->fd, "QUIT\r\n", 6, MSG_NOSIGNAL);
		conn_close(t, c);
	}
	return NULL;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double
percentile_ms(const uint32_t *v, size_t n, double p)
{
	size_t	 i;

	if (n == 0)
		return 0;
	i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i] / 1000.0;
}

static int
tls_version_num(const char *v)
{
	if (strcmp(v, "TLSv1.2") == 0)
		return TLS1_2_VERSION;
	if (strcmp(v, "TLSv1.3") == 0)
		return TLS1_3_VERSION;
	fatalx("-V %s: TLSv1.2 or TLSv1.3", v);
}

/* The one client context every thread's connections share. */
static void
tls_setup(void)
{
	char	 buf[256];
	int	 v;

	if ((opt.ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		fatalx("SSL_CTX_new: %s", tls_errstr(buf, sizeof(buf)));
	SSL_CTX_set_min_proto_version(opt.ctx, TLS1_2_VERSION);
	if (opt.tls_version != NULL) {
		v = tls_version_num(opt.tls_version);
		SSL_CTX_set_min_proto_version(opt.ctx, v);
		SSL_CTX_set_max_proto_version(opt.ctx, v);
	}
	if (opt.cipher != NULL && strncmp(opt.cipher, "TLS_", 4) == 0) {
		if (SSL_CTX_set_ciphersuites(opt.ctx, opt.cipher) != 1)
			fatalx("-X %s: %s", opt.cipher,
			    tls_errstr(buf, sizeof(buf)));
	} else if (opt.cipher != NULL &&
	    SSL_CTX_set_cipher_list(opt.ctx, opt.cipher) != 1)
		fatalx("-X %s: %s", opt.cipher, tls_errstr(buf, sizeof(buf)));
	if (opt.groups != NULL &&
	    SSL_CTX_set1_groups_list(opt.ctx, opt.groups) != 1)
		fatalx("-G %s: %s", opt.groups, tls_errstr(buf, sizeof(buf)));
	if (opt.cafile != NULL) {
		if (SSL_CTX_load_verify_locations(opt.ctx, opt.cafile,
		    NULL) != 1)
			fatalx("-A %s: %s", opt.cafile,
			    tls_errstr(buf, sizeof(buf)));
		SSL_CTX_set_verify(opt.ctx, SSL_VERIFY_PEER, NULL);
	} else
		SSL_CTX_set_verify(opt.ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_mode(opt.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/*
	 * Sessions live in their slot, not in OpenSSL's cache: each slot
	 * offers the one its previous connection received.
	 */
	SSL_CTX_set_session_cache_mode(opt.ctx, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(opt.ctx, tls_new_session);
}

static void
parse_args(int argc, char **argv)
{
	const char *host = "127.0.0.1", *port = "110", *credfile = NULL;
	char	*end;
	int	 ch;
	size_t	 i;

	opt.conc = 16;
	opt.duration_s = 15;
	opt.idle_n = 500;
	opt.hold_s = -1;
	opt.nthreads = 2;
	opt.timeout_s = 60;
	while ((ch = getopt(argc, argv, "h:p:s:c:d:n:H:t:T:f:ovS:A:V:X:G:R")) !=
	    -1) {
		switch (ch) {
		case 'S':
			for (i = 0; i < 3; i++)
				if (strcmp(optarg, tls_mode_names[i]) == 0)
					break;
			if (i == 3)
				fatalx("unknown TLS mode %s", optarg);
			opt.tls = (enum tls_mode)i;
			break;
		case 'A':
			opt.cafile = optarg;
			break;
		case 'V':
			opt.tls_version = optarg;
			break;
		case 'X':
			opt.cipher = optarg;
			break;
		case 'G':
			opt.groups = optarg;
			break;
		case 'R':
			opt.resume = true;
			break;
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = optarg;
			break;
		case 's':
			for (i = 0; i < 4; i++)
				if (strcmp(optarg, scenario_names[i]) == 0)
					break;
			if (i == 4)
				fatalx("unknown scenario %s", optarg);
			opt.sc = (enum scenario)i;
			break;
		case 'c':
			opt.conc = (unsigned)strtoul(optarg, &end, 10);
			if (*end != '\0' || opt.conc == 0 || opt.conc > 100000)
				fatalx("bad -c %s", optarg);
			break;
		case 'd':
			opt.duration_s = strtod(optarg, &end);
			if (*end != '\0' || opt.duration_s <= 0)
				fatalx("bad -d %s", optarg);
			break;
		case 'n':
			opt.idle_n = (unsigned)strtoul(optarg, &end, 10);
			if (*end != '\0' || opt.idle_n == 0 ||
			    opt.idle_n > 100000)
				fatalx("bad -n %s", optarg);
			break;
		case 'H':
			opt.hold_s = strtod(optarg, &end);
			if (*end != '\0' || opt.hold_s < 0)
				fatalx("bad -H %s", optarg);
			break;
		case 't':
			opt.nthreads = (unsigned)strtoul(optarg, &end, 10);
			if (*end != '\0' || opt.nthreads == 0 ||
			    opt.nthreads > 64)
				fatalx("bad -t %s", optarg);
			break;
		case 'T':
			opt.timeout_s = (unsigned)strtoul(optarg, &end, 10);
			if (*end != '\0' || opt.timeout_s == 0)
				fatalx("bad -T %s", optarg);
			break;
		case 'f':
			credfile = optarg;
			break;
		case 'o':
			opt.once = true;
			break;
		case 'v':
			opt.verbose++;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || credfile == NULL)
		usage();
	if (opt.hold_s < 0)
		opt.hold_s = opt.duration_s;
	load_creds(credfile);
	resolve(host, port);
	opt.host = host;
	if (opt.tls != TM_NONE)
		tls_setup();
	else if (opt.cafile || opt.tls_version || opt.cipher || opt.groups ||
	    opt.resume)
		fatalx("-A, -V, -X, -G and -R need -S implicit or -S stls");
	if (opt.sc == SC_IDLE) {
		if (opt.once)
			fatalx("-o does not apply to idle");
		if (opt.idle_n > opt.ncreds)
			fprintf(stderr, "sdps-bench: warning: %u idle sessions "
			    "share %zu credentials\n", opt.idle_n,
			    opt.ncreds);
	} else if (opt.conc > opt.ncreds)
		fprintf(stderr, "sdps-bench: warning: %u clients share %zu "
		    "credentials\n", opt.conc, opt.ncreds);
	opt.bufsize = opt.sc == SC_IDLE ? 4096 : 131072;
}

static void
wait_until(uint64_t deadline_ns, bool (*done)(void))
{
	struct timespec ts = { 0, 2 * 1000000 };

	while (now_ns() < deadline_ns && !got_signal && !(done && done()))
		nanosleep(&ts, NULL);
}

static bool
all_logged_in(void)
{
	return atomic_load(&logged_in) >= opt.idle_n;
}

static bool
all_slots_done(void)
{
	return atomic_load(&slots_done) >= opt.conc;
}

int
main(int argc, char **argv)
{
	struct thread	*th;
	struct stats	 tot;
	struct rlimit	 rl;
	struct rusage	 ru;
	struct sigaction sa;
	unsigned	 nslots, i;
	size_t		 k;
	uint64_t	 t0, t1;
	double		 secs, cpu;

	parse_args(argc, argv);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	nslots = opt.sc == SC_IDLE ? opt.idle_n : opt.conc;
	if (opt.nthreads > nslots)
		opt.nthreads = nslots;
	if ((th = calloc(opt.nthreads, sizeof(*th))) == NULL)
		fatalx("out of memory");
	for (i = 0; i < opt.nthreads; i++) {
		th[i].nconns = nslots / opt.nthreads +
		    (i < nslots % opt.nthreads);
		th[i].conns = calloc(th[i].nconns, sizeof(*th[i].conns));
		th[i].inflight_max = opt.conc / opt.nthreads +
		    (i < opt.conc % opt.nthreads);
		if (th[i].inflight_max == 0)
			th[i].inflight_max = 1;
		if ((th[i].epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
			fatalx("epoll_create1: %s", strerror(errno));
		if (th[i].conns == NULL)
			fatalx("out of memory");
	}
	for (i = 0; i < nslots; i++) {
		struct conn *c = &th[i % opt.nthreads].conns[i / opt.nthreads];

		c->fd = -1;
		c->slot = (int)i;
		c->phase = PH_FREE;
		if ((c->in = malloc(opt.bufsize)) == NULL)
			fatalx("out of memory");
	}

	t0 = now_ns();
	for (i = 0; i < opt.nthreads; i++)
		if (pthread_create(&th[i].tid, NULL, thread_main, &th[i]) != 0)
			fatalx("pthread_create failed");

	if (opt.sc == SC_IDLE) {
		wait_until(t0 + (uint64_t)opt.timeout_s * 10 * 1000000000u,
		    all_logged_in);
		printf("%s=%u\n", all_logged_in() ? "all_logged_in" :
		    "logged_in", atomic_load(&logged_in));
		fflush(stdout);
		t1 = now_ns();
		if (!got_signal)
			wait_until(t1 + (uint64_t)(opt.hold_s * 1e9), NULL);
	} else if (opt.once)
		wait_until(UINT64_MAX, all_slots_done);
	else
		wait_until(t0 + (uint64_t)(opt.duration_s * 1e9), NULL);
	t1 = now_ns();
	atomic_store(&stop, true);
	for (i = 0; i < opt.nthreads; i++)
		pthread_join(th[i].tid, NULL);

	memset(&tot, 0, sizeof(tot));
	for (i = 0; i < opt.nthreads; i++) {
		struct stats *s = &th[i].st;

		tot.sessions += s->sessions;
		tot.msgs += s->msgs;
		tot.octets += s->octets;
		tot.errors += s->errors;
		tot.mismatch += s->mismatch;
		tot.handshakes += s->handshakes;
		tot.resumed += s->resumed;
		if (tot.tls_desc[0] == '\0')
			memcpy(tot.tls_desc, s->tls_desc, sizeof(tot.tls_desc));
		tot.lat_us = realloc(tot.lat_us,
		    (tot.nlat + s->nlat + 1) * sizeof(*tot.lat_us));
		if (tot.lat_us == NULL)
			fatalx("out of memory");
		if (s->nlat)
			memcpy(tot.lat_us + tot.nlat, s->lat_us,
			    s->nlat * sizeof(*s->lat_us));
		tot.nlat += s->nlat;
	}
	if (tot.nlat)
		qsort(tot.lat_us, tot.nlat, sizeof(*tot.lat_us), cmp_u32);
	secs = (double)(t1 - t0) / 1e9;
	if (getrusage(RUSAGE_SELF, &ru) == -1)
		memset(&ru, 0, sizeof(ru));
	cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	printf("scenario=%s conc=%u secs=%.2f sessions=%llu sessions_s=%.1f "
	    "msgs_s=%.1f mb_s=%.1f p50_ms=%.2f p99_ms=%.2f errors=%llu "
	    "size_mismatch=%llu bench_cpu=%.2f", scenario_names[opt.sc],
	    opt.sc == SC_IDLE ? opt.idle_n : opt.conc, secs,
	    (unsigned long long)tot.sessions, (double)tot.sessions / secs,
	    (double)tot.msgs / secs, (double)tot.octets / 1e6 / secs,
	    percentile_ms(tot.lat_us, tot.nlat, 0.50),
	    percentile_ms(tot.lat_us, tot.nlat, 0.99),
	    (unsigned long long)tot.errors, (unsigned long long)tot.mismatch,
	    cpu / secs);
	if (opt.tls != TM_NONE) {
		/* Same line, so a reader of the last line sees it all. */
		printf(" tls=%s handshakes=%llu resumed=%llu resumed_frac=%.3f "
		    "tls_params=%s", tls_mode_names[opt.tls],
		    (unsigned long long)tot.handshakes,
		    (unsigned long long)tot.resumed, tot.handshakes ?
		    (double)tot.resumed / (double)tot.handshakes : 0.0,
		    tot.tls_desc[0] ? tot.tls_desc : "-");
	}
	putchar('\n');
	fflush(stdout);
	for (i = 0; i < opt.nthreads; i++) {
		for (k = 0; k < th[i].nconns; k++) {
			free(th[i].conns[k].in);
			free(th[i].conns[k].sizes);
			if (th[i].conns[k].sess != NULL)
				SSL_SESSION_free(th[i].conns[k].sess);
		}
		free(th[i].conns);
		free(th[i].st.lat_us);
		close(th[i].epfd);
	}
	free(th);
	free(tot.lat_us);
	for (k = 0; k < opt.ncreds; k++) {
		free(opt.creds[k].user);
		free(opt.creds[k].pass);
	}
	free(opt.creds);
	SSL_CTX_free(opt.ctx);
	return tot.errors || tot.mismatch ? 1 : 0;
}
