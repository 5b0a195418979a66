/*
 * Tasks: a command or a coding agent's CLI run to completion, one at a
 * time, in its own session. Every line it prints becomes an event with a
 * sequence number, appended to <state-dir>/tasks/<tid>.ndjson; readers
 * (GET /tasks/<tid>/events) are served from that file at their own offset,
 * so any number of them can follow one task, a slow one costs no memory,
 * and one leaving changes nothing for the task.
 *
 * Life of a task: STARTING (the git checkpoint runs in a child) ->
 * RUNNING -> FINISHING (reaped and pipes at EOF; changed files are being
 * computed) -> SUCCEEDED | FAILED | CANCELLED, with the exit event written.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "agentd/agentd.h"

#define TASK_ID_MAX		64
#define TASK_DEF_TIMEOUT	1800
#define TASK_MAX_TIMEOUT	(7 * 86400)	/* as the API allows */
#define TASK_DEF_GRACE_MS	5000
#define TASK_MAX_GRACE_MS	60000
#define TASK_TIMEOUT_GRACE_MS	5000
#define TASK_PIPE_GRACE_MS	500
#define TASK_KEEP_FINISHED	32
#define TASK_INDEX_STEP		64	/* a file offset every this many seqs */
#define TASK_MAX_CHANGED	10000
#define TASK_READ_CHUNK		65536

enum task_kind {
	TASK_COMMAND,
	TASK_CLAUDE,
	TASK_OPENCODE
};

enum task_state {
	TASK_STARTING,
	TASK_RUNNING,
	TASK_FINISHING,
	TASK_SUCCEEDED,
	TASK_FAILED,
	TASK_CANCELLED
};

struct task_start {
	task_answer_cb	 cb;		/* NULL: detached */
	void		*arg;
	struct task	*task;		/* POST /tasks */
	char		*commit;	/* revert */
	struct git_op	*op;
};

struct task {
	char			*id;
	enum task_kind		 kind;
	enum task_state		 state;
	/* until started */
	char			**argv;
	char			**envp;
	char			*cwd;
	int64_t			 timeout_ms;
	int			 want_checkpoint;
	/* the process */
	pid_t			 pid;
	int			 reaped;
	int			 status;
	int64_t			 reaped_ms;
	int			 fd[2];		/* stdout, stderr; -1 closed */
	struct lines		 lines[2];
	int			 cur_stream;	/* for the line callback */
	int64_t			 deadline_ms;	/* timeout, monotonic */
	int64_t			 kill_ms;	/* SIGKILL due; 0: none */
	int			 cancelled;
	int			 timed_out;
	int64_t			 started_ms;	/* wall clock */
	int64_t			 finished_ms;
	char			*checkpoint;
	struct json_object	*changed;
	struct git_op		*op;
	/* what the agent reported */
	int			 have_summary;
	double			 cost;
	int			 turns;
	int			 is_error;	/* -1: not reported */
	char			*result;
	/* the event file */
	int			 logfd;
	uint64_t		 size;
	uint64_t		 seq;
	int			 truncated;
	uint64_t		*index;
	size_t			 nindex;
	int			 readers;
	struct task		*next;		/* oldest first */
};

struct task_reader {
	struct task	*task;
	uint64_t	 after;
	uint64_t	 off;
	int		 done;
};

static const char	*task_workdir;
static char		*task_dir;
static size_t		 task_log_max;
static struct task	*task_list;
static struct task	*task_current;	/* starting, running or finishing */

static int	 task_valid_id(const char *);
static int	 task_parse(struct json_object *, struct task *, char **);
static char	**task_argv(enum task_kind, struct json_object *,
		    const char *, const char *);
static void	 task_free(struct task *);
static void	 task_prune(void);
static void	 task_emit(struct task *, struct json_object *, int);
static void	 task_emit_raw(struct task *, const char *, size_t);
static void	 task_truncate(struct task *);
static int	 task_min(int, int);
static struct json_object *task_cost(double);
static struct json_object *task_event_new(const char *);
static void	 task_checkpoint_cb(struct json_object *, void *);
static void	 task_changed_cb(struct json_object *, void *);
static void	 task_revert_cb(struct json_object *, void *);
static int	 task_spawn(struct task *, char **);
static void	 task_line_cb(void *, const char *, size_t);
static void	 task_agent_line(struct task *, struct json_object *);
static void	 task_finish(struct task *);
static void	 task_ended(struct task *);
static void	 task_answer(struct task_start *, int, const char *);
static void	 task_answer_error(struct task_start *, int, const char *,
		    const char *);
static const char *task_state_name(enum task_state);
static const char *task_kind_name(enum task_kind);
static void	 task_close_pipe(struct task *, int);

int
task_init(const char *workdir, const char *state_dir, size_t log_max)
{
	task_workdir = workdir;
	task_log_max = log_max;
	xasprintf(&task_dir, "%s/tasks", state_dir);
	git_init(workdir, state_dir);
	if (mkdir_p(task_dir, 0700) == -1) {
		log_warn("mkdir %s", task_dir);
		return -1;
	}
	return 0;
}

static const char *
task_state_name(enum task_state s)
{
	switch (s) {
	case TASK_STARTING:
		return "starting";
	case TASK_RUNNING:
	case TASK_FINISHING:
		return "running";
	case TASK_SUCCEEDED:
		return "succeeded";
	case TASK_FAILED:
		return "failed";
	case TASK_CANCELLED:
		return "cancelled";
	}
	return "unknown";
}

static const char *
task_kind_name(enum task_kind k)
{
	switch (k) {
	case TASK_COMMAND:
		return "command";
	case TASK_CLAUDE:
		return "claude-code";
	case TASK_OPENCODE:
		return "opencode";
	}
	return "unknown";
}

