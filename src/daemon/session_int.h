/*
 * session_int: what the parts of the POP3 session share (session.c,
 * session_auth.c, session_sasl.c, session_trans.c, session_update.c).  Private to them
 * and their unit test, like store_int.h: the public surface is
 * session.h.  Error convention: a handler returns enum cmd_res; a
 * -ERR is sent only through session_err, which alone decides whether it
 * counts as a bad command (docs/design.md §2).
 */
#ifndef SDPS_SESSION_INT_H
#define SDPS_SESSION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/conn.h"
#include "sdps/scoreboard.h"
#include "sdps/session_env.h"
#include "sdps/util.h"

struct maildrop;
struct punt;

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
	END_UPDATE_FAILED,
	END_TLSFAIL	/* the TLS handshake failed or timed out */
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

	/* Security (issue 10).  tls: the handshake is done (at connect or
	 * after STLS); loopback: the peer is a loopback address (the
	 * cleartext policy's exception); auth_tried: USER or AUTH was seen
	 * (STLS is refused after either, RFC 2595 §4). */
	bool			 tls;
	bool			 loopback;
	bool			 auth_tried;
	const char		*mech;	/* "pass", "plain", "login": the login line */

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
	/* Whether CAPA lists the tag on this connection now (NULL:
	 * always).  The handler enforces the same predicate. */
	bool		(*offered)(const struct session *);
};

/* The command table (session.c), walked by CAPA and the unit test. */
extern const struct cmd	session_cmds[];
extern const size_t	session_ncmds;

/* session_auth.c: AUTHORIZATION. */
cmd_fn	cmd_user, cmd_pass, cmd_apop;
/* Drop the snapshot and the maildrop locks (a no-op without them). */
void	session_release(struct session *);
/*
 * The user name as USER takes it (host, user@host or user+host) into
 * s->user_arg, user, host and maildrop.  0, or -1 if it is not a valid
 * name (the caller answers).  USER and SASL's authentication identity
 * both come through here.
 */
int	session_set_user(struct session *, const char *arg);
/*
 * The one path of a password, after USER (PASS) or from SASL (AUTH):
 * the auth store, the throttle, LOGIN-DELAY, the auth cache, the
 * hashing gate, the failure delay and auth_max_failures, and the login.
 * pw (pwlen octets, NUL-terminated) is wiped before this returns.
 */
enum cmd_res session_password(struct session *, char *pw, size_t pwlen);

/* session_sasl.c: AUTH (RFC 5034) and its mechanisms. */
cmd_fn	cmd_auth;
/* The i-th SASL mechanism in the order AUTH lists them, NULL past the
 * last; CAPA's SASL tag (session.c's table) names the same ones, a unit
 * test checks. */
const char *sasl_mech_name(size_t i);
/*
 * Strict base64 (RFC 4648 §4): the alphabet, length a multiple of 4,
 * padding only at the end and zero pad bits; no white space.  The
 * decoded octets go to out (outcap octets; out is NUL-terminated, so it
 * needs one more).  0 with *outlen set, or -1.
 */
int	sasl_b64_decode(const char *in, size_t inlen, unsigned char *out,
	    size_t outcap, size_t *outlen);
/*
 * RFC 4616 PLAIN: authzid NUL authcid NUL passwd, split in place (buf is
 * NUL-terminated by sasl_b64_decode).  0 with the three set; otherwise
 * the reason, for the -ERR.
 */
enum sasl_plain_res {
	SASL_PLAIN_OK,
	SASL_PLAIN_NULS,	/* not exactly two NULs */
	SASL_PLAIN_NO_AUTHCID,
	SASL_PLAIN_NO_PASSWORD,
	SASL_PLAIN_AUTHZID	/* authzid neither empty nor the authcid */
};
enum sasl_plain_res sasl_plain_parse(char *buf, size_t len,
	    const char **authzid, const char **authcid, char **pw,
	    size_t *pwlen);

/* session_trans.c: TRANSACTION. */
cmd_fn	cmd_stat, cmd_list, cmd_retr, cmd_dele, cmd_noop, cmd_rset,
	    cmd_top, cmd_uidl, cmd_env;

/* session.c: STLS (RFC 2595) and the security predicates (issue 10). */
cmd_fn	cmd_stls;
/* USER/PASS and AUTH allowed: TLS, allow_cleartext yes, or loopback. */
bool	session_cleartext_ok(const struct session *);
/* STLS offered: a tls=starttls listener, a context, not yet TLS. */
bool	session_stls_offered(const struct session *);
/* CAPA's tests: the tags offered on this connection now. */
bool	session_capa_user(const struct session *);
bool	session_capa_stls(const struct session *);
/* The refusal of the cleartext policy: -ERR [AUTH] saying where TLS
 * is (STLS if offered, the implicit port if there is one). */
enum cmd_res session_cleartext_refused(struct session *);
/* How an I/O result ends the session (the logout line's end=). */
enum end_how session_how_from_io(enum conn_res);

/* session_update.c: UPDATE and the end of a session. */
cmd_fn	cmd_quit;
void	session_commit_rd(struct session *);

/* session.c: replies and the snapshot's punts. */
/*
 * "-ERR [code] text", or "-ERR text" when code is NULL.  The one place
 * of the bad-command rule: an -ERR without a response code is the
 * client's fault and returns CMD_BAD (it counts toward
 * max_bad_commands); one with a code (SYS/TEMP, IN-USE, AUTH, ...)
 * reports our state or policy and returns CMD_REPLIED.
 */
enum cmd_res session_err(struct session *, const char *code,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "+OK text"; returns CMD_REPLIED. */
enum cmd_res session_ok(struct session *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
int	session_npunts(const struct session *);

#endif
