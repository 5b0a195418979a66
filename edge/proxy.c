/*
 * The reverse proxy: forwards one request at a time from a client
 * connection to an upstream (a [route] or a sandbox), streams both bodies
 * with backpressure, tunnels upgraded connections, and keeps a pool of idle
 * keep-alive upstream connections per address.
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

/* Builds a head in the edge's scratch buffer. */
struct edge_hbuf {
	char	*p;
	size_t	 len;
	size_t	 size;
	int	 overflow;
};

static void	edge_upstream_read_cb(evutil_socket_t, short, void *);
static void	edge_upstream_write_cb(struct bufferevent *, void *);
static void	edge_upstream_event_cb(struct bufferevent *, short, void *);
static void	edge_upstream_fill(struct edge_conn *);
static void	edge_upstream_closed(struct edge_upstream *);
static int	edge_method_idempotent(const char *);
static void	edge_upstream_reading(struct edge_upstream *, int);
static void	edge_pool_event_cb(struct bufferevent *, short, void *);
static struct edge_upstream *edge_upstream_get(struct edge *,
		    const struct sockaddr *, socklen_t);
static struct edge_upstream *edge_upstream_connect(struct edge *,
		    const struct sockaddr *, socklen_t);
static void	edge_upstream_free(struct edge_upstream *);
static void	edge_proxy_attach(struct edge_conn *, struct edge_upstream *);
static void	edge_proxy_response(struct edge_conn *);
static void	edge_proxy_relay(struct edge_conn *);
static void	edge_proxy_flush(struct edge_conn *);
static int	edge_proxy_response_head(struct edge_conn *);
static void	edge_proxy_response_body(struct edge_conn *);
static void	edge_proxy_done(struct edge_conn *);
static void	edge_proxy_fail(struct edge_conn *, int, const char *);
static void	edge_proxy_dechunk_cb(void *, const char *, size_t);

/* Append len bytes. */
static void
edge_hbuf_add(struct edge_hbuf *b, const char *s, size_t len)
{
	if (b->overflow || len > b->size - b->len) {
		b->overflow = 1;
		return;
	}
	memcpy(b->p + b->len, s, len);
	b->len += len;
}

/* Append a NUL-terminated string. */
static void
edge_hbuf_str(struct edge_hbuf *b, const char *s)
{
	edge_hbuf_add(b, s, strlen(s));
}

/* Append "Name: value\r\n". */
static void
edge_hbuf_header(struct edge_hbuf *b, const struct http_header *h)
{
	edge_hbuf_add(b, h->name, h->name_len);
	edge_hbuf_add(b, ": ", 2);
	edge_hbuf_add(b, h->value, h->value_len);
	edge_hbuf_add(b, "\r\n", 2);
}

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

