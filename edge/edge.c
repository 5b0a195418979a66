/*
 * The edge object: setup and teardown, the reaper that frees closed
 * connections outside the callbacks that closed them, the pool sweep,
 * graceful shutdown, and control's retirement of a sandbox's address.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_reap_cb(evutil_socket_t, short, void *);
static void	edge_sweep_cb(evutil_socket_t, short, void *);
static void	edge_grace_cb(evutil_socket_t, short, void *);
static void	edge_retire_cb(const char *, void *);
static struct edge_req *edge_retire_find(struct edge *, const char *);

struct edge *
edge_new(struct event_base *base, const struct config *cfg,
    struct control *ctl, char **cause)
{
	struct edge	*edge;
	struct timeval	 tv = { EDGE_POOL_SWEEP_MS / 1000, 0 };

	edge = xcalloc(1, sizeof *edge);
	edge->base = base;
	edge->cfg = cfg;
	edge->ctl = ctl;
	TAILQ_INIT(&edge->conns);
	TAILQ_INIT(&edge->dead);
	TAILQ_INIT(&edge->spare_reqs);
	TAILQ_INIT(&edge->dead_ups);
	TAILQ_INIT(&edge->pools);
	/* Room for a rewritten head: at most twice the received one. */
	edge->scratch_size = 2 * HTTP_MAX_HEAD_SIZE + 1024;
	edge->scratch = xmalloc(edge->scratch_size);
	edge->reap_ev = event_new(base, -1, 0, edge_reap_cb, edge);
	edge->sweep_ev = event_new(base, -1, EV_PERSIST, edge_sweep_cb, edge);
	edge->grace_ev = evtimer_new(base, edge_grace_cb, edge);
	evtimer_add(edge->sweep_ev, &tv);
	/* Where redirect_https sends plain clients. */
	if (cfg->ntls_listen > 0 &&
	    cfg->tls_listen[0].ss.ss_family == AF_INET6)
		edge->tls_port = ntohs(((const struct sockaddr_in6 *)
		    &cfg->tls_listen[0].ss)->sin6_port);
	else if (cfg->ntls_listen > 0)
		edge->tls_port = ntohs(((const struct sockaddr_in *)
		    &cfg->tls_listen[0].ss)->sin_port);
	if (edge_tls_init(edge, cause) != 0)
		goto fail;
	edge_limit_init(edge);
	edge_console_init(edge);
	if (edge_stats_init(edge, cause) != 0)
		goto fail;
	if (edge_listen(edge, cause) != 0)
		goto fail;
	control_set_retire_cb(ctl, edge_retire_cb, edge);
	return edge;

fail:
	edge_free(edge);
	return NULL;
}

/* Have the reaper run later in this loop turn. */
void
edge_reap_soon(struct edge *edge)
{
	event_active(edge->reap_ev, 0, 0);
}

/* Free the connections closed since the last run; finish a shutdown. */
static void
edge_reap_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge		*edge = arg;
	struct edge_conn	*conn;
	void			(*done)(void *);

	while ((conn = TAILQ_FIRST(&edge->dead)) != NULL) {
		TAILQ_REMOVE(&edge->dead, conn, entry);
		edge_conn_free(conn);
	}
	edge_upstream_reap(edge);
	edge_req_spares_trim(edge, EDGE_SPARE_REQS);
	if (edge->shutting_down && edge->done != NULL &&
	    TAILQ_EMPTY(&edge->conns)) {
		evtimer_del(edge->grace_ev);
		done = edge->done;
		edge->done = NULL;
		done(edge->done_arg);
	}
}

/* Expire idle upstream connections. */
static void
edge_sweep_cb(evutil_socket_t fd, short events, void *arg)
{
	edge_pool_sweep(arg, 0);
}

/* The first request that uses an upstream connection to this sandbox. */
static struct edge_req *
edge_retire_find(struct edge *edge, const char *sandbox_id)
{
	struct edge_conn	*conn;
	struct edge_req		*req;

	TAILQ_FOREACH(conn, &edge->conns, entry) {
		if (conn->state == EDGE_CONN_H2) {
			if ((req = edge_h2_retire_find(conn, sandbox_id)) !=
			    NULL)
				return req;
			continue;
		}
		req = conn->req;
		if (conn->state != EDGE_CONN_REQUEST || req == NULL)
			continue;
		if ((req->state == EDGE_REQ_PROXY ||
		    req->state == EDGE_REQ_TUNNEL) &&
		    strcmp(req->key.sandbox_id, sandbox_id) == 0)
			return req;
	}
	return NULL;
}

