/* test_store: the punt store on real LMDB in a mkdtemp() directory. */

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <lmdb.h>

#include "sdps/record.h"
#include "sdps/store.h"
#include "sdps/wire.h"

#define MAP	(64ULL << 20)
#define HOST	"fred.example.net"

struct fx {
	char		 dir[64];
	char		 punt[PATH_MAX];
	struct store	*st;
};

static struct store *
open_punt(struct fx *f, unsigned lease_s)
{
	struct store_opts o = { MAP, lease_s };
	char		 err[256];
	struct store	*st;

	st = store_open(f->punt, "p1", &o, err, sizeof(err));
	if (st == NULL)
		print_error("store_open: %s\n", err);
	return st;
}

static int
setup(void **state)
{
	struct fx	*f;
	char		 err[256];

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->punt, sizeof(f->punt), "%s/p1", f->dir);
	if (store_create(f->punt, "p1", MAP, err, sizeof(err)) == -1) {
		print_error("store_create: %s\n", err);
		return -1;
	}
	if ((f->st = open_punt(f, 3600)) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx	*f = *state;
	char		 cmd[128];
	int		 rc;

	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	rc = system(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

/* Store raw text for host with the given recipients; returns the id. */
static uint64_t
put_text(struct store *st, const char *host, const char *sender,
    const char *const *rcpts, size_t nrcpts, const char *text,
    struct wire *out)
{
	struct store_envelope env = { host, sender, rcpts, nrcpts };
	struct wire	 w;
	char		 err[256];
	uint64_t	 id = 0;

	wire_init(&w, 0);
	assert_int_equal(wire_feed(&w, text, strlen(text)), WIRE_OK);
	assert_int_equal(wire_finish(&w), WIRE_OK);
	err[0] = '\0';
	if (store_put(st, &env, w.buf, w.len, w.body_octets, &id, err,
	    sizeof(err)) != STORE_OK)
		fail_msg("store_put: %s", err);
	if (out != NULL)
		*out = w;
	else
		wire_free(&w);
	return id;
}

static uint64_t
put_simple(struct store *st, const char *rcpt)
{
	const char	*r[1] = { rcpt };

	return put_text(st, HOST, "sender@example.org", r, 1,
	    "Subject: hi\n\nhello\n", NULL);
}

static char *
read_fd(int fd, size_t *len)
{
	char	*buf = NULL;
	size_t	 cap = 0;
	ssize_t	 n;

	*len = 0;
	for (;;) {
		if (*len == cap) {
			cap = cap ? cap * 2 : 4096;
			assert_non_null(buf = realloc(buf, cap));
		}
		if ((n = read(fd, buf + *len, cap - *len)) <= 0)
			break;
		*len += (size_t)n;
	}
	assert_int_equal(n, 0);
	return buf;
}

static bool
spool_file_exists(struct fx *f, uint64_t id)
{
	char	 path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/spool/%02x/%016llx", f->punt,
	    (unsigned)(id & 0xff), (unsigned long long)id);
	return access(path, F_OK) == 0;
}

static void
test_create_open(void **state)
{
	struct fx	*f = *state;
	struct store_opts o = { MAP, 60 };
	char		 err[256], path[PATH_MAX + 32];
	struct store	*st;

	/* Same name again: left alone, same punt_uid afterwards. */
	assert_int_equal(store_create(f->punt, "p1", MAP, err, sizeof(err)),
	    0);
	err[0] = '\0';
	assert_int_equal(store_create(f->punt, "other", MAP, err,
	    sizeof(err)), -1);
	assert_true(err[0] != '\0');
	err[0] = '\0';
	assert_null(store_open(f->punt, "other", &o, err, sizeof(err)));
	assert_true(err[0] != '\0');
	snprintf(path, sizeof(path), "%s/nope", f->dir);
	assert_null(store_open(path, "p1", &o, err, sizeof(err)));
	/* A bare directory is not a punt, and opening must not make one. */
	assert_int_equal(mkdir(path, 0700), 0);
	assert_null(store_open(path, "p1", &o, err, sizeof(err)));
	snprintf(path, sizeof(path), "%s/nope/index/data.mdb", f->dir);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(store_create(f->punt, "bad/name", MAP, err,
	    sizeof(err)), -1);
	assert_string_equal(store_name(f->st), "p1");
	assert_true(store_uid(f->st) != 0);
	assert_non_null(st = open_punt(f, 0));
	assert_true(store_uid(st) == store_uid(f->st));
	store_close(st);
}

static void
test_put_get_open(void **state)
{
	struct fx		*f = *state;
	const char		*rcpts[2] = { "alice", "bob" };
	const char		*text = "Subject: x\n\n.dot\nline\r\n";
	struct store_entry	*e;
	struct store_msg	 m;
	struct wire		 w;
	size_t			 n, len;
	uint64_t		 id, id0;
	char			*data;
	int			 fd;

	id = put_text(f->st, HOST, "s@example.org", rcpts, 2, text, &w);
	assert_int_equal(store_msg_get(f->st, id, &m), STORE_OK);
	assert_int_equal(m.id, id);
	assert_string_equal(m.host, HOST);
	assert_string_equal(m.sender, "s@example.org");
	assert_int_equal(m.nrcpts, 2);
	assert_string_equal(m.rcpts[0], "alice");
	assert_string_equal(m.rcpts[1], "bob");
	assert_int_equal(m.stored_octets, w.len);
	assert_int_equal(m.octets, w.body_octets +
	    strlen("Return-Path: <s@example.org>\r\n"));
	assert_int_equal(m.flags, 0);
	assert_true(m.arrival_us > 0);
	store_msg_free(&m);

	assert_int_equal(store_msg_open(f->st, id, &fd, &m), STORE_OK);
	data = read_fd(fd, &len);
	close(fd);
	assert_int_equal(len, w.len);
	assert_memory_equal(data, w.buf, len);
	assert_memory_equal(data, "Subject: x\r\n\r\n..dot\r\nline\r\n", len);
	assert_int_equal(m.id, id);
	store_msg_free(&m);
	free(data);
	wire_free(&w);

	/* Null sender: "Return-Path: <>\r\n". */
	id0 = put_text(f->st, HOST, "", rcpts, 1, "A: b\n", &w);
	assert_int_equal(store_msg_get(f->st, id0, &m), STORE_OK);
	assert_string_equal(m.sender, "");
	assert_int_equal(m.octets, 6 + strlen("Return-Path: <>\r\n"));
	store_msg_free(&m);
	wire_free(&w);

	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_true(e[0].id == id && e[1].id == id0);
	assert_true(e[0].arrival_us <= e[1].arrival_us);
	assert_int_equal(e[1].octets, 6 + strlen("Return-Path: <>\r\n"));
	free(e);

	assert_int_equal(store_msg_get(f->st, 999, &m), STORE_GONE);
	assert_int_equal(store_msg_open(f->st, 999, &fd, NULL), STORE_GONE);
	assert_int_equal(store_list(f->st, "nobody.example.net", NULL, &e, &n,
	    NULL), 0);
	assert_int_equal(n, 0);
	free(e);
}

static bool
is_uidl(const char *s)
{
	size_t	 i;

	if (strlen(s) != 33 || s[16] != '-')
		return false;
	for (i = 0; i < 33; i++)
		if (i != 16 && strchr("0123456789abcdef", s[i]) == NULL)
			return false;
	return true;
}

static void
test_uidl(void **state)
{
	struct fx	*f = *state;
	struct store_opts o = { MAP, 60 };
	struct store	*st2;
	char		 u1[STORE_UIDL_MAX], u2[STORE_UIDL_MAX];
	char		 u3[STORE_UIDL_MAX], err[256], p2[PATH_MAX + 8];
	uint64_t	 a, b, c;

	snprintf(p2, sizeof(p2), "%s/p2", f->dir);
	assert_int_equal(store_create(p2, "p2", MAP, err, sizeof(err)), 0);
	assert_non_null(st2 = store_open(p2, "p2", &o, err, sizeof(err)));
	a = put_simple(f->st, "alice");
	b = put_simple(st2, "alice");
	assert_true(a == b);	/* both punts start at the same id... */
	store_uidl(f->st, a, u1);
	store_uidl(st2, b, u2);
	assert_true(is_uidl(u1) && is_uidl(u2));
	assert_string_not_equal(u1, u2);	/* ...yet UIDLs differ */
	/* An id is never reused, even after its message is gone. */
	assert_int_equal(store_remove(f->st, &a, 1, NULL), STORE_OK);
	c = put_simple(f->st, "alice");
	assert_true(c > a);
	store_uidl(f->st, c, u3);
	assert_string_not_equal(u1, u3);
	store_close(st2);
}

static void
test_user_listing(void **state)
{
	struct fx		*f = *state;
	const char		*ab[2] = { "alice", "bob" }, *b[1] = { "bob" };
	const char		*c[1] = { "carol" };
	struct store_entry	*e;
	char			*env;
	size_t			 n;
	uint64_t		 m1, m2, m3;

	m1 = put_text(f->st, HOST, "x@y.org", ab, 2, "A: 1\n", NULL);
	m2 = put_text(f->st, HOST, "", b, 1, "A: 2\n", NULL);
	m3 = put_text(f->st, HOST, "z@y.org", c, 1, "A: 3\n", NULL);
	(void)put_text(f->st, "jim.example.net", "", b, 1, "A: 4\n", NULL);

	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, &env), 0);
	assert_int_equal(n, 3);
	assert_true(e[0].id == m1 && e[1].id == m2 && e[2].id == m3);
	/* Envelope arena: sender, recipients, "". */
	assert_string_equal(env + e[0].env, "x@y.org");
	assert_string_equal(env + e[0].env + 8, "alice");
	assert_string_equal(env + e[0].env + 14, "bob");
	assert_string_equal(env + e[0].env + 18, "");
	assert_string_equal(env + e[1].env, "");
	assert_string_equal(env + e[1].env + 1, "bob");
	free(e);
	free(env);

	assert_int_equal(store_list(f->st, HOST, "bob", &e, &n, &env), 0);
	assert_int_equal(n, 2);
	assert_true(e[0].id == m1 && e[1].id == m2);
	/* A user session sees only its own recipient. */
	assert_string_equal(env + e[0].env + 8, "bob");
	assert_string_equal(env + e[0].env + 12, "");
	free(e);
	free(env);

	assert_int_equal(store_list(f->st, HOST, "ALICE", &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_true(e[0].id == m1);
	free(e);
	assert_int_equal(store_list(f->st, HOST, "dave", &e, &n, NULL), 0);
	assert_int_equal(n, 0);
	free(e);
}

static void
test_mark_read(void **state)
{
	struct fx		*f = *state;
	struct store_msg	 m;
	uint64_t		 ids[3];

	ids[0] = put_simple(f->st, "alice");
	ids[1] = 12345;		/* missing: skipped */
	ids[2] = put_simple(f->st, "alice");
	assert_int_equal(store_mark_read(f->st, ids, 3), 0);
	assert_int_equal(store_msg_get(f->st, ids[0], &m), STORE_OK);
	assert_int_equal(m.flags, STORE_F_READ);
	store_msg_free(&m);
	assert_int_equal(store_msg_get(f->st, ids[2], &m), STORE_OK);
	assert_int_equal(m.flags, STORE_F_READ);
	store_msg_free(&m);
	assert_int_equal(store_mark_read(f->st, ids, 3), 0);
	assert_int_equal(store_mark_read(f->st, ids, 0), 0);
}

static void
test_per_rcpt_delete(void **state)
{
	struct fx		*f = *state;
	const char		*ab[2] = { "alice", "bob" };
	struct store_entry	*e;
	struct store_msg	 m;
	size_t			 n;
	uint64_t		 id, other;

	id = put_text(f->st, HOST, "", ab, 2, "A: b\n", NULL);
	other = put_simple(f->st, "carol");
	/* alice's DELE+QUIT takes only alice's copy. */
	assert_int_equal(store_remove(f->st, &id, 1, "alice"), STORE_OK);
	assert_int_equal(store_msg_get(f->st, id, &m), STORE_OK);
	assert_int_equal(m.nrcpts, 1);
	assert_string_equal(m.rcpts[0], "bob");
	store_msg_free(&m);
	assert_true(spool_file_exists(f, id));
	assert_int_equal(store_list(f->st, HOST, "alice", &e, &n, NULL), 0);
	assert_int_equal(n, 0);
	free(e);
	assert_int_equal(store_list(f->st, HOST, "bob", &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	free(e);
	/* A user who is not a recipient changes nothing. */
	assert_int_equal(store_remove(f->st, &id, 1, "carol"), STORE_OK);
	assert_int_equal(store_msg_get(f->st, id, &m), STORE_OK);
	store_msg_free(&m);
	/* The last recipient takes the message. */
	assert_int_equal(store_remove(f->st, &id, 1, "BOB"), STORE_OK);
	assert_int_equal(store_msg_get(f->st, id, &m), STORE_GONE);
	assert_false(spool_file_exists(f, id));
	/* A host DELE takes the whole message; a missing id counts as done. */
	{
		uint64_t ids[2] = { other, 777 };

		assert_int_equal(store_remove(f->st, ids, 2, NULL), STORE_OK);
	}
	assert_int_equal(store_msg_get(f->st, other, &m), STORE_GONE);
	assert_false(spool_file_exists(f, other));
}

/* docs/design.md §4.2: QUIT and the SMTP markers, one message per case. */
enum op {
	OP_END, OP_CLAIM, OP_CLAIM2, OP_QUIT_HOST, OP_QUIT_ALICE, OP_QUIT_BOB,
	OP_RELEASE, OP_DONE, OP_EXPIRE, OP_LEASE0
};

enum mstate {
	M_LISTED,	/* in the host listing */
	M_HIDDEN,	/* record kept (POP_DELETED), not listed */
	M_GONE		/* no record, no file */
};

struct step {
	enum op		 op;
	enum store_res	 want;
	enum mstate	 after;
	uint32_t	 flags;		/* expected, unless M_GONE */
};

struct ccase {
	const char	*name;
	struct step	 steps[6];
};

#define ID	STORE_F_IN_DELIVERY
#define PD	STORE_F_POP_DELETED

static const struct ccase ccases[] = {
	{ "claimed + QUIT, then release", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_HOST, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_CLAIM2, STORE_GONE, M_HIDDEN, ID | PD },
		{ OP_RELEASE, STORE_OK, M_GONE, 0 },
		{ OP_RELEASE, STORE_GONE, M_GONE, 0 } } },
	{ "claimed + QUIT, then done", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_HOST, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_DONE, STORE_OK, M_GONE, 0 } } },
	{ "unclaimed + QUIT", {
		{ OP_QUIT_HOST, STORE_OK, M_GONE, 0 },
		{ OP_CLAIM, STORE_GONE, M_GONE, 0 },
		{ OP_DONE, STORE_GONE, M_GONE, 0 } } },
	{ "claimed, user QUIT leaves other recipients", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_ALICE, STORE_OK, M_LISTED, ID },
		{ OP_DONE, STORE_OK, M_GONE, 0 } } },
	{ "double claim", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_CLAIM2, STORE_BUSY, M_LISTED, ID },
		{ OP_RELEASE, STORE_OK, M_LISTED, 0 },
		{ OP_CLAIM2, STORE_OK, M_LISTED, ID } } },
	{ "expiry skips a live claim", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_EXPIRE, STORE_BUSY, M_LISTED, ID },
		{ OP_RELEASE, STORE_OK, M_LISTED, 0 },
		{ OP_EXPIRE, STORE_OK, M_GONE, 0 } } },
	/* Lease 0: every claim already made is stale; no clock needed. */
	{ "stale claim is taken over", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_LEASE0, STORE_OK, M_LISTED, ID },
		{ OP_CLAIM2, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_HOST, STORE_OK, M_GONE, 0 } } },
	{ "stale claim on a POP_DELETED message", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_HOST, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_LEASE0, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_CLAIM2, STORE_GONE, M_GONE, 0 } } },
	/*
	 * Issue 8 finding 9: user sessions that take the last recipient of
	 * a claimed message must leave a POP_DELETED record, as a host
	 * session does, that done and release then remove.
	 */
	{ "claimed, user QUITs take every recipient, then done", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_ALICE, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_BOB, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_CLAIM2, STORE_GONE, M_HIDDEN, ID | PD },
		{ OP_DONE, STORE_OK, M_GONE, 0 } } },
	{ "claimed, user QUITs take every recipient, then release", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_BOB, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_ALICE, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_RELEASE, STORE_OK, M_GONE, 0 },
		{ OP_RELEASE, STORE_GONE, M_GONE, 0 } } },
	{ "unclaimed, user QUITs take every recipient", {
		{ OP_QUIT_ALICE, STORE_OK, M_LISTED, 0 },
		{ OP_QUIT_BOB, STORE_OK, M_GONE, 0 },
		{ OP_CLAIM, STORE_GONE, M_GONE, 0 } } },
	{ "user QUIT after host QUIT under a claim changes nothing", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_HOST, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_QUIT_ALICE, STORE_OK, M_HIDDEN, ID | PD },
		{ OP_DONE, STORE_OK, M_GONE, 0 } } },
	{ "stale claim, user QUITs take every recipient", {
		{ OP_CLAIM, STORE_OK, M_LISTED, ID },
		{ OP_LEASE0, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_ALICE, STORE_OK, M_LISTED, ID },
		{ OP_QUIT_BOB, STORE_OK, M_GONE, 0 } } },
};

