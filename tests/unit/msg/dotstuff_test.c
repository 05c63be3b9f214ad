#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "msg/dotstuff.h"

struct result {
	char out[8192];
	size_t out_len;
	size_t consumed;
	int done;
	struct data_decoder d;
};

/* Feeds in[0..len) in pieces of chunk bytes (0: all at once), as a server reading
 * from a socket would, stopping at DONE. */
static void run(const char *in, size_t len, enum data_mode mode, size_t limit, size_t chunk,
		struct result *r)
{
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	data_decoder_init(&r->d, mode, limit);
	assert_true(len <= sizeof(r->out));
	do {
		size_t n = chunk == 0 || len - off < chunk ? len - off : chunk;
		size_t used, out_len;
		char *out = r->out + r->out_len;
		enum data_status st = data_decoder_feed(&r->d, in + off, n, out, &used, &out_len);
		assert_true(used <= n);
		assert_true(out_len <= n);
		off += used;
		r->out_len += out_len;
		if (st == DATA_DONE) {
			r->done = 1;
			break;
		}
		assert_int_equal(used, n);
	} while (off < len);
	r->consumed = off;
	assert_int_equal(r->d.body_size, r->out_len);
}

/* Runs in whole, a byte at a time, and split at every point, and checks that all
 * agree; returns the whole-input result in *r. */
static void run_all(const char *in, size_t len, enum data_mode mode, size_t limit, struct result *r)
{
	static struct result other;

	run(in, len, mode, limit, 0, r);
	for (size_t chunk = 1; chunk <= 3; chunk++) {
		run(in, len, mode, limit, chunk, &other);
		assert_int_equal(other.done, r->done);
		assert_int_equal(other.consumed, r->consumed);
		assert_int_equal(other.out_len, r->out_len);
		assert_memory_equal(other.out, r->out, r->out_len);
		assert_int_equal(other.d.bare_lf, r->d.bare_lf);
		assert_int_equal(other.d.bare_cr, r->d.bare_cr);
		assert_int_equal(other.d.line_too_long, r->d.line_too_long);
	}
	/* One split point anywhere: two feeds. */
	for (size_t cut = 0; cut <= len; cut++) {
		struct data_decoder d;
		char out[8192];
		size_t u1, o1, u2 = 0, o2 = 0;

		data_decoder_init(&d, mode, limit);
		enum data_status st = data_decoder_feed(&d, in, cut, out, &u1, &o1);
		if (st != DATA_DONE)
			st = data_decoder_feed(&d, in + cut, len - cut, out + o1, &u2, &o2);
		assert_int_equal(st == DATA_DONE, r->done);
		assert_int_equal(u1 + u2, r->consumed);
		assert_int_equal(o1 + o2, r->out_len);
		assert_memory_equal(out, r->out, r->out_len);
		assert_int_equal(d.bare_lf, r->d.bare_lf);
		assert_int_equal(d.bare_cr, r->d.bare_cr);
	}
}

#define S(lit) lit, sizeof(lit) - 1

static void expect_clean(const char *in, size_t len, const char *body, size_t body_len,
			 size_t consumed)
{
	struct result r;

	run_all(in, len, DATA_MODE_DOT, 1000, &r);
	assert_true(r.done);
	assert_int_equal(r.consumed, consumed);
	assert_int_equal(r.out_len, body_len);
	assert_memory_equal(r.out, body, body_len);
	assert_false(r.d.bare_lf);
	assert_false(r.d.bare_cr);
	assert_false(r.d.line_too_long);
}

static void test_simple(void **state)
{
	expect_clean(S("Subject: x\r\n\r\nHello\r\n.\r\n"), S("Subject: x\r\n\r\nHello\r\n"), 24);
	/* The pipelined command after the terminator is not consumed. */
	expect_clean(S("Hello\r\n.\r\nQUIT\r\n"), S("Hello\r\n"), 10);
	expect_clean(S("Hello\r\n.\r\n.\r\n"), S("Hello\r\n"), 10);
}

static void test_empty_and_first_line(void **state)
{
	/* ".\r\n" as the first line ends an empty message. */
	expect_clean(S(".\r\n"), "", 0, 3);
	expect_clean(S(".\r\nMAIL FROM:<a@b>\r\n"), "", 0, 3);
	expect_clean(S("\r\n.\r\n"), S("\r\n"), 5);
}

