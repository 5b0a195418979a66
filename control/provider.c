/*
 * control/provider: the credential proxy (docs/providers.md). With a
 * [provider NAME] in the config the daemon listens on the gateway address
 * of its sandbox bridge, port provider_port, which the egress rules let
 * the sandboxes reach and nothing else of the host. Each sandbox has a
 * token of its own in its env:
 *
 *   sbx-<sandbox id>-<mac>
 *
 * where <mac> is the unpadded base64url HMAC-SHA256, under the daemon's
 * preview secret, of "provider.<sandbox id>" (a message no preview token
 * can be). A request for /NAME/... carries it where the provider's own
 * clients put a key (x-api-key or Authorization: Bearer); the proxy
 * checks the MAC in constant time, that the sandbox exists and is not
 * being deleted, and that the connection comes from that sandbox's own
 * address, then swaps the token for the operator's key and forwards the
 * request over TLS (certificate and host name verified against
 * provider_ca, SNI sent). The key is written only once the handshake has
 * verified the upstream, so a provider that does not verify never sees it.
 *
 * One exchange per connection, "Connection: close" both ways: the proxy
 * is for agents, not browsers, and a fresh TLS connection per request
 * costs the provider's latency little. The answer passes through as it
 * arrives (a server-sent event reaches the sandbox when the provider sends
 * it); on the way its usage fields are counted by a scanner with a fixed
 * state, never by buffering the answer. Accept-Encoding is dropped so the
 * answer comes in clear and can be scanned.
 */
#include "config.h"

#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <json.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "control/control_int.h"

#define PROVIDER_MAX_CONNS	512	/* at once, all sandboxes */
#define PROVIDER_MAX_PER_PEER	64	/* at once, from one sandbox */
#define PROVIDER_HEAD_TIMEOUT	30	/* s: the request head */
#define PROVIDER_CONNECT_TIMEOUT 30	/* s: TCP and TLS to the upstream */
#define PROVIDER_IDLE_TIMEOUT	600	/* s: no byte either way */
#define PROVIDER_HIGH_WATER	(1024 * 1024)	/* stop reading the other side */
#define PROVIDER_KEY_MAX	4096	/* bytes in a key_file */
#define PROVIDER_REFUSED_LOG_MS	10000	/* one warning of refusals per 10 s */
#define PROVIDER_TOKEN_MAC	43	/* base64url of 32 bytes, no padding */
#define PROVIDER_TOKEN_LEN	(4 + ID_LEN + 1 + PROVIDER_TOKEN_MAC)

enum provider_conn_state {
	PCONN_HEAD,		/* reading the request head */
	PCONN_CONNECTING,	/* TCP and TLS to the upstream */
	PCONN_FORWARD,		/* request body up, answer head down */
	PCONN_BODY,		/* the answer's body down */
	PCONN_CLOSING,		/* our answer is queued: flush, then close */
};

struct provider_conn {
	struct provider		*pv;
	const struct cfg_provider *cp;
	size_t			 idx;		/* cp's index in the config */
	enum provider_conn_state state;
	struct bufferevent	*client;
	struct bufferevent	*up;
	struct event		*head_timer;	/* the whole head's deadline */
	struct sockaddr_in	 peer;
	char			 sandbox_id[ID_LEN + 1];
	char			 method[16];
	struct evbuffer		*head;		/* the upstream request head */

	enum http_body_kind	 req_kind;
	uint64_t		 req_left;
	struct http_chunked	 req_chunked;
	int			 req_done;

	enum http_body_kind	 resp_kind;
	uint64_t		 resp_left;
	struct http_chunked	 resp_chunked;
	int			 status;
	int			 active;	/* counted in control_activity */
	struct provider_scan	 scan;
	LIST_ENTRY(provider_conn) entry;
};

/* What the proxy counts per [provider], for /metrics (since start). */
struct provider_stats {
	uint64_t	requests;
	uint64_t	refused;
	uint64_t	upstream_errors;
	uint64_t	input_tokens;
	uint64_t	output_tokens;
};

struct provider {
	struct control		*ctl;
	struct evdns_base	*dns;
	SSL_CTX			**ssl;		/* per [provider] */
	char			**keys;		/* per [provider]; the secret */
	struct provider_stats	*stats;		/* per [provider] */
	struct evconnlistener	*listener;
	struct in_addr		 gateway;	/* bound to, when listener */
	char			 base[64];	/* "http://gw:port" */
	int			 nconns;
	uint64_t		 refused_conns;	/* over the caps, since start */
	int64_t			 refused_logged_ms;
	LIST_HEAD(, provider_conn) conns;
};

static int	 provider_read_key(const char *, char **, char **);
static SSL_CTX	*provider_ssl_ctx(const struct cfg_provider *, char **);
static void	 provider_accept_cb(struct evconnlistener *, evutil_socket_t,
		    struct sockaddr *, int, void *);
static void	 provider_client_read_cb(struct bufferevent *, void *);
static void	 provider_client_write_cb(struct bufferevent *, void *);
static void	 provider_client_event_cb(struct bufferevent *, short,
		    void *);
static void	 provider_up_read_cb(struct bufferevent *, void *);
static void	 provider_up_write_cb(struct bufferevent *, void *);
static void	 provider_up_event_cb(struct bufferevent *, short, void *);
static void	 provider_head_timeout_cb(evutil_socket_t, short, void *);
static void	 provider_head(struct provider_conn *);
static int	 provider_route(struct provider_conn *,
		    const struct http_request_head *, const char **);
static int	 provider_auth(struct provider_conn *,
		    const struct http_request_head *, const char **);
static void	 provider_build_head(struct provider_conn *,
		    const struct http_request_head *, const char *, size_t);
static int	 provider_connect(struct provider_conn *, char **);
static void	 provider_pump_request(struct provider_conn *);
static int	 provider_answer_head(struct provider_conn *);
static void	 provider_answer_body(struct provider_conn *);
static void	 provider_scan_cb(void *, const char *, size_t);
static void	 provider_finish(struct provider_conn *);
static void	 provider_error(struct provider_conn *, int, const char *,
		    const char *);
static void	 provider_close(struct provider_conn *);
static int	 provider_token_mac(struct control *, const char *, char *);
static int	 provider_hop_header(const struct http_header *,
		    const struct http_request_head *);
static void	 provider_env_json_cb(void *, const char *);

