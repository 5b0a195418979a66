/*
 * libFuzzer target: the response head parser and response body framing,
 * with the same contract checks as the request target (results inside the
 * input, clean names and values, prefix consistency).
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

/* Check the framing answer for one request method. */
static void
fuzz_check_body(const struct http_response_head *resp, const char *method)
{
	enum http_body_kind	kind;
	uint64_t		length;
	int			r;

	r = http_response_body(resp, method, &kind, &length);
	FUZZ_ASSERT(r == 0 || r == -1);
	if (r != 0)
		return;
	FUZZ_ASSERT(kind == HTTP_BODY_NONE || kind == HTTP_BODY_LENGTH ||
	    kind == HTTP_BODY_CHUNKED || kind == HTTP_BODY_UNTIL_CLOSE);
	FUZZ_ASSERT(kind == HTTP_BODY_LENGTH || length == 0);
	FUZZ_ASSERT(length <= (uint64_t)INT64_MAX);
	if ((method != NULL && strcmp(method, "HEAD") == 0) ||
	    resp->status < 200 || resp->status == 204 || resp->status == 304)
		FUZZ_ASSERT(kind == HTTP_BODY_NONE);
}

/* Check an accepted response head against the input it came from. */
static void
fuzz_check_head(const struct http_response_head *resp, const char *buf,
    size_t used)
{
	const struct http_header	*h;
	size_t				 i;

	FUZZ_ASSERT(resp->nheaders <= HTTP_MAX_HEADERS);
	FUZZ_ASSERT(resp->minor_version == 0 || resp->minor_version == 1);
	FUZZ_ASSERT(resp->status >= 100 && resp->status <= 599);
	FUZZ_ASSERT(http_status_text(resp->status) != NULL);
	FUZZ_ASSERT(fuzz_inside(resp->reason, resp->reason_len, buf, used));
	FUZZ_ASSERT(fuzz_clean(resp->reason, resp->reason_len));
	for (i = 0; i < resp->nheaders; i++) {
		h = &resp->headers[i];
		FUZZ_ASSERT(h->name_len > 0);
		FUZZ_ASSERT(fuzz_inside(h->name, h->name_len, buf, used));
		FUZZ_ASSERT(fuzz_inside(h->value, h->value_len, buf, used));
		FUZZ_ASSERT(memchr(h->name, ':', h->name_len) == NULL);
		FUZZ_ASSERT(fuzz_clean(h->name, h->name_len));
		FUZZ_ASSERT(fuzz_clean(h->value, h->value_len));
		(void)http_header_has_token(h, "close");
	}
	fuzz_check_body(resp, "GET");
	fuzz_check_body(resp, "HEAD");
	fuzz_check_body(resp, "CONNECT");
	fuzz_check_body(resp, NULL);
}

/* Parse a prefix of data from its own exactly-sized copy. */
static int
fuzz_parse_prefix(const uint8_t *data, size_t k)
{
	static struct http_response_head	 resp;
	char					*b = malloc(k ? k : 1);
	int					 r;

	memcpy(b, data, k);
	r = http_parse_response(b, k, &resp);
	free(b);
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_response_head	 resp;
	const char				*buf = (const char *)data;
	size_t					 cuts[3], i;
	int					 r, rp;

	r = http_parse_response(buf, size, &resp);
	FUZZ_ASSERT(r == -1 || r == -2 || r > 0);
	if (r > 0) {
		FUZZ_ASSERT((size_t)r <= size && r <= HTTP_MAX_HEAD_SIZE);
		fuzz_check_head(&resp, buf, (size_t)r);
	}
	if (r == -2)
		FUZZ_ASSERT(size < HTTP_MAX_HEAD_SIZE);

	cuts[0] = size / 2;
	cuts[1] = size > 0 ? size - 1 : 0;
	cuts[2] = r > 0 ? (size_t)r - 1 : size / 3;
	for (i = 0; i < 3; i++) {
		if (cuts[i] >= size)
			continue;
		rp = fuzz_parse_prefix(data, cuts[i]);
		if (r > 0 && cuts[i] < (size_t)r)
			FUZZ_ASSERT(rp == -2);
		else if (r > 0)
			FUZZ_ASSERT(rp == r);
		else if (r == -1)
			FUZZ_ASSERT(rp == -1 || rp == -2);
		else
			FUZZ_ASSERT(rp == -2);
	}
	return 0;
}
