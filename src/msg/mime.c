/* The MIME tree: one pass over the message, each line looked at once by the innermost
 * entity that contains it.  An entity (RFC 2045 section 2.4) runs until a delimiter
 * line of any enclosing multipart or the end of the message; so a part cut short by a
 * missing close delimiter, or an inner multipart whose close delimiter never comes,
 * still ends where its parent's next delimiter says (RFC 2046 5.1.2). */
#include "msg/mime.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "msg/mime_private.h"

/* Recursion follows nesting; whatever limits the caller passes, a hostile message
 * cannot take more stack than this many levels. */
#define MIME_DEPTH_HARD_MAX 256

struct mime_bound {
	const char *p;
	size_t len;
};

struct mime_parser {
	const char *msg;
	size_t len;
	struct mime_limits lim;
	int n_parts;
	int oom;
	/* Boundaries of the multiparts being parsed, outermost first. */
	struct mime_bound *bounds;
	size_t n_bounds, cap_bounds;
	/* Set by every scan that stops: which delimiter stopped it (-1: the end of the
	 * message), whether it was a close delimiter, and where the next line starts. */
	long hit;
	int hit_close;
	size_t hit_next;
};

void mime_limits_default(struct mime_limits *lim)
{
	lim->max_depth = 20;
	lim->max_parts = 1000;
	lim->max_headers = 1000;
	lim->max_params = 32;
}

char *mime_strndup(const char *s, size_t len, int lower)
{
	char *r = malloc(len + 1);
	if (r == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
		r[i] = lower ? mime_lower((unsigned char)s[i]) : s[i];
	r[len] = '\0';
	return r;
}

/* The end of the line starting at pos (before its CRLF or LF), *next_r the start of
 * the next one.  Bare CR is not a line end: RFC 5322 2.3 allows only CRLF, and bare
 * LF is accepted only because files on disk use it. */
static size_t mp_line(const struct mime_parser *p, size_t pos, size_t *next_r)
{
	const char *nl = memchr(p->msg + pos, '\n', p->len - pos);
	if (nl == NULL) {
		*next_r = p->len;
		return p->len;
	}
	size_t i = (size_t)(nl - p->msg);
	*next_r = i + 1;
	if (i > pos && p->msg[i - 1] == '\r')
		i--;
	return i;
}

/* Is msg[pos, end) a delimiter line of a multipart being parsed?  RFC 2046 5.1.1:
 * "--" boundary, "--" more for the close delimiter, then transport padding (LWSP).
 * The innermost boundary is tried first.  Returns the index in bounds or -1. */
static long mp_delim(const struct mime_parser *p, size_t pos, size_t end, int *close_r)
{
	const char *s = p->msg + pos;
	size_t n = end - pos;

	if (n < 3 || s[0] != '-' || s[1] != '-')
		return -1;
	for (size_t k = p->n_bounds; k-- > 0;) {
		const struct mime_bound *b = &p->bounds[k];
		if (n - 2 < b->len || memcmp(s + 2, b->p, b->len) != 0)
			continue;
		size_t i = 2 + b->len;
		int close = 0;
		if (n - i >= 2 && s[i] == '-' && s[i + 1] == '-') {
			close = 1;
			i += 2;
		}
		while (i < n && (mime_is_wsp((unsigned char)s[i]) || s[i] == '\r'))
			i++;
		if (i == n) {
			*close_r = close;
			return (long)k;
		}
	}
	return -1;
}

/* Scans lines from pos to the first delimiter of any multipart being parsed; returns
 * the start of that line (p->hit says which) or the end of the message. */
static size_t mp_scan(struct mime_parser *p, size_t pos)
{
	p->hit = -1;
	if (p->n_bounds == 0)
		return p->len;
	while (pos < p->len) {
		size_t next, end = mp_line(p, pos, &next);
		int close;
		long k = mp_delim(p, pos, end, &close);
		if (k >= 0) {
			p->hit = k;
			p->hit_close = close;
			p->hit_next = next;
			return pos;
		}
		pos = next;
	}
	return p->len;
}

/* The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1), so an
 * entity stopped by the delimiter line at pos ends before that line end; never
 * before floor. */
static size_t mp_trim_eol(const struct mime_parser *p, size_t pos, size_t floor)
{
	if (pos == p->len && p->hit < 0)
		return pos;
	if (pos > floor && p->msg[pos - 1] == '\n') {
		pos--;
		if (pos > floor && p->msg[pos - 1] == '\r')
			pos--;
	}
	return pos;
}

static size_t mp_count_lines(const char *s, size_t len)
{
	size_t n = 0;
	const char *end = s + len;

	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		n++;
		if (nl == NULL)
			break;
		s = nl + 1;
	}
	return n;
}

