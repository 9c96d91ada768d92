/*
 * throttle: per-source and per-host failure budgets as leaky buckets in a
 * set-associative table in an anonymous shared mapping (see throttle.h
 * for the contract).
 *
 * This file includes <sodium.h> for the keyed SipHash (crypto_shorthash)
 * and the random key: what it hashes are addresses and host names, not
 * secrets, but the key keeps an outsider from choosing names that all
 * land in one set and evict a source's record.
 */
#include <sys/mman.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "sdps/log.h"
#include "sdps/throttle.h"

#define THR_WAYS	8
#define THR_SCALE	1000u	/* one failure, in bucket units */
#define THR_KEY_LEN	16	/* crypto_shorthash_KEYBYTES */
#define THR_NAME_MAX	256

enum thr_kind { THR_K_SOURCE = 1, THR_K_HOST = 2, THR_K_LOGIN = 3 };

struct thr_entry {
	uint64_t	 tag;		/* keyed hash of kind and name; 0 = empty */
	uint64_t	 stamp_s;	/* level is as of this time */
	uint32_t	 level;		/* failures * THR_SCALE, not yet drained */
	uint32_t	 kind;		/* enum thr_kind */
};

struct throttle {
	uint8_t		 key[THR_KEY_LEN];
	uint32_t	 nsets;
	size_t		 map_len;
	/* Robust and process-shared: guards every entry. */
	pthread_mutex_t	 mu;
	struct thr_entry ents[];	/* nsets * THR_WAYS */
};

static const uint8_t thr_fixed_key[THR_KEY_LEN];

/*
 * The bytes that name a source.  IPv6 counts per /64, the block one
 * subscriber is usually given, else a single client could walk its own
 * prefix to get a fresh budget per address; IPv4-mapped addresses stay
 * whole (their /64 would be every IPv4 client at once).
 */
static size_t
thr_source_bytes(const char *source, uint8_t *out, size_t outlen)
{
	char		 a[INET6_ADDRSTRLEN];
	struct in6_addr	 in6;
	size_t		 len = strlen(source);

	if (len > 2 && len - 2 < sizeof(a) && source[0] == '[' &&
	    source[len - 1] == ']') {
		memcpy(a, source + 1, len - 2);
		a[len - 2] = '\0';
		if (inet_pton(AF_INET6, a, &in6) == 1 && outlen >= 17) {
			if (!IN6_IS_ADDR_V4MAPPED(&in6))
				memset(in6.s6_addr + 8, 0, 8);
			out[0] = '6';
			memcpy(out + 1, in6.s6_addr, 16);
			return 17;
		}
	}
	if (len + 1 > outlen)
		len = outlen - 1;
	out[0] = 's';
	memcpy(out + 1, source, len);
	return len + 1;
}

static uint64_t
thr_hash(const uint8_t *key, enum thr_kind kind, const char *name)
{
	uint8_t		 buf[1 + 1 + THR_NAME_MAX];
	uint8_t		 h[8];
	uint64_t	 v = 0;
	size_t		 n, len;
	int		 i;

	buf[0] = (uint8_t)kind;
	if (kind == THR_K_SOURCE)
		n = 1 + thr_source_bytes(name, buf + 1, sizeof(buf) - 1);
	else {	/* a host name, for its failures or its last login */
		len = strlen(name);
		if (len > sizeof(buf) - 1)
			len = sizeof(buf) - 1;
		memcpy(buf + 1, name, len);
		n = 1 + len;
	}
	crypto_shorthash(h, buf, n, key);
	for (i = 0; i < 8; i++)
		v |= (uint64_t)h[i] << (8 * i);
	return v != 0 ? v : 1;
}

struct throttle *
throttle_create(unsigned entries)
{
	struct throttle		*t;
	pthread_mutexattr_t	 a;
	size_t			 nsets, len;
	int			 rc;

	if (entries == 0) {
		errno = EINVAL;
		return NULL;
	}
	if (sodium_init() < 0) {
		errno = EIO;
		return NULL;
	}
	nsets = (entries + THR_WAYS - 1) / THR_WAYS;
	len = sizeof(*t) + nsets * THR_WAYS * sizeof(struct thr_entry);
	/* Anonymous and shared: inherited by every worker, no file. */
	t = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	    -1, 0);
	if (t == MAP_FAILED)
		return NULL;
	(void)madvise(t, len, MADV_DONTDUMP);
	randombytes_buf(t->key, sizeof(t->key));
	t->nsets = (uint32_t)nsets;
	t->map_len = len;
	if ((rc = pthread_mutexattr_init(&a)) == 0) {
		if ((rc = pthread_mutexattr_setpshared(&a,
		    PTHREAD_PROCESS_SHARED)) == 0 &&
		    (rc = pthread_mutexattr_setrobust(&a,
		    PTHREAD_MUTEX_ROBUST)) == 0)
			rc = pthread_mutex_init(&t->mu, &a);
		pthread_mutexattr_destroy(&a);
	}
	if (rc != 0) {
		munmap(t, len);
		errno = rc;
		return NULL;
	}
	return t;
}

