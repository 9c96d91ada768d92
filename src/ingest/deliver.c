/* deliver: the punt choice for a new message, shared by sdps-deliver and
 * the LMTP session (docs/design.md §10.1: a random punt per message). */

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * Punt i if usable now, and *st its local store (NULL for a remote punt:
 * no directory here, only the link; docs/punt-protocol.md).
 */
static struct punt *
usable(struct puntset *ps, int i, struct store **st)
{
	struct punt	*p;

	*st = NULL;
	if ((p = puntset_get(ps, i)) != NULL)
		*st = punt_local_store(p);
	return p;
}

/*
 * The front end's own tmp directory for LMTP DATA bound for a remote
 * punt: RUN_DIR/lmtp-tmp, 0700, made on first use.  A name that is not a
 * directory of ours (a symlink planted in RUN_DIR) is refused, never
 * followed.  Files of dead writers (a worker killed mid-DATA) are swept
 * once per process: they were never acknowledged, so nothing is lost.
 */
static int
fe_tmp_dir(const char *run_dir, char *dir, size_t dirlen)
{
	static bool	 swept;
	struct stat	 sb;
	struct dirent	*de;
	DIR		*d;
	char		 path[PATH_MAX];
	long		 pid;

	if ((size_t)snprintf(dir, dirlen, "%s/" DELIVER_FE_TMP, run_dir) >=
	    dirlen) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return -1;
	if (lstat(dir, &sb) == -1)
		return -1;
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != geteuid() ||
	    (sb.st_mode & 077) != 0) {
		errno = EPERM;
		return -1;
	}
	if (swept || (d = opendir(dir)) == NULL)
		return 0;
	swept = true;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (sscanf(de->d_name, "%ld.", &pid) == 1 && pid > 0 &&
		    (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
			continue;	/* a live writer's */
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir,
		    de->d_name) < sizeof(path))
			(void)unlink(path);
	}
	closedir(d);
	return 0;
}

