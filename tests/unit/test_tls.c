/*
 * edge/tls.c: certificate name matching for SNI, and loading pairs
 * (edge_tls_check, the same code SIGHUP runs) from files made here: a
 * matching pair, a key of another pair, a broken certificate, a broken
 * or good OCSP file, a certificate with no DNS name.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "edge/edge.h"
#include "tests/unit/unit.h"

static char	tmpdir[] = "/tmp/sbx-test-tls.XXXXXX";

static char	*path(const char *);
static void	 make_pair(const char *, const char *);
static int	 has(const char *, const char *);
static char	*check(const char *, const char *);

static char *
path(const char *name)
{
	char	*p;

	xasprintf(&p, "%s/%s", tmpdir, name);
	return p;
}

static int
has(const char *hay, const char *needle)
{
	if (hay == NULL || strstr(hay, needle) == NULL) {
		fprintf(stderr, "  want \"%s\" in \"%s\"\n", needle,
		    hay ? hay : "(null)");
		return 0;
	}
	return 1;
}

/* name.pem and name.key: a self-signed P-256 certificate for san. */
static void
make_pair(const char *name, const char *san)
{
	EVP_PKEY	*pk = EVP_EC_gen("P-256");
	X509		*x = X509_new();
	X509_EXTENSION	*ext;
	X509V3_CTX	 v3;
	FILE		*f;
	char		*p, file[64];

	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)"unit", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	if (san != NULL) {
		X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	X509_sign(x, pk, EVP_sha256());
	snprintf(file, sizeof file, "%s.pem", name);
	p = path(file);
	f = fopen(p, "w");
	PEM_write_X509(f, x);
	fclose(f);
	free(p);
	snprintf(file, sizeof file, "%s.key", name);
	p = path(file);
	f = fopen(p, "w");
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	chmod(p, 0600);
	free(p);
	X509_free(x);
	EVP_PKEY_free(pk);
}

/* edge_tls_check on one pair of files: NULL if it loads, else the cause. */
static char *
check(const char *cert, const char *key)
{
	struct config	 cfg;
	struct cfg_tls	 t;
	char		*cause = NULL;

	memset(&cfg, 0, sizeof cfg);
	cfg.path = "t.conf";
	t.cert = path(cert);
	t.key = path(key);
	t.cert_line = 3;
	t.key_line = 4;
	cfg.tls = &t;
	cfg.ntls = 1;
	if (edge_tls_check(&cfg, &cause) == 0)
		cause = NULL;
	free(t.cert);
	free(t.key);
	return cause;
}

static void
test_name_match(void)
{
	CHECK(edge_tls_name_match("*.preview.localhost", "a.preview.localhost"));
	CHECK(edge_tls_name_match("*.preview.localhost", "A.Preview.LocalHost"));
	CHECK(edge_tls_name_match("*.preview.localhost",
	    "3000-01jd3k5x8q2w7e9r4t6y1v3h5m.preview.localhost"));
	/* One label only. */
	CHECK(!edge_tls_name_match("*.preview.localhost",
	    "a.b.preview.localhost"));
	CHECK(!edge_tls_name_match("*.preview.localhost", "preview.localhost"));
	CHECK(!edge_tls_name_match("*.preview.localhost", ".preview.localhost"));
	CHECK(!edge_tls_name_match("*.preview.localhost", "apreview.localhost"));
	CHECK(!edge_tls_name_match("*.preview.localhost", "localhost"));
	CHECK(edge_tls_name_match("api.example.com", "API.example.com"));
	CHECK(!edge_tls_name_match("api.example.com", "x.api.example.com"));
	CHECK(!edge_tls_name_match("api.example.com", "api.example.co"));
	CHECK(!edge_tls_name_match("api.example.com", ""));
	/* A "*" elsewhere is no wildcard. */
	CHECK(!edge_tls_name_match("a*.example.com", "ab.example.com"));
	CHECK(edge_tls_name_match("a*.example.com", "a*.example.com"));
}

static void
test_load(void)
{
	char	*e, *p;
	FILE	*f;

	make_pair("a", "DNS:*.preview.localhost,DNS:api.example.com");
	make_pair("b", "DNS:b.example.com");
	make_pair("nosan", NULL);
	CHECK(check("a.pem", "a.key") == NULL);
	CHECK(check("nosan.pem", "nosan.key") == NULL);	/* the CN */

	e = check("a.pem", "b.key");
	CHECK(has(e, "t.conf:4: tls_key: "));
	CHECK(has(e, "b.key does not match tls_cert "));
	CHECK(has(e, "a.pem (line 3)"));
	free(e);

	e = check("missing.pem", "a.key");
	CHECK(has(e, "t.conf:3: tls_cert: "));
	CHECK(has(e, "missing.pem"));
	free(e);

	p = path("junk.pem");
	f = fopen(p, "w");
	fputs("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
	    f);
	fclose(f);
	free(p);
	e = check("junk.pem", "a.key");
	CHECK(has(e, "t.conf:3: tls_cert: "));
	free(e);
	e = check("a.pem", "junk.pem");
	CHECK(has(e, "t.conf:4: tls_key: "));
	free(e);

	/* An OCSP file that is not one fails the load; none is fine. */
	p = path("a.pem.ocsp");
	f = fopen(p, "w");
	fputs("not DER", f);
	fclose(f);
	e = check("a.pem", "a.key");
	CHECK(has(e, "a.pem.ocsp: not a DER OCSP response"));
	free(e);
	f = fopen(p, "w");
	fclose(f);
	e = check("a.pem", "a.key");
	CHECK(has(e, "a.pem.ocsp: not a regular file of 1 to"));
	free(e);
	unlink(p);
	free(p);
	CHECK(check("a.pem", "a.key") == NULL);
}

int
main(void)
{
	char	cmd[128];

	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	log_init(LOG_LEVEL_WARN);
	RUN(test_name_match);
	RUN(test_load);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return unit_finish();
}
