/*
 * master_pool: the master's worker pools: forks workers into scoreboard
 * slots, reaps them (with back-off after start-up deaths and failed
 * forks), keeps the POP3 pool between min_spare and max_spare idle and
 * the LMTP pool at lmtp_workers, and answers POP3 clients "busy" while
 * the POP3 pool is saturated.
 */
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/log.h"
#include "sdps/throttle.h"
#include "master_int.h"

/* ------------------------------------------------------------- workers */

/*
 * No worker on slot i (reaped, or not forked yet).  sb_slot_reset, not a
 * seqlock write: a worker SIGKILLed inside a write left seq odd, and the
 * master must neither wait for it to turn even nor trip the workers'
 * fault point.
 */
static void
master_slot_clear(struct master *m, unsigned i)
{
	struct sb_slot	*s = &m->sb.slots[i];

	sb_slot_reset(s, SB_FREE);
	s->hashing = 0;
	atomic_store(&s->please_exit, 0);
	atomic_store(&s->pid, 0);
	m->pids[i] = 0;
	m->forked_us[i] = 0;
}

static void
master_backoff(struct master *m, uint64_t now, const char *why)
{
	m->backoff_s = m->backoff_s == 0 ? 1 : m->backoff_s * 2;
	if (m->backoff_s > MASTER_BACKOFF_MAX_S)
		m->backoff_s = MASTER_BACKOFF_MAX_S;
	m->hold_until_us = now + (uint64_t)m->backoff_s * 1000000;
	m->spawn_batch = 1;
	log_warnx("%s: no new workers for %u s", why, m->backoff_s);
}

static int
master_spawn(struct master *m, unsigned i, enum sb_pool pool)
{
	struct sb_slot	*s = &m->sb.slots[i];
	uint64_t	 now = util_now_us();
	pid_t		 pid;

	master_slot_clear(m, i);
	s->generation = atomic_load(&m->sb.hdr->generation);
	sb_slot_reset(s, SB_STARTING);
	/* Before the fork: the worker reads it to pick its listeners. */
	s->pool = (uint32_t)pool;
	m->pool[i] = (uint32_t)pool;
	if ((pid = fork()) == -1) {
		log_warn("fork");
		master_slot_clear(m, i);
		/* Like Apache: a failed fork usually means a process or
		 * memory limit; hammering it only makes things worse. */
		master_backoff(m, now, "fork failed");
		return -1;
	}
	if (pid == 0) {
		if (m->ready_fd != -1)
			close(m->ready_fd);
		/* Only the master talks to the key reader. */
		if (m->keys_fd != -1)
			close(m->keys_fd);
		free(m->pids);
		free(m->forked_us);
		free(m->pool);
		worker_main(m->cf, &m->sb, (int)i, m->ls, m->nls);
	}
	m->pids[i] = pid;
	m->forked_us[i] = now;
	atomic_store(&s->pid, pid);
	log_debug("worker %u: forked pid %ld", i, (long)pid);
	return 0;
}

unsigned
master_live(const struct master *m)
{
	unsigned	 i, n = 0;

	for (i = 0; i < m->nslots; i++)
		if (m->pids[i] != 0)
			n++;
	return n;
}

