/*
 * A client connection: its socket and bufferevent, its timer, keep-alive
 * between requests, lingering close and teardown. What the bytes mean is
 * the protocol's business (h1.c, h2.c); the connection only says when they
 * come and when its output drained.
 *
 * The bufferevent holds the input and output; the connection reads the
 * socket itself (rev) and writes at once (edge_flush). On a TLS listener
 * the connection starts in EDGE_CONN_HANDSHAKE and drives its SSL the
 * same way: SSL_read into the input from rev, SSL_write of the output one
 * record at a time, wev only while the socket is full. The bufferevent
 * never sees the socket then: an OpenSSL bufferevent would write each
 * chain as a record of its own (a response head and its body in two
 * writes) and only on the next loop turn, after an epoll_ctl to ask for
 * EV_WRITE and before another to drop it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/ioctl.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_conn_read_cb(struct bufferevent *, void *);
static void	edge_conn_sock_cb(evutil_socket_t, short, void *);
static int	edge_conn_got(struct edge_conn *, ssize_t);
static void	edge_conn_input(struct edge_conn *, int);
static void	edge_conn_input_cb(struct evbuffer *,
		    const struct evbuffer_cb_info *, void *);
static void	edge_conn_read_update(struct edge_conn *);
static void	edge_conn_write_cb(struct bufferevent *, void *);
static void	edge_conn_event_cb(struct bufferevent *, short, void *);
static void	edge_conn_timer_cb(evutil_socket_t, short, void *);
static void	edge_conn_closed_cb(evutil_socket_t, short, void *);
static void	edge_conn_shut(struct edge_conn *);
static void	edge_conn_established(struct edge_conn *);
static int	edge_conn_tls_new(struct edge_conn *, int);
static void	edge_conn_tls_cb(evutil_socket_t, short, void *);
static void	edge_conn_tls_handshake(struct edge_conn *);
static void	edge_conn_tls_read(struct edge_conn *, int);
static int	edge_conn_tls_write(struct edge_conn *);
static void	edge_conn_tls_want_write(struct edge_conn *, int);
static void	edge_conn_drained(struct edge_conn *);
static void	edge_conn_send_watch(struct edge_conn *, uint64_t);
static uint64_t	edge_conn_queued(struct edge_conn *);
static void	edge_conn_reset(struct edge_conn *);
static void	edge_conn_send_cb(evutil_socket_t, short, void *);
static void	edge_conn_sent_cb(struct evbuffer *,
		    const struct evbuffer_cb_info *, void *);
static void	edge_format_peer(const struct sockaddr *, char *, size_t,
		    char *, size_t);

/* Write v in decimal at p; the digits written. */
static size_t
edge_format_dec(char *p, unsigned int v)
{
	char	d[10];
	size_t	n = 0, i;

	do {
		d[n++] = '0' + v % 10;
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		p[i] = d[n - 1 - i];
	return n;
}

/*
 * "a.b.c.d:port" and "a.b.c.d" by hand: glibc's inet_ntop and snprintf
 * took 2,700 instructions, an eighth of a request on a new connection.
 */
static void
edge_format_ipv4(const struct sockaddr_in *sin, char *peer, char *ip)
{
	const unsigned char	*a = (const unsigned char *)&sin->sin_addr;
	size_t			 n = 0;
	int			 i;

	for (i = 0; i < 4; i++) {
		if (i > 0)
			ip[n++] = '.';
		n += edge_format_dec(ip + n, a[i]);
	}
	ip[n] = '\0';
	memcpy(peer, ip, n);
	peer[n++] = ':';
	n += edge_format_dec(peer + n, ntohs(sin->sin_port));
	peer[n] = '\0';
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
		if (iplen >= INET_ADDRSTRLEN && plen >= INET_ADDRSTRLEN + 6) {
			edge_format_ipv4(sin, peer, ip);
			break;
		}
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
 * The SSL of a new TLS connection, on its socket, and the write event it
 * needs when the socket is full; -1 if either cannot be made.
 */
static int
edge_conn_tls_new(struct edge_conn *conn, int fd)
{
	if ((conn->ssl = edge_tls_ssl_new(conn->edge, &conn->tls_set)) == NULL)
		return -1;
	if (SSL_set_fd(conn->ssl, fd) != 1) {
		ERR_clear_error();
		return -1;
	}
	SSL_set_accept_state(conn->ssl);
	conn->wev = event_new(conn->edge->base, fd, EV_WRITE | EV_PERSIST,
	    edge_conn_tls_cb, conn);
	return conn->wev == NULL ? -1 : 0;
}

/* A new client connection: set up its bufferevent and first deadline. */
void
edge_conn_accept(struct edge *edge, int fd, const struct sockaddr *sa,
    int tls)
{
	struct edge_conn	*conn;
	int			 one = 1;

	conn = xcalloc(1, sizeof *conn);
	conn->edge = edge;
	/* Over a cap: closed at once, before a byte is read or buffered. */
	if (edge_limit_admit(edge, conn, sa) != 0) {
		close(fd);
		free(conn);
		return;
	}
	/*
	 * TLS writes a response in records of its own: none may wait for
	 * Nagle. A plain connection gets TCP_NODELAY at its second write
	 * (edge_conn_flush): a response sent in one write, as with a new
	 * connection per request, has nothing to wait for.
	 */
	conn->tcp = sa->sa_family == AF_INET || sa->sa_family == AF_INET6;
	if (tls && conn->tcp)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	conn->nodelay = tls || !conn->tcp;

	conn->state = tls ? EDGE_CONN_HANDSHAKE : EDGE_CONN_HEAD;
	conn->tls = tls;
	edge_format_peer(sa, conn->peer, sizeof conn->peer, conn->peer_ip,
	    sizeof conn->peer_ip);
	conn->bev = bufferevent_socket_new(edge->base, fd,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	/*
	 * The socket is read by edge_conn_sock_cb (plain) or through
	 * OpenSSL (TLS), not by the bufferevent: libevent 2.1 asks FIONREAD
	 * before every read, one ioctl per request or WebSocket message.
	 */
	conn->rev = event_new(edge->base, fd, EV_READ | EV_PERSIST,
	    tls ? edge_conn_tls_cb : edge_conn_sock_cb, conn);
	conn->timer = evtimer_new(edge->base, edge_conn_timer_cb, conn);
	if (conn->bev == NULL || conn->rev == NULL || conn->timer == NULL ||
	    (tls && edge_conn_tls_new(conn, fd) == -1)) {
		log_warnx("cannot set up a connection\tpeer=%s tls=%d",
		    conn->peer, tls);
		edge_limit_release(edge, conn);
		if (conn->bev == NULL)
			close(fd);
		edge_conn_free(conn);
		return;
	}
	TAILQ_INSERT_TAIL(&edge->conns, conn, entry);
	edge_stats_conn_open(conn);

	bufferevent_setcb(conn->bev, edge_conn_read_cb, edge_conn_write_cb,
	    edge_conn_event_cb, conn);
	bufferevent_set_max_single_write(conn->bev, EDGE_IO_MAX);
	/*
	 * No write timeout on the bufferevent: a client that takes none of
	 * our output, or too little, is the slow-reader rule's
	 * (edge_conn_send_cb), which also sees what it took from the
	 * kernel's queue while our socket is not yet writable again.
	 */
	/*
	 * EV_WRITE (on by default) only while edge_flush leaves plain bytes
	 * behind: the write callback turns it off again. A TLS connection's
	 * bufferevent never has it (nor EV_READ): wev does its waiting.
	 */
	bufferevent_disable(conn->bev, EV_WRITE);
	edge_conn_reading(conn, 1);
	/*
	 * A new connection gets header_timeout for its whole first head,
	 * counted from now: its first byte does not start it over. A TLS
	 * one gets the handshake's first, then header_timeout again.
	 */
	edge_conn_timer(conn, tls ? EDGE_HANDSHAKE_TIMEOUT_MS :
	    edge->lim.header_ms);
}

/*
 * The TLS handshake is done: the protocol ALPN chose takes the
 * connection. Request bytes that came with the handshake's last flight
 * wait in the SSL: the socket will not say so.
 */
static void
edge_conn_established(struct edge_conn *conn)
{
	conn->state = EDGE_CONN_HEAD;
	edge_conn_timer(conn, conn->edge->lim.header_ms);
	if (edge_tls_alpn(conn->ssl) == EDGE_ALPN_H2)
		edge_h2_start(conn);
	/* The request may have come with the client's Finished. */
	if (conn->state != EDGE_CONN_DEAD)
		edge_conn_tls_read(conn, 0);
}

/*
 * OpenSSL's error queue must be empty before an SSL call for
 * SSL_get_error to be right. It nearly always is: looking first is cheap,
 * clearing it (all 16 slots, in OpenSSL 3) is not, a few hundred
 * instructions before every record read and written.
 */
static void
edge_tls_clear(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/*
 * Write what is queued now, in this turn of the loop. A bufferevent would
 * first register for EV_WRITE (an epoll_ctl), wait a turn, write, then
 * unregister; writing at once saves both calls and a wakeup per response.
 * Only what the socket does not take waits for EV_WRITE. Errors are left
 * to the bufferevent, which reports them through the event callback.
 */
int
edge_flush(struct bufferevent *bev)
{
	struct evbuffer	*out = bufferevent_get_output(bev);

	if (evbuffer_get_length(out) == 0)
		return 0;
	/* Already waiting for EV_WRITE: the bufferevent writes the rest. */
	if (bufferevent_get_enabled(bev) & EV_WRITE)
		return 1;
	/* The bufferevent keeps its output's start frozen; its own write
	 * callback thaws it around the write exactly like this. */
	evbuffer_unfreeze(out, 1);
	evbuffer_write(out, bufferevent_getfd(bev));
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) == 0)
		return 0;
	bufferevent_enable(bev, EV_WRITE);
	return 1;
}

/* From now on small writes leave at once (TCP_NODELAY), once set. */
void
edge_conn_nodelay(struct edge_conn *conn)
{
	int	one = 1;

	if (conn->nodelay)
		return;
	setsockopt(bufferevent_getfd(conn->bev), IPPROTO_TCP, TCP_NODELAY,
	    &one, sizeof one);
	conn->nodelay = 1;
}

/*
 * Write to the client now; what the socket did not take is watched by
 * the slow-reader rule until it drains.
 */
void
edge_conn_flush(struct edge_conn *conn)
{
	int	full;

	if (conn->state == EDGE_CONN_DEAD)
		return;
	/*
	 * A second write on this connection (the next response, a streamed
	 * body, an SSE event, 100 Continue): from now on small writes must
	 * leave at once, not wait for the client's ACK of the last one.
	 */
	if (!conn->nodelay &&
	    evbuffer_get_length(bufferevent_get_output(conn->bev)) > 0 &&
	    conn->writes++ > 0)
		edge_conn_nodelay(conn);
	if (conn->tls)
		/* While a write waits for wev the socket is full: no try. */
		full = conn->tls_failed || (conn->tls_wlen > 0 &&
		    conn->tls_writing) || edge_conn_tls_write(conn);
	else
		full = edge_flush(conn->bev);
	if (full && !conn->send_watch) {
		/* The socket is full: its tail must not wait either. */
		edge_conn_nodelay(conn);
		edge_conn_send_watch(conn, edge_conn_queued(conn));
	}
}

/*
 * Read the client (on) or not, as the protocol wants: paused, held,
 * closing. The read event also stays off while the input is over the
 * high mark (read_full).
 */
void
edge_conn_reading(struct edge_conn *conn, int on)
{
	conn->read_off = !on;
	edge_conn_read_update(conn);
}

/* Add or remove the read event to match read_off and read_full. */
static void
edge_conn_read_update(struct edge_conn *conn)
{
	int	want = !conn->read_off && !conn->read_full &&
	    conn->state != EDGE_CONN_DEAD;

	if (want == conn->reading)
		return;
	conn->reading = want;
	if (!want) {
		event_del(conn->rev);
		return;
	}
	event_add(conn->rev, NULL);
	/* What OpenSSL already took off the socket would wait for more. */
	if (conn->tls && conn->state != EDGE_CONN_HANDSHAKE &&
	    SSL_has_pending(conn->ssl))
		event_active(conn->rev, EV_TIMEOUT, 0);
}

/*
 * A read of the client's socket gave n (bytes, 0 at EOF, -1 and errno):
 * count the bytes, or close at EOF or on an error; -1 if it closed.
 */
static int
edge_conn_got(struct edge_conn *conn, ssize_t n)
{
	if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
		if (n == -1)
			log_debug("client error\tpeer=%s error=\"%s\"",
			    conn->peer, strerror(errno));
		edge_conn_close(conn);
		return -1;
	}
	if (n > 0)
		conn->edge->stats.received_bytes[conn->proto] += n;
	return 0;
}

/*
 * A plain client socket is readable: read what it holds, up to the
 * high mark, into the bufferevent's input, then hand it on as the
 * bufferevent would. Heads come in small reads, bodies and tunnels in
 * large ones. A close or an error ends the connection, as the
 * bufferevent's EOF did.
 */
static void
edge_conn_sock_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_conn	*conn = arg;
	struct evbuffer		*in = bufferevent_get_input(conn->bev);
	size_t			 len = evbuffer_get_length(in), want;
	ssize_t			 n = 0;

	/* A tunnel's bytes pass on unbuffered while nothing waits. */
	if ((events & EV_READ) && conn->reading && len == 0 &&
	    conn->state == EDGE_CONN_REQUEST && conn->req != NULL &&
	    conn->req->state == EDGE_REQ_TUNNEL &&
	    (n = edge_proxy_tunnel_in(conn->req, fd)) != -2) {
		edge_conn_got(conn, n);
		return;
	}
	/*
	 * A kick from edge_conn_next (EV_TIMEOUT alone) only hands on the
	 * pipelined bytes, as bufferevent_trigger did: it must not read a
	 * socket that is paused, held or full, nor spend a read on one
	 * that has nothing.
	 */
	if ((events & EV_READ) && conn->reading && len < EDGE_BUFFER_HIGH) {
		want = conn->state == EDGE_CONN_HEAD ? EDGE_READ_MIN :
		    EDGE_READ_MAX;
		if (want > EDGE_BUFFER_HIGH - len)
			want = EDGE_BUFFER_HIGH - len;
		/* The bufferevent keeps its input's end frozen. */
		evbuffer_unfreeze(in, 0);
		n = edge_read(fd, in, want, NULL);
		evbuffer_freeze(in, 0);
		if (edge_conn_got(conn, n) == -1)
			return;
	}
	/* Or nothing new, but pipelined bytes wait (edge_conn_next). */
	edge_conn_input(conn, n > 0 || len > 0);
}