/* 1..64 of [A-Za-z0-9_.-], not starting with '.': safe as a file name. */
static int
task_valid_id(const char *id)
{
	size_t	i, n = strlen(id);

	if (n == 0 || n > TASK_ID_MAX || id[0] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		if (!((id[i] >= 'a' && id[i] <= 'z') ||
		    (id[i] >= 'A' && id[i] <= 'Z') ||
		    (id[i] >= '0' && id[i] <= '9') ||
		    id[i] == '_' || id[i] == '-' || id[i] == '.'))
			return 0;
	}
	return 1;
}

/*
 * The agent's command line. A prompt that starts with '-' gets a leading
 * space, so neither CLI's option parser can take it for an option.
 */
static char **
task_argv(enum task_kind kind, struct json_object *cmd, const char *prompt,
    const char *model)
{
	char	**argv;
	size_t	  n = 0, i;
	char	 *p = NULL;

	if (kind == TASK_COMMAND) {
		n = json_object_array_length(cmd);
		argv = xcalloc(n + 1, sizeof *argv);
		for (i = 0; i < n; i++)
			argv[i] = xstrdup(json_object_get_string(
			    json_object_array_get_idx(cmd, i)));
		return argv;
	}
	if (*prompt == '-')
		xasprintf(&p, " %s", prompt);
	else
		p = xstrdup(prompt);
	argv = xcalloc(12, sizeof *argv);
	if (kind == TASK_CLAUDE) {
		argv[n++] = xstrdup("claude");
		argv[n++] = xstrdup("-p");
		argv[n++] = p;
		argv[n++] = xstrdup("--output-format");
		argv[n++] = xstrdup("stream-json");
		argv[n++] = xstrdup("--verbose");
		/* Nobody is there to answer a prompt; the sandbox is the wall. */
		argv[n++] = xstrdup("--dangerously-skip-permissions");
		if (model != NULL) {
			argv[n++] = xstrdup("--model");
			argv[n++] = xstrdup(model);
		}
	} else {
		argv[n++] = xstrdup("opencode");
		argv[n++] = xstrdup("run");
		argv[n++] = xstrdup("--format");
		argv[n++] = xstrdup("json");
		argv[n++] = xstrdup("--auto");
		if (model != NULL) {
			argv[n++] = xstrdup("--model");
			argv[n++] = xstrdup(model);
		}
		argv[n++] = p;
	}
	return argv;
}

/* A string member: 0 absent, 1 present (*out set), -1 wrong. */
static int
task_get_string(struct json_object *req, const char *key, const char **out)
{
	struct json_object	*v;

	*out = NULL;
	if (!json_object_object_get_ex(req, key, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_string) ||
	    strlen(json_object_get_string(v)) !=
	    (size_t)json_object_get_string_len(v) ||
	    json_object_get_string_len(v) == 0)
		return -1;
	*out = json_object_get_string(v);
	return 1;
}

/* Validate a POST /tasks body into t; -1 with *cause. */
static int
task_parse(struct json_object *req, struct task *t, char **cause)
{
	struct json_object	*cmd = NULL, *env = NULL, *v;
	const char		*id, *kind, *prompt, *model, *cwd, *s;
	struct stat		 sb;
	long long		 timeout_s;
	size_t			 i, n;

	if (!json_object_is_type(req, json_type_object)) {
		*cause = xstrdup("request body must be a JSON object");
		return -1;
	}
	json_object_object_foreach(req, key, val) {
		(void)val;
		if (strcmp(key, "id") != 0 && strcmp(key, "kind") != 0 &&
		    strcmp(key, "cmd") != 0 && strcmp(key, "prompt") != 0 &&
		    strcmp(key, "model") != 0 && strcmp(key, "env") != 0 &&
		    strcmp(key, "cwd") != 0 && strcmp(key, "timeout_s") != 0 &&
		    strcmp(key, "checkpoint") != 0) {
			xasprintf(cause, "unknown field \"%s\"", key);
			return -1;
		}
	}
	if (task_get_string(req, "id", &id) != 1 || !task_valid_id(id)) {
		*cause = xstrdup("id must be 1-64 of [A-Za-z0-9_.-], not "
		    "starting with '.'");
		return -1;
	}
	if (task_get_string(req, "kind", &kind) != 1) {
		*cause = xstrdup("kind must be command, claude-code or "
		    "opencode");
		return -1;
	}
	if (strcmp(kind, "command") == 0)
		t->kind = TASK_COMMAND;
	else if (strcmp(kind, "claude-code") == 0)
		t->kind = TASK_CLAUDE;
	else if (strcmp(kind, "opencode") == 0)
		t->kind = TASK_OPENCODE;
	else {
		*cause = xstrdup("kind must be command, claude-code or "
		    "opencode");
		return -1;
	}
	json_object_object_get_ex(req, "cmd", &cmd);
	if (task_get_string(req, "prompt", &prompt) == -1 ||
	    task_get_string(req, "model", &model) == -1) {
		*cause = xstrdup("prompt and model must be non-empty strings");
		return -1;
	}
	if (t->kind == TASK_COMMAND) {
		if (prompt != NULL || model != NULL) {
			*cause = xstrdup("a command task takes cmd, not prompt "
			    "or model");
			return -1;
		}
		if (cmd == NULL || !json_object_is_type(cmd, json_type_array) ||
		    (n = json_object_array_length(cmd)) == 0) {
			*cause = xstrdup("cmd must be a non-empty array of "
			    "strings");
			return -1;
		}
		for (i = 0; i < n; i++) {
			v = json_object_array_get_idx(cmd, i);
			if (!json_object_is_type(v, json_type_string) ||
			    strlen(s = json_object_get_string(v)) !=
			    (size_t)json_object_get_string_len(v) ||
			    (i == 0 && *s == '\0')) {
				*cause = xstrdup("cmd must be a non-empty array "
				    "of strings (no NUL, cmd[0] not empty)");
				return -1;
			}
		}
	} else {
		if (cmd != NULL) {
			*cause = xstrdup("an agent task takes prompt, not cmd");
			return -1;
		}
		if (prompt == NULL) {
			*cause = xstrdup("prompt is required");
			return -1;
		}
	}
	switch (task_get_string(req, "cwd", &cwd)) {
	case -1:
		*cause = xstrdup("cwd must be a non-empty string");
		return -1;
	case 0:
		t->cwd = xstrdup(task_workdir);
		break;
	default:
		if (*cwd == '/')
			t->cwd = xstrdup(cwd);
		else
			xasprintf(&t->cwd, "%s/%s", task_workdir, cwd);
		break;
	}
	if (stat(t->cwd, &sb) == -1 || !S_ISDIR(sb.st_mode)) {
		xasprintf(cause, "cwd %s: %s", t->cwd, errno != 0 &&
		    !S_ISDIR(sb.st_mode) ? strerror(errno) : "not a directory");
		return -1;
	}
	if (exec_get_int(req, "timeout_s", TASK_DEF_TIMEOUT, 1,
	    TASK_MAX_TIMEOUT, &timeout_s, cause) == -1)
		return -1;
	t->timeout_ms = timeout_s * 1000;
	t->want_checkpoint = t->kind != TASK_COMMAND;
	if (json_object_object_get_ex(req, "checkpoint", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_boolean)) {
			*cause = xstrdup("checkpoint must be a boolean");
			return -1;
		}
		t->want_checkpoint = json_object_get_boolean(v);
	}
	if (json_object_object_get_ex(req, "env", &env) && env != NULL &&
	    !json_object_is_type(env, json_type_object)) {
		*cause = xstrdup("env must be an object of strings");
		return -1;
	}
	if ((t->envp = exec_make_env(env, cause)) == NULL)
		return -1;
	t->id = xstrdup(id);
	t->argv = task_argv(t->kind, cmd, prompt, model);
	return 0;
}

