/*
 * TLS on the tls_listen listeners (OpenSSL 3): one server context per
 * tls_cert/tls_key pair, the SNI callback choosing among them, ALPN,
 * session tickets under keys rotated every EDGE_TLS_TICKET_ROTATE_MS,
 * OCSP stapling from a "<tls_cert>.ocsp" file, and SIGHUP reloads.
 *
 * The contexts of one load form a set, counted by reference: the edge
 * holds the current one and every TLS connection the one it started on,
 * because that connection's SNI callback looks in its own set. A reload
 * builds a whole new set and swaps it in only if every pair loaded;
 * connections already open keep theirs (an SSL also holds its SSL_CTX).
 *
 * conn.c is the only caller outside this file: nothing above the
 * connection sees TLS, except conn->tls for the scheme.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

#define EDGE_TLS_TICKET_ROTATE_MS (12LL * 3600 * 1000)
/* A ticket is good while its key is current or previous: up to 2x this. */
#define EDGE_TLS_SESSION_TIMEOUT_S (12 * 3600)
#define EDGE_TLS_OCSP_MAX	(64 * 1024)

/*
 * TLS 1.2: ECDHE key exchange with AEAD ciphers only (Mozilla's
 * "intermediate" list without DHE). TLS 1.3 suites are all AEAD; its
 * default list stands.
 */
#define EDGE_TLS_CIPHERS						\
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"	\
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"	\
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define EDGE_TLS_SUITES							\
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"		\
	"TLS_CHACHA20_POLY1305_SHA256"
#define EDGE_TLS_GROUPS		"X25519:P-256:P-384"

/* What ALPN offers, most preferred first, in wire form. */
static const unsigned char edge_tls_alpn_list[] = "\x02h2\x08http/1.1";

/* A session ticket key: encrypts and authenticates the ticket. */
struct edge_tls_ticket_key {
	unsigned char	 name[16];
	unsigned char	 aes[32];
	unsigned char	 hmac[32];
	int		 valid;
};

/* One tls_cert/tls_key pair loaded. */
struct edge_tls_cert {
	SSL_CTX		*ctx;
	char		**names;	/* SAN DNS names, else the CN */
	size_t		 nnames;
	unsigned char	*ocsp;		/* DER OCSP response, or NULL */
	size_t		 ocsp_len;
};

/* The contexts of one load. */
struct edge_tls_set {
	int			 refs;
	struct edge_tls_cert	*certs;		/* [0] is the default */
	size_t			 ncerts;
};

struct edge_tls {
	struct edge			*edge;
	struct edge_tls_set		*set;		/* new handshakes */
	/* [0] issues tickets, [1] (the one before) is still accepted. */
	struct edge_tls_ticket_key	 keys[2];
	struct event			*rotate_ev;
	/* Fetched once: an EVP_aes_256_cbc() init looks it up every time. */
	EVP_CIPHER			*aes;
};

static struct edge_tls_set *edge_tls_set_load(struct edge_tls *,
		    const struct config *, char **);
static void	edge_tls_set_unref(struct edge_tls_set *);
static SSL_CTX	*edge_tls_ctx_new(struct edge_tls *, struct edge_tls_set *,
		    struct edge_tls_cert *, const struct config *,
		    const struct cfg_tls *, char **);
static int	edge_tls_names(struct edge_tls_cert *, X509 *);
static int	edge_tls_ocsp_load(struct edge_tls_cert *, const char *,
		    char **);
static char	*edge_tls_errors(void);
static void	edge_tls_rotate(struct edge_tls *);
static void	edge_tls_rotate_cb(evutil_socket_t, short, void *);
static int	edge_tls_hello_cb(SSL *, int *, void *);
static int	edge_tls_sni_cb(SSL *, int *, void *);
static int	edge_tls_alpn_cb(SSL *, const unsigned char **,
		    unsigned char *, const unsigned char *, unsigned int,
		    void *);
static int	edge_tls_status_cb(SSL *, void *);
static int	edge_tls_ticket_cb(SSL *, unsigned char *, unsigned char *,
		    EVP_CIPHER_CTX *, EVP_MAC_CTX *, int);

/* Index of the SSL_CTX ex_data that points at the edge's struct edge_tls. */
static int	edge_tls_ctx_index = -1;

/*
 * 1 if a certificate name matches a server name (both without a trailing
 * dot, compared without case): exactly, or "*.x" matching one label and
 * ".x" ("a.x", not "x" nor "a.b.x").
 */
