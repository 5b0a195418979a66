/*
 * The HTTP API (API.md section 3): a route table, bearer-key auth, strict
 * JSON bodies, and the handlers for sandboxes, files, exec, /healthz and
 * /metrics. Every failure answers with the error body; nothing a client
 * sends can crash the daemon or leave half-written state.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"
#include "store/store.h"

#define API_JSON_MAX_BODY	(64 * 1024)
#define API_EXEC_MAX_BODY	(1024 * 1024)
#define API_JSON_MAX_DEPTH	16
#define API_MAX_ENV		256
#define API_MAX_LABELS		64
#define API_MAX_PROMPT		(256 * 1024)
#define API_MAX_TASK_TIMEOUT	86400	/* agentd's limit */
/* A key without ceilings of its own: up to this times the template's. */
#define API_TENANT_FACTOR	4

/*
 * Who is calling: the key that matched. A config key points into the
 * config; a store key (control/keys.c) into stored, which lives as long as
 * the request's dispatch does.
 */
struct api_caller {
	const struct cfg_api_key *key;
	struct cfg_api_key	 stored;
	char			 tenant[128];
};

/* One request being answered, alive across asynchronous steps. */
struct api_call {
	struct control		*ctl;
	struct http_exchange	*ex;
	char			 id[ID_LEN + 1];
	char			*body;		/* for exec: forwarded to agentd */
	int			 timeout_ms;
};

enum api_auth { AUTH_NONE, AUTH_KEY, AUTH_ADMIN };

/* What a route's handler gets: the parsed path pieces. */
struct api_match {
	const char	*id;		/* {id}, validated */
	const char	*tid;		/* {tid}, a task id, validated */
	const char	*rest;		/* the file path after /files/ */
	size_t		 rest_len;
};

typedef void (*api_handler)(struct control *, struct http_exchange *,
	    const struct api_caller *, const struct api_match *);

enum api_body { BODY_JSON, BODY_EXEC, BODY_FILE };

struct api_route {
	const char	*method;
	const char	*pattern;	/* "{id}" one segment, "*" the rest */
	enum api_auth	 auth;
	api_handler	 handler;
	enum api_body	 body;		/* which limit its body has */
};