/* Answer a waiting request, if it still waits, and free the handle. */
static void
task_answer(struct task_start *ts, int status, const char *body)
{
	if (ts->cb != NULL)
		ts->cb(status, body, ts->arg);
	free(ts->commit);
	free(ts);
}

static void
task_answer_error(struct task_start *ts, int status, const char *code,
    const char *msg)
{
	struct json_object	*obj, *err;

	err = json_object_new_object();
	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string(msg));
	obj = json_object_new_object();
	json_object_object_add(obj, "error", err);
	task_answer(ts, status, json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
}

void
task_start_detach(struct task_start *ts)
{
	ts->cb = NULL;
	ts->arg = NULL;
}

/* task_parse on a task of its own, freed again: checks only. */
char **
task_check(struct json_object *req, char **cause)
{
	struct task	*t;
	char		**argv = NULL;

	*cause = NULL;
	t = xcalloc(1, sizeof *t);
	t->fd[0] = t->fd[1] = t->logfd = -1;
	t->is_error = -1;
	if (task_parse(req, t, cause) == 0) {
		argv = t->argv;
		t->argv = NULL;
	}
	task_free(t);
	return argv;
}

/* POST /tasks */
int
task_create(struct json_object *req, task_answer_cb cb, void *arg,
    struct task_start **pending, int *status, const char **code,
    char **cause)
{
	struct task		*t;
	struct task_start	*ts;
	char			*path;

	*pending = NULL;
	*status = 400;
	*code = "bad_request";
	*cause = NULL;
	t = xcalloc(1, sizeof *t);
	t->fd[0] = t->fd[1] = t->logfd = -1;
	t->is_error = -1;
	if (task_parse(req, t, cause) == -1)
		goto fail;
	*status = 409;
	*code = "conflict";
	if (task_find(t->id) != NULL) {
		xasprintf(cause, "task %s already exists", t->id);
		goto fail;
	}
	if (task_current != NULL) {
		xasprintf(cause, "task %s is running", task_current->id);
		goto fail;
	}
	*status = 503;
	*code = "unavailable";
	xasprintf(&path, "%s/%s.ndjson", task_dir, t->id);
	if (mkdir_p(task_dir, 0700) == -1 || (t->logfd = open(path,
	    O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600)) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		free(path);
		goto fail;
	}
	free(path);

	ts = xcalloc(1, sizeof *ts);
	ts->cb = cb;
	ts->arg = arg;
	ts->task = t;
	t->state = TASK_STARTING;
	t->started_ms = time_now_ms();
	t->next = NULL;
	{
		struct task **pt;

		for (pt = &task_list; *pt != NULL; pt = &(*pt)->next)
			;
		*pt = t;
	}
	task_current = t;
	log_info("task created\tid=%s kind=%s checkpoint=%d", t->id,
	    task_kind_name(t->kind), t->want_checkpoint);
	if (t->want_checkpoint) {
		t->op = git_start(GIT_CHECKPOINT, t->id, NULL,
		    task_checkpoint_cb, ts, cause);
		if (t->op != NULL) {
			*pending = ts;
			return 0;
		}
		/* As a failed checkpoint: the id is forgotten. */
		task_answer_error(ts, 500, "checkpoint_failed", *cause);
		free(*cause);
		*cause = NULL;
		task_current = NULL;
		task_ended(t);
		return 0;
	}
	task_checkpoint_cb(NULL, ts);
	return 0;

fail:
	task_free(t);
	return -1;
}