static void test_unstuffing(void **state)
{
	/* RFC 5321 4.5.2: one leading dot removed, the rest kept byte for byte. */
	expect_clean(S("..\r\n.\r\n"), S(".\r\n"), 7);
	expect_clean(S("..foo\r\n...\r\n.bar\r\n.\r\n"), S(".foo\r\n..\r\nbar\r\n"), 21);
	expect_clean(S("a.b\r\n .\r\nx.\r\n.\r\n"), S("a.b\r\n .\r\nx.\r\n"), 16);
	expect_clean(S("..\r\n..\r\n.\r\n"), S(".\r\n.\r\n"), 11);
	/* ". \r\n" and ".x" are stuffed lines, not terminators. */
	expect_clean(S(". \r\n.x\r\n.\r\n"), S(" \r\nx\r\n"), 11);
	expect_clean(S("\r\n\r\n.\r\n"), S("\r\n\r\n"), 7);
}

/* Any smuggling variant: flagged, not an end; the real terminator still ends it. */
static void expect_dirty(const char *in, size_t len, int bare_lf, int bare_cr)
{
	struct result r;
	char buf[256];

	assert_true(len + 10 < sizeof(buf));
	/* Without a real terminator it never ends. */
	run_all(in, len, DATA_MODE_DOT, 1000, &r);
	if (r.d.bare_lf != bare_lf || r.d.bare_cr != bare_cr)
		fail_msg("%zu bytes starting %02x %02x: lf %d cr %d", len, in[0], in[1],
			 r.d.bare_lf, r.d.bare_cr);
	assert_false(r.done);
	assert_int_equal(r.consumed, len);
	assert_int_equal(r.d.bare_lf, bare_lf);
	assert_int_equal(r.d.bare_cr, bare_cr);

	memcpy(buf, in, len);
	memcpy(buf + len, "\r\n.\r\nRSET\r\n", 11);
	run_all(buf, len + 11, DATA_MODE_DOT, 1000, &r);
	assert_true(r.done);
	assert_int_equal(r.consumed, len + 5);
	assert_int_equal(r.d.bare_lf, bare_lf);
	assert_int_equal(r.d.bare_cr, bare_cr);
}

static void test_smuggling(void **state)
{
	expect_dirty(S("a\n.\n"), 1, 0);
	expect_dirty(S("a\r\n.\n"), 1, 0);
	expect_dirty(S("a\n.\r\n"), 1, 0);
	expect_dirty(S("a\n.\r\nMAIL FROM:<evil@x>\r\n"), 1, 0);
	expect_dirty(S("a\r\n.\nMAIL FROM:<evil@x>\r\n"), 1, 0);
	expect_dirty(S("a\r.\r\n"), 0, 1);
	expect_dirty(S("a\r.\r"), 0, 1);
	expect_dirty(S("a\r.\rb"), 0, 1);
	expect_dirty(S("a\r\n.\r.\r\n"), 0, 1);
	expect_dirty(S("a\r\n.\rX"), 0, 1);
	expect_dirty(S("a\n\r\n.x"), 1, 0);
	expect_dirty(S(".\n"), 1, 0);
	expect_dirty(S("\n.\r\n"), 1, 0);
	expect_dirty(S("\n.\n"), 1, 0);
	expect_dirty(S("\r.\r\n"), 0, 1);
	expect_dirty(S("a\rb"), 0, 1);
	expect_dirty(S("a\nb"), 1, 0);
	expect_dirty(S("\r\r\n"), 0, 1);
	expect_dirty(S("a\r\n\n.\r\n"), 1, 0);
	expect_dirty(S("a\r\n.\r\r\n"), 0, 1);

	/* A real CRLF "." CRLF ends the message even after a bare LF: the flag makes
	 * the caller refuse it, and client and server agree on where it ended. */
	struct result r;
	run_all(S("a\n\r\n.\r\nX"), DATA_MODE_DOT, 1000, &r);
	assert_true(r.done);
	assert_int_equal(r.consumed, 7);
	assert_true(r.d.bare_lf);
}