static void	healthz_answer(struct control *, struct http_exchange *);
static void	h_healthz(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	metrics_latency(struct control *, struct evbuffer *);
static void	metrics_process(struct control *, struct evbuffer *);
static void	h_metrics(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_create(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_list(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_get(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_delete(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_stop(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_start(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_file_put(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_file_get(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_file_delete(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_exec(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static int	api_plain_string(struct json_object *);
static void	h_task_create(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_task_list(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_task_get(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_task_events(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_task_cancel(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_task_revert(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_terminal(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_logs(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_restart_dev(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);
static void	h_preview_token(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *);

static const struct api_route api_routes[] = {
	{ "GET",    "/healthz",			  AUTH_NONE,  h_healthz,
	  BODY_JSON },
	{ "GET",    "/metrics",			  AUTH_ADMIN, h_metrics,
	  BODY_JSON },
	{ "POST",   "/v1/sandboxes",		  AUTH_KEY,   h_create,
	  BODY_JSON },
	{ "GET",    "/v1/sandboxes",		  AUTH_KEY,   h_list,
	  BODY_JSON },
	{ "GET",    "/v1/sandboxes/{id}",	  AUTH_KEY,   h_get,
	  BODY_JSON },
	{ "DELETE", "/v1/sandboxes/{id}",	  AUTH_KEY,   h_delete,
	  BODY_JSON },
	{ "POST",   "/v1/sandboxes/{id}/stop",	  AUTH_KEY,   h_stop,
	  BODY_JSON },
	{ "POST",   "/v1/sandboxes/{id}/start",	  AUTH_KEY,   h_start,
	  BODY_JSON },
	{ "PUT",    "/v1/sandboxes/{id}/files/*", AUTH_KEY,   h_file_put,
	  BODY_FILE },
	{ "GET",    "/v1/sandboxes/{id}/files/*", AUTH_KEY,   h_file_get,
	  BODY_JSON },
	{ "GET",    "/v1/sandboxes/{id}/files",	  AUTH_KEY,   h_file_get,
	  BODY_JSON },
	{ "DELETE", "/v1/sandboxes/{id}/files/*", AUTH_KEY,   h_file_delete,
	  BODY_JSON },
	{ "POST",   "/v1/sandboxes/{id}/exec",	  AUTH_KEY,   h_exec,
	  BODY_EXEC },
	{ "POST",   "/v1/sandboxes/{id}/tasks",	  AUTH_KEY,   h_task_create,
	  BODY_EXEC },
	{ "GET",    "/v1/sandboxes/{id}/tasks",	  AUTH_KEY,   h_task_list,
	  BODY_JSON },
	{ "GET",    "/v1/sandboxes/{id}/tasks/{tid}", AUTH_KEY, h_task_get,
	  BODY_JSON },
	{ "GET",    "/v1/sandboxes/{id}/tasks/{tid}/events", AUTH_KEY,
	  h_task_events, BODY_JSON },
	{ "POST",   "/v1/sandboxes/{id}/tasks/{tid}/cancel", AUTH_KEY,
	  h_task_cancel, BODY_JSON },
	{ "POST",   "/v1/sandboxes/{id}/tasks/{tid}/revert", AUTH_KEY,
	  h_task_revert, BODY_JSON },
	{ "GET",    "/v1/sandboxes/{id}/terminal", AUTH_KEY,  h_terminal,
	  BODY_JSON },
	{ "GET",    "/v1/sandboxes/{id}/logs",	  AUTH_KEY,   h_logs,
	  BODY_JSON },
	{ "POST",   "/v1/sandboxes/{id}/restart-dev", AUTH_KEY, h_restart_dev,
	  BODY_JSON },
	{ "POST",   "/v1/sandboxes/{id}/preview-token", AUTH_KEY,
	  h_preview_token, BODY_JSON },
};

static int	route_match(const char *, const char *, struct api_match *,
		    int *);
static const struct api_route *route_find(const char *, const char *,
		    struct api_match *, int *, int *);
static int	key_find(struct control *, const struct http_exchange *,
		    struct api_caller *);
static int	key_subprotocol(const struct http_exchange *, const char **,
		    size_t *);
static int	authenticate(struct control *, struct http_exchange *,
		    struct api_caller *);
static int	load_sandbox(struct control *, struct http_exchange *,
		    const struct api_caller *, const char *,
		    struct store_sandbox *);
static int	parse_body(struct http_exchange *, int, struct json_object **);
static void	reply_object(struct http_exchange *, int,
		    struct json_object *);
static void	reply_sandbox(struct control *, struct http_exchange *, int,
		    const char *);
static void	lifecycle_reply_cb(struct control *, const char *, int,
		    const char *, void *);
static int	check_string_map(struct http_exchange *, const char *,
		    struct json_object *, int, size_t, size_t);
static int	file_request(struct control *, struct http_exchange *,
		    const struct api_caller *, const struct api_match *, int,
		    char **, int *);
static void	reply_errno(struct http_exchange *, int, const char *);
static void	exec_send(struct api_call *);
static void	exec_started_cb(struct control *, const char *, int,
		    const char *, void *);
static void	healthz_cb(int, struct json_object *, const char *, void *);
static int	op_target(struct control *, struct http_exchange *,
		    const struct api_caller *, const char *,
		    enum sandbox_state *);
static int	refuse_ceilings(struct control *, struct http_exchange *,
		    const struct cfg_api_key *, const struct cfg_template *,
		    const struct store_sandbox *);
static int	refuse_full(struct control *, struct http_exchange *,
		    const char *);
static int	refuse_state(struct http_exchange *, enum sandbox_state);
static int	visible(struct control *, struct http_exchange *,
		    const struct api_caller *, const char *);
static void	reply_busy(struct http_exchange *);
static void	start_joined_cb(const struct control_target *, void *);
static void	start_measured_cb(struct control *, size_t, char (*)[ID_LEN + 1],
		    const int64_t *, void *);

/*
 * Match path against a pattern segment by segment. Sets *id_bad when the
 * {id} segment is there but is not a valid id (a 400, not a 404).
 */
static int
route_match(const char *pattern, const char *path, struct api_match *m,
    int *id_bad)
{
	const char	*p = pattern, *s = path, *seg_end;
	size_t		 len;

	memset(m, 0, sizeof *m);
	while (*p != '\0') {
		if (strncmp(p, "{tid}", 5) == 0) {
			seg_end = strchr(s, '/');
			len = seg_end != NULL ? (size_t)(seg_end - s) :
			    strlen(s);
			if (len == 0)
				return (0);
			if (!id_valid(s, len))
				*id_bad = 2;
			m->tid = s;
			p += 5;
			s += len;
			continue;
		}
		if (strncmp(p, "{id}", 4) == 0) {
			seg_end = strchr(s, '/');
			len = seg_end != NULL ? (size_t)(seg_end - s) :
			    strlen(s);
			if (len == 0)
				return (0);
			if (!id_valid(s, len))
				*id_bad = 1;
			m->id = s;
			p += 4;
			s += len;
			continue;
		}
		if (*p == '*') {
			m->rest = s;
			m->rest_len = strlen(s);
			return (1);
		}
		if (*p != *s)
			return (0);
		p++;
		s++;
	}
	/* A trailing slash is tolerated: "/v1/sandboxes/". */
	return (*s == '\0' || (s[0] == '/' && s[1] == '\0'));
}

/* The route for method and path; *path_known if only the method is off. */
static const struct api_route *
route_find(const char *method, const char *path, struct api_match *m,
    int *id_bad, int *path_known)
{
	size_t	i;
	int	bad;

	*path_known = 0;
	for (i = 0; i < nitems(api_routes); i++) {
		bad = 0;
		if (!route_match(api_routes[i].pattern, path, m, &bad))
			continue;
		*path_known = 1;
		if (strcmp(api_routes[i].method, method) != 0)
			continue;
		*id_bad = bad;
		return (&api_routes[i]);
	}
	return (NULL);
}

/*
 * How much body this request may send, judged from its head alone: the
 * route's limit for a caller whose key is valid and who may see the
 * sandbox it names; 0 when the answer will be an error whatever the body
 * holds (no route, no valid key, a sandbox the caller cannot see), so that
 * nobody gets a body buffered, or a 100 Continue, without a valid key.
 */
uint64_t
control_api_body_limit(struct control *ctl, struct http_exchange *ex)
{
	const struct api_route		*r;
	const struct cfg_api_key	*key;
	struct api_caller		 caller;
	struct store_sandbox		 s;
	struct api_match		 m;
	char				 id[ID_LEN + 1];
	int				 id_bad = 0, known, visible_ok;

	if ((r = route_find(ex->method, ex->path, &m, &id_bad, &known)) ==
	    NULL || id_bad)
		return (0);
	if (r->auth != AUTH_NONE) {
		if (key_find(ctl, ex, &caller) == -1)
			return (0);
		key = caller.key;
		if (r->auth == AUTH_ADMIN && !key->admin)
			return (0);
		if (m.id != NULL) {
			memcpy(id, m.id, ID_LEN);
			id[ID_LEN] = '\0';
			if (store_sandbox_get(ctl->store, id, &s) != 0)
				return (0);
			visible_ok = key->admin ||
			    strcmp(s.tenant, key->name) == 0;
			store_sandbox_clear(&s);
			if (!visible_ok)
				return (0);
		}
	}
	switch (r->body) {
	case BODY_FILE:
		/* Into the file job's pipe as it comes, never whole here. */
		ex->body_streams = 1;
		return (ctl->cf->max_file_size);
	case BODY_EXEC:
		return (API_EXEC_MAX_BODY);
	default:
		return (API_JSON_MAX_BODY);
	}
}

/* Handle one API request. */
void
control_api_dispatch(struct control *ctl, struct http_exchange *ex)
{
	const struct api_route	*r;
	struct api_match	 m;
	struct api_caller	 caller;
	char			 idbuf[ID_LEN + 1], tidbuf[ID_LEN + 1];
	int			 path_known, id_bad = 0;

	ctl->requests_total++;
	r = route_find(ex->method, ex->path, &m, &id_bad, &path_known);
	if (r == NULL) {
		if (path_known) {
			http_exchange_reply_error(ex, 405, "method_not_allowed",
			    "%s is not allowed on %s", ex->method, ex->path);
			return;
		}
		http_exchange_reply_error(ex, 404, "not_found",
		    "no such route: %s %s", ex->method, ex->path);
		return;
	}
	caller.key = NULL;
	if (r->auth != AUTH_NONE) {
		if (authenticate(ctl, ex, &caller) == -1)
			return;
		if (r->auth == AUTH_ADMIN && !caller.key->admin) {
			http_exchange_reply_error(ex, 401, "unauthorized",
			    "this route needs an admin key");
			return;
		}
	}
	if (m.id != NULL) {
		if (id_bad) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "malformed %s id: ids are 26 lowercase "
			    "characters (a ULID)", id_bad == 2 ? "task" :
			    "sandbox");
			return;
		}
		memcpy(idbuf, m.id, ID_LEN);
		idbuf[ID_LEN] = '\0';
		m.id = idbuf;
	}
	if (m.tid != NULL) {
		memcpy(tidbuf, m.tid, ID_LEN);
		tidbuf[ID_LEN] = '\0';
		m.tid = tidbuf;
	}
	r->handler(ctl, ex, &caller, &m);
}

/*
 * The key in "Authorization: Bearer <secret>" into caller->key: compared
 * in constant time against every configured key, its secret or the
 * SHA-256 of it (no early exit on a match either), then looked up in the
 * store (control/keys.c). 0 on a match, -1 if none.
 */
static int
key_find(struct control *ctl, const struct http_exchange *ex,
    struct api_caller *caller)
{
	const struct cfg_api_key	*k, *found = NULL;
	const char			*h, *secret;
	char				 hash[DIGEST_SHA256_HEX + 1];
	size_t				 i, len;

	caller->key = NULL;
	h = http_exchange_header(ex, "authorization");
	if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
		secret = h + 7;
		while (*secret == ' ')
			secret++;
		len = strlen(secret);
	} else if (key_subprotocol(ex, &secret, &len) == -1)
		return (-1);
	digest_sha256_hex(secret, len, hash);
	for (i = 0; i < ctl->nkeys; i++) {
		k = &ctl->keys[i];
		if (k->secret != NULL ? timingsafe_eq(secret, len, k->secret,
		    strlen(k->secret)) : timingsafe_eq(hash, sizeof hash - 1,
		    k->secret_hash, strlen(k->secret_hash)))
			found = k;
	}
	if (found == NULL && control_key_lookup(ctl, secret, len, hash,
	    &caller->stored, caller->tenant, sizeof caller->tenant))
		found = &caller->stored;
	explicit_bzero(hash, sizeof hash);
	caller->key = found;
	return (found != NULL ? 0 : -1);
}

/*
 * A browser cannot set Authorization on a WebSocket: it may offer the key
 * as the subprotocol "bearer.<key>" (docs/terminal.md) instead. The
 * server never echoes that one back.
 */
static int
key_subprotocol(const struct http_exchange *ex, const char **secret,
    size_t *len)
{
	const char	*p;

	if (http_exchange_header(ex, "upgrade") == NULL ||
	    (p = http_exchange_header(ex, "sec-websocket-protocol")) == NULL)
		return (-1);
	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		*len = strcspn(p, ", \t");
		if (*len > 7 && strncmp(p, "bearer.", 7) == 0) {
			*secret = p + 7;
			*len -= 7;
			return (0);
		}
		p += *len;
	}
	return (-1);
}

/* The caller's key into caller->key, or -1 after answering 401. */
static int
authenticate(struct control *ctl, struct http_exchange *ex,
    struct api_caller *caller)
{
	const char	*h;

	if (key_find(ctl, ex, caller) == 0)
		return (0);
	h = http_exchange_header(ex, "authorization");
	http_exchange_add_header(ex, "WWW-Authenticate", "Bearer");
	http_exchange_reply_error(ex, 401, "unauthorized",
	    h == NULL || strncasecmp(h, "Bearer ", 7) != 0 ?
	    "missing \"Authorization: Bearer <api key>\" header" :
	    "the API key is not valid");
	return (-1);
}

/* Load a sandbox the caller may see; answers 404 otherwise. */
static int
load_sandbox(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const char *id, struct store_sandbox *s)
{
	int	rv;

	rv = store_sandbox_get(ctl->store, id, s);
	if (rv == -1) {
		http_exchange_reply_error(ex, 500, "internal",
		    "the store could not be read");
		return (-1);
	}
	/* Another tenant's sandbox does not exist, as far as you can tell. */
	if (rv == STORE_NOTFOUND || (!caller->key->admin &&
	    strcmp(s->tenant, caller->key->name) != 0)) {
		if (rv == 0)
			store_sandbox_clear(s);
		http_exchange_reply_error(ex, 404, "not_found",
		    "no sandbox %s", id);
		return (-1);
	}
	return (0);
}

/*
 * The request body as a JSON object in *out. An empty body gives NULL when
 * allowed. Returns -1 after answering 400 (the exchange is then gone).
 */
static int
parse_body(struct http_exchange *ex, int empty_ok, struct json_object **out)
{
	struct json_tokener	*tok;
	struct json_object	*o;
	enum json_tokener_error	 jerr;
	size_t			 len = evbuffer_get_length(ex->body), end;
	const char		*text;

	*out = NULL;
	if (len == 0) {
		if (empty_ok)
			return (0);
		http_exchange_reply_error(ex, 400, "bad_request",
		    "a JSON object body is required");
		return (-1);
	}
	text = (const char *)evbuffer_pullup(ex->body, -1);
	if (memchr(text, '\0', len) != NULL) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "the body contains a NUL byte");
		return (-1);
	}
	tok = json_tokener_new_ex(API_JSON_MAX_DEPTH);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (o == NULL || jerr != json_tokener_success) {
		json_object_put(o);
		http_exchange_reply_error(ex, 400, "bad_request",
		    "the body is not valid JSON: %s",
		    jerr == json_tokener_continue ? "unexpected end of input" :
		    json_tokener_error_desc(jerr));
		return (-1);
	}
	for (; end < len; end++) {
		if (strchr(" \t\r\n", text[end]) == NULL) {
			json_object_put(o);
			http_exchange_reply_error(ex, 400, "bad_request",
			    "the body has data after the JSON value");
			return (-1);
		}
	}
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		http_exchange_reply_error(ex, 400, "bad_request",
		    "the body must be a JSON object");
		return (-1);
	}
	*out = o;
	return (0);
}

static void
reply_object(struct http_exchange *ex, int status, struct json_object *o)
{
	http_exchange_reply_json(ex, status,
	    json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* Answer with the sandbox as the store has it now. */
static void
reply_sandbox(struct control *ctl, struct http_exchange *ex, int status,
    const char *id)
{
	struct store_sandbox	s;

	if (store_sandbox_get(ctl->store, id, &s) != 0) {
		http_exchange_reply_error(ex, 404, "not_found",
		    "no sandbox %s", id);
		return;
	}
	reply_object(ex, status, control_sandbox_json(ctl, &s));
	store_sandbox_clear(&s);
}

/* A lifecycle operation for an API call is over: answer it. */
static void
lifecycle_reply_cb(struct control *ctl, const char *id, int status,
    const char *message, void *arg)
{
	struct http_exchange	*ex = arg;

	if (status == 204) {
		http_exchange_reply(ex, 204, NULL, NULL, 0);
		return;
	}
	if (status >= 300) {
		ctl->requests_failed++;
		http_exchange_reply_error(ex, status, status == 503 ?
		    "unavailable" : status == 404 ? "not_found" : status == 409 ?
		    "conflict" : "internal",
		    "%s", message != NULL ? message : "operation failed");
		return;
	}
	reply_sandbox(ctl, ex, status, id);
}

/* GET /healthz: the store answers here, Docker asynchronously. */
static void
h_healthz(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct api_call	*call;

	if (store_ping(ctl->store) != 0) {
		http_exchange_reply_error(ex, 503, "unavailable",
		    "the store does not answer");
		return;
	}
	/*
	 * Docker's answer of the last second stands: a monitor (or many)
	 * polling /healthz must not open a Docker connection each time.
	 */
	if (ctl->health_ms != 0 &&
	    time_mono_ms() - ctl->health_ms < HEALTHZ_CACHE_MS) {
		healthz_answer(ctl, ex);
		return;
	}
	call = xcalloc(1, sizeof *call);
	call->ctl = ctl;
	call->ex = ex;
	docker_request(ctl->docker, "GET", "/_ping", NULL, 5000, healthz_cb,
	    call);
}

static void
healthz_cb(int status, struct json_object *body, const char *errmsg,
    void *arg)
{
	struct api_call		*call = arg;
	struct control		*ctl = call->ctl;

	ctl->docker_ok = status == 200;
	ctl->health_ms = time_mono_ms();
	snprintf(ctl->health_err, sizeof ctl->health_err, "%s",
	    status == 200 ? "" : errmsg != NULL ? errmsg :
	    "unexpected status");
	healthz_answer(ctl, call->ex);
	free(call);
}

/* The health answer from the last Docker ping (ctl->health_*). */
static void
healthz_answer(struct control *ctl, struct http_exchange *ex)
{
	struct json_object	*o, *v;
	int			 total = 0;

	if (ctl->health_err[0] != '\0') {
		http_exchange_reply_error(ex, 503, "unavailable",
		    "Docker does not answer: %s", ctl->health_err);
		return;
	}
	store_sandbox_count(ctl->store, -1, &total);
	o = json_object_new_object();
	json_object_object_add(o, "status", json_object_new_string("ok"));
	json_object_object_add(o, "version",
	    json_object_new_string(PACKAGE_VERSION));
	json_object_object_add(o, "store", json_object_new_string("ok"));
	json_object_object_add(o, "docker", json_object_new_string("ok"));
	json_object_object_add(o, "reconciled",
	    json_object_new_boolean(ctl->reconciled));
	json_object_object_add(o, "sandboxes", json_object_new_int(total));
	json_object_object_add(o, "running",
	    json_object_new_int(ctl->nactive));
	json_object_object_add(o, "egress", egress_json(ctl));
	if ((v = provider_health_json(ctl)) != NULL)
		json_object_object_add(o, "credential_proxy", v);
	reply_object(ex, 200, o);
}

/* GET /metrics: Prometheus text format. */
static void
h_metrics(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct evbuffer	*out = evbuffer_new();
	int		 state, n, tasks, streams;

	evbuffer_add_printf(out, "# HELP sandboxd_sandboxes Sandboxes in the "
	    "store by state.\n# TYPE sandboxd_sandboxes gauge\n");
	for (state = 0; store_sandbox_state_name(state) != NULL; state++) {
		n = 0;
		store_sandbox_count(ctl->store, state, &n);
		evbuffer_add_printf(out, "sandboxd_sandboxes{state=\"%s\"} %d\n",
		    store_sandbox_state_name(state), n);
	}
	evbuffer_add_printf(out, "# HELP sandboxd_api_requests_total API "
	    "requests handled.\n# TYPE sandboxd_api_requests_total counter\n"
	    "sandboxd_api_requests_total %llu\n"
	    "# HELP sandboxd_docker_up 1 if the last Docker call answered.\n"
	    "# TYPE sandboxd_docker_up gauge\nsandboxd_docker_up %d\n"
	    "# HELP sandboxd_egress_enforced 1 if the network rules for "
	    "sandboxes are in force.\n"
	    "# TYPE sandboxd_egress_enforced gauge\n"
	    "sandboxd_egress_enforced %d\n",
	    (unsigned long long)ctl->requests_total, ctl->docker_ok,
	    egress_enforced(ctl));
	evbuffer_add_printf(out,
	    "# HELP sandboxd_sandboxes_active Sandboxes counted against "
	    "max_running (creating, starting, running, paused).\n"
	    "# TYPE sandboxd_sandboxes_active gauge\n"
	    "sandboxd_sandboxes_active %d\n"
	    "# HELP sandboxd_held_requests Preview requests held while their "
	    "sandbox wakes.\n# TYPE sandboxd_held_requests gauge\n"
	    "sandboxd_held_requests %d\n"
	    "# HELP sandboxd_wakes_total Sandboxes started or unpaused for a "
	    "waiting request.\n# TYPE sandboxd_wakes_total counter\n"
	    "sandboxd_wakes_total %llu\n"
	    "# HELP sandboxd_idle_pauses_total Sandboxes paused for idleness."
	    "\n# TYPE sandboxd_idle_pauses_total counter\n"
	    "sandboxd_idle_pauses_total %llu\n"
	    "# HELP sandboxd_idle_stops_total Sandboxes stopped for idleness."
	    "\n# TYPE sandboxd_idle_stops_total counter\n"
	    "sandboxd_idle_stops_total %llu\n"
	    "# HELP sandboxd_evictions_total Idle sandboxes stopped to make "
	    "room (max_running, memory).\n"
	    "# TYPE sandboxd_evictions_total counter\n"
	    "sandboxd_evictions_total %llu\n"
	    "# HELP sandboxd_start_refusals_total Starts and wakes refused "
	    "(max_running with none idle, low memory, too many held).\n"
	    "# TYPE sandboxd_start_refusals_total counter\n"
	    "sandboxd_start_refusals_total %llu\n"
	    "# HELP sandboxd_disk_stops_total Sandboxes stopped for going "
	    "over their disk ceiling.\n"
	    "# TYPE sandboxd_disk_stops_total counter\n"
	    "sandboxd_disk_stops_total %llu\n",
	    ctl->nactive, ctl->nwaiters,
	    (unsigned long long)ctl->wakes_total,
	    (unsigned long long)ctl->idle_pauses_total,
	    (unsigned long long)ctl->idle_stops_total,
	    (unsigned long long)ctl->evictions_total,
	    (unsigned long long)ctl->refusals_total,
	    (unsigned long long)ctl->disk_stops_total);
	task_counts(ctl, &tasks, &streams);
	evbuffer_add_printf(out,
	    "# HELP sandboxd_tasks_active Tasks queued or running.\n"
	    "# TYPE sandboxd_tasks_active gauge\nsandboxd_tasks_active %d\n"
	    "# HELP sandboxd_task_streams Task event streams open.\n"
	    "# TYPE sandboxd_task_streams gauge\nsandboxd_task_streams %d\n",
	    tasks, streams);
	evbuffer_add_printf(out,
	    "# HELP sandboxd_sandbox_creates_total Sandboxes created and "
	    "running.\n# TYPE sandboxd_sandbox_creates_total counter\n"
	    "sandboxd_sandbox_creates_total %llu\n"
	    "# HELP sandboxd_sandbox_starts_total Stopped sandboxes started "
	    "again (by the API or a wake).\n"
	    "# TYPE sandboxd_sandbox_starts_total counter\n"
	    "sandboxd_sandbox_starts_total %llu\n"
	    "# HELP sandboxd_unpauses_total Paused sandboxes unpaused.\n"
	    "# TYPE sandboxd_unpauses_total counter\n"
	    "sandboxd_unpauses_total %llu\n",
	    (unsigned long long)ctl->creates_total,
	    (unsigned long long)ctl->starts_total,
	    (unsigned long long)ctl->unpauses_total);
	task_metrics(ctl, out);
	provider_metrics(ctl, out);
	metrics_latency(ctl, out);
	metrics_process(ctl, out);
	if (ctl->metrics_cb != NULL)
		ctl->metrics_cb(out, ctl->metrics_arg);
	http_exchange_reply_buffer(ex, 200, "text/plain; version=0.0.4", out);
	evbuffer_free(out);
}

/* The latency histograms: wakes, Docker calls, store writes. */
static void
metrics_latency(struct control *ctl, struct evbuffer *out)
{
	const struct docker_stats	*ds = docker_stats(ctl->docker);

	evbuffer_add_printf(out, "# HELP sandboxd_wake_duration_seconds "
	    "From a request waking a sandbox to its app's port accepting.\n"
	    "# TYPE sandboxd_wake_duration_seconds histogram\n");
	hist_write(&ctl->wake_hist, out, "sandboxd_wake_duration_seconds",
	    NULL);
	evbuffer_add_printf(out,
	    "# HELP sandboxd_docker_requests_total Docker Engine API calls "
	    "completed (the events stream not counted).\n"
	    "# TYPE sandboxd_docker_requests_total counter\n"
	    "sandboxd_docker_requests_total %llu\n"
	    "# HELP sandboxd_docker_errors_total Docker calls that got no "
	    "answer or a 5xx.\n"
	    "# TYPE sandboxd_docker_errors_total counter\n"
	    "sandboxd_docker_errors_total %llu\n"
	    "# HELP sandboxd_docker_request_duration_seconds Docker Engine "
	    "API call latency.\n"
	    "# TYPE sandboxd_docker_request_duration_seconds histogram\n",
	    (unsigned long long)ds->calls, (unsigned long long)ds->errors);
	hist_write(&ds->latency, out,
	    "sandboxd_docker_request_duration_seconds", NULL);
	evbuffer_add_printf(out, "# HELP sandboxd_store_write_duration_seconds "
	    "SQLite write (insert, update, delete) latency.\n"
	    "# TYPE sandboxd_store_write_duration_seconds histogram\n");
	hist_write(store_write_latency(ctl->store), out,
	    "sandboxd_store_write_duration_seconds", NULL);
}

/* The process: memory, descriptors, start time, build. */
static void
metrics_process(struct control *ctl, struct evbuffer *out)
{
	FILE		*f;
	DIR		*dir;
	struct dirent	*de;
	unsigned long	 size, resident = 0;
	long		 page = sysconf(_SC_PAGESIZE);
	int		 fds = 0;
	int64_t		 now = time_now_ms();

	if ((f = fopen("/proc/self/statm", "re")) != NULL) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	if ((dir = opendir("/proc/self/fd")) != NULL) {
		while ((de = readdir(dir)) != NULL)
			if (de->d_name[0] != '.')
				fds++;
		fds--;	/* the directory's own descriptor */
		closedir(dir);
	}
	evbuffer_add_printf(out,
	    "# HELP sandboxd_process_resident_memory_bytes Resident memory "
	    "of the daemon.\n"
	    "# TYPE sandboxd_process_resident_memory_bytes gauge\n"
	    "sandboxd_process_resident_memory_bytes %llu\n"
	    "# HELP sandboxd_process_open_fds File descriptors open.\n"
	    "# TYPE sandboxd_process_open_fds gauge\n"
	    "sandboxd_process_open_fds %d\n"
	    "# HELP sandboxd_process_start_time_seconds When the daemon "
	    "started, Unix time.\n"
	    "# TYPE sandboxd_process_start_time_seconds gauge\n"
	    "sandboxd_process_start_time_seconds %lld.%03lld\n"
	    "# HELP sandboxd_uptime_seconds Time since the daemon started.\n"
	    "# TYPE sandboxd_uptime_seconds gauge\n"
	    "sandboxd_uptime_seconds %lld.%03lld\n"
	    "# HELP sandboxd_build_info The running version; always 1.\n"
	    "# TYPE sandboxd_build_info gauge\n"
	    "sandboxd_build_info{version=\"%s\"} 1\n",
	    (unsigned long long)resident * (unsigned long long)(page > 0 ?
	    page : 4096), fds < 0 ? 0 : fds,
	    (long long)(ctl->started_ms / 1000),
	    (long long)(ctl->started_ms % 1000),
	    (long long)((now - ctl->started_ms) / 1000),
	    (long long)((now - ctl->started_ms) % 1000), PACKAGE_VERSION);
}

/*
 * Check an object of string values (env, labels): key shape, count and
 * sizes. env keys are shell names; label keys may not hold ':' (the
 * label=k:v filter splits there).
 */
static int
check_string_map(struct http_exchange *ex, const char *field,
    struct json_object *o, int is_env, size_t max_entries, size_t max_value)
{
	size_t	 n = 0, i;

	if (!json_object_is_type(o, json_type_object)) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "%s must be an object of strings", field);
		return (-1);
	}
	json_object_object_foreach(o, k, v) {
		size_t klen = strlen(k);

		if (++n > max_entries) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "%s has more than %zu entries", field, max_entries);
			return (-1);
		}
		if (!json_object_is_type(v, json_type_string)) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "%s.%s must be a string", field, k);
			return (-1);
		}
		if ((size_t)json_object_get_string_len(v) > max_value ||
		    memchr(json_object_get_string(v), '\0',
		    json_object_get_string_len(v)) != NULL) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "%s.%s is too long or holds a NUL byte", field, k);
			return (-1);
		}
		if (klen == 0 || klen > (is_env ? 256 : 63))
			goto bad_key;
		for (i = 0; i < klen; i++) {
			char c = k[i];

			if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    c == '_' || (i > 0 && c >= '0' && c <= '9'))
				continue;
			if (!is_env && (c == '.' || c == '-' || c == '/' ||
			    (c >= '0' && c <= '9')))
				continue;
			goto bad_key;
		}
	}
	return (0);

bad_key:
	http_exchange_reply_error(ex, 400, "bad_request", is_env ?
	    "env keys must be names like PATH or API_KEY (letters, digits, _)" :
	    "label keys are 1-63 letters, digits, '.', '-', '_' or '/'");
	return (-1);
}

/* Fetch an integer field within bounds; 1 if present, 0 absent, -1 bad. */
static int
get_int(struct http_exchange *ex, struct json_object *o, const char *field,
    int64_t lo, int64_t hi, int64_t *out)
{
	struct json_object	*v;

	if (!json_object_object_get_ex(o, field, &v))
		return (0);
	if (!json_object_is_type(v, json_type_int)) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "%s must be an integer", field);
		return (-1);
	}
	errno = 0;
	*out = json_object_get_int64(v);
	if (errno != 0 || *out < lo || *out > hi) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "%s must be between %lld and %lld", field, (long long)lo,
		    (long long)hi);
		return (-1);
	}
	return (1);
}

/* 1 if every key of o is one of allowed; else answers 400. */
static int
only_fields(struct http_exchange *ex, struct json_object *o,
    const char *const allowed[], size_t nallowed)
{
	size_t	i;

	json_object_object_foreach(o, k, v) {
		(void)v;
		for (i = 0; i < nallowed; i++) {
			if (strcmp(k, allowed[i]) == 0)
				break;
		}
		if (i == nallowed) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "unknown field \"%s\"", k);
			return (0);
		}
	}
	return (1);
}

