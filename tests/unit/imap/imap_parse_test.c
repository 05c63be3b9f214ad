#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imap/imap_parse.h"

#define S(lit) lit, sizeof(lit) - 1

static const struct imap_limits test_lim = {
	.line_max = 8192,
	.literal_max = 100000,
	.command_max = 200000,
	.nonsync_max = 4096,
	.literal_plus = 1,
};

/* ---- helpers ---- */

/* Appends s to out with CR, LF and NUL made visible. */
static void show(char *out, size_t cap, const char *s, size_t len)
{
	size_t o = strlen(out);
	for (size_t i = 0; i < len && o + 3 < cap; i++) {
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') {
			out[o++] = '\\';
			out[o++] = s[i] == '\r' ? 'r' : s[i] == '\n' ? 'n' : '0';
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
}

/* Runs data through the reader as an engine would, chunk bytes at a time (0: whole),
 * and returns every event as text: "CMD[tag]:text", "CONT", "TOOBIG[tag]",
 * "FATAL[tag]", "BAD[tag]", separated by "|". */
static const char *run_reader(const struct imap_limits *lim, const char *data, size_t len,
			      size_t chunk, int line_mode)
{
	static char ev[65536];
	struct imap_reader r;
	size_t off = 0;

	ev[0] = '\0';
	imap_reader_init(&r, lim);
	while (off < len) {
		size_t n = chunk == 0 || len - off < chunk ? len - off : chunk;
		size_t used;
		enum imap_read_status st =
			line_mode ? imap_reader_feed_line(&r, data + off, n, &used)
				  : imap_reader_feed(&r, data + off, n, &used);
		assert_true(used <= n);
		assert_true(r.cmd.len <= lim->command_max);
		assert_true(r.cmd.cap <= lim->command_max + 1 || r.cmd.cap <= 256);
		off += used;
		if (st == IMAP_READ_NEED_MORE) {
			assert_int_equal(used, n);
			continue;
		}
		if (ev[0] != '\0')
			strcat(ev, "|");
		struct slice c;
		switch (st) {
		case IMAP_READ_COMMAND:
			c = imap_reader_command(&r);
			snprintf(ev + strlen(ev), 200, "CMD[%s]:", r.tag);
			show(ev, sizeof(ev), c.p, c.len);
			break;
		case IMAP_READ_CONTINUE:
			strcat(ev, "CONT");
			break;
		case IMAP_READ_TOO_BIG:
			snprintf(ev + strlen(ev), 200, "TOOBIG[%s]", r.tag);
			/* Nothing was allocated for the announced size. */
			assert_true(r.cmd.cap <= 4096);
			break;
		case IMAP_READ_TOO_BIG_FATAL:
			snprintf(ev + strlen(ev), 200, "FATAL[%s]", r.tag);
			assert_true(r.cmd.cap <= 4096 || lim->command_max > 4096);
			imap_reader_deinit(&r);
			return ev;
		case IMAP_READ_BAD_LINE:
			snprintf(ev + strlen(ev), 200, "BAD[%s]", r.tag);
			break;
		default:
			fail();
		}
		/* Every other finished command is ended through reset, the rest through
		 * the next feed: both must work. */
		if (st != IMAP_READ_CONTINUE && off % 2 == 0)
			imap_reader_reset(&r);
	}
	imap_reader_deinit(&r);
	return ev;
}

/* The events must be the same fed whole, a byte at a time and in 7-byte chunks. */
static void check_feed_lim(const struct imap_limits *lim, const char *data, size_t len,
			   const char *expect, int line_mode)
{
	assert_string_equal(run_reader(lim, data, len, 0, line_mode), expect);
	assert_string_equal(run_reader(lim, data, len, 1, line_mode), expect);
	assert_string_equal(run_reader(lim, data, len, 7, line_mode), expect);
}

static void check_feed(const char *data, size_t len, const char *expect)
{
	check_feed_lim(&test_lim, data, len, expect, 0);
}

/* Renders a parsed argument list: atoms bare, strings "..", literals {..}, ~{..}. */
static void render_args(char *out, size_t cap, const struct imap_arg *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			strncat(out, " ", cap - strlen(out) - 1);
		switch (a[i].type) {
		case IMAP_ARG_ATOM:
			show(out, cap, a[i].s, a[i].len);
			break;
		case IMAP_ARG_NIL:
			strncat(out, "<NIL>", cap - strlen(out) - 1);
			break;
		case IMAP_ARG_STRING:
			strncat(out, "\"", cap - strlen(out) - 1);
			show(out, cap, a[i].s, a[i].len);
			strncat(out, "\"", cap - strlen(out) - 1);
			break;
		case IMAP_ARG_LITERAL:
		case IMAP_ARG_LITERAL8:
			strncat(out, a[i].type == IMAP_ARG_LITERAL ? "{" : "~{",
				cap - strlen(out) - 1);
			show(out, cap, a[i].s, a[i].len);
			strncat(out, "}", cap - strlen(out) - 1);
			break;
		case IMAP_ARG_LIST:
			strncat(out, "(", cap - strlen(out) - 1);
			render_args(out, cap, a[i].list, a[i].n);
			strncat(out, ")", cap - strlen(out) - 1);
			break;
		}
		if (a[i].type != IMAP_ARG_LIST) {
			assert_non_null(a[i].s);
			assert_int_equal(a[i].s[a[i].len], '\0');
		}
	}
}

/* A one-line command goes through the reader unchanged, whole and byte by byte. */
static void check_framing(const char *line, size_t len)
{
	static char in[8192];

	if (len == 0 || len + 2 > sizeof(in) || memchr(line, '\r', len) != NULL ||
	    memchr(line, '\n', len) != NULL || memchr(line, '\0', len) != NULL ||
	    line[len - 1] == '}')
		return;
	memcpy(in, line, len);
	memcpy(in + len, "\r\n", 2);
	for (size_t chunk = 0; chunk < 2; chunk++) {
		struct imap_reader r;
		size_t off = 0, used, n_cmds = 0;
		imap_reader_init(&r, &test_lim);
		while (off < len + 2) {
			size_t n = chunk == 0 ? len + 2 - off : 1;
			enum imap_read_status st = imap_reader_feed(&r, in + off, n, &used);
			off += used;
			if (st == IMAP_READ_NEED_MORE)
				continue;
			assert_int_equal(st, IMAP_READ_COMMAND);
			struct slice c = imap_reader_command(&r);
			assert_int_equal(c.len, len);
			assert_memory_equal(c.p, line, len);
			n_cmds++;
		}
		assert_int_equal(n_cmds, 1);
		imap_reader_deinit(&r);
	}
}