int
edge_tls_name_match(const char *pattern, const char *name)
{
	const char	*dot;

	if (pattern[0] == '*' && pattern[1] == '.') {
		dot = strchr(name, '.');
		if (dot == NULL || dot == name)
			return 0;
		return strcasecmp(dot, pattern + 1) == 0;
	}
	return strcasecmp(pattern, name) == 0;
}

/*
 * Load the certificates and start the ticket key rotation, if the config
 * has a TLS listener; -1 with *cause (every pair's problems) on failure.
 */
int
edge_tls_init(struct edge *edge, char **cause)
{
	struct edge_tls	*tls;
	struct timeval	 tv;

	if (edge->cfg->ntls_listen == 0)
		return 0;
	if (edge_tls_ctx_index == -1)
		edge_tls_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL,
		    NULL, NULL);
	tls = xcalloc(1, sizeof *tls);
	tls->edge = edge;
	if ((tls->aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) == NULL) {
		ERR_clear_error();
		free(tls);
		*cause = xstrdup("OpenSSL has no AES-256-CBC for session tickets");
		return -1;
	}
	edge_tls_rotate(tls);
	if ((tls->set = edge_tls_set_load(tls, edge->cfg, cause)) == NULL) {
		explicit_bzero(tls->keys, sizeof tls->keys);
		EVP_CIPHER_free(tls->aes);
		free(tls);
		return -1;
	}
	tls->rotate_ev = event_new(edge->base, -1, EV_PERSIST,
	    edge_tls_rotate_cb, tls);
	tv.tv_sec = EDGE_TLS_TICKET_ROTATE_MS / 1000;
	tv.tv_usec = 0;
	evtimer_add(tls->rotate_ev, &tv);
	edge->tls = tls;
	return 0;
}

/* Release the current set and the keys (connections hold their own sets). */
void
edge_tls_free(struct edge *edge)
{
	struct edge_tls	*tls = edge->tls;

	if (tls == NULL)
		return;
	edge_tls_set_unref(tls->set);
	event_free(tls->rotate_ev);
	explicit_bzero(tls->keys, sizeof tls->keys);
	EVP_CIPHER_free(tls->aes);
	free(tls);
	edge->tls = NULL;
}

/*
 * Load every pair anew (SIGHUP) and use them for new handshakes; on any
 * problem log it and keep the old ones. 0 if swapped, -1 if kept.
 */
int
edge_tls_reload(struct edge *edge)
{
	struct edge_tls		*tls = edge->tls;
	struct edge_tls_set	*set;
	char			*cause = NULL;

	if (tls == NULL) {
		log_info("no tls_listen: no certificates to reload");
		return 0;
	}
	if ((set = edge_tls_set_load(tls, edge->cfg, &cause)) == NULL) {
		log_warnx("TLS reload failed, keeping the certificates in "
		    "use: %s", cause);
		free(cause);
		return -1;
	}
	edge_tls_set_unref(tls->set);
	tls->set = set;
	log_info("TLS certificates reloaded\tcount=%zu", set->ncerts);
	return 0;
}

/*
 * Check that every pair of cfg loads (certificate, key, their match, the
 * OCSP file): for check-config. -1 with *cause.
 */
int
edge_tls_check(const struct config *cfg, char **cause)
{
	struct edge_tls		 tls;
	struct edge_tls_set	*set;

	if (cfg->ntls == 0)
		return 0;
	if (edge_tls_ctx_index == -1)
		edge_tls_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL,
		    NULL, NULL);
	memset(&tls, 0, sizeof tls);
	if ((set = edge_tls_set_load(&tls, cfg, cause)) == NULL)
		return -1;
	edge_tls_set_unref(set);
	return 0;
}

/*
 * An SSL for a new connection on the current set, which *setp then holds
 * a reference to (edge_tls_conn_done drops it); NULL on failure.
 */
SSL *
edge_tls_ssl_new(struct edge *edge, struct edge_tls_set **setp)
{
	struct edge_tls_set	*set = edge->tls->set;
	SSL			*ssl;

	if ((ssl = SSL_new(set->certs[0].ctx)) == NULL) {
		ERR_clear_error();
		return NULL;
	}
	set->refs++;
	*setp = set;
	return ssl;
}

