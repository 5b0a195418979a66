/*
 * The real agentd binary on the host, with this test as the daemon's side
 * of the rendezvous on raw sockets: tasks (streamed events, replay after a
 * seq, a reader leaving, cancel, timeout, truncation, bad requests), the
 * Claude Code and OpenCode stand-ins (tests/fixtures/agents) giving agent
 * events with the prompt and env delivered, git checkpoint and revert,
 * the dev server's state, logs, follow and restart, a terminal on a PTY,
 * and streaming exec. Raw sockets, because streaming answers are
 * close-delimited and the terminal is an upgraded connection: this reads
 * them exactly as the daemon's hub must.
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

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "agentd/agentd.h"
#include "tests/unit/unit.h"

#define SECRET		"sk-test-secret-4711"
/* The rendezvous token agentd gets in its env, as from the daemon. */
#define TEST_TOKEN	"0123456789abcdef0123456789abcdef" \
			"0123456789abcdef0123456789abcdef"

struct agent {
	char	 sock[300];
	int	 lfd;		/* our listening socket */
	pid_t	 pid;
	char	 log[300];	/* agentd's stderr */
};

struct buf {
	char	*p;
	size_t	 len;
	int	 eof;
};

static char		 tmp[256];
static char		 ws[300];
static char		 statedir[300];
static char		 agentd_path[1024];
static char		 fixtures[1024];
static int		 dev_port;
static struct agent	 main_agent, crash_agent;

static int	 agent_start(struct agent *, const char *, const char *,
		    const char *);
static void	 agent_stop(struct agent *);
static int	 rq_open(struct agent *, const char *, const char *,
		    const char *, const char *);
static int	 rd_more(int, struct buf *, int);
static int	 rd_until(int, struct buf *, const char *, int);
static int	 rd_all(int, struct buf *, int);
static int	 rq(struct agent *, const char *, const char *, const char *,
		    const char *, struct buf *, struct json_object **);
static const char *body_of(struct buf *);
static void	 buf_free(struct buf *);
static const char *jget_str(struct json_object *, const char *);
static int64_t	 jget_int(struct json_object *, const char *);
static struct json_object *jpath(struct json_object *, const char *);
static int	 count_lines(const char *, const char *);
static struct json_object *last_event(const char *);
static int	 wait_task(const char *, const char *, int);
static int	 free_port(void);
static int	 run(const char *);
static int	 log_has(struct agent *, const char *);
static long	 term_pid(struct buf *);

/* Start agentd; stand-ins first on PATH, stderr to a log file. */
static int
agent_start(struct agent *a, const char *name, const char *dev,
    const char *extra)
{
	struct sockaddr_un	sun;
	char			path[2048], port[16];
	int			fd;

	snprintf(a->sock, sizeof a->sock, "%s/%s.sock", tmp, name);
	snprintf(a->log, sizeof a->log, "%s/%s.log", tmp, name);
	unlink(a->sock);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(a->sock) >= sizeof sun.sun_path)
		return -1;
	memcpy(sun.sun_path, a->sock, strlen(a->sock));
	a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (a->lfd == -1 || bind(a->lfd, (struct sockaddr *)&sun,
	    sizeof sun) == -1 || listen(a->lfd, 64) == -1) {
		perror("listen");
		return -1;
	}
	snprintf(port, sizeof port, "%d", dev_port);
	if ((a->pid = fork()) == -1)
		return -1;
	if (a->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if ((fd = open(a->log, O_WRONLY | O_CREAT | O_TRUNC, 0600)) != -1)
			dup2(fd, STDERR_FILENO);
		snprintf(path, sizeof path, "%s:%s", fixtures,
		    getenv("PATH") != NULL ? getenv("PATH") : "/usr/bin:/bin");
		setenv("PATH", path, 1);
		/* The host user's login profile is not the test's business. */
		setenv("HOME", tmp, 1);
		setenv(AGENTD_TOKEN_ENV, TEST_TOKEN, 1);
		if (extra != NULL)
			execl(agentd_path, "agentd", "--socket", a->sock,
			    "--workdir", ws, "--state-dir", statedir, "--dev-command",
			    dev, "--dev-port", port, "--task-log-max", extra,
			    (char *)NULL);
		else
			execl(agentd_path, "agentd", "--socket", a->sock,
			    "--workdir", ws, "--state-dir", statedir, "--dev-command",
			    dev, (char *)NULL);
		_exit(127);
	}
	return 0;
}

/* SIGTERM: agentd must exit 0, with no sanitizer report in its log. */
static void
agent_stop(struct agent *a)
{
	int	status = -1;

	if (a->pid > 0) {
		kill(a->pid, SIGTERM);
		waitpid(a->pid, &status, 0);
		a->pid = 0;
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		CHECK(log_has(a, "Sanitizer") == 0);
		CHECK(log_has(a, "runtime error") == 0);
		if (status != 0 || log_has(a, "Sanitizer") != 0) {
			char cmd[400];

			snprintf(cmd, sizeof cmd, "tail -40 %s >&2", a->log);
			if (system(cmd) != 0)
				fprintf(stderr, "no log %s\n", a->log);
		}
	}
	if (a->lfd != -1)
		close(a->lfd);
	a->lfd = -1;
}

/* Take agentd's spare connection and write one request on it; its fd. */
static int
rq_open(struct agent *a, const char *method, const char *path,
    const char *headers, const char *body)
{
	struct pollfd	 pfd = { a->lfd, POLLIN, 0 };
	char		*req, hello[AGENTD_HELLO_LEN + 1];
	size_t		 got;
	ssize_t		 r = 0;
	int		 fd, n;

	if (poll(&pfd, 1, 5000) != 1)
		return -1;
	if ((fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC)) == -1)
		return -1;
	/* Every connection starts with agentd's hello and its token. */
	memset(hello, 0, sizeof hello);
	for (got = 0; got < AGENTD_HELLO_LEN; got += (size_t)r) {
		pfd.fd = fd;
		if (poll(&pfd, 1, 5000) != 1 || (r = read(fd, hello + got,
		    AGENTD_HELLO_LEN - got)) <= 0)
			break;
	}
	CHECK(got == AGENTD_HELLO_LEN &&
	    strcmp(hello, AGENTD_HELLO_PREFIX TEST_TOKEN "\n") == 0);
	n = xasprintf(&req, "%s %s HTTP/1.1\r\nHost: agentd\r\n%s"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    method, path, headers != NULL ? headers : "",
	    body != NULL ? strlen(body) : 0, body != NULL ? body : "");
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		fd = -1;
	}
	free(req);
	return fd;
}

