/*
 * session: one POP3 session (RFC 1939 + SDPS, docs/design.md §2, §8): the
 * command table, the dispatcher, the handlers, and the snapshot of every
 * reachable punt that the TRANSACTION state works on.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/authcache.h"
#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/conn.h"
#include "sdps/maildrop.h"
#include "sdps/punt.h"
#include "sdps/puntset.h"
#include "sdps/scoreboard.h"
#include "sdps/session.h"
#include "sdps/slot.h"
#include "sdps/store.h"
#include "sdps/throttle.h"
#include "sdps/util.h"
#include "sdps/session_env.h"

/* Wait this long for a hashing place: a burst of cold logins queues
 * behind auth_max_parallel hashes rather than failing. */
#define AUTH_WAIT_MS	30000
#define TOP_CHUNK	65536
#define DATE_MAX	64

enum state { ST_AUTH = 0x01, ST_TRANS = 0x02 };	/* UPDATE takes no commands */

enum cmd_res {
	CMD_OK,		/* dispatcher sends "+OK" */
	CMD_REPLIED,	/* handler sent its own reply */
	CMD_BAD,	/* handler sent -ERR; counts toward the bad limit */
	CMD_CLOSE,	/* reply sent; end the session (s->how says why) */
	CMD_IOFAIL,	/* peer gone, timed out or killed: no reply, no UPDATE */
	CMD_SRVFAIL	/* our fault: dispatcher sends -ERR [SYS/TEMP] */
};

/* How a session ended, for the logout line. */
enum end_how {
	END_NONE,
	END_QUIT,
	END_DROP,
	END_TIMEOUT,
	END_KILLED,
	END_BADCMD,
	END_AUTHFAIL,
	END_UPDATE_FAILED
};

#define CF_REST	0x01	/* the rest of the line is one argument (PASS) */

/*
 * One snapshot entry (docs/design.md §2.1): msn = idx + 1 is what the
 * client sees; id is the punt's message id.
 */
struct s_msg {
	uint64_t	 id;
	uint64_t	 arrival_us;
	uint64_t	 octets;
	uint32_t	 flags;		/* STORE_F_* at snapshot time */
	int		 sp;		/* maildrop_punt index */
	bool		 deleted;	/* DELE, until RSET */
	bool		 read_now;	/* RETR completed: RD to commit */
};

struct session {
	struct session_env	*w;
	const struct config	*cf;
	struct conn	*c;
	char			 peer[SB_PEER_MAX];
	uint64_t		 sid;
	unsigned		 state;
	enum end_how		 how;

	/* USER */
	bool			 have_user;
	bool			 auth_from_cache;	/* for the login line */
	char			 host[UTIL_HOST_MAX + 1];
	char			 user[UTIL_USER_MAX + 1];	/* "" = host */
	char			 user_arg[POP3_LINE_MAX];	/* as typed */
	char			 maildrop[SB_MAILDROP_MAX];
	unsigned		 auth_failures, bad_commands;
	unsigned		 thr_recent;	/* source's recent failures */

	/* TRANSACTION */
	struct maildrop		*md;	/* locks, listing, envelopes */
	struct s_msg		*msgs;	/* msgs[i] is maildrop_msg(md, i) */
	size_t			 nmsgs;
	uint64_t		 n_retr, n_top, n_dele, n_removed;
	uint64_t		 login_us;
};

typedef enum cmd_res cmd_fn(struct session *, struct conn_args *);

struct cmd {
	const char	*name;
	unsigned int	 states;	/* ST_* where allowed */
	unsigned int	 flags;		/* CF_* */
	int		 min_args, max_args;
	cmd_fn		*fn;
	const char	*capa;		/* its RFC 2449 CAPA tag, or NULL */
};

static cmd_fn cmd_user, cmd_pass, cmd_apop, cmd_capa, cmd_quit, cmd_stat,
    cmd_list, cmd_retr, cmd_dele, cmd_noop, cmd_rset, cmd_top, cmd_uidl,
    cmd_env;

/* CAPA lists the commands' tags in this order (then capa_props). */
static const struct cmd cmds[] = {
	{ "TOP",  ST_TRANS,		0,	 2, 2, cmd_top,	 "TOP" },
	{ "UIDL", ST_TRANS,		0,	 0, 1, cmd_uidl, "UIDL" },
	{ "USER", ST_AUTH,		0,	 1, 1, cmd_user, "USER" },
	{ "PASS", ST_AUTH,		CF_REST, 1, 1, cmd_pass, NULL },
	{ "APOP", ST_AUTH,		CF_REST, 0, 1, cmd_apop, NULL }, /* -ERR */
	{ "CAPA", ST_AUTH | ST_TRANS,	0,	 0, 0, cmd_capa, NULL },
	{ "QUIT", ST_AUTH | ST_TRANS,	0,	 0, 0, cmd_quit, NULL },
	{ "STAT", ST_TRANS,		0,	 0, 0, cmd_stat, NULL },
	{ "LIST", ST_TRANS,		0,	 0, 1, cmd_list, NULL },
	{ "RETR", ST_TRANS,		0,	 1, 1, cmd_retr, NULL },
	{ "DELE", ST_TRANS,		0,	 1, 1, cmd_dele, NULL },
	{ "NOOP", ST_TRANS,		0,	 0, 0, cmd_noop, NULL },
	{ "RSET", ST_TRANS,		0,	 0, 0, cmd_rset, NULL },
	{ "*ENV", ST_TRANS,		0,	 1, 1, cmd_env,	 NULL },
};

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
	}
	return "?";
}

