/*
 * HTTP/1.1 on a client connection: find and parse request heads in the
 * input (the parser is common/http.c), check their framing, make each one
 * a request, and implement the request's output for it: response heads in
 * HTTP/1.1 form with the Connection header keep-alive needs, bodies into
 * the socket's output, request bodies and tunnel bytes out of its input.
 * One request at a time; pipelined bytes wait in the input.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_h1_parse(struct edge_conn *);
static void	edge_h1_request(struct edge_conn *,
		    const struct http_request_head *, size_t);
static void	edge_h1_refuse(struct edge_conn *, int, const char *);
static struct edge_req *edge_h1_req(struct edge_conn *);
static void	edge_h1_drain_head(struct edge_conn *);
static int	edge_head_complete(const char *, size_t, size_t);
static void	edge_h1_too_large(struct edge_conn *, const char *, size_t);
static int	edge_h1_too_many(const char *, size_t);
static void	edge_h1_refuse_host(struct edge_conn *, struct edge_req *);
static size_t	edge_h1_head(struct edge_req *, struct edge_resp_head *);
static struct evbuffer *edge_h1_body(struct edge_req *);
static int	edge_h1_flush(struct edge_req *);
static void	edge_h1_end(struct edge_req *);
static void	edge_h1_abort(struct edge_req *);
static int	edge_h1_recv(struct edge_req *, struct evbuffer *,
		    http_data_cb);
static void	edge_h1_pause(struct edge_req *, int);
static void	edge_h1_hold(struct edge_req *, int);
static void	edge_h1_head_done(struct edge_req *);
static void	edge_h1_go_ahead(struct edge_req *);

static const struct edge_req_ops edge_h1_ops = {
	edge_h1_head,
	edge_h1_body,
	edge_h1_flush,
	edge_h1_end,
	edge_h1_abort,
	edge_h1_recv,
	edge_h1_pause,
	edge_h1_hold,
	edge_h1_head_done,
	edge_h1_go_ahead,
	NULL		/* chunked passes as is, trailers and all */
};

/* Start a head in the edge's scratch buffer. */
void
edge_hbuf_init(struct edge_hbuf *b, struct edge *edge)
{
	b->p = b->scratch = edge->scratch;
	b->size = edge->scratch_size;
	b->len = 0;
}

/*
 * Room for len more bytes. The scratch buffer holds twice the largest
 * head we parse, so it only overflows for heads control wrote (API
 * headers): those move to the heap.
 */
void
edge_hbuf_grow(struct edge_hbuf *b, size_t len)
{
	char	*p;

	b->size = 2 * (b->len + len);
	p = xmalloc(b->size);
	memcpy(p, b->p, b->len);
	if (b->p != b->scratch)
		free(b->p);
	b->p = p;
}

/* Append a NUL-terminated string. */
void
edge_hbuf_str(struct edge_hbuf *b, const char *s)
{
	edge_hbuf_add(b, s, strlen(s));
}

/* Append "Name: value\r\n". */
void
edge_hbuf_header(struct edge_hbuf *b, const struct http_header *h)
{
	edge_hbuf_add(b, h->name, h->name_len);
	edge_hbuf_add(b, ": ", 2);
	edge_hbuf_add(b, h->value, h->value_len);
	edge_hbuf_add(b, "\r\n", 2);
}

/* Release a head that outgrew the scratch buffer. */
void
edge_hbuf_done(struct edge_hbuf *b)
{
	if (b->p != b->scratch)
		free(b->p);
	b->p = NULL;
}

/* Bytes from the client: a head, or what the current request reads. */
void
edge_h1_read(struct edge_conn *conn)
{
	switch (conn->state) {
	case EDGE_CONN_HEAD:
		edge_h1_parse(conn);
		break;
	case EDGE_CONN_REQUEST:
		edge_req_client_data(conn->req);
		break;
	default:
		break;
	}
}

/* The client took all our output. */
void
edge_h1_drained(struct edge_conn *conn)
{
	switch (conn->state) {
	case EDGE_CONN_REQUEST:
		edge_req_drained(conn->req);
		break;
	case EDGE_CONN_HEAD:
		/* Resume pipelined requests held back by a full output. */
		if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
			edge_h1_parse(conn);
		else if (!conn->started)
			/* The client has the response: now it idles. */
			edge_conn_timer(conn, conn->edge->lim.keepalive_ms);
		break;
	default:
		break;
	}
}

