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
 * skipped; the puntset logs or records why), local or remote alike
 * (docs/design.md §10.1: a random reachable punt per message).
 */

/*
 * Store the finished wire-format message w for env.  With only >= 0 just
 * that punt is tried; otherwise all punts in a fresh random order, so a
 * punt that is down or full costs a retry, not the message.  Each failure
 * of store_put is appended to why ("punt NAME: reason", "; " between
 * them; why may be NULL).  Returns STORE_OK with *idx and
 * *id set once the store is durable (store_put committed, or a remote
 * punt's punt_put answered the DELIVER with +OK, which the punt sends
 * only after its own commit), else STORE_TEMPFAIL (no punt took it).
 * Blocks on disk I/O or on the link (its per-command deadline).
 */
enum store_res deliver_store(struct puntset *ps, int only,
	    const struct store_envelope *env, const struct wire *w, int *idx, uint64_t *id, char *why, size_t whylen);

/*
 * Streaming (LMTP): open a new tmp file, for the message as it arrives,
 * for the first punt of a fresh random order that is usable.  A local
 * punt's file is in its own tmp/ (store_tmp_open; *fe_tmp false).  For a
 * remote punt (punt_local_store NULL) the file is the front end's own,
 * in run_dir/DELIVER_FE_TMP (0700, made on first use; *fe_tmp true): it
 * only holds the DATA until the punt has answered DELIVER, so it need
 * not be durable, and the caller unlinks it when done.  Returns the fd
 * (read-write, offset at the end of what is written) with *idx and path
 * set, or -1 (why says what each punt answered).
 */
#define DELIVER_FE_TMP	"lmtp-tmp"

int	deliver_tmp_open(struct puntset *ps, const char *run_dir, int *idx,
	    char *path, size_t pathlen, bool *fe_tmp, char *why,
	    size_t whylen);

/*
 * deliver_store for a message already in wire format in the fsynced file
 * src_path (src_fd), wire_len octets (store_put_file: renamed, for the
 * last copy, or linked on the same filesystem, else copied; *via says
 * which).  The punts are tried in a fresh random order, except that
 * first (if >= 0) goes first: the punt holding the file, for the first
 * host, so a single-host message is never copied and its punt is still
 * the first usable one of a random order.  A remote punt gets the
 * octets from src_fd (from offset 0) through its link, punt_put_file:
 * STORE_OK only after the punt's +OK, which it sends once the copy is
 * durable there (docs/punt-protocol.md, DELIVER); *via is COPY then.
 */
enum store_res deliver_store_file(struct puntset *ps, int first,
	    const struct store_envelope *env, const char *src_path, int src_fd, uint64_t wire_len,
	    uint64_t body_octets, int *idx, uint64_t *id, bool last,
	    enum store_via *via, char *why, size_t whylen);

/*
 * Every host's copy of one message (items[i].env, one per host) in one
 * commit on punt first, the file's own (store_put_file_batch: links for
 * all but the last, which takes src_path); a copy that fails there tries
 * the other punts alone, as deliver_store_file with first -1.  When
 * punt first is remote there is no batch: each copy is one
 * deliver_store_file with first first (one DELIVER per host).  Sets
 * items[i].res (and id, via, commit, batch) and idx[i], the punt.
 */
void	deliver_store_files(struct puntset *ps, int first,
	    struct store_item *items, int *idx, size_t n, const char *src_path,
	    int src_fd, uint64_t wire_len, uint64_t body_octets, char *why,
	    size_t whylen);

#endif
