/*
 * The dev server's routes (API.md section 3, docs/api.md): its logs (the
 * ring agentd keeps, or a follow stream relayed as SSE), a restart, and
 * the dev_server field of the sandbox object.
 *
 * Nothing here wakes a sandbox: the dev server only runs while its
 * sandbox runs, so a sandbox that is not running answers 409. A log
 * follower holds one agentd stream (GET /dev/logs?follow=1); its client
 * leaving cancels it, which agentd takes as the reader gone. While the
 * client is over the edge's high mark lines are dropped (agentd's stream
 * cannot be paused) and counted; the next line after the drain is
 * preceded by a `skipped` event, so memory stays bounded.
 *
 * dev_server is cached in the runtime: showing a sandbox starts a refresh
 * (GET /dev) when the cached value is older than DEV_REFRESH_MS and none
 * is under way, so listing sandboxes never waits for an agentd; the field
 * is left out until the first answer.
 */
#include "config.h"

#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"

#define DEV_HEARTBEAT_MS	15000
#define DEV_AGENTD_TIMEOUT_MS	15000
#define DEV_REFRESH_MS		2000

enum dev_call_kind {
	DEV_CALL_LOGS,
	DEV_CALL_FOLLOW,
	DEV_CALL_RESTART
};

struct dev_call {
	struct control		*ctl;
	enum dev_call_kind	 kind;
	char			 sandbox_id[ID_LEN + 1];
	struct http_exchange	*ex;
	struct agent_req	*req;		/* DEV_CALL_FOLLOW */
	struct event		*heartbeat;	/* DEV_CALL_FOLLOW */
	int			 streaming;	/* the SSE head is sent */
	int			 blocked;	/* the client is over its mark */
	uint64_t		 skipped;	/* bytes dropped while blocked */
	LIST_ENTRY(dev_call)	 entry;
};

static struct dev_call *dev_call_new(struct control *, enum dev_call_kind,
		    const char *, struct http_exchange *);
static void	dev_call_free(struct dev_call *);
static int	dev_running(struct control *, struct http_exchange *,
		    const char *);
static void	dev_logs_cb(int, const char *, size_t, const char *, void *);
static void	dev_follow_line_cb(const char *, size_t, void *);
static void	dev_follow_end_cb(int, const char *, size_t, const char *,
		    void *);
static void	dev_follow_drain_cb(struct http_exchange *, void *);
static void	dev_follow_gone_cb(struct http_exchange *, void *);
static void	dev_follow_heartbeat_cb(evutil_socket_t, short, void *);
static int	dev_follow_begin(struct dev_call *);
static int	dev_follow_write(struct dev_call *, const char *, size_t);
static void	dev_follow_end(struct dev_call *);
static void	dev_restart_cb(int, const char *, size_t, const char *,
		    void *);
static void	dev_cache_set(struct sandbox_rt *, const char *, size_t);
static void	dev_refresh_line_cb(const char *, size_t, void *);
static void	dev_refresh_end_cb(int, const char *, size_t, const char *,
		    void *);

static struct dev_call *
dev_call_new(struct control *ctl, enum dev_call_kind kind, const char *id,
    struct http_exchange *ex)
{
	struct dev_call	*c;

	c = xcalloc(1, sizeof *c);
	c->ctl = ctl;
	c->kind = kind;
	snprintf(c->sandbox_id, sizeof c->sandbox_id, "%s", id);
	c->ex = ex;
	LIST_INSERT_HEAD(&ctl->dev_calls, c, entry);
	return (c);
}

/* Unlink and free; the exchange is the caller's to have answered. */
static void
dev_call_free(struct dev_call *c)
{
	LIST_REMOVE(c, entry);
	if (c->req != NULL)
		agent_cancel(c->req);
	if (c->heartbeat != NULL)
		event_free(c->heartbeat);
	free(c);
}

/* 0 if the sandbox runs (its dev server can be asked), else 409 sent. */
static int
dev_running(struct control *ctl, struct http_exchange *ex, const char *id)
{
	struct sandbox_rt	*rt = rt_find(ctl, id);
	enum sandbox_state	 state;

	state = rt != NULL ? rt->state : SANDBOX_STOPPED;
	if (state == SANDBOX_RUNNING)
		return (0);
	http_exchange_reply_error(ex, 409, "conflict",
	    "sandbox is %s; the dev server runs only while the sandbox "
	    "runs (start it first)", store_sandbox_state_name(state));
	return (-1);
}

/* GET /v1/sandboxes/{id}/logs[?follow=1] */
void
dev_logs(struct control *ctl, struct http_exchange *ex, const char *id,
    int follow)
{
	struct dev_call	*c;

	if (dev_running(ctl, ex, id) == -1)
		return;
	if (!follow) {
		c = dev_call_new(ctl, DEV_CALL_LOGS, id, ex);
		agent_request(ctl->hub, id, "GET", "/dev/logs", NULL, 0,
		    DEV_AGENTD_TIMEOUT_MS, dev_logs_cb, c);
		return;
	}
	c = dev_call_new(ctl, DEV_CALL_FOLLOW, id, ex);
	c->req = agent_stream(ctl->hub, id, "GET", "/dev/logs?follow=1",
	    NULL, 0, DEV_AGENTD_TIMEOUT_MS, dev_follow_line_cb,
	    dev_follow_end_cb, c);
}

