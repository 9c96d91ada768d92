/*
 * test_deliver: the punt choice for LMTP's streamed DATA when a punt is
 * remote (issue 11).  The remote punt is an implementation of this test's
 * own (no local store, put_file only), so the front end's side runs
 * without a punt server: the file goes to RUN_DIR/lmtp-tmp, every host's
 * copy reaches the remote punt through punt_put_file from offset 0, and a
 * remote punt that fails passes the copy on to the local one.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
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
#include "sdps/deliver.h"
#include "sdps/punt.h"
#include "sdps/puntset.h"
#include "sdps/store.h"

#define MAP	(4ULL << 20)
#define DATA	"Subject: t\r\n\r\nbody through the link\r\n"

struct fx {
	char		 dir[64];
	struct config	 cf;
};

/* The remote punt: what put_file was given, and whether it refuses. */
struct remote {
	bool	 fail;
	int	 calls;
	uint64_t next_id;
	char	 got[256];
	char	 hosts[4][64];
};

static void
r_close(void *impl)
{
	(void)impl;
}

static bool
r_health(void *impl)
{
	(void)impl;
	return true;
}

static enum store_res
r_put_file(void *impl, const struct store_envelope *env, int fd,
    uint64_t wire_len, uint64_t body_octets, uint64_t *id, char *err,
    size_t errlen)
{
	struct remote	*r = impl;
	ssize_t		 n;

	(void)body_octets;
	if (r->fail) {
		snprintf(err, errlen, "link down");
		return STORE_TEMPFAIL;
	}
	assert_true(wire_len < sizeof(r->got));
	/* The contract: the data from offset 0, whatever the offset. */
	n = read(fd, r->got, sizeof(r->got) - 1);
	assert_int_equal(n, (ssize_t)wire_len);
	r->got[n] = '\0';
	if (r->calls < 4)
		snprintf(r->hosts[r->calls], sizeof(r->hosts[0]), "%s",
		    env->host);
	r->calls++;
	*id = ++r->next_id;
	return STORE_OK;
}

static const struct punt_ops remote_ops = {
	.kind = "remote-test",
	.close = r_close,
	.health = r_health,
	.put_file = r_put_file,
};

/* Punt 0 "alpha" is remote (adopted); punt 1 "beta", if npunts is 2, is
 * a local store. */
