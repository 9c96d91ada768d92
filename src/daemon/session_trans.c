/*
 * session_trans: the TRANSACTION state of a POP3 session (docs/design.md
 * §2, §4): STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP and *ENV over the
 * login's snapshot, the message-number parser, the notice sent for a
 * message SMTP took meanwhile, and the TOP cutter.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/log.h"
#include "sdps/conn.h"
#include "sdps/maildrop.h"
#include "sdps/punt.h"
#include "sdps/session.h"
#include "sdps/slot.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/wire.h"
#include "session_int.h"

#define TOP_CHUNK	65536
/* A remote punt's body is relayed this much at a time (a stack buffer). */
#define RELAY_CHUNK	16384
#define DATE_MAX	64

/* The envelope of m in its punt's arena: sender, then recipients. */
static const char *
msg_sender(const struct session *s, const struct s_msg *m)
{
	return maildrop_sender(s->md, maildrop_msg(s->md,
	    (size_t)(m - s->msgs)));
}

/* The recipients of m this maildrop may see (maildrop_rcpt_next). */
static const char *
msg_rcpt_next(const struct session *s, const struct s_msg *m,
    const char *prev)
{
	return maildrop_rcpt_next(s->md, maildrop_msg(s->md,
	    (size_t)(m - s->msgs)), prev);
}

static struct punt *
msg_punt(const struct session *s, const struct s_msg *m)
{
	return maildrop_punt(s->md, m->sp);
}
/*
 * The one place a message number is parsed (docs/design.md §2.3): each way it
 * can be wrong gets its own reason.  0 with *idx set, or -1 with the
 * -ERR already sent.
 */
static int
session_msn(struct session *s, const char *arg, size_t *idx)
{
	const char	*p;
	uint64_t	 msn = 0;
	unsigned	 d;

	if (arg[0] == '+' || arg[0] == '-') {
		session_err(s, NULL, "message number must not have a sign");
		return -1;
	}
	for (p = arg; *p != '\0'; p++) {
		if (*p < '0' || *p > '9') {
			session_err(s, NULL, "message number must be digits");
			return -1;
		}
		d = (unsigned)(*p - '0');
		if (msn > (UINT64_MAX - d) / 10) {
			session_err(s, NULL, "message number too large");
			return -1;
		}
		msn = msn * 10 + d;
	}
	if (p == arg) {
		session_err(s, NULL, "message number missing");
		return -1;
	}
	if (msn == 0) {
		session_err(s, NULL, "no message 0: numbers start at 1");
		return -1;
	}
	if (msn > s->nmsgs) {
		session_err(s, NULL,
		    "no message %" PRIu64 ": only %zu in maildrop",
		    msn, s->nmsgs);
		return -1;
	}
	if (s->msgs[msn - 1].deleted) {
		session_err(s, NULL, "message %" PRIu64 " already deleted",
		    msn);
		return -1;
	}
	*idx = (size_t)(msn - 1);
	return 0;
}
/* ---- TRANSACTION ---- */

enum cmd_res
cmd_stat(struct session *s, struct conn_args *a)
{
	uint64_t	 octets = 0;
	size_t		 i, count = 0;

	(void)a;
	for (i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted) {
			count++;
			octets += s->msgs[i].octets;
		}
	return session_ok(s, "%zu %" PRIu64, count, octets);
}

enum cmd_res
cmd_list(struct session *s, struct conn_args *a)
{
	uint64_t	 octets = 0;
	size_t		 i, idx, count = 0;

	if (a->argc == 1) {
		if (session_msn(s, a->argv[0], &idx) == -1)
			return CMD_BAD;
		return session_ok(s, "%zu %" PRIu64, idx + 1,
		    s->msgs[idx].octets);
	}
	for (i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted) {
			count++;
			octets += s->msgs[i].octets;
		}
	/*
	 * Corked, and uncorked at the end: a long listing's last partial
	 * segment would otherwise wait for the client's delayed ACK under
	 * Nagle (40 ms for a 50,000-message LIST, docs/design.md §18.3).
	 */
	conn_cork(s->c, true);
	session_ok(s, "%zu messages (%" PRIu64 " octets)", count, octets);
	for (i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted)
			conn_printf(s->c, "%zu %" PRIu64 "\r\n", i + 1,
			    s->msgs[i].octets);
	conn_ml_end(s->c);
	conn_cork(s->c, false);
	return CMD_REPLIED;
}

