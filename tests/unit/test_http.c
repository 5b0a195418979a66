/*
 * Tests for common/http.c: heads, every byte split, each rejection rule, the
 * limits, body framing (the smuggling shapes), the chunked scanner split at
 * every position, url decoding, status texts, and a printed throughput check.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "tests/unit/browser_req.h"
#include "tests/unit/unit.h"

/* Parse a request from an exactly-sized heap copy, so overreads show. */
static int
parse_req(const char *s, size_t len, struct http_request_head *req)
{
	char	*b = malloc(len ? len : 1);
	int	 r;

	memcpy(b, s, len);
	r = http_parse_request(b, len, req);
	free(b);
	return r;
}

/* Same for a response. */
static int
parse_resp(const char *s, size_t len, struct http_response_head *resp)
{
	char	*b = malloc(len ? len : 1);
	int	 r;

	memcpy(b, s, len);
	r = http_parse_response(b, len, resp);
	free(b);
	return r;
}

/* 1 if header i of the set has this name and value. */
static int
hdr_is(const struct http_header *h, const char *name, const char *value)
{
	return h->name_len == strlen(name) &&
	    memcmp(h->name, name, h->name_len) == 0 &&
	    h->value_len == strlen(value) &&
	    memcmp(h->value, value, h->value_len) == 0;
}

static void
test_request_basic(void)
{
	struct http_request_head	 req;
	const char			*s =
	    "POST /api/v1/sandboxes?x=1 HTTP/1.1\r\n"
	    "Host: localhost:8080\r\n"
	    "Content-Type:application/json\r\n"
	    "X-Empty:\r\n"
	    "X-Spaces: \t padded value \t \r\n"
	    "Content-Length: 2\r\n"
	    "\r\n{}";
	int				 r;

	r = http_parse_request(s, strlen(s), &req);
	CHECK(r == (int)strlen(s) - 2);
	CHECK(req.method_len == 4 && memcmp(req.method, "POST", 4) == 0);
	CHECK(req.target_len == 21 &&
	    memcmp(req.target, "/api/v1/sandboxes?x=1", 21) == 0);
	CHECK(req.minor_version == 1);
	CHECK(req.nheaders == 5);
	CHECK(hdr_is(&req.headers[0], "Host", "localhost:8080"));
	CHECK(hdr_is(&req.headers[1], "Content-Type", "application/json"));
	CHECK(hdr_is(&req.headers[2], "X-Empty", ""));
	CHECK(hdr_is(&req.headers[3], "X-Spaces", "padded value"));
	CHECK(hdr_is(&req.headers[4], "Content-Length", "2"));
	/* Pointers go into the caller's buffer. */
	CHECK(req.method == s && req.headers[0].name == s + 37);

	s = "GET / HTTP/1.0\r\n\r\n";
	CHECK(http_parse_request(s, strlen(s), &req) == (int)strlen(s));
	CHECK(req.minor_version == 0 && req.nheaders == 0);

	/* Methods are any token; targets may be absolute, '*' or UTF-8. */
	s = "M-SEARCH * HTTP/1.1\r\n\r\n";
	CHECK(http_parse_request(s, strlen(s), &req) == (int)strlen(s));
	s = "GET http://a.example/x HTTP/1.1\r\n\r\n";
	CHECK(http_parse_request(s, strlen(s), &req) == (int)strlen(s));
	s = "GET /caf\xc3\xa9 HTTP/1.1\r\nX: \xc3\xa9t\xc3\xa9\r\n\r\n";
	CHECK(http_parse_request(s, strlen(s), &req) == (int)strlen(s));

	/* Empty lines before the request line are skipped and counted. */
	s = "\r\n\r\nGET / HTTP/1.1\r\n\r\n";
	CHECK(http_parse_request(s, strlen(s), &req) == (int)strlen(s));
	CHECK(req.method == s + 4 && req.method_len == 3);

	/* Pipelined requests: only the first head is consumed. */
	s = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
	CHECK(http_parse_request(s, strlen(s), &req) == 19);

	CHECK(http_parse_request("", 0, &req) == -2);
	CHECK(http_parse_request("\r\n", 2, &req) == -2);
}

/*
 * Feed every prefix of msg: -2 until the head is complete, then expect (its
 * length), also with bytes after it. When expect is -1 (invalid), a prefix
 * may be -2 or -1 but never a success.
 */
