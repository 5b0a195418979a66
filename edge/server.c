/*
 * The front door: listeners, client connections and their state machine,
 * request heads, the API exchange, error pages and shutdown. Proxying to
 * upstreams lives in proxy.c.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	edge_accept_error_cb(struct evconnlistener *, void *);
static void	edge_accept_resume_cb(evutil_socket_t, short, void *);
static void	edge_reap_cb(evutil_socket_t, short, void *);
static void	edge_sweep_cb(evutil_socket_t, short, void *);
static void	edge_grace_cb(evutil_socket_t, short, void *);
static void	edge_conn_read_cb(struct bufferevent *, void *);
static void	edge_conn_write_cb(struct bufferevent *, void *);
static void	edge_conn_event_cb(struct bufferevent *, short, void *);
static void	edge_conn_timer_cb(evutil_socket_t, short, void *);
static void	edge_conn_request(struct edge_conn *,
		    const struct http_request_head *, size_t);
static void	edge_conn_shut(struct edge_conn *);
static void	edge_api_start(struct edge_conn *,
		    const struct http_request_head *, size_t);
static void	edge_api_body(struct edge_conn *);
static void	edge_api_data_cb(void *, const char *, size_t);
static void	edge_api_send(void *, struct http_exchange *);
static int	edge_head_complete(const char *, size_t, size_t);
static void	edge_format_peer(const struct sockaddr *, char *, size_t,
		    char *, size_t);

static const struct http_exchange_transport edge_transport = {
	edge_api_send
};

/* Bind one listener; -1 with *cause on failure. */
static int
edge_listen(struct edge *edge, const struct cfg_addr *a, char **cause)
{
	struct edge_listener	*l = &edge->listeners[edge->nlisteners];

	l->lev = evconnlistener_new_bind(edge->base, edge_accept_cb, edge,
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_CLOSE_ON_FREE,
	    1024, (const struct sockaddr *)&a->ss, a->sslen);
	if (l->lev == NULL) {
		xasprintf(cause, "listen %s: %s", a->text, strerror(errno));
		return -1;
	}
	evconnlistener_set_error_cb(l->lev, edge_accept_error_cb);
	l->sslen = sizeof l->ss;
	if (getsockname(evconnlistener_get_fd(l->lev),
	    (struct sockaddr *)&l->ss, &l->sslen) != 0) {
		memcpy(&l->ss, &a->ss, a->sslen);
		l->sslen = a->sslen;
	}
	edge->nlisteners++;
	log_info("listening\taddr=%s", a->text);
	return 0;
}

struct edge *
edge_new(struct event_base *base, const struct config *cfg,
    struct control *ctl, char **cause)
{
	struct edge	*edge;
	struct timeval	 tv = { EDGE_POOL_SWEEP_MS / 1000, 0 };
	size_t		 i;

	edge = xcalloc(1, sizeof *edge);
	edge->base = base;
	edge->cfg = cfg;
	edge->ctl = ctl;
	TAILQ_INIT(&edge->conns);
	TAILQ_INIT(&edge->dead);
	TAILQ_INIT(&edge->pools);
	/* Room for a rewritten head: at most twice the received one. */
	edge->scratch_size = 2 * HTTP_MAX_HEAD_SIZE + 1024;
	edge->scratch = xmalloc(edge->scratch_size);
	edge->accept_ev = evtimer_new(base, edge_accept_resume_cb, edge);
	edge->reap_ev = event_new(base, -1, 0, edge_reap_cb, edge);
	edge->sweep_ev = event_new(base, -1, EV_PERSIST, edge_sweep_cb, edge);
	edge->grace_ev = evtimer_new(base, edge_grace_cb, edge);
	evtimer_add(edge->sweep_ev, &tv);

	edge->listeners = xcalloc(cfg->nlisten + 1, sizeof *edge->listeners);
	for (i = 0; i < cfg->nlisten; i++) {
		if (edge_listen(edge, &cfg->listen[i], cause) != 0)
			goto fail;
	}
	if (cfg->ntls_listen > 0)
		log_warnx("TLS is not implemented yet; tls_listen ignored"
		    "\tcount=%zu", cfg->ntls_listen);
	return edge;

fail:
	edge_free(edge);
	return NULL;
}

/* The address a listener is bound to (the real port when 0 was asked). */
int
edge_listener_addr(struct edge *edge, size_t i, struct sockaddr_storage *ss,
    socklen_t *sslen)
{
	if (i >= edge->nlisteners || edge->listeners[i].lev == NULL)
		return -1;
	memcpy(ss, &edge->listeners[i].ss, edge->listeners[i].sslen);
	*sslen = edge->listeners[i].sslen;
	return 0;
}

