#include "smtp/smtp_parse.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

/* ---- command lines ---- */

void smtp_line_reader_init(struct smtp_line_reader *r, size_t limit)
{
	r->limit = limit;
	smtp_line_reader_reset(r);
}

void smtp_line_reader_reset(struct smtp_line_reader *r)
{
	r->scanned = 0;
	r->skipping = 0;
}

enum smtp_line_status smtp_line_reader_next(struct smtp_line_reader *r, const char *in, size_t len,
					    const char **line_r, size_t *line_len_r,
					    size_t *consumed_r)
{
	size_t off = 0;
	const char *lf;

	*line_r = NULL;
	*line_len_r = 0;
	*consumed_r = 0;
	if (r->skipping) {
		lf = memchr(in, '\n', len);
		if (lf == NULL) {
			*consumed_r = len;
			return SMTP_LINE_NEED_MORE;
		}
		off = (size_t)(lf - in) + 1;
		r->skipping = 0;
		r->scanned = 0;
	}

	const char *p = in + off;
	size_t n = len - off;
	size_t limit = r->limit < 3 ? 3 : r->limit;
	size_t upto = n < limit ? n : limit;
	/* Resume where the last call stopped, so that input trickling in a byte at a
	 * time costs linear, not quadratic, time; a caller that broke the contract
	 * (less input than before) gets a full rescan. */
	size_t from = r->scanned <= upto ? r->scanned : 0;

	lf = from < upto ? memchr(p + from, '\n', upto - from) : NULL;
	if (lf != NULL) {
		size_t i = (size_t)(lf - p);
		r->scanned = 0;
		*consumed_r = off + i + 1;
		*line_r = p;
		/* RFC 5321 2.3.8: lines end with CRLF; a bare LF is not a line end we
		 * accept, but the caller is told where it was to answer and resync. */
		if (i > 0 && p[i - 1] == '\r') {
			*line_len_r = i - 1;
			return SMTP_LINE_OK;
		}
		*line_len_r = i;
		return SMTP_LINE_BARE_LF;
	}
	if (n >= limit) {
		/* limit bytes and no LF: the line cannot fit (RFC 5321 4.5.3.1.4).  Drop
		 * what we have and, unless its end is already here, skip to it. */
		r->scanned = 0;
		lf = memchr(p + limit, '\n', n - limit);
		if (lf != NULL) {
			*consumed_r = off + (size_t)(lf - p) + 1;
		} else {
			*consumed_r = len;
			r->skipping = 1;
		}
		return SMTP_LINE_TOO_LONG;
	}
	r->scanned = n;
	*consumed_r = off;
	return SMTP_LINE_NEED_MORE;
}

static int smtp_is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int smtp_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static char smtp_upper(int c)
{
	return (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
}

int smtp_parse_command(const char *line, size_t len, char verb[16], const char **arg_r,
		       size_t *arg_len_r)
{
	size_t i;

	verb[0] = '\0';
	*arg_r = line;
	*arg_len_r = 0;
	if (len == 0)
		return -1;
	/* A command line is text (RFC 5321 2.4 and 4.1.1): a NUL, a stray CR or any
	 * other control is junk or an attack on a later parser, never data. */
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return -1;
	}
	for (i = 0; i < len && smtp_is_alpha(line[i]); i++) {
		if (i == 15)
			return -1;
		verb[i] = smtp_upper(line[i]);
	}
	verb[i] = '\0';
	if (i == 0 || (i < len && line[i] != ' ')) {
		verb[0] = '\0';
		return -1;
	}
	while (i < len && line[i] == ' ')
		i++;
	size_t end = len;
	while (end > i && (line[end - 1] == ' ' || line[end - 1] == '\t'))
		end--;
	*arg_r = line + i;
	*arg_len_r = end - i;
	return 0;
}

/* ---- xtext (RFC 3461 4) ---- */

