/*
 * edge/ internals. The layers, bottom up:
 *
 *   listen.c   listeners and accept back-off
 *   limit.c    connection caps (in all, per client address), RLIMIT_NOFILE
 *   conn.c     a client connection: socket, timers, keep-alive, linger
 *   h1.c       HTTP/1.1 on a conn: heads in, requests out, responses framed
 *   h2.c       HTTP/2 on a conn (nghttp2): each stream a request
 *   request.c  a request, protocol-blind: routing, held lookups, activity
 *   api.c      a request answered by the control API
 *   proxy.c    a request forwarded to an upstream; the pool; tunnels
 *   page.c     the pages edge answers with itself
 *   preview.c  private previews (tokens, cookies) and Set-Cookie hygiene
 *   console.c  the built-in console's static files, from memory
 *   stats.c    counters for /metrics, and the access log
 *   edge.c     the edge object: setup, the reaper, shutdown, retirement
 *
 * Nothing above request.c touches a client socket: the proxy, the API and
 * the pages write a response through the request's output operations
 * (struct edge_req_ops), which h1.c implements for HTTP/1.1 and h2.c for
 * each HTTP/2 stream.
 */
#ifndef SBX_EDGE_INT_H
#define SBX_EDGE_INT_H

#include <sys/queue.h>

#include <string.h>

#include "edge/edge.h"

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

struct bufferevent;
struct ssl_st;
struct evconnlistener;
struct event;
struct evbuffer;

#define EDGE_HANDSHAKE_TIMEOUT_MS 10000	/* a TLS handshake must complete */
/*
 * The timeouts an operator may change are config keys (struct edge_limits
 * holds them as in force); these are their defaults for a config made by
 * hand, as the unit tests do. docs/limits.md lists them all.
 */
#define EDGE_HEAD_TIMEOUT_MS	 30000	/* header_timeout */
#define EDGE_IDLE_TIMEOUT_MS	 75000	/* keepalive_timeout */
#define EDGE_BODY_TIMEOUT_MS	 30000	/* body_timeout */
#define EDGE_CONNECT_TIMEOUT_MS	 10000	/* upstream connect */
#define EDGE_RESPONSE_TIMEOUT_MS 60000	/* response_timeout */
#define EDGE_WRITE_TIMEOUT_S	 60	/* send_timeout */
#define EDGE_LINGER_MS		 2000	/* drain a client we refused */
#define EDGE_WARMING_MS		 2000	/* a held navigation gets the page */
#define EDGE_HOLD_SLACK_MS	 30000	/* past wake_timeout: control is lost */
#define EDGE_POOL_MAX_IDLE	 1024	/* idle connections per upstream */
#define EDGE_POOL_IDLE_MS	 30000
#define EDGE_POOL_SWEEP_MS	 5000
#define EDGE_BUFFER_HIGH	 (256 * 1024)	/* backpressure threshold */
#define EDGE_ACCEPT_BACKOFF_MS	 100
#define EDGE_IO_MAX		 (128 * 1024)	/* bytes per write call */
/*
 * Upstream reads (proxy.c): a head is read in EDGE_READ_MIN bytes, a body
 * of known size in up to EDGE_READ_MAX. libevent rounds a chain (its
 * 48-byte header plus the data) up to a power of two, so these leave room
 * for the header: 16 KiB and 128 KiB blocks, not 32 and 256.
 */
#define EDGE_READ_MIN		 (16 * 1024 - 64)
#define EDGE_READ_MAX		 (128 * 1024 - 64)
/* Cleartext per SSL_write: one TLS record, the largest there is. */
#define EDGE_TLS_RECORD		 16384
/* Spare request objects kept for reuse (edge->spare_reqs). */
#define EDGE_SPARE_REQS		 256
#define EDGE_COALESCE		 (64 * 1024)	/* first response write, at most */
#define EDGE_COALESCE_MS	 20	/* longest wait to fill it */
/* HTTP/2 (h2.c; docs/http2.md) */
#define EDGE_H2_MAX_STREAMS	 128	/* SETTINGS_MAX_CONCURRENT_STREAMS */
#define EDGE_H2_MAX_HEADER_LIST	 (64 * 1024)	/* else 431 */
#define EDGE_H2_WINDOW		 (256 * 1024)	/* per stream: input bound */
#define EDGE_H2_CONN_WINDOW	 (1024 * 1024)
#define EDGE_H2_MAX_CONTINUATIONS 16	/* per header block */
#define EDGE_H2_MAX_BLOCK	 (128 * 1024)	/* header block bytes */
#define EDGE_H2_RESET_WINDOW_MS	 10000	/* rapid reset: this long, */
#define EDGE_H2_RESET_MAX	 200	/* at most this many resets */
#define EDGE_H2_MAX_BOUND	 16	/* sandboxes counted per connection */

struct edge_req;
struct edge_upstream;
struct edge_h2;
struct edge_h2_stream;

/* What ALPN chose on a TLS connection (edge_tls_alpn). */
enum edge_alpn {
	EDGE_ALPN_NONE,		/* plain, or the client offered no ALPN */
	EDGE_ALPN_HTTP11,
	EDGE_ALPN_H2
};

