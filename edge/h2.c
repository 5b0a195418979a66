/*
 * HTTP/2 on a client connection (RFC 9113) with nghttp2: one server
 * session per connection, each stream a request (struct edge_req) that
 * answers through this file's struct edge_req_ops, so routing, held
 * lookups, the API, the pages and the proxy see a stream exactly as they
 * see an HTTP/1.1 request. The session only ever touches conn->bev
 * through bufferevent calls, so it runs the same over TLS.
 *
 * Re-entry: nghttp2 forbids nghttp2_session_send and _mem_recv from inside
 * its callbacks, and a request must not be freed under the proxy code that
 * is answering it. So the request's operations only submit frames and
 * schedule run_ev; the session is driven from the loop (edge_h2_run), and
 * a closed stream is freed there, after nghttp2 returned.
 *
 * Flow control: DATA received is consumed at once for the connection
 * window and only when the request takes it for the stream's (automatic
 * window updates off), so a stream whose upstream is slow or that is held
 * stops its own client and no other; its input is bounded by the stream
 * window. A stream's output is its own evbuffer, bounded by the proxy's
 * backpressure at EDGE_BUFFER_HIGH; DATA frames move its chains into the
 * connection's output without a copy (NGHTTP2_DATA_FLAG_NO_COPY).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

#define EDGE_H2_PREFACE		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define EDGE_H2_PREFACE_LEN	24
/* Below this a stream's output asks the proxy for more (edge_req_drained). */
#define EDGE_H2_LOW		(EDGE_BUFFER_HIGH / 4)
#define EDGE_WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* A stream's life on our side. */
enum edge_h2_stream_state {
	EDGE_H2S_HEADERS,	/* the request's header block is arriving */
	EDGE_H2S_REQUEST,	/* a request: see stream->req */
	EDGE_H2S_CLOSED		/* nghttp2 closed it: freed by edge_h2_run */
};

/* Where a field of the head lies in edge_h2_head.buf. */
struct edge_h2_span {
	size_t	off;
	size_t	len;
	int	set;
};

struct edge_h2_field {
	struct edge_h2_span	name;
	struct edge_h2_span	value;
};

/*
 * A request head as its fields arrive; freed at head_done. Its arrays
 * start unset (edge_h2_head_new): f fills up to nf, h.headers up to
 * h.nheaders.
 */
struct edge_h2_head {
	char			*buf;
	size_t			 len;
	size_t			 size;
	size_t			 total;		/* header list size, RFC 9113 */
	struct edge_h2_span	 method, path, authority, protocol;
	size_t			 nf;
	int			 too_big;	/* over the list size or count */
	struct edge_h2_field	 f[HTTP_MAX_HEADERS];
	struct http_request_head h;
};

struct edge_h2_stream {
	struct edge_h2		*h2;
	TAILQ_ENTRY(edge_h2_stream) entry;
	enum edge_h2_stream_state state;
	int32_t			 id;
	struct edge_req		*req;
	struct edge_h2_head	*head;

	/* request body: DATA not yet taken by the request */
	struct evbuffer		*in;
	int			 in_eof;	/* END_STREAM received */
	int			 in_term;	/* chunked terminator written */
	struct evbuffer		*trailers;	/* "name: value\r\n"... */
	size_t			 trailers_len;
	int			 paused;
	int			 held;
	int			 want_data;	/* deliver in edge_h2_run */

	/* response */
	struct evbuffer		*out;
	int			 out_final;	/* final head submitted */
	int			 out_eof;	/* end: END_STREAM after out */
	int			 out_done;	/* END_STREAM sent */
	struct evbuffer		*out_trailers;	/* upstream's, as lines */
	int			 deferred;	/* data source said DEFERRED */
	int			 want_drained;	/* tell the request in run */
	int			 want_abort;	/* cut the request in run */
	struct event		*stall_ev;	/* full, and the client takes none */

	/* extended CONNECT (RFC 8441) */
	int			 websocket;
	char			 ws_key[32];
};
TAILQ_HEAD(edge_h2_streams, edge_h2_stream);

struct edge_h2 {
	struct edge_conn	*conn;
	nghttp2_session		*session;
	struct event		*run_ev;
	struct edge_h2_streams	 streams;
	struct edge_h2_streams	 closed;
	unsigned int		 nreq;		/* streams carrying a request */
	int			 busy;		/* inside an nghttp2 call */
	int			 dead;		/* the connection closed */
	int			 idle;		/* the idle timer is armed */
	int			 goaway;	/* our GOAWAY is submitted */
	/* rapid reset (CVE-2023-44487) */
	int64_t			 reset_since;
	unsigned int		 resets;
	/* CONTINUATION flood: the header block being received */
	unsigned int		 block_frames;
	size_t			 block_bytes;
	/* ACTIVITY_CONN per (connection, sandbox) */
	char			 bound[EDGE_H2_MAX_BOUND][ID_LEN + 1];
	unsigned int		 nbound;
};

static void	edge_h2_run_cb(evutil_socket_t, short, void *);
static void	edge_h2_stall_cb(evutil_socket_t, short, void *);
static void	edge_h2_stall(struct edge_h2_stream *, int);
static void	edge_h2_schedule(struct edge_h2 *);
static void	edge_h2_run(struct edge_h2 *);
static void	edge_h2_fail(struct edge_h2 *, const char *);
static void	edge_h2_calm(struct edge_h2 *, const char *);
static void	edge_h2_deliver(struct edge_h2 *);
static void	edge_h2_stream_free(struct edge_h2_stream *);
static struct edge_h2_stream *edge_h2_stream_of(struct edge_req *);
static void	edge_h2_request(struct edge_h2_stream *, int);
static int	edge_h2_build(struct edge_h2_stream *, const char **);
static int	edge_h2_head_add(struct edge_h2_head *, struct edge_h2_span *,
		    const uint8_t *, size_t);
static int	edge_h2_span_is(const struct edge_h2_head *,
		    const struct edge_h2_span *, const char *);
static void	edge_h2_ws_key(struct edge_h2_stream *);
static int	edge_h2_ws_accept_ok(struct edge_h2_stream *,
		    const struct http_header *);
static int	edge_h2_skip_response_header(const struct http_header *, int);
static void	edge_h2_consume(struct edge_h2_stream *, size_t);

static ssize_t	edge_h2_send_cb(nghttp2_session *, const uint8_t *, size_t,
		    int, void *);
static int	edge_h2_send_data_cb(nghttp2_session *, nghttp2_frame *,
		    const uint8_t *, size_t, nghttp2_data_source *, void *);
static ssize_t	edge_h2_data_cb(nghttp2_session *, int32_t, uint8_t *,
		    size_t, uint32_t *, nghttp2_data_source *, void *);
static int	edge_h2_begin_frame_cb(nghttp2_session *,
		    const nghttp2_frame_hd *, void *);
static int	edge_h2_begin_headers_cb(nghttp2_session *,
		    const nghttp2_frame *, void *);
static int	edge_h2_header_cb(nghttp2_session *, const nghttp2_frame *,
		    const uint8_t *, size_t, const uint8_t *, size_t, uint8_t,
		    void *);
static int	edge_h2_frame_recv_cb(nghttp2_session *, const nghttp2_frame *,
		    void *);
static int	edge_h2_data_chunk_cb(nghttp2_session *, uint8_t, int32_t,
		    const uint8_t *, size_t, void *);
static int	edge_h2_frame_send_cb(nghttp2_session *, const nghttp2_frame *,
		    void *);
static int	edge_h2_stream_close_cb(nghttp2_session *, int32_t, uint32_t,
		    void *);

