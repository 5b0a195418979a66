/*
 * What the HTTP fuzz targets share: an assertion that aborts (so libFuzzer
 * keeps the input) and the checks that a parser's results lie inside its
 * input and hold no CR, LF or NUL.
 */
#ifndef SBX_FUZZ_H
#define SBX_FUZZ_H

#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_ASSERT(x) do {						\
	if (!(x)) {							\
		fprintf(stderr, "%s:%d: assertion failed: %s\n",	\
		    __FILE__, __LINE__, #x);				\
		abort();						\
	}								\
} while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* 1 if [p, p + n) lies inside [base, base + len). */
static inline int
fuzz_inside(const char *p, size_t n, const char *base, size_t len)
{
	return p >= base && n <= len && (size_t)(p - base) <= len - n;
}

/* 1 if no byte of s is CR, LF or NUL. */
static inline int
fuzz_clean(const char *s, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return 0;
	}
	return 1;
}

static inline int
fuzz_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	remove(path);
	return 0;
}

/* Remove a scratch tree a target made (from an atexit handler). */
static inline void
fuzz_rm_tree(const char *dir)
{
	nftw(dir, fuzz_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

#endif /* SBX_FUZZ_H */