static bool
listed(struct store *st, uint64_t id)
{
	struct store_entry	*e;
	size_t			 n, i;
	bool			 found = false;

	assert_int_equal(store_list(st, HOST, NULL, &e, &n, NULL), 0);
	for (i = 0; i < n; i++)
		if (e[i].id == id)
			found = true;
	free(e);
	return found;
}

static enum store_res
run_op(struct fx *f, enum op op, uint64_t id)
{
	switch (op) {
	case OP_CLAIM:
		return store_claim(f->st, id, "smtp-1");
	case OP_CLAIM2:
		return store_claim(f->st, id, "smtp-2");
	case OP_QUIT_HOST:
		return store_remove(f->st, &id, 1, NULL);
	case OP_QUIT_ALICE:
		return store_remove(f->st, &id, 1, "alice");
	case OP_QUIT_BOB:
		return store_remove(f->st, &id, 1, "bob");
	case OP_RELEASE:
		return store_release(f->st, id);
	case OP_DONE:
		return store_done(f->st, id);
	case OP_EXPIRE:
		return store_expire(f->st, id);
	case OP_LEASE0:
		store_close(f->st);
		f->st = open_punt(f, 0);
		return f->st != NULL ? STORE_OK : STORE_TEMPFAIL;
	case OP_END:
		break;
	}
	return STORE_PERMFAIL;
}

