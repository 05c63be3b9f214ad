#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "msg/addr.h"

#define F_NULL ADDR_ALLOW_NULL
#define F_UTF8 ADDR_ALLOW_UTF8

/* Parses s as a whole path (consumed must be all of it) and checks the result. */
static void path_ok(const char *s, unsigned flags, const char *local, const char *domain)
{
	struct mail_addr a;
	size_t used = 0;
	enum addr_error e = addr_parse_path(s, strlen(s), flags, &a, &used);

	if (e != ADDR_OK)
		fail_msg("\"%s\": %s", s, addr_error_str(e));
	assert_int_equal(used, strlen(s));
	assert_string_equal(a.local, local);
	assert_string_equal(a.domain, domain);
}

static enum addr_error path_err(const char *s, unsigned flags)
{
	struct mail_addr a;
	size_t used = 99;
	enum addr_error e = addr_parse_path(s, strlen(s), flags, &a, &used);

	if (e != ADDR_OK) {
		assert_int_equal(used, 0);
		assert_string_equal(a.local, "");
		assert_string_equal(a.domain, "");
	}
	return e;
}

static void test_simple(void **state)
{
	path_ok("<user@example.com>", 0, "user", "example.com");
	path_ok("<User.Name+tag@Example.COM>", 0, "User.Name+tag", "example.com");
	path_ok("<a@b>", 0, "a", "b");
	path_ok("<x@localhost>", 0, "x", "localhost");
	path_ok("<!#$%&'*+-/=?^_`{|}~@a-b.c0>", 0, "!#$%&'*+-/=?^_`{|}~", "a-b.c0");
	path_ok("<1@2.3>", 0, "1", "2.3");
	path_ok("<u@xn--bcher-kva.example>", 0, "u", "xn--bcher-kva.example");
}

static void test_flags_and_consumed(void **state)
{
	struct mail_addr a;
	size_t used;
	const char *s = "<u@d.org> SIZE=10";

	assert_int_equal(addr_parse_path(s, strlen(s), 0, &a, &used), ADDR_OK);
	assert_int_equal(used, 9);
	assert_false(a.is_null);
	assert_false(a.quoted);
	assert_false(a.had_route);
	assert_false(a.utf8);
	/* Only len bytes are looked at. */
	assert_int_equal(addr_parse_path(s, 8, 0, &a, &used), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_path(s, 0, 0, &a, &used), ADDR_ERR_SYNTAX);
}

static void test_syntax_errors(void **state)
{
	static const char *bad[] = {
		"user@example.com",    /* brackets required */
		"<user@example.com",
		"user@example.com>",
		"< user@example.com>", /* nothing else tolerated */
		"<user@example.com >",
		"<user @example.com>",
		"<user@ example.com>",
		"<user>",              /* no domain (only postmaster may) */
		"<@example.com>",
		"<user@>",
		"<.user@d>",
		"<user.@d>",
		"<us..er@d>",
		"<us(er@d>",
		"<us,er@d>",
		"<us[er@d>",
		"<us\ter@d>",
		"<user@d.>",           /* trailing dot */
		"<user@.d>",
		"<user@d..e>",
		"<user@-d.e>",
		"<user@d-.e>",
		"<user@d_e>",
		"<user@d@e>",
		"<a@b@c>",
		"<\"\"@d>",            /* empty quoted local part */
		"<\"abc@d>",
		"<\"a\"b@d>",
		"<a\"b\"@d>",
		"<\"a\x01\"@d>",
		"<\"a\tb\"@d>",
		"<\"a\x7f\"@d>",
		"<\"a\\\x01\"@d>",
		"<<user@d>>",
		"",
		"<",
		"<u",
		"<u@",
		"<u@d",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum addr_error e = path_err(bad[i], F_NULL);
		if (e != ADDR_ERR_SYNTAX)
			fail_msg("\"%s\": %s", bad[i], addr_error_str(e));
	}
	/* What follows ">" is not examined here (the caller checks it). */
	struct mail_addr a;
	size_t used;
	assert_int_equal(addr_parse_path("<user@d>>", 9, 0, &a, &used), ADDR_OK);
	assert_int_equal(used, 8);
	assert_int_equal(addr_parse_path("<>>", 3, F_NULL, &a, &used), ADDR_OK);
	assert_int_equal(used, 2);
}

