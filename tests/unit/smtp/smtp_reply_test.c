/* smtp/smtp_reply: the client's bounded, incremental reply parser.  Every input is fed
 * whole and one byte at a time, and both must give the same events. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_reply.h"

#define S(lit) lit, sizeof(lit) - 1

/* What a caller sees: one event per reply ("250 [2.0.0] text|line|line" or
 * "ERROR:why"), with a buffer that input is appended to and consumed from. */
struct feeder {
	struct smtp_reply_parser p;
	char buf[16384];
	size_t len;
	char events[16][5000];
	int n_events;
	int failed;
	struct smtp_reply last;
};

static void feeder_init(struct feeder *f)
{
	memset(f, 0, sizeof(*f));
	smtp_reply_parser_init(&f->p);
}

static void describe(const struct smtp_reply *r, char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "%d [%s] %s", r->code, r->enhanced, r->text);
	for (int i = 0; i < r->n_lines && o < cap; i++) {
		size_t n;
		const char *l = smtp_reply_line(r, i, &n);
		o += (size_t)snprintf(out + o, cap - o, "|%.*s", (int)n, l);
	}
}

static void feeder_push(struct feeder *f, const char *data, size_t len)
{
	if (f->failed)
		return;
	assert_true(f->len + len <= sizeof(f->buf));
	memcpy(f->buf + f->len, data, len);
	f->len += len;
	for (int guard = 0; guard < 1000; guard++) {
		size_t used = 12345;
		const char *why = NULL;
		enum smtp_reply_status st = smtp_reply_parse(&f->p, f->buf, f->len, &used, &why);
		assert_true(used <= f->len);
		if (st == SMTP_REPLY_ERROR) {
			assert_non_null(why);
			assert_true(f->n_events < 16);
			snprintf(f->events[f->n_events++], 5000, "ERROR:%s", why);
			f->failed = 1;
			return;
		}
		memmove(f->buf, f->buf + used, f->len - used);
		f->len -= used;
		if (st == SMTP_REPLY_NEED_MORE)
			return;
		assert_true(used > 0);
		assert_true(f->n_events < 16);
		describe(&f->p.reply, f->events[f->n_events++], 5000);
		f->last = f->p.reply;
	}
	fail_msg("parser did not stop");
}

/* The events for data fed whole and byte by byte, and the bytes left over. */
static void check(const char *data, size_t len, const char *const *expect, int n_expect,
                  size_t left)
{
	static struct feeder whole, bytes;
	feeder_init(&whole);
	feeder_push(&whole, data, len);
	feeder_init(&bytes);
	for (size_t i = 0; i < len; i++)
		feeder_push(&bytes, data + i, 1);
	assert_int_equal(whole.n_events, n_expect);
	assert_int_equal(bytes.n_events, n_expect);
	for (int i = 0; i < n_expect; i++) {
		assert_string_equal(whole.events[i], expect[i]);
		assert_string_equal(bytes.events[i], expect[i]);
	}
	if (!whole.failed) {
		assert_int_equal(whole.len, left);
		assert_int_equal(bytes.len, left);
	}
}

static void test_single_line(void **state)
{
	static const char *const e1[] = {
	    "220 [] mx.example.com ESMTP ready|mx.example.com ESMTP ready"};
	check(S("220 mx.example.com ESMTP ready\r\n"), e1, 1, 0);

	/* A bare code is a complete reply (RFC 5321 4.2: the text is optional). */
	static const char *const e2[] = {"250 [] |"};
	check(S("250\r\n"), e2, 1, 0);
	static const char *const e3[] = {"354 [] |"};
	check(S("354 \r\n"), e3, 1, 0);

	/* An incomplete line waits. */
	check(S("250 ok"), NULL, 0, 6);
	check(S("25"), NULL, 0, 2);
}

static void test_multi_line(void **state)
{
	static const char *const e[] = {
	    "250 [] mx.example.com Hello PIPELINING SIZE 1000 8BITMIME|mx.example.com Hello"
	    "|PIPELINING|SIZE 1000|8BITMIME",
	};
	check(S("250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"),
	      e, 1, 0);

	/* Empty continuation texts and a bare final code. */
	static const char *const e2[] = {"250 [] a b|a|||b|"};
	check(S("250-a\r\n250-\r\n250-\r\n250-b\r\n250\r\n"), e2, 1, 0);
}

static void test_pipelined_replies(void **state)
{
	/* Three replies in one read: each DONE stops right after its own last line. */
	static const char *const e[] = {
	    "250 [2.1.0] Ok|Ok",
	    "550 [5.1.1] no such user here|no such user|here",
	    "354 [] go ahead|go ahead",
	};
	check(S("250 2.1.0 Ok\r\n550-5.1.1 no such user\r\n550 5.1.1 here\r\n354 go ahead\r\n"
	        "250 "),
	      e, 3, 4);
}

