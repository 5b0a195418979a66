/*
 * Unit tests for common/config.c (and, as they share libcommon and have no
 * test program of their own, common/exchange.c and common/util.c): every
 * key, the defaults, each validation error and its "FILE:LINE: KEY:" form,
 * the syntax corners, the example file and garbage input.
 */
#include <sys/stat.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/common.h"
#include "tests/unit/unit.h"

static char	tmpdir[] = "/tmp/sbx-test-config.XXXXXX";

static struct config *parse_ok(const char *);
static char	*parse_err(const char *);
static int	 has(const char *, const char *);
static int	 has_quiet(const char *, const char *);
static int	 count_lines(const char *);
static char	*write_file(const char *, const char *, size_t, mode_t);

/* Parse text that must be valid; print the errors if it is not. */
static struct config *
parse_ok(const char *text)
{
	struct config	*conf;
	char		*errs = NULL;

	conf = config_parse("t.conf", text, &errs);
	if (conf == NULL) {
		fprintf(stderr, "unexpected errors:\n%s", errs);
		free(errs);
	}
	CHECK(conf != NULL);
	CHECK(errs == NULL);
	return conf;
}

/* Parse text that must be refused; return the error text (caller frees). */
static char *
parse_err(const char *text)
{
	struct config	*conf;
	char		*errs = NULL;

	conf = config_parse("t.conf", text, &errs);
	CHECK(conf == NULL);
	CHECK(errs != NULL);
	config_free(conf);
	return errs != NULL ? errs : xstrdup("");
}

/* 1 if errs contains needle; print errs if not, to show what came instead. */
static int
has(const char *errs, const char *needle)
{
	if (errs != NULL && strstr(errs, needle) != NULL)
		return 1;
	fprintf(stderr, "expected \"%s\" in:\n%s", needle,
	    errs != NULL ? errs : "(null)\n");
	return 0;
}

/* 1 if errs contains needle, without a word when it does not. */
static int
has_quiet(const char *errs, const char *needle)
{
	return errs != NULL && strstr(errs, needle) != NULL;
}

