/*
 * store/ internals: the statements store_open prepares, shared by the
 * table files. Not for use outside store/.
 */
#ifndef SBX_STORE_INT_H
#define SBX_STORE_INT_H

#include "store/store.h"

struct sqlite3_stmt;
enum store_stmt_id {
	STORE_STMT_PING,
	STORE_STMT_USER_VERSION,
	STORE_STMT_SANDBOX_INSERT,
	STORE_STMT_SANDBOX_GET,
	STORE_STMT_SANDBOX_LIST_ALL,
	STORE_STMT_SANDBOX_LIST_TENANT,
	STORE_STMT_SANDBOX_SET_STATE,
	STORE_STMT_SANDBOX_SET_CONTAINER,
	STORE_STMT_SANDBOX_TOUCH,
	STORE_STMT_SANDBOX_DELETE,
	STORE_STMT_SANDBOX_COUNT_ALL,
	STORE_STMT_SANDBOX_COUNT_STATE,
	STORE_STMT_SANDBOX_COUNT_TENANT,
	STORE_STMT_TENANT_ENSURE,
	STORE_STMT_TENANT_EXISTS,
	STORE_STMT_APIKEY_INSERT,
	STORE_STMT_APIKEY_GET,
	STORE_STMT_APIKEY_LIST_ALL,
	STORE_STMT_APIKEY_LIST_TENANT,
	STORE_STMT_APIKEY_REVOKE,
	STORE_STMT_APIKEY_TOUCH,
	STORE_STMT_USAGE_ADD,
	STORE_STMT_USAGE_LIST,
	STORE_STMT_TASK_INSERT,
	STORE_STMT_TASK_GET,
	STORE_STMT_TASK_LIST_ALL,
	STORE_STMT_TASK_LIST_SANDBOX,
	STORE_STMT_TASK_SET_STATE,
	STORE_STMT_TASK_FINISH,
	STORE_STMT_TASK_SET_CHECKPOINT,
	STORE_NSTMTS
};
/* The prepared statement, ready to bind; give it back with store_release. */
struct sqlite3_stmt *store_stmt(struct store *, enum store_stmt_id);
struct sqlite3;
/* The store's connection (sqlite3_changes and such). */
struct sqlite3 *store_db(struct store *);
/* Reset a statement and clear its bindings so it holds no lock or data. */
void	store_release(struct sqlite3_stmt *);
/* Log the connection's last error for what ("insert sandbox ID"). */
void	store_warn(struct store *, const char *what, const char *id);
/* Bind text, NULL as SQL NULL; the text must outlive the statement's step. */
int	store_bind_text(struct sqlite3_stmt *, int, const char *);
/* A malloc'd copy of a text column, NULL for SQL NULL. */
char	*store_column_strdup(struct sqlite3_stmt *, int);
/* Copy a text column into an id buffer; -1 if it does not fit. */
int	store_column_id(struct sqlite3_stmt *, int, char[STORE_ID_LEN + 1]);
/*
 * Step an UPDATE or DELETE bound on its row id, then release it: 0 if a row
 * changed, STORE_NOTFOUND if none did, -1 on error (logged with what).
 */
int	store_step_change(struct store *, struct sqlite3_stmt *,
	    const char *what, const char *id);
/* sqlite3_step of a write, its time counted in store_write_latency. */
int	store_step_write(struct store *, struct sqlite3_stmt *);

#endif /* SBX_STORE_INT_H */
