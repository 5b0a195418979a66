/*
 * control/ internals shared by control.c, api.c, lifecycle.c and
 * reconcile.c. Not for edge/ or main.
 */
#ifndef SBX_CONTROL_INT_H
#define SBX_CONTROL_INT_H

#include <sys/queue.h>

#include <netinet/in.h>

#include "control/control.h"

/* How long /healthz answers from the last Docker ping. */
#define HEALTHZ_CACHE_MS	1000

struct event;
struct json_object;

#define SANDBOX_UID	1000
#define SANDBOX_GID	1000
#define RT_BUCKETS	1024

/* A held preview lookup (control.h), on its sandbox's waiter list. */
struct control_wait {
	TAILQ_ENTRY(control_wait) entry;
	struct control		*ctl;
	struct sandbox_rt	*rt;
	int			 port;		/* 0: the template's */
	control_target_cb	 cb;
	void			*arg;
	struct event		*timer;		/* wake_timeout, or the answer */
	int64_t			 deadline_ms;	/* monotonic */
};
TAILQ_HEAD(control_wait_list, control_wait);

/*
 * Whether the template's port accepts yet, for the generation the sandbox
 * runs with now. Requests are held until it is READY (or the probe gave
 * up: then they go through and meet whatever the app does).
 */
enum rt_port {
	RT_PORT_UNKNOWN,	/* not running, or no probe asked for yet */
	RT_PORT_PROBING,	/* agentd is waiting for the port to accept */
	RT_PORT_READY,		/* accepted, or probe ended: route requests */
};

/*
 * The one owner of a sandbox's runtime facts (control/runtime.c): its
 * state as the store has it, the operation in flight, its address and
 * generation, live traffic and the requests held for it. Only runtime.c
 * writes state, address and generation, through rt_set_state and
 * rt_set_running; every other file reads them or asks.
 */
struct sandbox_rt {
	struct control		*ctl;
	char			 id[ID_LEN + 1];
	char			*tenant;
	enum sandbox_state	 state;		/* mirrors the store row */
	struct lifecycle_op	*op;		/* in flight; refines state */
	struct in_addr		 ip;		/* while RUNNING or PAUSED */
	uint64_t		 generation;	/* 0 when not routable */
	enum rt_port		 port_state;
	int			 port;		/* the template's */
	int			 dev_command;	/* the template runs one */
	int			 private;	/* visibility private: tokens only */
	const struct cfg_template *tmpl;	/* NULL: gone from the config */
	int64_t			 memory_bytes;	/* its ceiling (memory_mb) */
	int64_t			 idle_timeout_ms;	/* 0: never */
	int64_t			 pause_timeout_ms;	/* 0: never */

	/* live traffic (control_activity) and the hooks for tasks */
	int			 conns;
	int			 requests;
	int			 tunnels;
	int			 holds;		/* tasks, terminals */

	/* agentd's GET /dev, cached for the sandbox object (dev.c) */
	char			 dev_state[16];	/* "": unknown */
	int			 dev_restarts;
	int64_t			 dev_fetched_ms;	/* monotonic */
	struct agent_req	*dev_req;	/* a refresh under way */
	int64_t			 last_active_ms;	/* monotonic */
	int64_t			 last_active_wall;	/* ms since epoch */
	int64_t			 stored_active_wall;	/* last written */
	struct event		*idle_ev;	/* reaper.c */

	struct control_wait_list waiters;
	int			 nwaiters;
	const char		*why;		/* static: why the last wake failed */
	int64_t			 wake_started_ms;	/* a wake under way, or 0 */
	/*
	 * Booting: from a start until a moment after its port accepts, the
	 * sandbox's memory ceiling counts as used (what it will take is not
	 * visible to MemAvailable yet). 0: not reserving; INT64_MAX: until
	 * the port accepts.
	 */
	int64_t			 reserve_until_ms;
	int			 recheck;	/* Docker events mid-op (lifecycle.c) */
	int			 disk_over;	/* stopped for its disk (disk.c) */
	uint64_t		 op_seq;	/* ctl->op_seq at its last op */
	LIST_ENTRY(sandbox_rt)	 entry;
};
LIST_HEAD(sandbox_rt_list, sandbox_rt);

/* A child process the daemon waits for without blocking (seeding). */
typedef void (*control_child_cb)(int status, void *arg);
struct control_child {
	pid_t			 pid;
	control_child_cb	 cb;
	void			*arg;
	LIST_ENTRY(control_child) entry;
};
LIST_HEAD(control_child_list, control_child);

