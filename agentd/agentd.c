/*
 * agentd: PID 1 of every sandbox. One poll(2) loop that
 *  - keeps one spare idle connection to the daemon's rendezvous socket, each
 *    connection carrying one HTTP/1.1 request (agentd.h has the protocol);
 *  - runs /exec commands, many at once, each to completion (or streamed);
 *  - runs tasks, one at a time, their events kept in a file (task.c);
 *  - supervises the dev server and keeps its output (supervise.c);
 *  - serves terminals on PTYs (pty.c);
 *  - reaps every child, orphans included, as an init must;
 *  - on SIGTERM or SIGINT stops everything within 3 s and exits 0.
 * Nothing here blocks: sockets and pipes are non-blocking and signals arrive
 * through a self-pipe.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "agentd/agentd.h"

extern char **environ;

#define AGENTD_DIAL_MIN_MS	50
#define AGENTD_DIAL_MAX_MS	1000
#define AGENTD_MAX_CONNS	64
#define AGENTD_READ_TIMEOUT_MS	30000
#define AGENTD_STOP_GRACE_MS	3000
#define AGENTD_KILL_WAIT_MS	500
/*
 * /wait-port tries the port again after 1 ms, doubling to 4 ms: a local
 * connect costs microseconds, so readiness is seen within a few ms of
 * the listen(2), without a daemon-side polling loop.
 */
#define AGENTD_PROBE_MIN_MS	1
#define AGENTD_PROBE_MAX_MS	4
#define AGENTD_PROBE_LIMIT_MS	600000
#define AGENTD_MAX_TERMINALS	16
#define AGENTD_STREAM_CHUNK	(256 * 1024)

enum conn_state {
	CONN_IDLE,	/* the spare: waiting for a request */
	CONN_READING,	/* request head and body arriving */
	CONN_RUNNING,	/* an exec job is running for it */
	CONN_PROBING,	/* /wait-port: trying the port until it accepts */
	CONN_WAITING,	/* the answer waits for a checkpoint or revert */
	CONN_STREAM,	/* a streaming answer, until its source ends */
	CONN_TERMINAL,	/* 101 sent: PTY frames both ways */
	CONN_WRITING,	/* sending the answer, then close */
	CONN_DEAD	/* closed; freed at the end of the loop turn */
};

enum stream_kind {
	STREAM_TASK,	/* GET /tasks/<tid>/events */
	STREAM_DEVLOG,	/* GET /dev/logs?follow=1 */
	STREAM_EXEC	/* POST /exec, Accept: application/x-ndjson */
};

struct conn {
	int		 fd;
	enum conn_state	 state;
	int64_t		 since_ms;	/* dialled, or request started */
	char		*in;
	size_t		 inlen;
	size_t		 insize;
	size_t		 head_len;	/* 0 until the head is parsed */
	size_t		 body_len;
	char		*method;
	char		*path;
	char		*query;		/* after '?', or NULL */
	int		 want_ndjson;	/* Accept: application/x-ndjson */
	struct exec_job	*job;
	struct task_start *pending;	/* CONN_WAITING */
	enum stream_kind stream;	/* CONN_STREAM */
	int		 stream_end;	/* the source has given everything */
	struct task_reader *reader;
	uint64_t	 logpos;	/* STREAM_DEVLOG: ring offset */
	struct pty_session *pty;	/* CONN_TERMINAL */
	/* /wait-port */
	struct sockaddr_in probe_addr;
	int		 probe_fd;	/* a connect in progress, or -1 */
	int		 probe_backoff_ms;
	int64_t		 probe_next_ms;	/* next connect, when probe_fd is -1 */
	int64_t		 probe_deadline_ms;
	char		*out;
	size_t		 outlen;
	size_t		 outoff;
	struct conn	*next;
};

/* What a pollfd slot belongs to. */
enum slot_kind {
	SLOT_SIGNAL,
	SLOT_CONN,	/* conn's socket */
	SLOT_EXEC,	/* one of conn->job's pipes */
	SLOT_PROBE,	/* conn's /wait-port connect */
	SLOT_PTY,	/* conn's PTY master */
	SLOT_TASK,	/* the running task's pipes */
	SLOT_DEV_OUT,	/* the dev server's output */
	SLOT_DEV_PROBE,	/* the dev server's readiness connect */
	SLOT_GIT	/* a git op's result pipe */
};

struct slot {
	enum slot_kind	 kind;
	struct conn	*conn;
};

struct agentd {
	const char		*socket_path;
	const char		*workdir;
	const char		*state_dir;
	int			 nterminals;
	struct supervisor	 sv;
	struct conn		*conns;
	int			 nconns;
	int64_t			 dial_at_ms;
	int			 dial_backoff_ms;
	int			 dial_failing;	/* log an outage once */
	int			 stopping;
	int64_t			 stop_deadline_ms;
	int			 killed;	/* SIGKILL sent at the deadline */
	int			 exit_requested;
};

static int	agentd_sigpipe[2] = { -1, -1 };
/* The first bytes of every connection: AGENTD_HELLO_PREFIX token "\n". */
static char	agentd_hello[AGENTD_HELLO_LEN + 1];
static size_t	agentd_hello_len;
static const int agentd_signals[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP,
    SIGPIPE };

static void	agentd_usage(FILE *);
static int	agentd_token_take(void);
static void	agentd_signal_cb(int);
static void	agentd_signals_init(void);
static void	agentd_dial(struct agentd *, int64_t);
static int	agentd_has_spare(struct agentd *);
static void	agentd_conn_close(struct agentd *, struct conn *, int64_t);
static void	agentd_conn_read(struct agentd *, struct conn *, int64_t);
static void	agentd_conn_write(struct conn *);
static void	agentd_dispatch(struct agentd *, struct conn *);
static void	agentd_respond(struct conn *, int, const char *);
static void	agentd_error(struct conn *, int, const char *, const char *,
		    ...) SBX_PRINTF(4, 5);
static void	agentd_health(struct agentd *, struct conn *);
static void	agentd_exec(struct agentd *, struct conn *);
static int	agentd_body(struct conn *, int, struct json_object **);
static void	agentd_respond_json(struct conn *, int, struct json_object *);
static void	agentd_stream_begin(struct conn *, enum stream_kind,
		    const char *);
static void	agentd_stream_fill(struct agentd *, struct conn *);
static void	agentd_stream_write(struct agentd *, struct conn *, int64_t);
static void	agentd_answer_cb(int, const char *, void *);
static void	agentd_tasks(struct agentd *, struct conn *, int64_t);
static void	agentd_task_route(struct agentd *, struct conn *, int64_t);
static void	agentd_dev(struct agentd *, struct conn *, int64_t);
static void	agentd_terminal(struct agentd *, struct conn *);
static void	agentd_terminal_event(struct agentd *, struct conn *, short,
		    int64_t);
static char	*agentd_query_get(const char *, const char *);
static void	agentd_wait_port(struct agentd *, struct conn *, int64_t);
static int	agentd_probe_tick(struct conn *, int64_t);
static void	agentd_probe_ready(struct conn *);
static void	agentd_probe_close(struct conn *);
static void	agentd_reap(struct agentd *, int64_t);
static void	agentd_stop(struct agentd *, int64_t);
static int	agentd_children(struct agentd *);
static void	agentd_kill_all(struct agentd *, int);
static void	agentd_sweep(struct agentd *);
static int	agentd_min_timeout(int, int);

