/*
 * conn: bounded line reader, buffered writer and body transfer for the
 * POP3 and LMTP sessions and the SMTP agent, over a non-blocking socket
 * with poll() timeouts, so neither an idle peer nor one that stops
 * reading can hold a process forever.
 */
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <netdb.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/conn.h"
#include "sdps/log.h"

#include "conn_int.h"

#define RBUF_MIN	4096
#define PEER_MAX	CONN_PEER_MAX
/*
 * poll() is woken by a signal only if the signal arrives while it sleeps;
 * one that lands just before it would go unnoticed until the timeout.
 * Sleeping in short slices bounds how late a kill is seen without any
 * signal-mask games.
 */
#define SLICE_MS	250

static ssize_t
plain_recv(struct conn *c, void *buf, size_t len)
{
	return read(c->fd, buf, len);
}

static ssize_t
plain_send(struct conn *c, const void *buf, size_t len, int flags)
{
	return send(c->fd, buf, len, MSG_NOSIGNAL | flags);
}

static ssize_t
plain_sendfile(struct conn *c, int fd, off_t *off, size_t len)
{
	return sendfile(c->fd, fd, off, len);
}

/* The plain socket; the TLS transport is conn_tls.c's. */
static const struct transport plain_transport = {
	plain_recv, plain_send, plain_sendfile, NULL, NULL
};

bool
conn_killed(const struct conn *c)
{
	return c->kill != NULL && *c->kill != 0;
}

int64_t
conn_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait until fd is ready for events, the monotonic deadline deadline_ms
 * (0 = none) or a kill.
 */
enum conn_res
conn_wait_until(struct conn *c, short events, int64_t deadline_ms)
{
	struct pollfd	 pfd;
	int64_t		 left;
	int		 slice, r;

	for (;;) {
		if (conn_killed(c))
			return CONN_KILLED;
		slice = SLICE_MS;
		if (deadline_ms > 0) {
			if ((left = deadline_ms - conn_now_ms()) <= 0)
				return CONN_TIMEOUT;
			if (left < slice)
				slice = (int)left;
		}
		pfd.fd = c->fd;
		pfd.events = events;
		pfd.revents = 0;
		if ((r = poll(&pfd, 1, slice)) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("conn: poll");
			return CONN_ERR;
		}
		/* POLLERR and POLLHUP too: the next call reports them. */
		if (r > 0)
			return CONN_OK;
	}
}

short
conn_want(struct conn *c, short dflt)
{
	short	 w = c->want;

	c->want = 0;
	return w != 0 ? w : dflt;
}

/* Wait until fd is ready for events, timeout_s (0 = none) or a kill. */
static enum conn_res
wait_fd(struct conn *c, short events, unsigned timeout_s)
{
	return conn_wait_until(c, events, timeout_s > 0 ?
	    conn_now_ms() + (int64_t)timeout_s * 1000 : 0);
}

/* The earlier of the line's idle deadline and the overall one (0 = none). */
static int64_t
read_deadline(const struct conn *c)
{
	if (c->line_deadline_ms == 0)
		return c->deadline_ms;
	if (c->deadline_ms == 0 || c->line_deadline_ms < c->deadline_ms)
		return c->line_deadline_ms;
	return c->deadline_ms;
}

void
conn_set_deadline_ms(struct conn *c, uint64_t timeout_ms)
{
	c->deadline_ms = timeout_ms > 0 ? conn_now_ms() + (int64_t)timeout_ms : 0;
}

void
conn_set_line_max(struct conn *c, size_t line_max)
{
	if (line_max < 3)
		line_max = 3;
	c->line_max = line_max > c->rcap ? c->rcap : line_max;
}

void
conn_set_timeouts(struct conn *c, unsigned idle_timeout_s,
    unsigned send_timeout_s)
{
	c->idle_timeout_s = idle_timeout_s;
	c->send_timeout_s = send_timeout_s;
}

