/*
 * store: one punt = one directory with an LMDB index and a spool of
 * wire-format message files (docs/design.md §5).  Only the local store's
 * files (src/punt/store*.c, sharing the private src/punt/store_int.h) and auth.c
 * include <lmdb.h>; LMDB error codes never leave this module.  The
 * index's byte codec and its version rule are include/sdps/record.h.
 *
 * Process rules: open a punt in the process that uses it, after fork().
 * No function holds a read transaction after it returns.  Every function
 * may be called by one thread at a time per struct store.
 *
 * Error convention.  An operation whose outcome the protocols must tell
 * apart (a message gone, busy under a claim, a temporary or a permanent
 * failure) returns enum store_res.  Every other int function returns 0,
 * or -1 with the reason logged (or written to err, for those that take
 * err/errlen); store_open returns NULL likewise, store_tmp_open an fd or
 * -1 with errno.  Two deliberate exceptions: store_fsck returns 1 for
 * "problems remain" besides 0 and -1 (the three verdicts sdps-ctl fsck
 * reports), and store_is_available is a predicate (bool).
 */
#ifndef SDPS_STORE_H
#define SDPS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/util.h"

struct store;

/* Outcomes the protocols must tell apart. */
enum store_res {
	STORE_OK,
	STORE_GONE,	/* no such message (removed by SMTP or POP3, or never
			 * existed): POP3 answers with the dummy message */
	STORE_BUSY,	/* claimed by a live SMTP agent */
	STORE_TEMPFAIL,	/* I/O error, disk or map full, punt unavailable */
	STORE_PERMFAIL	/* corrupt record, unknown format version */
};

/* Message flags (msg record). */
#define STORE_F_READ		0x01	/* RETR finished sending (RD) */
#define STORE_F_IN_DELIVERY	0x02	/* claimed by an SMTP agent */
#define STORE_F_POP_DELETED	0x04	/* POP3 QUIT removed it while claimed */

#define STORE_UIDL_MAX		34	/* 16 + "-" + 16 + NUL */
#define STORE_AGENT_MAX		64

struct store_opts {
	uint64_t map_size;		/* octets, LMDB map size */
	unsigned claim_lease_s;		/* claims older than this are stale */
};

/* A message record, copied out of the index; free with store_msg_free. */
struct store_msg {
	uint64_t id;
	uint64_t arrival_us;
	uint64_t octets;	/* what LIST/STAT/RETR count: unstuffed, CRLF,
				 * the Return-Path line included */
	uint64_t stored_octets;	/* size of the wire-format file */
	uint32_t flags;		/* STORE_F_* */
	uint64_t claim_us;	/* claim time, with STORE_F_IN_DELIVERY */
	char	 host[UTIL_HOST_MAX + 1];
	char	 agent[STORE_AGENT_MAX + 1];
	char	*sender;	/* "" is the null sender */
	char   **rcpts;		/* lowercased local parts at host */
	size_t	 nrcpts;
	void	*mem_;		/* private: backing storage */
};

/* One row of a maildrop listing: fixed size, no pointers. */
struct store_entry {
	uint64_t id;
	uint64_t arrival_us;
	uint64_t octets;
	uint32_t flags;
	uint32_t env;	/* offset of the envelope in the listing's env arena:
			 * sender NUL, then every recipient local part NUL,
			 * then an empty string (only when an arena is asked
			 * for; *ENV answers from it even after SMTP took the
			 * message) */
};

/* What store_put needs besides the data. */
struct store_envelope {
	const char	 *host;		/* normalized (util_host_normalize) */
	const char	 *sender;	/* normalized; "" = null sender */
	const char *const *rcpts;	/* normalized local parts at host */
	size_t		  nrcpts;	/* >= 1 */
};

struct store_stat {
	uint64_t msgs, hosts, octets, stored_octets;
	uint64_t read, in_delivery, pop_deleted;
	uint64_t next_id;
	uint64_t map_used, map_size;	/* octets */
};

