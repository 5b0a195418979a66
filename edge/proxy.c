/*
 * The reverse proxy: forwards a request to an upstream (a [route] or a
 * sandbox), streams both bodies with backpressure, tunnels upgraded
 * connections, and keeps a pool of idle keep-alive upstream connections
 * per (address, sandbox, generation). The response goes out through the
 * request's output, whatever protocol carries it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static int	edge_name_is(const struct http_header *, const char *,
		    size_t);
static int	edge_named_by_connection(const struct http_header *, size_t,
		    const struct http_header *);
static int	edge_hop_by_hop(const struct http_header *, size_t,
		    const struct http_header *, int, int);
static void	edge_proxy_request_head(struct edge_req *,
		    const struct http_request_head *, struct edge_hbuf *);
static void	edge_proxy_cookie(struct edge_hbuf *,
		    const struct http_header *);
static int	edge_proxy_framing(struct edge_req *,
		    const struct http_response_head *,
		    const struct http_header *);
static void	edge_upstream_read_cb(evutil_socket_t, short, void *);
static void	edge_upstream_write_cb(struct bufferevent *, void *);
static void	edge_upstream_event_cb(struct bufferevent *, short, void *);
static void	edge_upstream_fill(struct edge_req *);
static void	edge_upstream_closed(struct edge_upstream *);
static int	edge_method_idempotent(const char *);
static void	edge_upstream_reading(struct edge_upstream *, int);
static void	edge_pool_event_cb(struct bufferevent *, short, void *);
static struct edge_upstream *edge_upstream_get(struct edge *,
		    const struct edge_up_key *);
static struct edge_upstream *edge_upstream_connect(struct edge *,
		    const struct edge_up_key *);
static void	edge_upstream_close(struct edge_upstream *);
static void	edge_pool_drop(struct edge *, struct edge_pool *);
static int	edge_addr_eq(const struct sockaddr_storage *, socklen_t,
		    const struct sockaddr_storage *, socklen_t);
static int	edge_key_eq(const struct edge_up_key *,
		    const struct edge_up_key *);
static void	edge_proxy_attach(struct edge_req *, struct edge_upstream *);
static void	edge_proxy_response(struct edge_req *);
static void	edge_proxy_relay(struct edge_req *);
static void	edge_proxy_flush(struct edge_req *);
static int	edge_proxy_response_head(struct edge_req *);
static void	edge_proxy_response_body(struct edge_req *);
static void	edge_proxy_tunnel(struct edge_req *);
static void	edge_proxy_done(struct edge_req *);
static void	edge_proxy_fail(struct edge_req *, int, const char *);
static void	edge_proxy_dechunk_cb(void *, const char *, size_t);
static void	edge_proxy_trailer_cb(void *, const char *, size_t);
static void	edge_proxy_sending(struct edge_req *);
static void	edge_proxy_relay_watch(struct edge_req *);
static void	edge_proxy_idle_check(struct edge_req *);
static int	edge_proxy_body_announced(const struct http_response_head *);

/* 1 if the header's name is s (lowercase). */
static int
edge_name_is(const struct http_header *h, const char *s, size_t len)
{
	return h->name_len == len && strncasecmp(h->name, s, len) == 0;
}

/* 1 if any Connection header of the message names this header. */
static int
edge_named_by_connection(const struct http_header *hdrs, size_t n,
    const struct http_header *h)
{
	const char	*p, *end, *tok;
	size_t		 i, tlen;

	for (i = 0; i < n; i++) {
		if (!edge_name_is(&hdrs[i], "connection", 10))
			continue;
		p = hdrs[i].value;
		end = p + hdrs[i].value_len;
		while (p < end) {
			while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
				p++;
			tok = p;
			while (p < end && *p != ',' && *p != ' ' && *p != '\t')
				p++;
			tlen = p - tok;
			if (tlen > 0 && tlen == h->name_len &&
			    strncasecmp(tok, h->name, tlen) == 0)
				return 1;
		}
	}
	return 0;
}

/*
 * 1 if a header must not be forwarded: hop-by-hop (RFC 9110 7.6.1) or
 * named in Connection. Upgrade passes when upgrading; Host always passes.
 */
static int
edge_hop_by_hop(const struct http_header *hdrs, size_t n,
    const struct http_header *h, int upgrade, int has_connection)
{
	if (edge_name_is(h, "connection", 10) ||
	    edge_name_is(h, "keep-alive", 10) ||
	    edge_name_is(h, "proxy-connection", 16) ||
	    edge_name_is(h, "te", 2))
		return 1;
	if (edge_name_is(h, "upgrade", 7))
		return !upgrade;
	if (!has_connection || edge_name_is(h, "host", 4) ||
	    edge_name_is(h, "transfer-encoding", 17) ||
	    edge_name_is(h, "content-length", 14))
		return 0;
	return edge_named_by_connection(hdrs, n, h);
}

/*
 * A private preview's Cookie header without the preview token: the app
 * never sees it. Dropped whole when nothing else is left.
 */
static void
edge_proxy_cookie(struct edge_hbuf *b, const struct http_header *hd)
{
	struct http_header	 out = *hd;
	char			 stack[1024], *buf;
	size_t			 len;

	buf = hd->value_len <= sizeof stack ? stack : xmalloc(hd->value_len);
	if (http_cookie_remove(hd->value, hd->value_len, PREVIEW_TOKEN_PARAM,
	    sizeof PREVIEW_TOKEN_PARAM - 1, buf, &len) == 0)
		edge_hbuf_header(b, hd);
	else if (len > 0) {
		out.value = buf;
		out.value_len = len;
		edge_hbuf_header(b, &out);
	}
	if (buf != stack)
		free(buf);
}

/* The request head for the upstream, in b. */
static void
edge_proxy_request_head(struct edge_req *req, const struct http_request_head *h,
    struct edge_hbuf *b)
{
	const struct http_header	*hd, *host = NULL, *connection;
	size_t				 i, nxff = 0;

