/*
 * conn_client: conn's client side (conn.h): conn_connect for the SMTP
 * agent, and the connect without waiting that the punt links start for
 * every punt at once (issue 11).
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netdb.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sdps/conn.h"
#include "sdps/log.h"

#include "conn_int.h"

#define PEER_MAX	CONN_PEER_MAX

/* Split "host:port" or "[v6]:port" into host and port; 0 or -1. */
static int
split_target(const char *target, char *host, size_t hlen, char **port)
{
	size_t	 n;

	if ((size_t)snprintf(host, hlen, "%s", target) >= hlen ||
	    (*port = strrchr(host, ':')) == NULL)
		return -1;
	*(*port)++ = '\0';
	n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
	return 0;
}

/* Connect c's socket to ai, waiting up to timeout_s; CONN_OK or why not. */
static enum conn_res
connect_one(struct conn *c, const struct addrinfo *ai, unsigned timeout_s)
{
	enum conn_res	 r;
	int		 err = 0;
	socklen_t	 sl = sizeof(err);

	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return CONN_OK;
	if (errno != EINPROGRESS && errno != EINTR)
		return CONN_ERR;
	if ((r = conn_wait_until(c, POLLOUT, timeout_s > 0 ? conn_now_ms() +
	    (int64_t)timeout_s * 1000 : 0)) != CONN_OK)
		return r;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) == -1)
		return CONN_ERR;
	if (err != 0) {
		errno = err;
		return CONN_ERR;
	}
	return CONN_OK;
}

struct conn *
conn_connect(const char *target, unsigned connect_timeout_s,
    size_t line_max, unsigned idle_timeout_s, unsigned send_timeout_s,
    volatile sig_atomic_t *kill)
{
	struct addrinfo	 hints, *res, *ai;
	struct conn	*c = NULL;
	char		 host[PEER_MAX], *port;
	enum conn_res	 r = CONN_ERR;
	int		 fd, rc;

	if (split_target(target, host, sizeof(host), &port) == -1) {
		log_warnx("conn %s: not host:port", target);
		return NULL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		log_warnx("conn %s: getaddrinfo: %s", target, gai_strerror(rc));
		return NULL;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype |
		    SOCK_CLOEXEC, 0)) == -1)
			continue;
		if ((c = conn_setup(fd, line_max, idle_timeout_s,
		    send_timeout_s, kill)) == NULL) {
			close(fd);
			continue;
		}
		c->own_fd = true;
		if ((r = connect_one(c, ai, connect_timeout_s)) == CONN_OK)
			break;
		conn_free(c);
		c = NULL;
	}
	freeaddrinfo(res);
	if (c == NULL) {
		if (r == CONN_ERR)
			log_warn("conn %s: connect", target);
		else
			log_warnx("conn %s: connect: %s", target,
			    conn_res_name(r));
		return NULL;
	}
	snprintf(c->peer, sizeof(c->peer), "%s", target);
	return c;
}

struct conn *
conn_connect_start(const char *target, size_t line_max,
    unsigned idle_timeout_s, unsigned send_timeout_s,
    volatile sig_atomic_t *kill, char *err, size_t errlen)
{
	struct addrinfo	 hints, *res, *ai;
	struct conn	*c = NULL;
	char		 host[PEER_MAX], *port;
	int		 fd, rc, e = 0;

	if (split_target(target, host, sizeof(host), &port) == -1) {
		snprintf(err, errlen, "%s: not host:port", target);
		return NULL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	/* A name is resolved here, before any wait: the punt addresses are
	 * the operator's own (an IP, or a name in /etc/hosts). */
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s: %s", target, gai_strerror(rc));
		return NULL;
	}
	for (ai = res; ai != NULL && c == NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype |
		    SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) == -1) {
			e = errno;
			continue;
		}
		if ((c = conn_setup(fd, line_max, idle_timeout_s,
		    send_timeout_s, kill)) == NULL) {
			e = ENOMEM;
			close(fd);
			continue;
		}
		c->own_fd = true;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1 &&
		    errno != EINPROGRESS && errno != EINTR) {
			e = errno;
			conn_free(c);
			c = NULL;
		}
	}
	freeaddrinfo(res);
	if (c == NULL) {
		snprintf(err, errlen, "%s: connect: %s", target, strerror(e));
		return NULL;
	}
	snprintf(c->peer, sizeof(c->peer), "%s", target);
	return c;
}

enum conn_res
conn_connect_finish(struct conn *c, unsigned timeout_ms, char *err,
    size_t errlen)
{
	enum conn_res	 r;
	int		 e = 0;
	socklen_t	 sl = sizeof(e);

	r = conn_wait_until(c, POLLOUT, conn_now_ms() + (int64_t)timeout_ms);
	if (r != CONN_OK) {
		snprintf(err, errlen, "%s: connect: %s", c->peer,
		    conn_res_name(r));
		return r;
	}
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &sl) == -1)
		e = errno;
	if (e != 0) {
		snprintf(err, errlen, "%s: connect: %s", c->peer, strerror(e));
		return CONN_ERR;
	}
	return CONN_OK;
}

int
conn_fd(const struct conn *c)
{
	return c->fd;
}
