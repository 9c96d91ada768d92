/*
 * store_read: the read side of the local punt store (docs/design.md §5):
 * maildrop listings, copying a record out, opening a message file,
 * walks, the host list and statistics.  Every function here runs in one
 * read-only transaction that has ended when it returns.
 */

#include <sys/types.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "store_int.h"

/* Append s (len octets) and a NUL to the envelope arena. */
static int
arena_add(char **a, size_t *len, size_t *cap, const char *s, size_t slen)
{
	size_t	 ncap;
	char	*na;

	if (*len + slen + 1 > *cap) {
		ncap = *cap ? *cap : 1024;
		while (ncap < *len + slen + 1)
			ncap *= 2;
		if ((na = realloc(*a, ncap)) == NULL)
			return -1;
		*a = na;
		*cap = ncap;
	}
	memcpy(*a + *len, s, slen);
	(*a)[*len + slen] = '\0';
	*len += slen + 1;
	return 0;
}

/*
 * The arena holds the recipients this listing may show: all of them for
 * a host session, only the user's own for a user session (docs/design.md §3,
 * *ENV shows "one line per envelope recipient visible to this session").
 */
static int
arena_env(char **a, size_t *len, size_t *cap, const struct rec *r,
    const char *user)
{
	const unsigned char	*rc = NULL;
	size_t			 rl;

	if (arena_add(a, len, cap, r->sender, r->sender_len) == -1)
		return -1;
	while ((rc = rec_rcpt_next(r, rc, &rl)) != NULL) {
		if (user != NULL && !rec_rcpt_is(rc, rl, user))
			continue;
		if (arena_add(a, len, cap, (const char *)rc + 1, rl) == -1)
			return -1;
	}
	return arena_add(a, len, cap, "", 0);
}

/*
 * Format 2 (docs/design.md §5.2): every "rec" entry of host id hid (all of
 * them if hid is 0) in key order, arrival then id, handed to fn with its
 * key (REC_HKEY_LEN octets, checked) and value.  fn returns 0 to go on,
 * 1 to stop, -1 on error.  0, or -1 (logged).
 */
typedef int scan_fn(const unsigned char *k, const MDB_val *v, void *arg);

