/*
 * Unit tests for session: a real session_run in a forked child over a
 * socketpair, with real punts, auth store, locks and scoreboard in a
 * mkdtemp() directory, driven by scripted POP3 lines.  session_int.h
 * (the session parts' private header) gives the command table itself,
 * so it can be walked.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/auth.h"
#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/puntset.h"
#include "sdps/scoreboard.h"
#include "sdps/session.h"
#include "sdps/session_env.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "../../src/daemon/session_int.h"
#include "sdps/wire.h"

#define HOST	"fred.example.net"
#define PW1	"first-secret"
#define PW2	"second secret with spaces"
#define MAP	(16ULL << 20)
#define NPUNTS	2

struct fx {
	char		 dir[64];
	struct config	 cf;
	struct scoreboard sb;
	struct store	*st[NPUNTS];	/* the test's own handles */
	/* What cl_start gives the session (issue 10).  tls is a dummy that
	 * only makes STLS offered: no test here lets STLS reach the
	 * handshake (the integration tests do it with real OpenSSL). */
	const struct config_listener *listener;
	struct tls_server *tls;
};

/* One client connection to a session running in a child. */
struct cl {
	int	 fd;
	pid_t	 pid;
	char	 buf[65536];
	size_t	 len;
};

static volatile sig_atomic_t child_kill, child_term;

static void
on_usr2(int sig)
{
	(void)sig;
	child_kill = 1;
}

