/*
 * sdps-index2: the measurement behind index format 2 (docs/design.md
 * §18.3).  Builds a punt-sized LMDB in today's layout (format 1:
 * "msg" id -> record, "host" dupsort host -> ids), upgrades it in place
 * to format 2 ("rec" host id|arrival|id -> record, "id" id -> host id|
 * arrival, "hosts" name -> host id) in batches of -B records per commit,
 * the way `sdps-ctl punt upgrade` does, then times maildrop listings in
 * both layouts from the same environment with a warm cache:
 *   (a) format 1: the host's dupsort ids, one msg lookup per id;
 *   (b) format 2: one cursor range scan over the host's records.
 * Both decode every record with the real codec (record.c) and fill a
 * struct store_entry array as store_list does.  Last, the switch: the
 * format-1 databases emptied (mdb_drop) in one commit.
 *
 * The fill is setup, not measured: MDB_NOSYNC.  The upgrade batches are
 * timed with every commit synced, as the real upgrade would run.
 *
 * usage: sdps-index2 [-d DIR] [-n MSGS] [-H HOSTS] [-b BIGMSGS]
 *	    [-r REPS] [-B BATCH] [-o id|host]
 * Defaults: 1,000,000 messages over 10,000 hosts with one host of
 * 50,000; DIR /tmp/sdps-index2 (removed and remade).
 */

#include <sys/stat.h>

#include <err.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/record.h"
#include "sdps/store.h"

#define BIG_HOST	"big.scale.example"
#define TEST_HOST	"t00001.scale.example"
#define TEST_MSGS	10
#define FILL_BATCH	10000
#define T0_US		1700000000000000ULL

struct ix {
	MDB_env	*env;
	MDB_dbi	 meta, msg, host, rec, id, hosts;
};

static double
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
ck(int rc, const char *what)
{
	if (rc != 0)
		errx(1, "%s: %s", what, mdb_strerror(rc));
}

static uint64_t rng = 1939;

static uint64_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void
host_name(unsigned i, unsigned nbulk, char *buf, size_t len)
{
	if (i == nbulk)
		snprintf(buf, len, "%s", BIG_HOST);
	else if (i == nbulk + 1)
		snprintf(buf, len, "%s", TEST_HOST);
	else
		snprintf(buf, len, "h%05u.scale.example", i);
}

/* Host index of every id 1..n (shuffled, as real arrivals are). */
static unsigned *
assign_hosts(uint64_t n, unsigned nbulk, uint64_t big)
{
	unsigned	*h, t;
	uint64_t	 i, j;

	if ((h = calloc(n + 1, sizeof(*h))) == NULL)
		err(1, "calloc");
	for (i = 1; i <= n; i++) {
		if (i <= big)
			h[i] = nbulk;
		else if (i <= big + TEST_MSGS)
			h[i] = nbulk + 1;
		else
			h[i] = (unsigned)(i % nbulk);
	}
	for (i = n; i > 1; i--) {
		j = 1 + rnd() % i;
		t = h[i];
		h[i] = h[j];
		h[j] = t;
	}
	return h;
}

static unsigned char *
make_rec(const char *host, uint64_t id, size_t *len)
{
	unsigned char	 rc[16];
	struct rec	 r;
	int		 n;

	memset(&r, 0, sizeof(r));
	n = snprintf((char *)rc + 1, sizeof(rc) - 1, "user%u",
	    (unsigned)(id % 7));
	rc[0] = (unsigned char)n;
	r.arrival_us = T0_US + id * 1000;
	r.octets = 3000 + id % 5000;
	r.stored_octets = r.octets - 20;
	r.host = host;
	r.host_len = strlen(host);
	r.sender = "newsletter@sender.example.org";
	r.sender_len = strlen(r.sender);
	r.agent = "";
	r.rcpts = rc;
	r.rcpts_len = (size_t)n + 1;
	r.nrcpts = 1;
	if (id % 3 == 0)
		r.flags = STORE_F_READ;
	return rec_encode(&r, len);
}