/*
 * 1 after answering for a sandbox beyond what the caller's key allows:
 * memory and CPUs past its max_memory_mb and max_cpus (400: asking less
 * works at once), or as many sandboxes as its max_sandboxes (429). A key
 * without its own ceilings may ask for up to API_TENANT_FACTOR times the
 * template's memory and CPUs; an admin key for anything up to the CPUs
 * the host has.
 */
static int
refuse_ceilings(struct control *ctl, struct http_exchange *ex,
    const struct cfg_api_key *key, const struct cfg_template *t,
    const struct store_sandbox *s)
{
	int64_t	max_mb = key->max_memory_mb;
	double	max_cpus = key->max_cpus;
	long	ncpu;
	int	n;

	if (max_mb == 0 && !key->admin)
		max_mb = (int64_t)(t->memory / (1024 * 1024)) *
		    API_TENANT_FACTOR;
	if (max_cpus == 0 && !key->admin)
		max_cpus = t->cpus * API_TENANT_FACTOR;
	if (max_mb > 0 && s->memory_mb > max_mb) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "memory_mb %d is more than this API key may ask for "
		    "(%" PRId64 ")", s->memory_mb, max_mb);
		return (1);
	}
	/* Docker refuses more than the host has, as a 500 of its own. */
	if ((ncpu = sysconf(_SC_NPROCESSORS_ONLN)) > 0 && s->cpus > ncpu) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "cpus %g is more than this server has (%ld)", s->cpus,
		    ncpu);
		return (1);
	}
	if (max_cpus > 0 && s->cpus > max_cpus + 1e-9) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "cpus %g is more than this API key may ask for (%g)",
		    s->cpus, max_cpus);
		return (1);
	}
	if (key->max_sandboxes == 0)
		return (0);
	if (store_sandbox_count_tenant(ctl->store, s->tenant, &n) != 0) {
		http_exchange_reply_error(ex, 500, "internal",
		    "the store could not be read");
		return (1);
	}
	if (n >= key->max_sandboxes) {
		http_exchange_reply_error(ex, 429, "quota_exceeded",
		    "this API key holds its maximum of %d sandboxes "
		    "(max_sandboxes); delete one first", key->max_sandboxes);
		return (1);
	}
	return (0);
}

