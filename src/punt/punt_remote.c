/*
 * punt_remote: the second punt implementation (punt.h): a punt server
 * on another machine, reached over a link (link.h, docs/punt-protocol.md).
 *
 * One link per process, kept across sessions, so a worker pays the TLS
 * handshake once, not at every login.  A link the punt ended while idle
 * (link_stale) is replaced before SELECT or DELIVER, never while a
 * maildrop is selected: the lock lives in the link, so a new link would
 * not hold it.  Any failure of the link in a session fails this punt for
 * the rest of that session (health false: its messages answer -ERR
 * [SYS/TEMP], QUIT reports them not removed) and frees the link, so the
 * punt server frees the lock at once.  The scoreboard row remembers a
 * punt that failed for link_down_s, so the next logins, in any worker,
 * leave it out without waiting for it.
 */
#include <sys/types.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/config.h"
#include "sdps/link.h"
#include "sdps/log.h"
#include "sdps/punt.h"
#include "sdps/scoreboard.h"
#include "sdps/tls_client.h"
#include "sdps/util.h"
#include "sdps/xtext.h"

#include "punt_remote_int.h"

/*
 * The remote punts begun for the login under way whose links are still
 * to be made: the first lock finishes them all at once (link_finish_all),
 * so their handshakes overlap.  A worker serves one session at a time.
 */
static struct remote	*pending[CONFIG_PUNT_MAX];
static int		 npending;

static void
pending_drop(struct remote *r)
{
	int	 i;

	for (i = 0; i < npending; i++)
		if (pending[i] == r) {
			pending[i] = pending[--npending];
			return;
		}
}

static bool
sb_down(const struct remote *r)
{
	return r->h != NULL && atomic_load(&r->h->down_until_us) >
	    util_now_us();
}

static void
sb_up(struct remote *r)
{
	if (r->h == NULL)
		return;
	atomic_store(&r->h->down_until_us, 0);
	atomic_store(&r->h->rtt_us, link_rtt_us(r->l));
	atomic_store(&r->h->ok, 1);
	atomic_store(&r->h->checked_us, util_now_us());
}

/* The link failed: down for this session, remembered for link_down_s,
 * and freed (the punt frees the lock when the link ends). */
enum store_res
r_fail(struct remote *r, const char *what)
{
	log_warnx("punt %s: %s: %s", r->cp->name, what,
	    r->l != NULL ? link_error(r->l) : "no link");
	/* A session killed by the operator says nothing about the punt. */
	if (r->h != NULL && (r->kill == NULL || *r->kill == 0)) {
		atomic_store(&r->h->down_until_us, util_now_us() +
		    (uint64_t)r->cf->link_down_s * 1000000);
		atomic_store(&r->h->ok, 0);
		atomic_store(&r->h->checked_us, util_now_us());
	}
	link_free(r->l);
	r->l = NULL;
	r->failed = true;
	r->begun = r->select_sent = r->selected = r->xlist_sent = false;
	r->unselect_sent = false;
	r->remove_owed = 0;
	return STORE_TEMPFAIL;
}

/* A result of a command: the link's failure ends the punt's session. */
static enum store_res
r_res(struct remote *r, enum store_res res, const char *what)
{
	if (r->l != NULL && !link_ok(r->l))
		return r_fail(r, what);
	return res;
}

static void
r_opts(struct remote *r, struct link_opts *o, char *err, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	o->punt = r->cp;
	o->tls = tls_client_get(r->cp, err, errlen);
	o->timeout_ms = r->cf->link_timeout_s * 1000;
	o->connect_timeout_ms = r->cf->link_connect_timeout_ms;
	o->kill = r->kill;
}

/* Start a link unless a sound one is there (a stale one is replaced:
 * only ever outside a selection).  0 or -1 (failed, logged). */