/* Read what comes within ms; 1 at EOF, 0 on data, -1 on timeout. */
static int
rd_more(int fd, struct buf *b, int ms)
{
	struct pollfd	pfd = { fd, POLLIN, 0 };
	char		tmpb[65536];
	ssize_t		n;

	if (b->eof)
		return 1;
	if (poll(&pfd, 1, ms) != 1)
		return -1;
	n = read(fd, tmpb, sizeof tmpb);
	if (n <= 0) {
		b->eof = 1;
		return 1;
	}
	b->p = xrealloc(b->p, b->len + (size_t)n + 1);
	memcpy(b->p + b->len, tmpb, (size_t)n);
	b->len += (size_t)n;
	b->p[b->len] = '\0';
	return 0;
}

/* Read until needle is in the buffer; 0, or -1 (EOF or ms passed). */
static int
rd_until(int fd, struct buf *b, const char *needle, int ms)
{
	int64_t	deadline = time_mono_ms() + ms;

	while (b->p == NULL || strstr(b->p, needle) == NULL) {
		if (b->eof || time_mono_ms() >= deadline)
			return -1;
		rd_more(fd, b, (int)(deadline - time_mono_ms()));
	}
	return 0;
}

/* Read to EOF; 0, or -1 if ms passed first. */
static int
rd_all(int fd, struct buf *b, int ms)
{
	int64_t	deadline = time_mono_ms() + ms;

	while (!b->eof) {
		if (time_mono_ms() >= deadline)
			return -1;
		rd_more(fd, b, (int)(deadline - time_mono_ms()));
	}
	return 0;
}

/* One whole request; the status (0: none), *json the body if JSON. */
static int
rq(struct agent *a, const char *method, const char *path,
    const char *headers, const char *body, struct buf *b,
    struct json_object **json)
{
	int	fd, status = 0;

	memset(b, 0, sizeof *b);
	if (json != NULL)
		*json = NULL;
	if ((fd = rq_open(a, method, path, headers, body)) == -1)
		return 0;
	if (rd_all(fd, b, 20000) == 0 && b->p != NULL &&
	    sscanf(b->p, "HTTP/1.1 %d", &status) == 1 && json != NULL)
		*json = json_tokener_parse(body_of(b));
	close(fd);
	return status;
}

static const char *
body_of(struct buf *b)
{
	char	*p;

	if (b->p == NULL || (p = strstr(b->p, "\r\n\r\n")) == NULL)
		return "";
	return p + 4;
}

static void
buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

/* obj.a.b... by a dotted path, or NULL. */
static struct json_object *
jpath(struct json_object *obj, const char *path)
{
	char	*p, *k, *save = NULL;

	p = xstrdup(path);
	for (k = strtok_r(p, ".", &save); k != NULL && obj != NULL;
	    k = strtok_r(NULL, ".", &save)) {
		if (!json_object_object_get_ex(obj, k, &obj))
			obj = NULL;
	}
	free(p);
	return obj;
}

static const char *
jget_str(struct json_object *obj, const char *path)
{
	struct json_object	*v = jpath(obj, path);

	return v != NULL && json_object_is_type(v, json_type_string) ?
	    json_object_get_string(v) : NULL;
}

static int64_t
jget_int(struct json_object *obj, const char *path)
{
	struct json_object	*v = jpath(obj, path);

	return v != NULL && json_object_is_type(v, json_type_int) ?
	    json_object_get_int64(v) : -999;
}

/* How many lines of text contain needle. */
static int
count_lines(const char *text, const char *needle)
{
	const char	*p = text, *nl;
	int		 n = 0;
	char		*line;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		line = xstrndup(p, nl != NULL ? (size_t)(nl - p) : strlen(p));
		if (strstr(line, needle) != NULL)
			n++;
		free(line);
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	return n;
}

/* The last complete line of an ndjson body, parsed. */
static struct json_object *
last_event(const char *text)
{
	const char	*end, *start;
	char		*line;
	struct json_object *obj;

	end = text + strlen(text);
	while (end > text && end[-1] == '\n')
		end--;
	for (start = end; start > text && start[-1] != '\n'; start--)
		;
	line = xstrndup(start, (size_t)(end - start));
	obj = json_tokener_parse(line);
	free(line);
	return obj;
}

/* Poll GET /tasks/<tid> until its state is want; 0 or -1. */
static int
wait_task(const char *tid, const char *want, int ms)
{
	struct buf		 b;
	struct json_object	*j;
	char			 path[128];
	int64_t			 deadline = time_mono_ms() + ms;
	int			 ok;

	snprintf(path, sizeof path, "/tasks/%s", tid);
	for (;;) {
		rq(&main_agent, "GET", path, NULL, NULL, &b, &j);
		ok = jget_str(j, "state") != NULL &&
		    strcmp(jget_str(j, "state"), want) == 0;
		json_object_put(j);
		buf_free(&b);
		if (ok)
			return 0;
		if (time_mono_ms() >= deadline)
			return -1;
		usleep(50000);
	}
}

/* A TCP port nobody listens on now. */
static int
free_port(void)
{
	struct sockaddr_in	sin;
	socklen_t		len = sizeof sin;
	int			fd, port;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&sin, sizeof sin);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/* Run a shell command in the workspace; its exit status. */
static int
run(const char *cmd)
{
	char	*c;
	int	 rc;

	xasprintf(&c, "cd %s && %s", ws, cmd);
	rc = system(c);
	free(c);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* A command task's output arrives before it ends; seq 1, 2, ... */
static void
test_task_stream(void)
{
	struct buf		 b = { 0 };
	struct json_object	*j, *ev;
	int			 fd, st;
	int64_t			 t0;
	char			*p;

	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"c1\","
	    "\"kind\":\"command\",\"cmd\":[\"sh\",\"-c\",\"echo one; sleep 1; "
	    "echo two >&2; echo three\"]}", &b, &j);
	CHECK(st == 201);
	CHECK_STR(jget_str(j, "state"), "running");
	CHECK(jget_int(j, "pid") > 0);
	CHECK(jpath(j, "checkpoint") == NULL);
	json_object_put(j);
	buf_free(&b);

	t0 = time_mono_ms();
	fd = rq_open(&main_agent, "GET", "/tasks/c1/events", NULL, NULL);
	CHECK(fd != -1);
	CHECK(rd_until(fd, &b, "one\\n", 3000) == 0);
	/* Live: "one" is here, the task has not ended. */
	CHECK(time_mono_ms() - t0 < 900);
	CHECK(strstr(b.p, "\"type\":\"exit\"") == NULL);
	CHECK(strstr(b.p, "application/x-ndjson") != NULL);
	CHECK(strstr(b.p, "Content-Length") == NULL);
	CHECK(rd_all(fd, &b, 5000) == 0);
	close(fd);
	p = (char *)body_of(&b);
	CHECK(strncmp(p, "{\"seq\":1,\"type\":\"status\",\"status\":"
	    "\"started\"", 40) == 0);
	CHECK(strstr(p, "{\"seq\":2,\"type\":\"output\",\"stream\":\"stdout\","
	    "\"text\":\"one\\n\"}") != NULL);
	CHECK(strstr(p, "\"stream\":\"stderr\",\"text\":\"two\\n\"") != NULL);
	ev = last_event(p);
	CHECK_STR(jget_str(ev, "type"), "exit");
	CHECK(jget_int(ev, "seq") == 5);
	CHECK(jget_int(ev, "exit_code") == 0);
	CHECK_STR(jget_str(ev, "state"), "succeeded");
	json_object_put(ev);
	buf_free(&b);

	st = rq(&main_agent, "GET", "/tasks/c1", NULL, NULL, &b, &j);
	CHECK(st == 200);
	CHECK_STR(jget_str(j, "state"), "succeeded");
	CHECK(jget_int(j, "exit_code") == 0);
	CHECK(jget_int(j, "events") == 5);
	json_object_put(j);
	buf_free(&b);
}

