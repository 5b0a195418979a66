/*
 * The daemon's side of the agentd rendezvous (agentd/agentd.h has the
 * protocol). For each sandbox the hub listens on <run dir>/agentd.sock;
 * every connection agentd opens is an idle connection waiting for one
 * request. agent_request takes an idle connection (or waits for agentd to
 * open one), writes the request, reads the answer framed by Content-Length,
 * calls back and closes. Nothing blocks: libevent does all the I/O.
 *
 * Callbacks are never called from inside agent_request: a request that
 * fails at once (unknown sandbox) is failed from a zero timer.
 *
 * Anything in the sandbox can connect to the socket (it must be 0666 for
 * agentd, which runs as the sandbox user, like everything else there), so
 * a connection is agentd's only once its first line is the hello with the
 * sandbox's token (agentd/agentd.h); until then it gets no request, and
 * one with a wrong hello is closed. The token is an HMAC of the sandbox
 * id under the hub's key, so the daemon knows it again after a restart.
 *
 * Bounds: requests running or queued at once, per sandbox and in all; a
 * buffered answer's size; a streamed line's length. A streamed answer is
 * read only as fast as its reader takes it (agent_pause).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/common.h"
#include "control/control.h"
#include "agentd/agentd.h"

/* A buffered answer (the task list with its changed files is the largest). */
#define AGENT_MAX_RESPONSE	(8 * 1024 * 1024)
#define AGENT_DEFAULT_TIMEOUT	30000
#define AGENT_ACCEPT_RETRY_MS	1000
#define AGENT_MAX_IDLE		4	/* idle rendezvous connections kept */
#define AGENT_MAX_LINE		(1024 * 1024)	/* one streamed line */
#define AGENT_MAX_HELLO		8	/* connections not yet past the hello */
#define AGENT_HELLO_TIMEOUT_MS	5000
#define AGENT_REFUSED_LOG_MS	10000	/* one warning per sandbox per 10 s */

struct agent_sandbox;
TAILQ_HEAD(agent_req_list, agent_req);

/* One request, from agent_request to its callback. */
struct agent_req {
	TAILQ_ENTRY(agent_req)	 entry;
	struct agent_req_list	*list;		/* the list it is on */
	struct agent_hub	*hub;
	struct agent_sandbox	*sb;		/* counted there, or NULL */
	char			*method;
	char			*path;
	char			*body;
	size_t			 len;
	int			 timeout_ms;
	agent_cb		 cb;
	void			*arg;
	char			*errmsg;	/* why it fails (failing list) */
	struct event		*timer;
	struct bufferevent	*bev;		/* once sent */
	int			 head_done;
	size_t			 scanned;	/* head bytes already parsed */
	int			 status;
	enum http_body_kind	 kind;
	uint64_t		 length;

	/* agent_stream: lines of a 2xx answer as they come */
	int			 stream;
	agent_line_cb		 line_cb;
	size_t			 lscanned;	/* input bytes known to hold no \n */
	int			 in_cb;		/* inside line_cb */
	int			 cancelled;	/* agent_cancel from line_cb */
	int			 paused;	/* agent_pause: not reading */
	int			 eof;		/* seen, lines may still wait */
	struct event		*resume;	/* agent_pause(0): lines held */

	/* agent_upgrade: the connection itself after a 101 */
	agent_upgrade_cb	 upgrade_cb;
};

enum agent_conn_state {
	AGENT_CONN_HELLO,	/* accepted, its hello not yet read */
	AGENT_CONN_IDLE		/* agentd's, waiting for a request */
};

/* A connection to the socket: agentd's once its hello matched. */
struct agent_conn {
	TAILQ_ENTRY(agent_conn)	 entry;
	struct agent_sandbox	*sb;
	enum agent_conn_state	 state;
	struct bufferevent	*bev;
	struct event		*timer;		/* the hello's deadline */
	pid_t			 pid;		/* SO_PEERCRED, for the log */
};

struct agent_sandbox {
	TAILQ_ENTRY(agent_sandbox) entry;
	struct agent_hub	*hub;
	char			*id;
	char			*path;		/* the socket */
	struct evconnlistener	*listener;
	struct event		*retry;		/* accept backoff (EMFILE) */
	TAILQ_HEAD(, agent_conn) idle;
	int			 nidle;
	TAILQ_HEAD(, agent_conn) hello;		/* not yet agentd's */
	int			 nhello;
	char			 token[AGENTD_TOKEN_LEN + 1];
	uint64_t		 refused;	/* connections with a bad hello */
	int64_t			 refused_logged_ms;
	int			 nreqs;		/* pending + active */
	struct agent_req_list	 pending;	/* waiting for a connection */
	struct agent_req_list	 active;	/* sent, waiting for the answer */
	int			 ready;		/* ready_cb told */
};

struct agent_hub {
	struct event_base	*base;
	agent_ready_cb		 ready_cb;
	void			*ready_arg;
	TAILQ_HEAD(, agent_sandbox) sandboxes;
	struct agent_req_list	 failing;	/* failed before being queued */
	unsigned char		 key[TOKEN_KEY_LEN];	/* tokens' HMAC key */
	int			 nreqs;		/* pending + active, all */
	struct agent_limits	 limits;
};