static int
scan_range(struct store *st, MDB_txn *txn, uint32_t hid, scan_fn *fn,
    void *arg)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_cursor	*cur;
	MDB_val		 key, val;
	MDB_cursor_op	 op;
	int		 rc, r = 0;

	if ((rc = mdb_cursor_open(txn, st->rec, &cur)) != 0)
		goto fail;
	rec_hkey(hid, 0, 0, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	op = hid != 0 ? MDB_SET_RANGE : MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &key, &val, op)) == 0) {
		op = MDB_NEXT;
		if (key.mv_size != REC_HKEY_LEN)
			continue;	/* fsck reports it */
		if (hid != 0 && rec_key_hid(key.mv_data) != hid)
			break;
		if ((r = fn(key.mv_data, &val, arg)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (r == -1)
		return -1;
	if (r == 1 || rc == 0 || rc == MDB_NOTFOUND)
		return 0;
 fail:
	log_warnx("store %s: scan: %s", st->name, mdb_strerror(rc));
	return -1;
}

/*
 * A record as a listing or a walk sees it: 1 decoded, 0 skipped
 * (undecodable: an inconsistent index that fsck reports; or another
 * binary's newer record, logged: this one cannot show it).
 */
static int
rec_visible(struct store *st, const unsigned char *k, const MDB_val *v,
    struct rec *r)
{
	uint64_t	 id = rec_key_id(k + REC_HPFX_LEN);

	switch (rec_decode(v->mv_data, v->mv_size, r)) {
	case REC_OK:
		return 1;
	case REC_NEWER:
		log_warnx("store %s: record %016llx: unknown record version "
		    "%u (this binary knows %u): skipped", st->name,
		    (unsigned long long)id, rec_version(v->mv_data, v->mv_size),
		    REC_VERSION);
		return 0;
	case REC_CORRUPT:
		break;
	}
	log_warnx("store %s: record %016llx: undecodable", st->name,
	    (unsigned long long)id);
	return 0;
}

/* A maildrop listing being built. */
struct listing {
	struct store		*st;
	const char		*user;
	bool			 want_env;
	struct store_entry	*e;
	size_t			 ne, cap;
	char			*arena;
	size_t			 alen, acap;
};

/* Add one "rec" entry to l if this session may see it. */
static int
list_one(const unsigned char *k, const MDB_val *v, void *arg)
{
	struct listing		*l = arg;
	struct store_entry	*e;
	struct rec		 r;

	if (rec_visible(l->st, k, v, &r) != 1)
		return 0;
	if (r.flags & STORE_F_POP_DELETED)
		return 0;
	if (l->user != NULL && !rec_has_user(&r, l->user))
		return 0;
	if (l->ne == l->cap) {
		size_t	 ncap = l->cap ? l->cap * 2 : 64;

		if ((e = reallocarray(l->e, ncap, sizeof(*e))) == NULL)
			goto fail;
		l->e = e;
		l->cap = ncap;
	}
	e = &l->e[l->ne];
	e->id = rec_key_id(k + REC_HPFX_LEN);
	e->arrival_us = r.arrival_us;
	e->octets = r.octets;
	e->flags = r.flags;
	e->env = (uint32_t)l->alen;
	if (l->want_env && (l->alen > UINT32_MAX ||
	    arena_env(&l->arena, &l->alen, &l->acap, &r, l->user) == -1))
		goto fail;
	l->ne++;
	return 0;
 fail:
	log_warn("store %s: listing %.*s", l->st->name, (int)r.host_len,
	    r.host);
	return -1;
}

int
store_list(struct store *st, const char *host, const char *user,
    struct store_entry **out, size_t *n, char **env)
{
	struct listing	 l;
	MDB_txn		*txn;
	uint32_t	 hid;
	int		 ret = 0;

	memset(&l, 0, sizeof(l));
	l.st = st;
	l.user = user;
	l.want_env = env != NULL;
	*out = NULL;
	*n = 0;
	if (env != NULL)
		*env = NULL;
	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	switch (lstore_hid_get(st, txn, host, strlen(host), &hid)) {
	case GET_OK:
		ret = scan_range(st, txn, hid, list_one, &l);
		break;
	case GET_NONE:
		break;
	default:
		ret = -1;
		break;
	}
	mdb_txn_abort(txn);
	if (ret == -1 || l.ne == 0) {
		free(l.e);
		l.e = NULL;
	}
	if (ret == -1 || env == NULL) {
		free(l.arena);
		l.arena = NULL;
	}
	if (ret == -1)
		return -1;
	*out = l.e;
	*n = l.ne;
	if (env != NULL)
		*env = l.arena;
	return 0;
}

/* Copy a decoded record out into m (one allocation behind mem_). */
static int
rec_to_msg(const struct rec *r, uint64_t id, struct store_msg *m)
{
	const unsigned char	*rc = NULL;
	size_t			 rl, i, sz;
	char			*p;

	memset(m, 0, sizeof(*m));
	sz = r->nrcpts * sizeof(char *) + r->sender_len + 1 + r->rcpts_len;
	if ((m->mem_ = malloc(sz)) == NULL)
		return -1;
	m->rcpts = m->mem_;
	p = (char *)m->mem_ + r->nrcpts * sizeof(char *);
	m->sender = p;
	memcpy(p, r->sender, r->sender_len);
	p[r->sender_len] = '\0';
	p += r->sender_len + 1;
	for (i = 0; (rc = rec_rcpt_next(r, rc, &rl)) != NULL; i++) {
		m->rcpts[i] = p;
		memcpy(p, rc + 1, rl);
		p[rl] = '\0';
		p += rl + 1;
	}
	m->nrcpts = i;
	m->id = id;
	m->arrival_us = r->arrival_us;
	m->octets = r->octets;
	m->stored_octets = r->stored_octets;
	m->flags = r->flags;
	m->claim_us = r->claim_us;
	memcpy(m->host, r->host, r->host_len);
	m->host[r->host_len] = '\0';
	memcpy(m->agent, r->agent, r->agent_len);
	m->agent[r->agent_len] = '\0';
	return 0;
}

enum store_res
store_msg_get(struct store *st, uint64_t id, struct store_msg *m)
{
	enum store_res	 res = STORE_TEMPFAIL;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;

	memset(m, 0, sizeof(*m));
	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return STORE_TEMPFAIL;
	switch (lstore_rec_get(st, txn, id, &v, &r)) {
	case GET_OK:
		if (rec_to_msg(&r, id, m) == 0)
			res = STORE_OK;
		else
			log_warn("store %s: record %016llx", st->name,
			    (unsigned long long)id);
		break;
	case GET_NONE:
		res = STORE_GONE;
		break;
	case GET_BAD:
	case GET_NEWER:
		res = STORE_PERMFAIL;
		break;
	case GET_ERR:
		res = STORE_TEMPFAIL;
		break;
	}
	mdb_txn_abort(txn);
	return res;
}

void
store_msg_free(struct store_msg *m)
{
	free(m->mem_);
	memset(m, 0, sizeof(*m));
}

static enum store_res
msg_open(struct store *st, uint64_t id, int *fd, struct store_msg *m,
    bool pop_deleted_too)
{
	struct store_msg	 tm, again;
	enum store_res		 res;
	char			 path[PATH_MAX];

	memset(&again, 0, sizeof(again));
	errno = ENAMETOOLONG;
	if ((res = store_msg_get(st, id, &tm)) != STORE_OK)
		return res;
	if ((tm.flags & STORE_F_POP_DELETED) && !pop_deleted_too) {
		store_msg_free(&tm);
		return STORE_GONE;
	}
	if (lstore_spool_path(st, id, path, sizeof(path)) == -1 ||
	    (*fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		/* Removal commits before it unlinks: recheck the record. */
		if (errno == ENOENT &&
		    store_msg_get(st, id, &again) == STORE_GONE) {
			store_msg_free(&tm);
			return STORE_GONE;
		}
		log_warn("store %s: open %s", st->name, path);
		store_msg_free(&again);
		store_msg_free(&tm);
		return STORE_TEMPFAIL;
	}
	if (m != NULL)
		*m = tm;
	else
		store_msg_free(&tm);
	return STORE_OK;
}

enum store_res
store_msg_open(struct store *st, uint64_t id, int *fd, struct store_msg *m)
{
	return msg_open(st, id, fd, m, false);
}

enum store_res
store_msg_open_admin(struct store *st, uint64_t id, int *fd,
    struct store_msg *m)
{
	return msg_open(st, id, fd, m, true);
}

struct walk {
	struct store	*st;
	store_walk_fn	*fn;
	void		*arg;
};

/* Decode one record into a store_msg and hand it to the walker. */
static int
walk_one(const unsigned char *k, const MDB_val *v, void *arg)
{
	struct walk	*w = arg;
	struct store_msg m;
	struct rec	 r;
	int		 stop;

	if (rec_visible(w->st, k, v, &r) != 1)
		return 0;
	if (rec_to_msg(&r, rec_key_id(k + REC_HPFX_LEN), &m) == -1) {
		log_warn("store %s: walk", w->st->name);
		return -1;
	}
	stop = w->fn(&m, w->arg);
	store_msg_free(&m);
	return stop != 0 ? 1 : 0;
}

/* With a host its range, else the whole "rec": host id, then arrival. */
int
store_walk(struct store *st, const char *host, store_walk_fn *fn, void *arg)
{
	struct walk	 w = { st, fn, arg };
	MDB_txn		*txn;
	uint32_t	 hid = 0;
	int		 ret = 0;

	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if (host != NULL) {
		switch (lstore_hid_get(st, txn, host, strlen(host), &hid)) {
		case GET_OK:
			break;
		case GET_NONE:
			goto out;
		default:
			ret = -1;
			goto out;
		}
	}
	ret = scan_range(st, txn, hid, walk_one, &w);
 out:
	mdb_txn_abort(txn);
	return ret;
}

static int
count_one(const unsigned char *k, const MDB_val *v, void *arg)
{
	(void)k;
	(void)v;
	(*(uint64_t *)arg)++;
	return 0;
}

/* "hosts" in name order; a host whose range is empty is left out. */
int
store_hosts(struct store *st, int (*fn)(const char *host, uint64_t msgs,
    void *arg), void *arg)
{
	char		 host[UTIL_HOST_MAX + 1];
	MDB_txn		*txn;
	MDB_cursor	*cur = NULL;
	MDB_val		 key, val;
	MDB_cursor_op	 op = MDB_FIRST;
	uint64_t	 cnt;
	int		 rc, ret = -1;

	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->hosts, &cur)) != 0) {
		log_warnx("store %s: mdb_cursor_open: %s", st->name,
		    mdb_strerror(rc));
		goto out;
	}
	while ((rc = mdb_cursor_get(cur, &key, &val, op)) == 0) {
		op = MDB_NEXT;
		if (key.mv_size == 0 || key.mv_size > UTIL_HOST_MAX ||
		    val.mv_size != REC_HID_LEN)
			continue;
		cnt = 0;
		if (scan_range(st, txn, rec_key_hid(val.mv_data), count_one,
		    &cnt) == -1)
			goto out;
		if (cnt == 0)
			continue;
		memcpy(host, key.mv_data, key.mv_size);
		host[key.mv_size] = '\0';
		if (fn(host, cnt, arg) != 0) {
			rc = MDB_NOTFOUND;
			break;
		}
	}
	if (rc != MDB_NOTFOUND) {
		log_warnx("store %s: hosts: %s", st->name, mdb_strerror(rc));
		goto out;
	}
	ret = 0;
 out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return ret;
}

