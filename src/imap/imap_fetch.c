/* FETCH and UID FETCH (RFC 9051 6.4.5; BINARY RFC 3516; CHANGEDSINCE and VANISHED,
 * RFC 7162 3.1.4 and 3.2.6).
 *
 * A message file is read only when an item needs it: FLAGS, UID, RFC822.SIZE,
 * INTERNALDATE and MODSEQ come from the view; ENVELOPE, BODY and BODYSTRUCTURE from the
 * store's cache, computed on a miss (ENVELOPE from the header block alone) and put
 * back.  Body sections map the file.  Output goes out in steps of IMAP_OUT_STEP bytes
 * (IMAP_CMD_MORE), a big literal included: the state remembers the message, the item
 * and the offset inside the literal, so a 25 MB BODY[] is never copied whole into the
 * output buffer. */
#include "imap/imap_private.h"
#include "imap/imap_render.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FETCH_HEADER_READ 16384             /* first read when only the header is needed */
#define FETCH_HEADER_MAX  (8 * 1024 * 1024) /* a header block larger than this is cut */

enum fetch_kind {
	FI_FLAGS,
	FI_INTERNALDATE,
	FI_SIZE,
	FI_ENVELOPE,
	FI_BODYSTRUCTURE,
	FI_BODY,
	FI_UID,
	FI_MODSEQ,
	FI_SECTION, /* BODY[...], BINARY[...], RFC822, RFC822.HEADER, RFC822.TEXT */
	FI_BINARY_SIZE,
};

struct fetch_item {
	enum fetch_kind kind;
	int peek;
	int needs_tree;  /* the section needs the MIME tree (not just the header end) */
	int header_only; /* the section lies in the top header block */
	struct imap_section sec;
	char *name; /* the response's name for it ("BODY[1.2]<0>") */
};

/* Cached renderings, by item kind. */
enum { FC_ENVELOPE, FC_BODYSTRUCTURE, FC_BODY, FC_N };

struct fetch_state {
	size_t *idx; /* the messages, as indexes into view.msgs */
	size_t n, pos;
	struct fetch_item *items;
	size_t n_items, cap_items;
	int has_flags, has_modseq;
	uint64_t changedsince;
	uint32_t *seen_uids; /* messages whose \Seen this FETCH set (ascending) */
	size_t n_seen;
	int started; /* the seen update and VANISHED are done */

	/* The message being written. */
	int in_msg;
	size_t item;
	int need_sep; /* an item was written: the next one needs a space */
	int lit_active;
	size_t lit_off;
	char *map; /* mmap'd file, or a malloc'd header block */
	size_t map_len;
	int mapped;
	struct mime_part *root;
	struct mime_part fake_root; /* header/body split, for sections needing no tree */
	char *cached[FC_N];
	size_t cached_len[FC_N];
	struct imap_section_data *data; /* per item */
	int failed;                     /* a message could not be read (not expunged) */
};

static const char *const fc_names[FC_N] = {"imap.envelope", "imap.bodystructure", "imap.body"};

static void fetch_msg_release(struct fetch_state *st)
{
	for (size_t i = 0; st->data != NULL && i < st->n_items; i++) {
		free(st->data[i].owned);
		memset(&st->data[i], 0, sizeof(st->data[i]));
	}
	for (int k = 0; k < FC_N; k++) {
		free(st->cached[k]);
		st->cached[k] = NULL;
	}
	mime_free(&st->root);
	if (st->mapped)
		munmap(st->map, st->map_len);
	else
		free(st->map);
	st->map = NULL;
	st->map_len = 0;
	st->mapped = 0;
	st->in_msg = 0;
	st->lit_active = 0;
}

static void fetch_state_free(void *arg)
{
	struct fetch_state *st = arg;

	if (st == NULL)
		return;
	fetch_msg_release(st);
	for (size_t i = 0; i < st->n_items; i++)
		free(st->items[i].name);
	free(st->items);
	free(st->data);
	free(st->idx);
	free(st->seen_uids);
	free(st);
}

