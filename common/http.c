/*
 * HTTP/1.1 message heads, body framing and the chunked coding (RFC 9112),
 * parsed in one pass over the caller's buffer: no allocation, no copies,
 * results point into the buffer. Only libc is used, so agentd (static, no
 * libevent) links this file as it is.
 *
 * Strictness, chosen for a proxy that must not be desynchronised from the
 * servers behind it (request smuggling):
 *  - requests end their lines with CRLF only; a bare LF is an error, as is
 *    a bare CR anywhere. Responses come from our own upstreams and Docker:
 *    there a bare LF is accepted as a line end (RFC 9112 section 2.2 allows
 *    it) because we frame response bodies ourselves and refuse only what we
 *    could misread. The chunked coding always wants CRLF, in both.
 *  - obs-fold (a header line starting with SP or HTAB) is an error in both:
 *    we cannot unfold without copying, and forwarding it would let the next
 *    hop read a different header set.
 *  - method and header names are tokens; the request-target holds no SP,
 *    CTL or DEL; the version is exactly "HTTP/1.0" or "HTTP/1.1"; a space
 *    between a header name and its colon is an error; field values hold no
 *    CTL other than HTAB (so no NUL).
 *  - empty lines (CRLF) before a request line are skipped, as RFC 9112
 *    section 2.2 asks, so a client's stray CRLF after a body is harmless.
 *  - a request's framing admits one reading only: one Content-Length
 *    header (a repeat, even of the same value, is refused), or exactly
 *    "Transfer-Encoding: chunked" in one header, never both.
 *  - trailer lines are checked as header fields (a token, a colon, a
 *    value), and fields that would change how the message is framed,
 *    routed or attributed if a server merged them into the head
 *    (Content-Length, Transfer-Encoding, Host, X-Forwarded-For, ...) are
 *    an error: the trailers are passed on as they are, so refusing is
 *    the only way not to forward them.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* Longest chunk-size line (digits and extensions), CRLF excluded. */
#define HTTP_CHUNK_LINE_MAX	4096

/* Character classes of http_ctype, one bit each. */
#define HC_TCHAR	0x01	/* token character (RFC 9110 section 5.6.2) */
#define HC_VALUE	0x02	/* field value: VCHAR, obs-text, SP, HTAB */
#define HC_TARGET	0x04	/* request-target: VCHAR and obs-text */

#define HC_T	(HC_TCHAR | HC_VALUE | HC_TARGET)
#define HC_V	(HC_VALUE | HC_TARGET)

/*
 * One table for every scan. The ranges do not overlap (an overriding
 * initializer would warn under -Wextra): tchar ranges get HC_T, the other
 * visible characters HC_V.
 */
static const uint8_t http_ctype[256] = {
	['\t'] = HC_VALUE,
	[' '] = HC_VALUE,
	['!'] = HC_T,
	['"'] = HC_V,
	['#' ... '\''] = HC_T,
	['(' ... ')'] = HC_V,
	['*' ... '+'] = HC_T,
	[','] = HC_V,
	['-' ... '.'] = HC_T,
	['/'] = HC_V,
	['0' ... '9'] = HC_T,
	[':' ... '@'] = HC_V,
	['A' ... 'Z'] = HC_T,
	['[' ... ']'] = HC_V,
	['^' ... 'z'] = HC_T,
	['{'] = HC_V,
	['|'] = HC_T,
	['}'] = HC_V,
	['~'] = HC_T,
	[0x80 ... 0xff] = HC_V,
};

#define HTTP_IS(c, cls) (http_ctype[(unsigned char)(c)] & (cls))
#define HTTP_LOWER(c)	((c) >= 'A' && (c) <= 'Z' ? (c) - 'A' + 'a' : (c))

