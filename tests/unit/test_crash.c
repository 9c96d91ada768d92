/*
 * test_crash: the store killed at every crash point (SDPS_FAULT, see
 * include/sdps/fault.h), on purpose and on every run, never by the clock.
 *
 * store_put: a child stores messages until SDPS_FAULT=POINT:N kills it
 * at the N-th hit of POINT, so the kill lands inside message N.  Every
 * message it acknowledged (STORE_OK) must be there byte-exact, the killed
 * one present exactly when the point is after the commit, and fsck must
 * find only the leftovers that point can leave (a tmp file, an orphan),
 * repair them and then be clean.  The other multi-step operations
 * (store_remove, claim, release, done) are killed the same way.
 *
 * Every store call that can reach a crash point runs in a child: a
 * process reads SDPS_FAULT once, and a child keeps its parent's reading.
 */

#include <sys/types.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/wire.h"

#define MAP		(256ULL << 20)
#define HOST		"crash.example.net"
#define SENDER		"s@example.org"
#define KILLS		4	/* kills per store_put point */
#define MAX_N		6	/* the kill lands in message 1..MAX_N */

/* Crash points of store_put, in the order one store reaches them. */
static const struct {
	const char	*name;
	bool		 stored;	/* the killed message is kept */
	int		 tmp, orphan;	/* what fsck finds after the kill */
} put_points[] = {
	{ "store.put.tmp_written",	false, 1, 0 },
	{ "store.put.fsynced",		false, 1, 0 },
	{ "store.put.renamed",		false, 0, 1 },
	{ "store.put.dir_fsynced",	false, 0, 1 },
	{ "store.put.before_commit",	false, 0, 1 },
	{ "store.put.committed",	true, 0, 0 },
};
#define NPUT	(sizeof(put_points) / sizeof(put_points[0]))

static char	 dir[] = "/tmp/test_crash.XXXXXX";
static char	 punt[64];

/* What a store_put child says on its pipe. */
struct note {
	uint32_t	 kind;		/* NOTE_TRY before store_put, NOTE_ACK */
	uint32_t	 seed;
	uint64_t	 id;
};
#define NOTE_TRY	1
#define NOTE_ACK	2

struct ack {
	uint64_t	 id;
	uint32_t	 seed;
};

/* What the parent expects to find in the punt at the end. */
static struct ack	*acks;
static size_t		 nacks, capacks;
static uint32_t		 killed_seeds[NPUT * KILLS];
static bool		 killed_kept[NPUT * KILLS];
static size_t		 nkilled;

