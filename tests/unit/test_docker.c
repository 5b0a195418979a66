/*
 * The Docker client against a fake daemon (canned replies on a Unix socket:
 * framing, errors, timeouts, the events stream and its reconnect) and then
 * against the real dockerd: network, a hardened container's whole life,
 * labels, events and error answers. Skipped (77) without a Docker socket.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <json.h>

#include "common/common.h"
#include "control/control.h"
#include "tests/unit/unit.h"

#define DOCKER_SOCK	"/var/run/docker.sock"
#define TEST_IMAGE	"sandboxd-test-busybox:1"
#define NTIMED		5

static struct event_base *base;

/* ------------------------------------------------------------------ */
/* Running one request to completion on the loop. */

struct result {
	int			 done;
	int			 status;
	struct json_object	*body;
	char			*errmsg;
	int64_t			 ms;
	int64_t			 started;
};

/* Record an answer and stop the loop. */
static void
result_cb(int status, struct json_object *body, const char *errmsg, void *arg)
{
	struct result	*r = arg;

	r->done++;
	r->status = status;
	r->body = body != NULL ? json_object_get(body) : NULL;
	r->errmsg = errmsg != NULL ? xstrdup(errmsg) : NULL;
	r->ms = time_mono_ms() - r->started;
	event_base_loopbreak(base);
}

static void
result_clear(struct result *r)
{
	json_object_put(r->body);
	free(r->errmsg);
	memset(r, 0, sizeof *r);
}

/* Send a request and run the loop until it is answered. */
static void
call(struct docker *d, const char *method, const char *path,
    struct json_object *body, int timeout_ms, struct result *r)
{
	memset(r, 0, sizeof *r);
	r->started = time_mono_ms();
	docker_request(d, method, path, body, timeout_ms, result_cb, r);
	/* The callback must never run before docker_request returns. */
	CHECK(r->done == 0);
	while (!r->done)
		event_base_dispatch(base);
	CHECK(r->done == 1);
}

static void
run_for_cb(evutil_socket_t fd, short events, void *arg)
{
	event_base_loopbreak(base);
}

/*
 * Run the loop for ms milliseconds (less if a callback breaks it). Not
 * event_base_loopexit: its timer would outlive an early break and cut a
 * later run short.
 */
static void
run_for(int ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };
	struct event	*ev;

	ev = evtimer_new(base, run_for_cb, NULL);
	evtimer_add(ev, &tv);
	event_base_dispatch(base);
	event_free(ev);
}

/* A string member of a JSON object, or NULL. */
static const char *
jstr(struct json_object *o, const char *key)
{
	struct json_object	*v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return (NULL);
	return (json_object_get_string(v));
}

/* ------------------------------------------------------------------ */
/* A fake Docker: answers every request with the same canned bytes. */

struct fake {
	struct evconnlistener	*lev;
	char			 path[108];
	const char		*reply;		/* NULL: never answer */
	size_t			 replylen;
	int			 nconns;
	char			 lastreq[2048];
	struct bufferevent	*bevs[16];
	int			 nbevs;
	struct ev_token_bucket_cfg *trickle;	/* set: one byte a tick */
};

/* Close a fake connection once its reply is written. */
static void
fake_write_cb(struct bufferevent *bev, void *arg)
{
	struct fake	*f = arg;
	int		 i;

	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	for (i = 0; i < f->nbevs; i++) {
		if (f->bevs[i] == bev)
			f->bevs[i] = NULL;
	}
	bufferevent_free(bev);
}

/* Answer once the whole request (head and Content-Length body) is in. */
static void
fake_read_cb(struct bufferevent *bev, void *arg)
{
	struct fake	*f = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer_ptr p;
	const char	*cl;
	size_t		 len, headlen, bodylen = 0;

	p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (p.pos == -1)
		return;
	headlen = p.pos + 4;
	len = evbuffer_get_length(in);
	if (len >= sizeof f->lastreq)
		len = sizeof f->lastreq - 1;
	memcpy(f->lastreq, evbuffer_pullup(in, len), len);
	f->lastreq[len] = '\0';
	if ((cl = strstr(f->lastreq, "Content-Length: ")) != NULL)
		bodylen = strtoul(cl + 16, NULL, 10);
	if (evbuffer_get_length(in) < headlen + bodylen)
		return;
	evbuffer_drain(in, headlen + bodylen);
	if (f->reply == NULL)
		return;
	bufferevent_write(bev, f->reply, f->replylen);
	bufferevent_setcb(bev, NULL, fake_write_cb, NULL, f);
}

/* A connection to the fake. */
static void
fake_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct fake		*f = arg;
	struct bufferevent	*bev;

	f->nconns++;
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, fake_read_cb, NULL, NULL, f);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	if (f->trickle != NULL)
		bufferevent_set_rate_limit(bev, f->trickle);
	if (f->nbevs < (int)nitems(f->bevs))
		f->bevs[f->nbevs++] = bev;
}