enum http_chunked_state {
	HTTP_CH_SIZE_START,	/* first hex digit of a chunk size */
	HTTP_CH_SIZE,		/* more hex digits */
	HTTP_CH_SIZE_WS,	/* BWS after the size, before ';' or CR */
	HTTP_CH_EXT,		/* chunk extensions, ignored up to CR */
	HTTP_CH_SIZE_LF,	/* LF ending the size line */
	HTTP_CH_DATA,		/* chunk payload */
	HTTP_CH_DATA_CR,	/* CR after the payload */
	HTTP_CH_DATA_LF,	/* LF after the payload */
	HTTP_CH_TRAILER_START,	/* start of a trailer line or the final CRLF */
	HTTP_CH_TRAILER_NAME,	/* a trailer field's name, up to ':' */
	HTTP_CH_TRAILER,	/* a trailer field's value, up to CR */
	HTTP_CH_TRAILER_LF,	/* LF ending a trailer line */
	HTTP_CH_END_LF,		/* LF of the final empty line */
	HTTP_CH_ERROR		/* a framing error was reported; stays so */
};

static const char *http_scan_text(const char *, const char *, int,
		    uint64_t);
static const char *http_parse_eol(const char *, const char *, int, int *);
static const char *http_parse_version(const char *, const char *, int *,
		    int *);
static const char *http_parse_headers(const char *, const char *,
		    struct http_header *, size_t *, int, int *);
static int	 http_parse_request1(const char *, const char *,
		    struct http_request_head *);
static int	 http_parse_response1(const char *, const char *,
		    struct http_response_head *);
static int	 http_ieq(const char *, size_t, const char *, size_t);
static int	 http_hexval(int);
static int	 http_parse_length(const char *, size_t, uint64_t *);
static int	 http_framing(const struct http_header *, size_t, int, int,
		    enum http_body_kind *, uint64_t *);
static int	 http_trailer_allowed(const char *, size_t);

/*
 * Fields refused in trailers: framing, routing, connection control, the
 * head's modifiers and credentials, and what edge sets itself. Lowercase,
 * none longer than HTTP_TRAILER_NAME_MAX.
 */
static const char *const http_trailer_refused[] = {
	"authorization", "connection", "content-encoding", "content-length",
	"content-range", "content-type", "cookie", "expect", "host",
	"keep-alive", "proxy-authorization", "proxy-connection", "set-cookie",
	"te", "trailer", "transfer-encoding", "upgrade", "x-forwarded-for",
	"x-forwarded-host", "x-forwarded-proto"
};

/*
 * First byte at or after p that is not of class cls, or end, for HC_VALUE
 * (lowest = ' ') or HC_TARGET (lowest = '!'): both are "every byte but
 * those below lowest, and DEL". Eight bytes are tested at once with the
 * has-less-than and has-zero bit tricks; their lowest flagged byte is exact
 * (false flags only sit above a true one), so on little-endian machines the
 * count of trailing zeros finds the stop byte without a byte loop. An HTAB,
 * allowed in values, is stepped over. This keeps long targets, cookies and
 * user agents cheap.
 */
static const char *
http_scan_text(const char *p, const char *end, int cls, uint64_t lowest)
{
	const uint64_t	 ones = 0x0101010101010101ULL;
	const uint64_t	 highs = 0x8080808080808080ULL;
	uint64_t	 w, d, m;

	while (end - p >= 8) {
		memcpy(&w, p, 8);
		d = w ^ (ones * 0x7f);
		m = (((w - ones * lowest) & ~w) | ((d - ones) & ~d)) & highs;
		if (m == 0) {
			p += 8;
			continue;
		}
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		p += __builtin_ctzll(m) >> 3;
		if (!HTTP_IS(*p, cls))
			return p;
		p++;
#else
		break;
#endif
	}
	while (p < end && HTTP_IS(*p, cls))
		p++;
	return p;
}

/* Consume a line end at p: CRLF, or a bare LF when lf_ok. */
static const char *
http_parse_eol(const char *p, const char *end, int lf_ok, int *r)
{
	if (p == end)
		goto partial;
	if (*p == '\r') {
		if (++p == end)
			goto partial;
		if (*p != '\n')
			goto invalid;	/* bare CR */
		return p + 1;
	}
	if (*p == '\n' && lf_ok)
		return p + 1;
invalid:
	*r = -1;
	return NULL;
partial:
	*r = -2;
	return NULL;
}