struct store_fsck {
	uint64_t msgs_checked;
	uint64_t orphan_files;		/* file without a record */
	uint64_t missing_files;		/* record without a file */
	uint64_t size_mismatches;	/* file size != stored_octets */
	uint64_t bad_records;		/* undecodable, or host index wrong */
	uint64_t tmp_files;		/* leftovers in tmp/ */
	uint64_t repaired;
	uint64_t unknown_version;	/* records of a version this binary
					 * does not know: reported, left
					 * alone, not counted as problems */
};

/* Called once per problem found by store_fsck, with a one-line report. */
typedef void store_report_fn(const char *line, void *arg);

/*
 * Visit each message; return non-zero from the callback to stop.  The
 * callback runs inside a read transaction: it must not call any other
 * store function and should be quick.
 */
typedef int store_walk_fn(const struct store_msg *m, void *arg);

/*
 * Create a punt at path (directories index/, spool/, tmp/ and the meta
 * record with a fresh random punt_uid).  If the punt exists with the same
 * name it is left alone and this succeeds.  Returns 0, or -1 with err.
 */
int	store_create(const char *path, const char *name, uint64_t map_size,
	    char *err, size_t errlen);

/*
 * Open an existing punt; runs mdb_reader_check.  Fails (NULL, err set) if
 * the directory, index or meta record is missing or its name differs.
 */
struct store *store_open(const char *path, const char *name,
	    const struct store_opts *opts, char *err, size_t errlen);
void	store_close(struct store *st);

const char *store_name(const struct store *st);
uint64_t store_uid(const struct store *st);

/* UIDL string for id: hex(punt_uid) "-" hex(id). */
void	store_uidl(const struct store *st, uint64_t id, char *buf);

/*
 * Cheap health check, no disk write: the punt directory is still there,
 * is the one that was opened, and its spool is accessible.
 */
bool	store_is_available(struct store *st);

/* Clear stale reader slots (after a process using the punt died). */
void	store_reader_check(struct store *st);

/*
 * Store one message durably: write the wire-format data (CRLF, dot-stuffed,
 * no terminating "." line) to tmp/, fsync, rename into spool/, fsync the
 * directory, then commit the index record.  body_octets is the unstuffed
 * CRLF size; the stored client size adds the Return-Path line.  Returns
 * STORE_OK only after the commit (id set), STORE_TEMPFAIL on any I/O or
 * space trouble (nothing left behind but, at worst, an orphan file for
 * fsck).
 */
enum store_res store_put(struct store *st, const struct store_envelope *env,
	    const void *wire, size_t wire_len, uint64_t body_octets,
	    uint64_t *id, char *err, size_t errlen);

/*
 * ---- A message whose wire-format data is already in a file (LMTP
 * streams DATA to disk instead of memory). ----
 *
 * store_tmp_open: create a new, empty file in st's tmp/ (read-write, the
 * writer's pid in its name, so fsck --repair removes it only once this
 * process is gone); its path goes to path.  Returns the fd, or -1 (errno).
 *
 * store_put_file: store_put for data already written, in wire format, to
 * src_path (open as src_fd, readable, wire_len octets, already fsynced by
 * the caller) on any punt's filesystem.  On st's filesystem the data is
 * not written again: with last (no other copy will be made from
 * src_path) src_path itself is renamed into the spool (*via RENAME; on
 * success src_path is gone, src_fd stays valid), else a hard link of it
 * in st's tmp/ is (*via LINK: the spool file shares the inode, whose data
 * is never rewritten).  On another filesystem a copy_file_range(2) copy
 * in st's tmp/, fsynced (*via COPY).  Then the same durable path as
 * store_put (rename into spool/, directory fsync, index commit); STORE_OK
 * only after the commit.  On failure src_path may be gone (a failed
 * last rename): copy from src_fd then.
 */
