/*
 * puntset: the one place that opens the configured punts and remembers
 * their health (puntset.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/log.h"
#include "sdps/puntset.h"
#include "sdps/scoreboard.h"
#include "sdps/util.h"

struct ps_punt {
	struct punt	*p;
	bool		 down;		/* the last open failed */
	char		 err[256];
};

struct puntset {
	const struct config	*cf;
	int			 flags;
	puntset_health_fn	*health;
	void			*health_arg;
	char			*why;
	size_t			 whylen;
	struct sb_punt_health	*rows;		/* scoreboard, or NULL */
	int			 nrows;
	volatile sig_atomic_t	*kill;
	struct punt_client	 client;	/* XCLIENT (remote punts) */
	struct ps_punt		 v[CONFIG_PUNT_MAX];
};

struct puntset *
puntset_new(const struct config *cf, int flags)
{
	struct puntset	*ps;

	if ((ps = calloc(1, sizeof(*ps))) == NULL)
		return NULL;
	ps->cf = cf;
	ps->flags = flags;
	return ps;
}

void
puntset_free(struct puntset *ps)
{
	int	 i;

	if (ps == NULL)
		return;
	for (i = 0; i < CONFIG_PUNT_MAX; i++)
		punt_close(ps->v[i].p);
	free(ps);
}

void
puntset_on_health(struct puntset *ps, puntset_health_fn *fn, void *arg)
{
	ps->health = fn;
	ps->health_arg = arg;
}

void
puntset_on_remote(struct puntset *ps, struct sb_punt_health *rows,
    int nrows, volatile sig_atomic_t *kill)
{
	ps->rows = rows;
	ps->nrows = nrows;
	ps->kill = kill;
}

void
puntset_client(struct puntset *ps, const char *addr, unsigned port,
    uint64_t sid)
{
	snprintf(ps->client.addr, sizeof(ps->client.addr), "%s",
	    addr != NULL ? addr : "");
	ps->client.port = port;
	ps->client.sid = sid;
}

uint64_t
puntset_login_deadline_us(const struct puntset *ps)
{
	return util_now_us() + (uint64_t)ps->cf->link_connect_timeout_ms *
	    1000;
}

/* Punt i's scoreboard row, if the names agree. */
static struct sb_punt_health *
ps_row(struct puntset *ps, int i)
{
	if (ps->rows == NULL || i >= ps->nrows ||
	    strcmp(ps->rows[i].name, ps->cf->punts[i].name) != 0)
		return NULL;
	return &ps->rows[i];
}

void
puntset_why(struct puntset *ps, char *why, size_t whylen)
{
	ps->why = why;
	ps->whylen = whylen;
}

int
puntset_count(const struct puntset *ps)
{
	return ps->cf->npunts;
}

const char *
puntset_name(const struct puntset *ps, int i)
{
	return i >= 0 && i < ps->cf->npunts ? ps->cf->punts[i].name : "";
}

/* Open punt i; a directory that is not the expected one counts as down. */
static void
ps_open(struct puntset *ps, int i)
{
	const struct config_punt *cp = &ps->cf->punts[i];
	struct ps_punt		 *e = &ps->v[i];

	if (cp->address[0] != '\0')
		e->p = punt_remote_open(ps->cf, cp, ps_row(ps, i), ps->kill,
		    &ps->client, e->err, sizeof(e->err));
	else
		e->p = punt_local_open(cp->path, cp->name, ps->cf->run_dir,
		    ps->cf->store_map_size, ps->cf->claim_lease_s, e->err,
		    sizeof(e->err));
	if (e->p != NULL && !punt_health(e->p)) {
		snprintf(e->err, sizeof(e->err), "not available");
		punt_close(e->p);
		e->p = NULL;
	}
	if (e->p == NULL) {
		if (!e->down && (ps->flags & PUNTSET_LOG))
			log_warnx("punt %s: %s", cp->name, e->err);
		if (ps->why != NULL)
			util_why(ps->why, ps->whylen, "punt %s: %s",
			    cp->name, e->err);
		e->down = true;
		return;
	}
	if (e->down && (ps->flags & PUNTSET_LOG))
		log_info("punt %s: available again", cp->name);
	e->down = false;
	e->err[0] = '\0';
}

struct punt *
puntset_get(struct puntset *ps, int i)
{
	struct ps_punt	*e;

	if (i < 0 || i >= ps->cf->npunts)
		return NULL;
	e = &ps->v[i];
	if (e->p != NULL && !punt_health(e->p)) {
		if (ps->flags & PUNTSET_LOG)
			log_warnx("punt %s: no longer available, reopening",
			    ps->cf->punts[i].name);
		punt_close(e->p);
		e->p = NULL;
	}
	if (e->p == NULL && !(e->down && (ps->flags & PUNTSET_ONCE)))
		ps_open(ps, i);
	if (ps->health != NULL)
		ps->health(ps->health_arg, i, ps->cf->punts[i].name,
		    e->p != NULL);
	return e->p;
}

struct punt *
puntset_peek(const struct puntset *ps, int i)
{
	return i >= 0 && i < ps->cf->npunts ? ps->v[i].p : NULL;
}

int
puntset_adopt(struct puntset *ps, int i, struct punt *p)
{
	if (i < 0 || i >= ps->cf->npunts)
		return -1;
	punt_close(ps->v[i].p);
	ps->v[i].p = p;
	ps->v[i].down = false;
	ps->v[i].err[0] = '\0';
	return 0;
}

void
puntset_close(struct puntset *ps, int i)
{
	if (i < 0 || i >= CONFIG_PUNT_MAX)
		return;
	punt_close(ps->v[i].p);
	ps->v[i].p = NULL;
}

const char *
puntset_error(const struct puntset *ps, int i)
{
	return i >= 0 && i < ps->cf->npunts ? ps->v[i].err : "no such punt";
}

void
puntset_maintain(struct puntset *ps)
{
	int	 i;

	for (i = 0; i < CONFIG_PUNT_MAX; i++)
		if (ps->v[i].p != NULL)
			punt_maintain(ps->v[i].p);
}
