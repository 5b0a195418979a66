/*
 * Disk ceilings, measured. A template's `disk` bounds what a sandbox keeps
 * on the host: its workspace and its home (the root filesystem is
 * read-only and /tmp is a tmpfs counted in its memory). This host's ext4
 * has no project quotas, so the daemon measures: on a timer, one `du`
 * child over the running sandboxes' directories (never on the loop: a
 * workspace can hold millions of files), its answer read from a pipe. A
 * sandbox over its ceiling is stopped with an error that says why, and is
 * not woken again (reaper_admit refuses it) until a measurement finds its
 * files back under the ceiling: the next tick, or the user's own start.
 */
#include "config.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "control/control_int.h"

/* A du that takes longer than this is killed (its own alarm). */
#define DISK_SCAN_MAX_S		600
/* du prints a line per directory; more than this is not ours. */
#define DISK_OUT_MAX		(16 * 1024 * 1024)

/* One du child and what it measures. */
struct disk_scan {
	struct control	*ctl;
	size_t		 n;
	char		(*ids)[ID_LEN + 1];
	int64_t		*used;		/* bytes; -1: not measured */
	char		*list;		/* NUL-separated paths for du */
	size_t		 listlen;
	int		 fd;		/* du's stdout */
	struct event	*ev;
	struct evbuffer	*out;
	int		 eof;
	int		 exited;
	int		 status;
	disk_measured_cb cb;
	void		*arg;
	LIST_ENTRY(disk_scan) entry;
};

/* The state of this file, on struct control. */
struct disk {
	struct event	*timer;
	struct disk_scan *tick;		/* the timer's scan in flight */
	LIST_HEAD(, disk_scan) scans;
};

/* What the timer's stop carries to its answer. */
struct disk_stop {
	char	 id[ID_LEN + 1];
	char	*msg;
};

static void	 disk_timer_arm(struct control *);
static void	 disk_timer_cb(evutil_socket_t, short, void *);
static struct disk_scan *disk_scan_new(struct control *, size_t,
		    disk_measured_cb, void *);
static void	 disk_scan_add(struct disk_scan *, const char *);
static int	 disk_scan_run(struct disk_scan *);
static int	 disk_exec(void *);
static void	 disk_read_cb(evutil_socket_t, short, void *);
static void	 disk_exit_cb(int, void *);
static void	 disk_scan_done(struct disk_scan *);
static void	 disk_scan_free(struct disk_scan *);
static void	 disk_tick_cb(struct control *, size_t, char (*)[ID_LEN + 1],
		    const int64_t *, void *);
static void	 disk_enforce(struct control *, struct sandbox_rt *, int64_t);
static void	 disk_stopped_cb(struct control *, const char *, int,
		    const char *, void *);
static void	 disk_mib(int64_t, char *, size_t);

/* Set up the timer (if disk_check_interval is not 0). */
void
disk_init(struct control *ctl)
{
	struct disk	*dk;

	dk = xcalloc(1, sizeof *dk);
	LIST_INIT(&dk->scans);
	dk->timer = evtimer_new(ctl->base, disk_timer_cb, ctl);
	ctl->disk = dk;
	disk_timer_arm(ctl);
}

/* Free the timer and any scan in flight (its child is left to finish). */
void
disk_free(struct control *ctl)
{
	struct disk		*dk = ctl->disk;
	struct disk_scan	*sc;

	if (dk == NULL)
		return;
	while ((sc = LIST_FIRST(&dk->scans)) != NULL)
		disk_scan_free(sc);
	event_free(dk->timer);
	free(dk);
	ctl->disk = NULL;
}

/* 1 if a stored error is the one a disk stop leaves. */
int
disk_error_is(const char *error)
{
	return (error != NULL && strncmp(error, DISK_ERROR_PREFIX,
	    strlen(DISK_ERROR_PREFIX)) == 0);
}

/* Measure one sandbox now (an explicit start): cb gets its bytes, or -1. */
int
disk_measure(struct control *ctl, const char *id, disk_measured_cb cb,
    void *arg)
{
	struct disk_scan	*sc;

	sc = disk_scan_new(ctl, 1, cb, arg);
	disk_scan_add(sc, id);
	if (disk_scan_run(sc) == -1) {
		disk_scan_free(sc);
		return (-1);
	}
	return (0);
}

