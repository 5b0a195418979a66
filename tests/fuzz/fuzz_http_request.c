/*
 * libFuzzer target: the request head parser, body framing, header helpers
 * and url decoding. Beyond "no crash", it checks the parser's contract:
 * results point inside the input, every accepted name is a token and every
 * value is free of CR, LF and NUL, and the result is prefix-consistent (a
 * prefix of an accepted head is -2; a prefix of a refused input is never
 * accepted).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "tests/fuzz/fuzz.h"

/* Check an accepted request head against the input it came from. */
static void
fuzz_check_head(const struct http_request_head *req, const char *buf,
    size_t used)
{
	const struct http_header	*h;
	enum http_body_kind		 kind;
	uint64_t			 length;
	size_t				 i, j;
	char				*out;
	int				 r;

	FUZZ_ASSERT(req->nheaders <= HTTP_MAX_HEADERS);
	FUZZ_ASSERT(req->minor_version == 0 || req->minor_version == 1);
	FUZZ_ASSERT(req->method_len > 0 && req->target_len > 0);
	FUZZ_ASSERT(fuzz_inside(req->method, req->method_len, buf, used));
	FUZZ_ASSERT(fuzz_inside(req->target, req->target_len, buf, used));
	for (i = 0; i < req->target_len; i++)
		FUZZ_ASSERT((unsigned char)req->target[i] > ' ' &&
		    req->target[i] != 0x7f);
	for (i = 0; i < req->nheaders; i++) {
		h = &req->headers[i];
		FUZZ_ASSERT(h->name_len > 0);
		FUZZ_ASSERT(fuzz_inside(h->name, h->name_len, buf, used));
		FUZZ_ASSERT(fuzz_inside(h->value, h->value_len, buf, used));
		FUZZ_ASSERT(memchr(h->name, ':', h->name_len) == NULL);
		FUZZ_ASSERT(fuzz_clean(h->name, h->name_len));
		FUZZ_ASSERT(fuzz_clean(h->value, h->value_len));
		for (j = 0; j < h->name_len; j++)
			FUZZ_ASSERT(h->name[j] != ' ' && h->name[j] != '\t');
		if (h->value_len > 0) {
			FUZZ_ASSERT(h->value[0] != ' ' && h->value[0] != '\t');
			FUZZ_ASSERT(h->value[h->value_len - 1] != ' ' &&
			    h->value[h->value_len - 1] != '\t');
		}
		(void)http_header_has_token(h, "chunked");
		(void)http_header_has_token(h, "");
	}
	(void)http_header_find(req->headers, req->nheaders, "host");

	r = http_request_body(req, &kind, &length);
	FUZZ_ASSERT(r == 0 || r == -1);
	if (r == 0) {
		FUZZ_ASSERT(kind == HTTP_BODY_NONE ||
		    kind == HTTP_BODY_LENGTH || kind == HTTP_BODY_CHUNKED);
		FUZZ_ASSERT(kind == HTTP_BODY_LENGTH || length == 0);
		FUZZ_ASSERT(length <= (uint64_t)INT64_MAX);
		/* Never both framings: that is the smuggling shape. */
		if (kind == HTTP_BODY_CHUNKED)
			FUZZ_ASSERT(http_header_find(req->headers,
			    req->nheaders, "content-length") == NULL);
		if (kind == HTTP_BODY_LENGTH)
			FUZZ_ASSERT(http_header_find(req->headers,
			    req->nheaders, "transfer-encoding") == NULL);
		/* One reading only: one header, "chunked" exactly. */
		for (i = j = 0; i < req->nheaders; i++) {
			h = &req->headers[i];
			if ((h->name_len == 14 && strncasecmp(h->name,
			    "content-length", 14) == 0) || (h->name_len == 17 &&
			    strncasecmp(h->name, "transfer-encoding", 17) == 0)) {
				j++;
				if (kind == HTTP_BODY_CHUNKED)
					FUZZ_ASSERT(h->value_len == 7 &&
					    strncasecmp(h->value, "chunked",
					    7) == 0);
			}
		}
		FUZZ_ASSERT(j == (kind == HTTP_BODY_NONE ? 0 : 1));
	}

	r = http_url_decode(req->target, req->target_len, &out);
	FUZZ_ASSERT(r >= -1);
	if (r >= 0) {
		FUZZ_ASSERT((size_t)r <= req->target_len);
		FUZZ_ASSERT(strlen(out) == (size_t)r);
		free(out);
	} else
		FUZZ_ASSERT(out == NULL);
}

/* Parse a prefix of data from its own exactly-sized copy. */
static int
fuzz_parse_prefix(const uint8_t *data, size_t k)
{
	struct http_request_head	 req;
	char				*b = malloc(k ? k : 1);
	int				 r;

	memcpy(b, data, k);
	r = http_parse_request(b, k, &req);
	free(b);
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_request_head	 req;	/* large: keep off the stack */
	const char			*buf = (const char *)data;
	size_t				 cuts[3], i;
	int				 r, rp;

	r = http_parse_request(buf, size, &req);
	FUZZ_ASSERT(r == -1 || r == -2 || r > 0);
	if (r > 0) {
		FUZZ_ASSERT((size_t)r <= size && r <= HTTP_MAX_HEAD_SIZE);
		fuzz_check_head(&req, buf, (size_t)r);
	}
	if (r == -2)
		FUZZ_ASSERT(size < HTTP_MAX_HEAD_SIZE);

	/* Prefix consistency at a few cut points. */
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
