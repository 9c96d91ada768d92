/* Unit tests for pop3: the line reader and writer over a real socketpair. */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
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

#include "sdps/pop3.h"
#include "sdps/util.h"

struct fix {
	int			 sv[2];	/* [0] the conn's side, [1] the peer */
	struct pop3_conn	 c;
	volatile sig_atomic_t	 kill;
};

static int
setup(void **state)
{
	struct fix	*f;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, f->sv) == -1)
		return -1;
	if (pop3_init(&f->c, f->sv[0], POP3_LINE_MAX, 5, 5, &f->kill) == -1)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix	*f = *state;

	pop3_free(&f->c);
	close(f->sv[0]);
	if (f->sv[1] != -1)
		close(f->sv[1]);
	free(f);
	return 0;
}

static void
peer_send(struct fix *f, const void *p, size_t len)
{
	assert_int_equal(write(f->sv[1], p, len), (ssize_t)len);
}

/* Read exactly len octets the conn sent (with a hang guard). */
static void
peer_recv(struct fix *f, char *buf, size_t len)
{
	struct pollfd	 pfd = { .fd = f->sv[1], .events = POLLIN };
	size_t		 got = 0;
	ssize_t		 n;

	while (got < len) {
		assert_true(poll(&pfd, 1, 10000) == 1);
		n = read(f->sv[1], buf + got, len - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
}

static void
expect_line(struct fix *f, const char *want)
{
	char	*line;
	size_t	 len;

	assert_int_equal(pop3_read_line(&f->c, &line, &len), POP3_OK);
	assert_int_equal(len, strlen(want));
	assert_string_equal(line, want);
}

static void
test_pipelined_one_read(void **state)
{
	struct fix	*f = *state;
	const char	 in[] = "USER fred.example.net\r\nPASS a b  c\r\nSTAT\r\n";

	peer_send(f, in, sizeof(in) - 1);
	expect_line(f, "USER fred.example.net");
	/* The other two came with the same read: no syscall per line. */
	assert_int_equal(f->c.rlen, sizeof(in) - 1);
	assert_true(pop3_line_pending(&f->c));
	expect_line(f, "PASS a b  c");
	assert_true(pop3_line_pending(&f->c));
	expect_line(f, "STAT");
	assert_false(pop3_line_pending(&f->c));
}

static void
test_bare_lf(void **state)
{
	struct fix	*f = *state;

	peer_send(f, "STAT\nLIST 1\r\n\n", 14);
	expect_line(f, "STAT");
	expect_line(f, "LIST 1");
	expect_line(f, "");
}

static void
test_line_limit_exact(void **state)
{
	struct fix	*f = *state;
	char		 buf[600];

	/* 253 + CRLF = 255 octets: allowed. */
	memset(buf, 'a', 253);
	memcpy(buf + 253, "\r\n", 2);
	peer_send(f, buf, 255);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_OK);
	/* 254 + CRLF = 256: too long, then the stream goes on. */
	memset(buf, 'b', 254);
	memcpy(buf + 254, "\r\nNOOP\r\n", 8);
	peer_send(f, buf, 262);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_TOO_LONG);
	expect_line(f, "NOOP");
	/* A bare LF counts as if it were CRLF: 254 + LF is too long. */
	memset(buf, 'c', 254);
	memcpy(buf + 254, "\nSTAT\r\n", 7);
	peer_send(f, buf, 261);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_TOO_LONG);
	expect_line(f, "STAT");
}

static void *
flood_thread(void *arg)
{
	struct fix	*f = arg;
	char		 chunk[1000];
	int		 i;

	memset(chunk, 'z', sizeof(chunk));
	for (i = 0; i < 100; i++)
		if (write(f->sv[1], chunk, sizeof(chunk)) !=
		    (ssize_t)sizeof(chunk))
			return NULL;
	(void)!write(f->sv[1], "\r\nQUIT\r\n", 8);
	return NULL;
}

static void
test_long_flood(void **state)
{
	struct fix	*f = *state;
	pthread_t	 t;

	/* 100000 octets in many reads: one report, no growth. */
	assert_int_equal(pthread_create(&t, NULL, flood_thread, f), 0);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_TOO_LONG);
	expect_line(f, "QUIT");
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(f->c.rcap <= 4096);
}

static void
test_nul(void **state)
{
	struct fix	*f = *state;

	peer_send(f, "NO\0OP\r\nNOOP\r\n", 13);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_NUL);
	expect_line(f, "NOOP");
}

static void
test_eof(void **state)
{
	struct fix	*f = *state;

	peer_send(f, "STAT\r\nLIS", 9);
	close(f->sv[1]);
	f->sv[1] = -1;
	expect_line(f, "STAT");
	/* A partial last line is not a command. */
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_EOF);
}

static void
test_idle_timeout(void **state)
{
	struct fix	*f = *state;

	f->c.idle_timeout_s = 1;
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_TIMEOUT);
}