static int
r_start(struct remote *r)
{
	struct link_opts o;
	char		 err[256] = "";

	if (r->l != NULL && !r->selected && link_stale(r->l)) {
		link_free(r->l);
		r->l = NULL;
	}
	if (r->l != NULL)
		return 0;
	r_opts(r, &o, err, sizeof(err));
	if (o.tls == NULL) {
		log_warnx("punt %s: %s", r->cp->name, err);
		r_fail(r, "tls");
		return -1;
	}
	if ((r->l = link_start(&o, err, sizeof(err))) == NULL) {
		log_warnx("punt %s: %s", r->cp->name, err);
		r_fail(r, "connect");
		return -1;
	}
	return 0;
}

/* Finish the link by deadline_us: 0 or -1 (failed). */
static int
r_finish(struct remote *r, uint64_t deadline_us)
{
	char	 err[256];

	if (link_ok(r->l))
		return 0;
	if (link_finish(r->l, deadline_us, err, sizeof(err)) == -1) {
		r_fail(r, "link");
		return -1;
	}
	r->uid = link_uid(r->l);
	sb_up(r);
	return 0;
}

/* A link ready for a command outside a session (DELIVER, XSTAT). */
int
r_ready(struct remote *r)
{
	if (r->failed && !r->selected)
		r->failed = false;	/* a new attempt, not a session */
	if (sb_down(r) && (r->l == NULL || !link_ok(r->l)))
		return -1;
	if (r_start(r) == -1)
		return -1;
	return r_finish(r, util_now_us() +
	    (uint64_t)r->cf->link_connect_timeout_ms * 1000);
}

static void
r_close(void *impl)
{
	struct remote	*r = impl;

	pending_drop(r);
	link_free(r->l);
	free(r);
}

static bool
r_health(void *impl)
{
	struct remote	*r = impl;

	if (r->failed)
		return false;
	/* A live link is used even if another worker saw the punt fail;
	 * without one, the shared memory says whether to try. */
	return (r->l != NULL && link_ok(r->l)) || !sb_down(r);
}

static uint64_t
r_uid(void *impl)
{
	return ((struct remote *)impl)->uid;
}

/* As store_uidl (the local punt): uid-id, so a punt keeps its UIDLs
 * whichever front end lists it. */
static void
r_uidl(void *impl, uint64_t id, char *buf)
{
	snprintf(buf, STORE_UIDL_MAX, "%016llx-%016llx",
	    (unsigned long long)((struct remote *)impl)->uid,
	    (unsigned long long)id);
}

/* SELECT with XLIST pipelined behind it, and XCLIENT before it when
 * the login's client is known (for the punt's log lines). */
static int
r_select(struct remote *r)
{
	r->xclient_sent = false;
	if (r->client != NULL && r->client->addr[0] != '\0') {
		if (link_send(r->l, "XCLIENT ADDR=%s PORT=%u SID=%016" PRIx64,
		    r->client->addr, r->client->port, r->client->sid) == -1) {
			r_fail(r, "XCLIENT");
			return -1;
		}
		r->xclient_sent = true;
	}
	if (link_send(r->l, "SELECT %s%s%s", r->host, r->user[0] != '\0' ?
	    " " : "", r->user) == -1 || link_send(r->l, "XLIST") == -1 ||
	    link_flush(r->l) == -1) {
		r_fail(r, "SELECT");
		return -1;
	}
	r->select_sent = r->xlist_sent = true;
	return 0;
}

static int
r_begin(void *impl, const char *host, const char *user, uint64_t deadline_us)
{
	struct remote	*r = impl;

	if (r->failed || r->selected || r->begun)
		return -1;
	snprintf(r->host, sizeof(r->host), "%s", host);
	snprintf(r->user, sizeof(r->user), "%s", user != NULL ? user : "");
	r->deadline_us = deadline_us;
	r->reply_deadline_us = deadline_us +
	    (uint64_t)r->cf->link_timeout_s * 1000000;
	if (r_start(r) == -1)
		return -1;
	r->begun = true;
	if (!link_ok(r->l) && npending < CONFIG_PUNT_MAX) {
		pending_drop(r);
		pending[npending++] = r;
	}
	/* A live link: SELECT and XLIST go now, so their round trips
	 * overlap the other punts', and a reply that is already here when
	 * a slower punt has used up the deadline is still read. */
	if (link_ok(r->l) && r_select(r) == -1)
		return -1;
	return 1;
}

