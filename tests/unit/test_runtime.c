/*
 * control's runtime owner, hold-and-wake and the reaper (control/runtime.c,
 * wake.c, reaper.c) over a real store and a real struct control, with a
 * fake Docker on a Unix socket (start, stop, pause, unpause, inspect answer
 * at once or when told) and a fake agentd on the sandbox's rendezvous
 * socket answering GET /wait-port when told. No container runs.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include <sqlite3.h>

#include "common/common.h"
#include "control/control_int.h"
#include "tests/unit/unit.h"

#define FAKE_MAX_HELD	8
#define FAKE_MAX_AGENTS	32
#define TEST_IP		"10.9.8.7"

static struct event_base	*base;
static struct event		*tick;
static char			 tmp[256];
static int			 ntest;

/* ------------------------------------------------------------------ */
/* A fake Docker: answers each request by its route, or holds it. */

struct held {
	struct bufferevent	*bev;
	char			*reply;
};

struct fdock {
	struct evconnlistener	*lev;
	char			 path[300];
	int			 starts, stops, pauses, unpauses, inspects;
	int			 deletes, creates, other;
	int			 start_status;	/* 204 */
	int			 hold_stop;	/* 1: keep stop requests */
	int			 hold_start;
	int			 drop_start;	/* 1: close, never answer */
	int			 hold_list;	/* 1: keep GET /containers/json */
	char			 list_body[400];	/* its answer; "[]" if empty */
	int			 lists;
	struct held		 held[FAKE_MAX_HELD];
	int			 nheld;
};

static struct fdock	 dock;

/* A Unix socket address; the paths here are short. */
static void
sun_set(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun->sun_path)
		fatalx("socket path too long: %s", path);
	memcpy(sun->sun_path, path, strlen(path));
}

static void
fdock_write_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

/* Drop a connection Docker's client closed (it gave up). */
static void
fdock_event_cb(struct bufferevent *bev, short what, void *arg)
{
	int	i;

	for (i = 0; i < dock.nheld; i++) {
		if (dock.held[i].bev == bev) {
			free(dock.held[i].reply);
			dock.held[i] = dock.held[--dock.nheld];
			break;
		}
	}
	bufferevent_free(bev);
}

/* Answer one request from its request line. */
static void
fdock_read_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer		*in = bufferevent_get_input(bev);
	struct evbuffer_ptr	 p;
	char			*head, method[16], path[512], *reply, body[512];
	const char		*cl;
	size_t			 headlen, bodylen = 0;
	int			 status = 404, hold = 0;

	p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (p.pos == -1)
		return;
	headlen = p.pos + 4;
	head = xstrndup((char *)evbuffer_pullup(in, headlen), headlen);
	if ((cl = strstr(head, "Content-Length: ")) != NULL)
		bodylen = strtoul(cl + 16, NULL, 10);
	if (evbuffer_get_length(in) < headlen + bodylen) {
		free(head);
		return;
	}
	evbuffer_drain(in, headlen + bodylen);
	if (sscanf(head, "%15s %511s", method, path) != 2)
		snprintf(path, sizeof path, "?");
	free(head);
	body[0] = '\0';
	if (strstr(path, "/start") != NULL) {
		dock.starts++;
		if (dock.drop_start) {
			/* Docker's answer never comes (it was frozen). */
			bufferevent_free(bev);
			return;
		}
		status = dock.start_status;
		hold = dock.hold_start;
	} else if (strstr(path, "/unpause") != NULL) {
		dock.unpauses++;
		status = 204;
	} else if (strstr(path, "/pause") != NULL) {
		dock.pauses++;
		status = 204;
	} else if (strstr(path, "/stop") != NULL) {
		dock.stops++;
		status = 204;
		hold = dock.hold_stop;
	} else if (strcmp(method, "DELETE") == 0) {
		dock.deletes++;
		status = 204;
	} else if (strstr(path, "/containers/json") != NULL) {
		dock.lists++;
		status = 200;
		hold = dock.hold_list;
		snprintf(body, sizeof body, "%s", dock.list_body[0] != '\0' ?
		    dock.list_body : "[]");
	} else if (strstr(path, "/containers/create") != NULL) {
		dock.creates++;
		status = 201;
		snprintf(body, sizeof body, "{\"Id\":\"cnew\"}");
	} else if (strcmp(method, "GET") == 0 &&
	    strstr(path, "/json") != NULL && strstr(path, "/containers/") !=
	    NULL && strstr(path, "/containers/json") == NULL) {
		dock.inspects++;
		status = 200;
		snprintf(body, sizeof body, "{\"State\":{\"Running\":true,"
		    "\"Paused\":false},\"NetworkSettings\":{\"Networks\":"
		    "{\"sbxtest\":{\"IPAddress\":\"%s\"}}}}", TEST_IP);
	} else {
		dock.other++;
		snprintf(body, sizeof body, "{\"message\":\"no route\"}");
	}
	xasprintf(&reply, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%s", status, strlen(body), body);
	if (hold && dock.nheld < FAKE_MAX_HELD) {
		dock.held[dock.nheld].bev = bev;
		dock.held[dock.nheld].reply = reply;
		dock.nheld++;
		return;
	}
	bufferevent_write(bev, reply, strlen(reply));
	bufferevent_setcb(bev, NULL, fdock_write_cb, fdock_event_cb, NULL);
	free(reply);
}

/* Answer every held request now. */
static void
fdock_release(void)
{
	struct held	*h;

	while (dock.nheld > 0) {
		h = &dock.held[--dock.nheld];
		bufferevent_write(h->bev, h->reply, strlen(h->reply));
		bufferevent_setcb(h->bev, NULL, fdock_write_cb, fdock_event_cb,
		    NULL);
		free(h->reply);
	}
}

/* Close every held request unanswered: what a client that timed out sees. */
static void
fdock_drop_held(void)
{
	while (dock.nheld > 0) {
		dock.nheld--;
		bufferevent_free(dock.held[dock.nheld].bev);
		free(dock.held[dock.nheld].reply);
	}
}

static void
fdock_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct bufferevent	*bev;

	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, fdock_read_cb, NULL, fdock_event_cb, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
fdock_start(void)
{
	struct sockaddr_un	sun;

	memset(&dock, 0, sizeof dock);
	dock.start_status = 204;
	snprintf(dock.path, sizeof dock.path, "%s/docker.sock", tmp);
	unlink(dock.path);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	sun_set(&sun, dock.path);
	dock.lev = evconnlistener_new_bind(base, fdock_accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&sun, sizeof sun);
	if (dock.lev == NULL)
		fatal("fake docker listen %s", dock.path);
}

static void
fdock_stop(void)
{
	fdock_drop_held();
	evconnlistener_free(dock.lev);
	unlink(dock.path);
}

/* ------------------------------------------------------------------ */
/* A fake agentd: connects to the rendezvous, reads one request. */

struct fagent {
	struct bufferevent	*bev;
	int			 got;		/* a request came */
	char			 method[16];
	char			 path[512];
	char			*body;		/* the request body, once complete */
	int			 closed;
	int			 closing;	/* close once the output drained */
};

static struct agent_hub *fagent_hub;	/* the hub fake agents say hello to */
static struct fagent	 agents[FAKE_MAX_AGENTS];
static int		 nagents;

static void
fagent_read_cb(struct bufferevent *bev, void *arg)
{
	struct fagent	*a = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer_ptr p;
	char		*head;
	const char	*cl;
	size_t		 bodylen = 0;

	if (a->got)
		return;
	p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (p.pos == -1)
		return;
	head = xstrndup((char *)evbuffer_pullup(in, p.pos), p.pos);
	if ((cl = strstr(head, "Content-Length: ")) != NULL)
		bodylen = strtoul(cl + 16, NULL, 10);
	if (evbuffer_get_length(in) < (size_t)p.pos + 4 + bodylen) {
		free(head);
		return;
	}
	if (sscanf(head, "%15s %511s", a->method, a->path) != 2)
		a->path[0] = '\0';
	free(head);
	evbuffer_drain(in, p.pos + 4);
	a->body = xmalloc(bodylen + 1);
	evbuffer_remove(in, a->body, bodylen);
	a->body[bodylen] = '\0';
	a->got = 1;
}

/* A fake agentd closing a streamed answer goes once it is written. */
static void
fagent_write_cb(struct bufferevent *bev, void *arg)
{
	struct fagent	*a = arg;

	if (a->closing &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		bufferevent_free(a->bev);
		a->bev = NULL;
		a->closed = 1;
	}
}

static void
fagent_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct fagent	*a = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_free(a->bev);
		a->bev = NULL;
		a->closed = 1;
	}
}

/* Connect as the sandbox's agentd; its spare connection. */
static struct fagent *
fagent_dial(const char *id)
{
	struct fagent		*a;
	struct sockaddr_un	 sun;
	char			*path, tokenv[AGENT_TOKEN_ENV_SIZE];

	if (nagents >= FAKE_MAX_AGENTS)
		return (NULL);
	a = &agents[nagents++];
	memset(a, 0, sizeof *a);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	xasprintf(&path, "%s/data%d/run/%s/%s", tmp, ntest, id,
	    AGENTD_SOCKET_NAME);
	sun_set(&sun, path);
	free(path);
	a->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(a->bev, fagent_read_cb, fagent_write_cb,
	    fagent_event_cb, a);
	bufferevent_enable(a->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(a->bev, (struct sockaddr *)&sun,
	    sizeof sun) == -1) {
		bufferevent_free(a->bev);
		a->bev = NULL;
		a->closed = 1;
		return (a);
	}
	/*
	 * agentd's first line: the hello with the sandbox's token (the
	 * protocol's, as agentd/agentd.h has it; that header's task API
	 * clashes with control's, so it is spelled out here).
	 */
	agent_token_env(fagent_hub, id, tokenv, sizeof tokenv);
	bufferevent_write(a->bev, "sandboxd-agentd/1 ", 18);
	bufferevent_write(a->bev, strchr(tokenv, '=') + 1,
	    strlen(strchr(tokenv, '=') + 1));
	bufferevent_write(a->bev, "\n", 1);
	return (a);
}

/* Answer the request on a with this status. */
static void
fagent_answer(struct fagent *a, int status)
{
	char	buf[256];
	const char *body = status == 200 ? "{\"ready\":true}" :
	    "{\"ready\":false}";

	if (a == NULL || a->bev == NULL)
		return;
	snprintf(buf, sizeof buf, "HTTP/1.1 %d X\r\nContent-Type: "
	    "application/json\r\nContent-Length: %zu\r\nConnection: close"
	    "\r\n\r\n%s", status, strlen(body), body);
	bufferevent_write(a->bev, buf, strlen(buf));
}

static void
fagent_free_all(void)
{
	int	i;

	for (i = 0; i < nagents; i++) {
		if (agents[i].bev != NULL)
			bufferevent_free(agents[i].bev);
		agents[i].bev = NULL;
		free(agents[i].body);
		agents[i].body = NULL;
	}
	nagents = 0;
}

/* How many fake agentd connections got a /wait-port request. */
static int
fagent_probes(void)
{
	int	i, n = 0;

	for (i = 0; i < nagents; i++)
		n += agents[i].got && strncmp(agents[i].path, "/wait-port",
		    10) == 0;
	return (n);
}

/* ------------------------------------------------------------------ */
/* The loop, always bounded. */

static void
tick_cb(evutil_socket_t fd, short events, void *arg)
{
}

