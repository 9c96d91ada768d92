/*
 * puntsrv: the punt server's end of the punt protocol
 * (docs/punt-protocol.md): one front end's link to one local punt.
 *
 * A link is a session with a lifetime, so it runs in a POP3-pool worker
 * like a POP3 session (docs/design.md §19.7): the maildrop lock a
 * SELECT takes is the local punt's lock (a kernel OFD lock, lock.c), held
 * by this process, so it goes with the link whichever way the link ends
 * (QUIT, EOF, reset, the idle deadline, sdps-ctl kill, a crash).
 *
 * The front end is trusted once its certificate passed the handshake
 * (tls_punt_server_new's CA and allow-list), but every argument is still
 * checked, and a message body is only ever served to the link that holds
 * the lock of its maildrop.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sdps/config.h"
#include "sdps/conn.h"
#include "sdps/link.h"
#include "sdps/fault.h"
#include "sdps/log.h"
#include "sdps/punt.h"
#include "sdps/puntset.h"
#include "sdps/puntsrv.h"
#include "sdps/scoreboard.h"
#include "sdps/slot.h"
#include "sdps/store.h"
#include "sdps/tls.h"
#include "sdps/util.h"
#include "sdps/wire.h"
#include "sdps/xtext.h"

#include "puntsrv_int.h"

/* TCP keepalive on the link (docs/punt-protocol.md §1). */
#define PS_KEEPIDLE_S	10
#define PS_KEEPINTVL_S	5
#define PS_KEEPCNT	3
#define PS_TOP_CHUNK	(16 * 1024)

/* ------------------------------------------------------------ replies */

void
ps_log(struct psrv *ps, const char *fmt, ...)
{
	char	 buf[1024];
	va_list	 ap;

	va_start(ap, fmt);
	(void)vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_info("sid=%016" PRIx64 " peer=%s fe=\"%s\" client=%s cport=%s "
	    "csid=%s %s", ps->sid, ps->peer, ps->fe, ps->caddr, ps->cport,
	    ps->csid, buf);
}

int
ps_reply(struct psrv *ps, const char *fmt, ...)
{
	va_list	 ap;
	int	 rc;

	va_start(ap, fmt);
	rc = conn_vreply(ps->c, 1024, fmt, ap);
	va_end(ap);
	return rc;
}

/* A command unknown, malformed or out of order: the front end's bug. */
int
ps_proto(struct psrv *ps, const char *why)
{
	ps_log(ps, "event=link-proto why=\"%s\"", why);
	return ps_reply(ps, "-ERR [PROTO] %s", why);
}

/* The reply for a failed store operation. */
int
ps_store_err(struct psrv *ps, enum store_res r, const char *what)
{
	switch (r) {
	case STORE_GONE:
		return ps_reply(ps, "-ERR [GONE] no such message");
	case STORE_BUSY:
		return ps_reply(ps, "-ERR [IN-USE] %s: in use", what);
	case STORE_PERMFAIL:
		return ps_reply(ps, "-ERR [SYS/PERM] %s failed", what);
	default:
		return ps_reply(ps, "-ERR [SYS/TEMP] %s failed, try later",
		    what);
	}
}

int
ps_id(const char *s, uint64_t *id)
{
	return util_parse_u64(s, UINT64_MAX, id);
}

/* Room for n more octets and a NUL: 0, or -1 out of memory. */
static int
ps_buf_reserve(struct ps_buf *b, size_t n)
{
	size_t	 ncap;
	char	*p;

	if (b->len + n + 1 > b->cap) {
		ncap = b->cap != 0 ? b->cap : 256;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if ((p = realloc(b->p, ncap)) == NULL)
			return -1;
		b->p = p;
		b->cap = ncap;
	}
	return 0;
}