static void
split_request(const char *msg, int expect)
{
	struct http_request_head	 req, full;
	size_t				 len = strlen(msg), k;
	int				 r, bad = 0;

	CHECK(parse_req(msg, len, &full) == expect);
	for (k = 0; k <= len; k++) {
		r = parse_req(msg, k, &req);
		if (expect < 0) {
			if (r != -2 && r != -1)
				bad++;
		} else if ((int)k < expect ? r != -2 : r != expect)
			bad++;
	}
	if (bad)
		fprintf(stderr, "split_request: %d bad prefixes of %s\n", bad,
		    msg);
	CHECK(bad == 0);
	if (expect > 0) {
		r = parse_req(msg, len, &req);
		CHECK(req.nheaders == full.nheaders);
		CHECK(req.target_len == full.target_len);
	}
}

static void
test_request_split(void)
{
	split_request(browser_req, (int)strlen(browser_req));
	split_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27);
	split_request("\r\nPUT /f HTTP/1.0\r\nA:b\r\nC: d \r\n\r\nbody", 33);
	split_request("GET / HTTP/1.1\r\nHost : a\r\n\r\n", -1);
	split_request("GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n", -1);
}

static void
test_request_reject(void)
{
	static const char *bad[] = {
		"GET  / HTTP/1.1\r\n\r\n",		/* two spaces */
		"GET /  HTTP/1.1\r\n\r\n",
		" GET / HTTP/1.1\r\n\r\n",
		"GET\t/ HTTP/1.1\r\n\r\n",
		"G(T / HTTP/1.1\r\n\r\n",		/* not a token */
		"GET /a b HTTP/1.1\r\n\r\n",
		"GET /\x01 HTTP/1.1\r\n\r\n",		/* CTL in target */
		"GET /\x7f HTTP/1.1\r\n\r\n",		/* DEL in target */
		"GET / HTTP/1.2\r\n\r\n",
		"GET / HTTP/2.0\r\n\r\n",
		"GET / http/1.1\r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",
		"GET / HTTP/1.10\r\n\r\n",
		"GET /\r\n\r\n",			/* HTTP/0.9 */
		"GET / HTTP/1.1\n\n",			/* bare LF */
		"GET / HTTP/1.1\r\nA: b\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n\n",
		"\nGET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\r\n\r\n",		/* bare CR */
		"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
		"\rGET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",	/* space before colon */
		"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",	/* obs-fold */
		"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
		"GET / HTTP/1.1\r\n A: b\r\n\r\n",
		"GET / HTTP/1.1\r\n: b\r\n\r\n",	/* empty name */
		"GET / HTTP/1.1\r\nHost\r\n\r\n",	/* no colon */
		"GET / HTTP/1.1\r\nA@b: c\r\n\r\n",	/* not a token */
		"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",	/* CTL in value */
		"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
		" / HTTP/1.1\r\n\r\n",			/* empty method */
		"GET  HTTP/1.1\r\n\r\n",		/* empty target */
	};
	struct http_request_head	 req;
	const char			*nul = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
	size_t				 i;
	int				 r;

	for (i = 0; i < nitems(bad); i++) {
		r = parse_req(bad[i], strlen(bad[i]), &req);
		if (r != -1)
			fprintf(stderr, "accepted bad request %zu: %d\n", i, r);
		CHECK(r == -1);
	}
	/* NUL anywhere: in a value, a name, the target, the method. */
	CHECK(parse_req(nul, 27, &req) == -1);
	CHECK(parse_req("GET / HTTP/1.1\r\nA\0: b\r\n\r\n", 25, &req) == -1);
	CHECK(parse_req("GET /\0 HTTP/1.1\r\n\r\n", 19, &req) == -1);
	CHECK(parse_req("G\0T / HTTP/1.1\r\n\r\n", 18, &req) == -1);

	/* Refused as soon as it cannot become valid, not at the end. */
	CHECK(parse_req("GET / HTTP/1.2", 14, &req) == -1);
	CHECK(parse_req("GET / HTTX", 10, &req) == -1);
	CHECK(parse_req("GET /\x01", 6, &req) == -1);
	CHECK(parse_req("GET / HTTP/1.1\r\nA b", 19, &req) == -1);
	CHECK(parse_req("GET / HTTP/1.1\r\nA: b\x02", 21, &req) == -1);
	CHECK(parse_req("GET / HTTP/1.1\r\nA: b\r", 21, &req) == -2);
}

/* Build a request with n headers "Xnnn: v" and extra filler in one header. */
static char *
make_request(int n, size_t filler)
{
	char	*s, *p;
	size_t	 size = 64 + (size_t)n * 16 + filler + 16;
	int	 i;

	p = s = malloc(size);
	p += sprintf(p, "GET / HTTP/1.1\r\n");
	for (i = 0; i < n; i++)
		p += sprintf(p, "X%03d: v\r\n", i);
	if (filler > 0) {
		p += sprintf(p, "F: ");
		memset(p, 'a', filler);
		p += filler;
		p += sprintf(p, "\r\n");
	}
	sprintf(p, "\r\n");
	return s;
}

