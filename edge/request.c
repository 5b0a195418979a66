/*
 * A request, whatever protocol carried it: routed by its Host to the API,
 * a [route] or a sandbox; a preview's target looked up in control, and
 * held while control wakes the sandbox; answered through the protocol's
 * output operations; its activity reported to control, every +1 matched
 * by one -1 however it ends.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>
#include <sys/un.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_req_timer_cb(evutil_socket_t, short, void *);
static void	edge_req_wake_cb(const struct control_target *, void *);
static void	edge_req_lookup(struct edge_req *,
		    const struct http_request_head *);
static void	edge_req_target(struct edge_req *,
		    const struct http_request_head *,
		    const struct control_target *);
static void	edge_req_keep(struct edge_req *,
		    const struct http_request_head *);
static void	edge_req_unkeep(struct edge_req *);
static void	edge_req_settle(struct edge_req *, enum edge_req_outcome);
static void	edge_req_held_timeout(struct edge_req *);
static int	edge_req_is_browser(const struct http_request_head *);
static int	edge_req_wants_json(const struct http_header *);
static int	edge_req_to_https(struct edge_req *,
		    const struct http_request_head *);
static int	edge_route_addr(const struct cfg_route *,
		    struct sockaddr_storage *, socklen_t *);

/*
 * A request object for conn, speaking through ops: a spare one made like
 * new (its timer and retry buffer kept), or a new one.
 */
struct edge_req *
edge_req_new(struct edge_conn *conn, const struct edge_req_ops *ops)
{
	struct edge	*edge = conn->edge;
	struct edge_req	*req;
	struct event	*timer;
	char		*head_copy;
	size_t		 head_copy_size;

	if ((req = TAILQ_FIRST(&edge->spare_reqs)) != NULL) {
		TAILQ_REMOVE(&edge->spare_reqs, req, spare_entry);
		edge->nspare--;
		timer = req->timer;
		head_copy = req->head_copy;
		head_copy_size = req->head_copy_size;
		memset(req, 0, sizeof *req);
		req->timer = timer;
		req->head_copy = head_copy;
		req->head_copy_size = head_copy_size;
	} else {
		req = xcalloc(1, sizeof *req);
		req->timer = evtimer_new(edge->base, edge_req_timer_cb, req);
	}
	req->edge = edge;
	req->conn = conn;
	req->ops = ops;
	edge_req_reset(req);
	return req;
}

/*
 * A keep-alive connection between requests, or an HTTP/2 stream being
 * freed, gives its finished request back. The object stays as it is
 * until reused from another callback (callers up the stack may still
 * read it); the reaper frees those over EDGE_SPARE_REQS.
 */
void
edge_req_park(struct edge_req *req)
{
	struct edge	*edge = req->edge;

	if (req->state != EDGE_REQ_DONE)
		return;
	evtimer_del(req->timer);
	/* An HTTP/1.1 connection's own; an HTTP/2 stream's is not. */
	if (req->conn->req == req)
		req->conn->req = NULL;
	TAILQ_INSERT_HEAD(&edge->spare_reqs, req, spare_entry);
	if (++edge->nspare > EDGE_SPARE_REQS)
		edge_reap_soon(edge);
}

/* Free spare requests down to keep (the reaper; 0 at the end). */
void
edge_req_spares_trim(struct edge *edge, size_t keep)
{
	struct edge_req	*req;

	while (edge->nspare > keep &&
	    (req = TAILQ_LAST(&edge->spare_reqs, edge_req_q)) != NULL) {
		TAILQ_REMOVE(&edge->spare_reqs, req, spare_entry);
		edge->nspare--;
		edge_req_free(req);
	}
}

/*
 * Ready a finished request for the next one on its connection. Only the
 * buffers that may be reused (the retry copy) survive.
 */
void
edge_req_reset(struct edge_req *req)
{
	req->state = EDGE_REQ_ROUTING;
	req->out = EDGE_OUT_NONE;
	req->method[0] = '\0';
	req->minor = 1;
	req->keepalive = 0;
	req->close = 0;
	req->browser = 0;
	memset(&req->host, 0, sizeof req->host);
	req->json_errors = 0;
	req->strip_token = 0;
	req->body = HTTP_BODY_NONE;
	req->body_left = 0;
	req->body_done = 1;
	req->api_limit = req->api_got = 0;
	memset(&req->key, 0, sizeof req->key);
	req->upgrade = 0;
	req->resp = EDGE_RESP_WAIT;
	req->coalesce_want = 0;
	req->resp_body = HTTP_BODY_NONE;
	req->resp_left = 0;
	req->dechunk = 0;
	req->up_keepalive = 0;
	req->client_blocked = req->up_blocked = 0;
	req->retried = 0;
	req->sent = 0;
	req->body_got = req->rate_mark = 0;
	req->rate_paused = 0;
	req->head_copy_len = 0;
	req->begun = 0;
	req->status = 0;
	req->bytes_out = 0;
}

