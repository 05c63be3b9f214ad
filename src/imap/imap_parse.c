#include "imap/imap_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- characters (RFC 9051 9) ---- */

/* ATOM-CHAR: CHAR except atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
 * quoted-specials / resp-specials. */
static int imap_is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return 0;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '%':
	case '*':
	case '"':
	case '\\':
	case ']':
		return 0;
	}
	return 1;
}

/* tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR = ATOM-CHAR / resp-specials. */
static int imap_is_tag_char(unsigned char c)
{
	return (imap_is_atom_char(c) || c == ']') && c != '+';
}

/* ---- framing ---- */

enum {
	IMAP_RS_LINE,    /* reading a line (the first, or one after a literal) */
	IMAP_RS_LITERAL, /* copying literal_left more literal bytes */
	IMAP_RS_SKIP,    /* discarding a bad line up to its LF */
	IMAP_RS_DONE,    /* a status ended the command; the next feed starts a new one */
	IMAP_RS_FATAL,   /* the stream cannot be resynchronised */
};
/* Or'ed into the state: the line so far ended in a CR, not stored (a CR that turns out
 * to be the first half of CRLF must not count against command_max). */
#define IMAP_RS_CR   0x100
#define IMAP_RS_MASK 0xff

/* A buffer that grew past this for one big command (an APPEND) is freed when the
 * command is done: an idle connection should not keep the message size in memory. */
#define IMAP_READER_KEEP (64 * 1024)

void imap_reader_init(struct imap_reader *r, const struct imap_limits *lim)
{
	memset(r, 0, sizeof(*r));
	r->lim = *lim;
	buf_init(&r->cmd, lim->command_max);
	r->state = IMAP_RS_LINE;
}

void imap_reader_deinit(struct imap_reader *r)
{
	buf_deinit(&r->cmd);
}

static void imap_reader_drop(struct imap_reader *r)
{
	if (r->cmd.cap > IMAP_READER_KEEP)
		buf_deinit(&r->cmd);
	else
		buf_reset(&r->cmd);
	r->literal_left = 0;
	r->line_start = 0;
	r->state &= IMAP_RS_MASK;
}

void imap_reader_reset(struct imap_reader *r)
{
	imap_reader_drop(r);
	r->tag[0] = '\0';
	r->state = IMAP_RS_LINE;
}

struct slice imap_reader_command(const struct imap_reader *r)
{
	struct slice s = { r->cmd.data != NULL ? r->cmd.data : "", r->cmd.len };
	return s;
}

/* Appends to the command, growing by doubling but never past command_max (+1 for the
 * NUL): buf_append's doubling alone could reserve twice the limit. */