static void test_bare_output(void **state)
{
	struct result r;

	/* A bare LF stays in the output and does not start a line: the dot after it
	 * is not a stuffing dot (the message is refused anyway). */
	run_all(S("a\n.\nb\r\n.\r\n"), DATA_MODE_DOT, 1000, &r);
	assert_true(r.done);
	assert_int_equal(r.out_len, 7);
	assert_memory_equal(r.out, "a\n.\nb\r\n", 7);
	/* After CRLF, "." LF is a stuffed line ending in a bare LF. */
	run_all(S("a\r\n.\nb\r\n.\r\n"), DATA_MODE_DOT, 1000, &r);
	assert_memory_equal(r.out, "a\r\n\nb\r\n", 7);
}

static void test_line_limit(void **state)
{
	char in[4096];
	struct result r;

	/* 998 octets and CRLF: 1000, the limit of RFC 5321 4.5.3.1.6. */
	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	run_all(in, 1003, DATA_MODE_DOT, 1000, &r);
	assert_true(r.done);
	assert_false(r.d.line_too_long);
	assert_int_equal(r.d.body_size, 1000);

	/* The stuffing dot does not count: ".", 998 octets, CRLF decodes to 1000. */
	in[0] = '.';
	memset(in + 1, 'y', 998);
	memcpy(in + 999, "\r\n.\r\n", 5);
	run_all(in, 1004, DATA_MODE_DOT, 1000, &r);
	assert_true(r.done);
	assert_false(r.d.line_too_long);

	/* One more: flagged, still decoded to the end and counted. */
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\nok\r\n.\r\n", 9);
	run_all(in, 1008, DATA_MODE_DOT, 1000, &r);
	assert_true(r.done);
	assert_true(r.d.line_too_long);
	assert_int_equal(r.d.body_size, 1005);
	assert_false(r.d.bare_cr);

	/* A long line without any line end. */
	memset(in, 'z', 3000);
	run_all(in, 3000, DATA_MODE_DOT, 1000, &r);
	assert_false(r.done);
	assert_true(r.d.line_too_long);
	assert_int_equal(r.d.body_size, 3000);

	/* Many lines just under the limit: the count restarts on every line. */
	size_t n = 0;
	for (int i = 0; i < 3; i++) {
		memset(in + n, 'a', 998);
		memcpy(in + n + 998, "\r\n", 2);
		n += 1000;
	}
	memcpy(in + n, ".\r\n", 3);
	run(in, n + 3, DATA_MODE_DOT, 1000, 7, &r);
	assert_true(r.done);
	assert_false(r.d.line_too_long);

	/* 0: no limit. */
	memset(in, 'z', 3000);
	run(in, 3000, DATA_MODE_DOT, 0, 0, &r);
	assert_false(r.d.line_too_long);
}

static void test_after_done(void **state)
{
	struct data_decoder d;
	char out[16];
	size_t used, n;

	data_decoder_init(&d, DATA_MODE_DOT, 1000);
	assert_int_equal(data_decoder_feed(&d, S(".\r\nX"), out, &used, &n), DATA_DONE);
	assert_int_equal(used, 3);
	assert_int_equal(n, 0);
	assert_true(data_decoder_at_line_start(&d));
	assert_int_equal(data_decoder_feed(&d, S("more\r\n"), out, &used, &n), DATA_DONE);
	assert_int_equal(used, 0);
	assert_int_equal(n, 0);
	/* An empty feed is harmless. */
	data_decoder_init(&d, DATA_MODE_DOT, 1000);
	assert_int_equal(data_decoder_feed(&d, "", 0, out, &used, &n), DATA_NEED_MORE);
	assert_int_equal(used, 0);
}