static void
fake_start(struct fake *f)
{
	struct sockaddr_un	sun;

	memset(f, 0, sizeof *f);
	snprintf(f->path, sizeof f->path, "/tmp/sbx-fakedocker-%d.sock",
	    (int)getpid());
	unlink(f->path);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, f->path);
	f->lev = evconnlistener_new_bind(base, fake_accept_cb, f,
	    LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&sun, sizeof sun);
	if (f->lev == NULL)
		fatal("fake docker listen %s", f->path);
}

static void
fake_set(struct fake *f, const char *reply)
{
	f->reply = reply;
	f->replylen = reply != NULL ? strlen(reply) : 0;
}

static void
fake_stop(struct fake *f)
{
	int	i;

	for (i = 0; i < f->nbevs; i++) {
		if (f->bevs[i] != NULL)
			bufferevent_free(f->bevs[i]);
	}
	evconnlistener_free(f->lev);
	if (f->trickle != NULL)
		ev_token_bucket_cfg_free(f->trickle);
	unlink(f->path);
}

/* Make the fake send its replies one byte at a time. */
static void
fake_trickle(struct fake *f)
{
	struct timeval	tick = { 0, 1000 };	/* libevent ticks in ms */

	f->trickle = ev_token_bucket_cfg_new(EV_RATE_LIMIT_MAX,
	    EV_RATE_LIMIT_MAX, 1, 1, &tick);
}

/* ------------------------------------------------------------------ */
/* Against the fake. */

/* The request as written on the wire; Content-Length and plain JSON body. */
static void
test_fake_request_and_framing(void)
{
	struct fake		 f;
	struct docker		*d;
	struct result		 r;
	struct json_object	*body;

	fake_start(&f);
	d = docker_new(base, f.path);

	fake_set(&f, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
	    "Content-Length: 13\r\n\r\n{\"Id\":\"abc\"}\n");
	body = json_object_new_object();
	json_object_object_add(body, "Image", json_object_new_string("x y"));
	call(d, "POST", "/containers/create?name=a", body, 0, &r);
	json_object_put(body);
	CHECK(r.status == 201);
	CHECK(r.errmsg == NULL);
	CHECK_STR(jstr(r.body, "Id"), "abc");
	CHECK(strncmp(f.lastreq, "POST /v1.41/containers/create?name=a "
	    "HTTP/1.1\r\n", 45) == 0);
	CHECK(strstr(f.lastreq, "\r\nContent-Length: 15\r\n") != NULL);
	CHECK(strstr(f.lastreq, "\r\nConnection: close\r\n") != NULL);
	CHECK(strstr(f.lastreq, "\r\n\r\n{\"Image\":\"x y\"}") != NULL);
	result_clear(&r);

	/* Chunked, with the JSON split over chunks. */
	fake_set(&f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "4\r\n[1,2\r\n3\r\n,3]\r\n0\r\n\r\n");
	call(d, "GET", "/containers/json", NULL, 0, &r);
	CHECK(r.status == 200);
	CHECK(r.body != NULL && json_object_is_type(r.body, json_type_array) &&
	    json_object_array_length(r.body) == 3);
	CHECK(strstr(f.lastreq, "\r\nContent-Length: 0\r\n") != NULL);
	result_clear(&r);

	/* Until close, after an interim 100 answer. */
	fake_set(&f, "HTTP/1.1 100 Continue\r\n\r\n"
	    "HTTP/1.1 200 OK\r\n\r\n{\"a\":1}");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 200);
	CHECK(r.body != NULL && json_object_is_type(r.body, json_type_object));
	result_clear(&r);

	/* A bare number needs the end of input to be complete. */
	fake_set(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n42");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 200);
	CHECK(r.body != NULL && json_object_get_int(r.body) == 42);
	result_clear(&r);

	/* Not JSON: no body, but the status. */
	fake_set(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
	call(d, "GET", "/_ping", NULL, 0, &r);
	CHECK(r.status == 200);
	CHECK(r.body == NULL);
	CHECK(r.errmsg == NULL);
	result_clear(&r);

	/* JSON followed by junk is not JSON. */
	fake_set(&f, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{} junk!");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 200 && r.body == NULL);
	result_clear(&r);

	/* 204: no body at all. */
	fake_set(&f, "HTTP/1.1 204 No Content\r\n\r\n");
	call(d, "POST", "/containers/a/start", NULL, 0, &r);
	CHECK(r.status == 204 && r.body == NULL && r.errmsg == NULL);
	result_clear(&r);

	docker_free(d);
	fake_stop(&f);
}

/* Errors: Docker's message, the reason phrase, broken and huge replies. */
static void
test_fake_errors(void)
{
	struct fake		 f;
	struct docker		*d;
	struct result		 r;

	fake_start(&f);
	d = docker_new(base, f.path);

	fake_set(&f, "HTTP/1.1 409 Conflict\r\nContent-Length: 26\r\n\r\n"
	    "{\"message\":\"name in use\"}\n");
	call(d, "POST", "/containers/create", NULL, 0, &r);
	CHECK(r.status == 409);
	CHECK_STR(r.errmsg, "name in use");
	CHECK(r.body != NULL);
	result_clear(&r);

	fake_set(&f, "HTTP/1.1 503 Oops\r\nContent-Length: 3\r\n\r\nabc");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 503);
	CHECK_STR(r.errmsg, "Oops");
	CHECK(r.body == NULL);
	result_clear(&r);

	fake_set(&f, "garbage\r\n\r\n");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 0);
	CHECK(r.errmsg != NULL);
	result_clear(&r);

	fake_set(&f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 0);
	CHECK(r.errmsg != NULL && strstr(r.errmsg, "closed") != NULL);
	result_clear(&r);

	fake_set(&f, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 0);
	CHECK(r.errmsg != NULL && strstr(r.errmsg, "too large") != NULL);
	result_clear(&r);

	fake_set(&f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "zz\r\n");
	call(d, "GET", "/x", NULL, 0, &r);
	CHECK(r.status == 0 && r.errmsg != NULL);
	result_clear(&r);

	/* Refused before anything is sent: no request smuggling. */
	call(d, "GET", "/x HTTP/1.1\r\nX: y", NULL, 0, &r);
	CHECK(r.status == 0 && r.errmsg != NULL);
	result_clear(&r);
	call(d, "GET", "x", NULL, 0, &r);
	CHECK(r.status == 0 && r.errmsg != NULL);
	result_clear(&r);
	call(d, "G T", "/x", NULL, 0, &r);
	CHECK(r.status == 0 && r.errmsg != NULL);
	result_clear(&r);

	/* A daemon that never answers. */
	fake_set(&f, NULL);
	call(d, "GET", "/x", NULL, 150, &r);
	CHECK(r.status == 0);
	CHECK_STR(r.errmsg, "timed out");
	CHECK(r.ms >= 140 && r.ms < 2000);
	result_clear(&r);

	docker_free(d);
	fake_stop(&f);
}

