/*
 * sdps-deliver: the local delivery agent an MTA calls to store one message
 * on a punt for every recipient host (docs/design.md §10.1).  Exit codes are
 * sysexits, which MTAs understand.
 */

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sysexits.h>
#include <unistd.h>

#include "sdps/auth.h"
#include "sdps/config.h"
#include "sdps/deliver.h"
#include "sdps/fault.h"
#include "sdps/log.h"
#include "sdps/puntset.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/version.h"
#include "sdps/wire.h"

#define READ_CHUNK	65536

/* One recipient host and its deduplicated local parts. */
struct rhost {
	char	 host[UTIL_HOST_MAX + 1];
	char	**users;
	size_t	 nusers;
};

struct deliver {
	struct config	 cf;
	const char	*punt_arg;	/* -p, or NULL */
	char		 sender[UTIL_SENDER_MAX + 1];
	struct rhost	*hosts;
	size_t		 nhosts;
	struct puntset	*ps;	/* opened on demand, one attempt each */
	struct wire	 w;
	char		 why[1024];	/* what each failed punt said */
};

/* --help: usage on stdout and 0; a bad command line: stderr and 64. */
static void __attribute__((noreturn))
usage(FILE *f, int status)
{
	fprintf(f, "usage: sdps-deliver [-c config] [-p punt] -f sender "
	    "recipient ...\n"
	    "       sdps-deliver --help | --version\n"
	    "exit: 0 stored, 64 usage, 65 bad message, 67 unknown host, "
	    "75 try again later, 78 bad config\n");
	exit(status);
}

static void __attribute__((noreturn, format(printf, 2, 3)))
die(int code, const char *fmt, ...)
{
	va_list	 ap;

	fputs("sdps-deliver: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static struct rhost *
rhost_get(struct deliver *d, const char *host)
{
	struct rhost	*h;
	size_t		 i;

	for (i = 0; i < d->nhosts; i++)
		if (strcmp(d->hosts[i].host, host) == 0)
			return &d->hosts[i];
	h = reallocarray(d->hosts, d->nhosts + 1, sizeof(*h));
	if (h == NULL)
		die(EX_TEMPFAIL, "out of memory");
	d->hosts = h;
	h = &d->hosts[d->nhosts++];
	memset(h, 0, sizeof(*h));
	strcpy(h->host, host);
	return h;
}

static void
rhost_add_user(struct rhost *h, const char *user)
{
	char	**u;
	size_t	  i;

	for (i = 0; i < h->nusers; i++)
		if (strcmp(h->users[i], user) == 0)
			return;
	if ((u = reallocarray(h->users, h->nusers + 1, sizeof(*u))) == NULL)
		die(EX_TEMPFAIL, "out of memory");
	h->users = u;
	if ((h->users[h->nusers] = strdup(user)) == NULL)
		die(EX_TEMPFAIL, "out of memory");
	h->nusers++;
}

/*
 * Check every recipient's syntax and every host's existence before
 * anything is read or written, so a rejection leaves no trace.
 */
static void
check_recipients(struct deliver *d, int argc, char **argv)
{
	struct auth	*a;
	struct auth_host ah;
	char		 user[UTIL_USER_MAX + 1], host[UTIL_HOST_MAX + 1];
	char		 err[256];
	size_t		 i;
	int		 k;

	for (k = 0; k < argc; k++) {
		if (util_addr_split(argv[k], user, host) == -1)
			die(EX_DATAERR, "bad recipient address: %s", argv[k]);
		rhost_add_user(rhost_get(d, host), user);
	}
	if ((a = auth_open(d->cf.auth_path, d->cf.auth_map_size, false,
	    d->cf.hash_cost, err, sizeof(err))) == NULL)
		die(EX_TEMPFAIL, "auth store: %s", err);
	for (i = 0; i < d->nhosts; i++) {
		switch (auth_host_get(a, d->hosts[i].host, &ah)) {
		case AUTH_OK:
			break;
		case AUTH_FAIL:
			auth_close(a);
			die(EX_NOUSER, "unknown host: %s", d->hosts[i].host);
		case AUTH_TEMPFAIL:
			auth_close(a);
			die(EX_TEMPFAIL, "auth store: cannot look up %s",
			    d->hosts[i].host);
		}
	}
	auth_close(a);
}

static void
read_message(struct deliver *d)
{
	char		*buf;
	ssize_t		 got;
	enum wire_res	 res = WIRE_OK;
	int		 err;

	if ((buf = malloc(READ_CHUNK)) == NULL)
		die(EX_TEMPFAIL, "out of memory");
	wire_init(&d->w, d->cf.max_message_octets);
	for (;;) {
		got = read(STDIN_FILENO, buf, READ_CHUNK);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			err = errno;
			free(buf);
			die(EX_TEMPFAIL, "read message: %s", strerror(err));
		}
		if (got == 0)
			break;
		if ((res = wire_feed(&d->w, buf, (size_t)got)) != WIRE_OK)
			break;
	}
	free(buf);
	if (res == WIRE_OK && (res = wire_finish(&d->w)) == WIRE_OK)
		return;
	die(res == WIRE_NOMEM ? EX_TEMPFAIL : EX_DATAERR, "message "
	    "rejected: %s", wire_strerror(res));
}

/*
 * deliver_store picks the punt, the same way the LMTP ingest does, local
 * or remote alike: a remote punt's punt_put sends DELIVER through its
 * link and returns only after the punt's +OK, which the punt sends once
 * the copy is durable there (docs/punt-protocol.md), so EX_OK still
 * means stored durably somewhere.
 */
static int
store_for_host(struct deliver *d, const struct rhost *h, int only)
{
	struct store_envelope	 env;
	uint64_t		 id;
	int			 idx;

	env.host = h->host;
	env.sender = d->sender;
	env.rcpts = (const char *const *)h->users;
	env.nrcpts = h->nusers;
	if (deliver_store(d->ps, only, &env, &d->w, &idx, &id, d->why,
	    sizeof(d->why)) != STORE_OK)
		return -1;
	return 0;
}

/* The command line: the options into d and *conf, the sender into
 * *sender; the recipients are what is left of argv from *first. */
static void
parse_args(struct deliver *d, int argc, char **argv, const char **conf,
    const char **sender, int *first)
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ "version",	no_argument,	NULL, 'V' },
		{ NULL,		0,		NULL, 0 }
	};
	int	 ch;

	while ((ch = getopt_long(argc, argv, "c:f:p:", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			*conf = optarg;
			break;
		case 'f':
			*sender = optarg;
			break;
		case 'p':
			d->punt_arg = optarg;
			break;
		case 'h':
			usage(stdout, EX_OK);
		case 'V':
			printf("sdps-deliver (sdps) %s\n", SDPS_VERSION);
			exit(EX_OK);
		default:
			usage(stderr, EX_USAGE);
		}
	}
	if (*sender == NULL || argc - optind < 1)
		usage(stderr, EX_USAGE);
	if (*conf == NULL)
		*conf = CONFIG_DEFAULT_PATH;
	*first = optind;
}

