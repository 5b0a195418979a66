/*
 * The store's connection: open, pragmas, schema migrations, the prepared
 * statements every table file uses, backup.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/common.h"
#include "store/store_int.h"

struct store {
	sqlite3		*db;
	char		*path;
	sqlite3_stmt	*stmts[STORE_NSTMTS];
	struct hist	 write_hist;	/* store_step_write, for /metrics */
};

static int	store_pragmas(struct store *, char **);
static int	store_foreign_keys(struct store *, int, char **);
static int	store_migrate(struct store *, char **);
static int	store_migrate_fk_check(struct store *, int, char **);
static int	store_prepare(struct store *, char **);
static int	store_read_user_version(sqlite3 *, int *);

/*
 * The schema, one script per version: migrations[i] takes the database from
 * user_version i to i + 1. Append new scripts; never edit a shipped one.
 */
static const char *store_migrations[] = {
	/* 1: the initial schema. */
	"CREATE TABLE tenants ("
	"  name        TEXT PRIMARY KEY NOT NULL CHECK (length(name) > 0),"
	"  created_at  INTEGER NOT NULL"
	");"
	"CREATE TABLE sandboxes ("
	"  id             TEXT PRIMARY KEY NOT NULL"
	"                   CHECK (length(id) BETWEEN 1 AND 26),"
	"  tenant         TEXT NOT NULL,"
	"  template       TEXT NOT NULL,"
	"  state          TEXT NOT NULL CHECK (state IN ('creating', 'running',"
	"                   'stopping', 'stopped', 'starting', 'deleting',"
	"                   'error')),"
	"  port           INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),"
	"  visibility     TEXT NOT NULL"
	"                   CHECK (visibility IN ('public', 'private')),"
	"  memory_mb      INTEGER NOT NULL CHECK (memory_mb >= 0),"
	"  cpus           REAL NOT NULL CHECK (cpus >= 0),"
	"  idle_timeout_s INTEGER NOT NULL CHECK (idle_timeout_s >= 0),"
	"  env_json       TEXT NOT NULL DEFAULT '{}',"
	"  labels_json    TEXT NOT NULL DEFAULT '{}',"
	"  container_id   TEXT,"
	"  error          TEXT,"
	"  created_at     INTEGER NOT NULL,"
	"  last_active_at INTEGER NOT NULL"
	");"
	"CREATE INDEX sandboxes_tenant ON sandboxes (tenant, created_at, id);"
	"CREATE INDEX sandboxes_state ON sandboxes (state);"
	"CREATE INDEX sandboxes_created ON sandboxes (created_at, id);"
	"CREATE TABLE tasks ("
	"  id          TEXT PRIMARY KEY NOT NULL"
	"                CHECK (length(id) BETWEEN 1 AND 26),"
	"  sandbox_id  TEXT NOT NULL"
	"                REFERENCES sandboxes (id) ON DELETE CASCADE,"
	"  agent       TEXT NOT NULL,"
	"  spec_json   TEXT NOT NULL DEFAULT '{}',"
	"  state       TEXT NOT NULL CHECK (state IN ('queued', 'running',"
	"                'succeeded', 'failed', 'cancelled')),"
	"  exit_code   INTEGER NOT NULL DEFAULT -1,"
	"  created_at  INTEGER NOT NULL,"
	"  started_at  INTEGER NOT NULL DEFAULT 0,"
	"  finished_at INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE INDEX tasks_sandbox_id ON tasks (sandbox_id, created_at, id);",

	/*
	 * 2: state 'paused' and pause_timeout_s. A CHECK constraint cannot
	 * be altered, so the table is rebuilt as lang_altertable.html
	 * ("Making Other Kinds Of Table Schema Changes") says: new table,
	 * copy, drop, rename the new one to the old name, indexes again.
	 * store_migrate runs this with foreign_keys off, or the DROP would
	 * cascade into tasks, and checks the foreign keys before COMMIT.
	 * Never rename the old table away first: that would rewrite
	 * tasks.sandbox_id to reference the renamed table. The column
	 * lists are spelled out, not STORE_SANDBOX_COLUMNS: this script
	 * must not change when the current columns do.
	 */
	"CREATE TABLE sandboxes_new ("
	"  id              TEXT PRIMARY KEY NOT NULL"
	"                    CHECK (length(id) BETWEEN 1 AND 26),"
	"  tenant          TEXT NOT NULL,"
	"  template        TEXT NOT NULL,"
	"  state           TEXT NOT NULL CHECK (state IN ('creating', 'running',"
	"                    'paused', 'stopping', 'stopped', 'starting',"
	"                    'deleting', 'error')),"
	"  port            INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),"
	"  visibility      TEXT NOT NULL"
	"                    CHECK (visibility IN ('public', 'private')),"
	"  memory_mb       INTEGER NOT NULL CHECK (memory_mb >= 0),"
	"  cpus            REAL NOT NULL CHECK (cpus >= 0),"
	"  idle_timeout_s  INTEGER NOT NULL CHECK (idle_timeout_s >= 0),"
	"  pause_timeout_s INTEGER NOT NULL DEFAULT 0"
	"                    CHECK (pause_timeout_s >= 0),"
	"  env_json        TEXT NOT NULL DEFAULT '{}',"
	"  labels_json     TEXT NOT NULL DEFAULT '{}',"
	"  container_id    TEXT,"
	"  error           TEXT,"
	"  created_at      INTEGER NOT NULL,"
	"  last_active_at  INTEGER NOT NULL"
	");"
	"INSERT INTO sandboxes_new (id, tenant, template, state, port,"
	"  visibility, memory_mb, cpus, idle_timeout_s, env_json, labels_json,"
	"  container_id, error, created_at, last_active_at)"
	"  SELECT id, tenant, template, state, port, visibility, memory_mb,"
	"  cpus, idle_timeout_s, env_json, labels_json, container_id, error,"
	"  created_at, last_active_at FROM sandboxes;"
	"DROP TABLE sandboxes;"
	"ALTER TABLE sandboxes_new RENAME TO sandboxes;"
	"CREATE INDEX sandboxes_tenant ON sandboxes (tenant, created_at, id);"
	"CREATE INDEX sandboxes_state ON sandboxes (state);"
	"CREATE INDEX sandboxes_created ON sandboxes (created_at, id);",

	/*
	 * 3: API keys made by "sandboxd key create", kept as the SHA-256 of
	 * the secret only. A revoked key keeps its row (revoked_at set) so
	 * "key list" can show it; auth never accepts it again.
	 */
	"CREATE TABLE api_keys ("
	"  id           TEXT PRIMARY KEY NOT NULL"
	"                 CHECK (length(id) BETWEEN 1 AND 26),"
	"  tenant       TEXT NOT NULL REFERENCES tenants (name),"
	"  secret_hash  TEXT NOT NULL UNIQUE CHECK (length(secret_hash) = 64),"
	"  created_at   INTEGER NOT NULL,"
	"  last_used_at INTEGER NOT NULL DEFAULT 0,"
	"  revoked_at   INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at, id);",

	/*
	 * 4: what a finished task leaves (issue 8): why it failed, the
	 * agent's summary, the files it changed, the checkpoint revert
	 * goes back to, and whether it ran out of time. Plain added
	 * columns: no CHECK changes, no rebuild.
	 */
	"ALTER TABLE tasks ADD COLUMN error TEXT;"
	"ALTER TABLE tasks ADD COLUMN summary_json TEXT;"
	"ALTER TABLE tasks ADD COLUMN changed_files_json TEXT;"
	"ALTER TABLE tasks ADD COLUMN checkpoint TEXT;"
	"ALTER TABLE tasks ADD COLUMN timed_out INTEGER NOT NULL DEFAULT 0;",

	/*
	 * 5: what each sandbox used through the credential proxy, per
	 * [provider] (issue 10): requests and the tokens the provider's
	 * usage fields counted. Goes with its sandbox.
	 */
	"CREATE TABLE usage ("
	"  sandbox_id    TEXT NOT NULL"
	"                  REFERENCES sandboxes (id) ON DELETE CASCADE,"
	"  provider      TEXT NOT NULL CHECK (length(provider) > 0),"
	"  requests      INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),"
	"  input_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),"
	"  output_tokens INTEGER NOT NULL DEFAULT 0"
	"                  CHECK (output_tokens >= 0),"
	"  PRIMARY KEY (sandbox_id, provider)"
	");",
};
_Static_assert(nitems(store_migrations) == STORE_SCHEMA_VERSION,
    "STORE_SCHEMA_VERSION must equal the number of migrations");

