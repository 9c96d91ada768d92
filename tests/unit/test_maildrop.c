/*
 * test_maildrop: the puntset (opening, health memory, reopening) and the
 * maildrop (merge order across punts with ties, the user filter, lock
 * conflicts through the punt interface).  Ties in arrival time cannot be
 * made with the local store (it stamps the clock), so the merge test
 * uses a punt implementation of its own: the interface at work.
 */
#include <sys/stat.h>

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/config.h"
#include "sdps/maildrop.h"
#include "sdps/punt.h"
#include "sdps/puntset.h"
#include "sdps/wire.h"

#define MAP	(4ULL << 20)
#define HOST	"fred.example.net"

struct fx {
	char		 dir[64];
	struct config	 cf;
};

static int
setup(void **state)
{
	static const char *const names[] = { "alpha", "beta" };
	struct fx	*fx;
	char		 err[256], path[PATH_MAX];
	int		 i;

	if ((fx = calloc(1, sizeof(*fx))) == NULL)
		return -1;
	strcpy(fx->dir, "/tmp/test_maildrop.XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	config_defaults(&fx->cf);
	snprintf(fx->cf.run_dir, sizeof(fx->cf.run_dir), "%s/run", fx->dir);
	if (mkdir(fx->cf.run_dir, 0700) == -1)
		return -1;
	fx->cf.store_map_size = MAP;
	fx->cf.npunts = 2;
	for (i = 0; i < 2; i++) {
		/* From locals: snprintf from fx into fx trips -Wrestrict. */
		snprintf(fx->cf.punts[i].name, sizeof(fx->cf.punts[i].name),
		    "%s", names[i]);
		snprintf(path, sizeof(path), "%s/%s", fx->dir, names[i]);
		snprintf(fx->cf.punts[i].path, sizeof(fx->cf.punts[i].path),
		    "%s", path);
		if (store_create(fx->cf.punts[i].path, fx->cf.punts[i].name,
		    MAP, err, sizeof(err)) == -1) {
			fprintf(stderr, "store_create: %s\n", err);
			return -1;
		}
	}
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx	*fx = *state;
	char		 cmd[128];
	int		 rc;

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	rc = system(cmd);
	free(fx);
	return rc == 0 ? 0 : -1;
}

static void
put(struct punt *p, const char *const *rcpts, size_t nrcpts)
{
	static const char	 text[] = "Subject: t\r\n\r\nbody\r\n";
	struct store_envelope	 env = { HOST, "s@x.example", rcpts, nrcpts };
	struct wire		 w;
	uint64_t		 id;
	char			 err[256] = "";

	wire_init(&w, 0);
	assert_int_equal(wire_feed(&w, text, strlen(text)), WIRE_OK);
	assert_int_equal(wire_finish(&w), WIRE_OK);
	if (punt_put(p, &env, w.buf, w.len, w.body_octets, &id, err,
	    sizeof(err)) != STORE_OK)
		fail_msg("punt_put: %s", err);
	wire_free(&w);
}

/* ---- puntset ---- */

struct health_log {
	int	 calls, last_idx;
	bool	 last_ok;
};

static void
health_cb(void *arg, int idx, const char *name, bool ok)
{
	struct health_log	*h = arg;

	(void)name;
	h->calls++;
	h->last_idx = idx;
	h->last_ok = ok;
}

static void
test_puntset_open(void **state)
{
	struct fx		*fx = *state;
	struct puntset		*ps;
	struct health_log	 h = { 0, -1, false };
	struct punt		*p;

	assert_non_null(ps = puntset_new(&fx->cf, 0));
	puntset_on_health(ps, health_cb, &h);
	assert_int_equal(puntset_count(ps), 2);
	assert_string_equal(puntset_name(ps, 1), "beta");
	assert_null(puntset_peek(ps, 0));
	assert_non_null(p = puntset_get(ps, 0));
	assert_string_equal(punt_name(p), "alpha");
	assert_string_equal(punt_kind(p), "local");
	assert_non_null(punt_local_store(p));
	/* Opened once: the next get is the same punt. */
	assert_ptr_equal(puntset_get(ps, 0), p);
	assert_ptr_equal(puntset_peek(ps, 0), p);
	assert_int_equal(h.calls, 2);
	assert_true(h.last_ok);
	assert_null(puntset_get(ps, 2));
	assert_null(puntset_get(ps, -1));
	puntset_free(ps);
}

/* A punt that goes away is reopened, fails, and comes back. */
static void
test_puntset_health(void **state)
{
	struct fx		*fx = *state;
	struct puntset		*ps;
	struct health_log	 h = { 0, -1, true };
	char			 moved[PATH_MAX + 8];

	snprintf(moved, sizeof(moved), "%s.away", fx->cf.punts[1].path);
	assert_non_null(ps = puntset_new(&fx->cf, 0));
	puntset_on_health(ps, health_cb, &h);
	assert_non_null(puntset_get(ps, 1));
	assert_int_equal(rename(fx->cf.punts[1].path, moved), 0);
	assert_null(puntset_get(ps, 1));
	assert_int_equal(h.last_idx, 1);
	assert_false(h.last_ok);
	assert_string_not_equal(puntset_error(ps, 1), "");
	assert_null(puntset_get(ps, 1));	/* still down, retried */
	assert_int_equal(rename(moved, fx->cf.punts[1].path), 0);
	assert_non_null(puntset_get(ps, 1));
	assert_true(h.last_ok);
	assert_string_equal(puntset_error(ps, 1), "");
	puntset_free(ps);
}

/* PUNTSET_ONCE: one attempt per punt, each failure told once. */
static void
test_puntset_once(void **state)
{
	struct fx	*fx = *state;
	struct puntset	*ps;
	char		 moved[PATH_MAX + 8], why[512] = "";

	snprintf(moved, sizeof(moved), "%s.away", fx->cf.punts[0].path);
	assert_int_equal(rename(fx->cf.punts[0].path, moved), 0);
	assert_non_null(ps = puntset_new(&fx->cf, PUNTSET_ONCE));
	puntset_why(ps, why, sizeof(why));
	assert_null(puntset_get(ps, 0));
	assert_int_equal(rename(moved, fx->cf.punts[0].path), 0);
	assert_null(puntset_get(ps, 0));
	assert_non_null(strstr(why, "punt alpha: "));
	assert_null(strstr(why, "; "));
	assert_non_null(puntset_get(ps, 1));
	puntset_free(ps);
}

/* ---- maildrop over a punt implementation of the test's own ---- */

struct fake {
	const struct store_entry *e;
	size_t			  n;
	int			  locks;
	const char		 *arena;	/* envelopes, or NULL */
	size_t			  arenalen;
};

static void
f_close(void *impl)
{
	(void)impl;
}

static bool
f_health(void *impl)
{
	(void)impl;
	return true;
}

static enum store_res
f_lock(void *impl, const char *host, const char *user, struct punt_lock *lk)
{
	struct fake	*f = impl;

	(void)host;
	(void)user;
	f->locks++;
	lk->impl = f;
	return STORE_OK;
}

static void
f_unlock(void *impl, struct punt_lock *lk)
{
	struct fake	*f = impl;

	assert_ptr_equal(lk->impl, f);
	f->locks--;
}

static enum store_res
f_list(void *impl, const char *host, const char *user,
    struct store_entry **out, size_t *n, char **env)
{
	struct fake	*f = impl;

	(void)host;
	(void)user;
	if ((*out = calloc(f->n + 1, sizeof(**out))) == NULL)
		return STORE_TEMPFAIL;
	memcpy(*out, f->e, f->n * sizeof(**out));
	*n = f->n;
	if (env != NULL && f->arena != NULL) {
		if ((*env = malloc(f->arenalen)) == NULL) {
			free(*out);
			return STORE_TEMPFAIL;
		}
		memcpy(*env, f->arena, f->arenalen);
	} else if (env != NULL)
		*env = NULL;
	return STORE_OK;
}

static const struct punt_ops fake_ops = {
	.kind = "fake",
	.close = f_close,
	.health = f_health,
	.lock = f_lock,
	.unlock = f_unlock,
	.list = f_list,
};

/* Ties in arrival: config order of the punts, then id. */
static void
test_merge_order(void **state)
{
	static const struct store_entry a[] = {
		{ 1, 100, 10, 0, 0 }, { 2, 200, 10, 0, 0 },
		{ 3, 200, 10, 0, 0 },
	};
	static const struct store_entry b[] = {
		{ 2, 200, 10, 0, 0 }, { 1, 200, 10, 0, 0 },
		{ 7, 50, 10, 0, 0 },
	};
	static const struct { int punt; uint64_t id; } want[] = {
		{ 1, 7 }, { 0, 1 }, { 0, 2 }, { 0, 3 }, { 1, 1 }, { 1, 2 },
	};
	struct fx		*fx = *state;
	struct fake		 fa = { a, 3, 0, NULL, 0 };
	struct fake		 fb = { b, 3, 0, NULL, 0 };
	struct puntset		*ps;
	struct maildrop		*md;
	const struct maildrop_msg *m;
	size_t			 i;

	assert_non_null(ps = puntset_new(&fx->cf, 0));
	assert_int_equal(puntset_adopt(ps, 0,
	    punt_new(&fake_ops, &fa, "alpha")), 0);
	assert_int_equal(puntset_adopt(ps, 1,
	    punt_new(&fake_ops, &fb, "beta")), 0);
	assert_int_equal(maildrop_open(ps, HOST, NULL,
	    MAILDROP_LOCK | MAILDROP_ENV, NULL, NULL, &md), STORE_OK);
	assert_int_equal(fa.locks, 1);
	assert_int_equal(fb.locks, 1);
	assert_int_equal(maildrop_count(md), NITEMS(want));
	for (i = 0; i < NITEMS(want); i++) {
		m = maildrop_msg(md, i);
		assert_int_equal(maildrop_punt_cfi(md, m->punt),
		    want[i].punt);
		assert_int_equal(m->id, want[i].id);
		/* No arena: no envelope, and no recipient. */
		assert_string_equal(maildrop_sender(md, m), "");
		assert_null(maildrop_rcpt_next(md, m, NULL));
	}
	assert_null(maildrop_msg(md, NITEMS(want)));
	maildrop_close(md);
	assert_int_equal(fa.locks, 0);
	assert_int_equal(fb.locks, 0);
	/* The rule itself, as spool ls uses it. */
	assert_true(maildrop_order(1, 1, 9, 2, 0, 1) < 0);
	assert_true(maildrop_order(2, 0, 9, 2, 1, 1) < 0);
	assert_true(maildrop_order(2, 1, 1, 2, 1, 2) < 0);
	assert_int_equal(maildrop_order(2, 1, 2, 2, 1, 2), 0);
	puntset_free(ps);
}

/*
 * The user view of an envelope is the maildrop's rule, whatever the punt
 * sends: a punt may hand over every recipient (the local store trims
 * them already; a remote punt need not).
 */
static void
test_user_filter_env(void **state)
{
	static const char arena[] = "s@x.example\0ALICE\0bob\0\0";
	static const struct store_entry e[] = { { 1, 100, 10, 0, 0 } };
	struct fx		*fx = *state;
	struct fake		 f = { e, 1, 0, arena, sizeof(arena) };
	struct puntset		*ps;
	struct maildrop		*md;
	const struct maildrop_msg *m;
	const char		*r;

	fx->cf.npunts = 1;
	assert_non_null(ps = puntset_new(&fx->cf, 0));
	assert_int_equal(puntset_adopt(ps, 0,
	    punt_new(&fake_ops, &f, "alpha")), 0);
	assert_int_equal(maildrop_open(ps, HOST, "alice", MAILDROP_ENV, NULL,
	    NULL, &md), STORE_OK);
	assert_non_null(m = maildrop_msg(md, 0));
	assert_string_equal(maildrop_sender(md, m), "s@x.example");
	assert_non_null(r = maildrop_rcpt_next(md, m, NULL));
	assert_string_equal(r, "ALICE");
	assert_null(maildrop_rcpt_next(md, m, r));
	maildrop_close(md);
	assert_int_equal(maildrop_open(ps, HOST, "bob", MAILDROP_ENV, NULL,
	    NULL, &md), STORE_OK);
	m = maildrop_msg(md, 0);
	assert_non_null(r = maildrop_rcpt_next(md, m, NULL));
	assert_string_equal(r, "bob");
	assert_null(maildrop_rcpt_next(md, m, r));
	maildrop_close(md);
	puntset_free(ps);
}

/* ---- maildrop over the local punts ---- */

static const char *const ALICE[] = { "alice" };
static const char *const BOB[] = { "bob" };
static const char *const BOTH[] = { "alice", "bob" };

static void
test_user_filter(void **state)
{
	struct fx		*fx = *state;
	struct puntset		*ps;
	struct maildrop		*md;
	const struct maildrop_msg *m;
	const char		*r;
	size_t			 i, both = 0;

	assert_non_null(ps = puntset_new(&fx->cf, 0));
	put(puntset_get(ps, 0), ALICE, 1);
	put(puntset_get(ps, 1), BOB, 1);
	put(puntset_get(ps, 1), BOTH, 2);

	assert_int_equal(maildrop_open(ps, HOST, NULL, MAILDROP_ENV, NULL,
	    NULL, &md), STORE_OK);
	assert_int_equal(maildrop_count(md), 3);
	m = maildrop_msg(md, 2);		/* the last to arrive */
	assert_string_equal(maildrop_sender(md, m), "s@x.example");
	assert_non_null(r = maildrop_rcpt_next(md, m, NULL));
	assert_string_equal(r, "alice");
	assert_non_null(r = maildrop_rcpt_next(md, m, r));
	assert_string_equal(r, "bob");
	assert_null(maildrop_rcpt_next(md, m, r));
	maildrop_close(md);

	/* alice: her two messages, and of the shared one only herself. */
	assert_int_equal(maildrop_open(ps, HOST, "alice", MAILDROP_ENV, NULL,
	    NULL, &md), STORE_OK);
	assert_int_equal(maildrop_count(md), 2);
	for (i = 0; i < 2; i++) {
		m = maildrop_msg(md, i);
		assert_non_null(r = maildrop_rcpt_next(md, m, NULL));
		assert_string_equal(r, "alice");
		assert_null(maildrop_rcpt_next(md, m, r));
		both += maildrop_punt_cfi(md, m->punt) == 1;
	}
	assert_int_equal(both, 1);
	maildrop_close(md);
	puntset_free(ps);
}

struct skips {
	int	 n;
	char	 last[64];
};

static void
skip_cb(void *arg, const char *punt, const char *reason)
{
	struct skips	*sk = arg;

	sk->n++;
	snprintf(sk->last, sizeof(sk->last), "%s:%s", punt, reason);
}

/* Host vs user vs same user, through maildrop_open and punt_lock. */
static void
test_lock_conflicts(void **state)
{
	struct fx	*fx = *state;
	struct puntset	*ps;
	struct maildrop	*host, *alice, *md;
	struct punt_lock lk;

	assert_non_null(ps = puntset_new(&fx->cf, 0));
	assert_int_equal(maildrop_open(ps, HOST, NULL, MAILDROP_LOCK, NULL,
	    NULL, &host), STORE_OK);
	assert_int_equal(maildrop_npunts(host), 2);
	assert_int_equal(maildrop_open(ps, HOST, "alice", MAILDROP_LOCK, NULL,
	    NULL, &md), STORE_BUSY);
	assert_null(md);
	/* Without MAILDROP_LOCK a listing does not conflict (the agent). */
	assert_int_equal(maildrop_open(ps, HOST, NULL, 0, NULL, NULL, &md),
	    STORE_OK);
	maildrop_close(md);
	maildrop_close(host);

	assert_int_equal(maildrop_open(ps, HOST, "alice", MAILDROP_LOCK, NULL,
	    NULL, &alice), STORE_OK);
	assert_int_equal(maildrop_open(ps, HOST, "alice", MAILDROP_LOCK, NULL,
	    NULL, &md), STORE_BUSY);
	assert_int_equal(maildrop_open(ps, HOST, NULL, MAILDROP_LOCK, NULL,
	    NULL, &md), STORE_BUSY);
	assert_int_equal(maildrop_open(ps, HOST, "bob", MAILDROP_LOCK, NULL,
	    NULL, &md), STORE_OK);
	maildrop_close(md);
	maildrop_close(alice);

	/*
	 * All or nothing: alice held on beta only, so a host open locks
	 * alpha, meets beta busy, and must leave alpha free again.
	 */
	assert_int_equal(punt_lock(puntset_get(ps, 1), HOST, "alice", &lk),
	    STORE_OK);
	assert_int_equal(maildrop_open(ps, HOST, NULL, MAILDROP_LOCK, NULL,
	    NULL, &md), STORE_BUSY);
	{
		struct punt_lock a;

		assert_int_equal(punt_lock(puntset_get(ps, 0), HOST, NULL,
		    &a), STORE_OK);
		punt_unlock(&a);
	}
	punt_unlock(&lk);
	assert_int_equal(maildrop_open(ps, HOST, NULL, MAILDROP_LOCK, NULL,
	    NULL, &md), STORE_OK);
	maildrop_close(md);
	puntset_free(ps);
}

/* A punt that is down is left out and told; the others still list. */
static void
test_punt_down(void **state)
{
	struct fx	*fx = *state;
	struct puntset	*ps;
	struct maildrop	*md;
	struct skips	 sk = { 0, "" };
	char		 moved[PATH_MAX + 8];

	snprintf(moved, sizeof(moved), "%s.away", fx->cf.punts[0].path);
	assert_int_equal(rename(fx->cf.punts[0].path, moved), 0);
	assert_non_null(ps = puntset_new(&fx->cf, 0));
	assert_int_equal(maildrop_open(ps, HOST, NULL, MAILDROP_LOCK,
	    skip_cb, &sk, &md), STORE_OK);
	assert_int_equal(sk.n, 1);
	assert_string_equal(sk.last, "alpha:unavailable");
	assert_int_equal(maildrop_npunts(md), 1);
	assert_int_equal(maildrop_punt_cfi(md, 0), 1);
	assert_string_equal(punt_name(maildrop_punt(md, 0)), "beta");
	maildrop_close(md);
	puntset_free(ps);
	assert_int_equal(rename(moved, fx->cf.punts[0].path), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_puntset_open, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_puntset_health, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_puntset_once, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_merge_order, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_user_filter_env, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_user_filter, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_lock_conflicts, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_punt_down, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
