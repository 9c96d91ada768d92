/*
 * session: one POP3 session (RFC 1939 + SDPS, docs/design.md §2, §8): its
 * lifecycle (the TLS handshake of an implicit-TLS listener, greeting, the
 * command loop, the end), the command table, the dispatcher, the replies,
 * CAPA, and STLS with the cleartext policy (issue 10).  The states'
 * handlers live in session_auth.c (AUTHORIZATION: USER, PASS),
 * session_sasl.c (AUTH), session_trans.c (TRANSACTION) and
 * session_update.c (UPDATE); session_int.h is what they share.
 */
#include <sys/types.h>

#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/conn.h"
#include "sdps/maildrop.h"
#include "sdps/punt.h"
#include "sdps/session.h"
#include "sdps/slot.h"
#include "sdps/store.h"
#include "sdps/tls.h"
#include "sdps/util.h"
#include "session_int.h"

static cmd_fn cmd_capa;

/*
 * CAPA lists the commands' tags in this order (then capa_props), each
 * only where its offered() says so.  AUTH's tag names the mechanisms of
 * session_sasl.c's table (a unit test holds them together).
 */
const struct cmd session_cmds[] = {
	{ "TOP",  ST_TRANS,		0,	 2, 2, cmd_top,	 "TOP", NULL },
	{ "UIDL", ST_TRANS,		0,	 0, 1, cmd_uidl, "UIDL", NULL },
	{ "USER", ST_AUTH,		0,	 1, 1, cmd_user, "USER",
	    session_capa_user },
	{ "STLS", ST_AUTH,		0,	 0, 0, cmd_stls, "STLS",
	    session_capa_stls },
	{ "AUTH", ST_AUTH,		0,	 0, 2, cmd_auth,
	    "SASL PLAIN LOGIN", session_capa_user },
	{ "PASS", ST_AUTH,		CF_REST, 1, 1, cmd_pass, NULL, NULL },
	{ "APOP", ST_AUTH,		CF_REST, 0, 1, cmd_apop, NULL, NULL },
	{ "CAPA", ST_AUTH | ST_TRANS,	0,	 0, 0, cmd_capa, NULL, NULL },
	{ "QUIT", ST_AUTH | ST_TRANS,	0,	 0, 0, cmd_quit, NULL, NULL },
	{ "STAT", ST_TRANS,		0,	 0, 0, cmd_stat, NULL, NULL },
	{ "LIST", ST_TRANS,		0,	 0, 1, cmd_list, NULL, NULL },
	{ "RETR", ST_TRANS,		0,	 1, 1, cmd_retr, NULL, NULL },
	{ "DELE", ST_TRANS,		0,	 1, 1, cmd_dele, NULL, NULL },
	{ "NOOP", ST_TRANS,		0,	 0, 0, cmd_noop, NULL, NULL },
	{ "RSET", ST_TRANS,		0,	 0, 0, cmd_rset, NULL, NULL },
	{ "*ENV", ST_TRANS,		0,	 1, 1, cmd_env,	 NULL, NULL },
};

const size_t session_ncmds = NITEMS(session_cmds);

/*
 * CAPA lines that are properties of the server and the listener rather
 * than of one command (RFC 2449 §6), after the commands' tags.  arg
 * (may be NULL) gives the line's number; with omit_zero a 0 leaves the
 * line out.  X-SDPS names the sdps extensions as a whole (*ENV, the
 * punt response codes), so it is a property, not *ENV's tag.
 */
struct capa_prop {
	const char	*tag;
	unsigned	(*arg)(const struct session *);
	bool		 omit_zero;
};

static unsigned	capa_expire(const struct session *);
static unsigned	capa_login_delay(const struct session *);

static const struct capa_prop capa_props[] = {
	{ "RESP-CODES",			NULL,			false },
	{ "AUTH-RESP-CODE",		NULL,			false },
	{ "PIPELINING",			NULL,			false },
	{ "EXPIRE",			capa_expire,		false },
	/* RFC 2449 §6.5, only when enforced (login_delay, issue 8). */
	{ "LOGIN-DELAY",		capa_login_delay,	true },
	{ "IMPLEMENTATION sdps",	NULL,			false },
	{ "X-SDPS",			NULL,			false },
};

