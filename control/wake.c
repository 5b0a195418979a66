/*
 * Hold-and-wake: where a preview request goes, and what happens to one
 * for a sandbox that is not running. A running sandbox answers at once.
 * A stopped or paused one is started or unfrozen (once, however many
 * requests wait) and the request is held on the sandbox's waiter list
 * until its port accepts: agentd, inside the container, tells us the
 * moment it does. Each held request has its own wake_timeout.
 *
 * Answers to held requests are always given from the event loop, through
 * the waiter's own event, never from inside control_target_lookup: the
 * waiter decides, when its event runs, from the runtime as it is then.
 */
#include "config.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"

#define WAKE_MAX_WAITERS_SANDBOX 256	/* held requests per sandbox */
#define WAKE_MAX_WAITERS	 4096	/* held requests in all */
#define WAKE_RETRY_AFTER_S	 5
#define WAKE_PROBE_MAX_MS	 600000	/* the most agentd's /wait-port takes */

static int	wake_start(struct control *, struct sandbox_rt *,
		    const char **);
static void	wake_started_cb(struct control *, const char *, int,
		    const char *, void *);
static void	wake_waiter_cb(evutil_socket_t, short, void *);
static void	wake_waiter_arm(struct control_wait *);
static int	wake_decide(struct control_wait *, struct control_target *);
static void	wake_fill(struct sandbox_rt *, int, struct control_target *);
static void	wake_probe_cb(int, const char *, size_t, const char *,
		    void *);

struct wake_probe {
	LIST_ENTRY(wake_probe) entry;	/* ctl->probes */
	struct control	*ctl;
	char		 id[ID_LEN + 1];
	uint64_t	 generation;
};

/* (Re)arm a held request's timeout for what is left of wake_timeout. */
static void
wake_waiter_arm(struct control_wait *w)
{
	struct timeval	tv;
	int64_t		left = w->deadline_ms - time_mono_ms();

	if (left < 0)
		left = 0;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	event_add(w->timer, &tv);
}

/* TARGET_OK at the sandbox's address and generation. */
static void
wake_fill(struct sandbox_rt *rt, int port, struct control_target *t)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)&t->addr;

	sin->sin_family = AF_INET;
	sin->sin_addr = rt->ip;
	sin->sin_port = htons(port > 0 ? port : rt->port);
	t->addrlen = sizeof *sin;
	t->generation = rt->generation;
	t->kind = TARGET_OK;
}

/* Where a preview request goes; see control.h. */
enum control_lookup
control_target_lookup(struct control *ctl, const char *id, int port,
    struct control_target *t, control_target_cb cb, void *arg,
    struct control_wait **wait)
{
	struct sandbox_rt	*rt;
	struct control_wait	*w;
	const char		*why = NULL;
	int			 woke = 0;

	*wait = NULL;
	memset(t, 0, sizeof *t);
	snprintf(t->sandbox_id, sizeof t->sandbox_id, "%s", id);
	if ((rt = rt_get(ctl, id)) == NULL ||
	    rt->state == SANDBOX_DELETING) {
		t->kind = TARGET_UNKNOWN;
		return (CONTROL_LOOKUP_DONE);
	}
	/* A port the template does not open is no preview: never a wake. */
	if (port > 0 && port != rt->port &&
	    !config_port_allowed(rt->tmpl, port)) {
		t->kind = TARGET_UNKNOWN;
		t->message = "This port is not open for previews.";
		return (CONTROL_LOOKUP_DONE);
	}
	/* The hot path: running, ready, nothing in flight. */
	if (rt->op == NULL && rt->generation != 0 &&
	    (rt->port_state == RT_PORT_READY || port != 0)) {
		wake_fill(rt, port, t);
		rt_touch(rt);
		return (CONTROL_LOOKUP_DONE);
	}
	if (rt->op == NULL && rt->state == SANDBOX_ERROR) {
		t->kind = TARGET_ERROR;
		t->message = "This sandbox failed and is in the error state.";
		return (CONTROL_LOOKUP_DONE);
	}
	if (ctl->nwaiters >= WAKE_MAX_WAITERS ||
	    rt->nwaiters >= WAKE_MAX_WAITERS_SANDBOX) {
		ctl->refusals_total++;
		t->kind = TARGET_UNAVAILABLE;
		t->message = "Too many requests are waiting for this app to "
		    "start; try again in a moment.";
		t->retry_after_s = WAKE_RETRY_AFTER_S;
		t->waking = 1;
		return (CONTROL_LOOKUP_DONE);
	}
	/* Stopped or paused, nothing under way: wake it (if there is room). */
	if (rt->op == NULL && (rt->state == SANDBOX_STOPPED ||
	    rt->state == SANDBOX_PAUSED)) {
		if (wake_start(ctl, rt, &why) == -1) {
			t->kind = TARGET_UNAVAILABLE;
			t->message = why;
			t->retry_after_s = WAKE_RETRY_AFTER_S;
			return (CONTROL_LOOKUP_DONE);
		}
		woke = 1;
	}
	/* Starting, stopping, probing, or just woken: hold the request. */
	if (cb == NULL) {
		t->kind = TARGET_UNAVAILABLE;
		t->message = "The sandbox is starting; try again in a moment.";
		t->retry_after_s = 1;
		t->waking = 1;
		return (CONTROL_LOOKUP_DONE);
	}
	w = xcalloc(1, sizeof *w);
	w->ctl = ctl;
	w->rt = rt;
	w->port = port;
	w->cb = cb;
	w->arg = arg;
	w->timer = event_new(ctl->base, -1, 0, wake_waiter_cb, w);
	w->deadline_ms = time_mono_ms() + ctl->cf->wake_timeout_ms;
	wake_waiter_arm(w);
	TAILQ_INSERT_TAIL(&rt->waiters, w, entry);
	rt->nwaiters++;
	ctl->nwaiters++;
	/*
	 * The wake's operation already ended (it failed before returning):
	 * nothing will release this one, so it gets its answer from the loop.
	 */
	if (woke && rt->op == NULL)
		event_active(w->timer, EV_READ, 0);
	*wait = w;
	return (CONTROL_LOOKUP_HELD);
}

