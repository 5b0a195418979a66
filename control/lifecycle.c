/*
 * Sandbox lifecycle: create, start, stop and delete as asynchronous
 * operations over the Docker client. The store changes first, then Docker
 * is made to follow; a failed create is rolled back so nothing is left
 * half-made. One operation per sandbox at a time.
 */
#include "config.h"

#include <sys/stat.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"

enum lifecycle_kind { OP_CREATE, OP_START, OP_STOP, OP_DELETE, OP_PAUSE,
	OP_UNPAUSE };

/*
 * Why a sandbox is looked at again when its operation ends (rt->recheck):
 * its container may have stopped (died, destroyed, a pause or thaw that
 * failed), or it started, which matters only if the sandbox is stopped
 * once the operation is over (a start of ours that failed, a stop).
 */
#define RECHECK_STATE	0x1
#define RECHECK_STARTED	0x2

/* What a recheck carries to its answer: the runtime may be gone by then. */
struct recheck {
	struct control	*ctl;
	char		 id[ID_LEN + 1];
};

struct lifecycle_op {
	struct control		*ctl;
	enum lifecycle_kind	 kind;
	char			 id[ID_LEN + 1];
	lifecycle_cb		 cb;
	void			*arg;
	char			*container_id;	/* known or just made */
	int			 made_container;	/* by this op */
	int			 retried;	/* name conflict retried once */
	int			 fail_status;	/* rolling back a create */
	char			*fail_msg;
	int			 gone;		/* the sandbox no longer exists */
};

static struct lifecycle_op *op_new(struct control *, enum lifecycle_kind,
	    const char *, lifecycle_cb, void *);
static void	op_finish(struct lifecycle_op *, int, const char *);
static void	op_fail(struct lifecycle_op *, int, const char *, ...)
		    SBX_PRINTF(3, 4);
static int	ensure_dirs(struct control *, const char *);
static void	seed_done_cb(int, void *);
static void	lifecycle_env_add(void *, const char *);
static void	container_create(struct lifecycle_op *);
static void	container_create_cb(int, struct json_object *, const char *,
		    void *);
static void	container_start(struct lifecycle_op *);
static void	container_start_cb(int, struct json_object *, const char *,
		    void *);
static void	container_inspect_cb(int, struct json_object *, const char *,
		    void *);
static void	create_rollback(struct lifecycle_op *, int, const char *);
static void	stale_removed_cb(int, struct json_object *, const char *,
		    void *);
static void	rollback_removed_cb(int, struct json_object *, const char *,
		    void *);
static void	stop_cb(int, struct json_object *, const char *, void *);
static void	delete_container_cb(int, struct json_object *, const char *,
		    void *);
static void	delete_dirs_cb(int, void *);
static int	remove_dirs(struct control *, const char *, control_child_cb,
		    void *);
static void	rollback_dirs_cb(int, void *);
static void	stop_container(struct lifecycle_op *);
static void	pause_cb(int, struct json_object *, const char *, void *);
static void	unpause_cb(int, struct json_object *, const char *, void *);
static void	recheck_cb(int, struct json_object *, const char *, void *);
static int	op_state(struct lifecycle_op *, enum sandbox_state,
		    const char *);
static int	op_may(struct lifecycle_op *, enum sandbox_state);
static void	op_state_or_resync(struct lifecycle_op *, enum sandbox_state,
		    const char *);
static void	state_or_resync(struct control *, struct sandbox_rt *,
		    enum sandbox_state, const char *, const char *);
static void	forget_container(struct control *, const char *,
		    const char *);

/*
 * Begin an operation on a sandbox, or NULL if one is in flight or the
 * sandbox is gone.
 */
static struct lifecycle_op *
op_new(struct control *ctl, enum lifecycle_kind kind, const char *id,
    lifecycle_cb cb, void *arg)
{
	struct sandbox_rt	*rt = rt_get(ctl, id);
	struct lifecycle_op	*op;

	if (rt == NULL || rt->op != NULL)
		return (NULL);
	op = xcalloc(1, sizeof *op);
	op->ctl = ctl;
	op->kind = kind;
	snprintf(op->id, sizeof op->id, "%s", id);
	op->cb = cb;
	op->arg = arg;
	rt_op_begin(ctl, rt, op);
	return (op);
}

/* End an operation and tell its caller; status is an HTTP status. */
static void
op_finish(struct lifecycle_op *op, int status, const char *message)
{
	struct control		*ctl = op->ctl;
	struct sandbox_rt	*rt = rt_find(ctl, op->id);
	char			 id[ID_LEN + 1];
	lifecycle_cb		 cb = op->cb;
	void			*arg = op->arg;
	int			 gone = op->gone;

	snprintf(id, sizeof id, "%s", op->id);
	free(op->container_id);
	free(op->fail_msg);
	free(op);
	if (rt != NULL && gone)
		rt_drop(ctl, rt);
	else if (rt != NULL) {
		/* Docker said something while we were busy: look again. */
		if (rt->recheck)
			lifecycle_recheck(ctl, rt);
		rt_op_end(ctl, rt, status >= 300);
	}
	if (cb != NULL)
		cb(ctl, id, status, message, arg);
}

