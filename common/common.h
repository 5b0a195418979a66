/*
 * common/ — the small pieces every module shares: logging, allocation,
 * time, ids, the configuration file, HTTP/1.1 parsing and the API exchange
 * object that edge hands to control.
 *
 * Nothing here knows about Docker, SQLite or sockets of a particular module.
 */
#ifndef SBX_COMMON_H
#define SBX_COMMON_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define SBX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define SBX_NORETURN __attribute__((noreturn))
#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/* common/log.c */
/*
 * Logs go to stderr, one event a line, logfmt style:
 *   ts=2026-11-27T10:00:00.123Z level=info msg="..." key=value
 * A message may carry extra key=value pairs after the text: pass them in the
 * format after a tab ("created\tid=%s"); everything before the tab is quoted
 * as msg=, everything after is appended verbatim.
 */
enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN };
void	log_init(enum log_level min_level);
void	log_debug(const char *, ...) SBX_PRINTF(1, 2);
void	log_info(const char *, ...) SBX_PRINTF(1, 2);
void	log_warn(const char *, ...) SBX_PRINTF(1, 2);	/* adds strerror(errno) */
void	log_warnx(const char *, ...) SBX_PRINTF(1, 2);
void	fatal(const char *, ...) SBX_PRINTF(1, 2) SBX_NORETURN;
void	fatalx(const char *, ...) SBX_PRINTF(1, 2) SBX_NORETURN;
/* The last warning lines (at most 8), oldest first; static storage. */
size_t	log_recent(const char **lines, size_t max);

/* common/util.c */
/* Allocation wrappers: abort via fatalx on out-of-memory, never return NULL. */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
int	 xasprintf(char **, const char *, ...) SBX_PRINTF(2, 3);
/* Bounded integer conversion; returns 0 and sets *errstr on failure. */
long long strtonum_x(const char *, long long, long long, const char **errstr);
/* Milliseconds since the epoch (wall clock) and a monotonic clock. */
int64_t	 time_now_ms(void);
int64_t	 time_mono_ms(void);
/* RFC 3339 UTC with seconds ("2026-11-27T10:00:00Z"); buf >= 21 bytes. */
void	 time_format_rfc3339(int64_t ms, char *buf, size_t len);
/* Constant-time comparison of two byte strings; lengths may differ. */
int	 timingsafe_eq(const void *, size_t, const void *, size_t);
/* Fill buf with len bytes from the kernel's CSPRNG; fatal on failure. */
void	 random_bytes(void *, size_t);
/* mkdir -p with the given mode for each created component; -1 on error. */
int	 mkdir_p(const char *, mode_t);

/* common/notify.c — sd_notify(3) by hand: a datagram to $NOTIFY_SOCKET */
struct event_base;
/* Read (and unset) NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID; call first. */
void	 notify_init(void);
/* READY=1, RELOADING=1, STOPPING=1; nothing without NOTIFY_SOCKET. */
void	 notify_ready(void);
void	 notify_reloading(void);
void	 notify_stopping(void);
/* STATUS=<one line>, shown by systemctl status. */
void	 notify_status(const char *, ...) SBX_PRINTF(1, 2);
/*
 * WATCHDOG=1 from a timer on base every half WATCHDOG_USEC; returns that
 * period in ms, or 0 when the manager asked for no watchdog.
 */
int64_t	 notify_watchdog_start(struct event_base *);
/* Free the timer and the socket; before event_base_free. */
void	 notify_free(void);

/* common/digest.c */
#define DIGEST_SHA256_HEX	64
/* SHA-256 of data as lowercase hex, NUL-terminated in out[65]. */
void	 digest_sha256_hex(const void *, size_t,
	    char out[DIGEST_SHA256_HEX + 1]);

/* common/id.c */
#define ID_LEN 26
/* A new lowercase ULID (Crockford base32), NUL-terminated in out[27]. */
void	id_new(char out[ID_LEN + 1]);
/* 1 if s is exactly a lowercase ULID as id_new makes them, else 0. */
int	id_valid(const char *s, size_t len);

/* common/config.c */
struct cfg_addr {
	char			*text;		/* as written: "127.0.0.1:8080", "[::]:80" */
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
};