enum store_via { STORE_VIA_COPY, STORE_VIA_LINK, STORE_VIA_RENAME };

int	store_tmp_open(struct store *st, char *path, size_t pathlen);
enum store_res store_put_file(struct store *st,
	    const struct store_envelope *env, const char *src_path, int src_fd,
	    uint64_t wire_len, uint64_t body_octets, bool last, uint64_t *id,
	    enum store_via *via, char *err, size_t errlen);

/*
 * ---- Group commit: several messages, one index commit. ----
 *
 * store_put_batch: store n messages whose wire-format data is already
 * durable (written and fsynced) in items[i].path on st's filesystem.
 * Each is renamed into spool/ under a fresh id inside one LMDB write
 * transaction (the id is allocated there too: a crash before the commit
 * leaves an orphan under an id never committed, which fsck removes or a
 * later rename replaces), every spool directory touched is fsynced once,
 * then one commit.  Messages other processes are storing on the same
 * punt at the same moment join that transaction (PUNT/index/commitq).
 * items[i].res is STORE_OK only after the commit that holds it (id,
 * commit = that commit's LMDB txn id, batch = the messages in it), else
 * STORE_TEMPFAIL or STORE_PERMFAIL (a bad envelope), and then the path
 * may be gone.  Returns STORE_OK when every item is stored, else the
 * first failure (err says why).  store_put and store_put_file are this
 * for one message.
 *
 * store_put_file_batch: store_put_file for n envelopes of the same data
 * (one message for several hosts on one punt), in one commit: the paths
 * are made here (link or copy of src_path; with last the final item
 * takes src_path itself) and each item's via says how.
 */
struct store_item {
	const struct store_envelope *env;	/* in */
	const char	*path;			/* in (store_put_batch) */
	uint64_t	 wire_len, body_octets;	/* in */
	enum store_res	 res;			/* out */
	uint64_t	 id;			/* out, with STORE_OK */
	uint64_t	 commit;		/* out, with STORE_OK */
	unsigned	 batch;			/* out, with STORE_OK */
	enum store_via	 via;			/* out (store_put_file_batch) */
};

enum store_res store_put_batch(struct store *st, struct store_item *items,
	    size_t n, char *err, size_t errlen);
enum store_res store_put_file_batch(struct store *st,
	    struct store_item *items, size_t n, const char *src_path,
	    int src_fd, uint64_t wire_len, uint64_t body_octets, bool last,
	    char *err, size_t errlen);

/*
 * Maildrop listing for host, or only the messages with a recipient equal
 * to user (case-insensitive) when user is not NULL.  POP_DELETED messages
 * are left out.  *out is a malloc'd array in arrival order, then id
 * (maildrop_order's order within one punt; the caller frees
 * it).  If env is not NULL, *env receives a malloc'd arena holding every
 * listed message's envelope (see struct store_entry.env; caller frees).
 * The read transaction has ended when this returns.  Returns 0 or -1.
 */
int	store_list(struct store *st, const char *host, const char *user,
	    struct store_entry **out, size_t *n, char **env);

/* Copy one record out.  STORE_GONE if there is none. */
enum store_res store_msg_get(struct store *st, uint64_t id,
	    struct store_msg *m);
void	store_msg_free(struct store_msg *m);

/*
 * Open the message file for sending.  m (may be NULL) receives the
 * record.  STORE_GONE if the record is gone or POP_DELETED; STORE_TEMPFAIL
 * if the record exists but the file cannot be opened.  *fd is the caller's.
 */
enum store_res store_msg_open(struct store *st, uint64_t id, int *fd,
	    struct store_msg *m);

/*
 * store_msg_open for the administrator (sdps-ctl spool show): a
 * POP_DELETED message is opened too, since its file stays until the SMTP
 * claim ends and spool ls lists it.
 */
enum store_res store_msg_open_admin(struct store *st, uint64_t id, int *fd,
	    struct store_msg *m);

