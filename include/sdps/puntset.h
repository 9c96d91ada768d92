/*
 * puntset: the configured punts of one process, in config order
 * (docs/design.md §5): which exist, opening them when first needed,
 * reopening one whose directory went away, and the memory of which are
 * down, so a dead punt is logged once when it goes, not at every use.
 * Every program gets its punts from here; index i is config punt i, and
 * that index order is the tie-break of the maildrop merge (maildrop.h).
 *
 * Error convention: puntset_get returns NULL for an unusable punt (why
 * in puntset_error); the others cannot fail except puntset_new (NULL).
 */
#ifndef SDPS_PUNTSET_H
#define SDPS_PUNTSET_H

#include <stdbool.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/config.h"
#include "sdps/punt.h"

struct puntset;

/* puntset_new flags. */
#define PUNTSET_LOG	0x01	/* log a punt going down and coming back
				 * (daemons: once per change) */
#define PUNTSET_ONCE	0x02	/* a punt that failed to open stays failed
				 * (one-shot programs: one attempt each) */

/* Told the outcome of every puntset_get (the daemon's scoreboard). */
typedef void puntset_health_fn(void *arg, int idx, const char *name,
	    bool ok);

/* The punts of cf (which must outlive the set); nothing is opened yet. */
struct puntset *puntset_new(const struct config *cf, int flags);
void	puntset_free(struct puntset *ps);	/* closes every punt */

void	puntset_on_health(struct puntset *ps, puntset_health_fn *fn,
	    void *arg);

/*
 * Append each open failure, "punt NAME: reason", to why ("; " between
 * reasons, util_why); why may be NULL to stop.
 */
void	puntset_why(struct puntset *ps, char *why, size_t whylen);

int	puntset_count(const struct puntset *ps);
const char *puntset_name(const struct puntset *ps, int i);

/*
 * Punt i if usable now: opened if it was not, reopened if punt_health
 * says it changed, unless PUNTSET_ONCE and it failed before.  NULL when
 * out of range or unusable.
 */
struct punt *puntset_get(struct puntset *ps, int i);

/* Punt i if already open, without opening or checking anything. */
struct punt *puntset_peek(const struct puntset *ps, int i);

/*
 * Install p, already open, as punt i (closing what was there); the set
 * owns it from now on.  For tests' own punt implementations, and for a
 * future opener of punts that are not local.  -1 if i is out of range.
 */
int	puntset_adopt(struct puntset *ps, int i, struct punt *p);

/*
 * Remote punts (issue 11): the scoreboard's shared rows (rows[i] is
 * config punt i's when its name matches; NULL: none) and the kill flag
 * their links' waits honour.  Before the first puntset_get.
 */
struct sb_punt_health;
void	puntset_on_remote(struct puntset *ps, struct sb_punt_health *rows,
	    int nrows, volatile sig_atomic_t *kill);

/* The client of the login about to open a maildrop (XCLIENT at the
 * remote punts); addr NULL or "" clears it. */
void	puntset_client(struct puntset *ps, const char *addr, unsigned port,
	    uint64_t sid);

/* The parallel login's one deadline: now + [link] connect_timeout_ms. */
uint64_t puntset_login_deadline_us(const struct puntset *ps);

/* Close punt i now (a one-shot program done with it); get reopens it. */
void	puntset_close(struct puntset *ps, int i);

/* Why the last puntset_get(ps, i) failed ("" if it did not). */
const char *puntset_error(const struct puntset *ps, int i);

/* punt_maintain every open punt (after a process using them died). */
void	puntset_maintain(struct puntset *ps);

#endif
