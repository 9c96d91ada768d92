/* test_xtext: RFC 3461 xtext, both ways, and the refusals. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sdps/xtext.h"

static void
test_roundtrip(void **state)
{
	static const struct { const char *in, *out; } rows[] = {
		{ "fred", "fred" },
		{ "a+b=c@example.org", "a+2Bb+3Dc@example.org" },
		{ "sp ace", "sp+20ace" },
		{ "\x7f\x01\xe9", "+7F+01+E9" },
		{ "", "" },
	};
	char	 buf[64];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		assert_int_equal(xtext_encode(rows[i].in, buf, sizeof(buf)), 0);
		assert_string_equal(buf, rows[i].out);
		assert_int_equal(xtext_len(rows[i].in), strlen(rows[i].out));
		assert_int_equal(xtext_decode(buf), 0);
		assert_string_equal(buf, rows[i].in);
	}
}

static void
test_fit(void **state)
{
	char	 buf[8];

	(void)state;
	/* "a+20b" is 5 octets and its NUL: 6 fit, 5 do not. */
	assert_int_equal(xtext_encode("a b", buf, 6), 0);
	assert_int_equal(xtext_encode("a b", buf, 5), -1);
	assert_string_equal(buf, "");
	assert_int_equal(xtext_encode("x", buf, 0), -1);
}

static void
test_refused(void **state)
{
	static const char *bad[] = {
		"a=b", "a+", "a+2", "a+zz", "+00", "sp ace", "\x7f", "a+2G",
	};
	char	 buf[16];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "%s", bad[i]);
		assert_int_equal(xtext_decode(buf), -1);
	}
	snprintf(buf, sizeof(buf), "a+2bc");
	assert_int_equal(xtext_decode(buf), 0);	/* lower-case hex */
	assert_string_equal(buf, "a+c");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_fit),
		cmocka_unit_test(test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