static void test_embedded_nul(void **state)
{
	struct mail_addr a;
	size_t used;

	assert_int_equal(addr_parse_path("<u\0x@d>", 7, 0, &a, &used), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_path("<u@d\0x>", 7, 0, &a, &used), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_path("<\"u\0\"@d>", 8, 0, &a, &used), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_mailbox("u@d\0", 4, 0, &a), ADDR_ERR_SYNTAX);
}

static void test_quoted(void **state)
{
	struct mail_addr a;
	size_t used;
	const char *s = "<\"john \\\"jr\\\" doe\"@example.com>";

	assert_int_equal(addr_parse_path(s, strlen(s), 0, &a, &used), ADDR_OK);
	assert_string_equal(a.local, "john \"jr\" doe");
	assert_true(a.quoted);
	assert_int_equal(used, strlen(s));

	path_ok("<\"a@b\"@example.com>", 0, "a@b", "example.com");
	path_ok("<\"a>b\"@example.com>", 0, "a>b", "example.com");
	path_ok("<\"back\\\\slash\"@d>", 0, "back\\slash", "d");
	path_ok("<\"\\a\\b\"@d>", 0, "ab", "d");
	path_ok("<\" \"@d>", 0, " ", "d");
	path_ok("<\"..\"@d>", 0, "..", "d");
	path_ok("<\"plain\"@d>", 0, "plain", "d");
	path_ok("<\"(comment)\"@d>", 0, "(comment)", "d");
}

static void test_percent_and_bang(void **state)
{
	/* Just local parts: the daemon finds no such user. */
	path_ok("<user%other.example@relay.example>", 0, "user%other.example", "relay.example");
	path_ok("<host!user@relay.example>", 0, "host!user", "relay.example");
}

static void test_case(void **state)
{
	path_ok("<MiXeD@ExAmPlE.CoM>", 0, "MiXeD", "example.com");
	path_ok("<\"MiXeD\"@D>", 0, "MiXeD", "d");
}

static void test_null_path(void **state)
{
	struct mail_addr a;
	size_t used;

	assert_int_equal(addr_parse_path("<>", 2, F_NULL, &a, &used), ADDR_OK);
	assert_true(a.is_null);
	assert_int_equal(used, 2);
	assert_string_equal(a.local, "");
	assert_string_equal(a.domain, "");
	assert_int_equal(addr_parse_path("<> BODY=8BITMIME", 16, F_NULL, &a, &used), ADDR_OK);
	assert_int_equal(used, 2);
	assert_int_equal(path_err("<>", 0), ADDR_ERR_NULL_NOT_ALLOWED);
	assert_int_equal(path_err("<>", F_UTF8), ADDR_ERR_NULL_NOT_ALLOWED);
	assert_int_equal(path_err("< >", F_NULL), ADDR_ERR_SYNTAX);
}

static void test_postmaster(void **state)
{
	struct mail_addr a;
	size_t used;

	path_ok("<postmaster>", 0, "postmaster", "");
	path_ok("<PostMaster>", 0, "postmaster", "");
	path_ok("<POSTMASTER>", F_UTF8, "postmaster", "");
	assert_int_equal(addr_parse_path("<Postmaster>", 12, 0, &a, &used), ADDR_OK);
	assert_false(a.is_null);
	/* With a domain it is an ordinary address, case kept. */
	path_ok("<Postmaster@Example.com>", 0, "Postmaster", "example.com");
	/* Only as a Forward-path, only unquoted, only without a route. */
	assert_int_equal(path_err("<postmaster>", F_NULL), ADDR_ERR_SYNTAX);
	assert_int_equal(path_err("<\"postmaster\">", 0), ADDR_ERR_SYNTAX);
	assert_int_equal(path_err("<@a:postmaster>", 0), ADDR_ERR_SYNTAX);
	assert_int_equal(path_err("<postmasters>", 0), ADDR_ERR_SYNTAX);
	assert_int_equal(path_err("<abuse>", 0), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_mailbox("postmaster", 10, 0, &a), ADDR_ERR_SYNTAX);
}

