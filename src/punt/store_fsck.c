/*
 * store_fsck: compare a local punt's index and spool (docs/design.md §5),
 * and with repair make them agree.  The index is checked against itself
 * in one snapshot first, then the files against the index; every repair
 * that removes something decides inside a write transaction.
 */

#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "store_int.h"

#define STORE_TMP_GRACE_S	3600	/* a tmp file this old is abandoned */

/* fsck: index first (one snapshot), then files against the index. */

/* Index faults of format 2 (docs/design.md §5.7). */
enum fix_kind {
	FIX_BADREC,	/* undecodable record: delete it and its id entry */
	FIX_NOID,	/* id entry missing or not the key's: put it */
	FIX_REKEY,	/* record under another host's or arrival's key */
	FIX_STRAY	/* id entry naming no record: delete it */
};

#define FSCK_FIX_BATCH	8192	/* fixes per repair transaction */

struct fix {
	enum fix_kind	 kind;
	uint64_t	 id;
	unsigned char	 k[REC_HKEY_LEN];	/* the "rec" key scanned */
	char		 host[UTIL_HOST_MAX + 1];
	bool		 done;
};

/* hosts, by host id, for checking each key's host (one scan). */
struct fhost {
	uint32_t	 hid;
	const char	*name;		/* in the scan's snapshot */
	size_t		 len;
};

struct fent {
	uint64_t	 id, stored_octets;
	bool		 newer;		/* unknown version: no size known */
};

struct fsck {
	struct store	*st;
	bool		 repair;
	struct store_fsck *out;
	store_report_fn	*report;
	void		*arg;
	uint64_t	 left;		/* problems not repaired */
	struct fix	*fix;
	size_t		 nfix, capfix;
	struct fent	*ent;
	size_t		 nent, capent;
	struct fhost	*hosts;
	size_t		 nhosts, caphosts;
};