/* Start forwarding a request whose head is at the client input's start. */
void
edge_proxy_start(struct edge_conn *conn, const struct http_request_head *h,
    size_t head_len, const struct sockaddr *sa, socklen_t salen)
{
	struct edge			*edge = conn->edge;
	struct edge_hbuf		 b;
	const struct http_header	*hd, *host = NULL, *upg;
	const struct http_header	*connection;
	struct edge_upstream		*up;
	size_t				 i, nxff = 0;

	connection = http_header_find(h->headers, h->nheaders, "connection");
	upg = http_header_find(h->headers, h->nheaders, "upgrade");
	conn->upgrade = upg != NULL && connection != NULL &&
	    http_header_has_token(connection, "upgrade");

	b.p = edge->scratch;
	b.size = edge->scratch_size;
	b.len = 0;
	b.overflow = 0;
	edge_hbuf_add(&b, h->method, h->method_len);
	edge_hbuf_add(&b, " ", 1);
	edge_hbuf_add(&b, h->target, h->target_len);
	edge_hbuf_add(&b, " HTTP/1.1\r\n", 11);
	for (i = 0; i < h->nheaders; i++) {
		hd = &h->headers[i];
		if (edge_hop_by_hop(h->headers, h->nheaders, hd, conn->upgrade,
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
		edge_hbuf_header(&b, hd);
	}
	edge_hbuf_str(&b, "X-Forwarded-For: ");
	for (i = 0; nxff > 0 && i < h->nheaders; i++) {
		hd = &h->headers[i];
		if (edge_name_is(hd, "x-forwarded-for", 15)) {
			edge_hbuf_add(&b, hd->value, hd->value_len);
			edge_hbuf_add(&b, ", ", 2);
		}
	}
	edge_hbuf_str(&b, conn->peer_ip);
	edge_hbuf_str(&b, "\r\nX-Forwarded-Proto: http\r\n");
	if (host != NULL) {
		edge_hbuf_str(&b, "X-Forwarded-Host: ");
		edge_hbuf_add(&b, host->value, host->value_len);
		edge_hbuf_add(&b, "\r\n", 2);
	}
	if (conn->upgrade)
		edge_hbuf_str(&b, "Connection: upgrade\r\n");
	edge_hbuf_add(&b, "\r\n", 2);
	evbuffer_drain(bufferevent_get_input(conn->bev), head_len);
	if (b.overflow) {
		edge_conn_error(conn, 431, "The request head is too large.",
		    NULL);
		return;
	}

	conn->state = EDGE_CONN_PROXY;
	conn->resp_head = 0;
	conn->resp_any = 0;
	conn->resp_sent = 0;
	conn->coalesce = 0;
	conn->retried = 0;
	conn->dechunk = 0;
	conn->client_blocked = 0;
	conn->up_blocked = 0;
	memcpy(&conn->up_ss, sa, salen);
	conn->up_sslen = salen;

	if ((up = edge_upstream_get(edge, sa, salen)) == NULL) {
		edge_proxy_fail(conn, 502, "The upstream could not be "
		    "reached.");
		return;
	}
	/*
	 * A pooled connection may have been closed by the upstream just now:
	 * keep the head to send it once more on a fresh connection. Only for
	 * idempotent methods (RFC 9110 9.2.2), as nginx does: the upstream
	 * may have acted on a POST before it closed.
	 */
	if (up->reused && conn->req_body == HTTP_BODY_NONE &&
	    edge_method_idempotent(conn->method)) {
		if (conn->head_copy_size < b.len) {
			free(conn->head_copy);
			conn->head_copy = xmalloc(b.len);
			conn->head_copy_size = b.len;
		}
		memcpy(conn->head_copy, b.p, b.len);
		conn->head_copy_len = b.len;
	} else
		conn->head_copy_len = 0;
	bufferevent_write(up->bev, b.p, b.len);
	edge_proxy_attach(conn, up);
	edge_flush(up->bev);
	edge_proxy_client_read(conn);
}

/* Tie an upstream connection to the client connection. */
static void
edge_proxy_attach(struct edge_conn *conn, struct edge_upstream *up)
{
	conn->up = up;
	up->conn = conn;
	bufferevent_setcb(up->bev, NULL, edge_upstream_write_cb,
	    edge_upstream_event_cb, up);
	/* Connected sockets are written by edge_flush; see there. */
	if (!up->connected)
		bufferevent_enable(up->bev, EV_WRITE);
	edge_upstream_reading(up, 1);
	edge_conn_timer(conn, up->connected ? EDGE_RESPONSE_TIMEOUT_MS :
	    EDGE_CONNECT_TIMEOUT_MS);
}

/* Answer with an error page instead of the upstream's response. */
static void
edge_proxy_fail(struct edge_conn *conn, int status, const char *message)
{
	log_debug("proxy error\tstatus=%d peer=%s msg=\"%s\"", status,
	    conn->peer, message);
	edge_proxy_release(conn, 0);
	if (conn->resp_sent) {
		/* Part of a response went out already: cut the connection. */
		edge_conn_close(conn);
		return;
	}
	edge_conn_error(conn, status, message, NULL);
}

/* Client bytes: the request body, tunnel data, or pipelined requests. */
void
edge_proxy_client_read(struct edge_conn *conn)
{
	struct evbuffer		*in = bufferevent_get_input(conn->bev);
	struct evbuffer		*out;

	if (conn->up == NULL)
		return;
	out = bufferevent_get_output(conn->up->bev);
	if (conn->state == EDGE_CONN_TUNNEL) {
		evbuffer_add_buffer(out, in);
	} else if (conn->state != EDGE_CONN_PROXY || conn->req_done) {
		/* A pipelined request waits for this response to finish. */
		return;
	} else if (edge_body_take(conn, out, NULL) == -1) {
		edge_proxy_fail(conn, 400, "The chunked body is malformed.");
		return;
	}
	edge_flush(conn->up->bev);
	if (evbuffer_get_length(out) > EDGE_BUFFER_HIGH) {
		bufferevent_disable(conn->bev, EV_READ);
		conn->client_blocked = 1;
	}
}

/* The client took our output: resume reading the upstream. */
void
edge_proxy_client_write(struct edge_conn *conn)
{
	if (conn->up_blocked && conn->up != NULL) {
		conn->up_blocked = 0;
		edge_upstream_reading(conn->up, 1);
	}
}

/* The upstream took our output: resume reading the client. */
static void
edge_upstream_write_cb(struct bufferevent *bev, void *arg)
{
	struct edge_upstream	*up = arg;
	struct edge_conn	*conn = up->conn;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	/*
	 * libevent calls this only once connected, possibly before the
	 * deferred BEV_EVENT_CONNECTED: back to writing with edge_flush.
	 */
	up->connected = 1;
	bufferevent_disable(bev, EV_WRITE);
	if (conn != NULL && conn->client_blocked) {
		conn->client_blocked = 0;
		bufferevent_enable(conn->bev, EV_READ);
	}
}

/*
 * Read at most len bytes from fd onto buf: bytes, 0 at EOF, -1 (errno).
 * With beyond, one more byte is asked for in the same call and dropped;
 * *beyond tells whether the socket held more than len bytes.
 */
static ssize_t
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
	struct edge_conn	*conn = up->conn;

	if (conn == NULL) {
		/* Idle in the pool: any byte or a close ends it. */
		edge_upstream_free(up);
		return;
	}
	edge_upstream_fill(conn);
	if (conn->up == up && up->eof)
		edge_upstream_closed(up);
}

/*
 * Read the upstream until its socket is drained (a short read), the
 * response is complete, or the client's output is full, relaying as the
 * bytes come, then write to the client once. Body bytes whose framing
 * needs no look (a known length after the head, until-close, a tunnel)
 * are read straight into the client's output; the rest goes through
 * up->in. Sets up->eof on a close or an error.
 */
static void
edge_upstream_fill(struct edge_conn *conn)
{
	struct edge_upstream	*up = conn->up;
	struct evbuffer		*out = bufferevent_get_output(conn->bev);
	struct evbuffer		*dst;
	size_t			 want, grow = EDGE_READ_MIN;
	ssize_t			 n;
	int			 direct, length, last, beyond = 0;

	for (;;) {
		length = conn->state == EDGE_CONN_PROXY && conn->resp_head &&
		    conn->resp_body == HTTP_BODY_LENGTH;
		direct = evbuffer_get_length(up->in) == 0 &&
		    (conn->state == EDGE_CONN_TUNNEL || length ||
		    (conn->state == EDGE_CONN_PROXY && conn->resp_head &&
		    conn->resp_body == HTTP_BODY_UNTIL_CLOSE));
		dst = direct ? out : up->in;
		if (direct && length)
			want = conn->resp_left < EDGE_READ_MAX ?
			    conn->resp_left : EDGE_READ_MAX;
		else if (conn->coalesce == 1 &&
		    conn->coalesce_want > evbuffer_get_length(up->in))
			/* One more: a response that ends there had no more. */
			want = conn->coalesce_want -
			    evbuffer_get_length(up->in) + 1;
		else
			want = grow;
		/*
		 * The read that ends a body also checks for bytes past it: an
		 * upstream sending those must not be pooled (edge_proxy_done).
		 */
		last = direct && length && want == conn->resp_left;
		n = edge_read(bufferevent_getfd(up->bev), dst, want,
		    last ? &beyond : NULL);
		if (n <= 0) {
			if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				log_debug("upstream read\tpeer=%s error=\"%s\"",
				    conn->peer, n == 0 ? "closed" :
				    strerror(errno));
				up->eof = 1;
			}
			break;
		}
		conn->resp_any = 1;
		if (direct && length)
			conn->resp_left -= n;
		if (beyond)
			up->junk = 1;
		/* Coalescing: hold everything until the body's start is in. */
		if (conn->coalesce != 1 ||
		    evbuffer_get_length(up->in) >= conn->coalesce_want) {
			edge_proxy_relay(conn);
			if (conn->up != up)
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
	edge_proxy_flush(conn);
}

/* Relay what the upstream sent and write it to the client. */
static void
edge_proxy_response(struct edge_conn *conn)
{
	edge_proxy_relay(conn);
	edge_proxy_flush(conn);
}

/* Relay what the upstream sent: heads, body, or tunnel bytes. */
static void
edge_proxy_relay(struct edge_conn *conn)
{
	struct evbuffer	*in = conn->up->in;
	struct evbuffer	*out = bufferevent_get_output(conn->bev);

	if (conn->state == EDGE_CONN_TUNNEL)
		evbuffer_add_buffer(out, in);
	else {
		while (!conn->resp_head && edge_proxy_response_head(conn) == 0)
			;
		if (conn->state == EDGE_CONN_PROXY && conn->resp_head)
			edge_proxy_response_body(conn);
	}
}

/* Write the client's output now; stop reading the upstream while it is full. */
static void
edge_proxy_flush(struct edge_conn *conn)
{
	struct evbuffer	*out = bufferevent_get_output(conn->bev);

	if (conn->state == EDGE_CONN_DEAD)
		return;
	edge_flush(conn->bev);
	if (conn->up != NULL &&
	    evbuffer_get_length(out) > EDGE_BUFFER_HIGH) {
		edge_upstream_reading(conn->up, 0);
		conn->up_blocked = 1;
	}
}

/*
 * Parse and forward one response head. 0 when a head was handled (look
 * for the next if it was 1xx), 1 when more bytes are needed or the
 * connection moved on (error, tunnel).
 */
static int
edge_proxy_response_head(struct edge_conn *conn)
{
	struct edge			*edge = conn->edge;
	struct evbuffer			*in = conn->up->in;
	struct evbuffer			*out = bufferevent_get_output(conn->bev);
	struct http_response_head	 rh;
	const struct http_header	*hd, *connection;
	struct edge_hbuf		 b;
	struct evbuffer_iovec		 v;
	const char			*p;
	char				 line[64];
	size_t				 len, i, want;
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
		edge_proxy_fail(conn, 502, "The upstream sent a malformed "
		    "response.");
		return 1;
	}
	upgrade = rh.status == 101;
	informational = rh.status >= 100 && rh.status < 200;
	if (upgrade && !conn->upgrade) {
		edge_proxy_fail(conn, 502, "The upstream switched protocols "
		    "unasked.");
		return 1;
	}
	if (informational && !upgrade && conn->minor == 0) {
		/* HTTP/1.0 clients know no interim responses. */
		evbuffer_drain(in, r);
		return 0;
	}

	connection = http_header_find(rh.headers, rh.nheaders, "connection");
	if (!informational) {
		if (http_response_body(&rh, conn->method, &conn->resp_body,
		    &conn->resp_left) != 0) {
			edge_proxy_fail(conn, 502, "The upstream response "
			    "framing is invalid.");
			return 1;
		}
		if (conn->resp_body == HTTP_BODY_CHUNKED)
			http_chunked_init(&conn->resp_chunked);
		conn->dechunk = conn->minor == 0 &&
		    conn->resp_body == HTTP_BODY_CHUNKED;
		if (rh.minor_version >= 1)
			conn->up_keepalive = connection == NULL ||
			    !http_header_has_token(connection, "close");
		else
			conn->up_keepalive = connection != NULL &&
			    http_header_has_token(connection, "keep-alive");
		if (conn->resp_body == HTTP_BODY_UNTIL_CLOSE)
			conn->up_keepalive = 0;
		/*
		 * Wait (briefly) for the head and the first EDGE_COALESCE
		 * bytes of the body to go out in one write: the client then
		 * wakes once, not once per segment the upstream sent.
		 */
		if (conn->resp_body == HTTP_BODY_LENGTH && conn->coalesce == 0) {
			want = r + (conn->resp_left < EDGE_COALESCE ?
			    conn->resp_left : EDGE_COALESCE);
			if (evbuffer_get_length(in) < want) {
				/* edge_upstream_fill holds back until then. */
				conn->coalesce = 1;
				conn->coalesce_want = want;
				edge_conn_timer(conn, EDGE_COALESCE_MS);
				return 1;
			}
		}
		conn->coalesce = 2;
		/* Without a framing the client can follow, it must close. */
		conn->client_ka = conn->keepalive && conn->req_done &&
		    !conn->draining && !edge->shutting_down &&
		    conn->resp_body != HTTP_BODY_UNTIL_CLOSE && !conn->dechunk;
	}

	b.p = edge->scratch;
	b.size = edge->scratch_size;
	b.len = 0;
	b.overflow = 0;
	snprintf(line, sizeof line, "HTTP/1.1 %d ", rh.status);
	edge_hbuf_str(&b, line);
	edge_hbuf_add(&b, rh.reason, rh.reason_len);
	edge_hbuf_add(&b, "\r\n", 2);
	for (i = 0; i < rh.nheaders; i++) {
		hd = &rh.headers[i];
		if (edge_hop_by_hop(rh.headers, rh.nheaders, hd, upgrade,
		    connection != NULL))
			continue;
		if (conn->dechunk && edge_name_is(hd, "transfer-encoding", 17))
			continue;
		edge_hbuf_header(&b, hd);
	}
	if (upgrade)
		edge_hbuf_str(&b, "Connection: upgrade\r\n");
	else if (!informational && !conn->client_ka)
		edge_hbuf_str(&b, "Connection: close\r\n");
	else if (!informational && conn->minor == 0)
		edge_hbuf_str(&b, "Connection: keep-alive\r\n");
	edge_hbuf_add(&b, "\r\n", 2);
	evbuffer_drain(in, r);
	if (b.overflow) {
		edge_proxy_fail(conn, 502, "The upstream response head is "
		    "too large.");
		return 1;
	}
	evbuffer_add(out, b.p, b.len);
	conn->resp_sent = 1;

	if (upgrade) {
		/* From here on: bytes both ways until either side closes. */
		conn->state = EDGE_CONN_TUNNEL;
		conn->resp_head = 1;
		conn->up_keepalive = 0;
		conn->req_done = 1;
		edge_conn_timer(conn, -1);
		evbuffer_add_buffer(out, in);
		edge_proxy_client_read(conn);
		return 1;
	}
	if (informational)
		return 0;
	conn->resp_head = 1;
	edge_conn_timer(conn, -1);
	return 0;
}

/* A decoded chunk for an HTTP/1.0 client. */
static void
edge_proxy_dechunk_cb(void *arg, const char *data, size_t len)
{
	struct edge_conn	*conn = arg;

	evbuffer_add(bufferevent_get_output(conn->bev), data, len);
}

/* Forward response body bytes per the response's framing. */
static void
edge_proxy_response_body(struct edge_conn *conn)
{
	struct evbuffer		*in = conn->up->in;
	struct evbuffer		*out = bufferevent_get_output(conn->bev);
	struct evbuffer_iovec	 v[8];
	size_t			 len, used;
	ssize_t			 r;
	int			 i, n, done = 0;

	switch (conn->resp_body) {
	case HTTP_BODY_NONE:
		done = 1;
		break;
	case HTTP_BODY_LENGTH:
		len = evbuffer_get_length(in);
		if (len > conn->resp_left)
			len = conn->resp_left;
		evbuffer_remove_buffer(in, out, len);
		conn->resp_left -= len;
		done = conn->resp_left == 0;
		break;
	case HTTP_BODY_CHUNKED:
		while (!conn->resp_chunked.done && evbuffer_get_length(in) > 0) {
			n = evbuffer_peek(in, -1, NULL, v, nitems(v));
			if (n > (int)nitems(v))
				n = nitems(v);
			used = 0;
			for (i = 0; i < n && !conn->resp_chunked.done; i++) {
				r = http_chunked_scan(&conn->resp_chunked,
				    v[i].iov_base, v[i].iov_len,
				    conn->dechunk ? edge_proxy_dechunk_cb :
				    NULL, conn);
				if (r < 0) {
					edge_proxy_fail(conn, 502, "The "
					    "upstream sent a malformed "
					    "chunked body.");
					return;
				}
				used += r;
			}
			if (conn->dechunk)
				evbuffer_drain(in, used);
			else
				evbuffer_remove_buffer(in, out, used);
		}
		done = conn->resp_chunked.done;
		break;
	case HTTP_BODY_UNTIL_CLOSE:
		evbuffer_add_buffer(out, in);
		break;
	}
	if (done)
		edge_proxy_done(conn);
}

/* The response is complete: pool the upstream, go on with the client. */
static void
edge_proxy_done(struct edge_conn *conn)
{
	int	reuse;

	reuse = conn->up_keepalive && conn->req_done &&
	    evbuffer_get_length(conn->up->in) == 0;
	edge_proxy_release(conn, reuse);
	edge_conn_finish(conn, conn->client_ka);
}

/* Connected, or a write or the connect failed. */
static void
edge_upstream_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct edge_upstream	*up = arg;
	struct edge_conn	*conn = up->conn;

	if (conn == NULL) {
		edge_upstream_free(up);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		up->connected = 1;
		edge_conn_timer(conn, EDGE_RESPONSE_TIMEOUT_MS);
		return;
	}
	log_debug("upstream error\tpeer=%s error=\"%s\"", conn->peer,
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
			return (1);
	}
	return (0);
}