static void test_mismatched_code(void **state)
{
	static const char *const e[] = {
	    "ERROR:reply code differs between lines of a multi-line reply"};
	check(S("250-first\r\n251 second\r\n"), e, 1, 0);
	/* The class differs too. */
	check(S("250-first\r\n550 second\r\n"), e, 1, 0);

	/* After an error the parser stays failed. */
	struct feeder f;
	feeder_init(&f);
	feeder_push(&f, S("250-a\r\n251 b\r\n"));
	size_t used = 1;
	const char *why = NULL;
	assert_int_equal(smtp_reply_parse(&f.p, S("250 fine\r\n"), &used, &why), SMTP_REPLY_ERROR);
	assert_int_equal(used, 0);
	assert_non_null(why);
}

static void test_garbage(void **state)
{
	static const char *const not3[] = {"ERROR:reply line does not start with a 3-digit code"};
	check(S("HTTP/1.1 400 Bad Request\r\n"), not3, 1, 0);
	check(S("25x ok\r\n"), not3, 1, 0);
	check(S("2\r\n"), not3, 1, 0);
	static const char *const empty[] = {"ERROR:empty reply line"};
	check(S("\r\n"), empty, 1, 0);
	static const char *const range[] = {"ERROR:reply code out of range (not 2xx-5xx)"};
	check(S("199 hi\r\n"), range, 1, 0);
	check(S("600 hi\r\n"), range, 1, 0);
	check(S("000 hi\r\n"), range, 1, 0);
	static const char *const sep[] = {"ERROR:reply code not followed by space or hyphen"};
	check(S("250x\r\n"), sep, 1, 0);
	check(S("2500 ok\r\n"), sep, 1, 0);
	check(S("250\tok\r\n"), sep, 1, 0);
	static const char *const nul[] = {"ERROR:NUL in a reply line"};
	check(S("250 a\0b\r\n"), nul, 1, 0);
	/* A good reply before the garbage is still reported. */
	static const char *const both[] = {"220 [] hi|hi",
	                                   "ERROR:reply line does not start with a 3-digit code"};
	check(S("220 hi\r\nSSH-2.0-OpenSSH\r\n"), both, 2, 0);
}

static void test_bare_lf_and_controls(void **state)
{
	/* Bare LF ends a line (documented leniency); a CR elsewhere is text. */
	static const char *const e[] = {"250 [] a b|a|b"};
	check(S("250-a\n250 b\n"), e, 1, 0);
	struct feeder f;
	feeder_init(&f);
	feeder_push(&f, S("250-a\n250 b\r\n"));
	assert_int_equal(f.n_events, 1);
	assert_true(f.last.bare_lf);
	feeder_init(&f);
	feeder_push(&f, S("250 a\r\n"));
	assert_false(f.last.bare_lf);

	static const char *const ctl[] = {"550 [] a?b c?d ?|a?b c?d ?"};
	check(S("550 a\rb\tc\x01"
	        "d \x7f\r\n"),
	      ctl, 1, 0);
	/* Octets >= 0x80 are kept (UTF-8 from an SMTPUTF8 server). */
	static const char *const utf8[] = {"550 [] \xc3\xbc|\xc3\xbc"};
	check(S("550 \xc3\xbc\r\n"), utf8, 1, 0);
}

static void test_too_long(void **state)
{
	static char line[SMTP_REPLY_LINE_MAX + 64];
	static const char *const e[] = {"ERROR:reply line too long"};

	/* Exactly at the limit (CRLF included): accepted, text cut to the text cap. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "250 ", 4);
	memcpy(line + SMTP_REPLY_LINE_MAX - 2, "\r\n", 2);
	struct feeder f;
	feeder_init(&f);
	feeder_push(&f, line, SMTP_REPLY_LINE_MAX);
	assert_int_equal(f.n_events, 1);
	assert_int_equal(f.last.code, 250);
	assert_int_equal(f.last.text_len, SMTP_REPLY_LINE_MAX - 6);

	/* One more octet: refused. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "250 ", 4);
	memcpy(line + SMTP_REPLY_LINE_MAX - 1, "\r\n", 2);
	check(line, SMTP_REPLY_LINE_MAX + 1, e, 1, 0);

	/* No LF at all: refused as soon as the limit is reached, not at the end. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "250 ", 4);
	feeder_init(&f);
	feeder_push(&f, line, SMTP_REPLY_LINE_MAX - 1);
	assert_int_equal(f.n_events, 0);
	feeder_push(&f, "x", 1);
	assert_int_equal(f.n_events, 1);
	assert_string_equal(f.events[0], e[0]);
}

static void test_too_many_lines(void **state)
{
	static char big[SMTP_REPLY_LINES_MAX * 8 + 64];
	size_t o = 0;
	for (int i = 0; i < SMTP_REPLY_LINES_MAX - 1; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "250-%d\r\n", i % 10);
	o += (size_t)snprintf(big + o, sizeof(big) - o, "250 z\r\n");
	struct feeder f;
	feeder_init(&f);
	feeder_push(&f, big, o);
	assert_int_equal(f.n_events, 1);
	assert_int_equal(f.last.n_lines, SMTP_REPLY_LINES_MAX);

	o = 0;
	for (int i = 0; i < SMTP_REPLY_LINES_MAX; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "250-%d\r\n", i % 10);
	o += (size_t)snprintf(big + o, sizeof(big) - o, "250 z\r\n");
	static const char *const e[] = {"ERROR:too many lines in one reply"};
	check(big, o, e, 1, 0);
}

static void test_text_cap(void **state)
{
	/* Many long lines: the text stops at the cap, the lines are all counted. */
	static char big[8 * 1100];
	size_t o = 0;
	char chunk[1001];
	memset(chunk, 'y', 1000);
	chunk[1000] = '\0';
	for (int i = 0; i < 7; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "550-%s\r\n", chunk);
	o += (size_t)snprintf(big + o, sizeof(big) - o, "550 end\r\n");
	struct feeder f;
	feeder_init(&f);
	feeder_push(&f, big, o);
	assert_int_equal(f.n_events, 1);
	assert_int_equal(f.last.n_lines, 8);
	assert_true(f.last.truncated);
	assert_int_equal(f.last.text_len, SMTP_REPLY_TEXT_MAX);
	assert_int_equal(strlen(f.last.text), SMTP_REPLY_TEXT_MAX);
	assert_int_equal(f.last.lines[7].len, 0);
	for (int i = 0; i < 8; i++)
		assert_true(f.last.lines[i].off + f.last.lines[i].len <= SMTP_REPLY_TEXT_MAX);
}

