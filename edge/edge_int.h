/*
 * edge/ internals shared by server.c (listeners, client connections, the API
 * exchange) and proxy.c (upstream connections, the pool, forwarding).
 */
#ifndef SBX_EDGE_INT_H
#define SBX_EDGE_INT_H

#include <sys/queue.h>

#include "edge/edge.h"

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

struct bufferevent;
struct evconnlistener;
struct event;

#define EDGE_HEAD_TIMEOUT_MS	 30000	/* a started head must complete */
#define EDGE_IDLE_TIMEOUT_MS	 75000	/* keep-alive between requests */
#define EDGE_BODY_TIMEOUT_MS	 30000	/* no API body byte for this long */
#define EDGE_CONNECT_TIMEOUT_MS	 10000	/* upstream connect */
#define EDGE_RESPONSE_TIMEOUT_MS 60000	/* upstream response head */
#define EDGE_WRITE_TIMEOUT_S	 60	/* client takes none of our output */
#define EDGE_LINGER_MS		 2000	/* drain a client we refused */
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
#define EDGE_COALESCE		 (64 * 1024)	/* first response write, at most */
#define EDGE_COALESCE_MS	 20	/* longest wait to fill it */

/*
 * A client connection is always in exactly one of these states; the
 * TLS handshake and HTTP/2 sessions will come in as states of their own.
 */
enum edge_conn_state {
	EDGE_CONN_HEAD,		/* waiting for or reading a request head */
	EDGE_CONN_API_BODY,	/* reading an API request body */
	EDGE_CONN_API_WAIT,	/* dispatched to control, no answer yet */
	EDGE_CONN_PROXY,	/* forwarding one request and its response */
	EDGE_CONN_TUNNEL,	/* after 101: bytes both ways */
	EDGE_CONN_CLOSING,	/* flushing the last response, then close */
	EDGE_CONN_LINGER,	/* write side shut, draining what the client sends */
	EDGE_CONN_DEAD		/* closed, freed by the reaper */
};

struct edge_upstream;

struct edge_conn {
	struct edge		*edge;
	TAILQ_ENTRY(edge_conn)	 entry;
	enum edge_conn_state	 state;
	struct bufferevent	*bev;
	struct event		*timer;
	char			 peer[64];	/* "ip:port" */
	char			 peer_ip[48];
	size_t			 scanned;	/* head bytes searched so far */
	int			 started;	/* bytes of this head arrived */
	int			 draining;	/* close after this response */

	/* the current request */
	char			 method[32];
	int			 minor;		/* client's HTTP/1.x */
	int			 keepalive;	/* client allows keep-alive */
	enum edge_host_kind	 kind;
	enum http_body_kind	 req_body;
	uint64_t		 req_left;
	struct http_chunked	 req_chunked;
	int			 req_done;
	uint64_t		 api_limit;
	uint64_t		 api_got;
	struct http_exchange	*ex;

	/* proxying (proxy.c) */
	struct edge_upstream	*up;
	struct sockaddr_storage	 up_ss;
	socklen_t		 up_sslen;
	int			 upgrade;	/* request asked for Upgrade */
	int			 resp_head;	/* final response head seen */
	int			 resp_any;	/* any response byte seen */
	int			 resp_sent;	/* some went to the client */
	int			 coalesce;	/* 0, 1 waiting for the body, 2 done */
	size_t			 coalesce_want;	/* upstream bytes to wait for */
	enum http_body_kind	 resp_body;
	uint64_t		 resp_left;
	struct http_chunked	 resp_chunked;
	int			 dechunk;	/* HTTP/1.0 client: strip chunking */
	int			 up_keepalive;	/* upstream may be pooled after */
	int			 client_ka;	/* client kept after this response */
	int			 linger;	/* unread client bytes at close */
	int			 json_errors;	/* API host: JSON error bodies */
	int			 client_blocked; /* client read off: upstream full */
	int			 up_blocked;	/* upstream read off: client full */
	int			 retried;
	char			*head_copy;	/* request head, to retry once */
	size_t			 head_copy_len;
	size_t			 head_copy_size;
	char			 preview_id[ID_LEN + 1]; /* "" when not bound */
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
	struct edge_conn	*conn;		/* when in use */
	struct edge_pool	*pool;		/* when idle */
	TAILQ_ENTRY(edge_upstream) entry;
	int			 connected;
	int			 reused;	/* came from the pool */
	int64_t			 idle_since;
};

struct edge_pool {
	TAILQ_ENTRY(edge_pool)	 entry;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	TAILQ_HEAD(edge_upstream_q, edge_upstream) idle;	/* most recently used first */
	unsigned int		 nidle;
};

struct edge_listener {
	struct evconnlistener	*lev;
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
	TAILQ_HEAD(, edge_pool)	 pools;
	int			 shutting_down;
	void			(*done)(void *);
	void			*done_arg;
	char			*scratch;	/* builds rewritten heads */
	size_t			 scratch_size;
};

/* edge/server.c */
void	edge_flush(struct bufferevent *);
void	edge_conn_close(struct edge_conn *);
void	edge_conn_finish(struct edge_conn *, int keepalive);
void	edge_conn_error(struct edge_conn *, int status, const char *message,
	    const char *extra_header);
void	edge_conn_timer(struct edge_conn *, int64_t ms);
void	edge_conn_read(struct edge_conn *);
int	edge_body_take(struct edge_conn *, struct evbuffer *, http_data_cb);

/* edge/proxy.c */
void	edge_proxy_start(struct edge_conn *, const struct http_request_head *,
	    size_t head_len, const struct sockaddr *, socklen_t);
void	edge_proxy_client_read(struct edge_conn *);
void	edge_proxy_client_write(struct edge_conn *);
void	edge_proxy_timeout(struct edge_conn *);
void	edge_proxy_release(struct edge_conn *, int reuse);
void	edge_pool_sweep(struct edge *, int all);
void	edge_pool_free(struct edge *);

#endif /* SBX_EDGE_INT_H */
