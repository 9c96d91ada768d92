/* test_wire: the wire-format conversion, table-driven, whole and chunked. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sdps/wire.h"

#define IN(s)	s, sizeof(s) - 1

struct row {
	const char	*name;
	const char	*in;
	size_t		 inlen;
	uint64_t	 max_octets;
	enum wire_res	 res;
	const char	*out;		/* only checked when res is WIRE_OK */
	uint64_t	 body_octets;
};

static const struct row rows[] = {
	{ "bare LF", IN("Subject: x\n\nbody\n"), 0, WIRE_OK,
	    "Subject: x\r\n\r\nbody\r\n", 20 },
	{ "CRLF kept", IN("Subject: x\r\n\r\nbody\r\n"), 0, WIRE_OK,
	    "Subject: x\r\n\r\nbody\r\n", 20 },
	{ "lone CR", IN("A: b\rc\r"), 0, WIRE_OK, "A: b\r\nc\r\n", 9 },
	{ "CR CR LF", IN("A: b\r\r\n"), 0, WIRE_OK, "A: b\r\n\r\n", 8 },
	{ "dot stuffing", IN("A: b\n.\n..x\nx.\n"), 0, WIRE_OK,
	    "A: b\r\n..\r\n...x\r\nx.\r\n", 18 },
	{ "dot after lone CR", IN("A: b\r.x"), 0, WIRE_OK,
	    "A: b\r\n..x\r\n", 10 },
	{ "final CRLF added", IN("A: b"), 0, WIRE_OK, "A: b\r\n", 6 },
	{ "no space after colon", IN("X-Y:z\n"), 0, WIRE_OK, "X-Y:z\r\n", 7 },
	{ "8-bit body", IN("A: b\n\n\xc3\xa9\n"), 0, WIRE_OK,
	    "A: b\r\n\r\n\xc3\xa9\r\n", 12 },
	{ "at the limit", IN("A: b\nxx\n"), 10, WIRE_OK, "A: b\r\nxx\r\n", 10 },
	{ "over the limit", IN("A: b\nxx\n"), 9, WIRE_TOO_BIG, NULL, 0 },
	{ "NUL in body", IN("A: b\n\0\n"), 0, WIRE_NUL, NULL, 0 },
	{ "NUL in header", IN("A\0: b\n"), 0, WIRE_NUL, NULL, 0 },
	{ "empty", IN(""), 0, WIRE_NO_HEADER, NULL, 0 },
	{ "no colon", IN("hello world\n"), 0, WIRE_NO_HEADER, NULL, 0 },
	{ "mbox From_", IN("From a@b Sat\nA: b\n"), 0, WIRE_NO_HEADER,
	    NULL, 0 },
	{ "empty name", IN(": x\n"), 0, WIRE_NO_HEADER, NULL, 0 },
	{ "leading space", IN(" A: b\n"), 0, WIRE_NO_HEADER, NULL, 0 },
	{ "blank first line", IN("\nA: b\n"), 0, WIRE_NO_HEADER, NULL, 0 },
	{ "name without colon", IN("Subject\n"), 0, WIRE_NO_HEADER, NULL, 0 },
};

static enum wire_res
convert(const struct row *r, size_t chunk, struct wire *w)
{
	enum wire_res	 res = WIRE_OK;
	size_t		 off, n;

	wire_init(w, r->max_octets);
	for (off = 0; off < r->inlen && res == WIRE_OK; off += n) {
		n = r->inlen - off < chunk ? r->inlen - off : chunk;
		res = wire_feed(w, r->in + off, n);
	}
	if (res == WIRE_OK)
		res = wire_finish(w);
	return res;
}

static void
test_table(void **state)
{
	static const size_t chunks[] = { SIZE_MAX, 1, 2, 3 };
	struct wire	 w;
	enum wire_res	 res;
	size_t		 i, c;
	int		 bad = 0;

	(void)state;
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		for (c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
			res = convert(&rows[i], chunks[c], &w);
			if (res != rows[i].res) {
				print_error("row \"%s\" chunk %zu: result %d, "
				    "want %d\n", rows[i].name, chunks[c],
				    (int)res, (int)rows[i].res);
				bad++;
			} else if (res == WIRE_OK && (w.len !=
			    strlen(rows[i].out) || memcmp(w.buf,
			    rows[i].out, w.len) != 0 ||
			    w.body_octets != rows[i].body_octets)) {
				print_error("row \"%s\" chunk %zu: output "
				    "\"%.*s\" (%llu octets)\n", rows[i].name,
				    chunks[c], (int)w.len, w.buf,
				    (unsigned long long)w.body_octets);
				bad++;
			}
			wire_free(&w);
		}
	}
	assert_int_equal(bad, 0);
}

/*
 * Streaming: draining after every feed gives the same octets, in order,
 * as one conversion, and the buffer never holds more than a feed's worth.
 */
static void
test_drain(void **state)
{
	static const size_t chunks[] = { 1, 2, 3, 7, SIZE_MAX };
	struct wire	 w;
	char		 out[256];
	size_t		 i, c, off, n, olen;
	enum wire_res	 res;

	(void)state;
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		if (rows[i].res != WIRE_OK)
			continue;
		for (c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
			wire_init(&w, rows[i].max_octets);
			olen = 0;
			res = WIRE_OK;
			for (off = 0; off < rows[i].inlen && res == WIRE_OK;
			    off += n) {
				n = rows[i].inlen - off < chunks[c] ?
				    rows[i].inlen - off : chunks[c];
				res = wire_feed(&w, rows[i].in + off, n);
				assert_true(w.len <= 2 * n + 2);
				assert_true(olen + w.len <= sizeof(out));
				memcpy(out + olen, w.buf, w.len);
				olen += w.len;
				wire_drain(&w);
				assert_int_equal(w.drained, olen);
			}
			if (res == WIRE_OK)
				res = wire_finish(&w);
			assert_int_equal(res, WIRE_OK);
			memcpy(out + olen, w.buf, w.len);
			olen += w.len;
			assert_int_equal(w.drained + w.len, olen);
			assert_int_equal(olen, strlen(rows[i].out));
			assert_memory_equal(out, rows[i].out, olen);
			assert_int_equal(w.body_octets, rows[i].body_octets);
			wire_free(&w);
		}
	}
}

/* Many stuffed lines through a growing buffer; sizes follow exactly. */
static void
test_big_growth(void **state)
{
	struct wire	 w;
	char		*in;
	size_t		 i, n = 300000, lines;

	(void)state;
	assert_non_null(in = malloc(n));
	memcpy(in, "A: b\n", 5);
	for (i = 5; i < n; i++)
		in[i] = (i - 5) % 2 == 0 ? '.' : '\n';
	lines = (n - 5 + 1) / 2;	/* the last "." has no LF */
	wire_init(&w, 0);
	assert_int_equal(wire_feed(&w, in, n), WIRE_OK);
	assert_int_equal(wire_finish(&w), WIRE_OK);
	assert_int_equal(w.len, 6 + 4 * lines);		/* "..\r\n" */
	assert_int_equal(w.body_octets, 6 + 3 * lines);	/* ".\r\n" */
	for (i = 6; i < w.len; i += 4)
		assert_memory_equal(w.buf + i, "..\r\n", 4);
	wire_free(&w);
	free(in);
}

static void
test_strerror(void **state)
{
	(void)state;
	assert_string_not_equal(wire_strerror(WIRE_NUL),
	    wire_strerror(WIRE_NO_HEADER));
	assert_non_null(strstr(wire_strerror(WIRE_TOO_BIG), "big"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_big_growth),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
