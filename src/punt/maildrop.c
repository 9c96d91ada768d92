/*
 * maildrop: lock, list and merge one maildrop across the punts, and the
 * user filter of its envelopes (maildrop.h).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/maildrop.h"
#include "sdps/util.h"

struct md_punt {
	struct punt	*p;
	int		 cfi;
	struct punt_lock lk;
	char		*env;		/* envelope arena from punt_list */
};

struct maildrop {
	char			 user[UTIL_USER_MAX + 1];	/* "" = host */
	struct md_punt		 punts[CONFIG_PUNT_MAX];
	int			 npunts;
	struct maildrop_msg	*msgs;
	size_t			 nmsgs;
};

int
maildrop_order(uint64_t a_arrival_us, int a_punt, uint64_t a_id,
    uint64_t b_arrival_us, int b_punt, uint64_t b_id)
{
	if (a_arrival_us != b_arrival_us)
		return a_arrival_us < b_arrival_us ? -1 : 1;
	if (a_punt != b_punt)
		return a_punt < b_punt ? -1 : 1;
	if (a_id != b_id)
		return a_id < b_id ? -1 : 1;
	return 0;
}

/* Punts are added in config order, so the punt index orders like cfi. */
static int
msg_cmp(const void *pa, const void *pb)
{
	const struct maildrop_msg	*a = pa, *b = pb;

	return maildrop_order(a->arrival_us, a->punt, a->id, b->arrival_us,
	    b->punt, b->id);
}

/* The snapshot is in merge order already (one pass, no sort). */
static bool
md_sorted(const struct maildrop *md)
{
	size_t	 i;

	for (i = 1; i < md->nmsgs; i++)
		if (msg_cmp(&md->msgs[i - 1], &md->msgs[i]) > 0)
			return false;
	return true;
}

static void
skipped(maildrop_skip_fn *skip, void *arg, const char *punt,
    const char *reason)
{
	if (skip != NULL)
		skip(arg, punt, reason);
}

/* Drop punt k (unlocked), keeping the others in config order. */
static void
md_drop(struct maildrop *md, int k)
{
	punt_unlock(&md->punts[k].lk);
	free(md->punts[k].env);
	memmove(&md->punts[k], &md->punts[k + 1],
	    (size_t)(md->npunts - k - 1) * sizeof(md->punts[0]));
	md->npunts--;
	memset(&md->punts[md->npunts], 0, sizeof(md->punts[0]));
}

/* Lock punt p into the next slot: STORE_OK (added), or why not. */
static enum store_res
md_lock_one(struct maildrop *md, struct punt *p, int cfi, const char *host)
{
	struct md_punt	*mp = &md->punts[md->npunts];
	enum store_res	 r;

	memset(mp, 0, sizeof(*mp));
	mp->p = p;
	mp->cfi = cfi;
	punt_lock_init(&mp->lk);
	if ((r = punt_lock(p, host, md->user[0] != '\0' ? md->user : NULL,
	    &mp->lk)) == STORE_OK)
		md->npunts++;
	return r;
}

/*
 * Every usable punt, locked when asked (all or nothing): 0, 1 busy.
 * The parallel login (issue 11): every remote punt's connect or SELECT
 * is started (punt_begin) before any is waited for, all under one
 * deadline, so a login waits for the slowest punt, not for their sum.
 * After a busy punt, the punts already started are still finished and
 * added, so maildrop_close releases what they took.
 */
static int
md_lock(struct maildrop *md, struct puntset *ps, const char *host,
    int flags, maildrop_skip_fn *skip, void *arg)
{
	struct punt	*pv[CONFIG_PUNT_MAX];
	int		 began[CONFIG_PUNT_MAX];
	uint64_t	 deadline = puntset_login_deadline_us(ps);
	bool		 busy = false;
	int		 i;

	for (i = 0; i < puntset_count(ps); i++) {
		began[i] = 0;
		if ((pv[i] = puntset_get(ps, i)) == NULL) {
			skipped(skip, arg, puntset_name(ps, i), "unavailable");
			continue;
		}
		if ((flags & MAILDROP_LOCK) && (began[i] = punt_begin(pv[i],
		    host, md->user[0] != '\0' ? md->user : NULL, deadline))
		    == -1) {
			skipped(skip, arg, puntset_name(ps, i), "unavailable");
			pv[i] = NULL;
		}
	}
	for (i = 0; i < puntset_count(ps); i++) {
		if (pv[i] == NULL)
			continue;
		if (!(flags & MAILDROP_LOCK)) {
			memset(&md->punts[md->npunts], 0, sizeof(md->punts[0]));
			md->punts[md->npunts].p = pv[i];
			md->punts[md->npunts].cfi = i;
			punt_lock_init(&md->punts[md->npunts].lk);
			md->npunts++;
			continue;
		}
		if (busy && began[i] != 1)
			continue;
		switch (md_lock_one(md, pv[i], i, host)) {
		case STORE_OK:
			break;
		case STORE_BUSY:
			busy = true;
			break;
		default:
			if (!busy)
				skipped(skip, arg, puntset_name(ps, i),
				    "lock");
			break;
		}
	}
	return busy ? 1 : 0;
}