/*
 * The body of POST /v1/sandboxes checked, and the sandbox it asks for in
 * *s (a new id, the template's and the server's defaults overridden by
 * the body; env_json and labels_json point into *reqp, which the caller
 * frees; tenant unset). Nothing is stored. -1 after answering 400.
 */
int
api_create_parse(struct control *ctl, struct http_exchange *ex,
    struct json_object **reqp, struct store_sandbox *sp,
    const struct cfg_template **tp)
{
	static const char *const fields[] = { "template", "env", "labels",
	    "memory_mb", "cpus", "idle_timeout_s", "pause_timeout_s", "port",
	    "visibility" };
	const struct cfg_template	*t;
	struct json_object		*req, *v;
	struct store_sandbox		 s;
	const char			*tname = ctl->cf->default_template;
	int64_t				 n;
	int				 rv;

	*reqp = NULL;
	if (parse_body(ex, 1, &req) == -1)
		return (-1);
	if (req == NULL)
		req = json_object_new_object();
	if (!only_fields(ex, req, fields, nitems(fields)))
		goto out;

	if (json_object_object_get_ex(req, "template", &v)) {
		/* "python\u0000x" must not be taken for "python". */
		if (!api_plain_string(v)) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "template must be a string without NUL bytes");
			goto out;
		}
		tname = json_object_get_string(v);
	}
	if ((t = control_template(ctl, tname)) == NULL) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "unknown template \"%.64s\"", tname);
		goto out;
	}

	memset(&s, 0, sizeof s);
	id_new(s.id);
	s.template_name = t->name;
	s.state = SANDBOX_CREATING;
	s.port = t->port;
	s.visibility = SANDBOX_PUBLIC;
	s.memory_mb = (int)(t->memory / (1024 * 1024));
	s.cpus = t->cpus;
	s.idle_timeout_s = (int)(ctl->cf->idle_timeout_ms / 1000);
	s.pause_timeout_s = (int)(ctl->cf->pause_timeout_ms / 1000);
	s.env_json = "{}";
	s.labels_json = "{}";
	s.created_at = s.last_active_at = time_now_ms();

	if (json_object_object_get_ex(req, "env", &v)) {
		if (check_string_map(ex, "env", v, 1, API_MAX_ENV,
		    32 * 1024) == -1)
			goto out;
		s.env_json = (char *)json_object_to_json_string_ext(v,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	}
	if (json_object_object_get_ex(req, "labels", &v)) {
		if (check_string_map(ex, "labels", v, 0, API_MAX_LABELS,
		    255) == -1)
			goto out;
		s.labels_json = (char *)json_object_to_json_string_ext(v,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	}
	if ((rv = get_int(ex, req, "memory_mb", 16, 1024 * 1024, &n)) == -1)
		goto out;
	if (rv == 1)
		s.memory_mb = (int)n;
	if ((rv = get_int(ex, req, "idle_timeout_s", 0, 30 * 86400, &n)) == -1)
		goto out;
	if (rv == 1)
		s.idle_timeout_s = (int)n;
	if ((rv = get_int(ex, req, "pause_timeout_s", 0, 30 * 86400,
	    &n)) == -1)
		goto out;
	if (rv == 1)
		s.pause_timeout_s = (int)n;
	if (s.pause_timeout_s > 0 && s.idle_timeout_s > 0 &&
	    s.pause_timeout_s >= s.idle_timeout_s) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "pause_timeout_s (%d) must be less than idle_timeout_s (%d)",
		    s.pause_timeout_s, s.idle_timeout_s);
		goto out;
	}
	if ((rv = get_int(ex, req, "port", 1, 65535, &n)) == -1)
		goto out;
	if (rv == 1)
		s.port = (int)n;
	if (json_object_object_get_ex(req, "cpus", &v)) {
		double d = json_object_get_double(v);

		if ((!json_object_is_type(v, json_type_double) &&
		    !json_object_is_type(v, json_type_int)) || !isfinite(d) ||
		    d < 0.01 || d > 1024) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "cpus must be a number between 0.01 and 1024");
			goto out;
		}
		s.cpus = d;
	}
	if (json_object_object_get_ex(req, "visibility", &v)) {
		const char *vis = json_object_get_string(v);

		if (!api_plain_string(v) ||
		    (strcmp(vis, "public") != 0 &&
		    strcmp(vis, "private") != 0)) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "visibility must be \"public\" or \"private\"");
			goto out;
		}
		/* Private: the preview answers only with a preview token. */
		if (strcmp(vis, "private") == 0)
			s.visibility = SANDBOX_PRIVATE;
	}
	*reqp = req;
	*sp = s;
	*tp = t;
	return (0);

out:
	json_object_put(req);
	return (-1);
}

/* POST /v1/sandboxes */
static void
h_create(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	const struct cfg_template	*t;
	struct json_object		*req;
	struct store_sandbox		 s;
	const char			*why;
	int				 total = 0;

	if (api_create_parse(ctl, ex, &req, &s, &t) == -1)
		return;
	s.tenant = caller->key->name;
	if (store_sandbox_count(ctl->store, -1, &total) != 0) {
		http_exchange_reply_error(ex, 500, "internal",
		    "the store could not be read");
		goto out;
	}
	if (refuse_ceilings(ctl, ex, caller->key, t, &s))
		goto out;
	if (total >= ctl->cf->max_sandboxes) {
		http_exchange_reply_error(ex, 429, "quota_exceeded",
		    "this server holds its maximum of %d sandboxes "
		    "(max_sandboxes); delete one first",
		    ctl->cf->max_sandboxes);
		goto out;
	}
	if (egress_admit(ctl, &why) == -1) {
		http_exchange_reply_error(ex, 503, "unavailable", "%s", why);
		goto out;
	}
	if (reaper_admit(ctl, NULL, s.tenant, &why) == -1) {
		http_exchange_reply_error(ex, 429, "quota_exceeded", "%s", why);
		goto out;
	}
	if (store_sandbox_insert(ctl->store, &s) != 0) {
		http_exchange_reply_error(ex, 500, "internal",
		    "the store could not be written");
		goto out;
	}
	log_info("creating sandbox\tid=%s tenant=%s template=%s", s.id,
	    s.tenant, s.template_name);
	if (lifecycle_create(ctl, &s, lifecycle_reply_cb, ex) == -1) {
		/* A row left creating is an interrupted create: reconciled. */
		if (store_sandbox_delete(ctl->store, s.id) == -1) {
			log_warnx("cannot remove the row of a create that did "
			    "not start; reconciling\tid=%s", s.id);
			control_resync(ctl);
		}
		http_exchange_reply_error(ex, 500, "internal",
		    "cannot start creating the sandbox");
	}
out:
	json_object_put(req);
}

/* GET /v1/sandboxes?state=...&label=k:v */
static void
h_list(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct store_sandbox	*rows;
	struct json_object	*o, *arr, *labels, *lv;
	enum sandbox_state	 want;
	char			*state, *label, *colon;
	size_t			 i, n;

	state = http_exchange_query(ex, "state");
	label = http_exchange_query(ex, "label");
	if (state != NULL && store_sandbox_state_parse(state, &want) != 0) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "state must be one of creating, running, stopping, "
		    "stopped, starting, deleting, error");
		goto out;
	}
	if (label != NULL && (colon = strchr(label, ':')) == NULL) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "label filter must be key:value");
		goto out;
	}
	if (store_sandbox_list(ctl->store, caller->key->admin ? NULL :
	    caller->key->name, &rows, &n) != 0) {
		http_exchange_reply_error(ex, 500, "internal",
		    "the store could not be read");
		goto out;
	}
	arr = json_object_new_array();
	for (i = 0; i < n; i++) {
		if (state != NULL && rows[i].state != want)
			continue;
		o = control_sandbox_json(ctl, &rows[i]);
		if (label != NULL) {
			*strchr(label, ':') = '\0';
			if (!json_object_object_get_ex(o, "labels", &labels) ||
			    !json_object_object_get_ex(labels, label, &lv) ||
			    strcmp(json_object_get_string(lv),
			    label + strlen(label) + 1) != 0) {
				label[strlen(label)] = ':';
				json_object_put(o);
				continue;
			}
			label[strlen(label)] = ':';
		}
		json_object_array_add(arr, o);
	}
	store_sandbox_list_free(rows, n);
	o = json_object_new_object();
	json_object_object_add(o, "sandboxes", arr);
	reply_object(ex, 200, o);
out:
	free(state);
	free(label);
}

/* GET /v1/sandboxes/{id} */
static void
h_get(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct store_sandbox	s;

	if (load_sandbox(ctl, ex, caller, m->id, &s) == -1)
		return;
	reply_object(ex, 200, control_sandbox_json(ctl, &s));
	store_sandbox_clear(&s);
}

/*
 * A sandbox the caller may act on now: visible to it and with no operation
 * in flight. Sets *state; -1 after answering 404 or 409.
 */
static int
op_target(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const char *id, enum sandbox_state *state)
{
	struct store_sandbox	s;

	if (load_sandbox(ctl, ex, caller, id, &s) == -1)
		return (-1);
	*state = s.state;
	store_sandbox_clear(&s);
	if (lifecycle_busy(ctl, id)) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "sandbox is %s; try again when that is done",
		    store_sandbox_state_name(*state));
		return (-1);
	}
	return (0);
}

/*
 * 1 after answering 429 when there is no room to start one more sandbox
 * (max_running with none idle to stop, or low memory).
 */
