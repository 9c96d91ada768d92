/*
 * fault: SDPS_FAULT crash points (see include/sdps/fault.h).  Deliberately
 * tiny: it runs inside store commits and scoreboard writes, so it must not
 * allocate, log or take locks.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/fault.h"
#include "sdps/util.h"

#define FAULT_NAME_MAX	64

static int		 fault_state;	/* 0 unread, 1 off, 2 armed */
static char		 fault_name[FAULT_NAME_MAX];
static unsigned long	 fault_left;	/* hits until the kill */

static void
fault_init(void)
{
	const char	*v = getenv("SDPS_FAULT");
	const char	*colon;
	size_t		 len;
	uint64_t	 n = 1;

	fault_state = 1;
	if (v == NULL || *v == '\0')
		return;
	colon = strchr(v, ':');
	len = colon != NULL ? (size_t)(colon - v) : strlen(v);
	if (len == 0 || len >= sizeof(fault_name))
		return;
	if (colon != NULL &&
	    (util_parse_u64(colon + 1, UINT32_MAX, &n) != 0 || n == 0))
		return;
	memcpy(fault_name, v, len);
	fault_name[len] = '\0';
	fault_left = (unsigned long)n;
	fault_state = 2;
}

void
fault_point(const char *name)
{
	if (fault_state == 0)
		fault_init();
	if (fault_state != 2 || strcmp(name, fault_name) != 0)
		return;
	if (--fault_left == 0)
		raise(SIGKILL);
}