/*
 * Hand the input on (dispatch: new bytes came, or pipelined ones wait),
 * then stop reading while it stays over the high mark, until it drains.
 */
static void
edge_conn_input(struct edge_conn *conn, int dispatch)
{
	struct evbuffer	*in = bufferevent_get_input(conn->bev);

	if (dispatch)
		edge_conn_read_cb(conn->bev, conn);
	if (conn->state == EDGE_CONN_DEAD ||
	    evbuffer_get_length(in) < EDGE_BUFFER_HIGH)
		return;
	conn->read_full = 1;
	if (conn->input_cb == NULL)
		conn->input_cb = evbuffer_add_cb(in, edge_conn_input_cb, conn);
	edge_conn_read_update(conn);
}

/* The client's input shrank: below the mark, read it again. */
static void
edge_conn_input_cb(struct evbuffer *in, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct edge_conn	*conn = arg;

	if (info->n_deleted == 0 ||
	    evbuffer_get_length(in) >= EDGE_BUFFER_HIGH)
		return;
	evbuffer_remove_cb_entry(in, conn->input_cb);
	conn->input_cb = NULL;
	conn->read_full = 0;
	edge_conn_read_update(conn);
}

/*
 * A TLS socket is readable (rev) or writable (wev), or a kick (EV_TIMEOUT
 * alone, from edge_conn_next or edge_conn_read_update): hand on what the
 * input or the SSL holds already. A read that OpenSSL could not finish
 * for want of EV_WRITE goes on here too.
 */
