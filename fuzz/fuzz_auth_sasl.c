/* libFuzzer target for auth/sasl (and the strict base64 under it): base64 being
 * canonical, any accepted PLAIN or LOGIN message re-encodes to exactly the input.
 * Input: the client's base64 response. */
#include <stdint.h>

#include "fuzz_check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"
#include "msg/base64.h"


static void check_reencodes(const unsigned char *raw, size_t n, const char *in, size_t len)
{
	char enc[2048];

	CHECK(BASE64_ENCODED_LEN(n) < sizeof(enc));
	size_t e = base64_encode(raw, n, enc, sizeof(enc));
	CHECK(e == len && memcmp(enc, in, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Exactly size bytes, so ASan sees any read past the end. */
	char *in = malloc(size ? size : 1);
	CHECK(in != NULL);
	memcpy(in, data, size);

	char z[256], c[256], p[256];
	const char *err = NULL;
	memset(z, 'x', sizeof(z));
	memset(c, 'x', sizeof(c));
	memset(p, 'x', sizeof(p));
	if (sasl_plain_decode(in, size, z, c, p, &err) == 0) {
		size_t zl = strnlen(z, 256), cl = strnlen(c, 256), pl = strnlen(p, 256);
		CHECK(zl <= 255 && cl >= 1 && cl <= 255 && pl >= 1 && pl <= 255);
		unsigned char msg[800];
		memcpy(msg, z, zl);
		msg[zl] = '\0';
		memcpy(msg + zl + 1, c, cl);
		msg[zl + 1 + cl] = '\0';
		memcpy(msg + zl + 2 + cl, p, pl);
		check_reencodes(msg, zl + cl + pl + 2, in, size);
	} else {
		CHECK(err != NULL);
		CHECK(z[0] == '\0' && c[0] == '\0' && p[0] == '\0');
	}

	char out[256];
	memset(out, 'x', sizeof(out));
	err = NULL;
	if (sasl_login_decode(in, size, out, &err) == 0) {
		size_t ol = strnlen(out, 256);
		CHECK(ol <= 255);
		if (!(size == 1 && in[0] == '='))
			check_reencodes((const unsigned char *)out, ol, in, size);
	} else {
		CHECK(err != NULL && out[0] == '\0');
	}

	/* base64 itself: decode into a buffer of exactly the promised maximum. */
	size_t cap = BASE64_DECODED_MAX(size);
	unsigned char *raw = malloc(cap ? cap : 1);
	size_t n = 12345;
	CHECK(raw != NULL);
	if (base64_decode(in, size, raw, cap, &n) == 0) {
		CHECK(n <= cap);
		if (BASE64_ENCODED_LEN(n) < 2048)
			check_reencodes(raw, n, in, size);
		/* One byte short is refused. */
		if (n > 0) {
			size_t n2;
			CHECK(base64_decode(in, size, raw, n - 1, &n2) == -1);
		}
	} else {
		CHECK(n == 0);
	}
	free(raw);

	/* And the other way round: encode arbitrary bytes, decode them back. */
	if (size <= 1024) {
		char enc[BASE64_ENCODED_LEN(1024) + 1];
		unsigned char back[1024];
		size_t e = base64_encode(data, size, enc, sizeof(enc));
		CHECK(e == BASE64_ENCODED_LEN(size) && enc[e] == '\0');
		CHECK(base64_decode(enc, e, back, sizeof(back), &n) == 0);
		CHECK(n == size && memcmp(back, data, size) == 0);
	}
	free(in);
	return 0;
}