static struct agent_sandbox *agent_find(struct agent_hub *, const char *);
static void	agent_sandbox_free(struct agent_sandbox *,
		    struct agent_req_list *);
static void	agent_drop_idle(struct agent_sandbox *);
static void	agent_conn_free(struct agent_conn *);
static void	agent_conn_idle(struct agent_conn *);
static void	agent_conn_hello_cb(struct bufferevent *, void *);
static void	agent_conn_hello_timeout_cb(evutil_socket_t, short, void *);
static void	agent_conn_refuse(struct agent_conn *, const char *);
static void	agent_token_make(struct agent_hub *, const char *, char *);
static void	agent_req_count(struct agent_req *, struct agent_sandbox *);
static void	agent_req_resume_cb(evutil_socket_t, short, void *);
static void	agent_conn_event_cb(struct bufferevent *, short, void *);
static void	agent_conn_read_cb(struct bufferevent *, void *);
static void	agent_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	agent_accept_error_cb(struct evconnlistener *, void *);
static void	agent_retry_cb(evutil_socket_t, short, void *);
static void	agent_req_send(struct agent_sandbox *, struct agent_req *,
		    struct bufferevent *);
static void	agent_req_finish(struct agent_req *, int, const char *,
		    size_t, const char *);
static void	agent_req_fail(struct agent_req *, const char *, ...)
		    SBX_PRINTF(2, 3);
static void	agent_req_free(struct agent_req *);
static int	agent_req_parse(struct agent_req *, int);
static void	agent_req_read_cb(struct bufferevent *, void *);
static void	agent_req_event_cb(struct bufferevent *, short, void *);
static void	agent_req_timeout_cb(evutil_socket_t, short, void *);
static void	agent_timer_add(struct event *, int);
static struct agent_req *agent_req_new(struct agent_hub *, const char *,
		    const char *, const char *, size_t, int, agent_cb,
		    void *);
static void	agent_req_queue(struct agent_hub *, const char *,
		    struct agent_req *);
static int	agent_req_lines(struct agent_req *, int);
static void	agent_req_upgraded(struct agent_req *);

/* Make a hub; ready_cb (may be NULL) is told when a sandbox's agentd is up. */
struct agent_hub *
agent_hub_new(struct event_base *base, agent_ready_cb ready_cb, void *arg)
{
	struct agent_hub	*hub;

	hub = xcalloc(1, sizeof *hub);
	hub->base = base;
	hub->ready_cb = ready_cb;
	hub->ready_arg = arg;
	TAILQ_INIT(&hub->sandboxes);
	TAILQ_INIT(&hub->failing);
	/* Until agent_hub_set_key: tokens good for this process only. */
	random_bytes(hub->key, sizeof hub->key);
	hub->limits.per_sandbox = AGENT_MAX_REQUESTS;
	hub->limits.total = AGENT_MAX_REQUESTS_ALL;
	return hub;
}

/*
 * The key tokens are made with (TOKEN_KEY_LEN bytes, the daemon's
 * agentd-secret), before the first agent_listen.
 */
void
agent_hub_set_key(struct agent_hub *hub, const unsigned char *key)
{
	memcpy(hub->key, key, sizeof hub->key);
}

/* Caps on requests at once (0: the default). */
void
agent_hub_set_limits(struct agent_hub *hub, const struct agent_limits *l)
{
	hub->limits.per_sandbox = l->per_sandbox > 0 ? l->per_sandbox :
	    AGENT_MAX_REQUESTS;
	hub->limits.total = l->total > 0 ? l->total : AGENT_MAX_REQUESTS_ALL;
}

/*
 * The sandbox's token: HMAC-SHA256(key, "sandboxd agentd token\0" id) in
 * lowercase hex, AGENTD_TOKEN_LEN digits and a NUL into out.
 */