static void
test_claim_table(void **state)
{
	struct fx		*f = *state;
	const char		*ab[2] = { "alice", "bob" };
	const struct ccase	*c;
	const struct step	*s;
	struct store_msg	 m;
	enum store_res		 r, g;
	size_t			 i, j;
	uint64_t		 id;
	int			 bad = 0, fd;

	for (i = 0; i < sizeof(ccases) / sizeof(ccases[0]); i++) {
		c = &ccases[i];
		id = put_text(f->st, HOST, "", ab, 2, "A: b\n", NULL);
		for (j = 0; j < 6 && c->steps[j].op != OP_END; j++) {
			s = &c->steps[j];
			if ((r = run_op(f, s->op, id)) != s->want) {
				print_error("%s, step %zu: got %d, want %d\n",
				    c->name, j, (int)r, (int)s->want);
				bad++;
			}
			assert_non_null(f->st);
			/* Every state a step leaves is a consistent punt. */
			if (store_fsck(f->st, false, NULL, NULL, NULL) != 0)
				bad++, print_error("%s, step %zu: fsck\n",
				    c->name, j);
			g = store_msg_get(f->st, id, &m);
			if (s->after == M_GONE) {
				if (g != STORE_GONE || spool_file_exists(f, id))
					bad++, print_error("%s, step %zu: "
					    "not gone\n", c->name, j);
				continue;
			}
			if (g != STORE_OK || m.flags != s->flags ||
			    listed(f->st, id) != (s->after == M_LISTED))
				bad++, print_error("%s, step %zu: state\n",
				    c->name, j);
			if (g == STORE_OK && s->after == M_HIDDEN &&
			    store_msg_open(f->st, id, &fd, NULL) != STORE_GONE)
				bad++, print_error("%s, step %zu: open\n",
				    c->name, j);
			/* The admin still sees every record's file. */
			if (g == STORE_OK) {
				if (store_msg_open_admin(f->st, id, &fd,
				    NULL) != STORE_OK)
					bad++, print_error("%s, step %zu: "
					    "admin open\n", c->name, j);
				else
					close(fd);
			}
			store_msg_free(&m);
		}
		/* Back to a normal lease for the next case. */
		store_close(f->st);
		assert_non_null(f->st = open_punt(f, 3600));
	}
	assert_int_equal(bad, 0);
	assert_int_equal(store_claim(f->st, 1, "bad agent"), STORE_PERMFAIL);
}

