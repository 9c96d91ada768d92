/*
 * authcache: a set-associative table of MACs of successful logins in an
 * anonymous shared mapping (see authcache.h for the contract).
 *
 * This file includes <sodium.h> although the project keeps libsodium in
 * auth.c: the cache is itself a secret-handling module (a MAC key, keyed
 * BLAKE2b, constant-time compares, wiping), and routing each of those
 * through auth.c would put the key's handling in two files instead of one.
 */
#include <sys/mman.h>
#include <sys/types.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "sdps/authcache.h"

#define AC_WAYS		8
#define AC_MAC_LEN	32	/* crypto_generichash_BYTES */
#define AC_KEY_LEN	32	/* crypto_generichash_KEYBYTES */
#define AC_READ_TRIES	8

struct ac_entry {
	uint8_t		 mac[AC_MAC_LEN];
	uint64_t	 expiry_s;	/* 0 = empty */
	uint64_t	 epoch;
};

/*
 * seq is odd while a writer holds the set.  Writers take it with a
 * compare-and-swap (never wait: an insert is only an optimisation);
 * readers copy the ways and retry if seq moved.  owner names the writer
 * so a set left odd by a worker killed mid-insert can be recovered.
 */
struct ac_set {
	_Atomic uint32_t seq;
	_Atomic pid_t	 owner;
	struct ac_entry	 ways[AC_WAYS];
};

struct authcache {
	uint8_t		 key[AC_KEY_LEN];
	uint32_t	 nsets;
	uint32_t	 ttl_s;
	size_t		 map_len;
	struct ac_set	 sets[];
};

static void
ac_mac(const struct authcache *c, const char *host, const char *password,
    uint64_t generation, uint8_t out[AC_MAC_LEN])
{
	crypto_generichash_state st;
	uint8_t		 len[8], gen[8];
	uint64_t	 v;
	int		 i;

	/*
	 * Length-prefix the host so ("ab", "c...") and ("a", "bc...")
	 * cannot collide; the generation has a fixed width and the
	 * password runs to the end.
	 */
	v = strlen(host);
	for (i = 0; i < 8; i++) {
		len[i] = (uint8_t)(v >> (8 * i));
		gen[i] = (uint8_t)(generation >> (8 * i));
	}
	crypto_generichash_init(&st, c->key, sizeof(c->key), AC_MAC_LEN);
	crypto_generichash_update(&st, len, sizeof(len));
	crypto_generichash_update(&st, (const uint8_t *)host, strlen(host));
	crypto_generichash_update(&st, gen, sizeof(gen));
	crypto_generichash_update(&st, (const uint8_t *)password,
	    strlen(password));
	crypto_generichash_final(&st, out, AC_MAC_LEN);
	sodium_memzero(&st, sizeof(st));
}

/* The set follows from the MAC, so nothing about the host is visible. */
static struct ac_set *
ac_set_of(struct authcache *c, const uint8_t mac[AC_MAC_LEN])
{
	uint64_t v = 0;
	int	 i;

	for (i = 0; i < 8; i++)
		v |= (uint64_t)mac[i] << (8 * i);
	return &c->sets[v % c->nsets];
}

struct authcache *
authcache_create(unsigned entries, unsigned ttl_s)
{
	struct authcache *c;
	size_t		 nsets, len;

	if (entries == 0 || ttl_s == 0) {
		errno = EINVAL;
		return NULL;
	}
	if (sodium_init() < 0) {
		errno = EIO;
		return NULL;
	}
	nsets = (entries + AC_WAYS - 1) / AC_WAYS;
	len = sizeof(*c) + nsets * sizeof(struct ac_set);
	/*
	 * Anonymous and shared: inherited by every worker, never backed by
	 * a file.  Keep it out of core dumps and, where allowed, out of
	 * swap, since it holds the key.
	 */
	c = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	    -1, 0);
	if (c == MAP_FAILED)
		return NULL;
	(void)madvise(c, len, MADV_DONTDUMP);
	(void)mlock(c, sizeof(*c));
	randombytes_buf(c->key, sizeof(c->key));
	c->nsets = (uint32_t)nsets;
	c->ttl_s = ttl_s;
	c->map_len = len;
	return c;
}

void
authcache_destroy(struct authcache *c)
{
	if (c == NULL)
		return;
	sodium_memzero(c->key, sizeof(c->key));
	munmap(c, c->map_len);
}

