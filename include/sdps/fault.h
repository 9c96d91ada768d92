/*
 * fault: deterministic crash points for the tests.  A test sets
 * SDPS_FAULT=NAME or SDPS_FAULT=NAME:N in a process's environment; the
 * N-th time (default the first) that process reaches fault_point(NAME) it
 * kills itself with SIGKILL, exactly there.  So every crash point is hit
 * on purpose, on every run, whatever the machine's speed, instead of
 * hoping that a timed kill lands between two steps.
 *
 * Without SDPS_FAULT a point costs one branch.  The variable is read once
 * per process (after fork, a child keeps its parent's reading and hit
 * counts).  Point names are listed in docs/design.md ("Fault injection").
 */
#ifndef SDPS_FAULT_H
#define SDPS_FAULT_H

void	fault_point(const char *name);

#endif
