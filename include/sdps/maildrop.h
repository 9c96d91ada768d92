/*
 * maildrop: one customer's view of the spool across every punt
 * (docs/design.md §2.1, §4): lock + list + merge + the user filter, and
 * nothing else knows them.  A maildrop is host (every message for the
 * host) or user@host (only messages with that recipient, and of their
 * envelopes only that recipient).  The merge order is arrival time, then
 * the punts' order in the config, then the punt's message id
 * (maildrop_order, which sdps-ctl spool ls uses for its admin listing).
 *
 * Error convention: functions that can fail return enum store_res.
 */
#ifndef SDPS_MAILDROP_H
#define SDPS_MAILDROP_H

#include <stddef.h>
#include <stdint.h>

#include "sdps/punt.h"
#include "sdps/puntset.h"

struct maildrop;

/* maildrop_open flags. */
#define MAILDROP_LOCK	0x01	/* take the maildrop lock on every punt */
#define MAILDROP_ENV	0x02	/* keep the envelopes (sender, recipients) */

/* One message of the merged snapshot. */
struct maildrop_msg {
	uint64_t	 id;		/* the punt's message id */
	uint64_t	 arrival_us;
	uint64_t	 octets;
	uint32_t	 flags;		/* STORE_F_* at snapshot time */
	uint32_t	 env;		/* private: offset in the punt's arena */
	int		 punt;		/* maildrop_punt index, config order */
};

/* Told about each punt left out of the maildrop, and why: "unavailable",
 * "lock" (could not take it) or "list". */
typedef void maildrop_skip_fn(void *arg, const char *punt,
	    const char *reason);

/*
 * Open the maildrop host (user NULL or "") or user@host (normalized) on
 * every usable punt of ps.  With MAILDROP_LOCK every punt's lock is taken
 * first, all or nothing: STORE_BUSY (nothing held) if one is held by a
 * live session.  A punt that is unusable, cannot be locked or listed is
 * left out (skip is told; may be NULL).  STORE_OK with *out set (possibly
 * with no punt at all: maildrop_npunts), or STORE_TEMPFAIL (no memory).
 */
enum store_res maildrop_open(struct puntset *ps, const char *host,
	    const char *user, int flags, maildrop_skip_fn *skip, void *arg,
	    struct maildrop **out);
void	maildrop_close(struct maildrop *md);	/* unlocks; NULL is fine */

size_t	maildrop_count(const struct maildrop *md);
const struct maildrop_msg *maildrop_msg(const struct maildrop *md,
	    size_t i);

/* The punts in the maildrop, in config order, and their config index. */
int	maildrop_npunts(const struct maildrop *md);
struct punt *maildrop_punt(const struct maildrop *md, int k);
int	maildrop_punt_cfi(const struct maildrop *md, int k);

/* m's envelope sender ("" for the null sender, or without MAILDROP_ENV). */
const char *maildrop_sender(const struct maildrop *md,
	    const struct maildrop_msg *m);

/*
 * m's recipients (local parts at the host) the maildrop's user may see:
 * all for a host maildrop, only the user's own for user@host.  Start
 * with prev NULL; NULL after the last (always, without MAILDROP_ENV).
 */
const char *maildrop_rcpt_next(const struct maildrop *md,
	    const struct maildrop_msg *m, const char *prev);

/* The merge order: <0, 0, >0 as message a comes before, with, after b. */
int	maildrop_order(uint64_t a_arrival_us, int a_punt, uint64_t a_id,
	    uint64_t b_arrival_us, int b_punt, uint64_t b_id);

#endif
