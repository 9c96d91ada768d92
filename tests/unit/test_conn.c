/* Unit tests for conn: the line reader and writer over a real socketpair,
 * and a client connection over loopback TCP. */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netinet/in.h>

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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/conn.h"
#include "sdps/util.h"

struct fix {
	int			 sv[2];	/* [0] the conn's side, [1] the peer */
	struct conn	*c;
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
	if ((f->c = conn_new(f->sv[0], POP3_LINE_MAX, 5, 5, &f->kill)) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix	*f = *state;

	conn_free(f->c);
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

	assert_int_equal(conn_read_line(f->c, &line, &len), CONN_OK);
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
	assert_int_equal(conn_input_buffered(f->c), sizeof(in) - 1 - 23);
	assert_true(conn_line_pending(f->c));
	expect_line(f, "PASS a b  c");
	assert_true(conn_line_pending(f->c));
	expect_line(f, "STAT");
	assert_false(conn_line_pending(f->c));
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

/* conn_last_eol: how each line ended, also for consumed bad lines. */
static void
test_eol_reported(void **state)
{
	struct fix	*f = *state;
	char		 buf[300];

	peer_send(f, "A\r\nB\n\r\n\n", 9);
	expect_line(f, "A");
	assert_int_equal(conn_last_eol(f->c), CONN_EOL_CRLF);
	expect_line(f, "B");
	assert_int_equal(conn_last_eol(f->c), CONN_EOL_LF);
	expect_line(f, "");
	assert_int_equal(conn_last_eol(f->c), CONN_EOL_CRLF);
	expect_line(f, "");
	assert_int_equal(conn_last_eol(f->c), CONN_EOL_LF);
	/* A NUL line and a too-long one still report their end. */
	peer_send(f, "x\0y\n", 4);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_NUL);
	assert_int_equal(conn_last_eol(f->c), CONN_EOL_LF);
	memset(buf, 'a', 260);
	memcpy(buf + 260, "\r\n", 2);
	peer_send(f, buf, 262);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_TOO_LONG);
	assert_int_equal(conn_last_eol(f->c), CONN_EOL_CRLF);
}

/* A client connection over loopback TCP: both directions, and a refused
 * port gives NULL, not a hang. */
static void
test_client_connect(void **state)
{
	struct sockaddr_in	 sin = { .sin_family = AF_INET };
	socklen_t		 sl = sizeof(sin);
	struct conn		*c;
	char			 target[64], buf[16], *line;
	size_t			 len;
	int			 ls, as;

	(void)state;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true((ls = socket(AF_INET, SOCK_STREAM, 0)) != -1);
	assert_int_equal(bind(ls, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(ls, 1), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)&sin, &sl), 0);
	snprintf(target, sizeof(target), "127.0.0.1:%u",
	    (unsigned)ntohs(sin.sin_port));
	c = conn_connect(target, 10, 1000, 10, 10, NULL);
	assert_non_null(c);
	assert_string_equal(conn_peer(c), target);
	assert_true((as = accept(ls, NULL, NULL)) != -1);
	assert_int_equal(write(as, "220 hi\r\n", 8), 8);
	assert_int_equal(conn_read_line(c, &line, &len), CONN_OK);
	assert_string_equal(line, "220 hi");
	assert_int_equal(conn_printf(c, "EHLO %s\r\n", "me"), 0);
	assert_int_equal(conn_flush(c), 0);
	assert_int_equal(read(as, buf, 9), 9);
	assert_memory_equal(buf, "EHLO me\r\n", 9);
	close(as);
	assert_int_equal(conn_read_line(c, &line, &len), CONN_EOF);
	conn_free(c);		/* closes the socket it made */
	close(ls);
	/* Nothing listens there any more. */
	assert_null(conn_connect(target, 10, 1000, 10, 10, NULL));
	assert_null(conn_connect("no-port", 10, 1000, 10, 10, NULL));
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
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_OK);
	/* 254 + CRLF = 256: too long, then the stream goes on. */
	memset(buf, 'b', 254);
	memcpy(buf + 254, "\r\nNOOP\r\n", 8);
	peer_send(f, buf, 262);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_TOO_LONG);
	expect_line(f, "NOOP");
	/* A bare LF counts as if it were CRLF: 254 + LF is too long. */
	memset(buf, 'c', 254);
	memcpy(buf + 254, "\nSTAT\r\n", 7);
	peer_send(f, buf, 261);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_TOO_LONG);
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
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_TOO_LONG);
	expect_line(f, "QUIT");
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(conn_input_capacity(f->c) <= 4096);
}

static void
test_nul(void **state)
{
	struct fix	*f = *state;

	peer_send(f, "NO\0OP\r\nNOOP\r\n", 13);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_NUL);
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
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_EOF);
}

static void
test_idle_timeout(void **state)
{
	struct fix	*f = *state;

	conn_set_timeouts(f->c, 1, 5);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_TIMEOUT);
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

	conn_set_timeouts(f->c, 1, 5);
	assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_TIMEOUT);
	t.stop = 1;
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(t.sent < 60);
}

/* conn_set_deadline_ms: past it, only lines already in the conn's buffer
 * are returned, even with more input waiting; 0 lifts it. */
static void
test_overall_deadline(void **state)
{
	struct fix	*f = *state;

	conn_set_timeouts(f->c, 0, 5);
	peer_send(f, "CAPA\r\nCAPA\r\n", 12);
	/* The first read (both lines, one write) before any deadline, so
	 * the verdict never depends on how fast this machine gets there. */
	expect_line(f, "CAPA");
	conn_set_deadline_ms(f->c, 1);
	/* nanosleep never ends early: the 1 ms deadline has passed. */
	nanosleep(&(struct timespec){ 0, 20 * 1000000 }, NULL);
	expect_line(f, "CAPA");
	peer_send(f, "USER x\r\n", 8);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_TIMEOUT);
	conn_set_deadline_ms(f->c, 0);
	expect_line(f, "USER x");
}