static int	cancelled_calls;

static void
cancelled_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	cancelled_calls++;
}

/* docker_free with requests in flight: no callbacks, nothing leaks. */
static void
test_fake_free_in_flight(void)
{
	struct fake		 f;
	struct docker		*d;

	fake_start(&f);
	fake_set(&f, NULL);
	d = docker_new(base, f.path);
	docker_request(d, "GET", "/a", NULL, 0, cancelled_cb, NULL);
	docker_request(d, "GET", "/b", NULL, 0, cancelled_cb, NULL);
	run_for(50);
	CHECK(f.nconns == 2);
	/* And one that has not even reported its connect failure yet. */
	docker_free(d);
	d = docker_new(base, "/nonexistent/docker.sock");
	docker_request(d, "GET", "/c", NULL, 0, cancelled_cb, NULL);
	docker_free(d);
	run_for(50);
	CHECK(cancelled_calls == 0);
	fake_stop(&f);
}

struct evrec {
	struct docker	*d;
	int		 n;
	char		 seen[8192];
	int		 free_at;	/* docker_free from the callback */
	int		 ups;		/* (re)connections told */
};

/* Collect "status:id" of each event. */
static void
evrec_cb(struct json_object *ev, void *arg)
{
	struct evrec	*e = arg;
	const char	*status, *id;
	size_t		 len = strlen(e->seen);

	if (ev == NULL) {
		e->ups++;
		return;
	}
	status = jstr(ev, "Action");
	id = jstr(ev, "id");
	if (status == NULL)
		status = jstr(ev, "status");
	e->n++;
	snprintf(e->seen + len, sizeof e->seen - len, "%s:%s,",
	    status ? status : "?", id ? id : "?");
	if (e->free_at != 0 && e->n == e->free_at) {
		docker_free(e->d);
		e->d = NULL;
		event_base_loopbreak(base);
	}
}

/*
 * The stream: objects split across chunks, two in one chunk, a break, a
 * reconnect that asks for what came since, and docker_free from the event
 * callback in the middle of a chunk.
 */
static void
test_fake_events(void)
{
	struct fake		 f;
	struct evrec		 e;
	struct json_object	*filters, *arr;
	int64_t			 t0;

	fake_start(&f);
	fake_set(&f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "f\r\n{\"status\":\"star\r\n"
	    "3e\r\nt\",\"id\":\"a\",\"timeNano\":1000000000123}\n{\"status\":\"die\","
	    "\"id\":\"a\"\r\n"
	    "1b\r\n,\"timeNano\":1000000000456}\n\r\n");
	memset(&e, 0, sizeof e);
	e.d = docker_new(base, f.path);
	e.free_at = 3;
	filters = json_object_new_object();
	arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_string("container"));
	json_object_object_add(filters, "type", arr);
	docker_events_follow(e.d, filters, evrec_cb, &e);
	json_object_put(filters);

	/* The stream ends without its last chunk: reconnect after 200 ms. */
	t0 = time_mono_ms();
	while (e.d != NULL && time_mono_ms() - t0 < 5000)
		run_for(100);
	CHECK(e.d == NULL);
	CHECK(f.nconns == 2);
	/* Each connection is told; the second may be freed before its turn. */
	CHECK(e.ups >= 1);
	CHECK(strncmp(e.seen, "start:a,die:a,start:a,", 22) == 0);
	CHECK(strstr(f.lastreq, "GET /v1.41/events?since=1000.000000457&"
	    "filters=%7B%22type%22%3A%5B%22container%22%5D%7D HTTP/1.1") !=
	    NULL);
	/* libevent's coarse clock may fire a timer a few ms early. */
	CHECK(time_mono_ms() - t0 >= 180);
	fake_stop(&f);
}