static int smtp_hex_upper(int c)
{
	if (smtp_is_digit(c))
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int smtp_xtext_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len_r)
{
	size_t i = 0, o = 0;

	*out_len_r = 0;
	if (cap == 0)
		return -1;
	out[0] = '\0';
	while (i < len) {
		int c = (unsigned char)in[i];
		if (c == '+') {
			/* hexchar = "+" 2(upper-case hex digit) */
			if (len - i < 3)
				return -1;
			int hi = smtp_hex_upper((unsigned char)in[i + 1]);
			int lo = smtp_hex_upper((unsigned char)in[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = hi << 4 | lo;
			i += 3;
		} else if (c >= '!' && c <= '~' && c != '=') {
			/* xchar: "!".."~" except "+" (handled above) and "=". */
			i++;
		} else {
			return -1;
		}
		if (o + 1 >= cap) {
			out[0] = '\0';
			return -1;
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';
	*out_len_r = o;
	return 0;
}

int smtp_xtext_encode(const char *in, size_t len, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (cap == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c >= '!' && c <= '~' && c != '+' && c != '=') {
			if (cap - o < 2)
				goto full;
			out[o++] = (char)c;
		} else {
			if (cap - o < 4)
				goto full;
			out[o++] = '+';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0x0f];
		}
	}
	out[o] = '\0';
	return o > INT_MAX ? -1 : (int)o;
full:
	out[0] = '\0';
	return -1;
}

/* ---- MAIL and RCPT ---- */

struct smtp_param {
	const char *kw;
	size_t kw_len;
	const char *val; /* NULL when there was no "=" */
	size_t val_len;
};

/* Takes the next "keyword[=value]" of the space-separated list s[*pos..len).
 * Returns 1 with *pm, 0 at the end, -1 for a syntax error. */
static int smtp_next_param(const char *s, size_t len, size_t *pos, struct smtp_param *pm)
{
	size_t i = *pos;

	while (i < len && s[i] == ' ')
		i++;
	if (i == len) {
		*pos = i;
		return 0;
	}
	/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") (RFC 5321 4.1.2) */
	pm->kw = s + i;
	while (i < len && (smtp_is_alpha(s[i]) || smtp_is_digit(s[i]) ||
			   (s[i] == '-' && s + i > pm->kw)))
		i++;
	pm->kw_len = (size_t)(s + i - pm->kw);
	if (pm->kw_len == 0)
		return -1;
	pm->val = NULL;
	pm->val_len = 0;
	if (i < len && s[i] == '=') {
		i++;
		/* esmtp-value = 1*(%d33-60 / %d62-126), and UTF8-non-ascii under RFC 6531
		 * 4.3; none of the values we know take it, they check their own. */
		pm->val = s + i;
		while (i < len && s[i] != ' ') {
			unsigned char c = (unsigned char)s[i];
			if (c < 33 || c == '=' || c == 127)
				return -1;
			i++;
		}
		pm->val_len = (size_t)(s + i - pm->val);
		if (pm->val_len == 0)
			return -1;
	}
	if (i < len && s[i] != ' ')
		return -1;
	*pos = i;
	return 1;
}

static int smtp_token_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

static int smtp_kw_is(const struct smtp_param *pm, const char *word)
{
	return smtp_token_is(pm->kw, pm->kw_len, word);
}

/* Decodes an xtext value that must come out as 1..cap-1 bytes of printable ASCII
 * (RFC 3461 4.2 and 4.4 ask for printable US-ASCII after decoding). */
static int smtp_xtext_printable(const struct smtp_param *pm, char *out, size_t cap)
{
	size_t n;

	if (smtp_xtext_decode(pm->val, pm->val_len, out, cap, &n) < 0 || n == 0)
		goto bad;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)out[i];
		if (c < 0x20 || c > 0x7e)
			goto bad;
	}
	return 0;
bad:
	out[0] = '\0';
	return -1;
}

/* Maps a path error to the reply; sender uses X.1.7, recipient X.1.3 (RFC 3463
 * 3.2). */