static void fsck_say(struct fsck *, bool, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static void
fsck_line(struct fsck *f, const char *msg, const char *suffix)
{
	char	 line[512];

	if (f->report == NULL)
		return;
	snprintf(line, sizeof(line), "punt %s: %s%s", f->st->name, msg,
	    suffix);
	f->report(line, f->arg);
}

/* One report line per problem, saying whether it was repaired. */
static void
fsck_say(struct fsck *f, bool fixed, const char *fmt, ...)
{
	char	 msg[400];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (fixed)
		f->out->repaired++;
	else
		f->left++;
	fsck_line(f, msg, fixed ? " (repaired)" : "");
}

/*
 * A record of a version this binary does not know (include/sdps/
 * record.h): another binary's, not a fault.  It is reported, counted
 * apart and never repaired: not the record, not its host index entry,
 * not its spool file.
 */
static void
fsck_newer(struct fsck *f, uint64_t id, const MDB_val *v)
{
	char	 msg[400];

	f->out->unknown_version++;
	snprintf(msg, sizeof(msg), "record %016llx: unknown record version "
	    "%u (this binary knows %u), left alone with its file",
	    (unsigned long long)id, rec_version(v->mv_data, v->mv_size),
	    REC_VERSION);
	fsck_line(f, msg, "");
}

static int
grow(void **p, size_t *cap, size_t n, size_t size)
{
	void	*np;
	size_t	 ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 256;
	if ((np = reallocarray(*p, ncap, size)) == NULL)
		return -1;
	*p = np;
	*cap = ncap;
	return 0;
}

static int
add_fix(struct fsck *f, enum fix_kind kind, uint64_t id,
    const unsigned char *k, const char *host, size_t hlen)
{
	struct fix	*x;

	if (grow((void **)&f->fix, &f->capfix, f->nfix, sizeof(*f->fix)) == -1)
		return -1;
	x = &f->fix[f->nfix++];
	memset(x, 0, sizeof(*x));
	x->kind = kind;
	x->id = id;
	if (k != NULL)
		memcpy(x->k, k, REC_HKEY_LEN);
	if (host != NULL) {
		if (hlen > UTIL_HOST_MAX)
			hlen = UTIL_HOST_MAX;
		memcpy(x->host, host, hlen);
	}
	return 0;
}

static int
fhost_cmp(const void *pa, const void *pb)
{
	const struct fhost *a = pa, *b = pb;

	return a->hid < b->hid ? -1 : a->hid > b->hid;
}

static int
fent_cmp(const void *pa, const void *pb)
{
	const struct fent *a = pa, *b = pb;

	return a->id < b->id ? -1 : a->id > b->id;
}

/* The host named by hid in the hosts table, or NULL. */
static const struct fhost *
find_host(const struct fsck *f, uint32_t hid)
{
	struct fhost	 key = { hid, NULL, 0 };

	if (f->nhosts == 0)
		return NULL;
	return bsearch(&key, f->hosts, f->nhosts, sizeof(*f->hosts),
	    fhost_cmp);
}

/* Pass over "hosts": the hid -> name table; ids distinct, below next_hid. */
static int
fsck_scan_hostids(struct fsck *f, MDB_txn *txn)
{
	MDB_cursor	*cur;
	MDB_val		 key, val;
	MDB_cursor_op	 op;
	uint64_t	 next = 0;
	size_t		 i;
	int		 rc;

	key.mv_size = strlen(LSTORE_META_NEXT_HID);
	key.mv_data = LSTORE_META_NEXT_HID;
	if (mdb_get(txn, f->st->meta, &key, &val) == 0 && val.mv_size == 4)
		next = rec_get_le32(val.mv_data);
	else
		fsck_say(f, false, "meta next_hid missing or of a bad size");
	if (mdb_cursor_open(txn, f->st->hosts, &cur) != 0)
		return -1;
	for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &key, &val, op)) == 0;
	    op = MDB_NEXT) {
		if (val.mv_size != REC_HID_LEN || key.mv_size == 0 ||
		    key.mv_size > UTIL_HOST_MAX) {
			f->out->bad_records++;
			fsck_say(f, false, "hosts entry of a bad size");
			continue;
		}
		if (grow((void **)&f->hosts, &f->caphosts, f->nhosts,
		    sizeof(*f->hosts)) == -1)
			break;
		f->hosts[f->nhosts].hid = rec_key_hid(val.mv_data);
		f->hosts[f->nhosts].name = key.mv_data;
		f->hosts[f->nhosts].len = key.mv_size;
		if (next != 0 && (f->hosts[f->nhosts].hid == 0 ||
		    f->hosts[f->nhosts].hid >= next)) {
			f->out->bad_records++;
			fsck_say(f, false, "hosts: %.*s has host id %u, not "
			    "below next_hid %llu", (int)key.mv_size,
			    (char *)key.mv_data, f->hosts[f->nhosts].hid,
			    (unsigned long long)next);
		}
		f->nhosts++;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return -1;
	if (f->nhosts > 1)
		qsort(f->hosts, f->nhosts, sizeof(*f->hosts), fhost_cmp);
	for (i = 1; i < f->nhosts; i++)
		if (f->hosts[i].hid == f->hosts[i - 1].hid) {
			f->out->bad_records++;
			fsck_say(f, false, "hosts: host id %u used twice",
			    f->hosts[i].hid);
		}
	return 0;
}

/* A decoded record under key k: its host, its arrival, its id entry. */
static int
check_rec(struct fsck *f, MDB_txn *txn, const unsigned char *k,
    const struct rec *r)
{
	const struct fhost *h;
	MDB_val		 key, val;
	uint64_t	 arrival, id;
	uint32_t	 hid;
	int		 rc;

	rec_hkey_split(k, &hid, &arrival, &id);
	h = find_host(f, hid);
	if (h == NULL || h->len != r->host_len ||
	    memcmp(h->name, r->host, h->len) != 0 || arrival != r->arrival_us)
		return add_fix(f, FIX_REKEY, id, k, r->host, r->host_len);
	key.mv_size = REC_ID_LEN;
	key.mv_data = (void *)(uintptr_t)(k + REC_HPFX_LEN);
	if ((rc = mdb_get(txn, f->st->id, &key, &val)) != 0 &&
	    rc != MDB_NOTFOUND)
		return -1;
	if (rc == MDB_NOTFOUND || val.mv_size != REC_HPFX_LEN ||
	    memcmp(val.mv_data, k, REC_HPFX_LEN) != 0)
		return add_fix(f, FIX_NOID, id, k, r->host, r->host_len);
	return 0;
}

