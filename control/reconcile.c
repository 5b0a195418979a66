/*
 * The reconciler: at start, make Docker match the store. The store is the
 * source of truth; containers are derived state. It recreates what is
 * missing (the workspace is kept on the host), removes containers of ours
 * that the store does not know, finishes interrupted operations and
 * corrects states, logging each thing it does.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "control/control_int.h"

struct reconcile {
	struct control		*ctl;
	void			(*done)(struct control *, int);
	int			 pending;	/* async steps not yet back */
	int			 ok;
	uint64_t		 seq;		/* ctl->op_seq at the listing */
	struct json_object	*containers;	/* sandbox id -> container */
	struct json_object	*stale;		/* sandbox ids being recreated */
	LIST_HEAD(, reconcile_arg) args;	/* with a Docker request out */
	LIST_ENTRY(reconcile)	 entry;		/* ctl->reconciles */
};

/* One sandbox's Docker request (an inspect, a stale container's removal). */
struct reconcile_arg {
	struct reconcile	*rc;
	char			 id[ID_LEN + 1];
	int			 paused;	/* the container is frozen */
	LIST_ENTRY(reconcile_arg) entry;
};

static void	list_cb(int, struct json_object *, const char *, void *);
static void	reconcile_sandbox(struct reconcile *,
		    const struct store_sandbox *);
static void	step_done(struct reconcile *);
static void	removed_cb(int, struct json_object *, const char *, void *);
static void	op_cb(struct control *, const char *, int, const char *,
		    void *);
static void	inspect_cb(int, struct json_object *, const char *, void *);
static int	spec_stale(struct control *, const struct store_sandbox *,
		    struct json_object *);
static void	recreate(struct reconcile *, const struct store_sandbox *,
		    struct json_object *);
static void	stale_removed_cb(int, struct json_object *, const char *,
		    void *);

static struct reconcile_arg *arg_new(struct reconcile *, const char *);
static void	arg_free(struct reconcile_arg *);

/* Make Docker match the store; done is called once at the end. */
void
reconcile_run(struct control *ctl, void (*done)(struct control *, int))
{
	struct reconcile	*rc;
	struct json_object	*filters, *arr;
	const char		*text;
	char			*label, *path, *enc;

	rc = xcalloc(1, sizeof *rc);
	rc->ctl = ctl;
	rc->done = done;
	rc->ok = 1;
	rc->pending = 1;
	/* Operations that begin or end after this own their sandboxes. */
	rc->seq = ctl->op_seq;
	LIST_INIT(&rc->args);
	LIST_INSERT_HEAD(&ctl->reconciles, rc, entry);

	filters = json_object_new_object();
	arr = json_object_new_array();
	xasprintf(&label, "%s=%s", CONTROL_LABEL_INSTANCE, ctl->cf->instance);
	json_object_array_add(arr, json_object_new_string(label));
	json_object_object_add(filters, "label", arr);
	text = json_object_to_json_string_ext(filters, JSON_C_TO_STRING_PLAIN);
	enc = control_url_encode(text);
	xasprintf(&path, "/containers/json?all=true&filters=%s", enc);
	docker_request(ctl->docker, "GET", path, NULL, 0, list_cb, rc);
	free(enc);
	free(path);
	free(label);
	json_object_put(filters);
}