static enum smtp_param_error smtp_addr_error(enum addr_error e, int sender, const char **error_r)
{
	switch (e) {
	case ADDR_OK:
		break;
	case ADDR_ERR_TOO_LONG:
		/* RFC 5321 4.5.3.1.10: "501 Path too long". */
		*error_r = sender ? "5.1.7 Sender path too long" : "5.1.3 Recipient path too long";
		return SMTP_PARAM_SYNTAX;
	case ADDR_ERR_UTF8_NOT_ALLOWED:
		*error_r = sender ? "5.6.7 Non-ASCII sender address requires SMTPUTF8"
				  : "5.6.7 Non-ASCII recipient address requires SMTPUTF8";
		return SMTP_PARAM_UTF8_ADDR;
	case ADDR_ERR_NULL_NOT_ALLOWED:
		*error_r = "5.1.3 Null recipient address not allowed";
		return SMTP_PARAM_SYNTAX;
	case ADDR_ERR_SYNTAX:
		break;
	}
	*error_r = sender ? "5.1.7 Bad sender address syntax"
			  : "5.1.3 Bad recipient address syntax";
	return SMTP_PARAM_SYNTAX;
}

/* "FROM:" or "TO:" in any case, then a path.  RFC 5321 4.1.1.2 allows no space
 * after the colon, but enough clients send one that refusing it only hurts. */
static enum smtp_param_error smtp_parse_path_arg(const char *arg, size_t len, const char *prefix,
						 unsigned flags, int sender,
						 struct mail_addr *addr, size_t *pos_r,
						 const char **error_r)
{
	size_t plen = strlen(prefix), used;

	if (len < plen || strncasecmp(arg, prefix, plen) != 0) {
		*error_r = sender ? "5.5.4 Syntax: MAIL FROM:<address>"
				  : "5.5.4 Syntax: RCPT TO:<address>";
		return SMTP_PARAM_SYNTAX;
	}
	size_t i = plen;
	if (i < len && arg[i] == ' ')
		i++;
	enum addr_error e = addr_parse_path(arg + i, len - i, flags, addr, &used);
	if (e != ADDR_OK)
		return smtp_addr_error(e, sender, error_r);
	i += used;
	if (i < len && arg[i] != ' ')
		return smtp_addr_error(ADDR_ERR_SYNTAX, sender, error_r);
	*pos_r = i;
	return SMTP_PARAM_OK;
}

enum {
	SEEN_SIZE = 1 << 0,
	SEEN_BODY = 1 << 1,
	SEEN_SMTPUTF8 = 1 << 2,
	SEEN_RET = 1 << 3,
	SEEN_ENVID = 1 << 4,
	SEEN_AUTH = 1 << 5,
	SEEN_NOTIFY = 1 << 6,
	SEEN_ORCPT = 1 << 7,
};

/* Marks bit in *seen; -1 when it was already there (a parameter given twice). */
static int smtp_seen(unsigned *seen, unsigned bit)
{
	if (*seen & bit)
		return -1;
	*seen |= bit;
	return 0;
}

/* SIZE=1*20DIGIT (RFC 1870 6); values past LLONG_MAX saturate, which the caller's
 * size limit refuses with 552 like any other too-large message. */
static int smtp_parse_size(const struct smtp_param *pm, long long *size_r)
{
	long long v = 0;

	if (pm->val == NULL || pm->val_len > 20)
		return -1;
	for (size_t i = 0; i < pm->val_len; i++) {
		if (!smtp_is_digit(pm->val[i]))
			return -1;
		int d = pm->val[i] - '0';
		if (v > (LLONG_MAX - d) / 10)
			v = LLONG_MAX;
		else
			v = v * 10 + d;
	}
	*size_r = v;
	return 0;
}

static void smtp_mail_params_init(struct smtp_mail_params *p)
{
	memset(p, 0, sizeof(*p));
	p->size = -1;
	p->body = SMTP_BODY_NONE;
	p->ret = SMTP_RET_NONE;
}

enum smtp_param_error smtp_parse_mail(const char *arg, size_t len, struct mail_addr *addr,
				      struct smtp_mail_params *p, const char **error_r)
{
	struct smtp_param pm;
	unsigned seen = 0;
	size_t pos;
	int r;

	smtp_mail_params_init(p);
	*error_r = "2.0.0 Ok";
	/* UTF-8 is parsed here whatever the parameters say; whether it was allowed is
	 * known only once SMTPUTF8 has been seen, below. */
	enum smtp_param_error e = smtp_parse_path_arg(
		arg, len, "FROM:", ADDR_ALLOW_NULL | ADDR_ALLOW_UTF8, 1, addr, &pos, error_r);
	if (e != SMTP_PARAM_OK)
		return e;

