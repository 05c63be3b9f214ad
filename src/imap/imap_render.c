/* ENVELOPE, BODY/BODYSTRUCTURE and sections (RFC 9051 6.4.5, 7.5.2; BINARY RFC 3516)
 * from the bytes of a message and its MIME tree.  Output follows what Dovecot sends
 * for the same message where RFC 9051 leaves a choice (type, subtype, parameter names
 * and encodings as the MIME parser normalised them, i.e. lower case; a text part
 * without parameters gets ("charset" "us-ascii"); a multipart without parts is shown
 * with one empty text/plain part). */
#include "imap/imap_render.h"

#include "imap/imap_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ENVELOPE_ADDRS_MAX 1000 /* addresses per field shown in an ENVELOPE */

size_t imap_header_end(const char *msg, size_t len, int *complete_r)
{
	size_t pos = 0;

	while (pos < len) {
		const char *nl = memchr(msg + pos, '\n', len - pos);
		if (nl == NULL)
			break;
		size_t eol = (size_t)(nl - msg);
		size_t line_end = eol;
		if (line_end > pos && msg[line_end - 1] == '\r')
			line_end--;
		if (line_end == pos) {
			*complete_r = 1;
			return eol + 1;
		}
		pos = eol + 1;
	}
	*complete_r = 0;
	return len;
}

/* ---- ENVELOPE ------------------------------------------------------------------------- */

static int put(struct buf *out, const char *s)
{
	return buf_append_str(out, s);
}

static int put_nstr(struct buf *out, const char *s, int utf8)
{
	return imap_write_nstring(out, s, s != NULL ? strlen(s) : 0, utf8);
}

static int env_field(struct buf *out, const char *msg, size_t start, size_t end, const char *name,
                     int utf8)
{
	char *v = mime_header_get(msg, start, end, name);
	int r = put_nstr(out, v, utf8);
	free(v);
	return r;
}

/* One address-list field: "((...)(...))", or NIL when absent or empty (returns 1 then,
 * so that Sender and Reply-To can fall back to From). */
static int env_addrs(struct buf *out, const char *msg, size_t start, size_t end, const char *name,
                     int utf8)
{
	char *v = mime_header_get(msg, start, end, name);
	struct mime_addr *a = NULL;
	size_t n = 0;
	int r = 0;

	if (v == NULL || mime_addr_parse(v, strlen(v), ENVELOPE_ADDRS_MAX, &a, &n) < 0 || n == 0) {
		free(v);
		if (a != NULL)
			mime_addrs_free(a, n);
		return 1;
	}
	r |= put(out, "(");
	for (size_t i = 0; i < n; i++) {
		r |= put(out, "(");
		if (a[i].mailbox == NULL && a[i].host == NULL && a[i].name != NULL &&
		    a[i].adl == NULL) {
			/* RFC 9051 7.5.2: group start, (NIL NIL "name" NIL). */
			r |= put(out, "NIL NIL ");
			r |= put_nstr(out, a[i].name, utf8);
			r |= put(out, " NIL");
		} else if (a[i].mailbox == NULL && a[i].host == NULL) {
			r |= put(out, "NIL NIL NIL NIL"); /* group end */
		} else {
			r |= put_nstr(out, a[i].name, utf8);
			r |= put(out, " ");
			r |= put_nstr(out, a[i].adl, utf8);
			r |= put(out, " ");
			/* A NIL host would read as a group start: never send one for an
			 * address. */
			r |= put_nstr(out, a[i].mailbox != NULL ? a[i].mailbox : "", utf8);
			r |= put(out, " ");
			r |= put_nstr(out, a[i].host != NULL ? a[i].host : "", utf8);
		}
		r |= put(out, ")");
	}
	r |= put(out, ")");
	mime_addrs_free(a, n);
	free(v);
	return r != 0 ? -1 : 0;
}

