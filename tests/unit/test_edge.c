/*
 * edge end to end over real sockets on 127.0.0.1: the main thread runs one
 * event loop with the edge, an in-test origin (TCP and unix socket) and a
 * stand-in for the four control functions edge calls; a second thread is
 * the client, with blocking sockets and a 5 s receive timeout, and makes
 * every CHECK. alarm(120) bounds the whole run.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <nghttp2/nghttp2.h>

#include "edge/edge.h"
#include "edge/edge_int.h"
#include "tests/unit/unit.h"

#define ID_OK		"01jd3k5x8q2w7e9r4t6y1v3h5m"
#define ID_ERR		"01jd3k5x8q2w7e9r4t6y1v3h5n"
#define ID_STOPPED	"01jd3k5x8q2w7e9r4t6y1v3h5p"
#define ID_UNKNOWN	"01jd3k5x8q2w7e9r4t6y1v3h5q"
#define ID_HELD		"01jd3k5x8q2w7e9r4t6y1v3h5r"	/* woken after 300 ms */
#define ID_NEVER	"01jd3k5x8q2w7e9r4t6y1v3h5s"	/* held, never answered */
#define ID_WAKEFAIL	"01jd3k5x8q2w7e9r4t6y1v3h5t"	/* held, then fails */
#define ID_GEN		"01jd3k5x8q2w7e9r4t6y1v3h5v"	/* generation: gen_now */
#define ID_EVICT	"01jd3k5x8q2w7e9r4t6y1v3h5w"	/* held; evicts ID_OK */
#define ID_PRIVATE	"01jd3k5x8q2w7e9r4t6y1v3h5x"	/* private, running */
#define ID_PRIVHELD	"01jd3k5x8q2w7e9r4t6y1v3h5y"	/* private, stopped */
#define HOST_PRIVATE	ID_PRIVATE ".preview.localhost"
#define HOST_OK		ID_OK ".preview.localhost"
#define HOST_HELD	ID_HELD ".preview.localhost"
#define HOST_NEVER	ID_NEVER ".preview.localhost"
#define HOST_GEN	ID_GEN ".preview.localhost"
#define HOST_EVICT	ID_EVICT ".preview.localhost"
#define MIB		(1024 * 1024)

static struct event_base	*base;
static struct edge		*edge;
static int			 edge_port, origin_port, dead_port;
static char			 unix_path[108];
static int			 origin_accepts;	/* atomic */
static int			 origin_dropped;	/* atomic */
static int			 preview_opened, preview_closed; /* atomic */
static int			 detached_replies;	/* atomic */
static int			 stream_gone;		/* atomic */
static int			 stream_blocked;	/* atomic */
static int			 stream_drains;		/* atomic */
static int			 shutdown_done;		/* atomic */
static int			 origin_closed;		/* atomic: by the proxy */
static int			 origin_admin;		/* atomic: /admin seen */
/*
 * The defenses' edge (test_defenses): short timeouts and small caps, on
 * 127.0.0.1 and a dual-stack [::], made and freed on the loop.
 */
static struct config		 cfg2;
static struct cfg_addr		 listen2[2];
static struct edge		*edge2;
static int			 edge2_port, edge2_port6;	/* atomic */
static int			 ctl_pipe[2];	/* client thread -> loop */
/* The stand-in's held lookups (atomic counters, list on the loop only). */
static int			 waits_made, waits_answered, waits_cancelled;
static int			 bad_cancels, waits_live;
static int			 gen_now = 1;		/* atomic */
/* Activity reports by kind: +1s and -1s; a count below 0 anywhere. */
static int			 act_plus[3], act_minus[3], act_negative;
static control_retire_cb	 retire_cb;
/* The stand-in's preview secret; lookups of ID_PRIVHELD (atomic). */
static const uint8_t		 test_key[TOKEN_KEY_LEN] =
				    "0123456789abcdef0123456789abcde";
static int			 private_lookups;
static void			*retire_arg;
/*
 * Retire ID_GEN from inside control_activity, once (atomic): on its
 * REQUEST +1, its TUNNEL +1, or its REQUEST -1, as control may.
 */
enum { REENTER_NONE, REENTER_REQUEST_UP, REENTER_TUNNEL_UP,
    REENTER_REQUEST_DOWN };
static int			 reenter;
static int			 reentered;

#define ALOAD(p)	__atomic_load_n((p), __ATOMIC_SEQ_CST)
#define AINC(p)		__atomic_add_fetch((p), 1, __ATOMIC_SEQ_CST)
#define ASTORE(p, v)	__atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

/* ------------------------------------------------------------------ */
/* Stand-in control */

struct control {
	int	unused;
};

/* A held lookup, answered by its timer (or never: ev NULL). */
struct control_wait {
	TAILQ_ENTRY(control_wait) entry;
	control_target_cb	 cb;
	void			*arg;
	char			 id[ID_LEN + 1];
	int			 port;
	struct event		*ev;
};
static TAILQ_HEAD(, control_wait) waits = TAILQ_HEAD_INITIALIZER(waits);

/* Live activity counts per sandbox and kind, to catch a -1 too many. */
static struct {
	char	id[ID_LEN + 1];
	int	n[3];
} act_live[16];

/* Fill t for a sandbox that runs: the origin (port 0) or another port. */
static void
stand_running(const char *id, int port, struct control_target *t)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)&t->addr;

	t->kind = TARGET_OK;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin->sin_port = htons(port == 0 ? origin_port : port);
	t->addrlen = sizeof *sin;
	t->generation = strcmp(id, ID_GEN) == 0 ? (uint64_t)ALOAD(&gen_now) :
	    1;
}

/* A held lookup's answer is due. */
static void
wait_answer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct control_wait	*w = arg;
	struct control_target	 t;

	memset(&t, 0, sizeof t);
	snprintf(t.sandbox_id, sizeof t.sandbox_id, "%s", w->id);
	if (strcmp(w->id, ID_WAKEFAIL) == 0) {
		t.kind = TARGET_UNAVAILABLE;
		t.message = "The sandbox failed to start.";
		t.retry_after_s = 7;
	} else
		stand_running(w->id, w->port, &t);
	TAILQ_REMOVE(&waits, w, entry);
	event_free(w->ev);
	__atomic_sub_fetch(&waits_live, 1, __ATOMIC_SEQ_CST);
	AINC(&waits_answered);
	w->cb(&t, w->arg);
	free(w);
}

enum control_lookup
control_target_lookup(struct control *ctl, const char *id, int port,
    struct control_target *t, control_target_cb cb, void *arg,
    struct control_wait **wait)
{
	struct control_wait	*w;
	struct timeval		 tv = { 0, 300 * 1000 };

	*wait = NULL;
	memset(t, 0, sizeof *t);
	snprintf(t->sandbox_id, sizeof t->sandbox_id, "%s", id);
	/*
	 * Waking it takes room: control stops the sandbox idle the longest,
	 * and retires it from inside this call.
	 */
	if (strcmp(id, ID_EVICT) == 0 && retire_cb != NULL)
		retire_cb(ID_OK, retire_arg);
	if (strcmp(id, ID_HELD) == 0 || strcmp(id, ID_NEVER) == 0 ||
	    strcmp(id, ID_WAKEFAIL) == 0 || strcmp(id, ID_EVICT) == 0) {
		w = calloc(1, sizeof *w);
		w->cb = cb;
		w->arg = arg;
		w->port = port;
		snprintf(w->id, sizeof w->id, "%s", id);
		if (strcmp(id, ID_NEVER) != 0) {
			if (strcmp(id, ID_WAKEFAIL) == 0)
				tv.tv_usec = 100 * 1000;
			w->ev = evtimer_new(base, wait_answer_cb, w);
			evtimer_add(w->ev, &tv);
		}
		TAILQ_INSERT_TAIL(&waits, w, entry);
		AINC(&waits_made);
		AINC(&waits_live);
		*wait = w;
		return CONTROL_LOOKUP_HELD;
	}
	if (strcmp(id, ID_PRIVHELD) == 0)
		AINC(&private_lookups);
	if (strcmp(id, ID_OK) == 0 || strcmp(id, ID_GEN) == 0 ||
	    strcmp(id, ID_PRIVATE) == 0)
		stand_running(id, port, t);
	else if (strcmp(id, ID_ERR) == 0) {
		t->kind = TARGET_ERROR;
		t->message = "The sandbox failed: <exit 1>";
	} else if (strcmp(id, ID_STOPPED) == 0) {
		t->kind = TARGET_UNAVAILABLE;
		t->message = "The sandbox is stopped.";
		t->retry_after_s = 5;
	} else
		t->kind = TARGET_UNKNOWN;
	return CONTROL_LOOKUP_DONE;
}


int
control_preview_private(struct control *ctl, const char *id)
{
	return strcmp(id, ID_PRIVATE) == 0 || strcmp(id, ID_PRIVHELD) == 0;
}

int
control_preview_verify(struct control *ctl, const char *id, const char *tok,
    size_t len, int64_t *expires)
{
	const char	*why;

	return token_verify(test_key, sizeof test_key, tok, len, id,
	    time_now_ms() / 1000, expires, &why);
}

void
control_wait_cancel(struct control_wait *w)
{
	struct control_wait	*x;

	TAILQ_FOREACH(x, &waits, entry) {
		if (x == w)
			break;
	}
	if (x == NULL) {
		/* Twice, after its answer, or never made: a bug. */
		AINC(&bad_cancels);
		return;
	}
	TAILQ_REMOVE(&waits, w, entry);
	if (w->ev != NULL)
		event_free(w->ev);
	free(w);
	__atomic_sub_fetch(&waits_live, 1, __ATOMIC_SEQ_CST);
	AINC(&waits_cancelled);
}

void
control_activity(struct control *ctl, const char *id,
    enum control_activity what, int delta)
{
	size_t	i;

	if (retire_cb != NULL && strcmp(id, ID_GEN) == 0 &&
	    ((ALOAD(&reenter) == REENTER_REQUEST_UP &&
	    what == ACTIVITY_REQUEST && delta > 0) ||
	    (ALOAD(&reenter) == REENTER_TUNNEL_UP &&
	    what == ACTIVITY_TUNNEL && delta > 0) ||
	    (ALOAD(&reenter) == REENTER_REQUEST_DOWN &&
	    what == ACTIVITY_REQUEST && delta < 0))) {
		ASTORE(&reenter, REENTER_NONE);
		AINC(&reentered);
		/* Counted first: the nested calls count too. */
		control_activity(ctl, id, what, delta);
		retire_cb(id, retire_arg);
		return;
	}
	if (delta > 0) {
		AINC(&act_plus[what]);
		if (what == ACTIVITY_CONN)
			AINC(&preview_opened);
	} else {
		AINC(&act_minus[what]);
		if (what == ACTIVITY_CONN)
			AINC(&preview_closed);
	}
	for (i = 0; i < nitems(act_live); i++) {
		if (strcmp(act_live[i].id, id) == 0 ||
		    act_live[i].id[0] == '\0')
			break;
	}
	if (i == nitems(act_live))
		return;
	snprintf(act_live[i].id, sizeof act_live[i].id, "%s", id);
	act_live[i].n[what] += delta;
	if (act_live[i].n[what] < 0)
		AINC(&act_negative);
}

void
control_set_retire_cb(struct control *ctl, control_retire_cb cb, void *arg)
{
	retire_cb = cb;
	retire_arg = arg;
}

/* The edge's part of /metrics: kept, so a test can call it. */
static control_metrics_cb metrics_cb;
static void *metrics_arg;

void
control_set_metrics_cb(struct control *ctl, control_metrics_cb cb, void *arg)
{
	metrics_cb = cb;
	metrics_arg = arg;
}

uint64_t
control_api_body_limit(struct control *ctl, struct http_exchange *ex)
{
	/* A route no valid caller could reach: no body is read for it. */
	if (strcmp(ex->path, "/v1/denied") == 0)
		return 0;
	return 1024;
}

/* The API's answer: method, path, query, header count, body. */
static void
api_echo(struct http_exchange *ex)
{
	struct evbuffer	*b = evbuffer_new();
	const char	*ua = http_exchange_header(ex, "user-agent");

	evbuffer_add_printf(b, "%s %s q=%s ua=%s peer=%.10s body=", ex->method,
	    ex->path, ex->query != NULL ? ex->query : "-",
	    ua != NULL ? ua : "-", ex->peer);
	evbuffer_add_buffer(b, ex->body);
	if (ex->conn == NULL)
		AINC(&detached_replies);
	http_exchange_add_header(ex, "X-Api", "1");
	http_exchange_reply_buffer(ex, 200, "text/plain", b);
	evbuffer_free(b);
}

/* A deferred reply fires. */
static void
api_deferred_cb(evutil_socket_t fd, short events, void *arg)
{
	api_echo(arg);
}

/*
 * A streamed answer: nchunks chunks of size bytes (a byte pattern) as
 * fast as the client takes them, or ("forever") a small one every 10 ms
 * until the client leaves.
 */
struct api_stream {
	struct http_exchange	*ex;
	struct event		*ev;
	int			 left;
	size_t			 size;
	int			 forever;
	uint64_t		 sent;
};

static void	api_stream_pump_cb(evutil_socket_t, short, void *);

static void
api_stream_free(struct api_stream *st)
{
	event_free(st->ev);
	http_exchange_stream_end(st->ex);
	free(st);
}

static void
api_stream_drain_cb(struct http_exchange *ex, void *arg)
{
	struct api_stream	*st = arg;

	AINC(&stream_drains);
	event_active(st->ev, EV_TIMEOUT, 0);
}

static void
api_stream_gone_cb(struct http_exchange *ex, void *arg)
{
	AINC(&stream_gone);
	api_stream_free(arg);
}

static void
api_stream_pump_cb(evutil_socket_t fd, short events, void *arg)
{
	struct api_stream	*st = arg;
	struct timeval		 tv = { 0, 10 * 1000 };
	char			*buf;
	size_t			 i;
	int			 r;

	if (st->forever) {
		if (http_exchange_stream_write(st->ex, "tick\n", 5) == -1)
			return;
		evtimer_add(st->ev, &tv);
		return;
	}
	buf = malloc(st->size);
	while (st->left > 0) {
		for (i = 0; i < st->size; i++)
			buf[i] = 'a' + (st->sent + i) % 26;
		r = http_exchange_stream_write(st->ex, buf, st->size);
		st->sent += st->size;
		st->left--;
		if (r == 1) {
			/* Over the high mark: wait for the drain. */
			AINC(&stream_blocked);
			free(buf);
			return;
		}
		if (st->size < 16) {
			/* Small ones one per turn, so they go out apart. */
			evtimer_add(st->ev, &tv);
			free(buf);
			return;
		}
	}
	free(buf);
	api_stream_free(st);
}

static void
api_stream_start(struct http_exchange *ex, int nchunks, size_t size,
    int forever)
{
	struct api_stream	*st;

	st = calloc(1, sizeof *st);
	st->ex = ex;
	st->left = nchunks;
	st->size = size;
	st->forever = forever;
	st->ev = evtimer_new(base, api_stream_pump_cb, st);
	http_exchange_add_header(ex, "Cache-Control", "no-cache");
	if (http_exchange_stream_begin(ex, 200, "text/event-stream",
	    api_stream_drain_cb, api_stream_gone_cb, st) == -1) {
		event_free(st->ev);
		free(st);
		return;
	}
	event_active(st->ev, EV_TIMEOUT, 0);
}

void
control_api_dispatch(struct control *ctl, struct http_exchange *ex)
{
	struct timeval	tv = { 0, 0 };

	if (strcmp(ex->path, "/v1/echo") == 0)
		api_echo(ex);
	else if (strcmp(ex->path, "/v1/stream") == 0)
		api_stream_start(ex, 3, 2, 0);
	else if (strcmp(ex->path, "/v1/stream-big") == 0)
		api_stream_start(ex, 64, 128 * 1024, 0);
	else if (strcmp(ex->path, "/v1/stream-forever") == 0)
		api_stream_start(ex, 0, 0, 1);
	else if (strcmp(ex->path, "/v1/deferred") == 0) {
		tv.tv_usec = 50 * 1000;
		event_base_once(base, -1, EV_TIMEOUT, api_deferred_cb, ex, &tv);
	} else if (strcmp(ex->path, "/v1/slow") == 0) {
		tv.tv_usec = 300 * 1000;
		event_base_once(base, -1, EV_TIMEOUT, api_deferred_cb, ex, &tv);
	} else if (strcmp(ex->path, "/v1/nocontent") == 0)
		http_exchange_reply(ex, 204, NULL, NULL, 0);
	else
		http_exchange_reply_error(ex, 404, "not_found", "no route %s",
		    ex->path);
}

/* ------------------------------------------------------------------ */
/* The origin: a small HTTP/1.1 server with test endpoints. */

struct origin_conn {
	struct bufferevent	*bev;
	int			 serial;
	int			 in_body;
	int			 ws;
	int			 closing;
	int			 drop_next;	/* close on the next request, mute */
	enum http_body_kind	 bk;
	uint64_t		 left;
	struct http_chunked	 ch;
	struct evbuffer		*body;
	char			 method[16];
	char			 target[256];
	char			*head;
	int			 keepalive;
	int			 early;		/* answered before the body */
	struct event		*later;		/* a delayed write */
	char			 later_data[256];
};

/* Decoded request body bytes. */
static void
origin_data_cb(void *arg, const char *p, size_t len)
{
	struct origin_conn	*oc = arg;

	evbuffer_add(oc->body, p, len);
}

/* Free an origin connection. */
static void
origin_conn_free(struct origin_conn *oc)
{
	if (oc->later != NULL)
		event_free(oc->later);
	bufferevent_free(oc->bev);
	evbuffer_free(oc->body);
	free(oc->head);
	free(oc);
}

/* A delayed write is due. */
static void
origin_later_cb(evutil_socket_t fd, short events, void *arg)
{
	struct origin_conn	*oc = arg;

	bufferevent_write(oc->bev, oc->later_data, strlen(oc->later_data));
}

/* Write data ms from now (on this connection, cancelled if it closes). */
static void
origin_later(struct origin_conn *oc, int ms, const char *data)
{
	struct timeval	tv = { ms / 1000, (ms % 1000) * 1000 };

	if (oc->later == NULL)
		oc->later = evtimer_new(base, origin_later_cb, oc);
	snprintf(oc->later_data, sizeof oc->later_data, "%s", data);
	evtimer_add(oc->later, &tv);
}

/* Byte i of the bodies /pat/ serves: no period a relay could hide in. */
static char
pattern_byte(size_t i)
{
	return (char)('!' + (i + i / 251) % 89);
}