/* after=N replays only later events; a finished task's stream closes. */
static void
test_replay(void)
{
	struct buf		 b;
	struct json_object	*j;
	const char		*p;
	int			 st;

	st = rq(&main_agent, "GET", "/tasks/c1/events?after=3", NULL, NULL,
	    &b, NULL);
	CHECK(st == 200);
	p = body_of(&b);
	CHECK(strncmp(p, "{\"seq\":4,", 9) == 0);
	CHECK(count_lines(p, "\"seq\":") == 2);
	buf_free(&b);
	st = rq(&main_agent, "GET", "/tasks/c1/events?after=5", NULL, NULL,
	    &b, NULL);
	CHECK(st == 200);
	CHECK(*body_of(&b) == '\0');
	buf_free(&b);
	CHECK(rq(&main_agent, "GET", "/tasks/c1/events?after=x", NULL, NULL,
	    &b, NULL) == 400);
	buf_free(&b);
	CHECK(rq(&main_agent, "GET", "/tasks/nope/events", NULL, NULL, &b,
	    NULL) == 404);
	buf_free(&b);
	st = rq(&main_agent, "GET", "/tasks", NULL, NULL, &b, &j);
	CHECK(st == 200);
	CHECK(jpath(j, "tasks") != NULL &&
	    json_object_array_length(jpath(j, "tasks")) >= 1);
	json_object_put(j);
	buf_free(&b);

	/* Many lines: 3000 events over the index steps, resumed midway. */
	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"many\","
	    "\"kind\":\"command\",\"cmd\":[\"sh\",\"-c\",\"i=0; while [ $i -lt "
	    "3000 ]; do echo line$i; i=$((i+1)); done\"]}", &b, NULL);
	CHECK(st == 201);
	buf_free(&b);
	CHECK(wait_task("many", "succeeded", 10000) == 0);
	st = rq(&main_agent, "GET", "/tasks/many/events?after=1500", NULL,
	    NULL, &b, NULL);
	p = body_of(&b);
	CHECK(strncmp(p, "{\"seq\":1501,\"type\":\"output\",\"stream\":"
	    "\"stdout\",\"text\":\"line1499\\n\"}", 60) == 0);
	CHECK(count_lines(p, "\"seq\":") == 3002 - 1500);
	buf_free(&b);
}

/* A reader leaving mid-stream changes nothing for the task. */
static void
test_reader_leaves(void)
{
	struct buf		 b = { 0 };
	struct json_object	*ev;
	int			 fd, st;

	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"leave\","
	    "\"kind\":\"command\",\"cmd\":[\"sh\",\"-c\",\"for i in 1 2 3 4 5 6;"
	    " do echo tick$i; sleep 0.2; done\"]}", &b, NULL);
	CHECK(st == 201);
	buf_free(&b);
	fd = rq_open(&main_agent, "GET", "/tasks/leave/events", NULL, NULL);
	CHECK(rd_until(fd, &b, "tick2", 3000) == 0);
	close(fd);
	buf_free(&b);
	CHECK(wait_task("leave", "succeeded", 5000) == 0);
	st = rq(&main_agent, "GET", "/tasks/leave/events", NULL, NULL, &b,
	    NULL);
	CHECK(count_lines(body_of(&b), "tick") == 6);
	ev = last_event(body_of(&b));
	CHECK(jget_int(ev, "exit_code") == 0);
	json_object_put(ev);
	buf_free(&b);
}

/* Cancel: SIGTERM to the group; SIGKILL after the grace if ignored. */
static void
test_cancel(void)
{
	struct buf		 b = { 0 }, s = { 0 };
	struct json_object	*ev, *j;
	int64_t			 t0;
	int			 fd, st;

	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"cx\","
	    "\"kind\":\"command\",\"cmd\":[\"sleep\",\"30\"]}", &b, NULL);
	CHECK(st == 201);
	buf_free(&b);
	/* One at a time; ids are unique. */
	CHECK(rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"cy\","
	    "\"kind\":\"command\",\"cmd\":[\"true\"]}", &b, &j) == 409);
	CHECK_STR(jget_str(j, "error.code"), "conflict");
	json_object_put(j);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"c1\","
	    "\"kind\":\"command\",\"cmd\":[\"true\"]}", &b, NULL) == 409);
	buf_free(&b);

	fd = rq_open(&main_agent, "GET", "/tasks/cx/events", NULL, NULL);
	t0 = time_mono_ms();
	st = rq(&main_agent, "POST", "/tasks/cx/cancel", NULL, NULL, &b, &j);
	CHECK(st == 200);
	CHECK_STR(jget_str(j, "id"), "cx");
	json_object_put(j);
	buf_free(&b);
	CHECK(rd_all(fd, &b, 5000) == 0);
	close(fd);
	CHECK(time_mono_ms() - t0 < 2000);
	CHECK(strstr(b.p, "\"status\":\"cancelling\"") != NULL);
	ev = last_event(body_of(&b));
	CHECK_STR(jget_str(ev, "state"), "cancelled");
	CHECK(jget_int(ev, "signal") == SIGTERM);
	CHECK(jget_int(ev, "exit_code") == 128 + SIGTERM);
	json_object_put(ev);
	buf_free(&b);

	/* It ignores SIGTERM: killed at the end of a 300 ms grace. */
	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"cz\","
	    "\"kind\":\"command\",\"cmd\":[\"sh\",\"-c\",\"trap '' TERM; echo "
	    "armed; while :; do sleep 0.05; done\"]}", &b, NULL);
	CHECK(st == 201);
	buf_free(&b);
	fd = rq_open(&main_agent, "GET", "/tasks/cz/events", NULL, NULL);
	CHECK(rd_until(fd, &s, "armed", 3000) == 0);
	t0 = time_mono_ms();
	CHECK(rq(&main_agent, "POST", "/tasks/cz/cancel", NULL,
	    "{\"grace_ms\":300}", &b, NULL) == 200);
	buf_free(&b);
	CHECK(rd_all(fd, &s, 5000) == 0);
	close(fd);
	CHECK(time_mono_ms() - t0 >= 250 && time_mono_ms() - t0 < 2000);
	ev = last_event(body_of(&s));
	CHECK_STR(jget_str(ev, "state"), "cancelled");
	CHECK(jget_int(ev, "signal") == SIGKILL);
	json_object_put(ev);
	buf_free(&s);
	CHECK(rq(&main_agent, "POST", "/tasks/cz/cancel", NULL,
	    "{\"grace_ms\":-1}", &b, NULL) == 400);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks/nope/cancel", NULL, NULL, &b,
	    NULL) == 404);
	buf_free(&b);
}