static int
setup(void **state)
{
	struct fx	*fx;
	struct auth	*a;
	char		 err[256], path[PATH_MAX];
	int		 i;

	if ((fx = calloc(1, sizeof(*fx))) == NULL)
		return -1;
	strcpy(fx->dir, "/tmp/test_session.XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	config_defaults(&fx->cf);
	snprintf(fx->cf.run_dir, sizeof(fx->cf.run_dir), "%s/run", fx->dir);
	snprintf(fx->cf.auth_path, sizeof(fx->cf.auth_path), "%s/auth",
	    fx->dir);
	fx->cf.hash_cost = CONFIG_HASH_MIN;
	fx->cf.auth_map_size = MAP;
	fx->cf.store_map_size = MAP;
	fx->cf.idle_timeout_s = 60;
	fx->cf.send_timeout_s = 30;
	fx->cf.auth_fail_delay_ms = 0;
	fx->cf.auth_max_failures = 3;
	fx->cf.max_bad_commands = 30;
	fx->cf.expire_days = 30;
	/* A socketpair is no loopback peer: the policy's own tests set it. */
	fx->cf.allow_cleartext = CONFIG_CLEARTEXT_YES;
	fx->cf.npunts = NPUNTS;
	snprintf(fx->cf.punts[0].name, sizeof(fx->cf.punts[0].name), "alpha");
	snprintf(fx->cf.punts[1].name, sizeof(fx->cf.punts[1].name), "beta");
	if (util_mkdir_p(fx->cf.run_dir, 0700) == -1)
		return -1;
	for (i = 0; i < NPUNTS; i++) {
		snprintf(path, sizeof(path), "%s/%s", fx->dir,
		    fx->cf.punts[i].name);
		snprintf(fx->cf.punts[i].path, sizeof(fx->cf.punts[i].path),
		    "%s", path);
		if (store_create(path, fx->cf.punts[i].name, MAP, err,
		    sizeof(err)) == -1) {
			fprintf(stderr, "store_create: %s\n", err);
			return -1;
		}
		fx->st[i] = store_open(path, fx->cf.punts[i].name,
		    &(struct store_opts){ MAP, 600 }, err, sizeof(err));
		if (fx->st[i] == NULL) {
			fprintf(stderr, "store_open: %s\n", err);
			return -1;
		}
	}
	a = auth_open(fx->cf.auth_path, MAP, true, CONFIG_HASH_MIN, err,
	    sizeof(err));
	if (a == NULL || auth_host_add(a, HOST, PW1, PW2, err,
	    sizeof(err)) == -1) {
		fprintf(stderr, "auth: %s\n", err);
		return -1;
	}
	auth_close(a);
	if (sb_create(fx->cf.run_dir, 4, &fx->cf, &fx->sb) == -1)
		return -1;
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx	*fx = *state;
	char		 cmd[128];
	int		 i;

	for (i = 0; i < NPUNTS; i++)
		store_close(fx->st[i]);
	sb_close(&fx->sb);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	i = system(cmd);
	free(fx);
	return i == 0 ? 0 : -1;
}

/* Store one message (raw text, any line ends) on punt p. */
static uint64_t
put(struct fx *fx, int p, const char *sender, const char *const *rcpts,
    size_t nrcpts, const char *text)
{
	struct store_envelope	 env = { HOST, sender, rcpts, nrcpts };
	struct wire		 w;
	uint64_t		 id = 0;
	char			 err[256] = "";

	wire_init(&w, 0);
	assert_int_equal(wire_feed(&w, text, strlen(text)), WIRE_OK);
	assert_int_equal(wire_finish(&w), WIRE_OK);
	if (store_put(fx->st[p], &env, w.buf, w.len, w.body_octets, &id, err,
	    sizeof(err)) != STORE_OK)
		fail_msg("store_put: %s", err);
	wire_free(&w);
	return id;
}

static const char *const ALICE[] = { "alice" };
static const char *const BOB[] = { "bob" };
static const char *const BOTH[] = { "alice", "bob" };

/* Start a session in a child; slot is the scoreboard slot it uses. */
static void
cl_start(struct fx *fx, struct cl *c, int slot)
{
	struct session_env	 w;
	struct auth		*a;
	char			 err[256];
	int			 sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(c, 0, sizeof(*c));
	fflush(NULL);
	c->pid = fork();
	assert_true(c->pid != -1);
	if (c->pid == 0) {
		close(sv[0]);
		signal(SIGUSR2, on_usr2);
		memset(&w, 0, sizeof(w));
		a = auth_open(fx->cf.auth_path, MAP, false, CONFIG_HASH_MIN,
		    err, sizeof(err));
		if (a == NULL)
			_exit(2);
		w.cf = &fx->cf;
		w.sb = &fx->sb;
		w.slot = &fx->sb.slots[slot];
		w.auth = a;
		w.punts = puntset_new(&fx->cf, PUNTSET_LOG);
		w.kill_session = &child_kill;
		w.terminate = &child_term;
		w.listener = fx->listener;
		w.tls = fx->tls;
		session_run(&w, sv[1], "192.0.2.7");
		_exit(0);
	}
	close(sv[1]);
	c->fd = sv[0];
}

/* Wait for the child; its exit status. */
static int
cl_end(struct cl *c)
{
	int	 st;

	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void __attribute__((format(printf, 2, 3)))
cl_send(struct cl *c, const char *fmt, ...)
{
	char	 buf[1024];
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	memcpy(buf + n, "\r\n", 2);
	assert_int_equal(write(c->fd, buf, (size_t)n + 2), n + 2);
}

/* One reply line without CRLF; -1 at EOF.  Fails on a hang. */
static int
cl_line(struct cl *c, char *out, size_t outlen)
{
	struct pollfd	 pfd = { .fd = c->fd, .events = POLLIN };
	char		*lf;
	size_t		 n;
	ssize_t		 r;

	for (;;) {
		if ((lf = memchr(c->buf, '\n', c->len)) != NULL) {
			n = (size_t)(lf - c->buf);
			assert_true(n > 0 && c->buf[n - 1] == '\r');
			assert_true(n - 1 < outlen);
			memcpy(out, c->buf, n - 1);
			out[n - 1] = '\0';
			memmove(c->buf, lf + 1, c->len - n - 1);
			c->len -= n + 1;
			return (int)(n - 1);
		}
		assert_true(c->len < sizeof(c->buf));
		if (poll(&pfd, 1, 20000) != 1)
			fail_msg("no reply within 20 s");
		r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
		if (r <= 0)
			return -1;
		c->len += (size_t)r;
	}
}

static void
cl_expect(struct cl *c, const char *prefix)
{
	char	 line[2048];

	if (cl_line(c, line, sizeof(line)) == -1)
		fail_msg("EOF, expected \"%s\"", prefix);
	if (strncmp(line, prefix, strlen(prefix)) != 0)
		fail_msg("got \"%s\", expected \"%s\"", line, prefix);
}

/* The body of a multi-line reply, unstuffed, CRLF line ends (malloc'd). */
static char *
cl_multi(struct cl *c, size_t *len)
{
	char	 line[4096], *out = NULL, *p;
	size_t	 cap = 0, n = 0, l;
	int	 r;

	for (;;) {
		if ((r = cl_line(c, line, sizeof(line))) == -1)
			fail_msg("EOF in multi-line reply");
		if (strcmp(line, ".") == 0)
			break;
		p = line[0] == '.' ? line + 1 : line;
		l = strlen(p);
		if (n + l + 3 > cap) {
			cap = (n + l + 3) * 2;
			assert_non_null(out = realloc(out, cap));
		}
		memcpy(out + n, p, l);
		memcpy(out + n + l, "\r\n", 2);
		n += l + 2;
	}
	if (out == NULL)
		assert_non_null(out = calloc(1, 1));
	out[n] = '\0';
	*len = n;
	return out;
}

static void
cl_login(struct fx *fx, struct cl *c, int slot, const char *user,
    const char *pw)
{
	cl_start(fx, c, slot);
	cl_expect(c, "+OK sdps ready");
	cl_send(c, "USER %s", user);
	cl_expect(c, "+OK");
	cl_send(c, "PASS %s", pw);
	cl_expect(c, "+OK");
}

static void
cl_quit(struct cl *c, const char *want)
{
	cl_send(c, "QUIT");
	cl_expect(c, want);
	assert_int_equal(cl_end(c), 0);
}

/* "+OK n m" or "n m" parsed from a reply. */
static uint64_t
reply_num(const char *line, int field)
{
	const char	*p = line;
	int		 i;

	for (i = 0; i < field; i++) {
		p = strchr(p, ' ');
		assert_non_null(p);
		p++;
	}
	return strtoull(p, NULL, 10);
}

/* ---- the table ---- */

static void
test_table(void **state)
{
	size_t	 i, j;
	const char *p;

	(void)state;
	for (i = 0; i < session_ncmds; i++) {
		assert_non_null(session_cmds[i].fn);
		assert_true(session_cmds[i].states != 0);
		assert_true((session_cmds[i].states &
		    ~(unsigned)(ST_AUTH | ST_TRANS)) == 0);
		assert_true(session_cmds[i].min_args <=
		    session_cmds[i].max_args);
		assert_true(session_cmds[i].max_args <= CONN_ARGS_MAX);
		for (p = session_cmds[i].name; *p != '\0'; p++)
			assert_false(*p >= 'a' && *p <= 'z');
		for (j = i + 1; j < session_ncmds; j++)
			assert_true(strcasecmp(session_cmds[i].name,
			    session_cmds[j].name) != 0);
	}
}

static void
lower(char *dst, const char *src)
{
	for (; *src != '\0'; src++)
		*dst++ = (*src >= 'A' && *src <= 'Z') ? *src + 32 : *src;
	*dst = '\0';
}

static void
test_state_masks(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 name[8];
	size_t		 i;
	int		 n = 0;

	put(fx, 0, "a@b.example", ALICE, 1, "Subject: x\n\nbody\n");
	/* AUTHORIZATION: everything not allowed there answers -ERR. */
	cl_start(fx, &c, 0);
	cl_expect(&c, "+OK sdps ready");
	for (i = 0; i < session_ncmds; i++) {
		if (session_cmds[i].states & ST_AUTH)
			continue;
		lower(name, session_cmds[i].name);
		cl_send(&c, "%s 1 1", (n++ & 1) ? name : session_cmds[i].name);
		cl_expect(&c, "-ERR");
	}
	cl_quit(&c, "+OK");
	/* TRANSACTION likewise, in lower case too. */
	cl_login(fx, &c, 0, HOST, PW1);
	for (i = 0; i < session_ncmds; i++) {
		if (session_cmds[i].states & ST_TRANS)
			continue;
		lower(name, session_cmds[i].name);
		cl_send(&c, "%s x", (n++ & 1) ? name : session_cmds[i].name);
		cl_expect(&c, "-ERR");
	}
	/* And what is allowed works whatever the case. */
	cl_send(&c, "sTaT");
	cl_expect(&c, "+OK 1 ");
	cl_send(&c, "noop");
	cl_expect(&c, "+OK");
	cl_send(&c, "XYZZY");
	cl_expect(&c, "-ERR unknown command");
	cl_send(&c, "STAT extra");
	cl_expect(&c, "-ERR STAT: wrong number of arguments");
	cl_send(&c, "TOP 1");
	cl_expect(&c, "-ERR TOP: wrong number of arguments");
	cl_quit(&c, "+OK");
}

static void
test_capa(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		*body;
	size_t		 len;

	cl_start(fx, &c, 0);
	cl_expect(&c, "+OK sdps ready");
	cl_send(&c, "CAPA");
	cl_expect(&c, "+OK");
	body = cl_multi(&c, &len);
	assert_string_equal(body, "TOP\r\nUIDL\r\nUSER\r\n"
	    "SASL PLAIN LOGIN\r\nRESP-CODES\r\n"
	    "AUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE 30\r\n"
	    "IMPLEMENTATION sdps\r\nX-SDPS\r\n");
	free(body);
	cl_send(&c, "APOP " HOST " 0123456789abcdef0123456789abcdef");
	cl_expect(&c, "-ERR");
	cl_quit(&c, "+OK");
	/* LOGIN-DELAY only when configured, after EXPIRE. */
	fx->cf.login_delay_s = 7;
	cl_start(fx, &c, 0);
	cl_expect(&c, "+OK sdps ready");
	cl_send(&c, "CAPA");
	cl_expect(&c, "+OK capability list follows");
	body = cl_multi(&c, &len);
	fx->cf.login_delay_s = 0;
	assert_string_equal(body, "TOP\r\nUIDL\r\nUSER\r\n"
	    "SASL PLAIN LOGIN\r\nRESP-CODES\r\n"
	    "AUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE 30\r\n"
	    "LOGIN-DELAY 7\r\nIMPLEMENTATION sdps\r\nX-SDPS\r\n");
	free(body);
	cl_quit(&c, "+OK");
}

/* ---- authorization ---- */

static void
test_passwords(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 line[512];

	/* Either password; PASS takes the rest of the line, spaces too. */
	cl_login(fx, &c, 0, HOST, PW1);
	cl_quit(&c, "+OK");
	cl_login(fx, &c, 0, "FRED.Example.NET", PW2);
	cl_quit(&c, "+OK");
	cl_login(fx, &c, 0, "alice@" HOST, PW2);
	cl_quit(&c, "+OK");
	cl_login(fx, &c, 0, "alice+" HOST, PW1);
	cl_quit(&c, "+OK");

	/* Failures: wrong password and unknown host look the same. */
	cl_start(fx, &c, 0);
	cl_expect(&c, "+OK sdps ready");
	cl_send(&c, "PASS " PW1);
	cl_expect(&c, "-ERR USER first");
	cl_send(&c, "USER bad..host");
	cl_expect(&c, "-ERR invalid user name");
	cl_send(&c, "USER a@b@");
	cl_expect(&c, "-ERR invalid user name");
	cl_send(&c, "USER nobody.example.org");
	cl_expect(&c, "+OK");
	cl_send(&c, "PASS " PW1);
	cl_expect(&c, "-ERR [AUTH] ");
	cl_send(&c, "USER " HOST);
	cl_expect(&c, "+OK");
	cl_send(&c, "PASS second secret");
	cl_expect(&c, "-ERR [AUTH] ");
	/* A failed PASS forgets the USER. */
	cl_send(&c, "PASS " PW1);
	cl_expect(&c, "-ERR USER first");
	cl_send(&c, "USER " HOST);
	cl_expect(&c, "+OK");
	cl_send(&c, "PASS " PW1 "x");
	cl_expect(&c, "-ERR [AUTH] ");
	/* The third failure closes the connection. */
	assert_int_equal(cl_line(&c, line, sizeof(line)), -1);
	assert_int_equal(cl_end(&c), 0);
	assert_true(atomic_load(&fx->sb.hdr->total_auth_failures) >= 3);
}

/* ---- transaction ---- */

static const char MSG1[] =
    "From: a@b.example\nSubject: one\n\nline 1\n.dot line\n..two\nlast\n";
static const char MSG2[] =
    "From: c@d.example\r\nSubject: two\r\nX-Long: " \
    "0123456789012345678901234567890123456789\r\n\r\nbody\r\n";

static void
test_sizes_retr(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 line[512], *body, want[512];
	uint64_t	 listed[3], total = 0;
	size_t		 len, i;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	put(fx, 1, "", BOTH, 2, MSG2);
	put(fx, 0, "x@y.example", BOB, 1, MSG1);
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "LIST");
	cl_expect(&c, "+OK 3 messages");
	for (i = 0; i < 3; i++) {
		assert_true(cl_line(&c, line, sizeof(line)) > 0);
		assert_int_equal(reply_num(line, 0), i + 1);
		listed[i] = reply_num(line, 1);
		total += listed[i];
	}
	cl_expect(&c, ".");
	cl_send(&c, "STAT");
	assert_true(cl_line(&c, line, sizeof(line)) > 0);
	snprintf(want, sizeof(want), "+OK 3 %" PRIu64, total);
	assert_string_equal(line, want);
	for (i = 0; i < 3; i++) {
		cl_send(&c, "LIST %zu", i + 1);
		assert_true(cl_line(&c, line, sizeof(line)) > 0);
		assert_int_equal(reply_num(line, 2), listed[i]);
		cl_send(&c, "RETR %zu", i + 1);
		assert_true(cl_line(&c, line, sizeof(line)) > 0);
		assert_int_equal(reply_num(line, 1), listed[i]);
		body = cl_multi(&c, &len);
		/* RFC 1939: LIST is the exact size RETR sends. */
		assert_int_equal(len, listed[i]);
		if (i == 0) {
			assert_string_equal(body,
			    "Return-Path: <a@b.example>\r\n"
			    "From: a@b.example\r\nSubject: one\r\n\r\n"
			    "line 1\r\n.dot line\r\n..two\r\nlast\r\n");
		} else if (i == 1) {
			/* The null sender; arrival order across punts. */
			assert_int_equal(strncmp(body,
			    "Return-Path: <>\r\nFrom: c@d.example\r\n", 36), 0);
		}
		free(body);
	}
	cl_quit(&c, "+OK");
}

static void
test_top(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		*body;
	size_t		 len;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "TOP 1 0");
	cl_expect(&c, "+OK");
	body = cl_multi(&c, &len);
	assert_string_equal(body, "Return-Path: <a@b.example>\r\n"
	    "From: a@b.example\r\nSubject: one\r\n\r\n");
	free(body);
	cl_send(&c, "TOP 1 2");
	cl_expect(&c, "+OK");
	body = cl_multi(&c, &len);
	assert_string_equal(body, "Return-Path: <a@b.example>\r\n"
	    "From: a@b.example\r\nSubject: one\r\n\r\nline 1\r\n.dot line\r\n");
	free(body);
	cl_send(&c, "TOP 1 99999999999");
	cl_expect(&c, "+OK");
	body = cl_multi(&c, &len);
	assert_string_equal(body, "Return-Path: <a@b.example>\r\n"
	    "From: a@b.example\r\nSubject: one\r\n\r\n"
	    "line 1\r\n.dot line\r\n..two\r\nlast\r\n");
	free(body);
	cl_send(&c, "TOP 1 -1");
	cl_expect(&c, "-ERR");
	cl_send(&c, "TOP 2 1");
	cl_expect(&c, "-ERR");
	cl_quit(&c, "+OK");
}

