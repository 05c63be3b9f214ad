/* SEARCH and UID SEARCH (RFC 9051 6.4.4; rev1 keys of RFC 3501 6.4.4; MODSEQ, RFC 7162
 * 3.1.5; ESEARCH results, RFC 4731 and RFC 9051 7.3.4).
 *
 * The keys become a tree evaluated per message in three-valued logic (match, no match,
 * not known yet) at increasing cost: first from the view (flags, size, dates, UIDs,
 * sequence numbers, modseq), then from the cached decoded address and subject fields
 * (computed from the header block and cached on first use), then from the header block
 * read from the file, and only then from the whole message and its MIME tree.  A
 * message is settled at the cheapest level that decides it.
 *
 * Strings match as case-insensitive substrings of UTF-8 text (imap_fold): header
 * values after RFC 2047 decoding, bodies after transfer and charset decoding. */
#include "imap/imap_private.h"
#include "imap/imap_render.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEARCH_DEPTH_MAX    64 /* nesting of OR / NOT / parentheses */
#define SEARCH_HEADER_READ  16384
#define SEARCH_HEADER_MAX   (8 * 1024 * 1024)
#define SEARCH_FIELDS_CACHE "imap.search.v1"

/* What a key needs to be evaluated. */
enum search_level { SL_INDEX, SL_FIELDS, SL_HEADER, SL_FULL };

/* The cached fields, in cache order. */
enum { SF_FROM, SF_TO, SF_CC, SF_BCC, SF_SUBJECT, SF_N };
static const char *const sf_names[SF_N] = {"From", "To", "Cc", "Bcc", "Subject"};

enum skey_type {
	SK_ALL,
	SK_NONE,
	SK_AND,
	SK_OR,
	SK_NOT,
	SK_FLAG,    /* flag set (neg: not set) */
	SK_KEYWORD, /* keyword index kw set (neg: not set) */
	SK_LARGER,
	SK_SMALLER,
	SK_BEFORE,
	SK_ON,
	SK_SINCE,
	SK_SENTBEFORE,
	SK_SENTON,
	SK_SENTSINCE,
	SK_SEQSET,
	SK_UIDSET,
	SK_MODSEQ,
	SK_FIELD, /* FROM TO CC BCC SUBJECT: field */
	SK_HEADER,
	SK_BODY,
	SK_TEXT,
};

struct skey {
	enum skey_type type;
	enum search_level level;
	int neg;
	uint32_t flag;
	int kw;
	int field;
	uint64_t num;
	int64_t day;
	struct imap_range *ranges;
	size_t n_ranges;
	char *str; /* folded needle */
	size_t len;
	char *hdr; /* HEADER field name */
	struct skey **kids;
	size_t n_kids;
};

struct search_parse {
	struct imap_session *s;
	const char *error; /* BAD text */
	int modseq;        /* a MODSEQ key was given */
};

/* One message being looked at. */
struct search_msg {
	struct imap_session *s;
	const struct mstore_msg *m;
	uint32_t seq;
	enum search_level level;
	char *fields; /* the cached string */
	struct slice f[SF_N];
	int64_t sent_day;
	int has_sent;
	char *msg; /* header block (read) or whole file (mapped) */
	size_t len, hend;
	int mapped;
	struct mime_part *root;
	struct buf *scratch;
	char *pre_fields;     /* the cached string read ahead for the whole mailbox, or NULL */
	size_t pre_len;
};

static void skey_free(struct skey *k)
{
	if (k == NULL)
		return;
	for (size_t i = 0; i < k->n_kids; i++)
		skey_free(k->kids[i]);
	free(k->kids);
	free(k->ranges);
	free(k->str);
	free(k->hdr);
	free(k);
}

static struct skey *skey_new(enum skey_type type, enum search_level level)
{
	struct skey *k = calloc(1, sizeof(*k));
	if (k != NULL) {
		k->type = type;
		k->level = level;
	}
	return k;
}

static int skey_add_kid(struct skey *parent, struct skey *kid)
{
	struct skey **p = realloc(parent->kids, (parent->n_kids + 1) * sizeof(*p));
	if (p == NULL)
		return -1;
	parent->kids = p;
	parent->kids[parent->n_kids++] = kid;
	return 0;
}

/* ---- parsing -------------------------------------------------------------------------------- */

/* Day number (days since the epoch) of an IMAP date argument. */
static int arg_day(const struct imap_arg *arg, int64_t *day_r)
{
	int64_t t;

	if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_STRING)
		return -1;
	if (imap_date_parse(arg->s, arg->len, &t) < 0)
		return -1;
	*day_r = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
	return 0;
}