	while ((r = smtp_next_param(arg, len, &pos, &pm)) > 0) {
		if (smtp_kw_is(&pm, "SIZE")) {
			if (smtp_seen(&seen, SEEN_SIZE) < 0)
				goto dup;
			if (smtp_parse_size(&pm, &p->size) < 0) {
				*error_r = "5.5.4 Invalid SIZE value";
				return SMTP_PARAM_BAD_VALUE;
			}
		} else if (smtp_kw_is(&pm, "BODY")) {
			if (smtp_seen(&seen, SEEN_BODY) < 0)
				goto dup;
			/* RFC 6152 2; BINARYMIME (RFC 3030) is not offered. */
			if (pm.val != NULL && smtp_token_is(pm.val, pm.val_len, "7BIT")) {
				p->body = SMTP_BODY_7BIT;
			} else if (pm.val != NULL &&
				   smtp_token_is(pm.val, pm.val_len, "8BITMIME")) {
				p->body = SMTP_BODY_8BITMIME;
			} else {
				*error_r = "5.5.4 Unsupported BODY value";
				return SMTP_PARAM_BAD_VALUE;
			}
		} else if (smtp_kw_is(&pm, "SMTPUTF8")) {
			if (smtp_seen(&seen, SEEN_SMTPUTF8) < 0)
				goto dup;
			/* RFC 6531 3.4: the parameter has no value. */
			if (pm.val != NULL) {
				*error_r = "5.5.4 SMTPUTF8 takes no value";
				return SMTP_PARAM_BAD_VALUE;
			}
			p->smtputf8 = 1;
		} else if (smtp_kw_is(&pm, "RET")) {
			if (smtp_seen(&seen, SEEN_RET) < 0)
				goto dup;
			/* RFC 3461 4.3 */
			if (pm.val != NULL && smtp_token_is(pm.val, pm.val_len, "FULL")) {
				p->ret = SMTP_RET_FULL;
			} else if (pm.val != NULL && smtp_token_is(pm.val, pm.val_len, "HDRS")) {
				p->ret = SMTP_RET_HDRS;
			} else {
				*error_r = "5.5.4 Invalid RET value";
				return SMTP_PARAM_BAD_VALUE;
			}
		} else if (smtp_kw_is(&pm, "ENVID")) {
			if (smtp_seen(&seen, SEEN_ENVID) < 0)
				goto dup;
			/* RFC 3461 4.4: xtext, at most 100 characters. */
			if (pm.val == NULL ||
			    smtp_xtext_printable(&pm, p->envid, sizeof(p->envid)) < 0) {
				*error_r = "5.5.4 Invalid ENVID value";
				return SMTP_PARAM_BAD_VALUE;
			}
		} else if (smtp_kw_is(&pm, "AUTH")) {
			if (smtp_seen(&seen, SEEN_AUTH) < 0)
				goto dup;
			/* RFC 4954 5: AUTH=<> means "unknown"; "<" and ">" are xchars,
			 * so it decodes as itself. */
			if (pm.val == NULL ||
			    smtp_xtext_printable(&pm, p->auth, sizeof(p->auth)) < 0) {
				*error_r = "5.5.4 Invalid AUTH value";
				return SMTP_PARAM_BAD_VALUE;
			}
		} else {
			/* RFC 5321 4.1.1.11: 555 for a parameter not recognised. */
			*error_r = "5.5.4 Unrecognized MAIL parameter";
			return SMTP_PARAM_UNKNOWN;
		}
	}
	if (r < 0) {
		*error_r = "5.5.4 Invalid MAIL parameter syntax";
		return SMTP_PARAM_SYNTAX;
	}
	if (addr->utf8 && !p->smtputf8)
		return smtp_addr_error(ADDR_ERR_UTF8_NOT_ALLOWED, 1, error_r);
	*error_r = "2.1.0 Ok";
	return SMTP_PARAM_OK;
dup:
	*error_r = "5.5.4 Duplicate MAIL parameter";
	return SMTP_PARAM_SYNTAX;
}

/* NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) (RFC 3461 4.1). */
static int smtp_parse_notify(const struct smtp_param *pm, unsigned *notify_r)
{
	unsigned bits = 0;
	size_t i = 0;

	if (pm->val == NULL)
		return -1;
	while (i <= pm->val_len) {
		size_t start = i;
		while (i < pm->val_len && pm->val[i] != ',')
			i++;
		const char *tok = pm->val + start;
		size_t tlen = i - start;
		unsigned bit;
		if (smtp_token_is(tok, tlen, "NEVER"))
			bit = SMTP_NOTIFY_NEVER;
		else if (smtp_token_is(tok, tlen, "SUCCESS"))
			bit = SMTP_NOTIFY_SUCCESS;
		else if (smtp_token_is(tok, tlen, "FAILURE"))
			bit = SMTP_NOTIFY_FAILURE;
		else if (smtp_token_is(tok, tlen, "DELAY"))
			bit = SMTP_NOTIFY_DELAY;
		else
			return -1;
		if (bits & bit)
			return -1;
		bits |= bit;
		i++; /* past the comma, or past the end to stop */
	}
	if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
		return -1;
	*notify_r = bits;
	return 0;
}

/* ORCPT=addr-type ";" xtext (RFC 3461 4.2), addr-type an atom; we take "rfc822"
 * only (the "utf-8" type of RFC 6533 is not offered). */
static int smtp_parse_orcpt(const struct smtp_param *pm, char *out, size_t cap)
{
	static const char type[] = "rfc822;";
	const size_t tlen = sizeof(type) - 1;
	char addr[SMTP_ORCPT_MAX + 1];
	struct smtp_param rest = { 0 };

	if (pm->val == NULL || pm->val_len <= tlen || strncasecmp(pm->val, type, tlen) != 0)
		return -1;
	rest.val = pm->val + tlen;
	rest.val_len = pm->val_len - tlen;
	if (smtp_xtext_printable(&rest, addr, sizeof(addr)) < 0)
		return -1;
	size_t alen = strlen(addr);
	if (tlen + alen + 1 > cap)
		return -1;
	memcpy(out, type, tlen);
	memcpy(out + tlen, addr, alen + 1);
	return 0;
}

enum smtp_param_error smtp_parse_rcpt(const char *arg, size_t len, unsigned addr_flags,
				      struct mail_addr *addr, struct smtp_rcpt_params *p,
				      const char **error_r)
{
	struct smtp_param pm;
	unsigned seen = 0;
	size_t pos;
	int r;

	memset(p, 0, sizeof(*p));
	*error_r = "2.0.0 Ok";
	enum smtp_param_error e = smtp_parse_path_arg(
		arg, len, "TO:", addr_flags & ~(unsigned)ADDR_ALLOW_NULL, 0, addr, &pos, error_r);
	if (e != SMTP_PARAM_OK)
		return e;

	while ((r = smtp_next_param(arg, len, &pos, &pm)) > 0) {
		if (smtp_kw_is(&pm, "NOTIFY")) {
			if (smtp_seen(&seen, SEEN_NOTIFY) < 0)
				goto dup;
			if (smtp_parse_notify(&pm, &p->notify) < 0) {
				*error_r = "5.5.4 Invalid NOTIFY value";
				return SMTP_PARAM_BAD_VALUE;
			}
		} else if (smtp_kw_is(&pm, "ORCPT")) {
			if (smtp_seen(&seen, SEEN_ORCPT) < 0)
				goto dup;
			if (smtp_parse_orcpt(&pm, p->orcpt, sizeof(p->orcpt)) < 0) {
				*error_r = "5.5.4 Invalid ORCPT value";
				return SMTP_PARAM_BAD_VALUE;
			}
		} else {
			*error_r = "5.5.4 Unrecognized RCPT parameter";
			return SMTP_PARAM_UNKNOWN;
		}
	}
	if (r < 0) {
		*error_r = "5.5.4 Invalid RCPT parameter syntax";
		return SMTP_PARAM_SYNTAX;
	}
	*error_r = "2.1.5 Ok";
	return SMTP_PARAM_OK;
dup:
	*error_r = "5.5.4 Duplicate RCPT parameter";
	return SMTP_PARAM_SYNTAX;
}