/* Fail an operation: store the error on the sandbox where that helps. */
static void
op_fail(struct lifecycle_op *op, int status, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("out of memory");
	va_end(ap);
	log_warnx("sandbox operation failed: %s\tid=%s", msg, op->id);
	/* Docker away or too slow: what it did is not known for sure. */
	if (status == 503)
		control_resync(op->ctl);
	if (op->kind == OP_CREATE && op->fail_msg == NULL) {
		create_rollback(op, status, msg);
		free(msg);
		return;
	}
	/*
	 * Docker itself away (503) breaks nothing of the sandbox's: a start
	 * goes back to stopped, a thaw stays paused, and the next request
	 * tries again. Anything else Docker refused is the sandbox's error.
	 */
	if (op->kind == OP_START)
		op_state_or_resync(op, status == 503 ? SANDBOX_STOPPED :
		    SANDBOX_ERROR, status == 503 ? NULL : msg);
	else if (op->kind == OP_UNPAUSE && status != 503)
		op_state_or_resync(op, SANDBOX_ERROR, msg);
	op_finish(op, status, msg);
	free(msg);
}

/* The host directories a sandbox mounts; made if missing, idempotent. */
static int
ensure_dirs(struct control *ctl, const char *id)
{
	static const char	*owned[] = { "workspaces", "homes" };
	char			*path;
	size_t			 i;

	for (i = 0; i < nitems(owned); i++) {
		path = control_sandbox_dir(ctl, owned[i], id);
		if (mkdir(path, 0755) == -1 && errno != EEXIST) {
			log_warn("mkdir %s", path);
			free(path);
			return (-1);
		}
		/* The sandbox user owns its files; lchown never follows. */
		if (lchown(path, SANDBOX_UID, SANDBOX_GID) == -1) {
			log_warn("chown %s", path);
			free(path);
			return (-1);
		}
		free(path);
	}
	/* The rendezvous dir stays root's: the sandbox must not write it. */
	path = control_sandbox_dir(ctl, "run", id);
	if (mkdir(path, 0755) == -1 && errno != EEXIST) {
		log_warn("mkdir %s", path);
		free(path);
		return (-1);
	}
	if (agent_listen(ctl->hub, id, path) == -1) {
		free(path);
		return (-1);
	}
	free(path);
	return (0);
}

/* One "NAME=value" line into a container's Env array. */
static void
lifecycle_env_add(void *arg, const char *line)
{
	json_object_array_add(arg, json_object_new_string(line));
}

/* The JSON body of POST /containers/create for this sandbox. */
struct json_object *
lifecycle_container_spec(struct control *ctl, const struct store_sandbox *s)
{
	const struct cfg_template	*t = control_template(ctl,
					    s->template_name);
	struct json_object		*spec, *hc, *arr, *labels, *o, *env;
	struct json_object		*user_env;
	const char			*js;
	char				*ws, *home, *run, buf[4096];

	spec = json_object_new_object();
	json_object_object_add(spec, "Image",
	    json_object_new_string(t != NULL ? t->image : "invalid"));
	arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_string(
	    AGENTD_CONTAINER_PATH));
	json_object_object_add(spec, "Entrypoint", arr);
	arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_string("--socket"));
	json_object_array_add(arr, json_object_new_string(
	    AGENTD_RUN_DIR "/" AGENTD_SOCKET_NAME));
	json_object_array_add(arr, json_object_new_string("--workdir"));
	json_object_array_add(arr, json_object_new_string("/workspace"));
	if (t != NULL && t->dev_command != NULL) {
		json_object_array_add(arr,
		    json_object_new_string("--dev-command"));
		json_object_array_add(arr,
		    json_object_new_string(t->dev_command));
		/* agentd's readiness probe: "ready" once the port accepts. */
		snprintf(buf, sizeof buf, "%d", t->port);
		json_object_array_add(arr,
		    json_object_new_string("--dev-port"));
		json_object_array_add(arr, json_object_new_string(buf));
	}
	json_object_object_add(spec, "Cmd", arr);
	snprintf(buf, sizeof buf, "%d:%d", SANDBOX_UID, SANDBOX_GID);
	json_object_object_add(spec, "User", json_object_new_string(buf));
	json_object_object_add(spec, "WorkingDir",
	    json_object_new_string("/workspace"));
	json_object_object_add(spec, "Hostname",
	    json_object_new_string("sandbox"));

	env = json_object_new_array();
	json_object_array_add(env, json_object_new_string(
	    "HOME=/home/sandbox"));
	snprintf(buf, sizeof buf, "SANDBOX_ID=%s", s->id);
	json_object_array_add(env, json_object_new_string(buf));
	snprintf(buf, sizeof buf, "PORT=%d", s->port);
	json_object_array_add(env, json_object_new_string(buf));
	user_env = json_tokener_parse(s->env_json != NULL ? s->env_json :
	    "{}");
	if (user_env != NULL && json_object_is_type(user_env,
	    json_type_object)) {
		provider_env(ctl, s->id, user_env, lifecycle_env_add, env);
		json_object_object_foreach(user_env, k, v) {
			char *kv;

			xasprintf(&kv, "%s=%s", k, json_object_get_string(v));
			json_object_array_add(env, json_object_new_string(kv));
			free(kv);
		}
	}
	json_object_put(user_env);
	/*
	 * Last, so a user env entry of that name does not win. Only agentd
	 * reads it: it unsets it before anything else runs.
	 */
	agent_token_env(ctl->hub, s->id, buf, sizeof buf);
	json_object_array_add(env, json_object_new_string(buf));
	json_object_object_add(spec, "Env", env);

	labels = json_object_new_object();
	json_object_object_add(labels, CONTROL_LABEL_INSTANCE,
	    json_object_new_string(ctl->cf->instance));
	json_object_object_add(labels, CONTROL_LABEL_SANDBOX,
	    json_object_new_string(s->id));
	json_object_object_add(spec, "Labels", labels);

	hc = json_object_new_object();
	json_object_object_add(hc, "ReadonlyRootfs",
	    json_object_new_boolean(1));
	arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_string("ALL"));
	json_object_object_add(hc, "CapDrop", arr);
	arr = json_object_new_array();
	json_object_array_add(arr,
	    json_object_new_string("no-new-privileges"));
	json_object_object_add(hc, "SecurityOpt", arr);
	json_object_object_add(hc, "PidsLimit", json_object_new_int64(
	    t != NULL ? t->pids_limit : 512));
	json_object_object_add(hc, "Memory",
	    json_object_new_int64((int64_t)s->memory_mb * 1024 * 1024));
	json_object_object_add(hc, "MemorySwap",
	    json_object_new_int64((int64_t)s->memory_mb * 1024 * 1024));
	json_object_object_add(hc, "NanoCpus",
	    json_object_new_int64((int64_t)(s->cpus * 1e9)));
	arr = json_object_new_array();
	o = json_object_new_object();
	json_object_object_add(o, "Name", json_object_new_string("nofile"));
	json_object_object_add(o, "Soft", json_object_new_int(4096));
	json_object_object_add(o, "Hard", json_object_new_int(4096));
	json_object_array_add(arr, o);
	json_object_object_add(hc, "Ulimits", arr);
	/*
	 * /tmp's pages are the sandbox's memory: at most half of it, so a
	 * full /tmp is ENOSPC for the writer, not the OOM killer taking the
	 * dev server (and the memory stays pinned until the file goes).
	 */
	snprintf(buf, sizeof buf, "rw,exec,nosuid,nodev,size=%dm",
	    s->memory_mb / 2 < 256 ? (s->memory_mb / 2 > 0 ?
	    s->memory_mb / 2 : 1) : 256);
	o = json_object_new_object();
	json_object_object_add(o, "/tmp", json_object_new_string(buf));
	json_object_object_add(hc, "Tmpfs", o);

	ws = control_sandbox_dir(ctl, "workspaces", s->id);
	home = control_sandbox_dir(ctl, "homes", s->id);
	run = control_sandbox_dir(ctl, "run", s->id);
	arr = json_object_new_array();
	snprintf(buf, sizeof buf, "%s:/workspace:rw", ws);
	json_object_array_add(arr, json_object_new_string(buf));
	snprintf(buf, sizeof buf, "%s:/home/sandbox:rw", home);
	json_object_array_add(arr, json_object_new_string(buf));
	snprintf(buf, sizeof buf, "%s:" AGENTD_RUN_DIR ":ro", run);
	json_object_array_add(arr, json_object_new_string(buf));
	snprintf(buf, sizeof buf, "%s:" AGENTD_CONTAINER_PATH ":ro",
	    ctl->cf->agentd_path);
	json_object_array_add(arr, json_object_new_string(buf));
	json_object_object_add(hc, "Binds", arr);
	free(ws);
	free(home);
	free(run);

	json_object_object_add(hc, "NetworkMode",
	    json_object_new_string(ctl->cf->network));
	o = json_object_new_object();
	json_object_object_add(o, "Name", json_object_new_string("no"));
	json_object_object_add(hc, "RestartPolicy", o);
	json_object_object_add(spec, "HostConfig", hc);

	/*
	 * What the container was made from, so the reconciler can tell a
	 * container made by an older sandboxd or before a config change
	 * (no agentd token, other limits) and make it again.
	 */
	js = json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN);
	digest_sha256_hex(js, strlen(js), buf);
	buf[CONTROL_SPEC_HASH_LEN] = '\0';
	json_object_object_add(labels, CONTROL_LABEL_SPEC,
	    json_object_new_string(buf));
	return (spec);
}