/* A line of growing text (XLIST, XLS): 0, or -1 out of memory. */
int
ps_buf_add(struct ps_buf *b, const char *s, size_t n)
{
	if (ps_buf_reserve(b, n) == -1)
		return -1;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/* " " and s as xtext ("<>" for an empty s when null is set). */
int
ps_buf_xtext(struct ps_buf *b, const char *s, bool null)
{
	size_t	 n;

	if (ps_buf_add(b, " ", 1) == -1)
		return -1;
	if (null && s[0] == '\0')
		return ps_buf_add(b, "<>", 2);
	n = xtext_len(s);
	if (ps_buf_reserve(b, n) == -1)
		return -1;
	(void)xtext_encode(s, b->p + b->len, n + 1);
	b->len += n;
	return 0;
}

/* ----------------------------------------------------------- commands */

static int
cmd_capa(struct psrv *ps, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return ps_reply(ps, "+OK capability list follows\r\nSDPS-PUNT %d\r\n"
	    "XCLIENT\r\nDELIVER\r\n.", LINK_PROTO_VERSION);
}

/* An XCLIENT value: 1..max octets of the characters in ok. */
static bool
xclient_value(const char *v, size_t max, const char *ok)
{
	size_t	 n = strlen(v);

	return n > 0 && n <= max && strspn(v, ok) == n;
}

static int
cmd_xclient(struct psrv *ps, int argc, char **argv)
{
	static const char hex[] = "0123456789abcdefABCDEF";
	char		 addr[sizeof(ps->caddr)], port[8], sid[20];
	uint64_t	 pn;
	int		 i;

	snprintf(addr, sizeof(addr), "%s", ps->caddr);
	snprintf(port, sizeof(port), "%s", ps->cport);
	snprintf(sid, sizeof(sid), "%s", ps->csid);
	for (i = 0; i < argc; i++) {
		if (strncasecmp(argv[i], "ADDR=", 5) == 0 &&
		    xclient_value(argv[i] + 5, sizeof(addr) - 1,
		    "0123456789abcdefABCDEF.:[]"))
			snprintf(addr, sizeof(addr), "%s", argv[i] + 5);
		else if (strncasecmp(argv[i], "PORT=", 5) == 0 &&
		    util_parse_u64(argv[i] + 5, 65535, &pn) == 0)
			snprintf(port, sizeof(port), "%" PRIu64, pn);
		else if (strncasecmp(argv[i], "SID=", 4) == 0 &&
		    strlen(argv[i] + 4) == 16 &&
		    xclient_value(argv[i] + 4, 16, hex))
			snprintf(sid, sizeof(sid), "%s", argv[i] + 4);
		else
			return ps_proto(ps, "XCLIENT ADDR=ip PORT=port "
			    "SID=hex16");
	}
	snprintf(ps->caddr, sizeof(ps->caddr), "%s", addr);
	snprintf(ps->cport, sizeof(ps->cport), "%s", port);
	snprintf(ps->csid, sizeof(ps->csid), "%s", sid);
	return ps_reply(ps, "+OK");
}

/* Release the lock and forget the pending removals. */
static void
ps_unselect(struct psrv *ps, const char *how)
{
	if (!ps->selected)
		return;
	punt_unlock(&ps->lk);
	ps->selected = false;
	ps->ndele = 0;
	slot_login(ps->w->slot, "", 0, 0);
	slot_state(ps->w->slot, SB_LINK);
	ps_log(ps, "event=link-unlock maildrop=%s%s%s how=%s", ps->user,
	    ps->user[0] != '\0' ? "@" : "", ps->host, how);
}

static int
cmd_select(struct psrv *ps, int argc, char **argv)
{
	char		 md[SB_MAILDROP_MAX];
	enum store_res	 r;

	if (ps->selected)
		return ps_proto(ps, "already selected");
	if (util_host_normalize(argv[0], ps->host) == -1 ||
	    (argc == 2 && util_user_normalize(argv[1], ps->user) == -1))
		return ps_proto(ps, "SELECT host [user]: bad name");
	if (argc == 1)
		ps->user[0] = '\0';
	snprintf(md, sizeof(md), "%s%s%s", ps->user,
	    ps->user[0] != '\0' ? "@" : "", ps->host);
	punt_lock_init(&ps->lk);
	r = punt_lock(ps->p, ps->host, argc == 2 ? ps->user : NULL, &ps->lk);
	if (r == STORE_BUSY) {
		ps_log(ps, "event=link-in-use maildrop=%s", md);
		return ps_reply(ps, "-ERR [IN-USE] maildrop in use");
	}
	if (r != STORE_OK)
		return ps_reply(ps, "-ERR [SYS/TEMP] cannot lock the maildrop");
	ps->selected = true;
	ps->ndele = 0;
	slot_login(ps->w->slot, md, util_now_us(), 1u << ps->pidx);
	slot_state(ps->w->slot, SB_LINK);
	ps_log(ps, "event=link-lock maildrop=%s", md);
	return ps_reply(ps, "+OK locked");
}

static int
cmd_unselect(struct psrv *ps, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	/* Idempotent: a front end that lost track can always reset. */
	ps_unselect(ps, "unselect");
	return ps_reply(ps, "+OK");
}

static int
cmd_xlist(struct psrv *ps, int argc, char **argv)
{
	struct store_entry	*e = NULL;
	struct ps_buf		 b = { NULL, 0, 0 };
	char			*env = NULL, num[96];
	const char		*s;
	size_t			 n = 0, i;
	int			 rc = 0, k;

	(void)argc;
	(void)argv;
	if (punt_list(ps->p, ps->host, ps->user[0] != '\0' ? ps->user : NULL,
	    &e, &n, &env) != STORE_OK)
		return ps_reply(ps, "-ERR [SYS/TEMP] cannot list the maildrop");
	if (n > 0 && env == NULL) {
		free(e);
		return ps_reply(ps, "-ERR [SYS/TEMP] no envelopes");
	}
	rc = ps_reply(ps, "+OK %zu messages", n);
	for (i = 0; i < n && rc == 0; i++) {
		b.len = 0;
		k = snprintf(num, sizeof(num), "%" PRIu64 " %" PRIu64 " %"
		    PRIu64 " %" PRIu32, e[i].id, e[i].arrival_us, e[i].octets,
		    e[i].flags);
		s = env + e[i].env;
		if (ps_buf_add(&b, num, (size_t)k) == -1 ||
		    ps_buf_xtext(&b, s, true) == -1) {
			rc = -1;
			break;
		}
		/* sender NUL, each recipient NUL, then "" (store.h) */
		for (s += strlen(s) + 1; *s != '\0' && rc == 0;
		    s += strlen(s) + 1)
			rc = ps_buf_xtext(&b, s, false);
		if (rc == 0)
			rc = conn_ml_line(ps->c, b.p, b.len);
	}
	if (rc == 0)
		rc = conn_ml_end(ps->c);
	free(b.p);
	free(e);
	free(env);
	return rc;
}

/* Is m in the selected maildrop (the link may send it)? */
static bool
ps_owns(const struct psrv *ps, const struct store_msg *m)
{
	size_t	 i;

	if (strcmp(m->host, ps->host) != 0)
		return false;
	if (ps->user[0] == '\0')
		return true;
	for (i = 0; i < m->nrcpts; i++)
		if (strcasecmp(m->rcpts[i], ps->user) == 0)
			return true;
	return false;
}

/* Open message id for BODY or TOP; 1 open, 0 answered, -1 link failed. */
static int
ps_open(struct psrv *ps, const char *arg, int flags, struct punt_body *b,
    off_t *size)
{
	struct store_msg	 m;
	struct stat		 sb;
	enum store_res		 r;
	uint64_t		 id;

	if (ps_id(arg, &id) == -1)
		return ps_proto(ps, "bad message id") == 0 ? 0 : -1;
	memset(&m, 0, sizeof(m));
	memset(b, 0, sizeof(*b));
	b->fd = -1;
	if ((r = punt_open_body(ps->p, id, flags, b, &m)) != STORE_OK)
		return ps_store_err(ps, r, "open") == 0 ? 0 : -1;
	if (!(flags & PUNT_BODY_ADMIN) && !ps_owns(ps, &m))
		r = STORE_GONE;
	else if (b->fd < 0 || fstat(b->fd, &sb) == -1)
		r = STORE_TEMPFAIL;
	store_msg_free(&m);
	if (r != STORE_OK) {
		punt_body_close(b);
		return ps_store_err(ps, r, "open") == 0 ? 0 : -1;
	}
	*size = sb.st_size;
	return 1;
}

/* "+OK N" and the first N octets of the open file. */
static int
ps_send_counted(struct psrv *ps, struct punt_body *b, off_t n)
{
	int	 rc;

	conn_cork(ps->c, true);
	rc = conn_printf(ps->c, "+OK %lld\r\n", (long long)n);
	/* Stored CRLF and dot-stuffed: sent as is (the count frames it). */
	if (rc == 0)
		rc = conn_send_file(ps->c, b->fd, 0, (size_t)n);
	punt_body_close(b);
	if (rc == 0)
		rc = conn_flush(ps->c);
	/* After "+OK N" a failure can only end the link (§4 BODY). */
	return rc == 0 && conn_werr(ps->c) == CONN_OK ? 0 : -1;
}

static int
cmd_body(struct psrv *ps, int argc, char **argv)
{
	struct punt_body b;
	off_t		 size;
	int		 flags = 0, rc;

	if (argc == 2) {
		if (strcasecmp(argv[1], "ADMIN") != 0)
			return ps_proto(ps, "BODY id [ADMIN]");
		flags = PUNT_BODY_ADMIN;
	} else if (!ps->selected)
		return ps_proto(ps, "not selected");
	if ((rc = ps_open(ps, argv[0], flags, &b, &size)) != 1)
		return rc;
	ps->n_body++;
	return ps_send_counted(ps, &b, size);
}

static int
cmd_top(struct psrv *ps, int argc, char **argv)
{
	struct punt_body b;
	struct wire_top	 t;
	char		*buf;
	uint64_t	 lines;
	off_t		 size, cut = 0;
	ssize_t		 n = 0;
	int		 rc;

	(void)argc;
	if (util_parse_u64(argv[1], UINT64_MAX, &lines) == -1)
		return ps_proto(ps, "TOP id lines");
	if ((rc = ps_open(ps, argv[0], 0, &b, &size)) != 1)
		return rc;
	if ((buf = malloc(PS_TOP_CHUNK)) == NULL) {
		punt_body_close(&b);
		return ps_reply(ps, "-ERR [SYS/TEMP] out of memory");
	}
	/* The cut is counted first (TOP's rule, wire.h), then sent. */
	wire_top_init(&t, lines);
	while (!t.done && cut < size) {
		if ((n = pread(b.fd, buf, PS_TOP_CHUNK, cut)) == -1 &&
		    errno == EINTR)
			continue;
		if (n <= 0)
			break;
		cut += (off_t)wire_top_feed(&t, buf, (size_t)n);
	}
	free(buf);
	if (n == -1) {
		log_warn("puntsrv: top: pread");
		punt_body_close(&b);
		return ps_reply(ps, "-ERR [SYS/TEMP] read failed");
	}
	ps->n_top++;
	return ps_send_counted(ps, &b, cut);
}

/* The ids of argv (at most LINK_IDS_PER_LINE); -1 if one is bad. */
static int
ps_ids(int argc, char **argv, uint64_t *ids)
{
	int	 i;

	for (i = 0; i < argc; i++)
		if (ps_id(argv[i], &ids[i]) == -1)
			return -1;
	return 0;
}

static int
cmd_rd(struct psrv *ps, int argc, char **argv)
{
	uint64_t	 ids[LINK_IDS_PER_LINE];
	enum store_res	 r;

	if (ps_ids(argc, argv, ids) == -1)
		return ps_proto(ps, "RD id [id ...]");
	if ((r = punt_mark_read(ps->p, ids, (size_t)argc)) != STORE_OK)
		return ps_store_err(ps, r, "mark read");
	return ps_reply(ps, "+OK");
}

static int
cmd_dele(struct psrv *ps, int argc, char **argv)
{
	uint64_t	 ids[LINK_IDS_PER_LINE], *p;
	size_t		 cap;

	if (ps_ids(argc, argv, ids) == -1)
		return ps_proto(ps, "DELE id [id ...]");
	if (ps->ndele + (size_t)argc > ps->dele_cap) {
		cap = ps->dele_cap != 0 ? ps->dele_cap * 2 : 256;
		while (cap < ps->ndele + (size_t)argc)
			cap *= 2;
		if ((p = reallocarray(ps->dele, cap, sizeof(*p))) == NULL)
			return ps_reply(ps, "-ERR [SYS/TEMP] out of memory");
		ps->dele = p;
		ps->dele_cap = cap;
	}
	memcpy(ps->dele + ps->ndele, ids, (size_t)argc * sizeof(ids[0]));
	ps->ndele += (size_t)argc;
	return ps_reply(ps, "+OK");
}

static int
cmd_rset(struct psrv *ps, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	ps->ndele = 0;
	return ps_reply(ps, "+OK");
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	 x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The pending ids (sorted, each once) that are in the selected maildrop
 * now: a front end's wrong id (another punt's, another host's) must
 * never remove someone else's mail.  Into ps->dele; how many, or -1.
 */
static ssize_t
ps_pending(struct psrv *ps)
{
	struct store_entry	*e = NULL;
	uint64_t		*have;
	size_t			 n = 0, i, k = 0;

	if (ps->ndele == 0)
		return 0;
	if (punt_list(ps->p, ps->host, ps->user[0] != '\0' ? ps->user : NULL,
	    &e, &n, NULL) != STORE_OK)
		return -1;
	if ((have = calloc(n + 1, sizeof(*have))) == NULL) {
		free(e);
		return -1;
	}
	for (i = 0; i < n; i++)
		have[i] = e[i].id;
	free(e);
	qsort(have, n, sizeof(*have), cmp_u64);
	qsort(ps->dele, ps->ndele, sizeof(ps->dele[0]), cmp_u64);
	for (i = 0; i < ps->ndele; i++) {
		if (k > 0 && ps->dele[k - 1] == ps->dele[i])
			continue;
		if (bsearch(&ps->dele[i], have, n, sizeof(*have),
		    cmp_u64) != NULL)
			ps->dele[k++] = ps->dele[i];
	}
	free(have);
	return (ssize_t)k;
}

static int
cmd_update(struct psrv *ps, int argc, char **argv)
{
	enum store_res	 r = STORE_OK;
	ssize_t		 n;
	size_t		 asked = ps->ndele;

	(void)argc;
	(void)argv;
	if ((n = ps_pending(ps)) == -1)
		r = STORE_TEMPFAIL;
	else if (n > 0)
		/* The claim rules apply in store_remove (design.md §4). */
		r = punt_remove(ps->p, ps->dele, (size_t)n,
		    ps->user[0] != '\0' ? ps->user : NULL);
	ps_log(ps, "event=link-update pending=%zu removed=%zd res=%s", asked,
	    r == STORE_OK ? n : 0, r == STORE_OK ? "ok" : "tempfail");
	if (r == STORE_OK)
		ps->n_removed += (uint64_t)n;
	/* Removed, not yet answered: the front end must then say "not
	 * removed" and nothing may come back (design.md §19.4). */
	fault_point("puntsrv.update.committed");
	ps_unselect(ps, "update");
	if (r != STORE_OK)
		return ps_reply(ps, "-ERR [SYS/TEMP] nothing removed, try "
		    "later");
	return ps_reply(ps, "+OK %zd removed", n);
}

static int
cmd_xstat(struct psrv *ps, int argc, char **argv)
{
	struct store_stat	 s;
	enum store_res		 r;

	(void)argc;
	(void)argv;
	if ((r = punt_stat(ps->p, &s)) != STORE_OK)
		return ps_store_err(ps, r, "stat");
	return ps_reply(ps, "+OK %" PRIu64 " %" PRIu64 " %" PRIu64 " %"
	    PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %"
	    PRIu64 " %" PRIu64, s.msgs, s.hosts, s.octets, s.stored_octets,
	    s.read, s.in_delivery, s.pop_deleted, s.next_id, s.map_used,
	    s.map_size);
}

static int
cmd_noop(struct psrv *ps, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return ps_reply(ps, "+OK");
}

static int
cmd_quit(struct psrv *ps, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	/* Like UNSELECT: QUIT never removes anything. */
	ps_unselect(ps, "quit");
	(void)ps_reply(ps, "+OK bye");
	(void)conn_flush(ps->c);
	ps->quit = true;
	return -1;
}

/* --------------------------------------------------------- dispatch */

static const struct ps_cmd {
	const char	*name;
	int		 min, max;	/* arguments */
	bool		 selected;	/* only after SELECT */
	int		(*fn)(struct psrv *, int, char **);
} ps_cmds[] = {
	{ "CAPA",	0, 0, false, cmd_capa },
	{ "XCLIENT",	1, 3, false, cmd_xclient },
	{ "SELECT",	1, 2, false, cmd_select },
	{ "XLIST",	0, 0, true, cmd_xlist },
	{ "BODY",	1, 2, false, cmd_body },	/* checks itself */
	{ "TOP",	2, 2, true, cmd_top },
	{ "RD",		1, LINK_IDS_PER_LINE, true, cmd_rd },
	{ "DELE",	1, LINK_IDS_PER_LINE, true, cmd_dele },
	{ "RSET",	0, 0, true, cmd_rset },
	{ "UPDATE",	0, 0, true, cmd_update },
	{ "UNSELECT",	0, 0, false, cmd_unselect },
	{ "DELIVER",	4, PS_ARGS_MAX, false, ps_cmd_deliver },
	{ "XSTAT",	0, 0, false, cmd_xstat },
	{ "XLS",	0, 1, false, ps_cmd_xls },
	{ "XREC",	1, 1, false, ps_cmd_xrec },
	{ "NOOP",	0, 0, false, cmd_noop },
	{ "QUIT",	0, 0, false, cmd_quit },
};

/*
 * Split rest at single spaces into argv (at most max).  -1 for an
 * empty argument (two spaces, a trailing space) or too many: the link
 * protocol is written by a program, so it is parsed strictly.
 */
static int
ps_split(char *rest, char **argv, int max)
{
	int	 n = 0;
	char	*sp;

	if (*rest == '\0')
		return 0;
	for (;;) {
		if (*rest == '\0' || *rest == ' ' || n == max)
			return -1;
		argv[n++] = rest;
		if ((sp = strchr(rest, ' ')) == NULL)
			return n;
		*sp = '\0';
		rest = sp + 1;
	}
}

/* One command line: 0 to go on, -1 to end the link. */
static int
ps_command(struct psrv *ps, char *line)
{
	static char	*argv[PS_ARGS_MAX + 1];
	const struct ps_cmd *pc = NULL;
	char		*kw, *rest;
	size_t		 i;
	int		 argc;

	if ((kw = conn_keyword(line, &rest)) == NULL)
		return ps_proto(ps, "empty command");
	sb_slot_command(ps->w->slot, kw);
	for (i = 0; i < NITEMS(ps_cmds); i++)
		if (strcasecmp(ps_cmds[i].name, kw) == 0)
			pc = &ps_cmds[i];
	if (pc == NULL)
		return ps_proto(ps, "unknown command");
	argc = ps_split(rest, argv, PS_ARGS_MAX + 1);
	/* DELIVER answers its own bad lines: its octets must be drained. */
	if (pc->fn == ps_cmd_deliver)
		return ps_cmd_deliver(ps, argc, argv);
	if (argc < pc->min || argc > pc->max)
		return ps_proto(ps, "wrong number of arguments");
	if (pc->selected && !ps->selected)
		return ps_proto(ps, "not selected");
	return pc->fn(ps, argc, argv);
}

/* ------------------------------------------------------------ the link */

static void
ps_keepalive(int fd, unsigned user_timeout_s)
{
	int	 one = 1, idle = PS_KEEPIDLE_S, intvl = PS_KEEPINTVL_S;
	int	 cnt = PS_KEEPCNT;
	unsigned ut = user_timeout_s * 1000;

	/* A dead or partitioned front end is noticed, and its lock freed,
	 * with no command outstanding (docs/punt-protocol.md §1). */
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) ==
	    -1 || setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle,
	    sizeof(idle)) == -1 || setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL,
	    &intvl, sizeof(intvl)) == -1 || setsockopt(fd, IPPROTO_TCP,
	    TCP_KEEPCNT, &cnt, sizeof(cnt)) == -1)
		log_warn("puntsrv: TCP keepalive");
	if (ut > 0 && setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut,
	    sizeof(ut)) == -1)
		log_warn("puntsrv: TCP_USER_TIMEOUT");
}