static void
agent_token_make(struct agent_hub *hub, const char *id, char *out)
{
	static const char	 label[] = "sandboxd agentd token";
	unsigned char		 mac[EVP_MAX_MD_SIZE], *msg;
	unsigned int		 maclen = 0;
	size_t			 len = sizeof label + strlen(id), i;

	msg = xmalloc(len);
	memcpy(msg, label, sizeof label);	/* with its NUL */
	memcpy(msg + sizeof label, id, strlen(id));
	if (HMAC(EVP_sha256(), hub->key, (int)sizeof hub->key, msg, len, mac,
	    &maclen) == NULL || maclen * 2 != AGENTD_TOKEN_LEN)
		fatalx("HMAC-SHA256 failed");
	free(msg);
	for (i = 0; i < maclen; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
	OPENSSL_cleanse(mac, sizeof mac);
}

/*
 * The container's env entry carrying the sandbox's token to agentd,
 * AGENTD_TOKEN_ENV=<hex>, into out (AGENT_TOKEN_ENV_SIZE bytes).
 */
void
agent_token_env(struct agent_hub *hub, const char *sandbox_id, char *out,
    size_t size)
{
	char	token[AGENTD_TOKEN_LEN + 1];

	agent_token_make(hub, sandbox_id, token);
	snprintf(out, size, "%s=%s", AGENTD_TOKEN_ENV, token);
	OPENSSL_cleanse(token, sizeof token);
}

/* Free everything; no callback is called. */
void
agent_hub_free(struct agent_hub *hub)
{
	struct agent_sandbox	*sb;
	struct agent_req	*req;

	if (hub == NULL)
		return;
	while ((sb = TAILQ_FIRST(&hub->sandboxes)) != NULL) {
		TAILQ_REMOVE(&hub->sandboxes, sb, entry);
		agent_sandbox_free(sb, NULL);
	}
	while ((req = TAILQ_FIRST(&hub->failing)) != NULL)
		agent_req_free(req);
	free(hub);
}

/* The sandbox's state, or NULL. */
static struct agent_sandbox *
agent_find(struct agent_hub *hub, const char *id)
{
	struct agent_sandbox	*sb;

	TAILQ_FOREACH(sb, &hub->sandboxes, entry) {
		if (strcmp(sb->id, id) == 0)
			return sb;
	}
	return NULL;
}

/*
 * Free a sandbox (already off the hub's list) and its connections. Its
 * requests move to keep when given, else they are freed without callback.
 */
static void
agent_sandbox_free(struct agent_sandbox *sb, struct agent_req_list *keep)
{
	struct agent_req_list	*lists[2] = { &sb->pending, &sb->active };
	struct agent_req	*req;
	size_t			 i;

	if (sb->listener != NULL) {
		evconnlistener_free(sb->listener);
		/* Nobody else will listen on it; do not leave it behind. */
		if (unlink(sb->path) == -1 && errno != ENOENT)
			log_warn("unlink %s", sb->path);
	}
	if (sb->retry != NULL)
		event_free(sb->retry);
	agent_drop_idle(sb);
	while (TAILQ_FIRST(&sb->hello) != NULL)
		agent_conn_free(TAILQ_FIRST(&sb->hello));
	for (i = 0; i < nitems(lists); i++) {
		while ((req = TAILQ_FIRST(lists[i])) != NULL) {
			if (keep == NULL) {
				agent_req_free(req);
				continue;
			}
			TAILQ_REMOVE(lists[i], req, entry);
			TAILQ_INSERT_TAIL(keep, req, entry);
			req->list = keep;
			agent_req_count(req, NULL);
		}
	}
	OPENSSL_cleanse(sb->token, sizeof sb->token);
	free(sb->id);
	free(sb->path);
	free(sb);
}

/* Listen on dir/agentd.sock for this sandbox. Idempotent. */
int
agent_listen(struct agent_hub *hub, const char *sandbox_id, const char *dir)
{
	struct agent_sandbox	*sb;
	struct sockaddr_un	 sun;
	char			*path = NULL;
	int			 fd = -1;

	xasprintf(&path, "%s/%s", dir, AGENTD_SOCKET_NAME);
	if ((sb = agent_find(hub, sandbox_id)) != NULL &&
	    sb->listener != NULL && strcmp(sb->path, path) == 0) {
		free(path);
		return 0;
	}
	if (strlen(path) >= sizeof sun.sun_path) {
		log_warnx("agentd socket path too long: %s", path);
		goto fail;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path));

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("socket");
		goto fail;
	}
	/* A socket left by an earlier run; the dir is ours (root's). */
	if (unlink(path) == -1 && errno != ENOENT) {
		log_warn("unlink %s", path);
		goto fail;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		log_warn("bind %s", path);
		goto fail;
	}
	/* agentd runs as the sandbox user, not root. */
	if (chmod(path, 0666) == -1) {
		log_warn("chmod %s", path);
		goto fail;
	}

	if (sb == NULL) {
		sb = xcalloc(1, sizeof *sb);
		sb->hub = hub;
		sb->id = xstrdup(sandbox_id);
		agent_token_make(hub, sandbox_id, sb->token);
		TAILQ_INIT(&sb->idle);
		TAILQ_INIT(&sb->hello);
		TAILQ_INIT(&sb->pending);
		TAILQ_INIT(&sb->active);
		TAILQ_INSERT_TAIL(&hub->sandboxes, sb, entry);
	} else if (sb->listener != NULL) {
		/* Moved to another dir: the old socket is dead. */
		evconnlistener_free(sb->listener);
		sb->listener = NULL;
		unlink(sb->path);
	}
	sb->listener = evconnlistener_new(hub->base, agent_accept_cb, sb,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 64, fd);
	if (sb->listener == NULL) {
		log_warn("listen %s", path);
		unlink(path);
		goto fail;
	}
	evconnlistener_set_error_cb(sb->listener, agent_accept_error_cb);
	free(sb->path);
	sb->path = path;
	sb->ready = 0;
	log_debug("agentd rendezvous listening\tid=%s path=%s", sandbox_id,
	    path);
	return 0;

fail:
	if (fd != -1)
		close(fd);
	free(path);
	return -1;
}

/*
 * Close the listener and every connection of this sandbox and forget it.
 * Requests still waiting are failed with status 0: their callbacks are
 * called before this returns.
 */
