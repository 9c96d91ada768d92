/* test_throttle: budgets, drain on an injected clock, the host rule,
 * free successes, eviction, keyed ids, delays, forked admitters. */
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

#include "sdps/throttle.h"
#include "sdps/util.h"

#define NOW	1000000u

static int
setup(void **state)
{
	struct throttle *t;

	if ((t = throttle_create(1024)) == NULL)
		return -1;
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	throttle_destroy(*state);
	return 0;
}

/* Admit, and fail if admitted: what a wrong password does. */
static enum throttle_verdict
fail_once(struct throttle *t, const struct throttle_limits *lim,
    const char *src, const char *host, uint64_t now, unsigned *recent)
{
	enum throttle_verdict	 v;
	unsigned		 r;

	v = throttle_admit(t, lim, src, host, now, recent ? recent : &r);
	if (v == THROTTLE_ALLOW)
		throttle_fail(t, lim, src, host, now);
	return v;
}

static void
test_source_budget(void **state)
{
	struct throttle_limits lim = { 3, 0, 300 };
	struct throttle	*t = *state;
	unsigned	 recent, i;

	for (i = 0; i < 3; i++) {
		assert_int_equal(fail_once(t, &lim, "192.0.2.1", "h", NOW,
		    &recent), THROTTLE_ALLOW);
		assert_int_equal(recent, i);
	}
	/* Over budget: refused, every host, and refusals charge nothing. */
	for (i = 0; i < 5; i++) {
		assert_int_equal(fail_once(t, &lim, "192.0.2.1", "other", NOW,
		    &recent), THROTTLE_SOURCE);
		assert_int_equal(recent, 3);
	}
	/* Another source is not affected. */
	assert_int_equal(fail_once(t, &lim, "192.0.2.2", "h", NOW, NULL),
	    THROTTLE_ALLOW);
}

static void
test_drain(void **state)
{
	struct throttle_limits lim = { 3, 0, 300 };
	struct throttle	*t = *state;
	unsigned	 recent, i;

	for (i = 0; i < 3; i++)
		assert_int_equal(fail_once(t, &lim, "198.51.100.7", "h", NOW,
		    NULL), THROTTLE_ALLOW);
	/* One failure drains per window/budget = 100 s. */
	assert_int_equal(fail_once(t, &lim, "198.51.100.7", "h", NOW + 99,
	    NULL), THROTTLE_SOURCE);
	assert_int_equal(fail_once(t, &lim, "198.51.100.7", "h", NOW + 100,
	    &recent), THROTTLE_ALLOW);
	assert_int_equal(recent, 2);
	assert_int_equal(fail_once(t, &lim, "198.51.100.7", "h", NOW + 101,
	    NULL), THROTTLE_SOURCE);
	/* A whole window after the last failure: the whole budget again. */
	for (i = 0; i < 3; i++) {
		assert_int_equal(fail_once(t, &lim, "198.51.100.7", "h",
		    NOW + 100 + 300, &recent), THROTTLE_ALLOW);
		assert_int_equal(recent, i);
	}
	/* A clock that goes back drains nothing and breaks nothing. */
	assert_int_equal(fail_once(t, &lim, "198.51.100.7", "h", NOW,
	    NULL), THROTTLE_SOURCE);
}

static void
test_success_costs_nothing(void **state)
{
	struct throttle_limits lim = { 2, 2, 600 };
	struct throttle	*t = *state;
	unsigned	 recent, i;

	/* Checks in flight at once, all right: however many, none is
	 * refused and none costs budget (the regression: charging at admit
	 * refused the third of three parallel right passwords). */
	for (i = 0; i < 100; i++) {
		assert_int_equal(throttle_admit(t, &lim, "203.0.113.5",
		    "fred.example.net", NOW, &recent), THROTTLE_ALLOW);
		assert_int_equal(recent, 0);
	}
	assert_int_equal(fail_once(t, &lim, "203.0.113.5", "x", NOW, NULL),
	    THROTTLE_ALLOW);
	assert_int_equal(fail_once(t, &lim, "203.0.113.5", "y", NOW, NULL),
	    THROTTLE_ALLOW);
	assert_int_equal(fail_once(t, &lim, "203.0.113.5", "z", NOW, NULL),
	    THROTTLE_SOURCE);
}

