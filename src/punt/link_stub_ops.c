/*
 * TEMPORARY (helper "ops", issue 11): weak stand-ins for the link client
 * (link.h, src/punt/link.c) and the TLS client context (tls_client.c),
 * which helper "cli" is writing in its branch, so that this branch links
 * and its local tests run.  Every call fails as a dead punt would.  The
 * lead deletes this file at the merge; nothing may depend on it.
 */
#include <stdarg.h>
#include <stdio.h>

#include "sdps/config.h"
#include "sdps/link.h"

struct tls_client *tls_client_new(const struct config_punt *p, char *err,
	    size_t errlen);
void	tls_client_free(struct tls_client *t);

#define WEAK	__attribute__((weak))

WEAK struct tls_client *
tls_client_new(const struct config_punt *p, char *err, size_t errlen)
{
	snprintf(err, errlen, "punt %s: no link client in this build",
	    p->name);
	return NULL;
}

WEAK void
tls_client_free(struct tls_client *t)
{
	(void)t;
}

WEAK struct link *
link_open(const struct link_opts *o, char *err, size_t errlen)
{
	snprintf(err, errlen, "punt %s: no link client in this build",
	    o->punt->name);
	return NULL;
}

WEAK void
link_free(struct link *l)
{
	(void)l;
}

WEAK bool
link_ok(const struct link *l)
{
	(void)l;
	return false;
}

WEAK uint64_t
link_uid(const struct link *l)
{
	(void)l;
	return 0;
}

WEAK const char *
link_error(const struct link *l)
{
	(void)l;
	return "no link client in this build";
}

WEAK enum store_res
link_cmd(struct link *l, char **text, const char *fmt, ...)
{
	(void)l;
	(void)fmt;
	*text = (char *)"";
	return STORE_TEMPFAIL;
}

WEAK int
link_ml_line(struct link *l, char **line, size_t *len)
{
	(void)l;
	(void)line;
	(void)len;
	return -1;
}

WEAK void
link_data_expect(struct link *l, uint64_t n)
{
	(void)l;
	(void)n;
}

WEAK ssize_t
link_data_read(struct link *l, void *buf, size_t len)
{
	(void)l;
	(void)buf;
	(void)len;
	return -1;
}

WEAK int
link_xtext_decode(char *s)
{
	(void)s;
	return -1;
}
