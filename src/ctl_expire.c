/* ctl_expire: "sdps-ctl expire": remove mail older than the policy age and
 * bounce unread mail to its sender (DESIGN.md §1 rule 5). */

#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/config.h"
#include "sdps/ctl.h"
#include "sdps/dsn.h"
#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"

#define HEADERS_MAX	(256 * 1024)	/* enough header block for a DSN */
#define ARGV_MAX	32

struct victim {
	uint64_t id;
	uint64_t arrival_us;
};

struct collect {
	uint64_t	 cutoff_us;
	struct victim	*v;
	size_t		 n, cap;
	int		 failed;
};

struct tally {
	uint64_t bounced, silent, skipped, failed;
};

/* Runs inside the walk's read transaction: only copy, never call store. */
static int
collect_old(const struct store_msg *m, void *arg)
{
	struct collect	*c = arg;
	struct victim	*nv;

	if (m->arrival_us > c->cutoff_us)
		return 0;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		if ((nv = reallocarray(c->v, c->cap, sizeof(*nv))) == NULL) {
			c->failed = 1;
			return 1;
		}
		c->v = nv;
	}
	c->v[c->n].id = m->id;
	c->v[c->n].arrival_us = m->arrival_us;
	c->n++;
	return 0;
}

/*
 * The original header block, unstuffed (the file is in wire format), for
 * the text/rfc822-headers part.  Returns a malloc'd string or NULL.
 */
static char *
read_headers(int fd, size_t *len)
{
	char	*raw, *out;
	ssize_t	 got;
	size_t	 have = 0, i, o = 0;
	int	 bol = 1;

	if ((raw = malloc(HEADERS_MAX)) == NULL)
		return NULL;
	while (have < HEADERS_MAX &&
	    (got = read(fd, raw + have, HEADERS_MAX - have)) > 0)
		have += (size_t)got;
	if ((out = malloc(have + 1)) == NULL) {
		free(raw);
		return NULL;
	}
	for (i = 0; i < have; i++) {
		if (bol && raw[i] == '.') {
			bol = 0;
			continue;
		}
		if (bol && raw[i] == '\r' && i + 1 < have && raw[i + 1] == '\n')
			break;		/* the empty line ends the header */
		out[o++] = raw[i];
		bol = raw[i] == '\n';
	}
	out[o] = '\0';
	free(raw);
	*len = o;
	return out;
}

/*
 * Run the configured sendmail command with the bounce on stdin and the
 * recipient as the last argument.  The command is split on blanks, not
 * given to a shell, so an address can never be interpreted as shell text.
 */
static int
send_by_command(const char *cmd, const char *rcpt, const char *msg,
    size_t len)
{
	char	 copy[PATH_MAX], *argv[ARGV_MAX + 2], *tok, *save;
	int	 argc = 0, pfd[2], st, wrote;
	pid_t	 pid;

	snprintf(copy, sizeof(copy), "%s", cmd);
	for (tok = strtok_r(copy, " \t", &save); tok != NULL && argc < ARGV_MAX;
	    tok = strtok_r(NULL, " \t", &save))
		argv[argc++] = tok;
	if (argc == 0)
		return -1;
	argv[argc++] = (char *)rcpt;
	argv[argc] = NULL;
	if (pipe2(pfd, O_CLOEXEC) == -1)
		return -1;
	if ((pid = fork()) == -1) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		if (dup2(pfd[0], STDIN_FILENO) == -1)
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	close(pfd[0]);
	signal(SIGPIPE, SIG_IGN);
	wrote = util_write_all(pfd[1], msg, len);
	close(pfd[1]);
	if (waitpid(pid, &st, 0) == -1)
		return -1;
	return wrote == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Durably drop the bounce into the outbox: tmp file, fsync, rename. */
static int
send_to_outbox(const char *outbox, const char *punt, uint64_t id,
    const char *msg, size_t len)
{
	char	 tmp[PATH_MAX + 8], final[PATH_MAX];
	int	 fd;

	if (util_mkdir_p(outbox, 0750) == -1)
		return -1;
	snprintf(final, sizeof(final), "%s/%llu-%s-%llx.eml", outbox,
	    (unsigned long long)(util_now_us() / 1000000), punt,
	    (unsigned long long)id);
	snprintf(tmp, sizeof(tmp), "%s.tmp", final);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640))
	    == -1)
		return -1;
	if (util_write_all(fd, msg, len) == -1 || fsync(fd) == -1) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, final) == -1) {
		unlink(tmp);
		return -1;
	}
	return util_fsync_dir(outbox);
}