static int
refuse_full(struct control *ctl, struct http_exchange *ex,
    const char *id)
{
	const char	*why;

	if (reaper_admit(ctl, rt_get(ctl, id), NULL, &why) == 0)
		return (0);
	http_exchange_reply_error(ex, 429, "quota_exceeded", "%s", why);
	return (1);
}

/* 1 after answering 409 for a sandbox that cannot be started or stopped. */
static int
refuse_state(struct http_exchange *ex, enum sandbox_state state)
{
	if (state != SANDBOX_DELETING && state != SANDBOX_ERROR)
		return (0);
	http_exchange_reply_error(ex, 409, "conflict", "sandbox is %s%s",
	    store_sandbox_state_name(state), state == SANDBOX_ERROR ?
	    "; delete it and create a new one" : "");
	return (1);
}

/* 0 if the caller may see this sandbox; -1 after answering 404. */
static int
visible(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const char *id)
{
	struct store_sandbox	s;

	if (load_sandbox(ctl, ex, caller, id, &s) == -1)
		return (-1);
	store_sandbox_clear(&s);
	return (0);
}

/* The answer when a lifecycle operation could not even begin. */
static void
reply_busy(struct http_exchange *ex)
{
	http_exchange_reply_error(ex, 409, "conflict",
	    "sandbox is busy; try again");
}

/* DELETE /v1/sandboxes/{id} */
static void
h_delete(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	enum sandbox_state	state;

	if (op_target(ctl, ex, caller, m->id, &state) == -1)
		return;
	if (lifecycle_delete(ctl, m->id, lifecycle_reply_cb, ex) == -1)
		reply_busy(ex);
}

/*
 * POST /v1/sandboxes/{id}/preview-token {"ttl_s": 3600}: a token that
 * opens the sandbox's preview until it expires, and the URL that carries
 * it (for a public sandbox, which needs none, the plain preview URL: a
 * token in the query would reach the app).
 */
static void
h_preview_token(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct json_object		*o, *sb, *v;
	struct store_sandbox		 s;
	char				 tok[TOKEN_MAX_LEN + 1], ts[40], *url;
	const char			*preview;
	int64_t				 ttl, expires;

	if (api_preview_parse(ex, &ttl) == -1)
		return;
	if (load_sandbox(ctl, ex, caller, m->id, &s) == -1)
		return;
	if (preview_token_make(ctl, s.id, ttl, tok, sizeof tok,
	    &expires) == -1) {
		store_sandbox_clear(&s);
		http_exchange_reply_error(ex, 500, "internal",
		    "the token could not be made");
		return;
	}
	sb = control_sandbox_json(ctl, &s);
	preview = json_object_object_get_ex(sb, "preview_url", &v) ?
	    json_object_get_string(v) : "";
	if (s.visibility == SANDBOX_PRIVATE)
		xasprintf(&url, "%s?" PREVIEW_TOKEN_PARAM "=%s", preview, tok);
	else
		url = xstrdup(preview);
	time_format_rfc3339(expires * 1000, ts, sizeof ts);
	o = json_object_new_object();
	json_object_object_add(o, "token", json_object_new_string(tok));
	json_object_object_add(o, "url", json_object_new_string(url));
	json_object_object_add(o, "expires_at", json_object_new_string(ts));
	log_info("preview token made\tid=%s tenant=%s ttl_s=%lld", s.id,
	    caller->key->name, (long long)ttl);
	free(url);
	json_object_put(sb);
	store_sandbox_clear(&s);
	reply_object(ex, 200, o);
}

/*
 * The body of POST .../preview-token: empty, or {"ttl_s":n}. *ttl is
 * the token's lifetime (the default without one). -1 after answering.
 */
int
api_preview_parse(struct http_exchange *ex, int64_t *ttl)
{
	static const char *const	 fields[] = { "ttl_s" };
	struct json_object		*req;
	int64_t				 n;
	int				 rv, ret = -1;

	*ttl = PREVIEW_TTL_DEFAULT;
	if (parse_body(ex, 1, &req) == -1)
		return (-1);
	if (req != NULL && !only_fields(ex, req, fields, nitems(fields)))
		goto out;
	if (req != NULL && (rv = get_int(ex, req, "ttl_s", PREVIEW_TTL_MIN,
	    PREVIEW_TTL_MAX, &n)) != 0) {
		if (rv == -1)
			goto out;
		*ttl = n;
	}
	ret = 0;
out:
	json_object_put(req);
	return (ret);
}

/* POST /v1/sandboxes/{id}/stop */
static void
h_stop(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	enum sandbox_state	state;

	if (op_target(ctl, ex, caller, m->id, &state) == -1 ||
	    refuse_state(ex, state))
		return;
	if (state == SANDBOX_STOPPED)
		reply_sandbox(ctl, ex, 200, m->id);
	else if (lifecycle_stop(ctl, m->id, lifecycle_reply_cb, ex) == -1)
		reply_busy(ex);
}

/* A start joined while under way is over: answer as a start would. */
static void
start_joined_cb(const struct control_target *t, void *arg)
{
	struct api_call		*call = arg;
	struct http_exchange	*ex = call->ex;
	struct control		*ctl = call->ctl;

	free(call);
	switch (t->kind) {
	case TARGET_OK:
		reply_sandbox(ctl, ex, 200, t->sandbox_id);
		break;
	case TARGET_UNKNOWN:
		http_exchange_reply_error(ex, 404, "not_found",
		    "no sandbox %s", t->sandbox_id);
		break;
	case TARGET_ERROR:
		http_exchange_reply_error(ex, 500, "internal",
		    "the sandbox failed to start and is in the error state");
		break;
	case TARGET_UNAVAILABLE:
		http_exchange_reply_error(ex, 503, "unavailable", "%s",
		    t->message != NULL ? t->message : "the sandbox did not "
		    "start");
		break;
	}
}

/* POST /v1/sandboxes/{id}/start */
static void
h_start(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	enum sandbox_state	 state;
	struct sandbox_rt	*rt;
	struct control_target	 t;
	struct control_wait	*wait;
	struct api_call		*call;

	/*
	 * A start already under way (a preview request or an exec woke it):
	 * join it and answer when it is up, rather than 409.
	 */
	if (visible(ctl, ex, caller, m->id) == -1)
		return;
	if ((rt = rt_find(ctl, m->id)) != NULL && lifecycle_waking(rt)) {
		call = xcalloc(1, sizeof *call);
		call->ctl = ctl;
		call->ex = ex;
		if (control_target_lookup(ctl, m->id, 0, &t, start_joined_cb,
		    call, &wait) == CONTROL_LOOKUP_DONE)
			start_joined_cb(&t, call);
		return;
	}
	if (op_target(ctl, ex, caller, m->id, &state) == -1 ||
	    refuse_state(ex, state))
		return;
	/* "running" without an address (Docker was away): start finds it. */
	rt = rt_find(ctl, m->id);
	if (state == SANDBOX_RUNNING && rt != NULL && rt->generation != 0)
		reply_sandbox(ctl, ex, 200, m->id);
	else if (state == SANDBOX_PAUSED) {
		if (lifecycle_unpause(ctl, m->id, lifecycle_reply_cb, ex) == -1)
			reply_busy(ex);
	} else if (rt != NULL && rt->disk_over) {
		/* Stopped for its disk: the user freed space, or not yet. */
		call = xcalloc(1, sizeof *call);
		call->ctl = ctl;
		call->ex = ex;
		if (disk_measure(ctl, m->id, start_measured_cb, call) == -1) {
			free(call);
			http_exchange_reply_error(ex, 503, "unavailable",
			    "cannot measure the sandbox's files now; try "
			    "again");
		}
	} else if (!refuse_full(ctl, ex, m->id) &&
	    lifecycle_start(ctl, m->id, lifecycle_reply_cb, ex) == -1)
		reply_busy(ex);
}

/* A start of a sandbox stopped for its disk: measured again. */
static void
start_measured_cb(struct control *ctl, size_t n, char (*ids)[ID_LEN + 1],
    const int64_t *used, void *arg)
{
	struct api_call		*call = arg;
	struct http_exchange	*ex = call->ex;
	struct sandbox_rt	*rt;
	uint64_t		 ceiling;

	free(call);
	if ((rt = rt_find(ctl, ids[0])) == NULL) {
		http_exchange_reply_error(ex, 404, "not_found",
		    "no such sandbox");
		return;
	}
	ceiling = rt->tmpl != NULL ? rt->tmpl->disk : 0;
	if (rt->disk_over && used[0] < 0) {
		http_exchange_reply_error(ex, 503, "unavailable",
		    "cannot measure the sandbox's files now; try again");
		return;
	}
	if (rt->disk_over && ceiling > 0 && (uint64_t)used[0] > ceiling) {
		http_exchange_reply_error(ex, 429, "quota_exceeded",
		    "the sandbox's files use %" PRId64 " MiB, over its disk "
		    "ceiling of %" PRIu64 " MiB; delete files (the files API "
		    "works while it is stopped) or raise the ceiling, then "
		    "start it again", used[0] >> 20, ceiling >> 20);
		return;
	}
	if (disk_clear(ctl, rt) == 0)
		log_info("sandbox back under its disk ceiling; starting it"
		    "\tid=%s used_mb=%" PRId64, rt->id, used[0] >> 20);
	if (!refuse_full(ctl, ex, rt->id) &&
	    lifecycle_start(ctl, rt->id, lifecycle_reply_cb, ex) == -1)
		reply_busy(ex);
}

/*
 * The pieces every file route needs: a sandbox the caller may see, the
 * decoded and checked path after /files/ (*path, malloc'd; "" for the
 * workspace itself unless need_name), and the workspace as an O_PATH fd.
 * Returns -1 after answering.
 */
static int
file_request(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m,
    int need_name, char **path, int *wsfd)
{
	const char	*why;
	char		*dir;

	if (visible(ctl, ex, caller, m->id) == -1)
		return (-1);
	if (files_api_path(m->rest, m->rest != NULL ? m->rest_len : 0, path,
	    &why) != 0) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "file path refused: %s", why);
		return (-1);
	}
	if (**path == '\0' && need_name) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "a file path is required after /files/");
		goto fail;
	}
	dir = control_sandbox_dir(ctl, "workspaces", m->id);
	*wsfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	free(dir);
	if (*wsfd == -1) {
		http_exchange_reply_error(ex, 404, "not_found",
		    "the sandbox has no workspace");
		goto fail;
	}
	return (0);

fail:
	free(*path);
	*path = NULL;
	return (-1);
}

/* Answer a files_* failure. */
static void
reply_errno(struct http_exchange *ex, int error, const char *path)
{
	switch (error) {
	case EINVAL:
		http_exchange_reply_error(ex, 400, "bad_request",
		    "\"%.200s\" is not a file or directory this API handles",
		    path);
		break;
	case EXDEV:
	case ELOOP:
		http_exchange_reply_error(ex, 400, "bad_request",
		    "\"%.200s\" leads outside the workspace", path);
		break;
	case ENOENT:
		http_exchange_reply_error(ex, 404, "not_found",
		    "no such file: %.200s", path);
		break;
	case EISDIR:
		http_exchange_reply_error(ex, 409, "conflict",
		    "\"%.200s\" is a directory", path);
		break;
	case ENOTDIR:
		http_exchange_reply_error(ex, 409, "conflict",
		    "a parent of \"%.200s\" is not a directory", path);
		break;
	case EFBIG:
		http_exchange_reply_error(ex, 413, "payload_too_large",
		    "the file is too large");
		break;
	case ENAMETOOLONG:
		http_exchange_reply_error(ex, 400, "bad_request",
		    "\"%.200s\" is nested too deeply", path);
		break;
	case EAGAIN:
		/* The sandbox changed the file under us; a retry settles it. */
		http_exchange_reply_error(ex, 409, "conflict",
		    "\"%.200s\" changed while it was read; try again", path);
		break;
	default:
		http_exchange_reply_error(ex, 500, "internal",
		    "file operation failed: %s", strerror(error));
		break;
	}
}

