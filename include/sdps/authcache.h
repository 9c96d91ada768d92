/*
 * authcache: remembers successful password checks in shared memory so a
 * repeat login within the TTL costs a keyed BLAKE2b MAC instead of an
 * argon2id hash.  The table lives in an anonymous MAP_SHARED mapping that
 * the master creates before fork(); the MAC key is random per creation
 * and never written to a file.  An entry holds only
 * MAC(key, host, password, generation), its expiry time and the flush
 * epoch it was made in: no password and no host name.  Failures are
 * never stored.
 *
 * Entries stop matching when the host's password generation changes
 * (sdps-ctl host passwd: it is part of the MAC), when the epoch changes
 * (sdps-ctl auth flush bumps sb_header.auth_cache_epoch), or when they
 * expire.  The table is set-associative with a fixed number of sets, so
 * its size never grows; a full set evicts the entry closest to expiry.
 * Every function may be called by any process that inherited the
 * mapping, concurrently (per-set seqlock; a writer that finds a set busy
 * skips its insert).
 *
 * Error convention: authcache_create returns NULL with errno; the rest
 * cannot fail (a miss is false, a busy set is skipped) and take
 * c == NULL as "no cache".
 */
#ifndef SDPS_AUTHCACHE_H
#define SDPS_AUTHCACHE_H

#include <stdbool.h>
#include <stdint.h>

struct authcache;

/*
 * Master, before fork: map a table for at least entries entries (rounded
 * up to whole sets) whose entries live ttl_s seconds, with a fresh random
 * key.  Calls sodium_init().  Returns NULL with errno on failure
 * (EINVAL if entries or ttl_s is 0).
 */
struct authcache *authcache_create(unsigned entries, unsigned ttl_s);

/* Unmap the table (key included, after wiping it).  NULL is ignored. */
void	authcache_destroy(struct authcache *c);

/*
 * True if password was verified for host at this generation, in this
 * epoch, and the entry has not expired at now_s (seconds, any clock
 * that every process shares, e.g. time(NULL)).  The comparison runs in
 * constant time.  c == NULL means no cache: false.  Never blocks.
 */
bool	authcache_check(struct authcache *c, const char *host,
	    const char *password, uint64_t generation, uint64_t epoch,
	    uint64_t now_s);

/*
 * Remember a successful verification (call only after auth_verify said
 * AUTH_OK, with the generation it returned and the epoch read before
 * verifying, so a flush during the hash makes the entry stale at once).
 * Best effort: a busy set is skipped.  c == NULL is a no-op.
 */
void	authcache_put(struct authcache *c, const char *host,
	    const char *password, uint64_t generation, uint64_t epoch,
	    uint64_t now_s);

/* The number of entries the table can hold. */
unsigned authcache_capacity(const struct authcache *c);

/* Entries that could still hit at (epoch, now_s); for status and tests. */
unsigned authcache_count(struct authcache *c, uint64_t epoch,
	    uint64_t now_s);

#endif
