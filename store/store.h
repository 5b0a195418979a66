/*
 * store/ — the SQLite store, the source of truth for sandboxes, tenants and
 * tasks. It knows SQLite and nothing else: no Docker, no JSON library, no
 * event loop. Every state change goes through here first; control then makes
 * Docker follow.
 *
 * The database is one file in WAL mode, opened by one process; every
 * statement is prepared once at open. Functions return 0 on success, -1 on a
 * database error (logged), and STORE_NOTFOUND where a row is missing.
 */
#ifndef SBX_STORE_H
#define SBX_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_NOTFOUND	1
#define STORE_ID_LEN	26
/* The schema version this binary migrates to (PRAGMA user_version). */
#define STORE_SCHEMA_VERSION	5

struct store;

enum sandbox_state {
	SANDBOX_CREATING,
	SANDBOX_RUNNING,
	SANDBOX_STOPPING,
	SANDBOX_STOPPED,
	SANDBOX_STARTING,
	SANDBOX_DELETING,
	SANDBOX_ERROR,
	/* Frozen with docker pause. Appended so the values above keep theirs. */
	SANDBOX_PAUSED,
};

enum sandbox_visibility { SANDBOX_PUBLIC, SANDBOX_PRIVATE };

/* One row of the sandboxes table. Strings are owned by the struct. */
struct store_sandbox {
	char			 id[STORE_ID_LEN + 1];
	char			*tenant;
	char			*template_name;
	enum sandbox_state	 state;
	int			 port;
	enum sandbox_visibility	 visibility;
	int			 memory_mb;
	double			 cpus;
	int			 idle_timeout_s;
	int			 pause_timeout_s;	/* 0: never pause */
	char			*env_json;	/* JSON object text, "{}" if none */
	char			*labels_json;	/* JSON object text, "{}" if none */
	char			*container_id;	/* Docker's id, NULL if none */
	char			*error;		/* last error text, NULL if none */
	int64_t			 created_at;	/* ms since epoch */
	int64_t			 last_active_at;
};

enum task_state {
	TASK_QUEUED,
	TASK_RUNNING,
	TASK_SUCCEEDED,
	TASK_FAILED,
	TASK_CANCELLED,
};

struct store_task {
	char			 id[STORE_ID_LEN + 1];
	char			 sandbox_id[STORE_ID_LEN + 1];
	char			*agent;		/* "opencode", "claude-code", "command" */
	char			*spec_json;	/* the request body as given */
	enum task_state		 state;
	int			 exit_code;	/* valid once finished; -1 before */
	int64_t			 created_at;
	int64_t			 started_at;	/* 0 if not yet */
	int64_t			 finished_at;	/* 0 if not yet */
	/* set as it finishes (schema 3); NULL when none */
	char			*error;		/* why it failed, for a person */
	char			*summary_json;	/* the agent's summary object */
	char			*changed_json;	/* array of changed file paths */
	char			*checkpoint;	/* git sha revert goes back to */
	int			 timed_out;
};

/* One row of api_keys: a key made by "sandboxd key create". */
struct store_apikey {
	char		 id[STORE_ID_LEN + 1];
	char		*tenant;
	char		 secret_hash[65];	/* SHA-256 of the secret, hex */
	int64_t		 created_at;		/* ms since epoch */
	int64_t		 last_used_at;		/* 0: never */
	int64_t		 revoked_at;		/* 0: live */
};

/* store/store.c */
/*
 * Open (creating if needed) the database at path, set WAL mode, run the
 * schema migrations up to the current PRAGMA user_version. Returns NULL and
 * a malloc'd *cause on failure.
 */
struct store	*store_open(const char *path, char **cause);
void		 store_close(struct store *);
/* Schema version the open database is at (PRAGMA user_version). */
int		 store_schema_version(struct store *);
/* A cheap query that proves the database answers; 0 if it does. */
int		 store_ping(struct store *);
/* Online, consistent copy to dest with the SQLite backup API. */
int		 store_backup(struct store *, const char *dest, char **cause);
/* The latency of the store's writes, for /metrics; owned by the store. */
struct hist;
const struct hist *store_write_latency(struct store *);
const char	*store_sandbox_state_name(enum sandbox_state);
int		 store_sandbox_state_parse(const char *, enum sandbox_state *);
const char	*store_task_state_name(enum task_state);
int		 store_task_state_parse(const char *, enum task_state *);