static void
test_request_limits(void)
{
	struct http_request_head	 req;
	char				*s;
	size_t				 len, fill;

	s = make_request(HTTP_MAX_HEADERS, 0);
	CHECK(parse_req(s, strlen(s), &req) == (int)strlen(s));
	CHECK(req.nheaders == HTTP_MAX_HEADERS);
	free(s);
	s = make_request(HTTP_MAX_HEADERS + 1, 0);
	CHECK(parse_req(s, strlen(s), &req) == -1);
	/* Over the count is refused even before the head is complete. */
	CHECK(parse_req(s, strlen(s) - 4, &req) == -1);
	free(s);

	/* A head of exactly HTTP_MAX_HEAD_SIZE bytes is fine, one more not. */
	s = make_request(1, 0);
	fill = HTTP_MAX_HEAD_SIZE - strlen(s) - 5;	/* "F: " CRLF */
	free(s);
	s = make_request(1, fill);
	len = strlen(s);
	CHECK(len == HTTP_MAX_HEAD_SIZE);
	CHECK(parse_req(s, len, &req) == (int)len);
	CHECK(req.nheaders == 2 && req.headers[1].value_len == fill);
	/* Bytes after a head that fits do not matter. */
	s = realloc(s, len + 10);
	memcpy(s + len, "0123456789", 10);
	CHECK(parse_req(s, len + 10, &req) == (int)len);
	free(s);
	s = make_request(1, fill + 1);
	len = strlen(s);
	CHECK(parse_req(s, len, &req) == -1);
	/* Partial: -2 below the limit, -1 once the limit is reached. */
	CHECK(parse_req(s, HTTP_MAX_HEAD_SIZE - 1, &req) == -2);
	CHECK(parse_req(s, HTTP_MAX_HEAD_SIZE, &req) == -1);
	CHECK(parse_req(s, len - 1, &req) == -1);
	free(s);
}

/*
 * Values and targets are scanned eight bytes at a time: put each kind of
 * byte at every position of a 20-byte value and target and check the
 * verdict matches the byte-by-byte rule.
 */
static void
test_byte_classes(void)
{
	static const struct {
		char	c;
		int	value_ok;
		int	target_ok;
	} bytes[] = {
		{ '\0', 0, 0 }, { '\x01', 0, 0 }, { '\x1f', 0, 0 },
		{ '\t', 1, 0 }, { ' ', 1, 0 }, { '\x7f', 0, 0 },
		{ '\x80', 1, 1 }, { '\xff', 1, 1 }, { '~', 1, 1 }, { '!', 1, 1 },
		{ '\r', 0, 0 }, { '\n', 0, 0 },
	};
	struct http_request_head	 req;
	char				 msg[128];
	size_t				 i, pos, len;
	int				 r, bad = 0;

	for (i = 0; i < nitems(bytes); i++) {
		for (pos = 0; pos < 20; pos++) {
			/* In a header value (not at its ends: OWS is cut). */
			len = sprintf(msg, "GET / HTTP/1.1\r\nX: <%20s>\r\n\r\n",
			    "");
			memset(msg + 20, 'a', 20);
			msg[20 + pos] = bytes[i].c;
			r = parse_req(msg, len, &req);
			if (bytes[i].value_ok ? r != (int)len : r != -1)
				bad++;
			if (r > 0 && req.headers[0].value_len != 22)
				bad++;

			len = sprintf(msg, "GET /%20s HTTP/1.1\r\n\r\n", "");
			memset(msg + 5, 'b', 20);
			msg[5 + pos] = bytes[i].c;
			r = parse_req(msg, len, &req);
			if (bytes[i].target_ok ? r != (int)len : r != -1)
				bad++;
			if (r > 0 && req.target_len != 21)
				bad++;
		}
	}
	if (bad)
		fprintf(stderr, "test_byte_classes: %d bad verdicts\n", bad);
	CHECK(bad == 0);
}