/* Pass over "rec": collect records (for the file pass) and faults. */
static int
fsck_scan_msgs(struct fsck *f, MDB_txn *txn)
{
	MDB_cursor	*cur;
	MDB_val		 key, val;
	MDB_cursor_op	 op;
	struct rec	 r;
	enum rec_res	 dr;
	uint64_t	 id;
	int		 rc, ret = 0;

	if (mdb_cursor_open(txn, f->st->rec, &cur) != 0)
		return -1;
	for (op = MDB_FIRST; ret == 0 &&
	    (rc = mdb_cursor_get(cur, &key, &val, op)) == 0; op = MDB_NEXT) {
		f->out->msgs_checked++;
		if (key.mv_size != REC_HKEY_LEN) {
			f->out->bad_records++;
			fsck_say(f, false, "record with a bad key");
			continue;
		}
		id = rec_key_id((unsigned char *)key.mv_data + REC_HPFX_LEN);
		if ((dr = rec_decode(val.mv_data, val.mv_size, &r)) ==
		    REC_CORRUPT) {
			ret = add_fix(f, FIX_BADREC, id, key.mv_data, NULL, 0);
			continue;
		}
		if (grow((void **)&f->ent, &f->capent, f->nent,
		    sizeof(*f->ent)) == -1) {
			ret = -1;
			break;
		}
		f->ent[f->nent].id = id;
		f->ent[f->nent].newer = dr == REC_NEWER;
		f->ent[f->nent].stored_octets = dr == REC_OK ?
		    r.stored_octets : 0;
		f->nent++;
		if (dr == REC_NEWER)
			fsck_newer(f, id, &val);
		else
			ret = check_rec(f, txn, key.mv_data, &r);
	}
	mdb_cursor_close(cur);
	if (ret == -1 || (rc != 0 && rc != MDB_NOTFOUND))
		return -1;
	/* Key order is host order: find_ent needs id order. */
	if (f->nent > 1)
		qsort(f->ent, f->nent, sizeof(*f->ent), fent_cmp);
	return 0;
}

/* The scanned record id, or NULL. */
static const struct fent *
find_ent(const struct fsck *f, uint64_t id)
{
	struct fent	 key = { id, 0, false };

	if (f->nent == 0)
		return NULL;
	return bsearch(&key, f->ent, f->nent, sizeof(*f->ent), fent_cmp);
}

/* Pass over "id": every entry must name an existing "rec" key. */
static int
fsck_scan_ids(struct fsck *f, MDB_txn *txn)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_cursor	*cur;
	MDB_val		 key, val, rk, rv;
	MDB_cursor_op	 op;
	int		 rc, ret = 0;

	if (mdb_cursor_open(txn, f->st->id, &cur) != 0)
		return -1;
	for (op = MDB_FIRST; ret == 0 &&
	    (rc = mdb_cursor_get(cur, &key, &val, op)) == 0; op = MDB_NEXT) {
		if (key.mv_size != REC_ID_LEN) {
			f->out->bad_records++;
			fsck_say(f, false, "id index entry of a bad size");
			continue;
		}
		memset(k, 0, sizeof(k));
		if (val.mv_size == REC_HPFX_LEN)
			memcpy(k, val.mv_data, REC_HPFX_LEN);
		memcpy(k + REC_HPFX_LEN, key.mv_data, REC_ID_LEN);
		rk.mv_size = sizeof(k);
		rk.mv_data = k;
		if (val.mv_size == REC_HPFX_LEN &&
		    (rc = mdb_get(txn, f->st->rec, &rk, &rv)) != MDB_NOTFOUND) {
			if (rc != 0)
				ret = -1;
			continue;
		}
		ret = add_fix(f, FIX_STRAY, rec_key_id(key.mv_data), NULL,
		    NULL, 0);
	}
	mdb_cursor_close(cur);
	if (ret == -1 || (rc != 0 && rc != MDB_NOTFOUND))
		return -1;
	return 0;
}

static int
id_del(struct store *st, MDB_txn *txn, uint64_t id)
{
	unsigned char	 k[REC_ID_LEN];
	MDB_val		 key;
	int		 rc;

	rec_id_key(id, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	if ((rc = mdb_del(txn, st->id, &key, NULL)) != 0 &&
	    rc != MDB_NOTFOUND)
		return -1;
	return 0;
}

/* Is x's id entry still pointing nowhere (in txn)? */
static int
id_stray(struct store *st, MDB_txn *txn, uint64_t id)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_val		 key, val;
	int		 rc;

	switch (lstore_rec_key(st, txn, id, k)) {
	case GET_NONE:
		return 0;
	case GET_BAD:
		return 1;
	case GET_OK:
		break;
	default:
		return -1;
	}
	key.mv_size = sizeof(k);
	key.mv_data = k;
	if ((rc = mdb_get(txn, st->rec, &key, &val)) == MDB_NOTFOUND)
		return 1;
	return rc == 0 ? 0 : -1;
}