	connection = http_header_find(h->headers, h->nheaders, "connection");
	edge_hbuf_add(b, h->method, h->method_len);
	edge_hbuf_add(b, " ", 1);
	edge_hbuf_add(b, h->target, h->target_len);
	edge_hbuf_add(b, " HTTP/1.1\r\n", 11);
	for (i = 0; i < h->nheaders; i++) {
		hd = &h->headers[i];
		if (edge_hop_by_hop(h->headers, h->nheaders, hd, req->upgrade,
		    connection != NULL))
			continue;
		/* The X-Forwarded-* are ours to set; X-F-For is appended to. */
		if (hd->name_len >= 15 && (hd->name[0] == 'x' ||
		    hd->name[0] == 'X') && hd->name[1] == '-') {
			if (edge_name_is(hd, "x-forwarded-for", 15)) {
				nxff++;
				continue;
			}
			if (edge_name_is(hd, "x-forwarded-proto", 17) ||
			    edge_name_is(hd, "x-forwarded-host", 16))
				continue;
		}
		if (host == NULL && edge_name_is(hd, "host", 4))
			host = hd;
		if (req->strip_token && edge_name_is(hd, "cookie", 6)) {
			edge_proxy_cookie(b, hd);
			continue;
		}
		edge_hbuf_header(b, hd);
	}
	edge_hbuf_str(b, "X-Forwarded-For: ");
	for (i = 0; nxff > 0 && i < h->nheaders; i++) {
		hd = &h->headers[i];
		if (edge_name_is(hd, "x-forwarded-for", 15)) {
			edge_hbuf_add(b, hd->value, hd->value_len);
			edge_hbuf_add(b, ", ", 2);
		}
	}
	edge_hbuf_str(b, req->conn->peer_ip);
	edge_hbuf_str(b, req->conn->tls ? "\r\nX-Forwarded-Proto: https\r\n" :
	    "\r\nX-Forwarded-Proto: http\r\n");
	if (host != NULL) {
		edge_hbuf_str(b, "X-Forwarded-Host: ");
		edge_hbuf_add(b, host->value, host->value_len);
		edge_hbuf_add(b, "\r\n", 2);
	}
	if (req->upgrade)
		edge_hbuf_str(b, "Connection: upgrade\r\n");
	edge_hbuf_add(b, "\r\n", 2);
}

/*
 * Start forwarding a request to key's address. The request counts as
 * ACTIVITY_REQUEST from here until its response ends or it fails.
 */
void
edge_proxy_start(struct edge_req *req, const struct http_request_head *h,
    const struct edge_up_key *key)
{
	struct edge			*edge = req->edge;
	struct edge_hbuf		 b;
	const struct http_header	*connection, *upg;
	struct edge_upstream		*up;

	connection = http_header_find(h->headers, h->nheaders, "connection");
	upg = http_header_find(h->headers, h->nheaders, "upgrade");
	req->upgrade = upg != NULL && connection != NULL &&
	    http_header_has_token(connection, "upgrade");
	edge_hbuf_init(&b, edge);
	edge_proxy_request_head(req, h, &b);
	req->ops->head_done(req);	/* h may point into freed memory now */

	if (key != &req->key)
		memcpy(&req->key, key, sizeof req->key);
	req->state = EDGE_REQ_PROXY;
	req->resp = EDGE_RESP_WAIT;
	req->retried = 0;
	req->dechunk = 0;
	req->client_blocked = 0;
	req->up_blocked = 0;
	if (edge->alog != NULL)
		req->t_up = time_mono_ms();
	edge_req_activity(req, EDGE_ACT_REQUEST);
	/* Control may have retired the sandbox from inside that call. */
	if (req->state != EDGE_REQ_PROXY)
		goto out;

	if ((up = edge_upstream_get(edge, &req->key)) == NULL) {
		edge_proxy_fail(req, 502, "The app could not be "
		    "reached.");
		goto out;
	}
	/*
	 * A pooled connection may have been closed by the upstream just now:
	 * keep the head to send it once more on a fresh connection. Only for
	 * idempotent methods (RFC 9110 9.2.2), as nginx does: the upstream
	 * may have acted on a POST before it closed.
	 */
	if (up->reused && req->body == HTTP_BODY_NONE &&
	    edge_method_idempotent(req->method)) {
		if (req->head_copy_size < b.len) {
			free(req->head_copy);
			req->head_copy = xmalloc(b.len);
			req->head_copy_size = b.len;
		}
		memcpy(req->head_copy, b.p, b.len);
		req->head_copy_len = b.len;
	} else
		req->head_copy_len = 0;
	bufferevent_write(up->bev, b.p, b.len);
	edge_proxy_attach(req, up);
	edge_flush(up->bev);
	edge_proxy_client_read(req);
	if (req->up == up)
		edge_proxy_sending(req);
out:
	edge_hbuf_done(&b);
}

/* Tie an upstream connection to the request. */
static void
edge_proxy_attach(struct edge_req *req, struct edge_upstream *up)
{
	req->up = up;
	req->sent = 0;
	up->req = req;
	bufferevent_setcb(up->bev, NULL, edge_upstream_write_cb,
	    edge_upstream_event_cb, up);
	/* Connected sockets are written by edge_flush; see there. */
	if (!up->connected)
		bufferevent_enable(up->bev, EV_WRITE);
	edge_upstream_reading(up, 1);
	/* Once connected, edge_proxy_sending sets the deadline. */
	if (!up->connected)
		edge_req_timer(req, EDGE_CONNECT_TIMEOUT_MS);
}

/*
 * The deadline while the request goes upstream. Once every byte of it is
 * written (sent) the response_timeout clock starts: a long upload is
 * never cut by it. Before, a body still coming from the client is held
 * to the body rate rule (edge_req_body_watch), and a body read whole but
 * not yet taken by the upstream gives it response_timeout for both.
 */
static void
edge_proxy_sending(struct edge_req *req)
{
	struct edge_upstream	*up = req->up;

	if (req->state != EDGE_REQ_PROXY || up == NULL || !up->connected ||
	    req->sent || (req->resp != EDGE_RESP_WAIT &&
	    req->resp != EDGE_RESP_HEAD))
		return;
	if (!req->body_done) {
		edge_req_body_watch(req);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_output(up->bev)) == 0)
		req->sent = 1;
	edge_req_timer(req, req->edge->lim.response_ms);
}

/* Answer with an error page instead of the upstream's response. */
static void
edge_proxy_fail(struct edge_req *req, int status, const char *message)
{
	log_debug("proxy error\tstatus=%d peer=%s msg=\"%s\"", status,
	    req->conn->peer, message);
	edge_proxy_release(req, 0);
	/* Once part of a response went out this cuts the connection. */
	edge_req_error(req, status, message);
}

