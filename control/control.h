/*
 * control/ — owns the sandbox lifecycle: the API handlers, the Docker Engine
 * API client, the agentd rendezvous, the reconciler and (later) the idle
 * reaper and wake path. It uses store/ and common/; edge/ calls into it.
 */
#ifndef SBX_CONTROL_H
#define SBX_CONTROL_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "store/store.h"

struct event_base;
struct evbuffer;
struct json_object;

/* The label prefix on every container and network sandboxd makes. */
#define CONTROL_LABEL_PREFIX	"io.sandboxd"
#define CONTROL_LABEL_INSTANCE	CONTROL_LABEL_PREFIX ".instance"
#define CONTROL_LABEL_SANDBOX	CONTROL_LABEL_PREFIX ".sandbox"
/* The hash of the create body a container was made from (hex, truncated). */
#define CONTROL_LABEL_SPEC	CONTROL_LABEL_PREFIX ".spec"
#define CONTROL_SPEC_HASH_LEN	16

/* Where agentd and the rendezvous socket appear inside a container. */
#define AGENTD_CONTAINER_PATH	"/.sandboxd/agentd"
#define AGENTD_RUN_DIR		"/run/sandboxd"
#define AGENTD_SOCKET_NAME	"agentd.sock"

/* control/docker.c — asynchronous Docker Engine API client */
struct docker;

/*
 * Called once per request. status is the HTTP status, or 0 when the request
 * never got an answer (connect failure, I/O error, malformed reply, timeout);
 * then errmsg says why. body is the parsed JSON answer or NULL (no body or
 * not JSON); it is freed after the callback returns (json_object_get it to
 * keep it). For non-2xx answers errmsg is Docker's "message" if it sent one.
 */
typedef void (*docker_cb)(int status, struct json_object *body,
	    const char *errmsg, void *arg);
/*
 * One event from GET /events (a JSON object, freed after the call), or NULL
 * each time the stream (re)connects: events may have been missed since.
 */
typedef void (*docker_event_cb)(struct json_object *event, void *arg);

struct docker	*docker_new(struct event_base *, const char *socket_path);
/* Cancels every request in flight (their callbacks are not called). */
void		 docker_free(struct docker *);
/*
 * Send one request; path is after the version ("/containers/json?all=1"),
 * the client prefixes "/v1.41". body may be NULL (not consumed: the caller
 * keeps its reference). timeout_ms 0 means the default (30 s).
 */
void	docker_request(struct docker *, const char *method, const char *path,
	    struct json_object *body, int timeout_ms, docker_cb, void *arg);
/*
 * Follow GET /events with these filters (a JSON object, e.g. type and label);
 * reconnects with backoff if the stream breaks. One stream per client.
 */
void	docker_events_follow(struct docker *, struct json_object *filters,
	    docker_event_cb, void *arg);
/*
 * What the client counts for /metrics: requests answered or failed (the
 * events stream not among them), failures (no answer, or a 5xx), and
 * their latency. Owned by the client, valid until docker_free.
 */
struct docker_stats {
	uint64_t	 calls;
	uint64_t	 errors;
	struct hist	 latency;
};
const struct docker_stats *docker_stats(struct docker *);

/* control/agent.c — the daemon's side of the agentd rendezvous */
struct agent_hub;
struct agent_exec_result;
struct agent_req;

/*
 * An agentd request's answer: status 0 when no answer came (agentd not
 * connected within the timeout, connection lost); then errmsg says why.
 * body is the response body (JSON text for every agentd route, also
 * NUL-terminated), freed after. Called exactly once per request, always
 * from the event loop (never from inside agent_request).
 */
typedef void (*agent_cb)(int status, const char *body, size_t len,
	    const char *errmsg, void *arg);
/*
 * Told when a sandbox's agentd connects for the first time after
 * agent_listen or agent_reset, or after agentd was seen to go away (its
 * spare connection closed: it exited or was restarted).
 */
typedef void (*agent_ready_cb)(const char *sandbox_id, void *arg);

