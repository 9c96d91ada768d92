/*
 * ctl: the verbs of sdps-ctl.  sdps-ctl.c parses the command line into a
 * struct ctl and calls one of these; each returns the exit status (0 ok,
 * 1 failure with one line on stderr).  They use the same store, auth and
 * scoreboard code as the daemon, never a private copy.
 *
 * Error convention: every verb returns the exit status, 0 or 1 with one
 * line on stderr (ctl_fail); module detail goes to syslog.
 */
#ifndef SDPS_CTL_H
#define SDPS_CTL_H

#include <stdbool.h>
#include <stdio.h>

#include "sdps/config.h"

struct ctl {
	const struct config *cf;
	bool	 json;		/* --json */
	int	 argc;		/* positional arguments after the verb */
	char	**argv;
	const char *host;	/* --host, or NULL */
	const char *punt;	/* --punt, or NULL */
	const char *agent;	/* --agent, or NULL */
	int	 slot;		/* --slot, 0 when absent */
	int	 older_than_days; /* --older-than, -1 when absent */
	bool	 dry_run;	/* --dry-run */
	bool	 repair;	/* --repair */
	bool	 abort_upgrade;	/* --abort */
	unsigned batch;		/* --batch, 0 when absent */
	bool	 probe;		/* --probe (status) */
};

/* Write s as a JSON string literal (quotes and escapes) to f. */
void	ctl_json_str(FILE *f, const char *s);

/* Print "sdps-ctl: " fmt "\n" to stderr and return 1. */
int	ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A verb refused a remote punt (ctl_remote.c: "punt X is remote: run
 * this on its punt server"): sdps-ctl then exits as for a usage error.
 */
bool	ctl_usage_error(void);

/* ctl_store.c */
int	ctl_host_add(struct ctl *c);		/* host add HOST */
int	ctl_host_passwd(struct ctl *c);		/* host passwd HOST [--slot] */
int	ctl_host_del(struct ctl *c);		/* host del HOST */
int	ctl_host_list(struct ctl *c);		/* host list */
int	ctl_host_set(struct ctl *c);		/* host set HOST smtp=ADDR:PORT */
int	ctl_spool_ls(struct ctl *c);		/* spool ls [--host] [--punt] */
int	ctl_spool_show(struct ctl *c);		/* spool show PUNT:ID */
int	ctl_spool_stat(struct ctl *c);		/* spool stat */
int	ctl_smtp_claim(struct ctl *c);		/* smtp claim PUNT:ID --agent */
int	ctl_smtp_done(struct ctl *c);		/* smtp done PUNT:ID */
int	ctl_smtp_release(struct ctl *c);	/* smtp release PUNT:ID */
int	ctl_fsck(struct ctl *c);		/* fsck [--repair] */
int	ctl_punt_create(struct ctl *c);		/* punt create [NAME...] */
int	ctl_punt_upgrade(struct ctl *c);	/* punt upgrade PUNT... [--abort] */

/* ctl_daemon.c */
int	ctl_sessions(struct ctl *c);		/* sessions */
int	ctl_kill(struct ctl *c);		/* kill SESSION_ID | --host */
int	ctl_status(struct ctl *c);		/* status [--probe] */
int	ctl_auth_flush(struct ctl *c);		/* auth flush */

/* ctl_expire.c */
int	ctl_expire(struct ctl *c);		/* expire [--older-than] [--dry-run] */

#endif
