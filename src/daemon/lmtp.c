/*
 * lmtp: one LMTP session (RFC 2033) in an sdpsd worker: the MTA hands mail
 * over, and each message is stored once per recipient host, durably,
 * before the per-recipient replies go out.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/config.h"
#include "sdps/deliver.h"
#include "sdps/fault.h"
#include "sdps/lmtp.h"
#include "sdps/log.h"
#include "sdps/conn.h"
#include "sdps/scoreboard.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/wire.h"
#include "sdps/session_env.h"

/*
 * RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
 * Commands get the same limit: §4.5.3.1.4 allows 512, but SIZE= and
 * BODY= may lengthen MAIL (RFC 1869 §4), and one reader serves both.
 */
#define LMTP_LINE_MAX	1000
/* RFC 5321 §4.5.3.1.8 asks for at least 100. */
#define LMTP_RCPT_MAX	1000
#define LMTP_DOMAIN	"sdps"

struct l_rcpt {
	char	 user[UTIL_USER_MAX + 1];
	int	 host;		/* index into lmtp.hosts */
};

/* A recipient host of the transaction: stored once, for all its users. */
struct l_host {
	char	  name[UTIL_HOST_MAX + 1];
	char	**users;	/* deduplicated, for the envelope */
	size_t	  nusers;
	enum store_res res;	/* of the store after DATA */
	int	  punt;
	uint64_t  id;
};

struct lmtp {
	struct session_env *w;
	struct conn *c;
	uint64_t	 sid;
	char		 peer[SB_PEER_MAX];
	char		 me[256];
	bool		 lhlo;
	bool		 mail;		/* MAIL accepted: a transaction is open */
	char		 sender[UTIL_SENDER_MAX + 1];
	struct l_rcpt	*rcpts;
	size_t		 nrcpts;
	struct l_host	*hosts;
	size_t		 nhosts;
	unsigned	 bad;		/* bad commands, for max_bad_commands */
	uint64_t	 msgs;		/* stored this session, per host copy */
	uint64_t	 txns;
};

/* How the DATA phase ended, before storing. */
enum data_res {
	DATA_OK,
	DATA_TOO_LONG,	/* a line over LMTP_LINE_MAX */
	DATA_NUL,
	DATA_BARE,	/* a bare LF or bare CR */
	DATA_WIRE,	/* wire_feed/wire_finish refused: see wres */
	DATA_SPOOL,	/* writing the tmp file failed: see serrno */
	DATA_IOFAIL	/* connection gone: no reply */
};

/*
 * DATA goes to a tmp file of one punt as it arrives, through the wire
 * conversion's buffer, drained to the file whenever it holds this much:
 * a worker's memory does not grow with the message (issue 8, finding 5).
 */
#define LMTP_DATA_BUF	(64 * 1024)

/*
 * The message of one DATA phase, streaming into a local punt's tmp/, or,
 * when the punt chosen is remote, into the front end's RUN_DIR/lmtp-tmp/
 * (deliver_tmp_open).  That file needs no fsync: it only feeds DELIVER,
 * and the punt makes its copy durable before it answers +OK; 250 comes
 * only after that (a crash here before it loses nothing acknowledged).
 */
struct l_data {
	struct wire	 w;
	enum wire_res	 wres;
	int		 fd;		/* -1: no punt took it, only read */
	int		 punt;		/* the punt chosen first */
	bool		 fe_tmp;	/* path is the front end's, not punt's */
	char		 path[PATH_MAX];
	int		 serrno;
};

static int	lmtp_reply(struct lmtp *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static int
lmtp_reply(struct lmtp *l, const char *fmt, ...)
{
	char	 buf[512];
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n > sizeof(buf) - 3)
		n = (int)(sizeof(buf) - 3);
	memcpy(buf + n, "\r\n", 2);
	return conn_write(l->c, buf, (size_t)n + 2);
}

