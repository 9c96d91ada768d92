/*
 * log: the OpenSMTPD-shaped logger every sdps program uses: syslog for the
 * daemon, stderr lines "ident[pid]: proc: msg" in the foreground.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "sdps/log.h"

#define LOG_LINE_MAX	2048

static const char	*log_ident = "sdps";
static const char	*log_proc;
static bool		 log_foreground = true;
static bool		 log_verbose;
static pid_t		 log_pid;	/* 0: not known in this process */

/*
 * The pid of the "ident[pid]" prefix, asked once per process and not once
 * per line (3 getpid(2) a POP3 session).  A fork child forgets it (the
 * atfork handler), so a worker never logs its master's pid.
 */
static void
log_pid_forget(void)
{
	log_pid = 0;
}

static pid_t
log_getpid(void)
{
	static bool	 registered;

	if (!registered) {
		(void)pthread_atfork(NULL, NULL, log_pid_forget);
		registered = true;
	}
	if (log_pid == 0)
		log_pid = getpid();
	return log_pid;
}

void
log_init(const char *ident, bool foreground, int facility, bool verbose)
{
	log_ident = ident != NULL ? ident : "sdps";
	log_foreground = foreground;
	log_verbose = verbose;
	if (!foreground) {
		closelog();
		openlog(log_ident, LOG_PID | LOG_NDELAY, facility);
	}
}

void
log_setproc(const char *proc)
{
	log_proc = proc;
}

static void __attribute__((format(printf, 2, 0)))
log_vwrite(int pri, const char *fmt, va_list ap, const char *errstr)
{
	char	 msg[LOG_LINE_MAX];
	char	 line[LOG_LINE_MAX + 128];
	int	 saved = errno;
	int	 n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_foreground) {
		/* One write(2) per line keeps lines whole across processes. */
		n = snprintf(line, sizeof(line), "%s[%ld]: %s%s%s%s%s\n",
		    log_ident, (long)log_getpid(),
		    log_proc != NULL ? log_proc : "",
		    log_proc != NULL ? ": " : "", msg,
		    errstr != NULL ? ": " : "", errstr != NULL ? errstr : "");
		if (n > 0) {
			if ((size_t)n >= sizeof(line)) {
				n = (int)sizeof(line) - 1;
				line[n - 1] = '\n';
			}
			(void)!write(STDERR_FILENO, line, (size_t)n);
		}
	} else if (log_proc != NULL)
		syslog(pri, "%s: %s%s%s", log_proc, msg,
		    errstr != NULL ? ": " : "", errstr != NULL ? errstr : "");
	else
		syslog(pri, "%s%s%s", msg,
		    errstr != NULL ? ": " : "", errstr != NULL ? errstr : "");
	errno = saved;
}

void
log_warn(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vwrite(LOG_WARNING, fmt, ap, strerror(saved));
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_WARNING, fmt, ap, NULL);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_INFO, fmt, ap, NULL);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	 ap;

	if (!log_verbose)
		return;
	va_start(ap, fmt);
	log_vwrite(LOG_DEBUG, fmt, ap, NULL);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vwrite(LOG_CRIT, fmt, ap, strerror(saved));
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_CRIT, fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