/* What sandboxes may reach (control/egress.c, docs/network.md). */
enum cfg_egress {
	CFG_EGRESS_PUBLIC_ONLY,	/* the default: the internet, no private ranges */
	CFG_EGRESS_OPEN,	/* anything but the host and other sandboxes */
	CFG_EGRESS_NONE,	/* nothing but egress_allow (no DNS either) */
};

/* One egress_allow entry: a network in CIDR form, host bits clear. */
struct cfg_cidr {
	int		 family;	/* AF_INET or AF_INET6 */
	unsigned char	 addr[16];	/* network byte order; 4 used for v4 */
	int		 prefix;	/* 0-32 or 0-128 */
	char		 text[64];	/* canonical: "10.0.0.0/8", "fd00::/8" */
};

struct cfg_api_key {
	char	*name;		/* the tenant */
	char	*secret;	/* NULL when the config gives secret_hash */
	char	*secret_hash;	/* SHA-256 of the secret, 64 lowercase hex */
	int	 admin;
	/* The tenant's ceilings; 0: the global one (counts) or the default. */
	int	 max_sandboxes;
	int	 max_running;
	int	 max_memory_mb;	/* the most one sandbox may ask for */
	double	 max_cpus;
};

/* A range of ports, both ends included. */
struct cfg_port_range {
	int		 lo;
	int		 hi;
};

struct cfg_template {
	char		*name;
	char		*image;
	int		 port;
	/* What <port>-<id> may reach, besides port; nports 0: 1024-65535. */
	struct cfg_port_range *ports;
	size_t		 nports;
	char		*dev_command;	/* NULL: none */
	char		*seed_dir;	/* NULL: none */
	uint64_t	 memory;	/* bytes */
	double		 cpus;
	int		 pids_limit;
	uint64_t	 disk;		/* workspace + home ceiling, bytes; 0: none */
};

enum cfg_provider_kind {
	CFG_PROVIDER_ANTHROPIC,	/* x-api-key, ANTHROPIC_* env */
	CFG_PROVIDER_OPENAI,	/* Authorization: Bearer, OPENAI_* env */
};

/*
 * A [provider NAME]: the credential proxy serves it at /NAME/ on the
 * sandbox bridge's gateway (docs/providers.md). The key itself is not
 * kept here: control/provider.c reads key_file at start and on SIGHUP.
 */
struct cfg_provider {
	char			*name;
	enum cfg_provider_kind	 kind;
	char			*upstream;	/* as written, no trailing / */
	char			*host;		/* from upstream */
	int			 port;		/* from upstream; 443 */
	char			*path;		/* upstream's path, "" or "/v1" */
	char			*key_file;
	char			*ca_file;	/* NULL: OpenSSL's default paths */
};

struct cfg_route {
	char	*name;
	char	*host;		/* exact "app.example.com" or "*.example.com" */
	char	*upstream;	/* as written */
	int	 is_unix;
	char	*unix_path;	/* when is_unix */
	struct sockaddr_storage ss;	/* when !is_unix */
	socklen_t sslen;
};

/*
 * A certificate chain and its key: the n-th tls_cert pairs with the n-th
 * tls_key. The lines say where they were set, for errors found later
 * (a key that does not match its certificate is found by edge/tls.c).
 */
struct cfg_tls {
	char	*cert;
	char	*key;
	int	 cert_line;
	int	 key_line;
};