/* Format "ip:port" and "ip" of a peer. */
static void
edge_format_peer(const struct sockaddr *sa, char *peer, size_t plen,
    char *ip, size_t iplen)
{
	const struct sockaddr_in	*sin = (const void *)sa;
	const struct sockaddr_in6	*sin6 = (const void *)sa;

	switch (sa->sa_family) {
	case AF_INET:
		inet_ntop(AF_INET, &sin->sin_addr, ip, iplen);
		snprintf(peer, plen, "%s:%u", ip, ntohs(sin->sin_port));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, iplen);
		snprintf(peer, plen, "[%s]:%u", ip, ntohs(sin6->sin6_port));
		break;
	default:
		snprintf(ip, iplen, "unix");
		snprintf(peer, plen, "unix");
		break;
	}
}

/* A new client connection. */
static void
edge_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct edge		*edge = arg;
	struct edge_conn	*conn;
	struct timeval		 wtv = { EDGE_WRITE_TIMEOUT_S, 0 };
	int			 one = 1;

	if (edge->shutting_down) {
		close(fd);
		return;
	}
	/* Small responses must leave at once, not wait for Nagle. */
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

	conn = xcalloc(1, sizeof *conn);
	conn->edge = edge;
	conn->state = EDGE_CONN_HEAD;
	edge_format_peer(sa, conn->peer, sizeof conn->peer, conn->peer_ip,
	    sizeof conn->peer_ip);
	conn->bev = bufferevent_socket_new(edge->base, fd,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (conn->bev == NULL) {
		log_warnx("bufferevent_socket_new failed\tpeer=%s", conn->peer);
		close(fd);
		free(conn);
		return;
	}
	conn->timer = evtimer_new(edge->base, edge_conn_timer_cb, conn);
	TAILQ_INSERT_TAIL(&edge->conns, conn, entry);

	bufferevent_setcb(conn->bev, edge_conn_read_cb, edge_conn_write_cb,
	    edge_conn_event_cb, conn);
	bufferevent_set_max_single_read(conn->bev, EDGE_IO_MAX);
	bufferevent_set_max_single_write(conn->bev, EDGE_IO_MAX);
	/* Stop reading a client that queues more than we would process. */
	bufferevent_setwatermark(conn->bev, EV_READ, 0, EDGE_BUFFER_HIGH);
	/* A client that never takes our output is cut after a while. */
	bufferevent_set_timeouts(conn->bev, NULL, &wtv);
	/*
	 * EV_WRITE (on by default) only while edge_flush leaves bytes
	 * behind: the write callback turns it off again.
	 */
	bufferevent_disable(conn->bev, EV_WRITE);
	bufferevent_enable(conn->bev, EV_READ);
	/* A new connection gets the head timeout for its first request. */
	edge_conn_timer(conn, EDGE_HEAD_TIMEOUT_MS);
}

/* accept failed: back off on descriptor exhaustion instead of spinning. */
static void
edge_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct edge	*edge = arg;
	struct timeval	 tv = { 0, EDGE_ACCEPT_BACKOFF_MS * 1000 };
	int		 error = EVUTIL_SOCKET_ERROR();
	size_t		 i;

	if (error != EMFILE && error != ENFILE && error != ENOBUFS &&
	    error != ENOMEM) {
		log_warnx("accept: %s", strerror(error));
		return;
	}
	log_warnx("accept: %s; pausing listeners", strerror(error));
	for (i = 0; i < edge->nlisteners; i++)
		evconnlistener_disable(edge->listeners[i].lev);
	evtimer_add(edge->accept_ev, &tv);
}

/* End of the accept backoff. */
static void
edge_accept_resume_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge	*edge = arg;
	size_t		 i;

	if (edge->shutting_down)
		return;
	for (i = 0; i < edge->nlisteners; i++)
		evconnlistener_enable(edge->listeners[i].lev);
}

/*
 * Write what is queued now, in this turn of the loop. A bufferevent would
 * first register for EV_WRITE (an epoll_ctl), wait a turn, write, then
 * unregister; writing at once saves both calls and a wakeup per response.
 * Only what the socket does not take waits for EV_WRITE. Errors are left
 * to the bufferevent, which reports them through the event callback.
 */