/* Consume "HTTP/1.0" or "HTTP/1.1", setting *minor. */
static const char *
http_parse_version(const char *p, const char *end, int *minor, int *r)
{
	static const char	 prefix[] = "HTTP/1.";
	size_t			 i;

	if (end - p >= 8) {
		/* The usual case: all of it is here. */
		if (memcmp(p, prefix, 7) != 0 || (p[7] != '0' && p[7] != '1'))
			goto invalid;
		*minor = p[7] - '0';
		return p + 8;
	}
	/* A prefix: refuse it already if it cannot become a version. */
	for (i = 0; p < end; i++, p++) {
		if (i == 7) {
			if (*p != '0' && *p != '1')
				goto invalid;
		} else if (*p != prefix[i])
			goto invalid;
	}
	*r = -2;
	return NULL;
invalid:
	*r = -1;
	return NULL;
}

/*
 * Parse header lines and the blank line that ends them, filling h[] (room
 * for HTTP_MAX_HEADERS). Returns the byte after the blank line, or NULL with
 * *r set to -1 or -2.
 */
static const char *
http_parse_headers(const char *p, const char *end, struct http_header *h,
    size_t *nh, int lf_ok, int *r)
{
	const char	*name, *value, *vend;
	size_t		 n = 0;

	*nh = 0;
	for (;;) {
		if (p == end)
			goto partial;
		if (*p == '\r' || *p == '\n') {
			if ((p = http_parse_eol(p, end, lf_ok, r)) == NULL)
				return NULL;
			*nh = n;
			return p;
		}
		if (n == HTTP_MAX_HEADERS)
			goto invalid;

		/*
		 * An empty name catches obs-fold (a line starting with SP or
		 * HTAB); a non-colon after the name catches "Name : value".
		 */
		name = p;
		while (HTTP_IS(*p, HC_TCHAR)) {
			if (++p == end)
				goto partial;
		}
		if (p == name || *p != ':')
			goto invalid;
		h[n].name = name;
		h[n].name_len = p - name;
		p++;

		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		value = p;
		if ((p = http_scan_text(p, end, HC_VALUE, ' ')) == end)
			goto partial;
		vend = p;
		if ((p = http_parse_eol(p, end, lf_ok, r)) == NULL)
			return NULL;	/* partial, or a CTL in the value */
		while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
			vend--;
		h[n].value = value;
		h[n].value_len = vend - value;
		n++;
	}
invalid:
	*r = -1;
	return NULL;
partial:
	*r = -2;
	return NULL;
}

/* http_parse_request on buf[0..end), end already capped at the size limit. */
static int
http_parse_request1(const char *buf, const char *end,
    struct http_request_head *req)
{
	const char	*p = buf;
	int		 r;

	/* Empty lines before the request line are skipped (CRLF only). */
	for (;;) {
		if (p == end)
			return -2;
		if (*p != '\r')
			break;
		if (++p == end)
			return -2;
		if (*p++ != '\n')
			return -1;
	}

	req->method = p;
	while (HTTP_IS(*p, HC_TCHAR)) {
		if (++p == end)
			return -2;
	}
	if (p == req->method || *p != ' ')
		return -1;
	req->method_len = p - req->method;
	p++;

	req->target = p;
	if ((p = http_scan_text(p, end, HC_TARGET, '!')) == end)
		return -2;
	if (p == req->target || *p != ' ')
		return -1;
	req->target_len = p - req->target;
	p++;

	if ((p = http_parse_version(p, end, &req->minor_version, &r)) == NULL)
		return r;
	if ((p = http_parse_eol(p, end, 0, &r)) == NULL)
		return r;
	if ((p = http_parse_headers(p, end, req->headers, &req->nheaders, 0,
	    &r)) == NULL)
		return r;
	return p - buf;
}

