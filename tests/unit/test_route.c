/*
 * edge_route_match: Host classification against [route]s and the preview
 * domain.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>

#include "edge/edge.h"
#include "tests/unit/unit.h"

#define ID	"01jd3k5x8q2w7e9r4t6y1v3h5m"
#define IDUP	"01JD3K5X8Q2W7E9R4T6Y1V3H5M"

static struct cfg_route	routes[4];
static struct config	cfg;

/* Classify a NUL-terminated host. */
static enum edge_host_kind
kind(const char *host, struct edge_host_match *m)
{
	edge_route_match(&cfg, host, strlen(host), m);
	return m->kind;
}

/* A config with routes and preview domain "preview.localhost". */
static void
setup(void)
{
	memset(&cfg, 0, sizeof cfg);
	memset(routes, 0, sizeof routes);
	routes[0].name = "wild";
	routes[0].host = "*.apps.example.com";
	routes[1].name = "exact";
	routes[1].host = "app.example.com";
	routes[2].name = "exact-under-wild";
	routes[2].host = "special.apps.example.com";
	routes[3].name = "bench";
	routes[3].host = "x.preview.localhost";
	cfg.routes = routes;
	cfg.nroutes = 4;
	cfg.preview_domain = "preview.localhost";
}

/* The id used in these tests must be valid for id_valid. */
static void
test_id_fixture(void)
{
	CHECK(id_valid(ID, strlen(ID)));
	CHECK(!id_valid(IDUP, strlen(IDUP)));
}

static void
test_routes_exact(void)
{
	struct edge_host_match	m;

	CHECK(kind("app.example.com", &m) == EDGE_HOST_ROUTE);
	CHECK(m.route == &routes[1]);
	CHECK(kind("APP.Example.COM", &m) == EDGE_HOST_ROUTE);
	CHECK(m.route == &routes[1]);
	CHECK(kind("app.example.com:8080", &m) == EDGE_HOST_ROUTE);
	CHECK(m.route == &routes[1]);
	CHECK(kind("app.example.com.", &m) == EDGE_HOST_ROUTE);
	CHECK(kind("app.example.com.:443", &m) == EDGE_HOST_ROUTE);
	/* Two trailing dots are not a host name. */
	CHECK(kind("app.example.com..", &m) == EDGE_HOST_API);
	CHECK(kind("app.example.co", &m) == EDGE_HOST_API);
	CHECK(kind("xapp.example.com", &m) == EDGE_HOST_API);
	CHECK(kind("pp.example.com", &m) == EDGE_HOST_API);
	/* A route inside the preview domain wins over the preview rules. */
	CHECK(kind("x.preview.localhost", &m) == EDGE_HOST_ROUTE);
	CHECK(m.route == &routes[3]);
	CHECK(kind("X.PREVIEW.LOCALHOST:18200", &m) == EDGE_HOST_ROUTE);
}

static void
test_routes_wildcard(void)
{
	struct edge_host_match	m;

	CHECK(kind("foo.apps.example.com", &m) == EDGE_HOST_ROUTE);
	CHECK(m.route == &routes[0]);
	CHECK(kind("FOO.apps.example.com:80", &m) == EDGE_HOST_ROUTE);
	CHECK(m.route == &routes[0]);
	/* Exactly one label stands for the star. */
	CHECK(kind("a.b.apps.example.com", &m) == EDGE_HOST_API);
	CHECK(kind("apps.example.com", &m) == EDGE_HOST_API);
	CHECK(kind(".apps.example.com", &m) == EDGE_HOST_API);
	CHECK(kind("fooapps.example.com", &m) == EDGE_HOST_API);
	/* Exact routes come before wildcards, whatever the config order. */
	CHECK(kind("special.apps.example.com", &m) == EDGE_HOST_ROUTE);
	CHECK(m.route == &routes[2]);
}

static void
test_preview(void)
{
	struct edge_host_match	m;

	CHECK(kind(ID ".preview.localhost", &m) == EDGE_HOST_PREVIEW);
	CHECK_STR(m.sandbox_id, ID);
	CHECK(m.port == 0);
	CHECK(m.route == NULL);
	CHECK(kind(ID ".preview.localhost:8080", &m) == EDGE_HOST_PREVIEW);
	CHECK(kind(ID ".preview.localhost.", &m) == EDGE_HOST_PREVIEW);
	/* Host names are case-insensitive; the id comes back lowercase. */
	CHECK(kind(IDUP ".PREVIEW.localhost", &m) == EDGE_HOST_PREVIEW);
	CHECK_STR(m.sandbox_id, ID);

	CHECK(kind("5173-" ID ".preview.localhost", &m) == EDGE_HOST_PREVIEW);
	CHECK_STR(m.sandbox_id, ID);
	CHECK(m.port == 5173);
	CHECK(kind("1-" ID ".preview.localhost", &m) == EDGE_HOST_PREVIEW);
	CHECK(m.port == 1);
	CHECK(kind("65535-" ID ".preview.localhost:80", &m) ==
	    EDGE_HOST_PREVIEW);
	CHECK(m.port == 65535);
}

