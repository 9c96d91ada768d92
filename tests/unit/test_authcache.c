/* test_authcache: hits, every kind of miss, bounds, forked writers. */
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/authcache.h"
#include "sdps/util.h"

#define NOW	1000000u
#define TTL	300u

static int
setup(void **state)
{
	struct authcache *c;

	if ((c = authcache_create(256, TTL)) == NULL)
		return -1;
	*state = c;
	return 0;
}

static int
teardown(void **state)
{
	authcache_destroy(*state);
	return 0;
}

static void
test_hit(void **state)
{
	struct authcache *c = *state;

	assert_false(authcache_check(c, "fred.example.net", "s3cret", 1, 0,
	    NOW));
	authcache_put(c, "fred.example.net", "s3cret", 1, 0, NOW);
	assert_true(authcache_check(c, "fred.example.net", "s3cret", 1, 0,
	    NOW));
	assert_true(authcache_check(c, "fred.example.net", "s3cret", 1, 0,
	    NOW + TTL - 1));
	assert_int_equal(authcache_count(c, 0, NOW), 1);
}

/* Rows: what differs from the stored (host, pw, gen, epoch, now). */
static const struct miss_row {
	const char	*why;
	const char	*host, *pw;
	uint64_t	 gen, epoch, now;
} miss_rows[] = {
	{ "generation changed",	"fred.example.net", "s3cret", 2, 0, NOW },
	{ "epoch changed (flush)", "fred.example.net", "s3cret", 1, 1, NOW },
	{ "ttl passed",		"fred.example.net", "s3cret", 1, 0,
	    NOW + TTL },
	{ "wrong password",	"fred.example.net", "s3cre", 1, 0, NOW },
	{ "password prefix",	"fred.example.net", "s3cret ", 1, 0, NOW },
	{ "empty password",	"fred.example.net", "", 1, 0, NOW },
	{ "other host",		"jim.example.net", "s3cret", 1, 0, NOW },
	/* host/password boundary must not slide */
	{ "boundary",		"fred.example.nets", "3cret", 1, 0, NOW },
};

static void
test_misses(void **state)
{
	struct authcache *c = *state;
	size_t	 i;

	authcache_put(c, "fred.example.net", "s3cret", 1, 0, NOW);
	for (i = 0; i < NITEMS(miss_rows); i++) {
		const struct miss_row *r = &miss_rows[i];

		if (authcache_check(c, r->host, r->pw, r->gen, r->epoch,
		    r->now))
			fail_msg("row %zu (%s) hit", i, r->why);
	}
	/* The original still hits: the misses changed nothing. */
	assert_true(authcache_check(c, "fred.example.net", "s3cret", 1, 0,
	    NOW));
}

/* A wrong password never hits, whatever else is in the table. */
static void
test_wrong_password_never_hits(void **state)
{
	struct authcache *c = *state;
	char	 host[64], pw[64];
	int	 i;

	for (i = 0; i < 200; i++) {
		snprintf(host, sizeof(host), "h%d.example.net", i);
		snprintf(pw, sizeof(pw), "pw%d", i);
		authcache_put(c, host, pw, 7, 0, NOW);
	}
	for (i = 0; i < 200; i++) {
		snprintf(host, sizeof(host), "h%d.example.net", i);
		snprintf(pw, sizeof(pw), "pw%d", i + 1);
		if (authcache_check(c, host, pw, 7, 0, NOW))
			fail_msg("host %d hit with another host's password", i);
	}
}

static void
test_bounded(void **state)
{
	struct authcache *c = *state;
	unsigned cap = authcache_capacity(c);
	char	 host[64];
	int	 i, hits = 0;

	assert_true(cap >= 256);
	assert_true(cap < 256 + 8);
	for (i = 0; i < 20000; i++) {
		snprintf(host, sizeof(host), "h%d.example.net", i);
		authcache_put(c, host, "pw", 1, 0, NOW);
	}
	assert_true(authcache_count(c, 0, NOW) <= cap);
	/* Full, not empty: the newest ones are there. */
	assert_true(authcache_count(c, 0, NOW) > cap / 2);
	for (i = 20000 - 64; i < 20000; i++) {
		snprintf(host, sizeof(host), "h%d.example.net", i);
		hits += authcache_check(c, host, "pw", 1, 0, NOW);
	}
	assert_true(hits > 0);
}

static void
test_create_rejects_zero(void **state)
{
	(void)state;
	assert_null(authcache_create(0, TTL));
	assert_null(authcache_create(16, 0));
	assert_false(authcache_check(NULL, "a.b", "pw", 1, 0, NOW));
	authcache_put(NULL, "a.b", "pw", 1, 0, NOW);
}

/*
 * Workers insert at the same time into a small table (so sets collide),
 * each its own hosts.  Afterwards every entry that hits must be one that
 * was put (no torn entries matching other passwords), the table stays
 * bounded, and entries put by a child are visible to the parent.
 */
static void
test_forked_writers(void **state)
{
	struct authcache *c;
	char	 host[64], pw[64];
	pid_t	 pids[4];
	int	 k, i, st, seen = 0;

	(void)state;
	assert_non_null(c = authcache_create(64, TTL));
	for (k = 0; k < 4; k++) {
		pids[k] = fork();
		assert_true(pids[k] != -1);
		if (pids[k] == 0) {
			for (i = 0; i < 5000; i++) {
				snprintf(host, sizeof(host), "w%d-%d.example",
				    k, i % 100);
				snprintf(pw, sizeof(pw), "pw-%d-%d", k,
				    i % 100);
				authcache_put(c, host, pw, 1, 0, NOW);
				(void)authcache_check(c, host, pw, 1, 0, NOW);
			}
			_exit(0);
		}
	}
	for (k = 0; k < 4; k++) {
		assert_int_equal(waitpid(pids[k], &st, 0), pids[k]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_true(authcache_count(c, 0, NOW) <= authcache_capacity(c));
	for (k = 0; k < 4; k++)
		for (i = 0; i < 100; i++) {
			snprintf(host, sizeof(host), "w%d-%d.example", k, i);
			snprintf(pw, sizeof(pw), "pw-%d-%d", k, i);
			seen += authcache_check(c, host, pw, 1, 0, NOW);
			snprintf(pw, sizeof(pw), "pw-%d-%d", (k + 1) % 4, i);
			assert_false(authcache_check(c, host, pw, 1, 0, NOW));
		}
	/* The children's entries are in the parent's view of the table. */
	assert_true(seen > 0);
	assert_true((unsigned)seen <= authcache_capacity(c));
	authcache_destroy(c);
}


int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_misses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_password_never_hits,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounded, setup, teardown),
		cmocka_unit_test(test_create_rejects_zero),
		cmocka_unit_test(test_forked_writers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