/* Read every key_file and make the TLS contexts; NULL, *cause on error. */
struct provider *
provider_new(struct control *ctl, char **cause)
{
	const struct config	*cf = ctl->cf;
	struct provider		*pv;
	size_t			 i;

	pv = xcalloc(1, sizeof *pv);
	pv->ctl = ctl;
	LIST_INIT(&pv->conns);
	if (cf->nproviders == 0)
		return (pv);
	pv->ssl = xcalloc(cf->nproviders, sizeof *pv->ssl);
	pv->keys = xcalloc(cf->nproviders, sizeof *pv->keys);
	pv->stats = xcalloc(cf->nproviders, sizeof *pv->stats);
	for (i = 0; i < cf->nproviders; i++) {
		if (provider_read_key(cf->providers[i].key_file,
		    &pv->keys[i], cause) == -1)
			goto fail;
		if ((pv->ssl[i] = provider_ssl_ctx(&cf->providers[i],
		    cause)) == NULL)
			goto fail;
	}
	pv->dns = evdns_base_new(ctl->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (pv->dns == NULL)
		log_warnx("provider: no resolver (/etc/resolv.conf); only "
		    "upstreams given by address will work");
	return (pv);
fail:
	provider_free(pv);
	return (NULL);
}

/* The key_file's content, trailing blanks cut; -1, *cause (no content). */
static int
provider_read_key(const char *path, char **out, char **cause)
{
	char	buf[PROVIDER_KEY_MAX + 1];
	ssize_t	n;
	size_t	len = 0, i;
	int	fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		xasprintf(cause, "key_file %s: %s", path, strerror(errno));
		return (-1);
	}
	while (len < sizeof buf &&
	    (n = read(fd, buf + len, sizeof buf - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (len > PROVIDER_KEY_MAX) {
		explicit_bzero(buf, sizeof buf);
		xasprintf(cause, "key_file %s: over %d bytes", path,
		    PROVIDER_KEY_MAX);
		return (-1);
	}
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		len--;
	/* It goes into a header line: no control bytes. */
	for (i = 0; i < len; i++) {
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) {
			explicit_bzero(buf, sizeof buf);
			xasprintf(cause, "key_file %s: a control character "
			    "in the key (one line expected)", path);
			return (-1);
		}
	}
	if (len == 0) {
		xasprintf(cause, "key_file %s: empty", path);
		return (-1);
	}
	buf[len] = '\0';
	*out = xstrdup(buf);
	explicit_bzero(buf, sizeof buf);
	return (0);
}

/* A client context that verifies the upstream against provider_ca. */
static SSL_CTX *
provider_ssl_ctx(const struct cfg_provider *cp, char **cause)
{
	SSL_CTX		*ctx;
	char		 err[256];
	static const unsigned char alpn[] = "\x08http/1.1";

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		ERR_error_string_n(ERR_get_error(), err, sizeof err);
		xasprintf(cause, "SSL_CTX_new: %s", err);
		return (NULL);
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
	if ((cp->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx,
	    cp->ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
		ERR_error_string_n(ERR_get_error(), err, sizeof err);
		xasprintf(cause, "[provider %s] provider_ca %s: %s", cp->name,
		    cp->ca_file != NULL ? cp->ca_file : "(default)", err);
		SSL_CTX_free(ctx);
		return (NULL);
	}
	return (ctx);
}

/* SIGHUP: read every key_file again; a failure keeps the old key. */
int
provider_reload(struct control *ctl)
{
	struct provider	*pv = ctl->provider;
	char		*key, *cause;
	size_t		 i;
	int		 rv = 0;

	if (pv == NULL)
		return (0);
	for (i = 0; i < ctl->cf->nproviders; i++) {
		if (provider_read_key(ctl->cf->providers[i].key_file, &key,
		    &cause) == -1) {
			log_warnx("provider %s: keeping the old key: %s",
			    ctl->cf->providers[i].name, cause);
			free(cause);
			rv = -1;
			continue;
		}
		explicit_bzero(pv->keys[i], strlen(pv->keys[i]));
		free(pv->keys[i]);
		pv->keys[i] = key;
	}
	if (ctl->cf->nproviders > 0)
		log_info("provider: keys read again\tproviders=%zu",
		    ctl->cf->nproviders);
	return (rv);
}

/*
 * Listen on the bridge's gateway (from the network's inspect answer),
 * again if Docker gave the network a new one. 0, or -1 (logged).
 */
int
provider_listen(struct control *ctl, const struct in_addr *gw)
{
	struct provider		*pv = ctl->provider;
	struct sockaddr_in	 sin;
	char			 addr[INET_ADDRSTRLEN];

	if (pv == NULL || ctl->cf->nproviders == 0)
		return (0);
	if (gw == NULL) {
		log_warnx("provider: Docker did not tell the gateway of network "
		    "%s; the credential proxy is not reachable",
		    ctl->cf->network);
		return (-1);
	}
	if (pv->listener != NULL && pv->gateway.s_addr == gw->s_addr)
		return (0);
	if (pv->listener != NULL) {
		evconnlistener_free(pv->listener);
		pv->listener = NULL;
	}
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr = *gw;
	sin.sin_port = htons((uint16_t)ctl->cf->provider_port);
	inet_ntop(AF_INET, gw, addr, sizeof addr);
	pv->listener = evconnlistener_new_bind(ctl->base, provider_accept_cb,
	    pv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	    LEV_OPT_CLOSE_ON_EXEC, -1, (struct sockaddr *)&sin, sizeof sin);
	if (pv->listener == NULL) {
		log_warn("provider: cannot listen on %s:%d", addr,
		    ctl->cf->provider_port);
		pv->base[0] = '\0';
		return (-1);
	}
	pv->gateway = *gw;
	snprintf(pv->base, sizeof pv->base, "http://%s:%d", addr,
	    ctl->cf->provider_port);
	log_info("credential proxy listening\taddress=%s:%d providers=%zu",
	    addr, ctl->cf->provider_port, ctl->cf->nproviders);
	return (0);
}

/* The gateway the proxy listens on, for the egress rules; -1 if none. */
int
provider_address(struct control *ctl, struct in_addr *out, int *port)
{
	struct provider	*pv = ctl->provider;

	if (pv == NULL || pv->listener == NULL)
		return (-1);
	*out = pv->gateway;
	*port = ctl->cf->provider_port;
	return (0);
}

/* base64url of the MAC for id into out[PROVIDER_TOKEN_MAC + 1]. */
static int
provider_token_mac(struct control *ctl, const char *id, char *out)
{
	static const char	 b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char		 mac[EVP_MAX_MD_SIZE];
	unsigned int		 maclen = 0;
	char			 msg[16 + ID_LEN];
	size_t			 i, o = 0;
	uint32_t		 v;

	snprintf(msg, sizeof msg, "provider.%s", id);
	if (HMAC(EVP_sha256(), ctl->preview_key, TOKEN_KEY_LEN,
	    (const unsigned char *)msg, strlen(msg), mac, &maclen) == NULL ||
	    maclen != 32)
		return (-1);
	for (i = 0; i + 3 <= 30; i += 3) {
		v = (uint32_t)mac[i] << 16 | (uint32_t)mac[i + 1] << 8 |
		    mac[i + 2];
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = b64[v >> 6 & 63];
		out[o++] = b64[v & 63];
	}
	v = (uint32_t)mac[30] << 16 | (uint32_t)mac[31] << 8;
	out[o++] = b64[v >> 18 & 63];
	out[o++] = b64[v >> 12 & 63];
	out[o++] = b64[v >> 6 & 63];
	out[o] = '\0';
	explicit_bzero(mac, sizeof mac);
	return (0);
}

/*
 * The env lines a new container gets for every [provider]: its base URL
 * and its token, each given to add(arg, "NAME=value"). Nothing while the
 * proxy does not listen (no gateway known yet). user (may be NULL) is the
 * env the user gave: a user's own key without a base URL gets the
 * provider's real URL (the key is theirs, it need not pass the proxy); a
 * user's own base URL takes the kind out of the proxy's hands.
 */
void
provider_env(struct control *ctl, const char *id, struct json_object *user,
    void (*add)(void *, const char *), void *arg)
{
	struct provider			*pv = ctl->provider;
	const struct cfg_provider	*cp;
	char				 mac[PROVIDER_TOKEN_MAC + 1], *line;
	const char			*pfx;
	size_t				 i;
	int				 has_base, has_key;

	if (pv == NULL || pv->base[0] == '\0' ||
	    provider_token_mac(ctl, id, mac) == -1)
		return;
	for (i = 0; i < ctl->cf->nproviders; i++) {
		cp = &ctl->cf->providers[i];
		pfx = cp->kind == CFG_PROVIDER_ANTHROPIC ? "ANTHROPIC" :
		    "OPENAI";
		xasprintf(&line, "%s_BASE_URL", pfx);
		has_base = user != NULL &&
		    json_object_object_get_ex(user, line, NULL);
		free(line);
		xasprintf(&line, "%s_API_KEY", pfx);
		has_key = user != NULL &&
		    json_object_object_get_ex(user, line, NULL);
		free(line);
		if (has_key && !has_base) {
			xasprintf(&line, "%s_BASE_URL=%s", pfx, cp->upstream);
			add(arg, line);
			free(line);
		}
		if (has_key || has_base)
			continue;
		xasprintf(&line, "%s_BASE_URL=%s/%s", pfx, pv->base, cp->name);
		add(arg, line);
		free(line);
		xasprintf(&line, "%s_API_KEY=sbx-%s-%s", pfx, id, mac);
		add(arg, line);
		explicit_bzero(line, strlen(line));
		free(line);
	}
	explicit_bzero(mac, sizeof mac);
}

/* One env line "NAME=value" into a JSON env object, unless already set. */
static void
provider_env_json_cb(void *arg, const char *line)
{
	struct json_object	*env = arg;
	const char		*eq = strchr(line, '=');
	char			*name;

	if (eq == NULL)
		return;
	name = xstrdup(line);
	name[eq - line] = '\0';
	if (!json_object_object_get_ex(env, name, NULL))
		json_object_object_add(env, name,
		    json_object_new_string(eq + 1));
	free(name);
}

/*
 * A task's env (a new object; caller puts it): the user's, plus for an
 * agent task the provider env (a container made before the [provider]
 * was configured lacks it) and, for OpenCode, an inline config that
 * points its providers at the proxy: OpenCode's Anthropic client wants
 * the base URL with /v1 (Claude Code and Anthropic's SDKs add /v1
 * themselves). A name the user set is left alone.
 */
struct json_object *
provider_task_env(struct control *ctl, const char *id, const char *agent,
    struct json_object *user)
{
	struct provider			*pv = ctl->provider;
	const struct cfg_provider	*cp;
	struct json_object		*env, *both = NULL, *cfg, *provs, *one;
	struct json_object		*opts;
	struct store_sandbox		 row;
	char				 mac[PROVIDER_TOKEN_MAC + 1], *s;
	size_t				 i;

	env = json_object_new_object();
	if (user != NULL) {
		json_object_object_foreach(user, k, v)
			json_object_object_add(env, k, json_object_get(v));
	}
	if (pv == NULL || pv->base[0] == '\0' ||
	    strcmp(agent, "command") == 0)
		return (env);
	/* What the user chose, for the sandbox or for this task. */
	if (store_sandbox_get(ctl->store, id, &row) == 0) {
		both = json_tokener_parse(row.env_json != NULL ?
		    row.env_json : "{}");
		store_sandbox_clear(&row);
	}
	if (both == NULL || !json_object_is_type(both, json_type_object)) {
		json_object_put(both);
		both = json_object_new_object();
	}
	json_object_object_foreach(env, k, v)
		json_object_object_add(both, k, json_object_get(v));
	provider_env(ctl, id, both, provider_env_json_cb, env);
	if (strcmp(agent, "opencode") != 0 ||
	    json_object_object_get_ex(both, "OPENCODE_CONFIG_CONTENT", NULL) ||
	    json_object_object_get_ex(both, "ANTHROPIC_API_KEY", NULL) ||
	    json_object_object_get_ex(both, "ANTHROPIC_BASE_URL", NULL) ||
	    json_object_object_get_ex(both, "OPENAI_API_KEY", NULL) ||
	    json_object_object_get_ex(both, "OPENAI_BASE_URL", NULL) ||
	    provider_token_mac(ctl, id, mac) == -1) {
		json_object_put(both);
		return (env);
	}
	json_object_put(both);
	cfg = json_object_new_object();
	provs = json_object_new_object();
	for (i = 0; i < ctl->cf->nproviders; i++) {
		cp = &ctl->cf->providers[i];
		one = json_object_new_object();
		opts = json_object_new_object();
		xasprintf(&s, "%s/%s%s", pv->base, cp->name,
		    cp->kind == CFG_PROVIDER_ANTHROPIC ? "/v1" : "");
		json_object_object_add(opts, "baseURL",
		    json_object_new_string(s));
		free(s);
		xasprintf(&s, "sbx-%s-%s", id, mac);
		json_object_object_add(opts, "apiKey",
		    json_object_new_string(s));
		explicit_bzero(s, strlen(s));
		free(s);
		json_object_object_add(one, "options", opts);
		json_object_object_add(provs, cp->kind ==
		    CFG_PROVIDER_ANTHROPIC ? "anthropic" : "openai", one);
	}
	explicit_bzero(mac, sizeof mac);
	json_object_object_add(cfg, "provider", provs);
	json_object_object_add(env, "OPENCODE_CONFIG_CONTENT",
	    json_object_new_string(json_object_to_json_string_ext(cfg,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)));
	json_object_put(cfg);
	return (env);
}

/* A sandbox connects: one exchange on it. */
static void
provider_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct provider		*pv = arg;
	struct provider_conn	*pc;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	struct timeval		 tv = { PROVIDER_HEAD_TIMEOUT, 0 };
	int64_t			 now;
	int			 one = 1, mine = 0;

	if (sa->sa_family != AF_INET || (size_t)salen < sizeof pc->peer) {
		evutil_closesocket(fd);
		return;
	}
	/* One sandbox must not take the proxy from the others. */
	LIST_FOREACH(pc, &pv->conns, entry)
		mine += pc->peer.sin_addr.s_addr == sin->sin_addr.s_addr;
	if (pv->nconns >= PROVIDER_MAX_CONNS || mine >= PROVIDER_MAX_PER_PEER) {
		/*
		 * At most one warning in a while: a sandbox that connects
		 * in a loop must not fill the log (and crowd out the rest
		 * of it where journald drops what is over its rate).
		 */
		now = time_mono_ms();
		pv->refused_conns++;
		if (pv->refused_logged_ms == 0 ||
		    now - pv->refused_logged_ms >= PROVIDER_REFUSED_LOG_MS) {
			log_warnx("provider: connection refused (%d at once, "
			    "%d from %s)\trefused=%llu", pv->nconns, mine,
			    inet_ntoa(sin->sin_addr),
			    (unsigned long long)pv->refused_conns);
			pv->refused_logged_ms = now;
		}
		evutil_closesocket(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	pc = xcalloc(1, sizeof *pc);
	pc->pv = pv;
	pc->state = PCONN_HEAD;
	memcpy(&pc->peer, sa, sizeof pc->peer);
	pc->client = bufferevent_socket_new(pv->ctl->base, fd,
	    BEV_OPT_CLOSE_ON_FREE);
	if (pc->client == NULL) {
		evutil_closesocket(fd);
		free(pc);
		return;
	}
	bufferevent_setcb(pc->client, provider_client_read_cb,
	    provider_client_write_cb, provider_client_event_cb, pc);
	/*
	 * A deadline for the whole head, from accept: a read timeout would
	 * start again with every byte, and a head trickled in a byte at a
	 * time would hold the connection for ever (slowloris).
	 */
	pc->head_timer = evtimer_new(pv->ctl->base, provider_head_timeout_cb,
	    pc);
	evtimer_add(pc->head_timer, &tv);
	bufferevent_enable(pc->client, EV_READ);
	LIST_INSERT_HEAD(&pv->conns, pc, entry);
	pv->nconns++;
}

static void
provider_client_read_cb(struct bufferevent *bev, void *arg)
{
	struct provider_conn	*pc = arg;

	switch (pc->state) {
	case PCONN_HEAD:
		provider_head(pc);
		break;
	case PCONN_CONNECTING:
		/* The body waits in the input; do not take more meanwhile. */
		if (evbuffer_get_length(bufferevent_get_input(bev)) >
		    PROVIDER_HIGH_WATER)
			bufferevent_disable(bev, EV_READ);
		break;
	case PCONN_FORWARD:
	case PCONN_BODY:
		provider_pump_request(pc);
		break;
	case PCONN_CLOSING:
		evbuffer_drain(bufferevent_get_input(bev),
		    evbuffer_get_length(bufferevent_get_input(bev)));
		break;
	}
}

/* The client took our output: read the upstream again, or close. */
static void
provider_client_write_cb(struct bufferevent *bev, void *arg)
{
	struct provider_conn	*pc = arg;

	if (pc->state == PCONN_CLOSING) {
		provider_close(pc);
		return;
	}
	if (pc->up != NULL)
		bufferevent_enable(pc->up, EV_READ);
}

static void
provider_client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct provider_conn	*pc = arg;

	/* The sandbox went away (or stalled): count what was answered. */
	if (pc->state == PCONN_BODY)
		provider_finish(pc);
	provider_close(pc);
}

/* The whole head did not come in time. */
static void
provider_head_timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	struct provider_conn	*pc = arg;

	if (pc->state == PCONN_HEAD)
		provider_error(pc, 408, "request_timeout",
		    "the request head did not arrive in time");
}

/* Collect and check the request head, then connect upstream. */
static void
provider_head(struct provider_conn *pc)
{
	struct evbuffer			*in = bufferevent_get_input(pc->client);
	struct http_request_head	 h;
	const char			*why = NULL, *rest;
	char				*cause = NULL;
	size_t				 len = evbuffer_get_length(in), restlen;
	struct timeval			 idle = { PROVIDER_IDLE_TIMEOUT, 0 };
	unsigned char			*buf;
	int				 n, status;

	if (evbuffer_search(in, "\n", 1, NULL).pos == -1) {
		if (len > HTTP_MAX_HEAD_SIZE)
			provider_error(pc, 431, "request_too_large",
			    "the request head is too large");
		return;
	}
	buf = evbuffer_pullup(in, len > HTTP_MAX_HEAD_SIZE ?
	    HTTP_MAX_HEAD_SIZE : (ssize_t)len);
	n = http_parse_request((const char *)buf, len > HTTP_MAX_HEAD_SIZE ?
	    HTTP_MAX_HEAD_SIZE : len, &h);
	if (n == -2) {
		if (len >= HTTP_MAX_HEAD_SIZE)
			provider_error(pc, 431, "request_too_large",
			    "the request head is too large");
		return;
	}
	if (n == -1 || http_request_body(&h, &pc->req_kind,
	    &pc->req_left) == -1) {
		provider_error(pc, 400, "invalid_request_error",
		    "malformed request");
		return;
	}
	snprintf(pc->method, sizeof pc->method, "%.*s", (int)h.method_len,
	    h.method);
	if ((status = provider_route(pc, &h, &rest)) != 0) {
		provider_error(pc, status, "not_found_error", "no such "
		    "provider here: the path starts with /<provider name>/");
		return;
	}
	restlen = h.target_len - (size_t)(rest - h.target);
	if ((status = provider_auth(pc, &h, &why)) != 0) {
		pc->pv->stats[pc->idx].refused++;
		log_info("provider: refused\tprovider=%s client=%s why=\"%s\"",
		    pc->cp->name, inet_ntoa(pc->peer.sin_addr), why);
		provider_error(pc, status, "authentication_error", why);
		return;
	}
	provider_build_head(pc, &h, rest, restlen);
	evbuffer_drain(in, (size_t)n);
	evtimer_del(pc->head_timer);
	if (pc->req_kind == HTTP_BODY_CHUNKED)
		http_chunked_init(&pc->req_chunked);
	pc->req_done = pc->req_kind == HTTP_BODY_NONE ||
	    (pc->req_kind == HTTP_BODY_LENGTH && pc->req_left == 0);
	/*
	 * CONNECTING first: a failure known at once (a name from
	 * /etc/hosts, then no socket: out of descriptors) calls the
	 * upstream's event callback from within provider_connect; in
	 * PCONN_HEAD it was ignored and the connection waited for ever.
	 */
	pc->state = PCONN_CONNECTING;
	/* A stream may be quiet for long; a client that stops reading not. */
	bufferevent_set_timeouts(pc->client, NULL, &idle);
	if (provider_connect(pc, &cause) == -1) {
		pc->pv->stats[pc->idx].upstream_errors++;
		log_warnx("provider %s: %s", pc->cp->name, cause);
		provider_error(pc, 502, "api_error", cause);
		free(cause);
	}
}

/* Which [provider] the target names: 0, or 404; *rest after "/NAME". */
static int
provider_route(struct provider_conn *pc, const struct http_request_head *h,
    const char **rest)
{
	const struct config	*cf = pc->pv->ctl->cf;
	size_t			 i, nlen;

	if (h->target_len == 0 || h->target[0] != '/')
		return (404);
	for (i = 0; i < cf->nproviders; i++) {
		nlen = strlen(cf->providers[i].name);
		if (h->target_len < nlen + 1 ||
		    memcmp(h->target + 1, cf->providers[i].name, nlen) != 0)
			continue;
		if (h->target_len > nlen + 1 && h->target[nlen + 1] != '/' &&
		    h->target[nlen + 1] != '?')
			continue;
		pc->cp = &cf->providers[i];
		pc->idx = i;
		*rest = h->target + 1 + nlen;
		return (0);
	}
	return (404);
}

/*
 * The token: where the kind's clients send a key (x-api-key, or
 * Authorization: Bearer; either is taken for either kind). 0, or 401 with
 * *why (static text, no token in it).
 */
static int
provider_auth(struct provider_conn *pc, const struct http_request_head *h,
    const char **why)
{
	struct control			*ctl = pc->pv->ctl;
	const struct http_header	*hd;
	struct sandbox_rt		*rt;
	const char			*tok = NULL;
	char				 mac[PROVIDER_TOKEN_MAC + 1];
	size_t				 len = 0;
	int				 ok;

	if ((hd = http_header_find(h->headers, h->nheaders,
	    "x-api-key")) != NULL) {
		tok = hd->value;
		len = hd->value_len;
	} else if ((hd = http_header_find(h->headers, h->nheaders,
	    "authorization")) != NULL && hd->value_len > 7 &&
	    strncasecmp(hd->value, "Bearer ", 7) == 0) {
		tok = hd->value + 7;
		len = hd->value_len - 7;
	}
	if (tok == NULL) {
		*why = "no sandbox token (x-api-key or Authorization: Bearer)";
		return (401);
	}
	if (len != PROVIDER_TOKEN_LEN || memcmp(tok, "sbx-", 4) != 0 ||
	    tok[4 + ID_LEN] != '-') {
		*why = "not a sandbox token";
		return (401);
	}
	memcpy(pc->sandbox_id, tok + 4, ID_LEN);
	pc->sandbox_id[ID_LEN] = '\0';
	if (!id_valid(pc->sandbox_id, ID_LEN) ||
	    provider_token_mac(ctl, pc->sandbox_id, mac) == -1) {
		*why = "not a sandbox token";
		return (401);
	}
	ok = CRYPTO_memcmp(mac, tok + 5 + ID_LEN, PROVIDER_TOKEN_MAC) == 0;
	explicit_bzero(mac, sizeof mac);
	if (!ok) {
		*why = "wrong sandbox token";
		return (401);
	}
	if ((rt = rt_get(ctl, pc->sandbox_id)) == NULL ||
	    rt->state == SANDBOX_DELETING) {
		*why = "the token's sandbox is deleted";
		return (401);
	}
	/* The token works only from its own sandbox. */
	if (rt->state != SANDBOX_RUNNING ||
	    rt->ip.s_addr != pc->peer.sin_addr.s_addr) {
		*why = "the token belongs to another sandbox";
		return (401);
	}
	/* A stream in flight keeps its sandbox awake. */
	control_activity(ctl, rt->id, ACTIVITY_REQUEST, 1);
	pc->active = 1;
	return (0);
}

/* 1 for a header the proxy never forwards up. */
static int
provider_hop_header(const struct http_header *hd,
    const struct http_request_head *h)
{
	static const char	*drop[] = { "host", "x-api-key",
	    "authorization", "connection", "keep-alive", "proxy-connection",
	    "proxy-authorization", "te", "upgrade", "accept-encoding",
	    "expect", "trailer" };
	const struct http_header *c;
	size_t			 i;
	char			 name[64];

	for (i = 0; i < nitems(drop); i++) {
		if (hd->name_len == strlen(drop[i]) &&
		    strncasecmp(hd->name, drop[i], hd->name_len) == 0)
			return (1);
	}
	/* And what Connection names. */
	if (hd->name_len < sizeof name &&
	    (c = http_header_find(h->headers, h->nheaders,
	    "connection")) != NULL) {
		memcpy(name, hd->name, hd->name_len);
		name[hd->name_len] = '\0';
		if (http_header_has_token(c, name))
			return (1);
	}
	return (0);
}

/* The request as the upstream gets it: its path, its host, our key. */
static void
provider_build_head(struct provider_conn *pc,
    const struct http_request_head *h, const char *rest, size_t restlen)
{
	const struct cfg_provider	*cp = pc->cp;
	const char			*key = pc->pv->keys[pc->idx];
	size_t				 i;

	pc->head = evbuffer_new();
	evbuffer_add_printf(pc->head, "%s %s%s%.*s HTTP/1.1\r\n", pc->method,
	    cp->path, restlen == 0 || rest[0] == '?' ? "/" : "", (int)restlen,
	    rest);
	if (cp->port == 443)
		evbuffer_add_printf(pc->head, "Host: %s\r\n", cp->host);
	else
		evbuffer_add_printf(pc->head, "Host: %s:%d\r\n", cp->host,
		    cp->port);
	for (i = 0; i < h->nheaders; i++) {
		if (provider_hop_header(&h->headers[i], h))
			continue;
		evbuffer_add_printf(pc->head, "%.*s: %.*s\r\n",
		    (int)h->headers[i].name_len, h->headers[i].name,
		    (int)h->headers[i].value_len, h->headers[i].value);
	}
	if (cp->kind == CFG_PROVIDER_ANTHROPIC)
		evbuffer_add_printf(pc->head, "x-api-key: %s\r\n", key);
	else
		evbuffer_add_printf(pc->head, "Authorization: Bearer %s\r\n",
		    key);
	evbuffer_add_printf(pc->head, "Accept-Encoding: identity\r\n"
	    "Connection: close\r\n\r\n");
}

/* TCP and TLS to the upstream; the head waits for the handshake. */
static int
provider_connect(struct provider_conn *pc, char **cause)
{
	struct provider		*pv = pc->pv;
	const struct cfg_provider *cp = pc->cp;
	struct sockaddr_in	 sin;
	struct timeval		 tv = { PROVIDER_CONNECT_TIMEOUT, 0 };
	SSL			*ssl;
	int			 literal;

	if ((ssl = SSL_new(pv->ssl[pc->idx])) == NULL) {
		xasprintf(cause, "SSL_new failed");
		return (-1);
	}
	memset(&sin, 0, sizeof sin);
	literal = inet_pton(AF_INET, cp->host, &sin.sin_addr) == 1;
	if (literal) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), cp->host);
	} else {
		SSL_set_tlsext_host_name(ssl, cp->host);
		SSL_set1_host(ssl, cp->host);
	}
	pc->up = bufferevent_openssl_socket_new(pv->ctl->base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (pc->up == NULL) {
		SSL_free(ssl);
		xasprintf(cause, "cannot make a TLS connection");
		return (-1);
	}
	bufferevent_openssl_set_allow_dirty_shutdown(pc->up, 1);
	bufferevent_setcb(pc->up, provider_up_read_cb, provider_up_write_cb,
	    provider_up_event_cb, pc);
	bufferevent_set_timeouts(pc->up, &tv, &tv);
	if (literal) {
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)cp->port);
		if (bufferevent_socket_connect(pc->up, (struct sockaddr *)&sin,
		    sizeof sin) == -1) {
			xasprintf(cause, "cannot connect to %s", cp->upstream);
			return (-1);
		}
	} else if (pv->dns == NULL || bufferevent_socket_connect_hostname(
	    pc->up, pv->dns, AF_UNSPEC, cp->host, cp->port) == -1) {
		xasprintf(cause, "cannot resolve %s", cp->host);
		return (-1);
	}
	return (0);
}