static void
txn_reset(struct lmtp *l)
{
	size_t	 i, j;

	for (i = 0; i < l->nhosts; i++) {
		for (j = 0; j < l->hosts[i].nusers; j++)
			free(l->hosts[i].users[j]);
		free(l->hosts[i].users);
	}
	free(l->hosts);
	free(l->rcpts);
	l->hosts = NULL;
	l->rcpts = NULL;
	l->nhosts = l->nrcpts = 0;
	l->mail = false;
	l->sender[0] = '\0';
}

/*
 * The auth store: the worker opened it at start, but it may have been
 * unavailable then.  Retried here so LMTP recovers without a restart.
 */
static struct auth *
lmtp_auth(struct lmtp *l)
{
	char	 err[256];

	if (l->w->auth == NULL)
		l->w->auth = auth_open(l->w->cf->auth_path,
		    l->w->cf->auth_map_size, false, l->w->cf->hash_cost, err,
		    sizeof(err));
	return l->w->auth;
}

/*
 * "FROM:<path> params" / "TO:<path> params": check the keyword, cut out
 * the path (brackets removed, a source route dropped per RFC 5321 §4.1.2)
 * and return it; *params points at what follows.  NULL on bad syntax.
 */
static char *
parse_path(char *arg, const char *kw, char **params)
{
	size_t	 kwlen = strlen(kw);
	char	*p, *end, *colon;

	if (arg == NULL || strncasecmp(arg, kw, kwlen) != 0)
		return NULL;
	p = arg + kwlen;
	while (*p == ' ')	/* "MAIL FROM: <a@b>" is common in practice */
		p++;
	if (*p != '<')
		return NULL;
	if ((end = strchr(p, '>')) == NULL)
		return NULL;
	*end = '\0';
	p++;
	if (*p == '@' && (colon = strchr(p, ':')) != NULL)
		p = colon + 1;
	end++;
	if (*end != '\0' && *end != ' ')
		return NULL;
	while (*end == ' ')
		end++;
	*params = end;
	return p;
}

static int
cmd_lhlo(struct lmtp *l, char *arg)
{
	if (arg == NULL || *arg == '\0')
		return lmtp_reply(l, "501 5.5.4 LHLO needs a domain");
	txn_reset(l);
	l->lhlo = true;
	return lmtp_reply(l, "250-%s\r\n250-PIPELINING\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE %" PRIu64,
	    l->me, l->w->cf->max_message_octets);
}

static int
cmd_mail(struct lmtp *l, char *arg)
{
	char		*path, *params, *tok, *save;
	uint64_t	 size;

	if (!l->lhlo)
		return lmtp_reply(l, "503 5.5.1 LHLO first");
	if (l->mail)
		return lmtp_reply(l, "503 5.5.1 nested MAIL command");
	if ((path = parse_path(arg, "FROM:", &params)) == NULL)
		return lmtp_reply(l, "501 5.5.4 syntax: MAIL FROM:<address>");
	for (tok = strtok_r(params, " ", &save); tok != NULL;
	    tok = strtok_r(NULL, " ", &save)) {
		if (strncasecmp(tok, "SIZE=", 5) == 0) {
			if (util_parse_u64(tok + 5, UINT64_MAX, &size) == -1)
				return lmtp_reply(l, "501 5.5.4 bad SIZE");
			/* RFC 1870 §6.1: refuse early what cannot fit. */
			if (size > l->w->cf->max_message_octets)
				return lmtp_reply(l, "552 5.3.4 message size "
				    "exceeds fixed limit of %" PRIu64,
				    l->w->cf->max_message_octets);
		} else if (strncasecmp(tok, "BODY=", 5) == 0) {
			if (strcasecmp(tok + 5, "7BIT") != 0 &&
			    strcasecmp(tok + 5, "8BITMIME") != 0)
				return lmtp_reply(l, "501 5.5.4 bad BODY");
		} else
			return lmtp_reply(l, "555 5.5.4 unsupported "
			    "parameter");
	}
	if (util_sender_normalize(path, l->sender) == -1) {
		l->sender[0] = '\0';
		return lmtp_reply(l, "501 5.1.7 bad sender address");
	}
	l->mail = true;
	return lmtp_reply(l, "250 2.1.0 sender OK");
}

