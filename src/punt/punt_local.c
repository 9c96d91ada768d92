/*
 * punt_local: the first punt implementation, today's LMDB index plus
 * spool directory (store.h), with the maildrop lock in the front end's
 * RUN_DIR (lock.h).  Everything LMDB-specific stays here: the map size
 * and claim lease go in at open, and maintain() is LMDB's reader check,
 * which clears the reader slots of a process that died.  What is left
 * outside: the POP3 daemon's scoreboard still carries the "a worker
 * died" flag that makes a worker call puntset_maintain(), and the config
 * still caps max_workers + lmtp_workers by LMDB's reader slots.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/config.h"
#include "sdps/punt.h"

struct local {
	struct store	*st;
	char		 name[CONFIG_NAME_MAX + 1];
	char		 run_dir[PATH_MAX];
};

static void
l_close(void *impl)
{
	struct local	*l = impl;

	store_close(l->st);
	free(l);
}

static bool
l_health(void *impl)
{
	return store_is_available(((struct local *)impl)->st);
}

static void
l_maintain(void *impl)
{
	store_reader_check(((struct local *)impl)->st);
}

static uint64_t
l_uid(void *impl)
{
	return store_uid(((struct local *)impl)->st);
}

static void
l_uidl(void *impl, uint64_t id, char *buf)
{
	store_uidl(((struct local *)impl)->st, id, buf);
}

static enum store_res
l_lock(void *impl, const char *host, const char *user, struct punt_lock *lk)
{
	struct local	*l = impl;

	switch (lock_take(l->run_dir, l->name, host, user, &lk->local)) {
	case LOCK_OK:
		return STORE_OK;
	case LOCK_BUSY:
		lock_release(&lk->local);
		return STORE_BUSY;
	case LOCK_ERR:
		break;
	}
	lock_release(&lk->local);
	return STORE_TEMPFAIL;
}

static void
l_unlock(void *impl, struct punt_lock *lk)
{
	(void)impl;
	lock_release(&lk->local);
}

static enum store_res
l_list(void *impl, const char *host, const char *user,
    struct store_entry **out, size_t *n, char **env)
{
	return store_list(((struct local *)impl)->st, host, user, out, n,
	    env) == 0 ? STORE_OK : STORE_TEMPFAIL;
}

static enum store_res
l_open_body(void *impl, uint64_t id, int flags, struct punt_body *b,
    struct store_msg *m)
{
	struct local	*l = impl;

	if (flags & PUNT_BODY_ADMIN)
		return store_msg_open_admin(l->st, id, &b->fd, m);
	return store_msg_open(l->st, id, &b->fd, m);
}

static ssize_t
l_body_read(void *impl, struct punt_body *b, void *buf, size_t len)
{
	(void)impl;
	return read(b->fd, buf, len);
}

static void
l_body_close(void *impl, struct punt_body *b)
{
	(void)impl;
	if (b->fd != -1)
		close(b->fd);
}

static enum store_res
l_mark_read(void *impl, const uint64_t *ids, size_t n)
{
	return store_mark_read(((struct local *)impl)->st, ids, n) == 0 ?
	    STORE_OK : STORE_TEMPFAIL;
}

static enum store_res
l_remove(void *impl, const uint64_t *ids, size_t n, const char *user)
{
	return store_remove(((struct local *)impl)->st, ids, n, user);
}

static enum store_res
l_claim(void *impl, uint64_t id, const char *agent)
{
	return store_claim(((struct local *)impl)->st, id, agent);
}

static enum store_res
l_release(void *impl, uint64_t id)
{
	return store_release(((struct local *)impl)->st, id);
}

static enum store_res
l_done(void *impl, uint64_t id)
{
	return store_done(((struct local *)impl)->st, id);
}

static enum store_res
l_put(void *impl, const struct store_envelope *env, const void *wire,
    size_t wire_len, uint64_t body_octets, uint64_t *id, char *err,
    size_t errlen)
{
	return store_put(((struct local *)impl)->st, env, wire, wire_len,
	    body_octets, id, err, errlen);
}

static enum store_res
l_stat(void *impl, struct store_stat *out)
{
	return store_stat(((struct local *)impl)->st, out) == 0 ? STORE_OK :
	    STORE_TEMPFAIL;
}

static struct store *
l_local_store(void *impl)
{
	return ((struct local *)impl)->st;
}

static const struct punt_ops local_ops = {
	.kind = "local",
	.close = l_close,
	.health = l_health,
	.maintain = l_maintain,
	.uid = l_uid,
	.uidl = l_uidl,
	.lock = l_lock,
	.unlock = l_unlock,
	.list = l_list,
	.open_body = l_open_body,
	.body_read = l_body_read,
	.body_close = l_body_close,
	.mark_read = l_mark_read,
	.remove = l_remove,
	.claim = l_claim,
	.release = l_release,
	.done = l_done,
	.put = l_put,
	.stat = l_stat,
	.local_store = l_local_store,
};

struct punt *
punt_local_open(const char *path, const char *name, const char *run_dir,
    uint64_t map_size, unsigned claim_lease_s, char *err, size_t errlen)
{
	struct store_opts	 o;
	struct local		*l;
	struct punt		*p;

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	memset(&o, 0, sizeof(o));
	o.map_size = map_size;
	o.claim_lease_s = claim_lease_s;
	if ((l->st = store_open(path, name, &o, err, errlen)) == NULL) {
		free(l);
		return NULL;
	}
	snprintf(l->name, sizeof(l->name), "%s", name);
	snprintf(l->run_dir, sizeof(l->run_dir), "%s", run_dir);
	if ((p = punt_new(&local_ops, l, name)) == NULL)
		snprintf(err, errlen, "out of memory");
	return p;
}