/* Request body bytes from the client up, as far as its framing goes. */
static void
provider_pump_request(struct provider_conn *pc)
{
	struct evbuffer	*in = bufferevent_get_input(pc->client);
	struct evbuffer	*out;
	size_t		 len = evbuffer_get_length(in), take;
	unsigned char	*buf;
	ssize_t		 n;

	if (pc->req_done || pc->up == NULL) {
		evbuffer_drain(in, len);	/* past the one request */
		return;
	}
	out = bufferevent_get_output(pc->up);
	if (len == 0)
		return;
	switch (pc->req_kind) {
	case HTTP_BODY_LENGTH:
		take = len < pc->req_left ? len : (size_t)pc->req_left;
		evbuffer_remove_buffer(in, out, take);
		pc->req_left -= take;
		pc->req_done = pc->req_left == 0;
		break;
	case HTTP_BODY_CHUNKED:
		buf = evbuffer_pullup(in, -1);
		n = http_chunked_scan(&pc->req_chunked, (const char *)buf, len,
		    NULL, NULL);
		if (n == -1) {
			provider_error(pc, 400, "invalid_request_error",
			    "malformed chunked body");
			return;
		}
		evbuffer_remove_buffer(in, out, (size_t)n);
		pc->req_done = pc->req_chunked.done;
		break;
	case HTTP_BODY_NONE:
	case HTTP_BODY_UNTIL_CLOSE:
		pc->req_done = 1;
		break;
	}
	if (pc->req_done)
		evbuffer_drain(in, evbuffer_get_length(in));
	else if (evbuffer_get_length(out) > PROVIDER_HIGH_WATER)
		bufferevent_disable(pc->client, EV_READ);
}

