#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "msg/mime.h"

static struct mime_part *parse(const char *msg)
{
	struct mime_limits lim;
	mime_limits_default(&lim);
	struct mime_part *root = mime_parse(msg, strlen(msg), &lim);
	assert_non_null(root);
	return root;
}

/* "1.2.3" -> the part, NULL when absent; "" is the root. */
static const struct mime_part *sec(const struct mime_part *root, const char *spec)
{
	uint32_t nums[64];
	size_t n = 0;
	const char *s = spec;

	while (*s != '\0') {
		char *end;
		nums[n++] = (uint32_t)strtoul(s, &end, 10);
		s = *end == '.' ? end + 1 : end;
	}
	return mime_section(root, nums, n);
}

static void assert_range(const char *msg, size_t start, size_t end, const char *expect)
{
	assert_true(start <= end);
	if (end - start != strlen(expect) || memcmp(msg + start, expect, end - start) != 0)
		fail_msg("range [%zu, %zu) is \"%.*s\", expected \"%s\"", start, end,
			 (int)(end - start), msg + start, expect);
}

static void assert_body(const char *msg, const struct mime_part *p, const char *expect)
{
	assert_non_null(p);
	assert_range(msg, p->body_start, p->body_end, expect);
}

static void assert_header(const char *msg, const struct mime_part *p, const char *expect)
{
	assert_non_null(p);
	assert_range(msg, p->header_start, p->header_end, expect);
}

static void assert_type(const struct mime_part *p, const char *type, const char *subtype)
{
	assert_non_null(p);
	assert_string_equal(p->type, type);
	assert_string_equal(p->subtype, subtype);
}

static const char *param(const struct mime_param *params, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(params[i].name, name) == 0)
			return params[i].value;
	}
	return NULL;
}

/* Offsets inside the message and nested inside the parent; parent links right. */
static void check_tree(const struct mime_part *p, size_t len, int *count)
{
	(*count)++;
	assert_true(p->header_start <= p->header_end);
	assert_true(p->header_end <= p->body_start);
	assert_true(p->body_start <= p->body_end);
	assert_true(p->body_end <= len);
	for (size_t i = 0; i < p->n_children; i++) {
		const struct mime_part *c = p->children[i];
		assert_ptr_equal(c->parent, p);
		assert_true(c->header_start >= p->body_start);
		assert_true(c->body_end <= p->body_end);
		if (i > 0)
			assert_true(c->header_start >= p->children[i - 1]->body_end);
		check_tree(c, len, count);
	}
}

static void test_simple(void **state)
{
	const char *m = "From: a@b\r\nSubject: hi\r\n\r\nbody\r\nline2\r\n";
	struct mime_part *root = parse(m);

	assert_type(root, "text", "plain");
	assert_int_equal(root->n_params, 0);
	assert_null(root->encoding);
	assert_null(root->disposition);
	assert_header(m, root, "From: a@b\r\nSubject: hi\r\n\r\n");
	assert_body(m, root, "body\r\nline2\r\n");
	assert_int_equal(root->body_lines, 2);
	assert_int_equal(root->n_children, 0);
	assert_ptr_equal(sec(root, ""), root);
	/* RFC 9051 6.4.5: a non-multipart message has a part 1, itself. */
	assert_ptr_equal(sec(root, "1"), root);
	assert_null(sec(root, "2"));
	assert_null(sec(root, "0"));
	assert_null(sec(root, "1.1"));
	mime_free(&root);
	assert_null(root);
	mime_free(&root);
}

static void test_header_only_and_lines(void **state)
{
	const char *m = "From: a@b\r\nSubject: no body";
	struct mime_part *root = parse(m);
	assert_int_equal(root->header_end, strlen(m));
	assert_int_equal(root->body_start, strlen(m));
	assert_int_equal(root->body_lines, 0);
	mime_free(&root);

	/* A last line without a line end counts. */
	m = "A: b\n\nx\ny";
	root = parse(m);
	assert_body(m, root, "x\ny");
	assert_int_equal(root->body_lines, 2);
	mime_free(&root);

	m = "A: b\r\n\r\n";
	root = parse(m);
	assert_body(m, root, "");
	assert_int_equal(root->body_lines, 0);
	mime_free(&root);

	/* Empty message. */
	root = mime_parse("", 0, NULL);
	assert_non_null(root);
	assert_type(root, "text", "plain");
	assert_int_equal(root->body_end, 0);
	mime_free(&root);
}

