/*
 * store_commitq: the punt's commit queue, the cross-process half of group
 * commit (store_put_batch in store_put.c).  PUNT/index/commitq is a small
 * file every process storing on the punt maps shared: a message whose
 * data is durable in tmp/ is put in a slot, then its process waits for
 * LMDB's write lock.  Whoever gets the lock takes every pending slot into
 * its own write transaction, so the messages that arrived while the
 * previous commit was flushing share one transaction, one fsync per spool
 * directory and one commit.  LMDB's robust write mutex is the only lock:
 * slots change state by compare-and-swap, and every decision about a
 * taken slot is made by the process holding the write lock.
 *
 * A slot's word is (generation << 8) | state:
 *	FREE -> FILLING (owner) -> PENDING (owner) -> TAKEN (lock holder)
 *	-> DONE_OK / DONE_FAIL (lock holder) -> FREE, gen + 1 (owner)
 * A taken slot's fate after its taker died or failed is read from the
 * index under the write lock (lstore_cq_sweep): ids are allocated inside
 * the record's own transaction, so next_id > id exactly when the
 * transaction that gave the slot its id committed.
 */

#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/log.h"
#include "store_int.h"

#define CQ_MAGIC	0x71706473u	/* "sdpq" */
#define CQ_VERSION	1
#define CQ_SLOTS	LSTORE_CQ_SLOTS
#define CQ_PATH		256
#define CQ_ENV		1024	/* host, sender, packed recipients */

enum { CQ_FREE, CQ_FILLING, CQ_PENDING, CQ_TAKEN, CQ_DONE_OK, CQ_DONE_FAIL };
#define CQ_STATE(w)	((w) & 0xffu)
#define CQ_GEN(w)	((w) >> 8)
#define CQ_WORD(g, s)	((((g) & 0xffffffu) << 8) | (s))

struct cq_slot {
	_Atomic uint32_t word;
	int32_t		 owner;		/* pid */
	_Atomic uint64_t id;		/* set by the taker before the rename */
	uint64_t	 commit;	/* LMDB txn id, with DONE_OK */
	uint32_t	 batch;		/* messages in that commit */
	uint32_t	 nrcpts;
	uint64_t	 octets, stored_octets;
	uint16_t	 path_len, host_len, sender_len, rcpts_len;
	char		 path[CQ_PATH];
	unsigned char	 env[CQ_ENV];
};

/* The header's fields let a test find the slots without this file. */
struct cq_file {
	uint32_t	 magic, version, nslots, slot_size, slot_off;
	uint32_t	 pad;
	struct cq_slot	 slots[CQ_SLOTS];
};

struct lstore_cq {
	struct cq_file	*f;
};

static struct lstore_cq	 no_cq;	/* tried and failed: solo commits */

/* Map the queue, creating and initialising it under flock. */
static struct cq_file *
cq_map(struct store *st)
{
	char		 path[PATH_MAX];
	struct stat	 sb;
	struct cq_file	*f = MAP_FAILED;
	int		 fd;

	if (snprintf(path, sizeof(path), "%s/index/commitq", st->path) >=
	    (int)sizeof(path))
		return NULL;
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	    0660)) == -1) {
		log_warn("store %s: %s (commits not shared)", st->name, path);
		return NULL;
	}
	if (flock(fd, LOCK_EX) == -1 || fstat(fd, &sb) == -1 ||
	    (sb.st_size < (off_t)sizeof(*f) &&
	    ftruncate(fd, sizeof(*f)) == -1))
		goto out;
	f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (f == MAP_FAILED)
		goto out;
	if (f->magic == 0) {
		f->version = CQ_VERSION;
		f->nslots = CQ_SLOTS;
		f->slot_size = sizeof(struct cq_slot);
		f->slot_off = offsetof(struct cq_file, slots);
		f->magic = CQ_MAGIC;
	}
	if (f->magic != CQ_MAGIC || f->version != CQ_VERSION ||
	    f->nslots != CQ_SLOTS || f->slot_size != sizeof(struct cq_slot)) {
		log_warnx("store %s: %s: unknown layout (commits not shared)",
		    st->name, path);
		munmap(f, sizeof(*f));
		f = MAP_FAILED;
	}
 out:
	if (f == MAP_FAILED)
		log_warn("store %s: %s (commits not shared)", st->name, path);
	/* Unlock by hand: the mapping keeps the open file (and a flock on
	 * it) alive after close. */
	(void)flock(fd, LOCK_UN);
	close(fd);
	return f == MAP_FAILED ? NULL : f;
}

