/*
 * scoreboard: the mmap'd RUN_DIR/scoreboard shared by the master, its
 * workers and sdps-ctl: header, per-worker slots (seqlock), and the robust
 * process-shared mutexes that serialise accept() and bound password hashing.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/futex.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/fault.h"
#include "sdps/log.h"
#include "sdps/scoreboard.h"

#define SB_FILE		"scoreboard"
#define SB_ALIGN	64	/* one cache line: slots do not share lines */
/* Owner (root or the daemon) and the admin group: it names peers and
 * maildrops, which are nobody else's business. */
#define SB_MODE		0640

static size_t
sb_slots_off(void)
{
	return (sizeof(struct sb_header) + SB_ALIGN - 1) & ~(size_t)(SB_ALIGN - 1);
}

static size_t
sb_slot_stride(void)
{
	return (sizeof(struct sb_slot) + SB_ALIGN - 1) & ~(size_t)(SB_ALIGN - 1);
}

static size_t
sb_len(unsigned nslots)
{
	return sb_slots_off() + (size_t)nslots * sb_slot_stride();
}

static int
sb_path(const char *run_dir, char *buf, size_t len)
{
	int	 n;

	n = snprintf(buf, len, "%s/%s", run_dir, SB_FILE);
	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int
sb_mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t	 a;
	int			 rc;

	if ((rc = pthread_mutexattr_init(&a)) != 0)
		goto fail;
	if ((rc = pthread_mutexattr_setpshared(&a,
	    PTHREAD_PROCESS_SHARED)) != 0 ||
	    (rc = pthread_mutexattr_setrobust(&a,
	    PTHREAD_MUTEX_ROBUST)) != 0 ||
	    (rc = pthread_mutex_init(m, &a)) != 0) {
		pthread_mutexattr_destroy(&a);
		goto fail;
	}
	pthread_mutexattr_destroy(&a);
	return 0;
fail:
	errno = rc;
	log_warn("scoreboard: pthread_mutex_init");
	return -1;
}

/*
 * Create the scoreboard file of len bytes in dirfd, owned by uid:gid
 * ((uid_t)-1 / (gid_t)-1: unchanged) with SB_MODE.  The descriptor, or
 * -1 (logged).
 */
static int
sb_file_create(int dirfd, const char *run_dir, uid_t uid, gid_t gid,
    size_t len)
{
	struct stat	 st;
	int		 fd;

	/*
	 * A fresh file every start: a previous master's slots and mutexes
	 * mean nothing now.  The name is unlinked, not opened with O_TRUNC:
	 * run_dir belongs to the service user, who could have left a
	 * symlink or a hard link to a root-only file there, and unlinking a
	 * name never touches what it points to.  O_EXCL|O_NOFOLLOW then
	 * refuses anything that appears in between.
	 */
	if (unlinkat(dirfd, SB_FILE, 0) == -1 && errno != ENOENT) {
		log_warn("scoreboard: remove %s/%s", run_dir, SB_FILE);
		return -1;
	}
	fd = openat(dirfd, SB_FILE, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, SB_MODE);
	if (fd == -1) {
		log_warn("scoreboard: create %s/%s", run_dir, SB_FILE);
		return -1;
	}
	/* Owner and mode through the descriptor, never by name; the mode
	 * again after fchown (and whatever the umask took away). */
	if (((uid != (uid_t)-1 || gid != (gid_t)-1) &&
	    fchown(fd, uid, gid) == -1) || fchmod(fd, SB_MODE) == -1 ||
	    fstat(fd, &st) == -1) {
		log_warn("scoreboard: owner/mode of %s/%s", run_dir, SB_FILE);
		close(fd);
		return -1;
	}
	if (ftruncate(fd, (off_t)len) == -1) {
		log_warn("scoreboard: ftruncate %s/%s", run_dir, SB_FILE);
		close(fd);
		return -1;
	}
	return fd;
}