struct edge_tls_set;

struct evbuffer_cb_entry;

/* What a connection speaks, for the metrics (stats.c). */
enum edge_proto {
	EDGE_PROTO_H1,
	EDGE_PROTO_H2,
	EDGE_NPROTO
};
#define EDGE_NKIND	3	/* api, route, preview (enum edge_host_kind) */
#define EDGE_NCLASS	6	/* no response, 1xx .. 5xx */

/*
 * The edge's counters, read by GET /metrics (stats.c). A request adds
 * to them once, when it ends; connections as they open and close.
 */
struct edge_stats {
	uint64_t	 requests[EDGE_NKIND][EDGE_NPROTO][EDGE_NCLASS];
	uint64_t	 sent_bytes[EDGE_NPROTO];	/* response bytes queued */
	uint64_t	 received_bytes[EDGE_NPROTO];	/* read from clients */
	uint64_t	 conns_closed[EDGE_NPROTO];
	int64_t		 conns_open[EDGE_NPROTO][2];	/* [proto][tls] */
};

/*
 * The access log (access_log): lines are buffered and written once per
 * loop turn (flush_ev, made active by the first line), or at once past
 * EDGE_ALOG_HIGH, so a busy loop pays one write() per turn, not per
 * request.
 */
#define EDGE_ALOG_HIGH	(64 * 1024)
struct edge_alog {
	int		 fd;		/* 2 for stderr; -1: the file failed */
	char		*path;		/* NULL: stderr */
	struct evbuffer	*buf;
	struct event	*flush_ev;
	int		 pending;	/* flush_ev is active */
	int64_t		 warned;	/* last write failure logged (ms) */
};

/*
 * The limits in force, from the config (edge_limit_init). A rate rule
 * asks for rate * window / 1000 bytes (at least one) per window.
 */
struct edge_limits {
	unsigned int	 max_conns;	/* client connections; 0: no cap */
	unsigned int	 max_conns_ip;	/* per client address; 0: no cap */
	int64_t		 header_ms;	/* a request head, from its start */
	int64_t		 keepalive_ms;	/* idle between requests */
	int64_t		 body_ms;	/* request body: the rate window */
	uint64_t	 body_rate;	/* bytes/s; 0: a byte per window */
	int64_t		 send_ms;	/* our output: the rate window */
	uint64_t	 send_rate;	/* bytes/s; 0: a byte per window */
	int64_t		 response_ms;	/* response head, once the request is sent */
	int64_t		 response_idle_ms; /* upstream silent mid-body; 0: never */
	int64_t		 tunnel_idle_ms; /* no byte either way; 0: never */
};

/*
 * What a client counts as for max_connections_per_ip: an IPv4 address
 * (as ::ffff:a.b.c.d, so an IPv4-mapped IPv6 peer is the same client), or
 * an IPv6 /64, the least a single host or site is given.
 */
struct edge_addr_key {
	uint8_t		 b[16];
};

/*
 * A client connection is always in exactly one of these states.
 */
enum edge_conn_state {
	EDGE_CONN_HANDSHAKE,	/* TLS: the handshake is under way */
	EDGE_CONN_HEAD,		/* waiting for or reading a request head */
	EDGE_CONN_REQUEST,	/* carrying a request: see conn->req */
	EDGE_CONN_H2,		/* an HTTP/2 session: see conn->h2 */
	EDGE_CONN_CLOSING,	/* flushing the last response, then close */
	EDGE_CONN_LINGER,	/* write side shut, draining what the client sends */
	EDGE_CONN_DEAD		/* closed, freed by the reaper */
};

/* What a connection is counted in, for max_connections(_per_ip). */
enum edge_conn_count {
	EDGE_COUNT_NONE,	/* not (yet, or any more) */
	EDGE_COUNT_ALL,		/* in all only (no per-address cap) */
	EDGE_COUNT_ADDR		/* in all and for its address */
};

