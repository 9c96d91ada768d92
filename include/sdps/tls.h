/*
 * tls: the server's TLS context (issue 10, docs/design.md §17).  The
 * OpenSSL 3 context built from the [tls] section (certificate chain, key,
 * protocol floor, ciphers, groups), and the session-ticket keys that every
 * worker shares so a session resumes on any of them.
 *
 * The master builds both before the privilege drop and before any fork:
 * workers inherit the key in memory and never open the key file.  A
 * reload (SIGHUP) builds a new context; if that fails the old one stays.
 * Workers forked after a reload use the new one (the pool replaces the
 * old workers after their session).  The per-connection side, the
 * transport, is conn's (conn_tls_accept in conn.h).
 *
 * Error convention: constructors return NULL and put the reason in err,
 * as "file:line: reason" where the reason is a config line; other
 * functions that can fail return 0 or -1 (logged).
 */
#ifndef SDPS_TLS_H
#define SDPS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct ssl_st;
struct tls_server;
struct tls_tickets;

/*
 * The session-ticket keys, in an anonymous shared mapping (never a file:
 * whoever holds a ticket key can decrypt resumed sessions).  Made once by
 * the master before fork; workers read it, the master rotates it.  NULL
 * on failure (logged).
 */
struct tls_tickets *tls_tickets_create(void);
void	tls_tickets_destroy(struct tls_tickets *tk);

/*
 * Master, on its timer: make a fresh encrypting key once the current one
 * is lifetime_s old.  The previous key still decrypts for one more
 * lifetime, and a ticket under it is renewed.  True if it rotated.
 */
bool	tls_tickets_rotate(struct tls_tickets *tk, uint64_t now_s,
	    unsigned lifetime_s);

/*
 * The PEM text of the certificate chain and of the key.  tls_pem_read
 * reads cf->tls.cert and cf->tls.key (as root, before the privilege drop,
 * or in the master's root key reader at a reload: docs/design.md §17).
 * 0, or -1 with err "file:line: reason" (missing, unreadable, empty, too
 * large).  tls_pem_wipe wipes the key text and frees both.
 */
struct tls_pem {
	char	*cert;
	size_t	 cert_len;
	char	*key;
	size_t	 key_len;
};

int	tls_pem_read(const struct config *cf, struct tls_pem *pem, char *err,
	    size_t errlen);
void	tls_pem_wipe(struct tls_pem *pem);

/*
 * The server context from cf->tls and pem (which the caller then wipes).
 * tk (may be NULL: no resumption across processes) supplies the ticket
 * keys.  NULL with err set ("file:line: reason") if the PEM does not
 * parse, the key does not match the certificate, or a protocol, cipher
 * or group setting is invalid.
 */
struct tls_server *tls_server_new(const struct config *cf,
	    const struct tls_pem *pem, struct tls_tickets *tk, char *err,
	    size_t errlen);
void	tls_server_free(struct tls_server *t);

/* A new server-side SSL for one connection; NULL on failure (logged). */
struct ssl_st *tls_server_ssl(struct tls_server *t);

/* The certificate's subject and SHA-256 fingerprint, for log lines. */
void	tls_server_describe(const struct tls_server *t, char *buf,
	    size_t len);

/*
 * The punt server's context (issue 11, docs/punt-protocol.md §1): the
 * [tls] certificate and key (pem, as for tls_server_new), TLS 1.3 only,
 * no tickets and no session cache (a link lives long, and a resumed
 * session would skip the client's certificate), and a client
 * certificate required: it must chain to cf->ps_ca, and its DNS
 * subjectAltNames (or its CN when it has none) must include a name of
 * cf->ps_allow.  Both are checked in the handshake, so a refused front
 * end never reaches a command.  NULL with err set.  tls_server_ssl and
 * tls_server_free serve it as any context.
 */
struct tls_server *tls_punt_server_new(const struct config *cf,
	    const struct tls_pem *pem, char *err, size_t errlen);

/* Why the last handshake on t (in this process) refused its client:
 * "client CN=x DNS=y: reason", or "" if the verify step did not. */
const char *tls_punt_refusal(const struct tls_server *t);

/* "CN=x DNS=a,b" of ssl's peer certificate, printable ASCII only, or
 * "(no certificate)": who a link is, for log lines. */
void	tls_peer_identity(struct ssl_st *ssl, char *buf, size_t len);

#endif
