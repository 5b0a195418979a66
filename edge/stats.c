/*
 * What the edge counts and logs about its traffic: the counters GET
 * /metrics shows (requests by kind, protocol and status class, bytes,
 * connections), and the access log (access_log), one logfmt line per
 * request written when it ends. With the log off a request costs a few
 * integer additions and one branch; with it on, its line is formatted
 * into a buffer that is written once per loop turn.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/types.h>
#include <sys/time.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

#define EDGE_ALOG_HOST_MAX	256	/* Host bytes kept for the log */
#define EDGE_ALOG_PATH_MAX	2048	/* path bytes kept for the log */
#define EDGE_ALOG_WARN_MS	60000	/* one write-failure warning a minute */

static int	edge_alog_open(const char *path, char **cause);
static void	edge_alog_flush_cb(evutil_socket_t, short, void *);
static void	edge_alog_flush(struct edge_alog *);
static void	edge_alog_quoted(struct evbuffer *, const char *, size_t);
static void	edge_alog_line(struct edge_req *, enum edge_req_outcome);
static void	edge_stats_metrics_cb(struct evbuffer *, void *);

static const char *const edge_kind_names[EDGE_NKIND] = {
	"api", "route", "preview"
};
static const char *const edge_proto_names[EDGE_NPROTO] = { "h1", "h2" };
static const char *const edge_class_names[EDGE_NCLASS] = {
	"none", "1xx", "2xx", "3xx", "4xx", "5xx"
};
static const char *const edge_end_names[] = { "ok", "cut", "gone" };

/* Open a log file for appending; its descriptor, or -1 with *cause. */
static int
edge_alog_open(const char *path, char **cause)
{
	int	fd;

	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd == -1) {
		xasprintf(cause, "access_log %s: %s", path, strerror(errno));
		return -1;
	}
	return fd;
}

/*
 * Start the edge's counters; open the access log if there is one and
 * register the edge's part of /metrics with control.
 */
int
edge_stats_init(struct edge *edge, char **cause)
{
	struct edge_alog	*al;
	const char		*path = edge->cfg->access_log;

	control_set_metrics_cb(edge->ctl, edge_stats_metrics_cb, edge);
	if (path == NULL)
		return 0;
	al = xcalloc(1, sizeof *al);
	al->fd = 2;
	if (strcmp(path, "stderr") != 0) {
		al->path = xstrdup(path);
		if ((al->fd = edge_alog_open(path, cause)) == -1) {
			free(al->path);
			free(al);
			return -1;
		}
	}
	al->buf = evbuffer_new();
	al->flush_ev = event_new(edge->base, -1, 0, edge_alog_flush_cb, al);
	if (al->buf == NULL || al->flush_ev == NULL)
		fatalx("cannot set up the access log");
	edge->alog = al;
	return 0;
}

/* Flush and close the access log; unregister from control. */
void
edge_stats_free(struct edge *edge)
{
	struct edge_alog	*al = edge->alog;

	if (edge->ctl != NULL)
		control_set_metrics_cb(edge->ctl, NULL, NULL);
	if (al == NULL)
		return;
	edge_alog_flush(al);
	event_free(al->flush_ev);
	evbuffer_free(al->buf);
	if (al->path != NULL && al->fd != -1)
		close(al->fd);
	free(al->path);
	free(al);
	edge->alog = NULL;
}

/* Reopen the log file on SIGHUP; stderr has nothing to reopen. */
int
edge_stats_reopen(struct edge *edge)
{
	struct edge_alog	*al = edge->alog;
	char			*cause = NULL;
	int			 fd;

	if (al == NULL || al->path == NULL)
		return 0;
	/* What was logged before the rename belongs in the old file. */
	edge_alog_flush(al);
	if ((fd = edge_alog_open(al->path, &cause)) == -1) {
		log_warnx("cannot reopen the access log, keeping the old "
		    "file\terror=\"%s\"", cause);
		free(cause);
		return -1;
	}
	if (al->fd != -1)
		close(al->fd);
	al->fd = fd;
	log_info("access log reopened\tpath=%s", al->path);
	return 0;
}

/* The loop turn's lines: written once, after the turn's callbacks. */
static void
edge_alog_flush_cb(evutil_socket_t fd, short events, void *arg)
{
	edge_alog_flush(arg);
}

/*
 * Write the buffer out. A file or stderr takes it all, short of an error
 * (disk full, a closed pipe): then the lines are dropped, not kept to
 * grow without bound, and the failure is logged once a minute.
 */
static void
edge_alog_flush(struct edge_alog *al)
{
	int64_t	now;
	int	n;

	al->pending = 0;
	while (evbuffer_get_length(al->buf) > 0) {
		n = al->fd != -1 ? evbuffer_write(al->buf, al->fd) : -1;
		if (n > 0 || (n == -1 && al->fd != -1 && errno == EINTR))
			continue;
		now = time_mono_ms();
		if (al->warned == 0 || now - al->warned >= EDGE_ALOG_WARN_MS) {
			al->warned = now;
			log_warnx("access log write failed, lines dropped\t"
			    "error=\"%s\"", al->fd == -1 ? "not open" :
			    strerror(errno));
		}
		evbuffer_drain(al->buf, evbuffer_get_length(al->buf));
	}
}

