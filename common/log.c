/*
 * Logging: one logfmt line per event on stderr.
 *   ts=2026-11-27T10:00:00.123Z level=info msg="text" key=value
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"

/* The last warnings, for "sandboxd status"; a ring, oldest overwritten. */
#define LOG_RECENT	8
#define LOG_RECENT_LEN	512

static enum log_level	log_min_level = LOG_LEVEL_INFO;
static char		log_recent_lines[LOG_RECENT][LOG_RECENT_LEN];
static size_t		log_recent_next;	/* lines written, ever */

static void	log_emit(const char *, const char *, const char *, va_list)
		    SBX_PRINTF(3, 0);

/* Set the lowest level that is written; lower levels are dropped. */
void
log_init(enum log_level min_level)
{
	log_min_level = min_level;
}

/*
 * Format and write one line. The message text up to the first tab becomes
 * msg="..." (quoted, escaped); the rest is appended as key=value pairs.
 * extra, when non-NULL, is an error text appended to the message.
 */
static void
log_emit(const char *level, const char *extra, const char *fmt, va_list ap)
{
	char		 msg[4096], ts[96], line[8192];
	const char	*p, *tab;
	struct timespec	 tv;
	struct tm	 tm;
	size_t		 n = 0;
	int		 saved_errno = errno;

	vsnprintf(msg, sizeof msg, fmt, ap);

	clock_gettime(CLOCK_REALTIME, &tv);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, tv.tv_nsec / 1000000);

	n = (size_t)snprintf(line, sizeof line, "ts=%s level=%s msg=\"", ts,
	    level);
	tab = strchr(msg, '\t');
	/* Leave room for the escape, the closing quote, pairs and newline. */
	for (p = msg; *p != '\0' && p != tab && n < sizeof line - 16; p++) {
		switch (*p) {
		case '"':
		case '\\':
			line[n++] = '\\';
			line[n++] = *p;
			break;
		case '\n':
			line[n++] = '\\';
			line[n++] = 'n';
			break;
		case '\r':
			line[n++] = '\\';
			line[n++] = 'r';
			break;
		default:
			line[n++] = *p;
			break;
		}
	}
	if (extra != NULL) {
		for (p = ": "; *p != '\0' && n < sizeof line - 16; p++)
			line[n++] = *p;
		for (p = extra; *p != '\0' && n < sizeof line - 16; p++) {
			if (*p == '"' || *p == '\\')
				line[n++] = '\\';
			line[n++] = *p;
		}
	}
	line[n++] = '"';
	if (tab != NULL) {
		line[n++] = ' ';
		for (p = tab + 1; *p != '\0' && n < sizeof line - 2; p++)
			line[n++] = (*p == '\n') ? ' ' : *p;
	}
	line[n++] = '\n';

	if (strcmp(level, "warn") == 0)
		snprintf(log_recent_lines[log_recent_next++ % LOG_RECENT],
		    LOG_RECENT_LEN, "%.*s", (int)(n - 1), line);

	/* One write per line so concurrent processes do not interleave. */
	fwrite(line, 1, n, stderr);
	fflush(stderr);
	errno = saved_errno;
}

/*
 * The last warnings logged (up to max, at most 8), oldest first: pointers
 * to static lines, valid until the next warning.
 */
size_t
log_recent(const char **lines, size_t max)
{
	size_t	have, first, i;

	have = log_recent_next < LOG_RECENT ? log_recent_next : LOG_RECENT;
	if (max < have)
		have = max;
	first = log_recent_next - have;
	for (i = 0; i < have; i++)
		lines[i] = log_recent_lines[(first + i) % LOG_RECENT];
	return (have);
}

/* Log detail meant for debugging only. */
void
log_debug(const char *fmt, ...)
{
	va_list	ap;

	if (log_min_level > LOG_LEVEL_DEBUG)
		return;
	va_start(ap, fmt);
	log_emit("debug", NULL, fmt, ap);
	va_end(ap);
}

/* Log a normal event. */
void
log_info(const char *fmt, ...)
{
	va_list	ap;

	if (log_min_level > LOG_LEVEL_INFO)
		return;
	va_start(ap, fmt);
	log_emit("info", NULL, fmt, ap);
	va_end(ap);
}

/* Log a problem, with the text of errno. */
void
log_warn(const char *fmt, ...)
{
	va_list	ap;
	int	saved_errno = errno;

	va_start(ap, fmt);
	log_emit("warn", strerror(saved_errno), fmt, ap);
	va_end(ap);
	errno = saved_errno;
}

/* Log a problem. */
void
log_warnx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_emit("warn", NULL, fmt, ap);
	va_end(ap);
}

/* Log a fatal error with the text of errno and exit. */
void
fatal(const char *fmt, ...)
{
	va_list	ap;
	int	saved_errno = errno;

	va_start(ap, fmt);
	log_emit("fatal", strerror(saved_errno), fmt, ap);
	va_end(ap);
	exit(1);
}

/* Log a fatal error and exit. */
void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_emit("fatal", NULL, fmt, ap);
	va_end(ap);
	exit(1);
}
