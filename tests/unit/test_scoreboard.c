/*
 * test_scoreboard: the shared scoreboard across real processes: readers
 * never see a torn slot, the accept mutex survives a SIGKILLed holder,
 * sb_auth_enter never lets more than max hash at once, a writer killed
 * inside a write stalls no reader and the master's reset repairs its
 * slot, commands are stored printable, planted names are not followed.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/scoreboard.h"

#define NWRITERS	3
#define WRITES		200000	/* per writer */
#define READS		400000	/* by the parent, over all slots */
#define AUTH_PROCS	6
#define AUTH_ROUNDS	300
#define AUTH_MAX	2

struct fixture {
	char			 dir[64];
	struct config		*cf;
	struct scoreboard	 sb;
};

static int
setup(void **state)
{
	struct fixture	*fx;

	fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	fx->cf = calloc(1, sizeof(*fx->cf));
	assert_non_null(fx->cf);
	config_defaults(fx->cf);
	fx->cf->npunts = 2;
	strcpy(fx->cf->punts[0].name, "finchley");
	strcpy(fx->cf->punts[1].name, "docklands");
	strcpy(fx->dir, "/tmp/test_scoreboard.XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	assert_int_equal(sb_create(fx->dir, 8, fx->cf, &fx->sb), 0);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture	*fx = *state;
	char		 path[128];

	sb_close(&fx->sb);
	snprintf(path, sizeof(path), "%s/scoreboard", fx->dir);
	unlink(path);
	rmdir(fx->dir);
	free(fx->cf);
	free(fx);
	return 0;
}

/*
 * Every worker field of the slot derived from one counter c, so any mix
 * of two writes is detectable.
 */
static void
pattern_write(struct sb_slot *s, uint64_t c)
{
	size_t	 len, i;

	s->state = (uint32_t)(c % 8);
	s->session_id = c;
	len = (size_t)(c % (SB_PEER_MAX - 1));
	for (i = 0; i < len; i++)
		s->peer[i] = (char)('a' + (c + i) % 26);
	s->peer[len] = '\0';
	len = (size_t)((c * 7) % (SB_MAILDROP_MAX - 1));
	memset(s->maildrop, (int)('A' + c % 26), len);
	s->maildrop[len] = '\0';
	snprintf(s->command, sizeof(s->command), "%llu",
	    (unsigned long long)(c % 1000000));
	s->started_us = c * 3;
	s->login_us = c * 5;
	s->last_us = c * 11;
	s->sessions_served = c;
	s->retr = c + 1;
	s->top = c + 2;
	s->dele = c + 3;
	s->octets_out = c * 13;
	s->punts_used = (uint32_t)(c ^ 0x5a5a5a5a);
}

/* 1 if s is one whole pattern_write(c) for c = s->session_id. */
static int
pattern_ok(const struct sb_slot *s)
{
	struct sb_slot	 want;
	uint64_t	 c = s->session_id;

	memset(&want, 0, sizeof(want));
	pattern_write(&want, c);
	return s->state == want.state &&
	    strcmp(s->peer, want.peer) == 0 &&
	    strcmp(s->maildrop, want.maildrop) == 0 &&
	    strcmp(s->command, want.command) == 0 &&
	    s->started_us == want.started_us &&
	    s->login_us == want.login_us && s->last_us == want.last_us &&
	    s->sessions_served == want.sessions_served &&
	    s->retr == want.retr && s->top == want.top &&
	    s->dele == want.dele && s->octets_out == want.octets_out &&
	    s->punts_used == want.punts_used;
}

/* The checker itself must catch a torn slot, or the test proves nothing. */
static void
test_pattern_detects_tearing(void **state)
{
	struct sb_slot	 a, b;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	pattern_write(&a, 41);
	assert_true(pattern_ok(&a));
	pattern_write(&b, 42);
	memcpy(a.maildrop, b.maildrop, sizeof(a.maildrop));
	assert_false(pattern_ok(&a));
	pattern_write(&a, 41);
	a.octets_out = b.octets_out;
	assert_false(pattern_ok(&a));
}

static void
test_no_torn_slot(void **state)
{
	struct fixture	*fx = *state;
	struct sb_slot	 copy;
	pid_t		 pids[NWRITERS];
	uint64_t	 seen_max[NWRITERS] = { 0 };
	unsigned	 i, w, torn = 0, changed = 0;
	uint64_t	 c, last[NWRITERS] = { 0 };
	int		 st;

	for (w = 0; w < NWRITERS; w++) {
		pattern_write(&fx->sb.slots[w], 0);
		pids[w] = fork();
		assert_true(pids[w] != -1);
		if (pids[w] == 0) {
			for (c = 1; c <= WRITES; c++) {
				sb_slot_write_begin(&fx->sb.slots[w]);
				pattern_write(&fx->sb.slots[w], c);
				sb_slot_write_end(&fx->sb.slots[w]);
			}
			_exit(0);
		}
	}
	for (i = 0; i < READS; i++) {
		w = i % NWRITERS;
		/* Busy (a writer descheduled mid-write past the bound)
		 * is an honest answer, not a torn copy. */
		if (sb_slot_read(&fx->sb.slots[w], &copy) == -1)
			continue;
		if (!pattern_ok(&copy)) {
			if (torn++ < 5)
				print_error("torn slot %u at read %u: id %llu\n",
				    w, i, (unsigned long long)copy.session_id);
		}
		/* A writer's counter only goes up. */
		assert_true(copy.session_id >= last[w]);
		if (copy.session_id != last[w])
			changed++;
		last[w] = copy.session_id;
		if (copy.session_id > seen_max[w])
			seen_max[w] = copy.session_id;
	}
	for (w = 0; w < NWRITERS; w++) {
		assert_int_equal(waitpid(pids[w], &st, 0), pids[w]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		assert_int_equal(sb_slot_read(&fx->sb.slots[w], &copy), 0);
		assert_int_equal(copy.session_id, WRITES);
		assert_true(pattern_ok(&copy));
		assert_int_equal(copy.seq % 2, 0);
	}
	assert_int_equal(torn, 0);
	/* The reads overlapped the writes at least sometimes; if not, the
	 * test did not test anything (not a timing assertion: a reader
	 * that saw no change at all would be broken). */
	assert_true(changed > 0);
}

static void
test_accept_mutex_dead_holder(void **state)
{
	struct fixture	*fx = *state;
	int		 p[2], st;
	char		 c;
	pid_t		 pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		close(p[0]);
		if (sb_accept_lock(&fx->sb) != 0)
			_exit(1);
		(void)!write(p[1], "L", 1);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	/* The holder dies with the mutex held. */
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	/* Recovered (EOWNERDEAD -> consistent), then usable as normal. */
	assert_int_equal(sb_accept_lock(&fx->sb), 0);
	sb_accept_unlock(&fx->sb);
	assert_int_equal(sb_accept_lock(&fx->sb), 0);
	sb_accept_unlock(&fx->sb);
}

static void
test_auth_enter_max(void **state)
{
	struct fixture	*fx = *state;
	struct scoreboard *sb = &fx->sb;

	assert_int_equal(sb_auth_enter(sb, &sb->slots[0], AUTH_MAX, 0, 1), 0);
	assert_int_equal(sb_auth_enter(sb, &sb->slots[1], AUTH_MAX, 0, 2), 0);
	/* Full: a third waits, then gives up. */
	assert_int_equal(sb_auth_enter(sb, &sb->slots[2], AUTH_MAX, 30, 3), -1);
	assert_int_equal(sb->slots[2].hashing, 0);
	sb_auth_leave(sb, &sb->slots[0]);
	assert_int_equal(sb_auth_enter(sb, &sb->slots[2], AUTH_MAX, 0, 3), 0);
	sb_auth_leave(sb, &sb->slots[1]);
	sb_auth_leave(sb, &sb->slots[2]);
	assert_int_equal(sb->slots[0].hashing + sb->slots[1].hashing +
	    sb->slots[2].hashing, 0);
}

/* Many processes entering at once: never more than AUTH_MAX inside. */
static void
test_auth_enter_concurrent(void **state)
{
	struct fixture	*fx = *state;
	_Atomic unsigned *shared;	/* [0] inside now, [1] most seen */
	pid_t		 pids[AUTH_PROCS];
	unsigned	 i, r, now, most;
	int		 st;

	shared = mmap(NULL, 2 * sizeof(*shared), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(shared != MAP_FAILED);
	atomic_store(&shared[0], 0);
	atomic_store(&shared[1], 0);
	for (i = 0; i < AUTH_PROCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] != -1);
		if (pids[i] != 0)
			continue;
		for (r = 0; r < AUTH_ROUNDS; r++) {
			if (sb_auth_enter(&fx->sb, &fx->sb.slots[i], AUTH_MAX,
			    100000, 1 + i % 2) != 0)
				_exit(2);
			now = atomic_fetch_add(&shared[0], 1) + 1;
			most = atomic_load(&shared[1]);
			while (now > most &&
			    !atomic_compare_exchange_weak(&shared[1], &most,
			    now))
				;
			sched_yield();
			atomic_fetch_sub(&shared[0], 1);
			sb_auth_leave(&fx->sb, &fx->sb.slots[i]);
		}
		_exit(0);
	}
	for (i = 0; i < AUTH_PROCS; i++) {
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	assert_true(atomic_load(&shared[1]) >= 1);
	assert_true(atomic_load(&shared[1]) <= AUTH_MAX);
	munmap(shared, 2 * sizeof(*shared));
}

/*
 * The fair queue (issue 8): with one place held by source A, three more
 * connections from A and then one from B wait.  A has its turn in hand,
 * so B, arriving last, goes first and A's waiters follow in order (the
 * old polling gate gave 1 2 3 4 here: B behind every A).
 * Order of entry is recorded; nothing depends on timing: each waiter is
 * known to be queued before the next is started.
 */
static void
test_auth_fair(void **state)
{
	struct fixture	*fx = *state;
	struct scoreboard *sb = &fx->sb;
	static const uint64_t src[] = { 0, 0xa, 0xa, 0xa, 0xb };
	_Atomic unsigned *log;	/* [0] count, [1..] slot numbers */
	pid_t		 pids[5];
	unsigned	 i, spins;
	int		 st;

	log = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(log != MAP_FAILED);
	assert_int_equal(sb_auth_enter(sb, &sb->slots[0], 1, 0, 0xa), 0);
	for (i = 1; i <= 4; i++) {
		pids[i] = fork();
		assert_true(pids[i] != -1);
		if (pids[i] == 0) {
			if (sb_auth_enter(sb, &sb->slots[i], 1, 600000,
			    src[i]) != 0)
				_exit(2);
			log[1 + atomic_fetch_add(&log[0], 1)] = i;
			sb_auth_leave(sb, &sb->slots[i]);
			_exit(0);
		}
		/* Queued (an observable state), within a generous bound. */
		for (spins = 0; spins < 100000 &&
		    ((volatile struct sb_slot *)&sb->slots[i])->auth_wait_pid
		    == 0; spins++)
			usleep(100);
		assert_true(sb->slots[i].auth_wait_pid != 0);
	}
	sb_auth_leave(sb, &sb->slots[0]);
	for (i = 1; i <= 4; i++) {
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_int_equal(atomic_load(&log[0]), 4);
	print_message("order: %u %u %u %u\n", log[1], log[2], log[3],
	    log[4]);
	assert_int_equal(log[1], 4);
	assert_int_equal(log[2], 1);
	assert_int_equal(log[3], 2);
	assert_int_equal(log[4], 3);
	munmap(log, 4096);
}

/* A waiter that dies is skipped, not waited for. */
static void
test_auth_dead_waiter(void **state)
{
	struct fixture	*fx = *state;
	struct scoreboard *sb = &fx->sb;
	pid_t		 pid;
	int		 st;

	/* A dead process's pid, as a waiter first in line would show. */
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	sb->slots[3].auth_wait_pid = pid;
	sb->slots[3].auth_tag = 0;
	sb->slots[3].auth_seq = 0;
	sb->slots[3].auth_source = 0xd;
	assert_int_equal(sb_auth_enter(sb, &sb->slots[0], 1, 0, 0xa), 0);
	assert_int_equal(sb->slots[3].auth_wait_pid, 0);
	sb_auth_leave(sb, &sb->slots[0]);
}

static void
test_open_ro(void **state)
{
	struct fixture	*fx = *state;
	struct scoreboard ro;
	struct sb_slot	 copy;
	char		 path[128];
	struct stat	 st;
	char		 empty[] = "/tmp/test_scoreboard_empty.XXXXXX";

	snprintf(path, sizeof(path), "%s/scoreboard", fx->dir);
	assert_int_equal(stat(path, &st), 0);
	/* Not world-readable: peers and maildrops (issue 8, finding 10). */
	assert_int_equal(st.st_mode & 0777, 0640);

	sb_slot_write_begin(&fx->sb.slots[3]);
	strcpy(fx->sb.slots[3].maildrop, "fred.example.net");
	fx->sb.slots[3].state = SB_TRANS;
	sb_slot_write_end(&fx->sb.slots[3]);

	assert_int_equal(sb_open_ro(fx->dir, &ro), 0);
	assert_true(ro.readonly);
	assert_int_equal(ro.hdr->magic, SB_MAGIC);
	assert_int_equal(ro.hdr->nslots, 8);
	assert_int_equal(ro.hdr->npunts, 2);
	assert_string_equal(ro.hdr->punts[1].name, "docklands");
	assert_int_equal(ro.hdr->master_pid, getpid());
	assert_int_equal(sb_slot_read(&ro.slots[3], &copy), 0);
	assert_string_equal(copy.maildrop, "fred.example.net");
	assert_string_equal(sb_state_name(copy.state), "trans");
	sb_close(&ro);

	assert_non_null(mkdtemp(empty));
	assert_int_equal(sb_open_ro(empty, &ro), -1);
	assert_int_equal(errno, ENOENT);
	rmdir(empty);
}

/* A writer SIGKILLed between write_begin and write_end (finding 3). */
static void
test_dead_writer_odd_seq(void **state)
{
	struct fixture	*fx = *state;
	struct sb_slot	*sl = &fx->sb.slots[2];
	struct scoreboard ro;
	struct sb_slot	 copy;
	uint32_t	 seq;
	pid_t		 pid;
	int		 st;

	sb_slot_write_begin(sl);
	sl->state = SB_TRANS;
	strcpy(sl->maildrop, "old.example.net");
	sb_slot_write_end(sl);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		sb_slot_write_begin(sl);
		strcpy(sl->peer, "half");
		raise(SIGKILL);
		_exit(1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	seq = atomic_load(&sl->seq);
	assert_int_equal(seq % 2, 1);

	/* Readers give up (bounded) and say busy; pid still shown. */
	atomic_store(&sl->pid, getpid());
	memset(&copy, 0x55, sizeof(copy));
	assert_int_equal(sb_slot_read(sl, &copy), -1);
	assert_int_equal(copy.pid, getpid());
	assert_int_equal(copy.state, SB_FREE);
	assert_string_equal(copy.peer, "");
	assert_int_equal(sb_open_ro(fx->dir, &ro), 0);
	assert_int_equal(sb_slot_read(&ro.slots[2], &copy), -1);

	/* The master's view after the reap: the last contents, torn. */
	assert_true(sb_slot_peek(sl, &copy));
	assert_string_equal(copy.peer, "half");
	assert_string_equal(copy.maildrop, "old.example.net");

	/* The master's reset: no wait, seq even, every string wiped. */
	sb_slot_reset(sl, SB_STARTING);
	assert_int_equal(atomic_load(&sl->seq), seq + 1);
	assert_int_equal(sb_slot_read(&ro.slots[2], &copy), 0);
	assert_int_equal(copy.state, SB_STARTING);
	assert_int_equal(copy.session_id, 0);
	assert_false(sb_slot_peek(sl, &copy));
	sb_close(&ro);
	{
		static const char zero[SB_MAILDROP_MAX];

		assert_memory_equal(sl->peer, zero, sizeof(sl->peer));
		assert_memory_equal(sl->maildrop, zero, sizeof(sl->maildrop));
		assert_memory_equal(sl->command, zero, sizeof(sl->command));
	}
	/* From an even seq, a reset is a whole write: +2. */
	seq = atomic_load(&sl->seq);
	sb_slot_reset(sl, SB_FREE);
	assert_int_equal(atomic_load(&sl->seq), seq + 2);
	/* The worker that comes next writes as usual. */
	sb_slot_write_begin(sl);
	sl->state = SB_IDLE;
	sb_slot_write_end(sl);
	assert_int_equal(sb_slot_read(sl, &copy), 0);
	assert_int_equal(copy.state, SB_IDLE);
}

/* sb_slot_command keeps printable ASCII only, and no stale tail. */
static void
test_command_sanitized(void **state)
{
	struct fixture	*fx = *state;
	struct sb_slot	*sl = &fx->sb.slots[1];
	struct sb_slot	 copy;
	size_t		 i;

	sb_slot_command(sl, "\x1b[31mEVIL");
	assert_int_equal(sb_slot_read(sl, &copy), 0);
	assert_string_equal(copy.command, "?[31mEVIL");
	sb_slot_command(sl, "A\r\n\t\x7f\xc2\x9b" "B");
	assert_int_equal(sb_slot_read(sl, &copy), 0);
	assert_string_equal(copy.command, "A??????B");
	sb_slot_command(sl, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
	assert_int_equal(sb_slot_read(sl, &copy), 0);
	assert_int_equal(strlen(copy.command), SB_CMD_MAX - 1);
	sb_slot_command(sl, "NOOP");
	for (i = strlen("NOOP"); i < sizeof(sl->command); i++)
		assert_int_equal(sl->command[i], 0);
	sb_slot_command(NULL, "x");

	/* The session-end wipe clears whole arrays. */
	sb_slot_write_begin(sl);
	memset(sl->peer, 'p', sizeof(sl->peer) - 1);
	memset(sl->maildrop, 'm', sizeof(sl->maildrop) - 1);
	sb_slot_wipe_strings(sl);
	sb_slot_write_end(sl);
	for (i = 0; i < sizeof(sl->peer); i++)
		assert_int_equal(sl->peer[i], 0);
	for (i = 0; i < sizeof(sl->maildrop); i++)
		assert_int_equal(sl->maildrop[i], 0);
	for (i = 0; i < sizeof(sl->command); i++)
		assert_int_equal(sl->command[i], 0);
}

/*
 * A name planted in the run directory (finding 6): a symlink or a hard
 * link called "scoreboard" to someone else's file.  sb_create replaces
 * the name and leaves the file alone (it used to open it O_TRUNC).
 */
static void
test_create_over_planted_names(void **state)
{
	struct fixture	*fx = *state;
	struct scoreboard sb2;
	char		 target[128], path[128], buf[16];
	struct stat	 st;
	int		 fd, how;

	snprintf(target, sizeof(target), "%s/precious", fx->dir);
	snprintf(path, sizeof(path), "%s/scoreboard", fx->dir);
	for (how = 0; how < 2; how++) {
		fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(fd != -1);
		assert_int_equal(write(fd, "keep me", 7), 7);
		close(fd);
		assert_int_equal(unlink(path), 0);
		if (how == 0)
			assert_int_equal(symlink(target, path), 0);
		else
			assert_int_equal(link(target, path), 0);
		assert_int_equal(sb_create(fx->dir, 4, fx->cf, &sb2), 0);
		assert_int_equal(stat(target, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		assert_int_equal(st.st_size, 7);
		assert_int_equal(st.st_nlink, 1);
		fd = open(target, O_RDONLY);
		assert_int_equal(read(fd, buf, sizeof(buf)), 7);
		close(fd);
		assert_memory_equal(buf, "keep me", 7);
		assert_int_equal(lstat(path, &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0640);
		sb_close(&sb2);
		unlink(target);
	}
	/* sdps-ctl does not follow a symlink either. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(sb_open_ro(fx->dir, &sb2), -1);
	assert_int_equal(errno, ELOOP);
	/* teardown unlinks the name and sb_close unmaps the first map */
}

static void
test_session_ids_unique(void **state)
{
	struct fixture	*fx = *state;
	uint64_t	 a, b;

	a = sb_session_id(&fx->sb);
	b = sb_session_id(&fx->sb);
	assert_true(a != 0);
	assert_true(b != 0);
	assert_true(a != b);
	assert_string_equal(sb_state_name(999), "unknown");
	assert_string_equal(sb_state_name(SB_IDLE), "idle");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pattern_detects_tearing),
		cmocka_unit_test_setup_teardown(test_no_torn_slot, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_accept_mutex_dead_holder,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_enter_max, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_fair, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_dead_waiter, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_enter_concurrent,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_ro, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_dead_writer_odd_seq,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_sanitized,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_over_planted_names,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_ids_unique,
		    setup, teardown),
	};

	/* The robust-mutex recovery logs a warning; keep it off the TAP. */
	log_init("test_scoreboard", true, 0, false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