/* A pending link is ready: SELECT and XLIST go at once, while the other
 * links are still being made; their replies are waited for in that
 * punt's own lock, under the same deadline. */
static void
pending_ready(struct link *l, void *arg)
{
	struct remote	*w = arg;

	(void)l;
	w->uid = link_uid(w->l);
	sb_up(w);
	if (w->begun && !w->select_sent)
		(void)r_select(w);
}

/* Every pending link (r's among them) made in one go; each failure is
 * its own punt's. */
static void
finish_pending(struct remote *r)
{
	struct link	*v[CONFIG_PUNT_MAX];
	struct remote	*w[CONFIG_PUNT_MAX];
	int		 i, n = 0;

	for (i = 0; i < npending; i++)
		if (pending[i]->l != NULL && !link_ok(pending[i]->l)) {
			w[n] = pending[i];
			v[n++] = pending[i]->l;
		}
	npending = 0;
	if (n == 0)
		return;
	(void)link_finish_all(v, n, r->deadline_us, r->reply_deadline_us,
	    pending_ready, (void **)w);
	for (i = 0; i < n; i++)
		if (w[i]->l != NULL && !link_ok(w[i]->l))
			r_fail(w[i], "link");
}

static enum store_res
r_lock(void *impl, const char *host, const char *user, struct punt_lock *lk)
{
	struct remote	*r = impl;
	enum store_res	 res;
	char		 err[256];
	char		*text;

	if (r->failed)
		return STORE_TEMPFAIL;
	if (!r->begun && r_begin(r, host, user, util_now_us() +
	    (uint64_t)r->cf->link_connect_timeout_ms * 1000) == -1)
		return STORE_TEMPFAIL;
	r->begun = false;
	/* The connect by the login's connect deadline; the handshake and
	 * the replies by the later one (link.h, link_connect_wait). */
	if (!link_ok(r->l))
		finish_pending(r);
	if (r->failed)
		return STORE_TEMPFAIL;
	if (!link_ok(r->l)) {
		if (link_connect_wait(r->l, r->deadline_us, err,
		    sizeof(err)) == -1)
			return r_fail(r, "connect");
		if (r_finish(r, r->reply_deadline_us) == -1)
			return STORE_TEMPFAIL;
	}
	link_set_deadline(r->l, r->reply_deadline_us);
	if (!r->select_sent && r_select(r) == -1)
		return STORE_TEMPFAIL;
	r->select_sent = false;
	/* XCLIENT's answer matters only if the link failed. */
	if (r->xclient_sent) {
		r->xclient_sent = false;
		(void)link_reply(r->l, &text);
		if (!link_ok(r->l))
			return r_fail(r, "XCLIENT");
	}
	if ((res = r_res(r, link_reply(r->l, &text), "SELECT")) !=
	    STORE_OK) {
		/* Not selected, and XLIST's refusal is still on its way: a
		 * fresh link next time beats reading a reply out of order.
		 * Not a failure of the punt (no down memory). */
		if (r->l != NULL) {
			link_free(r->l);
			r->l = NULL;
		}
		r->xlist_sent = false;
		return res == STORE_BUSY ? STORE_BUSY : STORE_TEMPFAIL;
	}
	r->selected = true;
	lk->impl = r;
	if (r->h != NULL)	/* sdps-ctl status: the last round trip */
		atomic_store(&r->h->rtt_us, link_rtt_us(r->l));
	return STORE_OK;
}

/*
 * Release, first half: whatever the session left unread is read, then
 * UNSELECT is sent without waiting, so maildrop_close releases every
 * punt in one round trip (r_unlock reads the answers).
 */