/* "-ERR [code] text"; returns CMD_BAD so error paths are one line. */
static enum cmd_res __attribute__((format(printf, 3, 4)))
reply_err(struct session *s, const char *code, const char *fmt, ...)
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
	return CMD_BAD;
}

/* "+OK text"; returns CMD_REPLIED. */
static enum cmd_res __attribute__((format(printf, 2, 3)))
reply_ok(struct session *s, const char *fmt, ...)
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

/* The envelope of m in its punt's arena: sender, then recipients. */
static const char *
msg_sender(const struct session *s, const struct s_msg *m)
{
	return maildrop_sender(s->md, maildrop_msg(s->md,
	    (size_t)(m - s->msgs)));
}

/* The recipients of m this maildrop may see (maildrop_rcpt_next). */
static const char *
msg_rcpt_next(const struct session *s, const struct s_msg *m,
    const char *prev)
{
	return maildrop_rcpt_next(s->md, maildrop_msg(s->md,
	    (size_t)(m - s->msgs)), prev);
}

static struct punt *
msg_punt(const struct session *s, const struct s_msg *m)
{
	return maildrop_punt(s->md, m->sp);
}

static int
session_npunts(const struct session *s)
{
	return s->md != NULL ? maildrop_npunts(s->md) : 0;
}

/*
 * The one place a message number is parsed (docs/design.md §2.3): each way it
 * can be wrong gets its own reason.  0 with *idx set, or -1 with the
 * -ERR already sent.
 */
static int
session_msn(struct session *s, const char *arg, size_t *idx)
{
	const char	*p;
	uint64_t	 msn = 0;
	unsigned	 d;

	if (arg[0] == '+' || arg[0] == '-') {
		reply_err(s, NULL, "message number must not have a sign");
		return -1;
	}
	for (p = arg; *p != '\0'; p++) {
		if (*p < '0' || *p > '9') {
			reply_err(s, NULL, "message number must be digits");
			return -1;
		}
		d = (unsigned)(*p - '0');
		if (msn > (UINT64_MAX - d) / 10) {
			reply_err(s, NULL, "message number too large");
			return -1;
		}
		msn = msn * 10 + d;
	}
	if (p == arg) {
		reply_err(s, NULL, "message number missing");
		return -1;
	}
	if (msn == 0) {
		reply_err(s, NULL, "no message 0: numbers start at 1");
		return -1;
	}
	if (msn > s->nmsgs) {
		reply_err(s, NULL, "no message %" PRIu64 ": only %zu in maildrop",
		    msn, s->nmsgs);
		return -1;
	}
	if (s->msgs[msn - 1].deleted) {
		reply_err(s, NULL, "message %" PRIu64 " already deleted", msn);
		return -1;
	}
	*idx = (size_t)(msn - 1);
	return 0;
}

