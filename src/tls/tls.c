#include "tls/tls.h"

#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Per thread: contexts may be built on a reload thread while a worker formats its own
 * errors, and a shared static buffer would mix their messages. */
static _Thread_local char tls_errbuf[1024];

/* The most specific OpenSSL reason queued, then clears the queue so the next failure
 * does not report a stale reason. */
static const char *tls_openssl_reason(void)
{
	static _Thread_local char reason[256];
	unsigned long e = ERR_peek_last_error();
	if (e == 0) {
		snprintf(reason, sizeof(reason), "unknown OpenSSL error");
	} else {
		const char *r = ERR_reason_error_string(e);
		if (r != NULL)
			snprintf(reason, sizeof(reason), "%s", r);
		else
			ERR_error_string_n(e, reason, sizeof(reason));
	}
	ERR_clear_error();
	return reason;
}

__attribute__((format(printf, 2, 3))) static int tls_fail(const char **error_r, const char *fmt,
							  ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tls_errbuf, sizeof(tls_errbuf), fmt, ap);
	va_end(ap);
	*error_r = tls_errbuf;
	return -1;
}

/* Common hardening of both directions.  Compression is off because of CRIME;
 * renegotiation because SMTP, IMAP and POP3 never need it and it has been a DoS and
 * injection vector (CVE-2009-3555). */
static int tls_ctx_harden(SSL_CTX *ctx, const char **error_r)
{
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		return tls_fail(error_r, "cannot require TLS 1.2: %s", tls_openssl_reason());
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	return 0;
}

/* TLS 1.2 suites: forward secret AEAD first, then forward secret CBC, then plain RSA
 * key exchange last.  MX traffic is opportunistic: refusing an old peer sends its mail
 * in clear text, which is worse than an old suite.  TLS 1.3 suites are OpenSSL's. */
#define TLS_CIPHERS_12                                                                      \
	"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES:AESGCM:AES:" \
	"!aNULL:!eNULL:!MD5:!DSS:!PSK:!SRP:!CAMELLIA:!ARIA:!3DES"

static int tls_check_readable(const char *what, const char *path, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tls_fail(error_r, "%s %s: cannot open: %s", what, path, strerror(errno));
	close(fd);
	return 0;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char **error_r)
{
	ERR_clear_error();
	if (tls_check_readable("certificate", cert_file, error_r) < 0 ||
	    tls_check_readable("key", key_file, error_r) < 0)
		return NULL;

	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		tls_fail(error_r, "cannot create TLS context: %s", tls_openssl_reason());
		return NULL;
	}
	if (tls_ctx_harden(ctx, error_r) < 0)
		goto fail;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Tickets resume sessions without server-side state shared between workers;
	 * the keys live in ctx, so workers forked after this share them. */
	SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	static const unsigned char sid_ctx[] = "tern";
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1) {
		tls_fail(error_r, "cannot set cipher list: %s", tls_openssl_reason());
		goto fail;
	}
	/* DHE suites need parameters; auto picks ones matching the certificate strength. */
	SSL_CTX_set_dh_auto(ctx, 1);

	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		tls_fail(error_r, "certificate %s: cannot load a PEM certificate chain: %s",
			 cert_file, tls_openssl_reason());
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		/* Loading already compares the key with the certificate: the mismatch
		 * is the admin's usual mistake, so say it in plain words. */
		unsigned long e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
		     ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))
			tls_fail(error_r, "key %s does not match the certificate in %s: %s",
				 key_file, cert_file, tls_openssl_reason());
		else
			tls_fail(error_r, "key %s: cannot load a PEM private key: %s", key_file,
				 tls_openssl_reason());
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_fail(error_r, "key %s does not match the certificate in %s: %s", key_file,
			 cert_file, tls_openssl_reason());
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *tls_client_ctx_new(const char **error_r)
{
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		tls_fail(error_r, "cannot create TLS client context: %s", tls_openssl_reason());
		return NULL;
	}
	if (tls_ctx_harden(ctx, error_r) < 0)
		goto fail;
	if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		tls_fail(error_r, "cannot load the system trust store: %s", tls_openssl_reason());
		goto fail;
	}
	/* Most MX hosts have certificates that do not verify; the policy (RFC 7435
	 * opportunistic, MTA-STS, DANE) decides what a failure means, not the handshake. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_describe(SSL *ssl, char *out, size_t cap)
{
	if (cap == 0)
		return;
	const SSL_CIPHER *c = ssl != NULL ? SSL_get_current_cipher(ssl) : NULL;
	if (c == NULL) {
		snprintf(out, cap, "version=none");
		return;
	}
	snprintf(out, cap, "version=%s cipher=%s bits=%d", SSL_get_version(ssl),
		 SSL_CIPHER_get_name(c), SSL_CIPHER_get_bits(c, NULL));
}

/* ---- self-signed certificate ---- */