/* The punt this listener serves; NULL (answered and logged) if none. */
static struct punt *
ps_punt(struct psrv *ps)
{
	const struct config		*cf = ps->w->cf;
	const struct config_listener	*cl = ps->w->listener;
	const struct config_punt	*pt;
	struct punt			*p = NULL;

	if (cl != NULL && (pt = config_punt_find(cf, cl->punt)) != NULL) {
		ps->pidx = (int)(pt - cf->punts);
		p = puntset_get(ps->w->punts, ps->pidx);
	}
	if (p == NULL || punt_local_store(p) == NULL) {
		ps_log(ps, "event=link-nopunt punt=%s why=\"%s\"",
		    cl != NULL ? cl->punt : "-", p == NULL && cl != NULL &&
		    ps->w->punts != NULL ? puntset_error(ps->w->punts,
		    ps->pidx) : "not a local punt");
		(void)ps_reply(ps, "-ERR [SYS/TEMP] punt unavailable");
		(void)conn_flush(ps->c);
		return NULL;
	}
	return p;
}

/* The handshake; false (logged with the refused identity) if it failed. */
static bool
ps_handshake(struct psrv *ps, struct tls_server *t)
{
	enum conn_res	 r;
	const char	*why;
	char		 desc[SB_TLS_MAX];

	if (t == NULL) {
		log_warnx("puntsrv: no TLS context for the punt listener");
		return false;
	}
	r = conn_tls_accept(ps->c, t, ps->w->cf->tls.handshake_timeout_s *
	    1000);
	if (r != CONN_OK) {
		why = tls_punt_refusal(t);
		log_warnx("sid=%016" PRIx64 " peer=%s event=link-refused "
		    "how=%s why=\"%s\"", ps->sid, ps->peer, conn_res_name(r),
		    why[0] != '\0' ? why : r == CONN_ERR ? "handshake failed "
		    "(no client certificate, or not TLS 1.3)" : "no handshake");
		return false;
	}
	conn_tls_describe(ps->c, desc, sizeof(desc));
	slot_tls(ps->w->slot, desc, conn_tls_ktls(ps->c));
	conn_tls_peer(ps->c, ps->fe, sizeof(ps->fe));
	return true;
}