static void
r_unlock_begin(void *impl, struct punt_lock *lk)
{
	struct remote	*r = impl;
	char		*text, *line;
	size_t		 len;
	int		 rc;

	(void)lk;
	if (r->l == NULL || !link_ok(r->l)) {
		if (r->l != NULL)
			r_fail(r, "unlock");
		r->selected = r->xlist_sent = false;
		return;
	}
	link_set_deadline(r->l, 0);
	if (r->xlist_sent) {	/* never read: another punt was busy */
		r->xlist_sent = false;
		if (link_reply(r->l, &text) == STORE_OK)
			while ((rc = link_ml_line(r->l, &line, &len)) == 1)
				;
		if (!link_ok(r->l)) {
			r_fail(r, "XLIST");
			return;
		}
	}
	if (link_data_left(r->l) > 0 && link_data_skip(r->l) == -1) {
		r_fail(r, "BODY");
		return;
	}
	if (r->selected) {
		r->selected = false;
		if (link_send(r->l, "UNSELECT") == -1 ||
		    link_flush(r->l) == -1) {
			r_fail(r, "UNSELECT");
			return;
		}
		r->unselect_sent = true;
	}
}

/* Release, second half: UNSELECT's answer, so the lock is known to be
 * gone before the POP3 client hears the session is over. */
static void
r_unlock(void *impl, struct punt_lock *lk)
{
	struct remote	*r = impl;
	char		*text;

	if (!r->unselect_sent)
		r_unlock_begin(impl, lk);
	if (!r->unselect_sent)
		return;
	r->unselect_sent = false;
	if (r->l != NULL)
		(void)r_res(r, link_reply(r->l, &text), "UNSELECT");
}

/* Does the space-separated rcpt list hold user? */
static bool
has_rcpt(char **rc, size_t n, const char *user)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (strcmp(rc[i], user) == 0)
			return true;
	return false;
}

struct arena {
	char	*p;
	size_t	 len, cap;
};

static int
arena_add(struct arena *a, const char *s)
{
	size_t	 n = strlen(s) + 1;
	char	*np;

	if (a->len + n > a->cap) {
		a->cap = a->cap * 2 + n + 256;
		if ((np = realloc(a->p, a->cap)) == NULL)
			return -1;
		a->p = np;
	}
	memcpy(a->p + a->len, s, n);
	a->len += n;
	return 0;
}

#define XLIST_RCPTS	1024

/* One XLIST line into e (and the arena).  0, 1 filtered out, -1 bad. */
static int
xlist_line(char *line, const char *user, struct store_entry *e,
    struct arena *a)
{
	char		*f[4 + 1], *rc[XLIST_RCPTS], *sp, *save = NULL;
	uint64_t	 flags;
	size_t		 n = 0, nrc = 0, i;

	for (sp = strtok_r(line, " ", &save); sp != NULL;
	    sp = strtok_r(NULL, " ", &save)) {
		if (n < 5)
			f[n++] = sp;
		else if (nrc < XLIST_RCPTS)
			rc[nrc++] = sp;
		else
			return -1;
	}
	if (n < 5 || nrc == 0 ||
	    util_parse_u64(f[0], UINT64_MAX, &e->id) == -1 ||
	    util_parse_u64(f[1], UINT64_MAX, &e->arrival_us) == -1 ||
	    util_parse_u64(f[2], UINT64_MAX, &e->octets) == -1 ||
	    util_parse_u64(f[3], UINT32_MAX, &flags) == -1)
		return -1;
	e->flags = (uint32_t)flags;
	if (strcmp(f[4], "<>") == 0)
		f[4][0] = '\0';
	else if (xtext_decode(f[4]) == -1)
		return -1;
	for (i = 0; i < nrc; i++)
		if (xtext_decode(rc[i]) == -1)
			return -1;
	/* The punt lists a user's maildrop already; this keeps the rule
	 * (only messages for the user) even if it did not. */
	if (user[0] != '\0' && !has_rcpt(rc, nrc, user))
		return 1;
	if (a == NULL)
		return 0;
	if (a->len > UINT32_MAX)
		return -1;
	e->env = (uint32_t)a->len;
	if (arena_add(a, f[4]) == -1)
		return -1;
	for (i = 0; i < nrc; i++)
		if (arena_add(a, rc[i]) == -1)
			return -1;
	return arena_add(a, "");
}

