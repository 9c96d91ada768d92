/*
 * test_record: the punt index codec (include/sdps/record.h): round trip,
 * and its version rule: a newer version is REC_NEWER whatever follows
 * it, an undecodable record of a known version is REC_CORRUPT.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sdps/record.h"
#include "sdps/store.h"

static const unsigned char rcpts[] = { 5, 'a', 'l', 'i', 'c', 'e', 3,
	'b', 'o', 'b' };

static unsigned char *
sample(size_t *len)
{
	struct rec	 r;

	memset(&r, 0, sizeof(r));
	r.flags = STORE_F_READ | STORE_F_IN_DELIVERY;
	r.arrival_us = 0x0102030405060708ULL;
	r.octets = 1234;
	r.stored_octets = 1240;
	r.claim_us = 99;
	r.host = "fred.example.net";
	r.host_len = strlen(r.host);
	r.sender = "s@example.org";
	r.sender_len = strlen(r.sender);
	r.agent = "smtp1";
	r.agent_len = strlen(r.agent);
	r.rcpts = rcpts;
	r.rcpts_len = sizeof(rcpts);
	r.nrcpts = 2;
	return rec_encode(&r, len);
}

static void
test_round_trip(void **state)
{
	const unsigned char *rc = NULL;
	unsigned char	*p;
	struct rec	 d;
	size_t		 len, rl;

	(void)state;
	assert_non_null(p = sample(&len));
	assert_int_equal(len, REC_HDR + 16 + 13 + 5 + sizeof(rcpts));
	assert_int_equal(p[0], REC_VERSION);
	/* Little-endian at fixed offsets (the documented layout). */
	assert_int_equal(p[8], 0x08);
	assert_int_equal(p[15], 0x01);
	assert_int_equal(rec_decode(p, len, &d), REC_OK);
	assert_int_equal(d.flags, STORE_F_READ | STORE_F_IN_DELIVERY);
	assert_true(d.arrival_us == 0x0102030405060708ULL);
	assert_int_equal(d.octets, 1234);
	assert_int_equal(d.stored_octets, 1240);
	assert_int_equal(d.claim_us, 99);
	assert_int_equal(d.host_len, 16);
	assert_memory_equal(d.host, "fred.example.net", 16);
	assert_memory_equal(d.sender, "s@example.org", 13);
	assert_memory_equal(d.agent, "smtp1", 5);
	assert_int_equal(d.nrcpts, 2);
	assert_non_null(rc = rec_rcpt_next(&d, rc, &rl));
	assert_int_equal(rl, 5);
	assert_true(rec_rcpt_is(rc, rl, "ALICE"));
	assert_non_null(rc = rec_rcpt_next(&d, rc, &rl));
	assert_true(rec_rcpt_is(rc, rl, "bob"));
	assert_null(rec_rcpt_next(&d, rc, &rl));
	assert_true(rec_has_user(&d, "Bob"));
	assert_false(rec_has_user(&d, "bo"));
	free(p);
}

static void
test_versions(void **state)
{
	unsigned char	*p, v;
	struct rec	 d;
	size_t		 len;

	(void)state;
	assert_non_null(p = sample(&len));
	/* Newer: whatever its length, even one octet. */
	for (v = REC_VERSION + 1; v != 0; v++) {
		p[0] = v;
		assert_int_equal(rec_decode(p, len, &d), REC_NEWER);
		assert_int_equal(rec_decode(p, 1, &d), REC_NEWER);
		assert_int_equal(rec_version(p, len), v);
	}
	/* Version 0 was never written; nothing at all is no record. */
	p[0] = 0;
	assert_int_equal(rec_decode(p, len, &d), REC_CORRUPT);
	assert_int_equal(rec_decode(p, 0, &d), REC_CORRUPT);
	assert_int_equal(rec_version(p, 0), 0);
	free(p);
}

static void
test_corrupt(void **state)
{
	unsigned char	*p, *q;
	struct rec	 d;
	size_t		 len, cut;

	(void)state;
	assert_non_null(p = sample(&len));
	/* Every truncation of a known version is corrupt, never newer. */
	for (cut = 1; cut < len; cut++)
		assert_int_equal(rec_decode(p, cut, &d), REC_CORRUPT);
	/* Trailing octets. */
	assert_non_null(q = malloc(len + 1));
	memcpy(q, p, len);
	q[len] = 'x';
	assert_int_equal(rec_decode(q, len + 1, &d), REC_CORRUPT);
	free(q);
	/* A NUL inside the host; an empty recipient. */
	p[REC_HDR + 3] = '\0';
	assert_int_equal(rec_decode(p, len, &d), REC_CORRUPT);
	free(p);
	assert_non_null(p = sample(&len));
	p[REC_HDR + 16 + 13 + 5] = 0;
	assert_int_equal(rec_decode(p, len, &d), REC_CORRUPT);
	free(p);
}

static void
test_ints(void **state)
{
	unsigned char	 b[8];

	(void)state;
	rec_id_key(0x0102030405060708ULL, b);
	assert_int_equal(b[0], 1);
	assert_int_equal(b[7], 8);
	assert_true(rec_key_id(b) == 0x0102030405060708ULL);
	rec_put_le64(b, 0x0102030405060708ULL);
	assert_int_equal(b[0], 8);
	assert_true(rec_get_le64(b) == 0x0102030405060708ULL);
	rec_put_le32(b, 0xa1b2c3d4);
	assert_int_equal(b[0], 0xd4);
	assert_true(rec_get_le32(b) == 0xa1b2c3d4);
}

/* Format 2's "rec" key: big-endian, so memcmp orders host, arrival, id. */
static void
test_hkey(void **state)
{
	unsigned char	 a[REC_HKEY_LEN], b[REC_HKEY_LEN];
	uint64_t	 arr, id;
	uint32_t	 hid;

	(void)state;
	rec_hkey(0x01020304, 0x1122334455667788ULL, 0x99, a);
	assert_int_equal(a[0], 0x01);
	assert_int_equal(a[3], 0x04);
	assert_int_equal(a[4], 0x11);
	assert_int_equal(a[11], 0x88);
	assert_int_equal(a[19], 0x99);
	rec_hkey_split(a, &hid, &arr, &id);
	assert_int_equal(hid, 0x01020304);
	assert_true(arr == 0x1122334455667788ULL);
	assert_int_equal(id, 0x99);
	/* A later arrival sorts after, whatever the ids. */
	rec_hkey(7, 1000, 5, a);
	rec_hkey(7, 1001, 2, b);
	assert_true(memcmp(a, b, sizeof(a)) < 0);
	/* The same arrival: the id decides. */
	rec_hkey(7, 1000, 6, b);
	assert_true(memcmp(a, b, sizeof(a)) < 0);
	/* Every record of host 7 sorts before any of host 8. */
	rec_hkey(7, UINT64_MAX, UINT64_MAX, a);
	rec_hkey(8, 0, 0, b);
	assert_true(memcmp(a, b, sizeof(a)) < 0);
	rec_hid_key(0xdeadbeef, a);
	assert_int_equal(rec_key_hid(a), 0xdeadbeef);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_ints),
		cmocka_unit_test(test_hkey),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
