/*
 * The tasks table: agent runs inside a sandbox. A task row belongs to its
 * sandbox and is deleted with it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/common.h"
#include "store/store_int.h"

static int	store_task_row(sqlite3_stmt *, struct store_task *);

/* Insert a task; STORE_NOTFOUND if its sandbox does not exist. */
int
store_task_insert(struct store *s, const struct store_task *t)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_TASK_INSERT);
	const char	*state;
	int		 rc, ret;

	if (memchr(t->id, '\0', sizeof t->id) == NULL || t->id[0] == '\0' ||
	    memchr(t->sandbox_id, '\0', sizeof t->sandbox_id) == NULL) {
		log_warnx("store: insert task: bad id or sandbox id");
		return (-1);
	}
	if ((state = store_task_state_name(t->state)) == NULL) {
		log_warnx("store: insert task %s: bad state %d", t->id,
		    (int)t->state);
		return (-1);
	}

	store_bind_text(stmt, 1, t->id);
	store_bind_text(stmt, 2, t->sandbox_id);
	store_bind_text(stmt, 3, t->agent);
	store_bind_text(stmt, 4, t->spec_json != NULL ? t->spec_json : "{}");
	store_bind_text(stmt, 5, state);
	sqlite3_bind_int(stmt, 6, t->exit_code);
	sqlite3_bind_int64(stmt, 7, t->created_at);
	sqlite3_bind_int64(stmt, 8, t->started_at);
	sqlite3_bind_int64(stmt, 9, t->finished_at);
	store_bind_text(stmt, 10, t->error);
	store_bind_text(stmt, 11, t->summary_json);
	store_bind_text(stmt, 12, t->changed_json);
	store_bind_text(stmt, 13, t->checkpoint);
	sqlite3_bind_int(stmt, 14, t->timed_out);

	rc = store_step_write(s, stmt);
	if (rc == SQLITE_DONE)
		ret = 0;
	else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
		/* The sandbox is gone: a missing row, not a broken database. */
		log_warnx("store: insert task %s: no sandbox %s", t->id,
		    t->sandbox_id);
		ret = STORE_NOTFOUND;
	} else {
		store_warn(s, "insert task", t->id);
		ret = -1;
	}
	store_release(stmt);
	return (ret);
}

/* Fill *out from the current row (column order of STORE_TASK_COLUMNS). */
static int
store_task_row(sqlite3_stmt *stmt, struct store_task *out)
{
	const char	*text;

	memset(out, 0, sizeof *out);
	if (store_column_id(stmt, 0, out->id) != 0 ||
	    store_column_id(stmt, 1, out->sandbox_id) != 0)
		return (-1);
	out->agent = store_column_strdup(stmt, 2);
	out->spec_json = store_column_strdup(stmt, 3);
	text = (const char *)sqlite3_column_text(stmt, 4);
	/* The CHECK constraint makes this unreachable from our own writes. */
	if (store_task_state_parse(text, &out->state) != 0)
		out->state = TASK_FAILED;
	out->exit_code = sqlite3_column_int(stmt, 5);
	out->created_at = sqlite3_column_int64(stmt, 6);
	out->started_at = sqlite3_column_int64(stmt, 7);
	out->finished_at = sqlite3_column_int64(stmt, 8);
	out->error = store_column_strdup(stmt, 9);
	out->summary_json = store_column_strdup(stmt, 10);
	out->changed_json = store_column_strdup(stmt, 11);
	out->checkpoint = store_column_strdup(stmt, 12);
	out->timed_out = sqlite3_column_int(stmt, 13);
	if (out->agent == NULL)
		out->agent = xstrdup("");
	if (out->spec_json == NULL)
		out->spec_json = xstrdup("{}");
	return (0);
}

/* Read one task by id into *out (zeroed when absent). */
int
store_task_get(struct store *s, const char *id, struct store_task *out)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_TASK_GET);
	int		 rc, ret;

	memset(out, 0, sizeof *out);
	store_bind_text(stmt, 1, id);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		ret = store_task_row(stmt, out) == 0 ? 0 : -1;
	else if (rc == SQLITE_DONE)
		ret = STORE_NOTFOUND;
	else {
		store_warn(s, "get task", id);
		ret = -1;
	}
	store_release(stmt);
	return (ret);
}

