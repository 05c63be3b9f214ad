/* Header fields (RFC 5322 2.2), Content-Type and Content-Disposition parameters
 * (RFC 2045 5.1, RFC 2183, RFC 2231) and encoded-words (RFC 2047). */
#include "msg/mime.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "msg/mime_private.h"

/* Raw parameters looked at per field: enough for any real RFC 2231 continuation, and
 * a bound on the work a hostile field can cause. */
#define MIME_RAW_PARAMS_MAX 4096
/* RFC 2047 2 caps an encoded-word at 75 characters; charset names are far shorter. */
#define MIME_CHARSET_MAX 64

void mime_header_each(const char *msg, size_t start, size_t end, int max,
		      int (*cb)(void *ctx, const char *name, size_t name_len,
				const char *value, size_t value_len),
		      void *ctx)
{
	size_t pos = start;
	int count = 0;

	/* A zeroed limit means no limit, not "no fields". */
	if (max <= 0)
		max = INT_MAX;
	while (pos < end && count < max) {
		const char *nl = memchr(msg + pos, '\n', end - pos);
		size_t next = nl != NULL ? (size_t)(nl - msg) + 1 : end;
		size_t le = nl != NULL ? (size_t)(nl - msg) : end;
		if (le > pos && msg[le - 1] == '\r')
			le--;
		if (le == pos)
			break; /* the empty line ending the header */
		if (mime_is_wsp((unsigned char)msg[pos])) {
			pos = next; /* a continuation with no field before it */
			continue;
		}
		/* field-name = 1*ftext (RFC 5322 3.6.8); obs-optional allows WSP before
		 * the colon (4.5.3).  Anything else, such as an mbox "From " line, is not
		 * a field. */
		size_t i = pos;
		while (i < le && msg[i] != ':' && !mime_is_wsp((unsigned char)msg[i]))
			i++;
		size_t name_end = i;
		while (i < le && mime_is_wsp((unsigned char)msg[i]))
			i++;
		if (i == le || msg[i] != ':' || name_end == pos) {
			pos = next;
			continue;
		}
		size_t value = i + 1, value_end = le;
		/* Folded lines: CRLF followed by WSP (2.2.3). */
		while (next < end && mime_is_wsp((unsigned char)msg[next])) {
			nl = memchr(msg + next, '\n', end - next);
			size_t n2 = nl != NULL ? (size_t)(nl - msg) + 1 : end;
			value_end = nl != NULL ? (size_t)(nl - msg) : end;
			if (value_end > next && msg[value_end - 1] == '\r')
				value_end--;
			next = n2;
		}
		count++;
		if (cb(ctx, msg + pos, name_end - pos, msg + value, value_end - value) != 0)
			break;
		pos = next;
	}
}

char *mime_value_unfold(const char *v, size_t len)
{
	char *r = malloc(len + 1);
	if (r == NULL)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '\n' || (v[i] == '\r' && i + 1 < len && v[i + 1] == '\n'))
			continue;
		r[o++] = v[i];
	}
	size_t a = 0;
	while (a < o && mime_is_wsp((unsigned char)r[a]))
		a++;
	while (o > a && mime_is_wsp((unsigned char)r[o - 1]))
		o--;
	memmove(r, r + a, o - a);
	r[o - a] = '\0';
	return r;
}

struct mime_get_ctx {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
	int found;
};

static int mime_get_cb(void *ctx, const char *name, size_t name_len, const char *value,
		       size_t value_len)
{
	struct mime_get_ctx *g = ctx;

	if (name_len != g->name_len || strncasecmp(name, g->name, name_len) != 0)
		return 0;
	g->value = value;
	g->value_len = value_len;
	g->found = 1;
	return 1;
}

char *mime_header_get(const char *msg, size_t start, size_t end, const char *name)
{
	struct mime_get_ctx g = { name, strlen(name), NULL, 0, 0 };

	mime_header_each(msg, start, end, INT_MAX, mime_get_cb, &g);
	if (!g.found)
		return NULL;
	return mime_value_unfold(g.value, g.value_len);
}

/* ---- Content-Type, Content-Disposition ------------------------------------------------ */

/* RFC 2045 5.1 token: no SPACE, CTLs or tspecials.  8-bit bytes are let through:
 * they are wrong but harmless. */
