/*
 * Preview tokens (common/token.c), the preview secret file
 * (control/preview.c) and the cookie and query rewriting of
 * common/cookie.c.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/control_int.h"
#include "tests/unit/unit.h"

#define ID_A	"01jd3k5x8q2w7e9r4t6y1v3h5m"
#define ID_B	"01jd3k5x8q2w7e9r4t6y1v3h5n"

static const uint8_t	key[TOKEN_KEY_LEN] = "0123456789abcdef0123456789abcde";
static const uint8_t	key2[TOKEN_KEY_LEN] = "0123456789abcdef0123456789abcdX";

/* Verify with key at now; 0 or -1. */
static int
verify(const uint8_t *k, const char *tok, const char *id, int64_t now)
{
	int64_t		 exp = 0;
	const char	*why = NULL;
	int		 rv;

	rv = token_verify(k, TOKEN_KEY_LEN, tok, strlen(tok), id, now, &exp,
	    &why);
	if (rv == 0)
		CHECK(exp > now && why == NULL);
	else
		CHECK(why != NULL);
	return rv;
}

static void
test_round_trip(void)
{
	char	tok[TOKEN_MAX_LEN + 1], id[ID_LEN + 1];
	int64_t	exp = 0;
	size_t	len, i;

	len = token_make(key, sizeof key, ID_A, 1764590000, tok, sizeof tok);
	CHECK(len == 84 && len == strlen(tok));
	CHECK(strncmp(tok, "v1." ID_A ".1764590000.", 3 + 26 + 12) == 0);
	for (i = 0; i < len; i++)
		CHECK(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789._-", tok[i]) != NULL);
	CHECK(token_parse(tok, len, id, &exp) == 0);
	CHECK_STR(id, ID_A);
	CHECK(exp == 1764590000);
	CHECK(verify(key, tok, ID_A, 1764589999) == 0);
	/* Deterministic: the same inputs, the same token. */
	{
		char	again[TOKEN_MAX_LEN + 1];

		token_make(key, sizeof key, ID_A, 1764590000, again,
		    sizeof again);
		CHECK_STR(again, tok);
	}
	/* Bad arguments make nothing. */
	CHECK(token_make(key, sizeof key, "nope", 5, tok, sizeof tok) == 0);
	CHECK(token_make(key, sizeof key, ID_A, 0, tok, sizeof tok) == 0);
	CHECK(token_make(key, sizeof key, ID_A, 5, tok, 40) == 0);
}

static void
test_refusals(void)
{
	char	tok[TOKEN_MAX_LEN + 1], bad[TOKEN_MAX_LEN + 2];
	size_t	len, i;
	int	refused = 0;

	len = token_make(key, sizeof key, ID_A, 2000000000, tok, sizeof tok);
	/* Expiry: valid until the second it names, not at it. */
	CHECK(verify(key, tok, ID_A, 1999999999) == 0);
	CHECK(verify(key, tok, ID_A, 2000000000) == -1);
	CHECK(verify(key, tok, ID_A, 2100000000) == -1);
	/* Another sandbox, another key. */
	CHECK(verify(key, tok, ID_B, 1) == -1);
	CHECK(verify(key2, tok, ID_A, 1) == -1);
	/* Any one byte changed anywhere is refused. */
	for (i = 0; i < len; i++) {
		memcpy(bad, tok, len + 1);
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		refused += verify(key, bad, ID_A, 1) == -1;
	}
	CHECK(refused == (int)len);
	/* A later expiry with the old MAC is refused. */
	memcpy(bad, tok, len + 1);
	bad[3 + 26 + 1] = '3';
	CHECK(verify(key, bad, ID_A, 1) == -1);
	/* Truncated, extended, padded, other spellings. */
	memcpy(bad, tok, len + 1);
	bad[len - 1] = '\0';
	CHECK(verify(key, bad, ID_A, 1) == -1);
	snprintf(bad, sizeof bad, "%sA", tok);
	CHECK(verify(key, bad, ID_A, 1) == -1);
	snprintf(bad, sizeof bad, "%s=", tok);
	CHECK(verify(key, bad, ID_A, 1) == -1);
	snprintf(bad, sizeof bad, "V1%s", tok + 2);
	CHECK(verify(key, bad, ID_A, 1) == -1);
	snprintf(bad, sizeof bad, "v1.%.26s.02000000000.%s", ID_A,
	    tok + len - 43);
	CHECK(verify(key, bad, ID_A, 1) == -1);
	snprintf(bad, sizeof bad, "v1.%.26s.-200000000.%s", ID_A,
	    tok + len - 43);
	CHECK(verify(key, bad, ID_A, 1) == -1);
	/* The id in upper case is another spelling: refused. */
	memcpy(bad, tok, len + 1);
	for (i = 3; i < 3 + 26; i++)
		if (bad[i] >= 'a' && bad[i] <= 'z')
			bad[i] -= 32;
	CHECK(verify(key, bad, ID_A, 1) == -1);
	CHECK(verify(key, "", ID_A, 1) == -1);
	CHECK(verify(key, "v1.", ID_A, 1) == -1);
}

/* preview_key_load on a path: 0 or -1 (cause freed). */
static int
load_key(const char *path, uint8_t *out)
{
	struct config	cf;
	struct control	ctl;
	char		*cause = NULL;
	int		 rv;

	memset(&cf, 0, sizeof cf);
	memset(&ctl, 0, sizeof ctl);
	cf.preview_secret_file = (char *)path;
	ctl.cf = &cf;
	rv = preview_key_load(&ctl, &cause);
	if (rv == 0)
		memcpy(out, ctl.preview_key, TOKEN_KEY_LEN);
	else {
		CHECK(cause != NULL && strstr(cause, path) != NULL);
		fprintf(stderr, "(expected) %s\n", cause);
	}
	free(cause);
	return rv;
}

static void
test_secret_file(void)
{
	char		 dir[] = "/tmp/sbx-token.XXXXXX", path[256];
	uint8_t		 k1[TOKEN_KEY_LEN], k2[TOKEN_KEY_LEN];
	struct stat	 sb;
	int		 fd;

	if (mkdtemp(dir) == NULL) {
		CHECK(0);
		return;
	}
	snprintf(path, sizeof path, "%s/preview-secret", dir);
	/* Made at first start: 32 bytes, 0600; the same at the next. */
	CHECK(load_key(path, k1) == 0);
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600 &&
	    sb.st_size == TOKEN_KEY_LEN);
	CHECK(load_key(path, k2) == 0);
	CHECK(memcmp(k1, k2, sizeof k1) == 0);
	/* Readable by others: refused. */
	chmod(path, 0644);
	CHECK(load_key(path, k2) == -1);
	chmod(path, 0640);
	CHECK(load_key(path, k2) == -1);
	chmod(path, 0400);
	CHECK(load_key(path, k2) == 0);
	chmod(path, 0600);
	/* The wrong size: refused, not padded or cut. */
	fd = open(path, O_WRONLY | O_APPEND);
	CHECK(fd != -1 && write(fd, "x", 1) == 1);
	close(fd);
	CHECK(load_key(path, k2) == -1);
	CHECK(truncate(path, 16) == 0);
	CHECK(load_key(path, k2) == -1);
	unlink(path);
	/* A symlink or a directory is no secret file. */
	CHECK(symlink("/etc/hostname", path) == 0);
	CHECK(load_key(path, k2) == -1);
	unlink(path);
	CHECK(mkdir(path, 0700) == 0);
	CHECK(load_key(path, k2) == -1);
	rmdir(path);
	/* A directory that is not there: a clear error. */
	snprintf(path, sizeof path, "%s/missing/preview-secret", dir);
	CHECK(load_key(path, k2) == -1);
	rmdir(dir);
}