static void
edge_conn_tls_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_conn	*conn = arg;
	int			 sock = (events & EV_READ) != 0;

	if (conn->state == EDGE_CONN_DEAD)
		return;
	if (conn->tls_failed) {
		edge_conn_close(conn);
		return;
	}
	if (conn->state == EDGE_CONN_HANDSHAKE) {
		edge_conn_tls_handshake(conn);
		return;
	}
	if (events & EV_WRITE) {
		if (conn->tls_rwantw) {
			conn->tls_rwantw = 0;
			sock = 1;
		}
		/* A write to repeat, or output queued while a read waited. */
		if ((conn->tls_wlen > 0 || evbuffer_get_length(
		    bufferevent_get_output(conn->bev)) > 0) &&
		    edge_conn_tls_write(conn) == 0) {
			edge_conn_drained(conn);
			if (conn->state == EDGE_CONN_DEAD)
				return;
		}
	}
	if (sock || (events & EV_TIMEOUT))
		edge_conn_tls_read(conn, sock);
	if (conn->state != EDGE_CONN_DEAD && !conn->tls_failed)
		edge_conn_tls_want_write(conn, conn->tls_wlen > 0 ||
		    conn->tls_rwantw);
}

/* Watch for the socket taking a write (on) or not. */
static void
edge_conn_tls_want_write(struct edge_conn *conn, int on)
{
	if (on == conn->tls_writing)
		return;
	conn->tls_writing = on;
	if (on)
		event_add(conn->wev, NULL);
	else
		event_del(conn->wev);
}

