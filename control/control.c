/*
 * control: the object main builds and edge calls. It holds the store, the
 * Docker client and the agentd hub, the in-memory view of each sandbox
 * (address, live connections, operation in flight), and the children it
 * waits for without blocking the loop.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <json.h>
#include <openssl/crypto.h>

#include "control/control_int.h"

static int	load_generated_key(struct control *, char **);
static void	sigchld_cb(evutil_socket_t, short, void *);
static int	spawn_exec(void *);
static void	network_cb(int, struct json_object *, const char *, void *);
static void	network_made_cb(int, struct json_object *, const char *,
		    void *);
static void	egress_ready_cb(struct control *);
static void	reconciled_cb(struct control *, int);
static void	event_cb(struct json_object *, void *);
static void	control_sync(struct control *);
static void	sync_failed(struct control *, const char *);
static void	sync_retry_cb(evutil_socket_t, short, void *);

/* Build control over an open store and a loaded config. */
struct control *
control_new(struct event_base *base, const struct config *cf,
    struct store *store, char **cause)
{
	struct control	*ctl;
	unsigned char	 agentd_key[TOKEN_KEY_LEN];
	char		*path;
	size_t		 i;
	int		 rv;

	ctl = xcalloc(1, sizeof *ctl);
	ctl->base = base;
	hist_init(&ctl->wake_hist, hist_bounds_slow);
	ctl->started_ms = time_now_ms();
	ctl->cf = cf;
	ctl->store = store;
	for (i = 0; i < RT_BUCKETS; i++)
		LIST_INIT(&ctl->rts[i]);
	LIST_INIT(&ctl->children);
	LIST_INIT(&ctl->probes);
	TAILQ_INIT(&ctl->tasks);
	TAILQ_INIT(&ctl->followers);
	LIST_INIT(&ctl->reconciles);
	LIST_INIT(&ctl->dev_calls);
	LIST_INIT(&ctl->execstreams);
	LIST_INIT(&ctl->task_calls);
	LIST_INIT(&ctl->status_reqs);
	LIST_INIT(&ctl->file_jobs);

	xasprintf(&ctl->workspaces_dir, "%s/workspaces", cf->data_dir);
	xasprintf(&ctl->homes_dir, "%s/homes", cf->data_dir);
	xasprintf(&ctl->run_dir, "%s/run", cf->data_dir);
	xasprintf(&ctl->tasks_dir, "%s/tasks", cf->data_dir);
	if (mkdir_p(ctl->workspaces_dir, 0711) == -1 ||
	    mkdir_p(ctl->homes_dir, 0711) == -1 ||
	    mkdir_p(ctl->run_dir, 0711) == -1 ||
	    mkdir_p(ctl->tasks_dir, 0700) == -1) {
		xasprintf(cause, "cannot make directories under %s: %s",
		    cf->data_dir, strerror(errno));
		goto fail;
	}

	if (preview_key_load(ctl, cause) == -1)
		goto fail;
	if ((ctl->provider = provider_new(ctl, cause)) == NULL)
		goto fail;

	if (cf->napi_keys > 0) {
		ctl->keys = cf->api_keys;
		ctl->nkeys = cf->napi_keys;
	} else if (load_generated_key(ctl, cause) == -1)
		goto fail;
	for (i = 0; i < ctl->nkeys; i++) {
		if (store_tenant_ensure(store, ctl->keys[i].name) != 0) {
			xasprintf(cause, "cannot record tenant %s",
			    ctl->keys[i].name);
			goto fail;
		}
	}

	ctl->docker = docker_new(base, cf->docker_socket);
	ctl->hub = agent_hub_new(base, NULL, ctl);
	/* agentd proves itself with a token made from it (control/agent.c). */
	xasprintf(&path, "%s/agentd-secret", cf->data_dir);
	rv = control_secret_load(path, "agentd secret", "the agentd token of "
	    "every sandbox made so far: recreate them", agentd_key, cause);
	free(path);
	if (rv == -1)
		goto fail;
	agent_hub_set_key(ctl->hub, agentd_key);
	OPENSSL_cleanse(agentd_key, sizeof agentd_key);
	egress_init(ctl);
	disk_init(ctl);
	ctl->sigchld = evsignal_new(base, SIGCHLD, sigchld_cb, ctl);
	event_add(ctl->sigchld, NULL);
	ctl->sync_retry = evtimer_new(base, sync_retry_cb, ctl);
	ctl->sync_backoff_ms = 1000;
	return (ctl);

fail:
	control_free(ctl);
	return (NULL);
}

