/*
 * util: strict validation of the names that become paths and database keys,
 * plus the few I/O helpers every module needs.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/util.h"

#define LABEL_MAX	63

static int
lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static int
is_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

int
util_host_normalize(const char *in, char *out)
{
	size_t	 i, label = 0;
	int	 c, prev = '.';

	if (in == NULL)
		return -1;
	/* A leading dot is caught because prev starts as '.'. */
	for (i = 0; in[i] != '\0'; i++) {
		if (i >= UTIL_HOST_MAX)
			return -1;
		c = (unsigned char)in[i];
		if (c == '.') {
			if (prev == '.' || prev == '-')
				return -1;
			label = 0;
		} else if (c == '-') {
			if (prev == '.')
				return -1;
			label++;
		} else if (is_alnum(c))
			label++;
		else
			return -1;
		if (label > LABEL_MAX)
			return -1;
		out[i] = (char)lower(c);
		prev = c;
	}
	/* Empty name, trailing dot or a last label ending in a hyphen. */
	if (i == 0 || prev == '.' || prev == '-')
		return -1;
	out[i] = '\0';
	return 0;
}

int
util_user_normalize(const char *in, char *out)
{
	size_t	 i;
	int	 c;

	if (in == NULL)
		return -1;
	for (i = 0; in[i] != '\0'; i++) {
		if (i >= UTIL_USER_MAX)
			return -1;
		c = (unsigned char)in[i];
		/* 0x21..0x7e excludes space, controls, DEL and 8-bit. */
		if (c < 0x21 || c > 0x7e || c == '@' || c == '/')
			return -1;
		out[i] = (char)lower(c);
	}
	if (i == 0)
		return -1;
	/*
	 * "." and ".." name directories wherever a user part becomes a path
	 * or a key that a tool may turn into one; no mail is addressed so.
	 */
	if (in[0] == '.' && (i == 1 || (i == 2 && in[1] == '.')))
		return -1;
	out[i] = '\0';
	return 0;
}

int
util_addr_split(const char *addr, char *user, char *host)
{
	char		 buf[UTIL_USER_MAX + 1];
	const char	*at;
	size_t		 ulen;

	if (addr == NULL || (at = strrchr(addr, '@')) == NULL)
		return -1;
	ulen = (size_t)(at - addr);
	if (ulen == 0 || ulen > UTIL_USER_MAX)
		return -1;
	memcpy(buf, addr, ulen);
	buf[ulen] = '\0';
	if (util_user_normalize(buf, user) == -1)
		return -1;
	return util_host_normalize(at + 1, host);
}

int
util_sender_normalize(const char *in, char *out)
{
	char		 addr[UTIL_SENDER_MAX + 1];
	char		 user[UTIL_USER_MAX + 1], host[UTIL_HOST_MAX + 1];
	const char	*at;
	size_t		 len, ulen;

	if (in == NULL)
		return -1;
	len = strlen(in);
	if (len > 0 && in[0] == '<') {
		if (len < 2 || in[len - 1] != '>')
			return -1;
		in++;
		len -= 2;
	} else if (len > 0 && in[len - 1] == '>')
		return -1;
	if (len == 0) {
		out[0] = '\0';
		return 0;
	}
	if (len > UTIL_SENDER_MAX)
		return -1;
	memcpy(addr, in, len);
	addr[len] = '\0';
	if (memchr(addr, '<', len) != NULL || memchr(addr, '>', len) != NULL)
		return -1;
	if ((at = strrchr(addr, '@')) == NULL)
		return -1;
	ulen = (size_t)(at - addr);
	if (ulen == 0 || ulen > UTIL_USER_MAX)
		return -1;
	/* Validate the user part, but keep its case: it is not ours. */
	memcpy(user, addr, ulen);
	user[ulen] = '\0';
	if (util_user_normalize(user, user) == -1)
		return -1;
	if (util_host_normalize(at + 1, host) == -1)
		return -1;
	memcpy(out, addr, ulen);
	out[ulen] = '@';
	memcpy(out + ulen + 1, host, strlen(host) + 1);
	return 0;
}

int
util_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t	 v = 0;
	unsigned int	 d;

	if (s == NULL || *s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		d = (unsigned int)(*s - '0');
		if (d > max || v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

uint64_t
util_now_us(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int
util_write_all(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
util_fsync_dir(const char *path)
{
	int	 fd, saved;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if (fsync(fd) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	close(fd);
	return 0;
}

int
util_mkdir_p(const char *path, mode_t mode)
{
	char		 buf[PATH_MAX];
	struct stat	 st;
	size_t		 len, i;

	len = strlen(path);
	if (len == 0 || len >= sizeof(buf)) {
		errno = len == 0 ? ENOENT : ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		if (buf[i - 1] == '/')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, mode) == -1) {
			/* EEXIST may be a file: only a directory will do. */
			if (errno != EEXIST)
				return -1;
			if (stat(buf, &st) == -1)
				return -1;
			if (!S_ISDIR(st.st_mode)) {
				errno = ENOTDIR;
				return -1;
			}
		}
		if (i < len)
			buf[i] = '/';
	}
	return 0;
}

char *
util_rfc5322_date(uint64_t us, char *buf, size_t len)
{
	static const char	*days[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat" };
	static const char	*months[] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm		 tm;
	time_t			 t = (time_t)(us / 1000000);

	if (len == 0)
		return buf;
	/* Spelled out rather than strftime so the locale cannot leak in. */
	if (gmtime_r(&t, &tm) == NULL) {
		buf[0] = '\0';
		return buf;
	}
	snprintf(buf, len, "%s, %d %s %04d %02d:%02d:%02d +0000",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return buf;
}

void
util_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 len;

	if (why == NULL || whylen == 0)
		return;
	len = strnlen(why, whylen);
	if (len > 0 && len + 2 < whylen) {
		memcpy(why + len, "; ", 3);
		len += 2;
	}
	if (len + 1 >= whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why + len, whylen - len, fmt, ap);
	va_end(ap);
}