static void
test_response(void)
{
	static const char *bad[] = {
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 099 X\r\n\r\n",
		"HTTP/1.1 600 X\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
		"HTTP/1.1 200 O\x01K\r\n\r\n",
		"HTTP/1.2 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",	/* obs-fold */
		"HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
		"HTTP/1.1 200 OK\r\r\n\r\n",
		"\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
	};
	struct http_response_head	 resp;
	const char			*s;
	size_t				 i, k, len;
	int				 r, bad_splits = 0;

	s = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"
	    "Content-Type: text/plain\r\n\r\nnot found";
	len = strlen(s);
	CHECK(http_parse_response(s, len, &resp) == (int)len - 9);
	CHECK(resp.status == 404 && resp.minor_version == 1);
	CHECK(resp.reason_len == 9 && memcmp(resp.reason, "Not Found", 9) == 0);
	CHECK(resp.nheaders == 2);
	CHECK(hdr_is(&resp.headers[1], "Content-Type", "text/plain"));
	for (k = 0; k <= len; k++) {
		r = parse_resp(s, k, &resp);
		if (k < len - 9 ? r != -2 : r != (int)len - 9)
			bad_splits++;
	}
	CHECK(bad_splits == 0);

	/* Empty reason, missing SP, bare LF line ends (responses only). */
	s = "HTTP/1.0 200 \r\n\r\n";
	CHECK(parse_resp(s, strlen(s), &resp) == (int)strlen(s));
	CHECK(resp.status == 200 && resp.reason_len == 0 &&
	    resp.minor_version == 0);
	s = "HTTP/1.1 204\r\n\r\n";
	CHECK(parse_resp(s, strlen(s), &resp) == (int)strlen(s));
	CHECK(resp.status == 204 && resp.reason_len == 0);
	s = "HTTP/1.1 200 OK\nServer: x\n\nbody";
	CHECK(http_parse_response(s, strlen(s), &resp) == (int)strlen(s) - 4);
	CHECK(resp.nheaders == 1 && hdr_is(&resp.headers[0], "Server", "x"));

	for (i = 0; i < nitems(bad); i++) {
		r = parse_resp(bad[i], strlen(bad[i]), &resp);
		if (r != -1)
			fprintf(stderr, "accepted bad response %zu: %d\n", i, r);
		CHECK(r == -1);
	}
	CHECK(parse_resp("HTTP/1.1 200 OK\r\nA: \0\r\n\r\n", 25, &resp) == -1);
	CHECK(parse_resp("HTTP/1.1 20", 11, &resp) == -2);
	CHECK(parse_resp("HTTP/1.1 200", 12, &resp) == -2);
}

static void
test_headers(void)
{
	struct http_request_head	 req;
	const struct http_header	*h;
	const char			*s =
	    "GET / HTTP/1.1\r\n"
	    "connection: keep-alive , Upgrade\r\n"
	    "Upgrade: websocket\r\n"
	    "X-List: a,,b ,\tc\r\n"
	    "X-Sub: keep-alive-ish\r\n"
	    "\r\n";

	CHECK(http_parse_request(s, strlen(s), &req) > 0);
	h = http_header_find(req.headers, req.nheaders, "Connection");
	CHECK(h == &req.headers[0]);
	CHECK(http_header_has_token(h, "upgrade"));
	CHECK(http_header_has_token(h, "KEEP-ALIVE"));
	CHECK(!http_header_has_token(h, "close"));
	CHECK(!http_header_has_token(h, "keep"));
	CHECK(http_header_find(req.headers, req.nheaders, "UPGRADE") ==
	    &req.headers[1]);
	CHECK(http_header_find(req.headers, req.nheaders, "Upgrad") == NULL);
	CHECK(http_header_find(req.headers, req.nheaders, "missing") == NULL);
	h = http_header_find(req.headers, req.nheaders, "x-list");
	CHECK(h != NULL && http_header_has_token(h, "a") &&
	    http_header_has_token(h, "b") && http_header_has_token(h, "c"));
	CHECK(!http_header_has_token(h, "a,"));
	h = http_header_find(req.headers, req.nheaders, "x-sub");
	CHECK(h != NULL && !http_header_has_token(h, "keep-alive"));
}

/* Framing of a request given as text: returns http_request_body's result. */
static int
req_body(const char *s, enum http_body_kind *kind, uint64_t *length)
{
	struct http_request_head	req;

	if (http_parse_request(s, strlen(s), &req) != (int)strlen(s))
		return -99;
	return http_request_body(&req, kind, length);
}

