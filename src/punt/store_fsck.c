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

enum fix_kind { FIX_BADREC, FIX_NODUP, FIX_STRAY };

struct fix {
	enum fix_kind	 kind;
	uint64_t	 id;
	char		 host[UTIL_HOST_MAX + 1];
	bool		 done;
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
add_fix(struct fsck *f, enum fix_kind kind, uint64_t id, const char *host,
    size_t hlen)
{
	struct fix	*x;

	if (grow((void **)&f->fix, &f->capfix, f->nfix, sizeof(*f->fix)) == -1)
		return -1;
	x = &f->fix[f->nfix++];
	memset(x, 0, sizeof(*x));
	x->kind = kind;
	x->id = id;
	if (host != NULL) {
		if (hlen > UTIL_HOST_MAX)
			hlen = UTIL_HOST_MAX;
		memcpy(x->host, host, hlen);
	}
	return 0;
}

static int
dup_exists(struct store *st, MDB_cursor *hc, const char *host, size_t hlen,
    uint64_t id)
{
	unsigned char	 k[8];
	MDB_val		 key, val;

	rec_id_key(id, k);
	key.mv_size = hlen;
	key.mv_data = (void *)(uintptr_t)host;
	val.mv_size = 8;
	val.mv_data = k;
	(void)st;
	return mdb_cursor_get(hc, &key, &val, MDB_GET_BOTH) == 0;
}

/* Pass over the msg db: collect records (for the file pass) and faults. */
static int
fsck_scan_msgs_c(struct fsck *f, MDB_cursor *cur,
    MDB_cursor *hc)
{
	struct store	*st = f->st;
	MDB_val		 key, val;
	MDB_cursor_op	 op;
	struct rec	 r;
	enum rec_res	 dr;
	uint64_t	 id;
	int		 rc;

	for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &key, &val, op)) == 0;
	    op = MDB_NEXT) {
		f->out->msgs_checked++;
		if (key.mv_size != 8) {
			f->out->bad_records++;
			fsck_say(f, false, "record with a bad key");
			continue;
		}
		id = rec_key_id(key.mv_data);
		if ((dr = rec_decode(val.mv_data, val.mv_size, &r)) ==
		    REC_CORRUPT) {
			if (add_fix(f, FIX_BADREC, id, NULL, 0) == -1)
				return -1;
			continue;
		}
		if (grow((void **)&f->ent, &f->capent, f->nent,
		    sizeof(*f->ent)) == -1)
			return -1;
		f->ent[f->nent].id = id;
		f->ent[f->nent].newer = dr == REC_NEWER;
		f->ent[f->nent].stored_octets = dr == REC_OK ?
		    r.stored_octets : 0;
		f->nent++;
		if (dr == REC_NEWER) {
			fsck_newer(f, id, &val);
			continue;
		}
		if (!dup_exists(st, hc, r.host, r.host_len, id) &&
		    add_fix(f, FIX_NODUP, id, r.host, r.host_len) == -1)
			return -1;
	}
	return rc == MDB_NOTFOUND ? 0 : -1;
}

static int
fsck_scan_msgs(struct fsck *f, MDB_txn *txn)
{
	MDB_cursor	*cur, *hc;
	int		 ret = -1;

	if (mdb_cursor_open(txn, f->st->msg, &cur) != 0)
		return -1;
	if (mdb_cursor_open(txn, f->st->host, &hc) == 0) {
		ret = fsck_scan_msgs_c(f, cur, hc);
		mdb_cursor_close(hc);
	}
	mdb_cursor_close(cur);
	return ret;
}

