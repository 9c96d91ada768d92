/*
 * punt: the generic half of the punt interface (punt.h): a struct punt is
 * a name, an operations table and the implementation's state; every
 * punt_* call is one indirect call through the table.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/config.h"
#include "sdps/punt.h"

struct punt {
	const struct punt_ops	*ops;
	void			*impl;
	char			 name[CONFIG_NAME_MAX + 1];
};

struct punt *
punt_new(const struct punt_ops *ops, void *impl, const char *name)
{
	struct punt	*p;

	if ((p = calloc(1, sizeof(*p))) == NULL) {
		ops->close(impl);
		return NULL;
	}
	p->ops = ops;
	p->impl = impl;
	snprintf(p->name, sizeof(p->name), "%s", name);
	return p;
}

void
punt_close(struct punt *p)
{
	if (p == NULL)
		return;
	p->ops->close(p->impl);
	free(p);
}

const char *
punt_name(const struct punt *p)
{
	return p->name;
}

const char *
punt_kind(const struct punt *p)
{
	return p->ops->kind;
}

uint64_t
punt_uid(const struct punt *p)
{
	return p->ops->uid(p->impl);
}

void
punt_uidl(const struct punt *p, uint64_t id, char *buf)
{
	p->ops->uidl(p->impl, id, buf);
}

bool
punt_health(struct punt *p)
{
	return p->ops->health(p->impl);
}

void
punt_maintain(struct punt *p)
{
	if (p->ops->maintain != NULL)
		p->ops->maintain(p->impl);
}

void
punt_lock_init(struct punt_lock *lk)
{
	lk->punt = NULL;
	lock_init(&lk->local);
	lk->impl = NULL;
}

enum store_res
punt_lock(struct punt *p, const char *host, const char *user,
    struct punt_lock *lk)
{
	enum store_res	 res;

	punt_lock_init(lk);
	if ((res = p->ops->lock(p->impl, host, user, lk)) == STORE_OK)
		lk->punt = p;
	return res;
}

void
punt_unlock_begin(struct punt_lock *lk)
{
	if (lk->punt != NULL && lk->punt->ops->unlock_begin != NULL)
		lk->punt->ops->unlock_begin(lk->punt->impl, lk);
}

void
punt_unlock(struct punt_lock *lk)
{
	if (lk->punt != NULL)
		lk->punt->ops->unlock(lk->punt->impl, lk);
	punt_lock_init(lk);
}

enum store_res
punt_list(struct punt *p, const char *host, const char *user,
    struct store_entry **out, size_t *n, char **env)
{
	return p->ops->list(p->impl, host, user, out, n, env);
}

enum store_res
punt_open_body(struct punt *p, uint64_t id, int flags, struct punt_body *b,
    struct store_msg *m)
{
	b->fd = -1;
	b->stream = NULL;
	b->punt = p;
	return p->ops->open_body(p->impl, id, flags, b, m);
}

enum store_res
punt_open_top(struct punt *p, uint64_t id, uint64_t lines,
    struct punt_body *b)
{
	enum store_res	 r;

	if (p->ops->open_top == NULL)
		return punt_open_body(p, id, 0, b, NULL);
	b->fd = -1;
	b->stream = NULL;
	b->punt = p;
	if ((r = p->ops->open_top(p->impl, id, lines, b)) != STORE_OK)
		b->punt = NULL;
	return r;
}

int
punt_begin(struct punt *p, const char *host, const char *user,
    uint64_t deadline_us)
{
	return p->ops->begin != NULL ? p->ops->begin(p->impl, host, user,
	    deadline_us) : 0;
}

ssize_t
punt_body_read(struct punt_body *b, void *buf, size_t len)
{
	return b->punt->ops->body_read(b->punt->impl, b, buf, len);
}

void
punt_body_close(struct punt_body *b)
{
	if (b->punt != NULL)
		b->punt->ops->body_close(b->punt->impl, b);
	b->fd = -1;
	b->stream = NULL;
	b->punt = NULL;
}

enum store_res
punt_mark_read(struct punt *p, const uint64_t *ids, size_t n)
{
	return p->ops->mark_read(p->impl, ids, n);
}

void
punt_remove_begin(struct punt *p, const uint64_t *ids, size_t n,
    const char *user)
{
	if (p->ops->remove_begin != NULL)
		p->ops->remove_begin(p->impl, ids, n, user);
}

enum store_res
punt_remove(struct punt *p, const uint64_t *ids, size_t n, const char *user)
{
	return p->ops->remove(p->impl, ids, n, user);
}

enum store_res
punt_claim(struct punt *p, uint64_t id, const char *agent)
{
	return p->ops->claim(p->impl, id, agent);
}

enum store_res
punt_release(struct punt *p, uint64_t id)
{
	return p->ops->release(p->impl, id);
}

enum store_res
punt_done(struct punt *p, uint64_t id)
{
	return p->ops->done(p->impl, id);
}

enum store_res
punt_put(struct punt *p, const struct store_envelope *env, const void *wire,
    size_t wire_len, uint64_t body_octets, uint64_t *id, char *err,
    size_t errlen)
{
	return p->ops->put(p->impl, env, wire, wire_len, body_octets, id, err,
	    errlen);
}

enum store_res
punt_put_file(struct punt *p, const struct store_envelope *env, int fd,
    uint64_t wire_len, uint64_t body_octets, uint64_t *id, char *err,
    size_t errlen)
{
	/* The local punt takes files through store_put_file (deliver.c),
	 * which can link the streamed tmp file instead of copying it. */
	if (p->ops->put_file == NULL) {
		snprintf(err, errlen, "punt %s: no put_file", p->name);
		return STORE_TEMPFAIL;
	}
	return p->ops->put_file(p->impl, env, fd, wire_len, body_octets, id,
	    err, errlen);
}

enum store_res
punt_stat(struct punt *p, struct store_stat *out)
{
	return p->ops->stat(p->impl, out);
}

struct store *
punt_local_store(struct punt *p)
{
	return p->ops->local_store != NULL ? p->ops->local_store(p->impl) :
	    NULL;
}