/* Replies that arrive a byte at a time: every parser state split. */
/*
 * A timeNano that is not a sane positive integer (the largest int64, a
 * double past it, a negative one, a string) is not taken for the point
 * to resume from: the reconnect asks since the last good one, never
 * since an overflowed "-9223372036.-854775808".
 */
static void
test_fake_events_bad_time(void)
{
	struct fake		 f;
	struct evrec		 e;
	int64_t			 t0;

	fake_start(&f);
	fake_set(&f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "eb\r\n"
	    "{\"status\":\"start\",\"id\":\"a\",\"timeNano\":1000000000123}\n"
	    "{\"status\":\"die\",\"id\":\"a\",\"timeNano\":9223372036854775807}\n"
	    "{\"status\":\"stop\",\"id\":\"a\",\"timeNano\":1e30}\n"
	    "{\"status\":\"kill\",\"id\":\"a\",\"timeNano\":-5}\n"
	    "{\"status\":\"oom\",\"id\":\"a\",\"timeNano\":\"7\"}\n"
	    "\r\n");
	memset(&e, 0, sizeof e);
	e.d = docker_new(base, f.path);
	e.free_at = 6;
	docker_events_follow(e.d, NULL, evrec_cb, &e);
	t0 = time_mono_ms();
	while (e.d != NULL && time_mono_ms() - t0 < 5000)
		run_for(100);
	CHECK(e.d == NULL);
	CHECK(f.nconns == 2);
	CHECK(strncmp(e.seen, "start:a,die:a,stop:a,kill:a,oom:a,start:a,",
	    42) == 0);
	CHECK(strstr(f.lastreq, "GET /v1.41/events?since=1000.000000124 "
	    "HTTP/1.1") != NULL);
	fake_stop(&f);
}

static void
test_fake_trickle(void)
{
	struct fake		 f;
	struct docker		*d;
	struct result		 r;
	struct evrec		 e;
	int64_t			 t0;

	fake_start(&f);
	fake_trickle(&f);
	d = docker_new(base, f.path);
	fake_set(&f, "HTTP/1.1 404 Not Found\r\nContent-Length: 34\r\n\r\n"
	    "{\"message\":\"No such container: x\"}");
	call(d, "GET", "/containers/x/json", NULL, 0, &r);
	CHECK(r.status == 404);
	CHECK_STR(r.errmsg, "No such container: x");
	result_clear(&r);
	docker_free(d);

	fake_set(&f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "28\r\n{\"Action\":\"create\",\"id\":\"b\"}\n{\"Action\":\"\r\n"
	    "10\r\nstart\",\"id\":\"b\"}\r\n");
	memset(&e, 0, sizeof e);
	e.d = docker_new(base, f.path);
	e.free_at = 2;
	docker_events_follow(e.d, NULL, evrec_cb, &e);
	t0 = time_mono_ms();
	while (e.d != NULL && time_mono_ms() - t0 < 5000)
		run_for(50);
	CHECK(e.d == NULL);
	CHECK_STR(e.seen, "create:b,start:b,");
	CHECK(strstr(f.lastreq, "GET /v1.41/events HTTP/1.1\r\n") != NULL);
	fake_stop(&f);

	/* A stream without chunking, read until close; freed on the EOF. */
	fake_start(&f);
	fake_set(&f, "HTTP/1.1 200 OK\r\n\r\n{\"Action\":\"kill\",\"id\":\"c\"}"
	    "{\"Action\":\"die\",\"id\":\"c\"}");
	memset(&e, 0, sizeof e);
	e.d = docker_new(base, f.path);
	e.free_at = 3;
	docker_events_follow(e.d, NULL, evrec_cb, &e);
	t0 = time_mono_ms();
	while (e.d != NULL && time_mono_ms() - t0 < 5000)
		run_for(50);
	CHECK(e.d == NULL);
	CHECK_STR(e.seen, "kill:c,die:c,kill:c,");
	CHECK(f.nconns == 2);
	fake_stop(&f);
}

