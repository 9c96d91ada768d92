/*
 * tls_client: the client TLS contexts of a front end's links to its
 * remote punts (issue 11, docs/punt-protocol.md §1).  One context per
 * remote [punt NAME]: TLS 1.3 only, the punt's ca as the only trust
 * anchor, this front end's certificate and key, and the punt's
 * certificate checked against server_name (a DNS name, or an IP address
 * in its subjectAltName when server_name is an IP literal).
 *
 * The key file is secret, so the contexts are built where it can be
 * read: tls_clients_load in sdpsd's master as root, before the privilege
 * drop and before any fork (workers inherit the table in memory and
 * never open the key), and at start in one-shot programs (sdps-deliver,
 * sdps-ctl), where tls_client_get builds a missing context on first use.
 *
 * Error convention: constructors return NULL (or -1) with err set.
 */
#ifndef SDPS_TLS_CLIENT_H
#define SDPS_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct config_punt;
struct ssl_st;
struct tls_client;

/* The context for punt p (p->address set).  NULL with err set. */
struct tls_client *tls_client_new(const struct config_punt *p, char *err,
	    size_t errlen);
void	tls_client_free(struct tls_client *t);

/*
 * A new client SSL for one link: SNI (DNS names only) and the name or
 * IP the punt's certificate must carry.  NULL on failure (logged).
 */
struct ssl_st *tls_client_ssl(struct tls_client *t);

/* "punt-a.example.net" or "192.0.2.1": what is verified. */
const char *tls_client_server_name(const struct tls_client *t);

/*
 * The process-wide table: a context for every remote punt of cf, built
 * now (the master, as root).  0, or -1 with err "[punt NAME]: reason"
 * (the daemon refuses to start: a front end with a bad key would only
 * fail every login later).  A second call replaces the table only if
 * every context builds (a reload keeps the old one otherwise).
 */
int	tls_clients_load(const struct config *cf, char *err, size_t errlen);

/*
 * The table's context for p (matched by name and files), or, if there
 * is none, one built now and added (a one-shot program at start).  NULL
 * with err set.
 */
struct tls_client *tls_client_get(const struct config_punt *p, char *err,
	    size_t errlen);

#endif
