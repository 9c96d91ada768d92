/*
 * lock: ephemeral maildrop locks under RUN_DIR (docs/design.md §6).
 * Each lock is an flock(2) on a file in RUN_DIR/locks/PUNT/HOST/: the
 * kernel drops it when the owner dies, so a dead owner's lock is always
 * taken over, a crash never leaves one behind, and nothing is fsync'd.
 * A host session holds the host file exclusively; a user session holds it
 * shared plus the user's own file exclusively.  So host conflicts with
 * everything on the host, user with host and with the same user.
 */
#ifndef SDPS_LOCK_H
#define SDPS_LOCK_H

enum lock_res {
	LOCK_OK,
	LOCK_BUSY,	/* held by a live session: -ERR [IN-USE] */
	LOCK_ERR	/* could not create or open the lock file (logged) */
};

struct lock {
	int	host_fd;	/* -1 when not held */
	int	user_fd;	/* -1 for a host session */
};

/* A struct lock that holds nothing. */
void	lock_init(struct lock *lk);

/*
 * Take the maildrop lock for host (user NULL) or user@host on punt,
 * without blocking.  host and user must be normalized.
 */
enum lock_res lock_take(const char *run_dir, const char *punt,
	    const char *host, const char *user, struct lock *lk);

/* Release; safe on a struct lock that holds nothing. */
void	lock_release(struct lock *lk);

#endif
