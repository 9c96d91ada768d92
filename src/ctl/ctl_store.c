/*
 * ctl_store: the sdps-ctl verbs over the auth store (host ...) and the
 * punt stores (spool, smtp markers, fsck, punt create).
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/config.h"
#include "sdps/ctl.h"
#include "sdps/maildrop.h"
#include "sdps/puntset.h"
#include "sdps/store.h"
#include "sdps/util.h"

#include "ctl_remote.h"

/* "PASS " + password + CRLF must fit a 255-octet POP3 line. */
#define PW_MAX		248
#define STDIN_MAX	4096

static struct auth *
auth_get(struct ctl *c, bool create)
{
	struct auth	*a;
	char		 err[512];

	a = auth_open(c->cf->auth_path, c->cf->auth_map_size, create,
	    c->cf->hash_cost, err, sizeof(err));
	if (a == NULL)
		ctl_fail("auth store %s: %s", c->cf->auth_path, err);
	return a;
}

/*
 * The verbs open one punt at a time through the puntset and close it when
 * done (punt_put_back), so the set is freed once nothing is open.
 */
static struct puntset	*ctl_ps;
static const char	*ctl_verb = "this";	/* for a refusal */

static struct store *
punt_open(const struct config *cf, const struct config_punt *p)
{
	struct punt	*pt;
	struct store	*st = NULL;
	int		 i = (int)(p - cf->punts);

	/* The verbs that get here need the punt's directory. */
	if (ctl_punt_is_remote(p)) {
		ctl_refuse_remote(ctl_verb, p);
		return NULL;
	}
	if (ctl_ps == NULL && (ctl_ps = puntset_new(cf, 0)) == NULL) {
		ctl_fail("out of memory");
		return NULL;
	}
	if ((pt = puntset_get(ctl_ps, i)) == NULL)
		ctl_fail("punt %s: %s", p->name, puntset_error(ctl_ps, i));
	else if ((st = punt_local_store(pt)) == NULL)
		ctl_fail("punt %s: not a local punt", p->name);
	return st;
}

static void
punt_put_back(struct store *st)
{
	int	 i, open = 0;

	for (i = 0; ctl_ps != NULL && i < puntset_count(ctl_ps); i++) {
		if (puntset_peek(ctl_ps, i) != NULL &&
		    punt_local_store(puntset_peek(ctl_ps, i)) == st)
			puntset_close(ctl_ps, i);
		open += puntset_peek(ctl_ps, i) != NULL;
	}
	if (open == 0) {
		puntset_free(ctl_ps);
		ctl_ps = NULL;
	}
}

static int
host_arg(const char *in, char *out)
{
	if (util_host_normalize(in, out) == -1)
		return ctl_fail("bad host name: %s", in);
	return 0;
}

/* "PUNT:ID" with a configured punt and a decimal id. */
static int
ref_parse(struct ctl *c, const char *ref, const struct config_punt **p,
    uint64_t *id)
{
	const char	*colon;
	char		 name[CONFIG_NAME_MAX + 1];

	if ((colon = strrchr(ref, ':')) == NULL ||
	    (size_t)(colon - ref) > CONFIG_NAME_MAX || colon == ref)
		return ctl_fail("bad message reference %s (want PUNT:ID)", ref);
	memcpy(name, ref, (size_t)(colon - ref));
	name[colon - ref] = '\0';
	if ((*p = config_punt_find(c->cf, name)) == NULL)
		return ctl_fail("no such punt: %s", name);
	if (util_parse_u64(colon + 1, UINT64_MAX, id) == -1 || *id == 0)
		return ctl_fail("bad message id: %s", colon + 1);
	return 0;
}

/*
 * Read up to two password lines from stdin into pw[0], pw[1] (pw[1] ""
 * when absent).  The trailing LF or CRLF is not part of a password.
 */