/* Append punt k's listing to the snapshot.  0, 1 list failed, -1. */
static int
md_list(struct maildrop *md, int k, const char *host, int flags)
{
	struct md_punt		*mp = &md->punts[k];
	struct store_entry	*ents = NULL;
	struct maildrop_msg	*nm, *m;
	size_t			 n = 0, j;

	if (punt_list(mp->p, host, md->user[0] != '\0' ? md->user : NULL,
	    &ents, &n, (flags & MAILDROP_ENV) ? &mp->env : NULL) != STORE_OK)
		return 1;
	if (n > 0) {
		nm = reallocarray(md->msgs, md->nmsgs + n, sizeof(*nm));
		if (nm == NULL) {
			log_warn("maildrop: reallocarray");
			free(ents);
			return -1;
		}
		md->msgs = nm;
	}
	for (j = 0; j < n; j++) {
		m = &md->msgs[md->nmsgs++];
		m->id = ents[j].id;
		m->arrival_us = ents[j].arrival_us;
		m->octets = ents[j].octets;
		m->flags = ents[j].flags;
		m->env = ents[j].env;
		m->punt = k;
	}
	free(ents);
	return 0;
}

enum store_res
maildrop_open(struct puntset *ps, const char *host, const char *user,
    int flags, maildrop_skip_fn *skip, void *arg, struct maildrop **out)
{
	struct maildrop	*md;
	int		 k, rc;

	*out = NULL;
	if ((md = calloc(1, sizeof(*md))) == NULL)
		return STORE_TEMPFAIL;
	if (user != NULL)
		snprintf(md->user, sizeof(md->user), "%s", user);
	if (md_lock(md, ps, host, flags, skip, arg) == 1) {
		maildrop_close(md);
		return STORE_BUSY;
	}
	for (k = 0; k < md->npunts; ) {
		if ((rc = md_list(md, k, host, flags)) == -1) {
			maildrop_close(md);
			return STORE_TEMPFAIL;
		}
		if (rc == 0) {
			k++;
			continue;
		}
		skipped(skip, arg, punt_name(md->punts[k].p), "list");
		/* Later punts move down: renumber their messages (none
		 * listed yet, since listing goes in punt order). */
		md_drop(md, k);
	}
	/* One punt's listing already comes in this order (store.h). */
	if (md->nmsgs > 1 && !md_sorted(md))
		qsort(md->msgs, md->nmsgs, sizeof(*md->msgs), msg_cmp);
	*out = md;
	return STORE_OK;
}

void
maildrop_close(struct maildrop *md)
{
	int	 k;

	if (md == NULL)
		return;
	/* Every release started before any is waited for (remote punts:
	 * one round trip in all, not one per punt). */
	for (k = 0; k < md->npunts; k++)
		punt_unlock_begin(&md->punts[k].lk);
	for (k = 0; k < md->npunts; k++) {
		punt_unlock(&md->punts[k].lk);
		free(md->punts[k].env);
	}
	free(md->msgs);
	free(md);
}

size_t
maildrop_count(const struct maildrop *md)
{
	return md->nmsgs;
}

const struct maildrop_msg *
maildrop_msg(const struct maildrop *md, size_t i)
{
	return i < md->nmsgs ? &md->msgs[i] : NULL;
}

int
maildrop_npunts(const struct maildrop *md)
{
	return md->npunts;
}

struct punt *
maildrop_punt(const struct maildrop *md, int k)
{
	return k >= 0 && k < md->npunts ? md->punts[k].p : NULL;
}

int
maildrop_punt_cfi(const struct maildrop *md, int k)
{
	return k >= 0 && k < md->npunts ? md->punts[k].cfi : -1;
}

const char *
maildrop_sender(const struct maildrop *md, const struct maildrop_msg *m)
{
	const char	*env = md->punts[m->punt].env;

	return env != NULL ? env + m->env : "";
}

const char *
maildrop_rcpt_next(const struct maildrop *md, const struct maildrop_msg *m,
    const char *prev)
{
	const char	*r;

	if (md->punts[m->punt].env == NULL)
		return NULL;
	if (prev == NULL) {
		r = maildrop_sender(md, m);
		r += strlen(r) + 1;
	} else
		r = prev + strlen(prev) + 1;
	for (; *r != '\0'; r += strlen(r) + 1)
		if (md->user[0] == '\0' || strcasecmp(r, md->user) == 0)
			return r;
	return NULL;
}
