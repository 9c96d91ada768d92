/*
 * store_update: the changes sessions and agents make to stored messages
 * (docs/design.md §4.2, §5): POP3 UPDATE (mark read, remove with the
 * claim rules), the SMTP agent's claim/done/release markers and expiry.
 * Each public function is one commit; files are unlinked after it.
 */

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "sdps/fault.h"
#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "store_int.h"

int
store_mark_read(struct store *st, const uint64_t *ids, size_t n)
{
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;
	size_t		 i, changed = 0;

	/* Nothing to set means no commit, hence no fsync (cost budget). */
	if (n == 0)
		return 0;
	if (lstore_txn_begin(st, 0, &txn) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		switch (lstore_rec_get(st, txn, ids[i], &v, &r)) {
		case GET_OK:
			break;
		case GET_NONE:
		case GET_BAD:
		case GET_NEWER:
			continue;
		case GET_ERR:
			goto abort;
		}
		if (r.flags & STORE_F_READ)
			continue;
		r.flags |= STORE_F_READ;
		if (lstore_rec_put(st, txn, ids[i], &r, 0) == -1)
			goto abort;
		changed++;
	}
	if (changed == 0) {
		mdb_txn_abort(txn);
		return 0;
	}
	return lstore_txn_commit(st, txn);
 abort:
	mdb_txn_abort(txn);
	return -1;
}

/*
 * Build r's recipient list without user's entries into buf (which must
 * hold r->rcpts_len octets); returns how many were dropped.
 */
static size_t
rcpts_without(const struct rec *r, const char *user, unsigned char *buf,
    size_t *len, size_t *left)
{
	const unsigned char	*rc = NULL;
	size_t			 rl, dropped = 0, off = 0, kept = 0;

	while ((rc = rec_rcpt_next(r, rc, &rl)) != NULL) {
		if (rec_rcpt_is(rc, rl, user)) {
			dropped++;
			continue;
		}
		memcpy(buf + off, rc, rl + 1);
		off += rl + 1;
		kept++;
	}
	*len = off;
	*left = kept;
	return dropped;
}

/*
 * Whole-message removal inside txn: a live claim turns it into
 * POP_DELETED (docs/design.md §4.2), otherwise the record goes and *gone
 * is set so the caller unlinks the file after the commit.
 */
static int
remove_or_mark(struct store *st, MDB_txn *txn, uint64_t id, struct rec *r,
    uint64_t now, bool *gone)
{
	*gone = false;
	if (lstore_claim_live(st, r, now)) {
		r->flags |= STORE_F_POP_DELETED;
		return lstore_rec_put(st, txn, id, r, 0);
	}
	if (lstore_rec_del(st, txn, id, r) == -1)
		return -1;
	*gone = true;
	return 0;
}

/*
 * A user session's removal of id: drop only user's recipient entries
 * while others remain (returns 0: done), or say the whole message goes
 * (returns 1).  -1 on error.
 */
static int
remove_user(struct store *st, MDB_txn *txn, uint64_t id, struct rec *r,
    const char *user)
{
	unsigned char	*buf;
	size_t		 left, keptlen;
	int		 ret = 0;

	if ((buf = malloc(r->rcpts_len)) == NULL) {
		log_warn("store %s: remove", st->name);
		return -1;
	}
	if (rcpts_without(r, user, buf, &keptlen, &left) == 0)
		goto out;
	if (left > 0) {
		/* Others still want it: drop only this one. */
		r->rcpts = buf;
		r->rcpts_len = keptlen;
		r->nrcpts = left;
		ret = lstore_rec_put(st, txn, id, r, 0);
		goto out;
	}
	/*
	 * The last recipient: the whole message goes, as for a host
	 * session.  r keeps its recipient list, so a claimed one becomes a
	 * decodable POP_DELETED record that smtp done/release remove (issue
	 * 8 finding 9: an empty list under a nonzero count was written).
	 */
	ret = 1;
 out:
	free(buf);
	return ret;
}

enum store_res
store_remove(struct store *st, const uint64_t *ids, size_t n,
    const char *user)
{
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;
	uint64_t	*unl, now;
	size_t		 i, nunl = 0;
	bool		 gone;
	int		 whole;

	if (n == 0)
		return STORE_OK;
	if ((unl = calloc(n, sizeof(*unl))) == NULL) {
		log_warn("store %s: remove", st->name);
		return STORE_TEMPFAIL;
	}
	if (lstore_txn_begin(st, 0, &txn) == -1) {
		free(unl);
		return STORE_TEMPFAIL;
	}
	now = util_now_us();
	for (i = 0; i < n; i++) {
		switch (lstore_rec_get(st, txn, ids[i], &v, &r)) {
		case GET_OK:
			break;
		case GET_NONE:
		case GET_BAD:
		case GET_NEWER:
			/* Not listable, so not the session's to remove. */
			continue;
		case GET_ERR:
			goto abort;
		}
		if (r.flags & STORE_F_POP_DELETED)
			continue;
		if (user != NULL &&
		    (whole = remove_user(st, txn, ids[i], &r, user)) != 1) {
			if (whole == -1)
				goto abort;
			continue;
		}
		if (remove_or_mark(st, txn, ids[i], &r, now, &gone) == -1)
			goto abort;
		if (gone)
			unl[nunl++] = ids[i];
	}
	fault_point("store.remove.before_commit");
	if (lstore_txn_commit(st, txn) == -1) {
		free(unl);
		return STORE_TEMPFAIL;
	}
	/* A kill from here on leaves orphan files for fsck, nothing else. */
	fault_point("store.remove.committed");
	for (i = 0; i < nunl; i++) {
		lstore_unlink_msg(st, unl[i]);
		fault_point("store.remove.unlinked");
	}
	free(unl);
	return STORE_OK;
 abort:
	mdb_txn_abort(txn);
	free(unl);
	return STORE_TEMPFAIL;
}

