/*
 * Git checkpoints of the workspace. Each operation runs in a forked child
 * (its own session) that runs the git steps one after another and writes
 * one JSON result to a pipe; the loop polls the pipe and, once it is at EOF
 * and the child is reaped, calls the owner back. So a large workspace's
 * `git add -A` never stalls the loop.
 *
 * git only ever sees a temporary index under <state-dir>/git (never the
 * user's), the ref namespace refs/sandboxd/checkpoints/, and its author
 * from the environment: no branch, HEAD, index or config is touched.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>
#include <sys/wait.h>

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

/* A checkpoint of a huge workspace may take long; never forever. */
#define GIT_OP_TIMEOUT_MS	300000
#define GIT_MAX_RESULT		(64 * 1024 * 1024)
#define GIT_REF_PREFIX		"refs/sandboxd/checkpoints/"

struct git_op {
	enum git_op_kind	 kind;
	pid_t			 pid;
	int			 reaped;
	int			 status;
	int			 fd;		/* result pipe, -1 at EOF */
	char			*buf;
	size_t			 len;
	git_done_cb		 cb;		/* NULL: cancelled */
	void			*arg;
	int64_t			 deadline_ms;
	struct git_op		*next;
};

struct git_out {
	char	*buf;
	size_t	 len;
};

static const char	*git_workdir;
static const char	*git_state_dir;
static struct git_op	*git_ops;

static int	 git_run(const char *const *, const char *, const char *,
		    size_t, struct git_out *, char **);
static void	 git_child(enum git_op_kind, const char *, const char *, int)
		    SBX_NORETURN;
static int	 git_checkpoint(const char *, struct json_object *, char **);
static int	 git_snapshot(const char *, const char *, char **, char **);
static int	 git_changed(const char *, const char *, struct json_object *,
		    char **);
static int	 git_revert(const char *, struct json_object *, char **);
static int	 git_revert_diff(const char *, const char *, struct git_out *,
		    char **);
static int	 git_revert_apply(const char *, const char *, struct git_out *,
		    int, struct json_object *, char **);
static void	 git_rmdirs(const char *);
static void	 git_add_file(struct json_object *, const char *);
static void	 git_trim(struct git_out *);

void
git_init(const char *workdir, const char *state_dir)
{
	git_workdir = workdir;
	git_state_dir = state_dir;
}

/*
 * In the child: run git with these arguments, stdin from in[0..inlen),
 * stdout into *out; 0 on exit 0, else -1 with *cause holding git's stderr.
 */