static int64_t local_day(int64_t t, int tz_minutes)
{
	int64_t l = t + (int64_t)tz_minutes * 60;
	return l >= 0 ? l / 86400 : -((-l + 86399) / 86400);
}

static struct skey *key_string(enum skey_type type, enum search_level level,
                               const struct imap_arg *arg)
{
	if (!imap_arg_is_astring(arg))
		return NULL;
	struct skey *k = skey_new(type, level);
	if (k == NULL)
		return NULL;
	k->str = malloc(arg->len + 1);
	if (k->str == NULL) {
		free(k);
		return NULL;
	}
	imap_fold(k->str, arg->s, arg->len);
	k->str[arg->len] = '\0';
	k->len = arg->len;
	return k;
}

static int is_set_atom(const struct imap_arg *a)
{
	return a->type == IMAP_ARG_ATOM && a->len > 0 &&
	       ((a->s[0] >= '0' && a->s[0] <= '9') || a->s[0] == '*');
}

static uint32_t last_uid(const struct imap_session *s)
{
	if (s->view.n > 0)
		return s->view.msgs[s->view.n - 1].uid;
	return s->view.uidnext > 1 ? s->view.uidnext - 1 : 1;
}

static struct skey *parse_key(struct search_parse *p, const struct imap_arg *args, size_t n,
                              size_t *i, int depth);

/* Keys up to the end of args (or of a parenthesised list) as one AND node. */
static struct skey *parse_list(struct search_parse *p, const struct imap_arg *args, size_t n,
                               int depth)
{
	struct skey *and = skey_new(SK_AND, SL_INDEX);
	size_t i = 0;

	if (and == NULL)
		return NULL;
	if (n == 0) {
		p->error = "Missing search key";
		skey_free(and);
		return NULL;
	}
	while (i < n) {
		struct skey *k = parse_key(p, args, n, &i, depth);
		if (k == NULL || skey_add_kid(and, k) < 0) {
			skey_free(k);
			skey_free(and);
			return NULL;
		}
	}
	return and;
}

static struct skey *parse_flag(uint32_t flag, int neg)
{
	struct skey *k = skey_new(SK_FLAG, SL_INDEX);
	if (k != NULL) {
		k->flag = flag;
		k->neg = neg;
	}
	return k;
}

static struct skey *parse_keyword(struct search_parse *p, const struct imap_arg *a, int neg)
{
	static const struct {
		const char *name;
		uint32_t flag;
	} sys[] = {
	    {"\\Seen", MSTORE_F_SEEN},       {"\\Answered", MSTORE_F_ANSWERED},
	    {"\\Flagged", MSTORE_F_FLAGGED}, {"\\Deleted", MSTORE_F_DELETED},
	    {"\\Draft", MSTORE_F_DRAFT},
	};

	if (a->type != IMAP_ARG_ATOM) {
		p->error = "KEYWORD needs a keyword";
		return NULL;
	}
	for (size_t i = 0; i < sizeof(sys) / sizeof(sys[0]); i++) {
		if (strcasecmp(a->s, sys[i].name) == 0)
			return parse_flag(sys[i].flag, neg);
	}
	size_t nk = 0;
	const char *const *names = mstore_box_keywords(p->s->view.box, &nk);
	for (size_t i = 0; i < nk && i < 64; i++) {
		if (strcasecmp(names[i], a->s) == 0) {
			struct skey *k = skey_new(SK_KEYWORD, SL_INDEX);
			if (k != NULL) {
				k->kw = (int)i;
				k->neg = neg;
			}
			return k;
		}
	}
	/* A keyword the mailbox has never seen is set on no message. */
	return skey_new(neg ? SK_ALL : SK_NONE, SL_INDEX);
}