static size_t	edge_h2_head_op(struct edge_req *, struct edge_resp_head *);
static struct evbuffer *edge_h2_body_op(struct edge_req *);
static int	edge_h2_flush_op(struct edge_req *);
static void	edge_h2_end_op(struct edge_req *);
static void	edge_h2_abort_op(struct edge_req *);
static int	edge_h2_recv_op(struct edge_req *, struct evbuffer *,
		    http_data_cb);
static void	edge_h2_pause_op(struct edge_req *, int);
static void	edge_h2_hold_op(struct edge_req *, int);
static void	edge_h2_head_done_op(struct edge_req *);
static void	edge_h2_go_ahead_op(struct edge_req *);
static void	edge_h2_trailer_op(struct edge_req *, const char *, size_t);
static void	edge_h2_submit_trailers(struct edge_h2_stream *);

static const struct edge_req_ops edge_h2_ops = {
	edge_h2_head_op,
	edge_h2_body_op,
	edge_h2_flush_op,
	edge_h2_end_op,
	edge_h2_abort_op,
	edge_h2_recv_op,
	edge_h2_pause_op,
	edge_h2_hold_op,
	edge_h2_head_done_op,
	edge_h2_go_ahead_op,
	edge_h2_trailer_op
};

/* 1 if the input starts like the preface; *complete when all of it. */
int
edge_h2_preface(const char *p, size_t len, int *complete)
{
	size_t	n = len < EDGE_H2_PREFACE_LEN ? len : EDGE_H2_PREFACE_LEN;

	*complete = n == EDGE_H2_PREFACE_LEN;
	return memcmp(p, EDGE_H2_PREFACE, n) == 0;
}

/*
 * Take over a connection for HTTP/2: its bufferevent (plain or TLS) is
 * conn->bev and its input starts with the client's preface (h2c prior
 * knowledge, or TLS with ALPN "h2"). Our SETTINGS go out at once.
 */
void
edge_h2_start(struct edge_conn *conn)
{
	struct edge		*edge = conn->edge;
	struct edge_h2		*h2;
	nghttp2_session_callbacks *cbs;
	nghttp2_option		*opt;
	nghttp2_settings_entry	 iv[5];
	size_t			 niv = 0;
	int			 rv;

	h2 = xcalloc(1, sizeof *h2);
	h2->conn = conn;
	TAILQ_INIT(&h2->streams);
	TAILQ_INIT(&h2->closed);
	h2->run_ev = event_new(edge->base, -1, 0, edge_h2_run_cb, h2);
	conn->h2 = h2;
	conn->state = EDGE_CONN_H2;
	edge_stats_conn_proto(conn, EDGE_PROTO_H2);
	conn->started = 0;
	conn->scanned = 0;

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		fatalx("nghttp2_session_callbacks_new");
	nghttp2_session_callbacks_set_send_callback(cbs, edge_h2_send_cb);
	nghttp2_session_callbacks_set_send_data_callback(cbs,
	    edge_h2_send_data_cb);
	nghttp2_session_callbacks_set_on_begin_frame_callback(cbs,
	    edge_h2_begin_frame_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
	    edge_h2_begin_headers_cb);
	nghttp2_session_callbacks_set_on_header_callback(cbs,
	    edge_h2_header_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
	    edge_h2_frame_recv_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
	    edge_h2_data_chunk_cb);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs,
	    edge_h2_frame_send_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
	    edge_h2_stream_close_cb);
	if (nghttp2_option_new(&opt) != 0)
		fatalx("nghttp2_option_new");
	/* Stream windows open only as requests take their bytes. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* No priority tree: closed streams need not be kept for it. */
	nghttp2_option_set_no_closed_streams(opt, 1);
	/* Our own bound (edge_h2_begin_frame_cb) comes first; this backs it. */
	nghttp2_option_set_max_continuations(opt, 2 * EDGE_H2_MAX_CONTINUATIONS);
	rv = nghttp2_session_server_new2(&h2->session, cbs, h2, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0) {
		log_warnx("nghttp2_session_server_new2: %s\tpeer=%s",
		    nghttp2_strerror(rv), conn->peer);
		edge_conn_close(conn);
		return;
	}

	iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
	iv[niv++].value = EDGE_H2_MAX_STREAMS;
	iv[niv].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
	iv[niv++].value = EDGE_H2_WINDOW;
	iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
	iv[niv++].value = EDGE_H2_MAX_HEADER_LIST;
	iv[niv].settings_id = NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL;
	iv[niv++].value = 1;
	iv[niv].settings_id = NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES;
	iv[niv++].value = 1;
	nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv, niv);
	nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE,
	    0, EDGE_H2_CONN_WINDOW);
	log_debug("h2 start\tpeer=%s", conn->peer);
	edge_h2_read(conn);
}

/* Frames from the client: feed every byte of the input to the session. */
void
edge_h2_read(struct edge_conn *conn)
{
	struct edge_h2	*h2 = conn->h2;
	struct evbuffer	*in = bufferevent_get_input(conn->bev);
	const uint8_t	*p;
	size_t		 len;
	ssize_t		 n;

	while (!h2->dead && conn->state == EDGE_CONN_H2 &&
	    (len = evbuffer_get_contiguous_space(in)) > 0) {
		/* The first chain's bytes: no copy. */
		p = evbuffer_pullup(in, len);
		h2->busy = 1;
		n = nghttp2_session_mem_recv(h2->session, p, len);
		h2->busy = 0;
		if (n < 0) {
			edge_h2_fail(h2, nghttp2_strerror((int)n));
			return;
		}
		evbuffer_drain(in, len);
	}
	if (conn->state == EDGE_CONN_H2)
		edge_h2_run(h2);
}

/* The client took all our output: more frames may go. */
void
edge_h2_drained(struct edge_conn *conn)
{
	edge_h2_run(conn->h2);
}

/* No stream for keepalive_timeout: say goodbye. */
void
edge_h2_timeout(struct edge_conn *conn)
{
	struct edge_h2	*h2 = conn->h2;

	/* A second time: streams that never completed their head linger. */
	if (h2->goaway) {
		edge_conn_close(conn);
		return;
	}
	log_debug("h2 idle\tpeer=%s", conn->peer);
	edge_h2_shutdown(conn);
	edge_h2_run(h2);
	if (conn->state == EDGE_CONN_H2)
		edge_conn_timer(conn, EDGE_LINGER_MS);
}

/*
 * GOAWAY (NO_ERROR): no new streams; those open finish, then the
 * connection closes (nghttp2 stops wanting to read), or the shutdown
 * grace cuts it.
 */
void
edge_h2_shutdown(struct edge_conn *conn)
{
	struct edge_h2	*h2 = conn->h2;

	if (h2 == NULL || h2->dead || h2->goaway)
		return;
	h2->goaway = 1;
	nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE,
	    nghttp2_session_get_last_proc_stream_id(h2->session),
	    NGHTTP2_NO_ERROR, NULL, 0);
	edge_h2_schedule(h2);
}

/*
 * Count the connection for a sandbox (ACTIVITY_CONN) once per sandbox it
 * carries streams to, as an HTTP/1.1 connection counts once for the one
 * it is bound to: a browser coalesces many preview hosts onto one h2
 * connection. Past EDGE_H2_MAX_BOUND sandboxes the oldest binding ends.
 */
