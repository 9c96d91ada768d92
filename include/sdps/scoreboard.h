/*
 * scoreboard: RUN_DIR/scoreboard, a shared mmap'd file: a header and one
 * slot per worker (docs/design.md §7.3).  The master makes it before forking;
 * workers write only their own slot, inside a seqlock, so sdps-ctl (which
 * maps it read-only) never sees a torn slot.  Who writes what is noted
 * per field.
 *
 * Error convention: int functions return 0 or -1: logged for sb_create*,
 * errno for sb_open_ro, and "busy" (not an error) for sb_slot_read, the
 * trylock and sb_auth_enter; the rest cannot fail.
 */
#ifndef SDPS_SCOREBOARD_H
#define SDPS_SCOREBOARD_H

#include <sys/types.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/config.h"
#include "sdps/util.h"

#define SB_MAGIC	0x53445053u	/* "SDPS" */
/* 2: auth throttle fields, sb_slot.pool (issue 8); 3: sb_slot.tls (issue 10);
 * 4: SB_LINK and the remote punts' link state (issue 11) */
#define SB_VERSION	4
#define SB_PEER_MAX	64
#define SB_MAILDROP_MAX	(UTIL_ADDR_MAX + 1)
#define SB_CMD_MAX	16
#define SB_TLS_MAX	64	/* "TLSv1.3/TLS_AES_256_GCM_SHA384 ktls" */

enum sb_state {
	SB_FREE = 0,	/* no worker */
	SB_STARTING,	/* forked, opening environments */
	SB_IDLE,	/* waiting in accept */
	SB_AUTH,	/* POP3 AUTHORIZATION */
	SB_TRANS,	/* POP3 TRANSACTION */
	SB_UPDATE,	/* POP3 UPDATE (removing) */
	SB_LMTP,	/* serving an LMTP client */
	SB_LINK,	/* serving a front end's punt link (punt_listen) */
	SB_EXITING
};

/* Which listeners a worker accepts on (issue 8: LMTP has its own pool). */
enum sb_pool {
	SB_POOL_POP3 = 0,
	SB_POOL_LMTP
};

struct sb_slot {
	/* Master: set at fork, cleared at reap. */
	_Atomic pid_t	 pid;
	uint64_t	 generation;	/* config generation it was forked for */
	uint32_t	 pool;		/* enum sb_pool; stale while pid is 0 */
	/* Master sets to ask an idle worker to exit (spare policy). */
	_Atomic uint32_t please_exit;
	/* Worker, under the auth mutex: 1 while hashing a password. */
	uint32_t	 hashing;
	/* Worker, under the auth mutex: the fair hashing queue (issue 8).
	 * auth_wait_pid is the waiter's pid while it waits for a place;
	 * auth_tag its virtual start time, auth_seq its arrival order;
	 * auth_source the client's source id.  Tag and source are kept
	 * while hashing. */
	pid_t		 auth_wait_pid;
	uint64_t	 auth_tag, auth_seq;
	uint64_t	 auth_source;

	/* Worker, inside sb_slot_write_begin/end. */
	_Atomic uint32_t seq;		/* odd while being written */
	uint32_t	 state;		/* enum sb_state */
	uint64_t	 session_id;	/* 0 when no session */
	char		 peer[SB_PEER_MAX];
	char		 maildrop[SB_MAILDROP_MAX];	/* after login */
	char		 command[SB_CMD_MAX];	/* current or last keyword */
	char		 tls[SB_TLS_MAX];	/* "" = no TLS (slot_tls) */
	uint64_t	 started_us;	/* session (connection) start */
	uint64_t	 login_us;	/* 0 before login */
	uint64_t	 last_us;	/* last command */
	uint64_t	 sessions_served;
	uint64_t	 retr, top, dele;	/* this session */
	uint64_t	 octets_out;		/* this session */
	uint32_t	 punts_used;	/* bit i = config punt i in the session */
};

struct sb_punt_health {
	char		 name[CONFIG_NAME_MAX + 1];
	/* Any worker: 1 reachable, 0 not, at checked_us. */
	_Atomic uint32_t ok;
	_Atomic uint64_t checked_us;
	/* Remote punts (issue 11), any worker: the link is not tried
	 * again before down_until_us (util_now_us; 0 = not down), so
	 * logins do not wait for a dead punt;
	 * rtt_us is the last measured round trip (0 = none yet). */
	_Atomic uint32_t remote;
	_Atomic uint64_t down_until_us;
	_Atomic uint64_t rtt_us;
};