/* Print the usage text. */
/*
 * Take the rendezvous token out of the environment, before any child can
 * inherit it: the value is overwritten where the kernel shows it
 * (/proc/1/environ reads that memory) and unset. Non-dumpable first, so
 * no process of the sandbox, all running as our uid, can read
 * /proc/1/environ, /proc/1/mem or our descriptors, or ptrace us; forked
 * children stay so until they exec. A missing or malformed token still
 * lets agentd run (the hub refuses it, and says so in its log).
 */
static int
agentd_token_take(void)
{
	char		**ep, *v;
	size_t		  n, i, plen = strlen(AGENTD_TOKEN_ENV);
	int		  ok = 0;

	/* Checked by the caller's log once logging is set up. */
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	memcpy(agentd_hello, AGENTD_HELLO_PREFIX,
	    sizeof AGENTD_HELLO_PREFIX - 1);
	agentd_hello_len = sizeof AGENTD_HELLO_PREFIX - 1;
	for (ep = environ; ep != NULL && *ep != NULL; ep++) {
		if (strncmp(*ep, AGENTD_TOKEN_ENV, plen) != 0 ||
		    (*ep)[plen] != '=')
			continue;
		v = *ep + plen + 1;
		n = strlen(v);
		if (!ok && n == AGENTD_TOKEN_LEN) {
			for (i = 0; i < n; i++) {
				if (strchr("0123456789abcdef", v[i]) == NULL ||
				    v[i] == '\0')
					break;
			}
			if (i == n) {
				memcpy(agentd_hello + agentd_hello_len, v, n);
				agentd_hello_len += n;
				ok = 1;
			}
		}
		explicit_bzero(v, n);
	}
	agentd_hello[agentd_hello_len++] = '\n';
	while (getenv(AGENTD_TOKEN_ENV) != NULL)
		unsetenv(AGENTD_TOKEN_ENV);
	return (ok);
}

static void
agentd_usage(FILE *f)
{
	fprintf(f,
	    "usage: agentd [--socket PATH] [--dev-command CMD] [--dev-port N]\n"
	    "              [--dev-host IP] [--workdir DIR] [--state-dir DIR]\n"
	    "              [--task-log-max BYTES]\n"
	    "  --socket PATH         daemon rendezvous socket (default %s)\n"
	    "  --dev-command CMD     dev server, run with /bin/sh -c and "
	    "restarted when it dies\n"
	    "  --dev-port N          the dev server is ready once this port "
	    "accepts\n"
	    "  --dev-host IP         address the readiness probe connects to "
	    "(default 127.0.0.1)\n"
	    "  --workdir DIR         workspace: dev server, tasks, terminals, "
	    "checkpoints (default %s)\n"
	    "  --state-dir DIR       task event files and git's temporary "
	    "index (default %s)\n"
	    "  --task-log-max BYTES  size cap of one task's events (default "
	    "%d)\n"
	    "  --help                this text\n",
	    AGENTD_DEFAULT_SOCKET, AGENTD_DEFAULT_WORKDIR,
	    AGENTD_DEFAULT_STATE_DIR, AGENTD_TASK_LOG_MAX);
}

/* Signal handler: hand the signal number to the loop through the pipe. */
static void
agentd_signal_cb(int sig)
{
	unsigned char	c = (unsigned char)sig;
	int		saved_errno = errno;
	ssize_t		n;

	/* A full pipe already wakes the loop; losing the byte is fine. */
	n = write(agentd_sigpipe[1], &c, 1);
	(void)n;
	errno = saved_errno;
}

/*
 * Install handlers. PID 1 gets no default action for signals it does not
 * handle, so SIGTERM and SIGINT need one; SIGPIPE must not kill us when the
 * daemon goes away mid-answer; SIGHUP is only logged.
 */
static void
agentd_signals_init(void)
{
	struct sigaction	sa;
	size_t			i;

	if (pipe2(agentd_sigpipe, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe2");
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sa.sa_handler = agentd_signal_cb;
	for (i = 0; i < nitems(agentd_signals); i++) {
		if (agentd_signals[i] == SIGPIPE)
			continue;
		if (sigaction(agentd_signals[i], &sa, NULL) == -1)
			fatal("sigaction");
	}
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL) == -1)
		fatal("sigaction");
}

/* fork() for a child that will exec, with clean signal state. */
pid_t
agentd_fork(void)
{
	sigset_t		all, old;
	struct sigaction	sa;
	pid_t			pid;
	size_t			i;

	/* No handler may run in the child between fork and the reset. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = SIG_DFL;
		sigemptyset(&sa.sa_mask);
		for (i = 0; i < nitems(agentd_signals); i++)
			sigaction(agentd_signals[i], &sa, NULL);
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		return 0;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return pid;
}

/* 1 if an idle spare connection is open. */
static int
agentd_has_spare(struct agentd *ad)
{
	struct conn	*c;

	for (c = ad->conns; c != NULL; c = c->next) {
		if (c->state == CONN_IDLE)
			return 1;
	}
	return 0;
}

/* Connect a new spare to the daemon, or schedule the next try. */
static void
agentd_dial(struct agentd *ad, int64_t now)
{
	struct sockaddr_un	 sun;
	struct conn		*c;
	int			 fd;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	/* main checked that the path fits. */
	memcpy(sun.sun_path, ad->socket_path, strlen(ad->socket_path));

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("socket");
		goto retry;
	}
	/*
	 * A Unix stream connect does not go "in progress": it succeeds, or
	 * fails at once (no socket yet, nobody listening, backlog full).
	 */
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		if (!ad->dial_failing)
			log_warn("connect %s (retrying)", ad->socket_path);
		ad->dial_failing = 1;
		close(fd);
		goto retry;
	}
	/* The hello fits any fresh socket's buffer; short is a failure. */
	if (send(fd, agentd_hello, agentd_hello_len, MSG_NOSIGNAL) !=
	    (ssize_t)agentd_hello_len) {
		if (!ad->dial_failing)
			log_warn("send hello on %s (retrying)",
			    ad->socket_path);
		ad->dial_failing = 1;
		close(fd);
		goto retry;
	}
	if (ad->dial_failing)
		log_info("connected\tsocket=%s", ad->socket_path);
	ad->dial_failing = 0;

	c = xcalloc(1, sizeof *c);
	c->fd = fd;
	c->state = CONN_IDLE;
	c->since_ms = now;
	c->next = ad->conns;
	ad->conns = c;
	ad->nconns++;
	return;

retry:
	ad->dial_at_ms = now + ad->dial_backoff_ms;
	ad->dial_backoff_ms *= 2;
	if (ad->dial_backoff_ms > AGENTD_DIAL_MAX_MS)
		ad->dial_backoff_ms = AGENTD_DIAL_MAX_MS;
}

