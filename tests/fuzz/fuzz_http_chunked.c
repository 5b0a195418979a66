/*
 * libFuzzer target: the chunked-coding scanner. The input is scanned three
 * ways — whole, in pieces of varying sizes (taken from the input's first
 * bytes) and byte by byte — and all three must agree on the outcome (error
 * or not, bytes consumed, done, payload and trailer lines delivered). Each
 * call must consume at most what it was given and report payload and
 * trailers only from inside it; a finished message's trailers are whole
 * CRLF-ended lines.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "tests/fuzz/fuzz.h"

/* The outcome of one way of scanning. */
struct fuzz_run {
	const char	*piece;		/* the piece being scanned */
	size_t		 piece_len;
	char		*payload;	/* everything on_data was handed */
	size_t		 payload_len;
	char		*trailers;	/* everything on_trailer was handed */
	size_t		 trailers_len;
	size_t		 consumed;
	int		 error;
	int		 done;
};

/* on_data: the span must lie in the current piece; append it. */
static void
fuzz_data_cb(void *arg, const char *p, size_t n)
{
	struct fuzz_run	*run = arg;

	FUZZ_ASSERT(n > 0);
	FUZZ_ASSERT(p >= run->piece && n <= run->piece_len &&
	    (size_t)(p - run->piece) <= run->piece_len - n);
	memcpy(run->payload + run->payload_len, p, n);
	run->payload_len += n;
}

/* on_trailer: the same rules as on_data. */
static void
fuzz_trailer_cb(void *arg, const char *p, size_t n)
{
	struct fuzz_run	*run = arg;

	FUZZ_ASSERT(n > 0);
	FUZZ_ASSERT(p >= run->piece && n <= run->piece_len &&
	    (size_t)(p - run->piece) <= run->piece_len - n);
	memcpy(run->trailers + run->trailers_len, p, n);
	run->trailers_len += n;
}

/*
 * Scan data in pieces whose sizes come from sizes[] in turn (0 in sizes
 * means 1); each piece is its own exactly-sized heap copy.
 */
static void
fuzz_scan(const uint8_t *data, size_t size, const uint8_t *sizes,
    size_t nsizes, struct fuzz_run *run)
{
	struct http_chunked	 c;
	size_t			 off = 0, n, i = 0;
	ssize_t			 r;
	char			*b;

	memset(run, 0, sizeof *run);
	run->payload = malloc(size ? size : 1);
	run->trailers = malloc(size ? size : 1);
	http_chunked_init(&c);
	c.on_trailer = fuzz_trailer_cb;
	while (off < size) {
		n = nsizes ? sizes[i++ % nsizes] : size;
		if (n == 0)
			n = 1;
		if (n > size - off)
			n = size - off;
		b = malloc(n);
		memcpy(b, data + off, n);
		run->piece = b;
		run->piece_len = n;
		r = http_chunked_scan(&c, b, n, fuzz_data_cb, run);
		free(b);
		FUZZ_ASSERT(r >= -1 && r <= (ssize_t)n);
		if (r < 0) {
			run->error = 1;
			/* The error sticks. */
			FUZZ_ASSERT(http_chunked_scan(&c, "0\r\n\r\n", 5, NULL,
			    NULL) == -1);
			return;
		}
		run->consumed += r;
		if (c.done) {
			run->done = 1;
			FUZZ_ASSERT(run->trailers_len == 0 ||
			    (run->trailers_len >= 2 &&
			    memcmp(run->trailers + run->trailers_len - 2,
			    "\r\n", 2) == 0));
			FUZZ_ASSERT(http_chunked_scan(&c, "x", 1, NULL,
			    NULL) == 0);
			return;
		}
		/* Short only when the message ended. */
		FUZZ_ASSERT((size_t)r == n);
		off += n;
	}
}

/* Two runs must agree. */
static void
fuzz_same(const struct fuzz_run *a, const struct fuzz_run *b)
{
	FUZZ_ASSERT(a->error == b->error);
	FUZZ_ASSERT(a->payload_len == b->payload_len);
	FUZZ_ASSERT(memcmp(a->payload, b->payload, a->payload_len) == 0);
	if (!a->error) {
		FUZZ_ASSERT(a->trailers_len == b->trailers_len);
		FUZZ_ASSERT(memcmp(a->trailers, b->trailers,
		    a->trailers_len) == 0);
		FUZZ_ASSERT(a->done == b->done);
		FUZZ_ASSERT(a->consumed == b->consumed);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t	 one = 1;
	struct fuzz_run		 whole, pieces, bytes;
	size_t			 nsizes;

	/* Up to 4 leading bytes choose piece sizes, yet all is scanned. */
	nsizes = size < 4 ? size : 4;
	fuzz_scan(data, size, NULL, 0, &whole);
	fuzz_scan(data, size, data, nsizes, &pieces);
	fuzz_scan(data, size, &one, 1, &bytes);
	fuzz_same(&whole, &pieces);
	fuzz_same(&whole, &bytes);
	FUZZ_ASSERT(whole.payload_len <= whole.consumed || whole.error);
	free(whole.payload);
	free(pieces.payload);
	free(bytes.payload);
	free(whole.trailers);
	free(pieces.trailers);
	free(bytes.trailers);
	return 0;
}