static void
test_uidl_env(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 u1[STORE_UIDL_MAX], u2[STORE_UIDL_MAX], date[64];
	char		 want[1024], *body;
	uint64_t	 id1, id2;
	struct store_msg m;
	size_t		 len;

	id1 = put(fx, 1, "", BOTH, 2, MSG2);
	id2 = put(fx, 0, ".dotty@b.example", ALICE, 1, MSG1);
	store_uidl(fx->st[1], id1, u1);
	store_uidl(fx->st[0], id2, u2);
	assert_true(strcmp(u1, u2) != 0);
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "UIDL");
	cl_expect(&c, "+OK");
	body = cl_multi(&c, &len);
	snprintf(want, sizeof(want), "1 %s\r\n2 %s\r\n", u1, u2);
	assert_string_equal(body, want);
	free(body);
	cl_send(&c, "UIDL 2");
	snprintf(want, sizeof(want), "+OK 2 %s", u2);
	cl_expect(&c, want);

	/* *ENV: RD line, punt uidl date, sender, recipients. */
	assert_int_equal(store_msg_get(fx->st[1], id1, &m), STORE_OK);
	util_rfc5322_date(m.arrival_us, date, sizeof(date));
	store_msg_free(&m);
	cl_send(&c, "*env 1");
	cl_expect(&c, "+OK");
	body = cl_multi(&c, &len);
	snprintf(want, sizeof(want), "\r\nbeta %s %s\r\n\r\nalice@%s\r\n"
	    "bob@%s\r\n", u1, date, HOST, HOST);
	assert_string_equal(body, want);
	free(body);
	/* A sender that starts with a dot is stuffed on the wire. */
	cl_send(&c, "*ENV 2");
	cl_expect(&c, "+OK");
	cl_expect(&c, "");
	cl_expect(&c, "alpha ");
	cl_expect(&c, "..dotty@b.example");
	cl_expect(&c, "alice@" HOST);
	cl_expect(&c, ".");
	/* RD shows at once after a RETR ... */
	cl_send(&c, "RETR 2");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_send(&c, "*ENV 2");
	cl_expect(&c, "+OK");
	cl_expect(&c, "RD");
	free(cl_multi(&c, &len));
	cl_send(&c, "*ENV 3");
	cl_expect(&c, "-ERR");
	cl_quit(&c, "+OK");
	/* ... and is committed for the next session. */
	assert_int_equal(store_msg_get(fx->st[0], id2, &m), STORE_OK);
	assert_true(m.flags & STORE_F_READ);
	store_msg_free(&m);
	assert_int_equal(store_msg_get(fx->st[1], id1, &m), STORE_OK);
	assert_false(m.flags & STORE_F_READ);
	store_msg_free(&m);
	cl_login(fx, &c, 0, HOST, PW2);
	cl_send(&c, "*ENV 2");
	cl_expect(&c, "+OK");
	cl_expect(&c, "RD");
	free(cl_multi(&c, &len));
	/* UIDL is stable across sessions. */
	cl_send(&c, "UIDL 1");
	snprintf(want, sizeof(want), "+OK 1 %s", u1);
	cl_expect(&c, want);
	cl_quit(&c, "+OK");
}

static void
test_look_only_writes_nothing(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	struct stat	 before, after;
	char		 path[PATH_MAX + 32];
	size_t		 len;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	snprintf(path, sizeof(path), "%s/index/data.mdb",
	    fx->cf.punts[0].path);
	assert_int_equal(stat(path, &before), 0);
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "STAT");
	cl_expect(&c, "+OK 1 ");
	cl_send(&c, "LIST");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_send(&c, "TOP 1 1");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_send(&c, "*ENV 1");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_quit(&c, "+OK");
	assert_int_equal(stat(path, &after), 0);
	assert_true(before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
	    before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
	assert_int_equal(before.st_size, after.st_size);
}

static size_t
count_listed(struct fx *fx, int p, const char *user)
{
	struct store_entry	*e = NULL;
	size_t			 n = 0;

	assert_int_equal(store_list(fx->st[p], HOST, user, &e, &n, NULL), 0);
	free(e);
	return n;
}