void
master_reap(struct master *m)
{
	struct sb_slot	 copy;
	uint64_t	 now;
	unsigned	 i;
	pid_t		 pid;
	int		 st;
	bool		 early, torn;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		now = util_now_us();
		for (i = 0; i < m->nslots; i++)
			if (m->pids[i] == pid)
				break;
		if (i == m->nslots) {
			if (!master_keys_reaped(m, pid, st))
				log_debug("reaped unknown child %ld",
				    (long)pid);
			continue;
		}
		/*
		 * The worker is gone, so nobody writes its slot: peek, do
		 * not seqlock-read (a worker killed inside a write left seq
		 * odd for good; waiting for it hung the master).  A torn
		 * copy still has each word old or new, good enough for the
		 * start-up guess and the log line.
		 */
		torn = sb_slot_peek(&m->sb.slots[i], &copy);
		/* A crash inside a session says nothing about start-up;
		 * one before the first session soon after fork does. */
		early = copy.state == SB_STARTING ||
		    (copy.sessions_served == 0 && copy.session_id == 0 &&
		    now - m->forked_us[i] < MASTER_EARLY_DEATH_US);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			log_debug("worker %u (pid %ld) exited", i, (long)pid);
		else if (WIFEXITED(st))
			log_warnx("worker %u (pid %ld) exited with status %d%s",
			    i, (long)pid, WEXITSTATUS(st),
			    WEXITSTATUS(st) == WORKER_EX_SICK ?
			    " (resource shortage)" :
			    WEXITSTATUS(st) == WORKER_EX_FATAL ?
			    " (fatal error)" : "");
		else if (WIFSIGNALED(st))
			log_warnx("worker %u (pid %ld) killed by signal "
			    "%d%s%s%s%s", i, (long)pid, WTERMSIG(st),
			    WCOREDUMP(st) ? " (core dumped)" : "",
			    torn ? " inside a scoreboard write" : "",
			    copy.session_id != 0 ? " in session " : "",
			    copy.session_id != 0 ? copy.peer : "");
		/*
		 * It may have died inside an LMDB read transaction; the next
		 * worker clears its reader slots (the master holds no env).
		 */
		master_slot_clear(m, i);
		atomic_store(&m->sb.hdr->reader_check, 1);
		if (atomic_load(&m->sb.hdr->stopping))
			continue;
		if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EX_FATAL)
			m->fatal_child = true;
		else if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EX_SICK)
			master_backoff(m, now, "worker reported a shortage");
		else if (early && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			master_backoff(m, now, "worker died at start-up");
	}
}

/*
 * The two pools' sizes (issue 8).  LMTP workers are a fixed pool of
 * lmtp_workers when there is an LMTP listener, carved out of the slots
 * first, so POP3 can never take the slots mail delivery needs; POP3 gets
 * max_workers of the rest.
 */
void
master_limits(const struct master *m, unsigned *pop3, unsigned *lmtp)
{
	const struct config *cf = m->cf;

	*lmtp = 0;
	if (m->nlmtp > 0)
		*lmtp = cf->lmtp_workers < m->nslots ? cf->lmtp_workers :
		    m->nslots - 1;
	*pop3 = cf->max_workers < m->nslots - *lmtp ? cf->max_workers :
	    m->nslots - *lmtp;
}

/* Fork up to n workers of pool into free slots; the number forked. */
static unsigned
master_spawn_n(struct master *m, unsigned n, enum sb_pool pool)
{
	unsigned	 i, done = 0;

	for (i = 0; i < m->nslots && done < n; i++) {
		if (m->pids[i] != 0)
			continue;
		if (master_spawn(m, i, pool) == -1)
			break;
		done++;
	}
	return done;
}

/*
 * The LMTP pool is kept at lmtp_workers, old generations included: a
 * worker that leaves (recycled, reloaded, crashed) is replaced at the
 * next pass, unless forks are held back.
 */
static void
master_maintain_lmtp(struct master *m, uint64_t now)
{
	unsigned	 i, live = 0, pop3_limit, limit;

	master_limits(m, &pop3_limit, &limit);
	for (i = 0; i < m->nslots; i++)
		if (m->pids[i] != 0 && m->pool[i] == SB_POOL_LMTP)
			live++;
	if (live < limit && now >= m->hold_until_us)
		(void)master_spawn_n(m, limit - live, SB_POOL_LMTP);
}

/* Log now and then how many clients were told the server is busy. */
static void
master_busy_log(struct master *m, uint64_t now, unsigned limit)
{
	if (m->busy_answered == 0 ||
	    now - m->busy_logged_us < MASTER_BUSY_LOG_US)
		return;
	log_warnx("all %u POP3 workers busy: %u clients told to try again "
	    "later", limit, m->busy_answered);
	m->busy_answered = 0;
	m->busy_logged_us = now;
}