/* The upstream took our bytes: take more from the client. */
static void
provider_up_write_cb(struct bufferevent *bev, void *arg)
{
	struct provider_conn	*pc = arg;

	if (pc->state == PCONN_FORWARD && !pc->req_done) {
		bufferevent_enable(pc->client, EV_READ);
		provider_pump_request(pc);
	}
}

static void
provider_up_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct provider_conn	*pc = arg;
	SSL			*ssl = bufferevent_openssl_get_ssl(bev);
	struct timeval		 idle = { PROVIDER_IDLE_TIMEOUT, 0 };
	unsigned long		 e;
	long			 vr;
	char			 msg[512], err[256];

	if (what & BEV_EVENT_CONNECTED) {
		/* Verified (SSL_VERIFY_PEER): only now does the key go. */
		pc->state = PCONN_FORWARD;
		bufferevent_set_timeouts(bev, &idle, &idle);
		bufferevent_write_buffer(bev, pc->head);
		evbuffer_free(pc->head);
		pc->head = NULL;
		bufferevent_enable(bev, EV_READ | EV_WRITE);
		bufferevent_enable(pc->client, EV_READ);
		provider_pump_request(pc);
		return;
	}
	if (pc->state == PCONN_CONNECTING) {
		vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
		e = bufferevent_get_openssl_error(bev);
		if (vr != X509_V_OK)
			snprintf(msg, sizeof msg, "the provider's certificate "
			    "did not verify (%s): nothing was sent",
			    X509_verify_cert_error_string(vr));
		else if (e != 0) {
			ERR_error_string_n(e, err, sizeof err);
			snprintf(msg, sizeof msg, "TLS with the provider "
			    "failed (%s): nothing was sent", err);
		} else if (what & BEV_EVENT_TIMEOUT)
			snprintf(msg, sizeof msg, "the provider did not answer "
			    "in time");
		else
			snprintf(msg, sizeof msg, "cannot connect to the "
			    "provider (%s)", what & BEV_EVENT_ERROR ?
			    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR())
			    : "closed");
		pc->pv->stats[pc->idx].upstream_errors++;
		log_warnx("provider %s: %s\tupstream=%s sandbox=%s",
		    pc->cp->name, msg, pc->cp->upstream, pc->sandbox_id);
		provider_error(pc, 502, "api_error", msg);
		return;
	}
	if (pc->state == PCONN_FORWARD) {
		/* Gone before a whole answer head. */
		pc->pv->stats[pc->idx].upstream_errors++;
		log_warnx("provider %s: the upstream closed before answering"
		    "\tsandbox=%s", pc->cp->name, pc->sandbox_id);
		provider_error(pc, 502, "api_error", "the provider closed the "
		    "connection before answering");
		return;
	}
	/* In the body: take what is left, then the answer is over. */
	provider_up_read_cb(bev, pc);
	if (pc->state == PCONN_BODY)
		provider_finish(pc);
}