/* Create a sandbox whose row is already in the store (state creating). */
int
lifecycle_create(struct control *ctl, const struct store_sandbox *s,
    lifecycle_cb cb, void *arg)
{
	const struct cfg_template	*t;
	struct lifecycle_op		*op;
	struct sandbox_rt		*rt;
	char				*ws, owner[32];

	if ((op = op_new(ctl, OP_CREATE, s->id, cb, arg)) == NULL)
		return (-1);
	if ((rt = rt_find(ctl, s->id)) != NULL)
		rt_reserve(rt);
	if (ensure_dirs(ctl, s->id) == -1) {
		op_fail(op, 500, "cannot make the sandbox's directories");
		return (0);
	}
	t = control_template(ctl, s->template_name);
	if (t == NULL || t->seed_dir == NULL) {
		container_create(op);
		return (0);
	}
	/*
	 * A fresh workspace, before the sandbox first runs: nothing in it can
	 * race the copy. The paths go in as arguments, never into the script.
	 */
	ws = control_sandbox_dir(ctl, "workspaces", s->id);
	snprintf(owner, sizeof owner, "%d:%d", SANDBOX_UID, SANDBOX_GID);
	{
		char *const argv[] = { "/bin/sh", "-c",
		    "cp -a \"$1\"/. \"$2\"/ && chown -R -P \"$3\" \"$2\"",
		    "seed", t->seed_dir, ws, owner, NULL };

		if (control_spawn(ctl, argv, seed_done_cb, op) == -1)
			op_fail(op, 500, "cannot copy the template's seed_dir");
	}
	free(ws);
	return (0);
}

/* The workspace is seeded: go on to the container. */
static void
seed_done_cb(int status, void *arg)
{
	struct lifecycle_op	*op = arg;

	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		op_fail(op, 500, "copying the template's seed_dir failed");
		return;
	}
	container_create(op);
}