/*
 * Every file operation runs in a forked child (a file job): a 100 MiB
 * read or write with its fsync, listing a directory of 100,000 names or
 * removing a node_modules tree must not stall every other tenant's
 * traffic on the loop. The child keeps only the workspace and its pipes
 * of the daemon's descriptors (a slow job must not hold a listener or a
 * client socket open past the daemon's exit), and the loop moves bytes
 * through the pipes with backpressure both ways:
 * - GET: the child writes files_send's answer; the loop reads it only as
 *   fast as the client takes the streamed answer, so a slow client stops
 *   the child (its pipe fills), never makes us buffer the file.
 * - PUT: edge dispatches at the head (body_streams); the body goes into
 *   the data pipe as it comes, reading the client paused while more than
 *   FILE_PUT_HIGH waits for the pipe. A byte on the commit pipe once all
 *   of it is in says "rename it into place"; a client that leaves or a
 *   body edge refuses (413) closes both pipes without it, and the child
 *   removes its temporary.
 * The exit code carries the outcome: FILE_JOB_ERRNO + errno,
 * FILE_JOB_DONE, or FILE_JOB_CREATED; any other (an exit(1) from a fatal
 * error, a sanitizer) is a failure, never taken for success. At most
 * FILE_JOBS_MAX run at once, FILE_JOBS_PER_SANDBOX for one sandbox: more
 * are refused (503 and 429, with Retry-After), not queued.
 */
#define FILE_JOB_ERRNO		2	/* + errno (below 250) */
#define FILE_JOB_DONE		252
#define FILE_JOB_CREATED	253
#define FILE_JOBS_MAX		32	/* docs/limits.md */
#define FILE_JOBS_PER_SANDBOX	8
#define FILE_PUT_HIGH		(1024 * 1024)	/* queued for the pipe */
#define FILE_CHUNK		(64 * 1024)

enum file_job_kind {
	FILE_JOB_GET,
	FILE_JOB_PUT,
	FILE_JOB_DELETE
};

enum file_job_state {
	FILE_JOB_HEAD,		/* GET: waiting for the child's files_head */
	FILE_JOB_BODY,		/* GET: streaming; PUT: taking the body */
	FILE_JOB_WAIT		/* the pipes are closed; waiting for the exit */
};

struct file_job {
	struct control		*ctl;
	struct http_exchange	*ex;	/* NULL once answered or gone */
	enum file_job_kind	 kind;
	enum file_job_state	 state;
	char			 id[ID_LEN + 1];
	char			*path;
	int			 wsfd;	/* the child's; closed here once forked */
	int			 pfd;	/* GET: read end; PUT: data write end */
	int			 cfd;	/* PUT: the commit pipe's write end */
	int			 cfd_child, pfd_child;	/* the child's ends */
	struct event		*ev;
	struct evbuffer		*buf;	/* GET: the head; PUT: the body's bytes */
	struct files_head	 head;
	int64_t			 got;	/* GET: body bytes read */
	int			 paused;	/* PUT: the client is not read */
	int			 complete;	/* PUT: all of the body is queued */
	int			 exited;
	LIST_ENTRY(file_job)	 entry;
};

static int	file_job_admit(struct control *, struct http_exchange *,
		    const char *);
static struct file_job *file_job_new(struct control *, struct http_exchange *,
		    const char *, char *, int, enum file_job_kind);
static int	file_job_start(struct file_job *);
static void	file_job_keep(int, int, int, int);
static int	file_job_run(void *);
static void	file_job_done(int, void *);
static void	file_job_close(struct file_job *);
static void	file_job_maybe_free(struct file_job *);
static void	file_get_read_cb(evutil_socket_t, short, void *);
static void	file_get_head(struct file_job *);
static void	file_get_drain_cb(struct http_exchange *, void *);
static void	file_get_gone_cb(struct http_exchange *, void *);
static void	file_put_data_cb(struct http_exchange *, struct evbuffer *,
		    void *);
static void	file_put_gone_cb(struct http_exchange *, void *);
static void	file_put_write_cb(evutil_socket_t, short, void *);
static void	file_put_flush(struct file_job *);

/*
 * Room for one more file job, for sandbox id and in all? Answers 503 or
 * 429 and returns -1 if not.
 */
static int
file_job_admit(struct control *ctl, struct http_exchange *ex, const char *id)
{
	struct file_job	*job;
	int		 n = 0;

	if (ctl->nfile_jobs >= FILE_JOBS_MAX) {
		http_exchange_add_header(ex, "Retry-After", "1");
		http_exchange_reply_error(ex, 503, "unavailable",
		    "%d file operations are under way; try again shortly",
		    FILE_JOBS_MAX);
		return (-1);
	}
	LIST_FOREACH(job, &ctl->file_jobs, entry) {
		if (strcmp(job->id, id) == 0)
			n++;
	}
	if (n >= FILE_JOBS_PER_SANDBOX) {
		http_exchange_add_header(ex, "Retry-After", "1");
		http_exchange_reply_error(ex, 429, "quota_exceeded",
		    "this sandbox has %d file operations under way; try "
		    "again shortly", FILE_JOBS_PER_SANDBOX);
		return (-1);
	}
	return (0);
}