/* ---- the item list ---------------------------------------------------------------------- */

static struct fetch_item *fetch_item_add(struct fetch_state *st, enum fetch_kind kind)
{
	if (st->n_items == st->cap_items) {
		size_t cap = st->cap_items == 0 ? 8 : st->cap_items * 2;
		struct fetch_item *p = realloc(st->items, cap * sizeof(*p));
		if (p == NULL)
			return NULL;
		st->items = p;
		st->cap_items = cap;
	}
	struct fetch_item *fi = &st->items[st->n_items++];
	memset(fi, 0, sizeof(*fi));
	fi->kind = kind;
	return fi;
}

static int fetch_has(const struct fetch_state *st, enum fetch_kind kind)
{
	for (size_t i = 0; i < st->n_items; i++) {
		if (st->items[i].kind == kind)
			return 1;
	}
	return 0;
}

static int fetch_add_simple(struct fetch_state *st, enum fetch_kind kind)
{
	if (kind != FI_SECTION && kind != FI_BINARY_SIZE && fetch_has(st, kind))
		return 0;
	return fetch_item_add(st, kind) != NULL ? 0 : -1;
}

/* RFC822, RFC822.HEADER, RFC822.TEXT (RFC 3501 6.4.5: BODY[], BODY.PEEK[HEADER],
 * BODY[TEXT] under their old names). */
static int fetch_add_rfc822(struct fetch_state *st, const char *name, enum imap_section_text t,
                            int peek)
{
	struct fetch_item *fi = fetch_item_add(st, FI_SECTION);
	if (fi == NULL || (fi->name = strdup(name)) == NULL)
		return -1;
	fi->peek = peek;
	fi->sec.text = t;
	fi->header_only = t == IMAP_SECTION_HEADER;
	return 0;
}

/* BODY[...]<..>, BODY.PEEK[...], BINARY[...], BINARY.PEEK[...], BINARY.SIZE[...]. */
static int fetch_add_section(struct fetch_state *st, const char *a, size_t len, int *bad_r)
{
	const char *lb = memchr(a, '[', len);
	const char *rb = lb != NULL ? memchr(lb, ']', len - (size_t)(lb - a)) : NULL;
	if (lb == NULL || rb == NULL) {
		*bad_r = 1;
		return -1;
	}
	size_t word = (size_t)(lb - a);
	int peek = 0, binary = 0, size = 0;
	if (word == 4 && strncasecmp(a, "BODY", 4) == 0) {
	} else if (word == 9 && strncasecmp(a, "BODY.PEEK", 9) == 0) {
		peek = 1;
	} else if (word == 6 && strncasecmp(a, "BINARY", 6) == 0) {
		binary = 1;
	} else if (word == 11 && strncasecmp(a, "BINARY.PEEK", 11) == 0) {
		binary = peek = 1;
	} else if (word == 11 && strncasecmp(a, "BINARY.SIZE", 11) == 0) {
		binary = size = peek = 1;
	} else {
		*bad_r = 1;
		return -1;
	}
	struct fetch_item *fi = fetch_item_add(st, size ? FI_BINARY_SIZE : FI_SECTION);
	if (fi == NULL)
		return -1;
	fi->peek = peek;
	const char *spec = lb + 1;
	size_t spec_len = (size_t)(rb - spec);
	const char *rest = rb + 1;
	size_t rest_len = len - (size_t)(rest - a);
	if (imap_section_parse(spec, spec_len, binary, &fi->sec) < 0 ||
	    (rest_len > 0 && (size || imap_partial_parse(rest, rest_len, &fi->sec) < 0))) {
		*bad_r = 1;
		return -1;
	}
	fi->needs_tree = fi->sec.n_nums > 0 || binary;
	fi->header_only = !fi->needs_tree && fi->sec.text != IMAP_SECTION_ALL &&
	                  fi->sec.text != IMAP_SECTION_TEXT;
	struct buf name;
	buf_init(&name, 0);
	if (buf_printf(&name, "%s[%.*s]",
	               size     ? "BINARY.SIZE"
	               : binary ? "BINARY"
	                        : "BODY",
	               (int)spec_len, spec) < 0 ||
	    (fi->sec.partial &&
	     buf_printf(&name, "<%llu>", (unsigned long long)fi->sec.origin) < 0)) {
		buf_deinit(&name);
		return -1;
	}
	fi->name = name.data;
	return 0;
}