struct edge_conn {
	struct edge		*edge;
	TAILQ_ENTRY(edge_conn)	 entry;
	enum edge_conn_state	 state;
	struct bufferevent	*bev;
	struct event		*timer;		/* head, idle, linger */
	struct event		*closed_ev;	/* EV_CLOSED while held */
	/*
	 * Our own read event (edge_conn_reading); off while the protocol
	 * says so or the input is over EDGE_BUFFER_HIGH. The bufferevent
	 * reads nothing itself: it holds the buffers and, on a plain
	 * connection, writes what edge_flush left behind.
	 */
	struct event		*rev;
	int			 reading;	/* rev is added */
	int			 read_off;	/* paused, held */
	int			 read_full;	/* input over the mark */
	struct evbuffer_cb_entry *input_cb;	/* while read_full */
	int			 tcp;		/* TCP, not a unix socket */
	int			 nodelay;	/* TCP_NODELAY is set */
	unsigned int		 writes;	/* flushes with output (to 2) */
	char			 peer[64];	/* "ip:port" */
	char			 peer_ip[48];
	int			 draining;	/* close after this response */
	int			 linger;	/* unread client bytes at close */
	int			 served;	/* a request came: no h2c preface */
	/*
	 * TLS: the scheme is https. The connection drives its SSL itself
	 * (conn.c): rev and wev call SSL_read/SSL_write, bev holds the
	 * cleartext and never touches the socket.
	 */
	int			 tls;
	struct ssl_st		*ssl;
	struct event		*wev;		/* the socket must take a write */
	int			 tls_wlen;	/* an SSL_write to repeat, bytes */
	int			 tls_writing;	/* wev is added */
	int			 tls_rwantw;	/* SSL_read waits for EV_WRITE */
	int			 tls_failed;	/* a write failed: close (wev) */
	struct edge_tls_set	*tls_set;	/* its SNI contexts (tls.c) */
	/* Bound for ACTIVITY_CONN; "" when not. */
	char			 sandbox_id[ID_LEN + 1];
	enum edge_conn_count	 counted;	/* limit.c */
	struct edge_addr_key	 addr_key;
	enum edge_proto		 proto;		/* counted in conns_open */
	int			 open_counted;
	/*
	 * The slow-reader rule (send_min_rate): while our output waits for
	 * the client, each send_timeout it must take its share, of our
	 * output or of the socket's queue. Made on the first output that
	 * does not fit the socket at once.
	 */
	struct event		*send_ev;
	struct evbuffer_cb_entry *send_cb;	/* counts bytes taken */
	uint64_t		 sent;		/* output bytes the client took */
	uint64_t		 send_mark;	/* sent at the window's start */
	uint64_t		 send_queued;	/* the socket's queue then */
	int			 send_watch;	/* a window runs */

	/* HTTP/1.1 (h1.c) */
	struct edge_req		*req;		/* one at a time, recycled */
	size_t			 scanned;	/* head bytes searched so far */
	int			 started;	/* bytes of this head arrived */
	int			 idle;		/* the timer is keep-alive's */
	size_t			 head_len;	/* head still at the input's start */
	int			 keep;		/* this response keeps the conn */

	/* HTTP/2 (h2.c): the session and its streams */
	struct edge_h2		*h2;
};

/*
 * A response head as a request hands it to its protocol. The headers are
 * end-to-end ones, framing headers (Content-Length, Transfer-Encoding)
 * included as an HTTP/1.1 message would carry them; body and length say
 * how the body bytes that follow are framed.
 */
struct edge_resp_head {
	int				 status;
	const char			*reason;	/* NULL: the standard text */
	size_t				 reason_len;
	const struct http_header	*headers;
	size_t				 nheaders;
	enum http_body_kind		 body;
	/* Set by the protocol: pass a chunked body decoded, not as is. */
	int				 dechunk;
};

/*
 * How a request reaches its client (h1.c for HTTP/1.1). Every function is
 * called only while the request is the protocol's current one.
 */
struct edge_req_ops {
	/*
	 * Queue a response head (1xx, 101 or final); the bytes queued, 0 if
	 * the protocol dropped it (a 1xx to an HTTP/1.0 client).
	 */
	size_t		 (*head)(struct edge_req *, struct edge_resp_head *);
	/* Where body bytes go, framed as the head said (read into directly). */
	struct evbuffer	*(*body)(struct edge_req *);
	/* Write what is queued now; 1 if the client is over the high mark. */
	int		 (*flush)(struct edge_req *);
	/* The response is complete (req->close: the connection ends too). */
	void		 (*end)(struct edge_req *);
	/* The response cannot be completed: cut it off now. */
	void		 (*abort)(struct edge_req *);
	/*
	 * Move the request body bytes that have arrived into dst, as framed
	 * (on_data NULL) or decoded through on_data; a tunnel's bytes as
	 * they come. Sets req->body_done at the body's end; -1 if malformed.
	 */
	int		 (*recv)(struct edge_req *, struct evbuffer *dst,
			    http_data_cb on_data);
	/* Stop (1) or resume (0) reading the client: backpressure. */
	void		 (*pause)(struct edge_req *, int);
	/* Held: stop reading, but notice the client leaving (1); resume (0). */
	void		 (*hold)(struct edge_req *, int);
	/* The head's pointers are no longer needed (idempotent). */
	void		 (*head_done)(struct edge_req *);
	/* Tell the client to send its body (100 Continue). */
	void		 (*go_ahead)(struct edge_req *);
	/*
	 * Bytes of a dechunked response's trailer lines ("name: value\r\n",
	 * checked), for a protocol that frames trailers itself (HTTP/2);
	 * NULL: the protocol has no use for them.
	 */
	void		 (*trailer)(struct edge_req *, const char *, size_t);
};

/* A request's life; exactly one at a time. */
enum edge_req_state {
	EDGE_REQ_ROUTING,	/* head parsed, being routed (synchronous) */
	EDGE_REQ_HELD,		/* waiting for a held target lookup */
	EDGE_REQ_API_BODY,	/* reading an API request body */
	EDGE_REQ_API_WAIT,	/* dispatched to control, no answer yet */
	EDGE_REQ_API_STREAM,	/* control streams its answer (SSE) */
	EDGE_REQ_API_TUNNEL,	/* control answered 101: bytes both ways */
	EDGE_REQ_PROXY,		/* forwarding to an upstream and back */
	EDGE_REQ_TUNNEL,	/* after 101: bytes both ways */
	EDGE_REQ_DONE		/* answered or abandoned */
};