void
agent_forget(struct agent_hub *hub, const char *sandbox_id)
{
	struct agent_sandbox	*sb;
	struct agent_req_list	 doomed;
	struct agent_req	*req;
	char			*id;

	if ((sb = agent_find(hub, sandbox_id)) == NULL)
		return;
	id = xstrdup(sb->id);
	TAILQ_REMOVE(&hub->sandboxes, sb, entry);
	TAILQ_INIT(&doomed);
	agent_sandbox_free(sb, &doomed);
	/* The hub no longer knows the sandbox, so callbacks may do anything. */
	while ((req = TAILQ_FIRST(&doomed)) != NULL)
		agent_req_fail(req, "sandbox %s was removed", id);
	free(id);
}

/* Drop idle connections after a stop; keep listening and waiting requests. */
void
agent_reset(struct agent_hub *hub, const char *sandbox_id)
{
	struct agent_sandbox	*sb;

	if ((sb = agent_find(hub, sandbox_id)) == NULL)
		return;
	agent_drop_idle(sb);
	sb->ready = 0;
}

/* 1 if agentd of this sandbox has a connection open to the hub. */
int
agent_connected(struct agent_hub *hub, const char *sandbox_id)
{
	struct agent_sandbox	*sb;

	if ((sb = agent_find(hub, sandbox_id)) == NULL)
		return 0;
	return !TAILQ_EMPTY(&sb->idle) || !TAILQ_EMPTY(&sb->active);
}

/* Close every idle connection. */
static void
agent_drop_idle(struct agent_sandbox *sb)
{
	struct agent_conn	*conn;

	while ((conn = TAILQ_FIRST(&sb->idle)) != NULL)
		agent_conn_free(conn);
}

/* Close a connection that carries no request. */
static void
agent_conn_free(struct agent_conn *conn)
{
	if (conn->state == AGENT_CONN_IDLE) {
		TAILQ_REMOVE(&conn->sb->idle, conn, entry);
		conn->sb->nidle--;
	} else {
		TAILQ_REMOVE(&conn->sb->hello, conn, entry);
		conn->sb->nhello--;
	}
	if (conn->timer != NULL)
		event_free(conn->timer);
	if (conn->bev != NULL)
		bufferevent_free(conn->bev);
	free(conn);
}

/*
 * Something connected: agentd, or anything else in the sandbox. It gets
 * nothing until its hello proves it agentd's.
 */
static void
agent_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct agent_sandbox	*sb = arg;
	struct agent_hub	*hub = sb->hub;
	struct agent_conn	*conn;
	struct bufferevent	*bev;
	struct ucred		 uc;
	socklen_t		 uclen = sizeof uc;

	/*
	 * Bounded, or the sandbox could take every descriptor the daemon
	 * has; agentd retries a connection closed at once.
	 */
	if (sb->nhello >= AGENT_MAX_HELLO) {
		log_debug("agentd rendezvous: too many connections without "
		    "a hello, closing one\tid=%s", sb->id);
		evutil_closesocket(fd);
		return;
	}
	bev = bufferevent_socket_new(hub->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		log_warnx("bufferevent_socket_new failed");
		evutil_closesocket(fd);
		return;
	}
	conn = xcalloc(1, sizeof *conn);
	conn->sb = sb;
	conn->state = AGENT_CONN_HELLO;
	conn->bev = bev;
	/* The host's pid of whoever connected: the log names it. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &uclen) == 0)
		conn->pid = uc.pid;
	TAILQ_INSERT_TAIL(&sb->hello, conn, entry);
	sb->nhello++;
	conn->timer = evtimer_new(hub->base, agent_conn_hello_timeout_cb,
	    conn);
	agent_timer_add(conn->timer, AGENT_HELLO_TIMEOUT_MS);
	bufferevent_setwatermark(bev, EV_READ, 0, AGENTD_HELLO_LEN);
	bufferevent_setcb(bev, agent_conn_hello_cb, NULL,
	    agent_conn_event_cb, conn);
	bufferevent_enable(bev, EV_READ);
}

/* Bytes of a hello: the whole line, or not agentd. */
static void
agent_conn_hello_cb(struct bufferevent *bev, void *arg)
{
	struct agent_conn	*conn = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	size_t			 avail = evbuffer_get_length(in), plen;
	unsigned char		*p;

	plen = sizeof AGENTD_HELLO_PREFIX - 1;
	p = evbuffer_pullup(in, (ssize_t)(avail < AGENTD_HELLO_LEN ? avail :
	    AGENTD_HELLO_LEN));
	if (avail < AGENTD_HELLO_LEN) {
		/* A shorter line (a missing token) is refused at once. */
		if (memchr(p, '\n', avail) != NULL)
			agent_conn_refuse(conn, "a hello without a token");
		return;
	}
	if (memcmp(p, AGENTD_HELLO_PREFIX, plen) != 0 ||
	    p[AGENTD_HELLO_LEN - 1] != '\n') {
		agent_conn_refuse(conn, "no hello");
		return;
	}
	if (CRYPTO_memcmp(p + plen, conn->sb->token, AGENTD_TOKEN_LEN) != 0) {
		agent_conn_refuse(conn, "a wrong token");
		return;
	}
	evbuffer_drain(in, AGENTD_HELLO_LEN);
	agent_conn_idle(conn);
}

