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

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include "tests/unit/unit.h"

#define FAKE_MAX_HELD	8
#define FAKE_MAX_AGENTS	8
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
	int			 hold_list;	/* 1: keep GET /containers/json */
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
		snprintf(body, sizeof body, "[]");
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
	while (dock.nheld > 0) {
		dock.nheld--;
		bufferevent_free(dock.held[dock.nheld].bev);
		free(dock.held[dock.nheld].reply);
	}
	evconnlistener_free(dock.lev);
	unlink(dock.path);
}

/* ------------------------------------------------------------------ */
/* A fake agentd: connects to the rendezvous, reads one request. */

struct fagent {
	struct bufferevent	*bev;
	int			 got;		/* a request came */
	char			 path[512];
	int			 closed;
};

static struct fagent	 agents[FAKE_MAX_AGENTS];
static int		 nagents;

static void
fagent_read_cb(struct bufferevent *bev, void *arg)
{
	struct fagent	*a = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer_ptr p;
	char		*head, method[16];

	if (a->got)
		return;
	p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (p.pos == -1)
		return;
	head = xstrndup((char *)evbuffer_pullup(in, p.pos), p.pos);
	if (sscanf(head, "%15s %511s", method, a->path) != 2)
		a->path[0] = '\0';
	free(head);
	a->got = 1;
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
	char			*path;

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
	bufferevent_setcb(a->bev, fagent_read_cb, NULL, fagent_event_cb, a);
	bufferevent_enable(a->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(a->bev, (struct sockaddr *)&sun,
	    sizeof sun) == -1) {
		bufferevent_free(a->bev);
		a->bev = NULL;
		a->closed = 1;
	}
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

int
main(void)
{
	struct timeval	tv = { 0, 10000 };

	log_init(getenv("TEST_DEBUG") != NULL ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN);
	/* No test may hang: the whole file has a minute. */
	alarm(120);
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
	RUN(test_admit_memory);
	RUN(test_admit_reserve);
	RUN(test_lookup_at_once);
	RUN(test_lookup_wake);
	RUN(test_lookup_unpause);
	RUN(test_no_dev_command);
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
	RUN(test_probe_freed_at_exit);

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