/* The connection no longer needs its set. */
void
edge_tls_conn_done(struct edge_tls_set **setp)
{
	if (*setp != NULL)
		edge_tls_set_unref(*setp);
	*setp = NULL;
}

/* The protocol ALPN chose on an established connection. */
enum edge_alpn
edge_tls_alpn(SSL *ssl)
{
	const unsigned char	*p;
	unsigned int		 len;

	SSL_get0_alpn_selected(ssl, &p, &len);
	if (len == 2 && memcmp(p, "h2", 2) == 0)
		return EDGE_ALPN_H2;
	if (len == 8 && memcmp(p, "http/1.1", 8) == 0)
		return EDGE_ALPN_HTTP11;
	return EDGE_ALPN_NONE;
}

/*
 * Send close_notify, once, if the session is still sound: after a fatal
 * error OpenSSL must not be asked to. A socket that does not take it now
 * does not get it (the connection is closing anyway).
 */
void
edge_tls_close_notify(SSL *ssl)
{
	if (ssl == NULL || !SSL_is_init_finished(ssl) ||
	    (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
		return;
	ERR_clear_error();
	SSL_shutdown(ssl);
	ERR_clear_error();
}

/*
 * The first error OpenSSL queued for the failed call (none: the peer
 * closed), for the debug log; the queue is left empty for the next call.
 */
const char *
edge_tls_error(void)
{
	static char	 buf[256];
	unsigned long	 e;

	e = ERR_get_error();
	ERR_clear_error();
	if (e == 0)
		return "connection closed";
	ERR_error_string_n(e, buf, sizeof buf);
	return buf;
}

/* Drop a reference to a set; the last one frees its contexts. */
static void
edge_tls_set_unref(struct edge_tls_set *set)
{
	struct edge_tls_cert	*c;
	size_t			 i, j;

	if (set == NULL || --set->refs > 0)
		return;
	for (i = 0; i < set->ncerts; i++) {
		c = &set->certs[i];
		SSL_CTX_free(c->ctx);
		for (j = 0; j < c->nnames; j++)
			free(c->names[j]);
		free(c->names);
		free(c->ocsp);
	}
	free(set->certs);
	free(set);
}

/* Every pair of cfg as a new set (one reference); NULL with *cause. */
static struct edge_tls_set *
edge_tls_set_load(struct edge_tls *tls, const struct config *cfg,
    char **cause)
{
	struct edge_tls_set	*set;
	struct edge_tls_cert	*c;
	char			*why, *all = NULL, *tmp;
	size_t			 i;

	set = xcalloc(1, sizeof *set);
	set->refs = 1;
	set->certs = xcalloc(cfg->ntls, sizeof *set->certs);
	for (i = 0; i < cfg->ntls; i++) {
		/* Counted even if it fails: the unref below frees it all. */
		c = &set->certs[set->ncerts++];
		c->ctx = edge_tls_ctx_new(tls, set, c, cfg, &cfg->tls[i],
		    &why);
		if (c->ctx == NULL) {
			if (all == NULL)
				all = why;
			else {
				xasprintf(&tmp, "%s; %s", all, why);
				free(all);
				free(why);
				all = tmp;
			}
		}
	}
	if (all != NULL || set->ncerts == 0) {
		if (all == NULL)
			all = xstrdup("no tls_cert/tls_key pair");
		*cause = all;
		edge_tls_set_unref(set);
		return NULL;
	}
	return set;
}

/*
 * A server context for one pair: the protocol policy, the chain and key
 * (checked to match), its names for SNI, its OCSP response, and the
 * callbacks. NULL with *cause naming the file, line and key.
 */
static SSL_CTX *
edge_tls_ctx_new(struct edge_tls *tls, struct edge_tls_set *set,
    struct edge_tls_cert *c, const struct config *cfg,
    const struct cfg_tls *pair, char **cause)
{
	SSL_CTX		*ctx;
	char		*err, *why = NULL;
	long		 opts;
	int		 e;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		err = edge_tls_errors();
		xasprintf(cause, "SSL_CTX_new: %s", err);
		free(err);
		return NULL;
	}
	SSL_CTX_set_ex_data(ctx, edge_tls_ctx_index, tls);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	/*
	 * Our cipher order for TLS 1.2 (GCM first, but ChaCha20 for a
	 * client that puts it first: it lacks AES instructions); for TLS
	 * 1.3, where every suite is strong, the client's order:
	 * edge_tls_hello_cb picks per connection.
	 */
	opts = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_PRIORITIZE_CHACHA;
	SSL_CTX_set_options(ctx, opts);
	SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
	SSL_CTX_set_client_hello_cb(ctx, edge_tls_hello_cb, NULL);
	/*
	 * conn.c repeats a blocked write from wherever its output is then
	 * (moving), one record at most, all or nothing: no
	 * SSL_MODE_ENABLE_PARTIAL_WRITE. Idle connections free their
	 * buffers.
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	    SSL_MODE_RELEASE_BUFFERS);
	/*
	 * Read whatever the socket holds, not a record header and then its
	 * body: one read call per record instead of two. conn.c then asks
	 * SSL_has_pending, as the socket will not say more is there.
	 */
	SSL_CTX_set_read_ahead(ctx, 1);
	if (SSL_CTX_set_cipher_list(ctx, EDGE_TLS_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, EDGE_TLS_SUITES) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, EDGE_TLS_GROUPS) != 1) {
		why = xstrdup("cannot set the cipher policy");
		goto fail;
	}
	/*
	 * Resumption by tickets alone: they live in the client, under our
	 * rotating keys, so no server cache is needed (none to share
	 * between contexts, nor to grow with clients).
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sandboxd",
	    8);
	SSL_CTX_set_timeout(ctx, EDGE_TLS_SESSION_TIMEOUT_S);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, edge_tls_ticket_cb);

	if (SSL_CTX_use_certificate_chain_file(ctx, pair->cert) != 1) {
		err = edge_tls_errors();
		xasprintf(cause, "%s:%d: tls_cert: %s: %s", cfg->path,
		    pair->cert_line, pair->cert, err);
		free(err);
		goto fail_cause;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, pair->key, SSL_FILETYPE_PEM) !=
	    1) {
		e = ERR_GET_REASON(ERR_peek_last_error());
		if (e == X509_R_KEY_VALUES_MISMATCH ||
		    e == X509_R_KEY_TYPE_MISMATCH) {
			ERR_clear_error();
			goto mismatch;
		}
		err = edge_tls_errors();
		xasprintf(cause, "%s:%d: tls_key: %s: %s", cfg->path,
		    pair->key_line, pair->key, err);
		free(err);
		goto fail_cause;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
mismatch:
		xasprintf(cause, "%s:%d: tls_key: %s does not match tls_cert "
		    "%s (line %d)", cfg->path, pair->key_line, pair->key,
		    pair->cert, pair->cert_line);
		goto fail_cause;
	}
	if (edge_tls_names(c, SSL_CTX_get0_certificate(ctx)) != 0) {
		xasprintf(cause, "%s:%d: tls_cert: %s: the certificate names "
		    "no DNS host", cfg->path, pair->cert_line, pair->cert);
		goto fail_cause;
	}
	if (edge_tls_ocsp_load(c, pair->cert, &why) != 0) {
		xasprintf(cause, "%s:%d: tls_cert: %s", cfg->path,
		    pair->cert_line, why);
		free(why);
		goto fail_cause;
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, edge_tls_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, set);
	SSL_CTX_set_alpn_select_cb(ctx, edge_tls_alpn_cb, NULL);
	SSL_CTX_set_tlsext_status_cb(ctx, edge_tls_status_cb);
	SSL_CTX_set_tlsext_status_arg(ctx, c);
	return ctx;

fail:
	err = edge_tls_errors();
	xasprintf(cause, "%s:%d: tls_cert: %s: %s%s%s", cfg->path,
	    pair->cert_line, pair->cert, why, err[0] != '\0' ? ": " : "", err);
	free(err);
	free(why);
fail_cause:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* The names SNI matches against: SAN DNS entries, else the subject CN. */
static int
edge_tls_names(struct edge_tls_cert *c, X509 *x)
{
	GENERAL_NAMES		*gens;
	const GENERAL_NAME	*g;
	X509_NAME		*subj;
	char			 cn[256], *s;
	int			 i, n, len;

	if (x == NULL)
		return -1;
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	n = gens != NULL ? sk_GENERAL_NAME_num(gens) : 0;
	for (i = 0; i < n; i++) {
		g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_DNS)
			continue;
		len = ASN1_STRING_length(g->d.dNSName);
		if (len <= 0 || len > 253)
			continue;
		s = xmalloc((size_t)len + 1);
		memcpy(s, ASN1_STRING_get0_data(g->d.dNSName), (size_t)len);
		s[len] = '\0';
		if (strlen(s) != (size_t)len) {
			free(s);
			continue;
		}
		c->names = xreallocarray(c->names, c->nnames + 1,
		    sizeof *c->names);
		c->names[c->nnames++] = s;
	}
	GENERAL_NAMES_free(gens);
	if (c->nnames > 0)
		return 0;
	subj = X509_get_subject_name(x);
	len = X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof cn);
	if (len <= 0 || (size_t)len != strlen(cn))
		return -1;
	c->names = xcalloc(1, sizeof *c->names);
	c->names[c->nnames++] = xstrdup(cn);
	return 0;
}

