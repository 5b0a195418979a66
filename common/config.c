/*
 * The configuration file: "key = value" lines, "#" comments and
 * "[api_key NAME]", "[template NAME]", "[route NAME]" sections.
 *
 * Parsing never stops at the first problem: every bad line, bad value and
 * missing key is collected as "FILE:LINE: KEY: message" so check-config can
 * show them all at once. A config with any problem is not returned.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"

#ifndef SBX_LIBEXECDIR
#define SBX_LIBEXECDIR "/usr/local/libexec/sandboxd"
#endif
#ifndef SBX_DATADIR
#define SBX_DATADIR "/usr/local/share"
#endif

#define CFG_MAX_LINE		8192
#define CFG_MAX_FILE		(16 * 1024 * 1024)
#define CFG_MAX_ERRORS		1000
#define CFG_MAX_PORT_RANGES	256
#define CFG_MAX_DURATION_MS	(30LL * 24 * 3600 * 1000)
#define CFG_KIB			1024ULL
#define CFG_MIB			(1024ULL * 1024)
#define CFG_GIB			(1024ULL * 1024 * 1024)
#define CFG_TIB			(1024ULL * 1024 * 1024 * 1024)

#define CFG_EMBEDDED_NAME	"(embedded default)"

/*
 * The embedded default: what sandboxd runs with when no file is given. The
 * code defaults below say the same; this text keeps it readable in one place.
 */
static const char config_embedded[] =
	"listen = 127.0.0.1:8080\n"
	"data_dir = /var/lib/sandboxd\n"
	"preview_domain = preview.localhost\n"
	"public_url = http://localhost:8080\n"
	"docker_socket = /var/run/docker.sock\n"
	"network = sandboxd\n"
	"default_template = default\n"
	"idle_timeout = 15m\n"
	"pause_timeout = 0\n"
	"wake_timeout = 60s\n"
	"max_sandboxes = 500\n"
	"max_running = 40\n"
	"min_free_memory = 10%\n"
	"egress = public-only\n"
	"\n"
	"[template default]\n"
	"image = sandboxd/base:latest\n"
	"port = 3000\n"
	"dev_command = npm run dev -- --host 0.0.0.0 --port 3000\n"
	"seed_dir = /usr/share/sandboxd/templates/vite-react\n"
	"memory = 1g\n"
	"cpus = 1\n"
	"pids_limit = 512\n"
	"disk = 10g\n";

enum cfg_scope {
	CFG_GLOBAL,
	CFG_API_KEY,
	CFG_TEMPLATE,
	CFG_ROUTE,
	CFG_PROVIDER,
	CFG_INVALID		/* under a broken header: keys are skipped */
};

static const char *cfg_scope_names[] = {
	"global", "api_key", "template", "route", "provider", "invalid"
};

enum cfg_type {
	CFG_T_LISTEN,		/* repeatable address list */
	CFG_T_PATH,		/* absolute path */
	CFG_T_TLSFILE,		/* repeatable absolute path, into conf->tls */
	CFG_T_STRING,		/* any text; "" means none */
	CFG_T_NAME,		/* [A-Za-z0-9_.-]{1,64} */
	CFG_T_DOMAIN,		/* DNS name */
	CFG_T_URL,		/* http:// or https:// */
	CFG_T_DURATION,		/* int64_t ms */
	CFG_T_SIZE,		/* uint64_t bytes */
	CFG_T_INT,		/* int */
	CFG_T_CPUS,		/* double */
	CFG_T_BOOL,		/* int 0/1 */
	CFG_T_LOGLEVEL,		/* enum log_level */
	CFG_T_SECRET,		/* api key secret */
	CFG_T_SECRET_HASH,	/* "sha256:<64 hex>", kept as the hex */
	CFG_T_IMAGE,		/* docker image reference */
	CFG_T_HOST,		/* route host pattern */
	CFG_T_UPSTREAM,		/* route upstream */
	CFG_T_MEMFLOOR,		/* uint64_t bytes, or int percent at off_n */
	CFG_T_PORTS,		/* struct cfg_port_range list, count at off_n */
	CFG_T_EGRESS,		/* enum cfg_egress */
	CFG_T_CIDRS,		/* struct cfg_cidr array, count at off_n */
	CFG_T_ACCESSLOG,	/* char *: NULL (off), "stderr" or a path */
	CFG_T_PROVIDER_KIND,	/* enum cfg_provider_kind */
	CFG_T_PROVIDER_URL	/* https://host[:port][/path] */
};

/* One key of the file: where it may appear, its type, where it goes. */
struct cfg_keydef {
	const char	*name;
	enum cfg_scope	 scope;
	enum cfg_type	 type;
	size_t		 off;		/* in struct config or the section */
	size_t		 off_n;		/* LISTEN: the count; MEMFLOOR: the % */
	long long	 min;
	long long	 max;
};

#define G(f)	offsetof(struct config, f)
#define K(f)	offsetof(struct cfg_api_key, f)
#define T(f)	offsetof(struct cfg_template, f)
#define R(f)	offsetof(struct cfg_route, f)
#define P(f)	offsetof(struct cfg_provider, f)

static const struct cfg_keydef cfg_keys[] = {
	{ "listen", CFG_GLOBAL, CFG_T_LISTEN, G(listen), G(nlisten), 0, 0 },
	{ "tls_listen", CFG_GLOBAL, CFG_T_LISTEN, G(tls_listen),
	  G(ntls_listen), 0, 0 },
	{ "tls_cert", CFG_GLOBAL, CFG_T_TLSFILE, 0, 0, 0, 0 },
	{ "tls_key", CFG_GLOBAL, CFG_T_TLSFILE, 0, 0, 0, 0 },
	{ "redirect_https", CFG_GLOBAL, CFG_T_BOOL, G(redirect_https), 0, 0,
	  0 },
	{ "data_dir", CFG_GLOBAL, CFG_T_PATH, G(data_dir), 0, 0, 0 },
	{ "preview_secret_file", CFG_GLOBAL, CFG_T_PATH,
	  G(preview_secret_file), 0, 0, 0 },
	{ "preview_domain", CFG_GLOBAL, CFG_T_DOMAIN, G(preview_domain), 0,
	  0, 0 },
	{ "public_url", CFG_GLOBAL, CFG_T_URL, G(public_url), 0, 0, 0 },
	{ "docker_socket", CFG_GLOBAL, CFG_T_PATH, G(docker_socket), 0, 0, 0 },
	{ "network", CFG_GLOBAL, CFG_T_NAME, G(network), 0, 0, 0 },
	{ "default_template", CFG_GLOBAL, CFG_T_NAME, G(default_template), 0,
	  0, 0 },
	{ "agentd_path", CFG_GLOBAL, CFG_T_PATH, G(agentd_path), 0, 0, 0 },
	{ "console_dir", CFG_GLOBAL, CFG_T_PATH, G(console_dir), 0, 0, 0 },
	{ "instance", CFG_GLOBAL, CFG_T_NAME, G(instance), 0, 0, 0 },
	{ "idle_timeout", CFG_GLOBAL, CFG_T_DURATION, G(idle_timeout_ms), 0,
	  0, CFG_MAX_DURATION_MS },
	{ "pause_timeout", CFG_GLOBAL, CFG_T_DURATION, G(pause_timeout_ms), 0,
	  0, CFG_MAX_DURATION_MS },
	/* Holding a request for 0 ms would fail every wake: at least 1 ms. */
	{ "wake_timeout", CFG_GLOBAL, CFG_T_DURATION, G(wake_timeout_ms), 0,
	  1, CFG_MAX_DURATION_MS },
	/* A task with no time at all could never run: at least 1 s. */
	{ "task_timeout", CFG_GLOBAL, CFG_T_DURATION, G(task_timeout_ms), 0,
	  1000, CFG_MAX_DURATION_MS },
	{ "shutdown_grace", CFG_GLOBAL, CFG_T_DURATION, G(shutdown_grace_ms),
	  0, 0, CFG_MAX_DURATION_MS },
	{ "max_sandboxes", CFG_GLOBAL, CFG_T_INT, G(max_sandboxes), 0,
	  1, 1000000 },
	{ "max_running", CFG_GLOBAL, CFG_T_INT, G(max_running), 0, 1, 100000 },
	{ "max_file_size", CFG_GLOBAL, CFG_T_SIZE, G(max_file_size), 0,
	  1, (long long)CFG_TIB },
	{ "task_log_max", CFG_GLOBAL, CFG_T_SIZE, G(task_log_max), 0,
	  4096, (long long)CFG_TIB },
	/* How often the disk ceilings are measured; 0: never (quotas do it). */
	{ "disk_check_interval", CFG_GLOBAL, CFG_T_DURATION,
	  G(disk_check_interval_ms), 0, 0, CFG_MAX_DURATION_MS },
	/* min and max bound the percentage; a size is any that parses. */
	{ "min_free_memory", CFG_GLOBAL, CFG_T_MEMFLOOR,
	  G(min_free_memory_bytes), G(min_free_memory_pct), 0, 90 },
	{ "log_level", CFG_GLOBAL, CFG_T_LOGLEVEL, G(log_level), 0, 0, 0 },
	{ "access_log", CFG_GLOBAL, CFG_T_ACCESSLOG, G(access_log), 0, 0, 0 },
	{ "egress", CFG_GLOBAL, CFG_T_EGRESS, G(egress), 0, 0, 0 },
	{ "egress_allow", CFG_GLOBAL, CFG_T_CIDRS, G(egress_allow),
	  G(negress_allow), 0, 0 },
	/* The edge's limits: 0 is "derived" for one, "no cap" for the other. */
	{ "max_connections", CFG_GLOBAL, CFG_T_INT, G(max_connections), 0,
	  0, 10000000 },
	{ "max_connections_per_ip", CFG_GLOBAL, CFG_T_INT,
	  G(max_connections_per_ip), 0, 0, 10000000 },
	{ "header_timeout", CFG_GLOBAL, CFG_T_DURATION, G(header_timeout_ms),
	  0, 1, CFG_MAX_DURATION_MS },
	{ "keepalive_timeout", CFG_GLOBAL, CFG_T_DURATION,
	  G(keepalive_timeout_ms), 0, 1, CFG_MAX_DURATION_MS },
	{ "body_timeout", CFG_GLOBAL, CFG_T_DURATION, G(body_timeout_ms), 0,
	  1, CFG_MAX_DURATION_MS },
	{ "body_min_rate", CFG_GLOBAL, CFG_T_SIZE, G(body_min_rate), 0,
	  0, (long long)CFG_GIB },
	{ "send_timeout", CFG_GLOBAL, CFG_T_DURATION, G(send_timeout_ms), 0,
	  1, CFG_MAX_DURATION_MS },
	{ "send_min_rate", CFG_GLOBAL, CFG_T_SIZE, G(send_min_rate), 0,
	  0, (long long)CFG_GIB },
	{ "response_timeout", CFG_GLOBAL, CFG_T_DURATION,
	  G(response_timeout_ms), 0, 1, CFG_MAX_DURATION_MS },
	/* 0: an upstream may stay silent mid-response, a tunnel idle, forever. */
	{ "response_idle_timeout", CFG_GLOBAL, CFG_T_DURATION,
	  G(response_idle_timeout_ms), 0, 0, CFG_MAX_DURATION_MS },
	{ "tunnel_idle_timeout", CFG_GLOBAL, CFG_T_DURATION,
	  G(tunnel_idle_timeout_ms), 0, 0, CFG_MAX_DURATION_MS },

	{ "secret", CFG_API_KEY, CFG_T_SECRET, K(secret), 0, 0, 0 },
	{ "secret_hash", CFG_API_KEY, CFG_T_SECRET_HASH, K(secret_hash), 0,
	  0, 0 },
	{ "admin", CFG_API_KEY, CFG_T_BOOL, K(admin), 0, 0, 0 },
	{ "max_sandboxes", CFG_API_KEY, CFG_T_INT, K(max_sandboxes), 0,
	  1, 1000000 },
	{ "max_running", CFG_API_KEY, CFG_T_INT, K(max_running), 0, 1, 100000 },
	{ "max_memory_mb", CFG_API_KEY, CFG_T_INT, K(max_memory_mb), 0,
	  16, 1024 * 1024 },
	{ "max_cpus", CFG_API_KEY, CFG_T_CPUS, K(max_cpus), 0, 0, 0 },

	{ "image", CFG_TEMPLATE, CFG_T_IMAGE, T(image), 0, 0, 0 },
	{ "port", CFG_TEMPLATE, CFG_T_INT, T(port), 0, 1, 65535 },
	{ "dev_command", CFG_TEMPLATE, CFG_T_STRING, T(dev_command), 0, 0, 0 },
	{ "seed_dir", CFG_TEMPLATE, CFG_T_PATH, T(seed_dir), 0, 0, 0 },
	{ "memory", CFG_TEMPLATE, CFG_T_SIZE, T(memory), 0,
	  (long long)(16 * CFG_MIB), (long long)CFG_TIB },
	{ "cpus", CFG_TEMPLATE, CFG_T_CPUS, T(cpus), 0, 0, 0 },
	{ "pids_limit", CFG_TEMPLATE, CFG_T_INT, T(pids_limit), 0,
	  16, 4194304 },
	{ "ports", CFG_TEMPLATE, CFG_T_PORTS, T(ports), T(nports), 1, 65535 },
	/* 0: no ceiling. */
	{ "disk", CFG_TEMPLATE, CFG_T_SIZE, T(disk), 0,
	  0, (long long)(1024 * CFG_TIB) },

	{ "host", CFG_ROUTE, CFG_T_HOST, R(host), 0, 0, 0 },
	{ "upstream", CFG_ROUTE, CFG_T_UPSTREAM, R(upstream), 0, 0, 0 },

	{ "provider_port", CFG_GLOBAL, CFG_T_INT, G(provider_port), 0,
	  1, 65535 },
	{ "kind", CFG_PROVIDER, CFG_T_PROVIDER_KIND, P(kind), 0, 0, 0 },
	{ "upstream", CFG_PROVIDER, CFG_T_PROVIDER_URL, P(upstream), 0, 0, 0 },
	{ "key_file", CFG_PROVIDER, CFG_T_PATH, P(key_file), 0, 0, 0 },
	{ "provider_ca", CFG_PROVIDER, CFG_T_PATH, P(ca_file), 0, 0, 0 },
};
#define CFG_NKEYS nitems(cfg_keys)

