/*
 * punt: the seam between the front ends and one punt (docs/design.md §5),
 * in the spirit of OpenSMTPD's queue_backend: a small table of
 * operations (struct punt_ops) behind an opaque struct punt.  Today's
 * LMDB-plus-spool store (store.h) is the first implementation
 * (punt_local_open); a remote punt would be a second table.
 *
 * Error convention: every operation that can fail returns enum store_res
 * (STORE_OK on success); accessors return their value.  Process rules are
 * store.h's: open in the process that uses the punt, after fork().
 *
 * What the interface deliberately does not cover: fsck, punt create,
 * admin walks and the LMTP tmp-file streaming into a punt's own tmp/
 * need the local directory, so they reach it through punt_local_store(),
 * which a remote punt (punt_remote.c, docs/punt-protocol.md) answers
 * with NULL.
 */
#ifndef SDPS_PUNT_H
#define SDPS_PUNT_H

#include <stdbool.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sdps/lock.h"
#include "sdps/store.h"

struct punt;

/*
 * The maildrop lock, taken at the punt (docs/design.md §6): it dies with
 * its holder.  The local punt keeps it in the front end's RUN_DIR
 * (lock.c: kernel OFD locks, dropped when the process dies); a remote
 * punt will hold it at the punt, tied to the connection that took it, so
 * two front ends exclude each other.  Holds nothing when punt is NULL.
 */
struct punt_lock {
	struct punt	*punt;
	struct lock	 local;		/* the local implementation's */
	void		*impl;		/* a remote implementation's */
};

/*
 * An open message body.  fd >= 0: a file holding the stored wire-format
 * data from offset 0 (the local punt), for sendfile(2) or read(2).
 * fd == -1: a stream only punt_body_read() can read (a remote punt).
 */
struct punt_body {
	int		 fd;
	void		*stream;
	struct punt	*punt;
};

/* open_body flags. */
#define PUNT_BODY_ADMIN	0x01	/* open a POP_DELETED message too (spool show) */

struct punt_ops {
	const char *kind;			/* "local", ... */
	void	(*close)(void *impl);
	/* Cheap: is the punt still the one opened, and reachable? */
	bool	(*health)(void *impl);
	/* Housekeeping after a process that used the punt died. */
	void	(*maintain)(void *impl);
	uint64_t (*uid)(void *impl);
	void	(*uidl)(void *impl, uint64_t id, char *buf);
	enum store_res (*lock)(void *impl, const char *host, const char *user,
		    struct punt_lock *lk);
	void	(*unlock)(void *impl, struct punt_lock *lk);
	enum store_res (*list)(void *impl, const char *host, const char *user,
		    struct store_entry **out, size_t *n, char **env);
	enum store_res (*open_body)(void *impl, uint64_t id, int flags,
		    struct punt_body *b, struct store_msg *m);
	ssize_t	(*body_read)(void *impl, struct punt_body *b, void *buf,
		    size_t len);
	void	(*body_close)(void *impl, struct punt_body *b);
	enum store_res (*mark_read)(void *impl, const uint64_t *ids, size_t n);
	enum store_res (*remove)(void *impl, const uint64_t *ids, size_t n,
		    const char *user);
	enum store_res (*claim)(void *impl, uint64_t id, const char *agent);
	enum store_res (*release)(void *impl, uint64_t id);
	enum store_res (*done)(void *impl, uint64_t id);
	enum store_res (*put)(void *impl, const struct store_envelope *env,
		    const void *wire, size_t wire_len, uint64_t body_octets,
		    uint64_t *id, char *err, size_t errlen);
	/* put, from a file holding the wire data at offset 0 (LMTP's
	 * streamed DATA, sent through a remote punt's link). */
	enum store_res (*put_file)(void *impl,
		    const struct store_envelope *env, int fd, uint64_t wire_len,
		    uint64_t body_octets, uint64_t *id, char *err,
		    size_t errlen);
	enum store_res (*stat)(void *impl, struct store_stat *out);
	struct store *(*local_store)(void *impl);
	/*
	 * The parallel login (issue 11), optional (NULL: the local punt,
	 * whose lock and list never wait on a network).  begin starts the
	 * maildrop's lock without waiting (a remote punt: the connect, or
	 * SELECT sent on the live link); the lock and list ops that follow
	 * finish it by deadline_us.  1 started, -1 failed at once.
	 */
	int	(*begin)(void *impl, const char *host, const char *user,
		    uint64_t deadline_us);
	/* remove, first half, optional: start it without waiting (a
	 * remote punt sends DELE and UPDATE); remove then finishes it. */
	void	(*remove_begin)(void *impl, const uint64_t *ids, size_t n,
		    const char *user);
	/* Release, first half, optional: start it without waiting (a
	 * remote punt sends UNSELECT); unlock then finishes it. */
	void	(*unlock_begin)(void *impl, struct punt_lock *lk);
	/* TOP cut at the punt (NULL: the caller cuts the open_body file). */
	enum store_res (*open_top)(void *impl, uint64_t id, uint64_t lines,
		    struct punt_body *b);
};

/*
 * Make a punt from an implementation: ops is static, impl is the
 * implementation's state (ops->close frees it).  NULL if out of memory
 * (impl is closed then).
 */