static struct mime_part *mp_part_new(struct mime_parser *p, struct mime_part *parent)
{
	if (p->n_parts >= p->lim.max_parts)
		return NULL;
	struct mime_part *part = calloc(1, sizeof(*part));
	if (part == NULL) {
		p->oom = 1;
		return NULL;
	}
	part->parent = parent;
	if (parent != NULL) {
		/* Grow by doubling: a part count comes from the message, never trusted to
		 * size an allocation up front. */
		size_t n = parent->n_children;
		if ((n & (n - 1)) == 0) {
			size_t cap = n == 0 ? 1 : n * 2;
			struct mime_part **c = realloc(parent->children, cap * sizeof(*c));
			if (c == NULL) {
				free(part);
				p->oom = 1;
				return NULL;
			}
			parent->children = c;
		}
		parent->children[parent->n_children++] = part;
	}
	p->n_parts++;
	return part;
}

struct mp_fields {
	const char *ctype, *cte, *id, *desc, *md5, *disp, *lang, *loc;
	size_t ctype_len, cte_len, id_len, desc_len, md5_len, disp_len, lang_len, loc_len;
};

static int mp_field_cb(void *ctx, const char *name, size_t name_len, const char *value,
		       size_t value_len)
{
	static const struct {
		const char *name;
		size_t off, len_off;
	} known[] = {
#define F(n, f) { n, offsetof(struct mp_fields, f), offsetof(struct mp_fields, f##_len) }
		F("content-type", ctype),
		F("content-transfer-encoding", cte),
		F("content-id", id),
		F("content-description", desc),
		F("content-md5", md5),
		F("content-disposition", disp),
		F("content-language", lang),
		F("content-location", loc),
#undef F
	};
	struct mp_fields *f = ctx;

	if (name_len < 10 || strncasecmp(name, "content-", 8) != 0)
		return 0;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strlen(known[i].name) != name_len ||
		    strncasecmp(known[i].name, name, name_len) != 0)
			continue;
		const char **v = (const char **)((char *)f + known[i].off);
		/* The first occurrence wins, as in most readers. */
		if (*v == NULL) {
			*v = value;
			*(size_t *)((char *)f + known[i].len_off) = value_len;
		}
		break;
	}
	return 0;
}

/* Unfolded, trimmed copy of a raw value, or NULL (absent or out of memory: *oom). */
static char *mp_value(const char *v, size_t len, int *oom)
{
	if (v == NULL)
		return NULL;
	char *r = mime_value_unfold(v, len);
	if (r == NULL)
		*oom = 1;
	return r;
}

/* RFC 2045 6.1: the mechanism is a token; case-insensitive. */
static char *mp_token_lower(const char *v, size_t len, int *oom)
{
	if (v == NULL)
		return NULL;
	size_t i = 0;
	while (i < len && (mime_is_wsp((unsigned char)v[i]) || v[i] == '\r' || v[i] == '\n'))
		i++;
	size_t s = i;
	while (i < len && !mime_is_wsp((unsigned char)v[i]) && v[i] != '\r' && v[i] != '\n' &&
	       v[i] != ';' && v[i] != '(')
		i++;
	if (i == s)
		return NULL;
	char *r = mime_strndup(v + s, i - s, 1);
	if (r == NULL)
		*oom = 1;
	return r;
}

/* Reads the content fields of part's header. */
static void mp_content(struct mime_parser *p, struct mime_part *part, int in_digest)
{
	struct mp_fields f;
	int oom = 0;

	memset(&f, 0, sizeof(f));
	mime_header_each(p->msg, part->header_start, part->header_end, p->lim.max_headers,
			 mp_field_cb, &f);

	if (f.ctype != NULL) {
		char *v = mime_value_unfold(f.ctype, f.ctype_len);
		if (v == NULL || mime_ctype_parse(v, strlen(v), p->lim.max_params, part) < 0)
			oom = 1;
		free(v);
	}
	if (part->type == NULL) {
		/* RFC 2045 5.2 and RFC 2046 5.1.5: absent or unparsable. */
		mime_params_free(part->params, part->n_params);
		part->params = NULL;
		part->n_params = 0;
		part->type = strdup(in_digest ? "message" : "text");
		part->subtype = strdup(in_digest ? "rfc822" : "plain");
		if (part->type == NULL || part->subtype == NULL)
			oom = 1;
	}
	part->encoding = mp_token_lower(f.cte, f.cte_len, &oom);
	part->id = mp_value(f.id, f.id_len, &oom);
	part->description = mp_value(f.desc, f.desc_len, &oom);
	part->md5 = mp_value(f.md5, f.md5_len, &oom);
	part->language = mp_value(f.lang, f.lang_len, &oom);
	part->location = mp_value(f.loc, f.loc_len, &oom);
	if (f.disp != NULL) {
		char *v = mime_value_unfold(f.disp, f.disp_len);
		if (v == NULL || mime_cdisp_parse(v, strlen(v), p->lim.max_params, part) < 0)
			oom = 1;
		free(v);
	}
	if (oom)
		p->oom = 1;
}