static const char *
end_name(enum end_how how)
{
	switch (how) {
	case END_NONE:
		return "none";
	case END_QUIT:
		return "quit";
	case END_DROP:
		return "drop";
	case END_TIMEOUT:
		return "timeout";
	case END_KILLED:
		return "killed";
	case END_BADCMD:
		return "badcmd";
	case END_AUTHFAIL:
		return "authfail";
	case END_UPDATE_FAILED:
		return "update-failed";
	case END_TLSFAIL:
		return "tls-fail";
	}
	return "?";
}

/*
 * "-ERR [code] text".  The bad-command rule lives here and nowhere else
 * (session_int.h): only an -ERR without a response code is the client's
 * fault.  Callers return what this returns.
 */
enum cmd_res __attribute__((format(printf, 3, 4)))
session_err(struct session *s, const char *code, const char *fmt, ...)
{
	char	 text[256];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (code != NULL)
		conn_printf(s->c, "-ERR [%s] %s\r\n", code, text);
	else
		conn_printf(s->c, "-ERR %s\r\n", text);
	return code != NULL ? CMD_REPLIED : CMD_BAD;
}

/* "+OK text"; returns CMD_REPLIED. */
enum cmd_res __attribute__((format(printf, 2, 3)))
session_ok(struct session *s, const char *fmt, ...)
{
	char	 text[256];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	conn_printf(s->c, "+OK %s\r\n", text);
	return CMD_REPLIED;
}
/* Scoreboard: the session's counters so far (slot.h). */
static void
session_counters(struct session *s)
{
	slot_counters(s->w->slot, s->n_retr, s->n_top, s->n_dele,
	    conn_octets_out(s->c));
}
int
session_npunts(const struct session *s)
{
	return s->md != NULL ? maildrop_npunts(s->md) : 0;
}
static const struct cmd *
cmd_find(const char *name)
{
	size_t	 i;

	for (i = 0; i < session_ncmds; i++)
		if (strcasecmp(session_cmds[i].name, name) == 0)
			return &session_cmds[i];
	return NULL;
}

static enum cmd_res
session_dispatch(struct session *s, char *line)
{
	const struct cmd	*c;
	struct conn_args	 a;
	char			*kw, *rest;

	if ((kw = conn_keyword(line, &rest)) == NULL)
		return session_err(s, NULL, "empty command");
	if ((c = cmd_find(kw)) == NULL)
		return session_err(s, NULL, "unknown command");
	sb_slot_command(s->w->slot, c->name);
	if ((c->states & s->state) == 0)
		return session_err(s, NULL, "%s not allowed %s", c->name,
		    s->state == ST_AUTH ? "before login" : "after login");
	if (conn_split(rest, (c->flags & CF_REST) != 0, &a) == -1 ||
	    a.argc < c->min_args || a.argc > c->max_args)
		return session_err(s, NULL, "%s: wrong number of arguments",
		    c->name);
	return c->fn(s, &a);
}
/* EXPIRE is the expiry policy in days. */
static unsigned
capa_expire(const struct session *s)
{
	return s->cf->expire_days;
}

static unsigned
capa_login_delay(const struct session *s)
{
	return s->cf->login_delay_s;
}

/* RFC 2449 §6: generated from cmds and capa_props. */
static enum cmd_res
cmd_capa(struct session *s, struct conn_args *a)
{
	const struct capa_prop	*p;
	size_t			 i;
	unsigned		 n;

	(void)a;
	conn_printf(s->c, "+OK capability list follows\r\n");
	for (i = 0; i < session_ncmds; i++)
		if (session_cmds[i].capa != NULL &&
		    (session_cmds[i].offered == NULL ||
		    session_cmds[i].offered(s)))
			conn_printf(s->c, "%s\r\n", session_cmds[i].capa);
	for (i = 0; i < NITEMS(capa_props); i++) {
		p = &capa_props[i];
		if (p->arg == NULL) {
			conn_printf(s->c, "%s\r\n", p->tag);
			continue;
		}
		if ((n = p->arg(s)) > 0 || !p->omit_zero)
			conn_printf(s->c, "%s %u\r\n", p->tag, n);
	}
	conn_ml_end(s->c);
	return CMD_REPLIED;
}
/* ---- TLS and the cleartext policy (issue 10) ---- */