static void
test_killed(void **state)
{
	struct fix	*f = *state;

	f->kill = 1;
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_KILLED);
	assert_int_equal(conn_sleep_ms(f->c, 60000), CONN_KILLED);
}

static void
test_read_flushes_replies_in_order(void **state)
{
	struct fix	*f = *state;
	char		 buf[32];

	peer_send(f, "A\r\nB\r\n", 6);
	expect_line(f, "A");
	assert_int_equal(conn_write(f->c, "+OK a\r\n", 7), 0);
	expect_line(f, "B");
	assert_int_equal(conn_write(f->c, "+OK b\r\n", 7), 0);
	/* Both replies are still batched: nothing was sent yet. */
	assert_int_equal(conn_octets_out(f->c), 0);
	/* Waiting for the next command sends them, in order. */
	shutdown(f->sv[1], SHUT_WR);
	assert_int_equal(conn_read_line(f->c, &(char *){ NULL },
	    &(size_t){ 0 }), CONN_EOF);
	assert_int_equal(conn_octets_out(f->c), 14);
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
		assert_int_equal(conn_ml_text(f->c, stuff_rows[i].in,
		    strlen(stuff_rows[i].in)), 0);
		assert_int_equal(conn_flush(f->c), 0);
		memset(got, 0, sizeof(got));
		peer_recv(f, got, want);
		if (strcmp(got, stuff_rows[i].out) != 0)
			fail_msg("row %zu: got \"%s\"", i, got);
	}
	assert_int_equal(conn_ml_line(f->c, ".", 1), 0);
	assert_int_equal(conn_ml_end(f->c), 0);
	assert_int_equal(conn_flush(f->c), 0);
	memset(got, 0, sizeof(got));
	peer_recv(f, got, 7);
	assert_string_equal(got, "..\r\n.\r\n");
}

static void
test_sendfile(void **state)
{
	struct fix	*f = *state;
	char		 path[] = "/tmp/test_conn.XXXXXX";
	char		 body[3000], got[4000];
	size_t		 i;
	int		 fd;

	for (i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	assert_true((fd = mkstemp(path)) != -1);
	unlink(path);
	assert_int_equal(write(fd, body, sizeof(body)), sizeof(body));
	assert_int_equal(conn_printf(f->c, "+OK %zu octets\r\n",
	    sizeof(body)), 0);
	assert_int_equal(conn_send_file(f->c, fd, 0, sizeof(body)), 0);
	assert_int_equal(conn_ml_end(f->c), 0);
	assert_int_equal(conn_flush(f->c), 0);
	assert_int_equal(conn_octets_out(f->c), 17 + sizeof(body) + 3);
	peer_recv(f, got, 17 + sizeof(body) + 3);
	assert_memory_equal(got, "+OK 3000 octets\r\n", 17);
	assert_memory_equal(got + 17, body, sizeof(body));
	assert_memory_equal(got + 17 + sizeof(body), ".\r\n", 3);
	/* A file shorter than promised fails the connection. */
	assert_int_equal(conn_send_file(f->c, fd, 0, sizeof(body) + 10), -1);
	assert_int_equal(conn_werr(f->c), CONN_ERR);
	assert_int_equal(conn_write(f->c, "x", 1), -1);
	close(fd);
}

static void
test_send_timeout(void **state)
{
	struct fix	*f = *state;
	char		 chunk[8192];
	int		 i, rc = 0;

	/* A peer that never reads: the writer gives up, not hangs. */
	conn_set_timeouts(f->c, 5, 1);
	memset(chunk, 'q', sizeof(chunk));
	for (i = 0; i < 10000 && rc == 0; i++)
		rc = conn_write(f->c, chunk, sizeof(chunk));
	if (rc == 0)
		rc = conn_flush(f->c);
	assert_int_equal(rc, -1);
	assert_int_equal(conn_werr(f->c), CONN_TIMEOUT);
}

static void
test_peer_gone_write(void **state)
{
	struct fix	*f = *state;

	signal(SIGPIPE, SIG_IGN);
	close(f->sv[1]);
	f->sv[1] = -1;
	assert_int_equal(conn_write(f->c, "+OK\r\n", 5), 0);
	assert_int_equal(conn_flush(f->c), -1);
	assert_int_equal(conn_werr(f->c), CONN_EOF);
}

static const struct {
	const char	*line;
	bool		 whole;
	const char	*kw;		/* NULL: no keyword */
	int		 argc;		/* -1: conn_split fails */
	const char	*argv[CONN_ARGS_MAX];
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
	struct conn_args	 a;
	char			 buf[128], *kw, *rest;
	size_t			 i;
	int			 j, rc;

	(void)state;
	for (i = 0; i < NITEMS(split_rows); i++) {
		snprintf(buf, sizeof(buf), "%s", split_rows[i].line);
		kw = conn_keyword(buf, &rest);
		if (split_rows[i].kw == NULL) {
			if (kw != NULL)
				fail_msg("row %zu: keyword %s", i, kw);
			continue;
		}
		if (kw == NULL || strcmp(kw, split_rows[i].kw) != 0)
			fail_msg("row %zu: keyword", i);
		rc = conn_split(rest, split_rows[i].whole, &a);
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
		cmocka_unit_test_setup_teardown(test_eol_reported, setup,
		    teardown),
		cmocka_unit_test(test_client_connect),
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
