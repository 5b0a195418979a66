/*
 * libFuzzer target: the preview-token parser and verifier. Any bytes must
 * be refused or accepted without a crash; what verifies must parse, name
 * the sandbox it was checked for and be exactly the token token_make
 * makes for that id and expiry (one spelling per token); and a token
 * made from what parsed must verify, while the input with its MAC
 * changed in one place must not.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "tests/fuzz/fuzz.h"

static const uint8_t	fuzz_key[TOKEN_KEY_LEN] =
			    "fuzz-key-fuzz-key-fuzz-key-fuzz";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		*in, id[ID_LEN + 1], tok[TOKEN_MAX_LEN + 1];
	const char	*why = NULL;
	int64_t		 exp = 0, vexp = 0;
	size_t		 len;

	in = malloc(size ? size : 1);
	memcpy(in, data, size);
	if (token_parse(in, size, id, &exp) == -1) {
		FUZZ_ASSERT(token_verify(fuzz_key, sizeof fuzz_key, in, size,
		    "01jd3k5x8q2w7e9r4t6y1v3h5m", 0, &vexp, &why) == -1);
		FUZZ_ASSERT(why != NULL);
		free(in);
		return 0;
	}
	FUZZ_ASSERT(strlen(id) == ID_LEN && id_valid(id, ID_LEN));
	FUZZ_ASSERT(exp > 0);
	len = token_make(fuzz_key, sizeof fuzz_key, id, exp, tok, sizeof tok);
	FUZZ_ASSERT(len > 0);
	/* The input verifies only if it is the token we would make. */
	if (token_verify(fuzz_key, sizeof fuzz_key, in, size, id, exp - 1,
	    &vexp, &why) == 0) {
		FUZZ_ASSERT(len == size && memcmp(tok, in, size) == 0);
		FUZZ_ASSERT(vexp == exp);
	} else
		FUZZ_ASSERT(len != size || memcmp(tok, in, size) != 0);
	/* What we make verifies, until it expires, for its id only. */
	FUZZ_ASSERT(token_verify(fuzz_key, sizeof fuzz_key, tok, len, id,
	    exp - 1, &vexp, &why) == 0);
	FUZZ_ASSERT(token_verify(fuzz_key, sizeof fuzz_key, tok, len, id, exp,
	    &vexp, &why) == -1);
	tok[len - 1] = tok[len - 1] == 'A' ? 'B' : 'A';
	FUZZ_ASSERT(token_verify(fuzz_key, sizeof fuzz_key, tok, len, id,
	    exp - 1, &vexp, &why) == -1);
	free(in);
	return 0;
}