static int
read_passwords(char *buf, size_t buflen, char *pw[2], int want)
{
	size_t	 len = 0, got, i;
	char	*p, *nl;
	int	 k;

	while (len < buflen - 1 &&
	    (got = fread(buf + len, 1, buflen - 1 - len, stdin)) > 0)
		len += got;
	if (ferror(stdin))
		return ctl_fail("read passwords from stdin: %s",
		    strerror(errno));
	if (len == buflen - 1)
		return ctl_fail("password input too long");
	buf[len] = '\0';
	if (memchr(buf, '\0', len) != NULL)
		return ctl_fail("NUL in password input");
	p = buf;
	for (k = 0; k < 2; k++) {
		pw[k] = p;
		if ((nl = strchr(p, '\n')) != NULL) {
			*nl = '\0';
			p = nl + 1;
		} else
			p += strlen(p);
		if ((i = strlen(pw[k])) > 0 && pw[k][i - 1] == '\r')
			pw[k][i - 1] = '\0';
	}
	if (*p != '\0' && strspn(p, "\r\n") != strlen(p))
		return ctl_fail("more than %d password line%s on stdin", want,
		    want == 1 ? "" : "s");
	if (want == 1 && pw[1][0] != '\0')
		return ctl_fail("more than one password line on stdin");
	for (k = 0; k < 2; k++) {
		if (strlen(pw[k]) > PW_MAX)
			return ctl_fail("password %d longer than %d octets",
			    k + 1, PW_MAX);
		for (i = 0; pw[k][i] != '\0'; i++)
			if ((unsigned char)pw[k][i] < 0x20 ||
			    pw[k][i] == 0x7f)
				return ctl_fail("password %d has a control "
				    "character", k + 1);
	}
	if (pw[0][0] == '\0')
		return ctl_fail("empty password (give it on the first line "
		    "of stdin)");
	return 0;
}

int
ctl_host_add(struct ctl *c)
{
	struct auth	*a;
	char		 host[UTIL_HOST_MAX + 1], buf[STDIN_MAX], err[512];
	char		*pw[2];
	int		 rc = 1;

	if (host_arg(c->argv[0], host) != 0)
		return 1;
	if (read_passwords(buf, sizeof(buf), pw, 2) != 0)
		goto out;
	if ((a = auth_get(c, true)) == NULL)
		goto out;
	if (auth_host_add(a, host, pw[0], pw[1][0] ? pw[1] : NULL, err,
	    sizeof(err)) == -1)
		ctl_fail("host add %s: %s", host, err);
	else
		rc = 0;
	auth_close(a);
out:
	auth_wipe(buf, sizeof(buf));
	return rc;
}

int
ctl_host_passwd(struct ctl *c)
{
	struct auth	*a;
	char		 host[UTIL_HOST_MAX + 1], buf[STDIN_MAX], err[512];
	char		*pw[2];
	int		 rc = 1, slot = c->slot ? c->slot : 1;

	if (host_arg(c->argv[0], host) != 0)
		return 1;
	if (read_passwords(buf, sizeof(buf), pw, 1) != 0)
		goto out;
	if ((a = auth_get(c, false)) == NULL)
		goto out;
	if (auth_host_passwd(a, host, slot, pw[0], err, sizeof(err)) == -1)
		ctl_fail("host passwd %s: %s", host, err);
	else
		rc = 0;
	auth_close(a);
out:
	auth_wipe(buf, sizeof(buf));
	return rc;
}

int
ctl_host_del(struct ctl *c)
{
	struct auth	*a;
	char		 host[UTIL_HOST_MAX + 1], err[512];
	int		 rc = 1;

	if (host_arg(c->argv[0], host) != 0)
		return 1;
	if ((a = auth_get(c, false)) == NULL)
		return 1;
	if (auth_host_del(a, host, err, sizeof(err)) == -1)
		ctl_fail("host del %s: %s", host, err);
	else
		rc = 0;
	auth_close(a);
	return rc;
}

struct host_list {
	bool	 json;
	int	 n;
};

static int
host_list_one(const struct auth_host *h, void *arg)
{
	struct host_list	*hl = arg;

	if (hl->json) {
		printf("%s\n    {\"host\": ", hl->n ? "," : "");
		ctl_json_str(stdout, h->host);
		printf(", \"generation\": %llu, \"has_pw2\": %s, \"smtp\": ",
		    (unsigned long long)h->generation,
		    h->has_pw2 ? "true" : "false");
		ctl_json_str(stdout, h->smtp);
		printf("}");
	} else
		printf("%-40s %-4s %s\n", h->host, h->has_pw2 ? "2" : "1",
		    h->smtp[0] ? h->smtp : "-");
	hl->n++;
	return 0;
}