/* How much of the response went to the client. */
enum edge_out_state {
	EDGE_OUT_NONE,		/* nothing: an error page can still be sent */
	EDGE_OUT_INTERIM,	/* 1xx only */
	EDGE_OUT_FINAL		/* the final head (and maybe body) */
};

/* What the proxy has of the upstream's response. */
enum edge_resp_state {
	EDGE_RESP_WAIT,		/* no byte yet: a retry is still possible */
	EDGE_RESP_HEAD,		/* reading a head (after 1xx: the next) */
	EDGE_RESP_COALESCE,	/* final head in, waiting for the body's start */
	EDGE_RESP_BODY		/* final head sent, relaying the body */
};

/*
 * What a request counts for in control_activity: a proxied request is
 * ACTIVITY_REQUEST from its start until its response ends or it fails;
 * at a 101 that count ends and ACTIVITY_TUNNEL starts, until the tunnel
 * closes. edge_req_activity keeps every +1 matched by one -1.
 */
enum edge_req_activity {
	EDGE_ACT_NONE,
	EDGE_ACT_REQUEST,
	EDGE_ACT_TUNNEL
};

/* Which upstream connections may serve a request: the pool's key. */
struct edge_up_key {
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 sandbox_id[ID_LEN + 1];	/* "": a route */
	uint64_t		 generation;
};

/* One request, owned by the connection that carries it. */
struct edge_req {
	struct edge		*edge;
	struct edge_conn	*conn;
	TAILQ_ENTRY(edge_req)	 spare_entry;	/* on edge->spare_reqs */
	const struct edge_req_ops *ops;
	enum edge_req_state	 state;
	enum edge_out_state	 out;
	struct event		*timer;		/* the state's deadline */

	/* the request as it came */
	char			 method[32];
	int			 minor;		/* HTTP/1.x */
	int			 keepalive;	/* the client allows keep-alive */
	int			 close;		/* the connection ends after it */
	int			 browser;	/* GET accepting text/html */
	/*
	 * The request came over TLS: the transport sets it when it makes
	 * the request (0 on plain listeners); edge_req_reset keeps it.
	 */
	int			 https;
	struct edge_host_match	 host;
	/* JSON error bodies: API hosts, and clients that ask for JSON. */
	int			 json_errors;
	int			 strip_token;	/* private: drop the token cookie */
	enum http_body_kind	 body;
	uint64_t		 body_left;
	struct http_chunked	 body_chunked;
	int			 body_done;

	/* held: the lookup's handle, and the head kept until it answers */
	struct control_wait	*wait;
	struct http_request_head *kept;
	char			*kept_buf;

	/* answered by the API (api.c) */
	struct http_exchange	*ex;
	uint64_t		 api_limit;
	uint64_t		 api_got;
	int			 api_raw;	/* stream: protocol frames it */

	/* proxied (proxy.c) */
	struct edge_upstream	*up;
	struct edge_up_key	 key;
	int			 upgrade;	/* asked for Upgrade */
	enum edge_resp_state	 resp;
	size_t			 coalesce_want;	/* upstream bytes to wait for */
	enum http_body_kind	 resp_body;
	uint64_t		 resp_left;
	struct http_chunked	 resp_chunked;
	int			 dechunk;	/* strip chunking for the client */
	int			 up_keepalive;	/* upstream may be pooled after */
	int			 client_blocked; /* client read off: upstream full */
	int			 up_blocked;	/* upstream read off: client full */
	int			 retried;
	/*
	 * Every request byte is written upstream: the response clock runs.
	 * Until then a body is held to the body_min_rate rule: the bytes
	 * read from the client, their count at the window's start, and
	 * whether we paused the client (backpressure) in this window.
	 */
	int			 sent;
	uint64_t		 body_got;
	uint64_t		 rate_mark;
	int			 rate_paused;
	int64_t			 blocked_since;	/* client_blocked from (ms) */
	int64_t			 last_io;	/* relay, tunnel: last byte (ms) */
	char			*head_copy;	/* request head, to retry once */
	size_t			 head_copy_len;
	size_t			 head_copy_size;

	/* idleness accounting */
	enum edge_req_activity	 activity;
	char			 activity_id[ID_LEN + 1];

	/* HTTP/2: the stream carrying it (h2.c), NULL on HTTP/1.1 */
	struct edge_h2_stream	*h2s;

	/* stats.c: counted once at its end if begun */
	int			 begun;		/* edge_req_start ran */
	int			 status;	/* final status sent; 0: none */
	uint64_t		 bytes_out;	/* response bytes queued */
	/* access log only (edge->alog != NULL), else 0 / NULL */
	int64_t			 t_start;	/* edge_req_start (mono ms) */
	int64_t			 t_up;		/* sent upstream (mono ms) */
	int64_t			 up_ms;		/* to the upstream's head; -1 */
	char			*log_host;	/* Host as sent, bounded */
	char			*log_path;	/* path, query string cut */
};

