/*
 * libFuzzer target: what the daemon reads from agentd (control/agent.c),
 * through the real rendezvous. agentd runs inside the sandbox, so anything
 * there can connect to the socket and answer: the answer is the input.
 * A fake agentd connects to the hub's socket, reads the request the hub
 * sends it and answers with the input, then closes.
 *
 * The first input byte picks the kind of request (a plain request such as
 * POST /exec, a streamed one such as a task's events, or the terminal's
 * upgrade), whether the answer comes in one write or in pieces, and
 * whether agentd's connection was there (idle) before the request.
 * Checks: exactly one end callback (or, for the upgrade, one of the
 * upgrade and fail callbacks); status 0 always has a reason, a body is
 * NUL-terminated at its length; a streamed line holds no newline and is
 * NUL-terminated at its length; nothing hangs or leaks.
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
#include <json.h>

#include "common/common.h"
#include "control/control.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_AGENT_ID		"sbx_fuzzagentanswer0"
#define FUZZ_AGENT_MAX_LOOPS	100000	/* the 2 s request timeout ends it first */

struct fuzz_agent {
	struct event_base	*base;
	struct agent_hub	*hub;
	char			 dir[64];
	char			 path[108];
	const uint8_t		*reply;
	size_t			 replylen;
	int			 pieces;
	struct bufferevent	*bev;		/* the fake agentd's end */
	int			 nend;		/* end, fail or upgrade calls */
	int			 nlines;
};

static struct fuzz_agent	 fa;

static void	fuzz_agent_init(void);
static void	fuzz_agent_cleanup(void);
static void	fuzz_agent_close(void);
static void	fuzz_agent_connect(void);
static void	fuzz_agent_write_cb(struct bufferevent *, void *);
static void	fuzz_agent_read_cb(struct bufferevent *, void *);
static void	fuzz_agent_event_cb(struct bufferevent *, short, void *);
static void	fuzz_agent_end_cb(int, const char *, size_t, const char *,
		    void *);
static void	fuzz_agent_line_cb(const char *, size_t, void *);
static void	fuzz_agent_up_cb(struct bufferevent *, void *);

static void
fuzz_agent_close(void)
{
	if (fa.bev != NULL)
		bufferevent_free(fa.bev);
	fa.bev = NULL;
}

static void
fuzz_agent_write_cb(struct bufferevent *bev, void *arg)
{
	size_t	n;

	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	if (fa.replylen > 0) {
		n = fa.pieces && fa.replylen > 5 ? 5 : fa.replylen;
		bufferevent_write(bev, fa.reply, n);
		fa.reply += n;
		fa.replylen -= n;
		return;
	}
	fuzz_agent_close();
}

/* The hub's request: answer once its head and body are in. */
static void
fuzz_agent_read_cb(struct bufferevent *bev, void *arg)
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
	bufferevent_setcb(bev, NULL, fuzz_agent_write_cb, fuzz_agent_event_cb,
	    NULL);
	fuzz_agent_write_cb(bev, NULL);
}

static void
fuzz_agent_event_cb(struct bufferevent *bev, short what, void *arg)
{
	fuzz_agent_close();
}

