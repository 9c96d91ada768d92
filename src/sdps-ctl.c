/*
 * sdps-ctl: the admin CLI.  A static table maps command patterns to the
 * ctl_* verbs (smtpctl, mdb_stat); usage() is generated from the table.
 */

#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "sdps/auth.h"
#include "sdps/config.h"
#include "sdps/ctl.h"
#include "sdps/log.h"
#include "sdps/util.h"
#include "sdps/version.h"

#define EXIT_USAGE	64	/* EX_USAGE, as the other programs */

/* Options a command may take; O_* bits in struct cmd. */
enum {
	O_JSON = 0x01, O_HOST = 0x02, O_PUNT = 0x04, O_AGENT = 0x08,
	O_SLOT = 0x10, O_OLDER = 0x20, O_DRYRUN = 0x40, O_REPAIR = 0x80,
	O_ABORT = 0x100, O_BATCH = 0x200, O_PROBE = 0x400
};

static const struct {
	int		 bit;
	const char	*name;
	const char	*arg;		/* NULL: a flag */
} opt_names[] = {
	{ O_JSON,	"json",		NULL },
	{ O_HOST,	"host",		"host" },
	{ O_PUNT,	"punt",		"punt" },
	{ O_AGENT,	"agent",	"name" },
	{ O_SLOT,	"slot",		"1|2" },
	{ O_OLDER,	"older-than",	"days" },
	{ O_DRYRUN,	"dry-run",	NULL },
	{ O_REPAIR,	"repair",	NULL },
	{ O_ABORT,	"abort",	NULL },
	{ O_BATCH,	"batch",	"records" },
	{ O_PROBE,	"probe",	NULL },
};

struct cmd {
	const char	*verb;		/* literal words */
	const char	*args;		/* positional arguments, for usage */
	int		 min_args, max_args;	/* max -1: any number */
	unsigned int	 opts;		/* O_* allowed */
	unsigned int	 need;		/* O_* required */
	int		(*fn)(struct ctl *);
};

static const struct cmd cmds[] = {
	/* verb, arguments, min, max, options allowed, required, verb fn */
	{ "host add", "<host>", 1, 1, 0, 0, ctl_host_add },
	{ "host passwd", "<host>", 1, 1, O_SLOT, 0, ctl_host_passwd },
	{ "host del", "<host>", 1, 1, 0, 0, ctl_host_del },
	{ "host list", "", 0, 0, O_JSON, 0, ctl_host_list },
	{ "host set", "<host> smtp=<addr:port>", 2, 2, 0, 0, ctl_host_set },
	{ "spool ls", "", 0, 0, O_JSON | O_HOST | O_PUNT, 0, ctl_spool_ls },
	{ "spool show", "<punt:id>", 1, 1, O_JSON, 0, ctl_spool_show },
	{ "spool stat", "", 0, 0, O_JSON, 0, ctl_spool_stat },
	{ "smtp claim", "<punt:id>", 1, 1, O_AGENT, O_AGENT, ctl_smtp_claim },
	{ "smtp done", "<punt:id>", 1, 1, 0, 0, ctl_smtp_done },
	{ "smtp release", "<punt:id>", 1, 1, 0, 0, ctl_smtp_release },
	{ "sessions", "", 0, 0, O_JSON, 0, ctl_sessions },
	{ "kill", "[<session-id>]", 0, 1, O_HOST, 0, ctl_kill },
	{ "status", "", 0, 0, O_JSON | O_PROBE, 0, ctl_status },
	{ "auth flush", "[<host>]", 0, 1, 0, 0, ctl_auth_flush },
	{ "expire", "", 0, 0, O_OLDER | O_DRYRUN | O_JSON, 0, ctl_expire },
	{ "fsck", "", 0, 0, O_REPAIR, 0, ctl_fsck },
	{ "punt create", "[<punt>...]", 0, -1, 0, 0, ctl_punt_create },
	{ "punt upgrade", "<punt>...", 1, -1, O_ABORT | O_BATCH, 0,
	    ctl_punt_upgrade },
};

static void
usage(FILE *f)
{
	size_t	 i, k;

	fprintf(f, "usage: sdps-ctl [-c config] command [arguments]\n"
	    "       sdps-ctl --help | --version\n");
	for (i = 0; i < NITEMS(cmds); i++) {
		fprintf(f, "  %s", cmds[i].verb);
		if (cmds[i].args[0] != '\0')
			fprintf(f, " %s", cmds[i].args);
		for (k = 0; k < NITEMS(opt_names); k++) {
			if ((cmds[i].opts & opt_names[k].bit) == 0)
				continue;
			fprintf(f, (cmds[i].need & opt_names[k].bit) ?
			    " --%s" : " [--%s", opt_names[k].name);
			if (opt_names[k].arg != NULL)
				fprintf(f, " %s", opt_names[k].arg);
			if ((cmds[i].need & opt_names[k].bit) == 0)
				fputc(']', f);
		}
		fputc('\n', f);
	}
}

static int __attribute__((format(printf, 1, 2)))
usage_fail(const char *fmt, ...)
{
	va_list	 ap;

	fputs("sdps-ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (sdps-ctl -h for usage)\n", stderr);
	return EXIT_USAGE;
}

/*
 * How many leading words of argv the verb takes, or 0 if it does not
 * match.
 */
static int
verb_match(const char *verb, int argc, char **argv)
{
	const char	*p = verb;
	size_t		 len;
	int		 i = 0;

	while (*p != '\0') {
		len = strcspn(p, " ");
		if (i >= argc || strlen(argv[i]) != len ||
		    strncmp(argv[i], p, len) != 0)
			return 0;
		i++;
		p += len;
		p += strspn(p, " ");
	}
	return i;
}

