/*
 * POST /exec: run one command to completion. The command gets its own
 * session (so a timeout kills everything it started), stdin from /dev/null
 * and a pipe each for stdout and stderr. Output past max_output is read and
 * thrown away, so the child never blocks on a full pipe, and the answer says
 * it was truncated. The job is done when both pipes are closed and the
 * child is reaped — by the main loop, which owns waitpid.
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

/*
 * How long the pipes may stay open after the command exited: a background
 * process it left behind can hold them, and the answer must not wait for it.
 */
#define EXEC_PIPE_GRACE_MS	500
#define EXEC_MAX_ARGS		4096
#define EXEC_READ_CHUNK		65536

extern char **environ;

struct exec_output {
	char		*buf;
	size_t		 len;
	size_t		 size;
	size_t		 kept;		/* bytes kept so far, for max_output */
	struct lines	 lines;		/* streaming: the line being cut */
};

struct exec_job {
	pid_t			 pid;
	int			 reaped;
	int			 status;
	int64_t			 reaped_ms;
	int64_t			 deadline_ms;
	int			 fd[2];		/* stdout, stderr; -1 closed */
	struct exec_output	 out[2];
	size_t			 max_output;
	int			 truncated;
	int			 timed_out;
	int			 stream;	/* output goes out as events */
	int			 exit_sent;
	/* streaming: where exec_line_cb appends events */
	char			**sbuf;
	size_t			*slen;
	int			 sidx;
};

static void	 exec_close(struct exec_job *, int);
static void	 exec_line_cb(void *, const char *, size_t);

/* Read an optional integer member within [min, max]; -1 with *cause. */
int
exec_get_int(struct json_object *req, const char *key, long long def,
    long long min, long long max, long long *out, char **cause)
{
	struct json_object	*v;
	long long		 n;

	if (!json_object_object_get_ex(req, key, &v) || v == NULL) {
		*out = def;
		return 0;
	}
	if (!json_object_is_type(v, json_type_int)) {
		xasprintf(cause, "%s must be an integer", key);
		return -1;
	}
	errno = 0;
	n = json_object_get_int64(v);
	if (errno != 0 || n < min || n > max) {
		xasprintf(cause, "%s must be between %lld and %lld", key, min,
		    max);
		return -1;
	}
	*out = n;
	return 0;
}

/* agentd's environment with the request's env object merged over it. */
char **
exec_make_env(struct json_object *env, char **cause)
{
	char		**envp;
	size_t		  n = 0, i, klen, total;
	const char	 *val;

	for (total = 0; environ[total] != NULL; total++)
		;
	if (env != NULL)
		total += (size_t)json_object_object_length(env);
	envp = xcalloc(total + 1, sizeof *envp);
	for (i = 0; environ[i] != NULL; i++)
		envp[n++] = xstrdup(environ[i]);
	if (env == NULL)
		return envp;

	json_object_object_foreach(env, key, v) {
		klen = strlen(key);
		if (klen == 0 || strchr(key, '=') != NULL) {
			xasprintf(cause, "env: bad variable name \"%s\"", key);
			goto fail;
		}
		if (!json_object_is_type(v, json_type_string)) {
			xasprintf(cause, "env: %s must be a string", key);
			goto fail;
		}
		val = json_object_get_string(v);
		if (strlen(val) != (size_t)json_object_get_string_len(v)) {
			xasprintf(cause, "env: %s contains a NUL byte", key);
			goto fail;
		}
		/* Replace an inherited value rather than shadow it. */
		for (i = 0; i < n; i++) {
			if (strncmp(envp[i], key, klen) == 0 &&
			    envp[i][klen] == '=')
				break;
		}
		if (i < n)
			free(envp[i]);
		else
			n++;
		xasprintf(&envp[i], "%s=%s", key, val);
	}
	return envp;

fail:
	exec_free_strv(envp);
	return NULL;
}

