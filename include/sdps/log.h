/*
 * log: one logger for every binary: syslog, or stderr in the foreground.
 *
 * Error convention: none; logging never fails the caller (errno is
 * preserved) and fatal/fatalx do not return.
 */
#ifndef SDPS_LOG_H
#define SDPS_LOG_H

#include <stdbool.h>

/*
 * Start logging.  foreground: stderr, else syslog with the given facility
 * (LOG_MAIL for the daemon).  ident names the program.  verbose enables
 * log_debug.  May be called again (after fork, on reload).
 */
void	log_init(const char *ident, bool foreground, int facility, bool verbose);

/* Name this process in every line: "master", "worker 7". */
void	log_setproc(const char *proc);

/* log_warn appends ": strerror(errno)"; the others log the text as is.
 * All preserve errno. */
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Log and exit(1): start-up and "cannot happen" paths only. */
void	fatal(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

#endif
