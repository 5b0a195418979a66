/*
 * GET /v1/sandboxes/{id}/terminal: a WebSocket (RFC 6455, libwslay) on
 * the client's side, agentd's framed PTY protocol (docs/agentd.md
 * "Terminal") on the other. The edge answers our 101 and hands us the
 * client's bytes (http_exchange_upgrade); agentd's connection comes from
 * agent_upgrade. Binary and non-resize text messages become data frames;
 * a text {"resize":[cols,rows]} a resize frame; agentd's exit frame a
 * close 1000 whose reason is "exit N". Each way has a bounded buffer:
 * past TERM_HIGH unsent bytes the source is not read until it drains.
 * An open terminal holds the sandbox awake (rt_hold).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "control/control.h"
#include "control/control_int.h"

#define TERM_AGENTD_TIMEOUT_MS	10000
#define TERM_HIGH		(256 * 1024)	/* unsent bytes either way */
#define TERM_MSG_MAX		(1024 * 1024)	/* a client message; agentd's frame cap */
#define TERM_PING_S		30
#define TERM_WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum term_state {
	TERM_CONNECTING,	/* waiting for agentd's 101 */
	TERM_OPEN,		/* relaying */
	TERM_DONE		/* torn down */
};

struct term {
	struct control		*ctl;
	struct http_exchange	*ex;
	char			 sandbox_id[ID_LEN + 1];
	enum term_state		 state;
	char			 accept[32];	/* Sec-WebSocket-Accept */
	int			 subproto;	/* offered "sandboxd.terminal" */
	struct agent_req	*areq;		/* while connecting */
	struct bufferevent	*bev;		/* agentd, once open */
	wslay_event_context_ptr	 ws;
	struct evbuffer		*cin;		/* client bytes, in recv only */
	int			 client_full;	/* over the mark: agentd paused */
	int			 client_paused;	/* we paused the client */
	int			 held;		/* rt_hold +1 given */
	struct event		*ping_ev;
	int			 close_pending;	/* close once the output is out */
	uint16_t		 close_code;
	char			 close_reason[64];
};

static void	term_free(struct term *);
static void	term_reap_cb(evutil_socket_t, short, void *);
static void	term_up_cb(struct bufferevent *, void *);
static void	term_fail_cb(int, const char *, size_t, const char *, void *);
static void	term_client_data_cb(struct http_exchange *, struct evbuffer *,
		    void *);
static void	term_client_drain_cb(struct http_exchange *, void *);
static void	term_client_gone_cb(struct http_exchange *, void *);
static void	term_agent_read_cb(struct bufferevent *, void *);
static void	term_agent_write_cb(struct bufferevent *, void *);
static void	term_agent_event_cb(struct bufferevent *, short, void *);
static void	term_ping_cb(evutil_socket_t, short, void *);
static ssize_t	term_ws_recv_cb(wslay_event_context_ptr, uint8_t *, size_t,
		    int, void *);
static ssize_t	term_ws_send_cb(wslay_event_context_ptr, const uint8_t *,
		    size_t, int, void *);
static void	term_ws_msg_cb(wslay_event_context_ptr,
		    const struct wslay_event_on_msg_recv_arg *, void *);
static void	term_flush(struct term *);
static void	term_close(struct term *, uint16_t, const char *);
static void	term_agent_frame(struct term *, uint8_t, const void *,
		    size_t);
static int	term_query_size(struct http_exchange *, const char *,
		    unsigned int, unsigned int *);
static int	term_offers(const char *, const char *);

static const struct wslay_event_callbacks term_ws_callbacks = {
	term_ws_recv_cb,
	term_ws_send_cb,
	NULL,		/* genmask: a server does not mask */
	NULL,
	NULL,
	NULL,
	term_ws_msg_cb
};

/* 1 if a comma-separated header value lists token (case-insensitive). */
static int
term_offers(const char *value, const char *token)
{
	size_t		 tlen = strlen(token), n;
	const char	*p = value;

	if (value == NULL)
		return (0);
	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		n = strcspn(p, ", \t");
		if (n == tlen && strncasecmp(p, token, n) == 0)
			return (1);
		p += n;
	}
	return (0);
}

/* cols or rows from the query: 1..1000, def when absent; -1 if bad. */
static int
term_query_size(struct http_exchange *ex, const char *name,
    unsigned int def, unsigned int *out)
{
	char		*v, *end;
	unsigned long	 n;

	*out = def;
	if ((v = http_exchange_query(ex, name)) == NULL)
		return (0);
	n = strtoul(v, &end, 10);
	if (*v == '\0' || *end != '\0' || n < 1 || n > 1000) {
		free(v);
		return (-1);
	}
	free(v);
	*out = n;
	return (0);
}