/*
 * The handshake goes on as bytes come and go; done, ALPN's protocol takes
 * over. A failed one is the client's problem: debug.
 */
static void
edge_conn_tls_handshake(struct edge_conn *conn)
{
	int	r, err;

	edge_tls_clear();
	if ((r = SSL_do_handshake(conn->ssl)) == 1) {
		edge_conn_tls_want_write(conn, 0);
		edge_conn_established(conn);
		return;
	}
	err = SSL_get_error(conn->ssl, r);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		edge_conn_tls_want_write(conn, err == SSL_ERROR_WANT_WRITE);
		return;
	}
	log_debug("TLS handshake failed\tpeer=%s error=\"%s\"", conn->peer,
	    err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno != 0 ?
	    strerror(errno) : edge_tls_error());
	ERR_clear_error();
	edge_conn_close(conn);
}

/*
 * Read cleartext into the input while the SSL holds some or (sock) the
 * socket said it has bytes, up to the high mark, then hand it on as
 * edge_conn_sock_cb does. With read-ahead one SSL_read takes what the
 * socket holds; after that only SSL_has_pending says more is here (the
 * socket, level-triggered, speaks for itself). A close_notify, a close or
 * an error ends the connection.
 */
static void
edge_conn_tls_read(struct edge_conn *conn, int sock)
{
	struct evbuffer		*in = bufferevent_get_input(conn->bev);
	struct evbuffer_iovec	 v;
	size_t			 had = evbuffer_get_length(in), len = had;
	size_t			 want;
	int			 n, err, got = 0;

	while (conn->reading && len < EDGE_BUFFER_HIGH &&
	    (sock || SSL_has_pending(conn->ssl))) {
		want = EDGE_BUFFER_HIGH - len;
		if (want > EDGE_READ_MIN)
			want = EDGE_READ_MIN;
		/* The bufferevent keeps its input's end frozen. */
		evbuffer_unfreeze(in, 0);
		if (evbuffer_reserve_space(in, want, &v, 1) != 1) {
			evbuffer_freeze(in, 0);
			log_warnx("out of memory reading\tpeer=%s", conn->peer);
			edge_conn_close(conn);
			return;
		}
		edge_tls_clear();
		n = SSL_read(conn->ssl, v.iov_base, (int)want);
		v.iov_len = n > 0 ? (size_t)n : 0;
		evbuffer_commit_space(in, &v, n > 0 ? 1 : 0);
		evbuffer_freeze(in, 0);
		if (n > 0) {
			len += n;
			conn->edge->stats.received_bytes[conn->proto] += n;
			got = 1;
			sock = 0;
			continue;
		}
		err = SSL_get_error(conn->ssl, n);
		if (err == SSL_ERROR_WANT_READ)
			break;
		if (err == SSL_ERROR_WANT_WRITE) {
			/* A key update to answer, and the socket is full. */
			conn->tls_rwantw = 1;
			edge_conn_tls_want_write(conn, 1);
			break;
		}
		if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
			log_debug("client error\tpeer=%s error=\"%s\"",
			    conn->peer, errno != 0 ? strerror(errno) :
			    "connection closed");
		else if (err != SSL_ERROR_ZERO_RETURN)
			log_debug("client TLS error\tpeer=%s error=\"%s\"",
			    conn->peer, edge_tls_error());
		if (err != SSL_ERROR_ZERO_RETURN)
			SSL_set_quiet_shutdown(conn->ssl, 1);
		ERR_clear_error();
		edge_conn_close(conn);
		return;
	}
	edge_conn_input(conn, got || had > 0);
	/*
	 * Stopped at the mark with bytes still in the SSL, and the protocol
	 * took enough that the input is under it again (no read_full, so no
	 * input_cb to wake us): the socket will not say they are there.
	 */
	if (len >= EDGE_BUFFER_HIGH && conn->state != EDGE_CONN_DEAD &&
	    conn->reading && SSL_has_pending(conn->ssl))
		event_active(conn->rev, EV_TIMEOUT, 0);
}