/* control/task.c's objects, listed on struct control. */
struct task;
struct task_follower;
struct task_call;
TAILQ_HEAD(task_list, task);
TAILQ_HEAD(task_follower_list, task_follower);
LIST_HEAD(dev_call_list, dev_call);
LIST_HEAD(task_call_list, task_call);

struct control {
	struct event_base	*base;
	const struct config	*cf;
	struct store		*store;
	struct docker		*docker;
	struct agent_hub	*hub;
	struct egress		*egress;	/* egress.c */
	struct disk		*disk;		/* disk.c */
	struct provider		*provider;	/* provider.c */

	char			*workspaces_dir;	/* data_dir/workspaces */
	char			*homes_dir;		/* data_dir/homes */
	char			*run_dir;		/* data_dir/run */
	char			*tasks_dir;		/* data_dir/tasks */

	/* The keys that may call the API: the config's, or one generated. */
	struct cfg_api_key	*keys;
	size_t			 nkeys;
	struct cfg_api_key	 generated_key;
	uint8_t			 preview_key[TOKEN_KEY_LEN];	/* signs tokens */

	struct sandbox_rt_list	 rts[RT_BUCKETS];
	struct control_child_list children;
	LIST_HEAD(, wake_probe)	 probes;	/* port probes in flight */
	struct event		*sigchld;

	int			 docker_ok;	/* the last Docker call got an answer */
	/* /healthz: the last Docker ping's time and its error ("": fine). */
	int64_t			 health_ms;
	char			 health_err[128];
	int			 reconciled;	/* a reconcile has succeeded */
	int			 syncing;	/* network + reconcile under way */
	int			 sync_again;	/* another was asked for meanwhile */
	int			 sync_backoff_ms;
	struct event		*sync_retry;
	uint64_t		 next_generation;
	uint64_t		 op_seq;	/* bumped as each op begins and ends */
	int			 nactive;	/* creating, starting, running, paused */
	int			 nwaiters;	/* held lookups, all sandboxes */
	uint64_t		 wakes_total;
	uint64_t		 evictions_total;
	uint64_t		 refusals_total;
	uint64_t		 idle_stops_total;
	uint64_t		 idle_pauses_total;
	uint64_t		 disk_stops_total;
	struct hist		 wake_hist;	/* wake.c: to the app's port */
	uint64_t		 tasks_finished_total[TASK_CANCELLED + 1];
	uint64_t		 task_events_total;	/* task.c */
	uint64_t		 creates_total;		/* lifecycle.c */
	uint64_t		 starts_total;
	uint64_t		 unpauses_total;
	int64_t			 started_ms;	/* wall clock, for uptime */
	control_retire_cb	 retire_cb;	/* the edge's, see control.h */
	void			*retire_arg;
	control_metrics_cb	 metrics_cb;	/* the edge's, see control.h */
	void			*metrics_arg;
	uint64_t		 requests_total;
	uint64_t		 requests_failed;

	struct task_list	 tasks;		/* queued and running */
	struct task_follower_list followers;	/* event streams */
	LIST_HEAD(, reconcile)	 reconciles;	/* reconcile.c, in flight */
	struct task_call_list	 task_calls;	/* agentd calls in flight */
	struct dev_call_list	 dev_calls;	/* dev.c: logs, restarts */
	LIST_HEAD(, execstream)	 execstreams;	/* execstream.c */
	LIST_HEAD(, control_status_req) status_reqs;	/* status.c */
	LIST_HEAD(, file_job)	 file_jobs;	/* api.c: forked file work */
	int			 nfile_jobs;
};

/* control/control.c */
char	*control_sandbox_dir(struct control *, const char *which,
	    const char *id);
const struct cfg_template *control_template(struct control *,
	    const char *name);
/* The [api_key] section of a tenant, NULL if it has none any more. */
const struct cfg_api_key *control_tenant_key(struct control *,
	    const char *tenant);
/* Run fn(arg) in a forked child; cb gets its wait status. -1: no fork. */
int	 control_fork(struct control *, int (*)(void *), void *,
	    control_child_cb, void *);
/* Run argv in a child; cb gets its wait status. -1 if fork failed. */
int	 control_spawn(struct control *, char *const argv[],
	    control_child_cb, void *);