/*
 * With no [api_key] in the config, the daemon makes one admin key for the
 * tenant "default" at first start and keeps it in data_dir/api-key (0600),
 * so the embedded default works out of the box.
 */
static int
load_generated_key(struct control *ctl, char **cause)
{
	unsigned char	 raw[24];
	char		 secret[sizeof raw * 2 + 1], *path;
	ssize_t		 n;
	size_t		 i;
	int		 fd;

	xasprintf(&path, "%s/api-key", ctl->cf->data_dir);
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) != -1) {
		n = read(fd, secret, sizeof secret - 1);
		close(fd);
		if (n < 32) {
			xasprintf(cause, "%s is too short; remove it to make "
			    "a new key", path);
			free(path);
			return (-1);
		}
		secret[n] = '\0';
		secret[strcspn(secret, "\r\n")] = '\0';
	} else {
		random_bytes(raw, sizeof raw);
		for (i = 0; i < sizeof raw; i++)
			snprintf(secret + i * 2, 3, "%02x", raw[i]);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
		if (fd == -1 || write(fd, secret, strlen(secret)) !=
		    (ssize_t)strlen(secret) || write(fd, "\n", 1) != 1) {
			xasprintf(cause, "cannot write %s: %s", path,
			    strerror(errno));
			if (fd != -1)
				close(fd);
			free(path);
			return (-1);
		}
		close(fd);
		log_info("no [api_key] configured: made an admin key for "
		    "tenant \"default\"\tpath=%s", path);
	}
	ctl->generated_key.name = "default";
	ctl->generated_key.secret = xstrdup(secret);
	ctl->generated_key.admin = 1;
	ctl->keys = &ctl->generated_key;
	ctl->nkeys = 1;
	free(path);
	return (0);
}

/* Ensure the network, then reconcile, then follow Docker's events. */
int
control_start(struct control *ctl, char **cause)
{
	control_sync(ctl);
	return (0);
}

/*
 * Bring Docker in line with the store: the network, then the reconciler.
 * Runs at start, again each time Docker's event stream reconnects (events
 * may have been missed), and is retried with backoff until it succeeds, so
 * a Docker that is down at boot is caught up with when it comes back.
 */
static void
control_sync(struct control *ctl)
{
	char	*path;

	if (ctl->syncing) {
		ctl->sync_again = 1;
		return;
	}
	ctl->syncing = 1;
	ctl->sync_again = 0;
	evtimer_del(ctl->sync_retry);
	xasprintf(&path, "/networks/%s", ctl->cf->network);
	docker_request(ctl->docker, "GET", path, NULL, 0, network_cb, ctl);
	free(path);
}

/* A sync step failed: try the whole sync again later. */
static void
sync_failed(struct control *ctl, const char *why)
{
	struct timeval	tv;

	ctl->syncing = 0;
	log_warnx("cannot bring Docker in line with the store (%s); retrying"
	    "\tretry_ms=%d", why, ctl->sync_backoff_ms);
	if (!ctl->docker_ok)
		notify_status("serving without Docker (%s); retrying in %d ms",
		    why, ctl->sync_backoff_ms);
	else
		notify_status("serving; Docker not yet in line with the store "
		    "(%s); retrying in %d ms", why, ctl->sync_backoff_ms);
	tv.tv_sec = ctl->sync_backoff_ms / 1000;
	tv.tv_usec = (ctl->sync_backoff_ms % 1000) * 1000;
	evtimer_add(ctl->sync_retry, &tv);
	ctl->sync_backoff_ms = ctl->sync_backoff_ms * 2 > 30000 ? 30000 :
	    ctl->sync_backoff_ms * 2;
}

static void
sync_retry_cb(evutil_socket_t fd, short events, void *arg)
{
	control_sync(arg);
}

/*
 * An operation failed because Docker did not answer: if it was a timeout,
 * Docker may still have done it (a start whose container now runs for a
 * stopped sandbox), and no event says so. Run the reconciler again in a
 * second, or at the retry already due while Docker is away; once is
 * enough for any number of such failures.
 */
void
control_resync(struct control *ctl)
{
	struct timeval	tv = { 1, 0 };

	if (ctl->syncing) {
		ctl->sync_again = 1;
		return;
	}
	if (!evtimer_pending(ctl->sync_retry, NULL))
		evtimer_add(ctl->sync_retry, &tv);
}

