/*
 * conn: line-oriented protocol I/O over a non-blocking stream socket,
 * shared by the POP3 session, the LMTP session and the SMTP agent (a
 * client): a bounded line reader, a buffered writer with dot-stuffing for
 * multi-line replies, and body transfer from a file descriptor.  Every
 * wait is bounded by poll() timeouts and a kill flag, so neither an idle
 * peer nor one that stops reading can hold a process forever.
 *
 * struct conn is opaque; callers use the accessors below.  The bytes go
 * through a small transport table (src/lib/conn_int.h): the plain socket
 * in conn.c, TLS in conn_tls.c (docs/design.md §16.1, §17.3).
 *
 * Error convention: functions returning enum conn_res report the outcome
 * of one read or wait; output functions return 0, or -1 once the
 * connection has failed, the reason being sticky in conn_werr().
 * Constructors return NULL on failure (logged).
 */
#ifndef SDPS_CONN_H
#define SDPS_CONN_H

#include <sys/types.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 2449 §4: a POP3 command line is at most 255 octets, CRLF included. */
#define POP3_LINE_MAX	255
#define CONN_ARGS_MAX	4

/* Results of conn_read_line, and the sticky I/O state of a connection. */
enum conn_res {
	CONN_OK,
	CONN_TOO_LONG,	/* line over the limit: consumed to its end */
	CONN_NUL,	/* line held a NUL octet: consumed */
	CONN_EOF,	/* peer closed (or reset) the connection */
	CONN_TIMEOUT,	/* idle (read), send or connect timeout */
	CONN_KILLED,	/* *kill was set */
	CONN_ERR	/* other I/O error (logged) */
};

/* How the last line conn_read_line returned or consumed ended. */
enum conn_eol {
	CONN_EOL_CRLF,
	CONN_EOL_LF,		/* a bare LF */
	CONN_EOL_UNKNOWN	/* too long a line: its CR, if any, was dropped */
};

struct conn;

/* A command line split in place (conn_split). */
struct conn_args {
	int	 argc;
	char	*argv[CONN_ARGS_MAX];
};

/*
 * A connection on the accepted socket fd, which is made non-blocking and
 * stays the caller's (conn_free does not close it).  line_max counts the
 * line end (POP3_LINE_MAX for POP3; at least 3).  Timeouts are in
 * seconds (0 = none).  kill (may be NULL) ends any wait when it becomes
 * non-zero.
 */
struct conn *conn_new(int fd, size_t line_max, unsigned idle_timeout_s,
	    unsigned send_timeout_s, volatile sig_atomic_t *kill);

/*
 * A client connection to "host:port" ("[v6]:port" too), each address
 * tried in turn, each connect bounded by connect_timeout_s.  The socket
 * is the connection's own: conn_free closes it.  Other arguments as for
 * conn_new.
 */
struct conn *conn_connect(const char *target, unsigned connect_timeout_s,
	    size_t line_max, unsigned idle_timeout_s, unsigned send_timeout_s,
	    volatile sig_atomic_t *kill);

/*
 * The client side without waiting (issue 11, the punt links): start a
 * non-blocking connect(2) to the first address of "host:port" that a
 * socket can be made for, and finish it later, so a caller can start
 * several and wait for all under one deadline.  conn_connect_start:
 * NULL with err set.  conn_connect_finish: CONN_OK once connected,
 * CONN_TIMEOUT after timeout_ms, CONN_ERR (err set), CONN_KILLED.
 */
struct conn *conn_connect_start(const char *target, size_t line_max,
	    unsigned idle_timeout_s, unsigned send_timeout_s,
	    volatile sig_atomic_t *kill, char *err, size_t errlen);
enum conn_res conn_connect_finish(struct conn *c, unsigned timeout_ms,
	    char *err, size_t errlen);

/* The socket (socket options, a no-wait poll). */
int	conn_fd(const struct conn *c);

/*
 * Without waiting: is there input (or the stream's end)?  CONN_OK if
 * octets are buffered or arrived, CONN_TIMEOUT if none, CONN_EOF or
 * CONN_ERR if the peer is gone.  A TLS record that carries no data (a
 * session ticket) is consumed and counts as none.
 */
enum conn_res conn_input_probe(struct conn *c);