static const char *mp_param(const struct mime_part *part, const char *name)
{
	for (size_t i = 0; i < part->n_params; i++) {
		if (strcmp(part->params[i].name, name) == 0)
			return part->params[i].value;
	}
	return NULL;
}

/* An embedded message is parsed only when its bytes are the message itself: a
 * base64 message/rfc822 (RFC 2046 5.2.1 forbids it, some senders do it) would parse
 * as garbage. */
static int mp_identity_encoding(const struct mime_part *part)
{
	const char *e = part->encoding;
	return e == NULL || strcmp(e, "7bit") == 0 || strcmp(e, "8bit") == 0 ||
	       strcmp(e, "binary") == 0;
}

static size_t mp_entity(struct mime_parser *p, struct mime_part *part, size_t pos, int depth,
			int in_digest);

/* The body of a multipart from part->body_start; returns where the part stops. */
static size_t mp_multipart(struct mime_parser *p, struct mime_part *part, const char *boundary,
			   int depth)
{
	if (p->n_bounds == p->cap_bounds) {
		size_t cap = p->cap_bounds ? p->cap_bounds * 2 : 8;
		struct mime_bound *b = realloc(p->bounds, cap * sizeof(*b));
		if (b == NULL) {
			p->oom = 1;
			return mp_scan(p, part->body_start);
		}
		p->bounds = b;
		p->cap_bounds = cap;
	}
	long mine = (long)p->n_bounds;
	p->bounds[p->n_bounds].p = boundary;
	p->bounds[p->n_bounds].len = strlen(boundary);
	p->n_bounds++;
	int digest = strcmp(part->subtype, "digest") == 0;

	/* The preamble, then one part per delimiter. */
	size_t pos = mp_scan(p, part->body_start);
	while (p->hit == mine && !p->hit_close) {
		struct mime_part *child = p->oom ? NULL : mp_part_new(p, part);
		if (child != NULL)
			pos = mp_entity(p, child, p->hit_next, depth + 1, digest);
		else
			pos = mp_scan(p, p->hit_next); /* past max_parts: skipped */
	}
	p->n_bounds--;
	if (p->hit == mine) {
		/* The epilogue runs to a delimiter of an enclosing multipart. */
		pos = mp_scan(p, p->hit_next);
	}
	return pos;
}

/* Parses the entity starting at pos into part; returns the start of the delimiter line
 * that ends it (p->hit says which) or the end of the message. */