/* Run the loop for ms milliseconds. */
static void
run_for(int ms)
{
	int64_t	deadline = time_mono_ms() + ms;

	while (time_mono_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
}

/* Run the loop until *flag >= want; 0 on time, -1 after max_ms. */
static int
run_until(int *flag, int want, int max_ms)
{
	int64_t	deadline = time_mono_ms() + max_ms;

	while (*flag < want) {
		if (time_mono_ms() > deadline)
			return (-1);
		event_base_loop(base, EVLOOP_ONCE);
	}
	return (0);
}

/* ------------------------------------------------------------------ */
/* One control over one store per test. */

struct env {
	struct config	*cf;
	struct store	*store;
	struct control	*ctl;
	int		 retires;
	char		 retired[ID_LEN + 1];
};

static struct env	 env;

static void
retire_cb(const char *id, void *arg)
{
	struct env	*e = arg;

	e->retires++;
	snprintf(e->retired, sizeof e->retired, "%s", id);
}

/* A control with these config lines added to the base ones. */
static void
env_setup(const char *extra)
{
	char	*text, *errs = NULL, *cause = NULL, *db;

	ntest++;
	xasprintf(&text,
	    "listen = 127.0.0.1:18080\n"
	    "data_dir = %s/data%d\n"
	    "docker_socket = %s/docker.sock\n"
	    "network = sbxtest\n"
	    "instance = rtest\n"
	    "agentd_path = /bin/true\n"
	    "default_template = t\n"
	    "%s%s%s"
	    "[api_key test]\n"
	    "secret = 0123456789abcdef0123456789abcdef\n"
	    "admin = yes\n"
	    "[template t]\n"
	    "image = busybox\n"
	    "port = 3000\n"
	    "dev_command = httpd -f -p 3000\n"
	    "[template nodev]\n"
	    "image = busybox\n"
	    "port = 3000\n",
	    tmp, ntest, tmp, extra,
	    strstr(extra, "min_free_memory") == NULL ?
	    "min_free_memory = 0\n" : "",
	    strstr(extra, "wake_timeout") == NULL ? "wake_timeout = 5s\n" : "");
	memset(&env, 0, sizeof env);
	if ((env.cf = config_parse("test.conf", text, &errs)) == NULL)
		fatalx("config: %s", errs);
	free(text);
	xasprintf(&db, "%s/store%d.db", tmp, ntest);
	if ((env.store = store_open(db, &cause)) == NULL)
		fatalx("store: %s", cause);
	free(db);
	if ((env.ctl = control_new(base, env.cf, env.store, &cause)) == NULL)
		fatalx("control: %s", cause);
	fagent_hub = env.ctl->hub;
	control_set_retire_cb(env.ctl, retire_cb, &env);
	fdock_start();
}

static void
env_teardown(void)
{
	/* Let whatever is in flight finish, so nothing leaks at exit. */
	struct sandbox_rt	*rt;
	char			 (*ids)[ID_LEN + 1] = NULL;
	size_t			 i, n = 0;

	fdock_release();
	run_for(50);
	/*
	 * Probes still waiting for an agentd that never came are freed by
	 * their callbacks only: fail them before the hub goes.
	 */
	for (i = 0; i < RT_BUCKETS; i++) {
		LIST_FOREACH(rt, &env.ctl->rts[i], entry) {
			ids = xreallocarray(ids, n + 1, sizeof *ids);
			memcpy(ids[n++], rt->id, ID_LEN + 1);
		}
	}
	for (i = 0; i < n; i++)
		agent_forget(env.ctl->hub, ids[i]);
	free(ids);
	control_free(env.ctl);
	store_close(env.store);
	config_free(env.cf);
	fagent_free_all();
	fdock_stop();
	memset(&env, 0, sizeof env);
}

/* The tenant sandbox_add gives its sandboxes. */
static const char *add_tenant = "test";

/* A sandbox row in this state (with a container) and its runtime. */
static struct sandbox_rt *
sandbox_add(enum sandbox_state state, char *id)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;

	memset(&s, 0, sizeof s);
	id_new(s.id);
	s.tenant = (char *)add_tenant;
	s.template_name = "t";
	s.state = state;
	s.port = 3000;
	s.memory_mb = 64;
	s.cpus = 1;
	s.idle_timeout_s = 900;
	s.env_json = "{}";
	s.labels_json = "{}";
	s.created_at = s.last_active_at = time_now_ms();
	if (store_sandbox_insert(env.store, &s) != 0)
		fatalx("insert");
	store_sandbox_set_container(env.store, s.id, "c0");
	if (id != NULL)
		memcpy(id, s.id, ID_LEN + 1);
	rt = rt_get(env.ctl, s.id);
	return (rt);
}

/* The state the store has for id, -1 if none. */
static int
stored_state(const char *id)
{
	struct store_sandbox	s;
	int			state;

	if (store_sandbox_get(env.store, id, &s) != 0)
		return (-1);
	state = s.state;
	store_sandbox_clear(&s);
	return (state);
}

static struct in_addr
ip_of(const char *text)
{
	struct in_addr	ip;

	inet_pton(AF_INET, text, &ip);
	return (ip);
}

/* A running, routable sandbox (no probe). */
static struct sandbox_rt *
sandbox_running(char *id)
{
	struct sandbox_rt	*rt = sandbox_add(SANDBOX_STOPPED, id);

	rt_set_state(env.ctl, rt, SANDBOX_STARTING, NULL);
	rt_set_running(env.ctl, rt, ip_of(TEST_IP), 1);
	return (rt);
}

/* Held lookups' answers. */
struct answer {
	int			calls;
	struct control_target	t;
};

static void
answer_cb(const struct control_target *t, void *arg)
{
	struct answer	*a = arg;

	a->calls++;
	a->t = *t;
}

/* ------------------------------------------------------------------ */
/* The transition table. */

static void
test_transitions(void)
{
	static const struct {
		enum sandbox_state from, to;
		int ok;
	} moves[] = {
		{ SANDBOX_CREATING, SANDBOX_RUNNING, 1 },
		{ SANDBOX_CREATING, SANDBOX_ERROR, 1 },
		{ SANDBOX_CREATING, SANDBOX_STOPPED, 0 },
		{ SANDBOX_CREATING, SANDBOX_PAUSED, 0 },
		{ SANDBOX_RUNNING, SANDBOX_PAUSED, 1 },
		{ SANDBOX_RUNNING, SANDBOX_STOPPING, 1 },
		{ SANDBOX_RUNNING, SANDBOX_CREATING, 0 },
		{ SANDBOX_PAUSED, SANDBOX_RUNNING, 1 },
		{ SANDBOX_PAUSED, SANDBOX_CREATING, 0 },
		{ SANDBOX_STOPPING, SANDBOX_STOPPED, 1 },
		{ SANDBOX_STOPPING, SANDBOX_RUNNING, 0 },
		{ SANDBOX_STOPPED, SANDBOX_STARTING, 1 },
		{ SANDBOX_STOPPED, SANDBOX_RUNNING, 0 },
		{ SANDBOX_STOPPED, SANDBOX_PAUSED, 0 },
		{ SANDBOX_STARTING, SANDBOX_RUNNING, 1 },
		{ SANDBOX_STARTING, SANDBOX_PAUSED, 0 },
		{ SANDBOX_DELETING, SANDBOX_RUNNING, 0 },
		{ SANDBOX_DELETING, SANDBOX_STARTING, 0 },
		{ SANDBOX_DELETING, SANDBOX_ERROR, 1 },
		{ SANDBOX_ERROR, SANDBOX_STARTING, 0 },
		{ SANDBOX_ERROR, SANDBOX_STOPPING, 0 },
		{ SANDBOX_ERROR, SANDBOX_RUNNING, 0 },
		{ SANDBOX_ERROR, SANDBOX_DELETING, 1 },
	};
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];
	size_t			 i;
	int			 rv, before;

	env_setup("");
	for (i = 0; i < nitems(moves); i++) {
		rt = sandbox_add(moves[i].from, id);
		before = env.ctl->nactive;
		rv = rt_set_state(env.ctl, rt, moves[i].to, NULL);
		if ((rv == 0) != moves[i].ok)
			fprintf(stderr, "move %s -> %s: rv %d\n",
			    store_sandbox_state_name(moves[i].from),
			    store_sandbox_state_name(moves[i].to), rv);
		CHECK((rv == 0) == moves[i].ok);
		if (moves[i].ok) {
			CHECK(rt->state == moves[i].to);
			CHECK(stored_state(id) == (int)moves[i].to);
			CHECK(env.ctl->nactive == before +
			    rt_state_active(moves[i].to) -
			    rt_state_active(moves[i].from));
		} else {
			/* Refused: nothing changed, here or in the store. */
			CHECK(rt->state == moves[i].from);
			CHECK(stored_state(id) == (int)moves[i].from);
			CHECK(env.ctl->nactive == before);
		}
	}
	env_teardown();
}

/* Generations and the retire callback. */
static void
test_generation_retire(void)
{
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];
	uint64_t		 g1, g2;

	env_setup("");
	rt = sandbox_running(id);
	g1 = rt->generation;
	CHECK(g1 != 0);
	CHECK(rt->port_state == RT_PORT_READY);
	CHECK(env.retires == 0);

	/* Pause: retired once, not routable, then running again newer. */
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_PAUSED, NULL) == 0);
	CHECK(env.retires == 1);
	CHECK_STR(env.retired, id);
	CHECK(rt->generation == 0);
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_PAUSED, NULL) == 0);
	CHECK(env.retires == 1);
	CHECK(rt_set_running(env.ctl, rt, ip_of(TEST_IP), 1) == 0);
	g2 = rt->generation;
	CHECK(g2 > g1);

	/* Stop: one retire for stopping and stopped together. */
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_STOPPING, NULL) == 0);
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_STOPPED, NULL) == 0);
	CHECK(env.retires == 2);
	CHECK(rt->port_state == RT_PORT_UNKNOWN);

	/* The container died (Docker's event): retired once. */
	rt_set_state(env.ctl, rt, SANDBOX_STARTING, NULL);
	rt_set_running(env.ctl, rt, ip_of(TEST_IP), 1);
	CHECK(rt->generation > g2);
	lifecycle_container_event(env.ctl, id, "c0", "die");
	CHECK(rt->state == SANDBOX_STOPPED);
	CHECK(stored_state(id) == SANDBOX_STOPPED);
	CHECK(env.retires == 3);
	CHECK(rt->generation == 0);

	/* A refused move retires nothing. */
	rt_set_state(env.ctl, rt, SANDBOX_STARTING, NULL);
	rt_set_running(env.ctl, rt, ip_of(TEST_IP), 1);
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_CREATING, NULL) == -1);
	CHECK(env.retires == 3);
	CHECK(rt->generation != 0);

	/* Delete: retired once. */
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_DELETING, NULL) == 0);
	CHECK(env.retires == 4);
	rt_drop(env.ctl, rt);
	CHECK(env.retires == 4);
	CHECK(rt_find(env.ctl, id) == NULL);
	env_teardown();
}

/*
 * A running sandbox found again at another address (a reconcile after the
 * event stream came back): the old address is retired before the new
 * generation is handed out.
 */
static void
test_readopt_new_address(void)
{
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];
	uint64_t		 g1;

	env_setup("");
	rt = sandbox_running(id);
	g1 = rt->generation;
	CHECK(rt_adopt(env.ctl, rt, ip_of(TEST_IP), 0) == 0);
	CHECK(rt->generation == g1);
	CHECK(env.retires == 0);
	CHECK(rt_adopt(env.ctl, rt, ip_of("10.9.8.99"), 0) == 0);
	CHECK(rt->generation > g1);
	CHECK(rt->ip.s_addr == ip_of("10.9.8.99").s_addr);
	CHECK(env.retires == 1);
	env_teardown();
}

/* control_activity and busy. */
static void
test_activity(void)
{
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];
	int64_t			 before;

	env_setup("");
	rt = sandbox_running(id);
	CHECK(!rt_busy(rt));
	rt->last_active_ms -= 5000;
	before = rt->last_active_ms;
	control_activity(env.ctl, id, ACTIVITY_CONN, 1);
	CHECK(rt->conns == 1);
	CHECK(rt->last_active_ms > before);
	/* An idle keep-alive connection keeps nothing awake. */
	CHECK(!rt_busy(rt));
	control_activity(env.ctl, id, ACTIVITY_REQUEST, 1);
	CHECK(rt->requests == 1 && rt_busy(rt));
	control_activity(env.ctl, id, ACTIVITY_REQUEST, -1);
	CHECK(rt->requests == 0 && !rt_busy(rt));
	control_activity(env.ctl, id, ACTIVITY_TUNNEL, 1);
	CHECK(rt->tunnels == 1 && rt_busy(rt));
	control_activity(env.ctl, id, ACTIVITY_TUNNEL, -1);
	CHECK(!rt_busy(rt));
	/* Never below zero. */
	control_activity(env.ctl, id, ACTIVITY_TUNNEL, -1);
	control_activity(env.ctl, id, ACTIVITY_REQUEST, -1);
	CHECK(rt->tunnels == 0 && rt->requests == 0);
	control_activity(env.ctl, id, ACTIVITY_CONN, -1);
	control_activity(env.ctl, id, ACTIVITY_CONN, -1);
	CHECK(rt->conns == 0);
	rt->holds = 1;
	CHECK(rt_busy(rt));
	rt->holds = 0;
	/* Unknown sandboxes and kinds are ignored. */
	control_activity(env.ctl, "01jzzzzzzzzzzzzzzzzzzzzzzz", ACTIVITY_CONN,
	    1);
	control_activity(env.ctl, id, (enum control_activity)42, 1);
	CHECK(rt->conns == 0 && !rt_busy(rt));
	env_teardown();
}

/* ------------------------------------------------------------------ */
/* Admission. */