static void
ix_open(struct ix *x, const char *dir)
{
	MDB_txn	*txn;

	ck(mdb_env_create(&x->env), "env_create");
	ck(mdb_env_set_maxdbs(x->env, 8), "maxdbs");
	ck(mdb_env_set_mapsize(x->env, 16ULL << 30), "mapsize");
	if (mkdir(dir, 0770) == -1)
		err(1, "mkdir %s", dir);
	ck(mdb_env_open(x->env, dir, MDB_NOSYNC, 0660), "env_open");
	ck(mdb_txn_begin(x->env, NULL, 0, &txn), "txn");
	ck(mdb_dbi_open(txn, "meta", MDB_CREATE, &x->meta), "meta");
	ck(mdb_dbi_open(txn, "msg", MDB_CREATE, &x->msg), "msg");
	ck(mdb_dbi_open(txn, "host", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED,
	    &x->host), "host");
	ck(mdb_dbi_open(txn, "rec", MDB_CREATE, &x->rec), "rec");
	ck(mdb_dbi_open(txn, "id", MDB_CREATE, &x->id), "id");
	ck(mdb_dbi_open(txn, "hosts", MDB_CREATE, &x->hosts), "hosts");
	ck(mdb_txn_commit(txn), "commit");
}

/* Format 1, as store_put's commit_record writes it, in id order. */
static void
fill_v1(struct ix *x, uint64_t n, unsigned nbulk, uint64_t big)
{
	char		 host[64];
	unsigned char	 k[8], *buf;
	unsigned	*h;
	MDB_txn		*txn = NULL;
	MDB_val		 key, val;
	uint64_t	 id;
	size_t		 len;

	h = assign_hosts(n, nbulk, big);
	for (id = 1; id <= n; id++) {
		if (txn == NULL)
			ck(mdb_txn_begin(x->env, NULL, 0, &txn), "txn");
		host_name(h[id], nbulk, host, sizeof(host));
		if ((buf = make_rec(host, id, &len)) == NULL)
			err(1, "rec_encode");
		rec_id_key(id, k);
		key.mv_size = 8;
		key.mv_data = k;
		val.mv_size = len;
		val.mv_data = buf;
		ck(mdb_put(txn, x->msg, &key, &val, MDB_NOOVERWRITE), "put");
		free(buf);
		key.mv_size = strlen(host);
		key.mv_data = host;
		val.mv_size = 8;
		val.mv_data = k;
		ck(mdb_put(txn, x->host, &key, &val, MDB_NODUPDATA), "put");
		if (id % FILL_BATCH == 0 || id == n) {
			ck(mdb_txn_commit(txn), "commit");
			txn = NULL;
		}
	}
	free(h);
}

/* The host id of r's host, allocated from meta "next_hid" if new. */
static uint32_t
hid_of(struct ix *x, MDB_txn *txn, const struct rec *r)
{
	unsigned char	 b[4];
	MDB_val		 key, val, mk, mv;
	uint32_t	 hid;
	int		 rc;

	key.mv_size = r->host_len;
	key.mv_data = (void *)(uintptr_t)r->host;
	if ((rc = mdb_get(txn, x->hosts, &key, &val)) == 0)
		return rec_key_hid(val.mv_data);
	ck(rc == MDB_NOTFOUND ? 0 : rc, "get hosts");
	mk.mv_size = strlen("next_hid");
	mk.mv_data = "next_hid";
	hid = mdb_get(txn, x->meta, &mk, &mv) == 0 ?
	    rec_get_le32(mv.mv_data) : 1;
	rec_put_le32(b, hid + 1);
	mv.mv_size = 4;
	mv.mv_data = b;
	ck(mdb_put(txn, x->meta, &mk, &mv, 0), "put next_hid");
	rec_hid_key(hid, b);
	val.mv_size = 4;
	val.mv_data = b;
	ck(mdb_put(txn, x->hosts, &key, &val, MDB_NOOVERWRITE), "put hosts");
	return hid;
}

/*
 * Copy one format-1 record (id key k, record v) into "rec" and "id";
 * with append, try MDB_APPEND first (a key out of order falls back to a
 * plain put).  Returns the id.
 */
static uint64_t
copy_one(struct ix *x, MDB_txn *txn, MDB_val *k, MDB_val *v, bool append)
{
	unsigned char	 hk[REC_HKEY_LEN];
	MDB_val		 v2;
	struct rec	 r;
	uint64_t	 id;
	int		 rc = MDB_KEYEXIST;

	id = rec_key_id(k->mv_data);
	if (rec_decode(v->mv_data, v->mv_size, &r) != REC_OK)
		errx(1, "record %llu", (unsigned long long)id);
	rec_hkey(hid_of(x, txn, &r), r.arrival_us, id, hk);
	v2.mv_size = REC_HKEY_LEN;
	v2.mv_data = hk;
	if (append)
		rc = mdb_put(txn, x->rec, &v2, v, MDB_APPEND);
	if (rc == MDB_KEYEXIST)
		rc = mdb_put(txn, x->rec, &v2, v, MDB_NOOVERWRITE);
	ck(rc, "put rec");
	v2.mv_size = REC_HPFX_LEN;
	ck(mdb_put(txn, x->id, k, &v2, MDB_NOOVERWRITE), "put id");
	return id;
}