static void
provider_up_read_cb(struct bufferevent *bev, void *arg)
{
	struct provider_conn	*pc = arg;

	if (pc->state == PCONN_FORWARD) {
		if (provider_answer_head(pc) != 1)
			return;
	}
	if (pc->state == PCONN_BODY)
		provider_answer_body(pc);
}

/*
 * The answer's head, forwarded with Connection: close. 1 once the body
 * follows, 0 for more input, -1 when the connection was answered.
 */
static int
provider_answer_head(struct provider_conn *pc)
{
	struct evbuffer			*in = bufferevent_get_input(pc->up);
	struct evbuffer			*out = bufferevent_get_output(
					    pc->client);
	struct http_response_head	 h;
	const struct http_header	*hd;
	size_t				 len, i;
	unsigned char			*buf;
	int				 n;

again:
	len = evbuffer_get_length(in);
	if (len == 0 || evbuffer_search(in, "\n", 1, NULL).pos == -1)
		return (0);
	if (len > HTTP_MAX_HEAD_SIZE)
		len = HTTP_MAX_HEAD_SIZE;
	buf = evbuffer_pullup(in, (ssize_t)len);
	n = http_parse_response((const char *)buf, len, &h);
	if (n == -2 && len < HTTP_MAX_HEAD_SIZE)
		return (0);
	if (n < 0 || http_response_body(&h, pc->method, &pc->resp_kind,
	    &pc->resp_left) == -1) {
		pc->pv->stats[pc->idx].upstream_errors++;
		provider_error(pc, 502, "api_error", "the provider's answer "
		    "was malformed");
		return (-1);
	}
	evbuffer_add_printf(out, "HTTP/1.1 %d %.*s\r\n", h.status,
	    (int)h.reason_len, h.reason);
	for (i = 0; i < h.nheaders; i++) {
		hd = &h.headers[i];
		if ((hd->name_len == 10 &&
		    strncasecmp(hd->name, "connection", 10) == 0) ||
		    (hd->name_len == 10 &&
		    strncasecmp(hd->name, "keep-alive", 10) == 0))
			continue;
		evbuffer_add_printf(out, "%.*s: %.*s\r\n", (int)hd->name_len,
		    hd->name, (int)hd->value_len, hd->value);
	}
	if (h.status >= 100 && h.status < 200) {
		/* An interim answer (100 Continue): the real one follows. */
		evbuffer_add(out, "\r\n", 2);
		evbuffer_drain(in, (size_t)n);
		goto again;
	}
	evbuffer_add_printf(out, "Connection: close\r\n\r\n");
	evbuffer_drain(in, (size_t)n);
	pc->status = h.status;
	if (pc->resp_kind == HTTP_BODY_CHUNKED)
		http_chunked_init(&pc->resp_chunked);
	pc->state = PCONN_BODY;
	return (1);
}