/* ready_cb may be NULL. */
struct agent_hub *agent_hub_new(struct event_base *, agent_ready_cb, void *);
/*
 * Only a connection whose hello carries the sandbox's token is agentd's
 * (agentd/agentd.h): the token is made from this key (TOKEN_KEY_LEN
 * bytes, the daemon's agentd-secret; random until set). Set it before
 * the first agent_listen. agent_token_env writes the container's env
 * entry "SANDBOXD_AGENTD_TOKEN=<64 hex>" (AGENT_TOKEN_ENV_SIZE bytes).
 */
#define AGENT_TOKEN_ENV_SIZE	96
void	 agent_hub_set_key(struct agent_hub *, const unsigned char *key);
void	 agent_token_env(struct agent_hub *, const char *sandbox_id,
	    char *out, size_t size);
/*
 * Requests running or queued at once, per sandbox and in all; one more
 * fails at once (status 0, errmsg says so: callers answer 503). 0: the
 * default.
 */
#define AGENT_MAX_REQUESTS	32
#define AGENT_MAX_REQUESTS_ALL	512
struct agent_limits {
	int	per_sandbox;
	int	total;
};
void	 agent_hub_set_limits(struct agent_hub *, const struct agent_limits *);
/* Requests running or queued: the sandbox's, or all (sandbox_id NULL). */
int	 agent_requests(struct agent_hub *, const char *sandbox_id);
/*
 * A streamed answer's reader cannot take more (1) / can again (0): the
 * connection is not read meanwhile, so agentd holds back too.
 */
void	 agent_pause(struct agent_req *, int pause);
/* Frees everything; callbacks of requests in flight are NOT called. */
void	 agent_hub_free(struct agent_hub *);
/*
 * Listen on dir/agentd.sock for this sandbox (dir exists, owned by root,
 * mounted read-only into the container at AGENTD_RUN_DIR). Idempotent.
 */
int	 agent_listen(struct agent_hub *, const char *sandbox_id,
	    const char *dir);
/*
 * Close the listener (removing the socket file) and every connection of
 * this sandbox. Its requests in flight fail with status 0: their callbacks
 * are called before agent_forget returns.
 */
void	 agent_forget(struct agent_hub *, const char *sandbox_id);
/* Drop idle connections after a stop, keep listening and queued requests. */
void	 agent_reset(struct agent_hub *, const char *sandbox_id);
/* 1 if agentd of this sandbox has a connection open to the hub. */
int	 agent_connected(struct agent_hub *, const char *sandbox_id);
/*
 * Send one HTTP request to the sandbox's agentd over a connection it opened.
 * Waits up to timeout_ms for agentd to connect if it has not yet, then up
 * to timeout_ms for the answer (timeout_ms <= 0: 30 s). body is copied.
 * An unknown sandbox fails with status 0.
 */
void	 agent_request(struct agent_hub *, const char *sandbox_id,
	    const char *method, const char *path, const char *body,
	    size_t len, int timeout_ms, agent_cb, void *arg);

/*
 * Streaming answers (close-delimited application/x-ndjson): agent_stream
 * sends a request like agent_request (with Accept: application/x-ndjson), then hands each line of a 2xx
 * answer to line_cb as it arrives (NUL-terminated, newline stripped),
 * and calls end_cb exactly once at the end: the status with body NULL
 * after agentd closed a 2xx stream, a non-2xx answer's status and body,
 * or status 0 and errmsg when no answer came. Callbacks always come from
 * the event loop. The handle is valid until end_cb, or until
 * agent_cancel (which calls nothing back, and may be called from
 * line_cb); closing the connection only stops agentd writing to it.
 */
struct agent_req;
typedef void (*agent_line_cb)(const char *line, size_t len, void *arg);
struct agent_req *agent_stream(struct agent_hub *, const char *sandbox_id,
	    const char *method, const char *path, const char *body,
	    size_t len, int timeout_ms, agent_line_cb line_cb,
	    agent_cb end_cb, void *arg);
void	 agent_cancel(struct agent_req *);
/*
 * GET path expecting 101 Switching Protocols (agentd's /terminal): up_cb
 * gets the connection, which is then the caller's (its callbacks unset,
 * reading disabled; bytes after the head wait in its input buffer). Any
 * other answer or no answer goes to fail_cb as for agent_request. Until
 * one is called, agent_cancel drops it.
 */
