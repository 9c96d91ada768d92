/*
 * session_int: what the parts of the POP3 session share (session.c,
 * session_auth.c, session_trans.c, session_update.c).  Private to them
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

/* The command table (session.c), walked by CAPA and the unit test. */
extern const struct cmd	session_cmds[];
extern const size_t	session_ncmds;

/* session_auth.c: AUTHORIZATION. */
cmd_fn	cmd_user, cmd_pass, cmd_apop;
/* Drop the snapshot and the maildrop locks (a no-op without them). */
void	session_release(struct session *);

/* session_trans.c: TRANSACTION. */
cmd_fn	cmd_stat, cmd_list, cmd_retr, cmd_dele, cmd_noop, cmd_rset,
	    cmd_top, cmd_uidl, cmd_env;

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
