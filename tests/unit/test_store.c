/*
 * store/ against real SQLite files in a temporary directory: schema,
 * migrations, every typed call, bad inputs, backup, and a few measurements
 * (printed, not asserted).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/common.h"
#include "store/store.h"
#include "tests/unit/unit.h"

static char	tmpdir[64];

/* A path inside the test directory (static buffer, one at a time each). */
static const char *
tpath(const char *name)
{
	static char	buf[4][256];
	static int	next;
	char		*p = buf[next++ % 4];

	snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
	return (p);
}

/* A 26-character id made from a number, so order is predictable. */
static void
make_id(char out[STORE_ID_LEN + 1], int n)
{
	snprintf(out, STORE_ID_LEN + 1, "%026d", n);
}

/* Fill a sandbox row with plain values; strings point at literals. */
static void
make_sandbox(struct store_sandbox *sb, int n, const char *tenant,
    int64_t created_at)
{
	memset(sb, 0, sizeof *sb);
	make_id(sb->id, n);
	sb->tenant = (char *)tenant;
	sb->template_name = "default";
	sb->state = SANDBOX_CREATING;
	sb->port = 3000;
	sb->visibility = SANDBOX_PRIVATE;
	sb->memory_mb = 1024;
	sb->cpus = 1.5;
	sb->idle_timeout_s = 900;
	sb->env_json = "{\"A\":\"1\"}";
	sb->labels_json = NULL;		/* stored as "{}" */
	sb->container_id = NULL;
	sb->error = NULL;
	sb->created_at = created_at;
	sb->last_active_at = created_at;
}

/* Microseconds on the monotonic clock. */
static int64_t
now_us(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

/* The value of a "Name:   123 kB" line of /proc/self/status, in kB. */
static long
proc_status_kb(const char *name)
{
	FILE	*f;
	char	 line[256];
	size_t	 len = strlen(name);
	long	 kb = -1;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return (-1);
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, name, len) == 0 && line[len] == ':') {
			kb = strtol(line + len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return (kb);
}

/* PRAGMA user_version or journal_mode of a file, read without the store. */
static int
raw_pragma(const char *path, const char *pragma, char *out, size_t len)
{
	sqlite3		*db;
	sqlite3_stmt	*stmt;
	char		 sql[64];
	int		 rc = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		goto out;
	snprintf(sql, sizeof sql, "PRAGMA %s", pragma);
	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(stmt) == SQLITE_ROW) {
		snprintf(out, len, "%s", sqlite3_column_text(stmt, 0));
		rc = 0;
	}
	sqlite3_finalize(stmt);
out:
	sqlite3_close(db);
	return (rc);
}