/* agentd dials the hub, as it does from inside the sandbox. */
static void
fuzz_agent_connect(void)
{
	struct sockaddr_un	sun;
	char			env[AGENT_TOKEN_ENV_SIZE], hello[256];
	int			fd, n;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", fa.path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FUZZ_ASSERT(fd != -1);
	FUZZ_ASSERT(connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0);
	/*
	 * agentd's first line, the hello with the sandbox's token (the
	 * protocol's prefix, as agentd/agentd.h spells it): without it the
	 * hub takes the connection for an impostor's.
	 */
	agent_token_env(fa.hub, FUZZ_AGENT_ID, env, sizeof env);
	n = snprintf(hello, sizeof hello, "sandboxd-agentd/1 %s\n",
	    strchr(env, '=') + 1);
	FUZZ_ASSERT(n > 0 && write(fd, hello, (size_t)n) == n);
	evutil_make_socket_nonblocking(fd);
	fa.bev = bufferevent_socket_new(fa.base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(fa.bev, fuzz_agent_read_cb, NULL,
	    fuzz_agent_event_cb, NULL);
	bufferevent_enable(fa.bev, EV_READ | EV_WRITE);
}

static void
fuzz_agent_cleanup(void)
{
	fuzz_rm_tree(fa.dir);
}

static void
fuzz_agent_init(void)
{
	signal(SIGPIPE, SIG_IGN);
	log_init(getenv("FUZZ_DEBUG") != NULL ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN);
	fa.base = event_base_new();
	snprintf(fa.dir, sizeof fa.dir, "/tmp/sbx-fuzz-agent.XXXXXX");
	FUZZ_ASSERT(fa.base != NULL && mkdtemp(fa.dir) != NULL);
	atexit(fuzz_agent_cleanup);
	snprintf(fa.path, sizeof fa.path, "%s/%s", fa.dir, AGENTD_SOCKET_NAME);
	fa.hub = agent_hub_new(fa.base, NULL, NULL);
	FUZZ_ASSERT(agent_listen(fa.hub, FUZZ_AGENT_ID, fa.dir) == 0);
}

static void
fuzz_agent_end_cb(int status, const char *body, size_t len,
    const char *errmsg, void *arg)
{
	fa.nend++;
	FUZZ_ASSERT(status >= 0 && status <= 999);
	FUZZ_ASSERT(status != 0 || errmsg != NULL);
	if (body != NULL)
		FUZZ_ASSERT(body[len] == '\0');
}

static void
fuzz_agent_line_cb(const char *line, size_t len, void *arg)
{
	fa.nlines++;
	FUZZ_ASSERT(line[len] == '\0');
	FUZZ_ASSERT(memchr(line, '\n', len) == NULL);
}

/* The upgraded connection is ours now. */
static void
fuzz_agent_up_cb(struct bufferevent *bev, void *arg)
{
	fa.nend++;
	bufferevent_free(bev);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char	 body[] = "{\"cmd\":[\"sh\",\"-c\",\"ls\"]}";
	struct agent_req	*req = NULL;
	uint8_t			*copy;
	int			 mode, i;

	if (fa.base == NULL)
		fuzz_agent_init();
	if (size < 1)
		return 0;
	mode = data[0];
	copy = malloc(size);
	memcpy(copy, data + 1, size - 1);
	fa.reply = copy;
	fa.replylen = size - 1;
	fa.pieces = (mode & 4) != 0;
	fa.nend = fa.nlines = 0;
	/*
	 * With bit 3 agentd is there first, as its spare connection: the
	 * hub keeps it idle and sends the request on it; else the request
	 * waits for agentd to connect.
	 */
	if (mode & 8) {
		fuzz_agent_connect();
		for (i = 0; i < 4; i++)
			event_base_loop(fa.base, EVLOOP_NONBLOCK);
	}

	switch (mode & 3) {
	case 0:
		agent_request(fa.hub, FUZZ_AGENT_ID, "POST", "/exec", body,
		    sizeof body - 1, 2000, fuzz_agent_end_cb, NULL);
		break;
	case 1:
		req = agent_stream(fa.hub, FUZZ_AGENT_ID, "GET",
		    "/tasks/tsk_0123456789abcdef/events?after=0", NULL, 0, 2000,
		    fuzz_agent_line_cb, fuzz_agent_end_cb, NULL);
		break;
	case 2:
		req = agent_upgrade(fa.hub, FUZZ_AGENT_ID,
		    "/terminal?cols=80&rows=24", 2000, fuzz_agent_up_cb,
		    fuzz_agent_end_cb, NULL);
		break;
	default:
		agent_request(fa.hub, FUZZ_AGENT_ID, "GET", "/health", NULL, 0,
		    2000, fuzz_agent_end_cb, NULL);
		break;
	}
	(void)req;
	if (!(mode & 8))
		fuzz_agent_connect();
	for (i = 0; i < FUZZ_AGENT_MAX_LOOPS && fa.nend == 0; i++)
		event_base_loop(fa.base, EVLOOP_ONCE);
	FUZZ_ASSERT(fa.nend == 1);
	fuzz_agent_close();
	for (i = 0; i < 4; i++)
		event_base_loop(fa.base, EVLOOP_NONBLOCK);
	FUZZ_ASSERT(fa.nend == 1);
	if (getenv("FUZZ_DEBUG") != NULL)
		fprintf(stderr, "fuzz_agent_answer: mode %d: %d lines\n",
		    mode & 15, fa.nlines);
	free(copy);
	return 0;
}