/* Docker's list of our containers: compare with every row of the store. */
static void
list_cb(int status, struct json_object *body, const char *errmsg, void *arg)
{
	struct reconcile	*rc = arg;
	struct control		*ctl = rc->ctl;
	struct store_sandbox	*rows, s;
	struct sandbox_rt	*rt;
	struct json_object	*c, *labels, *o;
	size_t			 i, n, len;
	const char		*sid;
	char			 path[256];

	if (status != 200 || !json_object_is_type(body, json_type_array)) {
		log_warnx("reconcile: cannot list containers: %s",
		    errmsg != NULL ? errmsg : "unexpected answer");
		rc->ok = 0;
		step_done(rc);
		return;
	}
	rc->containers = json_object_new_object();
	len = json_object_array_length(body);
	for (i = 0; i < len; i++) {
		c = json_object_array_get_idx(body, i);
		if (!json_object_object_get_ex(c, "Labels", &labels) ||
		    !json_object_object_get_ex(labels, CONTROL_LABEL_SANDBOX,
		    &o))
			continue;
		sid = json_object_get_string(o);
		if (store_sandbox_get(ctl->store, sid, &s) == 0) {
			/*
			 * Not under an operation in flight or one newer than
			 * the listing (a start of this very container): it
			 * owns the sandbox, as in reconcile_sandbox.
			 */
			rt = rt_get(ctl, sid);
			if (rt != NULL && rt->op == NULL &&
			    rt->op_seq <= rc->seq && spec_stale(ctl, &s, labels))
				recreate(rc, &s, c);
			else
				json_object_object_add(rc->containers, sid,
				    json_object_get(c));
			store_sandbox_clear(&s);
			continue;
		}
		json_object_object_get_ex(c, "Id", &o);
		log_info("reconcile: removing a container the store does not "
		    "know\tcontainer=%.12s sandbox=%s",
		    json_object_get_string(o), sid);
		snprintf(path, sizeof path, "/containers/%s?force=true",
		    json_object_get_string(o));
		rc->pending++;
		docker_request(ctl->docker, "DELETE", path, NULL, 0,
		    removed_cb, rc);
	}
	if (store_sandbox_list(ctl->store, NULL, &rows, &n) != 0) {
		rc->ok = 0;
		step_done(rc);
		return;
	}
	for (i = 0; i < n; i++) {
		/* A container being made again is seen to when it is gone. */
		if (!json_object_object_get_ex(rc->stale, rows[i].id, NULL))
			reconcile_sandbox(rc, &rows[i]);
	}
	store_sandbox_list_free(rows, n);
	step_done(rc);
}

/* Bring one sandbox's container in line with its row. */
static void
reconcile_sandbox(struct reconcile *rc, const struct store_sandbox *s)
{
	struct control		*ctl = rc->ctl;
	struct json_object	*c = NULL, *o;
	struct reconcile_arg	*ia;
	struct sandbox_rt	*rt;
	const char		*cid = NULL, *cstate = "";
	int			 running, paused;
	char			 path[256], *run;

	/*
	 * An operation in flight owns this sandbox, and one that began or
	 * ended since the listing knows better than the listing does (a
	 * create that finished meanwhile must not be undone).
	 */
	if ((rt = rt_get(ctl, s->id)) == NULL || rt->op != NULL ||
	    rt->op_seq > rc->seq)
		return;
	if (json_object_object_get_ex(rc->containers, s->id, &c)) {
		if (json_object_object_get_ex(c, "Id", &o))
			cid = json_object_get_string(o);
		if (json_object_object_get_ex(c, "State", &o))
			cstate = json_object_get_string(o);
	}
	paused = strcmp(cstate, "paused") == 0;
	running = strcmp(cstate, "running") == 0 || paused;

	/*
	 * The store follows what Docker really has; if it cannot (the
	 * store said why), this reconcile ends "with errors" and is retried.
	 */
	if ((cid == NULL && s->container_id != NULL) ||
	    (cid != NULL && (s->container_id == NULL ||
	    strcmp(cid, s->container_id) != 0))) {
		if (store_sandbox_set_container(ctl->store, s->id, cid) == -1) {
			log_warnx("reconcile: cannot record the sandbox's "
			    "container in the store\tid=%s", s->id);
			rc->ok = 0;
		}
	}

	switch (s->state) {
	case SANDBOX_DELETING:
	case SANDBOX_CREATING:
		log_info("reconcile: finishing an interrupted %s\tid=%s",
		    s->state == SANDBOX_CREATING ? "create" : "delete", s->id);
		rc->pending++;
		if (lifecycle_delete(ctl, s->id, op_cb, rc) == -1)
			rc->pending--;
		return;
	case SANDBOX_RUNNING:
	case SANDBOX_STARTING:
	case SANDBOX_PAUSED:
		if (running) {
			/* Still up: listen for its agentd, learn its IP. */
			run = control_sandbox_dir(ctl, "run", s->id);
			agent_listen(ctl->hub, s->id, run);
			free(run);
			ia = arg_new(rc, s->id);
			ia->paused = paused;
			snprintf(path, sizeof path, "/containers/%s/json", cid);
			rc->pending++;
			docker_request(ctl->docker, "GET", path, NULL, 0,
			    inspect_cb, ia);
			return;
		}
		if (s->state == SANDBOX_PAUSED) {
			/* Its memory is gone: as if it had been idle-stopped. */
			log_info("reconcile: paused sandbox's container is not "
			    "running; marked stopped\tid=%s", s->id);
			if (rt_set_state(ctl, rt, SANDBOX_STOPPED, NULL) != 0) {
				log_warnx("reconcile: cannot record it stopped"
				    "\tid=%s", s->id);
				rc->ok = 0;
			}
			return;
		}
		log_info("reconcile: %s container, starting it\tid=%s",
		    cid == NULL ? "missing" : "stopped", s->id);
		rc->pending++;
		if (lifecycle_start(ctl, s->id, op_cb, rc) == -1)
			rc->pending--;
		return;
	case SANDBOX_STOPPING:
	case SANDBOX_STOPPED:
		if (running) {
			log_info("reconcile: container running for a stopped "
			    "sandbox, stopping it\tid=%s", s->id);
			rc->pending++;
			if (lifecycle_stop(ctl, s->id, op_cb, rc) == -1)
				rc->pending--;
			return;
		}
		if (s->state == SANDBOX_STOPPING &&
		    rt_set_state(ctl, rt, SANDBOX_STOPPED, NULL) != 0) {
			log_warnx("reconcile: cannot record a finished stop"
			    "\tid=%s", s->id);
			rc->ok = 0;
		}
		return;
	case SANDBOX_ERROR:
		return;
	}
}