void
edge_h2_bind(struct edge_conn *conn, const char *sandbox_id)
{
	struct edge_h2	*h2 = conn->h2;
	char		 old[ID_LEN + 1];
	unsigned int	 i;

	for (i = 0; i < h2->nbound; i++) {
		if (strcmp(h2->bound[i], sandbox_id) == 0)
			return;
	}
	if (h2->nbound == EDGE_H2_MAX_BOUND) {
		memcpy(old, h2->bound[0], sizeof old);
		memmove(h2->bound[0], h2->bound[1],
		    (EDGE_H2_MAX_BOUND - 1) * sizeof h2->bound[0]);
		h2->nbound--;
		control_activity(conn->edge->ctl, old, ACTIVITY_CONN, -1);
	}
	snprintf(h2->bound[h2->nbound], sizeof h2->bound[0], "%s", sandbox_id);
	h2->nbound++;
	control_activity(conn->edge->ctl, sandbox_id, ACTIVITY_CONN, 1);
}

/* The first request of this connection using an upstream to the sandbox. */
struct edge_req *
edge_h2_retire_find(struct edge_conn *conn, const char *sandbox_id)
{
	struct edge_h2_stream	*s;
	struct edge_req		*req;

	if (conn->h2 == NULL || conn->h2->dead)
		return NULL;
	TAILQ_FOREACH(s, &conn->h2->streams, entry) {
		if ((req = s->req) == NULL)
			continue;
		if ((req->state == EDGE_REQ_PROXY ||
		    req->state == EDGE_REQ_TUNNEL) &&
		    strcmp(req->key.sandbox_id, sandbox_id) == 0)
			return req;
	}
	return NULL;
}

/*
 * The connection closed (edge_conn_close): every stream's request is
 * gone, and the connection counts for no sandbox any more (last: control
 * may call back). The memory waits for edge_h2_free.
 */
void
edge_h2_close(struct edge_conn *conn)
{
	struct edge_h2		*h2 = conn->h2;
	struct edge_h2_stream	*s;
	char			 id[ID_LEN + 1];

	if (h2 == NULL || h2->dead)
		return;
	h2->dead = 1;
	event_del(h2->run_ev);
	TAILQ_FOREACH(s, &h2->streams, entry) {
		if (s->req != NULL)
			edge_req_gone(s->req);
	}
	while (h2->nbound > 0) {
		h2->nbound--;
		memcpy(id, h2->bound[h2->nbound], sizeof id);
		control_activity(conn->edge->ctl, id, ACTIVITY_CONN, -1);
	}
}

/* Free the session and its streams (the reaper, with the connection). */
void
edge_h2_free(struct edge_conn *conn)
{
	struct edge_h2		*h2 = conn->h2;
	struct edge_h2_stream	*s;

	if (h2 == NULL)
		return;
	h2->dead = 1;
	while ((s = TAILQ_FIRST(&h2->streams)) != NULL)
		edge_h2_stream_free(s);
	while ((s = TAILQ_FIRST(&h2->closed)) != NULL)
		edge_h2_stream_free(s);
	/* nghttp2_session_del calls none of our callbacks. */
	nghttp2_session_del(h2->session);
	event_free(h2->run_ev);
	free(h2);
	conn->h2 = NULL;
}

/* ------------------------------------------------------------------ */
/* Driving the session */

static void
edge_h2_run_cb(evutil_socket_t fd, short events, void *arg)
{
	edge_h2_run(arg);
}

/* Have edge_h2_run go from the loop, outside any caller's stack. */
static void
edge_h2_schedule(struct edge_h2 *h2)
{
	if (!h2->dead && !event_pending(h2->run_ev, EV_TIMEOUT, NULL))
		event_active(h2->run_ev, EV_TIMEOUT, 0);
}

/*
 * Send what the session has (until the connection's output is over
 * EDGE_BUFFER_HIGH), free closed streams, hand the requests what they
 * wait for, then close once the session is over.
 */
static void
edge_h2_run(struct edge_h2 *h2)
{
	struct edge_conn	*conn = h2->conn;
	struct edge_h2_stream	*s, *next;
	int			 rv, rounds;

	if (h2->dead || h2->busy || conn->state != EDGE_CONN_H2)
		return;
	for (rounds = 0; rounds < 8; rounds++) {
		h2->busy = 1;
		rv = nghttp2_session_send(h2->session);
		h2->busy = 0;
		if (rv != 0) {
			edge_h2_fail(h2, nghttp2_strerror(rv));
			return;
		}
		edge_conn_flush(conn);
		while ((s = TAILQ_FIRST(&h2->closed)) != NULL)
			edge_h2_stream_free(s);
		/* What the requests wait for; they may submit more. */
		TAILQ_FOREACH_SAFE(s, &h2->streams, entry, next) {
			if (s->req == NULL || s->req->state == EDGE_REQ_DONE)
				continue;
			if (s->want_abort) {
				s->want_abort = 0;
				edge_req_abort(s->req);
			} else if (s->want_drained) {
				s->want_drained = 0;
				edge_req_drained(s->req);
			}
			if (h2->dead || conn->state != EDGE_CONN_H2)
				return;
		}
		edge_h2_deliver(h2);
		if (h2->dead || conn->state != EDGE_CONN_H2)
			return;
		if (!nghttp2_session_want_write(h2->session) ||
		    evbuffer_get_length(bufferevent_get_output(conn->bev)) >
		    EDGE_BUFFER_HIGH)
			break;
	}
	if (nghttp2_session_want_write(h2->session) &&
	    evbuffer_get_length(bufferevent_get_output(conn->bev)) <=
	    EDGE_BUFFER_HIGH)
		edge_h2_schedule(h2);
	if (conn->edge->shutting_down || conn->draining)
		edge_h2_shutdown(conn);
	if (!nghttp2_session_want_read(h2->session) &&
	    !nghttp2_session_want_write(h2->session)) {
		log_debug("h2 done\tpeer=%s", conn->peer);
		/* Frames the client sends meanwhile must not reset our GOAWAY. */
		conn->linger = 1;
		edge_conn_next(conn, 0);
		return;
	}
	/* The idle timer runs only while no stream carries a request. */
	if (h2->nreq == 0 && !h2->idle) {
		h2->idle = 1;
		edge_conn_timer(conn, conn->edge->lim.keepalive_ms);
	} else if (h2->nreq > 0 && h2->idle) {
		h2->idle = 0;
		edge_conn_timer(conn, -1);
	}
}

/* Give requests the body bytes (and ends) that arrived for them. */
static void
edge_h2_deliver(struct edge_h2 *h2)
{
	struct edge_h2_stream	*s, *next;

	TAILQ_FOREACH_SAFE(s, &h2->streams, entry, next) {
		if (!s->want_data || s->paused || s->held || s->req == NULL ||
		    s->req->state == EDGE_REQ_DONE)
			continue;
		s->want_data = 0;
		edge_req_client_data(s->req);
		if (h2->dead || h2->conn->state != EDGE_CONN_H2)
			return;
	}
}

/*
 * The session cannot go on (a protocol error, a flood, our own limits):
 * every request is gone; send what nghttp2 queued (its GOAWAY), then
 * close once that is written, draining what the client still sends.
 */
static void
edge_h2_fail(struct edge_h2 *h2, const char *why)
{
	struct edge_conn	*conn = h2->conn;
	struct edge_h2_stream	*s;

	log_debug("h2 session ends\tpeer=%s why=\"%s\"", conn->peer, why);
	if (h2->dead || conn->state != EDGE_CONN_H2)
		return;
	TAILQ_FOREACH(s, &h2->streams, entry) {
		if (s->req != NULL)
			edge_req_gone(s->req);
	}
	if (conn->state != EDGE_CONN_H2)
		return;
	h2->busy = 1;
	nghttp2_session_send(h2->session);
	h2->busy = 0;
	conn->linger = 1;
	edge_conn_next(conn, 0);
}