/*
 * GET /v1/sandboxes/{id}/terminal: check the handshake, then ask agentd
 * for a PTY; the 101 goes out only once agentd gave one, so a failure is
 * still a plain HTTP error.
 */
void
term_open(struct control *ctl, struct http_exchange *ex, const char *id)
{
	struct sandbox_rt	*rt = rt_find(ctl, id);
	struct term		*t;
	const char		*key, *h;
	unsigned char		 md[SHA_DIGEST_LENGTH];
	char			 buf[128], path[64];
	unsigned int		 cols, rows;
	EVP_MD_CTX		*mc;

	h = http_exchange_header(ex, "upgrade");
	if (!term_offers(h, "websocket")) {
		http_exchange_reply_error(ex, 426, "upgrade_required",
		    "the terminal is a WebSocket: send Upgrade: websocket");
		return;
	}
	h = http_exchange_header(ex, "sec-websocket-version");
	if (h == NULL || strcmp(h, "13") != 0) {
		http_exchange_add_header(ex, "Sec-WebSocket-Version", "13");
		http_exchange_reply_error(ex, 426, "upgrade_required",
		    "Sec-WebSocket-Version must be 13");
		return;
	}
	key = http_exchange_header(ex, "sec-websocket-key");
	if (key == NULL || strlen(key) != 24) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "Sec-WebSocket-Key must be 16 bytes in base64");
		return;
	}
	if (term_query_size(ex, "cols", 80, &cols) == -1 ||
	    term_query_size(ex, "rows", 24, &rows) == -1) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "cols and rows must be integers 1..1000");
		return;
	}
	if (rt == NULL || rt->state != SANDBOX_RUNNING) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "sandbox is %s; a terminal needs it running (start it "
		    "first)", store_sandbox_state_name(rt != NULL ?
		    rt->state : SANDBOX_STOPPED));
		return;
	}

	t = xcalloc(1, sizeof *t);
	t->ctl = ctl;
	t->ex = ex;
	t->state = TERM_CONNECTING;
	snprintf(t->sandbox_id, sizeof t->sandbox_id, "%s", id);
	t->subproto = term_offers(http_exchange_header(ex,
	    "sec-websocket-protocol"), "sandboxd.terminal");

	/* RFC 6455 4.2.2: base64(SHA-1(key GUID)). */
	snprintf(buf, sizeof buf, "%s%s", key, TERM_WS_GUID);
	mc = EVP_MD_CTX_new();
	if (mc == NULL || EVP_DigestInit_ex(mc, EVP_sha1(), NULL) != 1 ||
	    EVP_DigestUpdate(mc, buf, strlen(buf)) != 1 ||
	    EVP_DigestFinal_ex(mc, md, NULL) != 1)
		fatalx("%s: SHA-1 failed", __func__);
	EVP_MD_CTX_free(mc);
	EVP_EncodeBlock((unsigned char *)t->accept, md, sizeof md);

	snprintf(path, sizeof path, "/terminal?cols=%u&rows=%u", cols, rows);
	t->areq = agent_upgrade(ctl->hub, id, path, TERM_AGENTD_TIMEOUT_MS,
	    term_up_cb, term_fail_cb, t);
}

/* agentd gave no PTY: a plain HTTP error, still possible. */
static void
term_fail_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct term		*t = arg;
	struct http_exchange	*ex = t->ex;

	(void)body;
	(void)len;
	t->areq = NULL;
	t->ex = NULL;
	term_free(t);
	if (status == 0)
		http_exchange_reply_error(ex, 503, "unavailable",
		    "the sandbox's agent did not answer: %s",
		    errmsg != NULL ? errmsg : "?");
	else
		http_exchange_reply_error(ex, status == 503 ? 503 : 502,
		    status == 503 ? "unavailable" : "bad_gateway",
		    "the sandbox's agent answered HTTP %d to /terminal",
		    status);
}

