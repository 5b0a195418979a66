/*
 * libFuzzer target: the Docker client's side of the Engine API
 * (control/docker.c), driven through its real socket code. A fake
 * dockerd on a Unix socket in the same event loop reads each request and
 * answers with the input, then closes: the status line and headers,
 * Content-Length, chunked or close-delimited bodies, the JSON answer and,
 * for the GET /events follower, the stream of JSON event objects.
 *
 * The first input byte picks what is asked (a GET, a POST with a body, a
 * HEAD, or the events stream) and whether the answer comes in one write
 * or in pieces; the rest is what dockerd answers. Checks: a request is
 * called back exactly once, with a status of 0 (and a reason) or 100..599;
 * a JSON answer goes through what control reads of inspect answers
 * (control_container_ip, egress_bridge_name: a bridge name it gives is
 * 1..15 safe characters, as it is quoted into the nftables ruleset);
 * every event handed out is a JSON object (or the NULL "reconnected");
 * nothing hangs (the loop is bounded) and, under ASan, nothing leaks.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>
#include <sys/un.h>

#include <signal.h>
#include <stdint.h>
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
#include "control/control_int.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_DOCKER_MAX_LOOPS	100000	/* a bound, never the end */

struct fuzz_docker {
	struct event_base	*base;
	struct evconnlistener	*lev;
	char			 path[108];
	const uint8_t		*reply;
	size_t			 replylen;
	int			 pieces;	/* answer in small writes */
	struct bufferevent	*bev;		/* the fake's connection */
	int			 answered;	/* written and closed */
	int			 ncalls;	/* request callbacks */
	int			 nevents;
};

static struct fuzz_docker	 fz;
static struct control		 fz_ctl;	/* its cf->network only */

static void	fuzz_docker_init(void);
static void	fuzz_docker_cleanup(void);
static void	fuzz_docker_close(void);
static void	fuzz_docker_write_cb(struct bufferevent *, void *);
static void	fuzz_docker_read_cb(struct bufferevent *, void *);
static void	fuzz_docker_event_cb(struct bufferevent *, short, void *);
static void	fuzz_docker_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	fuzz_docker_cb(int, struct json_object *, const char *,
		    void *);
static void	fuzz_docker_events_cb(struct json_object *, void *);

static void
fuzz_docker_close(void)
{
	if (fz.bev != NULL)
		bufferevent_free(fz.bev);
	fz.bev = NULL;
	fz.answered = 1;
}

/* The answer is out: close, so a close-delimited body ends. */
static void
fuzz_docker_write_cb(struct bufferevent *bev, void *arg)
{
	size_t	n;

	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	if (fz.replylen > 0) {
		n = fz.pieces && fz.replylen > 7 ? 7 : fz.replylen;
		bufferevent_write(bev, fz.reply, n);
		fz.reply += n;
		fz.replylen -= n;
		return;
	}
	fuzz_docker_close();
}

/* Answer once the request head (and any Content-Length body) is in. */
static void
fuzz_docker_read_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer		*in = bufferevent_get_input(bev);
	struct evbuffer_ptr	 p;
	const char		*head, *cl;
	size_t			 headlen, bodylen = 0;
	char			 buf[2048];

	p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (p.pos == -1)
		return;
	headlen = (size_t)p.pos + 4;
	head = (const char *)evbuffer_pullup(in, (ssize_t)headlen);
	snprintf(buf, sizeof buf, "%.*s", (int)headlen, head);
	if ((cl = strstr(buf, "Content-Length: ")) != NULL)
		bodylen = strtoul(cl + 16, NULL, 10);
	if (evbuffer_get_length(in) < headlen + bodylen)
		return;
	evbuffer_drain(in, headlen + bodylen);
	bufferevent_setcb(bev, NULL, fuzz_docker_write_cb,
	    fuzz_docker_event_cb, NULL);
	if (fz.replylen == 0) {
		fuzz_docker_close();
		return;
	}
	fuzz_docker_write_cb(bev, NULL);
}

static void
fuzz_docker_event_cb(struct bufferevent *bev, short what, void *arg)
{
	fuzz_docker_close();
}

/* The client connected: one connection per input is answered. */
static void
fuzz_docker_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	if (fz.bev != NULL || fz.answered) {
		evutil_closesocket(fd);
		return;
	}
	fz.bev = bufferevent_socket_new(fz.base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(fz.bev, fuzz_docker_read_cb, NULL,
	    fuzz_docker_event_cb, NULL);
	bufferevent_enable(fz.bev, EV_READ | EV_WRITE);
}

