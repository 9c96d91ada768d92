/*
 * session_auth: the AUTHORIZATION state of a POP3 session (docs/design.md
 * §2, §8): USER and PASS, the one path every password takes (PASS's and
 * SASL's, session_password), the auth throttle and LOGIN-DELAY (throttle.h),
 * the shared auth cache, the hashing gate, and the login itself: the
 * maildrop locks and the snapshot TRANSACTION works on.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sdps/auth.h"
#include "sdps/authcache.h"
#include "sdps/config.h"
#include "sdps/puntset.h"
#include "sdps/throttle.h"
#include "sdps/log.h"
#include "sdps/conn.h"
#include "sdps/maildrop.h"
#include "sdps/punt.h"
#include "sdps/session.h"
#include "sdps/slot.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "session_int.h"

/* Wait this long for a hashing place: a burst of cold logins queues
 * behind auth_max_parallel hashes rather than failing. */
#define AUTH_WAIT_MS	30000

int
session_set_user(struct session *s, const char *arg)
{
	const char	*plus;
	char		 left[POP3_LINE_MAX];
	size_t		 len;

	snprintf(s->user_arg, sizeof(s->user_arg), "%s", arg);
	if (strlen(arg) >= sizeof(s->user_arg))
		return -1;
	if (strchr(arg, '@') != NULL) {
		if (util_addr_split(arg, s->user, s->host) == -1)
			return -1;
	} else if ((plus = strrchr(arg, '+')) != NULL) {
		/* user+host: for clients that cannot send an '@'. */
		len = (size_t)(plus - arg);
		if (len >= sizeof(left))
			return -1;
		memcpy(left, arg, len);
		left[len] = '\0';
		if (util_user_normalize(left, s->user) == -1 ||
		    util_host_normalize(plus + 1, s->host) == -1)
			return -1;
	} else {
		if (util_host_normalize(arg, s->host) == -1)
			return -1;
		s->user[0] = '\0';
	}
	if (s->user[0] != '\0')
		snprintf(s->maildrop, sizeof(s->maildrop), "%s@%s", s->user,
		    s->host);
	else
		snprintf(s->maildrop, sizeof(s->maildrop), "%s", s->host);
	return 0;
}

enum cmd_res
cmd_user(struct session *s, struct conn_args *a)
{
	/* Before the name is looked at, so the client sends no password;
	 * and it does not count as a USER (STLS stays allowed). */
	if (!session_cleartext_ok(s))
		return session_cleartext_refused(s);
	s->auth_tried = true;
	s->have_user = false;
	if (session_set_user(s, a->argv[0]) == -1)
		return session_err(s, NULL, "invalid user name");
	s->have_user = true;
	s->mech = "pass";
	/* The same answer for every well-formed name: no host oracle. */
	return session_ok(s, "send PASS");
}

void
session_release(struct session *s)
{
	maildrop_close(s->md);
	s->md = NULL;
	free(s->msgs);
	s->msgs = NULL;
	s->nmsgs = 0;
}

static void
punt_skipped(void *arg, const char *punt, const char *reason)
{
	struct session	*s = arg;

	log_info("sid=%016" PRIx64 " punt=%s event=punt-skipped reason=%s",
	    s->sid, punt, reason);
}

/* The client's port, for XCLIENT (0 if unknown). */
static unsigned
peer_port(const struct session *s)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);

	memset(&ss, 0, sizeof(ss));
	if (getpeername(conn_fd(s->c), (struct sockaddr *)&ss, &sl) == -1)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

/*
 * Lock every reachable punt (all or nothing) and take the merged
 * snapshot (maildrop.c).  0, 1 busy, or -1.
 */
