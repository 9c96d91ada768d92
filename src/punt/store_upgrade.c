/*
 * store_upgrade: a format-1 punt to index format 2, crash-safe
 * (docs/design.md §18.4).  The steps, each its own write
 * transaction: mark (version 2 + the "upgrade" marker, so every binary
 * refuses the punt), copy in batches (each batch's records and the
 * frontier that says they are done in one commit), verify + switch (one
 * commit empties msg/host and removes the marker).  The old databases
 * are not written before that last commit, so a kill anywhere leaves
 * either the complete format-1 data (new databases partial and unused)
 * or the complete format 2.  Spool files are never touched: ids, and so
 * file names, do not change.
 *
 * Crash points (SDPS_FAULT, §6.4): upgrade.marked,
 * upgrade.batch.before_commit and upgrade.batch.committed (the N-th hit
 * is batch N), upgrade.switch.before_commit, upgrade.switched,
 * upgrade.abort.before_commit, upgrade.aborted.
 */

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/fault.h"
#include "sdps/log.h"
#include "sdps/record.h"
#include "sdps/store.h"
#include "store_int.h"

#define UPG_BATCH	8192
#define UPG_MARK_LEN	16	/* "upgrade": frontier id u64 LE, copied u64 LE */

struct upg {
	struct store	 st;	/* env, meta, rec, id, hosts, name: what
				 * lstore_rec_insert needs */
	MDB_dbi		 msg, host;
	uint32_t	 version;
	bool		 marked;
	uint64_t	 frontier, copied;
	char		*err;
	size_t		 errlen;
};

/* mdb_reader_list's lines: "%10d %zx %s\n" after a header line. */
struct readers {
	pid_t	 self, other;
};

static int
reader_line(const char *line, void *arg)
{
	struct readers	*r = arg;
	int		 pid;

	if (sscanf(line, "%d", &pid) == 1 && pid > 0 && pid != r->self &&
	    r->other == 0)
		r->other = pid;
	return 0;
}

/*
 * Another process has the environment open (a reader slot with its pid,
 * held from its first read until mdb_env_close, idle or not): refuse.
 */
static int
readers_check(struct upg *u)
{
	struct readers	 r = { getpid(), 0 };
	int		 dead;

	(void)mdb_reader_check(u->st.env, &dead);
	(void)mdb_reader_list(u->st.env, reader_line, &r);
	if (r.other == 0)
		return 0;
	lstore_seterr(u->err, u->errlen, "punt in use by pid %d: stop it "
	    "(or wait for it to close the punt) and run again", (int)r.other);
	return -1;
}

static int
mdb_err(struct upg *u, const char *what, int rc)
{
	lstore_seterr(u->err, u->errlen, "%s: %s", what, mdb_strerror(rc));
	return -1;
}

/* path/index exists with its data file (mdb_env_open would create one). */
static int
upg_open(struct upg *u, const char *path, const char *name, uint64_t map)
{
	char		 dir[PATH_MAX], file[PATH_MAX + 16];
	struct stat	 sb;

	snprintf(u->st.name, sizeof(u->st.name), "%s", name);
	if (snprintf(dir, sizeof(dir), "%s/index", path) >= (int)sizeof(dir))
		return mdb_err(u, path, ENAMETOOLONG);
	snprintf(file, sizeof(file), "%s/data.mdb", dir);
	if (stat(file, &sb) == -1) {
		lstore_seterr(u->err, u->errlen, "%s: not a punt (no index)",
		    path);
		return -1;
	}
	return lstore_env_open(dir, map, &u->st.env, u->err, u->errlen);
}

static int
meta_get(struct upg *u, MDB_txn *txn, const char *k, MDB_val *v)
{
	MDB_val	 key;

	key.mv_size = strlen(k);
	key.mv_data = (void *)(uintptr_t)k;
	return mdb_get(txn, u->st.meta, &key, v);
}