/* Parse a request head; see common.h. */
int
http_parse_request(const char *buf, size_t len, struct http_request_head *req)
{
	size_t	lim = len < HTTP_MAX_HEAD_SIZE ? len : HTTP_MAX_HEAD_SIZE;
	int	r;

	req->nheaders = 0;
	r = http_parse_request1(buf, buf + lim, req);
	/* Incomplete within the limit means the head is over it. */
	if (r == -2 && len >= HTTP_MAX_HEAD_SIZE)
		return -1;
	return r;
}

/* http_parse_response on buf[0..end), end already capped. */
static int
http_parse_response1(const char *buf, const char *end,
    struct http_response_head *resp)
{
	const char	*p = buf;
	int		 r, i;

	if ((p = http_parse_version(p, end, &resp->minor_version, &r)) == NULL)
		return r;
	if (p == end)
		return -2;
	if (*p++ != ' ')
		return -1;

	resp->status = 0;
	for (i = 0; i < 3; i++, p++) {
		if (p == end)
			return -2;
		if (*p < '0' || *p > '9')
			return -1;
		resp->status = resp->status * 10 + (*p - '0');
	}
	if (resp->status < 100 || resp->status > 599)
		return -1;

	/*
	 * The reason phrase may be empty, and some servers leave out the SP
	 * before it too ("HTTP/1.1 200\r\n"): accept both.
	 */
	if (p == end)
		return -2;
	if (*p == ' ') {
		p++;
		resp->reason = p;
		if ((p = http_scan_text(p, end, HC_VALUE, ' ')) == end)
			return -2;
		resp->reason_len = p - resp->reason;
	} else {
		resp->reason = p;
		resp->reason_len = 0;
	}
	if ((p = http_parse_eol(p, end, 1, &r)) == NULL)
		return r;
	if ((p = http_parse_headers(p, end, resp->headers, &resp->nheaders, 1,
	    &r)) == NULL)
		return r;
	return p - buf;
}

/* Parse a response head; see common.h. */
int
http_parse_response(const char *buf, size_t len,
    struct http_response_head *resp)
{
	size_t	lim = len < HTTP_MAX_HEAD_SIZE ? len : HTTP_MAX_HEAD_SIZE;
	int	r;

	resp->nheaders = 0;
	r = http_parse_response1(buf, buf + lim, resp);
	if (r == -2 && len >= HTTP_MAX_HEAD_SIZE)
		return -1;
	return r;
}

/* ASCII case-insensitive equality of two counted strings. */
static int
http_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t	i;
	int	ca, cb;

	if (alen != blen)
		return 0;
	for (i = 0; i < alen; i++) {
		ca = (unsigned char)a[i];
		cb = (unsigned char)b[i];
		if (ca >= 'A' && ca <= 'Z')
			ca += 'a' - 'A';
		if (cb >= 'A' && cb <= 'Z')
			cb += 'a' - 'A';
		if (ca != cb)
			return 0;
	}
	return 1;
}

/* Find a header by name; see common.h. */
const struct http_header *
http_header_find(const struct http_header *h, size_t n, const char *name)
{
	size_t	i, len = strlen(name);

	for (i = 0; i < n; i++) {
		if (http_ieq(h[i].name, h[i].name_len, name, len))
			return &h[i];
	}
	return NULL;
}

/* Look for token in a comma-separated header value; see common.h. */
int
http_header_has_token(const struct http_header *h, const char *token)
{
	const char	*p = h->value, *end = h->value + h->value_len;
	const char	*s, *e;
	size_t		 tlen = strlen(token);

	while (p < end) {
		s = p;
		while (p < end && *p != ',')
			p++;
		e = p;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (http_ieq(s, e - s, token, tlen))
			return 1;
		if (p < end)
			p++;	/* the comma */
	}
	return 0;
}

/* Value of a hex digit, or -1. */
static int
http_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * A Content-Length value: 1*DIGIT, at most INT64_MAX so callers may hold it
 * in an off_t. No sign, no spaces, no list ("5, 5").
 */
