/*
 * agentd — the supervisor inside every sandbox. A static binary the daemon
 * bind-mounts read-only at /.sandboxd/agentd and runs as the container's
 * entrypoint, as the sandbox user.
 *
 * Rendezvous: the daemon listens on /run/sandboxd/agentd.sock (a host
 * directory mounted read-only, so the sandbox cannot swap the socket for a
 * symlink). agentd connects out and always keeps one spare idle connection,
 * each opened with the hello (AGENTD_HELLO_PREFIX below) and its token;
 * the daemon writes one HTTP/1.1 request on a connection, agentd answers it
 * with Content-Length and closes it, and dials a new spare as soon as a
 * request arrives. So requests run concurrently, and the daemon knows the
 * instant agentd is up.
 *
 * Routes (bodies are JSON; "streaming" answers have no Content-Length and
 * run until agentd closes, one JSON object a line):
 *   GET  /health, POST /exec (JSON, or streaming with
 *        Accept: application/x-ndjson), GET /wait-port
 *   POST /tasks, GET /tasks, GET /tasks/<tid>, GET /tasks/<tid>/events
 *        (streaming), POST /tasks/<tid>/cancel, POST /tasks/<tid>/revert
 *   GET /dev, GET /dev/logs[?follow=1] (streaming text), POST /dev/restart
 *   GET /terminal -> 101, then framed PTY data both ways
 *   errors -> 4xx/5xx {"error":{"code":"..","message":".."}}
 *
 * Usage: agentd [--socket PATH] [--dev-command CMD] [--dev-port N]
 *               [--dev-host IP] [--workdir DIR] [--state-dir DIR]
 *               [--task-log-max BYTES]
 *
 * docs/agentd.md describes the behaviour in full.
 */
#ifndef SBX_AGENTD_H
#define SBX_AGENTD_H

#include <sys/types.h>
#include <netinet/in.h>

#include <stddef.h>
#include <stdint.h>

struct json_object;

#define AGENTD_DEFAULT_SOCKET	"/run/sandboxd/agentd.sock"
/*
 * Who may answer for a sandbox: every connection agentd opens starts with
 * the hello line AGENTD_HELLO_PREFIX <token> "\n", the token being the 64
 * lowercase hex digits the daemon put in the container's env as
 * AGENTD_TOKEN_ENV. agentd takes it out of its environment before anything
 * else runs and makes itself non-dumpable, so no other process of the
 * sandbox (same uid) can read it from /proc/1/environ or agentd's memory;
 * the daemon sends requests only on connections whose hello matched.
 */
#define AGENTD_TOKEN_ENV	"SANDBOXD_AGENTD_TOKEN"
#define AGENTD_TOKEN_LEN	64
#define AGENTD_HELLO_PREFIX	"sandboxd-agentd/1 "
#define AGENTD_HELLO_LEN	(sizeof AGENTD_HELLO_PREFIX - 1 + \
				    AGENTD_TOKEN_LEN + 1)
#define AGENTD_DEFAULT_WORKDIR	"/workspace"
#define AGENTD_MAX_BODY		(4 * 1024 * 1024)
#define AGENTD_EXEC_MAX_OUTPUT	(16 * 1024 * 1024)
#define AGENTD_EXEC_DEF_OUTPUT	(1024 * 1024)
#define AGENTD_EXEC_MAX_TIMEOUT	3600
#define AGENTD_EXEC_DEF_TIMEOUT	60
#define AGENTD_DEFAULT_STATE_DIR "/tmp/agentd"
#define AGENTD_TASK_LOG_MAX	(64 * 1024 * 1024)
/* A streaming answer stops taking more from its source past this. */
#define AGENTD_STREAM_HIGH	(1024 * 1024)
/* An output line longer than this is cut into pieces of this size. */
#define AGENTD_LINE_MAX		65536

