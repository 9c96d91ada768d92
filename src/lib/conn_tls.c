/*
 * conn_tls: the TLS transport of conn (conn.h), and the peer checks the
 * cleartext policy needs.  The handshake, the record I/O mapped onto
 * conn's non-blocking transport contract, and RETR's body path: kernel
 * TLS's SSL_sendfile where the kernel carries the records, else the file
 * read in large chunks so OpenSSL emits full 16 KiB records.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sdps/conn.h"
#include "sdps/log.h"
#include "sdps/tls.h"
#include "sdps/tls_client.h"

#include "conn_int.h"

/*
 * RETR without kernel TLS: the file is read this much at a time and
 * handed to SSL_write in one piece, so every record but the last is a
 * full 16 KiB one and the per-call overhead is spread over 16 records.
 * The buffer exists only while a body is sent (idle sessions stay
 * small); bodies that need more than BODY_MMAP_MIN get it from mmap, so
 * it goes back to the kernel at once instead of staying in the heap.
 */
#define BODY_CHUNK	(256 * 1024)
#define BODY_MMAP_MIN	(64 * 1024)

/* Log the OpenSSL error queue's first reason (never key material). */
static void
log_ssl(const char *what)
{
	unsigned long	 e = ERR_get_error();
	char		 buf[256];

	if (e == 0)
		snprintf(buf, sizeof(buf), "unknown error");
	else if (ERR_reason_error_string(e) != NULL)
		snprintf(buf, sizeof(buf), "%s", ERR_reason_error_string(e));
	else
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	log_warnx("%s: %s", what, buf);
}

/* The peer ended the TCP stream without close_notify (OpenSSL 3). */
static bool
unexpected_eof(void)
{
	unsigned long	 e = ERR_peek_error();

	return ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

/*
 * Map a failed SSL_read/SSL_write/SSL_sendfile onto conn's contract:
 * -1 with errno EAGAIN (and c->want) when it would block, ECONNRESET
 * when the peer went away, EPROTO for a TLS error (logged).  A
 * close_notify ends reads (0) and fails writes (EPIPE).
 */
static ssize_t
tls_io_failed(struct conn *c, int rc, bool reading)
{
	int	 e = SSL_get_error(c->ssl, rc);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		c->want = POLLIN;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		c->want = POLLOUT;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		if (reading)
			return 0;
		errno = EPIPE;
		return -1;
	case SSL_ERROR_SYSCALL:
		c->tls_dead = true;
		ERR_clear_error();
		if (errno == 0)
			errno = ECONNRESET;
		return -1;
	default:
		c->tls_dead = true;
		if (unexpected_eof()) {
			ERR_clear_error();
			errno = ECONNRESET;
			return -1;
		}
		log_ssl(reading ? "tls read" : "tls write");
		errno = EPROTO;
		return -1;
	}
}

static ssize_t
tls_recv(struct conn *c, void *buf, size_t len)
{
	int	 n;

	if (len > INT_MAX)
		len = INT_MAX;
	ERR_clear_error();
	errno = 0;
	if ((n = SSL_read(c->ssl, buf, (int)len)) > 0)
		return n;
	return tls_io_failed(c, n, true);
}

/* flags (MSG_MORE) mean nothing to TLS: records are OpenSSL's. */
static ssize_t
tls_send(struct conn *c, const void *buf, size_t len, int flags)
{
	int	 n;

	(void)flags;
	if (len > INT_MAX)
		len = INT_MAX;
	ERR_clear_error();
	errno = 0;
	if ((n = SSL_write(c->ssl, buf, (int)len)) > 0)
		return n;
	return tls_io_failed(c, n, false);
}

/* Kernel TLS: the kernel encrypts the file's pages as it sends them. */
static ssize_t
tls_sendfile(struct conn *c, int fd, off_t *off, size_t len)
{
	ossl_ssize_t	 n;

	ERR_clear_error();
	errno = 0;
	if ((n = SSL_sendfile(c->ssl, fd, *off, len, 0)) > 0) {
		*off += n;
		return n;
	}
	if (n == 0)
		return 0;
	return tls_io_failed(c, (int)n, false);
}

