/* Transfer decoding (RFC 2045 6.7, 6.8) and charset conversion to UTF-8. */
#include "msg/mime.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "msg/mime_private.h"

#include "base/utf8.h"
#include "msg/base64.h"

#define MIME_CHUNK 4096

static const char mime_replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

int mime_utf8_append(struct buf *out, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t a = 0, i = 0;

	while (i < len) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t n = utf8_seq_len(u + i, len - i, NULL);
		if (n > 0) {
			i += n;
			continue;
		}
		if (buf_append(out, s + a, i - a) < 0 ||
		    buf_append(out, mime_replacement, sizeof(mime_replacement) - 1) < 0)
			return -1;
		a = ++i;
	}
	return buf_append(out, s + a, i - a);
}

static int mime_latin1_append(struct buf *out, const char *s, size_t len)
{
	char chunk[MIME_CHUNK];
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 2 > sizeof(chunk)) {
			if (buf_append(out, chunk, o) < 0)
				return -1;
			o = 0;
		}
		if (c < 0x80) {
			chunk[o++] = (char)c;
		} else {
			chunk[o++] = (char)(0xc0 | c >> 6);
			chunk[o++] = (char)(0x80 | (c & 0x3f));
		}
	}
	return buf_append(out, chunk, o);
}

static int mime_charset_is(const char *cs, const char *const *names)
{
	for (; *names != NULL; names++) {
		if (strcasecmp(cs, *names) == 0)
			return 1;
	}
	return 0;
}

/* iconv output is appended through mime_utf8_append, so whatever a converter does the
 * result stays valid UTF-8. */
static int mime_iconv_append(struct buf *out, iconv_t cd, const char *s, size_t len)
{
	char chunk[MIME_CHUNK];
	char *in = (char *)s;
	size_t in_left = len;
	int flushing = len == 0;

	for (;;) {
		char *op = chunk;
		size_t op_left = sizeof(chunk);
		/* After the input, one call without input writes what a stateful
		 * converter still holds. */
		size_t r = flushing ? iconv(cd, NULL, NULL, &op, &op_left)
				    : iconv(cd, &in, &in_left, &op, &op_left);
		int err = r == (size_t)-1 ? errno : 0;
		if (mime_utf8_append(out, chunk, (size_t)(op - chunk)) < 0)
			return -1;
		if (err == E2BIG)
			continue;
		if (flushing)
			return 0;
		if (in_left > 0 && (err == EILSEQ || err == EINVAL)) {
			/* An invalid or truncated sequence: one replacement character per
			 * byte skipped, like the UTF-8 validator. */
			if (buf_append(out, mime_replacement, sizeof(mime_replacement) - 1) < 0)
				return -1;
			in++;
			in_left--;
			continue;
		}
		if (in_left > 0)
			return 0; /* any other failure: keep what was converted */
		flushing = 1;
	}
}

int mime_charset_append(struct buf *out, const char *charset, const char *s, size_t len)
{
	static const char *const utf8[] = { "utf-8", "utf8", "us-ascii", "ascii", "us",
					    "ansi_x3.4-1968", NULL };
	static const char *const latin1[] = { "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1",
					      "l1", NULL };

	/* RFC 2045 5.2: no charset means US-ASCII; 8-bit text labelled so (or not
	 * labelled) is in practice UTF-8. */
	if (charset == NULL || charset[0] == '\0' || mime_charset_is(charset, utf8))
		return mime_utf8_append(out, s, len) < 0 ? -1 : 0;
	if (mime_charset_is(charset, latin1))
		return mime_latin1_append(out, s, len) < 0 ? -1 : 0;

	/* Only plain names reach iconv_open(): glibc reads "//" suffixes as
	 * conversion options. */
	size_t n = strlen(charset);
	if (n > 64)
		return 1;
	for (size_t i = 0; i < n; i++) {
		char c = charset[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == ':' || c == '+'))
			return 1;
	}
	iconv_t cd = iconv_open("UTF-8", charset);
	if (cd == (iconv_t)-1)
		return 1;
	int rc = mime_iconv_append(out, cd, s, len);
	iconv_close(cd);
	return rc;
}

/* RFC 2045 6.8: characters outside the alphabet are ignored; we also accept missing
 * padding and, after "=", a new quantum (concatenated encodings exist in the wild).
 * Unlike msg/base64 this must decode whatever a mailer produced. */