/* The configuration, the -p punt (its index, or -1 for all) and the
 * sender; exits on any failure. */
static int
load_config(struct deliver *d, const char *conf, const char *sender)
{
	char	 err[PATH_MAX + 256];
	int	 p, only = -1;

	if (config_load(conf, &d->cf, err, sizeof(err)) == -1)
		die(EX_CONFIG, "%s", err);
	if (d->cf.npunts == 0)
		die(EX_CONFIG, "%s:0: no punt configured", conf);
	if (d->punt_arg != NULL) {
		for (p = 0; p < d->cf.npunts; p++)
			if (strcmp(d->cf.punts[p].name, d->punt_arg) == 0)
				only = p;
		if (only < 0)
			die(EX_USAGE, "no such punt: %s", d->punt_arg);
	}
	if (util_sender_normalize(sender, d->sender) == -1)
		die(EX_DATAERR, "bad sender address: %s", sender);
	if (auth_global_init() == -1)
		die(EX_TEMPFAIL, "cannot initialise libsodium");
	return only;
}

/*
 * Before the first store, make sure there is somewhere to store: a
 * second host failing after the first was stored makes the MTA
 * retry the whole message, and the first host would get it twice.
 * With several hosts every punt is opened now, so only a store_put
 * failing on every punt (a disk filling mid-way) can still cause
 * that; a duplicate is the lesser harm than a loss.
 */
static void
open_punts(struct deliver *d, int only)
{
	int	 p, ok = 0;

	if ((d->ps = puntset_new(&d->cf, PUNTSET_ONCE)) == NULL)
		die(EX_TEMPFAIL, "out of memory");
	puntset_why(d->ps, d->why, sizeof(d->why));
	if (only >= 0) {
		if (puntset_get(d->ps, only) == NULL)
			die(EX_TEMPFAIL, "%s", d->why);
		return;
	}
	for (p = 0; p < d->cf.npunts; p++) {
		if (puntset_get(d->ps, p) != NULL)
			ok++;
		if (ok > 0 && d->nhosts == 1)
			break;
	}
	if (ok == 0)
		die(EX_TEMPFAIL, "no punt available: %s", d->why);
}

/* One copy per recipient host, in order; exits on the first failure. */
static void
store_all(struct deliver *d, int only)
{
	size_t	 i;

	for (i = 0; i < d->nhosts; i++) {
		if (store_for_host(d, &d->hosts[i], only) == -1) {
			if (i > 0)
				die(EX_TEMPFAIL, "cannot store for %s (stored "
				    "for %zu other host(s) already; a retry "
				    "repeats those): %s", d->hosts[i].host, i,
				    d->why);
			die(EX_TEMPFAIL, "cannot store for %s: %s",
			    d->hosts[i].host, d->why);
		}
		/* Tests: a kill between two hosts' copies (or before exit). */
		fault_point("deliver.host_stored");
	}
}

int
main(int argc, char **argv)
{
	struct deliver	 d;
	const char	*conf = NULL, *sender = NULL;
	size_t		 i;
	int		 first, only;

	memset(&d, 0, sizeof(d));
	parse_args(&d, argc, argv, &conf, &sender, &first);
	/*
	 * The modules' detail goes to the mail log; the MTA gets one line
	 * on stderr (it quotes it in the bounce or its own log).
	 */
	log_init("sdps-deliver", false, LOG_MAIL, false);
	only = load_config(&d, conf, sender);
	check_recipients(&d, argc - first, argv + first);
	read_message(&d);
	open_punts(&d, only);
	store_all(&d, only);

	puntset_free(d.ps);
	wire_free(&d.w);
	for (i = 0; i < d.nhosts; i++) {
		while (d.hosts[i].nusers > 0)
			free(d.hosts[i].users[--d.hosts[i].nusers]);
		free(d.hosts[i].users);
	}
	free(d.hosts);
	return EX_OK;
}