/* Writes one octet of an endless line every 200 ms, up to 60 (12 s),
 * until told to stop; counts what it wrote. */
struct trickle {
	struct fix		*f;
	volatile int		 stop;
	int			 sent;
};

static void *
trickle_thread(void *arg)
{
	struct trickle	*t = arg;

	while (!t->stop && t->sent < 60) {
		if (write(t->f->sv[1], "x", 1) != 1)
			break;
		t->sent++;
		(void)poll(NULL, 0, 200);
	}
	return NULL;
}

/*
 * Issue 8: the idle timer is per line.  Octets that never end a line
 * arrive every 200 ms with a 1 s idle timeout: the read must time out
 * while the trickle is still going (before, each octet re-armed the
 * timer and the read only ended once the writer stopped, 12 s later).
 */
static void
test_idle_timeout_per_line(void **state)
{
	struct fix	*f = *state;
	struct trickle	 t = { .f = f };
	pthread_t	 th;

	f->c.idle_timeout_s = 1;
	assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_TIMEOUT);
	t.stop = 1;
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(t.sent < 60);
}

/* pop3_set_deadline: past it, only lines already in the conn's buffer
 * are returned, even with more input waiting; 0 lifts it. */
static void
test_overall_deadline(void **state)
{
	struct fix	*f = *state;

	f->c.idle_timeout_s = 0;
	pop3_set_deadline(&f->c, 1);
	peer_send(f, "CAPA\r\nCAPA\r\n", 12);
	expect_line(f, "CAPA");
	f->c.deadline_ms -= 2000;	/* as if a second had long passed */
	expect_line(f, "CAPA");
	peer_send(f, "USER x\r\n", 8);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_TIMEOUT);
	pop3_set_deadline(&f->c, 0);
	expect_line(f, "USER x");
}

static void
test_killed(void **state)
{
	struct fix	*f = *state;

	f->kill = 1;
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_KILLED);
	assert_int_equal(pop3_sleep_ms(&f->c, 60000), POP3_KILLED);
}

static void
test_read_flushes_replies_in_order(void **state)
{
	struct fix	*f = *state;
	char		 buf[32];

	peer_send(f, "A\r\nB\r\n", 6);
	expect_line(f, "A");
	assert_int_equal(pop3_write(&f->c, "+OK a\r\n", 7), 0);
	expect_line(f, "B");
	assert_int_equal(pop3_write(&f->c, "+OK b\r\n", 7), 0);
	/* Both replies are still batched: nothing was sent yet. */
	assert_int_equal(f->c.octets_out, 0);
	/* Waiting for the next command sends them, in order. */
	shutdown(f->sv[1], SHUT_WR);
	assert_int_equal(pop3_read_line(&f->c, &(char *){ NULL },
	    &(size_t){ 0 }), POP3_EOF);
	assert_int_equal(f->c.octets_out, 14);
	memset(buf, 0, sizeof(buf));
	peer_recv(f, buf, 14);
	assert_string_equal(buf, "+OK a\r\n+OK b\r\n");
}

static const struct {
	const char	*in;
	const char	*out;
} stuff_rows[] = {
	{ "plain\n", "plain\r\n" },
	{ ".dot\n", "..dot\r\n" },
	{ "..two\r\n", "...two\r\n" },
	{ ".\n", "..\r\n" },
	{ "a\nb", "a\r\nb\r\n" },
	{ "\n.\n\n", "\r\n..\r\n\r\n" },
	{ "mid.dle\n", "mid.dle\r\n" },
	{ "x\r\n.y\r\n", "x\r\n..y\r\n" },
};

static void
test_writer_stuffing(void **state)
{
	struct fix	*f = *state;
	char		 got[64];
	size_t		 i, want;

	for (i = 0; i < NITEMS(stuff_rows); i++) {
		want = strlen(stuff_rows[i].out);
		assert_int_equal(pop3_ml_text(&f->c, stuff_rows[i].in,
		    strlen(stuff_rows[i].in)), 0);
		assert_int_equal(pop3_flush(&f->c), 0);
		memset(got, 0, sizeof(got));
		peer_recv(f, got, want);
		if (strcmp(got, stuff_rows[i].out) != 0)
			fail_msg("row %zu: got \"%s\"", i, got);
	}
	assert_int_equal(pop3_ml_line(&f->c, ".", 1), 0);
	assert_int_equal(pop3_ml_end(&f->c), 0);
	assert_int_equal(pop3_flush(&f->c), 0);
	memset(got, 0, sizeof(got));
	peer_recv(f, got, 7);
	assert_string_equal(got, "..\r\n.\r\n");
}

