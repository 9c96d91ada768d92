/*
 * deliver: store one incoming message for one host on a punt, the choice
 * shared by every way mail comes in (sdps-deliver, LMTP): a random punt
 * per message, skipping punts that are down or refuse the message.
 *
 * Error convention: enum store_res (STORE_OK or STORE_TEMPFAIL) for a
 * store, an fd or -1 for a tmp file; the reasons are appended to the
 * caller's why buffer (util_why), not logged, since the caller words them.
 */
#ifndef SDPS_DELIVER_H
#define SDPS_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/store.h"
#include "sdps/wire.h"

struct puntset;

/*
 * The punts come from ps (puntset_get: a punt that is unusable is
 * skipped; the puntset logs or records why).  The tmp-file functions
 * need a local punt (punt_local_store) and skip any other.
 */

/*
 * Store the finished wire-format message w for env.  With only >= 0 just
 * that punt is tried; otherwise all punts in a fresh random order, so a
 * punt that is down or full costs a retry, not the message.  Each failure
 * of store_put is appended to why ("punt NAME: reason", "; " between
 * them; why may be NULL).  Returns STORE_OK with *idx and
 * *id set once the store is durable (store_put committed), else
 * STORE_TEMPFAIL (no punt took it).  Blocks on disk I/O.
 */
enum store_res deliver_store(struct puntset *ps, int only,
	    const struct store_envelope *env, const struct wire *w, int *idx, uint64_t *id, char *why, size_t whylen);

/*
 * Streaming (LMTP): open a new tmp file, for the message as it arrives,
 * on the first punt of a fresh random order that is usable and takes it
 * (store_tmp_open).  Returns the fd with *idx and path set, or -1 (why
 * says what each punt answered).
 */
int	deliver_tmp_open(struct puntset *ps, int *idx, char *path,
	    size_t pathlen, char *why, size_t whylen);

/*
 * deliver_store for a message already in wire format in the fsynced file
 * src_path (src_fd), wire_len octets (store_put_file: renamed, for the
 * last copy, or linked on the same filesystem, else copied; *via says
 * which).  The punts are tried in a fresh random order, except that
 * first (if >= 0) goes first: the punt holding the file, for the first
 * host, so a single-host message is never copied and its punt is still
 * the first usable one of a random order.
 */
enum store_res deliver_store_file(struct puntset *ps, int first,
	    const struct store_envelope *env, const char *src_path, int src_fd, uint64_t wire_len,
	    uint64_t body_octets, int *idx, uint64_t *id, bool last,
	    enum store_via *via, char *why, size_t whylen);

/*
 * Every host's copy of one message (items[i].env, one per host) in one
 * commit on punt first, the file's own (store_put_file_batch: links for
 * all but the last, which takes src_path); a copy that fails there tries
 * the other punts alone, as deliver_store_file with first -1.  Sets
 * items[i].res (and id, via, commit, batch) and idx[i], the punt.
 */
void	deliver_store_files(struct puntset *ps, int first,
	    struct store_item *items, int *idx, size_t n, const char *src_path,
	    int src_fd, uint64_t wire_len, uint64_t body_octets, char *why,
	    size_t whylen);

#endif