void
throttle_destroy(struct throttle *t)
{
	if (t == NULL)
		return;
	sodium_memzero(t->key, sizeof(t->key));
	munmap(t, t->map_len);
}

static bool
thr_lock(struct throttle *t)
{
	int	 rc;

	rc = pthread_mutex_lock(&t->mu);
	if (rc == EOWNERDEAD) {
		/* A holder died mid-update: at worst one bucket is off by
		 * a failure, which is no reason to stop counting. */
		rc = pthread_mutex_consistent(&t->mu);
	}
	if (rc != 0) {
		errno = rc;
		log_warn("throttle: mutex");
		return false;
	}
	return true;
}

static void
thr_unlock(struct throttle *t)
{
	pthread_mutex_unlock(&t->mu);
}

/* A login record has no budget: it counts as drained for eviction. */
static unsigned
thr_budget(const struct throttle_limits *lim, uint32_t kind)
{
	switch (kind) {
	case THR_K_SOURCE:
		return lim->source_budget;
	case THR_K_HOST:
		return lim->host_budget;
	}
	return 0;
}

/* The entry's level at now_s: a whole budget drains per window. */
static uint32_t
thr_level(const struct thr_entry *e, const struct throttle_limits *lim,
    uint64_t now_s)
{
	uint64_t	 leak, dt, budget;

	if (e->tag == 0 || e->level == 0)
		return 0;
	budget = thr_budget(lim, e->kind);
	if (budget == 0 || lim->window_s == 0)
		return 0;
	dt = now_s > e->stamp_s ? now_s - e->stamp_s : 0;
	/* dt is capped so the product cannot overflow. */
	if (dt > lim->window_s)
		return 0;
	leak = dt * budget * THR_SCALE / lim->window_s;
	return leak >= e->level ? 0 : (uint32_t)(e->level - leak);
}

/* Over budget: one more failure would not fit. */
static bool
thr_full(uint32_t level, unsigned budget)
{
	return budget > 0 && (uint64_t)level + THR_SCALE >
	    (uint64_t)budget * THR_SCALE;
}

static struct thr_entry *
thr_set(struct throttle *t, uint64_t tag)
{
	return &t->ents[(size_t)(tag % t->nsets) * THR_WAYS];
}

static struct thr_entry *
thr_find(struct throttle *t, uint64_t tag)
{
	struct thr_entry	*set = thr_set(t, tag);
	int			 w;

	for (w = 0; w < THR_WAYS; w++)
		if (set[w].tag == tag)
			return &set[w];
	return NULL;
}

/* The entry for tag, made if missing: evicts an empty or drained way,
 * else the one whose last failure is oldest. */
static struct thr_entry *
thr_get(struct throttle *t, const struct throttle_limits *lim, uint64_t tag,
    uint32_t kind, uint64_t now_s)
{
	struct thr_entry	*set = thr_set(t, tag), *v = NULL;
	int			 w;

	if ((v = thr_find(t, tag)) != NULL)
		return v;
	for (w = 0; w < THR_WAYS && v == NULL; w++)
		if (set[w].tag == 0 || thr_level(&set[w], lim, now_s) == 0)
			v = &set[w];
	if (v == NULL) {
		v = &set[0];
		for (w = 1; w < THR_WAYS; w++)
			if (set[w].stamp_s < v->stamp_s)
				v = &set[w];
	}
	v->tag = tag;
	v->kind = kind;
	v->level = 0;
	v->stamp_s = now_s;
	return v;
}

/* Add delta (may be negative) to the entry's drained level, capped at
 * its budget: beyond that it is refused anyway and should not take
 * longer than one window to drain. */
static void
thr_add(struct thr_entry *e, const struct throttle_limits *lim,
    uint64_t now_s, int64_t delta)
{
	int64_t		 lv, cap;

	lv = (int64_t)thr_level(e, lim, now_s) + delta;
	cap = (int64_t)thr_budget(lim, e->kind) * THR_SCALE;
	if (lv > cap)
		lv = cap;
	if (lv < 0)
		lv = 0;
	e->level = (uint32_t)lv;
	e->stamp_s = now_s;
}