#define STORE_SANDBOX_COLUMNS						\
	"id, tenant, template, state, port, visibility, memory_mb, cpus, "	\
	"idle_timeout_s, pause_timeout_s, env_json, labels_json, "	\
	"container_id, error, created_at, last_active_at"
#define STORE_APIKEY_COLUMNS						\
	"id, tenant, secret_hash, created_at, last_used_at, revoked_at"
#define STORE_TASK_COLUMNS						\
	"id, sandbox_id, agent, spec_json, state, exit_code, created_at, "	\
	"started_at, finished_at, error, summary_json, changed_files_json, "	\
	"checkpoint, timed_out"

/*
 * Every statement the store runs, prepared once at open. Column order of the
 * SELECTs is what store_sandbox_row and store_task_row read.
 */
static const char *store_sql[STORE_NSTMTS] = {
	[STORE_STMT_PING] = "SELECT count(*) FROM sqlite_master",
	[STORE_STMT_USER_VERSION] = "PRAGMA user_version",

	[STORE_STMT_SANDBOX_INSERT] =
	    "INSERT INTO sandboxes (" STORE_SANDBOX_COLUMNS ") VALUES "
	    "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
	    "?16)",
	[STORE_STMT_SANDBOX_GET] =
	    "SELECT " STORE_SANDBOX_COLUMNS " FROM sandboxes WHERE id = ?1",
	[STORE_STMT_SANDBOX_LIST_ALL] =
	    "SELECT " STORE_SANDBOX_COLUMNS " FROM sandboxes "
	    "ORDER BY created_at, id",
	[STORE_STMT_SANDBOX_LIST_TENANT] =
	    "SELECT " STORE_SANDBOX_COLUMNS " FROM sandboxes WHERE tenant = ?1 "
	    "ORDER BY created_at, id",
	[STORE_STMT_SANDBOX_SET_STATE] =
	    "UPDATE sandboxes SET state = ?2, error = ?3 WHERE id = ?1",
	[STORE_STMT_SANDBOX_SET_CONTAINER] =
	    "UPDATE sandboxes SET container_id = ?2 WHERE id = ?1",
	[STORE_STMT_SANDBOX_TOUCH] =
	    "UPDATE sandboxes SET last_active_at = ?2 WHERE id = ?1",
	[STORE_STMT_SANDBOX_DELETE] = "DELETE FROM sandboxes WHERE id = ?1",
	[STORE_STMT_SANDBOX_COUNT_ALL] = "SELECT count(*) FROM sandboxes",
	[STORE_STMT_SANDBOX_COUNT_STATE] =
	    "SELECT count(*) FROM sandboxes WHERE state = ?1",
	[STORE_STMT_SANDBOX_COUNT_TENANT] =
	    "SELECT count(*) FROM sandboxes WHERE tenant = ?1",

	/* ON CONFLICT, not OR IGNORE: that would also swallow CHECK failures. */
	[STORE_STMT_TENANT_ENSURE] =
	    "INSERT INTO tenants (name, created_at) VALUES (?1, ?2) "
	    "ON CONFLICT (name) DO NOTHING",
	[STORE_STMT_TENANT_EXISTS] = "SELECT 1 FROM tenants WHERE name = ?1",

	[STORE_STMT_APIKEY_INSERT] =
	    "INSERT INTO api_keys (" STORE_APIKEY_COLUMNS ") VALUES "
	    "(?1, ?2, ?3, ?4, 0, 0)",
	[STORE_STMT_APIKEY_GET] =
	    "SELECT " STORE_APIKEY_COLUMNS " FROM api_keys WHERE id = ?1",
	[STORE_STMT_APIKEY_LIST_ALL] =
	    "SELECT " STORE_APIKEY_COLUMNS " FROM api_keys "
	    "ORDER BY tenant, created_at, id",
	[STORE_STMT_APIKEY_LIST_TENANT] =
	    "SELECT " STORE_APIKEY_COLUMNS " FROM api_keys WHERE tenant = ?1 "
	    "ORDER BY created_at, id",
	/* ?2 NULL: every live key of the tenant. */
	[STORE_STMT_APIKEY_REVOKE] =
	    "UPDATE api_keys SET revoked_at = ?3 WHERE tenant = ?1 AND "
	    "(?2 IS NULL OR id = ?2) AND revoked_at = 0",
	[STORE_STMT_APIKEY_TOUCH] =
	    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",

	/* ON CONFLICT adds to the row: one write per proxied request. */
	[STORE_STMT_USAGE_ADD] =
	    "INSERT INTO usage (sandbox_id, provider, requests, input_tokens, "
	    "output_tokens) VALUES (?1, ?2, ?3, ?4, ?5) "
	    "ON CONFLICT (sandbox_id, provider) DO UPDATE SET "
	    "requests = requests + excluded.requests, "
	    "input_tokens = input_tokens + excluded.input_tokens, "
	    "output_tokens = output_tokens + excluded.output_tokens",
	[STORE_STMT_USAGE_LIST] =
	    "SELECT provider, requests, input_tokens, output_tokens FROM usage "
	    "WHERE sandbox_id = ?1 ORDER BY provider",

	[STORE_STMT_TASK_INSERT] =
	    "INSERT INTO tasks (" STORE_TASK_COLUMNS ") VALUES "
	    "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
	[STORE_STMT_TASK_GET] =
	    "SELECT " STORE_TASK_COLUMNS " FROM tasks WHERE id = ?1",
	[STORE_STMT_TASK_LIST_ALL] =
	    "SELECT " STORE_TASK_COLUMNS " FROM tasks ORDER BY created_at, id",
	[STORE_STMT_TASK_LIST_SANDBOX] =
	    "SELECT " STORE_TASK_COLUMNS " FROM tasks WHERE sandbox_id = ?1 "
	    "ORDER BY created_at, id",
	[STORE_STMT_TASK_SET_STATE] =
	    "UPDATE tasks SET state = ?2,"
	    " started_at = CASE WHEN ?2 = 'running' AND started_at = 0"
	    "   THEN ?4 ELSE started_at END,"
	    " finished_at = CASE WHEN ?2 IN ('succeeded', 'failed', 'cancelled')"
	    "   THEN ?4 ELSE finished_at END,"
	    " exit_code = CASE WHEN ?2 IN ('succeeded', 'failed', 'cancelled')"
	    "   THEN ?3 ELSE exit_code END "
	    "WHERE id = ?1",
	[STORE_STMT_TASK_FINISH] =
	    "UPDATE tasks SET state = ?2, exit_code = ?3, finished_at = ?4,"
	    " error = ?5, summary_json = ?6, changed_files_json = ?7,"
	    " timed_out = ?8 WHERE id = ?1",
	[STORE_STMT_TASK_SET_CHECKPOINT] =
	    "UPDATE tasks SET checkpoint = ?2 WHERE id = ?1",
};