/* Set up a connection on fd (non-blocking from here on). */
struct conn *
conn_setup(int fd, size_t line_max, unsigned idle_timeout_s,
    unsigned send_timeout_s, volatile sig_atomic_t *kill)
{
	struct conn	*c;
	int		 fl, proto;
	socklen_t	 sl = sizeof(proto);

	/*
	 * Not calloc: zeroing the 16 KB write buffer would dirty every page
	 * of it in each worker, and an idle session writes a few lines
	 * (issue 12, idle memory).  Only the fields around it are cleared;
	 * wbuf[0, wlen) is all that is ever read.
	 */
	if ((c = malloc(sizeof(*c))) == NULL) {
		log_warn("conn: malloc");
		return NULL;
	}
	memset(c, 0, offsetof(struct conn, wbuf));
	memset(&c->wlen, 0, sizeof(*c) - offsetof(struct conn, wlen));
	c->fd = fd;
	c->tp = &plain_transport;
	c->line_max = line_max < 3 ? 3 : line_max;
	c->idle_timeout_s = idle_timeout_s;
	c->send_timeout_s = send_timeout_s;
	c->kill = kill;
	c->werr = CONN_OK;
	c->eol = CONN_EOL_UNKNOWN;
	c->rcap = c->line_max < RBUF_MIN ? RBUF_MIN : c->line_max;
	if ((c->rbuf = malloc(c->rcap)) == NULL) {
		log_warn("conn: malloc");
		free(c);
		return NULL;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
		log_warn("conn: fcntl O_NONBLOCK");
		free(c->rbuf);
		free(c);
		return NULL;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &sl) == 0 &&
	    proto == IPPROTO_TCP)
		c->tcp = true;
	return c;
}

struct conn *
conn_new(int fd, size_t line_max, unsigned idle_timeout_s,
    unsigned send_timeout_s, volatile sig_atomic_t *kill)
{
	return conn_setup(fd, line_max, idle_timeout_s, send_timeout_s, kill);
}

void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->tp->drop != NULL)
		c->tp->drop(c);
	/* The buffer held a PASS line. */
	explicit_bzero(c->rbuf, c->rcap);
	free(c->rbuf);
	if (c->own_fd)
		close(c->fd);
	free(c);
}

/* Make room and read more input, flushing our output before waiting. */
static enum conn_res
fill(struct conn *c)
{
	ssize_t		 n;
	int64_t		 deadline;
	enum conn_res	 r;

	if (c->reof)
		return CONN_EOF;
	if (c->rpos > 0) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		c->rpos = 0;
	}
	if (conn_flush(c) == -1)
		return c->werr;
	/*
	 * No whole command is buffered, so the client may be waiting for
	 * our replies: a cork (conn_cork) ends here.  Pipelined commands
	 * that came in one read never get here between them and share it.
	 */
	if (c->corked)
		conn_cork(c, false);
	/*
	 * The idle timer runs from the first wait for this line, after our
	 * replies went out, and is not re-armed by input that does not end
	 * the line (issue 8: one octet every few seconds kept a worker).
	 */
	if (c->line_deadline_ms == 0 && c->idle_timeout_s > 0)
		c->line_deadline_ms = conn_now_ms() +
		    (int64_t)c->idle_timeout_s * 1000;
	for (;;) {
		if (conn_killed(c))
			return CONN_KILLED;
		/* Also while input keeps coming (an endless line). */
		if ((deadline = read_deadline(c)) > 0 &&
		    conn_now_ms() >= deadline)
			return CONN_TIMEOUT;
		/*
		 * Always try the transport before polling: TLS may hold
		 * decrypted octets (SSL_pending) that poll() on the socket
		 * would never announce.  A transport returns EAGAIN only
		 * when it has nothing, and then says what to wait for.
		 */
		n = c->tp->recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
		if (n > 0) {
			c->rlen += (size_t)n;
			return CONN_OK;
		}
		if (n == 0) {
			c->reof = true;
			return CONN_EOF;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if ((r = conn_wait_until(c, conn_want(c, POLLIN),
			    deadline)) != CONN_OK)
				return r;
			continue;
		}
		if (errno == ECONNRESET || errno == ENOTCONN) {
			c->reof = true;
			return CONN_EOF;
		}
		log_warn("conn: read");
		return CONN_ERR;
	}
}