/*
 * SSL_write the output a record at a time, each up to 16 KiB of it pulled
 * together (a response head and its body go as one record, in one write),
 * until it is gone (0) or the socket is full (1: wev waits). A write
 * OpenSSL must repeat is repeated with the same length. A failure closes
 * the connection from wev, not under the caller.
 */
static int
edge_conn_tls_write(struct edge_conn *conn)
{
	struct evbuffer	*out = bufferevent_get_output(conn->bev);
	size_t		 len;
	void		*p;
	int		 n, r, err = SSL_ERROR_NONE;

	/* The bufferevent keeps its output's start frozen. */
	evbuffer_unfreeze(out, 1);
	while ((len = evbuffer_get_length(out)) > 0) {
		n = conn->tls_wlen;
		if (n == 0)
			n = len < EDGE_TLS_RECORD ? (int)len : EDGE_TLS_RECORD;
		if ((p = evbuffer_pullup(out, n)) == NULL) {
			err = -1;	/* not OpenSSL's: no memory */
			break;
		}
		edge_tls_clear();
		if ((r = SSL_write(conn->ssl, p, n)) <= 0) {
			conn->tls_wlen = n;
			err = SSL_get_error(conn->ssl, r);
			break;
		}
		conn->tls_wlen = 0;
		evbuffer_drain(out, r);
	}
	evbuffer_freeze(out, 1);
	if (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_WRITE) {
		log_debug("client TLS error\tpeer=%s error=\"%s\"", conn->peer,
		    err == -1 ? "out of memory" : err == SSL_ERROR_SYSCALL &&
		    ERR_peek_error() == 0 && errno != 0 ? strerror(errno) :
		    edge_tls_error());
		ERR_clear_error();
		/* After a failed write OpenSSL must not write again. */
		SSL_set_quiet_shutdown(conn->ssl, 1);
		conn->tls_failed = 1;
		event_active(conn->wev, EV_WRITE, 0);
		return 1;
	}
	edge_conn_tls_want_write(conn, conn->tls_wlen > 0 || conn->tls_rwantw);
	return len > 0;
}