static struct skey *parse_key(struct search_parse *p, const struct imap_arg *args, size_t n,
                              size_t *i, int depth)
{
	static const struct {
		const char *name;
		uint32_t flag;
		int neg;
	} flags[] = {
	    {"ANSWERED", MSTORE_F_ANSWERED, 0}, {"UNANSWERED", MSTORE_F_ANSWERED, 1},
	    {"DELETED", MSTORE_F_DELETED, 0},   {"UNDELETED", MSTORE_F_DELETED, 1},
	    {"DRAFT", MSTORE_F_DRAFT, 0},       {"UNDRAFT", MSTORE_F_DRAFT, 1},
	    {"FLAGGED", MSTORE_F_FLAGGED, 0},   {"UNFLAGGED", MSTORE_F_FLAGGED, 1},
	    {"SEEN", MSTORE_F_SEEN, 0},         {"UNSEEN", MSTORE_F_SEEN, 1},
	};
	static const struct {
		const char *name;
		enum skey_type type;
	} dates[] = {
	    {"BEFORE", SK_BEFORE},         {"ON", SK_ON},         {"SINCE", SK_SINCE},
	    {"SENTBEFORE", SK_SENTBEFORE}, {"SENTON", SK_SENTON}, {"SENTSINCE", SK_SENTSINCE},
	};
	const struct imap_arg *a = &args[*i];
	struct skey *k = NULL;

	if (depth > SEARCH_DEPTH_MAX) {
		p->error = "Search keys nested too deeply";
		return NULL;
	}
	(*i)++;
	if (a->type == IMAP_ARG_LIST) {
		k = parse_list(p, a->list, a->n, depth + 1);
		return k;
	}
	if (a->type != IMAP_ARG_ATOM) {
		p->error = "Search key expected";
		return NULL;
	}
	const char *name = a->s;
	const struct imap_arg *next = *i < n ? &args[*i] : NULL;

	if (is_set_atom(a)) {
		k = skey_new(SK_SEQSET, SL_INDEX);
		if (k == NULL)
			return NULL;
		uint32_t star = p->s->view.n > 0 ? (uint32_t)p->s->view.n : 1;
		if (imap_seqset_parse(a->s, a->len, star, &k->ranges, &k->n_ranges) < 0) {
			p->error = "Invalid sequence set";
			skey_free(k);
			return NULL;
		}
		return k;
	}
	for (size_t j = 0; j < sizeof(flags) / sizeof(flags[0]); j++) {
		if (strcasecmp(name, flags[j].name) == 0)
			return parse_flag(flags[j].flag, flags[j].neg);
	}
	if (strcasecmp(name, "ALL") == 0 || strcasecmp(name, "OLD") == 0)
		return skey_new(SK_ALL, SL_INDEX);
	/* We keep no \Recent (IMAP4rev2 dropped it): RECENT and NEW match nothing. */
	if (strcasecmp(name, "RECENT") == 0 || strcasecmp(name, "NEW") == 0)
		return skey_new(SK_NONE, SL_INDEX);
	if (strcasecmp(name, "NOT") == 0) {
		if (next == NULL) {
			p->error = "NOT needs a search key";
			return NULL;
		}
		struct skey *kid = parse_key(p, args, n, i, depth + 1);
		if (kid == NULL)
			return NULL;
		k = skey_new(SK_NOT, SL_INDEX);
		if (k == NULL || skey_add_kid(k, kid) < 0) {
			skey_free(kid);
			skey_free(k);
			return NULL;
		}
		return k;
	}
	if (strcasecmp(name, "OR") == 0) {
		k = skey_new(SK_OR, SL_INDEX);
		if (k == NULL)
			return NULL;
		for (int j = 0; j < 2; j++) {
			if (*i >= n) {
				p->error = "OR needs two search keys";
				skey_free(k);
				return NULL;
			}
			struct skey *kid = parse_key(p, args, n, i, depth + 1);
			if (kid == NULL || skey_add_kid(k, kid) < 0) {
				skey_free(kid);
				skey_free(k);
				return NULL;
			}
		}
		return k;
	}
	if (next == NULL) {
		p->error = "Unknown search key or missing argument";
		return NULL;
	}
	/* Keys with one argument from here on. */
	(*i)++;
	if (strcasecmp(name, "KEYWORD") == 0 || strcasecmp(name, "UNKEYWORD") == 0) {
		k = parse_keyword(p, next, name[0] == 'U' || name[0] == 'u');
		return k;
	}
	if (strcasecmp(name, "LARGER") == 0 || strcasecmp(name, "SMALLER") == 0) {
		k = skey_new((name[0] == 'L' || name[0] == 'l') ? SK_LARGER : SK_SMALLER, SL_INDEX);
		if (k != NULL && imap_arg_number(next, &k->num) < 0) {
			p->error = "Invalid size";
			skey_free(k);
			return NULL;
		}
		return k;
	}
	for (size_t j = 0; j < sizeof(dates) / sizeof(dates[0]); j++) {
		if (strcasecmp(name, dates[j].name) != 0)
			continue;
		k = skey_new(dates[j].type, dates[j].type >= SK_SENTBEFORE ? SL_FIELDS : SL_INDEX);
		if (k != NULL && arg_day(next, &k->day) < 0) {
			p->error = "Invalid date";
			skey_free(k);
			return NULL;
		}
		return k;
	}
	if (strcasecmp(name, "UID") == 0) {
		if (!is_set_atom(next)) {
			p->error = "Invalid UID set";
			return NULL;
		}
		k = skey_new(SK_UIDSET, SL_INDEX);
		if (k != NULL && imap_seqset_parse(next->s, next->len, last_uid(p->s), &k->ranges,
		                                   &k->n_ranges) < 0) {
			p->error = "Invalid UID set";
			skey_free(k);
			return NULL;
		}
		return k;
	}
	if (strcasecmp(name, "MODSEQ") == 0) {
		/* RFC 7162 3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer */
		if (next->type == IMAP_ARG_STRING) {
			if (*i + 1 >= n) {
				p->error = "Invalid MODSEQ key";
				return NULL;
			}
			next = &args[*i + 1];
			*i += 2;
		}
		k = skey_new(SK_MODSEQ, SL_INDEX);
		if (k != NULL && imap_arg_number(next, &k->num) < 0) {
			p->error = "Invalid MODSEQ value";
			skey_free(k);
			return NULL;
		}
		p->modseq = 1;
		return k;
	}
	for (int f = 0; f < SF_N; f++) {
		if (strcasecmp(name, sf_names[f]) == 0) {
			k = key_string(SK_FIELD, SL_FIELDS, next);
			if (k != NULL)
				k->field = f;
			else
				p->error = "Invalid string";
			return k;
		}
	}
	if (strcasecmp(name, "BODY") == 0 || strcasecmp(name, "TEXT") == 0) {
		k = key_string(name[0] == 'B' || name[0] == 'b' ? SK_BODY : SK_TEXT, SL_FULL, next);
		if (k == NULL)
			p->error = "Invalid string";
		return k;
	}
	if (strcasecmp(name, "HEADER") == 0) {
		if (*i >= n || !imap_arg_is_astring(next)) {
			p->error = "HEADER needs a field name and a string";
			return NULL;
		}
		k = key_string(SK_HEADER, SL_HEADER, &args[*i]);
		(*i)++;
		if (k == NULL || (k->hdr = strndup(next->s, next->len)) == NULL) {
			p->error = "Invalid string";
			skey_free(k);
			return NULL;
		}
		return k;
	}
	p->error = "Unknown search key";
	return NULL;
}

