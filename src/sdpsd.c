/* sdpsd: the POP3 daemon's main(): options, config, then the master. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sdps/config.h"
#include "sdps/master.h"
#include "sdps/version.h"

/* --help: usage on stdout and 0; a bad command line: stderr and 64. */
static void __attribute__((noreturn))
usage(FILE *f, int status)
{
	fprintf(f, "usage: sdpsd [-fv] [-c config]\n"
	    "       sdpsd --help | --version\n"
	    "  -c config  configuration file (default %s)\n"
	    "  -f         stay in the foreground, log to stderr\n"
	    "  -v         log debug lines too\n", CONFIG_DEFAULT_PATH);
	exit(status);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "help",	no_argument,	NULL, 'h' },
		{ "version",	no_argument,	NULL, 'V' },
		{ NULL,		0,		NULL, 0 }
	};
	struct config	*cf;
	const char	*path = CONFIG_DEFAULT_PATH;
	char		 err[512];
	bool		 foreground = false, verbose = false;
	int		 ch;

	while ((ch = getopt_long(argc, argv, "c:fv", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			usage(stdout, 0);
		case 'V':
			printf("sdpsd (sdps) %s\n", SDPS_VERSION);
			return 0;
		default:
			usage(stderr, 64);
		}
	}
	if (optind != argc)
		usage(stderr, 64);
	if ((cf = malloc(sizeof(*cf))) == NULL) {
		perror("sdpsd: malloc");
		return 71;
	}
	/* Before detaching, so the operator sees "file:line: reason". */
	if (config_load(path, cf, err, sizeof(err)) == -1) {
		fprintf(stderr, "sdpsd: %s\n", err);
		free(cf);
		return MASTER_EX_CONFIG;
	}
	return master_run(cf, path, foreground, verbose);
}