/* Nothing, or too little, came in time. */
static void
agent_conn_hello_timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	agent_conn_refuse(arg, "no hello in time");
}

/*
 * Close a connection that is not agentd's; warn (the sandbox may be
 * trying to pose as its agentd), at most once per sandbox in a while.
 */
static void
agent_conn_refuse(struct agent_conn *conn, const char *why)
{
	struct agent_sandbox	*sb = conn->sb;
	int64_t			 now = time_mono_ms();

	sb->refused++;
	if (sb->refused_logged_ms == 0 ||
	    now - sb->refused_logged_ms >= AGENT_REFUSED_LOG_MS) {
		log_warnx("agentd rendezvous: refused a connection that is "
		    "not agentd's\tid=%s why=\"%s\" peer_pid=%ld refused=%llu",
		    sb->id, why, (long)conn->pid,
		    (unsigned long long)sb->refused);
		sb->refused_logged_ms = now;
	}
	agent_conn_free(conn);
}

/* The hello matched: serve a waiting request or keep it idle. */
static void
agent_conn_idle(struct agent_conn *conn)
{
	struct agent_sandbox	*sb = conn->sb;
	struct agent_hub	*hub = sb->hub;
	struct agent_req	*req;
	struct bufferevent	*bev;
	char			*id;

	TAILQ_REMOVE(&sb->hello, conn, entry);
	sb->nhello--;
	event_free(conn->timer);
	conn->timer = NULL;
	bufferevent_setwatermark(conn->bev, EV_READ, 0, 0);
	if ((req = TAILQ_FIRST(&sb->pending)) != NULL) {
		bev = conn->bev;
		free(conn);
		agent_req_send(sb, req, bev);
	} else if (sb->nidle >= AGENT_MAX_IDLE) {
		/* agentd keeps one spare; more would only hold descriptors. */
		log_debug("agentd rendezvous: too many idle connections, "
		    "closing one\tid=%s", sb->id);
		bufferevent_free(conn->bev);
		free(conn);
	} else {
		conn->state = AGENT_CONN_IDLE;
		TAILQ_INSERT_TAIL(&sb->idle, conn, entry);
		sb->nidle++;
		bufferevent_setcb(conn->bev, agent_conn_read_cb, NULL,
		    agent_conn_event_cb, conn);
		bufferevent_enable(conn->bev, EV_READ);
	}
	if (sb->ready)
		return;
	sb->ready = 1;
	log_info("agentd connected\tid=%s", sb->id);
	if (hub->ready_cb != NULL) {
		/* Last: the callback may forget the sandbox. */
		id = xstrdup(sb->id);
		hub->ready_cb(id, hub->ready_arg);
		free(id);
	}
}

/* accept failed (out of fds): pause the listener instead of spinning. */
static void
agent_accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct agent_sandbox	*sb = arg;

	log_warn("accept on %s", sb->path);
	evconnlistener_disable(l);
	if (sb->retry == NULL)
		sb->retry = evtimer_new(sb->hub->base, agent_retry_cb, sb);
	agent_timer_add(sb->retry, AGENT_ACCEPT_RETRY_MS);
}

/* Resume accepting after a pause. */
static void
agent_retry_cb(evutil_socket_t fd, short events, void *arg)
{
	struct agent_sandbox	*sb = arg;

	if (sb->listener != NULL)
		evconnlistener_enable(sb->listener);
}

/* agentd never speaks first: bytes on an idle connection are an error. */
static void
agent_conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct agent_conn	*conn = arg;

	log_warnx("unexpected bytes from agentd on an idle connection\tid=%s",
	    conn->sb->id);
	agent_conn_event_cb(bev, BEV_EVENT_ERROR, arg);
}

/*
 * An idle connection closed. agentd only closes its spare when it exits,
 * so when none is left, the next connection means agentd is back.
 */
static void
agent_conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct agent_conn	*conn = arg;
	struct agent_sandbox	*sb = conn->sb;

	if (conn->state == AGENT_CONN_HELLO) {
		agent_conn_refuse(conn, "closed before its hello");
		return;
	}
	agent_conn_free(conn);
	if (TAILQ_EMPTY(&sb->idle) && sb->ready) {
		log_info("agentd disconnected\tid=%s", sb->id);
		sb->ready = 0;
	}
}

/* Add a timer of ms milliseconds. */
static void
agent_timer_add(struct event *ev, int ms)
{
	struct timeval	tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(ev, &tv);
}

/* A request object, not yet queued. */
static struct agent_req *
agent_req_new(struct agent_hub *hub, const char *method, const char *path,
    const char *body, size_t len, int timeout_ms, agent_cb cb, void *arg)
{
	struct agent_req	*req;

	req = xcalloc(1, sizeof *req);
	req->hub = hub;
	req->method = xstrdup(method);
	req->path = xstrdup(path);
	req->body = xmalloc(len);
	if (len > 0)
		memcpy(req->body, body, len);
	req->len = len;
	req->timeout_ms = timeout_ms > 0 ? timeout_ms : AGENT_DEFAULT_TIMEOUT;
	req->cb = cb;
	req->arg = arg;
	req->timer = evtimer_new(hub->base, agent_req_timeout_cb, req);
	return req;
}

