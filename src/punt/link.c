/*
 * link: the client end of the punt protocol (link.h,
 * docs/punt-protocol.md) over conn (conn.h) with the TLS client
 * transport (conn_tls_connect, tls_client.h).
 *
 * Deadlines: every wait for the punt is bounded by the command timeout
 * (conn's idle timeout, per line and per read of counted data, so a
 * large BODY or XLIST is not cut off while octets keep coming), and by
 * the caller's absolute deadline when one is set (link_set_deadline: the
 * parallel login's one deadline).  TCP_USER_TIMEOUT and keepalive notice
 * a silent peer even with nothing outstanding.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <poll.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sdps/conn.h"
#include "sdps/link.h"
#include "sdps/log.h"
#include "sdps/util.h"

#define KEEP_IDLE_S	10
#define KEEP_INTVL_S	5
#define KEEP_CNT	3

/* CONNECTING: TCP in flight; CONNECTED: TLS handshake in flight; TLS:
 * handshake done and CAPA sent, greeting not yet read; READY. */
enum link_state { L_CONNECTING, L_CONNECTED, L_TLS, L_READY, L_FAILED };

struct link {
	struct conn	*c;
	char		 name[CONFIG_NAME_MAX + 1];
	struct tls_client *tls;
	unsigned	 timeout_ms, connect_timeout_ms;
	enum link_state	 st;
	volatile sig_atomic_t *kill_flag;	/* may be NULL */
	uint64_t	 uid, rtt_us;
	uint64_t	 deadline_us;	/* 0: the per-command timeout only */
	uint64_t	 data_left;	/* counted octets still owed */
	unsigned	 outstanding;	/* replies owed (sent, not read) */
	bool		 in_ml;		/* inside a multi-line reply */
	uint64_t	 sent_us;	/* when the oldest outstanding went */
	int		 greet;		/* L_TLS: 0 greeting, 1 CAPA's +OK,
					 * 2 CAPA's lines */
	uint64_t	 capa_ver;	/* SDPS-PUNT seen in CAPA, or 0 */
	char		 err[256];
};

/* Fail the link (the first reason sticks); returns -1. */
static int
lfail(struct link *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
lfail(struct link *l, const char *fmt, ...)
{
	va_list	 ap;

	if (l->st != L_FAILED) {
		va_start(ap, fmt);
		vsnprintf(l->err, sizeof(l->err), fmt, ap);
		va_end(ap);
		l->st = L_FAILED;
	}
	return -1;
}

/* Commands may go (READY, or the greeting still to read). */
static bool
live(const struct link *l)
{
	return l->st == L_READY || l->st == L_TLS;
}

/* Arm conn's overall deadline from the caller's; -1 if it has passed. */
static int
arm(struct link *l)
{
	uint64_t	 now;

	if (l->deadline_us == 0) {
		conn_set_deadline_ms(l->c, 0);
		return 0;
	}
	now = util_now_us();
	/* Past it: 1 ms, so replies already here are still read. */
	conn_set_deadline_ms(l->c, now >= l->deadline_us ? 1 :
	    (l->deadline_us - now + 999) / 1000);
	return 0;
}

/* Milliseconds left of deadline_us; 1 once it has passed (what is
 * already here is still taken, nothing is waited for). */
static unsigned
left_ms(uint64_t deadline_us)
{
	uint64_t	 now = util_now_us();

	if (now >= deadline_us)
		return 1;
	return (unsigned)((deadline_us - now + 999) / 1000);
}

static void
sockopts(int fd, unsigned timeout_ms)
{
	int		 one = 1, idle = KEEP_IDLE_S, intvl = KEEP_INTVL_S;
	int		 cnt = KEEP_CNT;
	unsigned	 uto = timeout_ms;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) ==
	    -1 || setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle,
	    sizeof(idle)) == -1 || setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL,
	    &intvl, sizeof(intvl)) == -1 || setsockopt(fd, IPPROTO_TCP,
	    TCP_KEEPCNT, &cnt, sizeof(cnt)) == -1 || setsockopt(fd,
	    IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto)) == -1)
		log_warn("link: setsockopt");
}

