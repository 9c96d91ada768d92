/*
 * pop3: bounded line reader, buffered writer and sendfile for the POP3
 * (and later LMTP) sessions, over a non-blocking socket with poll()
 * timeouts, so neither an idle client nor one that stops reading can hold
 * a worker forever.
 */
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/log.h"
#include "sdps/pop3.h"

#define RBUF_MIN	4096
/*
 * poll() is woken by a signal only if the signal arrives while it sleeps;
 * one that lands just before it would go unnoticed until the timeout.
 * Sleeping in short slices bounds how late a kill is seen without any
 * signal-mask games.
 */
#define SLICE_MS	250

static bool
killed(const struct pop3_conn *c)
{
	return c->kill != NULL && *c->kill != 0;
}

static int64_t
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait until fd is ready for events, the monotonic deadline deadline_ms
 * (0 = none) or a kill.
 */
static enum pop3_res
wait_until(struct pop3_conn *c, short events, int64_t deadline_ms)
{
	struct pollfd	 pfd;
	int64_t		 left;
	int		 slice, r;

	for (;;) {
		if (killed(c))
			return POP3_KILLED;
		slice = SLICE_MS;
		if (deadline_ms > 0) {
			if ((left = deadline_ms - now_ms()) <= 0)
				return POP3_TIMEOUT;
			if (left < slice)
				slice = (int)left;
		}
		pfd.fd = c->fd;
		pfd.events = events;
		pfd.revents = 0;
		if ((r = poll(&pfd, 1, slice)) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("pop3: poll");
			return POP3_ERR;
		}
		/* POLLERR and POLLHUP too: the next call reports them. */
		if (r > 0)
			return POP3_OK;
	}
}

/* Wait until fd is ready for events, timeout_s (0 = none) or a kill. */
static enum pop3_res
wait_fd(struct pop3_conn *c, short events, unsigned timeout_s)
{
	return wait_until(c, events, timeout_s > 0 ?
	    now_ms() + (int64_t)timeout_s * 1000 : 0);
}

/* The earlier of the line's idle deadline and the overall one (0 = none). */
static int64_t
read_deadline(const struct pop3_conn *c)
{
	if (c->line_deadline_ms == 0)
		return c->deadline_ms;
	if (c->deadline_ms == 0 || c->line_deadline_ms < c->deadline_ms)
		return c->line_deadline_ms;
	return c->deadline_ms;
}

void
pop3_set_deadline(struct pop3_conn *c, unsigned timeout_s)
{
	c->deadline_ms = timeout_s > 0 ?
	    now_ms() + (int64_t)timeout_s * 1000 : 0;
}

int
pop3_init(struct pop3_conn *c, int fd, size_t line_max,
    unsigned idle_timeout_s, unsigned send_timeout_s,
    volatile sig_atomic_t *kill)
{
	int		 fl, proto;
	socklen_t	 sl = sizeof(proto);

	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->line_max = line_max < 3 ? 3 : line_max;
	c->idle_timeout_s = idle_timeout_s;
	c->send_timeout_s = send_timeout_s;
	c->kill = kill;
	c->werr = POP3_OK;
	c->rcap = c->line_max < RBUF_MIN ? RBUF_MIN : c->line_max;
	if ((c->rbuf = malloc(c->rcap)) == NULL) {
		log_warn("pop3: malloc");
		return -1;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
		log_warn("pop3: fcntl O_NONBLOCK");
		free(c->rbuf);
		c->rbuf = NULL;
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &sl) == 0 &&
	    proto == IPPROTO_TCP)
		c->tcp = true;
	return 0;
}

void
pop3_free(struct pop3_conn *c)
{
	if (c->rbuf != NULL) {
		/* The buffer held a PASS line. */
		explicit_bzero(c->rbuf, c->rcap);
		free(c->rbuf);
		c->rbuf = NULL;
	}
}