/* Render a sandbox row as the API's JSON object (caller puts it). */
struct json_object *control_sandbox_json(struct control *,
	    const struct store_sandbox *);
/* The container's IPv4 address on our network, from an inspect answer. */
int	 control_container_ip(struct control *, struct json_object *,
	    struct in_addr *);
/* %-encode everything but unreserved characters (malloc'd). */
char	*control_url_encode(const char *);
/* Docker may have done what we did not see: reconcile again soon. */
void	 control_resync(struct control *);

/* control/api.c */
/* Free the file jobs still running (control_free; their exits unheard). */
void	 api_file_jobs_free_all(struct control *);

/* control/status.c */
/* Free the status requests still waiting for Docker. */
void	 control_status_free_all(struct control *);

/* control/keys.c */
/*
 * 1 if secret (whose SHA-256 hex is hash) is a live store key; *k gets
 * its tenant's policy, k->name pointing into tenant[tenantlen].
 */
int	 control_key_lookup(struct control *, const char *secret, size_t len,
	    const char *hash, struct cfg_api_key *k, char *tenant,
	    size_t tenantlen);

/* control/runtime.c */
/* The sandbox's runtime, loaded from its store row if need be; NULL if
 * the store has no such sandbox. */
struct sandbox_rt *rt_get(struct control *, const char *id);
/* The runtime if it is in memory already, else NULL. */
struct sandbox_rt *rt_find(struct control *, const char *id);
/* Forget a deleted sandbox: held requests get UNKNOWN. */
void	 rt_drop(struct control *, struct sandbox_rt *);
void	 rt_free_all(struct control *);
/*
 * Move a sandbox to a state, store first: 0, or -1 if the transition
 * table forbids it (logged, nothing changed) or the store failed.
 * Leaving RUNNING retires its address (the edge drops its upstreams).
 */
int	 rt_set_state(struct control *, struct sandbox_rt *,
	    enum sandbox_state, const char *error);
/* 1 if the transition table allows the move (rt_set_state may still fail
 * to write the store). */
int	 rt_may(const struct sandbox_rt *, enum sandbox_state);
/* RUNNING at this address, with a new generation. port_ready: skip the
 * probe (a container found running at boot). */
int	 rt_set_running(struct control *, struct sandbox_rt *,
	    struct in_addr, int port_ready);
/* A container the reconciler found up (paused or not): take it as is. */
int	 rt_adopt(struct control *, struct sandbox_rt *, struct in_addr,
	    int paused);
/* Stop routing to the sandbox now (before a stop, pause or delete). */
void	 rt_retire(struct control *, struct sandbox_rt *);
/* 1 if anything keeps the sandbox awake now. */
int	 rt_busy(const struct sandbox_rt *);
/* A task or terminal keeps it awake: +1 as it begins, -1 as it ends. */
void	 rt_hold(struct control *, const char *id, int delta);
/* Count its memory ceiling as used until it has booted (reaper.c). */
void	 rt_reserve(struct sandbox_rt *);
/* Its port accepts: the reservation ends shortly (the app settles). */
void	 rt_reserve_settle(struct sandbox_rt *);
/* Memory reserved by sandboxes still booting, bytes. */
int64_t	 rt_reserved(struct control *);
/* Note activity now (monotonic and wall clock). */
void	 rt_touch(struct sandbox_rt *);
/* Write last_active_at to the store if it moved. */
void	 rt_store_activity(struct control *, struct sandbox_rt *);
/* A lifecycle operation on it began or ended (lifecycle.c calls these). */
void	 rt_op_begin(struct control *, struct sandbox_rt *,
	    struct lifecycle_op *);
void	 rt_op_end(struct control *, struct sandbox_rt *, int failed);
/* Count against max_running: creating, starting, running or paused. */
int	 rt_state_active(enum sandbox_state);

/* control/wake.c */
/*
 * Give every held request of the sandbox its answer (from the loop), or
 * wake it again for them; rewake 0 after a failed wake.
 */
void	 wake_release(struct control *, struct sandbox_rt *, int rewake);
/* The sandbox runs with a new generation: wait for its port. */
void	 wake_probe(struct control *, struct sandbox_rt *);
/* At exit, after agent_hub_free (which calls no callback): the probes. */
void	 wake_free_all(struct control *);

/* control/disk.c */
/* The start of the error a sandbox stopped for its disk carries. */
#define DISK_ERROR_PREFIX	"disk ceiling exceeded"
/* Bytes each sandbox uses (workspace + home); -1: could not measure. */
typedef void (*disk_measured_cb)(struct control *, size_t n,
	    char (*ids)[ID_LEN + 1], const int64_t *used, void *arg);