static void test_source_route(void **state)
{
	struct mail_addr a;
	size_t used;
	const char *s = "<@hosta.int,@jkl.org:userc@d.bar.org>";

	assert_int_equal(addr_parse_path(s, strlen(s), 0, &a, &used), ADDR_OK);
	assert_true(a.had_route);
	assert_string_equal(a.local, "userc");
	assert_string_equal(a.domain, "d.bar.org");
	assert_int_equal(used, strlen(s));
	path_ok("<@a:u@d>", 0, "u", "d");
	path_ok("<@a,@b,@c:\"q u\"@d>", F_NULL, "q u", "d");

	static const char *bad[] = {
		"<@a u@d>", "<@a,u@d>", "<@a,:u@d>", "<@:u@d>", "<@a:>", "<@a:@b:u@d>",
		"<@a,b:u@d>", "<@a.:u@d>", "<@[1.2.3.4]:u@d>", "<@a:<u@d>", "<@a,@b>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum addr_error e = path_err(bad[i], 0);
		if (e != ADDR_ERR_SYNTAX)
			fail_msg("\"%s\": %s", bad[i], addr_error_str(e));
	}
	/* UTF-8 in a route needs the flag too, even though the route is dropped. */
	assert_int_equal(path_err("<@b\xc3\xbc:u@d>", 0), ADDR_ERR_UTF8_NOT_ALLOWED);
	assert_int_equal(addr_parse_path("<@b\xc3\xbc:u@d>", 10, F_UTF8, &a, &used), ADDR_OK);
	assert_false(a.utf8);
}

static void test_address_literals(void **state)
{
	path_ok("<u@[127.0.0.1]>", 0, "u", "[127.0.0.1]");
	path_ok("<u@[IPv6:::1]>", 0, "u", "[ipv6:::1]");
	path_ok("<u@[ipv6:2001:DB8::1]>", 0, "u", "[ipv6:2001:db8::1]");
	path_ok("<u@[IPv6:::ffff:192.0.2.1]>", 0, "u", "[ipv6:::ffff:192.0.2.1]");
	path_ok("<u@[255.255.255.255]>", 0, "u", "[255.255.255.255]");

	static const char *bad[] = {
		"<u@[256.0.0.1]>", "<u@[1.2.3]>", "<u@[1.2.3.4.5]>", "<u@[1.2.3.4>",
		"<u@[]>", "<u@[IPv6:]>", "<u@[IPv6:1.2.3.4]>", "<u@[IPv6:::1%eth0]>",
		"<u@[IPv6:::g]>", "<u@[::1]>", "<u@[x-tag:stuff]>", /* General-address-literal */
		"<u@[1.2.3.4 ]>", "<u@[1.2.3.4]x>", "<u@[[1.2.3.4]]>", "<u@x.[1.2.3.4]>",
		"<u@[IPv4:1.2.3.4]>", "<u@[1.2.3.4]", "<u@[", "<u@[1.2.\xc3\xbc]>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum addr_error e = path_err(bad[i], F_UTF8);
		if (e != ADDR_ERR_SYNTAX)
			fail_msg("\"%s\": %s", bad[i], addr_error_str(e));
	}
}

static void fill(char *buf, char c, size_t n)
{
	memset(buf, c, n);
	buf[n] = '\0';
}

