/*
 * An asynchronous Docker Engine API client over the daemon's Unix socket.
 *
 * Each request gets its own non-blocking connection ("Connection: close"):
 * Docker calls are not on the hot path, and a connection per request keeps
 * the state machine to one exchange. The reply is parsed with the shared
 * HTTP/1.1 parser (Content-Length, chunked or until-close bodies) and handed
 * over as JSON. GET /events is the same machinery, except that the body is
 * fed to a JSON tokenizer as it streams in and the connection is made again
 * with a backoff when it breaks.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <json.h>

#include "common/common.h"
#include "control/control.h"

#define DOCKER_API_VERSION	"/v1.41"
#define DOCKER_TIMEOUT_MS	30000
#define DOCKER_MAX_BODY		(64 * 1024 * 1024)
#define DOCKER_BACKOFF_MIN_MS	200
#define DOCKER_BACKOFF_MAX_MS	5000

enum docker_req_state {
	DOCKER_REQ_HEAD,	/* waiting for the status line and headers */
	DOCKER_REQ_BODY		/* reading the body */
};

/* One HTTP exchange on its own connection: a request or the events stream. */
struct docker_req {
	struct docker		*docker;
	TAILQ_ENTRY(docker_req)	 entry;
	int			 is_events;

	char			*method;
	char			*path;		/* for logs */
	docker_cb		 cb;
	void			*arg;
	int64_t			 started_ms;

	struct bufferevent	*bev;
	struct event		*timer;
	char			*failmsg;	/* set: the timer reports this */
	int			 grace;		/* the timeout was put off once */

	enum docker_req_state	 state;
	int			 status;
	char			*reason;
	enum http_body_kind	 body_kind;
	uint64_t		 remaining;	/* HTTP_BODY_LENGTH */
	struct http_chunked	 chunked;
	struct evbuffer		*body;
	const char		*data_error;	/* set while reading the body */
};
TAILQ_HEAD(docker_reqs, docker_req);

/* The GET /events follower. */
struct docker_events {
	docker_event_cb		 cb;
	void			*arg;
	char			*filters;	/* %-encoded JSON */
	struct docker_req	*req;		/* NULL while waiting to retry */
	struct event		*retry;
	struct event		*up;		/* tells the follower: (re)connected */
	int			 backoff_ms;
	json_tokener		*tok;
	int64_t			 last_nano;	/* timeNano of the last event */
	int64_t			 up_ms;		/* when the stream connected */
};

struct docker {
	struct event_base	*base;
	char			*socket_path;
	struct docker_reqs	 reqs;
	struct docker_events	*events;
	int			 in_event_cb;	/* calling the event callback */
	int			 dead;		/* docker_free from inside it */
	struct docker_stats	 stats;
};

static struct docker_req *docker_req_new(struct docker *, const char *,
		    const char *, struct json_object *, int);
static void	docker_req_free(struct docker_req *);
static void	docker_req_fail_later(struct docker_req *, const char *, ...)
		    SBX_PRINTF(2, 3);
static void	docker_req_timer_cb(evutil_socket_t, short, void *);
static int	docker_req_pending(struct docker_req *);
static void	docker_req_read_cb(struct bufferevent *, void *);
static void	docker_req_event_cb(struct bufferevent *, short, void *);
static int	docker_req_head(struct docker_req *);
static int	docker_req_read_body(struct docker_req *);
static void	docker_req_take(struct docker_req *, size_t);
static void	docker_req_data(struct docker_req *, const char *, size_t);
static void	docker_req_chunk_cb(void *, const char *, size_t);
static void	docker_req_done(struct docker_req *, int, const char *);
static struct json_object *docker_parse_json(struct evbuffer *);
static void	docker_events_connect(struct docker *);
static void	docker_events_retry_cb(evutil_socket_t, short, void *);
static void	docker_events_up_cb(evutil_socket_t, short, void *);
static void	docker_events_ended(struct docker *, const char *);
static void	docker_events_feed(struct docker *, const char *, size_t);
static void	docker_events_stop(struct docker *);
static void	docker_free_now(struct docker *);
static char	*docker_url_encode(const char *);