/* Number of lines in a text. */
static int
count_lines(const char *s)
{
	int	n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* Write a file in the test directory; returns its path (caller frees). */
static char *
write_file(const char *name, const char *data, size_t len, mode_t mode)
{
	char	*path;
	int	 fd;

	xasprintf(&path, "%s/%s", tmpdir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd == -1 || write(fd, data, len) != (ssize_t)len)
		fatal("write %s", path);
	fchmod(fd, mode);
	close(fd);
	return path;
}

/* config_load(NULL): the embedded default, every value as documented. */
static void
test_embedded_default(void)
{
	struct config			*c;
	const struct cfg_template	*t;
	struct sockaddr_in		*sin;
	char				*errs = NULL;

	c = config_load(NULL, &errs);
	CHECK(c != NULL);
	CHECK(errs == NULL);
	if (c == NULL)
		return;
	CHECK_STR(c->path, "(embedded default)");
	CHECK(c->nlisten == 1);
	CHECK_STR(c->listen[0].text, "127.0.0.1:8080");
	sin = (struct sockaddr_in *)&c->listen[0].ss;
	CHECK(sin->sin_family == AF_INET);
	CHECK(ntohs(sin->sin_port) == 8080);
	CHECK(ntohl(sin->sin_addr.s_addr) == INADDR_LOOPBACK);
	CHECK(c->listen[0].sslen == sizeof(struct sockaddr_in));
	CHECK(c->ntls_listen == 0);
	CHECK(c->tls_cert == NULL);
	CHECK(c->tls_key == NULL);
	CHECK_STR(c->data_dir, "/var/lib/sandboxd");
	CHECK_STR(c->preview_domain, "preview.localhost");
	CHECK_STR(c->public_url, "http://localhost:8080");
	CHECK_STR(c->docker_socket, "/var/run/docker.sock");
	CHECK_STR(c->network, "sandboxd");
	CHECK_STR(c->default_template, "default");
	CHECK(strlen(c->agentd_path) > 7 &&
	    strcmp(c->agentd_path + strlen(c->agentd_path) - 7, "/agentd") == 0);
	CHECK(strncmp(c->instance, "sbx-", 4) == 0);
	CHECK(strlen(c->instance) == 16);
	CHECK(strspn(c->instance + 4, "0123456789abcdef") == 12);
	CHECK(c->idle_timeout_ms == 15 * 60 * 1000);
	CHECK(c->pause_timeout_ms == 0);
	CHECK(c->wake_timeout_ms == 60 * 1000);
	CHECK(c->shutdown_grace_ms == 10 * 1000);
	CHECK(c->max_sandboxes == 500);
	CHECK(c->max_running == 40);
	CHECK(c->max_file_size == 100ULL * 1024 * 1024);
	CHECK(c->min_free_memory_pct == 10);
	CHECK(c->min_free_memory_bytes == 0);
	CHECK(c->log_level == LOG_LEVEL_INFO);
	CHECK(c->napi_keys == 0);
	CHECK(c->nroutes == 0);
	CHECK(c->ntemplates == 1);
	t = config_template(c, "default");
	CHECK(t != NULL);
	if (t != NULL) {
		CHECK_STR(t->image, "sandboxd/base:latest");
		CHECK(t->port == 3000);
		CHECK_STR(t->dev_command,
		    "npm run dev -- --host 0.0.0.0 --port 3000");
		CHECK_STR(t->seed_dir,
		    "/usr/share/sandboxd/templates/vite-react");
		CHECK(t->memory == 1024ULL * 1024 * 1024);
		CHECK(t->cpus == 1.0);
		CHECK(t->pids_limit == 512);
		CHECK(t->disk == 10ULL * 1024 * 1024 * 1024);
	}
	CHECK(c->disk_check_interval_ms == 60000);
	CHECK(config_template(c, "nope") == NULL);
	config_free(c);

	/* An empty file means the same as the embedded default. */
	c = parse_ok("");
	if (c != NULL) {
		CHECK(c->pause_timeout_ms == 0);
		CHECK(c->min_free_memory_pct == 10);
		CHECK(c->min_free_memory_bytes == 0);
		CHECK(c->nlisten == 1);
		CHECK_STR(c->listen[0].text, "127.0.0.1:8080");
		CHECK(c->ntemplates == 1);
		CHECK(config_template(c, "default") != NULL);
		CHECK_STR(c->path, "t.conf");
	}
	config_free(c);
}

/* Every key of every scope, with values that differ from the defaults. */
static void
test_every_key(void)
{
	struct config		*c;
	const struct cfg_template *t;
	struct sockaddr_in6	*sin6;
	char			*cert, *key, *text;

	cert = write_file("cert.pem", "cert\n", 5, 0644);
	key = write_file("key.pem", "key\n", 4, 0600);
	xasprintf(&text,
	    "listen = 127.0.0.1:9000\n"
	    "listen = [::1]:9001\n"
	    "tls_listen = 0.0.0.0:9443\n"
	    "tls_listen = [::]:8443\n"
	    "tls_cert = %s\n"
	    "tls_key = %s\n"
	    "data_dir = /srv/sbx/\n"
	    "preview_domain = Preview.Example.COM\n"
	    "public_url = https://sbx.example.com/\n"
	    "docker_socket = /run/docker.sock\n"
	    "network = sbx-net\n"
	    "default_template = py\n"
	    "agentd_path = /opt/sbx/agentd\n"
	    "instance = prod-1\n"
	    "idle_timeout = 0\n"
	    "pause_timeout = 5m\n"
	    "min_free_memory = 2g\n"
	    "wake_timeout = 250ms\n"
	    "shutdown_grace = 2m\n"
	    "max_sandboxes = 1000000\n"
	    "max_running = 100000\n"
	    "max_file_size = 2G\n"
	    "log_level = debug\n"
	    "[api_key alice]\n"
	    "secret = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
	    "admin = yes\n"
	    "[api_key bob.b-2_x]\n"
	    "secret = bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n"
	    "[template py]\n"
	    "image = python:3.12-slim\n"
	    "port = 8000\n"
	    "dev_command = python3 -m http.server 8000 -- --x\n"
	    "seed_dir = /srv/seed\n"
	    "memory = 512m\n"
	    "cpus = 0.25\n"
	    "pids_limit = 16\n"
	    "[template bare]\n"
	    "image = alpine\n"
	    "[route app]\n"
	    "host = App.Example.com\n"
	    "upstream = 10.0.0.1:3000\n"
	    "[route wild]\n"
	    "host = *.apps.example.com\n"
	    "upstream = unix:/run/app.sock\n"
	    "[route v6]\n"
	    "host = v6.example.com\n"
	    "upstream = [fd00::1]:80\n", cert, key);
	c = parse_ok(text);
	free(text);
	if (c == NULL)
		goto done;
	CHECK(c->nlisten == 2);
	CHECK_STR(c->listen[1].text, "[::1]:9001");
	sin6 = (struct sockaddr_in6 *)&c->listen[1].ss;
	CHECK(sin6->sin6_family == AF_INET6);
	CHECK(ntohs(sin6->sin6_port) == 9001);
	CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	CHECK(c->ntls_listen == 2);
	CHECK_STR(c->tls_listen[0].text, "0.0.0.0:9443");
	CHECK_STR(c->tls_listen[1].text, "[::]:8443");
	CHECK_STR(c->tls_cert, cert);
	CHECK_STR(c->tls_key, key);
	CHECK_STR(c->data_dir, "/srv/sbx");
	CHECK_STR(c->preview_domain, "preview.example.com");
	CHECK_STR(c->public_url, "https://sbx.example.com");
	CHECK_STR(c->docker_socket, "/run/docker.sock");
	CHECK_STR(c->network, "sbx-net");
	CHECK_STR(c->default_template, "py");
	CHECK_STR(c->agentd_path, "/opt/sbx/agentd");
	CHECK_STR(c->instance, "prod-1");
	CHECK(c->idle_timeout_ms == 0);
	/* idle_timeout 0 never stops, so any pause_timeout comes first. */
	CHECK(c->pause_timeout_ms == 5 * 60 * 1000);
	CHECK(c->min_free_memory_bytes == 2ULL << 30);
	CHECK(c->min_free_memory_pct == 0);
	CHECK(c->wake_timeout_ms == 250);
	CHECK(c->shutdown_grace_ms == 120000);
	CHECK(c->max_sandboxes == 1000000);
	CHECK(c->max_running == 100000);
	CHECK(c->max_file_size == 2ULL << 30);
	CHECK(c->log_level == LOG_LEVEL_DEBUG);

	CHECK(c->napi_keys == 2);
	CHECK_STR(c->api_keys[0].name, "alice");
	CHECK_STR(c->api_keys[0].secret, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	CHECK(c->api_keys[0].admin == 1);
	CHECK_STR(c->api_keys[1].name, "bob.b-2_x");
	CHECK(c->api_keys[1].admin == 0);

	/* Templates given: no built-in "default" is added. */
	CHECK(c->ntemplates == 2);
	CHECK(config_template(c, "default") == NULL);
	t = config_template(c, "py");
	CHECK(t != NULL);
	if (t != NULL) {
		CHECK_STR(t->image, "python:3.12-slim");
		CHECK(t->port == 8000);
		CHECK_STR(t->dev_command,
		    "python3 -m http.server 8000 -- --x");
		CHECK_STR(t->seed_dir, "/srv/seed");
		CHECK(t->memory == 512ULL << 20);
		CHECK(t->cpus == 0.25);
		CHECK(t->pids_limit == 16);
	}
	/* Per-template defaults. */
	t = config_template(c, "bare");
	CHECK(t != NULL);
	if (t != NULL) {
		CHECK_STR(t->image, "alpine");
		CHECK(t->port == 3000);
		CHECK(t->dev_command == NULL);
		CHECK(t->seed_dir == NULL);
		CHECK(t->memory == 1ULL << 30);
		CHECK(t->cpus == 1.0);
		CHECK(t->pids_limit == 512);
	}

	CHECK(c->nroutes == 3);
	CHECK_STR(c->routes[0].name, "app");
	CHECK_STR(c->routes[0].host, "app.example.com");
	CHECK_STR(c->routes[0].upstream, "10.0.0.1:3000");
	CHECK(c->routes[0].is_unix == 0);
	CHECK(c->routes[0].ss.ss_family == AF_INET);
	CHECK(c->routes[0].sslen == sizeof(struct sockaddr_in));
	CHECK_STR(c->routes[1].host, "*.apps.example.com");
	CHECK(c->routes[1].is_unix == 1);
	CHECK_STR(c->routes[1].unix_path, "/run/app.sock");
	CHECK_STR(c->routes[1].upstream, "unix:/run/app.sock");
	CHECK(c->routes[2].ss.ss_family == AF_INET6);
done:
	config_free(c);
	free(cert);
	free(key);
}

/* Comments, whitespace, quoting. */
static void
test_syntax(void)
{
	struct config	*c;
	char		*e;

	c = parse_ok(
	    "# a comment\n"
	    "   # an indented comment\n"
	    "\n"
	    "\t \n"
	    "docker_socket=/tight#not-a-comment\n"
	    "  data_dir   =   /srv/x    # trailing comment\n"
	    "public_url\t=\thttp://h:1/\t\n"
	    "instance = \"quoted\"   # comment after quotes\n"
	    "default_template = t\n"
	    "[ template   t  ]   # comment after a header\n"
	    "image = img#nohash\n"
	    "dev_command = \"cmd # with hash\"\n"
	    "seed_dir = /a#b\n"
	    "[template t2]\n"
	    "image = \"quoted\"\n"
	    "dev_command = \"  spaced \\\"q\\\" \\\\ \"\n");
	if (c != NULL) {
		CHECK_STR(c->docker_socket, "/tight#not-a-comment");
		CHECK_STR(c->data_dir, "/srv/x");
		CHECK_STR(c->public_url, "http://h:1");
		CHECK_STR(c->instance, "quoted");
		CHECK(c->ntemplates == 2);
		CHECK_STR(c->templates[0].name, "t");
		CHECK_STR(c->templates[0].image, "img#nohash");
		CHECK_STR(c->templates[0].dev_command, "cmd # with hash");
		CHECK_STR(c->templates[0].seed_dir, "/a#b");
		CHECK_STR(c->templates[1].image, "quoted");
		CHECK_STR(c->templates[1].dev_command, "  spaced \"q\" \\ ");
	}
	config_free(c);

	/* dev_command unquoted keeps spaces and "--" intact. */
	c = parse_ok("[template default]\nimage = x\n"
	    "dev_command = npm run dev -- --host 0.0.0.0 --port 3000  \n");
	if (c != NULL)
		CHECK_STR(c->templates[0].dev_command,
		    "npm run dev -- --host 0.0.0.0 --port 3000");
	config_free(c);

	/* An empty quoted dev_command means none. */
	c = parse_ok("[template default]\nimage = x\ndev_command = \"\"\n");
	if (c != NULL)
		CHECK(c->templates[0].dev_command == NULL);
	config_free(c);

	/* CRLF line ends. */
	c = parse_ok("network = crlf\r\nmax_running = 7\r\n");
	if (c != NULL) {
		CHECK_STR(c->network, "crlf");
		CHECK(c->max_running == 7);
	}
	config_free(c);

	/* No newline at the end of the last line. */
	c = parse_ok("max_running = 9");
	if (c != NULL)
		CHECK(c->max_running == 9);
	config_free(c);

	e = parse_err("network = \"open\n");
	CHECK(has(e, "t.conf:1: network: unterminated quote"));
	free(e);
	e = parse_err("network = \"a\" b\n");
	CHECK(has(e, "t.conf:1: network: text after the closing quote"));
	free(e);
	e = parse_err("network =\n");
	CHECK(has(e, "t.conf:1: network: missing value"));
	free(e);
	e = parse_err("network =   # only a comment\n");
	CHECK(has(e, "t.conf:1: network: missing value"));
	free(e);
	e = parse_err("listen 127.0.0.1:80\n");
	CHECK(has(e, "t.conf:1: listen: expected \"key = value\""));
	free(e);
	e = parse_err("= value\n");
	CHECK(has(e, "t.conf:1: =: missing key"));
	free(e);
	e = parse_err("Network = x\n");
	CHECK(has(e, "t.conf:1: Network: unknown key"));
	free(e);
}

/* Sections: headers, names, and which keys go where. */
static void
test_sections(void)
{
	char	*e;

	e = parse_err("[template x]\nimage = a\ndata_dir = /x\n");
	CHECK(has(e, "t.conf:3: data_dir: global key in [template x] "
	    "section"));
	free(e);
	e = parse_err("[bogus x]\n");
	CHECK(has(e, "t.conf:1: [bogus]: unknown section type"));
	free(e);
	e = parse_err("[template]\n");
	CHECK(has(e, "t.conf:1: [template]: expected [template NAME]"));
	free(e);
	e = parse_err("[template a b]\n");
	CHECK(has(e, "t.conf:1: [template]: expected [template NAME]"));
	free(e);
	e = parse_err("[template bad/name]\n");
	CHECK(has(e, "t.conf:1: [template]: expected"));
	free(e);
	e = parse_err("[template "
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]"
	    "\n");
	CHECK(has(e, "t.conf:1: [template]: expected"));
	free(e);
	e = parse_err("[]\n");
	CHECK(has(e, "t.conf:1: []: empty section header"));
	free(e);
	e = parse_err("[template x\nimage = y\n");
	CHECK(has(e, "t.conf:1: [: section header without closing ]"));
	free(e);
	e = parse_err("[template x] junk\nimage = y\n");
	CHECK(has(e, "t.conf:1: [: text after section header"));
	free(e);
	e = parse_err("image = x\n");
	CHECK(has(e, "t.conf:1: image: only allowed in a [template] section"));
	free(e);
	e = parse_err("[api_key a]\nsecret = 0123456789abcdef0123456789abcdef\n"
	    "image = x\n");
	CHECK(has(e, "t.conf:3: image: not a key of [api_key] sections"));
	free(e);
	/* Keys under a broken header are not reported a second time. */
	e = parse_err("[nope x]\nimage = y\nfoo = bar\n");
	CHECK(count_lines(e) == 1);
	free(e);

	/* Required keys, reported at the section's header line. */
	e = parse_err("\n[template x]\nport = 80\n");
	CHECK(has(e, "t.conf:2: image: missing in [template x]"));
	free(e);
	e = parse_err("[api_key k]\nadmin = true\n");
	CHECK(has(e, "t.conf:1: secret: missing in [api_key k]"));
	free(e);
	e = parse_err("[route r]\n");
	CHECK(has(e, "t.conf:1: host: missing in [route r]"));
	CHECK(has(e, "t.conf:1: upstream: missing in [route r]"));
	free(e);
}

/* Duplicates: scalar keys, listen addresses, section names, secrets. */
static void
test_duplicates(void)
{
	char	*e;

	e = parse_err("network = a\nnetwork = b\n");
	CHECK(has(e, "t.conf:2: network: set twice (first on line 1)"));
	free(e);
	e = parse_err("[template x]\nimage = a\nimage = b\n");
	CHECK(has(e, "t.conf:3: image: set twice (first on line 2)"));
	free(e);
	/* The same key in two sections is fine; twice in one is not. */
	free(parse_err("[template x]\nimage = a\n[template y]\nimage = b\n"
	    "port = 1\nport = 2\n"));
	config_free(parse_ok("[template x]\nimage = a\nport = 1\n"
	    "[template default]\nimage = b\nport = 2\n"));
	e = parse_err("listen = 127.0.0.1:1\nlisten = 127.0.0.1:1\n");
	CHECK(has(e, "t.conf:2: listen: 127.0.0.1:1 listed twice"));
	free(e);
	e = parse_err("[template x]\nimage = a\n[template x]\nimage = b\n");
	CHECK(has(e, "t.conf:3: [template x]: section defined twice"));
	free(e);
	e = parse_err("[route r]\nhost = a.b\nupstream = 1.2.3.4:5\n"
	    "[route r]\nhost = c.d\nupstream = 1.2.3.4:5\n");
	CHECK(has(e, "t.conf:4: [route r]: section defined twice"));
	free(e);
	e = parse_err("[api_key a]\nsecret = 0123456789abcdef0123456789abcdef\n"
	    "[api_key a]\nsecret = 1123456789abcdef0123456789abcdef\n");
	CHECK(has(e, "t.conf:3: [api_key a]: section defined twice"));
	free(e);
	e = parse_err("[api_key a]\nsecret = 0123456789abcdef0123456789abcdef\n"
	    "[api_key b]\nsecret = 0123456789abcdef0123456789abcdef\n");
	CHECK(has(e, "t.conf:4: secret: [api_key b] has the same secret as "
	    "[api_key a]"));
	/* A secret is never echoed into an error. */
	CHECK(strstr(e, "0123456789abcdef") == NULL);
	free(e);
}

/* Global values: addresses, paths, names, URLs, ranges. */
static void
test_global_values(void)
{
	struct config	*c;
	char		*e, *text, *cert, *key, *cert2, *key2;

	e = parse_err("listen = localhost:8080\n");
	CHECK(has(e, "t.conf:1: listen: bad address \"localhost:8080\": not "
	    "a literal IP address"));
	free(e);
	e = parse_err("listen = 127.0.0.1\n");
	CHECK(has(e, "t.conf:1: listen: bad address"));
	free(e);
	e = parse_err("listen = 127.0.0.1:0\n");
	CHECK(has(e, "t.conf:1: listen: bad address \"127.0.0.1:0\": port"));
	free(e);
	e = parse_err("listen = 127.0.0.1:65536\n");
	CHECK(has(e, "t.conf:1: listen: bad address"));
	free(e);
	e = parse_err("tls_listen = ::1:443\n");
	CHECK(has(e, "t.conf:1: tls_listen: bad address"));
	free(e);

	/* A tls_listen alone: no default plain listener is added. */
	e = parse_err("tls_listen = 0.0.0.0:443\n");
	CHECK(has(e, "t.conf:1: tls_cert: required with tls_listen"));
	CHECK(has(e, "t.conf:1: tls_key: required with tls_listen"));
	free(e);
	e = parse_err("tls_listen = 0.0.0.0:443\n"
	    "tls_cert = /nonexistent/cert.pem\n"
	    "tls_key = /nonexistent/key.pem\n");
	CHECK(has(e, "t.conf:2: tls_cert: /nonexistent/cert.pem: No such "
	    "file"));
	CHECK(has(e, "t.conf:3: tls_key: /nonexistent/key.pem: No such file"));
	free(e);
	e = parse_err("tls_cert = /\n");
	CHECK(has(e, "t.conf:1: tls_cert: /: not a regular file"));
	free(e);

	/* tls_cert/tls_key pairs: the n-th of each pair up, unpaired is wrong. */
	cert = write_file("c1.pem", "c\n", 2, 0644);
	key = write_file("k1.pem", "k\n", 2, 0600);
	cert2 = write_file("c2.pem", "c\n", 2, 0644);
	key2 = write_file("k2.pem", "k\n", 2, 0600);
	xasprintf(&text, "tls_listen = 127.0.0.1:8443\ntls_cert = %s\n"
	    "tls_cert = %s\ntls_key = %s\ntls_key = %s\n"
	    "redirect_https = yes\n", cert, cert2, key, key2);
	c = parse_ok(text);
	free(text);
	if (c != NULL) {
		CHECK(c->ntls == 2);
		CHECK_STR(c->tls[0].cert, cert);
		CHECK_STR(c->tls[0].key, key);
		CHECK_STR(c->tls[1].cert, cert2);
		CHECK_STR(c->tls[1].key, key2);
		CHECK(c->tls[1].cert_line == 3 && c->tls[1].key_line == 5);
		CHECK(c->tls_cert == c->tls[0].cert);
		CHECK(c->redirect_https == 1);
		config_free(c);
	}
	xasprintf(&text, "tls_listen = 127.0.0.1:8443\ntls_cert = %s\n"
	    "tls_key = %s\ntls_cert = %s\n", cert, key, cert2);
	e = parse_err(text);
	free(text);
	CHECK(has(e, "t.conf:4: tls_cert: "));
	CHECK(has(e, "has no tls_key to pair with (certificate 2, 1 keys)"));
	free(e);
	xasprintf(&text, "tls_listen = 127.0.0.1:8443\ntls_cert = %s\n"
	    "tls_key = %s\ntls_key = %s\n", cert, key, key2);
	e = parse_err(text);
	free(text);
	CHECK(has(e, "t.conf:4: tls_key: "));
	CHECK(has(e, "has no tls_cert to pair with (key 2, 1 certificates)"));
	free(e);
	xasprintf(&text, "tls_listen = 127.0.0.1:8443\ntls_cert = %s\n"
	    "tls_key = %s\ntls_cert = %s\ntls_key = %s\n", cert, key, cert,
	    key2);
	e = parse_err(text);
	free(text);
	CHECK(has(e, "t.conf:4: tls_cert: "));
	CHECK(has(e, "listed twice (first on line 2)"));
	free(e);
	e = parse_err("redirect_https = true\n");
	CHECK(has(e, "t.conf:1: redirect_https: needs a tls_listen"));
	free(e);
	e = parse_err("redirect_https = maybe\n");
	CHECK(has(e, "t.conf:1: redirect_https: \"maybe\" is not true or "
	    "false"));
	free(e);
	free(cert);
	free(key);
	free(cert2);
	free(key2);

	e = parse_err("data_dir = var/lib\n");
	CHECK(has(e, "t.conf:1: data_dir: must be an absolute path"));
	free(e);
	e = parse_err("docker_socket = docker.sock\n");
	CHECK(has(e, "t.conf:1: docker_socket: must be an absolute path"));
	free(e);
	e = parse_err("agentd_path = agentd\n");
	CHECK(has(e, "t.conf:1: agentd_path: must be an absolute path"));
	free(e);
	e = parse_err("network = has space\n");
	CHECK(has(e, "t.conf:1: network: \"has space\" is not a valid name"));
	free(e);
	e = parse_err("instance = a/b\n");
	CHECK(has(e, "t.conf:1: instance:"));
	free(e);

	e = parse_err("preview_domain = -bad.example\n");
	CHECK(has(e, "t.conf:1: preview_domain: \"-bad.example\" is not a "
	    "valid DNS name"));
	free(e);
	free(parse_err("preview_domain = a..b\n"));
	free(parse_err("preview_domain = a.b.\n"));
	free(parse_err("preview_domain = under_score.example\n"));
	free(parse_err("preview_domain = *.example.com\n"));
	free(parse_err("preview_domain = "
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    ".com\n"));
	c = parse_ok("preview_domain = "
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    ".com\n");
	config_free(c);
	c = parse_ok("preview_domain = localhost\n");
	config_free(c);

	e = parse_err("public_url = ftp://x\n");
	CHECK(has(e, "t.conf:1: public_url: must start with http:// or "
	    "https://"));
	free(e);
	free(parse_err("public_url = http://\n"));
	free(parse_err("public_url = localhost:8080\n"));
	c = parse_ok("public_url = http://example.com:8080/base//\n");
	if (c != NULL)
		CHECK_STR(c->public_url, "http://example.com:8080/base");
	config_free(c);

	e = parse_err("max_sandboxes = 0\n");
	CHECK(has(e, "t.conf:1: max_sandboxes: \"0\" is too small"));
	free(e);
	e = parse_err("max_sandboxes = 1000001\n");
	CHECK(has(e, "t.conf:1: max_sandboxes: \"1000001\" is too large"));
	free(e);
	e = parse_err("max_sandboxes = 12abc\n");
	CHECK(has(e, "t.conf:1: max_sandboxes: \"12abc\" is invalid"));
	free(e);
	free(parse_err("max_running = 0\n"));
	free(parse_err("max_running = 100001\n"));
	free(parse_err("max_running = -1\n"));
	free(parse_err("max_running = 99999999999999999999999\n"));

	e = parse_err("idle_timeout = 5x\n");
	CHECK(has(e, "t.conf:1: idle_timeout: bad duration \"5x\""));
	free(e);
	e = parse_err("wake_timeout = 0\n");
	CHECK(has(e, "t.conf:1: wake_timeout: must be more than 0"));
	free(e);
	free(parse_err("shutdown_grace = 31d\n"));
	e = parse_err("max_file_size = 0\n");
	CHECK(has(e, "t.conf:1: max_file_size:"));
	free(e);
	e = parse_err("max_file_size = 10q\n");
	CHECK(has(e, "t.conf:1: max_file_size: bad size \"10q\""));
	free(e);

	e = parse_err("log_level = verbose\n");
	CHECK(has(e, "t.conf:1: log_level: \"verbose\" is not debug, info or "
	    "warn"));
	free(e);
	c = parse_ok("log_level = warn\n");
	if (c != NULL)
		CHECK(c->log_level == LOG_LEVEL_WARN);
	config_free(c);

	/* access_log: off (NULL, the default), stderr, or an absolute path. */
	c = parse_ok("");
	if (c != NULL)
		CHECK(c->access_log == NULL);
	config_free(c);
	c = parse_ok("access_log = stderr\n");
	if (c != NULL)
		CHECK(c->access_log != NULL &&
		    strcmp(c->access_log, "stderr") == 0);
	config_free(c);
	c = parse_ok("access_log = /var/log/sandboxd/access.log\n");
	if (c != NULL)
		CHECK(c->access_log != NULL &&
		    strcmp(c->access_log, "/var/log/sandboxd/access.log") == 0);
	config_free(c);
	c = parse_ok("access_log = off\n");
	if (c != NULL)
		CHECK(c->access_log == NULL);
	config_free(c);
	e = parse_err("access_log = access.log\n");
	CHECK(has(e, "t.conf:1: access_log: \"access.log\" is not off, "
	    "stderr or an absolute path"));
	free(e);
	e = parse_err("access_log = stderr\naccess_log = off\n");
	CHECK(has(e, "access_log"));
	free(e);
}

/* pause_timeout: a duration, 0 by default, below a non-zero idle_timeout. */
static void
test_pause_timeout(void)
{
	struct config	*c;
	char		*e;

	c = parse_ok("pause_timeout = 5m\n");
	if (c != NULL) {
		CHECK(c->pause_timeout_ms == 5 * 60 * 1000);
		CHECK(c->idle_timeout_ms == 15 * 60 * 1000);
	}
	config_free(c);
	c = parse_ok("idle_timeout = 1h\npause_timeout = 59m\n");
	if (c != NULL)
		CHECK(c->pause_timeout_ms == 59 * 60 * 1000);
	config_free(c);
	c = parse_ok("pause_timeout = 250ms\nidle_timeout = 1s\n");
	if (c != NULL)
		CHECK(c->pause_timeout_ms == 250);
	config_free(c);
	/* 0 on either side: nothing to order. */
	config_free(parse_ok("pause_timeout = 0\nidle_timeout = 1s\n"));
	config_free(parse_ok("idle_timeout = 0\npause_timeout = 2h\n"));

	/* Against the default idle_timeout, and against one set later. */
	e = parse_err("pause_timeout = 15m\n");
	CHECK(has(e, "t.conf:1: pause_timeout: 15m must be less than "
	    "idle_timeout (15m)\n"));
	CHECK(count_lines(e) == 1);
	free(e);
	e = parse_err("max_running = 3\npause_timeout = 90s\n"
	    "idle_timeout = 1m\n");
	CHECK(has(e, "t.conf:2: pause_timeout: 90s must be less than "
	    "idle_timeout (1m)\n"));
	free(e);
	e = parse_err("idle_timeout = 1000ms\npause_timeout = 1s\n");
	CHECK(has(e, "t.conf:2: pause_timeout: 1s must be less than "
	    "idle_timeout (1s)\n"));
	free(e);

	e = parse_err("pause_timeout = 5x\n");
	CHECK(has(e, "t.conf:1: pause_timeout: bad duration \"5x\""));
	free(e);
	e = parse_err("pause_timeout = -1\n");
	CHECK(has(e, "t.conf:1: pause_timeout: bad duration \"-1\""));
	free(e);
	e = parse_err("pause_timeout = 1m\npause_timeout = 2m\n");
	CHECK(has(e, "t.conf:2: pause_timeout: set twice (first on line 1)"));
	free(e);
	e = parse_err("[template default]\nimage = x\npause_timeout = 1m\n");
	CHECK(has(e, "t.conf:3: pause_timeout: global key in [template "
	    "default] section"));
	free(e);
}

/* min_free_memory: a size or a whole percentage 0-90; 10% by default. */
static void
test_min_free_memory(void)
{
	static const struct {
		const char	*value;
		uint64_t	 bytes;
		int		 pct;
	} good[] = {
		{ "512m", 512ULL << 20, 0 },
		{ "2g", 2ULL << 30, 0 },
		{ "2G", 2ULL << 30, 0 },
		{ "65536k", 64ULL << 20, 0 },
		{ "1048576", 1ULL << 20, 0 },
		{ "10%", 0, 10 },
		{ "1%", 0, 1 },
		{ "90%", 0, 90 },
		{ "0%", 0, 0 },		/* no floor */
		{ "0", 0, 0 },		/* no floor */
		{ "\"25%\"", 0, 25 },
	};
	static const char *bad[] = {
		"-1", "10 %", "abc", "%", "10%%", "%10", "1.5g", "10 m",
		"5%m", "10p", "-5%", "+5%", "0x10", "99999999999999999999999",
	};
	struct config	*c;
	char		*e, *text, *want;
	size_t		 i;

	for (i = 0; i < nitems(good); i++) {
		xasprintf(&text, "min_free_memory = %s\n", good[i].value);
		c = parse_ok(text);
		if (c != NULL) {
			CHECK(c->min_free_memory_bytes == good[i].bytes);
			CHECK(c->min_free_memory_pct == good[i].pct);
			if (c->min_free_memory_bytes != good[i].bytes ||
			    c->min_free_memory_pct != good[i].pct)
				fprintf(stderr, "  for %s\n", good[i].value);
		}
		config_free(c);
		free(text);
	}

	for (i = 0; i < nitems(bad); i++) {
		xasprintf(&text, "max_running = 3\nmin_free_memory = %s\n",
		    bad[i]);
		xasprintf(&want, "t.conf:2: min_free_memory: bad value \"%s\" "
		    "(a size with an optional k, m, g or t, or a percentage of "
		    "host memory such as 10%%)\n", bad[i]);
		e = parse_err(text);
		CHECK(has(e, want));
		free(e);
		free(want);
		free(text);
	}

	e = parse_err("min_free_memory = 110%\n");
	CHECK(has(e, "t.conf:1: min_free_memory: 110% is out of range (0% to "
	    "90% of host memory)\n"));
	free(e);
	e = parse_err("min_free_memory = 91%\n");
	CHECK(has(e, "t.conf:1: min_free_memory: 91% is out of range"));
	free(e);
	e = parse_err("min_free_memory = 99999999999999999999999999999999%\n");
	CHECK(has(e, "t.conf:1: min_free_memory: "
	    "99999999999999999999999999999999% is out of range"));
	free(e);
	e = parse_err("min_free_memory = 1g\nmin_free_memory = 5%\n");
	CHECK(has(e, "t.conf:2: min_free_memory: set twice (first on line 1)"));
	free(e);
	e = parse_err("min_free_memory =\n");
	CHECK(has(e, "t.conf:1: min_free_memory: missing value"));
	free(e);
}

/* default_template and the built-in template. */
static void
test_default_template(void)
{
	struct config	*c;
	char		*e;

	e = parse_err("default_template = py\n");
	CHECK(has(e, "t.conf:1: default_template: no [template py] is "
	    "defined"));
	free(e);
	e = parse_err("[template py]\nimage = python\n");
	CHECK(has(e, "t.conf:0: default_template: no [template default] is "
	    "defined"));
	free(e);
	c = parse_ok("default_template = py\n[template py]\nimage = python\n");
	if (c != NULL) {
		CHECK(c->ntemplates == 1);
		CHECK(config_template(c, "py") != NULL);
	}
	config_free(c);
}

/* Template and route values. */
#define TPL "[template default]\nimage = x\n"

static void
test_ports(void)
{
	struct config	*c;
	char		*e;

	/* Default: 1024-65535, and the template's own port always. */
	c = parse_ok(TPL "port = 80\n");
	if (c != NULL) {
		CHECK(c->templates[0].nports == 0);
		CHECK(config_port_allowed(&c->templates[0], 80));
		CHECK(!config_port_allowed(&c->templates[0], 81));
		CHECK(!config_port_allowed(&c->templates[0], 1023));
		CHECK(config_port_allowed(&c->templates[0], 1024));
		CHECK(config_port_allowed(&c->templates[0], 65535));
	}
	config_free(c);
	CHECK(config_port_allowed(NULL, 5173) && !config_port_allowed(NULL, 22));
	c = parse_ok(TPL "ports = 3000, 5173,8000-8100 ,\t9000-9000\n");
	if (c != NULL) {
		CHECK(c->templates[0].nports == 4);
		CHECK(config_port_allowed(&c->templates[0], 3000));
		CHECK(config_port_allowed(&c->templates[0], 5173));
		CHECK(config_port_allowed(&c->templates[0], 8000));
		CHECK(config_port_allowed(&c->templates[0], 8050));
		CHECK(config_port_allowed(&c->templates[0], 8100));
		CHECK(config_port_allowed(&c->templates[0], 9000));
		CHECK(!config_port_allowed(&c->templates[0], 8101));
		CHECK(!config_port_allowed(&c->templates[0], 5174));
		CHECK(!config_port_allowed(&c->templates[0], 1024));
	}
	config_free(c);
	c = parse_ok(TPL "port = 4000\nports = 22\n");
	if (c != NULL) {
		CHECK(config_port_allowed(&c->templates[0], 22));
		CHECK(config_port_allowed(&c->templates[0], 4000));
		CHECK(!config_port_allowed(&c->templates[0], 3000));
	}
	config_free(c);
	e = parse_err(TPL "ports = 3000, x\n");
	CHECK(has(e, "t.conf:3: ports: bad port \"x\" in the list"));
	free(e);
	e = parse_err(TPL "ports = 0\n");
	CHECK(has(e, "t.conf:3: ports: bad port \"0\""));
	free(e);
	e = parse_err(TPL "ports = 65536\n");
	CHECK(has(e, "t.conf:3: ports: bad port"));
	free(e);
	e = parse_err(TPL "ports = 9000-8000\n");
	CHECK(has(e, "t.conf:3: ports: range 9000-8000 is backwards"));
	free(e);
	e = parse_err(TPL "ports = 3000,,4000\n");
	CHECK(has(e, "t.conf:3: ports: bad port list"));
	free(e);
	e = parse_err(TPL "ports =\n");
	CHECK(e != NULL);
	free(e);
	free(parse_err(TPL "ports = 1-2-3\n"));
	free(parse_err(TPL "ports = -5\n"));
	free(parse_err(TPL "ports = +5\n"));
	free(parse_err(TPL "ports = 3000 4000\n"));
	e = parse_err(TPL "ports = 3000\nports = 4000\n");
	CHECK(has(e, "t.conf:4: ports: set twice"));
	free(e);
	e = parse_err("ports = 3000\n");
	CHECK(has(e, "t.conf:1: ports:"));
	free(e);
}

static void
test_preview_secret_file(void)
{
	struct config	*c;
	char		*e;

	c = parse_ok("data_dir = /srv/sbx/\n");
	if (c != NULL)
		CHECK_STR(c->preview_secret_file, "/srv/sbx/preview-secret");
	config_free(c);
	c = parse_ok("preview_secret_file = /etc/sandboxd/preview.key\n");
	if (c != NULL)
		CHECK_STR(c->preview_secret_file, "/etc/sandboxd/preview.key");
	config_free(c);
	e = parse_err("preview_secret_file = key\n");
	CHECK(has(e, "t.conf:1: preview_secret_file: must be an absolute "
	    "path"));
	free(e);

	/* A secret that exists already is checked as the daemon will. */
	{
		char	dir[] = "/tmp/sbx-cfgsecret.XXXXXX", path[128];
		char	text[256];
		int	fd;

		if (mkdtemp(dir) == NULL) {
			CHECK(0);
			return;
		}
		snprintf(path, sizeof path, "%s/s", dir);
		snprintf(text, sizeof text, "preview_secret_file = %s\n", path);
		config_free(parse_ok(text));	/* not made yet: fine */
		fd = open(path, O_WRONLY | O_CREAT, 0600);
		CHECK(fd != -1 && write(fd, "0123456789abcdef0123456789abcdef",
		    32) == 32);
		close(fd);
		config_free(parse_ok(text));
		chmod(path, 0604);
		e = parse_err(text);
		CHECK(has(e, "t.conf:1: preview_secret_file: ") &&
		    has(e, "chmod 600 it"));
		free(e);
		chmod(path, 0600);
		CHECK(truncate(path, 31) == 0);
		e = parse_err(text);
		CHECK(has(e, "holds 31 bytes, not 32"));
		free(e);
		unlink(path);
		CHECK(mkdir(path, 0700) == 0);
		e = parse_err(text);
		CHECK(has(e, "not a regular file"));
		free(e);
		rmdir(path);
		rmdir(dir);
	}
}

static void
test_section_values(void)
{
	struct config	*c;
	char		*e;

	e = parse_err(TPL "port = 0\n");
	CHECK(has(e, "t.conf:3: port: \"0\" is too small"));
	free(e);
	free(parse_err(TPL "port = 65536\n"));
	e = parse_err(TPL "memory = 15m\n");
	CHECK(has(e, "t.conf:3: memory: 15m is out of range (16m to 1t)"));
	free(e);
	free(parse_err(TPL "memory = 2t\n"));
	config_free(parse_ok(TPL "memory = 16m\n"));
	config_free(parse_ok(TPL "memory = 1t\n"));
	config_free(parse_ok(TPL "memory = 1024G\n"));
	e = parse_err(TPL "cpus = 0.001\n");
	CHECK(has(e, "t.conf:3: cpus: \"0.001\" is not a number from 0.01 to "
	    "1024"));
	free(e);
	free(parse_err(TPL "cpus = 1025\n"));
	free(parse_err(TPL "cpus = nan\n"));
	free(parse_err(TPL "cpus = inf\n"));
	free(parse_err(TPL "cpus = -1\n"));
	free(parse_err(TPL "cpus = 1.5x\n"));
	free(parse_err(TPL "cpus = 0x10\n"));
	free(parse_err(TPL "cpus = 1e3\n"));
	free(parse_err(TPL "cpus = .\n"));
	c = parse_ok(TPL "cpus = 0.01\n");
	if (c != NULL)
		CHECK(c->templates[0].cpus == 0.01);
	config_free(c);
	config_free(parse_ok(TPL "cpus = 1024\n"));
	e = parse_err(TPL "pids_limit = 15\n");
	CHECK(has(e, "t.conf:3: pids_limit: \"15\" is too small"));
	free(e);
	free(parse_err(TPL "pids_limit = 4194305\n"));
	config_free(parse_ok(TPL "pids_limit = 4194304\n"));
	/* disk: a size; 0 is "no ceiling". */
	c = parse_ok(TPL "disk = 16m\n");
	if (c != NULL)
		CHECK(c->templates[0].disk == 16ULL * 1024 * 1024);
	config_free(c);
	c = parse_ok(TPL "disk = 0\n");
	if (c != NULL)
		CHECK(c->templates[0].disk == 0);
	config_free(c);
	e = parse_err(TPL "disk = ten\n");
	CHECK(has(e, "t.conf:3: disk: bad size"));
	free(e);
	free(parse_err(TPL "disk = 1025t\n"));
	c = parse_ok("disk_check_interval = 0\n");
	if (c != NULL)
		CHECK(c->disk_check_interval_ms == 0);
	config_free(c);
	c = parse_ok("disk_check_interval = 2s\n");
	if (c != NULL)
		CHECK(c->disk_check_interval_ms == 2000);
	config_free(c);
	free(parse_err("disk_check_interval = 5x\n"));
	e = parse_err(TPL "seed_dir = relative/dir\n");
	CHECK(has(e, "t.conf:3: seed_dir: must be an absolute path"));
	free(e);
	e = parse_err("[template default]\nimage = \"\"\n");
	CHECK(has(e, "t.conf:2: image: must be a Docker image reference"));
	free(e);
	free(parse_err("[template default]\nimage = \"a b\"\n"));

#define ROUTE "[route r]\n"
	e = parse_err(ROUTE "host = a.*.com\nupstream = 1.2.3.4:5\n");
	CHECK(has(e, "t.conf:2: host: \"a.*.com\" is not a valid DNS name"));
	free(e);
	free(parse_err(ROUTE "host = *.\nupstream = 1.2.3.4:5\n"));
	free(parse_err(ROUTE "host = *\nupstream = 1.2.3.4:5\n"));
	e = parse_err(ROUTE "host = a.com\nupstream = app:3000\n");
	CHECK(has(e, "t.conf:3: upstream: bad upstream \"app:3000\""));
	free(e);
	e = parse_err(ROUTE "host = a.com\nupstream = unix:relative.sock\n");
	CHECK(has(e, "t.conf:3: upstream: unix: needs an absolute socket "
	    "path"));
	free(e);
	e = parse_err(ROUTE "host = a.com\nupstream = unix:/"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
	CHECK(has(e, "t.conf:3: upstream: unix:"));
	free(e);
	c = parse_ok(ROUTE "host = *.Example.com\nupstream = [::1]:80\n");
	if (c != NULL)
		CHECK_STR(c->routes[0].host, "*.example.com");
	config_free(c);
#undef ROUTE

	/* admin spellings. */
#define KEY "[api_key k]\nsecret = 0123456789abcdef0123456789abcdef\n"
	c = parse_ok(KEY "admin = true\n");
	if (c != NULL)
		CHECK(c->api_keys[0].admin == 1);
	config_free(c);
	c = parse_ok(KEY "admin = 1\n");
	if (c != NULL)
		CHECK(c->api_keys[0].admin == 1);
	config_free(c);
	c = parse_ok(KEY "admin = no\n");
	if (c != NULL)
		CHECK(c->api_keys[0].admin == 0);
	config_free(c);
	c = parse_ok(KEY "admin = 0\n");
	if (c != NULL)
		CHECK(c->api_keys[0].admin == 0);
	config_free(c);
	e = parse_err(KEY "admin = TRUE\n");
	CHECK(has(e, "t.conf:3: admin: \"TRUE\" is not true or false"));
	free(e);

	/* A tenant's ceilings share names with global keys, not values. */
	c = parse_ok("max_running = 7\nmax_sandboxes = 70\n" KEY
	    "max_sandboxes = 5\nmax_running = 2\nmax_memory_mb = 4096\n"
	    "max_cpus = 1.5\n");
	if (c != NULL) {
		CHECK(c->max_running == 7 && c->max_sandboxes == 70);
		CHECK(c->api_keys[0].max_sandboxes == 5);
		CHECK(c->api_keys[0].max_running == 2);
		CHECK(c->api_keys[0].max_memory_mb == 4096);
		CHECK(c->api_keys[0].max_cpus == 1.5);
	}
	config_free(c);
	c = parse_ok(KEY);
	if (c != NULL)
		CHECK(c->api_keys[0].max_running == 0 &&
		    c->api_keys[0].max_memory_mb == 0 &&
		    c->api_keys[0].max_cpus == 0);
	config_free(c);
	e = parse_err(KEY "max_running = 0\nmax_memory_mb = 8\n"
	    "max_cpus = -1\nmax_running = 3\n");
	CHECK(has(e, "t.conf:3: max_running: \"0\" is too small"));
	CHECK(has(e, "t.conf:4: max_memory_mb: \"8\" is too small"));
	CHECK(has(e, "t.conf:5: max_cpus: \"-1\" is not a number"));
	CHECK(has(e, "t.conf:6: max_running: set twice (first on line 3)"));
	free(e);
	e = parse_err("[template t]\nimage = x\nmax_cpus = 2\n");
	CHECK(has(e, "t.conf:3: max_cpus: not a key of [template] sections "
	    "(it belongs in [api_key])"));
	free(e);
#undef KEY
	e = parse_err("[api_key k]\nsecret = 0123456789abcdef0123456789abcde\n");
	CHECK(has(e, "t.conf:2: secret: too short (at least 32 characters)"));
	free(e);
}

/* Every problem is reported, sorted by line, one line each. */
static void
test_collects_all(void)
{
	char	*e;

	e = parse_err(
	    "listen = nope\n"				/* 1 */
	    "bogus = 1\n"				/* 2 */
	    "idle_timeout = -5m\n"			/* 3 */
	    "[template t]\n"				/* 4: no image */
	    "port = 0\n"				/* 5 */
	    "[route r]\n"				/* 6 */
	    "host = ok.example\n"
	    "upstream = nowhere\n");			/* 8 */
	CHECK(has(e, "t.conf:1: listen:"));
	CHECK(has(e, "t.conf:2: bogus: unknown key"));
	CHECK(has(e, "t.conf:3: idle_timeout: bad duration"));
	CHECK(has(e, "t.conf:4: image: missing"));
	CHECK(has(e, "t.conf:5: port:"));
	CHECK(has(e, "t.conf:8: upstream:"));
	/* Also: no usable listen, default_template "default" missing. */
	CHECK(count_lines(e) == 8);
	CHECK(strncmp(e, "t.conf:0: default_template", 26) == 0);
	CHECK(strstr(e, "t.conf:2:") > strstr(e, "t.conf:1:"));
	CHECK(strstr(e, "t.conf:8:") > strstr(e, "t.conf:5:"));
	free(e);
}

/* config_parse_duration edge cases. */
static void
test_durations(void)
{
	CHECK(config_parse_duration("0") == 0);
	CHECK(config_parse_duration("0ms") == 0);
	CHECK(config_parse_duration("250ms") == 250);
	CHECK(config_parse_duration("60s") == 60000);
	CHECK(config_parse_duration("60") == 60000);
	CHECK(config_parse_duration("15m") == 900000);
	CHECK(config_parse_duration("2h") == 7200000);
	CHECK(config_parse_duration("719h") == 719LL * 3600000);
	CHECK(config_parse_duration("720h") == -1);
	CHECK(config_parse_duration("2591999999ms") == 2591999999LL);
	CHECK(config_parse_duration("2592000000ms") == -1);
	CHECK(config_parse_duration("99999999999999999999999s") == -1);
	CHECK(config_parse_duration("") == -1);
	CHECK(config_parse_duration(NULL) == -1);
	CHECK(config_parse_duration("-1s") == -1);
	CHECK(config_parse_duration("+1s") == -1);
	CHECK(config_parse_duration(" 1s") == -1);
	CHECK(config_parse_duration("1s ") == -1);
	CHECK(config_parse_duration("1.5s") == -1);
	CHECK(config_parse_duration("s") == -1);
	CHECK(config_parse_duration("1S") == -1);
	CHECK(config_parse_duration("1d") == -1);
	CHECK(config_parse_duration("1sec") == -1);
	CHECK(config_parse_duration("1ms5") == -1);
	CHECK(config_parse_duration("0x10") == -1);
}

/* config_parse_size edge cases. */
static void
test_sizes(void)
{
	uint64_t	v;

	CHECK(config_parse_size("0", &v) == 0 && v == 0);
	CHECK(config_parse_size("1024", &v) == 0 && v == 1024);
	CHECK(config_parse_size("64k", &v) == 0 && v == 65536);
	CHECK(config_parse_size("64K", &v) == 0 && v == 65536);
	CHECK(config_parse_size("512m", &v) == 0 && v == 512ULL << 20);
	CHECK(config_parse_size("1g", &v) == 0 && v == 1ULL << 30);
	CHECK(config_parse_size("1G", &v) == 0 && v == 1ULL << 30);
	CHECK(config_parse_size("1t", &v) == 0 && v == 1ULL << 40);
	CHECK(config_parse_size("18446744073709551615", &v) == 0 &&
	    v == UINT64_MAX);
	CHECK(config_parse_size("18446744073709551616", &v) == -1);
	CHECK(config_parse_size("99999999999999999999999", &v) == -1);
	CHECK(config_parse_size("17179869184g", &v) == -1);
	CHECK(config_parse_size("16777215t", &v) == 0);
	CHECK(config_parse_size("16777216t", &v) == -1);
	CHECK(config_parse_size("", &v) == -1);
	CHECK(config_parse_size(NULL, &v) == -1);
	CHECK(config_parse_size("g", &v) == -1);
	CHECK(config_parse_size("-1", &v) == -1);
	CHECK(config_parse_size("1gb", &v) == -1);
	CHECK(config_parse_size("1.5g", &v) == -1);
	CHECK(config_parse_size(" 1", &v) == -1);
	CHECK(config_parse_size("1 ", &v) == -1);
	CHECK(config_parse_size("1x", &v) == -1);
}

/* config_parse_addr. */
static void
test_addrs(void)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t		 len;
	char			 buf[INET6_ADDRSTRLEN];

	CHECK(config_parse_addr("127.0.0.1:8080", &ss, &len) == 0);
	CHECK(sin->sin_family == AF_INET && ntohs(sin->sin_port) == 8080);
	CHECK(len == sizeof *sin);
	CHECK(config_parse_addr("0.0.0.0:443", &ss, &len) == 0);
	CHECK(sin->sin_addr.s_addr == htonl(INADDR_ANY));
	CHECK(config_parse_addr("[::]:80", &ss, &len) == 0);
	CHECK(sin6->sin6_family == AF_INET6 && ntohs(sin6->sin6_port) == 80);
	CHECK(len == sizeof *sin6);
	CHECK(config_parse_addr("[::1]:8080", &ss, &len) == 0);
	CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	CHECK(config_parse_addr("[fe80::1:2]:65535", &ss, &len) == 0);
	inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
	CHECK_STR(buf, "fe80::1:2");
	CHECK(config_parse_addr("localhost:8080", &ss, &len) == -1);
	CHECK(config_parse_addr("127.0.0.1", &ss, &len) == -1);
	CHECK(config_parse_addr("127.0.0.1:", &ss, &len) == -1);
	CHECK(config_parse_addr(":80", &ss, &len) == -1);
	CHECK(config_parse_addr("127.0.0.1:0", &ss, &len) == -1);
	CHECK(config_parse_addr("127.0.0.1:65536", &ss, &len) == -1);
	CHECK(config_parse_addr("127.0.0.1:-1", &ss, &len) == -1);
	CHECK(config_parse_addr("127.0.0.1:80x", &ss, &len) == -1);
	CHECK(config_parse_addr("256.0.0.1:80", &ss, &len) == -1);
	CHECK(config_parse_addr("::1:80", &ss, &len) == -1);
	CHECK(config_parse_addr("[::1]80", &ss, &len) == -1);
	CHECK(config_parse_addr("[::1:80", &ss, &len) == -1);
	CHECK(config_parse_addr("[]:80", &ss, &len) == -1);
	CHECK(config_parse_addr("[1.2.3.4]:80", &ss, &len) == -1);
	CHECK(config_parse_addr("", &ss, &len) == -1);
	CHECK(config_parse_addr(NULL, &ss, &len) == -1);
}

/* instance is derived from data_dir, so different dirs differ. */
static void
test_instance(void)
{
	struct config	*a, *b, *c;

	a = parse_ok("data_dir = /var/lib/one\n");
	b = parse_ok("data_dir = /var/lib/two\n");
	c = parse_ok("data_dir = /var/lib/one/\n");
	if (a != NULL && b != NULL && c != NULL) {
		CHECK(strcmp(a->instance, b->instance) != 0);
		CHECK_STR(a->instance, c->instance);
		CHECK(strncmp(b->instance, "sbx-", 4) == 0);
		CHECK(strlen(b->instance) == 16);
	}
	config_free(a);
	config_free(b);
	config_free(c);
}

/* Bytes that are not a config give errors, never a crash. */
static void
test_garbage(void)
{
	struct config	*c;
	char		*e, *path, *big, rnd[4096];
	size_t		 i;
	int		 round;

	path = write_file("nul.conf", "network = a\0b\nmax_running = 0\n",
	    30, 0644);
	c = config_load(path, &e);
	CHECK(c == NULL);
	CHECK(has(e, ":1: line: contains a NUL byte"));
	CHECK(has(e, ":2: max_running:"));
	CHECK(strncmp(e, path, strlen(path)) == 0);
	free(e);
	free(path);

	e = parse_err("network = caf\xc3\n");
	CHECK(has(e, "t.conf:1: line: invalid UTF-8"));
	free(e);
	free(parse_err("network = \xc0\xaf\n"));	/* overlong */
	free(parse_err("network = \xed\xa0\x80\n"));	/* surrogate */
	free(parse_err("network = \xf4\x90\x80\x80\n"));	/* > U+10FFFF */
	free(parse_err("network = \xff\n"));
	/* Valid UTF-8 passes the line check; the name check refuses it. */
	e = parse_err("network = caf\xc3\xa9\n");
	CHECK(has(e, "t.conf:1: network: \"caf\xc3\xa9\" is not a valid"));
	free(e);
	c = parse_ok("# comment with UTF-8: caf\xc3\xa9 \xf0\x9f\x90\xb3\n");
	config_free(c);

	/* A line over 8 KiB; the next line is still read. */
	big = xmalloc(9000 + 64);
	memcpy(big, "network = ", 10);
	memset(big + 10, 'a', 9000);
	strcpy(big + 9010, "\nmax_running = 0\n");
	e = parse_err(big);
	CHECK(has(e, "t.conf:1: line: longer than 8192 bytes"));
	CHECK(has(e, "t.conf:2: max_running:"));
	free(e);
	/* Exactly 8192 bytes is allowed (and then fails the name check). */
	memset(big, 'a', 8192);
	big[0] = '#';
	big[8192] = '\0';
	config_free(parse_ok(big));
	free(big);

	/* Random bytes and random printable soup. */
	srandom(42);
	for (round = 0; round < 200; round++) {
		for (i = 0; i < sizeof rnd - 1; i++) {
			rnd[i] = (char)(random() & 0xff);
			if (round % 2)
				rnd[i] = " =[]#\"\\\nabcdefgilmnoprstu_0123:/."
				    [random() % 34];
			if (rnd[i] == '\0')
				rnd[i] = '\n';
		}
		rnd[sizeof rnd - 1] = '\0';
		c = config_parse("rnd", rnd, &e);
		CHECK((c == NULL) != (e == NULL));
		config_free(c);
		free(e);
	}

	/* Thousands of errors are capped, not unbounded. */
	big = xmalloc(5000 * 4 + 1);
	for (i = 0; i < 5000; i++)
		memcpy(big + i * 4, "x=1\n", 4);
	big[5000 * 4] = '\0';
	e = parse_err(big);
	CHECK(count_lines(e) == 1000);
	CHECK(has(e, "too many errors"));
	free(e);
	free(big);
}

/* config_load on files: missing, a directory, the example file. */
static void
test_load(void)
{
	struct config	*c;
	char		*e, *path;
	const char	*top;

	c = config_load("/nonexistent/sandboxd.conf", &e);
	CHECK(c == NULL);
	CHECK_STR(e, "/nonexistent/sandboxd.conf:0: cannot open: No such file "
	    "or directory\n");
	free(e);
	c = config_load(tmpdir, &e);
	CHECK(c == NULL);
	CHECK(has(e, ":0: cannot read: not a regular file"));
	free(e);

	path = write_file("ok.conf", "max_running = 3\n", 16, 0644);
	c = config_load(path, &e);
	CHECK(c != NULL && e == NULL);
	if (c != NULL) {
		CHECK(c->max_running == 3);
		CHECK_STR(c->path, path);
	}
	config_free(c);
	free(path);

	path = write_file("bad.conf", "\n\nmax_running = x\n", 18, 0644);
	c = config_load(path, &e);
	CHECK(c == NULL);
	if (e != NULL) {
		char	*want;

		xasprintf(&want, "%s:3: max_running: ", path);
		CHECK(has(e, want));
		free(want);
	}
	free(e);
	free(path);

	/* The shipped example must stay valid. */
	if ((top = getenv("top_srcdir")) == NULL)
		top = "..";
	xasprintf(&path, "%s/sandboxd.conf.example", top);
	c = config_load(path, &e);
	if (c == NULL)
		fprintf(stderr, "%s", e != NULL ? e : "(no errors?)\n");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(c->napi_keys == 3);
		CHECK(c->ntemplates == 2);
		CHECK(c->nroutes == 2);
		CHECK(config_template(c, c->default_template) != NULL);
		CHECK_STR(c->api_keys[1].secret,
		    "quoted secrets may hold # and spaces, 32+ chars");
		CHECK(c->api_keys[1].admin == 1);
		CHECK(c->napi_keys == 3 && c->api_keys[2].secret == NULL &&
		    c->api_keys[2].secret_hash != NULL &&
		    strlen(c->api_keys[2].secret_hash) == 64);
		CHECK(c->routes[1].is_unix == 1);
		CHECK(c->pause_timeout_ms == 0);
		CHECK(c->min_free_memory_pct == 10);
		CHECK(c->min_free_memory_bytes == 0);
	}
	config_free(c);
	free(e);
	free(path);
}

