#include "msg/addr.h"

#include "base/utf8.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* RFC 1035 2.3.4; for an all-ASCII label only: a U-label's limit applies to its
 * A-label, which we do not compute. */
#define ADDR_LABEL_MAX 63

struct addr_parser {
	const unsigned char *s;
	size_t len; /* bytes that may be examined */
	size_t pos;
	unsigned flags;
	int hit_end; /* needed a byte at or past len */
};

/* Locale-independent: these are protocol bytes, not text in the user's language. */
static int addr_is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int addr_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static char addr_lower(int c)
{
	return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

/* RFC 5322 3.2.3 atext, which RFC 5321 4.1.2 Atom refers to. */
static int addr_is_atext(int c)
{
	if (addr_is_alpha(c) || addr_is_digit(c))
		return 1;
	return c > 0 && c < 0x80 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static int ap_peek(struct addr_parser *p)
{
	if (p->pos >= p->len) {
		p->hit_end = 1;
		return -1;
	}
	return p->s[p->pos];
}

/* At a byte >= 0x80 where RFC 6531 allows UTF8-non-ascii: takes one sequence into
 * dst[*o..], provided the field (which began at start) stays within max octets. */
static enum addr_error ap_take_utf8(struct addr_parser *p, char *dst, size_t *o, size_t start,
				    size_t max)
{
	if (!(p->flags & ADDR_ALLOW_UTF8))
		return ADDR_ERR_UTF8_NOT_ALLOWED;
	int is_short;
	size_t n = utf8_seq_len(p->s + p->pos, p->len - p->pos, &is_short);
	if (n == 0) {
		if (is_short)
			p->hit_end = 1;
		return ADDR_ERR_SYNTAX;
	}
	if (p->pos + n - start > max)
		return ADDR_ERR_TOO_LONG;
	memcpy(dst + *o, p->s + p->pos, n);
	*o += n;
	p->pos += n;
	return ADDR_OK;
}

/* Local-part = Dot-string / Quoted-string (RFC 5321 4.1.2).  The limit of
 * 4.5.3.1.1 is on the local part as sent, quotes and backslashes included; the
 * decoded form is therefore shorter and always fits out->local. */
static enum addr_error ap_local(struct addr_parser *p, struct mail_addr *out)
{
	size_t start = p->pos, o = 0;
	enum addr_error err;
	int c = ap_peek(p);

	if (c == '"') {
		out->quoted = 1;
		p->pos++;
		for (;;) {
			c = ap_peek(p);
			if (c < 0)
				return ADDR_ERR_SYNTAX;
			if (c >= 0x80) {
				err = ap_take_utf8(p, out->local, &o, start, ADDR_LOCAL_MAX);
				if (err != ADDR_OK)
					return err;
				continue;
			}
			if (p->pos + 1 - start > ADDR_LOCAL_MAX)
				return ADDR_ERR_TOO_LONG;
			p->pos++;
			if (c == '"')
				break;
			if (c == '\\') {
				/* quoted-pairSMTP = %d92 %d32-126: ASCII only, even
				 * under SMTPUTF8. */
				c = ap_peek(p);
				if (c < 32 || c > 126)
					return ADDR_ERR_SYNTAX;
				if (p->pos + 1 - start > ADDR_LOCAL_MAX)
					return ADDR_ERR_TOO_LONG;
				p->pos++;
			} else if (c < 32 || c > 126) {
				/* qtextSMTP excludes controls, DEL and (above) '"'. */
				return ADDR_ERR_SYNTAX;
			}
			out->local[o++] = (char)c;
		}
		/* The grammar allows "" but no mailbox can have an empty local part, and
		 * an empty one would look like the domain-wide keys of the directory. */
		if (o == 0)
			return ADDR_ERR_SYNTAX;
		out->local[o] = '\0';
		return ADDR_OK;
	}

	/* Dot-string = Atom *("." Atom): no leading, trailing or doubled dot. */
	for (;;) {
		size_t atom_start = p->pos;
		for (;;) {
			c = ap_peek(p);
			if (c >= 0x80) {
				err = ap_take_utf8(p, out->local, &o, start, ADDR_LOCAL_MAX);
				if (err != ADDR_OK)
					return err;
			} else if (c >= 0 && addr_is_atext(c)) {
				if (p->pos + 1 - start > ADDR_LOCAL_MAX)
					return ADDR_ERR_TOO_LONG;
				out->local[o++] = (char)c;
				p->pos++;
			} else {
				break;
			}
		}
		if (p->pos == atom_start)
			return ADDR_ERR_SYNTAX;
		if (ap_peek(p) != '.')
			break;
		if (p->pos + 1 - start > ADDR_LOCAL_MAX)
			return ADDR_ERR_TOO_LONG;
		out->local[o++] = '.';
		p->pos++;
	}
	out->local[o] = '\0';
	return ADDR_OK;
}

static int addr_is_ipv4_text(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if (!addr_is_digit(*s) && *s != '.')
			return 0;
	}
	return 1;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]" (RFC 5321 4.1.3).  The IP forms are checked with
 * inet_pton(); a General-address-literal names no protocol we can deliver to, so it
 * is refused as a syntax error. */
static enum addr_error ap_literal(struct addr_parser *p, char *dst)
{
	size_t start = p->pos;
	char text[ADDR_DOMAIN_MAX + 1];
	size_t n = 0;
	int c;

	p->pos++; /* "[" */
	for (;;) {
		c = ap_peek(p);
		if (c == ']')
			break;
		/* dcontent = %d33-90 / %d94-126 */
		if (c < 33 || c > 126 || c == '[' || c == '\\')
			return ADDR_ERR_SYNTAX;
		/* Room for this byte and the closing bracket. */
		if (p->pos + 2 - start > ADDR_DOMAIN_MAX)
			return ADDR_ERR_TOO_LONG;
		text[n++] = (char)c;
		p->pos++;
	}
	p->pos++; /* "]" */
	text[n] = '\0';

	unsigned char bin[sizeof(struct in6_addr)];
	if (n > 5 && strncasecmp(text, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, text + 5, bin) != 1)
			return ADDR_ERR_SYNTAX;
	} else if (addr_is_ipv4_text(text)) {
		if (inet_pton(AF_INET, text, bin) != 1)
			return ADDR_ERR_SYNTAX;
	} else {
		return ADDR_ERR_SYNTAX;
	}

	size_t o = 0;
	dst[o++] = '[';
	for (size_t i = 0; i < n; i++)
		dst[o++] = addr_lower(text[i]);
	dst[o++] = ']';
	dst[o] = '\0';
	return ADDR_OK;
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
 * (RFC 5321 4.1.2), or a U-label under SMTPUTF8 (RFC 6531 3.3).  A trailing dot is
 * not part of the grammar.  dst has room for ADDR_DOMAIN_MAX + 1 bytes. */
static enum addr_error ap_domain(struct addr_parser *p, char *dst, int allow_literal)
{
	size_t start = p->pos, o = 0;
	enum addr_error err;
	int c;

	if (allow_literal && ap_peek(p) == '[')
		return ap_literal(p, dst);
	for (;;) {
		size_t label_start = p->pos;
		int label_utf8 = 0, last = -1;
		for (;;) {
			c = ap_peek(p);
			if (c >= 0x80) {
				err = ap_take_utf8(p, dst, &o, start, ADDR_DOMAIN_MAX);
				if (err != ADDR_OK)
					return err;
				label_utf8 = 1;
				last = c;
				continue;
			}
			if (c < 0 || !(addr_is_alpha(c) || addr_is_digit(c) ||
				       (c == '-' && p->pos > label_start)))
				break;
			if (p->pos + 1 - start > ADDR_DOMAIN_MAX)
				return ADDR_ERR_TOO_LONG;
			dst[o++] = addr_lower(c);
			last = c;
			p->pos++;
		}
		/* Empty label (leading, doubled or trailing dot, or a label starting with
		 * '-'), or a label ending with '-'. */
		if (p->pos == label_start || last == '-')
			return ADDR_ERR_SYNTAX;
		if (!label_utf8 && p->pos - label_start > ADDR_LABEL_MAX)
			return ADDR_ERR_TOO_LONG;
		if (ap_peek(p) != '.')
			break;
		if (p->pos + 1 - start > ADDR_DOMAIN_MAX)
			return ADDR_ERR_TOO_LONG;
		dst[o++] = '.';
		p->pos++;
	}
	dst[o] = '\0';
	return ADDR_OK;
}

static int addr_has_8bit(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s >= 0x80)
			return 1;
	}
	return 0;
}