static void test_local_length(void **state)
{
	char s[400], local[300], expect[300];

	/* 64 octets is the limit (RFC 5321 4.5.3.1.1). */
	fill(local, 'a', 64);
	snprintf(s, sizeof(s), "<%s@d>", local);
	path_ok(s, 0, local, "d");
	fill(local, 'a', 65);
	snprintf(s, sizeof(s), "<%s@d>", local);
	assert_int_equal(path_err(s, 0), ADDR_ERR_TOO_LONG);

	/* Quoted: the quotes and backslashes count, as sent. */
	fill(local, 'b', 62);
	snprintf(s, sizeof(s), "<\"%s\"@d>", local);
	path_ok(s, 0, local, "d");
	fill(local, 'b', 63);
	snprintf(s, sizeof(s), "<\"%s\"@d>", local);
	assert_int_equal(path_err(s, 0), ADDR_ERR_TOO_LONG);
	fill(local, 'b', 60);
	snprintf(s, sizeof(s), "<\"%s\\\"\"@d>", local); /* 60 + 2 + 2 = 64 */
	snprintf(expect, sizeof(expect), "%s\"", local);
	path_ok(s, 0, expect, "d");
	fill(local, 'b', 61);
	snprintf(s, sizeof(s), "<\"%s\\\"\"@d>", local);
	assert_int_equal(path_err(s, 0), ADDR_ERR_TOO_LONG);

	/* UTF-8: octets, not characters: 32 x "é" is 64 octets, 33 is too many. */
	char *p = local;
	for (int i = 0; i < 32; i++) {
		*p++ = '\xc3';
		*p++ = '\xa9';
	}
	*p = '\0';
	snprintf(s, sizeof(s), "<%s@d>", local);
	path_ok(s, F_UTF8, local, "d");
	snprintf(s, sizeof(s), "<a%s@d>", local);
	assert_int_equal(path_err(s, F_UTF8), ADDR_ERR_TOO_LONG);
}

static void test_domain_length(void **state)
{
	char s[600], domain[300];
	struct mail_addr a;

	/* Labels of at most 63 octets. */
	fill(domain, 'x', 63);
	snprintf(s, sizeof(s), "<u@%s>", domain);
	path_ok(s, 0, "u", domain);
	fill(domain, 'x', 64);
	snprintf(s, sizeof(s), "<u@%s>", domain);
	assert_int_equal(path_err(s, 0), ADDR_ERR_TOO_LONG);

	/* 255 octets as a mailbox; as a path, the 256 octets of the whole path bind
	 * first: "<" + "u@" + 251 + ">" = 255 is fine, 253 too long. */
	for (int i = 0; i < 4; i++) {
		memset(domain + i * 64, 'a' + i, 63);
		domain[i * 64 + 63] = '.';
	}
	domain[255] = '\0'; /* 4 x 63 + 3 dots = 255 */
	assert_int_equal(addr_parse_mailbox("", 0, 0, &a), ADDR_ERR_SYNTAX);
	snprintf(s, sizeof(s), "u@%s", domain);
	assert_int_equal(addr_parse_mailbox(s, strlen(s), 0, &a), ADDR_OK);
	assert_string_equal(a.domain, domain);
	snprintf(s, sizeof(s), "u@a%s", domain);
	assert_int_equal(addr_parse_mailbox(s, strlen(s), 0, &a), ADDR_ERR_TOO_LONG);

	snprintf(s, sizeof(s), "<u@%s>", domain + 4); /* 251 octets */
	path_ok(s, 0, "u", domain + 4);
	snprintf(s, sizeof(s), "<u@%s>", domain + 2);
	assert_int_equal(path_err(s, 0), ADDR_ERR_TOO_LONG);
	/* No ">" within the first 256 octets: too long, not a syntax error. */
	snprintf(s, sizeof(s), "<@%s,@%s:u@d>", domain, domain);
	assert_int_equal(path_err(s, 0), ADDR_ERR_TOO_LONG);
}