/* Free a request its connection no longer carries (the reaper). */
void
edge_req_free(struct edge_req *req)
{
	edge_req_gone(req);
	event_free(req->timer);
	free(req->head_copy);
	free(req->log_host);
	free(req->log_path);
	free(req);
}

/* Arm (ms >= 0) or clear (ms < 0) the request's timer. */
void
edge_req_timer(struct edge_req *req, int64_t ms)
{
	struct timeval	tv;

	if (ms < 0) {
		evtimer_del(req->timer);
		return;
	}
	evtimer_add(req->timer, edge_timeval(req->edge, ms, &tv));
}

/* 1 for a browser navigation: GET, and Accept names text/html. */
static int
edge_req_is_browser(const struct http_request_head *h)
{
	const struct http_header	*accept;
	size_t				 i;

	if (h->method_len != 3 || memcmp(h->method, "GET", 3) != 0)
		return 0;
	accept = http_header_find(h->headers, h->nheaders, "accept");
	if (accept == NULL)
		return 0;
	for (i = 0; i + 9 <= accept->value_len; i++) {
		if (strncasecmp(accept->value + i, "text/html", 9) == 0)
			return 1;
	}
	return 0;
}

/*
 * redirect_https: API and preview requests on a plain listener go to
 * HTTPS. /healthz stays plain for probes; [route] hosts are the
 * operator's (an ACME http-01 responder may live there).
 */
static int
edge_req_to_https(struct edge_req *req, const struct http_request_head *h)
{
	if (req->host.kind == EDGE_HOST_ROUTE)
		return 0;
	if (req->host.kind == EDGE_HOST_API && h->target_len >= 8 &&
	    memcmp(h->target, "/healthz", 8) == 0 &&
	    (h->target_len == 8 || h->target[8] == '?'))
		return 0;
	return 1;
}

/*
 * 1 if the client asks for JSON: its Accept names application/json and
 * not text/html (a browser's navigation names both, or html only). Error
 * answers then carry the API's JSON error body instead of a page.
 */
static int
edge_req_wants_json(const struct http_header *accept)
{
	const char	*v;
	size_t		 i, n;
	int		 json = 0;

	if (accept == NULL)
		return 0;
	v = accept->value;
	n = accept->value_len;
	for (i = 0; i + 9 <= n; i++) {
		if (strncasecmp(v + i, "text/html", 9) == 0)
			return 0;
		if (i + 16 <= n && strncasecmp(v + i, "application/json",
		    16) == 0)
			json = 1;
	}
	return json;
}

/* Split a sockaddr for a [route]; -1 if the unix path does not fit. */
static int
edge_route_addr(const struct cfg_route *r, struct sockaddr_storage *ss,
    socklen_t *sslen)
{
	struct sockaddr_un	*sun = (struct sockaddr_un *)ss;

	memset(ss, 0, sizeof *ss);
	if (!r->is_unix) {
		memcpy(ss, &r->ss, r->sslen);
		*sslen = r->sslen;
		return 0;
	}
	if (strlen(r->unix_path) >= sizeof sun->sun_path)
		return -1;
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, r->unix_path, strlen(r->unix_path) + 1);
	*sslen = sizeof *sun;
	return 0;
}

/*
 * Route a request by its Host: the API, a [route], or a preview. why, if
 * set, is the protocol's reason to refuse it (400) once the host says
 * whether the refusal is a page or API JSON.
 */