/*
 * /pat/<n>/<framing>: n pattern bytes with Content-Length ("len"), the
 * same followed by 4 bytes too many ("junk"), in chunks of uneven sizes
 * ("chunked"), or until close ("close").
 */
static void
origin_pattern(struct origin_conn *oc, struct evbuffer *out)
{
	static const size_t	 sizes[] = { 1, 1000, 7001, 40000, 100003 };
	char			*end, *body;
	size_t			 n, i, k, off;

	n = strtoul(oc->target + 5, &end, 10);
	body = malloc(n + 1);
	for (i = 0; i < n; i++)
		body[i] = pattern_byte(i);
	if (strcmp(end, "/len") == 0 || strcmp(end, "/junk") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nX-Origin-Conn: %d"
		    "\r\nContent-Length: %zu\r\n\r\n", oc->serial, n);
		evbuffer_add(out, body, n);
		if (strcmp(end, "/junk") == 0) {
			/* Bytes past the body, in the same write. */
			evbuffer_add(out, "JUNK", 4);
			bufferevent_set_max_single_write(oc->bev, n + 1024);
		}
	} else if (strcmp(end, "/chunked") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nX-Origin-Conn: %d"
		    "\r\nTransfer-Encoding: chunked\r\n\r\n", oc->serial);
		for (off = 0, i = 0; off < n; off += k, i++) {
			k = sizes[i % nitems(sizes)];
			if (k > n - off)
				k = n - off;
			evbuffer_add_printf(out, "%zx\r\n", k);
			evbuffer_add(out, body + off, k);
			evbuffer_add(out, "\r\n", 2);
		}
		evbuffer_add_printf(out, "0\r\n\r\n");
	} else {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\n\r\n");
		evbuffer_add(out, body, n);
		oc->closing = 1;
	}
	free(body);
}

/* Write the answer to the request just read. */
static void
origin_respond(struct origin_conn *oc)
{
	struct evbuffer	*out = bufferevent_get_output(oc->bev);
	size_t		 len = evbuffer_get_length(oc->body);
	char		*big;

	if (oc->drop_next) {
		/* As if it closed the idle connection just as it was reused. */
		AINC(&origin_dropped);
		oc->closing = 1;
	} else if (strcmp(oc->target, "/drop-next") == 0) {
		oc->drop_next = 1;
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "2\r\n\r\nok");
	} else if (strncmp(oc->target, "/pat/", 5) == 0) {
		origin_pattern(oc, out);
	} else if (strcmp(oc->target, "/bye") == 0) {
		/* Keep-alive by the head, then closed all the same. */
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "3\r\n\r\nbye");
		oc->closing = 1;
	} else if (strncmp(oc->target, "/echo", 5) == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nX-Origin-Conn: %d"
		    "\r\nContent-Length: %zu\r\n\r\n%s %s\n", oc->serial,
		    strlen(oc->method) + strlen(oc->target) + 2 + len,
		    oc->method, oc->target);
		evbuffer_add_buffer(out, oc->body);
	} else if (strcmp(oc->target, "/headers") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "%zu\r\n\r\n%s", strlen(oc->head), oc->head);
	} else if (strcmp(oc->target, "/setcookie") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\n"
		    "Set-Cookie: a=1; Domain=preview.localhost; Path=/\r\n"
		    "set-cookie: b=2;path=/x;  DOMAIN =.preview.localhost ;"
		    "HttpOnly\r\n"
		    "Set-Cookie: c=3; Path=/; Secure\r\n"
		    "Set-Cookie: Domain=d; Max-Age=5;domain\r\n"
		    "Content-Length: 2\r\n\r\nok");
	} else if (strcmp(oc->target, "/head") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "5\r\n\r\n%s", strcmp(oc->method, "HEAD") == 0 ? "" :
		    "hello");
	} else if (strcmp(oc->target, "/204") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 204 No Content\r\n\r\n");
	} else if (strcmp(oc->target, "/304") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 304 Not Modified\r\n"
		    "ETag: \"x\"\r\n\r\n");
	} else if (strcmp(oc->target, "/hop") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nConnection: "
		    "keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: "
		    "timeout=5\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok");
	} else if (strcmp(oc->target, "/chunked") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding:"
		    " chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world"
		    "\r\n0\r\nX-Trailer: t\r\n\r\n");
	} else if (strcmp(oc->target, "/1xx") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 103 Early Hints\r\nLink: "
		    "</s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
		    "\r\nfinal");
	} else if (strcmp(oc->target, "/big") == 0) {
		big = malloc(MIB);
		memset(big, 'b', MIB);
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "%d\r\n\r\n", MIB);
		evbuffer_add(out, big, MIB);
		free(big);
	} else if (strcmp(oc->target, "/close") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: "
		    "text/plain\r\n\r\nuntil the end");
		oc->closing = 1;
	} else if (strcmp(oc->target, "/ws") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 101 Switching Protocols\r\n"
		    "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
		oc->ws = 1;
	} else if (strcmp(oc->target, "/bad") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 2xx Broken\r\n\r\n");
		oc->closing = 1;
	} else if (strcmp(oc->target, "/slowbody") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "10\r\n\r\nhello");
		origin_later(oc, 200, "world");
	} else if (strcmp(oc->target, "/halfbody") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "10\r\n\r\nhello");
		origin_later(oc, 1500, "world");
	} else if (strcmp(oc->target, "/delay") == 0) {
		/* Nothing at all for 500 ms. */
		origin_later(oc, 500, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "7\r\n\r\ndelayed");
	} else if (strcmp(oc->target, "/trunc") == 0) {
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: "
		    "10\r\n\r\nhello");
		oc->closing = 1;
	} else if (strcmp(oc->target, "/never") == 0) {
		/* No answer at all; the connection stays. */
	} else if (strcmp(oc->target, "/204cl") == 0) {
		/* A broken server: a 204 announcing and sending a body. */
		evbuffer_add_printf(out, "HTTP/1.1 204 No Content\r\n"
		    "X-Origin-Conn: %d\r\nContent-Length: 5\r\n\r\nHTTP/",
		    oc->serial);
	} else if (strcmp(oc->target, "/1xxbody") == 0) {
		/* A broken server: an interim response with a body. */
		evbuffer_add_printf(out, "HTTP/1.1 100 Continue\r\n"
		    "Content-Length: 5\r\n\r\nhello");
	} else if (strcmp(oc->target, "/reset") == 0) {
		oc->closing = 1;	/* close without a byte */
	} else {
		evbuffer_add_printf(out, "HTTP/1.1 404 Not Found\r\n"
		    "Content-Length: 0\r\n\r\n");
	}
	if (!oc->keepalive)
		oc->closing = 1;
	evbuffer_drain(oc->body, evbuffer_get_length(oc->body));
	free(oc->head);
	oc->head = NULL;
	oc->in_body = 0;
}

/* Origin: request bytes. */
static void
origin_read_cb(struct bufferevent *bev, void *arg)
{
	struct origin_conn		*oc = arg;
	struct evbuffer			*in = bufferevent_get_input(bev);
	struct evbuffer_iovec		 v[16];
	struct http_request_head	 h;
	const struct http_header	*c;
	size_t				 len, used;
	ssize_t				 r;
	int				 n, i;

	while (!oc->closing) {
		if (oc->ws) {
			evbuffer_add_buffer(bufferevent_get_output(bev), in);
			return;
		}
		if (!oc->in_body) {
			len = evbuffer_get_length(in);
			if (len == 0)
				return;
			r = http_parse_request((char *)evbuffer_pullup(in, -1),
			    len, &h);
			if (r == -2)
				return;
			if (r < 0 || http_request_body(&h, &oc->bk,
			    &oc->left) != 0) {
				oc->closing = 1;
				break;
			}
			snprintf(oc->method, sizeof oc->method, "%.*s",
			    (int)h.method_len, h.method);
			snprintf(oc->target, sizeof oc->target, "%.*s",
			    (int)h.target_len, h.target);
			oc->head = strndup((char *)evbuffer_pullup(in, r), r);
			c = http_header_find(h.headers, h.nheaders,
			    "connection");
			oc->keepalive = c == NULL ||
			    !http_header_has_token(c, "close");
			http_chunked_init(&oc->ch);
			evbuffer_drain(in, r);
			oc->in_body = 1;
			if (strncmp(oc->target, "/admin", 6) == 0)
				AINC(&origin_admin);
			if (strcmp(oc->target, "/early") == 0) {
				/* Answered at once; the body is read after. */
				evbuffer_add_printf(bufferevent_get_output(bev),
				    "HTTP/1.1 200 OK\r\nX-Origin-Conn: %d\r\n"
				    "Content-Length: 5\r\n\r\nearly",
				    oc->serial);
				oc->early = 1;
			}
		}
		if (oc->bk == HTTP_BODY_LENGTH) {
			len = evbuffer_get_length(in);
			if (len > oc->left)
				len = oc->left;
			evbuffer_remove_buffer(in, oc->body, len);
			oc->left -= len;
			if (oc->left > 0)
				return;
		} else if (oc->bk == HTTP_BODY_CHUNKED) {
			n = evbuffer_peek(in, -1, NULL, v, 16);
			if (n > 16)
				n = 16;
			used = 0;
			for (i = 0; i < n && !oc->ch.done; i++) {
				r = http_chunked_scan(&oc->ch, v[i].iov_base,
				    v[i].iov_len, origin_data_cb, oc);
				if (r < 0) {
					oc->closing = 1;
					break;
				}
				used += r;
			}
			evbuffer_drain(in, used);
			if (oc->closing)
				break;
			if (!oc->ch.done)
				return;
		}
		if (oc->early) {
			oc->early = 0;
			oc->in_body = 0;
			evbuffer_drain(oc->body, evbuffer_get_length(oc->body));
			free(oc->head);
			oc->head = NULL;
			continue;
		}
		origin_respond(oc);
	}
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		origin_conn_free(oc);
}

/* Origin: output flushed; close if asked. */
static void
origin_write_cb(struct bufferevent *bev, void *arg)
{
	struct origin_conn	*oc = arg;

	if (oc->closing)
		origin_conn_free(oc);
}

/* Origin: the proxy closed. */
static void
origin_event_cb(struct bufferevent *bev, short what, void *arg)
{
	AINC(&origin_closed);
	origin_conn_free(arg);
}

/* Origin: a new connection from the proxy. */
static void
origin_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int len, void *arg)
{
	struct origin_conn	*oc = calloc(1, sizeof *oc);

	oc->serial = AINC(&origin_accepts);
	oc->body = evbuffer_new();
	oc->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(oc->bev, origin_read_cb, origin_write_cb,
	    origin_event_cb, oc);
	bufferevent_enable(oc->bev, EV_READ | EV_WRITE);
}

/* ------------------------------------------------------------------ */
/* The client side (runs in its own thread, blocking sockets). */

struct cli {
	int	 fd;
	char	*buf;
	size_t	 len;
	size_t	 size;
};

struct resp {
	int	 status;
	int	 interim;	/* 1xx seen before it */
	char	 head[8192];
	char	*body;
	size_t	 bodylen;
};