/* Body bytes down as they come, counted on the way. */
static void
provider_answer_body(struct provider_conn *pc)
{
	struct evbuffer	*in = bufferevent_get_input(pc->up);
	struct evbuffer	*out = bufferevent_get_output(pc->client);
	struct evbuffer_iovec v[8];
	size_t		 len = evbuffer_get_length(in), take;
	unsigned char	*buf;
	ssize_t		 n;
	int		 done = 0, nv, i;

	switch (pc->resp_kind) {
	case HTTP_BODY_NONE:
		take = 0;
		done = 1;
		break;
	case HTTP_BODY_LENGTH:
		take = len < pc->resp_left ? len : (size_t)pc->resp_left;
		pc->resp_left -= take;
		done = pc->resp_left == 0;
		break;
	case HTTP_BODY_CHUNKED:
		if (len == 0)
			return;
		buf = evbuffer_pullup(in, -1);
		n = http_chunked_scan(&pc->resp_chunked, (const char *)buf,
		    len, provider_scan_cb, &pc->scan);
		if (n == -1) {
			/* Cut: the client sees a broken chunked body. */
			log_warnx("provider %s: bad chunked answer\tsandbox=%s",
			    pc->cp->name, pc->sandbox_id);
			provider_finish(pc);
			return;
		}
		take = (size_t)n;
		done = pc->resp_chunked.done;
		evbuffer_remove_buffer(in, out, take);
		goto moved;
	case HTTP_BODY_UNTIL_CLOSE:
	default:
		take = len;
		break;
	}
	if (take > 0) {
		nv = evbuffer_peek(in, (ssize_t)take, NULL, v, nitems(v));
		for (i = 0; i < nv && i < (int)nitems(v); i++)
			provider_scan(&pc->scan, v[i].iov_base,
			    v[i].iov_len);
		evbuffer_remove_buffer(in, out, take);
	}
moved:
	if (done) {
		provider_finish(pc);
		return;
	}
	if (evbuffer_get_length(out) > PROVIDER_HIGH_WATER)
		bufferevent_disable(pc->up, EV_READ);
}

