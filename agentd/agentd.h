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
 */
#ifndef SBX_AGENTD_H
#define SBX_AGENTD_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

struct json_object;

/* agentd/supervise.c — the dev server, restarted with backoff */
struct supervisor {
	const char	*command;	/* run with /bin/sh -c; NULL: none */
	const char	*workdir;
	pid_t		 pid;		/* 0 when not running */
	int		 restarts;
	int64_t		 started_ms;	/* monotonic, of the current run */
	int64_t		 next_start_ms;	/* monotonic; 0: not scheduled */
	int		 backoff_ms;
};
void	supervisor_init(struct supervisor *, const char *command,
	    const char *workdir);
/* Start the command if it is due; returns ms until the next due time, or -1. */
int	supervisor_tick(struct supervisor *, int64_t now_ms);
/* A child was reaped; returns 1 if it was the dev server. */
int	supervisor_reaped(struct supervisor *, pid_t, int status,
	    int64_t now_ms);

/* agentd/exec.c — one exec request, run to completion */
struct exec_job;
/*
 * Start a command from a parsed /exec request. Returns NULL with *err set
 * (static text) when the request is invalid.
 */
struct exec_job	*exec_start(struct json_object *req, const char **err);
/* fds to poll for this job (stdout/stderr pipes still open). */
int	 exec_pollfds(struct exec_job *, int fds[2]);
/* Read what is ready on fd; returns 0. */
int	 exec_read(struct exec_job *, int fd);
/* A child was reaped; returns 1 if it was this job's. */
int	 exec_reaped(struct exec_job *, pid_t, int status);
/* Kill the job if its deadline passed; returns ms to deadline or -1. */
int	 exec_tick(struct exec_job *, int64_t now_ms);
/* 1 when both pipes are closed and the child reaped. */
int	 exec_done(struct exec_job *);
/* The response JSON text (malloc'd). */
char	*exec_result_json(struct exec_job *);
void	 exec_free(struct exec_job *);

#endif /* SBX_AGENTD_H */