static enum search_level skey_max_level(const struct skey *k)
{
	enum search_level l = k->level;
	for (size_t i = 0; i < k->n_kids; i++) {
		enum search_level kl = skey_max_level(k->kids[i]);
		if (kl > l)
			l = kl;
	}
	return l;
}

/* ---- loading a message ------------------------------------------------------------------- */

static void search_msg_release(struct search_msg *x)
{
	free(x->fields);
	x->fields = NULL;
	free(x->pre_fields);
	x->pre_fields = NULL;
	mime_free(&x->root);
	if (x->mapped)
		munmap(x->msg, x->len);
	else
		free(x->msg);
	x->msg = NULL;
	x->len = 0;
	x->mapped = 0;
}

/* The header block (full 0) or the whole file (full 1).  0, 1 (expunged), -1. */
static int search_read(struct search_msg *x, int full)
{
	const char *error = NULL;
	int fd;
	int st = mstore_box_msg_open(x->s->view.box, x->m->uid, &fd, &error);

	if (st == MSTORE_NOT_FOUND)
		return 1;
	if (st != MSTORE_OK) {
		imap_session_log(x->s, LOG_LEVEL_ERROR, "search uid=%u error=\"%s\"", x->m->uid,
		                 error != NULL ? error : "?");
		return -1;
	}
	if (x->msg != NULL) {
		/* From the header block to the whole message. */
		free(x->msg);
		x->msg = NULL;
		x->len = 0;
	}
	int r = 0;
	if (full) {
		struct stat sb;
		if (fstat(fd, &sb) < 0) {
			r = -1;
		} else if (sb.st_size == 0) {
			x->msg = strdup("");
			r = x->msg != NULL ? 0 : -1;
		} else {
			void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (p == MAP_FAILED) {
				r = -1;
			} else {
				x->msg = p;
				x->len = (size_t)sb.st_size;
				x->mapped = 1;
			}
		}
	} else {
		size_t cap = 0;
		int complete = 0;
		for (;;) {
			if (cap - x->len < SEARCH_HEADER_READ + 1) {
				size_t ncap = cap == 0 ? 2 * SEARCH_HEADER_READ : cap * 2;
				char *np = realloc(x->msg, ncap);
				if (np == NULL) {
					r = -1;
					break;
				}
				x->msg = np;
				cap = ncap;
			}
			ssize_t n = read(fd, x->msg + x->len, SEARCH_HEADER_READ);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				r = n < 0 ? -1 : 0;
				break;
			}
			x->len += (size_t)n;
			imap_header_end(x->msg, x->len, &complete);
			if (complete || x->len >= SEARCH_HEADER_MAX)
				break;
		}
		if (x->msg != NULL)
			x->msg[x->len] = '\0';
	}
	close(fd);
	if (r < 0) {
		imap_session_log(x->s, LOG_LEVEL_ERROR, "search uid=%u error=\"read failed\"",
		                 x->m->uid);
		return -1;
	}
	int complete;
	x->hend = imap_header_end(x->msg, x->len, &complete);
	return 0;
}