void
puntsrv_run(struct session_env *w, int fd, const char *peer,
    struct tls_server *t)
{
	const struct config *cf = w->cf;
	struct psrv	*ps;
	struct sigaction sa;
	enum conn_res	 r;
	const char	*how = "quit";
	char		*line;
	size_t		 len;

	/* A front end hanging up mid-reply ends the link, not the worker. */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	if ((ps = calloc(1, sizeof(*ps))) == NULL) {
		log_warn("puntsrv: calloc");
		return;
	}
	ps->w = w;
	punt_lock_init(&ps->lk);
	snprintf(ps->peer, sizeof(ps->peer), "%s", peer != NULL ? peer : "-");
	snprintf(ps->fe, sizeof(ps->fe), "-");
	snprintf(ps->caddr, sizeof(ps->caddr), "-");
	snprintf(ps->cport, sizeof(ps->cport), "-");
	snprintf(ps->csid, sizeof(ps->csid), "-");
	ps->sid = w->slot != NULL && w->slot->session_id != 0 ?
	    w->slot->session_id : sb_session_id(w->sb);
	/*
	 * TCP_USER_TIMEOUT: the time the punt already gives a peer that
	 * does not read (send_timeout), not the front end's short command
	 * deadline: a front end relaying a body to a slow POP3 client may
	 * leave the link's window shut for a while, and must not lose it.
	 */
	ps_keepalive(fd, cf->send_timeout_s);
	/* The idle deadline: a quiet link ends, and its lock with it. */
	if ((ps->c = conn_new(fd, LINK_LINE_MAX, cf->ps_idle_timeout_s,
	    cf->send_timeout_s, w->kill_session)) == NULL) {
		free(ps);
		return;
	}
	if (!ps_handshake(ps, t) || (ps->p = ps_punt(ps)) == NULL)
		goto out;
	ps->st = punt_local_store(ps->p);
	ps_log(ps, "event=link-open punt=%s", punt_name(ps->p));
	(void)ps_reply(ps, "+OK sdps-punt %s %016" PRIx64, punt_name(ps->p),
	    punt_uid(ps->p));
	for (;;) {
		/* SIGTERM: leave between sessions, never under a lock. */
		if (*w->terminate && !ps->selected &&
		    !conn_line_pending(ps->c)) {
			how = "shutdown";
			break;
		}
		r = conn_read_line(ps->c, &line, &len);
		if (r == CONN_TOO_LONG) {
			ps_log(ps, "event=link-proto why=\"line too long\"");
			(void)ps_reply(ps, "-ERR [PROTO] line too long");
			(void)conn_flush(ps->c);
			how = "too-long";
			break;
		}
		if (r == CONN_NUL) {
			if (ps_proto(ps, "NUL in command") == 0)
				continue;
		} else if (r != CONN_OK) {
			how = r == CONN_TIMEOUT ? "idle-timeout" :
			    conn_res_name(r);
			break;
		} else if (ps_command(ps, line) == 0)
			continue;
		if (!ps->quit)
			how = ps->drop_why != NULL ? ps->drop_why :
			    conn_res_name(conn_werr(ps->c));
		break;
	}
	/* The last answer (a refusal that ends the link) goes out. */
	(void)conn_flush(ps->c);
	ps_unselect(ps, how);
	ps_log(ps, "event=link-close how=%s bodies=%" PRIu64 " tops=%" PRIu64
	    " delivered=%" PRIu64 " removed=%" PRIu64, how, ps->n_body,
	    ps->n_top, ps->n_deliver, ps->n_removed);
out:
	free(ps->dele);
	conn_free(ps->c);
	free(ps);
}