/* Our network exists, or is made now. */
static void
network_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct control		*ctl = arg;
	struct json_object	*req, *opts, *labels;
	struct in_addr		 gw;
	char			 bridge[64];

	ctl->docker_ok = status != 0;
	if (status == 200) {
		/* The proxy listens before the rules name its address. */
		provider_listen(ctl, egress_gateway(body, &gw) == 0 ? &gw :
		    NULL);
		/* The network rules first: no sandbox starts without them. */
		egress_apply(ctl, egress_bridge_name(body, bridge,
		    sizeof bridge) == 0 ? bridge : NULL, egress_ready_cb);
		return;
	}
	if (status != 404) {
		sync_failed(ctl, errmsg != NULL ? errmsg : "Docker error");
		return;
	}
	req = json_object_new_object();
	json_object_object_add(req, "Name",
	    json_object_new_string(ctl->cf->network));
	json_object_object_add(req, "CheckDuplicate",
	    json_object_new_boolean(1));
	json_object_object_add(req, "Driver", json_object_new_string("bridge"));
	opts = json_object_new_object();
	/* No traffic between sandboxes. */
	json_object_object_add(opts, "com.docker.network.bridge.enable_icc",
	    json_object_new_string("false"));
	json_object_object_add(req, "Options", opts);
	labels = json_object_new_object();
	json_object_object_add(labels, CONTROL_LABEL_INSTANCE,
	    json_object_new_string(ctl->cf->instance));
	json_object_object_add(req, "Labels", labels);
	docker_request(ctl->docker, "POST", "/networks/create", req, 0,
	    network_made_cb, ctl);
	json_object_put(req);
}

/* The network was made (or another daemon raced us to it). */
static void
network_made_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct control	*ctl = arg;
	char		*path;

	if (status != 201 && status != 409) {
		sync_failed(ctl, errmsg != NULL ? errmsg : "Docker error");
		return;
	}
	log_info("network ready\tnetwork=%s", ctl->cf->network);
	/* Inspect it for its bridge's name, then on as if it had been there. */
	xasprintf(&path, "/networks/%s", ctl->cf->network);
	docker_request(ctl->docker, "GET", path, NULL, 0, network_cb, ctl);
	free(path);
}

/* The rules are in force (or failed, and no sandbox will start): reconcile. */
static void
egress_ready_cb(struct control *ctl)
{
	reconcile_run(ctl, reconciled_cb);
}

/* The reconciler is done: follow Docker's events from the first success. */
static void
reconciled_cb(struct control *ctl, int ok)
{
	struct json_object	*filters, *arr;
	char			*label;
	int			 total = 0;

	if (!ok) {
		sync_failed(ctl, "the reconciler met errors");
		return;
	}
	ctl->syncing = 0;
	ctl->sync_backoff_ms = 1000;
	store_sandbox_count(ctl->store, -1, &total);
	notify_status("serving; Docker reconciled; %d sandboxes, %d active",
	    total, ctl->nactive);
	if (!ctl->reconciled) {
		ctl->reconciled = 1;
		filters = json_object_new_object();
		arr = json_object_new_array();
		json_object_array_add(arr, json_object_new_string("container"));
		json_object_object_add(filters, "type", arr);
		arr = json_object_new_array();
		xasprintf(&label, "%s=%s", CONTROL_LABEL_INSTANCE,
		    ctl->cf->instance);
		json_object_array_add(arr, json_object_new_string(label));
		json_object_object_add(filters, "label", arr);
		docker_events_follow(ctl->docker, filters, event_cb, ctl);
		json_object_put(filters);
		free(label);
		/* Docker and the store agree now: tasks left running. */
		task_startup(ctl);
	}
	if (ctl->sync_again)
		control_sync(ctl);
}

/* Strings from Docker's JSON, never NULL. */
static const char *
json_str(struct json_object *o, const char *key)
{
	struct json_object	*v;
	const char		*s;

	if (!json_object_object_get_ex(o, key, &v) ||
	    (s = json_object_get_string(v)) == NULL)
		return ("");
	return (s);
}

