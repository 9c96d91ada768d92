/*
 * slot: every write a worker or a session makes to its own scoreboard
 * slot, each a named setter that does its writes inside the slot's
 * seqlock (sb_slot_write_begin/end), so sdps-ctl never reads a torn
 * slot.  Every setter takes a NULL slot and then does nothing (unit
 * tests and the fuzz target run sessions without one).  No setter
 * fails.  The scoreboard's own primitives (sb_slot_command, the hash
 * gate sb_auth_enter/leave) stay in scoreboard.h.
 */
#ifndef SDPS_SLOT_H
#define SDPS_SLOT_H

#include <stdbool.h>
#include <stdint.h>

#include "sdps/scoreboard.h"

/* A new connection from peer, numbered sid, in state (SB_AUTH, SB_LMTP),
 * at now_us: strings wiped, counters zeroed. */
void	slot_connect(struct sb_slot *sl, uint32_t state, uint64_t sid,
	    const char *peer, uint64_t now_us);

/* Logged in to maildrop at login_us, using the punts of mask punts_used
 * (bits are config punt indexes): state SB_TRANS. */
void	slot_login(struct sb_slot *sl, const char *maildrop,
	    uint64_t login_us, uint32_t punts_used);

void	slot_state(struct sb_slot *sl, uint32_t state);

/* The connection now runs TLS: desc is conn_tls_describe's text, ktls
 * whether kernel TLS carries it (issue 10). */
void	slot_tls(struct sb_slot *sl, const char *desc, bool ktls);

/* The session's counters so far. */
void	slot_counters(struct sb_slot *sl, uint64_t retr, uint64_t top,
	    uint64_t dele, uint64_t octets_out);

/* The session is over: its final counters, state SB_IDLE, no session id,
 * maildrop or command (the peer stays until slot_idle). */
void	slot_session_end(struct sb_slot *sl, uint64_t retr, uint64_t top,
	    uint64_t dele, uint64_t octets_out);

/* Idle between connections at now_us: strings wiped (whole arrays),
 * counters zeroed; served counts one more session served. */
void	slot_idle(struct sb_slot *sl, bool served, uint64_t now_us);

#endif
