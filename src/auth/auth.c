/*
 * auth: the host table (two argon2id password hashes, an SMTP target and a
 * generation per host) in its own LMDB environment.  The only module that
 * includes <sodium.h>; LMDB codes stay in here too.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>
#include <sodium.h>

#include "sdps/auth.h"
#include "sdps/log.h"

#define AUTH_FORMAT	1	/* meta "version" */
#define AUTH_REC_VERSION 1	/* first octet of every hosts record */
#define AUTH_REC_F_PW2	0x01
#define AUTH_PW_MAX	1024	/* octets, enough for any sane password */
#define HASH_MAX	crypto_pwhash_STRBYTES
#define LIST_BATCH	256

struct auth {
	MDB_env			*env;
	MDB_dbi			 meta, hosts;
	char			 path[PATH_MAX];
	enum config_hash_cost	 cost;
	unsigned long long	 opslimit;
	size_t			 memlimit;
	bool			 have_dummy;
	char			 dummy[HASH_MAX];
};

/* A hosts record, decoded.  The hash strings are secrets: wipe them. */
struct auth_rec {
	uint64_t	 generation;
	bool		 has_pw2;
	char		 smtp[AUTH_SMTP_MAX];
	char		 h1[HASH_MAX];
	char		 h2[HASH_MAX];
};

/*
 * The auth store's own hosts record codec (auth_rec_*), private to this
 * file and unrelated to the punt index codec (include/sdps/record.h,
 * little-endian).  On disk, big-endian: version (1), flags (1),
 * generation (8), then three strings each as length (2) + octets: smtp,
 * hash 1, hash 2 ("" if none).
 */
#define AUTH_REC_MAX	(1 + 1 + 8 + 3 * 2 + AUTH_SMTP_MAX + 2 * HASH_MAX)

static void
auth_put_be64(unsigned char *p, uint64_t v)
{
	int	 i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)(v & 0xff);
}