/* Connect to a TCP port on 127.0.0.1. */
static int
cli_open(struct cli *c, int port)
{
	struct sockaddr_in	sin;
	struct timeval		tv = { 5, 0 };

	memset(c, 0, sizeof *c);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(port);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(c->fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	return 0;
}

/* Connect to the edge. */
static int
cli_connect(struct cli *c)
{
	return cli_open(c, edge_port);
}

static void
cli_close(struct cli *c)
{
	if (c->fd != -1)
		close(c->fd);
	free(c->buf);
	c->fd = -1;
	c->buf = NULL;
}

/* Send all bytes. */
static int
cli_send(struct cli *c, const void *p, size_t len)
{
	ssize_t	n;

	while (len > 0) {
		if ((n = send(c->fd, p, len, MSG_NOSIGNAL)) <= 0)
			return -1;
		p = (const char *)p + n;
		len -= n;
	}
	return 0;
}

static int
cli_sends(struct cli *c, const char *s)
{
	return cli_send(c, s, strlen(s));
}

/* Read more bytes; 0 on EOF, -1 on error or timeout. */
static ssize_t
cli_fill(struct cli *c)
{
	ssize_t	n;

	if (c->size - c->len < 65536) {
		c->size = c->size * 2 + 65536;
		c->buf = realloc(c->buf, c->size);
	}
	n = recv(c->fd, c->buf + c->len, c->size - c->len, 0);
	if (n > 0)
		c->len += n;
	return n;
}

/* Drop n bytes from the front of the buffer. */
static void
cli_consume(struct cli *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* Chunk payloads of a response. */
static void
cli_data_cb(void *arg, const char *p, size_t len)
{
	struct resp	*r = arg;

	r->body = realloc(r->body, r->bodylen + len + 1);
	memcpy(r->body + r->bodylen, p, len);
	r->bodylen += len;
	r->body[r->bodylen] = '\0';
}

/* Read one response to a request with this method; 0 or -1. */
static int
cli_recv(struct cli *c, const char *method, struct resp *r)
{
	struct http_response_head	 h;
	struct http_chunked		 ch;
	enum http_body_kind		 bk;
	uint64_t			 len;
	ssize_t				 n;
	int				 hl;

	memset(r, 0, sizeof *r);
	r->body = calloc(1, 1);
	for (;;) {
		hl = c->len > 0 ? http_parse_response(c->buf, c->len, &h) : -2;
		if (hl == -1)
			return -1;
		if (hl == -2) {
			if (cli_fill(c) <= 0)
				return -1;
			continue;
		}
		if (h.status >= 100 && h.status < 200 && h.status != 101) {
			r->interim++;
			cli_consume(c, hl);
			continue;
		}
		break;
	}
	r->status = h.status;
	snprintf(r->head, sizeof r->head, "%.*s", hl, c->buf);
	if (h.status == 101) {
		cli_consume(c, hl);
		return 0;
	}
	if (http_response_body(&h, method, &bk, &len) != 0)
		return -1;
	cli_consume(c, hl);
	switch (bk) {
	case HTTP_BODY_NONE:
		break;
	case HTTP_BODY_LENGTH:
		while (c->len < len) {
			if (cli_fill(c) <= 0)
				return -1;
		}
		cli_data_cb(r, c->buf, len);
		cli_consume(c, len);
		break;
	case HTTP_BODY_CHUNKED:
		http_chunked_init(&ch);
		for (;;) {
			n = http_chunked_scan(&ch, c->buf, c->len, cli_data_cb,
			    r);
			if (n < 0)
				return -1;
			cli_consume(c, n);
			if (ch.done)
				break;
			if (cli_fill(c) <= 0)
				return -1;
		}
		break;
	case HTTP_BODY_UNTIL_CLOSE:
		while ((n = cli_fill(c)) > 0)
			;
		if (n < 0)
			return -1;
		cli_data_cb(r, c->buf, c->len);
		cli_consume(c, c->len);
		break;
	}
	return 0;
}

static void
resp_free(struct resp *r)
{
	free(r->body);
	r->body = NULL;
}

/* 1 if the response head has a header line "name: value" (any case). */
static int
resp_has(const struct resp *r, const char *line)
{
	char	needle[512];

	snprintf(needle, sizeof needle, "\r\n%s\r\n", line);
	return strcasestr(r->head, needle) != NULL;
}

/* 1 if the response head has a header with this name. */
static int
resp_has_name(const struct resp *r, const char *name)
{
	char	needle[256];

	snprintf(needle, sizeof needle, "\r\n%s:", name);
	return strcasestr(r->head, needle) != NULL;
}

/* The value of header name in r (static buffer), or "". */
static const char *
resp_get(const struct resp *r, const char *name)
{
	static char	 value[512];
	char		 needle[256];
	const char	*p, *e;

	value[0] = '\0';
	snprintf(needle, sizeof needle, "\r\n%s:", name);
	if ((p = strcasestr(r->head, needle)) == NULL)
		return value;
	p += strlen(needle);
	while (*p == ' ')
		p++;
	e = strstr(p, "\r\n");
	snprintf(value, sizeof value, "%.*s", (int)(e - p), p);
	return value;
}

/* 1 if the server closed the connection (EOF with nothing more). */
static int
cli_eof(struct cli *c)
{
	return c->len == 0 && cli_fill(c) == 0;
}

/* One request on a new connection; returns the response status. */
static int
one(const char *req, const char *method, struct resp *r)
{
	struct cli	c;
	int		rv;

	if (cli_connect(&c) != 0)
		return -1;
	cli_sends(&c, req);
	rv = cli_recv(&c, method, r);
	cli_close(&c);
	return rv == 0 ? r->status : -1;
}

/* Monotonic milliseconds. */
static int64_t
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Connect to port on to (an IPv4 or IPv6 literal), from the local address
 * from (NULL: any), with a receive buffer of rcvbuf bytes (0: the default)
 * set before connecting so that the window it advertises stays small.
 */
static int
cli_open2(struct cli *c, const char *from, const char *to, int port,
    int rcvbuf)
{
	struct sockaddr_storage	 ss, ls;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	struct timeval		 tv = { 5, 0 };
	socklen_t		 len;
	int			 family;

	memset(c, 0, sizeof *c);
	memset(&ss, 0, sizeof ss);
	memset(&ls, 0, sizeof ls);
	if (inet_pton(AF_INET, to, &sin->sin_addr) == 1) {
		family = sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		len = sizeof *sin;
	} else {
		family = sin6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, to, &sin6->sin6_addr);
		sin6->sin6_port = htons(port);
		len = sizeof *sin6;
	}
	c->fd = socket(family, SOCK_STREAM, 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (rcvbuf > 0)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
		    sizeof rcvbuf);
	if (from != NULL) {
		((struct sockaddr_in *)&ls)->sin_family = AF_INET;
		inet_pton(AF_INET, from, &((struct sockaddr_in *)&ls)->sin_addr);
		if (bind(c->fd, (struct sockaddr *)&ls,
		    sizeof(struct sockaddr_in)) != 0)
			goto fail;
	}
	if (connect(c->fd, (struct sockaddr *)&ss, len) != 0)
		goto fail;
	return 0;
fail:
	close(c->fd);
	c->fd = -1;
	return -1;
}

/*
 * 1 if the server ends the connection (EOF or reset) within ms having
 * sent nothing; 0 if bytes came or it stayed open.
 */
static int
cli_cut_within(struct cli *c, int ms)
{
	struct pollfd	pfd = { c->fd, POLLIN, 0 };
	char		b[1];
	ssize_t		n;

	if (c->len > 0 || poll(&pfd, 1, ms) != 1)
		return 0;
	n = recv(c->fd, b, 1, 0);
	return n == 0 || (n == -1 && errno == ECONNRESET);
}

/*
 * Read until EOF or reset (bounded by ms), dropping the bytes; the count
 * read, and in *ended whether the connection ended.
 */
static size_t
cli_drain(struct cli *c, int ms, int *ended)
{
	struct pollfd	 pfd = { c->fd, POLLIN, 0 };
	char		 b[65536];
	size_t		 total = c->len;
	int64_t		 end = now_ms() + ms;
	ssize_t		 n;

	*ended = 0;
	c->len = 0;
	while (now_ms() < end) {
		if (poll(&pfd, 1, (int)(end - now_ms())) != 1)
			continue;
		n = recv(c->fd, b, sizeof b, 0);
		if (n <= 0) {
			*ended = 1;
			break;
		}
		total += n;
	}
	return total;
}

/* One request on c answered 200 (a keep-alive request to the origin). */
static int
cli_ok(struct cli *c)
{
	struct resp	r;
	int		ok;

	if (cli_sends(c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n") != 0)
		return 0;
	ok = cli_recv(c, "GET", &r) == 0 && r.status == 200;
	resp_free(&r);
	return ok;
}

/* Ask the loop thread to do something (see ctl_cb). */
static void
loop_do(const char *cmd)
{
	if (write(ctl_pipe[1], cmd, strlen(cmd)) != (ssize_t)strlen(cmd))
		abort();
}

/* 1 if nothing arrives on c within ms (and the connection stays open). */
static int
cli_quiet(struct cli *c, int ms)
{
	struct pollfd	pfd = { c->fd, POLLIN, 0 };

	return c->len == 0 && poll(&pfd, 1, ms) == 0;
}

/*
 * Every ACTIVITY_REQUEST and ACTIVITY_TUNNEL +1 has had its -1 (waiting
 * up to 2 s for the loop to see closes), and no count went below zero.
 */
static void
check_activity_balanced(void)
{
	int	i, ok = 0;

	for (i = 0; i < 200 && !ok; i++) {
		ok = ALOAD(&act_plus[ACTIVITY_REQUEST]) ==
		    ALOAD(&act_minus[ACTIVITY_REQUEST]) &&
		    ALOAD(&act_plus[ACTIVITY_TUNNEL]) ==
		    ALOAD(&act_minus[ACTIVITY_TUNNEL]);
		if (!ok)
			usleep(10 * 1000);
	}
	if (!ok)
		fprintf(stderr, "activity: request +%d -%d, tunnel +%d -%d\n",
		    ALOAD(&act_plus[ACTIVITY_REQUEST]),
		    ALOAD(&act_minus[ACTIVITY_REQUEST]),
		    ALOAD(&act_plus[ACTIVITY_TUNNEL]),
		    ALOAD(&act_minus[ACTIVITY_TUNNEL]));
	CHECK(ok);
	CHECK(ALOAD(&act_negative) == 0);
}

/* Wait up to 1 s for *p to reach want. */
static int
wait_for(int *p, int want)
{
	int	i;

	for (i = 0; i < 100 && ALOAD(p) < want; i++)
		usleep(10 * 1000);
	return ALOAD(p) == want;
}

/* ------------------------------------------------------------------ */
/* An HTTP/2 client: nghttp2's client session over a blocking socket */

#define H2C_STREAMS	8

struct h2c_stream {
	int32_t	 id;
	int	 status;
	char	 body[8192];
	size_t	 len;
	int	 closed;
	uint32_t error;
};

struct h2c {
	struct cli		 c;
	nghttp2_session		*s;
	struct h2c_stream	 st[H2C_STREAMS];
	int			 nst;
	int			 goaway;
	uint32_t		 goaway_error;
	int			 eof;
	const char		*upload;	/* the next request's body */
	size_t			 upload_len;
	const char		*accept;	/* the next request's Accept */
};

static struct h2c_stream *
h2c_find(struct h2c *h, int32_t id)
{
	int	i;

	for (i = 0; i < h->nst; i++) {
		if (h->st[i].id == id)
			return &h->st[i];
	}
	return NULL;
}

static ssize_t
h2c_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
    void *arg)
{
	struct h2c	*h = arg;

	return cli_send(&h->c, data, len) == 0 ? (ssize_t)len :
	    NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int
h2c_header_cb(nghttp2_session *s, const nghttp2_frame *frame,
    const uint8_t *name, size_t namelen, const uint8_t *value,
    size_t valuelen, uint8_t flags, void *arg)
{
	struct h2c_stream	*st = h2c_find(arg, frame->hd.stream_id);

	if (st != NULL && namelen == 7 && memcmp(name, ":status", 7) == 0)
		st->status = atoi((const char *)value);
	return 0;
}

static int
h2c_data_cb(nghttp2_session *s, uint8_t flags, int32_t id,
    const uint8_t *data, size_t len, void *arg)
{
	struct h2c_stream	*st = h2c_find(arg, id);

	if (st != NULL && st->len + len < sizeof st->body) {
		memcpy(st->body + st->len, data, len);
		st->len += len;
		st->body[st->len] = '\0';
	}
	return 0;
}

static int
h2c_close_cb(nghttp2_session *s, int32_t id, uint32_t error, void *arg)
{
	struct h2c_stream	*st = h2c_find(arg, id);

	if (st != NULL) {
		st->closed = 1;
		st->error = error;
	}
	return 0;
}

static int
h2c_frame_cb(nghttp2_session *s, const nghttp2_frame *frame, void *arg)
{
	struct h2c	*h = arg;

	if (frame->hd.type == NGHTTP2_GOAWAY) {
		h->goaway = 1;
		h->goaway_error = frame->goaway.error_code;
	}
	return 0;
}

/* A request body from h->upload, all at once. */
static ssize_t
h2c_upload_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct h2c	*h = arg;
	size_t		 n = h->upload_len < len ? h->upload_len : len;

	memcpy(buf, h->upload, n);
	h->upload += n;
	h->upload_len -= n;
	if (h->upload_len == 0)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return n;
}

/* Connect and send the preface (prior knowledge) and our SETTINGS. */
static int
h2c_open(struct h2c *h)
{
	nghttp2_session_callbacks	*cbs;

	memset(h, 0, sizeof *h);
	if (cli_connect(&h->c) != 0)
		return -1;
	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_send_callback(cbs, h2c_send_cb);
	nghttp2_session_callbacks_set_on_header_callback(cbs, h2c_header_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
	    h2c_data_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
	    h2c_close_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
	    h2c_frame_cb);
	nghttp2_session_client_new(&h->s, cbs, h);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, NULL, 0);
	return nghttp2_session_send(h->s) == 0 ? 0 : -1;
}

static void
h2c_close(struct h2c *h)
{
	nghttp2_session_del(h->s);
	cli_close(&h->c);
}

/* Open a stream: GET, or POST with body when not NULL; its index. */
static int
h2c_request(struct h2c *h, const char *host, const char *path,
    const char *body)
{
	nghttp2_nv		 nv[5];
	nghttp2_data_provider	 dp;
	size_t			 nnv = 4;
	const char		*method = body != NULL ? "POST" : "GET";
	int32_t			 id;

#define H2C_NV(i, n, v) do {						\
	nv[i].name = (uint8_t *)(n);					\
	nv[i].namelen = strlen(n);					\
	nv[i].value = (uint8_t *)(v);					\
	nv[i].valuelen = strlen(v);					\
	nv[i].flags = NGHTTP2_NV_FLAG_NONE;				\
} while (0)
	H2C_NV(0, ":method", method);
	H2C_NV(1, ":path", path);
	H2C_NV(2, ":scheme", "http");
	H2C_NV(3, ":authority", host);
	if (h->accept != NULL) {
		H2C_NV(4, "accept", h->accept);
		nnv = 5;
	}
	h->accept = NULL;
	h->upload = body;
	h->upload_len = body != NULL ? strlen(body) : 0;
	dp.read_callback = h2c_upload_cb;
	id = nghttp2_submit_request(h->s, NULL, nv, nnv,
	    body != NULL ? &dp : NULL, NULL);
	if (id < 0 || h->nst == H2C_STREAMS)
		return -1;
	h->st[h->nst].id = id;
	nghttp2_session_send(h->s);
	return h->nst++;
}

/* Read and handle what arrives within ms; 0, or -1 at EOF. */
static int
h2c_pump(struct h2c *h, int ms)
{
	struct pollfd	pfd = { h->c.fd, POLLIN, 0 };
	char		buf[16384];
	ssize_t		n;

	if (h->eof || poll(&pfd, 1, ms) <= 0)
		return h->eof ? -1 : 0;
	if ((n = recv(h->c.fd, buf, sizeof buf, 0)) <= 0) {
		h->eof = 1;
		return -1;
	}
	if (nghttp2_session_mem_recv(h->s, (uint8_t *)buf, n) < 0)
		return -1;
	nghttp2_session_send(h->s);
	return 0;
}

/* Pump until stream i closed (or ms passed); its status. */
static int
h2c_wait(struct h2c *h, int i, int ms)
{
	int	t;

	for (t = 0; t < ms && !h->st[i].closed; t += 10) {
		if (h2c_pump(h, 10) == -1)
			break;
	}
	return h->st[i].closed ? h->st[i].status : -1;
}

/* HTTP/2 streams as requests: previews, routes, the API, bodies. */
static void
test_h2(void)
{
	struct h2c	h;
	int		a, b, c, opened = ALOAD(&preview_opened);

	CHECK(h2c_open(&h) == 0);
	a = h2c_request(&h, HOST_OK, "/echo?x=1", NULL);
	b = h2c_request(&h, "app.test", "/echo?y=2", NULL);
	c = h2c_request(&h, HOST_OK, "/echo", "hello h2");
	CHECK(h2c_wait(&h, a, 3000) == 200);
	CHECK_STR(h.st[a].body, "GET /echo?x=1\n");
	CHECK(h2c_wait(&h, b, 3000) == 200);
	CHECK_STR(h.st[b].body, "GET /echo?y=2\n");
	CHECK(h2c_wait(&h, c, 3000) == 200);
	CHECK_STR(h.st[c].body, "POST /echo\nhello h2");
	a = h2c_request(&h, ID_UNKNOWN ".preview.localhost", "/", NULL);
	CHECK(h2c_wait(&h, a, 3000) == 404);
	a = h2c_request(&h, "127.0.0.1", "/v1/echo", "x");
	CHECK(h2c_wait(&h, a, 3000) == 200);
	CHECK(strncmp(h.st[a].body, "POST /v1/echo", 13) == 0);
	/* Two streams to one sandbox: the connection counts once for it. */
	CHECK(ALOAD(&preview_opened) == opened + 1);
	h2c_close(&h);
	CHECK(wait_for(&preview_closed, ALOAD(&preview_opened)));
	check_activity_balanced();
}

/* Held streams: woken, cancelled by RST_STREAM, beside a running one. */
static void
test_h2_held(void)
{
	struct h2c	h;
	int		a, b, cancelled = ALOAD(&waits_cancelled);

	CHECK(h2c_open(&h) == 0);
	a = h2c_request(&h, HOST_HELD, "/echo", NULL);
	b = h2c_request(&h, HOST_NEVER, "/echo", NULL);
	/* Neither holds up a stream to a running sandbox. */
	CHECK(h2c_wait(&h, h2c_request(&h, HOST_OK, "/echo", NULL), 1000) ==
	    200);
	CHECK(!h.st[a].closed);
	CHECK(h2c_wait(&h, a, 3000) == 200);
	CHECK_STR(h.st[a].body, "GET /echo\n");
	CHECK(!h.st[b].closed && ALOAD(&waits_live) == 1);
	nghttp2_submit_rst_stream(h.s, NGHTTP2_FLAG_NONE, h.st[b].id,
	    NGHTTP2_CANCEL);
	nghttp2_session_send(h.s);
	CHECK(wait_for(&waits_cancelled, cancelled + 1));
	CHECK(ALOAD(&waits_live) == 0);
	/* A held navigation gets the warming page after 2 s. */
	h.accept = "text/html,*/*";
	b = h2c_request(&h, HOST_NEVER, "/", NULL);
	CHECK(h2c_wait(&h, b, 3500) == 503);
	CHECK(strstr(h.st[b].body, "<script>") != NULL);
	CHECK(wait_for(&waits_cancelled, cancelled + 2));
	/* A held stream whose connection goes. */
	b = h2c_request(&h, HOST_NEVER, "/echo", NULL);
	h2c_pump(&h, 100);
	CHECK(ALOAD(&waits_live) == 1);
	h2c_close(&h);
	CHECK(wait_for(&waits_cancelled, cancelled + 3));
	CHECK(ALOAD(&bad_cancels) == 0);
	check_activity_balanced();
}

/* Garbage after the preface ends the session with a GOAWAY. */
static void
test_h2_garbage(void)
{
	struct h2c	h;
	int		i;

	CHECK(h2c_open(&h) == 0);
	cli_sends(&h.c, "\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00");
	cli_sends(&h.c, "this is not a frame at all, not at all......");
	for (i = 0; i < 100 && !h.eof; i++)
		h2c_pump(&h, 20);
	CHECK(h.goaway && h.eof);
	h2c_close(&h);
	/* HTTP/1.1 is untouched, with a 'P' method too. */
	{
		struct resp	r;

		CHECK(one("PUT /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n"
		    "Content-Length: 0\r\n\r\n", "PUT", &r) == 200);
		resp_free(&r);
	}
}

/* ------------------------------------------------------------------ */
/* Tests */

static void
test_preview_get(void)
{
	struct resp	r;

	CHECK(one("GET /echo?x=1 HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n",
	    "GET", &r) == 200);
	CHECK_STR(r.body, "GET /echo?x=1\n");
	CHECK(!resp_has_name(&r, "connection"));
	resp_free(&r);
	/* Host is case-insensitive, with a port. */
	CHECK(one("GET /echo HTTP/1.1\r\nHost: " ID_OK ".Preview.LOCALHOST:80"
	    "\r\n\r\n", "GET", &r) == 200);
	CHECK_STR(r.body, "GET /echo\n");
	resp_free(&r);
}