/* agentd's PTY is there: answer 101 and relay. */
static void
term_up_cb(struct bufferevent *bev, void *arg)
{
	struct term		*t = arg;
	struct timeval		 tv = { TERM_PING_S, 0 };

	t->areq = NULL;
	t->bev = bev;
	if (wslay_event_context_server_init(&t->ws, &term_ws_callbacks,
	    t) != 0)
		fatalx("%s: out of memory", __func__);
	wslay_event_config_set_max_recv_msg_length(t->ws, TERM_MSG_MAX);
	http_exchange_add_header(t->ex, "Sec-WebSocket-Accept", t->accept);
	if (t->subproto)
		http_exchange_add_header(t->ex, "Sec-WebSocket-Protocol",
		    "sandboxd.terminal");
	if (http_exchange_upgrade(t->ex, term_client_data_cb,
	    term_client_drain_cb, term_client_gone_cb, t) == -1) {
		/* The client left, or cannot upgrade (answered). */
		t->ex = NULL;
		term_free(t);
		return;
	}
	t->state = TERM_OPEN;
	rt_hold(t->ctl, t->sandbox_id, +1);
	t->held = 1;
	log_info("terminal open\tsandbox=%s peer=%s", t->sandbox_id,
	    t->ex->peer);
	bufferevent_setcb(bev, term_agent_read_cb, term_agent_write_cb,
	    term_agent_event_cb, t);
	bufferevent_setwatermark(bev, EV_WRITE, TERM_HIGH / 2, 0);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	t->ping_ev = evtimer_new(bufferevent_get_base(bev), term_ping_cb, t);
	evtimer_add(t->ping_ev, &tv);
	/* Output agentd sent right after its head. */
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		term_agent_read_cb(bev, t);
}

/*
 * The one teardown: the client's stream, agentd's connection, the hold.
 * An open terminal's struct goes on the next loop turn: its callers
 * (agentd's read loop) look at t->state after the call that ended it.
 */
static void
term_free(struct term *t)
{
	struct timeval	 now = { 0, 0 };
	int		 open = t->state == TERM_OPEN;

	if (t->state == TERM_DONE)
		return;
	t->state = TERM_DONE;
	if (t->areq != NULL)
		agent_cancel(t->areq);
	if (t->ping_ev != NULL)
		event_free(t->ping_ev);
	if (t->bev != NULL)
		bufferevent_free(t->bev);	/* agentd hangs the shell up */
	if (t->ws != NULL)
		wslay_event_context_free(t->ws);
	if (t->ex != NULL)
		http_exchange_stream_end(t->ex);	/* closes the client */
	if (t->held)
		rt_hold(t->ctl, t->sandbox_id, -1);
	if (!open) {
		free(t);
		return;
	}
	log_info("terminal closed\tsandbox=%s", t->sandbox_id);
	if (event_base_once(t->ctl->base, -1, EV_TIMEOUT, term_reap_cb, t,
	    &now) == -1)
		fatalx("%s: event_base_once failed", __func__);
}

static void
term_reap_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	free(arg);
}

/*
 * Write what wslay has queued; end once our close went out. wslay sends
 * control frames ahead of queued messages and nothing after a close, so
 * our own close is queued only once the screen output before it is out
 * (else the shell's last words were lost and, the queue never emptying,
 * the connection stayed open).
 */
static void
term_flush(struct term *t)
{
	if (t->state != TERM_OPEN)
		return;
	if (wslay_event_send(t->ws) != 0) {
		term_free(t);
		return;
	}
	if (t->close_pending && !wslay_event_get_close_sent(t->ws) &&
	    wslay_event_get_queued_msg_count(t->ws) == 0) {
		t->close_pending = 0;
		wslay_event_queue_close(t->ws, t->close_code,
		    (const uint8_t *)t->close_reason, strlen(t->close_reason));
		if (wslay_event_send(t->ws) != 0) {
			term_free(t);
			return;
		}
	}
	if (wslay_event_get_close_sent(t->ws))
		term_free(t);
}

/* Close the WebSocket with code and reason (after the output), then everything. */
static void
term_close(struct term *t, uint16_t code, const char *reason)
{
	if (t->state != TERM_OPEN)
		return;
	if (!wslay_event_get_close_sent(t->ws) && !t->close_pending) {
		t->close_pending = 1;
		t->close_code = code;
		snprintf(t->close_reason, sizeof t->close_reason, "%s",
		    reason);
	}
	term_flush(t);
}