/* "OK tag NAME [UID] | args", "BAD tag: reason" or "NOTAG: reason". */
static const char *parse(const char *line, size_t len)
{
	static char out[8192];
	struct imap_command cmd;
	const char *err;
	struct slice sl = { line, len };
	enum imap_parse_status st = imap_command_parse(sl, &cmd, &err);

	check_framing(line, len);
	out[0] = '\0';
	if (st == IMAP_PARSE_NO_TAG) {
		assert_non_null(err);
		snprintf(out, sizeof(out), "NOTAG: %s", err);
	} else if (st == IMAP_PARSE_BAD) {
		assert_non_null(err);
		assert_null(cmd.args);
		snprintf(out, sizeof(out), "BAD %s: %s", cmd.tag, err);
	} else {
		snprintf(out, sizeof(out), "OK %s %s%s |", cmd.tag, cmd.name,
			 cmd.uid ? " UID" : "");
		if (cmd.n_args > 0)
			strcat(out, " ");
		render_args(out, sizeof(out), cmd.args, cmd.n_args);
	}
	imap_command_free(&cmd);
	assert_null(cmd.mem);
	return out;
}

#define P(lit) parse(S(lit))

/* ---- framing ---- */

static void test_read_simple(void **state)
{
	check_feed(S("a1 NOOP\r\n"), "CMD[a1]:a1 NOOP");
	check_feed(S("a1 NOOP\n"), "CMD[a1]:a1 NOOP");
	check_feed(S("a1 NOOP\r\na2 CAPABILITY\r\nA3 LOGOUT\n"),
		   "CMD[a1]:a1 NOOP|CMD[a2]:a2 CAPABILITY|CMD[A3]:A3 LOGOUT");
	/* Blank lines between commands are skipped. */
	check_feed(S("\r\n\na1 NOOP\r\n\r\n"), "CMD[a1]:a1 NOOP");
	/* Incomplete: nothing yet. */
	check_feed(S("a1 NOOP"), "");
	check_feed(S("a1 NOOP\r"), "");
	/* A line that is only a tag: the tag is still known for the BAD. */
	check_feed(S("a1\r\n"), "CMD[a1]:a1");
	check_feed(S("a1+ NOOP\r\n"), "CMD[*]:a1+ NOOP");
	(void)state;
}

static void test_read_bad_lines(void **state)
{
	check_feed(S("a1 NO\0OP\r\na2 NOOP\r\n"), "BAD[a1]|CMD[a2]:a2 NOOP");
	check_feed(S("a1 NO\rOP\r\na2 NOOP\r\n"), "BAD[a1]|CMD[a2]:a2 NOOP");
	check_feed(S("a1 NOOP\r\r\na2 NOOP\r\n"), "BAD[a1]|CMD[a2]:a2 NOOP");
	/* No tag could be read. */
	check_feed(S("a\0 NOOP\r\nb NOOP\r\n"), "BAD[*]|CMD[b]:b NOOP");
	check_feed(S("\0\n"), "BAD[*]");
	check_feed(S("\r \r\n"), "BAD[*]");
	/* A bad line after a literal: the whole command goes, with its tag. */
	check_feed(S("a1 LOGIN {1+}\r\nx \0\r\na2 NOOP\r\n"), "BAD[a1]|CMD[a2]:a2 NOOP");
	/* The literal itself may hold anything. */
	check_feed(S("a1 APPEND x ~{3+}\r\n\0\r\r\r\n"),
		   "CMD[a1]:a1 APPEND x ~{3+}\\r\\n\\0\\r\\r");
	(void)state;
}

static void test_read_literals(void **state)
{
	check_feed(S("a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n"),
		   "CONT|CONT|CMD[a1]:a1 LOGIN {5}\\r\\nalice {6}\\r\\nsecret");
	/* LITERAL+: no continuation request. */
	check_feed(S("a1 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n"),
		   "CMD[a1]:a1 LOGIN {5+}\\r\\nalice {6+}\\r\\nsecret");
	/* A bare LF after the announcement is stored as CRLF. */
	check_feed(S("a1 LOGIN {5}\nalice x\n"), "CONT|CMD[a1]:a1 LOGIN {5}\\r\\nalice x");
	/* Literal bytes that look like an announcement are data. */
	check_feed(S("a1 APPEND INBOX {7}\r\nab{1}\r\n\r\n"),
		   "CONT|CMD[a1]:a1 APPEND INBOX {7}\\r\\nab{1}\\r\\n");
	check_feed(S("a1 APPEND INBOX {0}\r\n\r\n"), "CONT|CMD[a1]:a1 APPEND INBOX {0}\\r\\n");
	check_feed(S("a1 APPEND INBOX ~{3}\r\n\0\0\0\r\n"),
		   "CONT|CMD[a1]:a1 APPEND INBOX ~{3}\\r\\n\\0\\0\\0");
	/* Not an announcement. */
	check_feed(S("a1 X {}\r\na2 X {+}\r\na3 X {1a}\r\n"),
		   "CMD[a1]:a1 X {}|CMD[a2]:a2 X {+}|CMD[a3]:a3 X {1a}");
	(void)state;
}

static void test_read_continue_consumed(void **state)
{
	struct imap_reader r;
	size_t used;
	const char in[] = "a1 LOGIN {5}\r\nalice x\r\n";

	imap_reader_init(&r, &test_lim);
	assert_int_equal(imap_reader_feed(&r, S(in), &used), IMAP_READ_CONTINUE);
	assert_int_equal(used, 14);
	assert_string_equal(r.tag, "a1");
	assert_int_equal(r.literal_left, 5);
	assert_int_equal(imap_reader_feed(&r, in + used, sizeof(in) - 1 - used, &used),
			 IMAP_READ_COMMAND);
	assert_int_equal(used, 9);
	struct slice c = imap_reader_command(&r);
	assert_int_equal(c.len, 21);
	assert_memory_equal(c.p, "a1 LOGIN {5}\r\nalice x", 21);
	imap_reader_deinit(&r);
	(void)state;
}