/*
 * One read without waiting, appended to the buffered input (a caller
 * driving several connections from its own poll loop; conn_line_pending
 * then says whether a whole line is here).  CONN_OK if octets came,
 * CONN_TIMEOUT if none, CONN_TOO_LONG if the buffer is full, CONN_EOF,
 * CONN_ERR.
 */
enum conn_res conn_read_nowait(struct conn *c);

/* Free c (the read buffer is wiped first: it held a PASS line).  NULL ok. */
void	conn_free(struct conn *c);

/*
 * Read one line.  Lines end in CRLF or a bare LF (conn_last_eol tells
 * which).  On CONN_OK *line points to the line without its end,
 * NUL-terminated, inside c's buffer (valid until the next call; the
 * caller may modify or wipe it) and *len is its length.  CONN_TOO_LONG
 * and CONN_NUL report a bad line that has been consumed; the connection
 * stays usable.  Any buffered output is flushed before this blocks for
 * input, so pipelined commands get their replies batched, in order.  The
 * whole line must arrive within idle_timeout_s of the first wait for it
 * (after the flush): input that does not complete a line does not re-arm
 * the timer, so a peer trickling one octet at a time is still cut off.  A
 * line already buffered is returned without waiting.  CONN_TIMEOUT also
 * once the conn_set_deadline deadline has passed.  Other results end the
 * session.
 */
enum conn_res conn_read_line(struct conn *c, char **line, size_t *len);

/* The line end of the line conn_read_line last returned or consumed. */
enum conn_eol conn_last_eol(const struct conn *c);

/*
 * An overall deadline for reads, timeout_ms from now: every wait for
 * input ends at the earlier of the line's idle deadline and this one.
 * Once it has passed, conn_read_line returns only lines already in c's
 * buffer and then CONN_TIMEOUT, even if more input is waiting (so a
 * client that keeps sending cannot outrun it).  0 removes it.  Used for
 * the POP3 AUTHORIZATION state's total limit.
 */
void	conn_set_deadline_ms(struct conn *c, uint64_t timeout_ms);

/*
 * Change the line limit (line end included) for the lines that follow,
 * e.g. a SASL response longer than a command line.  Clamped to 3 ..
 * conn_input_capacity(c).
 */
void	conn_set_line_max(struct conn *c, size_t line_max);

/* Change the idle (per line) and send timeouts, in seconds (0 = none). */
void	conn_set_timeouts(struct conn *c, unsigned idle_timeout_s,
	    unsigned send_timeout_s);

/* True if a complete line (or its end) is already buffered. */
bool	conn_line_pending(const struct conn *c);

/* Octets of unread input buffered, and the read buffer's size. */
size_t	conn_input_buffered(const struct conn *c);
size_t	conn_input_capacity(const struct conn *c);

/*
 * Buffered output.  Each returns 0, or -1 once the connection has failed
 * (conn_werr tells why; later writes are dropped).  A full buffer is
 * flushed, waiting up to send_timeout_s for the peer to read.
 */
