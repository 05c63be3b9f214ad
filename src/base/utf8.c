#include "base/utf8.h"

size_t utf8_seq_len(const unsigned char *s, size_t avail, int *short_r)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf; /* range of the second byte */
	size_t n;

	if (short_r != NULL)
		*short_r = 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* below: overlong */
		else if (c == 0xed)
			hi = 0x9f; /* above: surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* below: overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above: past U+10FFFF */
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if (i >= avail) {
			if (short_r != NULL)
				*short_r = 1;
			return 0;
		}
		if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xbf))
			return 0;
	}
	return n;
}

size_t utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp_r)
{
	static const unsigned char lead_mask[5] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	size_t n = utf8_seq_len(s, avail, NULL);
	if (n == 0)
		return 0;
	uint32_t cp = s[0] & lead_mask[n];
	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | (s[i] & 0x3f);
	*cp_r = cp;
	return n;
}

int utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		size_t n = utf8_seq_len(u + i, len - i, NULL);
		if (n == 0)
			return 0;
		i += n;
	}
	return 1;
}