/* The Set-Cookie value without Domain, or "-" when it had none. */
static const char *
strip(const char *in)
{
	static char	out[512];
	size_t		len = 0;

	if (http_setcookie_strip_domain(in, strlen(in), NULL, &len) == 0) {
		CHECK(http_setcookie_strip_domain(in, strlen(in), out,
		    &len) == 0);
		return "-";
	}
	CHECK(http_setcookie_strip_domain(in, strlen(in), out, &len) == 1);
	CHECK(len <= strlen(in));
	out[len] = '\0';
	return out;
}

static void
test_set_cookie_domain(void)
{
	CHECK_STR(strip("a=1"), "-");
	CHECK_STR(strip("a=1; Path=/; HttpOnly"), "-");
	CHECK_STR(strip("a=1; Domain=example.com"), "a=1");
	CHECK_STR(strip("a=1; Domain=example.com; Path=/"), "a=1; Path=/");
	CHECK_STR(strip("a=1; Path=/; domain=.x.com; Secure"),
	    "a=1; Path=/; Secure");
	CHECK_STR(strip("a=1;DOMAIN=x;Path=/"), "a=1;Path=/");
	CHECK_STR(strip("a=1; \t DoMaIn \t = x ; Max-Age=5"), "a=1; Max-Age=5");
	CHECK_STR(strip("a=1; Domain"), "a=1");
	CHECK_STR(strip("a=1; Domain=; Path=/"), "a=1; Path=/");
	CHECK_STR(strip("a=1; Domain=a; Domain=b; SameSite=Lax"),
	    "a=1; SameSite=Lax");
	/* The cookie's own name, and look-alike attributes, stay. */
	CHECK_STR(strip("Domain=x; Path=/"), "-");
	CHECK_STR(strip("a=1; Domains=x; XDomain=y"), "-");
	CHECK_STR(strip("a=b=c; Path=/a=b; Domain=z"), "a=b=c; Path=/a=b");
	CHECK_STR(strip(";Domain=x"), "");
	CHECK_STR(strip("a=1;;Domain=x;;"), "a=1;;;");
	/* In place. */
	{
		char	buf[] = "s=1; Domain=evil.preview.localhost; Path=/";
		size_t	len;

		CHECK(http_setcookie_strip_domain(buf, strlen(buf), buf,
		    &len) == 1);
		buf[len] = '\0';
		CHECK_STR(buf, "s=1; Path=/");
	}
}