/* The client went away: forget its held request. */
void
control_wait_cancel(struct control_wait *w)
{
	if (w == NULL)
		return;
	if (w->rt != NULL) {
		TAILQ_REMOVE(&w->rt->waiters, w, entry);
		w->rt->nwaiters--;
	}
	w->ctl->nwaiters--;
	event_free(w->timer);
	free(w);
}

/*
 * Start or unfreeze a stopped or paused sandbox for held requests, if
 * there is room for it. -1 with *why when there is not.
 */
static int
wake_start(struct control *ctl, struct sandbox_rt *rt, const char **why)
{
	int	rv;

	/* A paused sandbox counts toward max_running already. */
	if (rt->state == SANDBOX_STOPPED && reaper_admit(ctl, rt, NULL, why) == -1)
		return (-1);
	ctl->wakes_total++;
	rt->why = NULL;
	rt->wake_started_ms = time_mono_ms();
	log_info("waking sandbox for a request\tid=%s from=%s", rt->id,
	    store_sandbox_state_name(rt->state));
	if (rt->state == SANDBOX_PAUSED)
		rv = lifecycle_unpause(ctl, rt->id, wake_started_cb, NULL);
	else
		rv = lifecycle_start(ctl, rt->id, wake_started_cb, NULL);
	if (rv == -1) {
		*why = "The sandbox could not be started.";
		return (-1);
	}
	return (0);
}

/* A wake's operation is over; rt_op_end has released the waiters. */
static void
wake_started_cb(struct control *ctl, const char *id, int status,
    const char *message, void *arg)
{
	struct sandbox_rt	*rt;

	if (status >= 300) {
		log_warnx("wake failed: %s\tid=%s", message != NULL ?
		    message : "?", id);
		return;
	}
	/* An unpause needs no probe: the port accepted before. */
	if ((rt = rt_find(ctl, id)) != NULL && rt->wake_started_ms != 0 &&
	    rt->port_state == RT_PORT_READY) {
		log_info("sandbox woke\tid=%s ms=%" PRId64, id,
		    time_mono_ms() - rt->wake_started_ms);
		hist_observe(&ctl->wake_hist,
		    time_mono_ms() - rt->wake_started_ms);
		rt->wake_started_ms = 0;
	}
}

/*
 * Give every held request of the sandbox its answer, or wake the
 * sandbox again for them (a stop finished while they waited).
 */
void
wake_release(struct control *ctl, struct sandbox_rt *rt, int rewake)
{
	struct control_wait	*w;
	const char		*why = NULL;

	if (rt->op != NULL)
		return;
	if (rt->state == SANDBOX_RUNNING && rt->generation != 0 &&
	    rt->port_state == RT_PORT_PROBING) {
		/* The probe's answer releases them, but for tasks. */
		TAILQ_FOREACH(w, &rt->waiters, entry) {
			if (w->port == CONTROL_PORT_RUNNING)
				event_active(w->timer, EV_READ, 0);
		}
		return;
	}
	if (rewake && (rt->state == SANDBOX_STOPPED ||
	    rt->state == SANDBOX_PAUSED)) {
		if (wake_start(ctl, rt, &why) == 0)
			return;
		rt->why = why;
	}
	TAILQ_FOREACH(w, &rt->waiters, entry)
		event_active(w->timer, EV_READ, 0);
}

/*
 * A held request's event: an answer to give (EV_READ) or its
 * wake_timeout (EV_TIMEOUT). The answer is decided from the runtime now.
 */
