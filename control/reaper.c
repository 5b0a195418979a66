/*
 * The idle reaper and admission. Each running or paused sandbox has one
 * timer, due when it would have been idle for its pause_timeout or
 * idle_timeout; traffic only moves the last-activity time, and a timer
 * that finds activity since it was armed just re-arms for the rest. So
 * a thousand sandboxes cost a thousand timers in libevent's heap and one
 * wakeup each per timeout, never a sweep.
 *
 * Admission decides whether one more sandbox may start: below
 * max_running, or after stopping the one idle the longest (paused ones
 * first); and only with min_free_memory available on the host.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "control/control_int.h"

static void	reaper_idle_cb(evutil_socket_t, short, void *);
static void	reaper_stopped_cb(struct control *, const char *, int,
		    const char *, void *);
static struct sandbox_rt *reaper_victim(struct control *,
		    struct sandbox_rt *, int paused_only, const char *tenant);
static int	reaper_evict(struct control *, struct sandbox_rt *,
		    const char *);
static int	reaper_tenant_active(struct control *, const char *);
static int	reaper_admit_tenant(struct control *, struct sandbox_rt *,
		    const char *, const char **);
static int64_t	reaper_read_u64(const char *, const char *);
static void	reaper_later(struct sandbox_rt *);

/* The idle period that matters now for this sandbox, 0 for none. */
static int64_t
reaper_period(const struct sandbox_rt *rt)
{
	if (rt->state == SANDBOX_RUNNING && rt->pause_timeout_ms > 0 &&
	    (rt->idle_timeout_ms == 0 ||
	    rt->pause_timeout_ms < rt->idle_timeout_ms))
		return (rt->pause_timeout_ms);
	if (rt->state == SANDBOX_RUNNING || rt->state == SANDBOX_PAUSED)
		return (rt->idle_timeout_ms);
	return (0);
}

/* Arm the timer for when the sandbox would be idle long enough. */
void
reaper_arm(struct control *ctl, struct sandbox_rt *rt)
{
	struct timeval	tv;
	int64_t		period = reaper_period(rt), due;

	if (period == 0 || rt->op != NULL) {
		if (rt->idle_ev != NULL)
			evtimer_del(rt->idle_ev);
		return;
	}
	if (rt->idle_ev == NULL)
		rt->idle_ev = evtimer_new(ctl->base, reaper_idle_cb, rt);
	/* rt->ctl is not kept: the timer's arg is the runtime, ctl below. */
	due = rt->last_active_ms + period - time_mono_ms();
	if (due < 0)
		due = 0;
	/* A busy sandbox is looked at again a full period later. */
	if (rt_busy(rt))
		due = period;
	tv.tv_sec = due / 1000;
	tv.tv_usec = (due % 1000) * 1000;
	evtimer_add(rt->idle_ev, &tv);
}

/* The sandbox may have been idle long enough: pause or stop it. */
static void
reaper_idle_cb(evutil_socket_t fd, short events, void *arg)
{
	struct sandbox_rt	*rt = arg;
	struct control		*ctl = rt->ctl;
	int64_t			 idle = time_mono_ms() - rt->last_active_ms;
	char			 id[ID_LEN + 1];

	if (rt->op != NULL)
		return;		/* its end re-arms */
	rt_store_activity(ctl, rt);
	if (rt_busy(rt) || idle < reaper_period(rt)) {
		reaper_arm(ctl, rt);
		return;
	}
	snprintf(id, sizeof id, "%s", rt->id);
	if (rt->state == SANDBOX_RUNNING && reaper_period(rt) ==
	    rt->pause_timeout_ms && rt->pause_timeout_ms > 0) {
		log_info("pausing idle sandbox\tid=%s idle_ms=%" PRId64, id,
		    idle);
		if (lifecycle_pause(ctl, id, reaper_stopped_cb, NULL) == -1)
			reaper_later(rt);
		else
			ctl->idle_pauses_total++;
		return;
	}
	log_info("stopping idle sandbox\tid=%s idle_ms=%" PRId64 " state=%s",
	    id, idle, store_sandbox_state_name(rt->state));
	if (lifecycle_stop(ctl, id, reaper_stopped_cb, NULL) == -1)
		reaper_later(rt);
	else
		ctl->idle_stops_total++;
}

/*
 * An idle pause or stop could not begin: try again a full period from
 * now. reaper_arm would fire at once (the sandbox is idle long enough)
 * and spin the loop for as long as the cause lasts.
 */
static void
reaper_later(struct sandbox_rt *rt)
{
	struct timeval	tv;
	int64_t		period = reaper_period(rt);

	if (period == 0 || rt->idle_ev == NULL)
		return;
	tv.tv_sec = period / 1000;
	tv.tv_usec = (period % 1000) * 1000;
	evtimer_add(rt->idle_ev, &tv);
}