static uint64_t
auth_get_be64(const unsigned char *p)
{
	uint64_t	 v = 0;
	int		 i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static size_t
auth_put_str(unsigned char *p, const char *s)
{
	size_t	 len = strlen(s);

	p[0] = (unsigned char)(len >> 8);
	p[1] = (unsigned char)(len & 0xff);
	memcpy(p + 2, s, len);
	return 2 + len;
}

static size_t
auth_rec_encode(const struct auth_rec *r, unsigned char *buf)
{
	size_t	 n = 0;

	buf[n++] = AUTH_REC_VERSION;
	buf[n++] = r->has_pw2 ? AUTH_REC_F_PW2 : 0;
	auth_put_be64(buf + n, r->generation);
	n += 8;
	n += auth_put_str(buf + n, r->smtp);
	n += auth_put_str(buf + n, r->h1);
	n += auth_put_str(buf + n, r->h2);
	return n;
}

static int
auth_get_str(const unsigned char **p, const unsigned char *end, char *out,
    size_t outsz)
{
	size_t	 len;

	if (end - *p < 2)
		return -1;
	len = ((size_t)(*p)[0] << 8) | (*p)[1];
	*p += 2;
	if (len >= outsz || (size_t)(end - *p) < len ||
	    memchr(*p, '\0', len) != NULL)
		return -1;
	memcpy(out, *p, len);
	out[len] = '\0';
	*p += len;
	return 0;
}

static int
auth_rec_decode(const MDB_val *v, struct auth_rec *r)
{
	const unsigned char	*p = v->mv_data, *end = p + v->mv_size;

	if (v->mv_size < 10 || p[0] != AUTH_REC_VERSION)
		return -1;
	r->has_pw2 = (p[1] & AUTH_REC_F_PW2) != 0;
	r->generation = auth_get_be64(p + 2);
	p += 10;
	if (auth_get_str(&p, end, r->smtp, sizeof(r->smtp)) == -1 ||
	    auth_get_str(&p, end, r->h1, sizeof(r->h1)) == -1 ||
	    auth_get_str(&p, end, r->h2, sizeof(r->h2)) == -1 || p != end)
		return -1;
	if (r->h1[0] == '\0' || r->has_pw2 != (r->h2[0] != '\0'))
		return -1;
	return 0;
}

static void
auth_rec_wipe(struct auth_rec *r)
{
	sodium_memzero(r, sizeof(*r));
}

void
auth_wipe(void *p, size_t len)
{
	sodium_memzero(p, len);
}

int
auth_global_init(void)
{
	/* 1 means "already done", which is fine. */
	return sodium_init() < 0 ? -1 : 0;
}

static void
cost_limits(enum config_hash_cost cost, unsigned long long *ops, size_t *mem)
{
	switch (cost) {
	case CONFIG_HASH_MIN:
		*ops = crypto_pwhash_OPSLIMIT_MIN;
		*mem = crypto_pwhash_MEMLIMIT_MIN;
		return;
	case CONFIG_HASH_INTERACTIVE:
		*ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
		*mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
		return;
	case CONFIG_HASH_MODERATE:
		*ops = crypto_pwhash_OPSLIMIT_MODERATE;
		*mem = crypto_pwhash_MEMLIMIT_MODERATE;
		return;
	}
	*ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
	*mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
}

static int
pw_check(const char *pw, char *err, size_t errlen)
{
	size_t	 len;

	if (pw == NULL || pw[0] == '\0') {
		snprintf(err, errlen, "empty password");
		return -1;
	}
	len = strnlen(pw, AUTH_PW_MAX + 1);
	if (len > AUTH_PW_MAX) {
		snprintf(err, errlen, "password over %d octets", AUTH_PW_MAX);
		return -1;
	}
	if (strpbrk(pw, "\r\n") != NULL) {
		snprintf(err, errlen, "password contains CR or LF");
		return -1;
	}
	return 0;
}

/* Hash pw with this handle's cost.  Slow: call it outside a txn. */
static int
pw_hash(struct auth *a, const char *pw, char out[HASH_MAX], char *err,
    size_t errlen)
{
	if (crypto_pwhash_str_alg(out, pw, strlen(pw), a->opslimit,
	    a->memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0) {
		snprintf(err, errlen, "crypto_pwhash_str_alg: out of memory");
		return -1;
	}
	return 0;
}

static int
host_check(const char *host, char *err, size_t errlen)
{
	char	 norm[UTIL_HOST_MAX + 1];

	if (host == NULL || util_host_normalize(host, norm) == -1 ||
	    strcmp(norm, host) != 0) {
		snprintf(err, errlen, "invalid host name");
		return -1;
	}
	return 0;
}

static int
meta_get_u64(MDB_txn *txn, struct auth *a, const char *key, uint64_t *v)
{
	MDB_val	 k, d;
	int	 rc;

	k.mv_data = (void *)key;
	k.mv_size = strlen(key);
	if ((rc = mdb_get(txn, a->meta, &k, &d)) != 0)
		return rc;
	if (d.mv_size != 8)
		return MDB_CORRUPTED;
	*v = auth_get_be64(d.mv_data);
	return 0;
}

static int
meta_put_u64(MDB_txn *txn, struct auth *a, const char *key, uint64_t v)
{
	unsigned char	 buf[8];
	MDB_val		 k, d;

	auth_put_be64(buf, v);
	k.mv_data = (void *)key;
	k.mv_size = strlen(key);
	d.mv_data = buf;
	d.mv_size = sizeof(buf);
	return mdb_put(txn, a->meta, &k, &d, 0);
}

/* Open the named databases; with create, make them and the meta keys. */
static int
auth_init_dbs(struct auth *a, bool create, char *err, size_t errlen)
{
	MDB_txn		*txn;
	uint64_t	 version, gen;
	unsigned int	 fl = create ? MDB_CREATE : 0;
	int		 rc;

	if ((rc = mdb_txn_begin(a->env, NULL, create ? 0 : MDB_RDONLY,
	    &txn)) != 0) {
		snprintf(err, errlen, "auth %s: mdb_txn_begin: %s", a->path,
		    mdb_strerror(rc));
		return -1;
	}
	if ((rc = mdb_dbi_open(txn, "meta", fl, &a->meta)) != 0 ||
	    (rc = mdb_dbi_open(txn, "hosts", fl, &a->hosts)) != 0) {
		snprintf(err, errlen, "auth %s: mdb_dbi_open: %s", a->path,
		    rc == MDB_NOTFOUND ? "not an auth store (not created?)" :
		    mdb_strerror(rc));
		goto fail;
	}
	rc = meta_get_u64(txn, a, "version", &version);
	if (rc == MDB_NOTFOUND && create) {
		if ((rc = meta_put_u64(txn, a, "version", AUTH_FORMAT)) != 0 ||
		    (rc = meta_put_u64(txn, a, "next_generation", 1)) != 0) {
			snprintf(err, errlen, "auth %s: mdb_put: %s", a->path,
			    mdb_strerror(rc));
			goto fail;
		}
		version = AUTH_FORMAT;
	} else if (rc != 0) {
		snprintf(err, errlen, "auth %s: meta version: %s", a->path,
		    rc == MDB_NOTFOUND ? "missing" : mdb_strerror(rc));
		goto fail;
	}
	if (version != AUTH_FORMAT) {
		snprintf(err, errlen, "auth %s: format version %llu, want %d",
		    a->path, (unsigned long long)version, AUTH_FORMAT);
		goto fail;
	}
	if ((rc = meta_get_u64(txn, a, "next_generation", &gen)) != 0) {
		snprintf(err, errlen, "auth %s: meta next_generation: %s",
		    a->path, mdb_strerror(rc));
		goto fail;
	}
	/* Even a read txn must commit, or the dbi handles are closed. */
	if ((rc = mdb_txn_commit(txn)) != 0) {
		snprintf(err, errlen, "auth %s: mdb_txn_commit: %s", a->path,
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
fail:
	mdb_txn_abort(txn);
	return -1;
}

struct auth *
auth_open(const char *path, uint64_t map_size, bool create,
    enum config_hash_cost cost, char *err, size_t errlen)
{
	struct auth	*a;
	char		 data[PATH_MAX + 16];
	struct stat	 st;
	int		 rc, dead;

	if (strlen(path) >= sizeof(a->path)) {
		snprintf(err, errlen, "auth %s: path too long", path);
		return NULL;
	}
	if (create && util_mkdir_p(path, 0700) == -1) {
		snprintf(err, errlen, "auth %s: mkdir: %s", path,
		    strerror(errno));
		return NULL;
	}
	/* Without create, do not let LMDB make an empty store. */
	snprintf(data, sizeof(data), "%s/data.mdb", path);
	if (!create && stat(data, &st) == -1) {
		snprintf(err, errlen, "auth %s: %s", data, strerror(errno));
		return NULL;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, errlen, "auth %s: %s", path, strerror(errno));
		return NULL;
	}
	strcpy(a->path, path);
	a->cost = cost;
	cost_limits(cost, &a->opslimit, &a->memlimit);
	if ((rc = mdb_env_create(&a->env)) != 0) {
		snprintf(err, errlen, "auth %s: mdb_env_create: %s", path,
		    mdb_strerror(rc));
		free(a);
		return NULL;
	}
	/* Every worker keeps a reader slot: LMDB's default of 126 would run
	 * out under load (max_workers is at most 4000, plus tools). */
	if ((rc = mdb_env_set_maxdbs(a->env, 4)) != 0 ||
	    (rc = mdb_env_set_maxreaders(a->env, 4096)) != 0 ||
	    (rc = mdb_env_set_mapsize(a->env, (size_t)map_size)) != 0) {
		snprintf(err, errlen, "auth %s: mdb_env_set: %s", path,
		    mdb_strerror(rc));
		goto fail;
	}
	if ((rc = mdb_env_open(a->env, path, 0, 0600)) != 0) {
		snprintf(err, errlen, "auth %s: mdb_env_open: %s", path,
		    mdb_strerror(rc));
		goto fail;
	}
	/* A worker killed inside a read txn leaves its reader slot taken. */
	if ((rc = mdb_reader_check(a->env, &dead)) != 0) {
		snprintf(err, errlen, "auth %s: mdb_reader_check: %s", path,
		    mdb_strerror(rc));
		goto fail;
	}
	if (dead > 0)
		log_info("auth %s: cleared %d stale reader slot%s", path,
		    dead, dead == 1 ? "" : "s");
	if (auth_init_dbs(a, create, err, errlen) == -1)
		goto fail;
	return a;
fail:
	mdb_env_close(a->env);
	free(a);
	return NULL;
}

void
auth_close(struct auth *a)
{
	if (a == NULL)
		return;
	mdb_env_close(a->env);
	sodium_memzero(a, sizeof(*a));
	free(a);
}

static int
auth_rec_put(MDB_txn *txn, struct auth *a, const char *host,
    const struct auth_rec *r, unsigned int flags)
{
	unsigned char	 buf[AUTH_REC_MAX];
	MDB_val		 k, d;
	int		 rc;

	k.mv_data = (void *)host;
	k.mv_size = strlen(host);
	d.mv_data = buf;
	d.mv_size = auth_rec_encode(r, buf);
	rc = mdb_put(txn, a->hosts, &k, &d, flags);
	sodium_memzero(buf, sizeof(buf));
	return rc;
}

/* MDB_NOTFOUND, a decode failure (MDB_CORRUPTED) or an LMDB code. */
static int
auth_rec_get(MDB_txn *txn, struct auth *a, const char *host, struct auth_rec *r)
{
	MDB_val	 k, d;
	int	 rc;

	k.mv_data = (void *)host;
	k.mv_size = strlen(host);
	if ((rc = mdb_get(txn, a->hosts, &k, &d)) != 0)
		return rc;
	if (auth_rec_decode(&d, r) == -1) {
		auth_rec_wipe(r);
		log_warnx("auth %s: host %s: bad record", a->path, host);
		return MDB_CORRUPTED;
	}
	return 0;
}

/* Take the next generation from the counter: never reused, even after del. */
static int
next_generation(MDB_txn *txn, struct auth *a, uint64_t *gen)
{
	int	 rc;

	if ((rc = meta_get_u64(txn, a, "next_generation", gen)) != 0)
		return rc;
	return meta_put_u64(txn, a, "next_generation", *gen + 1);
}

static int
txn_fail(MDB_txn *txn, struct auth *a, const char *what, int rc, char *err,
    size_t errlen)
{
	if (txn != NULL)
		mdb_txn_abort(txn);
	snprintf(err, errlen, "auth %s: %s: %s", a->path, what,
	    mdb_strerror(rc));
	return -1;
}

int
auth_host_add(struct auth *a, const char *host, const char *pw1,
    const char *pw2, char *err, size_t errlen)
{
	struct auth_rec	 r;
	MDB_txn		*txn;
	int		 rc;

	if (host_check(host, err, errlen) == -1 ||
	    pw_check(pw1, err, errlen) == -1 ||
	    (pw2 != NULL && pw_check(pw2, err, errlen) == -1))
		return -1;
	memset(&r, 0, sizeof(r));
	if (pw_hash(a, pw1, r.h1, err, errlen) == -1 ||
	    (pw2 != NULL && pw_hash(a, pw2, r.h2, err, errlen) == -1)) {
		auth_rec_wipe(&r);
		return -1;
	}
	r.has_pw2 = pw2 != NULL;
	if ((rc = mdb_txn_begin(a->env, NULL, 0, &txn)) != 0) {
		auth_rec_wipe(&r);
		return txn_fail(NULL, a, "mdb_txn_begin", rc, err, errlen);
	}
	if ((rc = next_generation(txn, a, &r.generation)) != 0) {
		auth_rec_wipe(&r);
		return txn_fail(txn, a, "next_generation", rc, err, errlen);
	}
	rc = auth_rec_put(txn, a, host, &r, MDB_NOOVERWRITE);
	auth_rec_wipe(&r);
	if (rc == MDB_KEYEXIST) {
		mdb_txn_abort(txn);
		snprintf(err, errlen, "host %s exists", host);
		return -1;
	}
	if (rc != 0)
		return txn_fail(txn, a, "mdb_put", rc, err, errlen);
	if ((rc = mdb_txn_commit(txn)) != 0)
		return txn_fail(NULL, a, "mdb_txn_commit", rc, err, errlen);
	return 0;
}

/*
 * Read-modify-write of one host record.  pw != NULL sets that slot's
 * hash (already made) and takes a new generation; smtp != NULL sets it.
 */
static int
host_update(struct auth *a, const char *host, int slot, const char *hash,
    const char *smtp, char *err, size_t errlen)
{
	struct auth_rec	 r;
	MDB_txn		*txn;
	int		 rc;

	if ((rc = mdb_txn_begin(a->env, NULL, 0, &txn)) != 0)
		return txn_fail(NULL, a, "mdb_txn_begin", rc, err, errlen);
	if ((rc = auth_rec_get(txn, a, host, &r)) == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		snprintf(err, errlen, "no such host %s", host);
		return -1;
	}
	if (rc != 0)
		return txn_fail(txn, a, "mdb_get", rc, err, errlen);
	if (hash != NULL) {
		strcpy(slot == 1 ? r.h1 : r.h2, hash);
		if (slot == 2)
			r.has_pw2 = true;
		if ((rc = next_generation(txn, a, &r.generation)) != 0) {
			auth_rec_wipe(&r);
			return txn_fail(txn, a, "next_generation", rc, err,
			    errlen);
		}
	}
	if (smtp != NULL)
		strcpy(r.smtp, smtp);
	rc = auth_rec_put(txn, a, host, &r, 0);
	auth_rec_wipe(&r);
	if (rc != 0)
		return txn_fail(txn, a, "mdb_put", rc, err, errlen);
	if ((rc = mdb_txn_commit(txn)) != 0)
		return txn_fail(NULL, a, "mdb_txn_commit", rc, err, errlen);
	return 0;
}

int
auth_host_passwd(struct auth *a, const char *host, int slot, const char *pw,
    char *err, size_t errlen)
{
	char	 hash[HASH_MAX];
	int	 rc;

	if (host_check(host, err, errlen) == -1)
		return -1;
	if (slot != 1 && slot != 2) {
		snprintf(err, errlen, "password slot must be 1 or 2");
		return -1;
	}
	if (pw_check(pw, err, errlen) == -1 ||
	    pw_hash(a, pw, hash, err, errlen) == -1)
		return -1;
	rc = host_update(a, host, slot, hash, NULL, err, errlen);
	sodium_memzero(hash, sizeof(hash));
	return rc;
}

/* "" or "host:port", host a DNS name, an IPv4 address or "[v6]". */
static bool
is_smtp_target(const char *t)
{
	char		 host[UTIL_HOST_MAX + 1], norm[UTIL_HOST_MAX + 1];
	const char	*colon;
	uint64_t	 port;
	size_t		 len;

	if (t[0] == '\0')
		return true;
	if (strlen(t) >= AUTH_SMTP_MAX || (colon = strrchr(t, ':')) == NULL)
		return false;
	if (util_parse_u64(colon + 1, 65535, &port) == -1 || port == 0)
		return false;
	len = (size_t)(colon - t);
	if (len >= 2 && t[0] == '[' && t[len - 1] == ']') {
		/* The bracketed part only needs to look like an address. */
		return strspn(t + 1, "0123456789abcdefABCDEF:.") == len - 2;
	}
	if (len == 0 || len > UTIL_HOST_MAX)
		return false;
	memcpy(host, t, len);
	host[len] = '\0';
	return util_host_normalize(host, norm) == 0;
}

int
auth_host_set_smtp(struct auth *a, const char *host, const char *target,
    char *err, size_t errlen)
{
	if (host_check(host, err, errlen) == -1)
		return -1;
	if (target == NULL || !is_smtp_target(target)) {
		snprintf(err, errlen, "bad SMTP target (want host:port)");
		return -1;
	}
	return host_update(a, host, 0, NULL, target, err, errlen);
}

int
auth_host_del(struct auth *a, const char *host, char *err, size_t errlen)
{
	MDB_txn	*txn;
	MDB_val	 k;
	int	 rc;

	if (host_check(host, err, errlen) == -1)
		return -1;
	if ((rc = mdb_txn_begin(a->env, NULL, 0, &txn)) != 0)
		return txn_fail(NULL, a, "mdb_txn_begin", rc, err, errlen);
	k.mv_data = (void *)host;
	k.mv_size = strlen(host);
	if ((rc = mdb_del(txn, a->hosts, &k, NULL)) == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		snprintf(err, errlen, "no such host %s", host);
		return -1;
	}
	if (rc != 0)
		return txn_fail(txn, a, "mdb_del", rc, err, errlen);
	if ((rc = mdb_txn_commit(txn)) != 0)
		return txn_fail(NULL, a, "mdb_txn_commit", rc, err, errlen);
	return 0;
}

static void
host_fill(struct auth_host *out, const char *host, size_t hostlen,
    const struct auth_rec *r)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->host, host, hostlen);
	out->host[hostlen] = '\0';
	out->generation = r->generation;
	out->has_pw2 = r->has_pw2;
	strcpy(out->smtp, r->smtp);
}

enum auth_res
auth_host_get(struct auth *a, const char *host, struct auth_host *out)
{
	struct auth_rec	 r;
	MDB_txn		*txn;
	size_t		 len;
	int		 rc;

	if (host == NULL || (len = strlen(host)) == 0 || len > UTIL_HOST_MAX)
		return AUTH_FAIL;
	if ((rc = mdb_txn_begin(a->env, NULL, MDB_RDONLY, &txn)) != 0) {
		log_warnx("auth %s: mdb_txn_begin: %s", a->path,
		    mdb_strerror(rc));
		return AUTH_TEMPFAIL;
	}
	rc = auth_rec_get(txn, a, host, &r);
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return AUTH_FAIL;
	if (rc != 0) {
		if (rc != MDB_CORRUPTED)
			log_warnx("auth %s: mdb_get: %s", a->path,
			    mdb_strerror(rc));
		return AUTH_TEMPFAIL;
	}
	host_fill(out, host, len, &r);
	auth_rec_wipe(&r);
	return AUTH_OK;
}

/*
 * Batches of LIST_BATCH, each from its own short read txn, so fn runs
 * with no txn open (it may call back into auth, or be slow to print).
 */
int
auth_host_list(struct auth *a,
    int (*fn)(const struct auth_host *h, void *arg), void *arg)
{
	struct auth_host	*batch;
	struct auth_rec		 r;
	MDB_txn			*txn;
	MDB_cursor		*cur;
	MDB_val			 k, d;
	char			 last[UTIL_HOST_MAX + 1] = "";
	size_t			 n, i;
	int			 rc, op, ret = 0;
	bool			 more = true;

	if ((batch = calloc(LIST_BATCH, sizeof(*batch))) == NULL) {
		log_warn("auth %s: list", a->path);
		return -1;
	}
	while (more && ret == 0) {
		if ((rc = mdb_txn_begin(a->env, NULL, MDB_RDONLY,
		    &txn)) != 0) {
			log_warnx("auth %s: mdb_txn_begin: %s", a->path,
			    mdb_strerror(rc));
			ret = -1;
			break;
		}
		if ((rc = mdb_cursor_open(txn, a->hosts, &cur)) != 0) {
			mdb_txn_abort(txn);
			log_warnx("auth %s: mdb_cursor_open: %s", a->path,
			    mdb_strerror(rc));
			ret = -1;
			break;
		}
		k.mv_data = last;
		k.mv_size = strlen(last);
		op = last[0] == '\0' ? MDB_FIRST : MDB_SET_RANGE;
		n = 0;
		while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
			op = MDB_NEXT;
			/* Skip the key the batch before ended on. */
			if (k.mv_size == strlen(last) &&
			    memcmp(k.mv_data, last, k.mv_size) == 0)
				continue;
			if (k.mv_size == 0 || k.mv_size > UTIL_HOST_MAX ||
			    auth_rec_decode(&d, &r) == -1) {
				log_warnx("auth %s: bad record skipped",
				    a->path);
				continue;
			}
			host_fill(&batch[n], k.mv_data, k.mv_size, &r);
			auth_rec_wipe(&r);
			if (++n == LIST_BATCH)
				break;
		}
		mdb_cursor_close(cur);
		mdb_txn_abort(txn);
		if (rc != 0 && rc != MDB_NOTFOUND) {
			log_warnx("auth %s: mdb_cursor_get: %s", a->path,
			    mdb_strerror(rc));
			ret = -1;
			break;
		}
		more = n == LIST_BATCH;
		for (i = 0; i < n; i++)
			if (fn(&batch[i], arg) != 0) {
				more = false;	/* the caller asked to stop */
				break;
			}
		if (n > 0)
			strcpy(last, batch[n - 1].host);
	}
	free(batch);
	return ret;
}