/*
 * The upstream closed, reset or failed to connect (up->eof is set): end
 * the tunnel or the response, retry once, or answer with an error.
 */
static void
edge_upstream_closed(struct edge_upstream *up)
{
	struct edge_conn	*conn = up->conn;
	struct evbuffer		*out = bufferevent_get_output(conn->bev);
	struct edge_upstream	*fresh;

	if (conn->state == EDGE_CONN_TUNNEL) {
		edge_proxy_release(conn, 0);
		edge_conn_finish(conn, 0);
		return;
	}
	if (conn->coalesce == 1) {
		/* Bytes held back for coalescing go first. */
		conn->coalesce = 2;
		edge_proxy_response(conn);
		if (conn->up != up)
			return;
	}
	if (!conn->resp_any) {
		/* A pooled connection the upstream closed as we reused it. */
		if (up->reused && !conn->retried && conn->head_copy_len > 0) {
			conn->retried = 1;
			edge_proxy_release(conn, 0);
			fresh = edge_upstream_connect(conn->edge,
			    (struct sockaddr *)&conn->up_ss, conn->up_sslen);
			if (fresh != NULL) {
				bufferevent_write(fresh->bev, conn->head_copy,
				    conn->head_copy_len);
				edge_proxy_attach(conn, fresh);
				return;
			}
		}
		edge_proxy_fail(conn, 502, up->connected ? "The upstream "
		    "closed the connection without answering." :
		    "The upstream refused the connection.");
		return;
	}
	if (!conn->resp_head) {
		edge_proxy_fail(conn, 502, "The upstream closed the "
		    "connection in the middle of its response head.");
		return;
	}
	/*
	 * Until-close: this is the end. Otherwise the body is truncated:
	 * flush what came, then close so the client sees it.
	 */
	evbuffer_add_buffer(out, up->in);
	edge_proxy_release(conn, 0);
	edge_conn_finish(conn, 0);
}

