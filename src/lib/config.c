/*
 * config: read the one INI file with libinih, check every value, and say
 * "file:line: reason" for the first thing that is wrong.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "sdps/config.h"
#include "sdps/util.h"
#include "config_int.h"

#define MIB	(1024ULL * 1024)

enum sect { S_NONE, S_SERVER, S_TLS, S_AUTH, S_STORE, S_EXPIRE, S_PSERVER,
    S_LINK, S_PUNT };

enum ktype {
	K_UINT,		/* unsigned, within [min, max] */
	K_MB,		/* uint64_t octets, written in MiB */
	K_U64,		/* uint64_t, within [min, max] */
	K_PATH,		/* absolute path */
	K_USER,		/* user name or "" */
	K_CMD,		/* command line starting with an absolute path, or "" */
	K_LISTEN,	/* repeatable address */
	K_LMTP,		/* repeatable address or unix socket path */
	K_PUNTL,	/* repeatable "address punt-name" */
	K_COST,		/* hash cost name */
	K_MODE,		/* octal permission bits, at most max */
	K_GROUP,	/* group name or "" (field of 64) */
	K_CLEAR,	/* allow_cleartext: loopback, yes or no */
	K_STR,		/* printable text, shorter than max */
	K_WORDS,	/* printable words and spaces, shorter than max */
	K_PROTO,	/* TLS protocol floor name */
	K_BOOL		/* yes or no */
};

struct key {
	enum sect	 sect;
	const char	*name;
	enum ktype	 type;
	size_t		 off;
	uint64_t	 min, max;
};

#define CF(f)	offsetof(struct config, f)
#define TF(f)	offsetof(struct config, tls.f)
#define TSZ(f)	sizeof(((struct config_tls_set *)0)->f)


