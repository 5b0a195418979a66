/*
 * The built-in console (docs/console.md): the static files of a browser
 * app, served on the API host under /console/. console_dir is read into
 * memory at start and again on SIGHUP, so a request never touches the
 * disk; a request path is looked up by its exact name among the files
 * loaded, never joined to the directory, so nothing else can be served.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

#define EDGE_CONSOLE_PREFIX	"/console/"
#define EDGE_CONSOLE_PREFIX_LEN	9
#define EDGE_CONSOLE_MAX_FILES	512
#define EDGE_CONSOLE_MAX_FILE	(8 * 1024 * 1024)
#define EDGE_CONSOLE_MAX_BYTES	(32 * 1024 * 1024)
#define EDGE_CONSOLE_MAX_DEPTH	8
#define EDGE_CONSOLE_MAX_NAME	255
#define EDGE_CONSOLE_IMMUTABLE	"public, max-age=31536000, immutable"
#define EDGE_CONSOLE_REVALIDATE	"no-cache"

static int	edge_console_name_ok(const char *);
static const char *edge_console_ctype(const char *);
static int	edge_console_hashed(const char *);
static int	edge_console_cmp(const void *, const void *);
static int	edge_console_walk(struct edge_console *, int, const char *,
		    int, char **);
static int	edge_console_read(struct edge_console *, int, const char *,
		    const char *, char **);
static char	*edge_console_csp(const struct config *);
static int	edge_console_navigation(const struct http_request_head *);
static void	edge_console_send(struct edge_req *,
		    const struct edge_console_file *,
		    const struct edge_console_file *, int);
static int	edge_console_qzero(const char *, size_t);

/* Content types by extension; anything else is application/octet-stream. */
static const struct {
	const char	*ext;
	const char	*ctype;
} edge_console_types[] = {
	{ "html",	 "text/html; charset=utf-8" },
	{ "js",		 "text/javascript; charset=utf-8" },
	{ "mjs",	 "text/javascript; charset=utf-8" },
	{ "css",	 "text/css; charset=utf-8" },
	{ "json",	 "application/json" },
	{ "map",	 "application/json" },
	{ "webmanifest", "application/manifest+json" },
	{ "svg",	 "image/svg+xml" },
	{ "png",	 "image/png" },
	{ "ico",	 "image/x-icon" },
	{ "woff2",	 "font/woff2" },
	{ "woff",	 "font/woff" },
	{ "txt",	 "text/plain; charset=utf-8" },
	{ "wasm",	 "application/wasm" },
	{ "gz",		 "application/gzip" },
};

/*
 * 1 if name is one we serve: components of [A-Za-z0-9._-] split by
 * single slashes, none empty or starting with a dot (no "..", no hidden
 * files), at most EDGE_CONSOLE_MAX_NAME bytes.
 */
static int
edge_console_name_ok(const char *name)
{
	const char	*p;
	int		 start = 1;

	if (*name == '\0' || strlen(name) > EDGE_CONSOLE_MAX_NAME)
		return 0;
	for (p = name; *p != '\0'; p++) {
		if (*p == '/') {
			if (start)
				return 0;
			start = 1;
			continue;
		}
		if (start && *p == '.')
			return 0;
		start = 0;
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
		    *p == '-'))
			return 0;
	}
	return !start;
}

/* The Content-Type for a file name, by its extension. */
static const char *
edge_console_ctype(const char *name)
{
	const char	*slash, *dot;
	size_t		 i;

	slash = strrchr(name, '/');
	dot = strrchr(slash != NULL ? slash : name, '.');
	if (dot == NULL)
		return "application/octet-stream";
	for (i = 0; i < nitems(edge_console_types); i++) {
		if (strcasecmp(dot + 1, edge_console_types[i].ext) == 0)
			return edge_console_types[i].ctype;
	}
	return "application/octet-stream";
}

/*
 * 1 if the last component carries a content hash as the bundler writes
 * it ("main-5GJXH2RQ.js": a dash, 8 or more letters and digits, a dot):
 * its bytes never change under that name, so browsers may keep it.
 */
