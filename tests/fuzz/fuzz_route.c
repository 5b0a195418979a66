/*
 * libFuzzer target: host routing (edge/route.c). Any Host value must
 * classify without a crash or a read past it; a preview match names a
 * valid lowercase id and a port 0 or 1-65535 that appears in the host as
 * written; the same host in upper case and with a trailing dot or a
 * ":port" classifies the same.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge/edge.h"
#include "tests/fuzz/fuzz.h"

static void
fuzz_same(const struct edge_host_match *a, const struct edge_host_match *b)
{
	FUZZ_ASSERT(a->kind == b->kind);
	FUZZ_ASSERT(a->route == b->route);
	if (a->kind == EDGE_HOST_PREVIEW) {
		FUZZ_ASSERT(strcmp(a->sandbox_id, b->sandbox_id) == 0);
		FUZZ_ASSERT(a->port == b->port);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cfg_route		 routes[3];
	static struct config		 cfg;
	struct edge_host_match		 m, m2;
	char				*in, *up;
	size_t				 i;

	if (cfg.preview_domain == NULL) {
		routes[0].name = "exact";
		routes[0].host = "app.example.com";
		routes[1].name = "wild";
		routes[1].host = "*.example.com";
		routes[2].name = "other";
		routes[2].host = "*.preview.localhost";
		cfg.routes = routes;
		cfg.nroutes = 3;
		cfg.preview_domain = "preview.localhost";
	}
	/* With the third route, a wildcard shadows the preview hosts. */
	cfg.nroutes = size > 0 && (data[0] & 1) ? 3 : 2;
	in = malloc(size ? size : 1);
	memcpy(in, data, size);
	edge_route_match(&cfg, in, size, &m);
	if (m.kind == EDGE_HOST_PREVIEW) {
		FUZZ_ASSERT(id_valid(m.sandbox_id, ID_LEN));
		FUZZ_ASSERT(m.port >= 0 && m.port <= 65535);
		for (i = 0; i < ID_LEN; i++)
			FUZZ_ASSERT(!isupper((unsigned char)m.sandbox_id[i]));
	}
	if (m.kind == EDGE_HOST_ROUTE)
		FUZZ_ASSERT(m.route >= routes && m.route < routes + cfg.nroutes);
	/* Case never matters. */
	up = malloc(size ? size : 1);
	for (i = 0; i < size; i++)
		up[i] = (char)toupper((unsigned char)in[i]);
	edge_route_match(&cfg, up, size, &m2);
	fuzz_same(&m, &m2);
	/* Nor a ":port" after it, nor one trailing dot. */
	up = realloc(up, size + 6);
	memcpy(up, in, size);
	memcpy(up + size, ":8080", 5);
	edge_route_match(&cfg, up, size + 5, &m2);
	fuzz_same(&m, &m2);
	if (size > 0 && in[size - 1] != '.' && in[0] != '[' &&
	    memchr(in, ':', size) == NULL) {
		up[size] = '.';
		edge_route_match(&cfg, up, size + 1, &m2);
		fuzz_same(&m, &m2);
	}
	free(up);
	free(in);
	return 0;
}