static void *
body_buf(size_t size)
{
	void	*p;

	if (size < BODY_MMAP_MIN)
		return malloc(size);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void
body_buf_free(void *p, size_t size)
{
	if (size < BODY_MMAP_MIN)
		free(p);
	else
		munmap(p, size);
}

/*
 * The body read in BODY_CHUNK pieces and written with one SSL_write
 * each.  What is already buffered (the "+OK" line, the Return-Path
 * header) goes in front of the first piece, so it shares the first full
 * record instead of going out as a tiny one.
 */
static int
copy_body(struct conn *c, int fd, off_t off, size_t len)
{
	size_t	 cap, head = c->wlen, n;
	char	*buf;
	int	 rc = 0;

	cap = head + len < BODY_CHUNK ? head + len : BODY_CHUNK;
	if (cap == 0)
		return 0;
	if ((buf = body_buf(cap)) == NULL) {
		log_warn("conn: body buffer");
		return conn_fail(c, CONN_ERR);
	}
	memcpy(buf, c->wbuf, head);
	c->wlen = 0;
	while (rc == 0 && (head > 0 || len > 0)) {
		n = cap - head < len ? cap - head : len;
		if ((rc = conn_pread_full(c, fd, buf + head, n, off)) == 0)
			rc = conn_send_all(c, buf, head + n, 0);
		off += (off_t)n;
		len -= n;
		head = 0;
	}
	body_buf_free(buf, cap);
	return rc;
}

/* The one place the body path is chosen: zero-copy exactly when kernel
 * TLS carries the send side (conn_tls_ktls). */
static int
tls_send_body(struct conn *c, int fd, off_t off, size_t len)
{
	if (conn_tls_ktls(c))
		return conn_body_sendfile(c, fd, off, len);
	return copy_body(c, fd, off, len);
}

/* conn_free: a close_notify if the session is sound (best effort: one
 * non-blocking attempt), then the SSL. */
static void
tls_drop(struct conn *c)
{
	if (c->ssl == NULL)
		return;
	if (!c->tls_dead && SSL_is_init_finished(c->ssl)) {
		ERR_clear_error();
		(void)SSL_shutdown(c->ssl);
	}
	ERR_clear_error();
	SSL_free(c->ssl);
	c->ssl = NULL;
}

static const struct transport tls_transport = {
	tls_recv, tls_send, tls_sendfile, tls_send_body, tls_drop
};

/*
 * THE STARTTLS command injection defence (CVE-2011-0411, found in
 * Postfix and many others): whatever the client sent in clear before the
 * handshake and conn has already buffered (e.g. "USER x\r\n" pipelined
 * after "STLS\r\n" in one packet, or injected by a man in the middle) is
 * dropped here, so it can never be read as if it had come through TLS.
 * This is the one place the rule lives; conn_tls_accept is the only way
 * into TLS.
 * Octets still in the socket are not ours to drop: they reach OpenSSL as
 * handshake data and fail it.
 */
static void
discard_cleartext_input(struct conn *c)
{
	explicit_bzero(c->rbuf, c->rcap);
	c->rpos = c->rlen = 0;
	c->discarding = false;
}

/* One handshake step that would block: wait for it, or say why not. */
static enum conn_res
accept_wait(struct conn *c, int rc, int64_t deadline)
{
	switch (SSL_get_error(c->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return conn_wait_until(c, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE:
		return conn_wait_until(c, POLLOUT, deadline);
	case SSL_ERROR_ZERO_RETURN:
		c->tls_dead = true;
		return CONN_EOF;
	case SSL_ERROR_SYSCALL:
		c->tls_dead = true;
		if (errno == 0 || errno == ECONNRESET || errno == EPIPE) {
			ERR_clear_error();
			return CONN_EOF;
		}
		log_warn("tls handshake failed");
		ERR_clear_error();
		return CONN_ERR;
	default:
		c->tls_dead = true;
		if (unexpected_eof()) {
			ERR_clear_error();
			return CONN_EOF;
		}
		log_ssl("tls handshake failed");
		return CONN_ERR;
	}
}

enum conn_res
conn_tls_accept(struct conn *c, struct tls_server *t, unsigned timeout_ms)
{
	int64_t		 deadline;
	enum conn_res	 r;
	int		 rc, one = 1;

	if (c->ssl != NULL) {
		log_warnx("conn: TLS is already active");
		return CONN_ERR;
	}
	if (conn_flush(c) == -1)
		return c->werr;
	discard_cleartext_input(c);
	if ((c->ssl = tls_server_ssl(t)) == NULL)
		return CONN_ERR;
	c->tp = &tls_transport;
	if (SSL_set_fd(c->ssl, c->fd) != 1) {
		c->tls_dead = true;
		log_ssl("tls: SSL_set_fd");
		return CONN_ERR;
	}
	/*
	 * TLS sends separate records back to back (the session ticket,
	 * then the greeting or a reply), and Nagle would hold the second
	 * until the client's delayed ACK of the first: 40 ms a login.
	 * conn_cork still batches a RETR into full segments.
	 */
	if (c->tcp && setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one)) == -1)
		log_warn("conn: setsockopt TCP_NODELAY");
	deadline = conn_now_ms() + (int64_t)timeout_ms;
	if (timeout_ms == 0 || (c->deadline_ms > 0 && c->deadline_ms < deadline))
		deadline = c->deadline_ms;
	for (;;) {
		if (conn_killed(c))
			return CONN_KILLED;
		if (deadline > 0 && conn_now_ms() >= deadline)
			return CONN_TIMEOUT;
		ERR_clear_error();
		errno = 0;
		if ((rc = SSL_accept(c->ssl)) == 1)
			break;
		if ((r = accept_wait(c, rc, deadline)) != CONN_OK)
			return r;
	}
	c->ktls = BIO_get_ktls_send(SSL_get_wbio(c->ssl)) != 0;
	return CONN_OK;
}

/*
 * The client half (issue 11: a front end's link to a punt).  No
 * cleartext came before (implicit TLS), so nothing is discarded; the
 * verification (CA, server name) is the context's (tls_client.c), and a
 * failure names the certificate's reason.
 */
int
conn_tls_connect_step(struct conn *c, struct tls_client *t, short *events,
    char *err, size_t errlen)
{
	long	 vr;
	int	 rc, one = 1;

	if (c->ssl == NULL) {
		if ((c->ssl = tls_client_ssl(t)) == NULL) {
			snprintf(err, errlen, "tls: no SSL");
			return -1;
		}
		c->tp = &tls_transport;
		if (SSL_set_fd(c->ssl, c->fd) != 1) {
			c->tls_dead = true;
			snprintf(err, errlen, "tls: SSL_set_fd failed");
			return -1;
		}
		/* Commands and replies are small records back to back. */
		if (c->tcp)
			(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one,
			    sizeof(one));
	}
	ERR_clear_error();
	errno = 0;
	if ((rc = SSL_connect(c->ssl)) == 1)
		return 1;
	if ((vr = SSL_get_verify_result(c->ssl)) != X509_V_OK) {
		c->tls_dead = true;
		snprintf(err, errlen, "tls: the punt's certificate (want %s): "
		    "%s", tls_client_server_name(t),
		    X509_verify_cert_error_string(vr));
		ERR_clear_error();
		return -1;
	}
	switch (SSL_get_error(c->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		*events = POLLIN;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		*events = POLLOUT;
		return 0;
	case SSL_ERROR_SYSCALL:
		c->tls_dead = true;
		snprintf(err, errlen, "tls handshake: %s", errno != 0 ?
		    strerror(errno) : "the punt closed the link");
		ERR_clear_error();
		return -1;
	default:
		c->tls_dead = true;
		if (unexpected_eof())
			snprintf(err, errlen, "tls handshake: the punt closed "
			    "the link");
		else
			snprintf(err, errlen, "tls handshake: %s",
			    ERR_reason_error_string(ERR_peek_error()) != NULL ?
			    ERR_reason_error_string(ERR_peek_error()) :
			    "failed");
		ERR_clear_error();
		return -1;
	}
}

enum conn_res
conn_tls_connect(struct conn *c, struct tls_client *t, unsigned timeout_ms,
    char *err, size_t errlen)
{
	int64_t		 deadline = conn_now_ms() + (int64_t)timeout_ms;
	enum conn_res	 r;
	short		 ev = 0;
	int		 rc;

	while ((rc = conn_tls_connect_step(c, t, &ev, err, errlen)) == 0) {
		if ((r = conn_wait_until(c, ev, deadline)) != CONN_OK) {
			snprintf(err, errlen, "tls handshake: %s",
			    conn_res_name(r));
			return r;
		}
	}
	return rc == 1 ? CONN_OK : CONN_ERR;
}

bool
conn_tls_active(const struct conn *c)
{
	return c->ssl != NULL && SSL_is_init_finished(c->ssl);
}

bool
conn_tls_ktls(const struct conn *c)
{
	return conn_tls_active(c) && c->ktls;
}

void
conn_tls_describe(const struct conn *c, char *buf, size_t len)
{
	if (!conn_tls_active(c)) {
		snprintf(buf, len, "none");
		return;
	}
	snprintf(buf, len, "%s/%s", SSL_get_version(c->ssl),
	    SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
}

bool
conn_peer_loopback(const struct conn *c)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t		 sl = sizeof(ss);
	const uint8_t		*a;

	memset(&ss, 0, sizeof(ss));
	if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == -1)
		return false;
	switch (ss.ss_family) {
	case AF_UNIX:
		return true;	/* local by construction */
	case AF_INET:
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	case AF_INET6:
		a = sin6->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && a[12] == 127;
	default:
		return false;
	}
}

/* Issue 11: the client certificate's identity (tls.h), for the punt
 * server's log lines; "-" without TLS. */
void
conn_tls_peer(const struct conn *c, char *buf, size_t len)
{
	if (!conn_tls_active(c)) {
		snprintf(buf, len, "-");
		return;
	}
	tls_peer_identity(c->ssl, buf, len);
}