#define TLS_SELFSIGNED_DAYS 3653 /* ten years, leap days included */

/* Hostnames go into an OpenSSL extension string ("DNS:a,DNS:b"): a comma or colon in
 * one would add entries of its own, so only DNS characters pass. */
static int tls_hostname_valid(const char *h)
{
	size_t len = strlen(h);
	if (len == 0 || len > 253 || h[0] == '.' || h[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = h[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return 0;
		if (c == '.' && h[i + 1] == '.')
			return 0;
	}
	return 1;
}

static int tls_add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	if (ext == NULL)
		return -1;
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : -1;
}

static X509 *tls_selfsigned_make(EVP_PKEY *pkey, const char *hostname, const char **error_r)
{
	X509 *x = X509_new();
	BIGNUM *serial = BN_new();
	if (x == NULL || serial == NULL)
		goto fail_ssl;
	if (X509_set_version(x, X509_VERSION_3) != 1)
		goto fail_ssl;
	/* RFC 5280 4.1.2.2: positive, at most 20 octets; random so that a regenerated
	 * certificate never repeats issuer+serial of an older one. */
	if (BN_rand(serial, 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1)
		goto fail_ssl;
	if (BN_is_zero(serial) && BN_set_word(serial, 1) != 1)
		goto fail_ssl;
	if (BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) == NULL)
		goto fail_ssl;
	/* An hour back so peers with a slightly late clock accept it at once. */
	if (X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), TLS_SELFSIGNED_DAYS, 0, NULL) == NULL)
		goto fail_ssl;
	if (X509_set_pubkey(x, pkey) != 1)
		goto fail_ssl;

	/* The CN is limited to 64 characters (RFC 5280 ub-common-name); a longer name
	 * still verifies through subjectAltName, which clients check first (RFC 6125). */
	char cn[65];
	if (strlen(hostname) <= 64)
		snprintf(cn, sizeof(cn), "%s", hostname);
	else
		snprintf(cn, sizeof(cn), "%.*s", (int)strcspn(hostname, "."), hostname);
	X509_NAME *name = X509_get_subject_name(x);
	if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
				       -1, 0) != 1)
		goto fail_ssl;
	if (X509_set_issuer_name(x, name) != 1)
		goto fail_ssl;

	char san[600];
	if (strcmp(hostname, "localhost") == 0)
		snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,IP:::1");
	else
		snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", hostname);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if (tls_add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    tls_add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") < 0 ||
	    tls_add_ext(x, &v3, NID_ext_key_usage, "serverAuth") < 0 ||
	    tls_add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
	    tls_add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") < 0 ||
	    tls_add_ext(x, &v3, NID_subject_alt_name, san) < 0)
		goto fail_ssl;
	if (X509_sign(x, pkey, EVP_sha256()) <= 0)
		goto fail_ssl;
	BN_free(serial);
	return x;
fail_ssl:
	tls_fail(error_r, "cannot build a self-signed certificate: %s", tls_openssl_reason());
	BN_free(serial);
	X509_free(x);
	return NULL;
}

/* tmp -> write -> fsync -> rename -> fsync(dir), with the mode set by fchmod so that
 * the process umask cannot change it (a 0644 certificate stays readable). */