static int
http_parse_length(const char *s, size_t n, uint64_t *out)
{
	uint64_t	v = 0;
	size_t		i;
	int		d;

	if (n == 0)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		d = s[i] - '0';
		if (v > ((uint64_t)INT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/*
 * Body framing from Content-Length and Transfer-Encoding, shared by requests
 * and responses. is_request picks the stricter Transfer-Encoding rule: a
 * request must say exactly "chunked" (we support no other coding and a
 * proxy must not guess), a response may carry other codings before a final
 * "chunked", and without "chunked" it runs until close (RFC 9112 6.3).
 */
static int
http_framing(const struct http_header *h, size_t n, int minor, int is_request,
    enum http_body_kind *kind, uint64_t *length)
{
	const char	*p, *end, *s, *e;
	uint64_t	 cl = 0, v;
	size_t		 i;
	int		 have_cl = 0, have_te = 0, codings = 0, chunked_at = 0;
	int		 empty = 0;

	*kind = HTTP_BODY_NONE;
	*length = 0;
	for (i = 0; i < n; i++) {
		if (http_ieq(h[i].name, h[i].name_len, "content-length", 14)) {
			if (http_parse_length(h[i].value, h[i].value_len,
			    &v) != 0)
				return -1;
			if (have_cl && (v != cl || is_request))
				return -1;
			have_cl = 1;
			cl = v;
		} else if (http_ieq(h[i].name, h[i].name_len,
		    "transfer-encoding", 17)) {
			/* Several headers make one list, in order. */
			have_te++;
			p = h[i].value;
			end = p + h[i].value_len;
			while (p < end) {
				s = p;
				while (p < end && *p != ',')
					p++;
				e = p;
				/* A comma at the end leaves an empty element. */
				if (p < end && ++p == end)
					empty = 1;
				while (s < e && (*s == ' ' || *s == '\t'))
					s++;
				while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
					e--;
				if (s == e) {
					empty = 1;	/* an empty element */
					continue;
				}
				codings++;
				if (http_ieq(s, e - s, "chunked", 7)) {
					/* chunked twice is never valid */
					if (chunked_at != 0)
						return -1;
					chunked_at = codings;
				}
			}
		}
	}

	if (have_te) {
		/*
		 * Both headers is the classic smuggling shape: refuse rather
		 * than pick one. An HTTP/1.0 message with Transfer-Encoding
		 * has faulty framing (RFC 9112 6.1).
		 */
		if (have_cl || minor == 0 || codings == 0)
			return -1;
		if (chunked_at != 0 && chunked_at != codings)
			return -1;	/* "chunked, gzip" */
		if (is_request) {
			/* Exactly "chunked": no list, no second header. */
			if (codings != 1 || chunked_at != 1 || have_te != 1 ||
			    empty)
				return -1;
			*kind = HTTP_BODY_CHUNKED;
		} else if (chunked_at != 0)
			*kind = HTTP_BODY_CHUNKED;
		else
			*kind = HTTP_BODY_UNTIL_CLOSE;
		return 0;
	}
	if (have_cl) {
		*kind = HTTP_BODY_LENGTH;
		*length = cl;
		return 0;
	}
	*kind = is_request ? HTTP_BODY_NONE : HTTP_BODY_UNTIL_CLOSE;
	return 0;
}

/* How a request body is framed; see common.h. */
int
http_request_body(const struct http_request_head *req,
    enum http_body_kind *kind, uint64_t *length)
{
	return http_framing(req->headers, req->nheaders, req->minor_version, 1,
	    kind, length);
}

/* How a response body is framed; see common.h. */
int
http_response_body(const struct http_response_head *resp,
    const char *request_method, enum http_body_kind *kind, uint64_t *length)
{
	int	st = resp->status;

	/*
	 * These never have a body, whatever their headers say (RFC 9112
	 * 6.3 rules 1 and 2); a 2xx to CONNECT turns the connection into a
	 * tunnel, which is the caller's business, not a body.
	 */
	if ((st >= 100 && st < 200) || st == 204 || st == 304 ||
	    (request_method != NULL && strcmp(request_method, "HEAD") == 0) ||
	    (request_method != NULL && strcmp(request_method, "CONNECT") == 0 &&
	    st >= 200 && st < 300)) {
		*kind = HTTP_BODY_NONE;
		*length = 0;
		return 0;
	}
	return http_framing(resp->headers, resp->nheaders, resp->minor_version,
	    0, kind, length);
}

/*
 * 1 unless a trailer field's name (its first bytes lowercased in name,
 * len bytes long in all) is one refused in trailers.
 */
static int
http_trailer_allowed(const char *name, size_t len)
{
	size_t	i;

	if (len > HTTP_TRAILER_NAME_MAX)
		return 1;
	for (i = 0; i < nitems(http_trailer_refused); i++) {
		if (strlen(http_trailer_refused[i]) == len &&
		    memcmp(http_trailer_refused[i], name, len) == 0)
			return 0;
	}
	return 1;
}

/* Start scanning a new chunked body. */
void
http_chunked_init(struct http_chunked *c)
{
	memset(c, 0, sizeof *c);
	c->state = HTTP_CH_SIZE_START;
}

/*
 * Scan chunked-coded bytes; see common.h. In the trailer states remaining
 * counts trailer bytes, so trailers are bounded like a head.
 */
ssize_t
http_chunked_scan(struct http_chunked *c, const char *buf, size_t len,
    http_data_cb on_data, void *arg)
{
	const char	*p = buf, *end = buf + len;
	const char	*tstart = NULL;	/* where this buffer's trailer line began */
	size_t		 n;
	int		 ch, d;

	if (c->done)
		return 0;
	/* A trailer line cut by the last buffer goes on from here. */
	if (c->state == HTTP_CH_TRAILER_NAME || c->state == HTTP_CH_TRAILER ||
	    c->state == HTTP_CH_TRAILER_LF)
		tstart = buf;
	while (p < end) {
		if (c->state == HTTP_CH_DATA) {
			n = end - p;
			if (n > c->remaining)
				n = c->remaining;
			if (on_data != NULL)
				on_data(arg, p, n);
			p += n;
			c->remaining -= n;
			if (c->remaining == 0)
				c->state = HTTP_CH_DATA_CR;
			continue;
		}

		ch = (unsigned char)*p++;
		switch (c->state) {
		case HTTP_CH_SIZE_START:
			if ((d = http_hexval(ch)) < 0)
				goto fail;
			c->remaining = d;
			c->line_len = 1;
			c->state = HTTP_CH_SIZE;
			break;
		case HTTP_CH_SIZE:
			if (++c->line_len > HTTP_CHUNK_LINE_MAX)
				goto fail;
			if ((d = http_hexval(ch)) >= 0) {
				if (c->remaining > ((uint64_t)INT64_MAX >> 4))
					goto fail;	/* overflow */
				c->remaining = (c->remaining << 4) | d;
			} else if (ch == ' ' || ch == '\t')
				c->state = HTTP_CH_SIZE_WS;
			else if (ch == ';')
				c->state = HTTP_CH_EXT;
			else if (ch == '\r')
				c->state = HTTP_CH_SIZE_LF;
			else
				goto fail;
			break;
		case HTTP_CH_SIZE_WS:
			if (++c->line_len > HTTP_CHUNK_LINE_MAX)
				goto fail;
			if (ch == ';')
				c->state = HTTP_CH_EXT;
			else if (ch == '\r')
				c->state = HTTP_CH_SIZE_LF;
			else if (ch != ' ' && ch != '\t')
				goto fail;
			break;
		case HTTP_CH_EXT:
			/* Extensions mean nothing to us; only keep them sane. */
			if (++c->line_len > HTTP_CHUNK_LINE_MAX)
				goto fail;
			if (ch == '\r')
				c->state = HTTP_CH_SIZE_LF;
			else if (!HTTP_IS(ch, HC_VALUE))
				goto fail;
			break;
		case HTTP_CH_SIZE_LF:
			if (ch != '\n')
				goto fail;
			c->line_len = 0;
			if (c->remaining == 0)
				c->state = HTTP_CH_TRAILER_START;
			else
				c->state = HTTP_CH_DATA;
			break;
		case HTTP_CH_DATA_CR:
			if (ch != '\r')
				goto fail;
			c->state = HTTP_CH_DATA_LF;
			break;
		case HTTP_CH_DATA_LF:
			if (ch != '\n')
				goto fail;
			c->state = HTTP_CH_SIZE_START;
			break;
		case HTTP_CH_TRAILER_START:
			if (++c->remaining > HTTP_MAX_HEAD_SIZE)
				goto fail;
			if (ch == '\r')
				c->state = HTTP_CH_END_LF;
			else if (HTTP_IS(ch, HC_TCHAR)) {
				/* A field name: no obs-fold, no empty name. */
				c->name[0] = HTTP_LOWER(ch);
				c->line_len = 1;
				c->state = HTTP_CH_TRAILER_NAME;
				tstart = p - 1;
			} else
				goto fail;
			break;
		case HTTP_CH_TRAILER_NAME:
			if (++c->remaining > HTTP_MAX_HEAD_SIZE)
				goto fail;
			if (ch == ':') {
				if (!http_trailer_allowed(c->name, c->line_len))
					goto fail;
				c->state = HTTP_CH_TRAILER;
			} else if (!HTTP_IS(ch, HC_TCHAR))
				goto fail;	/* "Name : v", or no colon */
			else if (c->line_len++ < sizeof c->name)
				c->name[c->line_len - 1] = HTTP_LOWER(ch);
			break;
		case HTTP_CH_TRAILER:
			if (++c->remaining > HTTP_MAX_HEAD_SIZE)
				goto fail;
			if (ch == '\r')
				c->state = HTTP_CH_TRAILER_LF;
			else if (!HTTP_IS(ch, HC_VALUE))
				goto fail;
			break;
		case HTTP_CH_TRAILER_LF:
			if (ch != '\n')
				goto fail;
			c->state = HTTP_CH_TRAILER_START;
			/* The line is whole and checked: hand it on. */
			if (c->on_trailer != NULL)
				c->on_trailer(arg, tstart, p - tstart);
			tstart = NULL;
			break;
		case HTTP_CH_END_LF:
			if (ch != '\n')
				goto fail;
			c->remaining = 0;
			c->done = 1;
			return p - buf;
		default:	/* HTTP_CH_ERROR */
			goto fail;
		}
	}
	/* The start of a trailer line this buffer ends inside of. */
	if (tstart != NULL && p > tstart && c->on_trailer != NULL)
		c->on_trailer(arg, tstart, p - tstart);
	return p - buf;
fail:
	c->state = HTTP_CH_ERROR;
	return -1;
}


/* Decode %XX escapes of a path; see common.h. */
int
http_url_decode(const char *in, size_t len, char **out)
{
	char	*o;
	size_t	 i, n = 0;
	int	 hi, lo;

	*out = NULL;
	if (len > INT_MAX)
		return -1;
	o = xmalloc(len + 1);
	for (i = 0; i < len; i++) {
		if (in[i] == '\0')
			goto fail;	/* would cut the C string short */
		if (in[i] != '%') {
			o[n++] = in[i];
			continue;
		}
		if (len - i < 3 || (hi = http_hexval(in[i + 1])) < 0 ||
		    (lo = http_hexval(in[i + 2])) < 0)
			goto fail;
		if (hi == 0 && lo == 0)
			goto fail;
		o[n++] = (char)(hi << 4 | lo);
		i += 2;
	}
	o[n] = '\0';
	*out = o;
	return (int)n;
fail:
	free(o);
	return -1;
}

/* Reason phrase of a status code. */
const char *
http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	return "Unknown";
}
