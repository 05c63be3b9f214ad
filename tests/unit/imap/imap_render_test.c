/* ENVELOPE, BODYSTRUCTURE and sections of sample messages (src/imap/imap_render.c).
 * Expected strings follow RFC 9051 7.5.2 and what Dovecot sends for the same
 * messages (lower-case types as the MIME parser normalises them, "7bit" default,
 * ("charset" "us-ascii") for a text part without parameters). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/imap_render.h"

static const char plain_msg[] = "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
                                "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
                                "Subject: afternoon meeting\r\n"
                                "To: mooch@owatagu.siam.edu.example\r\n"
                                "Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
                                "MIME-Version: 1.0\r\n"
                                "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
                                "\r\n"
                                "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

static const char mixed_msg[] = "From: Alice <alice@example.com>\r\n"
                                "To: bob@example.com\r\n"
                                "Subject: multi\r\n"
                                "MIME-Version: 1.0\r\n"
                                "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
                                "\r\n"
                                "preamble\r\n"
                                "--outer\r\n"
                                "Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
                                "\r\n"
                                "--inner\r\n"
                                "Content-Type: text/plain; charset=utf-8\r\n"
                                "\r\n"
                                "plain body\r\n"
                                "--inner\r\n"
                                "Content-Type: text/html; charset=utf-8\r\n"
                                "Content-Transfer-Encoding: quoted-printable\r\n"
                                "\r\n"
                                "<p>html body</p>\r\n"
                                "--inner--\r\n"
                                "--outer\r\n"
                                "Content-Type: application/pdf; name=\"doc.pdf\"\r\n"
                                "Content-Disposition: attachment; filename=\"doc.pdf\"\r\n"
                                "Content-Transfer-Encoding: base64\r\n"
                                "Content-Language: en, de\r\n"
                                "\r\n"
                                "SGVsbG8gUERG\r\n"
                                "--outer--\r\n"
                                "epilogue\r\n";

static const char rfc822_msg[] = "From: x@example.com\r\n"
                                 "Subject: fwd\r\n"
                                 "Content-Type: multipart/mixed; boundary=b\r\n"
                                 "\r\n"
                                 "--b\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "\r\n"
                                 "see attached\r\n"
                                 "--b\r\n"
                                 "Content-Type: message/rfc822\r\n"
                                 "\r\n"
                                 "From: inner@example.com\r\n"
                                 "Subject: inner subject\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "\r\n"
                                 "inner body\r\n"
                                 "--b--\r\n";

static const char groups_msg[] = "To: undisclosed-recipients:;\r\n"
                                 "Cc: friends: a@x.example, \"B\" <b@y.example>;, c@z.example\r\n"
                                 "Subject: groups\r\n"
                                 "\r\n"
                                 "body\r\n";

struct sample {
	const char *msg;
	size_t len;
	struct mime_part *root;
};

static struct sample sample_new(const char *msg)
{
	struct sample s = {msg, strlen(msg), NULL};
	s.root = mime_parse(msg, s.len, NULL);
	assert_non_null(s.root);
	return s;
}

static void envelope_is(const char *msg, size_t start, size_t end, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(imap_render_envelope(&b, msg, start, end, 0), 0);
	assert_string_equal(b.data, want);
	buf_deinit(&b);
}

static void body_is(const struct sample *s, int extended, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(imap_render_body(&b, s->msg, s->root, extended, 0), 0);
	assert_string_equal(b.data, want);
	buf_deinit(&b);
}

/* The bytes of BODY[spec]<partial> (partial may be NULL), NUL-terminated, or "(nil)". */
static char *section(const struct sample *s, const char *spec, const char *partial, int binary)
{
	struct imap_section sec;
	struct imap_section_data d;

	assert_int_equal(imap_section_parse(spec, strlen(spec), binary, &sec), 0);
	if (partial != NULL)
		assert_int_equal(imap_partial_parse(partial, strlen(partial), &sec), 0);
	assert_int_equal(imap_section_get(s->msg, s->len, s->root, &sec, &d), 0);
	imap_section_apply_partial(&sec, &d);
	char *r = d.nil ? strdup("(nil)") : strndup(d.p, d.len);
	free(d.owned);
	return r;
}