struct bufferevent;
typedef void (*agent_upgrade_cb)(struct bufferevent *, void *arg);
struct agent_req *agent_upgrade(struct agent_hub *, const char *sandbox_id,
	    const char *path, int timeout_ms, agent_upgrade_cb up_cb,
	    agent_cb fail_cb, void *arg);

/* control/files.c — workspace files, never outside the workspace */
/*
 * Every function takes the workspace directory's fd (O_PATH|O_DIRECTORY)
 * and a relative, already %-decoded path, and resolves it beneath the
 * workspace with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so
 * neither "..", an absolute path nor a symlink the sandbox planted can lead
 * outside. They return 0, or an errno value: EINVAL for a path refused
 * before any lookup (empty, absolute, "..", NUL, too long), EXDEV or ELOOP
 * for a lookup that tried to leave the workspace, ENOENT, EISDIR, ENOTDIR,
 * EFBIG, or another errno from the file system (EAGAIN: the sandbox swapped
 * the name while we looked, or holds a lease on it; ENAMETOOLONG: a tree
 * too deep to delete). They block on disk I/O (fsync included).
 * A NUL cannot be seen in a C string: the caller refuses a decoded path
 * holding one (http_url_decode does).
 */
/*
 * Check an API path without touching the disk (0 or EINVAL, *why set to a
 * reason, NULL on success). "" (the workspace) passes; files_put and
 * files_delete refuse it. "a//b", a trailing "/", "." and ".." components,
 * control characters, components over 255 bytes, paths over 4095 bytes and
 * more than 64 components are refused.
 */
int	files_check_path(const char *path, const char **why);
/*
 * The path of a files URL (what follows .../files/, %-encoded, len bytes;
 * NULL or empty for the workspace) as a checked path in *path (malloc'd):
 * decoded, one trailing "/" dropped, then files_check_path. 0, or EINVAL
 * with *why set ("" and any accepted path never start with "/" nor hold a
 * "." or ".." component).
 */
int	files_api_path(const char *rest, size_t len, char **path,
	    const char **why);
/*
 * Write data atomically (temporary file in the same directory, fsync,
 * rename), making missing parent directories; new files and directories
 * belong to uid:gid. *created is 1 if the file did not exist before.
 * data is not drained. A symlink at path is replaced, never written through.
 */
int	files_put(int wsfd, const char *path, struct evbuffer *data,
	    uid_t uid, gid_t gid, int *created);
/*
 * Read a path: a regular file gives *fd open for reading (caller closes,
 * *size set); a directory gives *listing, a malloc'd JSON text
 * {"entries":[{"name","type","size","mtime"}],"truncated":bool} (at most
 * 10,000 entries, the first by name) with type "file", "dir",
 * "symlink" or "other" (entries not followed; size 0 but for files) and
 * mtime RFC 3339. Path "" is the workspace itself. Symlinks that stay in
 * the workspace are followed. A FIFO, socket or device gives EINVAL.
 */
int	files_get(int wsfd, const char *path, int *fd, off_t *size,
	    char **listing);
/* Remove a file, a symlink (not its target) or a directory tree. */
int	files_delete(int wsfd, const char *path);
/*
 * For a forked worker. files_put_stream is files_put with the bytes read
 * from datafd until EOF; they are renamed into place only if commitfd then
 * gives a byte (else ECONNABORTED, nothing left behind); over max bytes,
 * EFBIG. files_send writes files_get's answer to outfd: a struct
 * files_head, then exactly head.size bytes (a file's, or a listing's JSON,
 * which holds at most 10,000 entries, the first by name, and "truncated").
 */
struct files_head {
	int32_t	error;		/* 0, or files_get's errno */
	int32_t	is_dir;		/* the bytes are a listing */
	int64_t	size;		/* bytes that follow */
};
int	files_put_stream(int wsfd, const char *path, int datafd, int commitfd,
	    off_t max, uid_t uid, gid_t gid, int *created);
int	files_send(int wsfd, const char *path, int outfd);