/* One problem found, kept to sort them by line at the end. */
struct cfg_err {
	int	 line;
	int	 seq;
	char	*text;
};

/* Parser state for one file. */
struct cfg_parse {
	const char	*file;
	struct config	*conf;
	struct cfg_err	*errs;
	int		 nerrs;
	int		 line;		/* current line, 1-based */

	enum cfg_scope	 scope;		/* of the section being read */
	size_t		 sidx;		/* its index in its array */
	int		 sline;		/* line of its header */
	char		*sname;		/* its name */
	int		 gseen[CFG_NKEYS];	/* line each global key was set */
	int		 sseen[CFG_NKEYS];	/* same, current section */
	int		 ntemplate_sections;
	size_t		 ncert;		/* tls_cert lines so far */
	size_t		 nkey;		/* tls_key lines so far */
};

static void	 cfg_error(struct cfg_parse *, int, const char *,
		    const char *, ...) SBX_PRINTF(4, 5);
static int	 cfg_error_cmp(const void *, const void *);
static char	*cfg_error_text(struct cfg_parse *);
static int	 cfg_utf8_valid(const unsigned char *, size_t);
static int	 cfg_name_valid(const char *);
static int	 cfg_dns_valid(const char *);
static int	 cfg_addr_parse(const char *, struct sockaddr_storage *,
		    socklen_t *, const char **);
static void	 cfg_size_text(uint64_t, char *, size_t);
static void	 cfg_duration_text(int64_t, char *, size_t);
static void	*cfg_section_base(struct cfg_parse *);
static void	 cfg_section_end(struct cfg_parse *);
static void	 cfg_section_begin(struct cfg_parse *, char *);
static void	 cfg_set(struct cfg_parse *, const char *, const char *);
static void	 cfg_set_tls(struct cfg_parse *, const char *,
		    const char *);
static void	 cfg_validate_tls(struct cfg_parse *);
static void	 cfg_set_memfloor(struct cfg_parse *,
		    const struct cfg_keydef *, const char *, const char *,
		    char *);
static void	 cfg_set_ports(struct cfg_parse *,
		    const struct cfg_keydef *, const char *, const char *,
		    char *);
static void	 cfg_set_cidrs(struct cfg_parse *,
		    const struct cfg_keydef *, const char *, const char *,
		    char *);
static void	 cfg_set_provider_url(struct cfg_parse *, const char *,
		    const char *, char *);
static void	 cfg_check_key_file(struct cfg_parse *, const char *, int);
static void	 cfg_line(struct cfg_parse *, char *);
static int	 cfg_value(struct cfg_parse *, const char *, char *, char **);
static void	 cfg_defaults(struct config *);
static void	 cfg_template_defaults(struct cfg_template *, const char *);
static void	 cfg_validate(struct cfg_parse *);
static size_t	 cfg_key_index(const char *);
static size_t	 cfg_key_index_in(const char *, enum cfg_scope);
static void	 cfg_check_secret(struct cfg_parse *, const char *, int);
static void	 cfg_check_file(struct cfg_parse *, const char *,
		    const char *, int);
static struct config *cfg_parse_buf(const char *, const char *, size_t,
		    char **);

/* Record one problem as "FILE:LINE: KEY: message". */
static void
cfg_error(struct cfg_parse *p, int line, const char *key, const char *fmt,
    ...)
{
	struct cfg_err	*e;
	char		*msg;
	va_list		 ap;

	if (p->nerrs >= CFG_MAX_ERRORS)
		return;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("%s: out of memory", __func__);
	va_end(ap);
	p->errs = xreallocarray(p->errs, (size_t)p->nerrs + 1, sizeof *p->errs);
	e = &p->errs[p->nerrs];
	e->line = line;
	e->seq = p->nerrs++;
	if (p->nerrs == CFG_MAX_ERRORS)
		xasprintf(&e->text, "%s:%d: config: too many errors, giving "
		    "up\n", p->file, line);
	else
		xasprintf(&e->text, "%s:%d: %s: %s\n", p->file, line, key, msg);
	free(msg);
}

/* Order problems by line, then in the order they were found. */
static int
cfg_error_cmp(const void *a, const void *b)
{
	const struct cfg_err	*ea = a, *eb = b;

	if (ea->line != eb->line)
		return ea->line < eb->line ? -1 : 1;
	return ea->seq < eb->seq ? -1 : ea->seq > eb->seq;
}

/* All problems as one text, sorted by line; frees the list. */
static char *
cfg_error_text(struct cfg_parse *p)
{
	char	*out;
	size_t	 len = 0, n;
	int	 i;

	qsort(p->errs, (size_t)p->nerrs, sizeof *p->errs, cfg_error_cmp);
	for (i = 0; i < p->nerrs; i++)
		len += strlen(p->errs[i].text);
	out = xmalloc(len + 1);
	len = 0;
	for (i = 0; i < p->nerrs; i++) {
		n = strlen(p->errs[i].text);
		memcpy(out + len, p->errs[i].text, n);
		len += n;
		free(p->errs[i].text);
	}
	out[len] = '\0';
	free(p->errs);
	p->errs = NULL;
	return out;
}

