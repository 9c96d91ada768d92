/*
 * Unit tests for tls (the context, the shared ticket keys) and conn's TLS
 * transport: real OpenSSL on both ends over loopback TCP.  The server
 * side is sdps's (tls_server + conn); the client is a plain OpenSSL
 * client in a thread of this process, or in the parent when the servers
 * are forked processes (resumption across workers).  Certificates are
 * made at start with the openssl CLI, as tests/integration/tlsutil.py
 * does.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <limits.h>
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

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sdps/config.h"
#include "sdps/conn.h"
#include "sdps/tls.h"

#ifndef TCP_ULP
#define TCP_ULP		31
#endif

/* conn_tls.c's BODY_CHUNK: the boundary sizes the copy path must get
 * right. */
#define CHUNK		(256 * 1024)
#define RECORD		16384
/* Pipelined commands in one record: more than conn's 4 KiB buffer. */
#define PIPELINE_N	1000

static char	 dir[PATH_MAX];
static char	 ca[PATH_MAX + 32], cert[PATH_MAX + 32], key[PATH_MAX + 32];
static char	 cert2[PATH_MAX + 32], key2[PATH_MAX + 32];
static char	 garbage[PATH_MAX + 32], enckey[PATH_MAX + 32];

/* ---- fixtures ---- */

