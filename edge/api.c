/*
 * A request for the control API: an http_exchange built from the head,
 * the body read within the limit control sets, dispatched to control, and
 * its answer written back through the request.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_api_data_cb(void *, const char *, size_t);
static void	edge_api_send(void *, struct http_exchange *);
static int	edge_api_skip_header(const char *);
static struct http_exchange *edge_api_exchange(struct edge_req *,
		    const struct http_request_head *);

static void	edge_api_stream_head(void *, struct http_exchange *);
static int	edge_api_stream_write(void *, struct http_exchange *,
		    const void *, size_t);
static void	edge_api_stream_end(void *, struct http_exchange *);
static int	edge_api_upgrade_head(void *, struct http_exchange *);
static void	edge_api_upgrade_pause(void *, struct http_exchange *, int);

static const struct http_exchange_transport edge_transport = {
	edge_api_send,
	edge_api_stream_head,
	edge_api_stream_write,
	edge_api_stream_end,
	edge_api_upgrade_head,
	edge_api_upgrade_pause
};

/* The exchange for a head: method, path, query, headers, peer. */
static struct http_exchange *
edge_api_exchange(struct edge_req *req, const struct http_request_head *h)
{
	struct http_exchange	*ex;
	const char		*q;
	size_t			 i, j, plen;

	q = memchr(h->target, '?', h->target_len);
	plen = q != NULL ? (size_t)(q - h->target) : h->target_len;

	ex = http_exchange_new();
	ex->method = xstrdup(req->method);
	ex->path = xstrndup(h->target, plen);
	if (q != NULL)
		ex->query = xstrndup(q + 1, h->target_len - plen - 1);
	ex->hdr_names = xcalloc(h->nheaders + 1, sizeof *ex->hdr_names);
	ex->hdr_values = xcalloc(h->nheaders + 1, sizeof *ex->hdr_values);
	for (i = 0; i < h->nheaders; i++) {
		ex->hdr_names[i] = xstrndup(h->headers[i].name,
		    h->headers[i].name_len);
		for (j = 0; ex->hdr_names[i][j] != '\0'; j++) {
			if (ex->hdr_names[i][j] >= 'A' &&
			    ex->hdr_names[i][j] <= 'Z')
				ex->hdr_names[i][j] += 'a' - 'A';
		}
		ex->hdr_values[i] = xstrndup(h->headers[i].value,
		    h->headers[i].value_len);
	}
	ex->nhdrs = h->nheaders;
	if (ex->body == NULL)
		ex->body = evbuffer_new();
	snprintf(ex->peer, sizeof ex->peer, "%s", req->conn->peer);
	ex->is_tls = 0;
	ex->started_ms = time_mono_ms();
	return ex;
}

/* Start an API request: check the body size, build the exchange. */
void
edge_api_start(struct edge_req *req, const struct http_request_head *h)
{
	const struct http_header	*expect;
	int				 go_ahead;

	req->ex = edge_api_exchange(req, h);
	req->api_got = 0;
	req->api_limit = control_api_body_limit(req->edge->ctl, req->ex);
	expect = http_header_find(h->headers, h->nheaders, "expect");
	go_ahead = expect != NULL && !req->body_done &&
	    expect->value_len == 12 &&
	    strncasecmp(expect->value, "100-continue", 12) == 0;
	req->ops->head_done(req);	/* h points into freed memory now */
	req->state = EDGE_REQ_API_BODY;
	if (req->api_limit == 0 && !req->body_done) {
		/*
		 * The answer is an error whatever the body holds (no valid
		 * key, say): read none of it, say no 100 Continue, answer
		 * now. The unread body closes the connection after.
		 */
		req->close = 1;
		req->state = EDGE_REQ_API_WAIT;
		req->ex->transport = &edge_transport;
		req->ex->conn = req;
		control_api_dispatch(req->edge->ctl, req->ex);
		return;
	}
	if (req->body == HTTP_BODY_LENGTH && req->body_left > req->api_limit) {
		edge_req_error(req, 413, "The request body is too large "
		    "for this route.");
		return;
	}
	/* The client waits for our go before it sends the body. */
	if (go_ahead)
		req->ops->go_ahead(req);
	if (!req->body_done)
		edge_req_body_watch(req);
	edge_api_body(req);
}