static void
provider_scan_cb(void *arg, const char *data, size_t len)
{
	provider_scan(arg, data, len);
}

/*
 * The usage fields, wherever they are in the JSON (an answer, or the data
 * of server-sent events): "input_tokens" / "prompt_tokens" and
 * "output_tokens" / "completion_tokens" followed by a number. Anthropic's
 * message_delta and OpenAI's last chunk carry totals so far, so the
 * largest value seen is the exchange's. The state is a few bytes whatever
 * the answer's size; a string's escapes are skipped, so text that quotes
 * a key counts nothing. Only exact key names count (not
 * "cache_read_input_tokens").
 */
void
provider_scan(struct provider_scan *s, const char *p, size_t len)
{
	size_t	i;
	char	c;

	for (i = 0; i < len; i++) {
		c = p[i];
		switch (s->state) {
		case PSCAN_OUT:
			if (c == '"') {
				s->state = PSCAN_STRING;
				s->klen = 0;
			}
			break;
		case PSCAN_STRING:
			if (c == '\\') {
				s->state = PSCAN_ESCAPE;
				s->klen = PROVIDER_SCAN_KEY + 1;
			} else if (c == '"')
				s->state = PSCAN_AFTER_STRING;
			else if (s->klen < PROVIDER_SCAN_KEY)
				s->key[s->klen++] = c;
			else
				s->klen = PROVIDER_SCAN_KEY + 1;
			break;
		case PSCAN_ESCAPE:
			s->state = PSCAN_STRING;
			break;
		case PSCAN_AFTER_STRING:
			if (c == ':') {
				s->state = PSCAN_COLON;
				s->counted = 0;
				if (s->klen <= PROVIDER_SCAN_KEY) {
					s->key[s->klen] = '\0';
					if (strcmp(s->key, "input_tokens") == 0 ||
					    strcmp(s->key, "prompt_tokens") == 0)
						s->counted = 1;
					else if (strcmp(s->key,
					    "output_tokens") == 0 ||
					    strcmp(s->key,
					    "completion_tokens") == 0)
						s->counted = 2;
				}
			} else if (c == '"') {
				s->state = PSCAN_STRING;
				s->klen = 0;
			} else if (c != ' ' && c != '\t' && c != '\r' &&
			    c != '\n')
				s->state = PSCAN_OUT;
			break;
		case PSCAN_COLON:
			if (c >= '0' && c <= '9' && s->counted != 0) {
				s->state = PSCAN_NUMBER;
				s->value = c - '0';
			} else if (c == '"') {
				s->state = PSCAN_STRING;
				s->klen = 0;
			} else if (c != ' ' && c != '\t' && c != '\r' &&
			    c != '\n')
				s->state = PSCAN_OUT;
			break;
		case PSCAN_NUMBER:
			if (c >= '0' && c <= '9') {
				if (s->value < INT64_MAX / 100)
					s->value = s->value * 10 + (c - '0');
				break;
			}
			if (s->counted == 1 && s->value > s->input)
				s->input = s->value;
			if (s->counted == 2 && s->value > s->output)
				s->output = s->value;
			s->state = c == '"' ? PSCAN_STRING : PSCAN_OUT;
			s->klen = 0;
			break;
		}
	}
}

/* The answer ended: a number it ended in is complete now. */
void
provider_scan_end(struct provider_scan *s)
{
	provider_scan(s, " ", 1);
}

/*
 * The exchange is over (whole or cut): count it, drop the upstream, and
 * close once the client has what is queued. Never frees pc itself.
 */