static int
meta_del(struct upg *u, MDB_txn *txn, const char *k)
{
	MDB_val	 key;
	int	 rc;

	key.mv_size = strlen(k);
	key.mv_data = (void *)(uintptr_t)k;
	rc = mdb_del(txn, u->st.meta, &key, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Name, version and marker, in txn; the msg and host handles. */
static int
read_state(struct upg *u, MDB_txn *txn)
{
	MDB_val	 v;
	int	 rc;

	if ((rc = mdb_dbi_open(txn, LSTORE_DB_META, 0, &u->st.meta)) != 0)
		return mdb_err(u, "index: meta", rc);
	if (meta_get(u, txn, "name", &v) != 0 ||
	    v.mv_size != strlen(u->st.name) ||
	    memcmp(v.mv_data, u->st.name, v.mv_size) != 0) {
		lstore_seterr(u->err, u->errlen, "not punt %s", u->st.name);
		return -1;
	}
	if (meta_get(u, txn, LSTORE_META_VERSION, &v) != 0 ||
	    v.mv_size != 4) {
		lstore_seterr(u->err, u->errlen, "missing format version");
		return -1;
	}
	u->version = rec_get_le32(v.mv_data);
	if (u->version > REC_PUNT_FORMAT || u->version == 0) {
		lstore_seterr(u->err, u->errlen, "punt format version %u is not "
		    "one this binary knows (1, %u): nothing changed",
		    (unsigned)u->version, REC_PUNT_FORMAT);
		return -1;
	}
	if ((rc = meta_get(u, txn, LSTORE_META_UPGRADE, &v)) == 0 &&
	    v.mv_size == UPG_MARK_LEN && u->version == REC_PUNT_FORMAT) {
		u->marked = true;
		u->frontier = rec_get_le64(v.mv_data);
		u->copied = rec_get_le64((unsigned char *)v.mv_data + 8);
	} else if (rc == 0 && u->version == REC_PUNT_FORMAT) {
		lstore_seterr(u->err, u->errlen, "bad upgrade marker");
		return -1;
	}
	if ((rc = mdb_dbi_open(txn, LSTORE_DB_MSG, 0, &u->msg)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_HOST, LSTORE_DB_HOST_FLAGS,
	    &u->host)) != 0)
		return mdb_err(u, "index: msg/host", rc);
	return 0;
}

/* rec, id and hosts: created (mark) or opened (resume, abort). */
static int
open_new_dbs(struct upg *u, MDB_txn *txn, unsigned flags)
{
	int	 rc;

	if ((rc = mdb_dbi_open(txn, LSTORE_DB_REC, flags, &u->st.rec)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_ID, flags, &u->st.id)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_HOSTS, flags,
	    &u->st.hosts)) != 0)
		return rc;
	return 0;
}

/*
 * Step 0 (§6.1): every record decodes, none is of a newer record
 * version, and "host" holds exactly one entry per record.  *n the count.
 */
static int
check_records(struct upg *u, MDB_txn *txn, uint64_t *n)
{
	MDB_cursor	*cur, *hc;
	MDB_val		 k, v, hk, hv;
	MDB_stat	 hs;
	struct rec	 r;
	uint64_t	 faults = 0;
	int		 rc, op = MDB_FIRST;

	*n = 0;
	if ((rc = mdb_cursor_open(txn, u->msg, &cur)) != 0)
		return mdb_err(u, "cursor msg", rc);
	if ((rc = mdb_cursor_open(txn, u->host, &hc)) != 0) {
		mdb_cursor_close(cur);
		return mdb_err(u, "cursor host", rc);
	}
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		(*n)++;
		if (k.mv_size != REC_ID_LEN) {
			faults++;
			continue;
		}
		switch (rec_decode(v.mv_data, v.mv_size, &r)) {
		case REC_OK:
			break;
		case REC_NEWER:
			lstore_seterr(u->err, u->errlen, "record %016llx is of "
			    "record version %u (this binary knows %u): upgrade "
			    "with a binary that knows record version %u "
			    "(nothing changed)",
			    (unsigned long long)rec_key_id(k.mv_data),
			    rec_version(v.mv_data, v.mv_size), REC_VERSION,
			    rec_version(v.mv_data, v.mv_size));
			goto fail;
		case REC_CORRUPT:
			faults++;
			continue;
		}
		hk.mv_size = r.host_len;
		hk.mv_data = (void *)(uintptr_t)r.host;
		hv = k;
		if (r.host_len == 0 ||
		    mdb_cursor_get(hc, &hk, &hv, MDB_GET_BOTH) != 0)
			faults++;
	}
	if (rc != MDB_NOTFOUND) {
		mdb_err(u, "read msg", rc);
		goto fail;
	}
	if ((rc = mdb_stat(txn, u->host, &hs)) != 0) {
		mdb_err(u, "stat host", rc);
		goto fail;
	}
	if (hs.ms_entries != *n)
		faults++;
	mdb_cursor_close(hc);
	mdb_cursor_close(cur);
	if (faults == 0)
		return 0;
	lstore_seterr(u->err, u->errlen, "%llu index fault%s (undecodable "
	    "records or host entries that do not match): run sdps-ctl fsck "
	    "--repair first, with the format-1 binary (nothing changed)",
	    (unsigned long long)faults, faults == 1 ? "" : "s");
	return -1;
 fail:
	mdb_cursor_close(hc);
	mdb_cursor_close(cur);
	return -1;
}