/* Client bytes: the request body or tunnel data. */
void
edge_proxy_client_read(struct edge_req *req)
{
	struct evbuffer		*out;
	size_t			 had;

	if (req->up == NULL)
		return;
	/* A pipelined request waits for this response to finish. */
	if (req->state == EDGE_REQ_PROXY && req->body_done)
		return;
	out = bufferevent_get_output(req->up->bev);
	had = evbuffer_get_length(out);
	if (req->ops->recv(req, out, NULL) == -1) {
		edge_proxy_fail(req, 400, "The chunked body is malformed.");
		return;
	}
	if (evbuffer_get_length(out) > had) {
		/* For the body rate rule and the tunnel's idle deadline. */
		req->body_got += evbuffer_get_length(out) - had;
		if (req->state == EDGE_REQ_TUNNEL)
			req->last_io = time_mono_ms();
	}
	edge_flush(req->up->bev);
	if (evbuffer_get_length(out) > EDGE_BUFFER_HIGH &&
	    !req->client_blocked) {
		req->ops->pause(req, 1);
		req->client_blocked = 1;
		/* Not the client's fault: this window does not count. */
		req->rate_paused = 1;
		req->blocked_since = time_mono_ms();
	}
	if (req->body_done)
		edge_proxy_sending(req);
}

/* The client took our output: resume reading the upstream. */
void
edge_proxy_client_write(struct edge_req *req)
{
	if (req->up_blocked && req->up != NULL) {
		req->up_blocked = 0;
		/* Idleness counts from now: the wait was the client's. */
		req->last_io = time_mono_ms();
		edge_upstream_reading(req->up, 1);
	}
}

/* The upstream took our output: resume reading the client. */
static void
edge_upstream_write_cb(struct bufferevent *bev, void *arg)
{
	struct edge_upstream	*up = arg;
	struct edge_req		*req = up->req;
	int			 connecting;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	/*
	 * libevent calls this only once connected, possibly before the
	 * deferred BEV_EVENT_CONNECTED: back to writing with edge_flush.
	 */
	connecting = !up->connected;
	up->connected = 1;
	bufferevent_disable(bev, EV_WRITE);
	if (req == NULL)
		return;
	if (req->client_blocked) {
		req->client_blocked = 0;
		req->ops->pause(req, 0);
	}
	/* Connected, or all of a finished body is out: the next deadline. */
	if (connecting || req->body_done)
		edge_proxy_sending(req);
}

/*
 * Read at most len bytes from fd onto buf: bytes, 0 at EOF, -1 (errno).
 * With beyond, one more byte is asked for in the same call and dropped;
 * *beyond tells whether the socket held more than len bytes.
 */
ssize_t
edge_read(int fd, struct evbuffer *buf, size_t len, int *beyond)
{
	struct evbuffer_iovec	 v[2];
	struct iovec		 iov[3];
	size_t			 left = len;
	ssize_t			 n;
	char			 extra;
	int			 i, nv, niov;

	if ((nv = evbuffer_reserve_space(buf, len, v, nitems(v))) <= 0) {
		errno = ENOMEM;
		return -1;
	}
	/* The reservation may be larger than asked: read no more than len. */
	for (i = 0; i < nv && left > 0; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
		left -= iov[i].iov_len;
	}
	nv = niov = i;
	if (beyond != NULL) {
		iov[niov].iov_base = &extra;
		iov[niov++].iov_len = 1;
	}
	if ((n = readv(fd, iov, niov)) <= 0) {
		evbuffer_commit_space(buf, v, 0);
		return n;
	}
	if (beyond != NULL) {
		*beyond = (size_t)n > len;
		if (*beyond)
			n = len;
	}
	left = n;
	for (i = 0; i < nv && left > 0; i++) {
		v[i].iov_len = iov[i].iov_len < left ? iov[i].iov_len : left;
		left -= v[i].iov_len;
	}
	evbuffer_commit_space(buf, v, i);
	return n;
}

/*
 * A plain-TCP tunnel with nothing queued either way moves its bytes
 * without buffers: read into one scratch block and sent on at once. A
 * WebSocket echo is then two reads and two writes and no allocation or
 * buffer bookkeeping (callgrind, the bench's ws:64:100b: 3,657
 * instructions an echo through evbuffers, 1,423 this way). What the other
 * side does not take at once is queued, and the buffered path goes on
 * from there until it drains. One thread: one block serves every tunnel.
 */
static unsigned char	edge_pass_block[EDGE_READ_MAX];

/*
 * Read from `from` into the block and send it to `to`; what `to` does not
 * take (full, or an error the buffered write will see) goes onto rest.
 * The bytes read, 0 at EOF, -1 (errno).
 */
static ssize_t
edge_pass(int from, int to, struct evbuffer *rest)
{
	ssize_t	n, sent;

	if ((n = recv(from, edge_pass_block, sizeof edge_pass_block, 0)) <= 0)
		return n;
	if ((sent = send(to, edge_pass_block, n, MSG_NOSIGNAL)) < 0)
		sent = 0;
	if (sent < n &&
	    evbuffer_add(rest, edge_pass_block + sent, n - sent) != 0) {
		errno = ENOMEM;
		return -1;
	}
	return n;
}

/*
 * The upstream's bytes may go straight to the client's socket: a tunnel
 * of HTTP/1.1 over plain TCP (the connection is then the request's own),
 * with nothing queued before them.
 */
static int
edge_pass_down(struct edge_req *req, struct evbuffer *out)
{
	return req->state == EDGE_REQ_TUNNEL &&
	    req->conn->state == EDGE_CONN_REQUEST && !req->conn->tls &&
	    evbuffer_get_length(out) == 0 &&
	    evbuffer_get_length(req->up->in) == 0;
}

ssize_t
edge_proxy_tunnel_in(struct edge_req *req, int fd)
{
	struct evbuffer	*out;
	ssize_t		 n;

	if (req->state != EDGE_REQ_TUNNEL || req->up == NULL ||
	    req->client_blocked)
		return -2;
	out = bufferevent_get_output(req->up->bev);
	if (evbuffer_get_length(out) > 0)
		return -2;
	if ((n = edge_pass(fd, bufferevent_getfd(req->up->bev), out)) <= 0)
		return n;
	req->body_got += n;
	req->last_io = time_mono_ms();
	/* The upstream took part of it: the buffered path writes the rest. */
	if (evbuffer_get_length(out) > 0)
		edge_flush(req->up->bev);
	return n;
}