static bool
ac_live(const struct ac_entry *e, uint64_t epoch, uint64_t now_s)
{
	return e->expiry_s > now_s && e->epoch == epoch;
}

bool
authcache_check(struct authcache *c, const char *host, const char *password,
    uint64_t generation, uint64_t epoch, uint64_t now_s)
{
	struct ac_entry	 copy[AC_WAYS];
	struct ac_set	*set;
	uint8_t		 mac[AC_MAC_LEN];
	uint32_t	 s1, s2;
	bool		 hit = false;
	int		 try, w;

	if (c == NULL)
		return false;
	ac_mac(c, host, password, generation, mac);
	set = ac_set_of(c, mac);
	for (try = 0; try < AC_READ_TRIES; try++) {
		s1 = atomic_load_explicit(&set->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		memcpy(copy, set->ways, sizeof(copy));
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(&set->seq, memory_order_relaxed);
		if (s1 == s2)
			break;
	}
	if (try == AC_READ_TRIES) {
		/* Busy or left locked: a miss only costs a hash. */
		sodium_memzero(mac, sizeof(mac));
		return false;
	}
	for (w = 0; w < AC_WAYS; w++)
		if (ac_live(&copy[w], epoch, now_s) &&
		    sodium_memcmp(copy[w].mac, mac, AC_MAC_LEN) == 0)
			hit = true;
	sodium_memzero(mac, sizeof(mac));
	sodium_memzero(copy, sizeof(copy));
	return hit;
}

/*
 * Take the set for writing.  A set left odd by a dead writer is taken
 * over and cleared, since its half-written way cannot be trusted.
 */
static bool
ac_set_lock(struct ac_set *set)
{
	uint32_t s;
	pid_t	 owner;

	s = atomic_load_explicit(&set->seq, memory_order_relaxed);
	if ((s & 1) == 0) {
		if (!atomic_compare_exchange_strong(&set->seq, &s, s + 1))
			return false;
		atomic_store(&set->owner, getpid());
		return true;
	}
	owner = atomic_load(&set->owner);
	if (owner <= 0 || kill(owner, 0) == 0 || errno != ESRCH)
		return false;
	if (!atomic_compare_exchange_strong(&set->owner, &owner, getpid()))
		return false;
	memset(set->ways, 0, sizeof(set->ways));
	return true;
}

static void
ac_set_unlock(struct ac_set *set)
{
	atomic_store(&set->owner, 0);
	atomic_fetch_add_explicit(&set->seq, 1, memory_order_release);
}

void
authcache_put(struct authcache *c, const char *host, const char *password,
    uint64_t generation, uint64_t epoch, uint64_t now_s)
{
	struct ac_set	*set;
	struct ac_entry	*victim = NULL;
	uint8_t		 mac[AC_MAC_LEN];
	int		 w;

	if (c == NULL)
		return;
	ac_mac(c, host, password, generation, mac);
	set = ac_set_of(c, mac);
	if (!ac_set_lock(set)) {
		sodium_memzero(mac, sizeof(mac));
		return;
	}
	/* The same login again, else a dead way, else the oldest one. */
	for (w = 0; w < AC_WAYS && victim == NULL; w++)
		if (sodium_memcmp(set->ways[w].mac, mac, AC_MAC_LEN) == 0)
			victim = &set->ways[w];
	for (w = 0; w < AC_WAYS && victim == NULL; w++)
		if (!ac_live(&set->ways[w], epoch, now_s))
			victim = &set->ways[w];
	if (victim == NULL) {
		victim = &set->ways[0];
		for (w = 1; w < AC_WAYS; w++)
			if (set->ways[w].expiry_s < victim->expiry_s)
				victim = &set->ways[w];
	}
	memcpy(victim->mac, mac, AC_MAC_LEN);
	victim->expiry_s = now_s + c->ttl_s;
	victim->epoch = epoch;
	ac_set_unlock(set);
	sodium_memzero(mac, sizeof(mac));
}

unsigned
authcache_capacity(const struct authcache *c)
{
	return c->nsets * AC_WAYS;
}

unsigned
authcache_count(struct authcache *c, uint64_t epoch, uint64_t now_s)
{
	unsigned n = 0;
	uint32_t i;
	int	 w;

	for (i = 0; i < c->nsets; i++)
		for (w = 0; w < AC_WAYS; w++)
			if (ac_live(&c->sets[i].ways[w], epoch, now_s))
				n++;
	return n;
}
