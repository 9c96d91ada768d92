/*
 * conn_int.h: NOT A PUBLIC HEADER.  What conn.c (the line reader, the
 * writer, the plain transport) and conn_tls.c (the TLS transport) share:
 * struct conn, the transport table, and the waiting and failure helpers
 * every transport's callers use.  include/sdps/conn.h stays the module's
 * whole surface; this file only lets that one module span two files.  It
 * lives in src/, not include/sdps/, so no other module can reach it by
 * the include path.
 *
 * Error convention: as conn.h (enum conn_res for waits; 0 or -1 with the
 * sticky werr for output).
 */
#ifndef SDPS_CONN_INT_H
#define SDPS_CONN_INT_H

#include <sys/types.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/conn.h"

#define CONN_WBUF_SIZE	16384
#define CONN_PEER_MAX	320

struct ssl_st;

/*
 * The transport: how octets move.  recv/send/sendfile are each one
 * non-blocking attempt with the semantics of read(2)/send(2)/sendfile(2)
 * (-1 and errno, EAGAIN when it would block); the waiting, timeouts and
 * kill checks around them are conn's.  A transport whose "would block"
 * is not the obvious direction (TLS: a read may need to write, a write
 * to read) sets c->want to the poll events to wait for before it returns
 * EAGAIN; conn_want() takes it.
 *
 * send_body, if set, replaces conn_send_file's whole body path (TLS: the
 * choice between SSL_sendfile and the chunked copy is the transport's);
 * else sendfile is used, or, if that is NULL too, the copy through the
 * write buffer.  drop (may be NULL) ends the transport at conn_free.
 */
struct transport {
	ssize_t	 (*recv)(struct conn *, void *, size_t);
	ssize_t	 (*send)(struct conn *, const void *, size_t, int);
	ssize_t	 (*sendfile)(struct conn *, int, off_t *, size_t);
	int	 (*send_body)(struct conn *, int, off_t, size_t);
	void	 (*drop)(struct conn *);
};

struct conn {
	int		 fd;
	bool		 own_fd;	/* conn_connect's socket: we close it */
	const struct transport *tp;
	short		 want;		/* poll events the transport asked for */
	struct ssl_st	*ssl;		/* TLS transport (conn_tls.c) */
	bool		 ktls;		/* kernel TLS carries the send side */
	bool		 tls_dead;	/* fatal TLS error: no close_notify */
	size_t		 line_max;	/* octets, line end included */
	unsigned	 idle_timeout_s, send_timeout_s;
	volatile sig_atomic_t *kill;	/* may be NULL */
	/* Monotonic ms; 0 = none.  line_deadline is armed by the first
	 * wait for a line (idle_timeout_s, not re-armed by partial input);
	 * deadline is the caller's overall limit (conn_set_deadline_ms). */
	int64_t		 line_deadline_ms;
	int64_t		 deadline_ms;
	/* read side: [rpos, rlen) of rbuf is unread input */
	char		*rbuf;
	size_t		 rcap, rpos, rlen;
	bool		 discarding;	/* inside a too-long line */
	bool		 reof;
	enum conn_eol	 eol;		/* of the last line */
	/* write side */
	char		 wbuf[CONN_WBUF_SIZE];
	size_t		 wlen;
	enum conn_res	 werr;		/* first write failure, sticky */
	bool		 corked;
	bool		 tcp;		/* TCP_CORK applies */
	uint64_t	 octets_out;	/* octets actually sent */
	char		 peer[CONN_PEER_MAX];
};

/* A connection on fd, made non-blocking (conn_new, the connectors). */
struct conn *conn_setup(int fd, size_t line_max, unsigned idle_timeout_s,
	    unsigned send_timeout_s, volatile sig_atomic_t *kill);

bool	conn_killed(const struct conn *c);
int64_t	conn_now_ms(void);

/* The events the transport asked for (c->want, then cleared), else dflt. */
short	conn_want(struct conn *c, short dflt);

/* Wait until c's fd is ready for events, deadline_ms (monotonic, 0 =
 * none) or a kill. */
enum conn_res conn_wait_until(struct conn *c, short events,
	    int64_t deadline_ms);

/* Mark c failed with r (the first failure sticks); returns -1. */
int	conn_fail(struct conn *c, enum conn_res r);

/* After a send failed (errno set): 0 to try again (after waiting up to
 * send_timeout_s for the direction conn_want says), else -1 (failed). */
int	conn_send_failed(struct conn *c, const char *what);

/* Send len octets through the transport, waiting as needed. */
int	conn_send_all(struct conn *c, const char *p, size_t len, int flags);

/* Fill buf with exactly len octets of fd from off: 0, or -1 (c failed;
 * errno EIO if the file is shorter). */
int	conn_pread_full(struct conn *c, int fd, char *buf, size_t len,
	    off_t off);

/* conn_send_file's path without send_body: what is buffered, then the
 * file by the transport's sendfile (or copied if it has none). */
int	conn_body_sendfile(struct conn *c, int fd, off_t off, size_t len);

#endif
