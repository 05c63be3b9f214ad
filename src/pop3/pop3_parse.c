/* POP3 framing: see pop3_parse.h.
 *
 * Line ends: RFC 1939 3 says CRLF; a bare LF is accepted as well (POP3 has no
 * smuggling hazard: no command carries message data) and a CR before it is stripped. */
#include "pop3/pop3_parse.h"

#include "auth/sasl.h"

#include <string.h>

void pop3_line_reader_init(struct pop3_line_reader *lr, size_t limit)
{
	lr->limit = limit;
	lr->skipping = 0;
}

enum pop3_line_status pop3_line_next(struct pop3_line_reader *lr, const char *data, size_t len,
                                     struct slice *line_r, size_t *consumed_r)
{
	line_r->p = data;
	line_r->len = 0;
	*consumed_r = 0;
	const char *lf = len > 0 ? memchr(data, '\n', len) : NULL;
	if (lr->skipping) {
		if (lf == NULL) {
			*consumed_r = len;
			return POP3_LINE_NEED_MORE;
		}
		lr->skipping = 0;
		*consumed_r = (size_t)(lf - data) + 1;
		return POP3_LINE_TOO_LONG;
	}
	if (lf == NULL) {
		/* Limit checked on every call, not only at a newline: "limit octets + CR"
		 * may still become a valid line, one more cannot. */
		if (len > lr->limit + 1) {
			lr->skipping = 1;
			*consumed_r = len;
		}
		return POP3_LINE_NEED_MORE;
	}
	size_t n = (size_t)(lf - data);
	*consumed_r = n + 1;
	if (n > 0 && data[n - 1] == '\r')
		n--;
	if (n > lr->limit)
		return POP3_LINE_TOO_LONG;
	line_r->len = n;
	return POP3_LINE_OK;
}

enum pop3_parse_status pop3_parse_command(const char *line, size_t len, struct pop3_command *cmd_r)
{
	memset(cmd_r, 0, sizeof(*cmd_r));
	cmd_r->rest.p = line + len;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];
		if (ch < 0x20 || ch == 0x7f)
			return POP3_PARSE_BAD_CHAR;
	}
	size_t i = 0;
	while (i < len && line[i] == ' ')
		i++;
	if (i == len)
		return POP3_PARSE_EMPTY;
	size_t v = 0;
	while (i < len && line[i] != ' ') {
		char ch = line[i];
		if (ch >= 'a' && ch <= 'z')
			ch = (char)(ch - 'a' + 'A');
		if (ch < 'A' || ch > 'Z' || v >= POP3_VERB_MAX)
			return POP3_PARSE_BAD_VERB;
		cmd_r->verb[v++] = ch;
		i++;
	}
	cmd_r->verb[v] = '\0';
	if (i < len) {
		cmd_r->rest.p = line + i + 1;
		cmd_r->rest.len = len - i - 1;
	}
	while (i < len) {
		while (i < len && line[i] == ' ')
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && line[i] != ' ')
			i++;
		if (cmd_r->n_args < POP3_ARGS_MAX) {
			cmd_r->args[cmd_r->n_args].p = line + start;
			cmd_r->args[cmd_r->n_args].len = i - start;
		}
		if (cmd_r->n_args < 1000000)
			cmd_r->n_args++;
	}
	return POP3_PARSE_OK;
}

int pop3_parse_uint(struct slice s, uint32_t *n_r)
{
	if (s.len == 0 || s.len > 10)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s.p[i] - '0');
	}
	if (v > UINT32_MAX)
		return -1;
	*n_r = (uint32_t)v;
	return 0;
}

enum pop3_auth_status pop3_parse_auth_plain(const char *line, size_t len, char *authzid,
                                            char *authcid, char *passwd)
{
	authzid[0] = authcid[0] = passwd[0] = '\0';
	if (len == 1 && line[0] == '*')
		return POP3_AUTH_CANCEL;
	const char *error = NULL;
	if (sasl_plain_decode(line, len, authzid, authcid, passwd, &error) < 0)
		return POP3_AUTH_BAD;
	return POP3_AUTH_OK;
}

void pop3_stuffer_init(struct pop3_stuffer *st, int64_t body_lines)
{
	memset(st, 0, sizeof(*st));
	st->at_line_start = 1;
	st->body_lines = body_lines;
	/* TOP n 0 on a message whose header never ends sends the whole header. */
}

size_t pop3_stuffer_feed(struct pop3_stuffer *st, const char *in, size_t len, char *out,
                         size_t *consumed_r)
{
	size_t o = 0, i = 0;
	if (st->done) {
		*consumed_r = 0;
		return 0;
	}
	if (st->in_body && st->body_lines == 0) {
		st->done = 1;
		*consumed_r = 0;
		return 0;
	}
	while (i < len) {
		char ch = in[i++];
		if (st->at_line_start && ch == '.')
			out[o++] = '.';
		out[o++] = ch;
		if (ch == '\n') {
			st->at_line_start = 1;
			if (!st->in_body) {
				if (!st->line_has_text)
					st->in_body = 1;
			} else if (st->body_lines > 0) {
				st->body_lines--;
			}
			st->line_has_text = 0;
			if (st->in_body && st->body_lines == 0) {
				st->done = 1;
				break;
			}
		} else {
			st->at_line_start = 0;
			if (ch != '\r')
				st->line_has_text = 1;
		}
	}
	*consumed_r = i;
	return o;
}

size_t pop3_stuffer_finish(struct pop3_stuffer *st, char *out)
{
	size_t o = 0;
	if (!st->at_line_start) {
		out[o++] = '\r';
		out[o++] = '\n';
		st->at_line_start = 1;
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}