static uint64_t
db_pages(const MDB_stat *s)
{
	return s->ms_branch_pages + s->ms_leaf_pages + s->ms_overflow_pages;
}

/* The copy needs about 1.3x the msg+host pages (§6.1, measured). */
static int
check_map(struct upg *u, MDB_txn *txn)
{
	MDB_envinfo	 ei;
	MDB_stat	 es, ms, hs;
	uint64_t	 used, need;
	int		 rc;

	if ((rc = mdb_env_info(u->st.env, &ei)) != 0 ||
	    (rc = mdb_env_stat(u->st.env, &es)) != 0 ||
	    (rc = mdb_stat(txn, u->msg, &ms)) != 0 ||
	    (rc = mdb_stat(txn, u->host, &hs)) != 0)
		return mdb_err(u, "stat", rc);
	used = ((uint64_t)ei.me_last_pgno + 1) * es.ms_psize;
	need = (db_pages(&ms) + db_pages(&hs)) * es.ms_psize / 10 * 13;
	if (used + need <= ei.me_mapsize)
		return 0;
	lstore_seterr(u->err, u->errlen, "the copy needs about %llu MB of map "
	    "beside the %llu MB used, the map is %llu MB: raise [store] "
	    "map_size_mb (nothing changed)",
	    (unsigned long long)(need >> 20) + 1,
	    (unsigned long long)(used >> 20),
	    (unsigned long long)(ei.me_mapsize >> 20));
	return -1;
}

static int
marker_put(struct upg *u, MDB_txn *txn)
{
	unsigned char	 b[UPG_MARK_LEN];

	rec_put_le64(b, u->frontier);
	rec_put_le64(b + 8, u->copied);
	return lstore_meta_put(txn, u->st.meta, LSTORE_META_UPGRADE, b,
	    sizeof(b));
}

/* Step A in txn: version 2, next_hid 1, the marker; new dbs empty. */
static int
mark(struct upg *u, MDB_txn *txn)
{
	unsigned char	 b[4];
	MDB_stat	 s[3];
	int		 rc;

	if ((rc = open_new_dbs(u, txn, MDB_CREATE)) != 0)
		return mdb_err(u, "create rec/id/hosts", rc);
	if ((rc = mdb_stat(txn, u->st.rec, &s[0])) != 0 ||
	    (rc = mdb_stat(txn, u->st.id, &s[1])) != 0 ||
	    (rc = mdb_stat(txn, u->st.hosts, &s[2])) != 0)
		return mdb_err(u, "stat", rc);
	if (s[0].ms_entries + s[1].ms_entries + s[2].ms_entries != 0) {
		lstore_seterr(u->err, u->errlen, "format 1 with a non-empty "
		    "rec/id/hosts: not upgraded (nothing changed)");
		return -1;
	}
	u->frontier = u->copied = 0;
	rec_put_le32(b, REC_PUNT_FORMAT);
	if ((rc = lstore_meta_put(txn, u->st.meta, LSTORE_META_VERSION, b,
	    4)) != 0)
		return mdb_err(u, "mark", rc);
	rec_put_le32(b, 1);
	if ((rc = lstore_meta_put(txn, u->st.meta, LSTORE_META_NEXT_HID, b,
	    4)) != 0 || (rc = marker_put(u, txn)) != 0)
		return mdb_err(u, "mark", rc);
	return 0;
}

/*
 * Abort in txn (committed here): rec, id and hosts emptied, next_hid and
 * the marker gone, version 1.  msg and host were never written.
 */