static int
snapshot(struct session *s)
{
	const struct maildrop_msg *mm;
	enum store_res		 res;
	size_t			 i, n;

	/* Remote punts log the client (XCLIENT). */
	puntset_client(s->w->punts, s->peer, peer_port(s), s->sid);
	res = maildrop_open(s->w->punts, s->host, s->user,
	    MAILDROP_LOCK | MAILDROP_ENV, punt_skipped, s, &s->md);
	if (res == STORE_BUSY)
		return 1;
	if (res != STORE_OK)
		return -1;
	if ((n = maildrop_count(s->md)) == 0)
		return 0;
	if ((s->msgs = calloc(n, sizeof(*s->msgs))) == NULL) {
		log_warn("session: calloc");
		return -1;
	}
	for (i = 0; i < n; i++) {
		mm = maildrop_msg(s->md, i);
		s->msgs[i].id = mm->id;
		s->msgs[i].arrival_us = mm->arrival_us;
		s->msgs[i].octets = mm->octets;
		s->msgs[i].flags = mm->flags;
		s->msgs[i].sp = mm->punt;
	}
	s->nmsgs = n;
	return 0;
}

static enum cmd_res
session_login(struct session *s)
{
	char		 names[CONFIG_PUNT_MAX * (CONFIG_NAME_MAX + 1) + 1];
	char		 tls[SB_TLS_MAX];
	uint32_t	 used = 0;
	size_t		 off = 0;
	int		 i, rc;

	s->have_user = false;
	if ((rc = snapshot(s)) == 1) {
		log_info("sid=%016" PRIx64 " peer=%s event=in-use maildrop=%s",
		    s->sid, s->peer, s->maildrop);
		return session_err(s, "IN-USE", "maildrop in use");
	}
	if (rc == -1) {
		session_release(s);
		return CMD_SRVFAIL;
	}
	if (session_npunts(s) == 0) {
		session_release(s);
		log_info("sid=%016" PRIx64 " peer=%s event=no-punt maildrop=%s",
		    s->sid, s->peer, s->maildrop);
		return session_err(s, "SYS/TEMP",
		    "no spool reachable, try later");
	}
	names[0] = '\0';
	for (i = 0; i < session_npunts(s); i++) {
		used |= 1u << maildrop_punt_cfi(s->md, i);
		off += (size_t)snprintf(names + off, sizeof(names) - off,
		    "%s%s", i > 0 ? "," : "",
		    punt_name(maildrop_punt(s->md, i)));
	}
	s->state = ST_TRANS;
	conn_set_deadline_ms(s->c, 0);	/* auth_timeout: logged in */
	s->login_us = util_now_us();
	slot_login(s->w->slot, s->maildrop, s->login_us, used);
	conn_tls_describe(s->c, tls, sizeof(tls));
	log_info("sid=%016" PRIx64 " peer=%s event=login maildrop=%s punts=%s"
	    " msgs=%zu auth=%s mech=%s tls=%s ktls=%s", s->sid, s->peer,
	    s->maildrop, names, s->nmsgs,
	    s->auth_from_cache ? "cache" : "hash", s->mech, tls,
	    conn_tls_ktls(s->c) ? "yes" : "no");
	return session_ok(s, "maildrop has %zu messages", s->nmsgs);
}

/* ---- Auth throttle (issue 8): see throttle.h ---- */

static struct throttle *
session_throttle(struct session *s)
{
	return s->w->sb != NULL ? s->w->sb->throttle : NULL;
}

static void
session_limits(const struct config *cf, struct throttle_limits *lim)
{
	lim->source_budget = cf->auth_source_budget;
	lim->host_budget = cf->auth_host_budget;
	lim->window_s = cf->auth_budget_window_s;
}

/* A wrong password: charged to the source's and the host's budgets. */
static void
session_charge(struct session *s)
{
	struct throttle_limits	 lim;

	session_limits(s->cf, &lim);
	throttle_fail(session_throttle(s), &lim, s->peer, s->host,
	    (uint64_t)time(NULL));
}

/*
 * Log a failed or refused PASS for fail2ban-style tools: always the
 * source address; the name as typed and the host only for a real host,
 * since people type passwords into USER.  Never the password.
 */
static void
auth_log(struct session *s, const char *event, const char *reason)
{
	struct auth_host	 h;

	if (s->w->auth != NULL &&
	    auth_host_get(s->w->auth, s->host, &h) == AUTH_OK)
		log_info("sid=%016" PRIx64 " peer=%s event=%s%s%s user=%s"
		    " host=%s recent=%u", s->sid, s->peer, event,
		    reason != NULL ? " reason=" : "",
		    reason != NULL ? reason : "", s->user_arg, s->host,
		    s->thr_recent);
	else
		log_info("sid=%016" PRIx64 " peer=%s event=%s%s%s recent=%u",
		    s->sid, s->peer, event, reason != NULL ? " reason=" : "",
		    reason != NULL ? reason : "", s->thr_recent);
}