/* A decoded chunk of an API body. */
static void
edge_api_data_cb(void *arg, const char *data, size_t len)
{
	struct edge_req	*req = arg;

	req->api_got += len;
	/* Past the limit the bytes are only counted, not kept. */
	if (req->api_got <= req->api_limit)
		evbuffer_add(req->ex->body, data, len);
}

/*
 * Read the API body as it arrives; dispatch when complete, or at once for
 * a route that takes its body as it comes (ex->body_streams), whose
 * handler then gets each piece (http_exchange_body_take). Nothing touches
 * req after a dispatch or a handler's call: it may have answered.
 */
void
edge_api_body(struct edge_req *req)
{
	struct http_exchange	*ex = req->ex;
	size_t			 had = evbuffer_get_length(ex->body);

	if (req->ops->recv(req, ex->body, edge_api_data_cb) == -1) {
		edge_req_error(req, 400, "The chunked body is malformed.");
		return;
	}
	/* For the body rate rule (edge_req_body_check, on the timer). */
	req->body_got += evbuffer_get_length(ex->body) - had;
	if (req->api_got > req->api_limit) {
		edge_req_error(req, 413, "The request body is too large "
		    "for this route.");
		return;
	}
	if (ex->body_streams) {
		if (req->body_done) {
			edge_req_timer(req, -1);
			req->state = EDGE_REQ_API_WAIT;
			ex->body_complete = 1;
		}
		if (ex->conn == NULL) {
			ex->transport = &edge_transport;
			ex->conn = req;
			control_api_dispatch(req->edge->ctl, ex);
		} else if (ex->body_cb != NULL &&
		    (evbuffer_get_length(ex->body) > 0 || ex->body_complete))
			ex->body_cb(ex, ex->body, ex->body_arg);
		return;
	}
	if (!req->body_done)
		return;
	edge_req_timer(req, -1);
	req->state = EDGE_REQ_API_WAIT;
	ex->transport = &edge_transport;
	ex->conn = req;
	control_api_dispatch(req->edge->ctl, ex);
}

/*
 * The request ends before control answered (the client left): a
 * dispatched exchange is detached, control's reply then dropped; one
 * never dispatched is still ours.
 */
void
edge_api_gone(struct edge_req *req)
{
	struct http_exchange	*ex = req->ex;

	if (ex == NULL)
		return;
	if (req->state == EDGE_REQ_API_STREAM ||
	    req->state == EDGE_REQ_API_TUNNEL) {
		/* The handler learns now; it frees the exchange as it ends. */
		req->ex = NULL;
		http_exchange_stream_gone(ex);
		return;
	}
	if (req->state == EDGE_REQ_API_BODY && ex->conn != NULL) {
		/* Dispatched before its body (body_streams): cut short. */
		req->ex = NULL;
		http_exchange_body_gone(ex);
		return;
	}
	if (req->state == EDGE_REQ_API_WAIT)
		http_exchange_detach(req->ex);
	else
		http_exchange_free(req->ex);
	req->ex = NULL;
}

/* 1 if an API response header is ours to write, not the handler's. */
static int
edge_api_skip_header(const char *name)
{
	return strcasecmp(name, "content-length") == 0 ||
	    strcasecmp(name, "connection") == 0 ||
	    strcasecmp(name, "transfer-encoding") == 0 ||
	    strcasecmp(name, "keep-alive") == 0;
}

/*
 * Append the handler's response headers to hdrs[n...] (room for all of
 * them), less those we write ourselves and also_skip; the new count.
 */
static size_t
edge_api_add_headers(struct http_header *hdrs, size_t n,
    const struct http_exchange *ex, const char *also_skip)
{
	size_t	i;

	for (i = 0; i < ex->nresp_hdrs; i++) {
		if (edge_api_skip_header(ex->resp_hdr_names[i]) ||
		    (also_skip != NULL &&
		    strcasecmp(ex->resp_hdr_names[i], also_skip) == 0))
			continue;
		hdrs[n].name = ex->resp_hdr_names[i];
		hdrs[n].name_len = strlen(ex->resp_hdr_names[i]);
		hdrs[n].value = ex->resp_hdr_values[i];
		hdrs[n++].value_len = strlen(ex->resp_hdr_values[i]);
	}
	return n;
}