void
edge_req_start(struct edge_req *req, const struct http_request_head *h,
    const char *why)
{
	const struct http_header	*host = NULL, *accept = NULL, *hd;
	size_t				 i;

	/* One pass for both: every request needs Host, errors Accept. */
	for (i = 0; i < h->nheaders && (host == NULL || accept == NULL);
	    i++) {
		hd = &h->headers[i];
		if (hd->name_len == 4 && host == NULL &&
		    strncasecmp(hd->name, "host", 4) == 0)
			host = hd;
		else if (hd->name_len == 6 && accept == NULL &&
		    strncasecmp(hd->name, "accept", 6) == 0)
			accept = hd;
	}
	edge_stats_req_begin(req, h, host);
	if (host != NULL)
		edge_route_match(req->edge->cfg, host->value, host->value_len,
		    &req->host);
	else
		edge_route_match(req->edge->cfg, "", 0, &req->host);
	req->json_errors = req->host.kind == EDGE_HOST_API ||
	    edge_req_wants_json(accept);
	if (why != NULL) {
		req->close = 1;
		edge_req_error(req, 400, why);
		return;
	}
	if (!req->conn->tls && req->edge->cfg->redirect_https &&
	    edge_req_to_https(req, h)) {
		edge_page_https(req, h);
		return;
	}

	switch (req->host.kind) {
	case EDGE_HOST_API:
		if (edge_console_match(h->target, h->target_len)) {
			/* A person's browser: pages, unless it asks for JSON. */
			req->json_errors = edge_req_wants_json(accept);
			edge_console_serve(req, h);
			return;
		}
		edge_api_start(req, h);
		return;
	case EDGE_HOST_ROUTE:
		if (edge_route_addr(req->host.route, &req->key.ss,
		    &req->key.sslen) != 0) {
			edge_req_error(req, 502, "The route's upstream "
			    "address is invalid.");
			return;
		}
		edge_proxy_start(req, h, &req->key);
		return;
	case EDGE_HOST_BAD_PREVIEW:
		edge_req_error(req, 404, "No sandbox here.");
		return;
	case EDGE_HOST_PREVIEW:
		if (edge_preview_auth(req, h) != 0)
			return;
		edge_req_lookup(req, h);
		return;
	}
}

/*
 * Ask control where a preview goes. A running sandbox answers at once; a
 * waking one holds the request: its head is kept, the client is not read
 * (the body and pipelined requests wait in the socket), and a browser
 * navigation gets the warming page if the wait outlasts EDGE_WARMING_MS.
 */
static void
edge_req_lookup(struct edge_req *req, const struct http_request_head *h)
{
	struct control_target	 t;
	struct control_wait	*wait = NULL;
	int64_t			 ms;

	if (control_target_lookup(req->edge->ctl, req->host.sandbox_id,
	    req->host.port, &t, edge_req_wake_cb, req, &wait) ==
	    CONTROL_LOOKUP_DONE) {
		edge_req_target(req, h, &t);
		return;
	}
	req->state = EDGE_REQ_HELD;
	req->wait = wait;
	req->browser = edge_req_is_browser(h);
	edge_req_keep(req, h);
	req->ops->head_done(req);
	req->ops->hold(req, 1);
	/*
	 * Control answers every wait by wake_timeout; the slack only guards
	 * against a wait it lost.
	 */
	ms = req->edge->cfg->wake_timeout_ms + EDGE_HOLD_SLACK_MS;
	edge_req_timer(req, req->browser ? EDGE_WARMING_MS : ms);
	log_debug("held\tpeer=%s sandbox=%s browser=%d", req->conn->peer,
	    req->host.sandbox_id, req->browser);
}

/* A held lookup answered: go on exactly as if it had answered at once. */
static void
edge_req_wake_cb(const struct control_target *t, void *arg)
{
	struct edge_req	*req = arg;

	if (req->state != EDGE_REQ_HELD || req->wait == NULL) {
		log_warnx("wake answer for a request not held\tpeer=%s",
		    req->conn->peer);
		return;
	}
	req->wait = NULL;
	edge_req_timer(req, -1);
	req->ops->hold(req, 0);
	req->state = EDGE_REQ_ROUTING;
	edge_req_target(req, req->kept, t);
	edge_req_unkeep(req);
}

/* The held request's deadline: the warming page, or give up. */
static void
edge_req_held_timeout(struct edge_req *req)
{
	control_wait_cancel(req->wait);
	req->wait = NULL;
	req->ops->hold(req, 0);
	if (req->browser) {
		edge_page_warming(req);
		return;
	}
	edge_req_error(req, 504, "The sandbox did not start in time.");
}

