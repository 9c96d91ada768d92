/*
 * ctl_upgrade: sdps-ctl punt upgrade PUNT... [--abort] [--batch N], the
 * migration of a format-1 punt to index format 2 (store_upgrade,
 * docs/design.md §18.4).  Its own file: ctl_store.c is at the size
 * limit.  The punts are upgraded one at a time, by path, never through
 * the puntset: store_open refuses a format-1 punt.
 */

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sdps/config.h"
#include "sdps/ctl.h"
#include "sdps/store.h"

#include "ctl_remote.h"

static double
now_s(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
upgrade_report(const char *name, const struct store_upgrade_res *r,
    double secs)
{
	switch (r->done) {
	case STORE_UPGRADED:
		printf("punt %s: upgraded to index format 2: %llu records, "
		    "%llu copied in %llu batch%s%s (%.2f s)\n", name,
		    (unsigned long long)r->records,
		    (unsigned long long)r->copied,
		    (unsigned long long)r->batches,
		    r->batches == 1 ? "" : "es",
		    r->resumed ? ", an interrupted upgrade finished" : "",
		    secs);
		break;
	case STORE_UPGRADE_NOOP:
		printf("punt %s: already index format 2, nothing changed\n",
		    name);
		break;
	case STORE_UPGRADE_ABORTED:
		printf("punt %s: upgrade aborted, index format 1 again\n",
		    name);
		break;
	case STORE_UPGRADE_NOABORT:
		printf("punt %s: index format 1, no upgrade in progress: "
		    "nothing to abort\n", name);
		break;
	}
}

int
ctl_punt_upgrade(struct ctl *c)
{
	const struct config	*cf = c->cf;
	const struct config_punt *p;
	struct store_upgrade_opts o;
	struct store_upgrade_res r;
	char			 err[512];
	double			 t0;
	int			 i, bad = 0;

	for (i = 0; i < c->argc; i++)
		if ((p = config_punt_find(cf, c->argv[i])) == NULL)
			return ctl_fail("no such punt: %s", c->argv[i]);
		else if (ctl_punt_is_remote(p))
			return ctl_refuse_remote("punt upgrade", p);
	memset(&o, 0, sizeof(o));
	o.map_size = cf->store_map_size;
	o.batch = c->batch;
	o.abort = c->abort_upgrade;
	for (i = 0; i < c->argc; i++) {
		p = config_punt_find(cf, c->argv[i]);
		t0 = now_s();
		if (store_upgrade(p->path, p->name, &o, &r, err,
		    sizeof(err)) == -1) {
			ctl_fail("punt %s: %s", p->name, err);
			bad++;
			continue;
		}
		upgrade_report(p->name, &r, now_s() - t0);
		fflush(stdout);
	}
	return bad > 0;
}