/* A client abusing the protocol gets GOAWAY(ENHANCE_YOUR_CALM). */
static void
edge_h2_calm(struct edge_h2 *h2, const char *why)
{
	log_info("h2 flood\tpeer=%s what=\"%s\"", h2->conn->peer, why);
	h2->goaway = 1;
	nghttp2_session_terminate_session(h2->session,
	    NGHTTP2_ENHANCE_YOUR_CALM);
}

/* Free a stream and its request. */
static void
edge_h2_stream_free(struct edge_h2_stream *s)
{
	struct edge_h2	*h2 = s->h2;

	if (s->state == EDGE_H2S_CLOSED)
		TAILQ_REMOVE(&h2->closed, s, entry);
	else
		TAILQ_REMOVE(&h2->streams, s, entry);
	if (s->req != NULL) {
		h2->nreq--;
		/* Ended if it was not; then a spare for the next stream. */
		edge_req_gone(s->req);
		edge_req_park(s->req);
	}
	if (s->head != NULL) {
		free(s->head->buf);
		free(s->head);
	}
	if (s->stall_ev != NULL)
		event_free(s->stall_ev);
	if (s->in != NULL)
		evbuffer_free(s->in);
	if (s->out != NULL)
		evbuffer_free(s->out);
	if (s->trailers != NULL)
		evbuffer_free(s->trailers);
	if (s->out_trailers != NULL)
		evbuffer_free(s->out_trailers);
	free(s);
}

/* The stream a request of this file rides on. */
static struct edge_h2_stream *
edge_h2_stream_of(struct edge_req *req)
{
	struct edge_h2_stream	*s = req->h2s;

	if (s == NULL || s->state == EDGE_H2S_CLOSED || s->h2->dead)
		return NULL;
	return s;
}

/*
 * A stream whose output is full waits for its client's window. A client
 * that takes none of it for send_timeout loses the stream, as an
 * HTTP/1.1 client taking none of our output loses its connection: it
 * must not pin an upstream connection forever.
 */
static void
edge_h2_stall(struct edge_h2_stream *s, int on)
{
	int64_t		ms = s->h2->conn->edge->lim.send_ms;
	struct timeval	tv = { ms / 1000, (ms % 1000) * 1000 };

	if (!on) {
		if (s->stall_ev != NULL)
			evtimer_del(s->stall_ev);
		return;
	}
	if (s->stall_ev == NULL)
		s->stall_ev = evtimer_new(s->h2->conn->edge->base,
		    edge_h2_stall_cb, s);
	evtimer_add(s->stall_ev, &tv);
}

static void
edge_h2_stall_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_h2_stream	*s = arg;

	if (s->state == EDGE_H2S_CLOSED || s->h2->dead || s->req == NULL ||
	    s->req->state == EDGE_REQ_DONE)
		return;
	log_debug("h2 stream stalled\tpeer=%s stream=%d", s->h2->conn->peer,
	    s->id);
	edge_req_abort(s->req);
	edge_h2_run(s->h2);
}

/* The request took n bytes of the stream's input: reopen its window. */
static void
edge_h2_consume(struct edge_h2_stream *s, size_t n)
{
	if (n == 0 || s->state == EDGE_H2S_CLOSED)
		return;
	nghttp2_session_consume_stream(s->h2->session, s->id, n);
	edge_h2_schedule(s->h2);
}

/* ------------------------------------------------------------------ */
/* nghttp2 callbacks */

/* Frames to the client, as long as its output is within the high mark. */
static ssize_t
edge_h2_send_cb(nghttp2_session *session, const uint8_t *data, size_t len,
    int flags, void *arg)
{
	struct edge_h2	*h2 = arg;
	struct evbuffer	*out = bufferevent_get_output(h2->conn->bev);

	if (evbuffer_get_length(out) > EDGE_BUFFER_HIGH)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (evbuffer_add(out, data, len) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

/* A DATA frame: its header, then the body's chains moved, not copied. */
static int
edge_h2_send_data_cb(nghttp2_session *session, nghttp2_frame *frame,
    const uint8_t *framehd, size_t length, nghttp2_data_source *source,
    void *arg)
{
	struct edge_h2		*h2 = arg;
	struct edge_h2_stream	*s = source->ptr;
	struct evbuffer		*out = bufferevent_get_output(h2->conn->bev);
	static const uint8_t	 zeros[256];
	uint8_t			 padlen;

	if (evbuffer_get_length(out) > EDGE_BUFFER_HIGH)
		return NGHTTP2_ERR_WOULDBLOCK;
	evbuffer_add(out, framehd, 9);
	if (frame->data.padlen > 0) {
		padlen = (uint8_t)(frame->data.padlen - 1);
		evbuffer_add(out, &padlen, 1);
	}
	if (evbuffer_remove_buffer(s->out, out, length) != (int)length)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->data.padlen > 1)
		evbuffer_add(out, zeros, frame->data.padlen - 1);
	if (evbuffer_get_length(s->out) < EDGE_H2_LOW) {
		s->want_drained = 1;
		edge_h2_stall(s, 0);
	} else if (s->stall_ev != NULL &&
	    evtimer_pending(s->stall_ev, NULL))
		edge_h2_stall(s, 1);	/* it moves: a new deadline */
	return 0;
}

/* How much of the stream's output the next DATA frame carries. */
static ssize_t
edge_h2_data_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
    size_t length, uint32_t *flags, nghttp2_data_source *source, void *arg)
{
	struct edge_h2_stream	*s = source->ptr;
	size_t			 len = evbuffer_get_length(s->out);

	if (len == 0 && !s->out_eof) {
		s->deferred = 1;
		s->want_drained = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (len > length)
		len = length;
	else if (s->out_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		/* With trailers, END_STREAM goes on their HEADERS. */
		if (s->out_trailers != NULL) {
			edge_h2_submit_trailers(s);
			if (s->out_trailers == NULL)
				*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		}
	}
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	return (ssize_t)len;
}

/* Trailer bytes of the upstream's chunked response, kept for the end. */
static void
edge_h2_trailer_op(struct edge_req *req, const char *data, size_t len)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);

	if (s == NULL)
		return;
	if (s->out_trailers == NULL)
		s->out_trailers = evbuffer_new();
	if (s->out_trailers != NULL)
		evbuffer_add(s->out_trailers, data, len);
}

/*
 * Submit the upstream's trailers as a HEADERS frame with END_STREAM,
 * names lowercased, values without their surrounding blanks (the scanner
 * checked every line). On success out_trailers is freed (NULL); on
 * failure it stays, and the stream ends on its last DATA frame instead.
 */
static void
edge_h2_submit_trailers(struct edge_h2_stream *s)
{
	nghttp2_nv	*nv;
	char		*p, *end, *line, *colon, *v, *ve;
	size_t		 len, n = 0, max = 0, i;
	int		 rv;

	len = evbuffer_get_length(s->out_trailers);
	if ((p = (char *)evbuffer_pullup(s->out_trailers, -1)) == NULL)
		return;
	end = p + len;
	for (line = p; line < end; line++)
		max += *line == '\n';
	if (max == 0)
		return;
	nv = xcalloc(max, sizeof *nv);
	while (p < end && n < max) {
		line = p;
		if ((p = memchr(line, '\n', end - line)) == NULL)
			break;
		ve = p++;
		if (ve > line && ve[-1] == '\r')
			ve--;
		if ((colon = memchr(line, ':', ve - line)) == NULL)
			continue;
		for (i = 0; line + i < colon; i++)
			line[i] = (char)tolower((unsigned char)line[i]);
		for (v = colon + 1; v < ve && (*v == ' ' || *v == '\t'); v++)
			;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		nv[n].name = (uint8_t *)line;
		nv[n].namelen = colon - line;
		nv[n].value = (uint8_t *)v;
		nv[n].valuelen = ve - v;
		nv[n++].flags = NGHTTP2_NV_FLAG_NONE;
	}
	/* nghttp2 copies the fields. */
	rv = n > 0 ? nghttp2_submit_trailer(s->h2->session, s->id, nv, n) : -1;
	free(nv);
	if (rv != 0)
		return;
	evbuffer_free(s->out_trailers);
	s->out_trailers = NULL;
}