/* One item atom; *bad_r for a syntax error (else -1 is out of memory). */
static int fetch_add_atom(struct fetch_state *st, const struct imap_arg *arg, int macros,
                          int *bad_r)
{
	static const struct {
		const char *name;
		enum fetch_kind kind;
	} simple[] = {
	    {"FLAGS", FI_FLAGS},
	    {"INTERNALDATE", FI_INTERNALDATE},
	    {"RFC822.SIZE", FI_SIZE},
	    {"ENVELOPE", FI_ENVELOPE},
	    {"BODYSTRUCTURE", FI_BODYSTRUCTURE},
	    {"BODY", FI_BODY},
	    {"UID", FI_UID},
	    {"MODSEQ", FI_MODSEQ},
	};
	const char *a = arg->s;

	if (arg->type != IMAP_ARG_ATOM) {
		*bad_r = 1;
		return -1;
	}
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		if (strcasecmp(a, simple[i].name) == 0)
			return fetch_add_simple(st, simple[i].kind);
	}
	if (macros && (strcasecmp(a, "ALL") == 0 || strcasecmp(a, "FAST") == 0 ||
	               strcasecmp(a, "FULL") == 0)) {
		/* RFC 9051 6.4.5: the macros. */
		int r = fetch_add_simple(st, FI_FLAGS) | fetch_add_simple(st, FI_INTERNALDATE) |
		        fetch_add_simple(st, FI_SIZE);
		if (strcasecmp(a, "FAST") != 0)
			r |= fetch_add_simple(st, FI_ENVELOPE);
		if (strcasecmp(a, "FULL") == 0)
			r |= fetch_add_simple(st, FI_BODY);
		return r;
	}
	if (strcasecmp(a, "RFC822") == 0)
		return fetch_add_rfc822(st, "RFC822", IMAP_SECTION_ALL, 0);
	if (strcasecmp(a, "RFC822.HEADER") == 0)
		return fetch_add_rfc822(st, "RFC822.HEADER", IMAP_SECTION_HEADER, 1);
	if (strcasecmp(a, "RFC822.TEXT") == 0)
		return fetch_add_rfc822(st, "RFC822.TEXT", IMAP_SECTION_TEXT, 0);
	return fetch_add_section(st, a, arg->len, bad_r);
}

/* (CHANGEDSINCE n [VANISHED]) */
static int fetch_modifiers(struct imap_session *s, struct imap_cmd *c, struct fetch_state *st,
                           const struct imap_arg *list, int *vanished_r)
{
	int have_since = 0;

	for (size_t i = 0; i < list->n; i++) {
		const struct imap_arg *a = &list->list[i];
		if (a->type != IMAP_ARG_ATOM)
			return -1;
		if (strcasecmp(a->s, "CHANGEDSINCE") == 0 && i + 1 < list->n) {
			if (imap_arg_number(&list->list[++i], &st->changedsince) < 0)
				return -1;
			have_since = 1;
		} else if (strcasecmp(a->s, "VANISHED") == 0) {
			*vanished_r = 1;
		} else {
			return -1;
		}
	}
	/* RFC 7162 3.2.6: VANISHED only in UID FETCH with CHANGEDSINCE, once QRESYNC is on. */
	if (*vanished_r && (!have_since || !c->parsed.uid || !s->qresync))
		return -1;
	if (have_since) {
		s->condstore = 1;
		if (fetch_add_simple(st, FI_MODSEQ) < 0)
			return -1;
	}
	return 0;
}