static struct cq_file *
cq_get(struct store *st)
{
	struct lstore_cq	*cq;

	if (st->cq == NULL) {
		st->cq = &no_cq;
		if ((cq = calloc(1, sizeof(*cq))) != NULL &&
		    (cq->f = cq_map(st)) != NULL)
			st->cq = cq;
		else
			free(cq);
	}
	return st->cq->f;
}

void
lstore_cq_close(struct store *st)
{
	if (st->cq != NULL && st->cq != &no_cq) {
		munmap(st->cq->f, sizeof(*st->cq->f));
		free(st->cq);
	}
	st->cq = NULL;
}

static bool
owner_dead(const struct cq_slot *s)
{
	return s->owner <= 0 || (kill(s->owner, 0) == -1 && errno == ESRCH);
}

/* Slots a dead owner left (not TAKEN: that one the lock holder ends). */
static void
cq_reclaim(struct cq_file *f)
{
	struct cq_slot	*s;
	uint32_t	 w;
	int		 i;

	for (i = 0; i < CQ_SLOTS; i++) {
		s = &f->slots[i];
		w = atomic_load(&s->word);
		if (CQ_STATE(w) == CQ_FREE || CQ_STATE(w) == CQ_TAKEN ||
		    !owner_dead(s))
			continue;
		/* A dead owner's PENDING tmp file is fsck's (its pid). */
		atomic_compare_exchange_strong(&s->word, &w,
		    CQ_WORD(CQ_GEN(w) + 1, CQ_FREE));
	}
}

static int
cq_claim(struct cq_file *f, uint32_t *gen)
{
	uint32_t	 w;
	int		 i;

	for (i = 0; i < CQ_SLOTS; i++) {
		w = atomic_load(&f->slots[i].word);
		if (CQ_STATE(w) == CQ_FREE && atomic_compare_exchange_strong(
		    &f->slots[i].word, &w, CQ_WORD(CQ_GEN(w), CQ_FILLING))) {
			*gen = CQ_GEN(w);
			return i;
		}
	}
	return -1;
}

int
lstore_cq_put(struct store *st, const struct rec *r, const char *path,
    uint32_t *gen)
{
	struct cq_file	*f;
	struct cq_slot	*s;
	size_t		 plen = strlen(path);
	int		 i;

	if ((f = cq_get(st)) == NULL || plen >= CQ_PATH ||
	    r->host_len + r->sender_len + r->rcpts_len > CQ_ENV)
		return -1;
	if ((i = cq_claim(f, gen)) == -1) {
		cq_reclaim(f);
		if ((i = cq_claim(f, gen)) == -1)
			return -1;
	}
	s = &f->slots[i];
	s->owner = (int32_t)getpid();
	atomic_store(&s->id, 0);
	s->commit = 0;
	s->batch = 0;
	s->nrcpts = (uint32_t)r->nrcpts;
	s->octets = r->octets;
	s->stored_octets = r->stored_octets;
	s->path_len = (uint16_t)plen;
	memcpy(s->path, path, plen + 1);
	s->host_len = (uint16_t)r->host_len;
	s->sender_len = (uint16_t)r->sender_len;
	s->rcpts_len = (uint16_t)r->rcpts_len;
	memcpy(s->env, r->host, r->host_len);
	memcpy(s->env + r->host_len, r->sender, r->sender_len);
	memcpy(s->env + r->host_len + r->sender_len, r->rcpts, r->rcpts_len);
	atomic_store(&s->word, CQ_WORD(*gen, CQ_PENDING));
	return i;
}

/*
 * Under the write lock: settle every TAKEN slot whose taker is gone or
 * failed after its commit released the lock.  Nobody else holds the lock,
 * so no commit is in flight: next_id says whether the slot's id was
 * committed.
 */
int
lstore_cq_sweep(struct store *st, MDB_txn *txn)
{
	struct cq_file	*f;
	struct cq_slot	*s;
	uint64_t	 next, id;
	uint32_t	 w;
	int		 i;
	bool		 got = false;

	if ((f = cq_get(st)) == NULL)
		return 0;
	for (i = 0; i < CQ_SLOTS; i++) {
		s = &f->slots[i];
		w = atomic_load(&s->word);
		if (CQ_STATE(w) != CQ_TAKEN)
			continue;
		if (!got && lstore_meta_get_u64(st, txn, "next_id", &next) == -1)
			return -1;
		got = true;
		id = atomic_load(&s->id);
		atomic_compare_exchange_strong(&s->word, &w,
		    CQ_WORD(CQ_GEN(w), id != 0 && id < next ? CQ_DONE_OK :
		    CQ_DONE_FAIL));
	}
	return 0;
}

