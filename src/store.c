/*
 * store: the punt store, an LMDB index plus a spool of wire-format files
 * (docs/design.md §5).  The index is the truth; a spool file only counts once
 * its record is committed.
 */

#include <sys/random.h>
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
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/fault.h"
#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"

#define STORE_FORMAT		1
#define STORE_NAME_MAX		64
#define STORE_MAXREADERS	4096	/* max_workers (<= 4000) plus tools */
#define STORE_DEFAULT_MAP	(1ULL << 30)
#define STORE_TMP_GRACE_S	3600	/* a tmp file this old is abandoned */

/*
 * msg record, version 1.  All integers little-endian at fixed offsets:
 *	0 u8 version, 1..3 zero, 4 u32 flags, 8 u64 arrival_us,
 *	16 u64 octets, 24 u64 stored_octets, 32 u64 claim_us,
 *	40 u16 host_len, 42 u16 sender_len, 44 u16 agent_len, 46 u16 nrcpts,
 *	48 host, sender, agent, then nrcpts times (u8 len, local part).
 * Keys of "msg" and data of "host" are ids as 8-byte big-endian numbers,
 * so LMDB's memcmp order is numeric order.
 */
#define REC_VERSION	1
#define REC_HDR		48
#define REC_RCPTS_MAX	65535

#define RETURN_PATH_OCTETS(s)	(strlen("Return-Path: <") + strlen(s) + \
				 strlen(">\r\n"))

struct store {
	MDB_env		*env;
	MDB_dbi		 meta, msg, host;
	char		 name[STORE_NAME_MAX + 1];
	char		 path[PATH_MAX];
	char		 spool[PATH_MAX];
	char		 tmp[PATH_MAX];
	uint64_t	 uid;
	dev_t		 dev;
	ino_t		 ino;
	uint64_t	 lease_us;
	unsigned	 tmp_seq;
};

/* A decoded record: pointers into the LMDB value or a caller's buffer. */
struct rec {
	uint32_t	 flags;
	uint64_t	 arrival_us, octets, stored_octets, claim_us;
	const char	*host, *sender, *agent;
	size_t		 host_len, sender_len, agent_len;
	size_t		 nrcpts;
	const unsigned char *rcpts;	/* packed (u8 len, bytes) list */
	size_t		 rcpts_len;
};

enum get_res { GET_OK, GET_NONE, GET_BAD, GET_ERR };