static void
test_dele_rset_quit(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 line[256];

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	put(fx, 1, "a@b.example", ALICE, 1, MSG2);
	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "DELE 1");
	cl_expect(&c, "+OK");
	cl_send(&c, "DELE 1");
	cl_expect(&c, "-ERR message 1 already deleted");
	cl_send(&c, "RETR 1");
	cl_expect(&c, "-ERR");
	cl_send(&c, "STAT");
	assert_true(cl_line(&c, line, sizeof(line)) > 0);
	assert_int_equal(reply_num(line, 1), 2);
	cl_send(&c, "LIST");
	cl_expect(&c, "+OK 2 messages");
	cl_expect(&c, "2 ");
	cl_expect(&c, "3 ");
	cl_expect(&c, ".");
	cl_send(&c, "RSET");
	cl_expect(&c, "+OK maildrop has 3 messages");
	cl_send(&c, "STAT");
	cl_expect(&c, "+OK 3 ");
	/* A dropped connection deletes nothing (RFC 1939 §6). */
	cl_send(&c, "DELE 2");
	cl_expect(&c, "+OK");
	assert_int_equal(cl_end(&c), 0);
	assert_int_equal(count_listed(fx, 0, NULL), 2);
	assert_int_equal(count_listed(fx, 1, NULL), 1);
	/* QUIT removes, on every punt. */
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "DELE 2");
	cl_expect(&c, "+OK");
	cl_send(&c, "DELE 3");
	cl_expect(&c, "+OK");
	cl_quit(&c, "+OK");
	assert_int_equal(count_listed(fx, 0, NULL), 1);
	assert_int_equal(count_listed(fx, 1, NULL), 0);
	assert_true(atomic_load(&fx->sb.hdr->total_deleted) >= 2);
}

static void
test_msn_reasons(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	static const char *const bad[] = { "+1", "-1", "1x", " ", "0x1",
	    "99999999999999999999999", "0", "3", "2" };
	char		 seen[NITEMS(bad)][256];
	size_t		 i, j;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "DELE 2");
	cl_expect(&c, "+OK");
	for (i = 0; i < NITEMS(bad); i++) {
		cl_send(&c, "RETR %s", bad[i]);
		assert_true(cl_line(&c, seen[i], sizeof(seen[i])) > 0);
		if (strncmp(seen[i], "-ERR", 4) != 0)
			fail_msg("RETR \"%s\": %s", bad[i], seen[i]);
	}
	/* Sign, junk, overflow, zero, range, deleted: each its reason. */
	assert_string_equal(seen[0], seen[1]);
	assert_string_equal(seen[2], seen[4]);
	for (i = 4; i < NITEMS(bad); i++)
		for (j = i + 1; j < NITEMS(bad); j++)
			if (strcmp(seen[i], seen[j]) == 0)
				fail_msg("\"%s\" and \"%s\": same reason",
				    bad[i], bad[j]);
	assert_true(strcmp(seen[0], seen[2]) != 0);
	cl_quit(&c, "+OK");
}

static void
test_dummy_after_smtp(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 text[4096], line[256], *body, *again, *hdr_end;
	uint64_t	 id, listed;
	size_t		 len, len2;
	int		 i;

	/* Large enough for the notice to be padded to the listed size. */
	len = (size_t)snprintf(text, sizeof(text), "From: a@b.example\n"
	    "Subject: big\n\n");
	for (i = 0; i < 40; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		    "%02d the quick brown fox jumps over the lazy dog\n", i);
	id = put(fx, 0, "a@b.example", ALICE, 1, text);
	put(fx, 0, "a@b.example", ALICE, 1, "Subject: tiny\n\nx\n");
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "LIST 1");
	assert_true(cl_line(&c, line, sizeof(line)) > 0);
	listed = reply_num(line, 2);
	/* SMTP delivers it meanwhile. */
	assert_int_equal(store_done(fx->st[0], id), STORE_OK);
	cl_send(&c, "RETR 1");
	assert_true(cl_line(&c, line, sizeof(line)) > 0);
	assert_int_equal(reply_num(line, 1), listed);
	body = cl_multi(&c, &len);
	assert_int_equal(len, listed);
	assert_non_null(strstr(body, "\r\nFrom: Mail Delivery System "
	    "<postmaster@"));
	assert_non_null(strstr(body, "\r\nSubject: Message already delivered"
	    " by SMTP\r\n"));
	assert_non_null(strstr(body, "\r\nDate: "));
	assert_non_null(strstr(body, "\r\nMessage-ID: <"));
	assert_non_null(strstr(body, "\r\nTo: <alice@" HOST ">\r\n"));
	assert_non_null(hdr_end = strstr(body, "\r\n\r\n"));
	/* The same text again, and TOP shows its header block. */
	cl_send(&c, "RETR 1");
	cl_expect(&c, "+OK");
	again = cl_multi(&c, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(again, body, len);
	free(again);
	cl_send(&c, "TOP 1 0");
	cl_expect(&c, "+OK");
	again = cl_multi(&c, &len2);
	assert_int_equal(len2, (size_t)(hdr_end - body) + 4);
	assert_memory_equal(again, body, len2);
	free(again);
	free(body);
	/* *ENV still answers from the snapshot. */
	cl_send(&c, "*ENV 1");
	cl_expect(&c, "+OK");
	cl_expect(&c, "");
	cl_expect(&c, "alpha ");
	cl_expect(&c, "a@b.example");
	cl_expect(&c, "alice@" HOST);
	cl_expect(&c, ".");
	/* DELE of it and QUIT: still +OK. */
	cl_send(&c, "DELE 1");
	cl_expect(&c, "+OK");
	cl_quit(&c, "+OK");
	assert_int_equal(count_listed(fx, 0, NULL), 1);
}

static void
test_locks(void **state)
{
	struct fx	*fx = *state;
	struct cl	 a, b;

	put(fx, 0, "a@b.example", BOTH, 2, MSG1);
	cl_login(fx, &a, 0, HOST, PW1);
	/* A host session excludes every other session on the host. */
	cl_start(fx, &b, 1);
	cl_expect(&b, "+OK sdps ready");
	cl_send(&b, "USER " HOST);
	cl_expect(&b, "+OK");
	cl_send(&b, "PASS " PW1);
	cl_expect(&b, "-ERR [IN-USE] ");
	cl_send(&b, "USER alice@" HOST);
	cl_expect(&b, "+OK");
	cl_send(&b, "PASS " PW2);
	cl_expect(&b, "-ERR [IN-USE] ");
	cl_quit(&a, "+OK");
	/* Gone with the session: now b gets in. */
	cl_send(&b, "USER alice@" HOST);
	cl_expect(&b, "+OK");
	cl_send(&b, "PASS " PW2);
	cl_expect(&b, "+OK");
	/* Another user is fine; the same user and the host are not. */
	cl_login(fx, &a, 2, "bob+" HOST, PW1);
	cl_quit(&a, "+OK");
	cl_start(fx, &a, 2);
	cl_expect(&a, "+OK sdps ready");
	cl_send(&a, "USER ALICE@" HOST);
	cl_expect(&a, "+OK");
	cl_send(&a, "PASS " PW1);
	cl_expect(&a, "-ERR [IN-USE] ");
	cl_send(&a, "USER " HOST);
	cl_expect(&a, "+OK");
	cl_send(&a, "PASS " PW1);
	cl_expect(&a, "-ERR [IN-USE] ");
	cl_quit(&a, "+OK");
	cl_quit(&b, "+OK");
}

