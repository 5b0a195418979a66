/*
 * sandboxd key create|list|revoke: API keys kept hashed in the store
 * (control/keys.c has their form). The CLI writes the store while the
 * daemon runs — SQLite's WAL lets both in — and the daemon reads a key's
 * row on every request that presents it, so a revocation needs no restart.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "store/store.h"
#include "control/control.h"
#include "sandboxd.h"

static const char key_help[] =
    "usage: sandboxd key create [-c FILE] [--json] [--no-store] TENANT\n"
    "       sandboxd key list [-c FILE] [--json] [TENANT]\n"
    "       sandboxd key revoke [-c FILE] TENANT [KEY_ID]\n\n"
    "API keys kept in the store (data_dir/sandboxd.db) as the SHA-256 of "
    "their secret.\n\n"
    "  create  make a key for TENANT and print its secret, once (it is "
    "never stored);\n"
    "          also prints the secret_hash line that keeps the same key in "
    "the\n"
    "          config instead. --no-store: print them without storing the "
    "key.\n"
    "  list    every key (or TENANT's): id, tenant, created, last used, "
    "state;\n"
    "          never a secret.\n"
    "  revoke  revoke TENANT's key KEY_ID, or all of TENANT's keys. The "
    "running\n"
    "          daemon refuses the key from its next request on.\n\n"
    "A store key of a tenant with an [api_key TENANT] section has that "
    "section's\nadmin flag and ceilings; otherwise it is a non-admin key "
    "with the default\nceilings. Exit codes: 0 ok, 1 runtime failure (or "
    "no key to revoke), 2 usage\nor config error.\n";

static int	key_name_valid(const char *);
static struct store *key_store(const struct config *, int);
static int	key_create(struct config *, const char *, int, int);
static int	key_list(struct config *, const char *, int);
static int	key_revoke(struct config *, const char *, const char *);
static void	key_time(int64_t, char *, size_t);

/* A tenant name as the config allows it: [A-Za-z0-9_.-]{1,64}. */
static int
key_name_valid(const char *s)
{
	size_t	len = strlen(s);

	return (len >= 1 && len <= 64 &&
	    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789_.-") == len);
}

/* Open the store under data_dir; create: make it if it is not there. */
static struct store *
key_store(const struct config *cf, int create)
{
	struct store	*store;
	char		*dbpath, *cause = NULL;

	if (create && mkdir_p(cf->data_dir, 0711) == -1) {
		fprintf(stderr, "sandboxd: cannot make data_dir %s: %s\n",
		    cf->data_dir, strerror(errno));
		return (NULL);
	}
	xasprintf(&dbpath, "%s/sandboxd.db", cf->data_dir);
	if (!create && access(dbpath, F_OK) != 0) {
		fprintf(stderr, "sandboxd: no store at %s\n", dbpath);
		free(dbpath);
		return (NULL);
	}
	if ((store = store_open(dbpath, &cause)) == NULL)
		fprintf(stderr, "sandboxd: %s\n", cause);
	free(cause);
	free(dbpath);
	return (store);
}

int
cmd_key(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "json", no_argument, NULL, 'j' },
		{ "no-store", no_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 }
	};
	struct config	*cf;
	const char	*path = NULL, *verb;
	int		 ch, json = 0, nostore = 0, nargs, rv;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(key_help, argc < 2 ? stderr : stdout);
		return (argc < 2 ? EXIT_USAGE : 0);
	}
	verb = argv[1];
	if (strcmp(verb, "create") != 0 && strcmp(verb, "list") != 0 &&
	    strcmp(verb, "revoke") != 0) {
		fprintf(stderr, "sandboxd: key: unknown command \"%s\"\n\n",
		    verb);
		fputs(key_help, stderr);
		return (EXIT_USAGE);
	}
	argc--;
	argv++;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'h':
			fputs(key_help, stdout);
			return (0);
		case 'j':
			json = 1;
			break;
		case 'n':
			nostore = 1;
			break;
		default:
			fputs(key_help, stderr);
			return (EXIT_USAGE);
		}
	}
	nargs = argc - optind;
	if ((strcmp(verb, "create") == 0 && nargs != 1) ||
	    (strcmp(verb, "list") == 0 && nargs > 1) ||
	    (strcmp(verb, "revoke") == 0 && (nargs < 1 || nargs > 2)) ||
	    (nostore && strcmp(verb, "create") != 0) ||
	    (json && strcmp(verb, "revoke") == 0)) {
		fputs(key_help, stderr);
		return (EXIT_USAGE);
	}
	if (nargs >= 1 && !key_name_valid(argv[optind])) {
		fprintf(stderr, "sandboxd: key: \"%s\" is not a tenant name "
		    "(1 to 64 characters A-Z a-z 0-9 _ . -)\n", argv[optind]);
		return (EXIT_USAGE);
	}
	if (nargs == 2 && !id_valid(argv[optind + 1],
	    strlen(argv[optind + 1]))) {
		fprintf(stderr, "sandboxd: key: \"%s\" is not a key id (26 "
		    "lowercase characters, as \"key list\" shows)\n",
		    argv[optind + 1]);
		return (EXIT_USAGE);
	}
	log_init(LOG_LEVEL_WARN);
	if ((cf = load_config(path, 1)) == NULL)
		return (EXIT_USAGE);
	if (strcmp(verb, "create") == 0)
		rv = key_create(cf, argv[optind], json, nostore);
	else if (strcmp(verb, "list") == 0)
		rv = key_list(cf, nargs == 1 ? argv[optind] : NULL, json);
	else
		rv = key_revoke(cf, argv[optind], nargs == 2 ?
		    argv[optind + 1] : NULL);
	config_free(cf);
	return (rv);
}