/*
 * Start a send_timeout window over output that waits for the client,
 * the socket's queue holding queued bytes. The timer and the byte count
 * are made the first time a connection needs them: most never fill their
 * socket's buffer.
 */
static void
edge_conn_send_watch(struct edge_conn *conn, uint64_t queued)
{
	struct edge	*edge = conn->edge;
	struct timeval	 tv;

	tv.tv_sec = edge->lim.send_ms / 1000;
	tv.tv_usec = (edge->lim.send_ms % 1000) * 1000;
	if (conn->send_ev == NULL)
		conn->send_ev = evtimer_new(edge->base, edge_conn_send_cb,
		    conn);
	if (conn->send_cb == NULL)
		conn->send_cb = evbuffer_add_cb(bufferevent_get_output(
		    conn->bev), edge_conn_sent_cb, conn);
	if (conn->send_ev == NULL || conn->send_cb == NULL) {
		/*
		 * No memory for the rule: unwatched output could wait
		 * forever. A plain connection gets the bufferevent's write
		 * timeout instead, a TLS one is closed from wev (not under
		 * the caller, who may still use its request).
		 */
		log_warnx("cannot watch a client's output\tpeer=%s",
		    conn->peer);
		if (!conn->tls)
			bufferevent_set_timeouts(conn->bev, NULL, &tv);
		else {
			conn->tls_failed = 1;
			event_active(conn->wev, EV_WRITE, 0);
		}
		return;
	}
	conn->send_mark = conn->sent;
	conn->send_queued = queued;
	conn->send_watch = 1;
	evtimer_add(conn->send_ev, &tv);
}

