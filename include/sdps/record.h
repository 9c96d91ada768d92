/*
 * record: the byte codec of a local punt's index (docs/design.md §5):
 * the msg record, the msg and host keys/values (ids), and the integers
 * of the meta record.  Pure byte work: no LMDB, no I/O, no allocation
 * but rec_encode's buffer.  The local store (src/punt/store*.c) and its tests
 * are its only users.
 *
 * Two version numbers, one rule (docs/design.md §5.2):
 *  - REC_PUNT_FORMAT, the meta record's "version", says what every
 *    reader of the punt must understand (the databases, their keys, the
 *    meaning of the flags).  A binary refuses to open a punt whose format
 *    is not its own, says so, and changes nothing.  Raise it only for a
 *    change an older binary could not skip safely.
 *  - REC_VERSION, the first octet of each msg record, says how that one
 *    record is laid out.  A record of a higher version than this binary
 *    knows is REC_NEWER: it is not corrupt, it is another binary's, and
 *    no code path may delete or rewrite it (fsck reports it and leaves it
 *    and its spool file alone; listings skip it and log it).  Only a
 *    record of a known version that does not decode is REC_CORRUPT.
 *    Version 0 was never written: it is corrupt.
 *
 * Error convention: rec_decode returns enum rec_res; rec_encode returns
 * NULL (errno ENOMEM) or the buffer; the rest cannot fail.
 *
 * msg record, version 1.  All integers little-endian at fixed offsets:
 *	0 u8 version, 1..3 zero, 4 u32 flags, 8 u64 arrival_us,
 *	16 u64 octets, 24 u64 stored_octets, 32 u64 claim_us,
 *	40 u16 host_len, 42 u16 sender_len, 44 u16 agent_len, 46 u16 nrcpts,
 *	48 host, sender, agent, then nrcpts times (u8 len, local part).
 * Keys of "msg" and data of "host" are ids as 8-byte big-endian numbers,
 * so LMDB's memcmp order is numeric order.  Meta integers are
 * little-endian: "version" u32, "punt_uid" and "next_id" u64.
 */
#ifndef SDPS_RECORD_H
#define SDPS_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define REC_PUNT_FORMAT	2	/* meta "version": index format 2 */
#define REC_VERSION	1	/* the msg record layout this binary writes */
#define REC_HDR		48
#define REC_RCPTS_MAX	65535
#define REC_ID_LEN	8	/* msg key, host value */

/* A decoded record: pointers into the encoded value or a caller's buffer. */
struct rec {
	uint32_t	 flags;		/* STORE_F_* */
	uint64_t	 arrival_us, octets, stored_octets, claim_us;
	const char	*host, *sender, *agent;
	size_t		 host_len, sender_len, agent_len;
	size_t		 nrcpts;
	const unsigned char *rcpts;	/* packed (u8 len, bytes) list */
	size_t		 rcpts_len;
};

enum rec_res {
	REC_OK,
	REC_CORRUPT,	/* a known version that does not decode */
	REC_NEWER	/* a version this binary does not know: leave it */
};

/* Decode len octets at data into r (pointing into data). */
enum rec_res rec_decode(const void *data, size_t len, struct rec *r);

/* The version octet of an encoded record (0 if empty), for reports. */
unsigned rec_version(const void *data, size_t len);

/* Encode r (always as REC_VERSION) into a malloc'd buffer of *lenp. */
unsigned char *rec_encode(const struct rec *r, size_t *lenp);

/* Iterate r's recipients: the next entry (u8 len, octets) or NULL. */
const unsigned char *rec_rcpt_next(const struct rec *r,
	    const unsigned char *cur, size_t *len);
/* Entry rc (of len octets) equals user, case-insensitively. */
int	rec_rcpt_is(const unsigned char *rc, size_t len, const char *user);
int	rec_has_user(const struct rec *r, const char *user);

/* Ids as keys: 8 octets big-endian. */
void	rec_id_key(uint64_t id, unsigned char *k);
uint64_t rec_key_id(const unsigned char *k);

/*
 * Index format 2 (docs/design.md §5.2), what the store reads and
 * writes (the msg/host keying above is format 1's, read only by the
 * upgrade):
 * records clustered by host in arrival order.  "rec" key = host id u32,
 * arrival_us u64, message id u64, all big-endian (memcmp order is host,
 * then arrival, then id), value = the msg record above, unchanged; "id"
 * key = the id (8 octets BE), value = the first 12 octets of its "rec"
 * key (host id, arrival); "hosts" key = the host name, value = its host
 * id (u32 BE).  Host ids start at 1 (meta "next_hid") and are never reused.
 */
#define REC_PUNT_FORMAT_2	2
#define REC_HKEY_LEN	20	/* "rec" key */
#define REC_HPFX_LEN	12	/* host id + arrival: the "id" value */
#define REC_HID_LEN	4	/* "hosts" value, the "rec" key prefix */

void	rec_hkey(uint32_t hid, uint64_t arrival_us, uint64_t id,
	    unsigned char *k);
/* Split a "rec" key (REC_HKEY_LEN octets); any pointer may be NULL. */
void	rec_hkey_split(const unsigned char *k, uint32_t *hid,
	    uint64_t *arrival_us, uint64_t *id);
void	rec_hid_key(uint32_t hid, unsigned char *k);
uint32_t rec_key_hid(const unsigned char *k);

/* Little-endian integers of the msg and meta records. */
void	rec_put_le32(unsigned char *p, uint32_t v);
void	rec_put_le64(unsigned char *p, uint64_t v);
uint32_t rec_get_le32(const unsigned char *p);
uint64_t rec_get_le64(const unsigned char *p);

#endif