struct edge_pool;

/*
 * An upstream connection. The bufferevent connects and writes; reading is
 * ours (rev into in): libevent 2.1 reads at most 4096 bytes per call and
 * asks FIONREAD before each, which made a 64 KiB response cost 17 reads,
 * 17 ioctls and 17 trips through the loop.
 */
struct edge_upstream {
	struct edge		*edge;
	struct bufferevent	*bev;
	struct event		*rev;		/* EV_READ on the socket */
	struct evbuffer		*in;		/* read, not yet relayed */
	int			 reading;	/* rev is added */
	int			 eof;		/* read saw close or error */
	int			 junk;		/* sent bytes past a response */
	struct edge_req		*req;		/* when in use */
	struct edge_pool	*pool;		/* when idle */
	TAILQ_ENTRY(edge_upstream) entry;	/* pool, or the dead list */
	int			 connected;
	int			 reused;	/* came from the pool */
	int64_t			 idle_since;
};
TAILQ_HEAD(edge_upstream_q, edge_upstream);

struct edge_pool {
	TAILQ_ENTRY(edge_pool)	 entry;
	struct edge_up_key	 key;
	struct edge_upstream_q	 idle;	/* most recently used first */
	unsigned int		 nidle;
};

struct edge_listener {
	struct evconnlistener	*lev;
	int			 tls;		/* a tls_listen address */
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
};

struct edge {
	struct event_base	*base;
	const struct config	*cfg;
	struct control		*ctl;
	struct edge_listener	*listeners;
	size_t			 nlisteners;
	struct event		*accept_ev;	/* backoff after EMFILE */
	struct event		*reap_ev;	/* frees dead connections */
	struct event		*sweep_ev;	/* expires idle upstreams */
	struct event		*grace_ev;	/* end of shutdown grace */
	TAILQ_HEAD(, edge_conn)	 conns;
	TAILQ_HEAD(, edge_conn)	 dead;
	/*
	 * Request objects given back by idle keep-alive connections, for
	 * the next request anywhere; over EDGE_SPARE_REQS the reaper frees
	 * the rest. An idle connection so holds no request (680 bytes and
	 * a timer) and a busy one still mallocs none.
	 */
	TAILQ_HEAD(edge_req_q, edge_req) spare_reqs;
	size_t			 nspare;
	struct edge_upstream_q	 dead_ups;	/* closed, freed by the reaper */
	TAILQ_HEAD(, edge_pool)	 pools;
	int			 shutting_down;
	void			(*done)(void *);
	void			*done_arg;
	char			*scratch;	/* builds rewritten heads */
	size_t			 scratch_size;
	struct edge_tls		*tls;		/* NULL: no tls_listen */
	int			 tls_port;	/* the first tls_listen's port */
	struct edge_limits	 lim;
	/* edge_timeval: the timer lengths queued as common timeouts */
	struct {
		int64_t			 ms;
		const struct timeval	*tv;
	}			 common[16];
	size_t			 ncommon;
	/* limit.c: live client connections, and per address */
	unsigned int		 nconns;
	struct edge_ip_table	*ip_table;
	int64_t			 refused_warned;	/* last warning (ms) */
	unsigned long		 refused;	/* since that warning */
	struct edge_stats	 stats;		/* stats.c */
	struct edge_alog	*alog;		/* NULL: access_log = off */
	struct edge_console	*console;	/* console.c; never NULL once set up */
};

/* edge/edge.c */
/* Have the reaper run later in this loop turn. */
void	edge_reap_soon(struct edge *);

/* edge/listen.c */
/* Bind every listen address of the config; -1 with *cause on failure. */
int	edge_listen(struct edge *, char **cause);
/* Stop accepting; free_all also releases the listeners' memory. */
void	edge_listen_close(struct edge *, int free_all);

/* edge/tls.c */
struct edge_tls;
/* Load the pairs if there is a TLS listener; -1 with *cause. */
int	edge_tls_init(struct edge *, char **cause);
void	edge_tls_free(struct edge *);
/* An SSL on the current set, *setp holding it; NULL on failure. */
struct ssl_st *edge_tls_ssl_new(struct edge *, struct edge_tls_set **setp);
/* Drop the connection's set (idempotent). */
void	edge_tls_conn_done(struct edge_tls_set **setp);
/* What ALPN chose on an established connection. */
enum edge_alpn edge_tls_alpn(struct ssl_st *);
/* Send close_notify once, if the session is sound. */
void	edge_tls_close_notify(struct ssl_st *);
/* The last OpenSSL error's text, for the debug log; clears the queue. */
const char *edge_tls_error(void);

/* edge/limit.c */
struct edge_ip_table;
/* Fill edge->lim from the config; raise RLIMIT_NOFILE to its hard limit. */
void	edge_limit_init(struct edge *);
void	edge_limit_free(struct edge *);
/*
 * Count a new client connection from sa against the caps: 0 (counted,
 * edge_limit_release must follow), or -1 if over a cap (refused, logged).
 */