/* Close a connection; it is freed by agentd_sweep. */
static void
agentd_conn_close(struct agentd *ad, struct conn *c, int64_t now)
{
	if (c->state == CONN_DEAD)
		return;
	/*
	 * The daemon closed our spare. If that happens right after dialling
	 * it is refusing us (restarting, forgot the sandbox): back off.
	 */
	if (c->state == CONN_IDLE) {
		if (now - c->since_ms < AGENTD_DIAL_MAX_MS) {
			ad->dial_at_ms = now + ad->dial_backoff_ms;
			ad->dial_backoff_ms *= 2;
			if (ad->dial_backoff_ms > AGENTD_DIAL_MAX_MS)
				ad->dial_backoff_ms = AGENTD_DIAL_MAX_MS;
		} else {
			ad->dial_at_ms = now;
			ad->dial_backoff_ms = AGENTD_DIAL_MIN_MS;
		}
	}
	if (c->job != NULL) {
		/* Nobody is waiting for the answer any more. */
		exec_kill(c->job, SIGKILL);
		exec_free(c->job);
		c->job = NULL;
	}
	if (c->pending != NULL) {
		/* The checkpoint or revert goes on; nobody gets the answer. */
		task_start_detach(c->pending);
		c->pending = NULL;
	}
	task_reader_free(c->reader);
	c->reader = NULL;
	if (c->pty != NULL) {
		pty_free(c->pty);
		c->pty = NULL;
		ad->nterminals--;
	}
	agentd_probe_close(c);
	close(c->fd);
	c->fd = -1;
	c->state = CONN_DEAD;
}

/* Free closed connections. */
static void
agentd_sweep(struct agentd *ad)
{
	struct conn	**pc, *c;

	for (pc = &ad->conns; (c = *pc) != NULL;) {
		if (c->state != CONN_DEAD) {
			pc = &c->next;
			continue;
		}
		*pc = c->next;
		ad->nconns--;
		free(c->in);
		free(c->method);
		free(c->path);
		free(c->query);
		free(c->out);
		free(c);
	}
}