/* Client bytes: WebSocket frames, read while agentd has room. */
static void
term_client_data_cb(struct http_exchange *ex, struct evbuffer *in, void *arg)
{
	struct term	*t = arg;

	(void)ex;
	t->cin = in;
	if (wslay_event_recv(t->ws) != 0) {
		t->cin = NULL;
		term_free(t);	/* a protocol error: wslay closed (1002) */
		return;
	}
	t->cin = NULL;
	if (t->state != TERM_OPEN)
		return;
	if (wslay_event_get_close_received(t->ws)) {
		/* wslay queued the answering close: send it and end. */
		term_close(t, 1000, "");
		return;
	}
	if (evbuffer_get_length(bufferevent_get_output(t->bev)) >=
	    TERM_HIGH && !t->client_paused) {
		t->client_paused = 1;
		http_exchange_upgrade_pause(t->ex, 1);
	}
	if (wslay_event_want_write(t->ws))
		term_flush(t);
}

/* wslay reads: from the client's bytes, unless agentd is full. */
static ssize_t
term_ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
    int flags, void *arg)
{
	struct term	*t = arg;
	int		 n;

	(void)flags;
	if (t->cin == NULL || evbuffer_get_length(t->cin) == 0 ||
	    t->state != TERM_OPEN ||
	    evbuffer_get_length(bufferevent_get_output(t->bev)) >=
	    TERM_HIGH) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return (-1);
	}
	n = evbuffer_remove(t->cin, buf, len);
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return (-1);
	}
	return (n);
}

/* wslay writes: into the client's connection (copied there). */
static ssize_t
term_ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
    int flags, void *arg)
{
	struct term	*t = arg;
	int		 r;

	(void)flags;
	if (t->client_full) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return (-1);
	}
	r = http_exchange_stream_write(t->ex, data, len);
	if (r == -1) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return (-1);
	}
	if (r == 1 && !t->client_full) {
		/* Over the mark: stop reading agentd until it drains. */
		t->client_full = 1;
		bufferevent_disable(t->bev, EV_READ);
	}
	return ((ssize_t)len);
}

/* "{"resize":[cols,rows]}" with both in 1..1000: 0, else -1. */
int
term_resize_parse(const uint8_t *msg, size_t len, unsigned int *cols,
    unsigned int *rows)
{
	struct json_tokener	*tok;
	struct json_object	*o, *a, *c, *r;
	int			 ret = -1;
	int64_t			 cv, rv;

	if (len == 0 || msg[0] != '{' || len > 256)
		return (-1);
	tok = json_tokener_new();
	o = json_tokener_parse_ex(tok, (const char *)msg, len);
	if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    (size_t)json_tokener_get_parse_end(tok) != len)
		goto out;
	if (!json_object_is_type(o, json_type_object) ||
	    json_object_object_length(o) != 1 ||
	    !json_object_object_get_ex(o, "resize", &a) ||
	    !json_object_is_type(a, json_type_array) ||
	    json_object_array_length(a) != 2)
		goto out;
	c = json_object_array_get_idx(a, 0);
	r = json_object_array_get_idx(a, 1);
	if (!json_object_is_type(c, json_type_int) ||
	    !json_object_is_type(r, json_type_int))
		goto out;
	cv = json_object_get_int64(c);
	rv = json_object_get_int64(r);
	if (cv < 1 || cv > 1000 || rv < 1 || rv > 1000)
		goto out;
	*cols = cv;
	*rows = rv;
	ret = 0;
out:
	json_object_put(o);
	json_tokener_free(tok);
	return (ret);
}

/* A whole client message: to agentd as data or a resize. */
static void
term_ws_msg_cb(wslay_event_context_ptr ctx,
    const struct wslay_event_on_msg_recv_arg *m, void *arg)
{
	struct term	*t = arg;
	unsigned int	 cols, rows;
	uint8_t		 hdr[5], sz[4];

	(void)ctx;
	if (t->state != TERM_OPEN)
		return;
	if (m->opcode == WSLAY_TEXT_FRAME &&
	    term_resize_parse(m->msg, m->msg_length, &cols, &rows) == 0) {
		sz[0] = cols >> 8;
		sz[1] = cols & 0xff;
		sz[2] = rows >> 8;
		sz[3] = rows & 0xff;
		hdr[0] = 1;
		hdr[1] = hdr[2] = hdr[3] = 0;
		hdr[4] = 4;
		bufferevent_write(t->bev, hdr, sizeof hdr);
		bufferevent_write(t->bev, sz, sizeof sz);
		return;
	}
	if ((m->opcode != WSLAY_TEXT_FRAME &&
	    m->opcode != WSLAY_BINARY_FRAME) || m->msg_length == 0)
		return;		/* ping, pong, close: wslay's */
	hdr[0] = 0;
	hdr[1] = (m->msg_length >> 24) & 0xff;
	hdr[2] = (m->msg_length >> 16) & 0xff;
	hdr[3] = (m->msg_length >> 8) & 0xff;
	hdr[4] = m->msg_length & 0xff;
	bufferevent_write(t->bev, hdr, sizeof hdr);
	bufferevent_write(t->bev, m->msg, m->msg_length);
}