/* A job for path (taken) in the workspace wsfd (taken), not started. */
static struct file_job *
file_job_new(struct control *ctl, struct http_exchange *ex, const char *id,
    char *path, int wsfd, enum file_job_kind kind)
{
	struct file_job	*job;

	job = xcalloc(1, sizeof *job);
	job->ctl = ctl;
	job->ex = ex;
	job->kind = kind;
	job->state = FILE_JOB_WAIT;
	memcpy(job->id, id, ID_LEN);
	job->id[ID_LEN] = '\0';
	job->path = path;
	job->wsfd = wsfd;
	job->pfd = job->cfd = job->pfd_child = job->cfd_child = -1;
	if ((job->buf = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new failed", __func__);
	return (job);
}

/*
 * Make the pipes and fork. -1 (errno set) with the job untouched but
 * for its pipes, which are closed: the caller answers and frees it.
 */
static int
file_job_start(struct file_job *job)
{
	struct control	*ctl = job->ctl;
	int		 p[2], c[2], saved;
	short		 what;

	if (job->kind != FILE_JOB_DELETE) {
		if (pipe2(p, O_CLOEXEC) == -1)
			return (-1);
		if (job->kind == FILE_JOB_PUT && pipe2(c, O_CLOEXEC) == -1) {
			saved = errno;
			close(p[0]);
			close(p[1]);
			errno = saved;
			return (-1);
		}
		if (job->kind == FILE_JOB_GET) {
			job->pfd = p[0];
			job->pfd_child = p[1];
		} else {
			job->pfd = p[1];
			job->pfd_child = p[0];
			job->cfd = c[1];
			job->cfd_child = c[0];
		}
	}
	if (control_fork(ctl, file_job_run, job, file_job_done, job) == -1) {
		saved = errno;
		file_job_close(job);
		errno = saved;
		return (-1);
	}
	close(job->wsfd);
	job->wsfd = -1;
	if (job->pfd_child != -1)
		close(job->pfd_child);
	if (job->cfd_child != -1)
		close(job->cfd_child);
	job->pfd_child = job->cfd_child = -1;
	LIST_INSERT_HEAD(&ctl->file_jobs, job, entry);
	ctl->nfile_jobs++;
	if (job->kind == FILE_JOB_DELETE)
		return (0);

	/* Ours never blocks the loop; the child's end blocks the child. */
	if (fcntl(job->pfd, F_SETFL, O_NONBLOCK) == -1)
		fatal("%s: fcntl", __func__);
	what = job->kind == FILE_JOB_GET ? EV_READ : EV_WRITE;
	job->ev = event_new(ctl->base, job->pfd, what | EV_PERSIST,
	    job->kind == FILE_JOB_GET ? file_get_read_cb : file_put_write_cb,
	    job);
	if (job->ev == NULL)
		fatalx("%s: event_new failed", __func__);
	if (job->kind == FILE_JOB_GET) {
		job->state = FILE_JOB_HEAD;
		event_add(job->ev, NULL);
	} else {
		job->state = FILE_JOB_BODY;
		http_exchange_body_take(job->ex, file_put_data_cb,
		    file_put_gone_cb, job);
		/* What arrived with the head, and the end if it is all. */
		file_put_data_cb(job->ex, job->ex->body, job);
	}
	return (0);
}

/* In the child: close every descriptor above stderr but the ones given. */
static void
file_job_keep(int a, int b, int c, int d)
{
	int		 keep[4] = { a, b, c, d }, i, j, t;
	unsigned int	 from = STDERR_FILENO + 1;

	for (i = 0; i < 4; i++) {
		for (j = i + 1; j < 4; j++) {
			if (keep[j] < keep[i]) {
				t = keep[i];
				keep[i] = keep[j];
				keep[j] = t;
			}
		}
	}
	for (i = 0; i < 4; i++) {
		if (keep[i] < (int)from)
			continue;
		if ((unsigned int)keep[i] > from)
			close_range(from, keep[i] - 1, 0);
		from = keep[i] + 1;
	}
	close_range(from, ~0U, 0);
}

static int
file_job_run(void *arg)
{
	struct file_job	*job = arg;
	int		 created = 0, error;

	file_job_keep(job->wsfd, job->pfd_child, job->cfd_child, -1);
	switch (job->kind) {
	case FILE_JOB_GET:
		/* The reader sees a short answer if this fails. */
		return (files_send(job->wsfd, job->path, job->pfd_child) == 0 ?
		    FILE_JOB_DONE : FILE_JOB_ERRNO + EIO);
	case FILE_JOB_PUT:
		error = files_put_stream(job->wsfd, job->path, job->pfd_child,
		    job->cfd_child, (off_t)job->ctl->cf->max_file_size,
		    SANDBOX_UID, SANDBOX_GID, &created);
		break;
	default:
		error = files_delete(job->wsfd, job->path);
		break;
	}
	if (error != 0)
		return (FILE_JOB_ERRNO + (error < 250 ? error : EIO));
	return (created ? FILE_JOB_CREATED : FILE_JOB_DONE);
}

/* The child exited: a PUT or DELETE answers now; a GET's pipe tells. */
static void
file_job_done(int status, void *arg)
{
	struct file_job		*job = arg;
	struct http_exchange	*ex = job->ex;
	int			 code;

	job->exited = 1;
	code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	if (code != FILE_JOB_DONE && code != FILE_JOB_CREATED &&
	    (code < FILE_JOB_ERRNO || code >= FILE_JOB_DONE))
		log_warnx("file job failed\tid=%s path=%s status=%d", job->id,
		    job->path, status);
	if (job->kind == FILE_JOB_GET) {
		file_job_maybe_free(job);
		return;
	}
	/* A PUT may end before its body does (ENOSPC): take no more. */
	file_job_close(job);
	job->ex = NULL;
	if (code == FILE_JOB_DONE || code == FILE_JOB_CREATED)
		http_exchange_reply(ex, job->kind == FILE_JOB_PUT &&
		    code == FILE_JOB_CREATED ? 201 : 204, NULL, NULL, 0);
	else if (code >= FILE_JOB_ERRNO && code < FILE_JOB_DONE)
		reply_errno(ex, code - FILE_JOB_ERRNO, job->path);
	else
		http_exchange_reply_error(ex, 500, "internal",
		    "the file operation failed or was cut short");
	file_job_maybe_free(job);
}

/* Close our ends of the pipes and forget the body; the exit may follow. */
static void
file_job_close(struct file_job *job)
{
	if (job->ex != NULL && job->kind == FILE_JOB_PUT)
		http_exchange_body_take(job->ex, NULL, NULL, NULL);
	if (job->ev != NULL) {
		event_free(job->ev);
		job->ev = NULL;
	}
	if (job->pfd != -1)
		close(job->pfd);
	if (job->cfd != -1)
		close(job->cfd);
	if (job->pfd_child != -1)
		close(job->pfd_child);
	if (job->cfd_child != -1)
		close(job->cfd_child);
	job->pfd = job->cfd = job->pfd_child = job->cfd_child = -1;
	job->state = FILE_JOB_WAIT;
}

/* Free the job once its child exited and its answer is done. */
static void
file_job_maybe_free(struct file_job *job)
{
	if (!job->exited || job->ex != NULL || job->pfd != -1)
		return;
	LIST_REMOVE(job, entry);
	job->ctl->nfile_jobs--;
	evbuffer_free(job->buf);
	free(job->path);
	free(job);
}

/* Free the jobs still running as the daemon ends (their exits unheard). */
void
api_file_jobs_free_all(struct control *ctl)
{
	struct file_job	*job;

	while ((job = LIST_FIRST(&ctl->file_jobs)) != NULL) {
		file_job_close(job);
		/* Detached (edge went first): nobody else frees it. */
		if (job->ex != NULL && job->ex->conn == NULL)
			http_exchange_free(job->ex);
		job->exited = 1;
		job->ex = NULL;
		file_job_maybe_free(job);
	}
}

/* GET: the child's answer, as fast as the client takes it. */
static void
file_get_read_cb(evutil_socket_t fd, short events, void *arg)
{
	struct file_job		*job = arg;
	struct http_exchange	*ex;
	char			 buf[FILE_CHUNK];
	size_t			 want;
	ssize_t			 n;
	int			 r;

	if (job->state == FILE_JOB_HEAD) {
		want = sizeof job->head - evbuffer_get_length(job->buf);
		n = evbuffer_read(job->buf, fd, (int)want);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			/* The child died before it could say anything. */
			ex = job->ex;
			job->ex = NULL;
			file_job_close(job);
			http_exchange_reply_error(ex, 500, "internal",
			    "the file operation failed or was cut short");
			file_job_maybe_free(job);
			return;
		}
		if (evbuffer_get_length(job->buf) == sizeof job->head)
			file_get_head(job);
		return;
	}

	want = sizeof buf;
	if ((uint64_t)(job->head.size - job->got) < want)
		want = job->head.size - job->got + 1;	/* + 1: sees EOF */
	n = read(fd, buf, want);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	ex = job->ex;
	if (n <= 0 || job->got + n > job->head.size) {
		/* The end, or the child failed (short) or lied (long). */
		job->ex = NULL;
		file_job_close(job);
		if (n == 0 && job->got == job->head.size)
			http_exchange_stream_end(ex);
		else {
			log_warnx("file read cut short\tid=%s path=%s "
			    "got=%" PRId64 " size=%" PRId64, job->id, job->path,
			    job->got, job->head.size);
			http_exchange_stream_cut(ex);
		}
		file_job_maybe_free(job);
		return;
	}
	job->got += n;
	r = http_exchange_stream_write(ex, buf, n);
	if (r == 1)
		event_del(job->ev);	/* until the client drains it */
}

/* GET: the child's head came; answer the error, or begin the stream. */
static void
file_get_head(struct file_job *job)
{
	struct http_exchange	*ex = job->ex;
	char			 clen[32];

	evbuffer_remove(job->buf, &job->head, sizeof job->head);
	if (job->head.error != 0 || job->head.size < 0) {
		job->ex = NULL;
		file_job_close(job);
		reply_errno(ex, job->head.error != 0 ? job->head.error : EIO,
		    job->path);
		file_job_maybe_free(job);
		return;
	}
	job->state = FILE_JOB_BODY;
	/* Its length, so a read cut short shows on every protocol. */
	snprintf(clen, sizeof clen, "%" PRId64, job->head.size);
	http_exchange_add_header(ex, "Content-Length", clen);
	if (http_exchange_stream_begin(ex, 200, job->head.is_dir ?
	    "application/json" : "application/octet-stream",
	    file_get_drain_cb, file_get_gone_cb, job) == -1) {
		/* Gone meanwhile: the exchange is freed. */
		job->ex = NULL;
		file_job_close(job);
		file_job_maybe_free(job);
	}
}

/* GET: the client took what was queued; read the pipe again. */
static void
file_get_drain_cb(struct http_exchange *ex, void *arg)
{
	struct file_job	*job = arg;

	if (job->ev != NULL)
		event_add(job->ev, NULL);
}

/* GET: the client left; the child sees EPIPE and exits. */
static void
file_get_gone_cb(struct http_exchange *ex, void *arg)
{
	struct file_job	*job = arg;

	job->ex = NULL;
	file_job_close(job);
	http_exchange_stream_end(ex);
	file_job_maybe_free(job);
}

/* PUT: body bytes arrived (and maybe the end); queue them for the child. */
static void
file_put_data_cb(struct http_exchange *ex, struct evbuffer *in, void *arg)
{
	struct file_job	*job = arg;

	if (job->pfd == -1) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	evbuffer_add_buffer(job->buf, in);
	if (ex->body_complete)
		job->complete = 1;
	file_put_flush(job);
	if (job->pfd != -1 && !job->paused && !job->complete &&
	    evbuffer_get_length(job->buf) > FILE_PUT_HIGH) {
		job->paused = 1;
		http_exchange_body_pause(ex, 1);
	}
}

/*
 * PUT: the client left, or edge refused the rest of the body: close the
 * pipes with no commit; the child removes its temporary and exits, and
 * file_job_done answers the (detached) exchange, freeing it.
 */
static void
file_put_gone_cb(struct http_exchange *ex, void *arg)
{
	struct file_job	*job = arg;

	if (job->ev != NULL) {
		event_free(job->ev);
		job->ev = NULL;
	}
	if (job->pfd != -1)
		close(job->pfd);
	if (job->cfd != -1)
		close(job->cfd);
	job->pfd = job->cfd = -1;
	job->state = FILE_JOB_WAIT;
	evbuffer_drain(job->buf, evbuffer_get_length(job->buf));
}

/* PUT: the data pipe has room. */
static void
file_put_write_cb(evutil_socket_t fd, short events, void *arg)
{
	struct file_job	*job = arg;

	file_put_flush(job);
	if (job->paused && evbuffer_get_length(job->buf) < FILE_PUT_HIGH / 2) {
		job->paused = 0;
		/* May hand us more bytes at once (file_put_data_cb): last. */
		if (job->ex != NULL)
			http_exchange_body_pause(job->ex, 0);
	}
}

/*
 * PUT: move what is queued into the data pipe; once all of the body is
 * in, close it and say "commit". A write error (EPIPE: the child is
 * gone) stops the feeding; the child's exit answers.
 */
static void
file_put_flush(struct file_job *job)
{
	char	c = 'c';
	int	n;

	while (evbuffer_get_length(job->buf) > 0) {
		n = evbuffer_write_atmost(job->buf, job->pfd, FILE_CHUNK);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			file_put_gone_cb(job->ex, job);
			return;
		}
	}
	if (evbuffer_get_length(job->buf) > 0) {
		event_add(job->ev, NULL);
		return;
	}
	event_del(job->ev);
	if (!job->complete)
		return;
	/* All of it is in the pipe: the end, then the word to commit. */
	event_free(job->ev);
	job->ev = NULL;
	close(job->pfd);
	job->pfd = -1;
	if (write(job->cfd, &c, 1) != 1)
		log_warn("%s: commit pipe", __func__);
	close(job->cfd);
	job->cfd = -1;
	job->state = FILE_JOB_WAIT;
}

/* Start a file job for a request file_request accepted; answers on error. */
static void
file_job_begin(struct control *ctl, struct http_exchange *ex,
    const struct api_match *m, char *path, int wsfd, enum file_job_kind kind)
{
	struct file_job	*job;

	if (file_job_admit(ctl, ex, m->id) == -1) {
		close(wsfd);
		free(path);
		return;
	}
	job = file_job_new(ctl, ex, m->id, path, wsfd, kind);
	if (file_job_start(job) == -1) {
		log_warn("file job\tid=%s", job->id);
		http_exchange_reply_error(ex, 503, "unavailable",
		    "the server cannot start the file operation now");
		close(job->wsfd);
		evbuffer_free(job->buf);
		free(job->path);
		free(job);
	}
}

/* PUT /v1/sandboxes/{id}/files/{path} */
static void
h_file_put(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	char	*path;
	int	 wsfd;

	if (file_request(ctl, ex, caller, m, 1, &path, &wsfd) == -1)
		return;
	file_job_begin(ctl, ex, m, path, wsfd, FILE_JOB_PUT);
}

/* DELETE /v1/sandboxes/{id}/files/{path} */
static void
h_file_delete(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	char	*path;
	int	 wsfd;

	if (file_request(ctl, ex, caller, m, 1, &path, &wsfd) == -1)
		return;
	file_job_begin(ctl, ex, m, path, wsfd, FILE_JOB_DELETE);
}

/* GET /v1/sandboxes/{id}/files/{path}: a file's bytes or a listing. */
static void
h_file_get(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	char	*path;
	int	 wsfd;

	if (file_request(ctl, ex, caller, m, 0, &path, &wsfd) == -1)
		return;
	file_job_begin(ctl, ex, m, path, wsfd, FILE_JOB_GET);
}

/* POST /v1/sandboxes/{id}/exec: check the body, wake if needed, forward. */
static void
h_exec(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct json_object	*req;
	struct api_call		*call;
	enum sandbox_state	 state;
	int64_t			 timeout_s;

	if (op_target(ctl, ex, caller, m->id, &state) == -1)
		return;
	if (api_exec_parse(ex, &req, &timeout_s) == -1)
		return;
	if (state != SANDBOX_RUNNING && state != SANDBOX_STOPPED &&
	    state != SANDBOX_PAUSED) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "sandbox is %s", store_sandbox_state_name(state));
		goto out;
	}

	call = xcalloc(1, sizeof *call);
	call->ctl = ctl;
	call->ex = ex;
	snprintf(call->id, sizeof call->id, "%s", m->id);
	call->body = xstrdup(json_object_to_json_string_ext(req,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	call->timeout_ms = (int)(timeout_s + 15) * 1000;
	store_sandbox_touch(ctl->store, m->id, time_now_ms());
	if (state == SANDBOX_PAUSED) {
		/* exec thaws a paused sandbox. */
		if (lifecycle_unpause(ctl, m->id, exec_started_cb,
		    call) == -1) {
			reply_busy(ex);
			free(call->body);
			free(call);
		}
		goto out;
	}
	if (state == SANDBOX_STOPPED) {
		/* exec wakes a stopped sandbox. */
		if (refuse_full(ctl, ex, m->id)) {
			free(call->body);
			free(call);
		} else if (lifecycle_start(ctl, m->id, exec_started_cb,
		    call) == -1) {
			reply_busy(ex);
			free(call->body);
			free(call);
		}
		goto out;
	}
	exec_send(call);
out:
	json_object_put(req);
}

/*
 * The body of POST .../exec checked: cmd a non-empty array of strings,
 * cwd absolute, env a map of shell names, timeout_s 1..3600 (60 when
 * absent). *reqp is the body to forward to agentd. -1 after answering.
 */
int
api_exec_parse(struct http_exchange *ex, struct json_object **reqp,
    int64_t *timeout_s)
{
	static const char *const fields[] = { "cmd", "cwd", "env",
	    "timeout_s" };
	struct json_object	*req, *v;
	size_t			 i, n;

	*reqp = NULL;
	*timeout_s = 60;
	if (parse_body(ex, 0, &req) == -1)
		return (-1);
	if (!only_fields(ex, req, fields, nitems(fields)))
		goto out;
	if (!json_object_object_get_ex(req, "cmd", &v) ||
	    !json_object_is_type(v, json_type_array) ||
	    (n = json_object_array_length(v)) == 0 || n > 4096) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "cmd must be a non-empty array of strings");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (!json_object_is_type(json_object_array_get_idx(v, i),
		    json_type_string)) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "cmd[%zu] must be a string", i);
			goto out;
		}
	}
	if (json_object_object_get_ex(req, "cwd", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	    json_object_get_string(v)[0] != '/')) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "cwd must be an absolute path");
		goto out;
	}
	if (json_object_object_get_ex(req, "env", &v) &&
	    check_string_map(ex, "env", v, 1, API_MAX_ENV, 32 * 1024) == -1)
		goto out;
	if (get_int(ex, req, "timeout_s", 1, 3600, timeout_s) == -1)
		goto out;
	*reqp = req;
	return (0);

