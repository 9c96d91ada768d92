/*
 * sdps-fmt1: TEST ONLY.  Writes a punt in index format 1, as the
 * format-1 binary did (git show 49502ba:src/punt/store.c, store_put.c):
 * meta version 1, name, punt_uid, next_id; "msg" id (8 octets BE) ->
 * record; "host" (dupsort) host -> id; each message's wire-format file in
 * spool/XX/<16 hex>.  For tests/integration/test_upgrade.py, which then
 * upgrades it with sdps-ctl punt upgrade.
 *
 * usage: sdps-fmt1 make DIR NAME N [NOW_US]
 *					N varied messages (ids 1..N); live
 *					claims at NOW_US (default now), so
 *					two punts can be made identical;
 *					a 6th argument "nofiles": no spool
 *					files (timing the index only)
 *	  sdps-fmt1 newer DIR ID	make record ID of record version 9
 *	  sdps-fmt1 unhost DIR ID	remove ID's host entry (an index fault)
 *	  sdps-fmt1 hold DIR		keep the environment open (a reader
 *					slot, as any process using the punt)
 *					until stdin closes; "ready" when held
 *
 * The messages vary by id: three hosts, one to three recipients, the
 * null sender, READ, a live claim, a stale claim with POP_DELETED, READ
 * under a claim, arrivals out of id order, a dot-stuffed line.
 */

#include <sys/stat.h>

#include <err.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/record.h"
#include "sdps/store.h"

#define T0_US	1700000000000000ULL

static const char *const hosts[] = { "a.example", "b.example",
    "c.example.org" };

static void
ck(int rc, const char *what)
{
	if (rc != 0)
		errx(1, "%s: %s", what, mdb_strerror(rc));
}

static void
env_open(const char *dir, MDB_env **env, MDB_txn **txn, MDB_dbi *dbi)
{
	char	 ix[4096];

	snprintf(ix, sizeof(ix), "%s/index", dir);
	ck(mdb_env_create(env), "env_create");
	ck(mdb_env_set_maxdbs(*env, 8), "maxdbs");
	ck(mdb_env_set_mapsize(*env, 4ULL << 30), "mapsize");
	ck(mdb_env_open(*env, ix, 0, 0660), "env_open");
	ck(mdb_txn_begin(*env, NULL, 0, txn), "txn");
	ck(mdb_dbi_open(*txn, "meta", MDB_CREATE, &dbi[0]), "meta");
	ck(mdb_dbi_open(*txn, "msg", MDB_CREATE, &dbi[1]), "msg");
	ck(mdb_dbi_open(*txn, "host", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED,
	    &dbi[2]), "host");
}

static void
put(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t kl, const void *v,
    size_t vl, unsigned flags)
{
	MDB_val	 key = { kl, (void *)(uintptr_t)k };
	MDB_val	 val = { vl, (void *)(uintptr_t)v };

	ck(mdb_put(txn, dbi, &key, &val, flags), "put");
}

/* The wire-format file of id; its unstuffed size into *body. */
static size_t
make_file(const char *dir, uint64_t id, size_t *body)
{
	char	 path[4096], buf[8192];
	size_t	 len, i;
	int	 fd, n;

	n = snprintf(buf, sizeof(buf), "From: sender%llu@x.example\r\n"
	    "Subject: message %llu\r\n\r\nbody of message %llu\r\n"
	    "..a dot-stuffed line\r\n", (unsigned long long)id,
	    (unsigned long long)id, (unsigned long long)id);
	len = (size_t)n;
	for (i = 0; i < id % 40; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
		    "filler line %zu of %llu\r\n", i, (unsigned long long)id);
	*body = len - 1;
	snprintf(path, sizeof(path), "%s/spool/%02x", dir,
	    (unsigned)(id & 0xff));
	if (mkdir(path, 0770) == -1 && access(path, F_OK) != 0)
		err(1, "mkdir %s", path);
	snprintf(path, sizeof(path), "%s/spool/%02x/%016llx", dir,
	    (unsigned)(id & 0xff), (unsigned long long)id);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0660)) == -1 ||
	    write(fd, buf, len) != (ssize_t)len ||
	    close(fd) == -1)
		err(1, "%s", path);
	return len;
}

static uint64_t now_us;
static int nofiles;	/* timing only: records without spool files */

