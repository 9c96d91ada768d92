/*
 * scoreboard: the mmap'd RUN_DIR/scoreboard shared by the master, its
 * workers and sdps-ctl: header, per-worker slots (seqlock), and the robust
 * process-shared mutexes that serialise accept() and bound password hashing.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/log.h"
#include "sdps/scoreboard.h"

#define SB_FILE		"scoreboard"
#define SB_ALIGN	64	/* one cache line: slots do not share lines */

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

int
sb_create(const char *run_dir, unsigned nslots, const struct config *cf,
    struct scoreboard *sb)
{
	char		 path[PATH_MAX];
	struct sb_header *h;
	size_t		 len;
	void		*p;
	int		 fd, i;

	memset(sb, 0, sizeof(*sb));
	if (nslots == 0) {
		log_warnx("scoreboard: no slots");
		return -1;
	}
	if (sb_path(run_dir, path, sizeof(path)) == -1) {
		log_warn("scoreboard: %s", run_dir);
		return -1;
	}
	len = sb_len(nslots);
	/*
	 * A fresh file every start: a previous master's slots and mutexes
	 * mean nothing now.  0644 so sdps-ctl can read it as any user.
	 */
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0644);
	if (fd == -1) {
		log_warn("scoreboard: open %s", path);
		return -1;
	}
	(void)fchmod(fd, 0644);
	if (ftruncate(fd, (off_t)len) == -1) {
		log_warn("scoreboard: ftruncate %s", path);
		close(fd);
		return -1;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		log_warn("scoreboard: mmap %s", path);
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
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, &st) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if ((size_t)st.st_size < sb_len(1)) {
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
}

void
sb_slot_write_end(struct sb_slot *slot)
{
	uint32_t	 s;

	s = atomic_load_explicit(&slot->seq, memory_order_relaxed);
	atomic_store_explicit(&slot->seq, s + 1, memory_order_release);
}

void
sb_slot_command(struct sb_slot *slot, const char *name)
{
	if (slot == NULL)
		return;
	sb_slot_write_begin(slot);
	snprintf(slot->command, sizeof(slot->command), "%s", name);
	slot->last_us = util_now_us();
	sb_slot_write_end(slot);
}

void
sb_slot_read(const struct sb_slot *slot, struct sb_slot *copy)
{
	struct sb_slot	*s = (struct sb_slot *)slot;
	uint32_t	 s1, s2;
	unsigned	 spins = 0;

	for (;;) {
		s1 = atomic_load_explicit(&s->seq, memory_order_acquire);
		if ((s1 & 1) == 0) {
			memcpy(copy, slot, sizeof(*copy));
			atomic_thread_fence(memory_order_acquire);
			s2 = atomic_load_explicit(&s->seq,
			    memory_order_relaxed);
			if (s1 == s2)
				break;
		}
		/* A writer killed mid-write leaves seq odd for good; the
		 * master clears the slot at reap, so yield and retry. */
		if (++spins % 1024 == 0)
			sched_yield();
	}
	/* The copy's own seq is a snapshot; make it even for callers. */
	atomic_store_explicit(&copy->seq, s1, memory_order_relaxed);
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

/* Tries of the seqlock before a slot counts as abandoned mid-write. */
#define SB_PEER_TRIES	4096

unsigned
sb_count_peer(struct scoreboard *sb, const struct sb_slot *self,
    const char *peer)
{
	struct sb_slot	*s;
	char		 p[SB_PEER_MAX];
	uint32_t	 s1, st;
	unsigned	 i, n = 0, tries;

	for (i = 0; i < sb->hdr->nslots; i++) {
		s = &sb->slots[i];
		if (s == self || atomic_load(&s->pid) == 0)
			continue;
		/* The seqlock of sb_slot_read, on two fields only. */
		for (tries = 0; tries < SB_PEER_TRIES; tries++) {
			s1 = atomic_load_explicit(&s->seq,
			    memory_order_acquire);
			if ((s1 & 1) == 0) {
				st = s->state;
				memcpy(p, s->peer, sizeof(p));
				atomic_thread_fence(memory_order_acquire);
				if (atomic_load_explicit(&s->seq,
				    memory_order_relaxed) == s1)
					break;
			}
			if (tries % 256 == 255)
				sched_yield();
		}
		if (tries == SB_PEER_TRIES)
			continue;
		p[sizeof(p) - 1] = '\0';
		if ((st == SB_AUTH || st == SB_TRANS || st == SB_UPDATE) &&
		    strcmp(p, peer) == 0)
			n++;
	}
	return n;
}

static void
sb_sleep_ms(unsigned ms)
{
	struct timespec	 ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

int
sb_auth_enter(struct scoreboard *sb, struct sb_slot *slot, unsigned max,
    unsigned wait_ms)
{
	unsigned	 busy, i, waited = 0;

	if (max == 0)
		max = 1;
	for (;;) {
		if (sb_mutex_lock(&sb->hdr->auth_mutex, "auth") == -1)
			return -1;
		busy = 0;
		for (i = 0; i < sb->hdr->nslots; i++) {
			if (&sb->slots[i] != slot && sb->slots[i].hashing)
				busy++;
		}
		if (busy < max) {
			slot->hashing = 1;
			pthread_mutex_unlock(&sb->hdr->auth_mutex);
			return 0;
		}
		pthread_mutex_unlock(&sb->hdr->auth_mutex);
		if (waited >= wait_ms)
			return -1;
		sb_sleep_ms(10);
		waited += 10;
	}
}

void
sb_auth_leave(struct scoreboard *sb, struct sb_slot *slot)
{
	if (sb_mutex_lock(&sb->hdr->auth_mutex, "auth") == -1) {
		/* Unrecoverable mutex: clearing our own flag is still safe
		 * enough, since only the counter reads it. */
		slot->hashing = 0;
		return;
	}
	slot->hashing = 0;
	pthread_mutex_unlock(&sb->hdr->auth_mutex);
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
		[SB_EXITING] = "exiting",
	};

	if (state >= NITEMS(names) || names[state] == NULL)
		return "unknown";
	return names[state];
}