/* Index of host in the transaction, added with user (once) if new. */
static int
host_add(struct lmtp *l, const char *host, const char *user)
{
	struct l_host	*h;
	char		**u;
	size_t		 i, j;

	for (i = 0; i < l->nhosts; i++)
		if (strcmp(l->hosts[i].name, host) == 0)
			break;
	if (i == l->nhosts) {
		h = reallocarray(l->hosts, l->nhosts + 1, sizeof(*h));
		if (h == NULL)
			return -1;
		l->hosts = h;
		memset(&h[i], 0, sizeof(h[i]));
		strcpy(h[i].name, host);
		l->nhosts++;
	}
	h = &l->hosts[i];
	for (j = 0; j < h->nusers; j++)
		if (strcmp(h->users[j], user) == 0)
			return (int)i;
	if ((u = reallocarray(h->users, h->nusers + 1, sizeof(*u))) == NULL)
		return -1;
	h->users = u;
	if ((h->users[h->nusers] = strdup(user)) == NULL)
		return -1;
	h->nusers++;
	return (int)i;
}

static int
cmd_rcpt(struct lmtp *l, char *arg)
{
	struct auth	*a;
	struct auth_host ah;
	struct l_rcpt	*r;
	char		*path, *params, user[UTIL_USER_MAX + 1];
	char		 host[UTIL_HOST_MAX + 1];
	int		 hi;

	if (!l->mail)
		return lmtp_reply(l, "503 5.5.1 MAIL first");
	if ((path = parse_path(arg, "TO:", &params)) == NULL)
		return lmtp_reply(l, "501 5.5.4 syntax: RCPT TO:<address>");
	if (*params != '\0')
		return lmtp_reply(l, "555 5.5.4 unsupported parameter");
	if (util_addr_split(path, user, host) == -1)
		return lmtp_reply(l, "501 5.1.3 bad recipient address");
	if (l->nrcpts >= LMTP_RCPT_MAX)
		return lmtp_reply(l, "452 4.5.3 too many recipients");
	if ((a = lmtp_auth(l)) == NULL)
		return lmtp_reply(l, "451 4.3.0 host table unavailable");
	switch (auth_host_get(a, host, &ah)) {
	case AUTH_OK:
		break;
	case AUTH_FAIL:
		/*
		 * A bad command for max_bad_commands (issue 8, finding 10):
		 * a dictionary attack on host names is cut off like one on
		 * commands, and a real MTA rarely sends many.
		 */
		l->bad++;
		return lmtp_reply(l, "550 5.1.1 <%s@%s>: no such host here",
		    user, host);
	case AUTH_TEMPFAIL:
		return lmtp_reply(l, "451 4.3.0 host table unavailable");
	}
	if ((r = reallocarray(l->rcpts, l->nrcpts + 1, sizeof(*r))) == NULL)
		return lmtp_reply(l, "451 4.3.0 out of memory");
	l->rcpts = r;
	if ((hi = host_add(l, host, user)) == -1)
		return lmtp_reply(l, "451 4.3.0 out of memory");
	strcpy(r[l->nrcpts].user, user);
	r[l->nrcpts].host = hi;
	l->nrcpts++;
	return lmtp_reply(l, "250 2.1.5 recipient OK");
}

/* Write what the conversion holds to the tmp file; 0 or -1. */
static int
data_drain(struct l_data *d)
{
	if (d->fd != -1 && d->w.len > 0) {
		if (util_write_all(d->fd, d->w.buf, d->w.len) == -1) {
			d->serrno = errno;
			return -1;
		}
		fault_point("lmtp.data.written");
	}
	wire_drain(&d->w);
	return 0;
}

/*
 * Read the dot-terminated text (RFC 5321 §4.5.2: a leading dot is
 * removed) and rebuild the message with CRLF ends for wire_feed, so the
 * stored bytes are what sdps-deliver would store for the same message;
 * the converted text goes to d->fd every LMTP_DATA_BUF octets.
 *
 * Only CRLF "." CRLF ends the text (RFC 5321 §4.1.1.4).  A bare LF or
 * bare CR anywhere refuses the message (the answer to SMTP smuggling:
 * "\n.\n", "\r\n.\n" and "\n.\r\n" are text, not an end, so nothing
 * after them runs as a command, and a message that another MTA might
 * have split there is not stored either).  After a problem the rest is
 * read and dropped, up to the real final dot: the replies can only go
 * out after it.
 */
