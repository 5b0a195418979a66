/*
 * Identifiers: lowercase ULIDs. 48 bits of milliseconds then 80 random bits,
 * in Crockford base32, so ids sort by creation time and never collide in
 * practice.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>

#include "common/common.h"

static const char id_alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";

/* Make a new id in out (26 characters and a NUL). */
void
id_new(char out[ID_LEN + 1])
{
	unsigned char	rnd[10];
	uint64_t	ms, hi, lo;
	int		i;

	ms = (uint64_t)time_now_ms() & 0xffffffffffffULL;
	random_bytes(rnd, sizeof rnd);

	/* 48-bit time: 10 characters, the first holding only 3 bits. */
	for (i = 9; i >= 0; i--) {
		out[i] = id_alphabet[ms & 31];
		ms >>= 5;
	}

	/* 80 random bits: two 40-bit halves of 8 characters each. */
	hi = lo = 0;
	for (i = 0; i < 5; i++) {
		hi = (hi << 8) | rnd[i];
		lo = (lo << 8) | rnd[i + 5];
	}
	for (i = 7; i >= 0; i--) {
		out[10 + i] = id_alphabet[hi & 31];
		out[18 + i] = id_alphabet[lo & 31];
		hi >>= 5;
		lo >>= 5;
	}
	out[ID_LEN] = '\0';
}

/* 1 if s[0..len) is a lowercase ULID as id_new makes them. */
int
id_valid(const char *s, size_t len)
{
	size_t	i;

	if (s == NULL || len != ID_LEN)
		return 0;
	/* The first character carries the top 3 bits of the time. */
	if (s[0] < '0' || s[0] > '7')
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '\0' || strchr(id_alphabet, s[i]) == NULL)
			return 0;
	}
	return 1;
}