void
edge_flush(struct bufferevent *bev)
{
	struct evbuffer	*out = bufferevent_get_output(bev);

	if (evbuffer_get_length(out) == 0 ||
	    (bufferevent_get_enabled(bev) & EV_WRITE))
		return;
	/* The bufferevent keeps its output's start frozen; its own write
	 * callback thaws it around the write exactly like this. */
	evbuffer_unfreeze(out, 1);
	evbuffer_write(out, bufferevent_getfd(bev));
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(bev, EV_WRITE);
}

/* Arm (ms >= 0) or clear (ms < 0) the connection's one timer. */
void
edge_conn_timer(struct edge_conn *conn, int64_t ms)
{
	struct timeval	tv;

	if (ms < 0) {
		evtimer_del(conn->timer);
		return;
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(conn->timer, &tv);
}

/*
 * Close a client connection now. The memory is freed later by the reaper,
 * so callers up the stack may still look at conn->state (DEAD).
 */
void
edge_conn_close(struct edge_conn *conn)
{
	struct edge	*edge = conn->edge;

	if (conn->state == EDGE_CONN_DEAD)
		return;
	if (conn->ex != NULL) {
		/* Dispatched: control still answers; else it is ours. */
		if (conn->state == EDGE_CONN_API_WAIT)
			http_exchange_detach(conn->ex);
		else
			http_exchange_free(conn->ex);
		conn->ex = NULL;
	}
	conn->state = EDGE_CONN_DEAD;
	edge_proxy_release(conn, 0);
	if (conn->preview_id[0] != '\0') {
		control_activity(edge->ctl, conn->preview_id, ACTIVITY_CONN,
		    -1);
		conn->preview_id[0] = '\0';
	}
	bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
	bufferevent_setcb(conn->bev, NULL, NULL, NULL, NULL);
	evtimer_del(conn->timer);
	TAILQ_REMOVE(&edge->conns, conn, entry);
	TAILQ_INSERT_TAIL(&edge->dead, conn, entry);
	event_active(edge->reap_ev, 0, 0);
}

/* Free the connections closed since the last run; finish a shutdown. */
static void
edge_reap_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge		*edge = arg;
	struct edge_conn	*conn;
	void			(*done)(void *);

	while ((conn = TAILQ_FIRST(&edge->dead)) != NULL) {
		TAILQ_REMOVE(&edge->dead, conn, entry);
		bufferevent_free(conn->bev);
		event_free(conn->timer);
		free(conn->head_copy);
		free(conn);
	}
	if (edge->shutting_down && edge->done != NULL &&
	    TAILQ_EMPTY(&edge->conns)) {
		evtimer_del(edge->grace_ev);
		done = edge->done;
		edge->done = NULL;
		done(edge->done_arg);
	}
}

/* Expire idle upstream connections. */
static void
edge_sweep_cb(evutil_socket_t fd, short events, void *arg)
{
	edge_pool_sweep(arg, 0);
}

/*
 * The response is out (or queued): go on with the next request on this
 * connection, or close it once the output is flushed.
 */