static const char mixed[] =
	"From: a@example.com\r\n"
	"Content-Type: Multipart/Mixed;\r\n"
	"\tBoundary=\"=_b1\"\r\n"
	"\r\n"
	"preamble\r\n"
	"--=_b1\r\n"
	"Content-Type: text/plain; charset=UTF-8\r\n"
	"\r\n"
	"hello\r\n"
	"--=_b1 \t\r\n"
	"Content-Type: application/pdf; name=\"a b.pdf\"\r\n"
	"Content-Transfer-Encoding: BASE64\r\n"
	"Content-Disposition: attachment; filename=\"a \\\"b\\\".pdf\"; size=3\r\n"
	"Content-ID: <id1@x>\r\n"
	"Content-Description: a\r\n"
	" file\r\n"
	"Content-Language: en\r\n"
	"Content-Location: http://x/\r\n"
	"Content-MD5: abc\r\n"
	"\r\n"
	"YWJj\r\n"
	"--=_b1--\r\n"
	"epilogue\r\n";

static void test_multipart_mixed(void **state)
{
	const char *m = mixed;
	struct mime_part *root = parse(m);
	int count = 0;

	check_tree(root, strlen(m), &count);
	assert_int_equal(count, 3);
	assert_type(root, "multipart", "mixed");
	assert_string_equal(param(root->params, root->n_params, "boundary"), "=_b1");
	assert_int_equal(root->n_children, 2);

	const struct mime_part *p1 = sec(root, "1"), *p2 = sec(root, "2");
	assert_ptr_equal(p1, root->children[0]);
	assert_type(p1, "text", "plain");
	assert_string_equal(param(p1->params, p1->n_params, "charset"), "UTF-8");
	assert_header(m, p1, "Content-Type: text/plain; charset=UTF-8\r\n\r\n");
	/* The CRLF before a delimiter belongs to the delimiter. */
	assert_body(m, p1, "hello");
	assert_int_equal(p1->body_lines, 1);

	assert_type(p2, "application", "pdf");
	assert_string_equal(param(p2->params, p2->n_params, "name"), "a b.pdf");
	assert_string_equal(p2->encoding, "base64");
	assert_string_equal(p2->disposition, "attachment");
	assert_string_equal(param(p2->disp_params, p2->n_disp_params, "filename"), "a \"b\".pdf");
	assert_string_equal(param(p2->disp_params, p2->n_disp_params, "size"), "3");
	assert_string_equal(p2->id, "<id1@x>");
	assert_string_equal(p2->description, "a file");
	assert_string_equal(p2->language, "en");
	assert_string_equal(p2->location, "http://x/");
	assert_string_equal(p2->md5, "abc");
	assert_body(m, p2, "YWJj");
	assert_null(sec(root, "3"));
	assert_null(sec(root, "1.1"));

	size_t len;
	int bad;
	char *d = mime_body_decode(m, p2, &len, &bad);
	assert_int_equal(len, 3);
	assert_memory_equal(d, "abc", 3);
	assert_int_equal(bad, 0);
	free(d);
	/* Root body includes preamble and epilogue. */
	assert_true(root->body_end == strlen(m) - 0 || root->body_end == strlen(m) - 2);
	mime_free(&root);
}

static void test_delimiter_lines(void **state)
{
	/* "--bx" is not a delimiter of "b"; trailing whitespace is allowed. */
	const char *m = "Content-Type: multipart/mixed; boundary=b\n\n"
			"--b\n\none\n--bx\ntwo\n--b  \n\nthree\n--b--  \n";
	struct mime_part *root = parse(m);
	assert_int_equal(root->n_children, 2);
	assert_body(m, root->children[0], "one\n--bx\ntwo");
	assert_body(m, root->children[1], "three");
	mime_free(&root);

	/* An empty part and a part with no header. */
	m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--";
	root = parse(m);
	assert_int_equal(root->n_children, 2);
	assert_body(m, root->children[0], "");
	assert_type(root->children[0], "text", "plain");
	assert_header(m, root->children[1], "\r\n");
	assert_body(m, root->children[1], "x");
	mime_free(&root);
}

static void test_nested_outer_boundary(void **state)
{
	/* The inner multipart never closes; the outer delimiter ends it and its part. */
	const char *m = "Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
			"--outer\r\n"
			"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
			"--inner\r\n\r\nplain\r\n"
			"--inner\r\nContent-Type: text/html\r\n\r\n<p>html\r\n"
			"--outer\r\nContent-Type: image/gif\r\n\r\nGIF\r\n"
			"--outer--\r\n";
	struct mime_part *root = parse(m);
	int count = 0;
	check_tree(root, strlen(m), &count);
	assert_int_equal(root->n_children, 2);
	const struct mime_part *alt = sec(root, "1");
	assert_type(alt, "multipart", "alternative");
	assert_int_equal(alt->n_children, 2);
	assert_body(m, sec(root, "1.1"), "plain");
	assert_type(sec(root, "1.2"), "text", "html");
	assert_body(m, sec(root, "1.2"), "<p>html");
	assert_type(sec(root, "2"), "image", "gif");
	assert_body(m, sec(root, "2"), "GIF");
	assert_null(sec(root, "1.3"));
	assert_null(sec(root, "2.1"));
	mime_free(&root);
}