/* control answered: write the response and go on. */
static void
edge_api_send(void *arg, struct http_exchange *ex)
{
	struct edge_req		*req = arg;
	struct edge_resp_head	 rh;
	struct http_header	*hdrs;
	char			 clen[32];
	size_t			 n = 0, len;
	int			 nobody;

	req->ex = NULL;
	ex->conn = NULL;
	/* Answered before the body was read (body_streams): no next request. */
	if (!req->body_done)
		req->close = 1;
	len = ex->resp_body != NULL ? evbuffer_get_length(ex->resp_body) : 0;
	nobody = ex->status == 204 || ex->status == 304 ||
	    (ex->status >= 100 && ex->status < 200);

	hdrs = xcalloc(ex->nresp_hdrs + 1, sizeof *hdrs);
	if (!nobody) {
		snprintf(clen, sizeof clen, "%zu", len);
		hdrs[n].name = "Content-Length";
		hdrs[n].name_len = 14;
		hdrs[n].value = clen;
		hdrs[n++].value_len = strlen(clen);
	}
	n = edge_api_add_headers(hdrs, n, ex, NULL);
	memset(&rh, 0, sizeof rh);
	rh.status = ex->status;
	rh.headers = hdrs;
	rh.nheaders = n;
	rh.body = nobody ? HTTP_BODY_NONE : HTTP_BODY_LENGTH;
	edge_req_head(req, &rh);
	free(hdrs);
	if (!nobody && len > 0 && strcmp(req->method, "HEAD") != 0) {
		req->bytes_out += evbuffer_get_length(ex->resp_body);
		evbuffer_add_buffer(req->ops->body(req), ex->resp_body);
	}
	http_exchange_free(ex);
	edge_req_end(req);
}

/*
 * control streams its answer: the head now, chunked (HTTP/1.1) or as
 * the protocol frames a body of unknown length (rh.dechunk: HTTP/1.0
 * until close, HTTP/2 DATA frames); or, when the handler gave a
 * Content-Length (a file), with that length and the bytes as they are,
 * so a cut answer is visibly short on every protocol. The client is not
 * read meanwhile, but its leaving is noticed (hold).
 */
static void
edge_api_stream_head(void *arg, struct http_exchange *ex)
{
	struct edge_req		*req = arg;
	struct edge_resp_head	 rh;
	struct http_header	*hdrs;
	const char		*clen = NULL;
	size_t			 i, n = 0;

	for (i = 0; i < ex->nresp_hdrs; i++) {
		if (strcasecmp(ex->resp_hdr_names[i], "content-length") == 0)
			clen = ex->resp_hdr_values[i];
	}
	hdrs = xcalloc(ex->nresp_hdrs + 1, sizeof *hdrs);
	hdrs[n].name = clen != NULL ? "Content-Length" : "Transfer-Encoding";
	hdrs[n].name_len = strlen(hdrs[n].name);
	hdrs[n].value = clen != NULL ? clen : "chunked";
	hdrs[n].value_len = strlen(hdrs[n].value);
	n++;
	n = edge_api_add_headers(hdrs, n, ex, NULL);
	memset(&rh, 0, sizeof rh);
	rh.status = ex->status;
	rh.headers = hdrs;
	rh.nheaders = n;
	rh.body = clen != NULL ? HTTP_BODY_LENGTH : HTTP_BODY_CHUNKED;
	/* A sized answer ends by itself: a shutdown lets it (edge.c). */
	req->resp_body = rh.body;
	req->state = EDGE_REQ_API_STREAM;
	edge_req_head(req, &rh);
	free(hdrs);
	req->api_raw = clen != NULL || rh.dechunk;
	req->ops->hold(req, 1);
	req->ops->flush(req);
}

/* Body bytes of a streamed answer; 1 if the client is over the mark. */
static int
edge_api_stream_write(void *arg, struct http_exchange *ex, const void *data,
    size_t len)
{
	struct edge_req	*req = arg;
	struct evbuffer	*out;

	if (strcmp(req->method, "HEAD") == 0)
		return (0);
	out = req->ops->body(req);
	req->bytes_out += len;
	if (!req->api_raw)
		evbuffer_add_printf(out, "%zx\r\n", len);
	evbuffer_add(out, data, len);
	if (!req->api_raw)
		evbuffer_add(out, "\r\n", 2);
	return (req->ops->flush(req));
}