/* Splits the cached string "day\x01from\x01to\x01cc\x01bcc\x01subject". */
static int search_fields_split(struct search_msg *x, size_t len)
{
	char *p = x->fields, *end = x->fields + len;
	char *sep = memchr(p, '\x01', (size_t)(end - p));

	if (sep == NULL)
		return -1;
	x->has_sent = p[0] != '-';
	x->sent_day = x->has_sent ? strtoll(p, NULL, 10) : 0;
	p = sep + 1;
	for (int i = 0; i < SF_N; i++) {
		sep = i + 1 < SF_N ? memchr(p, '\x01', (size_t)(end - p)) : end;
		if (sep == NULL)
			return -1;
		x->f[i].p = p;
		x->f[i].len = (size_t)(sep - p);
		p = sep + 1;
	}
	return 0;
}

int imap_search_fields_cache(struct imap_session *s, uint32_t uid, const char *msg,
			     size_t hend, struct buf *b)
{
	int64_t t;
	int tz;

	char *date = mime_header_get(msg, 0, hend, "Date");
	if (date != NULL && mime_date_parse(date, strlen(date), &t, &tz) == 0)
		buf_printf(b, "%lld", (long long)local_day(t, tz));
	else
		buf_append(b, "-", 1);
	free(date);
	for (int i = 0; i < SF_N; i++) {
		buf_append(b, "\x01", 1);
		char *v = mime_header_get(msg, 0, hend, sf_names[i]);
		if (v == NULL)
			continue;
		char *d = mime_decode_words(v, strlen(v));
		free(v);
		if (d == NULL)
			continue;
		size_t dl = strlen(d);
		for (size_t j = 0; j < dl; j++) {
			if (d[j] == '\x01')
				d[j] = ' ';
		}
		imap_fold(d, d, dl);
		buf_append(b, d, dl);
		free(d);
	}
	if (b->data == NULL)
		return -1;
	/* Best effort: without it the next search reads the header again. */
	imap_cache_put(s, uid, SEARCH_FIELDS_CACHE, b->data, b->len);
	return 0;
}

/* Builds the fields string from the header block and caches it. */
static int search_fields_build(struct search_msg *x)
{
	struct buf b;
	buf_init(&b, 0);
	if (imap_search_fields_cache(x->s, x->m->uid, x->msg, x->hend, &b) < 0) {
		buf_deinit(&b);
		return -1;
	}
	x->fields = b.data;
	return search_fields_split(x, b.len);
}

/* Raises x to level want (or further, when reading the file anyway).  0, 1 (expunged),
 * -1. */
static int search_load(struct search_msg *x, enum search_level want, enum search_level max)
{
	if (want <= x->level)
		return 0;
	if (want == SL_FIELDS && x->pre_fields != NULL) {
		x->fields = x->pre_fields;
		x->pre_fields = NULL;
		if (search_fields_split(x, x->pre_len) == 0) {
			x->level = SL_FIELDS;
			return 0;
		}
		free(x->fields);
		x->fields = NULL;
	}
	if (want == SL_FIELDS) {
		char *v = NULL;
		size_t len = 0;
		const char *error;
		if (mstore_box_cache_get(x->s->view.box, x->m->uid, SEARCH_FIELDS_CACHE, &v, &len,
		                         &error) == 1) {
			x->fields = v;
			if (search_fields_split(x, len) == 0) {
				x->level = SL_FIELDS;
				return 0;
			}
			free(v);
			x->fields = NULL;
		}
	}
	if (x->level < SL_HEADER) {
		/* Read what the deepest key will want, not the header twice. */
		int r = search_read(x, max == SL_FULL);
		if (r != 0)
			return r;
		x->level = max == SL_FULL ? SL_FULL : SL_HEADER;
		if (x->fields == NULL && search_fields_build(x) < 0)
			return -1;
	}
	if (want == SL_FULL && x->level < SL_FULL) {
		int r = search_read(x, 1);
		if (r != 0)
			return r;
		x->level = SL_FULL;
	}
	if (x->level == SL_FULL && x->root == NULL) {
		x->root = mime_parse(x->msg, x->len, NULL);
		if (x->root == NULL)
			return -1;
	}
	return 0;
}