/* agentd's ring: relayed as it is. */
static void
dev_logs_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct dev_call		*c = arg;
	struct http_exchange	*ex = c->ex;

	dev_call_free(c);
	if (status == 0)
		http_exchange_reply_error(ex, 503, "unavailable",
		    "the sandbox's agent did not answer: %s",
		    errmsg != NULL ? errmsg : "?");
	else if (status != 200)
		http_exchange_reply_error(ex, 502, "bad_gateway",
		    "the sandbox's agent answered HTTP %d", status);
	else {
		http_exchange_add_header(ex, "Cache-Control", "no-store");
		http_exchange_reply(ex, 200, "text/plain; charset=utf-8",
		    body, len);
	}
}

/* The first line (or the end) of agentd's stream sends the SSE head. */
static int
dev_follow_begin(struct dev_call *c)
{
	if (c->streaming)
		return (0);
	http_exchange_add_header(c->ex, "Cache-Control", "no-cache");
	http_exchange_add_header(c->ex, "X-Accel-Buffering", "no");
	if (http_exchange_stream_begin(c->ex, 200, "text/event-stream",
	    dev_follow_drain_cb, dev_follow_gone_cb, c) == -1) {
		/* The client left already; the exchange is freed. */
		c->ex = NULL;
		return (-1);
	}
	c->streaming = 1;
	c->heartbeat = event_new(c->ctl->base, -1, EV_PERSIST,
	    dev_follow_heartbeat_cb, c);
	{
		struct timeval	tv = { DEV_HEARTBEAT_MS / 1000, 0 };

		evtimer_add(c->heartbeat, &tv);
	}
	return (0);
}

/* Write a frame unless the client is over its mark; -1 if it left. */
static int
dev_follow_write(struct dev_call *c, const char *frame, size_t len)
{
	int	r;

	if (c->blocked)
		return (0);
	r = http_exchange_stream_write(c->ex, frame, len);
	if (r == 1)
		c->blocked = 1;
	return (r == -1 ? -1 : 0);
}