/* Send a request now, or wait for agentd to connect, or fail it soon. */
static void
agent_req_queue(struct agent_hub *hub, const char *sandbox_id,
    struct agent_req *req)
{
	struct agent_sandbox	*sb;
	struct agent_conn	*conn;
	struct bufferevent	*bev;

	/* Refuse what would break the request line; fail it asynchronously. */
	if (strpbrk(req->method, " \r\n") != NULL || *req->method == '\0' ||
	    strpbrk(req->path, " \r\n") != NULL || *req->path != '/') {
		req->errmsg = xstrdup("bad method or path for agentd");
		goto fail;
	}
	if ((sb = agent_find(hub, sandbox_id)) == NULL) {
		xasprintf(&req->errmsg, "no agentd rendezvous for sandbox %s",
		    sandbox_id);
		goto fail;
	}
	/*
	 * Each holds a connection in agentd (64 at most), a body and an
	 * answer here: a sandbox (or all of them) asking for more waits
	 * for none, it is refused.
	 */
	if (sb->nreqs >= hub->limits.per_sandbox) {
		xasprintf(&req->errmsg, "too many requests to the sandbox's "
		    "agent at once (%d running); try again when some finish",
		    sb->nreqs);
		goto fail;
	}
	if (hub->nreqs >= hub->limits.total) {
		xasprintf(&req->errmsg, "too many requests to sandbox agents "
		    "at once (%d running in all); try again when some finish",
		    hub->nreqs);
		goto fail;
	}
	agent_req_count(req, sb);

	if ((conn = TAILQ_FIRST(&sb->idle)) != NULL) {
		bev = conn->bev;
		conn->bev = NULL;
		agent_conn_free(conn);
		agent_req_send(sb, req, bev);
		return;
	}
	TAILQ_INSERT_TAIL(&sb->pending, req, entry);
	req->list = &sb->pending;
	agent_timer_add(req->timer, req->timeout_ms);
	return;

fail:
	TAILQ_INSERT_TAIL(&hub->failing, req, entry);
	req->list = &hub->failing;
	agent_timer_add(req->timer, 0);
}

/* Count a request against sb's and the hub's caps, or (NULL) uncount. */
static void
agent_req_count(struct agent_req *req, struct agent_sandbox *sb)
{
	if (req->sb != NULL) {
		req->sb->nreqs--;
		req->hub->nreqs--;
	}
	req->sb = sb;
	if (sb != NULL) {
		sb->nreqs++;
		req->hub->nreqs++;
	}
}

/* Requests to agentd running or queued: this sandbox's, or all (NULL). */
int
agent_requests(struct agent_hub *hub, const char *sandbox_id)
{
	struct agent_sandbox	*sb;

	if (sandbox_id == NULL)
		return (hub->nreqs);
	if ((sb = agent_find(hub, sandbox_id)) == NULL)
		return (0);
	return (sb->nreqs);
}

/* Send one request to agentd. */
void
agent_request(struct agent_hub *hub, const char *sandbox_id,
    const char *method, const char *path, const char *body, size_t len,
    int timeout_ms, agent_cb cb, void *arg)
{
	agent_req_queue(hub, sandbox_id, agent_req_new(hub, method, path,
	    body, len, timeout_ms, cb, arg));
}

/* Send one request whose 2xx answer streams lines; a handle to cancel. */
struct agent_req *
agent_stream(struct agent_hub *hub, const char *sandbox_id,
    const char *method, const char *path, const char *body, size_t len,
    int timeout_ms, agent_line_cb line_cb, agent_cb end_cb, void *arg)
{
	struct agent_req	*req;

	req = agent_req_new(hub, method, path, body, len, timeout_ms, end_cb,
	    arg);
	req->stream = 1;
	req->line_cb = line_cb;
	agent_req_queue(hub, sandbox_id, req);
	return req;
}

/*
 * A request agentd answers with 101 (GET /terminal): up_cb gets the
 * connection; anything else is a failure told to fail_cb as for
 * agent_request.
 */
struct agent_req *
agent_upgrade(struct agent_hub *hub, const char *sandbox_id,
    const char *path, int timeout_ms, agent_upgrade_cb up_cb,
    agent_cb fail_cb, void *arg)
{
	struct agent_req	*req;

	req = agent_req_new(hub, "GET", path, NULL, 0, timeout_ms, fail_cb,
	    arg);
	req->upgrade_cb = up_cb;
	agent_req_queue(hub, sandbox_id, req);
	return req;
}

/* The 101 came: the connection (and any bytes after the head) are up_cb's. */
static void
agent_req_upgraded(struct agent_req *req)
{
	agent_upgrade_cb	 cb = req->upgrade_cb;
	struct bufferevent	*bev = req->bev;
	void			*arg = req->arg;

	req->bev = NULL;
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(bev, EV_READ);
	agent_req_free(req);
	cb(bev, arg);
}

/*
 * Drop a request (agent_stream's handle) without calling back: closes
 * its connection, which agentd takes as the reader leaving. From inside
 * its own line callback the free waits until the callback returns.
 */
void
agent_cancel(struct agent_req *req)
{
	if (req == NULL)
		return;
	if (req->in_cb) {
		req->cancelled = 1;
		return;
	}
	agent_req_free(req);
}

