/*
 * Host classification: which of the [route] upstreams, the preview hosts or
 * the API a request's Host header selects.
 *
 * Rules, in order (all comparisons are case-insensitive, any ":port" is
 * ignored and one trailing dot is allowed):
 *  1. a [route] whose host is exactly the request's host;
 *  2. a [route] "*.example.com", which matches exactly ONE label in place of
 *     the star ("a.example.com", not "a.b.example.com" nor "example.com"),
 *     as a wildcard TLS certificate does; routes are tried in config order;
 *  3. "<id>.<preview_domain>" and "<port>-<id>.<preview_domain>" with a valid
 *     lowercase ULID and a decimal port 1-65535 without leading zeros;
 *  4. anything else under the preview domain, or the bare preview domain:
 *     a bad preview host (404 page);
 *  5. everything else: the API.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include <strings.h>

#include "edge/edge.h"

static int	edge_route_wildcard(const char *, const char *, size_t);
static int	edge_route_label(const char *, size_t,
		    struct edge_host_match *);

/* 1 if host[0..len) matches the pattern "*.suffix" with one label. */
static int
edge_route_wildcard(const char *pattern, const char *host, size_t len)
{
	const char	*suffix = pattern + 1;	/* ".example.com" */
	size_t		 slen = strlen(suffix);

	if (len <= slen)
		return 0;
	if (strncasecmp(host + len - slen, suffix, slen) != 0)
		return 0;
	/* The star stands for one non-empty label: no dot in what is left. */
	return memchr(host, '.', len - slen) == NULL;
}

/* Parse a preview label "<id>" or "<port>-<id>"; 1 if valid. */
static int
edge_route_label(const char *label, size_t len, struct edge_host_match *m)
{
	char		 id[ID_LEN];
	const char	*dash;
	size_t		 i, plen;
	int		 port = 0;

	dash = memchr(label, '-', len);
	if (dash != NULL) {
		plen = dash - label;
		/* No leading zero, so each port has exactly one spelling. */
		if (plen == 0 || plen > 5 || label[0] == '0')
			return 0;
		for (i = 0; i < plen; i++) {
			if (label[i] < '0' || label[i] > '9')
				return 0;
			port = port * 10 + (label[i] - '0');
		}
		if (port < 1 || port > 65535)
			return 0;
		label = dash + 1;
		len -= plen + 1;
	}
	if (len != ID_LEN)
		return 0;
	/* Host names are case-insensitive; ids are lowercase. */
	for (i = 0; i < ID_LEN; i++) {
		id[i] = label[i];
		if (id[i] >= 'A' && id[i] <= 'Z')
			id[i] += 'a' - 'A';
	}
	if (!id_valid(id, ID_LEN))
		return 0;
	memcpy(m->sandbox_id, id, ID_LEN);
	m->sandbox_id[ID_LEN] = '\0';
	m->port = port;
	return 1;
}

void
edge_route_match(const struct config *cfg, const char *host, size_t len,
    struct edge_host_match *m)
{
	const struct cfg_route	*r;
	const char		*colon, *domain;
	size_t			 i, dlen;

	memset(m, 0, sizeof *m);
	m->kind = EDGE_HOST_API;

	/* An IPv6 literal is never a route or a preview host. */
	if (len == 0 || host[0] == '[')
		return;
	if ((colon = memchr(host, ':', len)) != NULL)
		len = colon - host;
	if (len > 0 && host[len - 1] == '.')
		len--;
	if (len == 0 || host[len - 1] == '.')
		return;

	for (i = 0; i < cfg->nroutes; i++) {
		r = &cfg->routes[i];
		if (r->host[0] != '*' && strlen(r->host) == len &&
		    strncasecmp(r->host, host, len) == 0) {
			m->kind = EDGE_HOST_ROUTE;
			m->route = r;
			return;
		}
	}
	for (i = 0; i < cfg->nroutes; i++) {
		r = &cfg->routes[i];
		if (r->host[0] == '*' && r->host[1] == '.' &&
		    edge_route_wildcard(r->host, host, len)) {
			m->kind = EDGE_HOST_ROUTE;
			m->route = r;
			return;
		}
	}

	if ((domain = cfg->preview_domain) == NULL || *domain == '\0')
		return;
	dlen = strlen(domain);
	if (domain[dlen - 1] == '.')
		dlen--;
	if (len == dlen && strncasecmp(host, domain, dlen) == 0) {
		m->kind = EDGE_HOST_BAD_PREVIEW;
		return;
	}
	if (len < dlen + 1 || host[len - dlen - 1] != '.' ||
	    strncasecmp(host + len - dlen, domain, dlen) != 0)
		return;
	len -= dlen + 1;
	if (memchr(host, '.', len) == NULL && edge_route_label(host, len, m))
		m->kind = EDGE_HOST_PREVIEW;
	else
		m->kind = EDGE_HOST_BAD_PREVIEW;
}
