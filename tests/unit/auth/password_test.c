#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "auth/password.h"

/* Made at development time outside tern, all from the password "correct horse":
 * bcrypt by Python's crypt module (METHOD_BLOWFISH, cost 5), SHA-crypt by
 * `openssl passwd -6 -salt ImportedSalt` and `openssl passwd -5 -salt Imported5`. */
static const char bcrypt_2b[] = "$2b$05$1UPRf7MKQNZIwet907dvO.CUPllJRGzNLHbN9RYPwmOxGX5824pZe";
static const char bcrypt_2y[] = "$2y$05$abcdefghijklmnopqrstuuHNbAKRhpaujgo33bRWs.NLUTJO3lOy2";
static const char bcrypt_2a[] = "$2a$05$abcdefghijklmnopqrstuuHNbAKRhpaujgo33bRWs.NLUTJO3lOy2";
static const char sha512[] = "$6$ImportedSalt$VkYxJCSqwRSkUSCeyJn2ITo1ZENBy2uqYxsqAGcmHJXe/"
			     "1HZUNne/RyZk.UTpvgBiHHqyHU4i5DnPpNIGrEGb.";
static const char sha256[] = "$5$Imported5$APlfzi1W.lNaBHOawnfd4oCxd/cXHqrjkZ8asPRSM2D";

static void test_round_trip(void **state)
{
	char h[PASSWORD_HASH_MAX];
	const char *error = NULL;
	assert_int_equal(password_hash("s3cret pass", h, sizeof(h), &error), 0);
	assert_true(strncmp(h, "$y$", 3) == 0);
	assert_int_equal(password_verify("s3cret pass", h), 1);
	assert_int_equal(password_verify("s3cret pasS", h), 0);
	assert_int_equal(password_verify("", h), 0);
	assert_int_equal(password_hash_importable(h), 1);

	/* A fresh salt each time. */
	char h2[PASSWORD_HASH_MAX];
	assert_int_equal(password_hash("s3cret pass", h2, sizeof(h2), &error), 0);
	assert_string_not_equal(h, h2);
	assert_int_equal(password_verify("s3cret pass", h2), 1);
}

static void test_small_buffer(void **state)
{
	char h[16];
	const char *error = NULL;
	assert_int_equal(password_hash("x", h, sizeof(h), &error), -1);
	assert_non_null(error);
}

static void test_utf8_password(void **state)
{
	char h[PASSWORD_HASH_MAX];
	const char *error = NULL;
	assert_int_equal(password_hash("p\xc3\xa4ssw\xc3\xb6rd", h, sizeof(h), &error), 0);
	assert_int_equal(password_verify("p\xc3\xa4ssw\xc3\xb6rd", h), 1);
	assert_int_equal(password_verify("passwoord", h), 0);
}

static void test_imported(void **state)
{
	const char *hashes[] = { bcrypt_2b, bcrypt_2y, bcrypt_2a, sha512, sha256 };
	for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
		assert_int_equal(password_hash_importable(hashes[i]), 1);
		assert_int_equal(password_verify("correct horse", hashes[i]), 1);
		assert_int_equal(password_verify("correct horsE", hashes[i]), 0);
		assert_int_equal(password_verify("", hashes[i]), 0);
	}
}

static void test_garbage(void **state)
{
	const char *bad[] = {
		"",
		"plaintext",
		"*",
		"!locked",
		"$1$abcdefgh$0123456789abcdefghijkl", /* MD5-crypt: not accepted */
		"abJnggxhB/yWI",                       /* DES crypt */
		"$6$",                                 /* a setting, not a hash */
		"$6$ImportedSalt",                     /* salt without the hash */
		"$6$ImportedSalt$VkYxJCSqwRSkUSCeyJn2ITo1ZENBy2uqYxsqAGcmHJXe/", /* truncated */
		"$2b$05$1UPRf7MKQNZIwet907dvO.CUPllJRGzNLHbN9RYPwmOxGX5824pZ",   /* one short */
		"$2b$31$1UPRf7MKQNZIwet907dvO.CUPllJRGzNLHbN9RYPwmOxGX5824pZe",  /* far too slow */
		"$2b$xx$1UPRf7MKQNZIwet907dvO.CUPllJRGzNLHbN9RYPwmOxGX5824pZe",
		"$6$rounds=999999999$salt$abc",
		"$y$",
		"$y$j9T$",
		"$y$!!!$$$",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(password_hash_importable(bad[i]), 0);
		assert_int_equal(password_verify("correct horse", bad[i]), 0);
		assert_int_equal(password_verify("", bad[i]), 0);
	}
	/* crypt accepts a bare setting and returns a full hash: that must never count as a
	 * match, whatever the password. */
	assert_int_equal(password_verify("anything", "$y$j9T$"), 0);
}

static void test_dummy(void **state)
{
	assert_int_equal(password_dummy_verify("whatever"), 0);
	assert_int_equal(password_dummy_verify(""), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_small_buffer),
		cmocka_unit_test(test_utf8_password),
		cmocka_unit_test(test_imported),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_dummy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