void
edge_conn_finish(struct edge_conn *conn, int keepalive)
{
	struct evbuffer	*in = bufferevent_get_input(conn->bev);

	if (conn->state == EDGE_CONN_DEAD)
		return;
	edge_flush(conn->bev);
	if (conn->req_body != HTTP_BODY_NONE && !conn->req_done)
		conn->linger = 1;
	if (conn->ex != NULL) {
		/* Refused before dispatch: the exchange is still ours. */
		http_exchange_free(conn->ex);
		conn->ex = NULL;
	}
	conn->method[0] = '\0';
	conn->json_errors = 0;
	if (!keepalive || conn->draining || conn->edge->shutting_down) {
		conn->state = EDGE_CONN_CLOSING;
		edge_conn_timer(conn, -1);
		if (evbuffer_get_length(in) > 0)
			conn->linger = 1;
		if (evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0)
			edge_conn_shut(conn);
		return;
	}
	conn->state = EDGE_CONN_HEAD;
	conn->started = 0;
	conn->scanned = 0;
	if (evbuffer_get_length(in) > 0) {
		/* Pipelined bytes: handle them from the loop, not recursively. */
		edge_conn_timer(conn, EDGE_HEAD_TIMEOUT_MS);
		bufferevent_trigger(conn->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	} else
		edge_conn_timer(conn, EDGE_IDLE_TIMEOUT_MS);
}

/*
 * The last response is flushed: close, or first drain what the client is
 * still sending so that its kernel does not turn our answer into a reset.
 */
static void
edge_conn_shut(struct edge_conn *conn)
{
	if (!conn->linger) {
		edge_conn_close(conn);
		return;
	}
	shutdown(bufferevent_getfd(conn->bev), SHUT_WR);
	conn->state = EDGE_CONN_LINGER;
	evbuffer_drain(bufferevent_get_input(conn->bev),
	    evbuffer_get_length(bufferevent_get_input(conn->bev)));
	bufferevent_enable(conn->bev, EV_READ);
	edge_conn_timer(conn, EDGE_LINGER_MS);
}

/* Append a minimal HTML escape of s to b. */
static void
edge_html_escape(struct evbuffer *b, const char *s)
{
	for (; *s != '\0'; s++) {
		switch (*s) {
		case '<':
			evbuffer_add(b, "&lt;", 4);
			break;
		case '>':
			evbuffer_add(b, "&gt;", 4);
			break;
		case '&':
			evbuffer_add(b, "&amp;", 5);
			break;
		case '"':
			evbuffer_add(b, "&quot;", 6);
			break;
		default:
			evbuffer_add(b, s, 1);
			break;
		}
	}
}

/* The API error code for a status edge itself answers with. */
static const char *
edge_error_code(int status)
{
	switch (status) {
	case 400:
	case 408:
	case 431:
		return "bad_request";
	case 404:
		return "not_found";
	case 413:
		return "payload_too_large";
	case 503:
		return "unavailable";
	default:
		return "internal";
	}
}

/*
 * Answer the current request with an error: a small HTML page, or the API
 * JSON error on API hosts. Refusals of a broken request close the
 * connection; the others keep it if the request body was consumed.
 */
void
edge_conn_error(struct edge_conn *conn, int status, const char *message,
    const char *extra_header)
{
	struct evbuffer	*out = bufferevent_get_output(conn->bev);
	struct evbuffer	*body;
	const char	*text = http_status_text(status), *ctype;
	int		 keepalive;

	if (conn->state == EDGE_CONN_DEAD)
		return;
	edge_proxy_release(conn, 0);
	keepalive = conn->keepalive &&
	    (conn->req_body == HTTP_BODY_NONE || conn->req_done) &&
	    status != 400 && status != 408 && status != 413 && status != 431;

	body = evbuffer_new();
	if (conn->json_errors) {
		ctype = "application/json";
		evbuffer_add_printf(body, "{\"error\":{\"code\":\"%s\","
		    "\"message\":\"%s\"}}\n", edge_error_code(status), message);
	} else {
		ctype = "text/html; charset=utf-8";
		evbuffer_add_printf(body, "<!doctype html>\n<html><head>"
		    "<meta charset=\"utf-8\"><title>%d %s</title></head>\n"
		    "<body style=\"font-family:sans-serif\"><h1>%d %s</h1>\n"
		    "<p>", status, text, status, text);
		edge_html_escape(body, message);
		evbuffer_add_printf(body, "</p></body></html>\n");
	}
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nCache-Control: no-store\r\n%s%s%s\r\n",
	    status, text, ctype, evbuffer_get_length(body),
	    keepalive ? "" : "Connection: close\r\n",
	    extra_header != NULL ? extra_header : "",
	    extra_header != NULL ? "\r\n" : "");
	if (strcmp(conn->method, "HEAD") != 0)
		evbuffer_add_buffer(out, body);
	evbuffer_free(body);
	log_debug("edge error\tstatus=%d peer=%s", status, conn->peer);
	edge_conn_finish(conn, keepalive);
}

/* Bytes from the client. */
static void
edge_conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct edge_conn	*conn = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);

	switch (conn->state) {
	case EDGE_CONN_HEAD:
		edge_conn_read(conn);
		break;
	case EDGE_CONN_API_BODY:
		edge_api_body(conn);
		break;
	case EDGE_CONN_PROXY:
	case EDGE_CONN_TUNNEL:
		edge_proxy_client_read(conn);
		break;
	case EDGE_CONN_LINGER:
		evbuffer_drain(in, evbuffer_get_length(in));
		break;
	case EDGE_CONN_API_WAIT:
	case EDGE_CONN_CLOSING:
	case EDGE_CONN_DEAD:
		/* Pipelined bytes wait; the read watermark bounds them. */
		break;
	}
}

/* Our output to the client drained. */
static void
edge_conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct edge_conn	*conn = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	/* Drained: back to writing directly (edge_flush). */
	bufferevent_disable(bev, EV_WRITE);
	switch (conn->state) {
	case EDGE_CONN_CLOSING:
		edge_conn_shut(conn);
		break;
	case EDGE_CONN_PROXY:
	case EDGE_CONN_TUNNEL:
		edge_proxy_client_write(conn);
		break;
	case EDGE_CONN_HEAD:
		/* Resume pipelined requests held back by a full output. */
		if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
			edge_conn_read(conn);
		break;
	default:
		break;
	}
}

