/*
 * The api_keys table: keys made by "sandboxd key create", each kept as the
 * SHA-256 of its secret only. The key CLI writes here while the daemon
 * runs (WAL lets both in); the daemon reads a key on every API request
 * that presents one, so a revocation is seen by the next request.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/common.h"
#include "store/store_int.h"

static int	store_apikey_row(sqlite3_stmt *, struct store_apikey *);

/* Insert a key, recording its tenant first if it is new. */
int
store_apikey_insert(struct store *s, const struct store_apikey *k)
{
	sqlite3_stmt	*stmt;
	int		 rc;

	if (k->id[0] == '\0' || strlen(k->secret_hash) != 64 ||
	    k->tenant == NULL) {
		log_warnx("store: insert api key: bad id, tenant or hash");
		return (-1);
	}
	if (store_tenant_ensure(s, k->tenant) != 0)
		return (-1);
	stmt = store_stmt(s, STORE_STMT_APIKEY_INSERT);
	store_bind_text(stmt, 1, k->id);
	store_bind_text(stmt, 2, k->tenant);
	store_bind_text(stmt, 3, k->secret_hash);
	sqlite3_bind_int64(stmt, 4, k->created_at);
	rc = store_step_write(s, stmt);
	if (rc != SQLITE_DONE)
		store_warn(s, "insert api key", k->id);
	store_release(stmt);
	return (rc == SQLITE_DONE ? 0 : -1);
}

/* Fill *out from the current row (column order of STORE_APIKEY_COLUMNS). */
static int
store_apikey_row(sqlite3_stmt *stmt, struct store_apikey *out)
{
	const unsigned char	*hash;

	memset(out, 0, sizeof *out);
	if (store_column_id(stmt, 0, out->id) != 0)
		return (-1);
	hash = sqlite3_column_text(stmt, 2);
	if (hash == NULL || sqlite3_column_bytes(stmt, 2) != 64)
		return (-1);
	memcpy(out->secret_hash, hash, 64);
	out->secret_hash[64] = '\0';
	if ((out->tenant = store_column_strdup(stmt, 1)) == NULL)
		return (-1);
	out->created_at = sqlite3_column_int64(stmt, 3);
	out->last_used_at = sqlite3_column_int64(stmt, 4);
	out->revoked_at = sqlite3_column_int64(stmt, 5);
	return (0);
}

/* Read one key by id into *out (zeroed when absent). */
int
store_apikey_get(struct store *s, const char *id, struct store_apikey *out)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_APIKEY_GET);
	int		 rc, ret;

	memset(out, 0, sizeof *out);
	store_bind_text(stmt, 1, id);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		ret = store_apikey_row(stmt, out) == 0 ? 0 : -1;
		if (ret != 0)
			store_apikey_clear(out);
	} else if (rc == SQLITE_DONE)
		ret = STORE_NOTFOUND;
	else {
		store_warn(s, "get api key", id);
		ret = -1;
	}
	store_release(stmt);
	return (ret);
}

/* Every key, or one tenant's, oldest first. */
int
store_apikey_list(struct store *s, const char *tenant,
    struct store_apikey **out, size_t *n)
{
	sqlite3_stmt		*stmt;
	struct store_apikey	*rows = NULL;
	size_t			 nrows = 0, cap = 0;
	int			 rc;

	*out = NULL;
	*n = 0;
	if (tenant == NULL)
		stmt = store_stmt(s, STORE_STMT_APIKEY_LIST_ALL);
	else {
		stmt = store_stmt(s, STORE_STMT_APIKEY_LIST_TENANT);
		store_bind_text(stmt, 1, tenant);
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (nrows == cap) {
			cap = cap == 0 ? 8 : cap * 2;
			rows = xreallocarray(rows, cap, sizeof *rows);
		}
		if (store_apikey_row(stmt, &rows[nrows]) != 0) {
			store_apikey_clear(&rows[nrows]);
			log_warnx("store: list api keys: skipping a bad row");
			continue;
		}
		nrows++;
	}
	if (rc != SQLITE_DONE) {
		store_warn(s, "list api keys of", tenant);
		store_release(stmt);
		store_apikey_list_free(rows, nrows);
		return (-1);
	}
	store_release(stmt);
	*out = rows;
	*n = nrows;
	return (0);
}

/* Free an array from store_apikey_list. */
void
store_apikey_list_free(struct store_apikey *rows, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		store_apikey_clear(&rows[i]);
	free(rows);
}

/* Free what a key row owns and zero it. */
void
store_apikey_clear(struct store_apikey *k)
{
	free(k->tenant);
	memset(k, 0, sizeof *k);
}

/* Revoke one live key of the tenant, or all of them (id NULL). */
int
store_apikey_revoke(struct store *s, const char *tenant, const char *id,
    int64_t now_ms, int *count)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_APIKEY_REVOKE);
	int		 rc;

	*count = 0;
	store_bind_text(stmt, 1, tenant);
	store_bind_text(stmt, 2, id);
	sqlite3_bind_int64(stmt, 3, now_ms);
	rc = store_step_write(s, stmt);
	if (rc != SQLITE_DONE) {
		store_warn(s, "revoke api keys of", tenant);
		store_release(stmt);
		return (-1);
	}
	*count = sqlite3_changes(store_db(s));
	store_release(stmt);
	return (*count > 0 ? 0 : STORE_NOTFOUND);
}

/* Record that a key was used (the daemon does it at most once a minute). */
int
store_apikey_touch(struct store *s, const char *id, int64_t now_ms)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_APIKEY_TOUCH);

	store_bind_text(stmt, 1, id);
	sqlite3_bind_int64(stmt, 2, now_ms);
	return (store_step_change(s, stmt, "touch api key", id));
}