int	conn_write(struct conn *c, const void *buf, size_t len);
int	conn_printf(struct conn *c, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

/* One line of a multi-line reply: dot-stuffed, CRLF appended. */
int	conn_ml_line(struct conn *c, const char *line, size_t len);

/*
 * Generated multi-line text: split at LF (a CR before it is dropped), each
 * line written as conn_ml_line.  A last line without LF is still a line.
 */
int	conn_ml_text(struct conn *c, const char *text, size_t len);

/* The ".\r\n" that ends a multi-line reply. */
int	conn_ml_end(struct conn *c);

/* Send everything buffered.  0 or -1 (conn_werr). */
int	conn_flush(struct conn *c);

/*
 * Hold back partial TCP segments (TCP_CORK) while a reply is assembled
 * from the buffer and a file; turning it off flushes the buffer first.
 * A no-op on sockets that are not TCP.  A cork left on is taken off
 * when conn_read_line must read more input (no whole line buffered), so
 * replies to commands that came pipelined in one read share it.
 */
void	conn_cork(struct conn *c, bool on);

/*
 * Send len octets of file fd from offset off after whatever is buffered
 * (sendfile(2) on a plain socket; a transport without it copies through
 * the write buffer).  The data is sent as is (a stored message is
 * already CRLF and dot-stuffed).  0 or -1 (conn_werr); -1 with werr
 * CONN_ERR and errno EIO if the file is shorter than len.  The caller
 * must ignore SIGPIPE (sendfile cannot take MSG_NOSIGNAL).
 */
int	conn_send_file(struct conn *c, int fd, off_t off, size_t len);

/* The first output failure (CONN_OK while there is none). */
enum conn_res conn_werr(const struct conn *c);

/* Octets actually sent so far. */
uint64_t conn_octets_out(const struct conn *c);

/* The "host:port" a client connection was made to ("" for conn_new). */
const char *conn_peer(const struct conn *c);

/*
 * Sleep ms milliseconds, ending early if *kill is set.  CONN_OK or
 * CONN_KILLED.
 */
enum conn_res conn_sleep_ms(struct conn *c, unsigned ms);

/*
 * Split a command line in place: the keyword (first word) is returned and
 * NUL-terminated, *rest points after it and its separating space.  NULL
 * for an empty line or one that starts with a space.
 */
char	*conn_keyword(char *line, char **rest);

/*
 * Split rest into arguments separated by spaces (runs of spaces and
 * trailing spaces are tolerated).  With whole, rest is one argument as it
 * is, spaces included (an empty rest is no argument).  Returns 0, or -1
 * if there are more than CONN_ARGS_MAX arguments.
 */
int	conn_split(char *rest, bool whole, struct conn_args *a);

/* ---- TLS (issue 10): the transport is conn_tls.c's ---- */

struct tls_server;

/*
 * Start TLS as the server on c (after "+OK" to STLS, or at once on an
 * implicit-TLS listener).  Any input already buffered is discarded
 * first: octets a client pipelined after STLS were sent in clear and are
 * never executed (CVE-2011-0411).  Buffered output is flushed first.  The
 * handshake must finish within timeout_ms.  CONN_OK, CONN_TIMEOUT,
 * CONN_EOF, CONN_KILLED, or CONN_ERR (handshake failed, logged with the
 * reason); anything but CONN_OK ends the session.  Once only.
 */
enum conn_res conn_tls_accept(struct conn *c, struct tls_server *t,
	    unsigned timeout_ms);

struct tls_client;

/*
 * Start TLS as the client on a connected c (tls_client.h: TLS 1.3, the
 * peer's certificate checked against the context's ca and server name)
 * within timeout_ms.  CONN_OK, or as conn_tls_accept, with the reason
 * (a certificate that failed verification, ...) in err.
 */
enum conn_res conn_tls_connect(struct conn *c, struct tls_client *t,
	    unsigned timeout_ms, char *err, size_t errlen);

/*
 * One step of that handshake without waiting, for a caller that drives
 * several in one poll loop: 1 done, 0 not yet (poll c's fd for *events,
 * then step again), -1 failed (err says why).
 */
int	conn_tls_connect_step(struct conn *c, struct tls_client *t,
	    short *events, char *err, size_t errlen);

/* True once conn_tls_accept has succeeded on c. */
bool	conn_tls_active(const struct conn *c);

/* True if kernel TLS carries c's records (RETR then uses SSL_sendfile). */
bool	conn_tls_ktls(const struct conn *c);

/* "TLSv1.3/TLS_AES_256_GCM_SHA384" (protocol/cipher), or "none". */
void	conn_tls_describe(const struct conn *c, char *buf, size_t len);

/* True if the peer of c's socket is a loopback address (127/8, ::1, or
 * ::ffff:127/104): the cleartext policy's exception. */
bool	conn_peer_loopback(const struct conn *c);

/* Issue 11 (the punt server): the TLS peer's certificate identity,
 * "CN=x DNS=a,b" (tls_peer_identity), or "-" without TLS. */
void	conn_tls_peer(const struct conn *c, char *buf, size_t len);

/*
 * Issue 11 (the punt server's DELIVER): counted raw octets after a
 * command line.  Up to len octets into buf, the ones already buffered
 * first, else from one read, waiting at most idle_timeout_s (each call
 * anew) and never past conn_set_deadline_ms.  CONN_OK with *got > 0, or
 * the CONN_EOF/TIMEOUT/KILLED/ERR that ends the session.
 */
enum conn_res conn_read_data(struct conn *c, void *buf, size_t len,
	    size_t *got);

/* "timeout", "eof", ... for logs. */
const char *conn_res_name(enum conn_res r);

#endif