/* The head deadline: a partial head gets 408, an idle connection goes. */
void
edge_h1_timeout(struct edge_conn *conn)
{
	if (conn->started &&
	    evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
		edge_h1_refuse(conn, 408, "The request head took too long to "
		    "arrive.");
	else
		edge_conn_close(conn);
}

/* The connection's request object, fresh for a new request. */
static struct edge_req *
edge_h1_req(struct edge_conn *conn)
{
	if (conn->req == NULL) {
		conn->req = edge_req_new(conn, &edge_h1_ops);
		conn->req->https = conn->tls;
	} else
		edge_req_reset(conn->req);
	conn->served = 1;
	conn->state = EDGE_CONN_REQUEST;
	edge_conn_timer(conn, -1);
	return conn->req;
}

/*
 * Refuse what cannot become a request (a broken or slow head): an error
 * page, then close; the rest of what the client sends is drained.
 */
static void
edge_h1_refuse(struct edge_conn *conn, int status, const char *message)
{
	struct edge_req	*req = edge_h1_req(conn);

	conn->head_len = 0;
	conn->linger = 1;
	req->minor = 1;
	req->close = 1;
	req->body_done = 1;
	edge_h1_refuse_host(conn, req);
	edge_req_error(req, status, message);
}

/*
 * The Host of a head that could not be parsed, looked for in the bytes
 * that came, so that a refusal is the API's JSON or a page as for a
 * parsed request (no Host at all: the API). The error path only.
 */
static void
edge_h1_refuse_host(struct edge_conn *conn, struct edge_req *req)
{
	struct evbuffer	*in = bufferevent_get_input(conn->bev);
	const char	*p, *end, *v;
	size_t		 len;

	len = evbuffer_get_length(in);
	if (len > HTTP_MAX_HEAD_SIZE)
		len = HTTP_MAX_HEAD_SIZE;
	p = end = NULL;
	if (len > 0 && (p = (const char *)evbuffer_pullup(in, len)) != NULL)
		end = p + len;
	while (p != NULL && p < end) {
		if ((p = memchr(p, '\n', end - p)) == NULL)
			break;
		p++;
		if (end - p < 5 || strncasecmp(p, "host:", 5) != 0)
			continue;
		for (p += 5; p < end && (*p == ' ' || *p == '\t'); p++)
			;
		for (v = p; p < end && *p != '\r' && *p != '\n' &&
		    *p != ' ' && *p != '\t'; p++)
			;
		edge_route_match(conn->edge->cfg, v, p - v, &req->host);
		req->json_errors = req->host.kind == EDGE_HOST_API;
		return;
	}
	edge_route_match(conn->edge->cfg, "", 0, &req->host);
	req->json_errors = req->host.kind == EDGE_HOST_API;
}

/*
 * A head that fills HTTP_MAX_HEAD_SIZE without ending: 414 if that is all
 * request line, else 431.
 */
static void
edge_h1_too_large(struct edge_conn *conn, const char *p, size_t len)
{
	if (memchr(p, '\n', len) == NULL)
		edge_h1_refuse(conn, 414, "The request line is too long.");
	else
		edge_h1_refuse(conn, 431, "The request head is too large.");
}

/*
 * 1 if a complete head the parser refused has more header fields than
 * HTTP_MAX_HEADERS: that refusal is a 431, not a 400.
 */
static int
edge_h1_too_many(const char *p, size_t len)
{
	const char	*end = p + len, *q;
	size_t		 lines = 0;

	while (p < end && (q = memchr(p, '\n', end - p)) != NULL) {
		if (q == p || (q == p + 1 && *p == '\r'))
			break;	/* the blank line */
		lines++;
		p = q + 1;
	}
	return lines > HTTP_MAX_HEADERS + 1;	/* and the request line */
}

/* 1 if buf[0..len) holds a blank line, searching from about `from'. */
static int
edge_head_complete(const char *buf, size_t len, size_t from)
{
	const char	*p;
	size_t		 i = from > 3 ? from - 3 : 0;

	while (i < len) {
		if ((p = memchr(buf + i, '\n', len - i)) == NULL)
			return 0;
		i = p - buf + 1;
		if (i < len && buf[i] == '\n')
			return 1;
		if (i + 1 < len && buf[i] == '\r' && buf[i + 1] == '\n')
			return 1;
	}
	return 0;
}

/* Look for a complete request head in the input and handle it. */
static void
edge_h1_parse(struct edge_conn *conn)
{
	struct evbuffer			*in = bufferevent_get_input(conn->bev);
	struct http_request_head	 head;
	const char			*p;
	size_t				 len;
	int				 r, complete;

	/* A client reading none of our answers gets no more of them. */
	if (evbuffer_get_length(bufferevent_get_output(conn->bev)) >
	    EDGE_BUFFER_HIGH)
		return;

	/* Empty lines before a request line are allowed (RFC 9112 2.2). */
	while ((len = evbuffer_get_length(in)) > 0) {
		p = (const char *)evbuffer_pullup(in, 1);
		if (*p != '\r' && *p != '\n')
			break;
		evbuffer_drain(in, 1);
	}
	if (len == 0)
		return;
	if (!conn->started) {
		conn->started = 1;
		/*
		 * After keep-alive idling the head's clock starts at its
		 * first byte; on a new connection, or for pipelined bytes, it
		 * runs already. Either way the bytes that follow, however
		 * they trickle in, never extend it (slowloris).
		 */
		if (conn->idle) {
			conn->idle = 0;
			edge_conn_timer(conn, conn->edge->lim.header_ms);
		}
	}
	if (len > HTTP_MAX_HEAD_SIZE)
		len = HTTP_MAX_HEAD_SIZE;
	p = (const char *)evbuffer_pullup(in, len);
	/* h2c with prior knowledge: the preface instead of a first request. */
	if (!conn->served && *p == 'P' &&
	    edge_h2_preface(p, len, &complete)) {
		if (complete)
			edge_h2_start(conn);
		return;
	}
	if (!edge_head_complete(p, len, conn->scanned)) {
		conn->scanned = len;
		if (len == HTTP_MAX_HEAD_SIZE)
			edge_h1_too_large(conn, p, len);
		return;
	}
	conn->scanned = 0;
	r = http_parse_request(p, len, &head);
	if (r == -2 && len < HTTP_MAX_HEAD_SIZE)
		return;
	if (r < 0) {
		if (r == -2)
			edge_h1_too_large(conn, p, len);
		else if (edge_h1_too_many(p, len))
			edge_h1_refuse(conn, 431, "The request has too many "
			    "header fields.");
		else
			edge_h1_refuse(conn, 400, "The request is "
			    "malformed.");
		return;
	}
	edge_h1_request(conn, &head, r);
}

/*
 * A parsed head of head_len bytes at the input's start: check what
 * HTTP/1.1 requires of it, then hand it on as a request.
 */
static void
edge_h1_request(struct edge_conn *conn, const struct http_request_head *h,
    size_t head_len)
{
	struct edge_req			*req = edge_h1_req(conn);
	const struct http_header	*connection;
	const char			*why = NULL;
	size_t				 i;
	int				 nhost = 0;

	conn->head_len = head_len;
	conn->linger = 0;
	conn->keep = 0;
	req->minor = h->minor_version;
	connection = http_header_find(h->headers, h->nheaders, "connection");
	if (req->minor >= 1)
		req->keepalive = connection == NULL ||
		    !http_header_has_token(connection, "close");
	else
		req->keepalive = connection != NULL &&
		    http_header_has_token(connection, "keep-alive");
	if (h->method_len >= sizeof req->method)
		why = "The method is too long.";
	else {
		memcpy(req->method, h->method, h->method_len);
		req->method[h->method_len] = '\0';
	}
	for (i = 0; i < h->nheaders; i++) {
		if (h->headers[i].name_len == 4 &&
		    strncasecmp(h->headers[i].name, "host", 4) == 0)
			nhost++;
	}
	/* Only origin-form: this is a reverse proxy, not a forward one. */
	if (why == NULL && (h->target_len == 0 || h->target[0] != '/'))
		why = "Only origin-form request targets (\"/path\") are "
		    "accepted.";
	else if (why == NULL && nhost > 1)
		why = "The request has more than one Host header.";
	else if (why == NULL && nhost == 0 && req->minor >= 1)
		why = "HTTP/1.1 requests need a Host header.";
	if (why == NULL && http_request_body(h, &req->body,
	    &req->body_left) != 0)
		why = "The request body framing is invalid.";
	if (why != NULL) {
		conn->linger = 1;
		req->body = HTTP_BODY_NONE;
	}
	req->body_done = req->body == HTTP_BODY_NONE ||
	    (req->body == HTTP_BODY_LENGTH && req->body_left == 0);
	if (req->body == HTTP_BODY_CHUNKED)
		http_chunked_init(&req->body_chunked);
	edge_req_start(req, h, why);
	/* Whatever the request did, its head is no longer in the input. */
	edge_h1_drain_head(conn);
}

/* Drop the current head from the input once it is no longer looked at. */
static void
edge_h1_drain_head(struct edge_conn *conn)
{
	if (conn->head_len == 0 || conn->state == EDGE_CONN_DEAD)
		return;
	evbuffer_drain(bufferevent_get_input(conn->bev), conn->head_len);
	conn->head_len = 0;
}

/*
 * Queue a response head. A final one decides whether the connection is
 * kept after it: the client allows it, its body was read, the framing lets
 * the client find the end, and the daemon is not closing.
 */
static size_t
edge_h1_head(struct edge_req *req, struct edge_resp_head *rh)
{
	struct edge_conn	*conn = req->conn;
	struct edge		*edge = req->edge;
	struct edge_hbuf	 b;
	char			 line[32];
	const char		*reason = rh->reason;
	size_t			 i, len, reason_len = rh->reason_len;
	int			 informational, upgrade;

	upgrade = rh->status == 101;
	informational = rh->status >= 100 && rh->status < 200 && !upgrade;
	/* HTTP/1.0 clients know no interim responses. */
	if (informational && req->minor == 0)
		return 0;
	edge_h1_drain_head(conn);
	if (!informational && !upgrade) {
		rh->dechunk = req->minor == 0 && rh->body == HTTP_BODY_CHUNKED;
		conn->keep = req->keepalive && !req->close && req->body_done &&
		    !conn->draining && !edge->shutting_down &&
		    rh->body != HTTP_BODY_UNTIL_CLOSE && !rh->dechunk;
	} else if (upgrade)
		conn->keep = 0;
	if (reason == NULL) {
		reason = http_status_text(rh->status);
		reason_len = strlen(reason);
	}

	edge_hbuf_init(&b, edge);
	/* By hand: snprintf was 6% of a proxied request's instructions. */
	if (rh->status >= 100 && rh->status <= 999) {
		memcpy(line, "HTTP/1.1 ", 9);
		line[9] = '0' + rh->status / 100;
		line[10] = '0' + rh->status / 10 % 10;
		line[11] = '0' + rh->status % 10;
		line[12] = ' ';
		edge_hbuf_add(&b, line, 13);
	} else {
		snprintf(line, sizeof line, "HTTP/1.1 %d ", rh->status);
		edge_hbuf_str(&b, line);
	}
	edge_hbuf_add(&b, reason, reason_len);
	edge_hbuf_add(&b, "\r\n", 2);
	for (i = 0; i < rh->nheaders; i++) {
		if (rh->dechunk && rh->headers[i].name_len == 17 &&
		    strncasecmp(rh->headers[i].name, "transfer-encoding",
		    17) == 0)
			continue;
		edge_hbuf_header(&b, &rh->headers[i]);
	}
	if (upgrade)
		edge_hbuf_str(&b, "Connection: upgrade\r\n");
	else if (!informational && !conn->keep)
		edge_hbuf_str(&b, "Connection: close\r\n");
	else if (!informational && req->minor == 0)
		edge_hbuf_str(&b, "Connection: keep-alive\r\n");
	edge_hbuf_add(&b, "\r\n", 2);
	evbuffer_add(bufferevent_get_output(conn->bev), b.p, b.len);
	len = b.len;
	edge_hbuf_done(&b);
	return len;
}

/* Body bytes go straight into the socket's output. */
static struct evbuffer *
edge_h1_body(struct edge_req *req)
{
	return bufferevent_get_output(req->conn->bev);
}

/* Write now; 1 if the client has more than the high mark queued. */
static int
edge_h1_flush(struct edge_req *req)
{
	struct bufferevent	*bev = req->conn->bev;

	if (req->conn->state == EDGE_CONN_DEAD)
		return 0;
	edge_conn_flush(req->conn);
	return evbuffer_get_length(bufferevent_get_output(bev)) >
	    EDGE_BUFFER_HIGH;
}

/* The response is complete: the next request, or close after it. */
static void
edge_h1_end(struct edge_req *req)
{
	struct edge_conn	*conn = req->conn;

	/* A body we did not read may still be arriving. */
	if (!req->body_done)
		conn->linger = 1;
	edge_conn_next(conn, conn->keep && !req->close);
}

/*
 * A response that cannot be completed: cut the connection, after writing
 * what the socket takes now (the part that came), without waiting.
 */
static void
edge_h1_abort(struct edge_req *req)
{
	edge_conn_flush(req->conn);
	edge_conn_close(req->conn);
}

/*
 * Take the request body bytes that have arrived. A Content-Length body
 * moves into dst. A chunked body is scanned to find its end and either
 * moves into dst verbatim (on_data NULL: proxying) or is decoded through
 * on_data and dropped from the input (the API). A tunnel takes all.
 */
static int
edge_h1_recv(struct edge_req *req, struct evbuffer *dst, http_data_cb on_data)
{
	struct edge_conn	*conn = req->conn;
	struct evbuffer		*in = bufferevent_get_input(conn->bev);
	struct evbuffer_iovec	 v[8];
	size_t			 len, used;
	ssize_t			 r;
	int			 i, n;

	edge_h1_drain_head(conn);
	if (req->state == EDGE_REQ_TUNNEL ||
	    req->state == EDGE_REQ_API_TUNNEL) {
		evbuffer_add_buffer(dst, in);
		return 0;
	}
	if (req->body_done)
		return 0;
	if (req->body == HTTP_BODY_LENGTH) {
		len = evbuffer_get_length(in);
		if (len > req->body_left)
			len = req->body_left;
		evbuffer_remove_buffer(in, dst, len);
		req->body_left -= len;
		req->body_done = req->body_left == 0;
		return 0;
	}
	while (req->body == HTTP_BODY_CHUNKED && !req->body_done &&
	    evbuffer_get_length(in) > 0) {
		n = evbuffer_peek(in, -1, NULL, v, nitems(v));
		if (n > (int)nitems(v))
			n = nitems(v);
		used = 0;
		for (i = 0; i < n && !req->body_chunked.done; i++) {
			r = http_chunked_scan(&req->body_chunked,
			    v[i].iov_base, v[i].iov_len, on_data, req);
			if (r < 0)
				return -1;
			used += r;
		}
		if (on_data != NULL)
			evbuffer_drain(in, used);
		else
			evbuffer_remove_buffer(in, dst, used);
		req->body_done = req->body_chunked.done;
	}
	return 0;
}

/* Backpressure: stop or resume reading the client. */
static void
edge_h1_pause(struct edge_req *req, int on)
{
	struct edge_conn	*conn = req->conn;

	if (conn->state == EDGE_CONN_DEAD)
		return;
	edge_conn_reading(conn, !on);
}

/* Held: stop reading (pipelined bytes and the body wait), watch for EOF. */
static void
edge_h1_hold(struct edge_req *req, int on)
{
	edge_conn_hold(req->conn, on);
}

/* The request has what it needs of its head. */
static void
edge_h1_head_done(struct edge_req *req)
{
	edge_h1_drain_head(req->conn);
}

/* 100 Continue, for a client that waits for it before its body. */
static void
edge_h1_go_ahead(struct edge_req *req)
{
	struct bufferevent	*bev = req->conn->bev;

	if (req->minor < 1)
		return;
	edge_h1_drain_head(req->conn);
	bufferevent_write(bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	edge_conn_flush(req->conn);
}