struct stat_scan {
	struct store_stat *out;
	uint32_t	 last_hid;
};

static int
stat_one(const unsigned char *k, const MDB_val *v, void *arg)
{
	struct stat_scan *s = arg;
	struct rec	 r;

	if (rec_decode(v->mv_data, v->mv_size, &r) != REC_OK)
		return 0;
	/* Keys come in host id order: a new hid is a new non-empty host. */
	if (rec_key_hid(k) != s->last_hid) {
		s->last_hid = rec_key_hid(k);
		s->out->hosts++;
	}
	s->out->msgs++;
	s->out->octets += r.octets;
	s->out->stored_octets += r.stored_octets;
	if (r.flags & STORE_F_READ)
		s->out->read++;
	if (r.flags & STORE_F_IN_DELIVERY)
		s->out->in_delivery++;
	if (r.flags & STORE_F_POP_DELETED)
		s->out->pop_deleted++;
	return 0;
}

int
store_stat(struct store *st, struct store_stat *out)
{
	struct stat_scan s = { out, 0 };
	MDB_txn		*txn;
	MDB_envinfo	 info;
	MDB_stat	 ms;
	int		 rc, ret = -1;

	memset(out, 0, sizeof(*out));
	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if (lstore_meta_get_u64(st, txn, "next_id", &out->next_id) == -1 ||
	    scan_range(st, txn, 0, stat_one, &s) == -1)
		goto out;
	if ((rc = mdb_env_info(st->env, &info)) != 0 ||
	    (rc = mdb_env_stat(st->env, &ms)) != 0) {
		log_warnx("store %s: stat: %s", st->name, mdb_strerror(rc));
		goto out;
	}
	out->map_size = info.me_mapsize;
	out->map_used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	ret = 0;
 out:
	mdb_txn_abort(txn);
	return ret;
}
