/*
 * libFuzzer target: arbitrary bytes as one client's input to a real POP3
 * session (session_run over a socketpair) on a tiny two-punt spool with a
 * real auth store, locks and scoreboard.  Built and run by tools/fuzz.sh.
 * Host "fuzz.example", passwords "pw" and "pw two"; users alice and bob.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/scoreboard.h"
#include "sdps/session.h"
#include "sdps/puntset.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/wire.h"
#include "sdps/session_env.h"

#define HOST	"fuzz.example"
#define MAP	(32ULL << 20)
#define KEEP	4	/* messages kept on each punt between inputs */

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct config		 cf;
static struct scoreboard	 sb;
static struct session_env	 w;
static volatile sig_atomic_t	 kill_flag, term_flag;
static int			 ready;

static const char *const rc_alice[] = { "alice" };
static const char *const rc_both[] = { "alice", "bob" };

static void
seed_one(struct store *st, int k)
{
	static const char *const texts[] = {
		("From: a@b.example\r\nSubject: one\r\n\r\nhello\r\n"
		    ".dot\r\n..two\r\n"),
		"Subject: two\n\nline\n",
		"From: x@y.example\nSubject: three\n\n.\n.\n\nend\n",
	};
	struct store_envelope	 env;
	struct wire		 wi;
	uint64_t		 id;
	char			 err[256];
	const char		*text = texts[k % 3];

	env.host = HOST;
	env.sender = k % 2 ? "" : "s@x.example";
	env.rcpts = k % 2 ? rc_both : rc_alice;
	env.nrcpts = k % 2 ? 2 : 1;
	wire_init(&wi, 0);
	if (wire_feed(&wi, text, strlen(text)) == WIRE_OK &&
	    wire_finish(&wi) == WIRE_OK)
		(void)store_put(st, &env, wi.buf, wi.len, wi.body_octets,
		    &id, err, sizeof(err));
	wire_free(&wi);
}

/* Top the punts up again after inputs that removed messages. */
static void
refill(void)
{
	struct store_entry	*e;
	struct store		*st;
	size_t			 n;
	int			 i, k;

	for (i = 0; i < cf.npunts; i++) {
		if (puntset_get(w.punts, i) == NULL ||
		    (st = punt_local_store(puntset_get(w.punts, i))) == NULL)
			continue;
		e = NULL;
		n = 0;
		if (store_list(st, HOST, NULL, &e, &n, NULL) == -1)
			continue;
		free(e);
		for (k = (int)n; k < KEEP; k++)
			seed_one(st, k + i);
	}
}

static int
init_once(void)
{
	struct auth	*a;
	char		 dir[64], path[PATH_MAX], err[256];
	int		 i;

	signal(SIGPIPE, SIG_IGN);
	log_init("fuzz_session", false, LOG_LOCAL7, false);
	if (auth_global_init() == -1)
		return -1;
	snprintf(dir, sizeof(dir), "%s/fuzz_session.XXXXXX",
	    access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(dir) == NULL)
		return -1;
	config_defaults(&cf);
	snprintf(cf.run_dir, sizeof(cf.run_dir), "%s/run", dir);
	snprintf(cf.auth_path, sizeof(cf.auth_path), "%s/auth", dir);
	cf.hash_cost = CONFIG_HASH_MIN;
	cf.auth_map_size = MAP;
	cf.store_map_size = MAP;
	cf.idle_timeout_s = 10;
	cf.send_timeout_s = 10;
	cf.auth_fail_delay_ms = 0;
	cf.auth_max_failures = 3;
	cf.max_bad_commands = 20;
	/* A socketpair is no loopback peer: let USER, PASS and AUTH in. */
	cf.allow_cleartext = CONFIG_CLEARTEXT_YES;
	cf.npunts = 2;
	if (util_mkdir_p(cf.run_dir, 0700) == -1)
		return -1;
	for (i = 0; i < cf.npunts; i++) {
		snprintf(cf.punts[i].name, sizeof(cf.punts[i].name), "%s",
		    i == 0 ? "alpha" : "beta");
		snprintf(path, sizeof(path), "%s/%s", dir, cf.punts[i].name);
		snprintf(cf.punts[i].path, sizeof(cf.punts[i].path), "%s",
		    path);
		if (store_create(path, cf.punts[i].name, MAP, err,
		    sizeof(err)) == -1)
			return -1;
	}
	if ((a = auth_open(cf.auth_path, MAP, true, CONFIG_HASH_MIN, err,
	    sizeof(err))) == NULL)
		return -1;
	if (auth_host_add(a, HOST, "pw", "pw two", err, sizeof(err)) == -1)
		return -1;
	if (sb_create(cf.run_dir, 1, &cf, &sb) == -1)
		return -1;
	w.cf = &cf;
	w.sb = &sb;
	w.slot = &sb.slots[0];
	w.auth = a;
	if ((w.punts = puntset_new(&cf, 0)) == NULL)
		return -1;
	w.kill_session = &kill_flag;
	w.terminate = &term_flag;
	return 0;
}

struct feed {
	int		 fd;
	const uint8_t	*data;
	size_t		 size;
};

/* The client: write the input, read every reply, until the server
 * closes its end. */
static void *
client(void *arg)
{
	struct feed	*f = arg;
	struct pollfd	 pfd;
	char		 buf[16384];
	size_t		 off = 0;
	ssize_t		 n;

	if (f->size == 0)
		shutdown(f->fd, SHUT_WR);
	for (;;) {
		pfd.fd = f->fd;
		pfd.events = POLLIN | (off < f->size ? POLLOUT : 0);
		if (poll(&pfd, 1, -1) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(f->fd, buf, sizeof(buf));
			if (n <= 0)
				break;
		}
		if (off < f->size && (pfd.revents & POLLOUT)) {
			n = write(f->fd, f->data + off, f->size - off);
			if (n < 0)
				break;
			off += (size_t)n;
			if (off == f->size)
				shutdown(f->fd, SHUT_WR);
		}
	}
	return NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct feed	 f;
	pthread_t	 t;
	int		 sv[2];

	if (!ready) {
		if (init_once() == -1) {
			fprintf(stderr, "fuzz_session: setup failed\n");
			abort();
		}
		ready = 1;
	}
	refill();
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	f.fd = sv[0];
	f.data = data;
	f.size = size;
	if (pthread_create(&t, NULL, client, &f) != 0)
		abort();
	session_run(&w, sv[1], "fuzz");
	/* session_run leaves the socket to its caller, as the worker does. */
	close(sv[1]);
	pthread_join(t, NULL);
	close(sv[0]);
	return 0;
}
