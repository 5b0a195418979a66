/*
 * The API exchange: one request that edge read, answered once by control.
 * The reply calls fill the response and hand the exchange back to the
 * transport, which then owns it; a detached exchange (client gone) is freed
 * by its reply instead.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <json.h>

#include "common/common.h"

static int	exchange_decode(const char *, size_t, char **);
static void	exchange_finish(struct http_exchange *);

/* A new, empty exchange with its body buffers. */
struct http_exchange *
http_exchange_new(void)
{
	struct http_exchange	*ex;

	ex = xcalloc(1, sizeof *ex);
	if ((ex->body = evbuffer_new()) == NULL ||
	    (ex->resp_body = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new failed", __func__);
	ex->started_ms = time_mono_ms();
	return ex;
}

/* Free an exchange and everything it owns. */
void
http_exchange_free(struct http_exchange *ex)
{
	size_t	i;

	if (ex == NULL)
		return;
	free(ex->method);
	free(ex->path);
	free(ex->query);
	for (i = 0; i < ex->nhdrs; i++) {
		free(ex->hdr_names[i]);
		free(ex->hdr_values[i]);
	}
	free(ex->hdr_names);
	free(ex->hdr_values);
	for (i = 0; i < ex->nresp_hdrs; i++) {
		free(ex->resp_hdr_names[i]);
		free(ex->resp_hdr_values[i]);
	}
	free(ex->resp_hdr_names);
	free(ex->resp_hdr_values);
	if (ex->body != NULL)
		evbuffer_free(ex->body);
	if (ex->resp_body != NULL)
		evbuffer_free(ex->resp_body);
	free(ex);
}

/* Value of the first request header with this name, or NULL. */
const char *
http_exchange_header(const struct http_exchange *ex, const char *name)
{
	size_t	i;

	for (i = 0; i < ex->nhdrs; i++) {
		if (strcasecmp(ex->hdr_names[i], name) == 0)
			return ex->hdr_values[i];
	}
	return NULL;
}

/*
 * Decode a query component: "%XX" escapes and '+' as space. Returns -1 on a
 * bad escape or an encoded NUL, which would cut the string short.
 */
static int
exchange_decode(const char *in, size_t len, char **out)
{
	char	*o;
	size_t	 i, n = 0;
	int	 hi, lo;

	o = xmalloc(len + 1);
	for (i = 0; i < len; i++) {
		if (in[i] == '+')
			o[n++] = ' ';
		else if (in[i] == '%') {
			if (i + 2 >= len)
				goto fail;
			if (!isxdigit((unsigned char)in[i + 1]) ||
			    !isxdigit((unsigned char)in[i + 2]))
				goto fail;
			hi = isdigit((unsigned char)in[i + 1]) ? in[i + 1] - '0' :
			    tolower((unsigned char)in[i + 1]) - 'a' + 10;
			lo = isdigit((unsigned char)in[i + 2]) ? in[i + 2] - '0' :
			    tolower((unsigned char)in[i + 2]) - 'a' + 10;
			if (hi == 0 && lo == 0)
				goto fail;
			o[n++] = (char)(hi << 4 | lo);
			i += 2;
		} else
			o[n++] = in[i];
	}
	o[n] = '\0';
	*out = o;
	return 0;
fail:
	free(o);
	return -1;
}

/* Decoded value of query parameter name (malloc'd), or NULL if absent. */
char *
http_exchange_query(const struct http_exchange *ex, const char *name)
{
	const char	*p, *end, *amp, *eq;
	char		*key, *value;
	size_t		 klen;

	if (ex->query == NULL)
		return NULL;
	p = ex->query;
	end = p + strlen(p);
	while (p < end) {
		amp = memchr(p, '&', (size_t)(end - p));
		if (amp == NULL)
			amp = end;
		eq = memchr(p, '=', (size_t)(amp - p));
		klen = (size_t)((eq != NULL ? eq : amp) - p);
		/* A malformed pair is skipped, not fatal to the others. */
		if (klen > 0 && exchange_decode(p, klen, &key) == 0) {
			if (strcmp(key, name) == 0) {
				free(key);
				if (eq == NULL)
					return xstrdup("");
				if (exchange_decode(eq + 1,
				    (size_t)(amp - eq - 1), &value) == 0)
					return value;
				return NULL;
			}
			free(key);
		}
		p = amp + 1;
	}
	return NULL;
}

/* Add a response header; only before the reply. */
void
http_exchange_add_header(struct http_exchange *ex, const char *name,
    const char *value)
{
	if (ex->replied) {
		log_warnx("%s: header %s after the reply", __func__, name);
		return;
	}
	ex->resp_hdr_names = xreallocarray(ex->resp_hdr_names,
	    ex->nresp_hdrs + 1, sizeof *ex->resp_hdr_names);
	ex->resp_hdr_values = xreallocarray(ex->resp_hdr_values,
	    ex->nresp_hdrs + 1, sizeof *ex->resp_hdr_values);
	ex->resp_hdr_names[ex->nresp_hdrs] = xstrdup(name);
	ex->resp_hdr_values[ex->nresp_hdrs] = xstrdup(value);
	ex->nresp_hdrs++;
}

/* Hand a replied exchange to its transport, or free it if detached. */
static void
exchange_finish(struct http_exchange *ex)
{
	ex->replied = 1;
	if (ex->conn != NULL && ex->transport != NULL &&
	    ex->transport->send != NULL)
		ex->transport->send(ex->conn, ex);
	else
		http_exchange_free(ex);
}

/* Answer with a copy of body. */
void
http_exchange_reply(struct http_exchange *ex, int status, const char *ctype,
    const void *body, size_t len)
{
	if (ex->replied) {
		log_warnx("%s: exchange answered twice (status %d)", __func__,
		    status);
		return;
	}
	ex->status = status;
	if (ctype != NULL)
		http_exchange_add_header(ex, "Content-Type", ctype);
	if (len > 0 && evbuffer_add(ex->resp_body, body, len) != 0)
		fatalx("%s: evbuffer_add failed", __func__);
	exchange_finish(ex);
}

/* Answer with the contents of buf, which is drained. */
void
http_exchange_reply_buffer(struct http_exchange *ex, int status,
    const char *ctype, struct evbuffer *buf)
{
	if (ex->replied) {
		log_warnx("%s: exchange answered twice (status %d)", __func__,
		    status);
		return;
	}
	ex->status = status;
	if (ctype != NULL)
		http_exchange_add_header(ex, "Content-Type", ctype);
	if (buf != NULL && evbuffer_add_buffer(ex->resp_body, buf) != 0)
		fatalx("%s: evbuffer_add_buffer failed", __func__);
	exchange_finish(ex);
}

/* Answer with a JSON text. */
void
http_exchange_reply_json(struct http_exchange *ex, int status,
    const char *json)
{
	http_exchange_reply(ex, status, "application/json", json,
	    strlen(json));
}

/* Answer with {"error":{"code":code,"message":...}}. */
void
http_exchange_reply_error(struct http_exchange *ex, int status,
    const char *code, const char *fmt, ...)
{
	struct json_object	*root, *err;
	char			*msg;
	va_list			 ap;

	if (ex->replied) {
		log_warnx("%s: exchange answered twice (status %d)", __func__,
		    status);
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("%s: out of memory", __func__);
	va_end(ap);

	root = json_object_new_object();
	err = json_object_new_object();
	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string(msg));
	json_object_object_add(root, "error", err);
	http_exchange_reply_json(ex, status, json_object_to_json_string_ext(root,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
	free(msg);
}

/* The client went away: the coming reply frees the exchange. */
void
http_exchange_detach(struct http_exchange *ex)
{
	ex->conn = NULL;
}

/* Answer with a stream: send the head now; body bytes follow. */
int
http_exchange_stream_begin(struct http_exchange *ex, int status,
    const char *ctype, http_exchange_stream_cb drain,
    http_exchange_stream_cb gone, void *arg)
{
	if (ex->replied) {
		log_warnx("%s: exchange answered twice (status %d)", __func__,
		    status);
		return (-1);
	}
	if (ex->conn == NULL) {
		/* The client left before the answer began. */
		ex->replied = 1;
		http_exchange_free(ex);
		return (-1);
	}
	if (ex->transport == NULL || ex->transport->stream_head == NULL) {
		http_exchange_reply_error(ex, 501, "not_implemented",
		    "this transport cannot stream an answer");
		return (-1);
	}
	ex->status = status;
	if (ctype != NULL)
		http_exchange_add_header(ex, "Content-Type", ctype);
	ex->replied = 1;
	ex->streaming = 1;
	ex->drain_cb = drain;
	ex->gone_cb = gone;
	ex->stream_arg = arg;
	ex->transport->stream_head(ex->conn, ex);
	return (0);
}

/* Queue body bytes of a streamed answer. */
int
http_exchange_stream_write(struct http_exchange *ex, const void *data,
    size_t len)
{
	if (!ex->streaming || ex->conn == NULL)
		return (-1);
	if (len == 0)
		return (0);
	return (ex->transport->stream_write(ex->conn, ex, data, len));
}

/* End a streamed answer; the exchange is freed. */
void
http_exchange_stream_end(struct http_exchange *ex)
{
	if (ex->streaming && ex->conn != NULL)
		ex->transport->stream_end(ex->conn, ex);
	http_exchange_free(ex);
}

/* End a streamed answer as failed; the exchange is freed. */
void
http_exchange_stream_cut(struct http_exchange *ex)
{
	ex->stream_cut = 1;
	http_exchange_stream_end(ex);
}

/* Take the request body as it arrives. */
void
http_exchange_body_take(struct http_exchange *ex, http_exchange_data_cb data,
    http_exchange_stream_cb gone, void *arg)
{
	ex->body_cb = data;
	ex->body_gone_cb = gone;
	ex->body_arg = arg;
}

void
http_exchange_body_pause(struct http_exchange *ex, int on)
{
	if (!ex->replied && ex->conn != NULL && ex->body_cb != NULL &&
	    ex->transport->upgrade_pause != NULL)
		ex->transport->upgrade_pause(ex->conn, ex, on);
}

/* The body's request ended first: detach, then tell the handler. */
void
http_exchange_body_gone(struct http_exchange *ex)
{
	http_exchange_stream_cb	gone = ex->body_gone_cb;

	ex->conn = NULL;
	ex->body_cb = NULL;
	ex->body_gone_cb = NULL;
	if (gone != NULL)
		gone(ex, ex->body_arg);
}

/* The client took everything queued: tell the handler. */
void
http_exchange_stream_drained(struct http_exchange *ex)
{
	if (ex->streaming && ex->conn != NULL && ex->drain_cb != NULL)
		ex->drain_cb(ex, ex->stream_arg);
}

/*
 * The client left a streamed answer: detach, then tell the handler,
 * which ends the stream (freeing the exchange) now or later.
 */
void
http_exchange_stream_gone(struct http_exchange *ex)
{
	http_exchange_stream_cb	gone = ex->gone_cb;

	ex->conn = NULL;
	ex->gone_cb = NULL;
	ex->drain_cb = NULL;
	if (gone != NULL)
		gone(ex, ex->stream_arg);
}

/* Answer 101 and carry the connection's bytes both ways. */
int
http_exchange_upgrade(struct http_exchange *ex, http_exchange_data_cb data,
    http_exchange_stream_cb drain, http_exchange_stream_cb gone, void *arg)
{
	if (ex->replied) {
		log_warnx("%s: exchange answered twice", __func__);
		return (-1);
	}
	if (ex->conn == NULL) {
		ex->replied = 1;
		http_exchange_free(ex);
		return (-1);
	}
	if (ex->transport == NULL || ex->transport->upgrade_head == NULL) {
		http_exchange_reply_error(ex, 501, "not_implemented",
		    "this transport cannot upgrade a connection");
		return (-1);
	}
	ex->status = 101;
	ex->replied = 1;
	ex->streaming = 1;
	ex->data_cb = data;
	ex->drain_cb = drain;
	ex->gone_cb = gone;
	ex->stream_arg = arg;
	if (ex->transport->upgrade_head(ex->conn, ex) == -1) {
		ex->replied = 0;
		ex->streaming = 0;
		ex->data_cb = NULL;
		ex->drain_cb = ex->gone_cb = NULL;
		http_exchange_reply_error(ex, 505, "http_version_not_supported",
		    "a WebSocket upgrade needs HTTP/1.1");
		return (-1);
	}
	return (0);
}

void
http_exchange_upgrade_pause(struct http_exchange *ex, int on)
{
	if (ex->streaming && ex->conn != NULL &&
	    ex->transport->upgrade_pause != NULL)
		ex->transport->upgrade_pause(ex->conn, ex, on);
}

void
http_exchange_upgrade_data(struct http_exchange *ex, struct evbuffer *in)
{
	if (ex->streaming && ex->conn != NULL && ex->data_cb != NULL)
		ex->data_cb(ex, in, ex->stream_arg);
}
