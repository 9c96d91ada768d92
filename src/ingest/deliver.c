/* deliver: the punt choice for a new message, shared by sdps-deliver and
 * the LMTP session (docs/design.md §10.1: a random punt per message). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/config.h"
#include "sdps/deliver.h"
#include "sdps/puntset.h"

/*
 * The punts to try, in order: only alone, or first (if >= 0) and then the
 * rest, or all, in a fresh random order.  Returns how many.
 */
static int
punt_order(int *order, int npunts, int only, int first)
{
	int	 n, i, j, t;

	if (npunts > CONFIG_PUNT_MAX)
		npunts = CONFIG_PUNT_MAX;
	if (only >= 0) {
		if (only >= npunts)
			return 0;
		order[0] = only;
		return 1;
	}
	n = npunts;
	for (i = 0; i < n; i++)
		order[i] = i;
	/* Fisher-Yates: every order equally likely, so load and the damage
	 * of a failing punt spread evenly. */
	for (i = n - 1; i > 0; i--) {
		j = (int)arc4random_uniform((uint32_t)i + 1);
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	if (first >= 0 && first < n)
		for (i = 1; i < n; i++)
			if (order[i] == first) {
				order[i] = order[0];
				order[0] = first;
				break;
			}
	return n;
}

static void
why_fail(char *why, size_t whylen, const char *name, enum store_res res,
    const char *err)
{
	util_why(why, whylen, "punt %s: %s", name,
	    err[0] != '\0' ? err : res == STORE_PERMFAIL ?
	    "permanent failure" : "temporary failure");
}

enum store_res
deliver_store(struct puntset *ps, int only, const struct store_envelope *env,
    const struct wire *w, int *idx, uint64_t *id, char *why, size_t whylen)
{
	struct punt	*p;
	enum store_res	 res;
	char		 err[256];
	int		 order[CONFIG_PUNT_MAX], n, i;

	n = punt_order(order, puntset_count(ps), only, -1);
	for (i = 0; i < n; i++) {
		if ((p = puntset_get(ps, order[i])) == NULL)
			continue;	/* the puntset said why */
		err[0] = '\0';
		res = punt_put(p, env, w->buf, w->len, w->body_octets, id,
		    err, sizeof(err));
		if (res == STORE_OK) {
			*idx = order[i];
			return STORE_OK;
		}
		why_fail(why, whylen, punt_name(p), res, err);
	}
	return STORE_TEMPFAIL;
}

/* Punt i as a local store (streaming needs its directory), or NULL. */
static struct store *
local_get(struct puntset *ps, int i, char *why, size_t whylen)
{
	struct punt	*p;
	struct store	*st;

	if ((p = puntset_get(ps, i)) == NULL)
		return NULL;
	if ((st = punt_local_store(p)) == NULL)
		util_why(why, whylen, "punt %s: not a local punt",
		    punt_name(p));
	return st;
}

int
deliver_tmp_open(struct puntset *ps, int *idx, char *path, size_t pathlen,
    char *why, size_t whylen)
{
	struct store	*st;
	int		 order[CONFIG_PUNT_MAX], n, i, fd;

	n = punt_order(order, puntset_count(ps), -1, -1);
	for (i = 0; i < n; i++) {
		if ((st = local_get(ps, order[i], why, whylen)) == NULL)
			continue;
		if ((fd = store_tmp_open(st, path, pathlen)) != -1) {
			*idx = order[i];
			return fd;
		}
		util_why(why, whylen, "punt %s: tmp file: %s",
		    store_name(st), strerror(errno));
	}
	return -1;
}

enum store_res
deliver_store_file(struct puntset *ps, int first,
    const struct store_envelope *env, const char *src_path, int src_fd,
    uint64_t wire_len, uint64_t body_octets, int *idx, uint64_t *id,
    bool last, enum store_via *via, char *why, size_t whylen)
{
	struct store	*st;
	enum store_res	 res;
	char		 err[256];
	int		 order[CONFIG_PUNT_MAX], n, i;

	n = punt_order(order, puntset_count(ps), -1, first);
	for (i = 0; i < n; i++) {
		if ((st = local_get(ps, order[i], why, whylen)) == NULL)
			continue;
		err[0] = '\0';
		res = store_put_file(st, env, src_path, src_fd, wire_len,
		    body_octets, last, id, via, err, sizeof(err));
		if (res == STORE_OK) {
			*idx = order[i];
			return STORE_OK;
		}
		why_fail(why, whylen, store_name(st), res, err);
	}
	return STORE_TEMPFAIL;
}

void
deliver_store_files(struct puntset *ps, int first, struct store_item *items,
    int *idx, size_t n, const char *src_path, int src_fd, uint64_t wire_len,
    uint64_t body_octets, char *why, size_t whylen)
{
	struct store	*st;
	char		 err[256];
	size_t		 i, left = n;

	for (i = 0; i < n; i++) {
		items[i].res = STORE_TEMPFAIL;
		idx[i] = first;
	}
	/* One commit for all: the copies share the file's punt. */
	if (first >= 0 && (st = local_get(ps, first, why, whylen)) != NULL) {
		err[0] = '\0';
		if (store_put_file_batch(st, items, n, src_path, src_fd,
		    wire_len, body_octets, true, err, sizeof(err)) != STORE_OK)
			why_fail(why, whylen, store_name(st), STORE_TEMPFAIL,
			    err);
		for (i = 0; i < n; i++)
			if (items[i].res == STORE_OK)
				left--;
	}
	for (i = 0; i < n; i++) {
		if (items[i].res == STORE_OK)
			continue;
		items[i].res = deliver_store_file(ps, -1, items[i].env,
		    src_path, src_fd, wire_len, body_octets, &idx[i],
		    &items[i].id, --left == 0, &items[i].via, why, whylen);
		items[i].commit = 0;
		items[i].batch = 1;
	}
}