/* The client closed, reset, or stopped taking our output. */
static void
edge_conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct edge_conn	*conn = arg;

	if (what & BEV_EVENT_ERROR)
		log_debug("client error\tpeer=%s error=\"%s\"", conn->peer,
		    strerror(EVUTIL_SOCKET_ERROR()));
	else if (what & BEV_EVENT_TIMEOUT)
		log_debug("client write timeout\tpeer=%s", conn->peer);
	edge_conn_close(conn);
}

/* The connection's deadline for its current state passed. */
static void
edge_conn_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_conn	*conn = arg;

	switch (conn->state) {
	case EDGE_CONN_HEAD:
		/* An idle keep-alive connection just goes; a partial head 408s. */
		if (conn->started &&
		    evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0) {
			conn->keepalive = 0;
			edge_conn_error(conn, 408, "The request head took too "
			    "long to arrive.", NULL);
		} else
			edge_conn_close(conn);
		break;
	case EDGE_CONN_API_BODY:
		edge_conn_error(conn, 408, "The request body stopped "
		    "arriving.", NULL);
		break;
	case EDGE_CONN_PROXY:
		edge_proxy_timeout(conn);
		break;
	default:
		edge_conn_close(conn);
		break;
	}
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
void
edge_conn_read(struct edge_conn *conn)
{
	struct evbuffer			*in = bufferevent_get_input(conn->bev);
	struct http_request_head	 head;
	const char			*p;
	size_t				 len;
	int				 r;

	if (conn->state != EDGE_CONN_HEAD)
		return;
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
		edge_conn_timer(conn, EDGE_HEAD_TIMEOUT_MS);
	}
	if (len > HTTP_MAX_HEAD_SIZE)
		len = HTTP_MAX_HEAD_SIZE;
	p = (const char *)evbuffer_pullup(in, len);
	if (!edge_head_complete(p, len, conn->scanned)) {
		conn->scanned = len;
		if (len == HTTP_MAX_HEAD_SIZE) {
			conn->keepalive = 0;
			edge_conn_error(conn, 431, "The request head is too "
			    "large.", NULL);
		}
		return;
	}
	conn->scanned = 0;
	r = http_parse_request(p, len, &head);
	if (r == -2 && len < HTTP_MAX_HEAD_SIZE)
		return;
	if (r < 0) {
		conn->keepalive = 0;
		conn->linger = 1;
		edge_conn_error(conn, r == -2 ? 431 : 400,
		    "The request is malformed.", NULL);
		return;
	}
	edge_conn_request(conn, &head, r);
}

/* Split a sockaddr for a [route]; -1 if the unix path does not fit. */
static int
edge_route_addr(const struct cfg_route *r, struct sockaddr_storage *ss,
    socklen_t *sslen)
{
	struct sockaddr_un	*sun = (struct sockaddr_un *)ss;

	memset(ss, 0, sizeof *ss);
	if (!r->is_unix) {
		memcpy(ss, &r->ss, r->sslen);
		*sslen = r->sslen;
		return 0;
	}
	if (strlen(r->unix_path) >= sizeof sun->sun_path)
		return -1;
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, r->unix_path, strlen(r->unix_path) + 1);
	*sslen = sizeof *sun;
	return 0;
}