/* The connect or response-head deadline passed. */
void
edge_proxy_timeout(struct edge_conn *conn)
{
	if (conn->up == NULL || conn->resp_head)
		return;
	if (conn->coalesce == 1) {
		/* The body is slow: send what there is. */
		conn->coalesce = 2;
		edge_conn_timer(conn, EDGE_RESPONSE_TIMEOUT_MS);
		edge_proxy_response(conn);
		return;
	}
	if (!conn->up->connected)
		edge_proxy_fail(conn, 502, "The upstream did not accept the "
		    "connection in time.");
	else
		edge_proxy_fail(conn, 504, "The upstream did not answer in "
		    "time.");
}

/* Compare two upstream addresses by family, address and port or path. */
static int
edge_addr_eq(const struct sockaddr_storage *a, socklen_t alen,
    const struct sockaddr *b, socklen_t blen)
{
	const struct sockaddr_in	*a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6	*a6 = (const void *)a, *b6 = (const void *)b;
	const struct sockaddr_un	*au = (const void *)a, *bu = (const void *)b;

	if (a->ss_family != b->sa_family)
		return 0;
	switch (b->sa_family) {
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

/* An idle pooled connection, or a new one being connected. */
static struct edge_upstream *
edge_upstream_get(struct edge *edge, const struct sockaddr *sa,
    socklen_t salen)
{
	struct edge_pool	*pool;
	struct edge_upstream	*up;

	TAILQ_FOREACH(pool, &edge->pools, entry) {
		if (!edge_addr_eq(&pool->ss, pool->sslen, sa, salen))
			continue;
		if ((up = TAILQ_FIRST(&pool->idle)) == NULL)
			break;
		TAILQ_REMOVE(&pool->idle, up, entry);
		pool->nidle--;
		up->pool = NULL;
		up->reused = 1;
		return up;
	}
	return edge_upstream_connect(edge, sa, salen);
}

/* Open a new upstream connection (non-blocking connect). */
static struct edge_upstream *
edge_upstream_connect(struct edge *edge, const struct sockaddr *sa,
    socklen_t salen)
{
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
	    bufferevent_socket_connect(up->bev, sa, salen) != 0) {
		log_debug("upstream connect failed: %s",
		    strerror(EVUTIL_SOCKET_ERROR()));
		edge_upstream_free(up);
		return NULL;
	}
	return up;
}

/* Close an upstream connection, wherever it is. */
static void
edge_upstream_free(struct edge_upstream *up)
{
	if (up->pool != NULL) {
		TAILQ_REMOVE(&up->pool->idle, up, entry);
		up->pool->nidle--;
	}
	if (up->conn != NULL)
		up->conn->up = NULL;
	if (up->rev != NULL)
		event_free(up->rev);
	if (up->in != NULL)
		evbuffer_free(up->in);
	bufferevent_free(up->bev);
	free(up);
}

/* An idle pooled connection closed. */
static void
edge_pool_event_cb(struct bufferevent *bev, short what, void *arg)
{
	edge_upstream_free(arg);
}

/*
 * Detach the client's upstream connection: into the pool when reuse is
 * allowed and there is room, else closed.
 */
void
edge_proxy_release(struct edge_conn *conn, int reuse)
{
	struct edge		*edge = conn->edge;
	struct edge_upstream	*up = conn->up;
	struct edge_pool	*pool;

	if (conn->client_blocked) {
		conn->client_blocked = 0;
		if (conn->state != EDGE_CONN_DEAD)
			bufferevent_enable(conn->bev, EV_READ);
	}
	conn->up_blocked = 0;
	if (up == NULL)
		return;
	conn->up = NULL;
	up->conn = NULL;
	if (!reuse || up->eof || up->junk || edge->shutting_down ||
	    !up->connected) {
		edge_upstream_free(up);
		return;
	}
	TAILQ_FOREACH(pool, &edge->pools, entry) {
		if (edge_addr_eq(&pool->ss, pool->sslen,
		    (struct sockaddr *)&conn->up_ss, conn->up_sslen))
			break;
	}
	if (pool == NULL) {
		pool = xcalloc(1, sizeof *pool);
		memcpy(&pool->ss, &conn->up_ss, conn->up_sslen);
		pool->sslen = conn->up_sslen;
		TAILQ_INIT(&pool->idle);
		TAILQ_INSERT_HEAD(&edge->pools, pool, entry);
	}
	if (pool->nidle >= EDGE_POOL_MAX_IDLE) {
		edge_upstream_free(up);
		return;
	}
	up->pool = pool;
	up->idle_since = time_mono_ms();
	TAILQ_INSERT_HEAD(&pool->idle, up, entry);
	pool->nidle++;
	/* Any byte or close ends it: edge_upstream_read_cb sees no conn. */
	bufferevent_setcb(up->bev, NULL, NULL, edge_pool_event_cb, up);
	edge_upstream_reading(up, 1);
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
			edge_upstream_free(up);
		}
		if (pool->nidle == 0) {
			TAILQ_REMOVE(&edge->pools, pool, entry);
			free(pool);
		}
	}
}

/* Free every pool and idle connection. */
void
edge_pool_free(struct edge *edge)
{
	edge_pool_sweep(edge, 1);
}