static void
disk_timer_arm(struct control *ctl)
{
	int64_t		ms = ctl->cf->disk_check_interval_ms;
	struct timeval	tv;

	if (ms <= 0)
		return;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(ctl->disk->timer, &tv);
}

/*
 * Each tick: the running sandboxes with a ceiling, and the stopped ones
 * held back for their disk (to learn when they fit again), in one du. A
 * tick whose last scan still runs is skipped.
 */
static void
disk_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct control		*ctl = arg;
	struct disk		*dk = ctl->disk;
	struct disk_scan	*sc;
	struct sandbox_rt	*rt;
	size_t			 i, n = 0;

	disk_timer_arm(ctl);
	if (dk->tick != NULL) {
		log_debug("disk check still running; tick skipped");
		return;
	}
	for (i = 0; i < RT_BUCKETS; i++) {
		LIST_FOREACH(rt, &ctl->rts[i], entry) {
			if (rt->disk_over || (rt->state == SANDBOX_RUNNING &&
			    rt->tmpl != NULL && rt->tmpl->disk > 0))
				n++;
		}
	}
	if (n == 0)
		return;
	sc = disk_scan_new(ctl, n, disk_tick_cb, NULL);
	for (i = 0; i < RT_BUCKETS; i++) {
		LIST_FOREACH(rt, &ctl->rts[i], entry) {
			if (rt->disk_over || (rt->state == SANDBOX_RUNNING &&
			    rt->tmpl != NULL && rt->tmpl->disk > 0))
				disk_scan_add(sc, rt->id);
		}
	}
	if (disk_scan_run(sc) == -1) {
		disk_scan_free(sc);
		return;
	}
	dk->tick = sc;
}

/* A scan for up to n sandboxes. */
static struct disk_scan *
disk_scan_new(struct control *ctl, size_t n, disk_measured_cb cb, void *arg)
{
	struct disk_scan	*sc;

	sc = xcalloc(1, sizeof *sc);
	sc->ctl = ctl;
	sc->ids = xcalloc(n, sizeof *sc->ids);
	sc->used = xcalloc(n, sizeof *sc->used);
	sc->fd = -1;
	sc->cb = cb;
	sc->arg = arg;
	LIST_INSERT_HEAD(&ctl->disk->scans, sc, entry);
	return (sc);
}

/* Its workspace and home go on du's list. */
static void
disk_scan_add(struct disk_scan *sc, const char *id)
{
	static const char	*dirs[] = { "workspaces", "homes" };
	char			*path;
	size_t			 i, len;

	snprintf(sc->ids[sc->n], sizeof sc->ids[sc->n], "%s", id);
	sc->used[sc->n] = -1;
	sc->n++;
	for (i = 0; i < nitems(dirs); i++) {
		path = control_sandbox_dir(sc->ctl, dirs[i], id);
		len = strlen(path) + 1;
		sc->list = xrealloc(sc->list, sc->listlen + len);
		memcpy(sc->list + sc->listlen, path, len);
		sc->listlen += len;
		free(path);
	}
}

/* Fork du with the list on its stdin and its stdout on a pipe. */
static int
disk_scan_run(struct disk_scan *sc)
{
	int	fds[2];

	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == -1) {
		log_warn("disk check: pipe");
		return (-1);
	}
	sc->fd = fds[1];	/* the child's, for disk_exec */
	if (control_fork(sc->ctl, disk_exec, sc, disk_exit_cb, sc) == -1) {
		close(fds[0]);
		close(fds[1]);
		sc->fd = -1;
		return (-1);
	}
	close(fds[1]);
	sc->fd = fds[0];
	sc->out = evbuffer_new();
	sc->ev = event_new(sc->ctl->base, sc->fd, EV_READ | EV_PERSIST,
	    disk_read_cb, sc);
	event_add(sc->ev, NULL);
	return (0);
}

/*
 * In the child: the paths on stdin (a memfd), stdout to the pipe, nothing
 * else of ours open, low priority, a deadline; then du. du never follows a
 * symbolic link, and -x keeps it off other filesystems mounted inside.
 */