/* The XLIST reply: entries in the punt's order, the arena as store_list
 * makes it (sender NUL, recipients NUL each, an empty string). */
static enum store_res
r_list(void *impl, const char *host, const char *user,
    struct store_entry **out, size_t *n, char **env)
{
	struct remote		*r = impl;
	struct store_entry	*v = NULL, *nv;
	struct arena		 a = { NULL, 0, 0 };
	size_t			 nv_cap = 0, nn = 0, len;
	enum store_res		 res;
	char			*text, *line;
	int			 rc, lr;

	(void)host;
	(void)user;
	*out = NULL;
	*n = 0;
	if (env != NULL)
		*env = NULL;
	if (r->failed || r->l == NULL || !r->selected)
		return STORE_TEMPFAIL;
	if (!r->xlist_sent && link_send(r->l, "XLIST") == -1)
		return r_fail(r, "XLIST");
	r->xlist_sent = false;
	if ((res = r_res(r, link_reply(r->l, &text), "XLIST")) != STORE_OK)
		goto done;
	while ((rc = link_ml_line(r->l, &line, &len)) == 1) {
		if (nn == nv_cap) {
			nv_cap = nv_cap * 2 + 64;
			if ((nv = reallocarray(v, nv_cap, sizeof(*v))) ==
			    NULL) {
				res = STORE_TEMPFAIL;
				break;
			}
			v = nv;
		}
		memset(&v[nn], 0, sizeof(v[nn]));
		if ((lr = xlist_line(line, r->user, &v[nn],
		    env != NULL ? &a : NULL)) == -1) {
			log_warnx("punt %s: bad XLIST line", r->cp->name);
			res = STORE_TEMPFAIL;
			break;
		}
		nn += lr == 0;
	}
	if (rc == -1 || res != STORE_OK) {
		/* Out of step with the punt: this link is done. */
		res = r_fail(r, "XLIST");
		goto done;
	}
	*out = nn > 0 ? v : NULL;
	if (nn == 0)
		free(v);
	v = NULL;
	*n = nn;
	if (env != NULL) {
		*env = a.p;
		a.p = NULL;
	}
done:
	if (r->l != NULL)
		link_set_deadline(r->l, 0);
	free(v);
	free(a.p);
	return res;
}

/* "+OK N": counted data follows. */
static enum store_res
r_counted(struct remote *r, struct punt_body *b, const char *what)
{
	enum store_res	 res;
	uint64_t	 n;
	char		*text, *sp;

	if ((res = r_res(r, link_reply(r->l, &text), what)) != STORE_OK)
		return res;
	if ((sp = strchr(text, ' ')) != NULL)
		*sp = '\0';
	if (util_parse_u64(text, UINT64_MAX, &n) == -1) {
		log_warnx("punt %s: %s: no octet count", r->cp->name, what);
		return r_fail(r, what);
	}
	link_data_expect(r->l, n);
	b->fd = -1;
	b->stream = r;
	return STORE_OK;
}

static enum store_res
r_open_body(void *impl, uint64_t id, int flags, struct punt_body *b,
    struct store_msg *m)
{
	struct remote	*r = impl;

	if (m != NULL) {
		memset(m, 0, sizeof(*m));
		m->id = id;
	}
	if (r->failed || r->l == NULL || !link_ok(r->l))
		return STORE_TEMPFAIL;
	if (link_send(r->l, "BODY %" PRIu64 "%s", id,
	    (flags & PUNT_BODY_ADMIN) ? " ADMIN" : "") == -1 ||
	    link_flush(r->l) == -1)
		return r_fail(r, "BODY");
	return r_counted(r, b, "BODY");
}