static void
test_admit(void)
{
	struct sandbox_rt	*a, *b, *c, *p, *req;
	char			 ida[ID_LEN + 1], idb[ID_LEN + 1];
	char			 idc[ID_LEN + 1], idp[ID_LEN + 1];
	const char		*why = NULL;

	env_setup("max_running = 3\nmin_free_memory = 0\n");
	req = sandbox_add(SANDBOX_STOPPED, NULL);
	a = sandbox_running(ida);
	CHECK(env.ctl->nactive == 1);
	CHECK(reaper_admit(env.ctl, req, NULL, &why) == 0);
	CHECK(env.ctl->evictions_total == 0);
	b = sandbox_running(idb);
	c = sandbox_running(idc);
	CHECK(env.ctl->nactive == 3);

	/* Full, none idle: a busy, b has an op, c has a held request. */
	control_activity(env.ctl, ida, ACTIVITY_REQUEST, 1);
	b->op = (struct lifecycle_op *)&env;	/* never dereferenced */
	c->nwaiters = 1;
	why = NULL;
	CHECK(reaper_admit(env.ctl, req, NULL, &why) == -1);
	CHECK(why != NULL && strstr(why, "max_running") != NULL);
	CHECK(env.ctl->refusals_total == 1);
	CHECK(env.ctl->evictions_total == 0);
	CHECK(a->state == SANDBOX_RUNNING && b->state == SANDBOX_RUNNING &&
	    c->state == SANDBOX_RUNNING);
	/*
	 * Never the requester itself, however idle (one counted already
	 * is let through as it is).
	 */
	c->last_active_ms -= 100000;
	CHECK(reaper_admit(env.ctl, c, NULL, &why) == 0);
	CHECK(env.ctl->evictions_total == 0);
	CHECK(c->state == SANDBOX_RUNNING);
	b->op = NULL;
	c->nwaiters = 0;
	control_activity(env.ctl, ida, ACTIVITY_REQUEST, -1);

	/* The idle-longest goes: c (100 s), not a or b. */
	a->last_active_ms -= 1000;
	b->last_active_ms -= 2000;
	CHECK(reaper_admit(env.ctl, req, NULL, &why) == 0);
	CHECK(env.ctl->evictions_total == 1);
	CHECK(c->state == SANDBOX_STOPPING);
	CHECK(stored_state(idc) == SANDBOX_STOPPING);
	CHECK(a->state == SANDBOX_RUNNING && b->state == SANDBOX_RUNNING);
	CHECK(env.ctl->nactive == 2);
	run_until(&dock.stops, 1, 2000);
	run_for(50);
	CHECK(c->state == SANDBOX_STOPPED);

	/* A paused one goes before a running one idle longer. */
	p = sandbox_running(idp);
	rt_set_state(env.ctl, p, SANDBOX_PAUSED, NULL);
	a->last_active_ms -= 100000;
	CHECK(env.ctl->nactive == 3);
	CHECK(reaper_admit(env.ctl, req, NULL, &why) == 0);
	CHECK(p->state == SANDBOX_STOPPING);
	CHECK(a->state == SANDBOX_RUNNING);
	CHECK(env.ctl->evictions_total == 2);
	run_for(100);
	CHECK(p->state == SANDBOX_STOPPED);
	CHECK(dock.unpauses == 1);	/* a paused one is thawed to stop */
	env_teardown();
}

/* A tenant's own max_running: its own idle-longest goes, not another's. */
static void
test_admit_tenant(void)
{
	struct sandbox_rt	*a, *b, *c, *o;
	const char		*why = NULL;

	/* The section last: env_setup's own defaults follow extra. */
	env_setup("max_running = 10\nmin_free_memory = 0\n"
	    "wake_timeout = 5s\n"
	    "[api_key small]\n"
	    "secret = small-0123456789abcdef0123456789abcdef\n"
	    "max_running = 2\n");
	o = sandbox_running(NULL);		/* tenant "test" */
	add_tenant = "small";
	a = sandbox_running(NULL);
	b = sandbox_running(NULL);
	add_tenant = "test";
	o->last_active_ms -= 100000;		/* the idlest, but not theirs */
	a->last_active_ms -= 2000;
	b->last_active_ms -= 1000;

	/* Another tenant is below the global ceiling: no eviction. */
	CHECK(reaper_admit(env.ctl, NULL, "test", &why) == 0);
	CHECK(env.ctl->evictions_total == 0);

	/* "small" is at its 2: its own idle-longest, a, is stopped. */
	CHECK(reaper_admit(env.ctl, NULL, "small", &why) == 0);
	CHECK(env.ctl->evictions_total == 1);
	CHECK(a->state == SANDBOX_STOPPING);
	CHECK(o->state == SANDBOX_RUNNING && b->state == SANDBOX_RUNNING);
	run_until(&dock.stops, 1, 2000);
	run_for(50);
	CHECK(a->state == SANDBOX_STOPPED);

	/* Waking a with b and c of "small" both busy: refused, none goes. */
	add_tenant = "small";
	c = sandbox_running(NULL);
	add_tenant = "test";
	control_activity(env.ctl, b->id, ACTIVITY_REQUEST, 1);
	control_activity(env.ctl, c->id, ACTIVITY_REQUEST, 1);
	why = NULL;
	CHECK(reaper_admit(env.ctl, a, NULL, &why) == -1);
	CHECK(why != NULL && strstr(why, "API key") != NULL);
	CHECK(env.ctl->evictions_total == 1);
	CHECK(o->state == SANDBOX_RUNNING);
	control_activity(env.ctl, b->id, ACTIVITY_REQUEST, -1);
	control_activity(env.ctl, c->id, ACTIVITY_REQUEST, -1);
	env_teardown();
}

/* Starting a sandbox already counted never evicts another one. */
static void
test_admit_counted(void)
{
	struct sandbox_rt	*a, *b;
	const char		*why = NULL;

	env_setup("max_running = 2\nmin_free_memory = 0\n");
	a = sandbox_running(NULL);
	a->last_active_ms -= 100000;
	/* Running in the store, no address known (Docker was away). */
	b = sandbox_add(SANDBOX_RUNNING, NULL);
	CHECK(b->generation == 0);
	CHECK(env.ctl->nactive == 2);
	CHECK(reaper_admit(env.ctl, b, NULL, &why) == 0);
	CHECK(env.ctl->evictions_total == 0);
	CHECK(a->state == SANDBOX_RUNNING);
	env_teardown();
}

/*
 * A sandbox stopped for its disk ceiling: held back across a reload of its
 * row (a restart), refused by admission and by a wake, until disk_clear.
 */
static void
test_disk_hold(void)
{
	struct control_target	 t;
	struct control_wait	*w;
	struct store_sandbox	 s;
	struct sandbox_rt	*rt, *other;
	const char		*why = NULL;
	char			 id[ID_LEN + 1], oid[ID_LEN + 1];

	env_setup("min_free_memory = 0\n");
	rt = sandbox_add(SANDBOX_STOPPED, id);
	CHECK(rt->disk_over == 0);
	CHECK(store_sandbox_set_state(env.store, id, SANDBOX_STOPPED,
	    DISK_ERROR_PREFIX ": its files use 12.0 MiB of the 8.0 MiB") == 0);
	other = sandbox_add(SANDBOX_STOPPED, oid);
	CHECK(store_sandbox_set_state(env.store, oid, SANDBOX_STOPPED,
	    "something else") == 0);
	/* As after a restart: the runtimes are loaded from the rows. */
	rt_drop(env.ctl, rt);
	rt_drop(env.ctl, other);
	rt = rt_get(env.ctl, id);
	other = rt_get(env.ctl, oid);
	CHECK(rt != NULL && rt->disk_over == 1);
	CHECK(other != NULL && other->disk_over == 0);
	CHECK(disk_error_is(DISK_ERROR_PREFIX ": x") && !disk_error_is(NULL) &&
	    !disk_error_is("disk"));

	CHECK(reaper_admit(env.ctl, rt, NULL, &why) == -1);
	CHECK(why != NULL && strstr(why, "disk ceiling") != NULL);
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, NULL,
	    &w) == CONTROL_LOOKUP_DONE);
	CHECK(t.kind == TARGET_UNAVAILABLE && t.message != NULL &&
	    strstr(t.message, "disk ceiling") != NULL);
	CHECK(rt->state == SANDBOX_STOPPED && dock.starts == 0);
	CHECK(reaper_admit(env.ctl, other, NULL, &why) == 0);

	/* It fits again: the hold and the stored error go, once. */
	CHECK(disk_clear(env.ctl, rt) == 0);
	CHECK(rt->disk_over == 0 && rt->state == SANDBOX_STOPPED);
	CHECK(store_sandbox_get(env.store, id, &s) == 0);
	CHECK(s.error == NULL && s.state == SANDBOX_STOPPED);
	store_sandbox_clear(&s);
	CHECK(disk_clear(env.ctl, rt) == -1);
	/* "something else" is not the disk's to clear. */
	other->disk_over = 1;
	CHECK(disk_clear(env.ctl, other) == 0);
	CHECK(store_sandbox_get(env.store, oid, &s) == 0);
	CHECK(s.error != NULL && strcmp(s.error, "something else") == 0);
	store_sandbox_clear(&s);
	CHECK(reaper_admit(env.ctl, rt, NULL, &why) == 0);
	env_teardown();
}

/* Below the memory floor: refused, and a paused one stopped for room. */
static void
test_admit_memory(void)
{
	struct sandbox_rt	*a, *p;
	const char		*why = NULL;
	int64_t			 total;

	if (reaper_mem_available(&total) < 0) {
		fprintf(stderr, "skip test_admit_memory: no MemAvailable\n");
		return;
	}
	env_setup("max_running = 10\nmin_free_memory = 100000g\n");
	a = sandbox_running(NULL);
	p = sandbox_running(NULL);
	rt_set_state(env.ctl, p, SANDBOX_PAUSED, NULL);
	a->last_active_ms -= 100000;
	CHECK(reaper_admit(env.ctl, NULL, NULL, &why) == -1);
	CHECK(why != NULL && strstr(why, "memory") != NULL);
	CHECK(env.ctl->refusals_total == 1);
	/* Only paused ones are stopped for memory. */
	CHECK(p->state == SANDBOX_STOPPING);
	CHECK(a->state == SANDBOX_RUNNING);
	run_for(100);
	env_teardown();
}

/*
 * Sandboxes still booting count their memory ceiling as used, so a burst
 * of starts cannot all pass the floor before any has taken its memory.
 */
static void
test_admit_reserve(void)
{
	struct sandbox_rt	*a, *b;
	const char		*why = NULL;
	int64_t			 total, avail;
	char			 extra[128];

	avail = reaper_mem_available(&total);
	if (avail < (int64_t)8 << 30) {
		fprintf(stderr, "skip test_admit_reserve: under 8 GB free\n");
		return;
	}
	/* The floor 3 GB below what is free now; each sandbox takes 4 GB. */
	snprintf(extra, sizeof extra, "max_running = 10\n"
	    "min_free_memory = %lldm\n", (long long)((avail >> 20) - 3072));
	env_setup(extra);
	a = sandbox_add(SANDBOX_STOPPED, NULL);
	b = sandbox_add(SANDBOX_STOPPED, NULL);
	a->memory_bytes = b->memory_bytes = (int64_t)4 << 30;
	CHECK(reaper_admit(env.ctl, a, NULL, &why) == 0);
	rt_reserve(a);
	CHECK(rt_reserved(env.ctl) == (int64_t)4 << 30);
	/* a has not taken its 4 GB yet, but will: b does not fit. */
	CHECK(reaper_admit(env.ctl, b, NULL, &why) == -1);
	CHECK(why != NULL && strstr(why, "memory") != NULL);
	/* a's port accepts: a moment later its memory is in MemAvailable. */
	rt_reserve_settle(a);
	CHECK(a->reserve_until_ms > time_mono_ms() &&
	    a->reserve_until_ms != INT64_MAX);
	CHECK(rt_reserved(env.ctl) == (int64_t)4 << 30);
	a->reserve_until_ms = time_mono_ms() - 1;
	CHECK(rt_reserved(env.ctl) == 0 && a->reserve_until_ms == 0);
	CHECK(reaper_admit(env.ctl, b, NULL, &why) == 0);
	/* A start that ends (stopped, error) reserves nothing. */
	rt_reserve(b);
	rt_set_state(env.ctl, b, SANDBOX_STARTING, NULL);
	CHECK(rt_reserved(env.ctl) == (int64_t)4 << 30);
	rt_set_state(env.ctl, b, SANDBOX_STOPPED, NULL);
	CHECK(b->reserve_until_ms == 0 && rt_reserved(env.ctl) == 0);
	env_teardown();
}

/* ------------------------------------------------------------------ */
/* Lookups. */

static void
test_lookup_at_once(void)
{
	struct control_target	 t;
	struct control_wait	*w = (struct control_wait *)&env;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&t.addr;
	char			 id[ID_LEN + 1], ide[ID_LEN + 1];
	int			 nrts = 0;
	size_t			 i;

	env_setup("");
	memset(&ans, 0, sizeof ans);

	/* Unknown: nothing is made for it. */
	CHECK(control_target_lookup(env.ctl, "01jzzzzzzzzzzzzzzzzzzzzzzz", 0,
	    &t, answer_cb, &ans, &w) == CONTROL_LOOKUP_DONE);
	CHECK(w == NULL);
	CHECK(t.kind == TARGET_UNKNOWN);
	for (i = 0; i < RT_BUCKETS; i++)
		nrts += !LIST_EMPTY(&env.ctl->rts[i]);
	CHECK(nrts == 0);

	/* Error. */
	rt = sandbox_add(SANDBOX_ERROR, ide);
	CHECK(control_target_lookup(env.ctl, ide, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_DONE);
	CHECK(t.kind == TARGET_ERROR && t.message != NULL);

	/* Deleting. */
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_DELETING, NULL) == 0);
	CHECK(control_target_lookup(env.ctl, ide, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_DONE);
	CHECK(t.kind == TARGET_UNKNOWN);

	/* Running and ready: the address, the port, the generation. */
	rt = sandbox_running(id);
	rt->last_active_ms -= 5000;
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_DONE);
	CHECK(w == NULL);
	CHECK(t.kind == TARGET_OK);
	CHECK_STR(t.sandbox_id, id);
	CHECK(t.addrlen == sizeof *sin);
	CHECK(sin->sin_family == AF_INET);
	CHECK(sin->sin_addr.s_addr == ip_of(TEST_IP).s_addr);
	CHECK(ntohs(sin->sin_port) == 3000);
	CHECK(t.generation == rt->generation && t.generation != 0);
	CHECK(time_mono_ms() - rt->last_active_ms < 1000);
	CHECK(control_target_lookup(env.ctl, id, 5173, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_DONE);
	CHECK(t.kind == TARGET_OK && ntohs(sin->sin_port) == 5173);
	CHECK(env.ctl->nwaiters == 0);
	run_for(20);
	CHECK(ans.calls == 0);
	env_teardown();
}