/* Proxy to the target control gave, or answer with its page. */
static void
edge_req_target(struct edge_req *req, const struct http_request_head *h,
    const struct control_target *t)
{
	struct http_header	 extra[2];
	char			 retry[16];

	switch (t->kind) {
	case TARGET_OK:
		edge_conn_bind(req->conn, t->sandbox_id);
		if (req->conn->state == EDGE_CONN_DEAD)
			return;
		memcpy(&req->key.ss, &t->addr, t->addrlen);
		req->key.sslen = t->addrlen;
		snprintf(req->key.sandbox_id, sizeof req->key.sandbox_id, "%s",
		    t->sandbox_id);
		req->key.generation = t->generation;
		edge_proxy_start(req, h, &req->key);
		return;
	case TARGET_UNKNOWN:
		edge_req_error(req, 404, t->message != NULL ? t->message :
		    "No sandbox here.");
		return;
	case TARGET_ERROR:
		edge_req_error(req, 502, t->message != NULL ? t->message :
		    "The sandbox is in error.");
		return;
	case TARGET_UNAVAILABLE:
		break;
	}
	snprintf(retry, sizeof retry, "%d", t->retry_after_s > 0 ?
	    t->retry_after_s : 1);
	extra[0].name = "Retry-After";
	extra[0].name_len = 11;
	extra[0].value = retry;
	extra[0].value_len = strlen(retry);
	/*
	 * The warming page's poll keeps waiting on this one; a refusal
	 * (no room, a failed start) makes it reload and show why.
	 */
	extra[1].name = "X-Sandboxd-Waking";
	extra[1].name_len = 17;
	extra[1].value = "1";
	extra[1].value_len = 1;
	edge_page_error(req, 503, t->message != NULL ? t->message :
	    "The sandbox is not running.", extra, t->waking ? 2 : 1);
}

/* Copy a head the request must outlive its input buffer by (held). */
static void
edge_req_keep(struct edge_req *req, const struct http_request_head *h)
{
	struct http_request_head	*k;
	char				*p;
	size_t				 i, len;

	len = h->method_len + h->target_len;
	for (i = 0; i < h->nheaders; i++)
		len += h->headers[i].name_len + h->headers[i].value_len;
	edge_req_unkeep(req);
	k = req->kept = xcalloc(1, sizeof *k);
	p = req->kept_buf = xmalloc(len + 1);
	k->method = p;
	k->method_len = h->method_len;
	memcpy(p, h->method, h->method_len);
	p += h->method_len;
	k->target = p;
	k->target_len = h->target_len;
	memcpy(p, h->target, h->target_len);
	p += h->target_len;
	k->minor_version = h->minor_version;
	k->nheaders = h->nheaders;
	for (i = 0; i < h->nheaders; i++) {
		k->headers[i].name = p;
		k->headers[i].name_len = h->headers[i].name_len;
		memcpy(p, h->headers[i].name, h->headers[i].name_len);
		p += h->headers[i].name_len;
		k->headers[i].value = p;
		k->headers[i].value_len = h->headers[i].value_len;
		memcpy(p, h->headers[i].value, h->headers[i].value_len);
		p += h->headers[i].value_len;
	}
}

/* Drop a kept head. */
static void
edge_req_unkeep(struct edge_req *req)
{
	free(req->kept);
	free(req->kept_buf);
	req->kept = NULL;
	req->kept_buf = NULL;
}

/* The request's deadline for its current state passed. */
static void
edge_req_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge_req	*req = arg;

	switch (req->state) {
	case EDGE_REQ_HELD:
		edge_req_held_timeout(req);
		break;
	case EDGE_REQ_API_BODY:
		if (edge_req_body_check(req) == 0)
			break;
		req->close = 1;
		edge_req_error(req, 408, "The request body is arriving too "
		    "slowly.");
		break;
	case EDGE_REQ_PROXY:
	case EDGE_REQ_TUNNEL:
		edge_proxy_timeout(req);
		break;
	default:
		break;
	}
}

/*
 * Start a body_timeout window of the request body rule. A window in which
 * the client was paused (we had no room for its bytes) does not count.
 */
void
edge_req_body_watch(struct edge_req *req)
{
	req->rate_mark = req->body_got;
	req->rate_paused = req->client_blocked;
	edge_req_timer(req, req->edge->lim.body_ms);
}

/*
 * A body window ended: it must have brought body_min_rate's share of
 * bytes (one at least), else the body is too slow (-1). A body that keeps
 * moving at that rate is never cut, however long it is.
 */
int
edge_req_body_check(struct edge_req *req)
{
	const struct edge_limits	*lim = &req->edge->lim;
	uint64_t			 need;

	need = lim->body_rate * (uint64_t)lim->body_ms / 1000;
	if (need == 0)
		need = 1;
	if (!req->rate_paused && req->body_got - req->rate_mark < need) {
		log_debug("request body too slow\tpeer=%s got=%llu need=%llu",
		    req->conn->peer,
		    (unsigned long long)(req->body_got - req->rate_mark),
		    (unsigned long long)need);
		return -1;
	}
	edge_req_body_watch(req);
	return 0;
}

/* Client bytes arrived: a body to read on, or tunnel data. */
void
edge_req_client_data(struct edge_req *req)
{
	switch (req->state) {
	case EDGE_REQ_API_BODY:
		edge_api_body(req);
		break;
	case EDGE_REQ_PROXY:
	case EDGE_REQ_TUNNEL:
		edge_proxy_client_read(req);
		break;
	case EDGE_REQ_API_TUNNEL:
		edge_api_tunnel_read(req);
		break;
	default:
		/* Held or waiting: the bytes wait in the input. */
		break;
	}
}

