/*
 * The credential proxy's usage scanner (control/provider.c): the counts it
 * takes from the answers of each provider kind, whole and in pieces, and
 * what it must not count.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/control_int.h"
#include "tests/unit/unit.h"

/* Scan text in pieces of step bytes (0: whole); the counts in *in, *out. */
static void
scan(const char *text, size_t step, int64_t *in, int64_t *out)
{
	struct provider_scan	s;
	size_t			len = strlen(text), i, n;

	memset(&s, 0, sizeof s);
	if (step == 0)
		step = len > 0 ? len : 1;
	for (i = 0; i < len; i += n) {
		n = len - i < step ? len - i : step;
		provider_scan(&s, text + i, n);
	}
	provider_scan_end(&s);
	*in = s.input;
	*out = s.output;
}

/* Every piece size from 1 to 7 and whole give in and out. */
static int
counts(const char *text, int64_t want_in, int64_t want_out)
{
	int64_t	in, out;
	size_t	step;
	int	ok = 1;

	for (step = 0; step < 8; step++) {
		scan(text, step, &in, &out);
		if (in != want_in || out != want_out) {
			fprintf(stderr, "step %zu: %lld/%lld, want %lld/%lld: %s\n",
			    step, (long long)in, (long long)out,
			    (long long)want_in, (long long)want_out, text);
			ok = 0;
		}
	}
	return (ok);
}

static void
test_anthropic(void)
{
	CHECK(counts("{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":11,"
	    "\"output_tokens\":7}}", 11, 7));
	/* The stream: message_start, then running output counts. */
	CHECK(counts("event: message_start\ndata: {\"type\":\"message_start\","
	    "\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}"
	    "\n\nevent: content_block_delta\ndata: {\"delta\":{\"text\":"
	    "\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":"
	    "\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n", 25, 42));
	/* Cache counts are not input; spaces around the colon are fine. */
	CHECK(counts("{\"usage\": {\"input_tokens\" : 3, \"cache_read_input_"
	    "tokens\": 1000, \"cache_creation_input_tokens\":500,"
	    "\"output_tokens\":\n9}}", 3, 9));
}

static void
test_openai(void)
{
	CHECK(counts("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
	    "\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":"
	    "2}}}", 3, 4));
	CHECK(counts("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
	    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
	    "\"completion_tokens\":6}}\n\ndata: [DONE]\n\n", 5, 6));
	/* The Responses API's names. */
	CHECK(counts("{\"usage\":{\"input_tokens\":8,\"output_tokens\":2}}", 8,
	    2));
}

static void
test_not_counted(void)
{
	/* A model's text that quotes a key counts nothing. */
	CHECK(counts("{\"text\":\"\\\"input_tokens\\\": 999\"}", 0, 0));
	CHECK(counts("{\"text\":\"input_tokens\",\"x\":5}", 0, 0));
	/* A key's name as a value, a string number, a negative, a long key. */
	CHECK(counts("{\"type\":\"input_tokens\",\"n\":5}", 0, 0));
	CHECK(counts("{\"input_tokens\":\"12\",\"output_tokens\":-3}", 0, 0));
	CHECK(counts("{\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxinput_tokens\":5}", 0,
	    0));
	CHECK(counts("", 0, 0));
	CHECK(counts("not json at all: input_tokens: 5", 0, 0));
	/* A number the answer ends in is taken; a huge one is capped. */
	CHECK(counts("{\"output_tokens\":12", 0, 12));
	{
		int64_t	in, out;

		scan("{\"input_tokens\":999999999999999999999999999999}", 0,
		    &in, &out);
		CHECK(in > 0 && in < INT64_MAX / 10 && out == 0);
	}
}

int
main(void)
{
	log_init(LOG_LEVEL_WARN);
	RUN(test_anthropic);
	RUN(test_openai);
	RUN(test_not_counted);
	return (unit_finish());
}