/* One upgrade batch: up to max records after *frontier; 0 when done. */
static size_t
upgrade_batch(struct ix *x, uint64_t *frontier, size_t max)
{
	unsigned char	 k[8], fb[8];
	MDB_cursor	*cur;
	MDB_txn		*txn;
	MDB_val		 key, val;
	MDB_cursor_op	 op = MDB_SET_RANGE;
	size_t		 n = 0;

	ck(mdb_txn_begin(x->env, NULL, 0, &txn), "txn");
	ck(mdb_cursor_open(txn, x->msg, &cur), "cursor");
	rec_id_key(*frontier + 1, k);
	key.mv_size = 8;
	key.mv_data = k;
	while (n < max && mdb_cursor_get(cur, &key, &val, op) == 0) {
		op = MDB_NEXT;
		*frontier = copy_one(x, txn, &key, &val, false);
		n++;
	}
	mdb_cursor_close(cur);
	key.mv_size = strlen("upgrade_frontier");
	key.mv_data = "upgrade_frontier";
	rec_put_le64(fb, *frontier);
	val.mv_size = 8;
	val.mv_data = fb;
	ck(mdb_put(txn, x->meta, &key, &val, 0), "put frontier");
	ck(mdb_txn_commit(txn), "commit");
	return n;
}

/*
 * The same batch in host order (-o host): walk "host" from the last
 * (host, id) copied, so "rec" keys arrive ascending and MDB_APPEND fills
 * pages whole; a key out of order (an arrival earlier than its
 * predecessor's) falls back to a plain put.
 */
static size_t
upgrade_batch_host(struct ix *x, char *fhost, uint64_t *fid, size_t max)
{
	unsigned char	 k[8];
	MDB_cursor	*cur;
	MDB_txn		*txn;
	MDB_val		 key, val, rv;
	MDB_cursor_op	 op;
	size_t		 n = 0;

	ck(mdb_txn_begin(x->env, NULL, 0, &txn), "txn");
	ck(mdb_cursor_open(txn, x->host, &cur), "cursor");
	if (fhost[0] != '\0') {
		key.mv_size = strlen(fhost);
		key.mv_data = fhost;
		rec_id_key(*fid, k);
		val.mv_size = 8;
		val.mv_data = k;
		ck(mdb_cursor_get(cur, &key, &val, MDB_GET_BOTH), "resume");
		op = MDB_NEXT;
	} else
		op = MDB_FIRST;
	while (n < max && mdb_cursor_get(cur, &key, &val, op) == 0) {
		op = MDB_NEXT;
		ck(mdb_get(txn, x->msg, &val, &rv), "get msg");
		*fid = copy_one(x, txn, &val, &rv, true);
		memcpy(fhost, key.mv_data, key.mv_size);
		fhost[key.mv_size] = '\0';
		n++;
	}
	mdb_cursor_close(cur);
	ck(mdb_txn_commit(txn), "commit");
	return n;
}

/* A listing being built, as store_read.c's struct listing (no arena). */
struct lst {
	struct store_entry	*e;
	size_t			 n, cap;
	uint64_t		 octets;
	bool			 want_env;	/* build the envelope arena */
	char			*arena;
	size_t			 alen, acap;
};

/* Append s and a NUL to the arena, doubling as store_read.c does. */
static void
lst_arena(struct lst *l, const void *s, size_t len)
{
	if (l->alen + len + 1 > l->acap) {
		if (l->acap == 0)
			l->acap = 1024;
		while (l->acap < l->alen + len + 1)
			l->acap *= 2;
		if ((l->arena = realloc(l->arena, l->acap)) == NULL)
			err(1, "realloc");
	}
	memcpy(l->arena + l->alen, s, len);
	l->arena[l->alen + len] = '\0';
	l->alen += len + 1;
}

static void
lst_add(struct lst *l, uint64_t id, const MDB_val *v)
{
	struct store_entry	*e;
	struct rec		 r;

	if (rec_decode(v->mv_data, v->mv_size, &r) != REC_OK)
		return;
	if (r.flags & STORE_F_POP_DELETED)
		return;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		if ((l->e = reallocarray(l->e, l->cap, sizeof(*l->e))) == NULL)
			err(1, "realloc");
	}
	e = &l->e[l->n++];
	e->id = id;
	e->arrival_us = r.arrival_us;
	e->octets = r.octets;
	e->flags = r.flags;
	l->octets += r.octets;
	if (l->want_env) {
		const unsigned char	*rc = NULL;
		size_t			 rl;

		e->env = (uint32_t)l->alen;
		lst_arena(l, r.sender, r.sender_len);
		while ((rc = rec_rcpt_next(&r, rc, &rl)) != NULL)
			lst_arena(l, rc + 1, rl);
		lst_arena(l, "", 0);
	}
}