int
ctl_host_list(struct ctl *c)
{
	struct auth		*a;
	struct host_list	 hl = { c->json, 0 };
	int			 rc;

	if ((a = auth_get(c, false)) == NULL)
		return 1;
	if (c->json)
		printf("{\"hosts\": [");
	else
		printf("%-40s %-4s %s\n", "HOST", "PWS", "SMTP");
	rc = auth_host_list(a, host_list_one, &hl);
	if (c->json)
		printf("%s]}\n", hl.n ? "\n  " : "");
	auth_close(a);
	if (rc == -1)
		return ctl_fail("host list: cannot read the auth store");
	return 0;
}

int
ctl_host_set(struct ctl *c)
{
	struct auth	*a;
	const char	*val, *colon;
	char		 host[UTIL_HOST_MAX + 1], err[512];
	uint64_t	 port;
	int		 rc = 1;

	if (host_arg(c->argv[0], host) != 0)
		return 1;
	if (strncmp(c->argv[1], "smtp=", 5) != 0)
		return ctl_fail("host set: unknown setting %s (want "
		    "smtp=ADDR:PORT)", c->argv[1]);
	val = c->argv[1] + 5;
	/* An empty value clears the target. */
	if (*val != '\0') {
		if ((colon = strrchr(val, ':')) == NULL || colon == val ||
		    util_parse_u64(colon + 1, 65535, &port) == -1 ||
		    port == 0)
			return ctl_fail("host set: bad smtp target %s (want "
			    "ADDR:PORT)", val);
		if (strlen(val) >= AUTH_SMTP_MAX)
			return ctl_fail("host set: smtp target too long");
	}
	if ((a = auth_get(c, false)) == NULL)
		return 1;
	if (auth_host_set_smtp(a, host, val, err, sizeof(err)) == -1)
		ctl_fail("host set %s: %s", host, err);
	else
		rc = 0;
	auth_close(a);
	return rc;
}

/* ---- spool ---- */

void
ctl_row_free(struct row *r)
{
	size_t	 i;

	free(r->sender);
	for (i = 0; i < r->nrcpts; i++)
		free(r->rcpts[i]);
	free(r->rcpts);
}

static void
rows_free(struct rows *rs)
{
	size_t	 i;

	for (i = 0; i < rs->n; i++)
		ctl_row_free(&rs->v[i]);
	free(rs->v);
}

/* Runs inside the walk's read transaction: copy, never call store. */
int
ctl_rows_add(const struct store_msg *m, void *arg)
{
	struct rows	*rs = arg;
	struct row	*r, *nv;
	size_t		 i;

	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? rs->cap * 2 : 256;
		if ((nv = reallocarray(rs->v, rs->cap, sizeof(*nv))) == NULL)
			goto nomem;
		rs->v = nv;
	}
	r = &rs->v[rs->n];
	memset(r, 0, sizeof(*r));
	r->punt = rs->punt;
	r->punt_idx = rs->punt_idx;
	r->id = m->id;
	r->arrival_us = m->arrival_us;
	r->octets = m->octets;
	r->stored_octets = m->stored_octets;
	r->claim_us = m->claim_us;
	r->flags = m->flags;
	snprintf(r->host, sizeof(r->host), "%s", m->host);
	snprintf(r->agent, sizeof(r->agent), "%s", m->agent);
	if ((r->sender = strdup(m->sender ? m->sender : "")) == NULL)
		goto nomem;
	rs->n++;
	if (m->nrcpts > 0 &&
	    (r->rcpts = calloc(m->nrcpts, sizeof(*r->rcpts))) == NULL)
		goto nomem;
	for (i = 0; i < m->nrcpts; i++) {
		if ((r->rcpts[i] = strdup(m->rcpts[i])) == NULL)
			goto nomem;
		r->nrcpts++;
	}
	return 0;
nomem:
	rs->nomem = true;
	return 1;
}

/* The maildrop order (maildrop.h), over every host's messages. */
static int
row_cmp(const void *a, const void *b)
{
	const struct row	*x = a, *y = b;

	return maildrop_order(x->arrival_us, x->punt_idx, x->id,
	    y->arrival_us, y->punt_idx, y->id);
}

