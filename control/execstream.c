/*
 * A streamed exec (API.md section 3: POST .../exec with Accept:
 * text/event-stream). agentd's streaming /exec (Accept:
 * application/x-ndjson) gives one JSON line per output line and a last
 * exit line; each becomes an SSE event:
 *
 *	event: output	data: {"stream":"stdout|stderr","text":"..."}
 *	event: exit	data: {"exit_code","signal","timed_out","truncated"}
 *
 * after which the stream ends. A stream cut before the exit line ends
 * with an `error` event. The client leaving cancels agentd's stream,
 * which kills the command (as for the JSON form). What is relayed is
 * bounded by agentd's max_output per stream, so a slow client costs at
 * most that in the edge's buffers; the command is not paused for it.
 * An error before the stream (a bad cwd, say) is agentd's JSON error
 * with its status, as for the JSON form.
 */
#include "config.h"

#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"

#define EXECSTREAM_HEARTBEAT_MS	15000

struct execstream {
	struct control		*ctl;
	struct http_exchange	*ex;
	char			 sandbox_id[ID_LEN + 1];
	struct agent_req	*req;
	struct event		*heartbeat;
	int			 streaming;	/* the SSE head is sent */
	int			 done;		/* the exit event is sent */
	LIST_ENTRY(execstream)	 entry;
};

static int	execstream_head(struct execstream *);
static void	execstream_event(struct execstream *, const char *,
		    struct json_object *);
static void	execstream_end(struct execstream *);
static void	execstream_line_cb(const char *, size_t, void *);
static void	execstream_done_cb(int, const char *, size_t, const char *,
		    void *);
static void	execstream_gone_cb(struct http_exchange *, void *);
static void	execstream_heartbeat_cb(evutil_socket_t, short, void *);

/* Post the exec to agentd; the answer streams as it comes. */
void
execstream_begin(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *body, int timeout_ms)
{
	struct execstream	*es;

	es = xcalloc(1, sizeof *es);
	es->ctl = ctl;
	es->ex = ex;
	snprintf(es->sandbox_id, sizeof es->sandbox_id, "%s", sandbox_id);
	LIST_INSERT_HEAD(&ctl->execstreams, es, entry);
	es->req = agent_stream(ctl->hub, sandbox_id, "POST", "/exec", body,
	    strlen(body), timeout_ms, execstream_line_cb, execstream_done_cb,
	    es);
}

/* The first line sends the head; -1 if the client left already. */
static int
execstream_head(struct execstream *es)
{
	struct timeval	tv = { EXECSTREAM_HEARTBEAT_MS / 1000, 0 };

	if (es->streaming)
		return (0);
	http_exchange_add_header(es->ex, "Cache-Control", "no-cache");
	http_exchange_add_header(es->ex, "X-Accel-Buffering", "no");
	if (http_exchange_stream_begin(es->ex, 200, "text/event-stream",
	    NULL, execstream_gone_cb, es) == -1) {
		es->ex = NULL;		/* freed */
		return (-1);
	}
	es->streaming = 1;
	es->heartbeat = event_new(es->ctl->base, -1, EV_PERSIST,
	    execstream_heartbeat_cb, es);
	evtimer_add(es->heartbeat, &tv);
	return (0);
}

/* Write one event (o is consumed). A client gone is told by gone_cb. */
static void
execstream_event(struct execstream *es, const char *event,
    struct json_object *o)
{
	char	*frame;
	int	 n;

	n = asprintf(&frame, "event: %s\ndata: %s\n\n", event,
	    json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	if (n < 0)
		fatalx("%s: out of memory", __func__);
	http_exchange_stream_write(es->ex, frame, (size_t)n);
	free(frame);
}

/* Unlink, stop agentd's stream, end the client's. */
static void
execstream_end(struct execstream *es)
{
	struct http_exchange	*ex = es->streaming ? es->ex : NULL;

	LIST_REMOVE(es, entry);
	if (es->req != NULL)
		agent_cancel(es->req);
	if (es->heartbeat != NULL)
		event_free(es->heartbeat);
	store_sandbox_touch(es->ctl->store, es->sandbox_id, time_now_ms());
	free(es);
	if (ex != NULL)
		http_exchange_stream_end(ex);
}

/* One line of agentd's stream: an output or the exit. */
static void
execstream_line_cb(const char *line, size_t len, void *arg)
{
	struct execstream	*es = arg;
	struct json_object	*o, *d, *v;
	const char		*type;
	static const char *const output_keys[] = { "stream", "text" };
	static const char *const exit_keys[] = { "exit_code", "signal",
	    "timed_out", "truncated" };
	const char *const	*keys;
	size_t			 i, nkeys;

	if (es->done)
		return;
	if (execstream_head(es) == -1) {
		execstream_end(es);
		return;
	}
	if ((o = json_tokener_parse(line)) == NULL ||
	    !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "type", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		json_object_put(o);
		log_warnx("exec stream: a malformed line from agentd: id=%s",
		    es->sandbox_id);
		return;
	}
	type = json_object_get_string(v);
	if (strcmp(type, "output") == 0) {
		keys = output_keys;
		nkeys = nitems(output_keys);
	} else if (strcmp(type, "exit") == 0) {
		keys = exit_keys;
		nkeys = nitems(exit_keys);
	} else {
		json_object_put(o);
		return;
	}
	/* Only the documented fields: the sandbox controls this side. */
	d = json_object_new_object();
	for (i = 0; i < nkeys; i++) {
		if (json_object_object_get_ex(o, keys[i], &v))
			json_object_object_add(d, keys[i],
			    json_object_get(v));
	}
	execstream_event(es, strcmp(type, "exit") == 0 ? "exit" : "output",
	    d);
	if (strcmp(type, "exit") == 0) {
		es->done = 1;
		json_object_put(o);
		execstream_end(es);
		return;
	}
	json_object_put(o);
}

/* agentd's stream ended (or never began). */
static void
execstream_done_cb(int status, const char *body, size_t len,
    const char *errmsg, void *arg)
{
	struct execstream	*es = arg;
	struct json_object	*o;

	es->req = NULL;		/* the hub frees it */
	if (es->streaming) {
		o = json_object_new_object();
		json_object_object_add(o, "message", json_object_new_string(
		    errmsg != NULL ? errmsg : "the sandbox's agent ended the "
		    "stream before the command's exit"));
		execstream_event(es, "error", o);
		execstream_end(es);
		return;
	}
	if (status == 0)
		http_exchange_reply_error(es->ex, 503, "unavailable",
		    "the sandbox's agent did not answer: %s",
		    errmsg != NULL ? errmsg : "?");
	else if (status < 200 || status > 599 ||
	    (status < 300 && len == 0))
		http_exchange_reply_error(es->ex, 500, "internal",
		    "the sandbox's agent answered HTTP %d without a stream",
		    status);
	else
		http_exchange_reply(es->ex, status, "application/json",
		    body, len);
	es->ex = NULL;
	execstream_end(es);
}

/* The client left: agentd's stream closes, which kills the command. */
static void
execstream_gone_cb(struct http_exchange *ex, void *arg)
{
	execstream_end(arg);
}

static void
execstream_heartbeat_cb(evutil_socket_t fd, short events, void *arg)
{
	struct execstream	*es = arg;

	http_exchange_stream_write(es->ex, ": heartbeat\n\n", 13);
}

/* At exit, before the hub goes. */
void
execstream_free_all(struct control *ctl)
{
	struct execstream	*es;

	while ((es = LIST_FIRST(&ctl->execstreams)) != NULL)
		execstream_end(es);
}
