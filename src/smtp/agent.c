/* agent: push a host's spooled mail to its SMTP server (sdps-smtp). */

#include <sys/types.h>

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sdps/agent.h"
#include "sdps/bounce.h"
#include "sdps/conn.h"
#include "sdps/dsn.h"
#include "sdps/log.h"
#include "sdps/maildrop.h"
#include "sdps/puntset.h"
#include "sdps/store.h"
#include "sdps/util.h"

#define SMTP_TIMEOUT_S	300	/* RFC 5321 §4.5.3.2 asks for minutes */
#define REPLY_MAX	1024
/* Longer reply lines than RFC 5321 §4.5.3.1.5 allows (512) are read;
 * the text kept is REPLY_MAX. */
#define SMTP_LINE_MAX	8192

struct smtp {
	struct conn	*c;
	bool		 pipelining, size;
	char		 peer[CONFIG_ADDR_MAX];
};

/* One queued message of the merged maildrop (maildrop.h order). */
struct item {
	struct store	*st;
	uint64_t	 id;
};

enum rcpt_fate { FATE_PENDING, FATE_OK, FATE_TEMP, FATE_PERM };

/*
 * The client side of conn: every line must come within SMTP_TIMEOUT_S of
 * asking for it and every send drain within it, as the socket timeouts
 * gave before.
 */
static int
smtp_connect(struct smtp *s, const char *target)
{
	if ((s->c = conn_connect(target, SMTP_TIMEOUT_S, SMTP_LINE_MAX,
	    SMTP_TIMEOUT_S, SMTP_TIMEOUT_S, NULL)) == NULL)
		return -1;
	snprintf(s->peer, sizeof(s->peer), "%s", target);
	return 0;
}

/* One reply line into line (truncated to len); 0, or -1 on I/O failure. */
static int
smtp_getline(struct smtp *s, char *line, size_t len)
{
	char	*p;
	size_t	 n;

	if (conn_read_line(s->c, &p, &n) != CONN_OK)
		return -1;
	snprintf(line, len, "%s", p);
	return 0;
}

/*
 * Read one (possibly multi-line) reply.  Returns the code, or -1 when the
 * connection failed.  text gets the last line; ehlo (may be NULL) is
 * called for every line's text so EHLO keywords can be noted.
 */
static int
smtp_reply(struct smtp *s, char *text, size_t len,
    void (*ehlo)(struct smtp *, const char *))
{
	char	 line[REPLY_MAX];

	for (;;) {
		if (smtp_getline(s, line, sizeof(line)) == -1)
			return -1;
		if (strlen(line) < 3 || line[0] < '2' || line[0] > '5')
			return -1;
		if (ehlo != NULL && strlen(line) > 4)
			ehlo(s, line + 4);
		if (line[3] != '-') {
			snprintf(text, len, "%s", line);
			return atoi(line);
		}
	}
}

static void
note_ehlo(struct smtp *s, const char *kw)
{
	if (strcasecmp(kw, "PIPELINING") == 0)
		s->pipelining = true;
	else if (strncasecmp(kw, "SIZE", 4) == 0 &&
	    (kw[4] == '\0' || kw[4] == ' '))
		s->size = true;
}