static void
test_preview_post(void)
{
	struct cli	 c;
	struct resp	 r;
	char		*big, hdr[256];
	size_t		 i, n;
	int		 ok;

	CHECK(one("POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length:"
	    " 11\r\n\r\nhello world", "POST", &r) == 200);
	CHECK_STR(r.body, "POST /echo\nhello world");
	resp_free(&r);

	CHECK(one("POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-"
	    "Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	    "POST", &r) == 200);
	CHECK_STR(r.body, "POST /echo\nhello world");
	resp_free(&r);

	/* 1 MiB with Content-Length, sent in pieces. */
	big = malloc(MIB);
	for (i = 0; i < MIB; i++)
		big[i] = 'a' + i % 26;
	CHECK(cli_connect(&c) == 0);
	snprintf(hdr, sizeof hdr, "PUT /echo HTTP/1.1\r\nHost: " HOST_OK
	    "\r\nContent-Length: %d\r\n\r\n", MIB);
	cli_sends(&c, hdr);
	for (i = 0; i < MIB; i += 100000)
		cli_send(&c, big + i, MIB - i < 100000 ? MIB - i : 100000);
	CHECK(cli_recv(&c, "PUT", &r) == 0);
	CHECK(r.status == 200);
	CHECK(r.bodylen == strlen("PUT /echo\n") + MIB);
	CHECK(r.bodylen > 10 && memcmp(r.body + 10, big, MIB) == 0);
	resp_free(&r);

	/* 1 MiB chunked in 64 KiB chunks, on the same connection. */
	cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-"
	    "Encoding: chunked\r\n\r\n");
	for (i = 0; i < MIB; i += n) {
		n = 65536;
		snprintf(hdr, sizeof hdr, "%zx\r\n", n);
		cli_sends(&c, hdr);
		cli_send(&c, big + i, n);
		cli_sends(&c, "\r\n");
	}
	cli_sends(&c, "0\r\n\r\n");
	CHECK(cli_recv(&c, "POST", &r) == 0);
	ok = r.status == 200 && r.bodylen == strlen("POST /echo\n") + MIB &&
	    memcmp(r.body + 11, big, MIB) == 0;
	CHECK(ok);
	resp_free(&r);

	/* 1 MiB response down a connection we read slowly. */
	cli_sends(&c, "GET /big HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	usleep(200 * 1000);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == MIB);
	resp_free(&r);
	cli_close(&c);
	free(big);
}

static void
test_keepalive_pool(void)
{
	struct cli	c;
	struct resp	r;
	char		serial[32];
	int		i, before, same = 1;

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	snprintf(serial, sizeof serial, "%s", resp_get(&r, "x-origin-conn"));
	resp_free(&r);
	before = ALOAD(&origin_accepts);
	for (i = 0; i < 5; i++) {
		cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK
		    "\r\n\r\n");
		CHECK(cli_recv(&c, "GET", &r) == 0);
		CHECK(r.status == 200);
		same = same && strcmp(resp_get(&r, "x-origin-conn"),
		    serial) == 0;
		resp_free(&r);
	}
	CHECK(same);
	cli_close(&c);
	/* A new client connection reuses the pooled upstream one. */
	CHECK(one("GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == 200);
	CHECK_STR(resp_get(&r, "x-origin-conn"), serial);
	resp_free(&r);
	CHECK(ALOAD(&origin_accepts) == before);
}

static void
test_forwarded_headers(void)
{
	struct resp	r;
	char		host[128];

	CHECK(one("GET /headers HTTP/1.1\r\nHost: " HOST_OK ":8080\r\n"
	    "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
	    "X-Forwarded-Host: evil\r\nConnection: keep-alive, X-Drop\r\n"
	    "X-Drop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\n"
	    "Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"
	    "X-Keep: 2\r\n\r\n", "GET", &r) == 200);
	CHECK(strstr(r.body, "GET /headers HTTP/1.1\r\n") == r.body);
	snprintf(host, sizeof host, "\r\nHost: %s:8080\r\n", HOST_OK);
	CHECK(strstr(r.body, host) != NULL);
	CHECK(strstr(r.body, "\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n")
	    != NULL);
	CHECK(strstr(r.body, "\r\nX-Forwarded-Proto: http\r\n") != NULL);
	CHECK(strstr(r.body, "\r\nX-Forwarded-Host: " HOST_OK ":8080\r\n") !=
	    NULL);
	CHECK(strstr(r.body, "https") == NULL);
	CHECK(strstr(r.body, "evil") == NULL);
	CHECK(strstr(r.body, "X-Keep: 2\r\n") != NULL);
	CHECK(strcasestr(r.body, "x-drop") == NULL);
	CHECK(strcasestr(r.body, "keep-alive") == NULL);
	CHECK(strcasestr(r.body, "\nte:") == NULL);
	CHECK(strcasestr(r.body, "proxy-connection") == NULL);
	CHECK(strcasestr(r.body, "upgrade") == NULL);
	CHECK(strcasestr(r.body, "connection") == NULL);
	resp_free(&r);

	/* Without an incoming X-Forwarded-For, one with the peer. */
	CHECK(one("GET /headers HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n",
	    "GET", &r) == 200);
	CHECK(strstr(r.body, "\r\nX-Forwarded-For: 127.0.0.1\r\n") != NULL);
	resp_free(&r);

	/* Response hop-by-hop headers are removed too. */
	CHECK(one("GET /hop HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == 200);
	CHECK(!resp_has_name(&r, "x-secret"));
	CHECK(!resp_has_name(&r, "keep-alive"));
	CHECK(!resp_has_name(&r, "connection"));
	CHECK(resp_has(&r, "X-Kept: yes"));
	CHECK_STR(r.body, "ok");
	resp_free(&r);
}

static void
test_no_body_responses(void)
{
	struct cli	c;
	struct resp	r;

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "HEAD /head HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "HEAD", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == 0);
	CHECK(resp_has(&r, "Content-Length: 5"));
	resp_free(&r);
	cli_sends(&c, "GET /204 HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 204 && r.bodylen == 0);
	resp_free(&r);
	cli_sends(&c, "GET /304 HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 304 && r.bodylen == 0);
	CHECK(resp_has(&r, "ETag: \"x\""));
	resp_free(&r);
	/* The connection is still in step. */
	cli_sends(&c, "GET /head HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "hello");
	resp_free(&r);
	cli_close(&c);
}

static void
test_framings(void)
{
	struct cli	c;
	struct resp	r;

	/* Until-close upstream: the client is closed after the body. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /close HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "until the end");
	CHECK(resp_has(&r, "Connection: close"));
	resp_free(&r);
	cli_close(&c);

	/* Chunked passes through, trailers and all. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /chunked HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	CHECK(resp_has(&r, "Transfer-Encoding: chunked"));
	CHECK_STR(r.body, "hello, world");
	resp_free(&r);
	/* Interim responses are forwarded, then the final one. */
	cli_sends(&c, "GET /1xx HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.interim == 1 && r.status == 200);
	CHECK_STR(r.body, "final");
	resp_free(&r);
	cli_close(&c);

	/* A slow body: what came is sent after a short wait, then the rest. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /slowbody HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_fill(&c) > 0);
	CHECK(c.len > 5 && memcmp(c.buf + c.len - 5, "hello", 5) == 0);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "helloworld");
	resp_free(&r);
	cli_close(&c);
	/* A truncated body: what came, then the connection is closed. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /trunc HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == -1);
	CHECK(c.len == 5 && memcmp(c.buf, "hello", 5) == 0);
	resp_free(&r);
	cli_close(&c);

	/* An HTTP/1.0 client gets the chunked body decoded, then close. */
	CHECK(one("GET /chunked HTTP/1.0\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == 200);
	CHECK(!resp_has_name(&r, "transfer-encoding"));
	CHECK_STR(r.body, "hello, world");
	resp_free(&r);
	/* HTTP/1.0 with keep-alive asked and a length: kept. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /head HTTP/1.0\r\nHost: " HOST_OK "\r\n"
	    "Connection: keep-alive\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(resp_has(&r, "Connection: keep-alive"));
	resp_free(&r);
	cli_sends(&c, "GET /head HTTP/1.0\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(resp_has(&r, "Connection: close"));
	CHECK(cli_eof(&c));
	resp_free(&r);
	cli_close(&c);
}

static void
test_websocket(void)
{
	struct cli	 c;
	struct resp	 r;
	char		*big;
	size_t		 n = 600 * 1024;

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /ws HTTP/1.1\r\nHost: " HOST_OK "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
	    "\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 101);
	CHECK(resp_has(&r, "Upgrade: websocket"));
	CHECK(resp_has(&r, "Connection: upgrade"));
	resp_free(&r);
	cli_sends(&c, "ping-123");
	while (c.len < 8 && cli_fill(&c) > 0)
		;
	CHECK(c.len == 8 && memcmp(c.buf, "ping-123", 8) == 0);
	cli_consume(&c, c.len);
	/* More than the backpressure threshold, echoed back whole. */
	big = malloc(n);
	memset(big, 'w', n);
	big[n - 1] = '!';
	CHECK(cli_send(&c, big, n) == 0);
	while (c.len < n && cli_fill(&c) > 0)
		;
	CHECK(c.len == n && memcmp(c.buf, big, n) == 0);
	free(big);
	cli_close(&c);
}

/*
 * A tunnel moving 4 MiB both ways to a client that reads slowly at first:
 * every byte comes back once and in order, while the unbuffered pass and
 * the buffered path (the client's socket full, backpressure on the
 * upstream) take turns.
 */
static void
test_websocket_slow_reader(void)
{
	struct cli	 c;
	struct resp	 r;
	struct pollfd	 pfd;
	char		*big;
	size_t		 n = 4 * 1024 * 1024, sent = 0, i, reads = 0;
	ssize_t		 w;
	int		 bad = 0;

	big = malloc(n);
	for (i = 0; i < n; i++)
		big[i] = pattern_byte(i);
	/* A small window: the daemon's writes to us come up short. */
	CHECK(cli_open2(&c, NULL, "127.0.0.1", edge_port, 4096) == 0);
	cli_sends(&c, "GET /ws HTTP/1.1\r\nHost: " HOST_OK "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
	    "\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 101);
	resp_free(&r);
	cli_consume(&c, c.len);
	CHECK(fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK) == 0);
	while (c.len < n && !bad) {
		pfd.fd = c.fd;
		pfd.events = POLLIN | (sent < n ? POLLOUT : 0);
		if (poll(&pfd, 1, 5000) <= 0) {
			bad = 1;	/* stalled */
			break;
		}
		if ((pfd.revents & POLLOUT) && sent < n) {
			w = send(c.fd, big + sent, n - sent < 65536 ?
			    n - sent : 65536, MSG_NOSIGNAL);
			if (w > 0)
				sent += w;
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			/* The first MiB or so in small sips: sockets fill. */
			if (reads++ < 256) {
				usleep(2000);
				if (c.size - c.len < 4096) {
					c.size = c.size * 2 + 65536;
					c.buf = realloc(c.buf, c.size);
				}
				if ((w = recv(c.fd, c.buf + c.len, 4096, 0)) > 0)
					c.len += w;
			} else
				w = cli_fill(&c);
			if (w == 0 || (w < 0 && errno != EAGAIN))
				bad = 1;
		}
	}
	CHECK(!bad);
	CHECK(sent == n);
	CHECK(c.len == n && memcmp(c.buf, big, n) == 0);
	free(big);
	cli_close(&c);
}

/* 1 if r's body is the first n bytes of the /pat/ pattern. */
static int
resp_is_pattern(const struct resp *r, size_t n)
{
	size_t	i;

	if (r->status != 200 || r->bodylen != n)
		return 0;
	for (i = 0; i < n; i++) {
		if (r->body[i] != pattern_byte(i))
			return 0;
	}
	return 1;
}

/*
 * Bodies larger than one read, in every framing: the relay reads the
 * upstream itself, straight into the client's output where it can.
 */
static void
test_large_bodies(void)
{
	static const size_t	 sizes[] = { 16256, 16320, 65536, 65537,
				    300000, 3 * MIB + 7 };
	struct cli		 c;
	struct resp		 r;
	char			 req[256], serial[32];
	size_t			 i;
	int			 ok, before;

	/* Every size with a length, then chunked, on one connection. */
	CHECK(cli_connect(&c) == 0);
	serial[0] = '\0';
	for (i = 0; i < nitems(sizes); i++) {
		snprintf(req, sizeof req, "GET /pat/%zu/len HTTP/1.1\r\n"
		    "Host: " HOST_OK "\r\n\r\n", sizes[i]);
		cli_sends(&c, req);
		CHECK(cli_recv(&c, "GET", &r) == 0);
		CHECK(resp_is_pattern(&r, sizes[i]));
		/* The upstream connection is kept after each. */
		if (i == 0)
			snprintf(serial, sizeof serial, "%s",
			    resp_get(&r, "x-origin-conn"));
		CHECK_STR(resp_get(&r, "x-origin-conn"), serial);
		resp_free(&r);
	}
	for (i = 0; i < nitems(sizes); i++) {
		snprintf(req, sizeof req, "GET /pat/%zu/chunked HTTP/1.1\r\n"
		    "Host: " HOST_OK "\r\n\r\n", sizes[i]);
		cli_sends(&c, req);
		CHECK(cli_recv(&c, "GET", &r) == 0);
		CHECK(resp_has(&r, "Transfer-Encoding: chunked"));
		CHECK(resp_is_pattern(&r, sizes[i]));
		CHECK_STR(resp_get(&r, "x-origin-conn"), serial);
		resp_free(&r);
	}

	/* Backpressure: unread for a while, then all of it, in order. */
	snprintf(req, sizeof req, "GET /pat/%d/len HTTP/1.1\r\nHost: "
	    HOST_OK "\r\n\r\n", 8 * MIB);
	cli_sends(&c, req);
	usleep(300 * 1000);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(resp_is_pattern(&r, 8 * MIB));
	CHECK_STR(resp_get(&r, "x-origin-conn"), serial);
	resp_free(&r);
	cli_close(&c);

	/* Until close, and an HTTP/1.0 client decoding a large chunked body. */
	snprintf(req, sizeof req, "GET /pat/%d/close HTTP/1.1\r\nHost: "
	    HOST_OK "\r\n\r\n", MIB + 3);
	CHECK(one(req, "GET", &r) == 200);
	CHECK(resp_is_pattern(&r, MIB + 3));
	CHECK(resp_has(&r, "Connection: close"));
	resp_free(&r);
	snprintf(req, sizeof req, "GET /pat/%d/chunked HTTP/1.0\r\nHost: "
	    HOST_OK "\r\n\r\n", MIB + 5);
	CHECK(one(req, "GET", &r) == 200);
	CHECK(!resp_has_name(&r, "transfer-encoding"));
	CHECK(resp_is_pattern(&r, MIB + 5));
	resp_free(&r);

	/*
	 * An upstream that closes a connection it offered to keep: the
	 * pooled connection is dropped (or the request retried), never used
	 * dead. The second request is pipelined to race the close.
	 */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /bye HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n"
	    "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "bye");
	resp_free(&r);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	resp_free(&r);
	usleep(50 * 1000);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	ok = r.status == 200 && strcmp(r.body, "GET /echo\n") == 0;
	CHECK(ok);
	resp_free(&r);

	/*
	 * A pooled connection that dies as it is reused: a GET is sent again
	 * on a fresh connection, a POST is not (the upstream may have acted
	 * on it), and gets a 502.
	 */
	for (i = 0; i < 2; i++) {
		before = ALOAD(&origin_dropped);
		CHECK(one("GET /drop-next HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n",
		    "GET", &r) == 200);
		resp_free(&r);
		if (i == 0)
			CHECK(one("GET /echo HTTP/1.1\r\nHost: " HOST_OK
			    "\r\n\r\n", "GET", &r) == 200);
		else
			CHECK(one("POST /echo HTTP/1.1\r\nHost: " HOST_OK
			    "\r\n\r\n", "POST", &r) == 502);
		resp_free(&r);
		CHECK(ALOAD(&origin_dropped) == before + 1);
	}

	/*
	 * Bytes past a response's end, small and large (the large body is
	 * read straight into the client's output): the upstream connection
	 * is not pooled, so the pipelined request gets a fresh one.
	 */
	for (i = 0; i < 2; i++) {
		snprintf(req, sizeof req, "GET /pat/%d/junk HTTP/1.1\r\n"
		    "Host: " HOST_OK "\r\n\r\nGET /echo HTTP/1.1\r\nHost: "
		    HOST_OK "\r\n\r\n", i == 0 ? 5 : 200000);
		cli_sends(&c, req);
		CHECK(cli_recv(&c, "GET", &r) == 0);
		CHECK(resp_is_pattern(&r, i == 0 ? 5 : 200000));
		snprintf(serial, sizeof serial, "%s",
		    resp_get(&r, "x-origin-conn"));
		resp_free(&r);
		CHECK(cli_recv(&c, "GET", &r) == 0);
		ok = r.status == 200 && strcmp(r.body, "GET /echo\n") == 0;
		CHECK(ok);
		CHECK(strcmp(resp_get(&r, "x-origin-conn"), serial) != 0);
		resp_free(&r);
	}
	cli_close(&c);
}

static void
test_pages(void)
{
	struct resp	r;

	CHECK(one("GET / HTTP/1.1\r\nHost: " ID_UNKNOWN ".preview.localhost"
	    "\r\n\r\n", "GET", &r) == 404);
	CHECK(resp_has(&r, "Content-Type: text/html; charset=utf-8"));
	CHECK(resp_has(&r, "Cache-Control: no-store"));
	CHECK(strstr(r.body, "No sandbox here") != NULL);
	resp_free(&r);
	CHECK(one("GET / HTTP/1.1\r\nHost: nope.preview.localhost\r\n\r\n",
	    "GET", &r) == 404);
	CHECK(strstr(r.body, "No sandbox here") != NULL);
	resp_free(&r);
	CHECK(one("GET / HTTP/1.1\r\nHost: " ID_ERR ".preview.localhost"
	    "\r\n\r\n", "GET", &r) == 502);
	CHECK(strstr(r.body, "The sandbox failed: &lt;exit 1&gt;") != NULL);
	CHECK(resp_has(&r, "Content-Type: text/html; charset=utf-8"));
	resp_free(&r);
	CHECK(one("GET / HTTP/1.1\r\nHost: " ID_STOPPED ".preview.localhost"
	    "\r\n\r\n", "GET", &r) == 503);
	CHECK(resp_has(&r, "Retry-After: 5"));
	CHECK(resp_has(&r, "Cache-Control: no-store"));
	resp_free(&r);
}

/* A token for id that expires at exp (Unix seconds), in a static buffer. */
static const char *
test_token(const char *id, int64_t exp)
{
	static char	tok[TOKEN_MAX_LEN + 1];

	CHECK(token_make(test_key, sizeof test_key, id, exp, tok,
	    sizeof tok) > 0);
	return tok;
}

static void
test_private(void)
{
	struct resp	 r;
	char		 req[1024], tok[TOKEN_MAX_LEN + 1], cookie[256];
	const char	*v;
	int64_t		 now = time_now_ms() / 1000;

	snprintf(tok, sizeof tok, "%s", test_token(ID_PRIVATE, now + 600));

	/* No token: the 401 page, or JSON when asked for. */
	CHECK(one("GET / HTTP/1.1\r\nHost: " HOST_PRIVATE "\r\n\r\n", "GET",
	    &r) == 401);
	CHECK(resp_has(&r, "Content-Type: text/html; charset=utf-8"));
	CHECK(strstr(r.body, "This preview is private") != NULL);
	resp_free(&r);
	CHECK(one("GET / HTTP/1.1\r\nHost: " HOST_PRIVATE "\r\nAccept: "
	    "application/json\r\n\r\n", "GET", &r) == 401);
	CHECK(resp_has(&r, "Content-Type: application/json"));
	CHECK(strstr(r.body, "{\"error\":{\"code\":\"unauthorized\","
	    "\"message\":") == r.body);
	resp_free(&r);

	/* The token in the query: redirect without it, and the cookie. */
	snprintf(req, sizeof req, "GET /echo?a=1&sandboxd_token=%s&b=2 "
	    "HTTP/1.1\r\nHost: " HOST_PRIVATE "\r\n\r\n", tok);
	CHECK(one(req, "GET", &r) == 302);
	CHECK_STR(resp_get(&r, "Location"), "/echo?a=1&b=2");
	v = resp_get(&r, "Set-Cookie");
	snprintf(cookie, sizeof cookie, "sandboxd_token=%s; Path=/; Max-Age=",
	    tok);
	CHECK(strncmp(v, cookie, strlen(cookie)) == 0);
	CHECK(strstr(v, "; HttpOnly; SameSite=Lax") != NULL);
	CHECK(strcasestr(v, "domain") == NULL);
	CHECK(strstr(v, "Secure") == NULL);
	CHECK(atoi(v + strlen(cookie)) > 590 && atoi(v + strlen(cookie)) <= 600);
	resp_free(&r);
	/* Alone in the query: no '?' is left; a POST is sent on as a GET. */
	snprintf(req, sizeof req, "POST /p?sandboxd_token=%s HTTP/1.1\r\n"
	    "Host: " HOST_PRIVATE "\r\nContent-Length: 0\r\n\r\n", tok);
	CHECK(one(req, "POST", &r) == 303);
	CHECK_STR(resp_get(&r, "Location"), "/p");
	resp_free(&r);

	/* The cookie opens it; the app sees neither it nor the token. */
	snprintf(req, sizeof req, "GET /headers HTTP/1.1\r\nHost: "
	    HOST_PRIVATE "\r\nCookie: x=1; sandboxd_token=%s; y=2\r\n\r\n",
	    tok);
	CHECK(one(req, "GET", &r) == 200);
	CHECK(strstr(r.body, "\r\nCookie: x=1; y=2\r\n") != NULL);
	CHECK(strstr(r.body, "sandboxd_token") == NULL);
	resp_free(&r);
	snprintf(req, sizeof req, "GET /headers HTTP/1.1\r\nHost: "
	    HOST_PRIVATE "\r\nCookie: sandboxd_token=%s\r\n\r\n", tok);
	CHECK(one(req, "GET", &r) == 200);
	CHECK(strcasestr(r.body, "\r\nCookie:") == NULL);
	resp_free(&r);

	/* Another sandbox's token, an expired one, an altered one: 401. */
	snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: " HOST_PRIVATE
	    "\r\nCookie: sandboxd_token=%s\r\n\r\n",
	    test_token(ID_PRIVHELD, now + 600));
	CHECK(one(req, "GET", &r) == 401);
	resp_free(&r);
	snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: " HOST_PRIVATE
	    "\r\nCookie: sandboxd_token=%s\r\n\r\n",
	    test_token(ID_PRIVATE, now - 1));
	CHECK(one(req, "GET", &r) == 401);
	resp_free(&r);
	tok[strlen(tok) - 2] ^= 1;
	snprintf(req, sizeof req, "GET /?sandboxd_token=%s HTTP/1.1\r\n"
	    "Host: " HOST_PRIVATE "\r\n\r\n", tok);
	CHECK(one(req, "GET", &r) == 401);
	CHECK(!resp_has_name(&r, "set-cookie"));
	resp_free(&r);

	/* A stopped private sandbox is not even looked up without a token. */
	CHECK(one("GET / HTTP/1.1\r\nHost: " ID_PRIVHELD ".preview.localhost"
	    "\r\n\r\n", "GET", &r) == 401);
	resp_free(&r);
	CHECK(ALOAD(&private_lookups) == 0);

	/* Any preview host answers JSON errors to a JSON client. */
	CHECK(one("GET / HTTP/1.1\r\nHost: " ID_UNKNOWN ".preview.localhost"
	    "\r\nAccept: application/json\r\n\r\n", "GET", &r) == 404);
	CHECK(strstr(r.body, "\"code\":\"not_found\"") != NULL);
	resp_free(&r);
	CHECK(one("GET / HTTP/1.1\r\nHost: " ID_UNKNOWN ".preview.localhost"
	    "\r\nAccept: text/html,application/json\r\n\r\n", "GET",
	    &r) == 404);
	CHECK(resp_has(&r, "Content-Type: text/html; charset=utf-8"));
	resp_free(&r);
}

static void
test_set_cookie(void)
{
	struct resp	r;

	CHECK(one("GET /setcookie HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n",
	    "GET", &r) == 200);
	CHECK(resp_has(&r, "Set-Cookie: a=1; Path=/"));
	CHECK(resp_has(&r, "set-cookie: b=2;path=/x;HttpOnly"));
	CHECK(resp_has(&r, "Set-Cookie: c=3; Path=/; Secure"));
	CHECK(resp_has(&r, "Set-Cookie: Domain=d; Max-Age=5"));
	CHECK(strcasestr(r.head, "preview.localhost") == NULL);
	resp_free(&r);
	/* A [route] is the operator's own app: its cookies pass as sent. */
	CHECK(one("GET /setcookie HTTP/1.1\r\nHost: app.test\r\n\r\n",
	    "GET", &r) == 200);
	CHECK(resp_has(&r, "Set-Cookie: a=1; Domain=preview.localhost; "
	    "Path=/"));
	resp_free(&r);
}

static void
test_upstream_failures(void)
{
	struct cli	c;
	struct resp	r;
	char		req[256];

	/* Nobody listens on that port. */
	snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %d-%s\r\n\r\n",
	    dead_port, HOST_OK);
	CHECK(one(req, "GET", &r) == 502);
	CHECK(resp_has(&r, "Content-Type: text/html; charset=utf-8"));
	resp_free(&r);
	/* Closed without a byte, and a malformed head: 502, conn kept. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /reset HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 502);
	resp_free(&r);
	cli_sends(&c, "GET /bad HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 502);
	resp_free(&r);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	resp_free(&r);
	cli_close(&c);
}

static void
test_static_route(void)
{
	struct resp	r;

	CHECK(one("GET /echo HTTP/1.1\r\nHost: app.test\r\n\r\n", "GET",
	    &r) == 200);
	CHECK_STR(r.body, "GET /echo\n");
	resp_free(&r);
	CHECK(one("POST /echo HTTP/1.1\r\nHost: sock.test\r\nContent-Length: "
	    "3\r\n\r\nabc", "POST", &r) == 200);
	CHECK_STR(r.body, "POST /echo\nabc");
	resp_free(&r);
}

/*
 * One sample of the edge's /metrics text (name and labels as written),
 * or -1 if absent. Read between requests, while the loop is idle.
 */
static long long
metric_value(const char *sample)
{
	struct evbuffer	*b = evbuffer_new();
	char		*text, *p;
	size_t		 len;
	long long	 v = -1;

	if (metrics_cb == NULL)
		return -1;
	metrics_cb(b, metrics_arg);
	len = evbuffer_get_length(b);
	text = xmalloc(len + 1);
	evbuffer_remove(b, text, len);
	text[len] = '\0';
	for (p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ?
	    p + 1 : NULL) {
		if (strncmp(p, sample, strlen(sample)) == 0 &&
		    p[strlen(sample)] == ' ') {
			v = strtoll(p + strlen(sample) + 1, NULL, 10);
			break;
		}
	}
	free(text);
	evbuffer_free(b);
	return v;
}

/* Each request counts once, by kind, protocol and class, with its bytes. */
static void
test_stats(void)
{
	const char	*route2 = "sandboxd_http_requests_total{kind=\"route\","
			    "proto=\"h1\",code=\"2xx\"}";
	const char	*prev4 = "sandboxd_http_requests_total{kind=\"preview\","
			    "proto=\"h1\",code=\"4xx\"}";
	const char	*sent = "sandboxd_http_sent_bytes_total{proto=\"h1\"}";
	long long	 r0, p0, s0;
	struct resp	 r;

	r0 = metric_value(route2);
	p0 = metric_value(prev4);
	s0 = metric_value(sent);
	CHECK(r0 >= 0 && p0 >= 0 && s0 >= 0);
	CHECK(one("GET /echo?t=1 HTTP/1.1\r\nHost: app.test\r\n\r\n",
	    "GET", &r) == 200);
	CHECK(metric_value(route2) == r0 + 1);
	/* The head and "GET /echo?t=1\n": at least 60 bytes in all. */
	CHECK(metric_value(sent) >= s0 + (long long)r.bodylen + 40);
	resp_free(&r);
	CHECK(one("GET / HTTP/1.1\r\nHost: nope.preview.localhost\r\n\r\n",
	    "GET", &r) == 404);
	resp_free(&r);
	CHECK(metric_value(prev4) == p0 + 1);
	CHECK(metric_value(route2) == r0 + 1);
	CHECK(metric_value("sandboxd_http_connections{proto=\"h2\",tls=\"1\"}")
	    == 0);
}

static void
test_api(void)
{
	struct cli	c;
	struct resp	r;
	int		before;

	CHECK(one("GET /v1/echo?a=1&b=2 HTTP/1.1\r\nHost: localhost\r\n"
	    "User-Agent: t/1\r\n\r\n", "GET", &r) == 200);
	CHECK_STR(r.body, "GET /v1/echo q=a=1&b=2 ua=t/1 peer=127.0.0.1: "
	    "body=");
	CHECK(resp_has(&r, "X-Api: 1"));
	CHECK(resp_has(&r, "Content-Type: text/plain"));
	resp_free(&r);

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Content-Length: 4\r\n\r\ndata");
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "body=data") != NULL);
	resp_free(&r);
	cli_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "body=abcde") != NULL);
	resp_free(&r);
	cli_sends(&c, "GET /v1/deferred HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "GET /v1/deferred") == r.body);
	resp_free(&r);
	cli_sends(&c, "GET /v1/nothing HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 404 && strstr(r.body, "\"not_found\"") != NULL);
	resp_free(&r);
	cli_sends(&c, "DELETE /v1/nocontent HTTP/1.1\r\nHost: localhost\r\n"
	    "\r\n");
	CHECK(cli_recv(&c, "DELETE", &r) == 0);
	CHECK(r.status == 204 && !resp_has_name(&r, "content-length"));
	resp_free(&r);
	/* Expect: 100-continue gets the go before the body is sent. */
	cli_sends(&c, "PUT /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n");
	while (c.len < 25 && cli_fill(&c) > 0)
		;
	CHECK(c.len == 25 && memcmp(c.buf, "HTTP/1.1 100 Continue\r\n\r\n",
	    25) == 0);
	cli_consume(&c, c.len);
	cli_sends(&c, "12345");
	CHECK(cli_recv(&c, "PUT", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "body=12345") != NULL);
	resp_free(&r);
	cli_close(&c);

	/* HTTP/1.0 without Host is an API request; closed after. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /v1/echo HTTP/1.0\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && resp_has(&r, "Connection: close"));
	CHECK(cli_eof(&c));
	resp_free(&r);
	cli_close(&c);

	/*
	 * A request the caller cannot make gets its answer without its body
	 * being read or a 100 Continue: the 10 MB are never sent.
	 */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "PUT /v1/denied HTTP/1.1\r\nHost: localhost\r\n"
	    "Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n");
	CHECK(cli_recv(&c, "PUT", &r) == 0);
	CHECK(r.status == 404 && resp_has(&r, "Connection: close"));
	resp_free(&r);
	cli_close(&c);

	/* The client leaves before the answer: detached, no crash. */
	before = ALOAD(&detached_replies);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /v1/slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
	usleep(50 * 1000);
	cli_close(&c);
	usleep(400 * 1000);
	CHECK(ALOAD(&detached_replies) == before + 1);
	CHECK(one("GET /v1/echo HTTP/1.1\r\nHost: localhost\r\n\r\n", "GET",
	    &r) == 200);
	resp_free(&r);
}

/*
 * Streamed API answers (SSE): chunked on HTTP/1.1 with the connection
 * kept after, until close on HTTP/1.0; a client slower than the stream
 * makes the handler wait (write answers 1, the drain resumes it) and
 * still gets every byte; a client leaving is told to the handler.
 */
static void
test_api_stream(void)
{
	struct cli	 c;
	struct resp	 r;
	size_t		 i;
	int		 before, ok;

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /v1/stream HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && resp_has(&r, "Transfer-Encoding: chunked"));
	CHECK(resp_has(&r, "Content-Type: text/event-stream"));
	CHECK(resp_has(&r, "Cache-Control: no-cache"));
	CHECK(!resp_has_name(&r, "content-length"));
	CHECK(r.bodylen == 6 && memcmp(r.body, "abcdef", 6) == 0);
	resp_free(&r);
	/* The connection goes on after the stream's end. */
	cli_sends(&c, "GET /v1/echo HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "GET /v1/echo") == r.body);
	resp_free(&r);
	cli_close(&c);

	/* HTTP/1.0: the body until close. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /v1/stream HTTP/1.0\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && resp_has(&r, "Connection: close"));
	CHECK(!resp_has_name(&r, "transfer-encoding"));
	CHECK(r.bodylen == 6 && memcmp(r.body, "abcdef", 6) == 0);
	resp_free(&r);
	cli_close(&c);

	/* 8 MiB to a client that waits before reading. */
	before = ALOAD(&stream_blocked);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /v1/stream-big HTTP/1.1\r\nHost: localhost\r\n"
	    "\r\n");
	usleep(300 * 1000);
	CHECK(ALOAD(&stream_blocked) > before);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == 64 * 128 * 1024);
	ok = r.bodylen == 64 * 128 * 1024;
	for (i = 0; ok && i < r.bodylen; i++)
		ok = r.body[i] == 'a' + (char)(i % 26);
	CHECK(ok);
	CHECK(ALOAD(&stream_drains) > 0);
	resp_free(&r);
	cli_close(&c);

	/* The client leaves mid-stream: the handler learns it. */
	before = ALOAD(&stream_gone);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /v1/stream-forever HTTP/1.1\r\nHost: localhost"
	    "\r\n\r\n");
	while (c.len < 40 && cli_fill(&c) > 0)
		;
	CHECK(strncmp(c.buf, "HTTP/1.1 200", 12) == 0);
	cli_close(&c);
	for (i = 0; i < 100 && ALOAD(&stream_gone) == before; i++)
		usleep(10 * 1000);
	CHECK(ALOAD(&stream_gone) == before + 1);
	CHECK(one("GET /v1/echo HTTP/1.1\r\nHost: localhost\r\n\r\n", "GET",
	    &r) == 200);
	resp_free(&r);
}

static void
test_limits(void)
{
	struct cli	 c;
	struct resp	 r;
	char		*huge, chunk[600];
	int		 i;

	/* Over the API limit by Content-Length: 413 before the body. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "PUT /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Content-Length: 2000\r\nExpect: 100-continue\r\n\r\n");
	CHECK(cli_recv(&c, "PUT", &r) == 0);
	CHECK(r.status == 413 && r.interim == 0);
	CHECK(strstr(r.body, "\"payload_too_large\"") != NULL);
	CHECK(resp_has(&r, "Content-Type: application/json"));
	CHECK(resp_has(&r, "Connection: close"));
	resp_free(&r);
	cli_close(&c);
	/* By chunked body: counted as it comes. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n");
	memset(chunk, 'c', sizeof chunk);
	for (i = 0; i < 3; i++) {
		cli_sends(&c, "200\r\n");
		cli_send(&c, chunk, 512);
		cli_sends(&c, "\r\n");
	}
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 413 && strstr(r.body, "payload_too_large"));
	resp_free(&r);
	cli_close(&c);
	/* At the limit is fine. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Content-Length: 1024\r\n\r\n");
	memset(chunk, 'c', sizeof chunk);
	cli_send(&c, chunk, 512);
	cli_send(&c, chunk, 512);
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 200);
	resp_free(&r);
	cli_close(&c);

	/* Garbage, missing Host, CL+TE, absolute-form: 400 and close. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "BLAH\x01 / HTTP/1.1\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 400 && resp_has(&r, "Connection: close"));
	CHECK(cli_eof(&c));
	resp_free(&r);
	cli_close(&c);
	CHECK(one("GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", "GET", &r) == 400);
	CHECK(strstr(r.body, "Host") != NULL);
	resp_free(&r);
	CHECK(one("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "GET",
	    &r) == 400);
	resp_free(&r);
	CHECK(one("POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length:"
	    " 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "POST",
	    &r) == 400);
	resp_free(&r);
	CHECK(one("GET http://" HOST_OK "/echo HTTP/1.1\r\nHost: " HOST_OK
	    "\r\n\r\n", "GET", &r) == 400);
	resp_free(&r);
	/* A malformed chunked body to a preview: 400. */
	CHECK(one("POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-"
	    "Encoding: chunked\r\n\r\nzz\r\n", "POST", &r) == 400);
	resp_free(&r);

	/* A head over 64 KiB: 431. */
	huge = malloc(70000);
	memset(huge, 'h', 70000);
	memcpy(huge, "X-Big: ", 7);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET / HTTP/1.1\r\nHost: localhost\r\n");
	cli_send(&c, huge, 70000);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 431);
	resp_free(&r);
	cli_close(&c);
	free(huge);
}