/*
 * Close with a reset: what the kernel still holds for a client that does
 * not read is dropped at once instead of trickling out after the close
 * (nginx's reset_timedout_connection).
 */
static void
edge_conn_reset(struct edge_conn *conn)
{
	struct linger	l = { 1, 0 };

	if (conn->state == EDGE_CONN_DEAD)
		return;
	setsockopt(bufferevent_getfd(conn->bev), SOL_SOCKET, SO_LINGER, &l,
	    sizeof l);
	edge_conn_close(conn);
}

/* Bytes left our output for the socket. */
static void
edge_conn_sent_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct edge_conn	*conn = arg;

	conn->sent += info->n_deleted;
}

/*
 * The bytes the client's socket holds for it, not yet sent or not yet
 * acknowledged (SIOCOUTQ); 0 when not TCP. The kernel reports a full
 * socket writable again only once much of its buffer (megabytes, as it
 * grows) drained, so a client reading steadily but slower than that takes
 * bytes from this queue for whole windows while none of ours leaves for
 * the socket. For TLS it holds records, a little more than the bytes they
 * carry: close enough for a floor on the rate.
 */
static uint64_t
edge_conn_queued(struct edge_conn *conn)
{
	int	queued;

	if (!conn->tcp ||
	    ioctl(bufferevent_getfd(conn->bev), SIOCOUTQ, &queued) != 0 ||
	    queued < 0)
		return 0;
	return (uint64_t)queued;
}

/*
 * A send window ended with output still waiting: a client that took less
 * than send_min_rate's share of it in the window (a slow read: a tiny
 * receive window, a read now and then), none at least, is cut; a write
 * timeout alone would never fire while a byte moves now and then.
 */
