/*
 * puntsrv_data: the punt server's DELIVER (a message stored through the
 * link, durable before "+OK") and the read-only admin commands XLS and
 * XREC (sdps-ctl spool ls and show through the link).
 */
#include <sys/types.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/config.h"
#include "sdps/conn.h"
#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/xtext.h"

#include "puntsrv_int.h"

#define PS_DATA_CHUNK	(64 * 1024)

/*
 * The stored wire format, checked as it arrives (store_put trusts its
 * caller): CRLF line ends only, no NUL, dot-stuffed (a line starting
 * with "." starts with ".."), ending in CRLF.  dots counts the stuffing,
 * so N - dots is the POP3 size the front end claimed.
 */
struct ps_wcheck {
	bool		 bol, cr, dot, bad;
	uint64_t	 dots;
};

static void
wcheck_feed(struct ps_wcheck *k, const unsigned char *p, size_t n)
{
	size_t	 i;

	for (i = 0; i < n && !k->bad; i++) {
		if (k->cr) {
			k->bad = p[i] != '\n';
			k->cr = false;
			k->bol = true;
		} else if (k->dot) {
			k->bad = p[i] != '.';
			k->dot = false;
		} else if (p[i] == '\r')
			k->cr = true;
		else if (p[i] == '\n' || p[i] == '\0')
			k->bad = true;
		else if (k->bol && p[i] == '.') {
			k->dots++;
			k->dot = true;
			k->bol = false;
		} else
			k->bol = false;
	}
}

static char	ps_data[PS_DATA_CHUNK];

/* Read and drop n octets: the link stays in step after a refusal. */
static int
ps_drain(struct psrv *ps, uint64_t n)
{
	enum conn_res	 r;
	size_t		 got;

	while (n > 0) {
		r = conn_read_data(ps->c, ps_data, n < sizeof(ps_data) ?
		    (size_t)n : sizeof(ps_data), &got);
		if (r != CONN_OK) {
			ps->drop_why = conn_res_name(r);
			return -1;
		}
		n -= got;
	}
	return 0;
}

/* The envelope of a DELIVER line. */
struct ps_env {
	char		 host[UTIL_HOST_MAX + 1];
	char		 sender[UTIL_SENDER_MAX + 1];
	char		 rbuf[PS_RCPT_MAX][UTIL_USER_MAX + 1];
	const char	*rcpts[PS_RCPT_MAX];
	size_t		 nrcpts;
	uint64_t	 body;
};

static struct ps_env	ps_env;

/* Check a DELIVER line into e: NULL, or the refusal (code and text). */
static const char *
deliver_check(struct psrv *ps, int argc, char **argv, uint64_t n,
    struct ps_env *e)
{
	uint64_t	 max = ps->w->cf->max_message_octets;
	int		 i;
	size_t		 j;

	if (argc < 5 || argc > PS_ARGS_MAX)
		return "[PROTO] DELIVER host sender N body_octets rcpt ...";
	if (util_host_normalize(argv[0], e->host) == -1)
		return "[PROTO] bad host name";
	if (strcmp(argv[1], "<>") == 0)
		e->sender[0] = '\0';
	else if (xtext_decode(argv[1]) == -1 ||
	    util_sender_normalize(argv[1], e->sender) == -1)
		return "[PROTO] bad sender";
	if (ps_id(argv[3], &e->body) == -1 || e->body > n || n == 0)
		return "[PROTO] bad counts";
	if (max > 0 && e->body > max)
		return "[SYS/PERM] message too large";
	e->nrcpts = 0;
	for (i = 4; i < argc; i++) {
		if (xtext_decode(argv[i]) == -1 ||
		    util_user_normalize(argv[i], e->rbuf[e->nrcpts]) == -1)
			return "[PROTO] bad recipient";
		for (j = 0; j < e->nrcpts; j++)
			if (strcmp(e->rbuf[j], e->rbuf[e->nrcpts]) == 0)
				break;
		if (j == e->nrcpts) {
			e->rcpts[e->nrcpts] = e->rbuf[e->nrcpts];
			e->nrcpts++;
		}
	}
	if (ps->st == NULL)
		return "[SYS/TEMP] punt unavailable";
	return NULL;
}

