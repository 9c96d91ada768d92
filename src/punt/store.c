/*
 * store: the local punt store, an LMDB index plus a spool of wire-format
 * files (docs/design.md §5).  The index is the truth; a spool file only
 * counts once its record is committed.  This file: the helpers every
 * store file shares (src/punt/store_int.h), create, open and the punt's meta
 * record.  The rest: store_put.c (storing), store_read.c (listing,
 * reading, walking), store_update.c (UPDATE and the SMTP markers),
 * store_fsck.c; the record codec is record.c.
 */

#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "store_int.h"

#define STORE_MAXREADERS	4096	/* max_workers (<= 4000) plus tools */
#define STORE_DEFAULT_MAP	(1ULL << 30)

void
lstore_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	 ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
valid_name(const char *name)
{
	size_t	 i, len = strlen(name);

	if (len == 0 || len > STORE_NAME_MAX || name[0] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

int
lstore_spool_path(const struct store *st, uint64_t id, char *buf, size_t len)
{
	int	 n;

	n = snprintf(buf, len, "%s/%02x/%016llx", st->spool,
	    (unsigned)(id & 0xff), (unsigned long long)id);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

bool
lstore_claim_live(const struct store *st, const struct rec *r, uint64_t now)
{
	if ((r->flags & STORE_F_IN_DELIVERY) == 0)
		return false;
	/* A claim from the future (clock stepped back) ages from now on. */
	if (r->claim_us > now)
		return r->claim_us - now < st->lease_us;
	return now - r->claim_us < st->lease_us;
}

int
lstore_txn_begin(struct store *st, unsigned flags, MDB_txn **txn)
{
	int	 rc;

	if ((rc = mdb_txn_begin(st->env, NULL, flags, txn)) != 0) {
		log_warnx("store %s: mdb_txn_begin: %s", st->name,
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

int
lstore_txn_commit(struct store *st, MDB_txn *txn)
{
	int	 rc;

	if ((rc = mdb_txn_commit(txn)) != 0) {
		log_warnx("store %s: mdb_txn_commit: %s", st->name,
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

static void
mdb_fail(struct store *st, const char *what, uint64_t id, int rc)
{
	log_warnx("store %s: %s %016llx: %s", st->name, what,
	    (unsigned long long)id, mdb_strerror(rc));
}

enum lstore_get
lstore_hid_get(struct store *st, MDB_txn *txn, const char *host, size_t hlen,
    uint32_t *hid)
{
	MDB_val		 key, val;
	int		 rc;

	key.mv_size = hlen;
	key.mv_data = (void *)(uintptr_t)host;
	if (hlen == 0 || (rc = mdb_get(txn, st->hosts, &key, &val)) ==
	    MDB_NOTFOUND)
		return GET_NONE;
	if (rc != 0) {
		log_warnx("store %s: hosts %.*s: %s", st->name, (int)hlen,
		    host, mdb_strerror(rc));
		return GET_ERR;
	}
	if (val.mv_size != REC_HID_LEN) {
		log_warnx("store %s: hosts %.*s: bad host id", st->name,
		    (int)hlen, host);
		return GET_BAD;
	}
	*hid = rec_key_hid(val.mv_data);
	return GET_OK;
}

enum lstore_get
lstore_rec_key(struct store *st, MDB_txn *txn, uint64_t id, unsigned char *k)
{
	MDB_val		 key, val;
	int		 rc;

	rec_id_key(id, k + REC_HPFX_LEN);
	key.mv_size = REC_ID_LEN;
	key.mv_data = k + REC_HPFX_LEN;
	if ((rc = mdb_get(txn, st->id, &key, &val)) == MDB_NOTFOUND)
		return GET_NONE;
	if (rc != 0) {
		mdb_fail(st, "mdb_get id", id, rc);
		return GET_ERR;
	}
	if (val.mv_size != REC_HPFX_LEN) {
		log_warnx("store %s: id entry %016llx: bad size", st->name,
		    (unsigned long long)id);
		return GET_BAD;
	}
	memcpy(k, val.mv_data, REC_HPFX_LEN);
	return GET_OK;
}

/* Format 2 (docs/design.md §5.2): "id" gives the "rec" key, "rec" the
 * record. */
enum lstore_get
lstore_rec_get(struct store *st, MDB_txn *txn, uint64_t id, MDB_val *v,
    struct rec *r)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_val		 key;
	enum lstore_get	 g;
	int		 rc;

	if ((g = lstore_rec_key(st, txn, id, k)) != GET_OK)
		return g;
	key.mv_size = sizeof(k);
	key.mv_data = k;
	if ((rc = mdb_get(txn, st->rec, &key, v)) == MDB_NOTFOUND)
		return GET_NONE;
	if (rc != 0) {
		mdb_fail(st, "mdb_get", id, rc);
		return GET_ERR;
	}
	switch (rec_decode(v->mv_data, v->mv_size, r)) {
	case REC_OK:
		return GET_OK;
	case REC_NEWER:
		log_warnx("store %s: record %016llx: unknown record version "
		    "%u (this binary knows %u): skipped", st->name,
		    (unsigned long long)id, rec_version(v->mv_data, v->mv_size),
		    REC_VERSION);
		return GET_NEWER;
	case REC_CORRUPT:
		break;
	}
	log_warnx("store %s: record %016llx: undecodable", st->name,
	    (unsigned long long)id);
	return GET_BAD;
}

/* Encode r and put it under the "rec" key k. */
static int
rec_put_at(struct store *st, MDB_txn *txn, const unsigned char *k,
    uint64_t id, const struct rec *r, unsigned flags)
{
	unsigned char	*buf;
	MDB_val		 key, val;
	size_t		 len;
	int		 rc;

	if ((buf = rec_encode(r, &len)) == NULL) {
		log_warn("store %s: record %016llx", st->name,
		    (unsigned long long)id);
		return -1;
	}
	key.mv_size = REC_HKEY_LEN;
	key.mv_data = (void *)(uintptr_t)k;
	val.mv_size = len;
	val.mv_data = buf;
	rc = mdb_put(txn, st->rec, &key, &val, flags);
	free(buf);
	if (rc != 0) {
		mdb_fail(st, "mdb_put", id, rc);
		return -1;
	}
	return 0;
}

int
lstore_rec_put(struct store *st, MDB_txn *txn, uint64_t id, const struct rec *r,
    unsigned flags)
{
	unsigned char	 k[REC_HKEY_LEN];

	if (lstore_rec_key(st, txn, id, k) != GET_OK) {
		log_warnx("store %s: record %016llx: no id entry to rewrite",
		    st->name, (unsigned long long)id);
		return -1;
	}
	return rec_put_at(st, txn, k, id, r, flags);
}

/* The host id of r's host, allocated from next_hid if it has none. */
static int
hid_of(struct store *st, MDB_txn *txn, const struct rec *r, uint32_t *hid)
{
	unsigned char	 b[4], hk[REC_HID_LEN];
	MDB_val		 key, val;
	int		 rc;

	switch (lstore_hid_get(st, txn, r->host, r->host_len, hid)) {
	case GET_OK:
		return 0;
	case GET_NONE:
		break;
	default:
		return -1;
	}
	key.mv_size = strlen(LSTORE_META_NEXT_HID);
	key.mv_data = LSTORE_META_NEXT_HID;
	if ((rc = mdb_get(txn, st->meta, &key, &val)) != 0 ||
	    val.mv_size != 4) {
		log_warnx("store %s: meta next_hid: %s", st->name,
		    rc != 0 ? mdb_strerror(rc) : "bad size");
		return -1;
	}
	if ((*hid = rec_get_le32(val.mv_data)) == 0 || *hid == UINT32_MAX) {
		log_warnx("store %s: host ids exhausted", st->name);
		return -1;
	}
	rec_put_le32(b, *hid + 1);
	if ((rc = lstore_meta_put(txn, st->meta, LSTORE_META_NEXT_HID, b,
	    4)) != 0)
		goto fail;
	rec_hid_key(*hid, hk);
	key.mv_size = r->host_len;
	key.mv_data = (void *)(uintptr_t)r->host;
	val.mv_size = sizeof(hk);
	val.mv_data = hk;
	if ((rc = mdb_put(txn, st->hosts, &key, &val, MDB_NOOVERWRITE)) == 0)
		return 0;
 fail:
	log_warnx("store %s: new host %.*s: %s", st->name, (int)r->host_len,
	    r->host, mdb_strerror(rc));
	return -1;
}

int
lstore_id_put(struct store *st, MDB_txn *txn, const unsigned char *k,
    unsigned flags)
{
	MDB_val		 key, val;
	int		 rc;

	key.mv_size = REC_ID_LEN;
	key.mv_data = (void *)(uintptr_t)(k + REC_HPFX_LEN);
	val.mv_size = REC_HPFX_LEN;
	val.mv_data = (void *)(uintptr_t)k;
	if ((rc = mdb_put(txn, st->id, &key, &val, flags)) != 0) {
		mdb_fail(st, "mdb_put id", rec_key_id(k + REC_HPFX_LEN), rc);
		return -1;
	}
	return 0;
}

/*
 * A new record (docs/design.md §5.2): host id, "rec" and "id" entries, each
 * refusing to overwrite.  The one place that knows which databases a new
 * message touches (commit_record's caller stays format-blind).
 */
int
lstore_rec_insert(struct store *st, MDB_txn *txn, uint64_t id,
    const struct rec *r)
{
	unsigned char	 k[REC_HKEY_LEN];
	uint32_t	 hid;

	if (hid_of(st, txn, r, &hid) == -1)
		return -1;
	rec_hkey(hid, r->arrival_us, id, k);
	if (rec_put_at(st, txn, k, id, r, MDB_NOOVERWRITE) == -1 ||
	    lstore_id_put(st, txn, k, MDB_NOOVERWRITE) == -1)
		return -1;
	return 0;
}

/*
 * Move id's record, found under the "rec" key k with value v, to the key
 * its host and arrival give it (fsck's repair of a record under a wrong
 * key); nothing if k is already that key.
 */
int
lstore_rec_rekey(struct store *st, MDB_txn *txn, uint64_t id,
    const unsigned char *k, const MDB_val *v)
{
	unsigned char	*copy;
	MDB_val		 key;
	struct rec	 r;
	uint64_t	 arrival;
	uint32_t	 hid;
	int		 rc = -1;

	/* The value lives in a page the deletes below may rewrite. */
	if ((copy = malloc(v->mv_size)) == NULL)
		return -1;
	memcpy(copy, v->mv_data, v->mv_size);
	if (rec_decode(copy, v->mv_size, &r) != REC_OK) {
		free(copy);
		return 0;
	}
	rec_hkey_split(k, NULL, &arrival, NULL);
	if (lstore_hid_get(st, txn, r.host, r.host_len, &hid) == GET_OK &&
	    hid == rec_key_hid(k) && r.arrival_us == arrival) {
		free(copy);
		return 0;	/* already right */
	}
	key.mv_size = REC_HKEY_LEN;
	key.mv_data = (void *)(uintptr_t)k;
	if (mdb_del(txn, st->rec, &key, NULL) == 0) {
		key.mv_size = REC_ID_LEN;
		key.mv_data = (void *)(uintptr_t)(k + REC_HPFX_LEN);
		rc = mdb_del(txn, st->id, &key, NULL);
		if ((rc == 0 || rc == MDB_NOTFOUND) &&
		    lstore_rec_insert(st, txn, id, &r) == 0)
			rc = 0;
		else
			rc = -1;
	}
	free(copy);
	return rc;
}

/* Both entries of id, found by its "id" entry (r is not needed). */
int
lstore_rec_del(struct store *st, MDB_txn *txn, uint64_t id, const struct rec *r)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_val		 key;
	int		 rc;

	(void)r;
	switch (lstore_rec_key(st, txn, id, k)) {
	case GET_OK:
		break;
	case GET_NONE:
		return 0;
	default:
		return -1;
	}
	key.mv_size = REC_HKEY_LEN;
	key.mv_data = k;
	if ((rc = mdb_del(txn, st->rec, &key, NULL)) != 0 &&
	    rc != MDB_NOTFOUND)
		goto fail;
	key.mv_size = REC_ID_LEN;
	key.mv_data = k + REC_HPFX_LEN;
	if ((rc = mdb_del(txn, st->id, &key, NULL)) != 0 &&
	    rc != MDB_NOTFOUND)
		goto fail;
	return 0;
 fail:
	mdb_fail(st, "mdb_del", id, rc);
	return -1;
}

void
lstore_unlink_msg(struct store *st, uint64_t id)
{
	char	 path[PATH_MAX];

	/* A file left behind is an orphan; fsck removes it. */
	if (lstore_spool_path(st, id, path, sizeof(path)) == 0 &&
	    unlink(path) == -1 && errno != ENOENT)
		log_warn("store %s: unlink %s", st->name, path);
}

int
lstore_meta_get_u64(struct store *st, MDB_txn *txn, const char *k,
    uint64_t *out)
{
	MDB_val	 key, val;
	int	 rc;

	key.mv_size = strlen(k);
	key.mv_data = (void *)(uintptr_t)k;
	if ((rc = mdb_get(txn, st->meta, &key, &val)) != 0) {
		log_warnx("store %s: meta %s: %s", st->name, k,
		    mdb_strerror(rc));
		return -1;
	}
	if (val.mv_size != 8) {
		log_warnx("store %s: meta %s: bad size", st->name, k);
		return -1;
	}
	*out = rec_get_le64(val.mv_data);
	return 0;
}

int
lstore_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *k, const void *v,
    size_t len)
{
	MDB_val	 key, val;

	key.mv_size = strlen(k);
	key.mv_data = (void *)(uintptr_t)k;
	val.mv_size = len;
	val.mv_data = (void *)(uintptr_t)v;
	return mdb_put(txn, dbi, &key, &val, 0);
}

int
lstore_env_open(const char *dir, uint64_t map_size, MDB_env **envp, char *err,
    size_t errlen)
{
	MDB_env	*env;
	int	 rc;

	if ((rc = mdb_env_create(&env)) != 0) {
		lstore_seterr(err, errlen, "mdb_env_create: %s",
		    mdb_strerror(rc));
		return -1;
	}
	if ((rc = mdb_env_set_maxdbs(env, LSTORE_MAXDBS)) != 0 ||
	    (rc = mdb_env_set_maxreaders(env, STORE_MAXREADERS)) != 0 ||
	    (rc = mdb_env_set_mapsize(env, map_size ? map_size :
	    STORE_DEFAULT_MAP)) != 0) {
		lstore_seterr(err, errlen, "mdb_env_set: %s", mdb_strerror(rc));
		mdb_env_close(env);
		return -1;
	}
	if ((rc = mdb_env_open(env, dir, 0, 0660)) != 0) {
		lstore_seterr(err, errlen, "%s: mdb_env_open: %s", dir,
		    mdb_strerror(rc));
		mdb_env_close(env);
		return -1;
	}
	*envp = env;
	return 0;
}

static int
mkdir_one(const char *path, char *err, size_t errlen)
{
	if (mkdir(path, 0770) == -1 && errno != EEXIST) {
		lstore_seterr(err, errlen, "mkdir %s: %s", path,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/* The punt directory and its spool/, tmp/ and index/ (path in dir). */
static int
create_dirs(const char *path, char *dir, size_t dirlen, char *err,
    size_t errlen)
{
	static const char *const sub[] = { "spool", "tmp", "index" };
	size_t	 i;

	if (util_mkdir_p(path, 0770) == -1) {
		lstore_seterr(err, errlen, "mkdir %s: %s", path,
		    strerror(errno));
		return -1;
	}
	for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		if (snprintf(dir, dirlen, "%s/%s", path, sub[i]) >=
		    (int)dirlen || mkdir_one(dir, err, errlen) == -1)
			return -1;
	return 0;
}

/*
 * A new punt's meta record: format 2, name, a fresh random uid, next id
 * and next host id.
 */
static int
create_meta(MDB_txn *txn, MDB_dbi meta, const char *name, char *err,
    size_t errlen)
{
	unsigned char	 b[8];
	uint64_t	 uid;
	int		 rc;

	do {
		if (getrandom(&uid, sizeof(uid), 0) != sizeof(uid)) {
			lstore_seterr(err, errlen, "getrandom: %s",
			    strerror(errno));
			return -1;
		}
	} while (uid == 0);
	rec_put_le32(b, REC_PUNT_FORMAT);
	if ((rc = lstore_meta_put(txn, meta, LSTORE_META_VERSION, b, 4)) != 0)
		goto fail;
	rec_put_le32(b, 1);
	if ((rc = lstore_meta_put(txn, meta, LSTORE_META_NEXT_HID, b,
	    4)) != 0)
		goto fail;
	if ((rc = lstore_meta_put(txn, meta, "name", name,
	    strlen(name))) != 0)
		goto fail;
	rec_put_le64(b, uid);
	if ((rc = lstore_meta_put(txn, meta, "punt_uid", b, 8)) != 0)
		goto fail;
	rec_put_le64(b, 1);
	if ((rc = lstore_meta_put(txn, meta, "next_id", b, 8)) != 0)
		goto fail;
	return 0;
 fail:
	lstore_seterr(err, errlen, "mdb_put: %s", mdb_strerror(rc));
	return -1;
}

/*
 * In txn: 1 if the punt exists under name (left alone), 0 if it is new
 * and its meta record has been written, -1 on error.
 */
static int
create_index(MDB_txn *txn, const char *path, const char *name, char *err,
    size_t errlen)
{
	MDB_dbi		 meta, other;
	MDB_val		 key, val;
	int		 rc;

	if ((rc = mdb_dbi_open(txn, LSTORE_DB_META, MDB_CREATE, &meta)) != 0) {
		lstore_seterr(err, errlen, "mdb_dbi_open: %s",
		    mdb_strerror(rc));
		return -1;
	}
	key.mv_size = strlen("name");
	key.mv_data = "name";
	if ((rc = mdb_get(txn, meta, &key, &val)) == 0) {
		if (val.mv_size != strlen(name) ||
		    memcmp(val.mv_data, name, val.mv_size) != 0) {
			lstore_seterr(err, errlen,
			    "%s holds punt \"%.*s\", not %s", path,
			    (int)val.mv_size, (char *)val.mv_data, name);
			return -1;
		}
		return 1;
	}
	if (rc != MDB_NOTFOUND) {
		lstore_seterr(err, errlen, "mdb_get: %s", mdb_strerror(rc));
		return -1;
	}
	/*
	 * Format 2's databases, and format 1's msg and host empty beside
	 * them: a format-1 binary opens those before it reads the version,
	 * and so refuses with "newer" instead of MDB_NOTFOUND (docs/design.md §5.2).
	 */
	if ((rc = mdb_dbi_open(txn, LSTORE_DB_REC, MDB_CREATE, &other)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_ID, MDB_CREATE, &other)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_HOSTS, MDB_CREATE,
	    &other)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_MSG, MDB_CREATE, &other)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_HOST, MDB_CREATE |
	    LSTORE_DB_HOST_FLAGS, &other)) != 0) {
		lstore_seterr(err, errlen, "mdb_dbi_open: %s",
		    mdb_strerror(rc));
		return -1;
	}
	return create_meta(txn, meta, name, err, errlen);
}

int
store_create(const char *path, const char *name, uint64_t map_size,
    char *err, size_t errlen)
{
	char		 dir[PATH_MAX];
	MDB_env		*env;
	MDB_txn		*txn;
	int		 rc;

	if (!valid_name(name)) {
		lstore_seterr(err, errlen, "bad punt name");
		return -1;
	}
	if (create_dirs(path, dir, sizeof(dir), err, errlen) == -1 ||
	    lstore_env_open(dir, map_size, &env, err, errlen) == -1)
		return -1;
	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0) {
		lstore_seterr(err, errlen, "mdb_txn_begin: %s",
		    mdb_strerror(rc));
		goto fail;
	}
	if ((rc = create_index(txn, path, name, err, errlen)) != 0) {
		mdb_txn_abort(txn);
		mdb_env_close(env);
		return rc == 1 ? 0 : -1;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		lstore_seterr(err, errlen, "mdb_txn_commit: %s",
		    mdb_strerror(rc));
		goto fail;
	}
	mdb_env_close(env);
	/* The new directories must survive a crash as well as the index. */
	if (util_fsync_dir(path) == -1) {
		lstore_seterr(err, errlen, "fsync %s: %s", path,
		    strerror(errno));
		return -1;
	}
	return 0;
 fail:
	mdb_env_close(env);
	return -1;
}

/* st's paths and directory identity; index/ goes to dir. */
static int
open_paths(struct store *st, const char *path, char *dir, size_t dirlen,
    char *err, size_t errlen)
{
	char		 file[PATH_MAX];
	struct stat	 sb;

	if (snprintf(st->path, sizeof(st->path), "%s", path) >=
	    (int)sizeof(st->path) ||
	    snprintf(st->spool, sizeof(st->spool), "%s/spool", path) >=
	    (int)sizeof(st->spool) ||
	    snprintf(st->tmp, sizeof(st->tmp), "%s/tmp", path) >=
	    (int)sizeof(st->tmp) ||
	    snprintf(dir, dirlen, "%s/index", path) >= (int)dirlen ||
	    snprintf(file, sizeof(file), "%s/data.mdb", dir) >=
	    (int)sizeof(file)) {
		lstore_seterr(err, errlen, "%s: path too long", path);
		return -1;
	}
	if (stat(path, &sb) == -1 || !S_ISDIR(sb.st_mode)) {
		lstore_seterr(err, errlen, "%s: not a punt directory", path);
		return -1;
	}
	st->dev = sb.st_dev;
	st->ino = sb.st_ino;
	/* mdb_env_open would quietly create an empty index: refuse first. */
	if (stat(file, &sb) == -1 || stat(st->spool, &sb) == -1 ||
	    stat(st->tmp, &sb) == -1) {
		lstore_seterr(err, errlen,
		    "%s: not a punt (no index, spool or tmp)", path);
		return -1;
	}
	return 0;
}

/*
 * The format version rule (include/sdps/record.h), read-only: format 2
 * without an upgrade marker is served; format 1 and a punt in the middle
 * of its upgrade are refused with what to run (docs/design.md §5.2).
 */
static int
open_format(struct store *st, MDB_txn *txn, const char *path, char *err,
    size_t errlen)
{
	MDB_val		 key, val;
	uint32_t	 v;

	key.mv_size = strlen(LSTORE_META_VERSION);
	key.mv_data = LSTORE_META_VERSION;
	if (mdb_get(txn, st->meta, &key, &val) != 0 || val.mv_size != 4) {
		lstore_seterr(err, errlen, "%s: missing format version", path);
		return -1;
	}
	if ((v = rec_get_le32(val.mv_data)) > REC_PUNT_FORMAT) {
		lstore_seterr(err, errlen, "%s: punt format version %u is newer "
		    "than this binary's (%u): not opened, nothing changed",
		    path, (unsigned)v, REC_PUNT_FORMAT);
		return -1;
	}
	if (v == 1) {
		lstore_seterr(err, errlen, "%s: punt format 1: run sdps-ctl "
		    "punt upgrade %s (nothing changed)", path, st->name);
		return -1;
	}
	if (v != REC_PUNT_FORMAT) {
		lstore_seterr(err, errlen, "%s: unknown punt format version %u",
		    path, (unsigned)v);
		return -1;
	}
	key.mv_size = strlen(LSTORE_META_UPGRADE);
	key.mv_data = LSTORE_META_UPGRADE;
	if (mdb_get(txn, st->meta, &key, &val) != MDB_NOTFOUND) {
		lstore_seterr(err, errlen, "%s: upgrade in progress: sdps-ctl "
		    "punt upgrade %s finishes it, --abort rolls it back "
		    "(nothing changed)", path, st->name);
		return -1;
	}
	return 0;
}

/* The dbi handles, format, name and uid, in one read-only txn. */
static int
open_index(struct store *st, const char *path, char *err, size_t errlen)
{
	MDB_txn		*txn;
	MDB_val		 key, val;
	int		 rc;

	if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)) != 0) {
		lstore_seterr(err, errlen, "mdb_txn_begin: %s",
		    mdb_strerror(rc));
		return -1;
	}
	/* The version first: format 1 has no rec, id or hosts. */
	if ((rc = mdb_dbi_open(txn, LSTORE_DB_META, 0, &st->meta)) != 0) {
		lstore_seterr(err, errlen, "%s: index: %s", path,
		    mdb_strerror(rc));
		goto abort;
	}
	if (open_format(st, txn, path, err, errlen) == -1)
		goto abort;
	if ((rc = mdb_dbi_open(txn, LSTORE_DB_REC, 0, &st->rec)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_ID, 0, &st->id)) != 0 ||
	    (rc = mdb_dbi_open(txn, LSTORE_DB_HOSTS, 0, &st->hosts)) != 0) {
		lstore_seterr(err, errlen, "%s: index: %s", path,
		    mdb_strerror(rc));
		goto abort;
	}
	key.mv_size = strlen("name");
	key.mv_data = "name";
	if ((rc = mdb_get(txn, st->meta, &key, &val)) != 0 ||
	    val.mv_size != strlen(st->name) ||
	    memcmp(val.mv_data, st->name, val.mv_size) != 0) {
		lstore_seterr(err, errlen, "%s: not punt %s", path, st->name);
		goto abort;
	}
	if (lstore_meta_get_u64(st, txn, "punt_uid", &st->uid) == -1) {
		lstore_seterr(err, errlen, "%s: no punt_uid", path);
		goto abort;
	}
	/* Committing a read-only txn keeps the dbi handles it opened. */
	if ((rc = mdb_txn_commit(txn)) != 0) {
		lstore_seterr(err, errlen, "mdb_txn_commit: %s",
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
 abort:
	mdb_txn_abort(txn);
	return -1;
}

struct store *
store_open(const char *path, const char *name,
    const struct store_opts *opts, char *err, size_t errlen)
{
	struct store	*st;
	char		 dir[PATH_MAX];
	int		 rc, dead;

	if ((st = calloc(1, sizeof(*st))) == NULL) {
		lstore_seterr(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	if (!valid_name(name)) {
		lstore_seterr(err, errlen, "bad punt name");
		goto fail;
	}
	snprintf(st->name, sizeof(st->name), "%s", name);
	if (open_paths(st, path, dir, sizeof(dir), err, errlen) == -1)
		goto fail;
	st->lease_us = opts != NULL ? (uint64_t)opts->claim_lease_s * 1000000 :
	    0;
	if (lstore_env_open(dir, opts != NULL ? opts->map_size : 0, &st->env, err,
	    errlen) == -1)
		goto fail;
	if ((rc = mdb_reader_check(st->env, &dead)) == 0 && dead > 0)
		log_info("store %s: cleared %d stale readers", name, dead);
	if (open_index(st, path, err, errlen) == -1)
		goto fail;
	return st;
 fail:
	if (st->env != NULL)
		mdb_env_close(st->env);
	free(st);
	return NULL;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	lstore_cq_close(st);
	mdb_env_close(st->env);
	free(st);
}

const char *
store_name(const struct store *st)
{
	return st->name;
}

uint64_t
store_uid(const struct store *st)
{
	return st->uid;
}

void
store_uidl(const struct store *st, uint64_t id, char *buf)
{
	snprintf(buf, STORE_UIDL_MAX, "%016llx-%016llx",
	    (unsigned long long)st->uid, (unsigned long long)id);
}

bool
store_is_available(struct store *st)
{
	struct stat	 sb;

	if (stat(st->path, &sb) == -1 || sb.st_dev != st->dev ||
	    sb.st_ino != st->ino)
		return false;
	if (stat(st->spool, &sb) == -1 || !S_ISDIR(sb.st_mode))
		return false;
	return access(st->spool, R_OK | W_OK | X_OK) == 0;
}

void
store_reader_check(struct store *st)
{
	int	 rc, dead;

	if ((rc = mdb_reader_check(st->env, &dead)) != 0)
		log_warnx("store %s: mdb_reader_check: %s", st->name,
		    mdb_strerror(rc));
	else if (dead > 0)
		log_info("store %s: cleared %d stale readers", st->name, dead);
}
