/*
 * lock: ephemeral maildrop locks under RUN_DIR (docs/design.md §6).
 * Each lock is a byte-range lock (Linux open file description locks,
 * F_OFD_SETLK) on one of a fixed set of files per punt,
 * RUN_DIR/locks/PUNT.00 to PUNT.3f: the kernel drops it when the owner
 * dies, so a dead owner's lock is always taken over, a crash never leaves
 * one behind, nothing is fsync'd, and a login creates no file of its own
 * (a made-up user name costs nothing that outlives the session).  A
 * maildrop is one byte in one of those files, both chosen by a hash of
 * its name: a host session write-locks the host's byte; a user session
 * read-locks it and write-locks its user's own byte.  So host conflicts
 * with everything on the host, user with host and with the same user.
 *
 * Error convention: enum lock_res, since a caller must tell a busy
 * maildrop (LOCK_BUSY) from trouble (LOCK_ERR, logged).
 */
#ifndef SDPS_LOCK_H
#define SDPS_LOCK_H

enum lock_res {
	LOCK_OK,
	LOCK_BUSY,	/* held by a live session: -ERR [IN-USE] */
	LOCK_ERR	/* could not create or open the lock file (logged) */
};

struct lock {
	int	host_fd;	/* the host byte's file, own open; -1: none */
	int	user_fd;	/* the user byte's file; -1 for a host session */
};

/* A struct lock that holds nothing. */
void	lock_init(struct lock *lk);

/*
 * Take the maildrop lock for host (user NULL) or user@host on punt,
 * without blocking.  host and user must be normalized.  Two struct locks
 * conflict exactly as two processes would, even in one process.
 */
enum lock_res lock_take(const char *run_dir, const char *punt,
	    const char *host, const char *user, struct lock *lk);

/* Release; safe on a struct lock that holds nothing. */
void	lock_release(struct lock *lk);

#endif
