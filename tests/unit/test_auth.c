/* Unit tests for auth: a real LMDB store in a temp dir, at the MIN cost. */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/auth.h"
#include "sdps/config.h"

#define MAP	(8ULL << 20)

struct fix {
	char		 dir[64];
	char		 path[96];
	struct auth	*a;
};

static int
setup(void **state)
{
	struct fix	*f;
	char		 err[256];

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return -1;
	strcpy(f->dir, "/tmp/test_auth.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	/* A level that does not exist yet: create must mkdir it. */
	snprintf(f->path, sizeof(f->path), "%s/auth/db", f->dir);
	f->a = auth_open(f->path, MAP, true, CONFIG_HASH_MIN, err,
	    sizeof(err));
	if (f->a == NULL) {
		fprintf(stderr, "auth_open: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix	*f = *state;
	char		 cmd[128];
	int		 rc;

	auth_close(f->a);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	rc = system(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

static void
add_ok(struct auth *a, const char *host, const char *pw1, const char *pw2)
{
	char	 err[256] = "";

	if (auth_host_add(a, host, pw1, pw2, err, sizeof(err)) != 0)
		fail_msg("add %s: %s", host, err);
}

static uint64_t
gen_of(struct auth *a, const char *host)
{
	struct auth_host	 h;

	assert_int_equal(auth_host_get(a, host, &h), AUTH_OK);
	assert_string_equal(h.host, host);
	return h.generation;
}

static void
test_verify(void **state)
{
	struct fix	*f = *state;
	uint64_t	 gen = 0;

	add_ok(f->a, "two.example.net", "first secret", "second secret");
	add_ok(f->a, "one.example.net", "only one", NULL);

	assert_int_equal(auth_verify(f->a, "two.example.net", "first secret",
	    &gen), AUTH_OK);
	assert_int_equal(gen, gen_of(f->a, "two.example.net"));
	gen = 0;
	assert_int_equal(auth_verify(f->a, "two.example.net", "second secret",
	    &gen), AUTH_OK);
	assert_int_equal(gen, gen_of(f->a, "two.example.net"));
	assert_int_equal(auth_verify(f->a, "one.example.net", "only one",
	    NULL), AUTH_OK);

	/* Wrong, crossed, near misses, unknown host, bad input. */
	assert_int_equal(auth_verify(f->a, "two.example.net", "first secre",
	    NULL), AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "two.example.net", "First secret",
	    NULL), AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "one.example.net", "first secret",
	    NULL), AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "one.example.net", "", NULL),
	    AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "one.example.net", NULL, NULL),
	    AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "nobody.example.net", "only one",
	    NULL), AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "", "only one", NULL), AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, NULL, "only one", NULL),
	    AUTH_FAIL);
	/* Verify does not normalize: the caller does. */
	assert_int_equal(auth_verify(f->a, "ONE.example.net", "only one",
	    NULL), AUTH_FAIL);
}