/* POST /containers/create from the store row. */
static void
container_create(struct lifecycle_op *op)
{
	struct control		*ctl = op->ctl;
	struct store_sandbox	 s;
	struct json_object	*spec;
	char			 path[256];

	if (store_sandbox_get(ctl->store, op->id, &s) != 0) {
		op_fail(op, 404, "sandbox vanished from the store");
		return;
	}
	if (control_template(ctl, s.template_name) == NULL) {
		op_fail(op, 500, "template %s is no longer configured",
		    s.template_name);
		store_sandbox_clear(&s);
		return;
	}
	spec = lifecycle_container_spec(ctl, &s);
	store_sandbox_clear(&s);
	snprintf(path, sizeof path, "/containers/create?name=%s-%s",
	    ctl->cf->instance, op->id);
	docker_request(ctl->docker, "POST", path, spec, 0,
	    container_create_cb, op);
	json_object_put(spec);
}

/* The container exists: remember its id, then start it. */
static void
container_create_cb(int status, struct json_object *body,
    const char *errmsg, void *arg)
{
	struct lifecycle_op	*op = arg;
	struct json_object	*o;
	char			 path[256];

	if (status == 409 && !op->retried) {
		/* A container of ours by that name survived a crash. */
		op->retried = 1;
		snprintf(path, sizeof path, "/containers/%s-%s?force=true",
		    op->ctl->cf->instance, op->id);
		docker_request(op->ctl->docker, "DELETE", path, NULL, 0,
		    stale_removed_cb, op);
		return;
	}
	if (status != 201 || !json_object_object_get_ex(body, "Id", &o)) {
		if (status == 0)
			op_fail(op, 503, "Docker is unavailable: %s", errmsg);
		else
			op_fail(op, 500, "Docker could not create the "
			    "container: %s", errmsg != NULL ? errmsg : "?");
		return;
	}
	free(op->container_id);
	op->container_id = xstrdup(json_object_get_string(o));
	op->made_container = 1;
	if (store_sandbox_set_container(op->ctl->store, op->id,
	    op->container_id) != 0) {
		op_fail(op, 500, "cannot record the container");
		return;
	}
	container_start(op);
}

/* POST /containers/{id}/start. */
static void
container_start(struct lifecycle_op *op)
{
	const char	*why;
	char		 path[256];

	/* Never a sandbox on the network without the rules (503: try later). */
	if (egress_admit(op->ctl, &why) == -1) {
		op_fail(op, 503, "%s", why);
		return;
	}
	snprintf(path, sizeof path, "/containers/%s/start", op->container_id);
	docker_request(op->ctl->docker, "POST", path, NULL, 0,
	    container_start_cb, op);
}

/* Started (or gone, for a start of a stopped sandbox): find its address. */
static void
container_start_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct lifecycle_op	*op = arg;
	char			 path[256];

	if (status == 404 && !op->made_container) {
		/* The container was removed behind our back: make it anew. */
		log_info("container missing, recreating it\tid=%s", op->id);
		container_create(op);
		return;
	}
	if (status != 204 && status != 304) {
		if (status == 0)
			op_fail(op, 503, "Docker is unavailable: %s", errmsg);
		else
			op_fail(op, 500, "Docker could not start the "
			    "container: %s", errmsg != NULL ? errmsg : "?");
		return;
	}
	snprintf(path, sizeof path, "/containers/%s/json", op->container_id);
	docker_request(op->ctl->docker, "GET", path, NULL, 0,
	    container_inspect_cb, op);
}

/* Read the container's IP on our network; the sandbox is now running. */
static void
container_inspect_cb(int status, struct json_object *body,
    const char *errmsg, void *arg)
{
	struct lifecycle_op	*op = arg;
	struct control		*ctl = op->ctl;
	struct sandbox_rt	*rt;
	struct in_addr		 ip;
	int			 ok = 0;

	if (status == 200 && control_container_ip(ctl, body, &ip) == 0)
		ok = 1;
	if (!ok && status == 0) {
		/* Docker went away after the start: nothing of ours is wrong. */
		op_fail(op, 503, "Docker is unavailable: %s", errmsg);
		return;
	}
	if (!ok) {
		op_fail(op, 500, "container has no address on network %s%s%s",
		    ctl->cf->network, errmsg != NULL ? ": " : "",
		    errmsg != NULL ? errmsg : "");
		return;
	}
	if ((rt = rt_find(ctl, op->id)) == NULL ||
	    rt_set_running(ctl, rt, ip, 0) != 0) {
		op_fail(op, 500, "cannot record the new state");
		return;
	}
	log_info("sandbox running\tid=%s ip=%s", op->id, inet_ntoa(ip));
	if (op->kind == OP_CREATE)
		ctl->creates_total++;
	else
		ctl->starts_total++;
	op_finish(op, op->kind == OP_CREATE ? 201 : 200, NULL);
}

/* A stale container with our name is gone: create ours again. */
static void
stale_removed_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct lifecycle_op	*op = arg;

	if (status != 204 && status != 404) {
		op_fail(op, status == 0 ? 503 : 500, "cannot remove a stale "
		    "container: %s", errmsg != NULL ? errmsg : "?");
		return;
	}
	container_create(op);
}

/*
 * Undo a failed create: remove the container and the directories, forget
 * the row, then report the original failure.
 */
static void
create_rollback(struct lifecycle_op *op, int status, const char *msg)
{
	char	path[256];

	op->fail_status = status;
	op->fail_msg = xstrdup(msg);
	snprintf(path, sizeof path, "/containers/%s-%s?force=true",
	    op->ctl->cf->instance, op->id);
	docker_request(op->ctl->docker, "DELETE", path, NULL, 0,
	    rollback_removed_cb, op);
}