static void test_read_too_big(void **state)
{
	struct imap_limits lim = test_lim;

	/* A synchronizing literal over the limit: refused before it is sent; the tag
	 * is known and nothing was allocated for it. */
	check_feed(S("a1 APPEND INBOX {999999999}\r\na2 NOOP\r\n"), "TOOBIG[a1]|CMD[a2]:a2 NOOP");
	check_feed(S("a1 APPEND INBOX {100001}\r\na2 NOOP\r\n"), "TOOBIG[a1]|CMD[a2]:a2 NOOP");
	check_feed(S("a1 APPEND INBOX {100000}\r\n"), "CONT");
	check_feed(S("a1 APPEND INBOX {123456789012345678901234567890}\r\na2 NOOP\r\n"),
		   "TOOBIG[a1]|CMD[a2]:a2 NOOP");
	check_feed(S("a1 APPEND INBOX {18446744073709551616}\r\n"), "TOOBIG[a1]");
	/* Non-synchronizing: the bytes are coming anyway. */
	check_feed(S("a1 APPEND INBOX {999999999+}\r\nxxxx"), "FATAL[a1]");
	check_feed(S("a1 APPEND INBOX {100001+}\r\n"), "FATAL[a1]");
	/* LITERAL- (no LITERAL+): up to nonsync_max. */
	lim.literal_plus = 0;
	check_feed_lim(&lim, S("a1 LOGIN {4096+}\r\n"), "", 0);
	check_feed_lim(&lim, S("a1 LOGIN {4097+}\r\n"), "FATAL[a1]", 0);
	check_feed_lim(&lim, S("a1 LOGIN {4097}\r\n"), "CONT", 0);
	/* A small literal_max (before login). */
	lim.literal_max = 10;
	check_feed_lim(&lim, S("a1 LOGIN {11}\r\n"), "TOOBIG[a1]", 0);
	check_feed_lim(&lim, S("a1 LOGIN {11+}\r\n"), "FATAL[a1]", 0);
	(void)state;
}

static void test_read_too_big_memory(void **state)
{
	struct imap_reader r;
	size_t used;
	const char in[] = "a1 APPEND INBOX (\\Seen) {999999999}\r\n";

	imap_reader_init(&r, &test_lim);
	for (size_t i = 0; i < sizeof(in) - 2; i++)
		assert_int_equal(imap_reader_feed(&r, in + i, 1, &used), IMAP_READ_NEED_MORE);
	assert_int_equal(imap_reader_feed(&r, in + sizeof(in) - 2, 1, &used), IMAP_READ_TOO_BIG);
	assert_int_equal(used, 1);
	assert_string_equal(r.tag, "a1");
	assert_true(r.cmd.cap <= 256);
	imap_reader_reset(&r);
	assert_string_equal(r.tag, "");
	/* Fatal also when no tag could be read; reset is a fresh start. */
	assert_int_equal(imap_reader_feed(&r, S("{999999999+}\r\n"), &used),
			 IMAP_READ_TOO_BIG_FATAL);
	assert_string_equal(r.tag, "*");
	imap_reader_reset(&r);
	assert_int_equal(imap_reader_feed(&r, S("a2 X {999999999+}\r\n"), &used),
			 IMAP_READ_TOO_BIG_FATAL);
	assert_true(r.cmd.cap <= 256);
	assert_string_equal(r.tag, "a2");
	/* It stays fatal. */
	assert_int_equal(imap_reader_feed(&r, S("a3 NOOP\r\n"), &used), IMAP_READ_TOO_BIG_FATAL);
	assert_int_equal(used, 0);
	imap_reader_deinit(&r);
	(void)state;
}

static void test_read_line_max(void **state)
{
	struct imap_limits lim = test_lim;
	char *line = malloc(20000);
	char expect[512];
	size_t n;

	lim.line_max = 100;
	/* 100 bytes fit, 101 do not (CRLF not counted). */
	memset(line, 'a', 20000);
	memcpy(line, "a1 X ", 5);
	memcpy(line + 100, "\r\n", 2);
	snprintf(expect, sizeof(expect), "CMD[a1]:%.100s", line);
	check_feed_lim(&lim, line, 102, expect, 0);
	memcpy(line + 100, "a\n", 2);
	check_feed_lim(&lim, line, 103, "FATAL[a1]", 0);
	check_feed_lim(&lim, line, 101, "FATAL[a1]", 0);
	/* Also without an LF in sight, and without a tag. */
	memset(line, 'a', 20000);
	memcpy(line, "a1 X ", 5);
	check_feed_lim(&lim, line, 20000, "FATAL[a1]", 0);
	check_feed_lim(&lim, line + 5, 19995, "FATAL[*]", 0);
	/* Each line after a literal has its own limit. */
	n = (size_t)sprintf(line, "a1 X {3}\r\nabc");
	memset(line + n, 'a', 90);
	n += 90;
	n += (size_t)sprintf(line + n, "{3}\r\nabc");
	memset(line + n, 'x', 100);
	n += 100;
	n += (size_t)sprintf(line + n, "\r\n");
	snprintf(expect, sizeof(expect), "CONT|CONT|CMD[a1]:");
	show(expect, sizeof(expect), line, n - 2);
	check_feed_lim(&lim, line, n, expect, 0);
	memcpy(line + n - 2, "x\r\n", 3);
	check_feed_lim(&lim, line, n + 1, "CONT|CONT|FATAL[a1]", 0);
	/* A bad line is bounded too. */
	memset(line, 'a', 20000);
	memcpy(line, "a1 X \0", 6);
	check_feed_lim(&lim, line, 20000, "FATAL[a1]", 0);
	free(line);
	(void)state;
}

static void test_read_command_max(void **state)
{
	struct imap_limits lim = test_lim;
	char buf[4096];
	size_t n = 0;

	/* Many small literals: each fits, their sum does not. */
	lim.command_max = 1000;
	n += (size_t)sprintf(buf, "a1 X");
	for (int i = 0; i < 40; i++)
		n += (size_t)sprintf(buf + n, " {20}\r\n%020d", i);
	n += (size_t)sprintf(buf + n, "\r\na2 NOOP\r\n");
	/* Synchronizing: refused at the announcement that does not fit. */
	char expect[1024] = "";
	int conts = 0;
	size_t len = 4;
	while (len + 7 + 20 <= 1000) {
		len += 7 + 20;
		conts++;
	}
	for (int i = 0; i < conts; i++)
		strcat(expect, "CONT|");
	strcat(expect, "TOOBIG[a1]");
	/* What follows the refused literal is the client's next command (the literal
	 * digits here, a "command" with tag 00000000000000000036). */
	const char *ev = run_reader(&lim, buf, n, 0, 0);
	assert_true(strncmp(ev, expect, strlen(expect)) == 0);
	assert_string_equal(run_reader(&lim, buf, n, 1, 0), ev);
	/* Non-synchronizing: fatal. */
	n = (size_t)sprintf(buf, "a1 X");
	for (int i = 0; i < 40; i++)
		n += (size_t)sprintf(buf + n, " {20+}\r\n%020d", i);
	check_feed_lim(&lim, buf, n, "FATAL[a1]", 0);
	/* Exactly command_max, the CRLF not counted, whatever the pieces. */
	n = (size_t)sprintf(buf, "a1 X {4+}\r\nabcd ");
	memset(buf + n, 'z', 1000 - n);
	memcpy(buf + 1000, "\r\n", 2);
	assert_memory_equal(run_reader(&lim, buf, 1002, 1, 0), "CMD[a1]:a1 X {4+}", 17);
	assert_string_equal(run_reader(&lim, buf, 1002, 0, 0), run_reader(&lim, buf, 1002, 1, 0));
	/* Over command_max before a NUL: the limit is what is reported. */
	memcpy(buf + 1000, "zz\0\r\n", 5);
	check_feed_lim(&lim, buf, 1005, "FATAL[a1]", 0);
	/* A long last line after literals. */
	n = (size_t)sprintf(buf, "a1 X {900+}\r\n");
	memset(buf + n, 'x', 900);
	n += 900;
	memset(buf + n, 'y', 200);
	n += 200;
	check_feed_lim(&lim, buf, n, "FATAL[a1]", 0);
	(void)state;
}

