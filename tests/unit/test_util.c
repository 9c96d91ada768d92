/* Unit tests for util: the validators are tables of good and hostile input. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/util.h"

struct norm_case {
	const char	*in;
	const char	*out;	/* NULL: must be rejected */
};

static char *
repeat(char c, size_t n)
{
	char	*s;

	s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* Labels of 63 'a's joined by dots, then padded to exactly len octets. */
static char *
long_host(size_t len)
{
	char	*s = repeat('a', len);
	size_t	 i;

	for (i = 63; i < len; i += 64)
		s[i] = '.';
	if (s[len - 1] == '.')
		s[len - 1] = 'b';
	return s;
}

static void
check_table(const struct norm_case *t, size_t n,
    int (*fn)(const char *, char *), size_t outsz)
{
	char	*out = malloc(outsz);
	size_t	 i;
	int	 rc;

	assert_non_null(out);
	for (i = 0; i < n; i++) {
		memset(out, 'X', outsz);
		rc = fn(t[i].in, out);
		if (t[i].out == NULL) {
			if (rc != -1)
				fail_msg("row %zu \"%s\": accepted as \"%s\"",
				    i, t[i].in, out);
		} else {
			if (rc != 0)
				fail_msg("row %zu \"%s\": rejected", i,
				    t[i].in);
			if (strcmp(out, t[i].out) != 0)
				fail_msg("row %zu \"%s\": got \"%s\", want "
				    "\"%s\"", i, t[i].in, out, t[i].out);
		}
	}
	free(out);
}

static void
test_host(void **state)
{
	static const struct norm_case t[] = {
		{ "example.net", "example.net" },
		{ "Fred.Example.NET", "fred.example.net" },
		{ "a", "a" },
		{ "a-b.c-d", "a-b.c-d" },
		{ "0.9", "0.9" },
		{ "xn--bcher-kva.example", "xn--bcher-kva.example" },
		{ "", NULL },
		{ ".", NULL },
		{ "a..b", NULL },
		{ ".a.b", NULL },
		{ "a.b.", NULL },
		{ "-a.b", NULL },
		{ "a-.b", NULL },
		{ "a.-b", NULL },
		{ "a.b-", NULL },
		{ "../x", NULL },
		{ "a/b", NULL },
		{ "a b", NULL },
		{ "a_b", NULL },
		{ "a\tb", NULL },
		{ "a\x01" "b", NULL },
		{ "a\x7f", NULL },
		{ "\xc3\xa9.net", NULL },
		{ "a@b", NULL },
		{ "a:b", NULL },
	};
	char	 out[UTIL_HOST_MAX + 1];
	char	*s;

	(void)state;
	check_table(t, NITEMS(t), util_host_normalize, UTIL_HOST_MAX + 1);

	s = long_host(253);
	assert_int_equal(util_host_normalize(s, out), 0);
	assert_string_equal(out, s);
	free(s);
	s = long_host(254);
	assert_int_equal(util_host_normalize(s, out), -1);
	free(s);
	s = repeat('a', 63);
	assert_int_equal(util_host_normalize(s, out), 0);
	free(s);
	s = repeat('a', 64);
	assert_int_equal(util_host_normalize(s, out), -1);
	free(s);
	s = repeat('a', 1000);
	assert_int_equal(util_host_normalize(s, out), -1);
	free(s);
}

static void
test_user(void **state)
{
	static const struct norm_case t[] = {
		{ "fred", "fred" },
		{ "Fred.Bloggs", "fred.bloggs" },
		{ "a+b=c!#$%&'*~", "a+b=c!#$%&'*~" },
		{ "x", "x" },
		{ "", NULL },
		{ "a b", NULL },
		{ "a@b", NULL },
		{ "../x", NULL },
		/* Lock file names and keys (issue 8, finding 10). */
		{ ".", NULL },
		{ "..", NULL },
		{ "...", "..." },
		{ ".x", ".x" },
		{ "a/b", NULL },
		{ "a\tb", NULL },
		{ "a\rb", NULL },
		{ "a\nb", NULL },
		{ "\x1b[0m", NULL },
		{ "a\x7f", NULL },
		{ "caf\xc3\xa9", NULL },
	};
	char	 out[UTIL_USER_MAX + 1];
	char	*s;

	(void)state;
	check_table(t, NITEMS(t), util_user_normalize, UTIL_USER_MAX + 1);
	s = repeat('u', 64);
	assert_int_equal(util_user_normalize(s, out), 0);
	free(s);
	s = repeat('u', 65);
	assert_int_equal(util_user_normalize(s, out), -1);
	free(s);
}

static void
test_addr_split(void **state)
{
	static const struct {
		const char	*in, *user, *host;
	} t[] = {
		{ "Fred@Example.NET", "fred", "example.net" },
		{ "a@b", "a", "b" },
		{ "a@b@c", NULL, NULL },	/* user part "a@b" */
		{ "@b", NULL, NULL },
		{ "a@", NULL, NULL },
		{ "ab", NULL, NULL },
		{ "a@../x", NULL, NULL },
		{ ".@b", NULL, NULL },
		{ "..@b", NULL, NULL },
		{ "..+x@b", "..+x", "b" },
		{ "a b@c", NULL, NULL },
		{ "", NULL, NULL },
	};
	char	 user[UTIL_USER_MAX + 1], host[UTIL_HOST_MAX + 1];
	size_t	 i;
	int	 rc;

	(void)state;
	for (i = 0; i < NITEMS(t); i++) {
		rc = util_addr_split(t[i].in, user, host);
		if (t[i].user == NULL) {
			if (rc != -1)
				fail_msg("row %zu \"%s\" accepted", i, t[i].in);
			continue;
		}
		if (rc != 0 || strcmp(user, t[i].user) != 0 ||
		    strcmp(host, t[i].host) != 0)
			fail_msg("row %zu \"%s\": rc %d", i, t[i].in, rc);
	}
}

static void
test_sender(void **state)
{
	static const struct norm_case t[] = {
		{ "", "" },
		{ "<>", "" },
		{ "<a@b>", "a@b" },
		{ "a@b", "a@b" },
		{ "Fred@Example.NET", "Fred@example.net" },
		{ "<Fred@Example.NET>", "Fred@example.net" },
		{ "<", NULL },
		{ ">", NULL },
		{ "<a@b", NULL },
		{ "a@b>", NULL },
		{ "<<a@b>>", NULL },
		{ "a", NULL },
		{ "<a>", NULL },
		{ "a@", NULL },
		{ "@b", NULL },
		{ "a b@c", NULL },
		{ "a@b c", NULL },
		{ "a@../x", NULL },
		{ "a\r\n@b", NULL },
		{ "<a@b>\r\n", NULL },
	};
	char	 out[UTIL_SENDER_MAX + 1];
	char	 in[UTIL_SENDER_MAX + 8];
	char	*u, *h;

	(void)state;
	check_table(t, NITEMS(t), util_sender_normalize, UTIL_SENDER_MAX + 1);
	/* The longest valid address, with and without brackets. */
	u = repeat('u', UTIL_USER_MAX);
	h = long_host(UTIL_HOST_MAX);
	snprintf(in, sizeof(in), "<%s@%s>", u, h);
	assert_int_equal(util_sender_normalize(in, out), 0);
	assert_int_equal(strlen(out), UTIL_ADDR_MAX);
	assert_int_equal(util_sender_normalize(in + 1, out), -1);
	in[strlen(in) - 1] = '\0';
	assert_int_equal(util_sender_normalize(in + 1, out), 0);
	free(u);
	free(h);
}

static void
test_parse_u64(void **state)
{
	static const struct {
		const char	*in;
		uint64_t	 max;
		int		 rc;
		uint64_t	 want;
	} t[] = {
		{ "0", 10, 0, 0 },
		{ "10", 10, 0, 10 },
		{ "11", 10, -1, 0 },
		{ "007", 10, 0, 7 },
		/* A digit above a small max once wrapped (max - d) around. */
		{ "3", 2, -1, 0 },
		{ "2", 2, 0, 2 },
		{ "9", 0, -1, 0 },
		{ "18446744073709551615", UINT64_MAX, 0, UINT64_MAX },
		{ "18446744073709551616", UINT64_MAX, -1, 0 },
		{ "99999999999999999999", UINT64_MAX, -1, 0 },
		{ "4294967296", 4294967295ULL, -1, 0 },
		{ "", UINT64_MAX, -1, 0 },
		{ "-1", UINT64_MAX, -1, 0 },
		{ "+1", UINT64_MAX, -1, 0 },
		{ " 1", UINT64_MAX, -1, 0 },
		{ "1 ", UINT64_MAX, -1, 0 },
		{ "1x", UINT64_MAX, -1, 0 },
		{ "0x10", UINT64_MAX, -1, 0 },
		{ "1e3", UINT64_MAX, -1, 0 },
	};
	uint64_t	 v;
	size_t		 i;
	int		 rc;

	(void)state;
	for (i = 0; i < NITEMS(t); i++) {
		v = 12345;
		rc = util_parse_u64(t[i].in, t[i].max, &v);
		if (rc != t[i].rc)
			fail_msg("row %zu \"%s\": rc %d", i, t[i].in, rc);
		if (rc == 0 && v != t[i].want)
			fail_msg("row %zu \"%s\": got %llu", i, t[i].in,
			    (unsigned long long)v);
		if (rc == -1 && v != 12345)
			fail_msg("row %zu: out written on failure", i);
	}
}

static void
test_rfc5322_date(void **state)
{
	static const struct {
		uint64_t	 us;
		const char	*want;
	} t[] = {
		{ 0, "Thu, 1 Jan 1970 00:00:00 +0000" },
		{ 1795750250999999ULL, "Fri, 27 Nov 2026 03:30:50 +0000" },
		{ 951782400000000ULL, "Tue, 29 Feb 2000 00:00:00 +0000" },
	};
	char	 buf[64], small[8];
	size_t	 i;

	(void)state;
	for (i = 0; i < NITEMS(t); i++)
		assert_string_equal(util_rfc5322_date(t[i].us, buf,
		    sizeof(buf)), t[i].want);
	/* Truncated, but terminated. */
	util_rfc5322_date(0, small, sizeof(small));
	assert_int_equal(strlen(small), sizeof(small) - 1);
}

static void
test_now_us(void **state)
{
	uint64_t	 a, b;

	(void)state;
	a = util_now_us();
	b = util_now_us();
	assert_true(a > 1600000000ULL * 1000000);
	assert_true(b >= a);
}

static void
test_io(void **state)
{
	char		 dir[] = "/tmp/test_util.XXXXXX", path[256], buf[70000];
	char		 rd[70000];
	struct stat	 st;
	int		 fd;
	size_t		 i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a/b//c", dir);
	assert_int_equal(util_mkdir_p(path, 0750), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(util_mkdir_p(path, 0750), 0);	/* exists: fine */
	assert_int_equal(util_fsync_dir(path), 0);

	/* A file where a directory should be. */
	snprintf(path, sizeof(path), "%s/f", dir);
	assert_true((fd = open(path, O_CREAT | O_WRONLY, 0600)) >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/f/g", dir);
	assert_int_equal(util_mkdir_p(path, 0750), -1);
	assert_int_equal(util_fsync_dir("/nonexistent/x"), -1);
	assert_int_equal(errno, ENOENT);

	/* More than a pipe buffer: write_all must loop. */
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7);
	snprintf(path, sizeof(path), "%s/data", dir);
	assert_true((fd = open(path, O_CREAT | O_RDWR, 0600)) >= 0);
	assert_int_equal(util_write_all(fd, buf, sizeof(buf)), 0);
	assert_int_equal(pread(fd, rd, sizeof(rd), 0), (ssize_t)sizeof(rd));
	assert_memory_equal(rd, buf, sizeof(buf));
	close(fd);
	assert_int_equal(util_write_all(-1, buf, 1), -1);
	assert_int_equal(errno, EBADF);

	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_user),
		cmocka_unit_test(test_addr_split),
		cmocka_unit_test(test_sender),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_rfc5322_date),
		cmocka_unit_test(test_now_us),
		cmocka_unit_test(test_io),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