/*
 * Control says a sandbox's address is no longer valid: close its pooled
 * connections and end every request and tunnel using it; held requests
 * are control's. Ending a request reports its activity, which re-enters
 * control, which may retire again: so the scan starts over after each
 * one (edge_proxy_retire always takes the request out of PROXY/TUNNEL),
 * and nothing is freed here, only closed: the reaper frees.
 */
static void
edge_retire_cb(const char *sandbox_id, void *arg)
{
	struct edge	*edge = arg;
	struct edge_req	*req;
	char		 id[ID_LEN + 1];

	/* The caller's string may not outlive what we are about to do. */
	snprintf(id, sizeof id, "%s", sandbox_id);
	log_debug("retire\tsandbox=%s", id);
	edge_pool_retire(edge, id);
	while ((req = edge_retire_find(edge, id)) != NULL)
		edge_proxy_retire(req);
}

/* Grace is over: cut whatever is still open. */
static void
edge_grace_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge		*edge = arg;
	struct edge_conn	*conn;

	while ((conn = TAILQ_FIRST(&edge->conns)) != NULL)
		edge_conn_close(conn);
}

void
edge_shutdown(struct edge *edge, int64_t grace_ms,
    void (*done)(void *), void *arg)
{
	struct edge_conn	*conn, *next;
	struct timeval		 tv;

	edge->shutting_down = 1;
	edge->done = done;
	edge->done_arg = arg;
	edge_listen_close(edge, 0);
	edge_pool_sweep(edge, 1);

	/*
	 * Idle connections go now; busy ones close after their response;
	 * HTTP/2 ones get GOAWAY and close once their streams are done.
	 */
	TAILQ_FOREACH_SAFE(conn, &edge->conns, entry, next) {
		conn->draining = 1;
		if (conn->state == EDGE_CONN_H2)
			edge_h2_shutdown(conn);
		if ((conn->state == EDGE_CONN_HEAD && !conn->started &&
		    evbuffer_get_length(bufferevent_get_input(conn->bev)) ==
		    0) || conn->state == EDGE_CONN_HANDSHAKE)
			edge_conn_close(conn);
		/*
		 * An event stream ends only with its task: cut it now, its
		 * client resumes with Last-Event-ID from the next daemon. A
		 * streamed answer of known length (a file GET) ends by itself
		 * and gets the grace, as any other request.
		 */
		else if (conn->state == EDGE_CONN_REQUEST &&
		    conn->req != NULL &&
		    ((conn->req->state == EDGE_REQ_API_STREAM &&
		    conn->req->resp_body != HTTP_BODY_LENGTH) ||
		    conn->req->state == EDGE_REQ_API_TUNNEL))
			edge_req_abort(conn->req);
	}
	if (grace_ms < 0)
		grace_ms = 0;
	tv.tv_sec = grace_ms / 1000;
	tv.tv_usec = (grace_ms % 1000) * 1000;
	evtimer_add(edge->grace_ev, &tv);
	/* The reaper calls done once the last connection is gone. */
	edge_reap_soon(edge);
}

void
edge_free(struct edge *edge)
{
	struct edge_conn	*conn;

	if (edge == NULL)
		return;
	control_set_retire_cb(edge->ctl, NULL, NULL);
	edge->done = NULL;
	while ((conn = TAILQ_FIRST(&edge->conns)) != NULL)
		edge_conn_close(conn);
	edge_pool_sweep(edge, 1);
	edge_reap_cb(-1, 0, edge);
	edge_req_spares_trim(edge, 0);
	edge_listen_close(edge, 1);
	edge_tls_free(edge);
	edge_limit_free(edge);
	/* After the connections: their requests' lines go out first. */
	edge_stats_free(edge);
	edge_console_fini(edge);
	event_free(edge->reap_ev);
	event_free(edge->sweep_ev);
	event_free(edge->grace_ev);
	free(edge->scratch);
	free(edge);
}
