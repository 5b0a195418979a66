/*
 * sandboxd status: what an operator reads. From the running daemon over
 * its admin socket (data_dir/admin.sock, admin/), or, when no daemon
 * answers there, from the store and a Docker ping of our own — and then
 * it says so. Human-readable, or --json.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "store/store.h"
#include "admin/admin.h"
#include "sandboxd.h"

/* The most of an answer read from a socket. */
#define STATUS_MAX_ANSWER	(1024 * 1024)
#define STATUS_TIMEOUT_S	10

static struct json_object *status_get(const char *, const char *, char **);
static struct json_object *status_offline(const struct config *, const char *);
static void	status_print(struct json_object *);
static const char *status_str(struct json_object *, const char *);
static int64_t	status_int(struct json_object *, const char *);

/*
 * GET path over the unix socket at sock with HTTP/1.0 (blocking, bounded
 * in time); the JSON body of a 200, or NULL with *why.
 */
static struct json_object *
status_get(const char *sock, const char *path, char **why)
{
	struct sockaddr_un	 sun;
	struct timeval		 tv = { STATUS_TIMEOUT_S, 0 };
	struct json_object	*o;
	char			*buf = NULL, *body, req[256];
	size_t			 len = 0;
	ssize_t			 n;
	int			 fd, status;

	*why = NULL;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(sock) >= sizeof sun.sun_path) {
		xasprintf(why, "%s: path too long", sock);
		return (NULL);
	}
	memcpy(sun.sun_path, sock, strlen(sock));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		xasprintf(why, "socket: %s", strerror(errno));
		return (NULL);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		xasprintf(why, "%s: %s", sock, strerror(errno));
		close(fd);
		return (NULL);
	}
	snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n",
	    path);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		xasprintf(why, "%s: %s", sock, strerror(errno));
		close(fd);
		return (NULL);
	}
	buf = xmalloc(STATUS_MAX_ANSWER + 1);
	while (len < STATUS_MAX_ANSWER &&
	    (n = read(fd, buf + len, STATUS_MAX_ANSWER - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 ||
	    (body = strstr(buf, "\r\n\r\n")) == NULL) {
		xasprintf(why, "%s: no answer (%s)", sock, len == 0 ?
		    "closed" : "not HTTP");
		free(buf);
		return (NULL);
	}
	if (status != 200) {
		xasprintf(why, "%s: answered %d", sock, status);
		free(buf);
		return (NULL);
	}
	o = json_tokener_parse(body + 4);
	free(buf);
	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		xasprintf(why, "%s: the answer is not a JSON object", sock);
		return (NULL);
	}
	return (o);
}

