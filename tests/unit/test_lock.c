/* test_lock: maildrop lock conflicts and takeover from a dead owner. */

#include <sys/wait.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/lock.h"

static char	 run_dir[] = "/tmp/test_lock.XXXXXX";

struct pair {
	const char	*name;
	const char	*host1, *user1;	/* held */
	const char	*host2, *user2;	/* then tried */
	enum lock_res	 want;
};

static const struct pair pairs[] = {
	{ "host vs host", "fred.example.net", NULL,
	    "fred.example.net", NULL, LOCK_BUSY },
	{ "user vs host", "fred.example.net", "alice",
	    "fred.example.net", NULL, LOCK_BUSY },
	{ "host vs user", "fred.example.net", NULL,
	    "fred.example.net", "alice", LOCK_BUSY },
	{ "alice vs bob", "fred.example.net", "alice",
	    "fred.example.net", "bob", LOCK_OK },
	{ "same user", "fred.example.net", "alice",
	    "fred.example.net", "alice", LOCK_BUSY },
	{ "other host", "fred.example.net", NULL,
	    "jim.example.net", NULL, LOCK_OK },
	{ "same user, other host", "fred.example.net", "alice",
	    "jim.example.net", "alice", LOCK_OK },
};

/*
 * flock locks belong to open file descriptions, so two struct locks in
 * one process conflict exactly as two processes would.
 */
static void
test_pairs(void **state)
{
	struct lock	 a, b;
	enum lock_res	 r;
	size_t		 i;
	int		 bad = 0;

	(void)state;
	for (i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		assert_int_equal(lock_take(run_dir, "p1", pairs[i].host1,
		    pairs[i].user1, &a), LOCK_OK);
		r = lock_take(run_dir, "p1", pairs[i].host2, pairs[i].user2,
		    &b);
		if (r != pairs[i].want) {
			print_error("%s: got %d, want %d\n", pairs[i].name,
			    (int)r, (int)pairs[i].want);
			bad++;
		}
		if (r == LOCK_BUSY) {
			assert_int_equal(b.host_fd, -1);
			assert_int_equal(b.user_fd, -1);
		}
		lock_release(&b);
		lock_release(&a);
		/* Once released, the second one always gets it. */
		assert_int_equal(lock_take(run_dir, "p1", pairs[i].host2,
		    pairs[i].user2, &b), LOCK_OK);
		lock_release(&b);
	}
	assert_int_equal(bad, 0);
}

static void
test_other_punt(void **state)
{
	struct lock	 a, b;

	(void)state;
	assert_int_equal(lock_take(run_dir, "p1", "fred.example.net", NULL,
	    &a), LOCK_OK);
	assert_int_equal(lock_take(run_dir, "p2", "fred.example.net", NULL,
	    &b), LOCK_OK);
	lock_release(&b);
	lock_release(&a);
	lock_release(&a);	/* twice is harmless */
}

static void
test_bad_names(void **state)
{
	struct lock	 a;

	(void)state;
	assert_int_equal(lock_take(run_dir, "p1", "../etc", NULL, &a),
	    LOCK_ERR);
	assert_int_equal(lock_take(run_dir, "p1", "Fred.Example.Net", NULL,
	    &a), LOCK_ERR);
	assert_int_equal(lock_take(run_dir, "..", "fred.example.net", NULL,
	    &a), LOCK_ERR);
	assert_int_equal(lock_take(run_dir, "a/b", "fred.example.net", NULL,
	    &a), LOCK_ERR);
	assert_int_equal(lock_take(run_dir, "p1", "fred.example.net", "",
	    &a), LOCK_ERR);
	assert_int_equal(lock_take(run_dir, "p1", "fred.example.net", "Alice",
	    &a), LOCK_ERR);
	assert_int_equal(lock_take(run_dir, "p1", "fred.example.net", "a/b",
	    &a), LOCK_ERR);
	assert_int_equal(a.host_fd, -1);
	assert_int_equal(a.user_fd, -1);
}

/* A SIGKILLed owner's lock is taken over: the kernel dropped it. */
static void
test_dead_owner(void **state)
{
	struct lock	 a;
	pid_t		 pid;
	int		 p[2], status;
	char		 c;

	(void)state;
	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		close(p[0]);
		if (lock_take(run_dir, "p1", "fred.example.net", "alice",
		    &a) != LOCK_OK)
			_exit(1);
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	assert_true(pid > 0);
	close(p[1]);
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	assert_int_equal(lock_take(run_dir, "p1", "fred.example.net", "alice",
	    &a), LOCK_BUSY);
	assert_int_equal(lock_take(run_dir, "p1", "fred.example.net", NULL,
	    &a), LOCK_BUSY);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(lock_take(run_dir, "p1", "fred.example.net", NULL,
	    &a), LOCK_OK);
	lock_release(&a);
}

static int
setup(void **state)
{
	(void)state;
	return mkdtemp(run_dir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	char	 cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", run_dir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pairs),
		cmocka_unit_test(test_other_punt),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_dead_owner),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
