/*
 * A client connection: its socket and bufferevent, its timer, keep-alive
 * between requests, lingering close and teardown. What the bytes mean is
 * the protocol's business (h1.c, h2.c); the connection only says when they
 * come and when its output drained.
 *
 * On a TLS listener the bufferevent is an OpenSSL one and the connection
 * starts in EDGE_CONN_HANDSHAKE; once the handshake is done it goes on as
 * a plain one would, reading and writing cleartext through the same
 * bufferevent. Only the places that touch the socket itself differ:
 * edge_flush (the bufferevent writes, EV_WRITE always on), the lingering
 * close (close_notify before the FIN) and the close (close_notify).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/ssl.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_conn_read_cb(struct bufferevent *, void *);
static void	edge_conn_write_cb(struct bufferevent *, void *);
static void	edge_conn_event_cb(struct bufferevent *, short, void *);
static void	edge_conn_timer_cb(evutil_socket_t, short, void *);
static void	edge_conn_closed_cb(evutil_socket_t, short, void *);
static void	edge_conn_shut(struct edge_conn *);
static void	edge_conn_established(struct edge_conn *);
static struct bufferevent *edge_conn_bev_tls(struct edge_conn *, int);
static void	edge_format_peer(const struct sockaddr *, char *, size_t,
		    char *, size_t);

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

/*
 * A TLS bufferevent for a new connection: the handshake runs on its own
 * and ends in the event callback (BEV_EVENT_CONNECTED or an error).
 */