static void
test_user_views(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	size_t		 len;

	put(fx, 0, "s@x.example", BOTH, 2, MSG1);
	put(fx, 1, "s@x.example", ALICE, 1, MSG2);
	put(fx, 0, "s@x.example", BOB, 1, MSG1);
	cl_login(fx, &c, 0, "alice@" HOST, PW1);
	cl_send(&c, "STAT");
	cl_expect(&c, "+OK 2 ");
	cl_send(&c, "*ENV 1");
	cl_expect(&c, "+OK");
	cl_expect(&c, "");
	cl_expect(&c, "alpha ");
	cl_expect(&c, "s@x.example");
	cl_expect(&c, "alice@" HOST);	/* bob is not alice's business */
	cl_expect(&c, ".");
	cl_send(&c, "DELE 1");
	cl_expect(&c, "+OK");
	cl_quit(&c, "+OK");
	/* alice's DELE took only her recipient: bob still has it. */
	assert_int_equal(count_listed(fx, 0, "alice"), 0);
	assert_int_equal(count_listed(fx, 0, "bob"), 2);
	cl_login(fx, &c, 0, "bob+" HOST, PW1);
	cl_send(&c, "STAT");
	cl_expect(&c, "+OK 2 ");
	cl_send(&c, "*ENV 1");
	cl_expect(&c, "+OK");
	cl_expect(&c, "");
	cl_expect(&c, "alpha ");
	cl_expect(&c, "s@x.example");
	cl_expect(&c, "bob@" HOST);
	cl_expect(&c, ".");
	cl_quit(&c, "+OK");
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "STAT");
	cl_expect(&c, "+OK 3 ");
	cl_send(&c, "UIDL");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_quit(&c, "+OK");
}

static void
test_bad_lines(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 big[400];

	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cl_start(fx, &c, 0);
	cl_expect(&c, "+OK sdps ready");
	cl_send(&c, "%s", big);
	cl_expect(&c, "-ERR line too long");
	assert_int_equal(write(c.fd, "US\0ER x\r\n", 9), 9);
	cl_expect(&c, "-ERR NUL");
	cl_send(&c, "%s", "");
	cl_expect(&c, "-ERR");
	/* Nothing changed: a normal login still works. */
	cl_send(&c, "USER " HOST);
	cl_expect(&c, "+OK");
	cl_send(&c, "PASS " PW1);
	cl_expect(&c, "+OK");
	cl_quit(&c, "+OK");
}

static void
test_bad_command_limit(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 line[256];
	unsigned	 i;

	fx->cf.max_bad_commands = 3;
	cl_start(fx, &c, 0);
	cl_expect(&c, "+OK sdps ready");
	for (i = 0; i < 3; i++) {
		cl_send(&c, "BOGUS");
		cl_expect(&c, "-ERR");
	}
	assert_int_equal(cl_line(&c, line, sizeof(line)), -1);
	assert_int_equal(cl_end(&c), 0);
}

/*
 * The bad-command rule (session_err): an -ERR with a response code is
 * not the client's fault, so [IN-USE] answers, more of them than
 * max_bad_commands, leave the session open; two unknown commands then
 * close it.
 */
static void
test_coded_err_not_bad(void **state)
{
	struct fx	*fx = *state;
	struct cl	 a, b;
	char		 line[256];
	size_t		 len;
	unsigned	 i;

	fx->cf.max_bad_commands = 2;
	put(fx, 0, "a@b.example", BOTH, 2, MSG1);
	cl_login(fx, &a, 0, HOST, PW1);
	cl_start(fx, &b, 1);
	cl_expect(&b, "+OK sdps ready");
	for (i = 0; i < 3; i++) {
		cl_send(&b, "USER " HOST);
		cl_expect(&b, "+OK");
		cl_send(&b, "PASS " PW1);
		cl_expect(&b, "-ERR [IN-USE] ");
	}
	cl_send(&b, "CAPA");
	cl_expect(&b, "+OK");
	free(cl_multi(&b, &len));
	cl_send(&b, "BOGUS");
	cl_expect(&b, "-ERR unknown");
	cl_send(&b, "BOGUS");
	cl_expect(&b, "-ERR unknown");
	assert_int_equal(cl_line(&b, line, sizeof(line)), -1);
	assert_int_equal(cl_end(&b), 0);
	cl_quit(&a, "+OK");
}

static void
test_pipelining(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	const char	 script[] = "USER " HOST "\r\nPASS " PW1 "\r\nSTAT\r\n"
	    "LIST 1\r\nRETR 1\r\nNOOP\r\nDELE 1\r\nSTAT\r\nQUIT\r\n";
	size_t		 len;

	put(fx, 1, "a@b.example", ALICE, 1, MSG1);
	cl_start(fx, &c, 0);
	assert_int_equal(write(c.fd, script, sizeof(script) - 1),
	    (ssize_t)sizeof(script) - 1);
	cl_expect(&c, "+OK sdps ready");
	cl_expect(&c, "+OK");
	cl_expect(&c, "+OK maildrop has 1");
	cl_expect(&c, "+OK 1 ");
	cl_expect(&c, "+OK 1 ");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_expect(&c, "+OK");
	cl_expect(&c, "+OK message 1 deleted");
	cl_expect(&c, "+OK 0 0");
	cl_expect(&c, "+OK");
	assert_int_equal(cl_end(&c), 0);
	assert_int_equal(count_listed(fx, 1, NULL), 0);
}

static void
test_kill_commits_rd(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	struct store_msg m;
	struct sb_slot	 copy;
	uint64_t	 id;
	size_t		 len;

	id = put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	cl_login(fx, &c, 3, HOST, PW1);
	cl_send(&c, "RETR 1");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_send(&c, "DELE 1");
	cl_expect(&c, "+OK");
	/* The scoreboard shows the session. */
	sb_slot_read(&fx->sb.slots[3], &copy);
	assert_int_equal(copy.state, SB_TRANS);
	assert_string_equal(copy.maildrop, HOST);
	assert_string_equal(copy.peer, "192.0.2.7");
	assert_int_equal(copy.retr, 1);
	assert_int_equal(copy.dele, 1);
	assert_true(copy.session_id != 0);
	assert_true(copy.punts_used == 3);
	/* sdps-ctl kill: RD is kept, the DELE is not. */
	assert_int_equal(kill(c.pid, SIGUSR2), 0);
	assert_int_equal(cl_end(&c), 0);
	assert_int_equal(store_msg_get(fx->st[0], id, &m), STORE_OK);
	assert_true(m.flags & STORE_F_READ);
	store_msg_free(&m);
	sb_slot_read(&fx->sb.slots[3], &copy);
	assert_int_equal(copy.session_id, 0);
}

static void
test_no_punt(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 path[PATH_MAX], moved[PATH_MAX + 8];

	assert_true(strlen(fx->cf.punts[1].path) < 200);
	size_t		 len;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	put(fx, 1, "a@b.example", ALICE, 1, MSG1);
	/* One punt gone: the other still serves. */
	snprintf(path, sizeof(path), "%s", fx->cf.punts[1].path);
	snprintf(moved, sizeof(moved), "%s.off", path);
	assert_int_equal(rename(path, moved), 0);
	cl_login(fx, &c, 0, HOST, PW1);
	cl_send(&c, "STAT");
	cl_expect(&c, "+OK 1 ");
	cl_send(&c, "*ENV 1");
	cl_expect(&c, "+OK");
	free(cl_multi(&c, &len));
	cl_quit(&c, "+OK");
	/* Both gone: [SYS/TEMP]. */
	snprintf(path, sizeof(path), "%s", fx->cf.punts[0].path);
	snprintf(moved + 0, sizeof(moved), "%s.off", path);
	assert_int_equal(rename(path, moved), 0);
	cl_start(fx, &c, 0);
	cl_expect(&c, "+OK sdps ready");
	cl_send(&c, "USER " HOST);
	cl_expect(&c, "+OK");
	cl_send(&c, "PASS " PW1);
	cl_expect(&c, "-ERR [SYS/TEMP] ");
	cl_quit(&c, "+OK");
	assert_int_equal(rename(moved, path), 0);
	snprintf(path, sizeof(path), "%s", fx->cf.punts[1].path);
	snprintf(moved, sizeof(moved), "%s.off", path);
	assert_int_equal(rename(moved, path), 0);
}

/* ---- TLS, the cleartext policy and SASL (issue 10) ---- */

#define B64_GOOD	"AGZyZWQuZXhhbXBsZS5uZXQAZmlyc3Qtc2VjcmV0"
#define B64_HOST	"ZnJlZC5leGFtcGxlLm5ldA=="
#define B64_PW1		"Zmlyc3Qtc2VjcmV0"
#define B64_WRONG_PW	"AGZyZWQuZXhhbXBsZS5uZXQAd3Jvbmc="

