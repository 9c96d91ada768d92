/*
 * record: the byte codec of a local punt's index and its version rule
 * (include/sdps/record.h, docs/design.md §5).  No LMDB here: the callers
 * hand in and get back plain octets.
 */

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sdps/record.h"
#include "sdps/store.h"
#include "sdps/util.h"

static void
rec_put_le16(unsigned char *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

void
rec_put_le32(unsigned char *p, uint32_t v)
{
	int	 i;

	for (i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

void
rec_put_le64(unsigned char *p, uint64_t v)
{
	int	 i;

	for (i = 0; i < 8; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static uint16_t
rec_get_le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

uint32_t
rec_get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

uint64_t
rec_get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int	 i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

void
rec_id_key(uint64_t id, unsigned char *k)
{
	int	 i;

	for (i = 7; i >= 0; i--, id >>= 8)
		k[i] = id & 0xff;
}

uint64_t
rec_key_id(const unsigned char *k)
{
	uint64_t id = 0;
	int	 i;

	for (i = 0; i < 8; i++)
		id = id << 8 | k[i];
	return id;
}

void
rec_hid_key(uint32_t hid, unsigned char *k)
{
	k[0] = hid >> 24;
	k[1] = (hid >> 16) & 0xff;
	k[2] = (hid >> 8) & 0xff;
	k[3] = hid & 0xff;
}

uint32_t
rec_key_hid(const unsigned char *k)
{
	return (uint32_t)k[0] << 24 | (uint32_t)k[1] << 16 |
	    (uint32_t)k[2] << 8 | k[3];
}

void
rec_hkey(uint32_t hid, uint64_t arrival_us, uint64_t id, unsigned char *k)
{
	rec_hid_key(hid, k);
	/* Big-endian like the ids, so memcmp order is numeric order. */
	rec_id_key(arrival_us, k + REC_HID_LEN);
	rec_id_key(id, k + REC_HPFX_LEN);
}

void
rec_hkey_split(const unsigned char *k, uint32_t *hid, uint64_t *arrival_us,
    uint64_t *id)
{
	if (hid != NULL)
		*hid = rec_key_hid(k);
	if (arrival_us != NULL)
		*arrival_us = rec_key_id(k + REC_HID_LEN);
	if (id != NULL)
		*id = rec_key_id(k + REC_HPFX_LEN);
}

static int
has_nul(const char *s, size_t len)
{
	return memchr(s, '\0', len) != NULL;
}

unsigned
rec_version(const void *data, size_t len)
{
	return len > 0 ? ((const unsigned char *)data)[0] : 0;
}

/*
 * The version octet is judged before anything else: a newer layout may
 * be shorter or longer than ours, and is never ours to call corrupt.
 */
enum rec_res
rec_decode(const void *data, size_t size, struct rec *r)
{
	const unsigned char	*p = data;
	size_t			 off, i, len;

	if (size == 0 || p[0] == 0)
		return REC_CORRUPT;
	if (p[0] > REC_VERSION)
		return REC_NEWER;
	if (size < REC_HDR)
		return REC_CORRUPT;
	r->flags = rec_get_le32(p + 4);
	r->arrival_us = rec_get_le64(p + 8);
	r->octets = rec_get_le64(p + 16);
	r->stored_octets = rec_get_le64(p + 24);
	r->claim_us = rec_get_le64(p + 32);
	r->host_len = rec_get_le16(p + 40);
	r->sender_len = rec_get_le16(p + 42);
	r->agent_len = rec_get_le16(p + 44);
	r->nrcpts = rec_get_le16(p + 46);
	if (r->host_len == 0 || r->host_len > UTIL_HOST_MAX ||
	    r->sender_len > UTIL_SENDER_MAX || r->agent_len > STORE_AGENT_MAX)
		return REC_CORRUPT;
	off = REC_HDR;
	if (size - off < r->host_len + r->sender_len + r->agent_len)
		return REC_CORRUPT;
	r->host = (const char *)p + off;
	off += r->host_len;
	r->sender = (const char *)p + off;
	off += r->sender_len;
	r->agent = (const char *)p + off;
	off += r->agent_len;
	if (has_nul(r->host, r->host_len) ||
	    has_nul(r->sender, r->sender_len) ||
	    has_nul(r->agent, r->agent_len))
		return REC_CORRUPT;
	r->rcpts = p + off;
	for (i = 0; i < r->nrcpts; i++) {
		if (off >= size)
			return REC_CORRUPT;
		len = p[off];
		if (len == 0 || len > UTIL_USER_MAX ||
		    size - off - 1 < len ||
		    has_nul((const char *)p + off + 1, len))
			return REC_CORRUPT;
		off += 1 + len;
	}
	if (off != size)
		return REC_CORRUPT;
	r->rcpts_len = off - (size_t)(r->rcpts - p);
	return REC_OK;
}

/* Encode r into a malloc'd buffer; NULL on ENOMEM. */
unsigned char *
rec_encode(const struct rec *r, size_t *lenp)
{
	unsigned char	*p;
	size_t		 len, off;

	len = REC_HDR + r->host_len + r->sender_len + r->agent_len +
	    r->rcpts_len;
	if ((p = calloc(1, len)) == NULL)
		return NULL;
	p[0] = REC_VERSION;
	rec_put_le32(p + 4, r->flags);
	rec_put_le64(p + 8, r->arrival_us);
	rec_put_le64(p + 16, r->octets);
	rec_put_le64(p + 24, r->stored_octets);
	rec_put_le64(p + 32, r->claim_us);
	rec_put_le16(p + 40, (uint16_t)r->host_len);
	rec_put_le16(p + 42, (uint16_t)r->sender_len);
	rec_put_le16(p + 44, (uint16_t)r->agent_len);
	rec_put_le16(p + 46, (uint16_t)r->nrcpts);
	off = REC_HDR;
	memcpy(p + off, r->host, r->host_len);
	off += r->host_len;
	memcpy(p + off, r->sender, r->sender_len);
	off += r->sender_len;
	memcpy(p + off, r->agent, r->agent_len);
	off += r->agent_len;
	memcpy(p + off, r->rcpts, r->rcpts_len);
	*lenp = len;
	return p;
}

/* Iterate the packed recipient list: returns the next one or NULL. */
const unsigned char *
rec_rcpt_next(const struct rec *r, const unsigned char *cur, size_t *len)
{
	const unsigned char *next;

	next = cur == NULL ? r->rcpts : cur + 1 + cur[0];
	if (next >= r->rcpts + r->rcpts_len)
		return NULL;
	*len = next[0];
	return next;
}

int
rec_rcpt_is(const unsigned char *rc, size_t len, const char *user)
{
	return strlen(user) == len &&
	    strncasecmp((const char *)rc + 1, user, len) == 0;
}

int
rec_has_user(const struct rec *r, const char *user)
{
	const unsigned char	*rc = NULL;
	size_t			 len;

	while ((rc = rec_rcpt_next(r, rc, &len)) != NULL)
		if (rec_rcpt_is(rc, len, user))
			return 1;
	return 0;
}
