/*
 * Not a test: how long a typical browser request head takes to parse.
 *
 *     make tests/bench/http_parse_bench && tests/bench/http_parse_bench [N]
 *
 * N parses (default 1,000,000) of one request, each checked; prints ns per
 * request and MB/s. It was a loop in the unit suite, where it asserted
 * nothing useful and ran under valgrind too.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"

#include "tests/unit/browser_req.h"

int
main(int argc, char **argv)
{
	struct http_request_head	 req;
	struct timespec			 t0, t1;
	long				 i, n = argc > 1 ? atol(argv[1]) : 1000000;
	size_t				 len = strlen(browser_req);
	double				 ns;

	if (n <= 0) {
		fprintf(stderr, "usage: http_parse_bench [N > 0]\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++) {
		if (http_parse_request(browser_req, len, &req) != (int)len) {
			fprintf(stderr, "parse %ld failed\n", i);
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
	printf("%zu-byte request, %ld parses, %.1f ns/request, %.0f MB/s\n",
	    len, n, ns / n, len * (double)n / (ns / 1e9) / 1e6);
	return 0;
}
