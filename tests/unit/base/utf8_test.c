/* base/utf8: the one well-formedness check (RFC 3629 section 4) every module uses. */
#include "base/utf8.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#define U(s) ((const unsigned char *)(s))

static void test_lengths(void **state)
{
	(void)state;
	int short_r = -1;
	assert_int_equal(utf8_seq_len(U("a"), 1, &short_r), 1);
	assert_int_equal(short_r, 0);
	assert_int_equal(utf8_seq_len(U("\xc3\xa9"), 2, NULL), 2);         /* é */
	assert_int_equal(utf8_seq_len(U("\xe2\x82\xac"), 3, NULL), 3);     /* € */
	assert_int_equal(utf8_seq_len(U("\xf0\x9f\x98\x80"), 4, NULL), 4); /* U+1F600 */
	assert_int_equal(utf8_seq_len(U("\xf4\x8f\xbf\xbf"), 4, NULL), 4); /* U+10FFFF */
}

static void test_malformed(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"\x80",             /* stray continuation */
		"\xc0\xaf",         /* overlong '/' */
		"\xc1\xbf",         /* overlong */
		"\xe0\x9f\xbf",     /* overlong 3-byte */
		"\xed\xa0\x80",     /* surrogate U+D800 */
		"\xf0\x8f\xbf\xbf", /* overlong 4-byte */
		"\xf4\x90\x80\x80", /* U+110000 */
		"\xf5\x80\x80\x80", /* no such lead byte */
		"\xc3\x28",         /* bad continuation */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int short_r = -1;
		assert_int_equal(utf8_seq_len(U(bad[i]), strlen(bad[i]), &short_r), 0);
		assert_int_equal(short_r, 0);
		assert_false(utf8_valid(bad[i], strlen(bad[i])));
	}
}

static void test_cut_short(void **state)
{
	(void)state;
	int short_r = 0;
	assert_int_equal(utf8_seq_len(U("\xe2\x82"), 2, &short_r), 0);
	assert_int_equal(short_r, 1);
	assert_false(utf8_valid("ab\xe2\x82", 4));
}

static void test_decode(void **state)
{
	(void)state;
	uint32_t cp = 0;
	assert_int_equal(utf8_decode(U("A"), 1, &cp), 1);
	assert_int_equal(cp, 0x41);
	assert_int_equal(utf8_decode(U("\xc3\xa9"), 2, &cp), 2);
	assert_int_equal(cp, 0xe9);
	assert_int_equal(utf8_decode(U("\xe2\x82\xac"), 3, &cp), 3);
	assert_int_equal(cp, 0x20ac);
	assert_int_equal(utf8_decode(U("\xf0\x9f\x98\x80"), 4, &cp), 4);
	assert_int_equal(cp, 0x1f600);
	cp = 7;
	assert_int_equal(utf8_decode(U("\xed\xa0\x80"), 3, &cp), 0);
	assert_int_equal(cp, 7); /* untouched on failure */
	assert_true(utf8_valid("gr\xc3\xbc\xc3\x9f dich \xe2\x82\xac", 15));
	assert_true(utf8_valid("", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_cut_short),
		cmocka_unit_test(test_decode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