static void test_opaque_multiparts(void **state)
{
	/* No boundary parameter. */
	const char *m = "Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n--x--\r\n";
	struct mime_part *root = parse(m);
	assert_type(root, "multipart", "mixed");
	assert_int_equal(root->n_children, 0);
	assert_body(m, root, "--x\r\n\r\nbody\r\n--x--\r\n");
	assert_null(sec(root, "1"));
	mime_free(&root);

	/* No delimiter found. */
	m = "Content-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n";
	root = parse(m);
	assert_int_equal(root->n_children, 0);
	mime_free(&root);

	/* Zero parts: only the close delimiter. */
	m = "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz--\r\n";
	root = parse(m);
	assert_int_equal(root->n_children, 0);
	mime_free(&root);
}

static void test_truncated(void **state)
{
	const char *m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
			"--b\r\n\r\nfirst\r\n--b\r\nContent-Type: text/html\r\n\r\ncut off here";
	struct mime_part *root = parse(m);
	assert_int_equal(root->n_children, 2);
	assert_body(m, root->children[1], "cut off here");
	assert_int_equal(root->body_end, strlen(m));
	mime_free(&root);

	/* Every prefix of a real message parses to a sane tree. */
	size_t n = strlen(mixed);
	for (size_t i = 0; i <= n; i++) {
		char *copy = malloc(i + 1);
		memcpy(copy, mixed, i);
		root = mime_parse(copy, i, NULL);
		assert_non_null(root);
		int count = 0;
		check_tree(root, i, &count);
		mime_free(&root);
		free(copy);
	}
}

static const char rfc822[] =
	"Subject: outer\r\n"
	"Content-Type: multipart/mixed; boundary=\"o\"\r\n"
	"\r\n"
	"--o\r\n"
	"\r\n"
	"text\r\n"
	"--o\r\n"
	"Content-Type: message/rfc822\r\n"
	"\r\n"
	"Subject: inner\r\n"
	"Content-Type: multipart/alternative; boundary=i\r\n"
	"\r\n"
	"--i\r\n"
	"\r\n"
	"a\r\n"
	"--i\r\n"
	"Content-Type: text/html\r\n"
	"\r\n"
	"<b>\r\n"
	"--i--\r\n"
	"--o\r\n"
	"Content-Type: message/global\r\n"
	"\r\n"
	"Subject: leaf\r\n"
	"\r\n"
	"leaf body\r\n"
	"--o--\r\n";

static void test_message_rfc822(void **state)
{
	const char *m = rfc822;
	struct mime_part *root = parse(m);
	int count = 0;
	check_tree(root, strlen(m), &count);
	assert_int_equal(root->n_children, 3);

	const struct mime_part *p2 = sec(root, "2");
	assert_type(p2, "message", "rfc822");
	assert_int_equal(p2->n_children, 1);
	const struct mime_part *msg = p2->children[0];
	assert_header(m, msg, "Subject: inner\r\nContent-Type: multipart/alternative; "
			      "boundary=i\r\n\r\n");
	assert_int_equal(msg->header_start, p2->body_start);
	assert_type(msg, "multipart", "alternative");
	assert_true(p2->body_lines > 0);
	assert_ptr_equal(sec(root, "2.1"), msg->children[0]);
	assert_body(m, sec(root, "2.1"), "a");
	assert_type(sec(root, "2.2"), "text", "html");
	assert_null(sec(root, "2.3"));

	/* A non-multipart embedded message: its part 1 is itself. */
	const struct mime_part *p3 = sec(root, "3");
	assert_type(p3, "message", "global");
	assert_int_equal(p3->n_children, 1);
	assert_ptr_equal(sec(root, "3.1"), p3->children[0]);
	assert_body(m, sec(root, "3.1"), "leaf body");
	assert_null(sec(root, "3.2"));
	assert_null(sec(root, "3.1.1"));

	char *subj = mime_header_get(m, msg->header_start, msg->header_end, "subject");
	assert_string_equal(subj, "inner");
	free(subj);
	mime_free(&root);

	/* A message/rfc822 root: part 1 is the root, 1.1 its message's body. */
	m = "Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nhi\r\n";
	root = parse(m);
	assert_ptr_equal(sec(root, "1"), root);
	assert_ptr_equal(sec(root, "1.1"), root->children[0]);
	assert_body(m, sec(root, "1.1"), "hi\r\n");
	mime_free(&root);

	/* Base64 message/rfc822 is not parsed as a message. */
	m = "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA==\r\n";
	root = parse(m);
	assert_int_equal(root->n_children, 0);
	mime_free(&root);
}

