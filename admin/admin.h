/*
 * admin/ — the daemon's admin socket, data_dir/admin.sock (mode 0600): a
 * tiny HTTP/1.0 server on the event loop that "sandboxd status" (or
 * curl --unix-socket) reads. It sits above edge and control, as main does,
 * and only reads them through their public headers.
 *
 *	GET /status	200, one JSON object: version, pid, uptime, config,
 *			listeners, Docker, sandboxes by state, held requests,
 *			counters, sandboxes in error, the last warnings
 */
#ifndef SBX_ADMIN_H
#define SBX_ADMIN_H

struct event_base;
struct config;
struct control;
struct edge;
struct admin;

#define ADMIN_SOCKET_NAME	"admin.sock"

/*
 * Listen on data_dir/admin.sock (a stale socket file is replaced).
 * Returns NULL with *cause on failure.
 */
struct admin	*admin_new(struct event_base *, const struct config *,
		    struct control *, struct edge *, char **cause);
/* Close the socket, remove its file, drop clients still waiting. */
void		 admin_free(struct admin *);

#endif /* SBX_ADMIN_H */