enum conn_res
conn_read_line(struct conn *c, char **line, size_t *len)
{
	char		*p, *lf;
	size_t		 avail, end;
	enum conn_res	 r;

	/* A new line: its idle timer starts at the first wait (fill). */
	c->line_deadline_ms = 0;
	c->eol = CONN_EOL_UNKNOWN;
	for (;;) {
		p = c->rbuf + c->rpos;
		avail = c->rlen - c->rpos;
		lf = memchr(p, '\n', avail);
		if (c->discarding) {
			if (lf == NULL) {
				c->rpos = c->rlen;
			} else {
				/* An LF first in the buffer: its CR, if any,
				 * went with an earlier read. */
				c->eol = lf == p ? CONN_EOL_UNKNOWN :
				    lf[-1] == '\r' ? CONN_EOL_CRLF :
				    CONN_EOL_LF;
				c->rpos += (size_t)(lf - p) + 1;
				c->discarding = false;
				return CONN_TOO_LONG;
			}
		} else if (lf != NULL) {
			end = (size_t)(lf - p);
			c->rpos += end + 1;
			c->eol = CONN_EOL_LF;
			if (end > 0 && p[end - 1] == '\r') {
				end--;
				c->eol = CONN_EOL_CRLF;
			}
			/* The limit counts a CRLF even after a bare LF. */
			if (end + 2 > c->line_max)
				return CONN_TOO_LONG;
			if (memchr(p, '\0', end) != NULL)
				return CONN_NUL;
			p[end] = '\0';
			*line = p;
			*len = end;
			return CONN_OK;
		} else if (avail >= c->line_max) {
			/*
			 * Even if an LF came next, the line would be too
			 * long: drop it as it arrives, so a flood costs no
			 * memory, and answer once at its end.
			 */
			c->discarding = true;
			c->rpos = c->rlen;
		}
		if ((r = fill(c)) != CONN_OK)
			return r;
	}
}

enum conn_res
conn_read_data(struct conn *c, void *buf, size_t len, size_t *got)
{
	size_t		 avail;
	enum conn_res	 r;

	*got = 0;
	if (len == 0)
		return CONN_OK;
	/* Each wait gets the idle timeout afresh (fill arms it). */
	c->line_deadline_ms = 0;
	while ((avail = c->rlen - c->rpos) == 0)
		if ((r = fill(c)) != CONN_OK)
			return r;
	if (avail > len)
		avail = len;
	memcpy(buf, c->rbuf + c->rpos, avail);
	c->rpos += avail;
	*got = avail;
	return CONN_OK;
}

enum conn_res
conn_input_probe(struct conn *c)
{
	ssize_t	 n;

	if (c->rpos < c->rlen)
		return CONN_OK;
	if (c->reof)
		return CONN_EOF;
	c->rpos = c->rlen = 0;
	for (;;) {
		if ((n = c->tp->recv(c, c->rbuf, c->rcap)) > 0) {
			c->rlen = (size_t)n;
			return CONN_OK;
		}
		if (n == 0) {
			c->reof = true;
			return CONN_EOF;
		}
		if (errno == EINTR)
			continue;
		c->want = 0;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return CONN_TIMEOUT;
		c->reof = true;
		return errno == ECONNRESET || errno == ENOTCONN ? CONN_EOF :
		    CONN_ERR;
	}
}

enum conn_res
conn_read_nowait(struct conn *c)
{
	ssize_t	 n;

	if (c->reof)
		return CONN_EOF;
	if (c->rpos > 0) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		c->rpos = 0;
	}
	if (c->rlen == c->rcap)
		return CONN_TOO_LONG;
	for (;;) {
		if ((n = c->tp->recv(c, c->rbuf + c->rlen, c->rcap - c->rlen))
		    > 0) {
			c->rlen += (size_t)n;
			return CONN_OK;
		}
		if (n == 0) {
			c->reof = true;
			return CONN_EOF;
		}
		if (errno == EINTR)
			continue;
		c->want = 0;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return CONN_TIMEOUT;
		c->reof = true;
		return errno == ECONNRESET || errno == ENOTCONN ? CONN_EOF :
		    CONN_ERR;
	}
}

bool
conn_line_pending(const struct conn *c)
{
	return memchr(c->rbuf + c->rpos, '\n', c->rlen - c->rpos) != NULL;
}

enum conn_eol
conn_last_eol(const struct conn *c)
{
	return c->eol;
}