/* The n octets into fd (a tmp file), checked; -1 if the link failed. */
static int
deliver_read(struct psrv *ps, int fd, uint64_t n, struct ps_wcheck *k,
    int *werr)
{
	enum conn_res	 r;
	size_t		 got;

	*werr = 0;
	k->bol = true;
	while (n > 0) {
		r = conn_read_data(ps->c, ps_data, n < sizeof(ps_data) ?
		    (size_t)n : sizeof(ps_data), &got);
		if (r != CONN_OK) {
			ps->drop_why = conn_res_name(r);
			return -1;
		}
		n -= got;
		wcheck_feed(k, (unsigned char *)ps_data, got);
		/* After a write error the rest is only drained. */
		if (*werr == 0 && util_write_all(fd, ps_data, got) == -1)
			*werr = errno;
	}
	return 0;
}

/* Store the tmp file at path: the reply.  path is gone afterwards. */
static int
deliver_store(struct psrv *ps, struct ps_env *e, const char *path, int fd,
    uint64_t n)
{
	struct store_envelope	 env;
	enum store_via		 via;
	enum store_res		 r;
	uint64_t		 id;
	char			 err[256];

	env.host = e->host;
	env.sender = e->sender;
	env.rcpts = e->rcpts;
	env.nrcpts = e->nrcpts;
	err[0] = '\0';
	if (fsync(fd) == -1) {
		log_warn("puntsrv: deliver: fsync %s", path);
		r = STORE_TEMPFAIL;
		snprintf(err, sizeof(err), "fsync: %s", strerror(errno));
	} else
		/* last: the tmp file itself is renamed into the spool. */
		r = store_put_file(ps->st, &env, path, fd, n, e->body, true,
		    &id, &via, err, sizeof(err));
	(void)unlink(path);	/* gone already after a rename */
	if (r != STORE_OK) {
		ps_log(ps, "event=deliver-failed host=%s octets=%" PRIu64
		    " why=\"%s\"", e->host, n, err);
		return ps_reply(ps, "-ERR [%s] %s", r == STORE_PERMFAIL ?
		    "SYS/PERM" : "SYS/TEMP", err[0] != '\0' ? err :
		    "storage failure");
	}
	ps->n_deliver++;
	ps_log(ps, "event=deliver host=%s id=%" PRIu64 " octets=%" PRIu64
	    " rcpts=%zu", e->host, id, e->body, e->nrcpts);
	return ps_reply(ps, "+OK %" PRIu64, id);
}

/*
 * DELIVER host sender N body_octets rcpt ...: the N octets follow the
 * line at once and are always read before the answer (the link stays in
 * step), except when N cannot be read at all or is absurd (more than
 * twice max_message_octets: stuffing at most doubles a message): then
 * the link is closed after the answer, unread.
 */
int
ps_cmd_deliver(struct psrv *ps, int argc, char **argv)
{
	struct ps_env	*e = &ps_env;
	struct ps_wcheck k;
	uint64_t	 n, max = ps->w->cf->max_message_octets;
	const char	*why;
	char		 path[PATH_MAX];
	int		 fd, werr;

	if (argc < 3 || ps_id(argv[2], &n) == -1) {
		ps->drop_why = "deliver-unframed";
		(void)ps_proto(ps, "DELIVER without a count");
		return -1;
	}
	if (max > 0 && max < UINT64_MAX / 4 && n > 2 * max + 2) {
		ps->drop_why = "deliver-absurd";
		ps_log(ps, "event=deliver-refused octets=%" PRIu64 " why=\"%s\"",
		    n, "count over twice max_message_octets");
		(void)ps_reply(ps, "-ERR [SYS/PERM] message too large");
		return -1;
	}
	if ((why = deliver_check(ps, argc, argv, n, e)) != NULL) {
		if (ps_drain(ps, n) == -1)
			return -1;
		ps_log(ps, "event=deliver-refused octets=%" PRIu64 " why=\"%s\"",
		    n, why);
		return ps_reply(ps, "-ERR %s", why);
	}
	if ((fd = store_tmp_open(ps->st, path, sizeof(path))) == -1) {
		log_warn("puntsrv: deliver: tmp file");
		if (ps_drain(ps, n) == -1)
			return -1;
		return ps_reply(ps, "-ERR [SYS/TEMP] cannot create a file");
	}
	memset(&k, 0, sizeof(k));
	if (deliver_read(ps, fd, n, &k, &werr) == -1) {
		(void)unlink(path);
		close(fd);
		ps_log(ps, "event=deliver-aborted host=%s octets=%" PRIu64
		    " how=%s", e->host, n, ps->drop_why);
		return -1;
	}
	if (werr != 0 || k.bad || k.cr || k.dot || !k.bol ||
	    n - k.dots != e->body) {
		(void)unlink(path);
		close(fd);
		ps_log(ps, "event=deliver-refused octets=%" PRIu64 " why=\"%s\"",
		    n, werr != 0 ? strerror(werr) : "data not in wire format "
		    "or not matching its counts");
		if (werr != 0)
			return ps_reply(ps, "-ERR [SYS/TEMP] write failed");
		return ps_reply(ps, "-ERR [PROTO] data not in wire format or "
		    "not matching its counts");
	}
	werr = deliver_store(ps, e, path, fd, n);
	close(fd);
	return werr;
}

