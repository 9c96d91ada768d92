/* ctl_expire: "sdps-ctl expire": remove mail older than the policy age and
 * bounce unread mail to its sender (docs/design.md §10.3). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/bounce.h"
#include "sdps/config.h"
#include "sdps/ctl.h"
#include "sdps/puntset.h"
#include "sdps/store.h"
#include "sdps/util.h"

#include "ctl_remote.h"

struct victim {
	uint64_t id;
	uint64_t arrival_us;
};

struct collect {
	uint64_t	 cutoff_us;
	struct victim	*v;
	size_t		 n, cap;
	int		 failed;
};

struct tally {
	uint64_t bounced, silent, skipped, failed;
	uint64_t reported;	/* JSON objects printed so far */
};

/* Runs inside the walk's read transaction: only copy, never call store. */
static int
collect_old(const struct store_msg *m, void *arg)
{
	struct collect	*c = arg;
	struct victim	*nv;

	if (m->arrival_us > c->cutoff_us)
		return 0;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		if ((nv = reallocarray(c->v, c->cap, sizeof(*nv))) == NULL) {
			c->failed = 1;
			return 1;
		}
		c->v = nv;
	}
	c->v[c->n].id = m->id;
	c->v[c->n].arrival_us = m->arrival_us;
	c->n++;
	return 0;
}

/* One line (or JSON object) per message acted on. */
static void
report(struct ctl *c, struct store *st, uint64_t id, const char *host,
    const char *what, struct tally *t)
{
	char	 uidl[STORE_UIDL_MAX];

	store_uidl(st, id, uidl);
	if (!c->json) {
		printf("%s:%llu %s %s %s\n", store_name(st),
		    (unsigned long long)id, uidl, host, what);
		return;
	}
	printf("%s\n  {\"punt\": ", t->reported++ ? "," : "");
	ctl_json_str(stdout, store_name(st));
	printf(", \"id\": %llu, \"uidl\": \"%s\", \"host\": ",
	    (unsigned long long)id, uidl);
	ctl_json_str(stdout, host);
	printf(", \"action\": ");
	ctl_json_str(stdout, what);
	printf("}");
}

/* A bounce for every recipient of m: "4.4.7", the mail expired. */
static int
bounce(const struct config *cf, struct store *st, const struct store_msg *m)
{
	struct dsn_rcpt	*r;
	char		**addrs;
	size_t		 i;
	int		 rc = -1;

	if ((r = calloc(m->nrcpts, sizeof(*r))) == NULL)
		return -1;
	if ((addrs = calloc(m->nrcpts, sizeof(*addrs))) == NULL) {
		free(r);
		return -1;
	}
	for (i = 0; i < m->nrcpts; i++) {
		if (asprintf(&addrs[i], "%s@%s", m->rcpts[i], m->host) == -1) {
			addrs[i] = NULL;
			goto out;
		}
		r[i].addr = addrs[i];
		r[i].status = "4.4.7";
		r[i].diag = "message expired unread in the POP3 spool";
	}
	rc = bounce_msg(cf, st, m, r, m->nrcpts, "Your message was not "
	    "collected by its recipients before the spool's expiry age and "
	    "has been removed.");
out:
	for (i = 0; i < m->nrcpts; i++)
		free(addrs[i]);
	free(addrs);
	free(r);
	return rc;
}

/*
 * Expire one message.  Claiming it first makes expiry an SMTP-side agent
 * like any other: a message another agent is delivering is skipped, and
 * POP3 cannot take it half-way through the bounce.
 */
static void
expire_one(struct ctl *c, struct store *st, const struct victim *v,
    struct tally *t)
{
	struct store_msg m;
	const char	*what;
	enum store_res	 r;

