/*
 * ctl_daemon: the sdps-ctl verbs that read the running daemon's
 * scoreboard (sessions, status) or signal it (kill, auth flush).
 */
#include <sys/types.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sdps/ctl.h"
#include "sdps/scoreboard.h"
#include "sdps/util.h"

#include "ctl_remote.h"

static int
ctl_sb_open(struct ctl *c, struct scoreboard *sb)
{
	if (sb_open_ro(c->cf->run_dir, sb) == 0)
		return 0;
	if (errno == ENOENT)
		return ctl_fail("%s/scoreboard: not found (is sdpsd "
		    "running with this run_dir?)", c->cf->run_dir);
	if (errno == EINVAL)
		return ctl_fail("%s/scoreboard: not an sdps scoreboard of "
		    "this version", c->cf->run_dir);
	return ctl_fail("%s/scoreboard: %s", c->cf->run_dir, strerror(errno));
}

static bool
ctl_pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Field 4 of /proc/PID/stat; -1 if unknown. */
static pid_t
ctl_ppid(pid_t pid)
{
	char	 path[64], buf[512], *p;
	FILE	*f;
	size_t	 n;
	long	 ppid;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and ')': skip to the last ')'. */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 1, " %*c %ld", &ppid) != 1)
		return -1;
	return (pid_t)ppid;
}

/*
 * The master is alive and is still the process that made this map (after
 * a crash the pid may belong to someone else now).
 */
static bool
ctl_master_alive(const struct scoreboard *sb)
{
	char	 path[64], comm[64];
	FILE	*f;
	pid_t	 pid = sb->hdr->master_pid;
	bool	 ok;

	if (!ctl_pid_alive(pid))
		return false;
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return true;	/* no /proc: trust kill(0) */
	ok = fgets(comm, sizeof(comm), f) != NULL &&
	    strncmp(comm, "sdpsd", 5) == 0;
	fclose(f);
	return ok;
}

static bool
ctl_in_session(const struct sb_slot *s)
{
	switch ((enum sb_state)s->state) {
	case SB_AUTH:
	case SB_TRANS:
	case SB_UPDATE:
	case SB_LMTP:
	case SB_LINK:
		return true;
	case SB_FREE:
	case SB_STARTING:
	case SB_IDLE:
	case SB_EXITING:
		return false;
	}
	return false;
}

/*
 * Printable ASCII only, in place: the strings come from a map that every
 * worker may write, and they go to an administrator's terminal.  The
 * scoreboard already stores commands this way (sb_slot_command); this is
 * the second line of defence, for every string.
 */
static void
ctl_sanitize(char *p, size_t size)
{
	size_t	 i;

	for (i = 0; i < size && p[i] != '\0'; i++)
		if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f)
			p[i] = '?';
	if (size > 0)
		p[size - 1] = '\0';
}

enum ctl_slot {
	CTL_SLOT_NONE,		/* free, idle, or its worker is gone */
	CTL_SLOT_SESSION,	/* a live session: copy holds it */
	CTL_SLOT_BUSY		/* a live worker's slot stayed unreadable */
};

/*
 * Slot i as sdps-ctl sees it.  A slot whose seq stays odd (its writer
 * died inside a write and the master has not reset it yet) is reported
 * busy after a bounded number of tries, never waited for.
 */
static enum ctl_slot
ctl_session_slot(const struct scoreboard *sb, unsigned i,
    struct sb_slot *copy)
{
	if (sb_slot_read(&sb->slots[i], copy) == -1)
		return copy->pid != 0 && ctl_pid_alive(copy->pid) ?
		    CTL_SLOT_BUSY : CTL_SLOT_NONE;
	ctl_sanitize(copy->peer, sizeof(copy->peer));
	ctl_sanitize(copy->maildrop, sizeof(copy->maildrop));
	ctl_sanitize(copy->command, sizeof(copy->command));
	ctl_sanitize(copy->tls, sizeof(copy->tls));
	return copy->pid != 0 && ctl_in_session(copy) &&
	    ctl_pid_alive(copy->pid) ? CTL_SLOT_SESSION : CTL_SLOT_NONE;
}

/* A slot that stayed unreadable: its pid, state "busy", nothing else. */
static void
ctl_busy_line(const struct sb_slot *s, bool json, bool first)
{
	if (json)
		printf("%s\n  {\"id\": \"\", \"pid\": %ld, \"peer\": \"\", "
		    "\"maildrop\": \"\", \"state\": \"busy\"}",
		    first ? "" : ",", (long)s->pid);
	else
		printf("%-12s %-7ld %-22s %-30s %-6s\n", "-", (long)s->pid,
		    "-", "-", "busy");
}