/* timeout_s: SIGTERM, exit state failed with timed_out. */
static void
test_timeout(void)
{
	struct buf		 b = { 0 };
	struct json_object	*ev;
	int64_t			 t0 = time_mono_ms();
	int			 st;

	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"to\","
	    "\"kind\":\"command\",\"cmd\":[\"sleep\",\"30\"],\"timeout_s\":1}",
	    &b, NULL);
	CHECK(st == 201);
	buf_free(&b);
	st = rq(&main_agent, "GET", "/tasks/to/events", NULL, NULL, &b, NULL);
	CHECK(time_mono_ms() - t0 >= 900 && time_mono_ms() - t0 < 3000);
	CHECK(strstr(b.p, "\"status\":\"timeout\"") != NULL);
	ev = last_event(body_of(&b));
	CHECK_STR(jget_str(ev, "state"), "failed");
	CHECK(json_object_get_boolean(jpath(ev, "timed_out")) == 1);
	json_object_put(ev);
	buf_free(&b);
}

/* Bad requests get a 400 and start nothing. */
static void
test_bad_tasks(void)
{
	static const char *bodies[] = {
		"{\"id\":\"b1\",\"kind\":\"command\"}",
		"{\"id\":\"b1\",\"kind\":\"command\",\"cmd\":[]}",
		"{\"id\":\"b1\",\"kind\":\"command\",\"cmd\":[\"x\"],"
		    "\"prompt\":\"p\"}",
		"{\"id\":\"b1\",\"kind\":\"claude-code\"}",
		"{\"id\":\"b1\",\"kind\":\"opencode\",\"prompt\":\"p\","
		    "\"cmd\":[\"x\"]}",
		"{\"id\":\"b1\",\"kind\":\"shell\",\"cmd\":[\"x\"]}",
		"{\"id\":\"../x\",\"kind\":\"command\",\"cmd\":[\"x\"]}",
		"{\"id\":\".x\",\"kind\":\"command\",\"cmd\":[\"x\"]}",
		"{\"kind\":\"command\",\"cmd\":[\"x\"]}",
		"{\"id\":\"b1\",\"kind\":\"command\",\"cmd\":[\"x\"],"
		    "\"timeout_s\":0}",
		"{\"id\":\"b1\",\"kind\":\"command\",\"cmd\":[\"x\"],"
		    "\"env\":{\"A\":1}}",
		"{\"id\":\"b1\",\"kind\":\"command\",\"cmd\":[\"x\"],"
		    "\"checkpoint\":\"yes\"}",
		"{\"id\":\"b1\",\"kind\":\"command\",\"cmd\":[\"x\"],"
		    "\"cwd\":\"/nonexistent\"}",
		"{\"id\":\"b1\",\"kind\":\"command\",\"cmd\":[\"x\"],"
		    "\"color\":1}",
		"[1]",
		"{\"id\":",
	};
	struct buf	b;
	size_t		i;
	int		st;

	for (i = 0; i < nitems(bodies); i++) {
		st = rq(&main_agent, "POST", "/tasks", NULL, bodies[i], &b,
		    NULL);
		if (st != 400)
			fprintf(stderr, "body %s: %d\n", bodies[i], st);
		CHECK(st == 400);
		buf_free(&b);
	}
	CHECK(rq(&main_agent, "GET", "/tasks/b1", NULL, NULL, &b, NULL) ==
	    404);
	buf_free(&b);
	CHECK(rq(&main_agent, "DELETE", "/tasks", NULL, NULL, &b, NULL) ==
	    405);
	buf_free(&b);
	CHECK(rq(&main_agent, "GET", "/tasks/c1/nothing", NULL, NULL, &b,
	    NULL) == 404);
	buf_free(&b);
}