static const struct config_listener L_NONE = {
	"127.0.0.1:110", CONFIG_PROTO_POP3, CONFIG_TLS_NONE, "" };
static const struct config_listener L_STLS = {
	"127.0.0.1:110", CONFIG_PROTO_POP3, CONFIG_TLS_STARTTLS, "" };
static const struct config_listener L_IMPL = {
	"127.0.0.1:995", CONFIG_PROTO_POP3, CONFIG_TLS_IMPLICIT, "" };
static char dummy_tls;

/* The CAPA tags of the table that s is offered, comma-separated. */
static void
offered_tags(const struct session *s, char *out, size_t outlen)
{
	size_t	 i, n = 0;

	out[0] = '\0';
	for (i = 0; i < session_ncmds; i++) {
		if (session_cmds[i].capa == NULL || (session_cmds[i].offered !=
		    NULL && !session_cmds[i].offered(s)))
			continue;
		n += (size_t)snprintf(out + n, outlen - n, "%s%s",
		    n > 0 ? "," : "", session_cmds[i].capa);
	}
}

static void
capa_case(enum config_cleartext policy, const struct config_listener *l,
    bool ctx, bool tls, bool loopback, unsigned state, const char *want)
{
	struct config		 cf;
	struct session_env	 w;
	struct session		 s;
	char			 got[256];

	config_defaults(&cf);
	cf.allow_cleartext = policy;
	memset(&w, 0, sizeof(w));
	w.cf = &cf;
	w.listener = l;
	w.tls = ctx ? (struct tls_server *)&dummy_tls : NULL;
	memset(&s, 0, sizeof(s));
	s.w = &w;
	s.cf = &cf;
	s.tls = tls;
	s.loopback = loopback;
	s.state = state;
	offered_tags(&s, got, sizeof(got));
	if (strcmp(got, want) != 0)
		fail_msg("policy %d listener %d ctx %d tls %d loopback %d "
		    "state %u: got \"%s\", want \"%s\"", (int)policy,
		    l != NULL ? (int)l->tls : -1, ctx, tls, loopback, state,
		    got, want);
}

#define ALL	"TOP,UIDL,USER,SASL PLAIN LOGIN"
#define NOPW	"TOP,UIDL"
#define WSTLS	"TOP,UIDL,STLS"

static void
test_capa_security(void **state)
{
	enum config_cleartext Y = CONFIG_CLEARTEXT_YES,
	    L = CONFIG_CLEARTEXT_LOOPBACK, N = CONFIG_CLEARTEXT_NO;

	(void)state;
	/* No listener (tests, fuzzing) is a plain one. */
	capa_case(Y, NULL, false, false, false, ST_AUTH, ALL);
	capa_case(L, NULL, false, false, false, ST_AUTH, NOPW);
	capa_case(L, NULL, false, false, true, ST_AUTH, ALL);
	capa_case(N, NULL, false, false, true, ST_AUTH, NOPW);
	capa_case(L, &L_NONE, true, false, false, ST_AUTH, NOPW);
	/* STARTTLS: STLS until TLS, and only with a context. */
	capa_case(L, &L_STLS, true, false, false, ST_AUTH, WSTLS);
	capa_case(N, &L_STLS, true, false, true, ST_AUTH, WSTLS);
	capa_case(Y, &L_STLS, true, false, false, ST_AUTH,
	    "TOP,UIDL,USER,STLS,SASL PLAIN LOGIN");
	capa_case(L, &L_STLS, false, false, false, ST_AUTH, NOPW);
	capa_case(L, &L_STLS, true, true, false, ST_AUTH, ALL);
	capa_case(N, &L_STLS, true, true, false, ST_AUTH, ALL);
	/* Not once logged in. */
	capa_case(Y, &L_STLS, true, false, false, ST_TRANS, ALL);
	/* Implicit: TLS from the start. */
	capa_case(N, &L_IMPL, true, true, false, ST_AUTH, ALL);
	capa_case(L, &L_IMPL, true, true, false, ST_TRANS, ALL);
}

/* CAPA's SASL tag names exactly the mechanisms AUTH knows. */
static void
test_sasl_tag(void **state)
{
	char	 want[128];
	size_t	 i, n;
	bool	 found = false;

	(void)state;
	n = (size_t)snprintf(want, sizeof(want), "SASL");
	for (i = 0; sasl_mech_name(i) != NULL; i++)
		n += (size_t)snprintf(want + n, sizeof(want) - n, " %s",
		    sasl_mech_name(i));
	for (i = 0; i < session_ncmds; i++)
		if (session_cmds[i].fn == cmd_auth) {
			assert_string_equal(session_cmds[i].capa, want);
			found = true;
		}
	assert_true(found);
}

static void
b64_ok(const char *in, const char *want, size_t wantlen)
{
	unsigned char	 out[64];
	size_t		 n = 99;

	if (sasl_b64_decode(in, strlen(in), out, sizeof(out) - 1, &n) != 0)
		fail_msg("\"%s\" refused", in);
	assert_int_equal(n, wantlen);
	assert_memory_equal(out, want, wantlen);
	assert_int_equal(out[n], 0);
}

static void
b64_bad(const char *in, size_t cap)
{
	unsigned char	 out[64];
	size_t		 n = 99;

	if (sasl_b64_decode(in, strlen(in), out, cap, &n) != -1)
		fail_msg("\"%s\" accepted", in);
	assert_int_equal(n, 99);
}

static void
test_b64(void **state)
{
	(void)state;
	/* RFC 4648 §10. */
	b64_ok("", "", 0);
	b64_ok("Zg==", "f", 1);
	b64_ok("Zm8=", "fo", 2);
	b64_ok("Zm9v", "foo", 3);
	b64_ok("Zm9vYg==", "foob", 4);
	b64_ok("Zm9vYmE=", "fooba", 5);
	b64_ok("Zm9vYmFy", "foobar", 6);
	b64_ok("AGEAYg==", "\0a\0b", 4);
	b64_ok("+/+/", "\xfb\xff\xbf", 3);
	b64_bad("Zg=", 63);		/* not a multiple of 4 */
	b64_bad("Zg", 63);
	b64_bad("Zm9vY", 63);
	b64_bad("Zg==Zg==", 63);	/* padding inside */
	b64_bad("Z===", 63);		/* three pad characters */
	b64_bad("====", 63);
	b64_bad("Zg=a", 63);		/* data after padding */
	b64_bad("Zh==", 63);		/* pad bits not zero */
	b64_bad("Zm9=", 63);
	b64_bad("Zm9v\n", 63);		/* no white space */
	b64_bad(" Zm9v", 63);
	b64_bad("Zm 9v", 63);
	b64_bad("Zm9v!A==", 63);
	b64_bad("Zm9-", 63);		/* base64url is not base64 */
	b64_bad("Zm9_", 63);
	b64_bad("Zm9vYmFy", 5);		/* too long for out */
	b64_ok("Zm9vYmFy", "foobar", 6);
}

static enum sasl_plain_res
plain(const char *buf, size_t len, const char **zid, const char **cid,
    const char **pw)
{
	static char	 copy[128];
	char		*p;
	size_t		 pwlen;
	enum sasl_plain_res r;

	memcpy(copy, buf, len);
	copy[len] = '\0';
	r = sasl_plain_parse(copy, len, zid, cid, &p, &pwlen);
	if (r == SASL_PLAIN_OK)
		assert_int_equal(pwlen, strlen(p));
	*pw = p;
	return r;
}

#define PL(lit)	lit, sizeof(lit) - 1