/* (a) format 1: store_list today, one msg lookup per dupsort id. */
static void
list_v1(struct ix *x, const char *host, struct lst *l)
{
	MDB_txn		*txn;
	MDB_cursor	*cur;
	MDB_val		 key, val, rv;
	int		 rc;

	ck(mdb_txn_begin(x->env, NULL, MDB_RDONLY, &txn), "txn");
	ck(mdb_cursor_open(txn, x->host, &cur), "cursor");
	key.mv_size = strlen(host);
	key.mv_data = (void *)(uintptr_t)host;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY); rc == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
		if (mdb_get(txn, x->msg, &val, &rv) == 0)
			lst_add(l, rec_key_id(val.mv_data), &rv);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
}

static void list_v2(struct ix *, const char *, struct lst *);

/* (a) and (b) with the envelope arena a login builds (MAILDROP_ENV). */
static void
list_v1_env(struct ix *x, const char *host, struct lst *l)
{
	l->want_env = true;
	list_v1(x, host, l);
}

static void
list_v2_env(struct ix *x, const char *host, struct lst *l)
{
	l->want_env = true;
	list_v2(x, host, l);
}

/* (b) format 2: the host id, then one range scan of its records. */
static void
list_v2(struct ix *x, const char *host, struct lst *l)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_txn		*txn;
	MDB_cursor	*cur;
	MDB_val		 key, val;
	uint64_t	 id;
	int		 rc;

	ck(mdb_txn_begin(x->env, NULL, MDB_RDONLY, &txn), "txn");
	key.mv_size = strlen(host);
	key.mv_data = (void *)(uintptr_t)host;
	if (mdb_get(txn, x->hosts, &key, &val) != 0) {
		mdb_txn_abort(txn);
		return;
	}
	memset(k, 0, sizeof(k));
	memcpy(k, val.mv_data, REC_HID_LEN);
	ck(mdb_cursor_open(txn, x->rec, &cur), "cursor");
	key.mv_size = sizeof(k);
	key.mv_data = k;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0 &&
	    key.mv_size == REC_HKEY_LEN &&
	    memcmp(key.mv_data, k, REC_HID_LEN) == 0;
	    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		rec_hkey_split(key.mv_data, NULL, NULL, &id);
		lst_add(l, id, &val);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
}