/* A new file in the front end's tmp directory; fd, or -1 (errno). */
static int
fe_tmp_open(const char *run_dir, char *path, size_t pathlen)
{
	char	 dir[PATH_MAX];
	int	 fd;

	if (fe_tmp_dir(run_dir, dir, sizeof(dir)) == -1)
		return -1;
	if ((size_t)snprintf(path, pathlen, "%s/%ld.XXXXXX", dir,
	    (long)getpid()) >= pathlen) {
		errno = ENAMETOOLONG;
		return -1;
	}
	/* 0660 like store_tmp_open: a local punt may hard-link this very
	 * inode into its spool (store_put_file on the same filesystem). */
	if ((fd = mkostemp(path, O_CLOEXEC)) == -1)
		return -1;
	if (fchmod(fd, 0660) == -1) {
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

int
deliver_tmp_open(struct puntset *ps, const char *run_dir, int *idx,
    char *path, size_t pathlen, bool *fe_tmp, char *why, size_t whylen)
{
	struct store	*st;
	int		 order[CONFIG_PUNT_MAX], n, i, fd;

	n = punt_order(order, puntset_count(ps), -1, -1);
	for (i = 0; i < n; i++) {
		if (usable(ps, order[i], &st) == NULL)
			continue;	/* the puntset said why */
		if (st != NULL) {
			*fe_tmp = false;
			fd = store_tmp_open(st, path, pathlen);
		} else {
			/* A remote punt: the DATA waits here, its durability
			 * is the punt's, after DELIVER (deliver_store_file). */
			*fe_tmp = true;
			fd = fe_tmp_open(run_dir, path, pathlen);
		}
		if (fd != -1) {
			*idx = order[i];
			return fd;
		}
		util_why(why, whylen, "punt %s: tmp file%s: %s",
		    puntset_name(ps, order[i]), *fe_tmp ? " (front end)" : "",
		    strerror(errno));
	}
	return -1;
}

/* One copy on punt p: a local store takes the file by path (rename, link
 * or copy), a remote punt gets its octets through the link (DELIVER),
 * and answers only once the punt has made it durable. */
static enum store_res
put_one_file(struct punt *p, struct store *st,
    const struct store_envelope *env, const char *src_path, int src_fd,
    uint64_t wire_len, uint64_t body_octets, bool last, uint64_t *id,
    enum store_via *via, char *err, size_t errlen)
{
	if (st != NULL) {
		/*
		 * store_put_file wants the source fsynced: a front-end tmp
		 * file (meant for a remote punt) is not, and a local punt on
		 * its filesystem would link that very inode.  On a file that
		 * is already clean this costs next to nothing.
		 */
		if (fsync(src_fd) == -1) {
			snprintf(err, errlen, "fsync %s: %s", src_path,
			    strerror(errno));
			return STORE_TEMPFAIL;
		}
		return store_put_file(st, env, src_path, src_fd, wire_len,
		    body_octets, last, id, via, err, errlen);
	}
	*via = STORE_VIA_COPY;
	/* The contract is "from offset 0"; a failed try may have moved it. */
	if (lseek(src_fd, 0, SEEK_SET) == -1) {
		snprintf(err, errlen, "lseek: %s", strerror(errno));
		return STORE_TEMPFAIL;
	}
	return punt_put_file(p, env, src_fd, wire_len, body_octets, id, err,
	    errlen);
}

enum store_res
deliver_store_file(struct puntset *ps, int first,
    const struct store_envelope *env, const char *src_path, int src_fd,
    uint64_t wire_len, uint64_t body_octets, int *idx, uint64_t *id,
    bool last, enum store_via *via, char *why, size_t whylen)
{
	struct punt	*p;
	struct store	*st;
	enum store_res	 res;
	char		 err[256];
	int		 order[CONFIG_PUNT_MAX], n, i;

	n = punt_order(order, puntset_count(ps), -1, first);
	for (i = 0; i < n; i++) {
		if ((p = usable(ps, order[i], &st)) == NULL)
			continue;
		err[0] = '\0';
		res = put_one_file(p, st, env, src_path, src_fd, wire_len,
		    body_octets, last, id, via, err, sizeof(err));
		if (res == STORE_OK) {
			*idx = order[i];
			return STORE_OK;
		}
		why_fail(why, whylen, punt_name(p), res, err);
	}
	return STORE_TEMPFAIL;
}

void
deliver_store_files(struct puntset *ps, int first, struct store_item *items,
    int *idx, size_t n, const char *src_path, int src_fd, uint64_t wire_len,
    uint64_t body_octets, char *why, size_t whylen)
{
	struct store	*st = NULL;
	char		 err[256];
	size_t		 i, left = n;
	int		 retry_first = -1;

	for (i = 0; i < n; i++) {
		items[i].res = STORE_TEMPFAIL;
		idx[i] = first;
	}
	/* One commit for all: the copies share the file's punt. */
	if (first >= 0 && usable(ps, first, &st) != NULL && st != NULL) {
		err[0] = '\0';
		if (store_put_file_batch(st, items, n, src_path, src_fd,
		    wire_len, body_octets, true, err, sizeof(err)) != STORE_OK)
			why_fail(why, whylen, store_name(st), STORE_TEMPFAIL,
			    err);
		for (i = 0; i < n; i++)
			if (items[i].res == STORE_OK)
				left--;
	} else if (first >= 0)
		/* The chosen punt is remote (or went away since DATA
		 * began): one DELIVER per host copy, the chosen punt first
		 * each time, so the random choice still decides. */
		retry_first = first;
	for (i = 0; i < n; i++) {
		if (items[i].res == STORE_OK)
			continue;
		items[i].res = deliver_store_file(ps, retry_first,
		    items[i].env, src_path, src_fd, wire_len, body_octets,
		    &idx[i], &items[i].id, --left == 0, &items[i].via, why,
		    whylen);
		items[i].commit = 0;
		items[i].batch = 1;
	}
}