static void
edge_conn_send_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_conn	*conn = arg;
	const struct edge_limits *lim = &conn->edge->lim;
	uint64_t		 need, queued, took;

	if (!conn->send_watch || conn->state == EDGE_CONN_DEAD)
		return;
	if (evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0) {
		conn->send_watch = 0;
		return;
	}
	/* What left our output, and what left the socket's queue. */
	queued = edge_conn_queued(conn);
	took = conn->sent - conn->send_mark + conn->send_queued;
	took = took > queued ? took - queued : 0;
	need = lim->send_rate * (uint64_t)lim->send_ms / 1000;
	if (need == 0)
		need = 1;
	if (took < need) {
		log_debug("client reads too slowly\tpeer=%s took=%llu "
		    "need=%llu", conn->peer, (unsigned long long)took,
		    (unsigned long long)need);
		edge_conn_reset(conn);
		return;
	}
	/* The next window starts where this one ended: no ACK falls between. */
	edge_conn_send_watch(conn, queued);
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
	evtimer_add(conn->timer, edge_timeval(conn->edge, ms, &tv));
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
		edge_conn_reading(conn, 1);
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
	edge_conn_reading(conn, 0);
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
			edge_conn_reading(conn, 1);
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
		edge_tls_close_notify(conn->ssl);
	conn->state = EDGE_CONN_DEAD;
	edge_conn_read_update(conn);
	/* A pending kick (edge_conn_next) too: the event may not be added. */
	event_del(conn->rev);
	if (conn->wev != NULL)
		event_del(conn->wev);
	bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
	bufferevent_setcb(conn->bev, NULL, NULL, NULL, NULL);
	evtimer_del(conn->timer);
	if (conn->closed_ev != NULL)
		event_del(conn->closed_ev);
	if (conn->send_ev != NULL)
		evtimer_del(conn->send_ev);
	if (conn->send_cb != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_output(conn->bev),
		    conn->send_cb);
	conn->send_cb = NULL;
	conn->send_watch = 0;
	edge_limit_release(edge, conn);
	edge_stats_conn_close(conn);
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
	if (conn->rev != NULL)
		event_free(conn->rev);
	if (conn->wev != NULL)
		event_free(conn->wev);
	if (conn->input_cb != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_input(conn->bev),
		    conn->input_cb);
	/* The SSL's BIO leaves the socket open: the bufferevent closes it. */
	SSL_free(conn->ssl);
	if (conn->bev != NULL)
		bufferevent_free(conn->bev);
	edge_tls_conn_done(&conn->tls_set);
	if (conn->timer != NULL)
		event_free(conn->timer);
	if (conn->closed_ev != NULL)
		event_free(conn->closed_ev);
	if (conn->send_ev != NULL)
		event_free(conn->send_ev);
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
	int		 waiting;

	if (conn->state == EDGE_CONN_DEAD)
		return;
	edge_conn_flush(conn);
	waiting = conn->send_watch;
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
	conn->idle = evbuffer_get_length(in) == 0;
	if (!conn->idle) {
		/* Pipelined bytes: handle them from the loop, not recursively. */
		edge_conn_timer(conn, conn->edge->lim.header_ms);
		event_active(conn->rev, EV_TIMEOUT, 0);
	} else if (waiting)
		/*
		 * Keep-alive idling starts once the client has the response
		 * (edge_h1_drained): until then it is reading, watched by
		 * the slow-reader rule, not idle.
		 */
		edge_conn_timer(conn, -1);
	else {
		edge_conn_timer(conn, conn->edge->lim.keepalive_ms);
		/* Idle: the next request, if one comes, takes a spare. */
		if (conn->req != NULL)
			edge_req_park(conn->req);
	}
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
		edge_tls_close_notify(conn->ssl);
	shutdown(bufferevent_getfd(conn->bev), SHUT_WR);
	conn->state = EDGE_CONN_LINGER;
	evbuffer_drain(bufferevent_get_input(conn->bev),
	    evbuffer_get_length(bufferevent_get_input(conn->bev)));
	edge_conn_reading(conn, 1);
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

/* The bufferevent wrote the rest of a plain connection's output. */
static void
edge_conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct edge_conn	*conn = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	/* Drained: back to writing directly (edge_flush). */
	bufferevent_disable(bev, EV_WRITE);
	edge_conn_drained(conn);
}

/* Output that waited for the client is all gone. */
static void
edge_conn_drained(struct edge_conn *conn)
{
	if (conn->send_watch) {
		conn->send_watch = 0;
		evtimer_del(conn->send_ev);
	}
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
 * The bufferevent of a plain connection could not write the rest of its
 * output: the client reset, or stopped taking it.
 */
static void
edge_conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct edge_conn	*conn = arg;

	if (what & BEV_EVENT_ERROR)
		log_debug("client error\tpeer=%s error=\"%s\"", conn->peer,
		    strerror(EVUTIL_SOCKET_ERROR()));
	else if (what & BEV_EVENT_TIMEOUT) {
		log_debug("client write timeout\tpeer=%s", conn->peer);
		edge_conn_reset(conn);
		return;
	}
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