/*
 * The stapled OCSP response: "<cert>.ocsp" (DER, as `openssl ocsp
 * -respout` writes it) if that file exists. It must parse and say
 * "successful"; one past its nextUpdate is not stapled (logged).
 */
static int
edge_tls_ocsp_load(struct edge_tls_cert *c, const char *cert, char **why)
{
	OCSP_RESPONSE		*resp = NULL;
	OCSP_BASICRESP		*basic = NULL;
	OCSP_SINGLERESP		*single;
	ASN1_GENERALIZEDTIME	*next = NULL;
	const unsigned char	*p;
	unsigned char		*buf = NULL;
	struct stat		 sb;
	char			*path;
	ssize_t			 n;
	int			 fd, day, sec, rv = -1;

	xasprintf(&path, "%s.ocsp", cert);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT) {
			free(path);
			return 0;
		}
		xasprintf(why, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode) || sb.st_size <= 0 ||
	    sb.st_size > EDGE_TLS_OCSP_MAX) {
		xasprintf(why, "%s: not a regular file of 1 to %d bytes", path,
		    EDGE_TLS_OCSP_MAX);
		goto out;
	}
	buf = xmalloc((size_t)sb.st_size);
	n = read(fd, buf, (size_t)sb.st_size);
	if (n != sb.st_size) {
		xasprintf(why, "%s: short read", path);
		goto out;
	}
	p = buf;
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)n);
	if (resp == NULL || p != buf + n) {
		xasprintf(why, "%s: not a DER OCSP response", path);
		goto out;
	}
	if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		xasprintf(why, "%s: OCSP response status is %s", path,
		    OCSP_response_status_str(OCSP_response_status(resp)));
		goto out;
	}
	if ((basic = OCSP_response_get1_basic(resp)) == NULL ||
	    (single = OCSP_resp_get0(basic, 0)) == NULL) {
		xasprintf(why, "%s: OCSP response has no status", path);
		goto out;
	}
	OCSP_single_get0_status(single, NULL, NULL, NULL, &next);
	if (next != NULL && ASN1_TIME_diff(&day, &sec, NULL, next) == 1 &&
	    (day < 0 || sec < 0)) {
		log_warnx("OCSP response is past its nextUpdate; not "
		    "stapling it\tfile=%s", path);
		rv = 0;
		goto out;
	}
	c->ocsp = buf;
	c->ocsp_len = (size_t)n;
	buf = NULL;
	rv = 0;