static void
test_bad_input(void **state)
{
	struct fix	*f = *state;
	char		 err[256], big[1100];
	static const char *bad_pw[] = { "", "a\nb", "a\rb", "line\r\n" };
	static const char *bad_host[] = { "", "A.example", "a..b", "../x",
	    "a b", "-a.b" };
	size_t		 i;

	for (i = 0; i < NITEMS(bad_pw); i++) {
		err[0] = '\0';
		if (auth_host_add(f->a, "h.example", bad_pw[i], NULL, err,
		    sizeof(err)) != -1)
			fail_msg("password row %zu accepted", i);
		assert_true(err[0] != '\0');
		assert_int_equal(auth_host_add(f->a, "h.example", "good",
		    bad_pw[i], err, sizeof(err)), -1);
	}
	memset(big, 'x', 1025);
	big[1025] = '\0';
	assert_int_equal(auth_host_add(f->a, "h.example", big, NULL, err,
	    sizeof(err)), -1);
	big[1024] = '\0';
	add_ok(f->a, "big.example", big, NULL);
	assert_int_equal(auth_verify(f->a, "big.example", big, NULL), AUTH_OK);
	big[1024] = 'x';
	assert_int_equal(auth_verify(f->a, "big.example", big, NULL),
	    AUTH_FAIL);

	for (i = 0; i < NITEMS(bad_host); i++)
		if (auth_host_add(f->a, bad_host[i], "pw", NULL, err,
		    sizeof(err)) != -1)
			fail_msg("host row %zu accepted", i);
	/* Nothing of the refused ones got in. */
	assert_int_equal(auth_host_get(f->a, "h.example",
	    &(struct auth_host){ .generation = 0 }), AUTH_FAIL);

	add_ok(f->a, "h.example", "pw", NULL);
	assert_int_equal(auth_host_add(f->a, "h.example", "other", NULL, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "exists"));
	assert_int_equal(auth_verify(f->a, "h.example", "pw", NULL), AUTH_OK);
	assert_int_equal(auth_verify(f->a, "h.example", "other", NULL),
	    AUTH_FAIL);
	assert_int_equal(auth_host_passwd(f->a, "h.example", 3, "x", err,
	    sizeof(err)), -1);
	assert_int_equal(auth_host_passwd(f->a, "h.example", 0, "x", err,
	    sizeof(err)), -1);
	assert_int_equal(auth_host_passwd(f->a, "h.example", 1, "", err,
	    sizeof(err)), -1);
	assert_int_equal(auth_host_passwd(f->a, "nope.example", 1, "x", err,
	    sizeof(err)), -1);
	assert_int_equal(auth_host_del(f->a, "nope.example", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "no such host"));
	assert_int_equal(auth_verify(f->a, "h.example", "pw", NULL), AUTH_OK);
}

static void
test_passwd_generation(void **state)
{
	struct fix		*f = *state;
	struct auth_host	 h;
	char			 err[256];
	uint64_t		 g1, g2, g3, g4;

	add_ok(f->a, "gen.example", "one", NULL);
	g1 = gen_of(f->a, "gen.example");
	assert_int_equal(auth_host_get(f->a, "gen.example", &h), AUTH_OK);
	assert_false(h.has_pw2);

	assert_int_equal(auth_host_passwd(f->a, "gen.example", 1, "uno", err,
	    sizeof(err)), 0);
	g2 = gen_of(f->a, "gen.example");
	assert_true(g2 != g1);
	assert_int_equal(auth_verify(f->a, "gen.example", "one", NULL),
	    AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "gen.example", "uno", NULL),
	    AUTH_OK);

	/* Setting slot 2 on a one-password host adds it. */
	assert_int_equal(auth_host_passwd(f->a, "gen.example", 2, "dos", err,
	    sizeof(err)), 0);
	g3 = gen_of(f->a, "gen.example");
	assert_true(g3 != g2 && g3 != g1);
	assert_int_equal(auth_host_get(f->a, "gen.example", &h), AUTH_OK);
	assert_true(h.has_pw2);
	assert_int_equal(auth_verify(f->a, "gen.example", "uno", NULL),
	    AUTH_OK);
	assert_int_equal(auth_verify(f->a, "gen.example", "dos", NULL),
	    AUTH_OK);

	/* An SMTP target is not a password: same generation. */
	assert_int_equal(auth_host_set_smtp(f->a, "gen.example",
	    "mx.gen.example:25", err, sizeof(err)), 0);
	assert_int_equal(auth_host_get(f->a, "gen.example", &h), AUTH_OK);
	assert_string_equal(h.smtp, "mx.gen.example:25");
	assert_int_equal(h.generation, g3);
	assert_int_equal(auth_host_set_smtp(f->a, "gen.example",
	    "[::1]:2525", err, sizeof(err)), 0);
	assert_int_equal(auth_host_set_smtp(f->a, "gen.example", "mx", err,
	    sizeof(err)), -1);
	assert_int_equal(auth_host_set_smtp(f->a, "gen.example", "mx:0", err,
	    sizeof(err)), -1);
	assert_int_equal(auth_host_set_smtp(f->a, "gen.example", "a b:25",
	    err, sizeof(err)), -1);
	assert_int_equal(auth_host_get(f->a, "gen.example", &h), AUTH_OK);
	assert_string_equal(h.smtp, "[::1]:2525");
	assert_int_equal(auth_host_set_smtp(f->a, "gen.example", "", err,
	    sizeof(err)), 0);
	assert_int_equal(auth_host_get(f->a, "gen.example", &h), AUTH_OK);
	assert_string_equal(h.smtp, "");

	/* Delete and re-add with the same password: a new generation. */
	assert_int_equal(auth_host_del(f->a, "gen.example", err,
	    sizeof(err)), 0);
	assert_int_equal(auth_host_get(f->a, "gen.example", &h), AUTH_FAIL);
	assert_int_equal(auth_verify(f->a, "gen.example", "uno", NULL),
	    AUTH_FAIL);
	add_ok(f->a, "gen.example", "uno", NULL);
	g4 = gen_of(f->a, "gen.example");
	assert_true(g4 != g1 && g4 != g2 && g4 != g3);
	assert_int_equal(auth_verify(f->a, "gen.example", "dos", NULL),
	    AUTH_FAIL);
}