static void
test_plain_parse(void **state)
{
	const char	*zid, *cid, *pw;

	(void)state;
	assert_int_equal(plain(PL("\0" HOST "\0" PW1), &zid, &cid, &pw),
	    SASL_PLAIN_OK);
	assert_string_equal(zid, "");
	assert_string_equal(cid, HOST);
	assert_string_equal(pw, PW1);
	assert_int_equal(plain(PL(HOST "\0" HOST "\0pw with space"), &zid,
	    &cid, &pw), SASL_PLAIN_OK);
	assert_string_equal(pw, "pw with space");
	assert_int_equal(plain(PL("\0" HOST PW1), &zid, &cid, &pw),
	    SASL_PLAIN_NULS);
	assert_int_equal(plain(PL("\0" HOST "\0" PW1 "\0"), &zid, &cid, &pw),
	    SASL_PLAIN_NULS);
	assert_int_equal(plain(PL("\0\0" HOST "\0" PW1), &zid, &cid, &pw),
	    SASL_PLAIN_NULS);
	assert_int_equal(plain(PL(""), &zid, &cid, &pw), SASL_PLAIN_NULS);
	assert_int_equal(plain(PL(HOST), &zid, &cid, &pw), SASL_PLAIN_NULS);
	assert_int_equal(plain(PL("\0\0" PW1), &zid, &cid, &pw),
	    SASL_PLAIN_NO_AUTHCID);
	assert_int_equal(plain(PL("\0" HOST "\0"), &zid, &cid, &pw),
	    SASL_PLAIN_NO_PASSWORD);
	assert_int_equal(plain(PL("bob.example.net\0" HOST "\0" PW1), &zid,
	    &cid, &pw), SASL_PLAIN_AUTHZID);
	/* Equal means equal: no case folding. */
	assert_int_equal(plain(PL("FRED.example.net\0" HOST "\0" PW1), &zid,
	    &cid, &pw), SASL_PLAIN_AUTHZID);
}

/* A session started and greeted. */
static void
cl_open(struct fx *fx, struct cl *c)
{
	cl_start(fx, c, 0);
	cl_expect(c, "+OK sdps ready");
}

static void
cl_exact(struct cl *c, const char *want)
{
	char	 line[2048];

	if (cl_line(c, line, sizeof(line)) == -1)
		fail_msg("EOF, expected \"%s\"", want);
	if (strcmp(line, want) != 0)
		fail_msg("got \"%s\", expected \"%s\"", line, want);
}

/* One command and its reply: exactly want (cl_say), or starting with it
 * (cl_sayp). */
#define cl_say(c, want, ...)	do {					\
	cl_send((c), __VA_ARGS__);					\
	cl_exact((c), (want));						\
} while (0)
#define cl_sayp(c, want, ...)	do {					\
	cl_send((c), __VA_ARGS__);					\
	cl_expect((c), (want));						\
} while (0)

/* CAPA's body in one string. */
static char *
cl_capa(struct cl *c)
{
	size_t	 len;

	cl_send(c, "CAPA");
	cl_expect(c, "+OK");
	return cl_multi(c, &len);
}

static void
test_cleartext_policy(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		*body;
	size_t		 len;
	int		 i;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	fx->cf.allow_cleartext = CONFIG_CLEARTEXT_NO;
	fx->cf.max_bad_commands = 2;
	cl_open(fx, &c);
	body = cl_capa(&c);
	assert_null(strstr(body, "USER"));
	assert_null(strstr(body, "SASL"));
	assert_null(strstr(body, "STLS"));
	free(body);
	/* Refused before the password; not bad commands (a code). */
	for (i = 0; i < 2; i++) {
		cl_send(&c, "USER " HOST);
		cl_exact(&c, "-ERR [AUTH] cleartext login refused, this server"
		    " offers no TLS");
		cl_send(&c, "PASS " PW1);
		cl_expect(&c, "-ERR [AUTH] cleartext login refused");
		cl_send(&c, "AUTH PLAIN " B64_GOOD);
		cl_expect(&c, "-ERR [AUTH] cleartext login refused");
		cl_send(&c, "AUTH LOGIN");
		cl_expect(&c, "-ERR [AUTH] cleartext login refused");
	}
	/* AUTH alone lists what is usable here: nothing. */
	cl_sayp(&c, "+OK", "AUTH");
	body = cl_multi(&c, &len);
	assert_string_equal(body, "");
	free(body);
	cl_quit(&c, "+OK");
	assert_int_equal(atomic_load(&fx->sb.hdr->total_auth_failures), 0);
	assert_int_equal(atomic_load(&fx->sb.hdr->total_auth_hashes), 0);

	/* Where STLS and an implicit port exist, the reason names both. */
	fx->cf.listeners[0] = L_STLS;
	fx->cf.listeners[1] = L_IMPL;
	fx->cf.nlisteners = 2;
	fx->listener = &fx->cf.listeners[0];
	fx->tls = (struct tls_server *)&dummy_tls;
	cl_open(fx, &c);
	body = cl_capa(&c);
	assert_string_equal(body, "TOP\r\nUIDL\r\nSTLS\r\nRESP-CODES\r\n"
	    "AUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE 30\r\n"
	    "IMPLEMENTATION sdps\r\nX-SDPS\r\n");
	free(body);
	cl_say(&c, "-ERR [AUTH] cleartext login refused, use STLS or TLS"
	    " on port 995", "USER " HOST);
	cl_quit(&c, "+OK");
	/* Without STLS here, only the port. */
	fx->listener = &L_NONE;
	cl_open(fx, &c);
	cl_say(&c, "-ERR [AUTH] cleartext login refused, use TLS on port"
	    " 995", "AUTH PLAIN");
	cl_quit(&c, "+OK");
	/* allow_cleartext = yes: USER, PASS and AUTH as before. */
	fx->cf.allow_cleartext = CONFIG_CLEARTEXT_YES;
	cl_login(fx, &c, 0, HOST, PW1);
	cl_quit(&c, "+OK");
}

static void
test_stls_refusals(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	/* No STLS on a plain listener, nor without a context. */
	cl_open(fx, &c);
	cl_say(&c, "-ERR STLS not offered on this port", "STLS");
	cl_quit(&c, "+OK");
	fx->listener = &L_STLS;
	cl_open(fx, &c);
	cl_say(&c, "-ERR STLS not offered on this port", "STLS");
	cl_quit(&c, "+OK");
	fx->tls = (struct tls_server *)&dummy_tls;
	/* After USER, even a bad one, and after AUTH, even a failed one. */
	cl_open(fx, &c);
	cl_sayp(&c, "-ERR invalid user name", "USER -bad-");
	cl_say(&c, "-ERR STLS only before USER or AUTH", "STLS");
	cl_quit(&c, "+OK");
	cl_open(fx, &c);
	cl_sayp(&c, "-ERR invalid base64", "AUTH PLAIN !!!!");
	cl_say(&c, "-ERR STLS only before USER or AUTH", "STLS");
	cl_quit(&c, "+OK");
	/* The refusal changes nothing: the USER still stands. */
	cl_open(fx, &c);
	cl_sayp(&c, "+OK", "USER " HOST);
	cl_say(&c, "-ERR STLS only before USER or AUTH", "STLS");
	cl_sayp(&c, "+OK maildrop has 1", "PASS " PW1);
	cl_say(&c, "-ERR STLS not allowed after login", "STLS");
	cl_quit(&c, "+OK");
}

