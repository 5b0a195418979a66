/*
 * The sandboxes table: one row per sandbox, the source of truth that control
 * makes Docker follow.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/common.h"
#include "store/store_int.h"

static int	store_sandbox_row(sqlite3_stmt *, struct store_sandbox *);
static const char *store_visibility_name(enum sandbox_visibility);
static int	store_sandbox_count_step(struct store *, sqlite3_stmt *, int *);

/* The text stored for a visibility, NULL if out of range. */
static const char *
store_visibility_name(enum sandbox_visibility v)
{
	switch (v) {
	case SANDBOX_PUBLIC:
		return ("public");
	case SANDBOX_PRIVATE:
		return ("private");
	}
	return (NULL);
}

/* Insert a new sandbox row; -1 (logged) on a duplicate id or a bad value. */
int
store_sandbox_insert(struct store *s, const struct store_sandbox *sb)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_SANDBOX_INSERT);
	const char	*state, *vis;
	int		 rc;

	if (memchr(sb->id, '\0', sizeof sb->id) == NULL || sb->id[0] == '\0') {
		log_warnx("store: insert sandbox: no id");
		return (-1);
	}
	state = store_sandbox_state_name(sb->state);
	vis = store_visibility_name(sb->visibility);
	if (state == NULL || vis == NULL) {
		log_warnx("store: insert sandbox %s: bad state or visibility",
		    sb->id);
		return (-1);
	}

	store_bind_text(stmt, 1, sb->id);
	store_bind_text(stmt, 2, sb->tenant);
	store_bind_text(stmt, 3, sb->template_name);
	store_bind_text(stmt, 4, state);
	sqlite3_bind_int(stmt, 5, sb->port);
	store_bind_text(stmt, 6, vis);
	sqlite3_bind_int(stmt, 7, sb->memory_mb);
	sqlite3_bind_double(stmt, 8, sb->cpus);
	sqlite3_bind_int(stmt, 9, sb->idle_timeout_s);
	sqlite3_bind_int(stmt, 10, sb->pause_timeout_s);
	store_bind_text(stmt, 11, sb->env_json != NULL ? sb->env_json : "{}");
	store_bind_text(stmt, 12,
	    sb->labels_json != NULL ? sb->labels_json : "{}");
	store_bind_text(stmt, 13, sb->container_id);
	store_bind_text(stmt, 14, sb->error);
	sqlite3_bind_int64(stmt, 15, sb->created_at);
	sqlite3_bind_int64(stmt, 16, sb->last_active_at);

	rc = store_step_write(s, stmt);
	if (rc != SQLITE_DONE)
		store_warn(s, "insert sandbox", sb->id);
	store_release(stmt);
	return (rc == SQLITE_DONE ? 0 : -1);
}

/*
 * Fill *out from the current row (column order of STORE_SANDBOX_COLUMNS).
 * The CHECK constraints keep state and visibility valid; a row written by
 * something else that breaks them reads as an error state, not a crash.
 */
static int
store_sandbox_row(sqlite3_stmt *stmt, struct store_sandbox *out)
{
	const char	*text;

	memset(out, 0, sizeof *out);
	if (store_column_id(stmt, 0, out->id) != 0)
		return (-1);
	out->tenant = store_column_strdup(stmt, 1);
	out->template_name = store_column_strdup(stmt, 2);
	text = (const char *)sqlite3_column_text(stmt, 3);
	if (store_sandbox_state_parse(text, &out->state) != 0)
		out->state = SANDBOX_ERROR;
	out->port = sqlite3_column_int(stmt, 4);
	text = (const char *)sqlite3_column_text(stmt, 5);
	if (text != NULL && strcmp(text, "public") == 0)
		out->visibility = SANDBOX_PUBLIC;
	else
		out->visibility = SANDBOX_PRIVATE;	/* the safe default */
	out->memory_mb = sqlite3_column_int(stmt, 6);
	out->cpus = sqlite3_column_double(stmt, 7);
	out->idle_timeout_s = sqlite3_column_int(stmt, 8);
	out->pause_timeout_s = sqlite3_column_int(stmt, 9);
	out->env_json = store_column_strdup(stmt, 10);
	out->labels_json = store_column_strdup(stmt, 11);
	out->container_id = store_column_strdup(stmt, 12);
	out->error = store_column_strdup(stmt, 13);
	out->created_at = sqlite3_column_int64(stmt, 14);
	out->last_active_at = sqlite3_column_int64(stmt, 15);

	/* Callers may rely on these being set, as the header promises. */
	if (out->tenant == NULL)
		out->tenant = xstrdup("");
	if (out->template_name == NULL)
		out->template_name = xstrdup("");
	if (out->env_json == NULL)
		out->env_json = xstrdup("{}");
	if (out->labels_json == NULL)
		out->labels_json = xstrdup("{}");
	return (0);
}

/* Read one sandbox by id into *out (zeroed when absent). */
int
store_sandbox_get(struct store *s, const char *id, struct store_sandbox *out)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_SANDBOX_GET);
	int		 rc, ret;

	memset(out, 0, sizeof *out);
	store_bind_text(stmt, 1, id);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		ret = store_sandbox_row(stmt, out) == 0 ? 0 : -1;
	else if (rc == SQLITE_DONE)
		ret = STORE_NOTFOUND;
	else {
		store_warn(s, "get sandbox", id);
		ret = -1;
	}
	store_release(stmt);
	return (ret);
}