static void
wake_waiter_cb(evutil_socket_t fd, short events, void *arg)
{
	struct control_wait	*w = arg;
	struct control_target	 t;
	control_target_cb	 cb = w->cb;
	void			*cbarg = w->arg;

	memset(&t, 0, sizeof t);
	if (w->rt != NULL)
		snprintf(t.sandbox_id, sizeof t.sandbox_id, "%s", w->rt->id);
	if (events & EV_TIMEOUT) {
		t.kind = TARGET_UNAVAILABLE;
		t.message = "The app did not start in time (wake_timeout); "
		    "try again in a moment.";
		t.retry_after_s = WAKE_RETRY_AFTER_S;
		t.waking = 1;
	} else if (wake_decide(w, &t) == -1) {
		/* Still waiting (running it removed the timeout): re-arm. */
		wake_waiter_arm(w);
		return;
	}
	control_wait_cancel(w);
	cb(&t, cbarg);
}

/* The answer for a held request now; -1 if it must go on waiting. */
static int
wake_decide(struct control_wait *w, struct control_target *t)
{
	struct sandbox_rt	*rt = w->rt;

	if (rt == NULL || rt->state == SANDBOX_DELETING) {
		t->kind = TARGET_UNKNOWN;
		return (0);
	}
	if (rt->op != NULL)
		return (-1);
	if (rt->generation != 0 && (rt->port_state == RT_PORT_READY ||
	    w->port != 0)) {
		wake_fill(rt, w->port, t);
		return (0);
	}
	if (rt->state == SANDBOX_ERROR) {
		t->kind = TARGET_ERROR;
		t->message = "This sandbox failed to start and is in the "
		    "error state.";
		return (0);
	}
	if (rt->state == SANDBOX_RUNNING && rt->port_state ==
	    RT_PORT_PROBING)
		return (-1);
	t->kind = TARGET_UNAVAILABLE;
	t->retry_after_s = WAKE_RETRY_AFTER_S;
	t->message = rt->why != NULL ? rt->why : "The sandbox could not be "
	    "started; try again in a moment.";
	return (0);
}

/*
 * The sandbox runs with a new generation: ask its agentd to tell us when
 * the template's port accepts. Held requests wait for the answer.
 */
void
wake_probe(struct control *ctl, struct sandbox_rt *rt)
{
	struct wake_probe	*p;
	char			 path[128], ip[INET_ADDRSTRLEN];
	int			 timeout_ms;

	rt->port_state = RT_PORT_PROBING;
	p = xcalloc(1, sizeof *p);
	p->ctl = ctl;
	snprintf(p->id, sizeof p->id, "%s", rt->id);
	p->generation = rt->generation;
	LIST_INSERT_HEAD(&ctl->probes, p, entry);
	inet_ntop(AF_INET, &rt->ip, ip, sizeof ip);
	/* agentd refuses a longer wait (400), which would end the hold. */
	timeout_ms = ctl->cf->wake_timeout_ms <= 0 ? 60000 :
	    ctl->cf->wake_timeout_ms > WAKE_PROBE_MAX_MS ? WAKE_PROBE_MAX_MS :
	    (int)ctl->cf->wake_timeout_ms;
	snprintf(path, sizeof path, "/wait-port?host=%s&port=%d&timeout_ms=%d",
	    ip, rt->port, timeout_ms);
	agent_request(ctl->hub, rt->id, "GET", path, NULL, 0, timeout_ms,
	    wake_probe_cb, p);
}

/* agentd answered: the port accepts, or it gave up. */
static void
wake_probe_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct wake_probe	*p = arg;
	struct sandbox_rt	*rt = rt_find(p->ctl, p->id);

	if (rt != NULL && rt->generation == p->generation &&
	    rt->port_state == RT_PORT_PROBING) {
		if (status == 200 && rt->wake_started_ms != 0) {
			log_info("sandbox woke: its port accepts\tid=%s port=%d "
			    "ms=%" PRId64, rt->id, rt->port,
			    time_mono_ms() - rt->wake_started_ms);
			hist_observe(&p->ctl->wake_hist,
			    time_mono_ms() - rt->wake_started_ms);
		} else if (status == 200)
			log_debug("sandbox port accepts\tid=%s port=%d",
			    rt->id, rt->port);
		else
			log_info("sandbox port not accepting; proxying "
			    "anyway\tid=%s port=%d status=%d%s%s", rt->id,
			    rt->port, status, errmsg != NULL ? " error=" : "",
			    errmsg != NULL ? errmsg : "");
		rt->wake_started_ms = 0;
		/* Either way requests go through now: the app answers or not. */
		rt->port_state = RT_PORT_READY;
		rt_reserve_settle(rt);
		if (rt->nwaiters > 0)
			wake_release(p->ctl, rt, 1);
	}
	LIST_REMOVE(p, entry);
	free(p);
}

/* At exit: the probes agent_hub_free dropped without their callback. */
void
wake_free_all(struct control *ctl)
{
	struct wake_probe	*p;

	while ((p = LIST_FIRST(&ctl->probes)) != NULL) {
		LIST_REMOVE(p, entry);
		free(p);
	}
}