/* Path = "<" [ A-d-l ":" ] Mailbox ">", Reverse-path = Path / "<>", and the
 * Forward-path special case "<Postmaster>" (RFC 5321 4.1.1.3). */
static enum addr_error ap_path(struct addr_parser *p, struct mail_addr *out)
{
	enum addr_error err;
	int c;

	if (ap_peek(p) != '<')
		return ADDR_ERR_SYNTAX;
	p->pos++;
	if (ap_peek(p) == '>') {
		if (!(p->flags & ADDR_ALLOW_NULL))
			return ADDR_ERR_NULL_NOT_ALLOWED;
		p->pos++;
		out->is_null = 1;
		return ADDR_OK;
	}

	/* A-d-l = At-domain *( "," At-domain ): RFC 5321 4.1.2 and appendix C say
	 * to accept the obsolete source route and ignore it; it is still checked so
	 * that garbage is not silently swallowed. */
	if (ap_peek(p) == '@') {
		char scratch[ADDR_DOMAIN_MAX + 1];
		for (;;) {
			if (ap_peek(p) != '@')
				return ADDR_ERR_SYNTAX;
			p->pos++;
			err = ap_domain(p, scratch, 0);
			if (err != ADDR_OK)
				return err;
			c = ap_peek(p);
			p->pos++;
			if (c == ':')
				break;
			if (c != ',')
				return ADDR_ERR_SYNTAX;
		}
		out->had_route = 1;
	}

