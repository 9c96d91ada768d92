/* test_lock: maildrop lock conflicts and takeover from a dead owner. */

#include <sys/mman.h>
#include <sys/wait.h>

#include <ftw.h>
#include <sched.h>
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

static int	 nentries;
static int	 nbad;		/* entries that are not punt shard files */

static int
check_entry(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
	const char	*name = path + ftw->base;
	size_t		 len = strlen(name);

	(void)sb;
	if (ftw->level == 0)
		return 0;
	nentries++;
	/* Only files "p1.XX" / "p2.XX", XX two hex digits, one level down. */
	if (flag != FTW_F || ftw->level != 1 || len != 5 ||
	    (strncmp(name, "p1.", 3) != 0 && strncmp(name, "p2.", 3) != 0) ||
	    strspn(name + 3, "0123456789abcdef") != 2)
		nbad++;
	return 0;
}

/*
 * Issue 8 finding 7: logins as made-up users must not leave a file (or a
 * directory) per name behind.  Only the punts' fixed shard files (at most
 * 64 each) may be there, however many maildrops were locked.
 */
static void
test_no_files_left(void **state)
{
	char		 rd[sizeof(run_dir) + 16], locks[sizeof(rd) + 8];
	char		 user[32], host[64];
	struct lock	 a, b;
	int		 i, round, after[2];

	(void)state;
	snprintf(rd, sizeof(rd), "%s/nofiles", run_dir);
	snprintf(locks, sizeof(locks), "%s/locks", rd);
	for (round = 0; round < 2; round++) {
		for (i = 0; i < 500; i++) {
			snprintf(user, sizeof(user), "made-up-%d-%d", round,
			    i);
			assert_int_equal(lock_take(rd, "p1",
			    "fred.example.net", user, &a), LOCK_OK);
			/* A refused taker leaves nothing either. */
			assert_int_equal(lock_take(rd, "p1",
			    "fred.example.net", user, &b), LOCK_BUSY);
			lock_release(&a);
		}
		for (i = 0; i < 100; i++) {
			snprintf(host, sizeof(host), "h%d-%d.example.net",
			    round, i);
			assert_int_equal(lock_take(rd, "p1", host, NULL, &a),
			    LOCK_OK);
			lock_release(&a);
			assert_int_equal(lock_take(rd, "p2", host, "alice",
			    &a), LOCK_OK);
			lock_release(&a);
		}
		nentries = nbad = 0;
		assert_int_equal(nftw(locks, check_entry, 16, FTW_PHYS), 0);
		assert_int_equal(nbad, 0);
		after[round] = nentries;
	}
	print_message("lock files after 700 logins: %d, after 1400: %d\n",
	    after[0], after[1]);
	assert_true(after[0] <= 2 * 64);
	/* Twice the logins, no more files. */
	assert_true(after[1] <= 2 * 64);
}

/* Shared between the racers: who holds what right now. */
struct board {
	volatile int	 host;		/* host sessions holding */
	volatile int	 users;		/* user sessions holding */
	volatile int	 user[2];	/* per user */
	volatile int	 violations;
	volatile int	 taken;
};

#define RACERS		4
#define RACE_ROUNDS	3000

static void __attribute__((noreturn))
racer(struct board *b, unsigned seed)
{
	static const char *const users[2] = { "alice", "bob" };
	struct lock	 lk;
	unsigned	 s = seed * 2654435761u + 1;
	int		 i, k, u, h, us, uu;

	for (i = 0; i < RACE_ROUNDS; i++) {
		s ^= s << 13;
		s ^= s >> 17;
		s ^= s << 5;
		k = (int)(s % 3);	/* 0 host, 1 alice, 2 bob */
		u = k - 1;
		if (lock_take(run_dir, "race", "fred.example.net",
		    k == 0 ? NULL : users[u], &lk) != LOCK_OK)
			continue;
		__atomic_add_fetch(&b->taken, 1, __ATOMIC_SEQ_CST);
		if (k == 0) {
			h = __atomic_add_fetch(&b->host, 1, __ATOMIC_SEQ_CST);
			us = __atomic_load_n(&b->users, __ATOMIC_SEQ_CST);
			if (h != 1 || us != 0)
				__atomic_add_fetch(&b->violations, 1,
				    __ATOMIC_SEQ_CST);
		} else {
			us = __atomic_add_fetch(&b->users, 1, __ATOMIC_SEQ_CST);
			uu = __atomic_add_fetch(&b->user[u], 1,
			    __ATOMIC_SEQ_CST);
			h = __atomic_load_n(&b->host, __ATOMIC_SEQ_CST);
			if (uu != 1 || h != 0)
				__atomic_add_fetch(&b->violations, 1,
				    __ATOMIC_SEQ_CST);
		}
		/* Hold it a little so the others collide with it. */
		for (us = 0; us < (int)(s % 4); us++)
			sched_yield();
		if (k == 0)
			__atomic_sub_fetch(&b->host, 1, __ATOMIC_SEQ_CST);
		else {
			__atomic_sub_fetch(&b->user[u], 1, __ATOMIC_SEQ_CST);
			__atomic_sub_fetch(&b->users, 1, __ATOMIC_SEQ_CST);
		}
		lock_release(&lk);
	}
	_exit(0);
}

/*
 * Several processes take and release the same maildrop's locks in a
 * bounded loop: host excludes everything, a user excludes the host and
 * itself, never violated.  (A counter only changes while its lock is
 * held, so any overlap the locks allowed shows in the counts.)
 */
static void
test_race(void **state)
{
	struct board	*b;
	pid_t		 pid[RACERS];
	int		 i, status;

	(void)state;
	b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(b != MAP_FAILED);
	memset((void *)b, 0, sizeof(*b));
	for (i = 0; i < RACERS; i++) {
		if ((pid[i] = fork()) == 0)
			racer(b, (unsigned)i + 1);
		assert_true(pid[i] > 0);
	}
	for (i = 0; i < RACERS; i++) {
		assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	print_message("race: %d locks taken, %d violations\n", b->taken,
	    b->violations);
	assert_int_equal(b->violations, 0);
	assert_true(b->taken > 0);
	munmap(b, sizeof(*b));
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
		cmocka_unit_test(test_no_files_left),
		cmocka_unit_test(test_race),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