static const char *
flags_str(uint32_t flags, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s",
	    (flags & STORE_F_READ) ? "RD," : "",
	    (flags & STORE_F_IN_DELIVERY) ? "DLV," : "",
	    (flags & STORE_F_POP_DELETED) ? "DEL," : "",
	    flags ? "" : "-");
	if (flags != 0 && buf[0] != '\0')
		buf[strlen(buf) - 1] = '\0';
	return buf;
}

static const char *
age_str(uint64_t now_us, uint64_t then_us, char *buf, size_t len)
{
	uint64_t	 s;

	s = now_us > then_us ? (now_us - then_us) / 1000000 : 0;
	if (s < 120)
		snprintf(buf, len, "%llus", (unsigned long long)s);
	else if (s < 7200)
		snprintf(buf, len, "%llum", (unsigned long long)(s / 60));
	else if (s < 172800)
		snprintf(buf, len, "%lluh", (unsigned long long)(s / 3600));
	else
		snprintf(buf, len, "%llud", (unsigned long long)(s / 86400));
	return buf;
}

void
ctl_row_json(const struct row *r, uint64_t now_us)
{
	size_t	 i;
	int	 k = 0;

	printf("{\"punt\": ");
	ctl_json_str(stdout, r->punt->name);
	printf(", \"id\": %llu, \"uidl\": ", (unsigned long long)r->id);
	ctl_json_str(stdout, r->uidl);
	printf(", \"host\": ");
	ctl_json_str(stdout, r->host);
	printf(", \"octets\": %llu, \"stored_octets\": %llu, "
	    "\"arrival_us\": %llu, \"age_s\": %llu, \"flags\": [",
	    (unsigned long long)r->octets,
	    (unsigned long long)r->stored_octets,
	    (unsigned long long)r->arrival_us,
	    (unsigned long long)(now_us > r->arrival_us ?
	    (now_us - r->arrival_us) / 1000000 : 0));
	if (r->flags & STORE_F_READ)
		printf("%s\"RD\"", k++ ? ", " : "");
	if (r->flags & STORE_F_IN_DELIVERY)
		printf("%s\"IN_DELIVERY\"", k++ ? ", " : "");
	if (r->flags & STORE_F_POP_DELETED)
		printf("%s\"POP_DELETED\"", k++ ? ", " : "");
	printf("], \"agent\": ");
	ctl_json_str(stdout, (r->flags & STORE_F_IN_DELIVERY) ? r->agent : "");
	printf(", \"claim_us\": %llu, \"sender\": ",
	    (unsigned long long)r->claim_us);
	ctl_json_str(stdout, r->sender);
	printf(", \"rcpts\": [");
	for (i = 0; i < r->nrcpts; i++) {
		if (i > 0)
			printf(", ");
		ctl_json_str(stdout, r->rcpts[i]);
	}
	printf("]}");
}

static void
row_text(const struct row *r, uint64_t now_us)
{
	char	 fl[32], age[32];
	size_t	 i;

	printf("%-12s %8llu %-33s %-28s %9llu %5s %-10s ", r->punt->name,
	    (unsigned long long)r->id, r->uidl, r->host,
	    (unsigned long long)r->octets,
	    age_str(now_us, r->arrival_us, age, sizeof(age)),
	    flags_str(r->flags, fl, sizeof(fl)));
	for (i = 0; i < r->nrcpts; i++)
		printf("%s%s", i ? "," : "", r->rcpts[i]);
	putchar('\n');
}

