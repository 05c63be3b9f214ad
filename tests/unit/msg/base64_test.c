#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "msg/base64.h"

/* RFC 4648 section 10 test vectors. */
static const struct {
	const char *raw, *enc;
} vectors[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

static void test_vectors(void **state)
{
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		char enc[32];
		unsigned char dec[32];
		size_t n = 99;
		size_t rl = strlen(vectors[i].raw);

		assert_int_equal(base64_encode((const unsigned char *)vectors[i].raw, rl, enc,
					       sizeof(enc)),
				 strlen(vectors[i].enc));
		assert_string_equal(enc, vectors[i].enc);
		assert_int_equal(base64_decode(vectors[i].enc, strlen(vectors[i].enc), dec,
					       sizeof(dec), &n),
				 0);
		assert_int_equal(n, rl);
		assert_memory_equal(dec, vectors[i].raw, rl);
	}
}

static void test_all_bytes_round_trip(void **state)
{
	unsigned char raw[256], dec[256];
	char enc[BASE64_ENCODED_LEN(256) + 1];
	size_t n;

	for (int i = 0; i < 256; i++)
		raw[i] = (unsigned char)(255 - i);
	for (size_t len = 0; len <= 256; len++) {
		size_t e = base64_encode(raw, len, enc, sizeof(enc));
		assert_int_equal(e, BASE64_ENCODED_LEN(len));
		assert_int_equal(base64_decode(enc, e, dec, sizeof(dec), &n), 0);
		assert_int_equal(n, len);
		assert_memory_equal(dec, raw, len);
	}
}

static void test_decode_rejects(void **state)
{
	static const char *bad[] = {
		"Zg=",      /* not a whole quantum */
		"Zg",       /* padding required */
		"Zm9v\r\n", /* no whitespace */
		"Zm 9v",
		"Zm9v Zg==",
		"Zg==Zm9v", /* padding in the middle */
		"Z===",
		"====",
		"=Zm9",
		"Zm=v",
		"Zh==", /* non-zero pad bits (RFC 4648 3.5) */
		"Zm9=",
		"Zm9v-_==", /* base64url alphabet */
		"Zm9\x80",
		"Zm9\0",
	};
	unsigned char out[16];
	size_t n;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t len = strlen(bad[i]);
		if (i == sizeof(bad) / sizeof(bad[0]) - 1)
			len = 4; /* the embedded NUL */
		n = 77;
		assert_int_equal(base64_decode(bad[i], len, out, sizeof(out), &n), -1);
		assert_int_equal(n, 0);
	}
}

static void test_capacity(void **state)
{
	unsigned char out[6];
	size_t n;
	char enc[9];

	memset(out, 'x', sizeof(out));
	/* "foobar" needs 6: 5 is refused and nothing is written. */
	assert_int_equal(base64_decode("Zm9vYmFy", 8, out, 5, &n), -1);
	assert_int_equal(out[0], 'x');
	assert_int_equal(base64_decode("Zm9vYmFy", 8, out, 6, &n), 0);
	assert_int_equal(n, 6);
	/* Padding counts: "Zm9vYg==" is 4 bytes. */
	assert_int_equal(base64_decode("Zm9vYg==", 8, out, 4, &n), 0);
	assert_int_equal(n, 4);

	/* Encoding needs the NUL too. */
	assert_int_equal(base64_encode((const unsigned char *)"foobar", 6, enc, 8), 0);
	assert_string_equal(enc, "");
	assert_int_equal(base64_encode((const unsigned char *)"foobar", 6, enc, 9), 8);
	assert_int_equal(base64_encode((const unsigned char *)"", 0, enc, 1), 0);
	assert_string_equal(enc, "");
	assert_int_equal(base64_encode((const unsigned char *)"", 0, enc, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_all_bytes_round_trip),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_capacity),
	};
	return cmocka_run_group_tests_name("msg/base64", tests, NULL, NULL);
}
