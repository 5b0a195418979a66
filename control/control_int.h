/*
 * control/ internals shared by control.c, api.c, lifecycle.c and
 * reconcile.c. Not for edge/ or main.
 */
#ifndef SBX_CONTROL_INT_H
#define SBX_CONTROL_INT_H

#include <sys/queue.h>

#include <netinet/in.h>

#include "control/control.h"

struct event;
struct json_object;

#define SANDBOX_UID	1000
#define SANDBOX_GID	1000
#define RT_BUCKETS	1024

/*
 * What the daemon keeps in memory about a sandbox beside its store row:
 * where it answers and what is in flight. Made on demand, dropped on delete.
 */
struct sandbox_rt {
	char			 id[ID_LEN + 1];
	struct in_addr		 ip;		/* on the network, if has_ip */
	int			 has_ip;
	int			 port;		/* the template's, cached */
	int			 conns;		/* live preview connections */
	int64_t			 last_active_ms;	/* monotonic */
	struct lifecycle_op	*op;		/* the operation in flight */
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

struct control {
	struct event_base	*base;
	const struct config	*cf;
	struct store		*store;
	struct docker		*docker;
	struct agent_hub	*hub;

	char			*workspaces_dir;	/* data_dir/workspaces */
	char			*homes_dir;		/* data_dir/homes */
	char			*run_dir;		/* data_dir/run */
	char			*tasks_dir;		/* data_dir/tasks */

	/* The keys that may call the API: the config's, or one generated. */
	struct cfg_api_key	*keys;
	size_t			 nkeys;
	struct cfg_api_key	 generated_key;

	struct sandbox_rt_list	 rts[RT_BUCKETS];
	struct control_child_list children;
	struct event		*sigchld;

	int			 docker_ok;	/* the last Docker call got an answer */
	int			 reconciled;	/* a reconcile has succeeded */
	int			 syncing;	/* network + reconcile under way */
	int			 sync_again;	/* another was asked for meanwhile */
	int			 sync_backoff_ms;
	struct event		*sync_retry;
	control_retire_cb	 retire_cb;	/* the edge's, see control.h */
	void			*retire_arg;
	uint64_t		 requests_total;
	uint64_t		 requests_failed;
};

/* control/control.c */
struct sandbox_rt *control_rt(struct control *, const char *id, int create);
void	 control_rt_drop(struct control *, const char *id);
char	*control_sandbox_dir(struct control *, const char *which,
	    const char *id);
const struct cfg_template *control_template(struct control *,
	    const char *name);
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
int	 lifecycle_busy(struct control *, const char *id);
/* Docker told us a container of ours died or vanished. */
void	 lifecycle_container_event(struct control *, const char *id,
	    const char *container_id, const char *action);
/* The JSON body of POST /containers/create for this sandbox. */
struct json_object *lifecycle_container_spec(struct control *,
	    const struct store_sandbox *);

/* control/reconcile.c */
/* Make Docker match the store; done is called once at the end. */
void	 reconcile_run(struct control *, void (*done)(struct control *,
	    int ok));

#endif /* SBX_CONTROL_INT_H */