/* A daemon that refuses the stream: retries back off, docker_free stops. */
static void
test_fake_events_backoff(void)
{
	struct fake	 f;
	struct evrec	 e;

	fake_start(&f);
	fake_set(&f, "HTTP/1.1 500 Internal Server Error\r\n"
	    "Content-Length: 18\r\n\r\n{\"message\":\"boom\"}");
	memset(&e, 0, sizeof e);
	e.d = docker_new(base, f.path);
	docker_events_follow(e.d, NULL, evrec_cb, &e);
	/* Tries at 0, 200, 600, 1400 ms; at 200 ms fixed it would be 8. */
	run_for(1700);
	CHECK(f.nconns == 4);
	CHECK(e.n == 0);
	docker_free(e.d);	/* with the retry timer pending */
	run_for(50);
	fake_stop(&f);
}

/* A socket path with nobody behind it. */
static void
test_missing_socket(void)
{
	struct docker	*d;
	struct result	 r;

	d = docker_new(base, "/nonexistent/docker.sock");
	call(d, "GET", "/_ping", NULL, 0, &r);
	CHECK(r.status == 0);
	CHECK(r.errmsg != NULL &&
	    strstr(r.errmsg, "No such file or directory") != NULL);
	CHECK(r.body == NULL);
	result_clear(&r);
	docker_free(d);
}

/* ------------------------------------------------------------------ */
/* Against the real dockerd. */

static char	instance[64];
static char	netname[64];
static char	tmpdir[64];
static struct docker *real;

/* The label filter {"label":["io.sandboxd.instance=<instance>"]}, %-less. */
static struct json_object *
label_filter(const char *type)
{
	struct json_object	*f, *arr;
	char			 label[128];

	f = json_object_new_object();
	snprintf(label, sizeof label, "%s=%s", CONTROL_LABEL_INSTANCE, instance);
	arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_string(label));
	json_object_object_add(f, "label", arr);
	if (type != NULL) {
		arr = json_object_new_array();
		json_object_array_add(arr, json_object_new_string(type));
		json_object_object_add(f, "type", arr);
	}
	return (f);
}

/* A string array from a NULL-terminated list. */
static struct json_object *
strarr(const char *first, ...)
{
	struct json_object	*arr = json_object_new_array();
	const char		*s;
	va_list			 ap;

	va_start(ap, first);
	for (s = first; s != NULL; s = va_arg(ap, const char *))
		json_object_array_add(arr, json_object_new_string(s));
	va_end(ap);
	return (arr);
}

/* The container create body DOCKER.md gives, hardening flags and all. */
static struct json_object *
container_spec(const char *sandbox, int init)
{
	struct json_object	*c, *hc, *labels, *ul, *u, *tmpfs, *rp;
	char			 bind[128];

	c = json_object_new_object();
	json_object_object_add(c, "Image", json_object_new_string(TEST_IMAGE));
	json_object_object_add(c, "Entrypoint", strarr("/bin/httpd", NULL));
	json_object_object_add(c, "Cmd",
	    strarr("-f", "-p", "3000", "-h", "/tmp", NULL));
	json_object_object_add(c, "User", json_object_new_string("1000:1000"));
	json_object_object_add(c, "WorkingDir",
	    json_object_new_string("/workspace"));
	json_object_object_add(c, "Env", strarr("HOME=/home/sandbox", NULL));
	labels = json_object_new_object();
	json_object_object_add(labels, CONTROL_LABEL_SANDBOX,
	    json_object_new_string(sandbox));
	json_object_object_add(labels, CONTROL_LABEL_INSTANCE,
	    json_object_new_string(instance));
	json_object_object_add(c, "Labels", labels);

	hc = json_object_new_object();
	json_object_object_add(hc, "ReadonlyRootfs",
	    json_object_new_boolean(1));
	json_object_object_add(hc, "CapDrop", strarr("ALL", NULL));
	json_object_object_add(hc, "SecurityOpt",
	    strarr("no-new-privileges", NULL));
	json_object_object_add(hc, "PidsLimit", json_object_new_int(128));
	json_object_object_add(hc, "Memory", json_object_new_int64(268435456));
	json_object_object_add(hc, "MemorySwap",
	    json_object_new_int64(268435456));
	json_object_object_add(hc, "NanoCpus",
	    json_object_new_int64(1000000000));
	u = json_object_new_object();
	json_object_object_add(u, "Name", json_object_new_string("nofile"));
	json_object_object_add(u, "Soft", json_object_new_int(4096));
	json_object_object_add(u, "Hard", json_object_new_int(4096));
	ul = json_object_new_array();
	json_object_array_add(ul, u);
	json_object_object_add(hc, "Ulimits", ul);
	tmpfs = json_object_new_object();
	json_object_object_add(tmpfs, "/tmp",
	    json_object_new_string("rw,nosuid,nodev,size=256m"));
	json_object_object_add(hc, "Tmpfs", tmpfs);
	snprintf(bind, sizeof bind, "%s:/workspace:rw", tmpdir);
	json_object_object_add(hc, "Binds", strarr(bind, NULL));
	json_object_object_add(hc, "NetworkMode",
	    json_object_new_string(netname));
	rp = json_object_new_object();
	json_object_object_add(rp, "Name", json_object_new_string("no"));
	json_object_object_add(hc, "RestartPolicy", rp);
	/* With an init as PID 1, SIGTERM is not ignored: stop does not wait. */
	if (init)
		json_object_object_add(hc, "Init", json_object_new_boolean(1));
	json_object_object_add(c, "HostConfig", hc);
	return (c);
}

