/*
 * The admin socket: one request per connection ("GET /status HTTP/1.0"),
 * answered with a JSON object and closed. Only root (the socket is 0600 in
 * data_dir) can connect, so there is no auth beyond the file mode.
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <json.h>

#include "common/common.h"
#include "store/store.h"
#include "control/control.h"
#include "edge/edge.h"
#include "admin/admin.h"

/* A request head longer than this is not from our CLI: closed. */
#define ADMIN_MAX_HEAD		8192
#define ADMIN_TIMEOUT_S		10

struct admin_conn {
	struct admin			*admin;
	struct bufferevent		*bev;
	struct control_status_req	*req;	/* waiting for control */
	int				 replied;
	LIST_ENTRY(admin_conn)		 entry;
};

struct admin {
	struct event_base		*base;
	const struct config		*cf;
	struct control			*ctl;
	struct edge			*edge;
	struct evconnlistener		*lev;
	char				*path;
	int64_t				 started_wall;	/* ms since epoch */
	int64_t				 started_mono;
	LIST_HEAD(, admin_conn)		 conns;
};

static void	admin_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	admin_read_cb(struct bufferevent *, void *);
static void	admin_write_cb(struct bufferevent *, void *);
static void	admin_event_cb(struct bufferevent *, short, void *);
static void	admin_status_cb(struct json_object *, void *);
static void	admin_reply(struct admin_conn *, int, const char *);
static void	admin_conn_free(struct admin_conn *);
static struct json_object *admin_listeners(struct admin *);

/* Bind data_dir/admin.sock, 0600 from the start. */
struct admin *
admin_new(struct event_base *base, const struct config *cf,
    struct control *ctl, struct edge *edge, char **cause)
{
	struct admin		*a;
	struct sockaddr_un	 sun;
	mode_t			 old;
	int			 fd = -1;

	*cause = NULL;
	a = xcalloc(1, sizeof *a);
	a->base = base;
	a->cf = cf;
	a->ctl = ctl;
	a->edge = edge;
	a->started_wall = time_now_ms();
	a->started_mono = time_mono_ms();
	LIST_INIT(&a->conns);
	xasprintf(&a->path, "%s/%s", cf->data_dir, ADMIN_SOCKET_NAME);

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(a->path) >= sizeof sun.sun_path) {
		xasprintf(cause, "admin socket %s: path too long for a unix "
		    "socket", a->path);
		goto fail;
	}
	memcpy(sun.sun_path, a->path, strlen(a->path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		xasprintf(cause, "admin socket: %s", strerror(errno));
		goto fail;
	}
	/* Left by a daemon that did not stop cleanly. */
	if (unlink(a->path) == -1 && errno != ENOENT) {
		xasprintf(cause, "admin socket %s: %s", a->path,
		    strerror(errno));
		goto fail;
	}
	/* The loop is single-threaded: the umask is ours for this call. */
	old = umask(077);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		umask(old);
		xasprintf(cause, "admin socket %s: %s", a->path,
		    strerror(errno));
		goto fail;
	}
	umask(old);
	if (chmod(a->path, 0600) == -1) {
		xasprintf(cause, "admin socket %s: %s", a->path,
		    strerror(errno));
		goto fail;
	}
	a->lev = evconnlistener_new(base, admin_accept_cb, a,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, fd);
	if (a->lev == NULL) {
		xasprintf(cause, "admin socket %s: cannot listen", a->path);
		goto fail;
	}
	log_info("admin socket ready\tpath=%s", a->path);
	return (a);

fail:
	if (fd != -1 && a->lev == NULL)
		close(fd);
	admin_free(a);
	return (NULL);
}

void
admin_free(struct admin *a)
{
	struct admin_conn	*c;

	if (a == NULL)
		return;
	while ((c = LIST_FIRST(&a->conns)) != NULL)
		admin_conn_free(c);
	if (a->lev != NULL) {
		evconnlistener_free(a->lev);
		/* Gone with the daemon: status then reads the store. */
		unlink(a->path);
	}
	free(a->path);
	free(a);
}

static void
admin_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct admin		*a = arg;
	struct admin_conn	*c;
	struct timeval		 tv = { ADMIN_TIMEOUT_S, 0 };

	c = xcalloc(1, sizeof *c);
	c->admin = a;
	c->bev = bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		free(c);
		return;
	}
	LIST_INSERT_HEAD(&a->conns, c, entry);
	bufferevent_setcb(c->bev, admin_read_cb, NULL, admin_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ);
}

