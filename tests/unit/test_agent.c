/*
 * control/agent.c against the real agentd binary, on the host: a hub on an
 * event_base listens in a temporary directory, agentd connects to it, and
 * requests go through the whole rendezvous (HTTP on both sides, exec,
 * timeouts, concurrency, reconnects, shutdown), and what the hub must
 * refuse: connections that are not agentd's (no hello, a wrong token),
 * requests over the caps; a paused stream is not read.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <json.h>

#include "common/common.h"
#include "control/control.h"
#include "agentd/agentd.h"
#include "tests/unit/unit.h"

#define MAX_CHILDREN	8

struct result {
	int			 done;
	int			 status;
	char			*body;
	size_t			 len;
	char			*err;
	struct json_object	*json;
	int64_t			 ms;	/* from request to callback */
	int64_t			 started;
};

static struct event_base	*base;
static struct event		*tick;
static struct agent_hub		*hub;
static char			 tmp[256];
static char			 sock[300];
static char			 agentd_path[1024];
static pid_t			 children[MAX_CHILDREN];
static pid_t			 agentd_pid;
static int			 ready_count;
static char			 ready_id[64];
static int64_t			 agentd_started;

static void	 kill_children(void);
static pid_t	 spawn_agentd(const char *);
static int	 connect_sock(const char *);
static int	 peer_closed(int, int);
static void	 test_token_hidden(void);
static void	 tick_cb(evutil_socket_t, short, void *);
static void	 ready_cb(const char *, void *);
static void	 result_cb(int, const char *, size_t, const char *, void *);
static void	 result_clear(struct result *);
static void	 request(const char *, const char *, const char *, int,
		    struct result *);
static int	 wait_all(struct result *, int, int);
static int	 wait_flag(int *, int, int);
static void	 exec_req(const char *, struct result *, int);
static const char *jstr(struct result *, const char *);
static int64_t	 jint(struct result *, const char *);
static int	 jbool(struct result *, const char *);
static const char *jerror_code(struct result *);
static int	 wait_exit(pid_t, int, int *);

/* Kill whatever we started, whatever happened to the test. */
static void
kill_children(void)
{
	int	i;

	for (i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] <= 0)
			continue;
		kill(children[i], SIGKILL);
		waitpid(children[i], NULL, 0);
		children[i] = 0;
	}
}

/* Start agentd with this dev command; it dies with us (PDEATHSIG). */
static pid_t
spawn_agentd(const char *dev)
{
	char	env[AGENT_TOKEN_ENV_SIZE];
	pid_t	pid;
	int	i;

	/* What the daemon puts in the container's env. */
	agent_token_env(hub, "sbx1", env, sizeof env);
	if ((pid = fork()) == -1) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* A terminal's login shell must not read this host's profile. */
		setenv("HOME", tmp, 1);
		putenv(env);
		execl(agentd_path, "agentd", "--socket", sock, "--workdir", tmp,
		    "--dev-command", dev, (char *)NULL);
		perror(agentd_path);
		_exit(127);
	}
	for (i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] == 0) {
			children[i] = pid;
			break;
		}
	}
	return pid;
}

/* A client of a rendezvous socket, as anything in the sandbox may be. */
static int
connect_sock(const char *path)
{
	struct sockaddr_un	sun;
	int			fd;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%.100s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Run the loop up to max_ms until the hub closes fd: 1 if it did without
 * ever writing a byte to it, 0 if it is still open, -1 if bytes came.
 */
static int
peer_closed(int fd, int max_ms)
{
	int64_t	deadline = time_mono_ms() + max_ms;
	char	c;
	ssize_t	n;

	for (;;) {
		n = recv(fd, &c, 1, MSG_DONTWAIT);
		if (n == 0)
			return 1;
		if (n > 0)
			return -1;
		if (time_mono_ms() > deadline)
			return 0;
		event_base_loop(base, EVLOOP_ONCE);
	}
}

/* Keep EVLOOP_ONCE from sleeping forever. */
static void
tick_cb(evutil_socket_t fd, short events, void *arg)
{
}

/* Count ready callbacks. */
static void
ready_cb(const char *id, void *arg)
{
	ready_count++;
	snprintf(ready_id, sizeof ready_id, "%s", id);
}

/* Store a request's outcome. */
static void
result_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct result	*r = arg;

	r->done++;
	r->status = status;
	r->ms = time_mono_ms() - r->started;
	if (body != NULL) {
		r->body = xstrndup(body, len);
		r->len = len;
		r->json = json_tokener_parse(r->body);
	}
	if (errmsg != NULL)
		r->err = xstrdup(errmsg);
}

/* Forget a result. */
static void
result_clear(struct result *r)
{
	free(r->body);
	free(r->err);
	json_object_put(r->json);
	memset(r, 0, sizeof *r);
}

/* Send a request to the "sbx1" agentd. */
static void
request(const char *method, const char *path, const char *body,
    int timeout_ms, struct result *r)
{
	memset(r, 0, sizeof *r);
	r->started = time_mono_ms();
	agent_request(hub, "sbx1", method, path, body, body ? strlen(body) : 0,
	    timeout_ms, result_cb, r);
}

/* Run the loop until n results are in; 0 on time, -1 after max_ms. */
static int
wait_all(struct result *r, int n, int max_ms)
{
	int64_t	deadline = time_mono_ms() + max_ms;
	int	i, all;

	for (;;) {
		for (all = 1, i = 0; i < n; i++)
			all = all && r[i].done;
		if (all)
			return 0;
		if (time_mono_ms() > deadline)
			return -1;
		event_base_loop(base, EVLOOP_ONCE);
	}
}