static void
test_ping_version(void)
{
	struct docker	*d = real;
	struct result	r;

	call(d, "GET", "/_ping", NULL, 0, &r);
	CHECK(r.status == 200);
	CHECK(r.errmsg == NULL);
	CHECK(r.body == NULL);		/* "OK" is not JSON */
	result_clear(&r);

	call(d, "GET", "/version", NULL, 0, &r);
	CHECK(r.status == 200);
	CHECK(jstr(r.body, "ApiVersion") != NULL);
	CHECK(jstr(r.body, "Version") != NULL);
	fprintf(stderr, "# docker %s, API %s\n",
	    jstr(r.body, "Version") ? jstr(r.body, "Version") : "?",
	    jstr(r.body, "ApiVersion") ? jstr(r.body, "ApiVersion") : "?");
	result_clear(&r);
}

/* Errors from the real daemon: 404 and bad bodies. */
static void
test_docker_errors(void)
{
	struct docker	*d = real;
	struct result		 r;
	struct json_object	*bad;
	char			 path[128];

	snprintf(path, sizeof path, "/containers/%s-nope/json", instance);
	call(d, "GET", path, NULL, 0, &r);
	CHECK(r.status == 404);
	CHECK(r.errmsg != NULL && strstr(r.errmsg, "No such container") != NULL);
	result_clear(&r);

	/*
	 * Malformed JSON on the wire (a double serialises as its text). Docker
	 * 20.10 answers 400 on most routes but 500 on containers/create.
	 */
	bad = json_object_new_double_s(0, "{\"Name\": ");
	call(d, "POST", "/networks/create", bad, 0, &r);
	CHECK(r.status == 400);
	CHECK_STR(r.errmsg, "unexpected EOF");
	result_clear(&r);
	call(d, "POST", "/containers/create", bad, 0, &r);
	json_object_put(bad);
	CHECK(r.status >= 400);
	CHECK_STR(r.errmsg, "unexpected EOF");
	result_clear(&r);

	/* Well-formed JSON of the wrong shape. */
	bad = json_object_new_object();
	json_object_object_add(bad, "Name", json_object_new_int(5));
	call(d, "POST", "/networks/create", bad, 0, &r);
	json_object_put(bad);
	CHECK(r.status == 400);
	CHECK(r.errmsg != NULL && strstr(r.errmsg, "unmarshal") != NULL);
	result_clear(&r);

	/* Unknown image. */
	bad = json_object_new_object();
	json_object_object_add(bad, "Image",
	    json_object_new_string("sandboxd-no-such-image:0"));
	call(d, "POST", "/containers/create", bad, 0, &r);
	json_object_put(bad);
	CHECK(r.status == 404);
	CHECK(r.errmsg != NULL);
	result_clear(&r);
}

static int
cmp64(const void *a, const void *b)
{
	int64_t	x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x < y ? -1 : x > y);
}

/* Run the loop until cond holds or ms pass. */
#define WAIT_UNTIL(cond, ms) do {					\
	int64_t wait_t0_ = time_mono_ms();				\
	while (!(cond) && time_mono_ms() - wait_t0_ < (ms))		\
		run_for(20);						\
} while (0)

/*
 * A container's whole life with the hardening flags, timed; init adds
 * "Init": true to see what stop costs when PID 1 handles SIGTERM.
 */