/*
 * Note what the access log needs of a request's head: its start, its
 * Host, and its path without the query string (preview tokens travel
 * there). Nothing is done with the log off.
 */
void
edge_stats_req_begin(struct edge_req *req, const struct http_request_head *h,
    const struct http_header *host)
{
	const char	*q;
	size_t		 len;

	req->begun = 1;
	if (req->edge->alog == NULL)
		return;
	req->t_start = time_mono_ms();
	req->up_ms = -1;
	free(req->log_host);
	free(req->log_path);
	req->log_host = req->log_path = NULL;
	if (host != NULL) {
		len = host->value_len < EDGE_ALOG_HOST_MAX ? host->value_len :
		    EDGE_ALOG_HOST_MAX;
		req->log_host = xstrndup(host->value, len);
	}
	if (h != NULL && h->target != NULL) {
		q = memchr(h->target, '?', h->target_len);
		len = q != NULL ? (size_t)(q - h->target) : h->target_len;
		/* A fragment should never be sent; never log one either. */
		if ((q = memchr(h->target, '#', len)) != NULL)
			len = (size_t)(q - h->target);
		if (len > EDGE_ALOG_PATH_MAX)
			len = EDGE_ALOG_PATH_MAX;
		req->log_path = xstrndup(h->target, len);
	}
}

/* Count a request that ends, log it, and make it not begun. */
void
edge_stats_req_end(struct edge_req *req, enum edge_req_outcome how)
{
	struct edge_stats	*st = &req->edge->stats;
	enum edge_proto		 proto;
	int			 kind, class;

	if (!req->begun)
		return;
	req->begun = 0;
	proto = req->h2s != NULL ? EDGE_PROTO_H2 : EDGE_PROTO_H1;
	switch (req->host.kind) {
	case EDGE_HOST_API:
		kind = 0;
		break;
	case EDGE_HOST_ROUTE:
		kind = 1;
		break;
	default:
		kind = 2;
		break;
	}
	class = req->status / 100;
	if (class < 0 || class >= EDGE_NCLASS)
		class = 0;
	st->requests[kind][proto][class]++;
	st->sent_bytes[proto] += req->bytes_out;
	if (req->edge->alog != NULL)
		edge_alog_line(req, how);
}

/*
 * Append s[0..len) as a logfmt quoted value: quotes and backslashes
 * escaped, anything not printable as \xHH, so a client cannot forge a
 * line or a field.
 */
static void
edge_alog_quoted(struct evbuffer *out, const char *s, size_t len)
{
	char		 tmp[EDGE_ALOG_PATH_MAX * 4 + 8];
	size_t		 i, n = 0;
	unsigned char	 c;

	tmp[n++] = '"';
	for (i = 0; i < len && n < sizeof tmp - 6; i++) {
		c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			tmp[n++] = '\\';
			tmp[n++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			n += (size_t)snprintf(tmp + n, sizeof tmp - n,
			    "\\x%02x", c);
		} else
			tmp[n++] = (char)c;
	}
	tmp[n++] = '"';
	evbuffer_add(out, tmp, n);
}

/* Format the request's line into the buffer; flush soon, or now if full. */
static void
edge_alog_line(struct edge_req *req, enum edge_req_outcome how)
{
	struct edge_alog	*al = req->edge->alog;
	struct evbuffer		*out = al->buf;
	struct timeval		 tv;
	struct tm		 tm;
	time_t			 sec;
	const char		*sandbox = req->host.sandbox_id;
	char			 up[32];

	/* The loop's cached time: no clock call per line. */
	if (event_base_gettimeofday_cached(req->edge->base, &tv) != 0)
		gettimeofday(&tv, NULL);
	sec = tv.tv_sec;
	gmtime_r(&sec, &tm);
	if (req->up_ms >= 0)
		snprintf(up, sizeof up, "%lld", (long long)req->up_ms);
	else
		snprintf(up, sizeof up, "-");
	evbuffer_add_printf(out, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ "
	    "level=info msg=access client=%s host=", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    (long)(tv.tv_usec / 1000), req->conn->peer_ip[0] != '\0' ?
	    req->conn->peer_ip : "-");
	if (req->log_host != NULL)
		edge_alog_quoted(out, req->log_host, strlen(req->log_host));
	else
		evbuffer_add(out, "-", 1);
	evbuffer_add_printf(out, " sandbox=%s method=",
	    sandbox[0] != '\0' ? sandbox : "-");
	edge_alog_quoted(out, req->method, strlen(req->method));
	evbuffer_add(out, " path=", 6);
	if (req->log_path != NULL)
		edge_alog_quoted(out, req->log_path, strlen(req->log_path));
	else
		evbuffer_add(out, "-", 1);
	evbuffer_add_printf(out, " status=%d bytes=%llu duration_ms=%lld "
	    "upstream_ms=%s proto=%s tls=%d end=%s\n", req->status,
	    (unsigned long long)req->bytes_out,
	    (long long)(time_mono_ms() - req->t_start), up,
	    edge_proto_names[req->h2s != NULL ? EDGE_PROTO_H2 : EDGE_PROTO_H1],
	    req->conn->tls, edge_end_names[how]);
	free(req->log_host);
	free(req->log_path);
	req->log_host = req->log_path = NULL;
	req->t_up = 0;
	if (evbuffer_get_length(out) >= EDGE_ALOG_HIGH)
		edge_alog_flush(al);
	else if (!al->pending) {
		al->pending = 1;
		event_active(al->flush_ev, 0, 0);
	}
}