/* ---- reading a message ------------------------------------------------------------------ */

static int fetch_read_header(struct fetch_state *st, int fd)
{
	size_t len = 0, cap = 0;
	char *p = NULL;
	int complete = 0;

	for (;;) {
		if (cap - len < FETCH_HEADER_READ + 1) {
			size_t ncap = cap == 0 ? 2 * FETCH_HEADER_READ : cap * 2;
			char *np = realloc(p, ncap);
			if (np == NULL) {
				free(p);
				return -1;
			}
			p = np;
			cap = ncap;
		}
		ssize_t r = read(fd, p + len, FETCH_HEADER_READ);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(p);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		imap_header_end(p, len, &complete);
		if (complete || len >= FETCH_HEADER_MAX)
			break;
	}
	p[len] = '\0';
	st->map = p;
	st->map_len = len;
	st->mapped = 0;
	return 0;
}

static int fetch_map(struct fetch_state *st, int fd)
{
	struct stat sb;

	if (fstat(fd, &sb) < 0)
		return -1;
	if (sb.st_size == 0) {
		st->map = strdup("");
		st->map_len = 0;
		st->mapped = 0;
		return st->map != NULL ? 0 : -1;
	}
	void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return -1;
	st->map = p;
	st->map_len = (size_t)sb.st_size;
	st->mapped = 1;
	return 0;
}

void imap_cache_put(struct imap_session *s, uint32_t uid, const char *field, const char *value,
                    size_t len)
{
	const char *error;
	(void)mstore_box_cache_put(s->view.box, uid, field, value, len, &error);
}

static void fetch_set_cache(struct imap_session *s, struct fetch_state *st, uint32_t uid, int k,
                            struct buf *b)
{
	char field[64];

	snprintf(field, sizeof(field), "%s%s", fc_names[k], s->utf8_accept ? ".utf8" : "");
	imap_cache_put(s, uid, field, b->data, b->len);
	st->cached[k] = b->data;
	st->cached_len[k] = b->len;
}

/* Prepares message m: cached strings, the file when needed, section data.  0, 1 (gone:
 * skip it), -1 (failed; logged). */
