/* libFuzzer target for imap/imap_parse: the input is a client's byte stream, read
 * through imap_reader_feed in random-sized pieces (and again a byte at a time: both must
 * give the same events) and through imap_reader_feed_line; every command goes through
 * imap_command_parse, and its arguments through the shared grammars: sequence sets
 * (random '*'), dates, modified UTF-7 both ways (round trips where valid) and
 * imap_write_string (parsed back).
 * Input: two control bytes (limits; random seed), then the stream. */
#include <stdint.h>

#include "fuzz_check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/imap_parse.h"

#define ARGS_CHECKED_MAX 64 /* per command: enough to reach every kind, keeps runs fast */

static uint32_t rng_state;

static uint32_t rng(void)
{
	uint32_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return rng_state = x;
}

static int tag_ok(const char *t)
{
	size_t n = strnlen(t, 64);
	CHECK(n < 64);
	if (strcmp(t, "*") == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\+", c) != NULL)
			return 0;
	}
	return n > 0;
}

/* ---- the grammars on one string ---- */

static void fuzz_seqset(const char *s, size_t len)
{
	struct imap_range *r;
	size_t n;
	uint32_t star = rng() % 4 == 0 ? 0 : rng() % 3 == 0 ? UINT32_MAX : rng() % 1000 + 1;

	if (imap_seqset_parse(s, len, star, &r, &n) < 0) {
		CHECK(r == NULL && n == 0);
		return;
	}
	CHECK(n >= 1 && n <= 10000);
	for (size_t i = 0; i < n; i++) {
		CHECK(r[i].lo <= r[i].hi);
		if (i > 0)
			CHECK(r[i].lo > r[i - 1].hi && r[i].lo - 1 > r[i - 1].hi);
		CHECK(imap_seqset_contains(r, n, r[i].lo));
		CHECK(imap_seqset_contains(r, n, r[i].hi));
		if (r[i].lo > 0)
			CHECK(!imap_seqset_contains(r, n, r[i].lo - 1));
		if (r[i].hi < UINT32_MAX)
			CHECK(!imap_seqset_contains(r, n, r[i].hi + 1));
	}
	free(r);
}

static void fuzz_dates(const char *s, size_t len)
{
	int64_t t, t2;
	int tz, tz2;
	char out[32];

	if (imap_date_parse(s, len, &t) == 0) {
		CHECK(t % 86400 == 0);
		imap_datetime_format(t, 0, out);
		CHECK(strlen(out) == 26);
		CHECK(imap_datetime_parse(out, 26, &t2, &tz2) == 0 && t2 == t && tz2 == 0);
	}
	if (imap_datetime_parse(s, len, &t, &tz) == 0) {
		CHECK(tz >= -(23 * 60 + 59) && tz <= 23 * 60 + 59);
		imap_datetime_format(t, tz, out);
		CHECK(strlen(out) == 26);
		/* Round trip unless clamped at year 0 or 9999. */
		if (imap_datetime_parse(out, 26, &t2, &tz2) == 0 && t2 != t)
			CHECK(strncmp(out + 7, "0000", 4) == 0 || strncmp(out + 7, "9999", 4) == 0);
	}
}

static void fuzz_mutf7(const char *s, size_t len)
{
	size_t cap1 = 2 * len + 1, cap2 = 6 * len + 8;
	char *a = malloc(cap1 > cap2 ? cap1 : cap2), *b = malloc(cap2);

	CHECK(a != NULL && b != NULL);
	/* mUTF-7 -> UTF-8 -> the same mUTF-7 (only canonical input is accepted). */
	if (imap_mutf7_to_utf8(s, len, a, cap1) == 0) {
		size_t al = strlen(a);
		CHECK(imap_utf8_to_mutf7(a, al, b, cap2) == 0);
		CHECK(strlen(b) == len && memcmp(b, s, len) == 0);
	}
	/* UTF-8 -> mUTF-7 -> the same UTF-8. */
	if (imap_utf8_to_mutf7(s, len, b, cap2) == 0) {
		size_t bl = strlen(b);
		for (size_t i = 0; i < bl; i++)
			CHECK(b[i] >= 0x20 && b[i] <= 0x7e);
		CHECK(memchr(s, '\0', len) == NULL);
		CHECK(imap_mutf7_to_utf8(b, bl, a, 2 * bl + 1) == 0);
		CHECK(strlen(a) == len && memcmp(a, s, len) == 0);
	}
	free(a);
	free(b);
}