static void
count_line(const char *line, void *arg)
{
	(void)line;
	(*(int *)arg)++;
}

static void
write_file(const char *path, const char *text)
{
	int	 fd;

	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >=
	    0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void
test_fsck(void **state)
{
	struct fx		*f = *state;
	struct store_fsck	 k;
	struct store_msg	 m;
	char			 path[PATH_MAX + 64], orphan[PATH_MAX + 64];
	char			 tmp1[PATH_MAX + 64], tmp2[PATH_MAX + 64];
	uint64_t		 a, b, c;
	int			 lines = 0;

	a = put_simple(f->st, "alice");
	b = put_simple(f->st, "alice");
	c = put_simple(f->st, "alice");
	assert_int_equal(store_fsck(f->st, false, &k, NULL, NULL), 0);
	assert_int_equal(k.msgs_checked, 3);

	snprintf(orphan, sizeof(orphan), "%s/spool/bc/0000000000000abc",
	    f->punt);
	snprintf(path, sizeof(path), "%s/spool/bc", f->punt);
	mkdir(path, 0700);
	write_file(orphan, "X: y\r\n");
	snprintf(path, sizeof(path), "%s/spool/%02x/%016llx", f->punt,
	    (unsigned)(b & 0xff), (unsigned long long)b);
	assert_int_equal(unlink(path), 0);
	/* pid 999999999 is beyond pid_max: its writer cannot be alive. */
	snprintf(tmp1, sizeof(tmp1), "%s/tmp/999999999.1.0", f->punt);
	write_file(tmp1, "half");
	snprintf(tmp2, sizeof(tmp2), "%s/tmp/junk", f->punt);
	write_file(tmp2, "junk");
	snprintf(path, sizeof(path), "%s/spool/%02x/%016llx", f->punt,
	    (unsigned)(c & 0xff), (unsigned long long)c);
	write_file(path, "Subject: hi\r\n\r\n.. more\r\n");

	/* Without repair: everything found, nothing touched. */
	assert_int_equal(store_fsck(f->st, false, &k, count_line, &lines), 1);
	assert_int_equal(k.orphan_files, 1);
	assert_int_equal(k.missing_files, 1);
	assert_int_equal(k.size_mismatches, 1);
	assert_int_equal(k.tmp_files, 2);
	assert_int_equal(k.bad_records, 0);
	assert_int_equal(k.repaired, 0);
	assert_int_equal(lines, 5);
	assert_int_equal(access(orphan, F_OK), 0);
	assert_int_equal(access(tmp1, F_OK), 0);
	assert_int_equal(store_msg_get(f->st, b, &m), STORE_OK);
	store_msg_free(&m);

	assert_int_equal(store_fsck(f->st, true, &k, NULL, NULL), 0);
	assert_int_equal(k.repaired, 5);
	assert_int_equal(access(orphan, F_OK), -1);
	assert_int_equal(access(tmp1, F_OK), -1);
	assert_int_equal(access(tmp2, F_OK), -1);
	assert_int_equal(store_msg_get(f->st, b, &m), STORE_GONE);
	/* The size now follows the file: 24 stored, one stuffed dot. */
	assert_int_equal(store_msg_get(f->st, c, &m), STORE_OK);
	assert_int_equal(m.stored_octets, 24);
	assert_int_equal(m.octets, 23 +
	    strlen("Return-Path: <sender@example.org>\r\n"));
	store_msg_free(&m);
	assert_int_equal(store_msg_get(f->st, a, &m), STORE_OK);
	store_msg_free(&m);

	assert_int_equal(store_fsck(f->st, false, &k, NULL, NULL), 0);
	assert_int_equal(k.orphan_files + k.missing_files + k.size_mismatches +
	    k.tmp_files + k.bad_records, 0);
	assert_int_equal(k.msgs_checked, 2);
}

static void
be64(uint64_t id, unsigned char *k)
{
	int	 i;

	for (i = 7; i >= 0; i--, id >>= 8)
		k[i] = id & 0xff;
}

/* Open the punt's index raw, as another binary would (ours closed). */
static MDB_env *
raw_env(struct fx *f, MDB_txn **txn, MDB_dbi *dbi, const char *db)
{
	char		 dir[PATH_MAX + 8];
	MDB_env		*env;

	snprintf(dir, sizeof(dir), "%s/index", f->punt);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_set_maxreaders(env, 1024), 0);
	assert_int_equal(mdb_env_set_mapsize(env, MAP), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, txn), 0);
	assert_int_equal(mdb_dbi_open(*txn, db, 0, dbi), 0);
	return env;
}

