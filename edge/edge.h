/*
 * edge/ — sockets, TLS, HTTP and routing. It accepts connections on every
 * listener, sends [route] hosts to their upstream, preview hosts to the
 * sandbox control points it at, and everything else to the control API.
 * It knows nothing of Docker or SQLite.
 */
#ifndef SBX_EDGE_H
#define SBX_EDGE_H

#include "common/common.h"
#include "control/control.h"

struct event_base;
struct edge;

/* edge/route.c */
enum edge_host_kind {
	EDGE_HOST_API,		/* not a preview host, not a route: the API */
	EDGE_HOST_ROUTE,	/* a [route] matched; *route is set */
	EDGE_HOST_PREVIEW,	/* <id>.<domain> or <port>-<id>.<domain> */
	EDGE_HOST_BAD_PREVIEW	/* under the preview domain, but no valid id */
};
struct edge_host_match {
	enum edge_host_kind		 kind;
	const struct cfg_route		*route;
	char				 sandbox_id[ID_LEN + 1];
	int				 port;	/* 0: the template's port */
};
/*
 * Classify a Host header value (any ":port" suffix ignored, case-insensitive,
 * a trailing dot allowed) against the config's routes and preview domain.
 */
void	edge_route_match(const struct config *, const char *host, size_t len,
	    struct edge_host_match *);

/* edge/edge.c */
/*
 * Bind every listen/tls_listen address and register for control's
 * retirements; NULL with *cause on failure.
 */
struct edge	*edge_new(struct event_base *, const struct config *,
		    struct control *, char **cause);
/* Stop accepting; give in-flight requests grace_ms, then cut them. */
void		 edge_shutdown(struct edge *, int64_t grace_ms,
		    void (*done)(void *), void *arg);
void		 edge_free(struct edge *);

/* edge/tls.c */
/*
 * SIGHUP: load every tls_cert/tls_key pair again for new handshakes; on
 * any problem log it and keep the ones in use. 0 swapped, -1 kept.
 */
int		 edge_tls_reload(struct edge *);
/* Load every pair of cfg once, to check it (check-config); -1, *cause. */
int		 edge_tls_check(const struct config *, char **cause);
/* 1 if a certificate name ("*.x" or exact) matches a server name. */
int		 edge_tls_name_match(const char *pattern, const char *name);

/* edge/stats.c */
/*
 * SIGHUP: reopen the access_log file (logrotate renamed it) after writing
 * what is buffered to the old one. 0, or -1 (logged; the old file stays).
 */
int		 edge_stats_reopen(struct edge *);

/* edge/console.c */
/*
 * SIGHUP: read console_dir again; on any problem log it and keep what is
 * served. 0 swapped, -1 kept.
 */
int		 edge_console_reload(struct edge *);

/* edge/listen.c */
/*
 * The address listener i (in config order) is bound to, with the real port
 * when the config said 0; -1 if there is no such listener.
 */
int		 edge_listener_addr(struct edge *, size_t i,
		    struct sockaddr_storage *, socklen_t *);

#endif /* SBX_EDGE_H */