/* Turn reading the upstream on or off. */
static void
edge_upstream_reading(struct edge_upstream *up, int on)
{
	if (on && !up->reading)
		event_add(up->rev, NULL);
	else if (!on && up->reading)
		event_del(up->rev);
	up->reading = on;
}

/* The upstream socket is readable (or closed). */
static void
edge_upstream_read_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_upstream	*up = arg;
	struct edge_req		*req = up->req;

	if (req == NULL) {
		/* Idle in the pool: any byte or a close ends it. */
		edge_upstream_close(up);
		return;
	}
	edge_upstream_fill(req);
	/* up stays allocated until the reaper, even if closed meanwhile. */
	if (req->up == up && up->eof)
		edge_upstream_closed(up);
}

/* A read of the upstream found nothing (n -1, errno) or its end (0). */
static void
edge_upstream_read_end(struct edge_req *req, ssize_t n)
{
	if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
		log_debug("upstream read\tpeer=%s error=\"%s\"",
		    req->conn->peer, n == 0 ? "closed" : strerror(errno));
		req->up->eof = 1;
	}
}

/*
 * Read the upstream until its socket is drained (a short read), the
 * response is complete, or the client's output is full, relaying as the
 * bytes come, then write to the client once. Body bytes whose framing
 * needs no look (a known length after the head, until-close, a tunnel)
 * are read straight into the request's output; the rest goes through
 * up->in. Sets up->eof on a close or an error.
 */
static void
edge_upstream_fill(struct edge_req *req)
{
	struct edge_upstream	*up = req->up;
	struct evbuffer		*out = req->ops->body(req);
	struct evbuffer		*dst;
	size_t			 want, grow = EDGE_READ_MIN;
	ssize_t			 n;
	int			 direct, length, body, last, beyond = 0;
	int			 moved = 0;

	for (;;) {
		if (edge_pass_down(req, out)) {
			want = sizeof edge_pass_block;
			n = edge_pass(bufferevent_getfd(up->bev),
			    bufferevent_getfd(req->conn->bev), out);
			if (n <= 0) {
				edge_upstream_read_end(req, n);
				break;
			}
			moved = 1;
			req->bytes_out += n;
			/*
			 * What the socket took went past the output's
			 * callback: count it for the slow-reader rule, or a
			 * client reading fast is judged by the queued rest.
			 */
			req->conn->sent += (size_t)n - evbuffer_get_length(out);
			if ((size_t)n < want)
				break;
			continue;
		}
		body = req->state == EDGE_REQ_PROXY &&
		    req->resp == EDGE_RESP_BODY;
		length = body && req->resp_body == HTTP_BODY_LENGTH;
		direct = evbuffer_get_length(up->in) == 0 &&
		    (req->state == EDGE_REQ_TUNNEL || length ||
		    (body && req->resp_body == HTTP_BODY_UNTIL_CLOSE));
		dst = direct ? out : up->in;
		if (direct && length)
			want = req->resp_left < EDGE_READ_MAX ?
			    req->resp_left : EDGE_READ_MAX;
		else if (req->resp == EDGE_RESP_COALESCE &&
		    req->coalesce_want > evbuffer_get_length(up->in))
			/* One more: a response that ends there had no more. */
			want = req->coalesce_want -
			    evbuffer_get_length(up->in) + 1;
		else
			want = grow;
		/*
		 * The read that ends a body also checks for bytes past it: an
		 * upstream sending those must not be pooled (edge_proxy_done).
		 */
		last = direct && length && want == req->resp_left;
		n = edge_read(bufferevent_getfd(up->bev), dst, want,
		    last ? &beyond : NULL);
		if (n <= 0) {
			edge_upstream_read_end(req, n);
			break;
		}
		moved = 1;
		if (direct)
			req->bytes_out += n;
		if (req->resp == EDGE_RESP_WAIT)
			req->resp = EDGE_RESP_HEAD;
		if (direct && length)
			req->resp_left -= n;
		if (beyond)
			up->junk = 1;
		/* Coalescing: hold everything until the body's start is in. */
		if (req->resp != EDGE_RESP_COALESCE ||
		    evbuffer_get_length(up->in) >= req->coalesce_want) {
			edge_proxy_relay(req);
			if (req->up != up)
				break;	/* complete, failed or retried */
		}
		if ((size_t)n < want ||
		    evbuffer_get_length(out) >= EDGE_BUFFER_HIGH)
			break;
		/* A full read: the next may be larger (next power of two). */
		if (grow < EDGE_READ_MAX)
			grow = 2 * grow + 64 < EDGE_READ_MAX ? 2 * grow + 64 :
			    EDGE_READ_MAX;
	}
	edge_proxy_flush(req);
	if (moved && req->up == up)
		edge_proxy_relay_watch(req);
}

/*
 * Bytes came on a relay that goes on (a response body, a tunnel): note
 * when, for its idle deadline, and make sure that deadline is armed. A
 * response that ends in the read that began it never gets here.
 */
static void
edge_proxy_relay_watch(struct edge_req *req)
{
	const struct edge_limits	*lim = &req->edge->lim;
	int64_t				 ms;

	if (req->state == EDGE_REQ_TUNNEL)
		ms = lim->tunnel_idle_ms;
	else if (req->state == EDGE_REQ_PROXY && req->resp == EDGE_RESP_BODY)
		ms = lim->response_idle_ms;
	else
		return;
	if (ms <= 0)
		return;
	req->last_io = time_mono_ms();
	if (!evtimer_pending(req->timer, NULL))
		edge_req_timer(req, ms);
}

/*
 * The relay's deadline: the upstream sent nothing mid-body for
 * response_idle_timeout, or a tunnel moved no byte either way for
 * tunnel_idle_timeout. Time the client spent not reading (we stopped
 * reading the upstream for it) is the slow-reader rule's, not idleness.
 */