struct link *
link_start(const struct link_opts *o, char *err, size_t errlen)
{
	struct sigaction sa;
	struct link	*l;
	unsigned	 tmo_s;

	/* OpenSSL writes with write(2): a reset peer must not kill us. */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(l->name, sizeof(l->name), "%s", o->punt->name);
	l->tls = o->tls;
	l->kill_flag = o->kill;
	l->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
	l->connect_timeout_ms = o->connect_timeout_ms > 0 ?
	    o->connect_timeout_ms : 5000;
	tmo_s = (l->timeout_ms + 999) / 1000;
	l->c = conn_connect_start(o->punt->address, LINK_REPLY_MAX + 2, tmo_s,
	    tmo_s, o->kill, err, errlen);
	if (l->c == NULL) {
		free(l);
		return NULL;
	}
	sockopts(conn_fd(l->c), l->timeout_ms);
	l->st = L_CONNECTING;
	return l;
}

/* Read one line under the deadline; 0 with *line, or -1 (failed). */
static int
read_line(struct link *l, char **line, size_t *len)
{
	enum conn_res	 r;

	if (arm(l) == -1)
		return -1;
	switch ((r = conn_read_line(l->c, line, len))) {
	case CONN_OK:
		return 0;
	case CONN_TOO_LONG:
		return lfail(l, "reply line too long");
	case CONN_NUL:
		return lfail(l, "NUL in a reply");
	case CONN_EOF:
		return lfail(l, "the punt closed the link");
	default:
		return lfail(l, "%s", conn_res_name(r));
	}
}

/* "+OK sdps-punt NAME UID": 0, or -1 (failed). */
static int
greeting_parse(struct link *l, char *line)
{
	char		*w[4], *sp, *save = NULL;
	int		 n = 0;

	for (sp = strtok_r(line, " ", &save); sp != NULL && n < 4;
	    sp = strtok_r(NULL, " ", &save))
		w[n++] = sp;
	if (n < 4 || strcmp(w[0], "+OK") != 0 ||
	    strcmp(w[1], "sdps-punt") != 0)
		return lfail(l, "not a punt greeting");
	if (strcmp(w[2], l->name) != 0)
		return lfail(l, "the punt is %.*s, not %s", CONFIG_NAME_MAX,
		    w[2], l->name);
	if (strlen(w[3]) != 16 || strspn(w[3], "0123456789abcdefABCDEF") !=
	    16)
		return lfail(l, "bad uid in the greeting");
	l->uid = strtoull(w[3], NULL, 16);
	return 0;
}

/*
 * One line of the greeting and the CAPA reply (CAPA went when the
 * handshake ended).  0, or -1 (failed).  READY after CAPA's "." with
 * our version.
 */
static int
greet_line(struct link *l, char *line, size_t len)
{
	switch (l->greet) {
	case 0:
		if (greeting_parse(l, line) == -1)
			return -1;
		l->greet = 1;
		return 0;
	case 1:
		if (strncmp(line, "+OK", 3) != 0)
			return lfail(l, "CAPA refused");
		l->rtt_us = util_now_us() - l->sent_us;
		l->outstanding--;
		l->greet = 2;
		return 0;
	default:
		if (len == 1 && line[0] == '.') {
			if (l->capa_ver != LINK_PROTO_VERSION)
				return lfail(l, "punt protocol version %s, "
				    "this front end speaks %d", l->capa_ver ?
				    "unknown" : "missing", LINK_PROTO_VERSION);
			l->st = L_READY;
			return 0;
		}
		if (line[0] == '.')
			line++;
		if (strncasecmp(line, "SDPS-PUNT ", 10) == 0 &&
		    util_parse_u64(line + 10, UINT64_MAX, &l->capa_ver) == -1)
			l->capa_ver = UINT64_MAX;
		return 0;
	}
}

/* Whatever of the greeting and CAPA has come, without waiting.  0 (READY
 * or still to come: poll for input) or -1. */