static void section_is(const struct sample *s, const char *spec, const char *partial,
                       const char *want)
{
	char *got = section(s, spec, partial, 0);
	assert_string_equal(got, want);
	free(got);
}

static void test_plain(void **state)
{
	struct sample s = sample_new(plain_msg);
	int complete;
	size_t hend = imap_header_end(s.msg, s.len, &complete);

	assert_true(complete);
	assert_int_equal(hend, s.root->header_end);
	envelope_is(s.msg, 0, hend,
	            "(\"Mon, 7 Feb 1994 21:52:25 -0800 (PST)\" \"afternoon meeting\" "
	            "((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) "
	            "((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) "
	            "((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) "
	            "((NIL NIL \"mooch\" \"owatagu.siam.edu.example\")) NIL NIL NIL "
	            "\"<B27397-0100000@Blurdybloop.example>\")");
	/* RFC 9051 7.5.2's example, in Dovecot's spelling. */
	body_is(&s, 1,
	        "(\"text\" \"plain\" (\"charset\" \"US-ASCII\") NIL NIL \"7bit\" 55 1 NIL NIL NIL "
	        "NIL)");
	body_is(&s, 0, "(\"text\" \"plain\" (\"charset\" \"US-ASCII\") NIL NIL \"7bit\" 55 1)");

	section_is(&s, "", NULL, plain_msg);
	section_is(&s, "TEXT", NULL, "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n");
	section_is(&s, "1", NULL, "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n");
	section_is(&s, "TEXT", "<6.3>", "Joe");
	section_is(&s, "TEXT", "<50.100>", "ow?\r\n");
	section_is(&s, "TEXT", "<500.10>", "");
	section_is(&s, "", "<0.4>", "Date");
	section_is(&s, "HEADER.FIELDS (Subject TO)", NULL,
	           "Subject: afternoon meeting\r\nTo: mooch@owatagu.siam.edu.example\r\n\r\n");
	section_is(&s, "HEADER.FIELDS (\"x-none\")", NULL, "\r\n");
	section_is(&s, "HEADER.FIELDS.NOT (Date From Message-ID MIME-Version Content-Type)", NULL,
	           "Subject: afternoon meeting\r\nTo: mooch@owatagu.siam.edu.example\r\n\r\n");
	section_is(&s, "2", NULL, "(nil)");
	char *h = section(&s, "HEADER", NULL, 0);
	assert_int_equal(strlen(h), hend);
	assert_memory_equal(h, plain_msg, hend);
	free(h);
	mime_free(&s.root);
}

