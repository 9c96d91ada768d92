/*
 * deliver: store one incoming message for one host on a punt, the choice
 * shared by every way mail comes in (sdps-deliver, LMTP): a random punt
 * per message, skipping punts that are down or refuse the message.
 */
#ifndef SDPS_DELIVER_H
#define SDPS_DELIVER_H

#include <stddef.h>
#include <stdint.h>

#include "sdps/store.h"
#include "sdps/wire.h"

/*
 * Punt idx of the config, ready to store into, or NULL when unusable (the
 * callback records or logs why; deliver_store just skips the punt).
 */
typedef struct store *deliver_punt_fn(void *arg, int idx);

/*
 * Store the finished wire-format message w for env.  With only >= 0 just
 * that punt is tried; otherwise all npunts in a fresh random order, so a
 * punt that is down or full costs a retry, not the message.  Each failure
 * of store_put is appended to why ("punt NAME: reason", "; " between
 * them; why may be NULL).  Returns STORE_OK with *idx and
 * *id set once the store is durable (store_put committed), else
 * STORE_TEMPFAIL (no punt took it).  Blocks on disk I/O.
 */
enum store_res deliver_store(deliver_punt_fn *get, void *arg, int npunts,
	    int only, const struct store_envelope *env, const struct wire *w,
	    int *idx, uint64_t *id, char *why, size_t whylen);

/* Append one "; "-separated reason to why (whylen octets). */
void	deliver_why(char *why, size_t whylen, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

#endif