/* control/keys.c — API keys kept (hashed) in the store */
/*
 * Make a key for tenant ("sbx_<id>_<random>") and store its SHA-256.
 * Returns the secret (malloc'd; show it once, then free it) and fills
 * *row (free with store_apikey_clear); NULL with *cause on failure.
 */
char	*control_key_create(struct store *, const char *tenant,
	    struct store_apikey *row, char **cause);
/* 1 if secret has a store key's form; its key id is copied to id. */
int	 control_key_id(const char *secret, size_t len, char id[ID_LEN + 1]);

/* control/status.c — what "sandboxd status" shows of control */
struct control;
struct control_status_req;
/* The status object (the callee owns it: json_object_put when done). */
typedef void (*control_status_cb)(struct json_object *, void *arg);
/*
 * Ask for the status: the reconciler, sandboxes by state, held requests,
 * counters, sandboxes in error, and Docker's reachability and version
 * (asked now, 3 s at most). cb is called once from the event loop, unless
 * control_status_cancel is called first (the request is then freed when
 * Docker answers, or by control_free).
 */
struct control_status_req *control_status(struct control *,
	    control_status_cb, void *);
void	 control_status_cancel(struct control_status_req *);

/* control/control.c — what main and edge see */
struct control;

/*
 * Build control over an open store and a loaded config. Nothing is started
 * until control_start. Returns NULL with *cause on failure.
 */
struct control	*control_new(struct event_base *, const struct config *,
		    struct store *, char **cause);
/* Ensure the network, reconcile Docker with the store, follow events. */
int		 control_start(struct control *, char **cause);
void		 control_free(struct control *);

/*
 * control/wake.c — where a preview request goes. The edge asks for a
 * target per request; a running sandbox answers at once, a stopped or
 * paused one is woken and the request is held until its port accepts.
 */
enum control_target_kind {
	/* 0 is not routable: a target never filled in sends nowhere. */
	TARGET_UNKNOWN,		/* no such sandbox, being deleted, or a port
				   not in the template's ports: 404 page */
	TARGET_OK,		/* addr and generation are set: proxy there */
	TARGET_ERROR,		/* sandbox in error: 502 page */
	TARGET_UNAVAILABLE,	/* cannot be served now: 503 page + Retry-After */
};
struct control_target {
	enum control_target_kind kind;
	struct sockaddr_storage	 addr;
	socklen_t		 addrlen;
	/*
	 * Changes whenever the sandbox's container or address does (and
	 * whenever it stops being routable). Upstream connections made for
	 * one generation are never used for another.
	 */
	uint64_t		 generation;
	char			 sandbox_id[ID_LEN + 1];
	const char		*message;	/* static text for the pages */
	int			 retry_after_s;	/* UNAVAILABLE: Retry-After */
	/*
	 * UNAVAILABLE: 1 while the sandbox is still on its way up (a held
	 * request ran out of wake_timeout, too many are held): a warming
	 * page keeps waiting. 0 when it was refused (no room, low memory,
	 * a failed start): the page shows why.
	 */
	int			 waking;
};

/* A held lookup; owned by control, valid until its callback or cancel. */
struct control_wait;
/* The answer to a held lookup; t is valid during the call only. */
typedef void (*control_target_cb)(const struct control_target *t,
	    void *arg);
enum control_lookup {
	CONTROL_LOOKUP_DONE,	/* *t is filled in; cb will not be called */
	CONTROL_LOOKUP_HELD,	/* waking: cb is called later, exactly once */
};
/*
 * A lookup's port: the template's (0, its readiness awaited), another
 * (the sandbox running is enough), or none in particular: answered once
 * the sandbox runs, its dev server ready or not (a task needs agentd,
 * not the app; the address is the template port's).
 */