struct config {
	char			*path;		/* file it came from; "(embedded default)" */
	struct cfg_addr		*listen;
	size_t			 nlisten;
	struct cfg_addr		*tls_listen;
	size_t			 ntls_listen;
	struct cfg_tls		*tls;		/* in file order; [0] is the default */
	size_t			 ntls;
	char			*tls_cert;	/* tls[0].cert, or NULL */
	char			*tls_key;	/* tls[0].key, or NULL */
	int			 redirect_https;	/* plain listeners send 308 */
	char			*data_dir;
	char			*preview_secret_file;	/* default data_dir/preview-secret */
	char			*preview_domain;
	char			*public_url;	/* no trailing slash */
	char			*docker_socket;
	char			*network;
	char			*default_template;
	char			*agentd_path;	/* host path of the static agentd */
	char			*console_dir;	/* the console's files (edge/console.c) */
	char			*instance;	/* label value that marks our containers */
	int64_t			 idle_timeout_ms;
	int64_t			 pause_timeout_ms;	/* 0: never pause */
	int64_t			 wake_timeout_ms;
	int64_t			 task_timeout_ms;	/* a task's default timeout_s */
	int64_t			 shutdown_grace_ms;
	int			 max_sandboxes;
	int			 max_running;
	uint64_t		 max_file_size;	/* PUT /files limit, bytes */
	uint64_t		 task_log_max;	/* a task's event log, bytes */
	int64_t			 disk_check_interval_ms;	/* 0: never */
	/*
	 * Starts and wakes are refused below this much available host
	 * memory: a size, or a percentage of the host's. At most one is
	 * non-zero; both 0 means no floor.
	 */
	uint64_t		 min_free_memory_bytes;
	int			 min_free_memory_pct;
	enum log_level		 log_level;	/* lowest level logged */
	char			*access_log;	/* NULL: off; "stderr"; a path */
	enum cfg_egress		 egress;
	struct cfg_cidr		*egress_allow;	/* allowed whatever egress says */
	size_t			 negress_allow;
	/*
	 * The edge's limits and timeouts (docs/limits.md). In a config
	 * built by hand (tests), 0 for one of the timeouts that cannot be
	 * off means edge's built-in default.
	 */
	int			 max_connections;	/* 0: from RLIMIT_NOFILE */
	int			 max_connections_per_ip;	/* 0: no cap */
	int64_t			 header_timeout_ms;
	int64_t			 keepalive_timeout_ms;
	int64_t			 body_timeout_ms;	/* the min-rate window */
	uint64_t		 body_min_rate;		/* bytes/s; 0: none */
	int64_t			 send_timeout_ms;	/* the min-rate window */
	uint64_t		 send_min_rate;		/* bytes/s; 0: none */
	int64_t			 response_timeout_ms;
	int64_t			 response_idle_timeout_ms;	/* 0: never */
	int64_t			 tunnel_idle_timeout_ms;	/* 0: never */
	struct cfg_api_key	*api_keys;
	size_t			 napi_keys;
	struct cfg_template	*templates;
	size_t			 ntemplates;
	struct cfg_route	*routes;
	size_t			 nroutes;
	struct cfg_provider	*providers;
	size_t			 nproviders;
	int			 provider_port;	/* on the bridge gateway */
};

#define CONFIG_DEFAULT_PATH "/etc/sandboxd/sandboxd.conf"

/*
 * Load and validate a config file. path NULL loads the embedded default.
 * Returns the config, or NULL with *errors set to a malloc'd text of one line
 * per problem ("FILE:LINE: KEY: message\n"), every problem found, not only
 * the first. The caller frees *errors.
 */
struct config	*config_load(const char *path, char **errors);
/* Same, from text in memory (used by tests and the embedded default). */
struct config	*config_parse(const char *name, const char *text, char **errors);
void		 config_free(struct config *);
const struct cfg_template *config_template(const struct config *, const char *);
/* 1 if <port>-<id> may reach port under t (NULL: the default ports). */
int		 config_port_allowed(const struct cfg_template *, int port);
/* Parse "15m", "60s", "250ms", "2h", "0" to milliseconds; -1 on error. */
int64_t		 config_parse_duration(const char *);
/* Parse "1g", "512m", "64k", "1024" to bytes; returns 0 on success. */
int		 config_parse_size(const char *, uint64_t *);
/*
 * Parse "10.0.0.0/8", "203.0.113.7" (a /32), "fd00::/8", "::1" (a /128).
 * Host bits must be clear. 0, or -1 with *errstr (static text) set.
 */
int		 config_parse_cidr(const char *, struct cfg_cidr *,
		     const char **errstr);
/* "public-only", "open" or "none". */
const char	*config_egress_name(enum cfg_egress);
/* Parse "host:port", "[v6]:port" into ss; returns 0 on success. */
int		 config_parse_addr(const char *, struct sockaddr_storage *,
		     socklen_t *);