static void test_mixed(void **state)
{
	struct sample s = sample_new(mixed_msg);

	envelope_is(s.msg, s.root->header_start, s.root->header_end,
	            "(NIL \"multi\" ((\"Alice\" NIL \"alice\" \"example.com\")) "
	            "((\"Alice\" NIL \"alice\" \"example.com\")) "
	            "((\"Alice\" NIL \"alice\" \"example.com\")) "
	            "((NIL NIL \"bob\" \"example.com\")) NIL NIL NIL NIL)");
	body_is(
	    &s, 1,
	    "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL)"
	    "(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 16 1 NIL NIL "
	    "NIL NIL) \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)"
	    "(\"application\" \"pdf\" (\"name\" \"doc.pdf\") NIL NIL \"base64\" 12 NIL "
	    "(\"attachment\" (\"filename\" \"doc.pdf\")) (\"en\" \"de\") NIL) \"mixed\" "
	    "(\"boundary\" \"outer\") NIL NIL NIL)");
	body_is(
	    &s, 0,
	    "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 10 1)"
	    "(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 16 1) "
	    "\"alternative\")"
	    "(\"application\" \"pdf\" (\"name\" \"doc.pdf\") NIL NIL \"base64\" 12) \"mixed\")");

	section_is(&s, "1.1", NULL, "plain body");
	section_is(&s, "1.2", NULL, "<p>html body</p>");
	section_is(&s, "1.2", "<3.4>", "html");
	section_is(&s, "1.2.MIME", NULL,
	           "Content-Type: text/html; charset=utf-8\r\n"
	           "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	section_is(&s, "1.MIME", NULL,
	           "Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n");
	section_is(&s, "2", NULL, "SGVsbG8gUERG");
	section_is(&s, "3", NULL, "(nil)");
	section_is(&s, "1.3", NULL, "(nil)");
	/* HEADER of a part that is not a message is empty. */
	section_is(&s, "2.HEADER", NULL, "");

	char *bin = section(&s, "2", NULL, 1);
	assert_string_equal(bin, "Hello PDF");
	free(bin);
	bin = section(&s, "1.1", NULL, 1);
	assert_string_equal(bin, "plain body");
	free(bin);
	mime_free(&s.root);
}

static void test_rfc822(void **state)
{
	struct sample s = sample_new(rfc822_msg);
	const char *inner = strstr(rfc822_msg, "From: inner");
	size_t inner_len = strlen(inner) - strlen("\r\n--b--\r\n");
	char want[2048];

	snprintf(
	    want, sizeof(want),
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 1 NIL NIL NIL "
	    "NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" %zu "
	    "(NIL \"inner subject\" ((NIL NIL \"inner\" \"example.com\")) "
	    "((NIL NIL \"inner\" \"example.com\")) ((NIL NIL \"inner\" \"example.com\")) "
	    "NIL NIL NIL NIL NIL) "
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1 NIL NIL NIL "
	    "NIL) 5 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)",
	    inner_len);
	body_is(&s, 1, want);

	char *whole = strndup(inner, inner_len);
	section_is(&s, "2", NULL, whole);
	free(whole);
	section_is(&s, "2.HEADER", NULL,
	           "From: inner@example.com\r\nSubject: inner subject\r\n"
	           "Content-Type: text/plain\r\n\r\n");
	section_is(&s, "2.HEADER.FIELDS (SUBJECT)", NULL, "Subject: inner subject\r\n\r\n");
	section_is(&s, "2.TEXT", NULL, "inner body");
	section_is(&s, "2.1", NULL, "inner body");
	section_is(&s, "2.MIME", NULL, "Content-Type: message/rfc822\r\n\r\n");
	section_is(&s, "1", NULL, "see attached");
	section_is(&s, "HEADER.FIELDS (subject)", NULL, "Subject: fwd\r\n\r\n");
	mime_free(&s.root);
}

static void test_groups(void **state)
{
	struct sample s = sample_new(groups_msg);

	envelope_is(
	    s.msg, s.root->header_start, s.root->header_end,
	    "(NIL \"groups\" NIL NIL NIL "
	    "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
	    "((NIL NIL \"friends\" NIL)(NIL NIL \"a\" \"x.example\")"
	    "(\"B\" NIL \"b\" \"y.example\")(NIL NIL NIL NIL)(NIL NIL \"c\" \"z.example\")) "
	    "NIL NIL NIL)");
	body_is(
	    &s, 1,
	    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1 NIL NIL NIL NIL)");
	mime_free(&s.root);
}