int
sb_create_at(int dirfd, const char *run_dir, unsigned nslots,
    const struct config *cf, uid_t uid, gid_t gid, struct scoreboard *sb)
{
	struct sb_header *h;
	size_t		 len;
	void		*p;
	int		 fd, i;

	memset(sb, 0, sizeof(*sb));
	if (nslots == 0) {
		log_warnx("scoreboard: no slots");
		return -1;
	}
	len = sb_len(nslots);
	if ((fd = sb_file_create(dirfd, run_dir, uid, gid, len)) == -1)
		return -1;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		log_warn("scoreboard: mmap %s/%s", run_dir, SB_FILE);
		return -1;
	}
	memset(p, 0, len);
	h = p;
	h->version = SB_VERSION;
	h->master_pid = getpid();
	h->start_us = util_now_us();
	h->nslots = nslots;
	h->npunts = 0;
	if (cf != NULL) {
		for (i = 0; i < cf->npunts && i < CONFIG_PUNT_MAX; i++) {
			memcpy(h->punts[i].name, cf->punts[i].name,
			    sizeof(h->punts[i].name));
			atomic_store(&h->punts[i].ok, 1);
			/* sdps-ctl status tells a remote punt (issue 11)
			 * before any worker used it. */
			atomic_store(&h->punts[i].remote,
			    cf->punts[i].address[0] != '\0' ? 1 : 0);
		}
		h->npunts = (uint32_t)i;
	}
	atomic_store(&h->next_session_id, 1);
	if (sb_mutex_init(&h->accept_mutex) == -1 ||
	    sb_mutex_init(&h->auth_mutex) == -1) {
		munmap(p, len);
		return -1;
	}
	/* Readers check the magic last: it says the rest is initialised. */
	atomic_thread_fence(memory_order_release);
	h->magic = SB_MAGIC;
	sb->hdr = h;
	sb->slots = (struct sb_slot *)((char *)p + sb_slots_off());
	sb->map_len = len;
	sb->readonly = false;
	return 0;
}

int
sb_create(const char *run_dir, unsigned nslots, const struct config *cf,
    struct scoreboard *sb)
{
	int	 dfd, rc;

	memset(sb, 0, sizeof(*sb));
	dfd = open(run_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd == -1) {
		log_warn("scoreboard: %s", run_dir);
		return -1;
	}
	rc = sb_create_at(dfd, run_dir, nslots, cf, (uid_t)-1, (gid_t)-1, sb);
	close(dfd);
	return rc;
}

