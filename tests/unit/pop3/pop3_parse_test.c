/* POP3 framing: lines whole and one byte at a time, overlong lines, command splitting,
 * numbers, AUTH PLAIN responses and the dot-stuffing writer (RETR and TOP). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pop3/pop3_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Feeds in through the reader in pieces of `piece` bytes with a buffer like the
 * engine's; returns the lines joined by '|', with "<LONG>" for overlong ones. */
static void read_lines(const char *in, size_t len, size_t limit, size_t piece, char *out,
                       size_t cap)
{
	struct pop3_line_reader lr;
	char buf[8192];
	size_t have = 0, off = 0, o = 0;
	pop3_line_reader_init(&lr, limit);
	out[0] = '\0';
	while (off < len) {
		size_t n = len - off < piece ? len - off : piece;
		memcpy(buf + have, in + off, n);
		have += n;
		off += n;
		for (;;) {
			struct slice line;
			size_t used;
			enum pop3_line_status st = pop3_line_next(&lr, buf, have, &line, &used);
			if (st == POP3_LINE_OK)
				o += (size_t)snprintf(out + o, cap - o, "%.*s|", (int)line.len,
				                      line.p);
			else if (st == POP3_LINE_TOO_LONG)
				o += (size_t)snprintf(out + o, cap - o, "<LONG>|");
			memmove(buf, buf + used, have - used);
			have -= used;
			if (st == POP3_LINE_NEED_MORE)
				break;
		}
	}
}

static void test_lines_whole_and_bytewise(void **state)
{
	char in[1024], out[2048], out1[2048];
	char long_line[400];
	memset(long_line, 'a', sizeof(long_line));
	int n = snprintf(in, sizeof(in), "USER a\r\nPASS b c\nNOOP\r\n%.*s\r\nSTAT\r\npartial",
	                 (int)sizeof(long_line), long_line);
	read_lines(in, (size_t)n, POP3_LINE_MAX, 4096, out, sizeof(out));
	assert_string_equal(out, "USER a|PASS b c|NOOP|<LONG>|STAT|");
	read_lines(in, (size_t)n, POP3_LINE_MAX, 1, out1, sizeof(out1));
	assert_string_equal(out1, out);
	read_lines(in, (size_t)n, POP3_LINE_MAX, 7, out1, sizeof(out1));
	assert_string_equal(out1, out);
}

static void test_line_limit_edges(void **state)
{
	char in[600], out[2048];
	memset(in, 'x', 255);
	memcpy(in + 255, "\r\n", 2);
	read_lines(in, 257, POP3_LINE_MAX, 1, out, sizeof(out));
	assert_int_equal(strlen(out), 256); /* 255 x and '|' */
	memset(in, 'x', 256);
	memcpy(in + 256, "\r\nQUIT\r\n", 8);
	read_lines(in, 264, POP3_LINE_MAX, 1, out, sizeof(out));
	assert_string_equal(out, "<LONG>|QUIT|");
	read_lines(in, 264, POP3_LINE_MAX, 4096, out, sizeof(out));
	assert_string_equal(out, "<LONG>|QUIT|");
}