static struct bufferevent *
edge_conn_bev_tls(struct edge_conn *conn, int fd)
{
	struct bufferevent	*bev;
	SSL			*ssl;

	if ((ssl = edge_tls_ssl_new(conn->edge, &conn->tls_set)) == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(conn->edge->base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		edge_tls_conn_done(&conn->tls_set);
		return NULL;
	}
	/* A client that closes without close_notify has just closed. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* A new client connection: set up its bufferevent and first deadline. */
void
edge_conn_accept(struct edge *edge, int fd, const struct sockaddr *sa,
    int tls)
{
	struct edge_conn	*conn;
	struct timeval		 wtv = { EDGE_WRITE_TIMEOUT_S, 0 };
	int			 one = 1;

	/* Small responses must leave at once, not wait for Nagle. */
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

	conn = xcalloc(1, sizeof *conn);
	conn->edge = edge;
	conn->state = tls ? EDGE_CONN_HANDSHAKE : EDGE_CONN_HEAD;
	conn->tls = tls;
	edge_format_peer(sa, conn->peer, sizeof conn->peer, conn->peer_ip,
	    sizeof conn->peer_ip);
	if (tls)
		conn->bev = edge_conn_bev_tls(conn, fd);
	else
		conn->bev = bufferevent_socket_new(edge->base, fd,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (conn->bev == NULL) {
		log_warnx("bufferevent_socket_new failed\tpeer=%s tls=%d",
		    conn->peer, tls);
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
	 * behind: the write callback turns it off again. A TLS bufferevent
	 * keeps it on: only it can write (SSL_write), and it watches the
	 * socket only while its output holds bytes.
	 */
	if (!tls)
		bufferevent_disable(conn->bev, EV_WRITE);
	bufferevent_enable(conn->bev, EV_READ);
	/* A new connection gets the head timeout for its first request. */
	edge_conn_timer(conn, tls ? EDGE_HANDSHAKE_TIMEOUT_MS :
	    EDGE_HEAD_TIMEOUT_MS);
}

/*
 * The TLS handshake is done: the protocol ALPN chose takes the
 * connection. Whatever request bytes came with the handshake's last
 * flight are in the input already.
 */
static void
edge_conn_established(struct edge_conn *conn)
{
	conn->state = EDGE_CONN_HEAD;
	edge_conn_timer(conn, EDGE_HEAD_TIMEOUT_MS);
	if (edge_tls_alpn(conn->bev) == EDGE_ALPN_H2) {
		edge_h2_start(conn);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
		edge_h1_read(conn);
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

	/* TLS bufferevents always have EV_WRITE on: they write themselves. */
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

/* Arm (ms >= 0) or clear (ms < 0) the connection's timer. */
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
 * Count this connection for a sandbox: one ACTIVITY_CONN +1 when it first
 * carries a request there, -1 when it closes or moves to another sandbox.
 */
void
edge_conn_bind(struct edge_conn *conn, const char *sandbox_id)
{
	char	old[ID_LEN + 1];

	if (conn->h2 != NULL) {
		edge_h2_bind(conn, sandbox_id);
		return;
	}
	if (strcmp(conn->sandbox_id, sandbox_id) == 0)
		return;
	memcpy(old, conn->sandbox_id, sizeof old);
	snprintf(conn->sandbox_id, sizeof conn->sandbox_id, "%s", sandbox_id);
	if (old[0] != '\0')
		control_activity(conn->edge->ctl, old, ACTIVITY_CONN, -1);
	control_activity(conn->edge->ctl, conn->sandbox_id, ACTIVITY_CONN, 1);
}

/*
 * Stop reading the client while a request is held (on), watching only for
 * it going away (EV_CLOSED, so neither a body nor pipelined requests pile
 * up), or resume. Where the backend cannot report a close without a read,
 * reading goes on: the read watermark bounds what waits, and EOF is seen.
 */
void
edge_conn_hold(struct edge_conn *conn, int on)
{
	struct edge	*edge = conn->edge;

	if (conn->state == EDGE_CONN_DEAD)
		return;
	if (!on) {
		if (conn->closed_ev != NULL)
			event_del(conn->closed_ev);
		bufferevent_enable(conn->bev, EV_READ);
		return;
	}
	if (!(event_base_get_features(edge->base) & EV_FEATURE_EARLY_CLOSE))
		return;
	/*
	 * EV_READ too: a reset comes as EPOLLERR, which libevent reports as
	 * EV_READ|EV_WRITE only, never to an EV_CLOSED-only event, and the
	 * level-triggered fd would spin the loop until the hold ended.
	 */
	if (conn->closed_ev == NULL)
		conn->closed_ev = event_new(edge->base,
		    bufferevent_getfd(conn->bev), EV_CLOSED | EV_READ |
		    EV_PERSIST, edge_conn_closed_cb, conn);
	if (conn->closed_ev == NULL)
		return;
	bufferevent_disable(conn->bev, EV_READ);
	event_add(conn->closed_ev, NULL);
}

/*
 * The client closed while its request was held, or (EV_READ alone) it
 * sent more bytes or its socket failed. Bytes are read into the input as
 * where EV_CLOSED is missing (the read watermark bounds them; the
 * bufferevent sees EOF and errors): leaving them in the socket would have
 * this level-triggered event fire for them again and again.
 */
static void
edge_conn_closed_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_conn	*conn = arg;
	char			 c;
	ssize_t			 n;

	if (!(events & EV_CLOSED)) {
		n = recv(fd, &c, 1, MSG_PEEK);
		if (n > 0 || (n == -1 && (errno == EAGAIN || errno == EINTR))) {
			event_del(conn->closed_ev);
			bufferevent_enable(conn->bev, EV_READ);
			return;
		}
	}
	log_debug("client closed while held\tpeer=%s", conn->peer);
	edge_conn_close(conn);
}

/*
 * Close a client connection now. The memory is freed later by the reaper,
 * so callers up the stack may still look at conn->state (DEAD). What the
 * request waited for is dropped first; the activity counts go last, as
 * control may call back into the edge from them.
 */
void
edge_conn_close(struct edge_conn *conn)
{
	struct edge	*edge = conn->edge;
	char		 id[ID_LEN + 1];

	if (conn->state == EDGE_CONN_DEAD)
		return;
	if (conn->tls)
		edge_tls_close_notify(conn->bev);
	conn->state = EDGE_CONN_DEAD;
	bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
	bufferevent_setcb(conn->bev, NULL, NULL, NULL, NULL);
	evtimer_del(conn->timer);
	if (conn->closed_ev != NULL)
		event_del(conn->closed_ev);
	TAILQ_REMOVE(&edge->conns, conn, entry);
	TAILQ_INSERT_TAIL(&edge->dead, conn, entry);
	edge_reap_soon(edge);
	if (conn->req != NULL)
		edge_req_gone(conn->req);
	edge_h2_close(conn);
	if (conn->sandbox_id[0] != '\0') {
		memcpy(id, conn->sandbox_id, sizeof id);
		conn->sandbox_id[0] = '\0';
		control_activity(edge->ctl, id, ACTIVITY_CONN, -1);
	}
}

/* Free a closed connection (the reaper). */
void
edge_conn_free(struct edge_conn *conn)
{
	if (conn->req != NULL)
		edge_req_free(conn->req);
	edge_h2_free(conn);
	bufferevent_free(conn->bev);
	edge_tls_conn_done(&conn->tls_set);
	event_free(conn->timer);
	if (conn->closed_ev != NULL)
		event_free(conn->closed_ev);
	free(conn);
}

/*
 * The response is out (or queued): go on with the next request on this
 * connection, or close it once the output is flushed.
 */
void
edge_conn_next(struct edge_conn *conn, int keep)
{
	struct evbuffer	*in = bufferevent_get_input(conn->bev);

	if (conn->state == EDGE_CONN_DEAD)
		return;
	edge_flush(conn->bev);
	if (!keep || conn->draining || conn->edge->shutting_down) {
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
	/* Under TLS, close_notify is the last byte before the FIN. */
	if (conn->tls)
		edge_tls_close_notify(conn->bev);
	shutdown(bufferevent_getfd(conn->bev), SHUT_WR);
	conn->state = EDGE_CONN_LINGER;
	evbuffer_drain(bufferevent_get_input(conn->bev),
	    evbuffer_get_length(bufferevent_get_input(conn->bev)));
	bufferevent_enable(conn->bev, EV_READ);
	edge_conn_timer(conn, EDGE_LINGER_MS);
}

/* Bytes from the client. */
static void
edge_conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct edge_conn	*conn = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);

	switch (conn->state) {
	case EDGE_CONN_HEAD:
	case EDGE_CONN_REQUEST:
		edge_h1_read(conn);
		break;
	case EDGE_CONN_H2:
		edge_h2_read(conn);
		break;
	case EDGE_CONN_LINGER:
		evbuffer_drain(in, evbuffer_get_length(in));
		break;
	case EDGE_CONN_HANDSHAKE:
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
	/* Drained: back to writing directly (edge_flush); TLS: see accept. */
	if (!conn->tls)
		bufferevent_disable(bev, EV_WRITE);
	switch (conn->state) {
	case EDGE_CONN_CLOSING:
		edge_conn_shut(conn);
		break;
	case EDGE_CONN_HEAD:
	case EDGE_CONN_REQUEST:
		edge_h1_drained(conn);
		break;
	case EDGE_CONN_H2:
		edge_h2_drained(conn);
		break;
	case EDGE_CONN_HANDSHAKE:
	case EDGE_CONN_LINGER:
	case EDGE_CONN_DEAD:
		break;
	}
}

/*
 * The TLS handshake finished, or the client closed, reset, or stopped
 * taking our output. A failed handshake is the client's problem: debug.
 */
static void
edge_conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct edge_conn	*conn = arg;

	if (conn->state == EDGE_CONN_HANDSHAKE) {
		if (what & BEV_EVENT_CONNECTED) {
			edge_conn_established(conn);
			return;
		}
		log_debug("TLS handshake failed\tpeer=%s error=\"%s\"",
		    conn->peer, (what & BEV_EVENT_TIMEOUT) ? "write timeout" :
		    edge_tls_error(bev));
		edge_conn_close(conn);
		return;
	}
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (conn->tls && (what & BEV_EVENT_ERROR))
		log_debug("client TLS error\tpeer=%s error=\"%s\"",
		    conn->peer, edge_tls_error(bev));
	else if (what & BEV_EVENT_ERROR)
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

	if (conn->state == EDGE_CONN_HEAD)
		edge_h1_timeout(conn);
	else if (conn->state == EDGE_CONN_H2)
		edge_h2_timeout(conn);
	else {
		if (conn->state == EDGE_CONN_HANDSHAKE)
			log_debug("TLS handshake timeout\tpeer=%s", conn->peer);
		edge_conn_close(conn);
	}
}