static const char *store_sandbox_state_names[] = {
	[SANDBOX_CREATING] = "creating",
	[SANDBOX_RUNNING] = "running",
	[SANDBOX_STOPPING] = "stopping",
	[SANDBOX_STOPPED] = "stopped",
	[SANDBOX_STARTING] = "starting",
	[SANDBOX_DELETING] = "deleting",
	[SANDBOX_ERROR] = "error",
	[SANDBOX_PAUSED] = "paused",
};
_Static_assert(nitems(store_sandbox_state_names) == SANDBOX_PAUSED + 1,
    "every sandbox state needs a name");

static const char *store_task_state_names[] = {
	[TASK_QUEUED] = "queued",
	[TASK_RUNNING] = "running",
	[TASK_SUCCEEDED] = "succeeded",
	[TASK_FAILED] = "failed",
	[TASK_CANCELLED] = "cancelled",
};

/* Open the database at path, bring its schema up to date, prepare. */
struct store *
store_open(const char *path, char **cause)
{
	struct store	*s;
	struct stat	 sb;
	int		 fd, rc;

	*cause = NULL;
	s = xcalloc(1, sizeof *s);
	hist_init(&s->write_hist, hist_bounds_fast);
	s->path = xstrdup(path);

	/*
	 * Create the file ourselves so it is 0600 from the start: SQLite
	 * would create it 0644, and gives the -wal and -shm files the
	 * database file's mode. Only the file: a missing directory is an
	 * error, not something to make.
	 */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0)
		log_warnx("store: %s is readable by others (mode %04o)", path,
		    (unsigned)(sb.st_mode & 07777));
	close(fd);

	rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path, s->db != NULL ?
		    sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);

	if (store_pragmas(s, cause) != 0)
		goto fail;
	if (store_migrate(s, cause) != 0)
		goto fail;
	if (store_foreign_keys(s, 1, cause) != 0)
		goto fail;
	if (store_prepare(s, cause) != 0)
		goto fail;
	return (s);

