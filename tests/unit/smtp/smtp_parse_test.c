#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "smtp/smtp_parse.h"

#define S(lit) lit, sizeof(lit) - 1

/* ---- line reader ---- */

/* A caller as the engine would be: an input buffer that bytes are appended to, and
 * every event the reader reports, as text ("OK:EHLO x", "TOO_LONG", "BARE_LF:x"). */
struct feeder {
	struct smtp_line_reader r;
	char buf[4096];
	size_t len;
	char events[32][600];
	int n_events;
};

static void feeder_init(struct feeder *f, size_t limit)
{
	memset(f, 0, sizeof(*f));
	smtp_line_reader_init(&f->r, limit);
}

static void feeder_push(struct feeder *f, const char *data, size_t len)
{
	assert_true(f->len + len <= sizeof(f->buf));
	memcpy(f->buf + f->len, data, len);
	f->len += len;
	for (;;) {
		const char *line;
		size_t line_len, used;
		enum smtp_line_status st = smtp_line_reader_next(&f->r, f->buf, f->len, &line,
								 &line_len, &used);
		assert_true(used <= f->len);
		if (st != SMTP_LINE_NEED_MORE) {
			assert_true(used > 0);
			assert_true(f->n_events < 32);
			/* line is borrowed from buf: copy it before the buffer moves. */
			char *ev = f->events[f->n_events++];
			if (st == SMTP_LINE_OK)
				snprintf(ev, 600, "OK:%.*s", (int)line_len, line);
			else if (st == SMTP_LINE_BARE_LF)
				snprintf(ev, 600, "BARE_LF:%.*s", (int)line_len, line);
			else
				snprintf(ev, 600, "TOO_LONG");
		}
		memmove(f->buf, f->buf + used, f->len - used);
		f->len -= used;
		if (st == SMTP_LINE_NEED_MORE)
			break;
	}
}

/* Pushes data whole and a byte at a time; both must give expect[]. */
static void check_lines(const char *data, size_t len, size_t limit, const char *const *expect,
			int n_expect)
{
	static struct feeder whole, bytes;

	feeder_init(&whole, limit);
	feeder_push(&whole, data, len);
	feeder_init(&bytes, limit);
	for (size_t i = 0; i < len; i++)
		feeder_push(&bytes, data + i, 1);
	assert_int_equal(whole.n_events, n_expect);
	assert_int_equal(bytes.n_events, n_expect);
	for (int i = 0; i < n_expect; i++) {
		assert_string_equal(whole.events[i], expect[i]);
		assert_string_equal(bytes.events[i], expect[i]);
	}
}

static void test_lines_simple(void **state)
{
	static const char *const expect[] = { "OK:EHLO client.example", "OK:MAIL FROM:<a@b>", "OK:",
					      "OK:QUIT" };
	check_lines(S("EHLO client.example\r\nMAIL FROM:<a@b>\r\n\r\nQUIT\r\nRSET"), SMTP_LINE_MAX,
		    expect, 4);
}

static void test_lines_bare_lf_and_cr(void **state)
{
	static const char *const expect[] = { "BARE_LF:NOOP", "OK:NO\rOP", "BARE_LF:", "OK:\r",
					      "OK:QUIT" };
	check_lines(S("NOOP\nNO\rOP\r\n\n\r\r\nQUIT\r\n"), SMTP_LINE_MAX, expect, 5);
}