/* Collect the head; answer once it is whole. */
static void
admin_read_cb(struct bufferevent *bev, void *arg)
{
	struct admin_conn		*c = arg;
	struct evbuffer			*in = bufferevent_get_input(bev);
	struct http_request_head	 h;
	size_t				 len = evbuffer_get_length(in);
	const char			*buf;
	int				 n;

	if (c->replied || c->req != NULL) {
		evbuffer_drain(in, len);
		return;
	}
	if (len > ADMIN_MAX_HEAD) {
		admin_conn_free(c);
		return;
	}
	buf = (const char *)evbuffer_pullup(in, -1);
	n = http_parse_request(buf, len, &h);
	if (n == -2)
		return;
	if (n == -1) {
		admin_reply(c, 400, "{\"error\":{\"code\":\"bad_request\","
		    "\"message\":\"not an HTTP request\"}}");
		return;
	}
	if (h.method_len == 3 && memcmp(h.method, "GET", 3) == 0 &&
	    h.target_len == 7 && memcmp(h.target, "/status", 7) == 0) {
		evbuffer_drain(in, len);
		c->req = control_status(c->admin->ctl, admin_status_cb, c);
		return;
	}
	admin_reply(c, 404, "{\"error\":{\"code\":\"not_found\","
	    "\"message\":\"the admin socket answers GET /status\"}}");
}

/* Control's part is here: add the daemon's own and answer. */
static void
admin_status_cb(struct json_object *o, void *arg)
{
	struct admin_conn	*c = arg;
	struct admin		*a = c->admin;
	struct json_object	*w;
	const char		*lines[8];
	char			 ts[32];
	size_t			 n, i;

	c->req = NULL;
	time_format_rfc3339(a->started_wall, ts, sizeof ts);
	json_object_object_add(o, "running", json_object_new_boolean(1));
	json_object_object_add(o, "version",
	    json_object_new_string(PACKAGE_VERSION));
	json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(o, "started_at", json_object_new_string(ts));
	json_object_object_add(o, "uptime_s", json_object_new_int64(
	    (time_mono_ms() - a->started_mono) / 1000));
	json_object_object_add(o, "config", json_object_new_string(a->cf->path));
	json_object_object_add(o, "data_dir",
	    json_object_new_string(a->cf->data_dir));
	json_object_object_add(o, "instance",
	    json_object_new_string(a->cf->instance));
	json_object_object_add(o, "preview_domain",
	    json_object_new_string(a->cf->preview_domain));
	json_object_object_add(o, "public_url",
	    json_object_new_string(a->cf->public_url));
	json_object_object_add(o, "listeners", admin_listeners(a));
	w = json_object_new_array();
	n = log_recent(lines, nitems(lines));
	for (i = 0; i < n; i++)
		json_object_array_add(w, json_object_new_string(lines[i]));
	json_object_object_add(o, "recent_warnings", w);
	admin_reply(c, 200, json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

/*
 * The addresses the edge listens on, as bound (port 0 resolved). The
 * edge opens the listen addresses first, then the tls_listen ones.
 */
static struct json_object *
admin_listeners(struct admin *a)
{
	struct json_object	*arr, *l;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 host[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 16];
	size_t			 i;
	int			 port;

	arr = json_object_new_array();
	for (i = 0; edge_listener_addr(a->edge, i, &ss, &sslen) == 0; i++) {
		if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->
			    sin6_addr, host, sizeof host);
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			snprintf(text, sizeof text, "[%s]:%d", host, port);
		} else {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->
			    sin_addr, host, sizeof host);
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
			snprintf(text, sizeof text, "%s:%d", host, port);
		}
		l = json_object_new_object();
		json_object_object_add(l, "address",
		    json_object_new_string(text));
		json_object_object_add(l, "tls",
		    json_object_new_boolean(i >= a->cf->nlisten));
		json_object_array_add(arr, l);
	}
	return (arr);
}

/* Send an answer and close once it is written. */
static void
admin_reply(struct admin_conn *c, int status, const char *json)
{
	struct evbuffer	*out = bufferevent_get_output(c->bev);
	size_t		 len = strlen(json);

	c->replied = 1;
	evbuffer_add_printf(out, "HTTP/1.0 %d %s\r\nContent-Type: "
	    "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n"
	    "\r\n", status, http_status_text(status), len + 1);
	evbuffer_add(out, json, len);
	evbuffer_add(out, "\n", 1);
	bufferevent_setcb(c->bev, admin_read_cb, admin_write_cb,
	    admin_event_cb, c);
	bufferevent_enable(c->bev, EV_WRITE);
}

static void
admin_write_cb(struct bufferevent *bev, void *arg)
{
	struct admin_conn	*c = arg;

	if (c->replied && evbuffer_get_length(bufferevent_get_output(bev)) ==
	    0)
		admin_conn_free(c);
}

/* EOF, error or timeout: the client is gone, or too slow. */
static void
admin_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct admin_conn	*c = arg;

	/* A client that half-closes after its request still gets the answer. */
	if ((what & BEV_EVENT_EOF) && (c->req != NULL || c->replied) &&
	    !(what & BEV_EVENT_WRITING)) {
		bufferevent_disable(bev, EV_READ);
		return;
	}
	admin_conn_free(c);
}

/* The one teardown of a connection. */
static void
admin_conn_free(struct admin_conn *c)
{
	if (c->req != NULL) {
		control_status_cancel(c->req);
		c->req = NULL;
	}
	LIST_REMOVE(c, entry);
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	free(c);
}