static int mime_is_token(int c)
{
	return c > 32 && c != 127 && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* Skips WSP and RFC 5322 3.2.2 comments (nested, with quoted-pairs). */
static size_t mime_skip_cfws(const char *s, size_t len, size_t i)
{
	while (i < len) {
		if (mime_is_wsp((unsigned char)s[i]) || s[i] == '\r' || s[i] == '\n') {
			i++;
		} else if (s[i] == '(') {
			int depth = 0;
			for (; i < len; i++) {
				if (s[i] == '\\' && i + 1 < len)
					i++;
				else if (s[i] == '(')
					depth++;
				else if (s[i] == ')' && --depth == 0)
					break;
			}
			if (i < len)
				i++;
		} else {
			break;
		}
	}
	return i;
}

static size_t mime_skip_token(const char *s, size_t len, size_t i)
{
	while (i < len && mime_is_token((unsigned char)s[i]))
		i++;
	return i;
}

struct mime_raw_param {
	char *name;     /* base name, lower-cased, RFC 2231 suffixes removed */
	char *value;
	long section;   /* name*N, or -1 */
	int ext;        /* name* or name*N*: charset'lang'%XX */
	size_t order;
};

static int mime_raw_cmp(const void *a, const void *b)
{
	const struct mime_raw_param *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	if (c != 0)
		return c;
	if (x->section != y->section)
		return x->section < y->section ? -1 : 1;
	if (x->ext != y->ext)
		return x->ext - y->ext;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Splits an RFC 2231 name: "n*" (ext), "n*3" (section), "n*3*" (both). */
static void mime_raw_split(struct mime_raw_param *r)
{
	size_t n = strlen(r->name);

	r->section = -1;
	r->ext = 0;
	if (n > 1 && r->name[n - 1] == '*') {
		r->ext = 1;
		r->name[--n] = '\0';
	}
	size_t d = n;
	while (d > 0 && r->name[d - 1] >= '0' && r->name[d - 1] <= '9')
		d--;
	if (d < n && d > 1 && r->name[d - 1] == '*' && n - d <= 6) {
		r->section = strtol(r->name + d, NULL, 10);
		r->name[d - 1] = '\0';
	}
}

/* Decodes %XX (RFC 2231 4: extended-other-values) appending to out. */
static int mime_pct_append(struct buf *out, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int h, l;
		if (s[i] == '%' && i + 2 < len && (h = mime_hex_value((unsigned char)s[i + 1])) >= 0 &&
		    (l = mime_hex_value((unsigned char)s[i + 2])) >= 0) {
			char c = (char)(h << 4 | l);
			if (buf_append(out, &c, 1) < 0)
				return -1;
			i += 2;
		} else if (buf_append(out, s + i, 1) < 0) {
			return -1;
		}
	}
	return 0;
}

/* The value of one parameter from its raw pieces r[0..n) (same name, sorted by
 * section): RFC 2231 3 continuations joined, 4 charset'language'%XX decoded. */
static char *mime_param_value(const struct mime_raw_param *r, size_t n)
{
	const struct mime_raw_param *plain = NULL, *single = NULL;
	size_t first_sec = n;

	for (size_t i = 0; i < n; i++) {
		if (r[i].section >= 0) {
			if (first_sec == n)
				first_sec = i;
		} else if (r[i].ext) {
			if (single == NULL)
				single = &r[i];
		} else if (plain == NULL) {
			plain = &r[i];
		}
	}
	/* The RFC 2231 form wins: a sender giving both means the plain one for readers
	 * that do not know RFC 2231. */
	const struct mime_raw_param *pieces = single;
	size_t n_pieces = 1;
	if (first_sec < n) {
		pieces = &r[first_sec];
		n_pieces = n - first_sec;
	}
	if (pieces == NULL)
		return strdup(plain != NULL ? plain->value : "");

	struct buf raw, bytes;
	char charset[MIME_CHARSET_MAX + 1] = "";
	int any_ext = 0, ok = 1;
	buf_init(&raw, 0);
	buf_init(&bytes, 0);
	for (size_t i = 0; i < n_pieces && ok; i++) {
		/* Duplicate section numbers: the first one counts. */
		if (i > 0 && pieces[i].section >= 0 && pieces[i].section == pieces[i - 1].section)
			continue;
		const char *v = pieces[i].value;
		size_t vl = strlen(v);
		ok = buf_append(&raw, v, vl) == 0;
		if (!pieces[i].ext) {
			ok = ok && buf_append(&bytes, v, vl) == 0;
			continue;
		}
		if (!any_ext && i == 0) {
			/* charset'language' only on the first piece (RFC 2231 4.1). */
			const char *q1 = memchr(v, '\'', vl);
			const char *q2 = q1 != NULL ? memchr(q1 + 1, '\'', vl - (size_t)(q1 + 1 - v))
						    : NULL;
			if (q2 != NULL) {
				size_t cl = (size_t)(q1 - v);
				if (cl <= MIME_CHARSET_MAX) {
					memcpy(charset, v, cl);
					charset[cl] = '\0';
				}
				vl -= (size_t)(q2 + 1 - v);
				v = q2 + 1;
			}
		}
		any_ext = 1;
		ok = ok && mime_pct_append(&bytes, v, vl) == 0;
	}

	char *result = NULL;
	if (ok && any_ext) {
		struct buf out;
		buf_init(&out, 0);
		int rc = mime_charset_append(&out, charset[0] != '\0' ? charset : NULL,
					     bytes.data != NULL ? bytes.data : "", bytes.len);
		if (rc == 0)
			result = mime_strndup(out.data != NULL ? out.data : "", out.len, 0);
		else if (rc == 1)
			result = mime_strndup(raw.data != NULL ? raw.data : "", raw.len, 0);
		buf_deinit(&out);
	} else if (ok) {
		result = mime_strndup(bytes.data != NULL ? bytes.data : "", bytes.len, 0);
	}
	buf_deinit(&raw);
	buf_deinit(&bytes);
	return result;
}

void mime_params_free(struct mime_param *params, size_t n)
{
	if (params == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(params[i].name);
		free(params[i].value);
	}
	free(params);
}

struct mime_group {
	size_t first, n, order;
};

static int mime_group_cmp(const void *a, const void *b)
{
	const struct mime_group *x = a, *y = b;
	return x->order < y->order ? -1 : x->order > y->order;
}

int mime_params_parse(const char *s, size_t len, size_t max, struct mime_param **params_r,
		      size_t *n_r)
{
	struct mime_raw_param *raw = NULL;
	size_t n_raw = 0, cap_raw = 0, i = 0;
	int rc = 0;

	*params_r = NULL;
	*n_r = 0;
	while (i < len && n_raw < MIME_RAW_PARAMS_MAX) {
		i = mime_skip_cfws(s, len, i);
		if (i >= len)
			break;
		if (s[i] != ';') {
			/* Junk between parameters: resynchronise at the next ";". */
			const char *semi = memchr(s + i, ';', len - i);
			if (semi == NULL)
				break;
			i = (size_t)(semi - s);
		}
		i = mime_skip_cfws(s, len, i + 1);
		size_t ns = i;
		i = mime_skip_token(s, len, i);
		size_t ne = i;
		i = mime_skip_cfws(s, len, i);
		if (ne == ns || i >= len || s[i] != '=')
			continue;
		i = mime_skip_cfws(s, len, i + 1);

		struct buf v;
		buf_init(&v, 0);
		int ok = 1;
		if (i < len && s[i] == '"') {
			/* quoted-string (RFC 5322 3.2.4); an unterminated one runs to the end. */
			for (i++; i < len && s[i] != '"'; i++) {
				if (s[i] == '\\' && i + 1 < len)
					i++;
				if (buf_append(&v, s + i, 1) < 0)
					ok = 0;
			}
			if (i < len)
				i++;
		} else {
			/* A token, or, tolerantly, anything up to the next ";" (unquoted
			 * file names with spaces are common). */
			size_t vs = i;
			while (i < len && s[i] != ';')
				i++;
			size_t ve = i;
			while (ve > vs && (mime_is_wsp((unsigned char)s[ve - 1]) ||
					   s[ve - 1] == '\r' || s[ve - 1] == '\n'))
				ve--;
			ok = buf_append(&v, s + vs, ve - vs) == 0;
		}
		if (ok && n_raw == cap_raw) {
			size_t cap = cap_raw ? cap_raw * 2 : 8;
			struct mime_raw_param *r = realloc(raw, cap * sizeof(*r));
			if (r == NULL)
				ok = 0;
			else {
				raw = r;
				cap_raw = cap;
			}
		}
		char *name = ok ? mime_strndup(s + ns, ne - ns, 1) : NULL;
		char *value = ok ? mime_strndup(v.data != NULL ? v.data : "", v.len, 0) : NULL;
		buf_deinit(&v);
		if (name == NULL || value == NULL) {
			free(name);
			free(value);
			rc = -1;
			goto out;
		}
		raw[n_raw].name = name;
		raw[n_raw].value = value;
		raw[n_raw].order = n_raw;
		mime_raw_split(&raw[n_raw]);
		n_raw++;
	}
	if (n_raw == 0 || max == 0)
		goto out;

	/* Group the pieces of each parameter, then restore the order of first
	 * appearance. */
	qsort(raw, n_raw, sizeof(*raw), mime_raw_cmp);
	struct mime_group *groups = malloc(n_raw * sizeof(*groups));
	if (groups == NULL) {
		rc = -1;
		goto out;
	}
	size_t n_groups = 0;
	for (size_t k = 0; k < n_raw; k++) {
		if (k == 0 || strcmp(raw[k].name, raw[k - 1].name) != 0) {
			groups[n_groups].first = k;
			groups[n_groups].n = 0;
			groups[n_groups].order = raw[k].order;
			n_groups++;
		}
		struct mime_group *g = &groups[n_groups - 1];
		g->n++;
		if (raw[k].order < g->order)
			g->order = raw[k].order;
	}
	qsort(groups, n_groups, sizeof(*groups), mime_group_cmp);
	if (n_groups > max)
		n_groups = max;
	struct mime_param *params = calloc(n_groups, sizeof(*params));
	if (params == NULL) {
		free(groups);
		rc = -1;
		goto out;
	}
	for (size_t k = 0; k < n_groups; k++) {
		const struct mime_raw_param *r = &raw[groups[k].first];
		params[k].name = strdup(r->name);
		params[k].value = mime_param_value(r, groups[k].n);
		if (params[k].name == NULL || params[k].value == NULL) {
			mime_params_free(params, k + 1);
			free(groups);
			rc = -1;
			goto out;
		}
	}
	free(groups);
	*params_r = params;
	*n_r = n_groups;
out:
	for (size_t k = 0; k < n_raw; k++) {
		free(raw[k].name);
		free(raw[k].value);
	}
	free(raw);
	return rc;
}

int mime_ctype_parse(const char *s, size_t len, size_t max_params, struct mime_part *part)
{
	size_t i = mime_skip_cfws(s, len, 0);
	size_t ts = i;
	i = mime_skip_token(s, len, i);
	size_t te = i;
	i = mime_skip_cfws(s, len, i);
	if (te == ts || i >= len || s[i] != '/')
		return 0;
	i = mime_skip_cfws(s, len, i + 1);
	size_t ss = i;
	i = mime_skip_token(s, len, i);
	size_t se = i;
	if (se == ss)
		return 0;
	part->type = mime_strndup(s + ts, te - ts, 1);
	part->subtype = mime_strndup(s + ss, se - ss, 1);
	if (part->type == NULL || part->subtype == NULL)
		return -1;
	return mime_params_parse(s + i, len - i, max_params, &part->params, &part->n_params);
}

int mime_cdisp_parse(const char *s, size_t len, size_t max_params, struct mime_part *part)
{
	size_t i = mime_skip_cfws(s, len, 0);
	size_t ts = i;
	i = mime_skip_token(s, len, i);
	if (i == ts)
		return 0;
	part->disposition = mime_strndup(s + ts, i - ts, 1);
	if (part->disposition == NULL)
		return -1;
	return mime_params_parse(s + i, len - i, max_params, &part->disp_params,
				 &part->n_disp_params);
}

/* ---- RFC 2047 encoded-words ----------------------------------------------------------- */

struct mime_word {
	char charset[MIME_CHARSET_MAX + 1];
	char enc;             /* 'b' or 'q' */
	const char *text;
	size_t text_len;
	size_t end;           /* just past "?=" */
};

/* encoded-word = "=?" charset "?" encoding "?" encoded-text "?=" (RFC 2047 2), with
 * RFC 2231 5's "*language" after the charset.  No WSP anywhere inside (RFC 2047 5). */
static int mime_word_parse(const char *s, size_t len, size_t i, struct mime_word *w)
{
	size_t cs = i + 2, j = cs;

	while (j < len && j - cs <= MIME_CHARSET_MAX && s[j] != '?' && mime_is_token((unsigned char)s[j]))
		j++;
	if (j >= len || s[j] != '?' || j == cs || j - cs > MIME_CHARSET_MAX)
		return 0;
	size_t cl = j - cs;
	const char *star = memchr(s + cs, '*', cl);
	if (star != NULL)
		cl = (size_t)(star - (s + cs));
	if (cl == 0)
		return 0;
	memcpy(w->charset, s + cs, cl);
	w->charset[cl] = '\0';
	if (j + 2 >= len || s[j + 2] != '?')
		return 0;
	w->enc = mime_lower((unsigned char)s[j + 1]);
	if (w->enc != 'b' && w->enc != 'q')
		return 0;
	size_t ts = j + 3, k = ts;
	while (k < len && s[k] != '?' && (unsigned char)s[k] > 32 && s[k] != 127)
		k++;
	if (k + 1 >= len || s[k] != '?' || s[k + 1] != '=')
		return 0;
	w->text = s + ts;
	w->text_len = k - ts;
	w->end = k + 2;
	return 1;
}

/* RFC 2047 4.2: "_" is space, "=XX" an octet. */
static int mime_q_append(struct buf *out, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		int h, l;
		if (c == '_') {
			c = ' ';
		} else if (c == '=' && i + 2 < len && (h = mime_hex_value((unsigned char)s[i + 1])) >= 0 &&
			   (l = mime_hex_value((unsigned char)s[i + 2])) >= 0) {
			c = (char)(h << 4 | l);
			i += 2;
		}
		if (buf_append(out, &c, 1) < 0)
			return -1;
	}
	return 0;
}