static void test_lines_limit(void **state)
{
	char data[1200];
	static const char *const too_long[] = { "TOO_LONG", "OK:NOOP" };
	char expect_buf[600];
	const char *expect[1] = { expect_buf };

	/* 510 octets and CRLF: exactly SMTP_LINE_MAX. */
	memset(data, 'a', 510);
	memcpy(data + 510, "\r\n", 2);
	snprintf(expect_buf, sizeof(expect_buf), "OK:%.510s", data);
	check_lines(data, 512, SMTP_LINE_MAX, expect, 1);

	/* One more octet: too long, reported once, and the next line is fine. */
	memset(data, 'a', 511);
	memcpy(data + 511, "\r\nNOOP\r\n", 8);
	check_lines(data, 519, SMTP_LINE_MAX, too_long, 2);
	/* 512 octets then a bare LF. */
	memset(data, 'a', 512);
	memcpy(data + 512, "\nNOOP\r\n", 7);
	check_lines(data, 519, SMTP_LINE_MAX, too_long, 2);
	/* Much longer. */
	memset(data, 'b', 1100);
	memcpy(data + 1100, "\r\nNOOP\r\n", 8);
	check_lines(data, 1108, SMTP_LINE_MAX, too_long, 2);
}

/* A larger limit, as for AUTH responses. */
static void test_lines_auth_limit(void **state)
{
	char data[1200];
	struct feeder *f = test_malloc(sizeof(*f));

	memset(data, 'c', 1000);
	memcpy(data + 1000, "\r\n", 2);
	feeder_init(f, 1002);
	feeder_push(f, data, 1002);
	assert_int_equal(f->n_events, 1);
	assert_int_equal(strncmp(f->events[0], "OK:ccc", 6), 0);
	assert_int_equal(strlen(f->events[0]), 599); /* cut by the feeder's snprintf */
	feeder_init(f, 1001);
	feeder_push(f, data, 1002);
	assert_int_equal(f->n_events, 1);
	assert_string_equal(f->events[0], "TOO_LONG");
	test_free(f);
}

/* A 10 MB line without LF costs no memory and gives exactly one TOO_LONG. */
static void test_lines_huge(void **state)
{
	struct smtp_line_reader r;
	char chunk[4096];
	char buf[8192];
	size_t len = 0;
	int too_long = 0, ok = 0;

	memset(chunk, 'x', sizeof(chunk));
	smtp_line_reader_init(&r, SMTP_LINE_MAX);
	/* 2560 chunks of 4 KiB: 10 MiB, the last one ending the line and adding QUIT. */
	for (int i = 0; i < 2560; i++) {
		size_t n = sizeof(chunk);
		if (i == 2559)
			memcpy(chunk + n - 8, "\r\nQUIT\r\n", 8);
		memcpy(buf + len, chunk, n);
		len += n;
		for (;;) {
			const char *line;
			size_t line_len, used;
			enum smtp_line_status st = smtp_line_reader_next(&r, buf, len, &line,
									 &line_len, &used);
			memmove(buf, buf + used, len - used);
			len -= used;
			if (st == SMTP_LINE_NEED_MORE)
				break;
			if (st == SMTP_LINE_TOO_LONG)
				too_long++;
			if (st == SMTP_LINE_OK) {
				assert_int_equal(line_len, 4);
				assert_memory_equal(line, "QUIT", 4);
				ok++;
			}
		}
		/* The caller never has to hold more than the limit. */
		assert_true(len < SMTP_LINE_MAX);
	}
	assert_int_equal(too_long, 1);
	assert_int_equal(ok, 1);
	assert_int_equal(len, 0);
}

static void test_lines_reset(void **state)
{
	struct smtp_line_reader r;
	const char *line;
	size_t line_len, used;
	char big[600];

	smtp_line_reader_init(&r, SMTP_LINE_MAX);
	memset(big, 'x', sizeof(big));
	assert_int_equal(smtp_line_reader_next(&r, big, sizeof(big), &line, &line_len, &used),
			 SMTP_LINE_TOO_LONG);
	assert_int_equal(used, sizeof(big));
	/* Still skipping: this would be eaten... */
	smtp_line_reader_reset(&r);
	/* ...but after a reset (STARTTLS) the next line is read normally. */
	assert_int_equal(smtp_line_reader_next(&r, S("EHLO x\r\n"), &line, &line_len, &used),
			 SMTP_LINE_OK);
	assert_int_equal(line_len, 6);

	/* Less input than the last call (a caller that dropped its buffer without a
	 * reset) is rescanned rather than trusted. */
	assert_int_equal(smtp_line_reader_next(&r, S("NOOP NOOP"), &line, &line_len, &used),
			 SMTP_LINE_NEED_MORE);
	assert_int_equal(smtp_line_reader_next(&r, S("Q\r\n"), &line, &line_len, &used),
			 SMTP_LINE_OK);
	assert_int_equal(used, 3);
}

