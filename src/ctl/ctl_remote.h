/*
 * ctl_remote: the sdps-ctl verbs' view of a remote punt (issue 11), read
 * only, through a link of its own (link.h): spool ls (XLS), spool show
 * (XREC + BODY id ADMIN), spool stat (XSTAT) and status --probe (NOOP).  Every other store
 * verb refuses a remote punt (ctl_refuse_remote): fsck, expire, the SMTP
 * markers and punt create/upgrade need the punt's directory, so they run
 * on its punt server.
 *
 * Internal to src/ctl: struct row and struct rows are spool ls's rows,
 * shared so the remote rows merge with the local ones and print through
 * the same code (ctl_store.c).
 *
 * Error convention: the int functions return an exit status (0, or 1
 * with one line on stderr; ctl_refuse_remote marks a usage error).
 */
#ifndef SDPS_CTL_REMOTE_H
#define SDPS_CTL_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/config.h"
#include "sdps/ctl.h"
#include "sdps/store.h"
#include "sdps/util.h"

struct row {
	const struct config_punt *punt;
	int	 punt_idx;
	uint64_t id, arrival_us, octets, stored_octets, claim_us;
	uint32_t flags;
	char	 host[UTIL_HOST_MAX + 1];
	char	 agent[STORE_AGENT_MAX + 1];
	char	 uidl[STORE_UIDL_MAX];
	char	*sender;
	char   **rcpts;
	size_t	 nrcpts;
};

struct rows {
	struct row	*v;
	size_t		 n, cap;
	bool		 nomem;
	const struct config_punt *punt;	/* of the rows being added */
	int		 punt_idx;
};

/* ctl_store.c: append a copy of m (a store_walk callback: 0, or 1 and
 * rs->nomem when out of memory); free a row's copies; print one row. */
int	ctl_rows_add(const struct store_msg *m, void *arg);
void	ctl_row_free(struct row *r);
void	ctl_row_json(const struct row *r, uint64_t now_us);
/* spool show's output of message r with its stored file data: exit
 * status. */
int	ctl_show_print(struct ctl *c, const struct row *r, const char *data,
	    size_t len);

/* The punt is reached through a link ([punt NAME] address = ...). */
bool	ctl_punt_is_remote(const struct config_punt *p);

/*
 * "punt NAME is remote: run this on its punt server" for verb, and the
 * exit status becomes a usage error's (ctl_usage_error).  Returns 1.
 */
int	ctl_refuse_remote(const char *verb, const struct config_punt *p);

/*
 * spool ls for remote punt p (config index idx): its messages of host
 * (NULL: every host) appended to rs with their UIDLs.  0, or 1 (said on
 * stderr; rs holds none of p's rows then).
 */
int	ctl_remote_walk(const struct config *cf, const struct config_punt *p,
	    int idx, const char *host, struct rows *rs);

/* spool stat's counters of a remote punt (XSTAT): 0, or 1 (said). */
int	ctl_remote_stat(const struct config *cf, const struct config_punt *p,
	    struct store_stat *out);

/* spool show PUNT:ID for a remote punt: exit status. */
int	ctl_remote_show(struct ctl *c, const struct config_punt *p,
	    uint64_t id);

/*
 * status --probe: a fresh link to every remote punt of cf and one NOOP,
 * timed.  Text lines, or (json) a ", \"probe\": [...]" member to close
 * the status object with.  Returns how many punts did not answer.
 */
int	ctl_remote_probe(const struct config *cf, bool json);

#endif
