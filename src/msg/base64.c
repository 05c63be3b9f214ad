#include "msg/base64.h"

#include <stdint.h>

static const char base64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len_r)
{
	const unsigned char *s = (const unsigned char *)in;

	*out_len_r = 0;
	/* RFC 4648 section 3.2: padding is required here, so anything but whole
	 * quanta is malformed. */
	if (len % 4 != 0)
		return -1;
	size_t pad = 0;
	if (len > 0 && s[len - 1] == '=') {
		pad = 1;
		if (s[len - 2] == '=')
			pad = 2;
	}
	size_t n = len / 4 * 3 - pad;
	if (n > cap)
		return -1;

	/* Validate everything before writing, so a failure leaves out untouched. */
	for (size_t i = 0; i < len - pad; i++) {
		if (base64_value(s[i]) < 0)
			return -1;
	}
	/* RFC 4648 section 3.5: a decoder MAY reject non-zero pad bits; we do, so each
	 * byte string has exactly one accepted encoding. */
	if (pad == 2 && (base64_value(s[len - 3]) & 0x0f) != 0)
		return -1;
	if (pad == 1 && (base64_value(s[len - 2]) & 0x03) != 0)
		return -1;

	size_t o = 0;
	for (size_t i = 0; i < len; i += 4) {
		uint32_t v = 0;
		int k;
		for (k = 0; k < 4 && s[i + k] != '='; k++)
			v = v << 6 | (uint32_t)base64_value(s[i + k]);
		/* k is 4, or 2/3 in the last, padded group. */
		v <<= 6 * (4 - k);
		out[o++] = (unsigned char)(v >> 16);
		if (k > 2)
			out[o++] = (unsigned char)(v >> 8);
		if (k > 3)
			out[o++] = (unsigned char)v;
	}
	*out_len_r = o;
	return 0;
}

size_t base64_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
	if (cap > 0)
		out[0] = '\0';
	/* Refuse lengths whose encoded size would overflow size_t. */
	if (len > (SIZE_MAX - 3) / 4 * 3)
		return 0;
	size_t need = BASE64_ENCODED_LEN(len);
	if (cap < need + 1)
		return 0;

	size_t o = 0;
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = base64_alphabet[v >> 18 & 0x3f];
		out[o++] = base64_alphabet[v >> 12 & 0x3f];
		out[o++] = base64_alphabet[v >> 6 & 0x3f];
		out[o++] = base64_alphabet[v & 0x3f];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = base64_alphabet[v >> 18 & 0x3f];
		out[o++] = base64_alphabet[v >> 12 & 0x3f];
		out[o++] = i + 1 < len ? base64_alphabet[v >> 6 & 0x3f] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}
