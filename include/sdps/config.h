/*
 * config: the one INI file (libinih), parsed and validated into a struct.
 *
 * Error convention: config_load returns 0 or -1 with a one-line reason
 * in the caller's err buffer (nothing logged); lookups return NULL or a count.
 */
#ifndef SDPS_CONFIG_H
#define SDPS_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#define CONFIG_DEFAULT_PATH	"/etc/sdps/sdps.conf"
#define CONFIG_LISTEN_MAX	8
#define CONFIG_PUNT_MAX		16
#define CONFIG_NAME_MAX		32	/* punt names: [a-z0-9_-], 1..32 */
#define CONFIG_ADDR_MAX		256	/* "host:port", "[v6]:port" or a unix path */

struct config_punt {
	char	 name[CONFIG_NAME_MAX + 1];
	char	 path[PATH_MAX];	/* a local punt's directory, or "" */
	/* A remote punt (issue 11, docs/punt-protocol.md): the punt
	 * server's address and the TLS client files; address "" = local. */
	char	 address[CONFIG_ADDR_MAX];	/* host:port or [v6]:port */
	char	 ca[PATH_MAX];		/* PEM CA the punt's cert must chain to */
	char	 cert[PATH_MAX];	/* this front end's client certificate */
	char	 key[PATH_MAX];		/* and its private key */
	char	 server_name[256];	/* name or IP the punt's cert must
					 * carry; default: address's host */
};

/*
 * A listener (issue 9): an address, the protocol served on it and its TLS
 * mode.  Built from the `listen` (POP3) and `lmtp_listen` (LMTP) lines;
 * a POP3 line may end in "tls=none|starttls|implicit" (issue 10; LMTP is
 * plain only).  Master (binding) and worker (accepting) carry the mode
 * through unchanged; the session acts on it (STLS, the handshake before
 * the greeting, the cleartext policy).
 */
enum config_proto {
	CONFIG_PROTO_POP3,
	CONFIG_PROTO_LMTP,
	CONFIG_PROTO_PUNT	/* punt_listen: the punt protocol, implicit TLS */
};

enum config_tls {
	CONFIG_TLS_NONE,	/* plain text */
	CONFIG_TLS_STARTTLS,	/* plain, STLS offered (RFC 2595), port 110 */
	CONFIG_TLS_IMPLICIT	/* TLS from the first octet, port 995 */
};

/*
 * allow_cleartext ([server]): where USER/PASS and AUTH PLAIN/LOGIN are
 * accepted on a connection without TLS.  Like Dovecot's
 * auth_allow_cleartext, with loopback trusted by default.
 */
enum config_cleartext {
	CONFIG_CLEARTEXT_LOOPBACK,	/* default: only from a loopback peer */
	CONFIG_CLEARTEXT_YES,		/* everywhere (operator's choice) */
	CONFIG_CLEARTEXT_NO		/* nowhere, loopback included */
};

/*
 * The [tls] section (issue 10; tls.h builds the context from it).  The
 * *_line fields are the config lines the values came from (0: the
 * built-in default), so a bad certificate is reported as file:line.
 */
struct config_tls_set {
	char	 cert[PATH_MAX];	/* PEM chain, leaf first; "" = no TLS */
	char	 key[PATH_MAX];		/* PEM private key */
	int	 cert_line, key_line;
	char	 min_protocol[16];	/* "TLSv1.2" (default) or "TLSv1.3" */
	int	 min_protocol_line;
	char	 ciphers[512];		/* TLS 1.2 list (OpenSSL syntax) */
	int	 ciphers_line;
	char	 ciphersuites[256];	/* TLS 1.3 suites */
	int	 ciphersuites_line;
	char	 groups[128];		/* key exchange groups */
	int	 groups_line;
	unsigned handshake_timeout_s;	/* default 10 */
	unsigned ticket_lifetime_s;	/* ticket key rotation; 0 = no tickets */
	bool	 ktls;			/* try kernel TLS (default yes) */
};

struct config_listener {
	char			 addr[CONFIG_ADDR_MAX];	/* or a unix path */
	enum config_proto	 proto;
	enum config_tls		 tls;
	char			 punt[CONFIG_NAME_MAX + 1]; /* PUNT: served */
};

/* Per protocol (CONFIG_LISTEN_MAX each): POP3, LMTP and punt. */
#define CONFIG_LISTENERS_MAX	(3 * CONFIG_LISTEN_MAX)