/* What can be known without the daemon: the store, and Docker directly. */
static struct json_object *
status_offline(const struct config *cf, const char *why)
{
	struct json_object	*o, *st, *errs, *e, *d, *v, *dv;
	struct store		*store;
	struct store_sandbox	*rows;
	struct store_apikey	*keys;
	size_t			 n, i, live;
	char			*dbpath, *cause = NULL, *dwhy;
	int			 state, count, total = 0;

	o = json_object_new_object();
	json_object_object_add(o, "running", json_object_new_boolean(0));
	json_object_object_add(o, "not_running_because",
	    json_object_new_string(why));
	json_object_object_add(o, "version",
	    json_object_new_string(PACKAGE_VERSION));
	json_object_object_add(o, "config", json_object_new_string(cf->path));
	json_object_object_add(o, "data_dir",
	    json_object_new_string(cf->data_dir));
	json_object_object_add(o, "instance",
	    json_object_new_string(cf->instance));

	d = json_object_new_object();
	json_object_object_add(d, "socket",
	    json_object_new_string(cf->docker_socket));
	dv = status_get(cf->docker_socket, "/version", &dwhy);
	json_object_object_add(d, "reachable", json_object_new_boolean(dv !=
	    NULL));
	if (dv != NULL) {
		if (json_object_object_get_ex(dv, "Version", &v))
			json_object_object_add(d, "version",
			    json_object_get(v));
		if (json_object_object_get_ex(dv, "ApiVersion", &v))
			json_object_object_add(d, "api_version",
			    json_object_get(v));
		json_object_put(dv);
	} else {
		json_object_object_add(d, "error",
		    json_object_new_string(dwhy));
		free(dwhy);
	}
	json_object_object_add(o, "docker", d);

	xasprintf(&dbpath, "%s/sandboxd.db", cf->data_dir);
	if (access(dbpath, F_OK) != 0) {
		json_object_object_add(o, "store", json_object_new_string(
		    "none yet (the daemon makes it at first start)"));
		free(dbpath);
		return (o);
	}
	if ((store = store_open(dbpath, &cause)) == NULL) {
		json_object_object_add(o, "store", json_object_new_string(
		    cause));
		free(cause);
		free(dbpath);
		return (o);
	}
	free(dbpath);
	json_object_object_add(o, "store", json_object_new_string("ok"));
	json_object_object_add(o, "schema_version",
	    json_object_new_int(store_schema_version(store)));
	st = json_object_new_object();
	for (state = 0; store_sandbox_state_name(state) != NULL; state++) {
		count = 0;
		store_sandbox_count(store, state, &count);
		total += count;
		json_object_object_add(st, store_sandbox_state_name(state),
		    json_object_new_int(count));
	}
	json_object_object_add(o, "sandboxes_total", json_object_new_int(total));
	json_object_object_add(o, "sandboxes", st);
	errs = json_object_new_array();
	if (store_sandbox_list(store, NULL, &rows, &n) == 0) {
		for (i = 0; i < n && json_object_array_length(errs) < 10; i++) {
			if (rows[i].state != SANDBOX_ERROR)
				continue;
			e = json_object_new_object();
			json_object_object_add(e, "id",
			    json_object_new_string(rows[i].id));
			json_object_object_add(e, "tenant",
			    json_object_new_string(rows[i].tenant));
			json_object_object_add(e, "error",
			    json_object_new_string(rows[i].error != NULL ?
			    rows[i].error : ""));
			json_object_array_add(errs, e);
		}
		store_sandbox_list_free(rows, n);
	}
	json_object_object_add(o, "errored", errs);
	if (store_apikey_list(store, NULL, &keys, &n) == 0) {
		for (i = live = 0; i < n; i++)
			live += keys[i].revoked_at == 0;
		json_object_object_add(o, "store_keys_live",
		    json_object_new_int((int)live));
		store_apikey_list_free(keys, n);
	}
	store_close(store);
	return (o);
}

static const char *
status_str(struct json_object *o, const char *key)
{
	struct json_object	*v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) || v == NULL)
		return ("-");
	return (json_object_get_string(v));
}

static int64_t
status_int(struct json_object *o, const char *key)
{
	struct json_object	*v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v))
		return (0);
	return (json_object_get_int64(v));
}

