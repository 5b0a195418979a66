/*
 * edge/console.c without sockets: which names a console set takes, what
 * a request path finds (the redirect, exact names only, index.html for
 * navigations), If-None-Match, and loading a real directory with hidden
 * files, symlinks, bad names and no index.html. The HTTP side (headers,
 * 304, the missing page) is tests/blackbox/test_console.py's.
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

#include "edge/edge.h"
#include "edge/edge_int.h"
#include "tests/unit/unit.h"

static char	tmpdir[64];

/* Write a file beneath tmpdir (parents must exist). */
static void
put(const char *rel, const char *text)
{
	char	path[256];
	FILE	*f;

	snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
	f = fopen(path, "w");
	if (f == NULL) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static void
sub(const char *rel)
{
	char	path[256];

	snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
	mkdir(path, 0755);
}

static int
add(struct edge_console *c, const char *name)
{
	char	*cause = NULL;
	int	 rv;

	rv = edge_console_add(c, name, "x", 1, &cause);
	free(cause);
	return rv;
}

static enum edge_console_kind
find(const struct edge_console *c, const char *path, int nav,
    const char **name)
{
	const struct edge_console_file	*f;
	enum edge_console_kind		 k;

	k = edge_console_find(c, path, strlen(path), nav, &f);
	*name = f != NULL ? f->name : NULL;
	return k;
}

/* Names a set takes and refuses. */
static void
test_names(void)
{
	struct edge_console	*c = edge_console_new("/x", "csp");

	CHECK(add(c, "index.html") == 0);
	CHECK(add(c, "assets/main-5GJXH2RQ.js") == 0);
	CHECK(add(c, "a/b/c_d-e.f.css") == 0);
	CHECK(add(c, "") == -1);
	CHECK(add(c, "../etc/passwd") == -1);
	CHECK(add(c, "a/../b") == -1);
	CHECK(add(c, "./a") == -1);
	CHECK(add(c, ".hidden") == -1);
	CHECK(add(c, "a/.git/config") == -1);
	CHECK(add(c, "/abs") == -1);
	CHECK(add(c, "a//b") == -1);
	CHECK(add(c, "a/") == -1);
	CHECK(add(c, "a b") == -1);
	CHECK(add(c, "a%2fb") == -1);
	CHECK(add(c, "a\\b") == -1);
	CHECK(add(c, "caf\xc3\xa9") == -1);
	CHECK(c->nfiles == 3);
	edge_console_free(c);
}

/* Content types, cache policy and the ETag of what is added. */
static void
test_headers(void)
{
	struct edge_console		*c = edge_console_new("/x", "csp");
	const struct edge_console_file	*f;
	char				*cause = NULL;

	CHECK(edge_console_add(c, "index.html", "<!doctype html>", 15,
	    &cause) == 0);
	CHECK(add(c, "assets/main-5GJXH2RQ.js") == 0);
	CHECK(add(c, "assets/main-5GJXH2RQ.css") == 0);
	CHECK(add(c, "assets/logo.svg") == 0);
	CHECK(add(c, "assets/x-short.js") == 0);
	CHECK(add(c, "favicon.ICO") == 0);
	CHECK(add(c, "LICENSE") == 0);
	CHECK(add(c, "data.bin") == 0);
	edge_console_done(c);
	CHECK(c->index != NULL);

	CHECK(edge_console_find(c, "/console/", 9, 0, &f) ==
	    EDGE_CONSOLE_FILE && f == c->index);
	CHECK_STR(f->ctype, "text/html; charset=utf-8");
	CHECK_STR(f->cache, "no-cache");
	CHECK(strlen(f->etag) == 34 && f->etag[0] == '"' &&
	    f->etag[33] == '"');
	/* The same bytes, the same validator; other bytes, another. */
	CHECK(edge_console_find(c, "/console/assets/logo.svg", 24, 0, &f) ==
	    EDGE_CONSOLE_FILE);
	CHECK_STR(f->ctype, "image/svg+xml");
	CHECK(strcmp(f->etag, c->index->etag) != 0);
	CHECK(edge_console_find(c, "/console/assets/main-5GJXH2RQ.js", 32, 0,
	    &f) == EDGE_CONSOLE_FILE);
	CHECK_STR(f->ctype, "text/javascript; charset=utf-8");
	CHECK_STR(f->cache, "public, max-age=31536000, immutable");
	CHECK(edge_console_find(c, "/console/assets/main-5GJXH2RQ.css", 33, 0,
	    &f) == EDGE_CONSOLE_FILE);
	CHECK_STR(f->ctype, "text/css; charset=utf-8");
	/* "-short" is no hash: revalidated. */
	CHECK(edge_console_find(c, "/console/assets/x-short.js", 26, 0, &f) ==
	    EDGE_CONSOLE_FILE);
	CHECK_STR(f->cache, "no-cache");
	CHECK(edge_console_find(c, "/console/favicon.ICO", 20, 0, &f) ==
	    EDGE_CONSOLE_FILE);
	CHECK_STR(f->ctype, "image/x-icon");
	CHECK(edge_console_find(c, "/console/LICENSE", 16, 0, &f) ==
	    EDGE_CONSOLE_FILE);
	CHECK_STR(f->ctype, "application/octet-stream");
	edge_console_free(c);
}

/* What a path finds: exact names only; index.html only for navigations. */
static void
test_find(void)
{
	struct edge_console	*c = edge_console_new("/x", "csp");
	const char		*name;

	add(c, "index.html");
	add(c, "assets/app.js");
	edge_console_done(c);

	CHECK(find(c, "/console", 0, &name) == EDGE_CONSOLE_REDIRECT);
	CHECK(find(c, "/console/", 0, &name) == EDGE_CONSOLE_FILE);
	CHECK_STR(name, "index.html");
	CHECK(find(c, "/console/index.html", 0, &name) == EDGE_CONSOLE_FILE);
	CHECK(find(c, "/console/assets/app.js", 0, &name) ==
	    EDGE_CONSOLE_FILE);
	CHECK_STR(name, "assets/app.js");
	/* Nothing else, however it is spelled. */
	CHECK(find(c, "/console/assets/nope.js", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(name == NULL);
	CHECK(find(c, "/console/assets//app.js", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(find(c, "/console/./assets/app.js", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(find(c, "/console/assets/../index.html", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(find(c, "/console/%2e%2e/etc/passwd", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(find(c, "/console/../../etc/passwd", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(find(c, "/console/ASSETS/APP.JS", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(edge_console_find(c, "/console/assets/app.js\0x", 24, 0,
	    (const struct edge_console_file **)&name) == EDGE_CONSOLE_NONE);
	/* A navigation to the app's own routes gets its page... */
	CHECK(find(c, "/console/sb/01jd3k5x8q2w7e9r4t6y1v3h5m", 1, &name) ==
	    EDGE_CONSOLE_FILE);
	CHECK_STR(name, "index.html");
	CHECK(find(c, "/console/../../etc/passwd", 1, &name) ==
	    EDGE_CONSOLE_FILE);
	CHECK_STR(name, "index.html");
	/* ...but never for a path outside /console/. */
	CHECK(find(c, "/consolex", 1, &name) == EDGE_CONSOLE_NONE);
	CHECK(find(c, "/v1/sandboxes", 1, &name) == EDGE_CONSOLE_NONE);
	edge_console_free(c);

	/* No set, or an empty one: only the redirect. */
	CHECK(find(NULL, "/console", 1, &name) == EDGE_CONSOLE_REDIRECT);
	CHECK(find(NULL, "/console/", 1, &name) == EDGE_CONSOLE_NONE);
	c = edge_console_new(NULL, "csp");
	CHECK(find(c, "/console/", 1, &name) == EDGE_CONSOLE_NONE);
	edge_console_free(c);
}

/* Which targets are the console's. */
static void
test_match(void)
{
	CHECK(edge_console_match("/console", 8));
	CHECK(edge_console_match("/console/", 9));
	CHECK(edge_console_match("/console?x=1", 12));
	CHECK(edge_console_match("/console/assets/a.js", 20));
	CHECK(!edge_console_match("/consolex", 9));
	CHECK(!edge_console_match("/consol", 7));
	CHECK(!edge_console_match("/v1/console", 11));
	CHECK(!edge_console_match("/Console/", 9));
	CHECK(!edge_console_match("", 0));
}

/* If-None-Match lists, weak and strong, and "*". */
static void
test_etag(void)
{
	const char	*e = "\"0123456789abcdef0123456789abcdef\"";

#define M(v)	edge_console_etag_match((v), strlen(v), e)
	CHECK(M("\"0123456789abcdef0123456789abcdef\""));
	CHECK(M("W/\"0123456789abcdef0123456789abcdef\""));
	CHECK(M("\"a\", \"0123456789abcdef0123456789abcdef\""));
	CHECK(M("\"a\",W/\"0123456789abcdef0123456789abcdef\" ,"));
	CHECK(M("*"));
	CHECK(!M(""));
	CHECK(!M("\"a\""));
	CHECK(!M("0123456789abcdef0123456789abcdef"));
	CHECK(!M("\"0123456789abcdef0123456789abcde\""));
	CHECK(!M("\"0123456789abcdef0123456789abcdef"));
	CHECK(!M("W/"));
	CHECK(!M("junk, \"0123456789abcdef0123456789abcdef\""));
#undef M
}

/* Accept-Encoding: does the client take gzip? */
static void
test_gzip_ok(void)
{
#define G(v)	edge_console_gzip_ok((v), strlen(v))
	CHECK(G("gzip"));
	CHECK(G("GZip"));
	CHECK(G("x-gzip"));
	CHECK(G("gzip, deflate, br, zstd"));
	CHECK(G("br;q=1.0, gzip;q=0.8, *;q=0.1"));
	CHECK(G("deflate, gzip ; q=0.5"));
	CHECK(G("*"));
	CHECK(G("identity, *;q=1"));
	CHECK(!G(""));
	CHECK(!G("identity"));
	CHECK(!G("br, deflate"));
	CHECK(!G("gzip;q=0"));
	CHECK(!G("gzip;q=0.000"));
	CHECK(!G("gzip; Q=0."));
	CHECK(!G("gzip;q=0, *"));
	CHECK(!G("*;q=0"));
	CHECK(!G("gzipx, xgzip, gzi"));
	CHECK(G("gzip;q=0.001"));
	CHECK(G(" , ,gzip"));
#undef G
}

/* "x.gz" beside "x" is x's gzip variant and no longer served by name. */
static void
test_gz_pairs(void)
{
	struct edge_console		*c = edge_console_new("/x", "csp");
	const struct edge_console_file	*f;
	const char			*name;
	char				*cause = NULL;

	add(c, "index.html");
	CHECK(edge_console_add(c, "index.html.gz", "gz", 2, &cause) == 0);
	add(c, "assets/a-ABCDEFGH.js");
	add(c, "assets/a-ABCDEFGH.js.gz");
	add(c, "lonely.txt.gz");
	edge_console_done(c);
	CHECK(c->index != NULL && c->index->gz != NULL &&
	    strcmp(c->index->gz->name, "index.html.gz") == 0 &&
	    c->index->gz->len == 2);
	CHECK(strcmp(c->index->etag, c->index->gz->etag) != 0);
	CHECK(edge_console_find(c, "/console/assets/a-ABCDEFGH.js", 29, 0,
	    &f) == EDGE_CONSOLE_FILE && f->gz != NULL && f->gz->variant);
	CHECK(find(c, "/console/index.html.gz", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	CHECK(find(c, "/console/assets/a-ABCDEFGH.js.gz", 0, &name) ==
	    EDGE_CONSOLE_NONE);
	/* Without its base it is a file like another. */
	CHECK(edge_console_find(c, "/console/lonely.txt.gz", 22, 0, &f) ==
	    EDGE_CONSOLE_FILE && f->gz == NULL);
	CHECK_STR(f->ctype, "application/gzip");
	edge_console_free(c);
}

/* Loading a directory: what is taken, skipped, refused. */
static void
test_load(void)
{
	struct edge_console		*c;
	const struct edge_console_file	*f;
	char				*cause = NULL, path[256], big[300];
	const char			*name;
	int				 i;

	snprintf(tmpdir, sizeof tmpdir, "/tmp/sbx-console-XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	/* No index.html: not a console. */
	sub("assets");
	put("assets/app-ABCDEFGH.js", "console.log(1)");
	c = edge_console_load(tmpdir, "csp", &cause);
	CHECK(c == NULL && cause != NULL && strstr(cause, "index.html"));
	free(cause);
	cause = NULL;

	put("index.html", "<!doctype html><title>t</title>");
	put(".secret", "no");
	sub(".git");
	put(".git/config", "no");
	put("bad name.txt", "no");
	snprintf(path, sizeof path, "%s/link.txt", tmpdir);
	CHECK(symlink("/etc/passwd", path) == 0);
	snprintf(path, sizeof path, "%s/linkdir", tmpdir);
	CHECK(symlink("/etc", path) == 0);
	c = edge_console_load(tmpdir, "csp", &cause);
	CHECK(c != NULL && cause == NULL);
	if (c != NULL) {
		CHECK(c->nfiles == 2);
		CHECK(find(c, "/console/assets/app-ABCDEFGH.js", 0, &name) ==
		    EDGE_CONSOLE_FILE);
		CHECK(edge_console_find(c, "/console/assets/app-ABCDEFGH.js",
		    31, 0, &f) == EDGE_CONSOLE_FILE && f->len == 14 &&
		    memcmp(f->data, "console.log(1)", 14) == 0);
		CHECK(find(c, "/console/.secret", 0, &name) ==
		    EDGE_CONSOLE_NONE);
		CHECK(find(c, "/console/.git/config", 0, &name) ==
		    EDGE_CONSOLE_NONE);
		CHECK(find(c, "/console/link.txt", 0, &name) ==
		    EDGE_CONSOLE_NONE);
		CHECK(find(c, "/console/linkdir/passwd", 0, &name) ==
		    EDGE_CONSOLE_NONE);
		CHECK(c->bytes == 14 + 31);
	}
	edge_console_free(c);

	/* Nested past the depth limit: refused whole. */
	memset(big, 0, sizeof big);
	strcpy(big, "d");
	sub(big);
	for (i = 0; i < 9; i++) {
		strcat(big, "/d");
		sub(big);
	}
	strcat(big, "/f.js");
	put(big, "x");
	c = edge_console_load(tmpdir, "csp", &cause);
	CHECK(c == NULL && cause != NULL && strstr(cause, "too deep"));
	free(cause);
	cause = NULL;

	/* Missing, or not set. */
	c = edge_console_load("/nonexistent/sandboxd-console", "csp", &cause);
	CHECK(c == NULL && cause != NULL &&
	    strstr(cause, "No such file or directory"));
	free(cause);
	cause = NULL;
	c = edge_console_load(NULL, "csp", &cause);
	CHECK(c == NULL && cause != NULL);
	free(cause);

	snprintf(path, sizeof path, "rm -rf '%s'", tmpdir);
	if (system(path) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

int
main(void)
{
	log_init(LOG_LEVEL_WARN);
	RUN(test_names);
	RUN(test_headers);
	RUN(test_find);
	RUN(test_match);
	RUN(test_etag);
	RUN(test_gzip_ok);
	RUN(test_gz_pairs);
	RUN(test_load);
	return unit_finish();
}
