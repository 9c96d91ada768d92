/*
 * ctl_remote: sdps-ctl through the link to a remote punt, read only
 * (ctl_remote.h).  Each verb opens its own link (link_open, the connect
 * timeout of [link]) and closes it when done: sdps-ctl is one-shot, and
 * taking no maildrop lock (XLS, XREC, BODY ADMIN, XSTAT and NOOP never
 * SELECT) it cannot get in a session's way.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/config.h"
#include "sdps/ctl.h"
#include "sdps/link.h"
#include "sdps/store.h"
#include "sdps/util.h"

#include "sdps/tls_client.h"
#include "sdps/xtext.h"

#include "ctl_remote.h"

static bool	 usage_refused;

bool
ctl_punt_is_remote(const struct config_punt *p)
{
	return p->address[0] != '\0';
}

int
ctl_refuse_remote(const char *verb, const struct config_punt *p)
{
	usage_refused = true;
	return ctl_fail("%s: punt %s is remote: run this on its punt server",
	    verb, p->name);
}

bool
ctl_usage_error(void)
{
	return usage_refused;
}

/* An open link and the TLS context it needs, freed together. */
struct rlink {
	struct tls_client	*tls;
	struct link		*l;
};

static int
rlink_open(const struct config *cf, const struct config_punt *p,
    struct rlink *r, char *err, size_t errlen)
{
	struct link_opts	 o;

	memset(r, 0, sizeof(*r));
	if ((r->tls = tls_client_new(p, err, errlen)) == NULL)
		return -1;
	memset(&o, 0, sizeof(o));
	o.punt = p;
	o.tls = r->tls;
	o.timeout_ms = cf->link_timeout_s * 1000;
	o.connect_timeout_ms = cf->link_connect_timeout_ms;
	if ((r->l = link_open(&o, err, errlen)) == NULL) {
		tls_client_free(r->tls);
		r->tls = NULL;
		return -1;
	}
	return 0;
}

static void
rlink_close(struct rlink *r)
{
	char	*text;

	if (r->l != NULL && link_ok(r->l))
		(void)link_cmd(r->l, &text, "QUIT");
	link_free(r->l);
	tls_client_free(r->tls);
	r->l = NULL;
	r->tls = NULL;
}

/* The link's reason, or what the punt answered. */
static const char *
rlink_why(struct rlink *r, enum store_res res, const char *text)
{
	if (!link_ok(r->l) && link_error(r->l)[0] != '\0')
		return link_error(r->l);
	if (text != NULL && text[0] != '\0')
		return text;
	return res == STORE_GONE ? "no such message" :
	    res == STORE_PERMFAIL ? "permanent failure" :
	    "temporary failure";
}

/* The UIDL as store_uidl makes it (docs/design.md §5): the punt's uid
 * from the link's greeting, then the id. */
static void
remote_uidl(uint64_t uid, uint64_t id, char *buf)
{
	snprintf(buf, STORE_UIDL_MAX, "%016llx-%016llx",
	    (unsigned long long)uid, (unsigned long long)id);
}

static int
num(char *tok, uint64_t *v)
{
	return tok != NULL && util_parse_u64(tok, UINT64_MAX, v) == 0 ? 0 :
	    -1;
}

/*
 * One XLS/XREC line, "id arrival_us octets stored_octets flags claim_us
 * host agent sender rcpt..." (docs/punt-protocol.md), into m: the
 * strings point into line (agent, sender and recipients are xtext,
 * decoded in place; the host is a normalized name, sent as it is) and
 * into *rcpts (malloc'd, the caller frees it).  0, or -1 if malformed.
 */
static int
parse_rec(char *line, struct store_msg *m, char ***rcpts)
{
	char		*tok[8], *save, *t;
	uint64_t	 flags;
	size_t		 i, cap;

	memset(m, 0, sizeof(*m));
	*rcpts = NULL;
	for (i = 0; i < 8; i++)
		if ((tok[i] = strtok_r(i ? NULL : line, " ", &save)) == NULL)
			return -1;
	if (num(tok[0], &m->id) == -1 || num(tok[1], &m->arrival_us) == -1 ||
	    num(tok[2], &m->octets) == -1 ||
	    num(tok[3], &m->stored_octets) == -1 ||
	    num(tok[4], &flags) == -1 || flags > UINT32_MAX ||
	    num(tok[5], &m->claim_us) == -1 ||
	    strlen(tok[6]) > UTIL_HOST_MAX ||
	    xtext_decode(tok[7]) == -1 ||
	    strlen(tok[7]) > STORE_AGENT_MAX)
		return -1;
	m->flags = (uint32_t)flags;
	strcpy(m->host, tok[6]);
	strcpy(m->agent, strcmp(tok[7], "-") == 0 ? "" : tok[7]);
	if ((t = strtok_r(NULL, " ", &save)) == NULL)
		return -1;
	m->sender = strcmp(t, "<>") == 0 ? "" : t;
	if (m->sender[0] != '\0' && xtext_decode(t) == -1)
		return -1;
	/* Each recipient is a token: at most one per two octets left. */
	cap = strlen(save != NULL ? save : "") / 2 + 1;
	if ((*rcpts = calloc(cap, sizeof(**rcpts))) == NULL)
		return -1;
	while ((t = strtok_r(NULL, " ", &save)) != NULL && m->nrcpts < cap) {
		if (xtext_decode(t) == -1)
			return -1;
		(*rcpts)[m->nrcpts++] = t;
	}
	m->rcpts = *rcpts;
	return 0;
}