/*
 * A stopped sandbox: held, started once for many requests, answered OK
 * once each when agentd says the port accepts; a cancelled one never.
 */
static void
test_lookup_wake(void)
{
	struct control_target	 t;
	struct control_wait	*w[3];
	struct sandbox_rt	*rt;
	struct answer		 ans[3];
	struct fagent		*fa;
	struct sockaddr_in	*sin;
	char			 id[ID_LEN + 1];
	int			 i;

	env_setup("wake_timeout = 5s\n");
	memset(ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	for (i = 0; i < 3; i++) {
		CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb,
		    &ans[i], &w[i]) == CONTROL_LOOKUP_HELD);
		CHECK(w[i] != NULL);
	}
	/* Never from inside the lookup. */
	CHECK(ans[0].calls == 0);
	CHECK(rt->state == SANDBOX_STARTING);
	CHECK(env.ctl->nwaiters == 3 && rt->nwaiters == 3);
	CHECK(env.ctl->wakes_total == 1);
	control_wait_cancel(w[1]);
	CHECK(env.ctl->nwaiters == 2 && rt->nwaiters == 2);

	fa = fagent_dial(id);
	CHECK(run_until(&fa->got, 1, 2000) == 0);
	CHECK(dock.starts == 1);
	CHECK(rt->state == SANDBOX_RUNNING);
	CHECK(rt->port_state == RT_PORT_PROBING);
	CHECK(strstr(fa->path, "/wait-port?host=" TEST_IP "&port=3000&") !=
	    NULL);
	/* Still held while the port does not accept. */
	run_for(50);
	CHECK(ans[0].calls == 0 && ans[2].calls == 0);
	/* A lookup now joins the wait; it does not start again. */
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans[1],
	    &w[1]) == CONTROL_LOOKUP_HELD);
	fagent_answer(fa, 200);
	CHECK(run_until(&ans[2].calls, 1, 2000) == 0);
	run_for(20);
	for (i = 0; i < 3; i++) {
		CHECK(ans[i].calls == 1);
		CHECK(ans[i].t.kind == TARGET_OK);
		CHECK(ans[i].t.generation == rt->generation);
		CHECK_STR(ans[i].t.sandbox_id, id);
		sin = (struct sockaddr_in *)&ans[i].t.addr;
		CHECK(sin->sin_addr.s_addr == ip_of(TEST_IP).s_addr);
		CHECK(ntohs(sin->sin_port) == 3000);
	}
	CHECK(dock.starts == 1);
	CHECK(fagent_probes() == 1);
	CHECK(env.ctl->nwaiters == 0 && rt->nwaiters == 0);
	CHECK(rt->port_state == RT_PORT_READY);
	/* And now at once. */
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans[0],
	    &w[0]) == CONTROL_LOOKUP_DONE && t.kind == TARGET_OK);
	env_teardown();
}

/* Without a dev_command nothing listens by itself: no probe, no hold. */
static void
test_no_dev_command(void)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;
	struct control_target	 t;
	struct control_wait	*w;

	env_setup("");
	memset(&s, 0, sizeof s);
	id_new(s.id);
	s.tenant = "test";
	s.template_name = "nodev";
	s.state = SANDBOX_STOPPED;
	s.port = 3000;
	s.memory_mb = 64;
	s.cpus = 1;
	s.env_json = "{}";
	s.labels_json = "{}";
	s.created_at = s.last_active_at = time_now_ms();
	CHECK(store_sandbox_insert(env.store, &s) == 0);
	CHECK((rt = rt_get(env.ctl, s.id)) != NULL);
	CHECK(rt->dev_command == 0);
	rt_set_state(env.ctl, rt, SANDBOX_STARTING, NULL);
	CHECK(rt_set_running(env.ctl, rt, ip_of(TEST_IP), 0) == 0);
	CHECK(rt->port_state == RT_PORT_READY);
	CHECK(fagent_probes() == 0);
	CHECK(control_target_lookup(env.ctl, s.id, 0, &t, answer_cb, NULL,
	    &w) == CONTROL_LOOKUP_DONE && t.kind == TARGET_OK);
	env_teardown();
}

/*
 * CONTROL_PORT_RUNNING (a task) is answered once the sandbox runs, its
 * dev server's port probed or not; the app's requests still wait.
 */
static void
test_lookup_running_only(void)
{
	struct control_target	 t;
	struct control_wait	*w[2];
	struct sandbox_rt	*rt;
	struct answer		 ans[2];
	struct fagent		*fa;
	char			 id[ID_LEN + 1];

	env_setup("wake_timeout = 5s\n");
	memset(ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans[0],
	    &w[0]) == CONTROL_LOOKUP_HELD);
	CHECK(control_target_lookup(env.ctl, id, CONTROL_PORT_RUNNING, &t,
	    answer_cb, &ans[1], &w[1]) == CONTROL_LOOKUP_HELD);
	fa = fagent_dial(id);
	CHECK(run_until(&fa->got, 1, 2000) == 0);
	CHECK(rt->port_state == RT_PORT_PROBING);
	CHECK(run_until(&ans[1].calls, 1, 2000) == 0);
	CHECK(ans[1].t.kind == TARGET_OK && ans[0].calls == 0);
	/* Running, probing: answered at once. */
	CHECK(control_target_lookup(env.ctl, id, CONTROL_PORT_RUNNING, &t,
	    NULL, NULL, &w[1]) == CONTROL_LOOKUP_DONE && t.kind == TARGET_OK);
	fagent_answer(fa, 200);
	CHECK(run_until(&ans[0].calls, 1, 2000) == 0);
	CHECK(ans[0].t.kind == TARGET_OK && ans[1].calls == 1);
	env_teardown();
}

/* A paused sandbox is thawed, not started. */
static void
test_lookup_unpause(void)
{
	struct control_target	 t;
	struct control_wait	*w;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	char			 id[ID_LEN + 1];
	uint64_t		 g;

	env_setup("wake_timeout = 5s\n");
	memset(&ans, 0, sizeof ans);
	rt = sandbox_running(id);
	g = rt->generation;
	CHECK(lifecycle_pause(env.ctl, id, NULL, NULL) == 0);
	CHECK(rt->generation == 0 && env.retires == 1);
	run_until(&dock.pauses, 1, 2000);
	run_for(30);
	CHECK(rt->state == SANDBOX_PAUSED);
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_HELD);
	CHECK(run_until(&ans.calls, 1, 2000) == 0);
	CHECK(ans.t.kind == TARGET_OK);
	CHECK(ans.t.generation > g);
	CHECK(dock.unpauses == 1 && dock.starts == 0);
	env_teardown();
}

/*
 * A sandbox paused while its port was still being probed (with held
 * requests, or none): thawed, it must be probed again, or the old probe's
 * answer (for the old generation) is dropped and it stays "probing".
 */
static void
test_reprobe_after_pause(void)
{
	struct control_target	 t;
	struct control_wait	*w;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	struct fagent		*fa, *fb;
	char			 id[ID_LEN + 1];

	env_setup("wake_timeout = 3s\n");
	memset(&ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	CHECK(lifecycle_start(env.ctl, id, NULL, NULL) == 0);
	fa = fagent_dial(id);
	CHECK(run_until(&fa->got, 1, 2000) == 0);
	CHECK(rt->port_state == RT_PORT_PROBING);
	CHECK(lifecycle_pause(env.ctl, id, NULL, NULL) == 0);
	run_until(&dock.pauses, 1, 2000);
	run_for(30);
	CHECK(rt->state == SANDBOX_PAUSED);
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_HELD);
	fb = fagent_dial(id);
	run_until(&dock.unpauses, 1, 2000);
	run_for(50);
	CHECK(rt->state == SANDBOX_RUNNING);
	/* The first probe answers, for the generation before the pause. */
	fagent_answer(fa, 200);
	run_for(50);
	CHECK(fb->got);
	CHECK(fagent_probes() == 2);
	fagent_answer(fb, 200);
	CHECK(run_until(&ans.calls, 1, 2000) == 0);
	CHECK(ans.t.kind == TARGET_OK);
	CHECK(rt->port_state == RT_PORT_READY);
	env_teardown();
}

/* The reaper never pauses or stops a sandbox with requests held for it. */
static void
test_reaper_spares_held(void)
{
	struct control_target	 t;
	struct control_wait	*w;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	struct fagent		*fa;
	char			 id[ID_LEN + 1];

	env_setup("wake_timeout = 3s\n");
	memset(&ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	rt->pause_timeout_ms = 100;
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_HELD);
	fa = fagent_dial(id);
	CHECK(run_until(&fa->got, 1, 2000) == 0);
	CHECK(rt->port_state == RT_PORT_PROBING);
	/* The app takes its time to listen; the request waits for it. */
	run_for(400);
	CHECK(env.ctl->idle_pauses_total == 0);
	CHECK(dock.pauses == 0);
	CHECK(rt->state == SANDBOX_RUNNING);
	fagent_answer(fa, 200);
	CHECK(run_until(&ans.calls, 1, 2000) == 0);
	CHECK(ans.t.kind == TARGET_OK);
	/* Answered and idle: now it may pause. */
	run_until(&dock.pauses, 1, 2000);
	run_for(30);
	CHECK(rt->state == SANDBOX_PAUSED);
	CHECK(env.ctl->idle_pauses_total == 1);
	env_teardown();
}

/* The idle timer: pause, then stop; a busy sandbox is left alone. */
static void
test_reaper_idle(void)
{
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];

	env_setup("");
	rt = sandbox_running(id);
	rt->pause_timeout_ms = 100;
	rt->idle_timeout_ms = 300;
	control_activity(env.ctl, id, ACTIVITY_TUNNEL, 1);
	reaper_arm(env.ctl, rt);
	run_for(250);
	CHECK(rt->state == SANDBOX_RUNNING && dock.pauses == 0);
	control_activity(env.ctl, id, ACTIVITY_TUNNEL, -1);
	run_until(&dock.pauses, 1, 2000);
	run_for(30);
	CHECK(rt->state == SANDBOX_PAUSED);
	CHECK(env.retires == 1);
	run_until(&dock.stops, 1, 2000);
	run_for(30);
	CHECK(rt->state == SANDBOX_STOPPED);
	CHECK(env.ctl->idle_pauses_total == 1);
	CHECK(env.ctl->idle_stops_total == 1);
	CHECK(env.ctl->nactive == 0);
	env_teardown();
}

/* A pause that cannot even begin does not spin the idle timer. */
static void
test_reaper_no_spin(void)
{
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];

	env_setup("");
	rt = sandbox_running(id);
	/* No container recorded: lifecycle_pause refuses at once. */
	store_sandbox_set_container(env.store, id, NULL);
	rt->pause_timeout_ms = 50;
	reaper_arm(env.ctl, rt);
	run_for(300);
	CHECK(env.ctl->idle_pauses_total <= 8);
	CHECK(rt->state == SANDBOX_RUNNING);
	env_teardown();
}

/* A wake that fails before lifecycle_start returns answers from the loop. */
static void
test_lookup_wake_fails_at_once(void)
{
	struct control_target	 t;
	struct control_wait	*w;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	char			 id[ID_LEN + 1], *path;
	int			 fd;

	env_setup("wake_timeout = 3s\n");
	memset(&ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	/* A file where its rendezvous directory goes: the start fails. */
	xasprintf(&path, "%s/data%d/run/%s", tmp, ntest, id);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	close(fd);
	if (control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans, &w) ==
	    CONTROL_LOOKUP_DONE) {
		/* Acceptable too: answered at once, not held. */
		CHECK(t.kind == TARGET_ERROR || t.kind == TARGET_UNAVAILABLE);
	} else {
		CHECK(ans.calls == 0);
		CHECK(run_until(&ans.calls, 1, 1000) == 0);
		CHECK(ans.calls == 1);
		CHECK(ans.t.kind == TARGET_ERROR);
	}
	CHECK(rt->state == SANDBOX_ERROR);
	CHECK(env.ctl->nwaiters == 0);
	unlink(path);
	free(path);
	env_teardown();
}