/* common/http.c — incremental, copy-free HTTP/1.1 parsing */
#define HTTP_MAX_HEADERS	100
#define HTTP_MAX_HEAD_SIZE	(64 * 1024)

struct http_header {
	const char	*name;
	size_t		 name_len;
	const char	*value;		/* leading/trailing OWS stripped */
	size_t		 value_len;
};

struct http_request_head {
	const char		*method;
	size_t			 method_len;
	const char		*target;	/* request-target as sent */
	size_t			 target_len;
	int			 minor_version;	/* 0 or 1 */
	struct http_header	 headers[HTTP_MAX_HEADERS];
	size_t			 nheaders;
};

struct http_response_head {
	int			 minor_version;
	int			 status;
	const char		*reason;
	size_t			 reason_len;
	struct http_header	 headers[HTTP_MAX_HEADERS];
	size_t			 nheaders;
};

/*
 * Parse a request or response head from buf[0..len). Returns the number of
 * bytes the head takes (through the blank line), -2 if more bytes are needed,
 * -1 if the bytes can never form a valid head (bad token, NUL byte, bare CR,
 * over HTTP_MAX_HEADERS headers, over HTTP_MAX_HEAD_SIZE). Pointers in the
 * result point into buf.
 * Each call parses from buf[0] again, so a caller collecting a head should
 * call again only when the new bytes hold a '\n' (a head cannot end
 * otherwise): that bounds the work to about one parse per line.
 * Requests need CRLF line ends; responses also accept a bare LF. Obs-fold
 * is refused in both. Empty lines before a request line are skipped (and
 * counted in the return value).
 */
int	http_parse_request(const char *buf, size_t len,
	    struct http_request_head *);
int	http_parse_response(const char *buf, size_t len,
	    struct http_response_head *);

/* First header with this name (case-insensitive), or NULL. */
const struct http_header *http_header_find(const struct http_header *,
	    size_t, const char *name);
/* 1 if the comma-separated header value contains token (case-insensitive). */
int	http_header_has_token(const struct http_header *, const char *token);

/*
 * How a message body is framed, from its head (RFC 9112 section 6).
 * Returns 0, or -1 for a head that must be refused: both Content-Length and
 * Transfer-Encoding, differing Content-Length values, a malformed length
 * (only digits, at most INT64_MAX), Transfer-Encoding in HTTP/1.0, "chunked"
 * anywhere but last. A request's Transfer-Encoding must be exactly
 * "chunked"; a response's without "chunked" is read until close.
 * Content-Length: 0 gives HTTP_BODY_LENGTH with *length 0; *length is 0 for
 * the other kinds.
 */
enum http_body_kind {
	HTTP_BODY_NONE,		/* no body */
	HTTP_BODY_LENGTH,	/* *length bytes */
	HTTP_BODY_CHUNKED,	/* chunked transfer coding */
	HTTP_BODY_UNTIL_CLOSE	/* responses only: read until EOF */
};
int	http_request_body(const struct http_request_head *,
	    enum http_body_kind *, uint64_t *length);
/* request_method: the method the response answers (HEAD has no body). */
int	http_response_body(const struct http_response_head *,
	    const char *request_method, enum http_body_kind *, uint64_t *length);

/*
 * Incremental chunked-coding scanner. Feed it bytes as they come; it finds
 * where the message ends and hands each payload span to on_data (which may be
 * NULL when the bytes are only passed through). Returns the number of bytes
 * consumed (less than len only when the message ended inside buf), or -1 on a
 * framing error. c->done is set once the last chunk and trailers are read.
 * Lines must end in CRLF; chunk sizes up to INT64_MAX; size lines (with
 * extensions, which are ignored) up to 4096 bytes; trailers, which are
 * skipped, up to HTTP_MAX_HEAD_SIZE, each a valid field and none of those
 * that frame, route or attribute a message (Content-Length, Host, ...;
 * see http.c). After -1 it keeps returning -1; once done it returns 0.
 */
