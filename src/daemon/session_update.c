/*
 * session_update: the UPDATE state of a POP3 session (RFC 1939 §6,
 * docs/design.md §4.4): QUIT, the removal of deleted messages, and the
 * RD commit that runs however a session ends.
 */
#include <sys/types.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/conn.h"
#include "sdps/maildrop.h"
#include "sdps/punt.h"
#include "sdps/session.h"
#include "sdps/slot.h"
#include "sdps/store.h"
#include "sdps/util.h"
#include "session_int.h"

/* ---- UPDATE and the end of a session ---- */

/*
 * Commit the RD flags of messages sent in full, one commit per punt.
 * Runs before the locks go, however the session ends, so the next
 * session sees them; a session that only looked writes nothing.
 */
void
session_commit_rd(struct session *s)
{
	uint64_t	*ids;
	size_t		 i, n;
	int		 p;

	if (s->nmsgs == 0 ||
	    (ids = calloc(s->nmsgs, sizeof(*ids))) == NULL)
		return;
	for (p = 0; p < session_npunts(s); p++) {
		n = 0;
		for (i = 0; i < s->nmsgs; i++)
			if (s->msgs[i].sp == p && s->msgs[i].read_now &&
			    (s->msgs[i].flags & STORE_F_READ) == 0)
				ids[n++] = s->msgs[i].id;
		if (n == 0)
			continue;
		if (punt_mark_read(maildrop_punt(s->md, p), ids, n) != STORE_OK) {
			log_warnx("sid=%016" PRIx64 " punt=%s event=rd-failed"
			    " msgs=%zu", s->sid,
			    punt_name(maildrop_punt(s->md, p)), n);
			continue;
		}
		for (i = 0; i < s->nmsgs; i++)
			if (s->msgs[i].sp == p && s->msgs[i].read_now)
				s->msgs[i].flags |= STORE_F_READ;
	}
	free(ids);
}

/*
 * RFC 1939 §6: remove the deleted messages.  Returns how many remain.
 * Every punt's removal is started before any is waited for, so a remote
 * punt's round trip overlaps the others' (punt_remove_begin).
 */
static size_t
update_remove(struct session *s)
{
	uint64_t	*ids;
	size_t		 i, n, failed = 0, at[CONFIG_PUNT_MAX + 1];
	const char	*user = s->user[0] != '\0' ? s->user : NULL;
	int		 p, np = session_npunts(s);

	if (s->nmsgs == 0)
		return 0;
	if ((ids = calloc(s->nmsgs, sizeof(*ids))) == NULL) {
		for (i = 0; i < s->nmsgs; i++)
			failed += s->msgs[i].deleted;
		return failed;
	}
	/* Punt p's ids are ids[at[p] .. at[p + 1]). */
	for (p = 0, n = 0; p < np; p++) {
		at[p] = n;
		for (i = 0; i < s->nmsgs; i++)
			if (s->msgs[i].sp == p && s->msgs[i].deleted)
				ids[n++] = s->msgs[i].id;
	}
	at[np] = n;
	for (p = 0; p < np; p++)
		if (at[p + 1] > at[p])
			punt_remove_begin(maildrop_punt(s->md, p), ids + at[p],
			    at[p + 1] - at[p], user);
	for (p = 0; p < np; p++) {
		if ((n = at[p + 1] - at[p]) == 0)
			continue;
		if (punt_remove(maildrop_punt(s->md, p), ids + at[p], n,
		    user) != STORE_OK) {
			log_warnx("sid=%016" PRIx64 " punt=%s event=remove-failed"
			    " msgs=%zu", s->sid,
			    punt_name(maildrop_punt(s->md, p)), n);
			failed += n;
			continue;
		}
		s->n_removed += n;
		if (s->w->sb != NULL)
			atomic_fetch_add(&s->w->sb->hdr->total_deleted, n);
	}
	free(ids);
	return failed;
}

enum cmd_res
cmd_quit(struct session *s, struct conn_args *a)
{
	size_t	 failed;

	(void)a;
	if (s->state == ST_AUTH) {
		s->how = END_QUIT;
		session_ok(s, "sdps signing off");
		return CMD_CLOSE;
	}
	slot_state(s->w->slot, SB_UPDATE);
	session_commit_rd(s);
	if ((failed = update_remove(s)) > 0) {
		s->how = END_UPDATE_FAILED;
		(void)session_err(s, "SYS/TEMP", "%zu messages not removed",
		    failed);
	} else {
		s->how = END_QUIT;
		session_ok(s, "sdps signing off (%" PRIu64 " messages removed)",
		    s->n_removed);
	}
	return CMD_CLOSE;
}