int
ctl_spool_ls(struct ctl *c)
{
	const struct config	*cf = c->cf;
	struct rows		 rs;
	struct store		*st;
	char			 host[UTIL_HOST_MAX + 1];
	uint64_t		 now_us;
	size_t			 i, first;
	int			 p, rc = 0;

	memset(&rs, 0, sizeof(rs));
	if (c->host != NULL && host_arg(c->host, host) != 0)
		return 1;
	if (c->punt != NULL && config_punt_find(cf, c->punt) == NULL)
		return ctl_fail("no such punt: %s", c->punt);
	for (p = 0; p < cf->npunts; p++) {
		if (c->punt != NULL && strcmp(c->punt, cf->punts[p].name) != 0)
			continue;
		/* Through the link, merged below like any punt's rows. */
		if (ctl_punt_is_remote(&cf->punts[p])) {
			if (ctl_remote_walk(cf, &cf->punts[p], p,
			    c->host ? host : NULL, &rs) != 0)
				rc = 1;
			if (rs.nomem) {
				rows_free(&rs);
				return ctl_fail("out of memory");
			}
			continue;
		}
		/* A punt that is down is reported; the others still list. */
		if ((st = punt_open(cf, &cf->punts[p])) == NULL) {
			rc = 1;
			continue;
		}
		rs.punt = &cf->punts[p];
		rs.punt_idx = p;
		first = rs.n;
		if (store_walk(st, c->host ? host : NULL, ctl_rows_add,
		    &rs) == -1 || rs.nomem) {
			punt_put_back(st);
			rows_free(&rs);
			return ctl_fail("punt %s: %s", cf->punts[p].name,
			    rs.nomem ? "out of memory" : "cannot walk index");
		}
		for (i = first; i < rs.n; i++)
			store_uidl(st, rs.v[i].id, rs.v[i].uidl);
		punt_put_back(st);
	}
	if (rs.n > 0)
		qsort(rs.v, rs.n, sizeof(*rs.v), row_cmp);
	now_us = util_now_us();
	if (c->json) {
		printf("{\"messages\": [");
		for (i = 0; i < rs.n; i++) {
			printf("%s\n    ", i ? "," : "");
			ctl_row_json(&rs.v[i], now_us);
		}
		printf("%s]}\n", rs.n ? "\n  " : "");
	} else {
		printf("%-12s %8s %-33s %-28s %9s %5s %-10s %s\n", "PUNT", "ID",
		    "UIDL", "HOST", "OCTETS", "AGE", "FLAGS", "RECIPIENTS");
		for (i = 0; i < rs.n; i++)
			row_text(&rs.v[i], now_us);
	}
	rows_free(&rs);
	return rc;
}