static int
disk_exec(void *arg)
{
	struct disk_scan	*sc = arg;
	char *const		 argv[] = { "du", "-s", "-k", "-x",
				    "--files0-from=-", NULL };
	size_t			 off = 0;
	ssize_t			 w;
	int			 fd;

	if ((fd = memfd_create("sandboxd-du", 0)) == -1)
		return (126);
	while (off < sc->listlen) {
		if ((w = write(fd, sc->list + off, sc->listlen - off)) <= 0)
			return (126);
		off += (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, STDIN_FILENO) == -1 ||
	    dup2(sc->fd, STDOUT_FILENO) == -1)
		return (126);
	/* A file that vanishes mid-walk is no news: du's stderr goes. */
	if ((fd = open("/dev/null", O_WRONLY)) != -1)
		dup2(fd, STDERR_FILENO);
	close_range(STDERR_FILENO + 1, ~0U, 0);
	setpriority(PRIO_PROCESS, 0, 10);
	alarm(DISK_SCAN_MAX_S);
	execv("/usr/bin/du", argv);
	execv("/bin/du", argv);
	return (127);
}

/* du's output, kept until it closes its end. */
static void
disk_read_cb(evutil_socket_t fd, short events, void *arg)
{
	struct disk_scan	*sc = arg;
	int			 n;

	n = evbuffer_read(sc->out, fd, 65536);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 && evbuffer_get_length(sc->out) <= DISK_OUT_MAX)
		return;
	if (n > 0)
		log_warnx("disk check: du said too much; ignoring the rest");
	/* Closed at once: a du with more to say gets EPIPE, not a hang. */
	event_del(sc->ev);
	close(sc->fd);
	sc->fd = -1;
	sc->eof = 1;
	if (sc->exited)
		disk_scan_done(sc);
}

static void
disk_exit_cb(int status, void *arg)
{
	struct disk_scan	*sc = arg;

	sc->exited = 1;
	sc->status = status;
	if (sc->eof)
		disk_scan_done(sc);
}

/*
 * Both ends are done: parse "KIB<tab>PATH" lines. du answers in the order
 * of its list, one line per path it could read, so a cursor finds each.
 */
static void
disk_scan_done(struct disk_scan *sc)
{
	struct control	*ctl = sc->ctl;
	char		*line, *tab, *end, *base;
	size_t		 i, cur = 0;
	unsigned long long kib;

	if (WIFSIGNALED(sc->status))
		log_warnx("disk check: du killed by signal %d (took over "
		    "%d s?)", WTERMSIG(sc->status), DISK_SCAN_MAX_S);
	else if (WIFEXITED(sc->status) && WEXITSTATUS(sc->status) >= 126)
		log_warnx("disk check: cannot run du (exit %d)",
		    WEXITSTATUS(sc->status));
	while ((line = evbuffer_readln(sc->out, NULL,
	    EVBUFFER_EOL_LF)) != NULL) {
		errno = 0;
		kib = strtoull(line, &end, 10);
		tab = end;
		if (errno != 0 || end == line || *tab != '\t' ||
		    (base = strrchr(tab, '/')) == NULL) {
			ev_free(line);
			continue;
		}
		base++;
		for (i = cur; i < sc->n; i++) {
			if (strcmp(sc->ids[i], base) == 0)
				break;
		}
		if (i < sc->n) {
			cur = i;
			if (sc->used[i] < 0)
				sc->used[i] = 0;
			if (kib < (unsigned long long)INT64_MAX / 2048)
				sc->used[i] += (int64_t)kib * 1024;
		}
		ev_free(line);
	}
	if (sc == ctl->disk->tick)
		ctl->disk->tick = NULL;
	if (sc->cb != NULL)
		sc->cb(ctl, sc->n, sc->ids, sc->used, sc->arg);
	disk_scan_free(sc);
}

static void
disk_scan_free(struct disk_scan *sc)
{
	if (sc->ctl->disk->tick == sc)
		sc->ctl->disk->tick = NULL;
	LIST_REMOVE(sc, entry);
	if (sc->ev != NULL)
		event_free(sc->ev);
	if (sc->fd != -1)
		close(sc->fd);
	if (sc->out != NULL)
		evbuffer_free(sc->out);
	free(sc->ids);
	free(sc->used);
	free(sc->list);
	free(sc);
}