/* agentd/agentd.c */
/*
 * fork() for a child that will exec: the child starts with every signal
 * disposition agentd changed back at its default and an empty signal mask,
 * so it neither runs agentd's handlers nor inherits ignored SIGPIPE.
 */
pid_t	agentd_fork(void);

/* agentd/supervise.c — the dev server, restarted with backoff */
enum supervisor_state {
	SV_NONE,	/* no dev command */
	SV_STARTING,	/* running, its port does not accept yet */
	SV_READY,	/* running, the port accepted (or no port to wait for) */
	SV_CRASHED,	/* exited by itself, next start scheduled */
	SV_RESTARTING	/* /dev/restart: stopping it, starts again when gone */
};
#define SUPERVISOR_RING_SIZE	(256 * 1024)
struct supervisor {
	const char		*command;	/* run with /bin/sh -c; NULL: none */
	const char		*workdir;
	struct sockaddr_in	 probe_addr;	/* port 0: none */
	enum supervisor_state	 state;
	pid_t			 pid;		/* 0 when not running */
	int			 restarts;
	int			 starts;
	int			 last_status;	/* wait status; -1: none yet */
	int64_t			 started_ms;	/* monotonic, of the current run */
	int64_t			 next_start_ms;	/* monotonic; 0: not scheduled */
	int64_t			 kill_ms;	/* restarting: SIGKILL due */
	int			 backoff_ms;
	int			 stopping;	/* shutting down: never start again */
	int			 out_fd;	/* its stdout+stderr, or -1 */
	/* readiness probe */
	int			 probe_fd;	/* a connect in progress, or -1 */
	int			 probe_backoff_ms;
	int64_t			 probe_next_ms;
	/* ring of recent output; total counts every byte ever read */
	char			*ring;
	uint64_t		 ring_total;
};
void	supervisor_init(struct supervisor *, const char *command,
	    const char *workdir, const struct sockaddr_in *probe,
	    int64_t now_ms);
/* Start the command or probe if due; returns ms to the next due time, or -1. */
int	supervisor_tick(struct supervisor *, int64_t now_ms);
/* A child was reaped; returns 1 if it was the dev server. */
int	supervisor_reaped(struct supervisor *, pid_t, int status,
	    int64_t now_ms);
/* Stop restarting and send sig to the dev server's process group. */
void	supervisor_stop(struct supervisor *, int sig);
/* Free the ring and close the pipes (at exit). */
void	supervisor_free(struct supervisor *);
/* POST /dev/restart; -1 without a dev command. */
int	supervisor_restart(struct supervisor *, int64_t now_ms);
/* Read its output (out_fd ready) into the ring and onto stderr. */
void	supervisor_read(struct supervisor *);
/* The probe's connect finished (probe_fd writable). */
void	supervisor_probe_event(struct supervisor *, int64_t now_ms);
const char *supervisor_state_name(enum supervisor_state);
/* The GET /dev object. */
struct json_object *supervisor_json(struct supervisor *);
/*
 * Copy the ring's bytes from absolute offset *pos (moved up to the oldest
 * byte held if it fell behind) into a malloc'd buffer; returns its length
 * (0: nothing new, *out NULL). from_line: start at a line boundary if the
 * ring wrapped.
 */
size_t	supervisor_ring_copy(struct supervisor *, uint64_t *pos,
	    size_t max, int from_line, char **out);

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
/*
 * What exec_start checks before it starts anything, on its own (so a
 * fuzz target can drive it): a good request fills spec (argv and envp
 * NULL-terminated, cwd an existing directory, the limits in range) and
 * returns 0; a bad one returns -1 with *cause (malloc'd).
 */
struct exec_spec {
	char		**argv;
	char		**envp;
	char		 *cwd;
	long long	  timeout_s;
	long long	  max_output;
};
int	 exec_parse(struct json_object *req, const char *workdir,
	    struct exec_spec *spec, char **cause);
