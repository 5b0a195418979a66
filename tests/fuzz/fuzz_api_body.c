/*
 * libFuzzer target: the control API's JSON request bodies, checked by the
 * functions its handlers call (control/api.c: api_create_parse,
 * api_exec_parse, api_task_parse, api_preview_parse, api_no_fields). The
 * first input byte picks the route; the rest is the request body, in a
 * real http_exchange whose transport records the answer.
 *
 * Invariants: a check either accepts without answering or answers
 * exactly once with 400 and a JSON error; and what it accepts holds what
 * the handler relies on: a create's sizes and timeouts in their ranges,
 * its env and labels JSON objects of strings; an exec's cmd a non-empty
 * array of strings and cwd absolute; a task's agent one of three, with
 * cmd or prompt as that agent takes, timeout_s in 1..86400, env apart; a
 * preview token's ttl in range.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <json.h>

#include "common/common.h"
#include "store/store.h"
#include "control/control_int.h"
#include "tests/fuzz/fuzz.h"

static const char fuzz_api_conf[] =
	"default_template = default\n"
	"idle_timeout = 15m\n"
	"[template default]\n"
	"image = sandboxd/base:latest\n"
	"port = 3000\n"
	"memory = 1g\n"
	"cpus = 1\n"
	"[template python]\n"
	"image = python:3.12-slim\n"
	"port = 8000\n"
	"memory = 512m\n"
	"cpus = 0.5\n";

static struct control	 fuzz_ctl;
static int		 fuzz_status;	/* the answer's, 0: none */
static int		 fuzz_nreplies;

static void	fuzz_api_send(void *, struct http_exchange *);
static void	fuzz_api_init(void);
static void	fuzz_api_strings(struct json_object *, int);

static const struct http_exchange_transport fuzz_api_transport = {
	.send = fuzz_api_send,
};

/* The answer: a status and a JSON error body; the exchange is ours. */
static void
fuzz_api_send(void *conn, struct http_exchange *ex)
{
	struct json_object	*o, *err;
	size_t			 len = evbuffer_get_length(ex->resp_body);
	char			*text;

	fuzz_nreplies++;
	fuzz_status = ex->status;
	text = xmalloc(len + 1);
	evbuffer_copyout(ex->resp_body, text, len);
	text[len] = '\0';
	o = json_tokener_parse(text);
	free(text);
	FUZZ_ASSERT(o != NULL && json_object_object_get_ex(o, "error", &err));
	json_object_put(o);
	http_exchange_free(ex);
}

static void
fuzz_api_init(void)
{
	char	*errors = NULL;

	log_init(LOG_LEVEL_WARN);
	fuzz_ctl.cf = config_parse("fuzz", fuzz_api_conf, &errors);
	FUZZ_ASSERT(fuzz_ctl.cf != NULL);
	free(errors);
}