/* Written as a string and parsed back as an argument, s is s again. */
static void fuzz_write_string(const char *s, size_t len, int utf8)
{
	struct buf out;
	struct imap_command cmd;
	const char *err;

	buf_init(&out, 0);
	CHECK(buf_append(&out, "t X ", 4) == 0);
	CHECK(imap_write_string(&out, s, len, utf8) == 0);
	if (out.data[4] == '"') {
		CHECK(len < 1024);
		for (size_t i = 4; i < out.len; i++) {
			unsigned char c = (unsigned char)out.data[i];
			CHECK(c != '\r' && c != '\n' && c != '\0' && (utf8 || c < 0x80));
		}
	} else {
		CHECK(out.data[4] == '{');
	}
	if (memchr(s, '\0', len) == NULL) {
		struct slice sl = { out.data, out.len };
		CHECK(imap_command_parse(sl, &cmd, &err) == IMAP_PARSE_OK);
		CHECK(cmd.n_args == 1 && cmd.args[0].len == len &&
		      memcmp(cmd.args[0].s, s, len) == 0);
		CHECK(cmd.args[0].type ==
		      (out.data[4] == '"' ? IMAP_ARG_STRING : IMAP_ARG_LITERAL));
		imap_command_free(&cmd);
	}
	buf_deinit(&out);
	/* A limit that the string does not fit leaves the buffer as it was. */
	buf_init(&out, 3);
	CHECK(buf_append(&out, "ab", 2) == 0);
	if (imap_write_nstring(&out, s, len, utf8) < 0)
		CHECK(out.len == 2 && strcmp(out.data, "ab") == 0);
	buf_deinit(&out);
}

static void fuzz_grammars(const char *s, size_t len)
{
	fuzz_seqset(s, len);
	fuzz_dates(s, len);
	fuzz_mutf7(s, len);
	fuzz_write_string(s, len, (int)(rng() & 1));
}

/* ---- the argument tree ---- */

static size_t walk(const struct imap_arg *a, size_t n, int depth, size_t *checked)
{
	size_t nodes = n;

	CHECK(depth <= 32);
	for (size_t i = 0; i < n; i++) {
		switch (a[i].type) {
		case IMAP_ARG_LIST:
			CHECK(a[i].s == NULL && (a[i].n == 0) == (a[i].list == NULL));
			nodes += walk(a[i].list, a[i].n, depth + 1, checked);
			continue;
		case IMAP_ARG_ATOM:
			CHECK(a[i].len > 0 && memchr(a[i].s, '\0', a[i].len) == NULL);
			break;
		case IMAP_ARG_NIL:
			CHECK(a[i].len == 3);
			break;
		case IMAP_ARG_STRING:
		case IMAP_ARG_LITERAL:
			CHECK(memchr(a[i].s, '\0', a[i].len) == NULL);
			break;
		case IMAP_ARG_LITERAL8:
			break;
		default:
			CHECK(0);
		}
		CHECK(a[i].s != NULL && a[i].s[a[i].len] == '\0');
		CHECK(a[i].list == NULL && a[i].n == 0);
		CHECK(imap_arg_is_nstring(&a[i]) == (a[i].type != IMAP_ARG_LITERAL8));
		if ((*checked)++ < ARGS_CHECKED_MAX)
			fuzz_grammars(a[i].s, a[i].len);
	}
	return nodes;
}

static void fuzz_parse(struct slice line, const char *reader_tag)
{
	struct imap_command cmd;
	const char *err = "unset";
	size_t checked = 0;
	enum imap_parse_status st = imap_command_parse(line, &cmd, &err);

	if (st == IMAP_PARSE_NO_TAG) {
		CHECK(err != NULL && cmd.args == NULL && cmd.mem == NULL);
		if (reader_tag != NULL)
			CHECK(strcmp(reader_tag, "*") == 0);
		return;
	}
	CHECK(tag_ok(cmd.tag) && strcmp(cmd.tag, "*") != 0);
	if (reader_tag != NULL)
		CHECK(strcmp(reader_tag, cmd.tag) == 0);
	if (st == IMAP_PARSE_BAD) {
		CHECK(err != NULL && strlen(err) > 0 && strlen(err) < 64);
		CHECK(cmd.args == NULL && cmd.n_args == 0 && cmd.mem == NULL);
		return;
	}
	CHECK(st == IMAP_PARSE_OK && err == NULL);
	size_t nl = strnlen(cmd.name, 32);
	CHECK(nl > 0 && nl < 32);
	for (size_t i = 0; i < nl; i++)
		CHECK(!(cmd.name[i] >= 'a' && cmd.name[i] <= 'z'));
	CHECK((cmd.n_args == 0) == (cmd.args == NULL));
	CHECK(walk(cmd.args, cmd.n_args, 0, &checked) <= 100000);
	imap_command_free(&cmd);
	CHECK(cmd.mem == NULL && cmd.args == NULL);
}