int imap_render_envelope(struct buf *out, const char *msg, size_t start, size_t end, int utf8)
{
	int r = 0;

	r |= put(out, "(");
	r |= env_field(out, msg, start, end, "Date", utf8);
	r |= put(out, " ");
	r |= env_field(out, msg, start, end, "Subject", utf8);
	r |= put(out, " ");

	size_t from_at = out->len;
	int from_r = env_addrs(out, msg, start, end, "From", utf8);
	if (from_r < 0)
		return -1;
	if (from_r == 1)
		r |= put(out, "NIL");
	char *from = strndup(out->data + from_at, out->len - from_at);
	if (from == NULL)
		return -1;
	static const char *const fallback[] = {"Sender", "Reply-To"};
	for (size_t i = 0; i < 2; i++) {
		r |= put(out, " ");
		int k = env_addrs(out, msg, start, end, fallback[i], utf8);
		if (k < 0) {
			r = -1;
			break;
		}
		if (k == 1)
			r |= put(out, from); /* RFC 9051 7.5.2: default to From */
	}
	free(from);
	static const char *const rest[] = {"To", "Cc", "Bcc"};
	for (size_t i = 0; i < 3 && r == 0; i++) {
		r |= put(out, " ");
		int k = env_addrs(out, msg, start, end, rest[i], utf8);
		if (k < 0)
			return -1;
		if (k == 1)
			r |= put(out, "NIL");
	}
	r |= put(out, " ");
	r |= env_field(out, msg, start, end, "In-Reply-To", utf8);
	r |= put(out, " ");
	r |= env_field(out, msg, start, end, "Message-ID", utf8);
	r |= put(out, ")");
	return r != 0 ? -1 : 0;
}

/* ---- BODY / BODYSTRUCTURE ---------------------------------------------------------- */

static int body_params(struct buf *out, const struct mime_param *p, size_t n, int utf8,
                       int text_default)
{
	int r = 0;

	if (n == 0)
		return put(out, text_default ? "(\"charset\" \"us-ascii\")" : "NIL");
	r |= put(out, "(");
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			r |= put(out, " ");
		r |= put_nstr(out, p[i].name != NULL ? p[i].name : "", utf8);
		r |= put(out, " ");
		r |= put_nstr(out, p[i].value != NULL ? p[i].value : "", utf8);
	}
	r |= put(out, ")");
	return r;
}

static int body_disposition(struct buf *out, const struct mime_part *p, int utf8)
{
	int r = 0;

	if (p->disposition == NULL)
		return put(out, "NIL");
	r |= put(out, "(");
	r |= put_nstr(out, p->disposition, utf8);
	r |= put(out, " ");
	r |= body_params(out, p->disp_params, p->n_disp_params, utf8, 0);
	r |= put(out, ")");
	return r;
}

/* Content-Language (RFC 3282): one tag as a string, several as a list. */
static int body_language(struct buf *out, const struct mime_part *p, int utf8)
{
	const char *s = p->language;
	const char *tags[64];
	size_t lens[64], n = 0;
	int r = 0;

	if (s == NULL)
		return put(out, "NIL");
	while (*s != '\0' && n < 64) {
		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		const char *t = s;
		while (*s != '\0' && *s != ' ' && *s != '\t' && *s != ',')
			s++;
		if (s > t) {
			tags[n] = t;
			lens[n++] = (size_t)(s - t);
		}
	}
	if (n == 0)
		return put(out, "NIL");
	if (n == 1)
		return imap_write_string(out, tags[0], lens[0], utf8);
	r |= put(out, "(");
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			r |= put(out, " ");
		r |= imap_write_string(out, tags[i], lens[i], utf8);
	}
	r |= put(out, ")");
	return r;
}

static int body_ext_common(struct buf *out, const struct mime_part *p, int utf8)
{
	int r = 0;

	r |= put(out, " ");
	r |= body_disposition(out, p, utf8);
	r |= put(out, " ");
	r |= body_language(out, p, utf8);
	r |= put(out, " ");
	r |= put_nstr(out, p->location, utf8);
	return r;
}

static int is_message(const struct mime_part *p)
{
	return strcmp(p->type, "message") == 0 &&
	       (strcmp(p->subtype, "rfc822") == 0 || strcmp(p->subtype, "global") == 0);
}