static int tls_write_durable(const char *path, const void *data, size_t len, mode_t mode,
			     const char **error_r)
{
	char dir[4096], tmp[4200];
	file_dirname(path, dir, sizeof(dir));
	if (file_mkdir_p(dir, 0700) < 0)
		return tls_fail(error_r, "cannot create directory %s: %s", dir, strerror(errno));
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return tls_fail(error_r, "%s: path too long", path);
	/* A tmp file of ours left by a crash with the same pid is garbage. */
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return tls_fail(error_r, "cannot create %s: %s", tmp, strerror(errno));
	if (fchmod(fd, mode) < 0 || file_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		int saved = errno;
		close(fd);
		unlink(tmp);
		return tls_fail(error_r, "cannot write %s: %s", tmp, strerror(saved));
	}
	if (close(fd) < 0) {
		int saved = errno;
		unlink(tmp);
		return tls_fail(error_r, "cannot write %s: %s", tmp, strerror(saved));
	}
	if (rename(tmp, path) < 0) {
		int saved = errno;
		unlink(tmp);
		return tls_fail(error_r, "cannot rename %s to %s: %s", tmp, path, strerror(saved));
	}
	if (file_fsync_dir(dir) < 0)
		return tls_fail(error_r, "cannot fsync directory %s: %s", dir, strerror(errno));
	return 0;
}

static int tls_pem_to_mem(BIO *bio, const char **data_r, size_t *len_r)
{
	BUF_MEM *mem = NULL;
	BIO_get_mem_ptr(bio, &mem);
	if (mem == NULL)
		return -1;
	*data_r = mem->data;
	*len_r = mem->length;
	return 0;
}

int tls_selfsigned_ensure(const char *cert_file, const char *key_file, const char *hostname,
			  const char **error_r)
{
	struct stat st;
	int have_cert, have_key;

	if (lstat(cert_file, &st) == 0)
		have_cert = 1;
	else if (errno == ENOENT)
		have_cert = 0;
	else
		return tls_fail(error_r, "certificate %s: %s", cert_file, strerror(errno));
	if (lstat(key_file, &st) == 0)
		have_key = 1;
	else if (errno == ENOENT)
		have_key = 0;
	else
		return tls_fail(error_r, "key %s: %s", key_file, strerror(errno));

	if (have_cert && have_key)
		return 0;
	if (have_cert != have_key)
		return tls_fail(error_r,
				"%s %s exists but %s %s does not: provide both, or remove "
				"the one left to have a self-signed pair generated",
				have_cert ? "certificate" : "key", have_cert ? cert_file : key_file,
				have_cert ? "key" : "certificate", have_cert ? key_file : cert_file);
	if (!tls_hostname_valid(hostname))
		return tls_fail(error_r, "cannot make a certificate for hostname '%s': not a "
					 "DNS name",
				hostname);

	ERR_clear_error();
	int ret = -1;
	X509 *x = NULL;
	BIO *key_bio = NULL, *cert_bio = NULL;
	/* P-256: what every TLS 1.2+ client supports and cheaper per handshake than RSA. */
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (pkey == NULL) {
		tls_fail(error_r, "cannot generate an ECDSA P-256 key: %s", tls_openssl_reason());
		goto out;
	}
	x = tls_selfsigned_make(pkey, hostname, error_r);
	if (x == NULL)
		goto out;

	key_bio = BIO_new(BIO_s_mem());
	cert_bio = BIO_new(BIO_s_mem());
	if (key_bio == NULL || cert_bio == NULL ||
	    PEM_write_bio_PrivateKey(key_bio, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_X509(cert_bio, x) != 1) {
		tls_fail(error_r, "cannot encode the self-signed pair: %s", tls_openssl_reason());
		goto out;
	}
	const char *key_pem, *cert_pem;
	size_t key_len, cert_len;
	if (tls_pem_to_mem(key_bio, &key_pem, &key_len) < 0 ||
	    tls_pem_to_mem(cert_bio, &cert_pem, &cert_len) < 0) {
		tls_fail(error_r, "cannot encode the self-signed pair");
		goto out;
	}
	if (tls_write_durable(key_file, key_pem, key_len, 0600, error_r) < 0)
		goto out;
	if (tls_write_durable(cert_file, cert_pem, cert_len, 0644, error_r) < 0) {
		/* Without its certificate the key alone would block the next start. */
		unlink(key_file);
		goto out;
	}
	ret = 0;
out:
	BIO_free(key_bio);
	BIO_free(cert_bio);
	X509_free(x);
	EVP_PKEY_free(pkey);
	return ret;
}