static void
ctl_utc(uint64_t us, char *buf, size_t len)
{
	struct tm	 tm;
	time_t		 t = (time_t)(us / 1000000);

	if (us == 0 || gmtime_r(&t, &tm) == NULL) {
		snprintf(buf, len, "-");
		return;
	}
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static uint64_t
ctl_age_s(uint64_t now, uint64_t us)
{
	return us == 0 || us > now ? 0 : (now - us) / 1000000;
}

static void
ctl_session_json(const struct sb_slot *s, uint64_t now, bool first)
{
	char	 sid[32];

	snprintf(sid, sizeof(sid), "%llx", (unsigned long long)s->session_id);
	printf("%s\n  {\"id\": ", first ? "" : ",");
	ctl_json_str(stdout, sid);
	printf(", \"pid\": %ld, \"peer\": ", (long)s->pid);
	ctl_json_str(stdout, s->peer);
	printf(", \"maildrop\": ");
	ctl_json_str(stdout, s->maildrop);
	printf(", \"state\": ");
	ctl_json_str(stdout, sb_state_name(s->state));
	printf(", \"started\": %llu, \"login\": %llu, \"idle_s\": %llu, "
	    "\"command\": ", (unsigned long long)(s->started_us / 1000000),
	    (unsigned long long)(s->login_us / 1000000),
	    (unsigned long long)ctl_age_s(now, s->last_us));
	ctl_json_str(stdout, s->command);
	printf(", \"retr\": %llu, \"top\": %llu, \"dele\": %llu, "
	    "\"octets_out\": %llu, \"tls\": ", (unsigned long long)s->retr,
	    (unsigned long long)s->top, (unsigned long long)s->dele,
	    (unsigned long long)s->octets_out);
	/* "TLSv1.3/TLS_AES_128_GCM_SHA256", " ktls" added; "" = plain. */
	ctl_json_str(stdout, s->tls);
	printf("}");
}

int
ctl_sessions(struct ctl *c)
{
	struct scoreboard	 sb;
	struct sb_slot		 s;
	char			 login[32];
	uint64_t		 now = util_now_us();
	unsigned		 i, n = 0;
	enum ctl_slot		 what;

	if (ctl_sb_open(c, &sb) != 0)
		return 1;
	if (c->json)
		printf("{\"sessions\": [");
	else
		printf("%-12s %-7s %-22s %-30s %-6s %-20s %5s %-6s %5s %5s "
		    "%10s %s\n", "ID", "PID", "PEER", "MAILDROP", "STATE",
		    "LOGIN", "IDLE", "CMD", "RETR", "DELE", "OCTETS", "TLS");
	if (ctl_master_alive(&sb)) {
		for (i = 0; i < sb.hdr->nslots; i++) {
			if ((what = ctl_session_slot(&sb, i, &s)) ==
			    CTL_SLOT_NONE)
				continue;
			if (what == CTL_SLOT_BUSY) {
				ctl_busy_line(&s, c->json, n == 0);
				n++;
				continue;
			}
			if (c->json) {
				ctl_session_json(&s, now, n == 0);
				n++;
				continue;
			}
			n++;
			ctl_utc(s.login_us, login, sizeof(login));
			printf("%-12llx %-7ld %-22s %-30s %-6s %-20s %5llu "
			    "%-6s %5llu %5llu %10llu %s\n",
			    (unsigned long long)s.session_id, (long)s.pid,
			    s.peer, s.maildrop[0] ? s.maildrop : "-",
			    sb_state_name(s.state), login,
			    (unsigned long long)ctl_age_s(now, s.last_us),
			    s.command[0] ? s.command : "-",
			    (unsigned long long)s.retr,
			    (unsigned long long)s.dele,
			    (unsigned long long)s.octets_out,
			    s.tls[0] ? s.tls : "-");
		}
	}
	if (c->json)
		printf("%s]}\n", n ? "\n" : "");
	sb_close(&sb);
	return 0;
}

/* Does a slot's maildrop ("host" or "user@host") belong to host? */
static bool
ctl_maildrop_host(const char *maildrop, const char *host)
{
	const char	*at = strrchr(maildrop, '@');

	return strcmp(at != NULL ? at + 1 : maildrop, host) == 0;
}

int
ctl_kill(struct ctl *c)
{
	struct scoreboard	 sb;
	struct sb_slot		 s, again;
	char			 host[UTIL_HOST_MAX + 1];
	const char		*arg;
	uint64_t		 sid = 0;
	unsigned		 i, n = 0;
	char			*end;

	if ((c->argc == 1) == (c->host != NULL))
		return ctl_fail("kill: give a session id or --host HOST");
	if (c->argc == 1) {
		arg = c->argv[0];
		if (strncmp(arg, "0x", 2) == 0 || strncmp(arg, "0X", 2) == 0)
			arg += 2;
		errno = 0;
		sid = strtoull(arg, &end, 16);
		if (arg[0] == '\0' || *end != '\0' || errno != 0 ||
		    sid == 0 || arg[strspn(arg, "0123456789abcdefABCDEF")]
		    != '\0')
			return ctl_fail("kill: bad session id \"%s\" (want "
			    "the hex id from sdps-ctl sessions)",
			    c->argv[0]);
	} else if (util_host_normalize(c->host, host) == -1)
		return ctl_fail("kill: bad host name \"%s\"", c->host);

	if (ctl_sb_open(c, &sb) != 0)
		return 1;
	if (!ctl_master_alive(&sb)) {
		sb_close(&sb);
		return ctl_fail("kill: sdpsd is not running");
	}
	for (i = 0; i < sb.hdr->nslots; i++) {
		if (ctl_session_slot(&sb, i, &s) != CTL_SLOT_SESSION)
			continue;
		if (c->host != NULL ? !ctl_maildrop_host(s.maildrop, host) :
		    s.session_id != sid)
			continue;
		/* Only a child of this master: a stale slot's pid may have
		 * been reused by an unrelated process. */
		if (ctl_ppid(s.pid) != sb.hdr->master_pid)
			continue;
		/* The worker may have moved on to another session. */
		if (sb_slot_read(&sb.slots[i], &again) == -1 ||
		    again.session_id != s.session_id)
			continue;
		if (kill(s.pid, SIGUSR2) == -1) {
			fprintf(stderr, "sdps-ctl: kill: pid %ld: %s\n",
			    (long)s.pid, strerror(errno));
			continue;
		}
		printf("killed session %llx (pid %ld, %s, %s)\n",
		    (unsigned long long)s.session_id, (long)s.pid, s.peer,
		    s.maildrop[0] ? s.maildrop : "not logged in");
		n++;
	}
	sb_close(&sb);
	if (n == 0)
		return c->host != NULL ?
		    ctl_fail("kill: no session for host %s", host) :
		    ctl_fail("kill: no session %llx",
		    (unsigned long long)sid);
	return 0;
}

struct ctl_counts {
	unsigned	 busy, idle, starting, other;
	unsigned	 unreadable;	/* seq stayed odd: writer died in a write */
};

static void
ctl_count(const struct scoreboard *sb, struct ctl_counts *k)
{
	struct sb_slot	 s;
	unsigned	 i;

	memset(k, 0, sizeof(*k));
	for (i = 0; i < sb->hdr->nslots; i++) {
		if (sb_slot_read(&sb->slots[i], &s) == -1) {
			if (s.pid != 0 && ctl_pid_alive(s.pid))
				k->unreadable++;
			continue;
		}
		if (s.pid == 0 || !ctl_pid_alive(s.pid))
			continue;
		if (ctl_in_session(&s))
			k->busy++;
		else if (s.state == SB_IDLE)
			k->idle++;
		else if (s.state == SB_STARTING)
			k->starting++;
		else
			k->other++;
	}
}

#define LLU(x)	((unsigned long long)atomic_load(&(x)))

/*
 * A punt's state as the workers last saw it (issue 11: the remote punts'
 * link state, written by any worker; a local punt has only ok and
 * checked_us).  The config says remote too, in case no worker has
 * marked it yet.
 */
struct punt_view {
	bool		 remote;
	const char	*state;		/* "up", "down", "unknown" */
	uint64_t	 checked_us, down_until_us, rtt_us;
	bool		 ok;
};

static void
punt_view(const struct ctl *c, const struct sb_punt_health *h, uint64_t now,
    struct punt_view *v)
{
	const struct config_punt *cp = config_punt_find(c->cf, h->name);

	v->remote = atomic_load(&h->remote) != 0 ||
	    (cp != NULL && cp->address[0] != '\0');
	v->ok = atomic_load(&h->ok) != 0;
	v->checked_us = atomic_load(&h->checked_us);
	v->down_until_us = atomic_load(&h->down_until_us);
	v->rtt_us = atomic_load(&h->rtt_us);
	if (v->down_until_us <= now)
		v->down_until_us = 0;	/* the skip is over */
	if (v->checked_us == 0 && v->down_until_us == 0)
		v->state = "unknown";
	else if (v->ok && v->down_until_us == 0)
		v->state = "up";
	else
		v->state = "down";
}

static void
ctl_status_json(const struct ctl *c, const struct scoreboard *sb,
    bool alive, const struct ctl_counts *k, uint64_t now)
{
	const struct sb_header	*h = sb->hdr;
	struct punt_view	 v;
	uint32_t		 i;

	printf("{\"master_pid\": %ld, \"running\": %s, \"started\": %llu, "
	    "\"uptime_s\": %llu, \"generation\": %llu,\n",
	    (long)h->master_pid, alive ? "true" : "false",
	    (unsigned long long)(h->start_us / 1000000),
	    (unsigned long long)(alive ? ctl_age_s(now, h->start_us) : 0),
	    LLU(h->generation));
	printf(" \"workers\": {\"busy\": %u, \"idle\": %u, \"starting\": %u, "
	    "\"exiting\": %u, \"unreadable\": %u, \"slots\": %u},\n",
	    k->busy, k->idle, k->starting, k->other, k->unreadable,
	    h->nslots);
	printf(" \"totals\": {\"sessions\": %llu, \"auth_failures\": %llu, "
	    "\"retrieved\": %llu, \"deleted\": %llu, \"octets_out\": %llu, "
	    "\"lmtp_messages\": %llu},\n", LLU(h->total_sessions),
	    LLU(h->total_auth_failures), LLU(h->total_retrieved),
	    LLU(h->total_deleted), LLU(h->total_octets_out),
	    LLU(h->total_lmtp_msgs));
	/* Auth throttle (issue 8): totals since start, gauges now. */
	printf(" \"auth\": {\"failures\": %llu, \"throttled\": %llu, "
	    "\"hashes\": %llu, \"blocked_sources\": %u, "
	    "\"blocked_hosts\": %u},\n", LLU(h->total_auth_failures),
	    LLU(h->total_auth_throttled), LLU(h->total_auth_hashes),
	    atomic_load(&h->auth_blocked_sources),
	    atomic_load(&h->auth_blocked_hosts));
	printf(" \"punts\": [");
	for (i = 0; i < h->npunts; i++) {
		printf("%s\n  {\"name\": ", i ? "," : "");
		ctl_json_str(stdout, h->punts[i].name);
		punt_view(c, &h->punts[i], now, &v);
		printf(", \"ok\": %s, \"checked_s_ago\": %llu, "
		    "\"remote\": %s, \"state\": \"%s\", \"down_until\": %llu, "
		    "\"rtt_us\": %llu}", v.ok ? "true" : "false",
		    (unsigned long long)ctl_age_s(now, v.checked_us),
		    v.remote ? "true" : "false", v.state,
		    (unsigned long long)(v.down_until_us / 1000000),
		    (unsigned long long)v.rtt_us);
	}
	printf("%s]", h->npunts ? "\n " : "");
}

/* One remote punt's line: its state, and the last round trip. */
static void
ctl_remote_line(const char *name, const struct punt_view *v, uint64_t now)
{
	char	 until[32];

	printf("punt %-16s remote ", name);
	if (strcmp(v->state, "unknown") == 0) {
		printf("unknown (not tried yet)\n");
		return;
	}
	if (strcmp(v->state, "up") == 0)
		printf("up");
	else if (v->down_until_us != 0) {
		ctl_utc(v->down_until_us, until, sizeof(until));
		printf("DOWN until %s (%llu s)", until,
		    (unsigned long long)((v->down_until_us - now + 999999) /
		    1000000));
	} else
		printf("DOWN (tried again at the next use)");
	if (v->rtt_us != 0)
		printf(", rtt %llu.%03llu ms",
		    (unsigned long long)(v->rtt_us / 1000),
		    (unsigned long long)(v->rtt_us % 1000));
	else
		printf(", rtt -");
	if (v->checked_us != 0)
		printf(" (checked %llu s ago)",
		    (unsigned long long)ctl_age_s(now, v->checked_us));
	putchar('\n');
}

static void
ctl_status_text(const struct ctl *c, const struct scoreboard *sb,
    bool alive, const struct ctl_counts *k, uint64_t now)
{
	const struct sb_header	*h = sb->hdr;
	struct punt_view	 v;
	char			 started[32];
	uint64_t		 checked;
	uint32_t		 i;

	ctl_utc(h->start_us, started, sizeof(started));
	printf("master:      pid %ld, %s\n", (long)h->master_pid,
	    alive ? "running" : "not running");
	if (alive)
		printf("uptime:      %llu s (since %s)\n",
		    (unsigned long long)ctl_age_s(now, h->start_us), started);
	printf("generation:  %llu\n", LLU(h->generation));
	printf("workers:     %u busy, %u idle, %u starting, %u exiting, "
	    "%u slots\n", k->busy, k->idle, k->starting, k->other,
	    h->nslots);
	if (k->unreadable > 0)
		printf("unreadable:  %u slots (a worker died inside a "
		    "scoreboard write)\n", k->unreadable);
	printf("sessions:    %llu (auth failures %llu)\n",
	    LLU(h->total_sessions), LLU(h->total_auth_failures));
	printf("messages:    %llu retrieved, %llu deleted, %llu octets "
	    "sent, %llu by LMTP\n", LLU(h->total_retrieved),
	    LLU(h->total_deleted), LLU(h->total_octets_out),
	    LLU(h->total_lmtp_msgs));
	/* Auth throttle (issue 8). */
	printf("auth:        %llu failed, %llu refused by the throttle, "
	    "%llu hashes; blocked now: %u sources, %u hosts\n",
	    LLU(h->total_auth_failures), LLU(h->total_auth_throttled),
	    LLU(h->total_auth_hashes), atomic_load(&h->auth_blocked_sources),
	    atomic_load(&h->auth_blocked_hosts));
	for (i = 0; i < h->npunts; i++) {
		punt_view(c, &h->punts[i], now, &v);
		if (v.remote) {
			ctl_remote_line(h->punts[i].name, &v, now);
			continue;
		}
		checked = atomic_load(&h->punts[i].checked_us);
		if (checked == 0)
			printf("punt %-16s not checked yet\n",
			    h->punts[i].name);
		else
			printf("punt %-16s %s (checked %llu s ago)\n",
			    h->punts[i].name,
			    atomic_load(&h->punts[i].ok) ? "ok" :
			    "UNAVAILABLE",
			    (unsigned long long)ctl_age_s(now, checked));
	}
}

int
ctl_status(struct ctl *c)
{
	struct scoreboard	 sb;
	struct ctl_counts	 k;
	uint64_t		 now = util_now_us();
	bool			 alive;
	int			 down = 0;

	if (ctl_sb_open(c, &sb) != 0)
		return 1;
	alive = ctl_master_alive(&sb);
	if (alive)
		ctl_count(&sb, &k);
	else
		memset(&k, 0, sizeof(k));
	if (c->json)
		ctl_status_json(c, &sb, alive, &k, now);
	else
		ctl_status_text(c, &sb, alive, &k, now);
	sb_close(&sb);
	/* --probe: this process's own link to each remote punt, now, not
	 * what the workers last saw. */
	if (c->probe)
		down = ctl_remote_probe(c->cf, c->json);
	if (c->json)
		printf("}\n");
	/* Monitoring scripts want a non-zero status for a dead daemon,
	 * and with --probe for a punt that did not answer. */
	if (!alive)
		return ctl_fail("status: sdpsd is not running");
	if (down > 0)
		return ctl_fail("status: %d remote punt%s did not answer the "
		    "probe", down, down == 1 ? "" : "s");
	return 0;
}

int
ctl_auth_flush(struct ctl *c)
{
	struct scoreboard	 sb;
	char			 host[UTIL_HOST_MAX + 1];
	pid_t			 pid;

	if (c->argc == 1 && util_host_normalize(c->argv[0], host) == -1)
		return ctl_fail("auth flush: bad host name \"%s\"",
		    c->argv[0]);
	if (ctl_sb_open(c, &sb) != 0)
		return 1;
	pid = sb.hdr->master_pid;
	if (!ctl_master_alive(&sb)) {
		sb_close(&sb);
		return ctl_fail("auth flush: sdpsd is not running");
	}
	sb_close(&sb);
	if (kill(pid, SIGUSR1) == -1)
		return ctl_fail("auth flush: pid %ld: %s", (long)pid,
		    strerror(errno));
	/* The cache has one epoch for all hosts: a host flushes them all. */
	printf("auth cache flushed%s\n", c->argc == 1 ?
	    " (every host, not only the one named)" : "");
	return 0;
}