/* The human-readable form, the same for both sources. */
static void
status_print(struct json_object *o)
{
	struct json_object	*v, *d = NULL, *e, *c;
	int			 running;
	int64_t			 up;
	size_t			 i;

	running = json_object_object_get_ex(o, "running", &v) &&
	    json_object_get_boolean(v);
	if (running) {
		up = status_int(o, "uptime_s");
		printf("sandboxd %s: running (pid %lld), up %lldd %02lldh%02lldm"
		    "%02llds since %s\n", status_str(o, "version"),
		    (long long)status_int(o, "pid"), (long long)(up / 86400),
		    (long long)(up / 3600 % 24), (long long)(up / 60 % 60),
		    (long long)(up % 60), status_str(o, "started_at"));
	} else
		printf("sandboxd %s: NOT RUNNING (%s)\n  what follows comes "
		    "from the store\n", status_str(o, "version"),
		    status_str(o, "not_running_because"));
	printf("  config:     %s\n  data_dir:   %s\n  instance:   %s\n",
	    status_str(o, "config"), status_str(o, "data_dir"),
	    status_str(o, "instance"));
	if (json_object_object_get_ex(o, "listeners", &v)) {
		printf("  listeners: ");
		for (i = 0; i < json_object_array_length(v); i++) {
			e = json_object_array_get_idx(v, i);
			printf(" %s%s", status_str(e, "address"),
			    json_object_object_get_ex(e, "tls", &c) &&
			    json_object_get_boolean(c) ? " (tls)" : "");
		}
		printf("\n");
	}
	if (json_object_object_get_ex(o, "docker", &d)) {
		if (json_object_object_get_ex(d, "reachable", &v) &&
		    json_object_get_boolean(v))
			printf("  docker:     reachable at %s, version %s "
			    "(API %s)\n", status_str(d, "socket"),
			    status_str(d, "version"),
			    status_str(d, "api_version"));
		else
			printf("  docker:     UNREACHABLE at %s: %s\n",
			    status_str(d, "socket"), status_str(d, "error"));
	}
	if (running)
		printf("  reconciled: %s\n", json_object_object_get_ex(o,
		    "reconciled", &v) && json_object_get_boolean(v) ? "yes" :
		    "not yet");
	if (json_object_object_get_ex(o, "store", &v))
		printf("  store:      %s (schema %lld)\n",
		    json_object_get_string(v),
		    (long long)status_int(o, "schema_version"));
	if (json_object_object_get_ex(o, "sandboxes", &v)) {
		printf("  sandboxes:  %lld:", (long long)status_int(o,
		    "sandboxes_total"));
		json_object_object_foreach(v, k, n)
			if (json_object_get_int(n) > 0)
				printf(" %s %d", k, json_object_get_int(n));
		printf("\n");
	}
	if (running)
		printf("  active:     %lld of max_running %lld; held requests "
		    "%lld\n", (long long)status_int(o, "active"),
		    (long long)status_int(o, "max_running"),
		    (long long)status_int(o, "held_requests"));
	if (json_object_object_get_ex(o, "counters", &c)) {
		printf("  counters:  ");
		json_object_object_foreach(c, k, n)
			printf(" %s=%lld", k, (long long)json_object_get_int64(n));
		printf("\n");
	}
	if (json_object_object_get_ex(o, "store_keys_live", &v))
		printf("  store keys: %d live\n", json_object_get_int(v));
	if (json_object_object_get_ex(o, "errored", &v) &&
	    json_object_array_length(v) > 0) {
		printf("  in error:\n");
		for (i = 0; i < json_object_array_length(v); i++) {
			e = json_object_array_get_idx(v, i);
			printf("    %s (%s): %s\n", status_str(e, "id"),
			    status_str(e, "tenant"), status_str(e, "error"));
		}
	}
	if (json_object_object_get_ex(o, "recent_warnings", &v) &&
	    json_object_array_length(v) > 0) {
		printf("  last warnings:\n");
		for (i = 0; i < json_object_array_length(v); i++)
			printf("    %s\n", json_object_get_string(
			    json_object_array_get_idx(v, i)));
	}
}

int
cmd_status(int argc, char **argv)
{
	static const char help[] = "usage: sandboxd status [-c FILE] [--json]\n\n"
	    "What the daemon is doing: version, uptime, listeners, Docker's "
	    "reachability\nand version, sandboxes by state, held requests, "
	    "counters, sandboxes in error\nand the last warnings, read from "
	    "the running daemon over data_dir/admin.sock.\nWithout a daemon, "
	    "it says so and reads the store (and asks Docker) itself.\n"
	    "Exit 0 when the daemon answers, 1 when it does not, 2 on a usage "
	    "or config\nerror.\n";
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 }
	};
	struct config		*cf;
	struct json_object	*o;
	const char		*path = NULL;
	char			*sock, *why;
	int			 ch, json = 0, rv;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'h':
			fputs(help, stdout);
			return (0);
		case 'j':
			json = 1;
			break;
		default:
			fputs(help, stderr);
			return (EXIT_USAGE);
		}
	}
	if (optind != argc) {
		fputs(help, stderr);
		return (EXIT_USAGE);
	}
	log_init(LOG_LEVEL_WARN);
	if ((cf = load_config(path, 1)) == NULL)
		return (EXIT_USAGE);
	xasprintf(&sock, "%s/%s", cf->data_dir, ADMIN_SOCKET_NAME);
	if ((o = status_get(sock, "/status", &why)) != NULL)
		rv = 0;
	else {
		o = status_offline(cf, why);
		free(why);
		rv = EXIT_RUNTIME;
	}
	free(sock);
	if (json)
		printf("%s\n", json_object_to_json_string_ext(o,
		    JSON_C_TO_STRING_PLAIN));
	else
		status_print(o);
	json_object_put(o);
	config_free(cf);
	return (rv);
}