/* o is an object of strings (env: names of letters, digits and _). */
static void
fuzz_api_strings(struct json_object *o, int is_env)
{
	FUZZ_ASSERT(json_object_is_type(o, json_type_object));
	json_object_object_foreach(o, k, v) {
		FUZZ_ASSERT(*k != '\0');
		FUZZ_ASSERT(json_object_is_type(v, json_type_string));
		if (is_env)
			FUZZ_ASSERT(strspn(k, "abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") ==
			    strlen(k) && !(*k >= '0' && *k <= '9'));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct cfg_template	*t;
	struct http_exchange		*ex;
	struct store_sandbox		 s;
	struct json_object		*req = NULL, *env = NULL, *v, *o;
	const char			*agent;
	int64_t				 n;
	size_t				 i;
	int				 r, route;

	if (fuzz_ctl.cf == NULL)
		fuzz_api_init();
	if (size < 1)
		return 0;
	route = data[0] % 5;
	ex = http_exchange_new();
	ex->transport = &fuzz_api_transport;
	ex->conn = &fuzz_ctl;
	evbuffer_add(ex->body, data + 1, size - 1);
	fuzz_status = fuzz_nreplies = 0;

	switch (route) {
	case 0:
		r = api_create_parse(&fuzz_ctl, ex, &req, &s, &t);
		if (r != 0)
			break;
		FUZZ_ASSERT(t != NULL && strcmp(s.template_name, t->name) == 0);
		/* The template asked for is that one, byte for byte. */
		if (json_object_object_get_ex(req, "template", &v))
			FUZZ_ASSERT((size_t)json_object_get_string_len(v) ==
			    strlen(t->name) && memcmp(json_object_get_string(v),
			    t->name, strlen(t->name)) == 0);
		if (json_object_object_get_ex(req, "visibility", &v))
			FUZZ_ASSERT(json_object_get_string_len(v) ==
			    (s.visibility == SANDBOX_PRIVATE ? 7 : 6));
		FUZZ_ASSERT(s.memory_mb >= 16 && s.memory_mb <= 1024 * 1024);
		FUZZ_ASSERT(isfinite(s.cpus) && s.cpus >= 0.01 &&
		    s.cpus <= 1024);
		FUZZ_ASSERT(s.port >= 1 && s.port <= 65535);
		FUZZ_ASSERT(s.idle_timeout_s >= 0 &&
		    s.idle_timeout_s <= 30 * 86400);
		FUZZ_ASSERT(s.pause_timeout_s >= 0 &&
		    s.pause_timeout_s <= 30 * 86400);
		FUZZ_ASSERT(s.pause_timeout_s == 0 || s.idle_timeout_s == 0 ||
		    s.pause_timeout_s < s.idle_timeout_s);
		FUZZ_ASSERT(s.visibility == SANDBOX_PUBLIC ||
		    s.visibility == SANDBOX_PRIVATE);
		FUZZ_ASSERT((o = json_tokener_parse(s.env_json)) != NULL);
		fuzz_api_strings(o, 1);
		json_object_put(o);
		FUZZ_ASSERT((o = json_tokener_parse(s.labels_json)) != NULL);
		fuzz_api_strings(o, 0);
		json_object_put(o);
		break;
	case 1:
		r = api_exec_parse(ex, &req, &n);
		if (r != 0)
			break;
		FUZZ_ASSERT(n >= 1 && n <= 3600);
		FUZZ_ASSERT(json_object_object_get_ex(req, "cmd", &v) &&
		    json_object_is_type(v, json_type_array) &&
		    json_object_array_length(v) > 0);
		for (i = 0; i < json_object_array_length(v); i++)
			FUZZ_ASSERT(json_object_is_type(
			    json_object_array_get_idx(v, i), json_type_string));
		if (json_object_object_get_ex(req, "cwd", &v))
			FUZZ_ASSERT(json_object_get_string(v)[0] == '/');
		if (json_object_object_get_ex(req, "env", &v))
			fuzz_api_strings(v, 1);
		/* What goes to agentd is one JSON text again. */
		o = json_tokener_parse(json_object_to_json_string_ext(req,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		FUZZ_ASSERT(o != NULL);
		json_object_put(o);
		break;
	case 2:
		r = api_task_parse(&fuzz_ctl, ex, &req, &env);
		if (r != 0)
			break;
		FUZZ_ASSERT(!json_object_object_get_ex(req, "env", &v));
		if (env != NULL)
			fuzz_api_strings(env, 1);
		FUZZ_ASSERT(json_object_object_get_ex(req, "timeout_s", &v));
		n = json_object_get_int64(v);
		FUZZ_ASSERT(n >= 1 && n <= 86400);
		FUZZ_ASSERT(json_object_object_get_ex(req, "agent", &v));
		agent = json_object_get_string(v);
		if (strcmp(agent, "command") == 0) {
			FUZZ_ASSERT(json_object_object_get_ex(req, "cmd", &v));
			FUZZ_ASSERT(json_object_array_length(v) > 0);
			FUZZ_ASSERT(!json_object_object_get_ex(req, "prompt",
			    &v));
		} else {
			FUZZ_ASSERT(strcmp(agent, "opencode") == 0 ||
			    strcmp(agent, "claude-code") == 0);
			FUZZ_ASSERT(json_object_object_get_ex(req, "prompt",
			    &v) && json_object_get_string_len(v) > 0);
			FUZZ_ASSERT(strlen(json_object_get_string(v)) ==
			    (size_t)json_object_get_string_len(v));
			FUZZ_ASSERT(!json_object_object_get_ex(req, "cmd", &v));
			if (json_object_object_get_ex(req, "model", &v))
				FUZZ_ASSERT(json_object_get_string(v)[0] !=
				    '-');
		}
		break;
	case 3:
		r = api_preview_parse(ex, &n);
		if (r == 0)
			FUZZ_ASSERT(n >= PREVIEW_TTL_MIN && n <= PREVIEW_TTL_MAX);
		break;
	default:
		r = api_no_fields(ex);
		break;
	}
	FUZZ_ASSERT(r == 0 || r == -1);
	if (r == 0) {
		FUZZ_ASSERT(fuzz_nreplies == 0);
		http_exchange_free(ex);
	} else {
		FUZZ_ASSERT(fuzz_nreplies == 1 && fuzz_status == 400);
		FUZZ_ASSERT(req == NULL && env == NULL);
	}
	json_object_put(req);
	json_object_put(env);
	return 0;
}