static size_t mp_entity(struct mime_parser *p, struct mime_part *part, size_t pos, int depth,
			int in_digest)
{
	size_t cur = pos, stop;

	part->header_start = pos;
	/* RFC 5322 2.1: the header ends at the first empty line; without one the whole
	 * entity is header. */
	p->hit = -1;
	for (;;) {
		if (cur >= p->len) {
			stop = p->len;
			part->header_end = p->len;
			break;
		}
		size_t next, end = mp_line(p, cur, &next);
		int close;
		long k = p->n_bounds > 0 ? mp_delim(p, cur, end, &close) : -1;
		if (k >= 0) {
			p->hit = k;
			p->hit_close = close;
			p->hit_next = next;
			stop = cur;
			part->header_end = mp_trim_eol(p, cur, pos);
			break;
		}
		if (end == cur && next < p->len && p->n_bounds > 0) {
			/* An empty line right before a delimiter is the delimiter's line
			 * end: the entity is all header, and its parent's body does not
			 * stop short of its child's. */
			size_t next2, end2 = mp_line(p, next, &next2);
			k = mp_delim(p, next, end2, &close);
			if (k >= 0) {
				p->hit = k;
				p->hit_close = close;
				p->hit_next = next2;
				stop = next;
				part->header_end = mp_trim_eol(p, next, pos);
				break;
			}
		}
		if (end == cur) {
			stop = SIZE_MAX;
			part->header_end = next;
			break;
		}
		cur = next;
	}
	part->body_start = part->header_end;
	mp_content(p, part, in_digest);
	if (stop != SIZE_MAX) {
		part->body_end = part->body_start;
		return stop;
	}

	const char *boundary = NULL;
	int multipart = strcmp(part->type, "multipart") == 0;
	if (multipart)
		boundary = mp_param(part, "boundary");
	int can_descend = depth < p->lim.max_depth && depth < MIME_DEPTH_HARD_MAX && !p->oom;

	if (multipart && can_descend && boundary != NULL && boundary[0] != '\0') {
		stop = mp_multipart(p, part, boundary, depth);
	} else if (!multipart && can_descend && strcmp(part->type, "message") == 0 &&
		   (strcmp(part->subtype, "rfc822") == 0 || strcmp(part->subtype, "global") == 0) &&
		   mp_identity_encoding(part)) {
		struct mime_part *child = mp_part_new(p, part);
		if (child != NULL)
			stop = mp_entity(p, child, part->body_start, depth + 1, 0);
		else
			stop = mp_scan(p, part->body_start);
	} else {
		stop = mp_scan(p, part->body_start);
	}
	part->body_end = mp_trim_eol(p, stop, part->body_start);
	if (!multipart)
		part->body_lines =
			mp_count_lines(p->msg + part->body_start, part->body_end - part->body_start);
	return stop;
}

struct mime_part *mime_parse(const char *msg, size_t len, const struct mime_limits *lim)
{
	struct mime_parser p;

	memset(&p, 0, sizeof(p));
	p.msg = msg;
	p.len = len;
	if (lim != NULL)
		p.lim = *lim;
	else
		mime_limits_default(&p.lim);
	if (p.lim.max_parts < 1)
		p.lim.max_parts = 1;

	struct mime_part *root = mp_part_new(&p, NULL);
	if (root == NULL)
		return NULL;
	mp_entity(&p, root, 0, 0, 0);
	free(p.bounds);
	if (p.oom)
		mime_free(&root);
	return root;
}

static void mime_part_free_fields(struct mime_part *part)
{
	free(part->type);
	free(part->subtype);
	mime_params_free(part->params, part->n_params);
	free(part->id);
	free(part->description);
	free(part->md5);
	free(part->encoding);
	free(part->disposition);
	mime_params_free(part->disp_params, part->n_disp_params);
	free(part->language);
	free(part->location);
	free(part->children);
	free(part);
}

void mime_free(struct mime_part **rootp)
{
	struct mime_part *part = *rootp;

	if (part == NULL)
		return;
	*rootp = NULL;
	/* Iterative, children first, through the parent links: no recursion on a tree
	 * whose depth came from the message. */
	for (;;) {
		while (part->n_children > 0)
			part = part->children[--part->n_children];
		struct mime_part *parent = part->parent;
		mime_part_free_fields(part);
		if (parent == NULL)
			break;
		part = parent;
	}
}

static int mime_is_message(const struct mime_part *part)
{
	return strcmp(part->type, "message") == 0 &&
	       (strcmp(part->subtype, "rfc822") == 0 || strcmp(part->subtype, "global") == 0);
}

static int mime_is_multipart(const struct mime_part *part)
{
	return strcmp(part->type, "multipart") == 0;
}

const struct mime_part *mime_section(const struct mime_part *root, const uint32_t *nums, size_t n)
{
	const struct mime_part *part = root;
	/* RFC 9051 6.4.5: numbers address the parts of a message; a message that is not
	 * multipart has a single part 1, its own body.  The top level is a message, and
	 * so is the body of every message/rfc822 part. */
	int in_message = 1;

	for (size_t i = 0; i < n; i++) {
		uint32_t k = nums[i];
		if (k == 0)
			return NULL;
		if (!in_message) {
			if (mime_is_message(part)) {
				if (part->n_children == 0)
					return NULL;
				part = part->children[0];
			} else if (!mime_is_multipart(part)) {
				return NULL;
			}
		}
		if (mime_is_multipart(part)) {
			if (k > part->n_children)
				return NULL;
			part = part->children[k - 1];
		} else if (k != 1) {
			return NULL;
		}
		in_message = 0;
	}
	return part;
}