/* The client took all our output. */
void
edge_req_drained(struct edge_req *req)
{
	if (req->state == EDGE_REQ_PROXY || req->state == EDGE_REQ_TUNNEL)
		edge_proxy_client_write(req);
	else if (req->state == EDGE_REQ_API_STREAM ||
	    req->state == EDGE_REQ_API_TUNNEL)
		edge_api_drained(req);
}

/* Send a response head; note how far the response got. */
void
edge_req_head(struct edge_req *req, struct edge_resp_head *rh)
{
	size_t	n;

	if ((n = req->ops->head(req, rh)) == 0)
		return;
	req->bytes_out += n;
	if (rh->status >= 200 || rh->status == 101) {
		req->out = EDGE_OUT_FINAL;
		req->status = rh->status;
	} else
		req->out = EDGE_OUT_INTERIM;
}

/*
 * Leave whatever the request was waiting for or using, and count it no
 * more. The activity report goes last: control may call back into the
 * edge from it (a retirement), and must find this request done.
 */
static void
edge_req_settle(struct edge_req *req, enum edge_req_outcome how)
{
	edge_stats_req_end(req, how);
	edge_req_timer(req, -1);
	if (req->wait != NULL) {
		control_wait_cancel(req->wait);
		req->wait = NULL;
	}
	if (req->ex != NULL)
		edge_api_gone(req);
	edge_proxy_release(req, 0);
	edge_req_unkeep(req);
	req->state = EDGE_REQ_DONE;
	edge_req_activity(req, EDGE_ACT_NONE);
}

/* The response is complete. */
void
edge_req_end(struct edge_req *req)
{
	if (req->state == EDGE_REQ_DONE)
		return;
	edge_req_settle(req, EDGE_END_OK);
	req->ops->end(req);
}

/* The response cannot be completed: cut it off. */
void
edge_req_abort(struct edge_req *req)
{
	if (req->state == EDGE_REQ_DONE)
		return;
	edge_req_settle(req, EDGE_END_CUT);
	req->ops->abort(req);
}

/* The client went away (its connection is closing). */
void
edge_req_gone(struct edge_req *req)
{
	if (req->state == EDGE_REQ_DONE)
		return;
	edge_req_settle(req, EDGE_END_GONE);
}

/*
 * Answer with an error: a page, or the API JSON error on API hosts. Once
 * the final head went out only cutting it off is left; after interim
 * responses (100 Continue) a final one still may come. Refusals of a
 * broken request close the connection.
 */
void
edge_req_error(struct edge_req *req, int status, const char *message)
{
	if (req->state == EDGE_REQ_DONE)
		return;
	log_debug("edge error\tstatus=%d peer=%s msg=\"%s\"", status,
	    req->conn->peer, message);
	edge_proxy_release(req, 0);
	if (req->out == EDGE_OUT_FINAL) {
		edge_req_abort(req);
		return;
	}
	if (status == 400 || status == 408 || status == 413 || status == 431)
		req->close = 1;
	edge_page_error(req, status, message, NULL, 0);
}

/*
 * Move the request's activity count to act: the +1 of the new kind, then
 * the -1 of the old one. Only requests to a sandbox count. Control may
 * end the request from inside either call (a retirement), which moves it
 * to EDGE_ACT_NONE in a nested call: req->activity is set first and the
 * +1 made before anything else, so that nested -1 always has its +1.
 */
void
edge_req_activity(struct edge_req *req, enum edge_req_activity act)
{
	static const enum control_activity kinds[] = {
		ACTIVITY_REQUEST,	/* unused for EDGE_ACT_NONE */
		ACTIVITY_REQUEST,
		ACTIVITY_TUNNEL
	};
	struct control		*ctl = req->edge->ctl;
	enum edge_req_activity	 old = req->activity;
	char			 id[ID_LEN + 1];

	if (old == act)
		return;
	if (old == EDGE_ACT_NONE) {
		if (req->key.sandbox_id[0] == '\0')
			return;
		memcpy(req->activity_id, req->key.sandbox_id,
		    sizeof req->activity_id);
	}
	memcpy(id, req->activity_id, sizeof id);
	req->activity = act;
	if (act == EDGE_ACT_NONE)
		req->activity_id[0] = '\0';
	if (act != EDGE_ACT_NONE)
		control_activity(ctl, id, kinds[act], 1);
	if (old != EDGE_ACT_NONE)
		control_activity(ctl, id, kinds[old], -1);
}