static int
dcmp(const void *a, const void *b)
{
	double	 x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Time reps listings of host; prints min/median/max in ms. */
static void
time_list(struct ix *x, const char *label, const char *host, int reps,
    void (*fn)(struct ix *, const char *, struct lst *))
{
	struct lst	 l;
	double		*t, t0;
	size_t		 n = 0;
	uint64_t	 oct = 0;
	int		 i;

	if ((t = calloc((size_t)reps, sizeof(*t))) == NULL)
		err(1, "calloc");
	for (i = -2; i < reps; i++) {	/* two warm-up runs */
		memset(&l, 0, sizeof(l));
		t0 = now_ms();
		fn(x, host, &l);
		if (i >= 0)
			t[i] = now_ms() - t0;
		n = l.n;
		oct = l.octets;
		free(l.e);
		free(l.arena);
	}
	qsort(t, (size_t)reps, sizeof(*t), dcmp);
	printf("| %s | %s | %zu | %llu | %.4f | %.4f | %.4f |\n", label, host,
	    n, (unsigned long long)oct, t[0], t[reps / 2], t[reps - 1]);
	free(t);
}

static void
db_size(struct ix *x, const char *name, MDB_dbi dbi)
{
	MDB_txn	*txn;
	MDB_stat ms;

	ck(mdb_txn_begin(x->env, NULL, MDB_RDONLY, &txn), "txn");
	ck(mdb_stat(txn, dbi, &ms), "stat");
	printf("| %s | %zu | %u | %zu | %zu | %.1f MB |\n", name,
	    ms.ms_entries, ms.ms_depth, ms.ms_leaf_pages,
	    ms.ms_overflow_pages, (double)(ms.ms_branch_pages +
	    ms.ms_leaf_pages + ms.ms_overflow_pages) * ms.ms_psize / 1e6);
	mdb_txn_abort(txn);
}

static void
usage(void)
{
	fprintf(stderr, "usage: sdps-index2 [-d dir] [-n msgs] [-H hosts] "
	    "[-b bigmsgs] [-r reps] [-B batch] [-o id|host]\n");
	exit(2);
}

static void
upgrade(struct ix *x, size_t batch, int host_order)
{
	char		 fhost[256] = "";
	uint64_t	 frontier = 0;
	size_t		 n, total = 0, batches = 0;
	double		 t0, t, worst = 0, all;

	ck(mdb_env_set_flags(x->env, MDB_NOSYNC, 0), "sync on");
	all = now_ms();
	do {
		t0 = now_ms();
		n = host_order ? upgrade_batch_host(x, fhost, &frontier,
		    batch) : upgrade_batch(x, &frontier, batch);
		if ((t = now_ms() - t0) > worst)
			worst = t;
		total += n;
		batches++;
	} while (n == batch);
	all = now_ms() - all;
	printf("upgrade (%s order): %zu records in %zu synced batches of <= %zu: "
	    "%.0f ms (%.0f records/s), slowest batch %.1f ms\n",
	    host_order ? "host" : "id", total,
	    batches, batch, all, total / (all / 1e3), worst);
}

/* The switch: format 1 emptied (its dbs kept for old binaries' open). */
static void
upgrade_switch(struct ix *x)
{
	MDB_txn		*txn;
	double		 t0;

	t0 = now_ms();
	ck(mdb_txn_begin(x->env, NULL, 0, &txn), "txn");
	ck(mdb_drop(txn, x->msg, 0), "drop msg");
	ck(mdb_drop(txn, x->host, 0), "drop host");
	ck(mdb_txn_commit(txn), "commit");
	printf("switch: msg and host emptied in one commit: %.1f ms\n",
	    now_ms() - t0);
}

int
main(int argc, char **argv)
{
	const char	*dir = "/tmp/sdps-index2";
	char		 cmd[4200];
	struct ix	 x;
	uint64_t	 n = 1000000, bigmsgs = 50000;
	unsigned	 nhosts = 10000;
	size_t		 batch = 8192;
	int		 ch, reps = 20, host_order = 0;
	double		 t0;

	while ((ch = getopt(argc, argv, "d:n:H:b:r:B:o:")) != -1) {
		switch (ch) {
		case 'd': dir = optarg; break;
		case 'n': n = strtoull(optarg, NULL, 10); break;
		case 'H': nhosts = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'b': bigmsgs = strtoull(optarg, NULL, 10); break;
		case 'r': reps = atoi(optarg); break;
		case 'B': batch = strtoull(optarg, NULL, 10); break;
		case 'o': host_order = strcmp(optarg, "host") == 0; break;
		default: usage();
		}
	}
	if (n < bigmsgs + TEST_MSGS + nhosts || nhosts < 2 || reps < 1 ||
	    batch < 1 || strlen(dir) > 4000)
		usage();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		errx(1, "%s failed", cmd);
	memset(&x, 0, sizeof(x));
	ix_open(&x, dir);
	t0 = now_ms();
	fill_v1(&x, n, nhosts - 2, bigmsgs);
	printf("fill (format 1, NOSYNC, setup): %llu records, %u hosts: "
	    "%.0f ms\n", (unsigned long long)n, nhosts, now_ms() - t0);
	upgrade(&x, batch, host_order);
	sync();		/* no writeback of the fill under the timings */
	printf("\n| layout | host | msgs | octets | min ms | median ms | "
	    "max ms |\n|---|---|---|---|---|---|---|\n");
	if (bigmsgs > 0) {
		time_list(&x, "(a) format 1, lookup per id", BIG_HOST, reps,
		    list_v1);
		time_list(&x, "(b) format 2, one range scan", BIG_HOST, reps,
		    list_v2);
		time_list(&x, "(a) + envelope arena", BIG_HOST, reps,
		    list_v1_env);
		time_list(&x, "(b) + envelope arena", BIG_HOST, reps,
		    list_v2_env);
	}
	time_list(&x, "(a) format 1, lookup per id", TEST_HOST, reps * 50,
	    list_v1);
	time_list(&x, "(b) format 2, one range scan", TEST_HOST, reps * 50,
	    list_v2);
	printf("\n| db | entries | depth | leaf pages | overflow | size |\n"
	    "|---|---|---|---|---|---|\n");
	db_size(&x, "msg (format 1)", x.msg);
	db_size(&x, "host (format 1)", x.host);
	db_size(&x, "rec (format 2)", x.rec);
	db_size(&x, "id (format 2)", x.id);
	db_size(&x, "hosts (format 2)", x.hosts);
	upgrade_switch(&x);
	mdb_env_close(x.env);
	return 0;
}