/* One container event from Docker, or NULL: the stream (re)connected. */
static void
event_cb(struct json_object *ev, void *arg)
{
	struct control		*ctl = arg;
	struct json_object	*actor, *attrs;
	const char		*action;

	if (ev == NULL) {
		/* Events may have been missed while no stream was up. */
		control_sync(ctl);
		return;
	}
	/* start, die, destroy: lifecycle_container_event picks them out. */
	action = json_str(ev, "Action");
	if (!json_object_object_get_ex(ev, "Actor", &actor) ||
	    !json_object_object_get_ex(actor, "Attributes", &attrs))
		return;
	lifecycle_container_event(ctl, json_str(attrs, CONTROL_LABEL_SANDBOX),
	    json_str(actor, "ID"), action);
}

void
control_free(struct control *ctl)
{
	struct control_child	*child;

	if (ctl == NULL)
		return;
	if (ctl->sigchld != NULL)
		event_free(ctl->sigchld);
	if (ctl->sync_retry != NULL)
		event_free(ctl->sync_retry);
	task_free_all(ctl);
	dev_free_all(ctl);
	execstream_free_all(ctl);
	if (ctl->docker != NULL)
		docker_free(ctl->docker);
	/* Their Docker requests are cancelled with the client. */
	control_status_free_all(ctl);
	if (ctl->hub != NULL)
		agent_hub_free(ctl->hub);
	egress_free(ctl);
	provider_free(ctl->provider);
	disk_free(ctl);
	wake_free_all(ctl);
	rt_free_all(ctl);
	api_file_jobs_free_all(ctl);
	while ((child = LIST_FIRST(&ctl->children)) != NULL) {
		LIST_REMOVE(child, entry);
		free(child);
	}
	reconcile_free_all(ctl);
	free(ctl->generated_key.secret);
	free(ctl->workspaces_dir);
	free(ctl->homes_dir);
	free(ctl->run_dir);
	free(ctl->tasks_dir);
	free(ctl);
}

/* data_dir/<which>/<id>, malloc'd. */
char *
control_sandbox_dir(struct control *ctl, const char *which, const char *id)
{
	char	*path;

	xasprintf(&path, "%s/%s/%s", ctl->cf->data_dir, which, id);
	return (path);
}

const struct cfg_template *
control_template(struct control *ctl, const char *name)
{
	return (config_template(ctl->cf, name));
}

/* The [api_key] section of a tenant, NULL if it has none any more. */
const struct cfg_api_key *
control_tenant_key(struct control *ctl, const char *tenant)
{
	size_t	i;

	for (i = 0; tenant != NULL && i < ctl->cf->napi_keys; i++) {
		if (strcmp(ctl->cf->api_keys[i].name, tenant) == 0)
			return (&ctl->cf->api_keys[i]);
	}
	return (NULL);
}

/*
 * Run fn(fnarg) in a forked child and _exit with what it returns; cb gets
 * the child's wait status from the SIGCHLD event. The child touches
 * nothing of the loop, the store or Docker: it does its one job and goes.
 */
int
control_fork(struct control *ctl, int (*fn)(void *), void *fnarg,
    control_child_cb cb, void *arg)
{
	struct control_child	*child;
	sigset_t		 set;
	pid_t			 pid;

	if ((pid = fork()) == -1) {
		log_warn("fork");
		return (-1);
	}
	if (pid == 0) {
		sigemptyset(&set);
		sigprocmask(SIG_SETMASK, &set, NULL);
		_exit(fn(fnarg));
	}
	child = xcalloc(1, sizeof *child);
	child->pid = pid;
	child->cb = cb;
	child->arg = arg;
	LIST_INSERT_HEAD(&ctl->children, child, entry);
	return (0);
}

/* In the child: stdin from /dev/null, then exec argv. */
static int
spawn_exec(void *arg)
{
	char *const	*argv = arg;
	int		 fd;

	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		dup2(fd, STDIN_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	/* None of the daemon's sockets, CLOEXEC or not. */
	close_range(STDERR_FILENO + 1, ~0U, 0);
	execv(argv[0], argv);
	return (127);
}

/* Run argv in a child; cb gets its wait status from the SIGCHLD event. */
int
control_spawn(struct control *ctl, char *const argv[], control_child_cb cb,
    void *arg)
{
	return (control_fork(ctl, spawn_exec, (void *)argv, cb, arg));
}

/* Reap every child that has exited and tell whoever waits for it. */
static void
sigchld_cb(evutil_socket_t sig, short events, void *arg)
{
	struct control		*ctl = arg;
	struct control_child	*child;
	pid_t			 pid;
	int			 status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		LIST_FOREACH(child, &ctl->children, entry) {
			if (child->pid == pid)
				break;
		}
		if (child == NULL)
			continue;
		LIST_REMOVE(child, entry);
		child->cb(status, child->arg);
		free(child);
	}
}