static void
test_pipelining(void)
{
	struct cli	c;
	struct resp	r;

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c,
	    "GET /echo?1 HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n"
	    "GET /v1/deferred?2 HTTP/1.1\r\nHost: localhost\r\n\r\n"
	    "POST /echo?3 HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: 2"
	    "\r\n\r\nhi"
	    "\r\n"	/* a stray empty line between requests is allowed */
	    "GET /v1/echo?4 HTTP/1.1\r\nHost: localhost\r\n\r\n"
	    "HEAD /head HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n"
	    "GET /echo?6 HTTP/1.1\r\nHost: " HOST_OK "\r\nConnection: close"
	    "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "GET /echo?1\n");
	resp_free(&r);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "q=2") != NULL);
	resp_free(&r);
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK_STR(r.body, "POST /echo?3\nhi");
	resp_free(&r);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "q=4") != NULL);
	resp_free(&r);
	CHECK(cli_recv(&c, "HEAD", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == 0);
	resp_free(&r);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "GET /echo?6\n");
	CHECK(resp_has(&r, "Connection: close"));
	resp_free(&r);
	CHECK(cli_eof(&c));
	cli_close(&c);
}


/* A held lookup answered later is proxied as if it had answered at once. */
static void
test_held(void)
{
	struct cli	 c;
	struct resp	 r;
	char		*big, hdr[256];
	size_t		 i;
	int64_t		 t0;
	int		 made = ALOAD(&waits_made);
	int		 answered = ALOAD(&waits_answered);
	int		 requests = ALOAD(&act_plus[ACTIVITY_REQUEST]);

	t0 = now_ms();
	CHECK(one("GET /echo?held HTTP/1.1\r\nHost: " HOST_HELD "\r\n\r\n",
	    "GET", &r) == 200);
	CHECK_STR(r.body, "GET /echo?held\n");
	CHECK(now_ms() - t0 >= 250);
	resp_free(&r);
	CHECK(ALOAD(&waits_made) == made + 1);
	CHECK(ALOAD(&waits_answered) == answered + 1);
	/* Counted as a request once it is proxied, not while held. */
	CHECK(ALOAD(&act_plus[ACTIVITY_REQUEST]) == requests + 1);

	/* A navigation answered within 2 s gets the app, not the page. */
	CHECK(one("GET /echo HTTP/1.1\r\nHost: " HOST_HELD "\r\nAccept: "
	    "text/html,application/xhtml+xml,*/*;q=0.8\r\n\r\n", "GET",
	    &r) == 200);
	CHECK(!resp_has_name(&r, "x-sandboxd-waking"));
	CHECK_STR(r.body, "GET /echo\n");
	resp_free(&r);

	/* A body sent while held waits in the socket, then goes whole. */
	big = malloc(MIB);
	for (i = 0; i < MIB; i++)
		big[i] = 'a' + i % 23;
	CHECK(cli_connect(&c) == 0);
	snprintf(hdr, sizeof hdr, "PUT /echo HTTP/1.1\r\nHost: " HOST_HELD
	    "\r\nContent-Length: %d\r\n\r\n", MIB);
	cli_sends(&c, hdr);
	CHECK(cli_send(&c, big, MIB) == 0);
	CHECK(cli_recv(&c, "PUT", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == strlen("PUT /echo\n") + MIB);
	CHECK(r.bodylen > 10 && memcmp(r.body + 10, big, MIB) == 0);
	resp_free(&r);
	/* The same connection goes on, to a running sandbox this time. */
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	resp_free(&r);
	cli_close(&c);
	free(big);

	/* Held, then control cannot wake it: its 503 and Retry-After. */
	CHECK(one("GET / HTTP/1.1\r\nHost: " ID_WAKEFAIL ".preview.localhost"
	    "\r\n\r\n", "GET", &r) == 503);
	CHECK(resp_has(&r, "Retry-After: 7"));
	/* A refusal, not a wake still under way: nothing to wait for. */
	CHECK(!resp_has_name(&r, "x-sandboxd-waking"));
	CHECK(resp_has(&r, "Cache-Control: no-store"));
	CHECK(strstr(r.body, "The sandbox failed to start.") != NULL);
	resp_free(&r);
	CHECK(ALOAD(&bad_cancels) == 0);
	check_activity_balanced();
}

/* The client leaves while held: one cancel, and no answer after it. */
static void
test_held_cancel(void)
{
	struct cli	c;
	int		cancelled = ALOAD(&waits_cancelled);
	int		answered = ALOAD(&waits_answered);

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_HELD "\r\n\r\n");
	usleep(100 * 1000);
	cli_close(&c);
	/* Past the 300 ms at which it would have been answered. */
	usleep(400 * 1000);
	CHECK(ALOAD(&waits_cancelled) == cancelled + 1);
	CHECK(ALOAD(&waits_answered) == answered);

	/*
	 * Never answered, not a navigation (curl's Accept): no warming page
	 * after 2 s, it just waits; leaving is what ends it.
	 */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET / HTTP/1.1\r\nHost: " HOST_NEVER "\r\nAccept: "
	    "*/*\r\nUser-Agent: curl/7.88.1\r\n\r\n");
	CHECK(cli_quiet(&c, 2600));
	cli_close(&c);
	CHECK(wait_for(&waits_cancelled, cancelled + 2));
	CHECK(ALOAD(&waits_answered) == answered);
	CHECK(ALOAD(&bad_cancels) == 0);
	CHECK(ALOAD(&waits_live) == 0);
	check_activity_balanced();
}