/* The dummy is made once per handle, at the handle's cost. */
static int
dummy_ensure(struct auth *a)
{
	char	 pw[33];
	int	 rc;

	if (a->have_dummy)
		return 0;
	randombytes_buf(pw, sizeof(pw) - 1);
	for (rc = 0; rc < (int)sizeof(pw) - 1; rc++)
		pw[rc] = (char)('a' + ((unsigned char)pw[rc] % 26));
	pw[sizeof(pw) - 1] = '\0';
	rc = crypto_pwhash_str_alg(a->dummy, pw, strlen(pw), a->opslimit,
	    a->memlimit, crypto_pwhash_ALG_ARGON2ID13);
	sodium_memzero(pw, sizeof(pw));
	if (rc != 0) {
		log_warnx("auth %s: dummy hash: out of memory", a->path);
		return -1;
	}
	a->have_dummy = true;
	return 0;
}

enum auth_res
auth_verify(struct auth *a, const char *host, const char *password,
    uint64_t *generation)
{
	struct auth_rec	 r;
	MDB_txn		*txn;
	const char	*h1, *h2;
	size_t		 pwlen;
	int		 rc;
	bool		 found;
	enum auth_res	 res = AUTH_FAIL;

	if (dummy_ensure(a) == -1)
		return AUTH_TEMPFAIL;
	memset(&r, 0, sizeof(r));
	if ((rc = mdb_txn_begin(a->env, NULL, MDB_RDONLY, &txn)) != 0) {
		log_warnx("auth %s: mdb_txn_begin: %s", a->path,
		    mdb_strerror(rc));
		return AUTH_TEMPFAIL;
	}
	rc = (host == NULL || host[0] == '\0' ||
	    strlen(host) > UTIL_HOST_MAX) ? MDB_NOTFOUND :
	    auth_rec_get(txn, a, host, &r);
	/* The hashes are copied out: no txn is held while hashing. */
	mdb_txn_abort(txn);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		if (rc != MDB_CORRUPTED)
			log_warnx("auth %s: mdb_get: %s", a->path,
			    mdb_strerror(rc));
		auth_rec_wipe(&r);
		return AUTH_TEMPFAIL;
	}
	found = rc == 0;
	/*
	 * A failure always costs two hashes, whatever the host: a missing
	 * host or second password is stood in for by the dummy.  A bad
	 * password (empty, too long) still goes through both, so nothing
	 * about the host shows in the time.
	 */
	h1 = found ? r.h1 : a->dummy;
	h2 = found && r.has_pw2 ? r.h2 : a->dummy;
	pwlen = password == NULL ? 0 : strnlen(password, AUTH_PW_MAX + 1);
	if (password == NULL || pwlen == 0 || pwlen > AUTH_PW_MAX) {
		password = "";
		pwlen = 0;
		found = false;
	}
	if (crypto_pwhash_str_verify(h1, password, pwlen) == 0 && found)
		res = AUTH_OK;
	else if (crypto_pwhash_str_verify(h2, password, pwlen) == 0 && found &&
	    r.has_pw2)
		res = AUTH_OK;
	if (res == AUTH_OK && generation != NULL)
		*generation = r.generation;
	auth_rec_wipe(&r);
	return res;
}