/* The container's IPv4 address on our network, from an inspect answer. */
int
control_container_ip(struct control *ctl, struct json_object *body,
    struct in_addr *ip)
{
	struct json_object	*o;

	if (!json_object_object_get_ex(body, "NetworkSettings", &o) ||
	    !json_object_object_get_ex(o, "Networks", &o) ||
	    !json_object_object_get_ex(o, ctl->cf->network, &o) ||
	    inet_pton(AF_INET, json_str(o, "IPAddress"), ip) != 1)
		return (-1);
	return (0);
}

/* %-encode everything but RFC 3986 unreserved characters. */
char *
control_url_encode(const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";
	char			*out, *p;

	out = p = xmalloc(strlen(s) * 3 + 1);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~')
			*p++ = c;
		else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return (out);
}

/* A sandbox as the API shows it. */
struct json_object *
control_sandbox_json(struct control *ctl, const struct store_sandbox *s)
{
	struct json_object	*o, *v;
	struct sandbox_rt	*rt;
	const char		*url = ctl->cf->public_url, *rest;
	char			 ts[32], *preview;
	int64_t			 active;

	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(s->id));
	json_object_object_add(o, "tenant", json_object_new_string(s->tenant));
	json_object_object_add(o, "template",
	    json_object_new_string(s->template_name));
	json_object_object_add(o, "state", json_object_new_string(
	    store_sandbox_state_name(s->state)));
	/* scheme://<id>.<preview_domain>[:port of public_url]/ */
	rest = strstr(url, "://");
	rest = rest != NULL ? rest + 3 : url;
	{
		const char	*colon = strrchr(rest, ':');
		const char	*bracket = strrchr(rest, ']');
		int		 schemelen = (int)(rest - url);

		if (colon != NULL && (bracket == NULL || colon > bracket))
			xasprintf(&preview, "%.*s%s.%s%.*s/", schemelen, url,
			    s->id, ctl->cf->preview_domain,
			    (int)strcspn(colon, "/"), colon);
		else
			xasprintf(&preview, "%.*s%s.%s/", schemelen, url,
			    s->id, ctl->cf->preview_domain);
	}
	json_object_object_add(o, "preview_url",
	    json_object_new_string(preview));
	free(preview);
	json_object_object_add(o, "port", json_object_new_int(s->port));
	json_object_object_add(o, "visibility", json_object_new_string(
	    s->visibility == SANDBOX_PRIVATE ? "private" : "public"));
	json_object_object_add(o, "memory_mb",
	    json_object_new_int(s->memory_mb));
	json_object_object_add(o, "cpus", json_object_new_double(s->cpus));
	json_object_object_add(o, "idle_timeout_s",
	    json_object_new_int(s->idle_timeout_s));
	json_object_object_add(o, "pause_timeout_s",
	    json_object_new_int(s->pause_timeout_s));
	v = json_tokener_parse(s->env_json != NULL ? s->env_json : "{}");
	json_object_object_add(o, "env", v != NULL ? v :
	    json_object_new_object());
	v = json_tokener_parse(s->labels_json != NULL ? s->labels_json : "{}");
	json_object_object_add(o, "labels", v != NULL ? v :
	    json_object_new_object());
	time_format_rfc3339(s->created_at, ts, sizeof ts);
	json_object_object_add(o, "created_at", json_object_new_string(ts));
	/* The runtime knows of traffic the store has not been told yet. */
	active = s->last_active_at;
	if ((rt = rt_find(ctl, s->id)) != NULL && rt->last_active_wall > active)
		active = rt->last_active_wall;
	time_format_rfc3339(active, ts, sizeof ts);
	json_object_object_add(o, "last_active_at", json_object_new_string(ts));
	json_object_object_add(o, "error", s->error != NULL ?
	    json_object_new_string(s->error) : NULL);
	if ((v = dev_server_json(ctl, s->id)) != NULL)
		json_object_object_add(o, "dev_server", v);
	/* What it used through the credential proxy (0s without one). */
	json_object_object_add(o, "usage", provider_usage_json(ctl, s->id));
	return (o);
}
