/* libFuzzer target for pop3/pop3_parse: the input is a client's byte stream, read
 * through the line reader in pieces (as the engine would, with a bounded buffer); each
 * line goes through pop3_parse_command(), arguments through pop3_parse_uint() and AUTH
 * PLAIN responses through pop3_parse_auth_plain().  The whole input is also sent
 * through the dot-stuffing writer as a message (RETR and TOP), and the RETR form is
 * decoded again with msg/dotstuff to check that it comes back byte for byte.
 * Input: a control byte (line limit, piece size, TOP's line count), then the stream. */
#include <stdint.h>

#include "fuzz_check.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg/dotstuff.h"
#include "pop3/pop3_parse.h"

static void fuzz_line(const char *line, size_t len)
{
	struct pop3_command cmd;
	enum pop3_parse_status st = pop3_parse_command(line, len, &cmd);
	if (st != POP3_PARSE_OK)
		return;
	size_t vlen = strlen(cmd.verb);
	CHECK(vlen >= 1 && vlen <= POP3_VERB_MAX);
	for (size_t i = 0; i < vlen; i++)
		CHECK(cmd.verb[i] >= 'A' && cmd.verb[i] <= 'Z');
	CHECK(cmd.n_args >= 0);
	CHECK(cmd.rest.p >= line && cmd.rest.p + cmd.rest.len <= line + len);
	for (int i = 0; i < cmd.n_args && i < POP3_ARGS_MAX; i++) {
		struct slice a = cmd.args[i];
		CHECK(a.len > 0 && a.p >= line && a.p + a.len <= line + len);
		CHECK(memchr(a.p, ' ', a.len) == NULL);
		uint32_t n;
		if (pop3_parse_uint(a, &n) == 0) {
			/* The digits, without leading zeros, are the value. */
			char buf[16];
			int k = snprintf(buf, sizeof(buf), "%" PRIu32, n);
			size_t z = 0;
			while (z + 1 < a.len && a.p[z] == '0')
				z++;
			CHECK((size_t)k == a.len - z && memcmp(buf, a.p + z, a.len - z) == 0);
		}
	}
	if (strcmp(cmd.verb, "AUTH") == 0 && cmd.n_args == 2) {
		char authzid[256], authcid[256], passwd[256];
		enum pop3_auth_status as =
		    pop3_parse_auth_plain(cmd.args[1].p, cmd.args[1].len, authzid, authcid, passwd);
		if (as == POP3_AUTH_OK) {
			CHECK(strlen(authcid) > 0 && strlen(authcid) <= 255);
			CHECK(strlen(passwd) > 0 && strlen(passwd) <= 255);
			CHECK(strlen(authzid) <= 255);
		} else {
			CHECK(authcid[0] == '\0' && passwd[0] == '\0');
		}
	}
}

static void fuzz_stream(const char *in, size_t len, size_t limit, size_t piece)
{
	struct pop3_line_reader lr;
	size_t cap = limit + 2 + piece;
	char *buf = malloc(cap);
	size_t have = 0, off = 0;
	CHECK(buf != NULL);
	pop3_line_reader_init(&lr, limit);
	while (off < len) {
		size_t n = len - off < piece ? len - off : piece;
		/* The engine's buffer is bounded: the reader must have freed room. */
		CHECK(have + n <= cap);
		memcpy(buf + have, in + off, n);
		have += n;
		off += n;
		for (;;) {
			struct slice line;
			size_t used = 0;
			enum pop3_line_status st = pop3_line_next(&lr, buf, have, &line, &used);
			CHECK(used <= have);
			if (st == POP3_LINE_OK) {
				CHECK(line.p == buf && line.len <= limit && line.len < used);
				CHECK(buf[used - 1] == '\n');
				CHECK(memchr(line.p, '\n', line.len) == NULL);
				fuzz_line(line.p, line.len);
			} else if (st == POP3_LINE_TOO_LONG) {
				CHECK(used > 0 && buf[used - 1] == '\n');
			} else if (used == 0) {
				CHECK(have <= limit + 1);
			}
			memmove(buf, buf + used, have - used);
			have -= used;
			if (st == POP3_LINE_NEED_MORE)
				break;
		}
	}
	free(buf);
}

/* Stuffs the message in pieces; returns the answer (caller frees) and its length. */
static char *stuff(const char *in, size_t len, int64_t lines, size_t piece, size_t *out_len_r)
{
	struct pop3_stuffer st;
	char *out = malloc(2 * len + 8);
	size_t o = 0, off = 0;
	CHECK(out != NULL);
	pop3_stuffer_init(&st, lines);
	while (off < len && !st.done) {
		size_t n = len - off < piece ? len - off : piece;
		size_t used = 0;
		o += pop3_stuffer_feed(&st, in + off, n, out + o, &used);
		CHECK(used <= n);
		CHECK(used == n || st.done);
		off += used;
	}
	CHECK(o <= 2 * off);
	o += pop3_stuffer_finish(&st, out + o);
	*out_len_r = o;
	return out;
}

static void fuzz_stuffer(const char *in, size_t len, int64_t lines, size_t piece)
{
	size_t retr_len, top_len;
	char *retr = stuff(in, len, -1, piece, &retr_len);
	char *top = stuff(in, len, lines, piece, &top_len);
	CHECK(retr_len >= 3 && memcmp(retr + retr_len - 3, ".\r\n", 3) == 0);
	/* TOP is RETR's answer, or a prefix of it cut after a line end, then ".\r\n". */
	CHECK(top_len >= 3 && memcmp(top + top_len - 3, ".\r\n", 3) == 0);
	if (top_len == retr_len)
		CHECK(memcmp(top, retr, top_len) == 0);
	else
		CHECK(top_len < retr_len && memcmp(top, retr, top_len - 3) == 0 &&
		      (top_len == 3 || top[top_len - 4] == '\n'));

	/* The RETR answer decodes back to the message (plus the CRLF the writer adds to a
	 * message that does not end with one) when the message has clean line ends. */
	struct data_decoder d;
	data_decoder_init(&d, DATA_MODE_DOT, 0);
	char *dec = malloc(retr_len + 1);
	CHECK(dec != NULL);
	size_t consumed = 0, dec_len = 0;
	enum data_status ds = data_decoder_feed(&d, retr, retr_len, dec, &consumed, &dec_len);
	if (!d.bare_lf && !d.bare_cr) {
		CHECK(ds == DATA_DONE && consumed == retr_len);
		int ends_crlf = len >= 2 && in[len - 2] == '\r' && in[len - 1] == '\n';
		if (len == 0 || ends_crlf) {
			CHECK(dec_len == len && memcmp(dec, in, len) == 0);
		} else {
			CHECK(dec_len == len + 2 && memcmp(dec, in, len) == 0);
		}
	}
	free(dec);
	free(retr);
	free(top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	const char *in = (const char *)data + 1;
	size_t len = size - 1;
	size_t limit = (ctl & 1) ? POP3_AUTH_LINE_MAX : POP3_LINE_MAX;
	static const size_t pieces[] = {1, 2, 7, 64, 300, 4096, 65536, 3};
	size_t piece = pieces[(ctl >> 1) & 7];
	fuzz_stream(in, len, limit, piece);
	fuzz_stuffer(in, len, (ctl >> 4) & 7, piece);
	return 0;
}
