/*
 * Unit tests for common/id.c: the lowercase ULID format, uniqueness, the
 * time prefix and what id_valid refuses.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "tests/unit/unit.h"

static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";

static int	cmp_id(const void *, const void *);
static uint64_t	decode_time(const char *);

/* qsort comparator for 27-byte id slots. */
static int
cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The 48-bit millisecond time in the first 10 characters of an id. */
static uint64_t
decode_time(const char *id)
{
	uint64_t	t = 0;
	int		i;

	for (i = 0; i < 10; i++)
		t = t << 5 | (uint64_t)(strchr(alphabet, id[i]) - alphabet);
	return t;
}

/* Every id is 26 characters of the alphabet, first 0-7, and valid. */
static void
test_format(void)
{
	char	id[ID_LEN + 1];
	int	i, ok = 1;
	size_t	j;

	for (i = 0; i < 1000; i++) {
		memset(id, 'X', sizeof id);
		id_new(id);
		ok &= strlen(id) == ID_LEN;
		ok &= id[0] >= '0' && id[0] <= '7';
		for (j = 0; j < ID_LEN; j++)
			ok &= strchr(alphabet, id[j]) != NULL;
		ok &= id_valid(id, strlen(id));
	}
	CHECK(ok);
}

/* 10000 ids are all different. */
static void
test_unique(void)
{
	char	(*ids)[ID_LEN + 1];
	int	i, dups = 0, n = 10000;

	ids = calloc((size_t)n, sizeof *ids);
	for (i = 0; i < n; i++)
		id_new(ids[i]);
	qsort(ids, (size_t)n, sizeof *ids, cmp_id);
	for (i = 1; i < n; i++)
		dups += strcmp(ids[i - 1], ids[i]) == 0;
	CHECK(dups == 0);
	free(ids);
}

/* The prefix is the current time in ms and grows with it. */
static void
test_time_prefix(void)
{
	char			a[ID_LEN + 1], b[ID_LEN + 1];
	int64_t			before, after;
	struct timespec		ts = { 0, 5 * 1000 * 1000 };

	before = time_now_ms();
	id_new(a);
	after = time_now_ms();
	CHECK(decode_time(a) >= (uint64_t)before);
	CHECK(decode_time(a) <= (uint64_t)after);

	nanosleep(&ts, NULL);
	id_new(b);
	CHECK(decode_time(b) > decode_time(a));
	/* Lexical order follows time order. */
	CHECK(memcmp(a, b, 10) < 0);
	CHECK(strcmp(a, b) < 0);
}

/* id_valid refuses everything id_new would not make. */
static void
test_valid(void)
{
	char	id[ID_LEN + 1], bad[ID_LEN + 2];

	id_new(id);
	CHECK(id_valid(id, ID_LEN) == 1);
	CHECK(id_valid("01hzy0000000000000000000zz", 26) == 1);
	CHECK(id_valid("7zzzzzzzzzzzzzzzzzzzzzzzzz", 26) == 1);
	CHECK(id_valid("8zzzzzzzzzzzzzzzzzzzzzzzzz", 26) == 0);
	CHECK(id_valid("", 0) == 0);
	CHECK(id_valid(NULL, 26) == 0);
	CHECK(id_valid(id, ID_LEN - 1) == 0);
	memcpy(bad, id, ID_LEN);
	bad[ID_LEN] = 'a';
	bad[ID_LEN + 1] = '\0';
	CHECK(id_valid(bad, ID_LEN + 1) == 0);

	/* Uppercase, and the letters Crockford leaves out (i l o u). */
	memcpy(bad, id, sizeof id);
	bad[5] = 'A';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = 'i';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = 'l';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = 'o';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = 'u';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = '-';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = '\0';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = '/';
	CHECK(id_valid(bad, ID_LEN) == 0);
	bad[5] = '.';
	CHECK(id_valid(bad, ID_LEN) == 0);
}

int
main(void)
{
	RUN(test_format);
	RUN(test_unique);
	RUN(test_time_prefix);
	RUN(test_valid);
	return unit_finish();
}