#define HTTP_TRAILER_NAME_MAX	19	/* the longest refused name */
struct http_chunked {
	int		state;
	uint64_t	remaining;
	size_t		line_len;	/* bytes in the current size line or name */
	int		done;
	char		name[HTTP_TRAILER_NAME_MAX];	/* a trailer's, lowercased */
	/*
	 * Set by the caller to get the trailer lines ("name: value\r\n",
	 * as sent and checked), with the scan's arg; NULL drops them.
	 */
	void		(*on_trailer)(void *arg, const char *, size_t);
};
typedef void (*http_data_cb)(void *arg, const char *, size_t);
void	 http_chunked_init(struct http_chunked *);
ssize_t	 http_chunked_scan(struct http_chunked *, const char *buf, size_t len,
	    http_data_cb on_data, void *arg);

/*
 * "%XX" decoding of a path ('+' stays '+'). On success *out is a malloc'd
 * NUL-terminated string the caller frees, and the decoded length is
 * returned; -1 (and *out NULL) on a bad or short escape or a NUL, encoded
 * or raw.
 */
int	 http_url_decode(const char *in, size_t len, char **out);
/* Reason phrase for a status code, "Unknown" for codes we do not send. */
const char *http_status_text(int);

/* common/cookie.c — Set-Cookie, Cookie and query rewriting (previews) */
/*
 * Each reads in[0..len) and writes to out (room for len bytes) only when
 * something changes; see cookie.c. Set-Cookie minus its Domain
 * attributes: 1 and out[0..*outlen), or 0 if it has none.
 */
int	 http_setcookie_strip_domain(const char *in, size_t len, char *out,
	    size_t *outlen);
/* The next cookie called name from *pos: 1 and its value, or 0. */
int	 http_cookie_next(const char *in, size_t len, size_t *pos,
	    const char *name, size_t nlen, const char **val, size_t *vlen);
/* A Cookie value without the cookies called name: how many went. */
int	 http_cookie_remove(const char *in, size_t len, const char *name,
	    size_t nlen, char *out, size_t *outlen);
/* A request target without the query parameters called name. */
int	 http_query_remove(const char *in, size_t len, const char *name,
	    size_t nlen, char *out, size_t *outlen, const char **val,
	    size_t *vlen);

/* common/token.c — preview tokens "v1.<id>.<expiry>.<mac>" */
#define TOKEN_MAX_LEN		128
#define TOKEN_KEY_LEN		32	/* bytes in preview_secret_file */
size_t	 token_make(const uint8_t *key, size_t keylen, const char *id,
	    int64_t expires, char *out, size_t size);
int	 token_parse(const char *tok, size_t len, char *id, int64_t *expires);
int	 token_verify(const uint8_t *key, size_t keylen, const char *tok,
	    size_t len, const char *id, int64_t now, int64_t *expires,
	    const char **why);

/* common/exchange.c — one API request from edge, answered by control */
struct evbuffer;
struct http_exchange;

/*
 * The transport (edge) fills in the request and the send hook; the handler
 * (control) reads the request and answers exactly once with one of the
 * http_exchange_reply* calls, now or later from a callback. If the client
 * goes away first, edge calls http_exchange_detach: the handler still
 * replies (the reply is dropped) and that reply frees the exchange.
 */
struct http_exchange_transport {
	void	(*send)(void *conn, struct http_exchange *);
	/*
	 * A streamed answer (http_exchange_stream_*): the head with the
	 * headers added so far and no length; body bytes, answering 1 when
	 * the client has more than its high mark queued (backpressure);
	 * the end. The transport frames the body for its protocol.
	 */
	void	(*stream_head)(void *conn, struct http_exchange *);
	int	(*stream_write)(void *conn, struct http_exchange *,
		    const void *, size_t);
	void	(*stream_end)(void *conn, struct http_exchange *);
	/*
	 * An upgraded answer (http_exchange_upgrade): the 101 head, then
	 * the client's bytes as they come; -1 if the protocol cannot
	 * (HTTP/1.0, HTTP/2). pause stops (1) or resumes (0) reading the
	 * client. Writes and the end go through stream_write, stream_end.
	 */
	int	(*upgrade_head)(void *conn, struct http_exchange *);
	void	(*upgrade_pause)(void *conn, struct http_exchange *, int);
};