/* CPU time this process used, in ms (the loop thread's is most of it). */
static int64_t
cpu_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * A client that resets its connection while held (an error, not a FIN:
 * epoll reports EPOLLERR, which libevent gives to no EV_CLOSED-only
 * event) gives up its place at once, and the loop does not spin.
 */
static void
test_held_reset(void)
{
	struct cli	c;
	struct linger	lg = { 1, 0 };
	int		cancelled = ALOAD(&waits_cancelled);
	int64_t		cpu;

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET / HTTP/1.1\r\nHost: " HOST_NEVER "\r\nAccept: "
	    "*/*\r\n\r\n");
	usleep(100 * 1000);
	CHECK(ALOAD(&waits_live) == 1);
	setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	cpu = cpu_ms();
	cli_close(&c);
	CHECK(wait_for(&waits_cancelled, cancelled + 1));
	usleep(300 * 1000);
	CHECK(cpu_ms() - cpu < 250);
	CHECK(ALOAD(&waits_live) == 0);

	/* The same with a body already in the socket behind the head. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "POST / HTTP/1.1\r\nHost: " HOST_NEVER "\r\n"
	    "Content-Length: 5\r\n\r\nhello");
	usleep(100 * 1000);
	CHECK(ALOAD(&waits_live) == 1);
	setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	cpu = cpu_ms();
	cli_close(&c);
	CHECK(wait_for(&waits_cancelled, cancelled + 2));
	usleep(300 * 1000);
	CHECK(cpu_ms() - cpu < 250);
	CHECK(ALOAD(&waits_live) == 0);
	CHECK(ALOAD(&bad_cancels) == 0);
}

/* A navigation still held after 2 s gets the warming page. */
static void
test_warming(void)
{
	struct cli	c;
	struct resp	r;
	int64_t		t0, dt;
	int		cancelled = ALOAD(&waits_cancelled);

	CHECK(cli_connect(&c) == 0);
	t0 = now_ms();
	cli_sends(&c, "GET /app?x=1 HTTP/1.1\r\nHost: " HOST_NEVER "\r\n"
	    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,"
	    "*/*;q=0.8\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	dt = now_ms() - t0;
	CHECK(r.status == 503);
	CHECK(dt >= 1900 && dt < 4000);
	CHECK(resp_has(&r, "X-Sandboxd-Waking: 1"));
	CHECK(resp_has(&r, "Retry-After: 2"));
	CHECK(resp_has(&r, "Cache-Control: no-store"));
	CHECK(resp_has(&r, "Content-Type: text/html; charset=utf-8"));
	CHECK(strstr(r.body, "Starting your app") != NULL);
	CHECK(strstr(r.body, "<noscript><meta http-equiv=\"refresh\" "
	    "content=\"2\"></noscript>") != NULL);
	/* The script polls without text/html, reloads on a real answer. */
	CHECK(strstr(r.body, "fetch(location.href") != NULL);
	CHECK(strstr(r.body, "cache:\"no-store\"") != NULL);
	CHECK(strstr(r.body, "\"Accept\":\"*/*\"") != NULL);
	CHECK(strstr(r.body, "X-Sandboxd-Waking") != NULL);
	CHECK(strstr(r.body, "location.reload()") != NULL);
	CHECK(strstr(r.body, "setTimeout(poll,1000)") != NULL);
	CHECK(strstr(r.body, "@keyframes") != NULL);
	resp_free(&r);
	CHECK(ALOAD(&waits_cancelled) == cancelled + 1);
	/* The connection is kept for the next request. */
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	resp_free(&r);
	cli_close(&c);
	CHECK(ALOAD(&bad_cancels) == 0);
}

/* A WebSocket upgrade is held like any request, then tunnels. */
static void
test_held_websocket(void)
{
	struct cli	c;
	struct resp	r;
	int		tunnels = ALOAD(&act_plus[ACTIVITY_TUNNEL]);

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /ws HTTP/1.1\r\nHost: " HOST_HELD "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
	    "\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 101);
	CHECK(resp_has(&r, "Upgrade: websocket"));
	resp_free(&r);
	cli_sends(&c, "held-ws");
	while (c.len < 7 && cli_fill(&c) > 0)
		;
	CHECK(c.len == 7 && memcmp(c.buf, "held-ws", 7) == 0);
	CHECK(ALOAD(&act_plus[ACTIVITY_TUNNEL]) == tunnels + 1);
	CHECK(ALOAD(&act_minus[ACTIVITY_TUNNEL]) ==
	    ALOAD(&act_plus[ACTIVITY_TUNNEL]) - 1);
	cli_close(&c);
	check_activity_balanced();
}

/* Requests pipelined behind a held one wait, and come back in order. */
static void
test_held_pipelined(void)
{
	struct cli	c;
	struct resp	r;

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c,
	    "GET /echo?1 HTTP/1.1\r\nHost: " HOST_HELD "\r\n\r\n"
	    "GET /echo?2 HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n"
	    "POST /echo?3 HTTP/1.1\r\nHost: " HOST_HELD "\r\nContent-Length: "
	    "2\r\n\r\nhi"
	    "GET /v1/echo?4 HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "GET /echo?1\n");
	resp_free(&r);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "GET /echo?2\n");
	resp_free(&r);
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK_STR(r.body, "POST /echo?3\nhi");
	resp_free(&r);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "q=4") != NULL);
	resp_free(&r);
	cli_close(&c);
	check_activity_balanced();
}

/* One request on c; the X-Origin-Conn it was served on, into serial. */
static int
cli_serial(struct cli *c, const char *host, char *serial, size_t len)
{
	struct resp	r;
	char		req[256];
	int		status;

	snprintf(req, sizeof req, "GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n",
	    host);
	cli_sends(c, req);
	if (cli_recv(c, "GET", &r) != 0)
		return -1;
	status = r.status;
	snprintf(serial, len, "%s", resp_get(&r, "x-origin-conn"));
	resp_free(&r);
	return status;
}

/* The pool never hands a connection made for generation N to N+1. */
static void
test_generation(void)
{
	struct cli	c;
	char		s1[32], s2[32], s3[32];
	int		accepts, closed;

	ASTORE(&gen_now, 5);
	CHECK(cli_connect(&c) == 0);
	CHECK(cli_serial(&c, HOST_GEN, s1, sizeof s1) == 200);
	accepts = ALOAD(&origin_accepts);
	CHECK(cli_serial(&c, HOST_GEN, s2, sizeof s2) == 200);
	CHECK_STR(s2, s1);	/* same generation: pooled */
	closed = ALOAD(&origin_closed);
	ASTORE(&gen_now, 6);
	CHECK(cli_serial(&c, HOST_GEN, s3, sizeof s3) == 200);
	CHECK(strcmp(s3, s1) != 0);
	CHECK(ALOAD(&origin_accepts) == accepts + 1);
	/* The old generation's idle connection is of no more use: closed. */
	CHECK(wait_for(&origin_closed, closed + 1));
	CHECK(cli_serial(&c, HOST_GEN, s2, sizeof s2) == 200);
	CHECK_STR(s2, s3);
	/* Another sandbox at the same address does not share the pool. */
	CHECK(cli_serial(&c, HOST_HELD, s2, sizeof s2) == 200);
	CHECK(strcmp(s2, s3) != 0);
	cli_close(&c);
	check_activity_balanced();
}

/*
 * Retiring a sandbox closes its pooled and in-use upstream connections
 * (a page if no byte went out, else the client is cut), and nothing of
 * another sandbox.
 */
static void
test_retire(void)
{
	struct cli	keep, other, ws, wait, half;
	struct resp	r;
	char		s_ok[32], s_gen[32], s[32];
	int		accepts;

	/* A pooled connection for each of two sandboxes. */
	CHECK(cli_connect(&keep) == 0);
	CHECK(cli_serial(&keep, HOST_OK, s_ok, sizeof s_ok) == 200);
	CHECK(cli_connect(&other) == 0);
	CHECK(cli_serial(&other, HOST_GEN, s_gen, sizeof s_gen) == 200);
	/* A tunnel, a request with no answer yet, one half answered. */
	CHECK(cli_connect(&ws) == 0);
	cli_sends(&ws, "GET /ws HTTP/1.1\r\nHost: " HOST_OK "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\n\r\n");
	CHECK(cli_recv(&ws, "GET", &r) == 0);
	CHECK(r.status == 101);
	resp_free(&r);
	CHECK(cli_connect(&wait) == 0);
	cli_sends(&wait, "GET /delay HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_connect(&half) == 0);
	cli_sends(&half, "GET /halfbody HTTP/1.1\r\nHost: " HOST_OK
	    "\r\n\r\n");
	while (half.len < 5 && cli_fill(&half) > 0)
		;
	CHECK(half.len > 5 && memcmp(half.buf + half.len - 5, "hello", 5) ==
	    0);
	usleep(50 * 1000);

	loop_do("Ro");
	CHECK(cli_recv(&wait, "GET", &r) == 0);
	CHECK(r.status == 502);
	CHECK(strstr(r.body, "stopped") != NULL);
	resp_free(&r);
	cli_consume(&half, half.len);
	CHECK(cli_eof(&half));
	CHECK(cli_eof(&ws));
	cli_close(&ws);
	cli_close(&wait);
	cli_close(&half);

	/* The client connection stays; its next request gets a fresh one. */
	accepts = ALOAD(&origin_accepts);
	CHECK(cli_serial(&keep, HOST_OK, s, sizeof s) == 200);
	CHECK(strcmp(s, s_ok) != 0);
	CHECK(ALOAD(&origin_accepts) == accepts + 1);
	/* The other sandbox's pooled connection was left alone. */
	CHECK(cli_serial(&other, HOST_GEN, s, sizeof s) == 200);
	CHECK_STR(s, s_gen);
	cli_close(&keep);
	cli_close(&other);
	/* Retiring a sandbox nothing uses is harmless. */
	loop_do("Rn");
	check_activity_balanced();
}

/*
 * Control retiring a sandbox from inside the activity report of one of
 * its requests: the request being started, turning into a tunnel, or
 * just finished (its upstream connection just pooled, the read that
 * ended it still up the stack).
 */
static void
test_retire_reentrant(void)
{
	struct cli	c;
	struct resp	r;
	char		s1[32], s2[32];
	int		n = ALOAD(&reentered);

	ASTORE(&reenter, REENTER_REQUEST_UP);
	CHECK(one("GET /echo HTTP/1.1\r\nHost: " HOST_GEN "\r\n\r\n", "GET",
	    &r) == 502);
	resp_free(&r);
	CHECK(ALOAD(&reentered) == n + 1);
	check_activity_balanced();

	ASTORE(&reenter, REENTER_TUNNEL_UP);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /ws HTTP/1.1\r\nHost: " HOST_GEN "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 101);
	resp_free(&r);
	CHECK(cli_eof(&c));
	cli_close(&c);
	CHECK(ALOAD(&reentered) == n + 2);
	check_activity_balanced();

	CHECK(cli_connect(&c) == 0);
	CHECK(cli_serial(&c, HOST_GEN, s1, sizeof s1) == 200);
	ASTORE(&reenter, REENTER_REQUEST_DOWN);
	CHECK(cli_serial(&c, HOST_GEN, s2, sizeof s2) == 200);
	CHECK_STR(s2, s1);
	CHECK(ALOAD(&reentered) == n + 3);
	/* The connection pooled after it was closed by the retirement. */
	CHECK(cli_serial(&c, HOST_GEN, s2, sizeof s2) == 200);
	CHECK(strcmp(s2, s1) != 0);
	cli_close(&c);
	check_activity_balanced();
}

/*
 * Control retiring another sandbox from inside a lookup (it evicts one to
 * make room for the wake): that sandbox's requests, tunnels and pooled
 * connections end, the held request goes on.
 */
static void
test_retire_in_lookup(void)
{
	struct cli	keep, wait, ws, c;
	struct resp	r;
	char		s_ok[32], s[32];

	CHECK(cli_connect(&keep) == 0);
	CHECK(cli_serial(&keep, HOST_OK, s_ok, sizeof s_ok) == 200);
	CHECK(cli_connect(&ws) == 0);
	cli_sends(&ws, "GET /ws HTTP/1.1\r\nHost: " HOST_OK "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\n\r\n");
	CHECK(cli_recv(&ws, "GET", &r) == 0);
	CHECK(r.status == 101);
	resp_free(&r);
	CHECK(cli_connect(&wait) == 0);
	cli_sends(&wait, "GET /delay HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	usleep(50 * 1000);

	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /echo?evict HTTP/1.1\r\nHost: " HOST_EVICT
	    "\r\n\r\n");
	CHECK(cli_recv(&wait, "GET", &r) == 0);
	CHECK(r.status == 502);
	resp_free(&r);
	CHECK(cli_eof(&ws));
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "GET /echo?evict\n");
	resp_free(&r);
	/* The evicted sandbox's pooled connection is not used again. */
	CHECK(cli_serial(&keep, HOST_OK, s, sizeof s) == 200);
	CHECK(strcmp(s, s_ok) != 0);
	cli_close(&c);
	cli_close(&ws);
	cli_close(&wait);
	cli_close(&keep);
	CHECK(ALOAD(&bad_cancels) == 0);
	check_activity_balanced();
}