struct collect {
	char	 names[700][UTIL_HOST_MAX + 1];
	int	 n;
	int	 stop_at;
};

static int
collect_fn(const struct auth_host *h, void *arg)
{
	struct collect	*c = arg;

	strcpy(c->names[c->n++], h->host);
	return c->n == c->stop_at;
}

/*
 * Listing is in name order, and spans more than one of the internal
 * batches (256) without losing or repeating a host.
 */
static void
test_list(void **state)
{
	struct fix	*f = *state;
	struct collect	*c;
	char		 host[64], err[256];
	int		 i, nhosts = 600;

	assert_non_null(c = calloc(1, sizeof(*c)));
	assert_int_equal(auth_host_list(f->a, collect_fn, c), 0);
	assert_int_equal(c->n, 0);

	/* Hashes are slow even at MIN: 600 hosts share a few passwords. */
	for (i = nhosts - 1; i >= 0; i--) {
		snprintf(host, sizeof(host), "h%04d.example", i);
		if (auth_host_add(f->a, host, "pw", NULL, err,
		    sizeof(err)) != 0)
			fail_msg("%s: %s", host, err);
	}
	assert_int_equal(auth_host_list(f->a, collect_fn, c), 0);
	assert_int_equal(c->n, nhosts);
	for (i = 0; i < nhosts; i++) {
		snprintf(host, sizeof(host), "h%04d.example", i);
		assert_string_equal(c->names[i], host);
	}

	/* Stopping early. */
	memset(c, 0, sizeof(*c));
	c->stop_at = 3;
	assert_int_equal(auth_host_list(f->a, collect_fn, c), 0);
	assert_int_equal(c->n, 3);
	assert_string_equal(c->names[2], "h0002.example");
	free(c);
}

/* Records and the generation counter survive a close and reopen. */
static void
test_reopen(void **state)
{
	struct fix	*f = *state;
	char		 err[256];
	uint64_t	 g0, g1, g2;

	add_ok(f->a, "keep.example", "pw1", "pw2");
	g0 = gen_of(f->a, "keep.example");
	assert_int_equal(auth_host_del(f->a, "keep.example", err,
	    sizeof(err)), 0);
	add_ok(f->a, "keep.example", "pw1", "pw2");
	g1 = gen_of(f->a, "keep.example");
	assert_true(g1 > g0);
	auth_close(f->a);

	f->a = auth_open(f->path, MAP, false, CONFIG_HASH_MIN, err,
	    sizeof(err));
	if (f->a == NULL)
		fail_msg("reopen: %s", err);
	assert_int_equal(gen_of(f->a, "keep.example"), g1);
	assert_int_equal(auth_verify(f->a, "keep.example", "pw2", NULL),
	    AUTH_OK);
	add_ok(f->a, "new.example", "x", NULL);
	g2 = gen_of(f->a, "new.example");
	assert_true(g2 > g1);
}

static void
test_open_errors(void **state)
{
	struct fix	*f = *state;
	struct auth	*a;
	char		 err[256], path[160];

	/* Without create, a missing store is an error and is not made. */
	snprintf(path, sizeof(path), "%s/none", f->dir);
	err[0] = '\0';
	a = auth_open(path, MAP, false, CONFIG_HASH_MIN, err, sizeof(err));
	assert_null(a);
	assert_true(err[0] != '\0');
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_null(auth_open(path, MAP, false, CONFIG_HASH_MIN, err,
	    sizeof(err)));
	snprintf(path, sizeof(path), "%s/none/data.mdb", f->dir);
	assert_int_equal(access(path, F_OK), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_passwd_generation, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup,
		    teardown),
	};

	if (auth_global_init() == -1)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