static int smtp_send(struct smtp *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static int
smtp_send(struct smtp *s, const char *fmt, ...)
{
	char	 buf[2 * UTIL_ADDR_MAX + 64];
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -1;
	return conn_write(s->c, buf, (size_t)n);
}

static int
smtp_hello(struct smtp *s)
{
	char	 text[REPLY_MAX], me[256];

	if (gethostname(me, sizeof(me)) == -1)
		snprintf(me, sizeof(me), "localhost");
	me[sizeof(me) - 1] = '\0';
	if (smtp_reply(s, text, sizeof(text), NULL) != 220) {
		log_warnx("smtp %s: greeting: %s", s->peer, text);
		return -1;
	}
	if (smtp_send(s, "EHLO %s\r\n", me) == -1 ||
	    smtp_reply(s, text, sizeof(text), note_ehlo) != 250) {
		/* RFC 5321 §3.2: fall back to HELO for an old server. */
		s->pipelining = s->size = false;
		if (smtp_send(s, "HELO %s\r\n", me) == -1 ||
		    smtp_reply(s, text, sizeof(text), NULL) != 250) {
			log_warnx("smtp %s: EHLO/HELO: %s", s->peer, text);
			return -1;
		}
	}
	return 0;
}

/* The stored body (already CRLF and dot-stuffed) and the final dot. */
static int
send_file(struct smtp *s, int fd, uint64_t len)
{
	if (len > 0 && conn_send_file(s->c, fd, 0, (size_t)len) == -1)
		return -1;
	return conn_write(s->c, ".\r\n", 3);
}

static enum rcpt_fate
fate_of(int code)
{
	if (code >= 200 && code < 300)
		return FATE_OK;
	if (code >= 500)
		return FATE_PERM;
	return FATE_TEMP;
}

/* One transaction's state while its envelope goes out (transact). */
struct txn {
	const struct store_msg	*m;
	enum rcpt_fate		*fates;
	char			(*diag)[REPLY_MAX];
	char			 text[REPLY_MAX];	/* the last reply */
	int			 mail;		/* the reply to MAIL */
	int			 code;		/* the reply to DATA */
	size_t			 accepted;	/* recipients taken */
};

/* How the envelope ended: what transact does next. */
enum env_res {
	ENV_IOFAIL = -1,	/* the connection broke */
	ENV_DATA,		/* t->code is the reply to DATA */
	ENV_RSET,		/* nothing to send: reset */
	ENV_MAIL_FAILED		/* MAIL refused (t->mail): all fail */
};

/* Every recipient, or only those still FATE_OK, gets the fate of code
 * with the last reply as its diagnostic. */
static void
txn_fail(struct txn *t, int code, bool only_ok)
{
	size_t	 i;

	for (i = 0; i < t->m->nrcpts; i++) {
		if (only_ok && t->fates[i] != FATE_OK)
			continue;
		t->fates[i] = fate_of(code);
		snprintf(t->diag[i], REPLY_MAX, "%s", t->text);
	}
}

/* Without PIPELINING: each command waits for its reply. */
static enum env_res
envelope_serial(struct smtp *s, struct txn *t)
{
	const struct store_msg *m = t->m;
	size_t	 i;
	int	 code;

	if ((t->mail = smtp_reply(s, t->text, REPLY_MAX, NULL)) != 250)
		return t->mail == -1 ? ENV_IOFAIL : ENV_MAIL_FAILED;
	for (i = 0; i < m->nrcpts; i++) {
		if (smtp_send(s, "RCPT TO:<%s@%s>\r\n", m->rcpts[i], m->host)
		    == -1)
			return ENV_IOFAIL;
		if ((code = smtp_reply(s, t->text, REPLY_MAX, NULL)) == -1)
			return ENV_IOFAIL;
		t->fates[i] = fate_of(code);
		snprintf(t->diag[i], REPLY_MAX, "%s", t->text);
		t->accepted += t->fates[i] == FATE_OK;
	}
	if (t->accepted == 0)
		return ENV_RSET;
	if (smtp_send(s, "DATA\r\n") == -1 ||
	    (t->code = smtp_reply(s, t->text, REPLY_MAX, NULL)) == -1)
		return ENV_IOFAIL;
	return ENV_DATA;
}

/* RFC 2920: the whole group goes out, replies come in order. */
static enum env_res
envelope_pipelined(struct smtp *s, struct txn *t)
{
	const struct store_msg *m = t->m;
	size_t	 i;
	int	 code;

	for (i = 0; i < m->nrcpts; i++)
		if (smtp_send(s, "RCPT TO:<%s@%s>\r\n", m->rcpts[i], m->host)
		    == -1)
			return ENV_IOFAIL;
	if (smtp_send(s, "DATA\r\n") == -1 ||
	    (t->mail = smtp_reply(s, t->text, REPLY_MAX, NULL)) == -1)
		return ENV_IOFAIL;
	for (i = 0; i < m->nrcpts; i++) {
		if ((code = smtp_reply(s, t->diag[i], REPLY_MAX, NULL)) == -1)
			return ENV_IOFAIL;
		t->fates[i] = t->mail == 250 ? fate_of(code) : FATE_PENDING;
		t->accepted += t->fates[i] == FATE_OK;
	}
	if ((t->code = smtp_reply(s, t->text, REPLY_MAX, NULL)) == -1)
		return ENV_IOFAIL;
	if (t->mail != 250) {
		if (t->code == 354 && (send_file(s, -1, 0) == -1 ||
		    smtp_reply(s, t->text, REPLY_MAX, NULL) == -1))
			return ENV_IOFAIL;
		return ENV_MAIL_FAILED;
	}
	if (t->code == 354 && t->accepted == 0) {
		/* A server that says 354 with no recipient gets an
		 * empty message it will refuse. */
		if (conn_write(s->c, ".\r\n", 3) == -1 ||
		    smtp_reply(s, t->text, REPLY_MAX, NULL) == -1)
			return ENV_IOFAIL;
		return ENV_RSET;
	}
	return ENV_DATA;
}

/*
 * One SMTP transaction for m.  fates[i] ends as FATE_OK, FATE_TEMP or FATE_PERM
 * for each recipient, diag[i] holding the server's text for failures.
 * Returns -1 when the connection broke.
 */
static int
transact(struct smtp *s, const struct store_msg *m, int fd,
    enum rcpt_fate *fates, char (*diag)[REPLY_MAX])
{
	struct txn	 t;
	enum env_res	 r;
	char		 size[32] = "";

	memset(&t, 0, sizeof(t));
	t.m = m;
	t.fates = fates;
	t.diag = diag;
	if (s->size)
		snprintf(size, sizeof(size), " SIZE=%llu",
		    (unsigned long long)m->stored_octets);
	if (smtp_send(s, "MAIL FROM:<%s>%s\r\n", m->sender, size) == -1)
		return -1;
	r = s->pipelining ? envelope_pipelined(s, &t) :
	    envelope_serial(s, &t);
	if (r == ENV_IOFAIL)
		return -1;
	if (r == ENV_MAIL_FAILED)
		txn_fail(&t, t.mail, false);
	else if (r == ENV_DATA && t.accepted > 0 && t.code != 354)
		txn_fail(&t, t.code, true);
	else if (r == ENV_DATA && t.accepted > 0) {
		if (send_file(s, fd, m->stored_octets) == -1 ||
		    (t.code = smtp_reply(s, t.text, REPLY_MAX, NULL)) == -1)
			return -1;
		if (t.code != 250)
			txn_fail(&t, t.code, true);
		return 0;
	}
	if (smtp_send(s, "RSET\r\n") == -1 ||
	    smtp_reply(s, t.text, REPLY_MAX, NULL) == -1)
		return -1;
	return 0;
}

/* Bounce the permanently failed recipients; a failed bounce defers them. */
static void
bounce_failed(const struct config *cf, struct store *st,
    const struct store_msg *m, enum rcpt_fate *fates,
    char (*diag)[REPLY_MAX])
{
	struct dsn_rcpt	*r;
	char		**addrs;
	size_t		 i, n = 0;

	for (i = 0; i < m->nrcpts; i++)
		if (fates[i] == FATE_PERM)
			break;
	if (i == m->nrcpts)
		return;		/* nothing failed for good */
	r = calloc(m->nrcpts, sizeof(*r));
	addrs = calloc(m->nrcpts, sizeof(*addrs));
	if (r == NULL || addrs == NULL)
		goto fail;
	for (i = 0; i < m->nrcpts; i++) {
		if (fates[i] != FATE_PERM)
			continue;
		if (asprintf(&addrs[n], "%s@%s", m->rcpts[i], m->host) == -1) {
			addrs[n] = NULL;
			goto fail;
		}
		r[n].addr = addrs[n];
		r[n].status = "5.0.0";
		r[n].diag = diag[i];
		n++;
	}
	if (bounce_msg(cf, st, m, r, n, "Your message could not be "
	    "delivered to the following recipients; the receiving server "
	    "refused it permanently.") == 0)
		goto out;
fail:
	log_warnx("smtp: %s:%llu: bounce failed, deferring", store_name(st),
	    (unsigned long long)m->id);
	for (i = 0; i < m->nrcpts; i++)
		if (fates[i] == FATE_PERM)
			fates[i] = FATE_TEMP;
out:
	if (addrs != NULL)
		for (i = 0; i < n; i++)
			free(addrs[i]);
	free(addrs);
	free(r);
}

/*
 * Settle a claimed message after its transaction.  When every recipient
 * is finished (delivered or bounced) it goes with store_done; otherwise
 * the finished recipients are removed one by one and the claim released,
 * so a later run only retries the ones that failed temporarily.
 */
static void
settle(struct store *st, const struct store_msg *m, const enum rcpt_fate *f,
    struct agent_stats *stats)
{
	size_t	 i, left = 0, perm = 0;

	for (i = 0; i < m->nrcpts; i++) {
		left += f[i] == FATE_TEMP || f[i] == FATE_PENDING;
		perm += f[i] == FATE_PERM;
	}
	if (perm > 0)
		stats->bounced++;
	if (left == 0) {
		if (store_done(st, m->id) == STORE_OK && perm == 0)
			stats->sent++;
		return;
	}
	for (i = 0; i < m->nrcpts; i++)
		if (f[i] == FATE_OK || f[i] == FATE_PERM)
			store_remove(st, &m->id, 1, m->rcpts[i]);
	store_release(st, m->id);
	stats->deferred++;
}

static bool
is_pop_deleted(struct store *st, uint64_t id)
{
	struct store_msg m;
	bool		 del;

	if (store_msg_get(st, id, &m) != STORE_OK)
		return false;
	del = (m.flags & STORE_F_POP_DELETED) != 0;
	store_msg_free(&m);
	return del;
}

/*
 * Nothing is left to retry or bounce for a message POP3 deleted: done if
 * the server took it all, else release, which removes it as well.
 */
static void
settle_pop_deleted(struct store *st, const struct store_msg *m,
    const enum rcpt_fate *f, struct agent_stats *stats)
{
	size_t	 i;

	for (i = 0; i < m->nrcpts; i++)
		if (f[i] != FATE_OK)
			break;
	if (i == m->nrcpts) {
		if (store_done(st, m->id) == STORE_OK)
			stats->sent++;
		return;
	}
	(void)store_release(st, m->id);
	stats->skipped++;
}

/* Claim, send and settle one message.  -1 when the connection broke. */
static int
deliver_one(const struct config *cf, struct smtp *s, const struct item *it,
    const char *agent, struct agent_stats *stats)
{
	struct store_msg  m;
	enum rcpt_fate	 *fates;
	char		(*diag)[REPLY_MAX];
	int		  fd, rc = 0;

	if (store_claim(it->st, it->id, agent) != STORE_OK) {
		stats->skipped++;	/* POP3 took it, or another agent */
		return 0;
	}
	if (store_msg_open(it->st, it->id, &fd, &m) != STORE_OK) {
		store_release(it->st, it->id);
		stats->deferred++;
		return 0;
	}
	fates = calloc(m.nrcpts, sizeof(*fates));
	diag = calloc(m.nrcpts, sizeof(*diag));
	if (fates == NULL || diag == NULL) {
		store_release(it->st, it->id);
		stats->deferred++;
	} else if ((rc = transact(s, &m, fd, fates, diag)) == -1) {
		log_warnx("smtp %s: connection lost at %s:%llu", s->peer,
		    store_name(it->st), (unsigned long long)it->id);
		store_release(it->st, it->id);
		stats->deferred++;
	} else {
		/*
		 * A POP3 QUIT deleted it while we held the claim: the
		 * customer has taken it, so a failure here is no news to
		 * the sender and gets no bounce; settling removes it
		 * (docs/design.md §4.2: it goes whatever the outcome).
		 */
		if (is_pop_deleted(it->st, it->id))
			settle_pop_deleted(it->st, &m, fates, stats);
		else {
			bounce_failed(cf, it->st, &m, fates, diag);
			settle(it->st, &m, fates, stats);
		}
	}
	free(fates);
	free(diag);
	close(fd);
	store_msg_free(&m);
	return rc;
}

int
agent_deliver_host(const struct config *cf, const char *host,
    const char *target, struct agent_stats *stats)
{
	const struct maildrop_msg *mm;
	struct puntset		*ps;
	struct maildrop		*md = NULL;
	struct store		*st;
	struct item		*items = NULL;
	struct smtp		 s;
	char			 agent[STORE_AGENT_MAX], text[REPLY_MAX];
	size_t			 n, i, nitems = 0;
	int			 rc = -1;

	memset(stats, 0, sizeof(*stats));
	memset(&s, 0, sizeof(s));
	snprintf(agent, sizeof(agent), "sdps-smtp[%ld]", (long)getpid());
	if ((ps = puntset_new(cf, PUNTSET_LOG)) == NULL)
		return -1;
	if (maildrop_open(ps, host, NULL, 0, NULL, NULL, &md) != STORE_OK)
		goto out;
	if ((n = maildrop_count(md)) > 0 &&
	    (items = calloc(n, sizeof(*items))) == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		mm = maildrop_msg(md, i);
		if ((st = punt_local_store(maildrop_punt(md, mm->punt))) ==
		    NULL)
			continue;	/* the agent sends from local files */
		items[nitems].st = st;
		items[nitems].id = mm->id;
		nitems++;
	}
	if (nitems == 0) {
		rc = 0;
		goto out;
	}
	if (smtp_connect(&s, target) == -1 || smtp_hello(&s) == -1)
		goto out;
	for (i = 0; i < nitems; i++)
		if (deliver_one(cf, &s, &items[i], agent, stats) == -1)
			goto out;
	if (smtp_send(&s, "QUIT\r\n") == 0)
		smtp_reply(&s, text, sizeof(text), NULL);
	rc = 0;
out:
	conn_free(s.c);
	free(items);
	maildrop_close(md);
	puntset_free(ps);
	return rc;
}