static int run(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int
run(const char *fmt, ...)
{
	char	 cmd[4 * PATH_MAX];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0 ? 0 : -1;
}

/* A CA and two leaves signed by it (ECDSA P-256), like tlsutil.py. */
static int
make_leaf(const char *name, char *chain, char *keyp)
{
	snprintf(chain, PATH_MAX + 32, "%s/%s.pem", dir, name);
	snprintf(keyp, PATH_MAX + 32, "%s/%s.key", dir, name);
	return run("cd %s && openssl genpkey -algorithm EC -pkeyopt "
	    "ec_paramgen_curve:P-256 -out %s.key 2>/dev/null && "
	    "openssl req -new -key %s.key -out %s.csr -subj /CN=localhost && "
	    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n"
	    "basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\n"
	    "extendedKeyUsage=serverAuth\\n' > %s.ext && "
	    "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -out %s.leaf.pem -days 30 -extfile %s.ext "
	    "2>/dev/null && cat %s.leaf.pem ca.pem > %s.pem",
	    dir, name, name, name, name, name, name, name, name, name);
}

static int
setup_certs(void **state)
{
	FILE	*f;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sdps-test-tls-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	if (run("cd %s && openssl genpkey -algorithm EC -pkeyopt "
	    "ec_paramgen_curve:P-256 -out ca.key 2>/dev/null && "
	    "openssl req -x509 -new -key ca.key -out ca.pem -days 30 "
	    "-subj '/CN=sdps test CA' "
	    "-addext basicConstraints=critical,CA:TRUE "
	    "-addext keyUsage=critical,keyCertSign,cRLSign", dir) == -1 ||
	    make_leaf("server", cert, key) == -1 ||
	    make_leaf("server2", cert2, key2) == -1)
		return -1;
	snprintf(enckey, sizeof(enckey), "%s/enc.key", dir);
	if (run("openssl pkey -in %s -aes256 -passout pass:secret -out %s",
	    key, enckey) == -1)
		return -1;
	snprintf(garbage, sizeof(garbage), "%s/garbage.pem", dir);
	if ((f = fopen(garbage, "w")) == NULL)
		return -1;
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n"
	    "-----END CERTIFICATE-----\n", f);
	fclose(f);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int
teardown_certs(void **state)
{
	(void)state;
	return run("rm -rf %s", dir);
}

/* A config with just what tls.c reads. */
static void
config_tls(struct config *cf, const char *c, const char *k)
{
	memset(cf, 0, sizeof(*cf));
	snprintf(cf->file, sizeof(cf->file), "sdps.conf");
	snprintf(cf->tls.cert, sizeof(cf->tls.cert), "%s", c);
	snprintf(cf->tls.key, sizeof(cf->tls.key), "%s", k);
	cf->tls.cert_line = 12;
	cf->tls.key_line = 13;
	cf->tls.min_protocol_line = 14;
	cf->tls.ciphers_line = 15;
	cf->tls.ciphersuites_line = 16;
	cf->tls.groups_line = 17;
	cf->tls.handshake_timeout_s = 10;
	cf->tls.ticket_lifetime_s = 3600;
	cf->tls.ktls = false;
}

/* tls_pem_read + tls_server_new; NULL with err. */
static struct tls_server *
server_from(const struct config *cf, struct tls_tickets *tk, char *err,
    size_t errlen)
{
	struct tls_pem		 pem;
	struct tls_server	*t;

	if (tls_pem_read(cf, &pem, err, errlen) == -1)
		return NULL;
	t = tls_server_new(cf, &pem, tk, err, errlen);
	tls_pem_wipe(&pem);
	return t;
}

static struct tls_server *
server_default(struct tls_tickets *tk)
{
	struct config		 cf;
	struct tls_server	*t;
	char			 err[512] = "";

	config_tls(&cf, cert, key);
	t = server_from(&cf, tk, err, sizeof(err));
	if (t == NULL)
		fprintf(stderr, "server_from: %s\n", err);
	assert_non_null(t);
	return t;
}

/* A listening loopback TCP socket; its port in *port. */
static int
listen_lo(uint16_t *port)
{
	struct sockaddr_in	 sin;
	socklen_t		 sl = sizeof(sin);
	int			 s;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true((s = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(s, 16), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
	*port = ntohs(sin.sin_port);
	return s;
}

static int
connect_lo(uint16_t port)
{
	struct sockaddr_in	 sin;
	int			 s;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(port);
	if ((s = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return -1;
	if (connect(s, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		close(s);
		return -1;
	}
	return s;
}

/* A connected loopback TCP pair: sv[0] the server's, sv[1] the client's. */
static void
tcp_pair(int sv[2])
{
	uint16_t	 port;
	int		 l = listen_lo(&port);

	assert_true((sv[1] = connect_lo(port)) >= 0);
	assert_true((sv[0] = accept(l, NULL, NULL)) >= 0);
	close(l);
}

/* ---- the client (plain blocking OpenSSL) ---- */

static SSL_CTX *
client_ctx(int minv, int maxv)
{
	SSL_CTX	*ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, minv);
	SSL_CTX_set_max_proto_version(ctx, maxv);
	if (maxv < TLS1_2_VERSION)
		SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
	SSL_CTX_load_verify_locations(ctx, ca, NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* No client cache: it would mark a TLS 1.3 session used once
	 * not resumable, and the tests reuse one on purpose. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

/* One line from the client's SSL (octet by octet: tests only). */
static int
ssl_line(SSL *ssl, char *buf, size_t len)
{
	size_t	 n = 0;

	while (n + 1 < len) {
		if (SSL_read(ssl, buf + n, 1) != 1)
			return -1;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return 0;
}

/* One line in clear from fd. */
static int
fd_line(int fd, char *buf, size_t len)
{
	size_t	 n = 0;

	while (n + 1 < len) {
		if (read(fd, buf + n, 1) != 1)
			return -1;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return 0;
}

static SSL *
client_connect(SSL_CTX *ctx, int fd, SSL_SESSION *sess)
{
	SSL	*ssl = SSL_new(ctx);

	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (sess != NULL)
		SSL_set_session(ssl, sess);
	if (SSL_connect(ssl) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

/*
 * The client thread.  script: "hello" (handshake, send "hello", expect
 * "+OK hello"), "stls" (the injection case), "silent" (connect, send
 * nothing, wait for the close), "old" (a TLS 1.0/1.1 client), "body"
 * (read everything until close_notify).
 */
struct client {
	int		 fd;
	const char	*script;
	int		 maxv;
	int		 ok;		/* the script ran as expected */
	char		 got[512];	/* a line it read */
	char		 cipher[128];	/* "protocol/cipher" it saw */
	char		*body;		/* "body": what arrived */
	size_t		 body_len;
	pthread_t	 th;
};

static void
client_body(struct client *cl, SSL *ssl)
{
	size_t	 cap = 1 << 16;
	int	 n;

	cl->body = malloc(cap);
	for (;;) {
		if (cl->body_len + 65536 > cap)
			cl->body = realloc(cl->body, cap *= 2);
		n = SSL_read(ssl, cl->body + cl->body_len, 65536);
		if (n <= 0)
			break;
		cl->body_len += (size_t)n;
	}
	cl->ok = SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN;
}

static void *
client_main(void *arg)
{
	struct client	*cl = arg;
	SSL_CTX		*ctx;
	SSL		*ssl = NULL;
	char		 buf[256];
	const char	*s = cl->script;

	ctx = client_ctx(strcmp(s, "old") == 0 ? TLS1_VERSION :
	    TLS1_2_VERSION, cl->maxv != 0 ? cl->maxv : TLS1_3_VERSION);
	if (strcmp(s, "silent") == 0) {
		/* Wait for the server to give up: EOF, or a reset. */
		cl->ok = read(cl->fd, buf, sizeof(buf)) <= 0;
	} else if (strcmp(s, "stls") == 0) {
		/* One write: the USER rides in the STLS packet. */
		if (write(cl->fd, "STLS\r\nUSER x\r\n", 14) == 14 &&
		    fd_line(cl->fd, buf, sizeof(buf)) == 0 &&
		    strcmp(buf, "+OK begin TLS\r\n") == 0 &&
		    (ssl = client_connect(ctx, cl->fd, NULL)) != NULL &&
		    SSL_write(ssl, "CAPA\r\n", 6) == 6 &&
		    ssl_line(ssl, cl->got, sizeof(cl->got)) == 0)
			cl->ok = 1;
	} else if (strcmp(s, "old") == 0) {
		cl->ok = (ssl = client_connect(ctx, cl->fd, NULL)) == NULL;
	} else if (strcmp(s, "pipeline") == 0) {
		/* PIPELINE_N commands in one SSL_write: one record, larger
		 * than conn's read buffer, then nothing until the reply. */
		char	 big[PIPELINE_N * 12 + 1];
		int	 i, o = 0;

		for (i = 0; i < PIPELINE_N; i++)
			o += snprintf(big + o, sizeof(big) - (size_t)o,
			    "NOOP %05d\r\n", i);
		if ((ssl = client_connect(ctx, cl->fd, NULL)) != NULL &&
		    SSL_write(ssl, big, o) == o &&
		    ssl_line(ssl, cl->got, sizeof(cl->got)) == 0)
			cl->ok = 1;
	} else if (strcmp(s, "body") == 0) {
		if ((ssl = client_connect(ctx, cl->fd, NULL)) != NULL)
			client_body(cl, ssl);
	} else {
		if ((ssl = client_connect(ctx, cl->fd, NULL)) != NULL &&
		    SSL_write(ssl, "hello\r\n", 7) == 7 &&
		    ssl_line(ssl, cl->got, sizeof(cl->got)) == 0)
			cl->ok = 1;
	}
	if (ssl != NULL) {
		snprintf(cl->cipher, sizeof(cl->cipher), "%s/%s",
		    SSL_get_version(ssl), SSL_get_cipher_name(ssl));
		SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	SSL_CTX_free(ctx);
	return NULL;
}

static void
client_start(struct client *cl, int fd, const char *script)
{
	cl->fd = fd;
	cl->script = script;
	assert_int_equal(pthread_create(&cl->th, NULL, client_main, cl), 0);
}

static void
client_join(struct client *cl)
{
	assert_int_equal(pthread_join(cl->th, NULL), 0);
}

static void
expect_line(struct conn *c, const char *want)
{
	char	*line;
	size_t	 len;

	assert_int_equal(conn_read_line(c, &line, &len), CONN_OK);
	assert_string_equal(line, want);
}

/* ---- tests ---- */

/*
 * A session on a fresh loopback pair: the "hello" client's handshake and
 * one line each way through conn.  The client's view is in cl.
 */
static struct conn *
hello_session(struct tls_server *t, struct client *cl, int sv[2])
{
	struct conn	*c;

	tcp_pair(sv);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	assert_false(conn_tls_active(c));
	assert_false(conn_tls_ktls(c));
	client_start(cl, sv[1], "hello");
	assert_int_equal(conn_tls_accept(c, t, 5000), CONN_OK);
	assert_true(conn_tls_active(c));
	expect_line(c, "hello");
	assert_int_equal(conn_printf(c, "+OK hello\r\n"), 0);
	assert_int_equal(conn_flush(c), 0);
	client_join(cl);
	assert_true(cl->ok);
	assert_string_equal(cl->got, "+OK hello\r\n");
	return c;
}

static void
session_close(struct conn *c, int sv[2])
{
	conn_free(c);
	close(sv[0]);
	close(sv[1]);
}

/* A handshake and line I/O through conn; describe before and after. */
static void
test_handshake_lines(void **state)
{
	struct tls_server	*t = server_default(NULL);
	struct client		 cl = { 0 };
	struct conn		*c;
	char			 d[128];
	int			 sv[2], one = 0;
	socklen_t		 olen = sizeof(one);

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	conn_tls_describe(c, d, sizeof(d));
	assert_string_equal(d, "none");
	session_close(c, sv);
	c = hello_session(t, &cl, sv);
	/* The client's choice (its order wins): what it saw. */
	conn_tls_describe(c, d, sizeof(d));
	assert_string_equal(d, cl.cipher);
	assert_memory_equal(d, "TLSv1.3/TLS_", 12);
	/* Once only. */
	assert_int_equal(conn_tls_accept(c, t, 5000), CONN_ERR);
	/* Nagle off: the ticket and the greeting are separate records, and
	 * the second must not wait for the client's delayed ACK. */
	assert_int_equal(getsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one,
	    &olen), 0);
	assert_int_equal(one, 1);
	session_close(c, sv);
	tls_server_free(t);
}

/*
 * Decrypted input OpenSSL holds (SSL_pending) is invisible to poll():
 * a record bigger than conn's read buffer leaves most of its octets
 * inside OpenSSL with nothing more on the socket.  Every line must still
 * be read, none by waiting for the idle timeout.
 */
static void
test_pending_input(void **state)
{
	struct tls_server	*t = server_default(NULL);
	struct client		 cl = { 0 };
	struct conn		*c;
	char			 want[32];
	int			 sv[2], i;

	(void)state;
	tcp_pair(sv);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 2, 5, NULL));
	client_start(&cl, sv[1], "pipeline");
	assert_int_equal(conn_tls_accept(c, t, 5000), CONN_OK);
	for (i = 0; i < PIPELINE_N; i++) {
		snprintf(want, sizeof(want), "NOOP %05d", i);
		expect_line(c, want);
	}
	assert_int_equal(conn_printf(c, "+OK all\r\n"), 0);
	assert_int_equal(conn_flush(c), 0);
	client_join(&cl);
	assert_true(cl.ok);
	assert_string_equal(cl.got, "+OK all\r\n");
	conn_free(c);
	close(sv[0]);
	close(sv[1]);
	tls_server_free(t);
}

/* TLS 1.2 works too (the floor), with an intermediate-profile cipher. */
static void
test_tls12(void **state)
{
	struct tls_server	*t = server_default(NULL);
	struct client		 cl = { .maxv = TLS1_2_VERSION };
	struct conn		*c;
	char			 d[128];
	int			 sv[2];

	(void)state;
	c = hello_session(t, &cl, sv);
	conn_tls_describe(c, d, sizeof(d));
	assert_string_equal(d, cl.cipher);
	assert_memory_equal(d, "TLSv1.2/ECDHE-ECDSA-", 20);
	session_close(c, sv);
	tls_server_free(t);
}

/*
 * CVE-2011-0411: "STLS\r\nUSER x\r\n" in one write.  The USER arrived in
 * clear with the STLS and is in conn's buffer when the handshake starts;
 * the first line read through TLS must be what the client sent inside
 * TLS.
 */
static void
test_stls_injection(void **state)
{
	struct tls_server	*t = server_default(NULL);
	struct client		 cl = { 0 };
	struct conn		*c;
	char			*line;
	size_t			 len;
	int			 sv[2];

	(void)state;
	tcp_pair(sv);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	client_start(&cl, sv[1], "stls");
	expect_line(c, "STLS");
	assert_int_equal(conn_printf(c, "+OK begin TLS\r\n"), 0);
	assert_int_equal(conn_tls_accept(c, t, 5000), CONN_OK);
	assert_int_equal(conn_read_line(c, &line, &len), CONN_OK);
	assert_string_not_equal(line, "USER x");
	assert_string_equal(line, "CAPA");
	assert_int_equal(conn_printf(c, "+OK\r\n"), 0);
	assert_int_equal(conn_flush(c), 0);
	client_join(&cl);
	assert_true(cl.ok);
	conn_free(c);
	close(sv[0]);
	close(sv[1]);
	tls_server_free(t);
}

static int64_t
mono_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A client that never sends a ClientHello: CONN_TIMEOUT, bounded. */
static void
test_handshake_timeout(void **state)
{
	struct tls_server	*t = server_default(NULL);
	struct client		 cl = { 0 };
	struct conn		*c;
	int64_t			 t0, took;
	int			 sv[2];

	(void)state;
	tcp_pair(sv);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	client_start(&cl, sv[1], "silent");
	t0 = mono_ms();
	assert_int_equal(conn_tls_accept(c, t, 300), CONN_TIMEOUT);
	took = mono_ms() - t0;
	/* Within a multiple of the limit (no verdict on speed). */
	assert_true(took < 10 * 300);
	conn_free(c);
	shutdown(sv[0], SHUT_RDWR);
	client_join(&cl);
	assert_true(cl.ok);
	close(sv[0]);
	close(sv[1]);
	tls_server_free(t);
}

/* conn's overall deadline bounds the handshake too, and so does kill. */
static void
test_handshake_deadline_kill(void **state)
{
	struct tls_server	*t = server_default(NULL);
	struct client		 cl = { 0 };
	volatile sig_atomic_t	 kill = 0;
	struct conn		*c;
	int64_t			 t0;
	int			 sv[2];

	(void)state;
	tcp_pair(sv);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, &kill));
	client_start(&cl, sv[1], "silent");
	conn_set_deadline_ms(c, 200);
	t0 = mono_ms();
	assert_int_equal(conn_tls_accept(c, t, 60000), CONN_TIMEOUT);
	assert_true(mono_ms() - t0 < 10 * 200);
	conn_free(c);
	kill = 1;
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, &kill));
	assert_int_equal(conn_tls_accept(c, t, 60000), CONN_KILLED);
	conn_free(c);
	shutdown(sv[0], SHUT_RDWR);
	client_join(&cl);
	close(sv[0]);
	close(sv[1]);
	tls_server_free(t);
}

/* TLS 1.0 and 1.1 clients are refused, whatever min_protocol says. */
static void
test_old_protocols_refused(void **state)
{
	const int		 v[] = { TLS1_VERSION, TLS1_1_VERSION };
	struct tls_server	*t = server_default(NULL);
	struct conn		*c;
	size_t			 i;
	int			 sv[2];

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct client	 cl = { .maxv = v[i] };

		tcp_pair(sv);
		assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5,
		    NULL));
		client_start(&cl, sv[1], "old");
		assert_int_equal(conn_tls_accept(c, t, 5000), CONN_ERR);
		assert_false(conn_tls_active(c));
		conn_free(c);
		close(sv[0]);
		client_join(&cl);
		assert_true(cl.ok);
		close(sv[1]);
	}
	tls_server_free(t);
}

static void
expect_error(struct config *cf, const char *want1, const char *want2)
{
	struct tls_server	*t;
	char			 err[512] = "";

	t = server_from(cf, NULL, err, sizeof(err));
	if (t != NULL || strstr(err, want1) == NULL ||
	    (want2 != NULL && strstr(err, want2) == NULL))
		fprintf(stderr, "got \"%s\", want \"%s\" and \"%s\"\n", err,
		    want1, want2 != NULL ? want2 : "");
	assert_null(t);
	assert_non_null(strstr(err, want1));
	if (want2 != NULL)
		assert_non_null(strstr(err, want2));
}

/* Bad certificates, keys and settings: file:line: reason. */
static void
test_config_errors(void **state)
{
	struct config	 cf;
	char		 want[3 * PATH_MAX];

	(void)state;
	config_tls(&cf, "/nonexistent/x.pem", key);
	expect_error(&cf, "sdps.conf:12: cert /nonexistent/x.pem: "
	    "No such file or directory", NULL);
	config_tls(&cf, cert, "/nonexistent/x.key");
	expect_error(&cf, "sdps.conf:13: key /nonexistent/x.key: "
	    "No such file or directory", NULL);
	config_tls(&cf, dir, key);
	expect_error(&cf, "sdps.conf:12:", "not a regular file");
	config_tls(&cf, "/dev/null", key);
	expect_error(&cf, "sdps.conf:12:", "not a regular file");
	config_tls(&cf, garbage, key);
	snprintf(want, sizeof(want), "sdps.conf:12: cert %s: not a PEM "
	    "certificate chain", garbage);
	expect_error(&cf, want, NULL);
	config_tls(&cf, cert, garbage);
	snprintf(want, sizeof(want), "sdps.conf:13: key %s: not a PEM "
	    "private key", garbage);
	expect_error(&cf, want, NULL);
	/* A key with a pass phrase: an error, never a prompt. */
	config_tls(&cf, cert, enckey);
	snprintf(want, sizeof(want), "sdps.conf:13: key %s: not a PEM "
	    "private key", enckey);
	expect_error(&cf, want, NULL);
	/* A key of another certificate. */
	config_tls(&cf, cert, key2);
	snprintf(want, sizeof(want), "sdps.conf:13: key %s does not match "
	    "cert %s", key2, cert);
	expect_error(&cf, want, NULL);
	/* The key file given as the certificate and vice versa. */
	config_tls(&cf, key, cert);
	expect_error(&cf, "sdps.conf:12:", NULL);
	config_tls(&cf, cert, key);
	snprintf(cf.tls.min_protocol, sizeof(cf.tls.min_protocol), "TLSv1.1");
	expect_error(&cf, "sdps.conf:14: min_protocol TLSv1.1", NULL);
	snprintf(cf.tls.min_protocol, sizeof(cf.tls.min_protocol), "TLSv1");
	expect_error(&cf, "sdps.conf:14:", NULL);
	config_tls(&cf, cert, key);
	snprintf(cf.tls.ciphers, sizeof(cf.tls.ciphers), "NOPE-NOTHING");
	expect_error(&cf, "sdps.conf:15: ciphers NOPE-NOTHING", NULL);
	config_tls(&cf, cert, key);
	snprintf(cf.tls.ciphersuites, sizeof(cf.tls.ciphersuites), "TLS_NO");
	expect_error(&cf, "sdps.conf:16: ciphersuites TLS_NO", NULL);
	config_tls(&cf, cert, key);
	snprintf(cf.tls.groups, sizeof(cf.tls.groups), "nocurve");
	expect_error(&cf, "sdps.conf:17: groups nocurve", NULL);
}

/* tls_pem_read: contents, wipe; describe names the leaf. */
static void
test_pem_and_describe(void **state)
{
	struct config		 cf;
	struct tls_pem		 pem;
	struct tls_server	*t;
	char			 err[512], d[256], cmd[PATH_MAX + 128], fp[160];
	FILE			*p;

	(void)state;
	config_tls(&cf, cert, key);
	assert_int_equal(tls_pem_read(&cf, &pem, err, sizeof(err)), 0);
	assert_non_null(strstr(pem.cert, "BEGIN CERTIFICATE"));
	assert_non_null(strstr(pem.key, "PRIVATE KEY"));
	assert_int_equal(strlen(pem.key), pem.key_len);
	assert_non_null(t = tls_server_new(&cf, &pem, NULL, err,
	    sizeof(err)));
	tls_pem_wipe(&pem);
	assert_null(pem.key);
	assert_null(pem.cert);
	tls_server_describe(t, d, sizeof(d));
	snprintf(cmd, sizeof(cmd), "openssl x509 -in %s -noout -fingerprint "
	    "-sha256", cert);
	assert_non_null(p = popen(cmd, "r"));
	assert_non_null(fgets(fp, sizeof(fp), p));
	pclose(p);
	fp[strcspn(fp, "\n")] = '\0';
	assert_non_null(strchr(fp, '='));
	assert_non_null(strstr(d, "CN=localhost"));
	assert_non_null(strstr(d, strchr(fp, '=') + 1));
	tls_server_free(t);
}

/*
 * The real openssl s_client against conn: implicit TLS, and STLS the
 * way s_client does it (-starttls pop3: greeting, STLS, +OK, handshake).
 */
static void
s_client_case(bool stls)
{
	struct tls_server	*t = server_default(NULL);
	struct conn		*c;
	char			 port_s[16], out[4096];
	uint16_t		 port;
	size_t			 got = 0;
	ssize_t			 n;
	pid_t			 pid;
	int			 l, fd, in[2], outp[2], st;

	l = listen_lo(&port);
	snprintf(port_s, sizeof(port_s), "127.0.0.1:%u", port);
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(outp), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(in[0], 0);
		dup2(outp[1], 1);
		if ((fd = open("/dev/null", O_WRONLY)) >= 0)
			dup2(fd, 2);
		close(in[1]);
		close(outp[0]);
		if (stls)
			execlp("openssl", "openssl", "s_client", "-quiet",
			    "-crlf", "-connect", port_s, "-CAfile", ca,
			    "-verify_return_error", "-servername", "localhost",
			    "-starttls", "pop3", (char *)NULL);
		else
			execlp("openssl", "openssl", "s_client", "-quiet",
			    "-crlf", "-connect", port_s, "-CAfile", ca,
			    "-verify_return_error", "-servername", "localhost",
			    (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(outp[1]);
	assert_true((fd = accept(l, NULL, NULL)) >= 0);
	assert_non_null(c = conn_new(fd, POP3_LINE_MAX, 5, 5, NULL));
	if (stls) {
		assert_int_equal(conn_printf(c, "+OK sdps ready\r\n"), 0);
		expect_line(c, "STLS");
		assert_int_equal(conn_printf(c, "+OK begin TLS\r\n"), 0);
	}
	assert_int_equal(conn_tls_accept(c, t, 5000), CONN_OK);
	assert_int_equal(write(in[1], "hello\n", 6), 6);
	expect_line(c, "hello");
	assert_int_equal(conn_printf(c, "+OK hello\r\n"), 0);
	assert_int_equal(conn_flush(c), 0);
	conn_free(c);
	close(fd);
	close(in[1]);
	while (got + 1 < sizeof(out) &&
	    (n = read(outp[0], out + got, sizeof(out) - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(outp[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_non_null(strstr(out, "+OK hello"));
	close(l);
	tls_server_free(t);
}

static void
test_s_client(void **state)
{
	(void)state;
	s_client_case(false);
	s_client_case(true);
}

/* ---- resumption across processes ---- */

/*
 * A worker: builds its own tls_server after fork from the shared tickets
 * and serves n connections on l, each "+OK reused" or "+OK full", then
 * waits for one line.  Exit status 0 if every handshake worked.
 */
static pid_t
worker_start(int l, struct tls_tickets *tk, int n)
{
	struct tls_server	*t;
	struct conn		*c;
	char			*line;
	size_t			 len;
	pid_t			 pid;
	int			 fd, bad = 0;

	assert_true((pid = fork()) >= 0);
	if (pid > 0)
		return pid;
	/* Never outlive the test (a failed assertion leaves us in accept). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(60);
	t = server_default(tk);
	while (n-- > 0) {
		if ((fd = accept(l, NULL, NULL)) == -1)
			_exit(2);
		c = conn_new(fd, POP3_LINE_MAX, 5, 5, NULL);
		if (c == NULL || conn_tls_accept(c, t, 5000) != CONN_OK)
			bad = 1;
		else {
			conn_printf(c, "+OK hi\r\n");
			(void)conn_read_line(c, &line, &len);
		}
		conn_free(c);
		close(fd);
	}
	tls_server_free(t);
	_exit(bad);
}

static void
worker_wait(pid_t pid)
{
	int	 st;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* Connect, handshake (resuming sess if given), read the greeting (which
 * brings the ticket), say QUIT.  Returns whether it resumed; the new
 * session in *out (may be NULL). */
static int
resume_once(SSL_CTX *ctx, uint16_t port, SSL_SESSION *sess,
    SSL_SESSION **out)
{
	SSL	*ssl;
	char	 buf[128];
	int	 fd, reused;

	assert_true((fd = connect_lo(port)) >= 0);
	assert_non_null(ssl = client_connect(ctx, fd, sess));
	assert_int_equal(ssl_line(ssl, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "+OK hi\r\n");
	reused = SSL_session_reused(ssl);
	if (out != NULL)
		*out = SSL_get1_session(ssl);
	SSL_write(ssl, "QUIT\r\n", 6);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	return reused;
}

/* A ticket from one worker is accepted by another. */
static void
test_resume_across_workers(void **state)
{
	struct tls_tickets	*tk;
	SSL_CTX			*ctx;
	SSL_SESSION		*s0;
	uint16_t		 pa, pb;
	pid_t			 a, b;
	int			 la, lb;

	(void)state;
	assert_non_null(tk = tls_tickets_create());
	la = listen_lo(&pa);
	lb = listen_lo(&pb);
	a = worker_start(la, tk, 1);
	b = worker_start(lb, tk, 1);
	assert_non_null(ctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION));
	assert_false(resume_once(ctx, pa, NULL, &s0));
	assert_true(SSL_SESSION_is_resumable(s0));
	assert_true(resume_once(ctx, pb, s0, NULL));
	SSL_SESSION_free(s0);
	worker_wait(a);
	worker_wait(b);
	/* Without shared tickets (tk NULL) no ticket, nothing to resume. */
	a = worker_start(la, NULL, 2);
	assert_false(resume_once(ctx, pa, NULL, &s0));
	assert_false(SSL_SESSION_is_resumable(s0));
	assert_false(resume_once(ctx, pa, s0, NULL));
	SSL_SESSION_free(s0);
	worker_wait(a);
	SSL_CTX_free(ctx);
	close(la);
	close(lb);
	tls_tickets_destroy(tk);
}

/* After one rotation the old ticket resumes; after two it does not. */
static void
test_ticket_rotation(void **state)
{
	struct tls_tickets	*tk;
	SSL_CTX			*ctx;
	SSL_SESSION		*s0, *s1;
	uint16_t		 port;
	pid_t			 w;
	int			 l;

	(void)state;
	assert_non_null(tk = tls_tickets_create());
	assert_false(tls_tickets_rotate(tk, 100, 10));	/* stamps */
	assert_false(tls_tickets_rotate(tk, 109, 10));
	assert_false(tls_tickets_rotate(tk, 100, 0));
	assert_false(tls_tickets_rotate(NULL, 100, 10));
	l = listen_lo(&port);
	/* One worker, forked before the rotations: it sees them through
	 * the shared mapping, as the pool's workers see the master's. */
	w = worker_start(l, tk, 5);
	assert_non_null(ctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION));
	assert_false(resume_once(ctx, port, NULL, &s0));
	assert_true(resume_once(ctx, port, s0, NULL));
	assert_true(tls_tickets_rotate(tk, 110, 10));
	assert_false(tls_tickets_rotate(tk, 111, 10));
	/* The previous key still decrypts (and the ticket is renewed). */
	assert_true(resume_once(ctx, port, s0, &s1));
	assert_true(tls_tickets_rotate(tk, 120, 10));
	/* s0's key is gone: a full handshake.  s1 (renewed under the
	 * key that is now the previous one) still resumes. */
	assert_false(resume_once(ctx, port, s0, NULL));
	assert_true(resume_once(ctx, port, s1, NULL));
	worker_wait(w);
	SSL_SESSION_free(s0);
	SSL_SESSION_free(s1);
	SSL_CTX_free(ctx);
	close(l);
	tls_tickets_destroy(tk);
}

/* ---- RETR: the body paths ---- */

/* A file of len octets of a pattern that shows misplaced bytes. */
static int
pattern_file(size_t len, char **data)
{
	char	 path[PATH_MAX + 32];
	size_t	 i;
	int	 fd;

	*data = malloc(len + 1);
	for (i = 0; i < len; i++)
		(*data)[i] = (char)('a' + (i * 7 + i / 251) % 26);
	snprintf(path, sizeof(path), "%s/body", dir);
	assert_true((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) >= 0);
	assert_int_equal(write(fd, *data, len), (ssize_t)len);
	unlink(path);
	return fd;
}

/* Header line, then len octets of a file from off, through TLS. */
static void
send_body_case(struct tls_server *t, size_t len, off_t off,
    const char *head, bool ktls)
{
	struct client	 cl = { 0 };
	struct conn	*c;
	char		*data;
	size_t		 hl = strlen(head);
	int		 sv[2], fd;

	fd = pattern_file(len + (size_t)off, &data);
	tcp_pair(sv);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	client_start(&cl, sv[1], "body");
	assert_int_equal(conn_tls_accept(c, t, 5000), CONN_OK);
	assert_int_equal(conn_tls_ktls(c), ktls);
	assert_int_equal(conn_write(c, head, hl), 0);
	assert_int_equal(conn_send_file(c, fd, off, len), 0);
	assert_int_equal(conn_ml_end(c), 0);
	assert_int_equal(conn_flush(c), 0);
	assert_int_equal(conn_octets_out(c), hl + len + 3);
	conn_free(c);	/* close_notify ends the client's read */
	client_join(&cl);
	assert_true(cl.ok);
	assert_int_equal(cl.body_len, hl + len + 3);
	assert_memory_equal(cl.body, head, hl);
	if (len > 0)
		assert_memory_equal(cl.body + hl, data + off, len);
	assert_memory_equal(cl.body + hl + len, ".\r\n", 3);
	free(cl.body);
	free(data);
	close(fd);
	close(sv[0]);
	close(sv[1]);
}

static void
test_send_file_sizes(void **state)
{
	const size_t	 sizes[] = { 0, 1, RECORD - 1, RECORD, RECORD + 1,
	    CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7, 10 * 1000 * 1000 };
	struct tls_server *t = server_default(NULL);
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		send_body_case(t, sizes[i], 0, "+OK message follows\r\n"
		    "Return-Path: <a@example.org>\r\n", false);
		/* Nothing buffered in front, and an offset. */
		send_body_case(t, sizes[i], 0, "", false);
		send_body_case(t, sizes[i], 4097, "+OK\r\n", false);
	}
	tls_server_free(t);
}

/* A file shorter than promised: -1, CONN_ERR, EIO. */
static void
test_send_file_short(void **state)
{
	struct tls_server	*t = server_default(NULL);
	struct client		 cl = { 0 };
	struct conn		*c;
	char			*data;
	int			 sv[2], fd;

	(void)state;
	fd = pattern_file(1000, &data);
	tcp_pair(sv);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	client_start(&cl, sv[1], "body");
	assert_int_equal(conn_tls_accept(c, t, 5000), CONN_OK);
	errno = 0;
	assert_int_equal(conn_send_file(c, fd, 0, 5000), -1);
	assert_int_equal(errno, EIO);
	assert_int_equal(conn_werr(c), CONN_ERR);
	conn_free(c);
	shutdown(sv[0], SHUT_RDWR);
	client_join(&cl);
	free(cl.body);
	free(data);
	close(fd);
	close(sv[0]);
	close(sv[1]);
	tls_server_free(t);
}

/* Does this kernel offer the "tls" ULP?  Ask it directly: on a
 * connected TCP socket, setsockopt(TCP_ULP, "tls") works exactly then. */
static bool
kernel_has_tls_ulp(void)
{
	int	 sv[2];
	bool	 yes;

	tcp_pair(sv);
	yes = setsockopt(sv[1], IPPROTO_TCP, TCP_ULP, "tls", 3) == 0;
	close(sv[0]);
	close(sv[1]);
	return yes;
}

/*
 * The choice between SSL_sendfile and the copy: kernel TLS off in the
 * config, never; on, exactly when the kernel has it (this build
 * machine's does not).  Either way the body arrives intact.
 */
static void
test_ktls_choice(void **state)
{
	struct config		 cf;
	struct tls_server	*t;
	struct client		 cl = { 0 };
	struct conn		*c;
	char			 err[512];
	bool			 on, kernel = kernel_has_tls_ulp();
	int			 sv[2];

	(void)state;
	fprintf(stderr, "kernel TLS on this kernel: %s\n", kernel ? "yes" :
	    "no");
	for (on = false; ; on = true) {
		config_tls(&cf, cert, key);
		cf.tls.ktls = on;
		/* kTLS needs an AES-GCM suite. */
		snprintf(cf.tls.ciphersuites, sizeof(cf.tls.ciphersuites),
		    "TLS_AES_128_GCM_SHA256");
		assert_non_null(t = server_from(&cf, NULL, err, sizeof(err)));
		c = hello_session(t, &cl, sv);
		assert_int_equal(conn_tls_ktls(c), on && kernel);
		session_close(c, sv);
		/* The body through whichever path was chosen. */
		send_body_case(t, CHUNK + RECORD + 1, 3, "+OK\r\n", on && kernel);
		tls_server_free(t);
		if (on)
			break;
	}
}

/* A TCP pair over family/addr (a listener bound there); -1 if the
 * address is not usable here (no IPv6). */
static int
tcp_pair_at(int family, const char *addr, int sv[2])
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t		 sl = sizeof(ss);
	int			 l;

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = (sa_family_t)family;
	if (family == AF_INET)
		inet_pton(AF_INET, addr, &sin->sin_addr);
	else
		sin6->sin6_addr = in6addr_any;
	if ((l = socket(family, SOCK_STREAM, 0)) == -1)
		return -1;
	if (bind(l, (struct sockaddr *)&ss, family == AF_INET ?
	    sizeof(*sin) : sizeof(*sin6)) == -1 || listen(l, 1) == -1 ||
	    getsockname(l, (struct sockaddr *)&ss, &sl) == -1) {
		close(l);
		return -1;
	}
	if (family == AF_INET6 && inet_pton(AF_INET6, addr,
	    &sin6->sin6_addr) != 1) {
		close(l);
		return -1;
	}
	if ((sv[1] = socket(family, SOCK_STREAM, 0)) == -1 ||
	    connect(sv[1], (struct sockaddr *)&ss, sl) == -1 ||
	    (sv[0] = accept(l, NULL, NULL)) == -1) {
		close(l);
		return -1;
	}
	close(l);
	return 0;
}

/* conn_peer_loopback for a peer at addr: 1, 0, or -1 (no such address
 * here). */
static int
loopback_at(int family, const char *addr)
{
	struct conn	*c;
	int		 yes, sv[2];

	if (tcp_pair_at(family, addr, sv) == -1)
		return -1;
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	yes = conn_peer_loopback(c) ? 1 : 0;
	conn_free(c);
	close(sv[0]);
	close(sv[1]);
	return yes;
}

/*
 * conn_peer_loopback over the address families: AF_UNIX, 127/8, ::1
 * and ::ffff:127/104 are local; an address that is not loopback is not,
 * even on lo.  The last case runs in a network namespace of its own
 * (made with unshare in a child, gone when it exits), so no real
 * interface is touched.
 */
static void
test_peer_loopback(void **state)
{
	struct conn	*c;
	pid_t		 pid;
	int		 sv[2], st;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_non_null(c = conn_new(sv[0], POP3_LINE_MAX, 5, 5, NULL));
	assert_true(conn_peer_loopback(c));
	conn_free(c);
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(loopback_at(AF_INET, "127.0.0.1"), 1);
	assert_int_equal(loopback_at(AF_INET, "127.3.2.1"), 1);
	/* -1: a kernel without IPv6. */
	assert_int_not_equal(loopback_at(AF_INET6, "::1"), 0);
	assert_int_not_equal(loopback_at(AF_INET6, "::ffff:127.0.0.1"), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) == -1)
			_exit(77);	/* not permitted here: skip */
		if (run("ip link set lo up && ip addr add 192.0.2.7/32 dev lo"
		    " && ip addr add 2001:db8::7/128 dev lo nodad") == -1)
			_exit(78);
		if (loopback_at(AF_INET, "192.0.2.7") != 0 ||
		    loopback_at(AF_INET, "127.0.0.1") != 1)
			_exit(1);
		if (loopback_at(AF_INET6, "2001:db8::7") == 1)
			_exit(2);
		if (loopback_at(AF_INET6, "::ffff:192.0.2.7") == 1)
			_exit(3);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		fprintf(stderr, "no network namespace: non-loopback case "
		    "skipped\n");
	else
		assert_int_equal(WEXITSTATUS(st), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_lines),
		cmocka_unit_test(test_tls12),
		cmocka_unit_test(test_pending_input),
		cmocka_unit_test(test_s_client),
		cmocka_unit_test(test_stls_injection),
		cmocka_unit_test(test_handshake_timeout),
		cmocka_unit_test(test_handshake_deadline_kill),
		cmocka_unit_test(test_old_protocols_refused),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_pem_and_describe),
		cmocka_unit_test(test_resume_across_workers),
		cmocka_unit_test(test_ticket_rotation),
		cmocka_unit_test(test_send_file_sizes),
		cmocka_unit_test(test_send_file_short),
		cmocka_unit_test(test_ktls_choice),
		cmocka_unit_test(test_peer_loopback),
	};

	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