static enum data_res
read_data(struct lmtp *l, struct l_data *d)
{
	enum data_res	 dres = DATA_OK;
	enum conn_res	 r;
	char		*line;
	size_t		 len;
	bool		 crlf, prev_crlf = true;	/* DATA's own CRLF */

	for (;;) {
		line = NULL;
		len = 0;
		switch ((r = conn_read_line(l->c, &line, &len))) {
		case CONN_OK:
			break;
		case CONN_TOO_LONG:
			if (dres == DATA_OK)
				dres = DATA_TOO_LONG;
			line = NULL;
			break;
		case CONN_NUL:
			if (dres == DATA_OK)
				dres = DATA_NUL;
			line = NULL;
			break;
		case CONN_EOF:
		case CONN_TIMEOUT:
		case CONN_KILLED:
		case CONN_ERR:
			log_info("sid=%016" PRIx64 " peer=%s event=lmtp-drop "
			    "in=data why=%s", l->sid, l->peer,
			    conn_res_name(r));
			return DATA_IOFAIL;
		}
		/* An unknown line end is taken as bare: never an end. */
		crlf = conn_last_eol(l->c) == CONN_EOL_CRLF;
		if (line != NULL && crlf && prev_crlf && len == 1 &&
		    line[0] == '.')
			break;
		prev_crlf = crlf;
		if (line == NULL)
			continue;
		if (dres == DATA_OK && (!crlf || memchr(line, '\r', len) !=
		    NULL))
			dres = DATA_BARE;
		if (dres != DATA_OK)
			continue;
		if (line[0] == '.') {
			line++;
			len--;
		}
		if ((d->wres = wire_feed(&d->w, line, len)) != WIRE_OK ||
		    (d->wres = wire_feed(&d->w, "\r\n", 2)) != WIRE_OK)
			dres = DATA_WIRE;
		else if (d->w.len >= LMTP_DATA_BUF && data_drain(d) == -1)
			dres = DATA_SPOOL;
	}
	if (dres == DATA_OK && (d->wres = wire_finish(&d->w)) != WIRE_OK)
		dres = DATA_WIRE;
	if (dres == DATA_OK && (data_drain(d) == -1 ||
	    (d->fd != -1 && !d->fe_tmp && fsync(d->fd) == -1)))
		dres = DATA_SPOOL;
	if (dres == DATA_SPOOL && d->serrno == 0)
		d->serrno = errno;
	if (dres == DATA_OK)
		fault_point("lmtp.data.synced");
	return dres;
}

/*
 * Store the message (in d's tmp file) once per host; host->res says how
 * it went.  On a local punt every host's copy goes to the file's own
 * punt in one commit (the last copy takes the file's name by rename, the
 * others are links), and commits of concurrent sessions on that punt
 * join it (store_put_batch); a copy that fails there tries the other
 * punts in a random order of its own (deliver.c).  When the punt chosen
 * is remote each host's copy is one DELIVER through its link (via
 * "deliver" in the log), the chosen punt first, then the others.
 */
