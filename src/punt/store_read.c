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

/* A maildrop listing being built. */
struct listing {
	struct store_entry	*e;
	size_t			 ne;
	char			*arena;
	size_t			 alen, acap;
};

/* Add id to l if this session may see it; -1 on error. */
/*
 * The record of id as a listing or a walk sees it: 1 decoded, 0 skipped
 * (missing or undecodable: an inconsistent index that fsck reports; or
 * another binary's newer record, logged: this one cannot show it), -1
 * an LMDB error.
 */
static int
rec_visible(struct store *st, MDB_txn *txn, uint64_t id, MDB_val *v,
    struct rec *r)
{
	switch (lstore_rec_get(st, txn, id, v, r)) {
	case GET_OK:
		return 1;
	case GET_NONE:
	case GET_BAD:
	case GET_NEWER:
		return 0;
	case GET_ERR:
		break;
	}
	return -1;
}

static int
list_one(struct store *st, MDB_txn *txn, uint64_t id, const char *user,
    bool want_env, struct listing *l)
{
	struct store_entry	*e;
	struct rec		 r;
	MDB_val			 rv;
	int			 rc;

	if ((rc = rec_visible(st, txn, id, &rv, &r)) != 1)
		return rc;
	if (r.flags & STORE_F_POP_DELETED)
		return 0;
	if (user != NULL && !rec_has_user(&r, user))
		return 0;
	e = &l->e[l->ne];
	e->id = id;
	e->arrival_us = r.arrival_us;
	e->octets = r.octets;
	e->flags = r.flags;
	e->env = (uint32_t)l->alen;
	if (want_env && (l->alen > UINT32_MAX ||
	    arena_env(&l->arena, &l->alen, &l->acap, &r, user) == -1)) {
		log_warn("store %s: listing %.*s", st->name, (int)r.host_len,
		    r.host);
		return -1;
	}
	l->ne++;
	return 0;
}

/* host's index entries into l, in one allocation sized by their count. */
static int
list_host(struct store *st, MDB_txn *txn, MDB_cursor *cur, const char *host,
    const char *user, bool want_env, struct listing *l)
{
	MDB_val		 key, val;
	size_t		 cnt;
	int		 rc;

	key.mv_size = strlen(host);
	key.mv_data = (void *)(uintptr_t)host;
	if ((rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY)) ==
	    MDB_NOTFOUND)
		return 0;
	if (rc != 0 || (rc = mdb_cursor_count(cur, &cnt)) != 0)
		goto fail;
	/* No per-entry malloc. */
	if ((l->e = calloc(cnt, sizeof(*l->e))) == NULL) {
		log_warn("store %s: listing %s", st->name, host);
		return -1;
	}
	for (; rc == 0 && l->ne < cnt;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
		if (val.mv_size != REC_ID_LEN)
			continue;
		if (list_one(st, txn, rec_key_id(val.mv_data), user, want_env,
		    l) == -1)
			return -1;
	}
	if (rc == 0 || rc == MDB_NOTFOUND)
		return 0;
 fail:
	log_warnx("store %s: listing %s: %s", st->name, host,
	    mdb_strerror(rc));
	return -1;
}

int
store_list(struct store *st, const char *host, const char *user,
    struct store_entry **out, size_t *n, char **env)
{
	struct listing	 l;
	MDB_txn		*txn;
	MDB_cursor	*cur;
	int		 rc, ret;

	memset(&l, 0, sizeof(l));
	*out = NULL;
	*n = 0;
	if (env != NULL)
		*env = NULL;
	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->host, &cur)) != 0) {
		log_warnx("store %s: mdb_cursor_open: %s", st->name,
		    mdb_strerror(rc));
		mdb_txn_abort(txn);
		return -1;
	}
	ret = list_host(st, txn, cur, host, user, env != NULL, &l);
	mdb_cursor_close(cur);
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

/* Decode one record into a store_msg and hand it to fn. */
static int
walk_one(struct store *st, MDB_txn *txn, uint64_t id, store_walk_fn *fn,
    void *arg, int *stop)
{
	struct store_msg m;
	struct rec	 r;
	MDB_val		 v;
	int		 rc;

	if ((rc = rec_visible(st, txn, id, &v, &r)) != 1)
		return rc;
	if (rec_to_msg(&r, id, &m) == -1) {
		log_warn("store %s: walk", st->name);
		return -1;
	}
	*stop = fn(&m, arg);
	store_msg_free(&m);
	return 0;
}

