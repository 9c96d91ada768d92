/*
 * lock: maildrop locks as flock(2) on files under RUN_DIR/locks.  The
 * kernel owns the lock state, so a dead owner never leaves one behind.
 */

#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sdps/lock.h"
#include "sdps/log.h"
#include "sdps/util.h"

void
lock_init(struct lock *lk)
{
	lk->host_fd = -1;
	lk->user_fd = -1;
}

void
lock_release(struct lock *lk)
{
	/* Closing the last descriptor drops the flock; files stay for reuse. */
	if (lk->user_fd != -1)
		close(lk->user_fd);
	if (lk->host_fd != -1)
		close(lk->host_fd);
	lock_init(lk);
}

/* A punt name becomes a path component: no '/', no dot names. */
static int
valid_punt(const char *punt)
{
	size_t	 len = strlen(punt);

	if (len == 0 || len > NAME_MAX || strchr(punt, '/') != NULL ||
	    strcmp(punt, ".") == 0 || strcmp(punt, "..") == 0)
		return 0;
	return 1;
}

/*
 * Lock files are never unlinked: removing one while another process has it
 * open would let two sessions lock two different inodes of the same name.
 */
static enum lock_res
lock_file(const char *dir, const char *path, int op, int *fdp)
{
	int	 fd;

	/*
	 * The directories exist after the maildrop's first session: try the
	 * open first so a login costs no mkdir calls.
	 */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660);
	if (fd == -1 && errno == ENOENT) {
		if (util_mkdir_p(dir, 0770) == -1) {
			log_warn("lock: mkdir %s", dir);
			return LOCK_ERR;
		}
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
		    0660);
	}
	if (fd == -1) {
		log_warn("lock: open %s", path);
		return LOCK_ERR;
	}
	while (flock(fd, op | LOCK_NB) == -1) {
		if (errno == EINTR)
			continue;
		if (errno == EWOULDBLOCK) {
			close(fd);
			return LOCK_BUSY;
		}
		log_warn("lock: flock %s", path);
		close(fd);
		return LOCK_ERR;
	}
	*fdp = fd;
	return LOCK_OK;
}

enum lock_res
lock_take(const char *run_dir, const char *punt, const char *host,
    const char *user, struct lock *lk)
{
	char		 norm[UTIL_HOST_MAX + 1], dir[PATH_MAX], path[PATH_MAX];
	char		 hex[2 * UTIL_USER_MAX + 1];
	size_t		 i, ulen;
	enum lock_res	 r;
	int		 len;

	lock_init(lk);
	/* Names reach paths: insist on the normalized forms. */
	if (!valid_punt(punt) || util_host_normalize(host, norm) == -1 ||
	    strcmp(norm, host) != 0) {
		log_warnx("lock: bad punt or host name");
		return LOCK_ERR;
	}
	if (user != NULL) {
		ulen = strlen(user);
		/* "Alice" and "alice" must be one lock, as they are one user. */
		if (ulen == 0 || ulen > UTIL_USER_MAX ||
		    util_user_normalize(user, norm) == -1 ||
		    strcmp(norm, user) != 0) {
			log_warnx("lock: bad user name");
			return LOCK_ERR;
		}
		/* Hex keeps any local part a safe, case-exact file name. */
		for (i = 0; i < ulen; i++)
			snprintf(hex + 2 * i, 3, "%02x",
			    (unsigned char)user[i]);
	}
	len = snprintf(dir, sizeof(dir), "%s/locks/%s/%s", run_dir, punt,
	    host);
	if (len < 0 || (size_t)len >= sizeof(dir)) {
		log_warnx("lock: %s/locks/%s/%s: path too long", run_dir, punt,
		    host);
		return LOCK_ERR;
	}
	len = snprintf(path, sizeof(path), "%s/host", dir);
	if (len < 0 || (size_t)len >= sizeof(path))
		return LOCK_ERR;
	if ((r = lock_file(dir, path, user == NULL ? LOCK_EX : LOCK_SH,
	    &lk->host_fd)) != LOCK_OK)
		return r;
	if (user == NULL)
		return LOCK_OK;
	len = snprintf(path, sizeof(path), "%s/u.%s", dir, hex);
	if (len < 0 || (size_t)len >= sizeof(path)) {
		log_warnx("lock: %s: path too long", dir);
		lock_release(lk);
		return LOCK_ERR;
	}
	if ((r = lock_file(dir, path, LOCK_EX, &lk->user_fd)) != LOCK_OK) {
		lock_release(lk);
		return r;
	}
	return LOCK_OK;
}