static void
lifecycle(int init)
{
	struct docker	*d = real;
	struct result		 r;
	struct json_object	*body, *o, *nets, *net, *ip, *item, *lab;
	struct evrec		 e;
	struct docker		*ed;
	int64_t			 tc[NTIMED], ts[NTIMED], tt[NTIMED];
	char			 path[512], id[80], want[256], name[96];
	char			 enc[256];
	const char		*filt;
	struct in_addr		 a;
	const char		*s;
	size_t			 i, j;
	int			 k, found;

	/* Network with ICC off and our label. */
	body = json_object_new_object();
	json_object_object_add(body, "Name", json_object_new_string(netname));
	json_object_object_add(body, "CheckDuplicate",
	    json_object_new_boolean(1));
	json_object_object_add(body, "Driver", json_object_new_string("bridge"));
	o = json_object_new_object();
	json_object_object_add(o, "com.docker.network.bridge.enable_icc",
	    json_object_new_string("false"));
	json_object_object_add(body, "Options", o);
	o = json_object_new_object();
	json_object_object_add(o, CONTROL_LABEL_INSTANCE,
	    json_object_new_string(instance));
	json_object_object_add(body, "Labels", o);
	call(d, "POST", "/networks/create", body, 0, &r);
	CHECK(r.status == 201);
	CHECK(jstr(r.body, "Id") != NULL);
	result_clear(&r);
	/* The same name again: CheckDuplicate refuses it. */
	call(d, "POST", "/networks/create", body, 0, &r);
	CHECK(r.status == 409);
	CHECK(r.errmsg != NULL);
	result_clear(&r);
	json_object_put(body);

	/* Follow our containers' events from a second client. */
	memset(&e, 0, sizeof e);
	ed = docker_new(base, DOCKER_SOCK);
	body = label_filter("container");
	docker_events_follow(ed, body, evrec_cb, &e);
	json_object_put(body);
	run_for(100);	/* let the stream connect before anything happens */

	for (k = 0; k < NTIMED; k++) {
		snprintf(name, sizeof name, "%s-c%d", instance, k);
		body = container_spec(name, init);
		snprintf(path, sizeof path, "/containers/create?name=%s", name);
		call(d, "POST", path, body, 0, &r);
		json_object_put(body);
		CHECK(r.status == 201);
		tc[k] = r.ms;
		s = jstr(r.body, "Id");
		CHECK(s != NULL);
		snprintf(id, sizeof id, "%s", s ? s : "none");
		if (r.status != 201)
			fprintf(stderr, "# create: %d %s\n", r.status,
			    r.errmsg ? r.errmsg : "");
		result_clear(&r);

		snprintf(path, sizeof path, "/containers/%s/start", id);
		call(d, "POST", path, NULL, 0, &r);
		CHECK(r.status == 204);
		if (r.status != 204)
			fprintf(stderr, "# start: %d %s\n", r.status,
			    r.errmsg ? r.errmsg : "");
		ts[k] = r.ms;
		result_clear(&r);
		/* Again: already running. */
		call(d, "POST", path, NULL, 0, &r);
		CHECK(r.status == 304);
		result_clear(&r);

		snprintf(path, sizeof path, "/containers/%s/json", id);
		call(d, "GET", path, NULL, 0, &r);
		CHECK(r.status == 200);
		ip = NULL;
		if (json_object_object_get_ex(r.body, "NetworkSettings", &o) &&
		    json_object_object_get_ex(o, "Networks", &nets) &&
		    json_object_object_get_ex(nets, netname, &net))
			json_object_object_get_ex(net, "IPAddress", &ip);
		s = ip != NULL ? json_object_get_string(ip) : NULL;
		CHECK(s != NULL && inet_pton(AF_INET, s, &a) == 1);
		if (k == 0)
			fprintf(stderr, "# container ip %s\n", s ? s : "?");
		CHECK(json_object_object_get_ex(r.body, "HostConfig", &o) &&
		    json_object_object_get_ex(o, "ReadonlyRootfs", &item) &&
		    json_object_get_boolean(item));
		result_clear(&r);

		if (k == 0) {
			/* Listed by our label, and only ours. */
			body = label_filter(NULL);
			filt = json_object_to_json_string_ext(body,
			    JSON_C_TO_STRING_PLAIN);
			for (i = j = 0; filt[i] != '\0' && j < sizeof enc - 4;
			    i++) {
				if (strchr("{}[]\":=", filt[i]) != NULL)
					j += snprintf(enc + j, sizeof enc - j,
					    "%%%02X", (unsigned char)filt[i]);
				else
					enc[j++] = filt[i];
			}
			enc[j] = '\0';
			json_object_put(body);
			snprintf(path, sizeof path,
			    "/containers/json?all=true&filters=%s", enc);
			call(d, "GET", path, NULL, 0, &r);
			CHECK(r.status == 200);
			CHECK(r.body != NULL && json_object_is_type(r.body,
			    json_type_array) &&
			    json_object_array_length(r.body) == 1);
			found = 0;
			if (r.body != NULL && json_object_is_type(r.body,
			    json_type_array) &&
			    json_object_array_length(r.body) > 0) {
				item = json_object_array_get_idx(r.body, 0);
				found = jstr(item, "Id") != NULL &&
				    strcmp(jstr(item, "Id"), id) == 0;
				CHECK(json_object_object_get_ex(item, "Labels",
				    &lab) && jstr(lab, CONTROL_LABEL_SANDBOX)
				    != NULL && strcmp(jstr(lab,
				    CONTROL_LABEL_SANDBOX), name) == 0);
			}
			CHECK(found);
			result_clear(&r);
		}

		snprintf(path, sizeof path, "/containers/%s/stop?t=2", id);
		call(d, "POST", path, NULL, 0, &r);
		CHECK(r.status == 204);
		tt[k] = r.ms;
		result_clear(&r);
		call(d, "POST", path, NULL, 0, &r);
		CHECK(r.status == 304);
		result_clear(&r);

		/* The stream saw it start and die. */
		snprintf(want, sizeof want, "die:%s,", id);
		WAIT_UNTIL(strstr(e.seen, want) != NULL, 5000);
		CHECK(strstr(e.seen, want) != NULL);
		snprintf(want, sizeof want, "start:%s,", id);
		CHECK(strstr(e.seen, want) != NULL);
		e.seen[0] = '\0';

		snprintf(path, sizeof path, "/containers/%s?force=true", id);
		call(d, "DELETE", path, NULL, 0, &r);
		CHECK(r.status == 204);
		result_clear(&r);
		call(d, "DELETE", path, NULL, 0, &r);
		CHECK(r.status == 404);
		result_clear(&r);
	}
	docker_free(ed);

	snprintf(path, sizeof path, "/networks/%s", netname);
	call(d, "DELETE", path, NULL, 0, &r);
	CHECK(r.status == 204);
	result_clear(&r);

	qsort(tc, NTIMED, sizeof tc[0], cmp64);
	qsort(ts, NTIMED, sizeof ts[0], cmp64);
	qsort(tt, NTIMED, sizeof tt[0], cmp64);
	fprintf(stderr, "# %s, median over %d: create %" PRId64 " ms, start %"
	    PRId64 " ms, stop %" PRId64 " ms (min/max create %" PRId64 "/%"
	    PRId64 ", start %" PRId64 "/%" PRId64 ", stop %" PRId64 "/%"
	    PRId64 ")\n", init ? "Init: true" : "as DOCKER.md", NTIMED, tc[NTIMED / 2], ts[NTIMED / 2],
	    tt[NTIMED / 2], tc[0], tc[NTIMED - 1], ts[0], ts[NTIMED - 1],
	    tt[0], tt[NTIMED - 1]);
}