static int
setup(void **state)
{
	struct fx	*fx;
	char		 err[256], path[PATH_MAX];

	if ((fx = calloc(1, sizeof(*fx))) == NULL)
		return -1;
	strcpy(fx->dir, "/tmp/test_deliver.XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	config_defaults(&fx->cf);
	snprintf(fx->cf.run_dir, sizeof(fx->cf.run_dir), "%s/run", fx->dir);
	if (mkdir(fx->cf.run_dir, 0700) == -1)
		return -1;
	fx->cf.store_map_size = MAP;
	fx->cf.npunts = 2;
	strcpy(fx->cf.punts[0].name, "alpha");
	strcpy(fx->cf.punts[0].address, "192.0.2.1:7110");
	strcpy(fx->cf.punts[1].name, "beta");
	snprintf(path, sizeof(path), "%s/beta", fx->dir);
	snprintf(fx->cf.punts[1].path, sizeof(fx->cf.punts[1].path), "%s",
	    path);
	if (store_create(fx->cf.punts[1].path, "beta", MAP, err,
	    sizeof(err)) == -1) {
		fprintf(stderr, "store_create: %s\n", err);
		return -1;
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
envs(struct store_envelope env[2], struct store_item it[2])
{
	static const char *const rcpts[] = { "fred" };

	memset(env, 0, 2 * sizeof(*env));
	memset(it, 0, 2 * sizeof(*it));
	env[0].host = "one.example.net";
	env[1].host = "two.example.net";
	env[0].sender = env[1].sender = "s@x.example";
	env[0].rcpts = env[1].rcpts = rcpts;
	env[0].nrcpts = env[1].nrcpts = 1;
	it[0].env = &env[0];
	it[1].env = &env[1];
}

/*
 * Only the remote punt: DATA goes to RUN_DIR/lmtp-tmp (0700), a dead
 * writer's leftover there is swept, and each host's copy is one put_file
 * to the remote punt, from offset 0.
 */
static void
test_remote_only(void **state)
{
	struct fx		*fx = *state;
	struct remote		 r = { false, 0, 100, "", { "" } };
	struct store_envelope	 env[2];
	struct store_item	 it[2];
	struct puntset		*ps;
	struct stat		 sb;
	char			 path[PATH_MAX], dir[PATH_MAX + 16];
	char			 old[PATH_MAX + 64], why[512] = "";
	int			 fd, idx = -1, idxs[2];
	bool			 fe_tmp = false;

	fx->cf.npunts = 1;
	snprintf(dir, sizeof(dir), "%s/%s", fx->cf.run_dir, DELIVER_FE_TMP);
	assert_int_equal(mkdir(dir, 0700), 0);
	/* No process has pid INT_MAX - 1 on a default pid_max. */
	snprintf(old, sizeof(old), "%s/%d.leftover", dir, INT_MAX - 1);
	assert_true((fd = open(old, O_CREAT | O_WRONLY, 0600)) != -1);
	close(fd);
	assert_non_null(ps = puntset_new(&fx->cf, 0));
	assert_int_equal(puntset_adopt(ps, 0,
	    punt_new(&remote_ops, &r, "alpha")), 0);

	fd = deliver_tmp_open(ps, fx->cf.run_dir, &idx, path, sizeof(path),
	    &fe_tmp, why, sizeof(why));
	assert_true(fd != -1);
	assert_int_equal(idx, 0);
	assert_true(fe_tmp);
	assert_memory_equal(path, dir, strlen(dir));
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_int_equal(access(old, F_OK), -1);
	assert_int_equal(write(fd, DATA, strlen(DATA)), (ssize_t)strlen(DATA));

	envs(env, it);
	deliver_store_files(ps, idx, it, idxs, 2, path, fd, strlen(DATA),
	    strlen(DATA), why, sizeof(why));
	assert_int_equal(it[0].res, STORE_OK);
	assert_int_equal(it[1].res, STORE_OK);
	assert_int_equal(idxs[0], 0);
	assert_int_equal(idxs[1], 0);
	assert_int_equal(it[0].id, 101);
	assert_int_equal(it[1].id, 102);
	assert_int_equal(r.calls, 2);
	assert_string_equal(r.hosts[0], "one.example.net");
	assert_string_equal(r.hosts[1], "two.example.net");
	assert_string_equal(r.got, DATA);
	/* The file is the caller's to unlink (lmtp.c data_end). */
	assert_int_equal(access(path, F_OK), 0);
	close(fd);
	unlink(path);
	puntset_free(ps);
}

/* The remote punt chosen fails: every copy lands on the local punt,
 * and why names the remote one. */
static void
test_remote_fails_local_takes(void **state)
{
	struct fx		*fx = *state;
	struct remote		 r = { true, 0, 0, "", { "" } };
	struct store_envelope	 env[2];
	struct store_item	 it[2];
	struct store_entry	*e = NULL;
	struct puntset		*ps;
	struct store		*st;
	char			 path[PATH_MAX + 16], why[512] = "";
	char			*arena = NULL;
	int			 fd, idxs[2];
	size_t			 n = 0;

	assert_non_null(ps = puntset_new(&fx->cf, 0));
	assert_int_equal(puntset_adopt(ps, 0,
	    punt_new(&remote_ops, &r, "alpha")), 0);
	/* A front-end file as deliver_tmp_open makes it: not fsynced. */
	snprintf(path, sizeof(path), "%s/src.XXXXXX", fx->cf.run_dir);
	assert_true((fd = mkstemp(path)) != -1);
	assert_int_equal(write(fd, DATA, strlen(DATA)), (ssize_t)strlen(DATA));

	envs(env, it);
	deliver_store_files(ps, 0, it, idxs, 2, path, fd, strlen(DATA),
	    strlen(DATA), why, sizeof(why));
	assert_int_equal(it[0].res, STORE_OK);
	assert_int_equal(it[1].res, STORE_OK);
	assert_int_equal(idxs[0], 1);
	assert_int_equal(idxs[1], 1);
	assert_non_null(strstr(why, "punt alpha: link down"));
	assert_non_null(st = punt_local_store(puntset_get(ps, 1)));
	assert_int_equal(store_list(st, "one.example.net", NULL, &e, &n,
	    &arena), 0);
	assert_int_equal(n, 1);
	free(e);
	free(arena);
	close(fd);
	unlink(path);
	puntset_free(ps);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_remote_only, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_remote_fails_local_takes,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