/* Handle one parsed request head of head_len bytes at the input's start. */
static void
edge_conn_request(struct edge_conn *conn, const struct http_request_head *h,
    size_t head_len)
{
	struct edge			*edge = conn->edge;
	struct evbuffer			*in = bufferevent_get_input(conn->bev);
	const struct http_header	*host = NULL, *connection;
	struct edge_host_match		 m;
	struct control_target		 target;
	struct control_wait		*wait;
	struct sockaddr_storage		 ss;
	socklen_t			 sslen;
	const char			*why = NULL;
	size_t				 i;
	int				 nhost = 0;

	conn->minor = h->minor_version;
	conn->json_errors = 0;
	conn->linger = 0;
	conn->req_body = HTTP_BODY_NONE;
	conn->req_done = 1;
	connection = http_header_find(h->headers, h->nheaders, "connection");
	if (conn->minor >= 1)
		conn->keepalive = connection == NULL ||
		    !http_header_has_token(connection, "close");
	else
		conn->keepalive = connection != NULL &&
		    http_header_has_token(connection, "keep-alive");
	if (h->method_len >= sizeof conn->method) {
		conn->method[0] = '\0';
		why = "The method is too long.";
	} else {
		memcpy(conn->method, h->method, h->method_len);
		conn->method[h->method_len] = '\0';
	}
	for (i = 0; i < h->nheaders; i++) {
		if (h->headers[i].name_len == 4 &&
		    strncasecmp(h->headers[i].name, "host", 4) == 0) {
			host = &h->headers[i];
			nhost++;
		}
	}
	/* Only origin-form: this is a reverse proxy, not a forward one. */
	if (why == NULL && (h->target_len == 0 || h->target[0] != '/'))
		why = "Only origin-form request targets (\"/path\") are "
		    "accepted.";
	else if (why == NULL && nhost > 1)
		why = "The request has more than one Host header.";
	else if (why == NULL && nhost == 0 && conn->minor >= 1)
		why = "HTTP/1.1 requests need a Host header.";

	if (host != NULL)
		edge_route_match(edge->cfg, host->value, host->value_len, &m);
	else
		edge_route_match(edge->cfg, "", 0, &m);
	conn->kind = m.kind;
	conn->json_errors = m.kind == EDGE_HOST_API;
	if (why == NULL && http_request_body(h, &conn->req_body,
	    &conn->req_left) != 0)
		why = "The request body framing is invalid.";
	if (why != NULL) {
		conn->keepalive = 0;
		conn->linger = 1;
		evbuffer_drain(in, head_len);
		edge_conn_error(conn, 400, why, NULL);
		return;
	}
	conn->req_done = conn->req_body == HTTP_BODY_NONE ||
	    (conn->req_body == HTTP_BODY_LENGTH && conn->req_left == 0);
	if (conn->req_body == HTTP_BODY_CHUNKED)
		http_chunked_init(&conn->req_chunked);

	switch (m.kind) {
	case EDGE_HOST_API:
		edge_api_start(conn, h, head_len);
		return;
	case EDGE_HOST_ROUTE:
		if (edge_route_addr(m.route, &ss, &sslen) != 0) {
			evbuffer_drain(in, head_len);
			edge_conn_error(conn, 502, "The route's upstream "
			    "address is invalid.", NULL);
			return;
		}
		edge_proxy_start(conn, h, head_len, (struct sockaddr *)&ss,
		    sslen);
		return;
	case EDGE_HOST_BAD_PREVIEW:
		evbuffer_drain(in, head_len);
		edge_conn_error(conn, 404, "No sandbox here.", NULL);
		return;
	case EDGE_HOST_PREVIEW:
		break;
	}

	memset(&target, 0, sizeof target);
	if (control_target_lookup(edge->ctl, m.sandbox_id, m.port, &target,
	    NULL, NULL, &wait) == CONTROL_LOOKUP_HELD) {
		/* Interim, until the edge holds requests: come back soon. */
		control_wait_cancel(wait);
		target.kind = TARGET_UNAVAILABLE;
		target.message = "The sandbox is starting.";
		target.retry_after_s = 1;
	}
	switch (target.kind) {
	case TARGET_OK:
		break;
	case TARGET_UNKNOWN:
		evbuffer_drain(in, head_len);
		edge_conn_error(conn, 404, "No sandbox here.", NULL);
		return;
	case TARGET_ERROR:
		evbuffer_drain(in, head_len);
		edge_conn_error(conn, 502, target.message != NULL ?
		    target.message : "The sandbox is in error.", NULL);
		return;
	case TARGET_UNAVAILABLE:
		/*
		 * Hold-and-wake goes here: park the request, ask control to
		 * start the sandbox, and proxy once its port accepts (up to
		 * wake_timeout). Until then: 503 and come back soon.
		 */
		evbuffer_drain(in, head_len);
		edge_conn_error(conn, 503, target.message != NULL ?
		    target.message : "The sandbox is not running.",
		    "Retry-After: 5");
		return;
	}
	/* One open/closed pair per client connection and sandbox. */
	if (strcmp(conn->preview_id, m.sandbox_id) != 0) {
		if (conn->preview_id[0] != '\0')
			control_activity(edge->ctl, conn->preview_id,
			    ACTIVITY_CONN, -1);
		memcpy(conn->preview_id, m.sandbox_id, sizeof conn->preview_id);
		control_activity(edge->ctl, conn->preview_id, ACTIVITY_CONN,
		    1);
	}
	edge_proxy_start(conn, h, head_len, (struct sockaddr *)&target.addr,
	    target.addrlen);
}