static int
edge_console_hashed(const char *name)
{
	const char	*base, *p, *dash;
	size_t		 n;

	base = strrchr(name, '/');
	base = base != NULL ? base + 1 : name;
	for (dash = strchr(base, '-'); dash != NULL;
	    dash = strchr(dash + 1, '-')) {
		n = 0;
		for (p = dash + 1; (*p >= 'a' && *p <= 'z') ||
		    (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'); p++)
			n++;
		if (n >= 8 && *p == '.')
			return 1;
	}
	return 0;
}

/* An empty set; files come with edge_console_add. */
struct edge_console *
edge_console_new(const char *dir, const char *csp)
{
	struct edge_console	*c;

	c = xcalloc(1, sizeof *c);
	c->dir = xstrdup(dir != NULL ? dir : "");
	c->csp = xstrdup(csp);
	return c;
}

/* Copy one file in, with its headers worked out once, here. */
int
edge_console_add(struct edge_console *c, const char *name, const void *data,
    size_t len, char **cause)
{
	struct edge_console_file	*f;
	char				 hex[DIGEST_SHA256_HEX + 1];

	if (!edge_console_name_ok(name)) {
		xasprintf(cause, "%s: not a name the console serves", name);
		return -1;
	}
	if (c->nfiles >= EDGE_CONSOLE_MAX_FILES) {
		xasprintf(cause, "more than %d files", EDGE_CONSOLE_MAX_FILES);
		return -1;
	}
	if (len > EDGE_CONSOLE_MAX_FILE ||
	    c->bytes + len > EDGE_CONSOLE_MAX_BYTES) {
		xasprintf(cause, "%s: over the size limit (%d MiB a file, %d "
		    "MiB in all)", name, EDGE_CONSOLE_MAX_FILE >> 20,
		    EDGE_CONSOLE_MAX_BYTES >> 20);
		return -1;
	}
	c->files = xreallocarray(c->files, c->nfiles + 1, sizeof *c->files);
	f = &c->files[c->nfiles++];
	memset(f, 0, sizeof *f);
	f->name = xstrdup(name);
	f->ctype = edge_console_ctype(name);
	f->cache = edge_console_hashed(name) ? EDGE_CONSOLE_IMMUTABLE :
	    EDGE_CONSOLE_REVALIDATE;
	/* A strong validator: 128 bits of the content's SHA-256. */
	digest_sha256_hex(data, len, hex);
	snprintf(f->etag, sizeof f->etag, "\"%.32s\"", hex);
	f->data = xmalloc(len > 0 ? len : 1);
	memcpy(f->data, data, len);
	f->len = len;
	c->bytes += len;
	return 0;
}

/* Files by name, for qsort and bsearch. */
static int
edge_console_cmp(const void *a, const void *b)
{
	const struct edge_console_file	*fa = a, *fb = b;

	return strcmp(fa->name, fb->name);
}

/* Ready the set for lookups. */
void
edge_console_done(struct edge_console *c)
{
	struct edge_console_file	 key, *base;
	char				*name;
	size_t				 i, len;

	qsort(c->files, c->nfiles, sizeof *c->files, edge_console_cmp);
	key.name = "index.html";
	c->index = bsearch(&key, c->files, c->nfiles, sizeof *c->files,
	    edge_console_cmp);
	/* The build's precompressed copies: "x.js.gz" beside "x.js". */
	for (i = 0; i < c->nfiles; i++) {
		len = strlen(c->files[i].name);
		if (len <= 3 || strcmp(c->files[i].name + len - 3, ".gz") != 0)
			continue;
		name = xstrndup(c->files[i].name, len - 3);
		key.name = name;
		base = bsearch(&key, c->files, c->nfiles, sizeof *c->files,
		    edge_console_cmp);
		free(name);
		if (base == NULL || base->variant)
			continue;
		base->gz = &c->files[i];
		c->files[i].variant = 1;
	}
}

/* Read one regular file (not through a symlink) beneath dfd into c. */
static int
edge_console_read(struct edge_console *c, int dfd, const char *entry,
    const char *name, char **cause)
{
	struct stat	 st;
	char		*buf = NULL;
	size_t		 got = 0;
	ssize_t		 n;
	int		 fd, rv = -1;

	fd = openat(dfd, entry, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd == -1) {
		xasprintf(cause, "%s: %s", name, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rv = 0;		/* a fifo or device: not ours to serve */
		goto out;
	}
	if (st.st_size > EDGE_CONSOLE_MAX_FILE) {
		xasprintf(cause, "%s: over the size limit (%d MiB a file)",
		    name, EDGE_CONSOLE_MAX_FILE >> 20);
		goto out;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got != (size_t)st.st_size) {
		xasprintf(cause, "%s: short read", name);
		goto out;
	}
	rv = edge_console_add(c, name, buf, got, cause);
out:
	free(buf);
	close(fd);
	return rv;
}

/*
 * Walk the directory dfd (whose own name is prefix, "" at the top) into
 * c: regular files and directories, never symlinks, skipping hidden
 * entries; 0, or -1 with *cause. Closes dfd.
 */
static int
edge_console_walk(struct edge_console *c, int dfd, const char *prefix,
    int depth, char **cause)
{
	DIR		*d;
	struct dirent	*de;
	struct stat	 st;
	char		*name;
	int		 sub, rv = 0;

	if ((d = fdopendir(dfd)) == NULL) {
		xasprintf(cause, "%s: %s", prefix, strerror(errno));
		close(dfd);
		return -1;
	}
	while (rv == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		xasprintf(&name, "%s%s%s", prefix, *prefix != '\0' ? "/" : "",
		    de->d_name);
		if (S_ISREG(st.st_mode)) {
			if (!edge_console_name_ok(name))
				log_warnx("console: skipping %s/%s: not a "
				    "name it serves", c->dir, name);
			else
				rv = edge_console_read(c, dirfd(d),
				    de->d_name, name, cause);
		} else if (S_ISDIR(st.st_mode)) {
			if (depth >= EDGE_CONSOLE_MAX_DEPTH) {
				xasprintf(cause, "%s: nested too deep", name);
				rv = -1;
			} else if ((sub = openat(dirfd(d), de->d_name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			    O_CLOEXEC)) == -1) {
				xasprintf(cause, "%s: %s", name,
				    strerror(errno));
				rv = -1;
			} else
				rv = edge_console_walk(c, sub, name,
				    depth + 1, cause);
		}
		/* Symlinks and the rest are never followed or served. */
		free(name);
	}
	closedir(d);
	return rv;
}

/* console_dir into memory: every file it will ever serve, read now. */
struct edge_console *
edge_console_load(const char *dir, const char *csp, char **cause)
{
	struct edge_console	*c;
	char			*why = NULL;
	int			 dfd;

	if (dir == NULL) {
		xasprintf(cause, "no console_dir is set");
		return NULL;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd == -1) {
		xasprintf(cause, "console_dir %s: %s", dir, strerror(errno));
		return NULL;
	}
	c = edge_console_new(dir, csp);
	if (edge_console_walk(c, dfd, "", 0, &why) != 0) {
		xasprintf(cause, "console_dir %s: %s", dir, why);
		free(why);
		edge_console_free(c);
		return NULL;
	}
	edge_console_done(c);
	if (c->index == NULL) {
		xasprintf(cause, "console_dir %s: no index.html (not a "
		    "console build)", dir);
		edge_console_free(c);
		return NULL;
	}
	return c;
}

/* Free a set and every file's bytes. */
void
edge_console_free(struct edge_console *c)
{
	size_t	i;

	if (c == NULL)
		return;
	for (i = 0; i < c->nfiles; i++) {
		free(c->files[i].name);
		free(c->files[i].data);
	}
	free(c->files);
	free(c->csp);
	free(c->dir);
	free(c);
}

/* Is this request the console's (request.c asks, on the API host only)? */
int
edge_console_match(const char *target, size_t len)
{
	if (len < 8 || memcmp(target, "/console", 8) != 0)
		return 0;
	return len == 8 || target[8] == '/' || target[8] == '?';
}

/* What a path answers, from the set alone. */
enum edge_console_kind
edge_console_find(const struct edge_console *c, const char *path, size_t len,
    int navigation, const struct edge_console_file **fp)
{
	struct edge_console_file	 key;
	char				 name[EDGE_CONSOLE_MAX_NAME + 1];
	size_t				 nlen;

	*fp = NULL;
	if (len == 8 && memcmp(path, "/console", 8) == 0)
		return EDGE_CONSOLE_REDIRECT;
	if (len < EDGE_CONSOLE_PREFIX_LEN ||
	    memcmp(path, EDGE_CONSOLE_PREFIX, EDGE_CONSOLE_PREFIX_LEN) != 0)
		return EDGE_CONSOLE_NONE;
	nlen = len - EDGE_CONSOLE_PREFIX_LEN;
	if (c == NULL || c->index == NULL)
		return EDGE_CONSOLE_NONE;
	if (nlen == 0) {
		*fp = c->index;
		return EDGE_CONSOLE_FILE;
	}
	/*
	 * An exact name among those loaded, or nothing: a name with "%",
	 * "..", "//" or a NUL was never loaded, so it is never found.
	 */
	if (nlen <= EDGE_CONSOLE_MAX_NAME &&
	    memchr(path + EDGE_CONSOLE_PREFIX_LEN, '\0', nlen) == NULL) {
		memcpy(name, path + EDGE_CONSOLE_PREFIX_LEN, nlen);
		name[nlen] = '\0';
		key.name = name;
		*fp = bsearch(&key, c->files, c->nfiles, sizeof *c->files,
		    edge_console_cmp);
		if (*fp != NULL && !(*fp)->variant)
			return EDGE_CONSOLE_FILE;
		*fp = NULL;
	}
	/* The app's own routes (a reload on /console/sb/...): its page. */
	if (navigation) {
		*fp = c->index;
		return EDGE_CONSOLE_FILE;
	}
	return EDGE_CONSOLE_NONE;
}

/* 1 if the parameters p[0..len) (";q=0.5;x=y") hold a q of 0. */
static int
edge_console_qzero(const char *p, size_t len)
{
	size_t	i = 0, j;

	while (i < len) {
		while (i < len && (p[i] == ';' || p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i + 2 <= len && (p[i] == 'q' || p[i] == 'Q') &&
		    p[i + 1] == '=') {
			/* qvalue: "0", "0.", "0.0", ... is zero; anything else is not. */
			j = i + 2;
			if (j >= len || p[j] != '0')
				return 0;
			for (j++; j < len && p[j] != ';' && p[j] != ' ' &&
			    p[j] != '\t'; j++) {
				if (p[j] != '.' && p[j] != '0')
					return 0;
			}
			return 1;
		}
		while (i < len && p[i] != ';')
			i++;
	}
	return 0;
}

/* Does Accept-Encoding take gzip? */
int
edge_console_gzip_ok(const char *v, size_t len)
{
	const char	*end, *item, *params;
	size_t		 ilen, nlen;
	int		 star = 0, named = 0, zero;

	/* 1#( codings [ OWS ";" OWS "q=" qvalue ] ) (RFC 9110 12.5.3). */
	while (len > 0) {
		end = memchr(v, ',', len);
		item = v;
		ilen = end != NULL ? (size_t)(end - v) : len;
		v += ilen + (end != NULL);
		len -= ilen + (end != NULL);
		while (ilen > 0 && (*item == ' ' || *item == '\t')) {
			item++;
			ilen--;
		}
		for (nlen = 0; nlen < ilen && item[nlen] != ';' &&
		    item[nlen] != ' ' && item[nlen] != '\t'; nlen++)
			;
		if (nlen == 0)
			continue;
		params = item + nlen;
		zero = edge_console_qzero(params, ilen - nlen);
		if ((nlen == 4 && strncasecmp(item, "gzip", 4) == 0) ||
		    (nlen == 6 && strncasecmp(item, "x-gzip", 6) == 0)) {
			if (!zero)
				return 1;
			named = 1;
		} else if (nlen == 1 && *item == '*' && !zero)
			star = 1;
	}
	/* "*" takes any coding not named: "gzip;q=0, *" still refuses it. */
	return star && !named;
}

/* Does If-None-Match name this ETag? */
int
edge_console_etag_match(const char *v, size_t len, const char *etag)
{
	size_t	 i = 0, start, elen = strlen(etag);

	/* 1#entity-tag, or "*"; commas and spaces between (RFC 9110 13.1.2). */
	while (i < len) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		if (i == len)
			break;
		if (v[i] == '*')
			return 1;
		/* Weak comparison: a W/ prefix does not matter here. */
		if (i + 2 <= len && v[i] == 'W' && v[i + 1] == '/')
			i += 2;
		if (i == len || v[i] != '"')
			return 0;
		start = i++;
		while (i < len && v[i] != '"')
			i++;
		if (i == len)
			return 0;
		i++;
		if (i - start == elen && memcmp(v + start, etag, elen) == 0)
			return 1;
	}
	return 0;
}

/*
 * The policy for the console's pages: its own scripts and styles (inline
 * styles too: xterm.js's renderer writes a <style> element), API calls
 * and the terminal's WebSocket to this origin ('self' covers ws: and
 * wss: of it), previews framed from any port of the preview domain,
 * nothing else; and no one may frame the console.
 */
static char *
edge_console_csp(const struct config *cfg)
{
	const char	*pd = cfg->preview_domain;
	char		*csp;

	xasprintf(&csp, "default-src 'none'; script-src 'self'; "
	    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
	    "font-src 'self'; connect-src 'self'; "
	    "frame-src http://*.%s:* https://*.%s:*; manifest-src 'self'; "
	    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
	    pd, pd);
	return csp;
}

/* edge_new: load the console, or keep why not for the missing page. */
void
edge_console_init(struct edge *edge)
{
	char	*csp, *cause = NULL;

	csp = edge_console_csp(edge->cfg);
	edge->console = edge_console_load(edge->cfg->console_dir, csp, &cause);
	if (edge->console == NULL) {
		/*
		 * The API works without it; /console/ says how to get it. A
		 * config made by hand (the tests') has no console_dir at all.
		 */
		if (edge->cfg->console_dir != NULL)
			log_warnx("console not served: %s", cause);
		edge->console = edge_console_new(edge->cfg->console_dir, csp);
		edge->console->why = cause;
	} else
		log_info("console loaded\tdir=%s files=%zu bytes=%zu",
		    edge->console->dir, edge->console->nfiles,
		    edge->console->bytes);
	free(csp);
}

/* edge_free: drop the set (idempotent). */
void
edge_console_fini(struct edge *edge)
{
	if (edge->console != NULL)
		free(edge->console->why);
	edge_console_free(edge->console);
	edge->console = NULL;
}

/* SIGHUP: a new set replaces the old only if it loads whole. */
int
edge_console_reload(struct edge *edge)
{
	struct edge_console	*c;
	char			*csp, *cause = NULL;

	csp = edge_console_csp(edge->cfg);
	c = edge_console_load(edge->cfg->console_dir, csp, &cause);
	free(csp);
	if (c == NULL) {
		log_warnx("console reload failed, keeping what is served: %s",
		    cause);
		free(cause);
		return -1;
	}
	/* Responses already queued hold copies, not pointers: free at once. */
	edge_console_fini(edge);
	edge->console = c;
	log_info("console reloaded\tdir=%s files=%zu bytes=%zu", c->dir,
	    c->nfiles, c->bytes);
	return 0;
}

/* 1 for a browser navigation: GET or HEAD whose Accept names text/html. */
static int
edge_console_navigation(const struct http_request_head *h)
{
	const struct http_header	*accept;
	size_t				 i;

	accept = http_header_find(h->headers, h->nheaders, "accept");
	if (accept == NULL)
		return 0;
	for (i = 0; i + 9 <= accept->value_len; i++) {
		if (strncasecmp(accept->value + i, "text/html", 9) == 0)
			return 1;
	}
	return 0;
}

/*
 * A file's answer: 200 with the bytes (not for HEAD), or 304 without;
 * body is f or its gzip variant.
 */
static void
edge_console_send(struct edge_req *req, const struct edge_console_file *f,
    const struct edge_console_file *body, int not_modified)
{
	struct edge_resp_head	 rh;
	struct http_header	 hdrs[14];
	char			 clen[32];
	size_t			 n = 0;

#define EDGE_CONSOLE_HDR(k, v) do {					\
	hdrs[n].name = (k);						\
	hdrs[n].name_len = strlen(k);					\
	hdrs[n].value = (v);						\
	hdrs[n++].value_len = strlen(v);				\
} while (0)
	if (!not_modified) {
		snprintf(clen, sizeof clen, "%zu", body->len);
		EDGE_CONSOLE_HDR("Content-Type", f->ctype);
		EDGE_CONSOLE_HDR("Content-Length", clen);
	}
	if (body != f)
		EDGE_CONSOLE_HDR("Content-Encoding", "gzip");
	/* Each coding has its own validator: its own bytes' hash. */
	EDGE_CONSOLE_HDR("ETag", body->etag);
	if (f->gz != NULL)
		EDGE_CONSOLE_HDR("Vary", "Accept-Encoding");
	EDGE_CONSOLE_HDR("Cache-Control", f->cache);
	EDGE_CONSOLE_HDR("Content-Security-Policy", req->edge->console->csp);
	EDGE_CONSOLE_HDR("X-Content-Type-Options", "nosniff");
	EDGE_CONSOLE_HDR("X-Frame-Options", "DENY");
	EDGE_CONSOLE_HDR("Referrer-Policy", "no-referrer");
	EDGE_CONSOLE_HDR("Cross-Origin-Opener-Policy", "same-origin");
	EDGE_CONSOLE_HDR("Cross-Origin-Resource-Policy", "same-origin");
#undef EDGE_CONSOLE_HDR

	memset(&rh, 0, sizeof rh);
	rh.status = not_modified ? 304 : 200;
	rh.headers = hdrs;
	rh.nheaders = n;
	rh.body = not_modified ? HTTP_BODY_NONE : HTTP_BODY_LENGTH;
	edge_req_head(req, &rh);
	if (!not_modified && strcmp(req->method, "HEAD") != 0) {
		/*
		 * A copy: a SIGHUP may free the set while a slow client
		 * still has this response queued.
		 */
		req->bytes_out += body->len;
		evbuffer_add(req->ops->body(req), body->data, body->len);
	}
	edge_req_end(req);
}

/* Answer a console request from memory: GET and HEAD only. */
void
edge_console_serve(struct edge_req *req, const struct http_request_head *h)
{
	static const struct http_header	 allow = { "Allow", 5, "GET, HEAD", 9 };
	const struct edge_console	*c = req->edge->console;
	const struct edge_console_file	*f, *body;
	const struct http_header	*inm, *ae;
	struct http_header		 loc = { "Location", 8, NULL, 0 };
	const char			*q;
	char				*url;
	size_t				 plen;

	if (strcmp(req->method, "GET") != 0 &&
	    strcmp(req->method, "HEAD") != 0) {
		edge_page_error(req, 405, "The console's files are read with "
		    "GET.", &allow, 1);
		return;
	}
	q = memchr(h->target, '?', h->target_len);
	plen = q != NULL ? (size_t)(q - h->target) : h->target_len;
	switch (edge_console_find(c, h->target, plen,
	    edge_console_navigation(h), &f)) {
	case EDGE_CONSOLE_REDIRECT:
		/* Relative URLs in the page resolve beneath /console/. */
		xasprintf(&url, "/console/%.*s", q != NULL ?
		    (int)(h->target_len - plen) : 0, q != NULL ? q : "");
		loc.value = url;
		loc.value_len = strlen(url);
		edge_page_redirect(req, 308, &loc, 1);
		free(url);
		return;
	case EDGE_CONSOLE_NONE:
		if (c == NULL || c->index == NULL) {
			edge_page_console_missing(req, c != NULL ? c->dir : "",
			    c != NULL ? c->why : NULL);
			return;
		}
		edge_req_error(req, 404, "The console has no such file.");
		return;
	case EDGE_CONSOLE_FILE:
		break;
	}
	body = f;
	ae = http_header_find(h->headers, h->nheaders, "accept-encoding");
	if (f->gz != NULL && ae != NULL &&
	    edge_console_gzip_ok(ae->value, ae->value_len))
		body = f->gz;
	inm = http_header_find(h->headers, h->nheaders, "if-none-match");
	edge_console_send(req, f, body, inm != NULL &&
	    edge_console_etag_match(inm->value, inm->value_len, body->etag));
}
