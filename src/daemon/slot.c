/*
 * slot: the named writes to a worker's own scoreboard slot (slot.h).
 * Each is one seqlock section, so a reader sees either all or none of
 * one setter's fields.
 */
#include <stdio.h>

#include "sdps/scoreboard.h"
#include "sdps/slot.h"

/* Inside the seqlock. */
static void
slot_zero_counters(struct sb_slot *sl)
{
	sl->login_us = 0;
	sl->retr = sl->top = sl->dele = sl->octets_out = 0;
	sl->punts_used = 0;
}

/* Inside the seqlock. */
static void
slot_put_counters(struct sb_slot *sl, uint64_t retr, uint64_t top,
    uint64_t dele, uint64_t octets_out)
{
	sl->retr = retr;
	sl->top = top;
	sl->dele = dele;
	sl->octets_out = octets_out;
}

void
slot_connect(struct sb_slot *sl, uint32_t state, uint64_t sid,
    const char *peer, uint64_t now_us)
{
	if (sl == NULL)
		return;
	sb_slot_write_begin(sl);
	sl->state = state;
	sl->session_id = sid;
	sb_slot_wipe_strings(sl);
	snprintf(sl->peer, sizeof(sl->peer), "%s", peer);
	sl->started_us = now_us;
	sl->last_us = now_us;
	slot_zero_counters(sl);
	sb_slot_write_end(sl);
}

void
slot_tls(struct sb_slot *sl, const char *desc, bool ktls)
{
	if (sl == NULL)
		return;
	sb_slot_write_begin(sl);
	snprintf(sl->tls, sizeof(sl->tls), "%s%s", desc, ktls ? " ktls" : "");
	sb_slot_write_end(sl);
}

void
slot_login(struct sb_slot *sl, const char *maildrop, uint64_t login_us,
    uint32_t punts_used)
{
	if (sl == NULL)
		return;
	sb_slot_write_begin(sl);
	sl->state = SB_TRANS;
	snprintf(sl->maildrop, sizeof(sl->maildrop), "%s", maildrop);
	sl->login_us = login_us;
	sl->punts_used = punts_used;
	sb_slot_write_end(sl);
}

void
slot_state(struct sb_slot *sl, uint32_t state)
{
	if (sl == NULL)
		return;
	sb_slot_write_begin(sl);
	sl->state = state;
	sb_slot_write_end(sl);
}

void
slot_counters(struct sb_slot *sl, uint64_t retr, uint64_t top,
    uint64_t dele, uint64_t octets_out)
{
	if (sl == NULL)
		return;
	sb_slot_write_begin(sl);
	slot_put_counters(sl, retr, top, dele, octets_out);
	sb_slot_write_end(sl);
}

void
slot_session_end(struct sb_slot *sl, uint64_t retr, uint64_t top,
    uint64_t dele, uint64_t octets_out)
{
	if (sl == NULL)
		return;
	sb_slot_write_begin(sl);
	slot_put_counters(sl, retr, top, dele, octets_out);
	sl->state = SB_IDLE;
	sl->session_id = 0;
	sl->maildrop[0] = '\0';
	sl->command[0] = '\0';
	sl->login_us = 0;
	sl->punts_used = 0;
	sb_slot_write_end(sl);
}

void
slot_idle(struct sb_slot *sl, bool served, uint64_t now_us)
{
	if (sl == NULL)
		return;
	sb_slot_write_begin(sl);
	sl->state = SB_IDLE;
	sl->session_id = 0;
	/* Whole arrays, not the first byte: the file must not keep the
	 * last session's peer, maildrop or command (issue 8, finding 10). */
	sb_slot_wipe_strings(sl);
	sl->last_us = now_us;
	slot_zero_counters(sl);
	if (served)
		sl->sessions_served++;
	sb_slot_write_end(sl);
}
