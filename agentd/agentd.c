/*
 * agentd: PID 1 of every sandbox. One poll(2) loop that
 *  - keeps one spare idle connection to the daemon's rendezvous socket, each
 *    connection carrying one HTTP/1.1 request (agentd.h has the protocol);
 *  - runs /exec commands, many at once, each to completion;
 *  - supervises the dev server;
 *  - reaps every child, orphans included, as an init must;
 *  - on SIGTERM or SIGINT stops everything within 3 s and exits 0.
 * Nothing here blocks: sockets and pipes are non-blocking and signals arrive
 * through a self-pipe.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

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

enum conn_state {
	CONN_IDLE,	/* the spare: waiting for a request */
	CONN_READING,	/* request head and body arriving */
	CONN_RUNNING,	/* an exec job is running for it */
	CONN_PROBING,	/* /wait-port: trying the port until it accepts */
	CONN_WRITING,	/* sending the answer, then close */
	CONN_DEAD	/* closed; freed at the end of the loop turn */
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
	struct exec_job	*job;
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
struct slot {
	struct conn	*conn;
	int		 pipe;		/* 1: one of conn->job's pipes, 2: a probe */
};

struct agentd {
	const char		*socket_path;
	const char		*workdir;
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
static const int agentd_signals[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP,
    SIGPIPE };

static void	agentd_usage(FILE *);
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
static void
agentd_usage(FILE *f)
{
	fprintf(f,
	    "usage: agentd [--socket PATH] [--dev-command CMD] "
	    "[--workdir DIR]\n"
	    "  --socket PATH       daemon rendezvous socket (default %s)\n"
	    "  --dev-command CMD   dev server, run with /bin/sh -c and "
	    "restarted when it dies\n"
	    "  --workdir DIR       dev server and exec directory (default "
	    "%s)\n"
	    "  --help              this text\n",
	    AGENTD_DEFAULT_SOCKET, AGENTD_DEFAULT_WORKDIR);
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
	agentd_respond(c, 200, json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
}

/* POST /exec: parse the body and start the job. */
static void
agentd_exec(struct agentd *ad, struct conn *c)
{
	struct json_tokener	*tok;
	struct json_object	*req;
	enum json_tokener_error	 jerr;
	char			*cause;
	int			 status;

	if (ad->stopping) {
		agentd_error(c, 503, "unavailable", "agentd is shutting down");
		return;
	}
	tok = json_tokener_new();
	req = json_tokener_parse_ex(tok, c->in + c->head_len,
	    (int)c->body_len);
	jerr = json_tokener_get_error(tok);
	/* Trailing bytes after the value are as wrong as a broken value. */
	if (req == NULL || jerr != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != c->body_len) {
		if (jerr == json_tokener_continue || jerr == json_tokener_success)
			agentd_error(c, 400, "bad_request",
			    "invalid JSON: %s", c->body_len == 0 ?
			    "empty body" : "unexpected end or trailing data");
		else
			agentd_error(c, 400, "bad_request", "invalid JSON: %s",
			    json_tokener_error_desc(jerr));
		json_object_put(req);
		json_tokener_free(tok);
		return;
	}
	json_tokener_free(tok);

	c->job = exec_start(req, ad->workdir, &cause, &status);
	json_object_put(req);
	if (c->job == NULL) {
		agentd_error(c, status, status == 400 ? "bad_request" :
		    "unavailable", "%s", cause);
		free(cause);
		return;
	}
	c->state = CONN_RUNNING;
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
	} else
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
		for (c = ad->conns; c != NULL; c = c->next) {
			if (c->job != NULL && exec_reaped(c->job, pid, status,
			    now))
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

	for (c = ad->conns; c != NULL; c = c->next) {
		if (c->job != NULL && exec_running(c->job))
			n++;
	}
	return n;
}

/* Signal the dev server's and every exec's process group. */
static void
agentd_kill_all(struct agentd *ad, int sig)
{
	struct conn	*c;

	supervisor_stop(&ad->sv, sig);
	for (c = ad->conns; c != NULL; c = c->next) {
		if (c->job != NULL)
			exec_kill(c->job, sig);
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
		if (c->state == CONN_IDLE || c->state == CONN_READING)
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

int
main(int argc, char **argv)
{
	static const struct option	 longopts[] = {
		{ "socket",		required_argument, NULL, 's' },
		{ "dev-command",	required_argument, NULL, 'd' },
		{ "workdir",		required_argument, NULL, 'w' },
		{ "help",		no_argument,	   NULL, 'h' },
		{ NULL,			0,		   NULL, 0 }
	};
	struct agentd		 ad;
	struct pollfd		*pfd = NULL;
	struct slot		*slots = NULL;
	struct conn		*c;
	struct sockaddr_un	 sun;
	size_t			 npfd, cap = 0, i;
	const char		*dev_command = NULL;
	unsigned char		 sigbuf[64];
	int64_t			 now;
	int			 ch, timeout, fds[2], k, nj;
	ssize_t			 n;

	memset(&ad, 0, sizeof ad);
	ad.socket_path = AGENTD_DEFAULT_SOCKET;
	ad.workdir = AGENTD_DEFAULT_WORKDIR;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			ad.socket_path = optarg;
			break;
		case 'd':
			dev_command = optarg;
			break;
		case 'w':
			ad.workdir = optarg;
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
	if (strlen(ad.socket_path) >= sizeof sun.sun_path) {
		fprintf(stderr, "agentd: socket path too long: %s\n",
		    ad.socket_path);
		return 2;
	}

	log_init(LOG_LEVEL_INFO);
	agentd_signals_init();
	now = time_mono_ms();
	supervisor_init(&ad.sv, dev_command, ad.workdir, now);
	ad.dial_backoff_ms = AGENTD_DIAL_MIN_MS;
	ad.dial_at_ms = now;
	log_info("agentd started\tpid=%ld socket=%s workdir=%s",
	    (long)getpid(), ad.socket_path, ad.workdir);

	for (;;) {
		now = time_mono_ms();
		timeout = -1;

		if (ad.stopping) {
			if (agentd_children(&ad) == 0) {
				/* Answers to killed execs still go out. */
				for (c = ad.conns; c != NULL; c = c->next) {
					if (c->state == CONN_RUNNING ||
					    c->state == CONN_WRITING)
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

		/* Finish jobs, enforce deadlines, build the poll set. */
		/* A running exec polls its socket and two pipes. */
		npfd = 1 + 3 * (size_t)ad.nconns;
		if (npfd > cap) {
			cap = npfd;
			pfd = xreallocarray(pfd, cap, sizeof *pfd);
			slots = xreallocarray(slots, cap, sizeof *slots);
		}
		pfd[0].fd = agentd_sigpipe[0];
		pfd[0].events = POLLIN;
		slots[0].conn = NULL;
		npfd = 1;
		for (c = ad.conns; c != NULL; c = c->next) {
			if (c->state == CONN_RUNNING) {
				timeout = agentd_min_timeout(timeout,
				    exec_tick(c->job, now));
				if (exec_done(c->job)) {
					char *json = exec_result_json(c->job);

					exec_free(c->job);
					c->job = NULL;
					agentd_respond(c, 200, json);
					free(json);
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
					    (int)(c->since_ms +
					    AGENTD_READ_TIMEOUT_MS - now));
			}
			switch (c->state) {
			case CONN_IDLE:
			case CONN_READING:
				pfd[npfd].events = POLLIN;
				break;
			case CONN_RUNNING:
			case CONN_PROBING:
				/* Only to notice the daemon giving up. */
				pfd[npfd].events = POLLRDHUP;
				break;
			case CONN_WRITING:
				pfd[npfd].events = POLLOUT;
				break;
			case CONN_DEAD:
				continue;
			}
			pfd[npfd].fd = c->fd;
			slots[npfd].conn = c;
			slots[npfd].pipe = 0;
			npfd++;
			if (c->state == CONN_PROBING && c->probe_fd != -1) {
				pfd[npfd].fd = c->probe_fd;
				pfd[npfd].events = POLLOUT;
				slots[npfd].conn = c;
				slots[npfd].pipe = 2;
				npfd++;
			}
			if (c->state != CONN_RUNNING)
				continue;
			nj = exec_pollfds(c->job, fds);
			for (k = 0; k < nj; k++) {
				pfd[npfd].fd = fds[k];
				pfd[npfd].events = POLLIN;
				slots[npfd].conn = c;
				slots[npfd].pipe = 1;
				npfd++;
			}
		}
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
		/* Reap every turn: cheap, and no SIGCHLD can be missed. */
		agentd_reap(&ad, now);

		for (i = 1; i < npfd; i++) {
			if (pfd[i].revents == 0)
				continue;
			c = slots[i].conn;
			if (c->state == CONN_DEAD)
				continue;
			if (slots[i].pipe == 2) {
				if (c->state == CONN_PROBING &&
				    c->probe_fd == pfd[i].fd)
					agentd_probe_event(c, now);
				continue;
			}
			if (slots[i].pipe) {
				if (c->job != NULL)
					exec_read(c->job, pfd[i].fd);
				continue;
			}
			switch (c->state) {
			case CONN_IDLE:
			case CONN_READING:
				agentd_conn_read(&ad, c, now);
				break;
			case CONN_PROBING:
			case CONN_RUNNING:
				if (pfd[i].revents & (POLLRDHUP | POLLHUP |
				    POLLERR)) {
					log_info("daemon gave up on an exec, "
					    "killing it");
					agentd_conn_close(&ad, c, now);
				}
				break;
			case CONN_WRITING:
				agentd_conn_write(c);
				break;
			case CONN_DEAD:
				break;
			}
		}
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
	free(pfd);
	free(slots);
	log_info("agentd exiting");
	return 0;
}