/* Queue an answer with this status and JSON body; close once written. */
static void
agentd_respond(struct conn *c, int status, const char *body)
{
	size_t	len = strlen(body);

	free(c->out);
	c->outlen = (size_t)xasprintf(&c->out,
	    "HTTP/1.1 %d %s\r\n"
	    "Content-Type: application/json\r\n"
	    "Content-Length: %zu\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "%s", status, http_status_text(status), len, body);
	c->outoff = 0;
	c->state = CONN_WRITING;
	/* Nothing more is read; let the daemon see EOF after the answer. */
	free(c->in);
	c->in = NULL;
	c->inlen = c->insize = 0;
}

/* Answer with the error body {"error":{"code","message"}}. */
static void
agentd_error(struct conn *c, int status, const char *code, const char *fmt,
    ...)
{
	struct json_object	*obj, *err;
	va_list			 ap;
	char			*msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("vasprintf: out of memory");
	va_end(ap);

	err = json_object_new_object();
	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string(msg));
	obj = json_object_new_object();
	json_object_object_add(obj, "error", err);
	agentd_respond(c, status, json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
	free(msg);
}

/* GET /health */
static void
agentd_health(struct agentd *ad, struct conn *c)
{
	struct json_object	*obj;

	obj = json_object_new_object();
	json_object_object_add(obj, "status", json_object_new_string("ok"));
	json_object_object_add(obj, "dev_command", ad->sv.command == NULL ?
	    NULL : json_object_new_string(ad->sv.command));
	json_object_object_add(obj, "dev_pid",
	    json_object_new_int((int)ad->sv.pid));
	json_object_object_add(obj, "dev_restarts",
	    json_object_new_int(ad->sv.restarts));
	json_object_object_add(obj, "dev_state", json_object_new_string(
	    supervisor_state_name(ad->sv.state)));
	agentd_respond_json(c, 200, obj);
}

/* Answer with this JSON object (freed). */
static void
agentd_respond_json(struct conn *c, int status, struct json_object *obj)
{
	agentd_respond(c, status, json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
}

/*
 * Parse the request body as JSON into *req. An empty body is NULL when
 * optional. Returns -1 after answering 400.
 */
static int
agentd_body(struct conn *c, int optional, struct json_object **req)
{
	struct json_tokener	*tok;
	enum json_tokener_error	 jerr;

	*req = NULL;
	if (c->body_len == 0 && optional)
		return 0;
	tok = json_tokener_new();
	*req = json_tokener_parse_ex(tok, c->in + c->head_len,
	    (int)c->body_len);
	jerr = json_tokener_get_error(tok);
	/* Trailing bytes after the value are as wrong as a broken value. */
	if (*req == NULL || jerr != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != c->body_len) {
		if (jerr == json_tokener_continue || jerr == json_tokener_success)
			agentd_error(c, 400, "bad_request",
			    "invalid JSON: %s", c->body_len == 0 ?
			    "empty body" : "unexpected end or trailing data");
		else
			agentd_error(c, 400, "bad_request", "invalid JSON: %s",
			    json_tokener_error_desc(jerr));
		json_object_put(*req);
		*req = NULL;
		json_tokener_free(tok);
		return -1;
	}
	json_tokener_free(tok);
	return 0;
}

/* Send a streaming answer's head; the body follows until close. */
static void
agentd_stream_begin(struct conn *c, enum stream_kind kind, const char *type)
{
	free(c->out);
	c->outlen = (size_t)xasprintf(&c->out,
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: %s\r\n"
	    "Cache-Control: no-store\r\n"
	    "Connection: close\r\n"
	    "\r\n", type);
	c->outoff = 0;
	c->state = CONN_STREAM;
	c->stream = kind;
	c->stream_end = 0;
	free(c->in);
	c->in = NULL;
	c->inlen = c->insize = 0;
}

/* Take more from a stream's source while little is unsent. */
static void
agentd_stream_fill(struct agentd *ad, struct conn *c)
{
	char	*buf;
	size_t	 n;

	if (c->outoff > 0 && c->outoff == c->outlen) {
		c->outoff = c->outlen = 0;
	}
	if (c->stream_end || c->outlen - c->outoff >= AGENTD_STREAM_HIGH)
		return;
	switch (c->stream) {
	case STREAM_TASK:
		if (task_reader_ready(c->reader) &&
		    task_reader_fill(c->reader, &c->out, &c->outlen,
		    AGENTD_STREAM_CHUNK))
			c->stream_end = 1;
		break;
	case STREAM_DEVLOG:
		n = supervisor_ring_copy(&ad->sv, &c->logpos,
		    AGENTD_STREAM_CHUNK, 0, &buf);
		if (n > 0) {
			c->out = xrealloc(c->out, c->outlen + n);
			memcpy(c->out + c->outlen, buf, n);
			c->outlen += n;
		}
		free(buf);
		break;
	case STREAM_EXEC:
		if (exec_stream_take(c->job, &c->out, &c->outlen)) {
			exec_free(c->job);
			c->job = NULL;
			c->stream_end = 1;
		}
		break;
	}
}

/* Send what is pending; close once the source ended and all is sent. */
static void
agentd_stream_write(struct agentd *ad, struct conn *c, int64_t now)
{
	ssize_t	n;

	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			agentd_conn_close(ad, c, now);
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->stream_end)
		agentd_conn_close(ad, c, now);
}

/* A waiting request's answer came (checkpoint or revert done). */
static void
agentd_answer_cb(int status, const char *body, void *arg)
{
	struct conn	*c = arg;

	c->pending = NULL;
	agentd_respond(c, status, body);
}

/* POST /exec: parse the body and start the job. */
static void
agentd_exec(struct agentd *ad, struct conn *c)
{
	struct json_object	*req;
	char			*cause;
	int			 status;

	if (ad->stopping) {
		agentd_error(c, 503, "unavailable", "agentd is shutting down");
		return;
	}
	if (agentd_body(c, 0, &req) == -1)
		return;
	c->job = exec_start(req, ad->workdir, &cause, &status);
	json_object_put(req);
	if (c->job == NULL) {
		agentd_error(c, status, status == 400 ? "bad_request" :
		    "unavailable", "%s", cause);
		free(cause);
		return;
	}
	if (c->want_ndjson) {
		exec_set_stream(c->job);
		agentd_stream_begin(c, STREAM_EXEC, "application/x-ndjson");
		return;
	}
	c->state = CONN_RUNNING;
}

/* POST /tasks, GET /tasks */
static void
agentd_tasks(struct agentd *ad, struct conn *c, int64_t now)
{
	struct json_object	*req;
	const char		*code;
	char			*cause;
	int			 status;

	if (strcmp(c->method, "GET") == 0) {
		agentd_respond_json(c, 200, task_list_json());
		return;
	}
	if (strcmp(c->method, "POST") != 0) {
		agentd_error(c, 405, "method_not_allowed",
		    "use GET or POST for /tasks");
		return;
	}
	if (ad->stopping) {
		agentd_error(c, 503, "unavailable", "agentd is shutting down");
		return;
	}
	if (agentd_body(c, 0, &req) == -1)
		return;
	/* The answer may come at once (agentd_answer_cb) or later. */
	c->state = CONN_WAITING;
	if (task_create(req, agentd_answer_cb, c, &c->pending, &status, &code,
	    &cause) == -1) {
		agentd_error(c, status, code, "%s", cause);
		free(cause);
	}
	json_object_put(req);
}

/* /tasks/<tid>[/events|/cancel|/revert] */
static void
agentd_task_route(struct agentd *ad, struct conn *c, int64_t now)
{
	struct json_object	*req = NULL, *v;
	struct task		*t;
	const char		*code, *commit = NULL, *err = NULL;
	char			*tid, *sub, *after, *cause;
	long long		 n = 0, grace = 5000;
	int			 status;

	tid = xstrdup(c->path + strlen("/tasks/"));
	if ((sub = strchr(tid, '/')) != NULL)
		*sub++ = '\0';
	t = task_find(tid);
	if (sub == NULL) {
		if (strcmp(c->method, "GET") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use GET for /tasks/<id>");
		else if (t == NULL)
			agentd_error(c, 404, "not_found", "no task %s", tid);
		else
			agentd_respond_json(c, 200, task_json(t));
	} else if (strcmp(sub, "events") == 0) {
		after = agentd_query_get(c->query, "after");
		if (after != NULL)
			n = strtonum_x(after, 0, INT64_MAX, &err);
		free(after);
		if (strcmp(c->method, "GET") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use GET for /tasks/<id>/events");
		else if (err != NULL)
			agentd_error(c, 400, "bad_request",
			    "after must be an integer >= 0");
		else if (t == NULL)
			agentd_error(c, 404, "not_found", "no task %s", tid);
		else {
			agentd_stream_begin(c, STREAM_TASK,
			    "application/x-ndjson");
			c->reader = task_reader_new(t, (uint64_t)n);
		}
	} else if (strcmp(sub, "cancel") == 0) {
		if (strcmp(c->method, "POST") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use POST for /tasks/<id>/cancel");
		else if (agentd_body(c, 1, &req) == -1)
			;
		else if (req != NULL &&
		    (!json_object_is_type(req, json_type_object) ||
		    exec_get_int(req, "grace_ms", 5000, 0, 60000, &grace,
		    &cause) == -1)) {
			if (!json_object_is_type(req, json_type_object))
				agentd_error(c, 400, "bad_request",
				    "request body must be a JSON object");
			else {
				agentd_error(c, 400, "bad_request", "%s",
				    cause);
				free(cause);
			}
		} else if (t == NULL)
			agentd_error(c, 404, "not_found", "no task %s", tid);
		else {
			task_cancel(t, (int)grace, now);
			agentd_respond_json(c, 200, task_json(t));
		}
	} else if (strcmp(sub, "revert") == 0) {
		if (strcmp(c->method, "POST") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use POST for /tasks/<id>/revert");
		else if (agentd_body(c, 1, &req) == -1)
			;
		else if (req != NULL &&
		    (!json_object_is_type(req, json_type_object) ||
		    (json_object_object_get_ex(req, "checkpoint", &v) &&
		    !json_object_is_type(v, json_type_string))))
			agentd_error(c, 400, "bad_request", "the body is "
			    "{\"checkpoint\": \"<sha>\"}, optional");
		else {
			if (req != NULL && json_object_object_get_ex(req,
			    "checkpoint", &v))
				commit = json_object_get_string(v);
			c->state = CONN_WAITING;
			if (task_revert(t, commit, agentd_answer_cb, c,
			    &c->pending, &status, &code, &cause) == -1) {
				agentd_error(c, status, code, "%s", cause);
				free(cause);
			}
		}
	} else
		agentd_error(c, 404, "not_found", "no route %s %s", c->method,
		    c->path);
	json_object_put(req);
	free(tid);
}

/* GET /dev, GET /dev/logs[?follow=1], POST /dev/restart */
static void
agentd_dev(struct agentd *ad, struct conn *c, int64_t now)
{
	char	*follow, *buf = NULL;
	size_t	 n;
	uint64_t pos = 0;

	if (strcmp(c->path, "/dev") == 0) {
		if (strcmp(c->method, "GET") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use GET for /dev");
		else
			agentd_respond_json(c, 200, supervisor_json(&ad->sv));
	} else if (strcmp(c->path, "/dev/restart") == 0) {
		if (strcmp(c->method, "POST") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use POST for /dev/restart");
		else if (supervisor_restart(&ad->sv, now) == -1)
			agentd_error(c, 409, "conflict", "no dev server");
		else
			agentd_respond_json(c, 200, supervisor_json(&ad->sv));
	} else if (strcmp(c->path, "/dev/logs") == 0) {
		if (strcmp(c->method, "GET") != 0) {
			agentd_error(c, 405, "method_not_allowed",
			    "use GET for /dev/logs");
			return;
		}
		follow = agentd_query_get(c->query, "follow");
		if (follow != NULL && strcmp(follow, "0") != 0) {
			agentd_stream_begin(c, STREAM_DEVLOG,
			    "text/plain; charset=utf-8");
			c->logpos = ad->sv.ring_total;
		} else {
			n = supervisor_ring_copy(&ad->sv, &pos,
			    SUPERVISOR_RING_SIZE, 1, &buf);
			free(c->out);
			c->outlen = (size_t)xasprintf(&c->out,
			    "HTTP/1.1 200 OK\r\n"
			    "Content-Type: text/plain; charset=utf-8\r\n"
			    "Content-Length: %zu\r\n"
			    "Connection: close\r\n"
			    "\r\n", n);
			c->out = xrealloc(c->out, c->outlen + n);
			if (n > 0)
				memcpy(c->out + c->outlen, buf, n);
			c->outlen += n;
			c->outoff = 0;
			c->state = CONN_WRITING;
			free(buf);
		}
		free(follow);
	} else
		agentd_error(c, 404, "not_found", "no route %s %s", c->method,
		    c->path);
}

/* GET /terminal?cols=C&rows=R: 101, then PTY frames. */
static void
agentd_terminal(struct agentd *ad, struct conn *c)
{
	static const char	 head[] = "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: sandboxd-pty\r\n"
	    "Connection: Upgrade\r\n"
	    "\r\n";
	char			*cols, *rows, *cause;
	const char		*e1 = NULL, *e2 = NULL;
	long long		 nc = 80, nr = 24;

	if (strcmp(c->method, "GET") != 0) {
		agentd_error(c, 405, "method_not_allowed",
		    "use GET for /terminal");
		return;
	}
	cols = agentd_query_get(c->query, "cols");
	rows = agentd_query_get(c->query, "rows");
	if (cols != NULL)
		nc = strtonum_x(cols, 1, 1000, &e1);
	if (rows != NULL)
		nr = strtonum_x(rows, 1, 1000, &e2);
	free(cols);
	free(rows);
	if (e1 != NULL || e2 != NULL) {
		agentd_error(c, 400, "bad_request",
		    "cols and rows must be 1-1000");
		return;
	}
	if (ad->stopping) {
		agentd_error(c, 503, "unavailable", "agentd is shutting down");
		return;
	}
	if (ad->nterminals >= AGENTD_MAX_TERMINALS) {
		agentd_error(c, 503, "unavailable", "too many terminals (%d)",
		    AGENTD_MAX_TERMINALS);
		return;
	}
	if ((c->pty = pty_start(ad->workdir, (int)nc, (int)nr,
	    &cause)) == NULL) {
		agentd_error(c, 503, "unavailable", "%s", cause);
		free(cause);
		return;
	}
	ad->nterminals++;
	pty_queue_raw(c->pty, head, sizeof head - 1);
	c->state = CONN_TERMINAL;
	/* Frames may follow the request head at once, before our 101. */
	if (c->inlen > c->head_len + c->body_len &&
	    pty_feed(c->pty, c->in + c->head_len + c->body_len,
	    c->inlen - c->head_len - c->body_len) == -1) {
		agentd_conn_close(ad, c, time_mono_ms());
		return;
	}
	free(c->in);
	c->in = NULL;
	c->inlen = c->insize = 0;
}

/* Socket events of a terminal connection. */
static void
agentd_terminal_event(struct agentd *ad, struct conn *c, short revents,
    int64_t now)
{
	if ((revents & POLLOUT) && pty_sock_write(c->pty, c->fd) == -1) {
		agentd_conn_close(ad, c, now);
		return;
	}
	if ((revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) &&
	    pty_sock_read(c->pty, c->fd) == -1) {
		agentd_conn_close(ad, c, now);
		return;
	}
	if (pty_finished(c->pty))
		agentd_conn_close(ad, c, now);
}

/* Route a complete request. */
static void
agentd_dispatch(struct agentd *ad, struct conn *c)
{
	log_debug("request\tmethod=%s path=%s", c->method, c->path);
	if (strcmp(c->path, "/health") == 0) {
		if (strcmp(c->method, "GET") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use GET for /health");
		else
			agentd_health(ad, c);
	} else if (strcmp(c->path, "/exec") == 0) {
		if (strcmp(c->method, "POST") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use POST for /exec");
		else
			agentd_exec(ad, c);
	} else if (strcmp(c->path, "/wait-port") == 0) {
		if (strcmp(c->method, "GET") != 0)
			agentd_error(c, 405, "method_not_allowed",
			    "use GET for /wait-port");
		else
			agentd_wait_port(ad, c, time_mono_ms());
	} else if (strcmp(c->path, "/tasks") == 0)
		agentd_tasks(ad, c, time_mono_ms());
	else if (strncmp(c->path, "/tasks/", 7) == 0 && c->path[7] != '\0')
		agentd_task_route(ad, c, time_mono_ms());
	else if (strcmp(c->path, "/dev") == 0 ||
	    strncmp(c->path, "/dev/", 5) == 0)
		agentd_dev(ad, c, time_mono_ms());
	else if (strcmp(c->path, "/terminal") == 0)
		agentd_terminal(ad, c);
	else
		agentd_error(c, 404, "not_found", "no route %s %s", c->method,
		    c->path);
}

/* The value of key in a query string "a=1&b=2", or NULL (malloc'd). */
static char *
agentd_query_get(const char *query, const char *key)
{
	size_t		 klen = strlen(key), n;
	const char	*p = query;

	while (p != NULL && *p != '\0') {
		n = strcspn(p, "&");
		if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=')
			return xstrndup(p + klen + 1, n - klen - 1);
		p += n;
		if (*p == '&')
			p++;
	}
	return NULL;
}

/*
 * GET /wait-port?host=IP&port=N&timeout_ms=M: answer 200 once a TCP
 * connect to IP:N succeeds (the dev server listens), 504 after M ms.
 * The daemon holds requests for a waking sandbox until this answers.
 */
static void
agentd_wait_port(struct agentd *ad, struct conn *c, int64_t now)
{
	char		*host, *port, *timeout;
	const char	*err1 = NULL, *err2 = NULL;
	long long	 p, t = 60000;

	host = agentd_query_get(c->query, "host");
	port = agentd_query_get(c->query, "port");
	timeout = agentd_query_get(c->query, "timeout_ms");
	memset(&c->probe_addr, 0, sizeof c->probe_addr);
	c->probe_addr.sin_family = AF_INET;
	p = port != NULL ? strtonum_x(port, 1, 65535, &err1) : 0;
	if (timeout != NULL)
		t = strtonum_x(timeout, 1, AGENTD_PROBE_LIMIT_MS, &err2);
	if (host == NULL || inet_pton(AF_INET, host,
	    &c->probe_addr.sin_addr) != 1 || port == NULL || err1 != NULL ||
	    err2 != NULL) {
		agentd_error(c, 400, "bad_request", "wait-port needs host "
		    "(IPv4), port (1-65535) and an optional timeout_ms "
		    "(1-%d)", AGENTD_PROBE_LIMIT_MS);
	} else {
		c->probe_addr.sin_port = htons((uint16_t)p);
		c->probe_fd = -1;
		c->probe_backoff_ms = AGENTD_PROBE_MIN_MS;
		c->probe_next_ms = now;
		c->probe_deadline_ms = now + t;
		c->state = CONN_PROBING;
		(void)ad;
	}
	free(host);
	free(port);
	free(timeout);
}

/* Close the probe's socket, if one is open. */
static void
agentd_probe_close(struct conn *c)
{
	if (c->state == CONN_PROBING && c->probe_fd != -1) {
		close(c->probe_fd);
		c->probe_fd = -1;
	}
}

/* The port accepted. */
static void
agentd_probe_ready(struct conn *c)
{
	agentd_probe_close(c);
	agentd_respond(c, 200, "{\"ready\":true}");
}

/* The last connect was refused: try again a little later. */
static void
agentd_probe_retry(struct conn *c, int64_t now)
{
	agentd_probe_close(c);
	c->probe_next_ms = now + c->probe_backoff_ms;
	c->probe_backoff_ms *= 2;
	if (c->probe_backoff_ms > AGENTD_PROBE_MAX_MS)
		c->probe_backoff_ms = AGENTD_PROBE_MAX_MS;
}

/*
 * Advance a probe: give up at the deadline, or start the next connect.
 * Returns the poll timeout it needs (-1: none).
 */
static int
agentd_probe_tick(struct conn *c, int64_t now)
{
	int	fd;

	if (now >= c->probe_deadline_ms) {
		agentd_probe_close(c);
		agentd_respond(c, 504, "{\"ready\":false}");
		return -1;
	}
	if (c->probe_fd == -1 && now >= c->probe_next_ms) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (fd == -1)
			agentd_probe_retry(c, now);
		else if (connect(fd, (struct sockaddr *)&c->probe_addr,
		    sizeof c->probe_addr) == 0) {
			close(fd);
			agentd_probe_ready(c);
			return -1;
		} else if (errno == EINPROGRESS)
			c->probe_fd = fd;
		else {
			close(fd);
			agentd_probe_retry(c, now);
		}
	}
	if (c->probe_fd != -1)
		return (int)(c->probe_deadline_ms - now);
	return (int)((c->probe_next_ms < c->probe_deadline_ms ?
	    c->probe_next_ms : c->probe_deadline_ms) - now);
}

/* The probe's connect finished: accepted, or refused. */
static void
agentd_probe_event(struct conn *c, int64_t now)
{
	socklen_t	len = sizeof(int);
	int		err = 0;

	if (getsockopt(c->probe_fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err == 0)
		agentd_probe_ready(c);
	else
		agentd_probe_retry(c, now);
}

/* Read request bytes; dispatch once head and body are in. */
static void
agentd_conn_read(struct agentd *ad, struct conn *c, int64_t now)
{
	struct http_request_head	 head;
	const struct http_header	*accept;
	enum http_body_kind		 kind;
	uint64_t			 length;
	ssize_t				 n;
	size_t				 plen;
	int				 r;

	if (c->insize - c->inlen < 16384) {
		c->insize = c->insize == 0 ? 16384 : c->insize * 2;
		c->in = xrealloc(c->in, c->insize);
	}
	n = read(c->fd, c->in + c->inlen, c->insize - c->inlen);
	if (n == -1) {
		if (errno != EAGAIN && errno != EINTR)
			agentd_conn_close(ad, c, now);
		return;
	}
	if (n == 0) {
		agentd_conn_close(ad, c, now);
		return;
	}
	if (c->state == CONN_IDLE) {
		/* The spare is taken: dial the next one at once. */
		c->state = CONN_READING;
		c->since_ms = now;
		ad->dial_at_ms = now;
		ad->dial_backoff_ms = AGENTD_DIAL_MIN_MS;
	}
	c->inlen += (size_t)n;

	if (c->head_len == 0) {
		r = http_parse_request(c->in, c->inlen, &head);
		if (r == -2) {
			if (c->inlen > HTTP_MAX_HEAD_SIZE)
				agentd_error(c, 400, "bad_request",
				    "request head too large");
			return;
		}
		if (r < 0) {
			agentd_error(c, 400, "bad_request",
			    "malformed HTTP request");
			return;
		}
		if (http_request_body(&head, &kind, &length) == -1) {
			agentd_error(c, 400, "bad_request",
			    "bad request body framing");
			return;
		}
		if (kind == HTTP_BODY_CHUNKED) {
			agentd_error(c, 411, "bad_request",
			    "a Content-Length is required");
			return;
		}
		if (kind != HTTP_BODY_LENGTH)
			length = 0;
		if (length > AGENTD_MAX_BODY) {
			agentd_error(c, 413, "payload_too_large",
			    "request body over %d bytes", AGENTD_MAX_BODY);
			return;
		}
		c->head_len = (size_t)r;
		c->body_len = (size_t)length;
		accept = http_header_find(head.headers, head.nheaders,
		    "Accept");
		c->want_ndjson = accept != NULL && memmem(accept->value,
		    accept->value_len, "application/x-ndjson",
		    strlen("application/x-ndjson")) != NULL;
		c->method = xstrndup(head.method, head.method_len);
		/* The route is the path; the query goes to the handler. */
		for (plen = 0; plen < head.target_len &&
		    head.target[plen] != '?'; plen++)
			;
		c->path = xstrndup(head.target, plen);
		if (plen < head.target_len)
			c->query = xstrndup(head.target + plen + 1,
			    head.target_len - plen - 1);
	}
	if (c->inlen - c->head_len < c->body_len) {
		/* Make room for the whole body at once. */
		if (c->insize < c->head_len + c->body_len) {
			c->insize = c->head_len + c->body_len;
			c->in = xrealloc(c->in, c->insize);
		}
		return;
	}
	agentd_dispatch(ad, c);
}

/* Write what the socket takes of the answer; close when all is sent. */
static void
agentd_conn_write(struct conn *c)
{
	ssize_t	n;

	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			break;
		}
		c->outoff += (size_t)n;
	}
	close(c->fd);
	c->fd = -1;
	c->state = CONN_DEAD;
}

/* Reap every child that has exited, ours or orphaned. */
static void
agentd_reap(struct agentd *ad, int64_t now)
{
	struct conn	*c;
	pid_t		 pid;
	int		 status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (supervisor_reaped(&ad->sv, pid, status, now))
			continue;
		if (task_reaped(pid, status, now) || git_reaped(pid, status))
			continue;
		for (c = ad->conns; c != NULL; c = c->next) {
			if (c->job != NULL && exec_reaped(c->job, pid, status,
			    now))
				break;
			if (c->pty != NULL && pty_reaped(c->pty, pid, status))
				break;
		}
		if (c == NULL)
			log_debug("reaped orphan\tpid=%ld", (long)pid);
	}
}

/* Count the children we still wait for. */
static int
agentd_children(struct agentd *ad)
{
	struct conn	*c;
	int		 n = ad->sv.pid != 0;

	n += task_children();
	for (c = ad->conns; c != NULL; c = c->next) {
		if (c->job != NULL && exec_running(c->job))
			n++;
		if (c->pty != NULL && pty_running(c->pty))
			n++;
	}
	return n;
}

/* Signal the dev server's, the task's and every exec's process group. */
static void
agentd_kill_all(struct agentd *ad, int sig)
{
	struct conn	*c;

	supervisor_stop(&ad->sv, sig);
	task_kill(sig);
	for (c = ad->conns; c != NULL; c = c->next) {
		if (c->job != NULL)
			exec_kill(c->job, sig);
		if (c->pty != NULL)
			pty_kill(c->pty, sig);
	}
	/* As PID 1, also everything else in the container (orphans). */
	if (getpid() == 1)
		kill(-1, sig);
}

/* Begin the shutdown: SIGTERM to everything, SIGKILL after the grace. */
static void
agentd_stop(struct agentd *ad, int64_t now)
{
	struct conn	*c;

	if (ad->stopping)
		return;
	log_info("shutting down");
	ad->stopping = 1;
	ad->stop_deadline_ms = now + AGENTD_STOP_GRACE_MS;
	for (c = ad->conns; c != NULL; c = c->next) {
		if (c->state == CONN_IDLE || c->state == CONN_READING ||
		    (c->state == CONN_STREAM && c->stream == STREAM_DEVLOG))
			agentd_conn_close(ad, c, now);
	}
	agentd_kill_all(ad, SIGTERM);
}

/* The smaller of two poll timeouts, where -1 is infinite. */
static int
agentd_min_timeout(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* Parse the options into ad; returns -1 (usage printed) or an exit code. */
static int
agentd_options(struct agentd *ad, int argc, char **argv,
    const char **dev_command, struct sockaddr_in *probe, long long *log_max)
{
	static const struct option	 longopts[] = {
		{ "socket",		required_argument, NULL, 's' },
		{ "dev-command",	required_argument, NULL, 'd' },
		{ "dev-port",		required_argument, NULL, 'p' },
		{ "dev-host",		required_argument, NULL, 'H' },
		{ "workdir",		required_argument, NULL, 'w' },
		{ "state-dir",		required_argument, NULL, 'S' },
		{ "task-log-max",	required_argument, NULL, 'L' },
		{ "help",		no_argument,	   NULL, 'h' },
		{ NULL,			0,		   NULL, 0 }
	};
	struct sockaddr_un	 sun;
	const char		*errstr = NULL;
	long long		 port;
	int			 ch;

	memset(probe, 0, sizeof *probe);
	probe->sin_family = AF_INET;
	probe->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			ad->socket_path = optarg;
			break;
		case 'd':
			*dev_command = optarg;
			break;
		case 'p':
			port = strtonum_x(optarg, 1, 65535, &errstr);
			if (errstr != NULL) {
				fprintf(stderr, "agentd: --dev-port %s: %s\n",
				    optarg, errstr);
				return 2;
			}
			probe->sin_port = htons((uint16_t)port);
			break;
		case 'H':
			if (inet_pton(AF_INET, optarg,
			    &probe->sin_addr) != 1) {
				fprintf(stderr, "agentd: --dev-host %s: not an "
				    "IPv4 address\n", optarg);
				return 2;
			}
			break;
		case 'w':
			ad->workdir = optarg;
			break;
		case 'S':
			ad->state_dir = optarg;
			break;
		case 'L':
			*log_max = strtonum_x(optarg, 4096, 1LL << 30, &errstr);
			if (errstr != NULL) {
				fprintf(stderr, "agentd: --task-log-max %s: %s "
				    "(4096 .. 1073741824)\n", optarg, errstr);
				return 2;
			}
			break;
		case 'h':
			agentd_usage(stdout);
			return 0;
		default:
			agentd_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		agentd_usage(stderr);
		return 2;
	}
	if (strlen(ad->socket_path) >= sizeof sun.sun_path) {
		fprintf(stderr, "agentd: socket path too long: %s\n",
		    ad->socket_path);
		return 2;
	}
	return -1;
}

/* Grow the poll set to hold n more entries. */
static void
agentd_pfd_reserve(struct pollfd **pfd, struct slot **slots, size_t *cap,
    size_t n)
{
	if (n <= *cap)
		return;
	*cap = n + 16;
	*pfd = xreallocarray(*pfd, *cap, sizeof **pfd);
	*slots = xreallocarray(*slots, *cap, sizeof **slots);
}

/* Append one fd to the poll set. */
static void
agentd_pfd_add(struct pollfd *pfd, struct slot *slots, size_t *npfd, int fd,
    short events, enum slot_kind kind, struct conn *c)
{
	pfd[*npfd].fd = fd;
	pfd[*npfd].events = events;
	pfd[*npfd].revents = 0;
	slots[*npfd].kind = kind;
	slots[*npfd].conn = c;
	(*npfd)++;
}

/* Per connection: finish jobs, enforce deadlines, add its fds. */
static int
agentd_conn_poll(struct agentd *ad, struct conn *c, struct pollfd *pfd,
    struct slot *slots, size_t *npfd, int64_t now)
{
	int	timeout = -1, fds[2], k, nj, ptyfd;
	short	ev, pev;

	if (c->state == CONN_RUNNING) {
		timeout = agentd_min_timeout(timeout, exec_tick(c->job, now));
		if (exec_done(c->job)) {
			char *json = exec_result_json(c->job);

			exec_free(c->job);
			c->job = NULL;
			agentd_respond(c, 200, json);
			free(json);
		}
	}
	if (c->state == CONN_STREAM && c->stream == STREAM_EXEC &&
	    c->job != NULL)
		timeout = agentd_min_timeout(timeout, exec_tick(c->job, now));
	if (c->state == CONN_STREAM) {
		agentd_stream_fill(ad, c);
		if (c->stream_end && c->outoff == c->outlen) {
			agentd_conn_close(ad, c, now);
			return timeout;
		}
		/* All it read was skipped (seq <= after): read on at once. */
		if (c->stream == STREAM_TASK && c->outoff == c->outlen &&
		    task_reader_ready(c->reader))
			timeout = 0;
	}
	if (c->state == CONN_TERMINAL) {
		timeout = agentd_min_timeout(timeout, pty_tick(c->pty, now));
		if (pty_finished(c->pty)) {
			agentd_conn_close(ad, c, now);
			return timeout;
		}
	}
	if (c->state == CONN_PROBING)
		timeout = agentd_min_timeout(timeout,
		    agentd_probe_tick(c, now));
	if (c->state == CONN_READING) {
		if (now - c->since_ms >= AGENTD_READ_TIMEOUT_MS)
			agentd_error(c, 408, "bad_request",
			    "request not complete within %d ms",
			    AGENTD_READ_TIMEOUT_MS);
		else
			timeout = agentd_min_timeout(timeout,
			    (int)(c->since_ms + AGENTD_READ_TIMEOUT_MS - now));
	}
	switch (c->state) {
	case CONN_IDLE:
	case CONN_READING:
		ev = POLLIN;
		break;
	case CONN_RUNNING:
	case CONN_PROBING:
	case CONN_WAITING:
		/* Only to notice the daemon giving up. */
		ev = POLLRDHUP;
		break;
	case CONN_STREAM:
		ev = POLLRDHUP | (c->outoff < c->outlen ? POLLOUT : 0);
		break;
	case CONN_TERMINAL:
		pty_events(c->pty, &ev, &ptyfd, &pev);
		agentd_pfd_add(pfd, slots, npfd, c->fd, ev, SLOT_CONN, c);
		if (ptyfd != -1)
			agentd_pfd_add(pfd, slots, npfd, ptyfd, pev, SLOT_PTY,
			    c);
		return timeout;
	case CONN_WRITING:
		ev = POLLOUT;
		break;
	case CONN_DEAD:
	default:
		return timeout;
	}
	agentd_pfd_add(pfd, slots, npfd, c->fd, ev, SLOT_CONN, c);
	if (c->state == CONN_PROBING && c->probe_fd != -1)
		agentd_pfd_add(pfd, slots, npfd, c->probe_fd, POLLOUT,
		    SLOT_PROBE, c);
	/* A streaming exec's pipes wait while its reader is behind. */
	if (c->job != NULL && (c->state == CONN_RUNNING ||
	    (c->state == CONN_STREAM && c->outlen - c->outoff <
	    AGENTD_STREAM_HIGH))) {
		nj = exec_pollfds(c->job, fds);
		for (k = 0; k < nj; k++)
			agentd_pfd_add(pfd, slots, npfd, fds[k], POLLIN,
			    SLOT_EXEC, c);
	}
	return timeout;
}

/* One connection's socket is ready. */
static void
agentd_conn_event(struct agentd *ad, struct conn *c, short revents,
    int64_t now)
{
	switch (c->state) {
	case CONN_IDLE:
	case CONN_READING:
		agentd_conn_read(ad, c, now);
		break;
	case CONN_PROBING:
	case CONN_RUNNING:
	case CONN_WAITING:
		if (revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			if (c->state != CONN_WAITING)
				log_info("daemon gave up on a request, "
				    "stopping it");
			agentd_conn_close(ad, c, now);
		}
		break;
	case CONN_STREAM:
		/* A reader leaving changes nothing but this connection. */
		if (revents & (POLLRDHUP | POLLHUP | POLLERR))
			agentd_conn_close(ad, c, now);
		else if (revents & POLLOUT)
			agentd_stream_write(ad, c, now);
		break;
	case CONN_TERMINAL:
		agentd_terminal_event(ad, c, revents, now);
		break;
	case CONN_WRITING:
		agentd_conn_write(c);
		break;
	case CONN_DEAD:
		break;
	}
}

int
main(int argc, char **argv)
{
	struct agentd		 ad;
	struct pollfd		*pfd = NULL;
	struct slot		*slots = NULL;
	struct conn		*c;
	struct sockaddr_in	 probe;
	size_t			 npfd, cap = 0, i;
	const char		*dev_command = NULL;
	unsigned char		 sigbuf[64];
	long long		 log_max = AGENTD_TASK_LOG_MAX;
	int64_t			 now;
	int			 timeout, fds[64], k, nj, rc, token_ok;
	ssize_t			 n;

	/* Before anything can read it or inherit it. */
	token_ok = agentd_token_take();
	memset(&ad, 0, sizeof ad);
	ad.socket_path = AGENTD_DEFAULT_SOCKET;
	ad.workdir = AGENTD_DEFAULT_WORKDIR;
	ad.state_dir = AGENTD_DEFAULT_STATE_DIR;
	if ((rc = agentd_options(&ad, argc, argv, &dev_command, &probe,
	    &log_max)) != -1)
		return rc;

	log_init(LOG_LEVEL_INFO);
	if (!token_ok)
		log_warnx("no valid %s in the environment: the daemon will "
		    "refuse this agentd", AGENTD_TOKEN_ENV);
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
		log_warnx("cannot make agentd non-dumpable: the sandbox may "
		    "read its token");
	agentd_signals_init();
	now = time_mono_ms();
	supervisor_init(&ad.sv, dev_command, ad.workdir, &probe, now);
	task_init(ad.workdir, ad.state_dir, (size_t)log_max);
	ad.dial_backoff_ms = AGENTD_DIAL_MIN_MS;
	ad.dial_at_ms = now;
	log_info("agentd started\tpid=%ld socket=%s workdir=%s state_dir=%s",
	    (long)getpid(), ad.socket_path, ad.workdir, ad.state_dir);

	for (;;) {
		now = time_mono_ms();
		timeout = -1;

		if (ad.stopping) {
			if (agentd_children(&ad) == 0) {
				/* Answers to killed execs still go out. */
				for (c = ad.conns; c != NULL; c = c->next) {
					if (c->state == CONN_RUNNING ||
					    c->state == CONN_WRITING ||
					    c->state == CONN_STREAM)
						break;
				}
				if (c == NULL || now >= ad.stop_deadline_ms +
				    AGENTD_KILL_WAIT_MS)
					break;
			}
			if (now >= ad.stop_deadline_ms && !ad.killed) {
				log_info("grace over, killing");
				agentd_kill_all(&ad, SIGKILL);
				ad.killed = 1;
			}
			if (now >= ad.stop_deadline_ms + AGENTD_KILL_WAIT_MS)
				break;
			timeout = agentd_min_timeout(timeout, (int)((ad.killed ?
			    ad.stop_deadline_ms + AGENTD_KILL_WAIT_MS :
			    ad.stop_deadline_ms) - now));
		} else {
			if (!agentd_has_spare(&ad) &&
			    ad.nconns < AGENTD_MAX_CONNS) {
				if (now >= ad.dial_at_ms)
					agentd_dial(&ad, now);
				if (!agentd_has_spare(&ad))
					timeout = agentd_min_timeout(timeout,
					    (int)(ad.dial_at_ms - now));
			}
			timeout = agentd_min_timeout(timeout,
			    supervisor_tick(&ad.sv, now));
		}
		timeout = agentd_min_timeout(timeout, task_tick(now));
		timeout = agentd_min_timeout(timeout, git_dispatch());

		/*
		 * The poll set: the signal pipe; per connection its socket
		 * and up to two pipes, a probe or a PTY; the task's pipes,
		 * the dev server's output and probe; git results.
		 */
		agentd_pfd_reserve(&pfd, &slots, &cap,
		    8 + 3 * (size_t)ad.nconns + nitems(fds));
		npfd = 0;
		agentd_pfd_add(pfd, slots, &npfd, agentd_sigpipe[0], POLLIN,
		    SLOT_SIGNAL, NULL);
		for (c = ad.conns; c != NULL; c = c->next)
			timeout = agentd_min_timeout(timeout,
			    agentd_conn_poll(&ad, c, pfd, slots, &npfd, now));
		nj = task_pollfds(fds);
		for (k = 0; k < nj; k++)
			agentd_pfd_add(pfd, slots, &npfd, fds[k], POLLIN,
			    SLOT_TASK, NULL);
		if (ad.sv.out_fd != -1)
			agentd_pfd_add(pfd, slots, &npfd, ad.sv.out_fd, POLLIN,
			    SLOT_DEV_OUT, NULL);
		if (ad.sv.probe_fd != -1)
			agentd_pfd_add(pfd, slots, &npfd, ad.sv.probe_fd,
			    POLLOUT, SLOT_DEV_PROBE, NULL);
		nj = git_pollfds(fds, (int)nitems(fds));
		for (k = 0; k < nj; k++)
			agentd_pfd_add(pfd, slots, &npfd, fds[k], POLLIN,
			    SLOT_GIT, NULL);
		if (timeout < 0 && ad.stopping)
			timeout = 0;

		if (poll(pfd, npfd, timeout) == -1) {
			if (errno != EINTR)
				fatal("poll");
			continue;
		}
		now = time_mono_ms();

		if (pfd[0].revents & POLLIN) {
			while ((n = read(agentd_sigpipe[0], sigbuf,
			    sizeof sigbuf)) > 0) {
				for (i = 0; i < (size_t)n; i++) {
					if (sigbuf[i] == SIGTERM ||
					    sigbuf[i] == SIGINT)
						ad.exit_requested = 1;
					else if (sigbuf[i] == SIGHUP)
						log_info("SIGHUP ignored");
				}
			}
		}

		for (i = 1; i < npfd; i++) {
			if (pfd[i].revents == 0)
				continue;
			c = slots[i].conn;
			if (c != NULL && c->state == CONN_DEAD)
				continue;
			switch (slots[i].kind) {
			case SLOT_SIGNAL:
				break;
			case SLOT_CONN:
				agentd_conn_event(&ad, c, pfd[i].revents, now);
				break;
			case SLOT_EXEC:
				if (c->job != NULL)
					exec_read(c->job, pfd[i].fd);
				break;
			case SLOT_PROBE:
				if (c->state == CONN_PROBING &&
				    c->probe_fd == pfd[i].fd)
					agentd_probe_event(c, now);
				break;
			case SLOT_PTY:
				if (c->pty != NULL)
					pty_master_event(c->pty,
					    pfd[i].revents);
				break;
			case SLOT_TASK:
				task_read(pfd[i].fd);
				break;
			case SLOT_DEV_OUT:
				supervisor_read(&ad.sv);
				break;
			case SLOT_DEV_PROBE:
				supervisor_probe_event(&ad.sv, now);
				break;
			case SLOT_GIT:
				git_read(pfd[i].fd);
				break;
			}
		}
		/*
		 * Reap after reading: a child's last output is in its pipes
		 * before it is seen gone. Cheap, and no SIGCHLD is missed.
		 */
		agentd_reap(&ad, now);
		if (ad.exit_requested)
			agentd_stop(&ad, now);
		agentd_sweep(&ad);
	}

	/* Whatever is left: the kernel kills the rest when PID 1 exits. */
	agentd_kill_all(&ad, SIGKILL);
	agentd_reap(&ad, time_mono_ms());
	for (c = ad.conns; c != NULL; c = c->next) {
		if (c->state != CONN_DEAD)
			agentd_conn_close(&ad, c, now);
	}
	agentd_sweep(&ad);
	task_free_all();
	supervisor_free(&ad.sv);
	free(pfd);
	free(slots);
	log_info("agentd exiting");
	return 0;
}