/*
 * Was this container made from another create body than the sandbox's
 * row and the config give now (an older sandboxd: no agentd token; a
 * changed template or [provider])? A template that is gone is left alone:
 * the container cannot be made again anyway.
 */
static int
spec_stale(struct control *ctl, const struct store_sandbox *s,
    struct json_object *labels)
{
	struct json_object	*spec, *want, *have;
	struct in_addr		 addr;
	int			 stale, port;

	if (control_template(ctl, s->template_name) == NULL)
		return (0);
	/*
	 * Without the proxy listening (its port taken, say) the spec lacks
	 * the provider env: judged now, every container would be made again,
	 * and again at the next good start.
	 */
	if (ctl->cf->nproviders > 0 &&
	    provider_address(ctl, &addr, &port) == -1)
		return (0);
	spec = lifecycle_container_spec(ctl, s);
	json_object_object_get_ex(spec, "Labels", &want);
	json_object_object_get_ex(want, CONTROL_LABEL_SPEC, &want);
	stale = !json_object_object_get_ex(labels, CONTROL_LABEL_SPEC,
	    &have) || strcmp(json_object_get_string(have),
	    json_object_get_string(want)) != 0;
	json_object_put(spec);
	return (stale);
}

/*
 * Remove a stale container (its files are on the host); once it is gone
 * the sandbox is reconciled as one whose container is missing: a running
 * one gets a new container at once, a stopped one at its next start.
 */
static void
recreate(struct reconcile *rc, const struct store_sandbox *s,
    struct json_object *c)
{
	struct reconcile_arg	*sa;
	struct json_object	*o;
	char			 path[256];

	if (rc->stale == NULL)
		rc->stale = json_object_new_object();
	json_object_object_add(rc->stale, s->id, NULL);
	json_object_object_get_ex(c, "Id", &o);
	log_info("reconcile: the container was made from an older spec "
	    "(another sandboxd version or config); making it again\t"
	    "id=%s container=%.12s", s->id, json_object_get_string(o));
	sa = arg_new(rc, s->id);
	snprintf(path, sizeof path, "/containers/%s?force=true",
	    json_object_get_string(o));
	rc->pending++;
	docker_request(rc->ctl->docker, "DELETE", path, NULL, 0,
	    stale_removed_cb, sa);
}