static void test_digest(void **state)
{
	const char *m = "Content-Type: multipart/digest; boundary=d\n\n"
			"--d\n\nSubject: one\n\nbody1\n"
			"--d\nContent-Type: text/plain\n\nnot a message\n"
			"--d--\n";
	struct mime_part *root = parse(m);
	assert_int_equal(root->n_children, 2);
	assert_type(root->children[0], "message", "rfc822");
	assert_int_equal(root->children[0]->n_children, 1);
	assert_body(m, root->children[0]->children[0], "body1");
	assert_type(root->children[1], "text", "plain");
	mime_free(&root);
}

static void test_bare_lf(void **state)
{
	const char *m = "Subject: lf\n"
			"Content-Type: multipart/alternative;\n boundary=\"alt\"\n"
			"\n"
			"--alt\n"
			"Content-Type: text/plain\n"
			"\n"
			"line one\n"
			"line two\n"
			"--alt\n"
			"Content-Type: text/html\n"
			"\n"
			"<p>x</p>\n"
			"--alt--\n";
	struct mime_part *root = parse(m);
	assert_string_equal(param(root->params, root->n_params, "boundary"), "alt");
	assert_int_equal(root->n_children, 2);
	assert_header(m, root->children[0], "Content-Type: text/plain\n\n");
	assert_body(m, root->children[0], "line one\nline two");
	assert_int_equal(root->children[0]->body_lines, 2);
	assert_body(m, root->children[1], "<p>x</p>");
	mime_free(&root);
}

static void test_depth_limit(void **state)
{
	struct buf b;
	buf_init(&b, 0);
	for (int i = 0; i < 200; i++)
		buf_printf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
	buf_printf(&b, "\r\ndeep\r\n");
	for (int i = 199; i >= 0; i--)
		buf_printf(&b, "--b%d--\r\n", i);

	struct mime_limits lim;
	mime_limits_default(&lim);
	struct mime_part *root = mime_parse(b.data, b.len, &lim);
	assert_non_null(root);
	int depth = 0, count = 0;
	const struct mime_part *p = root;
	while (p->n_children > 0) {
		assert_int_equal(p->n_children, 1);
		p = p->children[0];
		depth++;
	}
	assert_int_equal(depth, lim.max_depth);
	assert_type(p, "multipart", "mixed");
	check_tree(root, b.len, &count);
	mime_free(&root);

	/* Same with message/rfc822 nesting. */
	buf_reset(&b);
	for (int i = 0; i < 200; i++)
		buf_printf(&b, "Content-Type: message/rfc822\r\n\r\n");
	root = mime_parse(b.data, b.len, &lim);
	for (depth = 0, p = root; p->n_children > 0; depth++)
		p = p->children[0];
	assert_int_equal(depth, lim.max_depth);
	mime_free(&root);

	/* A huge limit is still bounded by the parser's own. */
	lim.max_depth = 1000000;
	root = mime_parse(b.data, b.len, &lim);
	assert_non_null(root);
	mime_free(&root);
	buf_deinit(&b);
}

static void test_parts_limit(void **state)
{
	struct buf b;
	buf_init(&b, 0);
	buf_printf(&b, "Content-Type: multipart/mixed; boundary=p\r\n\r\n");
	for (int i = 0; i < 5000; i++)
		buf_printf(&b, "--p\r\n\r\npart %d\r\n", i);
	buf_printf(&b, "--p--\r\nepilogue\r\n");

	struct mime_limits lim;
	mime_limits_default(&lim);
	struct mime_part *root = mime_parse(b.data, b.len, &lim);
	assert_non_null(root);
	int count = 0;
	check_tree(root, b.len, &count);
	assert_int_equal(count, lim.max_parts);
	assert_int_equal(root->n_children, (size_t)lim.max_parts - 1);
	assert_body(b.data, root->children[0], "part 0");
	assert_body(b.data, root->children[998], "part 998");
	mime_free(&root);

	lim.max_parts = 0; /* the root always exists */
	root = mime_parse(b.data, b.len, &lim);
	assert_non_null(root);
	assert_int_equal(root->n_children, 0);
	mime_free(&root);
	buf_deinit(&b);
}