#define CONTROL_PORT_RUNNING	(-1)
/*
 * Where a preview request for sandbox id goes (port 0: the template's).
 * A port other than the sandbox's own that the template's ports do not
 * list is TARGET_UNKNOWN (with a message) before anything is woken.
 * A running sandbox, an unknown one, or one that cannot be woken now
 * (max_running full with nothing idle, low memory, too many held
 * requests) answers at once: CONTROL_LOOKUP_DONE with *t filled in, no
 * allocation on the running path. A stopped or paused sandbox is woken
 * (one start however many requests wait) and the lookup is held:
 * CONTROL_LOOKUP_HELD, *wait set; cb(t, arg) is called exactly once from
 * the event loop (never from inside this call) when the sandbox's port
 * accepts (TARGET_OK), or when it cannot (failed start, wake_timeout:
 * TARGET_UNAVAILABLE or TARGET_ERROR), unless control_wait_cancel(*wait)
 * came first. With cb NULL nothing is held: a lookup that would be is
 * answered TARGET_UNAVAILABLE (the sandbox is still woken).
 */
enum control_lookup control_target_lookup(struct control *,
	    const char *sandbox_id, int port, struct control_target *t,
	    control_target_cb cb, void *arg, struct control_wait **wait);
/* The client went away: drop a held lookup; its cb is never called. */
void	control_wait_cancel(struct control_wait *);

/*
 * Live traffic, for idleness (control/runtime.c). A sandbox with a request
 * in flight (an SSE stream is one) or an open tunnel (a WebSocket) is
 * busy; open client connections are counted but an idle keep-alive one
 * (a forgotten tab) keeps nothing awake. Every change is activity.
 * Counts for unknown sandboxes are ignored; delta is +1 or -1.
 */
enum control_activity {
	ACTIVITY_CONN,		/* a client connection bound to the sandbox */
	ACTIVITY_REQUEST,	/* a request being proxied to it */
	ACTIVITY_TUNNEL,	/* an upgraded (101) connection to it */
};
void	control_activity(struct control *, const char *sandbox_id,
	    enum control_activity, int delta);
/*
 * Told, synchronously, when a sandbox's address stops being valid: it is
 * being stopped, paused, deleted, or its container died. The edge closes
 * every upstream connection (pooled or in use) to that sandbox; the
 * requests on them end (and report their activity) before it returns.
 * One callback; cb NULL removes it.
 */
typedef void (*control_retire_cb)(const char *sandbox_id, void *arg);
void	control_set_retire_cb(struct control *, control_retire_cb, void *);

/*
 * GET /metrics: the edge appends its own families (requests, bytes,
 * connections) to the answer in Prometheus text format. Called in the
 * loop, synchronously; cb NULL removes it.
 */
typedef void (*control_metrics_cb)(struct evbuffer *, void *arg);
void	control_set_metrics_cb(struct control *, control_metrics_cb, void *);

/*
 * control/preview.c — private previews. Asked before control_target_lookup
 * so that a request without a valid token never wakes a sandbox.
 */
#define PREVIEW_TOKEN_PARAM	"sandboxd_token"	/* query and cookie */
#define PREVIEW_TTL_DEFAULT	3600			/* seconds */
#define PREVIEW_TTL_MIN		60
#define PREVIEW_TTL_MAX		(30 * 86400)
/* 1 if the sandbox is private (needs a token); 0 if public or unknown. */
int	control_preview_private(struct control *, const char *sandbox_id);
/*
 * 0 if tok[0..len) is a valid, unexpired preview token for this sandbox
 * (HMAC checked in constant time), with *expires its expiry in Unix
 * seconds; -1 otherwise (why is logged at debug, never shown).
 */
int	control_preview_verify(struct control *, const char *sandbox_id,
	    const char *tok, size_t len, int64_t *expires);

/* control/api.c */
/*
 * How much body an API request may send, from its head alone (413 above
 * it). 0: the answer is an error whatever the body holds (no route, no
 * valid key, a sandbox the caller cannot see): read no body, send no
 * 100 Continue, dispatch at once and close after the answer. A route
 * that takes its body as it comes (a file PUT) sets ex->body_streams:
 * edge dispatches it before the body (see http_exchange_body_take).
 */
uint64_t control_api_body_limit(struct control *, struct http_exchange *);
/* Handle one API request; answers through the exchange exactly once. */
void	 control_api_dispatch(struct control *, struct http_exchange *);

/* control/provider.c */
/*
 * SIGHUP: read every [provider]'s key_file again; a file that fails keeps
 * its old key (logged). 0, or -1 if one failed.
 */
int	provider_reload(struct control *);

#endif /* SBX_CONTROL_H */