static void
test_host_budget(void **state)
{
	struct throttle_limits lim = { 10, 2, 600 };
	struct throttle	*t = *state;

	/* Two sources fail once each against fred: fred is over budget. */
	assert_int_equal(fail_once(t, &lim, "192.0.2.10", "fred", NOW, NULL),
	    THROTTLE_ALLOW);
	assert_int_equal(fail_once(t, &lim, "192.0.2.11", "fred", NOW, NULL),
	    THROTTLE_ALLOW);
	/* A source that failed is refused for fred, not for others. */
	assert_int_equal(fail_once(t, &lim, "192.0.2.10", "fred", NOW, NULL),
	    THROTTLE_HOST);
	assert_int_equal(fail_once(t, &lim, "192.0.2.10", "barney", NOW,
	    NULL), THROTTLE_ALLOW);
	/* The customer's own address, clean, still gets its check. */
	assert_int_equal(throttle_admit(t, &lim, "192.0.2.99", "fred", NOW,
	    &(unsigned){ 0 }), THROTTLE_ALLOW);
	/* Drained: fred is open again to the failed source. */
	assert_int_equal(fail_once(t, &lim, "192.0.2.10", "fred", NOW + 600,
	    NULL), THROTTLE_ALLOW);
}

static void
test_off(void **state)
{
	struct throttle_limits lim = { 0, 0, 600 };
	struct throttle	*t = *state;
	unsigned	 recent, i;

	for (i = 0; i < 50; i++) {
		assert_int_equal(fail_once(t, &lim, "192.0.2.1", "h", NOW,
		    &recent), THROTTLE_ALLOW);
		assert_int_equal(recent, 0);
	}
	assert_int_equal(throttle_admit(NULL, &lim, "a", "b", NOW, &recent),
	    THROTTLE_ALLOW);
	throttle_fail(NULL, &lim, "a", "b", NOW);
}

static void
test_eviction(void **state)
{
	struct throttle_limits lim = { 1, 0, 600 };
	struct throttle_stats st;
	struct throttle	*t;
	char		 src[32];
	unsigned	 i;

	(void)state;
	/* One set of eight ways: every source shares it. */
	assert_non_null(t = throttle_create(8));
	assert_int_equal(throttle_capacity(t), 8);
	for (i = 0; i < 100; i++) {
		snprintf(src, sizeof(src), "10.0.%u.%u", i / 256, i % 256);
		assert_int_equal(fail_once(t, &lim, src, "h", NOW + i, NULL),
		    THROTTLE_ALLOW);
	}
	throttle_stats(t, &lim, NOW + 99, &st);
	assert_int_equal(st.entries, 8);
	assert_int_equal(st.blocked_sources, 8);
	/* The newest are kept, the oldest went first. */
	assert_int_equal(fail_once(t, &lim, "10.0.0.99", "h", NOW + 99,
	    NULL), THROTTLE_SOURCE);
	assert_int_equal(fail_once(t, &lim, "10.0.0.92", "h", NOW + 99,
	    NULL), THROTTLE_SOURCE);
	assert_int_equal(fail_once(t, &lim, "10.0.0.0", "h", NOW + 99,
	    NULL), THROTTLE_ALLOW);
	throttle_destroy(t);
}

static void
test_stats(void **state)
{
	struct throttle_limits lim = { 2, 3, 600 };
	struct throttle_stats st;
	struct throttle	*t = *state;

	fail_once(t, &lim, "192.0.2.1", "fred", NOW, NULL);
	fail_once(t, &lim, "192.0.2.1", "fred", NOW, NULL);
	fail_once(t, &lim, "192.0.2.2", "fred", NOW, NULL);
	throttle_stats(t, &lim, NOW, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.blocked_sources, 1);
	assert_int_equal(st.blocked_hosts, 1);
	throttle_stats(t, &lim, NOW + 600, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.blocked_sources, 0);
}

static void
test_keyed_ids(void **state)
{
	struct throttle	*t = *state, *t2;

	assert_non_null(t2 = throttle_create(64));
	/* The key is per table: the same source, different ids. */
	assert_true(throttle_source_id(t, "192.0.2.1") ==
	    throttle_source_id(t, "192.0.2.1"));
	assert_true(throttle_source_id(t, "192.0.2.1") !=
	    throttle_source_id(t2, "192.0.2.1"));
	assert_true(throttle_source_id(t, "192.0.2.1") !=
	    throttle_source_id(t, "192.0.2.2"));
	/* IPv6 per /64; IPv4-mapped per address. */
	assert_true(throttle_source_id(t, "[2001:db8::1]") ==
	    throttle_source_id(t, "[2001:db8::ffff:2]"));
	assert_true(throttle_source_id(t, "[2001:db8::1]") !=
	    throttle_source_id(t, "[2001:db8:0:1::1]"));
	assert_true(throttle_source_id(t, "[::ffff:192.0.2.1]") !=
	    throttle_source_id(t, "[::ffff:192.0.2.2]"));
	assert_true(throttle_source_id(NULL, "x") != 0);
	throttle_destroy(t2);
}