static void test_header_limit(void **state)
{
	struct buf b;
	buf_init(&b, 0);
	for (int i = 0; i < 2000; i++)
		buf_printf(&b, "X-H%d: v\r\n", i);
	buf_printf(&b, "Content-Type: text/html\r\n\r\nbody");
	struct mime_part *root = parse(b.data);
	/* Past max_headers the fields are not looked at. */
	assert_type(root, "text", "plain");
	assert_body(b.data, root, "body");
	mime_free(&root);
	buf_deinit(&b);
}

static void test_params(void **state)
{
	const char *m =
		"Content-Type: TEXT/Plain ; (comment) CharSet = \"iso-8859-1\" ; Format=flowed\r\n"
		"Content-Disposition: attachment;\r\n"
		" filename*0*=UTF-8''%E2%82%AC%20rates;\r\n"
		" filename*1=\" and more\";\r\n"
		" filename*2*=%2etxt;\r\n"
		" filename=\"fallback.txt\"\r\n"
		"\r\n";
	struct mime_part *root = parse(m);
	assert_type(root, "text", "plain");
	assert_int_equal(root->n_params, 2);
	assert_string_equal(root->params[0].name, "charset");
	assert_string_equal(root->params[0].value, "iso-8859-1");
	assert_string_equal(root->params[1].name, "format");
	assert_int_equal(root->n_disp_params, 1);
	assert_string_equal(root->disp_params[0].name, "filename");
	assert_string_equal(root->disp_params[0].value, "\xe2\x82\xac rates and more.txt");
	mime_free(&root);

	/* Sections out of order, ISO-8859-1, single extended value. */
	m = "Content-Type: application/x; name*1=\"b\"; name*0=\"a\"; title*=iso-8859-1'en'%E9t%E9\r\n"
	    "\r\n";
	root = parse(m);
	assert_string_equal(param(root->params, root->n_params, "name"), "ab");
	assert_string_equal(param(root->params, root->n_params, "title"), "\xc3\xa9t\xc3\xa9");
	mime_free(&root);

	/* Unknown charset: left as sent. */
	m = "Content-Type: application/x; name*=x-nonesuch''%41%42\r\n\r\n";
	root = parse(m);
	assert_string_equal(param(root->params, root->n_params, "name"), "x-nonesuch''%41%42");
	mime_free(&root);

	/* Invalid type: the default, without parameters. */
	m = "Content-Type: text; charset=utf-8\r\n\r\n";
	root = parse(m);
	assert_type(root, "text", "plain");
	assert_int_equal(root->n_params, 0);
	mime_free(&root);

	/* Unquoted value with spaces, junk, max_params. */
	struct mime_limits lim;
	mime_limits_default(&lim);
	lim.max_params = 2;
	m = "Content-Type: a/b; junk; name=my file.txt ; x=1; y=2; z=3\r\n\r\n";
	root = mime_parse(m, strlen(m), &lim);
	assert_int_equal(root->n_params, 2);
	assert_string_equal(root->params[0].name, "name");
	assert_string_equal(root->params[0].value, "my file.txt");
	assert_string_equal(root->params[1].name, "x");
	mime_free(&root);
}

static int count_cb(void *ctx, const char *name, size_t name_len, const char *value,
		    size_t value_len)
{
	struct buf *b = ctx;
	buf_printf(b, "[%.*s=%.*s]", (int)name_len, name, (int)value_len, value);
	return 0;
}

static void test_headers(void **state)
{
	const char *m = "From foo Sat Jan  3 01:05:34 1996\r\n"
			"Subject: first\r\n"
			" folded\r\n"
			"X-Empty:\r\n"
			"garbage line\r\n"
			"Subject : second\r\n"
			"\r\n"
			"Body: not a header\r\n";
	struct buf b;
	buf_init(&b, 0);
	mime_header_each(m, 0, strlen(m), 100, count_cb, &b);
	assert_string_equal(b.data, "[Subject= first\r\n folded][X-Empty=][Subject= second]");
	buf_reset(&b);
	mime_header_each(m, 0, strlen(m), 1, count_cb, &b);
	assert_string_equal(b.data, "[Subject= first\r\n folded]");
	buf_deinit(&b);

	char *v = mime_header_get(m, 0, strlen(m), "SUBJECT");
	assert_string_equal(v, "first folded");
	free(v);
	v = mime_header_get(m, 0, strlen(m), "x-empty");
	assert_string_equal(v, "");
	free(v);
	assert_null(mime_header_get(m, 0, strlen(m), "body"));
	assert_null(mime_header_get(m, 0, strlen(m), "subj"));
}

