/*
 * punt_remote_int: what the remote punt's two files share (not public):
 * punt_remote.c (the link, the session ops) and punt_remote_put.c
 * (DELIVER).
 */
#ifndef SDPS_PUNT_REMOTE_INT_H
#define SDPS_PUNT_REMOTE_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "sdps/config.h"
#include "sdps/punt.h"
#include "sdps/scoreboard.h"
#include "sdps/util.h"

#define XT_MAX	(3 * 256 + 1)	/* one xtext-encoded address part */

struct remote {
	const struct config	 *cf;
	const struct config_punt *cp;
	struct sb_punt_health	 *h;	/* may be NULL */
	volatile sig_atomic_t	 *kill;
	const struct punt_client *client;	/* may be NULL */
	struct link		 *l;
	uint64_t		  uid;	/* from the last greeting */
	bool			  failed;	/* this session: stays down */
	bool			  begun;	/* begin ran, lock not yet */
	bool			  select_sent, selected, xlist_sent;
	bool			  xclient_sent;
	bool			  unselect_sent;	/* answer unread */
	size_t			  remove_owed;	/* DELE+UPDATE answers */
	uint64_t		  deadline_us;	/* the login's connect part */
	uint64_t		  reply_deadline_us;
	char			  host[UTIL_HOST_MAX + 1];
	char			  user[UTIL_USER_MAX + 1];
};

/* The link failed: this punt is down for the session, remembered in the
 * scoreboard, the link freed.  Returns STORE_TEMPFAIL. */
enum store_res r_fail(struct remote *r, const char *what);

/* A link ready for a command outside a session (DELIVER, XSTAT): 0, or
 * -1 (down, or failed now). */
int	r_ready(struct remote *r);

/* The put and put_file ops (punt_remote_put.c). */
enum store_res r_put(void *impl, const struct store_envelope *env,
	    const void *wire, size_t wire_len, uint64_t body_octets,
	    uint64_t *id, char *err, size_t errlen);
enum store_res r_put_file(void *impl, const struct store_envelope *env,
	    int fd, uint64_t wire_len, uint64_t body_octets, uint64_t *id,
	    char *err, size_t errlen);

#endif