/* secret_hash: sha256: and 64 hex digits, kept lowercase without prefix. */
static void
test_secret_hash(void)
{
	struct config	*c;
	char		*e;

	c = parse_ok("[api_key a]\nsecret_hash = sha256:"
	    "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789\n"
	    "admin = true\n");
	if (c != NULL) {
		CHECK(c->api_keys[0].secret == NULL);
		CHECK_STR(c->api_keys[0].secret_hash, "abcdef0123456789abcdef"
		    "0123456789abcdef0123456789abcdef0123456789");
		CHECK(c->api_keys[0].admin == 1);
	}
	config_free(c);
	e = parse_err("[api_key a]\nsecret_hash = sha256:abc\n");
	CHECK(has(e, "t.conf:2: secret_hash: expected sha256: and 64 hex"));
	free(e);
	e = parse_err("[api_key a]\nsecret_hash = "
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n");
	CHECK(has(e, "t.conf:2: secret_hash:"));
	free(e);
	e = parse_err("[api_key a]\nsecret_hash = sha256:"
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg\n");
	CHECK(has(e, "t.conf:2: secret_hash:"));
	free(e);
	e = parse_err("[api_key a]\nsecret = 0123456789abcdef0123456789abcdef\n"
	    "secret_hash = sha256:"
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n");
	CHECK(has(e, "t.conf:3: secret_hash: [api_key a] has both secret and "
	    "secret_hash"));
	free(e);
	e = parse_err("[api_key a]\nsecret_hash = sha256:"
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
	    "[api_key b]\nsecret_hash = sha256:"
	    "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\n");
	CHECK(has(e, "t.conf:4: secret_hash: [api_key b] has the same "
	    "secret_hash as [api_key a]"));
	free(e);
	e = parse_err("[api_key a]\nadmin = true\n");
	CHECK(has(e, "t.conf:1: secret: missing in [api_key a] (required, or "
	    "secret_hash)"));
	free(e);
}

/* Transport stand-in: records what was sent, then frees like edge does. */
struct fake_conn {
	int	 sent;
	int	 status;
	char	 body[512];
	char	 ctype[64];
};

static void	fake_send(void *, struct http_exchange *);

static void
fake_send(void *arg, struct http_exchange *ex)
{
	struct fake_conn	*fc = arg;
	size_t			 i, n;

	fc->sent++;
	fc->status = ex->status;
	n = evbuffer_get_length(ex->resp_body);
	if (n >= sizeof fc->body)
		n = sizeof fc->body - 1;
	evbuffer_copyout(ex->resp_body, fc->body, n);
	fc->body[n] = '\0';
	for (i = 0; i < ex->nresp_hdrs; i++) {
		if (strcmp(ex->resp_hdr_names[i], "Content-Type") == 0)
			snprintf(fc->ctype, sizeof fc->ctype, "%s",
			    ex->resp_hdr_values[i]);
	}
	http_exchange_free(ex);
}

static const struct http_exchange_transport fake_transport = {
	fake_send, NULL, NULL, NULL, NULL, NULL
};

/* A request exchange with a query and two headers. */
static struct http_exchange *
make_exchange(struct fake_conn *fc, const char *query)
{
	struct http_exchange	*ex;

	ex = http_exchange_new();
	ex->method = xstrdup("GET");
	ex->path = xstrdup("/v1/sandboxes");
	ex->query = query != NULL ? xstrdup(query) : NULL;
	ex->nhdrs = 2;
	ex->hdr_names = xcalloc(2, sizeof *ex->hdr_names);
	ex->hdr_values = xcalloc(2, sizeof *ex->hdr_values);
	ex->hdr_names[0] = xstrdup("authorization");
	ex->hdr_values[0] = xstrdup("Bearer x");
	ex->hdr_names[1] = xstrdup("content-type");
	ex->hdr_values[1] = xstrdup("application/json");
	ex->transport = &fake_transport;
	ex->conn = fc;
	return ex;
}

/* common/exchange.c: lookups and each reply call. */
static void
test_exchange(void)
{
	struct http_exchange	*ex;
	struct fake_conn	 fc;
	struct evbuffer		*buf;
	char			*v;

	memset(&fc, 0, sizeof fc);
	ex = make_exchange(&fc, "a=1&name=hello+world%21&empty=&flag&bad=%zz"
	    "&a=2&%6e%61me2=x&nul=%00");
	CHECK_STR(http_exchange_header(ex, "Authorization"), "Bearer x");
	CHECK_STR(http_exchange_header(ex, "CONTENT-TYPE"), "application/json");
	CHECK(http_exchange_header(ex, "x-missing") == NULL);
	v = http_exchange_query(ex, "a");
	CHECK_STR(v, "1");
	free(v);
	v = http_exchange_query(ex, "name");
	CHECK_STR(v, "hello world!");
	free(v);
	v = http_exchange_query(ex, "empty");
	CHECK_STR(v, "");
	free(v);
	v = http_exchange_query(ex, "flag");
	CHECK_STR(v, "");
	free(v);
	CHECK(http_exchange_query(ex, "bad") == NULL);
	CHECK(http_exchange_query(ex, "nul") == NULL);
	CHECK(http_exchange_query(ex, "missing") == NULL);
	v = http_exchange_query(ex, "name2");
	CHECK_STR(v, "x");
	free(v);

	http_exchange_add_header(ex, "X-Test", "1");
	http_exchange_reply_error(ex, 404, "not_found", "no sandbox \"%s\"\n",
	    "ab\\c");
	CHECK(fc.sent == 1);
	CHECK(fc.status == 404);
	CHECK_STR(fc.ctype, "application/json");
	CHECK_STR(fc.body, "{\"error\":{\"code\":\"not_found\",\"message\":"
	    "\"no sandbox \\\"ab\\\\c\\\"\\n\"}}");

	memset(&fc, 0, sizeof fc);
	ex = make_exchange(&fc, NULL);
	CHECK(http_exchange_query(ex, "a") == NULL);
	http_exchange_reply(ex, 204, NULL, NULL, 0);
	CHECK(fc.sent == 1 && fc.status == 204 && fc.body[0] == '\0');
	CHECK(fc.ctype[0] == '\0');

	memset(&fc, 0, sizeof fc);
	ex = make_exchange(&fc, NULL);
	buf = evbuffer_new();
	evbuffer_add_printf(buf, "hello %d", 42);
	http_exchange_reply_buffer(ex, 200, "text/plain", buf);
	CHECK(evbuffer_get_length(buf) == 0);
	evbuffer_free(buf);
	CHECK(fc.sent == 1 && fc.status == 200);
	CHECK_STR(fc.body, "hello 42");
	CHECK_STR(fc.ctype, "text/plain");

	/* Detached: the reply frees it and sends nothing (valgrind checks). */
	memset(&fc, 0, sizeof fc);
	ex = make_exchange(&fc, NULL);
	http_exchange_detach(ex);
	CHECK(ex->conn == NULL);
	http_exchange_reply_json(ex, 200, "{}");
	CHECK(fc.sent == 0);

	/* A second reply is refused while the transport still holds it. */
	memset(&fc, 0, sizeof fc);
	ex = http_exchange_new();
	ex->replied = 1;
	http_exchange_reply_json(ex, 500, "{}");
	http_exchange_add_header(ex, "X-Late", "1");
	CHECK(ex->status == 0 && ex->nresp_hdrs == 0);
	http_exchange_free(ex);
}

/* common/util.c helpers that the rest of the daemon leans on. */
static void
test_util(void)
{
	const char	*err;
	char		 buf[32], *path;
	struct stat	 sb;

	CHECK(strtonum_x("42", 0, 100, &err) == 42 && err == NULL);
	CHECK(strtonum_x("-5", -10, 10, &err) == -5 && err == NULL);
	CHECK(strtonum_x("101", 0, 100, &err) == 0 && strcmp(err,
	    "too large") == 0);
	CHECK(strtonum_x("-1", 0, 100, &err) == 0 && strcmp(err,
	    "too small") == 0);
	CHECK(strtonum_x("", 0, 100, &err) == 0 && strcmp(err,
	    "invalid") == 0);
	CHECK(strtonum_x("1x", 0, 100, &err) == 0 && strcmp(err,
	    "invalid") == 0);
	CHECK(strtonum_x("99999999999999999999", 0, 100, &err) == 0 &&
	    strcmp(err, "too large") == 0);
	CHECK(strtonum_x("5", 10, 0, &err) == 0 && strcmp(err,
	    "invalid") == 0);

	time_format_rfc3339(0, buf, sizeof buf);
	CHECK_STR(buf, "1970-01-01T00:00:00Z");
	time_format_rfc3339(1795773600123LL, buf, sizeof buf);
	CHECK_STR(buf, "2026-11-27T10:00:00Z");
	CHECK(time_now_ms() > 1700000000000LL);
	CHECK(time_mono_ms() >= 0);

	CHECK(timingsafe_eq("abc", 3, "abc", 3) == 1);
	CHECK(timingsafe_eq("abc", 3, "abd", 3) == 0);
	CHECK(timingsafe_eq("abc", 3, "abcd", 4) == 0);
	CHECK(timingsafe_eq("", 0, "", 0) == 1);

	memset(buf, 0, sizeof buf);
	random_bytes(buf, sizeof buf);
	CHECK(memcmp(buf, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) != 0);

	xasprintf(&path, "%s/a/b//c/", tmpdir);
	CHECK(mkdir_p(path, 0750) == 0);
	CHECK(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
	CHECK((sb.st_mode & 0777) == 0750);
	CHECK(mkdir_p(path, 0750) == 0);	/* exists: fine */
	free(path);
	xasprintf(&path, "%s/ok.conf/x", tmpdir);
	CHECK(mkdir_p(path, 0750) == -1 && errno == ENOTDIR);
	free(path);
}

/* [provider NAME]: kinds, https upstreams split for the proxy, key files. */
static void
test_providers(void)
{
	struct config	*c;
	char		*key, *empty, *text, *e;

	key = write_file("provider.key", "sk-test-key\n", 12, 0600);
	empty = write_file("empty.key", "\n \n", 3, 0600);
	xasprintf(&text, "provider_port = 7443\n"
	    "[provider anthropic]\nkind = anthropic\n"
	    "upstream = https://api.anthropic.com/\nkey_file = %s\n"
	    "[provider oai]\nkind = openai\n"
	    "upstream = https://127.0.0.1:8443/v1\nkey_file = %s\n"
	    "provider_ca = %s\n", key, key, key);
	c = parse_ok(text);
	free(text);
	if (c != NULL) {
		CHECK(c->provider_port == 7443);
		CHECK(c->nproviders == 2);
		CHECK_STR(c->providers[0].name, "anthropic");
		CHECK(c->providers[0].kind == CFG_PROVIDER_ANTHROPIC);
		CHECK_STR(c->providers[0].upstream, "https://api.anthropic.com");
		CHECK_STR(c->providers[0].host, "api.anthropic.com");
		CHECK(c->providers[0].port == 443);
		CHECK_STR(c->providers[0].path, "");
		CHECK(c->providers[0].ca_file == NULL);
		CHECK(c->providers[1].kind == CFG_PROVIDER_OPENAI);
		CHECK_STR(c->providers[1].host, "127.0.0.1");
		CHECK(c->providers[1].port == 8443);
		CHECK_STR(c->providers[1].path, "/v1");
		CHECK_STR(c->providers[1].ca_file, key);
		config_free(c);
	}
	c = parse_ok("");
	CHECK(c->nproviders == 0 && c->provider_port == 7070);
	config_free(c);

	xasprintf(&text, "[provider p]\nkind = gemini\n"
	    "upstream = http://x.example\nkey_file = %s/none.key\n"
	    "provider_ca = relative.pem\n"
	    "[provider q]\nkind = openai\nupstream = https://x.example:0\n"
	    "key_file = %s\n"
	    "[provider r]\nkind = openai\nupstream = https://u@x.example\n"
	    "key_file = %s\n"
	    "[provider s]\n", tmpdir, empty, key);
	e = parse_err(text);
	free(text);
	CHECK(has(e, "t.conf:2: kind: \"gemini\" is not anthropic or openai"));
	CHECK(has(e, "t.conf:3: upstream: must start with https://"));
	CHECK(has(e, "t.conf:4: key_file: "));
	CHECK(has(e, "none.key: No such file or directory"));
	CHECK(has(e, "t.conf:5: provider_ca: must be an absolute path"));
	CHECK(has(e, "t.conf:8: upstream: port in \"https://x.example:0\" is "
	    "too small"));
	CHECK(has(e, "empty (it must hold the provider's API key)"));
	CHECK(has(e, "t.conf:12: upstream: \"https://u@x.example\" is not a "
	    "valid https URL"));
	CHECK(has(e, "t.conf:11: kind: [provider r] has the same kind as "
	    "[provider q]"));
	CHECK(has(e, "t.conf:14: kind: missing in [provider s]"));
	CHECK(has(e, "t.conf:14: upstream: missing in [provider s]"));
	CHECK(has(e, "t.conf:14: key_file: missing in [provider s]"));
	CHECK(!has_quiet(e, "sk-test-key"));
	free(e);
	e = parse_err("kind = openai\n");
	CHECK(has(e, "kind: only allowed in a [provider] section"));
	free(e);
	e = parse_err("[route r]\nhost = a.example\nupstream = 127.0.0.1:1\n"
	    "kind = openai\n");
	CHECK(has(e, "kind: not a key of [route] sections (it belongs in "
	    "[provider])"));
	free(e);
	free(key);
	free(empty);
}

/* egress and egress_allow: the modes, CIDRs v4/v6, every refusal. */
static void
test_egress(void)
{
	struct config	*c;
	struct cfg_cidr	 cidr;
	const char	*err;
	char		*e;

	c = parse_ok("");
	CHECK(c->egress == CFG_EGRESS_PUBLIC_ONLY);
	CHECK(c->negress_allow == 0);
	CHECK_STR(config_egress_name(c->egress), "public-only");
	config_free(c);
	c = parse_ok("egress = open\n");
	CHECK(c->egress == CFG_EGRESS_OPEN);
	config_free(c);
	c = parse_ok("egress = none\n");
	CHECK(c->egress == CFG_EGRESS_NONE);
	CHECK_STR(config_egress_name(c->egress), "none");
	config_free(c);

	c = parse_ok("egress_allow = 203.0.113.7, 10.0.0.0/8 fd00::/8\n"
	    "egress_allow = 2001:db8::1\tFE80::/10,0.0.0.0/0\n");
	CHECK(c->negress_allow == 6);
	CHECK_STR(c->egress_allow[0].text, "203.0.113.7/32");
	CHECK(c->egress_allow[0].family == AF_INET);
	CHECK_STR(c->egress_allow[1].text, "10.0.0.0/8");
	CHECK_STR(c->egress_allow[2].text, "fd00::/8");
	CHECK(c->egress_allow[2].family == AF_INET6);
	CHECK_STR(c->egress_allow[3].text, "2001:db8::1/128");
	CHECK_STR(c->egress_allow[4].text, "fe80::/10");
	CHECK_STR(c->egress_allow[5].text, "0.0.0.0/0");
	config_free(c);

	e = parse_err("egress = closed\n");
	CHECK(has(e, "t.conf:1: egress: \"closed\" is not open, public-only "
	    "or none"));
	free(e);
	e = parse_err("egress = open\negress = none\n");
	CHECK(has(e, "t.conf:2: egress: set twice"));
	free(e);
	e = parse_err("\negress_allow = 10.0.0.1/8\n");
	CHECK(has(e, "t.conf:2: egress_allow: bad network \"10.0.0.1/8\": "
	    "host bits are set"));
	free(e);
	e = parse_err("egress_allow = 10.0.0.0/33, ::/129, 1.2.3.4/, "
	    "1.2.3.4/+8, 1.2.3.4/ 8, host.example, /8, 1.2.3.4/0008\n");
	CHECK(has(e, "\"10.0.0.0/33\": the prefix length must be 0-32"));
	CHECK(has(e, "\"::/129\": the prefix length must be 0-128"));
	CHECK(has(e, "\"1.2.3.4/\": the prefix length must be a number"));
	CHECK(has(e, "\"1.2.3.4/+8\": the prefix length must be a number"));
	CHECK(has(e, "\"1.2.3.4/\": the prefix"));
	CHECK(has(e, "\"host.example\": not an IPv4 or IPv6 address"));
	CHECK(has(e, "\"/8\": expected an address"));
	CHECK(has(e, "\"1.2.3.4/0008\": the prefix length must be a number"));
	free(e);
	e = parse_err("egress_allow = 10.0.0.0/8\negress_allow = 10.0.0.0/8\n");
	CHECK(has(e, "t.conf:2: egress_allow: 10.0.0.0/8 listed twice"));
	free(e);
	e = parse_err("[template x]\nimage = a\negress = open\n");
	CHECK(has(e, "egress: global key in [template x] section"));
	free(e);

	CHECK(config_parse_cidr("192.168.1.0/24", &cidr, &err) == 0);
	CHECK(cidr.prefix == 24 && cidr.addr[2] == 1 && err == NULL);
	CHECK(config_parse_cidr("192.168.1.128/25", &cidr, &err) == 0);
	CHECK(config_parse_cidr("192.168.1.64/25", &cidr, &err) == -1);
	CHECK(config_parse_cidr("fd00::1/127", &cidr, &err) == -1);
	CHECK(config_parse_cidr("fd00::2/127", &cidr, &err) == 0);
	CHECK(config_parse_cidr("1.2.3.4%eth0", &cidr, &err) == -1);
	CHECK(config_parse_cidr("", &cidr, &err) == -1);
}

/* The edge's limits and timeouts: defaults, values, bounds. */
static void
test_edge_limits(void)
{
	struct config	*c;
	char		*e;

	c = parse_ok("");
	if (c != NULL) {
		CHECK(c->max_connections == 0);
		CHECK(c->max_connections_per_ip == 256);
		CHECK(c->header_timeout_ms == 30000);
		CHECK(c->keepalive_timeout_ms == 75000);
		CHECK(c->body_timeout_ms == 30000);
		CHECK(c->body_min_rate == 512);
		CHECK(c->send_timeout_ms == 60000);
		CHECK(c->send_min_rate == 512);
		CHECK(c->response_timeout_ms == 60000);
		CHECK(c->response_idle_timeout_ms == 300000);
		CHECK(c->tunnel_idle_timeout_ms == 3600000);
	}
	config_free(c);
	c = parse_ok("max_connections = 20000\nmax_connections_per_ip = 0\n"
	    "header_timeout = 2s\nkeepalive_timeout = 250ms\n"
	    "body_timeout = 10s\nbody_min_rate = 1k\nsend_timeout = 1m\n"
	    "send_min_rate = 0\nresponse_timeout = 2m\n"
	    "response_idle_timeout = 0\ntunnel_idle_timeout = 24h\n");
	if (c != NULL) {
		CHECK(c->max_connections == 20000);
		CHECK(c->max_connections_per_ip == 0);
		CHECK(c->header_timeout_ms == 2000);
		CHECK(c->keepalive_timeout_ms == 250);
		CHECK(c->body_timeout_ms == 10000);
		CHECK(c->body_min_rate == 1024);
		CHECK(c->send_timeout_ms == 60000);
		CHECK(c->send_min_rate == 0);
		CHECK(c->response_timeout_ms == 120000);
		CHECK(c->response_idle_timeout_ms == 0);
		CHECK(c->tunnel_idle_timeout_ms == 24 * 3600000LL);
	}
	config_free(c);
	/* The timeouts that cannot be off; bounds; garbage. */
	e = parse_err("header_timeout = 0\nkeepalive_timeout = 0\n"
	    "body_timeout = 0\nsend_timeout = 0\nresponse_timeout = 0\n"
	    "max_connections = -1\nmax_connections_per_ip = 10000001\n"
	    "body_min_rate = 2g\nsend_min_rate = fast\n"
	    "tunnel_idle_timeout = 1 h\n");
	CHECK(has(e, "t.conf:1: header_timeout: must be more than 0"));
	CHECK(has(e, "t.conf:2: keepalive_timeout:"));
	CHECK(has(e, "t.conf:3: body_timeout:"));
	CHECK(has(e, "t.conf:4: send_timeout:"));
	CHECK(has(e, "t.conf:5: response_timeout:"));
	CHECK(has(e, "t.conf:6: max_connections:"));
	CHECK(has(e, "t.conf:7: max_connections_per_ip:"));
	CHECK(has(e, "t.conf:8: body_min_rate:"));
	CHECK(has(e, "t.conf:9: send_min_rate:"));
	CHECK(has(e, "t.conf:10: tunnel_idle_timeout:"));
	free(e);
	e = parse_err("header_timeout = 1s\nheader_timeout = 2s\n");
	CHECK(has(e, "t.conf:2: header_timeout:"));
	free(e);
}

int
main(void)
{
	char	*cmd;

	if (mkdtemp(tmpdir) == NULL)
		fatal("mkdtemp");

	RUN(test_embedded_default);
	RUN(test_every_key);
	RUN(test_syntax);
	RUN(test_sections);
	RUN(test_duplicates);
	RUN(test_global_values);
	RUN(test_pause_timeout);
	RUN(test_min_free_memory);
	RUN(test_default_template);
	RUN(test_section_values);
	RUN(test_ports);
	RUN(test_preview_secret_file);
	RUN(test_secret_hash);
	RUN(test_collects_all);
	RUN(test_durations);
	RUN(test_sizes);
	RUN(test_addrs);
	RUN(test_instance);
	RUN(test_egress);
	RUN(test_providers);
	RUN(test_edge_limits);
	RUN(test_garbage);
	RUN(test_load);
	RUN(test_exchange);
	RUN(test_util);

	xasprintf(&cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		log_warnx("could not remove %s", tmpdir);
	free(cmd);
	return unit_finish();
}