void	 disk_init(struct control *);
void	 disk_free(struct control *);
int	 disk_error_is(const char *);
/* Measure one sandbox off the loop; -1 if no child could be made. */
int	 disk_measure(struct control *, const char *id, disk_measured_cb,
	    void *);
/* It fits again: may start, its error goes. -1 if it was not held. */
int	 disk_clear(struct control *, struct sandbox_rt *);

/* control/reaper.c */
/*
 * Room to start or wake one more sandbox (rt, or a new one of tenant when
 * rt is NULL): below the tenant's max_running and the global one, or after
 * stopping the one idle the longest (the tenant's own for its ceiling);
 * and enough free memory. 0, or -1 with *why (static text) when refused.
 */
int	 reaper_admit(struct control *, struct sandbox_rt *, const char *tenant,
	    const char **why);
/* (Re)arm the idle timer for the sandbox's state. */
void	 reaper_arm(struct control *, struct sandbox_rt *);
/* Host memory available to start sandboxes, bytes; -1 if unknown. */
int64_t	 reaper_mem_available(int64_t *total);

/* control/lifecycle.c */
/*
 * Lifecycle operations. Each runs asynchronously, serialised per sandbox
 * (one op at a time: a second one gets -1 and *busy set), and calls done
 * once with 0 or -1 plus an HTTP-ish status and message for the API.
 */
typedef void (*lifecycle_cb)(struct control *, const char *id, int status,
	    const char *message, void *arg);
int	 lifecycle_create(struct control *, const struct store_sandbox *,
	    lifecycle_cb, void *arg);
int	 lifecycle_start(struct control *, const char *id, lifecycle_cb,
	    void *arg);
int	 lifecycle_stop(struct control *, const char *id, lifecycle_cb,
	    void *arg);
int	 lifecycle_delete(struct control *, const char *id, lifecycle_cb,
	    void *arg);
/* Freeze a running sandbox (docker pause); its memory stays. */
int	 lifecycle_pause(struct control *, const char *id, lifecycle_cb,
	    void *arg);
/* Unfreeze a paused sandbox. */
int	 lifecycle_unpause(struct control *, const char *id, lifecycle_cb,
	    void *arg);
int	 lifecycle_busy(struct control *, const char *id);
/* 1 if the operation in flight brings it up (create, start, unpause). */
int	 lifecycle_waking(const struct sandbox_rt *);
/* Docker told us a container of ours started, died or vanished. */
void	 lifecycle_container_event(struct control *, const char *id,
	    const char *container_id, const char *action);
/* Ask Docker what the container is now; the sandbox follows. */
void	 lifecycle_recheck(struct control *, struct sandbox_rt *);
/* The JSON body of POST /containers/create for this sandbox. */
struct json_object *lifecycle_container_spec(struct control *,
	    const struct store_sandbox *);

/* control/task.c — agent tasks: the queue, the relay, the event log */
/*
 * The API's task routes; api.c has checked the caller, the sandbox and
 * the body. spec is the request without env (what the store keeps);
 * env (NULL: none) goes to agentd only. Each answers exactly once.
 */
void	 task_create(struct control *, struct http_exchange *,
	    const char *sandbox_id, struct json_object *spec,
	    struct json_object *env);
void	 task_list(struct control *, struct http_exchange *,
	    const char *sandbox_id);
void	 task_get(struct control *, struct http_exchange *,
	    const char *sandbox_id, const char *tid);
void	 task_cancel(struct control *, struct http_exchange *,
	    const char *sandbox_id, const char *tid);
void	 task_revert(struct control *, struct http_exchange *,
	    const char *sandbox_id, const char *tid);
/* A text/event-stream of the task's events with ids above after. */
void	 task_events(struct control *, struct http_exchange *,
	    const char *sandbox_id, const char *tid, uint64_t after);
/* After the first reconcile: pick up or fail what the last run left. */
void	 task_startup(struct control *);
/* The sandbox moves to this state (runtime.c): stopping ends its tasks. */
void	 task_sandbox_state(struct control *, const char *sandbox_id,
	    enum sandbox_state);
