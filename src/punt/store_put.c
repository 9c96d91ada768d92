/*
 * store_put: storing a message durably in the local punt store
 * (docs/design.md §5): data to tmp/, fsync, rename into spool/, directory
 * fsync, then the index commit.  store_put takes the data from memory,
 * store_put_file from a file already written (LMTP).
 */

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "sdps/fault.h"
#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "store_int.h"

/* Check an envelope and pack its recipients; returns a malloc'd list. */
static unsigned char *
pack_rcpts(const struct store_envelope *env, size_t *lenp)
{
	char		 norm[UTIL_HOST_MAX + 1];
	unsigned char	*p;
	size_t		 i, len = 0, off = 0, rl;

	if (env->host == NULL || util_host_normalize(env->host, norm) == -1 ||
	    strcmp(norm, env->host) != 0 || env->sender == NULL ||
	    strlen(env->sender) > UTIL_SENDER_MAX || env->nrcpts == 0 ||
	    env->nrcpts > REC_RCPTS_MAX)
		return NULL;
	/* The sender goes into a Return-Path line: no CR, LF or blanks. */
	for (i = 0; env->sender[i] != '\0'; i++)
		if ((unsigned char)env->sender[i] <= ' ' ||
		    (unsigned char)env->sender[i] >= 0x7f)
			return NULL;
	for (i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i] == NULL ||
		    util_user_normalize(env->rcpts[i], norm) == -1 ||
		    strcmp(norm, env->rcpts[i]) != 0)
			return NULL;
		len += 1 + strlen(env->rcpts[i]);
	}
	if ((p = malloc(len)) == NULL)
		return NULL;
	for (i = 0; i < env->nrcpts; i++) {
		rl = strlen(env->rcpts[i]);
		p[off] = (unsigned char)rl;
		memcpy(p + off + 1, env->rcpts[i], rl);
		off += 1 + rl;
	}
	*lenp = len;
	return p;
}

/* A fresh tmp/ name: the pid first, so fsck can tell a live writer's. */
static int
tmp_name(struct store *st, char *path, size_t pathlen)
{
	int	 n;

	n = snprintf(path, pathlen, "%s/%ld.%llx.%u", st->tmp, (long)getpid(),
	    (unsigned long long)util_now_us(), st->tmp_seq++);
	if (n < 0 || (size_t)n >= pathlen) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Write data to a fresh tmp file and fsync it; returns 0 or -1 (errno). */
static int
write_tmp(struct store *st, const void *data, size_t len, char *path,
    size_t pathlen)
{
	int	 fd, serrno;

	if (tmp_name(st, path, pathlen) == -1)
		return -1;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0660)) == -1)
		return -1;
	if (util_write_all(fd, data, len) == -1)
		goto fail;
	fault_point("store.put.tmp_written");
	if (fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		serrno = errno;
		unlink(path);
		errno = serrno;
		return -1;
	}
	fault_point("store.put.fsynced");
	return 0;
 fail:
	serrno = errno;
	close(fd);
	unlink(path);
	errno = serrno;
	return -1;
}