/* Start an API request: check the body size, build the exchange. */
static void
edge_api_start(struct edge_conn *conn, const struct http_request_head *h,
    size_t head_len)
{
	struct edge			*edge = conn->edge;
	struct evbuffer			*in = bufferevent_get_input(conn->bev);
	struct http_exchange		*ex;
	const struct http_header	*expect;
	const char			*q;
	size_t				 i, j, plen;
	int				 go_ahead;

	q = memchr(h->target, '?', h->target_len);
	plen = q != NULL ? (size_t)(q - h->target) : h->target_len;

	ex = http_exchange_new();
	ex->method = xstrdup(conn->method);
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
	snprintf(ex->peer, sizeof ex->peer, "%s", conn->peer);
	ex->is_tls = 0;
	ex->started_ms = time_mono_ms();
	conn->ex = ex;
	conn->api_got = 0;
	conn->api_limit = control_api_body_limit(edge->ctl, ex);

	expect = http_header_find(h->headers, h->nheaders, "expect");
	go_ahead = expect != NULL && !conn->req_done && conn->minor >= 1 &&
	    expect->value_len == 12 &&
	    strncasecmp(expect->value, "100-continue", 12) == 0;
	evbuffer_drain(in, head_len);	/* h points into freed memory now */
	conn->state = EDGE_CONN_API_BODY;
	if (conn->api_limit == 0 && !conn->req_done) {
		/*
		 * The answer is an error whatever the body holds (no valid
		 * key, say): read none of it, say no 100 Continue, answer
		 * now and close after.
		 */
		conn->keepalive = 0;
		conn->linger = 1;	/* the body may still be coming */
		conn->req_body = HTTP_BODY_NONE;
		conn->req_done = 1;
		go_ahead = 0;
	} else if (conn->req_body == HTTP_BODY_LENGTH &&
	    conn->req_left > conn->api_limit) {
		edge_conn_error(conn, 413, "The request body is too large "
		    "for this route.", NULL);
		return;
	}
	/* The client waits for our go before it sends the body. */
	if (go_ahead) {
		bufferevent_write(conn->bev, "HTTP/1.1 100 Continue\r\n\r\n",
		    25);
		edge_flush(conn->bev);
	}
	edge_api_body(conn);
}

/* A decoded chunk of an API body. */
static void
edge_api_data_cb(void *arg, const char *data, size_t len)
{
	struct edge_conn	*conn = arg;

	conn->api_got += len;
	/* Past the limit the bytes are only counted, not kept. */
	if (conn->api_got <= conn->api_limit)
		evbuffer_add(conn->ex->body, data, len);
}

/*
 * Take the request body bytes that have arrived. A Content-Length body
 * moves into out. A chunked body is scanned to find its end and either
 * moves into out verbatim (on_data NULL: proxying) or is decoded through
 * on_data and dropped from the input (the API). Sets conn->req_done at the
 * body's end; -1 for a malformed chunked body.
 */
int
edge_body_take(struct edge_conn *conn, struct evbuffer *out,
    http_data_cb on_data)
{
	struct evbuffer		*in = bufferevent_get_input(conn->bev);
	struct evbuffer_iovec	 v[8];
	size_t			 len, used;
	ssize_t			 r;
	int			 i, n;

	if (conn->req_done)
		return 0;
	if (conn->req_body == HTTP_BODY_LENGTH) {
		len = evbuffer_get_length(in);
		if (len > conn->req_left)
			len = conn->req_left;
		evbuffer_remove_buffer(in, out, len);
		conn->req_left -= len;
		conn->req_done = conn->req_left == 0;
		return 0;
	}
	while (conn->req_body == HTTP_BODY_CHUNKED && !conn->req_done &&
	    evbuffer_get_length(in) > 0) {
		n = evbuffer_peek(in, -1, NULL, v, nitems(v));
		if (n > (int)nitems(v))
			n = nitems(v);
		used = 0;
		for (i = 0; i < n && !conn->req_chunked.done; i++) {
			r = http_chunked_scan(&conn->req_chunked,
			    v[i].iov_base, v[i].iov_len, on_data, conn);
			if (r < 0)
				return -1;
			used += r;
		}
		if (on_data != NULL)
			evbuffer_drain(in, used);
		else
			evbuffer_remove_buffer(in, out, used);
		conn->req_done = conn->req_chunked.done;
	}
	return 0;
}