static int
read_fd_all(int fd, char **out, size_t *len)
{
	char	*buf = NULL, *nb;
	size_t	 cap = 0, n = 0;
	ssize_t	 got;

	for (;;) {
		if (n + 1 >= cap) {
			cap = cap ? cap * 2 : 65536;
			if ((nb = realloc(buf, cap)) == NULL) {
				free(buf);
				return -1;
			}
			buf = nb;
		}
		got = read(fd, buf + n, cap - n - 1);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			free(buf);
			return -1;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

/*
 * Plain output is the stored file exactly (wire format), so it can be
 * piped or compared; --json adds the record.  The remote path prints
 * through here too (ctl_remote.c).
 */
int
ctl_show_print(struct ctl *c, const struct row *r, const char *data,
    size_t len)
{
	if (!c->json)
		return fwrite(data, 1, len, stdout) == len ? 0 : 1;
	if (memchr(data, '\0', len) != NULL)
		return ctl_fail("%s: NUL in the message file", c->argv[0]);
	printf("{\"message\": ");
	ctl_row_json(r, util_now_us());
	printf(",\n \"data\": ");
	ctl_json_str(stdout, data);
	printf("}\n");
	return 0;
}

int
ctl_spool_show(struct ctl *c)
{
	const struct config_punt *p;
	struct store_msg	 m;
	struct store		*st;
	struct rows		 rs;
	uint64_t		 id;
	char			*data = NULL;
	size_t			 len;
	int			 fd, rc = 1;

	if (ref_parse(c, c->argv[0], &p, &id) != 0)
		return 1;
	if (ctl_punt_is_remote(p))
		return ctl_remote_show(c, p, id);
	if ((st = punt_open(c->cf, p)) == NULL)
		return 1;
	memset(&m, 0, sizeof(m));
	memset(&rs, 0, sizeof(rs));
	rs.punt = p;
	/* spool ls lists DEL messages; show must show them too. */
	switch (store_msg_open_admin(st, id, &fd, &m)) {
	case STORE_OK:
		break;
	case STORE_GONE:
		ctl_fail("%s: no such message", c->argv[0]);
		goto out;
	case STORE_BUSY:
	case STORE_TEMPFAIL:
	case STORE_PERMFAIL:
		ctl_fail("%s: cannot open the message file", c->argv[0]);
		goto out;
	}
	if (read_fd_all(fd, &data, &len) == -1)
		ctl_fail("%s: read: %s", c->argv[0], strerror(errno));
	else if (ctl_rows_add(&m, &rs) != 0)
		ctl_fail("out of memory");
	else {
		store_uidl(st, m.id, rs.v[0].uidl);
		rc = ctl_show_print(c, &rs.v[0], data, len);
	}
	rows_free(&rs);
	close(fd);
	free(data);
	store_msg_free(&m);
out:
	punt_put_back(st);
	return rc;
}

static void
stat_add(struct store_stat *t, const struct store_stat *s)
{
	t->msgs += s->msgs;
	t->hosts += s->hosts;
	t->octets += s->octets;
	t->stored_octets += s->stored_octets;
	t->read += s->read;
	t->in_delivery += s->in_delivery;
	t->pop_deleted += s->pop_deleted;
	t->map_used += s->map_used;
	t->map_size += s->map_size;
}

static void
stat_json(const char *name, const struct store_stat *s, bool up)
{
	printf("{\"name\": ");
	ctl_json_str(stdout, name);
	printf(", \"available\": %s, \"msgs\": %llu, \"hosts\": %llu, "
	    "\"octets\": %llu, \"stored_octets\": %llu, \"read\": %llu, "
	    "\"in_delivery\": %llu, \"pop_deleted\": %llu, "
	    "\"next_id\": %llu, \"map_used\": %llu, \"map_size\": %llu}",
	    up ? "true" : "false",
	    (unsigned long long)s->msgs, (unsigned long long)s->hosts,
	    (unsigned long long)s->octets,
	    (unsigned long long)s->stored_octets,
	    (unsigned long long)s->read, (unsigned long long)s->in_delivery,
	    (unsigned long long)s->pop_deleted,
	    (unsigned long long)s->next_id, (unsigned long long)s->map_used,
	    (unsigned long long)s->map_size);
}

static void
stat_text(const char *name, const struct store_stat *s, bool up)
{
	if (!up) {
		printf("%-12s %s\n", name, "unavailable");
		return;
	}
	printf("%-12s %8llu %6llu %12llu %6llu %6llu %6llu %5llu%%\n", name,
	    (unsigned long long)s->msgs, (unsigned long long)s->hosts,
	    (unsigned long long)s->octets, (unsigned long long)s->read,
	    (unsigned long long)s->in_delivery,
	    (unsigned long long)s->pop_deleted,
	    (unsigned long long)(s->map_size ?
	    s->map_used * 100 / s->map_size : 0));
}

int
ctl_spool_stat(struct ctl *c)
{
	const struct config	*cf = c->cf;
	struct store_stat	 s, total;
	struct store		*st;
	bool			 up;
	int			 p, rc = 0;

	memset(&total, 0, sizeof(total));
	if (c->json)
		printf("{\"punts\": [");
	else
		printf("%-12s %8s %6s %12s %6s %6s %6s %6s\n", "PUNT", "MSGS",
		    "HOSTS", "OCTETS", "READ", "DLV", "DEL", "MAP");
	for (p = 0; p < cf->npunts; p++) {
		memset(&s, 0, sizeof(s));
		up = false;
		if (ctl_punt_is_remote(&cf->punts[p]))
			up = ctl_remote_stat(cf, &cf->punts[p], &s) == 0;
		else if ((st = punt_open(cf, &cf->punts[p])) != NULL) {
			if (store_stat(st, &s) == 0)
				up = true;
			else
				ctl_fail("punt %s: cannot read statistics",
				    cf->punts[p].name);
			punt_put_back(st);
		}
		if (!up)
			rc = 1;
		stat_add(&total, &s);
		if (c->json) {
			printf("%s\n    ", p ? "," : "");
			stat_json(cf->punts[p].name, &s, up);
		} else
			stat_text(cf->punts[p].name, &s, up);
	}
	if (c->json) {
		printf("\n  ],\n \"total\": ");
		stat_json("total", &total, rc == 0);
		printf("}\n");
	} else
		stat_text("total", &total, true);
	return rc;
}

/* ---- smtp markers ---- */

static int
agent_ok(const char *agent)
{
	size_t	 i, len = strlen(agent);

	if (len == 0 || len > STORE_AGENT_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)agent[i] <= 0x20 ||
		    (unsigned char)agent[i] >= 0x7f)
			return 0;
	return 1;
}

static int
smtp_marker(struct ctl *c, const char *what)
{
	const struct config_punt *p;
	struct store		*st;
	enum store_res		 res;
	uint64_t		 id;

	if (ref_parse(c, c->argv[0], &p, &id) != 0)
		return 1;
	if (what[0] == 'c' && !agent_ok(c->agent))
		return ctl_fail("smtp claim: bad agent name (1..%d printable "
		    "characters, no spaces)", STORE_AGENT_MAX);
	ctl_verb = what[0] == 'c' ? "smtp claim" : what[0] == 'd' ?
	    "smtp done" : "smtp release";
	if ((st = punt_open(c->cf, p)) == NULL)
		return 1;
	if (what[0] == 'c')
		res = store_claim(st, id, c->agent);
	else if (what[0] == 'd')
		res = store_done(st, id);
	else
		res = store_release(st, id);
	punt_put_back(st);
	switch (res) {
	case STORE_OK:
		return 0;
	case STORE_GONE:
		return ctl_fail("smtp %s %s: no such message", what,
		    c->argv[0]);
	case STORE_BUSY:
		return ctl_fail("smtp %s %s: already claimed", what,
		    c->argv[0]);
	case STORE_TEMPFAIL:
		return ctl_fail("smtp %s %s: temporary failure", what,
		    c->argv[0]);
	case STORE_PERMFAIL:
		return ctl_fail("smtp %s %s: corrupt record", what,
		    c->argv[0]);
	}
	return 1;
}

int
ctl_smtp_claim(struct ctl *c)
{
	return smtp_marker(c, "claim");
}

int
ctl_smtp_done(struct ctl *c)
{
	return smtp_marker(c, "done");
}

int
ctl_smtp_release(struct ctl *c)
{
	return smtp_marker(c, "release");
}

/* ---- fsck, punt create ---- */

static void
fsck_report(const char *line, void *arg)
{
	printf("%s: %s\n", (const char *)arg, line);
}

int
ctl_fsck(struct ctl *c)
{
	const struct config	*cf = c->cf;
	struct store_fsck	 f;
	struct store		*st;
	int			 p, r, bad = 0;

	ctl_verb = "fsck";
	for (p = 0; p < cf->npunts; p++) {
		if ((st = punt_open(cf, &cf->punts[p])) == NULL) {
			bad += !ctl_punt_is_remote(&cf->punts[p]);
			continue;
		}
		memset(&f, 0, sizeof(f));
		r = store_fsck(st, c->repair, &f, fsck_report,
		    (void *)cf->punts[p].name);
		punt_put_back(st);
		printf("%s: %llu messages, %llu orphan, %llu missing, "
		    "%llu size mismatch, %llu bad record, %llu tmp, "
		    "%llu repaired: %s\n", cf->punts[p].name,
		    (unsigned long long)f.msgs_checked,
		    (unsigned long long)f.orphan_files,
		    (unsigned long long)f.missing_files,
		    (unsigned long long)f.size_mismatches,
		    (unsigned long long)f.bad_records,
		    (unsigned long long)f.tmp_files,
		    (unsigned long long)f.repaired,
		    r == 0 ? "clean" : r == 1 ? "PROBLEMS" : "ERROR");
		if (r != 0)
			bad++;
	}
	fflush(stdout);
	if (bad > 0)
		return ctl_fail("fsck: %d of %d punt%s not consistent", bad,
		    cf->npunts, cf->npunts == 1 ? "" : "s");
	return 0;
}

int
ctl_punt_create(struct ctl *c)
{
	const struct config	*cf = c->cf;
	const struct config_punt *p;
	char			 err[512];
	int			 i, rc = 0;

	for (i = 0; i < c->argc; i++)
		if ((p = config_punt_find(cf, c->argv[i])) == NULL)
			return ctl_fail("no such punt: %s", c->argv[i]);
		else if (ctl_punt_is_remote(p))
			return ctl_refuse_remote("punt create", p);
	for (i = 0; i < (c->argc ? c->argc : cf->npunts); i++) {
		p = c->argc ? config_punt_find(cf, c->argv[i]) : &cf->punts[i];
		if (ctl_punt_is_remote(p))
			rc = ctl_refuse_remote("punt create", p);
		else if (store_create(p->path, p->name, cf->store_map_size, err,
		    sizeof(err)) == -1)
			rc = ctl_fail("punt %s: %s", p->name, err);
		else
			printf("punt %s: %s\n", p->name, p->path);
	}
	return rc;
}
