/*
 * link: the client end of the punt protocol (docs/punt-protocol.md), used
 * by the remote punt (punt_remote.c), by sdps-ctl (status, spool ls and
 * show through the link) and by nothing else.  One link is one TLS
 * connection to one punt server; it is not shared between processes.
 *
 * Every call that waits does so under the link's deadline: the per-
 * command timeout from link_open's options, or an absolute deadline the
 * caller sets with link_set_deadline (the parallel login).  A link that
 * failed once (I/O error, timeout, a reply out of protocol) stays failed:
 * link_ok() is false and every call fails fast until link_free.
 */
#ifndef SDPS_LINK_H
#define SDPS_LINK_H

#include <sys/types.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/config.h"
#include "sdps/store.h"

#define LINK_PROTO_VERSION	1
#define LINK_LINE_MAX		16384	/* a command line */
#define LINK_REPLY_MAX		65536	/* a reply line (XLIST) */
#define LINK_IDS_PER_LINE	64	/* RD and DELE */

struct link;
struct tls_client;

struct link_opts {
	const struct config_punt *punt;	/* name, address, server_name */
	struct tls_client *tls;		/* tls_client_new(punt) */
	unsigned	 timeout_ms;	/* per command; also TCP_USER_TIMEOUT */
	unsigned	 connect_timeout_ms; /* connect + TLS + greeting + CAPA */
	volatile sig_atomic_t *kill;	/* stop waiting when set (or NULL) */
};

/*
 * Start a link: a non-blocking connect(2), nothing waited for, so a
 * caller can start every punt's link and then finish them in turn under
 * one deadline.  NULL with err set when it failed at once.
 */
struct link *link_start(const struct link_opts *o, char *err, size_t errlen);

/*
 * Finish what link_start began, by deadline_us (util_now_us clock): the
 * connect, the TLS 1.3 handshake (the punt's certificate checked against
 * the punt's ca and server_name), the greeting (the punt's name must be
 * punt->name) and CAPA (SDPS-PUNT must be LINK_PROTO_VERSION).  0, or -1
 * with err set and the link failed.
 */
int	link_finish(struct link *l, uint64_t deadline_us, char *err,
	    size_t errlen);

/*
 * The TCP connect alone, by deadline_us: 0 once connected (link_finish
 * then goes on from the handshake), or -1 with err set and the link
 * failed.  The parallel login bounds each punt's connect by the one
 * connect deadline and the handshake and replies by a later one, so a
 * punt whose SYNs are dropped costs the others nothing.
 */
int	link_connect_wait(struct link *l, uint64_t deadline_us, char *err,
	    size_t errlen);

/*
 * link_finish for n links at once (the parallel login): their TCP
 * connects by connect_deadline_us and their TLS handshakes by
 * deadline_us, all in one poll loop, then each one's greeting and CAPA
 * (CAPA is sent the moment a handshake ends, so those round trips
 * overlap too).  fn (may be NULL) is told of each link the moment it is
 * ready, with args[i] (the parallel login sends SELECT then, while the
 * others are still being made).  A link that fails is failed
 * (link_error says why) and costs the others nothing; NULL entries and
 * links already finished are passed over.  Returns how many are ready.
 */
typedef void link_ready_fn(struct link *l, void *arg);
int	link_finish_all(struct link **v, int n, uint64_t connect_deadline_us,
	    uint64_t deadline_us, link_ready_fn *fn, void **args);

/* link_start + link_finish with the connect timeout (sdps-ctl). */
struct link *link_open(const struct link_opts *o, char *err, size_t errlen);

void	link_free(struct link *l);	/* NULL is fine; closes at once */

bool	link_ok(const struct link *l);	/* finished, and never failed */
/* Readable or closed with no reply outstanding: the punt ended an idle
 * link (its idle_timeout) or died.  Cheap (poll with no wait). */
bool	link_stale(struct link *l);
uint64_t link_uid(const struct link *l);	/* from the greeting */
uint64_t link_rtt_us(const struct link *l);	/* last measured */
const char *link_error(const struct link *l);	/* why it failed, or "" */

/* An absolute deadline for the next waits (0: back to the per-command
 * timeout).  Once it has passed, what the punt already sent is still
 * read (a wait of at most 1 ms), so one slow punt in a parallel login
 * does not fail the others whose replies are already here. */
void	link_set_deadline(struct link *l, uint64_t deadline_us);

/* Queue a command line (CRLF added); sent by link_flush or the next
 * wait.  -1 if the link failed or the line is over LINK_LINE_MAX. */
int	link_send(struct link *l, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
int	link_flush(struct link *l);

/*
 * Read one reply line.  STORE_OK for +OK (*text: the rest of the line,
 * valid until the next call), else the code mapped: [IN-USE] STORE_BUSY,
 * [GONE] STORE_GONE, [SYS/PERM] STORE_PERMFAIL, [SYS/TEMP] and every
 * link failure STORE_TEMPFAIL ([PROTO] fails the link).
 */
enum store_res link_reply(struct link *l, char **text);

/* link_send + link_flush + link_reply. */
enum store_res link_cmd(struct link *l, char **text, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

/* The next line of a multi-line reply (unstuffed): 1 with *line and
 * *len, 0 at the terminating ".", -1 on failure. */
int	link_ml_line(struct link *l, char **line, size_t *len);

/* Counted data after "+OK N": read up to len of the octets left (never
 * past them): > 0, or -1 on failure.  link_data_left says how many are
 * still owed; link_data_skip reads and drops them. */
ssize_t	link_data_read(struct link *l, void *buf, size_t len);
uint64_t link_data_left(const struct link *l);
int	link_data_skip(struct link *l);
void	link_data_expect(struct link *l, uint64_t n); /* after "+OK N" */

/* Counted data the other way (DELIVER): octets from a buffer or from a
 * file at offset 0.  0 or -1. */
int	link_write(struct link *l, const void *buf, size_t len);
int	link_send_file(struct link *l, int fd, uint64_t len);

#endif