size_t
conn_input_buffered(const struct conn *c)
{
	return c->rlen - c->rpos;
}

size_t
conn_input_capacity(const struct conn *c)
{
	return c->rcap;
}

enum conn_res
conn_werr(const struct conn *c)
{
	return c->werr;
}

uint64_t
conn_octets_out(const struct conn *c)
{
	return c->octets_out;
}

const char *
conn_peer(const struct conn *c)
{
	return c->peer;
}

int
conn_fail(struct conn *c, enum conn_res r)
{
	if (c->werr == CONN_OK)
		c->werr = r;
	return -1;
}

/*
 * After send(2) or sendfile(2) failed: 0 when the caller should try again
 * (interrupted, or the peer read within send_timeout_s), else -1 with the
 * connection marked failed.
 */
int
conn_send_failed(struct conn *c, const char *what)
{
	enum conn_res	 r;

	if (errno == EINTR)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		if ((r = wait_fd(c, conn_want(c, POLLOUT),
		    c->send_timeout_s)) != CONN_OK)
			return conn_fail(c, r);
		return 0;
	}
	if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
		return conn_fail(c, CONN_EOF);
	log_warn("conn: %s", what);
	return conn_fail(c, CONN_ERR);
}

int
conn_send_all(struct conn *c, const char *p, size_t len, int flags)
{
	ssize_t		 n;

	while (len > 0) {
		if (conn_killed(c))
			return conn_fail(c, CONN_KILLED);
		n = c->tp->send(c, p, len, flags);
		if (n >= 0) {
			p += n;
			len -= (size_t)n;
			c->octets_out += (uint64_t)n;
			continue;
		}
		if (conn_send_failed(c, "send") == -1)
			return -1;
	}
	return 0;
}

static int
flush_flags(struct conn *c, int flags)
{
	size_t	 len = c->wlen;

	if (c->werr != CONN_OK)
		return -1;
	c->wlen = 0;
	return conn_send_all(c, c->wbuf, len, flags);
}

int
conn_flush(struct conn *c)
{
	return flush_flags(c, 0);
}

int
conn_write(struct conn *c, const void *buf, size_t len)
{
	if (c->werr != CONN_OK)
		return -1;
	if (len > sizeof(c->wbuf) - c->wlen && conn_flush(c) == -1)
		return -1;
	if (len >= sizeof(c->wbuf))
		return conn_send_all(c, buf, len, 0);
	memcpy(c->wbuf + c->wlen, buf, len);
	c->wlen += len;
	return 0;
}

int
conn_printf(struct conn *c, const char *fmt, ...)
{
	char	 tmp[512], *big;
	va_list	 ap;
	int	 n, rc;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return conn_fail(c, CONN_ERR);
	if ((size_t)n < sizeof(tmp))
		return conn_write(c, tmp, (size_t)n);
	if ((big = malloc((size_t)n + 1)) == NULL) {
		log_warn("conn: malloc");
		return conn_fail(c, CONN_ERR);
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	rc = conn_write(c, big, (size_t)n);
	free(big);
	return rc;
}

int
conn_ml_line(struct conn *c, const char *line, size_t len)
{
	/* RFC 1939 §3: a line that starts with "." gets one more. */
	if (len > 0 && line[0] == '.' && conn_write(c, ".", 1) == -1)
		return -1;
	if (conn_write(c, line, len) == -1)
		return -1;
	return conn_write(c, "\r\n", 2);
}

int
conn_ml_text(struct conn *c, const char *text, size_t len)
{
	const char	*lf;
	size_t		 n;

	while (len > 0) {
		if ((lf = memchr(text, '\n', len)) == NULL) {
			n = len;
			if (n > 0 && text[n - 1] == '\r')
				n--;
			return conn_ml_line(c, text, n);
		}
		n = (size_t)(lf - text);
		if (conn_ml_line(c, text,
		    n > 0 && text[n - 1] == '\r' ? n - 1 : n) == -1)
			return -1;
		text += n + 1;
		len -= n + 1;
	}
	return 0;
}

int
conn_ml_end(struct conn *c)
{
	return conn_write(c, ".\r\n", 3);
}

void
conn_cork(struct conn *c, bool on)
{
	int	 v = on ? 1 : 0;

	if (!on)
		(void)conn_flush(c);
	if (!c->tcp || c->corked == on)
		return;
	if (setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v)) == -1)
		log_warn("conn: setsockopt TCP_CORK");
	else
		c->corked = on;
}