/* 1 if buf[0..len) is well-formed UTF-8 (no overlongs or surrogates). */
static int
cfg_utf8_valid(const unsigned char *s, size_t len)
{
	size_t		i = 0, n, k;
	uint32_t	cp;

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			n = 1;
			cp = s[i] & 0x1f;
		} else if ((s[i] & 0xf0) == 0xe0) {
			n = 2;
			cp = s[i] & 0x0f;
		} else if ((s[i] & 0xf8) == 0xf0) {
			n = 3;
			cp = s[i] & 0x07;
		} else
			return 0;
		if (len - i <= n)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

/* 1 if s is a section/template/network name: [A-Za-z0-9_.-]{1,64}. */
static int
cfg_name_valid(const char *s)
{
	size_t	len = strlen(s), i;

	if (len == 0 || len > 64)
		return 0;
	for (i = 0; i < len; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' &&
		    s[i] != '.' && s[i] != '-')
			return 0;
	}
	return 1;
}

/* 1 if s is a lowercase DNS name: labels [a-z0-9-]{1,63}, <= 253 total. */
static int
cfg_dns_valid(const char *s)
{
	size_t	len = strlen(s), label = 0, i;

	if (len == 0 || len > 253)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!(s[i] >= 'a' && s[i] <= 'z') &&
		    !(s[i] >= '0' && s[i] <= '9') && s[i] != '-')
			return 0;
		/* A label neither starts nor ends with a hyphen. */
		if (s[i] == '-' && (label == 0 || s[i + 1] == '.' ||
		    s[i + 1] == '\0'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return label != 0;
}

/* Parse "15m", "60s", "250ms", "2h", "0" (bare numbers are seconds) to ms. */
int64_t
config_parse_duration(const char *s)
{
	const char	*errstr;
	char		 digits[32];
	size_t		 n;
	long long	 v, mult;

	if (s == NULL)
		return -1;
	for (n = 0; s[n] >= '0' && s[n] <= '9'; n++)
		;
	if (n == 0 || n >= sizeof digits)
		return -1;
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (strcmp(s + n, "ms") == 0)
		mult = 1;
	else if (strcmp(s + n, "s") == 0 || s[n] == '\0')
		mult = 1000;
	else if (strcmp(s + n, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(s + n, "h") == 0)
		mult = 3600 * 1000;
	else
		return -1;
	v = strtonum_x(digits, 0, CFG_MAX_DURATION_MS, &errstr);
	if (errstr != NULL || v > (CFG_MAX_DURATION_MS - 1) / mult)
		return -1;
	return v * mult;
}

/* Parse "1g", "512m", "64k", "1024" (k/m/g/t, any case) to bytes. */
int
config_parse_size(const char *s, uint64_t *out)
{
	uint64_t	v = 0, mult = 1;
	size_t		n;

	if (s == NULL)
		return -1;
	for (n = 0; s[n] >= '0' && s[n] <= '9'; n++) {
		if (v > UINT64_MAX / 10 || (v == UINT64_MAX / 10 &&
		    (uint64_t)(s[n] - '0') > UINT64_MAX % 10))
			return -1;
		v = v * 10 + (uint64_t)(s[n] - '0');
	}
	if (n == 0)
		return -1;
	if (s[n] != '\0') {
		switch (tolower((unsigned char)s[n])) {
		case 'k':
			mult = CFG_KIB;
			break;
		case 'm':
			mult = CFG_MIB;
			break;
		case 'g':
			mult = CFG_GIB;
			break;
		case 't':
			mult = CFG_TIB;
			break;
		default:
			return -1;
		}
		if (s[n + 1] != '\0')
			return -1;
	}
	if (v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

/* Parse a literal "IPv4:port" or "[IPv6]:port"; *errstr says what is wrong. */
static int
cfg_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *sslen,
    const char **errstr)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;
	char			 host[INET6_ADDRSTRLEN + 1];
	const char		*colon, *port, *err;
	size_t			 hlen;
	long long		 pnum;

	memset(ss, 0, sizeof *ss);
	if (s[0] == '[') {
		colon = strchr(s, ']');
		if (colon == NULL || colon[1] != ':') {
			*errstr = "expected [IPv6]:port";
			return -1;
		}
		hlen = (size_t)(colon - s - 1);
		port = colon + 2;
		if (hlen == 0 || hlen >= sizeof host) {
			*errstr = "bad IPv6 address";
			return -1;
		}
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL) {
			*errstr = "expected IP:port";
			return -1;
		}
		hlen = (size_t)(colon - s);
		port = colon + 1;
		if (hlen == 0 || hlen >= sizeof host) {
			*errstr = "expected IP:port";
			return -1;
		}
		memcpy(host, s, hlen);
		host[hlen] = '\0';
	}
	pnum = strtonum_x(port, 1, 65535, &err);
	if (err != NULL) {
		*errstr = "port must be a number from 1 to 65535";
		return -1;
	}
	if (s[0] == '[') {
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			*errstr = "bad IPv6 address";
			return -1;
		}
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)pnum);
		*sslen = sizeof *sin6;
	} else {
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			/* Resolving names at startup is fragile; be plain. */
			*errstr = "not a literal IP address (host names are "
			    "not accepted; IPv6 goes in brackets)";
			return -1;
		}
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)pnum);
		*sslen = sizeof *sin;
	}
	*errstr = NULL;
	return 0;
}

/* Parse "host:port" or "[v6]:port" with a literal address into ss. */
int
config_parse_addr(const char *s, struct sockaddr_storage *ss,
    socklen_t *sslen)
{
	const char	*errstr;

	if (s == NULL)
		return -1;
	return cfg_addr_parse(s, ss, sslen, &errstr);
}

/* A size in the largest unit that divides it: "16m", "1t", "7". */
static void
cfg_size_text(uint64_t v, char *buf, size_t len)
{
	static const char	units[] = "tgmk";
	uint64_t		mult = CFG_TIB;
	size_t			i;

	for (i = 0; i < 4; i++, mult /= 1024) {
		if (v != 0 && v % mult == 0) {
			snprintf(buf, len, "%llu%c",
			    (unsigned long long)(v / mult), units[i]);
			return;
		}
	}
	snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* A duration in the largest unit that divides it: "15m", "250ms", "0". */
static void
cfg_duration_text(int64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % (3600 * 1000) == 0)
		snprintf(buf, len, "%lldh", (long long)(ms / (3600 * 1000)));
	else if (ms != 0 && ms % (60 * 1000) == 0)
		snprintf(buf, len, "%lldm", (long long)(ms / (60 * 1000)));
	else if (ms != 0 && ms % 1000 == 0)
		snprintf(buf, len, "%llds", (long long)(ms / 1000));
	else if (ms != 0)
		snprintf(buf, len, "%lldms", (long long)ms);
	else
		snprintf(buf, len, "0");
}

/* The struct the current section's keys go into. */
static void *
cfg_section_base(struct cfg_parse *p)
{
	struct config	*conf = p->conf;

	switch (p->scope) {
	case CFG_GLOBAL:
		return conf;
	case CFG_API_KEY:
		return &conf->api_keys[p->sidx];
	case CFG_TEMPLATE:
		return &conf->templates[p->sidx];
	case CFG_ROUTE:
		return &conf->routes[p->sidx];
	case CFG_PROVIDER:
		return &conf->providers[p->sidx];
	case CFG_INVALID:
		break;
	}
	return NULL;
}

/* Fill a template with the per-template defaults. */
static void
cfg_template_defaults(struct cfg_template *t, const char *name)
{
	memset(t, 0, sizeof *t);
	t->name = xstrdup(name);
	t->port = 3000;
	t->memory = CFG_GIB;
	t->cpus = 1.0;
	t->pids_limit = 512;
	t->disk = 10 * CFG_GIB;
}

/* Check what a finished section lacks, now that all its keys are read. */
static void
cfg_section_end(struct cfg_parse *p)
{
	struct config		*conf = p->conf;
	struct cfg_api_key	*k;
	struct cfg_template	*t;
	struct cfg_route	*r;
	struct cfg_provider	*pv;
	size_t			 i;

	switch (p->scope) {
	case CFG_GLOBAL:
		break;
	case CFG_PROVIDER:
		pv = &conf->providers[p->sidx];
		if (p->sseen[cfg_key_index("kind")] == 0)
			cfg_error(p, p->sline, "kind", "missing in [provider "
			    "%s] (required: anthropic or openai)", pv->name);
		if (p->sseen[cfg_key_index_in("upstream", CFG_PROVIDER)] == 0)
			cfg_error(p, p->sline, "upstream", "missing in "
			    "[provider %s] (required)", pv->name);
		if (pv->key_file == NULL)
			cfg_error(p, p->sline, "key_file", "missing in "
			    "[provider %s] (required)", pv->name);
		else
			cfg_check_key_file(p, pv->key_file,
			    p->sseen[cfg_key_index("key_file")]);
		if (pv->ca_file != NULL)
			cfg_check_file(p, "provider_ca", pv->ca_file,
			    p->sseen[cfg_key_index("provider_ca")]);
		/* Both would set the same env names in every sandbox. */
		for (i = 0; i < p->sidx; i++) {
			if (p->sseen[cfg_key_index("kind")] != 0 &&
			    conf->providers[i].kind == pv->kind)
				cfg_error(p, p->sseen[cfg_key_index("kind")],
				    "kind", "[provider %s] has the same kind "
				    "as [provider %s] (one of each kind)",
				    pv->name, conf->providers[i].name);
		}
		break;
	case CFG_API_KEY:
		k = &conf->api_keys[p->sidx];
		if (p->sseen[cfg_key_index("secret")] != 0 &&
		    p->sseen[cfg_key_index("secret_hash")] != 0) {
			cfg_error(p, p->sseen[cfg_key_index("secret_hash")],
			    "secret_hash", "[api_key %s] has both secret and "
			    "secret_hash (one of them)", k->name);
			break;
		}
		if (p->sseen[cfg_key_index("secret_hash")] != 0) {
			for (i = 0; i < p->sidx && k->secret_hash != NULL; i++) {
				if (conf->api_keys[i].secret_hash != NULL &&
				    strcmp(conf->api_keys[i].secret_hash,
				    k->secret_hash) == 0)
					cfg_error(p, p->sseen[cfg_key_index(
					    "secret_hash")], "secret_hash",
					    "[api_key %s] has the same "
					    "secret_hash as [api_key %s]",
					    k->name, conf->api_keys[i].name);
			}
			break;
		}
		if (p->sseen[cfg_key_index("secret")] == 0) {
			cfg_error(p, p->sline, "secret",
			    "missing in [api_key %s] (required, or "
			    "secret_hash)", k->name);
			break;
		}
		for (i = 0; i < p->sidx && k->secret != NULL; i++) {
			if (conf->api_keys[i].secret != NULL &&
			    strcmp(conf->api_keys[i].secret, k->secret) == 0)
				cfg_error(p, p->sseen[cfg_key_index("secret")],
				    "secret", "[api_key %s] has the same "
				    "secret as [api_key %s]",
				    k->name, conf->api_keys[i].name);
		}
		break;
	case CFG_TEMPLATE:
		t = &conf->templates[p->sidx];
		if (p->sseen[cfg_key_index("image")] == 0)
			cfg_error(p, p->sline, "image",
			    "missing in [template %s] (required)", t->name);
		break;
	case CFG_ROUTE:
		r = &conf->routes[p->sidx];
		if (p->sseen[cfg_key_index("host")] == 0)
			cfg_error(p, p->sline, "host",
			    "missing in [route %s] (required)", r->name);
		if (p->sseen[cfg_key_index("upstream")] == 0)
			cfg_error(p, p->sline, "upstream",
			    "missing in [route %s] (required)", r->name);
		break;
	case CFG_INVALID:
		break;
	}
	p->scope = CFG_GLOBAL;
	free(p->sname);
	p->sname = NULL;
}