/* The streamed answer is complete: the last chunk, and the next request. */
static void
edge_api_stream_end(void *arg, struct http_exchange *ex)
{
	struct edge_req	*req = arg;

	req->ex = NULL;
	ex->conn = NULL;
	if (req->state == EDGE_REQ_API_TUNNEL) {
		/* No next request after a 101: the connection ends. */
		req->close = 1;
		edge_req_end(req);
		return;
	}
	if (ex->stream_cut) {
		/* Failed midway: cut off, never ended like a whole answer. */
		req->ops->hold(req, 0);
		req->close = 1;
		edge_req_abort(req);
		return;
	}
	if (!req->api_raw && strcmp(req->method, "HEAD") != 0)
		evbuffer_add(req->ops->body(req), "0\r\n\r\n", 5);
	req->ops->hold(req, 0);
	edge_req_end(req);
}

/*
 * control answers 101 (a terminal's WebSocket): the head now, then the
 * connection's bytes both ways, unframed, until either side ends it.
 * HTTP/1.1, or an HTTP/2 extended CONNECT (RFC 8441: h2.c made it look
 * like an upgrade, and turns our 101 into its 200, the stream's DATA
 * into the bytes); not HTTP/1.0.
 */
static int
edge_api_upgrade_head(void *arg, struct http_exchange *ex)
{
	struct edge_req		*req = arg;
	struct edge_resp_head	 rh;
	struct http_header	*hdrs;
	size_t			 n = 0;

	if (req->h2s == NULL && req->minor == 0)
		return (-1);
	hdrs = xcalloc(ex->nresp_hdrs + 3, sizeof *hdrs);
	hdrs[n].name = "Upgrade";
	hdrs[n].name_len = 7;
	hdrs[n].value = "websocket";
	hdrs[n++].value_len = 9;
	/*
	 * No Connection here: h1.c writes "Connection: upgrade" for every
	 * 101 (h2.c drops both). Two of them arrive as "Upgrade, upgrade",
	 * which strict clients (undici's WebSocket: Node's) refuse.
	 */
	n = edge_api_add_headers(hdrs, n, ex, "upgrade");
	memset(&rh, 0, sizeof rh);
	rh.status = 101;
	rh.headers = hdrs;
	rh.nheaders = n;
	rh.body = HTTP_BODY_NONE;
	req->state = EDGE_REQ_API_TUNNEL;
	edge_req_head(req, &rh);
	free(hdrs);
	if (req->out != EDGE_OUT_FINAL) {
		/* An HTTP/2 stream that was no extended CONNECT. */
		req->state = EDGE_REQ_API_WAIT;
		return (-1);
	}
	req->api_raw = 1;
	/*
	 * A WebSocket client sends nothing before our 101 (RFC 6455 4.1),
	 * so no byte waits in the input: the next read brings the first.
	 */
	req->ops->flush(req);
	return (0);
}

/*
 * The handler has no room for more client bytes (1), or room again: a
 * tunnel's, or a body taken as it comes (whose paused windows do not
 * count against the client's body rate, as for a proxied body).
 */
static void
edge_api_upgrade_pause(void *arg, struct http_exchange *ex, int on)
{
	struct edge_req	*req = arg;

	if (req->state == EDGE_REQ_API_BODY) {
		if (on == req->client_blocked)
			return;
		req->client_blocked = on;
		if (on)
			req->rate_paused = 1;
		req->ops->pause(req, on);
		if (!on)
			edge_api_body(req);
		return;
	}
	req->ops->pause(req, on);
	if (!on)
		edge_api_tunnel_read(req);
}

/*
 * Client bytes after our 101: the handler takes what it has room for;
 * the rest waits in the exchange's (GET, so empty) body buffer.
 */
void
edge_api_tunnel_read(struct edge_req *req)
{
	struct evbuffer	*in;

	if (req->ex == NULL || req->state != EDGE_REQ_API_TUNNEL)
		return;
	in = req->ex->body;
	req->ops->recv(req, in, NULL);
	if (evbuffer_get_length(in) > 0)
		http_exchange_upgrade_data(req->ex, in);
}

/* The client took the stream's output: the handler may write on. */
void
edge_api_drained(struct edge_req *req)
{
	if (req->ex != NULL)
		http_exchange_stream_drained(req->ex);
}