/* ---- the reader ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * 1099511628211ULL;
	return h;
}

/* Feeds the stream as the engine would, in pieces of `piece` bytes (0: random sizes);
 * returns a hash of every event, which must not depend on the piece sizes. */
static uint64_t fuzz_stream(const struct imap_limits *lim, const char *in, size_t len,
			    size_t piece, int line_mode, int parse)
{
	struct imap_reader r;
	uint64_t h = 14695981039346656037ULL;
	size_t off = 0;

	imap_reader_init(&r, lim);
	while (off < len) {
		size_t n = piece != 0 ? piece : 1 + rng() % (rng() % 8 == 0 ? 4096 : 24);
		if (n > len - off)
			n = len - off;
		size_t used = n + 1;
		enum imap_read_status st = line_mode ? imap_reader_feed_line(&r, in + off, n, &used)
						     : imap_reader_feed(&r, in + off, n, &used);
		CHECK(used <= n);
		CHECK(r.cmd.len <= lim->command_max && r.cmd.cap <= lim->command_max + 1);
		off += used;
		if (st == IMAP_READ_NEED_MORE) {
			CHECK(used == n);
			continue;
		}
		h = fnv(h, &st, sizeof(st));
		h = fnv(h, r.tag, strlen(r.tag) + 1);
		if (st == IMAP_READ_TOO_BIG_FATAL)
			break;
		CHECK(used > 0);
		if (!line_mode && st != IMAP_READ_COMMAND)
			CHECK(tag_ok(r.tag));
		if (line_mode)
			CHECK(st == IMAP_READ_COMMAND || st == IMAP_READ_BAD_LINE);
		if (st == IMAP_READ_TOO_BIG)
			CHECK(r.cmd.cap <= 64 * 1024);
		if (st == IMAP_READ_CONTINUE) {
			CHECK(!line_mode && r.literal_left <= lim->literal_max);
			continue;
		}
		if (st == IMAP_READ_COMMAND) {
			struct slice c = imap_reader_command(&r);
			CHECK(c.len <= lim->command_max && c.p[c.len] == '\0');
			h = fnv(h, c.p, c.len);
			if (!line_mode) {
				CHECK(c.len > 0 && tag_ok(r.tag));
				if (parse)
					fuzz_parse(c, r.tag);
			} else {
				CHECK(memchr(c.p, '\n', c.len) == NULL &&
				      memchr(c.p, '\0', c.len) == NULL);
				if (parse)
					fuzz_parse(c, NULL);
			}
		}
		/* Either way of ending a command must do. */
		if (rng() & 1)
			imap_reader_reset(&r);
	}
	imap_reader_deinit(&r);
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t line_maxes[4] = { 8192, 64, 16, 1000 };
	static const size_t command_maxes[4] = { 1 << 20, 300, 8192, 70000 };

	if (size < 2)
		return 0;
	struct imap_limits lim = {
		.line_max = line_maxes[data[0] & 3],
		.literal_max = (data[0] & 4) ? 10 : 100000,
		.command_max = command_maxes[(data[0] >> 3) & 3],
		.nonsync_max = (data[0] & 32) ? 16 : 4096,
		.literal_plus = (data[0] >> 6) & 1,
	};
	rng_state = 0x9e3779b9u ^ data[1] ^ (uint32_t)data[0] << 8;
	size_t len = size - 2;
	/* Exactly len bytes, so ASan sees any read past the end. */
	char *in = malloc(len ? len : 1);
	CHECK(in != NULL);
	memcpy(in, data + 2, len);

	uint64_t h1 = fuzz_stream(&lim, in, len, 0, 0, 1);
	uint64_t h2 = fuzz_stream(&lim, in, len, 1, 0, 0);
	CHECK(h1 == h2);
	h1 = fuzz_stream(&lim, in, len, 0, 1, data[0] >> 7);
	h2 = fuzz_stream(&lim, in, len, 1, 1, 0);
	CHECK(h1 == h2);

	struct slice whole = { in, len };
	fuzz_parse(whole, NULL);
	if (len <= 4096)
		fuzz_grammars(in, len);
	free(in);
	return 0;
}
