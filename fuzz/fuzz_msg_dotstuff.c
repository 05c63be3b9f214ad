/* libFuzzer target for msg/dotstuff: the body is fed in pieces whose sizes come from
 * the input, and checked against the whole-input run and against simple reference
 * rules: output never longer than input, DONE exactly after the first CRLF "." CRLF
 * (or a first line "."), clean bodies decoded byte for byte, RAW mode untouched.
 * Input: mode/limit byte, 4 split-size bytes, then the body. */
#include <stdint.h>

#include "fuzz_check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg/dotstuff.h"


struct run {
	struct data_decoder d;
	char *out;
	size_t out_len;
	size_t consumed;
	int done;
};

static void run_feed(struct run *r, const char *in, size_t len, enum data_mode mode, size_t limit,
		     const uint8_t splits[4])
{
	size_t off = 0;
	int k = 0;

	data_decoder_init(&r->d, mode, limit);
	r->out_len = 0;
	r->done = 0;
	do {
		size_t piece = len - off;
		if (splits != NULL) {
			piece = (size_t)splits[k % 4] + (k % 3 == 0);
			k++;
		}
		if (piece > len - off)
			piece = len - off;
		/* A buffer of exactly piece bytes, so that ASan catches a read past it. */
		char *chunk = malloc(piece ? piece : 1);
		CHECK(chunk != NULL);
		memcpy(chunk, in + off, piece);
		size_t used = 99, n = 99;
		enum data_status st = data_decoder_feed(&r->d, chunk, piece, r->out + r->out_len,
							&used, &n);
		free(chunk);
		CHECK(used <= piece);
		CHECK(n <= piece);
		CHECK(n <= used);
		off += used;
		r->out_len += n;
		if (st == DATA_DONE) {
			CHECK(mode == DATA_MODE_DOT);
			r->done = 1;
			break;
		}
		CHECK(used == piece);
	} while (off < len);
	r->consumed = off;
	CHECK(r->d.body_size == r->out_len);
	CHECK(r->out_len <= r->consumed);
}

/* Where the message must end: after ".\r\n" as the first line, else after the first
 * "\r\n.\r\n"; 0 when it does not end. */
static size_t ref_end(const char *s, size_t len)
{
	if (len >= 3 && memcmp(s, ".\r\n", 3) == 0)
		return 3;
	for (size_t i = 0; i + 5 <= len; i++) {
		if (memcmp(s + i, "\r\n.\r\n", 5) == 0)
			return i + 5;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[4] = { 1000, 0, 5, 1 };

	if (size < 5)
		return 0;
	enum data_mode mode = data[0] & 1 ? DATA_MODE_RAW : DATA_MODE_DOT;
	size_t limit = limits[(data[0] >> 1) & 3];
	const uint8_t *splits = data + 1;
	const char *in = (const char *)data + 5;
	size_t len = size - 5;

	struct run whole, split;
	whole.out = malloc(len + 1);
	split.out = malloc(len + 1);
	CHECK(whole.out != NULL && split.out != NULL);
	run_feed(&whole, in, len, mode, limit, NULL);
	run_feed(&split, in, len, mode, limit, splits);

	/* Chunking never changes anything. */
	CHECK(whole.done == split.done);
	CHECK(whole.consumed == split.consumed);
	CHECK(whole.out_len == split.out_len);
	CHECK(memcmp(whole.out, split.out, whole.out_len) == 0);
	CHECK(whole.d.bare_lf == split.d.bare_lf);
	CHECK(whole.d.bare_cr == split.d.bare_cr);
	CHECK(whole.d.line_too_long == split.d.line_too_long);

	/* Reference: bare CR / LF in the consumed part; longest line. */
	size_t n = whole.consumed;
	int ref_lf = 0, ref_cr = 0;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			ref_lf = 1;
		if (in[i] == '\r' && i + 1 < n && in[i + 1] != '\n')
			ref_cr = 1;
	}

	if (mode == DATA_MODE_DOT) {
		size_t end = ref_end(in, len);
		CHECK(whole.done == (end != 0));
		if (whole.done)
			CHECK(whole.consumed == end);
		else
			CHECK(whole.consumed == len);
		CHECK(whole.d.bare_lf == ref_lf);
		/* A CR at the very end of the input may still be followed by an LF. */
		if (!ref_cr)
			CHECK(!whole.d.bare_cr);
		if (whole.d.bare_cr && !ref_cr)
			CHECK(0);
		if (!whole.d.bare_lf && !whole.d.bare_cr) {
			/* Clean: exactly the unstuffed lines, terminator excluded. */
			char *ref = malloc(len + 1);
			CHECK(ref != NULL);
			size_t body_end = whole.done ? whole.consumed - 3 : whole.consumed;
			size_t o = 0;
			int bol = 1;
			for (size_t i = 0; i < body_end; i++) {
				if (!(bol && in[i] == '.'))
					ref[o++] = in[i];
				bol = in[i] == '\n';
			}
			/* Unfinished, "." CR at a line start: the CR is held back until
			 * the next byte says whether it ends the message. */
			if (!whole.done && body_end >= 2 && in[body_end - 1] == '\r' &&
			    in[body_end - 2] == '.' && (body_end == 2 || in[body_end - 3] == '\n'))
				o--;
			CHECK(o == whole.out_len);
			CHECK(memcmp(ref, whole.out, o) == 0);
			free(ref);
		}
	} else {
		/* RAW: everything, untouched. */
		CHECK(!whole.done && whole.consumed == len);
		CHECK(whole.out_len == len && memcmp(whole.out, in, len) == 0);
		CHECK(whole.d.bare_lf == ref_lf);
		CHECK(whole.d.bare_cr == ref_cr);
		size_t cur = 0, longest = 0;
		for (size_t i = 0; i < len; i++) {
			cur++;
			if (cur > longest)
				longest = cur;
			if (in[i] == '\n')
				cur = 0;
		}
		CHECK(whole.d.line_too_long == (limit != 0 && longest > limit));
		int clean = data_decoder_raw_finish(&whole.d) == 0;
		int trailing_cr = len > 0 && in[len - 1] == '\r';
		CHECK(whole.d.bare_cr == (ref_cr || trailing_cr));
		CHECK(clean == !(whole.d.bare_lf || whole.d.bare_cr || whole.d.line_too_long));
		CHECK(data_decoder_at_line_start(&whole.d) == (len == 0 || in[len - 1] == '\n') ||
		      whole.d.bare_lf);
	}
	free(whole.out);
	free(split.out);
	return 0;
}