/* ---- commands ---- */

static void cmd_ok(const char *line, const char *verb, const char *arg)
{
	char v[16];
	const char *a;
	size_t alen;

	if (smtp_parse_command(line, strlen(line), v, &a, &alen) != 0)
		fail_msg("\"%s\" refused", line);
	assert_string_equal(v, verb);
	assert_int_equal(alen, strlen(arg));
	assert_memory_equal(a, arg, alen);
}

static void cmd_bad(const char *line, size_t len)
{
	char v[16];
	const char *a;
	size_t alen;

	if (smtp_parse_command(line, len, v, &a, &alen) != -1)
		fail_msg("\"%s\" accepted", line);
}

static void test_command(void **state)
{
	cmd_ok("EHLO client.example", "EHLO", "client.example");
	cmd_ok("ehlo client.example", "EHLO", "client.example");
	cmd_ok("MAIL FROM:<a@b> SIZE=10", "MAIL", "FROM:<a@b> SIZE=10");
	cmd_ok("rcpt TO:<a@b>", "RCPT", "TO:<a@b>");
	cmd_ok("QUIT", "QUIT", "");
	cmd_ok("QUIT ", "QUIT", "");
	cmd_ok("NOOP    x y   ", "NOOP", "x y");
	cmd_ok("HELO a\tb\t", "HELO", "a\tb");
	cmd_ok("RCPT TO:<\xc3\xbc@x>", "RCPT", "TO:<\xc3\xbc@x>");
	cmd_ok("ABCDEFGHIJKLMNO x", "ABCDEFGHIJKLMNO", "x");
	cmd_ok("Ab cD", "AB", "cD"); /* the argument keeps its case */

	cmd_bad("", 0);
	cmd_bad(" EHLO x", 7);
	cmd_bad("ABCDEFGHIJKLMNOP", 16);
	cmd_bad("EHLO\tx", 6);
	cmd_bad("X-FOO", 5);
	cmd_bad("E1LO", 4);
	cmd_bad("MAIL:FROM", 9);
	cmd_bad("NO\rOP", 5);
	cmd_bad("NOOP x\ry", 8);
	cmd_bad("NOOP\0", 5);
	cmd_bad("NOOP x\0", 7);
	cmd_bad("NOOP \x7f", 6);
	cmd_bad("NOOP \x1b[0m", 9);
	cmd_bad("\xc3\xbc", 2);
}

/* ---- MAIL ---- */

static enum smtp_param_error mail(const char *arg, struct mail_addr *a, struct smtp_mail_params *p,
				  const char **err)
{
	enum smtp_param_error e = smtp_parse_mail(arg, strlen(arg), a, p, err);

	assert_non_null(*err);
	if (e != SMTP_PARAM_OK)
		assert_int_equal((*err)[0], '5');
	return e;
}

static void mail_is(const char *arg, enum smtp_param_error expect)
{
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err;
	enum smtp_param_error e = mail(arg, &a, &p, &err);

	if (e != expect)
		fail_msg("MAIL \"%s\": got %d (%s), expected %d", arg, e, err, expect);
}

