/*
 * The tenants table: the names that own sandboxes, recorded from the config's
 * [api_key] sections so the store remembers every tenant it has served.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sqlite3.h>

#include "common/common.h"
#include "store/store_int.h"

/* Record a tenant if it is new; an existing one is left as it is. */
int
store_tenant_ensure(struct store *s, const char *name)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_TENANT_ENSURE);
	int		 rc;

	store_bind_text(stmt, 1, name);
	sqlite3_bind_int64(stmt, 2, time_now_ms());
	rc = store_step_write(s, stmt);
	if (rc != SQLITE_DONE)
		store_warn(s, "ensure tenant", name);
	store_release(stmt);
	return (rc == SQLITE_DONE ? 0 : -1);
}

/* 1 if the tenant is recorded, 0 if not, -1 on error. */
int
store_tenant_exists(struct store *s, const char *name)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_TENANT_EXISTS);
	int		 rc, ret;

	store_bind_text(stmt, 1, name);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		ret = 1;
	else if (rc == SQLITE_DONE)
		ret = 0;
	else {
		store_warn(s, "look up tenant", name);
		ret = -1;
	}
	store_release(stmt);
	return (ret);
}
