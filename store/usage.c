/*
 * The usage table: what each sandbox used through the credential proxy,
 * per [provider]: requests, and the tokens the provider's own usage
 * fields reported (control/provider.c counts them as answers pass).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/common.h"
#include "store/store_int.h"

/* Add one exchange's counts; STORE_NOTFOUND if the sandbox is gone. */
int
store_usage_add(struct store *s, const char *sandbox_id, const char *provider,
    int64_t requests, int64_t input_tokens, int64_t output_tokens)
{
	sqlite3_stmt	*stmt = store_stmt(s, STORE_STMT_USAGE_ADD);
	int		 rc, ret = 0;

	store_bind_text(stmt, 1, sandbox_id);
	store_bind_text(stmt, 2, provider);
	sqlite3_bind_int64(stmt, 3, requests);
	sqlite3_bind_int64(stmt, 4, input_tokens);
	sqlite3_bind_int64(stmt, 5, output_tokens);
	rc = store_step_write(s, stmt);
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		ret = STORE_NOTFOUND;
	else if (rc != SQLITE_DONE) {
		store_warn(s, "add usage of sandbox", sandbox_id);
		ret = -1;
	}
	store_release(stmt);
	return (ret);
}

/* A sandbox's usage rows, by provider name. */
int
store_usage_list(struct store *s, const char *sandbox_id,
    struct store_usage **out, size_t *n)
{
	sqlite3_stmt		*stmt = store_stmt(s, STORE_STMT_USAGE_LIST);
	struct store_usage	*u = NULL, *row;
	const unsigned char	*name;
	size_t			 count = 0;
	int			 rc;

	store_bind_text(stmt, 1, sandbox_id);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		u = xreallocarray(u, count + 1, sizeof *u);
		row = &u[count++];
		memset(row, 0, sizeof *row);
		if ((name = sqlite3_column_text(stmt, 0)) != NULL)
			snprintf(row->provider, sizeof row->provider, "%s",
			    (const char *)name);
		row->requests = sqlite3_column_int64(stmt, 1);
		row->input_tokens = sqlite3_column_int64(stmt, 2);
		row->output_tokens = sqlite3_column_int64(stmt, 3);
	}
	store_release(stmt);
	if (rc != SQLITE_DONE) {
		store_warn(s, "list usage of sandbox", sandbox_id);
		free(u);
		*out = NULL;
		*n = 0;
		return (-1);
	}
	*out = u;
	*n = count;
	return (0);
}