static void words_eq(const char *in, const char *expect)
{
	char *r = mime_decode_words(in, strlen(in));
	assert_non_null(r);
	if (strcmp(r, expect) != 0)
		fail_msg("\"%s\" -> \"%s\", expected \"%s\"", in, r, expect);
	free(r);
}

static void test_decode_words(void **state)
{
	words_eq("plain text", "plain text");
	words_eq("=?UTF-8?B?w6l0w6k=?=", "\xc3\xa9t\xc3\xa9");
	words_eq("=?iso-8859-1?q?caf=E9_au_lait?=", "caf\xc3\xa9 au lait");
	words_eq("=?iso-8859-1?Q?a?= =?iso-8859-1?Q?b?=", "ab");
	words_eq("=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab");
	words_eq("=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b");
	words_eq("Re: =?utf-8?q?hi?= there", "Re: hi there");
	/* A character split between two words. */
	words_eq("=?UTF-8?B?4oI=?= =?UTF-8?B?rA==?=", "\xe2\x82\xac");
	/* RFC 2231 language; lower-case hex; missing padding. */
	words_eq("=?US-ASCII*EN?Q?Keith_Moore?=", "Keith Moore");
	words_eq("=?utf-8?q?=e2=82=ac?=", "\xe2\x82\xac");
	words_eq("=?utf-8?b?w6k?=", "\xc3\xa9");
	words_eq("=?windows-1252?q?=80?=", "\xe2\x82\xac");
	/* Invalid words left as is. */
	words_eq("=?utf-8?x?abc?=", "=?utf-8?x?abc?=");
	words_eq("=?utf-8?q?a b?=", "=?utf-8?q?a b?=");
	words_eq("=??q?a?=", "=??q?a?=");
	words_eq("=?utf-8?q?unterminated", "=?utf-8?q?unterminated");
	/* Invalid UTF-8 replaced. */
	words_eq("bad \xff byte", "bad \xef\xbf\xbd byte");
	words_eq("=?utf-8?q?=C3?=", "\xef\xbf\xbd");
	/* Unknown charset: bytes taken as UTF-8. */
	words_eq("=?x-unknown?q?ok?=", "ok");
	words_eq("", "");
}

static void addr_eq(const struct mime_addr *a, const char *name, const char *adl,
		    const char *mailbox, const char *host)
{
#define STR_EQ(x, y)                                        \
	do {                                                \
		if ((y) == NULL)                            \
			assert_null(x);                     \
		else {                                      \
			assert_non_null(x);                 \
			assert_string_equal((x), (y));      \
		}                                           \
	} while (0)
	STR_EQ(a->name, name);
	STR_EQ(a->adl, adl);
	STR_EQ(a->mailbox, mailbox);
	STR_EQ(a->host, host);
#undef STR_EQ
}

static struct mime_addr *addrs(const char *s, size_t max, size_t *n)
{
	struct mime_addr *a;
	assert_int_equal(mime_addr_parse(s, strlen(s), max, &a, n), 0);
	return a;
}

