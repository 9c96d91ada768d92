/*
 * pop3: line-oriented protocol I/O over a non-blocking socket: a bounded
 * line reader, a buffered writer with dot-stuffing for multi-line replies,
 * and sendfile(2) of stored wire-format messages.  Used by the POP3
 * session; the line limit is a parameter so an LMTP session can share it.
 */
#ifndef SDPS_POP3_H
#define SDPS_POP3_H

#include <sys/types.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 2449 §4: a command line is at most 255 octets, CRLF included. */
#define POP3_LINE_MAX	255
#define POP3_WBUF_SIZE	16384
#define POP3_ARGS_MAX	4

/* Results of pop3_read_line, and the sticky I/O state of a connection. */
enum pop3_res {
	POP3_OK,
	POP3_TOO_LONG,	/* line over the limit: consumed to its end */
	POP3_NUL,	/* line held a NUL octet: consumed */
	POP3_EOF,	/* peer closed (or reset) the connection */
	POP3_TIMEOUT,	/* idle (read) or send timeout */
	POP3_KILLED,	/* *kill was set */
	POP3_ERR	/* other I/O error (logged) */
};

struct pop3_conn {
	int		 fd;
	size_t		 line_max;	/* octets, line end included */
	unsigned	 idle_timeout_s, send_timeout_s;
	volatile sig_atomic_t *kill;	/* may be NULL */
	/* Monotonic ms; 0 = none.  line_deadline is armed by the first
	 * wait for a line (idle_timeout_s, not re-armed by partial input);
	 * deadline is the caller's overall limit (pop3_set_deadline). */
	int64_t		 line_deadline_ms;
	int64_t		 deadline_ms;
	/* read side: [rpos, rlen) of rbuf is unread input */
	char		*rbuf;
	size_t		 rcap, rpos, rlen;
	bool		 discarding;	/* inside a too-long line */
	bool		 rnul;		/* a NUL seen in the line so far */
	bool		 reof;
	/* write side */
	char		 wbuf[POP3_WBUF_SIZE];
	size_t		 wlen;
	enum pop3_res	 werr;		/* first write failure, sticky */
	bool		 corked;
	bool		 tcp;		/* TCP_CORK applies */
	uint64_t	 octets_out;	/* octets actually sent */
};

/* A command line split in place (pop3_split). */
struct pop3_args {
	int	 argc;
	char	*argv[POP3_ARGS_MAX];
};

/*
 * Set up c on fd, which is made non-blocking.  line_max counts the line
 * end (POP3_LINE_MAX for POP3; at least 3).  Timeouts are in seconds
 * (0 = none).  kill (may be NULL) ends any wait when it becomes non-zero.
 * Returns 0, or -1 (out of memory, or fd unusable; logged).
 */
int	pop3_init(struct pop3_conn *c, int fd, size_t line_max,
	    unsigned idle_timeout_s, unsigned send_timeout_s,
	    volatile sig_atomic_t *kill);

/* Free c's buffers (the read buffer is wiped first).  Does not close fd. */
void	pop3_free(struct pop3_conn *c);

/*
 * Read one line.  Lines end in CRLF or a bare LF.  On POP3_OK *line
 * points to the line without its end, NUL-terminated, inside c's buffer
 * (valid until the next call; the caller may modify or wipe it) and
 * *len is its length.  POP3_TOO_LONG and POP3_NUL report a bad line that
 * has been consumed; the connection stays usable.  Any buffered output
 * is flushed before this blocks for input, so pipelined commands get
 * their replies batched, in order.  The whole line must arrive within
 * idle_timeout_s of the first wait for it (after the flush): input that
 * does not complete a line does not re-arm the timer, so a client
 * trickling one octet at a time is still logged out.  A line already
 * buffered is returned without waiting.  POP3_TIMEOUT also once the
 * pop3_set_deadline deadline has passed.  Other results end the session.
 */
enum pop3_res pop3_read_line(struct pop3_conn *c, char **line, size_t *len);

/*
 * An overall deadline for reads: from now, every wait for input ends at
 * the earlier of the line's idle deadline and this one.  Once it has
 * passed, pop3_read_line returns only lines already in c's buffer and
 * then POP3_TIMEOUT, even if more input is waiting (so a client that
 * keeps sending cannot outrun it).  timeout_s = 0 removes it.  Used for
 * the AUTHORIZATION state's total limit.
 */
void	pop3_set_deadline(struct pop3_conn *c, unsigned timeout_s);

/* True if a complete line (or its end) is already buffered. */
bool	pop3_line_pending(const struct pop3_conn *c);

/*
 * Buffered output.  Each returns 0, or -1 once the connection has failed
 * (c->werr tells why; later writes are dropped).  A full buffer is
 * flushed, waiting up to send_timeout_s for the peer to read.
 */
int	pop3_write(struct pop3_conn *c, const void *buf, size_t len);
int	pop3_printf(struct pop3_conn *c, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

/* One line of a multi-line reply: dot-stuffed, CRLF appended. */
int	pop3_ml_line(struct pop3_conn *c, const char *line, size_t len);

/*
 * Generated multi-line text: split at LF (a CR before it is dropped), each
 * line written as pop3_ml_line.  A last line without LF is still a line.
 */
int	pop3_ml_text(struct pop3_conn *c, const char *text, size_t len);

/* The ".\r\n" that ends a multi-line reply. */
int	pop3_ml_end(struct pop3_conn *c);

/* Send everything buffered.  0 or -1 (c->werr). */
int	pop3_flush(struct pop3_conn *c);

/*
 * Hold back partial TCP segments (TCP_CORK) while a reply is assembled
 * from the buffer and a file; turning it off flushes the buffer first.
 * A no-op on sockets that are not TCP.
 */
void	pop3_cork(struct pop3_conn *c, bool on);

/*
 * Send len octets of file fd from offset off after whatever is buffered,
 * with sendfile(2), handling partial sends.  The data is sent as is (a
 * stored message is already CRLF and dot-stuffed).  0 or -1 (c->werr);
 * -1 with werr POP3_ERR and errno EIO if the file is shorter than len.
 * The caller must ignore SIGPIPE (sendfile cannot take MSG_NOSIGNAL).
 */
int	pop3_sendfile(struct pop3_conn *c, int fd, off_t off, size_t len);

/*
 * Sleep ms milliseconds, ending early if *kill is set.  POP3_OK or
 * POP3_KILLED.
 */
enum pop3_res pop3_sleep_ms(struct pop3_conn *c, unsigned ms);

/*
 * Split a command line in place: the keyword (first word) is returned and
 * NUL-terminated, *rest points after it and its separating space.  NULL
 * for an empty line or one that starts with a space.
 */
char	*pop3_keyword(char *line, char **rest);

/*
 * Split rest into arguments separated by spaces (runs of spaces and
 * trailing spaces are tolerated).  With whole, rest is one argument as it
 * is, spaces included (an empty rest is no argument).  Returns 0, or -1
 * if there are more than POP3_ARGS_MAX arguments.
 */
int	pop3_split(char *rest, bool whole, struct pop3_args *a);

/* "timeout", "eof", ... for logs. */
const char *pop3_res_name(enum pop3_res r);

#endif