out:
	if (rv != 0)
		ERR_clear_error();
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(resp);
	free(buf);
	if (fd != -1)
		close(fd);
	free(path);
	return rv;
}

/* OpenSSL's queued errors as one string (empty if none); clears them. */
static char *
edge_tls_errors(void)
{
	char		 buf[256], *s = xstrdup(""), *tmp;
	unsigned long	 e;

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof buf);
		xasprintf(&tmp, "%s%s%s", s, s[0] != '\0' ? "; " : "", buf);
		free(s);
		s = tmp;
	}
	return s;
}

/* A fresh ticket key in front; the current one stays for decryption. */
static void
edge_tls_rotate(struct edge_tls *tls)
{
	struct edge_tls_ticket_key	*k = &tls->keys[0];

	tls->keys[1] = tls->keys[0];
	if (RAND_bytes(k->name, sizeof k->name) != 1 ||
	    RAND_bytes(k->aes, sizeof k->aes) != 1 ||
	    RAND_bytes(k->hmac, sizeof k->hmac) != 1) {
		/* No randomness: no tickets (full handshakes) until next. */
		ERR_clear_error();
		k->valid = 0;
		log_warnx("RAND_bytes failed: session tickets off until the "
		    "next rotation");
		return;
	}
	k->valid = 1;
}