/* Set READ on every id (missing ids are skipped), in one commit. */
int	store_mark_read(struct store *st, const uint64_t *ids, size_t n);

/*
 * POP3 QUIT removal of ids, in one commit, then unlink the files.  With
 * user NULL the whole message goes; with a user, only that recipient, and
 * the message when none is left.  A message under a live SMTP claim gets
 * POP_DELETED instead and goes when the claim ends.  A missing id counts
 * as removed.  Returns STORE_OK, or STORE_TEMPFAIL and nothing changed.
 */
enum store_res store_remove(struct store *st, const uint64_t *ids, size_t n,
	    const char *user);

/*
 * SMTP agent markers.  claim: STORE_OK, STORE_GONE (missing or
 * POP_DELETED), STORE_BUSY (a live claim exists; a stale one is taken).
 * done: removes the message (STORE_GONE if missing).  release: clears
 * the claim, and removes the message if POP_DELETED (STORE_GONE if
 * missing).  Each is one commit.
 */
enum store_res store_claim(struct store *st, uint64_t id, const char *agent);
enum store_res store_done(struct store *st, uint64_t id);
enum store_res store_release(struct store *st, uint64_t id);

/*
 * Expiry removal of one message regardless of user, skipping (STORE_BUSY)
 * one under a live claim.  STORE_GONE if missing.
 */
enum store_res store_expire(struct store *st, uint64_t id);

/* Walk every message, or only host's when host is not NULL. Returns 0/-1. */
int	store_walk(struct store *st, const char *host, store_walk_fn *fn,
	    void *arg);

/* Hosts with at least one message, in order; callback as store_walk. */
int	store_hosts(struct store *st, int (*fn)(const char *host,
	    uint64_t msgs, void *arg), void *arg);

int	store_stat(struct store *st, struct store_stat *out);

/*
 * Compare index and spool.  With repair: remove orphan and tmp files,
 * drop records whose file is missing, rebuild host index entries.  A
 * record of an unknown (newer) version is reported and never repaired:
 * it, its host index entry and its spool file stay (record.h's rule).
 * Returns 0 when consistent (after repair, if asked), 1 when problems
 * remain, -1 on error.
 */
int	store_fsck(struct store *st, bool repair, struct store_fsck *out,
	    store_report_fn *report, void *arg);

/*
 * ---- Upgrade of a format-1 punt to index format 2 (sdps-ctl punt
 * upgrade; docs/design.md §18.4).  Crash-safe: the old databases
 * are not written before the one commit that switches, so a kill at any
 * point leaves the punt all format 1 or all format 2 (a half-done upgrade
 * is refused by store_open and finished, or rolled back with abort, by
 * the next call).  Refuses, changing nothing: another process has the
 * punt's environment open, a record of a newer record version, an index
 * fault (fsck --repair first), too little map.  Returns 0 (what happened
 * in *out) or -1 with err.
 */
enum store_upgrade_done {
	STORE_UPGRADED,		/* format 1 (or a half-done upgrade) -> 2 */
	STORE_UPGRADE_NOOP,	/* already format 2, nothing changed */
	STORE_UPGRADE_ABORTED,	/* abort: format 1 again */
	STORE_UPGRADE_NOABORT	/* abort asked on format 1: nothing to do */
};

struct store_upgrade_opts {
	uint64_t map_size;	/* octets, 0: the default */
	size_t	 batch;		/* records per commit, 0: 8192 */
	bool	 abort;		/* roll a half-done upgrade back */
};

struct store_upgrade_res {
	enum store_upgrade_done done;
	uint64_t records;	/* records in the punt */
	uint64_t copied;	/* copied by this call */
	uint64_t batches;	/* batch commits of this call */
	bool	 resumed;	/* a half-done upgrade was continued */
};

int	store_upgrade(const char *path, const char *name,
	    const struct store_upgrade_opts *opts, struct store_upgrade_res *out,
	    char *err, size_t errlen);

#endif