/* ---- evaluation ---------------------------------------------------------------------------- */

struct header_match {
	const struct skey *k;
	struct buf *scratch;
	int found;
};

static int header_match_cb(void *ctx, const char *name, size_t name_len, const char *value,
                           size_t value_len)
{
	struct header_match *h = ctx;

	if (strlen(h->k->hdr) != name_len || strncasecmp(h->k->hdr, name, name_len) != 0)
		return 0;
	if (h->k->len == 0) {
		h->found = 1;
		return 1;
	}
	char *d = mime_decode_words(value, value_len);
	if (d == NULL)
		return 0;
	h->found = imap_fold_contains(h->scratch, d, strlen(d), h->k->str, h->k->len);
	free(d);
	return h->found;
}

static int text_contains(struct search_msg *x, const char *s, size_t len, const struct skey *k)
{
	return imap_fold_contains(x->scratch, s, len, k->str, k->len);
}

static int header_block_contains(struct search_msg *x, size_t start, size_t end,
                                 const struct skey *k)
{
	char *d = mime_decode_words(x->msg + start, end - start);
	if (d == NULL)
		return 0;
	int r = text_contains(x, d, strlen(d), k);
	free(d);
	return r;
}

/* BODY: the text of the leaf parts; TEXT also the headers of embedded messages. */
static int body_contains(struct search_msg *x, const struct mime_part *p, const struct skey *k,
                         int text)
{
	if (strcmp(p->type, "multipart") == 0) {
		for (size_t i = 0; i < p->n_children; i++) {
			if (body_contains(x, p->children[i], k, text))
				return 1;
		}
		return 0;
	}
	if (p->n_children == 1) {
		/* message/rfc822: its header, then its body */
		const struct mime_part *m = p->children[0];
		if (text && header_block_contains(x, m->header_start, m->header_end, k))
			return 1;
		return body_contains(x, m, k, text);
	}
	size_t len = 0;
	char *t = mime_body_text(x->msg, p, &len);
	if (t == NULL)
		return 0;
	int r = text_contains(x, t, len, k);
	free(t);
	return r;
}

static int sent_cmp(const struct search_msg *x, enum skey_type type, int64_t day)
{
	/* Without a usable Date: the internal date stands in (as Dovecot does). */
	int64_t d =
	    x->has_sent ? x->sent_day : local_day(x->m->internaldate, x->m->internaldate_tz);
	switch (type) {
	case SK_SENTBEFORE:
		return d < day;
	case SK_SENTON:
		return d == day;
	default:
		return d >= day;
	}
}

