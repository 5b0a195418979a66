/*
 * What "sandboxd status" shows of control: Docker's reachability and
 * version (asked afresh each time), the reconciler, sandboxes by state,
 * held requests, counters and the sandboxes in error. main's admin socket
 * (admin/) asks for it; the answer is one JSON object.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "control/control_int.h"

/* Sandboxes in error listed at most. */
#define STATUS_MAX_ERRORED	10

struct control_status_req {
	struct control		*ctl;
	control_status_cb	 cb;	/* NULL once cancelled */
	void			*arg;
	LIST_ENTRY(control_status_req) entry;
};

static void	status_docker_cb(int, struct json_object *, const char *,
		    void *);
static struct json_object *status_json(struct control *);

/*
 * Ask for control's status; cb gets the object (it owns it) from the event
 * loop, once, unless control_status_cancel is called first. Docker is
 * asked for its version with a short timeout.
 */
struct control_status_req *
control_status(struct control *ctl, control_status_cb cb, void *arg)
{
	struct control_status_req	*req;

	req = xcalloc(1, sizeof *req);
	req->ctl = ctl;
	req->cb = cb;
	req->arg = arg;
	LIST_INSERT_HEAD(&ctl->status_reqs, req, entry);
	docker_request(ctl->docker, "GET", "/version", NULL, 3000,
	    status_docker_cb, req);
	return (req);
}

/* The caller went away: its callback is not called. */
void
control_status_cancel(struct control_status_req *req)
{
	req->cb = NULL;
}

/* Free requests still waiting for Docker (control_free). */
void
control_status_free_all(struct control *ctl)
{
	struct control_status_req	*req;

	while ((req = LIST_FIRST(&ctl->status_reqs)) != NULL) {
		LIST_REMOVE(req, entry);
		free(req);
	}
}

/* Docker answered /version, or did not: add what it said and reply. */
static void
status_docker_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct control_status_req	*req = arg;
	struct control			*ctl = req->ctl;
	struct json_object		*o, *d, *v;

	LIST_REMOVE(req, entry);
	if (req->cb == NULL) {
		free(req);
		return;
	}
	/* Any answer proves Docker is there, as for the other calls. */
	ctl->docker_ok = status != 0;
	o = status_json(ctl);
	d = json_object_new_object();
	json_object_object_add(d, "socket",
	    json_object_new_string(ctl->cf->docker_socket));
	json_object_object_add(d, "reachable",
	    json_object_new_boolean(status == 200));
	if (status == 200 && body != NULL) {
		if (json_object_object_get_ex(body, "Version", &v))
			json_object_object_add(d, "version",
			    json_object_get(v));
		if (json_object_object_get_ex(body, "ApiVersion", &v))
			json_object_object_add(d, "api_version",
			    json_object_get(v));
	} else
		json_object_object_add(d, "error", json_object_new_string(
		    errmsg != NULL ? errmsg : "unexpected answer"));
	json_object_object_add(o, "docker", d);
	req->cb(o, req->arg);
	free(req);
}

/* What control knows without asking anyone. */
static struct json_object *
status_json(struct control *ctl)
{
	struct json_object	*o, *st, *c, *errs, *e;
	struct store_sandbox	*rows;
	size_t			 n, i;
	int			 state, count, total = 0;

	o = json_object_new_object();
	json_object_object_add(o, "store", json_object_new_string(
	    store_ping(ctl->store) == 0 ? "ok" : "does not answer"));
	json_object_object_add(o, "schema_version",
	    json_object_new_int(store_schema_version(ctl->store)));
	json_object_object_add(o, "reconciled",
	    json_object_new_boolean(ctl->reconciled));
	st = json_object_new_object();
	for (state = 0; store_sandbox_state_name(state) != NULL; state++) {
		count = 0;
		store_sandbox_count(ctl->store, state, &count);
		total += count;
		json_object_object_add(st, store_sandbox_state_name(state),
		    json_object_new_int(count));
	}
	json_object_object_add(o, "sandboxes_total", json_object_new_int(total));
	json_object_object_add(o, "sandboxes", st);
	json_object_object_add(o, "active", json_object_new_int(ctl->nactive));
	json_object_object_add(o, "max_running",
	    json_object_new_int(ctl->cf->max_running));
	json_object_object_add(o, "max_sandboxes",
	    json_object_new_int(ctl->cf->max_sandboxes));
	json_object_object_add(o, "held_requests",
	    json_object_new_int(ctl->nwaiters));
	c = json_object_new_object();
	json_object_object_add(c, "api_requests",
	    json_object_new_int64((int64_t)ctl->requests_total));
	json_object_object_add(c, "wakes",
	    json_object_new_int64((int64_t)ctl->wakes_total));
	json_object_object_add(c, "evictions",
	    json_object_new_int64((int64_t)ctl->evictions_total));
	json_object_object_add(c, "refusals",
	    json_object_new_int64((int64_t)ctl->refusals_total));
	json_object_object_add(c, "idle_stops",
	    json_object_new_int64((int64_t)ctl->idle_stops_total));
	json_object_object_add(c, "idle_pauses",
	    json_object_new_int64((int64_t)ctl->idle_pauses_total));
	json_object_object_add(c, "disk_stops",
	    json_object_new_int64((int64_t)ctl->disk_stops_total));
	json_object_object_add(o, "counters", c);
	errs = json_object_new_array();
	if (store_sandbox_list(ctl->store, NULL, &rows, &n) == 0) {
		for (i = 0; i < n && json_object_array_length(errs) <
		    STATUS_MAX_ERRORED; i++) {
			if (rows[i].state != SANDBOX_ERROR)
				continue;
			e = json_object_new_object();
			json_object_object_add(e, "id",
			    json_object_new_string(rows[i].id));
			json_object_object_add(e, "tenant",
			    json_object_new_string(rows[i].tenant));
			json_object_object_add(e, "error",
			    json_object_new_string(rows[i].error != NULL ?
			    rows[i].error : ""));
			json_object_array_add(errs, e);
		}
		store_sandbox_list_free(rows, n);
	}
	json_object_object_add(o, "errored", errs);
	return (o);
}
