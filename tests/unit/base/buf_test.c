/* base/buf: the growable buffer every module writes into. */
#include "base/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static void test_printf_grows_and_terminates(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(buf_printf(&b, "* %d EXISTS\r\n", 12), 0);
	assert_string_equal(b.data, "* 12 EXISTS\r\n");
	/* Many small lines: formatted into the free space, then grown. */
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf_printf(&b, "%04d", i), 0);
	assert_int_equal(b.len, 13 + 4000);
	assert_memory_equal(b.data + 13, "00000001", 8);
	assert_memory_equal(b.data + b.len - 4, "0999", 4);
	assert_int_equal(b.data[b.len], '\0');
	/* One line longer than the free space. */
	char big[3000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	size_t before = b.len;
	assert_int_equal(buf_printf(&b, "[%s]", big), 0);
	assert_int_equal(b.len, before + 3001);
	assert_int_equal(b.data[before], '[');
	assert_int_equal(b.data[b.len - 1], ']');
	assert_int_equal(b.data[b.len], '\0');
	buf_deinit(&b);
}

static void test_printf_limit_appends_nothing(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 16);
	assert_int_equal(buf_append_str(&b, "0123456789"), 0);
	/* Fits the allocation (64 bytes) but not the limit: refused whole. */
	assert_int_equal(buf_printf(&b, "%s", "abcdefghij"), -1);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "0123456789");
	assert_int_equal(buf_printf(&b, "%d", 123456), 0);
	assert_string_equal(b.data, "0123456789123456");
	assert_int_equal(buf_append(&b, "x", 1), -1);
	buf_consume(&b, 10);
	assert_string_equal(b.data, "123456");
	buf_deinit(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_printf_grows_and_terminates),
		cmocka_unit_test(test_printf_limit_appends_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