/* An idle pause, idle stop or eviction is over. */
static void
reaper_stopped_cb(struct control *ctl, const char *id, int status,
    const char *message, void *arg)
{
	if (status >= 300)
		log_warnx("idle stop or pause failed: %s\tid=%s",
		    message != NULL ? message : "?", id);
}

/*
 * The sandbox to stop for room: idle (nothing busy, nothing in flight),
 * not except, of tenant unless NULL, paused ones before running ones, the
 * longest idle first.
 */
static struct sandbox_rt *
reaper_victim(struct control *ctl, struct sandbox_rt *except,
    int paused_only, const char *tenant)
{
	struct sandbox_rt	*rt, *best = NULL;
	size_t			 i;

	for (i = 0; i < RT_BUCKETS; i++) {
		LIST_FOREACH(rt, &ctl->rts[i], entry) {
			if (rt == except || rt->op != NULL || rt_busy(rt) ||
			    rt->nwaiters > 0)
				continue;
			if (tenant != NULL && (rt->tenant == NULL ||
			    strcmp(rt->tenant, tenant) != 0))
				continue;
			if (rt->state != SANDBOX_PAUSED &&
			    (paused_only || rt->state != SANDBOX_RUNNING))
				continue;
			if (best == NULL ||
			    (rt->state == SANDBOX_PAUSED &&
			    best->state != SANDBOX_PAUSED) ||
			    (rt->state == best->state &&
			    rt->last_active_ms < best->last_active_ms))
				best = rt;
		}
	}
	return (best);
}

/* Stop a sandbox to make room; 0 if its stop began. */
static int
reaper_evict(struct control *ctl, struct sandbox_rt *victim,
    const char *reason)
{
	char	id[ID_LEN + 1];

	snprintf(id, sizeof id, "%s", victim->id);
	log_info("evicting the sandbox idle the longest\tid=%s state=%s "
	    "idle_ms=%" PRId64 " reason=%s", id,
	    store_sandbox_state_name(victim->state),
	    time_mono_ms() - victim->last_active_ms, reason);
	if (lifecycle_stop(ctl, id, reaper_stopped_cb, NULL) == -1)
		return (-1);
	ctl->evictions_total++;
	return (0);
}

/* The memory floor in bytes, 0 for none. */
static int64_t
reaper_floor(const struct config *cf, int64_t total)
{
	if (cf->min_free_memory_bytes > 0)
		return ((int64_t)cf->min_free_memory_bytes);
	if (cf->min_free_memory_pct > 0 && total > 0)
		return (total / 100 * cf->min_free_memory_pct);
	return (0);
}

/* Sandboxes of tenant in an active state (creating to paused). */
static int
reaper_tenant_active(struct control *ctl, const char *tenant)
{
	struct sandbox_rt	*rt;
	size_t			 i;
	int			 n = 0;

	for (i = 0; i < RT_BUCKETS; i++) {
		LIST_FOREACH(rt, &ctl->rts[i], entry) {
			if (rt_state_active(rt->state) && rt->tenant != NULL &&
			    strcmp(rt->tenant, tenant) == 0)
				n++;
		}
	}
	return (n);
}

/* Room below the tenant's own max_running? 0, or -1 with *why. */
static int
reaper_admit_tenant(struct control *ctl, struct sandbox_rt *rt,
    const char *tenant, const char **why)
{
	const struct cfg_api_key	*key = control_tenant_key(ctl, tenant);
	struct sandbox_rt		*victim;

	if (key == NULL || key->max_running == 0 ||
	    reaper_tenant_active(ctl, tenant) < key->max_running)
		return (0);
	if ((victim = reaper_victim(ctl, rt, 0, tenant)) != NULL &&
	    reaper_evict(ctl, victim, "tenant max_running") == 0)
		return (0);
	ctl->refusals_total++;
	log_warnx("refusing to start a sandbox: the tenant's max_running "
	    "reached and none of its sandboxes is idle\tid=%s tenant=%s "
	    "max_running=%d", rt != NULL ? rt->id : "(new)", tenant,
	    key->max_running);
	*why = "Your API key runs as many sandboxes as it may at once (its "
	    "max_running) and none of them is idle; stop one or try again "
	    "later.";
	return (-1);
}