static void test_addresses(void **state)
{
	size_t n;
	struct mime_addr *a;

	a = addrs("user@example.com", 10, &n);
	assert_int_equal(n, 1);
	addr_eq(&a[0], NULL, NULL, "user", "example.com");
	mime_addrs_free(a, n);

	a = addrs("\"Doe, John\" <john.doe@x.org>, Jane Q. Public <jane@y.org> (work),\r\n"
		  " bob@z.net (Bob Smith)",
		  10, &n);
	assert_int_equal(n, 3);
	addr_eq(&a[0], "Doe, John", NULL, "john.doe", "x.org");
	addr_eq(&a[1], "Jane Q. Public", NULL, "jane", "y.org");
	addr_eq(&a[2], "Bob Smith", NULL, "bob", "z.net");
	mime_addrs_free(a, n);

	a = addrs("undisclosed-recipients:;", 10, &n);
	assert_int_equal(n, 2);
	addr_eq(&a[0], "undisclosed-recipients", NULL, NULL, NULL);
	addr_eq(&a[1], NULL, NULL, NULL, NULL);
	mime_addrs_free(a, n);

	a = addrs("Team: a@b, C <c@d>; e@f", 10, &n);
	assert_int_equal(n, 5);
	addr_eq(&a[0], "Team", NULL, NULL, NULL);
	addr_eq(&a[1], NULL, NULL, "a", "b");
	addr_eq(&a[2], "C", NULL, "c", "d");
	addr_eq(&a[3], NULL, NULL, NULL, NULL);
	addr_eq(&a[4], NULL, NULL, "e", "f");
	mime_addrs_free(a, n);

	/* Unterminated group: closed anyway. */
	a = addrs("G: a@b", 10, &n);
	assert_int_equal(n, 3);
	addr_eq(&a[2], NULL, NULL, NULL, NULL);
	mime_addrs_free(a, n);

	a = addrs("<@a.net,@b.net:user@host>", 10, &n);
	assert_int_equal(n, 1);
	addr_eq(&a[0], NULL, "@a.net,@b.net", "user", "host");
	mime_addrs_free(a, n);

	a = addrs("Name <user>, postmaster", 10, &n);
	assert_int_equal(n, 2);
	addr_eq(&a[0], "Name", NULL, "user", NULL);
	addr_eq(&a[1], NULL, NULL, "postmaster", NULL);
	mime_addrs_free(a, n);

	a = addrs("\"quoted local\"@x (c), =?utf-8?q?J=C3=B6rg?= <j@x>", 10, &n);
	assert_int_equal(n, 2);
	addr_eq(&a[0], "c", NULL, "\"quoted local\"", "x");
	addr_eq(&a[1], "=?utf-8?q?J=C3=B6rg?=", NULL, "j", "x");
	mime_addrs_free(a, n);

	/* Garbage gives what can be had, never a failure. */
	const char *junk[] = { "", ",,,", "<<<>>>", "@@@", ";;;:::", "\"unterminated",
			       "(unterminated", "a@", "<a@b", "a b c <d@e> f g", "[x]@[y]" };
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		a = addrs(junk[i], 10, &n);
		for (size_t k = 0; k < n; k++) {
			if (a[k].mailbox == NULL && a[k].host != NULL)
				fail_msg("%s: host without mailbox", junk[i]);
		}
		mime_addrs_free(a, n);
	}
	a = addrs("a b c <d@e> f g", 10, &n);
	assert_int_equal(n, 1);
	addr_eq(&a[0], "a b c", NULL, "d", "e");
	mime_addrs_free(a, n);

	/* max, and groups stay balanced under it. */
	a = addrs("a@b, c@d, e@f", 2, &n);
	assert_int_equal(n, 2);
	mime_addrs_free(a, n);
	a = addrs("G: a@b, c@d, e@f;", 3, &n);
	assert_int_equal(n, 3);
	addr_eq(&a[0], "G", NULL, NULL, NULL);
	addr_eq(&a[2], NULL, NULL, NULL, NULL);
	mime_addrs_free(a, n);
	a = addrs("a@b", 0, &n);
	assert_int_equal(n, 0);
	mime_addrs_free(a, n);
}

static char *decode(const char *enc, const char *body, size_t *len, int *bad)
{
	struct mime_part part;
	memset(&part, 0, sizeof(part));
	part.encoding = (char *)enc;
	part.type = (char *)"text";
	part.subtype = (char *)"plain";
	part.body_start = 0;
	part.body_end = strlen(body);
	char *r = mime_body_decode(body, &part, len, bad);
	assert_non_null(r);
	return r;
}

static void decode_eq(const char *enc, const char *body, const char *expect, int expect_bad)
{
	size_t len;
	int bad;
	char *r = decode(enc, body, &len, &bad);
	if (len != strlen(expect) || memcmp(r, expect, len) != 0)
		fail_msg("%s \"%s\" -> \"%.*s\", expected \"%s\"", enc ? enc : "NULL", body,
			 (int)len, r, expect);
	assert_int_equal(bad, expect_bad);
	free(r);
}

static void test_body_decode(void **state)
{
	decode_eq("base64", "aGVs\r\nbG8g\r\n d29y bGQ=\r\n", "hello world", 0);
	decode_eq("base64", "aGVsbG8", "hello", 0);
	decode_eq("base64", "aGk=aGk=", "hihi", 0);
	decode_eq("base64", "", "", 0);
	decode_eq("base64", "!!!", "", 0);
	decode_eq("quoted-printable", "caf=E9 =\r\nau lait=3d=3D\r\nx  \r\ny", "caf\xe9 au lait==\r\nx\r\ny",
		  0);
	decode_eq("quoted-printable", "soft=\nbreak= \n!", "softbreak!", 0);
	decode_eq("quoted-printable", "bad=zz=4", "bad=zz=4", 0);
	decode_eq(NULL, "as is\r\n", "as is\r\n", 0);
	decode_eq("8bit", "\xff", "\xff", 0);
	decode_eq("x-uuencode", "begin", "begin", 1);
}