/*
 * The failed create's container is gone: remove its directories. If it
 * could not be removed, the row stays so that nothing runs that the store
 * does not know: in error if Docker refused, or deleting if Docker is away
 * (the client was told the create failed, so the reconcile that runs when
 * Docker is back finishes the rollback instead of leaving an orphan row).
 */
static void
rollback_removed_cb(int status, struct json_object *body,
    const char *errmsg, void *arg)
{
	struct lifecycle_op	*op = arg;
	char			*msg;

	if (status == 0) {
		xasprintf(&msg, "%s (Docker is away: the rollback finishes "
		    "when it is back)", op->fail_msg);
		op_state_or_resync(op, SANDBOX_DELETING, msg);
		op_finish(op, op->fail_status, msg);
		free(msg);
		return;
	}
	if (status != 204 && status != 404) {
		xasprintf(&msg, "%s (and its container could not be removed: "
		    "%s)", op->fail_msg, errmsg != NULL ? errmsg : "?");
		op_state_or_resync(op, SANDBOX_ERROR, msg);
		op_finish(op, op->fail_status, msg);
		free(msg);
		return;
	}
	if (remove_dirs(op->ctl, op->id, rollback_dirs_cb, op) == -1)
		rollback_dirs_cb(0, op);
}

/*
 * The rollback is complete: drop the row and report the failure. A row
 * the store cannot delete stays, and so does the sandbox in memory (never
 * one forgotten here that the store still lists): in error, saying so,
 * for a delete to finish; the reconcile retries what the store refused.
 */
static void
rollback_dirs_cb(int status, void *arg)
{
	struct lifecycle_op	*op = arg;
	struct control		*ctl = op->ctl;
	char			*msg;

	agent_forget(ctl->hub, op->id);
	if (store_sandbox_delete(ctl->store, op->id) == -1) {
		xasprintf(&msg, "%s (and its record could not be removed "
		    "from the store: delete the sandbox)", op->fail_msg);
		log_warnx("create rollback: cannot delete the sandbox row; "
		    "the sandbox stays, for a delete\tid=%s", op->id);
		op_state_or_resync(op, SANDBOX_ERROR, msg);
		op_finish(op, op->fail_status, msg);
		free(msg);
		return;
	}
	msg = xstrdup(op->fail_msg);
	op->gone = 1;
	op_finish(op, op->fail_status, msg);
	free(msg);
}

/* Move the op's sandbox to a state (through the runtime's table). */
static int
op_state(struct lifecycle_op *op, enum sandbox_state state,
    const char *error)
{
	struct sandbox_rt	*rt = rt_find(op->ctl, op->id);

	if (rt == NULL)
		return (-1);
	return (rt_set_state(op->ctl, rt, state, error));
}

/* 1 if the op's sandbox may move to state (a refusal is then the store's). */
static int
op_may(struct lifecycle_op *op, enum sandbox_state state)
{
	struct sandbox_rt	*rt = rt_find(op->ctl, op->id);

	return (rt != NULL && rt_may(rt, state));
}

/* op_state where the answer goes out whatever: see state_or_resync. */
static void
op_state_or_resync(struct lifecycle_op *op, enum sandbox_state state,
    const char *error)
{
	struct sandbox_rt	*rt = rt_find(op->ctl, op->id);

	if (rt != NULL)
		state_or_resync(op->ctl, rt, state, error, "operation failed");
}

/*
 * Move a sandbox to state on a path that cannot refuse (a failure's
 * state, or what Docker says happened). If the store cannot record it,
 * rt_set_state changed nothing: memory stays as the store has it, the
 * store said why (store_warn), we say what was not recorded, and a
 * reconcile soon brings both to what Docker has.
 */
static void
state_or_resync(struct control *ctl, struct sandbox_rt *rt,
    enum sandbox_state state, const char *error, const char *after)
{
	if (rt_set_state(ctl, rt, state, error) == 0)
		return;
	log_warnx("%s: cannot record state %s, it stays %s; reconciling "
	    "again\tid=%s", after, store_sandbox_state_name(state),
	    store_sandbox_state_name(rt->state), rt->id);
	control_resync(ctl);
}

/* Docker removed the container: the store forgets it, or a reconcile will. */
static void
forget_container(struct control *ctl, const char *id, const char *after)
{
	if (store_sandbox_set_container(ctl->store, id, NULL) == -1) {
		log_warnx("%s: cannot forget the removed container in the "
		    "store; reconciling again\tid=%s", after, id);
		control_resync(ctl);
	}
}

/*
 * Start a stopped sandbox (or one the reconciler found without its
 * container), recreating its container if it is gone.
 */
int
lifecycle_start(struct control *ctl, const char *id, lifecycle_cb cb,
    void *arg)
{
	struct lifecycle_op	*op;
	struct sandbox_rt	*rt;
	struct store_sandbox	 s;

	if (store_sandbox_get(ctl->store, id, &s) != 0)
		return (-1);
	if ((op = op_new(ctl, OP_START, id, cb, arg)) == NULL) {
		store_sandbox_clear(&s);
		return (-1);
	}
	if ((rt = rt_find(ctl, id)) != NULL)
		rt_reserve(rt);
	if (op_state(op, SANDBOX_STARTING, NULL) != 0) {
		store_sandbox_clear(&s);
		/* A full disk is no conflict: say which it was. */
		if (op_may(op, SANDBOX_STARTING))
			op_finish(op, 500, "cannot record the new state (the "
			    "store could not be written); try again");
		else
			op_finish(op, 409, "the sandbox cannot be started from "
			    "its state");
		return (0);
	}
	if (ensure_dirs(ctl, id) == -1) {
		store_sandbox_clear(&s);
		op_fail(op, 500, "cannot make the sandbox's directories");
		return (0);
	}
	agent_reset(ctl->hub, id);
	if (s.container_id == NULL) {
		store_sandbox_clear(&s);
		container_create(op);
		return (0);
	}
	op->container_id = xstrdup(s.container_id);
	store_sandbox_clear(&s);
	container_start(op);
	return (0);
}