static void
edge_proxy_idle_check(struct edge_req *req)
{
	const struct edge_limits	*lim = &req->edge->lim;
	int				 tunnel = req->state == EDGE_REQ_TUNNEL;
	int64_t				 ms, now, idle;

	ms = tunnel ? lim->tunnel_idle_ms : lim->response_idle_ms;
	if (ms <= 0)
		return;
	now = time_mono_ms();
	if (req->up_blocked)
		req->last_io = now;
	idle = now - req->last_io;
	if (idle < ms) {
		edge_req_timer(req, ms - idle);
		return;
	}
	log_debug("%s idle\tpeer=%s ms=%lld", tunnel ? "tunnel" : "response",
	    req->conn->peer, (long long)idle);
	if (tunnel) {
		edge_proxy_release(req, 0);
		req->close = 1;
		edge_req_end(req);
		return;
	}
	/* The head went out: this cuts the client off, visibly short. */
	edge_proxy_fail(req, 504, "The upstream stopped sending its "
	    "response.");
}

/* Relay what the upstream sent and write it to the client. */
static void
edge_proxy_response(struct edge_req *req)
{
	edge_proxy_relay(req);
	edge_proxy_flush(req);
}

/* Relay what the upstream sent: heads, body, or tunnel bytes. */
static void
edge_proxy_relay(struct edge_req *req)
{
	if (req->state == EDGE_REQ_TUNNEL) {
		req->bytes_out += evbuffer_get_length(req->up->in);
		evbuffer_add_buffer(req->ops->body(req), req->up->in);
		return;
	}
	while (req->state == EDGE_REQ_PROXY && req->resp != EDGE_RESP_BODY &&
	    edge_proxy_response_head(req) == 0)
		;
	if (req->state == EDGE_REQ_PROXY && req->resp == EDGE_RESP_BODY)
		edge_proxy_response_body(req);
}

/* Write the client's output now; stop reading the upstream while it is full. */
static void
edge_proxy_flush(struct edge_req *req)
{
	if (req->ops->flush(req) && req->up != NULL) {
		edge_upstream_reading(req->up, 0);
		req->up_blocked = 1;
	}
}

/*
 * The response's framing and whether the upstream connection may be
 * reused after it, from a final head; -1 (and the request failed) if the
 * framing is invalid.
 */
static int
edge_proxy_framing(struct edge_req *req, const struct http_response_head *rh,
    const struct http_header *connection)
{
	if (http_response_body(rh, req->method, &req->resp_body,
	    &req->resp_left) != 0) {
		edge_proxy_fail(req, 502, "The app's response framing is "
		    "invalid.");
		return -1;
	}
	if (req->resp_body == HTTP_BODY_CHUNKED) {
		http_chunked_init(&req->resp_chunked);
		req->resp_chunked.on_trailer = req->ops->trailer != NULL ?
		    edge_proxy_trailer_cb : NULL;
	}
	if (rh->minor_version >= 1)
		req->up_keepalive = connection == NULL ||
		    !http_header_has_token(connection, "close");
	else
		req->up_keepalive = connection != NULL &&
		    http_header_has_token(connection, "keep-alive");
	if (req->resp_body == HTTP_BODY_UNTIL_CLOSE)
		req->up_keepalive = 0;
	/*
	 * Pooled only if no byte of this exchange can still come or go: not
	 * when the upstream answered before it had all of the request (it
	 * may take the rest for a new request, or answer again), not after
	 * HEAD, nor after a 204 or 304 that announces a body anyway: a
	 * server that sent that body would have it read as the next
	 * client's response.
	 */
	if (!req->sent && !(req->body_done && evbuffer_get_length(
	    bufferevent_get_output(req->up->bev)) == 0))
		req->up_keepalive = 0;
	if (strcmp(req->method, "HEAD") == 0 || ((rh->status == 204 ||
	    rh->status == 304) && edge_proxy_body_announced(rh)))
		req->up_keepalive = 0;
	return 0;
}

/* 1 if a head has Transfer-Encoding, or a Content-Length but 0. */
static int
edge_proxy_body_announced(const struct http_response_head *rh)
{
	const struct http_header	*h;

	if (http_header_find(rh->headers, rh->nheaders,
	    "transfer-encoding") != NULL)
		return 1;
	h = http_header_find(rh->headers, rh->nheaders, "content-length");
	return h != NULL && !(h->value_len == 1 && h->value[0] == '0');
}

/*
 * Parse and forward one response head. 0 when a head was handled (look
 * for the next if it was 1xx), 1 when more bytes are needed or the
 * request moved on (error, tunnel).
 */
static int
edge_proxy_response_head(struct edge_req *req)
{
	struct evbuffer			*in = req->up->in;
	struct http_response_head	 rh;
	const struct http_header	*connection;
	struct http_header		 hdrs[HTTP_MAX_HEADERS];
	struct edge_resp_head		 er;
	struct evbuffer_iovec		 v;
	const char			*p;
	char				*cookies = NULL;
	size_t				 len, i, n, want;
	int				 r, upgrade, informational;

	if ((len = evbuffer_get_length(in)) == 0)
		return 1;
	if (len > HTTP_MAX_HEAD_SIZE)
		len = HTTP_MAX_HEAD_SIZE;
	/*
	 * The head is nearly always within the first chain: parse it there.
	 * Pulling up len bytes would copy the start of the body as well.
	 */
	r = -2;
	if (evbuffer_peek(in, -1, NULL, &v, 1) > 0 && v.iov_len < len)
		r = http_parse_response(v.iov_base, v.iov_len, &rh);
	if (r == -2) {
		p = (const char *)evbuffer_pullup(in, len);
		r = http_parse_response(p, len, &rh);
	}
	if (r == -2 && len < HTTP_MAX_HEAD_SIZE)
		return 1;
	if (r < 0) {
		edge_proxy_fail(req, 502, "The app sent a malformed "
		    "response.");
		return 1;
	}
	upgrade = rh.status == 101;
	informational = rh.status >= 100 && rh.status < 200 && !upgrade;
	if (upgrade && !req->upgrade) {
		edge_proxy_fail(req, 502, "The app switched protocols "
		    "unasked.");
		return 1;
	}

	connection = http_header_find(rh.headers, rh.nheaders, "connection");
	if (!informational && !upgrade) {
		if (edge_proxy_framing(req, &rh, connection) != 0)
			return 1;
		/*
		 * Wait (briefly) for the head and the first EDGE_COALESCE
		 * bytes of the body to go out in one write: the client then
		 * wakes once, not once per segment the upstream sent.
		 */
		if (req->resp_body == HTTP_BODY_LENGTH &&
		    req->resp != EDGE_RESP_COALESCE) {
			want = r + (req->resp_left < EDGE_COALESCE ?
			    req->resp_left : EDGE_COALESCE);
			if (evbuffer_get_length(in) < want) {
				/* edge_upstream_fill holds back until then. */
				req->resp = EDGE_RESP_COALESCE;
				req->coalesce_want = want;
				edge_req_timer(req, EDGE_COALESCE_MS);
				return 1;
			}
		}
	}

	/* The end-to-end headers, as pointers into in: sent before drain. */
	for (i = n = 0; i < rh.nheaders; i++) {
		if (!edge_hop_by_hop(rh.headers, rh.nheaders, &rh.headers[i],
		    upgrade, connection != NULL))
			hdrs[n++] = rh.headers[i];
	}
	/* A sandbox's cookies are host-only: no Domain (not for routes). */
	if (req->key.sandbox_id[0] != '\0')
		edge_preview_set_cookies(hdrs, n, (size_t)r, &cookies);
	memset(&er, 0, sizeof er);
	er.status = rh.status;
	er.reason = rh.reason;
	er.reason_len = rh.reason_len;
	er.headers = hdrs;
	er.nheaders = n;
	er.body = informational || upgrade ? HTTP_BODY_NONE : req->resp_body;
	/* The access log's upstream time: to the first final head. */
	if (req->t_up != 0 && req->up_ms < 0 && !informational)
		req->up_ms = time_mono_ms() - req->t_up;
	edge_req_head(req, &er);
	free(cookies);
	evbuffer_drain(in, r);
	if (upgrade) {
		edge_proxy_tunnel(req);
		return 1;
	}
	if (informational) {
		req->resp = EDGE_RESP_HEAD;
		return 0;
	}
	req->dechunk = er.dechunk;
	req->resp = EDGE_RESP_BODY;
	edge_req_timer(req, -1);
	return 0;
}