/* Room to start or wake rt (NULL: a new one of tenant)? 0, or -1 + *why. */
int
reaper_admit(struct control *ctl, struct sandbox_rt *rt, const char *tenant,
    const char **why)
{
	struct sandbox_rt	*victim;
	int64_t			 total = 0, avail, floor, reserved = 0;

	if (rt != NULL)
		tenant = rt->tenant;
	/* Stopped for its disk: an explicit start measures again first. */
	if (rt != NULL && rt->disk_over) {
		*why = "This sandbox was stopped because its files are over "
		    "its disk ceiling; delete files or raise the ceiling, "
		    "then start it again.";
		return (-1);
	}
	avail = reaper_mem_available(&total);
	floor = reaper_floor(ctl->cf, total);
	/* Sandboxes still booting will take more than they have yet. */
	if (avail >= 0 && floor > 0)
		reserved = rt_reserved(ctl);
	if (avail >= 0 && floor > 0 && avail - reserved < floor) {
		ctl->refusals_total++;
		log_warnx("refusing to start a sandbox: memory is low\tid=%s "
		    "available_mb=%" PRId64 " booting_mb=%" PRId64
		    " floor_mb=%" PRId64, rt != NULL ? rt->id : "(new)",
		    avail >> 20, reserved >> 20, floor >> 20);
		/* Make room for the next try: paused ones hold memory idle. */
		if ((victim = reaper_victim(ctl, rt, 1, NULL)) != NULL)
			reaper_evict(ctl, victim, "memory");
		*why = "This server is low on memory (below min_free_memory) "
		    "and cannot start another sandbox now; try again later.";
		return (-1);
	}
	/*
	 * rt counted already (started again while "running" without an
	 * address, as after Docker was away) takes no more room.
	 */
	if (rt != NULL && rt_state_active(rt->state))
		return (0);
	if (tenant != NULL && reaper_admit_tenant(ctl, rt, tenant, why) == -1)
		return (-1);
	if (ctl->nactive < ctl->cf->max_running)
		return (0);
	if ((victim = reaper_victim(ctl, rt, 0, NULL)) != NULL &&
	    reaper_evict(ctl, victim, "max_running") == 0)
		return (0);
	ctl->refusals_total++;
	log_warnx("refusing to start a sandbox: max_running reached and none "
	    "is idle\tid=%s max_running=%d", rt != NULL ? rt->id : "(new)",
	    ctl->cf->max_running);
	*why = "This server runs as many sandboxes as it may at once "
	    "(max_running) and none of them is idle; try again later.";
	return (-1);
}

/* A "key value" number from a /proc or cgroup file, -1 if absent. */
static int64_t
reaper_read_u64(const char *path, const char *key)
{
	FILE		*f;
	char		 line[256], *end;
	size_t		 klen = key != NULL ? strlen(key) : 0;
	long long	 v = -1;

	if ((f = fopen(path, "re")) == NULL)
		return (-1);
	while (fgets(line, sizeof line, f) != NULL) {
		if (key != NULL && (strncmp(line, key, klen) != 0 ||
		    (line[klen] != ' ' && line[klen] != ':')))
			continue;
		errno = 0;
		v = strtoll(line + klen + (key != NULL), &end, 10);
		if (errno != 0 || end == line + klen + (key != NULL))
			v = -1;
		break;
	}
	fclose(f);
	return (v);
}

/*
 * Memory the host has for new sandboxes: MemAvailable, or less when this
 * machine is itself a cgroup with a limit (a container host, a VM slice).
 * *total is the memory that percentages are taken of.
 */
int64_t
reaper_mem_available(int64_t *total)
{
	int64_t	avail, limit, usage, inactive;

	avail = reaper_read_u64("/proc/meminfo", "MemAvailable:");
	*total = reaper_read_u64("/proc/meminfo", "MemTotal:");
	if (avail >= 0)
		avail *= 1024;
	if (*total >= 0)
		*total *= 1024;
	/* cgroup v2 at the root of our namespace ("max": no limit). */
	limit = reaper_read_u64("/sys/fs/cgroup/memory.max", NULL);
	usage = reaper_read_u64("/sys/fs/cgroup/memory.current", NULL);
	inactive = reaper_read_u64("/sys/fs/cgroup/memory.stat",
	    "inactive_file");
	if (limit <= 0) {
		/* cgroup v1: a huge number means no limit. */
		limit = reaper_read_u64(
		    "/sys/fs/cgroup/memory/memory.limit_in_bytes", NULL);
		usage = reaper_read_u64(
		    "/sys/fs/cgroup/memory/memory.usage_in_bytes", NULL);
		inactive = reaper_read_u64("/sys/fs/cgroup/memory/memory.stat",
		    "total_inactive_file");
	}
	if (limit > 0 && usage >= 0 && (*total < 0 || limit < *total)) {
		/* Page cache the kernel would drop is available too. */
		if (inactive > 0 && inactive < usage)
			usage -= inactive;
		*total = limit;
		if (avail < 0 || limit - usage < avail)
			avail = limit - usage < 0 ? 0 : limit - usage;
	}
	return (avail);
}
