/*
 * libevent's allocator (common/evalloc.c): buffers keep their bytes
 * through blocks that are reused, the lists stay within their bounds, and
 * what libevent hands its caller goes back with ev_free. Installed first,
 * as the daemon does; under AddressSanitizer it stays off (the reuse
 * checks then skip).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/common.h"
#include "tests/unit/unit.h"

static unsigned char
pattern(size_t i)
{
	return (unsigned char)(i * 7 + i / 4093);
}

/* Bytes written in pieces of every size come out the same. */
static void
test_integrity(void)
{
	static const size_t	 sizes[] = { 1, 100, 4000, 4096, 16320, 16384,
	    70000, 131008, 200000 };
	struct evbuffer		*b = evbuffer_new();
	struct evbuffer_iovec	 v;
	unsigned char		*out;
	size_t			 i, j, k, total = 0, at = 0;
	int			 bad = 0;

	for (i = 0; i < nitems(sizes); i++) {
		CHECK(evbuffer_reserve_space(b, sizes[i], &v, 1) == 1);
		for (j = 0; j < sizes[i]; j++)
			((unsigned char *)v.iov_base)[j] = pattern(total + j);
		v.iov_len = sizes[i];
		CHECK(evbuffer_commit_space(b, &v, 1) == 0);
		total += sizes[i];
		/* Drain a little now and then: chains are freed mid-way. */
		if (i % 2 == 1) {
			out = malloc(sizes[i] / 2 + 1);
			j = evbuffer_remove(b, out, sizes[i] / 2);
			for (k = 0; k < j; k++)
				bad |= out[k] != pattern(at + k);
			at += j;
			free(out);
		}
	}
	CHECK(evbuffer_get_length(b) == total - at);
	out = malloc(total);
	j = evbuffer_remove(b, out, total);
	CHECK(j == total - at);
	for (i = 0; i < j; i++)
		bad |= out[i] != pattern(at + i);
	CHECK(!bad);
	free(out);
	evbuffer_free(b);
}

/* A freed block of a kept size is the next one given out. */
static void
test_reuse(void)
{
	struct evbuffer		*a, *b;
	struct evbuffer_iovec	 v;
	void			*first;

	if (!evalloc_enabled()) {
		fprintf(stderr, "test_reuse: evalloc is off under "
		    "AddressSanitizer, skipped\n");
		return;
	}
	a = evbuffer_new();
	CHECK(evbuffer_reserve_space(a, 16 * 1024 - 64, &v, 1) == 1);
	first = v.iov_base;
	evbuffer_free(a);
	CHECK(evalloc_kept_bytes() >= 16 * 1024);
	b = evbuffer_new();
	CHECK(evbuffer_reserve_space(b, 16 * 1024 - 64, &v, 1) == 1);
	CHECK(v.iov_base == first);
	evbuffer_free(b);
}

/* However many are freed at once, the lists keep a few MiB at most. */
static void
test_bounded(void)
{
	struct evbuffer		*bufs[200];
	struct evbuffer_iovec	 v;
	size_t			 i;

	for (i = 0; i < nitems(bufs); i++) {
		bufs[i] = evbuffer_new();
		CHECK(evbuffer_reserve_space(bufs[i], (i % 2 ? 16 : 128) *
		    1024 - 64, &v, 1) == 1);
		v.iov_len = 1;
		CHECK(evbuffer_commit_space(bufs[i], &v, 1) == 0);
	}
	for (i = 0; i < nitems(bufs); i++)
		evbuffer_free(bufs[i]);
	/* 32 blocks a size, 1 MiB at most: under 4 MiB over the eight. */
	CHECK(evalloc_kept_bytes() <= 4 * 1024 * 1024);
	if (evalloc_enabled())
		CHECK(evalloc_kept_bytes() >= 1024 * 1024);
	evalloc_release();
	CHECK(evalloc_kept_bytes() == 0);
}

/* A line evbuffer_readln allocated goes back with ev_free. */
static void
test_readln(void)
{
	struct evbuffer	*b = evbuffer_new();
	char		*line;
	int		 n = 0;

	evbuffer_add_printf(b, "one\ntwo\n%s\n", "three");
	while ((line = evbuffer_readln(b, NULL, EVBUFFER_EOL_LF)) != NULL) {
		CHECK(strlen(line) >= 3);
		ev_free(line);
		n++;
	}
	CHECK(n == 3);
	evbuffer_free(b);
}

int
main(void)
{
	evalloc_init();
	log_init(LOG_LEVEL_WARN);
	RUN(test_integrity);
	RUN(test_reuse);
	RUN(test_bounded);
	RUN(test_readln);
	evalloc_release();
	return unit_finish();
}