/*
 * After a 101: bytes both ways until either side closes. The request's
 * ACTIVITY_REQUEST ends here and its ACTIVITY_TUNNEL starts.
 */
static void
edge_proxy_tunnel(struct edge_req *req)
{
	/* Interactive both ways, and passed on past edge_conn_flush. */
	if (req->conn->state == EDGE_CONN_REQUEST)
		edge_conn_nodelay(req->conn);
	req->state = EDGE_REQ_TUNNEL;
	req->resp = EDGE_RESP_BODY;
	req->up_keepalive = 0;
	req->body_done = 1;
	edge_req_timer(req, -1);
	if (req->edge->lim.tunnel_idle_ms > 0) {
		req->last_io = time_mono_ms();
		edge_req_timer(req, req->edge->lim.tunnel_idle_ms);
	}
	req->bytes_out += evbuffer_get_length(req->up->in);
	evbuffer_add_buffer(req->ops->body(req), req->up->in);
	edge_proxy_client_read(req);
	/* Last: control may retire the sandbox from inside it. */
	edge_req_activity(req, EDGE_ACT_TUNNEL);
}

/* A decoded chunk for a client that takes no chunked coding. */
static void
edge_proxy_dechunk_cb(void *arg, const char *data, size_t len)
{
	struct edge_req	*req = arg;

	req->bytes_out += len;
	evbuffer_add(req->ops->body(req), data, len);
}

/* Trailer lines of a chunked response, for a protocol that frames them. */
static void
edge_proxy_trailer_cb(void *arg, const char *data, size_t len)
{
	struct edge_req	*req = arg;

	if (req->dechunk)
		req->ops->trailer(req, data, len);
}

/* Forward response body bytes per the response's framing. */
static void
edge_proxy_response_body(struct edge_req *req)
{
	struct evbuffer		*in = req->up->in;
	struct evbuffer		*out = req->ops->body(req);
	struct evbuffer_iovec	 v[8];
	size_t			 len, used;
	ssize_t			 r;
	int			 i, n, done = 0;

	switch (req->resp_body) {
	case HTTP_BODY_NONE:
		done = 1;
		break;
	case HTTP_BODY_LENGTH:
		len = evbuffer_get_length(in);
		if (len > req->resp_left)
			len = req->resp_left;
		evbuffer_remove_buffer(in, out, len);
		req->bytes_out += len;
		req->resp_left -= len;
		done = req->resp_left == 0;
		break;
	case HTTP_BODY_CHUNKED:
		while (!req->resp_chunked.done && evbuffer_get_length(in) > 0) {
			n = evbuffer_peek(in, -1, NULL, v, nitems(v));
			if (n > (int)nitems(v))
				n = nitems(v);
			used = 0;
			for (i = 0; i < n && !req->resp_chunked.done; i++) {
				r = http_chunked_scan(&req->resp_chunked,
				    v[i].iov_base, v[i].iov_len,
				    req->dechunk ? edge_proxy_dechunk_cb :
				    NULL, req);
				if (r < 0) {
					edge_proxy_fail(req, 502, "The "
					    "upstream sent a malformed "
					    "chunked body.");
					return;
				}
				used += r;
			}
			if (req->dechunk)
				evbuffer_drain(in, used);
			else {
				evbuffer_remove_buffer(in, out, used);
				req->bytes_out += used;
			}
		}
		done = req->resp_chunked.done;
		break;
	case HTTP_BODY_UNTIL_CLOSE:
		req->bytes_out += evbuffer_get_length(in);
		evbuffer_add_buffer(out, in);
		break;
	}
	if (done)
		edge_proxy_done(req);
}

/* The response is complete: pool the upstream, end the request. */
static void
edge_proxy_done(struct edge_req *req)
{
	int	reuse;

	reuse = req->up_keepalive && req->body_done &&
	    evbuffer_get_length(req->up->in) == 0 &&
	    evbuffer_get_length(bufferevent_get_output(req->up->bev)) == 0;
	edge_proxy_release(req, reuse);
	edge_req_end(req);
}

/* Connected, or a write or the connect failed. */
static void
edge_upstream_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct edge_upstream	*up = arg;
	struct edge_req		*req = up->req;

	if (req == NULL) {
		edge_upstream_close(up);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		/* The write callback may have come first. */
		if (!up->connected) {
			up->connected = 1;
			edge_proxy_sending(req);
		}
		return;
	}
	log_debug("upstream error\tpeer=%s error=\"%s\"", req->conn->peer,
	    strerror(EVUTIL_SOCKET_ERROR()));
	up->eof = 1;
	edge_upstream_closed(up);
}