/* Add one record line to rs (its punt fields already set). */
static int
add_rec(char *line, struct rows *rs, uint64_t uid)
{
	struct store_msg	 m;
	char			**rcpts;
	int			 rc = -1;

	if (parse_rec(line, &m, &rcpts) == 0 && ctl_rows_add(&m, rs) == 0) {
		remote_uidl(uid, m.id, rs->v[rs->n - 1].uidl);
		rc = 0;
	}
	free(rcpts);
	return rc;
}

int
ctl_remote_walk(const struct config *cf, const struct config_punt *p,
    int idx, const char *host, struct rows *rs)
{
	struct rlink	 r;
	enum store_res	 res;
	char		 err[512], *text, *line;
	size_t		 first = rs->n, len, i;
	int		 got, rc = 1;

	if (rlink_open(cf, p, &r, err, sizeof(err)) == -1)
		return ctl_fail("punt %s: %s", p->name, err);
	rs->punt = p;
	rs->punt_idx = idx;
	res = host != NULL ? link_cmd(r.l, &text, "XLS %s", host) :
	    link_cmd(r.l, &text, "XLS");
	if (res != STORE_OK) {
		ctl_fail("punt %s: XLS: %s", p->name, rlink_why(&r, res, text));
		goto out;
	}
	while ((got = link_ml_line(r.l, &line, &len)) == 1) {
		if (add_rec(line, rs, link_uid(r.l)) == -1) {
			if (!rs->nomem)
				ctl_fail("punt %s: XLS: malformed line",
				    p->name);
			goto out;
		}
	}
	if (got == -1)
		ctl_fail("punt %s: XLS: %s", p->name, rlink_why(&r,
		    STORE_TEMPFAIL, NULL));
	else
		rc = 0;
 out:
	/* A listing cut short is left out whole, never shown in part. */
	if (rc != 0) {
		for (i = first; i < rs->n; i++)
			ctl_row_free(&rs->v[i]);
		rs->n = first;
	}
	rlink_close(&r);
	return rc;
}

int
ctl_remote_stat(const struct config *cf, const struct config_punt *p,
    struct store_stat *s)
{
	struct rlink	 r;
	enum store_res	 res;
	char		 err[512], *text, *save = NULL;
	uint64_t	*f[] = { &s->msgs, &s->hosts, &s->octets,
			    &s->stored_octets, &s->read, &s->in_delivery,
			    &s->pop_deleted, &s->next_id, &s->map_used,
			    &s->map_size };
	size_t		 i;
	int		 rc = 0;

	if (rlink_open(cf, p, &r, err, sizeof(err)) == -1)
		return ctl_fail("punt %s: %s", p->name, err);
	if ((res = link_cmd(r.l, &text, "XSTAT")) != STORE_OK)
		rc = ctl_fail("punt %s: XSTAT: %s", p->name,
		    rlink_why(&r, res, text));
	for (i = 0; rc == 0 && i < NITEMS(f); i++)
		if (num(strtok_r(i ? NULL : text, " ", &save), f[i]) == -1)
			rc = ctl_fail("punt %s: XSTAT: malformed reply",
			    p->name);
	rlink_close(&r);
	return rc;
}

/* The N octets after "+OK N" into a malloc'd, NUL-terminated buffer. */
static int
read_counted(struct link *l, const char *text, uint64_t max, char **out,
    size_t *len)
{
	uint64_t	 n;
	char		*buf, *sp;
	size_t		 got = 0;
	ssize_t		 k;

	*out = NULL;
	if ((sp = strchr(text, ' ')) != NULL)
		*sp = '\0';
	if (util_parse_u64(text, max, &n) == -1 ||
	    (buf = malloc((size_t)n + 1)) == NULL)
		return -1;
	link_data_expect(l, n);
	while (got < n) {
		if ((k = link_data_read(l, buf + got, (size_t)n - got)) <= 0) {
			free(buf);
			return -1;
		}
		got += (size_t)k;
	}
	buf[n] = '\0';
	*out = buf;
	*len = (size_t)n;
	return 0;
}