/* A stale container is gone: reconcile its sandbox without it. */
static void
stale_removed_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct reconcile_arg	*sa = arg;
	struct reconcile	*rc = sa->rc;
	struct control		*ctl = rc->ctl;
	struct store_sandbox	 s;

	(void)body;
	if (status != 204 && status != 404) {
		log_warnx("reconcile: cannot remove a stale container: %s\t"
		    "id=%s", errmsg != NULL ? errmsg : "?", sa->id);
		rc->ok = 0;
	} else if (store_sandbox_get(ctl->store, sa->id, &s) == 0) {
		reconcile_sandbox(rc, &s);
		store_sandbox_clear(&s);
	}
	arg_free(sa);
	step_done(rc);
}

/* One async step of the reconciliation is back. */
static void
step_done(struct reconcile *rc)
{
	if (--rc->pending > 0)
		return;
	LIST_REMOVE(rc, entry);
	json_object_put(rc->containers);
	json_object_put(rc->stale);
	log_info("reconcile: done%s", rc->ok ? "" : " (with errors)");
	rc->done(rc->ctl, rc->ok);
	free(rc);
}

/* A container the store does not know was removed. */
static void
removed_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct reconcile	*rc = arg;

	if (status != 204 && status != 404) {
		log_warnx("reconcile: cannot remove container: %s",
		    errmsg != NULL ? errmsg : "?");
		rc->ok = 0;
	}
	step_done(rc);
}

/* A lifecycle operation the reconciler started is over. */
static void
op_cb(struct control *ctl, const char *id, int status, const char *message,
    void *arg)
{
	struct reconcile	*rc = arg;

	if (status >= 300) {
		log_warnx("reconcile: %s\tid=%s", message != NULL ? message :
		    "failed", id);
		rc->ok = 0;
	}
	step_done(rc);
}

/* A running container's address, so previews reach it at once. */
static void
inspect_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct reconcile_arg	*ia = arg;
	struct reconcile	*rc = ia->rc;
	struct control		*ctl = rc->ctl;
	struct sandbox_rt	*rt = rt_find(ctl, ia->id);
	struct in_addr		 ip;

	if (rt == NULL || rt->op != NULL || rt->op_seq > rc->seq) {
		/* Started, stopped or deleted meanwhile: leave it be. */
	} else if (status == 200 && control_container_ip(ctl, body, &ip) == 0) {
		/* It was up before: its port accepted then, no probe. */
		if (rt_adopt(ctl, rt, ip, ia->paused) != 0) {
			log_warnx("reconcile: cannot record the sandbox %s"
			    "\tid=%s", ia->paused ? "paused" : "running",
			    ia->id);
			ia->rc->ok = 0;
		} else
			log_info("reconcile: %s\tid=%s ip=%s", ia->paused ?
			    "paused" : "running", ia->id, inet_ntoa(ip));
	} else {
		log_warnx("reconcile: cannot find the address of a running "
		    "container: %s\tid=%s", errmsg != NULL ? errmsg : "?",
		    ia->id);
		ia->rc->ok = 0;
	}
	arg_free(ia);
	step_done(rc);
}

static struct reconcile_arg *
arg_new(struct reconcile *rc, const char *id)
{
	struct reconcile_arg	*a;

	a = xcalloc(1, sizeof *a);
	a->rc = rc;
	snprintf(a->id, sizeof a->id, "%s", id);
	LIST_INSERT_HEAD(&rc->args, a, entry);
	return (a);
}

static void
arg_free(struct reconcile_arg *a)
{
	LIST_REMOVE(a, entry);
	free(a);
}

/*
 * The daemon exits in the middle of a reconciliation: the Docker client
 * is gone with its requests, whose callbacks never come.
 */
void
reconcile_free_all(struct control *ctl)
{
	struct reconcile	*rc;
	struct reconcile_arg	*a;

	while ((rc = LIST_FIRST(&ctl->reconciles)) != NULL) {
		LIST_REMOVE(rc, entry);
		while ((a = LIST_FIRST(&rc->args)) != NULL)
			arg_free(a);
		json_object_put(rc->containers);
		json_object_put(rc->stale);
		free(rc);
	}
}