/* The file the agentd log must never contain: the key. */
static int
log_has(struct agent *a, const char *needle)
{
	FILE	*f;
	char	 line[8192];
	int	 found = 0;

	if ((f = fopen(a->log, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strstr(line, needle) != NULL)
			found = 1;
	}
	fclose(f);
	return found;
}

/*
 * Claude Code stand-in: agent events with the prompt, flags and env
 * delivered; the summary; a checkpoint and the changed files; the key in
 * no log. Then revert puts the workspace back without touching the
 * user's HEAD, branches or index.
 */
static void
test_claude_and_revert(void)
{
	struct buf		 b = { 0 };
	struct json_object	*j, *ev, *files;
	struct stat		 sb1, sb2;
	char			 head1[128] = "", head2[128] = "";
	char			 sha[64], body[256], path[600];
	const char		*p;
	FILE			*f;
	int			 st;

	/* A user repository with one commit and a staged change. */
	CHECK(run("git init -q -b main . && git -c user.name=u "
	    "-c user.email=u@x commit -q --allow-empty -m user && "
	    "mkdir -p src && echo orig > src/App.jsx && echo keep > keep.txt && "
	    "echo doomed > gone.txt && printf 'node_modules/\\n' > .gitignore "
	    "&& mkdir -p node_modules && echo dep > node_modules/dep.js && "
	    "git add keep.txt && git rev-parse HEAD > ../head1 && "
	    "cp .git/index ../index1") == 0);
	snprintf(path, sizeof path, "%s/keep.txt", ws);
	stat(path, &sb1);

	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"cl1\","
	    "\"kind\":\"claude-code\",\"prompt\":\"make the header \\\"red\\\"\","
	    "\"model\":\"sonnet\",\"env\":{\"ANTHROPIC_API_KEY\":\"" SECRET "\","
	    "\"STANDIN_ENV\":\"ANTHROPIC_API_KEY\",\"STANDIN_WRITE\":"
	    "\"src/App.jsx\",\"STANDIN_DELETE\":\"gone.txt\"}}", &b, &j);
	CHECK(st == 201);
	p = jget_str(j, "checkpoint");
	CHECK(p != NULL && strlen(p) == 40);
	snprintf(sha, sizeof sha, "%s", p != NULL ? p : "");
	json_object_put(j);
	buf_free(&b);

	st = rq(&main_agent, "GET", "/tasks/cl1/events", NULL, NULL, &b, NULL);
	p = body_of(&b);
	CHECK(count_lines(p, "\"type\":\"agent\"") == 5);
	CHECK(strstr(p, "\"type\":\"agent\",\"data\":{\"type\":\"system\","
	    "\"subtype\":\"init\"") != NULL);
	CHECK(strstr(p, "prompt=make the header \\\"red\\\"") != NULL);
	CHECK(strstr(p, "--output-format stream-json --verbose "
	    "--dangerously-skip-permissions --model sonnet") != NULL);
	CHECK(strstr(p, "env=" SECRET) != NULL);
	CHECK(strstr(p, "{\"type\":\"output\",\"stream\":\"stdout\",\"text\":"
	    "\"not json: a plain line\\n\"}") != NULL ||
	    strstr(p, "\"type\":\"output\",\"stream\":\"stdout\",\"text\":"
	    "\"not json: a plain line\\n\"") != NULL);
	CHECK(strstr(p, "\"stream\":\"stderr\",\"text\":\"claude stand-in: "
	    "starting\\n\"") != NULL);
	ev = last_event(p);
	CHECK_STR(jget_str(ev, "state"), "succeeded");
	CHECK(json_object_get_double(jpath(ev, "summary.cost_usd")) > 0.0122 &&
	    json_object_get_double(jpath(ev, "summary.cost_usd")) < 0.0124);
	CHECK(jget_int(ev, "summary.turns") == 2);
	CHECK_STR(jget_str(ev, "summary.result"),
	    "Done: make the header \"red\"");
	files = jpath(ev, "changed_files");
	CHECK(files != NULL && json_object_array_length(files) == 2);
	CHECK_STR(json_object_get_string(json_object_array_get_idx(files, 0)),
	    "gone.txt");
	CHECK_STR(json_object_get_string(json_object_array_get_idx(files, 1)),
	    "src/App.jsx");
	json_object_put(ev);
	buf_free(&b);
	CHECK(log_has(&main_agent, SECRET) == 0);
	CHECK(log_has(&main_agent, TEST_TOKEN) == 0);
	CHECK(log_has(&main_agent, "make the header") == 0);

	/* A file added after the task: revert removes it too. */
	CHECK(run("mkdir -p extra/deep && echo new > extra/deep/n.txt") == 0);
	st = rq(&main_agent, "POST", "/tasks/cl1/revert", NULL, NULL, &b, &j);
	CHECK(st == 200);
	CHECK(json_object_get_boolean(jpath(j, "reverted")) == 1);
	CHECK_STR(jget_str(j, "checkpoint"), sha);
	CHECK(json_object_array_length(jpath(j, "files")) == 3);
	json_object_put(j);
	buf_free(&b);
	CHECK(run("test \"$(cat src/App.jsx)\" = orig && test -f gone.txt && "
	    "test ! -e extra && test -f node_modules/dep.js") == 0);
	stat(path, &sb2);
	/* Untouched files are not rewritten (no spurious HMR). */
	CHECK(sb1.st_mtim.tv_sec == sb2.st_mtim.tv_sec &&
	    sb1.st_mtim.tv_nsec == sb2.st_mtim.tv_nsec);
	CHECK(run("git rev-parse HEAD > ../head2 && cmp -s .git/index "
	    "../index1 && test \"$(git symbolic-ref HEAD)\" = refs/heads/main "
	    "&& test \"$(git for-each-ref --format='%(refname)' refs/heads)\" "
	    "= refs/heads/main && git rev-parse -q --verify "
	    "refs/sandboxd/checkpoints/cl1 >/dev/null && "
	    "! git config --local user.name >/dev/null") == 0);
	snprintf(path, sizeof path, "%s/head1", tmp);
	if ((f = fopen(path, "r")) != NULL) {
		if (fgets(head1, sizeof head1, f) == NULL)
			head1[0] = '\0';
		fclose(f);
	}
	snprintf(path, sizeof path, "%s/head2", tmp);
	if ((f = fopen(path, "r")) != NULL) {
		if (fgets(head2, sizeof head2, f) == NULL)
			head2[0] = '\0';
		fclose(f);
	}
	CHECK(head1[0] != '\0' && strcmp(head1, head2) == 0);

	/* By sha, for a task agentd does not know (after a restart). */
	CHECK(run("echo changed > keep.txt") == 0);
	snprintf(body, sizeof body, "{\"checkpoint\":\"%s\"}", sha);
	CHECK(rq(&main_agent, "POST", "/tasks/unknown/revert", NULL, body, &b,
	    NULL) == 200);
	buf_free(&b);
	CHECK(run("test \"$(cat keep.txt)\" = keep") == 0);
	CHECK(rq(&main_agent, "POST", "/tasks/unknown/revert", NULL, NULL, &b,
	    NULL) == 404);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks/c1/revert", NULL, NULL, &b,
	    NULL) == 404);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks/cl1/revert", NULL,
	    "{\"checkpoint\":\"0123456789012345678901234567890123456789\"}",
	    &b, NULL) == 400);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks/cl1/revert", NULL,
	    "{\"checkpoint\":\"xyz\"}", &b, NULL) == 400);
	buf_free(&b);

	/* 409 while a task runs. */
	CHECK(rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"slow\","
	    "\"kind\":\"command\",\"cmd\":[\"sleep\",\"1\"]}", &b, NULL) ==
	    201);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks/cl1/revert", NULL, NULL, &b,
	    NULL) == 409);
	buf_free(&b);
	CHECK(wait_task("slow", "succeeded", 5000) == 0);
}

/* A task that un-ignores node_modules: revert keeps node_modules. */
static void
test_revert_ignores(void)
{
	struct buf		 b = { 0 };
	struct json_object	*j;

	CHECK(rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"ig\","
	    "\"kind\":\"command\",\"checkpoint\":true,\"cmd\":[\"sh\",\"-c\","
	    "\"rm .gitignore && echo x > new.txt\"]}", &b, NULL) == 201);
	buf_free(&b);
	CHECK(wait_task("ig", "succeeded", 5000) == 0);
	CHECK(rq(&main_agent, "GET", "/tasks/ig", NULL, NULL, &b, &j) == 200);
	/* As the task left it, node_modules looked added. */
	CHECK(jpath(j, "changed_files") != NULL &&
	    json_object_array_length(jpath(j, "changed_files")) >= 3);
	json_object_put(j);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks/ig/revert", NULL, NULL, &b, &j) ==
	    200);
	CHECK(json_object_array_length(jpath(j, "files")) == 2);
	json_object_put(j);
	buf_free(&b);
	CHECK(run("test -f .gitignore && test -f node_modules/dep.js && "
	    "test ! -e new.txt") == 0);
}