static MDB_dbi
raw_dbi(MDB_txn *txn, const char *db)
{
	MDB_dbi	 dbi;

	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	return dbi;
}

/* The "rec" key of id, from its "id" entry. */
static void
raw_key(MDB_txn *txn, uint64_t id, unsigned char *k)
{
	MDB_val		 key, val;

	be64(id, k + REC_HPFX_LEN);
	key.mv_size = 8;
	key.mv_data = k + REC_HPFX_LEN;
	assert_int_equal(mdb_get(txn, raw_dbi(txn, "id"), &key, &val), 0);
	assert_int_equal(val.mv_size, REC_HPFX_LEN);
	memcpy(k, val.mv_data, REC_HPFX_LEN);
}

static void
raw_put(MDB_txn *txn, const char *db, const void *k, size_t klen,
    const void *v, size_t vlen)
{
	MDB_val		 key, val;

	key.mv_size = klen;
	key.mv_data = (void *)(uintptr_t)k;
	val.mv_size = vlen;
	val.mv_data = (void *)(uintptr_t)v;
	assert_int_equal(mdb_put(txn, raw_dbi(txn, db), &key, &val, 0), 0);
}

static void
raw_del(MDB_txn *txn, const char *db, const void *k, size_t klen)
{
	MDB_val		 key;

	key.mv_size = klen;
	key.mv_data = (void *)(uintptr_t)k;
	assert_int_equal(mdb_del(txn, raw_dbi(txn, db), &key, NULL), 0);
}

/*
 * Move id's record to the "rec" key (hid, arrival) with its id entry, as
 * a bug would; with set_arrival the record's own arrival too (then the
 * index is consistent again, only the order changes).
 */
