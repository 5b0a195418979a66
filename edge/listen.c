/*
 * Listeners: bind every listen address, accept connections and hand them
 * to conn.c, back off accept on descriptor exhaustion.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	edge_accept_tls_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	edge_accept_error_cb(struct evconnlistener *, void *);
static void	edge_accept_resume_cb(evutil_socket_t, short, void *);
static int	edge_listen_one(struct edge *, const struct cfg_addr *, int,
		    char **);

/* Bind every listen address of the config; -1 with *cause on failure. */
int
edge_listen(struct edge *edge, char **cause)
{
	size_t	i;

	edge->accept_ev = evtimer_new(edge->base, edge_accept_resume_cb, edge);
	edge->listeners = xcalloc(edge->cfg->nlisten + edge->cfg->ntls_listen +
	    1, sizeof *edge->listeners);
	for (i = 0; i < edge->cfg->nlisten; i++) {
		if (edge_listen_one(edge, &edge->cfg->listen[i], 0, cause) != 0)
			return -1;
	}
	for (i = 0; i < edge->cfg->ntls_listen; i++) {
		if (edge_listen_one(edge, &edge->cfg->tls_listen[i], 1,
		    cause) != 0)
			return -1;
	}
	return 0;
}

/* Bind one listener (tls: its connections are TLS); -1 with *cause. */
static int
edge_listen_one(struct edge *edge, const struct cfg_addr *a, int tls,
    char **cause)
{
	struct edge_listener	*l = &edge->listeners[edge->nlisteners];

	l->tls = tls;
	l->lev = evconnlistener_new_bind(edge->base, tls ? edge_accept_tls_cb :
	    edge_accept_cb, edge,
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_CLOSE_ON_FREE,
	    1024, (const struct sockaddr *)&a->ss, a->sslen);
	if (l->lev == NULL) {
		xasprintf(cause, "listen %s: %s", a->text, strerror(errno));
		return -1;
	}
	evconnlistener_set_error_cb(l->lev, edge_accept_error_cb);
	l->sslen = sizeof l->ss;
	if (getsockname(evconnlistener_get_fd(l->lev),
	    (struct sockaddr *)&l->ss, &l->sslen) != 0) {
		memcpy(&l->ss, &a->ss, a->sslen);
		l->sslen = a->sslen;
	}
	edge->nlisteners++;
	log_info("listening\taddr=%s%s", a->text, tls ? " tls=1" : "");
	return 0;
}

/* Close every listener and stop the back-off (free: release them all). */
void
edge_listen_close(struct edge *edge, int free_all)
{
	size_t	i;

	for (i = 0; i < edge->nlisteners; i++) {
		if (edge->listeners[i].lev != NULL)
			evconnlistener_free(edge->listeners[i].lev);
		edge->listeners[i].lev = NULL;
	}
	if (edge->accept_ev != NULL)
		evtimer_del(edge->accept_ev);
	if (free_all) {
		if (edge->accept_ev != NULL)
			event_free(edge->accept_ev);
		edge->accept_ev = NULL;
		free(edge->listeners);
		edge->listeners = NULL;
		edge->nlisteners = 0;
	}
}

/* The address a listener is bound to (the real port when 0 was asked). */
int
edge_listener_addr(struct edge *edge, size_t i, struct sockaddr_storage *ss,
    socklen_t *sslen)
{
	if (i >= edge->nlisteners || edge->listeners[i].lev == NULL)
		return -1;
	memcpy(ss, &edge->listeners[i].ss, edge->listeners[i].sslen);
	*sslen = edge->listeners[i].sslen;
	return 0;
}

/* A new client connection. */
static void
edge_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct edge	*edge = arg;

	if (edge->shutting_down) {
		close(fd);
		return;
	}
	edge_conn_accept(edge, fd, sa, 0);
}

/* A new client connection on a TLS listener. */
static void
edge_accept_tls_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct edge	*edge = arg;

	if (edge->shutting_down) {
		close(fd);
		return;
	}
	edge_conn_accept(edge, fd, sa, 1);
}

/* accept failed: back off on descriptor exhaustion instead of spinning. */
static void
edge_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct edge	*edge = arg;
	struct timeval	 tv = { 0, EDGE_ACCEPT_BACKOFF_MS * 1000 };
	int		 error = EVUTIL_SOCKET_ERROR();
	size_t		 i;

	if (error != EMFILE && error != ENFILE && error != ENOBUFS &&
	    error != ENOMEM) {
		log_warnx("accept: %s", strerror(error));
		return;
	}
	log_warnx("accept: %s; pausing listeners", strerror(error));
	for (i = 0; i < edge->nlisteners; i++)
		evconnlistener_disable(edge->listeners[i].lev);
	evtimer_add(edge->accept_ev, &tv);
}

/* End of the accept backoff. */
static void
edge_accept_resume_cb(evutil_socket_t fd, short events, void *arg)
{
	struct edge	*edge = arg;
	size_t		 i;

	if (edge->shutting_down)
		return;
	for (i = 0; i < edge->nlisteners; i++)
		evconnlistener_enable(edge->listeners[i].lev);
}