static void
make_one(const char *dir, MDB_txn *txn, const MDB_dbi *dbi, uint64_t id)
{
	unsigned char	 rc[64], k[8], *buf;
	char		 sender[64];
	struct rec	 r;
	size_t		 body, len, i;
	uint64_t	 now = now_us;

	memset(&r, 0, sizeof(r));
	r.host = hosts[id % 3];
	r.host_len = strlen(r.host);
	if (id % 7 == 0)
		sender[0] = '\0';
	else
		snprintf(sender, sizeof(sender), "sender%llu@x.example",
		    (unsigned long long)id);
	r.sender = sender;
	r.sender_len = strlen(sender);
	r.nrcpts = 1 + id % 3;
	for (i = 0, len = 0; i < r.nrcpts; i++) {
		int n = snprintf((char *)rc + len + 1, sizeof(rc) - len - 1,
		    "%s", i == 0 ? "alice" : i == 1 ? "bob" : "carol");
		rc[len] = (unsigned char)n;
		len += (size_t)n + 1;
	}
	r.rcpts = rc;
	r.rcpts_len = len;
	/* Arrivals out of id order: every fourth one is earlier. */
	r.arrival_us = T0_US + id * 1000 - (id % 4 == 0 ? 500000 : 0);
	r.agent = "";
	switch (id % 6) {
	case 1:
		r.flags = STORE_F_READ;
		break;
	case 2:
		r.flags = STORE_F_IN_DELIVERY;
		r.claim_us = now;
		r.agent = "smtp-a";
		break;
	case 3:
		r.flags = STORE_F_IN_DELIVERY | STORE_F_POP_DELETED;
		r.claim_us = now;
		r.agent = "smtp-b";
		break;
	case 4:
		r.flags = STORE_F_READ | STORE_F_IN_DELIVERY;
		r.claim_us = 1;	/* stale */
		r.agent = "smtp-c";
		break;
	}
	r.agent_len = strlen(r.agent);
	if (nofiles)
		r.stored_octets = body = 100 + id % 5000;
	else
		r.stored_octets = make_file(dir, id, &body);
	r.octets = body + strlen("Return-Path: <") + r.sender_len +
	    strlen(">\r\n");
	if ((buf = rec_encode(&r, &len)) == NULL)
		err(1, "rec_encode");
	rec_id_key(id, k);
	put(txn, dbi[1], k, 8, buf, len, MDB_NOOVERWRITE);
	put(txn, dbi[2], r.host, r.host_len, k, 8, MDB_NODUPDATA);
	free(buf);
}

static void
make(const char *dir, const char *name, uint64_t n)
{
	static const char *const sub[] = { "", "/spool", "/tmp", "/index" };
	unsigned char	 b[8];
	char		 path[4096];
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 dbi[3];
	uint64_t	 id;
	size_t		 i;

	for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", dir, sub[i]);
		if (mkdir(path, 0770) == -1)
			err(1, "mkdir %s", path);
	}
	env_open(dir, &env, &txn, dbi);
	rec_put_le32(b, 1);
	put(txn, dbi[0], "version", 7, b, 4, 0);
	put(txn, dbi[0], "name", 4, name, strlen(name), 0);
	rec_put_le64(b, 0x5d95f00d1234abcdULL);
	put(txn, dbi[0], "punt_uid", 8, b, 8, 0);
	rec_put_le64(b, n + 1);
	put(txn, dbi[0], "next_id", 7, b, 8, 0);
	for (id = 1; id <= n; id++)
		make_one(dir, txn, dbi, id);
	ck(mdb_txn_commit(txn), "commit");
	mdb_env_close(env);
}

/* newer: record id's version octet 9; unhost: its host entry gone. */
static void
edit(const char *dir, uint64_t id, int newer)
{
	unsigned char	 k[8], *buf;
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 dbi[3];
	MDB_val		 key = { 8, k }, val, hk;
	struct rec	 r;

	env_open(dir, &env, &txn, dbi);
	rec_id_key(id, k);
	ck(mdb_get(txn, dbi[1], &key, &val), "get");
	if (rec_decode(val.mv_data, val.mv_size, &r) != REC_OK)
		errx(1, "record %llu does not decode", (unsigned long long)id);
	if (newer) {
		if ((buf = malloc(val.mv_size)) == NULL)
			err(1, "malloc");
		memcpy(buf, val.mv_data, val.mv_size);
		buf[0] = 9;
		put(txn, dbi[1], k, 8, buf, val.mv_size, 0);
		free(buf);
	} else {
		hk.mv_size = r.host_len;
		hk.mv_data = (void *)(uintptr_t)r.host;
		ck(mdb_del(txn, dbi[2], &hk, &key), "del host");
	}
	ck(mdb_txn_commit(txn), "commit");
	mdb_env_close(env);
}

/* A process that has the punt open: one read, then idle until EOF. */
static void
hold(const char *dir)
{
	char	 ix[4096], c;
	MDB_env	*env;
	MDB_txn	*txn;

	snprintf(ix, sizeof(ix), "%s/index", dir);
	ck(mdb_env_create(&env), "env_create");
	ck(mdb_env_set_maxdbs(env, 8), "maxdbs");
	ck(mdb_env_open(env, ix, 0, 0660), "env_open");
	ck(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "txn");
	mdb_txn_abort(txn);
	printf("ready\n");
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	mdb_env_close(env);
}

int
main(int argc, char **argv)
{
	nofiles = argc == 7 && strcmp(argv[6], "nofiles") == 0;
	now_us = argc >= 6 ? strtoull(argv[5], NULL, 10) :
	    (uint64_t)time(NULL) * 1000000;
	if (argc >= 5 && argc <= 7 && strcmp(argv[1], "make") == 0)
		make(argv[2], argv[3], strtoull(argv[4], NULL, 10));
	else if (argc == 4 && strcmp(argv[1], "newer") == 0)
		edit(argv[2], strtoull(argv[3], NULL, 10), 1);
	else if (argc == 4 && strcmp(argv[1], "unhost") == 0)
		edit(argv[2], strtoull(argv[3], NULL, 10), 0);
	else if (argc == 3 && strcmp(argv[1], "hold") == 0)
		hold(argv[2]);
	else {
		fprintf(stderr, "usage: sdps-fmt1 make DIR NAME N [NOW_US [nofiles]] | "
		    "newer DIR ID | unhost DIR ID | hold DIR\n");
		return 64;
	}
	return 0;
}