/* The sandbox is deleted: forget its tasks, end its event streams. */
void	 task_sandbox_gone(struct control *, const char *sandbox_id);
/* At exit, before the hub goes: frees everything, calls nothing back. */
void	 task_free_all(struct control *);
/* Tasks queued or running, and event streams open (for /metrics). */
void	 task_counts(struct control *, int *tasks, int *streams);
/* Append the task families of GET /metrics. */
void	 task_metrics(struct control *, struct evbuffer *);
/*
 * One line of agentd's event stream as the host log keeps it: 0 with
 * *seq, *event (static), *data (malloc'd, a JSON text without a
 * newline) and, for an exit event, *exitp (the caller puts it); 1 for a
 * type not relayed; -1 if malformed. (A fuzz target's subject.)
 */
int	 task_event_convert(const char *line, size_t len, uint64_t *seq,
	    const char **event, char **data, struct json_object **exitp);
/* control/dev.c — the dev server's logs, restart and state */
/* GET .../logs (follow: SSE); 409 unless the sandbox runs. */
void	 dev_logs(struct control *, struct http_exchange *,
	    const char *sandbox_id, int follow);
/* POST .../restart-dev; 409 unless the sandbox runs. */
void	 dev_restart(struct control *, struct http_exchange *,
	    const char *sandbox_id);
/* control/terminal.c: GET .../terminal, a WebSocket to agentd's PTY. */
void	 term_open(struct control *, struct http_exchange *,
	    const char *sandbox_id);
/* A client text message {"resize":[cols,rows]} (1..1000 each): 0, else -1. */
int	 term_resize_parse(const uint8_t *, size_t, unsigned int *,
	    unsigned int *);
/* {"state","restarts"} from the runtime's cache, or NULL; refreshes it. */
struct json_object *dev_server_json(struct control *, const char *id);
/* The runtime is freed or stops running: cancel its refresh. */
void	 dev_rt_gone(struct sandbox_rt *);
/* At exit, before the hub goes: frees everything, calls nothing back. */
void	 dev_free_all(struct control *);
/* control/execstream.c — POST .../exec with Accept: text/event-stream */
/*
 * Relay agentd's streaming exec (body: the checked request) as SSE
 * output and exit events; the client leaving kills the command.
 */
void	 execstream_begin(struct control *, struct http_exchange *,
	    const char *sandbox_id, const char *body, int timeout_ms);
/*
 * The JSON form of exec over the same stream: at most 1 MiB of each of
 * stdout and stderr kept (the rest read and dropped, truncated true).
 */
void	 execstream_collect(struct control *, struct http_exchange *,
	    const char *sandbox_id, const char *body, int timeout_ms);
/* At exit, before the hub goes: frees everything, calls nothing back. */
void	 execstream_free_all(struct control *);
/* control/preview.c */
/* Load (or make, at first start) preview_secret_file. */
int	 preview_key_load(struct control *, char **cause);
/* Load (or make) a TOKEN_KEY_LEN-byte secret file, mode 0600. */
int	 control_secret_load(const char *path, const char *what,
	    const char *lost, uint8_t *key, char **cause);
/* A token for id valid ttl_s seconds; *expires in Unix seconds. */
int	 preview_token_make(struct control *, const char *id, int64_t ttl_s,
	    char *out, size_t size, int64_t *expires);

/* control/egress.c */
struct egress;
/* Set up ctl->egress (finds nft); nothing is loaded yet. */
void	 egress_init(struct control *);
/*
 * Load the rules for this bridge (NULL: unknown, the rules fail), off the
 * loop; done (may be NULL) is called once it is in force or has failed.
 */
void	 egress_apply(struct control *, const char *bridge,
	    void (*done)(struct control *));
/* 0 if sandboxes may start; -1 and *why (static) while not enforced. */
int	 egress_admit(struct control *, const char **why);
/* 1 while the rules are in force. */
int	 egress_enforced(struct control *);
/* {"mode","enforced","table","bridge","error"} for /healthz. */
struct json_object *egress_json(struct control *);
/* At exit: delete the table (blocks, bounded) and free the state. */
void	 egress_free(struct control *);
/* The bridge interface of a network, from Docker's inspect answer. */
int	 egress_bridge_name(struct json_object *, char *, size_t);
/* The IPv4 gateway of a network, from Docker's inspect answer; 0 or -1. */
int	 egress_gateway(struct json_object *, struct in_addr *);
/*
 * The ruleset text for one bridge (malloc'd); dns: the resolvers; proxy:
 * the credential proxy's address on the bridge (NULL: none), accepted at
 * provider_port only.
 */