static void test_command(void **state)
{
	struct pop3_command c;
	const char *l = "retr 12";
	assert_int_equal(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
	assert_string_equal(c.verb, "RETR");
	assert_int_equal(c.n_args, 1);
	assert_int_equal(c.args[0].len, 2);
	assert_memory_equal(c.args[0].p, "12", 2);
	l = "PASS  two words ";
	assert_int_equal(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
	assert_int_equal(c.n_args, 2);
	assert_int_equal(c.rest.len, strlen(" two words "));
	l = "TOP 1 2 3 4 5 6";
	assert_int_equal(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
	assert_int_equal(c.n_args, 6);
	assert_int_equal(pop3_parse_command("   ", 3, &c), POP3_PARSE_EMPTY);
	assert_int_equal(pop3_parse_command("", 0, &c), POP3_PARSE_EMPTY);
	assert_int_equal(pop3_parse_command("RE-TR", 5, &c), POP3_PARSE_BAD_VERB);
	assert_int_equal(pop3_parse_command("ABCDEFGHIJKLMNOP", 16, &c), POP3_PARSE_BAD_VERB);
	assert_int_equal(pop3_parse_command("USER a\0b", 8, &c), POP3_PARSE_BAD_CHAR);
	assert_int_equal(pop3_parse_command("USER \x1b", 6, &c), POP3_PARSE_BAD_CHAR);
}

static void test_numbers(void **state)
{
	uint32_t n;
	assert_int_equal(pop3_parse_uint(slice_from_str("1"), &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(pop3_parse_uint(slice_from_str("4294967295"), &n), 0);
	assert_int_equal(n, 4294967295u);
	assert_int_equal(pop3_parse_uint(slice_from_str("0000000007"), &n), 0);
	assert_int_equal(n, 7);
	assert_int_equal(pop3_parse_uint(slice_from_str("4294967296"), &n), -1);
	assert_int_equal(pop3_parse_uint(slice_from_str("99999999999"), &n), -1);
	assert_int_equal(pop3_parse_uint(slice_from_str("-1"), &n), -1);
	assert_int_equal(pop3_parse_uint(slice_from_str("+1"), &n), -1);
	assert_int_equal(pop3_parse_uint(slice_from_str(""), &n), -1);
	assert_int_equal(pop3_parse_uint(slice_from_str("1a"), &n), -1);
}

static void test_auth_plain(void **state)
{
	char z[256], u[256], p[256];
	const char *ok = "AGFsaWNlAHNlY3JldA=="; /* \0alice\0secret */
	assert_int_equal(pop3_parse_auth_plain(ok, strlen(ok), z, u, p), POP3_AUTH_OK);
	assert_string_equal(z, "");
	assert_string_equal(u, "alice");
	assert_string_equal(p, "secret");
	assert_int_equal(pop3_parse_auth_plain("*", 1, z, u, p), POP3_AUTH_CANCEL);
	assert_int_equal(pop3_parse_auth_plain("=", 1, z, u, p), POP3_AUTH_BAD);
	assert_int_equal(pop3_parse_auth_plain("!!!", 3, z, u, p), POP3_AUTH_BAD);
	assert_string_equal(p, "");
}

static size_t stuff_all(const char *in, size_t len, int64_t lines, size_t piece, char *out)
{
	struct pop3_stuffer st;
	size_t o = 0, off = 0;
	pop3_stuffer_init(&st, lines);
	while (off < len && !st.done) {
		size_t n = len - off < piece ? len - off : piece, used;
		o += pop3_stuffer_feed(&st, in + off, n, out + o, &used);
		off += used;
	}
	o += pop3_stuffer_finish(&st, out + o);
	out[o] = '\0';
	return o;
}

static void test_stuffer(void **state)
{
	const char *msg = "Subject: x\r\n.H: y\r\n\r\n.one\r\ntwo\r\n.\r\nthree\r\n";
	char out[512], out1[512];
	stuff_all(msg, strlen(msg), -1, 4096, out);
	assert_string_equal(out,
	                    "Subject: x\r\n..H: y\r\n\r\n..one\r\ntwo\r\n..\r\nthree\r\n.\r\n");
	stuff_all(msg, strlen(msg), -1, 1, out1);
	assert_string_equal(out1, out);
	stuff_all(msg, strlen(msg), 0, 1, out);
	assert_string_equal(out, "Subject: x\r\n..H: y\r\n\r\n.\r\n");
	stuff_all(msg, strlen(msg), 2, 3, out);
	assert_string_equal(out, "Subject: x\r\n..H: y\r\n\r\n..one\r\ntwo\r\n.\r\n");
	stuff_all(msg, strlen(msg), 100, 5, out);
	stuff_all(msg, strlen(msg), -1, 5, out1);
	assert_string_equal(out, out1);
	/* No final line end: one is added before the terminator. */
	stuff_all("A: b\r\n\r\nno end", 14, -1, 4096, out);
	assert_string_equal(out, "A: b\r\n\r\nno end\r\n.\r\n");
	stuff_all("", 0, -1, 4096, out);
	assert_string_equal(out, ".\r\n");
	/* A header that never ends: TOP n 0 sends all of it. */
	stuff_all("A: b\r\nC: d\r\n", 12, 0, 4096, out);
	assert_string_equal(out, "A: b\r\nC: d\r\n.\r\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lines_whole_and_bytewise),
	    cmocka_unit_test(test_line_limit_edges),
	    cmocka_unit_test(test_command),
	    cmocka_unit_test(test_numbers),
	    cmocka_unit_test(test_auth_plain),
	    cmocka_unit_test(test_stuffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
