/* config_int: what config.c and config_punt.c share (not public). */
#ifndef SDPS_CONFIG_INT_H
#define SDPS_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "sdps/config.h"

bool	config_is_abs_path(const char *s, size_t max);
bool	config_is_inet_addr(const char *s);
bool	config_is_punt_name(const char *s, size_t len);

/*
 * One key of a [punt NAME] section into pt; *seen collects which keys
 * were set (for duplicates and config_punt_check).  -1 with why set.
 */
int	config_punt_key(struct config_punt *pt, unsigned *seen,
	    const char *name, const char *value, char *why, size_t whylen);

/* After the file: punt i is local (path) or remote (address and its TLS
 * files), never both.  -1 with why set. */
int	config_punt_check(struct config *cf, int i, unsigned seen, char *why,
	    size_t whylen);

/* The first punt_listen line that cannot be served (why set), or -1. */
int	config_punt_listeners(const struct config *cf, char *why,
	    size_t whylen);

#endif
