/*
 * config_punt: the keys of a [punt NAME] section.  A local punt has a
 * path; a remote one (issue 11, docs/punt-protocol.md) has the punt
 * server's address and the TLS client files instead.
 */
#include <stdio.h>
#include <string.h>

#include "sdps/config.h"
#include "sdps/util.h"
#include "config_int.h"

struct punt_key {
	const char	*name;
	size_t		 off, size;
	bool		 path;		/* an absolute path */
};

#define PF(f)	offsetof(struct config_punt, f), \
		    sizeof(((struct config_punt *)0)->f)

static const struct punt_key punt_keys[] = {
	{ "path",	 PF(path), true },
	{ "address",	 PF(address), false },
	{ "ca",		 PF(ca), true },
	{ "cert",	 PF(cert), true },
	{ "key",	 PF(key), true },
	{ "server_name", PF(server_name), false },
};

#define SEEN(i)		(1u << (i))
#define K_PATH_BIT	SEEN(0)
#define K_ADDR_BIT	SEEN(1)
#define K_TLS_BITS	(SEEN(2) | SEEN(3) | SEEN(4))

int
config_punt_key(struct config_punt *pt, unsigned *seen, const char *name,
    const char *value, char *why, size_t whylen)
{
	const struct punt_key	*k;
	size_t			 i;

	for (i = 0; i < NITEMS(punt_keys); i++)
		if (strcmp(punt_keys[i].name, name) == 0)
			break;
	if (i == NITEMS(punt_keys)) {
		snprintf(why, whylen, "[punt %s]: unknown key \"%s\"",
		    pt->name, name);
		return -1;
	}
	k = &punt_keys[i];
	if (*seen & SEEN(i)) {
		snprintf(why, whylen, "[punt %s]: duplicate key \"%s\"",
		    pt->name, name);
		return -1;
	}
	if (k->path ? !config_is_abs_path(value, k->size) :
	    i == 1 ? !config_is_inet_addr(value) || value[0] == '*' :
	    value[0] == '\0' || strlen(value) >= k->size ||
	    strcspn(value, " \t/") != strlen(value)) {
		snprintf(why, whylen, "[punt %s]: %s: expected %s, got "
		    "\"%s\"", pt->name, name, k->path ? "an absolute path" :
		    i == 1 ? "host:port or [v6]:port" : "a host name or "
		    "address", value);
		return -1;
	}
	snprintf((char *)pt + k->off, k->size, "%s", value);
	*seen |= SEEN(i);
	return 0;
}

/* "host:port" or "[v6]:port" -> host, the default server_name. */
static void
address_host(const char *addr, char *host, size_t len)
{
	const char	*colon = strrchr(addr, ':');
	size_t		 n = colon != NULL ? (size_t)(colon - addr) : 0;
	size_t		 at = 0;

	if (addr[0] == '[' && n >= 2) {
		at = 1;
		n -= 2;
	}
	if (n >= len)
		n = len - 1;
	memcpy(host, addr + at, n);
	host[n] = '\0';
}

int
config_punt_check(struct config *cf, int i, unsigned seen, char *why,
    size_t whylen)
{
	struct config_punt	*pt = &cf->punts[i];

	if ((seen & (K_PATH_BIT | K_ADDR_BIT)) == 0) {
		snprintf(why, whylen, "[punt %s]: path (a local punt) or "
		    "address (a remote one) is required", pt->name);
		return -1;
	}
	if ((seen & K_PATH_BIT) && (seen & K_ADDR_BIT)) {
		snprintf(why, whylen, "[punt %s]: path and address: a punt "
		    "is local or remote, not both", pt->name);
		return -1;
	}
	if (seen & K_PATH_BIT) {
		if (seen & ~K_PATH_BIT) {
			snprintf(why, whylen, "[punt %s]: ca, cert, key and "
			    "server_name are for a remote punt (address)",
			    pt->name);
			return -1;
		}
		return 0;
	}
	if ((seen & K_TLS_BITS) != K_TLS_BITS) {
		snprintf(why, whylen, "[punt %s]: a remote punt needs ca, "
		    "cert and key (mutual TLS)", pt->name);
		return -1;
	}
	if (pt->server_name[0] == '\0')
		address_host(pt->address, pt->server_name,
		    sizeof(pt->server_name));
	return 0;
}

int
config_punt_listeners(const struct config *cf, char *why, size_t whylen)
{
	const struct config_punt	*pt;
	int				 i;

	/* A punt listener serves a local punt, and never runs open: the
	 * front ends' CA and allow-list are required. */
	for (i = 0; i < cf->nlisteners; i++) {
		if (cf->listeners[i].proto != CONFIG_PROTO_PUNT)
			continue;
		pt = config_punt_find(cf, cf->listeners[i].punt);
		if (pt == NULL || pt->path[0] == '\0')
			snprintf(why, whylen, "punt_listen: %s is not a local "
			    "[punt NAME]", cf->listeners[i].punt);
		else if (cf->ps_ca[0] == '\0' || cf->ps_allow[0] == '\0')
			snprintf(why, whylen, "punt_listen: needs "
			    "[punt_server] ca and allow");
		else
			continue;
		return i;
	}
	return -1;
}