/* Reference stuffer (RFC 5321 4.5.2, sender side) for the byte-exact round trip. */
static size_t stuff(const char *body, size_t len, char *out)
{
	size_t o = 0;
	int bol = 1;

	for (size_t i = 0; i < len; i++) {
		if (bol && body[i] == '.')
			out[o++] = '.';
		out[o++] = body[i];
		bol = body[i] == '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

static void test_round_trip_random(void **state)
{
	static const char alphabet[] = ".a. \t\x80\xff\0";
	char body[2048], wire[4200];
	struct result r;

	srand(1);
	for (int iter = 0; iter < 200; iter++) {
		size_t len = 0;
		int lines = rand() % 12;
		for (int l = 0; l < lines; l++) {
			int n = rand() % 40;
			for (int k = 0; k < n; k++)
				body[len++] = alphabet[rand() % (sizeof(alphabet) - 1)];
			body[len++] = '\r';
			body[len++] = '\n';
		}
		size_t wlen = stuff(body, len, wire);
		memcpy(wire + wlen, "NOOP\r\n", 6);
		run_all(wire, wlen + 6, DATA_MODE_DOT, 1000, &r);
		assert_true(r.done);
		assert_int_equal(r.consumed, wlen);
		assert_int_equal(r.out_len, len);
		assert_memory_equal(r.out, body, len);
		assert_false(r.d.bare_cr || r.d.bare_lf || r.d.line_too_long);
	}
}

static void test_raw(void **state)
{
	struct result r;
	struct data_decoder d;
	char out[64];
	size_t used, n;

	/* No unstuffing, no terminator. */
	run_all(S("..a\r\n.\r\nb\r\n"), DATA_MODE_RAW, 1000, &r);
	assert_false(r.done);
	assert_int_equal(r.consumed, 11);
	assert_memory_equal(r.out, "..a\r\n.\r\nb\r\n", 11);
	assert_int_equal(data_decoder_raw_finish(&r.d), 0);
	assert_true(data_decoder_at_line_start(&r.d));

	/* A CRLF split between two BDAT chunks is fine. */
	data_decoder_init(&d, DATA_MODE_RAW, 1000);
	data_decoder_feed(&d, S("line\r"), out, &used, &n);
	assert_int_equal(n, 5);
	assert_false(d.bare_cr);
	data_decoder_feed(&d, S("\nnext\r\n"), out, &used, &n);
	assert_int_equal(n, 7);
	assert_int_equal(data_decoder_raw_finish(&d), 0);
	assert_int_equal(d.body_size, 12);

	/* A CR at the very end is bare once BDAT LAST says nothing follows. */
	data_decoder_init(&d, DATA_MODE_RAW, 1000);
	data_decoder_feed(&d, S("line\r"), out, &used, &n);
	assert_false(d.bare_cr);
	assert_int_equal(data_decoder_raw_finish(&d), -1);
	assert_true(d.bare_cr);

	/* No final line break: clean, but not at a line start. */
	data_decoder_init(&d, DATA_MODE_RAW, 1000);
	data_decoder_feed(&d, S("line"), out, &used, &n);
	assert_int_equal(data_decoder_raw_finish(&d), 0);
	assert_false(data_decoder_at_line_start(&d));

	run_all(S("a\nb\r\n"), DATA_MODE_RAW, 1000, &r);
	assert_true(r.d.bare_lf);
	assert_int_equal(data_decoder_raw_finish(&r.d), -1);
	run_all(S("a\rb\r\n"), DATA_MODE_RAW, 1000, &r);
	assert_true(r.d.bare_cr);
	run_all(S("a\r\r\n"), DATA_MODE_RAW, 1000, &r);
	assert_true(r.d.bare_cr);
	assert_false(r.d.bare_lf);

	/* Line limit across chunks. */
	char big[1100];
	memset(big, 'q', sizeof(big));
	run_all(big, 1001, DATA_MODE_RAW, 1000, &r);
	assert_true(r.d.line_too_long);
	run_all(big, 999, DATA_MODE_RAW, 1000, &r);
	assert_false(r.d.line_too_long);
	assert_int_equal(data_decoder_raw_finish(&r.d), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_empty_and_first_line),
		cmocka_unit_test(test_unstuffing),
		cmocka_unit_test(test_smuggling),
		cmocka_unit_test(test_bare_output),
		cmocka_unit_test(test_line_limit),
		cmocka_unit_test(test_after_done),
		cmocka_unit_test(test_round_trip_random),
		cmocka_unit_test(test_raw),
	};
	return cmocka_run_group_tests_name("msg/dotstuff", tests, NULL, NULL);
}