/*
 * CONTINUATION flood (2024): a header block is bounded in frames and in
 * bytes, however many headers it holds, before nghttp2 decodes it all.
 */
static int
edge_h2_begin_frame_cb(nghttp2_session *session, const nghttp2_frame_hd *hd,
    void *arg)
{
	struct edge_h2	*h2 = arg;

	if (hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_PUSH_PROMISE) {
		h2->block_frames = 1;
		h2->block_bytes = hd->length;
	} else if (hd->type == NGHTTP2_CONTINUATION) {
		h2->block_frames++;
		h2->block_bytes += hd->length;
	} else
		return 0;
	if (h2->block_frames > EDGE_H2_MAX_CONTINUATIONS + 1 ||
	    h2->block_bytes > EDGE_H2_MAX_BLOCK) {
		edge_h2_calm(h2, "CONTINUATION flood");
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

/*
 * A head with nothing in it yet. 8 KiB, nearly all arrays: zeroing them
 * (calloc) was the largest single cost of an HTTP/2 request in callgrind.
 */
static struct edge_h2_head *
edge_h2_head_new(void)
{
	struct edge_h2_head	*hd = xmalloc(sizeof *hd);

	memset(hd, 0, offsetof(struct edge_h2_head, f));
	hd->h.method = hd->h.target = NULL;
	hd->h.method_len = hd->h.target_len = 0;
	hd->h.minor_version = 1;
	hd->h.nheaders = 0;
	return hd;
}

/* A new request stream: its head is collected field by field. */
static int
edge_h2_begin_headers_cb(nghttp2_session *session, const nghttp2_frame *frame,
    void *arg)
{
	struct edge_h2		*h2 = arg;
	struct edge_h2_stream	*s;

	if (frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = xcalloc(1, sizeof *s);
	s->h2 = h2;
	s->id = frame->hd.stream_id;
	s->state = EDGE_H2S_HEADERS;
	s->head = edge_h2_head_new();
	TAILQ_INSERT_TAIL(&h2->streams, s, entry);
	nghttp2_session_set_stream_user_data(session, s->id, s);
	return 0;
}

/* Append bytes to the head's buffer; -1 past the header list size. */
static int
edge_h2_head_add(struct edge_h2_head *hd, struct edge_h2_span *sp,
    const uint8_t *p, size_t len)
{
	if (hd->len + len > 2 * EDGE_H2_MAX_HEADER_LIST)
		return -1;
	if (hd->len + len > hd->size) {
		hd->size = hd->size == 0 ? 1024 : hd->size;
		while (hd->size < hd->len + len)
			hd->size *= 2;
		hd->buf = xrealloc(hd->buf, hd->size);
	}
	memcpy(hd->buf + hd->len, p, len);
	sp->off = hd->len;
	sp->len = len;
	sp->set = 1;
	hd->len += len;
	return 0;
}

/* 1 if the span holds exactly s. */
static int
edge_h2_span_is(const struct edge_h2_head *hd, const struct edge_h2_span *sp,
    const char *s)
{
	return sp->set && sp->len == strlen(s) &&
	    memcmp(hd->buf + sp->off, s, sp->len) == 0;
}

/*
 * One field of a request head or of its trailers (nghttp2 has checked
 * names and values: lowercase tokens, no CR, LF or NUL). Past the header
 * list size or HTTP_MAX_HEADERS fields only the size is counted: the
 * request is answered 431 once its head is complete.
 */
static int
edge_h2_header_cb(nghttp2_session *session, const nghttp2_frame *frame,
    const uint8_t *name, size_t namelen, const uint8_t *value,
    size_t valuelen, uint8_t flags, void *arg)
{
	struct edge_h2_stream	*s;
	struct edge_h2_head	*hd;
	struct edge_h2_span	*sp = NULL, junk;
	struct edge_h2_field	*f;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (s == NULL)
		return 0;
	if (s->state != EDGE_H2S_HEADERS) {
		/* Trailers: kept for a chunked upstream body, else dropped. */
		if (s->req == NULL || s->req->body != HTTP_BODY_CHUNKED)
			return 0;
		s->trailers_len += namelen + valuelen + 32;
		if (s->trailers_len > EDGE_H2_MAX_HEADER_LIST)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if (s->trailers == NULL)
			s->trailers = evbuffer_new();
		evbuffer_add_printf(s->trailers, "%.*s: %.*s\r\n",
		    (int)namelen, name, (int)valuelen, value);
		return 0;
	}
	hd = s->head;
	hd->total += namelen + valuelen + 32;
	if (hd->too_big || hd->total > EDGE_H2_MAX_HEADER_LIST) {
		hd->too_big = 1;
		return 0;
	}
	if (namelen > 0 && name[0] == ':') {
		if (namelen == 7 && memcmp(name, ":method", 7) == 0)
			sp = &hd->method;
		else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
			sp = &hd->path;
		else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
			sp = &hd->authority;
		else if (namelen == 9 && memcmp(name, ":protocol", 9) == 0)
			sp = &hd->protocol;
		else
			sp = &junk;	/* :scheme: we know it */
		if (edge_h2_head_add(hd, sp, value, valuelen) != 0)
			hd->too_big = 1;
		return 0;
	}
	/* Room for host, transfer-encoding and the WebSocket headers. */
	if (hd->nf + 6 >= HTTP_MAX_HEADERS) {
		hd->too_big = 1;
		return 0;
	}
	f = &hd->f[hd->nf];
	if (edge_h2_head_add(hd, &f->name, name, namelen) != 0 ||
	    edge_h2_head_add(hd, &f->value, value, valuelen) != 0) {
		hd->too_big = 1;
		return 0;
	}
	hd->nf++;
	return 0;
}

/* A complete frame: a request head, the end of a body, a reset. */
static int
edge_h2_frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame,
    void *arg)
{
	struct edge_h2		*h2 = arg;
	struct edge_h2_stream	*s;
	int64_t			 now;

	s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (s == NULL)
			break;
		if (s->state == EDGE_H2S_HEADERS)
			edge_h2_request(s, frame->hd.flags &
			    NGHTTP2_FLAG_END_STREAM);
		else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
			s->in_eof = 1;
			s->want_data = 1;
		}
		break;
	case NGHTTP2_DATA:
		if (s != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
			s->in_eof = 1;
			s->want_data = 1;
		}
		break;
	case NGHTTP2_RST_STREAM:
		/*
		 * Rapid reset (CVE-2023-44487): streams the client cancels
		 * before their answer is complete cost us a routing and an
		 * upstream each while never counting against the
		 * concurrency limit.
		 */
		if (s == NULL || s->out_done)
			break;
		now = time_mono_ms();
		if (now - h2->reset_since > EDGE_H2_RESET_WINDOW_MS) {
			h2->reset_since = now;
			h2->resets = 0;
		}
		if (++h2->resets > EDGE_H2_RESET_MAX) {
			edge_h2_calm(h2, "rapid reset");
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		break;
	default:
		break;
	}
	return 0;
}

/*
 * Request body bytes: the connection's window reopens at once, the
 * stream's only as its request takes them (edge_h2_recv_op).
 */
static int
edge_h2_data_chunk_cb(nghttp2_session *session, uint8_t flags,
    int32_t stream_id, const uint8_t *data, size_t len, void *arg)
{
	struct edge_h2_stream	*s;

	nghttp2_session_consume_connection(session, len);
	s = nghttp2_session_get_stream_user_data(session, stream_id);
	if (s == NULL || s->req == NULL || s->req->state == EDGE_REQ_DONE) {
		/* Nobody reads it: dropped, and the window stays open. */
		nghttp2_session_consume_stream(session, stream_id, len);
		return 0;
	}
	if (s->in == NULL)
		s->in = evbuffer_new();
	evbuffer_add(s->in, data, len);
	s->want_data = 1;
	return 0;
}

/*
 * The response's END_STREAM is out. If the client still sends its body,
 * nobody will read it: RST_STREAM(NO_ERROR) stops it (RFC 9113 8.1).
 */
static int
edge_h2_frame_send_cb(nghttp2_session *session, const nghttp2_frame *frame,
    void *arg)
{
	struct edge_h2_stream	*s;

	if ((frame->hd.type != NGHTTP2_HEADERS &&
	    frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (s == NULL)
		return 0;
	s->out_done = 1;
	if (!s->in_eof)
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id,
		    NGHTTP2_NO_ERROR);
	return 0;
}

/*
 * nghttp2 closed the stream (both ends done, or reset): its request is
 * gone if not done yet; the memory is freed by edge_h2_run, after nghttp2
 * returned, as the data source still points to it until then.
 */
static int
edge_h2_stream_close_cb(nghttp2_session *session, int32_t stream_id,
    uint32_t error_code, void *arg)
{
	struct edge_h2		*h2 = arg;
	struct edge_h2_stream	*s;

	s = nghttp2_session_get_stream_user_data(session, stream_id);
	if (s == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	TAILQ_REMOVE(&h2->streams, s, entry);
	s->state = EDGE_H2S_CLOSED;
	TAILQ_INSERT_TAIL(&h2->closed, s, entry);
	if (s->req != NULL && s->req->state != EDGE_REQ_DONE) {
		log_debug("h2 stream reset\tpeer=%s stream=%d error=%u",
		    h2->conn->peer, stream_id, error_code);
		edge_req_gone(s->req);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Request heads */

/*
 * A request's head is complete: make it an HTTP/1.1-shaped head (the
 * proxy forwards it as one) and start it as a request.
 */
static void
edge_h2_request(struct edge_h2_stream *s, int end_stream)
{
	struct edge_h2		*h2 = s->h2;
	struct edge_req		*req;
	const char		*why = NULL;
	int			 status;

	s->state = EDGE_H2S_REQUEST;
	s->in_eof = end_stream;
	req = s->req = edge_req_new(h2->conn, &edge_h2_ops);
	req->h2s = s;
	/* The scheme, as h1.c sets it: the cookie's Secure depends on it. */
	req->https = h2->conn->tls;
	h2->nreq++;
	if (h2->idle) {
		h2->idle = 0;
		edge_conn_timer(h2->conn, -1);
	}
	req->minor = 1;
	req->keepalive = 1;
	status = edge_h2_build(s, &why);
	if (status == 431) {
		req->body_done = 1;
		edge_req_error(req, 431, why);
	} else
		edge_req_start(req, &s->head->h, why);
	edge_h2_head_done_op(req);
}

/*
 * Fill head->h and the request from the fields: :authority as Host (so
 * routing is that of HTTP/1.1), cookies joined (RFC 9113 8.2.3), a body
 * without Content-Length sent chunked upstream, and an extended CONNECT
 * for WebSocket as the HTTP/1.1 Upgrade GET it stands for. 431 (why set)
 * for a head over the limits; else 0, with why set for a 400.
 */
static int
edge_h2_build(struct edge_h2_stream *s, const char **why)
{
	struct edge_h2_head	*hd = s->head;
	struct edge_req		*req = s->req;
	struct http_request_head *h = &hd->h;
	struct edge_h2_span	 cookie = { 0, 0, 0 }, part;
	struct edge_h2_span	*host = NULL, *clen = NULL, *wsver = NULL;
	struct edge_h2_field	*f;
	size_t			 i, n, ncookie = 0;
	const char		*te = "transfer-encoding";
	char			*end;
	unsigned long long	 cl;

	if (hd->too_big) {
		*why = "The request head is too large.";
		return 431;
	}
	if (edge_h2_span_is(hd, &hd->method, "CONNECT")) {
		if (!edge_h2_span_is(hd, &hd->protocol, "websocket")) {
			*why = "Only WebSocket CONNECT (RFC 8441) is accepted.";
			goto bad;
		}
		s->websocket = 1;
		edge_h2_ws_key(s);
	} else if (hd->protocol.set) {
		*why = "The :protocol pseudo-header needs CONNECT.";
		goto bad;
	}
	if (!hd->path.set || hd->path.len == 0 || hd->buf[hd->path.off] != '/') {
		*why = "Only origin-form request targets (\"/path\") are "
		    "accepted.";
		goto bad;
	}
	if (s->websocket)
		memcpy(req->method, "GET", 4);
	else if (hd->method.len >= sizeof req->method) {
		*why = "The method is too long.";
		goto bad;
	} else {
		memcpy(req->method, hd->buf + hd->method.off, hd->method.len);
		req->method[hd->method.len] = '\0';
	}
	/* Cookie crumbs, joined with "; " at the buffer's end. */
	for (i = 0; i < hd->nf; i++) {
		f = &hd->f[i];
		if (!edge_h2_span_is(hd, &f->name, "cookie"))
			continue;
		if (ncookie++ > 0)
			edge_h2_head_add(hd, &part, (const uint8_t *)"; ", 2);
		edge_h2_head_add(hd, &part,
		    (const uint8_t *)hd->buf + f->value.off, f->value.len);
		if (ncookie == 1)
			cookie.off = part.off;
		cookie.len = hd->len - cookie.off;
		cookie.set = 1;
	}

	/* Now that buf no longer moves: the head, pointing into it. */
	h->method = req->method;
	h->method_len = strlen(req->method);
	h->target = hd->buf + hd->path.off;
	h->target_len = hd->path.len;
	h->minor_version = 1;
	n = 0;
	if (hd->authority.set) {
		h->headers[n].name = "host";
		h->headers[n].name_len = 4;
		h->headers[n].value = hd->buf + hd->authority.off;
		h->headers[n++].value_len = hd->authority.len;
	}
	for (i = 0; i < hd->nf; i++) {
		f = &hd->f[i];
		if (edge_h2_span_is(hd, &f->name, "host")) {
			if (hd->authority.set)
				continue;	/* :authority wins */
			if (host != NULL) {
				*why = "The request has more than one Host "
				    "header.";
				goto bad;
			}
			host = &f->value;
		} else if (edge_h2_span_is(hd, &f->name, "cookie")) {
			if (ncookie > 1)
				continue;
		} else if (edge_h2_span_is(hd, &f->name, "content-length"))
			clen = &f->value;
		else if (edge_h2_span_is(hd, &f->name,
		    "sec-websocket-version"))
			wsver = &f->value;
		h->headers[n].name = hd->buf + f->name.off;
		h->headers[n].name_len = f->name.len;
		h->headers[n].value = hd->buf + f->value.off;
		h->headers[n++].value_len = f->value.len;
	}
	if (ncookie > 1) {
		h->headers[n].name = "cookie";
		h->headers[n].name_len = 6;
		h->headers[n].value = hd->buf + cookie.off;
		h->headers[n++].value_len = cookie.len;
	}
	if (!hd->authority.set && host == NULL) {
		*why = "The request has no :authority.";
		goto bad;
	}

	/* The body's framing upstream. */
	req->body = HTTP_BODY_NONE;
	req->body_left = 0;
	if (s->websocket) {
		h->headers[n].name = "upgrade";
		h->headers[n].name_len = 7;
		h->headers[n].value = "websocket";
		h->headers[n++].value_len = 9;
		h->headers[n].name = "connection";
		h->headers[n].name_len = 10;
		h->headers[n].value = "Upgrade";
		h->headers[n++].value_len = 7;
		h->headers[n].name = "sec-websocket-key";
		h->headers[n].name_len = 17;
		h->headers[n].value = s->ws_key;
		h->headers[n++].value_len = strlen(s->ws_key);
		if (wsver == NULL) {
			h->headers[n].name = "sec-websocket-version";
			h->headers[n].name_len = 21;
			h->headers[n].value = "13";
			h->headers[n++].value_len = 2;
		}
	} else if (!s->in_eof && clen != NULL) {
		/* nghttp2 checked it is digits and the DATA adds up to it. */
		cl = strtoull(hd->buf + clen->off, &end, 10);
		req->body = HTTP_BODY_LENGTH;
		req->body_left = cl;
	} else if (!s->in_eof) {
		req->body = HTTP_BODY_CHUNKED;
		h->headers[n].name = te;
		h->headers[n].name_len = strlen(te);
		h->headers[n].value = "chunked";
		h->headers[n++].value_len = 7;
	}
	h->nheaders = n;
	req->body_done = req->body == HTTP_BODY_NONE ||
	    (req->body == HTTP_BODY_LENGTH && req->body_left == 0);
	return 0;

bad:
	h->method = req->method;
	h->method_len = strlen(req->method);
	h->target = "/";
	h->target_len = 1;
	h->minor_version = 1;
	h->nheaders = 0;
	if (hd->authority.set) {
		h->headers[0].name = "host";
		h->headers[0].name_len = 4;
		h->headers[0].value = hd->buf + hd->authority.off;
		h->headers[0].value_len = hd->authority.len;
		h->nheaders = 1;
	}
	req->body = HTTP_BODY_NONE;
	req->body_done = 1;
	return 0;
}

/* A fresh Sec-WebSocket-Key for the upstream's handshake. */
static void
edge_h2_ws_key(struct edge_h2_stream *s)
{
	unsigned char	raw[16];

	if (RAND_bytes(raw, sizeof raw) != 1)
		arc4random_buf(raw, sizeof raw);
	EVP_EncodeBlock((unsigned char *)s->ws_key, raw, sizeof raw);
}

/* 1 if the upstream's Sec-WebSocket-Accept answers our key (RFC 6455). */
static int
edge_h2_ws_accept_ok(struct edge_h2_stream *s, const struct http_header *a)
{
	unsigned char	md[SHA_DIGEST_LENGTH];
	char		want[64], in[64];
	int		n;

	if (a == NULL)
		return 0;
	n = snprintf(in, sizeof in, "%s%s", s->ws_key, EDGE_WS_GUID);
	SHA1((unsigned char *)in, n, md);
	n = EVP_EncodeBlock((unsigned char *)want, md, sizeof md);
	return a->value_len == (size_t)n &&
	    memcmp(a->value, want, n) == 0;
}

/*
 * 1 for a response header HTTP/2 must not carry (RFC 9113 8.2.2), and
 * for the WebSocket handshake's own, which the browser does not see.
 */
static int
edge_h2_skip_response_header(const struct http_header *h, int websocket)
{
	static const char *const skip[] = { "connection", "keep-alive",
	    "proxy-connection", "transfer-encoding", "upgrade", "te" };
	size_t	i;

	for (i = 0; i < nitems(skip); i++) {
		if (h->name_len == strlen(skip[i]) &&
		    strncasecmp(h->name, skip[i], h->name_len) == 0)
			return 1;
	}
	return websocket && h->name_len == 20 &&
	    strncasecmp(h->name, "sec-websocket-accept", 20) == 0;
}

/* ------------------------------------------------------------------ */
/* The request's operations */

/*
 * A response head as HEADERS: names lowercased, HTTP/1.1-only headers
 * dropped, a chunked body decoded into DATA. For a WebSocket stream the
 * upstream's 101 (its key checked) is our 200, and anything else final is
 * no tunnel. Returns a non-zero count when queued.
 */
static size_t
edge_h2_head_op(struct edge_req *req, struct edge_resp_head *rh)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);
	const struct http_header *accept;
	nghttp2_data_provider	 dp;
	nghttp2_nv		 nv_stack[48], *nv;
	char			 buf_stack[1024], *buf, *p, status[8];
	size_t			 i, j, n = 0, size = 0;
	int			 code = rh->status, final, rv;

	if (s == NULL || s->out_final)
		return 0;
	if (code == 101) {
		accept = http_header_find(rh->headers, rh->nheaders,
		    "sec-websocket-accept");
		if (!s->websocket)
			return 0;
		if (!edge_h2_ws_accept_ok(s, accept)) {
			log_debug("h2 websocket: bad Sec-WebSocket-Accept\t"
			    "peer=%s", req->conn->peer);
			code = 502;
			s->want_abort = 1;
		} else {
			/* Once per tunnel: how a browser's WebSocket shows. */
			log_debug("h2 websocket\tpeer=%s stream=%d https=%d",
			    req->conn->peer, s->id, req->https);
			code = 200;
		}
	} else if (s->websocket && code >= 200 && code < 300)
		code = 502;	/* not upgraded: no tunnel to offer */
	final = code >= 200;
	rh->dechunk = rh->body == HTTP_BODY_CHUNKED;

	for (i = 0; i < rh->nheaders; i++)
		size += rh->headers[i].name_len;
	/* On the stack unless the head is a large one. */
	nv = rh->nheaders + 1 <= nitems(nv_stack) ? nv_stack :
	    xcalloc(rh->nheaders + 1, sizeof *nv);
	buf = p = size + 1 <= sizeof buf_stack ? buf_stack : xmalloc(size + 1);
	snprintf(status, sizeof status, "%d", code);
	nv[n].name = (uint8_t *)":status";
	nv[n].namelen = 7;
	nv[n].value = (uint8_t *)status;
	nv[n].valuelen = strlen(status);
	nv[n++].flags = NGHTTP2_NV_FLAG_NONE;
	for (i = 0; i < rh->nheaders; i++) {
		if (edge_h2_skip_response_header(&rh->headers[i],
		    s->websocket))
			continue;
		for (j = 0; j < rh->headers[i].name_len; j++) {
			p[j] = rh->headers[i].name[j];
			if (p[j] >= 'A' && p[j] <= 'Z')
				p[j] += 'a' - 'A';
		}
		nv[n].name = (uint8_t *)p;
		nv[n].namelen = rh->headers[i].name_len;
		nv[n].value = (uint8_t *)rh->headers[i].value;
		nv[n].valuelen = rh->headers[i].value_len;
		nv[n++].flags = NGHTTP2_NV_FLAG_NONE;
		p += rh->headers[i].name_len;
	}
	if (!final)
		rv = nghttp2_submit_headers(s->h2->session, NGHTTP2_FLAG_NONE,
		    s->id, NULL, nv, n, NULL);
	else if (s->want_abort ||
	    (rh->body == HTTP_BODY_NONE && !(s->websocket && code == 200)))
		rv = nghttp2_submit_response(s->h2->session, s->id, nv, n,
		    NULL);
	else {
		dp.source.ptr = s;
		dp.read_callback = edge_h2_data_cb;
		if (s->out == NULL)
			s->out = evbuffer_new();
		rv = nghttp2_submit_response(s->h2->session, s->id, nv, n,
		    &dp);
	}
	if (nv != nv_stack)
		free(nv);
	if (buf != buf_stack)
		free(buf);
	if (rv != 0) {
		log_debug("h2 submit: %s\tpeer=%s", nghttp2_strerror(rv),
		    req->conn->peer);
		return 0;
	}
	if (final)
		s->out_final = 1;
	edge_h2_schedule(s->h2);
	return 1;
}

/* The stream's own output: DATA frames are cut from it. */
static struct evbuffer *
edge_h2_body_op(struct edge_req *req)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);
	static struct evbuffer	*sink;

	if (s == NULL) {
		/* Stream gone: whatever still comes is dropped. */
		if (sink == NULL)
			sink = evbuffer_new();
		evbuffer_drain(sink, evbuffer_get_length(sink));
		return sink;
	}
	if (s->out == NULL)
		s->out = evbuffer_new();
	return s->out;
}

/* Send from the loop; 1 while this stream has the high mark queued. */
static int
edge_h2_flush_op(struct edge_req *req)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);

	if (s == NULL || s->out == NULL)
		return 0;
	if (s->want_abort) {
		/* The tunnel the head refused: drop what comes for it. */
		evbuffer_drain(s->out, evbuffer_get_length(s->out));
		edge_h2_schedule(s->h2);
		return 0;
	}
	if (s->deferred && (evbuffer_get_length(s->out) > 0 || s->out_eof)) {
		s->deferred = 0;
		nghttp2_session_resume_data(s->h2->session, s->id);
	}
	edge_h2_schedule(s->h2);
	if (evbuffer_get_length(s->out) < EDGE_BUFFER_HIGH)
		return 0;
	if (s->stall_ev == NULL || !evtimer_pending(s->stall_ev, NULL))
		edge_h2_stall(s, 1);
	return 1;
}