static void
lmtp_store(struct lmtp *l, const struct l_data *d)
{
	const struct config	*cf = l->w->cf;
	struct store_envelope	*env;
	struct store_item	*it;
	struct l_host		*h;
	char			 why[1024];
	int			*idx;
	size_t			 i;
	static const char *const via_name[] = { "copy", "link", "rename" };

	for (i = 0; i < l->nhosts; i++)
		l->hosts[i].res = STORE_TEMPFAIL;
	if (d->fd == -1)
		return;
	env = calloc(l->nhosts, sizeof(*env));
	it = calloc(l->nhosts, sizeof(*it));
	idx = calloc(l->nhosts, sizeof(*idx));
	if (env == NULL || it == NULL || idx == NULL) {
		log_warn("sid=%016" PRIx64 " event=lmtp-tempfail", l->sid);
		goto out;
	}
	for (i = 0; i < l->nhosts; i++) {
		h = &l->hosts[i];
		env[i].host = h->name;
		env[i].sender = l->sender;
		env[i].rcpts = (const char *const *)h->users;
		env[i].nrcpts = h->nusers;
		it[i].env = &env[i];
	}
	why[0] = '\0';
	deliver_store_files(l->w->punts, d->punt, it, idx, l->nhosts, d->path,
	    d->fd, d->w.drained, d->w.body_octets, why, sizeof(why));
	for (i = 0; i < l->nhosts; i++) {
		h = &l->hosts[i];
		h->res = it[i].res;
		h->punt = idx[i];
		h->id = it[i].id;
		if (h->res == STORE_OK) {
			l->msgs++;
			atomic_fetch_add(&l->w->sb->hdr->total_lmtp_msgs, 1);
			log_info("sid=%016" PRIx64 " peer=%s event=lmtp-stored "
			    "host=%s punt=%s id=%" PRIu64 " rcpts=%zu "
			    "octets=%" PRIu64 " via=%s commit=%" PRIu64
			    " batch=%u", l->sid, l->peer, h->name,
			    cf->punts[h->punt].name, h->id, h->nusers,
			    d->w.body_octets,
			    cf->punts[h->punt].address[0] != '\0' ?
			    "deliver" : via_name[it[i].via],
			    it[i].commit, it[i].batch);
			fault_point("lmtp.host.stored");
		} else
			log_warnx("sid=%016" PRIx64 " peer=%s "
			    "event=lmtp-tempfail host=%s why=\"%s\"", l->sid,
			    l->peer, h->name, why[0] != '\0' ? why :
			    "no punt available");
	}
 out:
	free(env);
	free(it);
	free(idx);
}

/*
 * The tmp file goes in every case (unless the last host's copy took its
 * name): the stored copies have their own names.
 */
static void
data_end(struct l_data *d)
{
	if (d->fd != -1) {
		close(d->fd);
		unlink(d->path);
		d->fd = -1;
	}
	wire_free(&d->w);
}

/* The reply to every recipient for a message read with dres, or NULL
 * when it is to be stored. */
static const char *
data_refusal(struct lmtp *l, const struct l_data *d, enum data_res dres)
{
	const char	*fail = NULL;

	switch (dres) {
	case DATA_OK:
		break;
	case DATA_TOO_LONG:
		fail = "500 5.5.2 message has a line over 1000 octets "
		    "(RFC 5321 4.5.3.1.6)";
		break;
	case DATA_NUL:
		fail = "554 5.6.0 message contains a NUL octet";
		break;
	case DATA_BARE:
		fail = "554 5.6.0 message contains a bare LF or CR "
		    "(RFC 5321 2.3.8)";
		break;
	case DATA_SPOOL:
		log_warnx("sid=%016" PRIx64 " peer=%s event=lmtp-tempfail "
		    "punt=%s why=\"tmp file: %s\"", l->sid, l->peer,
		    l->w->cf->punts[d->punt].name, strerror(d->serrno));
		fail = "451 4.3.0 temporary storage failure, try again later";
		break;
	case DATA_WIRE:
		switch (d->wres) {
		case WIRE_TOO_BIG:
			fail = "552 5.3.4 message exceeds the size limit";
			break;
		case WIRE_NOMEM:
			fail = "451 4.3.0 out of memory";
			break;
		case WIRE_NUL:
			fail = "554 5.6.0 message contains a NUL octet";
			break;
		case WIRE_NO_HEADER:
			fail = "554 5.6.0 message does not start with a "
			    "header field";
			break;
		case WIRE_OK:
			break;
		}
		break;
	case DATA_IOFAIL:
		break;
	}
	return fail;
}