static int
abort_in(struct upg *u, MDB_txn *txn)
{
	unsigned char	 b[4];
	int		 rc;

	if ((rc = open_new_dbs(u, txn, 0)) != 0 && rc != MDB_NOTFOUND)
		goto fail;
	if (rc == 0 && ((rc = mdb_drop(txn, u->st.rec, 0)) != 0 ||
	    (rc = mdb_drop(txn, u->st.id, 0)) != 0 ||
	    (rc = mdb_drop(txn, u->st.hosts, 0)) != 0))
		goto fail;
	rec_put_le32(b, 1);
	if ((rc = meta_del(u, txn, LSTORE_META_NEXT_HID)) != 0 ||
	    (rc = meta_del(u, txn, LSTORE_META_UPGRADE)) != 0 ||
	    (rc = lstore_meta_put(txn, u->st.meta, LSTORE_META_VERSION, b,
	    4)) != 0)
		goto fail;
	fault_point("upgrade.abort.before_commit");
	if ((rc = mdb_txn_commit(txn)) != 0)
		return mdb_err(u, "abort: commit", rc);
	fault_point("upgrade.aborted");
	return 0;
 fail:
	mdb_txn_abort(txn);
	return mdb_err(u, "abort", rc);
}

/*
 * One batch (§6.3): the next <= max records after the frontier, copied,
 * with the new frontier, in one commit.  *n 0 (nothing committed) when
 * the copy is complete.
 */
static int
copy_batch(struct upg *u, size_t max, size_t *n)
{
	unsigned char	 k[REC_ID_LEN];
	MDB_cursor	*cur;
	MDB_txn		*txn;
	MDB_val		 key, val;
	struct rec	 r;
	int		 rc;

	*n = 0;
	if ((rc = mdb_txn_begin(u->st.env, NULL, 0, &txn)) != 0)
		return mdb_err(u, "batch: begin", rc);
	if ((rc = mdb_cursor_open(txn, u->msg, &cur)) != 0) {
		mdb_txn_abort(txn);
		return mdb_err(u, "batch: cursor", rc);
	}
	rec_id_key(u->frontier + 1, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	    rc == 0 && *n < max;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != REC_ID_LEN ||
		    rec_decode(val.mv_data, val.mv_size, &r) != REC_OK ||
		    lstore_rec_insert(&u->st, txn, rec_key_id(key.mv_data),
		    &r) == -1) {
			lstore_seterr(u->err, u->errlen, "copy failed after "
			    "record %016llx (syslog has the reason; a full "
			    "map: raise [store] map_size_mb and run again, or "
			    "--abort)", (unsigned long long)u->frontier);
			goto fail;
		}
		u->frontier = rec_key_id(key.mv_data);
		(*n)++;
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return mdb_err(u, "batch: read msg", rc);
	}
	if (*n == 0) {
		mdb_txn_abort(txn);
		return 0;
	}
	u->copied += *n;
	if ((rc = marker_put(u, txn)) != 0) {
		mdb_txn_abort(txn);
		return mdb_err(u, "batch: frontier", rc);
	}
	fault_point("upgrade.batch.before_commit");
	if ((rc = mdb_txn_commit(txn)) != 0)
		return mdb_err(u, rc == MDB_MAP_FULL ? "batch: commit (raise "
		    "[store] map_size_mb and run again, or --abort)" :
		    "batch: commit", rc);
	fault_point("upgrade.batch.committed");
	return 0;
 fail:
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return -1;
}

/* Step C (§6.2): the counts agree, msg and host emptied, marker gone. */
static int
verify_switch(struct upg *u, uint64_t *records)
{
	MDB_stat	 rs, is, ms, hs;
	MDB_txn		*txn;
	int		 rc;

	if ((rc = mdb_txn_begin(u->st.env, NULL, 0, &txn)) != 0)
		return mdb_err(u, "switch: begin", rc);
	if ((rc = mdb_stat(txn, u->st.rec, &rs)) != 0 ||
	    (rc = mdb_stat(txn, u->st.id, &is)) != 0 ||
	    (rc = mdb_stat(txn, u->msg, &ms)) != 0 ||
	    (rc = mdb_stat(txn, u->host, &hs)) != 0)
		goto fail;
	*records = ms.ms_entries;
	if (rs.ms_entries != ms.ms_entries || is.ms_entries != ms.ms_entries ||
	    hs.ms_entries != ms.ms_entries || u->copied != ms.ms_entries) {
		mdb_txn_abort(txn);
		lstore_seterr(u->err, u->errlen, "verify failed (rec %zu, id "
		    "%zu, msg %zu, host %zu, copied %llu): not switched, the "
		    "format-1 data is intact; --abort rolls back",
		    rs.ms_entries, is.ms_entries, ms.ms_entries, hs.ms_entries,
		    (unsigned long long)u->copied);
		return -1;
	}
	if ((rc = mdb_drop(txn, u->msg, 0)) != 0 ||
	    (rc = mdb_drop(txn, u->host, 0)) != 0 ||
	    (rc = meta_del(u, txn, LSTORE_META_UPGRADE)) != 0)
		goto fail;
	fault_point("upgrade.switch.before_commit");
	if ((rc = mdb_txn_commit(txn)) != 0)
		return mdb_err(u, "switch: commit", rc);
	fault_point("upgrade.switched");
	return 0;
 fail:
	mdb_txn_abort(txn);
	return mdb_err(u, "switch", rc);
}