/* Read the API body as it arrives; dispatch when complete. */
static void
edge_api_body(struct edge_conn *conn)
{
	struct http_exchange	*ex = conn->ex;

	if (edge_body_take(conn, ex->body, edge_api_data_cb) == -1) {
		edge_conn_error(conn, 400, "The chunked body is malformed.",
		    NULL);
		return;
	}
	if (conn->api_got > conn->api_limit) {
		edge_conn_error(conn, 413, "The request body is too large "
		    "for this route.", NULL);
		return;
	}
	if (!conn->req_done) {
		edge_conn_timer(conn, EDGE_BODY_TIMEOUT_MS);
		return;
	}
	edge_conn_timer(conn, -1);
	conn->state = EDGE_CONN_API_WAIT;
	ex->transport = &edge_transport;
	ex->conn = conn;
	control_api_dispatch(conn->edge->ctl, ex);
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

/* control answered: write the response and go on. */
static void
edge_api_send(void *arg, struct http_exchange *ex)
{
	struct edge_conn	*conn = arg;
	struct evbuffer		*out = bufferevent_get_output(conn->bev);
	size_t			 i, len;
	int			 keepalive, nobody;

	conn->ex = NULL;
	ex->conn = NULL;
	len = ex->resp_body != NULL ? evbuffer_get_length(ex->resp_body) : 0;
	nobody = ex->status == 204 || ex->status == 304 ||
	    (ex->status >= 100 && ex->status < 200);
	keepalive = conn->keepalive && !conn->draining &&
	    !conn->edge->shutting_down;

	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", ex->status,
	    http_status_text(ex->status));
	if (!nobody)
		evbuffer_add_printf(out, "Content-Length: %zu\r\n", len);
	for (i = 0; i < ex->nresp_hdrs; i++) {
		if (edge_api_skip_header(ex->resp_hdr_names[i]))
			continue;
		evbuffer_add_printf(out, "%s: %s\r\n", ex->resp_hdr_names[i],
		    ex->resp_hdr_values[i]);
	}
	if (!keepalive)
		evbuffer_add(out, "Connection: close\r\n", 19);
	else if (conn->minor == 0)
		evbuffer_add(out, "Connection: keep-alive\r\n", 24);
	evbuffer_add(out, "\r\n", 2);
	if (!nobody && len > 0 && strcmp(conn->method, "HEAD") != 0)
		evbuffer_add_buffer(out, ex->resp_body);
	http_exchange_free(ex);
	edge_conn_finish(conn, keepalive);
}

/* Grace is over: cut whatever is still open. */
static void
edge_grace_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge		*edge = arg;
	struct edge_conn	*conn;

	while ((conn = TAILQ_FIRST(&edge->conns)) != NULL)
		edge_conn_close(conn);
}

void
edge_shutdown(struct edge *edge, int64_t grace_ms,
    void (*done)(void *), void *arg)
{
	struct edge_conn	*conn, *next;
	struct timeval		 tv;
	size_t			 i;

	edge->shutting_down = 1;
	edge->done = done;
	edge->done_arg = arg;
	for (i = 0; i < edge->nlisteners; i++) {
		if (edge->listeners[i].lev != NULL)
			evconnlistener_free(edge->listeners[i].lev);
		edge->listeners[i].lev = NULL;
	}
	evtimer_del(edge->accept_ev);
	edge_pool_sweep(edge, 1);

	/* Idle connections go now; busy ones close after their response. */
	TAILQ_FOREACH_SAFE(conn, &edge->conns, entry, next) {
		conn->draining = 1;
		if (conn->state == EDGE_CONN_HEAD && !conn->started &&
		    evbuffer_get_length(bufferevent_get_input(conn->bev)) == 0)
			edge_conn_close(conn);
	}
	if (grace_ms < 0)
		grace_ms = 0;
	tv.tv_sec = grace_ms / 1000;
	tv.tv_usec = (grace_ms % 1000) * 1000;
	evtimer_add(edge->grace_ev, &tv);
	/* The reaper calls done once the last connection is gone. */
	event_active(edge->reap_ev, 0, 0);
}

void
edge_free(struct edge *edge)
{
	struct edge_conn	*conn;
	size_t			 i;

	if (edge == NULL)
		return;
	edge->done = NULL;
	while ((conn = TAILQ_FIRST(&edge->conns)) != NULL)
		edge_conn_close(conn);
	edge_reap_cb(-1, 0, edge);
	edge_pool_free(edge);
	for (i = 0; i < edge->nlisteners; i++) {
		if (edge->listeners[i].lev != NULL)
			evconnlistener_free(edge->listeners[i].lev);
	}
	free(edge->listeners);
	event_free(edge->accept_ev);
	event_free(edge->reap_ev);
	event_free(edge->sweep_ev);
	event_free(edge->grace_ev);
	free(edge->scratch);
	free(edge);
}