static void test_body_text(void **state)
{
	const char *m = "Content-Type: text/plain; charset=iso-8859-1\r\n"
			"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9";
	struct mime_part *root = parse(m);
	size_t len;
	char *t = mime_body_text(m, root, &len);
	assert_string_equal(t, "caf\xc3\xa9");
	assert_int_equal(len, 5);
	free(t);
	mime_free(&root);

	m = "Content-Type: text/html; charset=windows-1252\r\n\r\n\x80 \xff";
	root = parse(m);
	t = mime_body_text(m, root, &len);
	assert_string_equal(t, "\xe2\x82\xac \xc3\xbf");
	free(t);
	mime_free(&root);

	/* No charset, invalid UTF-8: replaced. */
	m = "\r\nok \xc3";
	root = parse(m);
	t = mime_body_text(m, root, &len);
	assert_string_equal(t, "ok \xef\xbf\xbd");
	free(t);
	mime_free(&root);

	m = "Content-Type: image/png\r\n\r\nPNG";
	root = parse(m);
	assert_null(mime_body_text(m, root, &len));
	assert_int_equal(len, 0);
	mime_free(&root);
}

static int64_t date_ok(const char *s, int expect_tz)
{
	int64_t t;
	int tz;
	if (mime_date_parse(s, strlen(s), &t, &tz) != 0)
		fail_msg("\"%s\" refused", s);
	assert_int_equal(tz, expect_tz);
	return t;
}

static void test_date(void **state)
{
	/* 2026-11-27 10:38:34 UTC */
	const int64_t t0 = 1795775914;
	assert_int_equal(date_ok("Fri, 27 Nov 2026 10:38:34 +0000", 0), t0);
	assert_int_equal(date_ok("27 Nov 2026 10:38:34 +0000", 0), t0);
	assert_int_equal(date_ok("Friday, 27 nov 26 10:38:34 GMT", 0), t0);
	assert_int_equal(date_ok("Fri 27 Nov 2026 11:38:34 +0100 (CET)", 60), t0);
	assert_int_equal(date_ok(" Fri , 27 Nov 2026 05:38:34 EST", -300), t0);
	assert_int_equal(date_ok("27 Nov 2026 03:38:34 PDT", -420), t0);
	assert_int_equal(date_ok("27 Nov 2026 10:38 UT", 0), t0 - 34);
	assert_int_equal(date_ok("27 Nov 2026 10:38:34", 0), t0);
	assert_int_equal(date_ok("27 Nov 2026 10:38:34 A", 0), t0);
	assert_int_equal(date_ok("27 Nov 2026 08:08:34 -0230", -150), t0);
	assert_int_equal(date_ok("1 Jan 70 00:00:00 +0000", 0), 0);
	assert_int_equal(date_ok("1 Jan 1970 00:00:00 +0000", 0), 0);
	assert_int_equal(date_ok("1 Jan 49 00:00:00 +0000", 0), 2493072000);
	assert_int_equal(date_ok("1 Jan 099 00:00:00 +0000", 0), 915148800);
	assert_int_equal(date_ok("29 Feb 2024 00:00:00 +0000", 0), 1709164800);

	const char *bad[] = { "", "nonsense", "Fri, 32 Nov 2026 10:38:34 +0000",
			      "30 Feb 2024 00:00:00 +0000", "27 Foo 2026 10:38:34 +0000",
			      "27 Nov 2026 24:00:00 +0000", "27 Nov 2026 10:60:00 +0000",
			      "27 Nov 2026", "27 Nov 2026 10:38:34 +00", "Blah, 27 Nov 2026 10:38:34",
			      "27 Nov 1800 10:38:34 +0000" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t t;
		int tz;
		if (mime_date_parse(bad[i], strlen(bad[i]), &t, &tz) != -1)
			fail_msg("\"%s\" accepted", bad[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_header_only_and_lines),
		cmocka_unit_test(test_multipart_mixed),
		cmocka_unit_test(test_delimiter_lines),
		cmocka_unit_test(test_nested_outer_boundary),
		cmocka_unit_test(test_opaque_multiparts),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_message_rfc822),
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_bare_lf),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_parts_limit),
		cmocka_unit_test(test_header_limit),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_decode_words),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_body_decode),
		cmocka_unit_test(test_body_text),
		cmocka_unit_test(test_date),
	};
	return cmocka_run_group_tests_name("msg/mime", tests, NULL, NULL);
}
