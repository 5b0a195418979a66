/*
 * The pages edge answers with itself: small, styled, self-contained HTML
 * for errors (404, 502, 503, 504...) and the "Starting your app" page a
 * browser sees while its sandbox wakes; the API JSON error on API hosts.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

static void	edge_page_send(struct edge_req *, int, const char *,
		    struct evbuffer *, const struct http_header *, size_t);
static void	edge_html_escape(struct evbuffer *, const char *);
static void	edge_json_escape(struct evbuffer *, const char *);
static const char *edge_error_code(int);
static const char *edge_error_title(int);

/* One look for every page: system font, a centered card. */
#define EDGE_PAGE_STYLE							\
	"<style>"							\
	"html{color-scheme:light dark}"					\
	"body{margin:0;min-height:100vh;display:flex;align-items:center;" \
	"justify-content:center;background:#f4f5f7;color:#1f2328;"	\
	"font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,"	\
	"Helvetica,Arial,sans-serif}"					\
	".card{box-sizing:border-box;max-width:28rem;margin:1rem;"	\
	"padding:2rem 2.5rem;background:#fff;border-radius:14px;"	\
	"box-shadow:0 1px 3px rgba(0,0,0,.08),0 8px 28px rgba(0,0,0,.06);" \
	"text-align:center}"						\
	".code{margin:0;font-size:.85rem;letter-spacing:.08em;"	\
	"color:#8c959f}"						\
	"h1{margin:.25rem 0 .5rem;font-size:1.3rem;font-weight:600}"	\
	"p{margin:0;color:#57606a}"					\
	".spin{width:34px;height:34px;margin:0 auto 1.1rem;"		\
	"border:3px solid #d0d7de;border-top-color:#2f6feb;"		\
	"border-radius:50%;animation:spin .8s linear infinite}"		\
	"@keyframes spin{to{transform:rotate(360deg)}}"			\
	"@media (prefers-color-scheme:dark){body{background:#0d1117;"	\
	"color:#e6edf3}.card{background:#161b22;box-shadow:none}"	\
	"p{color:#8b949e}.spin{border-color:#30363d;"			\
	"border-top-color:#58a6ff}}"					\
	"</style>"

#define EDGE_PAGE_HEAD							\
	"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">" \
	"<meta name=\"viewport\" content=\"width=device-width,"	\
	"initial-scale=1\">"

/*
 * The warming page's script: ask for the same URL as a non-navigation
 * (held by edge up to wake_timeout, never answered with this page), and
 * reload once the answer is anything but our own "still waking" 503.
 */
#define EDGE_WARMING_SCRIPT						\
	"<script>(function(){"						\
	"function poll(){fetch(location.href,{cache:\"no-store\","	\
	"credentials:\"same-origin\",headers:{\"Accept\":\"*/*\"}})"	\
	".then(function(r){"						\
	"if(r.status===503&&r.headers.get(\"X-Sandboxd-Waking\"))"	\
	"setTimeout(poll,1000);else location.reload();},"		\
	"function(){setTimeout(poll,1000);});}"				\
	"poll();})();</script>"

/* Append a minimal HTML escape of s to b. */
static void
edge_html_escape(struct evbuffer *b, const char *s)
{
	for (; *s != '\0'; s++) {
		switch (*s) {
		case '<':
			evbuffer_add(b, "&lt;", 4);
			break;
		case '>':
			evbuffer_add(b, "&gt;", 4);
			break;
		case '&':
			evbuffer_add(b, "&amp;", 5);
			break;
		case '"':
			evbuffer_add(b, "&quot;", 6);
			break;
		default:
			evbuffer_add(b, s, 1);
			break;
		}
	}
}

/* Append s as the inside of a JSON string. */
static void
edge_json_escape(struct evbuffer *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			evbuffer_add_printf(b, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			evbuffer_add_printf(b, "\\u%04x", (unsigned char)*s);
		else
			evbuffer_add(b, s, 1);
	}
}

/* The API error code for a status edge itself answers with. */
static const char *
edge_error_code(int status)
{
	switch (status) {
	case 400:
	case 408:
	case 414:
	case 431:
	case 505:
		return "bad_request";
	case 401:
		return "unauthorized";
	case 404:
		return "not_found";
	case 413:
		return "payload_too_large";
	case 502:
	case 503:
	case 504:
		return "unavailable";
	default:
		return "internal";
	}
}

