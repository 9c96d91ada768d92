/*
 * store_int.h: NOT A PUBLIC HEADER.  The declarations the local punt
 * store's own files share (store.c, store_put.c, store_read.c,
 * store_update.c, store_fsck.c) and nothing else may include: the LMDB
 * handles inside struct store and the one-transaction helpers every
 * operation uses.  include/sdps/store.h stays the module's whole surface;
 * this file only lets that one module span several files of a readable
 * size.  It lives in src/, not include/sdps/, so no other module can
 * reach it by the include path.
 *
 * Error convention (as in store.h for its int functions): 0 or -1, the
 * reason already logged; lstore_rec_get returns enum lstore_get.
 */
#ifndef SDPS_STORE_INT_H
#define SDPS_STORE_INT_H

#include <sys/types.h>

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "sdps/record.h"
#include "sdps/store.h"

#define STORE_NAME_MAX		64

/*
 * The punt's LMDB databases (docs/design.md §5.2).  Format 2 uses
 * meta, rec, id and hosts; msg and host are format 1's, kept (empty) in
 * a format-2 punt so that a format-1 binary still reaches its version
 * check and refuses clearly (§5).  The upgrade (store_upgrade.c) and the
 * store use these names and flags only.
 */
#define LSTORE_DB_META		"meta"
#define LSTORE_DB_REC		"rec"	/* hid|arrival|id -> msg record */
#define LSTORE_DB_ID		"id"	/* id -> hid|arrival (12 octets) */
#define LSTORE_DB_HOSTS		"hosts"	/* host name -> hid (u32 BE) */
#define LSTORE_DB_MSG		"msg"	/* format 1: id -> msg record */
#define LSTORE_DB_HOST		"host"	/* format 1: host -> ids (dupsort) */
#define LSTORE_DB_HOST_FLAGS	(MDB_DUPSORT | MDB_DUPFIXED)
#define LSTORE_MAXDBS		8	/* six named databases, and room */

/* Meta keys. */
#define LSTORE_META_VERSION	"version"	/* u32 LE: REC_PUNT_FORMAT */
#define LSTORE_META_NEXT_HID	"next_hid"	/* u32 LE, from 1 */
/* Present while an upgrade runs (format 1 -> 2): the punt is refused. */
#define LSTORE_META_UPGRADE	"upgrade"

#define RETURN_PATH_OCTETS(s)	(strlen("Return-Path: <") + strlen(s) + \
				 strlen(">\r\n"))

struct store {
	MDB_env		*env;
	MDB_dbi		 meta, rec, id, hosts;	/* format 2 */
	char		 name[STORE_NAME_MAX + 1];
	char		 path[PATH_MAX];
	char		 spool[PATH_MAX];
	char		 tmp[PATH_MAX];
	uint64_t	 uid;
	dev_t		 dev;
	ino_t		 ino;
	uint64_t	 lease_us;
	unsigned	 tmp_seq;
	struct lstore_cq *cq;		/* commit queue, mapped on first use */
};

/* lstore_rec_get: what the index holds under an id. */
enum lstore_get {
	GET_OK,
	GET_NONE,	/* no record */
	GET_BAD,	/* undecodable record of a known version (logged) */
	GET_NEWER,	/* a record version this binary does not know
			 * (logged): skip it, never delete or rewrite it */
	GET_ERR		/* LMDB error (logged) */
};