/* Stop a running or paused sandbox; its files stay. */
int
lifecycle_stop(struct control *ctl, const char *id, lifecycle_cb cb,
    void *arg)
{
	struct lifecycle_op	*op;
	struct store_sandbox	 s;
	char			 path[256];
	int			 paused;

	if (store_sandbox_get(ctl->store, id, &s) != 0)
		return (-1);
	if ((op = op_new(ctl, OP_STOP, id, cb, arg)) == NULL) {
		store_sandbox_clear(&s);
		return (-1);
	}
	paused = s.state == SANDBOX_PAUSED;
	if (s.container_id != NULL)
		op->container_id = xstrdup(s.container_id);
	store_sandbox_clear(&s);
	/* From here no request is routed there (rt_set_state retires it). */
	if (op_state(op, SANDBOX_STOPPING, NULL) != 0) {
		if (op_may(op, SANDBOX_STOPPING))
			op_finish(op, 500, "cannot record the new state (the "
			    "store could not be written); try again");
		else
			op_finish(op, 409, "the sandbox cannot be stopped from "
			    "its state");
		return (0);
	}
	if (op->container_id == NULL) {
		stop_cb(404, NULL, NULL, op);
		return (0);
	}
	if (paused) {
		/*
		 * A frozen container cannot take its SIGTERM: docker stop
		 * would wait out its timeout and kill. Thaw it first (~20 ms).
		 */
		snprintf(path, sizeof path, "/containers/%s/unpause",
		    op->container_id);
		docker_request(ctl->docker, "POST", path, NULL, 10000,
		    unpause_cb, op);
		return (0);
	}
	stop_container(op);
	return (0);
}

/* POST /containers/{id}/stop: agentd ends its children on SIGTERM. */
static void
stop_container(struct lifecycle_op *op)
{
	char	path[256];

	snprintf(path, sizeof path, "/containers/%s/stop?t=5",
	    op->container_id);
	docker_request(op->ctl->docker, "POST", path, NULL, 30000, stop_cb,
	    op);
}

/* The container stopped (or was not there): the sandbox is stopped. */
static void
stop_cb(int status, struct json_object *body, const char *errmsg, void *arg)
{
	struct lifecycle_op	*op = arg;
	struct control		*ctl = op->ctl;

	if (status != 204 && status != 304 && status != 404) {
		/*
		 * Docker away: the container may still run. It stays
		 * stopping (and unroutable); the reconcile that runs when
		 * Docker is back finishes the stop.
		 */
		if (status != 0)
			op_state_or_resync(op, SANDBOX_ERROR, errmsg);
		op_fail(op, status == 0 ? 503 : 500,
		    "Docker could not stop the container: %s",
		    errmsg != NULL ? errmsg : "?");
		return;
	}
	agent_reset(ctl->hub, op->id);
	if (op_state(op, SANDBOX_STOPPED, NULL) != 0) {
		op_fail(op, 500, "cannot record the new state");
		return;
	}
	log_info("sandbox stopped\tid=%s", op->id);
	op_finish(op, 200, NULL);
}

/*
 * Freeze a running sandbox: its memory stays, its CPU is free, and a
 * request thaws it in a few tens of milliseconds.
 */
int
lifecycle_pause(struct control *ctl, const char *id, lifecycle_cb cb,
    void *arg)
{
	struct lifecycle_op	*op;
	struct sandbox_rt	*rt;
	struct store_sandbox	 s;
	char			 path[256];

	if (store_sandbox_get(ctl->store, id, &s) != 0)
		return (-1);
	if (s.state != SANDBOX_RUNNING || s.container_id == NULL ||
	    (op = op_new(ctl, OP_PAUSE, id, cb, arg)) == NULL) {
		store_sandbox_clear(&s);
		return (-1);
	}
	op->container_id = xstrdup(s.container_id);
	store_sandbox_clear(&s);
	/* Nothing may reach a frozen container: stop routing first. */
	if ((rt = rt_find(ctl, id)) != NULL)
		rt_retire(ctl, rt);
	snprintf(path, sizeof path, "/containers/%s/pause", op->container_id);
	docker_request(ctl->docker, "POST", path, NULL, 10000, pause_cb, op);
	return (0);
}

/* Frozen (or it was not running after all). */
static void
pause_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct lifecycle_op	*op = arg;
	struct sandbox_rt	*rt;

	if (status != 204) {
		/* Still running as far as we know: route to it again. */
		log_warnx("cannot pause sandbox: %s\tid=%s status=%d",
		    errmsg != NULL ? errmsg : "?", op->id, status);
		if ((rt = rt_find(op->ctl, op->id)) != NULL &&
		    rt->state == SANDBOX_RUNNING)
			rt->recheck |= RECHECK_STATE;
		op_finish(op, status == 0 ? 503 : 500, "cannot pause");
		return;
	}
	if (op_state(op, SANDBOX_PAUSED, NULL) != 0) {
		op_finish(op, 500, "cannot record the new state");
		return;
	}
	log_info("sandbox paused\tid=%s", op->id);
	op_finish(op, 200, NULL);
}