enum cmd_res
cmd_uidl(struct session *s, struct conn_args *a)
{
	char		 uidl[STORE_UIDL_MAX];
	struct s_msg	*m;
	size_t		 i, idx;

	if (a->argc == 1) {
		if (session_msn(s, a->argv[0], &idx) == -1)
			return CMD_BAD;
		m = &s->msgs[idx];
		punt_uidl(msg_punt(s, m), m->id, uidl);
		return session_ok(s, "%zu %s", idx + 1, uidl);
	}
	conn_cork(s->c, true);	/* as LIST */
	session_ok(s, "unique-id listing follows");
	for (i = 0; i < s->nmsgs; i++) {
		m = &s->msgs[i];
		if (m->deleted)
			continue;
		punt_uidl(msg_punt(s, m), m->id, uidl);
		conn_printf(s->c, "%zu %s\r\n", i + 1, uidl);
	}
	conn_ml_end(s->c);
	conn_cork(s->c, false);
	return CMD_REPLIED;
}

enum cmd_res
cmd_dele(struct session *s, struct conn_args *a)
{
	size_t	 idx;

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	s->msgs[idx].deleted = true;
	s->n_dele++;
	return session_ok(s, "message %zu deleted", idx + 1);
}

enum cmd_res
cmd_noop(struct session *s, struct conn_args *a)
{
	(void)s;
	(void)a;
	return CMD_OK;
}

enum cmd_res
cmd_rset(struct session *s, struct conn_args *a)
{
	uint64_t	 octets = 0;
	size_t		 i;

	(void)a;
	/* RD stays: the message was read, whatever is deleted. */
	for (i = 0; i < s->nmsgs; i++) {
		s->msgs[i].deleted = false;
		octets += s->msgs[i].octets;
	}
	return session_ok(s, "maildrop has %zu messages (%" PRIu64 " octets)",
	    s->nmsgs, octets);
}

/*
 * Open m's body: the stored file (b->fd, the local punt) or the punt's
 * stream (b->fd -1, a remote punt: for TOP, already cut at the punt).
 * lines < 0: the whole body (RETR).  0 with b open, 1 if SMTP (or
 * anyone) removed it, or -1 with the -ERR sent and *res what the handler
 * returns.
 */
static int
msg_open(struct session *s, const struct s_msg *m, int64_t lines,
    struct punt_body *b, enum cmd_res *res)
{
	struct punt	*sp = msg_punt(s, m);
	enum store_res	 r;

	if (lines < 0)
		r = punt_open_body(sp, m->id, 0, b, NULL);
	else
		r = punt_open_top(sp, m->id, (uint64_t)lines, b);
	if (r == STORE_OK)
		return 0;
	/*
	 * The punt's health was checked at login (puntset_get); it is
	 * checked again only when a body cannot be had, not before every
	 * RETR (3 syscalls a message, 19 % of a fetch session's): a spool
	 * that went away since then must read as "unavailable", not as a
	 * message that SMTP removed (GONE, the dummy).  A remote punt whose
	 * link failed in this session stays unhealthy until its end.
	 */
	if (!punt_health(sp)) {
		*res = session_err(s, "SYS/TEMP",
		    "spool %s unavailable, try later", punt_name(sp));
		return -1;
	}
	switch (r) {
	case STORE_OK:
		break;
	case STORE_GONE:
		return 1;
	case STORE_BUSY:
	case STORE_TEMPFAIL:
		break;
	case STORE_PERMFAIL:
		*res = session_err(s, "SYS/PERM", "message unreadable");
		return -1;
	}
	*res = session_err(s, "SYS/TEMP", "message unavailable, try later");
	return -1;
}

/*
 * A remote punt's stream relayed through one fixed buffer (never the
 * whole message in memory).  The stored data is already CRLF and
 * dot-stuffed.  0, or -1: the punt's link or the client failed mid-
 * reply, and the session must end without another word (a truncated
 * message must never look complete).  *last is the last octet sent.
 */
static int
relay_stream(struct session *s, struct punt_body *b, char *last)
{
	char		 buf[RELAY_CHUNK];
	ssize_t		 n;

	while ((n = punt_body_read(b, buf, sizeof(buf))) > 0) {
		*last = buf[n - 1];
		if (conn_write(s->c, buf, (size_t)n) == -1)
			return -1;
	}
	if (n == -1) {
		log_warnx("sid=%016" PRIx64 " punt=%s event=relay-failed",
		    s->sid, punt_name(b->punt));
		return -1;
	}
	return 0;
}

/*
 * The message RETR and TOP send in place of one that SMTP delivered
 * while this session still listed it (docs/design.md §4.3).  RFC 1939 wants
 * LIST to give the exact size RETR will send, and clients (fetchmail)
 * compare the two, so the body is padded to the listed octets whenever
 * the notice fits in that size.  It is the same text every time within a
 * session (a client may match TOP against RETR), so its Date is the
 * login time and its Message-ID comes from the UIDL.  The text is
 * unstuffed, CRLF; *len is its size.  NULL if out of memory.
 */