/* Auth throttle (issue 8): sdps-ctl status shows what is blocked now,
 * and only the master's processes can see the anonymous table. */
static void
master_throttle_gauges(struct master *m)
{
	struct throttle_limits	 lim;
	struct throttle_stats	 st;

	if (m->sb.throttle == NULL)
		return;
	lim.source_budget = m->cf->auth_source_budget;
	lim.host_budget = m->cf->auth_host_budget;
	lim.window_s = m->cf->auth_budget_window_s;
	throttle_stats(m->sb.throttle, &lim, (uint64_t)time(NULL), &st);
	atomic_store(&m->sb.hdr->auth_blocked_sources, st.blocked_sources);
	atomic_store(&m->sb.hdr->auth_blocked_hosts, st.blocked_hosts);
}

/*
 * Apache's perform_idle_server_maintenance: count the idle workers of the
 * current generation; below min_spare fork a batch that doubles on each
 * consecutive pass (up to 32), above max_spare ask one idle worker to
 * leave per pass, so the pool shrinks gently after a burst.  This is the
 * POP3 pool; the LMTP pool is master_maintain_lmtp.
 */
void
master_maintain(struct master *m)
{
	const struct config *cf = m->cf;
	struct sb_slot	 copy;
	uint64_t	 gen, now = util_now_us();
	unsigned	 i, idle = 0, live = 0, limit, lmtp_limit, target, n;
	int		 last_idle = -1;

	m->last_maint_us = now;
	master_throttle_gauges(m);
	if (!atomic_load(&m->sb.hdr->stopping))
		master_maintain_lmtp(m, now);
	master_limits(m, &limit, &lmtp_limit);
	master_busy_log(m, now, limit);
	gen = atomic_load(&m->sb.hdr->generation);
	for (i = 0; i < m->nslots; i++) {
		if (m->pids[i] == 0 || m->pool[i] != SB_POOL_POP3)
			continue;
		live++;
		/* Busy (a writer dead, not reaped yet): not idle. */
		if (sb_slot_read(&m->sb.slots[i], &copy) == -1)
			continue;
		if (copy.generation != gen ||
		    atomic_load(&m->sb.slots[i].please_exit))
			continue;
		/* A starting worker counts, or each pass would fork more
		 * while the last batch is still opening its stores. */
		if (copy.state == SB_IDLE || copy.state == SB_STARTING)
			idle++;
		if (copy.state == SB_IDLE)
			last_idle = (int)i;
	}
	target = cf->min_spare > 0 ? cf->min_spare : 1;
	if (live < limit)
		m->maxed_logged = false;

	if (idle > cf->max_spare && last_idle != -1) {
		atomic_store(&m->sb.slots[last_idle].please_exit, 1);
		m->spawn_batch = 1;
		return;
	}
	if (idle >= target) {
		m->spawn_batch = 1;
		if (now >= m->hold_until_us)
			m->backoff_s = 0;
		return;
	}
	if (now < m->hold_until_us)
		return;
	if (live >= limit) {
		if (!m->maxed_logged)
			log_warnx("max_workers reached (%u): consider raising "
			    "it", limit);
		m->maxed_logged = true;
		m->spawn_batch = 1;
		return;
	}
	n = target - idle;
	if (n > m->spawn_batch)
		n = m->spawn_batch;
	/* Every worker busy (a burst, or a flood): clients are waiting in
	 * the listen queue for no one, so grow by the whole doubling batch
	 * instead of min_spare at a time (issue 8: reach max_workers, and
	 * so the "busy" answer, in seconds, not max_workers/min_spare). */
	if (idle == 0)
		n = m->spawn_batch;
	if (n > limit - live)
		n = limit - live;
	if (master_spawn_n(m, n, SB_POOL_POP3) < n)
		return;
	if (m->spawn_batch < MASTER_SPAWN_BATCH_MAX)
		m->spawn_batch *= 2;
}