static enum store_res
r_open_top(void *impl, uint64_t id, uint64_t lines, struct punt_body *b)
{
	struct remote	*r = impl;

	if (r->failed || r->l == NULL || !link_ok(r->l))
		return STORE_TEMPFAIL;
	if (link_send(r->l, "TOP %" PRIu64 " %" PRIu64, id, lines) == -1 ||
	    link_flush(r->l) == -1)
		return r_fail(r, "TOP");
	return r_counted(r, b, "TOP");
}

static ssize_t
r_body_read(void *impl, struct punt_body *b, void *buf, size_t len)
{
	struct remote	*r = impl;
	ssize_t		 n;

	(void)b;
	if (r->l == NULL)
		return -1;
	if ((n = link_data_read(r->l, buf, len)) == -1)
		r_fail(r, "BODY data");
	return n;
}

/* What the reader left is drained, so the link stays in step. */
static void
r_body_close(void *impl, struct punt_body *b)
{
	struct remote	*r = impl;

	b->stream = NULL;
	if (r->l != NULL && link_ok(r->l) && link_data_left(r->l) > 0 &&
	    link_data_skip(r->l) == -1)
		r_fail(r, "BODY data");
}

/*
 * "VERB id id ..." lines, LINK_IDS_PER_LINE ids each, all sent before any
 * answer is read: one round trip for a QUIT's RD or DELE, however many
 * lines.  The number of lines sent (answers owed), or -1 (failed).
 */
static ssize_t
r_ids_send(struct remote *r, const char *verb, const uint64_t *ids,
    size_t n)
{
	char		 line[LINK_LINE_MAX];
	size_t		 i, k;
	ssize_t		 lines = 0;
	int		 o;

	if (r->failed || r->l == NULL || !r->selected)
		return -1;
	link_set_deadline(r->l, 0);
	for (i = 0; i < n; i += k, lines++) {
		o = snprintf(line, sizeof(line), "%s", verb);
		for (k = 0; k < LINK_IDS_PER_LINE && i + k < n; k++)
			o += snprintf(line + o, sizeof(line) - (size_t)o,
			    " %" PRIu64, ids[i + k]);
		if (link_send(r->l, "%s", line) == -1) {
			r_fail(r, verb);
			return -1;
		}
	}
	return lines;
}

/* Every answer owed is read, so the link stays in step; the first
 * refusal is the result. */
static enum store_res
r_answers(struct remote *r, const char *verb, size_t lines)
{
	enum store_res	 res = STORE_OK, one;
	char		*text;

	if (link_flush(r->l) == -1)
		return r_fail(r, verb);
	while (lines-- > 0) {
		if ((one = r_res(r, link_reply(r->l, &text), verb)) !=
		    STORE_OK && res == STORE_OK)
			res = one;
		if (r->l == NULL)
			return STORE_TEMPFAIL;
	}
	return res;
}

static enum store_res
r_mark_read(void *impl, const uint64_t *ids, size_t n)
{
	struct remote	*r = impl;
	ssize_t		 lines;

	if ((lines = r_ids_send(r, "RD", ids, n)) == -1)
		return STORE_TEMPFAIL;
	return r_answers(r, "RD", (size_t)lines);
}

/*
 * QUIT's removal, first half: the DELE lines and UPDATE sent without
 * waiting, so update_remove reaches every punt in one round trip.
 * UPDATE releases the lock at the punt.
 */
static void
r_remove_begin(void *impl, const uint64_t *ids, size_t n, const char *user)
{
	struct remote	*r = impl;
	ssize_t		 lines;

	(void)user;	/* the punt knows the selection's user */
	if (r->remove_owed != 0 || (lines = r_ids_send(r, "DELE", ids, n))
	    == -1)
		return;
	if (link_send(r->l, "UPDATE") == -1 || link_flush(r->l) == -1) {
		r_fail(r, "UPDATE");
		return;
	}
	r->remove_owed = (size_t)lines + 1;
	r->selected = false;
}