	err = ap_local(p, out);
	if (err != ADDR_OK)
		return err;
	c = ap_peek(p);
	if (c == '>' && !(p->flags & ADDR_ALLOW_NULL) && !out->had_route && !out->quoted &&
	    strcasecmp(out->local, "postmaster") == 0) {
		/* RFC 5321 4.5.1: every server must accept mail for postmaster with no
		 * domain; the case of the text does not matter (4.1.1.3). */
		strcpy(out->local, "postmaster");
		p->pos++;
		return ADDR_OK;
	}
	if (c != '@')
		return ADDR_ERR_SYNTAX;
	p->pos++;
	err = ap_domain(p, out->domain, 1);
	if (err != ADDR_OK)
		return err;
	if (ap_peek(p) != '>')
		return ADDR_ERR_SYNTAX;
	p->pos++;
	return ADDR_OK;
}

enum addr_error addr_parse_path(const char *s, size_t len, unsigned flags, struct mail_addr *out,
				size_t *consumed_r)
{
	struct addr_parser p = {
		.s = (const unsigned char *)s,
		.len = len < ADDR_PATH_MAX ? len : ADDR_PATH_MAX,
		.flags = flags,
	};

	memset(out, 0, sizeof(*out));
	*consumed_r = 0;
	enum addr_error err = ap_path(&p, out);
	if (err != ADDR_OK) {
		/* Still inside a plausible path when the 256 octets of 4.5.3.1.3 ran
		 * out: say so rather than "syntax error". */
		if (err == ADDR_ERR_SYNTAX && p.hit_end && len > p.len)
			err = ADDR_ERR_TOO_LONG;
		memset(out, 0, sizeof(*out));
		return err;
	}
	out->utf8 = addr_has_8bit(out->local) || addr_has_8bit(out->domain);
	*consumed_r = p.pos;
	return ADDR_OK;
}

enum addr_error addr_parse_mailbox(const char *s, size_t len, unsigned flags,
				   struct mail_addr *out)
{
	struct addr_parser p = {
		.s = (const unsigned char *)s,
		.len = len,
		.flags = flags & ~(unsigned)ADDR_ALLOW_NULL,
	};
	enum addr_error err;

	memset(out, 0, sizeof(*out));
	if (len > ADDR_LOCAL_MAX + 1 + ADDR_DOMAIN_MAX)
		return ADDR_ERR_TOO_LONG;
	err = ap_local(&p, out);
	if (err == ADDR_OK && ap_peek(&p) != '@')
		err = ADDR_ERR_SYNTAX;
	if (err == ADDR_OK) {
		p.pos++;
		err = ap_domain(&p, out->domain, 1);
	}
	if (err == ADDR_OK && p.pos != len)
		err = ADDR_ERR_SYNTAX;
	if (err != ADDR_OK) {
		memset(out, 0, sizeof(*out));
		return err;
	}
	out->utf8 = addr_has_8bit(out->local) || addr_has_8bit(out->domain);
	return ADDR_OK;
}

/* Whether s can be sent as a Dot-string; bytes >= 0x80 count as atext (RFC 6531
 * 3.3), the caller having them from the parser. */
static int addr_is_dot_string(const char *s)
{
	int prev_dot = 1; /* no leading dot */

	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '.') {
			if (prev_dot)
				return 0;
			prev_dot = 1;
		} else if (c >= 0x80 || addr_is_atext(c)) {
			prev_dot = 0;
		} else {
			return 0;
		}
	}
	return !prev_dot;
}

static int addr_put(char *out, size_t cap, size_t *o, char c)
{
	/* Keep one byte for the NUL. */
	if (*o + 1 >= cap)
		return -1;
	out[(*o)++] = c;
	return 0;
}

int addr_format(const struct mail_addr *a, char *out, size_t cap)
{
	size_t o = 0;
	const char *s;

	if (cap == 0)
		return -1;
	if (!a->is_null) {
		int quote = !addr_is_dot_string(a->local);
		if (quote && addr_put(out, cap, &o, '"') < 0)
			return -1;
		for (s = a->local; *s != '\0'; s++) {
			if (quote && (*s == '"' || *s == '\\') && addr_put(out, cap, &o, '\\') < 0)
				return -1;
			if (addr_put(out, cap, &o, *s) < 0)
				return -1;
		}
		if (quote && addr_put(out, cap, &o, '"') < 0)
			return -1;
		if (a->domain[0] != '\0') {
			if (addr_put(out, cap, &o, '@') < 0)
				return -1;
			for (s = a->domain; *s != '\0'; s++) {
				if (addr_put(out, cap, &o, *s) < 0)
					return -1;
			}
		}
	}
	out[o] = '\0';
	return (int)o;
}

const char *addr_error_str(enum addr_error e)
{
	switch (e) {
	case ADDR_OK:
		return "ok";
	case ADDR_ERR_SYNTAX:
		return "address syntax error";
	case ADDR_ERR_TOO_LONG:
		return "address too long";
	case ADDR_ERR_UTF8_NOT_ALLOWED:
		return "non-ASCII address without SMTPUTF8";
	case ADDR_ERR_NULL_NOT_ALLOWED:
		return "null address not allowed here";
	}
	return "unknown address error";
}