/* Cancelled while its checkpoint is taken: it never runs. */
static void
test_cancel_starting(void)
{
	struct buf		 b = { 0 }, c = { 0 };
	struct json_object	*j, *ev;
	int			 fd, st;

	fd = rq_open(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"cs\","
	    "\"kind\":\"claude-code\",\"prompt\":\"never\",\"env\":"
	    "{\"STANDIN_WRITE\":\"never.txt\"}}");
	CHECK(fd != -1);
	st = rq(&main_agent, "POST", "/tasks/cs/cancel", NULL, NULL, &b, &j);
	CHECK(st == 200);
	/* Usually still starting; a fast checkpoint may have won. */
	CHECK(jget_str(j, "state") != NULL);
	json_object_put(j);
	buf_free(&b);
	CHECK(rd_all(fd, &c, 10000) == 0);
	close(fd);
	CHECK(c.p != NULL && strncmp(c.p, "HTTP/1.1 201", 12) == 0);
	buf_free(&c);
	CHECK(wait_task("cs", "cancelled", 5000) == 0);
	rq(&main_agent, "GET", "/tasks/cs/events", NULL, NULL, &b, NULL);
	ev = last_event(body_of(&b));
	CHECK_STR(jget_str(ev, "type"), "exit");
	CHECK_STR(jget_str(ev, "state"), "cancelled");
	json_object_put(ev);
	buf_free(&b);
	CHECK(run("test ! -e never.txt") == 0);
}

/* OpenCode stand-in: its events, model and summary. */
static void
test_opencode(void)
{
	struct buf		 b = { 0 };
	struct json_object	*ev;
	const char		*p;
	int			 st;

	st = rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"oc1\","
	    "\"kind\":\"opencode\",\"prompt\":\"-add a footer\",\"model\":"
	    "\"anthropic/claude-sonnet-4\",\"env\":{\"OC_KEY\":\"k2\","
	    "\"STANDIN_ENV\":\"OC_KEY\",\"STANDIN_WRITE\":\"footer.txt\"},"
	    "\"checkpoint\":true}", &b, NULL);
	CHECK(st == 201);
	buf_free(&b);
	st = rq(&main_agent, "GET", "/tasks/oc1/events", NULL, NULL, &b, NULL);
	p = body_of(&b);
	CHECK(count_lines(p, "\"type\":\"agent\"") == 6);
	CHECK(strstr(p, "\"data\":{\"type\":\"step_start\"") != NULL);
	/* The leading '-' was kept from the option parser by a space. */
	CHECK(strstr(p, "prompt= -add a footer argv=--format json --auto "
	    "--model anthropic/claude-sonnet-4  -add a footer env=k2 model="
	    "anthropic/claude-sonnet-4") != NULL);
	ev = last_event(p);
	CHECK_STR(jget_str(ev, "state"), "succeeded");
	CHECK(json_object_get_double(jpath(ev, "summary.cost_usd")) > 0.0029 &&
	    json_object_get_double(jpath(ev, "summary.cost_usd")) < 0.0031);
	CHECK(jget_int(ev, "summary.turns") == 2);
	CHECK_STR(jget_str(ev, "summary.result"), "Done:  -add a footer");
	CHECK(json_object_array_length(jpath(ev, "changed_files")) == 1);
	json_object_put(ev);
	buf_free(&b);
	CHECK(rq(&main_agent, "POST", "/tasks/oc1/revert", NULL, NULL, &b,
	    NULL) == 200);
	buf_free(&b);
	CHECK(run("test ! -e footer.txt") == 0);
}

/* Past --task-log-max: one truncated status, output dropped, exit kept. */
static void
test_truncate(void)
{
	struct buf		 b = { 0 };
	struct json_object	*ev;
	char			 path[600];
	struct stat		 sb;
	const char		*p;

	CHECK(rq(&main_agent, "POST", "/tasks", NULL, "{\"id\":\"big\","
	    "\"kind\":\"command\",\"cmd\":[\"sh\",\"-c\",\"i=0; while [ $i -lt "
	    "20000 ]; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx$i; "
	    "i=$((i+1)); done\"]}", &b, NULL) == 201);
	buf_free(&b);
	CHECK(wait_task("big", "succeeded", 20000) == 0);
	rq(&main_agent, "GET", "/tasks/big/events", NULL, NULL, &b, NULL);
	p = body_of(&b);
	CHECK(count_lines(p, "\"status\":\"truncated\"") == 1);
	ev = last_event(p);
	CHECK_STR(jget_str(ev, "type"), "exit");
	CHECK(jget_int(ev, "exit_code") == 0);
	json_object_put(ev);
	buf_free(&b);
	snprintf(path, sizeof path, "%s/tasks/big.ndjson", statedir);
	CHECK(stat(path, &sb) == 0 && sb.st_size <= 1024 * 1024 + 512);
}

/* Streaming exec: output as it comes, then exit. */
static void
test_stream_exec(void)
{
	struct buf		 b = { 0 };
	struct json_object	*ev;
	int64_t			 t0 = time_mono_ms();
	int			 fd;

	fd = rq_open(&main_agent, "POST", "/exec",
	    "Accept: application/x-ndjson\r\n", "{\"cmd\":[\"sh\",\"-c\","
	    "\"echo early; sleep 1; echo late >&2; exit 3\"]}");
	CHECK(rd_until(fd, &b, "early", 3000) == 0);
	CHECK(time_mono_ms() - t0 < 900);
	CHECK(strstr(b.p, "\"type\":\"exit\"") == NULL);
	CHECK(rd_all(fd, &b, 5000) == 0);
	close(fd);
	CHECK(strstr(b.p, "{\"type\":\"output\",\"stream\":\"stdout\","
	    "\"text\":\"early\\n\"}") != NULL);
	CHECK(strstr(b.p, "{\"type\":\"output\",\"stream\":\"stderr\","
	    "\"text\":\"late\\n\"}") != NULL);
	ev = last_event(body_of(&b));
	CHECK_STR(jget_str(ev, "type"), "exit");
	CHECK(jget_int(ev, "exit_code") == 3);
	json_object_put(ev);
	buf_free(&b);
	/* The JSON form is unchanged. */
	CHECK(rq(&main_agent, "POST", "/exec", NULL, "{\"cmd\":[\"echo\","
	    "\"x\"]}", &b, &ev) == 200);
	CHECK_STR(jget_str(ev, "stdout"), "x\n");
	json_object_put(ev);
	buf_free(&b);
	/* A bad request is still a JSON 400. */
	CHECK(rq(&main_agent, "POST", "/exec", "Accept: application/x-ndjson"
	    "\r\n", "{\"cmd\":[]}", &b, NULL) == 400);
	buf_free(&b);
}