static void
test_bad_preview(void)
{
	struct edge_host_match	m;

	CHECK(kind("preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("PREVIEW.localhost:8080", &m) == EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("preview.localhost.", &m) == EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("nope.preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	CHECK(m.sandbox_id[0] == '\0');
	CHECK(kind("01jd3k5x8q2w7e9r4t6y1v3h5.preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);	/* 25 chars */
	CHECK(kind("01jd3k5x8q2w7e9r4t6y1v3h5mm.preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);	/* 27 chars */
	/* 'u' is not in Crockford's alphabet. */
	CHECK(kind("01jd3k5x8q2w7e9r4t6y1v3h5u.preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	/* Ports: decimal, 1-65535, no leading zero, no sign, not empty. */
	CHECK(kind("0-" ID ".preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("080-" ID ".preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("65536-" ID ".preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("100000-" ID ".preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("-" ID ".preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("+80-" ID ".preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("8a-" ID ".preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	CHECK(kind("80--" ID ".preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	CHECK(kind(ID "-80.preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	/* Deeper names under the preview domain are not previews. */
	CHECK(kind("a." ID ".preview.localhost", &m) ==
	    EDGE_HOST_BAD_PREVIEW);
	CHECK(kind(ID ".x.preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	CHECK(kind(".preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
}

static void
test_api(void)
{
	struct edge_host_match	m;

	CHECK(kind("localhost", &m) == EDGE_HOST_API);
	CHECK(kind("localhost:8080", &m) == EDGE_HOST_API);
	CHECK(kind("127.0.0.1:8080", &m) == EDGE_HOST_API);
	CHECK(kind("[::1]:8080", &m) == EDGE_HOST_API);
	CHECK(kind("", &m) == EDGE_HOST_API);
	CHECK(kind(".", &m) == EDGE_HOST_API);
	CHECK(kind(":80", &m) == EDGE_HOST_API);
	/* Only a real label boundary puts a host under the domain. */
	CHECK(kind(ID "preview.localhost", &m) == EDGE_HOST_API);
	CHECK(kind("xpreview.localhost", &m) == EDGE_HOST_API);
	CHECK(kind("preview.localhost.evil.com", &m) == EDGE_HOST_API);
	CHECK(kind(ID ".preview.localhostx", &m) == EDGE_HOST_API);
	CHECK(m.sandbox_id[0] == '\0');
	/* Not NUL-terminated input: only len bytes count. */
	edge_route_match(&cfg, "app.example.comXYZ", 15, &m);
	CHECK(m.kind == EDGE_HOST_ROUTE && m.route == &routes[1]);
	edge_route_match(&cfg, ID ".preview.localhostjunk", 44, &m);
	CHECK(m.kind == EDGE_HOST_PREVIEW);
}

static void
test_no_preview_domain(void)
{
	struct edge_host_match	m;

	cfg.preview_domain = NULL;
	CHECK(kind(ID ".preview.localhost", &m) == EDGE_HOST_API);
	CHECK(kind("app.example.com", &m) == EDGE_HOST_ROUTE);
	cfg.preview_domain = "preview.localhost.";
	CHECK(kind(ID ".preview.localhost", &m) == EDGE_HOST_PREVIEW);
	CHECK(kind("preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	cfg.preview_domain = "preview.localhost";
	cfg.nroutes = 0;
	CHECK(kind("app.example.com", &m) == EDGE_HOST_API);
	CHECK(kind("x.preview.localhost", &m) == EDGE_HOST_BAD_PREVIEW);
	cfg.nroutes = 4;
}

int
main(void)
{
	setup();
	RUN(test_id_fixture);
	RUN(test_routes_exact);
	RUN(test_routes_wildcard);
	RUN(test_preview);
	RUN(test_bad_preview);
	RUN(test_api);
	RUN(test_no_preview_domain);
	return unit_finish();
}