int	edge_limit_admit(struct edge *, struct edge_conn *,
	    const struct sockaddr *);
/* A counted connection closes (idempotent). */
void	edge_limit_release(struct edge *, struct edge_conn *);
/* The address key of sa (0), or -1 for a family without one (unix). */
int	edge_addr_key(const struct sockaddr *, struct edge_addr_key *);

/* edge/conn.c */
/* Take a new client socket (tls: from a tls_listen); closes fd on failure. */
void	edge_conn_accept(struct edge *, int fd, const struct sockaddr *,
	    int tls);
/*
 * Write what is queued on a plain socket's bev now, in this loop turn; 1
 * if bytes are left, waiting for EV_WRITE. (A TLS connection writes
 * through edge_conn_flush.)
 */
int	edge_flush(struct bufferevent *);
/*
 * The timeval for a timer of ms: one of libevent's common-timeout queues
 * if ms is a configured limit (O(1) add and delete), else tv, filled in.
 */
const struct timeval *edge_timeval(struct edge *, int64_t ms,
	    struct timeval *tv);
/* edge_flush for a client: what waits is watched by the slow-reader rule. */
void	edge_conn_flush(struct edge_conn *);
/* Small writes to the client leave at once from now on (TCP_NODELAY). */
void	edge_conn_nodelay(struct edge_conn *);
/* Read the client (1) or not (0): backpressure, holds, closing. */
void	edge_conn_reading(struct edge_conn *, int on);
/* Close now; freed by the reaper, so callers may still read conn->state. */
void	edge_conn_close(struct edge_conn *);
/* Free a closed connection and its request (the reaper only). */
void	edge_conn_free(struct edge_conn *);
/* The response is out: the next request (keep), or flush and close. */
void	edge_conn_next(struct edge_conn *, int keep);
/* Arm (ms >= 0) or clear (ms < 0) the connection's timer. */
void	edge_conn_timer(struct edge_conn *, int64_t ms);
/* Count the connection for this sandbox (ACTIVITY_CONN), once. */
void	edge_conn_bind(struct edge_conn *, const char *sandbox_id);
/* Stop reading but notice the client leaving (1), or resume (0). */
void	edge_conn_hold(struct edge_conn *, int on);

/* edge/h1.c */
/* Builds a head in the edge's scratch buffer. */
struct edge_hbuf {
	char	*p;
	size_t	 len;
	size_t	 size;
	char	*scratch;	/* p, unless the head outgrew it */
};
/* Start a head in the scratch buffer; edge_hbuf_done after use. */
void	edge_hbuf_init(struct edge_hbuf *, struct edge *);
/* Make room for len more bytes: past the scratch buffer, on the heap. */
void	edge_hbuf_grow(struct edge_hbuf *, size_t len);
/* Append (inline: a head is built of dozens of tiny pieces). */
static inline void
edge_hbuf_add(struct edge_hbuf *b, const char *s, size_t len)
{
	if (len > b->size - b->len)
		edge_hbuf_grow(b, len);
	memcpy(b->p + b->len, s, len);
	b->len += len;
}
void	edge_hbuf_str(struct edge_hbuf *, const char *);
void	edge_hbuf_header(struct edge_hbuf *, const struct http_header *);
void	edge_hbuf_done(struct edge_hbuf *);
/* Bytes from the client, per the connection's state. */
void	edge_h1_read(struct edge_conn *);
/* The client took all our output. */
void	edge_h1_drained(struct edge_conn *);
/* The connection's timer in EDGE_CONN_HEAD. */
void	edge_h1_timeout(struct edge_conn *);

/* edge/h2.c */
/* 1 if p[0..len) starts like the h2 preface; *complete: all 24 bytes. */
int	edge_h2_preface(const char *, size_t, int *complete);
/*
 * Take over a connection for HTTP/2 (state EDGE_CONN_H2): its input,
 * read through conn->bev only (plain or TLS alike), starts with the
 * client preface: h2c prior knowledge (h1.c hands it over), or TLS with
 * ALPN "h2" (call it once the handshake is done).
 */
void	edge_h2_start(struct edge_conn *);
/* Bytes from the client; the client took all our output; conn->timer. */
void	edge_h2_read(struct edge_conn *);
void	edge_h2_drained(struct edge_conn *);
void	edge_h2_timeout(struct edge_conn *);
/* GOAWAY(NO_ERROR): open streams finish, then the connection closes. */
void	edge_h2_shutdown(struct edge_conn *);
/* edge_conn_bind for h2: ACTIVITY_CONN once per (connection, sandbox). */
void	edge_h2_bind(struct edge_conn *, const char *sandbox_id);
/* A stream's request in PROXY or TUNNEL to this sandbox, or NULL. */
struct edge_req	*edge_h2_retire_find(struct edge_conn *, const char *);
/* The connection closed: every stream's request is gone (conn.c). */
void	edge_h2_close(struct edge_conn *);
/* Free the session and its streams (edge_conn_free). */
void	edge_h2_free(struct edge_conn *);