/* The dev server: state, ring, follow, restart; a crashing one. */
static void
test_dev(void)
{
	struct buf		 b = { 0 }, f = { 0 };
	struct json_object	*j;
	int64_t			 deadline;
	int			 fd, ready = 0, st;

	deadline = time_mono_ms() + 10000;
	while (!ready && time_mono_ms() < deadline) {
		rq(&main_agent, "GET", "/dev", NULL, NULL, &b, &j);
		ready = jget_str(j, "state") != NULL &&
		    strcmp(jget_str(j, "state"), "ready") == 0;
		if (ready) {
			CHECK(jget_int(j, "port") == dev_port);
			CHECK(jget_int(j, "restarts") == 0);
			CHECK(jget_int(j, "pid") > 0);
		}
		json_object_put(j);
		buf_free(&b);
		usleep(50000);
	}
	CHECK(ready);
	CHECK(rq(&main_agent, "GET", "/health", NULL, NULL, &b, &j) == 200);
	CHECK_STR(jget_str(j, "dev_state"), "ready");
	json_object_put(j);
	buf_free(&b);
	CHECK(rq(&main_agent, "GET", "/dev/logs", NULL, NULL, &b, NULL) ==
	    200);
	CHECK(strstr(body_of(&b), "dev booting") != NULL);
	CHECK(strstr(b.p, "text/plain") != NULL);
	buf_free(&b);
	/* Still in agentd's stderr (docker logs). */
	CHECK(log_has(&main_agent, "dev booting") == 1);

	fd = rq_open(&main_agent, "GET", "/dev/logs?follow=1", NULL, NULL);
	CHECK(rd_until(fd, &f, "\r\n\r\n", 3000) == 0);
	/* New output only. */
	CHECK(strstr(body_of(&f), "dev booting") == NULL);
	st = rq(&main_agent, "POST", "/dev/restart", NULL, NULL, &b, &j);
	CHECK(st == 200);
	CHECK_STR(jget_str(j, "state"), "restarting");
	json_object_put(j);
	buf_free(&b);
	CHECK(rd_until(fd, &f, "dev booting", 5000) == 0);
	close(fd);
	buf_free(&f);
	deadline = time_mono_ms() + 10000;
	ready = 0;
	while (!ready && time_mono_ms() < deadline) {
		rq(&main_agent, "GET", "/dev", NULL, NULL, &b, &j);
		ready = jget_str(j, "state") != NULL &&
		    strcmp(jget_str(j, "state"), "ready") == 0 &&
		    jget_int(j, "restarts") == 1;
		json_object_put(j);
		buf_free(&b);
		usleep(50000);
	}
	CHECK(ready);

	/* A dev server that exits: crashed, with its status. */
	CHECK(agent_start(&crash_agent, "crash", "echo crashing; exit 4",
	    NULL) == 0);
	usleep(300000);
	CHECK(rq(&crash_agent, "GET", "/dev", NULL, NULL, &b, &j) == 200);
	CHECK_STR(jget_str(j, "state"), "crashed");
	CHECK(jget_int(j, "last_exit.exit_code") == 4);
	json_object_put(j);
	buf_free(&b);
	CHECK(rq(&crash_agent, "POST", "/dev/restart", NULL, NULL, &b, NULL) ==
	    200);
	buf_free(&b);
	usleep(200000);
	CHECK(rq(&crash_agent, "GET", "/dev", NULL, NULL, &b, &j) == 200);
	CHECK(jget_int(j, "restarts") >= 1);
	json_object_put(j);
	buf_free(&b);
	CHECK(rq(&crash_agent, "GET", "/dev/logs", NULL, NULL, &b, NULL) ==
	    200);
	CHECK(count_lines(body_of(&b), "crashing") >= 2);
	buf_free(&b);
	agent_stop(&crash_agent);
}

/* Send one terminal frame. */
static void
term_send(int fd, int type, const void *p, size_t n)
{
	unsigned char	hdr[5];

	hdr[0] = (unsigned char)type;
	hdr[1] = (unsigned char)(n >> 24);
	hdr[2] = (unsigned char)(n >> 16);
	hdr[3] = (unsigned char)(n >> 8);
	hdr[4] = (unsigned char)n;
	/* EPIPE is expected after a bad frame: agentd has closed. */
	if ((write(fd, hdr, 5) != 5 || (n > 0 && write(fd, p, n) !=
	    (ssize_t)n)) && errno != EPIPE && errno != ECONNRESET)
		fprintf(stderr, "terminal write failed: %s\n", strerror(errno));
}

/*
 * Read frames until the data holds needle (or an exit frame when needle
 * is NULL); *exitst the exit status or -1. Returns 0 or -1.
 */
static int
term_read(int fd, struct buf *raw, struct buf *data, const char *needle,
    int *exitst, int ms)
{
	int64_t		deadline = time_mono_ms() + ms;
	unsigned char	*p;
	size_t		 len;

	*exitst = -1;
	for (;;) {
		while (raw->len >= 5) {
			p = (unsigned char *)raw->p;
			len = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) |
			    ((size_t)p[3] << 8) | p[4];
			if (raw->len < 5 + len)
				break;
			if (p[0] == 0) {
				data->p = xrealloc(data->p, data->len + len + 1);
				memcpy(data->p + data->len, p + 5, len);
				data->len += len;
				data->p[data->len] = '\0';
			} else if (p[0] == 2 && len == 4)
				*exitst = (p[5] << 24) | (p[6] << 16) |
				    (p[7] << 8) | p[8];
			memmove(raw->p, raw->p + 5 + len, raw->len - 5 - len);
			raw->len -= 5 + len;
		}
		if (needle != NULL && data->p != NULL &&
		    strstr(data->p, needle) != NULL)
			return 0;
		if (needle == NULL && *exitst != -1)
			return 0;
		if (raw->eof || time_mono_ms() >= deadline)
			return -1;
		rd_more(fd, raw, (int)(deadline - time_mono_ms()));
	}
}

/* The shell's pid from "pid=N" in its output (not the echoed "pid=$$"). */
static long
term_pid(struct buf *data)
{
	const char	*p;

	for (p = data->p; p != NULL && (p = strstr(p, "pid=")) != NULL; p += 4) {
		if (p[4] >= '1' && p[4] <= '9')
			return strtol(p + 4, NULL, 10);
	}
	return 0;
}

