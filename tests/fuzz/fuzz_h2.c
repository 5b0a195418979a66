/*
 * libFuzzer target: the HTTP/2 server side (edge/h2.c over nghttp2). The
 * input, after the client preface, is what a client sends on one
 * connection: it goes through a socketpair into a real edge connection
 * (h1.c hands it to h2.c at the preface), with a stand-in for control
 * (sandboxes that are unknown, unavailable, held forever, or the API
 * answering at once) and a [route] to a unix socket nobody listens on.
 * The loop runs a bounded number of turns; then the client side closes
 * and every connection must end. A crash, a sanitizer report, or a
 * connection or held lookup left behind aborts.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_ID_UNAVAIL	"01jd3k5x8q2w7e9r4t6y1v3h5m"
#define FUZZ_ID_HELD	"01jd3k5x8q2w7e9r4t6y1v3h5r"
#define FUZZ_TURNS	64

struct control {
	int	unused;
};

struct control_wait {
	int	live;
};

static struct event_base	*fuzz_base;
static struct edge		*fuzz_edge;
static struct control		 fuzz_ctl;
static int			 fuzz_waits;
static int			 fuzz_activity;

enum control_lookup
control_target_lookup(struct control *ctl, const char *id, int port,
    struct control_target *t, control_target_cb cb, void *arg,
    struct control_wait **wait)
{
	*wait = NULL;
	memset(t, 0, sizeof *t);
	snprintf(t->sandbox_id, sizeof t->sandbox_id, "%s", id);
	if (strcmp(id, FUZZ_ID_HELD) == 0) {
		*wait = calloc(1, sizeof **wait);
		fuzz_waits++;
		return CONTROL_LOOKUP_HELD;
	}
	if (strcmp(id, FUZZ_ID_UNAVAIL) == 0) {
		t->kind = TARGET_UNAVAILABLE;
		t->message = "The sandbox is stopped.";
		t->retry_after_s = 1;
	} else
		t->kind = TARGET_UNKNOWN;
	return CONTROL_LOOKUP_DONE;
}

void
control_wait_cancel(struct control_wait *w)
{
	FUZZ_ASSERT(w != NULL);
	fuzz_waits--;
	free(w);
}

void
control_activity(struct control *ctl, const char *id,
    enum control_activity what, int delta)
{
	fuzz_activity += delta;
}

void
control_set_retire_cb(struct control *ctl, control_retire_cb cb, void *arg)
{
}

void
control_set_metrics_cb(struct control *ctl, control_metrics_cb cb, void *arg)
{
}

uint64_t
control_api_body_limit(struct control *ctl, struct http_exchange *ex)
{
	return 4096;
}

void
control_api_dispatch(struct control *ctl, struct http_exchange *ex)
{
	http_exchange_reply_buffer(ex, 200, "text/plain", ex->body);
}

/* Every fuzzed sandbox is public: private previews have their own target. */
int
control_preview_private(struct control *ctl, const char *sandbox_id)
{
	return 0;
}

int
control_preview_verify(struct control *ctl, const char *sandbox_id,
    const char *tok, size_t len, int64_t *expires)
{
	return -1;
}

/* The edge, once: a config with a preview domain and one dead route. */
static void
fuzz_init(void)
{
	static struct config	 cfg;
	static struct cfg_addr	 listen;
	static struct cfg_route	 route;
	struct sockaddr_in	*sin;
	char			*cause = NULL;

	signal(SIGPIPE, SIG_IGN);
	log_init(getenv("FUZZ_DEBUG") != NULL ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN);
	fuzz_base = event_base_new();
	sin = (struct sockaddr_in *)&listen.ss;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	listen.sslen = sizeof *sin;
	listen.text = "127.0.0.1:0";
	cfg.listen = &listen;
	cfg.nlisten = 1;
	cfg.preview_domain = "preview.localhost";
	cfg.wake_timeout_ms = 60000;
	route.name = "dead";
	route.host = "dead.test";
	route.is_unix = 1;
	route.unix_path = "/nonexistent/fuzz_h2.sock";
	cfg.routes = &route;
	cfg.nroutes = 1;
	fuzz_edge = edge_new(fuzz_base, &cfg, &fuzz_ctl, &cause);
	if (fuzz_edge == NULL) {
		fprintf(stderr, "edge_new: %s\n", cause);
		abort();
	}
}

/* Read and drop what the edge wrote to the client. */
static void
fuzz_drain(int fd)
{
	char	buf[65536];

	while (read(fd, buf, sizeof buf) > 0)
		;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char	 preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	struct sockaddr_un	 sun;
	struct edge_conn	*conn;
	int			 sv[2], i;
	ssize_t			 n;
	size_t			 off = 0;

	if (fuzz_edge == NULL)
		fuzz_init();
	if (size > 256 * 1024)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0, sv) != 0)
		abort();
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	edge_conn_accept(fuzz_edge, sv[0], (struct sockaddr *)&sun, 0);
	if (write(sv[1], preface, sizeof preface - 1) !=
	    (ssize_t)(sizeof preface - 1))
		abort();
	for (i = 0; i < FUZZ_TURNS; i++) {
		while (off < size) {
			n = write(sv[1], data + off, size - off);
			if (n <= 0)
				break;
			off += n;
		}
		if (off == size)
			shutdown(sv[1], SHUT_WR);
		event_base_loop(fuzz_base, EVLOOP_NONBLOCK);
		fuzz_drain(sv[1]);
		if (TAILQ_EMPTY(&fuzz_edge->conns) && off == size)
			break;
	}
	close(sv[1]);
	/* Whatever is left: its timers are far off, close it now. */
	for (i = 0; i < 8 && !TAILQ_EMPTY(&fuzz_edge->conns); i++)
		event_base_loop(fuzz_base, EVLOOP_NONBLOCK);
	while ((conn = TAILQ_FIRST(&fuzz_edge->conns)) != NULL)
		edge_conn_close(conn);
	for (i = 0; i < 4; i++)
		event_base_loop(fuzz_base, EVLOOP_NONBLOCK);
	FUZZ_ASSERT(TAILQ_EMPTY(&fuzz_edge->dead));
	FUZZ_ASSERT(fuzz_waits == 0);
	FUZZ_ASSERT(fuzz_activity == 0);
	return 0;
}