static void
test_request_body(void)
{
	enum http_body_kind	k;
	uint64_t		l;

	CHECK(req_body("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &k, &l) == 0);
	CHECK(k == HTTP_BODY_NONE && l == 0);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n", &k,
	    &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == 42);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &k,
	    &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == 0);
	/* Leading zeros are digits (RFC 9110 8.6); OWS around is trimmed. */
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n", &k,
	    &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == 7);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: \t 7 \t\r\n\r\n",
	    &k, &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == 7);
	/* A request repeating its length, even the same, is refused. */
	CHECK(req_body("POST / HTTP/1.1\r\ncontent-length: 7\r\n"
	    "Content-Length: 7\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: "
	    "9223372036854775807\r\n\r\n", &k, &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == INT64_MAX);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
	    &k, &l) == 0);
	CHECK(k == HTTP_BODY_CHUNKED);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
	    &k, &l) == 0);
	CHECK(k == HTTP_BODY_CHUNKED);
	/* A request's coding is exactly "chunked": no list at all. */
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: , chunked,\r\n\r\n",
	    &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n",
	    &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, "
	    "identity\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: identity, "
	    "chunked\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: \r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n"
	    "\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunk\r\n\r\n",
	    &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Length: 0\r\n\r\n", &k, &l) == -1);

	/* The smuggling shapes and malformed lengths. */
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Length: 5\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
	    "Content-Length: 6\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n"
	    "\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n"
	    "\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: gzip\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
	    &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
	    &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked;a=1\r\n"
	    "\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
	    &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", &k,
	    &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: "
	    "9223372036854775808\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: "
	    "99999999999999999999999\r\n\r\n", &k, &l) == -1);
	CHECK(req_body("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
	    "Content-Length: abc\r\n\r\n", &k, &l) == -1);
}

/* Framing of a response given as text, answering method. */
static int
resp_body(const char *s, const char *method, enum http_body_kind *kind,
    uint64_t *length)
{
	struct http_response_head	resp;

	if (http_parse_response(s, strlen(s), &resp) != (int)strlen(s))
		return -99;
	return http_response_body(&resp, method, kind, length);
}