enum throttle_verdict
throttle_admit(struct throttle *t, const struct throttle_limits *lim,
    const char *source, const char *host, uint64_t now_s, unsigned *recent)
{
	struct thr_entry	*se = NULL, *he = NULL;
	uint64_t		 stag, htag;
	uint32_t		 slv = 0, hlv = 0;
	enum throttle_verdict	 v = THROTTLE_ALLOW;

	*recent = 0;
	if (t == NULL || (lim->source_budget == 0 && lim->host_budget == 0))
		return THROTTLE_ALLOW;
	stag = thr_hash(t->key, THR_K_SOURCE, source);
	htag = thr_hash(t->key, THR_K_HOST, host);
	if (!thr_lock(t))
		return THROTTLE_ALLOW;	/* fail open: the hash gate still bounds */
	if (lim->source_budget > 0 && (se = thr_find(t, stag)) != NULL)
		slv = thr_level(se, lim, now_s);
	if (lim->host_budget > 0 && (he = thr_find(t, htag)) != NULL)
		hlv = thr_level(he, lim, now_s);
	*recent = (slv + THR_SCALE - 1) / THR_SCALE;
	if (thr_full(slv, lim->source_budget))
		v = THROTTLE_SOURCE;
	else if (thr_full(hlv, lim->host_budget) &&
	    (slv > 0 || lim->source_budget == 0))
		v = THROTTLE_HOST;
	thr_unlock(t);
	return v;
}

void
throttle_fail(struct throttle *t, const struct throttle_limits *lim,
    const char *source, const char *host, uint64_t now_s)
{
	struct thr_entry	*e;

	if (t == NULL || (lim->source_budget == 0 && lim->host_budget == 0))
		return;
	if (!thr_lock(t))
		return;
	if (lim->source_budget > 0) {
		e = thr_get(t, lim, thr_hash(t->key, THR_K_SOURCE, source),
		    THR_K_SOURCE, now_s);
		thr_add(e, lim, now_s, THR_SCALE);
	}
	if (lim->host_budget > 0) {
		e = thr_get(t, lim, thr_hash(t->key, THR_K_HOST, host),
		    THR_K_HOST, now_s);
		thr_add(e, lim, now_s, THR_SCALE);
	}
	thr_unlock(t);
}

unsigned
throttle_delay_ms(unsigned base_ms, unsigned recent, unsigned cap_ms)
{
	uint64_t	 d = base_ms;

	if (cap_ms < base_ms)
		cap_ms = base_ms;
	while (recent-- > 0 && d < cap_ms)
		d *= 2;
	return d > cap_ms ? cap_ms : (unsigned)d;
}

uint64_t
throttle_source_id(const struct throttle *t, const char *source)
{
	return thr_hash(t != NULL ? t->key : thr_fixed_key, THR_K_SOURCE,
	    source);
}

unsigned
throttle_login_wait(struct throttle *t, const char *host, uint64_t now_s,
    unsigned min_s)
{
	struct thr_entry	*e;
	uint64_t		 tag, wait = 0;

	if (t == NULL || min_s == 0)
		return 0;
	tag = thr_hash(t->key, THR_K_LOGIN, host);
	if (!thr_lock(t))
		return 0;
	if ((e = thr_find(t, tag)) != NULL && e->kind == THR_K_LOGIN &&
	    now_s >= e->stamp_s && now_s - e->stamp_s < min_s)
		wait = min_s - (now_s - e->stamp_s);
	thr_unlock(t);
	return (unsigned)wait;
}

void
throttle_login_done(struct throttle *t, const struct throttle_limits *lim,
    const char *host, uint64_t now_s)
{
	struct thr_entry	*e;

	if (t == NULL)
		return;
	if (!thr_lock(t))
		return;
	e = thr_get(t, lim, thr_hash(t->key, THR_K_LOGIN, host),
	    THR_K_LOGIN, now_s);
	e->stamp_s = now_s;
	e->level = 0;
	thr_unlock(t);
}

void
throttle_stats(struct throttle *t, const struct throttle_limits *lim,
    uint64_t now_s, struct throttle_stats *st)
{
	size_t		 i, n;
	uint32_t	 lv;

	memset(st, 0, sizeof(*st));
	if (t == NULL || !thr_lock(t))
		return;
	n = (size_t)t->nsets * THR_WAYS;
	for (i = 0; i < n; i++) {
		if ((lv = thr_level(&t->ents[i], lim, now_s)) == 0)
			continue;
		st->entries++;
		if (!thr_full(lv, thr_budget(lim, t->ents[i].kind)))
			continue;
		if (t->ents[i].kind == THR_K_SOURCE)
			st->blocked_sources++;
		else
			st->blocked_hosts++;
	}
	thr_unlock(t);
}

unsigned
throttle_capacity(const struct throttle *t)
{
	return t->nsets * THR_WAYS;
}
