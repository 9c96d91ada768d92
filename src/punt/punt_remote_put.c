/*
 * punt_remote_put: DELIVER through a remote punt's link
 * (docs/punt-protocol.md): the punt answers +OK id only once the message
 * is durable there, so the caller's 250 comes after that.
 */
#include <sys/types.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "sdps/link.h"
#include "sdps/store.h"
#include "sdps/xtext.h"
#include "punt_remote_int.h"

/* "DELIVER host sender N body_octets rcpt ..." into line. */
static int
deliver_line(const struct store_envelope *env, uint64_t wire_len,
    uint64_t body_octets, char *line, size_t len)
{
	char	 xt[XT_MAX];
	size_t	 o, i;
	int	 n;

	if (env->sender[0] == '\0')
		snprintf(xt, sizeof(xt), "<>");
	else if (xtext_encode(env->sender, xt, sizeof(xt)) == -1)
		return -1;
	n = snprintf(line, len, "DELIVER %s %s %" PRIu64 " %" PRIu64,
	    env->host, xt, wire_len, body_octets);
	if (n < 0 || (size_t)n >= len)
		return -1;
	o = (size_t)n;
	for (i = 0; i < env->nrcpts; i++) {
		if (xtext_encode(env->rcpts[i], xt, sizeof(xt)) == -1)
			return -1;
		n = snprintf(line + o, len - o, " %s", xt);
		if (n < 0 || (size_t)n >= len - o)
			return -1;
		o += (size_t)n;
	}
	return 0;
}

/* DELIVER's answer: +OK id only once the punt made it durable. */
static enum store_res
deliver_reply(struct remote *r, uint64_t *id, char *err, size_t errlen)
{
	enum store_res	 res;
	char		*text;

	if (link_flush(r->l) == -1) {
		snprintf(err, errlen, "punt %s: %s", r->cp->name,
		    link_error(r->l));
		return r_fail(r, "DELIVER");
	}
	res = link_reply(r->l, &text);
	if (res == STORE_OK && util_parse_u64(text, UINT64_MAX, id) == 0)
		return STORE_OK;
	if (!link_ok(r->l)) {
		snprintf(err, errlen, "punt %s: %s", r->cp->name,
		    link_error(r->l));
		return r_fail(r, "DELIVER");
	}
	snprintf(err, errlen, "punt %s: %.200s", r->cp->name, text);
	return res == STORE_PERMFAIL ? STORE_PERMFAIL : STORE_TEMPFAIL;
}

static enum store_res
r_put_common(struct remote *r, const struct store_envelope *env,
    const void *wire, int fd, uint64_t wire_len, uint64_t body_octets,
    uint64_t *id, char *err, size_t errlen)
{
	char	 line[LINK_LINE_MAX];
	int	 rc;

	if (deliver_line(env, wire_len, body_octets, line, sizeof(line)) ==
	    -1) {
		snprintf(err, errlen, "punt %s: envelope too long for the "
		    "link", r->cp->name);
		return STORE_PERMFAIL;
	}
	if (r_ready(r) == -1) {
		snprintf(err, errlen, "punt %s: unavailable", r->cp->name);
		return STORE_TEMPFAIL;
	}
	if (link_send(r->l, "%s", line) == -1) {
		snprintf(err, errlen, "punt %s: send failed", r->cp->name);
		return r_fail(r, "DELIVER");
	}
	rc = wire != NULL ? link_write(r->l, wire, (size_t)wire_len) :
	    link_send_file(r->l, fd, wire_len);
	if (rc == -1) {
		snprintf(err, errlen, "punt %s: %s", r->cp->name,
		    link_error(r->l));
		return r_fail(r, "DELIVER");
	}
	return deliver_reply(r, id, err, errlen);
}

enum store_res
r_put(void *impl, const struct store_envelope *env, const void *wire,
    size_t wire_len, uint64_t body_octets, uint64_t *id, char *err,
    size_t errlen)
{
	static const char empty[1];

	return r_put_common(impl, env, wire_len > 0 ? wire : empty, -1,
	    wire_len, body_octets, id, err, errlen);
}

enum store_res
r_put_file(void *impl, const struct store_envelope *env, int fd,
    uint64_t wire_len, uint64_t body_octets, uint64_t *id, char *err,
    size_t errlen)
{
	return r_put_common(impl, env, NULL, fd, wire_len, body_octets, id,
	    err, errlen);
}