void	 exec_spec_clear(struct exec_spec *);
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
/* Streaming mode: output is taken as ndjson output events as it comes. */
void	 exec_set_stream(struct exec_job *);
/*
 * Streaming mode: append the output events for the complete lines read so
 * far (all of it once a pipe is closed) and, when done, the exit event, to
 * *buf (grown as needed, *len updated). Returns 1 once the exit event was
 * added.
 */
int	 exec_stream_take(struct exec_job *, char **buf, size_t *len);
/* agentd's environment with env (an object of strings) merged over it. */
char	**exec_make_env(struct json_object *env, char **cause);
void	 exec_free_strv(char **);
/* In a forked child: stdio, new session, cwd, exec; never returns. */
void	 exec_child(char **argv, char **envp, const char *cwd, int outfd,
	    int errfd) SBX_NORETURN;
/* Validate an optional integer member; -1 with *cause. */
int	 exec_get_int(struct json_object *, const char *, long long,
	    long long, long long, long long *, char **);
/* exit_code and signal (or -1) of a wait status. */
void	 exec_status(int status, int *code, int *sig);

/* agentd/lines.c — splitting output into lines */
struct lines {
	char	*buf;
	size_t	 len;
	size_t	 size;
};
typedef void (*lines_cb)(void *, const char *, size_t);
/* Append bytes; cb gets each complete line (with its \n) or 64 KiB piece. */
void	lines_feed(struct lines *, const char *, size_t, lines_cb, void *);
/* The stream ended: cb gets what is left, if anything. */
void	lines_flush(struct lines *, lines_cb, void *);
void	lines_free(struct lines *);

/* agentd/git.c — git checkpoints, run in a child off the loop */
enum git_op_kind {
	GIT_CHECKPOINT,	/* -> commit (and the index kept for GIT_CHANGED) */
	GIT_CHANGED,	/* checkpoint vs workspace -> files */
	GIT_REVERT	/* workspace back to checkpoint -> files */
};
struct git_op;
/* result: {"ok":true,"commit":..,"files":[..]} or {"ok":false,"error":..} */
typedef void (*git_done_cb)(struct json_object *result, void *arg);
void	git_init(const char *workdir, const char *state_dir);
/* Start an op in a child; NULL with *cause. */
struct git_op *git_start(enum git_op_kind, const char *tid,
	    const char *commit, git_done_cb, void *arg, char **cause);
/* The caller went away: no callback will come. */
void	git_cancel(struct git_op *);
/* Fds to poll (POLLIN); returns count written (at most max). */
int	git_pollfds(int *fds, int max);
void	git_read(int fd);
int	git_reaped(pid_t, int status);
/* Call the callbacks of finished ops and free them. */
int	git_dispatch(void);
int	git_running(void);

/* agentd/task.c — tasks: one process at a time, events in a file */
struct task;
struct task_reader;
/* A request waiting for its answer (the checkpoint or revert runs first). */
struct task_start;
typedef void (*task_answer_cb)(int status, const char *body, void *arg);
/* 0, or -1 if the state directory cannot be made (tasks then fail 503). */
int	task_init(const char *workdir, const char *state_dir, size_t log_max);
/*
 * What task_create checks of a POST /tasks body, without creating the
 * task or starting anything: the argv it would run (NULL-terminated, the
 * caller frees it with exec_free_strv), or NULL with *cause (malloc'd).
 * After task_init.
 */
char	**task_check(struct json_object *req, char **cause);
/*
 * POST /tasks. Returns 0 when cb will be called (maybe already was: then
 * *pending is NULL), or -1 with *status, *code (static) and *cause
 * (malloc'd) for a request refused at once.
 */
int	task_create(struct json_object *req, task_answer_cb, void *arg,
	    struct task_start **pending, int *status, const char **code,
	    char **cause);
/* POST /tasks/<tid>/revert (t may be NULL when commit is given); same. */
int	task_revert(struct task *, const char *commit, task_answer_cb,
	    void *arg, struct task_start **pending, int *status,
	    const char **code, char **cause);