static void test_utf8(void **state)
{
	struct mail_addr a;
	size_t used;
	const char *s = "<j\xc3\xb6rg@b\xc3\xbc" "cher.example>";

	/* Without SMTPUTF8 any non-ASCII is refused, with its own error. */
	assert_int_equal(path_err(s, 0), ADDR_ERR_UTF8_NOT_ALLOWED);
	assert_int_equal(path_err("<u@b\xc3\xbc.de>", F_NULL), ADDR_ERR_UTF8_NOT_ALLOWED);
	assert_int_equal(path_err("<\"\xc3\xbc\"@d>", 0), ADDR_ERR_UTF8_NOT_ALLOWED);

	assert_int_equal(addr_parse_path(s, strlen(s), F_UTF8, &a, &used), ADDR_OK);
	assert_true(a.utf8);
	assert_string_equal(a.local, "j\xc3\xb6rg");
	assert_string_equal(a.domain, "b\xc3\xbc" "cher.example");
	/* Only ASCII is lower-cased; "Ü" stays. */
	path_ok("<U@B\xc3\x9c" "CHER.DE>", F_UTF8, "U", "b\xc3\x9c" "cher.de");
	path_ok("<\"\xe2\x82\xac \xf0\x9f\x98\x80\"@d>", F_UTF8, "\xe2\x82\xac \xf0\x9f\x98\x80",
		"d");
	path_ok("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>",
		F_UTF8,
		"\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a");
	/* An ASCII address does not need SMTPUTF8. */
	assert_int_equal(addr_parse_path("<a@b>", 5, F_UTF8, &a, &used), ADDR_OK);
	assert_false(a.utf8);

	static const char *bad[] = {
		"<\xc3@d>",             /* truncated */
		"<\xc3(@d>",
		"<\x80@d>",             /* stray continuation */
		"<\xc0\xaf@d>",         /* overlong "/" */
		"<\xc1\xbf@d>",
		"<\xe0\x80\xaf@d>",     /* overlong, 3 bytes */
		"<\xf0\x80\x80\xaf@d>", /* overlong, 4 bytes */
		"<\xed\xa0\x80@d>",     /* surrogate U+D800 */
		"<\xed\xbf\xbf@d>",     /* surrogate U+DFFF */
		"<\xf4\x90\x80\x80@d>", /* above U+10FFFF */
		"<\xf5\x80\x80\x80@d>",
		"<\xff@d>",
		"<u@d\xc3>",
		"<u@d.\xed\xa0\x80>",
		"<\"\\\xc3\xbc\"@d>",   /* quoted-pairSMTP is ASCII only */
		"<u@-\xc3\xbc>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum addr_error e = path_err(bad[i], F_UTF8);
		if (e != ADDR_ERR_SYNTAX)
			fail_msg("bad[%zu]: %s", i, addr_error_str(e));
	}
	/* The largest and the smallest multi-byte characters are fine. */
	path_ok("<\xf4\x8f\xbf\xbf@d>", F_UTF8, "\xf4\x8f\xbf\xbf", "d");
	path_ok("<\xc2\x80@d>", F_UTF8, "\xc2\x80", "d");
	path_ok("<\xed\x9f\xbf@d>", F_UTF8, "\xed\x9f\xbf", "d");
}

static void test_mailbox(void **state)
{
	struct mail_addr a;

	assert_int_equal(addr_parse_mailbox("User@Example.COM", 16, 0, &a), ADDR_OK);
	assert_string_equal(a.local, "User");
	assert_string_equal(a.domain, "example.com");
	assert_int_equal(addr_parse_mailbox("\"a b\"@[10.0.0.1]", 16, 0, &a), ADDR_OK);
	assert_string_equal(a.local, "a b");
	assert_string_equal(a.domain, "[10.0.0.1]");
	assert_true(a.quoted);
	/* Exactly len bytes: no brackets, nothing after. */
	assert_int_equal(addr_parse_mailbox("<u@d>", 5, 0, &a), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_mailbox("u@d ", 4, 0, &a), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_mailbox("u@d.", 4, 0, &a), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_mailbox("u@d", 2, 0, &a), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_mailbox("u", 1, 0, &a), ADDR_ERR_SYNTAX);
	assert_int_equal(addr_parse_mailbox("u@d", 3, F_NULL, &a), ADDR_OK);
	assert_int_equal(addr_parse_mailbox("\xc3\xbc@d", 4, 0, &a), ADDR_ERR_UTF8_NOT_ALLOWED);
	assert_int_equal(addr_parse_mailbox("\xc3\xbc@d", 4, F_UTF8, &a), ADDR_OK);
	assert_true(a.utf8);
}

static void format_is(const struct mail_addr *a, const char *expect)
{
	char out[600];
	int n = addr_format(a, out, sizeof(out));

	assert_int_equal(n, (int)strlen(expect));
	assert_string_equal(out, expect);
}

