/*
 * agentd — the supervisor inside every sandbox. A static binary the daemon
 * bind-mounts read-only at /.sandboxd/agentd and runs as the container's
 * entrypoint, as the sandbox user.
 *
 * Rendezvous: the daemon listens on /run/sandboxd/agentd.sock (a host
 * directory mounted read-only, so the sandbox cannot swap the socket for a
 * symlink). agentd connects out and always keeps one spare idle connection;
 * the daemon writes one HTTP/1.1 request on a connection, agentd answers it
 * with Content-Length and closes it, and dials a new spare as soon as a
 * request arrives. So requests run concurrently, and the daemon knows the
 * instant agentd is up.
 *
 * Routes (bodies are JSON):
 *   GET  /health  -> 200 {"status":"ok","dev_command":..,"dev_pid":N,
 *                         "dev_restarts":N}
 *   POST /exec    {"cmd":[..],"cwd":"/workspace","env":{..},"timeout_s":60,
 *                  "max_output":1048576}
 *                 -> 200 {"exit_code":N,"stdout":"..","stderr":"..",
 *                         "timed_out":false,"truncated":false}
 *   errors        -> 4xx/5xx {"error":{"code":"..","message":".."}}
 *
 * Usage: agentd [--socket PATH] [--dev-command CMD] [--workdir DIR]
 *
 * docs/agentd.md describes the behaviour in full.
 */
#ifndef SBX_AGENTD_H
#define SBX_AGENTD_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

struct json_object;

#define AGENTD_DEFAULT_SOCKET	"/run/sandboxd/agentd.sock"
#define AGENTD_DEFAULT_WORKDIR	"/workspace"
#define AGENTD_MAX_BODY		(4 * 1024 * 1024)
#define AGENTD_EXEC_MAX_OUTPUT	(16 * 1024 * 1024)
#define AGENTD_EXEC_DEF_OUTPUT	(1024 * 1024)
#define AGENTD_EXEC_MAX_TIMEOUT	3600
#define AGENTD_EXEC_DEF_TIMEOUT	60

/* agentd/agentd.c */
/*
 * fork() for a child that will exec: the child starts with every signal
 * disposition agentd changed back at its default and an empty signal mask,
 * so it neither runs agentd's handlers nor inherits ignored SIGPIPE.
 */
pid_t	agentd_fork(void);

/* agentd/supervise.c — the dev server, restarted with backoff */
struct supervisor {
	const char	*command;	/* run with /bin/sh -c; NULL: none */
	const char	*workdir;
	pid_t		 pid;		/* 0 when not running */
	int		 restarts;
	int		 starts;
	int64_t		 started_ms;	/* monotonic, of the current run */
	int64_t		 next_start_ms;	/* monotonic; 0: not scheduled */
	int		 backoff_ms;
	int		 stopping;	/* shutting down: never start again */
};
void	supervisor_init(struct supervisor *, const char *command,
	    const char *workdir, int64_t now_ms);
/* Start the command if it is due; returns ms until the next due time, or -1. */
int	supervisor_tick(struct supervisor *, int64_t now_ms);
/* A child was reaped; returns 1 if it was the dev server. */
int	supervisor_reaped(struct supervisor *, pid_t, int status,
	    int64_t now_ms);
/* Stop restarting and send sig to the dev server's process group. */
void	supervisor_stop(struct supervisor *, int sig);

/* agentd/exec.c — one exec request, run to completion */
struct exec_job;
/*
 * Validate a parsed /exec request and start its command in a new session
 * (its own process group). cwd defaults to workdir. Returns NULL with *cause
 * set (malloc'd) and *status the HTTP status to answer (400 for a bad
 * request, 503 when no pipe or process could be made). A command that
 * cannot be executed is not an error here: it exits 127 with a message on
 * its stderr.
 */
struct exec_job	*exec_start(struct json_object *req, const char *workdir,
		    char **cause, int *status);
/* fds to poll for this job (stdout/stderr pipes still open); returns count. */
int	 exec_pollfds(struct exec_job *, int fds[2]);
/* Read what is ready on fd (one of exec_pollfds); returns 0. */
int	 exec_read(struct exec_job *, int fd);
/* A child was reaped; returns 1 if it was this job's. */
int	 exec_reaped(struct exec_job *, pid_t, int status, int64_t now_ms);
/*
 * Enforce the deadline (kill the process group) and the grace for pipes
 * held open by background processes after the command exited; returns ms
 * to the next due time or -1.
 */
int	 exec_tick(struct exec_job *, int64_t now_ms);
/* Send sig to the job's process group (shutdown). */
void	 exec_kill(struct exec_job *, int sig);
/* 1 when both pipes are closed and the child reaped. */
int	 exec_done(struct exec_job *);
/* 1 while the child has not been reaped. */
int	 exec_running(struct exec_job *);
/* The response JSON text (malloc'd); output is made valid UTF-8. */
char	*exec_result_json(struct exec_job *);
void	 exec_free(struct exec_job *);
/*
 * Copy buf to a malloc'd string with every byte that is not part of a
 * well-formed UTF-8 sequence replaced by U+FFFD; *outlen is its length.
 */
char	*exec_utf8_sanitize(const char *buf, size_t len, size_t *outlen);

#endif /* SBX_AGENTD_H */