/* 1 match, 0 no match, -1 not known at x's level. */
static int search_eval(struct search_msg *x, const struct skey *k)
{
	const struct mstore_msg *m = x->m;

	switch (k->type) {
	case SK_AND: {
		int r = 1;
		for (size_t i = 0; i < k->n_kids; i++) {
			int kr = search_eval(x, k->kids[i]);
			if (kr == 0)
				return 0;
			if (kr < 0)
				r = -1;
		}
		return r;
	}
	case SK_OR: {
		int a = search_eval(x, k->kids[0]);
		if (a == 1)
			return 1;
		int b = search_eval(x, k->kids[1]);
		if (b == 1)
			return 1;
		return a == 0 && b == 0 ? 0 : -1;
	}
	case SK_NOT: {
		int r = search_eval(x, k->kids[0]);
		return r < 0 ? -1 : !r;
	}
	default:
		break;
	}
	if (k->level > x->level)
		return -1;
	int64_t iday = local_day(m->internaldate, m->internaldate_tz);
	switch (k->type) {
	case SK_ALL:
		return 1;
	case SK_NONE:
		return 0;
	case SK_FLAG:
		return ((m->flags & k->flag) != 0) != k->neg;
	case SK_KEYWORD:
		return (int)((m->keywords >> k->kw) & 1) != k->neg;
	case SK_LARGER:
		return m->size > k->num;
	case SK_SMALLER:
		return m->size < k->num;
	case SK_BEFORE:
		return iday < k->day;
	case SK_ON:
		return iday == k->day;
	case SK_SINCE:
		return iday >= k->day;
	case SK_SENTBEFORE:
	case SK_SENTON:
	case SK_SENTSINCE:
		return sent_cmp(x, k->type, k->day);
	case SK_SEQSET:
		return imap_seqset_contains(k->ranges, k->n_ranges, x->seq);
	case SK_UIDSET:
		return imap_seqset_contains(k->ranges, k->n_ranges, m->uid);
	case SK_MODSEQ:
		return m->modseq >= k->num;
	case SK_FIELD:
		if (k->len == 0)
			return 1;
		return memmem(x->f[k->field].p, x->f[k->field].len, k->str, k->len) != NULL;
	case SK_HEADER: {
		struct header_match h = {k, x->scratch, 0};
		mime_header_each(x->msg, 0, x->hend, 100000, header_match_cb, &h);
		return h.found;
	}
	case SK_TEXT:
		if (header_block_contains(x, x->root->header_start, x->root->header_end, k))
			return 1;
		return body_contains(x, x->root, k, 1);
	case SK_BODY:
		return body_contains(x, x->root, k, 0);
	default:
		return 0;
	}
}

/* ---- the command ---------------------------------------------------------------------------- */

enum { RET_MIN = 1, RET_MAX = 2, RET_ALL = 4, RET_COUNT = 8 };

/* The cached fields of every message of the view, read in one pass (a query per
 * message would cost more than the matching). */
struct search_preload {
	const struct imap_view *v;
	size_t next;
	char **vals;
	size_t *lens;
};

static int search_preload_cb(void *ctx, uint32_t uid, const void *value, size_t len)
{
	struct search_preload *p = ctx;
	while (p->next < p->v->n && p->v->msgs[p->next].uid < uid)
		p->next++;
	if (p->next == p->v->n)
		return 1;
	if (p->v->msgs[p->next].uid != uid)
		return 0;
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return 1; /* the rest are read one by one */
	memcpy(copy, value, len);
	copy[len] = '\0';
	p->vals[p->next] = copy;
	p->lens[p->next] = len;
	return 0;
}

static void search_preload(struct imap_session *s, struct search_preload *p)
{
	const char *error;
	memset(p, 0, sizeof(*p));
	p->v = &s->view;
	p->vals = calloc(s->view.n, sizeof(*p->vals));
	p->lens = calloc(s->view.n, sizeof(*p->lens));
	if (p->vals == NULL || p->lens == NULL ||
	    mstore_box_cache_scan(s->view.box, SEARCH_FIELDS_CACHE, search_preload_cb, p,
				  &error) != MSTORE_OK)
		imap_session_log(s, LOG_LEVEL_DEBUG, "search: no read-ahead of cached fields");
}

static void search_preload_free(struct search_preload *p)
{
	for (size_t i = 0; p->vals != NULL && i < p->v->n; i++)
		free(p->vals[i]);
	free(p->vals);
	free(p->lens);
}

enum imap_cmd_result imap_cmd_search(struct imap_session *s, struct imap_cmd *c)
{
	const struct imap_arg *args = c->parsed.args;
	size_t n = c->parsed.n_args, i = 0;
	unsigned ret = 0;
	int esearch = s->imap4rev2;

