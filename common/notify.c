/*
 * The service manager's notification protocol (sd_notify(3)), written by
 * hand so the daemon needs no libsystemd: each message is one datagram of
 * "KEY=value" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
 * or an abstract name written with a leading '@'). Without $NOTIFY_SOCKET
 * every call does nothing, so a daemon run by hand is not affected.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/common.h"

/* The watchdog is pinged this many times per WATCHDOG_USEC. */
#define NOTIFY_WATCHDOG_DIVISOR	2

static struct sockaddr_un	 notify_sun;
static socklen_t		 notify_sunlen;	/* 0: no manager to tell */
static int			 notify_fd = -1;
static uint64_t			 notify_watchdog_usec;
static struct event		*notify_watchdog_ev;

static int	notify_send(const char *);
static void	notify_watchdog_cb(evutil_socket_t, short, void *);

/*
 * Read and unset $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID: the
 * children the daemon runs must not talk to the manager in its name.
 */
void
notify_init(void)
{
	const char	*sock, *usec, *pid, *errstr;
	size_t		 len;
	long long	 n;

	sock = getenv("NOTIFY_SOCKET");
	usec = getenv("WATCHDOG_USEC");
	pid = getenv("WATCHDOG_PID");
	notify_sunlen = 0;
	notify_watchdog_usec = 0;
	if (sock != NULL && (sock[0] == '/' || sock[0] == '@') &&
	    (len = strlen(sock)) < sizeof notify_sun.sun_path) {
		memset(&notify_sun, 0, sizeof notify_sun);
		notify_sun.sun_family = AF_UNIX;
		memcpy(notify_sun.sun_path, sock, len);
		/* An abstract name has no NUL at the end: the length says. */
		if (sock[0] == '@') {
			notify_sun.sun_path[0] = '\0';
			notify_sunlen = offsetof(struct sockaddr_un, sun_path) +
			    len;
		} else
			notify_sunlen = sizeof notify_sun;
	} else if (sock != NULL)
		log_warnx("NOTIFY_SOCKET=%s is neither a path nor an abstract "
		    "name: not notifying", sock);
	if (usec != NULL) {
		n = strtonum_x(usec, 1, INT64_MAX / 1000, &errstr);
		/* The watchdog is meant for this process only, if PID says. */
		if (errstr == NULL && (pid == NULL ||
		    strtonum_x(pid, 1, INT32_MAX, &errstr) == getpid()))
			notify_watchdog_usec = (uint64_t)n;
	}
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

/* Send one datagram; 0, or -1 (logged once per failure kind). */
static int
notify_send(const char *msg)
{
	if (notify_sunlen == 0)
		return (0);
	if (notify_fd == -1) {
		notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC |
		    SOCK_NONBLOCK, 0);
		if (notify_fd == -1) {
			log_warn("notify: socket");
			return (-1);
		}
	}
	/* The manager reads these at once; a full queue only loses a ping. */
	if (sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
	    (struct sockaddr *)&notify_sun, notify_sunlen) == -1) {
		if (errno != EAGAIN)
			log_warn("notify: sendto");
		return (-1);
	}
	return (0);
}

/* READY=1: the store, the listeners and the API are up. */
void
notify_ready(void)
{
	notify_send("READY=1");
}

/* RELOADING=1 while SIGHUP is handled; notify_ready() when done. */
void
notify_reloading(void)
{
	notify_send("RELOADING=1");
}

/* STOPPING=1: shutdown has begun. */
void
notify_stopping(void)
{
	notify_send("STOPPING=1");
}

/* STATUS=<text>: one line that systemctl status shows. */
void
notify_status(const char *fmt, ...)
{
	char	msg[512];
	va_list	ap;
	int	n;

	if (notify_sunlen == 0)
		return;
	memcpy(msg, "STATUS=", 7);
	va_start(ap, fmt);
	n = vsnprintf(msg + 7, sizeof msg - 7, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	/* One line: a newline would start a key of its own. */
	msg[strcspn(msg, "\n")] = '\0';
	notify_send(msg);
}

/* The loop is alive: tell the manager, and come back in half the period. */
static void
notify_watchdog_cb(evutil_socket_t fd, short events, void *arg)
{
	notify_send("WATCHDOG=1");
}

/*
 * With WATCHDOG_USEC set, ping WATCHDOG=1 from the event loop every half
 * period, so a loop that stops turning stops the pings and the manager
 * restarts the daemon. Returns the period in ms, 0 without a watchdog.
 */
int64_t
notify_watchdog_start(struct event_base *base)
{
	struct timeval	tv;
	uint64_t	every;

	if (notify_watchdog_usec == 0 || notify_watchdog_ev != NULL)
		return (0);
	every = notify_watchdog_usec / NOTIFY_WATCHDOG_DIVISOR;
	if (every == 0)
		every = 1;
	tv.tv_sec = (time_t)(every / 1000000);
	tv.tv_usec = (suseconds_t)(every % 1000000);
	notify_watchdog_ev = event_new(base, -1, EV_PERSIST,
	    notify_watchdog_cb, NULL);
	if (notify_watchdog_ev == NULL || event_add(notify_watchdog_ev,
	    &tv) == -1)
		fatalx("notify: cannot add the watchdog timer");
	notify_send("WATCHDOG=1");
	return ((int64_t)(every / 1000));
}

/* Stop pinging and close the socket (before the event base goes). */
void
notify_free(void)
{
	if (notify_watchdog_ev != NULL) {
		event_free(notify_watchdog_ev);
		notify_watchdog_ev = NULL;
	}
	if (notify_fd != -1) {
		close(notify_fd);
		notify_fd = -1;
	}
}