int imap_render_body(struct buf *out, const char *msg, const struct mime_part *p, int extended,
                     int utf8)
{
	int r = 0;

	if (strcmp(p->type, "multipart") == 0) {
		r |= put(out, "(");
		if (p->n_children == 0) {
			/* RFC 2046 5.1.1 requires a part; show an empty one as Dovecot does. */
			r |= put(out, extended
			                  ? "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
			                    "NIL \"7bit\" 0 0 NIL NIL NIL NIL)"
			                  : "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
			                    "NIL \"7bit\" 0 0)");
		}
		for (size_t i = 0; i < p->n_children && r == 0; i++)
			r |= imap_render_body(out, msg, p->children[i], extended, utf8);
		r |= put(out, " ");
		r |= put_nstr(out, p->subtype, utf8);
		if (extended) {
			r |= put(out, " ");
			r |= body_params(out, p->params, p->n_params, utf8, 0);
			r |= body_ext_common(out, p, utf8);
		}
		r |= put(out, ")");
		return r != 0 ? -1 : 0;
	}

	int text = strcmp(p->type, "text") == 0;
	r |= put(out, "(");
	r |= put_nstr(out, p->type, utf8);
	r |= put(out, " ");
	r |= put_nstr(out, p->subtype, utf8);
	r |= put(out, " ");
	r |= body_params(out, p->params, p->n_params, utf8, text);
	r |= put(out, " ");
	r |= put_nstr(out, p->id, utf8);
	r |= put(out, " ");
	r |= put_nstr(out, p->description, utf8);
	r |= put(out, " ");
	r |= put_nstr(out, p->encoding != NULL ? p->encoding : "7bit", utf8);
	r |= buf_printf(out, " %zu", p->body_end - p->body_start);
	if (is_message(p) && p->n_children == 1) {
		const struct mime_part *m = p->children[0];
		r |= put(out, " ");
		r |= imap_render_envelope(out, msg, m->header_start, m->header_end, utf8);
		r |= put(out, " ");
		r |= imap_render_body(out, msg, m, extended, utf8);
		r |= buf_printf(out, " %zu", p->body_lines);
	} else if (text) {
		r |= buf_printf(out, " %zu", p->body_lines);
	}
	if (extended) {
		r |= put(out, " ");
		r |= put_nstr(out, p->md5, utf8);
		r |= body_ext_common(out, p, utf8);
	}
	r |= put(out, ")");
	return r != 0 ? -1 : 0;
}

/* ---- sections ------------------------------------------------------------------------ */

static int starts_ci(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);
	return len >= n && strncasecmp(s, word, n) == 0;
}

static int parse_u64(const char *s, size_t len, size_t *pos, uint64_t *v_r)
{
	size_t i = *pos;
	uint64_t v = 0;

	if (i >= len || s[i] < '0' || s[i] > '9')
		return -1;
	while (i < len && s[i] >= '0' && s[i] <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
		i++;
	}
	*pos = i;
	*v_r = v;
	return 0;
}

/* " (name name ...)" after HEADER.FIELDS[.NOT]. */
static int parse_field_list(const char *s, size_t len, size_t i, struct imap_section *sec)
{
	if (i >= len || s[i] != ' ')
		return -1;
	i++;
	if (i >= len || s[i] != '(')
		return -1;
	i++;
	for (;;) {
		while (i < len && s[i] == ' ')
			i++;
		if (i >= len)
			return -1;
		if (s[i] == ')') {
			i++;
			break;
		}
		size_t start, end;
		if (s[i] == '"') {
			start = ++i;
			while (i < len && s[i] != '"')
				i++;
			if (i >= len)
				return -1;
			end = i++;
		} else {
			start = i;
			while (i < len && s[i] != ' ' && s[i] != ')' && s[i] != '(' && s[i] != '"')
				i++;
			end = i;
		}
		if (end == start || sec->n_fields >= IMAP_SECTION_FIELDS_MAX)
			return -1;
		sec->fields[sec->n_fields].p = s + start;
		sec->fields[sec->n_fields].len = end - start;
		sec->n_fields++;
	}
	if (sec->n_fields == 0 || i != len)
		return -1;
	return 0;
}