static int
greet_step(struct link *l)
{
	enum conn_res	 r;
	char		*line;
	size_t		 len;

	while (l->st == L_TLS) {
		if (!conn_line_pending(l->c)) {
			if ((r = conn_read_nowait(l->c)) == CONN_TIMEOUT)
				return 0;
			if (r != CONN_OK)
				return lfail(l, "greeting: %s", r == CONN_EOF ?
				    "the punt closed the link" :
				    conn_res_name(r));
			continue;
		}
		if ((r = conn_read_line(l->c, &line, &len)) != CONN_OK)
			return lfail(l, "greeting: %s", conn_res_name(r));
		if (greet_line(l, line, len) == -1)
			return -1;
	}
	return 0;
}

/* TCP connected: the SO_ERROR verdict.  0 or -1 (failed). */
static int
tcp_result(struct link *l)
{
	int		 e = 0;
	socklen_t	 sl = sizeof(e);

	if (getsockopt(conn_fd(l->c), SOL_SOCKET, SO_ERROR, &e, &sl) == -1)
		e = errno;
	if (e != 0)
		return lfail(l, "%s: connect: %s", conn_peer(l->c),
		    strerror(e));
	l->st = L_CONNECTED;
	return 0;
}

/* One handshake step; CAPA goes the moment it is done, so its round
 * trip overlaps the greeting's.  0 (or still going, *ev) or -1. */
static int
tls_step(struct link *l, short *ev)
{
	int	 rc;

	if ((rc = conn_tls_connect_step(l->c, l->tls, ev, l->err,
	    sizeof(l->err))) == -1) {
		l->st = L_FAILED;
		return -1;
	}
	if (rc == 1) {
		l->st = L_TLS;
		if (link_send(l, "CAPA") == -1 || link_flush(l) == -1)
			return -1;
	}
	return 0;
}

/* Drive the TCP connects, TLS handshakes, greetings and CAPAs of v in
 * one poll loop; fn(l, args[i]) is told of each link as it gets ready. */
static void
drive(struct link **v, int n, uint64_t connect_deadline_us,
    uint64_t deadline_us, link_ready_fn *fn, void **args)
{
	struct pollfd	 pfd[CONFIG_PUNT_MAX];
	struct link	*pl[CONFIG_PUNT_MAX];
	uint64_t	 now, until;
	short		 ev;
	int		 i, np, ms;

	for (;;) {
		now = util_now_us();
		until = 0;
		np = 0;
		for (i = 0; i < n && np < CONFIG_PUNT_MAX; i++) {
			struct link *l = v[i];

			if (l == NULL)
				continue;
			if (l->st == L_CONNECTING && now >= connect_deadline_us)
				lfail(l, "%s: connect: timeout",
				    conn_peer(l->c));
			else if (l->st == L_CONNECTED && now >= deadline_us)
				lfail(l, "tls handshake: timeout");
			else if (l->st == L_TLS && now >= deadline_us)
				lfail(l, "greeting: timeout");
			if (l->st == L_CONNECTING) {
				pfd[np].events = POLLOUT;
				if (until == 0 || connect_deadline_us < until)
					until = connect_deadline_us;
			} else if (l->st == L_CONNECTED) {
				ev = POLLIN;
				if (tls_step(l, &ev) == -1)
					continue;
				if (l->st == L_TLS && greet_step(l) == -1)
					continue;
				if (l->st == L_READY) {
					if (fn != NULL)
						fn(l, args[i]);
					continue;
				}
				pfd[np].events = l->st == L_TLS ? POLLIN : ev;
				if (until == 0 || deadline_us < until)
					until = deadline_us;
			} else if (l->st == L_TLS) {
				if (greet_step(l) == -1)
					continue;
				if (l->st == L_READY) {
					if (fn != NULL)
						fn(l, args[i]);
					continue;
				}
				pfd[np].events = POLLIN;
				if (until == 0 || deadline_us < until)
					until = deadline_us;
			} else
				continue;
			pfd[np].fd = conn_fd(l->c);
			pfd[np].revents = 0;
			pl[np++] = l;
		}
		if (np == 0)
			return;
		if (pl[0]->kill_flag != NULL && *pl[0]->kill_flag != 0) {
			for (i = 0; i < np; i++)
				lfail(pl[i], "killed");
			return;
		}
		ms = until > now ? (int)((until - now + 999) / 1000) : 0;
		if (ms > 250)
			ms = 250;	/* the kill flag is looked at between */
		if (poll(pfd, (nfds_t)np, ms) == -1 && errno != EINTR) {
			for (i = 0; i < np; i++)
				lfail(pl[i], "poll: %s", strerror(errno));
			return;
		}
		for (i = 0; i < np; i++)
			if (pfd[i].revents != 0 && pl[i]->st == L_CONNECTING)
				(void)tcp_result(pl[i]);
	}
}