/* The timer's measurements: stop what is over, free what fits again. */
static void
disk_tick_cb(struct control *ctl, size_t n, char (*ids)[ID_LEN + 1],
    const int64_t *used, void *arg)
{
	struct sandbox_rt	*rt;
	size_t			 i;

	for (i = 0; i < n; i++) {
		if (used[i] < 0 || (rt = rt_find(ctl, ids[i])) == NULL)
			continue;
		disk_enforce(ctl, rt, used[i]);
	}
}

/* Act on one sandbox's measurement. */
static void
disk_enforce(struct control *ctl, struct sandbox_rt *rt, int64_t used)
{
	struct disk_stop	*ds;
	uint64_t		 ceiling;
	char			 u[32], c[32];

	ceiling = rt->tmpl != NULL ? rt->tmpl->disk : 0;
	if (ceiling == 0 || (uint64_t)used <= ceiling) {
		if (disk_clear(ctl, rt) == 0)
			log_info("sandbox back under its disk ceiling; it may "
			    "start again\tid=%s used_mb=%" PRId64, rt->id,
			    used >> 20);
		return;
	}
	if (rt->op != NULL || (rt->state != SANDBOX_RUNNING &&
	    rt->state != SANDBOX_PAUSED))
		return;		/* stopped already, or busy: the next tick */
	rt->disk_over = 1;
	disk_mib(used, u, sizeof u);
	disk_mib((int64_t)ceiling, c, sizeof c);
	ds = xcalloc(1, sizeof *ds);
	snprintf(ds->id, sizeof ds->id, "%s", rt->id);
	xasprintf(&ds->msg, DISK_ERROR_PREFIX ": its files use %s of the %s "
	    "its template allows (disk), so it was stopped. Delete files "
	    "(the files API works while it is stopped) or raise the "
	    "ceiling, then start it again.", u, c);
	log_warnx("sandbox over its disk ceiling; stopping it\tid=%s "
	    "used_mb=%" PRId64 " disk_mb=%" PRIu64, rt->id, used >> 20,
	    ceiling >> 20);
	ctl->disk_stops_total++;
	if (lifecycle_stop(ctl, rt->id, disk_stopped_cb, ds) == -1) {
		free(ds->msg);
		free(ds);
	}
}

/* Stopped: the error goes on the row, for the API and across restarts. */
static void
disk_stopped_cb(struct control *ctl, const char *id, int status,
    const char *message, void *arg)
{
	struct disk_stop	*ds = arg;
	struct sandbox_rt	*rt = rt_find(ctl, id);

	if (rt != NULL && rt->state == SANDBOX_STOPPED && rt->op == NULL &&
	    rt->disk_over) {
		/* Stopped it is; only the reason may be missing (said why). */
		if (rt_set_state(ctl, rt, SANDBOX_STOPPED, ds->msg) != 0)
			log_warnx("cannot record why a sandbox over its disk "
			    "ceiling was stopped\tid=%s", id);
	} else if (status != 200)
		log_warnx("cannot stop a sandbox over its disk ceiling: %s"
		    "\tid=%s", message != NULL ? message : "?", id);
	free(ds->msg);
	free(ds);
}

/*
 * A sandbox held back for its disk fits again: it may start, and its
 * error goes. 0 if it was held back, -1 if there was nothing to clear.
 */
int
disk_clear(struct control *ctl, struct sandbox_rt *rt)
{
	struct store_sandbox	s;
	int			clear = 0;

	if (!rt->disk_over)
		return (-1);
	rt->disk_over = 0;
	if (rt->op == NULL && rt->state == SANDBOX_STOPPED &&
	    store_sandbox_get(ctl->store, rt->id, &s) == 0) {
		clear = disk_error_is(s.error);
		store_sandbox_clear(&s);
	}
	/* It may start either way; a start clears the error too. */
	if (clear && rt_set_state(ctl, rt, SANDBOX_STOPPED, NULL) != 0)
		log_warnx("cannot clear the disk ceiling's error of a sandbox"
		    "\tid=%s", rt->id);
	return (0);
}

/* "12.5 MiB", "3.2 GiB". */
static void
disk_mib(int64_t bytes, char *buf, size_t len)
{
	if (bytes >= (int64_t)1 << 30)
		snprintf(buf, len, "%.1f GiB", (double)bytes / (1 << 30));
	else
		snprintf(buf, len, "%.1f MiB", (double)bytes / (1 << 20));
}