int imap_section_parse(const char *s, size_t len, int binary, struct imap_section *sec)
{
	size_t i = 0;

	memset(sec, 0, sizeof(*sec));
	sec->binary = binary;
	sec->text = IMAP_SECTION_ALL;
	while (i < len && s[i] >= '0' && s[i] <= '9') {
		uint64_t v;
		if (parse_u64(s, len, &i, &v) < 0 || v == 0 || v > UINT32_MAX ||
		    sec->n_nums >= IMAP_SECTION_DEPTH_MAX)
			return -1;
		sec->nums[sec->n_nums++] = (uint32_t)v;
		if (i == len)
			return 0;
		if (s[i] != '.')
			return -1;
		i++;
		if (i >= len)
			return -1;
	}
	if (i == len)
		return 0;
	if (binary)
		return -1;
	const char *t = s + i;
	size_t tl = len - i;
	if (tl == 4 && strncasecmp(t, "TEXT", 4) == 0) {
		sec->text = IMAP_SECTION_TEXT;
	} else if (tl == 4 && strncasecmp(t, "MIME", 4) == 0) {
		if (sec->n_nums == 0)
			return -1;
		sec->text = IMAP_SECTION_MIME;
	} else if (tl == 6 && strncasecmp(t, "HEADER", 6) == 0) {
		sec->text = IMAP_SECTION_HEADER;
	} else if (starts_ci(t, tl, "HEADER.FIELDS.NOT")) {
		sec->text = IMAP_SECTION_FIELDS_NOT;
		return parse_field_list(s, len, i + 17, sec);
	} else if (starts_ci(t, tl, "HEADER.FIELDS")) {
		sec->text = IMAP_SECTION_FIELDS;
		return parse_field_list(s, len, i + 13, sec);
	} else {
		return -1;
	}
	return 0;
}

int imap_partial_parse(const char *s, size_t len, struct imap_section *sec)
{
	size_t i = 1;

	if (len < 5 || s[0] != '<' || s[len - 1] != '>')
		return -1;
	if (parse_u64(s, len, &i, &sec->origin) < 0 || i >= len || s[i] != '.')
		return -1;
	i++;
	if (parse_u64(s, len, &i, &sec->count) < 0 || i != len - 1 || sec->count == 0)
		return -1;
	sec->partial = 1;
	return 0;
}

struct hf_ctx {
	struct buf *out;
	const char *msg;
	const struct slice *names;
	size_t n;
	int not_;
	int err;
};

static int hf_cb(void *ctx, const char *name, size_t name_len, const char *value, size_t value_len)
{
	struct hf_ctx *h = ctx;
	int match = 0;

	for (size_t i = 0; i < h->n && !match; i++)
		match =
		    h->names[i].len == name_len && strncasecmp(h->names[i].p, name, name_len) == 0;
	if (match == h->not_)
		return 0;
	/* The field exactly as it is in the message, from its name to the end of its
	 * value, folding kept. */
	const char *end = value + value_len;
	while (end > name && (end[-1] == '\r' || end[-1] == '\n'))
		end--;
	if (buf_append(h->out, name, (size_t)(end - name)) < 0 ||
	    buf_append(h->out, "\r\n", 2) < 0) {
		h->err = 1;
		return 1;
	}
	return 0;
}

int imap_header_fields(struct buf *out, const char *msg, size_t start, size_t end,
                       const struct slice *names, size_t n, int not_)
{
	struct hf_ctx h = {out, msg, names, n, not_, 0};

	mime_header_each(msg, start, end, 100000, hf_cb, &h);
	if (h.err || buf_append(out, "\r\n", 2) < 0)
		return -1;
	return 0;
}