	/* RFC 4731 3: RETURN (options) comes first. */
	if (i + 1 < n && args[i].type == IMAP_ARG_ATOM && strcasecmp(args[i].s, "RETURN") == 0 &&
	    args[i + 1].type == IMAP_ARG_LIST) {
		const struct imap_arg *l = &args[i + 1];
		for (size_t j = 0; j < l->n; j++) {
			const char *o = l->list[j].type == IMAP_ARG_ATOM ? l->list[j].s : "";
			if (strcasecmp(o, "MIN") == 0)
				ret |= RET_MIN;
			else if (strcasecmp(o, "MAX") == 0)
				ret |= RET_MAX;
			else if (strcasecmp(o, "ALL") == 0)
				ret |= RET_ALL;
			else if (strcasecmp(o, "COUNT") == 0)
				ret |= RET_COUNT;
			else {
				imap_cmd_bad(c, "Unknown RETURN option");
				return IMAP_CMD_DONE;
			}
		}
		if (ret == 0)
			ret = RET_ALL; /* RETURN () means ALL */
		esearch = 1;
		i += 2;
	}
	if (ret == 0)
		ret = RET_ALL;
	if (i < n && args[i].type == IMAP_ARG_ATOM && strcasecmp(args[i].s, "CHARSET") == 0) {
		if (i + 1 >= n || !imap_arg_is_astring(&args[i + 1])) {
			imap_cmd_bad(c, "CHARSET needs a name");
			return IMAP_CMD_DONE;
		}
		const char *cs = args[i + 1].s;
		if (strcasecmp(cs, "UTF-8") != 0 && strcasecmp(cs, "US-ASCII") != 0) {
			imap_cmd_no(c, "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
			return IMAP_CMD_DONE;
		}
		i += 2;
	}

	struct search_parse p = {s, NULL, 0};
	struct skey *root = parse_list(&p, args + i, n - i, 0);
	if (root == NULL) {
		imap_cmd_bad(c, "%s", p.error != NULL ? p.error : "Invalid search");
		return IMAP_CMD_DONE;
	}
	if (p.modseq)
		s->condstore = 1; /* RFC 7162 3.1: a MODSEQ key enables CONDSTORE */
	enum search_level max = skey_max_level(root);

	uint32_t *res = malloc((s->view.n ? s->view.n : 1) * sizeof(*res));
	if (res == NULL) {
		skey_free(root);
		imap_cmd_no(c, "[SERVERBUG] Out of memory");
		return IMAP_CMD_DONE;
	}
	size_t n_res = 0;
	uint64_t top_modseq = 0;
	struct buf scratch;
	buf_init(&scratch, 0);
	int failed = 0;
	struct search_preload pre;
	memset(&pre, 0, sizeof(pre));
	if (max >= SL_FIELDS && s->view.n >= 32)
		search_preload(s, &pre);
	for (size_t k = 0; k < s->view.n; k++) {
		struct search_msg x;
		memset(&x, 0, sizeof(x));
		if (pre.vals != NULL && pre.vals[k] != NULL) {
			x.pre_fields = pre.vals[k];
			x.pre_len = pre.lens[k];
			pre.vals[k] = NULL;
		}
		x.s = s;
		x.m = &s->view.msgs[k];
		x.seq = (uint32_t)k + 1;
		x.level = SL_INDEX;
		x.scratch = &scratch;
		int r = search_eval(&x, root);
		while (r < 0 && x.level < max) {
			enum search_level want = (enum search_level)(x.level + 1);
			int lr = search_load(&x, want, max);
			if (lr != 0) {
				if (lr < 0)
					failed = 1;
				break;
			}
			r = search_eval(&x, root);
		}
		search_msg_release(&x);
		if (r != 1)
			continue;
		res[n_res++] = c->parsed.uid ? x.m->uid : x.seq;
		if (x.m->modseq > top_modseq)
			top_modseq = x.m->modseq;
	}
	buf_deinit(&scratch);
	search_preload_free(&pre);
	skey_free(root);
	if (failed)
		imap_session_log(s, LOG_LEVEL_WARN, "search: some messages could not be read");

	if (esearch) {
		/* RFC 4731 3.1 / RFC 9051 7.3.4 */
		imap_out(c, "* ESEARCH (TAG \"%s\")%s", c->parsed.tag, c->parsed.uid ? " UID" : "");
		if (n_res > 0 && (ret & RET_MIN))
			imap_out(c, " MIN %u", res[0]);
		if (n_res > 0 && (ret & RET_MAX))
			imap_out(c, " MAX %u", res[n_res - 1]);
		if (ret & RET_COUNT)
			imap_out(c, " COUNT %zu", n_res);
		if (n_res > 0 && (ret & RET_ALL)) {
			imap_out(c, " ALL ");
			imap_out_set(&c->out, res, n_res);
		}
		if (p.modseq && n_res > 0)
			imap_out(c, " MODSEQ %llu", (unsigned long long)top_modseq);
		imap_out(c, "\r\n");
	} else {
		imap_out(c, "* SEARCH");
		for (size_t k = 0; k < n_res; k++)
			imap_out(c, " %u", res[k]);
		if (p.modseq && n_res > 0)
			imap_out(c, " (MODSEQ %llu)", (unsigned long long)top_modseq);
		imap_out(c, "\r\n");
	}
	free(res);
	imap_cmd_ok(c, "Search completed");
	return IMAP_CMD_DONE;
}