int
link_finish_all(struct link **v, int n, uint64_t connect_deadline_us,
    uint64_t deadline_us, link_ready_fn *fn, void **args)
{
	int	 i, ready = 0;

	drive(v, n, connect_deadline_us, deadline_us, fn, args);
	for (i = 0; i < n; i++)
		ready += v[i] != NULL && v[i]->st == L_READY;
	return ready;
}

int
link_connect_wait(struct link *l, uint64_t deadline_us, char *err,
    size_t errlen)
{
	if (l->st == L_CONNECTING) {
		if (conn_connect_finish(l->c, left_ms(deadline_us), l->err,
		    sizeof(l->err)) == CONN_OK)
			l->st = L_CONNECTED;
		else
			l->st = L_FAILED;
	}
	if (l->st == L_FAILED) {
		snprintf(err, errlen, "%s", l->err);
		return -1;
	}
	return 0;
}

int
link_finish(struct link *l, uint64_t deadline_us, char *err, size_t errlen)
{
	if (l->st == L_READY)
		return 0;
	if (link_finish_all(&l, 1, deadline_us, deadline_us, NULL, NULL) == 1)
		return 0;
	snprintf(err, errlen, "%s", l->err);
	return -1;
}

struct link *
link_open(const struct link_opts *o, char *err, size_t errlen)
{
	struct link	*l;

	if ((l = link_start(o, err, errlen)) == NULL)
		return NULL;
	if (link_finish(l, util_now_us() + (uint64_t)l->connect_timeout_ms *
	    1000, err, errlen) == -1) {
		link_free(l);
		return NULL;
	}
	return l;
}

void
link_free(struct link *l)
{
	if (l == NULL)
		return;
	conn_free(l->c);
	free(l);
}

bool
link_ok(const struct link *l)
{
	return l != NULL && l->st == L_READY;
}

bool
link_stale(struct link *l)
{
	if (!link_ok(l))
		return true;
	if (l->outstanding > 0 || l->in_ml || l->data_left > 0)
		return false;
	/* Nothing is owed, so any octet or the end is the punt's goodbye
	 * (its idle deadline) or its death. */
	return conn_input_probe(l->c) != CONN_TIMEOUT;
}

uint64_t
link_uid(const struct link *l)
{
	return l->uid;
}

uint64_t
link_rtt_us(const struct link *l)
{
	return l->rtt_us;
}

const char *
link_error(const struct link *l)
{
	return l == NULL ? "no link" : l->err;
}

void
link_set_deadline(struct link *l, uint64_t deadline_us)
{
	l->deadline_us = deadline_us;
}

static int __attribute__((format(printf, 2, 0)))
vsend(struct link *l, const char *fmt, va_list ap)
{
	char	 buf[LINK_LINE_MAX + 1];
	int	 n;

	if (!live(l))
		return -1;
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n < 0 || (size_t)n + 2 > LINK_LINE_MAX) {
		log_warnx("link %s: command line too long", l->name);
		return -1;
	}
	memcpy(buf + n, "\r\n", 2);
	if (conn_write(l->c, buf, (size_t)n + 2) == -1)
		return lfail(l, "send: %s", conn_res_name(conn_werr(l->c)));
	if (l->outstanding++ == 0)
		l->sent_us = util_now_us();
	return 0;
}

int
link_send(struct link *l, const char *fmt, ...)
{
	va_list	 ap;
	int	 rc;

	va_start(ap, fmt);
	rc = vsend(l, fmt, ap);
	va_end(ap);
	return rc;
}

int
link_flush(struct link *l)
{
	if (!live(l))
		return -1;
	if (conn_flush(l->c) == -1)
		return lfail(l, "send: %s", conn_res_name(conn_werr(l->c)));
	return 0;
}

