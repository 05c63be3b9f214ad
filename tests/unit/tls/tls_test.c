/* tls: self-signed generation, file modes, context loading, key/cert mismatch, and a
 * real handshake between the server and client contexts over a BIO pair. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "tls/tls.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

struct fixture {
	char dir[64];
	char cert[256];
	char key[256];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (test_tmpdir_new(f->dir, sizeof(f->dir), "tls") < 0)
		return -1;
	snprintf(f->cert, sizeof(f->cert), "%s/tls/sub/cert.pem", f->dir);
	snprintf(f->key, sizeof(f->key), "%s/tls/sub/key.pem", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	test_rm_rf(f->dir);
	free(f);
	return 0;
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static X509 *read_cert(const char *path)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(x);
	return x;
}

static void test_selfsigned_generates_pair(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	mode_t old = umask(077); /* the certificate must still come out 0644 */
	int rc = tls_selfsigned_ensure(f->cert, f->key, "mail.example.test", &err);
	umask(old);
	assert_int_equal(rc, 0);

	assert_int_equal(mode_of(f->key), 0600);
	assert_int_equal(mode_of(f->cert), 0644);
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/tls/sub", f->dir);
	assert_int_equal(mode_of(dir), 0700);
	snprintf(dir, sizeof(dir), "%s/tls", f->dir);
	assert_int_equal(mode_of(dir), 0700);

	X509 *x = read_cert(f->cert);
	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	char cn[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_string_equal(cn, "mail.example.test");
	assert_int_equal(X509_check_host(x, "mail.example.test", 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(x, "other.example.test", 0, 0, NULL), 0);
	assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
	assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);

	/* Ten years, give or take the hour of back-dating. */
	int days = 0, secs = 0;
	assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
					X509_get0_notAfter(x)),
			 1);
	assert_true(days >= 3650 && days <= 3654);
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);

	EVP_PKEY *pk = X509_get0_pubkey(x);
	assert_non_null(pk);
	assert_true(EVP_PKEY_is_a(pk, "EC"));
	char group[64];
	size_t glen = 0;
	assert_int_equal(EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof(group), &glen),
			 1);
	assert_string_equal(group, "prime256v1");
	X509_free(x);
}

static void test_selfsigned_keeps_existing_pair(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "a.example.test", &err), 0);
	X509 *before = read_cert(f->cert);
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "b.example.test", &err), 0);
	X509 *after = read_cert(f->cert);
	assert_int_equal(X509_cmp(before, after), 0);
	X509_free(before);
	X509_free(after);
}

static void test_selfsigned_refuses_half_pair(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "a.example.test", &err), 0);
	assert_int_equal(unlink(f->key), 0);
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "a.example.test", &err), -1);
	assert_non_null(strstr(err, f->key));
	assert_non_null(strstr(err, f->cert));
	/* The certificate that is there is not touched. */
	assert_int_equal(access(f->cert, F_OK), 0);
	assert_int_equal(access(f->key, F_OK), -1);
}

static void test_selfsigned_refuses_bad_hostname(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "a.test,DNS:evil.test", &err),
			 -1);
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "", &err), -1);
	assert_int_equal(access(f->cert, F_OK), -1);
	assert_int_equal(access(f->key, F_OK), -1);
}

static void test_server_ctx_loads_pair(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "mail.example.test", &err), 0);
	SSL_CTX *ctx = tls_server_ctx_new(f->cert, f->key, &err);
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	uint64_t opts = SSL_CTX_get_options(ctx);
	assert_true(opts & SSL_OP_CIPHER_SERVER_PREFERENCE);
	assert_true(opts & SSL_OP_NO_COMPRESSION);
	assert_true(opts & SSL_OP_NO_RENEGOTIATION);
	assert_false(opts & SSL_OP_NO_TICKET);
	SSL_CTX_free(ctx);
}

static void test_server_ctx_mismatch(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char cert2[300], key2[300];
	snprintf(cert2, sizeof(cert2), "%s/other/cert.pem", f->dir);
	snprintf(key2, sizeof(key2), "%s/other/key.pem", f->dir);
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "a.example.test", &err), 0);
	assert_int_equal(tls_selfsigned_ensure(cert2, key2, "b.example.test", &err), 0);

	SSL_CTX *ctx = tls_server_ctx_new(f->cert, key2, &err);
	assert_null(ctx);
	assert_non_null(strstr(err, "does not match"));
	assert_non_null(strstr(err, key2));
	assert_non_null(strstr(err, f->cert));
}