static void
test_auth_plain(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		*body;
	size_t		 len;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	cl_open(fx, &c);
	cl_sayp(&c, "+OK", "AUTH");
	body = cl_multi(&c, &len);
	assert_string_equal(body, "PLAIN\r\nLOGIN\r\n");
	free(body);
	cl_sayp(&c, "+OK maildrop has 1 messages", "AUTH PLAIN " B64_GOOD);
	cl_sayp(&c, "-ERR AUTH not allowed after login", "AUTH PLAIN " B64_GOOD);
	cl_quit(&c, "+OK");
	/* Without the initial response: the empty challenge "+ ". */
	cl_open(fx, &c);
	cl_say(&c, "+ ", "auth plain");
	cl_sayp(&c, "+OK maildrop has 1 messages", "%s", B64_GOOD);
	cl_quit(&c, "+OK");
	/* authzid = authcid; the second password; user+host names. */
	cl_open(fx, &c);
	cl_sayp(&c, "+OK maildrop has 1", "AUTH PLAIN ZnJlZC5leGFtcGxlLm5ldABmcmVkLmV4YW1wbGUubmV0AG"
	    "ZpcnN0LXNlY3JldA==");
	cl_quit(&c, "+OK");
	cl_open(fx, &c);
	cl_sayp(&c, "+OK maildrop has 1", "AUTH PLAIN AGFsaWNlK2ZyZWQuZXhhbXBsZS5uZXQAZmlyc3Qtc2VjcmV0");
	cl_quit(&c, "+OK");
	/* A wrong password is an auth failure, as PASS's. */
	cl_open(fx, &c);
	cl_say(&c, "-ERR [AUTH] invalid user name or password", "AUTH PLAIN " B64_WRONG_PW);
	cl_sayp(&c, "+OK", "USER " HOST);
	cl_say(&c, "-ERR [AUTH] invalid user name or password", "PASS wrong");
	cl_sayp(&c, "+OK maildrop has 1", "AUTH PLAIN " B64_GOOD);
	cl_quit(&c, "+OK");
	assert_int_equal(atomic_load(&fx->sb.hdr->total_auth_failures), 2);
}

static void
test_auth_malformed(void **state)
{
	static const struct {
		const char	*line, *want;
	} cases[] = {
		{ "AUTH PLAIN =", "-ERR malformed PLAIN response" },
		{ "AUTH PLAIN AGZy!", "-ERR invalid base64 in response" },
		{ "AUTH PLAIN Zg=", "-ERR invalid base64 in response" },
		{ "AUTH PLAIN AGZyZWQuZXhhbXBsZS5uZXRmaXJzdC1zZWNyZXQ=",
		    "-ERR malformed PLAIN response" },		/* one NUL */
		{ "AUTH PLAIN AGZyZWQuZXhhbXBsZS5uZXQAZmlyc3Qtc2VjcmV0AHg=",
		    "-ERR malformed PLAIN response" },		/* three */
		{ "AUTH PLAIN AABmcmVkLmV4YW1wbGUubmV0AGZpcnN0LXNlY3JldA==",
		    "-ERR malformed PLAIN response" },
		{ "AUTH PLAIN AGZyZWQuZXhhbXBsZS5uZXQA", "-ERR empty password" },
		{ "AUTH PLAIN Ym9iLmV4YW1wbGUubmV0AGZyZWQuZXhhbXBsZS5uZXQAZmlyc"
		    "3Qtc2VjcmV0", "-ERR authorization identity must be empty"
		    " or the user name" },
		{ "AUTH PLAIN AC1iYWQtAHB3", "-ERR invalid user name" },
		{ "AUTH CRAM-MD5", "-ERR unsupported SASL mechanism" },
		{ "AUTH PLAIN a b c", "-ERR AUTH: wrong number of arguments" },
	};
	struct fx	*fx = *state;
	struct cl	 c;
	size_t		 i;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	cl_open(fx, &c);
	for (i = 0; i < NITEMS(cases); i++) {
		cl_send(&c, "%s", cases[i].line);
		cl_exact(&c, cases[i].want);
	}
	/* A continuation: bad base64, white space, a cancel. */
	cl_say(&c, "+ ", "AUTH PLAIN");
	cl_say(&c, "-ERR invalid base64 in response", " " B64_GOOD);
	cl_say(&c, "+ ", "AUTH PLAIN");
	cl_send(&c, "=");	/* "=" is only for an initial response */
	cl_exact(&c, "-ERR invalid base64 in response");
	cl_say(&c, "+ ", "AUTH PLAIN");
	cl_say(&c, "-ERR AUTH cancelled", "*");
	/* Nothing changed: no failure counted, none hashed, login works. */
	cl_sayp(&c, "+OK maildrop has 1", "AUTH PLAIN " B64_GOOD);
	cl_quit(&c, "+OK");
	assert_int_equal(atomic_load(&fx->sb.hdr->total_auth_failures), 0);
	assert_int_equal(atomic_load(&fx->sb.hdr->total_auth_hashes), 1);
}

static void
test_auth_login(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;

	put(fx, 0, "a@b.example", ALICE, 1, MSG1);
	cl_open(fx, &c);
	cl_say(&c, "+ VXNlcm5hbWU6", "AUTH LOGIN");
	cl_say(&c, "+ UGFzc3dvcmQ6", "%s", B64_HOST);
	cl_say(&c, "-ERR [AUTH] invalid user name or password", "d3Jvbmc=");
	cl_say(&c, "+ VXNlcm5hbWU6", "AUTH LOGIN");
	cl_say(&c, "-ERR AUTH cancelled", "*");
	cl_send(&c, "AUTH LOGIN LWJhZC0=");	/* "-bad-" */
	cl_exact(&c, "-ERR invalid user name");
	cl_send(&c, "AUTH LOGIN " B64_HOST);	/* initial response */
	cl_exact(&c, "+ UGFzc3dvcmQ6");
	cl_say(&c, "-ERR empty password", "%s", "");
	cl_say(&c, "+ UGFzc3dvcmQ6", "AUTH LOGIN " B64_HOST);
	cl_sayp(&c, "+OK maildrop has 1", "%s", B64_PW1);
	cl_quit(&c, "+OK");
	assert_int_equal(atomic_load(&fx->sb.hdr->total_auth_failures), 1);
}

/*
 * A response read inside AUTH moves conn's buffer: the command after it,
 * in the same segment, must survive the wipe of AUTH's own line.
 */
static void
test_auth_response_moves_buffer(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	const char	 more[] = "*\r\nNOOP\r\nCAPA\r\n";

	cl_open(fx, &c);
	cl_say(&c, "+ ", "AUTH PLAIN");
	assert_int_equal(write(c.fd, more, sizeof(more) - 1),
	    (ssize_t)sizeof(more) - 1);
	cl_exact(&c, "-ERR AUTH cancelled");
	cl_expect(&c, "-ERR NOOP not allowed before login");
	cl_expect(&c, "+OK capability list follows");
	free(cl_multi(&c, &(size_t){ 0 }));
	cl_quit(&c, "+OK");
}

/* AUTH's failures count toward auth_max_failures like PASS's. */
static void
test_auth_failures_count(void **state)
{
	struct fx	*fx = *state;
	struct cl	 c;
	char		 line[256];

	cl_open(fx, &c);
	cl_say(&c, "-ERR [AUTH] invalid user name or password", "AUTH PLAIN " B64_WRONG_PW);
	cl_sayp(&c, "+OK", "USER " HOST);
	cl_say(&c, "-ERR [AUTH] invalid user name or password", "PASS nope");
	cl_say(&c, "+ UGFzc3dvcmQ6", "AUTH LOGIN " B64_HOST);
	cl_say(&c, "-ERR [AUTH] invalid user name or password", "d3Jvbmc=");
	assert_int_equal(cl_line(&c, line, sizeof(line)), -1);
	assert_int_equal(cl_end(&c), 0);
	assert_int_equal(atomic_load(&fx->sb.hdr->total_auth_failures), 3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
#define T(f)	cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_state_masks),
		T(test_capa),
		T(test_passwords),
		T(test_sizes_retr),
		T(test_top),
		T(test_uidl_env),
		T(test_look_only_writes_nothing),
		T(test_dele_rset_quit),
		T(test_msn_reasons),
		T(test_dummy_after_smtp),
		T(test_locks),
		T(test_user_views),
		T(test_bad_lines),
		T(test_bad_command_limit),
		T(test_coded_err_not_bad),
		T(test_pipelining),
		T(test_kill_commits_rd),
		T(test_no_punt),
		cmocka_unit_test(test_capa_security),
		cmocka_unit_test(test_sasl_tag),
		cmocka_unit_test(test_b64),
		cmocka_unit_test(test_plain_parse),
		T(test_cleartext_policy),
		T(test_stls_refusals),
		T(test_auth_plain),
		T(test_auth_malformed),
		T(test_auth_login),
		T(test_auth_response_moves_buffer),
		T(test_auth_failures_count),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	log_init("test_session", true, 0, false);
	if (auth_global_init() == -1)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