enum lstore_cq_state
lstore_cq_state(struct store *st, int slot, uint32_t gen, uint64_t *id,
    uint64_t *commit, unsigned *batch)
{
	struct cq_slot	*s = &st->cq->f->slots[slot];
	uint32_t	 w = atomic_load(&s->word);

	if (CQ_GEN(w) != (gen & 0xffffffu))
		return LSTORE_CQ_FAIL;		/* cannot happen: ours */
	switch (CQ_STATE(w)) {
	case CQ_DONE_OK:
		*id = atomic_load(&s->id);
		*commit = s->commit;
		*batch = s->batch;
		return LSTORE_CQ_OK;
	case CQ_DONE_FAIL:
		return LSTORE_CQ_FAIL;
	default:
		return LSTORE_CQ_PENDING;
	}
}

void
lstore_cq_free(struct store *st, int slot, uint32_t gen)
{
	atomic_store(&st->cq->f->slots[slot].word, CQ_WORD(gen + 1, CQ_FREE));
}

bool
lstore_cq_unqueue(struct store *st, int slot, uint32_t gen)
{
	uint32_t	 w = CQ_WORD(gen, CQ_PENDING);

	return atomic_compare_exchange_strong(&st->cq->f->slots[slot].word,
	    &w, CQ_WORD(gen + 1, CQ_FREE));
}

size_t
lstore_cq_take(struct store *st, struct lstore_bitem *out, size_t max)
{
	struct cq_file	*f;
	struct cq_slot	*s;
	struct rec	*r;
	uint32_t	 w;
	size_t		 n = 0;
	int		 i;

	if ((f = cq_get(st)) == NULL)
		return 0;
	for (i = 0; i < CQ_SLOTS && n < max; i++) {
		s = &f->slots[i];
		w = atomic_load(&s->word);
		if (CQ_STATE(w) != CQ_PENDING || !atomic_compare_exchange_strong(
		    &s->word, &w, CQ_WORD(CQ_GEN(w), CQ_TAKEN)))
			continue;
		memset(&out[n], 0, sizeof(out[n]));
		r = &out[n].r;
		r->host = (const char *)s->env;
		r->host_len = s->host_len;
		r->sender = (const char *)s->env + s->host_len;
		r->sender_len = s->sender_len;
		r->rcpts = s->env + s->host_len + s->sender_len;
		r->rcpts_len = s->rcpts_len;
		r->nrcpts = s->nrcpts;
		r->agent = "";
		r->octets = s->octets;
		r->stored_octets = s->stored_octets;
		out[n].path = s->path;
		out[n].slot = i;
		out[n].gen = CQ_GEN(w);
		out[n].res = STORE_TEMPFAIL;
		n++;
	}
	return n;
}

/* Under the write lock, before the rename: what a sweep will judge by. */
void
lstore_cq_set_id(struct store *st, const struct lstore_bitem *b,
    uint64_t id)
{
	if (b->slot >= 0)
		atomic_store(&st->cq->f->slots[b->slot].id, id);
}

/* Under the write lock, before the commit: what the owner will log. */
void
lstore_cq_stamp(struct store *st, const struct lstore_bitem *b,
    uint64_t commit, unsigned batch)
{
	if (b->slot >= 0) {
		st->cq->f->slots[b->slot].commit = commit;
		st->cq->f->slots[b->slot].batch = batch;
	}
}

/*
 * After the commit (or the failure): only the word changes, since once
 * the lock is released a sweep may have settled the slot and its owner
 * reused it; the compare-and-swap then fails, as it should.
 */
void
lstore_cq_done(struct store *st, const struct lstore_bitem *b)
{
	uint32_t	 w = CQ_WORD(b->gen, CQ_TAKEN);

	if (b->slot >= 0)
		atomic_compare_exchange_strong(&st->cq->f->slots[b->slot].word,
		    &w, CQ_WORD(b->gen, b->res == STORE_OK ? CQ_DONE_OK :
		    CQ_DONE_FAIL));
}