static void test_enhanced(void **state)
{
	static const char *const e1[] = {"550 [5.1.1] <x@y>: user unknown|<x@y>: user unknown"};
	check(S("550 5.1.1 <x@y>: user unknown\r\n"), e1, 1, 0);

	/* Repeated on every line: removed from each. */
	static const char *const e2[] = {"452 [4.5.3] too many recipients try later|too many "
	                                 "recipients|try later"};
	check(S("452-4.5.3 too many recipients\r\n452 4.5.3 try later\r\n"), e2, 1, 0);

	/* Three-digit subject and detail; a code alone on the line. */
	static const char *const e3[] = {"550 [5.123.456] |"};
	check(S("550 5.123.456\r\n"), e3, 1, 0);

	/* The class must match the reply's first digit (RFC 3463 2). */
	static const char *const e4[] = {"250 [] 5.1.1 odd|5.1.1 odd"};
	check(S("250 5.1.1 odd\r\n"), e4, 1, 0);
	/* Not codes: too many digits, missing part, no space after. */
	static const char *const e5[] = {"550 [] 5.1.1234 x|5.1.1234 x"};
	check(S("550 5.1.1234 x\r\n"), e5, 1, 0);
	static const char *const e6[] = {"550 [] 5.1 x|5.1 x"};
	check(S("550 5.1 x\r\n"), e6, 1, 0);
	static const char *const e7[] = {"550 [] 5.1.1: x|5.1.1: x"};
	check(S("550 5.1.1: x\r\n"), e7, 1, 0);
	static const char *const e8[] = {"550 [] 3.1.1 x|3.1.1 x"};
	check(S("550 3.1.1 x\r\n"), e8, 1, 0);
	/* A different code on a later line stays in that line's text. */
	static const char *const e9[] = {"550 [5.1.1] a 5.7.1 b|a|5.7.1 b"};
	check(S("550-5.1.1 a\r\n550 5.7.1 b\r\n"), e9, 1, 0);

	assert_int_equal(smtp_enhanced_code_len(S("2.0.0")), 5);
	assert_int_equal(smtp_enhanced_code_len(S("4.7.10 x")), 6);
	assert_int_equal(smtp_enhanced_code_len(S("5.999.999")), 9);
	assert_int_equal(smtp_enhanced_code_len(S("2.0.")), 0);
	assert_int_equal(smtp_enhanced_code_len(S("2..0")), 0);
	assert_int_equal(smtp_enhanced_code_len(S("1.0.0")), 0);
	assert_int_equal(smtp_enhanced_code_len(S("2.0000.0")), 0);
	assert_int_equal(smtp_enhanced_code_len("", 0), 0);
}

static void test_reuse_after_done(void **state)
{
	/* The parser starts a fresh reply after DONE, whatever came before. */
	struct feeder f;
	feeder_init(&f);
	feeder_push(&f, S("550-5.1.1 a\r\n550-5.1.1 b\r\n550 5.1.1 c\r\n"));
	feeder_push(&f, S("250 ok\r\n"));
	assert_int_equal(f.n_events, 2);
	assert_string_equal(f.events[1], "250 [] ok|ok");
	assert_int_equal(f.last.n_lines, 1);
	assert_false(f.last.truncated);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_line),       cmocka_unit_test(test_multi_line),
	    cmocka_unit_test(test_pipelined_replies), cmocka_unit_test(test_mismatched_code),
	    cmocka_unit_test(test_garbage),           cmocka_unit_test(test_bare_lf_and_controls),
	    cmocka_unit_test(test_too_long),          cmocka_unit_test(test_too_many_lines),
	    cmocka_unit_test(test_text_cap),          cmocka_unit_test(test_enhanced),
	    cmocka_unit_test(test_reuse_after_done),
	};
	return cmocka_run_group_tests_name("smtp/smtp_reply", tests, NULL, NULL);
}
