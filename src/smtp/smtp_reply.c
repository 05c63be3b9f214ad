/* The client's reply parser (RFC 5321 4.2).
 *
 * Leniency, and where it stops.  A server's reply lines should end in CRLF (RFC 5321
 * 2.3.8), but servers and middleboxes that end them in a bare LF are common enough
 * that refusing them would make mail undeliverable for no safety gain: unlike DATA on
 * the server side (the smuggling defence in msg/dotstuff.c), a reply line cannot smuggle
 * anything, since its end is only a framing question between this parser and its
 * server.  So LF ends a line and a CR just before it is dropped; a CR elsewhere is a
 * control character of the text.  Lines may be longer than the 512 octets of RFC 5321
 * 4.5.3.1.5 (up to SMTP_REPLY_LINE_MAX), because verbose servers exceed it; everything
 * else that breaks the grammar of 4.2 is an error, since a client that guesses at a
 * reply's meaning could take a rejection for an acceptance. */
#include "smtp/smtp_reply.h"

#include <string.h>

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
}

static void reply_clear(struct smtp_reply *r)
{
	r->code = 0;
	r->enhanced[0] = '\0';
	r->text[0] = '\0';
	r->text_len = 0;
	r->n_lines = 0;
	r->truncated = 0;
	r->bare_lf = 0;
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* 1-3 digits at s[*i..len); advances *i.  0 or -1. */
static int digits_1_3(const char *s, size_t len, size_t *i)
{
	size_t start = *i;
	while (*i < len && *i - start < 3 && is_digit(s[*i]))
		(*i)++;
	return *i > start ? 0 : -1;
}

size_t smtp_enhanced_code_len(const char *s, size_t len)
{
	size_t i = 2;
	if (len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	if (digits_1_3(s, len, &i) < 0 || i >= len || s[i] != '.')
		return 0;
	i++;
	if (digits_1_3(s, len, &i) < 0)
		return 0;
	/* "5.1.1234" or "5.1.1x" are not codes: the code must end at a space or the end. */
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

/* Removes a leading enhanced code equal to code (and the spaces after it). */
static void strip_code(const char **text, size_t *len, const char *code)
{
	size_t n = smtp_enhanced_code_len(*text, *len);
	if (n == 0 || n != strlen(code) || memcmp(*text, code, n) != 0)
		return;
	while (n < *len && (*text)[n] == ' ')
		n++;
	*text += n;
	*len -= n;
}

/* Appends a line's text to the joined text, cleaned for logs and DSNs. */
static void append_text(struct smtp_reply *r, const char *s, size_t len)
{
	struct smtp_reply_line *l = &r->lines[r->n_lines];
	if (r->text_len > 0 && len > 0) {
		if (r->text_len < SMTP_REPLY_TEXT_MAX)
			r->text[r->text_len++] = ' ';
		else
			r->truncated = 1;
	}
	size_t room = SMTP_REPLY_TEXT_MAX - r->text_len;
	size_t n = len;
	if (n > room) {
		n = room;
		r->truncated = 1;
	}
	l->off = (unsigned short)r->text_len;
	l->len = (unsigned short)n;
	char *o = r->text + r->text_len;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\t')
			o[i] = ' ';
		else if (c < 0x20 || c == 0x7f)
			o[i] = '?';
		else
			o[i] = (char)c;
	}
	r->text_len += n;
	r->text[r->text_len] = '\0';
}

/* Takes one line (without its line end) into the reply.  0 with *last_r, or -1 with
 * *why_r. */
static int take_line(struct smtp_reply *r, const char *s, size_t n, int bare_lf, int *last_r,
                     const char **why_r)
{
	if (n < 3 || !is_digit(s[0]) || !is_digit(s[1]) || !is_digit(s[2])) {
		*why_r =
		    n == 0 ? "empty reply line" : "reply line does not start with a 3-digit code";
		return -1;
	}
	/* RFC 5321 4.2: 2yz-5yz; 1yz is never used by SMTP. */
	if (s[0] < '2' || s[0] > '5') {
		*why_r = "reply code out of range (not 2xx-5xx)";
		return -1;
	}
	int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	int last;
	if (n == 3 || s[3] == ' ') {
		last = 1;
	} else if (s[3] == '-') {
		last = 0;
	} else {
		*why_r = "reply code not followed by space or hyphen";
		return -1;
	}
	if (memchr(s, '\0', n) != NULL) {
		*why_r = "NUL in a reply line";
		return -1;
	}
	/* RFC 5321 4.2.1: every line of a multi-line reply carries the same code. */
	if (r->n_lines > 0 && code != r->code) {
		*why_r = "reply code differs between lines of a multi-line reply";
		return -1;
	}
	if (r->n_lines >= SMTP_REPLY_LINES_MAX) {
		*why_r = "too many lines in one reply";
		return -1;
	}
	const char *text = n > 4 ? s + 4 : s + n;
	size_t tlen = n > 4 ? n - 4 : 0;
	if (r->n_lines == 0) {
		r->code = code;
		/* RFC 2034 3 / RFC 3463 2: the class of the enhanced code repeats the
		 * reply's first digit; text that merely looks like one ("250 2.0 ...",
		 * or "5.0.0" on a 250) is left alone as text. */
		size_t el = smtp_enhanced_code_len(text, tlen);
		if (el > 0 && text[0] == s[0]) {
			memcpy(r->enhanced, text, el);
			r->enhanced[el] = '\0';
		}
	}
	if (r->enhanced[0] != '\0')
		strip_code(&text, &tlen, r->enhanced);
	append_text(r, text, tlen);
	if (bare_lf)
		r->bare_lf = 1;
	r->n_lines++;
	*last_r = last;
	return 0;
}

static enum smtp_reply_status reply_fail(struct smtp_reply_parser *p, const char *why,
                                         size_t *consumed_r, const char **error_r)
{
	p->error = why;
	*consumed_r = 0;
	*error_r = why;
	return SMTP_REPLY_ERROR;
}

enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p, const char *in, size_t len,
                                        size_t *consumed_r, const char **error_r)
{
	*consumed_r = 0;
	if (p->error != NULL) {
		*error_r = p->error;
		return SMTP_REPLY_ERROR;
	}
	if (p->complete) {
		reply_clear(&p->reply);
		p->complete = 0;
		p->scanned = 0;
	}
	size_t pos = 0;
	for (;;) {
		const char *line = in + pos;
		size_t avail = len - pos;
		/* Only the first pending line can have been searched by an earlier call;
		 * a caller that handed in less than before is searched again from 0. */
		size_t from = p->scanned <= avail ? p->scanned : 0;
		const char *lf = memchr(line + from, '\n', avail - from);
		if (lf == NULL) {
			/* Bounded on every call, not only at a line end: a server that
			 * never sends LF costs at most SMTP_REPLY_LINE_MAX of buffer. */
			if (avail >= SMTP_REPLY_LINE_MAX)
				return reply_fail(p, "reply line too long", consumed_r, error_r);
			p->scanned = avail;
			*consumed_r = pos;
			return SMTP_REPLY_NEED_MORE;
		}
		size_t total = (size_t)(lf - line) + 1;
		if (total > SMTP_REPLY_LINE_MAX)
			return reply_fail(p, "reply line too long", consumed_r, error_r);
		p->scanned = 0;
		size_t n = total - 1;
		int bare = 1;
		if (n > 0 && line[n - 1] == '\r') {
			n--;
			bare = 0;
		}
		int last = 0;
		const char *why = NULL;
		if (take_line(&p->reply, line, n, bare, &last, &why) < 0)
			return reply_fail(p, why, consumed_r, error_r);
		pos += total;
		if (last) {
			p->complete = 1;
			*consumed_r = pos;
			return SMTP_REPLY_DONE;
		}
	}
}

const char *smtp_reply_line(const struct smtp_reply *r, int i, size_t *len_r)
{
	*len_r = r->lines[i].len;
	return r->text + r->lines[i].off;
}