/* Every way a proxied request ends gives back its count. */
static void
test_activity(void)
{
	struct cli	c;
	struct resp	r;
	char		req[256];
	int		requests = ALOAD(&act_plus[ACTIVITY_REQUEST]);

	/* Upstream failures: refused, reset, malformed, truncated. */
	snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %d-%s\r\n\r\n",
	    dead_port, HOST_OK);
	CHECK(one(req, "GET", &r) == 502);
	resp_free(&r);
	CHECK(one("GET /reset HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == 502);
	resp_free(&r);
	CHECK(one("GET /bad HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == 502);
	resp_free(&r);
	CHECK(one("GET /trunc HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == -1);
	resp_free(&r);
	/* Until close: the upstream's close ends it. */
	CHECK(one("GET /close HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == 200);
	resp_free(&r);
	/* The client leaves before any answer, and in the middle of one. */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /delay HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	usleep(100 * 1000);
	cli_close(&c);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /halfbody HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	while (c.len < 5 && cli_fill(&c) > 0)
		;
	cli_close(&c);
	/* A malformed request body after the head went upstream. */
	CHECK(one("POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-"
	    "Encoding: chunked\r\n\r\nzz\r\n", "POST", &r) == 400);
	resp_free(&r);
	check_activity_balanced();
	CHECK(ALOAD(&act_plus[ACTIVITY_REQUEST]) == requests + 8);
	/* Routes are no sandbox: not counted. */
	CHECK(one("GET /echo HTTP/1.1\r\nHost: app.test\r\n\r\n", "GET",
	    &r) == 200);
	resp_free(&r);
	CHECK(ALOAD(&act_plus[ACTIVITY_REQUEST]) == requests + 8);
}

/* Graceful shutdown: idle cut at once, in-flight answered, then done. */
static void
test_shutdown(void)
{
	struct cli	idle, busy, late, ws, held;
	struct resp	r;
	int		i, cancelled = ALOAD(&waits_cancelled);

	CHECK(cli_connect(&idle) == 0);
	CHECK(cli_connect(&busy) == 0);
	/* A tunnel and a held request are cut when the grace ends. */
	CHECK(cli_connect(&ws) == 0);
	cli_sends(&ws, "GET /ws HTTP/1.1\r\nHost: " HOST_OK "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\n\r\n");
	CHECK(cli_recv(&ws, "GET", &r) == 0);
	CHECK(r.status == 101);
	resp_free(&r);
	CHECK(cli_connect(&held) == 0);
	cli_sends(&held, "GET / HTTP/1.1\r\nHost: " HOST_NEVER "\r\n\r\n");
	cli_sends(&busy, "GET /v1/slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
	usleep(50 * 1000);
	loop_do("S");
	CHECK(cli_recv(&busy, "GET", &r) == 0);
	CHECK(r.status == 200 && resp_has(&r, "Connection: close"));
	resp_free(&r);
	CHECK(cli_eof(&busy));
	CHECK(cli_eof(&idle));
	CHECK(cli_eof(&ws));
	CHECK(cli_eof(&held));
	for (i = 0; i < 300 && !ALOAD(&shutdown_done); i++)
		usleep(10 * 1000);
	CHECK(ALOAD(&shutdown_done));
	CHECK(ALOAD(&waits_cancelled) == cancelled + 1);
	CHECK(cli_connect(&late) != 0);
	cli_close(&idle);
	cli_close(&busy);
	cli_close(&ws);
	cli_close(&held);
	check_activity_balanced();
}

/* ------------------------------------------------------------------ */
/* Defenses: smuggling shapes, oversized heads, caps, timeouts, rates. */

/* The status of one request on a new connection, or -1 (cut, no answer). */
static int
status_of(const char *req, const char *method)
{
	struct resp	r;
	int		st;

	st = one(req, method, &r);
	resp_free(&r);
	return st;
}

/*
 * Request smuggling: every framing a server behind us could read another
 * way is refused before a byte goes upstream; what is accepted is framed
 * exactly as the upstream frames it.
 */
static void
test_smuggling(void)
{
	static const char *bad[] = {
		/* CL and TE together, either order */
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: 4"
		"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
		/* repeated, listed, signed, spaced or empty lengths */
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: 1"
		"\r\nContent-Length: 1\r\n\r\nx",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: 1, "
		"1\r\n\r\nx",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: +1"
		"\r\n\r\nx",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: 1 1"
		"\r\n\r\nx",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length:\r\n"
		"\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: 0x1"
		"\r\n\r\nx",
		/* Transfer-Encoding other than exactly chunked */
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked, identity\r\n\r\n0\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"xchunked\r\n\r\n0\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"identity\r\n\r\n0\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding:\r"
		"\n chunked\r\n\r\n0\r\n\r\n",		/* obs-fold */
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding : "
		"chunked\r\n\r\n0\r\n\r\n",
		"POST /admin HTTP/1.0\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\n\r\n0\r\n\r\n",		/* 1.0 with TE */
		/* bare LF, bare CR, NUL, obs-fold in any header */
		"GET /admin HTTP/1.1\nHost: " HOST_OK "\n\n",
		"GET /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nX: a\rb\r\n\r\n",
		"GET /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nX: a\nY: b\r\n\r\n",
		"GET /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nX: a\r\n b\r\n\r\n",
		/* request-line oddities */
		"GET http://" HOST_OK "/admin HTTP/1.1\r\nHost: " HOST_OK "\r\n"
		"\r\n",
		"GET http://evil.example/admin HTTP/1.1\r\nHost: " HOST_OK
		"\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n",
		"GET  /admin HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n",
		"GET /admin HTTP/1.1 \r\nHost: " HOST_OK "\r\n\r\n",
		"GET /admin http/1.1\r\nHost: " HOST_OK "\r\n\r\n",
		"GET /admin HTTP/2.0\r\nHost: " HOST_OK "\r\n\r\n",
		/* invalid chunks and trailers */
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\n\r\n-1\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\n\r\n1\nx\r\n0\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\n\r\n1;a\nb\r\nx\r\n0\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\n\r\n0\r\nHost: evil.example\r\n\r\n",
		"POST /admin HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
		"chunked\r\n\r\n0\r\nX-Bad\r\n\r\n",
	};
	struct cli	 c;
	struct resp	 r;
	size_t		 i;
	int		 st;

	for (i = 0; i < nitems(bad); i++) {
		st = status_of(bad[i], "POST");
		if (st != 400)
			fprintf(stderr, "smuggling shape %zu: %d\n", i, st);
		CHECK(st == 400);
	}
	/*
	 * What the edge refused before the head went upstream never
	 * reached it; an invalid chunk or trailer cuts a request the
	 * upstream has seen begin, and the upstream connection with it.
	 */
	CHECK(ALOAD(&origin_admin) <= 5);

	/* Leading zeros are digits: the length is 5 either way. */
	CHECK(one("POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nContent-Length: "
	    "005\r\n\r\nhello", "POST", &r) == 200);
	CHECK_STR(r.body, "POST /echo\nhello");
	resp_free(&r);

	/*
	 * A request inside a body stays body, and the request after the
	 * body is the next one, routed by its own Host.
	 */
	ASTORE(&origin_admin, 0);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n"
	    "Content-Length: 40\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
	    "XXXXXXXX"
	    "POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n20\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n\r\n"
	    "0\r\nX-Sum: 1\r\n\r\n"
	    "GET /v1/echo?after HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK_STR(r.body, "POST /echo\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
	    "XXXXXXXX");
	resp_free(&r);
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK_STR(r.body, "POST /echo\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n");
	resp_free(&r);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200 && strstr(r.body, "q=after") != NULL);
	resp_free(&r);
	cli_close(&c);
	CHECK(ALOAD(&origin_admin) == 0);
}

/*
 * The upstream side: a pooled connection is never handed on while bytes
 * of the last exchange may still come.
 */
static void
test_pool_safety(void)
{
	struct cli	c;
	struct resp	r;
	char		serial[32];

	/* After HEAD: not pooled (a server may send the body anyway). */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	snprintf(serial, sizeof serial, "%s", resp_get(&r, "x-origin-conn"));
	resp_free(&r);
	cli_sends(&c, "HEAD /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "HEAD", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == 0);
	CHECK_STR(resp_get(&r, "x-origin-conn"), serial);
	resp_free(&r);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "GET /echo\n");
	CHECK(strcmp(resp_get(&r, "x-origin-conn"), serial) != 0);
	resp_free(&r);

	/* A 204 that announces (and sends) a body: not pooled. */
	cli_sends(&c, "GET /204cl HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 204 && r.bodylen == 0);
	snprintf(serial, sizeof serial, "%s", resp_get(&r, "x-origin-conn"));
	resp_free(&r);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "GET /echo\n");
	CHECK(strcmp(resp_get(&r, "x-origin-conn"), serial) != 0);
	resp_free(&r);

	/* A 1xx with a body: its body is no head, 502; the next is fine. */
	cli_sends(&c, "GET /1xxbody HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 502);
	resp_free(&r);
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "GET /echo\n");
	resp_free(&r);
	cli_close(&c);

	/*
	 * An answer before the request body is all there: the client
	 * connection ends after it (its body is not read on), and the
	 * upstream connection is not pooled.
	 */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "POST /early HTTP/1.1\r\nHost: " HOST_OK "\r\n"
	    "Content-Length: 10\r\n\r\nhello");
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 200 && strcmp(r.body, "early") == 0);
	CHECK(resp_has(&r, "Connection: close"));
	snprintf(serial, sizeof serial, "%s", resp_get(&r, "x-origin-conn"));
	resp_free(&r);
	cli_close(&c);
	CHECK(one("GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n", "GET",
	    &r) == 200);
	CHECK(strcmp(resp_get(&r, "x-origin-conn"), serial) != 0);
	resp_free(&r);
}

/* 431 and 414, a page or the API's JSON as the Host says. */
static void
test_oversized(void)
{
	struct cli	 c;
	struct resp	 r;
	char		*big, line[64];
	size_t		 i;
	int		 host;

	/* Too many header fields: 431, not 400. */
	for (host = 0; host < 2; host++) {
		CHECK(cli_connect(&c) == 0);
		cli_sends(&c, host == 0 ? "GET / HTTP/1.1\r\nHost: localhost\r\n" :
		    "GET / HTTP/1.1\r\nHost: " HOST_OK "\r\n");
		for (i = 0; i < HTTP_MAX_HEADERS + 5; i++) {
			snprintf(line, sizeof line, "X-H%zu: v\r\n", i);
			cli_sends(&c, line);
		}
		cli_sends(&c, "\r\n");
		CHECK(cli_recv(&c, "GET", &r) == 0);
		CHECK(r.status == 431);
		CHECK(strstr(r.body, "too many header fields") != NULL);
		CHECK(resp_has(&r, host == 0 ? "Content-Type: application/json" :
		    "Content-Type: text/html; charset=utf-8"));
		CHECK(resp_has(&r, "Connection: close"));
		resp_free(&r);
		cli_close(&c);
	}
	/* Exactly the limit is fine (the API: no X-Forwarded-* added). */
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET /v1/echo HTTP/1.1\r\n");
	for (i = 0; i < HTTP_MAX_HEADERS - 1; i++) {
		snprintf(line, sizeof line, "X-H%zu: v\r\n", i);
		cli_sends(&c, line);
	}
	cli_sends(&c, "Host: localhost\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 200);
	resp_free(&r);
	cli_close(&c);

	/* A request line over the limit: 414. A huge header: 431 page. */
	big = malloc(HTTP_MAX_HEAD_SIZE + 100);
	memset(big, 'a', HTTP_MAX_HEAD_SIZE + 100);
	memcpy(big, "GET /", 5);
	CHECK(cli_connect(&c) == 0);
	cli_send(&c, big, HTTP_MAX_HEAD_SIZE + 100);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 414);
	resp_free(&r);
	cli_close(&c);
	CHECK(cli_connect(&c) == 0);
	cli_sends(&c, "GET / HTTP/1.1\r\nHost: " HOST_OK "\r\nCookie: ");
	cli_send(&c, big, HTTP_MAX_HEAD_SIZE);
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 431);
	CHECK(resp_has(&r, "Content-Type: text/html; charset=utf-8"));
	resp_free(&r);
	cli_close(&c);
	free(big);
}

/* The per-address hash table: counts survive growth and deletions. */
static void
test_limit_table(void)
{
	struct config		 c;
	struct edge		 e;
	struct edge_conn	*conns;
	struct sockaddr_in6	 sin6;
	struct sockaddr_in	 sin;
	struct edge_addr_key	 k1, k2;
	size_t			 i, j, n = 3000, tmp, *order;
	int			 ok;

	/* IPv4, its mapped form and an IPv6 /64 share their keys. */
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
	memset(&sin6, 0, sizeof sin6);
	sin6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &sin6.sin6_addr);
	CHECK(edge_addr_key((struct sockaddr *)&sin, &k1) == 0);
	CHECK(edge_addr_key((struct sockaddr *)&sin6, &k2) == 0);
	CHECK(memcmp(&k1, &k2, sizeof k1) == 0);
	inet_pton(AF_INET6, "2001:db8:1:2::1", &sin6.sin6_addr);
	edge_addr_key((struct sockaddr *)&sin6, &k1);
	inet_pton(AF_INET6, "2001:db8:1:2:ffff:1:2:3", &sin6.sin6_addr);
	edge_addr_key((struct sockaddr *)&sin6, &k2);
	CHECK(memcmp(&k1, &k2, sizeof k1) == 0);
	inet_pton(AF_INET6, "2001:db8:1:3::1", &sin6.sin6_addr);
	edge_addr_key((struct sockaddr *)&sin6, &k2);
	CHECK(memcmp(&k1, &k2, sizeof k1) != 0);

	memset(&c, 0, sizeof c);
	c.max_connections_per_ip = 2;
	memset(&e, 0, sizeof e);
	e.cfg = &c;
	edge_limit_init(&e);
	e.lim.max_conns = 10 * n;	/* whatever the descriptor limit */
	conns = calloc(3 * n, sizeof *conns);
	order = calloc(2 * n, sizeof *order);
	/* n addresses, twice each; a third is refused. */
	for (i = 0, ok = 1; i < 2 * n; i++) {
		sin.sin_addr.s_addr = htonl(0x0a000000 + (uint32_t)(i % n) * 7);
		ok &= edge_limit_admit(&e, &conns[i], (struct sockaddr *)&sin)
		    == 0;
		order[i] = i;
	}
	CHECK(ok);
	for (i = 0, ok = 1; i < n; i++) {
		sin.sin_addr.s_addr = htonl(0x0a000000 + (uint32_t)i * 7);
		ok &= edge_limit_admit(&e, &conns[2 * n + i],
		    (struct sockaddr *)&sin) == -1;
	}
	CHECK(ok);
	CHECK(e.nconns == 2 * n);
	/* Release in a scrambled order; each address frees up on its own. */
	for (i = 0; i < 2 * n; i++) {
		j = (i * 7919 + 13) % (2 * n);
		tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
	for (i = 0; i < 2 * n; i++)
		edge_limit_release(&e, &conns[order[i]]);
	CHECK(e.nconns == 0);
	for (i = 0, ok = 1; i < n; i++) {
		sin.sin_addr.s_addr = htonl(0x0a000000 + (uint32_t)i * 7);
		ok &= edge_limit_admit(&e, &conns[i],
		    (struct sockaddr *)&sin) == 0;
		ok &= edge_limit_admit(&e, &conns[n + i],
		    (struct sockaddr *)&sin) == 0;
		ok &= edge_limit_admit(&e, &conns[2 * n + i],
		    (struct sockaddr *)&sin) == -1;
	}
	CHECK(ok);
	for (i = 0; i < 2 * n; i++)
		edge_limit_release(&e, &conns[i]);
	CHECK(e.nconns == 0);
	/* The global cap. */
	c.max_connections_per_ip = 0;
	e.lim.max_conns_ip = 0;
	e.lim.max_conns = 2;
	CHECK(edge_limit_admit(&e, &conns[0], (struct sockaddr *)&sin) == 0);
	CHECK(edge_limit_admit(&e, &conns[1], (struct sockaddr *)&sin) == 0);
	CHECK(edge_limit_admit(&e, &conns[2], (struct sockaddr *)&sin) == -1);
	edge_limit_release(&e, &conns[0]);
	edge_limit_release(&e, &conns[0]);	/* idempotent */
	CHECK(e.nconns == 1);
	edge_limit_release(&e, &conns[1]);
	edge_limit_free(&e);
	free(conns);
	free(order);
}

/* Make the defenses' edge and wait for its port. */
static int
def_start(void)
{
	int	i;

	loop_do("D");
	for (i = 0; i < 200 && ALOAD(&edge2_port) == 0; i++)
		usleep(10 * 1000);
	return ALOAD(&edge2_port) > 0 ? 0 : -1;
}

/* Connect to the defenses' edge. */
static int
def_connect(struct cli *c)
{
	return cli_open2(c, NULL, "127.0.0.1", ALOAD(&edge2_port), 0);
}

/*
 * max_connections_per_ip (3) and max_connections (5): over either the
 * connection is closed at once, other addresses are still served, and a
 * closed connection gives its place back.
 */
static void
test_def_caps(void)
{
	struct cli	a[4], b[2], x;
	int		i, p = ALOAD(&edge2_port), p6 = ALOAD(&edge2_port6);
	int		ok;

	/* 127.0.0.1 three times, once as ::ffff:127.0.0.1 (dual stack). */
	CHECK(cli_open2(&a[0], NULL, "127.0.0.1", p, 0) == 0);
	CHECK(cli_open2(&a[1], NULL, "127.0.0.1", p, 0) == 0);
	CHECK(cli_open2(&a[2], NULL, "127.0.0.1", p6, 0) == 0);
	for (i = 0; i < 3; i++)
		CHECK(cli_ok(&a[i]));
	/* A fourth, on either listener: cut without a byte. */
	CHECK(cli_open2(&x, NULL, "127.0.0.1", p, 0) == 0);
	CHECK(cli_cut_within(&x, 1000));
	cli_close(&x);
	CHECK(cli_open2(&x, NULL, "127.0.0.1", p6, 0) == 0);
	CHECK(cli_cut_within(&x, 1000));
	cli_close(&x);
	/* Another address is served while the first is over its cap. */
	CHECK(cli_open2(&b[0], "127.0.0.2", "127.0.0.1", p, 0) == 0);
	CHECK(cli_ok(&b[0]));
	CHECK(cli_open2(&b[1], "127.0.0.2", "127.0.0.1", p, 0) == 0);
	CHECK(cli_ok(&b[1]));
	/* Five in all: a sixth from a third address (or ::1) is refused. */
	CHECK(cli_open2(&x, "127.0.0.3", "127.0.0.1", p, 0) == 0);
	CHECK(cli_cut_within(&x, 1000));
	cli_close(&x);
	if (cli_open2(&x, NULL, "::1", p6, 0) == 0) {
		CHECK(cli_cut_within(&x, 1000));
		cli_close(&x);
	}
	/* The kept ones still work; a closed one frees its place. */
	CHECK(cli_ok(&a[0]) && cli_ok(&b[1]));
	cli_close(&a[1]);
	for (i = 0, ok = 0; i < 50 && !ok; i++) {
		CHECK(cli_open2(&a[3], NULL, "127.0.0.1", p, 0) == 0);
		ok = cli_ok(&a[3]);
		if (!ok) {
			cli_close(&a[3]);
			usleep(20 * 1000);
		}
	}
	CHECK(ok);
	cli_close(&a[0]);
	cli_close(&a[2]);
	cli_close(&a[3]);
	cli_close(&b[0]);
	cli_close(&b[1]);
	/* All places back: five at once again (once the closes are seen). */
	usleep(100 * 1000);
	for (i = 0, ok = 1; i < 3; i++) {
		CHECK(cli_open2(&a[i], NULL, "127.0.0.1", p, 0) == 0);
		ok &= cli_ok(&a[i]);
	}
	for (i = 0; i < 2; i++) {
		CHECK(cli_open2(&b[i], "127.0.0.2", "127.0.0.1", p, 0) == 0);
		ok &= cli_ok(&b[i]);
	}
	CHECK(ok);
	for (i = 0; i < 3; i++)
		cli_close(&a[i]);
	for (i = 0; i < 2; i++)
		cli_close(&b[i]);
	usleep(100 * 1000);
}

/*
 * Slowloris: header_timeout (1 s) bounds a whole head, however its bytes
 * trickle; a new connection's clock starts at accept, a kept one's at
 * the next head's first byte. Idle connections go silently.
 */
static void
test_def_slowloris(void)
{
	struct cli	c;
	struct resp	r;
	int64_t		t0, t;
	int		i;

	/* A trickled head: 408 at 1 s, then EOF. */
	CHECK(def_connect(&c) == 0);
	t0 = now_ms();
	cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n");
	for (i = 0; i < 20 && cli_quiet(&c, 150); i++)
		cli_sends(&c, "X-a: b\r\n");
	t = now_ms() - t0;
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK(r.status == 408 && resp_has(&r, "Connection: close"));
	resp_free(&r);
	CHECK(cli_eof(&c));
	cli_close(&c);
	if (t < 900 || t > 1600)
		fprintf(stderr, "slowloris cut after %lld ms\n", (long long)t);
	CHECK(t >= 900 && t <= 1600);

	/* Silent for 0.6 s, then trickling: still 1 s from accept. */
	CHECK(def_connect(&c) == 0);
	t0 = now_ms();
	usleep(600 * 1000);
	cli_sends(&c, "GET /echo HTTP/1.1\r\n");
	for (i = 0; i < 20 && cli_quiet(&c, 100); i++)
		cli_sends(&c, "X-a: b\r\n");
	t = now_ms() - t0;
	CHECK(cli_recv(&c, "GET", &r) == 0 && r.status == 408);
	resp_free(&r);
	cli_close(&c);
	CHECK(t >= 900 && t <= 1600);

	/* Nothing at all: closed silently at 1 s. */
	CHECK(def_connect(&c) == 0);
	t0 = now_ms();
	CHECK(cli_quiet(&c, 800));
	CHECK(cli_cut_within(&c, 1500));
	t = now_ms() - t0;
	CHECK(t >= 900 && t <= 1800);
	cli_close(&c);

	/* Kept alive, idle 0.8 s, then a trickled head: 1 s from its start. */
	CHECK(def_connect(&c) == 0);
	CHECK(cli_ok(&c));
	usleep(800 * 1000);
	t0 = now_ms();
	cli_sends(&c, "GET /echo HTTP/1.1\r\n");
	for (i = 0; i < 20 && cli_quiet(&c, 100); i++)
		cli_sends(&c, "X-a: b\r\n");
	t = now_ms() - t0;
	CHECK(cli_recv(&c, "GET", &r) == 0 && r.status == 408);
	resp_free(&r);
	cli_close(&c);
	CHECK(t >= 900 && t <= 1600);

	/* Idle keep-alive (1.5 s): closed without a byte. */
	CHECK(def_connect(&c) == 0);
	CHECK(cli_ok(&c));
	t0 = now_ms();
	CHECK(cli_quiet(&c, 1200));
	CHECK(cli_cut_within(&c, 1500));
	t = now_ms() - t0;
	CHECK(t >= 1400 && t <= 2300);
	cli_close(&c);
}

/* Send len bytes of 'b' in steps of step bytes every ms; 0 or -1. */
static int
cli_trickle(struct cli *c, size_t len, size_t step, int ms)
{
	char	buf[8192];
	size_t	n;

	memset(buf, 'b', sizeof buf);
	while (len > 0) {
		n = len < step ? len : step;
		if (n > sizeof buf)
			n = sizeof buf;
		if (!cli_quiet(c, 0) || cli_send(c, buf, n) != 0)
			return -1;
		len -= n;
		if (len > 0)
			usleep(ms * 1000);
	}
	return 0;
}

/*
 * Request bodies: below body_min_rate (2000 B/s over 600 ms windows) a
 * body is cut with 408, proxied or for the API; one that keeps moving is
 * never cut, however long it takes, and the response clock (800 ms)
 * starts only when it has all gone upstream.
 */
static void
test_def_bodies(void)
{
	struct cli	 c;
	struct resp	 r;
	char		 hex[16];
	int64_t		 t0, t;
	int		 i;

	/* 100 bytes every 150 ms: too slow, proxied and for the API. */
	CHECK(def_connect(&c) == 0);
	t0 = now_ms();
	cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n"
	    "Content-Length: 100000\r\n\r\n");
	cli_trickle(&c, 5000, 100, 150);
	t = now_ms() - t0;
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 408 && resp_has(&r, "Connection: close"));
	resp_free(&r);
	cli_close(&c);
	CHECK(t >= 500 && t <= 1600);
	CHECK(def_connect(&c) == 0);
	cli_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Content-Length: 1000\r\n\r\n");
	cli_trickle(&c, 1000, 10, 150);
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 408);
	CHECK(resp_has(&r, "Content-Type: application/json"));
	resp_free(&r);
	cli_close(&c);

	/* 4000 bytes every 150 ms for 1.8 s: kept, and answered. */
	CHECK(def_connect(&c) == 0);
	cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n"
	    "Content-Length: 48000\r\n\r\n");
	CHECK(cli_trickle(&c, 48000, 4000, 150) == 0);
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == 11 + 48000);
	resp_free(&r);
	/* The same, chunked, on the same connection. */
	cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: " HOST_OK "\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n");
	for (i = 0; i < 12; i++) {
		snprintf(hex, sizeof hex, "%x\r\n", 4000);
		cli_sends(&c, hex);
		CHECK(cli_trickle(&c, 4000, 4000, 0) == 0);
		cli_sends(&c, "\r\n");
		usleep(150 * 1000);
	}
	cli_sends(&c, "0\r\n\r\n");
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 200 && r.bodylen == 11 + 48000);
	resp_free(&r);
	/* The API's body rule lets a moving body through too. */
	cli_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
	    "Content-Length: 1000\r\n\r\n");
	CHECK(cli_trickle(&c, 1000, 250, 100) == 0);
	CHECK(cli_recv(&c, "POST", &r) == 0);
	CHECK(r.status == 200);
	resp_free(&r);
	cli_close(&c);

	/* An upstream that never answers: 504, 800 ms after the last byte. */
	CHECK(def_connect(&c) == 0);
	t0 = now_ms();
	cli_sends(&c, "GET /never HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0 && r.status == 504);
	resp_free(&r);
	t = now_ms() - t0;
	CHECK(t >= 700 && t <= 1500);
	cli_close(&c);
	CHECK(def_connect(&c) == 0);
	cli_sends(&c, "POST /never HTTP/1.1\r\nHost: " HOST_OK "\r\n"
	    "Content-Length: 40000\r\n\r\n");
	CHECK(cli_trickle(&c, 40000, 4000, 150) == 0);
	t0 = now_ms();
	CHECK(cli_recv(&c, "POST", &r) == 0 && r.status == 504);
	resp_free(&r);
	t = now_ms() - t0;
	if (t < 650 || t > 1500)
		fprintf(stderr, "504 %lld ms after the body\n", (long long)t);
	CHECK(t >= 650 && t <= 1500);
	cli_close(&c);
}

