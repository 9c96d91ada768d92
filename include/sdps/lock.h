/*
 * lock: ephemeral maildrop locks under RUN_DIR (DESIGN.md §3, §4).
 * Each lock is a byte-range lock (Linux open file description locks,
 * F_OFD_SETLK) on one file per punt, RUN_DIR/locks/PUNT.lock: the kernel
 * drops it when the owner dies, so a dead owner's lock is always taken
 * over, a crash never leaves one behind, nothing is fsync'd, and a login
 * creates no file (a made-up user name costs nothing that outlives the
 * session).  A maildrop is one byte of that file, at an offset hashed from
 * its name: a host session write-locks the host's byte; a user session
 * read-locks it and write-locks its user's own byte.  So host conflicts
 * with everything on the host, user with host and with the same user.
 */
#ifndef SDPS_LOCK_H
#define SDPS_LOCK_H

enum lock_res {
	LOCK_OK,
	LOCK_BUSY,	/* held by a live session: -ERR [IN-USE] */
	LOCK_ERR	/* could not create or open the lock file (logged) */
};

struct lock {
	int	fd;	/* the punt's lock file, own open; -1 when not held */
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