enum config_hash_cost {
	CONFIG_HASH_MIN,		/* tests only: libsodium's minimum */
	CONFIG_HASH_INTERACTIVE,	/* default: 64 MiB, about 0.1 s */
	CONFIG_HASH_MODERATE
};

struct config {
	char	 file[PATH_MAX];	/* the file this was loaded from */

	/* [server] */
	/* listen and lmtp_listen lines: the POP3 listeners first, then the
	 * LMTP ones, each in file order. */
	struct config_listener listeners[CONFIG_LISTENERS_MAX];
	int	 nlisteners;
	char	 user[64];		/* "" = do not drop privileges */
	char	 run_dir[PATH_MAX];
	unsigned min_spare, max_spare, max_workers;
	unsigned max_sessions_per_worker;
	unsigned idle_timeout_s;	/* autologout, default 600 */
	unsigned send_timeout_s;	/* peer not reading, default 60 */
	unsigned auth_fail_delay_ms;
	unsigned auth_max_failures;
	unsigned auth_max_parallel;	/* argon2id hashes at once */
	unsigned auth_cache_ttl_s;	/* 0 = no auth cache */
	unsigned auth_cache_entries;
	/* Auth throttle (issue 8): see throttle.h. */
	unsigned auth_source_budget;	/* failures per window; 0 = off */
	unsigned auth_host_budget;	/* failures per window; 0 = off */
	unsigned auth_budget_window_s;
	unsigned auth_fail_delay_max_ms; /* cap of the doubling delay */
	unsigned auth_throttle_entries;
	unsigned login_delay_s;		/* RFC 2449 LOGIN-DELAY; 0 = off */
	unsigned max_bad_commands;
	unsigned shutdown_grace_s;
	/* Issue 8 (h-sb): who may use the LMTP socket and read the
	 * scoreboard.  "" = the service user's primary group. */
	unsigned lmtp_socket_mode;	/* permission bits, default 0660 */
	char	 lmtp_socket_group[64];
	char	 admin_group[64];	/* group of RUN_DIR/scoreboard */
	/* Connection limits (docs/design.md §15.1). */
	unsigned max_conn_per_ip;	/* POP3 per source address; 0 = off */
	unsigned auth_timeout_s;	/* greeting to login; 0 = none */
	unsigned lmtp_workers;		/* dedicated LMTP pool */
	enum config_cleartext allow_cleartext;	/* issue 10 */

	/* [tls] */
	struct config_tls_set tls;

	/* [punt_server] (issue 11): who may use this machine's punts */
	char	 ps_ca[PATH_MAX];	/* PEM CA the front ends' certs chain to */
	char	 ps_allow[1024];	/* front-end identities, space separated */
	unsigned ps_idle_timeout_s;	/* a quiet link (and its lock) ends */

	/* [link] (issue 11): a front end's links to its remote punts */
	unsigned link_timeout_s;	/* per command; TCP_USER_TIMEOUT */
	unsigned link_connect_timeout_ms; /* connect + TLS + greeting, all
					 * punts in parallel, one deadline */
	unsigned link_down_s;		/* a punt that failed is skipped */

	/* [auth] */
	char	 auth_path[PATH_MAX];
	uint64_t auth_map_size;		/* octets */
	enum config_hash_cost hash_cost;

	/* [store] */
	uint64_t store_map_size;	/* octets, per punt */
	unsigned claim_lease_s;		/* an older SMTP claim is abandoned */
	uint64_t max_message_octets;

	/* [expire] */
	unsigned expire_days;
	char	 sendmail[PATH_MAX];	/* "" = write bounces to outbox */
	char	 outbox[PATH_MAX];

	/* [punt NAME], in file order (the merge order for ties) */
	struct config_punt punts[CONFIG_PUNT_MAX];
	int	 npunts;
};

/* Fill cf with every documented default (no punts). */
void	config_defaults(struct config *cf);

/*
 * Load path over the defaults.  Unknown sections or keys, bad values,
 * duplicate punts and a missing file are errors; err then holds one line
 * "file:line: reason" (line 0 when the error is not about one line).
 * Returns 0, or -1 and cf is undefined.
 */
int	config_load(const char *path, struct config *cf, char *err,
	    size_t errlen);

/* How many listeners serve proto. */
int	config_nlisteners(const struct config *cf, enum config_proto proto);

/* The punt called name, or NULL. */
const struct config_punt *config_punt_find(const struct config *cf,
	    const char *name);

#endif