struct punt *punt_new(const struct punt_ops *ops, void *impl,
	    const char *name);
void	punt_close(struct punt *p);

/*
 * The local punt: store_open(path, name) with map_size and claim_lease_s,
 * and maildrop locks in run_dir.  NULL with err set.
 */
struct punt *punt_local_open(const char *path, const char *name,
	    const char *run_dir, uint64_t map_size, unsigned claim_lease_s,
	    char *err, size_t errlen);

/*
 * A remote punt (punt_remote.c): the punt server at cp->address, reached
 * over a link (link.h) with the TLS context tls_client_get(cp) (built by
 * the master before the privilege drop; tls_client.h).  Nothing is
 * connected here: the link is made at the first use and kept across
 * sessions.  health (may be NULL) is the scoreboard's shared row for this
 * punt (down memory, rtt); kill (may be NULL) ends any wait.  NULL with
 * err set.
 */
struct sb_punt_health;
struct config;
struct config_punt;

/* The POP3 client a login is for, sent to a remote punt as XCLIENT for
 * its log (docs/punt-protocol.md); addr "" = none. */
struct punt_client {
	char		 addr[64];
	unsigned	 port;
	uint64_t	 sid;
};

/* client (may be NULL) is read at each login, so its owner (the
 * puntset) updates it in place. */
struct punt *punt_remote_open(const struct config *cf,
	    const struct config_punt *cp, struct sb_punt_health *health,
	    volatile sig_atomic_t *kill, const struct punt_client *client,
	    char *err, size_t errlen);

const char *punt_name(const struct punt *p);
const char *punt_kind(const struct punt *p);
uint64_t punt_uid(const struct punt *p);
void	punt_uidl(const struct punt *p, uint64_t id, char *buf);
bool	punt_health(struct punt *p);
void	punt_maintain(struct punt *p);

/*
 * Maildrop lock for host (user NULL) or user@host, without blocking:
 * STORE_OK, STORE_BUSY (a live holder: -ERR [IN-USE]), STORE_TEMPFAIL
 * (could not take it, logged).  lk holds nothing unless STORE_OK.
 */
enum store_res punt_lock(struct punt *p, const char *host, const char *user,
	    struct punt_lock *lk);
void	punt_lock_init(struct punt_lock *lk);
void	punt_unlock(struct punt_lock *lk);	/* safe when holding nothing */
/* Start punt_unlock without waiting for it (several punts released in
 * one round trip); punt_unlock still follows.  Safe on anything. */
void	punt_unlock_begin(struct punt_lock *lk);

/* store_list: the snapshot of one maildrop (STORE_OK/STORE_TEMPFAIL). */
enum store_res punt_list(struct punt *p, const char *host, const char *user,
	    struct store_entry **out, size_t *n, char **env);

/*
 * store_msg_open (store_msg_open_admin with PUNT_BODY_ADMIN): STORE_OK
 * with b open (close with punt_body_close), STORE_GONE, STORE_TEMPFAIL,
 * STORE_PERMFAIL.  m (may be NULL) receives the record.
 */
enum store_res punt_open_body(struct punt *p, uint64_t id, int flags,
	    struct punt_body *b, struct store_msg *m);
/*
 * TOP's source: STORE_OK with b open.  b->fd >= 0 is the whole stored
 * file (the local punt: the caller cuts it); b->fd == -1 is a stream
 * already cut at the punt (relay it as it is).
 */
enum store_res punt_open_top(struct punt *p, uint64_t id, uint64_t lines,
	    struct punt_body *b);

/*
 * Start the maildrop's lock without waiting (maildrop_open, before it
 * takes any lock): 1 started (finish with punt_lock, then punt_list),
 * 0 nothing to start (a local punt), -1 failed (leave the punt out).
 */
int	punt_begin(struct punt *p, const char *host, const char *user,
	    uint64_t deadline_us);

ssize_t	punt_body_read(struct punt_body *b, void *buf, size_t len);
void	punt_body_close(struct punt_body *b);

/* store_mark_read, store_remove (QUIT, with the claim rules), and the
 * SMTP agent's markers, as in store.h. */
enum store_res punt_mark_read(struct punt *p, const uint64_t *ids, size_t n);
enum store_res punt_remove(struct punt *p, const uint64_t *ids, size_t n,
	    const char *user);
/* Start punt_remove without waiting (QUIT reaches every punt in one
 * round trip); punt_remove with the same arguments must follow. */
void	punt_remove_begin(struct punt *p, const uint64_t *ids, size_t n,
	    const char *user);
enum store_res punt_claim(struct punt *p, uint64_t id, const char *agent);
enum store_res punt_release(struct punt *p, uint64_t id);
enum store_res punt_done(struct punt *p, uint64_t id);
enum store_res punt_put(struct punt *p, const struct store_envelope *env,
	    const void *wire, size_t wire_len, uint64_t body_octets,
	    uint64_t *id, char *err, size_t errlen);
enum store_res punt_put_file(struct punt *p, const struct store_envelope *env,
	    int fd, uint64_t wire_len, uint64_t body_octets, uint64_t *id,
	    char *err, size_t errlen);
enum store_res punt_stat(struct punt *p, struct store_stat *out);

/* The local store under p, or NULL for a punt that is not local. */
struct store *punt_local_store(struct punt *p);

#endif