/* RFC 2033 §4.2: after the final dot, one reply per accepted RCPT. */
static int
data_replies(struct lmtp *l, const char *fail)
{
	struct l_host	*h;
	size_t		 i;
	int		 rc = 0;

	for (i = 0; i < l->nrcpts && rc == 0; i++) {
		h = &l->hosts[l->rcpts[i].host];
		if (fail != NULL)
			rc = lmtp_reply(l, "%s", fail);
		else if (h->res == STORE_OK)
			rc = lmtp_reply(l, "250 2.0.0 <%s@%s> stored as %s:%"
			    PRIu64, l->rcpts[i].user, h->name,
			    l->w->cf->punts[h->punt].name, h->id);
		else
			rc = lmtp_reply(l, "451 4.3.0 <%s@%s> temporary "
			    "storage failure, try again later",
			    l->rcpts[i].user, h->name);
	}
	return rc;
}

static int
cmd_data(struct lmtp *l, char *arg)
{
	struct l_data	 d;
	enum data_res	 dres;
	const char	*fail = NULL;
	char		 why[1024];
	int		 rc;

	if (arg != NULL && *arg != '\0')
		return lmtp_reply(l, "501 5.5.4 DATA takes no argument");
	if (!l->mail)
		return lmtp_reply(l, "503 5.5.1 MAIL first");
	if (l->nrcpts == 0)
		return lmtp_reply(l, "503 5.5.1 no valid recipients");
	memset(&d, 0, sizeof(d));
	d.wres = WIRE_OK;
	why[0] = '\0';
	/*
	 * No punt for the file: the text is still read (and checked), and
	 * every recipient gets 451 after the dot, as when no punt takes a
	 * finished message.
	 */
	if ((d.fd = deliver_tmp_open(l->w->punts, l->w->cf->run_dir, &d.punt,
	    d.path, sizeof(d.path), &d.fe_tmp, why, sizeof(why))) == -1)
		log_warnx("sid=%016" PRIx64 " peer=%s event=lmtp-nospool "
		    "why=\"%s\"", l->sid, l->peer, why[0] != '\0' ? why :
		    "no punt available");
	wire_init(&d.w, l->w->cf->max_message_octets);
	if (lmtp_reply(l, "354 2.0.0 go ahead, end with <CRLF>.<CRLF>") ==
	    -1) {
		data_end(&d);
		return -1;
	}
	if ((dres = read_data(l, &d)) == DATA_IOFAIL) {
		data_end(&d);
		return -1;
	}
	fail = data_refusal(l, &d, dres);
	l->txns++;
	if (fail == NULL)
		lmtp_store(l, &d);
	else
		log_info("sid=%016" PRIx64 " peer=%s event=lmtp-refused "
		    "rcpts=%zu reply=\"%s\"", l->sid, l->peer, l->nrcpts, fail);
	data_end(&d);
	rc = data_replies(l, fail);
	txn_reset(l);
	return rc;
}

/* After max_bad_commands errors, say goodbye (true: end the session). */
static bool
too_many_bad(struct lmtp *l)
{
	unsigned	 max = l->w->cf->max_bad_commands;

	if (max == 0 || l->bad < max)
		return false;
	(void)lmtp_reply(l, "421 4.7.0 %s too many bad commands", l->me);
	(void)conn_flush(l->c);
	return true;
}

