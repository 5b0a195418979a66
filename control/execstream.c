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
 * which kills the command (as for the JSON form). A slow client pauses
 * agentd's stream (agent_pause) while the edge holds more than its high
 * mark for it, and agentd then stops reading the command's pipes: the
 * command waits, nothing piles up here. An error before the stream (a
 * bad cwd, say) is agentd's JSON error with its status, as for the JSON
 * form.
 *
 * The JSON form (execstream_collect) reads the same stream and answers
 * {"exit_code","stdout","stderr","timed_out","truncated"} at the exit
 * line, keeping at most EXEC_KEEP_MAX bytes of each stream: what comes
 * past that is read off the socket and dropped, and truncated is true.
 * So an exec costs at most that here, whatever agentd (or anything
 * posing as it) sends.
 */
#include "config.h"

#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"

#define EXECSTREAM_HEARTBEAT_MS	15000
#define EXEC_KEEP_MAX		(1024 * 1024)	/* per stream, JSON form */

struct execstream {
	struct control		*ctl;
	struct http_exchange	*ex;
	char			 sandbox_id[ID_LEN + 1];
	struct agent_req	*req;
	struct event		*heartbeat;
	int			 streaming;	/* the SSE head is sent */
	int			 done;		/* the exit event is sent */
	LIST_ENTRY(execstream)	 entry;

	/* execstream_collect: the JSON form */
	int			 collect;
	struct evbuffer		*kept[2];	/* stdout, stderr */
	uint64_t		 dropped[2];	/* bytes past EXEC_KEEP_MAX */
};

static int	execstream_head(struct execstream *);
static void	execstream_event(struct execstream *, const char *,
		    struct json_object *);
static void	execstream_end(struct execstream *);
static void	execstream_line_cb(const char *, size_t, void *);
static void	execstream_done_cb(int, const char *, size_t, const char *,
		    void *);
static void	execstream_gone_cb(struct http_exchange *, void *);
static void	execstream_drain_cb(struct http_exchange *, void *);
static void	execstream_start(struct control *, struct http_exchange *,
		    const char *, const char *, int, int);
static void	execstream_keep(struct execstream *, struct json_object *);
static void	execstream_answer(struct execstream *, struct json_object *);
static void	execstream_heartbeat_cb(evutil_socket_t, short, void *);

/* Post the exec to agentd; the answer streams as it comes. */
void
execstream_begin(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *body, int timeout_ms)
{
	execstream_start(ctl, ex, sandbox_id, body, timeout_ms, 0);
}

/* Post the exec to agentd; answer with the JSON form at its exit. */
void
execstream_collect(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *body, int timeout_ms)
{
	execstream_start(ctl, ex, sandbox_id, body, timeout_ms, 1);
}

static void
execstream_start(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *body, int timeout_ms, int collect)
{
	struct execstream	*es;

	es = xcalloc(1, sizeof *es);
	es->ctl = ctl;
	es->ex = ex;
	es->collect = collect;
	if (collect) {
		es->kept[0] = evbuffer_new();
		es->kept[1] = evbuffer_new();
	}
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
	    execstream_drain_cb, execstream_gone_cb, es) == -1) {
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
	/* Over the client's high mark: agentd waits until it drains. */
	if (http_exchange_stream_write(es->ex, frame, (size_t)n) == 1)
		agent_pause(es->req, 1);
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
	if (es->kept[0] != NULL)
		evbuffer_free(es->kept[0]);
	if (es->kept[1] != NULL)
		evbuffer_free(es->kept[1]);
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
	if (!es->collect && execstream_head(es) == -1) {
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
	if (es->collect) {
		if (strcmp(type, "output") == 0)
			execstream_keep(es, o);
		else if (strcmp(type, "exit") == 0) {
			es->done = 1;
			execstream_answer(es, o);
		}
		json_object_put(o);
		return;
	}
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

/*
 * An output event of the JSON form: keep its text while the stream has
 * room, cut at a character boundary, count the rest.
 */
static void
execstream_keep(struct execstream *es, struct json_object *o)
{
	struct json_object	*v;
	const char		*text;
	size_t			 len, room, n;
	int			 i;

	if (!json_object_object_get_ex(o, "stream", &v) ||
	    !json_object_is_type(v, json_type_string))
		return;
	if (strcmp(json_object_get_string(v), "stdout") == 0)
		i = 0;
	else if (strcmp(json_object_get_string(v), "stderr") == 0)
		i = 1;
	else
		return;
	if (!json_object_object_get_ex(o, "text", &v) ||
	    !json_object_is_type(v, json_type_string))
		return;
	text = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	/*
	 * Once something was dropped, nothing after it is kept: a later
	 * small piece fitting the few bytes left by a cut would leave a gap
	 * in what is shown as the output's start.
	 */
	room = es->dropped[i] > 0 ? 0 :
	    EXEC_KEEP_MAX - evbuffer_get_length(es->kept[i]);
	n = len < room ? len : room;
	/* Not in the middle of a UTF-8 sequence. */
	if (n < len) {
		while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
			n--;
	}
	evbuffer_add(es->kept[i], text, n);
	es->dropped[i] += len - n;
}

/* The exit line of the JSON form: answer 200 with what was kept. */
static void
execstream_answer(struct execstream *es, struct json_object *exit_ev)
{
	static const char *const keys[] = { "exit_code", "timed_out" };
	static const char *const names[] = { "stdout", "stderr" };
	struct http_exchange	*ex = es->ex;
	struct json_object	*d, *v;
	size_t			 i, n;
	int			 truncated = 0;

	d = json_object_new_object();
	for (i = 0; i < nitems(keys); i++) {
		if (json_object_object_get_ex(exit_ev, keys[i], &v))
			json_object_object_add(d, keys[i], json_object_get(v));
	}
	for (i = 0; i < nitems(names); i++) {
		n = evbuffer_get_length(es->kept[i]);
		json_object_object_add(d, names[i], json_object_new_string_len(
		    (const char *)evbuffer_pullup(es->kept[i], -1), (int)n));
		truncated = truncated || es->dropped[i] > 0;
	}
	if (json_object_object_get_ex(exit_ev, "truncated", &v) &&
	    json_object_get_boolean(v))
		truncated = 1;
	json_object_object_add(d, "truncated",
	    json_object_new_boolean(truncated));
	if (es->dropped[0] + es->dropped[1] > 0)
		log_debug("exec output over the cap dropped\tid=%s stdout=%llu "
		    "stderr=%llu", es->sandbox_id,
		    (unsigned long long)es->dropped[0],
		    (unsigned long long)es->dropped[1]);
	http_exchange_reply_json(ex, 200, json_object_to_json_string_ext(d,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(d);
	es->ex = NULL;
	execstream_end(es);
}

/* agentd's stream ended (or never began). */
static void
execstream_done_cb(int status, const char *body, size_t len,
    const char *errmsg, void *arg)
{
	struct execstream	*es = arg;
	struct json_object	*o;

	es->req = NULL;		/* the hub frees it */
	if (es->collect && status >= 200 && status < 300 && len == 0) {
		http_exchange_reply_error(es->ex, 503, "unavailable",
		    "the sandbox's agent ended the stream before the "
		    "command's exit");
		es->ex = NULL;
		execstream_end(es);
		return;
	}
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

/* The client took what was queued: read agentd's stream again. */
static void
execstream_drain_cb(struct http_exchange *ex, void *arg)
{
	struct execstream	*es = arg;

	agent_pause(es->req, 0);
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