void	lstore_seterr(char *err, size_t errlen, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

/* spool/XX/<16 hex digits> of id; -1 if it does not fit. */
int	lstore_spool_path(const struct store *st, uint64_t id, char *buf,
	    size_t len);
/* r is under an SMTP claim younger than the lease. */
bool	lstore_claim_live(const struct store *st, const struct rec *r,
	    uint64_t now);

int	lstore_txn_begin(struct store *st, unsigned flags, MDB_txn **txn);
int	lstore_txn_commit(struct store *st, MDB_txn *txn);

/*
 * The LMDB environment of a punt's index directory, with the store's
 * maxdbs, maxreaders and map size (0: the default).  0 or -1 (err set).
 */
int	lstore_env_open(const char *dir, uint64_t map_size, MDB_env **envp,
	    char *err, size_t errlen);

/* Format 2: the host id of host (GET_OK, GET_NONE or GET_ERR/GET_BAD). */
enum lstore_get lstore_hid_get(struct store *st, MDB_txn *txn,
	    const char *host, size_t hlen, uint32_t *hid);
/* The "rec" key of id (from its "id" entry) into k (REC_HKEY_LEN). */
enum lstore_get lstore_rec_key(struct store *st, MDB_txn *txn, uint64_t id,
	    unsigned char *k);

/* The "id" entry of the "rec" key k (its id, its first 12 octets). */
int	lstore_id_put(struct store *st, MDB_txn *txn, const unsigned char *k,
	    unsigned flags);

/* Fetch and decode id; r points into *v, valid while txn lives. */
enum lstore_get lstore_rec_get(struct store *st, MDB_txn *txn, uint64_t id,
	    MDB_val *v, struct rec *r);
int	lstore_rec_put(struct store *st, MDB_txn *txn, uint64_t id,
	    const struct rec *r, unsigned flags);
/*
 * Rewrite id's existing record under its key (host and arrival never
 * change, docs/design.md §5.2); flags are mdb_put's.  A new record goes by
 * lstore_rec_insert.
 */
/*
 * A new record: its host id (allocated from next_hid for a new host), its
 * "rec" and "id" entries, never overwriting.
 */
int	lstore_rec_insert(struct store *st, MDB_txn *txn, uint64_t id,
	    const struct rec *r);
/* Move a record found under k to the key its host and arrival give. */
int	lstore_rec_rekey(struct store *st, MDB_txn *txn, uint64_t id,
	    const unsigned char *k, const MDB_val *v);
/* Remove record and id entry; the caller unlinks the file after commit. */
int	lstore_rec_del(struct store *st, MDB_txn *txn, uint64_t id,
	    const struct rec *r);
/* Unlink id's spool file (after the commit that removed its record). */
void	lstore_unlink_msg(struct store *st, uint64_t id);

int	lstore_meta_get_u64(struct store *st, MDB_txn *txn, const char *k,
	    uint64_t *out);
int	lstore_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *k,
	    const void *v, size_t len);

/*
 * ---- Group commit (store_put.c, store_commitq.c) ----
 * One message of a batch: its record, its durable file, and either the
 * caller's item or a commit-queue slot another process filled.
 */
struct lstore_bitem {
	struct rec	 r;
	const char	*path;		/* on st's filesystem, fsynced */
	uint64_t	 id;
	enum store_res	 res;
	int		 slot;		/* commit-queue slot, or -1 */
	uint32_t	 gen;
	struct store_item *item;	/* the caller's, or NULL */
};

enum lstore_cq_state { LSTORE_CQ_PENDING, LSTORE_CQ_OK, LSTORE_CQ_FAIL };

#define LSTORE_CQ_SLOTS	64	/* the most one commit takes from the queue */

/* Queue r (file path) for whoever commits next: slot, or -1 (not
 * queued: no queue, full, too big; the caller commits it itself). */
int	lstore_cq_put(struct store *st, const struct rec *r, const char *path,
	    uint32_t *gen);
/* Under the write lock: settle taken slots whose taker is gone. */
int	lstore_cq_sweep(struct store *st, MDB_txn *txn);
/* Under the write lock: take up to max pending slots into out. */
size_t	lstore_cq_take(struct store *st, struct lstore_bitem *out,
	    size_t max);
void	lstore_cq_set_id(struct store *st, const struct lstore_bitem *b,
	    uint64_t id);
void	lstore_cq_stamp(struct store *st, const struct lstore_bitem *b,
	    uint64_t commit, unsigned batch);
void	lstore_cq_done(struct store *st, const struct lstore_bitem *b);
/* The owner's view of its slot; free it once settled. */
enum lstore_cq_state lstore_cq_state(struct store *st, int slot,
	    uint32_t gen, uint64_t *id, uint64_t *commit, unsigned *batch);
void	lstore_cq_free(struct store *st, int slot, uint32_t gen);
/* Take a still-pending slot back (true), or false if it was taken. */
bool	lstore_cq_unqueue(struct store *st, int slot, uint32_t gen);
void	lstore_cq_close(struct store *st);

#endif