static void seterr(char *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	 ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void
put_le16(unsigned char *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void
put_le32(unsigned char *p, uint32_t v)
{
	int	 i;

	for (i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static void
put_le64(unsigned char *p, uint64_t v)
{
	int	 i;

	for (i = 0; i < 8; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static uint16_t
get_le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int	 i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void
id_key(uint64_t id, unsigned char *k)
{
	int	 i;

	for (i = 7; i >= 0; i--, id >>= 8)
		k[i] = id & 0xff;
}

static uint64_t
key_id(const unsigned char *k)
{
	uint64_t id = 0;
	int	 i;

	for (i = 0; i < 8; i++)
		id = id << 8 | k[i];
	return id;
}

static int
has_nul(const char *s, size_t len)
{
	return memchr(s, '\0', len) != NULL;
}

static int
rec_decode(const MDB_val *v, struct rec *r)
{
	const unsigned char	*p = v->mv_data;
	size_t			 off, i, len;

	if (v->mv_size < REC_HDR || p[0] != REC_VERSION)
		return -1;
	r->flags = get_le32(p + 4);
	r->arrival_us = get_le64(p + 8);
	r->octets = get_le64(p + 16);
	r->stored_octets = get_le64(p + 24);
	r->claim_us = get_le64(p + 32);
	r->host_len = get_le16(p + 40);
	r->sender_len = get_le16(p + 42);
	r->agent_len = get_le16(p + 44);
	r->nrcpts = get_le16(p + 46);
	if (r->host_len == 0 || r->host_len > UTIL_HOST_MAX ||
	    r->sender_len > UTIL_SENDER_MAX || r->agent_len > STORE_AGENT_MAX)
		return -1;
	off = REC_HDR;
	if (v->mv_size - off < r->host_len + r->sender_len + r->agent_len)
		return -1;
	r->host = (const char *)p + off;
	off += r->host_len;
	r->sender = (const char *)p + off;
	off += r->sender_len;
	r->agent = (const char *)p + off;
	off += r->agent_len;
	if (has_nul(r->host, r->host_len) ||
	    has_nul(r->sender, r->sender_len) ||
	    has_nul(r->agent, r->agent_len))
		return -1;
	r->rcpts = p + off;
	for (i = 0; i < r->nrcpts; i++) {
		if (off >= v->mv_size)
			return -1;
		len = p[off];
		if (len == 0 || len > UTIL_USER_MAX ||
		    v->mv_size - off - 1 < len ||
		    has_nul((const char *)p + off + 1, len))
			return -1;
		off += 1 + len;
	}
	if (off != v->mv_size)
		return -1;
	r->rcpts_len = off - (size_t)(r->rcpts - p);
	return 0;
}

/* Encode r into a malloc'd buffer; NULL on ENOMEM. */
static unsigned char *
rec_encode(const struct rec *r, size_t *lenp)
{
	unsigned char	*p;
	size_t		 len, off;

	len = REC_HDR + r->host_len + r->sender_len + r->agent_len +
	    r->rcpts_len;
	if ((p = calloc(1, len)) == NULL)
		return NULL;
	p[0] = REC_VERSION;
	put_le32(p + 4, r->flags);
	put_le64(p + 8, r->arrival_us);
	put_le64(p + 16, r->octets);
	put_le64(p + 24, r->stored_octets);
	put_le64(p + 32, r->claim_us);
	put_le16(p + 40, (uint16_t)r->host_len);
	put_le16(p + 42, (uint16_t)r->sender_len);
	put_le16(p + 44, (uint16_t)r->agent_len);
	put_le16(p + 46, (uint16_t)r->nrcpts);
	off = REC_HDR;
	memcpy(p + off, r->host, r->host_len);
	off += r->host_len;
	memcpy(p + off, r->sender, r->sender_len);
	off += r->sender_len;
	memcpy(p + off, r->agent, r->agent_len);
	off += r->agent_len;
	memcpy(p + off, r->rcpts, r->rcpts_len);
	*lenp = len;
	return p;
}

/* Iterate the packed recipient list: returns the next one or NULL. */
static const unsigned char *
rcpt_next(const struct rec *r, const unsigned char *cur, size_t *len)
{
	const unsigned char *next;

	next = cur == NULL ? r->rcpts : cur + 1 + cur[0];
	if (next >= r->rcpts + r->rcpts_len)
		return NULL;
	*len = next[0];
	return next;
}

static int
rcpt_is(const unsigned char *rc, size_t len, const char *user)
{
	return strlen(user) == len &&
	    strncasecmp((const char *)rc + 1, user, len) == 0;
}

static int
rec_has_user(const struct rec *r, const char *user)
{
	const unsigned char	*rc = NULL;
	size_t			 len;

	while ((rc = rcpt_next(r, rc, &len)) != NULL)
		if (rcpt_is(rc, len, user))
			return 1;
	return 0;
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

static int
spool_path(const struct store *st, uint64_t id, char *buf, size_t len)
{
	int	 n;

	n = snprintf(buf, len, "%s/%02x/%016llx", st->spool,
	    (unsigned)(id & 0xff), (unsigned long long)id);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static bool
claim_live(const struct store *st, const struct rec *r, uint64_t now)
{
	if ((r->flags & STORE_F_IN_DELIVERY) == 0)
		return false;
	/* A claim from the future (clock stepped back) ages from now on. */
	if (r->claim_us > now)
		return r->claim_us - now < st->lease_us;
	return now - r->claim_us < st->lease_us;
}

static int
txn_begin(struct store *st, unsigned flags, MDB_txn **txn)
{
	int	 rc;

	if ((rc = mdb_txn_begin(st->env, NULL, flags, txn)) != 0) {
		log_warnx("store %s: mdb_txn_begin: %s", st->name,
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

static int
txn_commit(struct store *st, MDB_txn *txn)
{
	int	 rc;

	if ((rc = mdb_txn_commit(txn)) != 0) {
		log_warnx("store %s: mdb_txn_commit: %s", st->name,
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

static enum get_res
rec_get(struct store *st, MDB_txn *txn, uint64_t id, MDB_val *v,
    struct rec *r)
{
	unsigned char	 k[8];
	MDB_val		 key;
	int		 rc;

	id_key(id, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	if ((rc = mdb_get(txn, st->msg, &key, v)) == MDB_NOTFOUND)
		return GET_NONE;
	if (rc != 0) {
		log_warnx("store %s: mdb_get %016llx: %s", st->name,
		    (unsigned long long)id, mdb_strerror(rc));
		return GET_ERR;
	}
	if (rec_decode(v, r) == -1) {
		log_warnx("store %s: record %016llx: undecodable", st->name,
		    (unsigned long long)id);
		return GET_BAD;
	}
	return GET_OK;
}

static int
rec_put(struct store *st, MDB_txn *txn, uint64_t id, const struct rec *r,
    unsigned flags)
{
	unsigned char	 k[8], *buf;
	MDB_val		 key, val;
	size_t		 len;
	int		 rc;

	if ((buf = rec_encode(r, &len)) == NULL) {
		log_warn("store %s: record %016llx", st->name,
		    (unsigned long long)id);
		return -1;
	}
	id_key(id, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	val.mv_size = len;
	val.mv_data = buf;
	rc = mdb_put(txn, st->msg, &key, &val, flags);
	free(buf);
	if (rc != 0) {
		log_warnx("store %s: mdb_put %016llx: %s", st->name,
		    (unsigned long long)id, mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/* Remove record and host entry; the caller unlinks the file after commit. */
static int
rec_del(struct store *st, MDB_txn *txn, uint64_t id, const struct rec *r)
{
	unsigned char	 k[8];
	MDB_val		 key, val;
	int		 rc;

	id_key(id, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	if ((rc = mdb_del(txn, st->msg, &key, NULL)) != 0 &&
	    rc != MDB_NOTFOUND)
		goto fail;
	key.mv_size = r->host_len;
	key.mv_data = (void *)(uintptr_t)r->host;
	val.mv_size = sizeof(k);
	val.mv_data = k;
	if ((rc = mdb_del(txn, st->host, &key, &val)) != 0 &&
	    rc != MDB_NOTFOUND)
		goto fail;
	return 0;
 fail:
	log_warnx("store %s: mdb_del %016llx: %s", st->name,
	    (unsigned long long)id, mdb_strerror(rc));
	return -1;
}

static void
unlink_msg(struct store *st, uint64_t id)
{
	char	 path[PATH_MAX];

	/* A file left behind is an orphan; fsck removes it. */
	if (spool_path(st, id, path, sizeof(path)) == 0 &&
	    unlink(path) == -1 && errno != ENOENT)
		log_warn("store %s: unlink %s", st->name, path);
}

static int
meta_get_u64(struct store *st, MDB_txn *txn, const char *k, uint64_t *out)
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
	*out = get_le64(val.mv_data);
	return 0;
}

static int
meta_put(MDB_txn *txn, MDB_dbi dbi, const char *k, const void *v,
    size_t len)
{
	MDB_val	 key, val;

	key.mv_size = strlen(k);
	key.mv_data = (void *)(uintptr_t)k;
	val.mv_size = len;
	val.mv_data = (void *)(uintptr_t)v;
	return mdb_put(txn, dbi, &key, &val, 0);
}

static int
env_open(const char *dir, uint64_t map_size, MDB_env **envp, char *err,
    size_t errlen)
{
	MDB_env	*env;
	int	 rc;

	if ((rc = mdb_env_create(&env)) != 0) {
		seterr(err, errlen, "mdb_env_create: %s", mdb_strerror(rc));
		return -1;
	}
	if ((rc = mdb_env_set_maxdbs(env, 4)) != 0 ||
	    (rc = mdb_env_set_maxreaders(env, STORE_MAXREADERS)) != 0 ||
	    (rc = mdb_env_set_mapsize(env, map_size ? map_size :
	    STORE_DEFAULT_MAP)) != 0) {
		seterr(err, errlen, "mdb_env_set: %s", mdb_strerror(rc));
		mdb_env_close(env);
		return -1;
	}
	if ((rc = mdb_env_open(env, dir, 0, 0660)) != 0) {
		seterr(err, errlen, "%s: mdb_env_open: %s", dir,
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
		seterr(err, errlen, "mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int
store_create(const char *path, const char *name, uint64_t map_size,
    char *err, size_t errlen)
{
	char		 dir[PATH_MAX];
	unsigned char	 b[8];
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 meta, msg, host;
	MDB_val		 key, val;
	uint64_t	 uid;
	int		 rc;

	if (!valid_name(name)) {
		seterr(err, errlen, "bad punt name");
		return -1;
	}
	if (util_mkdir_p(path, 0770) == -1) {
		seterr(err, errlen, "mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	if (snprintf(dir, sizeof(dir), "%s/spool", path) >= (int)sizeof(dir) ||
	    mkdir_one(dir, err, errlen) == -1)
		return -1;
	if (snprintf(dir, sizeof(dir), "%s/tmp", path) >= (int)sizeof(dir) ||
	    mkdir_one(dir, err, errlen) == -1)
		return -1;
	if (snprintf(dir, sizeof(dir), "%s/index", path) >= (int)sizeof(dir) ||
	    mkdir_one(dir, err, errlen) == -1)
		return -1;
	if (env_open(dir, map_size, &env, err, errlen) == -1)
		return -1;
	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0) {
		seterr(err, errlen, "mdb_txn_begin: %s", mdb_strerror(rc));
		goto fail;
	}
	if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &meta)) != 0 ||
	    (rc = mdb_dbi_open(txn, "msg", MDB_CREATE, &msg)) != 0 ||
	    (rc = mdb_dbi_open(txn, "host", MDB_CREATE | MDB_DUPSORT |
	    MDB_DUPFIXED, &host)) != 0) {
		seterr(err, errlen, "mdb_dbi_open: %s", mdb_strerror(rc));
		goto abort;
	}
	key.mv_size = strlen("name");
	key.mv_data = "name";
	if ((rc = mdb_get(txn, meta, &key, &val)) == 0) {
		if (val.mv_size != strlen(name) ||
		    memcmp(val.mv_data, name, val.mv_size) != 0) {
			seterr(err, errlen, "%s holds punt \"%.*s\", not %s",
			    path, (int)val.mv_size, (char *)val.mv_data, name);
			goto abort;
		}
		mdb_txn_abort(txn);
		mdb_env_close(env);
		return 0;
	}
	if (rc != MDB_NOTFOUND) {
		seterr(err, errlen, "mdb_get: %s", mdb_strerror(rc));
		goto abort;
	}
	do {
		if (getrandom(&uid, sizeof(uid), 0) != sizeof(uid)) {
			seterr(err, errlen, "getrandom: %s", strerror(errno));
			goto abort;
		}
	} while (uid == 0);
	put_le32(b, STORE_FORMAT);
	if ((rc = meta_put(txn, meta, "version", b, 4)) != 0)
		goto putfail;
	if ((rc = meta_put(txn, meta, "name", name, strlen(name))) != 0)
		goto putfail;
	put_le64(b, uid);
	if ((rc = meta_put(txn, meta, "punt_uid", b, 8)) != 0)
		goto putfail;
	put_le64(b, 1);
	if ((rc = meta_put(txn, meta, "next_id", b, 8)) != 0)
		goto putfail;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		seterr(err, errlen, "mdb_txn_commit: %s", mdb_strerror(rc));
		goto fail;
	}
	mdb_env_close(env);
	/* The new directories must survive a crash as well as the index. */
	if (util_fsync_dir(path) == -1) {
		seterr(err, errlen, "fsync %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
 putfail:
	seterr(err, errlen, "mdb_put: %s", mdb_strerror(rc));
 abort:
	mdb_txn_abort(txn);
 fail:
	mdb_env_close(env);
	return -1;
}

struct store *
store_open(const char *path, const char *name,
    const struct store_opts *opts, char *err, size_t errlen)
{
	struct store	*st;
	struct stat	 sb;
	char		 dir[PATH_MAX], file[PATH_MAX];
	MDB_txn		*txn;
	MDB_val		 key, val;
	int		 rc, dead;

	if ((st = calloc(1, sizeof(*st))) == NULL) {
		seterr(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	if (!valid_name(name)) {
		seterr(err, errlen, "bad punt name");
		goto fail;
	}
	snprintf(st->name, sizeof(st->name), "%s", name);
	if (snprintf(st->path, sizeof(st->path), "%s", path) >=
	    (int)sizeof(st->path) ||
	    snprintf(st->spool, sizeof(st->spool), "%s/spool", path) >=
	    (int)sizeof(st->spool) ||
	    snprintf(st->tmp, sizeof(st->tmp), "%s/tmp", path) >=
	    (int)sizeof(st->tmp) ||
	    snprintf(dir, sizeof(dir), "%s/index", path) >= (int)sizeof(dir) ||
	    snprintf(file, sizeof(file), "%s/data.mdb", dir) >=
	    (int)sizeof(file)) {
		seterr(err, errlen, "%s: path too long", path);
		goto fail;
	}
	if (stat(path, &sb) == -1 || !S_ISDIR(sb.st_mode)) {
		seterr(err, errlen, "%s: not a punt directory", path);
		goto fail;
	}
	st->dev = sb.st_dev;
	st->ino = sb.st_ino;
	/* mdb_env_open would quietly create an empty index: refuse first. */
	if (stat(file, &sb) == -1 || stat(st->spool, &sb) == -1 ||
	    stat(st->tmp, &sb) == -1) {
		seterr(err, errlen, "%s: not a punt (no index, spool or tmp)",
		    path);
		goto fail;
	}
	st->lease_us = opts != NULL ? (uint64_t)opts->claim_lease_s * 1000000 :
	    0;
	if (env_open(dir, opts != NULL ? opts->map_size : 0, &st->env, err,
	    errlen) == -1)
		goto fail;
	if ((rc = mdb_reader_check(st->env, &dead)) == 0 && dead > 0)
		log_info("store %s: cleared %d stale readers", name, dead);
	if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)) != 0) {
		seterr(err, errlen, "mdb_txn_begin: %s", mdb_strerror(rc));
		goto fail;
	}
	if ((rc = mdb_dbi_open(txn, "meta", 0, &st->meta)) != 0 ||
	    (rc = mdb_dbi_open(txn, "msg", 0, &st->msg)) != 0 ||
	    (rc = mdb_dbi_open(txn, "host", MDB_DUPSORT | MDB_DUPFIXED,
	    &st->host)) != 0) {
		seterr(err, errlen, "%s: index: %s", path, mdb_strerror(rc));
		goto abort;
	}
	key.mv_size = strlen("version");
	key.mv_data = "version";
	if ((rc = mdb_get(txn, st->meta, &key, &val)) != 0 ||
	    val.mv_size != 4 || get_le32(val.mv_data) != STORE_FORMAT) {
		seterr(err, errlen, "%s: missing or unknown format version",
		    path);
		goto abort;
	}
	key.mv_size = strlen("name");
	key.mv_data = "name";
	if ((rc = mdb_get(txn, st->meta, &key, &val)) != 0 ||
	    val.mv_size != strlen(name) ||
	    memcmp(val.mv_data, name, val.mv_size) != 0) {
		seterr(err, errlen, "%s: not punt %s", path, name);
		goto abort;
	}
	if (meta_get_u64(st, txn, "punt_uid", &st->uid) == -1) {
		seterr(err, errlen, "%s: no punt_uid", path);
		goto abort;
	}
	/* Committing a read-only txn keeps the dbi handles it opened. */
	if ((rc = mdb_txn_commit(txn)) != 0) {
		seterr(err, errlen, "mdb_txn_commit: %s", mdb_strerror(rc));
		goto fail;
	}
	return st;
 abort:
	mdb_txn_abort(txn);
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

/* Check an envelope and pack its recipients; returns a malloc'd list. */
static unsigned char *
pack_rcpts(const struct store_envelope *env, size_t *lenp)
{
	char		 norm[UTIL_HOST_MAX + 1];
	unsigned char	*p;
	size_t		 i, len = 0, off = 0, rl;

	if (env->host == NULL || util_host_normalize(env->host, norm) == -1 ||
	    strcmp(norm, env->host) != 0 || env->sender == NULL ||
	    strlen(env->sender) > UTIL_SENDER_MAX || env->nrcpts == 0 ||
	    env->nrcpts > REC_RCPTS_MAX)
		return NULL;
	/* The sender goes into a Return-Path line: no CR, LF or blanks. */
	for (i = 0; env->sender[i] != '\0'; i++)
		if ((unsigned char)env->sender[i] <= ' ' ||
		    (unsigned char)env->sender[i] >= 0x7f)
			return NULL;
	for (i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i] == NULL ||
		    util_user_normalize(env->rcpts[i], norm) == -1 ||
		    strcmp(norm, env->rcpts[i]) != 0)
			return NULL;
		len += 1 + strlen(env->rcpts[i]);
	}
	if ((p = malloc(len)) == NULL)
		return NULL;
	for (i = 0; i < env->nrcpts; i++) {
		rl = strlen(env->rcpts[i]);
		p[off] = (unsigned char)rl;
		memcpy(p + off + 1, env->rcpts[i], rl);
		off += 1 + rl;
	}
	*lenp = len;
	return p;
}

/* Write data to a fresh tmp file and fsync it; returns 0 or -1 (errno). */
static int
write_tmp(struct store *st, const void *data, size_t len, char *path,
    size_t pathlen)
{
	int	 fd, n, serrno;

	/* The pid comes first so fsck can tell a live writer's file. */
	n = snprintf(path, pathlen, "%s/%ld.%llx.%u", st->tmp, (long)getpid(),
	    (unsigned long long)util_now_us(), st->tmp_seq++);
	if (n < 0 || (size_t)n >= pathlen) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0660)) == -1)
		return -1;
	if (util_write_all(fd, data, len) == -1)
		goto fail;
	fault_point("store.put.tmp_written");
	if (fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		serrno = errno;
		unlink(path);
		errno = serrno;
		return -1;
	}
	fault_point("store.put.fsynced");
	return 0;
 fail:
	serrno = errno;
	close(fd);
	unlink(path);
	errno = serrno;
	return -1;
}

/* Take the next id in its own commit: ids are never reused. */
static int
alloc_id(struct store *st, uint64_t *id)
{
	MDB_txn		*txn;
	unsigned char	 b[8];
	int		 rc;

	if (txn_begin(st, 0, &txn) == -1)
		return -1;
	if (meta_get_u64(st, txn, "next_id", id) == -1)
		goto abort;
	put_le64(b, *id + 1);
	if ((rc = meta_put(txn, st->meta, "next_id", b, 8)) != 0) {
		log_warnx("store %s: mdb_put next_id: %s", st->name,
		    mdb_strerror(rc));
		goto abort;
	}
	fault_point("store.put.id_before_commit");
	if (txn_commit(st, txn) == -1)
		return -1;
	fault_point("store.put.id_committed");
	return 0;
 abort:
	mdb_txn_abort(txn);
	return -1;
}

/* mkdir spool/XX on demand; a new one is made durable in spool/. */
static int
spool_subdir(struct store *st, uint64_t id, char *dir, size_t dirlen,
    char *err, size_t errlen)
{
	int	 n;

	n = snprintf(dir, dirlen, "%s/%02x", st->spool, (unsigned)(id & 0xff));
	if (n < 0 || (size_t)n >= dirlen) {
		seterr(err, errlen, "spool path too long");
		return -1;
	}
	if (mkdir(dir, 0770) == 0) {
		if (util_fsync_dir(st->spool) == -1) {
			seterr(err, errlen, "fsync %s: %s", st->spool,
			    strerror(errno));
			return -1;
		}
	} else if (errno != EEXIST) {
		seterr(err, errlen, "mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int
commit_record(struct store *st, uint64_t id, const char *final,
    struct rec *r, size_t wire_len, char *err, size_t errlen)
{
	unsigned char	 k[8];
	struct stat	 sb;
	MDB_txn		*txn;
	MDB_val		 key, val;
	int		 rc;

	if (txn_begin(st, 0, &txn) == -1) {
		seterr(err, errlen, "index unavailable");
		return -1;
	}
	/*
	 * Check the file under the write lock: fsck removes orphans inside
	 * a write transaction, so either it saw this record or the file is
	 * gone now and the store fails instead of committing a dangling one.
	 */
	if (stat(final, &sb) == -1 || (size_t)sb.st_size != wire_len) {
		seterr(err, errlen, "%s vanished before commit", final);
		goto abort;
	}
	r->arrival_us = util_now_us();
	if (rec_put(st, txn, id, r, MDB_NOOVERWRITE) == -1) {
		seterr(err, errlen, "index write failed");
		goto abort;
	}
	id_key(id, k);
	key.mv_size = r->host_len;
	key.mv_data = (void *)(uintptr_t)r->host;
	val.mv_size = sizeof(k);
	val.mv_data = k;
	if ((rc = mdb_put(txn, st->host, &key, &val, MDB_NODUPDATA)) != 0) {
		log_warnx("store %s: mdb_put host %s: %s", st->name, r->host,
		    mdb_strerror(rc));
		seterr(err, errlen, "index write failed: %s",
		    mdb_strerror(rc));
		goto abort;
	}
	fault_point("store.put.before_commit");
	if (txn_commit(st, txn) == -1) {
		seterr(err, errlen, "index commit failed");
		return -1;
	}
	return 0;
 abort:
	mdb_txn_abort(txn);
	return -1;
}

/* The index record for env; *rcpts is the caller's to free. */
static int
put_file_rec(const struct store_envelope *env, uint64_t wire_len,
    uint64_t body_octets, struct rec *r, unsigned char **rcpts)
{
	memset(r, 0, sizeof(*r));
	if ((*rcpts = pack_rcpts(env, &r->rcpts_len)) == NULL)
		return -1;
	r->rcpts = *rcpts;
	r->nrcpts = env->nrcpts;
	r->host = env->host;
	r->host_len = strlen(env->host);
	r->sender = env->sender;
	r->sender_len = strlen(env->sender);
	r->agent = "";
	r->stored_octets = wire_len;
	r->octets = body_octets + RETURN_PATH_OCTETS(env->sender);
	return 0;
}

/*
 * tmp (durable data) -> spool, directory fsync, commit: the tail that
 * store_put and store_put_file share, with their crash points.
 * With own_tmp a failure before the rename removes tmp; without, tmp is
 * the caller's.  (After the rename a failure removes the spool name.)
 */
static int
put_file_tail(struct store *st, const char *tmp, struct rec *r,
    uint64_t wire_len, uint64_t *id, char *why, size_t whylen, bool own_tmp)
{
	char		 final[PATH_MAX], dir[PATH_MAX];
	uint64_t	 nid;

	if (alloc_id(st, &nid) == -1) {
		seterr(why, whylen, "cannot allocate an id");
		goto fail_tmp;
	}
	if (spool_path(st, nid, final, sizeof(final)) == -1) {
		seterr(why, whylen, "spool path too long");
		goto fail_tmp;
	}
	if (spool_subdir(st, nid, dir, sizeof(dir), why, whylen) == -1)
		goto fail_tmp;
	if (rename(tmp, final) == -1) {
		seterr(why, whylen, "rename %s: %s", final, strerror(errno));
		goto fail_tmp;
	}
	fault_point("store.put.renamed");
	if (util_fsync_dir(dir) == -1) {
		seterr(why, whylen, "fsync spool: %s", strerror(errno));
		goto fail_final;
	}
	fault_point("store.put.dir_fsynced");
	if (commit_record(st, nid, final, r, (size_t)wire_len, why,
	    whylen) == -1)
		goto fail_final;
	/* Durable now; a kill here is a stored message never acknowledged. */
	fault_point("store.put.committed");
	*id = nid;
	return 0;
 fail_final:
	unlink(final);
	return -1;
 fail_tmp:
	if (own_tmp)
		unlink(tmp);
	return -1;
}

enum store_res
store_put(struct store *st, const struct store_envelope *env,
    const void *wire, size_t wire_len, uint64_t body_octets, uint64_t *id,
    char *err, size_t errlen)
{
	char		 tmp[PATH_MAX];
	char		 why[PATH_MAX + 64];
	unsigned char	*rcpts;
	struct rec	 r;

	if (put_file_rec(env, wire_len, body_octets, &r, &rcpts) == -1) {
		seterr(err, errlen, "bad envelope");
		return STORE_PERMFAIL;
	}
	/* The data is durable in tmp/ before an id is spent on it. */
	if (write_tmp(st, wire, wire_len, tmp, sizeof(tmp)) == -1) {
		seterr(why, sizeof(why), "write %s/: %s", st->tmp,
		    strerror(errno));
		goto fail;
	}
	if (put_file_tail(st, tmp, &r, wire_len, id, why, sizeof(why),
	    true) == -1)
		goto fail;
	free(rcpts);
	return STORE_OK;
 fail:
	log_warnx("store %s: store failed: %s", st->name, why);
	seterr(err, errlen, "%s", why);
	free(rcpts);
	return STORE_TEMPFAIL;
}

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
	while ((rc = rcpt_next(r, rc, &rl)) != NULL) {
		if (user != NULL && !rcpt_is(rc, rl, user))
			continue;
		if (arena_add(a, len, cap, (const char *)rc + 1, rl) == -1)
			return -1;
	}
	return arena_add(a, len, cap, "", 0);
}

int
store_list(struct store *st, const char *host, const char *user,
    struct store_entry **out, size_t *n, char **env)
{
	struct store_entry	*e = NULL;
	struct rec		 r;
	MDB_txn			*txn;
	MDB_cursor		*cur = NULL;
	MDB_val			 key, val, rv;
	char			*arena = NULL;
	size_t			 cnt, ne = 0, alen = 0, acap = 0;
	uint64_t		 id;
	int			 rc;

	*out = NULL;
	*n = 0;
	if (env != NULL)
		*env = NULL;
	if (txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->host, &cur)) != 0) {
		log_warnx("store %s: mdb_cursor_open: %s", st->name,
		    mdb_strerror(rc));
		goto fail;
	}
	key.mv_size = strlen(host);
	key.mv_data = (void *)(uintptr_t)host;
	if ((rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY)) ==
	    MDB_NOTFOUND)
		goto done;
	if (rc != 0 || (rc = mdb_cursor_count(cur, &cnt)) != 0) {
		log_warnx("store %s: listing %s: %s", st->name, host,
		    mdb_strerror(rc));
		goto fail;
	}
	/* One allocation sized by the dup count: no per-entry malloc. */
	if ((e = calloc(cnt, sizeof(*e))) == NULL) {
		log_warn("store %s: listing %s", st->name, host);
		goto fail;
	}
	for (; rc == 0 && ne < cnt;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
		if (val.mv_size != 8)
			continue;
		id = key_id(val.mv_data);
		switch (rec_get(st, txn, id, &rv, &r)) {
		case GET_OK:
			break;
		case GET_NONE:
		case GET_BAD:
			/* Inconsistent index: fsck reports it. */
			continue;
		case GET_ERR:
			goto fail;
		}
		if (r.flags & STORE_F_POP_DELETED)
			continue;
		if (user != NULL && !rec_has_user(&r, user))
			continue;
		e[ne].id = id;
		e[ne].arrival_us = r.arrival_us;
		e[ne].octets = r.octets;
		e[ne].flags = r.flags;
		e[ne].env = (uint32_t)alen;
		if (env != NULL && (alen > UINT32_MAX ||
		    arena_env(&arena, &alen, &acap, &r, user) == -1)) {
			log_warn("store %s: listing %s", st->name, host);
			goto fail;
		}
		ne++;
	}
	if (rc != 0 && rc != MDB_NOTFOUND) {
		log_warnx("store %s: listing %s: %s", st->name, host,
		    mdb_strerror(rc));
		goto fail;
	}
 done:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (ne == 0) {
		free(e);
		e = NULL;
	}
	*out = e;
	*n = ne;
	if (env != NULL)
		*env = arena;
	else
		free(arena);
	return 0;
 fail:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	free(e);
	free(arena);
	return -1;
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
	for (i = 0; (rc = rcpt_next(r, rc, &rl)) != NULL; i++) {
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
	if (txn_begin(st, MDB_RDONLY, &txn) == -1)
		return STORE_TEMPFAIL;
	switch (rec_get(st, txn, id, &v, &r)) {
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
	if (spool_path(st, id, path, sizeof(path)) == -1 ||
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
	if (txn_begin(st, 0, &txn) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		switch (rec_get(st, txn, ids[i], &v, &r)) {
		case GET_OK:
			break;
		case GET_NONE:
		case GET_BAD:
			continue;
		case GET_ERR:
			goto abort;
		}
		if (r.flags & STORE_F_READ)
			continue;
		r.flags |= STORE_F_READ;
		if (rec_put(st, txn, ids[i], &r, 0) == -1)
			goto abort;
		changed++;
	}
	if (changed == 0) {
		mdb_txn_abort(txn);
		return 0;
	}
	return txn_commit(st, txn);
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

	while ((rc = rcpt_next(r, rc, &rl)) != NULL) {
		if (rcpt_is(rc, rl, user)) {
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
	if (claim_live(st, r, now)) {
		r->flags |= STORE_F_POP_DELETED;
		return rec_put(st, txn, id, r, 0);
	}
	if (rec_del(st, txn, id, r) == -1)
		return -1;
	*gone = true;
	return 0;
}

enum store_res
store_remove(struct store *st, const uint64_t *ids, size_t n,
    const char *user)
{
	unsigned char	*buf;
	struct rec	 r;
	MDB_txn		*txn;
	MDB_val		 v;
	uint64_t	*unl, now;
	size_t		 i, nunl = 0, left, keptlen;
	bool		 gone;

	if (n == 0)
		return STORE_OK;
	if ((unl = calloc(n, sizeof(*unl))) == NULL) {
		log_warn("store %s: remove", st->name);
		return STORE_TEMPFAIL;
	}
	if (txn_begin(st, 0, &txn) == -1) {
		free(unl);
		return STORE_TEMPFAIL;
	}
	now = util_now_us();
	for (i = 0; i < n; i++) {
		switch (rec_get(st, txn, ids[i], &v, &r)) {
		case GET_OK:
			break;
		case GET_NONE:
		case GET_BAD:
			/* Not listable, so not the session's to remove. */
			continue;
		case GET_ERR:
			goto abort;
		}
		if (r.flags & STORE_F_POP_DELETED)
			continue;
		if (user != NULL) {
			if ((buf = malloc(r.rcpts_len)) == NULL) {
				log_warn("store %s: remove", st->name);
				goto abort;
			}
			if (rcpts_without(&r, user, buf, &keptlen,
			    &left) == 0) {
				free(buf);
				continue;
			}
			if (left > 0) {
				/* Others still want it: drop only this one. */
				r.rcpts = buf;
				r.rcpts_len = keptlen;
				r.nrcpts = left;
				if (rec_put(st, txn, ids[i], &r, 0) == -1) {
					free(buf);
					goto abort;
				}
				free(buf);
				continue;
			}
			/*
			 * The last recipient: the whole message goes, as for
			 * a host session.  r keeps its recipient list, so a
			 * claimed one becomes a decodable POP_DELETED record
			 * that smtp done/release remove (issue 8 finding 9:
			 * an empty list under a nonzero count was written).
			 */
			free(buf);
		}
		if (remove_or_mark(st, txn, ids[i], &r, now, &gone) == -1)
			goto abort;
		if (gone)
			unl[nunl++] = ids[i];
	}
	fault_point("store.remove.before_commit");
	if (txn_commit(st, txn) == -1) {
		free(unl);
		return STORE_TEMPFAIL;
	}
	/* A kill from here on leaves orphan files for fsck, nothing else. */
	fault_point("store.remove.committed");
	for (i = 0; i < nunl; i++) {
		unlink_msg(st, unl[i]);
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
	if (rec_del(st, txn, id, r) == -1) {
		mdb_txn_abort(txn);
		return STORE_TEMPFAIL;
	}
	fault_point("store.del.before_commit");
	if (txn_commit(st, txn) == -1)
		return STORE_TEMPFAIL;
	fault_point("store.del.committed");
	unlink_msg(st, id);
	return STORE_OK;
}

/* Begin a write txn and fetch id; on anything but GET_OK, *res is set. */
static int
marker_begin(struct store *st, uint64_t id, MDB_txn **txn, MDB_val *v,
    struct rec *r, enum store_res *res)
{
	if (txn_begin(st, 0, txn) == -1) {
		*res = STORE_TEMPFAIL;
		return -1;
	}
	switch (rec_get(st, *txn, id, v, r)) {
	case GET_OK:
		return 0;
	case GET_NONE:
		*res = STORE_GONE;
		break;
	case GET_BAD:
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
	if (rec_put(st, txn, id, r, 0) == -1) {
		mdb_txn_abort(txn);
		return STORE_TEMPFAIL;
	}
	fault_point("store.marker.before_commit");
	if (txn_commit(st, txn) == -1)
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
		if (claim_live(st, &r, now)) {
			mdb_txn_abort(txn);
			return STORE_GONE;
		}
		/* Its claimer died: finish the POP3 QUIT's removal. */
		if ((res = del_commit(st, txn, id, &r)) != STORE_OK)
			return res;
		return STORE_GONE;
	}
	if (claim_live(st, &r, now)) {
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
	if (claim_live(st, &r, util_now_us())) {
		mdb_txn_abort(txn);
		return STORE_BUSY;
	}
	return del_commit(st, txn, id, &r);
}

/* Decode one record into a store_msg and hand it to fn. */
static int
walk_one(struct store *st, MDB_txn *txn, uint64_t id, store_walk_fn *fn,
    void *arg, int *stop)
{
	struct store_msg m;
	struct rec	 r;
	MDB_val		 v;

	switch (rec_get(st, txn, id, &v, &r)) {
	case GET_OK:
		break;
	case GET_NONE:
	case GET_BAD:
		return 0;
	case GET_ERR:
		return -1;
	}
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

	if (txn_begin(st, MDB_RDONLY, &txn) == -1)
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
		if (walk_one(st, txn, key_id(host != NULL ? val.mv_data :
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

	if (txn_begin(st, MDB_RDONLY, &txn) == -1)
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
	if (txn_begin(st, MDB_RDONLY, &txn) == -1)
		return -1;
	if (meta_get_u64(st, txn, "next_id", &out->next_id) == -1)
		goto out;
	if ((rc = mdb_cursor_open(txn, st->msg, &cur)) != 0)
		goto mdbfail;
	for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &key, &val, op)) == 0;
	    op = MDB_NEXT) {
		if (rec_decode(&val, &r) == -1)
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

/* One report line per problem, saying whether it was repaired. */
static void
fsck_say(struct fsck *f, bool fixed, const char *fmt, ...)
{
	char	 line[512], msg[400];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (fixed)
		f->out->repaired++;
	else
		f->left++;
	if (f->report == NULL)
		return;
	snprintf(line, sizeof(line), "punt %s: %s%s", f->st->name, msg,
	    fixed ? " (repaired)" : "");
	f->report(line, f->arg);
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

	id_key(id, k);
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
		id = key_id(key.mv_data);
		if (rec_decode(&val, &r) == -1) {
			if (add_fix(f, FIX_BADREC, id, NULL, 0) == -1)
				return -1;
			continue;
		}
		if (grow((void **)&f->ent, &f->capent, f->nent,
		    sizeof(*f->ent)) == -1)
			return -1;
		f->ent[f->nent].id = id;
		f->ent[f->nent].stored_octets = r.stored_octets;
		f->nent++;
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

/* Pass over the host db: every entry must point at a record of its host. */
static int
fsck_scan_hosts_c(struct fsck *f, MDB_txn *txn, MDB_cursor *cur)
{
	struct store	*st = f->st;
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
		id = key_id(val.mv_data);
		if (rec_get(st, txn, id, &rv, &r) == GET_OK &&
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

/* Apply (or only confirm) the index faults in one write transaction. */
static int
fsck_index_fix(struct fsck *f)
{
	struct store	*st = f->st;
	unsigned char	 k[8];
	MDB_txn		*txn;
	MDB_cursor	*hc;
	MDB_val		 key, val, rv;
	struct rec	 r;
	enum get_res	 g;
	struct fix	*x;
	size_t		 i;
	int		 rc;

	if (f->nfix == 0)
		return 0;
	if (f->repair) {
		if (txn_begin(st, 0, &txn) == -1)
			return -1;
		if ((rc = mdb_cursor_open(txn, st->host, &hc)) != 0)
			goto fail;
		for (i = 0; i < f->nfix; i++) {
			x = &f->fix[i];
			id_key(x->id, k);
			key.mv_size = 8;
			key.mv_data = k;
			g = rec_get(st, txn, x->id, &rv, &r);
			if (g == GET_ERR) {
				rc = EIO;
				goto fail;
			}
			switch (x->kind) {
			case FIX_BADREC:
				if (g == GET_BAD &&
				    (rc = mdb_del(txn, st->msg, &key, NULL)))
					goto fail;
				break;
			case FIX_NODUP:
				key.mv_size = strlen(x->host);
				key.mv_data = x->host;
				val.mv_size = 8;
				val.mv_data = k;
				if (g == GET_OK && (rc = mdb_put(txn, st->host,
				    &key, &val, MDB_NODUPDATA)) != 0 &&
				    rc != MDB_KEYEXIST)
					goto fail;
				break;
			case FIX_STRAY:
				key.mv_size = strlen(x->host);
				key.mv_data = x->host;
				if (g == GET_OK && r.host_len == key.mv_size &&
				    memcmp(r.host, x->host, key.mv_size) == 0)
					break;
				if (dup_exists(st, hc, x->host, key.mv_size,
				    x->id) && (rc = mdb_cursor_del(hc, 0)) != 0)
					goto fail;
				break;
			}
			x->done = true;
		}
		if (txn_commit(st, txn) == -1)
			return -1;
	}
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
 fail:
	log_warnx("store %s: fsck: %s", st->name, mdb_strerror(rc));
	mdb_txn_abort(txn);
	return -1;
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
	if (txn_begin(st, f->repair ? 0 : MDB_RDONLY, &txn) == -1)
		return -1;
	if (rec_get(st, txn, id, &v, &r) != GET_OK) {
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
		if (f->repair && rec_del(st, txn, id, &r) == 0)
			fixed = txn_commit(st, txn) == 0;
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
		if (rec_put(st, txn, id, &r, 0) == 0)
			fixed = txn_commit(st, txn) == 0;
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
		if (spool_path(f->st, f->ent[i].id, path, sizeof(path)) == -1)
			return -1;
		if (stat(path, &sb) == 0 &&
		    (uint64_t)sb.st_size == f->ent[i].stored_octets)
			continue;
		if (fsck_file_fault(f, f->ent[i].id, path) == -1)
			return -1;
	}
	return 0;
}

static bool
known_id(const struct fsck *f, uint64_t id)
{
	size_t	 lo = 0, hi = f->nent, mid;

	/* f->ent is in msg key order, which is id order. */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (f->ent[mid].id == id)
			return true;
		if (f->ent[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
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
	enum get_res	 g = GET_NONE;
	bool		 fixed = false;

	if (txn_begin(st, f->repair ? 0 : MDB_RDONLY, &txn) == -1)
		return -1;
	if (named && (g = rec_get(st, txn, id, &v, &r)) == GET_ERR) {
		mdb_txn_abort(txn);
		return -1;
	}
	if (g == GET_OK) {
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
		if (named && known_id(f, id))
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
	if (txn_begin(st, MDB_RDONLY, &txn) == -1)
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

/*
 * ---- Storing a message whose wire-format data is already in a file ----
 *
 * LMTP streams DATA into a tmp file of one punt instead of holding it in
 * memory (issue 8, finding 5); each recipient host's copy then reaches
 * its punt by rename(2) or link(2) (same filesystem: no data written
 * twice) or by copy_file_range(2), and from there takes the same durable
 * path as store_put: tmp/ -> fsync -> rename into spool/ -> directory
 * fsync -> index commit.  put_file_rec() and put_file_tail() are
 * store_put's envelope check and durable tail (from alloc_id on) for a
 * file already in tmp/; store_put could call them too.
 */

#define COPY_CHUNK	(64 * 1024)

/* A fresh tmp/ name: the pid first, so fsck can tell a live writer's. */
static int
tmp_name(struct store *st, char *path, size_t pathlen)
{
	int	 n;

	n = snprintf(path, pathlen, "%s/%ld.%llx.%u", st->tmp, (long)getpid(),
	    (unsigned long long)util_now_us(), st->tmp_seq++);
	if (n < 0 || (size_t)n >= pathlen) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int
store_tmp_open(struct store *st, char *path, size_t pathlen)
{
	if (tmp_name(st, path, pathlen) == -1)
		return -1;
	return open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
}

/* Copy len octets of src into the new file path and fsync it. */
static int
copy_to_tmp(int src, uint64_t len, const char *path)
{
	char		 buf[COPY_CHUNK];
	loff_t		 off = 0;
	ssize_t		 n;
	int		 fd, serrno;
	bool		 plain = false;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0660)) == -1)
		return -1;
	while ((uint64_t)off < len) {
		if (!plain) {
			n = copy_file_range(src, &off, fd, NULL,
			    (size_t)(len - (uint64_t)off < SSIZE_MAX ?
			    len - (uint64_t)off : SSIZE_MAX), 0);
			if (n > 0)
				continue;
			if (n == -1 && errno == EINTR)
				continue;
			/* Older kernels refuse across filesystems, some
			 * filesystems not at all: copy through a buffer. */
			if (n == -1 && (errno == EXDEV || errno == EINVAL ||
			    errno == ENOSYS || errno == EOPNOTSUPP ||
			    errno == EPERM)) {
				plain = true;
				continue;
			}
			if (n == 0)
				errno = EIO;	/* source shorter than len */
			goto fail;
		}
		n = pread(src, buf, sizeof(buf) < len - (uint64_t)off ?
		    sizeof(buf) : (size_t)(len - (uint64_t)off), off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			goto fail;
		}
		if (util_write_all(fd, buf, (size_t)n) == -1)
			goto fail;
		off += n;
	}
	if (fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	return 0;
 fail:
	serrno = errno;
	if (fd != -1)
		close(fd);
	unlink(path);
	errno = serrno;
	return -1;
}

enum store_res
store_put_file(struct store *st, const struct store_envelope *env,
    const char *src_path, int src_fd, uint64_t wire_len,
    uint64_t body_octets, bool last, uint64_t *id, enum store_via *via,
    char *err, size_t errlen)
{
	char		 tmp[PATH_MAX];
	char		 why[PATH_MAX + 64];
	unsigned char	*rcpts = NULL;
	struct rec	 r;
	struct stat	 ssb, tsb;
	bool		 same_fs;

	*via = STORE_VIA_COPY;
	if (put_file_rec(env, wire_len, body_octets, &r, &rcpts) == -1) {
		seterr(err, errlen, "bad envelope");
		return STORE_PERMFAIL;
	}
	if (wire_len > SIZE_MAX || fstat(src_fd, &ssb) == -1 ||
	    stat(st->tmp, &tsb) == -1) {
		seterr(why, sizeof(why), "stat %s/: %s", st->tmp,
		    strerror(errno));
		goto fail;
	}
	same_fs = ssb.st_dev == tsb.st_dev;
	/*
	 * The same filesystem: the already fsynced data gets its spool name
	 * by rename (the last copy) or by a hard link into tmp/ first (the
	 * source is still needed); either name becomes durable with the
	 * spool directory's fsync.  Otherwise a copy, fsynced before it
	 * counts.
	 */
	if (same_fs && last && access(src_path, F_OK) == 0) {
		if (put_file_tail(st, src_path, &r, wire_len, id, why,
		    sizeof(why), false) == -1)
			goto fail;
		*via = STORE_VIA_RENAME;
		free(rcpts);
		return STORE_OK;
	}
	if (tmp_name(st, tmp, sizeof(tmp)) == -1) {
		seterr(why, sizeof(why), "tmp path too long");
		goto fail;
	}
	if (same_fs && link(src_path, tmp) == 0)
		*via = STORE_VIA_LINK;
	else if (copy_to_tmp(src_fd, wire_len, tmp) == -1) {
		seterr(why, sizeof(why), "copy to %s/: %s", st->tmp,
		    strerror(errno));
		goto fail;
	}
	if (put_file_tail(st, tmp, &r, wire_len, id, why, sizeof(why),
	    true) == -1)
		goto fail;
	free(rcpts);
	return STORE_OK;
 fail:
	log_warnx("store %s: store failed: %s", st->name, why);
	seterr(err, errlen, "%s", why);
	free(rcpts);
	return STORE_TEMPFAIL;
}
