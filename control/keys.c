/*
 * API keys kept in the store ("sandboxd key create"): the secret's form,
 * how one is made, and how a presented one is found. A secret reads
 *
 *	sbx_<key id>_<43 base64url characters: 256 random bits>
 *
 * The key id (a ULID) is not secret: it finds the row without a search by
 * hash, and "key list" and "key revoke" name keys by it. The store holds
 * only the SHA-256 of the whole secret, compared in constant time.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/control_int.h"

#define KEY_PREFIX		"sbx_"
#define KEY_PREFIX_LEN		4
#define KEY_RANDOM_BYTES	32
#define KEY_RANDOM_CHARS	43	/* base64url of 32 bytes, unpadded */
#define KEY_LEN			(KEY_PREFIX_LEN + ID_LEN + 1 + KEY_RANDOM_CHARS)
/* A key's last use is written at most this often (a write per request
 * would make every API call a store write). */
#define KEY_TOUCH_EVERY_MS	(60 * 1000)

static void	key_base64url(const unsigned char *, size_t, char *);

/* Unpadded base64url of in[0..len) into out (4 * len / 3 + 1 bytes). */
static void
key_base64url(const unsigned char *in, size_t len, char *out)
{
	static const char	 tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t		 v;
	size_t			 i;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*out++ = tab[(v >> 18) & 63];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = tab[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		*out++ = tab[(v >> 18) & 63];
		*out++ = tab[(v >> 12) & 63];
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*out++ = tab[(v >> 18) & 63];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
	}
	*out = '\0';
}

/*
 * Make a key for tenant and store its hash. Returns the secret (malloc'd,
 * to be shown once and then freed) and fills *row; NULL with *cause if the
 * store refused.
 */
char *
control_key_create(struct store *store, const char *tenant,
    struct store_apikey *row, char **cause)
{
	unsigned char	 raw[KEY_RANDOM_BYTES];
	char		 rnd[KEY_RANDOM_CHARS + 2], *secret;

	*cause = NULL;
	memset(row, 0, sizeof *row);
	id_new(row->id);
	random_bytes(raw, sizeof raw);
	key_base64url(raw, sizeof raw, rnd);
	explicit_bzero(raw, sizeof raw);
	xasprintf(&secret, KEY_PREFIX "%s_%s", row->id, rnd);
	explicit_bzero(rnd, sizeof rnd);
	digest_sha256_hex(secret, strlen(secret), row->secret_hash);
	row->tenant = xstrdup(tenant);
	row->created_at = time_now_ms();
	if (store_apikey_insert(store, row) != 0) {
		xasprintf(cause, "the store refused the new key");
		explicit_bzero(secret, strlen(secret));
		free(secret);
		store_apikey_clear(row);
		return (NULL);
	}
	return (secret);
}

/* 1 if secret has the form of a store key, with its id copied to id. */
int
control_key_id(const char *secret, size_t len, char id[ID_LEN + 1])
{
	if (len != KEY_LEN || strncmp(secret, KEY_PREFIX, KEY_PREFIX_LEN) != 0 ||
	    secret[KEY_PREFIX_LEN + ID_LEN] != '_' ||
	    !id_valid(secret + KEY_PREFIX_LEN, ID_LEN))
		return (0);
	memcpy(id, secret + KEY_PREFIX_LEN, ID_LEN);
	id[ID_LEN] = '\0';
	return (1);
}

/*
 * The store key a presented secret is, if any: live (not revoked) and with
 * the same hash. On a match, *k gets the tenant's policy: its [api_key]
 * section's admin flag and ceilings when the config has one, else those
 * of a non-admin key with the defaults; k->name points into tenant. The
 * store is read on every call, so a key revoked by the CLI fails the
 * next request. Returns 1 on a match, 0 otherwise.
 */
int
control_key_lookup(struct control *ctl, const char *secret, size_t len,
    const char *hash, struct cfg_api_key *k, char *tenant, size_t tenantlen)
{
	const struct cfg_api_key	*policy;
	struct store_apikey		 row;
	char				 id[ID_LEN + 1];
	int64_t				 now;
	int				 ok;

	if (!control_key_id(secret, len, id) ||
	    store_apikey_get(ctl->store, id, &row) != 0)
		return (0);
	ok = timingsafe_eq(hash, DIGEST_SHA256_HEX, row.secret_hash,
	    strlen(row.secret_hash)) && row.revoked_at == 0 &&
	    strlen(row.tenant) < tenantlen;
	if (ok) {
		memset(k, 0, sizeof *k);
		snprintf(tenant, tenantlen, "%s", row.tenant);
		if ((policy = control_tenant_key(ctl, tenant)) != NULL)
			*k = *policy;
		k->name = tenant;
		k->secret = NULL;
		k->secret_hash = NULL;
		now = time_now_ms();
		if (now - row.last_used_at >= KEY_TOUCH_EVERY_MS)
			store_apikey_touch(ctl->store, row.id, now);
	}
	store_apikey_clear(&row);
	return (ok);
}