/*
 * The failure delay, then the answer: the same delay for a refused PASS
 * as for a wrong one at the same count, doubling per recent failure of
 * the source (auth_fail_delay_max_ms caps it).
 */
static enum cmd_res
auth_answer(struct session *s, const char *text)
{
	unsigned	 ms;

	if (conn_flush(s->c) == -1)
		return CMD_IOFAIL;
	ms = throttle_delay_ms(s->cf->auth_fail_delay_ms, s->thr_recent,
	    s->cf->auth_fail_delay_max_ms);
	if (conn_sleep_ms(s->c, ms) != CONN_OK) {
		s->how = END_KILLED;
		return CMD_IOFAIL;
	}
	session_err(s, "AUTH", "%s", text);
	if (s->cf->auth_max_failures > 0 &&
	    s->auth_failures >= s->cf->auth_max_failures) {
		s->how = END_AUTHFAIL;
		return CMD_CLOSE;
	}
	return CMD_REPLIED;
}

/*
 * Over budget: refused without looking at the password (a right one
 * too), so guessing from this source stops costing us a hash and tells
 * the guesser nothing.  It counts toward auth_max_failures.
 */
static enum cmd_res
auth_throttled(struct session *s, enum throttle_verdict v)
{
	s->auth_failures++;
	if (s->w->sb != NULL)
		atomic_fetch_add(&s->w->sb->hdr->total_auth_throttled, 1);
	auth_log(s, "auth-throttled", v == THROTTLE_HOST ? "host" : "source");
	return auth_answer(s, "too many failed logins, try again later");
}

static enum cmd_res
auth_failed(struct session *s)
{
	s->auth_failures++;
	if (s->w->sb != NULL)
		atomic_fetch_add(&s->w->sb->hdr->total_auth_failures, 1);
	auth_log(s, "auth-fail", NULL);
	return auth_answer(s, "invalid user name or password");
}

/*
 * A repeat login within auth_cache_ttl is answered from the shared auth
 * cache (issue 5): a keyed MAC instead of an argon2id hash.  The host's
 * generation is part of the MAC, so a password change misses at once.
 */
static bool
auth_cached(struct session *s, const char *pw, uint64_t epoch)
{
	struct session_env	*w = s->w;
	struct auth_host	 h;

	if (w->sb == NULL || w->sb->authcache == NULL)
		return false;
	return auth_host_get(w->auth, s->host, &h) == AUTH_OK &&
	    authcache_check(w->sb->authcache, s->host, pw, h.generation,
	    epoch, (uint64_t)time(NULL));
}

/* session_login, and a successful one starts the LOGIN-DELAY clock. */
static enum cmd_res
pass_login(struct session *s)
{
	struct throttle_limits	 lim;
	enum cmd_res		 res;

	res = session_login(s);
	if (s->state == ST_TRANS && s->cf->login_delay_s > 0) {
		session_limits(s->cf, &lim);
		throttle_login_done(session_throttle(s), &lim, s->host,
		    (uint64_t)time(NULL));
	}
	return res;
}

/*
 * The answers a password gets before it is looked at: no auth store,
 * over the throttle's budget, or LOGIN-DELAY.  True with *res set if
 * one was given.
 */