static void
raw_rekey(MDB_txn *txn, uint64_t id, uint32_t hid, uint64_t arrival,
    bool set_arrival)
{
	unsigned char	 k[REC_HKEY_LEN], nk[REC_HKEY_LEN], buf[4096];
	MDB_val		 key, val;

	raw_key(txn, id, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	assert_int_equal(mdb_get(txn, raw_dbi(txn, "rec"), &key, &val), 0);
	assert_true(val.mv_size <= sizeof(buf));
	memcpy(buf, val.mv_data, val.mv_size);
	if (set_arrival)
		rec_put_le64(buf + 8, arrival);
	rec_hkey(hid, arrival, id, nk);
	raw_del(txn, "rec", k, sizeof(k));
	raw_put(txn, "rec", nk, sizeof(nk), buf, val.mv_size);
	raw_put(txn, "id", nk + REC_HPFX_LEN, 8, nk, REC_HPFX_LEN);
}

/*
 * Damage the format-2 index behind the store's back, as a bug or bit rot
 * would: drop no_id's id entry, add an id entry naming no record, an
 * undecodable record, and move wrong_host's record (and its id entry)
 * under another host's id.
 */
static void
damage_index(struct fx *f, uint64_t no_id, uint64_t wrong_host,
    uint32_t other_hid)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 id;
	uint64_t	 arrival;

	env = raw_env(f, &txn, &id, "id");
	be64(no_id, k);
	raw_del(txn, "id", k, 8);
	rec_hkey(1, 7, 0x99, k);
	raw_put(txn, "id", k + REC_HPFX_LEN, 8, k, REC_HPFX_LEN);
	/* Undecodable, of a known version: "x..." would be a newer one. */
	rec_hkey(1, 8, 0x55, k);
	raw_put(txn, "rec", k, sizeof(k), "\001x", 2);
	raw_put(txn, "id", k + REC_HPFX_LEN, 8, k, REC_HPFX_LEN);
	raw_key(txn, wrong_host, k);
	rec_hkey_split(k, NULL, &arrival, NULL);
	raw_rekey(txn, wrong_host, other_hid, arrival, false);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/*
 * Give record id another version octet, as a newer binary would have
 * written it; with len, also another length (a newer layout).
 */
static void
set_rec_version(struct fx *f, uint64_t id, unsigned char version,
    size_t len)
{
	unsigned char	 k[REC_HKEY_LEN], buf[4096];
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 rec;
	MDB_val		 key, val;

	env = raw_env(f, &txn, &rec, "rec");
	raw_key(txn, id, k);
	key.mv_size = sizeof(k);
	key.mv_data = k;
	assert_int_equal(mdb_get(txn, rec, &key, &val), 0);
	assert_true(val.mv_size <= sizeof(buf));
	memcpy(buf, val.mv_data, val.mv_size);
	buf[0] = version;
	if (len != 0)
		val.mv_size = len;
	val.mv_data = buf;
	assert_int_equal(mdb_put(txn, rec, &key, &val, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

struct lines {
	int	 n, unknown;
};

static void
grep_line(const char *line, void *arg)
{
	struct lines	*l = arg;

	l->n++;
	if (strstr(line, "unknown record version") != NULL &&
	    strstr(line, "left alone") != NULL)
		l->unknown++;
}

/*
 * Issue 9 item 5: a record of a version this binary does not know is
 * another binary's, not corruption.  fsck --repair (run before every
 * sdpsd start) used to delete it, and then its spool file as an orphan.
 */
static void
test_fsck_newer_record(void **state)
{
	struct fx		*f = *state;
	struct store_fsck	 k;
	struct store_entry	*e;
	struct store_msg	 m;
	struct lines		 l;
	uint64_t		 a, b, c, ids[2];
	size_t			 n;
	int			 pass, rc;

	a = put_simple(f->st, "alice");
	b = put_simple(f->st, "alice");
	c = put_simple(f->st, "alice");
	store_close(f->st);
	set_rec_version(f, a, 2, 0);
	set_rec_version(f, b, 255, 5);
	assert_non_null(f->st = open_punt(f, 3600));

	/* A session cannot show them, and does not remove them. */
	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_true(e[0].id == c);
	free(e);
	ids[0] = a;
	ids[1] = b;
	assert_int_equal(store_remove(f->st, ids, 2, NULL), STORE_OK);
	assert_int_equal(store_claim(f->st, a, "smtp"), STORE_PERMFAIL);
	assert_int_equal(store_expire(f->st, b), STORE_PERMFAIL);

	/* fsck, with repair first: reported, left alone, file and all. */
	for (pass = 0; pass < 2; pass++) {
		memset(&l, 0, sizeof(l));
		rc = store_fsck(f->st, pass == 0, &k, grep_line, &l);
		assert_true(spool_file_exists(f, a));
		assert_true(spool_file_exists(f, b));
		assert_int_equal(store_msg_get(f->st, a, &m), STORE_PERMFAIL);
		assert_int_equal(store_msg_get(f->st, b, &m), STORE_PERMFAIL);
		assert_int_equal(l.unknown, 2);
		assert_int_equal(l.n, 2);
		assert_int_equal(k.repaired, 0);
		assert_int_equal(k.bad_records + k.orphan_files +
		    k.missing_files + k.size_mismatches, 0);
		assert_int_equal(k.msgs_checked, 3);
		assert_int_equal(rc, 0);
	}

	/* The binary that knows the version finds them intact. */
	store_close(f->st);
	set_rec_version(f, a, 1, 0);
	assert_non_null(f->st = open_punt(f, 3600));
	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_true(e[0].id == a && e[1].id == c);
	free(e);
	assert_int_equal(store_msg_get(f->st, a, &m), STORE_OK);
	store_msg_free(&m);
}

static char *
slurp(const char *path, size_t *len)
{
	char	*buf;
	int	 fd;

	assert_true((fd = open(path, O_RDONLY)) >= 0);
	buf = read_fd(fd, len);
	close(fd);
	return buf;
}

/*
 * Turn f's format-2 index (one record) back into format 1 as a format-1
 * binary wrote it (docs/design.md §5.2): version 1, the record
 * in "msg" under its id and in "host", "rec"/"id"/"hosts" deleted.
 */
static void
make_format1(struct fx *f)
{
	unsigned char	 v[4] = { 1, 0, 0, 0 };
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 meta, host;
	MDB_cursor	*cur;
	MDB_val		 key, val, k2, v2;

	env = raw_env(f, &txn, &meta, "meta");
	assert_int_equal(mdb_cursor_open(txn, raw_dbi(txn, "rec"), &cur), 0);
	assert_int_equal(mdb_cursor_get(cur, &key, &val, MDB_FIRST), 0);
	k2.mv_size = 8;
	k2.mv_data = (unsigned char *)key.mv_data + REC_HPFX_LEN;
	assert_int_equal(mdb_put(txn, raw_dbi(txn, "msg"), &k2, &val, 0), 0);
	assert_int_equal(mdb_dbi_open(txn, "host", MDB_DUPSORT | MDB_DUPFIXED,
	    &host), 0);
	v2 = k2;
	k2.mv_size = strlen(HOST);
	k2.mv_data = HOST;
	assert_int_equal(mdb_put(txn, host, &k2, &v2, 0), 0);
	mdb_cursor_close(cur);
	assert_int_equal(mdb_drop(txn, raw_dbi(txn, "rec"), 1), 0);
	assert_int_equal(mdb_drop(txn, raw_dbi(txn, "id"), 1), 0);
	assert_int_equal(mdb_drop(txn, raw_dbi(txn, "hosts"), 1), 0);
	raw_del(txn, "meta", "next_hid", strlen("next_hid"));
	raw_put(txn, "meta", "version", strlen("version"), v, 4);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Mark f's punt as in the middle of its upgrade (meta "upgrade"). */
static void
make_upgrading(struct fx *f)
{
	unsigned char	 u[16] = { 0 };
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 meta;

	env = raw_env(f, &txn, &meta, "meta");
	raw_put(txn, "meta", "upgrade", strlen("upgrade"), u, sizeof(u));
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Reshape f's punt with fn, open it: refused, data.mdb unchanged. */
static void
open_refused(struct fx *f, void (*fn)(struct fx *), char *err, size_t errlen)
{
	struct store_opts o = { MAP, 3600 };
	char		 path[PATH_MAX + 32];
	char		*before, *after;
	size_t		 blen, alen;

	(void)put_simple(f->st, "alice");
	store_close(f->st);
	f->st = NULL;
	fn(f);
	snprintf(path, sizeof(path), "%s/index/data.mdb", f->punt);
	before = slurp(path, &blen);
	err[0] = '\0';
	assert_null(store_open(f->punt, "p1", &o, err, errlen));
	after = slurp(path, &alen);
	assert_true(alen == blen && memcmp(before, after, blen) == 0);
	free(before);
	free(after);
}

/* Give f's punt a format version from the future. */
static void
make_newer(struct fx *f)
{
	unsigned char	 v[4] = { 3, 0, 0, 0 };
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 meta;

	env = raw_env(f, &txn, &meta, "meta");
	raw_put(txn, "meta", "version", strlen("version"), v, 4);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* A punt of a newer format: refused clearly, and nothing changed. */
static void
test_newer_punt_format(void **state)
{
	char	 err[512];

	open_refused(*state, make_newer, err, sizeof(err));
	assert_non_null(strstr(err, "format version 3"));
	assert_non_null(strstr(err, "newer"));
	assert_non_null(strstr(err, "nothing changed"));
}

/* A format-1 punt: refused with the command that upgrades it. */
static void
test_format1_refused(void **state)
{
	char	 err[512];

	open_refused(*state, make_format1, err, sizeof(err));
	assert_non_null(strstr(err, "punt format 1"));
	assert_non_null(strstr(err, "sdps-ctl punt upgrade p1"));
	assert_non_null(strstr(err, "nothing changed"));
}

/* A punt whose upgrade was interrupted: refused, says how to go on. */
static void
test_upgrade_marker_refused(void **state)
{
	char	 err[512];

	open_refused(*state, make_upgrading, err, sizeof(err));
	assert_non_null(strstr(err, "upgrade in progress"));
	assert_non_null(strstr(err, "sdps-ctl punt upgrade p1 finishes it"));
	assert_non_null(strstr(err, "--abort"));
	assert_null(strstr(err, "newer"));
}

/*
 * A new punt is format 2 and keeps format 1's "msg" and "host", empty:
 * a format-1 binary opens them before its version check, and without
 * them would refuse with MDB_NOTFOUND instead of "newer"
 * (docs/design.md §5.2).
 */
static void
test_create_format2(void **state)
{
	struct fx	*f = *state;
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 meta, host;
	MDB_stat	 ms;
	MDB_val		 key, val;

	(void)put_simple(f->st, "alice");
	store_close(f->st);
	f->st = NULL;
	env = raw_env(f, &txn, &meta, "meta");
	key.mv_size = strlen("version");
	key.mv_data = "version";
	assert_int_equal(mdb_get(txn, meta, &key, &val), 0);
	assert_int_equal(rec_get_le32(val.mv_data), 2);
	key.mv_size = strlen("next_hid");
	key.mv_data = "next_hid";
	assert_int_equal(mdb_get(txn, meta, &key, &val), 0);
	assert_int_equal(val.mv_size, 4);
	assert_int_equal(rec_get_le32(val.mv_data), 2);
	assert_int_equal(mdb_stat(txn, raw_dbi(txn, "msg"), &ms), 0);
	assert_int_equal(ms.ms_entries, 0);
	assert_int_equal(mdb_dbi_open(txn, "host", MDB_DUPSORT | MDB_DUPFIXED,
	    &host), 0);
	assert_int_equal(mdb_stat(txn, host, &ms), 0);
	assert_int_equal(ms.ms_entries, 0);
	assert_int_equal(mdb_stat(txn, raw_dbi(txn, "rec"), &ms), 0);
	assert_int_equal(ms.ms_entries, 1);
	assert_int_equal(mdb_stat(txn, raw_dbi(txn, "id"), &ms), 0);
	assert_int_equal(ms.ms_entries, 1);
	assert_int_equal(mdb_stat(txn, raw_dbi(txn, "hosts"), &ms), 0);
	assert_int_equal(ms.ms_entries, 1);
	mdb_txn_abort(txn);
	mdb_env_close(env);
}

/* Give a, b, c the arrivals ta, tb, tc (records and keys). */
static void
set_arrivals(struct fx *f, const uint64_t *ids, const uint64_t *t, size_t n)
{
	unsigned char	 k[REC_HKEY_LEN];
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 rec;
	size_t		 i;

	env = raw_env(f, &txn, &rec, "rec");
	for (i = 0; i < n; i++) {
		raw_key(txn, ids[i], k);
		raw_rekey(txn, ids[i], rec_key_hid(k), t[i], true);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/*
 * A listing comes out in arrival order, then id (store.h), not in id
 * order: the maildrop's merge order, so its sort gets sorted input.
 */
static void
test_list_order(void **state)
{
	struct fx		*f = *state;
	const char		*ab[2] = { "alice", "bob" }, *b[1] = { "bob" };
	struct store_entry	*e;
	struct store_fsck	 k;
	uint64_t		 ids[4], t[4] = { 300, 100, 100, 50 };
	size_t			 n;

	ids[0] = put_text(f->st, HOST, "", ab, 2, "A: 1\n", NULL);
	ids[1] = put_text(f->st, HOST, "", b, 1, "A: 2\n", NULL);
	ids[2] = put_simple(f->st, "alice");
	ids[3] = put_text(f->st, "jim.example.net", "", b, 1, "A: 4\n", NULL);
	store_close(f->st);
	set_arrivals(f, ids, t, 4);
	assert_non_null(f->st = open_punt(f, 3600));
	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 3);
	assert_true(e[0].id == ids[1] && e[1].id == ids[2] &&
	    e[2].id == ids[0]);
	assert_true(e[0].arrival_us == 100 && e[2].arrival_us == 300);
	free(e);
	/* The user filter in the same scan: bob's two, in arrival order. */
	assert_int_equal(store_list(f->st, HOST, "bob", &e, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_true(e[0].id == ids[1] && e[1].id == ids[0]);
	free(e);
	assert_int_equal(store_list(f->st, "jim.example.net", NULL, &e, &n,
	    NULL), 0);
	assert_int_equal(n, 1);
	assert_true(e[0].id == ids[3]);
	free(e);
	assert_int_equal(store_list(f->st, "nobody.example.net", NULL, &e, &n,
	    NULL), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_fsck(f->st, false, &k, NULL, NULL), 0);
}

static int
count_any_host(const char *host, uint64_t msgs, void *arg)
{
	(void)host;
	*(uint64_t *)arg += msgs;
	return 0;
}

/*
 * Format-2 index faults (docs/design.md §5.7): an id entry missing, a
 * stray id entry, an undecodable record, a record under another host's
 * key.  fsck finds the four, repair fixes them, a second fsck is clean.
 */
static void
test_fsck_index(void **state)
{
	struct fx		*f = *state;
	struct store_fsck	 k;
	struct store_entry	*e;
	struct store_msg	 m;
	size_t			 n;
	uint64_t		 a, b, c, total = 0;

	a = put_simple(f->st, "alice");
	b = put_simple(f->st, "alice");
	c = put_text(f->st, "jim.example.net", "", (const char *[]){ "x" }, 1,
	    "A: b\n", NULL);
	/* LMDB: never two handles on one env in a process; close ours. */
	store_close(f->st);
	damage_index(f, a, b, 2);	/* jim's host id */
	assert_non_null(f->st = open_punt(f, 3600));
	/* a is listed (its key) but not found by id; b is in jim's range. */
	assert_int_equal(store_msg_get(f->st, a, &m), STORE_GONE);
	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_true(e[0].id == a);
	free(e);

	assert_int_equal(store_fsck(f->st, false, &k, NULL, NULL), 1);
	assert_int_equal(k.bad_records, 4);
	assert_int_equal(k.repaired, 0);
	assert_int_equal(store_fsck(f->st, true, &k, NULL, NULL), 0);
	assert_int_equal(k.bad_records, 4);
	assert_int_equal(k.repaired, 4);
	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_true(e[0].id == a && e[1].id == b);
	free(e);
	assert_int_equal(store_list(f->st, "jim.example.net", NULL, &e, &n,
	    NULL), 0);
	assert_int_equal(n, 1);
	assert_true(e[0].id == c);
	free(e);
	assert_int_equal(store_msg_get(f->st, a, &m), STORE_OK);
	store_msg_free(&m);
	assert_int_equal(store_msg_get(f->st, 0x99, &m), STORE_GONE);
	assert_int_equal(store_hosts(f->st, count_any_host, &total), 0);
	assert_int_equal(total, 3);
	assert_int_equal(store_fsck(f->st, false, &k, NULL, NULL), 0);
	assert_int_equal(k.bad_records, 0);
}

static void
test_put_tempfail(void **state)
{
	struct fx		*f = *state;
	const char		*r[1] = { "alice" };
	struct store_envelope	 env = { HOST, "", r, 1 };
	struct store_stat	 s0, s1;
	struct store_entry	*e;
	char			 tmp[PATH_MAX + 8], err[256];
	size_t			 n;
	uint64_t		 id = 0;

	(void)put_simple(f->st, "alice");
	assert_int_equal(store_stat(f->st, &s0), 0);
	/* Root ignores modes, so make tmp/ unusable by making it a file. */
	snprintf(tmp, sizeof(tmp), "%s/tmp", f->punt);
	assert_int_equal(rmdir(tmp), 0);
	write_file(tmp, "");
	err[0] = '\0';
	assert_int_equal(store_put(f->st, &env, "A: b\r\n", 6, 6, &id, err,
	    sizeof(err)), STORE_TEMPFAIL);
	assert_true(err[0] != '\0');
	assert_int_equal(store_stat(f->st, &s1), 0);
	assert_int_equal(s1.msgs, s0.msgs);
	assert_int_equal(s1.next_id, s0.next_id);
	assert_int_equal(store_list(f->st, HOST, NULL, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	free(e);
	assert_int_equal(unlink(tmp), 0);
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_int_equal(store_put(f->st, &env, "A: b\r\n", 6, 6, &id, err,
	    sizeof(err)), STORE_OK);
}

static void
test_bad_envelope(void **state)
{
	struct fx		*f = *state;
	const char		*r[1] = { "alice" }, *bad[1] = { "a b" };
	struct store_envelope	 e1 = { "Fred.Example.Net", "", r, 1 };
	struct store_envelope	 e2 = { HOST, "", r, 0 };
	struct store_envelope	 e3 = { HOST, "", bad, 1 };
	struct store_envelope	 e4 = { HOST, "a@b.org\r\nX: y", r, 1 };
	struct store_stat	 s;
	char			 err[256];
	uint64_t		 id;

	assert_int_equal(store_put(f->st, &e1, "A: b\r\n", 6, 6, &id, err,
	    sizeof(err)), STORE_PERMFAIL);
	assert_int_equal(store_put(f->st, &e2, "A: b\r\n", 6, 6, &id, err,
	    sizeof(err)), STORE_PERMFAIL);
	assert_int_equal(store_put(f->st, &e3, "A: b\r\n", 6, 6, &id, err,
	    sizeof(err)), STORE_PERMFAIL);
	assert_int_equal(store_put(f->st, &e4, "A: b\r\n", 6, 6, &id, err,
	    sizeof(err)), STORE_PERMFAIL);
	assert_int_equal(store_stat(f->st, &s), 0);
	assert_int_equal(s.msgs, 0);
	assert_int_equal(s.next_id, 1);
}

static void
test_available(void **state)
{
	struct fx	*f = *state;
	char		 moved[PATH_MAX + 8];

	assert_true(store_is_available(f->st));
	snprintf(moved, sizeof(moved), "%s/moved", f->dir);
	assert_int_equal(rename(f->punt, moved), 0);
	assert_false(store_is_available(f->st));
	/* Another directory at the same path is not the opened punt. */
	assert_int_equal(mkdir(f->punt, 0700), 0);
	assert_false(store_is_available(f->st));
	assert_int_equal(rmdir(f->punt), 0);
	assert_int_equal(rename(moved, f->punt), 0);
	assert_true(store_is_available(f->st));
	store_reader_check(f->st);
}

static int
count_msg(const struct store_msg *m, void *arg)
{
	(void)m;
	(*(int *)arg)++;
	return 0;
}

static int
count_host(const char *host, uint64_t msgs, void *arg)
{
	if (strcmp(host, HOST) == 0)
		*(uint64_t *)arg = msgs;
	return 0;
}

static void
test_stat_walk_hosts(void **state)
{
	struct fx		*f = *state;
	const char		*r[1] = { "alice" };
	struct store_stat	 s;
	uint64_t		 id, fred = 0;
	int			 all = 0, some = 0;

	id = put_simple(f->st, "alice");
	(void)put_simple(f->st, "bob");
	(void)put_text(f->st, "jim.example.net", "", r, 1, "A: b\n", NULL);
	assert_int_equal(store_mark_read(f->st, &id, 1), 0);
	assert_int_equal(store_claim(f->st, id, "smtp"), STORE_OK);
	assert_int_equal(store_stat(f->st, &s), 0);
	assert_int_equal(s.msgs, 3);
	assert_int_equal(s.hosts, 2);
	assert_int_equal(s.read, 1);
	assert_int_equal(s.in_delivery, 1);
	assert_int_equal(s.next_id, 4);
	assert_true(s.map_used > 0 && s.map_size >= MAP);
	assert_int_equal(store_walk(f->st, NULL, count_msg, &all), 0);
	assert_int_equal(all, 3);
	assert_int_equal(store_walk(f->st, HOST, count_msg, &some), 0);
	assert_int_equal(some, 2);
	assert_int_equal(store_hosts(f->st, count_host, &fred), 0);
	assert_int_equal(fred, 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_open, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_put_get_open, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_uidl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_listing, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_mark_read, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_per_rcpt_delete, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_claim_table, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_fsck, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fsck_index, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_fsck_newer_record, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_newer_punt_format, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_format1_refused,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_marker_refused,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_format2, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_list_order, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_put_tempfail, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_envelope, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_available, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_stat_walk_hosts, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