fail:
	store_close(s);
	return (NULL);
}

/* Set the connection's pragmas; WAL must really be on, not just asked for. */
static int
store_pragmas(struct store *s, char **cause)
{
	sqlite3_stmt	*stmt = NULL;
	const char	*mode;
	int		 rc;

	/* First, so that switching to WAL waits for another process's lock. */
	sqlite3_busy_timeout(s->db, 5000);

	/* journal_mode answers with the mode now in force. */
	rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &stmt,
	    NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW) {
		xasprintf(cause, "%s: %s", s->path, sqlite3_errmsg(s->db));
		goto fail;
	}
	mode = (const char *)sqlite3_column_text(stmt, 0);
	if (mode == NULL || strcmp(mode, "wal") != 0) {
		xasprintf(cause, "%s: cannot use WAL mode (journal mode is %s)",
		    s->path, mode != NULL ? mode : "unknown");
		goto fail;
	}
	sqlite3_finalize(stmt);
	stmt = NULL;

	/*
	 * NORMAL is durable enough in WAL mode: a crash loses no commit.
	 * foreign_keys comes on after the migrations (store_foreign_keys).
	 */
	if (sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL,
	    NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: %s", s->path, sqlite3_errmsg(s->db));
		goto fail;
	}
	return (0);

fail:
	sqlite3_finalize(stmt);
	return (-1);
}