/* A client connection opens: it speaks HTTP/1.1 until it says h2. */
void
edge_stats_conn_open(struct edge_conn *conn)
{
	struct edge_stats	*st = &conn->edge->stats;

	conn->proto = EDGE_PROTO_H1;
	conn->open_counted = 1;
	st->conns_open[EDGE_PROTO_H1][conn->tls != 0]++;
}

/* The connection turned to another protocol (h2c, ALPN h2). */
void
edge_stats_conn_proto(struct edge_conn *conn, enum edge_proto proto)
{
	struct edge_stats	*st = &conn->edge->stats;

	if (!conn->open_counted || conn->proto == proto)
		return;
	st->conns_open[conn->proto][conn->tls != 0]--;
	conn->proto = proto;
	st->conns_open[proto][conn->tls != 0]++;
}

/* The connection closes (idempotent). */
void
edge_stats_conn_close(struct edge_conn *conn)
{
	if (!conn->open_counted)
		return;
	conn->open_counted = 0;
	conn->edge->stats.conns_open[conn->proto][conn->tls != 0]--;
	conn->edge->stats.conns_closed[conn->proto]++;
}

/* The edge's families of GET /metrics. */
static void
edge_stats_metrics_cb(struct evbuffer *out, void *arg)
{
	struct edge		*edge = arg;
	struct edge_stats	*st = &edge->stats;
	int			 k, p, c, t;

	evbuffer_add_printf(out, "# HELP sandboxd_http_requests_total "
	    "Requests the edge answered or dropped, by what they were for "
	    "(api, route, preview), protocol and status class (none: no "
	    "response was sent).\n"
	    "# TYPE sandboxd_http_requests_total counter\n");
	for (k = 0; k < EDGE_NKIND; k++)
		for (p = 0; p < EDGE_NPROTO; p++)
			for (c = 0; c < EDGE_NCLASS; c++)
				evbuffer_add_printf(out,
				    "sandboxd_http_requests_total{kind=\"%s\","
				    "proto=\"%s\",code=\"%s\"} %llu\n",
				    edge_kind_names[k], edge_proto_names[p],
				    edge_class_names[c], (unsigned long long)
				    st->requests[k][p][c]);
	evbuffer_add_printf(out, "# HELP sandboxd_http_sent_bytes_total "
	    "Response bytes (heads and bodies) queued for clients.\n"
	    "# TYPE sandboxd_http_sent_bytes_total counter\n");
	for (p = 0; p < EDGE_NPROTO; p++)
		evbuffer_add_printf(out, "sandboxd_http_sent_bytes_total"
		    "{proto=\"%s\"} %llu\n", edge_proto_names[p],
		    (unsigned long long)st->sent_bytes[p]);
	evbuffer_add_printf(out, "# HELP sandboxd_http_received_bytes_total "
	    "Bytes read from clients (after TLS), by the protocol the "
	    "connection spoke when they came.\n"
	    "# TYPE sandboxd_http_received_bytes_total counter\n");
	for (p = 0; p < EDGE_NPROTO; p++)
		evbuffer_add_printf(out, "sandboxd_http_received_bytes_total"
		    "{proto=\"%s\"} %llu\n", edge_proto_names[p],
		    (unsigned long long)st->received_bytes[p]);
	evbuffer_add_printf(out, "# HELP sandboxd_http_connections Client "
	    "connections open, by protocol and TLS.\n"
	    "# TYPE sandboxd_http_connections gauge\n");
	for (p = 0; p < EDGE_NPROTO; p++)
		for (t = 0; t < 2; t++)
			evbuffer_add_printf(out, "sandboxd_http_connections"
			    "{proto=\"%s\",tls=\"%d\"} %lld\n",
			    edge_proto_names[p], t,
			    (long long)st->conns_open[p][t]);
	evbuffer_add_printf(out, "# HELP sandboxd_http_connections_closed_total "
	    "Client connections closed, by the protocol they spoke.\n"
	    "# TYPE sandboxd_http_connections_closed_total counter\n");
	for (p = 0; p < EDGE_NPROTO; p++)
		evbuffer_add_printf(out, "sandboxd_http_connections_closed_total"
		    "{proto=\"%s\"} %llu\n", edge_proto_names[p],
		    (unsigned long long)st->conns_closed[p]);
}
