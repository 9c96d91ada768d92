/*
 * tls_client: a front end's client contexts for its punt links
 * (tls_client.h).  The server side is tls.c's.
 */
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/tls_client.h"

struct tls_client {
	SSL_CTX		*ctx;
	char		 name[CONFIG_NAME_MAX + 1];	/* the punt's */
	char		 server_name[256];
	bool		 ip;		/* server_name is an IP literal */
	/* What the context was built from (tls_client_get's match). */
	char		 ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
};

static struct tls_client *table[CONFIG_PUNT_MAX];
static int		  ntable;

/* The OpenSSL error queue's first reason (never key material). */
static void
ssl_why(char *err, size_t errlen, const char *punt, const char *what,
    const char *file)
{
	unsigned long	 e = ERR_get_error();
	const char	*r = e != 0 ? ERR_reason_error_string(e) : NULL;

	snprintf(err, errlen, "[punt %s]: %s %s: %s", punt, what, file,
	    r != NULL ? r : "failed");
	ERR_clear_error();
}

static bool
is_ip(const char *s)
{
	unsigned char	 a[16];

	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

struct tls_client *
tls_client_new(const struct config_punt *p, char *err, size_t errlen)
{
	struct tls_client	*t;

	if (p->ca[0] == '\0' || p->cert[0] == '\0' || p->key[0] == '\0') {
		snprintf(err, errlen, "[punt %s]: a remote punt needs ca, "
		    "cert and key", p->name);
		return NULL;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		snprintf(err, errlen, "[punt %s]: out of memory", p->name);
		return NULL;
	}
	snprintf(t->name, sizeof(t->name), "%s", p->name);
	snprintf(t->server_name, sizeof(t->server_name), "%s",
	    p->server_name);
	snprintf(t->ca, sizeof(t->ca), "%s", p->ca);
	snprintf(t->cert, sizeof(t->cert), "%s", p->cert);
	snprintf(t->key, sizeof(t->key), "%s", p->key);
	t->ip = is_ip(t->server_name);
	ERR_clear_error();
	if ((t->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		ssl_why(err, errlen, p->name, "SSL_CTX_new", "");
		goto fail;
	}
	/* TLS 1.3 only (docs/punt-protocol.md §1): nothing to negotiate. */
	if (SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION) != 1) {
		ssl_why(err, errlen, p->name, "protocol", "TLSv1.3");
		goto fail;
	}
	/*
	 * AES-128-GCM first: the link carries every body a front end
	 * relays, and the punt takes the client's order (tls.c clears
	 * server preference), where OpenSSL's default puts AES-256 first,
	 * about a third more work per octet for no gain inside one
	 * operator's network.  Read-ahead: a body arrives as a stream of
	 * full records, so one recv can bring several.
	 */
	if (SSL_CTX_set_ciphersuites(t->ctx, "TLS_AES_128_GCM_SHA256:"
	    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1) {
		ssl_why(err, errlen, p->name, "ciphersuites", "");
		goto fail;
	}
	SSL_CTX_set_read_ahead(t->ctx, 1);
	/* The operator's CA only, not the system's store. */
	if (SSL_CTX_load_verify_locations(t->ctx, p->ca, NULL) != 1) {
		ssl_why(err, errlen, p->name, "ca", p->ca);
		goto fail;
	}
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_use_certificate_chain_file(t->ctx, p->cert) != 1) {
		ssl_why(err, errlen, p->name, "cert", p->cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(t->ctx, p->key, SSL_FILETYPE_PEM)
	    != 1) {
		ssl_why(err, errlen, p->name, "key", p->key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(t->ctx) != 1) {
		ssl_why(err, errlen, p->name, "key does not match cert",
		    p->key);
		goto fail;
	}
	/* A link lives long and is made once per worker: no resumption. */
	SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
	return t;
fail:
	tls_client_free(t);
	return NULL;
}

void
tls_client_free(struct tls_client *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

struct ssl_st *
tls_client_ssl(struct tls_client *t)
{
	SSL	*ssl;
	int	 ok;

	ERR_clear_error();
	if ((ssl = SSL_new(t->ctx)) == NULL) {
		log_warnx("tls client %s: SSL_new failed", t->name);
		return NULL;
	}
	if (t->ip)
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    t->server_name) == 1;
	else
		ok = SSL_set1_host(ssl, t->server_name) == 1 &&
		    SSL_set_tlsext_host_name(ssl, t->server_name) == 1;
	if (!ok) {
		log_warnx("tls client %s: server_name %s refused", t->name,
		    t->server_name);
		ERR_clear_error();
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

const char *
tls_client_server_name(const struct tls_client *t)
{
	return t->server_name;
}

int
tls_clients_load(const struct config *cf, char *err, size_t errlen)
{
	struct tls_client	*v[CONFIG_PUNT_MAX];
	int			 i, n = 0;

	for (i = 0; i < cf->npunts; i++) {
		if (cf->punts[i].address[0] == '\0')
			continue;
		if ((v[n] = tls_client_new(&cf->punts[i], err, errlen))
		    == NULL) {
			while (n > 0)
				tls_client_free(v[--n]);
			return -1;
		}
		n++;
	}
	/* Contexts already handed to links stay valid: a link holds its
	 * SSL, which holds a reference to its SSL_CTX. */
	for (i = 0; i < ntable; i++)
		tls_client_free(table[i]);
	memcpy(table, v, (size_t)n * sizeof(v[0]));
	ntable = n;
	return 0;
}

struct tls_client *
tls_client_get(const struct config_punt *p, char *err, size_t errlen)
{
	struct tls_client	*t;
	int			 i;

	for (i = 0; i < ntable; i++) {
		t = table[i];
		if (strcmp(t->name, p->name) == 0 &&
		    strcmp(t->server_name, p->server_name) == 0 &&
		    strcmp(t->ca, p->ca) == 0 &&
		    strcmp(t->cert, p->cert) == 0 &&
		    strcmp(t->key, p->key) == 0)
			return t;
	}
	if (ntable >= CONFIG_PUNT_MAX) {
		snprintf(err, errlen, "[punt %s]: too many contexts", p->name);
		return NULL;
	}
	if ((t = tls_client_new(p, err, errlen)) == NULL)
		return NULL;
	table[ntable++] = t;
	return t;
}