/* The requester went away: the work goes on, no answer is made. */
void	task_start_detach(struct task_start *);
struct task *task_find(const char *tid);
/* The task object (GET /tasks/<tid>), or {"tasks":[..]}. */
struct json_object *task_json(struct task *);
struct json_object *task_list_json(void);
/* POST /tasks/<tid>/cancel. */
void	task_cancel(struct task *, int grace_ms, int64_t now_ms);
/* 1 while a task is starting, running or finishing. */
int	task_busy(void);
/* A reader of a task's events after seq `after`. */
struct task_reader *task_reader_new(struct task *, uint64_t after);
/*
 * Append the next whole event lines to *buf (about max bytes at most).
 * Returns 1 once the reader has had everything (the exit event), else 0.
 */
int	task_reader_fill(struct task_reader *, char **buf, size_t *len,
	    size_t max);
/* 1 if task_reader_fill has something to give now. */
int	task_reader_ready(struct task_reader *);
void	task_reader_free(struct task_reader *);
/* Fds of the running task's pipes; returns count. */
int	task_pollfds(int fds[2]);
void	task_read(int fd);
int	task_reaped(pid_t, int status, int64_t now_ms);
/* Deadlines (timeout, kill after grace, pipe grace); ms to next or -1. */
int	task_tick(int64_t now_ms);
/* Signal the running task's process group (shutdown). */
void	task_kill(int sig);
/* 1 while the task's process has not been reaped. */
int	task_children(void);
/* Free every task (at exit; the event files stay). */
void	task_free_all(void);

/* agentd/frame.c — the terminal's frames */
#define PTY_FRAME_DATA		0
#define PTY_FRAME_RESIZE	1
#define PTY_FRAME_EXIT		2
#define PTY_FRAME_MAX		(1024 * 1024)	/* payload bytes */
#define PTY_FRAME_PARTIAL	(-2)
/*
 * One daemon-to-agentd frame from buf[0..len): the bytes it takes,
 * PTY_FRAME_PARTIAL if more are needed, -1 for a frame that can never be
 * valid (unknown type, resize not 4 bytes, payload over PTY_FRAME_MAX).
 * *payload points into buf.
 */
ssize_t	pty_frame_parse(const char *buf, size_t len, int *type,
	    const char **payload, size_t *plen);

/* agentd/pty.c — a terminal session */
struct pty_session;
/* Open a PTY and start the shell; NULL with *cause. */
struct pty_session *pty_start(const char *workdir, int cols, int rows,
	    char **cause);
/*
 * Which of the socket (sock_events) and the PTY master (pty_events) to
 * poll for; *ptyfd is the master or -1.
 */
void	pty_events(struct pty_session *, short *sock_events, int *ptyfd,
	    short *pty_events);
/* Socket readable: take frames. -1: protocol error or EOF (close). */
int	pty_sock_read(struct pty_session *, int sock);
/* Bytes from the daemon that came with the request head. -1: bad frame. */
int	pty_feed(struct pty_session *, const char *, size_t);
/* Socket writable: send pending. -1: error (close). */
int	pty_sock_write(struct pty_session *, int sock);
/* Master ready. */
void	pty_master_event(struct pty_session *, short revents);
int	pty_reaped(struct pty_session *, pid_t, int status);
/* 1 once the exit frame was queued and everything sent. */
int	pty_finished(struct pty_session *);
int	pty_tick(struct pty_session *, int64_t now_ms);
/* Queue raw bytes for the socket (the 101 head). */
void	pty_queue_raw(struct pty_session *, const char *, size_t);
/* SIGHUP the shell's group (the daemon closed), free. */
void	pty_free(struct pty_session *);
void	pty_kill(struct pty_session *, int sig);
int	pty_running(struct pty_session *);

#endif /* SBX_AGENTD_H */