/* mkdir spool/XX on demand; a new one is made durable in spool/. */
static int
spool_subdir(struct store *st, uint64_t id, char *dir, size_t dirlen,
    char *err, size_t errlen)
{
	int	 n;

	n = snprintf(dir, dirlen, "%s/%02x", st->spool, (unsigned)(id & 0xff));
	if (n < 0 || (size_t)n >= dirlen) {
		lstore_seterr(err, errlen, "spool path too long");
		return -1;
	}
	if (mkdir(dir, 0770) == 0) {
		if (util_fsync_dir(st->spool) == -1) {
			lstore_seterr(err, errlen, "fsync %s: %s", st->spool,
			    strerror(errno));
			return -1;
		}
	} else if (errno != EEXIST) {
		lstore_seterr(err, errlen, "mkdir %s: %s", dir,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/* The index record for env; *rcpts is the caller's to free. */
static int
put_file_rec(const struct store_envelope *env, uint64_t wire_len,
    uint64_t body_octets, struct rec *r, unsigned char **rcpts)
{
	memset(r, 0, sizeof(*r));
	if ((*rcpts = pack_rcpts(env, &r->rcpts_len)) == NULL)
		return -1;
	r->rcpts = *rcpts;
	r->nrcpts = env->nrcpts;
	r->host = env->host;
	r->host_len = strlen(env->host);
	r->sender = env->sender;
	r->sender_len = strlen(env->sender);
	r->agent = "";
	r->stored_octets = wire_len;
	r->octets = body_octets + RETURN_PATH_OCTETS(env->sender);
	return 0;
}

/*
 * ---- Group commit (docs/design.md §18.5) ----
 *
 * Every store ends here: files already durable in tmp/ get their ids,
 * their spool names and their records in one write transaction, whose
 * commit is the moment they are stored.  The rename happens under the
 * write lock, so fsck (which removes orphans inside a write transaction)
 * never sees a file between its rename and its commit; a crash there
 * leaves an orphan under an id no commit has spent, which fsck --repair
 * removes and a later store of that id replaces by rename.
 */

/* Rename b's file to id's spool name; sets the fan-out bit. */
static int
batch_rename(struct store *st, struct lstore_bitem *b, uint64_t id,
    unsigned char *fans, char *why, size_t whylen)
{
	char		 final[PATH_MAX], dir[PATH_MAX];
	struct stat	 sb;

	lstore_cq_set_id(st, b, id);	/* before the name can exist */
	if (lstore_spool_path(st, id, final, sizeof(final)) == -1) {
		lstore_seterr(why, whylen, "spool path too long");
		goto fail;
	}
	if (spool_subdir(st, id, dir, sizeof(dir), why, whylen) == -1)
		goto fail;
	if (rename(b->path, final) == -1) {
		lstore_seterr(why, whylen, "rename %s: %s", b->path,
		    strerror(errno));
		goto fail;
	}
	fault_point("store.put.renamed");
	if (stat(final, &sb) == -1 || (uint64_t)sb.st_size !=
	    b->r.stored_octets) {
		lstore_seterr(why, whylen, "%s: not the size stored", final);
		unlink(final);		/* under the lock: no one else's */
		goto fail;
	}
	b->id = id;
	fans[(id & 0xff) >> 3] |= (unsigned char)(1u << (id & 7));
	return 0;
 fail:
	log_warnx("store %s: %s", st->name, why);
	lstore_cq_set_id(st, b, 0);
	return -1;
}

/* fsync every spool directory a rename touched. */
static int
batch_sync_dirs(struct store *st, const unsigned char *fans, char *why,
    size_t whylen)
{
	char		 dir[PATH_MAX];
	unsigned	 fan;

	for (fan = 0; fan < 256; fan++) {
		if ((fans[fan >> 3] & (1u << (fan & 7))) == 0)
			continue;
		if (snprintf(dir, sizeof(dir), "%s/%02x", st->spool, fan) >=
		    (int)sizeof(dir) || util_fsync_dir(dir) == -1) {
			lstore_seterr(why, whylen, "fsync %s: %s", dir,
			    strerror(errno));
			return -1;
		}
	}
	fault_point("store.put.dir_fsynced");
	return 0;
}

/* Records and next_id into txn; the batch's size goes to every slot. */
static int
batch_records(struct store *st, MDB_txn *txn, struct lstore_bitem *b,
    size_t n, uint64_t next, unsigned nok, char *why, size_t whylen)
{
	unsigned char	 nb[8];
	uint64_t	 now = util_now_us(), commit = mdb_txn_id(txn);
	size_t		 i;
	int		 rc;

	for (i = 0; i < n; i++) {
		if (b[i].id == 0)
			continue;
		b[i].r.arrival_us = now;
		if (lstore_rec_insert(st, txn, b[i].id, &b[i].r) == -1) {
			lstore_seterr(why, whylen, "index write failed");
			return -1;
		}
		lstore_cq_stamp(st, &b[i], commit, nok);
	}
	rec_put_le64(nb, next);
	if ((rc = lstore_meta_put(txn, st->meta, "next_id", nb, 8)) != 0) {
		lstore_seterr(why, whylen, "mdb_put next_id: %s",
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/*
 * One write transaction for b[0..n): ids, renames, directory fsyncs,
 * records, commit.  Consumes txn.  b[i].res is STORE_OK for what the
 * commit stored.
 */
static void
batch_run(struct store *st, MDB_txn *txn, struct lstore_bitem *b, size_t n,
    char *why, size_t whylen)
{
	unsigned char	 fans[32];
	char		 final[PATH_MAX];
	uint64_t	 next, commit = mdb_txn_id(txn);
	unsigned	 nok = 0;
	size_t		 i;

	memset(fans, 0, sizeof(fans));
	if (lstore_meta_get_u64(st, txn, "next_id", &next) == -1) {
		lstore_seterr(why, whylen, "index unavailable");
		mdb_txn_abort(txn);
		return;
	}
	for (i = 0; i < n; i++)
		if (batch_rename(st, &b[i], next, fans, why, whylen) == 0) {
			next++;
			nok++;
		}
	if (nok == 0 || batch_sync_dirs(st, fans, why, whylen) == -1 ||
	    batch_records(st, txn, b, n, next, nok, why, whylen) == -1)
		goto undo;
	fault_point("store.put.before_commit");
	/* A failed commit leaves the files: an orphan is fsck's, and a
	 * commit that failed late may yet be on disk. */
	if (lstore_txn_commit(st, txn) == -1) {
		lstore_seterr(why, whylen, "index commit failed");
		return;
	}
	for (i = 0; i < n; i++)
		if (b[i].id != 0) {
			b[i].res = STORE_OK;
			if (b[i].item != NULL) {
				b[i].item->commit = commit;
				b[i].item->batch = nok;
			}
		}
	/* Durable now; a kill here is stored messages never acknowledged. */
	fault_point("store.put.committed");
	return;
 undo:
	/* Still under the lock: the names are no one else's yet. */
	for (i = 0; i < n; i++)
		if (b[i].id != 0) {
			if (lstore_spool_path(st, b[i].id, final,
			    sizeof(final)) == 0)
				unlink(final);
			lstore_cq_set_id(st, &b[i], 0);
			b[i].id = 0;
		}
	mdb_txn_abort(txn);
}

/* My queued item's outcome, read from its slot (then freed). */
static void
batch_collect(struct store *st, struct lstore_bitem *b)
{
	struct store_item *it = b->item;
	unsigned	 batch = 0;

	switch (lstore_cq_state(st, b->slot, b->gen, &b->id, &it->commit,
	    &batch)) {
	case LSTORE_CQ_PENDING:
		return;
	case LSTORE_CQ_OK:
		it->res = STORE_OK;
		it->id = b->id;
		it->batch = batch;
		break;
	case LSTORE_CQ_FAIL:
		it->res = STORE_TEMPFAIL;
		break;
	}
	lstore_cq_free(st, b->slot, b->gen);
	b->slot = -1;
	b->item = NULL;
}

/*
 * Under the write lock: settle slots, collect what others committed for
 * me, and if anything of mine is left, lead a batch with every pending
 * slot.  b holds nb own items; room for LSTORE_CQ_SLOTS more after them.
 */
static void
batch_lead(struct store *st, MDB_txn *txn, struct lstore_bitem *b, size_t nb,
    char *why, size_t whylen)
{
	struct lstore_bitem *run = b + nb;
	size_t		 i, nrun = 0;
	bool		 mine = false;

	if (lstore_cq_sweep(st, txn) == -1) {
		lstore_seterr(why, whylen, "index unavailable");
		mdb_txn_abort(txn);
		return;
	}
	for (i = 0; i < nb; i++) {
		if (b[i].slot >= 0)
			batch_collect(st, &b[i]);
		if (b[i].item != NULL)
			mine = true;
	}
	if (!mine) {
		mdb_txn_abort(txn);
		return;
	}
	/* Unqueued items of mine first, then every pending slot (mine
	 * among them). */
	for (i = 0; i < nb; i++)
		if (b[i].item != NULL && b[i].slot < 0)
			run[nrun++] = b[i];
	nrun += lstore_cq_take(st, run + nrun, LSTORE_CQ_SLOTS);
	fault_point("store.batch.taken");
	batch_run(st, txn, run, nrun, why, whylen);
	for (i = 0; i < nrun; i++) {
		lstore_cq_done(st, &run[i]);
		if (run[i].slot < 0 && run[i].item != NULL) {
			run[i].item->res = run[i].res;
			run[i].item->id = run[i].id;
		}
	}
	for (i = 0; i < nb; i++)
		if (b[i].slot >= 0)
			batch_collect(st, &b[i]);
}

/* The write lock could not be had: take my slots back, if still mine. */
static void
batch_unqueue(struct store *st, struct lstore_bitem *b, size_t nb)
{
	size_t	 i;

	for (i = 0; i < nb; i++)
		if (b[i].slot >= 0 && !lstore_cq_unqueue(st, b[i].slot,
		    b[i].gen))
			batch_collect(st, &b[i]);
}

enum store_res
store_put_batch(struct store *st, struct store_item *items, size_t n,
    char *err, size_t errlen)
{
	struct lstore_bitem *b;
	unsigned char	**mem;
	MDB_txn		*txn;
	char		 why[PATH_MAX + 64];
	enum store_res	 res = STORE_OK;
	size_t		 i, nb = 0;
	bool		 queued = false;

	why[0] = '\0';
	b = calloc(n + LSTORE_CQ_SLOTS, sizeof(*b));
	mem = calloc(n + 1, sizeof(*mem));
	for (i = 0; i < n; i++) {
		items[i].res = STORE_TEMPFAIL;
		items[i].id = items[i].commit = 0;
		items[i].batch = 0;
		if (b == NULL || mem == NULL)
			continue;
		if (put_file_rec(items[i].env, items[i].wire_len,
		    items[i].body_octets, &b[nb].r, &mem[i]) == -1) {
			items[i].res = STORE_PERMFAIL;
			lstore_seterr(why, sizeof(why), "bad envelope");
			continue;
		}
		b[nb].path = items[i].path;
		b[nb].item = &items[i];
		b[nb].slot = lstore_cq_put(st, &b[nb].r, items[i].path,
		    &b[nb].gen);
		queued |= b[nb].slot >= 0;
		nb++;
	}
	if (queued)
		fault_point("store.batch.queued");
	if (nb > 0) {
		if (lstore_txn_begin(st, 0, &txn) == -1) {
			lstore_seterr(why, sizeof(why), "index unavailable");
			batch_unqueue(st, b, nb);
		} else
			batch_lead(st, txn, b, nb, why, sizeof(why));
	} else if (b == NULL || mem == NULL)
		lstore_seterr(why, sizeof(why), "out of memory");
	for (i = 0; i < n; i++) {
		free(mem != NULL ? mem[i] : NULL);
		if (items[i].res != STORE_OK && res == STORE_OK)
			res = items[i].res;
	}
	free(mem);
	free(b);
	if (res != STORE_OK) {
		if (why[0] == '\0')
			snprintf(why, sizeof(why), "the shared commit failed");
		log_warnx("store %s: store failed: %s", st->name, why);
		lstore_seterr(err, errlen, "%s", why);
	}
	return res;
}

/* One item of store_put_batch, for store_put and store_put_file. */
static enum store_res
put_one(struct store *st, struct store_item *it, uint64_t *id, char *err,
    size_t errlen)
{
	enum store_res	 res;

	res = store_put_batch(st, it, 1, err, errlen);
	*id = it->id;
	return res;
}

enum store_res
store_put(struct store *st, const struct store_envelope *env,
    const void *wire, size_t wire_len, uint64_t body_octets, uint64_t *id,
    char *err, size_t errlen)
{
	struct store_item it = { .env = env, .wire_len = wire_len,
			    .body_octets = body_octets };
	char		 tmp[PATH_MAX];
	unsigned char	*rcpts;
	struct rec	 r;
	enum store_res	 res;

	/* A bad envelope is refused before anything is written. */
	if (put_file_rec(env, wire_len, body_octets, &r, &rcpts) == -1) {
		lstore_seterr(err, errlen, "bad envelope");
		return STORE_PERMFAIL;
	}
	free(rcpts);
	/* The data is durable in tmp/ before it is given an id. */
	if (write_tmp(st, wire, wire_len, tmp, sizeof(tmp)) == -1) {
		lstore_seterr(err, errlen, "write %s/: %s", st->tmp,
		    strerror(errno));
		log_warnx("store %s: store failed: %s", st->name, err);
		return STORE_TEMPFAIL;
	}
	it.path = tmp;
	if ((res = put_one(st, &it, id, err, errlen)) != STORE_OK)
		unlink(tmp);	/* if the batch did not take it */
	return res;
}

/*
 * ---- Storing a message whose wire-format data is already in a file ----
 *
 * LMTP streams DATA into a tmp file of one punt instead of holding it in
 * memory (issue 8, finding 5); each recipient host's copy then reaches
 * its punt by rename(2) or link(2) (same filesystem: no data written
 * twice) or by copy_file_range(2), and from there takes the same durable
 * path as store_put: tmp/ -> fsync -> rename into spool/ -> directory
 * fsync -> index commit.  put_file_rec() and put_file_tail() are
 * store_put's envelope check and durable tail (from alloc_id on) for a
 * file already in tmp/; store_put calls them too.
 */

#define COPY_CHUNK	(64 * 1024)

int
store_tmp_open(struct store *st, char *path, size_t pathlen)
{
	if (tmp_name(st, path, pathlen) == -1)
		return -1;
	return open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
}

/* Copy len octets of src into the new file path and fsync it. */
static int
copy_to_tmp(int src, uint64_t len, const char *path)
{
	char		 buf[COPY_CHUNK];
	loff_t		 off = 0;
	ssize_t		 n;
	int		 fd, serrno;
	bool		 plain = false;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0660)) == -1)
		return -1;
	while ((uint64_t)off < len) {
		if (!plain) {
			n = copy_file_range(src, &off, fd, NULL,
			    (size_t)(len - (uint64_t)off < SSIZE_MAX ?
			    len - (uint64_t)off : SSIZE_MAX), 0);
			if (n > 0)
				continue;
			if (n == -1 && errno == EINTR)
				continue;
			/* Older kernels refuse across filesystems, some
			 * filesystems not at all: copy through a buffer. */
			if (n == -1 && (errno == EXDEV || errno == EINVAL ||
			    errno == ENOSYS || errno == EOPNOTSUPP ||
			    errno == EPERM)) {
				plain = true;
				continue;
			}
			if (n == 0)
				errno = EIO;	/* source shorter than len */
			goto fail;
		}
		n = pread(src, buf, sizeof(buf) < len - (uint64_t)off ?
		    sizeof(buf) : (size_t)(len - (uint64_t)off), off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			goto fail;
		}
		if (util_write_all(fd, buf, (size_t)n) == -1)
			goto fail;
		off += n;
	}
	if (fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	return 0;
 fail:
	serrno = errno;
	if (fd != -1)
		close(fd);
	unlink(path);
	errno = serrno;
	return -1;
}

/*
 * items[i]'s file: src_path itself (the last item, with last, on the same
 * filesystem), a link of it in st's tmp/, or a copy there, fsynced.  The
 * name goes to tmp; -1 with why.
 */
static int
file_prepare(struct store *st, struct store_item *it, const char *src_path,
    int src_fd, uint64_t wire_len, bool take_src, bool same_fs, char *tmp,
    size_t tmplen, char *why, size_t whylen)
{
	it->via = STORE_VIA_COPY;
	if (take_src && same_fs && access(src_path, F_OK) == 0) {
		it->via = STORE_VIA_RENAME;
		snprintf(tmp, tmplen, "%s", src_path);
		return 0;
	}
	if (tmp_name(st, tmp, tmplen) == -1) {
		lstore_seterr(why, whylen, "tmp path too long");
		return -1;
	}
	if (same_fs && link(src_path, tmp) == 0) {
		it->via = STORE_VIA_LINK;
		return 0;
	}
	if (copy_to_tmp(src_fd, wire_len, tmp) == -1) {
		lstore_seterr(why, whylen, "copy to %s/: %s", st->tmp,
		    strerror(errno));
		return -1;
	}
	return 0;
}

enum store_res
store_put_file_batch(struct store *st, struct store_item *items, size_t n,
    const char *src_path, int src_fd, uint64_t wire_len,
    uint64_t body_octets, bool last, char *err, size_t errlen)
{
	struct stat	 ssb, tsb;
	char		(*tmp)[PATH_MAX];
	size_t		 i, k = 0;
	enum store_res	 res = STORE_OK;
	bool		 same_fs;

	if (n == 0)
		return STORE_OK;
	for (i = 0; i < n; i++) {
		items[i].res = STORE_TEMPFAIL;
		items[i].via = STORE_VIA_COPY;
	}
	if (wire_len > SIZE_MAX || fstat(src_fd, &ssb) == -1 ||
	    stat(st->tmp, &tsb) == -1) {
		lstore_seterr(err, errlen, "stat %s/: %s", st->tmp,
		    strerror(errno));
		goto fail;
	}
	same_fs = ssb.st_dev == tsb.st_dev;
	if ((tmp = calloc(n, sizeof(*tmp))) == NULL) {
		lstore_seterr(err, errlen, "out of memory");
		goto fail;
	}
	/*
	 * The same filesystem: the already fsynced data gets its spool names
	 * by hard links into tmp/ and, for the last copy, by a rename of the
	 * source; any name becomes durable with the spool directory's fsync.
	 * Otherwise a copy, fsynced before it counts.
	 */
	for (k = 0; k < n; k++) {
		items[k].wire_len = wire_len;
		items[k].body_octets = body_octets;
		items[k].path = tmp[k];
		if (file_prepare(st, &items[k], src_path, src_fd, wire_len,
		    last && k + 1 == n, same_fs, tmp[k], sizeof(tmp[k]), err,
		    errlen) == -1)
			break;
	}
	if (k == n)
		res = store_put_batch(st, items, n, err, errlen);
	for (i = 0; i < k; i++)
		if (items[i].res != STORE_OK && items[i].via != STORE_VIA_RENAME)
			unlink(tmp[i]);	/* if the batch did not take it */
	free(tmp);
	if (k == n)
		return res;
 fail:
	log_warnx("store %s: store failed: %s", st->name, err);
	return STORE_TEMPFAIL;
}

enum store_res
store_put_file(struct store *st, const struct store_envelope *env,
    const char *src_path, int src_fd, uint64_t wire_len,
    uint64_t body_octets, bool last, uint64_t *id, enum store_via *via,
    char *err, size_t errlen)
{
	struct store_item it = { .env = env };
	enum store_res	 res;

	res = store_put_file_batch(st, &it, 1, src_path, src_fd, wire_len,
	    body_octets, last, err, errlen);
	*id = it.id;
	*via = it.via;
	return res;
}