/* Second half: the answers.  A link that dies before UPDATE's reply:
 * not known to be removed (TEMPFAIL), which is the safe side
 * (docs/punt-protocol.md, UPDATE). */
static enum store_res
r_remove(void *impl, const uint64_t *ids, size_t n, const char *user)
{
	struct remote	*r = impl;
	size_t		 owed;

	if (r->remove_owed == 0)
		r_remove_begin(impl, ids, n, user);
	if ((owed = r->remove_owed) == 0)
		return STORE_TEMPFAIL;
	r->remove_owed = 0;
	return r_answers(r, "UPDATE", owed) == STORE_OK ? STORE_OK :
	    STORE_TEMPFAIL;
}

/* The SMTP agent runs on the punt's own machine (its local punt). */
static enum store_res
r_no_agent(void *impl, uint64_t id, const char *agent)
{
	(void)impl;
	(void)id;
	(void)agent;
	return STORE_TEMPFAIL;
}

static enum store_res
r_no_agent2(void *impl, uint64_t id)
{
	(void)impl;
	(void)id;
	return STORE_TEMPFAIL;
}

static enum store_res
r_stat(void *impl, struct store_stat *out)
{
	struct remote	*r = impl;
	enum store_res	 res;
	char		*text;
	int		 n;

	memset(out, 0, sizeof(*out));
	if (r_ready(r) == -1)
		return STORE_TEMPFAIL;
	if ((res = r_res(r, link_cmd(r->l, &text, "XSTAT"), "XSTAT")) !=
	    STORE_OK)
		return res;
	n = sscanf(text, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
	    " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
	    " %" SCNu64, &out->msgs, &out->hosts, &out->octets,
	    &out->stored_octets, &out->read, &out->in_delivery,
	    &out->pop_deleted, &out->next_id, &out->map_used, &out->map_size);
	if (n != 10) {
		log_warnx("punt %s: bad XSTAT reply", r->cp->name);
		return STORE_TEMPFAIL;
	}
	if (r->h != NULL)
		atomic_store(&r->h->rtt_us, link_rtt_us(r->l));
	return STORE_OK;
}

static const struct punt_ops remote_ops = {
	.kind = "remote",
	.close = r_close,
	.health = r_health,
	.uid = r_uid,
	.uidl = r_uidl,
	.lock = r_lock,
	.unlock = r_unlock,
	.unlock_begin = r_unlock_begin,
	.list = r_list,
	.open_body = r_open_body,
	.body_read = r_body_read,
	.body_close = r_body_close,
	.mark_read = r_mark_read,
	.remove = r_remove,
	.remove_begin = r_remove_begin,
	.claim = r_no_agent,
	.release = r_no_agent2,
	.done = r_no_agent2,
	.put = r_put,
	.put_file = r_put_file,
	.stat = r_stat,
	.local_store = NULL,
	.begin = r_begin,
	.open_top = r_open_top,
};

struct punt *
punt_remote_open(const struct config *cf, const struct config_punt *cp,
    struct sb_punt_health *health, volatile sig_atomic_t *kill,
    const struct punt_client *client, char *err, size_t errlen)
{
	struct remote	*r;
	struct punt	*p;

	if (cp->address[0] == '\0') {
		snprintf(err, errlen, "not a remote punt");
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* The context now, while this process can read the key (a
	 * one-shot program at start; sdpsd's master built it already). */
	if (tls_client_get(cp, err, errlen) == NULL) {
		free(r);
		return NULL;
	}
	r->cf = cf;
	r->cp = cp;
	r->h = health;
	r->kill = kill;
	r->client = client;
	if (r->h != NULL)
		atomic_store(&r->h->remote, 1);
	if ((p = punt_new(&remote_ops, r, cp->name)) == NULL)
		snprintf(err, errlen, "out of memory");
	return p;
}