static void
test_lifecycle(void)
{
	lifecycle(0);
}

static void
test_lifecycle_init(void)
{
	lifecycle(1);
}

/* Remove whatever a failed run left behind, by label. */
static void
cleanup(void)
{
	char	cmd[512];

	snprintf(cmd, sizeof cmd, "ids=$(docker ps -aq --filter "
	    "label=%s=%s); [ -z \"$ids\" ] || docker rm -f $ids >/dev/null; "
	    "ids=$(docker network ls -q --filter label=%s=%s); "
	    "[ -z \"$ids\" ] || docker network rm $ids >/dev/null",
	    CONTROL_LABEL_INSTANCE, instance, CONTROL_LABEL_INSTANCE, instance);
	if (system(cmd) != 0)
		fprintf(stderr, "# cleanup failed: %s\n", cmd);
	if (tmpdir[0] != '\0')
		rmdir(tmpdir);
}

/* 1 if the Docker socket accepts a connection. */
static int
docker_reachable(void)
{
	struct sockaddr_un	sun;
	int			fd, ok;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, DOCKER_SOCK);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1)
		return (0);
	ok = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
	close(fd);
	return (ok);
}

int
main(void)
{
	struct docker	*d;
	const char	*top;
	char		 cmd[1024];
	unsigned char	 rnd[4];

	signal(SIGPIPE, SIG_IGN);
	log_init(getenv("SBX_TEST_DEBUG") != NULL ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN);
	if ((base = event_base_new()) == NULL)
		fatalx("event_base_new");

	RUN(test_fake_request_and_framing);
	RUN(test_fake_errors);
	RUN(test_fake_free_in_flight);
	RUN(test_fake_events);
	RUN(test_fake_events_bad_time);
	RUN(test_fake_trickle);
	RUN(test_fake_events_backoff);
	RUN(test_missing_socket);

	if (!docker_reachable()) {
		fprintf(stderr, "# %s: cannot connect, skipping the dockerd "
		    "tests\n", DOCKER_SOCK);
		event_base_free(base);
		if (unit_failed != 0)
			return (unit_finish());
		printf("SKIP: no Docker daemon at %s\n", DOCKER_SOCK);
		return (77);
	}

	if ((top = getenv("top_srcdir")) == NULL)
		top = "..";
	snprintf(cmd, sizeof cmd, "sh '%s/tests/mkimage.sh' %s >/dev/null",
	    top, TEST_IMAGE);
	if (system(cmd) != 0) {
		fprintf(stderr, "# %s failed\n", cmd);
		event_base_free(base);
		return (1);
	}

	random_bytes(rnd, sizeof rnd);
	snprintf(instance, sizeof instance, "sbxtest-%d-%02x%02x%02x%02x",
	    (int)getpid(), rnd[0], rnd[1], rnd[2], rnd[3]);
	snprintf(netname, sizeof netname, "%s", instance);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/sbxtest-ws.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		fatal("mkdtemp");
	/* The workspace belongs to the sandbox user; needs root, as dockerd. */
	if (chown(tmpdir, 1000, 1000) == -1)
		fprintf(stderr, "# chown %s: %s\n", tmpdir, strerror(errno));

	d = real = docker_new(base, DOCKER_SOCK);
	RUN(test_ping_version);
	RUN(test_docker_errors);
	RUN(test_lifecycle);
	RUN(test_lifecycle_init);
	docker_free(d);

	cleanup();
	event_base_free(base);
	libevent_global_shutdown();
	return (unit_finish());
}