/* Make room and read more input, flushing our output before waiting. */
static enum pop3_res
fill(struct pop3_conn *c)
{
	ssize_t		 n;
	int64_t		 deadline;
	enum pop3_res	 r;

	if (c->reof)
		return POP3_EOF;
	if (c->rpos > 0) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		c->rpos = 0;
	}
	if (pop3_flush(c) == -1)
		return c->werr;
	/*
	 * The idle timer runs from the first wait for this line, after our
	 * replies went out, and is not re-armed by input that does not end
	 * the line (issue 8: one octet every few seconds kept a worker).
	 */
	if (c->line_deadline_ms == 0 && c->idle_timeout_s > 0)
		c->line_deadline_ms = now_ms() +
		    (int64_t)c->idle_timeout_s * 1000;
	for (;;) {
		if (killed(c))
			return POP3_KILLED;
		/* Also while input keeps coming (an endless line). */
		if ((deadline = read_deadline(c)) > 0 && now_ms() >= deadline)
			return POP3_TIMEOUT;
		n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
		if (n > 0) {
			c->rlen += (size_t)n;
			return POP3_OK;
		}
		if (n == 0) {
			c->reof = true;
			return POP3_EOF;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if ((r = wait_until(c, POLLIN, deadline)) != POP3_OK)
				return r;
			continue;
		}
		if (errno == ECONNRESET || errno == ENOTCONN) {
			c->reof = true;
			return POP3_EOF;
		}
		log_warn("pop3: read");
		return POP3_ERR;
	}
}

enum pop3_res
pop3_read_line(struct pop3_conn *c, char **line, size_t *len)
{
	char		*p, *lf;
	size_t		 avail, end;
	enum pop3_res	 r;

	/* A new line: its idle timer starts at the first wait (fill). */
	c->line_deadline_ms = 0;
	for (;;) {
		p = c->rbuf + c->rpos;
		avail = c->rlen - c->rpos;
		lf = memchr(p, '\n', avail);
		if (c->discarding) {
			if (lf == NULL) {
				c->rpos = c->rlen;
			} else {
				c->rpos += (size_t)(lf - p) + 1;
				c->discarding = false;
				return POP3_TOO_LONG;
			}
		} else if (lf != NULL) {
			end = (size_t)(lf - p);
			c->rpos += end + 1;
			if (end > 0 && p[end - 1] == '\r')
				end--;
			/* The limit counts a CRLF even after a bare LF. */
			if (end + 2 > c->line_max)
				return POP3_TOO_LONG;
			if (memchr(p, '\0', end) != NULL)
				return POP3_NUL;
			p[end] = '\0';
			*line = p;
			*len = end;
			return POP3_OK;
		} else if (avail >= c->line_max) {
			/*
			 * Even if an LF came next, the line would be too
			 * long: drop it as it arrives, so a flood costs no
			 * memory, and answer once at its end.
			 */
			c->discarding = true;
			c->rpos = c->rlen;
		}
		if ((r = fill(c)) != POP3_OK)
			return r;
	}
}

bool
pop3_line_pending(const struct pop3_conn *c)
{
	return memchr(c->rbuf + c->rpos, '\n', c->rlen - c->rpos) != NULL;
}

static int
fail(struct pop3_conn *c, enum pop3_res r)
{
	if (c->werr == POP3_OK)
		c->werr = r;
	return -1;
}

/*
 * After send(2) or sendfile(2) failed: 0 when the caller should try again
 * (interrupted, or the peer read within send_timeout_s), else -1 with the
 * connection marked failed.
 */
static int
send_failed(struct pop3_conn *c, const char *what)
{
	enum pop3_res	 r;

	if (errno == EINTR)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		if ((r = wait_fd(c, POLLOUT, c->send_timeout_s)) != POP3_OK)
			return fail(c, r);
		return 0;
	}
	if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
		return fail(c, POP3_EOF);
	log_warn("pop3: %s", what);
	return fail(c, POP3_ERR);
}

static int
send_all(struct pop3_conn *c, const char *p, size_t len, int flags)
{
	ssize_t		 n;

	while (len > 0) {
		if (killed(c))
			return fail(c, POP3_KILLED);
		n = send(c->fd, p, len, MSG_NOSIGNAL | flags);
		if (n >= 0) {
			p += n;
			len -= (size_t)n;
			c->octets_out += (uint64_t)n;
			continue;
		}
		if (send_failed(c, "send") == -1)
			return -1;
	}
	return 0;
}

static int
flush_flags(struct pop3_conn *c, int flags)
{
	size_t	 len = c->wlen;

	if (c->werr != POP3_OK)
		return -1;
	c->wlen = 0;
	return send_all(c, c->wbuf, len, flags);
}

int
pop3_flush(struct pop3_conn *c)
{
	return flush_flags(c, 0);
}