/* The scanned record id, or NULL. */
static const struct fent *
find_ent(const struct fsck *f, uint64_t id)
{
	size_t	 lo = 0, hi = f->nent, mid;

	/* f->ent is in msg key order, which is id order. */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (f->ent[mid].id == id)
			return &f->ent[mid];
		if (f->ent[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Pass over the host db: every entry must point at a record of its host. */
static int
fsck_scan_hosts_c(struct fsck *f, MDB_txn *txn, MDB_cursor *cur)
{
	struct store	*st = f->st;
	const struct fent *e;
	MDB_val		 key, val, rv;
	MDB_cursor_op	 op;
	struct rec	 r;
	uint64_t	 id;
	int		 rc;

	for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &key, &val, op)) == 0;
	    op = MDB_NEXT) {
		if (val.mv_size != 8 || key.mv_size > UTIL_HOST_MAX) {
			f->out->bad_records++;
			fsck_say(f, false, "host index entry of a bad size");
			continue;
		}
		id = rec_key_id(val.mv_data);
		/* An unknown version's host cannot be checked: leave it. */
		if ((e = find_ent(f, id)) != NULL && e->newer)
			continue;
		if (lstore_rec_get(st, txn, id, &rv, &r) == GET_OK &&
		    r.host_len == key.mv_size &&
		    memcmp(r.host, key.mv_data, key.mv_size) == 0)
			continue;
		if (add_fix(f, FIX_STRAY, id, key.mv_data, key.mv_size) == -1)
			return -1;
	}
	return rc == MDB_NOTFOUND ? 0 : -1;
}

static int
fsck_scan_hosts(struct fsck *f, MDB_txn *txn)
{
	MDB_cursor	*cur;
	int		 ret;

	if (mdb_cursor_open(txn, f->st->host, &cur) != 0)
		return -1;
	ret = fsck_scan_hosts_c(f, txn, cur);
	mdb_cursor_close(cur);
	return ret;
}

/* Repair one index fault inside txn (hc: a cursor on the host db). */
static int
fix_one(struct fsck *f, MDB_txn *txn, MDB_cursor *hc, struct fix *x)
{
	struct store	*st = f->st;
	unsigned char	 k[8];
	MDB_val		 key, val, rv;
	struct rec	 r;
	enum lstore_get	 g;
	int		 rc = 0;

	rec_id_key(x->id, k);
	key.mv_size = 8;
	key.mv_data = k;
	if ((g = lstore_rec_get(st, txn, x->id, &rv, &r)) == GET_ERR)
		return EIO;
	switch (x->kind) {
	case FIX_BADREC:
		if (g == GET_BAD)
			rc = mdb_del(txn, st->msg, &key, NULL);
		break;
	case FIX_NODUP:
		key.mv_size = strlen(x->host);
		key.mv_data = x->host;
		val.mv_size = 8;
		val.mv_data = k;
		if (g == GET_OK && (rc = mdb_put(txn, st->host, &key, &val,
		    MDB_NODUPDATA)) == MDB_KEYEXIST)
			rc = 0;
		break;
	case FIX_STRAY:
		key.mv_size = strlen(x->host);
		if (g == GET_NEWER)
			break;
		if (g == GET_OK && r.host_len == key.mv_size &&
		    memcmp(r.host, x->host, key.mv_size) == 0)
			break;
		if (dup_exists(st, hc, x->host, key.mv_size, x->id))
			rc = mdb_cursor_del(hc, 0);
		break;
	}
	if (rc == 0)
		x->done = true;
	return rc;
}

/* Apply the index faults in one write transaction. */
static int
fsck_index_repair(struct fsck *f)
{
	MDB_txn		*txn;
	MDB_cursor	*hc;
	size_t		 i;
	int		 rc;

	if (lstore_txn_begin(f->st, 0, &txn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, f->st->host, &hc)) != 0)
		goto fail;
	for (i = 0; i < f->nfix; i++)
		if ((rc = fix_one(f, txn, hc, &f->fix[i])) != 0)
			goto fail;
	if (lstore_txn_commit(f->st, txn) == -1)
		return -1;
	return 0;
 fail:
	log_warnx("store %s: fsck: %s", f->st->name, mdb_strerror(rc));
	mdb_txn_abort(txn);
	return -1;
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
		case FIX_NODUP:
			fsck_say(f, x->done, "record %016llx: missing from "
			    "host index of %s", (unsigned long long)x->id,
			    x->host);
			break;
		case FIX_STRAY:
			fsck_say(f, x->done, "host index of %s: entry "
			    "%016llx has no record", x->host,
			    (unsigned long long)x->id);
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
	if (fsck_scan_msgs(&f, txn) == -1 || fsck_scan_hosts(&f, txn) == -1) {
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
	return ret;
}