static void test_format(void **state)
{
	struct mail_addr a;
	size_t used;
	char out[16];

	addr_parse_path("<User@Example.com>", 18, 0, &a, &used);
	format_is(&a, "User@example.com");
	addr_parse_path("<\"a b\"@d>", 9, 0, &a, &used);
	format_is(&a, "\"a b\"@d");
	addr_parse_path("<\"plain\"@d>", 11, 0, &a, &used);
	format_is(&a, "plain@d"); /* quotes only when needed */
	addr_parse_path("<\"a\\\"b\\\\c\"@d>", 14, 0, &a, &used);
	assert_string_equal(a.local, "a\"b\\c");
	format_is(&a, "\"a\\\"b\\\\c\"@d");
	addr_parse_path("<\"\\x\"@d>", 8, 0, &a, &used);
	format_is(&a, "x@d");
	addr_parse_path("<\"a.\"@d>", 8, 0, &a, &used);
	format_is(&a, "\"a.\"@d");
	addr_parse_path("<\"a@b\"@d>", 9, 0, &a, &used);
	format_is(&a, "\"a@b\"@d");
	addr_parse_path("<u@[IPv6:::1]>", 14, 0, &a, &used);
	format_is(&a, "u@[ipv6:::1]");
	addr_parse_path("<>", 2, F_NULL, &a, &used);
	format_is(&a, "");
	addr_parse_path("<Postmaster>", 12, 0, &a, &used);
	format_is(&a, "postmaster");
	addr_parse_path("<\xc3\xbc@\xc3\xbc>", 8, F_UTF8, &a, &used);
	format_is(&a, "\xc3\xbc@\xc3\xbc");

	/* Capacity: the NUL counts. */
	addr_parse_path("<abc@def>", 9, 0, &a, &used);
	assert_int_equal(addr_format(&a, out, 8), 7);
	assert_string_equal(out, "abc@def");
	assert_int_equal(addr_format(&a, out, 7), -1);
	assert_int_equal(addr_format(&a, out, 0), -1);
	addr_parse_path("<>", 2, F_NULL, &a, &used);
	assert_int_equal(addr_format(&a, out, 1), 0);
}

static void test_format_round_trip(void **state)
{
	static const char *paths[] = {
		"<\"john \\\"jr\\\" doe\"@example.com>", "<\" \"@d>", "<\"..\"@d>",
		"<\"a\\\\\"@d>", "<a.b.c@d.e.f>", "<\"a..b\"@[1.2.3.4]>", "<\".a\"@d>",
	};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		struct mail_addr a, b;
		size_t used;
		char out[600];

		assert_int_equal(addr_parse_path(paths[i], strlen(paths[i]), 0, &a, &used),
				 ADDR_OK);
		int n = addr_format(&a, out, sizeof(out));
		assert_true(n > 0);
		assert_true((size_t)n + 2 <= strlen(paths[i]));
		assert_int_equal(addr_parse_mailbox(out, (size_t)n, 0, &b), ADDR_OK);
		assert_string_equal(a.local, b.local);
		assert_string_equal(a.domain, b.domain);
	}
}

static void test_error_str(void **state)
{
	assert_string_equal(addr_error_str(ADDR_ERR_TOO_LONG), "address too long");
	for (int e = ADDR_OK; e <= ADDR_ERR_NULL_NOT_ALLOWED; e++)
		assert_non_null(addr_error_str((enum addr_error)e));
	assert_non_null(addr_error_str((enum addr_error)99));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_flags_and_consumed),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_embedded_nul),
		cmocka_unit_test(test_quoted),
		cmocka_unit_test(test_percent_and_bang),
		cmocka_unit_test(test_case),
		cmocka_unit_test(test_null_path),
		cmocka_unit_test(test_postmaster),
		cmocka_unit_test(test_source_route),
		cmocka_unit_test(test_address_literals),
		cmocka_unit_test(test_local_length),
		cmocka_unit_test(test_domain_length),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_mailbox),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_format_round_trip),
		cmocka_unit_test(test_error_str),
	};
	return cmocka_run_group_tests_name("msg/addr", tests, NULL, NULL);
}