static int
git_run(const char *const *args, const char *index, const char *in,
    size_t inlen, struct git_out *out, char **cause)
{
	const char	*argv[32];
	struct pollfd	 pfd[3];
	char		 buf[65536], *err = NULL;
	size_t		 errlen = 0, inoff = 0, i, n = 0;
	int		 inp[2], outp[2], errp[2], status, k;
	ssize_t		 r;
	pid_t		 pid;

	argv[n++] = "git";
	argv[n++] = "-c";
	argv[n++] = "safe.directory=*";
	/* A user's fsmonitor hook must not run as part of a checkpoint. */
	argv[n++] = "-c";
	argv[n++] = "core.fsmonitor=false";
	for (i = 0; args[i] != NULL && n < nitems(argv) - 1; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	if (index != NULL)
		setenv("GIT_INDEX_FILE", index, 1);
	else
		unsetenv("GIT_INDEX_FILE");

	if (pipe(inp) == -1 || pipe(outp) == -1 || pipe(errp) == -1) {
		xasprintf(cause, "pipe: %s", strerror(errno));
		return -1;
	}
	if ((pid = fork()) == -1) {
		xasprintf(cause, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		dup2(inp[0], STDIN_FILENO);
		dup2(outp[1], STDOUT_FILENO);
		dup2(errp[1], STDERR_FILENO);
		close(inp[0]); close(inp[1]);
		close(outp[0]); close(outp[1]);
		close(errp[0]); close(errp[1]);
		execvp("git", (char *const *)argv);
		dprintf(STDERR_FILENO, "exec git: %s", strerror(errno));
		_exit(127);
	}
	close(inp[0]);
	close(outp[1]);
	close(errp[1]);
	if (inlen == 0) {
		close(inp[1]);
		inp[1] = -1;
	}
	out->len = 0;
	for (;;) {
		pfd[0].fd = outp[0];
		pfd[0].events = POLLIN;
		pfd[1].fd = errp[0];
		pfd[1].events = POLLIN;
		pfd[2].fd = inp[1];
		pfd[2].events = POLLOUT;
		if (pfd[0].fd == -1 && pfd[1].fd == -1)
			break;
		if (poll(pfd, 3, -1) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[2].revents != 0) {
			r = write(inp[1], in + inoff, inlen - inoff);
			if (r > 0)
				inoff += (size_t)r;
			if (r <= 0 || inoff == inlen) {
				close(inp[1]);
				inp[1] = -1;
			}
		}
		for (k = 0; k < 2; k++) {
			if (pfd[k].revents == 0)
				continue;
			r = read(pfd[k].fd, buf, sizeof buf);
			if (r <= 0) {
				close(pfd[k].fd);
				if (k == 0)
					outp[0] = -1;
				else
					errp[0] = -1;
				continue;
			}
			if (k == 0) {
				out->buf = xrealloc(out->buf, out->len + r + 1);
				memcpy(out->buf + out->len, buf, r);
				out->len += r;
				out->buf[out->len] = '\0';
			} else if (errlen < 4096) {
				err = xrealloc(err, errlen + r + 1);
				memcpy(err + errlen, buf, r);
				errlen += r;
				err[errlen] = '\0';
			}
		}
	}
	if (inp[1] != -1)
		close(inp[1]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (out->buf == NULL)
		out->buf = xstrdup("");
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		free(err);
		return 0;
	}
	while (errlen > 0 && (err[errlen - 1] == '\n' || err[errlen - 1] == ' '))
		err[--errlen] = '\0';
	xasprintf(cause, "git %s: %s", args[0], err != NULL && *err != '\0' ?
	    err : "failed");
	free(err);
	return -1;
}

/* Strip the trailing newline of a one-line answer (a sha). */
static void
git_trim(struct git_out *o)
{
	while (o->len > 0 && (o->buf[o->len - 1] == '\n' ||
	    o->buf[o->len - 1] == '\r'))
		o->buf[--o->len] = '\0';
}

/* Add a path from git's output to the files array, as valid UTF-8. */
static void
git_add_file(struct json_object *files, const char *path)
{
	char	*s;
	size_t	 n;

	s = exec_utf8_sanitize(path, strlen(path), &n);
	json_object_array_add(files, json_object_new_string_len(s, (int)n));
	free(s);
}

/*
 * The workspace as a tree, through the index file (which may already hold
 * an earlier state: then only changed files are hashed). *tree malloc'd.
 */
static int
git_snapshot(const char *index, const char *base, char **tree, char **cause)
{
	struct git_out	 o = { NULL, 0 };
	const char	*rt[] = { "read-tree", base, NULL };
	const char	*add[] = { "add", "-A", "--ignore-errors", NULL };
	const char	*wt[] = { "write-tree", NULL };
	struct stat	 sb;

	if (base != NULL && stat(index, &sb) == -1 &&
	    git_run(rt, index, NULL, 0, &o, cause) == -1)
		goto fail;
	if (git_run(add, index, NULL, 0, &o, cause) == -1)
		goto fail;
	if (git_run(wt, index, NULL, 0, &o, cause) == -1)
		goto fail;
	git_trim(&o);
	*tree = o.buf;
	return 0;

fail:
	free(o.buf);
	return -1;
}

/* GIT_CHECKPOINT: init if needed, snapshot, commit, ref. */
static int
git_checkpoint(const char *tid, struct json_object *res, char **cause)
{
	struct git_out	 o = { NULL, 0 };
	struct stat	 sb;
	char		*index, *tree = NULL, *msg, *ref, *dotgit;
	int		 rc = -1;

	xasprintf(&dotgit, "%s/.git", git_workdir);
	if (stat(dotgit, &sb) == -1) {
		const char *init[] = { "init", "-q", git_workdir, NULL };

		/* Not under GIT_DIR/GIT_WORK_TREE: that would write config. */
		unsetenv("GIT_DIR");
		unsetenv("GIT_WORK_TREE");
		if (git_run(init, NULL, NULL, 0, &o, cause) == -1) {
			free(dotgit);
			return -1;
		}
		setenv("GIT_DIR", dotgit, 1);
		setenv("GIT_WORK_TREE", git_workdir, 1);
	}
	free(dotgit);
	xasprintf(&index, "%s/git/index-%s", git_state_dir, tid);
	unlink(index);
	xasprintf(&msg, "sandboxd checkpoint %s", tid);
	xasprintf(&ref, GIT_REF_PREFIX "%s", tid);
	if (git_snapshot(index, NULL, &tree, cause) == 0) {
		const char *ct[] = { "commit-tree", tree, "-m", msg, NULL };

		if (git_run(ct, index, NULL, 0, &o, cause) == 0) {
			const char *ur[] = { "update-ref", ref, o.buf, NULL };

			git_trim(&o);
			json_object_object_add(res, "commit",
			    json_object_new_string(o.buf));
			if (git_run(ur, index, NULL, 0, &o, cause) == 0)
				rc = 0;
		}
	}
	free(o.buf);
	free(tree);
	free(msg);
	free(ref);
	free(index);
	return rc;
}

/* GIT_CHANGED: the paths that differ between commit and the workspace. */
static int
git_changed(const char *tid, const char *commit, struct json_object *res,
    char **cause)
{
	struct git_out		 o = { NULL, 0 };
	struct json_object	*files;
	char			*index, *tree = NULL, *p;
	int			 rc = -1;

	xasprintf(&index, "%s/git/index-%s", git_state_dir, tid);
	if (git_snapshot(index, commit, &tree, cause) == 0) {
		const char *dt[] = { "diff-tree", "-r", "-z", "--no-renames",
		    "--name-only", commit, tree, NULL };

		if (git_run(dt, index, NULL, 0, &o, cause) == 0) {
			files = json_object_new_array();
			for (p = o.buf; p < o.buf + o.len; p += strlen(p) + 1)
				git_add_file(files, p);
			json_object_object_add(res, "files", files);
			rc = 0;
		}
	}
	unlink(index);
	free(index);
	free(tree);
	free(o.buf);
	return rc;
}

/* Remove the directories above a removed file that are now empty. */
static void
git_rmdirs(const char *path)
{
	char	*p, *slash;

	p = xstrdup(path);
	while ((slash = strrchr(p, '/')) != NULL) {
		*slash = '\0';
		if (rmdir(p) == -1)
			break;
	}
	free(p);
}

/* Snapshot the workspace into a fresh index and diff it to commit. */
static int
git_revert_diff(const char *index, const char *commit, struct git_out *o,
    char **cause)
{
	char	*tree = NULL;
	int	 rc;

	unlink(index);
	if (git_snapshot(index, commit, &tree, cause) == -1)
		return -1;
	{
		const char *dt[] = { "diff-tree", "-r", "-z", "--no-renames",
		    "--name-status", commit, tree, NULL };

		rc = git_run(dt, index, NULL, 0, o, cause);
	}
	free(tree);
	return rc;
}

/*
 * Put back the entries of a name-status list (only the .gitignore files
 * with ignores_only): added paths are removed, the others checked out
 * from commit. Paths go to files. Returns how many, or -1.
 */
static int
git_revert_apply(const char *index, const char *commit, struct git_out *o,
    int ignores_only, struct json_object *files, char **cause)
{
	struct git_out	 co = { NULL, 0 };
	char		*p, *status, *list = NULL, *full, *base;
	size_t		 listlen = 0, n;
	int		 count = 0, rc = 0;

	for (p = o->buf; p < o->buf + o->len;) {
		status = p;
		p += strlen(p) + 1;
		if (p >= o->buf + o->len)
			break;
		base = strrchr(p, '/');
		base = base != NULL ? base + 1 : p;
		if (ignores_only && strcmp(base, ".gitignore") != 0) {
			p += strlen(p) + 1;
			continue;
		}
		count++;
		git_add_file(files, p);
		if (*status == 'A') {
			xasprintf(&full, "%s/%s", git_workdir, p);
			if (unlink(full) == 0)
				git_rmdirs(full);
			free(full);
		} else {
			n = strlen(p) + 1;
			list = xrealloc(list, listlen + n);
			memcpy(list + listlen, p, n);
			listlen += n;
		}
		p += strlen(p) + 1;
	}
	if (listlen > 0) {
		const char *rt[] = { "read-tree", commit, NULL };
		const char *ci[] = { "checkout-index", "-f", "-z", "--stdin",
		    NULL };

		if (git_run(rt, index, NULL, 0, &co, cause) == -1 ||
		    git_run(ci, index, list, listlen, &co, cause) == -1)
			rc = -1;
	}
	free(list);
	free(co.buf);
	return rc == -1 ? -1 : count;
}

/*
 * GIT_REVERT: the workspace back to commit. Files added since are removed,
 * files changed or deleted are checked out again from the checkpoint;
 * untouched files are not rewritten (a dev server watching them sees only
 * the real changes). The .gitignore files go back first and the workspace
 * is looked at again: a task that un-ignored node_modules must not have
 * it taken for added and removed.
 */
static int
git_revert(const char *commit, struct json_object *res, char **cause)
{
	struct git_out		 o = { NULL, 0 };
	struct json_object	*files;
	char			*index, *spec;
	int			 rc = -1, n;
	const char		*ce[] = { "cat-file", "-e", NULL, NULL };

	xasprintf(&spec, "%s^{commit}", commit);
	ce[2] = spec;
	if (git_run(ce, NULL, NULL, 0, &o, cause) == -1) {
		free(*cause);
		xasprintf(cause, "checkpoint %s is not a commit in %s/.git",
		    commit, git_workdir);
		free(spec);
		free(o.buf);
		return -2;
	}
	free(spec);
	files = json_object_new_array();
	json_object_object_add(res, "files", files);
	xasprintf(&index, "%s/git/index-revert-%ld", git_state_dir,
	    (long)getpid());
	if (git_revert_diff(index, commit, &o, cause) == -1)
		goto out;
	if ((n = git_revert_apply(index, commit, &o, 1, files, cause)) == -1)
		goto out;
	if (n > 0 && git_revert_diff(index, commit, &o, cause) == -1)
		goto out;
	if (git_revert_apply(index, commit, &o, 0, files, cause) == -1)
		goto out;
	rc = 0;
out:
	unlink(index);
	free(index);
	free(o.buf);
	return rc;
}

/* The op's child: run it, write the JSON result, exit. */
static void
git_child(enum git_op_kind kind, const char *tid, const char *commit, int fd)
{
	struct json_object	*res;
	const char		*text;
	char			*cause = NULL, *dotgit, *dir;
	size_t			 len, off = 0;
	ssize_t			 n;
	int			 rc = -1, i;

	setsid();
	/*
	 * This child does not exec, so close-on-exec does not drop agentd's
	 * sockets: close them, or a connection agentd closes stays open to
	 * the daemon until we exit.
	 */
	if (fd != 3) {
		dup2(fd, 3);
		fd = 3;
	}
	if (close_range(4, ~0U, 0) == -1) {
		for (i = 4; i < 4096; i++)
			close(i);
	}
	xasprintf(&dotgit, "%s/.git", git_workdir);
	setenv("GIT_DIR", dotgit, 1);
	setenv("GIT_WORK_TREE", git_workdir, 1);
	setenv("GIT_AUTHOR_NAME", "sandboxd", 1);
	setenv("GIT_AUTHOR_EMAIL", "sandboxd@localhost", 1);
	setenv("GIT_COMMITTER_NAME", "sandboxd", 1);
	setenv("GIT_COMMITTER_EMAIL", "sandboxd@localhost", 1);
	setenv("GIT_TERMINAL_PROMPT", "0", 1);
	unsetenv("GIT_INDEX_FILE");
	res = json_object_new_object();
	xasprintf(&dir, "%s/git", git_state_dir);
	if (mkdir_p(dir, 0700) == -1)
		xasprintf(&cause, "mkdir %s: %s", dir, strerror(errno));
	else if (chdir(git_workdir) == -1)
		xasprintf(&cause, "chdir %s: %s", git_workdir,
		    strerror(errno));
	else if (kind == GIT_CHECKPOINT)
		rc = git_checkpoint(tid, res, &cause);
	else if (kind == GIT_CHANGED)
		rc = git_changed(tid, commit, res, &cause);
	else
		rc = git_revert(commit, res, &cause);
	json_object_object_add(res, "ok", json_object_new_boolean(rc == 0));
	if (rc != 0) {
		json_object_object_add(res, "error", json_object_new_string(
		    cause != NULL ? cause : "failed"));
		if (rc == -2)
			json_object_object_add(res, "bad_checkpoint",
			    json_object_new_boolean(1));
	}
	text = json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN);
	len = strlen(text);
	while (off < len) {
		n = write(fd, text + off, len - off);
		if (n <= 0 && errno != EINTR)
			break;
		if (n > 0)
			off += (size_t)n;
	}
	_exit(0);
}

/* Start an op in a child. */
struct git_op *
git_start(enum git_op_kind kind, const char *tid, const char *commit,
    git_done_cb cb, void *arg, char **cause)
{
	struct git_op	*op;
	int		 p[2];
	pid_t		 pid;

	if (pipe2(p, O_CLOEXEC) == -1) {
		xasprintf(cause, "pipe: %s", strerror(errno));
		return NULL;
	}
	if ((pid = agentd_fork()) == -1) {
		xasprintf(cause, "fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return NULL;
	}
	if (pid == 0) {
		close(p[0]);
		git_child(kind, tid, commit, p[1]);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	op = xcalloc(1, sizeof *op);
	op->kind = kind;
	op->pid = pid;
	op->fd = p[0];
	op->cb = cb;
	op->arg = arg;
	op->deadline_ms = time_mono_ms() + GIT_OP_TIMEOUT_MS;
	op->next = git_ops;
	git_ops = op;
	log_debug("git op started\tkind=%d pid=%ld", kind, (long)pid);
	return op;
}

/* The owner went away: finish quietly. */
void
git_cancel(struct git_op *op)
{
	op->cb = NULL;
	op->arg = NULL;
}

int
git_pollfds(int *fds, int max)
{
	struct git_op	*op;
	int		 n = 0;

	for (op = git_ops; op != NULL && n < max; op = op->next) {
		if (op->fd != -1)
			fds[n++] = op->fd;
	}
	return n;
}

void
git_read(int fd)
{
	struct git_op	*op;
	char		 buf[65536];
	ssize_t		 n;

	for (op = git_ops; op != NULL; op = op->next) {
		if (op->fd == fd)
			break;
	}
	if (op == NULL)
		return;
	for (;;) {
		n = read(fd, buf, sizeof buf);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0 || op->len + n > GIT_MAX_RESULT) {
			close(op->fd);
			op->fd = -1;
			return;
		}
		op->buf = xrealloc(op->buf, op->len + n + 1);
		memcpy(op->buf + op->len, buf, n);
		op->len += n;
		op->buf[op->len] = '\0';
	}
}

int
git_reaped(pid_t pid, int status)
{
	struct git_op	*op;

	for (op = git_ops; op != NULL; op = op->next) {
		if (!op->reaped && op->pid == pid) {
			op->reaped = 1;
			op->status = status;
			return 1;
		}
	}
	return 0;
}

int
git_running(void)
{
	return git_ops != NULL;
}

/* Finish done ops; returns ms to the next deadline or -1. */
int
git_dispatch(void)
{
	struct git_op		**pop, *op;
	struct json_object	 *res;
	int64_t			  now = time_mono_ms();
	int			  timeout = -1, t;

	for (pop = &git_ops; (op = *pop) != NULL;) {
		if (!op->reaped && now >= op->deadline_ms) {
			log_warnx("git op timed out\tpid=%ld", (long)op->pid);
			kill(-op->pid, SIGKILL);
			op->deadline_ms = INT64_MAX;
		}
		if (!op->reaped || op->fd != -1) {
			if (op->deadline_ms != INT64_MAX) {
				t = (int)(op->deadline_ms - now);
				if (timeout < 0 || t < timeout)
					timeout = t;
			}
			pop = &op->next;
			continue;
		}
		*pop = op->next;
		res = op->buf != NULL ? json_tokener_parse(op->buf) : NULL;
		if (res == NULL) {
			res = json_object_new_object();
			json_object_object_add(res, "ok",
			    json_object_new_boolean(0));
			json_object_object_add(res, "error",
			    json_object_new_string("git child failed"));
		}
		if (op->cb != NULL)
			op->cb(res, op->arg);
		json_object_put(res);
		free(op->buf);
		free(op);
	}
	return timeout;
}