static void
fuzz_docker_cleanup(void)
{
	unlink(fz.path);
}

static void
fuzz_docker_init(void)
{
	struct sockaddr_un	sun;
	char			*errors = NULL;

	signal(SIGPIPE, SIG_IGN);
	log_init(getenv("FUZZ_DEBUG") != NULL ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN);
	fz_ctl.cf = config_parse("fuzz", "network = sandboxd\n", &errors);
	FUZZ_ASSERT(fz_ctl.cf != NULL);
	fz.base = event_base_new();
	snprintf(fz.path, sizeof fz.path, "/tmp/sbx-fuzz-docker-%d.sock",
	    (int)getpid());
	unlink(fz.path);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", fz.path);
	fz.lev = evconnlistener_new_bind(fz.base, fuzz_docker_accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&sun, sizeof sun);
	FUZZ_ASSERT(fz.base != NULL && fz.lev != NULL);
	atexit(fuzz_docker_cleanup);
}

static void
fuzz_docker_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct in_addr	 ip;
	char		 br[16];

	fz.ncalls++;
	FUZZ_ASSERT(status == 0 || (status >= 100 && status <= 599));
	FUZZ_ASSERT(status != 0 || errmsg != NULL);
	FUZZ_ASSERT(status >= 200 && status < 300 ? 1 : errmsg != NULL);
	if (body == NULL)
		return;
	(void)json_object_to_json_string(body);
	/* What control makes of an inspect answer: an address, a bridge. */
	(void)control_container_ip(&fz_ctl, body, &ip);
	if (egress_bridge_name(body, br, sizeof br) == 0)
		FUZZ_ASSERT(*br != '\0' && strlen(br) <= 15 &&
		    strspn(br, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == strlen(br));
}

static void
fuzz_docker_events_cb(struct json_object *ev, void *arg)
{
	fz.nevents++;
	FUZZ_ASSERT(ev == NULL || json_object_is_type(ev, json_type_object));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct docker		*d;
	struct json_object	*body, *filters;
	int			 mode, i;
	uint8_t			*copy;

	if (fz.base == NULL)
		fuzz_docker_init();
	if (size < 1)
		return 0;
	mode = data[0];
	/* A copy exactly as long as the answer: overreads are caught. */
	copy = malloc(size);
	memcpy(copy, data + 1, size - 1);
	fz.reply = copy;
	fz.replylen = size - 1;
	fz.pieces = (mode & 4) != 0;
	fz.answered = 0;
	fz.ncalls = fz.nevents = 0;

	d = docker_new(fz.base, fz.path);
	switch (mode & 3) {
	case 0:
		docker_request(d, "GET", "/containers/sbx/json", NULL, 2000,
		    fuzz_docker_cb, NULL);
		break;
	case 1:
		body = json_tokener_parse("{\"Image\":\"sandboxd/base:latest\","
		    "\"Labels\":{\"sandboxd.id\":\"sbx\"}}");
		docker_request(d, "POST", "/containers/create?name=sbx", body,
		    2000, fuzz_docker_cb, NULL);
		json_object_put(body);
		break;
	case 2:
		docker_request(d, "HEAD", "/_ping", NULL, 2000,
		    fuzz_docker_cb, NULL);
		break;
	default:
		filters = json_tokener_parse("{\"type\":[\"container\"]}");
		docker_events_follow(d, filters, fuzz_docker_events_cb, NULL);
		json_object_put(filters);
		break;
	}
	/*
	 * Until the request is called back (the fake closes after its
	 * answer, so it always is) or, for events, the stream was answered
	 * and read to its end; bounded either way.
	 */
	for (i = 0; i < FUZZ_DOCKER_MAX_LOOPS; i++) {
		if ((mode & 3) != 3 && fz.ncalls > 0)
			break;
		if ((mode & 3) == 3 && fz.answered && i > 0)
			break;
		event_base_loop(fz.base, EVLOOP_ONCE);
	}
	/* Let the client read what the fake wrote before it closed. */
	for (i = 0; i < 8; i++)
		event_base_loop(fz.base, EVLOOP_NONBLOCK);
	if ((mode & 3) != 3)
		FUZZ_ASSERT(fz.ncalls == 1);
	if (getenv("FUZZ_DEBUG") != NULL)
		fprintf(stderr, "fuzz_docker_response: mode %d: %d callbacks, "
		    "%d events\n", mode & 7, fz.ncalls, fz.nevents);
	docker_free(d);
	fuzz_docker_close();
	for (i = 0; i < 4; i++)
		event_base_loop(fz.base, EVLOOP_NONBLOCK);
	free(copy);
	return 0;
}