static enum config_tls
listener_tls(const struct session *s)
{
	return s->w->listener != NULL ? s->w->listener->tls :
	    CONFIG_TLS_NONE;
}

bool
session_stls_offered(const struct session *s)
{
	return !s->tls && listener_tls(s) == CONFIG_TLS_STARTTLS &&
	    s->w->tls != NULL;
}

/*
 * Like Dovecot's auth_allow_cleartext: a password may cross only a TLS
 * connection, unless the operator says yes, or (the default) the peer is
 * on this host, where nobody can listen in.
 */
bool
session_cleartext_ok(const struct session *s)
{
	switch (s->cf->allow_cleartext) {
	case CONFIG_CLEARTEXT_YES:
		return true;
	case CONFIG_CLEARTEXT_LOOPBACK:
		return s->tls || s->loopback;
	case CONFIG_CLEARTEXT_NO:
		break;
	}
	return s->tls;
}

bool
session_capa_user(const struct session *s)
{
	return session_cleartext_ok(s);
}

/* Only where STLS would be accepted: not once logged in (RFC 2595 §4). */
bool
session_capa_stls(const struct session *s)
{
	return s->state == ST_AUTH && session_stls_offered(s);
}

/* The port of the first implicit-TLS POP3 listener, or NULL. */
static const char *
implicit_port(const struct session *s)
{
	const struct config_listener	*l;
	const char			*colon;
	int				 i;

	for (i = 0; i < s->cf->nlisteners; i++) {
		l = &s->cf->listeners[i];
		if (l->proto != CONFIG_PROTO_POP3 ||
		    l->tls != CONFIG_TLS_IMPLICIT ||
		    (colon = strrchr(l->addr, ':')) == NULL ||
		    colon[1] == '\0')
			continue;
		return colon + 1;
	}
	return NULL;
}

/*
 * Refused before the client sends a password: at USER and at AUTH (and
 * at a PASS that follows anyway).  A response code, so not a bad
 * command, and it changes nothing: STLS is still allowed after it.
 */
enum cmd_res
session_cleartext_refused(struct session *s)
{
	const char	*port = implicit_port(s);
	bool		 stls = session_stls_offered(s);

	if (stls && port != NULL)
		return session_err(s, "AUTH", "cleartext login refused,"
		    " use STLS or TLS on port %s", port);
	if (stls)
		return session_err(s, "AUTH",
		    "cleartext login refused, use STLS");
	if (port != NULL)
		return session_err(s, "AUTH",
		    "cleartext login refused, use TLS on port %s", port);
	return session_err(s, "AUTH",
	    "cleartext login refused, this server offers no TLS");
}

static unsigned
handshake_ms(const struct session *s)
{
	return s->cf->tls.handshake_timeout_s * 1000;
}

/* The handshake failed: the session ends without another word. */
static void
tls_failed(struct session *s, enum conn_res r, const char *mode)
{
	log_info("sid=%016" PRIx64 " peer=%s event=tls-fail mode=%s"
	    " reason=%s", s->sid, s->peer, mode,
	    s->w->tls == NULL ? "no-context" : conn_res_name(r));
	s->how = r == CONN_KILLED ? END_KILLED : END_TLSFAIL;
}

/*
 * The handshake is done.  Everything learnt before it in clear is
 * forgotten (RFC 2595 §4): USER's names, whether a USER or an AUTH was
 * seen.  The bad-command and auth-failure counts stay, so STLS cannot
 * reset a guesser's budget.
 */