struct sb_header {
	/* Master, at creation. */
	uint32_t	 magic, version;
	pid_t		 master_pid;
	uint64_t	 start_us;
	uint32_t	 nslots;
	uint32_t	 npunts;
	struct sb_punt_health punts[CONFIG_PUNT_MAX];
	/* Master: bumped on each successful reload. */
	_Atomic uint64_t generation;
	/* Master: set when a worker died; the next worker to start runs
	 * puntset_maintain (LMDB reader check, punt_local.c) and clears it. */
	_Atomic uint32_t reader_check;
	/* Master: set on SIGTERM; workers stop accepting. */
	_Atomic uint32_t stopping;
	/* Master: bumped by "sdps-ctl auth flush" (via SIGUSR1 to master). */
	_Atomic uint64_t auth_cache_epoch;
	/* Workers: totals, atomically added. */
	_Atomic uint64_t next_session_id;
	_Atomic uint64_t total_sessions, total_auth_failures;
	_Atomic uint64_t total_retrieved, total_deleted, total_octets_out;
	_Atomic uint64_t total_lmtp_msgs;
	/* Robust, process-shared: serialises accept() across workers. */
	pthread_mutex_t	 accept_mutex;
	/* Robust, process-shared: guards the slots' hashing fields. */
	pthread_mutex_t	 auth_mutex;
	/*
	 * Auth throttle and fair hashing queue (issue 8).  Workers add the
	 * totals; the master refreshes the two gauges every tick from the
	 * throttle table (which sdps-ctl cannot see: it is anonymous).
	 */
	_Atomic uint64_t total_auth_throttled;	/* refused without a hash */
	_Atomic uint64_t total_auth_hashes;	/* password hashes computed */
	_Atomic uint32_t auth_blocked_sources;	/* over their budget now */
	_Atomic uint32_t auth_blocked_hosts;
	/* Under auth_mutex: the last arrival's number and the tag of the
	 * last waiter to enter (the queue's virtual time). */
	uint64_t	 auth_next_seq, auth_vtime;
	/* Futex word: bumped whenever a hashing place may have changed
	 * hands, so waiters sleep instead of polling. */
	_Atomic uint32_t auth_wake;
};

struct authcache;
struct throttle;
struct tls_server;

struct scoreboard {
	struct sb_header *hdr;
	struct sb_slot	*slots;		/* hdr->nslots of them */
	size_t		 map_len;
	bool		 readonly;
	/* Master, before fork: the shared auth cache, or NULL when
	 * auth_cache_ttl is 0.  Process-local pointer, not in the file. */
	struct authcache *authcache;
	/* Master, before fork: the shared auth throttle table (issue 8).
	 * Process-local pointer, not in the file. */
	struct throttle	*throttle;
	/* Master, before fork (issue 10): the TLS server context (tls.h),
	 * or NULL without a TLS listener.  Process-local pointer. */
	struct tls_server *tls;
};

/*
 * Master: create the scoreboard for nslots workers and the config's punts
 * in the directory dirfd (run_dir names it in log lines), initialise the
 * mutexes, map it shared.  The file is made afresh: whatever has the name
 * (a stale scoreboard, or a symlink planted by the directory's owner) is
 * unlinked, never followed, and the new one created O_EXCL|O_NOFOLLOW,
 * mode 0640.  When uid or gid is not -1 the file is given to them through
 * the descriptor (fchown), so sdps-ctl reads it as root or as a member of
 * the admin group.  The workers need no access by name: they write
 * through the mapping they inherit.  Returns 0 or -1 (logged).
 */
int	sb_create_at(int dirfd, const char *run_dir, unsigned nslots,
	    const struct config *cf, uid_t uid, gid_t gid,
	    struct scoreboard *sb);

/* sb_create_at on run_dir opened by name, without a chown (tests). */
int	sb_create(const char *run_dir, unsigned nslots, const struct config *cf,
	    struct scoreboard *sb);

/* sdps-ctl: map an existing scoreboard read-only.  0, or -1 with errno
 * (ENOENT: no daemon has run with this run_dir). */
