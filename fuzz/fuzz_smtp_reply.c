/* libFuzzer target for smtp/smtp_reply: the input is a server's byte stream, read
 * through the reply parser as the client engine does (pieces appended to a bounded
 * buffer, consumed bytes dropped), once in pieces whose size comes from the input and
 * once a byte at a time.  Both runs must report the same replies and the same error;
 * every reply must satisfy the header's contract (code range, enhanced code shape and
 * class, clean and bounded text, lines inside the text).
 * Input: a control byte (piece size), then the stream. */
#include <stdint.h>

#include "fuzz_check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_reply.h"

struct outcome {
	uint64_t hash; /* over every reply reported, in order */
	int replies;
	const char *error; /* static text, or NULL */
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static void check_reply(const struct smtp_reply *r)
{
	CHECK(r->code >= 200 && r->code <= 599);
	CHECK(r->n_lines >= 1 && r->n_lines <= SMTP_REPLY_LINES_MAX);
	CHECK(r->text_len <= SMTP_REPLY_TEXT_MAX);
	CHECK(r->text[r->text_len] == '\0' && strlen(r->text) == r->text_len);
	for (size_t i = 0; i < r->text_len; i++) {
		unsigned char c = (unsigned char)r->text[i];
		CHECK(c >= 0x20 && c != 0x7f);
	}
	size_t el = strlen(r->enhanced);
	CHECK(el < sizeof(r->enhanced));
	if (el > 0) {
		CHECK(smtp_enhanced_code_len(r->enhanced, el) == el);
		CHECK(r->enhanced[0] == '0' + r->code / 100);
	}
	size_t prev_end = 0;
	for (int i = 0; i < r->n_lines; i++) {
		size_t n;
		const char *l = smtp_reply_line(r, i, &n);
		CHECK(l >= r->text && l + n <= r->text + r->text_len);
		CHECK((size_t)(l - r->text) >= prev_end);
		prev_end = (size_t)(l - r->text) + n;
	}
	if (!r->truncated)
		CHECK(prev_end == r->text_len);
}

static void run(const char *in, size_t len, size_t piece, struct outcome *o)
{
	struct smtp_reply_parser p;
	/* What the engine may hold: less than a line, plus one piece. */
	size_t cap = SMTP_REPLY_LINE_MAX + piece;
	char *buf = malloc(cap);
	size_t have = 0, off = 0;

	CHECK(buf != NULL);
	memset(o, 0, sizeof(*o));
	o->hash = 14695981039346656037ULL;
	smtp_reply_parser_init(&p);
	while (off < len && o->error == NULL) {
		size_t n = len - off < piece ? len - off : piece;
		CHECK(have + n <= cap);
		memcpy(buf + have, in + off, n);
		have += n;
		off += n;
		for (int guard = 0;; guard++) {
			CHECK(guard <= SMTP_REPLY_LINE_MAX + (int)piece);
			size_t used = (size_t)-1;
			const char *why = NULL;
			enum smtp_reply_status st = smtp_reply_parse(&p, buf, have, &used, &why);
			CHECK(used <= have);
			if (st == SMTP_REPLY_ERROR) {
				CHECK(why != NULL && why[0] != '\0' && used == 0);
				o->error = why;
				/* Sticky. */
				const char *why2 = NULL;
				CHECK(smtp_reply_parse(&p, buf, have, &used, &why2) ==
				      SMTP_REPLY_ERROR);
				CHECK(why2 == why);
				break;
			}
			memmove(buf, buf + used, have - used);
			have -= used;
			if (st == SMTP_REPLY_NEED_MORE)
				break;
			CHECK(st == SMTP_REPLY_DONE && used > 0);
			const struct smtp_reply *r = &p.reply;
			check_reply(r);
			o->replies++;
			o->hash = fnv(o->hash, &r->code, sizeof(r->code));
			o->hash = fnv(o->hash, r->enhanced, strlen(r->enhanced) + 1);
			o->hash = fnv(o->hash, r->text, r->text_len + 1);
			o->hash = fnv(o->hash, &r->n_lines, sizeof(r->n_lines));
			o->hash = fnv(o->hash, r->lines, sizeof(r->lines[0]) * (size_t)r->n_lines);
		}
		/* A partial line is all that is ever kept back. */
		if (o->error == NULL)
			CHECK(have < SMTP_REPLY_LINE_MAX);
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] * 17 + 1;
	size_t len = size - 1;
	/* Exactly len bytes, so ASan sees any read past the end. */
	char *in = malloc(len ? len : 1);
	CHECK(in != NULL);
	memcpy(in, data + 1, len);

	struct outcome a, b;
	run(in, len, piece, &a);
	run(in, len, 1, &b);
	CHECK(a.replies == b.replies);
	CHECK(a.hash == b.hash);
	CHECK((a.error == NULL) == (b.error == NULL));
	if (a.error != NULL)
		CHECK(strcmp(a.error, b.error) == 0);

	/* The enhanced-code scanner alone, on the raw input. */
	size_t el = smtp_enhanced_code_len(in, len);
	CHECK(el == 0 || (el >= 5 && el <= 9 && el <= len));
	free(in);
	return 0;
}
