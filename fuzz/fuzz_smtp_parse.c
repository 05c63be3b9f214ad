/* libFuzzer target for smtp/smtp_parse: the input is a client's byte stream, read
 * through the line reader in pieces (as the engine would, with a bounded buffer);
 * each line goes through smtp_parse_command(), and MAIL/RCPT arguments through their
 * parsers.  The whole input is also given to the argument parsers and to xtext.
 * Input: a control byte (line limit, RCPT flags, piece size), then the stream. */
#include <stdint.h>

#include "fuzz_check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_parse.h"


static int is_printable(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	}
	return 1;
}

static void check_reply_text(enum smtp_param_error e, const char *err)
{
	CHECK(err != NULL);
	if (e != SMTP_PARAM_OK)
		CHECK(err[0] == '5' && err[1] == '.');
}

static void fuzz_mail(const char *arg, size_t len)
{
	struct mail_addr a;
	struct smtp_mail_params p;
	const char *err = NULL;
	enum smtp_param_error e = smtp_parse_mail(arg, len, &a, &p, &err);

	check_reply_text(e, err);
	if (e != SMTP_PARAM_OK)
		return;
	CHECK(p.size >= -1);
	CHECK(strlen(p.envid) <= SMTP_ENVID_MAX && is_printable(p.envid));
	CHECK(strlen(p.auth) <= SMTP_AUTH_MAX && is_printable(p.auth));
	if (a.utf8)
		CHECK(p.smtputf8);
	CHECK(a.is_null || a.domain[0] != '\0');
}

static void fuzz_rcpt(const char *arg, size_t len, unsigned flags)
{
	struct mail_addr a;
	struct smtp_rcpt_params p;
	const char *err = NULL;
	enum smtp_param_error e = smtp_parse_rcpt(arg, len, flags, &a, &p, &err);

	check_reply_text(e, err);
	if (e != SMTP_PARAM_OK)
		return;
	CHECK(!a.is_null);
	if (a.utf8)
		CHECK(flags & ADDR_ALLOW_UTF8);
	CHECK(p.notify <= 15);
	if (p.notify & SMTP_NOTIFY_NEVER)
		CHECK(p.notify == SMTP_NOTIFY_NEVER);
	CHECK(memchr(p.orcpt, '\0', sizeof(p.orcpt)) != NULL);
	if (p.orcpt[0] != '\0')
		CHECK(strncmp(p.orcpt, "rfc822;", 7) == 0 && strlen(p.orcpt) > 7 &&
		      strlen(p.orcpt) <= 7 + SMTP_ORCPT_MAX && is_printable(p.orcpt));
}

static void fuzz_line(const char *line, size_t len, unsigned rcpt_flags)
{
	char verb[16];
	const char *arg;
	size_t arg_len;

	memset(verb, 'x', sizeof(verb));
	if (smtp_parse_command(line, len, verb, &arg, &arg_len) < 0)
		return;
	size_t vlen = strnlen(verb, sizeof(verb));
	CHECK(vlen >= 1 && vlen <= 15);
	for (size_t i = 0; i < vlen; i++)
		CHECK(verb[i] >= 'A' && verb[i] <= 'Z');
	CHECK(arg >= line && arg + arg_len <= line + len);
	if (arg_len > 0)
		CHECK(arg[0] != ' ' && arg[arg_len - 1] != ' ' && arg[arg_len - 1] != '\t');
	if (strcmp(verb, "MAIL") == 0)
		fuzz_mail(arg, arg_len);
	else if (strcmp(verb, "RCPT") == 0)
		fuzz_rcpt(arg, arg_len, rcpt_flags);
}

/* Reads the stream through the line reader in pieces of `piece` bytes. */
static void fuzz_stream(const char *in, size_t len, size_t limit, size_t piece, unsigned rcpt_flags)
{
	struct smtp_line_reader r;
	size_t cap = limit + piece;
	char *buf = malloc(cap);
	size_t have = 0, off = 0;

	CHECK(buf != NULL);
	smtp_line_reader_init(&r, limit);
	while (off < len) {
		size_t n = len - off < piece ? len - off : piece;
		CHECK(have + n <= cap);
		memcpy(buf + have, in + off, n);
		have += n;
		off += n;
		for (;;) {
			const char *line;
			size_t line_len, used;
			enum smtp_line_status st = smtp_line_reader_next(&r, buf, have, &line,
									 &line_len, &used);
			CHECK(used <= have);
			if (st == SMTP_LINE_OK || st == SMTP_LINE_BARE_LF) {
				CHECK(line >= buf && line + line_len < buf + used);
				CHECK(line_len + 2 <= (limit < 3 ? 3 : limit) ||
				      st == SMTP_LINE_BARE_LF);
				CHECK(line[line_len + (st == SMTP_LINE_OK)] == '\n');
				CHECK(memchr(line, '\n', line_len) == NULL);
				if (st == SMTP_LINE_OK)
					fuzz_line(line, line_len, rcpt_flags);
			}
			memmove(buf, buf + used, have - used);
			have -= used;
			if (st == SMTP_LINE_NEED_MORE)
				break;
			CHECK(used > 0);
		}
		/* What the caller keeps is always less than one line's limit. */
		CHECK(have < (limit < 3 ? 3 : limit));
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[4] = { SMTP_LINE_MAX, 16, 3, 2048 };

	if (size < 1)
		return 0;
	size_t limit = limits[data[0] & 3];
	unsigned rcpt_flags = (data[0] >> 2) & 3;
	size_t piece = (size_t)(data[0] >> 4) * 7 + 1;
	size_t len = size - 1;
	/* Exactly len bytes, so ASan sees any read past the end. */
	char *in = malloc(len ? len : 1);
	CHECK(in != NULL);
	memcpy(in, data + 1, len);

	fuzz_stream(in, len, limit, piece, rcpt_flags);
	fuzz_stream(in, len, limit, 1, rcpt_flags);
	fuzz_line(in, len, rcpt_flags);
	fuzz_mail(in, len);
	fuzz_rcpt(in, len, rcpt_flags);

	/* xtext: decode, re-encode, decode again gives the same bytes. */
	char dec[256], enc[3 * 256 + 1], dec2[256];
	size_t n, n2;
	if (smtp_xtext_decode(in, len, dec, sizeof(dec), &n) == 0) {
		CHECK(n < sizeof(dec) && n <= len && dec[n] == '\0');
		int e = smtp_xtext_encode(dec, n, enc, sizeof(enc));
		CHECK(e >= 0 && (size_t)e <= len);
		CHECK(smtp_xtext_decode(enc, (size_t)e, dec2, sizeof(dec2), &n2) == 0);
		CHECK(n2 == n && memcmp(dec, dec2, n) == 0);
	}
	if (len <= 256) {
		int e = smtp_xtext_encode(in, len, enc, sizeof(enc));
		CHECK(e >= 0);
		CHECK(smtp_xtext_decode(enc, (size_t)e, dec2, sizeof(dec2), &n2) == 0 ||
		      len == 256);
	}
	free(in);
	return 0;
}