/* The checkpoint is taken (res NULL: none wanted): start the process. */
static void
task_checkpoint_cb(struct json_object *res, void *arg)
{
	struct task_start	*ts = arg;
	struct task		*t = ts->task;
	struct json_object	*v, *ev;
	char			*cause = NULL;

	t->op = NULL;
	if (res != NULL) {
		if (!json_object_object_get_ex(res, "ok", &v) ||
		    !json_object_get_boolean(v)) {
			json_object_object_get_ex(res, "error", &v);
			log_warnx("task checkpoint failed\tid=%s error=\"%s\"",
			    t->id, json_object_get_string(v));
			task_answer_error(ts, 500, "checkpoint_failed",
			    json_object_get_string(v));
			task_current = NULL;
			task_ended(t);
			return;
		}
		json_object_object_get_ex(res, "commit", &v);
		t->checkpoint = xstrdup(json_object_get_string(v));
		log_info("task checkpoint\tid=%s commit=%s", t->id,
		    t->checkpoint);
	}
	if (t->cancelled) {
		/* Cancelled while the checkpoint ran: nothing to start. */
		t->reaped = 1;
		t->status = -1;
		task_finish(t);
		v = task_json(t);
		task_answer(ts, 201, json_object_to_json_string_ext(v,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(v);
		return;
	}
	if (task_spawn(t, &cause) == -1) {
		task_answer_error(ts, 503, "unavailable", cause);
		free(cause);
		task_current = NULL;
		task_ended(t);
		return;
	}
	ev = task_event_new("status");
	json_object_object_add(ev, "status", json_object_new_string(
	    "started"));
	json_object_object_add(ev, "pid", json_object_new_int(t->pid));
	json_object_object_add(ev, "checkpoint", t->checkpoint == NULL ?
	    NULL : json_object_new_string(t->checkpoint));
	task_emit(t, ev, 0);
	v = task_json(t);
	task_answer(ts, 201, json_object_to_json_string_ext(v,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(v);
}

/* A task that never ran (bad checkpoint, no process): forget it. */
static void
task_ended(struct task *t)
{
	struct task	**pt;
	char		 *path;

	for (pt = &task_list; *pt != NULL; pt = &(*pt)->next) {
		if (*pt == t) {
			*pt = t->next;
			break;
		}
	}
	xasprintf(&path, "%s/%s.ndjson", task_dir, t->id);
	unlink(path);
	free(path);
	task_free(t);
}

/* Fork and exec the task's process. */
static int
task_spawn(struct task *t, char **cause)
{
	int	outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, i;
	pid_t	pid;

	if (pipe2(outp, O_CLOEXEC) == -1 || pipe2(errp, O_CLOEXEC) == -1) {
		xasprintf(cause, "pipe: %s", strerror(errno));
		goto fail;
	}
	fcntl(outp[0], F_SETFL, O_NONBLOCK);
	fcntl(errp[0], F_SETFL, O_NONBLOCK);
	if ((pid = agentd_fork()) == -1) {
		xasprintf(cause, "fork: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0)
		exec_child(t->argv, t->envp, t->cwd, outp[1], errp[1]);
	close(outp[1]);
	close(errp[1]);
	t->fd[0] = outp[0];
	t->fd[1] = errp[0];
	t->pid = pid;
	t->state = TASK_RUNNING;
	t->deadline_ms = time_mono_ms() + t->timeout_ms;
	log_info("task started\tid=%s pid=%ld cmd=\"%.64s\"", t->id,
	    (long)pid, t->argv[0]);
	/* The prompt and env are not needed any more; do not keep secrets. */
	exec_free_strv(t->argv);
	exec_free_strv(t->envp);
	t->argv = t->envp = NULL;
	return 0;

fail:
	for (i = 0; i < 2; i++) {
		if (outp[i] != -1)
			close(outp[i]);
		if (errp[i] != -1)
			close(errp[i]);
	}
	return -1;
}

/* A new event object; seq is filled in by task_emit. */
static struct json_object *
task_event_new(const char *type)
{
	struct json_object	*ev;

	ev = json_object_new_object();
	/* First, so every line starts {"seq":N, (readers skip by it). */
	json_object_object_add(ev, "seq", json_object_new_int64(0));
	json_object_object_add(ev, "type", json_object_new_string(type));
	return ev;
}

/* Append one line to the event file, numbering it. */
static void
task_emit_raw(struct task *t, const char *line, size_t len)
{
	size_t	off = 0;
	ssize_t	n;

	if ((t->seq - 1) % TASK_INDEX_STEP == 0) {
		t->index = xreallocarray(t->index, t->nindex + 1,
		    sizeof *t->index);
		t->index[t->nindex++] = t->size;
	}
	while (off < len) {
		n = write(t->logfd, line + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* tmpfs full: readers get a cut stream, not a lie. */
			log_warn("task %s: event file", t->id);
			break;
		}
		off += (size_t)n;
	}
	t->size += off;
}

/* The cap is reached: say so once; output and agent events stop. */
static void
task_truncate(struct task *t)
{
	struct json_object	*ev;

	if (t->truncated)
		return;
	t->truncated = 1;
	ev = task_event_new("status");
	json_object_object_add(ev, "status", json_object_new_string(
	    "truncated"));
	task_emit(t, ev, 0);
	log_info("task events truncated\tid=%s size=%llu", t->id,
	    (unsigned long long)t->size);
}

/*
 * Number and append an event (freeing it). A droppable one (output, agent)
 * past the size cap is dropped, after one truncated status event.
 */
static void
task_emit(struct task *t, struct json_object *ev, int droppable)
{
	const char	*text;
	char		*line;
	size_t		 len;

	if (droppable && t->truncated) {
		json_object_put(ev);
		return;
	}
	json_object_object_add(ev, "seq", json_object_new_int64(
	    (int64_t)t->seq + 1));
	text = json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(text);
	if (droppable && t->size + len + 1 > task_log_max) {
		json_object_put(ev);
		task_truncate(t);
		return;
	}
	t->seq++;
	line = xmalloc(len + 1);
	memcpy(line, text, len);
	line[len] = '\n';
	task_emit_raw(t, line, len + 1);
	free(line);
	json_object_put(ev);
}

/* What an agent's JSON line says about cost, turns and the result. */
static void
task_agent_line(struct task *t, struct json_object *obj)
{
	struct json_object	*type, *v, *part;
	const char		*ty;

	if (!json_object_object_get_ex(obj, "type", &type) ||
	    !json_object_is_type(type, json_type_string))
		return;
	ty = json_object_get_string(type);
	if (t->kind == TASK_CLAUDE && strcmp(ty, "result") == 0) {
		t->have_summary = 1;
		if (json_object_object_get_ex(obj, "total_cost_usd", &v))
			t->cost = json_object_get_double(v);
		if (json_object_object_get_ex(obj, "num_turns", &v))
			t->turns = json_object_get_int(v);
		if (json_object_object_get_ex(obj, "is_error", &v))
			t->is_error = json_object_get_boolean(v);
		if (json_object_object_get_ex(obj, "result", &v) &&
		    json_object_is_type(v, json_type_string)) {
			free(t->result);
			t->result = xstrdup(json_object_get_string(v));
		}
	} else if (t->kind == TASK_OPENCODE &&
	    json_object_object_get_ex(obj, "part", &part) &&
	    json_object_is_type(part, json_type_object)) {
		if (strcmp(ty, "step_finish") == 0) {
			t->have_summary = 1;
			t->turns++;
			if (json_object_object_get_ex(part, "cost", &v))
				t->cost += json_object_get_double(v);
		} else if (strcmp(ty, "text") == 0 &&
		    json_object_object_get_ex(part, "text", &v) &&
		    json_object_is_type(v, json_type_string)) {
			t->have_summary = 1;
			free(t->result);
			t->result = xstrdup(json_object_get_string(v));
		}
	}
}

/* One line of output: an agent event or an output event. */
static void
task_line_cb(void *arg, const char *p, size_t n)
{
	struct task		*t = arg;
	struct json_object	*ev, *obj = NULL;
	struct json_tokener	*tok;
	char			*s, *line;
	size_t			 sl, body;

	s = exec_utf8_sanitize(p, n, &sl);
	if (t->kind != TASK_COMMAND && t->cur_stream == 0) {
		body = sl;
		while (body > 0 && (s[body - 1] == '\n' || s[body - 1] == '\r'))
			body--;
		if (body > 0 && s[0] == '{') {
			tok = json_tokener_new();
			obj = json_tokener_parse_ex(tok, s, (int)body);
			if (obj != NULL && (json_tokener_get_error(tok) !=
			    json_tokener_success ||
			    json_tokener_get_parse_end(tok) != body ||
			    !json_object_is_type(obj, json_type_object))) {
				json_object_put(obj);
				obj = NULL;
			}
			json_tokener_free(tok);
		}
		if (obj != NULL) {
			task_agent_line(t, obj);
			json_object_put(obj);
			/*
			 * The CLI's object goes in as it was written (valid
			 * JSON, now valid UTF-8), not re-serialised.
			 */
			if (!t->truncated) {
				xasprintf(&line, "{\"seq\":%llu,\"type\":"
				    "\"agent\",\"data\":%.*s}\n",
				    (unsigned long long)t->seq + 1, (int)body, s);
				if (t->size + strlen(line) > task_log_max)
					task_truncate(t);
				else {
					t->seq++;
					task_emit_raw(t, line, strlen(line));
				}
				free(line);
			}
			free(s);
			return;
		}
	}
	ev = task_event_new("output");
	json_object_object_add(ev, "stream", json_object_new_string(
	    t->cur_stream == 0 ? "stdout" : "stderr"));
	json_object_object_add(ev, "text", json_object_new_string_len(s,
	    (int)sl));
	task_emit(t, ev, 1);
	free(s);
}

int
task_pollfds(int fds[2])
{
	int	i, n = 0;

	if (task_current == NULL || task_current->state != TASK_RUNNING)
		return 0;
	for (i = 0; i < 2; i++) {
		if (task_current->fd[i] != -1)
			fds[n++] = task_current->fd[i];
	}
	return n;
}

static void
task_close_pipe(struct task *t, int i)
{
	if (t->fd[i] == -1)
		return;
	close(t->fd[i]);
	t->fd[i] = -1;
	t->cur_stream = i;
	lines_flush(&t->lines[i], task_line_cb, t);
}

/* Read what is ready on one of the task's pipes. */
void
task_read(int fd)
{
	struct task	*t = task_current;
	char		 buf[TASK_READ_CHUNK];
	ssize_t		 n;
	int		 i, rounds;

	if (t == NULL || t->state != TASK_RUNNING)
		return;
	for (i = 0; i < 2; i++) {
		if (t->fd[i] == fd && fd != -1)
			break;
	}
	if (i == 2)
		return;
	for (rounds = 0; rounds < 16; rounds++) {
		n = read(fd, buf, sizeof buf);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0) {
			task_close_pipe(t, i);
			return;
		}
		t->cur_stream = i;
		lines_feed(&t->lines[i], buf, (size_t)n, task_line_cb, t);
	}
}

int
task_reaped(pid_t pid, int status, int64_t now_ms)
{
	struct task	*t = task_current;

	if (t == NULL || t->state != TASK_RUNNING || t->reaped ||
	    t->pid != pid)
		return 0;
	t->reaped = 1;
	t->status = status;
	t->reaped_ms = now_ms;
	log_info("task exited\tid=%s pid=%ld status=%d", t->id, (long)pid,
	    status);
	return 1;
}

/* Reaped and both pipes at EOF: the changed files, then the exit event. */
static void
task_finish(struct task *t)
{
	char	*cause = NULL;

	t->state = TASK_FINISHING;
	if (t->checkpoint != NULL) {
		t->op = git_start(GIT_CHANGED, t->id, t->checkpoint,
		    task_changed_cb, t, &cause);
		if (t->op != NULL)
			return;
		log_warnx("task %s: changed files: %s", t->id, cause);
		free(cause);
	}
	task_changed_cb(NULL, t);
}

/* The changed files are known (res NULL: none): write the exit event. */
static void
task_changed_cb(struct json_object *res, void *arg)
{
	struct task		*t = arg;
	struct json_object	*ev, *v, *sum, *files;
	size_t			 i, n;
	int			 code = -1, sig = -1;

	t->op = NULL;
	if (res != NULL && json_object_object_get_ex(res, "files", &v)) {
		n = json_object_array_length(v);
		if (n > TASK_MAX_CHANGED)
			n = TASK_MAX_CHANGED;
		files = json_object_new_array();
		for (i = 0; i < n; i++)
			json_object_array_add(files, json_object_get(
			    json_object_array_get_idx(v, i)));
		t->changed = files;
	} else if (res != NULL) {
		json_object_object_get_ex(res, "error", &v);
		log_warnx("task %s: changed files: %s", t->id,
		    json_object_get_string(v));
	}
	if (t->status != -1)
		exec_status(t->status, &code, &sig);
	if (t->cancelled)
		t->state = TASK_CANCELLED;
	else if (code == 0 && !t->timed_out)
		t->state = TASK_SUCCEEDED;
	else
		t->state = TASK_FAILED;
	t->finished_ms = time_now_ms();

	ev = task_event_new("exit");
	json_object_object_add(ev, "exit_code", code == -1 ? NULL :
	    json_object_new_int(code));
	json_object_object_add(ev, "signal", sig == -1 ? NULL :
	    json_object_new_int(sig));
	json_object_object_add(ev, "state", json_object_new_string(
	    task_state_name(t->state)));
	json_object_object_add(ev, "timed_out", json_object_new_boolean(
	    t->timed_out));
	json_object_object_add(ev, "changed_files", json_object_get(
	    t->changed));
	sum = NULL;
	if (t->have_summary) {
		sum = json_object_new_object();
		json_object_object_add(sum, "cost_usd", task_cost(t->cost));
		json_object_object_add(sum, "turns",
		    json_object_new_int(t->turns));
		json_object_object_add(sum, "result", t->result == NULL ? NULL :
		    json_object_new_string(t->result));
		if (t->is_error != -1)
			json_object_object_add(sum, "is_error",
			    json_object_new_boolean(t->is_error));
	}
	json_object_object_add(ev, "summary", sum);
	task_emit(t, ev, 0);
	log_info("task finished\tid=%s state=%s exit_code=%d events=%llu",
	    t->id, task_state_name(t->state), code,
	    (unsigned long long)t->seq);
	if (task_current == t)
		task_current = NULL;
	task_prune();
}

/* Timeout, the kill after the grace, the pipe grace; ms to next or -1. */
int
task_tick(int64_t now_ms)
{
	struct task		*t = task_current;
	struct json_object	*ev;
	int			 timeout = -1;

	if (t == NULL || t->state != TASK_RUNNING)
		return -1;
	if (!t->reaped && !t->timed_out && now_ms >= t->deadline_ms) {
		log_info("task timed out\tid=%s", t->id);
		t->timed_out = 1;
		ev = task_event_new("status");
		json_object_object_add(ev, "status", json_object_new_string(
		    "timeout"));
		task_emit(t, ev, 0);
		kill(-t->pid, SIGTERM);
		if (t->kill_ms == 0 || t->kill_ms > now_ms +
		    TASK_TIMEOUT_GRACE_MS)
			t->kill_ms = now_ms + TASK_TIMEOUT_GRACE_MS;
	}
	if (t->kill_ms != 0 && now_ms >= t->kill_ms) {
		/* The group may outlive its leader. */
		kill(-t->pid, SIGKILL);
		t->kill_ms = 0;
	}
	if (t->reaped && (t->fd[0] != -1 || t->fd[1] != -1) &&
	    now_ms >= t->reaped_ms + TASK_PIPE_GRACE_MS) {
		/* A background process holds the pipes: stop waiting. */
		task_read(t->fd[0]);
		if (t->fd[1] != -1)
			task_read(t->fd[1]);
		task_close_pipe(t, 0);
		task_close_pipe(t, 1);
	}
	if (t->reaped && t->fd[0] == -1 && t->fd[1] == -1) {
		task_finish(t);
		return 0;
	}
	if (!t->reaped && !t->timed_out)
		timeout = (int)(t->deadline_ms - now_ms);
	if (t->kill_ms != 0)
		timeout = task_min(timeout, (int)(t->kill_ms - now_ms));
	if (t->reaped)
		timeout = task_min(timeout, (int)(t->reaped_ms +
		    TASK_PIPE_GRACE_MS - now_ms));
	return timeout;
}

/* A cost as the CLI would print it, not 0.0030000000000000001. */
static struct json_object *
task_cost(double cost)
{
	char	buf[64];

	snprintf(buf, sizeof buf, "%.10g", cost);
	return json_object_new_double_s(cost, buf);
}

/* The smaller of two poll timeouts, where -1 is infinite. */
static int
task_min(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* POST /tasks/<tid>/cancel */
void
task_cancel(struct task *t, int grace_ms, int64_t now_ms)
{
	struct json_object	*ev;

	if (t->state != TASK_STARTING && t->state != TASK_RUNNING)
		return;
	if (t->cancelled) {
		/* A second cancel may shorten the grace. */
		if (t->state == TASK_RUNNING && t->kill_ms != 0 &&
		    now_ms + grace_ms < t->kill_ms)
			t->kill_ms = now_ms + grace_ms;
		return;
	}
	t->cancelled = 1;
	log_info("task cancelled\tid=%s grace_ms=%d", t->id, grace_ms);
	if (t->state != TASK_RUNNING)
		return;
	ev = task_event_new("status");
	json_object_object_add(ev, "status", json_object_new_string(
	    "cancelling"));
	task_emit(t, ev, 0);
	if (t->reaped)
		return;
	kill(-t->pid, grace_ms == 0 ? SIGKILL : SIGTERM);
	t->kill_ms = now_ms + (grace_ms == 0 ? 1 : grace_ms);
}

int
task_busy(void)
{
	return task_current != NULL;
}

void
task_kill(int sig)
{
	if (task_current != NULL && task_current->state == TASK_RUNNING)
		kill(-task_current->pid, sig);
}

int
task_children(void)
{
	return task_current != NULL && task_current->state == TASK_RUNNING &&
	    !task_current->reaped;
}

struct task *
task_find(const char *tid)
{
	struct task	*t;

	for (t = task_list; t != NULL; t = t->next) {
		if (strcmp(t->id, tid) == 0)
			return t;
	}
	return NULL;
}

/* The task object. */
struct json_object *
task_json(struct task *t)
{
	struct json_object	*obj, *sum = NULL;
	int			 code = -1, sig = -1;
	int			 ended;

	ended = t->state == TASK_SUCCEEDED || t->state == TASK_FAILED ||
	    t->state == TASK_CANCELLED;
	if (ended && t->status != -1)
		exec_status(t->status, &code, &sig);
	obj = json_object_new_object();
	json_object_object_add(obj, "id", json_object_new_string(t->id));
	json_object_object_add(obj, "kind", json_object_new_string(
	    task_kind_name(t->kind)));
	json_object_object_add(obj, "state", json_object_new_string(
	    task_state_name(t->state)));
	json_object_object_add(obj, "pid", json_object_new_int(t->pid));
	json_object_object_add(obj, "exit_code", code == -1 ? NULL :
	    json_object_new_int(code));
	json_object_object_add(obj, "signal", sig == -1 ? NULL :
	    json_object_new_int(sig));
	json_object_object_add(obj, "timed_out",
	    json_object_new_boolean(t->timed_out));
	json_object_object_add(obj, "checkpoint", t->checkpoint == NULL ?
	    NULL : json_object_new_string(t->checkpoint));
	json_object_object_add(obj, "events",
	    json_object_new_int64((int64_t)t->seq));
	json_object_object_add(obj, "started_ms",
	    json_object_new_int64(t->started_ms));
	json_object_object_add(obj, "finished_ms", t->finished_ms == 0 ?
	    NULL : json_object_new_int64(t->finished_ms));
	json_object_object_add(obj, "changed_files",
	    json_object_get(t->changed));
	if (ended && t->have_summary) {
		sum = json_object_new_object();
		json_object_object_add(sum, "cost_usd", task_cost(t->cost));
		json_object_object_add(sum, "turns",
		    json_object_new_int(t->turns));
		json_object_object_add(sum, "result", t->result == NULL ? NULL :
		    json_object_new_string(t->result));
	}
	json_object_object_add(obj, "summary", sum);
	return obj;
}

struct json_object *
task_list_json(void)
{
	struct json_object	*obj, *arr;
	struct task		*t;

	arr = json_object_new_array();
	for (t = task_list; t != NULL; t = t->next)
		json_object_array_add(arr, task_json(t));
	obj = json_object_new_object();
	json_object_object_add(obj, "tasks", arr);
	return obj;
}

/* Keep the last TASK_KEEP_FINISHED finished tasks (and their files). */
static void
task_prune(void)
{
	struct task	**pt, *t;
	char		 *path;
	int		  finished = 0;

	for (t = task_list; t != NULL; t = t->next) {
		if (t != task_current)
			finished++;
	}
	for (pt = &task_list; (t = *pt) != NULL &&
	    finished > TASK_KEEP_FINISHED;) {
		if (t == task_current || t->readers > 0) {
			pt = &t->next;
			continue;
		}
		*pt = t->next;
		finished--;
		xasprintf(&path, "%s/%s.ndjson", task_dir, t->id);
		unlink(path);
		free(path);
		task_free(t);
	}
}

static void
task_free(struct task *t)
{
	int	i;

	if (t == NULL)
		return;
	if (t->op != NULL)
		git_cancel(t->op);
	for (i = 0; i < 2; i++) {
		if (t->fd[i] != -1)
			close(t->fd[i]);
		lines_free(&t->lines[i]);
	}
	if (t->logfd != -1)
		close(t->logfd);
	exec_free_strv(t->argv);
	exec_free_strv(t->envp);
	json_object_put(t->changed);
	free(t->id);
	free(t->cwd);
	free(t->checkpoint);
	free(t->result);
	free(t->index);
	free(t);
}

void
task_free_all(void)
{
	struct task	*t;

	while ((t = task_list) != NULL) {
		task_list = t->next;
		task_free(t);
	}
	task_current = NULL;
	free(task_dir);
	task_dir = NULL;
}

/* The revert is done: answer. */
static void
task_revert_cb(struct json_object *res, void *arg)
{
	struct task_start	*ts = arg;
	struct json_object	*v, *obj;

	if (!json_object_object_get_ex(res, "ok", &v) ||
	    !json_object_get_boolean(v)) {
		json_object_object_get_ex(res, "error", &v);
		log_warnx("revert failed\tcheckpoint=%s error=\"%s\"",
		    ts->commit, json_object_get_string(v));
		if (json_object_object_get_ex(res, "bad_checkpoint", NULL))
			task_answer_error(ts, 400, "bad_request",
			    json_object_get_string(v));
		else
			task_answer_error(ts, 500, "revert_failed",
			    json_object_get_string(v));
		return;
	}
	obj = json_object_new_object();
	json_object_object_add(obj, "reverted", json_object_new_boolean(1));
	json_object_object_add(obj, "checkpoint",
	    json_object_new_string(ts->commit));
	json_object_object_get_ex(res, "files", &v);
	json_object_object_add(obj, "files", v == NULL ?
	    json_object_new_array() : json_object_get(v));
	log_info("reverted\tcheckpoint=%s files=%zu", ts->commit,
	    v == NULL ? (size_t)0 : json_object_array_length(v));
	task_answer(ts, 200, json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
}

/* POST /tasks/<tid>/revert */
int
task_revert(struct task *t, const char *commit, task_answer_cb cb,
    void *arg, struct task_start **pending, int *status, const char **code,
    char **cause)
{
	struct task_start	*ts;
	size_t			 i;

	*pending = NULL;
	*cause = NULL;
	if (commit != NULL) {
		for (i = 0; commit[i] != '\0'; i++) {
			if (!((commit[i] >= '0' && commit[i] <= '9') ||
			    (commit[i] >= 'a' && commit[i] <= 'f')))
				break;
		}
		if (i != 40 || commit[i] != '\0') {
			*status = 400;
			*code = "bad_request";
			*cause = xstrdup("checkpoint must be 40 lowercase hex "
			    "digits");
			return -1;
		}
	}
	if (task_current != NULL) {
		*status = 409;
		*code = "conflict";
		xasprintf(cause, "task %s is running", task_current->id);
		return -1;
	}
	if (commit == NULL && (t == NULL || t->checkpoint == NULL)) {
		*status = 404;
		*code = "not_found";
		*cause = xstrdup(t == NULL ? "no such task" :
		    "the task has no checkpoint");
		return -1;
	}
	ts = xcalloc(1, sizeof *ts);
	ts->cb = cb;
	ts->arg = arg;
	ts->commit = xstrdup(commit != NULL ? commit : t->checkpoint);
	ts->op = git_start(GIT_REVERT, t != NULL ? t->id : "x", ts->commit,
	    task_revert_cb, ts, cause);
	if (ts->op == NULL) {
		free(ts->commit);
		free(ts);
		*status = 503;
		*code = "unavailable";
		return -1;
	}
	*pending = ts;
	return 0;
}

/* A reader of the events after seq `after`. */
struct task_reader *
task_reader_new(struct task *t, uint64_t after)
{
	struct task_reader	*r;
	size_t			 k;

	r = xcalloc(1, sizeof *r);
	r->task = t;
	r->after = after;
	/* Start at the indexed line at or before seq after + 1. */
	k = (size_t)(after / TASK_INDEX_STEP);
	if (t->nindex > 0) {
		if (k >= t->nindex)
			k = t->nindex - 1;
		r->off = t->index[k];
	}
	t->readers++;
	return r;
}

int
task_reader_ready(struct task_reader *r)
{
	struct task	*t = r->task;

	if (r->done)
		return 0;
	if (r->off < t->size)
		return 1;
	return t->state == TASK_SUCCEEDED || t->state == TASK_FAILED ||
	    t->state == TASK_CANCELLED;
}

/* Append the next whole lines after r->after to *buf. */
int
task_reader_fill(struct task_reader *r, char **buf, size_t *len, size_t max)
{
	struct task	*t = r->task;
	char		*chunk, *p, *nl, *end;
	size_t		 want, have;
	ssize_t		 n;
	uint64_t	 seq;
	int		 ended;

	ended = t->state == TASK_SUCCEEDED || t->state == TASK_FAILED ||
	    t->state == TASK_CANCELLED;
	if (r->done)
		return 1;
	if (r->off >= t->size) {
		if (ended)
			r->done = 1;
		return r->done;
	}
	want = max;
	for (;;) {
		if (want > t->size - r->off)
			want = (size_t)(t->size - r->off);
		chunk = xmalloc(want);
		n = pread(t->logfd, chunk, want, (off_t)r->off);
		if (n <= 0) {
			free(chunk);
			return 0;
		}
		have = (size_t)n;
		/* The file holds whole lines only; the chunk may cut one. */
		for (end = chunk + have; end > chunk && end[-1] != '\n'; end--)
			;
		if (end > chunk || have < want || want == t->size - r->off)
			break;
		free(chunk);
		want *= 2;
	}
	for (p = chunk; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		seq = 0;
		if (strncmp(p, "{\"seq\":", 7) == 0)
			seq = strtoull(p + 7, NULL, 10);
		if (seq > r->after) {
			*buf = xrealloc(*buf, *len + (size_t)(nl + 1 - p));
			memcpy(*buf + *len, p, (size_t)(nl + 1 - p));
			*len += (size_t)(nl + 1 - p);
		}
	}
	r->off += (uint64_t)(end - chunk);
	free(chunk);
	if (ended && r->off >= t->size)
		r->done = 1;
	return r->done;
}

void
task_reader_free(struct task_reader *r)
{
	if (r == NULL)
		return;
	r->task->readers--;
	free(r);
	task_prune();
}