static void test_server_ctx_bad_files(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char missing[300], junk[300];
	snprintf(missing, sizeof(missing), "%s/missing.pem", f->dir);
	snprintf(junk, sizeof(junk), "%s/junk.pem", f->dir);
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "a.example.test", &err), 0);

	assert_null(tls_server_ctx_new(missing, f->key, &err));
	assert_non_null(strstr(err, missing));
	assert_non_null(strstr(err, "No such file"));

	FILE *fp = fopen(junk, "w");
	assert_non_null(fp);
	fputs("this is not PEM\n", fp);
	fclose(fp);
	assert_null(tls_server_ctx_new(junk, f->key, &err));
	assert_non_null(strstr(err, junk));
	assert_null(tls_server_ctx_new(f->cert, junk, &err));
	assert_non_null(strstr(err, junk));
	assert_non_null(strstr(err, "key"));
}

/* Drives both ends of a BIO pair until both handshakes finish or one fails. */
static int handshake(SSL *client, SSL *server)
{
	int c_done = 0, s_done = 0;
	for (int i = 0; i < 100 && !(c_done && s_done); i++) {
		if (!c_done) {
			int rc = SSL_do_handshake(client);
			if (rc == 1)
				c_done = 1;
			else if (SSL_get_error(client, rc) != SSL_ERROR_WANT_READ)
				return -1;
		}
		if (!s_done) {
			int rc = SSL_do_handshake(server);
			if (rc == 1)
				s_done = 1;
			else if (SSL_get_error(server, rc) != SSL_ERROR_WANT_READ)
				return -1;
		}
	}
	return c_done && s_done ? 0 : -1;
}

static void make_pair(SSL_CTX *cctx, SSL_CTX *sctx, SSL **c_r, SSL **s_r)
{
	BIO *cb = NULL, *sb = NULL;
	assert_int_equal(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
	*c_r = SSL_new(cctx);
	*s_r = SSL_new(sctx);
	assert_non_null(*c_r);
	assert_non_null(*s_r);
	SSL_set_bio(*c_r, cb, cb);
	SSL_set_bio(*s_r, sb, sb);
	SSL_set_connect_state(*c_r);
	SSL_set_accept_state(*s_r);
}

static void test_handshake_and_describe(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	assert_int_equal(tls_selfsigned_ensure(f->cert, f->key, "mail.example.test", &err), 0);
	SSL_CTX *sctx = tls_server_ctx_new(f->cert, f->key, &err);
	SSL_CTX *cctx = tls_client_ctx_new(&err);
	assert_non_null(sctx);
	assert_non_null(cctx);
	assert_int_equal(SSL_CTX_load_verify_locations(cctx, f->cert, NULL), 1);

	SSL *c, *s;
	make_pair(cctx, sctx, &c, &s);
	SSL_set_tlsext_host_name(c, "mail.example.test");
	assert_int_equal(SSL_set1_host(c, "mail.example.test"), 1);
	assert_int_equal(handshake(c, s), 0);
	/* SSL_VERIFY_NONE: the handshake completes and the result waits for the policy. */
	assert_int_equal(SSL_get_verify_result(c), X509_V_OK);

	char desc[128];
	tls_describe(s, desc, sizeof(desc));
	assert_non_null(strstr(desc, "version=TLSv1.3 cipher=TLS_"));
	assert_non_null(strstr(desc, " bits="));
	tls_describe(NULL, desc, sizeof(desc));
	assert_string_equal(desc, "version=none");
	SSL_free(c);
	SSL_free(s);

	/* A wrong name still completes, but the verify result tells the caller. */
	make_pair(cctx, sctx, &c, &s);
	assert_int_equal(SSL_set1_host(c, "other.example.test"), 1);
	assert_int_equal(handshake(c, s), 0);
	assert_int_not_equal(SSL_get_verify_result(c), X509_V_OK);
	SSL_free(c);
	SSL_free(s);

	/* Nothing below TLS 1.2 is spoken by the server. */
	SSL_CTX *old = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_security_level(old, 0);
	SSL_CTX_set_min_proto_version(old, TLS1_VERSION);
	SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION);
	make_pair(old, sctx, &c, &s);
	assert_int_equal(handshake(c, s), -1);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(old);

	/* TLS 1.2 clients get a forward secret AEAD suite. */
	SSL_CTX *tls12 = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_max_proto_version(tls12, TLS1_2_VERSION);
	make_pair(tls12, sctx, &c, &s);
	assert_int_equal(handshake(c, s), 0);
	tls_describe(s, desc, sizeof(desc));
	assert_non_null(strstr(desc, "version=TLSv1.2 cipher=ECDHE-ECDSA-"));
	assert_true(strstr(desc, "GCM") != NULL || strstr(desc, "CHACHA") != NULL);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(tls12);

	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_selfsigned_generates_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_selfsigned_keeps_existing_pair, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_selfsigned_refuses_half_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_selfsigned_refuses_bad_hostname, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_server_ctx_loads_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_ctx_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_ctx_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handshake_and_describe, setup, teardown),
	};
	return cmocka_run_group_tests_name("tls", tests, NULL, NULL);
}
