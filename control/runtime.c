/*
 * The one owner of each sandbox's runtime facts: the state (mirroring the
 * store row, which is written first), the operation in flight, the
 * address and its generation, live traffic and the requests held for it.
 *
 * Every state change goes through rt_set_state and its transition table;
 * a sandbox that stops being routable is retired at once (the edge drops
 * its upstream connections) and gets a new generation when it runs again,
 * so an address Docker may hand to another container is never used again.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "control/control_int.h"

/* How long after its port accepts a new sandbox's memory stays reserved. */
#define RT_RESERVE_SETTLE_MS	3000

static unsigned	rt_hash(const char *);
static struct sandbox_rt *rt_new(struct control *, const char *);
static void	rt_load(struct sandbox_rt *, const struct store_sandbox *,
		    struct control *);

/*
 * What may follow what. A row is created in CREATING and leaves the table
 * when its delete completes (rt_drop). PAUSED is RUNNING frozen; STOPPING
 * and STARTING are the in-between of the slow operations. ERROR is left
 * only by a delete: a start or stop of a sandbox in error is refused.
 * The moves marked "Docker" follow what Docker did behind our back (a
 * container that died, one the reconciler found in another state).
 */
static const unsigned rt_allowed[] = {
#define S(x)	(1u << (x))
	[SANDBOX_CREATING] = S(SANDBOX_RUNNING) | S(SANDBOX_ERROR) |
	    S(SANDBOX_DELETING),
	[SANDBOX_STARTING] = S(SANDBOX_RUNNING) | S(SANDBOX_ERROR) |
	    S(SANDBOX_STOPPED) /* Docker */ | S(SANDBOX_DELETING),
	[SANDBOX_RUNNING] = S(SANDBOX_PAUSED) | S(SANDBOX_STOPPING) |
	    S(SANDBOX_DELETING) | S(SANDBOX_ERROR) |
	    S(SANDBOX_STOPPED) /* Docker */ | S(SANDBOX_STARTING) /* Docker */,
	[SANDBOX_PAUSED] = S(SANDBOX_RUNNING) | S(SANDBOX_STOPPING) |
	    S(SANDBOX_DELETING) | S(SANDBOX_ERROR) |
	    S(SANDBOX_STOPPED) /* Docker */ | S(SANDBOX_STARTING) /* Docker */,
	[SANDBOX_STOPPING] = S(SANDBOX_STOPPED) | S(SANDBOX_ERROR) |
	    S(SANDBOX_DELETING),
	[SANDBOX_STOPPED] = S(SANDBOX_STARTING) | S(SANDBOX_DELETING) |
	    S(SANDBOX_STOPPING) /* Docker: found running */,
	[SANDBOX_DELETING] = S(SANDBOX_ERROR) /* a create's failed rollback */,
	[SANDBOX_ERROR] = S(SANDBOX_DELETING),
#undef S
};

/* 1 if the table lets rt move to state to (no store involved). */
int
rt_may(const struct sandbox_rt *rt, enum sandbox_state to)
{
	return (to == rt->state || ((unsigned)rt->state < nitems(rt_allowed) &&
	    (rt_allowed[rt->state] & (1u << to)) != 0));
}

