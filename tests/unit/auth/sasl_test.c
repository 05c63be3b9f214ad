#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "auth/sasl.h"
#include "msg/base64.h"

#define S(lit) lit, sizeof(lit) - 1

/* Encodes raw[0..len) for a PLAIN or LOGIN test message. */
static const char *enc(const char *raw, size_t len)
{
	static char out[2048];

	size_t n = base64_encode((const unsigned char *)raw, len, out, sizeof(out));
	assert_true(n > 0 || len == 0);
	return out;
}

static int plain(const char *raw, size_t len, char *z, char *c, char *p, const char **err)
{
	const char *b = enc(raw, len);
	return sasl_plain_decode(b, strlen(b), z, c, p, err);
}

static void test_plain_ok(void **state)
{
	char z[256], c[256], p[256];
	const char *err = NULL;

	/* RFC 4616 4 examples. */
	assert_int_equal(plain(S("\0tim\0tanstaaftanstaaf"), z, c, p, &err), 0);
	assert_string_equal(z, "");
	assert_string_equal(c, "tim");
	assert_string_equal(p, "tanstaaftanstaaf");
	assert_int_equal(sasl_plain_decode(S("AHRpbQB0YW5zdGFhZnRhbnN0YWFm"), z, c, p, &err), 0);
	assert_string_equal(c, "tim");
	assert_int_equal(plain(S("Ursel\0Kurt\0xipj3plmq"), z, c, p, &err), 0);
	assert_string_equal(z, "Ursel");
	assert_string_equal(c, "Kurt");
	assert_string_equal(p, "xipj3plmq");
	/* UTF-8 and spaces pass through untouched. */
	assert_int_equal(plain(S("\0j\xc3\xb6rg\0p a s s"), z, c, p, &err), 0);
	assert_string_equal(c, "j\xc3\xb6rg");
	assert_string_equal(p, "p a s s");
}

static void test_plain_malformed(void **state)
{
	char z[256], c[256], p[256];
	const char *err;
	static const struct {
		const char *raw;
		size_t len;
	} bad[] = {
		{ S("") },
		{ S("timpass") },          /* no NUL */
		{ S("\0timpass") },        /* one NUL */
		{ S("\0\0pass") },         /* empty authcid */
		{ S("\0tim\0") },          /* empty password */
		{ S("\0tim\0pa\0ss") },    /* a third NUL */
		{ S("z\0tim\0pass\0") },
		{ S("\0\0") },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		strcpy(c, "junk");
		assert_int_equal(plain(bad[i].raw, bad[i].len, z, c, p, &err), -1);
		assert_non_null(err);
		assert_string_equal(z, "");
		assert_string_equal(c, "");
		assert_string_equal(p, "");
	}

	/* Not base64 (strict), or "=" (the empty response). */
	assert_int_equal(sasl_plain_decode(S("AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"), z, c, p, &err),
			 -1);
	assert_string_equal(err, "invalid base64");
	assert_int_equal(sasl_plain_decode(S("AHRpbQB0YW5zdGFhZnRhbnN0YWF"), z, c, p, &err), -1);
	assert_int_equal(sasl_plain_decode(S("*"), z, c, p, &err), -1);
	assert_int_equal(sasl_plain_decode(S("="), z, c, p, &err), -1);
	assert_int_equal(sasl_plain_decode("", 0, z, c, p, &err), -1);
}

static void test_plain_lengths(void **state)
{
	char raw[1000], z[256], c[256], p[256];
	const char *err;

	/* 255 octets each: the most RFC 4616 2 asks a server to take. */
	memset(raw, 'z', 255);
	raw[255] = '\0';
	memset(raw + 256, 'c', 255);
	raw[511] = '\0';
	memset(raw + 512, 'p', 255);
	assert_int_equal(plain(raw, 767, z, c, p, &err), 0);
	assert_int_equal(strlen(z), 255);
	assert_int_equal(strlen(c), 255);
	assert_int_equal(strlen(p), 255);

	/* One more in any field. */
	memset(raw, 'c', 256);
	raw[0] = '\0';
	raw[257] = '\0';
	memcpy(raw + 258, "pw", 2);
	assert_int_equal(plain(raw, 260, z, c, p, &err), -1);
	assert_string_equal(err, "PLAIN field too long");
	memcpy(raw, "\0u\0", 3);
	memset(raw + 3, 'p', 256);
	assert_int_equal(plain(raw, 259, z, c, p, &err), -1);
	memset(raw, 'z', 256);
	memcpy(raw + 256, "\0u\0p", 4);
	assert_int_equal(plain(raw, 260, z, c, p, &err), -1);

	/* Too long: 1028 characters are refused before decoding, 1024 decode to 768
	 * octets, one more than three fields and two NULs can use. */
	char big[1100];
	memset(big, 'A', sizeof(big));
	assert_int_equal(sasl_plain_decode(big, 1028, z, c, p, &err), -1);
	assert_string_equal(err, "PLAIN message too long");
	assert_int_equal(sasl_plain_decode(big, 1024, z, c, p, &err), -1);
	assert_string_equal(err, "PLAIN message too long");
}

static void test_login(void **state)
{
	char out[256], raw[300];
	const char *err;

	assert_int_equal(sasl_login_decode(S("dGltQGV4YW1wbGUuY29t"), out, &err), 0);
	assert_string_equal(out, "tim@example.com");
	assert_int_equal(sasl_login_decode(S("="), out, &err), 0);
	assert_string_equal(out, "");
	assert_int_equal(sasl_login_decode("", 0, out, &err), 0);
	assert_string_equal(out, "");

	memset(raw, 'u', 255);
	const char *b = enc(raw, 255);
	assert_int_equal(sasl_login_decode(b, strlen(b), out, &err), 0);
	assert_int_equal(strlen(out), 255);
	b = enc(raw, 256);
	strcpy(out, "junk");
	assert_int_equal(sasl_login_decode(b, strlen(b), out, &err), -1);
	assert_string_equal(err, "LOGIN response too long");
	assert_string_equal(out, "");
	b = enc(raw, 300);
	assert_int_equal(sasl_login_decode(b, strlen(b), out, &err), -1);
	assert_string_equal(err, "LOGIN response too long");

	b = enc("a\0b", 3);
	assert_int_equal(sasl_login_decode(b, strlen(b), out, &err), -1);
	assert_string_equal(err, "NUL in LOGIN response");
	assert_int_equal(sasl_login_decode(S("dGlt\n"), out, &err), -1);
	assert_string_equal(err, "invalid base64");
	assert_int_equal(sasl_login_decode(S("dGl"), out, &err), -1);
	assert_int_equal(sasl_login_decode(S("=="), out, &err), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_ok),
		cmocka_unit_test(test_plain_malformed),
		cmocka_unit_test(test_plain_lengths),
		cmocka_unit_test(test_login),
	};
	return cmocka_run_group_tests_name("auth/sasl", tests, NULL, NULL);
}