/* The Cookie value without sandboxd_token, "-" if it had none. */
static const char *
uncookie(const char *in, int want)
{
	static char	out[512];
	size_t		len = 0;
	int		n;

	n = http_cookie_remove(in, strlen(in), "sandboxd_token", 14, out,
	    &len);
	CHECK(n == want);
	if (n == 0)
		return "-";
	out[len] = '\0';
	return out;
}

static void
test_cookie_header(void)
{
	const char	*v, *in;
	size_t		 pos, vlen;

	CHECK_STR(uncookie("a=1; b=2", 0), "-");
	CHECK_STR(uncookie("sandboxd_token=T", 1), "");
	CHECK_STR(uncookie("a=1; sandboxd_token=T; b=2", 1), "a=1; b=2");
	CHECK_STR(uncookie("sandboxd_token=T;a=1", 1), "a=1");
	CHECK_STR(uncookie(" a=1 ;sandboxd_token = T ; sandboxd_token=U", 2),
	    "a=1");
	/* Names are case-sensitive; look-alikes stay. */
	CHECK_STR(uncookie("Sandboxd_Token=1; xsandboxd_token=2", 0), "-");
	CHECK_STR(uncookie("sandboxd_tokens=1; sandboxd_token=2", 1),
	    "sandboxd_tokens=1");
	CHECK_STR(uncookie("flag; sandboxd_token=2", 1), "flag");
	/* Never longer than it was (found by fuzz_cookie). */
	CHECK_STR(uncookie("a;b;c;d;e;f;g;sandboxd_token=m", 1),
	    "a;b;c;d;e;f;g");
	CHECK_STR(uncookie("a=1;  b=2 ;sandboxd_token=3;c=4", 1),
	    "a=1;  b=2;c=4");

	in = "a=1; sandboxd_token= T1 ;b=2;sandboxd_token=T2";
	pos = 0;
	CHECK(http_cookie_next(in, strlen(in), &pos, "sandboxd_token", 14, &v,
	    &vlen) == 1);
	CHECK(vlen == 2 && strncmp(v, "T1", 2) == 0);
	CHECK(http_cookie_next(in, strlen(in), &pos, "sandboxd_token", 14, &v,
	    &vlen) == 1);
	CHECK(vlen == 2 && strncmp(v, "T2", 2) == 0);
	CHECK(http_cookie_next(in, strlen(in), &pos, "sandboxd_token", 14, &v,
	    &vlen) == 0);
	pos = 0;
	CHECK(http_cookie_next("", 0, &pos, "a", 1, &v, &vlen) == 0);
}

/* The target without sandboxd_token, "-" if it had none. */
static const char *
unquery(const char *in, int want, const char *val)
{
	static char	 out[512];
	const char	*v = NULL;
	size_t		 len = 0, vlen = 0;
	int		 n;

	n = http_query_remove(in, strlen(in), "sandboxd_token", 14, out, &len,
	    &v, &vlen);
	CHECK(n == want);
	if (n == 0)
		return "-";
	CHECK(vlen == strlen(val) && strncmp(v, val, vlen) == 0);
	out[len] = '\0';
	return out;
}

static void
test_query(void)
{
	CHECK_STR(unquery("/", 0, ""), "-");
	CHECK_STR(unquery("/?a=1", 0, ""), "-");
	CHECK_STR(unquery("/?sandboxd_token=T", 1, "T"), "/");
	CHECK_STR(unquery("/x/y?sandboxd_token=T&a=1", 1, "T"), "/x/y?a=1");
	CHECK_STR(unquery("/x?a=1&sandboxd_token=T&b=2&c", 1, "T"),
	    "/x?a=1&b=2&c");
	CHECK_STR(unquery("/x?b=2&a=1&sandboxd_token=T", 1, "T"), "/x?b=2&a=1");
	CHECK_STR(unquery("/?sandboxd_token=T&sandboxd_token=U", 2, "T"), "/");
	CHECK_STR(unquery("/?sandboxd_token&a", 1, ""), "/?a");
	CHECK_STR(unquery("/?sandboxd_token=", 1, ""), "/");
	CHECK_STR(unquery("/?xsandboxd_token=1&sandboxd_tokenx=2", 0, ""), "-");
	CHECK_STR(unquery("/?a=sandboxd_token=1", 0, ""), "-");
	/* '?' inside the query is data. */
	CHECK_STR(unquery("/?a=?&sandboxd_token=T?", 1, "T?"), "/?a=?");
}

int
main(void)
{
	log_init(LOG_LEVEL_WARN);
	RUN(test_round_trip);
	RUN(test_refusals);
	RUN(test_secret_file);
	RUN(test_set_cookie_domain);
	RUN(test_cookie_header);
	RUN(test_query);
	return unit_finish();
}