/*
 * The options into c, *conf and *seen (O_* bits given).  -1 to go on,
 * or the exit status (--help, --version, a bad option).
 */
static int
parse_opts(int argc, char **argv, struct ctl *c, const char **conf,
    unsigned int *seen)
{
	static const struct option longopts[] = {
		{ "json",	no_argument,	   NULL, 'J' },
		{ "host",	required_argument, NULL, 'H' },
		{ "punt",	required_argument, NULL, 'P' },
		{ "agent",	required_argument, NULL, 'A' },
		{ "slot",	required_argument, NULL, 'S' },
		{ "older-than",	required_argument, NULL, 'O' },
		{ "dry-run",	no_argument,	   NULL, 'D' },
		{ "repair",	no_argument,	   NULL, 'R' },
		{ "abort",	no_argument,	   NULL, 'X' },
		{ "batch",	required_argument, NULL, 'B' },
		{ "probe",	no_argument,	   NULL, 'p' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ "version",	no_argument,	   NULL, 'V' },
		{ NULL,		0,		   NULL, 0 }
	};
	uint64_t		 v;
	int			 ch;

	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			*conf = optarg;
			break;
		case 'J':
			c->json = true;
			*seen |= O_JSON;
			break;
		case 'H':
			c->host = optarg;
			*seen |= O_HOST;
			break;
		case 'P':
			c->punt = optarg;
			*seen |= O_PUNT;
			break;
		case 'A':
			c->agent = optarg;
			*seen |= O_AGENT;
			break;
		case 'S':
			/* The range is checked here too: util_parse_u64
			 * let a digit above a one-digit max through. */
			if (util_parse_u64(optarg, 2, &v) == -1 || v < 1 ||
			    v > 2)
				return usage_fail("--slot must be 1 or 2");
			c->slot = (int)v;
			*seen |= O_SLOT;
			break;
		case 'O':
			if (util_parse_u64(optarg, 36500, &v) == -1)
				return usage_fail("--older-than: bad number "
				    "of days: %s", optarg);
			c->older_than_days = (int)v;
			*seen |= O_OLDER;
			break;
		case 'D':
			c->dry_run = true;
			*seen |= O_DRYRUN;
			break;
		case 'R':
			c->repair = true;
			*seen |= O_REPAIR;
			break;
		case 'X':
			c->abort_upgrade = true;
			*seen |= O_ABORT;
			break;
		case 'B':
			if (util_parse_u64(optarg, 1000000, &v) == -1 || v == 0)
				return usage_fail("--batch: a number of records "
				    "from 1 to 1000000: %s", optarg);
			c->batch = (unsigned)v;
			*seen |= O_BATCH;
			break;
		case 'p':
			c->probe = true;
			*seen |= O_PROBE;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("sdps-ctl (sdps) %s\n", SDPS_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	return -1;
}

/*
 * The command argv names, its arguments into c, and the options seen
 * checked against what it allows and needs.  NULL after a usage error
 * (*rc the exit status).
 */
static const struct cmd *
find_cmd(int argc, char **argv, unsigned int seen, struct ctl *c, int *rc)
{
	const struct cmd	*cmd = NULL;
	unsigned int		 bit;
	size_t			 i, k;
	int			 words = 0;

	/* The longest matching verb wins ("host add" over a bare "host"). */
	for (i = 0; i < NITEMS(cmds); i++) {
		k = (size_t)verb_match(cmds[i].verb, argc, argv);
		if ((int)k > words) {
			words = (int)k;
			cmd = &cmds[i];
		}
	}
	if (cmd == NULL) {
		*rc = usage_fail("unknown command: %s", argv[0]);
		return NULL;
	}
	c->argc = argc - words;
	c->argv = argv + words;
	if (c->argc < cmd->min_args ||
	    (cmd->max_args >= 0 && c->argc > cmd->max_args)) {
		*rc = usage_fail("usage: %s %s", cmd->verb, cmd->args);
		return NULL;
	}
	for (k = 0; k < NITEMS(opt_names); k++) {
		bit = opt_names[k].bit;
		if ((seen & bit) && !(cmd->opts & bit)) {
			*rc = usage_fail("%s: --%s does not apply",
			    cmd->verb, opt_names[k].name);
			return NULL;
		}
		if ((cmd->need & bit) && !(seen & bit)) {
			*rc = usage_fail("%s: --%s is required", cmd->verb,
			    opt_names[k].name);
			return NULL;
		}
	}
	return cmd;
}

int
main(int argc, char **argv)
{
	static struct config	 cf;
	struct ctl		 c;
	const struct cmd	*cmd;
	const char		*conf = CONFIG_DEFAULT_PATH;
	char			 err[PATH_MAX + 256];
	unsigned int		 seen = 0;
	int			 rc;

	memset(&c, 0, sizeof(c));
	c.older_than_days = -1;
	if ((rc = parse_opts(argc, argv, &c, &conf, &seen)) != -1)
		return rc;
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if ((cmd = find_cmd(argc, argv, seen, &c, &rc)) == NULL)
		return rc;

	/*
	 * Module detail goes to syslog; each verb puts the reason in its
	 * one stderr line, so the terminal does not see it twice.
	 */
	log_init("sdps-ctl", false, LOG_USER, false);
	if (config_load(conf, &cf, err, sizeof(err)) == -1)
		return ctl_fail("%s", err);
	if (auth_global_init() == -1)
		return ctl_fail("cannot initialise libsodium");
	c.cf = &cf;
	rc = cmd->fn(&c);
	if (ctl_usage_error())
		rc = EXIT_USAGE;	/* a remote punt for a local verb */
	if (fflush(stdout) == EOF || ferror(stdout)) {
		ctl_fail("write to standard output failed");
		rc = 1;
	}
	return rc;
}