/* Create a client for the Docker daemon listening on socket_path. */
struct docker *
docker_new(struct event_base *base, const char *socket_path)
{
	struct docker	*d;

	d = xcalloc(1, sizeof *d);
	d->base = base;
	hist_init(&d->stats.latency, hist_bounds_fast);
	d->socket_path = xstrdup(socket_path);
	TAILQ_INIT(&d->reqs);
	return (d);
}

/*
 * Free the client. From inside an event callback the stream's read callback
 * is still on the stack, so the real work is left to it (see dead).
 */
void
docker_free(struct docker *d)
{
	if (d == NULL)
		return;
	if (d->in_event_cb) {
		d->dead = 1;
		return;
	}
	docker_free_now(d);
}

/* Cancel every request and the events stream without callbacks; free d. */
static void
docker_free_now(struct docker *d)
{
	struct docker_req	*req;

	while ((req = TAILQ_FIRST(&d->reqs)) != NULL) {
		TAILQ_REMOVE(&d->reqs, req, entry);
		docker_req_free(req);
	}
	docker_events_stop(d);
	free(d->socket_path);
	free(d);
}

/* Send one request; the callback is called exactly once, never from here. */
void
docker_request(struct docker *d, const char *method, const char *path,
    struct json_object *body, int timeout_ms, docker_cb cb, void *arg)
{
	struct docker_req	*req;

	req = docker_req_new(d, method, path, body, timeout_ms);
	req->cb = cb;
	req->arg = arg;
	TAILQ_INSERT_TAIL(&d->reqs, req, entry);
}

/*
 * Open a connection and queue the request on it. Failures found here are
 * reported from the request's timer, so that callers never see their
 * callback run before docker_request returns.
 */
static struct docker_req *
docker_req_new(struct docker *d, const char *method, const char *path,
    struct json_object *body, int timeout_ms)
{
	struct docker_req	*req;
	struct sockaddr_un	 sun;
	struct timeval		 tv;
	const char		*text = "", *p;
	size_t			 textlen = 0;
	int			 fd = -1;

	req = xcalloc(1, sizeof *req);
	req->docker = d;
	req->method = xstrdup(method);
	req->path = xstrdup(path);
	req->started_ms = time_mono_ms();
	req->body = evbuffer_new();
	req->timer = evtimer_new(d->base, docker_req_timer_cb, req);
	if (req->body == NULL || req->timer == NULL)
		fatalx("docker: out of memory");
	http_chunked_init(&req->chunked);

	if (timeout_ms <= 0)
		timeout_ms = DOCKER_TIMEOUT_MS;
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(req->timer, &tv);

	/* Both go on the request line as they are: refuse what could split it. */
	if (*method == '\0' || strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") !=
	    strlen(method)) {
		docker_req_fail_later(req, "bad request method");
		return (req);
	}
	if (*path != '/') {
		docker_req_fail_later(req, "request path must start with /");
		return (req);
	}
	for (p = path; *p != '\0'; p++) {
		if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
			docker_req_fail_later(req, "bad character in request "
			    "path");
			return (req);
		}
	}

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(d->socket_path) >= sizeof sun.sun_path) {
		docker_req_fail_later(req, "socket path too long: %s",
		    d->socket_path);
		return (req);
	}
	memcpy(sun.sun_path, d->socket_path, strlen(d->socket_path) + 1);

	/*
	 * Connect here rather than with bufferevent_socket_connect: a Unix
	 * socket connects or fails at once, and the errno is then still ours
	 * to report ("No such file or directory", "Connection refused").
	 */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		docker_req_fail_later(req, "socket: %s", strerror(errno));
		return (req);
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1 &&
	    errno != EINPROGRESS) {
		docker_req_fail_later(req, "connect to %s: %s", d->socket_path,
		    strerror(errno));
		close(fd);
		return (req);
	}
	req->bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (req->bev == NULL) {
		close(fd);
		fatalx("docker: out of memory");
	}
	bufferevent_setcb(req->bev, docker_req_read_cb, NULL,
	    docker_req_event_cb, req);

	if (body != NULL) {
		text = json_object_to_json_string_ext(body,
		    JSON_C_TO_STRING_PLAIN);
		textlen = strlen(text);
	}
	evbuffer_add_printf(bufferevent_get_output(req->bev),
	    "%s %s%s HTTP/1.1\r\n"
	    "Host: docker\r\n"
	    "Content-Type: application/json\r\n"
	    "Content-Length: %zu\r\n"
	    "Connection: close\r\n"
	    "\r\n", method, DOCKER_API_VERSION, path, textlen);
	evbuffer_add(bufferevent_get_output(req->bev), text, textlen);
	bufferevent_enable(req->bev, EV_READ | EV_WRITE);
	return (req);
}