char	*egress_ruleset(const struct config *, const char *table,
	    const char *bridge, const struct cfg_cidr *dns, size_t ndns,
	    const char *proxy);

/* control/provider.c */
struct provider;
#define PROVIDER_SCAN_KEY	24	/* the longest JSON key kept */
/* Where the usage scanner is in the JSON text (see provider_scan). */
enum provider_scan_state {
	PSCAN_OUT,		/* between tokens */
	PSCAN_STRING,		/* in a string */
	PSCAN_ESCAPE,		/* after a backslash in a string */
	PSCAN_AFTER_STRING,	/* a string ended: a key if ':' follows */
	PSCAN_COLON,		/* after "key": */
	PSCAN_NUMBER,		/* digits of a counted key's value */
};

struct provider_scan {
	enum provider_scan_state state;
	char			 key[PROVIDER_SCAN_KEY + 1];
	size_t			 klen;	/* > PROVIDER_SCAN_KEY: too long */
	int			 counted;	/* 1 input, 2 output, 0 other */
	int64_t			 value;
	int64_t			 input;		/* the largest seen */
	int64_t			 output;
};
/*
 * Count the usage fields in the next len bytes of an answer's body (JSON,
 * or server-sent events of JSON), in pieces of any size: the result does
 * not depend on where the pieces are cut. s starts zeroed.
 */
void	 provider_scan(struct provider_scan *, const char *, size_t);
/* The body ended: take a number it ended in. */
void	 provider_scan_end(struct provider_scan *);
struct evbuffer;
/* Read the key_files, make the TLS contexts; NULL and *cause on error. */
struct provider *provider_new(struct control *, char **cause);
void	 provider_free(struct provider *);
/* Listen on the bridge's gateway (again if it changed); 0, or -1 logged. */
int	 provider_listen(struct control *, const struct in_addr *gateway);
/* The address the proxy listens on; -1 while it does not. */
int	 provider_address(struct control *, struct in_addr *, int *port);
/*
 * A new container's provider env lines, each given to add(arg, line);
 * user: the user's env (NULL: none), whose names it never repeats.
 */
void	 provider_env(struct control *, const char *id,
	    struct json_object *user, void (*add)(void *, const char *),
	    void *arg);
/*
 * A task's env for agentd (new object; caller puts it): user's, plus the
 * provider env and, for agent "opencode", OPENCODE_CONFIG_CONTENT aimed
 * at the proxy. The user's names win.
 */
struct json_object *provider_task_env(struct control *, const char *id,
	    const char *agent, struct json_object *user);
/* {"requests","input_tokens","output_tokens","providers":{...}}. */
struct json_object *provider_usage_json(struct control *, const char *id);
/* {"listen","providers"} for /healthz; NULL without a [provider]. */
struct json_object *provider_health_json(struct control *);
/* The proxy's families of GET /metrics. */
void	 provider_metrics(struct control *, struct evbuffer *);

/*
 * control/api.c's body checks, one per route with a JSON body (the
 * handlers call them; tests/fuzz/fuzz_api_body.c drives them): each
 * parses and checks the exchange's body, and answers 400 and returns -1
 * when it is refused. Nothing is stored or sent. create: *s is the
 * sandbox asked for (id made, tenant unset; its env_json and labels_json
 * point into *req, which the caller puts) and *t its template; exec: *req
 * the body for agentd and *timeout_s; task: *req the spec (env taken
 * out, timeout_s filled in) and *env (NULL: none); preview: *ttl_s;
 * no_fields: an empty body or {} only.
 */
struct store_sandbox;
int	 api_create_parse(struct control *, struct http_exchange *,
	    struct json_object **req, struct store_sandbox *s,
	    const struct cfg_template **t);
int	 api_exec_parse(struct http_exchange *, struct json_object **req,
	    int64_t *timeout_s);
int	 api_task_parse(struct control *, struct http_exchange *,
	    struct json_object **req, struct json_object **env);
int	 api_preview_parse(struct http_exchange *, int64_t *ttl_s);
int	 api_no_fields(struct http_exchange *);

/* control/reconcile.c */
/* Make Docker match the store; done is called once at the end. */
void	 reconcile_run(struct control *, void (*done)(struct control *,
	    int ok));
/* At exit: the reconciliations still waiting for Docker. */
void	 reconcile_free_all(struct control *);

#endif /* SBX_CONTROL_INT_H */