/* wake_timeout: held requests get 503 when the start takes too long. */
static void
test_lookup_timeout(void)
{
	struct control_target	 t;
	struct control_wait	*w;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	char			 id[ID_LEN + 1];
	int64_t			 t0;

	env_setup("wake_timeout = 300ms\n");
	memset(&ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	dock.hold_start = 1;
	t0 = time_mono_ms();
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_HELD);
	CHECK(run_until(&ans.calls, 1, 3000) == 0);
	CHECK(ans.calls == 1);
	CHECK(ans.t.kind == TARGET_UNAVAILABLE);
	CHECK(ans.t.retry_after_s > 0 && ans.t.message != NULL);
	CHECK(time_mono_ms() - t0 >= 290);
	CHECK(env.ctl->nwaiters == 0 && rt->nwaiters == 0);
	/* The start finishes later; nobody is told twice. */
	fdock_release();
	run_until(&dock.inspects, 1, 2000);
	run_for(50);
	CHECK(rt->state == SANDBOX_RUNNING);
	CHECK(ans.calls == 1);
	env_teardown();
}

/* The probe asks agentd for no longer than agentd accepts (10 minutes). */
static void
test_probe_timeout_clamped(void)
{
	struct fagent	*fa;
	const char	*p;
	char		 id[ID_LEN + 1];

	env_setup("wake_timeout = 20m\n");
	sandbox_add(SANDBOX_STOPPED, id);
	CHECK(lifecycle_start(env.ctl, id, NULL, NULL) == 0);
	fa = fagent_dial(id);
	CHECK(run_until(&fa->got, 1, 2000) == 0);
	p = strstr(fa->path, "timeout_ms=");
	CHECK(p != NULL && atoll(p + 11) >= 1 && atoll(p + 11) <= 600000);
	fagent_answer(fa, 200);
	run_for(50);
	env_teardown();
}

/* Caps on held requests, per sandbox and in all. */
static void
test_lookup_caps(void)
{
	struct control_target	 t;
	struct control_wait	*w[257], *extra;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	char			 id[ID_LEN + 1];
	int			 i, held = 0;

	env_setup("wake_timeout = 5s\n");
	memset(&ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	for (i = 0; i < 257; i++) {
		w[i] = NULL;
		if (control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
		    &w[i]) == CONTROL_LOOKUP_HELD)
			held++;
	}
	CHECK(held == 256);
	CHECK(w[256] == NULL);
	CHECK(t.kind == TARGET_UNAVAILABLE && t.retry_after_s > 0);
	CHECK(rt->nwaiters == 256 && env.ctl->nwaiters == 256);
	CHECK(env.ctl->refusals_total == 1);
	/* In all: pretend 4096 are held elsewhere. */
	control_wait_cancel(w[0]);
	w[0] = NULL;
	env.ctl->nwaiters += 4096 - 255;
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
	    &extra) == CONTROL_LOOKUP_DONE);
	CHECK(t.kind == TARGET_UNAVAILABLE);
	env.ctl->nwaiters -= 4096 - 255;
	for (i = 1; i < 256; i++)
		control_wait_cancel(w[i]);
	CHECK(rt->nwaiters == 0 && env.ctl->nwaiters == 0);
	run_for(50);
	CHECK(ans.calls == 0);
	agent_forget(env.ctl->hub, id);
	env_teardown();
}

/* Held requests for a sandbox deleted meanwhile learn it is gone. */
static void
test_lookup_dropped(void)
{
	struct control_target	 t;
	struct control_wait	*w;
	struct sandbox_rt	*rt;
	struct answer		 ans;
	char			 id[ID_LEN + 1];

	env_setup("");
	memset(&ans, 0, sizeof ans);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	CHECK(control_target_lookup(env.ctl, id, 0, &t, answer_cb, &ans,
	    &w) == CONTROL_LOOKUP_HELD);
	/* Started; its port is being probed (no agentd comes). */
	run_until(&dock.inspects, 1, 2000);
	run_for(20);
	CHECK(rt->state == SANDBOX_RUNNING);
	CHECK(rt->port_state == RT_PORT_PROBING);
	CHECK(env.ctl->nactive == 1);
	CHECK(lifecycle_delete(env.ctl, id, NULL, NULL) == 0);
	CHECK(env.retires == 1);
	CHECK(ans.calls == 0);
	CHECK(run_until(&ans.calls, 1, 3000) == 0);
	CHECK(ans.calls == 1);
	CHECK(ans.t.kind == TARGET_UNKNOWN);
	CHECK(rt_find(env.ctl, id) == NULL);
	CHECK(stored_state(id) == -1);
	CHECK(env.ctl->nwaiters == 0);
	CHECK(env.ctl->nactive == 0);
	CHECK(env.retires == 1);
	env_teardown();
}

/* The reconciler leaves alone a create that finished after its listing. */
static int	reconciled_n, reconciled_ok;

static void
reconciled_cb(struct control *ctl, int ok)
{
	reconciled_n++;
	reconciled_ok = ok;
}

static void
test_reconcile_keeps_fresh_create(void)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];
	uint64_t		 g;

	env_setup("");
	reconciled_n = 0;
	dock.hold_list = 1;
	reconcile_run(env.ctl, reconciled_cb);
	CHECK(run_until(&dock.lists, 1, 2000) == 0);
	/* Docker has listed no container; now a create runs to its end. */
	rt = sandbox_add(SANDBOX_CREATING, id);
	store_sandbox_set_container(env.store, id, NULL);
	CHECK(store_sandbox_get(env.store, id, &s) == 0);
	CHECK(lifecycle_create(env.ctl, &s, NULL, NULL) == 0);
	store_sandbox_clear(&s);
	CHECK(run_until(&dock.inspects, 1, 2000) == 0);
	run_for(20);
	CHECK(rt->state == SANDBOX_RUNNING && rt->op == NULL);
	g = rt->generation;
	CHECK(dock.creates == 1 && dock.starts == 1);
	/* The stale listing arrives: the new sandbox must not be touched. */
	fdock_release();
	CHECK(run_until(&reconciled_n, 1, 2000) == 0);
	run_for(50);
	CHECK(reconciled_ok == 1);
	CHECK(rt_find(env.ctl, id) == rt);
	CHECK(rt->state == SANDBOX_RUNNING && rt->generation == g);
	CHECK(stored_state(id) == SANDBOX_RUNNING);
	CHECK(dock.creates == 1 && dock.starts == 1 && dock.deletes == 0 &&
	    dock.stops == 0);
	CHECK(store_sandbox_get(env.store, id, &s) == 0);
	CHECK(s.container_id != NULL && strcmp(s.container_id, "cnew") == 0);
	store_sandbox_clear(&s);
	env_teardown();
}

/*
 * A container made by an older sandboxd (no io.sandboxd.spec) is made
 * again, but not under a start that began after the listing: that start
 * owns the sandbox, and removing the container it started would leave a
 * running sandbox without one.
 */
static void
test_reconcile_stale_owned(void)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];

	env_setup("");
	reconciled_n = 0;
	rt = sandbox_add(SANDBOX_STOPPED, id);
	snprintf(dock.list_body, sizeof dock.list_body, "[{\"Id\":\"c0\","
	    "\"State\":\"exited\",\"Labels\":{\"io.sandboxd.instance\":"
	    "\"rtest\",\"io.sandboxd.sandbox\":\"%s\"}}]", id);
	dock.hold_list = 1;
	reconcile_run(env.ctl, reconciled_cb);
	CHECK(run_until(&dock.lists, 1, 2000) == 0);
	/* Listed stopped; now a start of that container runs. */
	CHECK(lifecycle_start(env.ctl, id, NULL, NULL) == 0);
	CHECK(run_until(&dock.starts, 1, 2000) == 0);
	run_for(50);
	CHECK(rt->state == SANDBOX_RUNNING);
	fdock_release();
	CHECK(run_until(&reconciled_n, 1, 2000) == 0);
	run_for(50);
	CHECK(dock.deletes == 0 && dock.creates == 0 && dock.starts == 1);
	CHECK(rt->state == SANDBOX_RUNNING);
	CHECK(store_sandbox_get(env.store, id, &s) == 0);
	CHECK(s.container_id != NULL && strcmp(s.container_id, "c0") == 0);
	store_sandbox_clear(&s);
	env_teardown();
}

/* The ANTHROPIC_API_KEY line provider_env gives a sandbox. */
static void
provider_token_cb(void *arg, const char *line)
{
	if (strncmp(line, "ANTHROPIC_API_KEY=", 18) == 0)
		snprintf(arg, 128, "%s", line + 18);
}

/*
 * An upstream by name whose connection fails inside provider_connect
 * (the name is in /etc/hosts, so the resolver answers at once, and the
 * socket cannot be made: out of descriptors): the sandbox gets its 502
 * and the connection is closed, not left open for ever.
 */
static void
test_provider_fails_at_once(void)
{
	struct sockaddr_in	 sin;
	struct in_addr		 lo;
	struct rlimit		 rl, low;
	struct sandbox_rt	*rt;
	char			*extra, *req, key[300], tok[128], buf[2048];
	char			 id[ID_LEN + 1];
	socklen_t		 slen = sizeof sin;
	size_t			 got = 0;
	ssize_t			 n = -1;
	int			 fd, port, spare, eof = 0;
	FILE			*f;

	/* A free port for the proxy, and a key. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sin, &slen) == 0);
	port = ntohs(sin.sin_port);
	close(fd);
	snprintf(key, sizeof key, "%s/provider.key", tmp);
	if ((f = fopen(key, "w")) == NULL)
		fatal("%s", key);
	fprintf(f, "sk-test-operator-key\n");
	fclose(f);
	chmod(key, 0600);
	xasprintf(&extra, "min_free_memory = 0\nwake_timeout = 5s\n"
	    "provider_port = %d\n[provider anthropic]\nkind = anthropic\n"
	    "upstream = https://localhost:1\nkey_file = %s\n", port, key);
	env_setup(extra);
	free(extra);
	inet_pton(AF_INET, "127.0.0.1", &lo);
	CHECK(provider_listen(env.ctl, &lo) == 0);
	rt = sandbox_add(SANDBOX_STOPPED, id);
	rt_set_state(env.ctl, rt, SANDBOX_STARTING, NULL);
	rt_set_running(env.ctl, rt, lo, 1);
	tok[0] = '\0';
	provider_env(env.ctl, id, NULL, provider_token_cb, tok);
	CHECK(tok[0] != '\0');

	fd = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_port = htons((uint16_t)port);
	CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
	run_for(100);		/* accepted */
	/* No descriptor free from here on: the upstream's socket fails. */
	spare = dup(0);
	close(spare);
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	low = rl;
	low.rlim_cur = (rlim_t)spare;
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
	xasprintf(&req, "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\n"
	    "x-api-key: %s\r\nContent-Length: 0\r\n\r\n", tok);
	CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
	free(req);
	run_for(300);
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	run_for(300);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	while (got < sizeof buf - 1 &&
	    (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
		got += (size_t)n;
	eof = got < sizeof buf - 1 && n == 0;
	buf[got] = '\0';
	CHECK(strncmp(buf, "HTTP/1.1 502 ", 13) == 0);
	CHECK(strstr(buf, "sk-test-operator-key") == NULL);
	CHECK(eof);
	close(fd);
	env_teardown();
}

/*
 * The daemon's exit: control_free with a port probe still waiting for an
 * agentd that never came (agent_hub_free calls no callback). LeakSanitizer
 * finds its state if control does not free it.
 */
static void
test_probe_freed_at_exit(void)
{
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];

	env_setup("");
	rt = sandbox_add(SANDBOX_STOPPED, id);
	CHECK(lifecycle_start(env.ctl, id, NULL, NULL) == 0);
	run_for(300);
	CHECK(rt->state == SANDBOX_RUNNING &&
	    rt->port_state == RT_PORT_PROBING);
	fdock_release();
	run_for(50);
	/* Not env_teardown: it fails the probes first, as exit does not. */
	control_free(env.ctl);
	store_close(env.store);
	config_free(env.cf);
	fagent_free_all();
	fdock_stop();
	memset(&env, 0, sizeof env);
}

/* ------------------------------------------------------------------ */
/* Tasks (control/task.c) against the fake agentd. */

/* A fake API transport: what control answered, or streamed. */
struct fex {
	int		 replied;
	int		 status;
	char		*body;
	int		 streamed;
	struct evbuffer	*out;
	int		 writes;
	int		 ended;
	int		 full;		/* answer "over the high mark" */
	struct http_exchange *ex;
};

static void
fex_send(void *conn, struct http_exchange *ex)
{
	struct fex	*f = conn;
	size_t		 len = evbuffer_get_length(ex->resp_body);

	f->replied++;
	f->status = ex->status;
	free(f->body);
	f->body = xmalloc(len + 1);
	evbuffer_remove(ex->resp_body, f->body, len);
	f->body[len] = '\0';
	http_exchange_free(ex);
	f->ex = NULL;
}

static void
fex_head(void *conn, struct http_exchange *ex)
{
	struct fex	*f = conn;

	f->status = ex->status;
	f->streamed = 1;
}

static int
fex_write(void *conn, struct http_exchange *ex, const void *data, size_t len)
{
	struct fex	*f = conn;

	evbuffer_add(f->out, data, len);
	f->writes++;
	return (f->full);
}

static void
fex_end(void *conn, struct http_exchange *ex)
{
	struct fex	*f = conn;

	f->ended = 1;
	f->ex = NULL;
}

static const struct http_exchange_transport fex_transport = {
	fex_send, fex_head, fex_write, fex_end, NULL, NULL
};

static struct http_exchange *
fex_new(struct fex *f)
{
	struct http_exchange	*ex;

	memset(f, 0, sizeof *f);
	f->out = evbuffer_new();
	ex = http_exchange_new();
	ex->transport = &fex_transport;
	ex->conn = f;
	f->ex = ex;
	return (ex);
}

static void
fex_clear(struct fex *f)
{
	free(f->body);
	evbuffer_free(f->out);
	memset(f, 0, sizeof *f);
}

/* What a streamed answer holds so far, NUL-terminated (static). */
static const char *
fex_text(struct fex *f)
{
	static char	*text;
	size_t		 len = evbuffer_get_length(f->out);

	free(text);
	text = xmalloc(len + 1);
	memcpy(text, evbuffer_pullup(f->out, -1), len);
	text[len] = '\0';
	return (text);
}

/* Dial a spare agentd connection and wait for the request it carries. */
static struct fagent *
fagent_expect(const char *id, const char *prefix)
{
	struct fagent	*a;

	if ((a = fagent_dial(id)) == NULL || run_until(&a->got, 1, 3000) != 0)
		return (NULL);
	if (strncmp(a->path, prefix, strlen(prefix)) != 0) {
		fprintf(stderr, "fake agentd got %s, not %s\n", a->path,
		    prefix);
		return (NULL);
	}
	return (a);
}

static void
fagent_reply(struct fagent *a, int status, const char *body)
{
	char	*buf;

	if (a == NULL || a->bev == NULL)
		return;
	xasprintf(&buf, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
	    strlen(body), body);
	bufferevent_write(a->bev, buf, strlen(buf));
	free(buf);
}

/* A streamed ndjson answer: the head, then lines, then close. */
static void
fagent_stream(struct fagent *a, const char *lines, int close_after)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: "
	    "application/x-ndjson\r\nConnection: close\r\n\r\n";

	if (a == NULL || a->bev == NULL)
		return;
	if (lines == NULL)
		bufferevent_write(a->bev, head, sizeof head - 1);
	else
		bufferevent_write(a->bev, lines, strlen(lines));
	if (close_after)
		a->closing = 1;
}

