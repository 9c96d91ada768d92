/*
 * test_crash: a child stores messages until it is SIGKILLed at a random
 * moment; every message it acknowledged (store_put returned STORE_OK)
 * must survive byte-exact, and fsck must leave the punt consistent.
 */

#include <sys/types.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/wire.h"

#define ROUNDS		60
#define MAX_DELAY_US	80000
#define MAP		(256ULL << 20)
#define HOST		"crash.example.net"

struct ack {
	uint64_t	 id;
	uint32_t	 seed;
	uint32_t	 pad;
};

static uint32_t
xorshift(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* The raw message for seed: 1..20 KB of lines, some starting with '.'. */
static char *
make_text(uint32_t seed, size_t *len)
{
	static const char alpha[] = ".abcdefghijklmnopqrstuvwxyz0123456789 ";
	uint32_t	 s = seed | 1;
	size_t		 want, off, line, i;
	char		*t;

	want = 1024 + xorshift(&s) % (19 * 1024 + 1);
	if ((t = malloc(want + 128)) == NULL)
		return NULL;
	off = (size_t)snprintf(t, 64, "Subject: crash %08x\n\n", seed);
	while (off < want) {
		line = 1 + xorshift(&s) % 78;
		for (i = 0; i < line && off < want; i++)
			t[off++] = alpha[xorshift(&s) % (sizeof(alpha) - 1)];
		t[off++] = '\n';
	}
	*len = off;
	return t;
}

static int
to_wire(uint32_t seed, struct wire *w)
{
	size_t	 len;
	char	*t;
	int	 ok;

	if ((t = make_text(seed, &len)) == NULL)
		return -1;
	wire_init(w, 0);
	ok = wire_feed(w, t, len) == WIRE_OK && wire_finish(w) == WIRE_OK;
	free(t);
	return ok ? 0 : -1;
}

static void __attribute__((noreturn))
child(const char *punt, int fd, uint32_t rseed)
{
	static const char *const rcpts[2] = { "alice", "bob" };
	struct store_envelope env = { HOST, "s@example.org", rcpts, 2 };
	struct store_opts o = { MAP, 600 };
	struct store	*st;
	struct wire	 w;
	struct ack	 a;
	char		 err[256];

	if ((st = store_open(punt, "crash", &o, err, sizeof(err))) == NULL)
		_exit(2);
	memset(&a, 0, sizeof(a));
	for (;;) {
		a.seed = xorshift(&rseed);
		if (to_wire(a.seed, &w) == -1)
			_exit(3);
		if (store_put(st, &env, w.buf, w.len, w.body_octets, &a.id,
		    err, sizeof(err)) != STORE_OK)
			_exit(4);
		wire_free(&w);
		/* Acknowledge only after STORE_OK, as the MTA would see it. */
		if (write(fd, &a, sizeof(a)) != sizeof(a))
			_exit(5);
	}
}

static void
check_acked(const char *punt, const struct ack *acks, size_t nacks)
{
	struct store_opts	 o = { MAP, 600 };
	struct store_entry	*e;
	struct store_msg	 m;
	struct store		*st;
	struct wire		 w;
	char			 err[256], *buf;
	size_t			 i, j, n, len;
	ssize_t			 r;
	int			 fd, bad = 0;

	assert_non_null(st = store_open(punt, "crash", &o, err, sizeof(err)));
	assert_int_equal(store_list(st, HOST, NULL, &e, &n, NULL), 0);
	assert_true(n >= nacks);
	for (i = 0, j = 0; i < nacks; i++) {
		/* Both lists are in id order. */
		while (j < n && e[j].id < acks[i].id)
			j++;
		if (j == n || e[j].id != acks[i].id) {
			print_error("acked id %llu not listed\n",
			    (unsigned long long)acks[i].id);
			bad++;
			continue;
		}
		assert_int_equal(to_wire(acks[i].seed, &w), 0);
		assert_int_equal(store_msg_open(st, acks[i].id, &fd, &m),
		    STORE_OK);
		assert_non_null(buf = malloc(w.len + 1));
		len = 0;
		while ((r = read(fd, buf + len, w.len + 1 - len)) > 0)
			len += (size_t)r;
		close(fd);
		if (len != w.len || memcmp(buf, w.buf, len) != 0 ||
		    m.stored_octets != w.len || e[j].octets != w.body_octets +
		    strlen("Return-Path: <s@example.org>\r\n")) {
			print_error("acked id %llu differs\n",
			    (unsigned long long)acks[i].id);
			bad++;
		}
		free(buf);
		store_msg_free(&m);
		wire_free(&w);
	}
	free(e);
	store_close(st);
	assert_int_equal(bad, 0);
}

static void
add_ack(struct ack **acks, size_t *nacks, size_t *cap, const struct ack *a)
{
	if (*nacks == *cap) {
		*cap = *cap ? *cap * 2 : 256;
		assert_non_null(*acks = realloc(*acks, *cap * sizeof(**acks)));
	}
	(*acks)[(*nacks)++] = *a;
}

static void
test_kill_loop(void **state)
{
	struct store_opts	 o = { MAP, 600 };
	struct store_fsck	 k;
	struct store		*st;
	struct ack		*acks = NULL, a;
	char			 dir[] = "/tmp/test_crash.XXXXXX";
	char			 punt[64], err[256], cmd[128];
	size_t			 nacks = 0, cap = 0;
	uint32_t		 rseed;
	pid_t			 pid;
	int			 p[2], round, status, killed = 0;

	(void)state;
	rseed = (uint32_t)time(NULL) ^ (uint32_t)getpid();
	print_message("seed %u\n", rseed);
	srandom(rseed);
	assert_non_null(mkdtemp(dir));
	snprintf(punt, sizeof(punt), "%s/punt", dir);
	assert_int_equal(store_create(punt, "crash", MAP, err, sizeof(err)),
	    0);
	for (round = 0; round < ROUNDS; round++) {
		assert_int_equal(pipe(p), 0);
		if ((pid = fork()) == 0) {
			close(p[0]);
			child(punt, p[1], (uint32_t)random() | 1);
		}
		assert_true(pid > 0);
		close(p[1]);
		/*
		 * Every other round waits for a first ack, so kills also land
		 * in a busy store loop however slow the machine (valgrind).
		 */
		if (round % 2 == 0 &&
		    read(p[0], &a, sizeof(a)) == (ssize_t)sizeof(a))
			add_ack(&acks, &nacks, &cap, &a);
		usleep((useconds_t)(random() % (MAX_DELAY_US + 1)));
		kill(pid, SIGKILL);
		/* The pipe ends when the child is gone; take every ack. */
		while (read(p[0], &a, sizeof(a)) == (ssize_t)sizeof(a))
			add_ack(&acks, &nacks, &cap, &a);
		close(p[0]);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* A child that exited by itself failed to store. */
		if (WIFEXITED(status))
			fail_msg("child exited with %d", WEXITSTATUS(status));
		killed++;
	}
	print_message("%d kills, %zu acknowledged messages\n", killed, nacks);
	assert_true(nacks >= ROUNDS / 2);
	check_acked(punt, acks, nacks);

	assert_non_null(st = store_open(punt, "crash", &o, err, sizeof(err)));
	assert_int_equal(store_fsck(st, true, &k, NULL, NULL), 0);
	print_message("fsck: %llu msgs, %llu orphans, %llu tmp, %llu "
	    "repaired\n", (unsigned long long)k.msgs_checked,
	    (unsigned long long)k.orphan_files,
	    (unsigned long long)k.tmp_files, (unsigned long long)k.repaired);
	assert_int_equal(k.missing_files, 0);
	assert_int_equal(k.size_mismatches, 0);
	assert_int_equal(k.bad_records, 0);
	assert_int_equal(store_fsck(st, false, &k, NULL, NULL), 0);
	store_close(st);
	/* Repair removed only junk: every acknowledged message is intact. */
	check_acked(punt, acks, nacks);

	free(acks);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill_loop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