static void test_read_tag(void **state)
{
	struct imap_reader r;
	size_t used;

	imap_reader_init(&r, &test_lim);
	assert_int_equal(imap_reader_feed(&r, S("abc"), &used), IMAP_READ_NEED_MORE);
	assert_string_equal(r.tag, "");
	assert_int_equal(imap_reader_feed(&r, S("d SELECT"), &used), IMAP_READ_NEED_MORE);
	assert_string_equal(r.tag, "abcd");
	imap_reader_reset(&r);
	/* 63 bytes fit, 64 do not. */
	char t[80];
	memset(t, 'x', sizeof(t));
	t[63] = ' ';
	assert_int_equal(imap_reader_feed(&r, t, 64, &used), IMAP_READ_NEED_MORE);
	assert_int_equal(strlen(r.tag), 63);
	imap_reader_reset(&r);
	t[63] = 'x';
	t[64] = ' ';
	assert_int_equal(imap_reader_feed(&r, t, 65, &used), IMAP_READ_NEED_MORE);
	assert_string_equal(r.tag, "*");
	imap_reader_reset(&r);
	assert_int_equal(imap_reader_feed(&r, S("a(b NOOP"), &used), IMAP_READ_NEED_MORE);
	assert_string_equal(r.tag, "*");
	imap_reader_deinit(&r);
	(void)state;
}

static void test_read_feed_line(void **state)
{
	struct imap_limits lim = test_lim;

	check_feed_lim(&lim, S("DONE\r\n"), "CMD[]:DONE", 1);
	check_feed_lim(&lim, S("DONE\n"), "CMD[]:DONE", 1);
	/* Empty lines mean something here (an empty SASL response). */
	check_feed_lim(&lim, S("\r\n\r\n"), "CMD[]:|CMD[]:", 1);
	/* No literals. */
	check_feed_lim(&lim, S("dGVzdA== {5}\r\nx\r\n"), "CMD[]:dGVzdA== {5}|CMD[]:x", 1);
	check_feed_lim(&lim, S("a\0b\r\nok\r\n"), "BAD[]|CMD[]:ok", 1);
	lim.line_max = 4;
	check_feed_lim(&lim, S("abcd\r\n"), "CMD[]:abcd", 1);
	check_feed_lim(&lim, S("abcde\r\n"), "FATAL[]", 1);
	(void)state;
}

/* Real clients' commands through the reader and the parser. */
static void test_read_and_parse_clients(void **state)
{
	static const struct {
		const char *in, *parsed;
	} cases[] = {
		{ "1 LOGIN {16}\r\nuser@example.com {8}\r\nS3cr\"t!!\r\n",
		  "OK 1 LOGIN | {user@example.com} {S3cr\"t!!}" },
		{ "A003 APPEND \"Sent Items\" (\\Seen) \"27-Nov-2026 10:38:34 +0100\" {11+}\r\n"
		  "Subject: x\n\r\n",
		  "OK A003 APPEND | \"Sent Items\" (\\Seen) \"27-Nov-2026 10:38:34 +0100\" "
		  "{Subject: x\\n}" },
		{ "5 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc "
		  "Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
		  "In-Reply-To Content-Type Reply-To)])\r\n",
		  "OK 5 FETCH UID | 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To "
		  "Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
		  "In-Reply-To Content-Type Reply-To)])" },
		{ "a7 UID FETCH 4827 (BODY.PEEK[1.2.MIME] BINARY.PEEK[2]<0.16384>)\r\n",
		  "OK a7 FETCH UID | 4827 (BODY.PEEK[1.2.MIME] BINARY.PEEK[2]<0.16384>)" },
		{ "8 UID SEARCH CHARSET UTF-8 OR (FROM \"bob\" NOT SEEN) (OR SUBJECT {3+}\r\n\xc3\xa4x "
		  "SINCE 1-Feb-2026) UNDELETED\r\n",
		  "OK 8 SEARCH UID | CHARSET UTF-8 OR (FROM \"bob\" NOT SEEN) (OR SUBJECT {\xc3\xa4x} "
		  "SINCE 1-Feb-2026) UNDELETED" },
		{ "9 UID STORE 1:3,7 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted $Junk)\r\n",
		  "OK 9 STORE UID | 1:3,7 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted $Junk)" },
		{ "10 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
		  "OK 10 SELECT | INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))" },
		{ "11 LIST \"\" \"*\" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))\r\n",
		  "OK 11 LIST | \"\" \"*\" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))" },
		{ "12 list \"\" %\r\n", "OK 12 LIST | \"\" %" },
		{ "13 ID (\"name\" \"Thunderbird\" \"version\" \"128.3\" \"os\" NIL)\r\n",
		  "OK 13 ID | (\"name\" \"Thunderbird\" \"version\" \"128.3\" \"os\" <NIL>)" },
		{ "14 uid move 5 \"[Gmail]/Trash\"\r\n", "OK 14 MOVE UID | 5 \"[Gmail]/Trash\"" },
		{ "15 SELECT [Gmail]/Drafts\r\n", "OK 15 SELECT | [Gmail]/Drafts" },
		{ "16 ENABLE QRESYNC CONDSTORE UTF8=ACCEPT\r\n",
		  "OK 16 ENABLE | QRESYNC CONDSTORE UTF8=ACCEPT" },
		{ "17 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
		  "OK 17 AUTHENTICATE | PLAIN AGFsaWNlAHNlY3JldA==" },
		{ "18 FETCH 2 BODY[HEADER.FIELDS.NOT (\"X-A]\" Received)]\r\n",
		  "OK 18 FETCH | 2 BODY[HEADER.FIELDS.NOT (\"X-A]\" Received)]" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t chunk = 0; chunk < 3; chunk++) {
			struct imap_reader r;
			const char *in = cases[i].in;
			size_t len = strlen(in), used, off = 0;
			enum imap_read_status st = IMAP_READ_NEED_MORE;

			imap_reader_init(&r, &test_lim);
			while (off < len) {
				size_t n = chunk == 0 ? len - off : chunk;
				if (n > len - off)
					n = len - off;
				st = imap_reader_feed(&r, in + off, n, &used);
				off += used;
				assert_true(st == IMAP_READ_NEED_MORE || st == IMAP_READ_CONTINUE ||
					    st == IMAP_READ_COMMAND);
			}
			assert_int_equal(st, IMAP_READ_COMMAND);
			struct slice c = imap_reader_command(&r);
			assert_string_equal(parse(c.p, c.len), cases[i].parsed);
			imap_reader_deinit(&r);
		}
	}
	(void)state;
}