/*
 * A streamed answer's notices to its handler, always from the event loop
 * and never from inside an http_exchange_stream_* call: drain, the
 * client took everything queued (write again after a 1); gone, the
 * client left (called once; write no more, and end the stream, at once
 * or later, to free the exchange).
 */
typedef void (*http_exchange_stream_cb)(struct http_exchange *, void *arg);
/* An upgraded answer's client bytes: take what you can from in. */
typedef void (*http_exchange_data_cb)(struct http_exchange *,
		    struct evbuffer *in, void *arg);

struct http_exchange {
	/* request, owned by the exchange */
	char			*method;
	char			*path;		/* target up to '?', still %-encoded */
	char			*query;		/* after '?', or NULL */
	char			**hdr_names;	/* lowercased */
	char			**hdr_values;
	size_t			 nhdrs;
	struct evbuffer		*body;
	char			 peer[64];	/* "ip:port" of the client */
	int			 is_tls;

	/* response, filled by the reply calls */
	int			 status;
	char			**resp_hdr_names;
	char			**resp_hdr_values;
	size_t			 nresp_hdrs;
	struct evbuffer		*resp_body;

	/* transport plumbing */
	const struct http_exchange_transport *transport;
	void			*conn;		/* NULL once detached */
	int			 replied;
	int64_t			 started_ms;	/* monotonic */

	/* a streamed answer (http_exchange_stream_begin) */
	int			 streaming;
	http_exchange_stream_cb	 drain_cb;
	http_exchange_stream_cb	 gone_cb;
	void			*stream_arg;
	http_exchange_data_cb	 data_cb;	/* upgraded */
	int			 stream_cut;	/* end it as failed */

	/*
	 * A request body taken as it arrives (http_exchange_body_take):
	 * control sets body_streams when it is asked for the body limit,
	 * and edge then dispatches at the head, body_complete set once all
	 * of it is in body.
	 */
	int			 body_streams;
	int			 body_complete;
	http_exchange_data_cb	 body_cb;
	http_exchange_stream_cb	 body_gone_cb;
	void			*body_arg;
};

struct http_exchange *http_exchange_new(void);
void	 http_exchange_free(struct http_exchange *);
const char *http_exchange_header(const struct http_exchange *, const char *);
/* Value of query parameter name (decoded, malloc'd), or NULL. */
char	*http_exchange_query(const struct http_exchange *, const char *name);
/* Add a response header (before replying). */
void	 http_exchange_add_header(struct http_exchange *, const char *,
	    const char *);
/* Answer with a body (copied); ctype NULL means no Content-Type. */
void	 http_exchange_reply(struct http_exchange *, int status,
	    const char *ctype, const void *body, size_t len);
/* Answer with the contents of an evbuffer (drained into the response). */
void	 http_exchange_reply_buffer(struct http_exchange *, int status,
	    const char *ctype, struct evbuffer *);
/* Answer with a JSON text. */
void	 http_exchange_reply_json(struct http_exchange *, int status,
	    const char *json);
/* Answer with the API error body {"error":{"code","message"}}. */
void	 http_exchange_reply_error(struct http_exchange *, int status,
	    const char *code, const char *fmt, ...) SBX_PRINTF(4, 5);
void	 http_exchange_detach(struct http_exchange *);
/*
 * Answer with a stream instead (Server-Sent Events): send the head now
 * (status, ctype, the headers added so far; no length, unless one of them
 * is a Content-Length: the body must then be exactly that long, or cut
 * with http_exchange_stream_cut), then body bytes
 * as they come with http_exchange_stream_write, then
 * http_exchange_stream_end, which frees the exchange. drain and gone may
 * be NULL (see http_exchange_stream_cb). -1 if the client already left:
 * the exchange is freed then. Only transports with stream hooks stream;
 * others get a 501.
 */
int	 http_exchange_stream_begin(struct http_exchange *, int status,
	    const char *ctype, http_exchange_stream_cb drain,
	    http_exchange_stream_cb gone, void *arg);
/*
 * Queue body bytes (copied): 0, or 1 when the client is over its high
 * mark (stop and wait for drain: the source pauses, so a slow client
 * never balloons memory), -1 when the client left (nothing queued).
 */