static void
provider_finish(struct provider_conn *pc)
{
	struct provider_stats	*st;

	if (pc->cp == NULL || pc->sandbox_id[0] == '\0' ||
	    pc->state == PCONN_CLOSING)
		return;
	provider_scan_end(&pc->scan);
	st = &pc->pv->stats[pc->idx];
	st->requests++;
	st->input_tokens += (uint64_t)pc->scan.input;
	st->output_tokens += (uint64_t)pc->scan.output;
	if (store_usage_add(pc->pv->ctl->store, pc->sandbox_id, pc->cp->name,
	    1, pc->scan.input, pc->scan.output) == -1)
		log_warnx("provider: usage not recorded\tsandbox=%s",
		    pc->sandbox_id);
	log_debug("provider: exchange\tprovider=%s sandbox=%s status=%d "
	    "input_tokens=%lld output_tokens=%lld", pc->cp->name,
	    pc->sandbox_id, pc->status, (long long)pc->scan.input,
	    (long long)pc->scan.output);
	pc->state = PCONN_CLOSING;
	if (pc->up != NULL) {
		bufferevent_free(pc->up);
		pc->up = NULL;
	}
	/*
	 * The write callback closes once the client has it all; deferred,
	 * so no caller up the stack is left holding a freed connection.
	 */
	bufferevent_enable(pc->client, EV_WRITE);
	if (evbuffer_get_length(bufferevent_get_output(pc->client)) == 0)
		bufferevent_trigger(pc->client, EV_WRITE,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Answer with an error in the provider's own JSON shape, then close. */
static void
provider_error(struct provider_conn *pc, int status, const char *type,
    const char *message)
{
	struct json_object	*o, *e;
	const char		*text;

	o = json_object_new_object();
	e = json_object_new_object();
	if (pc->cp == NULL || pc->cp->kind == CFG_PROVIDER_ANTHROPIC) {
		json_object_object_add(o, "type",
		    json_object_new_string("error"));
		json_object_object_add(e, "type", json_object_new_string(type));
		json_object_object_add(e, "message",
		    json_object_new_string(message));
	} else {
		json_object_object_add(e, "message",
		    json_object_new_string(message));
		json_object_object_add(e, "type", json_object_new_string(
		    status == 401 ? "invalid_request_error" : type));
		json_object_object_add(e, "param", NULL);
		json_object_object_add(e, "code", status == 401 ?
		    json_object_new_string("invalid_api_key") : NULL);
	}
	json_object_object_add(o, "error", e);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	evbuffer_add_printf(bufferevent_get_output(pc->client),
	    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
	    http_status_text(status), strlen(text), text);
	json_object_put(o);
	pc->state = PCONN_CLOSING;
	if (pc->up != NULL) {
		bufferevent_free(pc->up);
		pc->up = NULL;
	}
	bufferevent_disable(pc->client, EV_READ);
	bufferevent_enable(pc->client, EV_WRITE);
}

/* The one teardown of a connection. */
static void
provider_close(struct provider_conn *pc)
{
	if (pc->up != NULL)
		bufferevent_free(pc->up);
	if (pc->client != NULL)
		bufferevent_free(pc->client);
	if (pc->head != NULL)
		evbuffer_free(pc->head);
	if (pc->head_timer != NULL)
		event_free(pc->head_timer);
	if (pc->active)
		control_activity(pc->pv->ctl, pc->sandbox_id,
		    ACTIVITY_REQUEST, -1);
	LIST_REMOVE(pc, entry);
	pc->pv->nconns--;
	free(pc);
}

/* The sandbox's usage as the API shows it (caller puts it). */
struct json_object *
provider_usage_json(struct control *ctl, const char *id)
{
	struct json_object	*o, *per, *one;
	struct store_usage	*u = NULL;
	size_t			 n = 0, i;
	int64_t			 req = 0, in = 0, out = 0;

	per = json_object_new_object();
	if (store_usage_list(ctl->store, id, &u, &n) == 0) {
		for (i = 0; i < n; i++) {
			one = json_object_new_object();
			json_object_object_add(one, "requests",
			    json_object_new_int64(u[i].requests));
			json_object_object_add(one, "input_tokens",
			    json_object_new_int64(u[i].input_tokens));
			json_object_object_add(one, "output_tokens",
			    json_object_new_int64(u[i].output_tokens));
			json_object_object_add(per, u[i].provider, one);
			req += u[i].requests;
			in += u[i].input_tokens;
			out += u[i].output_tokens;
		}
	}
	free(u);
	o = json_object_new_object();
	json_object_object_add(o, "requests", json_object_new_int64(req));
	json_object_object_add(o, "input_tokens", json_object_new_int64(in));
	json_object_object_add(o, "output_tokens", json_object_new_int64(out));
	json_object_object_add(o, "providers", per);
	return (o);
}

/*
 * {"listen": "gw:port" or null, "providers": [names]} for /healthz; NULL
 * without a [provider].
 */
struct json_object *
provider_health_json(struct control *ctl)
{
	struct provider		*pv = ctl->provider;
	struct json_object	*o, *names;
	size_t			 i;

	if (pv == NULL || ctl->cf->nproviders == 0)
		return (NULL);
	o = json_object_new_object();
	json_object_object_add(o, "listen", pv->base[0] != '\0' ?
	    json_object_new_string(pv->base + 7) : NULL);
	names = json_object_new_array();
	for (i = 0; i < ctl->cf->nproviders; i++)
		json_object_array_add(names,
		    json_object_new_string(ctl->cf->providers[i].name));
	json_object_object_add(o, "providers", names);
	return (o);
}

/* The proxy's part of GET /metrics. */
void
provider_metrics(struct control *ctl, struct evbuffer *out)
{
	struct provider		*pv = ctl->provider;
	const char		*name;
	size_t			 i;

	if (pv == NULL || ctl->cf->nproviders == 0)
		return;
	evbuffer_add_printf(out,
	    "# HELP sandboxd_provider_requests_total Requests the credential "
	    "proxy forwarded to a provider.\n"
	    "# TYPE sandboxd_provider_requests_total counter\n");
	for (i = 0; i < ctl->cf->nproviders; i++)
		evbuffer_add_printf(out, "sandboxd_provider_requests_total"
		    "{provider=\"%s\"} %llu\n", ctl->cf->providers[i].name,
		    (unsigned long long)pv->stats[i].requests);
	evbuffer_add_printf(out,
	    "# HELP sandboxd_provider_refused_total Requests the credential "
	    "proxy refused (no, wrong or another sandbox's token).\n"
	    "# TYPE sandboxd_provider_refused_total counter\n");
	for (i = 0; i < ctl->cf->nproviders; i++)
		evbuffer_add_printf(out, "sandboxd_provider_refused_total"
		    "{provider=\"%s\"} %llu\n", ctl->cf->providers[i].name,
		    (unsigned long long)pv->stats[i].refused);
	evbuffer_add_printf(out,
	    "# HELP sandboxd_provider_upstream_errors_total Requests that "
	    "failed on the way to a provider (connect, TLS, certificate, "
	    "malformed answer).\n"
	    "# TYPE sandboxd_provider_upstream_errors_total counter\n");
	for (i = 0; i < ctl->cf->nproviders; i++)
		evbuffer_add_printf(out, "sandboxd_provider_upstream_errors_"
		    "total{provider=\"%s\"} %llu\n", ctl->cf->providers[i].name,
		    (unsigned long long)pv->stats[i].upstream_errors);
	evbuffer_add_printf(out,
	    "# HELP sandboxd_provider_tokens_total Tokens the providers' "
	    "usage fields reported, by direction.\n"
	    "# TYPE sandboxd_provider_tokens_total counter\n");
	for (i = 0; i < ctl->cf->nproviders; i++) {
		name = ctl->cf->providers[i].name;
		evbuffer_add_printf(out, "sandboxd_provider_tokens_total"
		    "{provider=\"%s\",direction=\"input\"} %llu\n"
		    "sandboxd_provider_tokens_total"
		    "{provider=\"%s\",direction=\"output\"} %llu\n", name,
		    (unsigned long long)pv->stats[i].input_tokens, name,
		    (unsigned long long)pv->stats[i].output_tokens);
	}
}

/* Close every connection and the listener; wipe the keys. */
void
provider_free(struct provider *pv)
{
	struct provider_conn	*pc;
	size_t			 i, n;

	if (pv == NULL)
		return;
	while ((pc = LIST_FIRST(&pv->conns)) != NULL)
		provider_close(pc);
	if (pv->listener != NULL)
		evconnlistener_free(pv->listener);
	n = pv->ctl->cf->nproviders;
	for (i = 0; pv->keys != NULL && i < n; i++) {
		if (pv->keys[i] != NULL) {
			explicit_bzero(pv->keys[i], strlen(pv->keys[i]));
			free(pv->keys[i]);
		}
	}
	for (i = 0; pv->ssl != NULL && i < n; i++) {
		if (pv->ssl[i] != NULL)
			SSL_CTX_free(pv->ssl[i]);
	}
	if (pv->dns != NULL)
		evdns_base_free(pv->dns, 0);
	free(pv->keys);
	free(pv->ssl);
	free(pv->stats);
	free(pv);
}