/* Thaw a paused sandbox. */
int
lifecycle_unpause(struct control *ctl, const char *id, lifecycle_cb cb,
    void *arg)
{
	struct lifecycle_op	*op;
	struct store_sandbox	 s;
	const char		*why;
	char			 path[256];

	/* Its traffic resumes: not without the network rules. */
	if (egress_admit(ctl, &why) == -1)
		return (-1);
	if (store_sandbox_get(ctl->store, id, &s) != 0)
		return (-1);
	if (s.state != SANDBOX_PAUSED || s.container_id == NULL ||
	    (op = op_new(ctl, OP_UNPAUSE, id, cb, arg)) == NULL) {
		store_sandbox_clear(&s);
		return (-1);
	}
	op->container_id = xstrdup(s.container_id);
	store_sandbox_clear(&s);
	snprintf(path, sizeof path, "/containers/%s/unpause",
	    op->container_id);
	docker_request(ctl->docker, "POST", path, NULL, 10000, unpause_cb, op);
	return (0);
}

/* Thawed: running again (same address, a new generation), or go on to stop. */
static void
unpause_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct lifecycle_op	*op = arg;
	struct sandbox_rt	*rt = rt_find(op->ctl, op->id);

	if (op->kind == OP_STOP) {
		/* Whatever the thaw did, the stop goes on (and kills). */
		stop_container(op);
		return;
	}
	if (status == 404 || status == 409) {
		/* Gone or not paused after all: the recheck tells which. */
		if (rt != NULL)
			rt->recheck |= RECHECK_STATE;
		op_finish(op, 503, "the container was not paused");
		return;
	}
	if (status != 204) {
		op_fail(op, status == 0 ? 503 : 500, "Docker could not unpause "
		    "the container: %s", errmsg != NULL ? errmsg : "?");
		return;
	}
	/* The port accepted before the pause and still does. */
	if (rt == NULL || rt_set_running(op->ctl, rt, rt->ip,
	    rt->port_state == RT_PORT_READY) != 0) {
		op_fail(op, 500, "cannot record the new state");
		return;
	}
	log_info("sandbox unpaused\tid=%s", op->id);
	op->ctl->unpauses_total++;
	op_finish(op, 200, NULL);
}

/* Delete a sandbox: container, workspace, home and task logs. */
int
lifecycle_delete(struct control *ctl, const char *id, lifecycle_cb cb,
    void *arg)
{
	struct lifecycle_op	*op;
	char			 path[256];

	if ((op = op_new(ctl, OP_DELETE, id, cb, arg)) == NULL)
		return (-1);
	if (op_state(op, SANDBOX_DELETING, NULL) != 0) {
		op_finish(op, 500, "cannot record the new state");
		return (0);
	}
	/* By name: works even if the store never learnt the container id. */
	snprintf(path, sizeof path, "/containers/%s-%s?force=true",
	    ctl->cf->instance, id);
	docker_request(ctl->docker, "DELETE", path, NULL, 30000,
	    delete_container_cb, op);
	return (0);
}

/* The container is gone: remove the directories. */
static void
delete_container_cb(int status, struct json_object *body,
    const char *errmsg, void *arg)
{
	struct lifecycle_op	*op = arg;

	if (status != 204 && status != 404) {
		/* Stay in "deleting": the reconciler finishes it later. */
		op_fail(op, status == 0 ? 503 : 500,
		    "Docker could not remove the container: %s",
		    errmsg != NULL ? errmsg : "?");
		return;
	}
	if (remove_dirs(op->ctl, op->id, delete_dirs_cb, op) == -1)
		op_fail(op, 500, "cannot remove the sandbox's files");
}

/* Files removed: forget the sandbox. */
static void
delete_dirs_cb(int status, void *arg)
{
	struct lifecycle_op	*op = arg;
	struct control		*ctl = op->ctl;

	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		op_fail(op, 500, "cannot remove the sandbox's files");
		return;
	}
	agent_forget(ctl->hub, op->id);
	if (store_sandbox_delete(ctl->store, op->id) == -1) {
		op_fail(op, 500, "cannot delete the sandbox from the store");
		return;
	}
	log_info("sandbox deleted\tid=%s", op->id);
	op->gone = 1;
	op_finish(op, 204, NULL);
}

/* rm -rf the sandbox's host directories in a child (never follows links). */
static int
remove_dirs(struct control *ctl, const char *id, control_child_cb cb,
    void *arg)
{
	char	*ws, *home, *run, *tasks;
	int	 rv;

	ws = control_sandbox_dir(ctl, "workspaces", id);
	home = control_sandbox_dir(ctl, "homes", id);
	run = control_sandbox_dir(ctl, "run", id);
	tasks = control_sandbox_dir(ctl, "tasks", id);
	{
		char *const argv[] = { "/bin/rm", "-rf", "--one-file-system",
		    "--", ws, home, run, tasks, NULL };

		rv = control_spawn(ctl, argv, cb, arg);
	}
	free(ws);
	free(home);
	free(run);
	free(tasks);
	return (rv);
}

/* 1 if the operation in flight brings the sandbox up (create, start, unpause). */
int
lifecycle_waking(const struct sandbox_rt *rt)
{
	return (rt->op != NULL && (rt->op->kind == OP_CREATE ||
	    rt->op->kind == OP_START || rt->op->kind == OP_UNPAUSE));
}

/* 1 if an operation is in flight for this sandbox. */
int
lifecycle_busy(struct control *ctl, const char *id)
{
	struct sandbox_rt	*rt = rt_find(ctl, id);

	return (rt != NULL && rt->op != NULL);
}

/*
 * Docker says a container of ours started, died or was destroyed (other
 * actions are not ours to follow). Outside any operation of ours the
 * sandbox follows at once; during one, it is looked at again when the
 * operation ends (lifecycle_recheck), never dropped.
 *
 * A start that the store did not ask for is undone, as the reconciler
 * does: the store is the source of truth. That is how a start whose answer
 * timed out converges (Docker frozen or slow: we said 503 and recorded the
 * sandbox stopped, and Docker went on and started the container after the
 * reconcile that control_resync ran had already looked). Without this
 * only the next daemon restart would have seen it.
 */