/* Start a section from the text between the brackets: "TYPE NAME". */
static void
cfg_section_begin(struct cfg_parse *p, char *inner)
{
	struct config	*conf = p->conf;
	char		*type, *name, *extra, *hdr, *save = NULL;
	size_t		 i;
	int		 dup = 0;

	cfg_section_end(p);

	type = strtok_r(inner, " \t", &save);
	name = type != NULL ? strtok_r(NULL, " \t", &save) : NULL;
	extra = name != NULL ? strtok_r(NULL, " \t", &save) : NULL;
	if (type == NULL) {
		cfg_error(p, p->line, "[]", "empty section header");
		goto ignore;
	}
	xasprintf(&hdr, "[%s]", type);
	if (strcmp(type, "api_key") != 0 && strcmp(type, "template") != 0 &&
	    strcmp(type, "route") != 0 && strcmp(type, "provider") != 0) {
		cfg_error(p, p->line, hdr, "unknown section type \"%s\" "
		    "(expected api_key, template, route or provider)", type);
		free(hdr);
		goto ignore;
	}
	if (name == NULL || extra != NULL || !cfg_name_valid(name)) {
		cfg_error(p, p->line, hdr, "expected [%s NAME] with NAME of "
		    "1 to 64 characters A-Z a-z 0-9 _ . -", type);
		free(hdr);
		goto ignore;
	}
	free(hdr);

	memset(p->sseen, 0, sizeof p->sseen);
	p->sline = p->line;
	p->sname = xstrdup(name);
	if (strcmp(type, "api_key") == 0) {
		for (i = 0; i < conf->napi_keys; i++)
			dup |= strcmp(conf->api_keys[i].name, name) == 0;
		conf->api_keys = xreallocarray(conf->api_keys,
		    conf->napi_keys + 1, sizeof *conf->api_keys);
		memset(&conf->api_keys[conf->napi_keys], 0,
		    sizeof *conf->api_keys);
		conf->api_keys[conf->napi_keys].name = xstrdup(name);
		p->scope = CFG_API_KEY;
		p->sidx = conf->napi_keys++;
	} else if (strcmp(type, "template") == 0) {
		for (i = 0; i < conf->ntemplates; i++)
			dup |= strcmp(conf->templates[i].name, name) == 0;
		conf->templates = xreallocarray(conf->templates,
		    conf->ntemplates + 1, sizeof *conf->templates);
		cfg_template_defaults(&conf->templates[conf->ntemplates],
		    name);
		p->scope = CFG_TEMPLATE;
		p->sidx = conf->ntemplates++;
		p->ntemplate_sections++;
	} else if (strcmp(type, "provider") == 0) {
		for (i = 0; i < conf->nproviders; i++)
			dup |= strcmp(conf->providers[i].name, name) == 0;
		conf->providers = xreallocarray(conf->providers,
		    conf->nproviders + 1, sizeof *conf->providers);
		memset(&conf->providers[conf->nproviders], 0,
		    sizeof *conf->providers);
		conf->providers[conf->nproviders].name = xstrdup(name);
		p->scope = CFG_PROVIDER;
		p->sidx = conf->nproviders++;
	} else {
		for (i = 0; i < conf->nroutes; i++)
			dup |= strcmp(conf->routes[i].name, name) == 0;
		conf->routes = xreallocarray(conf->routes, conf->nroutes + 1,
		    sizeof *conf->routes);
		memset(&conf->routes[conf->nroutes], 0, sizeof *conf->routes);
		conf->routes[conf->nroutes].name = xstrdup(name);
		p->scope = CFG_ROUTE;
		p->sidx = conf->nroutes++;
	}
	if (dup) {
		xasprintf(&hdr, "[%s %s]", type, name);
		cfg_error(p, p->line, hdr, "section defined twice");
		free(hdr);
	}
	return;

ignore:
	/*
	 * The keys under a broken header would each be reported as out of
	 * place; skip them, the header error already says what is wrong.
	 */
	p->scope = CFG_INVALID;
}

/*
 * A memory floor: "10%" of host memory (a whole number from kd->min to
 * kd->max, the '%' right after it) or a size ("512m", "2g"). Sets one of
 * the two fields and zeroes the other.
 */
static void
cfg_set_memfloor(struct cfg_parse *p, const struct cfg_keydef *kd,
    const char *key, const char *value, char *base)
{
	const char	*errstr;
	char		 digits[32];
	uint64_t	 size;
	long long	 pct;
	size_t		 n;

	n = strspn(value, "0123456789");
	if (n > 0 && strcmp(value + n, "%") == 0) {
		if (n >= sizeof digits) {
			errstr = "too large";
			pct = 0;
		} else {
			memcpy(digits, value, n);
			digits[n] = '\0';
			pct = strtonum_x(digits, kd->min, kd->max, &errstr);
		}
		if (errstr != NULL) {
			cfg_error(p, p->line, key, "%s is out of range (%lld%% "
			    "to %lld%% of host memory)", value, kd->min,
			    kd->max);
			return;
		}
		*(uint64_t *)(base + kd->off) = 0;
		*(int *)(base + kd->off_n) = (int)pct;
		return;
	}
	if (config_parse_size(value, &size) != 0) {
		cfg_error(p, p->line, key, "bad value \"%s\" (a size with an "
		    "optional k, m, g or t, or a percentage of host memory "
		    "such as 10%%)", value);
		return;
	}
	*(uint64_t *)(base + kd->off) = size;
	*(int *)(base + kd->off_n) = 0;
}

/*
 * A port list: "3000, 5173, 8000-8100". Items are ports or LOW-HIGH
 * ranges within kd->min..kd->max, separated by commas; nothing is kept
 * unless the whole list is valid.
 */
static void
cfg_set_ports(struct cfg_parse *p, const struct cfg_keydef *kd,
    const char *key, const char *value, char *base)
{
	struct cfg_port_range	**rp = (struct cfg_port_range **)(base +
				    kd->off);
	size_t			*np = (size_t *)(base + kd->off_n);
	struct cfg_port_range	*r = NULL;
	const char		*errstr, *s = value, *e, *dash;
	char			 item[32], *lo, *hi;
	size_t			 n = 0, len;
	long long		 a, b;

	for (;;) {
		e = strchr(s, ',');
		len = e != NULL ? (size_t)(e - s) : strlen(s);
		while (len > 0 && (*s == ' ' || *s == '\t')) {
			s++;
			len--;
		}
		while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
			len--;
		if (len == 0 || len >= sizeof item) {
			cfg_error(p, p->line, key, "bad port list \"%s\" "
			    "(ports and LOW-HIGH ranges separated by commas)",
			    value);
			goto fail;
		}
		memcpy(item, s, len);
		item[len] = '\0';
		lo = hi = item;
		if ((dash = strchr(item, '-')) != NULL) {
			item[dash - item] = '\0';
			hi = item + (dash - item) + 1;
		}
		a = strtonum_x(lo, kd->min, kd->max, &errstr);
		b = errstr == NULL ? strtonum_x(hi, kd->min, kd->max, &errstr) :
		    0;
		if (errstr != NULL || strspn(lo, "0123456789") != strlen(lo) ||
		    strspn(hi, "0123456789") != strlen(hi)) {
			cfg_error(p, p->line, key, "bad port \"%.*s\" in the "
			    "list (a port %lld to %lld, or LOW-HIGH)",
			    (int)len, s, kd->min, kd->max);
			goto fail;
		}
		if (a > b) {
			cfg_error(p, p->line, key, "range %lld-%lld is "
			    "backwards (LOW-HIGH)", a, b);
			goto fail;
		}
		if (n == CFG_MAX_PORT_RANGES) {
			cfg_error(p, p->line, key, "more than %d ports and "
			    "ranges", CFG_MAX_PORT_RANGES);
			goto fail;
		}
		r = xreallocarray(r, n + 1, sizeof *r);
		r[n].lo = (int)a;
		r[n].hi = (int)b;
		n++;
		if (e == NULL)
			break;
		s = e + 1;
	}
	free(*rp);
	*rp = r;
	*np = n;
	return;
fail:
	free(r);
}