/* Write the request on bev and wait for the answer. */
static void
agent_req_send(struct agent_sandbox *sb, struct agent_req *req,
    struct bufferevent *bev)
{
	struct evbuffer	*out = bufferevent_get_output(bev);

	if (req->list != NULL)
		TAILQ_REMOVE(req->list, req, entry);
	TAILQ_INSERT_TAIL(&sb->active, req, entry);
	req->list = &sb->active;
	req->bev = bev;

	/* A stream asks for one (POST /exec streams only when asked). */
	evbuffer_add_printf(out, "%s %s HTTP/1.1\r\n"
	    "Host: agentd\r\n"
	    "Content-Type: application/json\r\n"
	    "Content-Length: %zu\r\n"
	    "%s"
	    "Connection: close\r\n"
	    "\r\n", req->method, req->path, req->len,
	    req->stream ? "Accept: application/x-ndjson\r\n" : "");
	evbuffer_add(out, req->body, req->len);
	bufferevent_setcb(bev, agent_req_read_cb, NULL, agent_req_event_cb,
	    req);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	/* The answer must come within the timeout, counted from now. */
	agent_timer_add(req->timer, req->timeout_ms);
}

/*
 * Stop (1) or resume (0) reading a streamed answer: its reader cannot
 * take more now. agentd then stops reading the source (a command blocks
 * on its full pipe), so nothing piles up on either side. Lines already
 * read are handed on after a resume, from the event loop.
 */
void
agent_pause(struct agent_req *req, int pause)
{
	if (req == NULL || req->paused == pause)
		return;
	req->paused = pause;
	if (req->bev == NULL)
		return;
	if (pause) {
		bufferevent_disable(req->bev, EV_READ);
		return;
	}
	bufferevent_enable(req->bev, EV_READ);
	if (req->resume == NULL)
		req->resume = evtimer_new(req->hub->base,
		    agent_req_resume_cb, req);
	agent_timer_add(req->resume, 0);
}

/* After a resume: the lines read before the pause. */
static void
agent_req_resume_cb(evutil_socket_t fd, short events, void *arg)
{
	struct agent_req	*req = arg;

	if (!req->paused && req->bev != NULL && req->head_done)
		agent_req_parse(req, req->eof);
}

/* Unlink and free a request without calling back. */
static void
agent_req_free(struct agent_req *req)
{
	agent_req_count(req, NULL);
	if (req->resume != NULL)
		event_free(req->resume);
	if (req->list != NULL)
		TAILQ_REMOVE(req->list, req, entry);
	if (req->bev != NULL)
		bufferevent_free(req->bev);
	if (req->timer != NULL)
		event_free(req->timer);
	free(req->method);
	free(req->path);
	free(req->body);
	free(req->errmsg);
	free(req);
}

/* Call back exactly once, after the request is unlinked, then free it. */
static void
agent_req_finish(struct agent_req *req, int status, const char *body,
    size_t len, const char *errmsg)
{
	agent_cb	 cb = req->cb;
	void		*arg = req->arg;
	char		*msg = errmsg != NULL ? xstrdup(errmsg) : NULL;

	/* Free first: the callback may free the hub or forget the sandbox. */
	agent_req_free(req);
	if (cb != NULL)
		cb(status, body, len, msg, arg);
	free(msg);
}

/* Fail a request with status 0. */
static void
agent_req_fail(struct agent_req *req, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("vasprintf: out of memory");
	va_end(ap);
	agent_req_finish(req, 0, NULL, 0, msg);
	free(msg);
}

/*
 * Look at what agentd sent; eof is 1 when the connection has ended.
 * Returns 1 when the request was finished (called back), 0 for more.
 */