/* The page's headline: what a person needs to know, not the status text. */
static const char *
edge_error_title(int status)
{
	switch (status) {
	case 401:
		return "This preview is private";
	case 404:
		return "Nothing here";
	case 502:
		return "This app is not working";
	case 503:
		return "This app is not available right now";
	case 504:
		return "This app took too long to answer";
	default:
		return http_status_text(status);
	}
}

/*
 * Send a complete response: our framing and cache headers, the extra
 * ones, the body (not for HEAD); ends the request.
 */
static void
edge_page_send(struct edge_req *req, int status, const char *ctype,
    struct evbuffer *body, const struct http_header *extra, size_t nextra)
{
	struct edge_resp_head	 rh;
	struct http_header	 hdrs[8];
	char			 clen[32];
	size_t			 i, n = 0;

	snprintf(clen, sizeof clen, "%zu", evbuffer_get_length(body));
	hdrs[n].name = "Content-Type";
	hdrs[n].name_len = 12;
	hdrs[n].value = ctype;
	hdrs[n++].value_len = strlen(ctype);
	hdrs[n].name = "Content-Length";
	hdrs[n].name_len = 14;
	hdrs[n].value = clen;
	hdrs[n++].value_len = strlen(clen);
	hdrs[n].name = "Cache-Control";
	hdrs[n].name_len = 13;
	hdrs[n].value = "no-store";
	hdrs[n++].value_len = 8;
	for (i = 0; i < nextra && n < nitems(hdrs); i++)
		hdrs[n++] = extra[i];

	memset(&rh, 0, sizeof rh);
	rh.status = status;
	rh.headers = hdrs;
	rh.nheaders = n;
	rh.body = HTTP_BODY_LENGTH;
	edge_req_head(req, &rh);
	if (strcmp(req->method, "HEAD") != 0) {
		req->bytes_out += evbuffer_get_length(body);
		evbuffer_add_buffer(req->ops->body(req), body);
	}
	edge_req_end(req);
}

/* An error page, or the API's JSON error on API hosts. */
void
edge_page_error(struct edge_req *req, int status, const char *message,
    const struct http_header *extra, size_t nextra)
{
	struct evbuffer	*body = evbuffer_new();
	const char	*text = http_status_text(status), *ctype;

	if (req->json_errors) {
		ctype = "application/json";
		evbuffer_add_printf(body, "{\"error\":{\"code\":\"%s\","
		    "\"message\":\"", edge_error_code(status));
		edge_json_escape(body, message);
		evbuffer_add_printf(body, "\"}}\n");
	} else {
		ctype = "text/html; charset=utf-8";
		/* The style holds '%': it is no format. */
		evbuffer_add_printf(body, "%s<title>%d %s</title>%s",
		    EDGE_PAGE_HEAD, status, text, EDGE_PAGE_STYLE);
		evbuffer_add_printf(body, "</head>\n<body><main class=\"card\">"
		    "<p class=\"code\">%d %s</p><h1>%s</h1><p>", status, text,
		    edge_error_title(status));
		edge_html_escape(body, message);
		evbuffer_add_printf(body, "</p></main></body></html>\n");
	}
	edge_page_send(req, status, ctype, body, extra, nextra);
	evbuffer_free(body);
}

/*
 * "Starting your app…" for a browser whose navigation waited
 * EDGE_WARMING_MS: it polls the URL itself and reloads once the app
 * answers; without scripts it refreshes every 2 s.
 */
void
edge_page_warming(struct edge_req *req)
{
	static const struct http_header	 extra[] = {
		{ "Retry-After", 11, "2", 1 },
		{ "X-Sandboxd-Waking", 17, "1", 1 }
	};
	struct evbuffer			*body = evbuffer_new();

	evbuffer_add_printf(body, "%s", EDGE_PAGE_HEAD
	    "<title>Starting your app&hellip;</title>"
	    "<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"
	    EDGE_PAGE_STYLE "</head>\n<body><main class=\"card\">"
	    "<div class=\"spin\" aria-hidden=\"true\"></div>"
	    "<h1>Starting your app&hellip;</h1>"
	    "<p>This page reloads by itself as soon as the app answers.</p>"
	    "</main>" EDGE_WARMING_SCRIPT "</body></html>\n");
	log_debug("warming page\tpeer=%s sandbox=%s", req->conn->peer,
	    req->host.sandbox_id);
	edge_page_send(req, 503, "text/html; charset=utf-8", body, extra,
	    nitems(extra));
	evbuffer_free(body);
}