static void
test_sendfile(void **state)
{
	struct fix	*f = *state;
	char		 path[] = "/tmp/test_pop3.XXXXXX";
	char		 body[3000], got[4000];
	size_t		 i;
	int		 fd;

	for (i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	assert_true((fd = mkstemp(path)) != -1);
	unlink(path);
	assert_int_equal(write(fd, body, sizeof(body)), sizeof(body));
	assert_int_equal(pop3_printf(&f->c, "+OK %zu octets\r\n",
	    sizeof(body)), 0);
	assert_int_equal(pop3_sendfile(&f->c, fd, 0, sizeof(body)), 0);
	assert_int_equal(pop3_ml_end(&f->c), 0);
	assert_int_equal(pop3_flush(&f->c), 0);
	assert_int_equal(f->c.octets_out, 17 + sizeof(body) + 3);
	peer_recv(f, got, 17 + sizeof(body) + 3);
	assert_memory_equal(got, "+OK 3000 octets\r\n", 17);
	assert_memory_equal(got + 17, body, sizeof(body));
	assert_memory_equal(got + 17 + sizeof(body), ".\r\n", 3);
	/* A file shorter than promised fails the connection. */
	assert_int_equal(pop3_sendfile(&f->c, fd, 0, sizeof(body) + 10), -1);
	assert_int_equal(f->c.werr, POP3_ERR);
	assert_int_equal(pop3_write(&f->c, "x", 1), -1);
	close(fd);
}

static void
test_send_timeout(void **state)
{
	struct fix	*f = *state;
	char		 chunk[8192];
	int		 i, rc = 0;

	/* A peer that never reads: the writer gives up, not hangs. */
	f->c.send_timeout_s = 1;
	memset(chunk, 'q', sizeof(chunk));
	for (i = 0; i < 10000 && rc == 0; i++)
		rc = pop3_write(&f->c, chunk, sizeof(chunk));
	if (rc == 0)
		rc = pop3_flush(&f->c);
	assert_int_equal(rc, -1);
	assert_int_equal(f->c.werr, POP3_TIMEOUT);
}

static void
test_peer_gone_write(void **state)
{
	struct fix	*f = *state;

	signal(SIGPIPE, SIG_IGN);
	close(f->sv[1]);
	f->sv[1] = -1;
	assert_int_equal(pop3_write(&f->c, "+OK\r\n", 5), 0);
	assert_int_equal(pop3_flush(&f->c), -1);
	assert_int_equal(f->c.werr, POP3_EOF);
}

static const struct {
	const char	*line;
	bool		 whole;
	const char	*kw;		/* NULL: no keyword */
	int		 argc;		/* -1: pop3_split fails */
	const char	*argv[POP3_ARGS_MAX];
} split_rows[] = {
	{ "STAT", false, "STAT", 0, { NULL } },
	{ "LIST 1", false, "LIST", 1, { "1" } },
	{ "TOP 1 10", false, "TOP", 2, { "1", "10" } },
	{ "TOP  1   10  ", false, "TOP", 2, { "1", "10" } },
	{ "PASS a secret with spaces", true, "PASS", 1,
	    { "a secret with spaces" } },
	{ "PASS  lead", true, "PASS", 1, { " lead" } },
	{ "PASS", true, "PASS", 0, { NULL } },
	{ "PASS ", true, "PASS", 0, { NULL } },
	{ "X a b c d", false, "X", 4, { "a", "b", "c", "d" } },
	{ "X a b c d e", false, "X", -1, { NULL } },
	{ "", false, NULL, 0, { NULL } },
	{ " STAT", false, NULL, 0, { NULL } },
	{ "*ENV 3", false, "*ENV", 1, { "3" } },
};

static void
test_split_table(void **state)
{
	struct pop3_args	 a;
	char			 buf[128], *kw, *rest;
	size_t			 i;
	int			 j, rc;

	(void)state;
	for (i = 0; i < NITEMS(split_rows); i++) {
		snprintf(buf, sizeof(buf), "%s", split_rows[i].line);
		kw = pop3_keyword(buf, &rest);
		if (split_rows[i].kw == NULL) {
			if (kw != NULL)
				fail_msg("row %zu: keyword %s", i, kw);
			continue;
		}
		if (kw == NULL || strcmp(kw, split_rows[i].kw) != 0)
			fail_msg("row %zu: keyword", i);
		rc = pop3_split(rest, split_rows[i].whole, &a);
		if (split_rows[i].argc == -1) {
			if (rc != -1)
				fail_msg("row %zu: split accepted", i);
			continue;
		}
		if (rc != 0 || a.argc != split_rows[i].argc)
			fail_msg("row %zu: argc %d", i, a.argc);
		for (j = 0; j < a.argc; j++)
			if (strcmp(a.argv[j], split_rows[i].argv[j]) != 0)
				fail_msg("row %zu: argv[%d] \"%s\"", i, j,
				    a.argv[j]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pipelined_one_read,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_bare_lf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_limit_exact, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_long_flood, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_nul, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_timeout, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_idle_timeout_per_line,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_overall_deadline, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_killed, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_read_flushes_replies_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_stuffing, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_sendfile, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_send_timeout, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_peer_gone_write, setup,
		    teardown),
		cmocka_unit_test(test_split_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