/* Repair one index fault inside txn, rechecking it there first. */
static int
fix_one(struct fsck *f, MDB_txn *txn, struct fix *x)
{
	struct store	*st = f->st;
	unsigned char	 k[REC_HKEY_LEN];
	MDB_val		 key = { REC_HKEY_LEN, x->k }, val;
	struct rec	 r;
	int		 rc;

	if (x->kind == FIX_STRAY) {
		if ((rc = id_stray(st, txn, x->id)) == 1)
			rc = id_del(st, txn, x->id);
		return rc == -1 ? -1 : 0;
	}
	/* The record scanned under x->k: gone meanwhile is fixed. */
	if ((rc = mdb_get(txn, st->rec, &key, &val)) == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return -1;
	switch (x->kind) {
	case FIX_BADREC:
		if (rec_decode(val.mv_data, val.mv_size, &r) != REC_CORRUPT)
			return 0;
		if (mdb_del(txn, st->rec, &key, NULL) != 0)
			return -1;
		if (lstore_rec_key(st, txn, x->id, k) == GET_OK &&
		    memcmp(k, x->k, REC_HPFX_LEN) == 0)
			return id_del(st, txn, x->id);
		return 0;
	case FIX_NOID:
		return lstore_id_put(st, txn, x->k, 0);
	case FIX_REKEY:
		return lstore_rec_rekey(st, txn, x->id, x->k, &val);
	case FIX_STRAY:
		break;
	}
	return 0;
}

/* Apply the index faults, FSCK_FIX_BATCH to a write transaction. */
static int
fsck_index_repair(struct fsck *f)
{
	MDB_txn		*txn;
	size_t		 i, j;

	for (i = 0; i < f->nfix; i = j) {
		if (lstore_txn_begin(f->st, 0, &txn) == -1)
			return -1;
		for (j = i; j < f->nfix && j < i + FSCK_FIX_BATCH; j++)
			if (fix_one(f, txn, &f->fix[j]) == -1)
				break;
		if (j < f->nfix && j < i + FSCK_FIX_BATCH) {
			log_warnx("store %s: fsck: repair failed", f->st->name);
			mdb_txn_abort(txn);
			return -1;
		}
		if (lstore_txn_commit(f->st, txn) == -1)
			return -1;
		/* Only a committed batch counts as repaired. */
		for (; i < j; i++)
			f->fix[i].done = true;
	}
	return 0;
}

/* Apply (with repair) and report the index faults. */
static int
fsck_index_fix(struct fsck *f)
{
	struct fix	*x;
	size_t		 i;

	if (f->nfix == 0)
		return 0;
	if (f->repair && fsck_index_repair(f) == -1)
		return -1;
	for (i = 0; i < f->nfix; i++) {
		x = &f->fix[i];
		f->out->bad_records++;
		switch (x->kind) {
		case FIX_BADREC:
			fsck_say(f, x->done, "record %016llx: undecodable",
			    (unsigned long long)x->id);
			break;
		case FIX_NOID:
			fsck_say(f, x->done, "record %016llx (%s): missing "
			    "from the id index", (unsigned long long)x->id,
			    x->host);
			break;
		case FIX_REKEY:
			fsck_say(f, x->done, "record %016llx (%s): under "
			    "another host's or arrival's key",
			    (unsigned long long)x->id, x->host);
			break;
		case FIX_STRAY:
			fsck_say(f, x->done, "id index entry %016llx has no "
			    "record", (unsigned long long)x->id);
			break;
		}
	}
	return 0;
}

/* Client size of a wire-format file: every line starting '.' was stuffed. */
static int
file_sizes(const char *path, const struct rec *r, uint64_t *stored,
    uint64_t *octets)
{
	char	 buf[65536];
	ssize_t	 n, i;
	uint64_t total = 0, dots = 0;
	int	 fd, bol = 1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (i = 0; i < n; i++) {
			if (bol && buf[i] == '.')
				dots++;
			bol = buf[i] == '\n';
		}
		total += (uint64_t)n;
	}
	close(fd);
	if (n == -1)
		return -1;
	*stored = total;
	*octets = total - dots + strlen("Return-Path: <") + r->sender_len +
	    strlen(">\r\n");
	return 0;
}