/* Store one "key = value" in the current scope after checking it. */
static void
cfg_set(struct cfg_parse *p, const char *key, const char *value)
{
	const struct cfg_keydef	*kd = NULL;
	struct config		*conf = p->conf;
	struct cfg_addr		**addrs, *a;
	struct cfg_route	*r;
	char			*base, **sp, *copy, *c, lo[32], hi[32];
	const char		*errstr;
	size_t			 i, *np, len;
	uint64_t		 size;
	int64_t			 ms;
	long long		 ll;
	double			 d;
	int			*seen;

	/* A name may exist in several scopes: the section's own comes first. */
	for (i = 0; i < CFG_NKEYS; i++) {
		if (strcmp(cfg_keys[i].name, key) != 0)
			continue;
		if (kd == NULL || cfg_keys[i].scope == p->scope)
			kd = &cfg_keys[i];
		if (kd->scope == p->scope)
			break;
	}
	if (kd != NULL)
		i = (size_t)(kd - cfg_keys);
	if (kd == NULL) {
		cfg_error(p, p->line, key, "unknown key");
		return;
	}
	if (kd->scope != p->scope) {
		if (p->scope == CFG_GLOBAL)
			cfg_error(p, p->line, key, "only allowed in a [%s] "
			    "section", cfg_scope_names[kd->scope]);
		else if (kd->scope == CFG_GLOBAL)
			cfg_error(p, p->line, key, "global key in [%s %s] "
			    "section (global keys go before the first "
			    "section)", cfg_scope_names[p->scope], p->sname);
		else
			cfg_error(p, p->line, key, "not a key of [%s] "
			    "sections (it belongs in [%s])",
			    cfg_scope_names[p->scope],
			    cfg_scope_names[kd->scope]);
		return;
	}
	seen = p->scope == CFG_GLOBAL ? p->gseen : p->sseen;
	if (seen[i] != 0 && kd->type != CFG_T_LISTEN &&
	    kd->type != CFG_T_CIDRS && kd->type != CFG_T_TLSFILE) {
		cfg_error(p, p->line, key, "set twice (first on line %d)",
		    seen[i]);
		return;
	}
	if (seen[i] == 0)
		seen[i] = p->line;

	base = cfg_section_base(p);
	sp = (char **)(base + kd->off);
	switch (kd->type) {
	case CFG_T_LISTEN:
		addrs = (struct cfg_addr **)(base + kd->off);
		np = (size_t *)(base + kd->off_n);
		for (i = 0; i < *np; i++) {
			if (strcmp((*addrs)[i].text, value) == 0) {
				cfg_error(p, p->line, key, "%s listed twice",
				    value);
				return;
			}
		}
		*addrs = xreallocarray(*addrs, *np + 1, sizeof **addrs);
		a = &(*addrs)[*np];
		memset(a, 0, sizeof *a);
		if (cfg_addr_parse(value, &a->ss, &a->sslen, &errstr) != 0) {
			cfg_error(p, p->line, key, "bad address \"%s\": %s",
			    value, errstr);
			return;
		}
		a->text = xstrdup(value);
		(*np)++;
		break;
	case CFG_T_PATH:
		if (value[0] != '/') {
			cfg_error(p, p->line, key, "must be an absolute path");
			return;
		}
		free(*sp);
		*sp = xstrdup(value);
		/* "/var/lib/x/" and "/var/lib/x" are the same directory. */
		len = strlen(*sp);
		while (len > 1 && (*sp)[len - 1] == '/')
			(*sp)[--len] = '\0';
		break;
	case CFG_T_TLSFILE:
		cfg_set_tls(p, key, value);
		break;
	case CFG_T_STRING:
		free(*sp);
		*sp = value[0] != '\0' ? xstrdup(value) : NULL;
		break;
	case CFG_T_NAME:
		if (!cfg_name_valid(value)) {
			cfg_error(p, p->line, key, "\"%s\" is not a valid name "
			    "(1 to 64 characters A-Z a-z 0-9 _ . -)", value);
			return;
		}
		free(*sp);
		*sp = xstrdup(value);
		break;
	case CFG_T_DOMAIN:
	case CFG_T_HOST:
		/* Host names are case-insensitive; keep them lowercase. */
		copy = xstrdup(value);
		for (c = copy; *c != '\0'; c++)
			*c = (char)tolower((unsigned char)*c);
		c = copy;
		if (kd->type == CFG_T_HOST && strncmp(c, "*.", 2) == 0)
			c += 2;
		if (!cfg_dns_valid(c)) {
			cfg_error(p, p->line, key, "\"%s\" is not a valid DNS "
			    "name%s", value, kd->type == CFG_T_HOST ?
			    " (or *.name)" : "");
			free(copy);
			return;
		}
		free(*sp);
		*sp = copy;
		break;
	case CFG_T_URL:
		if (strncmp(value, "http://", 7) != 0 &&
		    strncmp(value, "https://", 8) != 0) {
			cfg_error(p, p->line, key, "must start with http:// or "
			    "https://");
			return;
		}
		c = strstr(value, "//") + 2;
		if (*c == '\0' || *c == '/' || strpbrk(value, " \t?#") != NULL) {
			cfg_error(p, p->line, key, "\"%s\" is not a valid base "
			    "URL", value);
			return;
		}
		free(*sp);
		*sp = xstrdup(value);
		len = strlen(*sp);
		while (len > 0 && (*sp)[len - 1] == '/')
			(*sp)[--len] = '\0';
		break;
	case CFG_T_DURATION:
		ms = config_parse_duration(value);
		if (ms < 0) {
			cfg_error(p, p->line, key, "bad duration \"%s\" "
			    "(a number with ms, s, m or h, under 30 days)",
			    value);
			return;
		}
		if (ms < kd->min) {
			cfg_error(p, p->line, key, "must be more than 0");
			return;
		}
		*(int64_t *)(base + kd->off) = ms;
		break;
	case CFG_T_SIZE:
		if (config_parse_size(value, &size) != 0) {
			cfg_error(p, p->line, key, "bad size \"%s\" (a number "
			    "with an optional k, m, g or t)", value);
			return;
		}
		if (size < (uint64_t)kd->min || size > (uint64_t)kd->max) {
			cfg_size_text((uint64_t)kd->min, lo, sizeof lo);
			cfg_size_text((uint64_t)kd->max, hi, sizeof hi);
			cfg_error(p, p->line, key, "%s is out of range (%s to "
			    "%s)", value, lo, hi);
			return;
		}
		*(uint64_t *)(base + kd->off) = size;
		break;
	case CFG_T_INT:
		ll = strtonum_x(value, kd->min, kd->max, &errstr);
		if (errstr != NULL) {
			cfg_error(p, p->line, key, "\"%s\" is %s (expected a "
			    "whole number from %lld to %lld)", value, errstr,
			    kd->min, kd->max);
			return;
		}
		*(int *)(base + kd->off) = (int)ll;
		break;
	case CFG_T_CPUS:
		errno = 0;
		d = strtod(value, &c);
		/* Plain decimals only: no sign, exponent, hex, inf or nan. */
		if (strspn(value, "0123456789.") != strlen(value) ||
		    c == value || *c != '\0' || errno != 0 || !isfinite(d) ||
		    d < 0.01 || d > 1024) {
			cfg_error(p, p->line, key, "\"%s\" is not a number "
			    "from 0.01 to 1024", value);
			return;
		}
		*(double *)(base + kd->off) = d;
		break;
	case CFG_T_BOOL:
		if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 ||
		    strcmp(value, "1") == 0 || strcmp(value, "on") == 0)
			*(int *)(base + kd->off) = 1;
		else if (strcmp(value, "false") == 0 ||
		    strcmp(value, "no") == 0 || strcmp(value, "0") == 0 ||
		    strcmp(value, "off") == 0)
			*(int *)(base + kd->off) = 0;
		else
			cfg_error(p, p->line, key, "\"%s\" is not true or "
			    "false", value);
		break;
	case CFG_T_ACCESSLOG:
		/* "off" leaves it NULL: the edge then never formats a line. */
		free(*sp);
		*sp = NULL;
		if (strcmp(value, "off") == 0)
			break;
		if (strcmp(value, "stderr") != 0 && value[0] != '/') {
			cfg_error(p, p->line, key, "\"%s\" is not off, stderr "
			    "or an absolute path", value);
			return;
		}
		*sp = xstrdup(value);
		break;
	case CFG_T_LOGLEVEL:
		if (strcmp(value, "debug") == 0)
			conf->log_level = LOG_LEVEL_DEBUG;
		else if (strcmp(value, "info") == 0)
			conf->log_level = LOG_LEVEL_INFO;
		else if (strcmp(value, "warn") == 0)
			conf->log_level = LOG_LEVEL_WARN;
		else
			cfg_error(p, p->line, key, "\"%s\" is not debug, info "
			    "or warn", value);
		break;
	case CFG_T_SECRET:
		/* Never echo the secret itself into logs. */
		if (strlen(value) < 32) {
			cfg_error(p, p->line, key, "too short (at least 32 "
			    "characters)");
			return;
		}
		free(*sp);
		*sp = xstrdup(value);
		break;
	case CFG_T_SECRET_HASH:
		/* What "sandboxd key create" prints: sha256:<64 hex>. */
		if (strncmp(value, "sha256:", 7) != 0 ||
		    strlen(value + 7) != DIGEST_SHA256_HEX ||
		    strspn(value + 7, "0123456789abcdefABCDEF") !=
		    DIGEST_SHA256_HEX) {
			cfg_error(p, p->line, key, "expected sha256: and 64 "
			    "hex digits (what \"sandboxd key create\" "
			    "prints)");
			return;
		}
		free(*sp);
		*sp = xstrdup(value + 7);
		for (c = *sp; *c != '\0'; c++)
			*c = (char)tolower((unsigned char)*c);
		break;
	case CFG_T_IMAGE:
		if (value[0] == '\0' || strpbrk(value, " \t") != NULL) {
			cfg_error(p, p->line, key, "must be a Docker image "
			    "reference (non-empty, no spaces)");
			return;
		}
		free(*sp);
		*sp = xstrdup(value);
		break;
	case CFG_T_UPSTREAM:
		r = (struct cfg_route *)base;
		if (strncmp(value, "unix:", 5) == 0) {
			if (value[5] != '/' ||
			    strlen(value + 5) >= sizeof(struct sockaddr_un) -
			    offsetof(struct sockaddr_un, sun_path)) {
				cfg_error(p, p->line, key, "unix: needs an "
				    "absolute socket path of under 108 bytes");
				return;
			}
			r->is_unix = 1;
			r->unix_path = xstrdup(value + 5);
		} else if (cfg_addr_parse(value, &r->ss, &r->sslen,
		    &errstr) != 0) {
			cfg_error(p, p->line, key, "bad upstream \"%s\": %s "
			    "(or unix:/path)", value, errstr);
			return;
		}
		r->upstream = xstrdup(value);
		break;
	case CFG_T_MEMFLOOR:
		cfg_set_memfloor(p, kd, key, value, base);
		break;
	case CFG_T_PORTS:
		cfg_set_ports(p, kd, key, value, base);
		break;
	case CFG_T_EGRESS:
		if (strcmp(value, "public-only") == 0)
			conf->egress = CFG_EGRESS_PUBLIC_ONLY;
		else if (strcmp(value, "open") == 0)
			conf->egress = CFG_EGRESS_OPEN;
		else if (strcmp(value, "none") == 0)
			conf->egress = CFG_EGRESS_NONE;
		else
			cfg_error(p, p->line, key, "\"%s\" is not open, "
			    "public-only or none", value);
		break;
	case CFG_T_CIDRS:
		cfg_set_cidrs(p, kd, key, value, base);
		break;
	case CFG_T_PROVIDER_KIND:
		if (strcmp(value, "anthropic") == 0)
			((struct cfg_provider *)base)->kind =
			    CFG_PROVIDER_ANTHROPIC;
		else if (strcmp(value, "openai") == 0)
			((struct cfg_provider *)base)->kind =
			    CFG_PROVIDER_OPENAI;
		else
			cfg_error(p, p->line, key, "\"%s\" is not anthropic "
			    "or openai", value);
		break;
	case CFG_T_PROVIDER_URL:
		cfg_set_provider_url(p, key, value, base);
		break;
	}
}