/* All sandboxes, or one tenant's, oldest first, as a malloc'd array. */
int
store_sandbox_list(struct store *s, const char *tenant,
    struct store_sandbox **out, size_t *n)
{
	sqlite3_stmt		*stmt;
	struct store_sandbox	*rows = NULL;
	size_t			 nrows = 0, cap = 0;
	int			 rc;

	*out = NULL;
	*n = 0;
	if (tenant == NULL)
		stmt = store_stmt(s, STORE_STMT_SANDBOX_LIST_ALL);
	else {
		stmt = store_stmt(s, STORE_STMT_SANDBOX_LIST_TENANT);
		store_bind_text(stmt, 1, tenant);
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (nrows == cap) {
			cap = cap == 0 ? 16 : cap * 2;
			rows = xreallocarray(rows, cap, sizeof *rows);
		}
		if (store_sandbox_row(stmt, &rows[nrows]) != 0) {
			store_sandbox_clear(&rows[nrows]);
			log_warnx("store: list sandboxes: skipping a row with "
			    "a bad id");
			continue;
		}
		nrows++;
	}
	if (rc != SQLITE_DONE) {
		store_warn(s, "list sandboxes", tenant);
		store_release(stmt);
		store_sandbox_list_free(rows, nrows);
		return (-1);
	}
	store_release(stmt);
	*out = rows;
	*n = nrows;
	return (0);
}

/* Free an array from store_sandbox_list. */
void
store_sandbox_list_free(struct store_sandbox *rows, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		store_sandbox_clear(&rows[i]);
	free(rows);
}

/* Free the strings a row owns and zero it. */
void
store_sandbox_clear(struct store_sandbox *sb)
{
	free(sb->tenant);
	free(sb->template_name);
	free(sb->env_json);
	free(sb->labels_json);
	free(sb->container_id);
	free(sb->error);
	memset(sb, 0, sizeof *sb);
}

/* Set a sandbox's state and its error text (NULL clears it). */
int
store_sandbox_set_state(struct store *s, const char *id,
    enum sandbox_state state, const char *error)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_SANDBOX_SET_STATE);
	const char	*name = store_sandbox_state_name(state);

	if (name == NULL) {
		log_warnx("store: set state of sandbox %s: bad state %d", id,
		    (int)state);
		return (-1);
	}
	store_bind_text(stmt, 1, id);
	store_bind_text(stmt, 2, name);
	store_bind_text(stmt, 3, error);
	return (store_step_change(s, stmt, "set state of sandbox", id));
}

/* Record the Docker container id of a sandbox (NULL clears it). */
int
store_sandbox_set_container(struct store *s, const char *id,
    const char *container_id)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_SANDBOX_SET_CONTAINER);

	store_bind_text(stmt, 1, id);
	store_bind_text(stmt, 2, container_id);
	return (store_step_change(s, stmt, "set container of sandbox", id));
}

/* Record that a sandbox was in use at now_ms. */
int
store_sandbox_touch(struct store *s, const char *id, int64_t now_ms)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_SANDBOX_TOUCH);

	store_bind_text(stmt, 1, id);
	sqlite3_bind_int64(stmt, 2, now_ms);
	return (store_step_change(s, stmt, "touch sandbox", id));
}

/* Delete a sandbox row; its tasks go with it (ON DELETE CASCADE). */
int
store_sandbox_delete(struct store *s, const char *id)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_SANDBOX_DELETE);

	store_bind_text(stmt, 1, id);
	return (store_step_change(s, stmt, "delete sandbox", id));
}

/* Count all sandboxes (state < 0) or those in one state. */
int
store_sandbox_count(struct store *s, int state, int *out)
{
	sqlite3_stmt	*stmt;
	const char	*name;

	*out = 0;
	if (state < 0)
		stmt = store_stmt(s, STORE_STMT_SANDBOX_COUNT_ALL);
	else {
		if ((name = store_sandbox_state_name(state)) == NULL) {
			log_warnx("store: count sandboxes: bad state %d", state);
			return (-1);
		}
		stmt = store_stmt(s, STORE_STMT_SANDBOX_COUNT_STATE);
		store_bind_text(stmt, 1, name);
	}
	return (store_sandbox_count_step(s, stmt, out));
}

/* Count one tenant's rows. */
int
store_sandbox_count_tenant(struct store *s, const char *tenant, int *out)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_SANDBOX_COUNT_TENANT);

	*out = 0;
	store_bind_text(stmt, 1, tenant);
	return (store_sandbox_count_step(s, stmt, out));
}

/* Run a count(*) statement into *out. */
static int
store_sandbox_count_step(struct store *s, sqlite3_stmt *stmt, int *out)
{
	int	rc;

	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int(stmt, 0);
	else
		store_warn(s, "count sandboxes", NULL);
	store_release(stmt);
	return (rc == SQLITE_ROW ? 0 : -1);
}