static const struct cmd *
cmd_find(const char *name)
{
	size_t	 i;

	for (i = 0; i < NITEMS(cmds); i++)
		if (strcasecmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

static enum cmd_res
session_dispatch(struct session *s, char *line)
{
	const struct cmd	*c;
	struct conn_args	 a;
	char			*kw, *rest;

	if ((kw = conn_keyword(line, &rest)) == NULL)
		return reply_err(s, NULL, "empty command");
	if ((c = cmd_find(kw)) == NULL)
		return reply_err(s, NULL, "unknown command");
	sb_slot_command(s->w->slot, c->name);
	if ((c->states & s->state) == 0)
		return reply_err(s, NULL, "%s not allowed %s", c->name,
		    s->state == ST_AUTH ? "before login" : "after login");
	if (conn_split(rest, (c->flags & CF_REST) != 0, &a) == -1 ||
	    a.argc < c->min_args || a.argc > c->max_args)
		return reply_err(s, NULL, "%s: wrong number of arguments",
		    c->name);
	return c->fn(s, &a);
}

/* ---- AUTHORIZATION ---- */

static enum cmd_res
cmd_user(struct session *s, struct conn_args *a)
{
	const char	*arg = a->argv[0], *plus;
	char		 left[POP3_LINE_MAX];
	size_t		 len;

	s->have_user = false;
	snprintf(s->user_arg, sizeof(s->user_arg), "%s", arg);
	if (strchr(arg, '@') != NULL) {
		if (util_addr_split(arg, s->user, s->host) == -1)
			return reply_err(s, NULL, "invalid user name");
	} else if ((plus = strrchr(arg, '+')) != NULL) {
		/* user+host: for clients that cannot send an '@'. */
		len = (size_t)(plus - arg);
		if (len >= sizeof(left))
			return reply_err(s, NULL, "invalid user name");
		memcpy(left, arg, len);
		left[len] = '\0';
		if (util_user_normalize(left, s->user) == -1 ||
		    util_host_normalize(plus + 1, s->host) == -1)
			return reply_err(s, NULL, "invalid user name");
	} else {
		if (util_host_normalize(arg, s->host) == -1)
			return reply_err(s, NULL, "invalid user name");
		s->user[0] = '\0';
	}
	if (s->user[0] != '\0')
		snprintf(s->maildrop, sizeof(s->maildrop), "%s@%s", s->user,
		    s->host);
	else
		snprintf(s->maildrop, sizeof(s->maildrop), "%s", s->host);
	s->have_user = true;
	/* The same answer for every well-formed name: no host oracle. */
	return reply_ok(s, "send PASS");
}

static void
release_punts(struct session *s)
{
	maildrop_close(s->md);
	s->md = NULL;
	free(s->msgs);
	s->msgs = NULL;
	s->nmsgs = 0;
}

static void
punt_skipped(void *arg, const char *punt, const char *reason)
{
	struct session	*s = arg;

	log_info("sid=%016" PRIx64 " punt=%s event=punt-skipped reason=%s",
	    s->sid, punt, reason);
}

/*
 * Lock every reachable punt (all or nothing) and take the merged
 * snapshot (maildrop.c).  0, 1 busy, or -1.
 */
static int
snapshot(struct session *s)
{
	const struct maildrop_msg *mm;
	enum store_res		 res;
	size_t			 i, n;

	res = maildrop_open(s->w->punts, s->host, s->user,
	    MAILDROP_LOCK | MAILDROP_ENV, punt_skipped, s, &s->md);
	if (res == STORE_BUSY)
		return 1;
	if (res != STORE_OK)
		return -1;
	if ((n = maildrop_count(s->md)) == 0)
		return 0;
	if ((s->msgs = calloc(n, sizeof(*s->msgs))) == NULL) {
		log_warn("session: calloc");
		return -1;
	}
	for (i = 0; i < n; i++) {
		mm = maildrop_msg(s->md, i);
		s->msgs[i].id = mm->id;
		s->msgs[i].arrival_us = mm->arrival_us;
		s->msgs[i].octets = mm->octets;
		s->msgs[i].flags = mm->flags;
		s->msgs[i].sp = mm->punt;
	}
	s->nmsgs = n;
	return 0;
}

static enum cmd_res
session_login(struct session *s)
{
	char		 names[CONFIG_PUNT_MAX * (CONFIG_NAME_MAX + 1) + 1];
	uint32_t	 used = 0;
	size_t		 off = 0;
	int		 i, rc;

	s->have_user = false;
	if ((rc = snapshot(s)) == 1) {
		log_info("sid=%016" PRIx64 " peer=%s event=in-use maildrop=%s",
		    s->sid, s->peer, s->maildrop);
		reply_err(s, "IN-USE", "maildrop in use");
		return CMD_REPLIED;
	}
	if (rc == -1) {
		release_punts(s);
		return CMD_SRVFAIL;
	}
	if (session_npunts(s) == 0) {
		release_punts(s);
		log_info("sid=%016" PRIx64 " peer=%s event=no-punt maildrop=%s",
		    s->sid, s->peer, s->maildrop);
		reply_err(s, "SYS/TEMP", "no spool reachable, try later");
		return CMD_REPLIED;
	}
	names[0] = '\0';
	for (i = 0; i < session_npunts(s); i++) {
		used |= 1u << maildrop_punt_cfi(s->md, i);
		off += (size_t)snprintf(names + off, sizeof(names) - off,
		    "%s%s", i > 0 ? "," : "",
		    punt_name(maildrop_punt(s->md, i)));
	}
	s->state = ST_TRANS;
	conn_set_deadline_ms(s->c, 0);	/* auth_timeout: logged in */
	s->login_us = util_now_us();
	slot_login(s->w->slot, s->maildrop, s->login_us, used);
	log_info("sid=%016" PRIx64 " peer=%s event=login maildrop=%s punts=%s"
	    " msgs=%zu auth=%s", s->sid, s->peer, s->maildrop, names, s->nmsgs,
	    s->auth_from_cache ? "cache" : "hash");
	return reply_ok(s, "maildrop has %zu messages", s->nmsgs);
}

/* ---- Auth throttle (issue 8): see throttle.h ---- */

static struct throttle *
session_throttle(struct session *s)
{
	return s->w->sb != NULL ? s->w->sb->throttle : NULL;
}

static void
session_limits(const struct config *cf, struct throttle_limits *lim)
{
	lim->source_budget = cf->auth_source_budget;
	lim->host_budget = cf->auth_host_budget;
	lim->window_s = cf->auth_budget_window_s;
}

/* The check throttle_admit charged was not a failure after all. */
static void
session_refund(struct session *s)
{
	struct throttle_limits	 lim;

	session_limits(s->cf, &lim);
	throttle_refund(session_throttle(s), &lim, s->peer, s->host,
	    (uint64_t)time(NULL));
}

/*
 * Log a failed or refused PASS for fail2ban-style tools: always the
 * source address; the name as typed and the host only for a real host,
 * since people type passwords into USER.  Never the password.
 */
static void
auth_log(struct session *s, const char *event, const char *reason)
{
	struct auth_host	 h;

	if (s->w->auth != NULL &&
	    auth_host_get(s->w->auth, s->host, &h) == AUTH_OK)
		log_info("sid=%016" PRIx64 " peer=%s event=%s%s%s user=%s"
		    " host=%s recent=%u", s->sid, s->peer, event,
		    reason != NULL ? " reason=" : "",
		    reason != NULL ? reason : "", s->user_arg, s->host,
		    s->thr_recent);
	else
		log_info("sid=%016" PRIx64 " peer=%s event=%s%s%s recent=%u",
		    s->sid, s->peer, event, reason != NULL ? " reason=" : "",
		    reason != NULL ? reason : "", s->thr_recent);
}

/*
 * The failure delay, then the answer: the same delay for a refused PASS
 * as for a wrong one at the same count, doubling per recent failure of
 * the source (auth_fail_delay_max_ms caps it).
 */
static enum cmd_res
auth_answer(struct session *s, const char *text)
{
	unsigned	 ms;

	if (conn_flush(s->c) == -1)
		return CMD_IOFAIL;
	ms = throttle_delay_ms(s->cf->auth_fail_delay_ms, s->thr_recent,
	    s->cf->auth_fail_delay_max_ms);
	if (conn_sleep_ms(s->c, ms) != CONN_OK) {
		s->how = END_KILLED;
		return CMD_IOFAIL;
	}
	reply_err(s, "AUTH", "%s", text);
	if (s->cf->auth_max_failures > 0 &&
	    s->auth_failures >= s->cf->auth_max_failures) {
		s->how = END_AUTHFAIL;
		return CMD_CLOSE;
	}
	return CMD_REPLIED;
}

/*
 * Over budget: refused without looking at the password (a right one
 * too), so guessing from this source stops costing us a hash and tells
 * the guesser nothing.  It counts toward auth_max_failures.
 */
static enum cmd_res
auth_throttled(struct session *s, enum throttle_verdict v)
{
	s->auth_failures++;
	if (s->w->sb != NULL)
		atomic_fetch_add(&s->w->sb->hdr->total_auth_throttled, 1);
	auth_log(s, "auth-throttled", v == THROTTLE_HOST ? "host" : "source");
	return auth_answer(s, "too many failed logins, try again later");
}

static enum cmd_res
auth_failed(struct session *s)
{
	s->auth_failures++;
	if (s->w->sb != NULL)
		atomic_fetch_add(&s->w->sb->hdr->total_auth_failures, 1);
	auth_log(s, "auth-fail", NULL);
	return auth_answer(s, "invalid user name or password");
}

/*
 * A repeat login within auth_cache_ttl is answered from the shared auth
 * cache (issue 5): a keyed MAC instead of an argon2id hash.  The host's
 * generation is part of the MAC, so a password change misses at once.
 */
static bool
auth_cached(struct session *s, const char *pw, uint64_t epoch)
{
	struct session_env	*w = s->w;
	struct auth_host	 h;

	if (w->sb == NULL || w->sb->authcache == NULL)
		return false;
	return auth_host_get(w->auth, s->host, &h) == AUTH_OK &&
	    authcache_check(w->sb->authcache, s->host, pw, h.generation,
	    epoch, (uint64_t)time(NULL));
}

/* session_login, and a successful one starts the LOGIN-DELAY clock. */
static enum cmd_res
pass_login(struct session *s)
{
	struct throttle_limits	 lim;
	enum cmd_res		 res;

	res = session_login(s);
	if (s->state == ST_TRANS && s->cf->login_delay_s > 0) {
		session_limits(s->cf, &lim);
		throttle_login_done(session_throttle(s), &lim, s->host,
		    (uint64_t)time(NULL));
	}
	return res;
}

static enum cmd_res
cmd_pass(struct session *s, struct conn_args *a)
{
	struct session_env	*w = s->w;
	char			*pw = a->argv[0];
	size_t			 pwlen = strlen(pw);
	struct throttle_limits	 lim;
	enum throttle_verdict	 tv;
	enum auth_res		 ar;
	unsigned		 wait;
	uint64_t		 epoch = 0, gen = 0;
	bool			 gated;

	if (!s->have_user) {
		auth_wipe(pw, pwlen);
		return reply_err(s, NULL, "USER first");
	}
	if (w->auth == NULL) {
		auth_wipe(pw, pwlen);
		s->have_user = false;
		reply_err(s, "SYS/TEMP", "authentication unavailable, try later");
		return CMD_REPLIED;
	}
	/*
	 * Throttle before the cache: a cache hit from an over-budget source
	 * would tell the guesser it found the password.  From here on one
	 * failure is charged; every way out but a wrong password refunds.
	 */
	session_limits(s->cf, &lim);
	tv = throttle_admit(session_throttle(s), &lim, s->peer, s->host,
	    (uint64_t)time(NULL), &s->thr_recent);
	if (tv != THROTTLE_ALLOW) {
		auth_wipe(pw, pwlen);
		s->have_user = false;
		return auth_throttled(s, tv);
	}
	/*
	 * RFC 2449 LOGIN-DELAY (off by default): too soon after the host's
	 * last login.  Answered before the password is looked at, right or
	 * wrong, so the answer is no password oracle, and not a failure.
	 */
	if (s->cf->login_delay_s > 0 && (wait = throttle_login_wait(
	    session_throttle(s), s->host, (uint64_t)time(NULL),
	    s->cf->login_delay_s)) > 0) {
		auth_wipe(pw, pwlen);
		session_refund(s);
		s->have_user = false;
		log_info("sid=%016" PRIx64 " peer=%s event=login-delay wait=%u",
		    s->sid, s->peer, wait);
		reply_err(s, "LOGIN-DELAY", "wait %u seconds between logins",
		    s->cf->login_delay_s);
		return CMD_REPLIED;
	}
	/* Read the epoch before hashing: a flush during the hash leaves
	 * the entry made below already stale. */
	if (w->sb != NULL)
		epoch = atomic_load(&w->sb->hdr->auth_cache_epoch);
	if (auth_cached(s, pw, epoch)) {
		auth_wipe(pw, pwlen);
		session_refund(s);
		s->auth_from_cache = true;
		return pass_login(s);
	}
	gated = w->sb != NULL && w->slot != NULL;
	if (gated && sb_auth_enter(w->sb, w->slot, s->cf->auth_max_parallel,
	    AUTH_WAIT_MS, throttle_source_id(session_throttle(s), s->peer)) ==
	    -1) {
		auth_wipe(pw, pwlen);
		session_refund(s);
		s->have_user = false;
		log_info("sid=%016" PRIx64 " peer=%s event=auth-busy",
		    s->sid, s->peer);
		reply_err(s, "SYS/TEMP", "server busy, try again later");
		return CMD_REPLIED;
	}
	ar = auth_verify(w->auth, s->host, pw, &gen);
	if (gated)
		sb_auth_leave(w->sb, w->slot);
	if (w->sb != NULL)
		atomic_fetch_add(&w->sb->hdr->total_auth_hashes, 1);
	if (ar != AUTH_FAIL)
		session_refund(s);
	if (ar == AUTH_OK && w->sb != NULL)
		authcache_put(w->sb->authcache, s->host, pw, gen, epoch,
		    (uint64_t)time(NULL));
	auth_wipe(pw, pwlen);
	switch (ar) {
	case AUTH_OK:
		return pass_login(s);
	case AUTH_FAIL:
		s->have_user = false;
		return auth_failed(s);
	case AUTH_TEMPFAIL:
		s->have_user = false;
		reply_err(s, "SYS/TEMP", "authentication unavailable, try later");
		return CMD_REPLIED;
	}
	return CMD_SRVFAIL;
}

static enum cmd_res
cmd_apop(struct session *s, struct conn_args *a)
{
	(void)a;
	return reply_err(s, NULL, "APOP not supported, use USER and PASS");
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

/*
 * Whether this connection's listener offers command c.  Every listener
 * offers every command today (tls is always CONFIG_TLS_NONE); the TLS
 * issue decides here, from s->w->listener, e.g. USER only after STLS on
 * a listener that requires it, and adds STLS to the table.
 */
static bool
capa_offered(const struct session *s, const struct cmd *c)
{
	(void)s;
	(void)c;
	return true;
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
	for (i = 0; i < NITEMS(cmds); i++)
		if (cmds[i].capa != NULL && capa_offered(s, &cmds[i]))
			conn_printf(s->c, "%s\r\n", cmds[i].capa);
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

/* ---- TRANSACTION ---- */

static enum cmd_res
cmd_stat(struct session *s, struct conn_args *a)
{
	uint64_t	 octets = 0;
	size_t		 i, count = 0;

	(void)a;
	for (i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted) {
			count++;
			octets += s->msgs[i].octets;
		}
	return reply_ok(s, "%zu %" PRIu64, count, octets);
}

static enum cmd_res
cmd_list(struct session *s, struct conn_args *a)
{
	uint64_t	 octets = 0;
	size_t		 i, idx, count = 0;

	if (a->argc == 1) {
		if (session_msn(s, a->argv[0], &idx) == -1)
			return CMD_BAD;
		return reply_ok(s, "%zu %" PRIu64, idx + 1,
		    s->msgs[idx].octets);
	}
	for (i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted) {
			count++;
			octets += s->msgs[i].octets;
		}
	reply_ok(s, "%zu messages (%" PRIu64 " octets)", count, octets);
	for (i = 0; i < s->nmsgs; i++)
		if (!s->msgs[i].deleted)
			conn_printf(s->c, "%zu %" PRIu64 "\r\n", i + 1,
			    s->msgs[i].octets);
	conn_ml_end(s->c);
	return CMD_REPLIED;
}

static enum cmd_res
cmd_uidl(struct session *s, struct conn_args *a)
{
	char		 uidl[STORE_UIDL_MAX];
	struct s_msg	*m;
	size_t		 i, idx;

	if (a->argc == 1) {
		if (session_msn(s, a->argv[0], &idx) == -1)
			return CMD_BAD;
		m = &s->msgs[idx];
		punt_uidl(msg_punt(s, m), m->id, uidl);
		return reply_ok(s, "%zu %s", idx + 1, uidl);
	}
	reply_ok(s, "unique-id listing follows");
	for (i = 0; i < s->nmsgs; i++) {
		m = &s->msgs[i];
		if (m->deleted)
			continue;
		punt_uidl(msg_punt(s, m), m->id, uidl);
		conn_printf(s->c, "%zu %s\r\n", i + 1, uidl);
	}
	conn_ml_end(s->c);
	return CMD_REPLIED;
}

static enum cmd_res
cmd_dele(struct session *s, struct conn_args *a)
{
	size_t	 idx;

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	s->msgs[idx].deleted = true;
	s->n_dele++;
	return reply_ok(s, "message %zu deleted", idx + 1);
}

static enum cmd_res
cmd_noop(struct session *s, struct conn_args *a)
{
	(void)s;
	(void)a;
	return CMD_OK;
}

static enum cmd_res
cmd_rset(struct session *s, struct conn_args *a)
{
	uint64_t	 octets = 0;
	size_t		 i;

	(void)a;
	/* RD stays: the message was read, whatever is deleted. */
	for (i = 0; i < s->nmsgs; i++) {
		s->msgs[i].deleted = false;
		octets += s->msgs[i].octets;
	}
	return reply_ok(s, "maildrop has %zu messages (%" PRIu64 " octets)",
	    s->nmsgs, octets);
}

/*
 * Open m's file.  0 with *fd, 1 if SMTP (or anyone) removed it, or -1
 * with the -ERR sent.
 */
static int
msg_open(struct session *s, const struct s_msg *m, int *fd)
{
	struct punt	*sp = msg_punt(s, m);
	struct punt_body b;

	if (!punt_health(sp)) {
		reply_err(s, "SYS/TEMP", "spool %s unavailable, try later",
		    punt_name(sp));
		return -1;
	}
	/*
	 * The transfer below sends from a file descriptor; a punt that
	 * answers with a stream (fd -1, a future remote punt) is refused
	 * until the connection layer's body transfer reads punt_body.
	 */
	switch (punt_open_body(sp, m->id, 0, &b, NULL)) {
	case STORE_OK:
		if (b.fd != -1) {
			*fd = b.fd;
			return 0;
		}
		punt_body_close(&b);
		break;
	case STORE_GONE:
		return 1;
	case STORE_BUSY:
	case STORE_TEMPFAIL:
		break;
	case STORE_PERMFAIL:
		reply_err(s, "SYS/PERM", "message unreadable");
		return -1;
	}
	reply_err(s, "SYS/TEMP", "message unavailable, try later");
	return -1;
}

/*
 * The message RETR and TOP send in place of one that SMTP delivered
 * while this session still listed it (docs/design.md §4.3).  RFC 1939 wants
 * LIST to give the exact size RETR will send, and clients (fetchmail)
 * compare the two, so the body is padded to the listed octets whenever
 * the notice fits in that size.  It is the same text every time within a
 * session (a client may match TOP against RETR), so its Date is the
 * login time and its Message-ID comes from the UIDL.  The text is
 * unstuffed, CRLF; *len is its size.  NULL if out of memory.
 */
static char *
dummy_build(struct session *s, const struct s_msg *m, size_t *len)
{
	const char	*sender = msg_sender(s, m);
	const char	*rcpt = msg_rcpt_next(s, m, NULL);
	char		 now[DATE_MAX], arr[DATE_MAX], uidl[STORE_UIDL_MAX];
	char		 me[256], to[UTIL_ADDR_MAX + 1], *buf, *p;
	size_t		 base, total, left, n;
	int		 rc;

	if (gethostname(me, sizeof(me)) == -1 || me[0] == '\0')
		snprintf(me, sizeof(me), "localhost");
	me[sizeof(me) - 1] = '\0';
	if (s->user[0] != '\0')
		snprintf(to, sizeof(to), "%s@%s", s->user, s->host);
	else if (rcpt != NULL)
		snprintf(to, sizeof(to), "%s@%s", rcpt, s->host);
	else
		snprintf(to, sizeof(to), "postmaster@%s", s->host);
	punt_uidl(msg_punt(s, m), m->id, uidl);
	util_rfc5322_date(s->login_us, now, sizeof(now));
	util_rfc5322_date(m->arrival_us, arr, sizeof(arr));
	rc = asprintf(&buf,
	    "Return-Path: <>\r\n"
	    "Date: %s\r\n"
	    "From: Mail Delivery System <postmaster@%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: Message already delivered by SMTP\r\n"
	    "Message-ID: <sdps-dummy.%s@%s>\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "Auto-Submitted: auto-generated\r\n"
	    "\r\n"
	    "The message %s from <%s>, which arrived %s,\r\n"
	    "was listed when this POP3 session began, but it has since\r\n"
	    "been delivered to you by SMTP and removed from the spool.\r\n"
	    "Nothing is lost; this notice stands in its place.\r\n",
	    now, me, to, uidl, me, uidl, sender, arr);
	if (rc < 0)
		return NULL;
	base = (size_t)rc;
	total = base;
	/* Padding lines cost 2..78 octets each; a remainder of 1 cannot
	 * be padded, nor can a listed size under the notice's own. */
	if (m->octets > base + 1 && m->octets - base < SIZE_MAX / 2)
		total = (size_t)m->octets;
	if (total > base) {
		if ((p = realloc(buf, total + 1)) == NULL) {
			free(buf);
			return NULL;
		}
		buf = p;
		p = buf + base;
		left = total - base;
		while (left > 0) {
			n = left > 78 ? (left - 78 == 1 ? 77 : 78) : left;
			memset(p, 'x', n - 2);
			if (n - 2 >= 8)
				memcpy(p, "padding ", 8);
			memcpy(p + n - 2, "\r\n", 2);
			p += n;
			left -= n;
		}
		*p = '\0';
	}
	*len = total;
	return buf;
}

/*
 * TOP's cut of a message: the header block, the blank line, then body
 * lines while any are left.  top_feed returns how many octets of the
 * chunk to send; t->done is set once the cut is complete.
 */
struct top_cut {
	uint64_t	 body_left;
	bool		 in_header;
	bool		 line_empty;
	bool		 done;
};

static void
top_init(struct top_cut *t, uint64_t lines)
{
	t->body_left = lines;
	t->in_header = true;
	t->line_empty = true;
	t->done = false;
}

static size_t
top_feed(struct top_cut *t, const char *p, size_t len)
{
	size_t	 i;

	for (i = 0; i < len && !t->done; i++) {
		if (p[i] == '\n') {
			if (t->in_header) {
				if (t->line_empty) {
					t->in_header = false;
					t->done = t->body_left == 0;
				}
			} else if (--t->body_left == 0)
				t->done = true;
			t->line_empty = true;
		} else if (p[i] != '\r')
			t->line_empty = false;
	}
	return i;
}

/* Send the dummy for m, whole (RETR) or cut (TOP, lines >= 0). */
static enum cmd_res
send_dummy(struct session *s, const struct s_msg *m, bool top,
    uint64_t lines)
{
	struct top_cut	 t;
	char		*buf;
	size_t		 len;

	if ((buf = dummy_build(s, m, &len)) == NULL) {
		log_warn("session: dummy message");
		return CMD_SRVFAIL;
	}
	if (top) {
		top_init(&t, lines);
		len = top_feed(&t, buf, len);
		reply_ok(s, "top of message follows");
	} else
		reply_ok(s, "%zu octets", len);
	conn_ml_text(s->c, buf, len);
	conn_ml_end(s->c);
	free(buf);
	log_info("sid=%016" PRIx64 " event=dummy punt=%s id=%" PRIu64,
	    s->sid, punt_name(msg_punt(s, m)), m->id);
	return conn_werr(s->c) == CONN_OK ? CMD_REPLIED : CMD_IOFAIL;
}

static enum cmd_res
cmd_retr(struct session *s, struct conn_args *a)
{
	struct s_msg	*m;
	struct stat	 sb;
	size_t		 idx;
	int		 fd, rc;

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	m = &s->msgs[idx];
	if ((rc = msg_open(s, m, &fd)) == -1)
		return CMD_REPLIED;
	if (rc == 1)
		return send_dummy(s, m, false, 0);
	if (fstat(fd, &sb) == -1) {
		log_warn("session: fstat");
		close(fd);
		reply_err(s, "SYS/TEMP", "message unavailable, try later");
		return CMD_REPLIED;
	}
	conn_cork(s->c, true);
	reply_ok(s, "%" PRIu64 " octets", m->octets);
	conn_printf(s->c, "Return-Path: <%s>\r\n", msg_sender(s, m));
	/* The stored file is already CRLF and dot-stuffed. */
	rc = conn_send_file(s->c, fd, 0, (size_t)sb.st_size);
	close(fd);
	if (rc == -1)
		return CMD_IOFAIL;
	conn_ml_end(s->c);
	conn_cork(s->c, false);
	if (conn_werr(s->c) != CONN_OK)
		return CMD_IOFAIL;
	/* Handed to the kernel in full: RD (docs/design.md §4.4). */
	m->read_now = true;
	s->n_retr++;
	if (s->w->sb != NULL)
		atomic_fetch_add(&s->w->sb->hdr->total_retrieved, 1);
	return CMD_REPLIED;
}

static enum cmd_res
cmd_top(struct session *s, struct conn_args *a)
{
	struct top_cut	 t;
	struct s_msg	*m;
	char		*buf;
	uint64_t	 lines;
	ssize_t		 n;
	size_t		 idx, out;
	int		 fd, rc;
	char		 last = '\n';

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	if (util_parse_u64(a->argv[1], UINT64_MAX, &lines) == -1)
		return reply_err(s, NULL, "line count must be digits");
	m = &s->msgs[idx];
	if ((rc = msg_open(s, m, &fd)) == -1)
		return CMD_REPLIED;
	s->n_top++;
	if (rc == 1)
		return send_dummy(s, m, true, lines);
	if ((buf = malloc(TOP_CHUNK)) == NULL) {
		close(fd);
		return CMD_SRVFAIL;
	}
	reply_ok(s, "top of message follows");
	conn_printf(s->c, "Return-Path: <%s>\r\n", msg_sender(s, m));
	top_init(&t, lines);
	while (!t.done) {
		if ((n = read(fd, buf, TOP_CHUNK)) == -1) {
			if (errno == EINTR)
				continue;
			/* Mid-reply: the only honest way out is to drop. */
			log_warn("session: top: read");
			free(buf);
			close(fd);
			return CMD_IOFAIL;
		}
		if (n == 0)
			break;
		out = top_feed(&t, buf, (size_t)n);
		if (out > 0) {
			last = buf[out - 1];
			if (conn_write(s->c, buf, out) == -1)
				break;
		}
	}
	free(buf);
	close(fd);
	if (last != '\n')
		conn_write(s->c, "\r\n", 2);
	conn_ml_end(s->c);
	return conn_werr(s->c) == CONN_OK ? CMD_REPLIED : CMD_IOFAIL;
}

static enum cmd_res
cmd_env(struct session *s, struct conn_args *a)
{
	char		 uidl[STORE_UIDL_MAX], date[DATE_MAX], line[512];
	const char	*sender, *rcpt;
	struct s_msg	*m;
	size_t		 idx;
	int		 n;

	if (session_msn(s, a->argv[0], &idx) == -1)
		return CMD_BAD;
	m = &s->msgs[idx];
	/*
	 * Always a multi-line +OK for a listed number, also after SMTP took
	 * the message: fetchmail never checks for -ERR here, so the answer
	 * comes from the snapshot.
	 */
	reply_ok(s, "envelope follows");
	conn_ml_line(s->c, "RD",
	    (m->flags & STORE_F_READ) != 0 || m->read_now ? 2 : 0);
	punt_uidl(msg_punt(s, m), m->id, uidl);
	util_rfc5322_date(m->arrival_us, date, sizeof(date));
	n = snprintf(line, sizeof(line), "%s %s %s",
	    punt_name(msg_punt(s, m)), uidl, date);
	conn_ml_line(s->c, line, (size_t)n);
	sender = msg_sender(s, m);
	conn_ml_line(s->c, sender, strlen(sender));
	for (rcpt = msg_rcpt_next(s, m, NULL); rcpt != NULL;
	    rcpt = msg_rcpt_next(s, m, rcpt)) {
		n = snprintf(line, sizeof(line), "%s@%s", rcpt, s->host);
		if (n > 0 && (size_t)n < sizeof(line))
			conn_ml_line(s->c, line, (size_t)n);
	}
	conn_ml_end(s->c);
	return CMD_REPLIED;
}

/* ---- UPDATE and the end of a session ---- */

/*
 * Commit the RD flags of messages sent in full, one commit per punt.
 * Runs before the locks go, however the session ends, so the next
 * session sees them; a session that only looked writes nothing.
 */
static void
commit_rd(struct session *s)
{
	uint64_t	*ids;
	size_t		 i, n;
	int		 p;

	if (s->nmsgs == 0 ||
	    (ids = calloc(s->nmsgs, sizeof(*ids))) == NULL)
		return;
	for (p = 0; p < session_npunts(s); p++) {
		n = 0;
		for (i = 0; i < s->nmsgs; i++)
			if (s->msgs[i].sp == p && s->msgs[i].read_now &&
			    (s->msgs[i].flags & STORE_F_READ) == 0)
				ids[n++] = s->msgs[i].id;
		if (n == 0)
			continue;
		if (punt_mark_read(maildrop_punt(s->md, p), ids, n) != STORE_OK) {
			log_warnx("sid=%016" PRIx64 " punt=%s event=rd-failed"
			    " msgs=%zu", s->sid,
			    punt_name(maildrop_punt(s->md, p)), n);
			continue;
		}
		for (i = 0; i < s->nmsgs; i++)
			if (s->msgs[i].sp == p && s->msgs[i].read_now)
				s->msgs[i].flags |= STORE_F_READ;
	}
	free(ids);
}

/* RFC 1939 §6: remove the deleted messages.  Returns how many remain. */
static size_t
update_remove(struct session *s)
{
	uint64_t	*ids;
	size_t		 i, n, failed = 0;
	int		 p;

	if (s->nmsgs == 0)
		return 0;
	if ((ids = calloc(s->nmsgs, sizeof(*ids))) == NULL) {
		for (i = 0; i < s->nmsgs; i++)
			failed += s->msgs[i].deleted;
		return failed;
	}
	for (p = 0; p < session_npunts(s); p++) {
		n = 0;
		for (i = 0; i < s->nmsgs; i++)
			if (s->msgs[i].sp == p && s->msgs[i].deleted)
				ids[n++] = s->msgs[i].id;
		if (n == 0)
			continue;
		if (punt_remove(maildrop_punt(s->md, p), ids, n,
		    s->user[0] != '\0' ? s->user : NULL) != STORE_OK) {
			log_warnx("sid=%016" PRIx64 " punt=%s event=remove-failed"
			    " msgs=%zu", s->sid,
			    punt_name(maildrop_punt(s->md, p)), n);
			failed += n;
			continue;
		}
		s->n_removed += n;
		if (s->w->sb != NULL)
			atomic_fetch_add(&s->w->sb->hdr->total_deleted, n);
	}
	free(ids);
	return failed;
}

static enum cmd_res
cmd_quit(struct session *s, struct conn_args *a)
{
	size_t	 failed;

	(void)a;
	if (s->state == ST_AUTH) {
		s->how = END_QUIT;
		reply_ok(s, "sdps signing off");
		return CMD_CLOSE;
	}
	slot_state(s->w->slot, SB_UPDATE);
	commit_rd(s);
	if ((failed = update_remove(s)) > 0) {
		s->how = END_UPDATE_FAILED;
		reply_err(s, "SYS/TEMP", "%zu messages not removed", failed);
	} else {
		s->how = END_QUIT;
		reply_ok(s, "sdps signing off (%" PRIu64 " messages removed)",
		    s->n_removed);
	}
	return CMD_CLOSE;
}

static enum end_how
how_from_io(enum conn_res r)
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
	commit_rd(s);
	release_punts(s);
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
	char		*line;
	size_t		 len = 0;

	r = conn_read_line(s->c, &line, &len);
	switch (r) {
	case CONN_OK:
		res = session_dispatch(s, line);
		/* The line may have held a password. */
		explicit_bzero(line, len);
		break;
	case CONN_TOO_LONG:
		res = reply_err(s, NULL, "line too long");
		break;
	case CONN_NUL:
		res = reply_err(s, NULL, "NUL octet in command");
		break;
	case CONN_EOF:
	case CONN_TIMEOUT:
	case CONN_KILLED:
	case CONN_ERR:
		/* RFC 1939 §3: an autologout closes without a reply. */
		s->how = how_from_io(r);
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
			s->how = how_from_io(conn_werr(s->c));
		break;
	case CMD_SRVFAIL:
		log_warnx("sid=%016" PRIx64 " event=server-failure", s->sid);
		reply_err(s, "SYS/TEMP", "internal error, try later");
		break;
	}
	session_counters(s);
	if (s->how == END_NONE && conn_werr(s->c) != CONN_OK)
		s->how = how_from_io(conn_werr(s->c));
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
	slot_connect(w->slot, SB_AUTH, s->sid, s->peer, now_us);
	log_info("sid=%016" PRIx64 " peer=%s event=connect", s->sid, s->peer);
	conn_write(s->c, "+OK sdps ready\r\n", 16);
	/* Issue 8: the whole AUTHORIZATION state has a deadline; expiry
	 * is an autologout (no reply).  session_login lifts it. */
	conn_set_deadline_ms(s->c, (uint64_t)s->cf->auth_timeout_s * 1000);
	while (session_step(s))
		;
	session_end(s);
	conn_free(s->c);
	free(s);
}