/* edge/request.c */
/* A request object for conn, answering through ops; never NULL. */
struct edge_req	*edge_req_new(struct edge_conn *, const struct edge_req_ops *);
/* Make a finished request ready to carry the next one. */
void	edge_req_reset(struct edge_req *);
/* An idle connection gives its finished request back for reuse. */
void	edge_req_park(struct edge_req *);
/* Free spare requests down to keep. */
void	edge_req_spares_trim(struct edge *, size_t keep);
/* Free it (the reaper, with its connection); ends it first if needed. */
void	edge_req_free(struct edge_req *);
/*
 * Route a parsed request (method, version, keep-alive and body framing
 * already set by the protocol); h is valid until ops->head_done. why: the
 * protocol refuses it (400) with this reason.
 */
void	edge_req_start(struct edge_req *, const struct http_request_head *,
	    const char *why);
/* Client bytes arrived for this request (a body, tunnel data). */
void	edge_req_client_data(struct edge_req *);
/* The client took all our output. */
void	edge_req_drained(struct edge_req *);
/* Send a response head through the request's protocol. */
void	edge_req_head(struct edge_req *, struct edge_resp_head *);
/* The response is complete: the request is done. */
void	edge_req_end(struct edge_req *);
/* The response cannot be completed: the request is done, cut off. */
void	edge_req_abort(struct edge_req *);
/* The client went away: drop whatever the request waits for. */
void	edge_req_gone(struct edge_req *);
/* Answer with an error page (or JSON on API hosts), or cut if too late. */
void	edge_req_error(struct edge_req *, int status, const char *message);
/* Arm (ms >= 0) or clear (ms < 0) the request's timer. */
void	edge_req_timer(struct edge_req *, int64_t ms);
/* Count the request as act from now on (see enum edge_req_activity). */
void	edge_req_activity(struct edge_req *, enum edge_req_activity);
/*
 * The body_min_rate rule, on the request's timer: start a window, or at
 * its end judge it (0: fast enough, the next one runs; -1: too slow).
 */
void	edge_req_body_watch(struct edge_req *);
int	edge_req_body_check(struct edge_req *);

/* edge/stats.c */
/* Open the access log if the config asks for one; -1 with *cause. */
int	edge_stats_init(struct edge *, char **cause);
/* Write what is buffered, close the log (idempotent). */
void	edge_stats_free(struct edge *);
/* A request begins (edge_req_start): note what the access log needs. */
void	edge_stats_req_begin(struct edge_req *,
	    const struct http_request_head *, const struct http_header *host);
/* How a request ended, for the access log. */
enum edge_req_outcome {
	EDGE_END_OK,		/* its response is complete */
	EDGE_END_CUT,		/* cut off (edge_req_abort) */
	EDGE_END_GONE		/* the client left first */
};
/* A begun request ends: count it, log it; leaves it not begun. */
void	edge_stats_req_end(struct edge_req *, enum edge_req_outcome);
/* A connection opens, changes protocol (h1 to h2), closes. */
void	edge_stats_conn_open(struct edge_conn *);
void	edge_stats_conn_proto(struct edge_conn *, enum edge_proto);
void	edge_stats_conn_close(struct edge_conn *);

/* edge/api.c */
/* Build the exchange from h, check the body limit, read or dispatch. */
void	edge_api_start(struct edge_req *, const struct http_request_head *);
/* Read on; dispatch to control once the body is complete. */
void	edge_api_body(struct edge_req *);
/* The request ends unanswered: detach (dispatched) or free the exchange. */
void	edge_api_gone(struct edge_req *);
/* The client took a streamed answer's output: the handler may write on. */
void	edge_api_drained(struct edge_req *);
/* Client bytes for an upgraded API answer (a terminal's WebSocket). */
void	edge_api_tunnel_read(struct edge_req *);

/* edge/page.c */
/*
 * A small styled page (JSON on API hosts), with nextra more headers;
 * ends the request.
 */
void	edge_page_error(struct edge_req *, int status, const char *message,
	    const struct http_header *extra, size_t nextra);
/* "Starting your app…": 503, polls the same URL, reloads when it answers. */
void	edge_page_warming(struct edge_req *);
/* A 3xx with a small body; extra holds Location (and whatever else). */
void	edge_page_redirect(struct edge_req *, int status,
	    const struct http_header *extra, size_t nextra);
/* "The console is not installed": what to build, where (why: NULL ok). */
void	edge_page_console_missing(struct edge_req *, const char *dir,
	    const char *why);

/* edge/preview.c */
/*
 * A preview request to a private sandbox: 0 to go on (public, or a
 * valid token cookie), -1 when answered (token redirect, 401). Before
 * any lookup: an unauthorized request never wakes a sandbox.
 */
int	edge_preview_auth(struct edge_req *, const struct http_request_head *);
/* Strip Domain from the Set-Cookie headers; free *buf after sending. */
void	edge_preview_set_cookies(struct http_header *, size_t n, size_t room,
	    char **buf);
/* 308 to the same URL on the TLS listener (redirect_https); ends it. */
void	edge_page_https(struct edge_req *, const struct http_request_head *);