/* store/sandbox.c */
/* Insert a new row; s->id must be set and unique. */
int	store_sandbox_insert(struct store *, const struct store_sandbox *);
/* Fill *out (caller frees with store_sandbox_clear). STORE_NOTFOUND if absent. */
int	store_sandbox_get(struct store *, const char *id, struct store_sandbox *);
/*
 * All sandboxes (tenant NULL) or one tenant's, oldest first. *out is a
 * malloc'd array of *n rows; free with store_sandbox_list_free.
 */
int	store_sandbox_list(struct store *, const char *tenant,
	    struct store_sandbox **out, size_t *n);
void	store_sandbox_list_free(struct store_sandbox *, size_t);
void	store_sandbox_clear(struct store_sandbox *);
/* Set state and error text (NULL clears it). */
int	store_sandbox_set_state(struct store *, const char *id,
	    enum sandbox_state, const char *error);
/* Record the Docker container id (NULL clears it). */
int	store_sandbox_set_container(struct store *, const char *id,
	    const char *container_id);
int	store_sandbox_touch(struct store *, const char *id, int64_t now_ms);
int	store_sandbox_delete(struct store *, const char *id);
/* Count all rows, or rows in one state (state < 0: all). */
int	store_sandbox_count(struct store *, int state, int *out);
/* Count one tenant's rows. */
int	store_sandbox_count_tenant(struct store *, const char *tenant, int *out);

/* store/tenant.c */
/* Record a tenant (from an [api_key] section) if new. */
int	store_tenant_ensure(struct store *, const char *name);
int	store_tenant_exists(struct store *, const char *name);	/* 1, 0, -1 */

/* store/apikey.c */
/* Insert a new key (its tenant is recorded if new); id must be unique. */
int	store_apikey_insert(struct store *, const struct store_apikey *);
/* Fill *out (free with store_apikey_clear); STORE_NOTFOUND if absent. */
int	store_apikey_get(struct store *, const char *id, struct store_apikey *);
/* Every key (tenant NULL) or one tenant's; free with store_apikey_list_free. */
int	store_apikey_list(struct store *, const char *tenant,
	    struct store_apikey **out, size_t *n);
void	store_apikey_list_free(struct store_apikey *, size_t);
void	store_apikey_clear(struct store_apikey *);
/*
 * Revoke one live key of tenant (id NULL: all of them) at now_ms; *count
 * is how many were revoked (0 gives STORE_NOTFOUND).
 */
int	store_apikey_revoke(struct store *, const char *tenant, const char *id,
	    int64_t now_ms, int *count);
int	store_apikey_touch(struct store *, const char *id, int64_t now_ms);

/* store/task.c */
/* Insert a new task; STORE_NOTFOUND if its sandbox does not exist. */
int	store_task_insert(struct store *, const struct store_task *);
int	store_task_get(struct store *, const char *id, struct store_task *);
/*
 * One sandbox's tasks (sandbox_id NULL: all tasks), oldest first; free with
 * store_task_list_free.
 */
int	store_task_list(struct store *, const char *sandbox_id,
	    struct store_task **out, size_t *n);
void	store_task_list_free(struct store_task *, size_t);
void	store_task_clear(struct store_task *);
/*
 * Move a task to a state at now_ms: "running" sets started_at (once), a
 * finished state sets finished_at and exit_code (ignored otherwise).
 */
int	store_task_set_state(struct store *, const char *id, enum task_state,
	    int exit_code, int64_t now_ms);
/*
 * Finish a task: its state, exit code, finished_at = now_ms and what it
 * left (error, summary, changed files: NULL for none).
 */
int	store_task_finish(struct store *, const char *id, enum task_state,
	    int exit_code, int timed_out, const char *error,
	    const char *summary_json, const char *changed_json, int64_t now_ms);
int	store_task_set_checkpoint(struct store *, const char *id,
	    const char *sha);

/* store/usage.c */
/* What one sandbox used through one [provider]. */
struct store_usage {
	char		 provider[65];
	int64_t		 requests;
	int64_t		 input_tokens;
	int64_t		 output_tokens;
};
/*
 * Add one proxied exchange's counts to the sandbox's row for provider;
 * STORE_NOTFOUND if the sandbox is gone (deleted meanwhile).
 */
int	store_usage_add(struct store *, const char *sandbox_id,
	    const char *provider, int64_t requests, int64_t input_tokens,
	    int64_t output_tokens);
/* A sandbox's rows, by provider name; free *out. */
int	store_usage_list(struct store *, const char *sandbox_id,
	    struct store_usage **out, size_t *n);

#endif /* SBX_STORE_H */