int mime_base64_append(struct buf *out, const char *s, size_t len)
{
	char chunk[MIME_CHUNK];
	size_t o = 0;
	uint32_t v = 0;
	int n = 0;

	for (size_t i = 0; i <= len; i++) {
		int d = i < len ? base64_value((unsigned char)s[i]) : -2;
		if (o + 3 > sizeof(chunk)) {
			if (buf_append(out, chunk, o) < 0)
				return -1;
			o = 0;
		}
		if (d >= 0) {
			v = v << 6 | (uint32_t)d;
			if (++n == 4) {
				chunk[o++] = (char)(v >> 16);
				chunk[o++] = (char)(v >> 8);
				chunk[o++] = (char)v;
				v = 0;
				n = 0;
			}
		} else if (d == -2 || s[i] == '=') {
			/* End of a quantum: 2 characters give 1 byte, 3 give 2. */
			if (n >= 2) {
				v <<= 6 * (4 - n);
				chunk[o++] = (char)(v >> 16);
				if (n == 3)
					chunk[o++] = (char)(v >> 8);
			}
			v = 0;
			n = 0;
		}
	}
	return buf_append(out, chunk, o);
}

/* RFC 2045 6.7.  Trailing whitespace of a line is transport padding (rule 3) and
 * dropped; "=" at the end of a line is a soft line break (rule 5); "=XX" in either
 * case is an octet (lower case is tolerated, as the RFC suggests); any other "=" is
 * kept as it is.  Line ends are kept as sent. */
int mime_qp_append(struct buf *out, const char *s, size_t len)
{
	char chunk[MIME_CHUNK];
	size_t o = 0, pos = 0;

	while (pos < len) {
		const char *nl = memchr(s + pos, '\n', len - pos);
		size_t le = nl != NULL ? (size_t)(nl - s) : len;
		size_t next = nl != NULL ? le + 1 : len;
		size_t eol = le;
		if (eol > pos && s[eol - 1] == '\r')
			eol--;
		size_t ce = eol;
		while (ce > pos && mime_is_wsp((unsigned char)s[ce - 1]))
			ce--;
		int soft = 0;
		for (size_t i = pos; i < ce; i++) {
			if (o + 1 > sizeof(chunk)) {
				if (buf_append(out, chunk, o) < 0)
					return -1;
				o = 0;
			}
			int h, l;
			if (s[i] != '=') {
				chunk[o++] = s[i];
			} else if (i + 1 == ce) {
				soft = 1;
			} else if (i + 2 < ce &&
				   (h = mime_hex_value((unsigned char)s[i + 1])) >= 0 &&
				   (l = mime_hex_value((unsigned char)s[i + 2])) >= 0) {
				chunk[o++] = (char)(h << 4 | l);
				i += 2;
			} else {
				chunk[o++] = '=';
			}
		}
		if (buf_append(out, chunk, o) < 0)
			return -1;
		o = 0;
		if (!soft && nl != NULL && buf_append(out, s + eol, next - eol) < 0)
			return -1;
		pos = next;
	}
	return 0;
}

static char *mime_buf_take(struct buf *b, size_t *len_r)
{
	if (b->data == NULL && buf_append(b, "", 0) < 0)
		return NULL;
	*len_r = b->len;
	char *r = b->data;
	b->data = NULL;
	return r;
}

char *mime_body_decode(const char *msg, const struct mime_part *part, size_t *len_r,
		       int *bad_r)
{
	const char *body = msg + part->body_start;
	size_t len = part->body_end - part->body_start;
	const char *e = part->encoding;
	struct buf out;
	int rc;

	*len_r = 0;
	*bad_r = 0;
	buf_init(&out, 0);
	if (e != NULL && strcmp(e, "base64") == 0) {
		rc = mime_base64_append(&out, body, len);
	} else if (e != NULL && strcmp(e, "quoted-printable") == 0) {
		rc = mime_qp_append(&out, body, len);
	} else {
		/* RFC 2045 6.4: an unknown encoding makes the body opaque. */
		if (e != NULL && strcmp(e, "7bit") != 0 && strcmp(e, "8bit") != 0 &&
		    strcmp(e, "binary") != 0)
			*bad_r = 1;
		rc = buf_append(&out, body, len);
	}
	char *r = rc == 0 ? mime_buf_take(&out, len_r) : NULL;
	buf_deinit(&out);
	return r;
}

char *mime_body_text(const char *msg, const struct mime_part *part, size_t *len_r)
{
	*len_r = 0;
	if (strcmp(part->type, "text") != 0)
		return NULL;

	size_t len;
	int bad;
	char *raw = mime_body_decode(msg, part, &len, &bad);
	if (raw == NULL)
		return NULL;
	const char *charset = NULL;
	for (size_t i = 0; i < part->n_params; i++) {
		if (strcmp(part->params[i].name, "charset") == 0)
			charset = part->params[i].value;
	}
	struct buf out;
	buf_init(&out, 0);
	int rc = mime_charset_append(&out, charset, raw, len);
	if (rc == 1)
		rc = mime_utf8_append(&out, raw, len);
	free(raw);
	char *r = rc == 0 ? mime_buf_take(&out, len_r) : NULL;
	buf_deinit(&out);
	return r;
}