/* "[CODE] ..." after "-ERR ": the store result. */
static enum store_res
err_code(struct link *l, const char *t)
{
	if (strncmp(t, "[IN-USE]", 8) == 0)
		return STORE_BUSY;
	if (strncmp(t, "[GONE]", 6) == 0)
		return STORE_GONE;
	if (strncmp(t, "[SYS/PERM]", 10) == 0)
		return STORE_PERMFAIL;
	if (strncmp(t, "[SYS/TEMP]", 10) == 0)
		return STORE_TEMPFAIL;
	/* [PROTO] or no code: the two ends disagree; a bug. */
	log_warnx("link %s: punt says -ERR %.200s", l->name, t);
	lfail(l, "protocol error: %.200s", t);
	return STORE_TEMPFAIL;
}

enum store_res
link_reply(struct link *l, char **text)
{
	static char	 empty[1];
	char		*line;
	size_t		 len;

	*text = empty;
	if (!live(l) || l->in_ml || l->data_left > 0)
		return STORE_TEMPFAIL;
	if (l->outstanding == 0) {
		lfail(l, "reply read with no command");
		return STORE_TEMPFAIL;
	}
	if (read_line(l, &line, &len) == -1)
		return STORE_TEMPFAIL;
	l->rtt_us = util_now_us() - l->sent_us;
	if (--l->outstanding > 0)
		l->sent_us = util_now_us();
	if (strncmp(line, "+OK", 3) == 0 && (line[3] == '\0' ||
	    line[3] == ' ')) {
		*text = line[3] == ' ' ? line + 4 : line + 3;
		return STORE_OK;
	}
	if (strncmp(line, "-ERR ", 5) == 0) {
		*text = line + 5;
		return err_code(l, line + 5);
	}
	lfail(l, "reply out of protocol");
	return STORE_TEMPFAIL;
}

enum store_res
link_cmd(struct link *l, char **text, const char *fmt, ...)
{
	static char	 empty[1];
	va_list		 ap;
	int		 rc;

	*text = empty;
	va_start(ap, fmt);
	rc = vsend(l, fmt, ap);
	va_end(ap);
	if (rc == -1 || link_flush(l) == -1)
		return STORE_TEMPFAIL;
	return link_reply(l, text);
}

int
link_ml_line(struct link *l, char **line, size_t *len)
{
	if (!live(l))
		return -1;
	l->in_ml = true;
	if (read_line(l, line, len) == -1)
		return -1;
	if ((*line)[0] == '.') {
		if (*len == 1) {
			l->in_ml = false;
			return 0;
		}
		(*line)++;
		(*len)--;
	}
	return 1;
}

void
link_data_expect(struct link *l, uint64_t n)
{
	l->data_left = n;
}

ssize_t
link_data_read(struct link *l, void *buf, size_t len)
{
	enum conn_res	 r;
	size_t		 got;

	if (l->st != L_READY)
		return -1;
	if (l->data_left == 0)
		return 0;
	if (len > l->data_left)
		len = (size_t)l->data_left;
	if (arm(l) == -1)
		return -1;
	if ((r = conn_read_data(l->c, buf, len, &got)) != CONN_OK)
		return lfail(l, "data: %s", r == CONN_EOF ?
		    "the punt closed the link" : conn_res_name(r));
	l->data_left -= got;
	return (ssize_t)got;
}

uint64_t
link_data_left(const struct link *l)
{
	return l->data_left;
}

int
link_data_skip(struct link *l)
{
	char	 buf[16384];

	while (l->data_left > 0)
		if (link_data_read(l, buf, sizeof(buf)) <= 0)
			return -1;
	return 0;
}

int
link_write(struct link *l, const void *buf, size_t len)
{
	if (l->st != L_READY)
		return -1;
	if (conn_write(l->c, buf, len) == -1)
		return lfail(l, "send: %s", conn_res_name(conn_werr(l->c)));
	return 0;
}

int
link_send_file(struct link *l, int fd, uint64_t len)
{
	if (l->st != L_READY)
		return -1;
	if (conn_send_file(l->c, fd, 0, (size_t)len) == -1)
		return lfail(l, "send: %s", conn_res_name(conn_werr(l->c)));
	return 0;
}