/* A record whose file is missing or has the wrong size. */
static int
fsck_file_fault(struct fsck *f, uint64_t id, const char *path)
{
	struct store	*st = f->st;
	struct stat	 sb;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;
	uint64_t	 stored, octets;
	bool		 fixed = false;
	int		 missing;

	/* Recheck under a fresh txn: the message may have just been removed. */
	if (lstore_txn_begin(st, f->repair ? 0 : MDB_RDONLY, &txn) == -1)
		return -1;
	if (lstore_rec_get(st, txn, id, &v, &r) != GET_OK) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (stat(path, &sb) == 0)
		missing = 0;
	else if (errno == ENOENT)
		missing = 1;
	else {
		log_warn("store %s: fsck: stat %s", st->name, path);
		mdb_txn_abort(txn);
		return -1;
	}
	if (!missing && (uint64_t)sb.st_size == r.stored_octets) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (missing) {
		f->out->missing_files++;
		/* mdb_txn_commit frees the txn even when it fails. */
		if (f->repair && lstore_rec_del(st, txn, id, &r) == 0)
			fixed = lstore_txn_commit(st, txn) == 0;
		else
			mdb_txn_abort(txn);
		fsck_say(f, fixed, "record %016llx (%.*s): file missing%s",
		    (unsigned long long)id, (int)r.host_len, r.host,
		    fixed ? ", record removed" : "");
		return 0;
	}
	f->out->size_mismatches++;
	stored = (uint64_t)sb.st_size;
	if (f->repair && file_sizes(path, &r, &stored, &octets) == 0) {
		r.stored_octets = stored;
		r.octets = octets;
		if (lstore_rec_put(st, txn, id, &r, 0) == 0)
			fixed = lstore_txn_commit(st, txn) == 0;
		else
			mdb_txn_abort(txn);
	} else
		mdb_txn_abort(txn);
	fsck_say(f, fixed, "record %016llx: file has %llu octets, index "
	    "had another size%s", (unsigned long long)id,
	    (unsigned long long)stored, fixed ? ", index updated" : "");
	return 0;
}

static int
fsck_records(struct fsck *f)
{
	char		 path[PATH_MAX];
	struct stat	 sb;
	size_t		 i;

	for (i = 0; i < f->nent; i++) {
		if (f->ent[i].newer)
			continue;	/* its size is not ours to judge */
		if (lstore_spool_path(f->st, f->ent[i].id, path,
		    sizeof(path)) == -1)
			return -1;
		if (stat(path, &sb) == 0 &&
		    (uint64_t)sb.st_size == f->ent[i].stored_octets)
			continue;
		if (fsck_file_fault(f, f->ent[i].id, path) == -1)
			return -1;
	}
	return 0;
}

static int
parse_hex(const char *s, size_t digits, uint64_t *out)
{
	uint64_t v = 0;
	size_t	 i;

	if (strlen(s) != digits)
		return -1;
	for (i = 0; i < digits; i++) {
		char c = s[i];

		if (c >= '0' && c <= '9')
			v = v << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uint64_t)(c - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/*
 * A spool file with no record.  The check and the unlink run inside a
 * write transaction: store_put stats its file inside its own commit's
 * transaction, so a message between rename and commit is never lost.
 */
static int
fsck_orphan(struct fsck *f, const char *path, bool named, uint64_t id)
{
	struct store	*st = f->st;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;
	enum lstore_get	 g = GET_NONE;
	bool		 fixed = false;

	if (lstore_txn_begin(st, f->repair ? 0 : MDB_RDONLY, &txn) == -1)
		return -1;
	if (named && (g = lstore_rec_get(st, txn, id, &v, &r)) == GET_ERR) {
		mdb_txn_abort(txn);
		return -1;
	}
	if (g == GET_OK || g == GET_NEWER) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (f->repair) {
		if (unlink(path) == 0 || errno == ENOENT)
			fixed = true;
		else
			log_warn("store %s: fsck: unlink %s", st->name, path);
	}
	mdb_txn_abort(txn);
	f->out->orphan_files++;
	fsck_say(f, fixed, "%s: file without a record%s", path,
	    fixed ? ", removed" : "");
	return 0;
}

static int
fsck_subdir(struct fsck *f, const char *dir, unsigned fan)
{
	char		 path[PATH_MAX];
	struct dirent	*de;
	DIR		*d;
	uint64_t	 id = 0;
	bool		 named;
	int		 ret = 0;

	if ((d = opendir(dir)) == NULL) {
		log_warn("store %s: fsck: opendir %s", f->st->name, dir);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    (int)sizeof(path))
			continue;
		named = parse_hex(de->d_name, 16, &id) == 0 &&
		    (id & 0xff) == fan;
		if (named && find_ent(f, id) != NULL)
			continue;
		if ((ret = fsck_orphan(f, path, named, id)) == -1)
			break;
	}
	closedir(d);
	return ret;
}

static int
fsck_spool(struct fsck *f)
{
	char		 dir[PATH_MAX];
	struct dirent	*de;
	struct stat	 sb;
	DIR		*d;
	uint64_t	 fan;
	int		 ret = 0;

	if ((d = opendir(f->st->spool)) == NULL) {
		log_warn("store %s: fsck: opendir %s", f->st->name,
		    f->st->spool);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(dir, sizeof(dir), "%s/%s", f->st->spool,
		    de->d_name) >= (int)sizeof(dir))
			continue;
		if (lstat(dir, &sb) == -1)
			continue;
		if (!S_ISDIR(sb.st_mode)) {
			if ((ret = fsck_orphan(f, dir, false, 0)) == -1)
				break;
			continue;
		}
		if (parse_hex(de->d_name, 2, &fan) == -1) {
			/* Someone else's directory: report, never rm -r. */
			f->out->orphan_files++;
			fsck_say(f, false, "%s: unexpected directory", dir);
			continue;
		}
		if ((ret = fsck_subdir(f, dir, (unsigned)fan)) == -1)
			break;
	}
	closedir(d);
	return ret;
}

