/*
 * sdps-fill: fill one punt with many small deterministic messages through
 * store_put, so the index is exactly what sdpsd reads.  Setup for the scale
 * benchmark (tools/bench-scale), never a measurement: store_put fsyncs
 * several times a message, so run a big fill under eatmydata(1).
 */
#include <sys/types.h>

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "sdps/wire.h"

#define FILL_DOMAIN	"scale.example"
#define FILL_PROGRESS	10000	/* messages between progress lines */
#define FILL_HOSTS_MAX	1000000
#define FILL_MSGS_MAX	100000000ULL

/* One host to fill: its name and how many messages it gets. */
struct fill_host {
	char		 name[UTIL_HOST_MAX + 1];
	uint32_t	 want;
};

static void
usage(void)
{
	fprintf(stderr,
	    "usage: sdps-fill -c CONF -p PUNT --hosts N --msgs M\n"
	    "                 [--big-host HOST --big-msgs K]\n"
	    "                 [--test-hosts T [--test-msgs K]]\n"
	    "                 [--order random|rr] [--seed S] [--resume] [-q]\n"
	    "  M messages spread evenly over hosts h00001." FILL_DOMAIN
	    " .. hN;\n"
	    "  T more hosts t00001." FILL_DOMAIN " .. with K messages each"
	    " (default 10);\n"
	    "  --order: arrival order shuffled (default) or round-robin;\n"
	    "  --resume: skip the messages the punt already holds (same"
	    " arguments).\n"
	    "  Run big fills under eatmydata: store_put fsyncs per message.\n");
	exit(2);
}

/* xorshift64*: small, fast and the same on every machine. */
static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static uint32_t
rnd_below(uint64_t *s, uint32_t n)
{
	return (uint32_t)((rnd_next(s) >> 32) % n);
}

static int
parse_num(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
	if (util_parse_u64(s, max, out) == -1) {
		fprintf(stderr, "sdps-fill: --%s: not a number up to %llu: "
		    "%s\n", opt, (unsigned long long)max, s);
		return -1;
	}
	return 0;
}

/*
 * A message of 300-600 octets, the same for the same (seed, n).  Some
 * body lines start with a dot so the stored file is dot-stuffed like
 * real mail.
 */
static size_t
make_message(uint64_t seed, uint64_t n, const char *host, char *buf,
    size_t cap, const char **user)
{
	static const char *const words[] = {
		"modem", "dial", "spool", "punt", "mail", "fetch", "line",
		"tariff", "night", "weekend", "customer", "router", "bill",
		"offer", "news", "invoice", "meeting", "tomorrow", "please",
		"thanks", "regards", "the", "a", "and", "of", "to", "in"
	};
	static const char *const users[] = {
		"fred", "mary", "postmaster", "sales", "info", "jo"
	};
	uint64_t	 s = seed * 0x9e3779b97f4a7c15ULL + n + 1;
	size_t		 len, target, col = 0;
	const char	*w;
	int		 k;

	rnd_next(&s);
	*user = users[rnd_below(&s, NITEMS(users))];
	target = 300 + rnd_below(&s, 301);
	k = snprintf(buf, cap,
	    "From: sender%u@example.org\n"
	    "To: %s@%s\n"
	    "Subject: scale test %llu\n"
	    "Date: Mon, 1 Jan 2001 00:00:00 +0000\n"
	    "Message-ID: <%llu.%llu@fill." FILL_DOMAIN ">\n"
	    "\n",
	    rnd_below(&s, 1000), *user, host, (unsigned long long)n,
	    (unsigned long long)seed, (unsigned long long)n);
	if (k < 0 || (size_t)k >= cap)
		return 0;
	len = (size_t)k;
	while (len < target && len + 32 < cap) {
		w = words[rnd_below(&s, NITEMS(words))];
		if (col == 0 && rnd_below(&s, 20) == 0)
			buf[len++] = '.';
		k = snprintf(buf + len, cap - len, "%s%s", col ? " " : "", w);
		len += (size_t)k;
		col += (size_t)k;
		if (col > 60) {
			buf[len++] = '\n';
			col = 0;
		}
	}
	if (col != 0)
		buf[len++] = '\n';
	return len;
}