/* edge/console.c */
/* A file of the console, held in memory with its response headers. */
struct edge_console_file {
	char		*name;		/* beneath console_dir: "assets/x.js" */
	const char	*ctype;		/* Content-Type, by extension */
	const char	*cache;		/* Cache-Control: immutable if hashed */
	char		 etag[35];	/* "\"<32 hex of its SHA-256>\"" */
	char		*data;
	size_t		 len;
	/* "<name>.gz" beside it: served to clients that take gzip */
	const struct edge_console_file *gz;
	int		 variant;	/* it is such a .gz: not served by name */
};
/* The files served, sorted by name; or none and why (the missing page). */
struct edge_console {
	struct edge_console_file *files;
	size_t			 nfiles;
	size_t			 bytes;
	const struct edge_console_file *index;	/* index.html, or NULL */
	char			*csp;	/* Content-Security-Policy */
	char			*dir;
	char			*why;	/* not loaded: the reason; else NULL */
};
enum edge_console_kind {
	EDGE_CONSOLE_FILE,	/* answer with that file */
	EDGE_CONSOLE_REDIRECT,	/* "/console": to "/console/" */
	EDGE_CONSOLE_NONE	/* no such file: 404 (or the missing page) */
};
/* An empty set (dir is only its name for messages); never NULL. */
struct edge_console *edge_console_new(const char *dir, const char *csp);
/*
 * Copy a file into c by its name beneath the directory; 0, or -1 with
 * *cause for a name it would never serve or a size over the limits.
 */
int	edge_console_add(struct edge_console *, const char *name,
	    const void *data, size_t len, char **cause);
/*
 * After the last add: sort the files, find index.html, pair each
 * "<name>.gz" with <name> (as its gzip variant, no longer served alone).
 */
void	edge_console_done(struct edge_console *);
/*
 * Read dir's regular files (no symlink is followed, hidden names are
 * skipped) into a new set; NULL with *cause if it cannot be read or has
 * no index.html.
 */
struct edge_console *edge_console_load(const char *dir, const char *csp,
	    char **cause);
void	edge_console_free(struct edge_console *);
/* 1 if a request target is "/console", or beneath "/console/". */
int	edge_console_match(const char *target, size_t len);
/*
 * What a path (no query) answers: a file of c (*fp), the redirect, or
 * none. A navigation to a name not loaded gets index.html (the app's own
 * routes). c may be NULL or empty: only the redirect is found then.
 */
enum edge_console_kind edge_console_find(const struct edge_console *,
	    const char *path, size_t len, int navigation,
	    const struct edge_console_file **fp);
/* 1 if an Accept-Encoding value takes gzip (by name or "*", q not 0). */
int	edge_console_gzip_ok(const char *value, size_t len);
/* 1 if an If-None-Match value names etag (weak comparison) or is "*". */
int	edge_console_etag_match(const char *value, size_t len,
	    const char *etag);
/* Load console_dir at start; a missing one is logged, and a page. */
void	edge_console_init(struct edge *);
void	edge_console_fini(struct edge *);
/* A GET or HEAD for /console...: answered from memory; ends the request. */
void	edge_console_serve(struct edge_req *, const struct http_request_head *);

/* edge/proxy.c */
/*
 * Read at most len bytes from fd onto buf: bytes, 0 at EOF, -1 (errno).
 * With beyond, one more byte is asked for and dropped; *beyond says
 * whether the socket held more than len.
 */
ssize_t	edge_read(int fd, struct evbuffer *, size_t len, int *beyond);
/* Forward the request (head h) to the key's address. */
void	edge_proxy_start(struct edge_req *, const struct http_request_head *,
	    const struct edge_up_key *);
/* Client bytes arrived: body or tunnel data to send upstream. */
void	edge_proxy_client_read(struct edge_req *);
/* The client drained our output: read the upstream again. */
void	edge_proxy_client_write(struct edge_req *);
/*
 * A plain-TCP tunnel's client (fd) is readable: pass its bytes on without
 * buffering them if nothing waits to go upstream. The bytes read, 0 at
 * EOF, -1 (errno), or -2 if the buffered path must take this read.
 */
ssize_t	edge_proxy_tunnel_in(struct edge_req *, int fd);
/*
 * The request's timer in EDGE_REQ_PROXY (connect, body rate, response
 * head, coalescing, a silent upstream mid-body) or EDGE_REQ_TUNNEL (idle).
 */
void	edge_proxy_timeout(struct edge_req *);
/* Detach the upstream: into the pool when reuse allows, else closed. */
void	edge_proxy_release(struct edge_req *, int reuse);
/* The sandbox's address is no longer valid: end this request's use of it. */
void	edge_proxy_retire(struct edge_req *);
/* Close pooled connections idle too long (all: every one). */
void	edge_pool_sweep(struct edge *, int all);
/* Close every pooled connection to this sandbox. */
void	edge_pool_retire(struct edge *, const char *sandbox_id);
/* Free the upstreams closed since the last reaper run. */
void	edge_upstream_reap(struct edge *);

#endif /* SBX_EDGE_INT_H */