/* 8-bit header text: a literal for IMAP4rev1 clients, a quoted string under UTF8=ACCEPT. */
static void test_8bit_envelope(void **state)
{
	static const char msg[] = "Subject: Gr\xc3\xbc\xc3\x9f\x65\r\n\r\nx\r\n";
	struct buf b;

	buf_init(&b, 0);
	assert_int_equal(imap_render_envelope(&b, msg, 0, sizeof(msg) - 4, 0), 0);
	assert_string_equal(b.data, "(NIL {7}\r\nGr\xc3\xbc\xc3\x9f"
	                            "e NIL NIL NIL NIL NIL NIL NIL NIL)");
	buf_reset(&b);
	assert_int_equal(imap_render_envelope(&b, msg, 0, sizeof(msg) - 4, 1), 0);
	assert_string_equal(b.data, "(NIL \"Gr\xc3\xbc\xc3\x9f"
	                            "e\" NIL NIL NIL NIL NIL NIL NIL NIL)");
	buf_deinit(&b);
}

static void test_empty_multipart(void **state)
{
	static const char msg[] = "Content-Type: multipart/mixed; boundary=x\r\n\r\n"
	                          "no parts here\r\n";
	struct sample s = sample_new(msg);

	body_is(
	    &s, 1,
	    "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) "
	    "\"mixed\" (\"boundary\" \"x\") NIL NIL NIL)");
	mime_free(&s.root);
}

static void test_section_parse(void **state)
{
	struct imap_section sec;
	static const char *const bad[] = {"0",
	                                  "1.",
	                                  ".1",
	                                  "MIME",
	                                  "1.FOO",
	                                  "HEADER.FIELDS",
	                                  "HEADER.FIELDS ()",
	                                  "TEXT.1",
	                                  "1..2",
	                                  "HEADER.FIELDS (A"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(imap_section_parse(bad[i], strlen(bad[i]), 0, &sec), -1);
	assert_int_equal(imap_section_parse("1.TEXT", 6, 1, &sec), -1);

	assert_int_equal(imap_section_parse("4.2.1.MIME", 10, 0, &sec), 0);
	assert_int_equal(sec.n_nums, 3);
	assert_int_equal(sec.nums[2], 1);
	assert_int_equal(sec.text, IMAP_SECTION_MIME);
	const char *f = "header.fields.not (From \"X-A\")";
	assert_int_equal(imap_section_parse(f, strlen(f), 0, &sec), 0);
	assert_int_equal(sec.text, IMAP_SECTION_FIELDS_NOT);
	assert_int_equal(sec.n_fields, 2);
	assert_int_equal(sec.fields[1].len, 3);
	assert_memory_equal(sec.fields[1].p, "X-A", 3);

	assert_int_equal(imap_partial_parse("<0.0>", 5, &sec), -1);
	assert_int_equal(imap_partial_parse("<1.>", 4, &sec), -1);
	assert_int_equal(imap_partial_parse("<12.345>", 8, &sec), 0);
	assert_int_equal(sec.origin, 12);
	assert_int_equal(sec.count, 345);
}

static void test_fold(void **state)
{
	char out[64];
	const char *in = "\xc3\x84PFEL \xd0\x9f\xd1\x80\xd0\xb8 \xce\xa3 \xc5\x81\xc3\x93"
	                 "D\xc5\xb9";
	imap_fold(out, in, strlen(in));
	out[strlen(in)] = '\0';
	assert_string_equal(out, "\xc3\xa4pfel \xd0\xbf\xd1\x80\xd0\xb8 \xcf\x83 \xc5\x82\xc3\xb3"
	                         "d\xc5\xba");

	struct buf scratch;
	buf_init(&scratch, 0);
	assert_true(imap_fold_contains(&scratch, "Hello WORLD", 11, "o wor", 5));
	assert_false(imap_fold_contains(&scratch, "Hello", 5, "hello!", 6));
	assert_true(imap_fold_contains(&scratch, "", 0, "", 0));
	buf_deinit(&scratch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain),         cmocka_unit_test(test_mixed),
	    cmocka_unit_test(test_rfc822),        cmocka_unit_test(test_groups),
	    cmocka_unit_test(test_8bit_envelope), cmocka_unit_test(test_empty_multipart),
	    cmocka_unit_test(test_section_parse), cmocka_unit_test(test_fold),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