/* A list of networks, separated by commas and/or spaces. */
static void
cfg_set_cidrs(struct cfg_parse *p, const struct cfg_keydef *kd,
    const char *key, const char *value, char *base)
{
	struct cfg_cidr	**list = (struct cfg_cidr **)(base + kd->off), c;
	size_t		 *np = (size_t *)(base + kd->off_n), i;
	char		 *copy, *word, *rest;
	const char	 *errstr;

	copy = xstrdup(value);
	for (rest = copy; (word = strsep(&rest, ", \t")) != NULL;) {
		if (*word == '\0')
			continue;
		if (config_parse_cidr(word, &c, &errstr) != 0) {
			cfg_error(p, p->line, key, "bad network \"%s\": %s",
			    word, errstr);
			continue;
		}
		for (i = 0; i < *np; i++) {
			if (strcmp((*list)[i].text, c.text) == 0)
				break;
		}
		if (i < *np) {
			cfg_error(p, p->line, key, "%s listed twice", c.text);
			continue;
		}
		*list = xreallocarray(*list, *np + 1, sizeof **list);
		(*list)[(*np)++] = c;
	}
	free(copy);
}

int
config_parse_cidr(const char *s, struct cfg_cidr *c, const char **errstr)
{
	char		 host[INET6_ADDRSTRLEN + 1], text[INET6_ADDRSTRLEN];
	const char	*slash, *err;
	size_t		 len, nbytes, i;
	long long	 prefix;
	int		 max;

	memset(c, 0, sizeof *c);
	slash = strchr(s, '/');
	len = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (len == 0 || len >= sizeof host) {
		*errstr = "expected an address or address/prefix";
		return (-1);
	}
	memcpy(host, s, len);
	host[len] = '\0';
	if (inet_pton(AF_INET, host, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		*errstr = "not an IPv4 or IPv6 address";
		return (-1);
	}
	if (slash == NULL)
		prefix = max;
	else {
		/* Digits only: strtonum would take "+8" or " 8". */
		if (slash[1] == '\0' || strspn(slash + 1, "0123456789") !=
		    strlen(slash + 1) || strlen(slash + 1) > 3) {
			*errstr = "the prefix length must be a number";
			return (-1);
		}
		prefix = strtonum_x(slash + 1, 0, max, &err);
		if (err != NULL) {
			*errstr = c->family == AF_INET ? "the prefix length "
			    "must be 0-32" : "the prefix length must be 0-128";
			return (-1);
		}
	}
	c->prefix = (int)prefix;
	nbytes = c->family == AF_INET ? 4 : 16;
	for (i = 0; i < nbytes; i++) {
		int	keep = c->prefix - (int)i * 8;
		unsigned char mask = keep >= 8 ? 0xff : keep <= 0 ? 0 :
		    (unsigned char)(0xff << (8 - keep));

		if ((c->addr[i] & ~mask) != 0) {
			*errstr = "host bits are set after the prefix (write "
			    "the network address, e.g. 10.0.0.0/8)";
			return (-1);
		}
	}
	inet_ntop(c->family, c->addr, text, sizeof text);
	snprintf(c->text, sizeof c->text, "%s/%d", text, c->prefix);
	*errstr = NULL;
	return (0);
}

const char *
config_egress_name(enum cfg_egress e)
{
	switch (e) {
	case CFG_EGRESS_OPEN:
		return ("open");
	case CFG_EGRESS_NONE:
		return ("none");
	case CFG_EGRESS_PUBLIC_ONLY:
		break;
	}
	return ("public-only");
}

/*
 * Extract the value that starts at v into out (a buffer as large as the
 * line): a "quoted" value keeps '#' and spaces, an unquoted one ends at a
 * '#' that follows whitespace and loses trailing whitespace. Returns -1 and
 * reports the problem when the value is malformed.
 */
static int
cfg_value(struct cfg_parse *p, const char *key, char *v, char **out)
{
	char	*o = *out, *end;

	if (*v == '"') {
		for (v++; *v != '"'; v++) {
			if (*v == '\0') {
				cfg_error(p, p->line, key, "unterminated quote");
				return -1;
			}
			if (*v == '\\' && (v[1] == '"' || v[1] == '\\'))
				v++;
			*o++ = *v;
		}
		*o = '\0';
		for (v++; *v == ' ' || *v == '\t'; v++)
			;
		if (*v != '\0' && *v != '#') {
			cfg_error(p, p->line, key, "text after the closing "
			    "quote");
			return -1;
		}
		return 0;
	}
	for (end = v; *end != '\0'; end++) {
		/* v follows whitespace after '=', so '#' there is one too. */
		if (*end == '#' && (end == v || end[-1] == ' ' ||
		    end[-1] == '\t'))
			break;
	}
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end == v) {
		cfg_error(p, p->line, key, "missing value");
		return -1;
	}
	memcpy(o, v, (size_t)(end - v));
	o[end - v] = '\0';
	return 0;
}

/* Handle one line (NUL-terminated, no newline). */
static void
cfg_line(struct cfg_parse *p, char *s)
{
	char	 value[CFG_MAX_LINE + 1], *key, *close, *vp = value, *e;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '\0' || *s == '#')
		return;

	if (*s == '[') {
		close = strchr(s, ']');
		if (close == NULL) {
			cfg_error(p, p->line, "[", "section header without "
			    "closing ]");
			return;
		}
		for (e = close + 1; *e == ' ' || *e == '\t'; e++)
			;
		if (*e != '\0' && *e != '#') {
			cfg_error(p, p->line, "[", "text after section "
			    "header");
			return;
		}
		*close = '\0';
		cfg_section_begin(p, s + 1);
		return;
	}

	key = s;
	while (*s != '\0' && *s != '=' && *s != ' ' && *s != '\t')
		s++;
	e = s;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '=') {
		*e = '\0';
		cfg_error(p, p->line, key, "expected \"key = value\"");
		return;
	}
	*e = '\0';
	if (*key == '\0') {
		cfg_error(p, p->line, "=", "missing key before =");
		return;
	}
	for (s++; *s == ' ' || *s == '\t'; s++)
		;
	if (p->scope == CFG_INVALID)
		return;
	if (cfg_value(p, key, s, &vp) != 0)
		return;
	cfg_set(p, key, value);
}

/* The code defaults for every global key. */
static void
cfg_defaults(struct config *conf)
{
	conf->data_dir = xstrdup("/var/lib/sandboxd");
	conf->preview_domain = xstrdup("preview.localhost");
	conf->public_url = xstrdup("http://localhost:8080");
	conf->docker_socket = xstrdup("/var/run/docker.sock");
	conf->network = xstrdup("sandboxd");
	conf->default_template = xstrdup("default");
	conf->agentd_path = xstrdup(SBX_LIBEXECDIR "/agentd");
	conf->console_dir = xstrdup(SBX_DATADIR "/sandboxd/console");
	conf->idle_timeout_ms = 15 * 60 * 1000;
	conf->pause_timeout_ms = 0;
	conf->wake_timeout_ms = 60 * 1000;
	conf->task_timeout_ms = 30 * 60 * 1000;
	conf->shutdown_grace_ms = 10 * 1000;
	conf->max_sandboxes = 500;
	conf->max_running = 40;
	conf->provider_port = 7070;
	conf->max_file_size = 100 * CFG_MIB;
	conf->task_log_max = 64 * CFG_MIB;
	conf->disk_check_interval_ms = 60 * 1000;
	conf->min_free_memory_bytes = 0;
	conf->min_free_memory_pct = 10;
	conf->log_level = LOG_LEVEL_INFO;
	conf->egress = CFG_EGRESS_PUBLIC_ONLY;
	conf->max_connections = 0;
	conf->max_connections_per_ip = 256;
	conf->header_timeout_ms = 30 * 1000;
	conf->keepalive_timeout_ms = 75 * 1000;
	conf->body_timeout_ms = 30 * 1000;
	conf->body_min_rate = 512;
	conf->send_timeout_ms = 60 * 1000;
	conf->send_min_rate = 512;
	conf->response_timeout_ms = 60 * 1000;
	conf->response_idle_timeout_ms = 5 * 60 * 1000;
	conf->tunnel_idle_timeout_ms = 60 * 60 * 1000;
}
/*
 * A provider's upstream: https://HOST[:PORT][/PATH], kept split for the
 * proxy. Only https: the operator's key must never cross a network in
 * clear.
 */
