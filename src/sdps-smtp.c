/* sdps-smtp: the SMTP delivery agent: push spooled mail to hosts' SMTP
 * servers (see agent.h). */

#include <sys/wait.h>

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "sdps/agent.h"
#include "sdps/auth.h"
#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/util.h"
#include "sdps/version.h"

/* --help: usage on stdout and 0; a bad command line: stderr and 64. */
static void __attribute__((noreturn))
usage(FILE *f, int status)
{
	fprintf(f, "usage: sdps-smtp [-c CONF] deliver HOST "
	    "[--to ADDR:PORT]\n"
	    "       sdps-smtp [-c CONF] run [-j N]\n"
	    "       sdps-smtp --help | --version\n");
	exit(status);
}

static int
deliver(const struct config *cf, const char *host, const char *target)
{
	struct agent_stats st;
	int		 rc;

	rc = agent_deliver_host(cf, host, target, &st);
	printf("host=%s target=%s sent=%llu bounced=%llu deferred=%llu "
	    "skipped=%llu result=%s\n", host, target,
	    (unsigned long long)st.sent, (unsigned long long)st.bounced,
	    (unsigned long long)st.deferred, (unsigned long long)st.skipped,
	    rc == 0 ? "ok" : "failed");
	fflush(stdout);
	return rc == 0 ? 0 : 1;
}

struct hostlist {
	struct auth_host *v;
	size_t		  n, cap;
};

static int
add_target(const struct auth_host *h, void *arg)
{
	struct hostlist	 *l = arg;
	struct auth_host *nv;

	if (h->smtp[0] == '\0')
		return 0;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		if ((nv = reallocarray(l->v, l->cap, sizeof(*nv))) == NULL)
			return 1;
		l->v = nv;
	}
	l->v[l->n++] = *h;
	return 0;
}

/* Every host with a target, at most jobs at a time, one process each. */
static int
run_all(const struct config *cf, unsigned jobs)
{
	struct hostlist	 l = { NULL, 0, 0 };
	struct auth	*a;
	char		 err[256];
	size_t		 i;
	unsigned	 running = 0;
	int		 st, rc = 0;
	pid_t		 pid;

	if ((a = auth_open(cf->auth_path, cf->auth_map_size, false,
	    cf->hash_cost, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sdps-smtp: auth: %s\n", err);
		return 1;
	}
	if (auth_host_list(a, add_target, &l) == -1) {
		auth_close(a);
		fprintf(stderr, "sdps-smtp: cannot list hosts\n");
		return 1;
	}
	auth_close(a);
	for (i = 0; i < l.n || running > 0;) {
		if (i < l.n && running < jobs) {
			if ((pid = fork()) == -1) {
				rc = 1;
				break;
			}
			if (pid == 0)
				_exit(deliver(cf, l.v[i].host, l.v[i].smtp));
			running++;
			i++;
			continue;
		}
		if (wait(&st) == -1)
			break;
		running--;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			rc = 1;
	}
	free(l.v);
	return rc;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "to",		required_argument, NULL, 't' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ "version",	no_argument,	   NULL, 'V' },
		{ NULL,		0,		   NULL, 0 }
	};
	struct config	 cf;
	struct auth	*a;
	struct auth_host h;
	const char	*conf = CONFIG_DEFAULT_PATH, *to = NULL;
	char		 err[512], host[UTIL_HOST_MAX + 1];
	uint64_t	 jobs = 4;
	int		 ch;

	while ((ch = getopt_long(argc, argv, "c:j:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'j':
			if (util_parse_u64(optarg, 64, &jobs) == -1 ||
			    jobs == 0)
				usage(stderr, 64);
			break;
		case 't':
			to = optarg;
			break;
		case 'h':
			usage(stdout, 0);
		case 'V':
			printf("sdps-smtp (sdps) %s\n", SDPS_VERSION);
			return 0;
		default:
			usage(stderr, 64);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage(stderr, 64);
	log_init("sdps-smtp", true, LOG_MAIL, false);
	/* A receiver that hangs up while the body goes out by sendfile(2)
	 * (which has no MSG_NOSIGNAL) is an error to handle, not a death:
	 * the claim must be released. */
	signal(SIGPIPE, SIG_IGN);
	if (config_load(conf, &cf, err, sizeof(err)) == -1) {
		fprintf(stderr, "sdps-smtp: %s\n", err);
		return 78;
	}
	if (strcmp(argv[0], "run") == 0 && argc == 1)
		return run_all(&cf, (unsigned)jobs);
	if (strcmp(argv[0], "deliver") != 0 || argc != 2)
		usage(stderr, 64);
	if (util_host_normalize(argv[1], host) == -1) {
		fprintf(stderr, "sdps-smtp: %s: bad host name\n", argv[1]);
		return 1;
	}
	if (to == NULL) {
		if ((a = auth_open(cf.auth_path, cf.auth_map_size, false,
		    cf.hash_cost, err, sizeof(err))) == NULL) {
			fprintf(stderr, "sdps-smtp: auth: %s\n", err);
			return 1;
		}
		if (auth_host_get(a, host, &h) != AUTH_OK ||
		    h.smtp[0] == '\0') {
			auth_close(a);
			fprintf(stderr, "sdps-smtp: %s: no SMTP target (use "
			    "sdps-ctl host set %s smtp=ADDR:PORT or --to)\n",
			    host, host);
			return 1;
		}
		auth_close(a);
		return deliver(&cf, host, h.smtp);
	}
	return deliver(&cf, host, to);
}