static bool
pass_refused(struct session *s, enum cmd_res *res)
{
	struct throttle_limits	 lim;
	enum throttle_verdict	 tv;
	unsigned		 wait;

	if (s->w->auth == NULL) {
		*res = session_err(s, "SYS/TEMP",
		    "authentication unavailable, try later");
		return true;
	}
	/*
	 * Throttle before the cache: a cache hit from an over-budget source
	 * would tell the guesser it found the password.  Only a wrong
	 * password is charged (pass_hash).
	 */
	session_limits(s->cf, &lim);
	tv = throttle_admit(session_throttle(s), &lim, s->peer, s->host,
	    (uint64_t)time(NULL), &s->thr_recent);
	if (tv != THROTTLE_ALLOW) {
		*res = auth_throttled(s, tv);
		return true;
	}
	/*
	 * RFC 2449 LOGIN-DELAY (off by default): too soon after the host's
	 * last login.  Answered before the password is looked at, right or
	 * wrong, so the answer is no password oracle, and not a failure.
	 */
	if (s->cf->login_delay_s > 0 && (wait = throttle_login_wait(
	    session_throttle(s), s->host, (uint64_t)time(NULL),
	    s->cf->login_delay_s)) > 0) {
		log_info("sid=%016" PRIx64 " peer=%s event=login-delay wait=%u",
		    s->sid, s->peer, wait);
		*res = session_err(s, "LOGIN-DELAY",
		    "wait %u seconds between logins", s->cf->login_delay_s);
		return true;
	}
	return false;
}

/*
 * The argon2id check, behind the gate of auth_max_parallel hashing
 * places; pw is wiped before the answer.
 */
static enum cmd_res
pass_hash(struct session *s, char *pw, size_t pwlen, uint64_t epoch)
{
	struct session_env	*w = s->w;
	enum auth_res		 ar;
	uint64_t		 gen = 0;
	bool			 gated;

	gated = w->sb != NULL && w->slot != NULL;
	if (gated && sb_auth_enter(w->sb, w->slot, s->cf->auth_max_parallel,
	    AUTH_WAIT_MS, throttle_source_id(session_throttle(s), s->peer)) ==
	    -1) {
		auth_wipe(pw, pwlen);
		log_info("sid=%016" PRIx64 " peer=%s event=auth-busy",
		    s->sid, s->peer);
		return session_err(s, "SYS/TEMP",
		    "server busy, try again later");
	}
	ar = auth_verify(w->auth, s->host, pw, &gen);
	if (gated)
		sb_auth_leave(w->sb, w->slot);
	if (w->sb != NULL)
		atomic_fetch_add(&w->sb->hdr->total_auth_hashes, 1);
	if (ar == AUTH_FAIL)
		session_charge(s);
	if (ar == AUTH_OK && w->sb != NULL)
		authcache_put(w->sb->authcache, s->host, pw, gen, epoch,
		    (uint64_t)time(NULL));
	auth_wipe(pw, pwlen);
	switch (ar) {
	case AUTH_OK:
		return pass_login(s);
	case AUTH_FAIL:
		return auth_failed(s);
	case AUTH_TEMPFAIL:
		return session_err(s, "SYS/TEMP",
		    "authentication unavailable, try later");
	}
	return CMD_SRVFAIL;
}

enum cmd_res
session_password(struct session *s, char *pw, size_t pwlen)
{
	enum cmd_res	 res;
	uint64_t	 epoch = 0;

	if (pass_refused(s, &res)) {
		auth_wipe(pw, pwlen);
		return res;
	}
	/* Read the epoch before hashing: a flush during the hash leaves
	 * the entry made below already stale. */
	if (s->w->sb != NULL)
		epoch = atomic_load(&s->w->sb->hdr->auth_cache_epoch);
	if (auth_cached(s, pw, epoch)) {
		auth_wipe(pw, pwlen);
		s->auth_from_cache = true;
		return pass_login(s);
	}
	return pass_hash(s, pw, pwlen, epoch);
}

/* One PASS per USER, whatever its outcome. */
enum cmd_res
cmd_pass(struct session *s, struct conn_args *a)
{
	char		*pw = a->argv[0];
	size_t		 pwlen = strlen(pw);

	/* A PASS after a refused USER is refused unread, like the USER. */
	if (!session_cleartext_ok(s)) {
		auth_wipe(pw, pwlen);
		return session_cleartext_refused(s);
	}
	if (!s->have_user) {
		auth_wipe(pw, pwlen);
		return session_err(s, NULL, "USER first");
	}
	s->have_user = false;
	return session_password(s, pw, pwlen);
}

enum cmd_res
cmd_apop(struct session *s, struct conn_args *a)
{
	(void)a;
	return session_err(s, NULL, "APOP not supported, use USER and PASS");
}