static const struct key keys[] = {
	{ S_SERVER, "listen",		K_LISTEN, 0, 0, 0 },
	{ S_SERVER, "lmtp_listen",	K_LMTP,	0, 0, 0 },
	{ S_SERVER, "punt_listen",	K_PUNTL, 0, 0, 0 },
	{ S_SERVER, "user",		K_USER,	CF(user), 0, 0 },
	{ S_SERVER, "run_dir",		K_PATH,	CF(run_dir), 0, 0 },
	{ S_SERVER, "min_spare",	K_UINT,	CF(min_spare), 0, 100000 },
	{ S_SERVER, "max_spare",	K_UINT,	CF(max_spare), 1, 100000 },
	{ S_SERVER, "max_workers",	K_UINT,	CF(max_workers), 1, 4000 },
	{ S_SERVER, "max_sessions_per_worker", K_UINT,
	    CF(max_sessions_per_worker), 1, 100000000 },
	{ S_SERVER, "idle_timeout",	K_UINT,	CF(idle_timeout_s), 1, 86400 },
	{ S_SERVER, "send_timeout",	K_UINT,	CF(send_timeout_s), 1, 86400 },
	{ S_SERVER, "auth_fail_delay_ms", K_UINT,
	    CF(auth_fail_delay_ms), 0, 60000 },
	{ S_SERVER, "auth_max_failures", K_UINT,
	    CF(auth_max_failures), 1, 1000 },
	{ S_SERVER, "auth_max_parallel", K_UINT,
	    CF(auth_max_parallel), 1, 1024 },
	{ S_SERVER, "auth_cache_ttl",	K_UINT,
	    CF(auth_cache_ttl_s), 0, 86400 },
	{ S_SERVER, "auth_cache_entries", K_UINT,
	    CF(auth_cache_entries), 1, 10000000 },
	/* Auth throttle (issue 8). */
	{ S_SERVER, "auth_source_budget", K_UINT,
	    CF(auth_source_budget), 0, 1000000 },
	{ S_SERVER, "auth_host_budget", K_UINT,
	    CF(auth_host_budget), 0, 1000000 },
	{ S_SERVER, "auth_budget_window", K_UINT,
	    CF(auth_budget_window_s), 1, 86400 },
	{ S_SERVER, "auth_fail_delay_max_ms", K_UINT,
	    CF(auth_fail_delay_max_ms), 0, 600000 },
	{ S_SERVER, "auth_throttle_entries", K_UINT,
	    CF(auth_throttle_entries), 8, 10000000 },
	{ S_SERVER, "login_delay",	K_UINT,
	    CF(login_delay_s), 0, 86400 },
	{ S_SERVER, "max_bad_commands",	K_UINT,
	    CF(max_bad_commands), 1, 100000 },
	{ S_SERVER, "shutdown_grace",	K_UINT,
	    CF(shutdown_grace_s), 0, 86400 },
	/* Issue 8 (h-sb): socket and scoreboard access. */
	{ S_SERVER, "lmtp_socket_mode",	K_MODE,
	    CF(lmtp_socket_mode), 0, 0777 },
	{ S_SERVER, "lmtp_socket_group", K_GROUP,
	    CF(lmtp_socket_group), 0, 0 },
	{ S_SERVER, "admin_group",	K_GROUP, CF(admin_group), 0, 0 },
	/* Connection limits (issue 8). */
	{ S_SERVER, "max_conn_per_ip",	K_UINT,
	    CF(max_conn_per_ip), 0, 100000 },
	{ S_SERVER, "auth_timeout",	K_UINT,
	    CF(auth_timeout_s), 0, 86400 },
	{ S_SERVER, "lmtp_workers",	K_UINT,
	    CF(lmtp_workers), 1, 64 },
	{ S_SERVER, "allow_cleartext",	K_CLEAR, CF(allow_cleartext), 0, 0 },
	/* [tls] (issue 10): the *_line fields are filled in check(). */
	{ S_TLS, "cert",		K_PATH,	TF(cert), 0, 0 },
	{ S_TLS, "key",			K_PATH,	TF(key), 0, 0 },
	{ S_TLS, "min_protocol",	K_PROTO, TF(min_protocol), 0, 0 },
	{ S_TLS, "ciphers",		K_STR,	TF(ciphers), 0, TSZ(ciphers) },
	{ S_TLS, "ciphersuites",	K_STR,
	    TF(ciphersuites), 0, TSZ(ciphersuites) },
	{ S_TLS, "groups",		K_STR,	TF(groups), 0, TSZ(groups) },
	{ S_TLS, "handshake_timeout",	K_UINT,
	    TF(handshake_timeout_s), 1, 3600 },
	{ S_TLS, "ticket_lifetime",	K_UINT,
	    TF(ticket_lifetime_s), 0, 604800 },
	{ S_TLS, "ktls",		K_BOOL,	TF(ktls), 0, 0 },
	/* Issue 11: remote punts (docs/punt-protocol.md). */
	{ S_PSERVER, "ca",		K_PATH,	CF(ps_ca), 0, 0 },
	{ S_PSERVER, "allow",		K_WORDS, CF(ps_allow), 0,
	    sizeof(((struct config *)0)->ps_allow) },
	{ S_PSERVER, "idle_timeout",	K_UINT,
	    CF(ps_idle_timeout_s), 1, 86400 },
	{ S_LINK, "timeout",		K_UINT,	CF(link_timeout_s), 1, 600 },
	{ S_LINK, "connect_timeout_ms",	K_UINT,
	    CF(link_connect_timeout_ms), 10, 600000 },
	{ S_LINK, "down_time",		K_UINT,	CF(link_down_s), 0, 3600 },
	{ S_AUTH, "path",		K_PATH,	CF(auth_path), 0, 0 },
	{ S_AUTH, "map_size_mb",	K_MB,	CF(auth_map_size), 1, 1048576 },
	{ S_AUTH, "hash_cost",		K_COST,	CF(hash_cost), 0, 0 },
	{ S_STORE, "map_size_mb",	K_MB,
	    CF(store_map_size), 1, 1048576 },
	{ S_STORE, "claim_lease",	K_UINT,
	    CF(claim_lease_s), 1, 31536000 },
	{ S_STORE, "max_message_size",	K_U64,
	    CF(max_message_octets), 1, 4294967295ULL },
	{ S_EXPIRE, "days",		K_UINT,	CF(expire_days), 1, 36500 },
	{ S_EXPIRE, "sendmail",		K_CMD,	CF(sendmail), 0, 0 },
	{ S_EXPIRE, "outbox",		K_PATH,	CF(outbox), 0, 0 },
};

