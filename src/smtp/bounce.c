/* bounce: DSNs for stored mail, handed to sendmail or the outbox. */

#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/bounce.h"
#include "sdps/util.h"

#define HEADERS_MAX	(256 * 1024)	/* enough header block for a DSN */
#define ARGV_MAX	32

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
 * recipient as the last argument, after "--".  The command is split on
 * blanks, not given to a shell, so an address can never be interpreted as
 * shell text; the "--" keeps a sender such as "-oQ/tmp@x" (a valid local
 * part) from being read as a sendmail option.
 */
static int
send_by_command(const char *cmd, const char *rcpt, const char *msg,
    size_t len)
{
	char	 copy[PATH_MAX], *argv[ARGV_MAX + 3], *tok, *save;
	int	 argc = 0, pfd[2], st, wrote;
	pid_t	 pid;

	snprintf(copy, sizeof(copy), "%s", cmd);
	for (tok = strtok_r(copy, " \t", &save); tok != NULL && argc < ARGV_MAX;
	    tok = strtok_r(NULL, " \t", &save))
		argv[argc++] = tok;
	if (argc == 0)
		return -1;
	argv[argc++] = (char *)"--";
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

int
bounce_msg(const struct config *cf, struct store *st,
    const struct store_msg *m, const struct dsn_rcpt *rcpts, size_t n,
    const char *reason)
{
	struct dsn	 d;
	char		 hostname[256], *hdr = NULL, *msg = NULL;
	size_t		 hlen = 0, mlen;
	int		 fd, rc;

	if (m->sender[0] == '\0')
		return 0;	/* RFC 3464 §2: never bounce a bounce */
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
	d.reason = reason;
	d.rcpts = rcpts;
	d.nrcpts = n;
	d.headers = hdr;
	d.headers_len = hlen;
	rc = dsn_build(&d, &msg, &mlen);
	free(hdr);
	if (rc == -1)
		return -1;
	if (cf->sendmail[0] != '\0')
		rc = send_by_command(cf->sendmail, m->sender, msg, mlen);
	else
		rc = send_to_outbox(cf->outbox, store_name(st), m->id, msg,
		    mlen);
	free(msg);
	return rc;
}