static void
tls_started(struct session *s, const char *mode)
{
	char	 desc[SB_TLS_MAX];
	bool	 ktls = conn_tls_ktls(s->c);

	s->tls = true;
	s->auth_tried = false;
	s->have_user = false;
	s->auth_from_cache = false;
	s->thr_recent = 0;
	s->user_arg[0] = s->user[0] = s->host[0] = s->maildrop[0] = '\0';
	conn_tls_describe(s->c, desc, sizeof(desc));
	slot_tls(s->w->slot, desc, ktls);
	log_info("sid=%016" PRIx64 " peer=%s event=tls mode=%s tls=%s"
	    " ktls=%s", s->sid, s->peer, mode, desc, ktls ? "yes" : "no");
}

/*
 * RFC 2595 §4: only in AUTHORIZATION (the table says so), only where
 * offered, before USER or AUTH, and once.  conn_tls_accept drops what
 * the client pipelined after "STLS" (CVE-2011-0411); nothing here keeps
 * a line across it either.  A failed handshake ends the session.
 */
enum cmd_res
cmd_stls(struct session *s, struct conn_args *a)
{
	enum conn_res	 r;

	(void)a;
	if (s->tls)
		return session_err(s, NULL, "already using TLS");
	if (!session_stls_offered(s))
		return session_err(s, NULL, "STLS not offered on this port");
	if (s->auth_tried)
		return session_err(s, NULL, "STLS only before USER or AUTH");
	(void)session_ok(s, "begin TLS negotiation");
	if ((r = conn_tls_accept(s->c, s->w->tls, handshake_ms(s))) !=
	    CONN_OK) {
		tls_failed(s, r, "starttls");
		return CMD_IOFAIL;
	}
	tls_started(s, "starttls");
	return CMD_REPLIED;
}

/* An implicit-TLS listener: the handshake before the greeting. */
static bool
implicit_tls(struct session *s)
{
	enum conn_res	 r = CONN_ERR;

	if (listener_tls(s) != CONFIG_TLS_IMPLICIT)
		return true;
	if (s->w->tls == NULL || (r = conn_tls_accept(s->c, s->w->tls,
	    handshake_ms(s))) != CONN_OK) {
		tls_failed(s, r, "implicit");
		return false;
	}
	tls_started(s, "implicit");
	return true;
}

enum end_how
session_how_from_io(enum conn_res r)
{
	switch (r) {
	case CONN_TIMEOUT:
		return END_TIMEOUT;
	case CONN_KILLED:
		return END_KILLED;
	case CONN_OK:
	case CONN_TOO_LONG:
	case CONN_NUL:
	case CONN_EOF:
	case CONN_ERR:
		break;
	}
	return END_DROP;
}

static void
session_end(struct session *s)
{
	/* A drop, timeout or kill deletes nothing (RFC 1939 §6) but RD
	 * still counts; all before the locks go. */
	session_commit_rd(s);
	session_release(s);
	/* Only now the last reply: a client that reconnects at once after
	 * QUIT must not find its own locks still held. */
	conn_flush(s->c);
	if (s->w->sb != NULL)
		atomic_fetch_add(&s->w->sb->hdr->total_octets_out,
		    conn_octets_out(s->c));
	log_info("sid=%016" PRIx64 " peer=%s event=logout maildrop=%s"
	    " top=%" PRIu64 " retr=%" PRIu64 " dele=%" PRIu64
	    " removed=%" PRIu64 " octets=%" PRIu64 " end=%s", s->sid,
	    s->peer, s->state == ST_TRANS ? s->maildrop : "-", s->n_top,
	    s->n_retr, s->n_dele, s->n_removed, conn_octets_out(s->c),
	    end_name(s->how));
	slot_session_end(s->w->slot, s->n_retr, s->n_top, s->n_dele,
	    conn_octets_out(s->c));
}