/* Free a NULL-terminated string vector. */
void
exec_free_strv(char **v)
{
	size_t	i;

	if (v == NULL)
		return;
	for (i = 0; v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* In the child: set up stdio, session and cwd, then exec or exit 127. */
void
exec_child(char **argv, char **envp, const char *cwd, int outfd, int errfd)
{
	int	nullfd;

	setsid();
	if ((nullfd = open("/dev/null", O_RDONLY)) == -1)
		close(STDIN_FILENO);
	else if (nullfd != STDIN_FILENO) {
		dup2(nullfd, STDIN_FILENO);
		close(nullfd);
	}
	if (dup2(outfd, STDOUT_FILENO) == -1 || dup2(errfd, STDERR_FILENO) == -1)
		_exit(127);
	if (chdir(cwd) == -1) {
		dprintf(STDERR_FILENO, "agentd: chdir %s: %s\n", cwd,
		    strerror(errno));
		_exit(127);
	}
	/* execvp searches the PATH of environ, so make it the merged one. */
	environ = envp;
	execvp(argv[0], argv);
	dprintf(STDERR_FILENO, "agentd: %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Validate a parsed /exec request into spec; nothing is started. */
int
exec_parse(struct json_object *req, const char *workdir,
    struct exec_spec *spec, char **cause)
{
	struct json_object	*cmd, *v, *env = NULL;
	struct stat		 sb;
	char			**argv = NULL, **envp = NULL, *cwd = NULL;
	const char		*s;
	long long		 timeout_s, max_output;
	size_t			 i, n;

	memset(spec, 0, sizeof *spec);
	*cause = NULL;
	if (!json_object_is_type(req, json_type_object)) {
		*cause = xstrdup("request body must be a JSON object");
		return -1;
	}
	json_object_object_foreach(req, key, val) {
		(void)val;
		if (strcmp(key, "cmd") != 0 && strcmp(key, "cwd") != 0 &&
		    strcmp(key, "env") != 0 && strcmp(key, "timeout_s") != 0 &&
		    strcmp(key, "max_output") != 0) {
			xasprintf(cause, "unknown field \"%s\"", key);
			return -1;
		}
	}

	if (!json_object_object_get_ex(req, "cmd", &cmd) ||
	    !json_object_is_type(cmd, json_type_array) ||
	    (n = json_object_array_length(cmd)) == 0) {
		*cause = xstrdup("cmd must be a non-empty array of strings");
		return -1;
	}
	if (n > EXEC_MAX_ARGS) {
		xasprintf(cause, "cmd has more than %d arguments",
		    EXEC_MAX_ARGS);
		return -1;
	}
	argv = xcalloc(n + 1, sizeof *argv);
	for (i = 0; i < n; i++) {
		v = json_object_array_get_idx(cmd, i);
		if (!json_object_is_type(v, json_type_string)) {
			*cause = xstrdup("cmd must be a non-empty array of "
			    "strings");
			goto fail;
		}
		s = json_object_get_string(v);
		if (strlen(s) != (size_t)json_object_get_string_len(v)) {
			*cause = xstrdup("cmd contains a NUL byte");
			goto fail;
		}
		argv[i] = xstrdup(s);
	}
	if (*argv[0] == '\0') {
		*cause = xstrdup("cmd[0] must not be empty");
		goto fail;
	}

	if (json_object_object_get_ex(req, "cwd", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_string) ||
		    *(s = json_object_get_string(v)) == '\0' ||
		    strlen(s) != (size_t)json_object_get_string_len(v)) {
			*cause = xstrdup("cwd must be a non-empty string");
			goto fail;
		}
		/* A relative cwd is relative to the workspace. */
		if (*s == '/')
			cwd = xstrdup(s);
		else
			xasprintf(&cwd, "%s/%s", workdir, s);
	} else
		cwd = xstrdup(workdir);
	if (stat(cwd, &sb) == -1) {
		xasprintf(cause, "cwd %s: %s", cwd, strerror(errno));
		goto fail;
	}
	if (!S_ISDIR(sb.st_mode)) {
		xasprintf(cause, "cwd %s: not a directory", cwd);
		goto fail;
	}

	if (json_object_object_get_ex(req, "env", &env) && env != NULL &&
	    !json_object_is_type(env, json_type_object)) {
		*cause = xstrdup("env must be an object of strings");
		goto fail;
	}
	if (exec_get_int(req, "timeout_s", AGENTD_EXEC_DEF_TIMEOUT, 1,
	    AGENTD_EXEC_MAX_TIMEOUT, &timeout_s, cause) == -1)
		goto fail;
	if (exec_get_int(req, "max_output", AGENTD_EXEC_DEF_OUTPUT, 0,
	    AGENTD_EXEC_MAX_OUTPUT, &max_output, cause) == -1)
		goto fail;
	if ((envp = exec_make_env(env, cause)) == NULL)
		goto fail;
	spec->argv = argv;
	spec->envp = envp;
	spec->cwd = cwd;
	spec->timeout_s = timeout_s;
	spec->max_output = max_output;
	return 0;

fail:
	exec_free_strv(argv);
	exec_free_strv(envp);
	free(cwd);
	return -1;
}

/* Free what exec_parse filled in. */
void
exec_spec_clear(struct exec_spec *spec)
{
	exec_free_strv(spec->argv);
	exec_free_strv(spec->envp);
	free(spec->cwd);
	memset(spec, 0, sizeof *spec);
}

/* Validate a parsed /exec request and start its command. */
struct exec_job *
exec_start(struct json_object *req, const char *workdir, char **cause,
    int *status)
{
	struct exec_job		*job = NULL;
	struct exec_spec	 spec;
	char			**argv, **envp, *cwd;
	long long		 timeout_s, max_output;
	int			 outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
	int			 i;
	pid_t			 pid;

	*status = 400;
	if (exec_parse(req, workdir, &spec, cause) == -1)
		return NULL;
	argv = spec.argv;
	envp = spec.envp;
	cwd = spec.cwd;
	timeout_s = spec.timeout_s;
	max_output = spec.max_output;

	/* From here on the request was good; failing is agentd's fault. */
	*status = 503;
	if (pipe2(outp, O_CLOEXEC) == -1 || pipe2(errp, O_CLOEXEC) == -1) {
		xasprintf(cause, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (fcntl(outp[0], F_SETFL, O_NONBLOCK) == -1 ||
	    fcntl(errp[0], F_SETFL, O_NONBLOCK) == -1) {
		xasprintf(cause, "fcntl: %s", strerror(errno));
		goto fail;
	}
	if ((pid = agentd_fork()) == -1) {
		xasprintf(cause, "fork: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0)
		exec_child(argv, envp, cwd, outp[1], errp[1]);

	job = xcalloc(1, sizeof *job);
	job->pid = pid;
	job->fd[0] = outp[0];
	job->fd[1] = errp[0];
	close(outp[1]);
	close(errp[1]);
	job->max_output = (size_t)max_output;
	job->deadline_ms = time_mono_ms() + timeout_s * 1000;
	log_info("exec started\tpid=%ld cmd=\"%.64s\" timeout_s=%lld",
	    (long)pid, argv[0], timeout_s);
	exec_free_strv(argv);
	exec_free_strv(envp);
	free(cwd);
	return job;

fail:
	for (i = 0; i < 2; i++) {
		if (outp[i] != -1)
			close(outp[i]);
		if (errp[i] != -1)
			close(errp[i]);
	}
	exec_free_strv(argv);
	exec_free_strv(envp);
	free(cwd);
	return NULL;
}

/* fds to poll for this job; returns how many. */
int
exec_pollfds(struct exec_job *job, int fds[2])
{
	int	i, n = 0;

	for (i = 0; i < 2; i++) {
		if (job->fd[i] != -1)
			fds[n++] = job->fd[i];
	}
	return n;
}

/* Close one output pipe. */
static void
exec_close(struct exec_job *job, int i)
{
	if (job->fd[i] != -1) {
		close(job->fd[i]);
		job->fd[i] = -1;
	}
}

/* Read what is ready on fd, keeping at most max_output bytes of it. */
int
exec_read(struct exec_job *job, int fd)
{
	struct exec_output	*o;
	char			 buf[EXEC_READ_CHUNK];
	ssize_t			 n;
	size_t			 keep;
	int			 i, rounds;

	for (i = 0; i < 2; i++) {
		if (job->fd[i] == fd && fd != -1)
			break;
	}
	if (i == 2)
		return 0;
	o = &job->out[i];

	/* Bounded, so one chatty command cannot starve the loop. */
	for (rounds = 0; rounds < 16; rounds++) {
		n = read(fd, buf, sizeof buf);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				exec_close(job, i);
			return 0;
		}
		if (n == 0) {
			exec_close(job, i);
			return 0;
		}
		keep = (size_t)n;
		if (o->kept + keep > job->max_output) {
			keep = job->max_output - o->kept;
			job->truncated = 1;
		}
		if (keep == 0)
			continue;
		if (o->len + keep > o->size) {
			o->size = o->size == 0 ? 65536 : o->size;
			while (o->size < o->len + keep)
				o->size *= 2;
			if (!job->stream && o->size > job->max_output)
				o->size = job->max_output;
			o->buf = xrealloc(o->buf, o->size);
		}
		memcpy(o->buf + o->len, buf, keep);
		o->len += keep;
		o->kept += keep;
	}
	return 0;
}

/* A child was reaped; returns 1 if it was this job's. */
int
exec_reaped(struct exec_job *job, pid_t pid, int status, int64_t now_ms)
{
	if (job->reaped || pid != job->pid)
		return 0;
	job->reaped = 1;
	job->status = status;
	job->reaped_ms = now_ms;
	return 1;
}

/* Enforce the deadline and the pipe grace; ms to the next due time or -1. */
int
exec_tick(struct exec_job *job, int64_t now_ms)
{
	int64_t	due;

	if (!job->reaped) {
		if (job->timed_out)
			return -1;
		if (now_ms < job->deadline_ms)
			return (int)(job->deadline_ms - now_ms);
		log_info("exec timed out\tpid=%ld", (long)job->pid);
		job->timed_out = 1;
		exec_kill(job, SIGKILL);
		return -1;
	}
	if (job->fd[0] == -1 && job->fd[1] == -1)
		return -1;
	due = job->reaped_ms + EXEC_PIPE_GRACE_MS;
	if (now_ms < due)
		return (int)(due - now_ms);
	/* Take what is already in the pipes, then stop waiting for EOF. */
	exec_read(job, job->fd[0]);
	exec_read(job, job->fd[1]);
	exec_close(job, 0);
	exec_close(job, 1);
	return -1;
}

/* Send sig to the job's process group. */
void
exec_kill(struct exec_job *job, int sig)
{
	/* Before the child's setsid the group does not exist yet. */
	if (kill(-job->pid, sig) == -1 && errno == ESRCH && !job->reaped)
		kill(job->pid, sig);
}

/* 1 when both pipes are closed and the child reaped. */
int
exec_done(struct exec_job *job)
{
	return job->reaped && job->fd[0] == -1 && job->fd[1] == -1;
}

/* 1 while the child has not been reaped. */
int
exec_running(struct exec_job *job)
{
	return !job->reaped;
}

/* Copy buf as valid UTF-8, each bad byte replaced by U+FFFD. */
char *
exec_utf8_sanitize(const char *buf, size_t len, size_t *outlen)
{
	const unsigned char	*p = (const unsigned char *)buf;
	char			*out;
	size_t			 i = 0, o = 0, need, k;
	unsigned char		 c, lo, hi;

	out = xmalloc(len * 3 + 1);
	while (i < len) {
		c = p[i];
		lo = 0x80;
		hi = 0xbf;
		if (c < 0x80)
			need = 0;
		else if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			/* No overlong forms, no UTF-16 surrogates. */
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			/* No overlong forms, nothing above U+10FFFF. */
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else
			goto bad;
		if (i + need >= len && need > 0)
			goto bad;
		for (k = 1; k <= need; k++) {
			if (p[i + k] < (k == 1 ? lo : 0x80) ||
			    p[i + k] > (k == 1 ? hi : 0xbf))
				goto bad;
		}
		memcpy(out + o, p + i, need + 1);
		o += need + 1;
		i += need + 1;
		continue;
bad:
		memcpy(out + o, "\xef\xbf\xbd", 3);
		o += 3;
		i++;
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

/* exit_code and signal (-1: none) of a wait status. */
void
exec_status(int status, int *code, int *sig)
{
	*sig = -1;
	if (WIFEXITED(status))
		*code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status)) {
		*sig = WTERMSIG(status);
		*code = 128 + *sig;
	} else
		*code = -1;
}

/* Streaming mode from now on (before any output is read). */
void
exec_set_stream(struct exec_job *job)
{
	job->stream = 1;
}

/* One output line of a streaming exec: append its event. */
static void
exec_line_cb(void *arg, const char *p, size_t n)
{
	struct exec_job		*job = arg;
	struct json_object	*ev;
	const char		*text;
	char			*s;
	size_t			 sl, tl;

	s = exec_utf8_sanitize(p, n, &sl);
	ev = json_object_new_object();
	json_object_object_add(ev, "type", json_object_new_string("output"));
	json_object_object_add(ev, "stream", json_object_new_string(
	    job->sidx == 0 ? "stdout" : "stderr"));
	json_object_object_add(ev, "text", json_object_new_string_len(s,
	    (int)sl));
	text = json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE);
	tl = strlen(text);
	*job->sbuf = xrealloc(*job->sbuf, *job->slen + tl + 2);
	memcpy(*job->sbuf + *job->slen, text, tl);
	(*job->sbuf)[*job->slen + tl] = '\n';
	*job->slen += tl + 1;
	json_object_put(ev);
	free(s);
}

/* Streaming: move what was read into events; 1 once the exit is added. */
int
exec_stream_take(struct exec_job *job, char **buf, size_t *len)
{
	char	*s, sigs[16];
	int	 i, code, sig;

	if (job->exit_sent)
		return 1;
	job->sbuf = buf;
	job->slen = len;
	for (i = 0; i < 2; i++) {
		job->sidx = i;
		lines_feed(&job->out[i].lines, job->out[i].buf,
		    job->out[i].len, exec_line_cb, job);
		job->out[i].len = 0;
		if (job->fd[i] == -1)
			lines_flush(&job->out[i].lines, exec_line_cb, job);
	}
	if (!exec_done(job))
		return 0;
	exec_status(job->status, &code, &sig);
	if (sig == -1)
		snprintf(sigs, sizeof sigs, "null");
	else
		snprintf(sigs, sizeof sigs, "%d", sig);
	xasprintf(&s, "{\"type\":\"exit\",\"exit_code\":%d,\"signal\":%s,"
	    "\"timed_out\":%s,\"truncated\":%s}\n", code, sigs,
	    job->timed_out ? "true" : "false",
	    job->truncated ? "true" : "false");
	*buf = xrealloc(*buf, *len + strlen(s));
	memcpy(*buf + *len, s, strlen(s));
	*len += strlen(s);
	free(s);
	job->exit_sent = 1;
	return 1;
}

/* The response JSON text (malloc'd). */
char *
exec_result_json(struct exec_job *job)
{
	struct json_object	*obj;
	char			*s, *text;
	size_t			 n;
	int			 code, sig, i;
	static const char	*names[2] = { "stdout", "stderr" };

	exec_status(job->status, &code, &sig);

	obj = json_object_new_object();
	json_object_object_add(obj, "exit_code", json_object_new_int(code));
	for (i = 0; i < 2; i++) {
		s = exec_utf8_sanitize(job->out[i].buf == NULL ? "" :
		    job->out[i].buf, job->out[i].len, &n);
		json_object_object_add(obj, names[i],
		    json_object_new_string_len(s, (int)n));
		free(s);
	}
	json_object_object_add(obj, "timed_out",
	    json_object_new_boolean(job->timed_out));
	json_object_object_add(obj, "truncated",
	    json_object_new_boolean(job->truncated));
	text = xstrdup(json_object_to_json_string_ext(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
	return text;
}

/* Free the job; a child still running is killed (and reaped as an orphan). */
void
exec_free(struct exec_job *job)
{
	if (job == NULL)
		return;
	if (!job->reaped)
		exec_kill(job, SIGKILL);
	exec_close(job, 0);
	exec_close(job, 1);
	free(job->out[0].buf);
	free(job->out[1].buf);
	lines_free(&job->out[0].lines);
	lines_free(&job->out[1].lines);
	free(job);
}