/* One line of the dev server's output: an `log` event. */
static void
dev_follow_line_cb(const char *line, size_t len, void *arg)
{
	struct dev_call		*c = arg;
	struct json_object	*o;
	char			*frame;
	int			 n;

	if (dev_follow_begin(c) == -1) {
		dev_follow_end(c);
		return;
	}
	if (c->blocked) {
		c->skipped += len + 1;
		return;
	}
	if (c->skipped > 0) {
		n = asprintf(&frame, "event: skipped\ndata: {\"bytes\":%llu}"
		    "\n\n", (unsigned long long)c->skipped);
		if (n < 0)
			fatalx("%s: out of memory", __func__);
		c->skipped = 0;
		if (dev_follow_write(c, frame, (size_t)n) == -1) {
			free(frame);
			return;		/* gone ends it */
		}
		free(frame);
	}
	o = json_object_new_object();
	json_object_object_add(o, "text", json_object_new_string_len(line,
	    (int)len));
	n = asprintf(&frame, "event: log\ndata: %s\n\n",
	    json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	if (n < 0)
		fatalx("%s: out of memory", __func__);
	dev_follow_write(c, frame, (size_t)n);
	free(frame);
}

/* agentd ended the stream (it exited, or the sandbox stopped). */
static void
dev_follow_end_cb(int status, const char *body, size_t len,
    const char *errmsg, void *arg)
{
	struct dev_call	*c = arg;

	c->req = NULL;		/* the hub frees it */
	if (c->streaming) {
		dev_follow_end(c);
		return;
	}
	if (status == 0)
		http_exchange_reply_error(c->ex, 503, "unavailable",
		    "the sandbox's agent did not answer: %s",
		    errmsg != NULL ? errmsg : "?");
	else if (status >= 200 && status < 300)
		/* An empty stream that ended: agentd went away. */
		http_exchange_reply(c->ex, 200, "text/event-stream", "", 0);
	else
		http_exchange_reply_error(c->ex, 502, "bad_gateway",
		    "the sandbox's agent answered HTTP %d", status);
	dev_call_free(c);
}

/* End the SSE stream (if any) and free the follower. */
static void
dev_follow_end(struct dev_call *c)
{
	struct http_exchange	*ex = c->streaming ? c->ex : NULL;

	dev_call_free(c);
	if (ex != NULL)
		http_exchange_stream_end(ex);
}

static void
dev_follow_drain_cb(struct http_exchange *ex, void *arg)
{
	struct dev_call	*c = arg;

	c->blocked = 0;
}

/* The client left: stop agentd's stream. */
static void
dev_follow_gone_cb(struct http_exchange *ex, void *arg)
{
	dev_follow_end(arg);
}

static void
dev_follow_heartbeat_cb(evutil_socket_t fd, short events, void *arg)
{
	struct dev_call	*c = arg;

	dev_follow_write(c, ": heartbeat\n\n", 13);
}

/* POST /v1/sandboxes/{id}/restart-dev */
void
dev_restart(struct control *ctl, struct http_exchange *ex, const char *id)
{
	struct dev_call	*c;

	if (dev_running(ctl, ex, id) == -1)
		return;
	c = dev_call_new(ctl, DEV_CALL_RESTART, id, ex);
	agent_request(ctl->hub, id, "POST", "/dev/restart", NULL, 0,
	    DEV_AGENTD_TIMEOUT_MS, dev_restart_cb, c);
}

/* agentd's /dev object after the restart: {"dev_server": {...}}. */
static void
dev_restart_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct dev_call		*c = arg;
	struct http_exchange	*ex = c->ex;
	struct sandbox_rt	*rt;
	struct json_object	*o, *d, *v;

	if (status == 200 && (rt = rt_find(c->ctl, c->sandbox_id)) != NULL)
		dev_cache_set(rt, body, len);
	dev_call_free(c);
	if (status == 0) {
		http_exchange_reply_error(ex, 503, "unavailable",
		    "the sandbox's agent did not answer: %s",
		    errmsg != NULL ? errmsg : "?");
		return;
	}
	if (status == 409) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "the sandbox's template has no dev_command");
		return;
	}
	if (status != 200 || (d = json_tokener_parse(body)) == NULL ||
	    !json_object_is_type(d, json_type_object)) {
		http_exchange_reply_error(ex, 502, "bad_gateway",
		    "the sandbox's agent answered HTTP %d", status);
		return;
	}
	o = json_object_new_object();
	if (json_object_object_get_ex(d, "state", &v))
		json_object_object_add(o, "state", json_object_get(v));
	if (json_object_object_get_ex(d, "restarts", &v))
		json_object_object_add(o, "restarts", json_object_get(v));
	json_object_put(d);
	d = json_object_new_object();
	json_object_object_add(d, "dev_server", o);
	http_exchange_reply_json(ex, 200, json_object_to_json_string_ext(d,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(d);
}

/* Keep agentd's /dev state and restarts in the runtime. */
static void
dev_cache_set(struct sandbox_rt *rt, const char *body, size_t len)
{
	struct json_object	*d, *v;
	const char		*state;

	if (body == NULL || (d = json_tokener_parse(body)) == NULL)
		return;
	if (json_object_is_type(d, json_type_object) &&
	    json_object_object_get_ex(d, "state", &v) &&
	    json_object_is_type(v, json_type_string) &&
	    strlen(state = json_object_get_string(v)) < sizeof rt->dev_state &&
	    strspn(state, "abcdefghijklmnopqrstuvwxyz") == strlen(state) &&
	    json_object_object_get_ex(d, "restarts", &v) &&
	    json_object_is_type(v, json_type_int)) {
		snprintf(rt->dev_state, sizeof rt->dev_state, "%s", state);
		rt->dev_restarts = json_object_get_int(v);
		rt->dev_fetched_ms = time_mono_ms();
	}
	json_object_put(d);
}

/*
 * The sandbox object's dev_server (NULL while unknown or not running);
 * starts a refresh when the cached value is stale.
 */
struct json_object *
dev_server_json(struct control *ctl, const char *id)
{
	struct sandbox_rt	*rt = rt_find(ctl, id);
	struct json_object	*o;

	if (rt == NULL || rt->state != SANDBOX_RUNNING)
		return (NULL);
	if (rt->dev_req == NULL && agent_connected(ctl->hub, id) &&
	    (rt->dev_state[0] == '\0' ||
	    time_mono_ms() - rt->dev_fetched_ms >= DEV_REFRESH_MS))
		rt->dev_req = agent_stream(ctl->hub, id, "GET", "/dev", NULL,
		    0, DEV_AGENTD_TIMEOUT_MS, dev_refresh_line_cb,
		    dev_refresh_end_cb, rt);
	if (rt->dev_state[0] == '\0')
		return (NULL);
	o = json_object_new_object();
	json_object_object_add(o, "state",
	    json_object_new_string(rt->dev_state));
	json_object_object_add(o, "restarts",
	    json_object_new_int(rt->dev_restarts));
	return (o);
}

/* GET /dev answers in one line. */
static void
dev_refresh_line_cb(const char *line, size_t len, void *arg)
{
	dev_cache_set(arg, line, len);
}

static void
dev_refresh_end_cb(int status, const char *body, size_t len,
    const char *errmsg, void *arg)
{
	struct sandbox_rt	*rt = arg;

	rt->dev_req = NULL;	/* the hub frees it */
}

/* The runtime goes, or stops running: its refresh with it. */
void
dev_rt_gone(struct sandbox_rt *rt)
{
	if (rt->dev_req != NULL) {
		agent_cancel(rt->dev_req);
		rt->dev_req = NULL;
	}
}

/* At exit, before the hub goes: frees everything, calls nothing back. */
void
dev_free_all(struct control *ctl)
{
	struct dev_call		*c;

	while ((c = LIST_FIRST(&ctl->dev_calls)) != NULL) {
		if (c->kind == DEV_CALL_FOLLOW)
			dev_follow_end(c);
		else
			dev_call_free(c);
	}
}