/* The response is complete: END_STREAM once its bytes are out. */
static void
edge_h2_end_op(struct edge_req *req)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);

	if (s == NULL)
		return;
	s->out_eof = 1;
	s->want_abort = 0;
	if (s->out == NULL)
		s->out = evbuffer_new();
	if (s->deferred) {
		s->deferred = 0;
		nghttp2_session_resume_data(s->h2->session, s->id);
	}
	edge_h2_schedule(s->h2);
}

/* The response cannot be completed: RST_STREAM, this stream only. */
static void
edge_h2_abort_op(struct edge_req *req)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);

	if (s == NULL)
		return;
	s->want_abort = 0;
	nghttp2_submit_rst_stream(s->h2->session, NGHTTP2_FLAG_NONE, s->id,
	    NGHTTP2_INTERNAL_ERROR);
	edge_h2_schedule(s->h2);
}

/*
 * The request takes the DATA that arrived: as is for a Content-Length
 * body and a tunnel, chunked for one without (with the trailers at its
 * end), or decoded through on_data (the API). What it takes reopens the
 * stream's window.
 */
static int
edge_h2_recv_op(struct edge_req *req, struct evbuffer *dst,
    http_data_cb on_data)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);
	struct evbuffer_iovec	 v[8];
	size_t			 len, took = 0;
	char			 line[32];
	int			 i, n;

	if (s == NULL)
		return 0;
	len = s->in != NULL ? evbuffer_get_length(s->in) : 0;
	if (req->state == EDGE_REQ_TUNNEL ||
	    req->state == EDGE_REQ_API_TUNNEL) {
		if (len > 0)
			evbuffer_add_buffer(dst, s->in);
		edge_h2_consume(s, len);
		return 0;
	}
	if (req->body_done)
		return 0;
	if (req->body == HTTP_BODY_LENGTH) {
		if (len > req->body_left)
			len = req->body_left;
		if (len > 0)
			evbuffer_remove_buffer(s->in, dst, len);
		req->body_left -= len;
		req->body_done = req->body_left == 0;
		edge_h2_consume(s, len);
		return 0;
	}
	if (on_data != NULL && len > 0) {
		n = evbuffer_peek(s->in, -1, NULL, v, nitems(v));
		if (n > (int)nitems(v))
			n = nitems(v);
		for (i = 0; i < n; i++) {
			on_data(req, v[i].iov_base, v[i].iov_len);
			took += v[i].iov_len;
		}
		evbuffer_drain(s->in, took);
		if (took < len)
			s->want_data = 1;	/* the rest next run */
	} else if (len > 0) {
		snprintf(line, sizeof line, "%zx\r\n", len);
		evbuffer_add(dst, line, strlen(line));
		evbuffer_remove_buffer(s->in, dst, len);
		evbuffer_add(dst, "\r\n", 2);
		took = len;
	}
	edge_h2_consume(s, took);
	if (s->in_eof && (s->in == NULL || evbuffer_get_length(s->in) == 0)) {
		if (on_data == NULL && !s->in_term) {
			evbuffer_add(dst, "0\r\n", 3);
			if (s->trailers != NULL)
				evbuffer_add_buffer(dst, s->trailers);
			evbuffer_add(dst, "\r\n", 2);
		}
		s->in_term = 1;
		req->body_done = 1;
	}
	if (took < len)
		edge_h2_schedule(s->h2);
	return 0;
}