out:
	json_object_put(req);
	return (-1);
}

/* The sandbox woke for an exec: send it. */
static void
exec_started_cb(struct control *ctl, const char *id, int status,
    const char *message, void *arg)
{
	struct api_call	*call = arg;

	if (status >= 300) {
		http_exchange_reply_error(call->ex, status == 503 ? 503 : 500,
		    status == 503 ? "unavailable" : "internal",
		    "cannot wake the sandbox: %s", message != NULL ? message :
		    "?");
		free(call->body);
		free(call);
		return;
	}
	exec_send(call);
}

static void
exec_send(struct api_call *call)
{
	const char	*accept = http_exchange_header(call->ex, "accept");

	if (accept != NULL && strstr(accept, "text/event-stream") != NULL) {
		/* Streamed as SSE (execstream.c), which copies the body. */
		execstream_begin(call->ctl, call->ex, call->id, call->body,
		    call->timeout_ms);
		free(call->body);
		free(call);
		return;
	}
	/* Read as a stream, so no more than the caps is ever kept. */
	execstream_collect(call->ctl, call->ex, call->id, call->body,
	    call->timeout_ms);
	free(call->body);
	free(call);
}

/* 1 for a JSON string holding no NUL (a C string would be cut there). */
static int
api_plain_string(struct json_object *v)
{
	return (json_object_is_type(v, json_type_string) &&
	    strlen(json_object_get_string(v)) ==
	    (size_t)json_object_get_string_len(v));
}

/*
 * POST /v1/sandboxes/{id}/tasks: checked strictly here, run by task.c.
 * command takes cmd; opencode and claude-code take prompt (and model).
 */
static void
h_task_create(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct json_object	*req, *env;
	struct store_sandbox	 s;

	if (load_sandbox(ctl, ex, caller, m->id, &s) == -1)
		return;
	if (s.state == SANDBOX_DELETING || s.state == SANDBOX_ERROR ||
	    s.state == SANDBOX_CREATING) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "sandbox is %s", store_sandbox_state_name(s.state));
		store_sandbox_clear(&s);
		return;
	}
	store_sandbox_clear(&s);
	if (api_task_parse(ctl, ex, &req, &env) == -1)
		return;
	task_create(ctl, ex, m->id, req, env);
	json_object_put(env);
	json_object_put(req);
}

/*
 * The body of POST .../tasks checked: *reqp is the task's spec (with
 * timeout_s filled in, env taken out), *envp its env or NULL; the caller
 * frees both. -1 after answering.
 */
int
api_task_parse(struct control *ctl, struct http_exchange *ex,
    struct json_object **reqp, struct json_object **envp)
{
	static const char *const fields[] = { "agent", "prompt", "cmd",
	    "env", "timeout_s", "model" };
	struct json_object	*req, *v, *env = NULL;
	const char		*agent;
	int64_t			 timeout_s;
	size_t			 i, n;
	int			 is_command;

	*reqp = NULL;
	*envp = NULL;
	if (parse_body(ex, 0, &req) == -1)
		return (-1);
	if (!only_fields(ex, req, fields, nitems(fields)))
		goto out;
	if (!json_object_object_get_ex(req, "agent", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    (strcmp(agent = json_object_get_string(v), "command") != 0 &&
	    strcmp(agent, "opencode") != 0 &&
	    strcmp(agent, "claude-code") != 0)) {
		http_exchange_reply_error(ex, 400, "bad_request",
		    "agent must be \"command\", \"opencode\" or "
		    "\"claude-code\"");
		goto out;
	}
	is_command = strcmp(agent, "command") == 0;
	if (is_command) {
		if (json_object_object_get_ex(req, "prompt", &v) ||
		    json_object_object_get_ex(req, "model", &v)) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "prompt and model are for opencode and "
			    "claude-code; a command task takes cmd");
			goto out;
		}
		if (!json_object_object_get_ex(req, "cmd", &v) ||
		    !json_object_is_type(v, json_type_array) ||
		    (n = json_object_array_length(v)) == 0 || n > 4096) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "cmd must be a non-empty array of strings");
			goto out;
		}
		for (i = 0; i < n; i++) {
			if (!api_plain_string(json_object_array_get_idx(v,
			    i))) {
				http_exchange_reply_error(ex, 400,
				    "bad_request", "cmd[%zu] must be a string "
				    "without NUL bytes", i);
				goto out;
			}
		}
	} else {
		if (json_object_object_get_ex(req, "cmd", &v)) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "cmd is for command tasks; %s takes a prompt",
			    agent);
			goto out;
		}
		if (!json_object_object_get_ex(req, "prompt", &v) ||
		    !api_plain_string(v) ||
		    json_object_get_string_len(v) == 0 ||
		    json_object_get_string_len(v) > API_MAX_PROMPT) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "prompt must be a string of 1 to %d bytes, without "
			    "NUL bytes", API_MAX_PROMPT);
			goto out;
		}
		if (json_object_object_get_ex(req, "model", &v) &&
		    (!api_plain_string(v) ||
		    json_object_get_string_len(v) == 0 ||
		    json_object_get_string_len(v) > 200 ||
		    json_object_get_string(v)[0] == '-')) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "model must be a model name (1 to 200 bytes, not "
			    "starting with '-')");
			goto out;
		}
	}
	if (json_object_object_get_ex(req, "env", &v)) {
		if (check_string_map(ex, "env", v, 1, API_MAX_ENV,
		    32 * 1024) == -1)
			goto out;
		/* Taken out of the spec: the store never sees it. */
		env = json_object_get(v);
		json_object_object_del(req, "env");
	}
	timeout_s = ctl->cf->task_timeout_ms / 1000;
	if (timeout_s > API_MAX_TASK_TIMEOUT)
		timeout_s = API_MAX_TASK_TIMEOUT;
	if (get_int(ex, req, "timeout_s", 1, API_MAX_TASK_TIMEOUT,
	    &timeout_s) == -1)
		goto out;
	json_object_object_add(req, "timeout_s",
	    json_object_new_int64(timeout_s));
	*reqp = req;
	*envp = env;
	return (0);

out:
	json_object_put(env);
	json_object_put(req);
	return (-1);
}

/* GET /v1/sandboxes/{id}/tasks */
static void
h_task_list(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	if (visible(ctl, ex, caller, m->id) == -1)
		return;
	task_list(ctl, ex, m->id);
}

/* GET /v1/sandboxes/{id}/tasks/{tid} */
static void
h_task_get(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	if (visible(ctl, ex, caller, m->id) == -1)
		return;
	task_get(ctl, ex, m->id, m->tid);
}

/*
 * GET .../tasks/{tid}/events: resume after Last-Event-ID (what a
 * reconnecting EventSource sends) or ?after=N.
 */
static void
h_task_events(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	const char		*h;
	char			*q = NULL;
	const char		*p;
	unsigned long long	 after = 0;

	if (visible(ctl, ex, caller, m->id) == -1)
		return;
	if ((h = http_exchange_header(ex, "last-event-id")) == NULL)
		h = q = http_exchange_query(ex, "after");
	if (h != NULL) {
		for (p = h; *p >= '0' && *p <= '9'; p++)
			;
		errno = 0;
		if (*h == '\0' || *p != '\0' || p - h > 18 ||
		    (after = strtoull(h, NULL, 10), errno != 0)) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "Last-Event-ID and after must be an event id "
			    "(digits)");
			free(q);
			return;
		}
	}
	free(q);
	task_events(ctl, ex, m->id, m->tid, (uint64_t)after);
}

/*
 * A body that may be absent or an empty object: 0, or -1 after answering
 * 400 (malformed, or any field at all).
 */
int
api_no_fields(struct http_exchange *ex)
{
	struct json_object	*req;
	int			 ret = 0;

	if (parse_body(ex, 1, &req) == -1)
		return (-1);
	if (req != NULL && json_object_object_length(req) > 0) {
		json_object_object_foreach(req, k, v) {
			(void)v;
			http_exchange_reply_error(ex, 400, "bad_request",
			    "unknown field \"%s\"", k);
			break;
		}
		ret = -1;
	}
	json_object_put(req);
	return (ret);
}

/* POST .../tasks/{tid}/cancel */
static void
h_task_cancel(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	if (visible(ctl, ex, caller, m->id) == -1 || api_no_fields(ex) == -1)
		return;
	task_cancel(ctl, ex, m->id, m->tid);
}

/* POST .../tasks/{tid}/revert */
static void
h_task_revert(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	if (visible(ctl, ex, caller, m->id) == -1 || api_no_fields(ex) == -1)
		return;
	task_revert(ctl, ex, m->id, m->tid);
}

/* GET /v1/sandboxes/{id}/terminal: a WebSocket (terminal.c). */
static void
h_terminal(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	if (visible(ctl, ex, caller, m->id) == -1)
		return;
	term_open(ctl, ex, m->id);
}

/* GET /v1/sandboxes/{id}/logs[?follow=1] */
static void
h_logs(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	char	*q;
	int	 follow = 0;

	if (visible(ctl, ex, caller, m->id) == -1)
		return;
	if ((q = http_exchange_query(ex, "follow")) != NULL) {
		if (strcmp(q, "1") != 0 && strcmp(q, "0") != 0 &&
		    strcmp(q, "true") != 0 && strcmp(q, "false") != 0) {
			http_exchange_reply_error(ex, 400, "bad_request",
			    "follow must be 1 or 0");
			free(q);
			return;
		}
		follow = strcmp(q, "1") == 0 || strcmp(q, "true") == 0;
		free(q);
	}
	dev_logs(ctl, ex, m->id, follow);
}

/* POST /v1/sandboxes/{id}/restart-dev */
static void
h_restart_dev(struct control *ctl, struct http_exchange *ex,
    const struct api_caller *caller, const struct api_match *m)
{
	struct json_object	*req;

	if (visible(ctl, ex, caller, m->id) == -1)
		return;
	if (parse_body(ex, 1, &req) == -1)
		return;
	if (req != NULL && json_object_object_length(req) > 0) {
		json_object_put(req);
		http_exchange_reply_error(ex, 400, "bad_request",
		    "restart-dev takes no fields");
		return;
	}
	json_object_put(req);
	dev_restart(ctl, ex, m->id);
}
