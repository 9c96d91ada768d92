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

/* Take the next id in its own commit: ids are never reused. */
static int
alloc_id(struct store *st, uint64_t *id)
{
	MDB_txn		*txn;
	unsigned char	 b[8];
	int		 rc;

	if (lstore_txn_begin(st, 0, &txn) == -1)
		return -1;
	if (lstore_meta_get_u64(st, txn, "next_id", id) == -1)
		goto abort;
	rec_put_le64(b, *id + 1);
	if ((rc = lstore_meta_put(txn, st->meta, "next_id", b, 8)) != 0) {
		log_warnx("store %s: mdb_put next_id: %s", st->name,
		    mdb_strerror(rc));
		goto abort;
	}
	fault_point("store.put.id_before_commit");
	if (lstore_txn_commit(st, txn) == -1)
		return -1;
	fault_point("store.put.id_committed");
	return 0;
 abort:
	mdb_txn_abort(txn);
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

static int
commit_record(struct store *st, uint64_t id, const char *final,
    struct rec *r, size_t wire_len, char *err, size_t errlen)
{
	struct stat	 sb;
	MDB_txn		*txn;

	if (lstore_txn_begin(st, 0, &txn) == -1) {
		lstore_seterr(err, errlen, "index unavailable");
		return -1;
	}
	/*
	 * Check the file under the write lock: fsck removes orphans inside
	 * a write transaction, so either it saw this record or the file is
	 * gone now and the store fails instead of committing a dangling one.
	 */
	if (stat(final, &sb) == -1 || (size_t)sb.st_size != wire_len) {
		lstore_seterr(err, errlen, "%s vanished before commit", final);
		goto abort;
	}
	r->arrival_us = util_now_us();
	if (lstore_rec_insert(st, txn, id, r) == -1) {
		lstore_seterr(err, errlen, "index write failed");
		goto abort;
	}
	fault_point("store.put.before_commit");
	if (lstore_txn_commit(st, txn) == -1) {
		lstore_seterr(err, errlen, "index commit failed");
		return -1;
	}
	return 0;
 abort:
	mdb_txn_abort(txn);
	return -1;
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
 * tmp (durable data) -> spool, directory fsync, commit: the tail that
 * store_put and store_put_file share, with their crash points.
 * With own_tmp a failure before the rename removes tmp; without, tmp is
 * the caller's.  (After the rename a failure removes the spool name.)
 */
static int
put_file_tail(struct store *st, const char *tmp, struct rec *r,
    uint64_t wire_len, uint64_t *id, char *why, size_t whylen, bool own_tmp)
{
	char		 final[PATH_MAX], dir[PATH_MAX];
	uint64_t	 nid;

	if (alloc_id(st, &nid) == -1) {
		lstore_seterr(why, whylen, "cannot allocate an id");
		goto fail_tmp;
	}
	if (lstore_spool_path(st, nid, final, sizeof(final)) == -1) {
		lstore_seterr(why, whylen, "spool path too long");
		goto fail_tmp;
	}
	if (spool_subdir(st, nid, dir, sizeof(dir), why, whylen) == -1)
		goto fail_tmp;
	if (rename(tmp, final) == -1) {
		lstore_seterr(why, whylen, "rename %s: %s", final,
		    strerror(errno));
		goto fail_tmp;
	}
	fault_point("store.put.renamed");
	if (util_fsync_dir(dir) == -1) {
		lstore_seterr(why, whylen, "fsync spool: %s", strerror(errno));
		goto fail_final;
	}
	fault_point("store.put.dir_fsynced");
	if (commit_record(st, nid, final, r, (size_t)wire_len, why,
	    whylen) == -1)
		goto fail_final;
	/* Durable now; a kill here is a stored message never acknowledged. */
	fault_point("store.put.committed");
	*id = nid;
	return 0;
 fail_final:
	unlink(final);
	return -1;
 fail_tmp:
	if (own_tmp)
		unlink(tmp);
	return -1;
}

/*
 * The one exit of store_put and store_put_file once the record is built:
 * rc 0 stored, -1 not (logged, the reason why also in err).
 */
static enum store_res
put_done(struct store *st, int rc, unsigned char *rcpts, const char *why,
    char *err, size_t errlen)
{
	free(rcpts);
	if (rc == 0)
		return STORE_OK;
	log_warnx("store %s: store failed: %s", st->name, why);
	lstore_seterr(err, errlen, "%s", why);
	return STORE_TEMPFAIL;
}

enum store_res
store_put(struct store *st, const struct store_envelope *env,
    const void *wire, size_t wire_len, uint64_t body_octets, uint64_t *id,
    char *err, size_t errlen)
{
	char		 tmp[PATH_MAX];
	char		 why[PATH_MAX + 64];
	unsigned char	*rcpts;
	struct rec	 r;

	if (put_file_rec(env, wire_len, body_octets, &r, &rcpts) == -1) {
		lstore_seterr(err, errlen, "bad envelope");
		return STORE_PERMFAIL;
	}
	/* The data is durable in tmp/ before an id is spent on it. */
	if (write_tmp(st, wire, wire_len, tmp, sizeof(tmp)) == -1) {
		lstore_seterr(why, sizeof(why), "write %s/: %s", st->tmp,
		    strerror(errno));
		return put_done(st, -1, rcpts, why, err, errlen);
	}
	return put_done(st, put_file_tail(st, tmp, &r, wire_len, id, why,
	    sizeof(why), true), rcpts, why, err, errlen);
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

enum store_res
store_put_file(struct store *st, const struct store_envelope *env,
    const char *src_path, int src_fd, uint64_t wire_len,
    uint64_t body_octets, bool last, uint64_t *id, enum store_via *via,
    char *err, size_t errlen)
{
	char		 tmp[PATH_MAX];
	char		 why[PATH_MAX + 64];
	unsigned char	*rcpts = NULL;
	struct rec	 r;
	struct stat	 ssb, tsb;
	bool		 same_fs;

	*via = STORE_VIA_COPY;
	if (put_file_rec(env, wire_len, body_octets, &r, &rcpts) == -1) {
		lstore_seterr(err, errlen, "bad envelope");
		return STORE_PERMFAIL;
	}
	if (wire_len > SIZE_MAX || fstat(src_fd, &ssb) == -1 ||
	    stat(st->tmp, &tsb) == -1) {
		lstore_seterr(why, sizeof(why), "stat %s/: %s", st->tmp,
		    strerror(errno));
		return put_done(st, -1, rcpts, why, err, errlen);
	}
	same_fs = ssb.st_dev == tsb.st_dev;
	/*
	 * The same filesystem: the already fsynced data gets its spool name
	 * by rename (the last copy) or by a hard link into tmp/ first (the
	 * source is still needed); either name becomes durable with the
	 * spool directory's fsync.  Otherwise a copy, fsynced before it
	 * counts.
	 */
	if (same_fs && last && access(src_path, F_OK) == 0) {
		*via = STORE_VIA_RENAME;
		return put_done(st, put_file_tail(st, src_path, &r, wire_len,
		    id, why, sizeof(why), false), rcpts, why, err, errlen);
	}
	if (tmp_name(st, tmp, sizeof(tmp)) == -1) {
		lstore_seterr(why, sizeof(why), "tmp path too long");
		return put_done(st, -1, rcpts, why, err, errlen);
	}
	if (same_fs && link(src_path, tmp) == 0)
		*via = STORE_VIA_LINK;
	else if (copy_to_tmp(src_fd, wire_len, tmp) == -1) {
		lstore_seterr(why, sizeof(why), "copy to %s/: %s", st->tmp,
		    strerror(errno));
		return put_done(st, -1, rcpts, why, err, errlen);
	}
	return put_done(st, put_file_tail(st, tmp, &r, wire_len, id, why,
	    sizeof(why), true), rcpts, why, err, errlen);
}