struct parse {
	struct config	*cf;
	FILE		*fp;
	char		*buf;		/* the reader's getline buffer */
	size_t		 bufsz;
	int		 lineno;	/* line the reader handed out last */
	enum sect	 sect;
	int		 punt;		/* index in cf->punts when S_PUNT */
	int		 punt_line[CONFIG_PUNT_MAX];
	unsigned	 punt_keys[CONFIG_PUNT_MAX];	/* config_punt_key */
	int		 key_line[NITEMS(keys)];	/* 0 = not seen */
	int		 listen_line[CONFIG_LISTENERS_MAX]; /* by listener */
	int		 err_line;	/* first error, -1 = none */
	char		 reason[256];
};

static void __attribute__((format(printf, 3, 4)))
perr(struct parse *p, int line, const char *fmt, ...)
{
	va_list	 ap;

	if (p->err_line != -1)
		return;
	p->err_line = line;
	va_start(ap, fmt);
	vsnprintf(p->reason, sizeof(p->reason), fmt, ap);
	va_end(ap);
}

bool
config_is_punt_name(const char *s, size_t len)
{
	size_t	 i;

	if (len < 1 || len > CONFIG_NAME_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

static bool
has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

bool
config_is_abs_path(const char *s, size_t max)
{
	return s[0] == '/' && strlen(s) < max && !has_ctl(s);
}

/* The index of value in "a|b|c", or -1. */
static int
word_index(const char *list, const char *value)
{
	size_t	 n, len = strlen(value);
	int	 i;

	for (i = 0;; i++, list += n + 1) {
		n = strcspn(list, "|");
		if (n == len && strncmp(list, value, n) == 0)
			return i;
		if (list[n] == '\0')
			return -1;
	}
}

#define TLS_MODES	"none|starttls|implicit"	/* enum config_tls */
/* "a.b.c.d:port", "[v6]:port" or "*:port"; the port is 1..65535. */
bool
config_is_inet_addr(const char *s)
{
	char		 host[INET6_ADDRSTRLEN];
	const char	*colon, *h;
	unsigned char	 bin[sizeof(struct in6_addr)];
	uint64_t	 port;
	size_t		 hlen;
	int		 af;

	if (s[0] == '[') {
		if ((colon = strstr(s, "]:")) == NULL)
			return false;
		h = s + 1;
		hlen = (size_t)(colon - h);
		colon++;
		af = AF_INET6;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return false;
		h = s;
		hlen = (size_t)(colon - s);
		af = AF_INET;
	}
	if (util_parse_u64(colon + 1, 65535, &port) == -1 || port == 0)
		return false;
	if (af == AF_INET && hlen == 1 && h[0] == '*')
		return true;
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	return inet_pton(af, host, bin) == 1;
}

/* ---- listeners (issue 9): one array, POP3 entries before LMTP ones */

int
config_nlisteners(const struct config *cf, enum config_proto proto)
{
	int	 i, n = 0;

	for (i = 0; i < cf->nlisteners; i++)
		n += cf->listeners[i].proto == proto;
	return n;
}

/* Remove proto's listeners (the built-in default, for the first line). */
static void
drop_listeners(struct config *cf, enum config_proto proto)
{
	int	 i, n = 0;

	for (i = 0; i < cf->nlisteners; i++)
		if (cf->listeners[i].proto != proto)
			cf->listeners[n++] = cf->listeners[i];
	cf->nlisteners = n;
}

/*
 * Append a listener after the last of its protocol: POP3 ones stay
 * first, as the two separate lists were bound before.  The caller checked
 * the per-protocol limit, so there is room.  Its line: listen_line.
 */
static void
add_listener(struct parse *p, const char *addr, enum config_proto proto,
    enum config_tls tls)
{
	struct config		*cf = p->cf;
	struct config_listener	*l;
	int			 at = cf->nlisteners;
	size_t			 n;

	if (proto == CONFIG_PROTO_POP3)
		at = config_nlisteners(cf, CONFIG_PROTO_POP3);
	n = (size_t)(cf->nlisteners - at);
	memmove(&cf->listeners[at + 1], &cf->listeners[at],
	    n * sizeof(cf->listeners[0]));
	memmove(&p->listen_line[at + 1], &p->listen_line[at],
	    n * sizeof(p->listen_line[0]));
	l = &cf->listeners[at];
	memset(l, 0, sizeof(*l));
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	l->proto = proto;
	l->tls = tls;
	p->listen_line[at] = p->lineno;
	cf->nlisteners++;
}

/*
 * "ADDR" or "ADDR tls=MODE": split the address off into addr (of
 * CONFIG_ADDR_MAX) and read the mode.  -1 (reported) on a bad option.
 */
static int
split_listen(struct parse *p, const char *name, const char *value,
    char *addr, enum config_tls *tls)
{
	size_t		 len = strcspn(value, " \t");
	const char	*opt = value + len + strspn(value + len, " \t");
	int		 i = 0;

	snprintf(addr, CONFIG_ADDR_MAX, "%.*s", (int)len, value);
	if (len >= CONFIG_ADDR_MAX)
		addr[0] = '\0';	/* too long: a bad address */
	if (*opt != '\0' && (strncmp(opt, "tls=", 4) != 0 ||
	    (i = word_index(TLS_MODES, opt + 4)) == -1)) {
		perr(p, p->lineno, "%s: unknown option \"%s\" (want "
		    "tls=none, tls=starttls or tls=implicit)", name, opt);
		return -1;
	}
	*tls = (enum config_tls)i;
	return 0;
}

/* A user or group name as useradd takes it (checked for existence at
 * start-up), fitting in size bytes; "" is none. */
static bool
is_name(const char *value, size_t size)
{
	return strlen(value) < size && strspn(value,
	    "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == strlen(value) &&
	    value[0] != '-';
}

/* K_UINT, K_U64 and K_MB: a number in the key's range. */
static void
set_number(struct parse *p, const struct key *k, char *field,
    const char *value)
{
	uint64_t	 v;

	if (util_parse_u64(value, UINT64_MAX, &v) == -1 ||
	    v < k->min || v > k->max) {
		perr(p, p->lineno, "%s: expected a number %llu..%llu, "
		    "got \"%s\"", k->name, (unsigned long long)k->min,
		    (unsigned long long)k->max, value);
		return;
	}
	if (k->type == K_UINT)
		*(unsigned *)(void *)field = (unsigned)v;
	else if (k->type == K_U64)
		*(uint64_t *)(void *)field = v;
	else
		*(uint64_t *)(void *)field = v * MIB;
}

/* punt_listen = ADDR NAME: implicit TLS always; NAME checked in check(). */
static void
set_punt_listener(struct parse *p, const char *value)
{
	size_t		 len = strcspn(value, " \t");
	const char	*name = value + len + strspn(value + len, " \t");
	char		 addr[CONFIG_ADDR_MAX];

	snprintf(addr, sizeof(addr), "%.*s", (int)len, value);
	if (len >= sizeof(addr) || !config_is_inet_addr(addr) ||
	    !config_is_punt_name(name, strlen(name))) {
		perr(p, p->lineno, "punt_listen: expected \"host:port "
		    "PUNT\" (a [punt PUNT] with a path), got \"%s\"", value);
		return;
	}
	if (config_nlisteners(p->cf, CONFIG_PROTO_PUNT) == CONFIG_LISTEN_MAX) {
		perr(p, p->lineno, "punt_listen: more than %d addresses",
		    CONFIG_LISTEN_MAX);
		return;
	}
	add_listener(p, addr, CONFIG_PROTO_PUNT, CONFIG_TLS_IMPLICIT);
	strcpy(p->cf->listeners[p->cf->nlisteners - 1].punt, name);
}

/* K_LISTEN (POP3) and K_LMTP: one more listener of that protocol. */
static void
set_listener(struct parse *p, const struct key *k, const char *value)
{
	struct config	*cf = p->cf;
	char		 addr[CONFIG_ADDR_MAX];
	enum config_tls	 tls;
	int		 line = p->lineno;

	if (k->type != K_PUNTL &&
	    split_listen(p, k->name, value, addr, &tls) == -1)
		return;
	if (k->type == K_LISTEN) {
		if (!config_is_inet_addr(addr)) {
			perr(p, line, "listen: bad address \"%s\" (want "
			    "a.b.c.d:port, [v6]:port or *:port)", addr);
			return;
		}
		/* The first listen line replaces the built-in default. */
		if (p->key_line[k - keys] == 0)
			drop_listeners(cf, CONFIG_PROTO_POP3);
		if (config_nlisteners(cf, CONFIG_PROTO_POP3) ==
		    CONFIG_LISTEN_MAX) {
			perr(p, line, "listen: more than %d addresses",
			    CONFIG_LISTEN_MAX);
			return;
		}
		add_listener(p, addr, CONFIG_PROTO_POP3, tls);
		return;
	}
	if (k->type == K_PUNTL) {
		set_punt_listener(p, value);
		return;
	}
	if (tls != CONFIG_TLS_NONE) {
		perr(p, line, "lmtp_listen: LMTP is plain only (tls=none)");
		return;
	}
	if (addr[0] == '/' ? !config_is_abs_path(addr,
	    sizeof(((struct sockaddr_un *)0)->sun_path)) :
	    !config_is_inet_addr(addr)) {
		perr(p, line, "lmtp_listen: bad address \"%s\" (want "
		    "host:port or an absolute socket path)", addr);
		return;
	}
	if (config_nlisteners(cf, CONFIG_PROTO_LMTP) == CONFIG_LISTEN_MAX) {
		perr(p, line, "lmtp_listen: more than %d addresses",
		    CONFIG_LISTEN_MAX);
		return;
	}
	add_listener(p, addr, CONFIG_PROTO_LMTP, CONFIG_TLS_NONE);
}

/*
 * K_COST, K_CLEAR, K_PROTO and K_BOOL: one word of a list, in the order
 * of its enum.  TLS 1.0 and 1.1 are not on the list (RFC 8996).
 */
static void
set_word(struct parse *p, const struct key *k, char *field,
    const char *value)
{
	static const char *const words[] = {
		[K_COST] = "min|interactive|moderate",
		[K_CLEAR] = "loopback|yes|no",
		[K_PROTO] = "TLSv1.2|TLSv1.3",
		[K_BOOL] = "no|yes",
	};
	int	 i;

	if ((i = word_index(words[k->type], value)) == -1) {
		perr(p, p->lineno, "%s: expected %s, got \"%s\"", k->name,
		    words[k->type], value);
		return;
	}
	if (k->type == K_COST)
		p->cf->hash_cost = (enum config_hash_cost)i;
	else if (k->type == K_CLEAR)
		p->cf->allow_cleartext = (enum config_cleartext)i;
	else if (k->type == K_BOOL)
		*(bool *)(void *)field = i == 1;
	else
		strcpy(field, value);
}

static void
set_key(struct parse *p, const struct key *k, const char *value)
{
	struct config	*cf = p->cf;
	char		*field = (char *)cf + k->off;
	uint64_t	 v;
	int		 line = p->lineno;

	switch (k->type) {
	case K_UINT:
	case K_U64:
	case K_MB:
		set_number(p, k, field, value);
		return;
	case K_PATH:
		if (!config_is_abs_path(value, PATH_MAX)) {
			perr(p, line, "%s: expected an absolute path, got "
			    "\"%s\"", k->name, value);
			return;
		}
		strcpy(field, value);
		return;
	case K_USER:
		if (strcmp(value, "\"\"") == 0)
			value = "";
		if (!is_name(value, sizeof(cf->user))) {
			perr(p, line, "user: bad user name \"%s\"", value);
			return;
		}
		strcpy(cf->user, value);
		return;
	case K_GROUP:
		/* Checked against the group database at start-up. */
		if (strcmp(value, "\"\"") == 0)
			value = "";
		if (!is_name(value, sizeof(cf->admin_group))) {
			perr(p, line, "%s: bad group name \"%s\"", k->name,
			    value);
			return;
		}
		strcpy(field, value);
		return;
	case K_MODE:
		/* Octal, as chmod takes it: "0660" or "660". */
		if (value[0] == '\0' || strspn(value, "01234567") !=
		    strlen(value) || strlen(value) > 4 ||
		    (v = strtoull(value, NULL, 8)) > k->max) {
			perr(p, line, "%s: expected octal permission bits "
			    "0..%llo, got \"%s\"", k->name,
			    (unsigned long long)k->max, value);
			return;
		}
		*(unsigned *)(void *)field = (unsigned)v;
		return;
	case K_CMD:
		if (strcmp(value, "\"\"") == 0)
			value = "";
		if (value[0] != '\0' && !config_is_abs_path(value, PATH_MAX)) {
			perr(p, line, "%s: expected a command with an "
			    "absolute path, or nothing", k->name);
			return;
		}
		strcpy(field, value);
		return;
	case K_LISTEN:
	case K_LMTP:
	case K_PUNTL:
		set_listener(p, k, value);
		return;
	case K_STR:
		/* Checked by OpenSSL when the context is built. */
		if (value[0] == '\0' || strlen(value) >= k->max ||
		    strcspn(value, " \t") != strlen(value) || has_ctl(value)) {
			perr(p, line, "%s: expected a list without spaces, "
			    "1..%llu octets", k->name,
			    (unsigned long long)k->max - 1);
			return;
		}
		strcpy(field, value);
		return;
	case K_WORDS:
		if (strlen(value) >= k->max || has_ctl(value)) {
			perr(p, line, "%s: expected words, 0..%llu octets",
			    k->name, (unsigned long long)k->max - 1);
			return;
		}
		strcpy(field, value);
		return;
	case K_COST:
	case K_CLEAR:
	case K_PROTO:
	case K_BOOL:
		set_word(p, k, field, value);
		return;
	}
}

/* By enum sect: the [name] of each section ("punt NAME" for S_PUNT). */
static const char *const sect_names[] = {
	"", "server", "tls", "auth", "store", "expire", "punt_server", "link",
	"punt"
};

static int
handler(void *arg, const char *section, const char *name, const char *value)
{
	struct parse		*p = arg;
	struct config_punt	*pt;
	size_t			 i;

	(void)section;	/* the reader tracked the section, unabridged */
	if (p->err_line != -1)
		return 0;
	if (p->sect == S_NONE) {
		perr(p, p->lineno, "%s: key outside a section", name);
		return 0;
	}
	if (p->sect == S_PUNT) {
		pt = &p->cf->punts[p->punt];
		if (config_punt_key(pt, &p->punt_keys[p->punt], name, value,
		    p->reason, sizeof(p->reason)) == -1) {
			p->err_line = p->lineno;
			return 0;
		}
		return 1;
	}
	for (i = 0; i < NITEMS(keys); i++) {
		if (keys[i].sect != p->sect || strcmp(keys[i].name, name) != 0)
			continue;
		if (p->key_line[i] != 0 && keys[i].type != K_LISTEN &&
		    keys[i].type != K_LMTP) {
			perr(p, p->lineno, "[%s]: duplicate key \"%s\" (first "
			    "on line %d)", sect_names[p->sect], name,
			    p->key_line[i]);
			return 0;
		}
		set_key(p, &keys[i], value);
		if (p->key_line[i] == 0)
			p->key_line[i] = p->lineno;
		return p->err_line == -1;
	}
	perr(p, p->lineno, "[%s]: unknown key \"%s\"", sect_names[p->sect],
	    name);
	return 0;
}

/*
 * A section header as inih will see it: record which section the
 * following keys belong to, validated on the whole name (inih would cut a
 * long one short), and a line number for each punt.
 */
static void
section(struct parse *p, const char *s)
{
	struct config	*cf = p->cf;
	const char	*end, *name, *after;
	size_t		 len;
	int		 i;

	if ((end = strchr(s, ']')) == NULL)
		return;		/* inih reports it */
	len = (size_t)(end - s - 1);
	after = end + 1 + strspn(end + 1, " \t\r\n");
	if (*after != '\0' && *after != ';' && *after != '#') {
		perr(p, p->lineno, "junk after section header");
		return;
	}
	for (p->sect = S_LINK; p->sect > S_NONE; p->sect--)
		if (strlen(sect_names[p->sect]) == len &&
		    strncmp(s + 1, sect_names[p->sect], len) == 0)
			break;
	if (p->sect == S_NONE && len > 5 && strncmp(s + 1, "punt ", 5) == 0) {
		name = s + 6;
		len -= 5;
		if (!config_is_punt_name(name, len)) {
			perr(p, p->lineno, "bad punt name \"%.*s\" (want "
			    "[a-z0-9_-], 1..%d)", (int)len, name,
			    CONFIG_NAME_MAX);
			return;
		}
		for (i = 0; i < cf->npunts; i++)
			if (strlen(cf->punts[i].name) == len &&
			    strncmp(cf->punts[i].name, name, len) == 0) {
				perr(p, p->lineno, "duplicate punt \"%.*s\" "
				    "(first on line %d)", (int)len, name,
				    p->punt_line[i]);
				return;
			}
		if (cf->npunts == CONFIG_PUNT_MAX) {
			perr(p, p->lineno, "more than %d punts",
			    CONFIG_PUNT_MAX);
			return;
		}
		p->punt = cf->npunts++;
		memcpy(cf->punts[p->punt].name, name, len);
		cf->punts[p->punt].name[len] = '\0';
		p->punt_line[p->punt] = p->lineno;
		p->sect = S_PUNT;
	} else if (p->sect == S_NONE)
		perr(p, p->lineno, "unknown section [%.*s]", (int)len, s + 1);
}

/*
 * The reader between the file and inih: it counts lines (libinih as
 * built for Debian passes none to the handler), sees section headers
 * first, and refuses a line inih would split.  Returning NULL after an
 * error stops the parse there.
 */
static char *
reader(char *str, int num, void *arg)
{
	struct parse	*p = arg;
	const char	*s;
	ssize_t		 n;

	if (p->err_line != -1)
		return NULL;
	if ((n = getline(&p->buf, &p->bufsz, p->fp)) == -1)
		return NULL;
	p->lineno++;
	if (memchr(p->buf, '\0', (size_t)n) != NULL) {
		perr(p, p->lineno, "NUL in line");
		return NULL;
	}
	if (n >= num - 1) {
		perr(p, p->lineno, "line too long (at most %d octets)",
		    num - 3);
		return NULL;
	}
	s = p->buf;
	if (p->lineno == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3;
	s += strspn(s, " \t");
	if (*s == '[') {
		section(p, s);
		if (p->err_line != -1)
			return NULL;
	}
	memcpy(str, p->buf, (size_t)n + 1);
	return str;
}

/* The line a key of sect was set on, 0 if it kept its default. */
static int
key_line(const struct parse *p, enum sect sect, const char *name)
{
	size_t	 i;

	for (i = 0; i < NITEMS(keys); i++)
		if (keys[i].sect == sect && strcmp(keys[i].name, name) == 0)
			return p->key_line[i];
	return 0;
}

/* A cross-key error points at whichever of the two keys came last. */
static int
later(int a, int b)
{
	return a > b ? a : b;
}

/*
 * [tls]: record where each value came from (tls.h reports file problems
 * as file:line), then the pairs: cert and key together, and both for
 * any listener that speaks TLS.
 */
static int
check_tls(struct parse *p)
{
	struct config_tls_set	*t = &p->cf->tls;
	const struct config	*cf = p->cf;
	int			 i;

	t->cert_line = key_line(p, S_TLS, "cert");
	t->key_line = key_line(p, S_TLS, "key");
	t->min_protocol_line = key_line(p, S_TLS, "min_protocol");
	t->ciphers_line = key_line(p, S_TLS, "ciphers");
	t->ciphersuites_line = key_line(p, S_TLS, "ciphersuites");
	t->groups_line = key_line(p, S_TLS, "groups");
	if ((t->cert[0] == '\0') != (t->key[0] == '\0')) {
		perr(p, later(t->cert_line, t->key_line), "[tls]: %s",
		    t->cert[0] != '\0' ? "cert without key" : "key without cert");
		return -1;
	}
	for (i = 0; i < cf->nlisteners; i++) {
		if (cf->listeners[i].tls == CONFIG_TLS_NONE ||
		    t->cert[0] != '\0')
			continue;
		perr(p, p->listen_line[i], "%s: %s %s needs [tls] cert "
		    "and key", cf->listeners[i].proto == CONFIG_PROTO_PUNT ?
		    "punt_listen" : "listen", cf->listeners[i].addr,
		    cf->listeners[i].tls == CONFIG_TLS_STARTTLS ?
		    "tls=starttls" : "tls=implicit");
		return -1;
	}
	return 0;
}

/* Listener i (from config_punt_listeners) is not servable: say why. */
static int
check_punt_listeners(struct parse *p)
{
	int	 i;

	if ((i = config_punt_listeners(p->cf, p->reason,
	    sizeof(p->reason))) == -1)
		return 0;
	p->err_line = p->listen_line[i];
	return -1;
}

static int
check(struct parse *p)
{
	struct config	*cf = p->cf;
	int		 i, j, line;

	for (i = 0; i < cf->npunts; i++) {
		if (config_punt_check(cf, i, p->punt_keys[i], p->reason,
		    sizeof(p->reason)) == -1) {
			p->err_line = p->punt_line[i];
			return -1;
		}
		for (j = 0; j < i; j++)
			if (cf->punts[i].path[0] != '\0' &&
			    strcmp(cf->punts[i].path, cf->punts[j].path) == 0) {
				perr(p, p->punt_line[i], "[punt %s]: same path "
				    "as punt %s", cf->punts[i].name,
				    cf->punts[j].name);
				return -1;
			}
	}
	if (cf->npunts == 0) {
		perr(p, 0, "no [punt NAME] section: at least one is required");
		return -1;
	}
	if (check_punt_listeners(p) == -1 || check_tls(p) == -1)
		return -1;
	if (cf->min_spare > cf->max_spare) {
		line = later(key_line(p, S_SERVER, "min_spare"),
		    key_line(p, S_SERVER, "max_spare"));
		perr(p, line, "min_spare (%u) is over max_spare (%u)",
		    cf->min_spare, cf->max_spare);
		return -1;
	}
	if (cf->max_spare > cf->max_workers) {
		line = later(key_line(p, S_SERVER, "max_spare"),
		    key_line(p, S_SERVER, "max_workers"));
		perr(p, line, "max_spare (%u) is over max_workers (%u)",
		    cf->max_spare, cf->max_workers);
		return -1;
	}
	/* One LMDB reader slot per worker (4096 per environment). */
	if (config_nlisteners(cf, CONFIG_PROTO_LMTP) > 0 &&
	    cf->max_workers + cf->lmtp_workers > 4000) {
		line = later(key_line(p, S_SERVER, "max_workers"),
		    key_line(p, S_SERVER, "lmtp_workers"));
		perr(p, line, "max_workers + lmtp_workers (%u) is over 4000",
		    cf->max_workers + cf->lmtp_workers);
		return -1;
	}
	return 0;
}

int
config_load(const char *path, struct config *cf, char *err, size_t errlen)
{
	struct parse	 p;
	int		 rc;

	config_defaults(cf);
	memset(&p, 0, sizeof(p));
	p.cf = cf;
	p.err_line = -1;
	if (strlen(path) >= sizeof(cf->file)) {
		snprintf(err, errlen, "%s:0: path too long", path);
		return -1;
	}
	strcpy(cf->file, path);
	if ((p.fp = fopen(path, "re")) == NULL) {
		snprintf(err, errlen, "%s:0: %s", path, strerror(errno));
		return -1;
	}
	/*
	 * An indented line would otherwise continue the previous value, so
	 * "  max_workers = 9" silently became part of the key above.  Only
	 * this module uses inih, so the process-wide switch is ours.
	 */
	ini_allow_multiline = false;
	rc = ini_parse_stream(reader, &p, handler, &p);
	if (p.err_line == -1 && ferror(p.fp))
		perr(&p, p.lineno, "read: %s", strerror(errno));
	if (p.err_line == -1 && rc > 0)
		perr(&p, rc, "syntax error (want [section] or key = value)");
	else if (p.err_line == -1 && rc < 0)
		perr(&p, 0, "cannot parse (%d)", rc);
	fclose(p.fp);
	free(p.buf);
	if (p.err_line == -1)
		(void)check(&p);
	if (p.err_line != -1) {
		snprintf(err, errlen, "%s:%d: %s", path, p.err_line, p.reason);
		return -1;
	}
	return 0;
}

const struct config_punt *
config_punt_find(const struct config *cf, const char *name)
{
	int	 i;

	for (i = 0; i < cf->npunts; i++)
		if (strcmp(cf->punts[i].name, name) == 0)
			return &cf->punts[i];
	return NULL;
}
