/*
 * throttle: failure budgets for password checks, per source address and
 * per host (issue 8, finding 4), in the spirit of Dovecot's auth penalty.
 *
 * A fixed-size table in an anonymous MAP_SHARED mapping that the master
 * creates before fork(), like the auth cache.  Each entry is a leaky
 * bucket: its level rises by one failure per failed check and drains
 * linearly, a whole budget per window, so a source may fail `budget`
 * times at once and then once per window/budget seconds.  Entries are
 * keyed by a keyed 64-bit SipHash of the kind and the name (the source
 * address, IPv6 reduced to its /64, or the host name), with a random key
 * per creation: no address, host name or password is stored, and nobody
 * outside can aim names at one set.  The table is set-associative with a
 * fixed number of sets; a full set evicts a drained entry, else the one
 * whose last failure is oldest.
 *
 * Protocol: throttle_admit() decides before a check; only a check that
 * failed is charged, by throttle_fail().  So logins in flight at once
 * from one address (a NAT, a poller fetching many hosts) cost nothing
 * while they succeed.  The price: C connections of one source that are
 * all between admit and fail can each get one guess past the budget;
 * max_conn_per_ip bounds C, and each connection's failures come one at
 * a time after growing delays.  (Charging at admit and refunding on
 * success was tried first: it refused right passwords whenever more
 * logins than the budget were waiting for a hashing place at once.)
 *
 * Every function takes the time as a parameter (seconds on a clock every
 * process shares, e.g. time(NULL)), so tests need no sleeps, and may be
 * called by any process that inherited the mapping, concurrently (one
 * robust process-shared mutex; the critical sections are a few dozen
 * instructions).
 *
 * Error convention: throttle_create returns NULL with errno; the rest
 * cannot fail (enum throttle_verdict is a decision, not an error) and
 * take t == NULL as "no table".
 */
#ifndef SDPS_THROTTLE_H
#define SDPS_THROTTLE_H

#include <stdint.h>

struct throttle;

/* The budgets, taken per call so a reload can change them. */
struct throttle_limits {
	unsigned source_budget;	/* failures per window per source; 0 = off */
	unsigned host_budget;	/* failures per window per host; 0 = off */
	unsigned window_s;	/* > 0 */
};

enum throttle_verdict {
	THROTTLE_ALLOW,		/* go ahead with the check */
	THROTTLE_SOURCE,	/* the source is over its budget */
	THROTTLE_HOST		/* the host is over its budget and this
				 * source has failed recently */
};

/* What the table holds at one time; for status and tests. */
struct throttle_stats {
	unsigned entries;		/* not yet drained */
	unsigned blocked_sources;	/* the next check would be refused */
	unsigned blocked_hosts;		/* over budget */
};

/*
 * Master, before fork: map a table of at least entries entries (rounded
 * up to whole sets) with a fresh random key.  Calls sodium_init().
 * NULL with errno on failure (EINVAL for 0 entries).
 */
struct throttle *throttle_create(unsigned entries);

/* Unmap the table after wiping its key.  NULL is ignored. */
void	throttle_destroy(struct throttle *t);

/*
 * Before checking a password of host from source (the peer string the
 * worker shows: "192.0.2.1", "[2001:db8::1]", "unix").  *recent gets the
 * source's failures not yet drained before this call (for the delay).
 *
 * The source budget refuses every check from an over-budget source, a
 * right password too: that is what stops the guessing.  The host budget
 * refuses only sources that have failed themselves within the window, so
 * a flood against one host does not lock out its customer logging in
 * from an address that has not failed.  t == NULL: always THROTTLE_ALLOW
 * and *recent = 0.
 */
enum throttle_verdict throttle_admit(struct throttle *t,
	    const struct throttle_limits *lim, const char *source,
	    const char *host, uint64_t now_s, unsigned *recent);

/* Charge one failure of a password check to source and host (a new
 * entry when they have none).  t == NULL: no-op. */
void	throttle_fail(struct throttle *t, const struct throttle_limits *lim,
	    const char *source, const char *host, uint64_t now_s);
/*
 * The failure delay after recent earlier failures: base_ms doubled per
 * failure, at most cap_ms (and never less than base_ms).
 */
unsigned throttle_delay_ms(unsigned base_ms, unsigned recent, unsigned cap_ms);

/*
 * A keyed 64-bit id of a source (after the same /64 reduction), never 0;
 * for the fair hashing queue.  t == NULL uses a fixed key.
 */
uint64_t throttle_source_id(const struct throttle *t, const char *source);

/*
 * RFC 2449 LOGIN-DELAY, per host: seconds host must still wait before it
 * may log in again, given min_s between logins (0: it may now), and
 * throttle_login_done records a login at now_s (lim: the budgets in
 * force, so the record evicts only drained entries when it can).  A
 * host's last login lives in the same table, evicted before any failure
 * record that has not drained.
 * t == NULL or min_s == 0: 0 / no-op.
 */
unsigned throttle_login_wait(struct throttle *t, const char *host,
	    uint64_t now_s, unsigned min_s);
void	throttle_login_done(struct throttle *t,
	    const struct throttle_limits *lim, const char *host,
	    uint64_t now_s);

void	throttle_stats(struct throttle *t, const struct throttle_limits *lim,
	    uint64_t now_s, struct throttle_stats *st);

/* The number of entries the table can hold. */
unsigned throttle_capacity(const struct throttle *t);

#endif