int imap_section_get(const char *msg, size_t len, const struct mime_part *root,
                     const struct imap_section *sec, struct imap_section_data *d)
{
	const struct mime_part *part = root;

	memset(d, 0, sizeof(*d));
	if (sec->n_nums > 0) {
		part = mime_section(root, sec->nums, sec->n_nums);
		if (part == NULL) {
			d->nil = 1;
			return 0;
		}
	}
	if (sec->binary) {
		if (sec->n_nums == 0 || strcmp(part->type, "multipart") == 0) {
			d->p = sec->n_nums == 0 ? msg : msg + part->body_start;
			d->len = sec->n_nums == 0 ? len : part->body_end - part->body_start;
			return 0;
		}
		int bad = 0;
		d->owned = mime_body_decode(msg, part, &d->len, &bad);
		if (d->owned == NULL)
			return -1;
		d->p = d->owned;
		d->unknown_cte = bad;
		return 0;
	}
	if (sec->text == IMAP_SECTION_ALL) {
		d->p = sec->n_nums == 0 ? msg : msg + part->body_start;
		d->len = sec->n_nums == 0 ? len : part->body_end - part->body_start;
		return 0;
	}
	if (sec->text == IMAP_SECTION_MIME) {
		d->p = msg + part->header_start;
		d->len = part->header_end - part->header_start;
		return 0;
	}
	/* HEADER, HEADER.FIELDS, TEXT: of the message, or of the message a message/rfc822
	 * part holds (RFC 9051 6.4.5).  Of any other part they are empty. */
	const struct mime_part *m = root;
	if (sec->n_nums > 0) {
		m = is_message(part) && part->n_children == 1 ? part->children[0] : NULL;
		if (m == NULL) {
			d->p = "";
			d->len = 0;
			return 0;
		}
	}
	switch (sec->text) {
	case IMAP_SECTION_HEADER:
		d->p = msg + m->header_start;
		d->len = m->header_end - m->header_start;
		return 0;
	case IMAP_SECTION_TEXT:
		d->p = msg + m->body_start;
		d->len = (m == root ? len : m->body_end) - m->body_start;
		return 0;
	default: {
		struct buf b;
		buf_init(&b, 0);
		if (imap_header_fields(&b, msg, m->header_start, m->header_end, sec->fields,
		                       sec->n_fields, sec->text == IMAP_SECTION_FIELDS_NOT) < 0) {
			buf_deinit(&b);
			return -1;
		}
		if (b.data == NULL) {
			d->p = "";
			return 0;
		}
		d->owned = b.data;
		d->p = b.data;
		d->len = b.len;
		return 0;
	}
	}
}

void imap_section_apply_partial(const struct imap_section *sec, struct imap_section_data *d)
{
	if (!sec->partial || d->nil)
		return;
	if (sec->origin >= d->len) {
		d->p += d->len;
		d->len = 0;
		return;
	}
	d->p += sec->origin;
	d->len -= (size_t)sec->origin;
	if (sec->count < d->len)
		d->len = (size_t)sec->count;
}

/* ---- matching -------------------------------------------------------------------------- */

/* Lower case of a two-byte UTF-8 code point, or cp itself.  Every mapping stays within
 * U+0080..U+07FF, so the byte length never changes. */
static unsigned fold_cp(unsigned cp)
{
	if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7)
		return cp + 0x20;
	if (cp >= 0x100 && cp <= 0x137)
		return cp | 1;
	if (cp >= 0x139 && cp <= 0x148)
		return (cp & 1) ? cp + 1 : cp;
	if (cp >= 0x14A && cp <= 0x177)
		return cp | 1;
	if (cp == 0x178)
		return 0xFF;
	if (cp >= 0x179 && cp <= 0x17E)
		return (cp & 1) ? cp + 1 : cp;
	if (cp >= 0x391 && cp <= 0x3A9 && cp != 0x3A2)
		return cp + 0x20;
	if (cp >= 0x410 && cp <= 0x42F)
		return cp + 0x20;
	if (cp >= 0x400 && cp <= 0x40F)
		return cp + 0x50;
	return cp;
}

void imap_fold(char *dst, const char *src, size_t len)
{
	const unsigned char *s = (const unsigned char *)src;
	unsigned char *o = (unsigned char *)dst;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		if (c < 0x80) {
			o[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
			i++;
		} else if (c >= 0xC2 && c <= 0xDF && i + 1 < len && (s[i + 1] & 0xC0) == 0x80) {
			unsigned cp = fold_cp(((unsigned)(c & 0x1F) << 6) | (s[i + 1] & 0x3F));
			o[i] = (unsigned char)(0xC0 | (cp >> 6));
			o[i + 1] = (unsigned char)(0x80 | (cp & 0x3F));
			i += 2;
		} else {
			o[i] = c;
			i++;
		}
	}
}

int imap_fold_contains(struct buf *scratch, const char *hay, size_t hay_len,
                       const char *folded_needle, size_t needle_len)
{
	if (needle_len == 0)
		return 1;
	if (hay_len < needle_len)
		return 0;
	buf_reset(scratch);
	if (buf_append(scratch, hay, hay_len) < 0)
		return 0;
	imap_fold(scratch->data, scratch->data, hay_len);
	return memmem(scratch->data, hay_len, folded_needle, needle_len) != NULL;
}
