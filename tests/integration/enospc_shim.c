/*
 * enospc_shim: LD_PRELOAD library for the full-disk test when tmpfs cannot
 * be mounted.  Every write to a file under $SDPS_ENOSPC_DIR fails with
 * ENOSPC, as on a full file system.  Test code only; never in src/.
 */

#include <sys/types.h>
#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ssize_t	write(int, const void *, size_t);
ssize_t	pwrite(int, const void *, size_t, off_t);
ssize_t	pwrite64(int, const void *, size_t, off_t);
ssize_t	writev(int, const struct iovec *, int);
int	fallocate(int, int, off_t, off_t);
int	posix_fallocate(int, off_t, off_t);

static int
is_full(int fd)
{
	const char	*dir = getenv("SDPS_ENOSPC_DIR");
	char		 link[64], path[PATH_MAX];
	ssize_t		 len;

	if (dir == NULL || *dir == '\0' || fd < 0)
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((len = readlink(link, path, sizeof(path) - 1)) <= 0)
		return 0;
	path[len] = '\0';
	return strncmp(path, dir, strlen(dir)) == 0;
}

#define NEXT(name)	((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t
write(int fd, const void *buf, size_t len)
{
	if (len > 0 && is_full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return NEXT(write)(fd, buf, len);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	if (len > 0 && is_full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return NEXT(pwrite)(fd, buf, len, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	if (len > 0 && is_full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return NEXT(pwrite64)(fd, buf, len, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int n)
{
	if (n > 0 && is_full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return NEXT(writev)(fd, iov, n);
}

int
fallocate(int fd, int mode, off_t off, off_t len)
{
	if (is_full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return NEXT(fallocate)(fd, mode, off, len);
}

int
posix_fallocate(int fd, off_t off, off_t len)
{
	if (is_full(fd))
		return ENOSPC;
	return NEXT(posix_fallocate)(fd, off, len);
}