/* Run the loop until *flag >= want; 0 on time, -1 after max_ms. */
static int
wait_flag(int *flag, int want, int max_ms)
{
	int64_t	deadline = time_mono_ms() + max_ms;

	while (*flag < want) {
		if (time_mono_ms() > deadline)
			return -1;
		event_base_loop(base, EVLOOP_ONCE);
	}
	return 0;
}

/* POST /exec with this body and wait for the answer. */
static void
exec_req(const char *body, struct result *r, int max_ms)
{
	request("POST", "/exec", body, 30000, r);
	if (wait_all(r, 1, max_ms) == -1)
		fprintf(stderr, "exec %s: no answer in %d ms\n", body, max_ms);
}

/* A string member of the answer, or NULL. */
static const char *
jstr(struct result *r, const char *key)
{
	struct json_object	*v;

	if (r->json == NULL || !json_object_object_get_ex(r->json, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* An integer member of the answer, or -999. */
static int64_t
jint(struct result *r, const char *key)
{
	struct json_object	*v;

	if (r->json == NULL || !json_object_object_get_ex(r->json, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return -999;
	return json_object_get_int64(v);
}

/* A boolean member of the answer, or -1. */
static int
jbool(struct result *r, const char *key)
{
	struct json_object	*v;

	if (r->json == NULL || !json_object_object_get_ex(r->json, key, &v) ||
	    !json_object_is_type(v, json_type_boolean))
		return -1;
	return json_object_get_boolean(v);
}

/* error.code of an error answer, or NULL. */
static const char *
jerror_code(struct result *r)
{
	struct json_object	*e, *c;

	if (r->json == NULL || !json_object_object_get_ex(r->json, "error", &e) ||
	    !json_object_object_get_ex(e, "code", &c) ||
	    !json_object_object_get_ex(e, "message", NULL))
		return NULL;
	return json_object_get_string(c);
}

/* waitpid with a deadline, running the loop meanwhile; 0 when it exited. */
static int
wait_exit(pid_t pid, int max_ms, int *status)
{
	int64_t	deadline = time_mono_ms() + max_ms;
	int	i;

	for (;;) {
		if (waitpid(pid, status, WNOHANG) == pid) {
			for (i = 0; i < MAX_CHILDREN; i++) {
				if (children[i] == pid)
					children[i] = 0;
			}
			return 0;
		}
		if (time_mono_ms() > deadline)
			return -1;
		event_base_loop(base, EVLOOP_ONCE);
	}
}

/* Run the loop for ms milliseconds. */
static void
run_settle(int ms)
{
	int64_t	deadline = time_mono_ms() + ms;

	while (time_mono_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
}

static void
test_ready(void)
{
	char		dev[600];
	struct stat	sb;

	CHECK(agent_listen(hub, "sbx1", tmp) == 0);
	CHECK(agent_listen(hub, "sbx1", tmp) == 0);	/* idempotent */
	CHECK(stat(sock, &sb) == 0 && (sb.st_mode & 0777) == 0666);
	CHECK(agent_connected(hub, "sbx1") == 0);

	snprintf(dev, sizeof dev, "echo up >> %s/dev.log; sleep 0.3", tmp);
	agentd_pid = spawn_agentd(dev);
	agentd_started = time_mono_ms();
	CHECK(wait_flag(&ready_count, 1, 5000) == 0);
	CHECK(ready_count == 1);
	CHECK_STR(ready_id, "sbx1");
	CHECK(agent_connected(hub, "sbx1") == 1);
}

static void
test_health(void)
{
	struct result	r;

	request("GET", "/health", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 200);
	CHECK_STR(jstr(&r, "status"), "ok");
	CHECK(jstr(&r, "dev_command") != NULL &&
	    strstr(jstr(&r, "dev_command"), "echo up") != NULL);
	CHECK(jint(&r, "dev_restarts") >= 0);
	result_clear(&r);
}

/* agentd's open descriptors, -1 if unknown. */
static int
count_fds(pid_t pid)
{
	char		 path[64];
	DIR		*d;
	struct dirent	*de;
	int		 n = 0;

	snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* agentd's CPU time so far (user + system), in clock ticks; -1 if unknown. */
static long
cpu_ticks(pid_t pid)
{
	char		 path[64], buf[1024], *p;
	unsigned long	 ut, st;
	FILE		*f;

	snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	p = fgets(buf, sizeof buf, f);
	fclose(f);
	if (p == NULL || (p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	    &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/* A loopback TCP port: listening (fd returned), or closed (-1 returned). */
static int
tcp_port(int listening, int *port)
{
	struct sockaddr_in	sin;
	socklen_t		len = sizeof sin;
	int			fd;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof sin) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1 ||
	    (listening && listen(fd, 4) == -1)) {
		perror("tcp_port");
		exit(1);
	}
	*port = ntohs(sin.sin_port);
	if (listening)
		return fd;
	close(fd);
	return -1;
}

/*
 * GET /wait-port: 200 once the port accepts, 504 at its timeout, 400 for
 * a bad query; no socket left behind, however it ends, and no busy loop.
 */
static void
test_wait_port(void)
{
	struct result	r;
	char		path[128];
	int		lfd, port, fds;
	long		ticks;

	fds = count_fds(agentd_pid);
	CHECK(fds > 0);

	lfd = tcp_port(1, &port);
	snprintf(path, sizeof path, "/wait-port?host=127.0.0.1&port=%d"
	    "&timeout_ms=3000", port);
	request("GET", path, NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 200 && jbool(&r, "ready") == 1);
	CHECK(r.ms < 1000);
	result_clear(&r);
	close(lfd);

	/* Refused for 1 s: 504 at the deadline, and little CPU meanwhile. */
	tcp_port(0, &port);
	snprintf(path, sizeof path, "/wait-port?host=127.0.0.1&port=%d"
	    "&timeout_ms=1000", port);
	ticks = cpu_ticks(agentd_pid);
	request("GET", path, NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 504 && jbool(&r, "ready") == 0);
	CHECK(r.ms >= 950 && r.ms < 3000);
	if (ticks >= 0)
		CHECK(cpu_ticks(agentd_pid) - ticks < sysconf(_SC_CLK_TCK) / 2);
	result_clear(&r);

	/* The daemon gives up first: agentd drops the probe. */
	snprintf(path, sizeof path, "/wait-port?host=127.0.0.1&port=%d"
	    "&timeout_ms=60000", port);
	request("GET", path, NULL, 300, &r);
	CHECK(wait_all(&r, 1, 3000) == 0);
	CHECK(r.status == 0);
	result_clear(&r);

	request("GET", "/wait-port?host=localhost&port=1", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 400);
	result_clear(&r);
	request("GET", "/wait-port?host=127.0.0.1&port=1&timeout_ms=600001",
	    NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 400);
	result_clear(&r);
	request("POST", "/wait-port?host=127.0.0.1&port=1", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 405);
	result_clear(&r);

	/* Every probe socket is closed again (spares may come and go). */
	run_settle(300);
	CHECK(count_fds(agentd_pid) <= fds + 1);
}

/*
 * Anything in a sandbox can connect to the rendezvous socket: a flood of
 * idle connections is cut at a few, and agentd still answers.
 */
static void
test_connection_flood(void)
{
	struct sockaddr_un	 sun;
	struct result		 r;
	int			 fds[40], i, closed = 0;
	char			 c;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%.100s", sock);
	for (i = 0; i < (int)nitems(fds); i++) {
		fds[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fds[i], (struct sockaddr *)&sun, sizeof sun) == -1)
			fds[i] = -1;
	}
	/* Let the hub accept them all. */
	memset(&r, 0, sizeof r);
	wait_all(&r, 1, 300);
	for (i = 0; i < (int)nitems(fds); i++) {
		if (fds[i] == -1 || recv(fds[i], &c, 1, MSG_DONTWAIT) == 0)
			closed++;
	}
	/* Connections without a hello: a few wait for one, no more. */
	CHECK(closed >= (int)nitems(fds) - 8);
	for (i = 0; i < (int)nitems(fds); i++) {
		if (fds[i] != -1)
			close(fds[i]);
	}
	wait_all(&r, 1, 200);
	request("GET", "/health", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0 && r.status == 200);
	result_clear(&r);
}

/*
 * Anything in the sandbox may connect and pose as agentd: it is refused
 * unless its hello carries the sandbox's token, and is sent nothing.
 */
static void
test_impostor(void)
{
	struct result	 r;
	char		 hello[256], dir[300], path[320];
	char		 env[AGENT_TOKEN_ENV_SIZE], other[AGENT_TOKEN_ENV_SIZE];
	int		 fd, fd2;

	/* Each sandbox has its own token; the env entry is as agentd wants. */
	agent_token_env(hub, "sbx1", env, sizeof env);
	agent_token_env(hub, "sbx3", other, sizeof other);
	CHECK(strncmp(env, AGENTD_TOKEN_ENV "=", strlen(AGENTD_TOKEN_ENV) +
	    1) == 0);
	CHECK(strlen(env) == strlen(AGENTD_TOKEN_ENV) + 1 + AGENTD_TOKEN_LEN);
	CHECK(strcmp(env, other) != 0);

	/* A sandbox with no agentd: requests wait, nothing reaches fakes. */
	snprintf(dir, sizeof dir, "%s/fake", tmp);
	mkdir(dir, 0755);
	CHECK(agent_listen(hub, "sbx3", dir) == 0);
	snprintf(path, sizeof path, "%s/%s", dir, AGENTD_SOCKET_NAME);
	memset(&r, 0, sizeof r);
	r.started = time_mono_ms();
	agent_request(hub, "sbx3", "POST", "/exec", "{\"cmd\":[\"true\"]}",
	    strlen("{\"cmd\":[\"true\"]}"), 1500, result_cb, &r);

	/* Silent: no request comes, closed after the hello's deadline. */
	fd = connect_sock(path);
	CHECK(fd != -1);
	/* Another sandbox's token (say, read from its logs) is wrong here. */
	snprintf(hello, sizeof hello, "%s%s\n", AGENTD_HELLO_PREFIX,
	    env + strlen(AGENTD_TOKEN_ENV) + 1);
	fd2 = connect_sock(path);
	CHECK(fd2 != -1 && write(fd2, hello, strlen(hello)) ==
	    (ssize_t)strlen(hello));
	CHECK(peer_closed(fd2, 2000) == 1);
	close(fd2);
	/* A hello without a token: closed at once. */
	fd2 = connect_sock(path);
	CHECK(fd2 != -1 && write(fd2, AGENTD_HELLO_PREFIX "\n",
	    sizeof AGENTD_HELLO_PREFIX) == (ssize_t)sizeof AGENTD_HELLO_PREFIX);
	CHECK(peer_closed(fd2, 2000) == 1);
	close(fd2);
	/* An HTTP answer instead of a hello: closed, nothing relayed. */
	fd2 = connect_sock(path);
	CHECK(fd2 != -1 && write(fd2, "HTTP/1.1 200 OK\r\nContent-Length: 2"
	    "\r\n\r\n{}", 40) == 40);
	CHECK(peer_closed(fd2, 2000) == 1);
	close(fd2);
	CHECK(wait_all(&r, 1, 3000) == 0);
	CHECK(r.status == 0 && r.err != NULL &&
	    strstr(r.err, "did not connect") != NULL);
	result_clear(&r);
	CHECK(peer_closed(fd, 6000) == 1);
	close(fd);
	CHECK(agent_connected(hub, "sbx3") == 0);

	/* The right token makes a connection agentd's: it gets requests. */
	agent_token_env(hub, "sbx3", other, sizeof other);
	snprintf(hello, sizeof hello, "%s%s\n", AGENTD_HELLO_PREFIX,
	    other + strlen(AGENTD_TOKEN_ENV) + 1);
	fd = connect_sock(path);
	CHECK(fd != -1 && write(fd, hello, strlen(hello)) ==
	    (ssize_t)strlen(hello));
	request("GET", "/health", NULL, 5000, &r);	/* sbx1: unaffected */
	CHECK(wait_all(&r, 1, 5000) == 0 && r.status == 200);
	result_clear(&r);
	CHECK(agent_connected(hub, "sbx3") == 1);
	CHECK(peer_closed(fd, 200) == 0);
	close(fd);
	agent_forget(hub, "sbx3");
	ready_count--;		/* sbx3's; test_reconnect counts sbx1's */
}

/*
 * Requests at once are capped per sandbox and in all; one over is
 * failed at once (not queued) and says why; the rest are unaffected.
 */
static void
test_caps(void)
{
	struct agent_limits	 l;
	struct result		 r[4], over;
	int			 i;

	l.per_sandbox = 3;
	l.total = 0;
	agent_hub_set_limits(hub, &l);
	for (i = 0; i < 3; i++)
		request("POST", "/exec", "{\"cmd\":[\"sleep\",\"0.5\"]}", 5000,
		    &r[i]);
	CHECK(agent_requests(hub, "sbx1") == 3);
	CHECK(agent_requests(hub, NULL) == 3);
	request("GET", "/health", NULL, 5000, &over);
	CHECK(wait_all(&over, 1, 300) == 0);
	CHECK(over.status == 0 && over.err != NULL &&
	    strstr(over.err, "too many requests") != NULL && over.ms < 100);
	result_clear(&over);
	CHECK(wait_all(r, 3, 5000) == 0);
	for (i = 0; i < 3; i++) {
		CHECK(r[i].status == 200);
		result_clear(&r[i]);
	}
	CHECK(agent_requests(hub, "sbx1") == 0);
	request("GET", "/health", NULL, 5000, &over);
	CHECK(wait_all(&over, 1, 5000) == 0 && over.status == 200);
	result_clear(&over);

	/* In all: the hub's cap. */
	l.per_sandbox = 0;
	l.total = 2;
	agent_hub_set_limits(hub, &l);
	for (i = 0; i < 2; i++)
		request("POST", "/exec", "{\"cmd\":[\"sleep\",\"0.3\"]}", 5000,
		    &r[i]);
	request("GET", "/health", NULL, 5000, &over);
	CHECK(wait_all(&over, 1, 300) == 0);
	CHECK(over.status == 0 && over.err != NULL &&
	    strstr(over.err, "in all") != NULL);
	result_clear(&over);
	CHECK(wait_all(r, 2, 5000) == 0);
	for (i = 0; i < 2; i++)
		result_clear(&r[i]);
	l.total = 0;
	agent_hub_set_limits(hub, &l);
	CHECK(agent_requests(hub, NULL) == 0);
}

struct pause_state {
	struct agent_req	*req;
	int			 lines;
	int			 pause_at;
	int			 ended;
	int			 status;
};

static void
pause_line_cb(const char *line, size_t len, void *arg)
{
	struct pause_state	*ps = arg;

	ps->lines++;
	if (ps->lines == ps->pause_at)
		agent_pause(ps->req, 1);
}

static void
pause_end_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct pause_state	*ps = arg;

	ps->ended = 1;
	ps->status = status;
}

/*
 * A paused stream is not read: no line is handed on, and the command
 * behind it blocks on its pipe instead of piling output up here; after a
 * resume everything comes, in order.
 */
static void
test_pause(void)
{
	struct pause_state	ps;
	const char		*body = "{\"cmd\":[\"sh\",\"-c\",\"i=0; while "
	    "[ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done\"],"
	    "\"max_output\":16777216}";
	int			held;

	memset(&ps, 0, sizeof ps);
	ps.pause_at = 5;
	ps.req = agent_stream(hub, "sbx1", "POST", "/exec", body, strlen(body),
	    10000, pause_line_cb, pause_end_cb, &ps);
	CHECK(wait_flag(&ps.lines, 5, 5000) == 0);
	run_settle(300);
	held = ps.lines;
	CHECK(held == 5 && !ps.ended);
	agent_pause(ps.req, 0);
	CHECK(wait_flag(&ps.ended, 1, 10000) == 0);
	/* 3000 output lines and the exit line. */
	CHECK(ps.lines == 3001 && ps.status == 200);

	/* agentd closes while we are paused: the end still comes after. */
	body = "{\"cmd\":[\"sh\",\"-c\",\"echo a; echo b; echo c\"]}";
	memset(&ps, 0, sizeof ps);
	ps.pause_at = 1;
	ps.req = agent_stream(hub, "sbx1", "POST", "/exec", body, strlen(body),
	    10000, pause_line_cb, pause_end_cb, &ps);
	CHECK(wait_flag(&ps.lines, 1, 5000) == 0);
	run_settle(500);
	CHECK(ps.lines == 1 && !ps.ended);
	agent_pause(ps.req, 0);
	CHECK(wait_flag(&ps.ended, 1, 5000) == 0);
	CHECK(ps.lines == 4 && ps.status == 200);
}

static void
test_exec(void)
{
	struct result	r;
	char		body[1024], want[600];

	exec_req("{\"cmd\":[\"echo\",\"hello\"]}", &r, 5000);
	CHECK(r.status == 200);
	CHECK(jint(&r, "exit_code") == 0);
	CHECK_STR(jstr(&r, "stdout"), "hello\n");
	CHECK_STR(jstr(&r, "stderr"), "");
	CHECK(jbool(&r, "timed_out") == 0);
	CHECK(jbool(&r, "truncated") == 0);
	result_clear(&r);

	exec_req("{\"cmd\":[\"sh\",\"-c\",\"echo out; echo oops >&2; exit 3\"]}",
	    &r, 5000);
	CHECK(r.status == 200);
	CHECK(jint(&r, "exit_code") == 3);
	CHECK_STR(jstr(&r, "stdout"), "out\n");
	CHECK_STR(jstr(&r, "stderr"), "oops\n");
	result_clear(&r);

	/* Killed by a signal: 128 + signal. */
	exec_req("{\"cmd\":[\"sh\",\"-c\",\"kill -TERM $$\"]}", &r, 5000);
	CHECK(jint(&r, "exit_code") == 128 + SIGTERM);
	result_clear(&r);

	/* env merged over agentd's, cwd absolute and relative. */
	snprintf(body, sizeof body, "%s/sub", tmp);
	mkdir(body, 0755);
	snprintf(body, sizeof body, "{\"cmd\":[\"sh\",\"-c\",\"echo $FOO; "
	    "pwd; echo $PATH\"],\"cwd\":\"%s/sub\",\"env\":{\"FOO\":\"bar\"}}",
	    tmp);
	exec_req(body, &r, 5000);
	snprintf(want, sizeof want, "bar\n%s/sub\n%s\n", tmp, getenv("PATH"));
	CHECK_STR(jstr(&r, "stdout"), want);
	result_clear(&r);
	exec_req("{\"cmd\":[\"pwd\"],\"cwd\":\"sub\"}", &r, 5000);
	snprintf(want, sizeof want, "%s/sub\n", tmp);
	CHECK_STR(jstr(&r, "stdout"), want);
	result_clear(&r);
	exec_req("{\"cmd\":[\"pwd\"]}", &r, 5000);
	snprintf(want, sizeof want, "%s\n", tmp);
	CHECK_STR(jstr(&r, "stdout"), want);
	result_clear(&r);

	exec_req("{\"cmd\":[\"/nonexistent/command\",\"x\"]}", &r, 5000);
	CHECK(r.status == 200);
	CHECK(jint(&r, "exit_code") == 127);
	CHECK(jstr(&r, "stderr") != NULL &&
	    strstr(jstr(&r, "stderr"), "No such file") != NULL);
	result_clear(&r);
	exec_req("{\"cmd\":[\"no-such-command-sbx\"]}", &r, 5000);
	CHECK(jint(&r, "exit_code") == 127);
	result_clear(&r);

	/*
	 * Bytes that are not UTF-8 (bad lead, overlong, surrogate, a
	 * sequence cut short) become U+FFFD; NUL survives as \u0000.
	 */
	exec_req("{\"cmd\":[\"printf\",\"\\\\377ok\\\\300\\\\257"
	    "\\\\355\\\\240\\\\200\\\\000\\\\342\\\\202\"]}", &r, 5000);
	CHECK(r.json != NULL);
	{
		static const char want8[] = "\xef\xbf\xbd" "ok"
		    "\xef\xbf\xbd\xef\xbf\xbd"
		    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "\0"
		    "\xef\xbf\xbd\xef\xbf\xbd";
		struct json_object *v;

		CHECK(r.json != NULL &&
		    json_object_object_get_ex(r.json, "stdout", &v) &&
		    json_object_get_string_len(v) == sizeof want8 - 1 &&
		    memcmp(json_object_get_string(v), want8,
		    sizeof want8 - 1) == 0);
	}
	result_clear(&r);
}

/*
 * agentd takes its token out of the environment before anything runs:
 * no child sees it.
 */
static void
test_token_hidden(void)
{
	struct result	r;

	exec_req("{\"cmd\":[\"env\"]}", &r, 5000);
	CHECK(r.status == 200 && jstr(&r, "stdout") != NULL);
	CHECK(jstr(&r, "stdout") != NULL &&
	    strstr(jstr(&r, "stdout"), "HOME=") != NULL &&
	    strstr(jstr(&r, "stdout"), AGENTD_TOKEN_ENV) == NULL);
	result_clear(&r);
}

static void
test_exec_timeout(void)
{
	struct result	r;

	exec_req("{\"cmd\":[\"sh\",\"-c\",\"sleep 10; echo never\"],"
	    "\"timeout_s\":1}", &r, 5000);
	CHECK(r.status == 200);
	CHECK(jbool(&r, "timed_out") == 1);
	CHECK(jint(&r, "exit_code") == 128 + SIGKILL);
	CHECK_STR(jstr(&r, "stdout"), "");
	CHECK(r.ms >= 900 && r.ms < 2500);
	result_clear(&r);
}

static void
test_exec_truncate(void)
{
	struct result	r;
	const char	*out;

	exec_req("{\"cmd\":[\"sh\",\"-c\",\"head -c 5000000 /dev/zero | "
	    "tr '\\\\000' a; echo done >&2\"],\"max_output\":1000000}", &r, 10000);
	CHECK(r.status == 200);
	CHECK(jint(&r, "exit_code") == 0);
	CHECK(jbool(&r, "truncated") == 1);
	out = jstr(&r, "stdout");
	CHECK(out != NULL && strlen(out) == 1000000 && out[999999] == 'a');
	CHECK_STR(jstr(&r, "stderr"), "done\n");
	result_clear(&r);

	/* Default cap: 1 MiB. */
	exec_req("{\"cmd\":[\"sh\",\"-c\",\"head -c 5000000 /dev/zero | "
	    "tr '\\\\000' a\"]}", &r, 10000);
	out = jstr(&r, "stdout");
	CHECK(out != NULL && strlen(out) == 1024 * 1024);
	CHECK(jbool(&r, "truncated") == 1);
	result_clear(&r);
}

static void
test_concurrent(void)
{
	struct result	r[3], h, slow;
	int64_t		t0;
	int		i;

	t0 = time_mono_ms();
	for (i = 0; i < 3; i++)
		request("POST", "/exec", "{\"cmd\":[\"sleep\",\"0.5\"]}", 5000,
		    &r[i]);
	CHECK(wait_all(r, 3, 5000) == 0);
	for (i = 0; i < 3; i++) {
		CHECK(r[i].status == 200);
		CHECK(jint(&r[i], "exit_code") == 0);
		result_clear(&r[i]);
	}
	t0 = time_mono_ms() - t0;
	CHECK(t0 >= 450 && t0 < 1200);

	/* A long exec does not hold up /health. */
	request("POST", "/exec", "{\"cmd\":[\"sleep\",\"2\"]}", 5000, &slow);
	request("GET", "/health", NULL, 5000, &h);
	CHECK(wait_all(&h, 1, 5000) == 0);
	CHECK(h.status == 200 && h.ms < 500);
	CHECK(slow.done == 0);
	CHECK(wait_all(&slow, 1, 5000) == 0);
	CHECK(slow.status == 200 && slow.ms >= 1900);
	result_clear(&h);
	result_clear(&slow);
}

static void
test_bad_requests(void)
{
	static const char *bad[] = {
		"{bad",
		"",
		"[1]",
		"{\"cmd\":[\"echo\"]} trailing",
		"{}",
		"{\"cmd\":[]}",
		"{\"cmd\":\"echo hi\"}",
		"{\"cmd\":[\"echo\",1]}",
		"{\"cmd\":[\"\"]}",
		"{\"cmd\":[\"echo\"],\"timeout_s\":0}",
		"{\"cmd\":[\"echo\"],\"timeout_s\":3601}",
		"{\"cmd\":[\"echo\"],\"timeout_s\":\"5\"}",
		"{\"cmd\":[\"echo\"],\"max_output\":-1}",
		"{\"cmd\":[\"echo\"],\"max_output\":16777217}",
		"{\"cmd\":[\"echo\"],\"env\":[]}",
		"{\"cmd\":[\"echo\"],\"env\":{\"A\":1}}",
		"{\"cmd\":[\"echo\"],\"env\":{\"A=B\":\"x\"}}",
		"{\"cmd\":[\"echo\"],\"cwd\":\"/nonexistent\"}",
		"{\"cmd\":[\"echo\"],\"cwd\":5}",
		"{\"cmd\":[\"e\\u0000cho\"]}",
		"{\"cmd\":[\"echo\"],\"bogus\":1}",
	};
	struct result	r;
	size_t		i;

	for (i = 0; i < nitems(bad); i++) {
		exec_req(bad[i], &r, 5000);
		if (r.status != 400)
			fprintf(stderr, "body %s: status %d\n", bad[i], r.status);
		CHECK(r.status == 400);
		CHECK_STR(jerror_code(&r), "bad_request");
		result_clear(&r);
	}

	request("GET", "/nope", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 404);
	CHECK_STR(jerror_code(&r), "not_found");
	result_clear(&r);

	request("GET", "/exec", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 405);
	result_clear(&r);

	/* Bad method/path never reach agentd; still one callback. */
	request("GET", "/x y", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 0 && r.err != NULL && r.done == 1);
	result_clear(&r);

	/* agentd is still fine. */
	request("GET", "/health", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 200);
	result_clear(&r);
}

static void
test_not_connected(void)
{
	struct result	r, f;
	char		dir[300];

	snprintf(dir, sizeof dir, "%s/other", tmp);
	mkdir(dir, 0755);
	CHECK(agent_listen(hub, "sbx2", dir) == 0);
	CHECK(agent_connected(hub, "sbx2") == 0);
	memset(&r, 0, sizeof r);
	r.started = time_mono_ms();
	agent_request(hub, "sbx2", "GET", "/health", NULL, 0, 300, result_cb,
	    &r);
	CHECK(r.done == 0);	/* never called from inside agent_request */
	CHECK(wait_all(&r, 1, 3000) == 0);
	CHECK(r.status == 0 && r.done == 1);
	CHECK(r.err != NULL && strstr(r.err, "did not connect within 300 ms"));
	CHECK(r.ms >= 280 && r.ms < 1000);
	result_clear(&r);

	/* agent_forget fails what waits, before it returns. */
	memset(&f, 0, sizeof f);
	agent_request(hub, "sbx2", "GET", "/health", NULL, 0, 5000, result_cb,
	    &f);
	agent_forget(hub, "sbx2");
	CHECK(f.done == 1 && f.status == 0 && f.err != NULL);
	result_clear(&f);
	snprintf(dir, sizeof dir, "%s/other/agentd.sock", tmp);
	CHECK(access(dir, F_OK) == -1);

	/* Unknown sandbox. */
	memset(&r, 0, sizeof r);
	agent_request(hub, "nope", "GET", "/health", NULL, 0, 5000, result_cb,
	    &r);
	CHECK(r.done == 0);
	CHECK(wait_all(&r, 1, 3000) == 0);
	CHECK(r.status == 0 && r.err != NULL);
	result_clear(&r);
}

static void
test_dev_restarts(void)
{
	/*
	 * The dev server lives 0.3 s; restarts come 1, 2, 4, 8, 16 s after
	 * each death: starts at about 0, 1.3, 3.6, 7.9, 16.2, 32.5 s. Looked
	 * at from 5 s on (later when the tests before took longer, as under
	 * valgrind), never near a start: the runs are the starts passed.
	 */
	static const int64_t starts[] = { 0, 1300, 3600, 7900, 16200, 32500 };
	struct result	 r;
	char		 path[300], line[64];
	FILE		*f;
	size_t		 i;
	int		 lines = 0, want = 0;
	int64_t		 wait, elapsed;

	wait = agentd_started + 5000 - time_mono_ms();
	for (i = 0; i < nitems(starts); i++) {
		elapsed = time_mono_ms() - agentd_started;
		if (elapsed > starts[i] - 300 && elapsed < starts[i] + 500 &&
		    starts[i] + 500 - elapsed > wait)
			wait = starts[i] + 500 - elapsed;
	}
	if (wait > 0) {
		struct result dummy;

		memset(&dummy, 0, sizeof dummy);
		wait_all(&dummy, 1, (int)wait);
	}
	elapsed = time_mono_ms() - agentd_started;
	for (i = 0; i < nitems(starts); i++)
		want += elapsed >= starts[i];
	snprintf(path, sizeof path, "%s/dev.log", tmp);
	if ((f = fopen(path, "r")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL)
			lines += strcmp(line, "up\n") == 0;
		fclose(f);
	}
	if (lines != want)
		fprintf(stderr, "dev.log has %d runs, want %d at %lld ms\n",
		    lines, want, (long long)elapsed);
	CHECK(want >= 3 && lines == want);
	request("GET", "/health", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(jint(&r, "dev_restarts") == want - 1);
	result_clear(&r);
}

/* agent_upgrade's outcome: result_cb's result first, so both share arg. */
struct upgrade {
	struct result		 r;
	struct bufferevent	*bev;
};

/* agent_upgrade's callback: keep the connection. */
static void
upgraded_cb(struct bufferevent *bev, void *arg)
{
	((struct upgrade *)arg)->bev = bev;
}

/* GET /terminal through agent_upgrade: 101, then PTY frames both ways. */
static void
test_upgrade(void)
{
	struct upgrade		 u;
	struct bufferevent	*bev;
	struct evbuffer		*in;
	struct agent_req	*req;
	unsigned char		 frame[5 + 64];
	const char		*typed = "echo hi-$((6*7))\n";
	size_t			 n = strlen(typed);
	int64_t			 deadline;
	int			 seen = 0, exited = 0;
	unsigned char		*p;

	memset(&u, 0, sizeof u);
	req = agent_upgrade(hub, "sbx1", "/terminal?cols=80&rows=24", 5000,
	    upgraded_cb, result_cb, &u);
	CHECK(req != NULL);
	deadline = time_mono_ms() + 5000;
	while (u.bev == NULL && !u.r.done && time_mono_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	CHECK(u.bev != NULL && u.r.done == 0);
	if ((bev = u.bev) == NULL) {
		result_clear(&u.r);
		return;
	}
	frame[0] = 0;
	frame[1] = frame[2] = frame[3] = 0;
	frame[4] = (unsigned char)n;
	memcpy(frame + 5, typed, n);
	bufferevent_write(bev, frame, 5 + n);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	in = bufferevent_get_input(bev);
	deadline = time_mono_ms() + 5000;
	while (!seen && time_mono_ms() < deadline) {
		event_base_loop(base, EVLOOP_ONCE);
		p = evbuffer_pullup(in, -1);
		seen = p != NULL && memmem(p, evbuffer_get_length(in),
		    "hi-42", 5) != NULL;
	}
	CHECK(seen);
	/* exit: the shell ends, agentd sends an exit frame (type 2). */
	typed = "exit 3\n";
	n = strlen(typed);
	frame[4] = (unsigned char)n;
	memcpy(frame + 5, typed, n);
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_write(bev, frame, 5 + n);
	deadline = time_mono_ms() + 5000;
	while (!exited && time_mono_ms() < deadline) {
		event_base_loop(base, EVLOOP_ONCE);
		/* Walk the frames: data until the exit frame. */
		while (evbuffer_get_length(in) >= 5) {
			unsigned char	h[5];
			size_t		len;

			evbuffer_copyout(in, h, 5);
			len = (size_t)h[1] << 24 | (size_t)h[2] << 16 |
			    (size_t)h[3] << 8 | h[4];
			if (evbuffer_get_length(in) < 5 + len)
				break;
			if (h[0] == 2 && len == 4) {
				unsigned char	st[4];

				evbuffer_drain(in, 5);
				evbuffer_remove(in, st, 4);
				exited = 1;
				CHECK(st[3] == 3 && st[0] == 0);
				break;
			}
			evbuffer_drain(in, 5 + len);
		}
	}
	CHECK(exited);
	bufferevent_free(bev);

	/* Not a 101 (a POST is refused): the failure callback. */
	memset(&u, 0, sizeof u);
	req = agent_upgrade(hub, "sbx1", "/health", 5000, upgraded_cb,
	    result_cb, &u);
	CHECK(wait_all(&u.r, 1, 5000) == 0);
	CHECK(u.bev == NULL && u.r.status == 200);
	result_clear(&u.r);

	/* Cancelled before the answer: nothing is called. */
	memset(&u, 0, sizeof u);
	req = agent_upgrade(hub, "sbx1", "/terminal", 5000, upgraded_cb,
	    result_cb, &u);
	agent_cancel(req);
	run_settle(300);
	CHECK(u.bev == NULL && u.r.done == 0);
}

static void
test_reconnect(void)
{
	struct result	r;
	char		dev[600];
	int		status;

	kill(agentd_pid, SIGKILL);
	CHECK(wait_exit(agentd_pid, 3000, &status) == 0);
	/* The hub sees the spare connection close. */
	{
		int64_t deadline = time_mono_ms() + 2000;

		while (agent_connected(hub, "sbx1") &&
		    time_mono_ms() < deadline)
			event_base_loop(base, EVLOOP_ONCE);
	}
	CHECK(agent_connected(hub, "sbx1") == 0);

	snprintf(dev, sizeof dev, "echo up >> %s/dev2.log; exec sleep 30", tmp);
	agentd_pid = spawn_agentd(dev);
	CHECK(wait_flag(&ready_count, 2, 5000) == 0);
	CHECK(agent_connected(hub, "sbx1") == 1);
	request("GET", "/health", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	CHECK(r.status == 200 && jint(&r, "dev_pid") > 0);
	result_clear(&r);
}

static void
test_sigterm(void)
{
	struct result	r, ex;
	pid_t		dev_pid;
	int64_t		t0;
	int		status = -1;

	request("GET", "/health", NULL, 5000, &r);
	CHECK(wait_all(&r, 1, 5000) == 0);
	dev_pid = (pid_t)jint(&r, "dev_pid");
	CHECK(dev_pid > 0 && kill(dev_pid, 0) == 0);
	result_clear(&r);

	/* An exec in flight is killed and still answered. */
	request("POST", "/exec", "{\"cmd\":[\"sleep\",\"30\"]}", 10000, &ex);
	{
		struct result dummy;

		memset(&dummy, 0, sizeof dummy);
		wait_all(&dummy, 1, 200);
	}
	t0 = time_mono_ms();
	kill(agentd_pid, SIGTERM);
	CHECK(wait_exit(agentd_pid, 5000, &status) == 0);
	t0 = time_mono_ms() - t0;
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(t0 < 1500);
	/* agentd reaped it, so it is gone entirely, not a zombie. */
	CHECK(kill(dev_pid, 0) == -1 && errno == ESRCH);
	CHECK(wait_all(&ex, 1, 3000) == 0);
	CHECK(ex.status == 200 && jint(&ex, "exit_code") == 128 + SIGTERM);
	result_clear(&ex);

	/* Nothing listens for a while: requests wait, then time out. */
	request("GET", "/health", NULL, 200, &r);
	CHECK(wait_all(&r, 1, 3000) == 0);
	CHECK(r.status == 0);
	result_clear(&r);
}

int
main(void)
{
	const char	*top = getenv("top_builddir");
	struct timeval	 tv = { 0, 20000 };
	struct result	 leak;

	snprintf(agentd_path, sizeof agentd_path, "%s/agentd/agentd",
	    top != NULL ? top : "..");
	if (access(agentd_path, X_OK) == -1) {
		fprintf(stderr, "%s not built: skipped\n", agentd_path);
		return 77;
	}
	snprintf(tmp, sizeof tmp, "/tmp/test_agent.XXXXXX");
	if (mkdtemp(tmp) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock, sizeof sock, "%s/%s", tmp, AGENTD_SOCKET_NAME);
	atexit(kill_children);
	signal(SIGPIPE, SIG_IGN);
	log_init(LOG_LEVEL_WARN);

	base = event_base_new();
	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(tick, &tv);
	hub = agent_hub_new(base, ready_cb, NULL);

	RUN(test_ready);
	RUN(test_health);
	RUN(test_wait_port);
	RUN(test_connection_flood);
	RUN(test_exec);
	RUN(test_exec_timeout);
	RUN(test_exec_truncate);
	RUN(test_concurrent);
	RUN(test_bad_requests);
	RUN(test_not_connected);
	RUN(test_dev_restarts);
	/* After it: it counts the dev server's runs since agentd started. */
	RUN(test_token_hidden);
	RUN(test_impostor);
	RUN(test_caps);
	RUN(test_pause);
	RUN(test_upgrade);
	RUN(test_reconnect);
	RUN(test_sigterm);

	/* A request left queued: agent_hub_free frees it, no callback. */
	memset(&leak, 0, sizeof leak);
	agent_request(hub, "sbx1", "GET", "/health", NULL, 0, 60000, result_cb,
	    &leak);
	agent_hub_free(hub);
	CHECK(leak.done == 0);
	CHECK(access(sock, F_OK) == -1);

	kill_children();
	event_free(tick);
	event_base_free(base);
	{
		char cmd[300];

		snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmp);
	}
	return unit_finish();
}