static uint32_t
xorshift(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* The raw message for seed: 1..60 KB of lines, some starting with '.'. */
static char *
make_text(uint32_t seed, size_t *len)
{
	static const char alpha[] = ".abcdefghijklmnopqrstuvwxyz0123456789 ";
	uint32_t	 s = seed | 1;
	size_t		 want, off, line, i;
	char		*t;

	want = 1024 + xorshift(&s) % (59 * 1024 + 1);
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

static struct store *
open_punt(void)
{
	struct store_opts o = { MAP, 600 };
	char		 err[256];
	struct store	*st;

	if ((st = store_open(punt, "crash", &o, err, sizeof(err))) == NULL)
		print_error("store_open: %s\n", err);
	return st;
}

/* In a child: arm SDPS_FAULT (spec NULL: none) before any store call. */
static struct store *
child_start(const char *spec)
{
	struct store	*st;

	if (spec != NULL)
		setenv("SDPS_FAULT", spec, 1);
	else
		unsetenv("SDPS_FAULT");
	if ((st = open_punt()) == NULL)
		_exit(2);
	return st;
}

static void
note_write(int fd, uint32_t kind, uint32_t seed, uint64_t id)
{
	struct note	 n;

	memset(&n, 0, sizeof(n));
	n.kind = kind;
	n.seed = seed;
	n.id = id;
	if (write(fd, &n, sizeof(n)) != sizeof(n))
		_exit(5);
}

/* Store count messages from rseed on; say each before and after. */
static void __attribute__((noreturn))
put_child(const char *spec, int fd, uint32_t rseed, int count)
{
	static const char *const rcpts[2] = { "alice", "bob" };
	struct store_envelope env = { HOST, SENDER, rcpts, 2 };
	struct store	*st = child_start(spec);
	struct wire	 w;
	char		 err[256];
	uint64_t	 id;
	uint32_t	 seed;
	int		 i;

	for (i = 0; i < count; i++) {
		seed = xorshift(&rseed);
		if (to_wire(seed, &w) == -1)
			_exit(3);
		note_write(fd, NOTE_TRY, seed, 0);
		if (store_put(st, &env, w.buf, w.len, w.body_octets, &id,
		    err, sizeof(err)) != STORE_OK)
			_exit(4);
		wire_free(&w);
		/* Acknowledge only after STORE_OK, as the MTA would see it. */
		note_write(fd, NOTE_ACK, seed, id);
	}
	store_close(st);
	_exit(0);
}

static void
add_ack(uint64_t id, uint32_t seed)
{
	if (nacks == capacks) {
		capacks = capacks ? capacks * 2 : 256;
		assert_non_null(acks = realloc(acks,
		    capacks * sizeof(*acks)));
	}
	acks[nacks].id = id;
	acks[nacks].seed = seed;
	nacks++;
}

/*
 * Run a put child; returns the child's wait status.  *tries and *nacked
 * count its notes; *last is the seed of its last NOTE_TRY.
 */
static int
run_put(const char *spec, uint32_t rseed, int count, int *tries,
    int *nacked, uint32_t *last)
{
	struct note	 n;
	pid_t		 pid;
	int		 p[2], status;

	*tries = *nacked = 0;
	*last = 0;
	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		close(p[0]);
		put_child(spec, p[1], rseed, count);
	}
	assert_true(pid > 0);
	close(p[1]);
	/* The pipe ends when the child is gone: every note is read. */
	while (read(p[0], &n, sizeof(n)) == (ssize_t)sizeof(n)) {
		if (n.kind == NOTE_TRY) {
			(*tries)++;
			*last = n.seed;
		} else {
			(*nacked)++;
			add_ack(n.id, n.seed);
		}
	}
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static bool
killed(int status)
{
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

/* Read a whole file by descriptor (closed here). */
static char *
slurp(int fd, size_t *len)
{
	char	*buf = NULL;
	size_t	 cap = 0;
	ssize_t	 r;

	*len = 0;
	for (;;) {
		if (*len == cap) {
			cap = cap ? cap * 2 : 65536;
			assert_non_null(buf = realloc(buf, cap));
		}
		if ((r = read(fd, buf + *len, cap - *len)) <= 0)
			break;
		*len += (size_t)r;
	}
	close(fd);
	return buf;
}

/*
 * Every listed message must be byte-exact for the seed its Subject names
 * (file, stored size, client size); every acknowledged message listed
 * under its id; every killed one present exactly when expected.
 */
static void
check_punt(void)
{
	struct store_entry	*e;
	struct store_msg	 m;
	struct store		*st;
	struct wire		 w;
	char			*buf;
	size_t			 i, j, n, len, kept = 0;
	unsigned		 seed;
	int			 fd, bad = 0;

	assert_non_null(st = open_punt());
	assert_int_equal(store_list(st, HOST, NULL, &e, &n, NULL), 0);
	for (i = 0; i < n; i++) {
		assert_int_equal(store_msg_open(st, e[i].id, &fd, &m),
		    STORE_OK);
		buf = slurp(fd, &len);
		if (len < 24 || sscanf(buf, "Subject: crash %8x", &seed) !=
		    1) {
			print_error("id %llu: no seed\n",
			    (unsigned long long)e[i].id);
			bad++;
		} else {
			assert_int_equal(to_wire(seed, &w), 0);
			if (len != w.len || memcmp(buf, w.buf, len) != 0 ||
			    m.stored_octets != w.len ||
			    e[i].octets != w.body_octets +
			    strlen("Return-Path: <" SENDER ">\r\n")) {
				print_error("id %llu differs\n",
				    (unsigned long long)e[i].id);
				bad++;
			}
			wire_free(&w);
			for (j = 0; j < nkilled; j++)
				if (killed_seeds[j] == seed) {
					if (!killed_kept[j]) {
						print_error("killed %08x "
						    "kept\n", seed);
						bad++;
					}
					kept++;
				}
		}
		free(buf);
		store_msg_free(&m);
	}
	for (i = 0, j = 0; i < nacks; i++) {
		/* Both lists are in id order. */
		while (j < n && e[j].id < acks[i].id)
			j++;
		if (j == n || e[j].id != acks[i].id) {
			print_error("acked id %llu not listed\n",
			    (unsigned long long)acks[i].id);
			bad++;
		}
	}
	for (i = 0, j = 0; i < nkilled; i++)
		j += killed_kept[i];
	if (kept != j) {
		print_error("%zu killed messages kept, want %zu\n", kept, j);
		bad++;
	}
	if (n != nacks + j) {
		print_error("%zu listed, want %zu acked + %zu\n", n, nacks, j);
		bad++;
	}
	free(e);
	store_close(st);
	assert_int_equal(bad, 0);
}

/*
 * fsck must see exactly the leftovers a kill at that point can leave,
 * never a lost or damaged record; repair them; then find nothing.
 */
static void
check_fsck(const char *what, int tmp, int orphan)
{
	struct store_fsck	 k;
	struct store		*st;

	assert_non_null(st = open_punt());
	assert_int_not_equal(store_fsck(st, false, &k, NULL, NULL), -1);
	if (k.tmp_files != (uint64_t)tmp ||
	    k.orphan_files != (uint64_t)orphan || k.missing_files != 0 ||
	    k.size_mismatches != 0 || k.bad_records != 0)
		fail_msg("%s: fsck found tmp %llu orphan %llu missing %llu "
		    "size %llu bad %llu, want tmp %d orphan %d", what,
		    (unsigned long long)k.tmp_files,
		    (unsigned long long)k.orphan_files,
		    (unsigned long long)k.missing_files,
		    (unsigned long long)k.size_mismatches,
		    (unsigned long long)k.bad_records, tmp, orphan);
	assert_int_equal(store_fsck(st, true, &k, NULL, NULL), 0);
	assert_int_equal(k.repaired, (uint64_t)(tmp + orphan));
	assert_int_equal(store_fsck(st, false, &k, NULL, NULL), 0);
	assert_int_equal(k.repaired, 0);
	store_close(st);
}

static void
test_put_points(void **state)
{
	char		 spec[96], what[128];
	size_t		 pi;
	uint32_t	 last;
	int		 k, n, status, tries, nacked, hits[NPUT] = { 0 };

	(void)state;
	/* Some messages stored before any kill. */
	status = run_put(NULL, 0x5eed, 5, &tries, &nacked, &last);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(nacked, 5);
	for (pi = 0; pi < NPUT; pi++) {
		for (k = 0; k < KILLS; k++) {
			/* N runs over 1..MAX_N: the kill moves over messages. */
			n = 1 + (int)((pi + 3 * (size_t)k) % MAX_N);
			snprintf(spec, sizeof(spec), "%s:%d",
			    put_points[pi].name, n);
			snprintf(what, sizeof(what), "SDPS_FAULT=%s", spec);
			/* A distinct stream per run: seeds name messages. */
			status = run_put(spec, 0x9e3779b9u *
			    (uint32_t)(pi * KILLS + (size_t)k + 1),
			    MAX_N + 2, &tries, &nacked, &last);
			if (!killed(status))
				fail_msg("%s: not killed (status %d)", what,
				    status);
			/* Killed inside message n, never before or after. */
			if (tries != n || nacked != n - 1)
				fail_msg("%s: %d tries, %d acks", what, tries,
				    nacked);
			hits[pi]++;
			killed_seeds[nkilled] = last;
			killed_kept[nkilled] = put_points[pi].stored;
			nkilled++;
			check_fsck(what, put_points[pi].tmp,
			    put_points[pi].orphan);
		}
	}
	/* The punt still works after all that. */
	status = run_put(NULL, 0xaf7e7, 3, &tries, &nacked, &last);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	check_punt();
	for (pi = 0; pi < NPUT; pi++) {
		print_message("%-28s killed %d times\n", put_points[pi].name,
		    hits[pi]);
		assert_int_equal(hits[pi], KILLS);
	}
	print_message("%zu acknowledged messages, %zu kills\n", nacks,
	    nkilled);
	check_fsck("at the end", 0, 0);
}

/* ---- the other multi-step operations ---- */

enum act { A_NONE, A_QUIT_HOST, A_QUIT_ALICE, A_CLAIM, A_RELEASE, A_DONE };

/* A message's state afterwards. */
enum want { W_LISTED, W_CLAIMED, W_CLAIMED_PD, W_ALICE_GONE, W_GONE };

struct ocase {
	const char	*name;
	enum act	 setup1, setup2;	/* run without a fault */
	enum act	 act;		/* run with SDPS_FAULT=point:n */
	const char	*point;
	int		 n;
	enum want	 want[3];	/* the three messages afterwards */
	int		 orphans;	/* files fsck must find without records */
};

static const struct ocase ocases[] = {
	{ "QUIT killed before its commit", A_NONE, A_NONE, A_QUIT_HOST,
	    "store.remove.before_commit", 1,
	    { W_LISTED, W_LISTED, W_LISTED }, 0 },
	{ "QUIT killed after its commit, before the unlinks", A_NONE, A_NONE,
	    A_QUIT_HOST, "store.remove.committed", 1,
	    { W_GONE, W_GONE, W_GONE }, 3 },
	{ "QUIT killed after the first unlink", A_NONE, A_NONE, A_QUIT_HOST,
	    "store.remove.unlinked", 1, { W_GONE, W_GONE, W_GONE }, 2 },
	{ "QUIT killed after the second unlink", A_NONE, A_NONE, A_QUIT_HOST,
	    "store.remove.unlinked", 2, { W_GONE, W_GONE, W_GONE }, 1 },
	{ "QUIT killed after the last unlink", A_NONE, A_NONE, A_QUIT_HOST,
	    "store.remove.unlinked", 3, { W_GONE, W_GONE, W_GONE }, 0 },
	{ "user QUIT killed before its commit", A_NONE, A_NONE, A_QUIT_ALICE,
	    "store.remove.before_commit", 1,
	    { W_LISTED, W_LISTED, W_LISTED }, 0 },
	{ "user QUIT killed after its commit", A_NONE, A_NONE, A_QUIT_ALICE,
	    "store.remove.committed", 1,
	    { W_ALICE_GONE, W_ALICE_GONE, W_ALICE_GONE }, 0 },
	{ "QUIT of claimed messages killed after its commit", A_CLAIM,
	    A_NONE, A_QUIT_HOST, "store.remove.committed", 1,
	    { W_CLAIMED_PD, W_CLAIMED_PD, W_CLAIMED_PD }, 0 },
	{ "claim killed before its commit", A_NONE, A_NONE, A_CLAIM,
	    "store.marker.before_commit", 1,
	    { W_LISTED, W_LISTED, W_LISTED }, 0 },
	{ "claim killed after its commit", A_NONE, A_NONE, A_CLAIM,
	    "store.marker.committed", 1,
	    { W_CLAIMED, W_LISTED, W_LISTED }, 0 },
	{ "second claim killed after its commit", A_NONE, A_NONE, A_CLAIM,
	    "store.marker.committed", 2,
	    { W_CLAIMED, W_CLAIMED, W_LISTED }, 0 },
	{ "release killed before its commit", A_CLAIM, A_NONE, A_RELEASE,
	    "store.marker.before_commit", 1,
	    { W_CLAIMED, W_CLAIMED, W_CLAIMED }, 0 },
	{ "release killed after its commit", A_CLAIM, A_NONE, A_RELEASE,
	    "store.marker.committed", 1,
	    { W_LISTED, W_CLAIMED, W_CLAIMED }, 0 },
	{ "done killed before its commit", A_CLAIM, A_NONE, A_DONE,
	    "store.del.before_commit", 1,
	    { W_CLAIMED, W_CLAIMED, W_CLAIMED }, 0 },
	{ "done killed after its commit, before the unlink", A_CLAIM, A_NONE,
	    A_DONE, "store.del.committed", 1,
	    { W_GONE, W_CLAIMED, W_CLAIMED }, 1 },
	{ "done killed after the second commit", A_CLAIM, A_NONE, A_DONE,
	    "store.del.committed", 2, { W_GONE, W_GONE, W_CLAIMED }, 1 },
	{ "release of POP_DELETED killed after its commit", A_CLAIM,
	    A_QUIT_HOST, A_RELEASE, "store.del.committed", 1,
	    { W_GONE, W_CLAIMED_PD, W_CLAIMED_PD }, 1 },
};

/* In a child: act on each id in turn (a QUIT takes all in one call). */
static void __attribute__((noreturn))
act_child(const char *spec, enum act a, const uint64_t *ids, size_t n)
{
	struct store	*st = child_start(spec);
	enum store_res	 r = STORE_OK, rr;
	size_t		 i;

	switch (a) {
	case A_NONE:
		break;
	case A_QUIT_HOST:
		r = store_remove(st, ids, n, NULL);
		break;
	case A_QUIT_ALICE:
		r = store_remove(st, ids, n, "alice");
		break;
	case A_CLAIM:
	case A_RELEASE:
	case A_DONE:
		/* Every id is tried; the first failure is the result. */
		for (i = 0; i < n; i++) {
			rr = a == A_CLAIM ? store_claim(st, ids[i], "smtp-1") :
			    a == A_RELEASE ? store_release(st, ids[i]) :
			    store_done(st, ids[i]);
			if (r == STORE_OK)
				r = rr;
		}
		break;
	}
	store_close(st);
	_exit(r == STORE_OK ? 0 : 10 + (int)r);
}

static int
run_act(const char *spec, enum act a, const uint64_t *ids, size_t n)
{
	pid_t	 pid;
	int	 status;

	if ((pid = fork()) == 0)
		act_child(spec, a, ids, n);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static bool
listed_for(struct store *st, const char *user, uint64_t id)
{
	struct store_entry	*e;
	size_t			 n, i;
	bool			 found = false;

	assert_int_equal(store_list(st, HOST, user, &e, &n, NULL), 0);
	for (i = 0; i < n; i++)
		found = found || e[i].id == id;
	free(e);
	return found;
}

static bool
in_state(struct store *st, uint64_t id, enum want w)
{
	struct store_msg	 m;
	enum store_res		 g;
	uint32_t		 fl;
	bool			 ok;

	g = store_msg_get(st, id, &m);
	if (w == W_GONE)
		return g == STORE_GONE;
	if (g != STORE_OK)
		return false;
	fl = m.flags & (STORE_F_IN_DELIVERY | STORE_F_POP_DELETED);
	switch (w) {
	case W_LISTED:
		ok = fl == 0 && m.nrcpts == 2 && listed_for(st, NULL, id);
		break;
	case W_CLAIMED:
		ok = fl == STORE_F_IN_DELIVERY && listed_for(st, NULL, id);
		break;
	case W_CLAIMED_PD:
		ok = fl == (STORE_F_IN_DELIVERY | STORE_F_POP_DELETED) &&
		    !listed_for(st, NULL, id);
		break;
	case W_ALICE_GONE:
		ok = fl == 0 && m.nrcpts == 1 &&
		    strcmp(m.rcpts[0], "bob") == 0 &&
		    !listed_for(st, "alice", id) && listed_for(st, "bob", id);
		break;
	default:
		ok = false;
	}
	store_msg_free(&m);
	return ok;
}

static void
test_other_points(void **state)
{
	const struct ocase	*c;
	struct store		*st;
	char			 spec[96];
	uint64_t		 ids[3];
	uint32_t		 last;
	size_t			 i, j, first;
	int			 status, tries, nacked, bad = 0;

	(void)state;
	for (i = 0; i < sizeof(ocases) / sizeof(ocases[0]); i++) {
		c = &ocases[i];
		first = nacks;
		status = run_put(NULL, 0x85ebca6bu * (uint32_t)(i + 1), 3,
		    &tries, &nacked, &last);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		for (j = 0; j < 3; j++)
			ids[j] = acks[first + j].id;
		/* These messages are not the put test's business. */
		nacks = first;
		if (c->setup1 != A_NONE)
			assert_int_equal(run_act(NULL, c->setup1, ids, 3), 0);
		if (c->setup2 != A_NONE)
			assert_int_equal(run_act(NULL, c->setup2, ids, 3), 0);
		snprintf(spec, sizeof(spec), "%s:%d", c->point, c->n);
		if (!killed(status = run_act(spec, c->act, ids, 3))) {
			print_error("%s: not killed (status %d)\n", c->name,
			    status);
			bad++;
		}
		assert_non_null(st = open_punt());
		for (j = 0; j < 3; j++)
			if (!in_state(st, ids[j], c->want[j])) {
				print_error("%s: message %zu in the wrong "
				    "state\n", c->name, j);
				bad++;
			}
		store_close(st);
		check_fsck(c->name, 0, c->orphans);
		/* Repair dropped only files without records. */
		assert_non_null(st = open_punt());
		for (j = 0; j < 3; j++)
			if (!in_state(st, ids[j], c->want[j]))
				bad++;
		store_close(st);
		/* Clear the punt for the next case. */
		(void)run_act(NULL, A_RELEASE, ids, 3);
		(void)run_act(NULL, A_QUIT_HOST, ids, 3);
	}
	assert_int_equal(bad, 0);
	check_fsck("at the end", 0, 0);
}

static int
setup(void **state)
{
	char	 err[256];

	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(punt, sizeof(punt), "%s/punt", dir);
	if (store_create(punt, "crash", MAP, err, sizeof(err)) == -1) {
		print_error("store_create: %s\n", err);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	char	 cmd[128];

	(void)state;
	free(acks);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_points),
		cmocka_unit_test(test_other_points),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