static int imap_reader_append(struct imap_reader *r, const char *p, size_t n)
{
	struct buf *b = &r->cmd;
	size_t max = r->lim.command_max;

	if (n > max || b->len > max - n)
		return -1;
	size_t need = b->len + n + 1;
	if (need > b->cap) {
		size_t cap = b->cap != 0 ? b->cap : 256;
		while (cap < need)
			cap = cap > SIZE_MAX / 4 ? need : cap * 2;
		if (cap > max + 1)
			cap = max + 1;
		char *d = realloc(b->data, cap);
		if (d == NULL)
			return -1;
		b->data = d;
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

/* Records the tag as soon as the first line shows it, so that errors found later
 * (a literal too big, a NUL) can be answered with it.  Looks at the stored part of the
 * first line followed by seg; at most 64 bytes, so feeding byte by byte stays linear.
 * line_end: the first line is complete (stored, without its CRLF). */
static void imap_reader_tag_scan(struct imap_reader *r, const char *seg, size_t n, int line_end)
{
	size_t have = r->cmd.len, total = have + n, i;

	if (r->tag[0] != '\0' || r->line_start != 0)
		return;
	/* Only what fits in the line limit counts, so that the tag reported with
	 * IMAP_READ_TOO_BIG_FATAL does not depend on how the bytes were split. */
	if (r->lim.line_max < SIZE_MAX && total > r->lim.line_max + 1)
		total = r->lim.line_max + 1;
	for (i = 0; i < total && i < sizeof(r->tag); i++) {
		unsigned char c = (unsigned char)(i < have ? r->cmd.data[i] : seg[i - have]);
		if (c == ' ')
			break;
		if (!imap_is_tag_char(c)) {
			/* A CR that may be the first half of the line's CRLF. */
			if (c == '\r' && i == total - 1 && !line_end)
				return;
			goto invalid;
		}
	}
	if (i == sizeof(r->tag))
		goto invalid;
	if (i == total && !line_end)
		return;
	if (i == 0)
		goto invalid;
	for (size_t j = 0; j < i; j++)
		r->tag[j] = j < have ? r->cmd.data[j] : seg[j - have];
	r->tag[i] = '\0';
	return;
invalid:
	strcpy(r->tag, "*");
}

/* A line ending in "{n}", "{n+}" (RFC 7888) or "~{n}" (RFC 3516 literal8) announces n
 * bytes after its CRLF.  1 and *n_r (UINT64_MAX for any number too large to matter),
 * *sync_r; or 0. */
static int imap_literal_announced(const char *line, size_t len, uint64_t *n_r, int *sync_r)
{
	size_t i, end;

	if (len < 3 || line[len - 1] != '}')
		return 0;
	i = len - 1;
	*sync_r = 1;
	if (line[i - 1] == '+') {
		*sync_r = 0;
		i--;
	}
	end = i;
	while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
		i--;
	if (i == end || i == 0 || line[i - 1] != '{')
		return 0;
	uint64_t v = 0;
	for (; i < end; i++) {
		unsigned d = (unsigned)(line[i] - '0');
		v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*n_r = v;
	return 1;
}

static enum imap_read_status imap_reader_end(struct imap_reader *r, enum imap_read_status st,
					     int framing)
{
	if (st != IMAP_READ_COMMAND) {
		if (framing && r->tag[0] == '\0')
			strcpy(r->tag, "*");
		imap_reader_drop(r);
	}
	r->state = st == IMAP_READ_TOO_BIG_FATAL ? IMAP_RS_FATAL : IMAP_RS_DONE;
	return st;
}

/* The line just completed (cmd[line_start..len), CRLF stripped): the end of the command,
 * or a literal to read.  Returns NEED_MORE to go on reading in the same call. */
static enum imap_read_status imap_reader_line_done(struct imap_reader *r)
{
	uint64_t n;
	int sync;

	imap_reader_tag_scan(r, NULL, 0, 1);
	if (!imap_literal_announced(r->cmd.data + r->line_start, r->cmd.len - r->line_start, &n,
				    &sync))
		return imap_reader_end(r, IMAP_READ_COMMAND, 1);
	/* The line break is kept as CRLF whatever the client sent, so that the command
	 * text is what imap_command_parse() expects. */
	if (imap_reader_append(r, "\r\n", 2) < 0)
		return imap_reader_end(r, IMAP_READ_TOO_BIG_FATAL, 1);
	size_t room = r->lim.command_max - r->cmd.len;
	if (sync) {
		/* RFC 9051 7.5: instead of "+" the server may answer the command (NO
		 * [TOOBIG], 7.1); the client waits for "+" and so never sends the bytes. */
		if (n > r->lim.literal_max || n > room)
			return imap_reader_end(r, IMAP_READ_TOO_BIG, 1);
	} else {
		/* RFC 7888 3 and 4: a non-synchronizing literal is on its way already;
		 * past the limit the stream cannot be resynchronised.  Without LITERAL+
		 * only LITERAL-'s small ones (at most 4096 bytes) are taken. */
		if (n > r->lim.literal_max || n > room ||
		    (!r->lim.literal_plus && n > r->lim.nonsync_max))
			return imap_reader_end(r, IMAP_READ_TOO_BIG_FATAL, 1);
	}
	r->literal_left = (size_t)n;
	if (n > 0) {
		r->state = IMAP_RS_LITERAL;
	} else {
		r->state = IMAP_RS_LINE;
		r->line_start = r->cmd.len;
	}
	return sync ? IMAP_READ_CONTINUE : IMAP_READ_NEED_MORE;
}

static enum imap_read_status imap_reader_run(struct imap_reader *r, const char *data, size_t len,
					     size_t *consumed_r, int framing)
{
	enum imap_read_status st = IMAP_READ_NEED_MORE;
	size_t off = 0;

	*consumed_r = 0;
	if (r->state == IMAP_RS_FATAL)
		return IMAP_READ_TOO_BIG_FATAL;
	if (r->state == IMAP_RS_DONE)
		imap_reader_reset(r);
	while (off < len) {
		const char *seg = data + off;
		size_t avail = len - off;

		if ((r->state & IMAP_RS_MASK) == IMAP_RS_LITERAL) {
			size_t n = avail < r->literal_left ? avail : r->literal_left;
			/* Room was checked when the literal was announced. */
			if (imap_reader_append(r, seg, n) < 0) {
				st = imap_reader_end(r, IMAP_READ_TOO_BIG_FATAL, framing);
				break;
			}
			off += n;
			r->literal_left -= n;
			if (r->literal_left == 0) {
				r->state = IMAP_RS_LINE;
				r->line_start = r->cmd.len;
			}
			continue;
		}

		const char *lf = memchr(seg, '\n', avail);
		size_t n = lf != NULL ? (size_t)(lf - seg) : avail;

		if ((r->state & IMAP_RS_MASK) == IMAP_RS_SKIP) {
			/* literal_left counts the bad line's bytes here: a bad line is still
			 * bounded by line_max. */
			if (n > r->lim.line_max || r->literal_left > r->lim.line_max - n) {
				st = imap_reader_end(r, IMAP_READ_TOO_BIG_FATAL, framing);
				break;
			}
			r->literal_left += n;
			if (lf == NULL) {
				off = len;
				continue;
			}
			off += n + 1;
			st = imap_reader_end(r, IMAP_READ_BAD_LINE, framing);
			break;
		}

		/* IMAP_RS_LINE.  RFC 9051 9 (CHAR8, TEXT-CHAR): no NUL in a line, and CR
		 * only as the first half of CRLF.  bad_at: the byte that shows the line
		 * is bad (a NUL, or what follows a lone CR). */
		size_t stored = r->cmd.len - r->line_start;
		int stored_cr = (r->state & IMAP_RS_CR) != 0;
		size_t bad_at = n;
		if (stored_cr && n > 0) {
			bad_at = 0;
		} else {
			const char *nul = memchr(seg, '\0', n);
			const char *cr = memchr(seg, '\r', n);
			if (nul != NULL)
				bad_at = (size_t)(nul - seg);
			if (cr != NULL && cr != seg + n - 1 && (size_t)(cr - seg) + 1 < bad_at)
				bad_at = (size_t)(cr - seg) + 1;
		}
		if (bad_at == 0 && n > 0) {
			/* After a lone CR the tag, if not yet known, is not valid. */
			if (framing && !stored_cr)
				imap_reader_tag_scan(r, seg, 1, 0);
			imap_reader_drop(r);
			r->literal_left = stored;
			r->state = IMAP_RS_SKIP;
			continue; /* the same bytes again, now skipped and counted */
		}
		if (bad_at < n) {
			/* The good part first, exactly as if the input had been split there,
			 * so that limits hit before the bad byte are reported first. */
			n = bad_at;
			lf = NULL;
		}
		/* A CR ending this piece: the line's end if an LF follows (now or in the
		 * next feed), else a bad line. */
		int trailing_cr = n > 0 && seg[n - 1] == '\r';
		if (framing)
			imap_reader_tag_scan(r, seg, n, 0);
		if (n > SIZE_MAX - stored - 1 ||
		    stored + n - (size_t)trailing_cr > r->lim.line_max) {
			st = imap_reader_end(r, IMAP_READ_TOO_BIG_FATAL, framing);
			break;
		}
		if (imap_reader_append(r, seg, n - (n > 0 && trailing_cr)) < 0) {
			st = imap_reader_end(r, IMAP_READ_TOO_BIG_FATAL, framing);
			break;
		}
		r->state = IMAP_RS_LINE | (trailing_cr ? IMAP_RS_CR : 0);
		if (lf == NULL) {
			off += n;
			continue;
		}
		/* A whole line; a bare LF ends it too (scripts send those). */
		r->state = IMAP_RS_LINE;
		off += n + 1;
		if (!framing) {
			st = imap_reader_end(r, IMAP_READ_COMMAND, 0);
			break;
		}
		/* Blank lines between commands are ignored rather than answered. */
		if (r->line_start == 0 && r->cmd.len == 0)
			continue;
		st = imap_reader_line_done(r);
		if (st != IMAP_READ_NEED_MORE)
			break;
	}
	*consumed_r = off;
	return st;
}

enum imap_read_status imap_reader_feed(struct imap_reader *r, const char *data, size_t len,
				       size_t *consumed_r)
{
	return imap_reader_run(r, data, len, consumed_r, 1);
}

enum imap_read_status imap_reader_feed_line(struct imap_reader *r, const char *data, size_t len,
					    size_t *consumed_r)
{
	return imap_reader_run(r, data, len, consumed_r, 0);
}

/* ---- command parsing ---- */

#define IMAP_DEPTH_MAX 32
#define IMAP_NODES_MAX 100000

/* An argument while parsing: strings are offsets into one buffer that becomes the
 * command's arena, lists index the finished-children vector. */
struct imap_pnode {
	enum imap_arg_type type;
	size_t off, len;   /* string bytes */
	size_t child, n;   /* LIST: first child in out, count */
};

struct imap_pvec {
	struct imap_pnode *v;
	size_t n, cap;
};

struct imap_parser {
	const char *p;
	size_t len, pos;
	/* Elements of the lists still open (the top level first): a list's elements are
	 * contiguous at the top of the stack until its ')' moves them to out, so every
	 * list's children end up contiguous without knowing their count in advance. */
	struct imap_pvec stack;
	struct imap_pvec out;
	size_t open[IMAP_DEPTH_MAX + 1]; /* stack index of each open list's first element */
	int depth;
	size_t nodes;
	char *str;
	size_t str_len, str_cap;
	/* A '[' before this offset cannot find its ']' (an earlier scan failed up to
	 * here): scanning again would make "[[[[..." quadratic. */
	size_t bracket_fail;
	const char *error;
};

static int imap_pvec_push(struct imap_pvec *v, const struct imap_pnode *nd)
{
	if (v->n == v->cap) {
		size_t cap = v->cap != 0 ? v->cap * 2 : 16;
		struct imap_pnode *p = realloc(v->v, cap * sizeof(*p));
		if (p == NULL)
			return -1;
		v->v = p;
		v->cap = cap;
	}
	v->v[v->n++] = *nd;
	return 0;
}

static int imap_parser_fail(struct imap_parser *ps, const char *error)
{
	if (ps->error == NULL)
		ps->error = error;
	return -1;
}

/* Room for n more string bytes.  The buffer starts with the size of the arguments'
 * text plus one, which every argument list fits in (each string's NUL takes the place
 * of its separator or quote); growing is only a fallback. */
static int imap_parser_str_reserve(struct imap_parser *ps, size_t n)
{
	if (ps->str_cap - ps->str_len >= n)
		return 0;
	size_t cap = ps->str_cap * 2 > ps->str_len + n ? ps->str_cap * 2 : ps->str_len + n;
	char *p = realloc(ps->str, cap);
	if (p == NULL)
		return imap_parser_fail(ps, "Out of memory");
	ps->str = p;
	ps->str_cap = cap;
	return 0;
}

static int imap_parser_add(struct imap_parser *ps, enum imap_arg_type type, size_t off,
			   size_t len)
{
	struct imap_pnode nd = { type, off, len, 0, 0 };

	if (++ps->nodes > IMAP_NODES_MAX)
		return imap_parser_fail(ps, "Too many arguments");
	if (imap_pvec_push(&ps->stack, &nd) < 0)
		return imap_parser_fail(ps, "Out of memory");
	return 0;
}

/* Copies bytes as a new string argument. */
static int imap_parser_add_copy(struct imap_parser *ps, enum imap_arg_type type, const char *s,
				size_t len)
{
	if (imap_parser_str_reserve(ps, len + 1) < 0)
		return -1;
	size_t off = ps->str_len;
	memcpy(ps->str + off, s, len);
	ps->str[off + len] = '\0';
	ps->str_len += len + 1;
	return imap_parser_add(ps, type, off, len);
}

/* quoted = DQUOTE *QUOTED-CHAR DQUOTE (RFC 9051 9): "\" escapes only DQUOTE and "\";
 * 8-bit is allowed (IMAP4rev2 UTF-8, and what IMAP4rev1 clients send anyway); CR and LF
 * never (a string does not continue on the next line). */
static int imap_parse_quoted(struct imap_parser *ps)
{
	size_t i = ps->pos + 1;

	if (imap_parser_str_reserve(ps, ps->len - i + 1) < 0)
		return -1;
	size_t off = ps->str_len, o = off;
	for (;;) {
		if (i >= ps->len)
			return imap_parser_fail(ps, "Unterminated quoted string");
		unsigned char c = (unsigned char)ps->p[i];
		if (c == '"')
			break;
		if (c == '\r' || c == '\n')
			return imap_parser_fail(ps, "Unterminated quoted string");
		if (c == '\0')
			return imap_parser_fail(ps, "NUL in quoted string");
		if (c == '\\') {
			if (i + 1 >= ps->len)
				return imap_parser_fail(ps, "Unterminated quoted string");
			c = (unsigned char)ps->p[i + 1];
			if (c != '"' && c != '\\')
				return imap_parser_fail(ps, "Invalid escape in quoted string");
			i++;
		}
		ps->str[o++] = (char)c;
		i++;
	}
	ps->str[o] = '\0';
	ps->str_len = o + 1;
	ps->pos = i + 1;
	return imap_parser_add(ps, IMAP_ARG_STRING, off, o - off);
}

/* literal = "{" number64 ["+"] "}" CRLF *CHAR8; literal8 = "~{" number64 "}" CRLF *OCTET
 * (RFC 9051 9, RFC 7888, RFC 3516).  The reader always puts CRLF after the
 * announcement; a bare LF is taken from other callers. */
static int imap_parse_literal(struct imap_parser *ps, int lit8)
{
	size_t i = ps->pos + (lit8 ? 2 : 1), start = i;
	uint64_t n = 0;

	while (i < ps->len && ps->p[i] >= '0' && ps->p[i] <= '9') {
		unsigned d = (unsigned)(ps->p[i] - '0');
		n = n > (UINT64_MAX - 9) / 10 ? UINT64_MAX : n * 10 + d;
		i++;
	}
	if (i == start)
		return imap_parser_fail(ps, "Invalid literal");
	if (i < ps->len && ps->p[i] == '+')
		i++;
	if (i >= ps->len || ps->p[i] != '}')
		return imap_parser_fail(ps, "Invalid literal");
	i++;
	if (i < ps->len && ps->p[i] == '\r')
		i++;
	if (i >= ps->len || ps->p[i] != '\n')
		return imap_parser_fail(ps, "Invalid literal");
	i++;
	if (n > ps->len - i)
		return imap_parser_fail(ps, "Literal truncated");
	const char *data = ps->p + i;
	if (!lit8 && memchr(data, '\0', (size_t)n) != NULL)
		return imap_parser_fail(ps, "NUL in literal");
	ps->pos = i + (size_t)n;
	return imap_parser_add_copy(ps, lit8 ? IMAP_ARG_LITERAL8 : IMAP_ARG_LITERAL, data,
				    (size_t)n);
}

/* From '[' at i: the offset of the matching ']' (quoted strings inside may hold one),
 * or 0 when the line has none before a control character or the end. */
static size_t imap_bracket_end(struct imap_parser *ps, size_t i)
{
	for (i++; i < ps->len; i++) {
		unsigned char c = (unsigned char)ps->p[i];
		if (c == ']')
			return i;
		if (c < 0x20 || c == 0x7f)
			break;
		if (c == '"') {
			for (i++; i < ps->len && ps->p[i] != '"'; i++) {
				c = (unsigned char)ps->p[i];
				if (c < 0x20 || c == 0x7f)
					goto fail;
				if (c == '\\' && i + 1 < ps->len)
					i++;
			}
			if (i >= ps->len)
				break;
		}
	}
fail:
	ps->bracket_fail = i;
	return 0;
}

/* An atom as clients send them: ATOM-CHARs, a leading "\" (flags), list wildcards,
 * "]" (ASTRING-CHAR), and fetch-att sections "BODY.PEEK[HEADER.FIELDS (TO CC)]<0.99>"
 * whose brackets may hold spaces, parentheses and quoted strings.  A "[" without a "]"
 * is an ordinary ATOM-CHAR ("INBOX.[x" is a valid mailbox atom). */
static int imap_parse_atom(struct imap_parser *ps)
{
	size_t start = ps->pos, i = start;

	if (i < ps->len && ps->p[i] == '\\')
		i++;
	while (i < ps->len) {
		unsigned char c = (unsigned char)ps->p[i];
		if (c == '[' && i >= ps->bracket_fail) {
			size_t end = imap_bracket_end(ps, i);
			i = end != 0 ? end + 1 : i + 1;
		} else if (imap_is_atom_char(c) || c == ']' || c == '*' || c == '%') {
			i++;
		} else {
			break;
		}
	}
	if (i == start)
		return imap_parser_fail(ps, "Invalid characters in command");
	ps->pos = i;
	enum imap_arg_type type = IMAP_ARG_ATOM;
	if (i - start == 3 && strncasecmp(ps->p + start, "NIL", 3) == 0)
		type = IMAP_ARG_NIL;
	return imap_parser_add_copy(ps, type, ps->p + start, i - start);
}

/* ")": the list's elements, at the top of the stack, move to out in one block. */
static int imap_parse_close(struct imap_parser *ps)
{
	size_t first = ps->open[ps->depth], n = ps->stack.n - first, child = ps->out.n;

	for (size_t k = 0; k < n; k++) {
		if (imap_pvec_push(&ps->out, &ps->stack.v[first + k]) < 0)
			return imap_parser_fail(ps, "Out of memory");
	}
	ps->stack.n = first;
	ps->stack.v[first - 1].child = child;
	ps->stack.v[first - 1].n = n;
	ps->depth--;
	return 0;
}

static int imap_parse_args(struct imap_parser *ps)
{
	int need_sep = 0;

	for (;;) {
		size_t before = ps->pos;
		while (ps->pos < ps->len && ps->p[ps->pos] == ' ')
			ps->pos++;
		if (ps->pos > before)
			need_sep = 0;
		if (ps->pos == ps->len)
			break;
		unsigned char c = (unsigned char)ps->p[ps->pos];
		if (need_sep && c != ')') {
			if (c < 0x20 || c >= 0x7f)
				return imap_parser_fail(ps, "Invalid characters in command");
			return imap_parser_fail(ps, "Missing space between arguments");
		}
		need_sep = 1;
		if (c == '(') {
			if (ps->depth == IMAP_DEPTH_MAX)
				return imap_parser_fail(ps, "Too deeply nested lists");
			if (imap_parser_add(ps, IMAP_ARG_LIST, 0, 0) < 0)
				return -1;
			ps->open[++ps->depth] = ps->stack.n;
			ps->pos++;
			need_sep = 0;
		} else if (c == ')') {
			if (ps->depth == 0)
				return imap_parser_fail(ps, "Unexpected ')'");
			if (imap_parse_close(ps) < 0)
				return -1;
			ps->pos++;
		} else if (c == '"') {
			if (imap_parse_quoted(ps) < 0)
				return -1;
		} else if (c == '{') {
			if (imap_parse_literal(ps, 0) < 0)
				return -1;
		} else if (c == '~' && ps->pos + 1 < ps->len && ps->p[ps->pos + 1] == '{') {
			if (imap_parse_literal(ps, 1) < 0)
				return -1;
		} else if (imap_parse_atom(ps) < 0) {
			return -1;
		}
	}
	if (ps->depth > 0)
		return imap_parser_fail(ps, "Missing ')'");
	/* The top level's elements come last in out. */
	size_t top = ps->stack.n;
	for (size_t k = 0; k < top; k++) {
		if (imap_pvec_push(&ps->out, &ps->stack.v[k]) < 0)
			return imap_parser_fail(ps, "Out of memory");
	}
	return 0;
}

/* Turns the parse into one allocation: the strings, then the imap_arg array (the
 * string buffer is extended in place when realloc can). */
static int imap_parser_pack(struct imap_parser *ps, struct imap_command *cmd)
{
	size_t n_top = ps->stack.n, n = ps->out.n;
	size_t align = _Alignof(struct imap_arg);
	size_t str_end = (ps->str_len + align - 1) / align * align;

	if (n == 0)
		return 0;
	char *mem = realloc(ps->str, str_end + n * sizeof(struct imap_arg));
	if (mem == NULL)
		return imap_parser_fail(ps, "Out of memory");
	ps->str = NULL;
	ps->str_cap = 0;
	struct imap_arg *args = (struct imap_arg *)(void *)(mem + str_end);
	for (size_t k = 0; k < n; k++) {
		const struct imap_pnode *nd = &ps->out.v[k];
		struct imap_arg *a = &args[k];
		a->type = nd->type;
		if (nd->type == IMAP_ARG_LIST) {
			a->s = NULL;
			a->len = 0;
			a->list = nd->n > 0 ? args + nd->child : NULL;
			a->n = nd->n;
		} else {
			a->s = mem + nd->off;
			a->len = nd->len;
			a->list = NULL;
			a->n = 0;
		}
	}
	cmd->mem = mem;
	cmd->args = args + (n - n_top);
	cmd->n_args = n_top;
	return 0;
}

/* Reads one name: an atom of plain ATOM-CHARs, upper-cased. */
static int imap_parse_name(const char *p, size_t len, size_t *pos, char name[32],
			   const char **error_r)
{
	size_t i = *pos, start = i;

	while (i < len && imap_is_atom_char((unsigned char)p[i]))
		i++;
	if (i == start) {
		*error_r = i == len ? "Missing command" : "Invalid command name";
		return -1;
	}
	if (i < len && p[i] != ' ') {
		*error_r = "Invalid command name";
		return -1;
	}
	if (i - start >= 32) {
		*error_r = "Unknown command";
		return -1;
	}
	for (size_t k = start; k < i; k++) {
		char c = p[k];
		name[k - start] = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
	}
	name[i - start] = '\0';
	while (i < len && p[i] == ' ')
		i++;
	*pos = i;
	return 0;
}

enum imap_parse_status imap_command_parse(struct slice line, struct imap_command *cmd_r,
					  const char **error_r)
{
	const char *p = line.p;
	size_t len = line.len, i = 0;

	memset(cmd_r, 0, sizeof(*cmd_r));
	*error_r = NULL;
	while (i < len && imap_is_tag_char((unsigned char)p[i]))
		i++;
	if (i == 0 || i >= sizeof(cmd_r->tag) || (i < len && p[i] != ' ')) {
		*error_r = i == 0 && len == 0 ? "Empty command" : "Invalid tag";
		return IMAP_PARSE_NO_TAG;
	}
	memcpy(cmd_r->tag, p, i);
	cmd_r->tag[i] = '\0';
	while (i < len && p[i] == ' ')
		i++;
	if (imap_parse_name(p, len, &i, cmd_r->name, error_r) < 0)
		return IMAP_PARSE_BAD;
	if (strcmp(cmd_r->name, "UID") == 0) {
		/* RFC 9051 6.4.9: "UID" prefixes COPY, MOVE, FETCH, SEARCH, STORE, EXPUNGE. */
		if (imap_parse_name(p, len, &i, cmd_r->name, error_r) < 0) {
			if (i == len)
				*error_r = "Missing command after UID";
			return IMAP_PARSE_BAD;
		}
		cmd_r->uid = 1;
	}

	struct imap_parser ps;
	memset(&ps, 0, sizeof(ps));
	ps.p = p;
	ps.len = len;
	ps.pos = i;
	ps.str_cap = len - i + 1;
	ps.str = malloc(ps.str_cap);
	int ret = ps.str == NULL ? imap_parser_fail(&ps, "Out of memory") : imap_parse_args(&ps);
	if (ret == 0)
		ret = imap_parser_pack(&ps, cmd_r);
	free(ps.str);
	free(ps.stack.v);
	free(ps.out.v);
	if (ret < 0) {
		cmd_r->args = NULL;
		cmd_r->n_args = 0;
		*error_r = ps.error;
		return IMAP_PARSE_BAD;
	}
	return IMAP_PARSE_OK;
}

void imap_command_free(struct imap_command *cmd)
{
	free(cmd->mem);
	cmd->mem = NULL;
	cmd->args = NULL;
	cmd->n_args = 0;
}

int imap_arg_is_astring(const struct imap_arg *arg)
{
	/* "NIL" is an atom too: SELECT NIL opens the mailbox named NIL. */
	return arg->type == IMAP_ARG_ATOM || arg->type == IMAP_ARG_NIL ||
	       arg->type == IMAP_ARG_STRING || arg->type == IMAP_ARG_LITERAL;
}

int imap_arg_is_nstring(const struct imap_arg *arg)
{
	return imap_arg_is_astring(arg);
}

int imap_arg_number(const struct imap_arg *arg, uint64_t *v_r)
{
	if (arg->type != IMAP_ARG_ATOM || arg->len == 0 || arg->len > 20)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < arg->len; i++) {
		unsigned d = (unsigned)((unsigned char)arg->s[i] - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*v_r = v;
	return 0;
}