/* A sandbox of template tpl in state (routable if running). */
static struct sandbox_rt *
task_sandbox(enum sandbox_state state, const char *tpl, char *id)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;
	char			*dir;

	memset(&s, 0, sizeof s);
	id_new(s.id);
	s.tenant = "test";
	s.template_name = (char *)tpl;
	s.state = state == SANDBOX_RUNNING ? SANDBOX_STOPPED : state;
	s.port = 3000;
	s.memory_mb = 64;
	s.cpus = 1;
	s.idle_timeout_s = 900;
	s.env_json = "{}";
	s.labels_json = "{}";
	s.created_at = s.last_active_at = time_now_ms();
	if (store_sandbox_insert(env.store, &s) != 0)
		fatalx("insert");
	store_sandbox_set_container(env.store, s.id, "c0");
	memcpy(id, s.id, ID_LEN + 1);
	rt = rt_get(env.ctl, s.id);
	if (state == SANDBOX_RUNNING) {
		rt_set_state(env.ctl, rt, SANDBOX_STARTING, NULL);
		rt_set_running(env.ctl, rt, ip_of(TEST_IP), 1);
		dir = control_sandbox_dir(env.ctl, "run", id);
		mkdir(dir, 0755);
		agent_listen(env.ctl->hub, id, dir);
		free(dir);
	}
	return (rt);
}

/* POST a task (spec a JSON text, env too or NULL); its id into tid. */
static int
task_post(const char *id, const char *spec, const char *envtext, char *tid)
{
	struct fex		 f;
	struct json_object	*o, *e = NULL, *v;
	int			 status;

	o = json_tokener_parse(spec);
	if (envtext != NULL)
		e = json_tokener_parse(envtext);
	task_create(env.ctl, fex_new(&f), id, o, e);
	json_object_put(o);
	json_object_put(e);
	status = f.status;
	tid[0] = '\0';
	if (f.body != NULL && (o = json_tokener_parse(f.body)) != NULL) {
		if (json_object_object_get_ex(o, "id", &v))
			snprintf(tid, ID_LEN + 1, "%s",
			    json_object_get_string(v));
		json_object_put(o);
	}
	fex_clear(&f);
	return (status);
}

/* The task's stored row (cleared by the caller), -1 if none. */
static int
task_row(const char *tid, struct store_task *row)
{
	return (store_task_get(env.store, tid, row) == 0 ? 0 : -1);
}

/* The host log of a task, as text (static). */
static const char *
task_logtext(const char *id, const char *tid)
{
	static char	 text[65536];
	char		*path;
	ssize_t		 n;
	int		 fd;

	xasprintf(&path, "%s/%s/%s.ndjson", env.ctl->tasks_dir, id, tid);
	text[0] = '\0';
	if ((fd = open(path, O_RDONLY)) != -1) {
		n = read(fd, text, sizeof text - 1);
		text[n > 0 ? n : 0] = '\0';
		close(fd);
	}
	free(path);
	return (text);
}

/*
 * A command task on a stopped sandbox: it wakes it, agentd gets the env
 * (the store never does), events are relayed into the host log and
 * streamed as SSE, the sandbox is held while it runs, and the exit event
 * finishes the task and every stream.
 */
static void
test_task_run(void)
{
	struct store_task	 row;
	struct sandbox_rt	*rt;
	struct fagent		*a, *b;
	struct fex		 g, h;
	char			 id[ID_LEN + 1], tid[ID_LEN + 1], *path;

	env_setup("");
	rt = task_sandbox(SANDBOX_STOPPED, "nodev", id);
	CHECK(task_post(id, "{\"agent\":\"command\",\"cmd\":[\"sh\",\"-c\","
	    "\"echo hi\"],\"timeout_s\":60}", "{\"SECRET\":\"s3cret\"}",
	    tid) == 202);
	CHECK(strlen(tid) == ID_LEN);
	CHECK(rt->holds == 1);
	a = fagent_expect(id, "/tasks");
	CHECK(a != NULL && dock.starts == 1);
	CHECK(rt->state == SANDBOX_RUNNING);
	if (a == NULL)
		goto out;
	CHECK_STR(a->method, "POST");
	CHECK(strstr(a->body, "\"SECRET\":\"s3cret\"") != NULL);
	CHECK(strstr(a->body, tid) != NULL);
	CHECK(strstr(a->body, "\"kind\":\"command\"") != NULL);
	CHECK(strstr(a->body, "\"checkpoint\":false") != NULL);
	CHECK(task_row(tid, &row) == 0 && row.state == TASK_QUEUED);
	CHECK(strstr(row.spec_json, "s3cret") == NULL);
	store_task_clear(&row);
	fagent_reply(a, 201, "{\"state\":\"running\",\"checkpoint\":null}");
	xasprintf(&path, "/tasks/%s/events?after=0", tid);
	b = fagent_expect(id, path);
	free(path);
	CHECK(b != NULL);
	CHECK(task_row(tid, &row) == 0 && row.state == TASK_RUNNING &&
	    row.started_at != 0);
	store_task_clear(&row);
	fagent_stream(b, NULL, 0);
	fagent_stream(b, "{\"seq\":1,\"type\":\"output\",\"stream\":\"stdout\","
	    "\"text\":\"hi\\n\"}\n", 0);
	run_for(100);
	CHECK(strstr(task_logtext(id, tid), "1 output {\"stream\":\"stdout\","
	    "\"text\":\"hi\\n\"}\n") != NULL);

	/* Two clients follow it: one from the start, one after id 1. */
	task_events(env.ctl, fex_new(&g), id, tid, 0);
	task_events(env.ctl, fex_new(&h), id, tid, 1);
	CHECK(g.streamed && g.status == 200 && h.streamed);
	run_for(50);
	CHECK(strcmp(fex_text(&g), "id: 1\nevent: output\ndata: "
	    "{\"stream\":\"stdout\",\"text\":\"hi\\n\"}\n\n") == 0);
	CHECK(h.writes == 0 && !g.ended);
	CHECK(rt->holds == 1);

	fagent_stream(b, "{\"seq\":2,\"type\":\"exit\",\"exit_code\":0,"
	    "\"state\":\"succeeded\",\"timed_out\":false,"
	    "\"changed_files\":[\"a.txt\"],\"summary\":null}\n", 1);
	CHECK(run_until(&g.ended, 1, 2000) == 0);
	CHECK(run_until(&h.ended, 1, 2000) == 0);
	CHECK(strstr(fex_text(&g), "id: 2\nevent: exit\ndata: "
	    "{\"exit_code\":0,\"state\":\"succeeded\"") != NULL);
	CHECK(strncmp(fex_text(&h), "id: 2\n", 6) == 0);
	CHECK(task_row(tid, &row) == 0 && row.state == TASK_SUCCEEDED &&
	    row.exit_code == 0 && row.finished_at != 0 &&
	    row.changed_json != NULL &&
	    strcmp(row.changed_json, "[\"a.txt\"]") == 0);
	store_task_clear(&row);
	CHECK(rt->holds == 0);
	fex_clear(&g);
	fex_clear(&h);

	/* After the end: the whole log, then the stream ends by itself. */
	task_events(env.ctl, fex_new(&g), id, tid, 0);
	CHECK(g.ended && strstr(fex_text(&g), "id: 1\n") != NULL &&
	    strstr(fex_text(&g), "id: 2\nevent: exit") != NULL);
	fex_clear(&g);
	/* Last-Event-ID at the end: 204, so EventSource stops retrying. */
	task_events(env.ctl, fex_new(&g), id, tid, 2);
	CHECK(g.replied == 1 && g.status == 204 && !g.streamed);
	fex_clear(&g);
out:
	env_teardown();
}

/*
 * One task at a time per sandbox: the second waits queued; a queued task
 * is cancelled here; a stop fails the running task and the queue.
 */
static void
test_task_queue(void)
{
	struct store_task	 row;
	struct sandbox_rt	*rt;
	struct fagent		*a;
	struct fex		 f;
	char			 id[ID_LEN + 1], t1[ID_LEN + 1], t2[ID_LEN + 1];
	char			 t3[ID_LEN + 1];
	int			 i, posts = 0;

	env_setup("");
	rt = task_sandbox(SANDBOX_RUNNING, "t", id);
	CHECK(task_post(id, "{\"agent\":\"command\",\"cmd\":[\"true\"]}",
	    NULL, t1) == 202);
	CHECK(task_post(id, "{\"agent\":\"command\",\"cmd\":[\"true\"]}",
	    NULL, t2) == 202);
	a = fagent_expect(id, "/tasks");
	CHECK(a != NULL && a->body != NULL && strstr(a->body, t1) != NULL);
	run_for(50);
	for (i = 0; i < nagents; i++)
		posts += agents[i].got;
	CHECK(posts == 1);
	CHECK(task_row(t2, &row) == 0 && row.state == TASK_QUEUED);
	store_task_clear(&row);

	/* The queued one is cancelled without agentd. */
	task_cancel(env.ctl, fex_new(&f), id, t2);
	CHECK(f.status == 200 && strstr(f.body, "\"cancelled\"") != NULL);
	fex_clear(&f);
	CHECK(strstr(task_logtext(id, t2), "1 exit {\"exit_code\":-1,"
	    "\"state\":\"cancelled\"") != NULL);
	/* Cancelled is final. */
	task_cancel(env.ctl, fex_new(&f), id, t2);
	CHECK(f.status == 409);
	fex_clear(&f);
	/* Revert of a task without a checkpoint. */
	task_revert(env.ctl, fex_new(&f), id, t2);
	CHECK(f.status == 409);
	fex_clear(&f);
	/* Another sandbox's task id is not found here. */
	task_get(env.ctl, fex_new(&f), "00000000000000000000000000", t2);
	CHECK(f.status == 404);
	fex_clear(&f);

	CHECK(task_post(id, "{\"agent\":\"command\",\"cmd\":[\"true\"]}",
	    NULL, t3) == 202);
	fagent_reply(a, 201, "{\"state\":\"running\",\"checkpoint\":\"abc\"}");
	CHECK(fagent_expect(id, "/tasks/") != NULL);
	CHECK(task_row(t1, &row) == 0 && row.state == TASK_RUNNING &&
	    row.checkpoint != NULL && strcmp(row.checkpoint, "abc") == 0);
	store_task_clear(&row);
	CHECK(rt->holds == 1);
	/* Revert while it runs: 409. */
	task_revert(env.ctl, fex_new(&f), id, t1);
	CHECK(f.status == 409);
	fex_clear(&f);

	/* The sandbox stops: the running task and the queue fail, nothing
	 * else starts. */
	CHECK(rt_set_state(env.ctl, rt, SANDBOX_STOPPING, NULL) == 0);
	CHECK(task_row(t1, &row) == 0 && row.state == TASK_FAILED &&
	    row.error != NULL && strcmp(row.error, "sandbox stopped") == 0);
	store_task_clear(&row);
	CHECK(task_row(t3, &row) == 0 && row.state == TASK_FAILED);
	store_task_clear(&row);
	CHECK(rt->holds == 0);
	CHECK(TAILQ_EMPTY(&env.ctl->tasks));
	task_list(env.ctl, fex_new(&f), id);
	CHECK(f.status == 200 && strstr(f.body, t1) != NULL &&
	    strstr(f.body, t3) != NULL);
	fex_clear(&f);
	env_teardown();
}

