/* sdpsd: the POP3 daemon's main(): options, config, then the master. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sdps/config.h"
#include "sdps/master.h"

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: sdpsd [-fv] [-c config]\n");
	exit(64);
}

int
main(int argc, char *argv[])
{
	struct config	*cf;
	const char	*path = CONFIG_DEFAULT_PATH;
	char		 err[512];
	bool		 foreground = false, verbose = false;
	int		 ch;

	while ((ch = getopt(argc, argv, "c:fv")) != -1) {
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
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
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