/* One sandbox's tasks (or all, sandbox_id NULL), oldest first. */
int
store_task_list(struct store *s, const char *sandbox_id,
    struct store_task **out, size_t *n)
{
	sqlite3_stmt		*stmt;
	struct store_task	*rows = NULL;
	size_t			 nrows = 0, cap = 0;
	int			 rc;

	*out = NULL;
	*n = 0;
	if (sandbox_id == NULL)
		stmt = store_stmt(s, STORE_STMT_TASK_LIST_ALL);
	else {
		stmt = store_stmt(s, STORE_STMT_TASK_LIST_SANDBOX);
		store_bind_text(stmt, 1, sandbox_id);
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (nrows == cap) {
			cap = cap == 0 ? 8 : cap * 2;
			rows = xreallocarray(rows, cap, sizeof *rows);
		}
		if (store_task_row(stmt, &rows[nrows]) != 0) {
			store_task_clear(&rows[nrows]);
			log_warnx("store: list tasks: skipping a row with a "
			    "bad id");
			continue;
		}
		nrows++;
	}
	if (rc != SQLITE_DONE) {
		store_warn(s, "list tasks of sandbox", sandbox_id);
		store_release(stmt);
		store_task_list_free(rows, nrows);
		return (-1);
	}
	store_release(stmt);
	*out = rows;
	*n = nrows;
	return (0);
}

/* Free an array from store_task_list. */
void
store_task_list_free(struct store_task *rows, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		store_task_clear(&rows[i]);
	free(rows);
}

/* Free the strings a task owns and zero it. */
void
store_task_clear(struct store_task *t)
{
	free(t->agent);
	free(t->spec_json);
	free(t->error);
	free(t->summary_json);
	free(t->changed_json);
	free(t->checkpoint);
	memset(t, 0, sizeof *t);
}

/* Move a task to a state; see store.h for which times it sets. */
int
store_task_set_state(struct store *s, const char *id, enum task_state state,
    int exit_code, int64_t now_ms)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_TASK_SET_STATE);
	const char	*name = store_task_state_name(state);

	if (name == NULL) {
		log_warnx("store: set state of task %s: bad state %d", id,
		    (int)state);
		return (-1);
	}
	store_bind_text(stmt, 1, id);
	store_bind_text(stmt, 2, name);
	sqlite3_bind_int(stmt, 3, exit_code);
	sqlite3_bind_int64(stmt, 4, now_ms);
	return (store_step_change(s, stmt, "set state of task", id));
}

/* Finish a task with what it left. */
int
store_task_finish(struct store *s, const char *id, enum task_state state,
    int exit_code, int timed_out, const char *error, const char *summary_json,
    const char *changed_json, int64_t now_ms)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_TASK_FINISH);
	const char	*name = store_task_state_name(state);

	if (name == NULL || state == TASK_QUEUED || state == TASK_RUNNING) {
		log_warnx("store: finish task %s: bad state %d", id,
		    (int)state);
		store_release(stmt);
		return (-1);
	}
	store_bind_text(stmt, 1, id);
	store_bind_text(stmt, 2, name);
	sqlite3_bind_int(stmt, 3, exit_code);
	sqlite3_bind_int64(stmt, 4, now_ms);
	store_bind_text(stmt, 5, error);
	store_bind_text(stmt, 6, summary_json);
	store_bind_text(stmt, 7, changed_json);
	sqlite3_bind_int(stmt, 8, timed_out);
	return (store_step_change(s, stmt, "finish task", id));
}

/* Record the checkpoint sha agentd took before the task ran. */
int
store_task_set_checkpoint(struct store *s, const char *id, const char *sha)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_TASK_SET_CHECKPOINT);

	store_bind_text(stmt, 1, id);
	store_bind_text(stmt, 2, sha);
	return (store_step_change(s, stmt, "set checkpoint of task", id));
}