/*
 * The host log is bounded: past task_log_max output is dropped after one
 * truncated status, the exit event is kept. A client over its high mark
 * gets nothing more until it drains.
 */
static void
test_task_bounded(void)
{
	struct fagent	*a, *b;
	struct fex	 g;
	struct http_exchange *ex;
	struct stat	 st;
	char		 id[ID_LEN + 1], tid[ID_LEN + 1], line[256], *path;
	int		 i;

	env_setup("task_log_max = 4096\n");
	task_sandbox(SANDBOX_RUNNING, "t", id);
	CHECK(task_post(id, "{\"agent\":\"command\",\"cmd\":[\"true\"]}",
	    NULL, tid) == 202);
	a = fagent_expect(id, "/tasks");
	fagent_reply(a, 201, "{\"state\":\"running\"}");
	b = fagent_expect(id, "/tasks/");
	CHECK(a != NULL && b != NULL);
	fagent_stream(b, NULL, 0);
	fagent_stream(b, "{\"seq\":1,\"type\":\"output\",\"stream\":\"stdout\","
	    "\"text\":\"first\\n\"}\n", 0);
	run_for(50);
	ex = fex_new(&g);
	g.full = 1;
	task_events(env.ctl, ex, id, tid, 0);
	run_for(20);
	CHECK(g.writes == 1);
	for (i = 2; i <= 200; i++) {
		snprintf(line, sizeof line, "{\"seq\":%d,\"type\":\"output\","
		    "\"stream\":\"stdout\",\"text\":\"%080d\\n\"}\n", i, i);
		fagent_stream(b, line, 0);
	}
	fagent_stream(b, "{\"seq\":201,\"type\":\"exit\",\"exit_code\":1,"
	    "\"state\":\"failed\",\"timed_out\":true}\n", 1);
	run_for(200);
	/* Blocked: not one more write however much the log grew. */
	CHECK(g.writes == 1 && !g.ended);
	xasprintf(&path, "%s/%s/%s.ndjson", env.ctl->tasks_dir, id, tid);
	CHECK(stat(path, &st) == 0 && st.st_size <= 4096 + 256);
	free(path);
	CHECK(strstr(task_logtext(id, tid), " status {\"status\":"
	    "\"truncated\"}\n") != NULL);
	CHECK(strstr(task_logtext(id, tid), "201 exit {\"exit_code\":1,"
	    "\"state\":\"failed\",\"timed_out\":true,\"error\":\"the task ran "
	    "out of time\"}\n") != NULL);
	g.full = 0;
	http_exchange_stream_drained(g.ex);
	CHECK(run_until(&g.ended, 1, 2000) == 0);
	CHECK(strstr(fex_text(&g), "event: status\ndata: "
	    "{\"status\":\"truncated\"}") != NULL);
	CHECK(strstr(fex_text(&g), "id: 201\nevent: exit") != NULL);
	fex_clear(&g);
	env_teardown();
}

/*
 * The daemon restarted: a running task on a running sandbox that agentd
 * knows is relayed again after the last id logged; one on a stopped
 * sandbox fails; a queued one fails (its env was never stored).
 */
static void
test_task_pickup(void)
{
	struct store_task	 row;
	struct sandbox_rt	*rt;
	struct fagent		*a, *b;
	char			 id[ID_LEN + 1], sid[ID_LEN + 1], *path, *dir;
	char			 t1[ID_LEN + 1], t2[ID_LEN + 1], t3[ID_LEN + 1];
	char			*ids[3] = { t1, t2, t3 };
	const char		*owner[3] = { id, sid, id };
	int			 i, fd;

	env_setup("");
	rt = task_sandbox(SANDBOX_RUNNING, "t", id);
	task_sandbox(SANDBOX_STOPPED, "t", sid);
	for (i = 0; i < 3; i++) {
		memset(&row, 0, sizeof row);
		id_new(row.id);
		memcpy(ids[i], row.id, ID_LEN + 1);
		memcpy(row.sandbox_id, owner[i], ID_LEN + 1);
		row.agent = "command";
		row.spec_json = "{\"agent\":\"command\",\"cmd\":[\"true\"]}";
		row.state = i == 2 ? TASK_QUEUED : TASK_RUNNING;
		row.exit_code = -1;
		row.created_at = row.started_at = time_now_ms();
		CHECK(store_task_insert(env.store, &row) == 0);
	}
	dir = control_sandbox_dir(env.ctl, "tasks", id);
	mkdir(dir, 0700);
	free(dir);
	xasprintf(&path, "%s/%s/%s.ndjson", env.ctl->tasks_dir, id, t1);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	free(path);
	dprintf(fd, "1 output {\"stream\":\"stdout\",\"text\":\"a\\n\"}\n"
	    "2 output {\"stream\":\"stdout\",\"text\":\"b\\n\"}\n");
	close(fd);

	task_startup(env.ctl);
	CHECK(task_row(t2, &row) == 0 && row.state == TASK_FAILED &&
	    strcmp(row.error, "sandbox stopped") == 0);
	store_task_clear(&row);
	CHECK(task_row(t3, &row) == 0 && row.state == TASK_FAILED &&
	    strstr(row.error, "restarted") != NULL);
	store_task_clear(&row);
	CHECK(rt->holds == 1);
	xasprintf(&path, "/tasks/%s", t1);
	a = fagent_expect(id, path);
	free(path);
	CHECK(a != NULL && strcmp(a->method, "GET") == 0);
	fagent_reply(a, 200, "{\"state\":\"running\"}");
	xasprintf(&path, "/tasks/%s/events?after=2", t1);
	b = fagent_expect(id, path);
	free(path);
	CHECK(b != NULL);
	fagent_stream(b, NULL, 0);
	fagent_stream(b, "{\"seq\":3,\"type\":\"exit\",\"exit_code\":0,"
	    "\"state\":\"succeeded\"}\n", 1);
	run_for(100);
	CHECK(task_row(t1, &row) == 0 && row.state == TASK_SUCCEEDED);
	store_task_clear(&row);
	CHECK(strstr(task_logtext(id, t1), "2 output") != NULL &&
	    strstr(task_logtext(id, t1), "3 exit") != NULL);
	CHECK(rt->holds == 0);
	env_teardown();
}

/* agentd loses the task (404 to the relay): it fails with that reason. */
static void
test_task_lost(void)
{
	struct store_task	 row;
	struct fagent		*a, *b;
	char			 id[ID_LEN + 1], tid[ID_LEN + 1];

	env_setup("");
	task_sandbox(SANDBOX_RUNNING, "t", id);
	CHECK(task_post(id, "{\"agent\":\"command\",\"cmd\":[\"true\"]}",
	    NULL, tid) == 202);
	a = fagent_expect(id, "/tasks");
	fagent_reply(a, 201, "{\"state\":\"running\"}");
	b = fagent_expect(id, "/tasks/");
	fagent_reply(b, 404, "{\"error\":{\"code\":\"not_found\","
	    "\"message\":\"no task\"}}");
	run_for(100);
	CHECK(task_row(tid, &row) == 0 && row.state == TASK_FAILED &&
	    row.error != NULL && strcmp(row.error, "agentd lost the task") ==
	    0);
	store_task_clear(&row);
	/* agentd without /tasks: the task fails saying so. */
	CHECK(task_post(id, "{\"agent\":\"command\",\"cmd\":[\"true\"]}",
	    NULL, tid) == 202);
	a = fagent_expect(id, "/tasks");
	fagent_reply(a, 404, "{}");
	run_for(100);
	CHECK(task_row(tid, &row) == 0 && row.state == TASK_FAILED &&
	    strstr(row.error, "does not run tasks") != NULL);
	store_task_clear(&row);
	env_teardown();
}

/*
 * agentd never ends a task past its timeout (it is inside the sandbox):
 * the daemon gives up on it, fails it and asks agentd to kill it.
 */
static void
test_task_deadline(void)
{
	struct store_task	 row;
	struct sandbox_rt	*rt;
	struct fagent		*a, *b, *c;
	char			 id[ID_LEN + 1], tid[ID_LEN + 1], *path;

	env_setup("");
	rt = task_sandbox(SANDBOX_RUNNING, "t", id);
	memset(&row, 0, sizeof row);
	id_new(row.id);
	memcpy(tid, row.id, sizeof tid);
	memcpy(row.sandbox_id, id, sizeof row.sandbox_id);
	row.agent = "command";
	row.spec_json = "{\"agent\":\"command\",\"cmd\":[\"true\"],"
	    "\"timeout_s\":1}";
	row.state = TASK_RUNNING;
	row.exit_code = -1;
	row.created_at = row.started_at = time_now_ms() - 300 * 1000;
	CHECK(store_task_insert(env.store, &row) == 0);
	task_startup(env.ctl);
	a = fagent_expect(id, "/tasks/");
	fagent_reply(a, 200, "{\"state\":\"running\"}");
	b = fagent_expect(id, "/tasks/");
	CHECK(b != NULL && strstr(b->path, "/events?after=0") != NULL);
	fagent_stream(b, NULL, 0);
	run_for(300);
	CHECK(task_row(tid, &row) == 0 && row.state == TASK_RUNNING);
	store_task_clear(&row);
	xasprintf(&path, "/tasks/%s/cancel", tid);
	c = fagent_expect(id, path);
	free(path);
	CHECK(c != NULL && c->body != NULL &&
	    strstr(c->body, "\"grace_ms\":0") != NULL);
	CHECK(task_row(tid, &row) == 0 && row.state == TASK_FAILED &&
	    row.error != NULL && strstr(row.error, "timeout") != NULL);
	store_task_clear(&row);
	CHECK(rt->holds == 0);
	env_teardown();
}

/* What agent_stream handed back. */
struct sres {
	char		 lines[8][64];
	int		 nlines;
	int		 ends;
	int		 status;
	char		 body[256];
	char		 err[256];
	int		 cancel_at;	/* agent_cancel from the n-th line */
	struct agent_req *req;
};

static void
sres_line_cb(const char *line, size_t len, void *arg)
{
	struct sres	*r = arg;

	if (r->nlines < 8)
		snprintf(r->lines[r->nlines], sizeof r->lines[0], "%.*s",
		    (int)len, line);
	r->nlines++;
	if (r->cancel_at == r->nlines)
		agent_cancel(r->req);
}

static void
sres_end_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct sres	*r = arg;

	r->ends++;
	r->status = status;
	snprintf(r->body, sizeof r->body, "%s", body != NULL ? body : "");
	snprintf(r->err, sizeof r->err, "%s", errmsg != NULL ? errmsg : "");
}

/*
 * The hub's streaming mode: lines as they arrive (split anywhere), the
 * end at close or at Content-Length, a non-2xx answer whole, a cancel
 * from inside a line callback, a line over the cap, an unknown sandbox
 * failed from the loop.
 */
static void
test_agent_stream(void)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: "
	    "application/x-ndjson\r\nConnection: close\r\n\r\n";
	struct sres	 r;
	struct fagent	*a;
	char		 id[ID_LEN + 1], *big;

	env_setup("");
	task_sandbox(SANDBOX_RUNNING, "t", id);

	memset(&r, 0, sizeof r);
	r.req = agent_stream(env.ctl->hub, id, "GET", "/s", NULL, 0, 0,
	    sres_line_cb, sres_end_cb, &r);
	a = fagent_expect(id, "/s");
	CHECK(a != NULL);
	fagent_stream(a, head, 0);
	fagent_stream(a, "a\nb", 0);
	run_for(50);
	CHECK(r.nlines == 1 && strcmp(r.lines[0], "a") == 0 && r.ends == 0);
	fagent_stream(a, "c\r\n", 1);
	CHECK(run_until(&r.ends, 1, 2000) == 0);
	CHECK(r.nlines == 2 && strcmp(r.lines[1], "bc") == 0);
	CHECK(r.status == 200 && r.body[0] == '\0' && r.err[0] == '\0');

	/* Cancelled from the first line: no second line, no end. */
	memset(&r, 0, sizeof r);
	r.cancel_at = 1;
	r.req = agent_stream(env.ctl->hub, id, "GET", "/s", NULL, 0, 0,
	    sres_line_cb, sres_end_cb, &r);
	a = fagent_expect(id, "/s");
	fagent_stream(a, head, 0);
	fagent_stream(a, "x\ny\nz\n", 0);
	CHECK(run_until(&a->closed, 1, 2000) == 0);
	CHECK(r.nlines == 1 && r.ends == 0);

	/* A refusal comes whole. */
	memset(&r, 0, sizeof r);
	r.req = agent_stream(env.ctl->hub, id, "GET", "/s", NULL, 0, 0,
	    sres_line_cb, sres_end_cb, &r);
	a = fagent_expect(id, "/s");
	fagent_reply(a, 404, "{\"error\":1}");
	CHECK(run_until(&r.ends, 1, 2000) == 0);
	CHECK(r.status == 404 && strcmp(r.body, "{\"error\":1}") == 0 &&
	    r.nlines == 0);

	/* Framed by Content-Length: ends there, the last line unended. */
	memset(&r, 0, sizeof r);
	r.req = agent_stream(env.ctl->hub, id, "GET", "/s", NULL, 0, 0,
	    sres_line_cb, sres_end_cb, &r);
	a = fagent_expect(id, "/s");
	fagent_stream(a, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
	    "l1\nl", 0);
	CHECK(run_until(&r.ends, 1, 2000) == 0);
	CHECK(r.nlines == 2 && strcmp(r.lines[0], "l1") == 0 &&
	    strcmp(r.lines[1], "l") == 0 && r.status == 200);

	/* A line past the cap fails the stream. */
	memset(&r, 0, sizeof r);
	r.req = agent_stream(env.ctl->hub, id, "GET", "/s", NULL, 0, 0,
	    sres_line_cb, sres_end_cb, &r);
	a = fagent_expect(id, "/s");
	fagent_stream(a, head, 0);
	/* One byte past the cap (1 MiB, control/agent.c AGENT_MAX_LINE). */
	big = xmalloc(1024 * 1024 + 2);
	memset(big, 'x', 1024 * 1024 + 1);
	big[1024 * 1024 + 1] = '\0';
	fagent_stream(a, big, 0);
	free(big);
	CHECK(run_until(&r.ends, 1, 5000) == 0);
	CHECK(r.status == 0 && strstr(r.err, "longer") != NULL &&
	    r.nlines == 0);

	/* No such sandbox: failed, but from the loop. */
	memset(&r, 0, sizeof r);
	r.req = agent_stream(env.ctl->hub, "00000000000000000000000000",
	    "GET", "/s", NULL, 0, 0, sres_line_cb, sres_end_cb, &r);
	CHECK(r.ends == 0);
	CHECK(run_until(&r.ends, 1, 2000) == 0);
	CHECK(r.status == 0 && r.err[0] != '\0');
	env_teardown();
}