static char *
dummy_build(struct session *s, const struct s_msg *m, size_t *len)
{
	const char	*sender = msg_sender(s, m);
	const char	*rcpt = msg_rcpt_next(s, m, NULL);
	char		 now[DATE_MAX], arr[DATE_MAX], uidl[STORE_UIDL_MAX];
	char		 me[256], to[UTIL_ADDR_MAX + 1], *buf, *p;
	size_t		 base, total, left, n;
	int		 rc;

	if (gethostname(me, sizeof(me)) == -1 || me[0] == '\0')
		snprintf(me, sizeof(me), "localhost");
	me[sizeof(me) - 1] = '\0';
	if (s->user[0] != '\0')
		snprintf(to, sizeof(to), "%s@%s", s->user, s->host);
	else if (rcpt != NULL)
		snprintf(to, sizeof(to), "%s@%s", rcpt, s->host);
	else
		snprintf(to, sizeof(to), "postmaster@%s", s->host);
	punt_uidl(msg_punt(s, m), m->id, uidl);
	util_rfc5322_date(s->login_us, now, sizeof(now));
	util_rfc5322_date(m->arrival_us, arr, sizeof(arr));
	rc = asprintf(&buf,
	    "Return-Path: <>\r\n"
	    "Date: %s\r\n"
	    "From: Mail Delivery System <postmaster@%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: Message already delivered by SMTP\r\n"
	    "Message-ID: <sdps-dummy.%s@%s>\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "Auto-Submitted: auto-generated\r\n"
	    "\r\n"
	    "The message %s from <%s>, which arrived %s,\r\n"
	    "was listed when this POP3 session began, but it has since\r\n"
	    "been delivered to you by SMTP and removed from the spool.\r\n"
	    "Nothing is lost; this notice stands in its place.\r\n",
	    now, me, to, uidl, me, uidl, sender, arr);
	if (rc < 0)
		return NULL;
	base = (size_t)rc;
	total = base;
	/* Padding lines cost 2..78 octets each; a remainder of 1 cannot
	 * be padded, nor can a listed size under the notice's own. */
	if (m->octets > base + 1 && m->octets - base < SIZE_MAX / 2)
		total = (size_t)m->octets;
	if (total > base) {
		if ((p = realloc(buf, total + 1)) == NULL) {
			free(buf);
			return NULL;
		}
		buf = p;
		p = buf + base;
		left = total - base;
		while (left > 0) {
			n = left > 78 ? (left - 78 == 1 ? 77 : 78) : left;
			memset(p, 'x', n - 2);
			if (n - 2 >= 8)
				memcpy(p, "padding ", 8);
			memcpy(p + n - 2, "\r\n", 2);
			p += n;
			left -= n;
		}
		*p = '\0';
	}
	*len = total;
	return buf;
}

/* Send the dummy for m, whole (RETR) or cut (TOP, lines >= 0). */
static enum cmd_res
send_dummy(struct session *s, const struct s_msg *m, bool top,
    uint64_t lines)
{
	struct wire_top	 t;
	char		*buf;
	size_t		 len;

	if ((buf = dummy_build(s, m, &len)) == NULL) {
		log_warn("session: dummy message");
		return CMD_SRVFAIL;
	}
	if (top) {
		wire_top_init(&t, lines);
		len = wire_top_feed(&t, buf, len);
		session_ok(s, "top of message follows");
	} else
		session_ok(s, "%zu octets", len);
	conn_ml_text(s->c, buf, len);
	conn_ml_end(s->c);
	free(buf);
	log_info("sid=%016" PRIx64 " event=dummy punt=%s id=%" PRIu64,
	    s->sid, punt_name(msg_punt(s, m)), m->id);
	return conn_werr(s->c) == CONN_OK ? CMD_REPLIED : CMD_IOFAIL;
}

enum cmd_res
cmd_retr(struct session *s, struct conn_args *a)
{
	struct punt_body b;
	struct s_msg	*m;
	struct stat	 sb;
	size_t		 idx;
	enum cmd_res	 res;
	int		 rc;
	char		 last = '\n';

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	m = &s->msgs[idx];
	if ((rc = msg_open(s, m, -1, &b, &res)) == -1)
		return res;
	if (rc == 1)
		return send_dummy(s, m, false, 0);
	if (b.fd != -1 && fstat(b.fd, &sb) == -1) {
		log_warn("session: fstat");
		punt_body_close(&b);
		return session_err(s, "SYS/TEMP",
		    "message unavailable, try later");
	}
	/* Only now, after the punt's +OK: the client's +OK. */
	conn_cork(s->c, true);
	session_ok(s, "%" PRIu64 " octets", m->octets);
	conn_printf(s->c, "Return-Path: <%s>\r\n", msg_sender(s, m));
	/* The stored file is already CRLF and dot-stuffed. */
	if (b.fd != -1)
		rc = conn_send_file(s->c, b.fd, 0, (size_t)sb.st_size);
	else
		rc = relay_stream(s, &b, &last);
	punt_body_close(&b);
	if (rc == -1)
		return CMD_IOFAIL;
	conn_ml_end(s->c);
	/*
	 * The cork stays on while the client's next command is already
	 * here: a pipelined batch of RETRs costs one TCP_CORK pair, not one
	 * per message.  conn takes it off before it waits for input.
	 */
	if (conn_flush(s->c) == -1 || conn_werr(s->c) != CONN_OK)
		return CMD_IOFAIL;
	/* Handed to the kernel in full: RD (docs/design.md §4.4). */
	m->read_now = true;
	s->n_retr++;
	if (s->w->sb != NULL)
		atomic_fetch_add(&s->w->sb->hdr->total_retrieved, 1);
	return CMD_REPLIED;
}