/* 1 for methods a client may repeat without changing the outcome. */
static int
edge_method_idempotent(const char *method)
{
	static const char *const idempotent[] = { "GET", "HEAD", "OPTIONS",
	    "TRACE", "PUT", "DELETE" };
	size_t	i;

	for (i = 0; i < nitems(idempotent); i++) {
		if (strcmp(method, idempotent[i]) == 0)
			return 1;
	}
	return 0;
}

/*
 * The upstream closed, reset or failed to connect (up->eof is set): end
 * the tunnel or the response, retry once, or answer with an error.
 */
static void
edge_upstream_closed(struct edge_upstream *up)
{
	struct edge_req		*req = up->req;
	struct edge_upstream	*fresh;
	int			 connected = up->connected;

	if (req->state == EDGE_REQ_TUNNEL) {
		edge_proxy_release(req, 0);
		req->close = 1;
		edge_req_end(req);
		return;
	}
	if (req->resp == EDGE_RESP_COALESCE) {
		/* Bytes held back for coalescing go first. */
		req->coalesce_want = 0;
		edge_proxy_response(req);
		if (req->up != up)
			return;
	}
	if (req->resp == EDGE_RESP_WAIT) {
		/* A pooled connection the upstream closed as we reused it. */
		if (up->reused && !req->retried && req->head_copy_len > 0) {
			req->retried = 1;
			edge_proxy_release(req, 0);
			fresh = edge_upstream_connect(req->edge, &req->key);
			if (fresh != NULL) {
				bufferevent_write(fresh->bev, req->head_copy,
				    req->head_copy_len);
				edge_proxy_attach(req, fresh);
				return;
			}
		}
		edge_proxy_fail(req, 502, connected ? "The app closed "
		    "the connection without answering." : "Nothing listens "
		    "on this port of the sandbox (yet).");
		return;
	}
	if (req->resp != EDGE_RESP_BODY) {
		edge_proxy_fail(req, 502, "The app closed the "
		    "connection in the middle of its response head.");
		return;
	}
	/*
	 * Until-close: this is the end. Otherwise the body is truncated:
	 * what came goes out, then the client is cut off so it sees that.
	 */
	req->bytes_out += evbuffer_get_length(up->in);
	evbuffer_add_buffer(req->ops->body(req), up->in);
	edge_proxy_release(req, 0);
	if (req->resp_body == HTTP_BODY_UNTIL_CLOSE) {
		req->close = 1;
		edge_req_end(req);
	} else
		edge_req_abort(req);
}

/*
 * The request's deadline passed: connect, the body rate window, the
 * response head, coalescing, or the relay's idle deadline.
 */
void
edge_proxy_timeout(struct edge_req *req)
{
	const struct edge_limits	*lim = &req->edge->lim;

	if (req->up == NULL)
		return;
	if (req->state == EDGE_REQ_TUNNEL || req->resp == EDGE_RESP_BODY) {
		edge_proxy_idle_check(req);
		return;
	}
	if (req->resp == EDGE_RESP_COALESCE) {
		/* The body is slow: send what there is. */
		req->coalesce_want = 0;
		edge_req_timer(req, lim->response_ms);
		edge_proxy_response(req);
		if (req->up != NULL)
			edge_proxy_relay_watch(req);
		return;
	}
	if (!req->up->connected) {
		edge_proxy_fail(req, 502, "The app did not accept the "
		    "connection in time.");
		return;
	}
	if (!req->body_done) {
		/* A paused client waits for the upstream to take its bytes. */
		if (req->client_blocked &&
		    time_mono_ms() - req->blocked_since >= lim->response_ms) {
			edge_proxy_fail(req, 504, "The app stopped reading the "
			    "request body.");
			return;
		}
		if (edge_req_body_check(req) == 0)
			return;
		req->close = 1;
		edge_proxy_fail(req, 408, "The request body is arriving too "
		    "slowly.");
		return;
	}
	edge_proxy_fail(req, 504, "The app did not answer in time.");
}

/*
 * The request's sandbox was retired while it used it: without a response
 * byte sent the client gets a page, else (or for a tunnel) it is cut off.
 */
void
edge_proxy_retire(struct edge_req *req)
{
	log_debug("retired in use\tpeer=%s sandbox=%s", req->conn->peer,
	    req->key.sandbox_id);
	edge_proxy_release(req, 0);
	if (req->state == EDGE_REQ_TUNNEL || req->out != EDGE_OUT_NONE) {
		edge_req_abort(req);
		return;
	}
	edge_req_error(req, 502, "The sandbox stopped before it answered.");
}

/* Compare two upstream addresses by family, address and port or path. */
static int
edge_addr_eq(const struct sockaddr_storage *a, socklen_t alen,
    const struct sockaddr_storage *b, socklen_t blen)
{
	const struct sockaddr_in	*a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6	*a6 = (const void *)a, *b6 = (const void *)b;
	const struct sockaddr_un	*au = (const void *)a, *bu = (const void *)b;

	if (a->ss_family != b->ss_family)
		return 0;
	switch (b->ss_family) {
	case AF_INET:
		return a4->sin_port == b4->sin_port &&
		    a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	case AF_INET6:
		return a6->sin6_port == b6->sin6_port &&
		    a6->sin6_scope_id == b6->sin6_scope_id &&
		    memcmp(&a6->sin6_addr, &b6->sin6_addr,
		    sizeof a6->sin6_addr) == 0;
	case AF_UNIX:
		return strncmp(au->sun_path, bu->sun_path,
		    sizeof au->sun_path) == 0;
	default:
		return alen == blen && memcmp(a, b, blen) == 0;
	}
}

/* 1 if a connection made for key a may serve key b. */
static int
edge_key_eq(const struct edge_up_key *a, const struct edge_up_key *b)
{
	return a->generation == b->generation &&
	    strcmp(a->sandbox_id, b->sandbox_id) == 0 &&
	    edge_addr_eq(&a->ss, a->sslen, &b->ss, b->sslen);
}

/*
 * An idle pooled connection for key, or a new one being connected. Pools
 * of an older generation of the same sandbox are of no more use: dropped.
 */