static int
valid_agent(const char *agent)
{
	size_t	 i, len = strlen(agent);

	if (len == 0 || len > STORE_AGENT_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)agent[i] <= ' ' ||
		    (unsigned char)agent[i] >= 0x7f)
			return 0;
	return 1;
}

/* Delete id in its own commit and unlink its file afterwards. */
static enum store_res
del_commit(struct store *st, MDB_txn *txn, uint64_t id, struct rec *r)
{
	if (lstore_rec_del(st, txn, id, r) == -1) {
		mdb_txn_abort(txn);
		return STORE_TEMPFAIL;
	}
	fault_point("store.del.before_commit");
	if (lstore_txn_commit(st, txn) == -1)
		return STORE_TEMPFAIL;
	fault_point("store.del.committed");
	lstore_unlink_msg(st, id);
	return STORE_OK;
}

/* Begin a write txn and fetch id; on anything but GET_OK, *res is set. */
static int
marker_begin(struct store *st, uint64_t id, MDB_txn **txn, MDB_val *v,
    struct rec *r, enum store_res *res)
{
	if (lstore_txn_begin(st, 0, txn) == -1) {
		*res = STORE_TEMPFAIL;
		return -1;
	}
	switch (lstore_rec_get(st, *txn, id, v, r)) {
	case GET_OK:
		return 0;
	case GET_NONE:
		*res = STORE_GONE;
		break;
	case GET_BAD:
	case GET_NEWER:
		*res = STORE_PERMFAIL;
		break;
	case GET_ERR:
		*res = STORE_TEMPFAIL;
		break;
	}
	mdb_txn_abort(*txn);
	return -1;
}

/* Write a marker change to the record and commit, or abort. */
static enum store_res
marker_commit(struct store *st, MDB_txn *txn, uint64_t id,
    const struct rec *r)
{
	if (lstore_rec_put(st, txn, id, r, 0) == -1) {
		mdb_txn_abort(txn);
		return STORE_TEMPFAIL;
	}
	fault_point("store.marker.before_commit");
	if (lstore_txn_commit(st, txn) == -1)
		return STORE_TEMPFAIL;
	fault_point("store.marker.committed");
	return STORE_OK;
}

enum store_res
store_claim(struct store *st, uint64_t id, const char *agent)
{
	enum store_res	 res;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;
	uint64_t	 now;

	if (!valid_agent(agent)) {
		log_warnx("store %s: claim %016llx: bad agent name", st->name,
		    (unsigned long long)id);
		return STORE_PERMFAIL;
	}
	if (marker_begin(st, id, &txn, &v, &r, &res) == -1)
		return res;
	now = util_now_us();
	if (r.flags & STORE_F_POP_DELETED) {
		if (lstore_claim_live(st, &r, now)) {
			mdb_txn_abort(txn);
			return STORE_GONE;
		}
		/* Its claimer died: finish the POP3 QUIT's removal. */
		if ((res = del_commit(st, txn, id, &r)) != STORE_OK)
			return res;
		return STORE_GONE;
	}
	if (lstore_claim_live(st, &r, now)) {
		mdb_txn_abort(txn);
		return STORE_BUSY;
	}
	if (r.flags & STORE_F_IN_DELIVERY)
		log_info("store %s: %016llx: stale claim by %.*s taken over",
		    st->name, (unsigned long long)id, (int)r.agent_len,
		    r.agent);
	r.flags |= STORE_F_IN_DELIVERY;
	r.agent = agent;
	r.agent_len = strlen(agent);
	r.claim_us = now;
	return marker_commit(st, txn, id, &r);
}

enum store_res
store_done(struct store *st, uint64_t id)
{
	enum store_res	 res;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;

	if (marker_begin(st, id, &txn, &v, &r, &res) == -1)
		return res;
	return del_commit(st, txn, id, &r);
}

enum store_res
store_release(struct store *st, uint64_t id)
{
	enum store_res	 res;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;

	if (marker_begin(st, id, &txn, &v, &r, &res) == -1)
		return res;
	if (r.flags & STORE_F_POP_DELETED)
		return del_commit(st, txn, id, &r);
	if ((r.flags & STORE_F_IN_DELIVERY) == 0) {
		mdb_txn_abort(txn);
		return STORE_OK;
	}
	r.flags &= ~(uint32_t)STORE_F_IN_DELIVERY;
	r.agent = "";
	r.agent_len = 0;
	r.claim_us = 0;
	return marker_commit(st, txn, id, &r);
}

enum store_res
store_expire(struct store *st, uint64_t id)
{
	enum store_res	 res;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;

	if (marker_begin(st, id, &txn, &v, &r, &res) == -1)
		return res;
	if (lstore_claim_live(st, &r, util_now_us())) {
		mdb_txn_abort(txn);
		return STORE_BUSY;
	}
	return del_commit(st, txn, id, &r);
}