int	sb_open_ro(const char *run_dir, struct scoreboard *sb);

void	sb_close(struct scoreboard *sb);

/*
 * Worker: bracket every write to its own slot's worker fields.  Only a
 * slot's worker calls these (the master uses sb_slot_reset): begin holds
 * the fault point "sb.slot.write", hit with seq odd, so a test can kill a
 * worker inside a write (SDPS_FAULT=sb.slot.write:N).
 */
void	sb_slot_write_begin(struct sb_slot *slot);
void	sb_slot_write_end(struct sb_slot *slot);

/*
 * Worker: record the command being served and the time of last activity.
 * Only printable ASCII is stored (anything else becomes '?'), truncated
 * to fit: the name may be a client's raw verb, and sdps-ctl prints it.
 * slot may be NULL (no scoreboard).
 */
void	sb_slot_command(struct sb_slot *slot, const char *name);

/* Word-sized loads of seq a reader makes before it calls a slot busy. */
#define SB_READ_TRIES	65536

/*
 * Reader: a consistent copy of slot.  A write in progress is retried, at
 * most SB_READ_TRIES times: a writer killed inside a write leaves seq odd
 * for good, and no reader may wait for that.  Returns 0 (copy consistent),
 * or -1 (busy: copy is a zeroed slot with only pid filled in).
 */
int	sb_slot_read(const struct sb_slot *slot, struct sb_slot *copy);

/*
 * Master, once the slot's worker has been reaped (nobody writes the slot
 * any more): its last contents, without the seqlock, and true if the
 * worker died inside a write (then the copy may be half old, half new;
 * its strings are terminated).  Never waits.
 */
bool	sb_slot_peek(const struct sb_slot *slot, struct sb_slot *copy);

/*
 * Master, no worker alive on the slot (reaped, or not yet forked): clear
 * every worker field, strings wiped whole, set state, and leave seq even
 * whatever a dead writer left it at.  Readers retry meanwhile as during
 * any write.  pid, generation, please_exit and hashing are the caller's.
 */
void	sb_slot_reset(struct sb_slot *slot, uint32_t state);

/*
 * Worker, at the end of a session: wipe the strings whole (peer, maildrop,
 * command: the scoreboard must not keep past sessions' data).  Call inside
 * sb_slot_write_begin/end.
 */
void	sb_slot_wipe_strings(struct sb_slot *slot);

/* Take/drop the accept mutex; a dead holder's lock is recovered. 0/-1. */
int	sb_accept_lock(struct scoreboard *sb);
void	sb_accept_unlock(struct scoreboard *sb);
/* Master: the accept mutex without waiting.  0 taken, -1 busy or
 * broken (the master must never block on a worker). */
int	sb_accept_trylock(struct scoreboard *sb);

/*
 * POP3 sessions (states auth, trans, update) from peer in slots other
 * than self, counted under the accept mutex so that a worker that
 * records its own peer before unlocking makes the count exact.  A slot
 * whose writer died mid-write (seq left odd) is skipped after a bounded
 * wait instead of waited for.
 */
unsigned sb_count_peer(struct scoreboard *sb, const struct sb_slot *self,
	    const char *peer);

/*
 * Enter the set of at most max workers hashing a password, waiting up to
 * wait_ms for room.  0 entered, -1 still full.  Slots of dead workers do
 * not count (the master clears them at reap; a dead waiter is skipped).
 *
 * Fair between sources (issue 8): source identifies the client (e.g.
 * throttle_source_id).  Start-time fair queueing with one unit per hash:
 * a waiter's tag is one more than the last tag its source already has in
 * line or hashing, and never below the tag of the last waiter that
 * entered; the smallest (tag, arrival) goes next.  So sources take turns:
 * one source with many connections gets one place per round while other
 * sources wait, and a newcomer waits about one hash per waiting source,
 * not one per waiting connection.
 */
int	sb_auth_enter(struct scoreboard *sb, struct sb_slot *slot, unsigned max,
	    unsigned wait_ms, uint64_t source);
void	sb_auth_leave(struct scoreboard *sb, struct sb_slot *slot);

/* A new non-zero session id, unique for this scoreboard. */
uint64_t sb_session_id(struct scoreboard *sb);

/* "idle", "trans", ... for enum sb_state. */
const char *sb_state_name(uint32_t state);

#endif