static struct edge_upstream *
edge_upstream_get(struct edge *edge, const struct edge_up_key *key)
{
	struct edge_pool	*pool, *next;
	struct edge_upstream	*up;

	TAILQ_FOREACH_SAFE(pool, &edge->pools, entry, next) {
		if (key->sandbox_id[0] != '\0' &&
		    pool->key.generation != key->generation &&
		    strcmp(pool->key.sandbox_id, key->sandbox_id) == 0) {
			edge_pool_drop(edge, pool);
			continue;
		}
		if (!edge_key_eq(&pool->key, key))
			continue;
		if ((up = TAILQ_FIRST(&pool->idle)) == NULL)
			break;
		TAILQ_REMOVE(&pool->idle, up, entry);
		pool->nidle--;
		up->pool = NULL;
		up->reused = 1;
		return up;
	}
	return edge_upstream_connect(edge, key);
}

/* Open a new upstream connection (non-blocking connect). */
static struct edge_upstream *
edge_upstream_connect(struct edge *edge, const struct edge_up_key *key)
{
	const struct sockaddr	*sa = (const struct sockaddr *)&key->ss;
	struct edge_upstream	*up;
	int			 fd, one = 1;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1) {
		log_warn("upstream socket");
		return NULL;
	}
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	up = xcalloc(1, sizeof *up);
	up->edge = edge;
	up->bev = bufferevent_socket_new(edge->base, fd,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (up->bev == NULL) {
		close(fd);
		free(up);
		return NULL;
	}
	bufferevent_set_max_single_write(up->bev, EDGE_IO_MAX);
	up->rev = event_new(edge->base, fd, EV_READ | EV_PERSIST,
	    edge_upstream_read_cb, up);
	up->in = evbuffer_new();
	if (up->rev == NULL || up->in == NULL ||
	    bufferevent_socket_connect(up->bev, sa, key->sslen) != 0) {
		log_debug("upstream connect failed: %s",
		    strerror(EVUTIL_SOCKET_ERROR()));
		edge_upstream_close(up);
		return NULL;
	}
	return up;
}

/*
 * Close an upstream connection, wherever it is. Its memory waits for the
 * reaper: callers up the stack may still compare or read it.
 */
static void
edge_upstream_close(struct edge_upstream *up)
{
	struct edge	*edge = up->edge;

	if (up->bev == NULL)
		return;		/* closed already */
	if (up->pool != NULL) {
		TAILQ_REMOVE(&up->pool->idle, up, entry);
		up->pool->nidle--;
		up->pool = NULL;
	}
	if (up->req != NULL)
		up->req->up = NULL;
	up->req = NULL;
	if (up->rev != NULL)
		event_free(up->rev);
	up->rev = NULL;
	up->reading = 0;
	if (up->in != NULL)
		evbuffer_free(up->in);
	up->in = NULL;
	bufferevent_free(up->bev);
	up->bev = NULL;
	up->eof = 1;
	TAILQ_INSERT_TAIL(&edge->dead_ups, up, entry);
	edge_reap_soon(edge);
}

/* Free the upstream connections closed since the last reaper run. */
void
edge_upstream_reap(struct edge *edge)
{
	struct edge_upstream	*up;

	while ((up = TAILQ_FIRST(&edge->dead_ups)) != NULL) {
		TAILQ_REMOVE(&edge->dead_ups, up, entry);
		free(up);
	}
}

/* An idle pooled connection closed. */
static void
edge_pool_event_cb(struct bufferevent *bev, short what, void *arg)
{
	edge_upstream_close(arg);
}

/*
 * Detach the request's upstream connection: into the pool when reuse is
 * allowed and there is room, else closed.
 */
void
edge_proxy_release(struct edge_req *req, int reuse)
{
	struct edge		*edge = req->edge;
	struct edge_upstream	*up = req->up;
	struct edge_pool	*pool;

	if (req->client_blocked) {
		req->client_blocked = 0;
		req->ops->pause(req, 0);
	}
	req->up_blocked = 0;
	if (up == NULL)
		return;
	req->up = NULL;
	up->req = NULL;
	if (!reuse || up->eof || up->junk || edge->shutting_down ||
	    !up->connected) {
		edge_upstream_close(up);
		return;
	}
	TAILQ_FOREACH(pool, &edge->pools, entry) {
		if (edge_key_eq(&pool->key, &req->key))
			break;
	}
	if (pool == NULL) {
		pool = xcalloc(1, sizeof *pool);
		memcpy(&pool->key, &req->key, sizeof pool->key);
		TAILQ_INIT(&pool->idle);
		TAILQ_INSERT_HEAD(&edge->pools, pool, entry);
	}
	if (pool->nidle >= EDGE_POOL_MAX_IDLE) {
		edge_upstream_close(up);
		return;
	}
	up->pool = pool;
	up->idle_since = time_mono_ms();
	TAILQ_INSERT_HEAD(&pool->idle, up, entry);
	pool->nidle++;
	/* Any byte or close ends it: edge_upstream_read_cb sees no req. */
	bufferevent_setcb(up->bev, NULL, NULL, edge_pool_event_cb, up);
	edge_upstream_reading(up, 1);
}

/* Close every idle connection of a pool and free it. */
static void
edge_pool_drop(struct edge *edge, struct edge_pool *pool)
{
	struct edge_upstream	*up;

	while ((up = TAILQ_FIRST(&pool->idle)) != NULL)
		edge_upstream_close(up);
	TAILQ_REMOVE(&edge->pools, pool, entry);
	free(pool);
}

/* Close idle upstream connections past their time (all: every one). */
void
edge_pool_sweep(struct edge *edge, int all)
{
	struct edge_pool	*pool, *pnext;
	struct edge_upstream	*up, *prev;
	int64_t			 now = time_mono_ms();

	TAILQ_FOREACH_SAFE(pool, &edge->pools, entry, pnext) {
		/* Oldest at the tail. */
		for (up = TAILQ_LAST(&pool->idle, edge_upstream_q);
		    up != NULL; up = prev) {
			prev = TAILQ_PREV(up, edge_upstream_q, entry);
			if (!all && now - up->idle_since < EDGE_POOL_IDLE_MS)
				break;
			edge_upstream_close(up);
		}
		if (pool->nidle == 0) {
			TAILQ_REMOVE(&edge->pools, pool, entry);
			free(pool);
		}
	}
}

/* Close every pooled connection to this sandbox, whatever generation. */
void
edge_pool_retire(struct edge *edge, const char *sandbox_id)
{
	struct edge_pool	*pool, *next;

	TAILQ_FOREACH_SAFE(pool, &edge->pools, entry, next) {
		if (strcmp(pool->key.sandbox_id, sandbox_id) == 0)
			edge_pool_drop(edge, pool);
	}
}