/* Backpressure: stop taking this stream's DATA (its window closes). */
static void
edge_h2_pause_op(struct edge_req *req, int on)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);

	if (s == NULL)
		return;
	s->paused = on;
	if (!on && (s->in_eof || (s->in != NULL &&
	    evbuffer_get_length(s->in) > 0))) {
		s->want_data = 1;
		edge_h2_schedule(s->h2);
	}
}

/*
 * Held: the stream's DATA waits (its window bounds it); a client that
 * leaves resets the stream or closes the connection, and either ends the
 * request (edge_h2_stream_close_cb, edge_h2_close).
 */
static void
edge_h2_hold_op(struct edge_req *req, int on)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);

	if (s == NULL)
		return;
	s->held = on;
	if (!on) {
		s->want_data = 1;
		edge_h2_schedule(s->h2);
	}
}

/* The request has what it needs of its head: free the fields. */
static void
edge_h2_head_done_op(struct edge_req *req)
{
	struct edge_h2_stream	*s;

	if (req == NULL || (s = edge_h2_stream_of(req)) == NULL ||
	    s->head == NULL)
		return;
	free(s->head->buf);
	free(s->head);
	s->head = NULL;
}

/* 100 Continue, for a client waiting for it. */
static void
edge_h2_go_ahead_op(struct edge_req *req)
{
	struct edge_h2_stream	*s = edge_h2_stream_of(req);
	nghttp2_nv		 nv = { (uint8_t *)":status",
				    (uint8_t *)"100", 7, 3,
				    NGHTTP2_NV_FLAG_NONE };

	if (s == NULL || s->out_final)
		return;
	nghttp2_submit_headers(s->h2->session, NGHTTP2_FLAG_NONE, s->id, NULL,
	    &nv, 1, NULL);
	edge_h2_schedule(s->h2);
}