int	 http_exchange_stream_write(struct http_exchange *, const void *,
	    size_t);
/* End the streamed answer and free the exchange (also after gone). */
void	 http_exchange_stream_end(struct http_exchange *);
/*
 * End a streamed answer as failed and free the exchange: the client sees
 * it cut off (HTTP/1.1: the connection closes before the last chunk;
 * HTTP/2: RST_STREAM), never a short body that looks whole.
 */
void	 http_exchange_stream_cut(struct http_exchange *);
/*
 * Take a body_streams request's body as it comes: data gets ex->body
 * each time bytes arrived (drain what you take) and once more with
 * ex->body_complete set; gone, if the request ends before the body does
 * (the client left, or edge refused the body: too large, too slow,
 * malformed): the exchange is detached, answer it to free it. Neither is
 * called from inside an http_exchange_* call but http_exchange_body_pause.
 * Answering before the body is complete closes the connection after.
 */
void	 http_exchange_body_take(struct http_exchange *,
	    http_exchange_data_cb data, http_exchange_stream_cb gone,
	    void *arg);
/* Stop (1) or resume (0) reading the body; a resume may call data. */
void	 http_exchange_body_pause(struct http_exchange *, int);
/* The transport: the body's request ended before the body (edge calls). */
void	 http_exchange_body_gone(struct http_exchange *);
/* The transport: the client drained our output / left (edge calls). */
void	 http_exchange_stream_drained(struct http_exchange *);
void	 http_exchange_stream_gone(struct http_exchange *);
/*
 * Answer with 101 Switching Protocols (the headers added so far) and
 * take the connection's bytes both ways: the client's come to data (in
 * holds what is unread; what is left stays for the next call),
 * ours go with http_exchange_stream_write (raw, 1: over the high mark,
 * wait for drain), http_exchange_stream_end closes the connection and
 * frees the exchange; gone as for a stream. -1 if the client left (the
 * exchange is freed) or the transport cannot upgrade (a 501 answered).
 */
int	 http_exchange_upgrade(struct http_exchange *,
	    http_exchange_data_cb data, http_exchange_stream_cb drain,
	    http_exchange_stream_cb gone, void *arg);
/*
 * Stop (1) or resume (0) reading the upgraded client: backpressure. A
 * resume hands over the bytes already waiting at once: data may run
 * (and end the exchange) before this returns.
 */
void	 http_exchange_upgrade_pause(struct http_exchange *, int);
/* The transport: client bytes of an upgraded answer (edge calls). */
void	 http_exchange_upgrade_data(struct http_exchange *, struct evbuffer *);

/* common/hist.c */
/*
 * A latency histogram for /metrics: cumulative counts over fixed upper
 * bounds in milliseconds (bounds[] ends with a 0 sentinel, at most
 * HIST_MAX of them), written in Prometheus text format in seconds.
 */
#define HIST_MAX	16
struct hist {
	const int64_t	*bounds;	/* ms, ascending, 0-terminated */
	uint64_t	 le[HIST_MAX];	/* observations <= bounds[i] */
	uint64_t	 count;
	int64_t		 sum_ms;
};
/* Bounds for waits a person notices (wakes): 50 ms to 60 s. */
extern const int64_t hist_bounds_slow[];
/* Bounds for local calls (Docker, the store): 1 ms to 10 s. */
extern const int64_t hist_bounds_fast[];
void	hist_init(struct hist *, const int64_t *bounds);
void	hist_observe(struct hist *, int64_t ms);
/*
 * Append name_bucket/_sum/_count lines; labels, if not NULL, is a
 * label list without braces ("op=\"x\"") put before le. No HELP/TYPE.
 */
void	hist_write(const struct hist *, struct evbuffer *, const char *name,
	    const char *labels);

/* evalloc.c: libevent's allocator, its buffers' blocks kept for reuse. */
void	evalloc_init(void);	/* first thing in main */
void	evalloc_release(void);	/* at exit */
void	ev_free(void *);	/* what libevent allocated for us: not free(3) */
int	evalloc_enabled(void);
size_t	evalloc_kept_bytes(void);

#endif /* SBX_COMMON_H */