/* key create: the secret goes to stdout once and nowhere else. */
static int
key_create(struct config *cf, const char *tenant, int json, int nostore)
{
	struct store		*store = NULL;
	struct store_apikey	 row;
	struct json_object	*o;
	char			 hash[DIGEST_SHA256_HEX + 1], *secret, *cause;
	unsigned char		 raw[32];
	size_t			 i;

	memset(&row, 0, sizeof row);
	if (nostore) {
		/* A config-managed key: any 256-bit secret; hex reads well. */
		random_bytes(raw, sizeof raw);
		secret = xmalloc(sizeof raw * 2 + 1);
		for (i = 0; i < sizeof raw; i++)
			snprintf(secret + i * 2, 3, "%02x", raw[i]);
		explicit_bzero(raw, sizeof raw);
	} else {
		if ((store = key_store(cf, 1)) == NULL)
			return (EXIT_RUNTIME);
		secret = control_key_create(store, tenant, &row, &cause);
		store_close(store);
		if (secret == NULL) {
			fprintf(stderr, "sandboxd: key create: %s\n", cause);
			free(cause);
			return (EXIT_RUNTIME);
		}
	}
	digest_sha256_hex(secret, strlen(secret), hash);
	if (json) {
		o = json_object_new_object();
		json_object_object_add(o, "tenant",
		    json_object_new_string(tenant));
		if (!nostore)
			json_object_object_add(o, "id",
			    json_object_new_string(row.id));
		json_object_object_add(o, "secret",
		    json_object_new_string(secret));
		json_object_object_add(o, "secret_hash",
		    json_object_new_string_len(hash, sizeof hash - 1));
		json_object_object_add(o, "stored",
		    json_object_new_boolean(!nostore));
		printf("%s\n", json_object_to_json_string_ext(o,
		    JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	} else {
		if (nostore)
			printf("A key for tenant %s, not stored: it works once "
			    "its hash is in the config.\n", tenant);
		else
			printf("Made API key %s for tenant %s; it works at "
			    "once.\n", row.id, tenant);
		printf("The secret is shown only now:\n\n    %s\n\n"
		    "Send it as \"Authorization: Bearer <secret>\". To keep "
		    "the key in the config\n%s, write in [api_key %s]:\n\n"
		    "    secret_hash = sha256:%s\n", secret, nostore ? "" :
		    "instead (then revoke the stored one)", tenant, hash);
	}
	explicit_bzero(secret, strlen(secret));
	free(secret);
	store_apikey_clear(&row);
	return (0);
}

/* "2026-11-27T10:00:00Z", or "-" for 0. */
static void
key_time(int64_t ms, char *buf, size_t len)
{
	if (ms == 0)
		snprintf(buf, len, "-");
	else
		time_format_rfc3339(ms, buf, len);
}

/* key list: ids and times, never a secret (the store has none). */
static int
key_list(struct config *cf, const char *tenant, int json)
{
	struct store		*store;
	struct store_apikey	*rows;
	struct json_object	*o, *arr, *k;
	char			 c[32], u[32], r[32];
	size_t			 n, i;

	if ((store = key_store(cf, 0)) == NULL)
		return (EXIT_RUNTIME);
	if (store_apikey_list(store, tenant, &rows, &n) != 0) {
		fprintf(stderr, "sandboxd: key list: the store could not be "
		    "read\n");
		store_close(store);
		return (EXIT_RUNTIME);
	}
	store_close(store);
	if (json) {
		o = json_object_new_object();
		arr = json_object_new_array();
		for (i = 0; i < n; i++) {
			k = json_object_new_object();
			key_time(rows[i].created_at, c, sizeof c);
			key_time(rows[i].last_used_at, u, sizeof u);
			key_time(rows[i].revoked_at, r, sizeof r);
			json_object_object_add(k, "id",
			    json_object_new_string(rows[i].id));
			json_object_object_add(k, "tenant",
			    json_object_new_string(rows[i].tenant));
			json_object_object_add(k, "created_at",
			    json_object_new_string(c));
			json_object_object_add(k, "last_used_at",
			    rows[i].last_used_at != 0 ?
			    json_object_new_string(u) : NULL);
			json_object_object_add(k, "revoked_at",
			    rows[i].revoked_at != 0 ?
			    json_object_new_string(r) : NULL);
			json_object_array_add(arr, k);
		}
		json_object_object_add(o, "keys", arr);
		printf("%s\n", json_object_to_json_string_ext(o,
		    JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	} else if (n == 0)
		printf("no keys in the store%s%s\n", tenant != NULL ?
		    " for tenant " : "", tenant != NULL ? tenant : "");
	else {
		printf("%-26s  %-16s  %-20s  %-20s  %s\n", "ID", "TENANT",
		    "CREATED", "LAST USED", "STATE");
		for (i = 0; i < n; i++) {
			key_time(rows[i].created_at, c, sizeof c);
			key_time(rows[i].last_used_at, u, sizeof u);
			key_time(rows[i].revoked_at, r, sizeof r);
			printf("%-26s  %-16s  %-20s  %-20s  %s%s\n",
			    rows[i].id, rows[i].tenant, c, u,
			    rows[i].revoked_at != 0 ? "revoked " : "live",
			    rows[i].revoked_at != 0 ? r : "");
		}
	}
	store_apikey_list_free(rows, n);
	return (0);
}

/* key revoke: one key, or all of the tenant's; seen by the next request. */
static int
key_revoke(struct config *cf, const char *tenant, const char *id)
{
	struct store	*store;
	int		 rv, count;

	if ((store = key_store(cf, 0)) == NULL)
		return (EXIT_RUNTIME);
	rv = store_apikey_revoke(store, tenant, id, time_now_ms(), &count);
	store_close(store);
	if (rv == -1) {
		fprintf(stderr, "sandboxd: key revoke: the store refused\n");
		return (EXIT_RUNTIME);
	}
	if (rv == STORE_NOTFOUND) {
		fprintf(stderr, "sandboxd: key revoke: tenant %s has no live "
		    "key%s%s in the store\n", tenant, id != NULL ? " " : "",
		    id != NULL ? id : "");
		return (EXIT_RUNTIME);
	}
	printf("revoked %d key%s of tenant %s\n", count, count == 1 ? "" :
	    "s", tenant);
	return (0);
}
