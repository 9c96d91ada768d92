/* deliver: the punt choice for a new message, shared by sdps-deliver and
 * the LMTP session (docs/design.md §10.1: a random punt per message). */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdps/config.h"
#include "sdps/deliver.h"

void
deliver_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 len;

	if (why == NULL || whylen == 0)
		return;
	len = strnlen(why, whylen);
	if (len > 0 && len + 2 < whylen) {
		memcpy(why + len, "; ", 3);
		len += 2;
	}
	if (len + 1 >= whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why + len, whylen - len, fmt, ap);
	va_end(ap);
}

enum store_res
deliver_store(deliver_punt_fn *get, void *arg, int npunts, int only,
    const struct store_envelope *env, const struct wire *w, int *idx,
    uint64_t *id, char *why, size_t whylen)
{
	struct store	*st;
	enum store_res	 res;
	char		 err[256];
	int		 order[CONFIG_PUNT_MAX], n, i, j, t;

	if (npunts > CONFIG_PUNT_MAX)
		npunts = CONFIG_PUNT_MAX;
	if (only >= 0) {
		if (only >= npunts)
			return STORE_TEMPFAIL;
		order[0] = only;
		n = 1;
	} else {
		n = npunts;
		for (i = 0; i < n; i++)
			order[i] = i;
		/* Fisher-Yates: every order equally likely, so load and
		 * the damage of a failing punt spread evenly. */
		for (i = n - 1; i > 0; i--) {
			j = (int)arc4random_uniform((uint32_t)i + 1);
			t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}
	for (i = 0; i < n; i++) {
		if ((st = get(arg, order[i])) == NULL)
			continue;	/* get() said why */
		err[0] = '\0';
		res = store_put(st, env, w->buf, w->len, w->body_octets, id,
		    err, sizeof(err));
		if (res == STORE_OK) {
			*idx = order[i];
			return STORE_OK;
		}
		deliver_why(why, whylen, "punt %s: %s", store_name(st),
		    err[0] != '\0' ? err : res == STORE_PERMFAIL ?
		    "permanent failure" : "temporary failure");
	}
	return STORE_TEMPFAIL;
}