/* One command line.  Returns 1 to go on, 0 to end the session. */
static int
lmtp_command(struct lmtp *l, char *line)
{
	char	*kw, *arg = NULL;
	int	 rc;

	if ((kw = conn_keyword(line, &arg)) == NULL) {
		sb_slot_command(l->w->slot, "");
		rc = lmtp_reply(l, "500 5.5.2 syntax error");
		l->bad++;
		goto out;
	}
	sb_slot_command(l->w->slot, kw);
	if (strcasecmp(kw, "LHLO") == 0)
		rc = cmd_lhlo(l, arg);
	else if (strcasecmp(kw, "MAIL") == 0)
		rc = cmd_mail(l, arg);
	else if (strcasecmp(kw, "RCPT") == 0)
		rc = cmd_rcpt(l, arg);
	else if (strcasecmp(kw, "DATA") == 0)
		rc = cmd_data(l, arg);
	else if (strcasecmp(kw, "RSET") == 0) {
		txn_reset(l);
		rc = lmtp_reply(l, "250 2.0.0 reset");
	} else if (strcasecmp(kw, "NOOP") == 0)
		rc = lmtp_reply(l, "250 2.0.0 OK");
	else if (strcasecmp(kw, "VRFY") == 0)
		rc = lmtp_reply(l, "252 2.5.0 cannot VRFY, but send some "
		    "mail");
	else if (strcasecmp(kw, "QUIT") == 0) {
		(void)lmtp_reply(l, "221 2.0.0 %s closing", l->me);
		(void)conn_flush(l->c);
		return 0;
	} else if (strcasecmp(kw, "HELO") == 0 || strcasecmp(kw, "EHLO") == 0) {
		/* RFC 2033 §4.1: an LMTP server must not accept them. */
		rc = lmtp_reply(l, "500 5.5.1 this is LMTP, say LHLO");
		l->bad++;
	} else {
		rc = lmtp_reply(l, "500 5.5.2 command unrecognized");
		l->bad++;
	}
out:
	if (rc == -1 || too_many_bad(l))
		return 0;
	return 1;
}

void
lmtp_run(struct session_env *w, int fd, const char *peer)
{
	struct lmtp	*l;
	enum conn_res	 r;
	struct sigaction sa;
	char		*line;
	size_t		 len;
	const char	*how = "quit";

	/* A client hanging up mid-reply must end the session, not the
	 * worker. */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		log_warn("lmtp: calloc");
		return;
	}
	l->w = w;
	snprintf(l->peer, sizeof(l->peer), "%s", peer != NULL ? peer : "-");
	l->sid = w->slot != NULL && w->slot->session_id != 0 ?
	    w->slot->session_id : sb_session_id(w->sb);
	if (gethostname(l->me, sizeof(l->me)) == -1 || l->me[0] == '\0')
		snprintf(l->me, sizeof(l->me), "localhost");
	l->me[sizeof(l->me) - 1] = '\0';
	if ((l->c = conn_new(fd, LMTP_LINE_MAX, w->cf->idle_timeout_s,
	    w->cf->send_timeout_s, w->kill_session)) == NULL) {
		free(l);
		return;
	}
	log_info("sid=%016" PRIx64 " peer=%s event=lmtp-connect", l->sid,
	    l->peer);
	(void)lmtp_reply(l, "220 %s LMTP %s ready", l->me, LMTP_DOMAIN);
	for (;;) {
		/*
		 * SIGTERM: finish the transaction in hand, then leave at a
		 * command boundary; 421 tells the MTA to retry elsewhere or
		 * later (RFC 5321 §3.8).
		 */
		if (*w->terminate && !l->mail && !conn_line_pending(l->c)) {
			(void)lmtp_reply(l, "421 4.3.2 %s shutting down",
			    l->me);
			(void)conn_flush(l->c);
			how = "shutdown";
			break;
		}
		r = conn_read_line(l->c, &line, &len);
		if (r == CONN_TOO_LONG || r == CONN_NUL) {
			l->bad++;
			if (lmtp_reply(l, "500 5.5.2 %s", r == CONN_NUL ?
			    "NUL in command" : "line too long") == 0 &&
			    !too_many_bad(l))
				continue;
		} else if (r != CONN_OK) {
			how = conn_res_name(r);
			break;
		} else if (lmtp_command(l, line) == 1)
			continue;
		if (conn_werr(l->c) != CONN_OK)
			how = conn_res_name(conn_werr(l->c));
		else if (l->bad > 0 && w->cf->max_bad_commands != 0 &&
		    l->bad >= w->cf->max_bad_commands)
			how = "badcmd-limit";
		break;
	}
	log_info("sid=%016" PRIx64 " peer=%s event=lmtp-close how=%s txns=%"
	    PRIu64 " stored=%" PRIu64, l->sid, l->peer, how, l->txns,
	    l->msgs);
	txn_reset(l);
	conn_free(l->c);
	free(l);
}