/* Free a request that is off every list; its callback is not called. */
static void
docker_req_free(struct docker_req *req)
{
	if (req->bev != NULL)
		bufferevent_free(req->bev);
	if (req->timer != NULL)
		event_free(req->timer);
	evbuffer_free(req->body);
	free(req->failmsg);
	free(req->reason);
	free(req->method);
	free(req->path);
	free(req);
}

/* Report a failure on the next loop iteration, through the timer. */
static void
docker_req_fail_later(struct docker_req *req, const char *fmt, ...)
{
	struct timeval	 tv = { 0, 0 };
	va_list		 ap;

	va_start(ap, fmt);
	if (vasprintf(&req->failmsg, fmt, ap) == -1)
		fatalx("docker: out of memory");
	va_end(ap);
	evtimer_add(req->timer, &tv);
}

/* The timeout, or a failure that was found while starting the request. */
static void
docker_req_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	static const struct timeval	 grace = { 1, 0 };
	struct docker_req		*req = arg;

	(void)fd;
	(void)events;
	if (req->failmsg != NULL) {
		docker_req_done(req, 0, req->failmsg);
		return;
	}
	/*
	 * An answer (or the close) waiting unread is not a timeout: the loop
	 * did not look (the process was stopped, and epoll_wait returns EINTR
	 * on SIGCONT, so the expired timer runs before the I/O is seen). Read
	 * it on the next turn; Docker did what was asked, and failing here
	 * would leave the store behind Docker (a start that happened, recorded
	 * as failed).
	 */
	if (!req->grace && req->bev != NULL && docker_req_pending(req)) {
		req->grace = 1;
		evtimer_add(req->timer, &grace);
		return;
	}
	docker_req_done(req, 0, "timed out");
}

