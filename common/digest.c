/*
 * SHA-256, for API keys: the store and the config keep only the digest of
 * a key, never the key.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>

#include <openssl/evp.h>

#include "common/common.h"

/* SHA-256 of data as 64 lowercase hex digits. */
void
digest_sha256_hex(const void *data, size_t len,
    char out[DIGEST_SHA256_HEX + 1])
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen = 0, i;

	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != DIGEST_SHA256_HEX / 2)
		fatalx("digest: SHA-256 failed");
	for (i = 0; i < mdlen; i++) {
		out[i * 2] = hex[md[i] >> 4];
		out[i * 2 + 1] = hex[md[i] & 0xf];
	}
	out[DIGEST_SHA256_HEX] = '\0';
}