/*
 * Step 0 and A, or the resume of a marked punt, or the abort, in the
 * first write transaction.  1 when the call is over (*out set), 0 to go
 * on copying, -1 on refusal.
 */
static int
begin(struct upg *u, const struct store_upgrade_opts *o,
    struct store_upgrade_res *out)
{
	MDB_txn		*txn;
	int		 rc;

	if ((rc = mdb_txn_begin(u->st.env, NULL, 0, &txn)) != 0)
		return mdb_err(u, "begin", rc);
	if (read_state(u, txn) == -1)
		goto fail;
	if (u->version == REC_PUNT_FORMAT && !u->marked) {
		mdb_txn_abort(txn);
		if (o->abort) {
			lstore_seterr(u->err, u->errlen, "format 2, no upgrade "
			    "in progress: nothing to abort (nothing changed)");
			return -1;
		}
		out->done = STORE_UPGRADE_NOOP;
		return 1;
	}
	if (readers_check(u) == -1)
		goto fail;
	if (o->abort) {
		if (!u->marked) {
			mdb_txn_abort(txn);
			out->done = STORE_UPGRADE_NOABORT;
			return 1;
		}
		if (abort_in(u, txn) == -1)
			return -1;
		out->done = STORE_UPGRADE_ABORTED;
		return 1;
	}
	if (u->marked) {
		out->resumed = true;
		if ((rc = open_new_dbs(u, txn, 0)) != 0) {
			mdb_err(u, "resume: rec/id/hosts", rc);
			goto fail;
		}
	} else if (check_records(u, txn, &out->records) == -1 ||
	    check_map(u, txn) == -1 || mark(u, txn) == -1)
		goto fail;
	/* The handles opened here live on only if this txn commits. */
	if ((rc = mdb_txn_commit(txn)) != 0)
		return mdb_err(u, "mark: commit", rc);
	if (out->resumed)
		return 0;
	fault_point("upgrade.marked");
	/* A reader that began before the mark's commit shows by now. */
	if (readers_check(u) == 0)
		return 0;
	if ((rc = mdb_txn_begin(u->st.env, NULL, 0, &txn)) != 0 ||
	    abort_in(u, txn) == -1)
		log_warnx("store %s: upgrade: rollback after the second reader "
		    "check failed: the punt stays marked (--abort)", u->st.name);
	return -1;
 fail:
	mdb_txn_abort(txn);
	return -1;
}

int
store_upgrade(const char *path, const char *name,
    const struct store_upgrade_opts *o, struct store_upgrade_res *out,
    char *err, size_t errlen)
{
	struct upg	 u;
	size_t		 n, batch = o->batch ? o->batch : UPG_BATCH;
	int		 rc;

	memset(out, 0, sizeof(*out));
	memset(&u, 0, sizeof(u));
	u.err = err;
	u.errlen = errlen;
	if (upg_open(&u, path, name, o->map_size) == -1)
		return -1;
	if ((rc = begin(&u, o, out)) != 0)
		goto done;
	do {
		if ((rc = copy_batch(&u, batch, &n)) == -1)
			goto done;
		out->copied += n;
		out->batches += n > 0;
	} while (n > 0);
	if ((rc = verify_switch(&u, &out->records)) == 0) {
		out->done = STORE_UPGRADED;
		log_info("store %s: upgraded to index format %u: %llu records",
		    name, REC_PUNT_FORMAT, (unsigned long long)out->records);
	}
 done:
	mdb_env_close(u.st.env);
	return rc == -1 ? -1 : 0;
}