/* ------------------------------------------------------------- admin */

/* "id arrival_us octets stored_octets flags claim_us host agent sender
 * rcpt ..." (docs/punt-protocol.md §4 XLS). */
static int
xrec_line(struct ps_buf *b, const struct store_msg *m)
{
	char	 num[160];
	size_t	 i;
	int	 k;

	k = snprintf(num, sizeof(num), "%" PRIu64 " %" PRIu64 " %" PRIu64
	    " %" PRIu64 " %" PRIu32 " %" PRIu64 " %s", m->id, m->arrival_us,
	    m->octets, m->stored_octets, m->flags, m->claim_us, m->host);
	if (k < 0 || (size_t)k >= sizeof(num) ||
	    ps_buf_add(b, num, (size_t)k) == -1)
		return -1;
	if (m->agent[0] == '\0' ? ps_buf_add(b, " -", 2) == -1 :
	    ps_buf_xtext(b, m->agent, false) == -1)
		return -1;
	if (ps_buf_xtext(b, m->sender, true) == -1)
		return -1;
	for (i = 0; i < m->nrcpts; i++)
		if (ps_buf_xtext(b, m->rcpts[i], false) == -1)
			return -1;
	return 0;
}

struct xls {
	struct ps_buf	 b;
	uint64_t	 n;
	bool		 nomem;
};

/* Inside the walk's read transaction: copy only (store.h). */
static int
xls_one(const struct store_msg *m, void *arg)
{
	struct xls	*x = arg;

	if (xrec_line(&x->b, m) == -1 || ps_buf_add(&x->b, "\n", 1) == -1) {
		x->nomem = true;
		return 1;
	}
	x->n++;
	return 0;
}

int
ps_cmd_xls(struct psrv *ps, int argc, char **argv)
{
	struct xls	 x;
	char		 host[UTIL_HOST_MAX + 1];
	int		 rc;

	if (argc == 1 && util_host_normalize(argv[0], host) == -1)
		return ps_proto(ps, "XLS [host]");
	if (ps->st == NULL)
		return ps_reply(ps, "-ERR [SYS/TEMP] punt unavailable");
	memset(&x, 0, sizeof(x));
	/* Gathered first, so no read transaction waits on the network. */
	if (store_walk(ps->st, argc == 1 ? host : NULL, xls_one, &x) == -1 ||
	    x.nomem) {
		free(x.b.p);
		return ps_reply(ps, "-ERR [SYS/TEMP] cannot walk the index");
	}
	rc = ps_reply(ps, "+OK %" PRIu64 " messages", x.n);
	if (rc == 0 && x.b.len > 0)
		rc = conn_ml_text(ps->c, x.b.p, x.b.len);
	if (rc == 0)
		rc = conn_ml_end(ps->c);
	free(x.b.p);
	return rc;
}

int
ps_cmd_xrec(struct psrv *ps, int argc, char **argv)
{
	struct store_msg m;
	struct ps_buf	 b = { NULL, 0, 0 };
	enum store_res	 r;
	uint64_t	 id;
	int		 rc;

	(void)argc;
	if (ps_id(argv[0], &id) == -1)
		return ps_proto(ps, "XREC id");
	if (ps->st == NULL)
		return ps_reply(ps, "-ERR [SYS/TEMP] punt unavailable");
	memset(&m, 0, sizeof(m));
	if ((r = store_msg_get(ps->st, id, &m)) != STORE_OK)
		return ps_store_err(ps, r, "read");
	if (ps_buf_add(&b, "+OK ", 4) == -1 || xrec_line(&b, &m) == -1 ||
	    ps_buf_add(&b, "\r\n", 2) == -1)
		rc = ps_reply(ps, "-ERR [SYS/TEMP] out of memory");
	else
		rc = conn_write(ps->c, b.p, b.len);
	store_msg_free(&m);
	free(b.p);
	return rc;
}