/* Run sql on the test's store file through a connection of our own. */
static void
store_sql(const char *sql)
{
	sqlite3	*db;
	char	*path, *err = NULL;

	xasprintf(&path, "%s/store%d.db", tmp, ntest);
	if (sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fatalx("%s: %s", sql, err != NULL ? err : sqlite3_errmsg(db));
	sqlite3_close(db);
	free(path);
}

/* From here every change to a sandbox row fails, as on a full disk. */
static void
store_refuse(int on)
{
	if (on)
		store_sql("CREATE TRIGGER refuse_up BEFORE UPDATE ON sandboxes "
		    "BEGIN SELECT RAISE(ABORT, 'injected'); END;"
		    "CREATE TRIGGER refuse_del BEFORE DELETE ON sandboxes "
		    "BEGIN SELECT RAISE(ABORT, 'injected'); END;");
	else
		store_sql("DROP TRIGGER refuse_up; DROP TRIGGER refuse_del;");
}

/* A reconcile is asked for (control_resync). */
static int
resync_asked(void)
{
	return (evtimer_pending(env.ctl->sync_retry, NULL) ||
	    env.ctl->sync_again);
}

/*
 * Docker says a container died or went while the store takes no write:
 * the sandbox stays, in memory, what the store has (never stopped here and
 * running there), and a reconcile is asked for; once the store takes
 * writes again the same news lands in both.
 */
static void
test_store_refuses_event(void)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];

	env_setup("");
	rt = sandbox_running(id);
	CHECK(rt->state == SANDBOX_RUNNING);
	evtimer_del(env.ctl->sync_retry);
	env.ctl->sync_again = 0;
	store_refuse(1);
	lifecycle_container_event(env.ctl, id, "c0", "die");
	CHECK(rt->state == SANDBOX_RUNNING);
	CHECK(stored_state(id) == SANDBOX_RUNNING);
	CHECK(resync_asked());
	evtimer_del(env.ctl->sync_retry);
	env.ctl->sync_again = 0;
	lifecycle_container_event(env.ctl, id, "c0", "destroy");
	CHECK(rt->state == SANDBOX_RUNNING);
	CHECK(stored_state(id) == SANDBOX_RUNNING);
	CHECK(store_sandbox_get(env.store, id, &s) == 0);
	CHECK(s.container_id != NULL && strcmp(s.container_id, "c0") == 0);
	store_sandbox_clear(&s);
	CHECK(resync_asked());
	evtimer_del(env.ctl->sync_retry);

	store_refuse(0);
	lifecycle_container_event(env.ctl, id, "c0", "destroy");
	CHECK(rt->state == SANDBOX_STOPPED);
	CHECK(stored_state(id) == SANDBOX_STOPPED);
	CHECK(store_sandbox_get(env.store, id, &s) == 0);
	CHECK(s.container_id == NULL);
	store_sandbox_clear(&s);
	env_teardown();
}

static int	refused_status;
static char	refused_msg[512];

static void
refused_cb(struct control *ctl, const char *id, int status,
    const char *message, void *arg)
{
	refused_status = status;
	snprintf(refused_msg, sizeof refused_msg, "%s",
	    message != NULL ? message : "");
}

/*
 * A create whose start Docker refuses is rolled back; if the store then
 * cannot delete the row, the sandbox is not forgotten in memory while
 * the store keeps it: it stays, and the answer says its record is left.
 */
static void
test_store_refuses_rollback(void)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;
	char			 id[ID_LEN + 1];

	env_setup("");
	rt = sandbox_add(SANDBOX_CREATING, id);
	store_sandbox_set_container(env.store, id, NULL);
	dock.start_status = 500;
	refused_status = 0;
	CHECK(store_sandbox_get(env.store, id, &s) == 0);
	CHECK(lifecycle_create(env.ctl, &s, refused_cb, NULL) == 0);
	store_sandbox_clear(&s);
	CHECK(run_until(&dock.starts, 1, 2000) == 0);
	store_refuse(1);
	CHECK(run_until(&refused_status, 1, 5000) == 0);
	CHECK(refused_status == 500);
	CHECK(strstr(refused_msg, "could not be removed") != NULL);
	CHECK((rt = rt_find(env.ctl, id)) != NULL);
	CHECK(rt != NULL && (int)rt->state == stored_state(id));
	CHECK(stored_state(id) == SANDBOX_CREATING);
	CHECK(resync_asked());
	store_refuse(0);
	env_teardown();
}

/*
 * dockerd frozen past the client's timeout under a start (test_faults,
 * freeze_dockerd_during_start): the start is answered 503 and the sandbox
 * stays stopped, and Docker then starts the container after all, later
 * than the reconcile that the failure asked for. Its "start" event makes
 * the daemon stop the container again (the store wins); it used to be
 * ignored, leaving a stopped sandbox with a running container until the
 * next restart. Here the fake closes the start unanswered, the same
 * failure as the timeout (status 0), without waiting 30 s.
 */
static void
test_start_timeout_late_event(void)
{
	char	id[ID_LEN + 1];

	env_setup("");
	sandbox_add(SANDBOX_STOPPED, id);
	dock.drop_start = 1;
	refused_status = 0;
	CHECK(lifecycle_start(env.ctl, id, refused_cb, NULL) == 0);
	CHECK(run_until(&refused_status, 1, 2000) == 0);
	CHECK(refused_status == 503);
	CHECK(stored_state(id) == SANDBOX_STOPPED);
	CHECK(!lifecycle_busy(env.ctl, id));
	CHECK(resync_asked());
	CHECK(dock.stops == 0);

	/* Docker goes on with the start it was asked for. */
	lifecycle_container_event(env.ctl, id, "c0", "start");
	CHECK(lifecycle_busy(env.ctl, id));
	CHECK(run_until(&dock.stops, 1, 2000) == 0);
	run_for(50);
	CHECK(!lifecycle_busy(env.ctl, id));
	CHECK(stored_state(id) == SANDBOX_STOPPED);

	/* Not this sandbox's container any more, or not a start: nothing. */
	lifecycle_container_event(env.ctl, id, "cold", "start");
	lifecycle_container_event(env.ctl, id, "c0", "exec_start");
	lifecycle_container_event(env.ctl, id, "c0", "create");
	CHECK(!lifecycle_busy(env.ctl, id));
	run_for(50);
	CHECK(dock.stops == 1);
	CHECK(stored_state(id) == SANDBOX_STOPPED);
	env_teardown();
}

/*
 * The same race with the "start" event before the client gave up: it
 * comes while the start is in flight, so it is kept for when the start
 * ends; the start fails, the sandbox is stopped, and the recheck finds
 * the container running (the fake's inspect says so) and stops it.
 */
static void
test_start_event_mid_failed_start(void)
{
	char	id[ID_LEN + 1];

	env_setup("");
	sandbox_add(SANDBOX_STOPPED, id);
	dock.hold_start = 1;
	refused_status = 0;
	CHECK(lifecycle_start(env.ctl, id, refused_cb, NULL) == 0);
	CHECK(run_until(&dock.starts, 1, 2000) == 0);
	lifecycle_container_event(env.ctl, id, "c0", "start");
	CHECK(dock.inspects == 0);
	fdock_drop_held();
	CHECK(run_until(&refused_status, 1, 2000) == 0);
	CHECK(refused_status == 503);
	CHECK(run_until(&dock.stops, 1, 2000) == 0);
	CHECK(dock.inspects == 1);
	run_for(50);
	CHECK(!lifecycle_busy(env.ctl, id));
	CHECK(stored_state(id) == SANDBOX_STOPPED);
	env_teardown();
}

/*
 * Our own start's "start" event, which comes while the start is in
 * flight, costs nothing: no second inspect, no stop.
 */
static void
test_start_event_own_start(void)
{
	char	id[ID_LEN + 1];

	env_setup("");
	sandbox_add(SANDBOX_STOPPED, id);
	dock.hold_start = 1;
	refused_status = 0;
	CHECK(lifecycle_start(env.ctl, id, refused_cb, NULL) == 0);
	CHECK(run_until(&dock.starts, 1, 2000) == 0);
	lifecycle_container_event(env.ctl, id, "c0", "start");
	fdock_release();
	CHECK(run_until(&refused_status, 1, 2000) == 0);
	CHECK(refused_status == 200);
	run_for(50);
	CHECK(dock.inspects == 1);
	CHECK(dock.stops == 0);
	CHECK(stored_state(id) == SANDBOX_RUNNING);
	/* And once it runs, its start event (late, or replayed): nothing. */
	lifecycle_container_event(env.ctl, id, "c0", "start");
	CHECK(!lifecycle_busy(env.ctl, id));
	run_for(50);
	CHECK(dock.stops == 0 && dock.inspects == 1);
	CHECK(stored_state(id) == SANDBOX_RUNNING);
	env_teardown();
}

int
main(void)
{
	struct timeval	tv = { 0, 10000 };

	log_init(getenv("TEST_DEBUG") != NULL ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN);
	/* No test may hang: the whole file has a minute. */
	alarm(120);
	/* A fake agentd may write to a connection the hub has cut. */
	signal(SIGPIPE, SIG_IGN);
	snprintf(tmp, sizeof tmp, "/tmp/sbx-rtest-XXXXXX");
	if (mkdtemp(tmp) == NULL)
		fatal("mkdtemp");
	base = event_base_new();
	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(tick, &tv);

	RUN(test_transitions);
	RUN(test_generation_retire);
	RUN(test_readopt_new_address);
	RUN(test_activity);
	RUN(test_admit);
	RUN(test_admit_tenant);
	RUN(test_admit_counted);
	RUN(test_disk_hold);
	RUN(test_admit_memory);
	RUN(test_admit_reserve);
	RUN(test_lookup_at_once);
	RUN(test_lookup_wake);
	RUN(test_lookup_unpause);
	RUN(test_no_dev_command);
	RUN(test_lookup_running_only);
	RUN(test_reprobe_after_pause);
	RUN(test_reaper_spares_held);
	RUN(test_reaper_idle);
	RUN(test_reaper_no_spin);
	RUN(test_lookup_wake_fails_at_once);
	RUN(test_lookup_timeout);
	RUN(test_probe_timeout_clamped);
	RUN(test_lookup_caps);
	RUN(test_lookup_dropped);
	RUN(test_reconcile_keeps_fresh_create);
	RUN(test_store_refuses_event);
	RUN(test_store_refuses_rollback);
	RUN(test_start_timeout_late_event);
	RUN(test_start_event_mid_failed_start);
	RUN(test_start_event_own_start);
	RUN(test_reconcile_stale_owned);
	RUN(test_provider_fails_at_once);
	RUN(test_probe_freed_at_exit);
	RUN(test_task_run);
	RUN(test_task_queue);
	RUN(test_task_bounded);
	RUN(test_task_pickup);
	RUN(test_task_lost);
	RUN(test_task_deadline);
	RUN(test_agent_stream);

	event_free(tick);
	event_base_free(base);
	{
		char *argv[] = { "rm", "-rf", tmp, NULL };
		pid_t pid = fork();

		if (pid == 0) {
			execv("/bin/rm", argv);
			_exit(127);
		}
		if (pid > 0)
			waitpid(pid, NULL, 0);
	}
	return (unit_finish());
}