enum cmd_res
cmd_top(struct session *s, struct conn_args *a)
{
	struct wire_top	 t;
	struct punt_body b;
	struct s_msg	*m;
	char		*buf;
	uint64_t	 lines;
	ssize_t		 n;
	size_t		 idx, out;
	enum cmd_res	 res;
	int		 fd, rc;
	char		 last = '\n';

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	if (util_parse_u64(a->argv[1], UINT64_MAX, &lines) == -1)
		return session_err(s, NULL, "line count must be digits");
	m = &s->msgs[idx];
	if ((rc = msg_open(s, m, lines > INT64_MAX ? INT64_MAX :
	    (int64_t)lines, &b, &res)) == -1)
		return res;
	s->n_top++;
	if (rc == 1)
		return send_dummy(s, m, true, lines);
	if (b.fd == -1) {
		/* A remote punt cut it: relayed as it comes. */
		session_ok(s, "top of message follows");
		conn_printf(s->c, "Return-Path: <%s>\r\n", msg_sender(s, m));
		rc = relay_stream(s, &b, &last);
		punt_body_close(&b);
		if (rc == -1)
			return CMD_IOFAIL;
		if (last != '\n')
			conn_write(s->c, "\r\n", 2);
		conn_ml_end(s->c);
		return conn_werr(s->c) == CONN_OK ? CMD_REPLIED : CMD_IOFAIL;
	}
	fd = b.fd;
	if ((buf = malloc(TOP_CHUNK)) == NULL) {
		punt_body_close(&b);
		return CMD_SRVFAIL;
	}
	session_ok(s, "top of message follows");
	conn_printf(s->c, "Return-Path: <%s>\r\n", msg_sender(s, m));
	wire_top_init(&t, lines);
	while (!t.done) {
		if ((n = read(fd, buf, TOP_CHUNK)) == -1) {
			if (errno == EINTR)
				continue;
			/* Mid-reply: the only honest way out is to drop. */
			log_warn("session: top: read");
			free(buf);
			close(fd);
			return CMD_IOFAIL;
		}
		if (n == 0)
			break;
		out = wire_top_feed(&t, buf, (size_t)n);
		if (out > 0) {
			last = buf[out - 1];
			if (conn_write(s->c, buf, out) == -1)
				break;
		}
	}
	free(buf);
	close(fd);
	if (last != '\n')
		conn_write(s->c, "\r\n", 2);
	conn_ml_end(s->c);
	return conn_werr(s->c) == CONN_OK ? CMD_REPLIED : CMD_IOFAIL;
}

enum cmd_res
cmd_env(struct session *s, struct conn_args *a)
{
	char		 uidl[STORE_UIDL_MAX], date[DATE_MAX], line[512];
	const char	*sender, *rcpt;
	struct s_msg	*m;
	size_t		 idx;
	int		 n;

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	m = &s->msgs[idx];
	/*
	 * Always a multi-line +OK for a listed number, also after SMTP took
	 * the message: fetchmail never checks for -ERR here, so the answer
	 * comes from the snapshot.
	 */
	session_ok(s, "envelope follows");
	conn_ml_line(s->c, "RD",
	    (m->flags & STORE_F_READ) != 0 || m->read_now ? 2 : 0);
	punt_uidl(msg_punt(s, m), m->id, uidl);
	util_rfc5322_date(m->arrival_us, date, sizeof(date));
	n = snprintf(line, sizeof(line), "%s %s %s",
	    punt_name(msg_punt(s, m)), uidl, date);
	conn_ml_line(s->c, line, (size_t)n);
	sender = msg_sender(s, m);
	conn_ml_line(s->c, sender, strlen(sender));
	for (rcpt = msg_rcpt_next(s, m, NULL); rcpt != NULL;
	    rcpt = msg_rcpt_next(s, m, rcpt)) {
		n = snprintf(line, sizeof(line), "%s@%s", rcpt, s->host);
		if (n > 0 && (size_t)n < sizeof(line))
			conn_ml_line(s->c, line, (size_t)n);
	}
	conn_ml_end(s->c);
	return CMD_REPLIED;
}