/*
 * Turn foreign key enforcement on or off and read it back: the pragma is a
 * silent no-op inside a transaction, and a build without foreign keys
 * ignores it, so only the value read back proves it.
 */
static int
store_foreign_keys(struct store *s, int on, char **cause)
{
	sqlite3_stmt	*stmt;
	int		 got = -1;

	if (sqlite3_exec(s->db, on ? "PRAGMA foreign_keys=ON" :
	    "PRAGMA foreign_keys=OFF", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s->db, "PRAGMA foreign_keys", -1, &stmt,
	    NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: %s", s->path, sqlite3_errmsg(s->db));
		return (-1);
	}
	if (sqlite3_step(stmt) == SQLITE_ROW)
		got = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	if (got != on) {
		xasprintf(cause, "%s: cannot turn foreign keys %s", s->path,
		    on ? "on" : "off");
		return (-1);
	}
	return (0);
}

/* Read PRAGMA user_version on a connection; 0 on success. */
static int
store_read_user_version(sqlite3 *db, int *out)
{
	sqlite3_stmt	*stmt;
	int		 rc;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt,
	    NULL) != SQLITE_OK)
		return (-1);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	return (rc == SQLITE_ROW ? 0 : -1);
}

/*
 * Apply each missing migration in its own transaction. The version is read
 * inside the transaction so two processes opening a fresh file at once do
 * not both apply the same script. Foreign keys are off meanwhile, as
 * SQLite's table rebuild procedure needs (a DROP TABLE with them on deletes
 * the rows first and cascades), and are checked before each COMMIT instead.
 */