	if (c->dry_run) {
		if (store_msg_get(st, v->id, &m) != STORE_OK)
			return;
		if ((m.flags & STORE_F_IN_DELIVERY) != 0)
			what = "skip (claimed)", t->skipped++;
		else if ((m.flags & STORE_F_READ) != 0 || m.sender[0] == '\0')
			what = "would expire silently", t->silent++;
		else
			what = "would bounce and expire", t->bounced++;
		report(c, st, v->id, m.host, what, t);
		store_msg_free(&m);
		return;
	}
	if ((r = store_claim(st, v->id, "sdps-ctl-expire")) != STORE_OK) {
		if (r == STORE_BUSY) {
			if (store_msg_get(st, v->id, &m) == STORE_OK) {
				report(c, st, v->id, m.host, "skip (claimed)",
				    t);
				store_msg_free(&m);
			}
			t->skipped++;
		} else if (r != STORE_GONE)
			t->failed++;
		return;
	}
	if (store_msg_get(st, v->id, &m) != STORE_OK) {
		store_release(st, v->id);
		t->failed++;
		return;
	}
	/*
	 * docs/design.md §10.3: unread mail goes back to its sender; mail
	 * POP3 has read may go silently; a bounce is never bounced.
	 */
	if ((m.flags & STORE_F_READ) != 0 || m.sender[0] == '\0')
		what = "expired silently", t->silent++;
	else if (bounce(c->cf, st, &m) == 0)
		what = "bounced and expired", t->bounced++;
	else {
		/* Keep it: the next run retries the bounce. */
		store_release(st, v->id);
		fprintf(stderr, "sdps-ctl: %s:%llu: bounce to <%s> failed\n",
		    store_name(st), (unsigned long long)v->id, m.sender);
		store_msg_free(&m);
		t->failed++;
		return;
	}
	if (store_done(st, v->id) != STORE_OK) {
		what = "bounce sent, removal failed";
		t->failed++;
	}
	report(c, st, v->id, m.host, what, t);
	store_msg_free(&m);
}

int
ctl_expire(struct ctl *c)
{
	const struct config	*cf = c->cf;
	struct puntset		*ps;
	struct punt		*pt;
	struct collect		 col;
	struct tally		 t = { 0, 0, 0, 0, 0 };
	struct store		*st;
	unsigned		 days;
	size_t			 i;
	int			 p, rc = 0;

	days = c->older_than_days >= 0 ? (unsigned)c->older_than_days :
	    cf->expire_days;
	if ((ps = puntset_new(cf, 0)) == NULL)
		return ctl_fail("out of memory");
	if (c->json)
		printf("{\"dry_run\": %s, \"older_than_days\": %u, "
		    "\"messages\": [", c->dry_run ? "true" : "false", days);
	for (p = 0; p < cf->npunts; p++) {
		if (ctl_punt_is_remote(&cf->punts[p])) {
			rc = ctl_refuse_remote("expire", &cf->punts[p]);
			continue;
		}
		if ((pt = puntset_get(ps, p)) == NULL ||
		    (st = punt_local_store(pt)) == NULL) {
			fprintf(stderr, "sdps-ctl: punt %s: %s\n",
			    cf->punts[p].name, pt == NULL ?
			    puntset_error(ps, p) : "not a local punt");
			rc = 1;
			continue;
		}
		memset(&col, 0, sizeof(col));
		/* --older-than 0 means every message, however new. */
		col.cutoff_us = days == 0 ? UINT64_MAX :
		    util_now_us() - (uint64_t)days * 86400 * 1000000;
		if (store_walk(st, NULL, collect_old, &col) == -1 ||
		    col.failed) {
			fprintf(stderr, "sdps-ctl: punt %s: walk failed\n",
			    cf->punts[p].name);
			rc = 1;
		} else
			for (i = 0; i < col.n; i++)
				expire_one(c, st, &col.v[i], &t);
		free(col.v);
	}
	puntset_free(ps);
	if (c->json)
		printf("%s], \"bounced\": %llu, \"silent\": %llu, "
		    "\"skipped\": %llu, \"failed\": %llu}\n",
		    t.reported ? "\n" : "",
		    (unsigned long long)t.bounced, (unsigned long long)t.silent,
		    (unsigned long long)t.skipped, (unsigned long long)t.failed);
	else
		printf("%s: %llu bounced, %llu silent, %llu skipped, "
		    "%llu failed\n", c->dry_run ? "dry run" : "expired",
		    (unsigned long long)t.bounced, (unsigned long long)t.silent,
		    (unsigned long long)t.skipped, (unsigned long long)t.failed);
	return rc != 0 || t.failed != 0 ? 1 : 0;
}