/* One line in, one reply out; false when the session is over. */
static bool
session_step(struct session *s)
{
	enum conn_res	 r;
	enum cmd_res	 res = CMD_REPLIED;
	char		*line, cmd[POP3_LINE_MAX];
	size_t		 len = 0;

	r = conn_read_line(s->c, &line, &len);
	switch (r) {
	case CONN_OK:
		/*
		 * The handler works on a copy: one that reads more (AUTH's
		 * responses) may move conn's buffer under the line, and what
		 * a client pipelined after STLS must be gone with it.  Both
		 * copies are wiped: the line may hold a password.
		 */
		if (len >= sizeof(cmd)) {
			explicit_bzero(line, len);
			res = session_err(s, NULL, "line too long");
			break;
		}
		memcpy(cmd, line, len + 1);
		explicit_bzero(line, len);
		res = session_dispatch(s, cmd);
		explicit_bzero(cmd, len);
		break;
	case CONN_TOO_LONG:
		res = session_err(s, NULL, "line too long");
		break;
	case CONN_NUL:
		res = session_err(s, NULL, "NUL octet in command");
		break;
	case CONN_EOF:
	case CONN_TIMEOUT:
	case CONN_KILLED:
	case CONN_ERR:
		/* RFC 1939 §3: an autologout closes without a reply. */
		s->how = session_how_from_io(r);
		return false;
	}
	switch (res) {
	case CMD_OK:
		conn_write(s->c, "+OK\r\n", 5);
		break;
	case CMD_REPLIED:
		break;
	case CMD_BAD:
		s->bad_commands++;
		if (s->cf->max_bad_commands > 0 &&
		    s->bad_commands >= s->cf->max_bad_commands) {
			log_info("sid=%016" PRIx64 " peer=%s event=badcmd-limit",
			    s->sid, s->peer);
			s->how = END_BADCMD;
		}
		break;
	case CMD_CLOSE:
		break;
	case CMD_IOFAIL:
		if (s->how == END_NONE)
			s->how = session_how_from_io(conn_werr(s->c));
		break;
	case CMD_SRVFAIL:
		log_warnx("sid=%016" PRIx64 " event=server-failure", s->sid);
		(void)session_err(s, "SYS/TEMP", "internal error, try later");
		break;
	}
	session_counters(s);
	if (s->how == END_NONE && conn_werr(s->c) != CONN_OK)
		s->how = session_how_from_io(conn_werr(s->c));
	if (s->how == END_NONE && s->w->kill_session != NULL &&
	    *s->w->kill_session != 0)
		s->how = END_KILLED;
	return s->how == END_NONE;
}

void
session_run(struct session_env *w, int fd, const char *peer)
{
	struct session		*s;
	struct sigaction	 sa;
	uint64_t		 now_us = util_now_us();

	/* sendfile(2) cannot say MSG_NOSIGNAL; a client hanging up during
	 * RETR must end the session, not the worker. */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_warn("session: calloc");
		return;
	}
	s->w = w;
	s->cf = w->cf;
	s->state = ST_AUTH;
	s->how = END_NONE;
	snprintf(s->peer, sizeof(s->peer), "%s", peer != NULL ? peer : "-");
	/* The worker may have numbered the connection already; sdps-ctl
	 * kill names sessions by what the slot shows. */
	if (w->slot != NULL && w->slot->session_id != 0)
		s->sid = w->slot->session_id;
	else
		s->sid = w->sb != NULL ? sb_session_id(w->sb) : now_us;
	if ((s->c = conn_new(fd, POP3_LINE_MAX, s->cf->idle_timeout_s,
	    s->cf->send_timeout_s, w->kill_session)) == NULL) {
		free(s);
		return;
	}
	s->loopback = conn_peer_loopback(s->c);
	s->mech = "pass";
	slot_connect(w->slot, SB_AUTH, s->sid, s->peer, now_us);
	log_info("sid=%016" PRIx64 " peer=%s event=connect", s->sid, s->peer);
	if (implicit_tls(s)) {
		conn_write(s->c, "+OK sdps ready\r\n", 16);
		/* Issue 8: the whole AUTHORIZATION state has a deadline;
		 * expiry is an autologout (no reply).  session_login lifts
		 * it. */
		conn_set_deadline_ms(s->c,
		    (uint64_t)s->cf->auth_timeout_s * 1000);
		while (session_step(s))
			;
	}
	session_end(s);
	conn_free(s->c);
	free(s);
}