/* A redirect: extra carries Location; a one-line page for old clients. */
void
edge_page_redirect(struct edge_req *req, int status,
    const struct http_header *extra, size_t nextra)
{
	struct evbuffer	*body = evbuffer_new();

	evbuffer_add_printf(body, "%s<title>Redirecting</title>%s</head>\n"
	    "<body><main class=\"card\"><p>Redirecting&hellip;</p></main>"
	    "</body></html>\n", EDGE_PAGE_HEAD, EDGE_PAGE_STYLE);
	edge_page_send(req, status, "text/html; charset=utf-8", body, extra,
	    nextra);
	evbuffer_free(body);
}

/*
 * redirect_https: 308 to the same host (without its port), on the TLS
 * listener's port unless it is 443, with the same path and query. 308
 * keeps the method and body, so an API POST is repeated over TLS.
 */
void
edge_page_https(struct edge_req *req, const struct http_request_head *h)
{
	const struct http_header	*host;
	struct http_header		 loc = { "Location", 8, NULL, 0 };
	struct evbuffer			*url;
	const char			*end;
	size_t				 len;

	host = http_header_find(h->headers, h->nheaders, "host");
	if (host == NULL || host->value_len == 0) {
		edge_req_error(req, 400, "This server is reached over HTTPS; "
		    "the request names no host to redirect to.");
		return;
	}
	len = host->value_len;
	if (host->value[0] == '[') {
		end = memchr(host->value, ']', len);
		if (end != NULL)
			len = end - host->value + 1;
	} else if ((end = memchr(host->value, ':', len)) != NULL)
		len = end - host->value;
	url = evbuffer_new();
	evbuffer_add(url, "https://", 8);
	evbuffer_add(url, host->value, len);
	if (req->edge->tls_port != 443)
		evbuffer_add_printf(url, ":%d", req->edge->tls_port);
	evbuffer_add(url, h->target, h->target_len);
	loc.value_len = evbuffer_get_length(url);
	loc.value = (const char *)evbuffer_pullup(url, -1);
	edge_page_redirect(req, 308, &loc, 1);
	evbuffer_free(url);
}

/*
 * /console/ when console_dir holds no console: a person opened it, so
 * the page says what is missing and the two ways to put it there.
 */
void
edge_page_console_missing(struct edge_req *req, const char *dir,
    const char *why)
{
	struct evbuffer	*body = evbuffer_new();

	evbuffer_add_printf(body, "%s<title>The console is not installed"
	    "</title>%s<style>.card{max-width:36rem;text-align:left}"
	    "code{font:.85em ui-monospace,SFMono-Regular,Menlo,monospace;"
	    "background:rgba(127,127,127,.14);padding:.1em .35em;"
	    "border-radius:5px;word-break:break-all}"
	    "p+p{margin-top:.75rem}</style></head>\n<body><main class=\"card\">"
	    "<p class=\"code\">SANDBOXD CONSOLE</p>"
	    "<h1>The console is not installed</h1><p>sandboxd serves the "
	    "console from <code>", EDGE_PAGE_HEAD, EDGE_PAGE_STYLE);
	edge_html_escape(body, dir != NULL && *dir != '\0' ? dir :
	    "(console_dir is not set)");
	evbuffer_add_printf(body, "</code>");
	if (why != NULL) {
		evbuffer_add_printf(body, " but could not load it: ");
		edge_html_escape(body, why);
	}
	evbuffer_add_printf(body, ".</p><p>Build and install it from the "
	    "source tree with <code>make install</code> (it runs "
	    "<code>scripts/build-console.sh</code>, which needs Node.js and "
	    "npm at build time only), or build it anywhere with "
	    "<code>scripts/build-console.sh DIR</code> and set "
	    "<code>console_dir = DIR</code> in sandboxd.conf.</p>"
	    "<p>Then reload the daemon (<code>systemctl reload sandboxd</code>, "
	    "or SIGHUP) and this page.</p></main></body></html>\n");
	edge_page_send(req, 404, "text/html; charset=utf-8", body, NULL, 0);
	evbuffer_free(body);
}