int
sb_open_ro(const char *run_dir, struct scoreboard *sb)
{
	char		 path[PATH_MAX];
	struct stat	 st;
	struct sb_header *h;
	void		*p;
	int		 fd, saved;

	memset(sb, 0, sizeof(*sb));
	if (sb_path(run_dir, path, sizeof(path)) == -1)
		return -1;
	/* sdps-ctl may run as root: read only a regular file, not
	 * whatever a symlink of the run_dir's owner points at. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return -1;
	if (fstat(fd, &st) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size < sb_len(1)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	saved = errno;
	close(fd);
	if (p == MAP_FAILED) {
		errno = saved;
		return -1;
	}
	h = p;
	if (h->magic != SB_MAGIC || h->version != SB_VERSION ||
	    h->nslots == 0 || sb_len(h->nslots) > (size_t)st.st_size ||
	    h->npunts > CONFIG_PUNT_MAX) {
		munmap(p, (size_t)st.st_size);
		errno = EINVAL;
		return -1;
	}
	sb->hdr = h;
	sb->slots = (struct sb_slot *)((char *)p + sb_slots_off());
	sb->map_len = (size_t)st.st_size;
	sb->readonly = true;
	return 0;
}

void
sb_close(struct scoreboard *sb)
{
	if (sb->hdr != NULL)
		munmap(sb->hdr, sb->map_len);
	memset(sb, 0, sizeof(*sb));
}

/*
 * Seqlock (Boehm, "Can seqlocks get along with programming language memory
 * models?"): the writer makes seq odd, then a release fence keeps the data
 * stores after it; the final release store keeps them before the even
 * value.  Only the slot's own worker writes, so no writer lock is needed.
 */
void
sb_slot_write_begin(struct sb_slot *slot)
{
	uint32_t	 s;

	s = atomic_load_explicit(&slot->seq, memory_order_relaxed);
	atomic_store_explicit(&slot->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	/* Tests kill a worker here, with seq odd (scoreboard.h). */
	fault_point("sb.slot.write");
}

void
sb_slot_write_end(struct sb_slot *slot)
{
	uint32_t	 s;

	s = atomic_load_explicit(&slot->seq, memory_order_relaxed);
	atomic_store_explicit(&slot->seq, s + 1, memory_order_release);
}

void
sb_slot_wipe_strings(struct sb_slot *slot)
{
	memset(slot->peer, 0, sizeof(slot->peer));
	memset(slot->maildrop, 0, sizeof(slot->maildrop));
	memset(slot->command, 0, sizeof(slot->command));
	memset(slot->tls, 0, sizeof(slot->tls));
}

void
sb_slot_command(struct sb_slot *slot, const char *name)
{
	unsigned char	 c;
	size_t		 i;

	if (slot == NULL)
		return;
	sb_slot_write_begin(slot);
	/*
	 * The one place a command name enters the scoreboard, so the one
	 * place it is made harmless: a client's verb could carry terminal
	 * escapes to whoever runs sdps-ctl sessions.  The tail is zeroed
	 * too, so no byte of a longer earlier command stays behind.
	 */
	for (i = 0; i < sizeof(slot->command) - 1 && name[i] != '\0'; i++) {
		c = (unsigned char)name[i];
		slot->command[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	memset(slot->command + i, 0, sizeof(slot->command) - i);
	slot->last_us = util_now_us();
	sb_slot_write_end(slot);
}

/* A copy's strings end inside their arrays, whatever the writer did. */
static void
sb_slot_terminate(struct sb_slot *copy)
{
	copy->peer[sizeof(copy->peer) - 1] = '\0';
	copy->maildrop[sizeof(copy->maildrop) - 1] = '\0';
	copy->command[sizeof(copy->command) - 1] = '\0';
}

int
sb_slot_read(const struct sb_slot *slot, struct sb_slot *copy)
{
	struct sb_slot	*s = (struct sb_slot *)slot;
	uint32_t	 s1, s2;
	unsigned	 tries;

	/*
	 * Bounded: a writer killed mid-write leaves seq odd for good (the
	 * master resets the slot when it reaps the writer, but the master
	 * itself must not wait for that, nor may sdps-ctl).  A live
	 * writer's section is a few stores, far below the bound, so "busy"
	 * means a dead or descheduled writer, not a slow reader.
	 */
	for (tries = 0; tries < SB_READ_TRIES; tries++) {
		s1 = atomic_load_explicit(&s->seq, memory_order_acquire);
		if ((s1 & 1) == 0) {
			memcpy(copy, slot, sizeof(*copy));
			atomic_thread_fence(memory_order_acquire);
			s2 = atomic_load_explicit(&s->seq,
			    memory_order_relaxed);
			if (s1 == s2) {
				/* The copy's own seq is a snapshot; make
				 * it the even value it was read at. */
				atomic_store_explicit(&copy->seq, s1,
				    memory_order_relaxed);
				sb_slot_terminate(copy);
				return 0;
			}
		}
		if (tries % 1024 == 1023)
			sched_yield();
	}
	memset(copy, 0, sizeof(*copy));
	atomic_store(&copy->pid, atomic_load(&s->pid));
	return -1;
}

bool
sb_slot_peek(const struct sb_slot *slot, struct sb_slot *copy)
{
	uint32_t	 seq;

	seq = atomic_load_explicit(&((struct sb_slot *)slot)->seq,
	    memory_order_acquire);
	memcpy(copy, slot, sizeof(*copy));
	sb_slot_terminate(copy);
	return (seq & 1) != 0;
}

void
sb_slot_reset(struct sb_slot *s, uint32_t state)
{
	uint32_t	 seq;

	/*
	 * No writer is alive, so this is the only writer: make seq odd if
	 * the dead one left it even, clear, then step it to the next even
	 * value.  Never a seqlock read, never a wait.
	 */
	seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
	if ((seq & 1) == 0) {
		seq++;
		atomic_store_explicit(&s->seq, seq, memory_order_relaxed);
	}
	atomic_thread_fence(memory_order_release);
	s->state = state;
	s->session_id = 0;
	sb_slot_wipe_strings(s);
	s->started_us = s->login_us = s->last_us = 0;
	s->sessions_served = 0;
	s->retr = s->top = s->dele = s->octets_out = 0;
	s->punts_used = 0;
	atomic_store_explicit(&s->seq, seq + 1, memory_order_release);
}

static int
sb_mutex_lock(pthread_mutex_t *m, const char *what)
{
	int	 rc;

	rc = pthread_mutex_lock(m);
	if (rc == EOWNERDEAD) {
		/*
		 * The holder died with it held.  What it guards (nothing for
		 * accept, the hashing flags for auth, which the master clears
		 * at reap) is consistent, so just mark the mutex usable.
		 */
		log_warnx("scoreboard: %s mutex: previous holder died",
		    what);
		if ((rc = pthread_mutex_consistent(m)) == 0)
			return 0;
	}
	if (rc != 0) {
		errno = rc;
		log_warn("scoreboard: %s mutex: pthread_mutex_lock", what);
		return -1;
	}
	return 0;
}

int
sb_accept_lock(struct scoreboard *sb)
{
	return sb_mutex_lock(&sb->hdr->accept_mutex, "accept");
}

void
sb_accept_unlock(struct scoreboard *sb)
{
	pthread_mutex_unlock(&sb->hdr->accept_mutex);
}

int
sb_accept_trylock(struct scoreboard *sb)
{
	int	 rc;

	rc = pthread_mutex_trylock(&sb->hdr->accept_mutex);
	if (rc == EOWNERDEAD) {
		log_warnx("scoreboard: accept mutex: previous holder died");
		rc = pthread_mutex_consistent(&sb->hdr->accept_mutex);
	}
	return rc == 0 ? 0 : -1;
}

unsigned
sb_count_peer(struct scoreboard *sb, const struct sb_slot *self,
    const char *peer)
{
	struct sb_slot	 copy;
	unsigned	 i, n = 0;

	for (i = 0; i < sb->hdr->nslots; i++) {
		if (&sb->slots[i] == self || atomic_load(&sb->slots[i].pid) == 0)
			continue;
		/* A slot whose writer died mid-write counts as no session. */
		if (sb_slot_read(&sb->slots[i], &copy) != 0)
			continue;
		if ((copy.state == SB_AUTH || copy.state == SB_TRANS ||
		    copy.state == SB_UPDATE) && strcmp(copy.peer, peer) == 0)
			n++;
	}
	return n;
}

/*
 * Fair hashing queue (issue 8).  Waiters sleep on hdr->auth_wake (a
 * futex in the shared file mapping); every change of who hashes or who
 * waits bumps it and wakes them all to look again.  A bounded sleep
 * covers a wake lost to a holder that died between its change and its
 * wake.
 */
#define SB_AUTH_NAP_MS	100

static void
sb_auth_wake(struct sb_header *h)
{
	atomic_fetch_add(&h->auth_wake, 1);
	(void)syscall(SYS_futex, (uint32_t *)&h->auth_wake, FUTEX_WAKE,
	    INT_MAX, NULL, NULL, 0);
}

static void
sb_auth_nap(struct sb_header *h, uint32_t seen, unsigned ms)
{
	struct timespec	 ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	/* Returns at once if auth_wake moved since seen. */
	(void)syscall(SYS_futex, (uint32_t *)&h->auth_wake, FUTEX_WAIT,
	    seen, &ts, NULL, 0);
}

/* A waiter whose process is gone: forget it, it will never take its turn. */
static bool
sb_auth_dead(struct sb_slot *w)
{
	if (kill(w->auth_wait_pid, 0) == 0 || errno != ESRCH)
		return false;
	w->auth_wait_pid = 0;
	return true;
}

/* Under the mutex: the tag of a new waiter of source (see the header). */
static uint64_t
sb_auth_tag(struct scoreboard *sb, struct sb_slot *slot, uint64_t source)
{
	struct sb_slot	*w;
	uint64_t	 tag = sb->hdr->auth_vtime;
	unsigned	 i;

	for (i = 0; i < sb->hdr->nslots; i++) {
		w = &sb->slots[i];
		if (w == slot || w->auth_source != source ||
		    (w->auth_wait_pid == 0 && !w->hashing))
			continue;
		if (w->auth_tag + 1 > tag)
			tag = w->auth_tag + 1;
	}
	return tag;
}

/* Under the mutex: does no live waiter come before slot? */
static bool
sb_auth_my_turn(struct scoreboard *sb, struct sb_slot *slot)
{
	struct sb_slot	*w;
	unsigned	 i;

	for (i = 0; i < sb->hdr->nslots; i++) {
		w = &sb->slots[i];
		if (w == slot || w->auth_wait_pid == 0)
			continue;
		if ((w->auth_tag < slot->auth_tag ||
		    (w->auth_tag == slot->auth_tag &&
		    w->auth_seq < slot->auth_seq)) && !sb_auth_dead(w))
			return false;
	}
	return true;
}

int
sb_auth_enter(struct scoreboard *sb, struct sb_slot *slot, unsigned max,
    unsigned wait_ms, uint64_t source)
{
	struct sb_header *h = sb->hdr;
	uint64_t	 start_us = util_now_us(), waited_ms;
	unsigned	 busy, i;
	uint32_t	 seen;
	int		 rc = -1;

	if (max == 0)
		max = 1;
	if (sb_mutex_lock(&h->auth_mutex, "auth") == -1)
		return -1;
	slot->auth_tag = sb_auth_tag(sb, slot, source);
	slot->auth_seq = ++h->auth_next_seq;
	slot->auth_source = source;
	slot->auth_wait_pid = getpid();
	for (;;) {
		busy = 0;
		for (i = 0; i < h->nslots; i++) {
			if (&sb->slots[i] != slot && sb->slots[i].hashing)
				busy++;
		}
		if (busy < max && sb_auth_my_turn(sb, slot)) {
			slot->hashing = 1;
			if (slot->auth_tag > h->auth_vtime)
				h->auth_vtime = slot->auth_tag;
			rc = 0;
			break;
		}
		waited_ms = (util_now_us() - start_us) / 1000;
		if (waited_ms >= wait_ms)
			break;
		seen = atomic_load(&h->auth_wake);
		pthread_mutex_unlock(&h->auth_mutex);
		sb_auth_nap(h, seen, wait_ms - waited_ms < SB_AUTH_NAP_MS ?
		    (unsigned)(wait_ms - waited_ms) : SB_AUTH_NAP_MS);
		if (sb_mutex_lock(&h->auth_mutex, "auth") == -1) {
			slot->auth_wait_pid = 0;
			return -1;
		}
	}
	slot->auth_wait_pid = 0;
	pthread_mutex_unlock(&h->auth_mutex);
	/* Entering or giving up changes who is first in line. */
	sb_auth_wake(h);
	return rc;
}

void
sb_auth_leave(struct scoreboard *sb, struct sb_slot *slot)
{
	if (sb_mutex_lock(&sb->hdr->auth_mutex, "auth") == -1) {
		/* Unrecoverable mutex: clearing our own flag is still safe
		 * enough, since only the counter reads it. */
		slot->hashing = 0;
		sb_auth_wake(sb->hdr);
		return;
	}
	slot->hashing = 0;
	pthread_mutex_unlock(&sb->hdr->auth_mutex);
	sb_auth_wake(sb->hdr);
}

uint64_t
sb_session_id(struct scoreboard *sb)
{
	uint64_t	 id;

	do {
		id = atomic_fetch_add(&sb->hdr->next_session_id, 1);
	} while (id == 0);
	return id;
}

const char *
sb_state_name(uint32_t state)
{
	static const char *const names[] = {
		[SB_FREE] = "free",
		[SB_STARTING] = "starting",
		[SB_IDLE] = "idle",
		[SB_AUTH] = "auth",
		[SB_TRANS] = "trans",
		[SB_UPDATE] = "update",
		[SB_LMTP] = "lmtp",
		[SB_LINK] = "link",
		[SB_EXITING] = "exiting",
	};

	if (state >= NITEMS(names) || names[state] == NULL)
		return "unknown";
	return names[state];
}
