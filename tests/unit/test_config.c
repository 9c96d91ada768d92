/* Unit tests for config: good files, and bad ones with the exact line. */
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
#include "sdps/util.h"

static char	 dir[] = "/tmp/test_config.XXXXXX";
static char	 file[64];

static int
setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(file, sizeof(file), "%s/sdps.conf", dir);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	unlink(file);
	return rmdir(dir);
}

static void
write_file(const char *text)
{
	FILE	*fp;

	assert_non_null(fp = fopen(file, "w"));
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

static int
load(const char *text, struct config *cf, char *err, size_t errlen)
{
	write_file(text);
	return config_load(file, cf, err, errlen);
}

#define PUNT	"[punt p1]\npath = /srv/p1\n"

static void
test_defaults(void **state)
{
	struct config	 cf;
	char		 err[512];

	(void)state;
	if (load(PUNT, &cf, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(cf.file, file);
	assert_int_equal(cf.nlisteners, 1);
	assert_string_equal(cf.listeners[0].addr, "127.0.0.1:1110");
	assert_int_equal(cf.listeners[0].proto, CONFIG_PROTO_POP3);
	assert_int_equal(cf.listeners[0].tls, CONFIG_TLS_NONE);
	assert_int_equal(config_nlisteners(&cf, CONFIG_PROTO_LMTP), 0);
	assert_string_equal(cf.user, "sdps");
	assert_string_equal(cf.run_dir, "/run/sdps");
	assert_int_equal(cf.min_spare, 4);
	assert_int_equal(cf.max_spare, 16);
	assert_int_equal(cf.max_workers, 256);
	assert_int_equal(cf.max_sessions_per_worker, 1000);
	assert_int_equal(cf.idle_timeout_s, 600);
	assert_int_equal(cf.send_timeout_s, 60);
	assert_int_equal(cf.auth_fail_delay_ms, 1000);
	assert_int_equal(cf.auth_max_failures, 3);
	assert_int_equal(cf.auth_max_parallel, 2);
	assert_int_equal(cf.auth_cache_ttl_s, 300);
	assert_int_equal(cf.auth_cache_entries, 4096);
	assert_int_equal(cf.auth_source_budget, 10);
	assert_int_equal(cf.auth_host_budget, 30);
	assert_int_equal(cf.auth_budget_window_s, 600);
	assert_int_equal(cf.auth_fail_delay_max_ms, 15000);
	assert_int_equal(cf.auth_throttle_entries, 16384);
	assert_int_equal(cf.login_delay_s, 0);
	assert_int_equal(cf.max_bad_commands, 20);
	assert_int_equal(cf.shutdown_grace_s, 30);
	assert_int_equal(cf.lmtp_socket_mode, 0660);
	assert_string_equal(cf.lmtp_socket_group, "");
	assert_string_equal(cf.admin_group, "");
	assert_int_equal(cf.max_conn_per_ip, 10);
	assert_int_equal(cf.auth_timeout_s, 60);
	assert_int_equal(cf.lmtp_workers, 8);
	assert_int_equal(cf.allow_cleartext, CONFIG_CLEARTEXT_LOOPBACK);
	assert_string_equal(cf.tls.cert, "");
	assert_string_equal(cf.tls.key, "");
	assert_int_equal(cf.tls.cert_line, 0);
	assert_string_equal(cf.tls.min_protocol, "TLSv1.2");
	assert_string_equal(cf.tls.ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256:"
	    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
	    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
	    "ECDHE-RSA-CHACHA20-POLY1305");
	assert_string_equal(cf.tls.ciphersuites, "TLS_AES_128_GCM_SHA256:"
	    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
	assert_string_equal(cf.tls.groups, "X25519:prime256v1:secp384r1");
	assert_int_equal(cf.tls.handshake_timeout_s, 10);
	assert_int_equal(cf.tls.ticket_lifetime_s, 3600);
	assert_true(cf.tls.ktls);
	assert_string_equal(cf.auth_path, "/var/lib/sdps/auth");
	assert_int_equal(cf.auth_map_size, 64ULL << 20);
	assert_int_equal(cf.hash_cost, CONFIG_HASH_INTERACTIVE);
	assert_int_equal(cf.store_map_size, 1024ULL << 20);
	assert_int_equal(cf.claim_lease_s, 3600);
	assert_int_equal(cf.max_message_octets, 52428800);
	assert_int_equal(cf.expire_days, 30);
	assert_string_equal(cf.sendmail, "/usr/sbin/sendmail -oi -f <>");
	assert_string_equal(cf.outbox, "/var/spool/sdps/outbox");
	assert_int_equal(cf.npunts, 1);
	assert_string_equal(cf.punts[0].name, "p1");
	assert_string_equal(cf.punts[0].path, "/srv/p1");
}

/* The shipped config/sdps.conf must load and say what the defaults are. */
static void
test_shipped(void **state)
{
	struct config	 cf, def;
	char		 err[512];
	const char	*src = getenv("SDPS_SRCDIR");
	char		 path[512];

	(void)state;
	snprintf(path, sizeof(path), "%s/config/sdps.conf",
	    src != NULL ? src : ".");
	if (access(path, R_OK) != 0)
		skip();
	if (config_load(path, &cf, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	config_defaults(&def);
	/* Everything but the file name and the punts is the default. */
	strcpy(def.file, cf.file);
	memcpy(def.punts, cf.punts, sizeof(def.punts));
	def.npunts = cf.npunts;
	assert_true(cf.npunts >= 1);
	assert_memory_equal(&cf, &def, sizeof(cf));
}

static void
test_good(void **state)
{
	struct config		 cf;
	const struct config_punt *p;
	char			 err[512];
	const char		*text =
	    "; comment\n"
	    "# another\n"
	    "[server]\n"
	    "listen = 0.0.0.0:110\n"
	    "listen = [::1]:1110   ; inline comment\n"
	    "listen = *:995\n"
	    "lmtp_listen = 127.0.0.1:24\n"
	    "lmtp_listen = /run/sdps/lmtp.sock\n"
	    "user =\n"
	    "run_dir = /tmp/run\n"
	    "min_spare = 0\n"
	    "max_spare = 1\n"
	    "max_workers = 1\n"
	    "idle_timeout = 5\n"
	    "auth_cache_ttl = 0\n"
	    "lmtp_socket_mode = 600\n"
	    "lmtp_socket_group = postfix\n"
	    "admin_group = adm\n"
	    "max_conn_per_ip = 0\n"
	    "auth_timeout = 0\n"
	    "lmtp_workers = 3\n"
	    "\n"
	    "[auth]\n"
	    "path = /a\n"
	    "map_size_mb = 2\n"
	    "hash_cost = min\n"
	    "[store]\n"
	    "map_size_mb = 3\n"
	    "max_message_size = 1000\n"
	    "[expire]\n"
	    "days = 7\n"
	    "sendmail = \"\"\n"
	    "outbox = /o\n"
	    "[punt zed]\n"
	    "path = /z\n"
	    "  [punt a_b-9]\n"
	    "path: /y\n";

	(void)state;
	if (load(text, &cf, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(config_nlisteners(&cf, CONFIG_PROTO_POP3), 3);
	assert_string_equal(cf.listeners[0].addr, "0.0.0.0:110");
	assert_string_equal(cf.listeners[1].addr, "[::1]:1110");
	assert_string_equal(cf.listeners[2].addr, "*:995");
	assert_int_equal(config_nlisteners(&cf, CONFIG_PROTO_LMTP), 2);
	assert_string_equal(cf.listeners[4].addr, "/run/sdps/lmtp.sock");
	assert_int_equal(cf.listeners[4].proto, CONFIG_PROTO_LMTP);
	assert_string_equal(cf.user, "");
	assert_int_equal(cf.min_spare, 0);
	assert_int_equal(cf.max_workers, 1);
	assert_int_equal(cf.idle_timeout_s, 5);
	assert_int_equal(cf.auth_cache_ttl_s, 0);
	assert_int_equal(cf.lmtp_socket_mode, 0600);
	assert_string_equal(cf.lmtp_socket_group, "postfix");
	assert_string_equal(cf.admin_group, "adm");
	assert_int_equal(cf.max_conn_per_ip, 0);
	assert_int_equal(cf.auth_timeout_s, 0);
	assert_int_equal(cf.lmtp_workers, 3);
	assert_int_equal(cf.auth_map_size, 2ULL << 20);
	assert_int_equal(cf.hash_cost, CONFIG_HASH_MIN);
	assert_int_equal(cf.store_map_size, 3ULL << 20);
	assert_int_equal(cf.max_message_octets, 1000);
	assert_int_equal(cf.expire_days, 7);
	assert_string_equal(cf.sendmail, "");
	assert_string_equal(cf.outbox, "/o");
	assert_int_equal(cf.npunts, 2);
	/* File order is kept: it breaks ties in merged listings. */
	assert_string_equal(cf.punts[0].name, "zed");
	assert_string_equal(cf.punts[1].name, "a_b-9");
	assert_non_null(p = config_punt_find(&cf, "a_b-9"));
	assert_string_equal(p->path, "/y");
	assert_null(config_punt_find(&cf, "nope"));
	assert_null(config_punt_find(&cf, "ZED"));
}

/*
 * Each bad file must fail with "file:LINE: " and a reason holding the
 * given fragment.
 */
static void
test_bad(void **state)
{
	static const struct {
		const char	*text;
		int		 line;
		const char	*reason;
	} t[] = {
		{ "[bogus]\n" PUNT, 1, "unknown section" },
		{ PUNT "[server]\nfoo = 1\n", 4, "unknown key \"foo\"" },
		{ PUNT "[auth]\nlisten = *:1\n", 4, "unknown key" },
		{ "x = 1\n" PUNT, 1, "outside a section" },
		{ PUNT "[server]\nnot a key line\n", 4, "syntax" },
		{ PUNT "[server\n", 3, "syntax" },
		{ PUNT "[server] junk\n", 3, "junk" },
		{ PUNT "[server]\nmin_spare = -1\n", 4, "min_spare" },
		{ PUNT "[server]\nmin_spare = 1x\n", 4, "min_spare" },
		{ PUNT "[server]\nmin_spare =\n", 4, "min_spare" },
		{ PUNT "[server]\nmax_workers = 0\n", 4, "max_workers" },
		{ PUNT "[server]\nmax_workers = 99999999999999999999999\n", 4,
		    "max_workers" },
		{ PUNT "[server]\nmax_workers = 0x10\n", 4, "max_workers" },
		{ PUNT "[server]\nidle_timeout = 0\n", 4, "idle_timeout" },
		{ PUNT "[server]\nauth_budget_window = 0\n", 4,
		    "auth_budget_window" },
		{ PUNT "[server]\nauth_throttle_entries = 7\n", 4,
		    "auth_throttle_entries" },
		{ PUNT "[server]\nlmtp_workers = 0\n", 4, "lmtp_workers" },
		{ PUNT "[server]\nlmtp_workers = 65\n", 4, "lmtp_workers" },
		{ PUNT "[server]\nmax_conn_per_ip = -1\n", 4,
		    "max_conn_per_ip" },
		{ PUNT "[server]\nauth_timeout = x\n", 4, "auth_timeout" },
		{ PUNT "[server]\nlmtp_listen = /l.sock\nmax_workers = 4000\n"
		    "max_spare = 4\n", 5,
		    "max_workers + lmtp_workers (4008) is over 4000" },
		{ PUNT "[server]\n\nmin_spare = 20\n", 5,
		    "min_spare (20) is over max_spare (16)" },
		{ PUNT "[server]\nmax_workers = 8\n\nmin_spare = 1\n", 4,
		    "max_spare (16) is over max_workers (8)" },
		{ PUNT "[server]\nmax_spare = 2\nmax_spare = 3\n", 5,
		    "duplicate key \"max_spare\" (first on line 4)" },
		{ PUNT "[server]\nlisten = 1.2.3.4\n", 4, "listen" },
		{ PUNT "[server]\nlisten = 1.2.3.4:0\n", 4, "listen" },
		{ PUNT "[server]\nlisten = 1.2.3.4:65536\n", 4, "listen" },
		{ PUNT "[server]\nlisten = 1.2.3:110\n", 4, "listen" },
		{ PUNT "[server]\nlisten = ::1:110\n", 4, "listen" },
		{ PUNT "[server]\nlisten = [1.2.3.4]:110\n", 4, "listen" },
		{ PUNT "[server]\nlisten = localhost:110\n", 4, "listen" },
		{ PUNT "[server]\nlmtp_listen = run/lmtp.sock\n", 4,
		    "lmtp_listen" },
		{ PUNT "[server]\nrun_dir = run\n", 4, "absolute" },
		{ PUNT "[server]\nuser = a b\n", 4, "user" },
		{ PUNT "[server]\nlmtp_socket_mode = 0999\n", 4,
		    "lmtp_socket_mode" },
		{ PUNT "[server]\nlmtp_socket_mode = 01777\n", 4,
		    "lmtp_socket_mode" },
		{ PUNT "[server]\nlmtp_socket_group = a b\n", 4,
		    "bad group name" },
		{ PUNT "[server]\nadmin_group = -x\n", 4, "admin_group" },
		{ PUNT "[auth]\nhash_cost = fast\n", 4, "hash_cost" },
		{ PUNT "[auth]\nmap_size_mb = 0\n", 4, "map_size_mb" },
		{ PUNT "[expire]\nsendmail = sendmail -oi\n", 4, "sendmail" },
		{ PUNT "[expire]\noutbox = \n", 4, "outbox" },
		{ "", 0, "at least one" },
		{ "[server]\n", 0, "at least one" },
		{ "[punt a]\n[punt b]\npath = /b\n", 1,
		    "path (a local punt) or address (a remote one) is required" },
		/* Issue 11: remote punts and the punt listener. */
		{ "[punt a]\npath = /a\naddress = 10.0.0.1:7110\n", 1,
		    "local or remote, not both" },
		{ "[punt a]\naddress = 10.0.0.1:7110\nca = /c\n", 1,
		    "needs ca, cert and key" },
		{ "[punt a]\naddress = nowhere\n", 2, "host:port" },
		{ "[punt a]\npath = /a\nca = /c\n", 1, "for a remote punt" },
		{ "[punt a]\naddress = 10.0.0.1:1\nserver_name = a/b\n", 3,
		    "server_name" },
		{ PUNT "[server]\npunt_listen = 10.0.0.1:7110 p2\n", 4,
		    "p2 is not a local" },
		{ PUNT "[server]\npunt_listen = 10.0.0.1:7110\n", 4,
		    "punt_listen: expected" },
		{ PUNT "[tls]\ncert = /c\nkey = /k\n[punt_server]\nca = /c\n"
		    "[server]\npunt_listen = 10.0.0.1:7110 p1\n", 9,
		    "needs [punt_server] ca and allow" },
		{ PUNT "[server]\npunt_listen = 10.0.0.1:7110 p1\n"
		    "[punt_server]\nca = /c\nallow = fe1\n", 4,
		    "punt_listen: 10.0.0.1:7110 tls=implicit needs [tls]" },
		{ PUNT "[link]\ntimeout = 0\n", 4, "timeout" },
		{ "[punt a]\npath = /a\n[punt a]\npath = /b\n", 3,
		    "duplicate punt \"a\" (first on line 1)" },
		{ "[punt a]\npath = /a\n[punt b]\npath = /a\n", 3,
		    "same path" },
		{ "[punt a]\npath = /a\npath = /b\n", 3, "duplicate" },
		{ "[punt a]\npath = a\n", 2, "absolute" },
		{ "[punt a]\npath = /a\nfoo = 1\n", 3, "unknown key" },
		{ "[punt A]\npath = /a\n", 1, "punt name" },
		{ "[punt ../x]\npath = /a\n", 1, "punt name" },
		{ "[punt ]\npath = /a\n", 1, "unknown section" },
		{ "[punt aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\npath = /a\n", 1,
		    "punt name" },
		{ PUNT "[server]\nuser = sdps\n  min_spare = 1\n  user = x\n",
		    6, "duplicate key \"user\"" },
		/* Issue 10: listener modes, the cleartext policy, [tls]. */
		{ PUNT "[server]\nlisten = *:995 tls=implicit\n", 4,
		    "listen: *:995 tls=implicit needs [tls] cert and key" },
		{ PUNT "[server]\nlisten = *:1\nlisten = *:110 tls=starttls\n"
		    "[tls]\n", 5, "tls=starttls needs [tls] cert and key" },
		{ PUNT "[server]\nlisten = *:110 tls=bogus\n", 4,
		    "listen: unknown option \"tls=bogus\"" },
		{ PUNT "[server]\nlisten = *:110 ssl=yes\n", 4,
		    "unknown option" },
		{ PUNT "[server]\nlisten = *:110 tls=none x\n", 4,
		    "unknown option" },
		{ PUNT "[server]\nlmtp_listen = /l.sock tls=starttls\n", 4,
		    "lmtp_listen: LMTP is plain only" },
		{ PUNT "[server]\nlmtp_listen = /l.sock tls=none x\n", 4,
		    "lmtp_listen: unknown option" },
		{ PUNT "[server]\nallow_cleartext = maybe\n", 4,
		    "allow_cleartext: expected loopback|yes|no" },
		{ PUNT "[tls]\ncert = /c.pem\n", 4, "[tls]: cert without key" },
		{ PUNT "[tls]\n\nkey = /k.pem\n", 5, "[tls]: key without cert" },
		{ PUNT "[tls]\ncert = c.pem\nkey = /k\n", 4, "absolute" },
		{ PUNT "[tls]\nmin_protocol = TLSv1.1\n", 4,
		    "min_protocol: expected TLSv1.2|TLSv1.3, got \"TLSv1.1\"" },
		{ PUNT "[tls]\nmin_protocol = TLSv1\n", 4, "min_protocol" },
		{ PUNT "[tls]\nmin_protocol = tlsv1.2\n", 4, "min_protocol" },
		{ PUNT "[tls]\nciphers =\n", 4, "ciphers" },
		{ PUNT "[tls]\nciphers = A B\n", 4, "ciphers" },
		{ PUNT "[tls]\ngroups = X25519\ngroups = P-256\n", 5,
		    "[tls]: duplicate key \"groups\"" },
		{ PUNT "[tls]\nhandshake_timeout = 0\n", 4,
		    "handshake_timeout" },
		{ PUNT "[tls]\nticket_lifetime = -1\n", 4, "ticket_lifetime" },
		{ PUNT "[tls]\nktls = maybe\n", 4, "ktls: expected no|yes" },
		{ PUNT "[tls]\nuser = x\n", 4, "[tls]: unknown key \"user\"" },
		{ PUNT "[tls ]\n", 3, "unknown section" },
	};
	struct config	 cf;
	char		 err[512], want[128];
	size_t		 i;

	(void)state;
	for (i = 0; i < NITEMS(t); i++) {
		memset(err, 0, sizeof(err));
		if (load(t[i].text, &cf, err, sizeof(err)) != -1)
			fail_msg("row %zu: accepted", i);
		snprintf(want, sizeof(want), "%s:%d: ", file, t[i].line);
		if (strncmp(err, want, strlen(want)) != 0 ||
		    strstr(err + strlen(want), t[i].reason) == NULL)
			fail_msg("row %zu: got \"%s\", want \"%s%s\"", i, err,
			    want, t[i].reason);
		if (strchr(err, '\n') != NULL)
			fail_msg("row %zu: not one line", i);
	}
}

static void
test_limits(void **state)
{
	struct config	 cf;
	char		 err[512], *text, want[128];
	size_t		 off, i;

	(void)state;
	/* The 17th punt is one too many. */
	assert_non_null(text = malloc(8192));
	off = 0;
	for (i = 0; i <= CONFIG_PUNT_MAX; i++)
		off += (size_t)sprintf(text + off,
		    "[punt p%zu]\npath = /p%zu\n", i, i);
	assert_int_equal(load(text, &cf, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:%d: more than", file,
	    2 * CONFIG_PUNT_MAX + 1);
	assert_true(strncmp(err, want, strlen(want)) == 0);

	/* Nine listen addresses. */
	off = (size_t)sprintf(text, PUNT "[server]\n");
	for (i = 0; i <= CONFIG_LISTEN_MAX; i++)
		off += (size_t)sprintf(text + off, "listen = *:%zu\n", 100 + i);
	assert_int_equal(load(text, &cf, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:%d: listen: more than", file,
	    4 + CONFIG_LISTEN_MAX);
	assert_true(strncmp(err, want, strlen(want)) == 0);

	/* A line inih would cut in two is refused, not misread. */
	off = (size_t)sprintf(text, PUNT "[server]\nrun_dir = /");
	memset(text + off, 'x', 400);
	strcpy(text + off + 400, "\n");
	assert_int_equal(load(text, &cf, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:4: line too long", file);
	assert_true(strncmp(err, want, strlen(want)) == 0);
	free(text);

	/* Exactly the limits are fine. */
	assert_int_equal(load(PUNT "[server]\nlisten = 255.255.255.255:65535\n"
	    "max_workers = 4000\nmax_spare = 4000\nmin_spare = 4000\n",
	    &cf, err, sizeof(err)), 0);
	assert_int_equal(cf.max_workers, 4000);
}

static void
test_missing_file(void **state)
{
	struct config	 cf;
	char		 err[512];

	(void)state;
	assert_int_equal(config_load("/nonexistent/sdps.conf", &cf, err,
	    sizeof(err)), -1);
	assert_string_equal(err,
	    "/nonexistent/sdps.conf:0: No such file or directory");
}

/* Listener structs from listen/lmtp_listen lines in any order: POP3
 * first, each protocol in file order, the default replaced, tls none. */
static void
test_listeners_interleaved(void **state)
{
	struct config	 cf;
	char		 err[512];

	(void)state;
	if (load(PUNT "[server]\nlmtp_listen = /l.sock\n"
	    "listen = 127.0.0.1:1\nlmtp_listen = 127.0.0.1:24\n"
	    "listen = 127.0.0.1:2\n", &cf, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(cf.nlisteners, 4);
	assert_string_equal(cf.listeners[0].addr, "127.0.0.1:1");
	assert_string_equal(cf.listeners[1].addr, "127.0.0.1:2");
	assert_string_equal(cf.listeners[2].addr, "/l.sock");
	assert_string_equal(cf.listeners[3].addr, "127.0.0.1:24");
	assert_int_equal(cf.listeners[1].proto, CONFIG_PROTO_POP3);
	assert_int_equal(cf.listeners[2].proto, CONFIG_PROTO_LMTP);
	assert_int_equal(cf.listeners[3].tls, CONFIG_TLS_NONE);
}

/* Issue 10: listener modes, allow_cleartext and [tls] with its lines. */
static void
test_tls(void **state)
{
	struct config	 cf;
	char		 err[512];
	const char	*text =
	    "[server]\n"					/* 1 */
	    "listen = 127.0.0.1:110 tls=starttls\n"
	    "listen = [::1]:995\ttls=implicit ; comment\n"
	    "listen = *:1110 tls=none\n"
	    "listen = *:1111\n"				/* 5 */
	    "lmtp_listen = /l.sock tls=none\n"
	    "allow_cleartext = no\n"
	    "[tls]\n"
	    "key = /etc/k.pem\n"
	    "cert = /etc/c.pem\n"				/* 10 */
	    "min_protocol = TLSv1.3\n"
	    "ciphers = ECDHE-RSA-AES128-GCM-SHA256\n"
	    "ciphersuites = TLS_AES_256_GCM_SHA384\n"
	    "groups = X25519\n"
	    "handshake_timeout = 3\n"			/* 15 */
	    "ticket_lifetime = 0\n"
	    "ktls = no\n"
	    PUNT;

	(void)state;
	if (load(text, &cf, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(cf.nlisteners, 5);
	assert_string_equal(cf.listeners[0].addr, "127.0.0.1:110");
	assert_int_equal(cf.listeners[0].tls, CONFIG_TLS_STARTTLS);
	assert_string_equal(cf.listeners[1].addr, "[::1]:995");
	assert_int_equal(cf.listeners[1].tls, CONFIG_TLS_IMPLICIT);
	assert_int_equal(cf.listeners[2].tls, CONFIG_TLS_NONE);
	assert_int_equal(cf.listeners[3].tls, CONFIG_TLS_NONE);
	assert_string_equal(cf.listeners[4].addr, "/l.sock");
	assert_int_equal(cf.listeners[4].tls, CONFIG_TLS_NONE);
	assert_int_equal(cf.allow_cleartext, CONFIG_CLEARTEXT_NO);
	assert_string_equal(cf.tls.cert, "/etc/c.pem");
	assert_int_equal(cf.tls.cert_line, 10);
	assert_string_equal(cf.tls.key, "/etc/k.pem");
	assert_int_equal(cf.tls.key_line, 9);
	assert_string_equal(cf.tls.min_protocol, "TLSv1.3");
	assert_int_equal(cf.tls.min_protocol_line, 11);
	assert_string_equal(cf.tls.ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
	assert_int_equal(cf.tls.ciphers_line, 12);
	assert_string_equal(cf.tls.ciphersuites, "TLS_AES_256_GCM_SHA384");
	assert_int_equal(cf.tls.ciphersuites_line, 13);
	assert_string_equal(cf.tls.groups, "X25519");
	assert_int_equal(cf.tls.groups_line, 14);
	assert_int_equal(cf.tls.handshake_timeout_s, 3);
	assert_int_equal(cf.tls.ticket_lifetime_s, 0);
	assert_false(cf.tls.ktls);

	/* The other words; a [tls] section with no TLS listener is fine. */
	if (load(PUNT "[server]\nallow_cleartext = yes\n[tls]\nktls = yes\n"
	    "cert = /c\nkey = /k\n", &cf, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(cf.allow_cleartext, CONFIG_CLEARTEXT_YES);
	assert_true(cf.tls.ktls);
	assert_int_equal(cf.tls.min_protocol_line, 0);
	if (load(PUNT "[server]\nallow_cleartext = loopback\n", &cf, err,
	    sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(cf.allow_cleartext, CONFIG_CLEARTEXT_LOOPBACK);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_listeners_interleaved),
		cmocka_unit_test(test_shipped),
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_tls),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