static void
test_response_body(void)
{
	enum http_body_kind	k;
	uint64_t		l;

	CHECK(resp_body("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET",
	    &k, &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == 12);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "HEAD",
	    &k, &l) == 0);
	CHECK(k == HTTP_BODY_NONE && l == 0);
	CHECK(resp_body("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
	    "GET", &k, &l) == 0);
	CHECK(k == HTTP_BODY_NONE);
	CHECK(resp_body("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n", "GET", &k, &l) == 0);
	CHECK(k == HTTP_BODY_NONE);
	CHECK(resp_body("HTTP/1.1 100 Continue\r\n\r\n", "POST", &k, &l) == 0);
	CHECK(k == HTTP_BODY_NONE);
	CHECK(resp_body("HTTP/1.1 101 Switching Protocols\r\n\r\n", NULL, &k,
	    &l) == 0);
	CHECK(k == HTTP_BODY_NONE);
	CHECK(resp_body("HTTP/1.1 200 OK\r\n\r\n", "CONNECT", &k, &l) == 0);
	CHECK(k == HTTP_BODY_NONE);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "GET", &k, &l) == 0);
	CHECK(k == HTTP_BODY_CHUNKED);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n"
	    "\r\n", "GET", &k, &l) == 0);
	CHECK(k == HTTP_BODY_CHUNKED);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	    "GET", &k, &l) == 0);
	CHECK(k == HTTP_BODY_UNTIL_CLOSE);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", "GET", &k,
	    &l) == 0);
	CHECK(k == HTTP_BODY_UNTIL_CLOSE && l == 0);
	CHECK(resp_body("HTTP/1.0 200 OK\r\n\r\n", NULL, &k, &l) == 0);
	CHECK(k == HTTP_BODY_UNTIL_CLOSE);
	CHECK(resp_body("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	    "GET", &k, &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == 0);

	CHECK(resp_body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Length: 3\r\n\r\n", "GET", &k, &l) == -1);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n"
	    "\r\n", "GET", &k, &l) == -1);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
	    "Content-Length: 4\r\n\r\n", "GET", &k, &l) == -1);
	CHECK(resp_body("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "GET",
	    &k, &l) == -1);
	CHECK(resp_body("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "GET", &k, &l) == -1);
	/* A response may still repeat an equal length. */
	CHECK(resp_body("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
	    "Content-Length: 3\r\n\r\n", "GET", &k, &l) == 0);
	CHECK(k == HTTP_BODY_LENGTH && l == 3);
}

/* What the chunked scanner collected. */
struct collect {
	char	buf[256];
	size_t	len;
	int	calls;
	int	overflow;
};

/* on_data callback appending payload to a struct collect. */
static void
collect_cb(void *arg, const char *p, size_t n)
{
	struct collect	*c = arg;

	c->calls++;
	if (n == 0 || c->len + n > sizeof c->buf) {
		c->overflow = 1;	/* empty spans must not be reported */
		return;
	}
	memcpy(c->buf + c->len, p, n);
	c->len += n;
}

/*
 * Scan msg cut at the given points (each piece in its own exact heap copy).
 * Returns total consumed, or -1 on an error.
 */
static ssize_t
chunked_pieces(const char *msg, size_t len, const size_t *cuts, size_t ncuts,
    struct collect *col, int *done)
{
	struct http_chunked	 c;
	size_t			 i, from = 0, to;
	ssize_t			 total = 0, r;
	char			*b;

	memset(col, 0, sizeof *col);
	http_chunked_init(&c);
	for (i = 0; i <= ncuts; i++) {
		to = i < ncuts ? cuts[i] : len;
		b = malloc(to - from ? to - from : 1);
		memcpy(b, msg + from, to - from);
		r = http_chunked_scan(&c, b, to - from, collect_cb, col);
		free(b);
		if (r < 0)
			return -1;
		if ((size_t)r > to - from)
			return -3;
		total += r;
		if (c.done)
			break;
		if ((size_t)r != to - from)
			return -4;	/* short count without done */
		from = to;
	}
	*done = c.done;
	return total;
}

static void
test_chunked(void)
{
	static const char msg[] =
	    "5\r\nhello\r\n"
	    "6;name=value;x=\"q\"\r\n world\r\n"
	    "00A \t;ext\r\n, from the\r\n"
	    "1\r\n \r\n"
	    "0\r\n"
	    "X-Trailer: yes\r\n"
	    "Another: one\r\n"
	    "\r\n"
	    "NEXT REQUEST";
	static const char want[] = "hello world, from the ";
	size_t		 len = sizeof msg - 1, body = len - 12, cuts[2], i, j;
	struct collect	 col;
	int		 done, bad = 0;
	ssize_t		 r;

	r = chunked_pieces(msg, len, NULL, 0, &col, &done);
	CHECK(r == (ssize_t)body && done);
	CHECK(col.len == strlen(want) && memcmp(col.buf, want, col.len) == 0);
	CHECK(!col.overflow);

	/* Every single cut, then every pair of cuts. */
	for (i = 0; i <= len; i++) {
		cuts[0] = i;
		r = chunked_pieces(msg, len, cuts, 1, &col, &done);
		if (r != (ssize_t)body || !done || col.len != strlen(want) ||
		    memcmp(col.buf, want, col.len) != 0 || col.overflow)
			bad++;
	}
	for (i = 0; i <= len; i++) {
		for (j = i; j <= len; j++) {
			cuts[0] = i;
			cuts[1] = j;
			r = chunked_pieces(msg, len, cuts, 2, &col, &done);
			if (r != (ssize_t)body || !done ||
			    col.len != strlen(want) ||
			    memcmp(col.buf, want, col.len) != 0)
				bad++;
		}
	}
	CHECK(bad == 0);

	/* Without the end, it is incomplete but consumed whole. */
	r = chunked_pieces(msg, 20, NULL, 0, &col, &done);
	CHECK(r == 20 && !done);
}

/* Body bytes and trailer lines of one scan, apart. */
struct collect2 {
	struct collect	data, trailers;
};

static void
collect2_data_cb(void *arg, const char *p, size_t n)
{
	collect_cb(&((struct collect2 *)arg)->data, p, n);
}

static void
collect2_trailer_cb(void *arg, const char *p, size_t n)
{
	collect_cb(&((struct collect2 *)arg)->trailers, p, n);
}

/*
 * The trailer lines come out whole and in order, wherever the buffers are
 * cut, never the final empty line nor an empty span; none without
 * on_trailer set.
 */
static void
test_chunked_trailers(void)
{
	static const char msg[] =
	    "5\r\nhello\r\n"
	    "0\r\n"
	    "X-Trailer: yes\r\n"
	    "Another:one \r\n"
	    "\r\n";
	static const char want[] = "X-Trailer: yes\r\nAnother:one \r\n";
	struct http_chunked	 c;
	struct collect2		 col;
	size_t			 len = sizeof msg - 1, i, j, k, cuts[3];
	ssize_t			 r;
	int			 bad = 0;

	for (i = 0; i <= len; i++) {
		for (j = i; j <= len; j++) {
			memset(&col, 0, sizeof col);
			http_chunked_init(&c);
			c.on_trailer = collect2_trailer_cb;
			cuts[0] = 0;
			cuts[1] = i;
			cuts[2] = j;
			for (k = 0; k < 3; k++) {
				r = http_chunked_scan(&c, msg + cuts[k],
				    (k < 2 ? cuts[k + 1] : len) - cuts[k],
				    collect2_data_cb, &col);
				if (r < 0)
					bad++;
			}
			if (!c.done || col.trailers.overflow ||
			    col.trailers.len != strlen(want) ||
			    memcmp(col.trailers.buf, want,
			    col.trailers.len) != 0 || col.data.len != 5 ||
			    memcmp(col.data.buf, "hello", 5) != 0)
				bad++;
		}
	}
	CHECK(bad == 0);

	memset(&col, 0, sizeof col);
	http_chunked_init(&c);
	CHECK(http_chunked_scan(&c, msg, len, collect2_data_cb, &col) ==
	    (ssize_t)len && c.done);
	CHECK(col.trailers.calls == 0 && col.data.len == 5);
}

/* Scan s whole with a fresh scanner; returns the result. */
static ssize_t
chunked_once(const char *s, size_t len, struct http_chunked *c)
{
	http_chunked_init(c);
	return http_chunked_scan(c, s, len, NULL, NULL);
}

static void
test_chunked_reject(void)
{
	static const char *bad[] = {
		"\r\n",				/* no size */
		"x\r\n",
		"0x5\r\nhello\r\n0\r\n\r\n",
		"-1\r\n",
		"5\nhello\r\n0\r\n\r\n",	/* bare LF */
		"5\r\nhello\n0\r\n\r\n",
		"5\r\nhelloX\r\n",		/* no CRLF after data */
		"5\r\nhello\rX",
		"5\r\r\n",
		"5 x\r\n",
		"5;a\x01\r\n",			/* CTL in an extension */
		"5;a\nb\r\n",
		"0\r\nX: y\n\r\n",		/* bare LF in a trailer */
		"0\r\nX: \x01\r\n\r\n",
		/* Trailers are fields: a token, a colon, a value. */
		"0\r\nX\r\n\r\n",
		"0\r\n: v\r\n\r\n",
		"0\r\nX : v\r\n\r\n",
		"0\r\n X: v\r\n\r\n",			/* obs-fold */
		"0\r\nX: v\r\n\tw\r\n\r\n",
		"0\r\nX\x7f: v\r\n\r\n",
		"0\r\nX(y): v\r\n\r\n",
		"0\r\nX: v\rY: w\r\n\r\n",		/* bare CR */
		/* ... and none that frames, routes or attributes. */
		"0\r\nContent-Length: 5\r\n\r\n",
		"0\r\ncontent-length: 0\r\n\r\n",
		"0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"0\r\nHOST: evil.example\r\n\r\n",
		"0\r\nX-A: 1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
		"0\r\nConnection: close\r\n\r\n",
		"0\r\nTrailer: x\r\n\r\n",
		"0\r\nProxy-Authorization: Basic x\r\n\r\n",
		"0\r\nSet-Cookie: a=b\r\n\r\n",
		"0\r\n\r\r",
		"8000000000000000\r\n",		/* over INT64_MAX */
		"fffffffffffffffff\r\n",
		"00000000000000000000010000000000000000\r\n",
	};
	struct http_chunked	 c;
	char			*big;
	size_t			 i;
	ssize_t			 r;

	for (i = 0; i < nitems(bad); i++) {
		r = chunked_once(bad[i], strlen(bad[i]), &c);
		if (r != -1)
			fprintf(stderr, "accepted bad chunked %zu: %zd\n", i, r);
		CHECK(r == -1);
	}
	/* A NUL is an error in the size line and in trailers. */
	CHECK(chunked_once("5;\0\r\n", 5, &c) == -1);
	CHECK(chunked_once("\0", 1, &c) == -1);
	CHECK(chunked_once("0\r\nA\0\r\n\r\n", 9, &c) == -1);

	/* The largest size is fine (and pending); the error is sticky. */
	CHECK(chunked_once("7fffffffffffffff\r\nabc", 21, &c) == 21);
	CHECK(c.remaining == (uint64_t)INT64_MAX - 3 && !c.done);
	CHECK(chunked_once("z", 1, &c) == -1);
	CHECK(http_chunked_scan(&c, "0\r\n\r\n", 5, NULL, NULL) == -1);

	/* Allowed trailers, names near the refused ones included. */
	CHECK(chunked_once("0\r\nX-Checksum: abc\r\nServer-Timing: a;dur=1"
	    "\r\nContent-Lengths: 5\r\nHos: x\r\nX-Forwarded-Fork: 1\r\n"
	    "Proxy-Authorizations: x\r\nX:\r\n\r\n", 124, &c) == 124 &&
	    c.done);
	/* A refused name is found across any split. */
	for (i = 3; i < 18; i++) {	/* the colon is byte 17 */
		http_chunked_init(&c);
		r = http_chunked_scan(&c, "0\r\nContent-Length: 1\r\n\r\n", i,
		    NULL, NULL);
		CHECK(r == (ssize_t)i);
		CHECK(http_chunked_scan(&c, "0\r\nContent-Length: 1\r\n\r\n" +
		    i, 24 - i, NULL, NULL) == -1);
	}

	/* Done stays done and consumes nothing more. */
	CHECK(chunked_once("0\r\n\r\nxyz", 8, &c) == 5 && c.done);
	CHECK(http_chunked_scan(&c, "0\r\n\r\n", 5, NULL, NULL) == 0);

	/* Extensions and trailers are bounded. */
	big = malloc(2 * HTTP_MAX_HEAD_SIZE);
	memset(big, 'a', 2 * HTTP_MAX_HEAD_SIZE);
	memcpy(big, "5;", 2);
	CHECK(chunked_once(big, 4000, &c) == 4000);
	CHECK(chunked_once(big, 5000, &c) == -1);
	memcpy(big, "0\r\nX: ", 6);
	CHECK(chunked_once(big, HTTP_MAX_HEAD_SIZE, &c) == HTTP_MAX_HEAD_SIZE);
	CHECK(chunked_once(big, 2 * HTTP_MAX_HEAD_SIZE, &c) == -1);
	/* Many short trailer lines count too. */
	for (i = 3; i + 3 <= 2 * HTTP_MAX_HEAD_SIZE; i += 3)
		memcpy(big + i, "a\r\n", 3);
	CHECK(chunked_once(big, 2 * HTTP_MAX_HEAD_SIZE - 2, &c) == -1);
	free(big);
}

static void
test_url_decode(void)
{
	char	*out;

	CHECK(http_url_decode("/a%20b/%2Fc%2f", 14, &out) == 8);
	CHECK_STR(out, "/a b//c/");
	free(out);
	CHECK(http_url_decode("/a+b", 4, &out) == 4);
	CHECK_STR(out, "/a+b");
	free(out);
	CHECK(http_url_decode("%C3%a9%e2%82%AC", 15, &out) == 5);
	CHECK_STR(out, "\xc3\xa9\xe2\x82\xac");
	free(out);
	CHECK(http_url_decode("", 0, &out) == 0);
	CHECK_STR(out, "");
	free(out);
	/* len is honoured: the rest of the string is not read. */
	CHECK(http_url_decode("/ab%zz", 3, &out) == 3);
	CHECK_STR(out, "/ab");
	free(out);

	CHECK(http_url_decode("/a%00b", 6, &out) == -1 && out == NULL);
	CHECK(http_url_decode("/a%", 3, &out) == -1 && out == NULL);
	CHECK(http_url_decode("/a%4", 4, &out) == -1);
	CHECK(http_url_decode("/a%4g", 5, &out) == -1);
	CHECK(http_url_decode("/a%g4", 5, &out) == -1);
	CHECK(http_url_decode("/a% 4", 5, &out) == -1);
	CHECK(http_url_decode("/a\0b", 4, &out) == -1);
}

static void
test_status_text(void)
{
	static const int codes[] = { 100, 101, 200, 201, 202, 204, 206, 301,
	    302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 411, 413,
	    414, 415, 416, 429, 431, 500, 501, 502, 503, 504 };
	size_t	i;
	int	known = 0;

	for (i = 0; i < nitems(codes); i++)
		known += strcmp(http_status_text(codes[i]), "Unknown") != 0;
	CHECK(known == (int)nitems(codes));
	CHECK_STR(http_status_text(200), "OK");
	CHECK_STR(http_status_text(404), "Not Found");
	CHECK_STR(http_status_text(431), "Request Header Fields Too Large");
	CHECK_STR(http_status_text(502), "Bad Gateway");
	CHECK_STR(http_status_text(299), "Unknown");
	CHECK_STR(http_status_text(-1), "Unknown");
}

int
main(void)
{
	RUN(test_request_basic);
	RUN(test_request_split);
	RUN(test_request_reject);
	RUN(test_request_limits);
	RUN(test_byte_classes);
	RUN(test_response);
	RUN(test_headers);
	RUN(test_request_body);
	RUN(test_response_body);
	RUN(test_chunked);
	RUN(test_chunked_trailers);
	RUN(test_chunked_reject);
	RUN(test_url_decode);
	RUN(test_status_text);
	return unit_finish();
}
