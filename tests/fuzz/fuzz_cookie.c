/*
 * libFuzzer target: the cookie and query rewriters (common/cookie.c).
 * The input is used as a Set-Cookie value, a Cookie value and a request
 * target, each in an exactly-sized heap copy so a read past it is caught.
 * Checked: results never grow; a stripped Set-Cookie has no Domain
 * attribute left and is the input with whole attributes cut; nothing
 * named sandboxd_token survives in a rewritten Cookie or query, and the
 * rewrite is idempotent.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "tests/fuzz/fuzz.h"

#define NAME		"sandboxd_token"
#define NAME_LEN	14

static void
fuzz_set_cookie(const char *in, size_t size)
{
	char	*out, *again;
	size_t	 len = 0, len2 = 0, i, j;
	int	 r;

	out = malloc(size ? size : 1);
	r = http_setcookie_strip_domain(in, size, NULL, &len);
	FUZZ_ASSERT(r == http_setcookie_strip_domain(in, size, out, &len));
	if (r == 1) {
		FUZZ_ASSERT(len < size);
		/* A subsequence of the input that starts like it. */
		for (i = j = 0; i < len && j < size; j++)
			if (out[i] == in[j])
				i++;
		FUZZ_ASSERT(i == len);
		again = malloc(len ? len : 1);
		FUZZ_ASSERT(http_setcookie_strip_domain(out, len, again,
		    &len2) == 0);
		free(again);
		/* In place gives the same. */
		again = malloc(size ? size : 1);
		memcpy(again, in, size);
		FUZZ_ASSERT(http_setcookie_strip_domain(again, size, again,
		    &len2) == 1);
		FUZZ_ASSERT(len2 == len && memcmp(again, out, len) == 0);
		free(again);
	}
	free(out);
}

static void
fuzz_cookie(const char *in, size_t size)
{
	char		*out;
	const char	*v;
	size_t		 len = 0, pos = 0, vlen, n = 0, len2;
	int		 r;

	while (http_cookie_next(in, size, &pos, NAME, NAME_LEN, &v, &vlen)) {
		FUZZ_ASSERT(fuzz_inside(v, vlen, in, size));
		FUZZ_ASSERT(pos <= size);
		n++;
	}
	out = malloc(size ? size : 1);
	r = http_cookie_remove(in, size, NAME, NAME_LEN, out, &len);
	FUZZ_ASSERT(r >= 0 && (size_t)r == n);
	if (r > 0) {
		FUZZ_ASSERT(len < size);
		pos = 0;
		FUZZ_ASSERT(!http_cookie_next(out, len, &pos, NAME, NAME_LEN,
		    &v, &vlen));
		FUZZ_ASSERT(http_cookie_remove(out, len, NAME, NAME_LEN, out,
		    &len2) == 0);
	}
	free(out);
}

static void
fuzz_query(const char *in, size_t size)
{
	char		*out, *again;
	const char	*v = NULL;
	size_t		 len = 0, vlen = 0, len2;
	int		 r;

	out = malloc(size ? size : 1);
	r = http_query_remove(in, size, NAME, NAME_LEN, out, &len, &v, &vlen);
	FUZZ_ASSERT(r >= 0);
	if (r > 0) {
		FUZZ_ASSERT(len < size);
		FUZZ_ASSERT(vlen == 0 || fuzz_inside(v, vlen, in, size));
		/* The path is kept as it was. */
		FUZZ_ASSERT(memcmp(out, in, (size_t)((const char *)
		    memchr(in, '?', size) - in)) == 0);
		again = malloc(len ? len : 1);
		FUZZ_ASSERT(http_query_remove(out, len, NAME, NAME_LEN, again,
		    &len2, &v, &vlen) == 0);
		free(again);
	}
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*in;

	in = malloc(size ? size : 1);
	memcpy(in, data, size);
	fuzz_set_cookie(in, size);
	fuzz_cookie(in, size);
	fuzz_query(in, size);
	free(in);
	return 0;
}