static void
cfg_set_provider_url(struct cfg_parse *p, const char *key, const char *value,
    char *base)
{
	struct cfg_provider	*pv = (struct cfg_provider *)base;
	const char		*h, *e, *slash, *colon, *errstr;
	char			*host, digits[8];
	struct in6_addr		 a6;
	size_t			 len;
	long long		 port = 443;

	if (strncmp(value, "https://", 8) != 0) {
		cfg_error(p, p->line, key, "must start with https:// (the "
		    "operator's key never travels in clear)");
		return;
	}
	h = value + 8;
	if (strpbrk(value, " \t?#@") != NULL) {
		cfg_error(p, p->line, key, "\"%s\" is not a valid https URL "
		    "(no user, query or fragment)", value);
		return;
	}
	slash = strchr(h, '/');
	e = slash != NULL ? slash : h + strlen(h);
	colon = memchr(h, ':', (size_t)(e - h));
	len = (size_t)((colon != NULL ? colon : e) - h);
	host = xmalloc(len + 1);
	memcpy(host, h, len);
	host[len] = '\0';
	if (colon != NULL) {
		len = (size_t)(e - colon - 1);
		if (len == 0 || len > 5 || strspn(colon + 1, "0123456789") <
		    len) {
			cfg_error(p, p->line, key, "bad port in \"%s\"", value);
			free(host);
			return;
		}
		memcpy(digits, colon + 1, len);
		digits[len] = '\0';
		port = strtonum_x(digits, 1, 65535, &errstr);
		if (errstr != NULL) {
			cfg_error(p, p->line, key, "port in \"%s\" is %s",
			    value, errstr);
			free(host);
			return;
		}
	}
	if (!cfg_dns_valid(host) && inet_pton(AF_INET, host, &a6) != 1) {
		cfg_error(p, p->line, key, "\"%s\" has no valid host name",
		    value);
		free(host);
		return;
	}
	free(pv->upstream);
	free(pv->host);
	free(pv->path);
	pv->upstream = xstrdup(value);
	len = strlen(pv->upstream);
	while (len > 8 && pv->upstream[len - 1] == '/')
		pv->upstream[--len] = '\0';
	pv->host = host;
	pv->port = (int)port;
	pv->path = xstrdup(slash != NULL ? slash : "");
	len = strlen(pv->path);
	while (len > 0 && pv->path[len - 1] == '/')
		pv->path[--len] = '\0';
}

/*
 * A provider's key_file: a regular file, readable, not empty, not for
 * group or others. Its content is never put in an error.
 */
static void
cfg_check_key_file(struct cfg_parse *p, const char *path, int line)
{
	struct stat	 sb;
	char		 buf[64];
	ssize_t		 n;
	int		 fd;

	cfg_check_file(p, "key_file", path, line);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return;		/* reported above */
	if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0)
		log_warnx("key_file %s is readable by group or others; "
		    "chmod 600 it", path);
	n = read(fd, buf, sizeof buf);
	close(fd);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
	    buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	explicit_bzero(buf, sizeof buf);
	if (n <= 0)
		cfg_error(p, line, "key_file", "%s: %s", path, n < 0 ?
		    strerror(errno) : "empty (it must hold the provider's "
		    "API key)");
}


/* Check that a file named by key exists and is readable. */
static void
cfg_check_file(struct cfg_parse *p, const char *key, const char *path,
    int line)
{
	struct stat	sb;

	if (stat(path, &sb) == -1) {
		cfg_error(p, line, key, "%s: %s", path, strerror(errno));
		return;
	}
	if (!S_ISREG(sb.st_mode)) {
		cfg_error(p, line, key, "%s: not a regular file", path);
		return;
	}
	if (access(path, R_OK) == -1) {
		cfg_error(p, line, key, "%s: %s", path, strerror(errno));
		return;
	}
	if (strcmp(key, "tls_key") == 0 && (sb.st_mode & 077) != 0)
		log_warnx("tls_key %s is readable by group or others; "
		    "chmod 600 it", path);
}

/*
 * tls_cert or tls_key: the n-th of each make pair n, so several pairs can
 * be listed as cert, key, cert, key (or all certs, then all keys).
 */
static void
cfg_set_tls(struct cfg_parse *p, const char *key, const char *value)
{
	struct config	*conf = p->conf;
	struct cfg_tls	*t;
	size_t		 n, len;
	int		 is_cert = strcmp(key, "tls_cert") == 0;
	char		*path;

	if (value[0] != '/') {
		cfg_error(p, p->line, key, "must be an absolute path");
		return;
	}
	n = is_cert ? p->ncert++ : p->nkey++;
	if (n >= conf->ntls) {
		conf->tls = xreallocarray(conf->tls, n + 1, sizeof *conf->tls);
		memset(&conf->tls[conf->ntls], 0,
		    (n + 1 - conf->ntls) * sizeof *conf->tls);
		conf->ntls = n + 1;
	}
	t = &conf->tls[n];
	path = xstrdup(value);
	len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		path[--len] = '\0';
	if (is_cert) {
		t->cert = path;
		t->cert_line = p->line;
	} else {
		t->key = path;
		t->key_line = p->line;
	}
}

/*
 * TLS keys: every tls_cert has its tls_key, the files are there, a TLS
 * listener has a pair, and redirect_https has a TLS listener to send to.
 */
static void
cfg_validate_tls(struct cfg_parse *p)
{
	struct config	*conf = p->conf;
	struct cfg_tls	*t;
	size_t		 i, j;
	int		 tl_line;

	tl_line = p->gseen[cfg_key_index("tls_listen")];
	if (conf->ntls_listen > 0 || tl_line != 0) {
		if (p->ncert == 0)
			cfg_error(p, tl_line, "tls_cert", "required with "
			    "tls_listen");
		if (p->nkey == 0)
			cfg_error(p, tl_line, "tls_key", "required with "
			    "tls_listen");
	}
	for (i = 0; i < conf->ntls; i++) {
		t = &conf->tls[i];
		if (t->cert != NULL && t->key == NULL &&
		    (p->nkey != 0 || tl_line == 0))
			cfg_error(p, t->cert_line, "tls_cert", "%s has no "
			    "tls_key to pair with (certificate %zu, %zu keys)",
			    t->cert, i + 1, p->nkey);
		if (t->key != NULL && t->cert == NULL)
			cfg_error(p, t->key_line, "tls_key", "%s has no "
			    "tls_cert to pair with (key %zu, %zu "
			    "certificates)", t->key, i + 1, p->ncert);
		for (j = 0; j < i && t->cert != NULL; j++) {
			if (conf->tls[j].cert != NULL &&
			    strcmp(conf->tls[j].cert, t->cert) == 0)
				cfg_error(p, t->cert_line, "tls_cert", "%s "
				    "listed twice (first on line %d)", t->cert,
				    conf->tls[j].cert_line);
		}
		if (t->cert != NULL)
			cfg_check_file(p, "tls_cert", t->cert, t->cert_line);
		if (t->key != NULL)
			cfg_check_file(p, "tls_key", t->key, t->key_line);
	}
	if (conf->ntls > 0) {
		conf->tls_cert = conf->tls[0].cert;
		conf->tls_key = conf->tls[0].key;
	}
	if (conf->redirect_https && conf->ntls_listen == 0)
		cfg_error(p, p->gseen[cfg_key_index("redirect_https")],
		    "redirect_https", "needs a tls_listen to redirect to");
}

/*
 * The preview secret, if it exists already (the daemon makes it at its
 * first start): what control/preview.c refuses at startup, told early.
 */
static void
cfg_check_secret(struct cfg_parse *p, const char *path, int line)
{
	struct stat	sb;

	if (lstat(path, &sb) == -1)
		return;
	if (!S_ISREG(sb.st_mode))
		cfg_error(p, line, "preview_secret_file", "%s: not a regular "
		    "file", path);
	else if ((sb.st_mode & 077) != 0)
		cfg_error(p, line, "preview_secret_file", "%s may be read or "
		    "written by group or others (mode %04o); chmod 600 it",
		    path, (unsigned int)(sb.st_mode & 07777));
	else if (sb.st_size != TOKEN_KEY_LEN)
		cfg_error(p, line, "preview_secret_file", "%s holds %lld "
		    "bytes, not %d", path, (long long)sb.st_size,
		    TOKEN_KEY_LEN);
}

/* Index of a key in cfg_keys, for its seen-line. */
static size_t
cfg_key_index_in(const char *name, enum cfg_scope scope)
{
	size_t	i;

	for (i = 0; i < CFG_NKEYS; i++) {
		if (strcmp(cfg_keys[i].name, name) == 0 &&
		    cfg_keys[i].scope == scope)
			return i;
	}
	fatalx("%s: no key %s", __func__, name);
}

/* The index of a key whose name is in one scope only. */
static size_t
cfg_key_index(const char *name)
{
	size_t	i;

	for (i = 0; i < CFG_NKEYS; i++) {
		if (strcmp(cfg_keys[i].name, name) == 0)
			return i;
	}
	fatalx("%s: no key %s", __func__, name);
}