/* 1 if the request's socket has bytes or an EOF we have not read yet. */
static int
docker_req_pending(struct docker_req *req)
{
	char	c;
	ssize_t	n;

	n = recv(bufferevent_getfd(req->bev), &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return (n >= 0);
}

/* Bytes arrived: parse the head, then as much of the body as there is. */
static void
docker_req_read_cb(struct bufferevent *bev, void *arg)
{
	struct docker_req	*req = arg;
	struct docker		*d = req->docker;
	int			 r;

	(void)bev;
	if (req->state == DOCKER_REQ_HEAD) {
		if ((r = docker_req_head(req)) == -1) {
			docker_req_done(req, 0, req->data_error != NULL ?
			    req->data_error : "malformed response from Docker");
			return;
		}
		if (r == 0)
			return;
	}
	r = docker_req_read_body(req);
	/* An event callback freed the client: it is ours to finish now. */
	if (d->dead) {
		d->in_event_cb = 0;
		docker_free_now(d);
		return;
	}
	if (r == -1)
		docker_req_done(req, 0, req->data_error != NULL ?
		    req->data_error : "malformed response body from Docker");
	else if (r == 1)
		docker_req_done(req, req->status, NULL);
}

/*
 * Parse the response head once it is all there. Returns 1 when the body can
 * be read, 0 when more bytes are needed, -1 on a bad head.
 */
static int
docker_req_head(struct docker_req *req)
{
	struct evbuffer			*in = bufferevent_get_input(req->bev);
	struct http_response_head	 head;
	const char			*buf;
	size_t				 len;
	int				 n;

	for (;;) {
		len = evbuffer_get_length(in);
		if (len == 0)
			return (0);
		if (len > HTTP_MAX_HEAD_SIZE)
			len = HTTP_MAX_HEAD_SIZE;
		buf = (const char *)evbuffer_pullup(in, len);
		n = http_parse_response(buf, len, &head);
		if (n == -1)
			return (-1);
		if (n == -2)
			return (len == HTTP_MAX_HEAD_SIZE ? -1 : 0);
		/* An interim 1xx answer is followed by the real one. */
		if (head.status >= 100 && head.status < 200 &&
		    head.status != 101) {
			evbuffer_drain(in, n);
			continue;
		}
		break;
	}

	req->status = head.status;
	req->reason = xstrndup(head.reason, head.reason_len);
	if (http_response_body(&head, req->method, &req->body_kind,
	    &req->remaining) == -1)
		return (-1);
	evbuffer_drain(in, n);

	if (req->body_kind == HTTP_BODY_LENGTH &&
	    req->remaining > DOCKER_MAX_BODY) {
		req->data_error = "response body too large";
		return (-1);
	}
	req->state = DOCKER_REQ_BODY;

	/* The stream is up: no timeout from now on; note since when. */
	if (req->is_events && req->status == 200) {
		evtimer_del(req->timer);
		req->docker->events->up_ms = time_mono_ms();
		log_info("docker events stream connected");
		/* Told from its own event, not from inside this parser. */
		event_active(req->docker->events->up, 0, 0);
	}
	return (1);
}

/*
 * Consume body bytes from the input. Returns 1 when the body is complete,
 * 0 when more is needed, -1 on an error (req->data_error may say which).
 */
static int
docker_req_read_body(struct docker_req *req)
{
	struct evbuffer		*in = bufferevent_get_input(req->bev);
	struct evbuffer_iovec	 v[8];
	size_t			 len, used = 0;
	ssize_t			 n;
	int			 i, nv;

	switch (req->body_kind) {
	case HTTP_BODY_NONE:
		return (1);
	case HTTP_BODY_LENGTH:
		len = evbuffer_get_length(in);
		if (len > req->remaining)
			len = req->remaining;
		docker_req_take(req, len);
		req->remaining -= len;
		if (req->data_error != NULL)
			return (-1);
		return (req->remaining == 0 ? 1 : 0);
	case HTTP_BODY_UNTIL_CLOSE:
		docker_req_take(req, evbuffer_get_length(in));
		return (req->data_error != NULL ? -1 : 0);
	case HTTP_BODY_CHUNKED:
		break;
	}

	/* Scan the input in place, a few segments at a time. */
	while (!req->chunked.done && evbuffer_get_length(in) > 0) {
		nv = evbuffer_peek(in, -1, NULL, v, nitems(v));
		if (nv > (int)nitems(v))
			nv = nitems(v);
		used = 0;
		for (i = 0; i < nv; i++) {
			n = http_chunked_scan(&req->chunked, v[i].iov_base,
			    v[i].iov_len, docker_req_chunk_cb, req);
			if (n == -1 || req->data_error != NULL)
				return (-1);
			used += n;
			if (req->chunked.done || req->docker->dead)
				break;
		}
		evbuffer_drain(in, used);
		if (req->docker->dead)
			return (0);
	}
	return (req->chunked.done ? 1 : 0);
}

/* Move len bytes of unframed body from the input to docker_req_data. */
static void
docker_req_take(struct docker_req *req, size_t len)
{
	struct evbuffer		*in = bufferevent_get_input(req->bev);
	struct evbuffer_iovec	 v[8];
	size_t			 n;
	int			 i, nv;

	/* A plain answer: move the chain into the body buffer, no copy. */
	if (!(req->is_events && req->status == 200)) {
		if (evbuffer_get_length(req->body) + len > DOCKER_MAX_BODY) {
			req->data_error = "response body too large";
			return;
		}
		evbuffer_remove_buffer(in, req->body, len);
		return;
	}
	while (len > 0 && req->data_error == NULL && !req->docker->dead) {
		nv = evbuffer_peek(in, len, NULL, v, nitems(v));
		if (nv > (int)nitems(v))
			nv = nitems(v);
		n = 0;
		for (i = 0; i < nv && n < len; i++) {
			if (v[i].iov_len > len - n)
				v[i].iov_len = len - n;
			docker_req_data(req, v[i].iov_base, v[i].iov_len);
			n += v[i].iov_len;
		}
		evbuffer_drain(in, n);
		len -= n;
	}
}

/* A span of chunked payload. */
static void
docker_req_chunk_cb(void *arg, const char *data, size_t len)
{
	docker_req_data(arg, data, len);
}

/* Take body bytes: into the tokenizer for the events stream, else buffered. */
static void
docker_req_data(struct docker_req *req, const char *data, size_t len)
{
	if (req->data_error != NULL || req->docker->dead)
		return;
	if (req->is_events && req->status == 200) {
		docker_events_feed(req->docker, data, len);
		return;
	}
	if (evbuffer_get_length(req->body) + len > DOCKER_MAX_BODY) {
		req->data_error = "response body too large";
		return;
	}
	evbuffer_add(req->body, data, len);
}

/* EOF or an error on the connection. */
static void
docker_req_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct docker_req	*req = arg;
	struct docker		*d = req->docker;
	char			 msg[256];
	int			 r;

	(void)bev;
	if (what & BEV_EVENT_EOF) {
		/* Hand over bytes that came with the EOF first. */
		if (req->state == DOCKER_REQ_BODY &&
		    req->body_kind == HTTP_BODY_UNTIL_CLOSE) {
			r = docker_req_read_body(req);
			if (d->dead) {
				d->in_event_cb = 0;
				docker_free_now(d);
				return;
			}
			if (r == -1)
				docker_req_done(req, 0, req->data_error);
			else
				docker_req_done(req, req->status, NULL);
			return;
		}
		docker_req_done(req, 0, "connection closed before the "
		    "response was complete");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		snprintf(msg, sizeof msg, "%s %s: %s",
		    (req->state == DOCKER_REQ_HEAD &&
		    evbuffer_get_length(bufferevent_get_input(req->bev)) == 0) ?
		    "request to" : "reading from", req->docker->socket_path,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		docker_req_done(req, 0, msg);
	}
}

/*
 * Finish a request: parse the body, pick the error text, call the callback
 * once and free the request. status 0 means errmsg says what went wrong.
 */
static void
docker_req_done(struct docker_req *req, int status, const char *errmsg)
{
	struct docker		*d = req->docker;
	struct json_object	*json = NULL, *msg;
	char			*why = NULL;

	if (status != 0) {
		json = docker_parse_json(req->body);
		if (status < 200 || status > 299) {
			if (json != NULL &&
			    json_object_object_get_ex(json, "message", &msg) &&
			    json_object_is_type(msg, json_type_string))
				errmsg = json_object_get_string(msg);
			else if (req->reason != NULL && *req->reason != '\0')
				errmsg = req->reason;
			else
				errmsg = http_status_text(status);
		}
	}
	log_debug("docker request\tmethod=%s path=\"%s\" status=%d ms=%" PRId64,
	    req->method, req->path, status, time_mono_ms() - req->started_ms);
	if (!req->is_events) {
		d->stats.calls++;
		if (status == 0 || status >= 500)
			d->stats.errors++;
		hist_observe(&d->stats.latency,
		    time_mono_ms() - req->started_ms);
	}

	if (req->is_events) {
		if (status == 200)
			errmsg = "stream ended";
		if (status != 0 && errmsg != NULL)
			xasprintf(&why, "HTTP %d: %s", status, errmsg);
		docker_events_ended(d, why != NULL ? why : errmsg);
		free(why);
		json_object_put(json);
		return;
	}

	/* Off the list first: the callback may free the client. */
	TAILQ_REMOVE(&d->reqs, req, entry);
	if (req->bev != NULL) {
		bufferevent_free(req->bev);
		req->bev = NULL;
	}
	req->cb(status, json, errmsg, req->arg);
	json_object_put(json);
	docker_req_free(req);
}

/* Parse a whole body as one JSON value; NULL if empty or not JSON. */
static struct json_object *
docker_parse_json(struct evbuffer *body)
{
	json_tokener		*tok;
	struct json_object	*obj;
	const char		*buf;
	size_t			 len, end;

	len = evbuffer_get_length(body);
	if (len == 0)
		return (NULL);
	/* The NUL tells the tokenizer the text ends (a bare number needs it). */
	evbuffer_add(body, "", 1);
	buf = (const char *)evbuffer_pullup(body, -1);
	if ((tok = json_tokener_new()) == NULL)
		fatalx("docker: out of memory");
	obj = json_tokener_parse_ex(tok, buf, (int)len + 1);
	if (obj != NULL) {
		end = json_tokener_get_parse_end(tok);
		/* Trailing bytes other than white space: not a JSON answer. */
		while (end < len && (buf[end] == ' ' || buf[end] == '\t' ||
		    buf[end] == '\r' || buf[end] == '\n'))
			end++;
		if (end < len) {
			json_object_put(obj);
			obj = NULL;
		}
	}
	json_tokener_free(tok);
	return (obj);
}

/* Follow GET /events with these filters; replaces an earlier stream. */
void
docker_events_follow(struct docker *d, struct json_object *filters,
    docker_event_cb cb, void *arg)
{
	struct docker_events	*ev;

	docker_events_stop(d);
	ev = xcalloc(1, sizeof *ev);
	ev->cb = cb;
	ev->arg = arg;
	ev->backoff_ms = DOCKER_BACKOFF_MIN_MS;
	if (filters != NULL)
		ev->filters = docker_url_encode(json_object_to_json_string_ext(
		    filters, JSON_C_TO_STRING_PLAIN));
	ev->retry = evtimer_new(d->base, docker_events_retry_cb, d);
	ev->up = event_new(d->base, -1, 0, docker_events_up_cb, d);
	ev->tok = json_tokener_new();
	if (ev->retry == NULL || ev->tok == NULL)
		fatalx("docker: out of memory");
	d->events = ev;
	docker_events_connect(d);
}

/* Open the stream, asking for what was missed since the last event. */
static void
docker_events_connect(struct docker *d)
{
	struct docker_events	*ev = d->events;
	char			*path, since[64] = "";
	int64_t			 next;

	/*
	 * Docker replays events from its buffer with since= (inclusive), so a
	 * reconnect misses nothing that happened while the stream was down.
	 */
	if (ev->last_nano > 0) {
		next = ev->last_nano + 1;
		snprintf(since, sizeof since, "since=%" PRId64 ".%09" PRId64 "&",
		    next / 1000000000, next % 1000000000);
	}
	if (ev->filters != NULL)
		xasprintf(&path, "/events?%sfilters=%s", since, ev->filters);
	else if (*since != '\0') {
		since[strlen(since) - 1] = '\0';	/* the '&' */
		xasprintf(&path, "/events?%s", since);
	} else
		path = xstrdup("/events");
	json_tokener_reset(ev->tok);
	ev->req = docker_req_new(d, "GET", path, NULL, 0);
	ev->req->is_events = 1;
	free(path);
}

/* The backoff is over: try again. */
static void
docker_events_retry_cb(evutil_socket_t fd, short events, void *arg)
{
	struct docker	*d = arg;

	(void)fd;
	(void)events;
	docker_events_connect(d);
}

/*
 * The stream is (again) connected: the follower gets a NULL event, so it
 * can catch up on whatever happened while no stream was up.
 */
static void
docker_events_up_cb(evutil_socket_t fd, short events, void *arg)
{
	struct docker	*d = arg;

	(void)fd;
	(void)events;
	d->in_event_cb = 1;
	d->events->cb(NULL, d->events->arg);
	d->in_event_cb = 0;
	if (d->dead)
		docker_free_now(d);
}

/* The stream broke or ended: log it and reconnect after the backoff. */
static void
docker_events_ended(struct docker *d, const char *why)
{
	struct docker_events	*ev = d->events;
	struct timeval		 tv;

	/*
	 * Start the backoff over only after a stream that held for a while:
	 * one that is accepted and then breaks at once must not be retried
	 * at the shortest interval forever.
	 */
	if (ev->up_ms != 0 &&
	    time_mono_ms() - ev->up_ms >= DOCKER_BACKOFF_MAX_MS)
		ev->backoff_ms = DOCKER_BACKOFF_MIN_MS;
	ev->up_ms = 0;
	/* Log first: why may point into the request freed next. */
	log_warnx("docker events stream lost, reconnecting\terror=\"%s\" "
	    "retry_ms=%d", why != NULL ? why : "unknown", ev->backoff_ms);
	docker_req_free(ev->req);
	ev->req = NULL;
	tv.tv_sec = ev->backoff_ms / 1000;
	tv.tv_usec = (ev->backoff_ms % 1000) * 1000;
	evtimer_add(ev->retry, &tv);
	ev->backoff_ms *= 2;
	if (ev->backoff_ms > DOCKER_BACKOFF_MAX_MS)
		ev->backoff_ms = DOCKER_BACKOFF_MAX_MS;
}

/*
 * Feed stream bytes to the tokenizer and hand over every complete object;
 * objects may span calls and several may come in one.
 */
static void
docker_events_feed(struct docker *d, const char *data, size_t len)
{
	struct docker_events	*ev = d->events;
	struct json_object	*obj, *t;
	enum json_tokener_error	 jerr;
	size_t			 used;
	int64_t			 nano;
	int			 n;

	while (len > 0 && !d->dead) {
		n = len > INT32_MAX ? INT32_MAX : (int)len;
		obj = json_tokener_parse_ex(ev->tok, data, n);
		jerr = json_tokener_get_error(ev->tok);
		if (jerr == json_tokener_continue)
			return;
		if (obj == NULL) {
			ev->req->data_error = "bad JSON in the events stream";
			return;
		}
		used = json_tokener_get_parse_end(ev->tok);
		json_tokener_reset(ev->tok);
		data += used;
		len -= used;
		if (!json_object_is_type(obj, json_type_object)) {
			json_object_put(obj);
			continue;
		}
		/*
		 * Where a reconnect resumes (since=timeNano+1): only a
		 * positive integer below INT64_MAX (the +1 must not
		 * overflow); a double, a string or a negative is no time.
		 */
		if (json_object_object_get_ex(obj, "timeNano", &t) &&
		    json_object_is_type(t, json_type_int) &&
		    (nano = json_object_get_int64(t)) > 0 && nano < INT64_MAX)
			ev->last_nano = nano;
		d->in_event_cb = 1;
		ev->cb(obj, ev->arg);
		d->in_event_cb = 0;
		json_object_put(obj);
		if (used == 0)		/* cannot happen; never spin */
			return;
	}
}

/* Stop following events and free the follower. */
static void
docker_events_stop(struct docker *d)
{
	struct docker_events	*ev = d->events;

	if (ev == NULL)
		return;
	if (ev->req != NULL)
		docker_req_free(ev->req);
	event_free(ev->retry);
	event_free(ev->up);
	json_tokener_free(ev->tok);
	free(ev->filters);
	free(ev);
	d->events = NULL;
}

/* %-encode everything but RFC 3986 unreserved characters; malloc'd. */
static char *
docker_url_encode(const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";
	char			*out, *p;
	unsigned char		 c;

	out = p = xmalloc(strlen(s) * 3 + 1);
	for (; *s != '\0'; s++) {
		c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("-._~", c) != NULL)
			*p++ = c;
		else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return (out);
}

/* The client's counters, for GET /metrics. */
const struct docker_stats *
docker_stats(struct docker *d)
{
	return &d->stats;
}
