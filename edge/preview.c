/*
 * Private previews and cookie hygiene at the edge.
 *
 * A private sandbox's preview answers only a request with a valid preview
 * token, checked here before the target lookup so that a request without
 * one never wakes the sandbox:
 *  - "?sandboxd_token=T" in the query: with T valid, a redirect to the same
 *    URL without that parameter (the others kept, in order) that sets the
 *    cookie "sandboxd_token=T" for this one host (no Domain attribute;
 *    Path=/, HttpOnly, SameSite=Lax, Secure over HTTPS, Max-Age until T
 *    expires). Each preview host (<id> and every <port>-<id>) gets its
 *    own cookie: the same token in the URL works on any of them;
 *  - else the "sandboxd_token" cookie;
 *  - else, or when neither is valid: the 401 page.
 * The token never reaches the app: proxy.c drops the cookie from the
 * Cookie header (req->strip_token), and a query that carries one is
 * always redirected, never proxied.
 *
 * Every preview response (never a [route]'s) loses the Domain attribute
 * of its Set-Cookie headers: a sandbox cannot set a cookie for another.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

#define EDGE_TOKEN_NAME		PREVIEW_TOKEN_PARAM
#define EDGE_TOKEN_NAME_LEN	(sizeof EDGE_TOKEN_NAME - 1)

static int	edge_preview_cookie(struct edge_req *,
		    const struct http_request_head *);
static void	edge_preview_redirect(struct edge_req *, const char *, size_t,
		    const char *, size_t, int64_t);

/* 1 if a sandboxd_token cookie of the request opens the preview. */
static int
edge_preview_cookie(struct edge_req *req, const struct http_request_head *h)
{
	const struct http_header	*hd;
	const char			*val;
	size_t				 i, pos, vlen;
	int64_t				 expires;

	for (i = 0; i < h->nheaders; i++) {
		hd = &h->headers[i];
		if (hd->name_len != 6 || strncasecmp(hd->name, "cookie", 6) != 0)
			continue;
		pos = 0;
		while (http_cookie_next(hd->value, hd->value_len, &pos,
		    EDGE_TOKEN_NAME, EDGE_TOKEN_NAME_LEN, &val, &vlen)) {
			if (control_preview_verify(req->edge->ctl,
			    req->host.sandbox_id, val, vlen, &expires) == 0)
				return (1);
		}
	}
	return (0);
}

/*
 * The redirect to target[0..len) (the URL without its token); with tok,
 * the cookie that carries it until expires.
 */
static void
edge_preview_redirect(struct edge_req *req, const char *target, size_t len,
    const char *tok, size_t toklen, int64_t expires)
{
	struct http_header	 extra[3];
	char			*cookie = NULL;
	size_t			 n = 0;
	int64_t			 age;
	int			 status;

	extra[n].name = "Location";
	extra[n].name_len = 8;
	extra[n].value = target;
	extra[n++].value_len = len;
	if (tok != NULL) {
		age = expires - time_now_ms() / 1000;
		if (age < 1)
			age = 1;
		xasprintf(&cookie, EDGE_TOKEN_NAME "=%.*s; Path=/; "
		    "Max-Age=%lld; HttpOnly; SameSite=Lax%s", (int)toklen, tok,
		    (long long)age, req->https ? "; Secure" : "");
		extra[n].name = "Set-Cookie";
		extra[n].name_len = 10;
		extra[n].value = cookie;
		extra[n++].value_len = strlen(cookie);
	}
	/* The old URL held the token: it goes in no Referer from here. */
	extra[n].name = "Referrer-Policy";
	extra[n].name_len = 15;
	extra[n].value = "no-referrer";
	extra[n++].value_len = 11;
	/* 303 makes a POST's retry a GET: its body went with the token. */
	status = strcmp(req->method, "GET") == 0 ||
	    strcmp(req->method, "HEAD") == 0 ? 302 : 303;
	log_debug("preview token accepted\tpeer=%s sandbox=%s cookie=%d",
	    req->conn->peer, req->host.sandbox_id, tok != NULL);
	edge_page_redirect(req, status, extra, n);
	free(cookie);
}

/*
 * Whether a preview request may go on: 0 for a public sandbox (or an
 * unknown one: the lookup answers 404) and for a private one the request
 * holds a valid token cookie for; -1 when it has been answered here (the
 * token redirect, or 401). Never wakes the sandbox.
 */
int
edge_preview_auth(struct edge_req *req, const struct http_request_head *h)
{
	struct control	*ctl = req->edge->ctl;
	const char	*val = NULL;
	char		*target = NULL;
	size_t		 tlen = 0, vlen = 0;
	int64_t		 expires;
	int		 found = 0;

	if (!control_preview_private(ctl, req->host.sandbox_id))
		return (0);
	req->strip_token = 1;
	if (memchr(h->target, '?', h->target_len) != NULL) {
		target = xmalloc(h->target_len);
		found = http_query_remove(h->target, h->target_len,
		    EDGE_TOKEN_NAME, EDGE_TOKEN_NAME_LEN, target, &tlen, &val,
		    &vlen);
	}
	if (found > 0) {
		/* An empty path cannot be: a target starts with '/'. */
		if (control_preview_verify(ctl, req->host.sandbox_id, val, vlen,
		    &expires) == 0)
			edge_preview_redirect(req, target, tlen, val, vlen,
			    expires);
		else if (edge_preview_cookie(req, h))
			edge_preview_redirect(req, target, tlen, NULL, 0, 0);
		else
			edge_req_error(req, 401, "This link's preview token is "
			    "not valid or has expired. Ask for a new link.");
		free(target);
		return (-1);
	}
	free(target);
	if (edge_preview_cookie(req, h))
		return (0);
	edge_req_error(req, 401, "This preview is private. Open it with a "
	    "link that carries a preview token.");
	return (-1);
}

/*
 * The Set-Cookie headers of a preview response without their Domain
 * attributes, rewritten in place in hdrs (values into *buf, allocated
 * here only if one has any: free it after the head is sent).
 */
void
edge_preview_set_cookies(struct http_header *hdrs, size_t n, size_t room,
    char **buf)
{
	size_t	i, used = 0, len;

	*buf = NULL;
	for (i = 0; i < n; i++) {
		if (hdrs[i].name_len != 10 ||
		    strncasecmp(hdrs[i].name, "set-cookie", 10) != 0 ||
		    http_setcookie_strip_domain(hdrs[i].value,
		    hdrs[i].value_len, NULL, &len) == 0)
			continue;
		/* room: the head's size, more than all its values together. */
		if (*buf == NULL)
			*buf = xmalloc(room);
		http_setcookie_strip_domain(hdrs[i].value, hdrs[i].value_len,
		    *buf + used, &len);
		hdrs[i].value = *buf + used;
		hdrs[i].value_len = len;
		used += len;
	}
}