void
master_initial_spawn(struct master *m)
{
	unsigned	 n, limit, lmtp;

	master_limits(m, &limit, &lmtp);
	n = m->cf->min_spare > 0 ? m->cf->min_spare : 1;
	if (n > limit)
		n = limit;
	if (master_spawn_n(m, n, SB_POOL_POP3) == n)
		(void)master_spawn_n(m, lmtp, SB_POOL_LMTP);
	m->last_maint_us = util_now_us();
}

/*
 * True when a POP3 client would wait for no one: every POP3 worker is
 * busy and no new one is coming (max_workers reached, or forks held back
 * after failures).  Starting workers count as coming.
 */
static bool
master_pop3_saturated(struct master *m)
{
	struct sb_slot	 copy;
	unsigned	 i, live = 0, limit, lmtp;

	if (m->npop3 == 0 || !m->ready || atomic_load(&m->sb.hdr->stopping))
		return false;
	master_limits(m, &limit, &lmtp);
	for (i = 0; i < m->nslots; i++) {
		if (m->pids[i] == 0 || m->pool[i] != SB_POOL_POP3)
			continue;
		live++;
		if (sb_slot_read(&m->sb.slots[i], &copy) != 0)
			continue;	/* a writer died: not idle */
		if ((copy.state == SB_IDLE || copy.state == SB_STARTING) &&
		    !atomic_load(&m->sb.slots[i].please_exit))
			return false;
	}
	return live >= limit || util_now_us() < m->hold_until_us;
}

/*
 * A POP3 listener is readable while the pool is saturated: answer the
 * waiting clients "busy" at once instead of leaving them without a
 * greeting until a worker frees up (issue 8).  Under the accept mutex,
 * taken without waiting, and only while still saturated, so a worker
 * that has just become idle gets the connection instead.
 */
static void
master_answer_busy(struct master *m)
{
	unsigned	 n = 0;
	int		 i, fd;

	if (sb_accept_trylock(&m->sb) == -1) {
		m->busy_declined = true;
		return;
	}
	if (!master_pop3_saturated(m)) {
		sb_accept_unlock(&m->sb);
		m->busy_declined = true;
		return;
	}
	for (i = 0; i < m->nls; i++) {
		if (m->ls[i].cl.proto != CONFIG_PROTO_POP3)
			continue;
		while (n < MASTER_BUSY_BATCH) {
			fd = accept4(m->ls[i].fd, NULL, NULL,
			    SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd == -1)
				break;
			worker_refuse(fd, MASTER_BUSY_LINE);
			n++;
		}
	}
	sb_accept_unlock(&m->sb);
	m->busy_answered += n;
	/* Readable but nothing to accept (an error, or someone was
	 * quicker): do not spin on it. */
	if (n == 0)
		m->busy_declined = true;
}

/*
 * Wait for a signal, as sigsuspend does; while the POP3 pool is
 * saturated also for a POP3 connection to answer "busy".  Having just
 * left a connection to a worker, wait a moment without the listeners so
 * the master does not spin on a readable socket.
 */
void
master_wait(struct master *m, const sigset_t *waitmask)
{
	struct pollfd	 pfd[CONFIG_LISTENERS_MAX];
	struct timespec	 ts = { 0, MASTER_BUSY_RETRY_NS };
	int		 i, n = 0;

	if (!master_pop3_saturated(m)) {
		m->busy_declined = false;
		sigsuspend(waitmask);
		return;
	}
	if (m->busy_declined) {
		m->busy_declined = false;
		(void)ppoll(NULL, 0, &ts, waitmask);
		return;
	}
	for (i = 0; i < m->nls; i++) {
		if (m->ls[i].cl.proto != CONFIG_PROTO_POP3)
			continue;
		pfd[n].fd = m->ls[i].fd;
		pfd[n].events = POLLIN;
		pfd[n].revents = 0;
		n++;
	}
	if (ppoll(pfd, (nfds_t)n, NULL, waitmask) > 0)
		master_answer_busy(m);
}

void
master_signal_workers(struct master *m, int signo)
{
	unsigned	 i;

	for (i = 0; i < m->nslots; i++)
		if (m->pids[i] != 0)
			(void)kill(m->pids[i], signo);
}