static int
store_migrate(struct store *s, char **cause)
{
	char	 sql[64];
	int	 version;

	/* Outside any transaction: inside one the pragma does nothing. */
	if (store_foreign_keys(s, 0, cause) != 0)
		return (-1);
	for (;;) {
		if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL,
		    NULL) != SQLITE_OK)
			goto fail_errmsg;
		if (store_read_user_version(s->db, &version) != 0)
			goto fail_errmsg;
		if (version > STORE_SCHEMA_VERSION) {
			/* Downgrading under newer data could lose or mangle it. */
			xasprintf(cause, "%s: schema version %d is newer than "
			    "this binary knows (%d); refusing to open it",
			    s->path, version, STORE_SCHEMA_VERSION);
			goto fail;
		}
		if (version < 0) {
			xasprintf(cause, "%s: bad schema version %d", s->path,
			    version);
			goto fail;
		}
		if (version == STORE_SCHEMA_VERSION)
			break;

		if (sqlite3_exec(s->db, store_migrations[version], NULL, NULL,
		    NULL) != SQLITE_OK) {
			xasprintf(cause, "%s: migration to version %d: %s",
			    s->path, version + 1, sqlite3_errmsg(s->db));
			goto fail;
		}
		if (store_migrate_fk_check(s, version + 1, cause) != 0)
			goto fail;
		/* PRAGMA takes no parameters; the number is our own. */
		snprintf(sql, sizeof sql, "PRAGMA user_version = %d",
		    version + 1);
		if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			goto fail_errmsg;
		log_info("store: migrated %s to schema version %d", s->path,
		    version + 1);
	}
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail_errmsg;
	return (0);

fail_errmsg:
	xasprintf(cause, "%s: %s", s->path, sqlite3_errmsg(s->db));
fail:
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return (-1);
}

/*
 * After a migration, inside its transaction: every foreign key must still
 * find its parent row (PRAGMA foreign_key_check lists those that do not).
 */
static int
store_migrate_fk_check(struct store *s, int version, char **cause)
{
	sqlite3_stmt	*stmt;
	int		 rc;

	if (sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &stmt,
	    NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: migration to version %d: %s", s->path,
		    version, sqlite3_errmsg(s->db));
		return (-1);
	}
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		xasprintf(cause, "%s: migration to version %d: row %lld of %s "
		    "references a missing row of %s", s->path, version,
		    (long long)sqlite3_column_int64(stmt, 1),
		    (const char *)sqlite3_column_text(stmt, 0),
		    (const char *)sqlite3_column_text(stmt, 2));
	else if (rc != SQLITE_DONE)
		xasprintf(cause, "%s: migration to version %d: %s", s->path,
		    version, sqlite3_errmsg(s->db));
	sqlite3_finalize(stmt);
	return (rc == SQLITE_DONE ? 0 : -1);
}

/* Prepare every statement once; they live until store_close. */
static int
store_prepare(struct store *s, char **cause)
{
	size_t	i;

	for (i = 0; i < STORE_NSTMTS; i++) {
		if (sqlite3_prepare_v3(s->db, store_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &s->stmts[i], NULL) != SQLITE_OK) {
			xasprintf(cause, "%s: preparing statement %zu: %s",
			    s->path, i, sqlite3_errmsg(s->db));
			return (-1);
		}
	}
	return (0);
}