static void
edge_tls_rotate_cb(evutil_socket_t fd, short events, void *arg)
{
	edge_tls_rotate(arg);
	log_debug("TLS ticket key rotated");
}

/*
 * Encrypt a new ticket under the current key (enc), or find the key a
 * presented ticket names: 1 to accept, 2 to accept and issue a fresh one,
 * 0 for a full handshake.
 */
static int
edge_tls_ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct edge_tls			*tls;
	struct edge_tls_ticket_key	*k = NULL;
	OSSL_PARAM			 params[3];
	int				 i;

	tls = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), edge_tls_ctx_index);
	if (tls == NULL)
		return enc ? -1 : 0;
	if (enc) {
		k = &tls->keys[0];
		if (!k->valid || RAND_bytes(iv, 16) != 1)
			return -1;
		memcpy(name, k->name, sizeof k->name);
	} else {
		for (i = 0; i < 2 && k == NULL; i++) {
			if (tls->keys[i].valid && memcmp(name,
			    tls->keys[i].name, sizeof tls->keys[i].name) == 0)
				k = &tls->keys[i];
		}
		if (k == NULL)
			return 0;
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    k->hmac, sizeof k->hmac);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	if (enc) {
		if (EVP_EncryptInit_ex(cctx, tls->aes, NULL, k->aes,
		    iv) != 1)
			return -1;
		return 1;
	}
	if (EVP_DecryptInit_ex(cctx, tls->aes, NULL, k->aes, iv) != 1)
		return -1;
	/*
	 * A TLS 1.3 client uses a ticket once, and OpenSSL issues a new one
	 * after a resumption only when told to (2): without it every other
	 * connection of a client was a full handshake.
	 */
	if (k != &tls->keys[0] || SSL_version(ssl) == TLS1_3_VERSION)
		return 2;
	return 1;
}

/*
 * Before the version and cipher are chosen: a client offering TLS 1.3
 * will get it (it is our highest), and then its own suite order wins;
 * for TLS 1.2 ours does.
 */
static int
edge_tls_hello_cb(SSL *ssl, int *alert, void *arg)
{
	const unsigned char	*p;
	size_t			 len, i;

	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions,
	    &p, &len) != 1 || len < 1 || (size_t)p[0] + 1 > len)
		return SSL_CLIENT_HELLO_SUCCESS;
	for (i = 1; i + 1 < (size_t)p[0] + 1; i += 2) {
		if (p[i] == 0x03 && p[i + 1] == 0x04) {
			SSL_clear_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
			break;
		}
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

/*
 * SNI: the pair whose names match the server name, an exact name before
 * a wildcard; no match (or no SNI) keeps the first pair. The set is the
 * one this connection started on, whatever a reload did since.
 */
static int
edge_tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct edge_tls_set	*set = arg;
	struct edge_tls_cert	*c, *found = NULL;
	const char		*name;
	size_t			 i, j;
	int			 pass;

	name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name == NULL || set->ncerts < 2)
		return SSL_TLSEXT_ERR_OK;
	for (pass = 0; pass < 2 && found == NULL; pass++) {
		for (i = 0; i < set->ncerts && found == NULL; i++) {
			c = &set->certs[i];
			for (j = 0; j < c->nnames && found == NULL; j++) {
				if ((c->names[j][0] == '*') == (pass == 1) &&
				    edge_tls_name_match(c->names[j], name))
					found = c;
			}
		}
	}
	if (found != NULL && found->ctx != SSL_get_SSL_CTX(ssl))
		SSL_set_SSL_CTX(ssl, found->ctx);
	return SSL_TLSEXT_ERR_OK;
}

/* ALPN: our first protocol the client also offers; none: HTTP/1.1. */
static int
edge_tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char	*sel;

	if (SSL_select_next_proto(&sel, outlen, edge_tls_alpn_list,
	    sizeof edge_tls_alpn_list - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* The client asked for a stapled OCSP response: the pair's, if any. */
static int
edge_tls_status_cb(SSL *ssl, void *arg)
{
	struct edge_tls_cert	*c = arg;
	unsigned char		*copy;

	if (c->ocsp == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	/* OpenSSL frees what it is given. */
	if ((copy = OPENSSL_memdup(c->ocsp, c->ocsp_len)) == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)c->ocsp_len) !=
	    1) {
		OPENSSL_free(copy);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}