static void test_mail_basic(void **state)
{
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err;

	assert_int_equal(mail("FROM:<Alice@Example.org>", &a, &p, &err), SMTP_PARAM_OK);
	assert_string_equal(a.local, "Alice");
	assert_string_equal(a.domain, "example.org");
	assert_int_equal(p.size, -1);
	assert_int_equal(p.body, SMTP_BODY_NONE);
	assert_int_equal(p.ret, SMTP_RET_NONE);
	assert_false(p.smtputf8);
	assert_string_equal(p.envid, "");
	assert_string_equal(p.auth, "");

	assert_int_equal(mail("from:<>", &a, &p, &err), SMTP_PARAM_OK);
	assert_true(a.is_null);
	assert_int_equal(mail("From: <a@b>", &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(mail("FROM:<a@b>   SIZE=1   ", &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(p.size, 1);

	mail_is("FROM:  <a@b>", SMTP_PARAM_SYNTAX);
	mail_is("FROM <a@b>", SMTP_PARAM_SYNTAX);
	mail_is("FROM:a@b", SMTP_PARAM_SYNTAX);
	mail_is("FROM:", SMTP_PARAM_SYNTAX);
	mail_is("", SMTP_PARAM_SYNTAX);
	mail_is("TO:<a@b>", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b>SIZE=1", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b>\tSIZE=1", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a b@c>", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<postmaster>", SMTP_PARAM_SYNTAX);

	assert_int_equal(mail("FROM:<a b@c>", &a, &p, &err), SMTP_PARAM_SYNTAX);
	assert_string_equal(err, "5.1.7 Bad sender address syntax");
	assert_int_equal(mail("FROM", &a, &p, &err), SMTP_PARAM_SYNTAX);
	assert_string_equal(err, "5.5.4 Syntax: MAIL FROM:<address>");

	char long_arg[400] = "FROM:<";
	memset(long_arg + 6, 'a', 70);
	strcpy(long_arg + 76, "@b>");
	assert_int_equal(mail(long_arg, &a, &p, &err), SMTP_PARAM_SYNTAX);
	assert_string_equal(err, "5.1.7 Sender path too long");
}

static void test_mail_all_params(void **state)
{
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err;

	assert_int_equal(mail("FROM:<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS "
			      "ENVID=QQ+2B1+3Dx AUTH=<>",
			      &a, &p, &err),
			 SMTP_PARAM_OK);
	assert_int_equal(p.size, 12345);
	assert_int_equal(p.body, SMTP_BODY_8BITMIME);
	assert_true(p.smtputf8);
	assert_int_equal(p.ret, SMTP_RET_HDRS);
	assert_string_equal(p.envid, "QQ+1=x");
	assert_string_equal(p.auth, "<>");

	assert_int_equal(mail("FROM:<a@b> size=0 body=7bit ret=full auth=joe+40example.com", &a, &p,
			      &err),
			 SMTP_PARAM_OK);
	assert_int_equal(p.size, 0);
	assert_int_equal(p.body, SMTP_BODY_7BIT);
	assert_int_equal(p.ret, SMTP_RET_FULL);
	assert_string_equal(p.auth, "joe@example.com");
	assert_false(p.smtputf8);
}

static void test_mail_size(void **state)
{
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err;

	assert_int_equal(mail("FROM:<a@b> SIZE=00000000000000000042", &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(p.size, 42);
	assert_int_equal(mail("FROM:<a@b> SIZE=9223372036854775807", &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(p.size, LLONG_MAX);
	/* 20 digits past LLONG_MAX: saturates (the size limit refuses it). */
	assert_int_equal(mail("FROM:<a@b> SIZE=99999999999999999999", &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(p.size, LLONG_MAX);
	assert_int_equal(mail("FROM:<a@b> SIZE=9223372036854775808", &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(p.size, LLONG_MAX);

	assert_int_equal(mail("FROM:<a@b> SIZE=123456789012345678901", &a, &p, &err),
			 SMTP_PARAM_BAD_VALUE);
	assert_string_equal(err, "5.5.4 Invalid SIZE value");
	mail_is("FROM:<a@b> SIZE", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> SIZE=abc", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> SIZE=-1", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> SIZE=+1", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> SIZE=1k", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> SIZE=", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> SIZE==1", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> SIZE=1=2", SMTP_PARAM_SYNTAX);
}

static void test_mail_param_errors(void **state)
{
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err;

	mail_is("FROM:<a@b> BODY=BINARYMIME", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> BODY=8BIT", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> BODY", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> SMTPUTF8=yes", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> RET=BOTH", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> RET", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> ENVID", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> ENVID=a+2", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> ENVID=a+2b", SMTP_PARAM_BAD_VALUE);  /* hex must be upper case */
	mail_is("FROM:<a@b> ENVID=a+00", SMTP_PARAM_BAD_VALUE);  /* NUL */
	mail_is("FROM:<a@b> ENVID=a+0D", SMTP_PARAM_BAD_VALUE);  /* CR */
	mail_is("FROM:<a@b> ENVID=a+C3+BC", SMTP_PARAM_BAD_VALUE); /* not ASCII */
	mail_is("FROM:<a@b> ENVID=\xc3\xbc", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> AUTH", SMTP_PARAM_BAD_VALUE);
	mail_is("FROM:<a@b> AUTH=+zz", SMTP_PARAM_BAD_VALUE);

	/* Duplicates, whatever the case. */
	assert_int_equal(mail("FROM:<a@b> SIZE=1 size=1", &a, &p, &err), SMTP_PARAM_SYNTAX);
	assert_string_equal(err, "5.5.4 Duplicate MAIL parameter");
	mail_is("FROM:<a@b> BODY=7BIT BODY=7BIT", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> SMTPUTF8 SMTPUTF8", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> RET=FULL RET=HDRS", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> ENVID=x ENVID=x", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> AUTH=<> AUTH=<>", SMTP_PARAM_SYNTAX);

	/* Unknown keywords: 555. */
	assert_int_equal(mail("FROM:<a@b> FOO=bar", &a, &p, &err), SMTP_PARAM_UNKNOWN);
	assert_string_equal(err, "5.5.4 Unrecognized MAIL parameter");
	mail_is("FROM:<a@b> NOTIFY=NEVER", SMTP_PARAM_UNKNOWN);
	mail_is("FROM:<a@b> X-Y", SMTP_PARAM_UNKNOWN);
	mail_is("FROM:<a@b> BODY=7BIT XFOO", SMTP_PARAM_UNKNOWN);
	mail_is("FROM:<a@b> FOO=\xc3\xbc", SMTP_PARAM_UNKNOWN);

	/* Not keywords at all: 501. */
	mail_is("FROM:<a@b> -X=1", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> =1", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> SI_ZE=1", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> SIZE=1\t", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<a@b> ENVID=a\x7f", SMTP_PARAM_SYNTAX);
}

static void test_mail_envid_auth_length(void **state)
{
	char arg[1200];
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err;

	/* ENVID: 100 decoded characters (RFC 3461 4.4). */
	strcpy(arg, "FROM:<a@b> ENVID=");
	memset(arg + 17, 'e', 100);
	arg[117] = '\0';
	assert_int_equal(mail(arg, &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(strlen(p.envid), 100);
	strcpy(arg + 117, "e");
	mail_is(arg, SMTP_PARAM_BAD_VALUE);
	/* Encoded is longer than decoded: 100 x "+20" is fine. */
	for (int i = 0; i < 100; i++)
		memcpy(arg + 17 + 3 * i, "+20", 3);
	arg[317] = '\0';
	assert_int_equal(mail(arg, &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(strlen(p.envid), 100);

	/* AUTH: 512. */
	strcpy(arg, "FROM:<a@b> AUTH=");
	memset(arg + 16, 'u', 512);
	arg[528] = '\0';
	assert_int_equal(mail(arg, &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(strlen(p.auth), 512);
	strcpy(arg + 528, "u");
	mail_is(arg, SMTP_PARAM_BAD_VALUE);
}

static void test_mail_utf8(void **state)
{
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err;

	/* RFC 6531 3.4: a non-ASCII address needs SMTPUTF8, wherever it is given. */
	assert_int_equal(mail("FROM:<j\xc3\xb6rg@example.de>", &a, &p, &err), SMTP_PARAM_UTF8_ADDR);
	assert_string_equal(err, "5.6.7 Non-ASCII sender address requires SMTPUTF8");
	assert_int_equal(mail("FROM:<j\xc3\xb6rg@example.de> SMTPUTF8", &a, &p, &err),
			 SMTP_PARAM_OK);
	assert_true(a.utf8);
	assert_string_equal(a.local, "j\xc3\xb6rg");
	assert_int_equal(mail("FROM:<u@b\xc3\xbc.de> BODY=8BITMIME SMTPUTF8", &a, &p, &err),
			 SMTP_PARAM_OK);
	/* Malformed UTF-8 is a syntax error either way. */
	mail_is("FROM:<\xc0\xaf@x> SMTPUTF8", SMTP_PARAM_SYNTAX);
	mail_is("FROM:<\xed\xa0\x80@x>", SMTP_PARAM_SYNTAX);
	/* ASCII with SMTPUTF8 is fine. */
	mail_is("FROM:<a@b> SMTPUTF8", SMTP_PARAM_OK);
}

/* ---- RCPT ---- */

static enum smtp_param_error rcpt(const char *arg, unsigned flags, struct mail_addr *a,
				  struct smtp_rcpt_params *p, const char **err)
{
	enum smtp_param_error e = smtp_parse_rcpt(arg, strlen(arg), flags, a, p, err);

	assert_non_null(*err);
	if (e != SMTP_PARAM_OK)
		assert_int_equal((*err)[0], '5');
	return e;
}

static void rcpt_is(const char *arg, unsigned flags, enum smtp_param_error expect)
{
	struct mail_addr a;
	struct smtp_rcpt_params p;
	const char *err;
	enum smtp_param_error e = rcpt(arg, flags, &a, &p, &err);

	if (e != expect)
		fail_msg("RCPT \"%s\": got %d (%s), expected %d", arg, e, err, expect);
}

static void test_rcpt_basic(void **state)
{
	struct mail_addr a;
	struct smtp_rcpt_params p;
	const char *err;

	assert_int_equal(rcpt("TO:<Bob@Example.net>", 0, &a, &p, &err), SMTP_PARAM_OK);
	assert_string_equal(a.local, "Bob");
	assert_string_equal(a.domain, "example.net");
	assert_int_equal(p.notify, 0);
	assert_string_equal(p.orcpt, "");
	assert_int_equal(rcpt("to: <postmaster>", 0, &a, &p, &err), SMTP_PARAM_OK);
	assert_string_equal(a.local, "postmaster");
	assert_string_equal(a.domain, "");
	assert_int_equal(rcpt("TO:<@relay.example:u@d>", 0, &a, &p, &err), SMTP_PARAM_OK);
	assert_true(a.had_route);

	assert_int_equal(rcpt("TO:<>", ADDR_ALLOW_NULL, &a, &p, &err), SMTP_PARAM_SYNTAX);
	assert_string_equal(err, "5.1.3 Null recipient address not allowed");
	assert_int_equal(rcpt("TO:<a@b.>", 0, &a, &p, &err), SMTP_PARAM_SYNTAX);
	assert_string_equal(err, "5.1.3 Bad recipient address syntax");
	assert_int_equal(rcpt("FROM:<a@b>", 0, &a, &p, &err), SMTP_PARAM_SYNTAX);
	assert_string_equal(err, "5.5.4 Syntax: RCPT TO:<address>");
	rcpt_is("TO:a@b", 0, SMTP_PARAM_SYNTAX);
	rcpt_is("TO:  <a@b>", 0, SMTP_PARAM_SYNTAX);
	rcpt_is("TO:<a@b>x", 0, SMTP_PARAM_SYNTAX);
	rcpt_is("TO:<a@b", 0, SMTP_PARAM_SYNTAX);

	/* UTF-8 only when the transaction has SMTPUTF8. */
	assert_int_equal(rcpt("TO:<\xc3\xbc@d>", 0, &a, &p, &err), SMTP_PARAM_UTF8_ADDR);
	assert_string_equal(err, "5.6.7 Non-ASCII recipient address requires SMTPUTF8");
	assert_int_equal(rcpt("TO:<\xc3\xbc@d>", ADDR_ALLOW_UTF8, &a, &p, &err), SMTP_PARAM_OK);
	assert_true(a.utf8);
}

static void test_rcpt_notify(void **state)
{
	struct mail_addr a;
	struct smtp_rcpt_params p;
	const char *err;

	assert_int_equal(rcpt("TO:<a@b> NOTIFY=SUCCESS,FAILURE", 0, &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(p.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE);
	assert_int_equal(rcpt("TO:<a@b> notify=delay,success,failure", 0, &a, &p, &err),
			 SMTP_PARAM_OK);
	assert_int_equal(p.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
	assert_int_equal(rcpt("TO:<a@b> NOTIFY=never", 0, &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(p.notify, SMTP_NOTIFY_NEVER);

	assert_int_equal(rcpt("TO:<a@b> NOTIFY=NEVER,SUCCESS", 0, &a, &p, &err),
			 SMTP_PARAM_BAD_VALUE);
	assert_string_equal(err, "5.5.4 Invalid NOTIFY value");
	rcpt_is("TO:<a@b> NOTIFY=FAILURE,NEVER", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> NOTIFY=DELAY,DELAY", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> NOTIFY=SUCCESS,", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> NOTIFY=,SUCCESS", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> NOTIFY=SUCCESS,,DELAY", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> NOTIFY=ALWAYS", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> NOTIFY", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> NOTIFY=", 0, SMTP_PARAM_SYNTAX);
	rcpt_is("TO:<a@b> NOTIFY=SUCCESS NOTIFY=FAILURE", 0, SMTP_PARAM_SYNTAX);
}

static void test_rcpt_orcpt(void **state)
{
	struct mail_addr a;
	struct smtp_rcpt_params p;
	const char *err;
	char arg[2000];

	assert_int_equal(rcpt("TO:<a@b> ORCPT=rfc822;Bob+40Example.net NOTIFY=DELAY", 0, &a, &p,
			      &err),
			 SMTP_PARAM_OK);
	assert_string_equal(p.orcpt, "rfc822;Bob@Example.net");
	assert_int_equal(p.notify, SMTP_NOTIFY_DELAY);
	assert_int_equal(rcpt("TO:<a@b> orcpt=RFC822;x+2By", 0, &a, &p, &err), SMTP_PARAM_OK);
	assert_string_equal(p.orcpt, "rfc822;x+y");

	assert_int_equal(rcpt("TO:<a@b> ORCPT=utf-8;x", 0, &a, &p, &err), SMTP_PARAM_BAD_VALUE);
	assert_string_equal(err, "5.5.4 Invalid ORCPT value");
	rcpt_is("TO:<a@b> ORCPT=rfc822;", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> ORCPT=rfc822", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> ORCPT=x@y", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> ORCPT", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> ORCPT=rfc822;a+4", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> ORCPT=rfc822;a+0A", 0, SMTP_PARAM_BAD_VALUE);
	rcpt_is("TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;b", 0, SMTP_PARAM_SYNTAX);

	/* 500 decoded octets (RFC 3461 4.2); 501 is refused. */
	strcpy(arg, "TO:<a@b> ORCPT=rfc822;");
	size_t off = strlen(arg);
	memset(arg + off, 'o', 500);
	arg[off + 500] = '\0';
	assert_int_equal(rcpt(arg, 0, &a, &p, &err), SMTP_PARAM_OK);
	assert_int_equal(strlen(p.orcpt), 507);
	strcpy(arg + off + 500, "o");
	rcpt_is(arg, 0, SMTP_PARAM_BAD_VALUE);

	/* MAIL's parameters are unknown here. */
	assert_int_equal(rcpt("TO:<a@b> SIZE=1", 0, &a, &p, &err), SMTP_PARAM_UNKNOWN);
	assert_string_equal(err, "5.5.4 Unrecognized RCPT parameter");
	rcpt_is("TO:<a@b> RET=FULL", 0, SMTP_PARAM_UNKNOWN);
}

/* ---- xtext ---- */

static void test_xtext(void **state)
{
	char out[64];
	size_t n;

	assert_int_equal(smtp_xtext_decode(S("abc+2B+3D~!"), out, sizeof(out), &n), 0);
	assert_int_equal(n, 7);
	assert_string_equal(out, "abc+=~!");
	assert_int_equal(smtp_xtext_decode(S("+00"), out, sizeof(out), &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], '\0');
	assert_int_equal(smtp_xtext_decode("", 0, out, 1, &n), 0);
	assert_int_equal(n, 0);

	static const char *bad[] = {
		"+", "+2", "a+2", "+2g", "+2b", "+g2", "a=b", "a b", "\x80", "\t", "+ 20",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = 9;
		assert_int_equal(smtp_xtext_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n),
				 -1);
		assert_int_equal(n, 0);
	}
	/* The NUL needs room. */
	assert_int_equal(smtp_xtext_decode(S("abc"), out, 3, &n), -1);
	assert_int_equal(smtp_xtext_decode(S("abc"), out, 4, &n), 0);
	assert_int_equal(smtp_xtext_decode(S("abc"), out, 0, &n), -1);

	assert_int_equal(smtp_xtext_encode(S("a+b=c d\x01\xff"), out, sizeof(out)), 19);
	assert_string_equal(out, "a+2Bb+3Dc+20d+01+FF");
	assert_int_equal(smtp_xtext_encode(S("ab"), out, 2), -1);
	assert_int_equal(smtp_xtext_encode(S("ab"), out, 3), 2);
	assert_int_equal(smtp_xtext_encode(S("a+"), out, 4), -1);
	assert_int_equal(smtp_xtext_encode(S("a+"), out, 5), 4);
	assert_int_equal(smtp_xtext_encode("", 0, out, 1), 0);
	assert_string_equal(out, "");

	/* Every byte survives the round trip. */
	char raw[256], enc[3 * 256 + 1], dec[257];
	for (int i = 0; i < 256; i++)
		raw[i] = (char)i;
	int e = smtp_xtext_encode(raw, 256, enc, sizeof(enc));
	assert_true(e > 0);
	assert_int_equal(smtp_xtext_decode(enc, (size_t)e, dec, sizeof(dec), &n), 0);
	assert_int_equal(n, 256);
	assert_memory_equal(dec, raw, 256);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines_simple),
		cmocka_unit_test(test_lines_bare_lf_and_cr),
		cmocka_unit_test(test_lines_limit),
		cmocka_unit_test(test_lines_auth_limit),
		cmocka_unit_test(test_lines_huge),
		cmocka_unit_test(test_lines_reset),
		cmocka_unit_test(test_command),
		cmocka_unit_test(test_mail_basic),
		cmocka_unit_test(test_mail_all_params),
		cmocka_unit_test(test_mail_size),
		cmocka_unit_test(test_mail_param_errors),
		cmocka_unit_test(test_mail_envid_auth_length),
		cmocka_unit_test(test_mail_utf8),
		cmocka_unit_test(test_rcpt_basic),
		cmocka_unit_test(test_rcpt_notify),
		cmocka_unit_test(test_rcpt_orcpt),
		cmocka_unit_test(test_xtext),
	};
	return cmocka_run_group_tests_name("smtp/smtp_parse", tests, NULL, NULL);
}