static void
test_ipv6_budget(void **state)
{
	struct throttle_limits lim = { 2, 0, 600 };
	struct throttle	*t = *state;

	/* Walking one's own /64 gives no fresh budget. */
	assert_int_equal(fail_once(t, &lim, "[2001:db8::1]", "h", NOW, NULL),
	    THROTTLE_ALLOW);
	assert_int_equal(fail_once(t, &lim, "[2001:db8::2]", "h", NOW, NULL),
	    THROTTLE_ALLOW);
	assert_int_equal(fail_once(t, &lim, "[2001:db8::3]", "h", NOW, NULL),
	    THROTTLE_SOURCE);
}

static void
test_delay(void **state)
{
	(void)state;
	assert_int_equal(throttle_delay_ms(1000, 0, 15000), 1000);
	assert_int_equal(throttle_delay_ms(1000, 1, 15000), 2000);
	assert_int_equal(throttle_delay_ms(1000, 3, 15000), 8000);
	assert_int_equal(throttle_delay_ms(1000, 4, 15000), 15000);
	assert_int_equal(throttle_delay_ms(1000, 1000000, 15000), 15000);
	assert_int_equal(throttle_delay_ms(0, 5, 15000), 0);
	assert_int_equal(throttle_delay_ms(1000, 5, 0), 1000);
}

static void
test_login_delay(void **state)
{
	struct throttle_limits lim = { 1, 1, 600 };
	struct throttle	*t = *state;

	assert_int_equal(throttle_login_wait(t, "fred", NOW, 60), 0);
	throttle_login_done(t, &lim, "fred", NOW);
	assert_int_equal(throttle_login_wait(t, "fred", NOW, 60), 60);
	assert_int_equal(throttle_login_wait(t, "fred", NOW + 59, 60), 1);
	assert_int_equal(throttle_login_wait(t, "fred", NOW + 60, 60), 0);
	assert_int_equal(throttle_login_wait(t, "barney", NOW, 60), 0);
	assert_int_equal(throttle_login_wait(t, "fred", NOW, 0), 0);
	/* Its own kind: fred's login record is not fred's failures. */
	assert_int_equal(fail_once(t, &lim, "192.0.2.1", "fred", NOW, NULL),
	    THROTTLE_ALLOW);
	assert_int_equal(throttle_login_wait(NULL, "fred", NOW, 60), 0);
	throttle_login_done(NULL, &lim, "fred", NOW);
}

/* A login record goes before a failure record that has not drained. */
static void
test_login_evicts_drained_first(void **state)
{
	struct throttle_limits lim = { 1, 0, 600 };
	struct throttle	*t;
	char		 src[32];
	unsigned	 i;

	(void)state;
	assert_non_null(t = throttle_create(8));
	for (i = 0; i < 8; i++) {
		snprintf(src, sizeof(src), "10.1.0.%u", i);
		fail_once(t, &lim, src, "h", NOW, NULL);
	}
	/* Full of live failures: the login record takes the oldest way. */
	throttle_login_done(t, &lim, "fred", NOW + 1);
	assert_int_equal(throttle_login_wait(t, "fred", NOW + 1, 60), 60);
	/* A new failure then evicts the login record, not a failure. */
	fail_once(t, &lim, "10.1.0.99", "h", NOW + 2, NULL);
	for (i = 1; i < 8; i++) {
		snprintf(src, sizeof(src), "10.1.0.%u", i);
		assert_int_equal(fail_once(t, &lim, src, "h", NOW + 2, NULL),
		    THROTTLE_SOURCE);
	}
	throttle_destroy(t);
}

/*
 * Four processes guess from one source at once: the budget gets through,
 * plus at most one guess per other process caught between its admit and
 * its fail (the documented price of charging only failures).
 */
static void
test_forked(void **state)
{
	struct throttle_limits lim = { 20, 0, 600 };
	struct throttle	*t = *state;
	unsigned	*allowed;
	pid_t		 pids[4];
	int		 i, j, st, total = 0;

	allowed = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(allowed != MAP_FAILED);
	for (i = 0; i < 4; i++) {
		if ((pids[i] = fork()) == 0) {
			for (j = 0; j < 50; j++)
				if (fail_once(t, &lim, "192.0.2.77", "h",
				    NOW, NULL) == THROTTLE_ALLOW)
					allowed[i]++;
			_exit(0);
		}
		assert_true(pids[i] > 0);
	}
	for (i = 0; i < 4; i++) {
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		total += (int)allowed[i];
	}
	assert_true(total >= 20 && total <= 20 + 3);
	munmap(allowed, 4096);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_source_budget, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_success_costs_nothing, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_host_budget, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_off, setup, teardown),
		cmocka_unit_test(test_eviction),
		cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keyed_ids, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_budget, setup,
		    teardown),
		cmocka_unit_test(test_delay),
		cmocka_unit_test_setup_teardown(test_login_delay, setup,
		    teardown),
		cmocka_unit_test(test_login_evicts_drained_first),
		cmocka_unit_test_setup_teardown(test_forked, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