/* Converts the pending decoded bytes of adjacent words of one charset: a multi-byte
 * character may be split between two words. */
static int mime_words_flush(struct buf *out, struct buf *pend, const char *charset)
{
	if (pend->len == 0)
		return 0;
	int rc = mime_charset_append(out, charset, pend->data, pend->len);
	/* An unknown charset: the bytes are most likely ASCII or UTF-8 anyway. */
	if (rc == 1)
		rc = mime_utf8_append(out, pend->data, pend->len);
	buf_reset(pend);
	return rc < 0 ? -1 : 0;
}

/* Plain text s[0..len) without its line ends (unfolding). */
static int mime_plain_append(struct buf *out, const char *s, size_t len)
{
	size_t a = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '\r' || s[i] == '\n') {
			if (i > a && mime_utf8_append(out, s + a, i - a) < 0)
				return -1;
			a = i + 1;
		}
	}
	return 0;
}

char *mime_decode_words(const char *value, size_t len)
{
	struct buf out, pend;
	char charset[MIME_CHARSET_MAX + 1] = "";
	size_t i = 0, plain = 0;
	int after_word = 0, ok = 1;

	buf_init(&out, 0);
	buf_init(&pend, 0);
	while (i < len && ok) {
		struct mime_word w;
		if (value[i] != '=' || i + 1 >= len || value[i + 1] != '?' ||
		    !mime_word_parse(value, len, i, &w)) {
			i++;
			continue;
		}
		/* Text between words: dropped when only whitespace separates two
		 * encoded-words (RFC 2047 6.2), else kept. */
		int only_ws = 1;
		for (size_t k = plain; k < i; k++) {
			if (!mime_is_wsp((unsigned char)value[k]) && value[k] != '\r' &&
			    value[k] != '\n') {
				only_ws = 0;
				break;
			}
		}
		if (!(after_word && only_ws)) {
			ok = mime_words_flush(&out, &pend, charset) == 0 &&
			     mime_plain_append(&out, value + plain, i - plain) == 0;
		}
		if (ok && strcasecmp(charset, w.charset) != 0) {
			ok = mime_words_flush(&out, &pend, charset) == 0;
			memcpy(charset, w.charset, sizeof(charset));
		}
		if (ok) {
			if (w.enc == 'b')
				ok = mime_base64_append(&pend, w.text, w.text_len) == 0;
			else
				ok = mime_q_append(&pend, w.text, w.text_len) == 0;
		}
		after_word = 1;
		i = plain = w.end;
	}
	if (ok)
		ok = mime_words_flush(&out, &pend, charset) == 0 &&
		     mime_plain_append(&out, value + plain, len - plain) == 0;
	buf_deinit(&pend);
	char *r = ok ? mime_strndup(out.data != NULL ? out.data : "", out.len, 0) : NULL;
	buf_deinit(&out);
	return r;
}