/* The client took our output: read agentd again. */
static void
term_client_drain_cb(struct http_exchange *ex, void *arg)
{
	struct term	*t = arg;

	(void)ex;
	if (t->state != TERM_OPEN || !t->client_full)
		return;
	t->client_full = 0;
	term_flush(t);
	if (t->state != TERM_OPEN || t->client_full)
		return;
	bufferevent_enable(t->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_input(t->bev)) > 0)
		term_agent_read_cb(t->bev, t);
}

/* The client's connection went: hang the shell up. */
static void
term_client_gone_cb(struct http_exchange *ex, void *arg)
{
	struct term	*t = arg;

	(void)ex;
	t->ex = NULL;
	http_exchange_stream_end(ex);
	term_free(t);
}

/* A whole frame from agentd. */
static void
term_agent_frame(struct term *t, uint8_t type, const void *p, size_t len)
{
	struct wslay_event_msg	 msg;
	const uint8_t		*b = p;
	char			 reason[32];
	uint32_t		 status;

	switch (type) {
	case 0:
		memset(&msg, 0, sizeof msg);
		msg.opcode = WSLAY_BINARY_FRAME;
		msg.msg = p;
		msg.msg_length = len;
		if (len > 0 && wslay_event_queue_msg(t->ws, &msg) != 0)
			term_close(t, 1011, "internal error");
		break;
	case 2:
		status = len == 4 ? ((uint32_t)b[0] << 24 | b[1] << 16 |
		    b[2] << 8 | b[3]) : 255;
		snprintf(reason, sizeof reason, "exit %u", status);
		term_close(t, 1000, reason);
		break;
	default:
		term_close(t, 1011, "bad frame from the sandbox's agent");
		break;
	}
}

/* agentd's frames: the screen, or the shell's exit. */
static void
term_agent_read_cb(struct bufferevent *bev, void *arg)
{
	struct term	*t = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	uint8_t		 hdr[5];
	uint32_t	 len;
	unsigned char	*p;

	while (t->state == TERM_OPEN && !t->client_full &&
	    evbuffer_copyout(in, hdr, sizeof hdr) == sizeof hdr) {
		len = (uint32_t)hdr[1] << 24 | hdr[2] << 16 | hdr[3] << 8 |
		    hdr[4];
		if (len > TERM_MSG_MAX) {
			term_close(t, 1011, "bad frame from the sandbox's "
			    "agent");
			return;
		}
		if (evbuffer_get_length(in) < sizeof hdr + len)
			break;
		p = evbuffer_pullup(in, sizeof hdr + len);
		term_agent_frame(t, hdr[0], p + sizeof hdr, len);
		if (t->state != TERM_OPEN)
			return;
		evbuffer_drain(in, sizeof hdr + len);
	}
	if (t->state == TERM_OPEN && wslay_event_want_write(t->ws))
		term_flush(t);
}

/* agentd took our writes down to the low mark: read the client again. */
static void
term_agent_write_cb(struct bufferevent *bev, void *arg)
{
	struct term	*t = arg;

	(void)bev;
	if (t->state != TERM_OPEN || !t->client_paused)
		return;
	t->client_paused = 0;
	http_exchange_upgrade_pause(t->ex, 0);
}

/* agentd closed without an exit frame (killed, sandbox stopped). */
static void
term_agent_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct term	*t = arg;

	(void)bev;
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) == 0)
		return;
	/* Frames still buffered go first (the exit frame among them). */
	term_agent_read_cb(bev, t);
	if (t->state == TERM_OPEN)
		term_close(t, 1011, "the sandbox's agent went away");
}

/* Keep NATs and idle proxies from dropping a quiet terminal. */
static void
term_ping_cb(evutil_socket_t fd, short events, void *arg)
{
	struct term		*t = arg;
	struct wslay_event_msg	 msg;
	struct timeval		 tv = { TERM_PING_S, 0 };

	(void)fd;
	(void)events;
	memset(&msg, 0, sizeof msg);
	msg.opcode = WSLAY_PING;
	wslay_event_queue_msg(t->ws, &msg);
	evtimer_add(t->ping_ev, &tv);
	term_flush(t);
}