void
lifecycle_container_event(struct control *ctl, const char *id,
    const char *container_id, const char *action)
{
	struct store_sandbox	 s;
	struct sandbox_rt	*rt;
	int			 started;

	started = strcmp(action, "start") == 0;
	if (!started && strcmp(action, "die") != 0 &&
	    strcmp(action, "destroy") != 0)
		return;
	if ((rt = rt_find(ctl, id)) != NULL && rt->op != NULL) {
		rt->recheck |= started ? RECHECK_STARTED : RECHECK_STATE;
		return;
	}
	if (store_sandbox_get(ctl->store, id, &s) != 0)
		return;
	/* A late event about a container this sandbox no longer uses. */
	if (s.container_id == NULL || strcmp(s.container_id, container_id)) {
		store_sandbox_clear(&s);
		return;
	}
	if (started) {
		/* Running, starting, paused: a start of ours, or adopted. */
		if (s.state == SANDBOX_STOPPED) {
			log_info("container started for a stopped sandbox "
			    "(a start that timed out?); stopping it\tid=%s",
			    id);
			lifecycle_stop(ctl, id, NULL, NULL);
		}
		store_sandbox_clear(&s);
		return;
	}
	if (strcmp(action, "destroy") == 0)
		forget_container(ctl, id, "container event");
	if ((rt = rt_get(ctl, id)) != NULL &&
	    (s.state == SANDBOX_RUNNING || s.state == SANDBOX_PAUSED ||
	    s.state == SANDBOX_STARTING)) {
		log_info("container %s outside sandboxd; sandbox marked "
		    "stopped\tid=%s", strcmp(action, "die") == 0 ? "died" :
		    "was removed", id);
		agent_reset(ctl->hub, id);
		state_or_resync(ctl, rt, SANDBOX_STOPPED, NULL,
		    "container event");
	}
	store_sandbox_clear(&s);
}

/*
 * An event came while an operation was in flight: ask Docker what the
 * container is now and let the sandbox follow. A start event during our
 * own successful start says nothing new (no extra inspect per start); one
 * that leaves the sandbox stopped may mean the container runs after all.
 */
void
lifecycle_recheck(struct control *ctl, struct sandbox_rt *rt)
{
	struct store_sandbox	 s;
	struct recheck		*rc;
	char			 path[256];
	int			 why = rt->recheck;

	rt->recheck = 0;
	if (store_sandbox_get(ctl->store, rt->id, &s) != 0)
		return;
	if (s.container_id == NULL || !(((s.state == SANDBOX_RUNNING ||
	    s.state == SANDBOX_PAUSED) && (why & RECHECK_STATE)) ||
	    (s.state == SANDBOX_STOPPED && (why & RECHECK_STARTED)))) {
		store_sandbox_clear(&s);
		return;
	}
	snprintf(path, sizeof path, "/containers/%s/json", s.container_id);
	store_sandbox_clear(&s);
	rc = xcalloc(1, sizeof *rc);
	rc->ctl = ctl;
	snprintf(rc->id, sizeof rc->id, "%s", rt->id);
	docker_request(ctl->docker, "GET", path, NULL, 0, recheck_cb, rc);
}

/* What the container is now, after an event we could not act on. */
static void
recheck_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct recheck		*rc = arg;
	struct control		*ctl = rc->ctl;
	const char		*id = rc->id;
	struct sandbox_rt	*rt;
	struct json_object	*st, *o;
	int			 running = 0, paused = 0;

	/* The runtime may be gone by now, or busy again. */
	if ((rt = rt_find(ctl, id)) == NULL || rt->op != NULL) {
		free(rc);
		return;
	}
	if (status == 200 && json_object_object_get_ex(body, "State", &st)) {
		if (json_object_object_get_ex(st, "Running", &o))
			running = json_object_get_boolean(o);
		if (json_object_object_get_ex(st, "Paused", &o))
			paused = json_object_get_boolean(o);
	}
	if (status == 0) {
		free(rc);
		return;		/* Docker away: the reconcile on return sees it */
	}
	if (!running && (rt->state == SANDBOX_RUNNING ||
	    rt->state == SANDBOX_PAUSED)) {
		log_info("container is not running after all; sandbox marked "
		    "stopped\tid=%s", id);
		if (status == 404)
			forget_container(ctl, id, "recheck");
		agent_reset(ctl->hub, id);
		state_or_resync(ctl, rt, SANDBOX_STOPPED, NULL, "recheck");
	} else if (running && !paused && rt->state == SANDBOX_RUNNING &&
	    rt->generation == 0) {
		/* A pause that failed: the address is still good. */
		if (rt_set_running(ctl, rt, rt->ip, rt->port_state ==
		    RT_PORT_READY) != 0) {
			log_warnx("recheck: cannot record the sandbox running "
			    "again; reconciling again\tid=%s", id);
			control_resync(ctl);
		}
	} else if (running && paused && rt->state == SANDBOX_RUNNING) {
		state_or_resync(ctl, rt, SANDBOX_PAUSED, NULL, "recheck");
	} else if (running && rt->state == SANDBOX_STOPPED) {
		/* Started behind a failed start or a stop: the store wins. */
		log_info("container runs for a stopped sandbox; stopping it"
		    "\tid=%s", id);
		lifecycle_stop(ctl, id, NULL, NULL);
	}
	free(rc);
}