/* The arrival order: one host index per message. */
static uint32_t *
make_order(const struct fill_host *h, size_t nh, uint64_t total,
    bool shuffle, uint64_t seed)
{
	uint32_t	*o, *left;
	uint64_t	 i, j, s = seed ^ 0x5d5d5d5dULL;
	uint32_t	 t;
	size_t		 k;
	bool		 any;

	if ((o = malloc(total * sizeof(*o))) == NULL)
		return NULL;
	if (shuffle) {
		for (i = 0, k = 0; k < nh; k++)
			for (j = 0; j < h[k].want; j++)
				o[i++] = (uint32_t)k;
		rnd_next(&s);
		for (i = total; i > 1; i--) {
			j = rnd_next(&s) % i;
			t = o[i - 1];
			o[i - 1] = o[j];
			o[j] = t;
		}
		return o;
	}
	/* Round-robin: one message per host per round while it wants more. */
	if ((left = malloc(nh * sizeof(*left))) == NULL) {
		free(o);
		return NULL;
	}
	for (k = 0; k < nh; k++)
		left[k] = h[k].want;
	for (i = 0, any = true; any; ) {
		any = false;
		for (k = 0; k < nh; k++)
			if (left[k] > 0) {
				left[k]--;
				o[i++] = (uint32_t)k;
				any = true;
			}
	}
	free(left);
	return o;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "hosts", required_argument, NULL, 'N' },
		{ "msgs", required_argument, NULL, 'M' },
		{ "big-host", required_argument, NULL, 'B' },
		{ "big-msgs", required_argument, NULL, 'K' },
		{ "test-hosts", required_argument, NULL, 'T' },
		{ "test-msgs", required_argument, NULL, 'k' },
		{ "order", required_argument, NULL, 'O' },
		{ "seed", required_argument, NULL, 'S' },
		{ "resume", no_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 }
	};
	struct config		 cf;
	const struct config_punt *cp;
	struct store_opts	 so;
	struct store		*st;
	struct store_stat	 ss;
	struct store_envelope	 env;
	struct fill_host	*hosts = NULL;
	struct wire		 w;
	const char		*conf = CONFIG_DEFAULT_PATH, *punt = NULL;
	const char		*big = NULL, *user, *rcpts[1], *pre;
	char			 err[512], sender[64], raw[1024];
	char			 bignorm[UTIL_HOST_MAX + 1];
	uint64_t		 nhosts = 0, nmsgs = 0, bigmsgs = 0, ntest = 0;
	uint64_t		 testmsgs = 10, seed = 1939, total, i, skip = 0;
	uint64_t		 id, v, stored = 0;
	uint32_t		*order;
	size_t			 nh, k, rawlen;
	double			 t0, t;
	bool			 shuffle = true, resume = false, quiet = false;
	bool			 have_msgs = false, have_hosts = false;
	int			 ch;

	while ((ch = getopt_long(argc, argv, "c:p:q", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'p':
			punt = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'N':
			if (parse_num("hosts", optarg, FILL_HOSTS_MAX,
			    &nhosts) == -1)
				return 2;
			have_hosts = true;
			break;
		case 'M':
			if (parse_num("msgs", optarg, FILL_MSGS_MAX,
			    &nmsgs) == -1)
				return 2;
			have_msgs = true;
			break;
		case 'B':
			big = optarg;
			break;
		case 'K':
			if (parse_num("big-msgs", optarg, UINT32_MAX,
			    &bigmsgs) == -1)
				return 2;
			break;
		case 'T':
			if (parse_num("test-hosts", optarg, 99999,
			    &ntest) == -1)
				return 2;
			break;
		case 'k':
			if (parse_num("test-msgs", optarg, UINT32_MAX,
			    &testmsgs) == -1)
				return 2;
			break;
		case 'O':
			if (strcmp(optarg, "random") == 0)
				shuffle = true;
			else if (strcmp(optarg, "rr") == 0)
				shuffle = false;
			else {
				fprintf(stderr, "sdps-fill: --order: random "
				    "or rr, not %s\n", optarg);
				return 2;
			}
			break;
		case 'S':
			if (parse_num("seed", optarg, UINT64_MAX, &seed) == -1)
				return 2;
			break;
		case 'R':
			resume = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || punt == NULL || !have_hosts || !have_msgs)
		usage();
	if (nhosts == 0 && nmsgs > 0) {
		fprintf(stderr, "sdps-fill: --msgs needs at least one host\n");
		return 2;
	}
	if (nhosts > 99999) {
		fprintf(stderr, "sdps-fill: --hosts: at most 99999 "
		    "(names h00001..h99999)\n");
		return 2;
	}
	if ((big == NULL) != (bigmsgs == 0)) {
		fprintf(stderr, "sdps-fill: --big-host and --big-msgs go "
		    "together\n");
		return 2;
	}
	if (big != NULL && util_host_normalize(big, bignorm) == -1) {
		fprintf(stderr, "sdps-fill: --big-host: not a host name: %s\n",
		    big);
		return 2;
	}
	if (nmsgs / (nhosts ? nhosts : 1) >= UINT32_MAX) {
		fprintf(stderr, "sdps-fill: too many messages per host\n");
		return 2;
	}

	/* Hosts: bulk, then test hosts, then the big one. */
	nh = (size_t)(nhosts + ntest + (big != NULL));
	if (nh == 0) {
		fprintf(stderr, "sdps-fill: nothing to fill\n");
		return 2;
	}
	if ((hosts = calloc(nh, sizeof(*hosts))) == NULL) {
		fprintf(stderr, "sdps-fill: out of memory\n");
		return 1;
	}
	total = 0;
	for (k = 0; k < nhosts; k++) {
		snprintf(hosts[k].name, sizeof(hosts[k].name),
		    "h%05zu." FILL_DOMAIN, k + 1);
		hosts[k].want = (uint32_t)(nmsgs / nhosts +
		    (k < nmsgs % nhosts));
	}
	for (k = 0; k < ntest; k++) {
		snprintf(hosts[nhosts + k].name, sizeof(hosts[0].name),
		    "t%05zu." FILL_DOMAIN, k + 1);
		hosts[nhosts + k].want = (uint32_t)testmsgs;
	}
	if (big != NULL) {
		snprintf(hosts[nh - 1].name, sizeof(hosts[0].name), "%s",
		    bignorm);
		hosts[nh - 1].want = (uint32_t)bigmsgs;
	}
	for (k = 0; k < nh; k++)
		total += hosts[k].want;
	if (total > FILL_MSGS_MAX) {
		fprintf(stderr, "sdps-fill: more than %llu messages\n",
		    (unsigned long long)FILL_MSGS_MAX);
		return 2;
	}

	log_init("sdps-fill", true, LOG_USER, false);
	if (config_load(conf, &cf, err, sizeof(err)) == -1) {
		fprintf(stderr, "sdps-fill: %s\n", err);
		return 1;
	}
	if ((cp = config_punt_find(&cf, punt)) == NULL) {
		fprintf(stderr, "sdps-fill: %s: no punt %s\n", conf, punt);
		return 1;
	}
	/* Leaves an existing punt of that name alone. */
	if (store_create(cp->path, cp->name, cf.store_map_size, err,
	    sizeof(err)) == -1) {
		fprintf(stderr, "sdps-fill: %s\n", err);
		return 1;
	}
	memset(&so, 0, sizeof(so));
	so.map_size = cf.store_map_size;
	so.claim_lease_s = cf.claim_lease_s;
	if ((st = store_open(cp->path, cp->name, &so, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "sdps-fill: %s\n", err);
		return 1;
	}
	if (store_stat(st, &ss) == -1) {
		fprintf(stderr, "sdps-fill: %s: cannot read the index\n",
		    cp->path);
		return 1;
	}
	if (ss.msgs > 0 && !resume) {
		fprintf(stderr, "sdps-fill: punt %s already holds %llu "
		    "messages (use --resume to continue a fill)\n", cp->name,
		    (unsigned long long)ss.msgs);
		return 1;
	}
	if (resume)
		skip = ss.msgs < total ? ss.msgs : total;
	if ((order = make_order(hosts, nh, total, shuffle, seed)) == NULL) {
		fprintf(stderr, "sdps-fill: out of memory\n");
		return 1;
	}
	pre = getenv("LD_PRELOAD");
	if (total - skip > 20000 && (pre == NULL ||
	    strstr(pre, "eatmydata") == NULL))
		fprintf(stderr, "sdps-fill: note: not under eatmydata, every "
		    "message costs several fsyncs\n");
	if (!quiet)
		fprintf(stderr, "sdps-fill: punt %s (%s): %zu hosts, %llu "
		    "messages, %llu already there, order %s, seed %llu\n",
		    cp->name, cp->path, nh, (unsigned long long)total,
		    (unsigned long long)skip, shuffle ? "random" : "rr",
		    (unsigned long long)seed);

	t0 = now_s();
	for (i = skip; i < total; i++) {
		k = order[i];
		rawlen = make_message(seed, i, hosts[k].name, raw, sizeof(raw),
		    &user);
		if (rawlen == 0) {
			fprintf(stderr, "sdps-fill: message %llu too long\n",
			    (unsigned long long)i);
			return 1;
		}
		wire_init(&w, 0);
		if (wire_feed(&w, raw, rawlen) != WIRE_OK ||
		    wire_finish(&w) != WIRE_OK) {
			fprintf(stderr, "sdps-fill: message %llu: bad wire "
			    "conversion\n", (unsigned long long)i);
			return 1;
		}
		v = i % 1000;
		snprintf(sender, sizeof(sender), "sender%llu@example.org",
		    (unsigned long long)v);
		rcpts[0] = user;
		env.host = hosts[k].name;
		env.sender = sender;
		env.rcpts = rcpts;
		env.nrcpts = 1;
		if (store_put(st, &env, w.buf, w.len, w.body_octets, &id, err,
		    sizeof(err)) != STORE_OK) {
			fprintf(stderr, "sdps-fill: message %llu for %s: %s "
			    "(%llu stored; rerun with --resume)\n",
			    (unsigned long long)i, hosts[k].name, err,
			    (unsigned long long)stored);
			wire_free(&w);
			return 1;
		}
		wire_free(&w);
		stored++;
		if (!quiet && (stored % FILL_PROGRESS == 0 || i + 1 == total)) {
			t = now_s() - t0;
			fprintf(stderr, "sdps-fill: %llu/%llu messages, "
			    "%.0f msgs/s, %.0f s elapsed, ~%.0f s left\n",
			    (unsigned long long)(i + 1),
			    (unsigned long long)total, (double)stored / t, t,
			    (double)(total - i - 1) * t / (double)stored);
		}
	}
	t = now_s() - t0;
	if (store_stat(st, &ss) == 0)
		printf("punt=%s msgs=%llu hosts=%llu stored=%llu secs=%.1f "
		    "map_used=%llu\n", cp->name, (unsigned long long)ss.msgs,
		    (unsigned long long)ss.hosts, (unsigned long long)stored,
		    t, (unsigned long long)ss.map_used);
	store_close(st);
	free(order);
	free(hosts);
	return 0;
}