static int fetch_msg_begin(struct imap_session *s, struct imap_cmd *c, struct fetch_state *st,
                           const struct mstore_msg *m, int *unknown_cte_r)
{
	static const enum fetch_kind fc_kind[FC_N] = {FI_ENVELOPE, FI_BODYSTRUCTURE, FI_BODY};
	const char *error = NULL;
	int want[FC_N] = {0}, need_full = 0, need_tree = 0, need_header = 0;

	for (size_t i = 0; i < st->n_items; i++) {
		const struct fetch_item *fi = &st->items[i];
		if (fi->kind == FI_SECTION || fi->kind == FI_BINARY_SIZE) {
			if (fi->header_only)
				need_header = 1;
			else
				need_full = 1;
			need_tree |= fi->needs_tree;
		}
		for (int k = 0; k < FC_N; k++)
			want[k] |= fi->kind == fc_kind[k];
	}
	for (int k = 0; k < FC_N; k++) {
		if (!want[k])
			continue;
		char field[64];
		snprintf(field, sizeof(field), "%s%s", fc_names[k], s->utf8_accept ? ".utf8" : "");
		if (mstore_box_cache_get(s->view.box, m->uid, field, &st->cached[k],
		                         &st->cached_len[k], &error) == 1)
			continue;
		st->cached[k] = NULL;
		if (k == FC_ENVELOPE)
			need_header = 1;
		else
			need_full = need_tree = 1;
	}
	if (!need_full && !need_header)
		return 0;

	int fd;
	int status = mstore_box_msg_open(s->view.box, m->uid, &fd, &error);
	if (status == MSTORE_NOT_FOUND)
		return 1; /* expunged by someone else: RFC 9051 allows leaving it out */
	if (status != MSTORE_OK) {
		imap_session_log(s, LOG_LEVEL_ERROR, "fetch uid=%u error=%s", m->uid,
		                 error != NULL ? error : "?");
		return -1;
	}
	int r = need_full || need_tree ? fetch_map(st, fd) : fetch_read_header(st, fd);
	int saved = errno;
	close(fd);
	if (r < 0) {
		imap_session_log(s, LOG_LEVEL_ERROR, "fetch uid=%u error=\"read: %s\"", m->uid,
		                 strerror(saved));
		return -1;
	}

	int complete;
	size_t hend = imap_header_end(st->map, st->map_len, &complete);
	memset(&st->fake_root, 0, sizeof(st->fake_root));
	st->fake_root.header_end = st->fake_root.body_start = hend;
	st->fake_root.body_end = st->map_len;
	st->fake_root.type = "text";
	st->fake_root.subtype = "plain";
	if (need_tree) {
		st->root = mime_parse(st->map, st->map_len, NULL);
		if (st->root == NULL) {
			imap_session_log(s, LOG_LEVEL_ERROR, "fetch uid=%u error=\"out of memory\"",
			                 m->uid);
			return -1;
		}
	}

	for (int k = 0; k < FC_N; k++) {
		if (!want[k] || st->cached[k] != NULL)
			continue;
		struct buf b;
		buf_init(&b, 0);
		int rr = k == FC_ENVELOPE
		             ? imap_render_envelope(&b, st->map, 0, hend, s->utf8_accept)
		             : imap_render_body(&b, st->map, st->root, k == FC_BODYSTRUCTURE,
		                                s->utf8_accept);
		if (rr < 0 || b.data == NULL) {
			buf_deinit(&b);
			return -1;
		}
		fetch_set_cache(s, st, m->uid, k, &b);
		if (k == FC_ENVELOPE) {
			/* The header is at hand: what SEARCH FROM/TO/SUBJECT/SENT* match on too,
			 * so that a search after this FETCH need not read every file again. */
			struct buf f;
			buf_init(&f, 0);
			(void)imap_search_fields_cache(s, m->uid, st->map, hend, &f);
			buf_deinit(&f);
		}
	}

	for (size_t i = 0; i < st->n_items; i++) {
		const struct fetch_item *fi = &st->items[i];
		if (fi->kind != FI_SECTION && fi->kind != FI_BINARY_SIZE)
			continue;
		const struct mime_part *root = fi->needs_tree ? st->root : &st->fake_root;
		if (imap_section_get(st->map, st->map_len, root, &fi->sec, &st->data[i]) < 0)
			return -1;
		if (st->data[i].unknown_cte) {
			*unknown_cte_r = 1;
			return -1;
		}
		if (fi->kind == FI_SECTION)
			imap_section_apply_partial(&fi->sec, &st->data[i]);
	}
	return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

static void fetch_flags(struct imap_session *s, struct imap_cmd *c, const struct mstore_msg *m)
{
	imap_out_data(c, "FLAGS (", 7);
	imap_view_flags(s, c, m);
	imap_out_data(c, ")", 1);
}

static void fetch_simple(struct imap_session *s, struct imap_cmd *c, struct fetch_state *st,
                         const struct fetch_item *fi, const struct mstore_msg *m)
{
	char date[32];

	switch (fi->kind) {
	case FI_FLAGS:
		fetch_flags(s, c, m);
		break;
	case FI_INTERNALDATE:
		imap_datetime_format(m->internaldate, m->internaldate_tz, date);
		imap_out(c, "INTERNALDATE \"%s\"", date);
		break;
	case FI_SIZE:
		imap_out(c, "RFC822.SIZE %llu", (unsigned long long)m->size);
		break;
	case FI_UID:
		imap_out(c, "UID %u", m->uid);
		break;
	case FI_MODSEQ:
		imap_out(c, "MODSEQ (%llu)", (unsigned long long)m->modseq);
		break;
	case FI_ENVELOPE:
		imap_out_data(c, "ENVELOPE ", 9);
		imap_out_data(c, st->cached[FC_ENVELOPE], st->cached_len[FC_ENVELOPE]);
		break;
	case FI_BODYSTRUCTURE:
		imap_out_data(c, "BODYSTRUCTURE ", 14);
		imap_out_data(c, st->cached[FC_BODYSTRUCTURE], st->cached_len[FC_BODYSTRUCTURE]);
		break;
	case FI_BODY:
		imap_out_data(c, "BODY ", 5);
		imap_out_data(c, st->cached[FC_BODY], st->cached_len[FC_BODY]);
		break;
	case FI_BINARY_SIZE:
		imap_out(c, "%s %zu", fi->name,
		         st->data[st->item].nil ? (size_t)0 : st->data[st->item].len);
		break;
	case FI_SECTION:
		break;
	}
}

/* Writes the rest of the current literal; 0 when c->out is full first. */
static int fetch_literal(struct imap_cmd *c, struct fetch_state *st,
                         const struct imap_section_data *d)
{
	while (st->lit_off < d->len) {
		if (c->out.len >= IMAP_OUT_STEP)
			return 0;
		size_t room = IMAP_OUT_STEP - c->out.len;
		size_t chunk = d->len - st->lit_off < room ? d->len - st->lit_off : room;
		imap_out_data(c, d->p + st->lit_off, chunk);
		st->lit_off += chunk;
	}
	st->lit_active = 0;
	return 1;
}

static void fetch_section_head(struct imap_cmd *c, struct fetch_state *st,
                               const struct fetch_item *fi, const struct imap_section_data *d)
{
	imap_out(c, "%s ", fi->name);
	if (d->nil) {
		imap_out_data(c, "NIL", 3);
		return;
	}
	/* RFC 3516 4.3: binary data with NULs needs literal8. */
	int nul = fi->sec.binary && memchr(d->p, '\0', d->len) != NULL;
	imap_out(c, "%s{%zu}\r\n", nul ? "~" : "", d->len);
	st->lit_active = 1;
	st->lit_off = 0;
}

/* The implicit \Seen of non-PEEK body sections (RFC 9051 6.4.5), set for the whole set
 * in one store call before anything is written. */
static int fetch_set_seen(struct imap_session *s, struct imap_cmd *c, struct fetch_state *st)
{
	int any = 0;
	for (size_t i = 0; i < st->n_items; i++) {
		if (st->items[i].kind == FI_SECTION && !st->items[i].peek)
			any = 1;
	}
	if (!any || s->view.readonly)
		return 0;
	uint32_t *uids = malloc((st->n ? st->n : 1) * sizeof(*uids));
	if (uids == NULL)
		return -1;
	size_t k = 0;
	for (size_t i = 0; i < st->n; i++) {
		const struct mstore_msg *m = &s->view.msgs[st->idx[i]];
		if ((m->flags & MSTORE_F_SEEN) == 0 &&
		    (st->changedsince == 0 || m->modseq > st->changedsince))
			uids[k++] = m->uid;
	}
	if (k == 0) {
		free(uids);
		return 0;
	}
	struct mstore_msg *changed = NULL;
	uint32_t *failed = NULL;
	size_t n_changed = 0, n_failed = 0;
	const char *error = NULL;
	int status = mstore_box_store(s->view.box, uids, k, MSTORE_STORE_ADD, MSTORE_F_SEEN, NULL,
	                              0, &changed, &n_changed, &failed, &n_failed, &error);
	free(uids);
	free(failed);
	if (status != MSTORE_OK) {
		imap_session_log(s, LOG_LEVEL_WARN, "fetch seen error=%s", error ? error : "?");
		return 0; /* the contents can still be sent */
	}
	imap_view_update(s, changed, n_changed);
	st->seen_uids = malloc((n_changed ? n_changed : 1) * sizeof(uint32_t));
	if (st->seen_uids != NULL) {
		for (size_t i = 0; i < n_changed; i++)
			st->seen_uids[i] = changed[i].uid;
		st->n_seen = n_changed;
	}
	free(changed);
	(void)c;
	return 0;
}

/* RFC 7162 3.2.6: "* VANISHED (EARLIER) uids" of the UIDs in the set expunged after
 * CHANGEDSINCE. */
static void fetch_vanished(struct imap_session *s, struct imap_cmd *c, struct fetch_state *st)
{
	struct mstore_msg *changed = NULL;
	uint32_t *gone = NULL;
	size_t n_changed = 0, n_gone = 0;
	int complete;
	const char *error;
	struct imap_range *ranges = NULL;
	size_t n_ranges = 0;
	const struct imap_arg *set = &c->parsed.args[0];
	uint32_t star = s->view.uidnext > 1 ? s->view.uidnext - 1 : 1;

	if (s->view.n > 0 && s->view.msgs[s->view.n - 1].uid > star)
		star = s->view.msgs[s->view.n - 1].uid;
	if (imap_seqset_parse(set->s, set->len, star, &ranges, &n_ranges) < 0)
		return;
	if (mstore_box_changes(s->view.box, st->changedsince, &changed, &n_changed, &gone, &n_gone,
	                       &complete, &error) == MSTORE_OK) {
		size_t k = 0;
		for (size_t i = 0; i < n_gone; i++) {
			if (imap_seqset_contains(ranges, n_ranges, gone[i]) &&
			    imap_view_seq(s, gone[i]) == 0)
				gone[k++] = gone[i];
		}
		if (k > 0) {
			imap_out_data(c, "* VANISHED (EARLIER) ", 21);
			imap_out_set(&c->out, gone, k);
			imap_out_data(c, "\r\n", 2);
		}
	}
	free(changed);
	free(gone);
	free(ranges);
}

static enum imap_cmd_result fetch_run(struct imap_session *s, struct imap_cmd *c,
                                      struct fetch_state *st)
{
	while (st->pos < st->n) {
		const struct mstore_msg *m = &s->view.msgs[st->idx[st->pos]];
		if (!st->in_msg) {
			if (c->out.len >= IMAP_OUT_STEP)
				return IMAP_CMD_MORE;
			if (st->changedsince != 0 && m->modseq <= st->changedsince) {
				st->pos++;
				continue;
			}
			int unknown_cte = 0;
			int r = fetch_msg_begin(s, c, st, m, &unknown_cte);
			if (r != 0) {
				fetch_msg_release(st);
				if (unknown_cte) {
					imap_cmd_no(c, "[UNKNOWN-CTE] Cannot decode the part's "
					               "Content-Transfer-Encoding");
					return IMAP_CMD_DONE;
				}
				if (r < 0)
					st->failed = 1;
				st->pos++;
				continue;
			}
			st->in_msg = 1;
			st->item = 0;
			imap_out(c, "* %zu FETCH (", st->idx[st->pos] + 1);
			/* UID FETCH always says UID; an implicit \Seen change shows FLAGS. */
			int sep = 0;
			if (c->parsed.uid) {
				imap_out(c, "UID %u", m->uid);
				sep = 1;
			}
			if (st->n_seen > 0 && imap_uid_listed(st->seen_uids, st->n_seen, m->uid)) {
				if (!st->has_flags) {
					imap_out(c, "%s", sep ? " " : "");
					fetch_flags(s, c, m);
					sep = 1;
				}
				if (s->condstore && !st->has_modseq) {
					imap_out(c, "%sMODSEQ (%llu)", sep ? " " : "",
					         (unsigned long long)m->modseq);
					sep = 1;
				}
			}
			st->need_sep = sep;
		}
		for (; st->item < st->n_items; st->item++) {
			const struct fetch_item *fi = &st->items[st->item];
			const struct imap_section_data *d = &st->data[st->item];
			if (st->lit_active) {
				if (!fetch_literal(c, st, d))
					return IMAP_CMD_MORE;
				continue;
			}
			if (fi->kind == FI_UID && c->parsed.uid)
				continue;
			if (st->need_sep)
				imap_out_data(c, " ", 1);
			st->need_sep = 1;
			if (fi->kind != FI_SECTION) {
				fetch_simple(s, c, st, fi, m);
				continue;
			}
			fetch_section_head(c, st, fi, d);
			if (st->lit_active && !fetch_literal(c, st, d))
				return IMAP_CMD_MORE;
		}
		imap_out_data(c, ")\r\n", 3);
		fetch_msg_release(st);
		st->pos++;
	}
	if (st->failed)
		imap_cmd_no(c, "[SERVERBUG] Some messages could not be read");
	else
		imap_cmd_ok(c, "Fetch completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_fetch(struct imap_session *s, struct imap_cmd *c)
{
	struct fetch_state *st = c->state;

	if (st != NULL)
		return fetch_run(s, c, st);

	const struct imap_arg *args = c->parsed.args;
	size_t n_args = c->parsed.n_args;
	if (n_args < 2 || n_args > 3 || args[0].type != IMAP_ARG_ATOM ||
	    (args[1].type != IMAP_ARG_ATOM && args[1].type != IMAP_ARG_LIST) ||
	    (n_args == 3 && args[2].type != IMAP_ARG_LIST)) {
		imap_cmd_bad(c, "Usage: FETCH sequence-set items [(modifiers)]");
		return IMAP_CMD_DONE;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		imap_cmd_no(c, "[SERVERBUG] Out of memory");
		return IMAP_CMD_DONE;
	}
	c->state = st;
	c->state_free = fetch_state_free;

	int bad = 0, r = 0;
	if (args[1].type == IMAP_ARG_ATOM) {
		r = fetch_add_atom(st, &args[1], 1, &bad);
	} else {
		if (args[1].n == 0)
			bad = 1;
		for (size_t i = 0; i < args[1].n && r == 0; i++)
			r = fetch_add_atom(st, &args[1].list[i], 0, &bad);
	}
	int vanished = 0;
	if (r == 0 && n_args == 3 && fetch_modifiers(s, c, st, &args[2], &vanished) < 0)
		bad = 1;
	if (bad || r < 0) {
		if (bad)
			imap_cmd_bad(c, "Invalid FETCH item or modifier");
		else
			imap_cmd_no(c, "[SERVERBUG] Out of memory");
		return IMAP_CMD_DONE;
	}
	st->has_flags = fetch_has(st, FI_FLAGS);
	st->has_modseq = fetch_has(st, FI_MODSEQ);
	if (st->has_modseq)
		s->condstore = 1; /* RFC 7162 3.1: a MODSEQ item enables CONDSTORE */
	st->data = calloc(st->n_items, sizeof(*st->data));
	if (st->data == NULL) {
		imap_cmd_no(c, "[SERVERBUG] Out of memory");
		return IMAP_CMD_DONE;
	}
	if (imap_view_set(s, args[0].s, args[0].len, c->parsed.uid, &st->idx, &st->n) < 0) {
		imap_cmd_bad(c, "Invalid sequence set");
		return IMAP_CMD_DONE;
	}
	if (vanished)
		fetch_vanished(s, c, st);
	if (fetch_set_seen(s, c, st) < 0) {
		imap_cmd_no(c, "[SERVERBUG] Out of memory");
		return IMAP_CMD_DONE;
	}
	return fetch_run(s, c, st);
}