/* FNV-1a over the id: ids are random, any spread will do. */
static unsigned
rt_hash(const char *id)
{
	unsigned	h = 2166136261u;

	for (; *id != '\0'; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return (h % RT_BUCKETS);
}

/* The runtime if it is in memory, else NULL. */
struct sandbox_rt *
rt_find(struct control *ctl, const char *id)
{
	struct sandbox_rt	*rt;

	LIST_FOREACH(rt, &ctl->rts[rt_hash(id)], entry) {
		if (strcmp(rt->id, id) == 0)
			return (rt);
	}
	return (NULL);
}

/* A blank runtime in the table. */
static struct sandbox_rt *
rt_new(struct control *ctl, const char *id)
{
	struct sandbox_rt	*rt;

	rt = xcalloc(1, sizeof *rt);
	rt->ctl = ctl;
	snprintf(rt->id, sizeof rt->id, "%s", id);
	TAILQ_INIT(&rt->waiters);
	LIST_INSERT_HEAD(&ctl->rts[rt_hash(id)], rt, entry);
	return (rt);
}

/* The facts a runtime takes from its row. */
static void
rt_load(struct sandbox_rt *rt, const struct store_sandbox *s,
    struct control *ctl)
{
	const struct cfg_template	*t = control_template(ctl,
					    s->template_name);

	free(rt->tenant);
	rt->tenant = xstrdup(s->tenant);
	rt->state = s->state;
	rt->port = s->port;
	rt->dev_command = t != NULL && t->dev_command != NULL;
	rt->private = s->visibility == SANDBOX_PRIVATE;
	rt->tmpl = t;
	rt->memory_bytes = (int64_t)s->memory_mb * 1024 * 1024;
	rt->idle_timeout_ms = (int64_t)s->idle_timeout_s * 1000;
	rt->pause_timeout_ms = (int64_t)s->pause_timeout_s * 1000;
	rt->last_active_wall = rt->stored_active_wall = s->last_active_at;
	/* Held back for its disk before a restart: still, until measured. */
	rt->disk_over = s->state == SANDBOX_STOPPED &&
	    disk_error_is(s->error);
	/* Idle time before a restart counts from the restart. */
	rt->last_active_ms = time_mono_ms();
}

/* The runtime, loaded from the store if it is not in memory yet. */
struct sandbox_rt *
rt_get(struct control *ctl, const char *id)
{
	struct sandbox_rt	*rt;
	struct store_sandbox	 s;

	if ((rt = rt_find(ctl, id)) != NULL)
		return (rt);
	if (store_sandbox_get(ctl->store, id, &s) != 0)
		return (NULL);
	rt = rt_new(ctl, id);
	rt_load(rt, &s, ctl);
	store_sandbox_clear(&s);
	if (rt_state_active(rt->state))
		ctl->nactive++;
	return (rt);
}

/* Forget a sandbox whose row is gone; held requests learn it is gone. */
void
rt_drop(struct control *ctl, struct sandbox_rt *rt)
{
	struct control_wait	*w;

	task_sandbox_gone(ctl, rt->id);
	dev_rt_gone(rt);
	rt_retire(ctl, rt);
	if (rt_state_active(rt->state))
		ctl->nactive--;
	/* The waiters outlive the runtime only until their answer. */
	while ((w = TAILQ_FIRST(&rt->waiters)) != NULL) {
		TAILQ_REMOVE(&rt->waiters, w, entry);
		rt->nwaiters--;
		w->rt = NULL;
		event_active(w->timer, EV_READ, 0);
	}
	if (rt->idle_ev != NULL)
		event_free(rt->idle_ev);
	LIST_REMOVE(rt, entry);
	free(rt->tenant);
	free(rt);
}

/* At exit: every runtime (held requests are the edge's, already gone). */
void
rt_free_all(struct control *ctl)
{
	struct sandbox_rt	*rt;
	struct control_wait	*w;
	size_t			 i;

	for (i = 0; i < RT_BUCKETS; i++) {
		while ((rt = LIST_FIRST(&ctl->rts[i])) != NULL) {
			while ((w = TAILQ_FIRST(&rt->waiters)) != NULL) {
				TAILQ_REMOVE(&rt->waiters, w, entry);
				event_free(w->timer);
				free(w);
			}
			if (rt->idle_ev != NULL)
				event_free(rt->idle_ev);
			LIST_REMOVE(rt, entry);
			free(rt->tenant);
			free(rt);
		}
	}
}

/* Creating, starting, running or paused: what max_running counts. */
int
rt_state_active(enum sandbox_state state)
{
	return (state == SANDBOX_CREATING || state == SANDBOX_STARTING ||
	    state == SANDBOX_RUNNING || state == SANDBOX_PAUSED);
}

/* Move a sandbox to a state through the table, the store first. */
int
rt_set_state(struct control *ctl, struct sandbox_rt *rt,
    enum sandbox_state to, const char *error)
{
	enum sandbox_state	from = rt->state;

	if (to != from && ((unsigned)from >= nitems(rt_allowed) ||
	    (rt_allowed[from] & (1u << to)) == 0)) {
		log_warnx("refused state change %s -> %s\tid=%s",
		    store_sandbox_state_name(from),
		    store_sandbox_state_name(to), rt->id);
		return (-1);
	}
	if (store_sandbox_set_state(ctl->store, rt->id, to, error) != 0)
		return (-1);
	rt->state = to;
	ctl->nactive += rt_state_active(to) - rt_state_active(from);
	if (to != SANDBOX_RUNNING)
		rt_retire(ctl, rt);
	if (to != SANDBOX_RUNNING && to != SANDBOX_PAUSED)
		rt->port_state = RT_PORT_UNKNOWN;
	/* A new run has a new dev server: forget the cached one. */
	if (to != SANDBOX_RUNNING) {
		dev_rt_gone(rt);
		rt->dev_state[0] = '\0';
	}
	if (!rt_state_active(to))
		rt->reserve_until_ms = 0;
	/* Its tasks end with a stop, a delete or an error. */
	if (to != from)
		task_sandbox_state(ctl, rt->id, to);
	if (to != from) {
		log_debug("sandbox state\tid=%s from=%s to=%s", rt->id,
		    store_sandbox_state_name(from),
		    store_sandbox_state_name(to));
		rt_store_activity(ctl, rt);
	}
	reaper_arm(ctl, rt);
	/* Outside an operation (Docker told us), held requests learn now. */
	if (rt->op == NULL && rt->nwaiters > 0)
		wake_release(ctl, rt, 1);
	return (0);
}

/* Running at ip with a new generation; probe the port unless told not to. */
int
rt_set_running(struct control *ctl, struct sandbox_rt *rt,
    struct in_addr ip, int port_ready)
{
	if (rt_set_state(ctl, rt, SANDBOX_RUNNING, NULL) != 0)
		return (-1);
	/* Routable already (found again elsewhere): the old address goes. */
	rt_retire(ctl, rt);
	rt->ip = ip;
	rt->generation = ++ctl->next_generation;
	rt_touch(rt);
	/*
	 * A probe still in flight was for the old generation (paused while
	 * probing): its answer is dropped, so this generation needs its own.
	 */
	/*
	 * Without a dev_command nothing listens by itself after a start
	 * (agentd is the entrypoint): there is nothing to wait for.
	 */
	if (port_ready || !rt->dev_command) {
		rt->port_state = RT_PORT_READY;
		rt_reserve_settle(rt);
	}
	else
		wake_probe(ctl, rt);
	return (0);
}

/* A container found up at boot (running or frozen): take it as it is. */
int
rt_adopt(struct control *ctl, struct sandbox_rt *rt, struct in_addr ip,
    int paused)
{
	/* Already known (a reconcile after the event stream came back). */
	if (!paused && rt->state == SANDBOX_RUNNING && rt->generation != 0 &&
	    rt->ip.s_addr == ip.s_addr)
		return (0);
	if (!paused)
		return (rt_set_running(ctl, rt, ip, 1));
	if (rt_set_state(ctl, rt, SANDBOX_PAUSED, NULL) != 0)
		return (-1);
	rt->ip = ip;
	rt->port_state = RT_PORT_READY;
	return (0);
}

/*
 * Stop routing to the sandbox: no lookup answers with its address from
 * here on, and the edge closes every connection it has to it.
 */
void
rt_retire(struct control *ctl, struct sandbox_rt *rt)
{
	if (rt->generation == 0)
		return;
	rt->generation = 0;
	if (ctl->retire_cb != NULL)
		ctl->retire_cb(rt->id, ctl->retire_arg);
}

/*
 * 1 if a request, a tunnel, a task or a terminal keeps it awake, or a
 * request held until its port accepts (the app may boot for longer than
 * pause_timeout).
 */
int
rt_busy(const struct sandbox_rt *rt)
{
	return (rt->requests > 0 || rt->tunnels > 0 || rt->holds > 0 ||
	    rt->nwaiters > 0);
}

/*
 * A start begins: until the app has booted, count the sandbox's memory
 * ceiling as used, so that a burst of starts cannot all pass the
 * min_free_memory check before any of them has taken its memory.
 */
void
rt_reserve(struct sandbox_rt *rt)
{
	rt->reserve_until_ms = INT64_MAX;
}

/* The app's port accepts: it has taken most of its memory by now. */
void
rt_reserve_settle(struct sandbox_rt *rt)
{
	if (rt->reserve_until_ms != 0)
		rt->reserve_until_ms = time_mono_ms() + RT_RESERVE_SETTLE_MS;
}

/* What booting sandboxes may still take: their ceilings, summed. */
int64_t
rt_reserved(struct control *ctl)
{
	struct sandbox_rt	*rt;
	int64_t			 now = time_mono_ms(), sum = 0;
	size_t			 i;

	for (i = 0; i < RT_BUCKETS; i++) {
		LIST_FOREACH(rt, &ctl->rts[i], entry) {
			if (rt->reserve_until_ms == 0)
				continue;
			if (rt->reserve_until_ms <= now)
				rt->reserve_until_ms = 0;
			else
				sum += rt->memory_bytes;
		}
	}
	return (sum);
}

/* Activity now. */
void
rt_touch(struct sandbox_rt *rt)
{
	rt->last_active_ms = time_mono_ms();
	rt->last_active_wall = time_now_ms();
}

/* Persist last_active_at when it moved by a second or more. */
void
rt_store_activity(struct control *ctl, struct sandbox_rt *rt)
{
	if (rt->last_active_wall - rt->stored_active_wall < 1000)
		return;
	if (store_sandbox_touch(ctl->store, rt->id,
	    rt->last_active_wall) == 0)
		rt->stored_active_wall = rt->last_active_wall;
}

/* A lifecycle operation took the sandbox. */
void
rt_op_begin(struct control *ctl, struct sandbox_rt *rt,
    struct lifecycle_op *op)
{
	rt->op = op;
	rt->op_seq = ++ctl->op_seq;
}

/*
 * The operation is over. Requests held meanwhile get their answer, or
 * wake the sandbox again (a stop that finished under them).
 */
void
rt_op_end(struct control *ctl, struct sandbox_rt *rt, int failed)
{
	rt->op = NULL;
	rt->op_seq = ++ctl->op_seq;
	reaper_arm(ctl, rt);
	if (rt->nwaiters > 0)
		wake_release(ctl, rt, !failed);
}

/* Live traffic from the edge. */
void
control_activity(struct control *ctl, const char *id,
    enum control_activity what, int delta)
{
	struct sandbox_rt	*rt = rt_find(ctl, id);
	int			*count;

	if (rt == NULL)
		return;
	switch (what) {
	case ACTIVITY_CONN:
		count = &rt->conns;
		break;
	case ACTIVITY_REQUEST:
		count = &rt->requests;
		break;
	case ACTIVITY_TUNNEL:
		count = &rt->tunnels;
		break;
	default:
		return;
	}
	if (delta > 0 || *count > 0)
		*count += delta;
	rt_touch(rt);
}

/*
 * A task or an open terminal keeps the sandbox awake while held (+1 when
 * it begins, -1 when it ends): the hook the agent tasks use.
 */
void
rt_hold(struct control *ctl, const char *id, int delta)
{
	struct sandbox_rt	*rt = rt_find(ctl, id);

	if (rt == NULL)
		return;
	if (delta > 0 || rt->holds > 0)
		rt->holds += delta;
	rt_touch(rt);
}

void
control_set_retire_cb(struct control *ctl, control_retire_cb cb, void *arg)
{
	ctl->retire_cb = cb;
	ctl->retire_arg = arg;
}

/* The edge's part of GET /metrics. */
void
control_set_metrics_cb(struct control *ctl, control_metrics_cb cb, void *arg)
{
	ctl->metrics_cb = cb;
	ctl->metrics_arg = arg;
}