/* Finalize every statement and close the connection. */
void
store_close(struct store *s)
{
	size_t	i;

	if (s == NULL)
		return;
	for (i = 0; i < STORE_NSTMTS; i++) {
		sqlite3_finalize(s->stmts[i]);
		s->stmts[i] = NULL;
	}
	/* The last close checkpoints the WAL into the main file. */
	if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
		log_warnx("store: closing %s: %s", s->path,
		    sqlite3_errmsg(s->db));
	free(s->path);
	free(s);
}

/* The schema version the open database is at, -1 on error. */
int
store_schema_version(struct store *s)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_USER_VERSION);
	int		 version = -1;

	if (sqlite3_step(stmt) == SQLITE_ROW)
		version = sqlite3_column_int(stmt, 0);
	else
		store_warn(s, "read schema version", NULL);
	store_release(stmt);
	return (version);
}

/* Prove the database answers (a read of the schema page); 0 if it does. */
int
store_ping(struct store *s)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_PING);
	int		 rc;

	rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW)
		store_warn(s, "ping", NULL);
	store_release(stmt);
	return (rc == SQLITE_ROW ? 0 : -1);
}

/*
 * Copy the live database to dest with the online backup API: a consistent
 * snapshot even while the daemon writes. dest must not exist; it is created
 * 0600 and removed again if the copy fails.
 */
int
store_backup(struct store *s, const char *dest, char **cause)
{
	sqlite3		*ddb = NULL;
	sqlite3_backup	*b;
	int		 fd, rc;

	*cause = NULL;
	/* O_EXCL: never overwrite, even if dest appears after a check. */
	fd = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1) {
		xasprintf(cause, "%s: %s", dest, strerror(errno));
		log_warnx("store: backup: %s", *cause);
		return (-1);	/* not ours to remove */
	}
	close(fd);

	rc = sqlite3_open_v2(dest, &ddb, SQLITE_OPEN_READWRITE, NULL);
	if (rc != SQLITE_OK) {
		xasprintf(cause, "%s: %s", dest, ddb != NULL ?
		    sqlite3_errmsg(ddb) : sqlite3_errstr(rc));
		goto fail;
	}
	b = sqlite3_backup_init(ddb, "main", s->db, "main");
	if (b == NULL) {
		xasprintf(cause, "%s: %s", dest, sqlite3_errmsg(ddb));
		goto fail;
	}
	/* All pages in one step: the store is small and this is one call. */
	rc = sqlite3_backup_step(b, -1);
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		xasprintf(cause, "%s: %s", dest, sqlite3_errstr(rc));
		goto fail;
	}
	if (sqlite3_close(ddb) != SQLITE_OK) {
		xasprintf(cause, "%s: %s", dest, sqlite3_errmsg(ddb));
		ddb = NULL;	/* a failed close leaves nothing we can free */
		goto fail;
	}
	log_info("store: backed up %s to %s", s->path, dest);
	return (0);

fail:
	log_warnx("store: backup: %s", *cause);
	sqlite3_close(ddb);
	unlink(dest);
	return (-1);
}

/* The text name of a sandbox state ("running"), NULL if out of range. */
const char *
store_sandbox_state_name(enum sandbox_state state)
{
	if ((unsigned)state >= nitems(store_sandbox_state_names))
		return (NULL);
	return (store_sandbox_state_names[state]);
}

/* Parse a sandbox state name; 0 on success, -1 if unknown. */
int
store_sandbox_state_parse(const char *name, enum sandbox_state *out)
{
	size_t	i;

	for (i = 0; name != NULL && i < nitems(store_sandbox_state_names); i++) {
		if (strcmp(name, store_sandbox_state_names[i]) == 0) {
			*out = (enum sandbox_state)i;
			return (0);
		}
	}
	return (-1);
}