int
pop3_write(struct pop3_conn *c, const void *buf, size_t len)
{
	if (c->werr != POP3_OK)
		return -1;
	if (len > sizeof(c->wbuf) - c->wlen && pop3_flush(c) == -1)
		return -1;
	if (len >= sizeof(c->wbuf))
		return send_all(c, buf, len, 0);
	memcpy(c->wbuf + c->wlen, buf, len);
	c->wlen += len;
	return 0;
}

int
pop3_printf(struct pop3_conn *c, const char *fmt, ...)
{
	char	 tmp[512], *big;
	va_list	 ap;
	int	 n, rc;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return fail(c, POP3_ERR);
	if ((size_t)n < sizeof(tmp))
		return pop3_write(c, tmp, (size_t)n);
	if ((big = malloc((size_t)n + 1)) == NULL) {
		log_warn("pop3: malloc");
		return fail(c, POP3_ERR);
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	rc = pop3_write(c, big, (size_t)n);
	free(big);
	return rc;
}

int
pop3_ml_line(struct pop3_conn *c, const char *line, size_t len)
{
	/* RFC 1939 §3: a line that starts with "." gets one more. */
	if (len > 0 && line[0] == '.' && pop3_write(c, ".", 1) == -1)
		return -1;
	if (pop3_write(c, line, len) == -1)
		return -1;
	return pop3_write(c, "\r\n", 2);
}

int
pop3_ml_text(struct pop3_conn *c, const char *text, size_t len)
{
	const char	*lf;
	size_t		 n;

	while (len > 0) {
		if ((lf = memchr(text, '\n', len)) == NULL) {
			n = len;
			if (n > 0 && text[n - 1] == '\r')
				n--;
			return pop3_ml_line(c, text, n);
		}
		n = (size_t)(lf - text);
		if (pop3_ml_line(c, text,
		    n > 0 && text[n - 1] == '\r' ? n - 1 : n) == -1)
			return -1;
		text += n + 1;
		len -= n + 1;
	}
	return 0;
}

int
pop3_ml_end(struct pop3_conn *c)
{
	return pop3_write(c, ".\r\n", 3);
}

void
pop3_cork(struct pop3_conn *c, bool on)
{
	int	 v = on ? 1 : 0;

	if (!on)
		(void)pop3_flush(c);
	if (!c->tcp || c->corked == on)
		return;
	if (setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v)) == -1)
		log_warn("pop3: setsockopt TCP_CORK");
	else
		c->corked = on;
}

int
pop3_sendfile(struct pop3_conn *c, int fd, off_t off, size_t len)
{
	ssize_t		 n;

	/* The reply line goes first; MSG_MORE lets it share a segment. */
	if (flush_flags(c, MSG_MORE) == -1)
		return -1;
	while (len > 0) {
		if (killed(c))
			return fail(c, POP3_KILLED);
		n = sendfile(c->fd, fd, &off, len);
		if (n > 0) {
			len -= (size_t)n;
			c->octets_out += (uint64_t)n;
			continue;
		}
		if (n == 0) {
			log_warnx("pop3: sendfile: file shorter than expected");
			errno = EIO;
			return fail(c, POP3_ERR);
		}
		if (send_failed(c, "sendfile") == -1)
			return -1;
	}
	return 0;
}

enum pop3_res
pop3_sleep_ms(struct pop3_conn *c, unsigned ms)
{
	int64_t	 deadline = now_ms() + ms, left;

	for (;;) {
		if (killed(c))
			return POP3_KILLED;
		if ((left = deadline - now_ms()) <= 0)
			return POP3_OK;
		(void)poll(NULL, 0, left < SLICE_MS ? (int)left : SLICE_MS);
	}
}

char *
pop3_keyword(char *line, char **rest)
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
pop3_split(char *rest, bool whole, struct pop3_args *a)
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
		if (a->argc == POP3_ARGS_MAX)
			return -1;
		a->argv[a->argc++] = p;
		while (*p != ' ' && *p != '\0')
			p++;
		if (*p == ' ')
			*p++ = '\0';
	}
}

const char *
pop3_res_name(enum pop3_res r)
{
	switch (r) {
	case POP3_OK:
		return "ok";
	case POP3_TOO_LONG:
		return "too-long";
	case POP3_NUL:
		return "nul";
	case POP3_EOF:
		return "drop";
	case POP3_TIMEOUT:
		return "timeout";
	case POP3_KILLED:
		return "killed";
	case POP3_ERR:
		return "error";
	}
	return "?";
}