static int
bounce(const struct config *cf, struct store *st, const struct store_msg *m)
{
	struct dsn_rcpt	*r;
	struct dsn	 d;
	char		 hostname[256], **addrs, *hdr = NULL, *msg = NULL;
	size_t		 i, hlen = 0, mlen;
	int		 fd, rc = -1;

	if ((r = calloc(m->nrcpts, sizeof(*r))) == NULL)
		return -1;
	if ((addrs = calloc(m->nrcpts, sizeof(*addrs))) == NULL) {
		free(r);
		return -1;
	}
	for (i = 0; i < m->nrcpts; i++) {
		if (asprintf(&addrs[i], "%s@%s", m->rcpts[i], m->host) == -1) {
			addrs[i] = NULL;
			goto out;
		}
		r[i].addr = addrs[i];
		r[i].status = "4.4.7";
		r[i].diag = "message expired unread in the POP3 spool";
	}
	if (store_msg_open(st, m->id, &fd, NULL) == STORE_OK) {
		hdr = read_headers(fd, &hlen);
		close(fd);
	}
	if (gethostname(hostname, sizeof(hostname)) == -1)
		snprintf(hostname, sizeof(hostname), "localhost");
	hostname[sizeof(hostname) - 1] = '\0';
	memset(&d, 0, sizeof(d));
	d.reporting_host = hostname;
	d.sender = m->sender;
	d.arrival_us = m->arrival_us;
	d.reason = "Your message was not collected by its recipients before "
	    "the spool's expiry age and has been removed.";
	d.rcpts = r;
	d.nrcpts = m->nrcpts;
	d.headers = hdr;
	d.headers_len = hlen;
	if (dsn_build(&d, &msg, &mlen) == -1)
		goto out;
	if (cf->sendmail[0] != '\0')
		rc = send_by_command(cf->sendmail, m->sender, msg, mlen);
	else
		rc = send_to_outbox(cf->outbox, store_name(st), m->id, msg,
		    mlen);
out:
	for (i = 0; i < m->nrcpts; i++)
		free(addrs[i]);
	free(addrs);
	free(r);
	free(hdr);
	free(msg);
	return rc;
}

/*
 * Expire one message.  Claiming it first makes expiry an SMTP-side agent
 * like any other: a message another agent is delivering is skipped, and
 * POP3 cannot take it half-way through the bounce.
 */
static void
expire_one(struct ctl *c, struct store *st, const struct victim *v,
    struct tally *t)
{
	struct store_msg m;
	const char	*what;
	enum store_res	 r;
	char		 uidl[STORE_UIDL_MAX];

	store_uidl(st, v->id, uidl);
	if (c->dry_run) {
		if (store_msg_get(st, v->id, &m) != STORE_OK)
			return;
		if ((m.flags & STORE_F_IN_DELIVERY) != 0)
			what = "skip (claimed)", t->skipped++;
		else if ((m.flags & STORE_F_READ) != 0 || m.sender[0] == '\0')
			what = "would expire silently", t->silent++;
		else
			what = "would bounce and expire", t->bounced++;
		printf("%s:%llu %s %s %s\n", store_name(st),
		    (unsigned long long)v->id, uidl, m.host, what);
		store_msg_free(&m);
		return;
	}
	if ((r = store_claim(st, v->id, "sdps-ctl-expire")) != STORE_OK) {
		if (r == STORE_BUSY) {
			printf("%s:%llu %s skip (claimed)\n", store_name(st),
			    (unsigned long long)v->id, uidl);
			t->skipped++;
		} else if (r != STORE_GONE)
			t->failed++;
		return;
	}
	if (store_msg_get(st, v->id, &m) != STORE_OK) {
		store_release(st, v->id);
		t->failed++;
		return;
	}
	if ((m.flags & STORE_F_READ) != 0 || m.sender[0] == '\0')
		what = "expired silently", t->silent++;
	else if (bounce(c->cf, st, &m) == 0)
		what = "bounced and expired", t->bounced++;
	else {
		/* Keep it: the next run retries the bounce. */
		store_release(st, v->id);
		fprintf(stderr, "sdps-ctl: %s:%llu: bounce to <%s> failed\n",
		    store_name(st), (unsigned long long)v->id, m.sender);
		store_msg_free(&m);
		t->failed++;
		return;
	}
	if (store_done(st, v->id) != STORE_OK) {
		what = "bounce sent, removal failed";
		t->failed++;
	}
	printf("%s:%llu %s %s %s\n", store_name(st), (unsigned long long)v->id,
	    uidl, m.host, what);
	store_msg_free(&m);
}

int
ctl_expire(struct ctl *c)
{
	const struct config	*cf = c->cf;
	struct store_opts	 opts;
	struct collect		 col;
	struct tally		 t = { 0, 0, 0, 0 };
	struct store		*st;
	char			 err[256];
	unsigned		 days;
	size_t			 i;
	int			 p, rc = 0;

	days = c->older_than_days >= 0 ? (unsigned)c->older_than_days :
	    cf->expire_days;
	opts.map_size = cf->store_map_size;
	opts.claim_lease_s = cf->claim_lease_s;
	for (p = 0; p < cf->npunts; p++) {
		if ((st = store_open(cf->punts[p].path, cf->punts[p].name,
		    &opts, err, sizeof(err))) == NULL) {
			fprintf(stderr, "sdps-ctl: punt %s: %s\n",
			    cf->punts[p].name, err);
			rc = 1;
			continue;
		}
		memset(&col, 0, sizeof(col));
		/* --older-than 0 means every message, however new. */
		col.cutoff_us = days == 0 ? UINT64_MAX :
		    util_now_us() - (uint64_t)days * 86400 * 1000000;
		if (store_walk(st, NULL, collect_old, &col) == -1 ||
		    col.failed) {
			fprintf(stderr, "sdps-ctl: punt %s: walk failed\n",
			    cf->punts[p].name);
			rc = 1;
		} else
			for (i = 0; i < col.n; i++)
				expire_one(c, st, &col.v[i], &t);
		free(col.v);
		store_close(st);
	}
	printf("%s: %llu bounced, %llu silent, %llu skipped, %llu failed\n",
	    c->dry_run ? "dry run" : "expired",
	    (unsigned long long)t.bounced, (unsigned long long)t.silent,
	    (unsigned long long)t.skipped, (unsigned long long)t.failed);
	return rc != 0 || t.failed != 0 ? 1 : 0;
}
