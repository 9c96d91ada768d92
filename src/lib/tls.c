/*
 * tls: the server's TLS context and the shared ticket keys (tls.h).
 * Skeleton: the TLS issue's core fills this in.
 */
#include <stdio.h>

#include "sdps/config.h"
#include "sdps/tls.h"

struct tls_tickets *
tls_tickets_create(void)
{
	return NULL;
}

void
tls_tickets_destroy(struct tls_tickets *tk)
{
	(void)tk;
}

bool
tls_tickets_rotate(struct tls_tickets *tk, uint64_t now_s,
    unsigned lifetime_s)
{
	(void)tk;
	(void)now_s;
	(void)lifetime_s;
	return false;
}

int
tls_pem_read(const struct config *cf, struct tls_pem *pem, char *err,
    size_t errlen)
{
	pem->cert = pem->key = NULL;
	pem->cert_len = pem->key_len = 0;
	snprintf(err, errlen, "%s:%d: TLS is not built yet", cf->file,
	    cf->tls.cert_line);
	return -1;
}

void
tls_pem_wipe(struct tls_pem *pem)
{
	(void)pem;
}

struct tls_server *
tls_server_new(const struct config *cf, const struct tls_pem *pem,
    struct tls_tickets *tk, char *err, size_t errlen)
{
	(void)pem;
	(void)tk;
	snprintf(err, errlen, "%s:%d: TLS is not built yet", cf->file,
	    cf->tls.cert_line);
	return NULL;
}

void
tls_server_free(struct tls_server *t)
{
	(void)t;
}

struct ssl_st *
tls_server_ssl(struct tls_server *t)
{
	(void)t;
	return NULL;
}

void
tls_server_describe(const struct tls_server *t, char *buf, size_t len)
{
	(void)t;
	snprintf(buf, len, "-");
}