/* Opening creates a 0600 file at the current schema version. */
static void
test_open_create(void)
{
	struct store	*s;
	struct stat	 sb;
	char		*cause = NULL;

	s = store_open(tpath("create.db"), &cause);
	CHECK(s != NULL);
	CHECK(cause == NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	CHECK(stat(tpath("create.db"), &sb) == 0 && (sb.st_mode & 0777) == 0600);
	CHECK(store_schema_version(s) == STORE_SCHEMA_VERSION);
	CHECK(STORE_SCHEMA_VERSION == 5);
	CHECK(store_ping(s) == 0);
	store_close(s);

	/* A missing directory is an error, and is not created. */
	s = store_open(tpath("nodir/x.db"), &cause);
	CHECK(s == NULL);
	CHECK(cause != NULL && strstr(cause, "nodir/x.db") != NULL &&
	    strstr(cause, "No such file") != NULL);
	CHECK(stat(tpath("nodir"), &sb) == -1 && errno == ENOENT);
	free(cause);

	/* A directory is not a database. */
	s = store_open(tmpdir, &cause);
	CHECK(s == NULL);
	CHECK(cause != NULL && strstr(cause, tmpdir) != NULL);
	free(cause);
}

/* WAL is really on: the mode read back from the file, and the -wal file. */
static void
test_wal(void)
{
	struct store		*s;
	struct store_sandbox	 sb;
	struct stat		 st;
	char			*cause, mode[32] = "";

	s = store_open(tpath("wal.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	make_sandbox(&sb, 1, "t", 1);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	CHECK(stat(tpath("wal.db-wal"), &st) == 0 &&
	    (st.st_mode & 0777) == 0600);
	CHECK(raw_pragma(tpath("wal.db"), "journal_mode", mode,
	    sizeof mode) == 0);
	CHECK_STR(mode, "wal");
	store_close(s);
	/* The last close checkpoints and removes the -wal file. */
	CHECK(stat(tpath("wal.db-wal"), &st) == -1);
}

/* Rows survive close and reopen; migrations do not run twice. */
static void
test_reopen(void)
{
	struct store		*s;
	struct store_sandbox	 sb, got;
	char			*cause;

	s = store_open(tpath("reopen.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	make_sandbox(&sb, 7, "alice", 1000);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	CHECK(store_tenant_ensure(s, "alice") == 0);
	store_close(s);

	s = store_open(tpath("reopen.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	CHECK(store_schema_version(s) == STORE_SCHEMA_VERSION);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK_STR(got.tenant, "alice");
	CHECK(store_tenant_exists(s, "alice") == 1);
	store_sandbox_clear(&got);
	store_close(s);
}

/* Insert, get, list, the setters, count and delete of sandboxes. */
static void
test_sandbox_crud(void)
{
	struct store		*s;
	struct store_sandbox	 sb, got, *list;
	char			*cause, missing[STORE_ID_LEN + 1];
	size_t			 n;
	int			 count;

	s = store_open(tpath("crud.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}

	/* Inserted out of creation order; 3 and 4 share a created_at. */
	make_sandbox(&sb, 4, "bob", 2000);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	make_sandbox(&sb, 2, "alice", 3000);
	sb.visibility = SANDBOX_PUBLIC;
	sb.state = SANDBOX_RUNNING;
	sb.pause_timeout_s = 300;
	sb.container_id = "c0ffee";
	sb.error = "earlier failure";
	sb.labels_json = "{\"team\":\"x\"}";
	CHECK(store_sandbox_insert(s, &sb) == 0);
	make_sandbox(&sb, 3, "alice", 2000);
	CHECK(store_sandbox_insert(s, &sb) == 0);

	/* Every field comes back as written. */
	make_id(sb.id, 2);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK_STR(got.id, sb.id);
	CHECK_STR(got.tenant, "alice");
	CHECK_STR(got.template_name, "default");
	CHECK(got.state == SANDBOX_RUNNING);
	CHECK(got.port == 3000);
	CHECK(got.visibility == SANDBOX_PUBLIC);
	CHECK(got.memory_mb == 1024);
	CHECK(got.cpus == 1.5);
	CHECK(got.idle_timeout_s == 900);
	CHECK(got.pause_timeout_s == 300);
	CHECK_STR(got.env_json, "{\"A\":\"1\"}");
	CHECK_STR(got.labels_json, "{\"team\":\"x\"}");
	CHECK_STR(got.container_id, "c0ffee");
	CHECK_STR(got.error, "earlier failure");
	CHECK(got.created_at == 3000);
	CHECK(got.last_active_at == 3000);
	store_sandbox_clear(&got);
	CHECK(got.tenant == NULL && got.error == NULL);

	make_id(sb.id, 3);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK_STR(got.labels_json, "{}");
	CHECK(got.container_id == NULL);
	CHECK(got.error == NULL);
	CHECK(got.visibility == SANDBOX_PRIVATE);
	CHECK(got.pause_timeout_s == 0);
	store_sandbox_clear(&got);

	/* paused: written, read back and counted like any state. */
	CHECK(store_sandbox_set_state(s, sb.id, SANDBOX_PAUSED, NULL) == 0);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK(got.state == SANDBOX_PAUSED);
	store_sandbox_clear(&got);
	CHECK(store_sandbox_count(s, SANDBOX_PAUSED, &count) == 0 &&
	    count == 1);
	CHECK(store_sandbox_set_state(s, sb.id, SANDBOX_CREATING, NULL) == 0);

	/* All, oldest first, ties by id. */
	CHECK(store_sandbox_list(s, NULL, &list, &n) == 0);
	CHECK(n == 3);
	if (n == 3) {
		CHECK(atoi(list[0].id) == 3);
		CHECK(atoi(list[1].id) == 4);
		CHECK(atoi(list[2].id) == 2);
	}
	store_sandbox_list_free(list, n);

	CHECK(store_sandbox_list(s, "alice", &list, &n) == 0);
	CHECK(n == 2);
	if (n == 2) {
		CHECK(atoi(list[0].id) == 3);
		CHECK(atoi(list[1].id) == 2);
	}
	store_sandbox_list_free(list, n);

	CHECK(store_sandbox_list(s, "nobody", &list, &n) == 0);
	CHECK(n == 0 && list == NULL);
	store_sandbox_list_free(list, n);

	/* Setters. */
	make_id(sb.id, 4);
	CHECK(store_sandbox_set_state(s, sb.id, SANDBOX_ERROR, "boom") == 0);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK(got.state == SANDBOX_ERROR);
	CHECK_STR(got.error, "boom");
	store_sandbox_clear(&got);
	CHECK(store_sandbox_set_state(s, sb.id, SANDBOX_STOPPED, NULL) == 0);
	CHECK(store_sandbox_set_container(s, sb.id, "abc123") == 0);
	CHECK(store_sandbox_touch(s, sb.id, 99999) == 0);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK(got.state == SANDBOX_STOPPED);
	CHECK(got.error == NULL);
	CHECK_STR(got.container_id, "abc123");
	CHECK(got.last_active_at == 99999);
	CHECK(got.created_at == 2000);
	store_sandbox_clear(&got);
	CHECK(store_sandbox_set_container(s, sb.id, NULL) == 0);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK(got.container_id == NULL);
	store_sandbox_clear(&got);
	/* Setting the same value again still finds the row. */
	CHECK(store_sandbox_set_state(s, sb.id, SANDBOX_STOPPED, NULL) == 0);
	CHECK(store_sandbox_set_state(s, sb.id, (enum sandbox_state)42,
	    NULL) == -1);

	/* Counts. */
	CHECK(store_sandbox_count(s, -1, &count) == 0 && count == 3);
	CHECK(store_sandbox_count(s, SANDBOX_CREATING, &count) == 0 &&
	    count == 1);
	CHECK(store_sandbox_count(s, SANDBOX_RUNNING, &count) == 0 &&
	    count == 1);
	CHECK(store_sandbox_count(s, SANDBOX_STOPPED, &count) == 0 &&
	    count == 1);
	CHECK(store_sandbox_count(s, SANDBOX_DELETING, &count) == 0 &&
	    count == 0);
	CHECK(store_sandbox_count(s, 42, &count) == -1);

	/* NOTFOUND everywhere a row is missing. */
	make_id(missing, 12345);
	CHECK(store_sandbox_get(s, missing, &got) == STORE_NOTFOUND);
	CHECK(got.tenant == NULL);
	store_sandbox_clear(&got);
	CHECK(store_sandbox_set_state(s, missing, SANDBOX_RUNNING, NULL) ==
	    STORE_NOTFOUND);
	CHECK(store_sandbox_set_container(s, missing, "x") == STORE_NOTFOUND);
	CHECK(store_sandbox_touch(s, missing, 1) == STORE_NOTFOUND);
	CHECK(store_sandbox_delete(s, missing) == STORE_NOTFOUND);
	CHECK(store_sandbox_get(s, "", &got) == STORE_NOTFOUND);

	/* Delete. */
	CHECK(store_sandbox_delete(s, sb.id) == 0);
	CHECK(store_sandbox_get(s, sb.id, &got) == STORE_NOTFOUND);
	CHECK(store_sandbox_delete(s, sb.id) == STORE_NOTFOUND);
	CHECK(store_sandbox_count(s, -1, &count) == 0 && count == 2);
	store_close(s);
}

/* A duplicate id or a value the schema forbids fails cleanly. */
static void
test_sandbox_bad_insert(void)
{
	struct store		*s;
	struct store_sandbox	 sb, got;
	char			*cause;
	int			 count;

	s = store_open(tpath("dup.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	make_sandbox(&sb, 1, "alice", 1);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	sb.tenant = "mallory";
	CHECK(store_sandbox_insert(s, &sb) == -1);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK_STR(got.tenant, "alice");
	store_sandbox_clear(&got);

	/* The statements are still usable after a failed step. */
	make_sandbox(&sb, 2, "alice", 2);
	CHECK(store_sandbox_insert(s, &sb) == 0);

	make_sandbox(&sb, 3, "alice", 3);
	sb.template_name = NULL;		/* NOT NULL */
	CHECK(store_sandbox_insert(s, &sb) == -1);
	make_sandbox(&sb, 3, "alice", 3);
	sb.port = 70000;			/* CHECK */
	CHECK(store_sandbox_insert(s, &sb) == -1);
	make_sandbox(&sb, 3, "alice", 3);
	sb.pause_timeout_s = -1;		/* CHECK */
	CHECK(store_sandbox_insert(s, &sb) == -1);
	make_sandbox(&sb, 3, "alice", 3);
	sb.state = (enum sandbox_state)99;
	CHECK(store_sandbox_insert(s, &sb) == -1);
	make_sandbox(&sb, 3, "alice", 3);
	sb.visibility = (enum sandbox_visibility)7;
	CHECK(store_sandbox_insert(s, &sb) == -1);
	make_sandbox(&sb, 3, "alice", 3);
	sb.id[0] = '\0';
	CHECK(store_sandbox_insert(s, &sb) == -1);
	make_sandbox(&sb, 3, "alice", 3);
	memset(sb.id, 'a', sizeof sb.id);	/* not terminated */
	CHECK(store_sandbox_insert(s, &sb) == -1);

	CHECK(store_sandbox_count(s, -1, &count) == 0 && count == 2);
	store_close(s);
}

/* Quotes, unicode and SQL in values are stored as plain text. */
static void
test_strings(void)
{
	static const char	*evil = "x'); DROP TABLE sandboxes; --";
	static const char	*quotes = "it's \"quoted\" \\ back\\slash";
	static const char	*uni = "t\xc3\xa9nant \xe2\x98\x83 \xf0\x9f\x9a\x80";
	struct store		*s;
	struct store_sandbox	 sb, got, *list;
	char			*cause;
	size_t			 n;

	s = store_open(tpath("strings.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	make_sandbox(&sb, 1, uni, 1);
	sb.template_name = (char *)evil;
	sb.env_json = "{\"Q\":\"it's \\\"x\\\"\",\"SQL\":\"'; DELETE FROM tasks;\"}";
	sb.error = (char *)quotes;
	sb.container_id = (char *)evil;
	CHECK(store_sandbox_insert(s, &sb) == 0);
	CHECK(store_sandbox_get(s, sb.id, &got) == 0);
	CHECK_STR(got.tenant, uni);
	CHECK_STR(got.template_name, evil);
	CHECK_STR(got.env_json, sb.env_json);
	CHECK_STR(got.error, quotes);
	CHECK_STR(got.container_id, evil);
	store_sandbox_clear(&got);

	CHECK(store_sandbox_list(s, uni, &list, &n) == 0 && n == 1);
	store_sandbox_list_free(list, n);
	CHECK(store_sandbox_list(s, evil, &list, &n) == 0 && n == 0);
	store_sandbox_list_free(list, n);
	CHECK(store_sandbox_set_state(s, sb.id, SANDBOX_ERROR, evil) == 0);
	CHECK(store_sandbox_get(s, evil, &got) == STORE_NOTFOUND);

	CHECK(store_tenant_ensure(s, evil) == 0);
	CHECK(store_tenant_exists(s, evil) == 1);
	CHECK(store_tenant_exists(s, "x") == 0);

	/* The table is still there and holds one row. */
	CHECK(store_sandbox_list(s, NULL, &list, &n) == 0 && n == 1);
	if (n == 1)
		CHECK_STR(list[0].error, evil);
	store_sandbox_list_free(list, n);
	store_close(s);
}

/* Task rows: insert, get, list, state changes, cascade on sandbox delete. */
static void
test_tasks(void)
{
	struct store		*s;
	struct store_sandbox	 sb;
	struct store_task	 t, got, *list;
	char			*cause, sid[STORE_ID_LEN + 1];
	size_t			 n;

	s = store_open(tpath("tasks.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	make_sandbox(&sb, 1, "alice", 1);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	make_sandbox(&sb, 2, "alice", 2);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	make_id(sid, 1);

	memset(&t, 0, sizeof t);
	make_id(t.id, 102);
	make_id(t.sandbox_id, 1);
	t.agent = "command";
	t.spec_json = "{\"agent\":\"command\",\"cmd\":[\"echo\",\"it's\"]}";
	t.state = TASK_QUEUED;
	t.exit_code = -1;
	t.created_at = 500;
	CHECK(store_task_insert(s, &t) == 0);
	make_id(t.id, 101);
	t.agent = "opencode";
	t.created_at = 600;
	CHECK(store_task_insert(s, &t) == 0);
	make_id(t.id, 201);
	make_id(t.sandbox_id, 2);
	CHECK(store_task_insert(s, &t) == 0);

	/* Duplicate id, and a sandbox that does not exist. */
	CHECK(store_task_insert(s, &t) == -1);
	make_id(t.id, 999);
	make_id(t.sandbox_id, 77);
	CHECK(store_task_insert(s, &t) == STORE_NOTFOUND);
	make_id(t.sandbox_id, 1);
	t.state = (enum task_state)9;
	CHECK(store_task_insert(s, &t) == -1);
	CHECK(store_task_get(s, t.id, &got) == STORE_NOTFOUND);
	store_task_clear(&got);

	make_id(t.id, 102);
	CHECK(store_task_get(s, t.id, &got) == 0);
	CHECK_STR(got.id, t.id);
	CHECK_STR(got.sandbox_id, sid);
	CHECK_STR(got.agent, "command");
	CHECK_STR(got.spec_json, t.spec_json);
	CHECK(got.state == TASK_QUEUED);
	CHECK(got.exit_code == -1);
	CHECK(got.created_at == 500);
	CHECK(got.started_at == 0 && got.finished_at == 0);
	store_task_clear(&got);

	CHECK(store_task_list(s, sid, &list, &n) == 0);
	CHECK(n == 2);
	if (n == 2) {
		CHECK(atoi(list[0].id) == 102);
		CHECK(atoi(list[1].id) == 101);
	}
	store_task_list_free(list, n);
	CHECK(store_task_list(s, NULL, &list, &n) == 0 && n == 3);
	store_task_list_free(list, n);

	/* running sets started_at once; a finish sets finished_at and code. */
	CHECK(store_task_set_state(s, t.id, TASK_RUNNING, 5, 1000) == 0);
	CHECK(store_task_set_state(s, t.id, TASK_RUNNING, 5, 1100) == 0);
	CHECK(store_task_get(s, t.id, &got) == 0);
	CHECK(got.state == TASK_RUNNING);
	CHECK(got.started_at == 1000 && got.finished_at == 0);
	CHECK(got.exit_code == -1);
	store_task_clear(&got);
	CHECK(store_task_set_state(s, t.id, TASK_FAILED, 3, 2000) == 0);
	CHECK(store_task_get(s, t.id, &got) == 0);
	CHECK(got.state == TASK_FAILED);
	CHECK(got.started_at == 1000 && got.finished_at == 2000);
	CHECK(got.exit_code == 3);
	store_task_clear(&got);
	CHECK(store_task_set_state(s, "nope", TASK_RUNNING, 0, 1) ==
	    STORE_NOTFOUND);
	CHECK(store_task_set_state(s, t.id, (enum task_state)-3, 0, 1) == -1);

	/* Deleting the sandbox takes its tasks, and only its tasks. */
	CHECK(store_sandbox_delete(s, sid) == 0);
	CHECK(store_task_get(s, t.id, &got) == STORE_NOTFOUND);
	CHECK(store_task_list(s, sid, &list, &n) == 0 && n == 0);
	store_task_list_free(list, n);
	CHECK(store_task_list(s, NULL, &list, &n) == 0 && n == 1);
	if (n == 1)
		CHECK(atoi(list[0].id) == 201);
	store_task_list_free(list, n);
	store_close(s);
}

/* Tenants: ensure is idempotent, exists answers 1 or 0. */
static void
test_tenants(void)
{
	struct store	*s;
	char		*cause;

	s = store_open(tpath("tenants.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	CHECK(store_tenant_exists(s, "alice") == 0);
	CHECK(store_tenant_ensure(s, "alice") == 0);
	CHECK(store_tenant_ensure(s, "alice") == 0);
	CHECK(store_tenant_exists(s, "alice") == 1);
	CHECK(store_tenant_exists(s, "ALICE") == 0);
	CHECK(store_tenant_ensure(s, "") == -1);	/* CHECK constraint */
	CHECK(store_tenant_ensure(s, NULL) == -1);	/* NOT NULL */
	CHECK(store_tenant_exists(s, "") == 0);
	store_close(s);
}

/* Usage: rows add up per provider, go with their sandbox. */
static void
test_usage(void)
{
	struct store		*s;
	struct store_sandbox	 sb;
	struct store_usage	*u;
	size_t			 n;
	char			*cause;

	s = store_open(tpath("usage.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	make_sandbox(&sb, 1, "alice", 1000);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	CHECK(store_usage_list(s, sb.id, &u, &n) == 0 && n == 0);
	free(u);
	CHECK(store_usage_add(s, sb.id, "openai", 1, 10, 20) == 0);
	CHECK(store_usage_add(s, sb.id, "anthropic", 1, 5, 0) == 0);
	CHECK(store_usage_add(s, sb.id, "openai", 2, 1, 2) == 0);
	CHECK(store_usage_list(s, sb.id, &u, &n) == 0 && n == 2);
	if (n == 2) {
		CHECK(strcmp(u[0].provider, "anthropic") == 0);
		CHECK(u[0].requests == 1 && u[0].input_tokens == 5 &&
		    u[0].output_tokens == 0);
		CHECK(strcmp(u[1].provider, "openai") == 0);
		CHECK(u[1].requests == 3 && u[1].input_tokens == 11 &&
		    u[1].output_tokens == 22);
	}
	free(u);
	/* A sandbox that is gone (or never was) takes no usage. */
	CHECK(store_usage_add(s, "00000000000000000000000099", "openai", 1,
	    0, 0) == STORE_NOTFOUND);
	CHECK(store_usage_add(s, sb.id, "openai", -1, 0, 0) == -1);
	CHECK(store_sandbox_delete(s, sb.id) == 0);
	CHECK(store_usage_list(s, sb.id, &u, &n) == 0 && n == 0);
	free(u);
	store_close(s);
}

/* API keys: insert records the tenant, get, list, revoke, touch. */
static void
test_apikeys(void)
{
	struct store		*s, *s2;
	struct store_apikey	 k, got, *list;
	char			*cause;
	size_t			 n;
	int			 count;

	s = store_open(tpath("keys.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	memset(&k, 0, sizeof k);
	make_id(k.id, 1);
	k.tenant = "acme";
	memset(k.secret_hash, 'a', 64);
	k.created_at = 1000;
	CHECK(store_apikey_insert(s, &k) == 0);
	CHECK(store_tenant_exists(s, "acme") == 1);
	CHECK(store_apikey_insert(s, &k) == -1);	/* same id */
	make_id(k.id, 2);
	CHECK(store_apikey_insert(s, &k) == -1);	/* same hash */
	memset(k.secret_hash, 'b', 64);
	k.created_at = 2000;
	CHECK(store_apikey_insert(s, &k) == 0);
	k.secret_hash[10] = '\0';
	make_id(k.id, 3);
	CHECK(store_apikey_insert(s, &k) == -1);	/* short hash */
	memset(k.secret_hash, 'c', 64);
	k.tenant = "globex";
	CHECK(store_apikey_insert(s, &k) == 0);

	make_id(k.id, 1);
	CHECK(store_apikey_get(s, k.id, &got) == 0);
	CHECK_STR(got.tenant, "acme");
	CHECK(got.secret_hash[0] == 'a' && strlen(got.secret_hash) == 64);
	CHECK(got.created_at == 1000 && got.last_used_at == 0 &&
	    got.revoked_at == 0);
	store_apikey_clear(&got);
	CHECK(store_apikey_get(s, "nope", &got) == STORE_NOTFOUND);

	CHECK(store_apikey_list(s, NULL, &list, &n) == 0 && n == 3);
	store_apikey_list_free(list, n);
	CHECK(store_apikey_list(s, "acme", &list, &n) == 0 && n == 2);
	if (n == 2)
		CHECK(list[0].created_at == 1000 && list[1].created_at == 2000);
	store_apikey_list_free(list, n);

	/* Another connection (the CLI) revokes; this one sees it at once. */
	s2 = store_open(tpath("keys.db"), &cause);
	CHECK(s2 != NULL);
	if (s2 != NULL) {
		CHECK(store_apikey_revoke(s2, "acme", k.id, 5000, &count) == 0 &&
		    count == 1);
		CHECK(store_apikey_revoke(s2, "acme", k.id, 6000, &count) ==
		    STORE_NOTFOUND && count == 0);
		/* Another tenant's key is not revoked by naming it. */
		make_id(k.id, 3);
		CHECK(store_apikey_revoke(s2, "acme", k.id, 6000, &count) ==
		    STORE_NOTFOUND);
		store_close(s2);
	} else
		free(cause);
	make_id(k.id, 1);
	CHECK(store_apikey_get(s, k.id, &got) == 0 && got.revoked_at == 5000);
	store_apikey_clear(&got);
	CHECK(store_apikey_revoke(s, "acme", NULL, 7000, &count) == 0 &&
	    count == 1);
	CHECK(store_apikey_revoke(s, "acme", NULL, 7000, &count) ==
	    STORE_NOTFOUND);
	make_id(k.id, 3);
	CHECK(store_apikey_touch(s, k.id, 9000) == 0);
	CHECK(store_apikey_get(s, k.id, &got) == 0 && got.last_used_at ==
	    9000 && got.revoked_at == 0);
	store_apikey_clear(&got);
	CHECK(store_apikey_touch(s, "nope", 9000) == STORE_NOTFOUND);
	store_close(s);
}

/* The backup is a readable database with the same rows; no overwrite. */
static void
test_backup(void)
{
	struct store		*s, *b;
	struct store_sandbox	 sb, *la, *lb;
	struct stat		 st;
	char			*cause;
	size_t			 na, nb, i;
	int			 ok;

	s = store_open(tpath("live.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	for (i = 0; i < 50; i++) {
		make_sandbox(&sb, (int)i, i % 2 ? "a" : "b", (int64_t)i);
		CHECK(store_sandbox_insert(s, &sb) == 0);
	}
	CHECK(store_tenant_ensure(s, "a") == 0);

	CHECK(store_backup(s, tpath("copy.db"), &cause) == 0);
	CHECK(cause == NULL);
	CHECK(stat(tpath("copy.db"), &st) == 0 && (st.st_mode & 0777) == 0600);

	/* dest exists: refused, and the existing file is left alone. */
	CHECK(store_backup(s, tpath("copy.db"), &cause) == -1);
	CHECK(cause != NULL && strstr(cause, "File exists") != NULL);
	free(cause);
	CHECK(stat(tpath("copy.db"), &st) == 0 && st.st_size > 0);
	CHECK(store_backup(s, tpath("nodir/copy.db"), &cause) == -1);
	CHECK(cause != NULL);
	free(cause);

	/* Writes after the backup are not in it. */
	make_sandbox(&sb, 1000, "a", 1000);
	CHECK(store_sandbox_insert(s, &sb) == 0);

	b = store_open(tpath("copy.db"), &cause);
	CHECK(b != NULL);
	if (b == NULL) {
		free(cause);
		store_close(s);
		return;
	}
	CHECK(store_schema_version(b) == STORE_SCHEMA_VERSION);
	CHECK(store_tenant_exists(b, "a") == 1);
	CHECK(store_sandbox_delete(s, sb.id) == 0);
	CHECK(store_sandbox_list(s, NULL, &la, &na) == 0);
	CHECK(store_sandbox_list(b, NULL, &lb, &nb) == 0);
	CHECK(na == 50 && nb == 50);
	ok = na == nb;
	for (i = 0; ok && i < na; i++) {
		ok = strcmp(la[i].id, lb[i].id) == 0 &&
		    strcmp(la[i].tenant, lb[i].tenant) == 0 &&
		    la[i].created_at == lb[i].created_at;
	}
	CHECK(ok);
	store_sandbox_list_free(la, na);
	store_sandbox_list_free(lb, nb);
	store_close(b);
	store_close(s);
}

/* State names both ways; paused kept its place at the end. */
static void
test_state_names(void)
{
	enum sandbox_state	st;

	CHECK(SANDBOX_ERROR == 6 && SANDBOX_PAUSED == 7);
	CHECK_STR(store_sandbox_state_name(SANDBOX_PAUSED), "paused");
	CHECK_STR(store_sandbox_state_name(SANDBOX_RUNNING), "running");
	CHECK(store_sandbox_state_name((enum sandbox_state)8) == NULL);
	CHECK(store_sandbox_state_parse("paused", &st) == 0 &&
	    st == SANDBOX_PAUSED);
	CHECK(store_sandbox_state_parse("error", &st) == 0 &&
	    st == SANDBOX_ERROR);
	CHECK(store_sandbox_state_parse("Paused", &st) == -1);
	CHECK(store_sandbox_state_parse(NULL, &st) == -1);
}

/*
 * The version 1 schema exactly as it shipped (store.c, migration 1), kept
 * here so the test builds a real v1 file without the store's help.
 */
static const char v1_schema[] =
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
	"CREATE INDEX tasks_sandbox_id ON tasks (sandbox_id, created_at, id);"
	"PRAGMA user_version = 1;";

/*
 * Make a v1 file at path with the given rows (SQL run with the raw API, so
 * foreign keys are as the caller sets them). 0 on success.
 */
static int
make_v1(const char *path, const char *fk_pragma, const char *rows)
{
	sqlite3	*db;
	char	*err = NULL;
	int	 rc;

	unlink(path);
	if (sqlite3_open(path, &db) != SQLITE_OK) {
		sqlite3_close(db);
		return (-1);
	}
	rc = sqlite3_exec(db, fk_pragma, NULL, NULL, &err);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, v1_schema, NULL, NULL, &err);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, rows, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fprintf(stderr, "make_v1 %s: %s\n", path, err);
	sqlite3_free(err);
	sqlite3_close(db);
	return (rc == SQLITE_OK ? 0 : -1);
}

/* Run one SQL statement on a file with the raw API; the sqlite3 result. */
static int
raw_exec(const char *path, const char *sql)
{
	sqlite3	*db;
	int	 rc;

	if (sqlite3_open(path, &db) != SQLITE_OK) {
		sqlite3_close(db);
		return (SQLITE_ERROR);
	}
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return (rc);
}

/* The first column of the first row of a query, as text ("" if none). */
static void
raw_query(const char *path, const char *sql, char *out, size_t len)
{
	sqlite3		*db;
	sqlite3_stmt	*stmt;

	out[0] = '\0';
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) ==
	    SQLITE_OK && sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) ==
	    SQLITE_OK) {
		if (sqlite3_step(stmt) == SQLITE_ROW &&
		    sqlite3_column_text(stmt, 0) != NULL)
			snprintf(out, len, "%s", sqlite3_column_text(stmt, 0));
		sqlite3_finalize(stmt);
	}
	sqlite3_close(db);
}

#define V1_ROWS								\
	"INSERT INTO sandboxes VALUES ('00000000000000000000000001',"	\
	"  'alice', 'default', 'running', 3000, 'public', 512, 0.5, 600,"	\
	"  '{\"A\":\"1\"}', '{\"k\":\"v\"}', 'c0ffee', NULL, 1000, 2000);"	\
	"INSERT INTO sandboxes VALUES ('00000000000000000000000002',"	\
	"  'bob', 'py', 'stopped', 8000, 'private', 256, 1, 0, '{}', '{}',"	\
	"  NULL, 'oom', 1500, 1500);"					\
	"INSERT INTO tasks (id, sandbox_id, agent, spec_json, state,"	\
	"  exit_code, created_at, started_at, finished_at) VALUES"	\
	"  ('00000000000000000000000101', '00000000000000000000000001',"	\
	"  'command', '{\"cmd\":[\"ls\"]}', 'succeeded', 0, 3000, 3100,"	\
	"  3200);"

/*
 * A real v1 file with sandboxes and a task migrates to v2: every row and
 * field kept, 'paused' and pause_timeout_s accepted, the tasks foreign key
 * still pointing at sandboxes and still cascading.
 */
static void
test_migrate_v1(void)
{
	const char		*path = tpath("v1.db");
	struct store		*s;
	struct store_sandbox	 got, *list;
	struct store_task	 t;
	char			*cause, id1[STORE_ID_LEN + 1], buf[512];
	char			 id2[STORE_ID_LEN + 1], tid[STORE_ID_LEN + 1];
	size_t			 n;
	int			 count;

	make_id(id1, 1);
	make_id(id2, 2);
	make_id(tid, 101);
	CHECK(make_v1(path, "PRAGMA foreign_keys=ON", V1_ROWS) == 0);
	/* The premise: v1 refuses 'paused'. */
	CHECK(raw_exec(path, "UPDATE sandboxes SET state = 'paused'") ==
	    SQLITE_CONSTRAINT);

	s = store_open(path, &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		fprintf(stderr, "  cause: %s\n", cause);
		free(cause);
		return;
	}
	CHECK(store_schema_version(s) == STORE_SCHEMA_VERSION);

	/* Every row and field as v1 had it; the new column defaults to 0. */
	CHECK(store_sandbox_get(s, id1, &got) == 0);
	CHECK_STR(got.tenant, "alice");
	CHECK_STR(got.template_name, "default");
	CHECK(got.state == SANDBOX_RUNNING);
	CHECK(got.port == 3000);
	CHECK(got.visibility == SANDBOX_PUBLIC);
	CHECK(got.memory_mb == 512);
	CHECK(got.cpus == 0.5);
	CHECK(got.idle_timeout_s == 600);
	CHECK(got.pause_timeout_s == 0);
	CHECK_STR(got.env_json, "{\"A\":\"1\"}");
	CHECK_STR(got.labels_json, "{\"k\":\"v\"}");
	CHECK_STR(got.container_id, "c0ffee");
	CHECK(got.error == NULL);
	CHECK(got.created_at == 1000 && got.last_active_at == 2000);
	store_sandbox_clear(&got);
	CHECK(store_sandbox_get(s, id2, &got) == 0);
	CHECK(got.state == SANDBOX_STOPPED);
	CHECK_STR(got.error, "oom");
	store_sandbox_clear(&got);
	CHECK(store_sandbox_list(s, NULL, &list, &n) == 0 && n == 2);
	store_sandbox_list_free(list, n);
	CHECK(store_task_get(s, tid, &t) == 0);
	CHECK_STR(t.sandbox_id, id1);
	CHECK(t.state == TASK_SUCCEEDED && t.finished_at == 3200);
	store_task_clear(&t);

	/* The new state and column are accepted. */
	CHECK(store_sandbox_set_state(s, id1, SANDBOX_PAUSED, NULL) == 0);
	CHECK(store_sandbox_get(s, id1, &got) == 0);
	CHECK(got.state == SANDBOX_PAUSED);
	store_sandbox_clear(&got);
	CHECK(store_sandbox_count(s, SANDBOX_PAUSED, &count) == 0 &&
	    count == 1);

	/* Foreign keys are on again: no task for a missing sandbox. */
	memset(&t, 0, sizeof t);
	make_id(t.id, 102);
	make_id(t.sandbox_id, 77);
	t.agent = "command";
	t.spec_json = "{}";
	t.state = TASK_QUEUED;
	CHECK(store_task_insert(s, &t) == STORE_NOTFOUND);
	store_close(s);

	/*
	 * The schema text: tasks still references sandboxes (not a renamed
	 * table), no sandboxes_new is left, the three indexes are back.
	 */
	raw_query(path, "SELECT sql FROM sqlite_master WHERE name = 'tasks'",
	    buf, sizeof buf);
	CHECK(strstr(buf, "REFERENCES sandboxes (id) ON DELETE CASCADE") !=
	    NULL);
	raw_query(path, "SELECT count(*) FROM sqlite_master WHERE "
	    "sql LIKE '%sandboxes_new%' OR name LIKE '%_new'", buf, sizeof buf);
	CHECK_STR(buf, "0");
	raw_query(path, "SELECT group_concat(name, ',') FROM (SELECT name "
	    "FROM sqlite_master WHERE type = 'index' AND tbl_name = "
	    "'sandboxes' AND sql IS NOT NULL ORDER BY name)", buf, sizeof buf);
	CHECK_STR(buf, "sandboxes_created,sandboxes_state,sandboxes_tenant");
	raw_query(path, "SELECT count(*) FROM pragma_foreign_key_check", buf,
	    sizeof buf);
	CHECK_STR(buf, "0");

	/* Reopened at the current version: nothing runs again; the cascade still works. */
	s = store_open(path, &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	CHECK(store_schema_version(s) == STORE_SCHEMA_VERSION);
	CHECK(store_sandbox_delete(s, id1) == 0);
	CHECK(store_task_get(s, tid, &t) == STORE_NOTFOUND);
	store_task_clear(&t);
	CHECK(store_sandbox_count(s, -1, &count) == 0 && count == 1);
	store_close(s);
	raw_query(path, "SELECT count(*) FROM tasks", buf, sizeof buf);
	CHECK_STR(buf, "0");
}

/*
 * A v1 file whose task points at no sandbox (written with foreign keys
 * off) fails the check before COMMIT: the open is refused and the file
 * stays at v1 with its rows.
 */
static void
test_migrate_v1_orphan(void)
{
	const char	*path = tpath("v1orphan.db");
	struct store	*s;
	char		*cause = NULL, buf[64];

	CHECK(make_v1(path, "PRAGMA foreign_keys=OFF", V1_ROWS
	    "DELETE FROM sandboxes WHERE id = '00000000000000000000000001';")
	    == 0);
	s = store_open(path, &cause);
	CHECK(s == NULL);
	CHECK(cause != NULL && strstr(cause, "migration to version 2") != NULL
	    && strstr(cause, "tasks") != NULL);
	if (cause != NULL)
		fprintf(stderr, "  cause: %s\n", cause);
	free(cause);
	store_close(s);
	CHECK(raw_pragma(path, "user_version", buf, sizeof buf) == 0);
	CHECK_STR(buf, "1");
	raw_query(path, "SELECT count(*) FROM sandboxes", buf, sizeof buf);
	CHECK_STR(buf, "1");
	raw_query(path, "SELECT count(*) FROM tasks", buf, sizeof buf);
	CHECK_STR(buf, "1");
	raw_query(path, "SELECT count(*) FROM sqlite_master WHERE "
	    "name = 'sandboxes_new'", buf, sizeof buf);
	CHECK_STR(buf, "0");
}

static void
test_too_new(void)
{
	struct store	*s;
	sqlite3		*db;
	char		*cause, v[32] = "";

	CHECK(sqlite3_open(tpath("new.db"), &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "CREATE TABLE future (x); "
	    "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);

	s = store_open(tpath("new.db"), &cause);
	CHECK(s == NULL);
	CHECK(cause != NULL && strstr(cause, "newer") != NULL &&
	    strstr(cause, "99") != NULL);
	if (cause != NULL)
		fprintf(stderr, "  cause: %s\n", cause);
	free(cause);
	store_close(s);
	CHECK(raw_pragma(tpath("new.db"), "user_version", v, sizeof v) == 0);
	CHECK_STR(v, "99");
}

/* Garbage, or a real database with a mangled page, gives a clear cause. */
static void
test_corrupt(void)
{
	struct store		*s;
	struct store_sandbox	 sb;
	char			*cause, junk[8192];
	size_t			 i;
	int			 fd;

	for (i = 0; i < sizeof junk; i++)
		junk[i] = (char)("garbage!"[i % 8] ^ (i * 31));
	fd = open(tpath("junk.db"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd != -1 && write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
	close(fd);
	s = store_open(tpath("junk.db"), &cause);
	CHECK(s == NULL);
	CHECK(cause != NULL && strstr(cause, "junk.db") != NULL &&
	    strstr(cause, "not a database") != NULL);
	if (cause != NULL)
		fprintf(stderr, "  cause: %s\n", cause);
	free(cause);

	/* A short file that is not even a header. */
	fd = open(tpath("short.db"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd != -1 && write(fd, "hello", 5) == 5);
	close(fd);
	s = store_open(tpath("short.db"), &cause);
	CHECK(s == NULL);
	CHECK(cause != NULL);
	free(cause);

	/* A valid header with a mangled schema page. */
	s = store_open(tpath("mangled.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	make_sandbox(&sb, 1, "a", 1);
	CHECK(store_sandbox_insert(s, &sb) == 0);
	store_close(s);
	fd = open(tpath("mangled.db"), O_WRONLY);
	CHECK(fd != -1 && pwrite(fd, junk, 3000, 100) == 3000);
	close(fd);
	s = store_open(tpath("mangled.db"), &cause);
	CHECK(s == NULL);
	CHECK(cause != NULL && strstr(cause, "mangled.db") != NULL);
	if (cause != NULL)
		fprintf(stderr, "  cause: %s\n", cause);
	free(cause);
	store_close(s);
}

/* Write n sandboxes into a fresh database at path. */
static void
fill(const char *path, int n)
{
	struct store		*s;
	struct store_sandbox	 sb;
	char			*cause;
	int			 i;

	if ((s = store_open(path, &cause)) == NULL) {
		fprintf(stderr, "fill: %s\n", cause);
		free(cause);
		return;
	}
	for (i = 0; i < n; i++) {
		make_sandbox(&sb, i, i % 10 ? "tenant-a" : "tenant-b", i);
		store_sandbox_insert(s, &sb);
	}
	store_close(s);
}

/* Insert and get rates, one autocommit transaction per insert. */
static void
test_throughput(void)
{
	struct store		*s;
	struct store_sandbox	 sb, got;
	char			*cause;
	int64_t			 t0, t1, t2;
	int			 i, n = 5000, bad = 0;

	s = store_open(tpath("speed.db"), &cause);
	CHECK(s != NULL);
	if (s == NULL) {
		free(cause);
		return;
	}
	t0 = now_us();
	for (i = 0; i < n; i++) {
		make_sandbox(&sb, i, "tenant", i);
		if (store_sandbox_insert(s, &sb) != 0)
			bad++;
	}
	t1 = now_us();
	for (i = 0; i < n; i++) {
		make_id(sb.id, (i * 7919) % n);
		if (store_sandbox_get(s, sb.id, &got) != 0)
			bad++;
		store_sandbox_clear(&got);
	}
	t2 = now_us();
	CHECK(bad == 0);
	printf("store: %d inserts in %.1f ms (%.0f/s), %d gets in %.1f ms "
	    "(%.0f/s)\n", n, (t1 - t0) / 1000.0, n * 1e6 / (t1 - t0 + 1), n,
	    (t2 - t1) / 1000.0, n * 1e6 / (t2 - t1 + 1));
	store_close(s);
}

/*
 * RSS of a fresh process that opens a store of n sandboxes and lists them
 * all, as the daemon does at start. A child process, so the numbers are
 * not those of this test's own heap.
 */
static void
test_rss(const char *argv0)
{
	static const int	 sizes[] = { 200, 5000 };
	char			 name[32], *args[4];
	size_t			 i;
	pid_t			 pid;
	int			 status;

	for (i = 0; i < nitems(sizes); i++) {
		snprintf(name, sizeof name, "rss%d.db", sizes[i]);
		fill(tpath(name), sizes[i]);
		fflush(stdout);
		if ((pid = fork()) == 0) {
			args[0] = (char *)argv0;
			args[1] = "--rss";
			args[2] = (char *)tpath(name);
			args[3] = NULL;
			execv(argv0, args);
			_exit(127);
		}
		CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			printf("store: rss measurement for %d skipped\n",
			    sizes[i]);
	}
}

/* The --rss child: open, list everything, report VmRSS at each step. */
static int
rss_child(const char *path)
{
	struct store		*s;
	struct store_sandbox	*list;
	char			*cause;
	size_t			 n;
	long			 before, opened, listed, freed;

	before = proc_status_kb("VmRSS");
	if ((s = store_open(path, &cause)) == NULL) {
		fprintf(stderr, "%s\n", cause);
		free(cause);
		return (1);
	}
	opened = proc_status_kb("VmRSS");
	if (store_sandbox_list(s, NULL, &list, &n) != 0)
		return (1);
	listed = proc_status_kb("VmRSS");
	store_sandbox_list_free(list, n);
	freed = proc_status_kb("VmRSS");
	printf("store: %zu sandboxes: VmRSS %ld kB before open, %ld kB open, "
	    "%ld kB holding the list, %ld kB after freeing it; VmHWM %ld kB\n",
	    n, before, opened, listed, freed, proc_status_kb("VmHWM"));
	store_close(s);
	return (0);
}

/* Remove the flat test directory. */
static void
cleanup(void)
{
	DIR		*d;
	struct dirent	*de;

	if ((d = opendir(tmpdir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			unlink(tpath(de->d_name));
	}
	closedir(d);
	if (rmdir(tmpdir) != 0)
		fprintf(stderr, "rmdir %s: %s\n", tmpdir, strerror(errno));
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--rss") == 0)
		return (rss_child(argv[2]));

	log_init(LOG_LEVEL_WARN);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/test_store.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return (1);
	}

	RUN(test_open_create);
	RUN(test_wal);
	RUN(test_reopen);
	RUN(test_sandbox_crud);
	RUN(test_sandbox_bad_insert);
	RUN(test_strings);
	RUN(test_tasks);
	RUN(test_tenants);
	RUN(test_apikeys);
	RUN(test_usage);
	RUN(test_backup);
	RUN(test_state_names);
	RUN(test_migrate_v1);
	RUN(test_migrate_v1_orphan);
	RUN(test_too_new);
	RUN(test_corrupt);
	RUN(test_throughput);
	test_rss(argv[0]);

	cleanup();
	return (unit_finish());
}