int
conn_pread_full(struct conn *c, int fd, char *buf, size_t len, off_t off)
{
	ssize_t	 n;

	while (len > 0) {
		if ((n = pread(fd, buf, len, off)) == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			log_warn("conn: pread");
			return conn_fail(c, CONN_ERR);
		}
		if (n == 0) {
			log_warnx("conn: body shorter than expected");
			errno = EIO;
			return conn_fail(c, CONN_ERR);
		}
		buf += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The body copied through the write buffer, for a transport without
 * sendfile and for a body that is not a plain file. */
static int
copy_file(struct conn *c, int fd, off_t off, size_t len)
{
	size_t	 n;

	while (len > 0) {
		n = len < sizeof(c->wbuf) ? len : sizeof(c->wbuf);
		if (conn_pread_full(c, fd, c->wbuf, n, off) == -1 ||
		    conn_send_all(c, c->wbuf, n, len > n ? MSG_MORE : 0) == -1)
			return -1;
		off += (off_t)n;
		len -= n;
	}
	return 0;
}

int
conn_body_sendfile(struct conn *c, int fd, off_t off, size_t len)
{
	ssize_t		 n;

	/* The reply line goes first; MSG_MORE lets it share a segment. */
	if (flush_flags(c, MSG_MORE) == -1)
		return -1;
	if (c->tp->sendfile == NULL)
		return copy_file(c, fd, off, len);
	while (len > 0) {
		if (conn_killed(c))
			return conn_fail(c, CONN_KILLED);
		n = c->tp->sendfile(c, fd, &off, len);
		if (n > 0) {
			len -= (size_t)n;
			c->octets_out += (uint64_t)n;
			continue;
		}
		if (n == 0) {
			log_warnx("conn: sendfile: file shorter than expected");
			errno = EIO;
			return conn_fail(c, CONN_ERR);
		}
		if (conn_send_failed(c, "sendfile") == -1)
			return -1;
	}
	return 0;
}

int
conn_send_file(struct conn *c, int fd, off_t off, size_t len)
{
	if (c->werr != CONN_OK)
		return -1;
	if (c->tp->send_body != NULL)
		return c->tp->send_body(c, fd, off, len);
	return conn_body_sendfile(c, fd, off, len);
}

enum conn_res
conn_sleep_ms(struct conn *c, unsigned ms)
{
	int64_t	 deadline = conn_now_ms() + ms, left;

	for (;;) {
		if (conn_killed(c))
			return CONN_KILLED;
		if ((left = deadline - conn_now_ms()) <= 0)
			return CONN_OK;
		(void)poll(NULL, 0, left < SLICE_MS ? (int)left : SLICE_MS);
	}
}

char *
conn_keyword(char *line, char **rest)
{
	char	*sp;

	if (line[0] == '\0' || line[0] == ' ')
		return NULL;
	if ((sp = strchr(line, ' ')) != NULL) {
		*sp = '\0';
		*rest = sp + 1;
	} else
		*rest = line + strlen(line);
	return line;
}

int
conn_split(char *rest, bool whole, struct conn_args *a)
{
	char	*p = rest;

	memset(a, 0, sizeof(*a));
	if (whole) {
		if (*rest != '\0')
			a->argv[a->argc++] = rest;
		return 0;
	}
	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return 0;
		if (a->argc == CONN_ARGS_MAX)
			return -1;
		a->argv[a->argc++] = p;
		while (*p != ' ' && *p != '\0')
			p++;
		if (*p == ' ')
			*p++ = '\0';
	}
}

const char *
conn_res_name(enum conn_res r)
{
	switch (r) {
	case CONN_OK:
		return "ok";
	case CONN_TOO_LONG:
		return "too-long";
	case CONN_NUL:
		return "nul";
	case CONN_EOF:
		return "drop";
	case CONN_TIMEOUT:
		return "timeout";
	case CONN_KILLED:
		return "killed";
	case CONN_ERR:
		return "error";
	}
	return "?";
}