/*
 * After the response head: an upstream silent mid-body for
 * response_idle_timeout (1 s) is cut; a tunnel with no byte either way
 * for tunnel_idle_timeout (1 s) is closed; moving ones never are.
 */
static void
test_def_relays(void)
{
	struct cli	c;
	struct resp	r;
	int64_t		t0, t;
	int		i, ended, ok;

	/* A 200 ms pause mid-body is fine; 1.5 s is cut, visibly short. */
	CHECK(def_connect(&c) == 0);
	cli_sends(&c, "GET /slowbody HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0);
	CHECK_STR(r.body, "helloworld");
	resp_free(&r);
	t0 = now_ms();
	cli_sends(&c, "GET /halfbody HTTP/1.1\r\nHost: " HOST_OK "\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == -1);
	resp_free(&r);
	t = now_ms() - t0;
	CHECK(t >= 900 && t <= 1450);
	cli_close(&c);

	/* A silent WebSocket is closed; a talking one is not. */
	CHECK(def_connect(&c) == 0);
	cli_sends(&c, "GET /ws HTTP/1.1\r\nHost: " HOST_OK "\r\nConnection: "
	    "Upgrade\r\nUpgrade: websocket\r\n\r\n");
	CHECK(cli_recv(&c, "GET", &r) == 0 && r.status == 101);
	resp_free(&r);
	for (i = 0, ok = 1; i < 8; i++) {
		usleep(300 * 1000);
		cli_sends(&c, "ping");
		while (c.len < 4 && cli_fill(&c) > 0)
			;
		ok &= c.len == 4 && memcmp(c.buf, "ping", 4) == 0;
		cli_consume(&c, c.len);
	}
	CHECK(ok);
	t0 = now_ms();
	cli_drain(&c, 3000, &ended);
	t = now_ms() - t0;
	CHECK(ended && t >= 900 && t <= 1600);
	cli_close(&c);
	check_activity_balanced();
}

/*
 * A paced reader: every 100 ms, up to chunk bytes (at most 32 KiB) if
 * any wait, for ms; counted in *got. 1 if the connection ended (EOF or
 * an error) meanwhile, else 0.
 */
static int
cli_read_paced(struct cli *c, size_t chunk, int64_t ms, size_t *got)
{
	static char	 buf[32768];
	struct pollfd	 pfd;
	ssize_t		 n;
	int64_t		 t0 = now_ms();

	if (chunk > sizeof buf)
		chunk = sizeof buf;
	while (now_ms() - t0 < ms) {
		usleep(100 * 1000);
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 0) != 1)
			continue;
		n = recv(c->fd, buf, chunk, MSG_DONTWAIT);
		if (n <= 0)
			return 1;
		*got += n;
	}
	return 0;
}

/*
 * Slow read: a client with a tiny window taking 10 KB/s of a 4 MiB
 * response (send_min_rate: 20000 B/s over 600 ms) is cut, though it
 * takes bytes all the time; a normal reader of the same gets all of it.
 */
static void
test_def_slow_read(void)
{
	struct cli	 c;
	struct resp	 r;
	char		 req[128];
	size_t		 got = 0;
	int		 cut;

	snprintf(req, sizeof req, "GET /pat/%d/len HTTP/1.1\r\nHost: " HOST_OK
	    "\r\n\r\n", 4 * MIB);
	CHECK(cli_open2(&c, NULL, "127.0.0.1", ALOAD(&edge2_port), 4096) == 0);
	cli_sends(&c, req);
	cut = cli_read_paced(&c, 1000, 8000, &got);
	CHECK(cut && got < (size_t)4 * MIB);
	if (!cut)
		fprintf(stderr, "slow reader not cut: %zu bytes\n", got);
	cli_close(&c);
	CHECK(def_connect(&c) == 0);
	CHECK(cli_sends(&c, req) == 0 && cli_recv(&c, "GET", &r) == 0);
	CHECK(resp_is_pattern(&r, 4 * MIB));
	resp_free(&r);
	cli_close(&c);
}

/*
 * A steady reader is not a slow one: a client taking 32 KiB every 100 ms
 * (320 KB/s, sixteen times send_min_rate) of a 16 MiB response for 3 s
 * (five send_timeout windows) is not cut, though the kernel says our
 * socket is writable again only once much of its send buffer (megabytes)
 * drained, so whole windows pass in which none of our output leaves for
 * the socket: what the client took from the kernel's queue counts. (On
 * loopback the client's window opens 64 KiB at a time, its MSS: a much
 * slower reader could see a 600 ms window pass with none of it.)
 */
static void
test_def_steady_read(void)
{
	struct cli	 c;
	char		 buf[32768], req[128];
	size_t		 got = 0, want;
	ssize_t		 n;
	int64_t		 t0;
	int		 cut, bad = 0;

	snprintf(req, sizeof req, "GET /pat/%d/len HTTP/1.1\r\nHost: " HOST_OK
	    "\r\n\r\n", 16 * MIB);
	CHECK(def_connect(&c) == 0);
	cli_sends(&c, req);
	t0 = now_ms();
	cut = cli_read_paced(&c, sizeof buf, 3000, &got);
	/* Still served: more comes, no end, no reset. */
	want = got + 1;
	while (!cut && got < want && now_ms() - t0 < 5000) {
		n = recv(c.fd, buf, sizeof buf, 0);
		if (n <= 0)
			cut = 1;
		else
			got += n;
	}
	if (cut)
		fprintf(stderr, "steady reader cut after %lld ms, %zu bytes\n",
		    (long long)(now_ms() - t0), got);
	/* Served all along: about 30 reads, most of them full. */
	bad = got < 12 * sizeof buf;
	CHECK(!cut && !bad);
	cli_close(&c);
}

/* The defenses' edge: made, tested, freed. */
static void
test_defenses(void)
{
	if (def_start() != 0) {
		CHECK(!"the defenses' edge started");
		return;
	}
	RUN(test_def_caps);
	RUN(test_def_slowloris);
	RUN(test_def_bodies);
	RUN(test_def_relays);
	RUN(test_def_slow_read);
	RUN(test_def_steady_read);
	loop_do("d");
	while (ALOAD(&edge2_port) != 0)
		usleep(10 * 1000);
}

/* The client thread: every test, then tell the loop to stop. */
static void *
client_main(void *arg)
{
	RUN(test_preview_get);
	RUN(test_preview_post);
	RUN(test_private);
	RUN(test_set_cookie);
	RUN(test_keepalive_pool);
	RUN(test_forwarded_headers);
	RUN(test_no_body_responses);
	RUN(test_framings);
	RUN(test_websocket);
	RUN(test_websocket_slow_reader);
	RUN(test_large_bodies);
	RUN(test_pages);
	RUN(test_upstream_failures);
	RUN(test_static_route);
	RUN(test_stats);
	RUN(test_api);
	RUN(test_api_stream);
	RUN(test_limits);
	RUN(test_pipelining);
	RUN(test_held);
	RUN(test_held_cancel);
	RUN(test_held_reset);
	RUN(test_warming);
	RUN(test_held_websocket);
	RUN(test_held_pipelined);
	RUN(test_generation);
	RUN(test_retire);
	RUN(test_retire_reentrant);
	RUN(test_retire_in_lookup);
	RUN(test_activity);
	RUN(test_h2);
	RUN(test_h2_held);
	RUN(test_h2_garbage);
	RUN(test_smuggling);
	RUN(test_pool_safety);
	RUN(test_oversized);
	RUN(test_limit_table);
	RUN(test_defenses);
	RUN(test_shutdown);
	loop_do("Q");
	return NULL;
}

/* ------------------------------------------------------------------ */

/* edge_shutdown finished. */
static void
shutdown_done_cb(void *arg)
{
	AINC(&shutdown_done);
}

/*
 * The defenses' edge, on the loop: short timeouts, small caps. The
 * stand-in control keeps one retire callback: the main edge's stays.
 */
static void
edge2_make(void)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin;
	struct sockaddr_in6	*sin6;
	control_retire_cb	 cb = retire_cb;
	void			*arg = retire_arg;
	socklen_t		 len;
	char			*cause = NULL;

	memcpy(&cfg2, edge->cfg, sizeof cfg2);
	memset(listen2, 0, sizeof listen2);
	sin = (struct sockaddr_in *)&listen2[0].ss;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	listen2[0].sslen = sizeof *sin;
	listen2[0].text = "127.0.0.1:0";
	sin6 = (struct sockaddr_in6 *)&listen2[1].ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_addr = in6addr_any;
	listen2[1].sslen = sizeof *sin6;
	listen2[1].text = "[::]:0";
	cfg2.listen = listen2;
	cfg2.nlisten = 2;
	cfg2.max_connections = 5;
	cfg2.max_connections_per_ip = 3;
	cfg2.header_timeout_ms = 1000;
	cfg2.keepalive_timeout_ms = 1500;
	cfg2.body_timeout_ms = 600;
	cfg2.body_min_rate = 2000;
	cfg2.send_timeout_ms = 600;
	cfg2.send_min_rate = 20000;
	cfg2.response_timeout_ms = 800;
	cfg2.response_idle_timeout_ms = 1000;
	cfg2.tunnel_idle_timeout_ms = 1000;
	edge2 = edge_new(base, &cfg2, NULL, &cause);
	retire_cb = cb;
	retire_arg = arg;
	if (edge2 == NULL) {
		fprintf(stderr, "edge_new (defenses): %s\n", cause);
		ASTORE(&edge2_port, -1);
		return;
	}
	edge_listener_addr(edge2, 1, &ss, &len);
	ASTORE(&edge2_port6, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	edge_listener_addr(edge2, 0, &ss, &len);
	ASTORE(&edge2_port, ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

/* Free the defenses' edge (its connections are cut). */
static void
edge2_free(void)
{
	control_retire_cb	 cb = retire_cb;
	void			*arg = retire_arg;

	edge_free(edge2);
	edge2 = NULL;
	retire_cb = cb;
	retire_arg = arg;
	ASTORE(&edge2_port, 0);
}

/* A command from the client thread. */
static void
ctl_cb(evutil_socket_t fd, short events, void *arg)
{
	char	c, which;

	if (read(fd, &c, 1) != 1)
		return;
	switch (c) {
	case 'S':
		edge_shutdown(edge, 2000, shutdown_done_cb, NULL);
		break;
	case 'D':
		edge2_make();
		break;
	case 'd':
		edge2_free();
		break;
	case 'R':
		/* Retire: o (ID_OK), g (ID_GEN), n (a sandbox nothing uses). */
		if (read(fd, &which, 1) != 1 || retire_cb == NULL)
			abort();
		retire_cb(which == 'o' ? ID_OK : which == 'g' ? ID_GEN :
		    ID_UNKNOWN, retire_arg);
		break;
	default:
		event_base_loopexit(base, NULL);
		break;
	}
}

/* Bind a listener for the origin; returns it. */
static struct evconnlistener *
origin_listen(struct sockaddr *sa, socklen_t len)
{
	return evconnlistener_new_bind(base, origin_accept_cb, NULL,
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 64, sa, len);
}

/* A port nobody listens on. */
static int
free_port(void)
{
	struct sockaddr_in	sin;
	socklen_t		len = sizeof sin;
	int			fd, port;

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	bind(fd, (struct sockaddr *)&sin, sizeof sin);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

int
main(void)
{
	struct config		 cfg;
	struct cfg_addr		 listen;
	struct cfg_route	 routes[2];
	struct control		 ctl;
	struct sockaddr_in	 sin, *lsin;
	struct sockaddr_un	 sun;
	struct sockaddr_storage	 ss;
	socklen_t		 len;
	struct evconnlistener	*ol, *ul;
	struct event		*ctl_ev;
	pthread_t		 thread;
	char			*cause = NULL;

	alarm(120);
	signal(SIGPIPE, SIG_IGN);
	log_init(getenv("TEST_EDGE_DEBUG") != NULL ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN);
	base = event_base_new();

	/* The origin, on TCP and on a unix socket. */
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ol = origin_listen((struct sockaddr *)&sin, sizeof sin);
	len = sizeof sin;
	getsockname(evconnlistener_get_fd(ol), (struct sockaddr *)&sin, &len);
	origin_port = ntohs(sin.sin_port);
	dead_port = free_port();
	snprintf(unix_path, sizeof unix_path, "/tmp/test_edge.%d.sock",
	    (int)getpid());
	unlink(unix_path);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", unix_path);
	ul = origin_listen((struct sockaddr *)&sun, sizeof sun);

	/* The config edge reads: one listener on an ephemeral port. */
	memset(&cfg, 0, sizeof cfg);
	memset(&listen, 0, sizeof listen);
	lsin = (struct sockaddr_in *)&listen.ss;
	lsin->sin_family = AF_INET;
	lsin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	listen.sslen = sizeof *lsin;
	listen.text = "127.0.0.1:0";
	cfg.listen = &listen;
	cfg.nlisten = 1;
	cfg.preview_domain = "preview.localhost";
	memset(routes, 0, sizeof routes);
	routes[0].name = "app";
	routes[0].host = "app.test";
	memcpy(&routes[0].ss, &sin, sizeof sin);
	routes[0].sslen = sizeof sin;
	routes[1].name = "sock";
	routes[1].host = "sock.test";
	routes[1].is_unix = 1;
	routes[1].unix_path = unix_path;
	cfg.routes = routes;
	cfg.nroutes = 2;

	edge = edge_new(base, &cfg, &ctl, &cause);
	if (edge == NULL) {
		fprintf(stderr, "edge_new: %s\n", cause);
		return 1;
	}
	CHECK(edge_listener_addr(edge, 0, &ss, &len) == 0);
	CHECK(edge_listener_addr(edge, 1, &ss, &len) == -1);
	edge_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	CHECK(edge_port != 0);

	if (pipe(ctl_pipe) != 0)
		return 1;
	ctl_ev = event_new(base, ctl_pipe[0], EV_READ | EV_PERSIST, ctl_cb,
	    NULL);
	event_add(ctl_ev, NULL);
	pthread_create(&thread, NULL, client_main, NULL);
	event_base_dispatch(base);
	pthread_join(thread, NULL);

	CHECK(ALOAD(&preview_opened) > 0);
	CHECK(ALOAD(&preview_opened) == ALOAD(&preview_closed));
	CHECK(act_plus[ACTIVITY_REQUEST] > 0 && act_plus[ACTIVITY_TUNNEL] > 0);
	CHECK(act_plus[ACTIVITY_REQUEST] == act_minus[ACTIVITY_REQUEST]);
	CHECK(act_plus[ACTIVITY_TUNNEL] == act_minus[ACTIVITY_TUNNEL]);
	CHECK(act_negative == 0);
	CHECK(waits_live == 0 && TAILQ_EMPTY(&waits));
	CHECK(bad_cancels == 0);
	CHECK(retire_cb != NULL);
	edge_free(edge);
	CHECK(retire_cb == NULL);
	/* Let the origin see its connections close, then tear down. */
	event_base_loopexit(base, &(struct timeval){ 0, 100 * 1000 });
	event_base_dispatch(base);
	evconnlistener_free(ol);
	evconnlistener_free(ul);
	unlink(unix_path);
	event_free(ctl_ev);
	close(ctl_pipe[0]);
	close(ctl_pipe[1]);
	event_base_free(base);
	return unit_finish();
}