/*
 * spool show through the link: XREC for the record, then BODY id ADMIN
 * (a POP3-deleted message too, as the local path's store_msg_open_admin),
 * printed as the local path prints it (ctl_store.c): the stored file
 * exactly, or with --json the record and the data.
 */
int
ctl_remote_show(struct ctl *c, const struct config_punt *p, uint64_t id)
{
	struct rlink	 r;
	struct rows	 rs;
	enum store_res	 res;
	char		 err[512], *text, *data = NULL;
	size_t		 len;
	int		 rc = 1;

	memset(&rs, 0, sizeof(rs));
	if (rlink_open(c->cf, p, &r, err, sizeof(err)) == -1)
		return ctl_fail("punt %s: %s", p->name, err);
	rs.punt = p;
	rs.punt_idx = (int)(p - c->cf->punts);
	res = link_cmd(r.l, &text, "XREC %" PRIu64, id);
	if (res == STORE_OK && add_rec(text, &rs, link_uid(r.l)) == -1) {
		ctl_fail("%s: %s", c->argv[0], rs.nomem ? "out of memory" :
		    "malformed XREC reply");
		goto out;
	}
	if (res == STORE_OK)
		res = link_cmd(r.l, &text, "BODY %" PRIu64 " ADMIN", id);
	if (res == STORE_GONE) {
		ctl_fail("%s: no such message", c->argv[0]);
		goto out;
	}
	if (res != STORE_OK) {
		ctl_fail("%s: cannot open the message file: %s", c->argv[0],
		    rlink_why(&r, res, text));
		goto out;
	}
	/* A stored file is at most what DELIVER accepted, and twice that
	 * bounds any dot-stuffing: a count past it is not believed. */
	if (read_counted(r.l, text, 2 * c->cf->max_message_octets + 65536,
	    &data, &len) == -1) {
		ctl_fail("%s: read: %s", c->argv[0], rlink_why(&r,
		    STORE_TEMPFAIL, errno == ENOMEM ? "out of memory" : NULL));
		goto out;
	}
	rc = ctl_show_print(c, &rs.v[0], data, len);
 out:
	free(data);
	if (rs.n > 0)
		ctl_row_free(&rs.v[0]);
	free(rs.v);
	rlink_close(&r);
	return rc;
}

int
ctl_remote_probe(const struct config *cf, bool json)
{
	const struct config_punt *p;
	struct rlink		 r;
	enum store_res		 res = STORE_TEMPFAIL;
	uint64_t		 t0, rtt = 0;
	char			 err[512], *text = NULL;
	int			 i, n = 0, down = 0;

	if (json)
		printf(",\n \"probe\": [");
	for (i = 0; i < cf->npunts; i++) {
		p = &cf->punts[i];
		if (!ctl_punt_is_remote(p))
			continue;
		err[0] = '\0';
		if (rlink_open(cf, p, &r, err, sizeof(err)) == 0) {
			/* The round trip of one command on a finished link,
			 * without the handshake's. */
			t0 = util_now_us();
			res = link_cmd(r.l, &text, "NOOP");
			rtt = util_now_us() - t0;
			if (res != STORE_OK)
				snprintf(err, sizeof(err), "NOOP: %s",
				    rlink_why(&r, res, text));
		} else
			res = STORE_TEMPFAIL;
		down += res != STORE_OK;
		if (json) {
			printf("%s\n  {\"name\": ", n++ ? "," : "");
			ctl_json_str(stdout, p->name);
			printf(", \"address\": ");
			ctl_json_str(stdout, p->address);
			printf(", \"up\": %s, \"rtt_us\": %llu, \"uid\": \"",
			    res == STORE_OK ? "true" : "false",
			    (unsigned long long)(res == STORE_OK ? rtt : 0));
			if (res == STORE_OK)
				printf("%016llx", (unsigned long long)
				    link_uid(r.l));
			printf("\", \"error\": ");
			ctl_json_str(stdout, res == STORE_OK ? "" : err);
			printf("}");
		} else if (res == STORE_OK)
			printf("probe %-15s up, rtt %llu.%03llu ms (%s, uid "
			    "%016llx)\n", p->name,
			    (unsigned long long)(rtt / 1000),
			    (unsigned long long)(rtt % 1000), p->address,
			    (unsigned long long)link_uid(r.l));
		else
			printf("probe %-15s DOWN (%s): %s\n", p->name,
			    p->address, err);
		if (r.l != NULL || r.tls != NULL)
			rlink_close(&r);
		memset(&r, 0, sizeof(r));
	}
	if (json)
		printf("%s]", n ? "\n " : "");
	return down;
}