static int
agent_req_parse(struct agent_req *req, int eof)
{
	struct evbuffer			*in = bufferevent_get_input(req->bev);
	struct http_response_head	 head;
	size_t				 avail, n;
	char				*p, *body;
	int				 r;

	if (!req->head_done) {
		avail = evbuffer_get_length(in);
		n = avail < HTTP_MAX_HEAD_SIZE ? avail : HTTP_MAX_HEAD_SIZE;
		p = (char *)evbuffer_pullup(in, (ssize_t)n);
		/* Parse again only when a new line ended: never O(n^2). */
		if (n == 0 || memchr(p + req->scanned, '\n',
		    n - req->scanned) == NULL)
			r = -2;
		else
			r = http_parse_response(p, n, &head);
		req->scanned = n;
		if (r == -2 && n >= HTTP_MAX_HEAD_SIZE)
			r = -1;
		if (r == -1) {
			agent_req_fail(req, "malformed answer from agentd");
			return 1;
		}
		if (r == -2) {
			if (!eof)
				return 0;
			agent_req_fail(req, "agentd closed the connection "
			    "without answering");
			return 1;
		}
		if (r >= 0 && req->upgrade_cb != NULL && head.status == 101)
			req->kind = HTTP_BODY_NONE;
		else if (http_response_body(&head, req->method, &req->kind,
		    &req->length) == -1 || req->kind == HTTP_BODY_CHUNKED) {
			agent_req_fail(req, "bad body framing in agentd's "
			    "answer");
			return 1;
		}
		if (req->kind == HTTP_BODY_LENGTH &&
		    req->length > AGENT_MAX_RESPONSE) {
			agent_req_fail(req, "agentd's answer is too large");
			return 1;
		}
		req->status = head.status;
		req->head_done = 1;
		evbuffer_drain(in, (size_t)r);
		if (req->upgrade_cb != NULL && req->status == 101) {
			agent_req_upgraded(req);
			return 1;
		}
		/* A stream lives as long as its task: no answer deadline. */
		if (req->stream && req->status >= 200 && req->status < 300)
			evtimer_del(req->timer);
	}
	if (req->stream && req->status >= 200 && req->status < 300)
		return (agent_req_lines(req, eof));

	avail = evbuffer_get_length(in);
	switch (req->kind) {
	case HTTP_BODY_NONE:
		n = 0;
		break;
	case HTTP_BODY_LENGTH:
		if (avail < req->length) {
			if (!eof)
				return 0;
			agent_req_fail(req, "agentd's answer was cut short");
			return 1;
		}
		n = (size_t)req->length;
		break;
	default:
		if (avail > AGENT_MAX_RESPONSE) {
			agent_req_fail(req, "agentd's answer is too large");
			return 1;
		}
		if (!eof)
			return 0;
		n = avail;
		break;
	}
	/* Handed out NUL-terminated, though the contract gives a length. */
	body = xmalloc(n + 1);
	evbuffer_remove(in, body, n);
	body[n] = '\0';
	agent_req_finish(req, req->status, body, n, NULL);
	free(body);
	return 1;
}

/* Bytes of the answer arrived. */
static void
agent_req_read_cb(struct bufferevent *bev, void *arg)
{
	agent_req_parse(arg, 0);
}

/* The connection ended or failed; the answer may still be complete. */
static void
agent_req_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct agent_req	*req = arg;
	int			 saved_errno = errno;

	if (what & BEV_EVENT_EOF) {
		/* Paused, the lines left wait for the resume, and so does this. */
		req->eof = 1;
		agent_req_parse(req, 1);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		/*
		 * agentd answers an oversized request before reading it all,
		 * so our write can fail after the answer arrived.
		 */
		if (req->head_done || evbuffer_get_length(
		    bufferevent_get_input(bev)) > 0) {
			if (agent_req_parse(req, 0))
				return;
		}
		agent_req_fail(req, "connection to agentd failed: %s",
		    saved_errno != 0 ? strerror(saved_errno) : "error");
	}
}

/* No connection or no answer in time, or a request failed at once. */
static void
agent_req_timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	struct agent_req	*req = arg;

	if (req->errmsg != NULL)
		agent_req_fail(req, "%s", req->errmsg);
	else if (req->bev == NULL)
		agent_req_fail(req, "agentd did not connect within %d ms",
		    req->timeout_ms);
	else
		agent_req_fail(req, "agentd did not answer within %d ms",
		    req->timeout_ms);
}

/*
 * A streamed 2xx answer: hand each complete line (without its newline)
 * to line_cb; at the end (close, or the Content-Length consumed) a last
 * unterminated line, then the end callback with the status. Returns 1
 * when the request was finished or cancelled, 0 for more.
 */
static int
agent_req_lines(struct agent_req *req, int eof)
{
	struct evbuffer		*in = bufferevent_get_input(req->bev);
	struct evbuffer_ptr	 nl;
	size_t			 avail, n;
	char			*line;
	int			 done;

	for (;;) {
		/* The reader is full: the rest waits in our input buffer. */
		if (req->paused)
			return (0);
		avail = evbuffer_get_length(in);
		if (req->kind == HTTP_BODY_LENGTH && avail > req->length)
			avail = (size_t)req->length;
		done = req->kind == HTTP_BODY_NONE ||
		    (req->kind == HTTP_BODY_LENGTH && avail == req->length) ||
		    eof;
		/* From where the last search stopped: never O(n^2). */
		if (evbuffer_ptr_set(in, &nl, req->lscanned,
		    EVBUFFER_PTR_SET) == 0)
			nl = evbuffer_search(in, "\n", 1, &nl);
		else
			nl.pos = -1;
		if (nl.pos != -1 && (size_t)nl.pos < avail)
			n = (size_t)nl.pos + 1;
		else if (done && avail > 0)
			n = avail;
		else if (avail > AGENT_MAX_LINE) {
			agent_req_fail(req, "agentd sent a line longer than "
			    "%d bytes", AGENT_MAX_LINE);
			return (1);
		} else if (done) {
			agent_req_finish(req, req->status, NULL, 0, NULL);
			return (1);
		} else {
			req->lscanned = avail;
			return (0);
		}
		req->lscanned = 0;
		line = xmalloc(n + 1);
		evbuffer_remove(in, line, n);
		if (req->kind == HTTP_BODY_LENGTH)
			req->length -= n;
		line[n] = '\0';
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = '\0';
		req->in_cb = 1;
		if (req->line_cb != NULL)
			req->line_cb(line, n, req->arg);
		req->in_cb = 0;
		free(line);
		if (req->cancelled) {
			agent_req_free(req);
			return (1);
		}
	}
}