/* Checks that need the whole file: defaults, cross-key rules. */
static void
cfg_validate(struct cfg_parse *p)
{
	struct config		*conf = p->conf;
	struct cfg_template	*t;
	const char		*d;
	char			 pt[32], it[32];
	uint64_t		 h;

	/* The default listener only when the file names none at all. */
	if (conf->nlisten == 0 && conf->ntls_listen == 0 &&
	    p->gseen[cfg_key_index("listen")] == 0 &&
	    p->gseen[cfg_key_index("tls_listen")] == 0) {
		conf->listen = xcalloc(1, sizeof *conf->listen);
		conf->listen[0].text = xstrdup("127.0.0.1:8080");
		config_parse_addr(conf->listen[0].text, &conf->listen[0].ss,
		    &conf->listen[0].sslen);
		conf->nlisten = 1;
	}
	if (conf->nlisten == 0 && conf->ntls_listen == 0)
		cfg_error(p, p->gseen[cfg_key_index("listen")] != 0 ?
		    p->gseen[cfg_key_index("listen")] :
		    p->gseen[cfg_key_index("tls_listen")], "listen",
		    "no usable listen or tls_listen address");

	cfg_validate_tls(p);

	/*
	 * A sandbox is paused on the way to being stopped; pausing it at or
	 * after the stop would never happen. 0 on either side turns that
	 * step off, so there is nothing to order.
	 */
	if (conf->pause_timeout_ms != 0 && conf->idle_timeout_ms != 0 &&
	    conf->pause_timeout_ms >= conf->idle_timeout_ms) {
		cfg_duration_text(conf->pause_timeout_ms, pt, sizeof pt);
		cfg_duration_text(conf->idle_timeout_ms, it, sizeof it);
		cfg_error(p, p->gseen[cfg_key_index("pause_timeout")],
		    "pause_timeout", "%s must be less than idle_timeout (%s)",
		    pt, it);
	}

	if (conf->preview_secret_file == NULL)
		xasprintf(&conf->preview_secret_file, "%s/preview-secret",
		    strcmp(conf->data_dir, "/") == 0 ? "" : conf->data_dir);
	cfg_check_secret(p, conf->preview_secret_file,
	    p->gseen[cfg_key_index("preview_secret_file")]);

	/* A file with no [template] gets the stock one. */
	if (p->ntemplate_sections == 0) {
		conf->templates = xcalloc(1, sizeof *conf->templates);
		t = &conf->templates[0];
		cfg_template_defaults(t, "default");
		t->image = xstrdup("sandboxd/base:latest");
		t->dev_command = xstrdup("npm run dev -- --host 0.0.0.0 "
		    "--port 3000");
		t->seed_dir = xstrdup("/usr/share/sandboxd/templates/"
		    "vite-react");
		conf->ntemplates = 1;
	}
	if (config_template(conf, conf->default_template) == NULL)
		cfg_error(p, p->gseen[cfg_key_index("default_template")],
		    "default_template", "no [template %s] is defined",
		    conf->default_template);

	/*
	 * The instance label tells our containers from another daemon's;
	 * derive it from data_dir so two daemons never share one by accident.
	 */
	if (conf->instance == NULL) {
		h = 0xcbf29ce484222325ULL;
		for (d = conf->data_dir; *d != '\0'; d++) {
			h ^= (unsigned char)*d;
			h *= 0x100000001b3ULL;
		}
		xasprintf(&conf->instance, "sbx-%012llx",
		    (unsigned long long)(h & 0xffffffffffffULL));
	}
}

/* Parse text[0..len) as a config named name. */
static struct config *
cfg_parse_buf(const char *name, const char *text, size_t len, char **errors)
{
	struct cfg_parse	 p;
	struct config		*conf;
	char			 buf[CFG_MAX_LINE + 1];
	const char		*s = text, *end = text + len, *nl;
	size_t			 n;

	memset(&p, 0, sizeof p);
	conf = xcalloc(1, sizeof *conf);
	conf->path = xstrdup(name);
	cfg_defaults(conf);
	p.file = name;
	p.conf = conf;
	p.scope = CFG_GLOBAL;

	while (s < end) {
		p.line++;
		nl = memchr(s, '\n', (size_t)(end - s));
		n = (nl != NULL ? nl : end) - s;
		/* CRLF files are common enough to accept. */
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (n > CFG_MAX_LINE)
			cfg_error(&p, p.line, "line", "longer than %d bytes",
			    CFG_MAX_LINE);
		else if (memchr(s, '\0', n) != NULL)
			cfg_error(&p, p.line, "line", "contains a NUL byte");
		else if (!cfg_utf8_valid((const unsigned char *)s, n))
			cfg_error(&p, p.line, "line", "invalid UTF-8");
		else {
			memcpy(buf, s, n);
			buf[n] = '\0';
			cfg_line(&p, buf);
		}
		if (nl == NULL)
			break;
		s = nl + 1;
	}
	cfg_section_end(&p);
	cfg_validate(&p);

	if (p.nerrs > 0) {
		config_free(conf);
		*errors = cfg_error_text(&p);
		return NULL;
	}
	*errors = NULL;
	return conf;
}

/* Parse and validate a config from NUL-terminated text. */
struct config *
config_parse(const char *name, const char *text, char **errors)
{
	return cfg_parse_buf(name, text, strlen(text), errors);
}

/* Load and validate a config file, or the embedded default if path NULL. */
struct config *
config_load(const char *path, char **errors)
{
	struct config	*conf = NULL;
	struct stat	 sb;
	char		*text = NULL;
	size_t		 got = 0;
	ssize_t		 n;
	int		 fd;

	if (path == NULL)
		return config_parse(CFG_EMBEDDED_NAME, config_embedded, errors);

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		xasprintf(errors, "%s:0: cannot open: %s\n", path,
		    strerror(errno));
		return NULL;
	}
	if (fstat(fd, &sb) == -1) {
		xasprintf(errors, "%s:0: cannot stat: %s\n", path,
		    strerror(errno));
		goto done;
	}
	if (!S_ISREG(sb.st_mode)) {
		xasprintf(errors, "%s:0: cannot read: not a regular file\n",
		    path);
		goto done;
	}
	if (sb.st_size > CFG_MAX_FILE) {
		xasprintf(errors, "%s:0: cannot read: larger than %d bytes\n",
		    path, CFG_MAX_FILE);
		goto done;
	}
	/* Read to EOF, not st_size bytes: the file may change under us. */
	text = xmalloc(CFG_MAX_FILE + 1);
	for (;;) {
		n = read(fd, text + got, CFG_MAX_FILE + 1 - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			xasprintf(errors, "%s:0: cannot read: %s\n", path,
			    strerror(errno));
			goto done;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > CFG_MAX_FILE) {
			xasprintf(errors, "%s:0: cannot read: larger than %d "
			    "bytes\n", path, CFG_MAX_FILE);
			goto done;
		}
	}
	conf = cfg_parse_buf(path, text, got, errors);
done:
	free(text);
	close(fd);
	return conf;
}

/* Free a config and everything it owns. */
void
config_free(struct config *conf)
{
	size_t	i;

	if (conf == NULL)
		return;
	free(conf->path);
	for (i = 0; i < conf->nlisten; i++)
		free(conf->listen[i].text);
	free(conf->listen);
	for (i = 0; i < conf->ntls_listen; i++)
		free(conf->tls_listen[i].text);
	free(conf->tls_listen);
	for (i = 0; i < conf->ntls; i++) {
		free(conf->tls[i].cert);
		free(conf->tls[i].key);
	}
	free(conf->tls);
	free(conf->data_dir);
	free(conf->access_log);
	free(conf->preview_secret_file);
	free(conf->preview_domain);
	free(conf->public_url);
	free(conf->docker_socket);
	free(conf->network);
	free(conf->default_template);
	free(conf->agentd_path);
	free(conf->console_dir);
	free(conf->instance);
	free(conf->egress_allow);
	for (i = 0; i < conf->napi_keys; i++) {
		free(conf->api_keys[i].name);
		if (conf->api_keys[i].secret != NULL) {
			explicit_bzero(conf->api_keys[i].secret,
			    strlen(conf->api_keys[i].secret));
			free(conf->api_keys[i].secret);
		}
		free(conf->api_keys[i].secret_hash);
	}
	free(conf->api_keys);
	for (i = 0; i < conf->ntemplates; i++) {
		free(conf->templates[i].name);
		free(conf->templates[i].image);
		free(conf->templates[i].dev_command);
		free(conf->templates[i].seed_dir);
		free(conf->templates[i].ports);
	}
	free(conf->templates);
	for (i = 0; i < conf->nroutes; i++) {
		free(conf->routes[i].name);
		free(conf->routes[i].host);
		free(conf->routes[i].upstream);
		free(conf->routes[i].unix_path);
	}
	free(conf->routes);
	for (i = 0; i < conf->nproviders; i++) {
		free(conf->providers[i].name);
		free(conf->providers[i].upstream);
		free(conf->providers[i].host);
		free(conf->providers[i].path);
		free(conf->providers[i].key_file);
		free(conf->providers[i].ca_file);
	}
	free(conf->providers);
	free(conf);
}

/*
 * 1 if <port>-<id> may reach port: the template's own port, or one of
 * its ports (1024-65535 when it lists none).
 */
int
config_port_allowed(const struct cfg_template *t, int port)
{
	size_t	i;

	if (t != NULL && port == t->port)
		return 1;
	if (t == NULL || t->nports == 0)
		return port >= 1024 && port <= 65535;
	for (i = 0; i < t->nports; i++) {
		if (port >= t->ports[i].lo && port <= t->ports[i].hi)
			return 1;
	}
	return 0;
}

/* The template with this name, or NULL. */
const struct cfg_template *
config_template(const struct config *conf, const char *name)
{
	size_t	i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < conf->ntemplates; i++) {
		if (strcmp(conf->templates[i].name, name) == 0)
			return &conf->templates[i];
	}
	return NULL;
}