/*
 * A tmp file belongs to a store_put in progress while its writer (the pid
 * in its name) is alive, unless it is implausibly old.
 */
static bool
tmp_abandoned(const char *name, const struct stat *sb)
{
	char	*end;
	long	 pid;

	if (sb->st_mtime + STORE_TMP_GRACE_S < time(NULL))
		return true;
	errno = 0;
	pid = strtol(name, &end, 10);
	if (errno != 0 || end == name || *end != '.' || pid <= 0 ||
	    pid > INT_MAX)
		return true;
	if (pid == (long)getpid())
		return true;	/* one thread: we are not inside store_put */
	return kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

static int
fsck_tmp(struct fsck *f)
{
	char		 path[PATH_MAX];
	struct dirent	*de;
	struct stat	 sb;
	DIR		*d;
	bool		 fixed;

	if ((d = opendir(f->st->tmp)) == NULL) {
		log_warn("store %s: fsck: opendir %s", f->st->name,
		    f->st->tmp);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", f->st->tmp,
		    de->d_name) >= (int)sizeof(path) ||
		    lstat(path, &sb) == -1 || !tmp_abandoned(de->d_name, &sb))
			continue;
		fixed = false;
		f->out->tmp_files++;
		if (f->repair) {
			if (S_ISDIR(sb.st_mode) ? rmdir(path) == 0 :
			    unlink(path) == 0)
				fixed = true;
			else
				log_warn("store %s: fsck: unlink %s",
				    f->st->name, path);
		}
		fsck_say(f, fixed, "%s: leftover in tmp%s", path,
		    fixed ? ", removed" : "");
	}
	closedir(d);
	return 0;
}

int
store_fsck(struct store *st, bool repair, struct store_fsck *out,
    store_report_fn *report, void *arg)
{
	struct store_fsck dummy;
	struct fsck	 f;
	MDB_txn		*txn;
	int		 ret = -1;

	if (out == NULL)
		out = &dummy;
	memset(out, 0, sizeof(*out));
	memset(&f, 0, sizeof(f));
	f.st = st;
	f.repair = repair;
	f.out = out;
	f.report = report;
	f.arg = arg;

	/* The index is checked against itself in one consistent snapshot. */
	if (lstore_txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if (fsck_scan_hostids(&f, txn) == -1 || fsck_scan_msgs(&f, txn) == -1 ||
	    fsck_scan_ids(&f, txn) == -1) {
		log_warnx("store %s: fsck: index scan failed", st->name);
		mdb_txn_abort(txn);
		goto out;
	}
	mdb_txn_abort(txn);
	if (fsck_index_fix(&f) == -1 || fsck_records(&f) == -1 ||
	    fsck_spool(&f) == -1 || fsck_tmp(&f) == -1)
		goto out;
	ret = f.left > 0 ? 1 : 0;
 out:
	free(f.fix);
	free(f.ent);
	free(f.hosts);
	return ret;
}