/* ---- parsing ---- */

static void test_parse_basic(void **state)
{
	assert_string_equal(P("a1 NOOP"), "OK a1 NOOP |");
	assert_string_equal(P("a1 noop"), "OK a1 NOOP |");
	assert_string_equal(P("a1   select   INBOX  "), "OK a1 SELECT | INBOX");
	assert_string_equal(P("a1 uid fetch 1 FLAGS"), "OK a1 FETCH UID | 1 FLAGS");
	assert_string_equal(P("a1 UID"), "BAD a1: Missing command after UID");
	assert_string_equal(P("a1 UID \"FETCH\""), "BAD a1: Invalid command name");
	assert_string_equal(P("a1"), "BAD a1: Missing command");
	assert_string_equal(P("a1 "), "BAD a1: Missing command");
	assert_string_equal(P("a1 (x)"), "BAD a1: Invalid command name");
	assert_string_equal(P("a1 FETCH(1)"), "BAD a1: Invalid command name");
	assert_string_equal(P("a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
			    "OK a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA |");
	assert_string_equal(P("a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "BAD a1: Unknown command");
	assert_string_equal(P(""), "NOTAG: Empty command");
	assert_string_equal(P(" NOOP"), "NOTAG: Invalid tag");
	assert_string_equal(P("a+1 NOOP"), "NOTAG: Invalid tag");
	assert_string_equal(P("a*1 NOOP"), "NOTAG: Invalid tag");
	assert_string_equal(P("a\"1 NOOP"), "NOTAG: Invalid tag");
	assert_string_equal(P("a]1 NOOP"), "OK a]1 NOOP |");
	assert_string_equal(P("0123456789012345678901234567890123456789012345678901234567890123 X"),
			    "NOTAG: Invalid tag");
	assert_string_equal(P("012345678901234567890123456789012345678901234567890123456789012 X"),
			    "OK 012345678901234567890123456789012345678901234567890123456789012 X |");
	(void)state;
}

static void test_parse_atoms(void **state)
{
	assert_string_equal(P("a STORE 1 +FLAGS (\\Seen \\Answered $Label1)"),
			    "OK a STORE | 1 +FLAGS (\\Seen \\Answered $Label1)");
	assert_string_equal(P("a X \\*"), "OK a X | \\*");
	assert_string_equal(P("a X a\\b"), "BAD a: Missing space between arguments");
	assert_string_equal(P("a LIST \"\" INBOX.*"), "OK a LIST | \"\" INBOX.*");
	assert_string_equal(P("a LIST \"\" %/%"), "OK a LIST | \"\" %/%");
	assert_string_equal(P("a X foo]"), "OK a X | foo]");
	assert_string_equal(P("a X nil Nil NILS"), "OK a X | <NIL> <NIL> NILS");
	assert_string_equal(P("a FETCH 1 BODY[]"), "OK a FETCH | 1 BODY[]");
	assert_string_equal(P("a FETCH 1 (BODY[] BODY[TEXT]<10.20>)"),
			    "OK a FETCH | 1 (BODY[] BODY[TEXT]<10.20>)");
	assert_string_equal(P("a FETCH 1 BODY[HEADER.FIELDS (A \"B C\" \"D\\\"]\")]"),
			    "OK a FETCH | 1 BODY[HEADER.FIELDS (A \"B C\" \"D\\\"]\")]");
	/* An unclosed "[" is an ordinary ATOM-CHAR. */
	assert_string_equal(P("a SELECT foo[bar"), "OK a SELECT | foo[bar");
	assert_string_equal(P("a X (a[b c)"), "OK a X | (a[b c)");
	assert_string_equal(P("a FETCH 1 BODY[HEADER.FIELDS (A"), "BAD a: Missing ')'");
	/* 8-bit and controls are not atoms. */
	assert_string_equal(P("a SELECT \xc3\xa4"), "BAD a: Invalid characters in command");
	assert_string_equal(P("a SELECT x\xc3\xa4"), "BAD a: Invalid characters in command");
	assert_string_equal(P("a SELECT x\ty"), "BAD a: Invalid characters in command");
	assert_string_equal(P("a SELECT x\"y\""), "BAD a: Missing space between arguments");
	(void)state;
}

static void test_parse_strings(void **state)
{
	assert_string_equal(P("a LOGIN \"bob\" \"p\\\"w\\\\d\""),
			    "OK a LOGIN | \"bob\" \"p\"w\\d\"");
	assert_string_equal(P("a LOGIN \"\" \"\""), "OK a LOGIN | \"\" \"\"");
	assert_string_equal(P("a SELECT \"Entw\xc3\xbc rfe\""),
			    "OK a SELECT | \"Entw\xc3\xbc rfe\"");
	assert_string_equal(P("a LOGIN \"bob"), "BAD a: Unterminated quoted string");
	assert_string_equal(P("a LOGIN \"bob\\"), "BAD a: Unterminated quoted string");
	assert_string_equal(P("a LOGIN \"b\\ob\""), "BAD a: Invalid escape in quoted string");
	assert_string_equal(P("a LOGIN \"b\r\nb\""), "BAD a: Unterminated quoted string");
	assert_string_equal(P("a LOGIN \"b\0b\""), "BAD a: NUL in quoted string");
	assert_string_equal(P("a LOGIN \"a\"\"b\""), "BAD a: Missing space between arguments");
	/* Literals. */
	assert_string_equal(P("a LOGIN {3}\r\nbob {0+}\r\n"), "OK a LOGIN | {bob} {}");
	assert_string_equal(P("a LOGIN {3}\nbob x"), "OK a LOGIN | {bob} x");
	assert_string_equal(P("a LOGIN {4}\r\nbob"), "BAD a: Literal truncated");
	assert_string_equal(P("a LOGIN {99999999999999999999999}\r\nbob"),
			    "BAD a: Literal truncated");
	assert_string_equal(P("a LOGIN {3}bob"), "BAD a: Invalid literal");
	assert_string_equal(P("a LOGIN {}\r\n"), "BAD a: Invalid literal");
	assert_string_equal(P("a LOGIN {3\r\n"), "BAD a: Invalid literal");
	assert_string_equal(P("a LOGIN {3}\r\nbobx"), "BAD a: Missing space between arguments");
	assert_string_equal(P("a LOGIN {3}\r\nb\0b"), "BAD a: NUL in literal");
	assert_string_equal(P("a APPEND x ~{3}\r\nb\0b"), "OK a APPEND | x ~{b\\0b}");
	assert_string_equal(P("a APPEND x ~{3+}\r\n\r\n\r"), "OK a APPEND | x ~{\\r\\n\\r}");
	assert_string_equal(P("a X ~x"), "OK a X | ~x");
	(void)state;
}

static void test_parse_lists(void **state)
{
	char buf[300];
	size_t n;

	assert_string_equal(P("a X () (()) ( a  b )"), "OK a X | () (()) (a b)");
	assert_string_equal(P("a X (a (b (c \"d\") {1}\r\ne) f)"),
			    "OK a X | (a (b (c \"d\") {e}) f)");
	assert_string_equal(P("a X (a"), "BAD a: Missing ')'");
	assert_string_equal(P("a X ((a)"), "BAD a: Missing ')'");
	assert_string_equal(P("a X a)"), "BAD a: Unexpected ')'");
	assert_string_equal(P("a X (a)b"), "BAD a: Missing space between arguments");
	assert_string_equal(P("a X (a)(b)"), "BAD a: Missing space between arguments");
	/* 32 levels, not 33. */
	n = (size_t)sprintf(buf, "a X ");
	for (int i = 0; i < 32; i++)
		buf[n++] = '(';
	for (int i = 0; i < 32; i++)
		buf[n++] = ')';
	assert_memory_equal(parse(buf, n), "OK a X | ((((", 13);
	n = (size_t)sprintf(buf, "a X ");
	for (int i = 0; i < 33; i++)
		buf[n++] = '(';
	for (int i = 0; i < 33; i++)
		buf[n++] = ')';
	assert_string_equal(parse(buf, n), "BAD a: Too deeply nested lists");
	(void)state;
}

static void test_parse_limits(void **state)
{
	size_t cap = 2 * 100001 + 10, n;
	char *big = malloc(cap);
	struct imap_command cmd;
	const char *err;

	/* 100,000 arguments (lists and their elements count) fit, 100,001 do not. */
	n = (size_t)sprintf(big, "a X");
	for (int i = 0; i < 100000; i++) {
		big[n++] = ' ';
		big[n++] = 'x';
	}
	struct slice sl = { big, n };
	assert_int_equal(imap_command_parse(sl, &cmd, &err), IMAP_PARSE_OK);
	assert_int_equal(cmd.n_args, 100000);
	imap_command_free(&cmd);
	big[n++] = ' ';
	big[n++] = 'x';
	sl.len = n;
	assert_int_equal(imap_command_parse(sl, &cmd, &err), IMAP_PARSE_BAD);
	assert_string_equal(err, "Too many arguments");
	assert_string_equal(cmd.tag, "a");
	imap_command_free(&cmd);
	free(big);

	/* "[" without "]" again and again: linear, not quadratic. */
	size_t len = 4 << 20;
	big = malloc(len);
	memcpy(big, "a X ", 4);
	memset(big + 4, '[', len - 4);
	sl.p = big;
	sl.len = len;
	clock_t t0 = clock();
	assert_int_equal(imap_command_parse(sl, &cmd, &err), IMAP_PARSE_OK);
	assert_int_equal(cmd.n_args, 1);
	assert_int_equal(cmd.args[0].len, len - 4);
	imap_command_free(&cmd);
	for (size_t i = 4; i + 1 < len; i += 2)
		big[i + 1] = '"';
	imap_command_parse(sl, &cmd, &err);
	imap_command_free(&cmd);
	memset(big + 4, '[', len - 4);
	big[len - 1] = ']';
	assert_int_equal(imap_command_parse(sl, &cmd, &err), IMAP_PARSE_OK);
	imap_command_free(&cmd);
	assert_true(clock() - t0 < 2 * CLOCKS_PER_SEC);
	free(big);
	(void)state;
}

static void test_arg_kinds(void **state)
{
	struct imap_arg a = { IMAP_ARG_ATOM, "x", 1, NULL, 0 };

	assert_true(imap_arg_is_astring(&a) && imap_arg_is_nstring(&a));
	a.type = IMAP_ARG_NIL;
	assert_true(imap_arg_is_astring(&a) && imap_arg_is_nstring(&a));
	a.type = IMAP_ARG_STRING;
	assert_true(imap_arg_is_astring(&a));
	a.type = IMAP_ARG_LITERAL;
	assert_true(imap_arg_is_astring(&a));
	a.type = IMAP_ARG_LITERAL8;
	assert_false(imap_arg_is_astring(&a) || imap_arg_is_nstring(&a));
	a.type = IMAP_ARG_LIST;
	assert_false(imap_arg_is_astring(&a) || imap_arg_is_nstring(&a));
	(void)state;
}

/* ---- sequence sets ---- */

static const char *seqset(const char *s, uint32_t star)
{
	static char out[512];
	struct imap_range *r;
	size_t n;

	if (imap_seqset_parse(s, strlen(s), star, &r, &n) < 0) {
		assert_null(r);
		assert_int_equal(n, 0);
		return "ERR";
	}
	out[0] = '\0';
	for (size_t i = 0; i < n && strlen(out) < 400; i++)
		sprintf(out + strlen(out), "%s%u:%u", i ? "," : "", r[i].lo, r[i].hi);
	free(r);
	return out;
}

static void test_seqset(void **state)
{
	assert_string_equal(seqset("1:5,7,9:*", 20), "1:5,7:7,9:20");
	assert_string_equal(seqset("*:4", 20), "4:20");
	assert_string_equal(seqset("*", 20), "20:20");
	assert_string_equal(seqset("5:1", 20), "1:5");
	assert_string_equal(seqset("3,1,2,10:12,11", 0), "1:3,10:12");
	assert_string_equal(seqset("1:3,4:6", 0), "1:6");
	assert_string_equal(seqset("4294967295", 0), "4294967295:4294967295");
	assert_string_equal(seqset("1:4294967295,5", 0), "1:4294967295");
	assert_string_equal(seqset("1:*", 0), "0:1");
	assert_string_equal(seqset("4294967296", 0), "ERR");
	assert_string_equal(seqset("99999999999999999999", 0), "ERR");
	assert_string_equal(seqset("0", 5), "ERR");
	assert_string_equal(seqset("1:0", 5), "ERR");
	assert_string_equal(seqset("01", 5), "ERR");
	assert_string_equal(seqset("", 5), "ERR");
	assert_string_equal(seqset("1,", 5), "ERR");
	assert_string_equal(seqset(",1", 5), "ERR");
	assert_string_equal(seqset("1,,2", 5), "ERR");
	assert_string_equal(seqset("1:", 5), "ERR");
	assert_string_equal(seqset("1:2:3", 5), "ERR");
	assert_string_equal(seqset("$", 5), "ERR");
	assert_string_equal(seqset("1 ", 5), "ERR");
	assert_string_equal(seqset("-1", 5), "ERR");
	assert_string_equal(seqset("**", 5), "ERR");

	/* 10,000 ranges after merging fit; 10,001 do not; duplicates merge. */
	size_t cap = 20001 * 8 + 10, n = 0;
	char *s = malloc(cap);
	for (int i = 0; i < 10000; i++)
		n += (size_t)sprintf(s + n, "%s%d", i ? "," : "", 2 * i + 1);
	struct imap_range *r;
	size_t nr;
	assert_int_equal(imap_seqset_parse(s, n, 1, &r, &nr), 0);
	assert_int_equal(nr, 10000);
	assert_true(imap_seqset_contains(r, nr, 1));
	assert_false(imap_seqset_contains(r, nr, 2));
	assert_true(imap_seqset_contains(r, nr, 19999));
	assert_false(imap_seqset_contains(r, nr, 20000));
	assert_false(imap_seqset_contains(r, nr, 0));
	free(r);
	n += (size_t)sprintf(s + n, ",30000");
	assert_int_equal(imap_seqset_parse(s, n, 1, &r, &nr), -1);
	n = 0;
	for (int i = 0; i < 20001; i++)
		n += (size_t)sprintf(s + n, "%s%d", i ? "," : "", 7 + i % 3);
	assert_int_equal(imap_seqset_parse(s, n, 1, &r, &nr), 0);
	assert_int_equal(nr, 1);
	assert_int_equal(r[0].lo, 7);
	assert_int_equal(r[0].hi, 9);
	free(r);
	free(s);
	assert_false(imap_seqset_contains(NULL, 0, 1));
	(void)state;
}

/* ---- dates ---- */

static void test_dates(void **state)
{
	int64_t t;
	int tz;

	assert_int_equal(imap_date_parse(S("27-Nov-2026"), &t), 0);
	assert_int_equal(t, 1795737600);
	assert_int_equal(imap_date_parse(S("1-jan-1970"), &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(imap_date_parse(S("01-JAN-1970"), &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(imap_date_parse(S("29-Feb-2024"), &t), 0);
	assert_int_equal(t, 1709164800);
	assert_int_equal(imap_date_parse(S("29-Feb-2000"), &t), 0);
	assert_int_equal(imap_date_parse(S("31-Dec-9999"), &t), 0);
	assert_int_equal(imap_date_parse(S("29-Feb-2023"), &t), -1);
	assert_int_equal(imap_date_parse(S("29-Feb-1900"), &t), -1);
	assert_int_equal(imap_date_parse(S("31-Apr-2026"), &t), -1);
	assert_int_equal(imap_date_parse(S("0-Jan-2026"), &t), -1);
	assert_int_equal(imap_date_parse(S("32-Jan-2026"), &t), -1);
	assert_int_equal(imap_date_parse(S("27-Nox-2026"), &t), -1);
	assert_int_equal(imap_date_parse(S("27-Nov-26"), &t), -1);
	assert_int_equal(imap_date_parse(S("27-Nov-20266"), &t), -1);
	assert_int_equal(imap_date_parse(S("127-Nov-2026"), &t), -1);
	assert_int_equal(imap_date_parse(S(" 7-Nov-2026"), &t), -1);
	assert_int_equal(imap_date_parse(S("27 Nov 2026"), &t), -1);
	assert_int_equal(imap_date_parse(S("27-Nov-"), &t), -1);
	assert_int_equal(imap_date_parse(S(""), &t), -1);

	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:38:34 +0100"), &t, &tz), 0);
	assert_int_equal(t, 1795772314);
	assert_int_equal(tz, 60);
	assert_int_equal(imap_datetime_parse(S(" 7-Nov-2026 10:38:34 -0500"), &t, &tz), 0);
	assert_int_equal(t, 1794065914);
	assert_int_equal(tz, -300);
	assert_int_equal(imap_datetime_parse(S("7-nov-2026 10:38:34 -0500"), &t, &tz), 0);
	assert_int_equal(t, 1794065914);
	assert_int_equal(imap_datetime_parse(S("07-Nov-2026 10:38:34 -0500"), &t, &tz), 0);
	assert_int_equal(imap_datetime_parse(S("31-Dec-2026 23:59:60 +0000"), &t, &tz), 0);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 24:00:00 +0100"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:60:00 +0100"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:00:61 +0100"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:38:34 +2400"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:38:34 +0160"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:38:34 0100"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:38:34 +010"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:38:34 +01000"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026 10:38 +0100"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026  10:38:34 +0100"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("30-Feb-2026 10:38:34 +0100"), &t, &tz), -1);
	assert_int_equal(imap_datetime_parse(S("27-Nov-2026"), &t, &tz), -1);

	char out[32];
	imap_datetime_format(1795772314, 60, out);
	assert_string_equal(out, "27-Nov-2026 10:38:34 +0100");
	imap_datetime_format(1794065914, -300, out);
	assert_string_equal(out, " 7-Nov-2026 10:38:34 -0500");
	imap_datetime_format(0, 0, out);
	assert_string_equal(out, " 1-Jan-1970 00:00:00 +0000");
	imap_datetime_format(-1, 0, out);
	assert_string_equal(out, "31-Dec-1969 23:59:59 +0000");
	imap_datetime_format(INT64_MAX, 0, out);
	assert_string_equal(out, "31-Dec-9999 23:59:59 +0000");
	imap_datetime_format(INT64_MIN, -600, out);
	assert_string_equal(out, " 1-Jan-0000 00:00:00 -1000");
	/* Format and parse agree. */
	for (int64_t x = -86400LL * 800; x < 86400LL * 365 * 40; x += 86400 * 7 + 3607) {
		imap_datetime_format(x, 330, out);
		assert_int_equal(imap_datetime_parse(out, strlen(out), &t, &tz), 0);
		assert_int_equal(t, x);
		assert_int_equal(tz, 330);
	}
	(void)state;
}

/* ---- modified UTF-7 ---- */

static void check_mutf7(const char *m, const char *u)
{
	char out[256];

	assert_int_equal(imap_mutf7_to_utf8(m, strlen(m), out, sizeof(out)), 0);
	assert_string_equal(out, u);
	assert_int_equal(imap_utf8_to_mutf7(u, strlen(u), out, sizeof(out)), 0);
	assert_string_equal(out, m);
	/* Exactly enough room, and one byte less. */
	assert_int_equal(imap_mutf7_to_utf8(m, strlen(m), out, strlen(u) + 1), 0);
	assert_int_equal(imap_mutf7_to_utf8(m, strlen(m), out, strlen(u)), -1);
	assert_int_equal(imap_utf8_to_mutf7(u, strlen(u), out, strlen(m) + 1), 0);
	assert_int_equal(imap_utf8_to_mutf7(u, strlen(u), out, strlen(m)), -1);
}

static int mutf7_bad(const char *m)
{
	char out[256];
	return imap_mutf7_to_utf8(m, strlen(m), out, sizeof(out)) == -1;
}

static int utf8_bad(const char *u)
{
	char out[256];
	return imap_utf8_to_mutf7(u, strlen(u), out, sizeof(out)) == -1;
}

static void test_mutf7(void **state)
{
	check_mutf7("INBOX", "INBOX");
	check_mutf7("", "");
	check_mutf7("&-", "&");
	check_mutf7("R&-D &- Co", "R&D & Co");
	check_mutf7("Entw&APw-rfe", "Entw\xc3\xbcrfe");
	check_mutf7("&ZeVnLIqe-", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
	check_mutf7("&AOQA9g-", "\xc3\xa4\xc3\xb6");
	check_mutf7("&2D3eAA-", "\xf0\x9f\x98\x80");
	check_mutf7("a&2D3eAA-&-b&AOQ-", "a\xf0\x9f\x98\x80&b\xc3\xa4");
	check_mutf7("&AAE-", "\x01");
	check_mutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-",
		    "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");

	assert_true(mutf7_bad("&Jjo!"));
	assert_true(mutf7_bad("&"));
	assert_true(mutf7_bad("a&"));
	assert_true(mutf7_bad("&AOQ"));
	assert_true(mutf7_bad("&AGE-"));      /* "a" encoded */
	assert_true(mutf7_bad("&ACY-"));      /* "&" encoded */
	assert_true(mutf7_bad("&AOR-"));      /* nonzero padding bits */
	assert_true(mutf7_bad("&AOQA-"));     /* a partial unit */
	assert_true(mutf7_bad("&AO-"));
	assert_true(mutf7_bad("&AOQ-&APY-")); /* two runs touching */
	assert_true(mutf7_bad("&2D0-"));      /* lone high surrogate */
	assert_true(mutf7_bad("&3gA-"));      /* lone low surrogate */
	assert_true(mutf7_bad("&2D3YPQ-"));   /* high + high */
	assert_true(mutf7_bad("&AAA-"));      /* NUL */
	assert_true(mutf7_bad("&AOQ=-"));
	assert_true(mutf7_bad("&AOQ/-"));
	assert_true(mutf7_bad("Entw\xc3\xbcrfe"));
	assert_true(mutf7_bad("a\tb"));
	assert_false(mutf7_bad("&AOQ-&-&APY-"));
	char out[4];
	assert_int_equal(imap_mutf7_to_utf8("a", 1, out, 0), -1);
	assert_int_equal(imap_utf8_to_mutf7("a", 1, out, 0), -1);

	assert_true(utf8_bad("\xc3"));
	assert_true(utf8_bad("\xc0\xaf"));
	assert_true(utf8_bad("\xe0\x80\xaf"));
	assert_true(utf8_bad("\xed\xa0\x80"));
	assert_true(utf8_bad("\xf4\x90\x80\x80"));
	assert_true(utf8_bad("\xff"));
	assert_true(utf8_bad("a\xc3\xa4\xc3"));
	assert_int_equal(imap_utf8_to_mutf7("a\0b", 3, out, sizeof(out)), -1);
	(void)state;
}

/* ---- strings in replies ---- */

static const char *wstr(const char *s, size_t len, int utf8)
{
	static struct buf b;
	static char out[4096];

	buf_init(&b, 0);
	assert_int_equal(imap_write_string(&b, s, len, utf8), 0);
	out[0] = '\0';
	show(out, sizeof(out), b.data, b.len);
	buf_deinit(&b);
	return out;
}

static void test_write_string(void **state)
{
	assert_string_equal(wstr(S("abc"), 0), "\"abc\"");
	assert_string_equal(wstr(S(""), 0), "\"\"");
	assert_string_equal(wstr(S("a\"b\\c"), 0), "\"a\\\"b\\\\c\"");
	assert_string_equal(wstr(S("\"\""), 0), "\"\\\"\\\"\"");
	assert_string_equal(wstr(S("a\r\nb"), 0), "{4}\\r\\na\\r\\nb");
	assert_string_equal(wstr(S("a\0b"), 0), "{3}\\r\\na\\0b");
	assert_string_equal(wstr(S("\xc3\xa4"), 0), "{2}\\r\\n\xc3\xa4");
	assert_string_equal(wstr(S("\xc3\xa4"), 1), "\"\xc3\xa4\"");
	assert_string_equal(wstr(S("\xc3"), 1), "{1}\\r\\n\xc3");
	assert_string_equal(wstr(NULL, 0, 0), "NIL");

	char big[1100];
	memset(big, 'x', sizeof(big));
	const char *w = wstr(big, 1023, 0);
	assert_int_equal(w[0], '"');
	assert_int_equal(strlen(w), 1025);
	w = wstr(big, 1024, 0);
	assert_memory_equal(w, "{1024}\\r\\nxxx", 13);

	struct buf b;
	buf_init(&b, 10);
	assert_int_equal(imap_write_nstring(&b, NULL, 0, 0), 0);
	assert_string_equal(b.data, "NIL");
	assert_int_equal(imap_write_nstring(&b, S("abcdef"), 0), -1);
	assert_string_equal(b.data, "NIL");
	assert_int_equal(imap_write_string(&b, S("a\r\nbc"), 0), -1);
	assert_string_equal(b.data, "NIL");
	assert_int_equal(b.len, 3);
	assert_int_equal(imap_write_string(&b, S("abcde"), 0), 0);
	assert_string_equal(b.data, "NIL\"abcde\"");
	buf_deinit(&b);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_simple),
		cmocka_unit_test(test_read_bad_lines),
		cmocka_unit_test(test_read_literals),
		cmocka_unit_test(test_read_continue_consumed),
		cmocka_unit_test(test_read_too_big),
		cmocka_unit_test(test_read_too_big_memory),
		cmocka_unit_test(test_read_line_max),
		cmocka_unit_test(test_read_command_max),
		cmocka_unit_test(test_read_tag),
		cmocka_unit_test(test_read_feed_line),
		cmocka_unit_test(test_read_and_parse_clients),
		cmocka_unit_test(test_parse_basic),
		cmocka_unit_test(test_parse_atoms),
		cmocka_unit_test(test_parse_strings),
		cmocka_unit_test(test_parse_lists),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_arg_kinds),
		cmocka_unit_test(test_seqset),
		cmocka_unit_test(test_dates),
		cmocka_unit_test(test_mutf7),
		cmocka_unit_test(test_write_string),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