/* A terminal: typing, reading back, resize, exit, hang-up on close. */
static void
test_terminal(void)
{
	struct buf	 raw = { 0 }, data = { 0 };
	unsigned char	 rs[4];
	const char	*cmd;
	char		*p;
	long		 shpid = 0;
	int		 fd, ex, i;

	fd = rq_open(&main_agent, "GET", "/terminal?cols=100&rows=30", NULL,
	    NULL);
	CHECK(rd_until(fd, &raw, "\r\n\r\n", 5000) == 0);
	CHECK(strncmp(raw.p, "HTTP/1.1 101 ", 13) == 0);
	CHECK(strstr(raw.p, "Upgrade: sandboxd-pty") != NULL);
	p = strstr(raw.p, "\r\n\r\n") + 4;
	raw.len -= (size_t)(p - raw.p);
	memmove(raw.p, p, raw.len);

	cmd = "echo h''i; echo pid=$$; stty size\n";
	term_send(fd, 0, cmd, strlen(cmd));
	CHECK(term_read(fd, &raw, &data, "30 100", &ex, 5000) == 0);
	if (data.p != NULL && strstr(data.p, "30 100") == NULL)
		fprintf(stderr, "terminal said: %s\n", data.p);
	/* The echoed command line has h''i; only the output has hi. */
	CHECK(data.p != NULL && strstr(data.p, "hi\r\n") != NULL);
	shpid = term_pid(&data);
	CHECK(shpid > 0);

	rs[0] = 0; rs[1] = 120; rs[2] = 0; rs[3] = 40;
	term_send(fd, 1, rs, 4);
	cmd = "stty size\n";
	term_send(fd, 0, cmd, strlen(cmd));
	CHECK(term_read(fd, &raw, &data, "40 120", &ex, 5000) == 0);

	cmd = "exit 3\n";
	term_send(fd, 0, cmd, strlen(cmd));
	CHECK(term_read(fd, &raw, &data, NULL, &ex, 5000) == 0);
	CHECK(ex == 3);
	CHECK(rd_all(fd, &raw, 3000) == 0);
	close(fd);
	buf_free(&raw);
	buf_free(&data);

	/* The daemon closes: the shell is hung up. */
	fd = rq_open(&main_agent, "GET", "/terminal", NULL, NULL);
	CHECK(rd_until(fd, &raw, "\r\n\r\n", 5000) == 0);
	p = strstr(raw.p, "\r\n\r\n") + 4;
	raw.len -= (size_t)(p - raw.p);
	memmove(raw.p, p, raw.len);
	cmd = "echo pid=$$\n";
	term_send(fd, 0, cmd, strlen(cmd));
	shpid = 0;
	if (term_read(fd, &raw, &data, "pid=", &ex, 5000) == 0) {
		usleep(200000);
		term_read(fd, &raw, &data, "zz-never", &ex, 200);
		shpid = term_pid(&data);
	}
	CHECK(shpid > 0);
	close(fd);
	for (i = 0; i < 40 && shpid > 0 && kill((pid_t)shpid, 0) == 0; i++)
		usleep(50000);
	CHECK(shpid > 0 && kill((pid_t)shpid, 0) == -1 && errno == ESRCH);
	buf_free(&raw);
	buf_free(&data);

	/*
	 * Frames in the same write as the request head, then a 512 KiB
	 * paste: read back while it is echoed (both directions bounded,
	 * nothing stalls).
	 */
	{
		struct pollfd	 pfd = { main_agent.lfd, POLLIN, 0 };
		char		*req, *paste;
		size_t		 plen = 512 * 1024, k, off;
		unsigned char	 hdr[5];
		int		 n;

		cmd = "stty -echo; cat > paste.txt; echo pasted-$(wc -c < "
		    "paste.txt)\n";
		n = xasprintf(&req, "GET /terminal HTTP/1.1\r\nHost: agentd\r\n"
		    "\r\n%c%c%c%c%c%s", 0, 0, 0, 0, (int)strlen(cmd), cmd);
		fd = -1;
		if (poll(&pfd, 1, 5000) == 1)
			fd = accept4(main_agent.lfd, NULL, NULL, SOCK_CLOEXEC);
		CHECK(fd != -1 && write(fd, req, (size_t)n) == n);
		free(req);
		CHECK(rd_until(fd, &raw, "\r\n\r\n", 5000) == 0);
		p = strstr(raw.p, "\r\n\r\n") + 4;
		raw.len -= (size_t)(p - raw.p);
		memmove(raw.p, p, raw.len);
		usleep(300000);
		paste = xmalloc(plen + 6);
		for (k = 0; k < plen; k++)
			paste[k] = k % 64 == 63 ? '\n' : 'a' + (char)(k % 26);
		hdr[0] = 0;
		hdr[1] = (unsigned char)(plen >> 24);
		hdr[2] = (unsigned char)(plen >> 16);
		hdr[3] = (unsigned char)(plen >> 8);
		hdr[4] = (unsigned char)plen;
		CHECK(write(fd, hdr, 5) == 5);
		/* Write it while reading what comes back. */
		for (off = 0; off < plen;) {
			struct pollfd	 w = { fd, POLLOUT, 0 };
			ssize_t		 wn;

			if (poll(&w, 1, 5000) != 1)
				break;
			wn = write(fd, paste + off, plen - off > 65536 ? 65536 :
			    plen - off);
			if (wn <= 0)
				break;
			off += (size_t)wn;
			term_read(fd, &raw, &data, "zz-never", &ex, 1);
		}
		CHECK(off == plen);
		term_send(fd, 0, "\004", 1);
		CHECK(term_read(fd, &raw, &data, "pasted-524288", &ex, 10000) ==
		    0);
		free(paste);
		close(fd);
		buf_free(&raw);
		buf_free(&data);
	}

	/* A bad frame closes the session. */
	fd = rq_open(&main_agent, "GET", "/terminal", NULL, NULL);
	CHECK(rd_until(fd, &raw, "\r\n\r\n", 5000) == 0);
	term_send(fd, 9, "x", 1);
	CHECK(rd_all(fd, &raw, 3000) == 0);
	close(fd);
	buf_free(&raw);
	CHECK(rq(&main_agent, "GET", "/terminal?cols=0", NULL, NULL, &raw,
	    NULL) == 400);
	buf_free(&raw);
}

int
main(void)
{
	const char	*top = getenv("top_builddir");
	const char	*src = getenv("top_srcdir");
	char		 dev[512], cmd[700];

	snprintf(agentd_path, sizeof agentd_path, "%s/agentd/agentd",
	    top != NULL ? top : "..");
	snprintf(fixtures, sizeof fixtures, "%s/tests/fixtures/agents",
	    src != NULL ? src : "..");
	if (access(agentd_path, X_OK) == -1) {
		fprintf(stderr, "%s not built: skipped\n", agentd_path);
		return 77;
	}
	if (access(fixtures, X_OK) == -1) {
		fprintf(stderr, "%s missing (set top_srcdir): skipped\n",
		    fixtures);
		return 77;
	}
	if (system("git --version >/dev/null 2>&1") != 0 ||
	    system("python3 --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "git or python3 missing: skipped\n");
		return 77;
	}
	snprintf(tmp, sizeof tmp, "/tmp/test_agentd_tasks.XXXXXX");
	if (mkdtemp(tmp) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(ws, sizeof ws, "%s/ws", tmp);
	snprintf(statedir, sizeof statedir, "%s/state", tmp);
	mkdir(ws, 0755);
	signal(SIGPIPE, SIG_IGN);
	main_agent.lfd = crash_agent.lfd = -1;
	dev_port = free_port();
	snprintf(dev, sizeof dev, "echo dev booting; exec python3 -m "
	    "http.server %d --bind 127.0.0.1", dev_port);
	if (agent_start(&main_agent, "main", dev, "1048576") == -1)
		return 1;

	RUN(test_task_stream);
	RUN(test_replay);
	RUN(test_reader_leaves);
	RUN(test_cancel);
	RUN(test_timeout);
	RUN(test_bad_tasks);
	RUN(test_claude_and_revert);
	RUN(test_revert_ignores);
	RUN(test_cancel_starting);
	RUN(test_opencode);
	RUN(test_truncate);
	RUN(test_stream_exec);
	RUN(test_dev);
	RUN(test_terminal);

	agent_stop(&main_agent);
	agent_stop(&crash_agent);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp);
	return unit_finish();
}