/* The text name of a task state ("queued"), NULL if out of range. */
const char *
store_task_state_name(enum task_state state)
{
	if ((unsigned)state >= nitems(store_task_state_names))
		return (NULL);
	return (store_task_state_names[state]);
}

/* Parse a task state name; 0 on success, -1 if unknown. */
int
store_task_state_parse(const char *name, enum task_state *out)
{
	size_t	i;

	for (i = 0; name != NULL && i < nitems(store_task_state_names); i++) {
		if (strcmp(name, store_task_state_names[i]) == 0) {
			*out = (enum task_state)i;
			return (0);
		}
	}
	return (-1);
}

/* The connection, for what store/ files need beyond a statement. */
sqlite3 *
store_db(struct store *s)
{
	return (s->db);
}

/* The prepared statement for id; release it with store_release. */
sqlite3_stmt *
store_stmt(struct store *s, enum store_stmt_id id)
{
	return (s->stmts[id]);
}

/*
 * Reset after every use, not before the next: a stepped SELECT left alone
 * keeps a read transaction open, which stops WAL checkpoints.
 */
void
store_release(sqlite3_stmt *stmt)
{
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
}

/* Log the connection's last error with what was being done, and to which. */
void
store_warn(struct store *s, const char *what, const char *id)
{
	if (id != NULL)
		log_warnx("store: %s %s: %s", what, id, sqlite3_errmsg(s->db));
	else
		log_warnx("store: %s: %s", what, sqlite3_errmsg(s->db));
}

/*
 * Bind text or NULL. SQLITE_STATIC is safe: every caller steps and releases
 * (clearing the bindings) before its arguments go away.
 */
int
store_bind_text(sqlite3_stmt *stmt, int idx, const char *text)
{
	if (text == NULL)
		return (sqlite3_bind_null(stmt, idx));
	return (sqlite3_bind_text(stmt, idx, text, -1, SQLITE_STATIC));
}

/* A malloc'd copy of a text column, NULL for SQL NULL. */
char *
store_column_strdup(sqlite3_stmt *stmt, int col)
{
	const unsigned char	*text;

	if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
		return (NULL);
	text = sqlite3_column_text(stmt, col);
	if (text == NULL)	/* out of memory in a conversion */
		fatalx("store: out of memory reading a column");
	return (xstrdup((const char *)text));
}

/* Copy a text column into an id buffer; -1 if it is NULL or too long. */
int
store_column_id(sqlite3_stmt *stmt, int col, char out[STORE_ID_LEN + 1])
{
	const unsigned char	*text = sqlite3_column_text(stmt, col);
	int			 len = sqlite3_column_bytes(stmt, col);

	if (text == NULL || len > STORE_ID_LEN) {
		out[0] = '\0';
		return (-1);
	}
	memcpy(out, text, (size_t)len);
	out[len] = '\0';
	return (0);
}

/* Step a write (INSERT, UPDATE, DELETE), timed for the latency metric. */
int
store_step_write(struct store *s, sqlite3_stmt *stmt)
{
	int64_t	start = time_mono_ms();
	int	rc;

	rc = sqlite3_step(stmt);
	hist_observe(&s->write_hist, time_mono_ms() - start);
	return (rc);
}

/* How long the store's writes took (store_step_write). */
const struct hist *
store_write_latency(struct store *s)
{
	return (&s->write_hist);
}

/* Step a bound UPDATE or DELETE, release it, say whether a row changed. */
int
store_step_change(struct store *s, sqlite3_stmt *stmt, const char *what,
    const char *id)
{
	int	rc, ret;

	rc = store_step_write(s, stmt);
	if (rc != SQLITE_DONE) {
		store_warn(s, what, id);
		ret = -1;
	} else
		ret = sqlite3_changes(s->db) > 0 ? 0 : STORE_NOTFOUND;
	store_release(stmt);
	return (ret);
}