int
store_walk(struct store *st, const char *host, store_walk_fn *fn, void *arg)
{
	MDB_txn		*txn;
	MDB_cursor	*cur = NULL;
	MDB_val		 key, val;
	MDB_cursor_op	 op;
	int		 rc, stop = 0, ret = -1;

	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, host != NULL ? st->host : st->msg,
	    &cur)) != 0) {
		log_warnx("store %s: mdb_cursor_open: %s", st->name,
		    mdb_strerror(rc));
		goto out;
	}
	if (host != NULL) {
		key.mv_size = strlen(host);
		key.mv_data = (void *)(uintptr_t)host;
		op = MDB_SET_KEY;
	} else
		op = MDB_FIRST;
	while (!stop && (rc = mdb_cursor_get(cur, &key, &val, op)) == 0) {
		op = host != NULL ? MDB_NEXT_DUP : MDB_NEXT;
		if (host != NULL ? val.mv_size != 8 : key.mv_size != 8)
			continue;
		if (walk_one(st, txn, rec_key_id(host != NULL ? val.mv_data :
		    key.mv_data), fn, arg, &stop) == -1)
			goto out;
	}
	if (!stop && rc != MDB_NOTFOUND) {
		log_warnx("store %s: walk: %s", st->name, mdb_strerror(rc));
		goto out;
	}
	ret = 0;
 out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return ret;
}

int
store_hosts(struct store *st, int (*fn)(const char *host, uint64_t msgs,
    void *arg), void *arg)
{
	char		 host[UTIL_HOST_MAX + 1];
	MDB_txn		*txn;
	MDB_cursor	*cur = NULL;
	MDB_val		 key, val;
	MDB_cursor_op	 op = MDB_FIRST;
	size_t		 cnt;
	int		 rc, ret = -1;

	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->host, &cur)) != 0) {
		log_warnx("store %s: mdb_cursor_open: %s", st->name,
		    mdb_strerror(rc));
		goto out;
	}
	while ((rc = mdb_cursor_get(cur, &key, &val, op)) == 0) {
		op = MDB_NEXT_NODUP;
		if (key.mv_size == 0 || key.mv_size > UTIL_HOST_MAX)
			continue;
		if ((rc = mdb_cursor_count(cur, &cnt)) != 0)
			break;
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

int
store_stat(struct store *st, struct store_stat *out)
{
	struct rec	 r;
	MDB_txn		*txn;
	MDB_cursor	*cur;
	MDB_val		 key, val;
	MDB_envinfo	 info;
	MDB_stat	 ms;
	MDB_cursor_op	 op;
	int		 rc, ret = -1;

	memset(out, 0, sizeof(*out));
	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if (lstore_meta_get_u64(st, txn, "next_id", &out->next_id) == -1)
		goto out;
	if ((rc = mdb_cursor_open(txn, st->msg, &cur)) != 0)
		goto mdbfail;
	for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &key, &val, op)) == 0;
	    op = MDB_NEXT) {
		if (rec_decode(val.mv_data, val.mv_size, &r) != REC_OK)
			continue;
		out->msgs++;
		out->octets += r.octets;
		out->stored_octets += r.stored_octets;
		if (r.flags & STORE_F_READ)
			out->read++;
		if (r.flags & STORE_F_IN_DELIVERY)
			out->in_delivery++;
		if (r.flags & STORE_F_POP_DELETED)
			out->pop_deleted++;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		goto mdbfail;
	if ((rc = mdb_cursor_open(txn, st->host, &cur)) != 0)
		goto mdbfail;
	for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &key, &val, op)) == 0;
	    op = MDB_NEXT_NODUP)
		out->hosts++;
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		goto mdbfail;
	if ((rc = mdb_env_info(st->env, &info)) != 0 ||
	    (rc = mdb_env_stat(st->env, &ms)) != 0)
		goto mdbfail;
	out->map_size = info.me_mapsize;
	out->map_used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	ret = 0;
	goto out;
 mdbfail:
	log_warnx("store %s: stat: %s", st->name, mdb_strerror(rc));
 out:
	mdb_txn_abort(txn);
	return ret;
}
