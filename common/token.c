/*
 * Preview tokens: what lets a browser see a private sandbox's preview.
 *
 *   v1.<sandbox id>.<expiry>.<mac>
 *
 * <sandbox id> is the 26-character lowercase ULID, <expiry> the Unix time
 * in seconds (decimal, no sign, no leading zero) after which the token is
 * refused, and <mac> the unpadded base64url HMAC-SHA256, under the
 * daemon's preview secret, of everything before the last dot. Every
 * character is URL- and cookie-safe ([0-9a-zA-Z._-]), so a token goes into
 * a query or a cookie as is; it is 84 bytes until 2286.
 *
 * A token names no tenant and carries no state: it is valid for its one
 * sandbox until it expires, and all tokens die together when the secret
 * file is replaced. Parsing is strict (exactly one spelling per token),
 * and the MAC is compared in constant time, as text, so no decoder's
 * leniency (padding, stray low bits) is reachable.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/common.h"

#define TOKEN_PREFIX		"v1."
#define TOKEN_PREFIX_LEN	3
#define TOKEN_MAC_TEXT		43	/* base64url of 32 bytes, no padding */
#define TOKEN_MAX_EXPIRY_DIGITS	12	/* up to year 33658 */

static size_t	token_b64url(const unsigned char *, size_t, char *);
static int	token_mac(const uint8_t *, size_t, const char *, size_t,
		    char *);

/* base64url of in[0..len) without padding into out; the length written. */
static size_t
token_b64url(const unsigned char *in, size_t len, char *out)
{
	static const char	 b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				     "abcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t			 i, o = 0;
	uint32_t		 v;

	for (i = 0; i + 3 <= len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = b64[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
	}
	return (o);
}

/* The MAC text of body[0..len) under key, TOKEN_MAC_TEXT bytes; 0 or -1. */
static int
token_mac(const uint8_t *key, size_t keylen, const char *body, size_t len,
    char *out)
{
	unsigned char	mac[EVP_MAX_MD_SIZE];
	unsigned int	maclen = 0;

	if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)body,
	    len, mac, &maclen) == NULL || maclen != 32)
		return (-1);
	token_b64url(mac, maclen, out);
	OPENSSL_cleanse(mac, sizeof mac);
	return (0);
}

/*
 * Make the token for sandbox id valid until expires (Unix seconds) into
 * out (at least TOKEN_MAX_LEN + 1 bytes, NUL-terminated). Returns its
 * length, or 0 on a bad argument or a crypto failure.
 */
size_t
token_make(const uint8_t *key, size_t keylen, const char *id,
    int64_t expires, char *out, size_t size)
{
	int	n;

	if (size < TOKEN_MAX_LEN + 1 || expires <= 0 ||
	    expires >= 1000000000000LL || !id_valid(id, strlen(id)))
		return (0);
	n = snprintf(out, size, TOKEN_PREFIX "%s.%lld.", id,
	    (long long)expires);
	if (n <= 0 || (size_t)n + TOKEN_MAC_TEXT >= size)
		return (0);
	/* The MAC covers everything before its own dot. */
	if (token_mac(key, keylen, out, (size_t)n - 1, out + n) == -1)
		return (0);
	out[n + TOKEN_MAC_TEXT] = '\0';
	return ((size_t)n + TOKEN_MAC_TEXT);
}

/*
 * Split a token without checking its MAC: 0 with the sandbox id (in id,
 * ID_LEN + 1 bytes) and *expires, or -1 if tok[0..len) is not exactly
 * one well-formed token.
 */
int
token_parse(const char *tok, size_t len, char *id, int64_t *expires)
{
	const char	*p, *end = tok + len;
	int64_t		 exp = 0;
	size_t		 i, ndig;

	if (len > TOKEN_MAX_LEN || len < TOKEN_PREFIX_LEN + ID_LEN + 3 +
	    TOKEN_MAC_TEXT || memcmp(tok, TOKEN_PREFIX, TOKEN_PREFIX_LEN) != 0)
		return (-1);
	p = tok + TOKEN_PREFIX_LEN;
	if (!id_valid(p, ID_LEN) || p[ID_LEN] != '.')
		return (-1);
	memcpy(id, p, ID_LEN);
	id[ID_LEN] = '\0';
	p += ID_LEN + 1;
	for (ndig = 0; p + ndig < end && p[ndig] >= '0' && p[ndig] <= '9';
	    ndig++) {
		if (ndig == TOKEN_MAX_EXPIRY_DIGITS)
			return (-1);
		exp = exp * 10 + (p[ndig] - '0');
	}
	if (ndig == 0 || p[0] == '0' || p + ndig >= end || p[ndig] != '.')
		return (-1);
	p += ndig + 1;
	if ((size_t)(end - p) != TOKEN_MAC_TEXT)
		return (-1);
	for (i = 0; i < TOKEN_MAC_TEXT; i++) {
		if (!((p[i] >= 'A' && p[i] <= 'Z') ||
		    (p[i] >= 'a' && p[i] <= 'z') ||
		    (p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '_'))
			return (-1);
	}
	*expires = exp;
	return (0);
}

/*
 * Check a token for sandbox id at time now (Unix seconds): 0 and
 * *expires when it is well formed, its MAC right (compared in constant
 * time), it names id and has not expired; otherwise -1 with *why a short
 * static reason (for logs, never for the client).
 */
int
token_verify(const uint8_t *key, size_t keylen, const char *tok,
    size_t len, const char *id, int64_t now, int64_t *expires,
    const char **why)
{
	char	tid[ID_LEN + 1], mac[TOKEN_MAC_TEXT];
	int64_t	exp;
	size_t	blen;
	int	ok;

	if (token_parse(tok, len, tid, &exp) == -1) {
		*why = "malformed";
		return (-1);
	}
	blen = len - TOKEN_MAC_TEXT - 1;
	if (token_mac(key, keylen, tok, blen, mac) == -1) {
		*why = "crypto failure";
		return (-1);
	}
	/* The MAC first and always: the checks after it leak nothing. */
	ok = CRYPTO_memcmp(mac, tok + blen + 1, TOKEN_MAC_TEXT) == 0;
	if (!ok) {
		*why = "bad signature";
		return (-1);
	}
	if (strcmp(tid, id) != 0) {
		*why = "for another sandbox";
		return (-1);
	}
	if (exp <= now) {
		*why = "expired";
		return (-1);
	}
	*expires = exp;
	return (0);
}
