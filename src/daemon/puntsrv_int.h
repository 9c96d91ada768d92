/*
 * puntsrv_int.h: NOT A PUBLIC HEADER.  What the punt server's two files
 * share (puntsrv.c: the link, its replies and the maildrop commands;
 * puntsrv_data.c: DELIVER and the read-only admin commands XLS, XREC).
 * include/sdps/puntsrv.h stays the module's whole surface.
 *
 * Error convention: command functions return 0 to go on, -1 to end the
 * link (the connection failed, or the link cannot stay in step).
 */
#ifndef SDPS_PUNTSRV_INT_H
#define SDPS_PUNTSRV_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/punt.h"
#include "sdps/scoreboard.h"
#include "sdps/session_env.h"
#include "sdps/store.h"
#include "sdps/util.h"

/* DELIVER host sender N body_octets and at most this many recipients
 * (LMTP's limit). */
#define PS_RCPT_MAX	1000
#define PS_ARGS_MAX	(4 + PS_RCPT_MAX)

struct psrv {
	struct session_env *w;
	struct conn	*c;
	struct punt	*p;
	struct store	*st;		/* punt_local_store(p) */
	int		 pidx;		/* config punt index */
	uint64_t	 sid;
	char		 peer[SB_PEER_MAX];
	char		 fe[256];	/* the front end's certificate */
	/* XCLIENT: the POP3 client behind the front end, "-" until told */
	char		 caddr[48], cport[8], csid[20];
	bool		 selected;
	struct punt_lock lk;
	char		 host[UTIL_HOST_MAX + 1];
	char		 user[UTIL_USER_MAX + 1];	/* "": a host session */
	uint64_t	*dele;		/* pending removals (DELE) */
	size_t		 ndele, dele_cap;
	uint64_t	 n_body, n_top, n_deliver, n_removed;
	bool		 quit;
	const char	*drop_why;	/* why a command ended the link */
};

/* A growing text buffer. */
struct ps_buf {
	char	*p;
	size_t	 len, cap;
};

void	ps_log(struct psrv *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
int	ps_reply(struct psrv *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
int	ps_proto(struct psrv *, const char *);
int	ps_store_err(struct psrv *, enum store_res, const char *);
int	ps_id(const char *, uint64_t *);
int	ps_buf_add(struct ps_buf *, const char *, size_t);
int	ps_buf_xtext(struct ps_buf *, const char *, bool);

/* puntsrv_data.c; argc -1: the line did not split (ps_split). */
int	ps_cmd_deliver(struct psrv *, int, char **);
int	ps_cmd_xls(struct psrv *, int, char **);
int	ps_cmd_xrec(struct psrv *, int, char **);

#endif
