/* RFC 5322 3.4 address-list, with the obsolete forms of 4.4 and the mistakes mailers
 * commonly make, into IMAP ENVELOPE's address representation (RFC 9051 7.5.2).
 * Never fails on input: each step consumes at least one token, and what cannot be
 * understood is skipped up to the next "," (or ";" in a group). */
#include "msg/mime.h"

#include <stdlib.h>
#include <string.h>

#include "msg/mime_private.h"

enum mime_tok_type {
	MIME_TOK_END,
	MIME_TOK_ATOM,    /* atext and ".", and any stray byte */
	MIME_TOK_QUOTED,  /* quoted-string, quotes included */
	MIME_TOK_DOMLIT,  /* domain-literal, brackets included */
	MIME_TOK_SPECIAL, /* one of < > @ , : ; */
};

struct mime_tok {
	enum mime_tok_type type;
	const char *p;
	size_t len;
	int ws_before; /* whitespace or a comment came before it */
};

struct mime_addr_parser {
	const char *s;
	size_t len, pos;
	struct mime_addr *addrs;
	size_t n, cap, max;
	int in_group, oom;
	/* The last comment seen: "user@host (Full Name)" names the address. */
	const char *comment;
	size_t comment_len;
	struct mime_tok peeked;
	int has_peeked;
};

static int mime_is_addr_special(int c)
{
	return c == '<' || c == '>' || c == '@' || c == ',' || c == ':' || c == ';';
}

static void ap_next(struct mime_addr_parser *p, struct mime_tok *t)
{
	if (p->has_peeked) {
		*t = p->peeked;
		p->has_peeked = 0;
		return;
	}
	const char *s = p->s;
	t->ws_before = 0;
	while (p->pos < p->len) {
		char c = s[p->pos];
		if (mime_is_wsp((unsigned char)c) || c == '\r' || c == '\n') {
			p->pos++;
			t->ws_before = 1;
		} else if (c == '(') {
			/* RFC 5322 3.2.2 comment; nested, quoted-pairs allowed. */
			size_t start = p->pos + 1;
			int depth = 0;
			for (; p->pos < p->len; p->pos++) {
				if (s[p->pos] == '\\' && p->pos + 1 < p->len)
					p->pos++;
				else if (s[p->pos] == '(')
					depth++;
				else if (s[p->pos] == ')' && --depth == 0)
					break;
			}
			p->comment = s + start;
			p->comment_len = (p->pos < p->len ? p->pos : p->len) - start;
			if (p->pos < p->len)
				p->pos++;
			t->ws_before = 1;
		} else {
			break;
		}
	}
	t->p = s + p->pos;
	if (p->pos >= p->len) {
		t->type = MIME_TOK_END;
		t->len = 0;
		return;
	}
	size_t start = p->pos;
	char c = s[p->pos];
	if (c == '"' || c == '[') {
		char close = c == '"' ? '"' : ']';
		t->type = c == '"' ? MIME_TOK_QUOTED : MIME_TOK_DOMLIT;
		for (p->pos++; p->pos < p->len && s[p->pos] != close; p->pos++) {
			if (s[p->pos] == '\\' && p->pos + 1 < p->len)
				p->pos++;
		}
		if (p->pos < p->len)
			p->pos++;
	} else if (mime_is_addr_special((unsigned char)c)) {
		t->type = MIME_TOK_SPECIAL;
		p->pos++;
	} else {
		t->type = MIME_TOK_ATOM;
		while (p->pos < p->len) {
			c = s[p->pos];
			if (mime_is_wsp((unsigned char)c) || c == '\r' || c == '\n' || c == '(' ||
			    c == '"' || c == '[' || mime_is_addr_special((unsigned char)c))
				break;
			p->pos++;
		}
	}
	t->len = p->pos - start;
}

static void ap_unget(struct mime_addr_parser *p, const struct mime_tok *t)
{
	p->peeked = *t;
	p->has_peeked = 1;
}

static int ap_is(const struct mime_tok *t, char c)
{
	return t->type == MIME_TOK_SPECIAL && t->p[0] == c;
}

static int ap_is_word(const struct mime_tok *t)
{
	return t->type == MIME_TOK_ATOM || t->type == MIME_TOK_QUOTED ||
	       t->type == MIME_TOK_DOMLIT;
}

/* A quoted-string's content, quoted-pairs resolved (RFC 5322 3.2.4). */
static int ap_append_unquoted(struct buf *b, const struct mime_tok *t)
{
	size_t end = t->len;
	if (end > 1 && t->p[end - 1] == '"')
		end--;
	for (size_t i = 1; i < end; i++) {
		if (t->p[i] == '\\' && i + 1 < end)
			i++;
		if (t->p[i] == '\r' || t->p[i] == '\n')
			continue;
		if (buf_append(b, t->p + i, 1) < 0)
			return -1;
	}
	return 0;
}

static char *ap_dup(struct mime_addr_parser *p, const char *s, size_t len)
{
	char *r = mime_strndup(s != NULL ? s : "", len, 0);
	if (r == NULL)
		p->oom = 1;
	return r;
}

/* Adds an entry; a group start needs room for its end as well, and inside a group one
 * slot stays free for the end, so the list the caller gets is always balanced. */
static void ap_emit(struct mime_addr_parser *p, const struct buf *name, const struct buf *adl,
		    const struct buf *mailbox, const struct buf *host, int group_start)
{
	size_t need = 1 + (p->in_group || group_start ? 1 : 0);
	if (p->oom || p->n + need > p->max)
		return;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 4;
		struct mime_addr *a = realloc(p->addrs, cap * sizeof(*a));
		if (a == NULL) {
			p->oom = 1;
			return;
		}
		p->addrs = a;
		p->cap = cap;
	}
	struct mime_addr *a = &p->addrs[p->n++];
	memset(a, 0, sizeof(*a));
	if (name != NULL && name->len > 0)
		a->name = ap_dup(p, name->data, name->len);
	if (adl != NULL && adl->len > 0)
		a->adl = ap_dup(p, adl->data, adl->len);
	if (mailbox != NULL)
		a->mailbox = ap_dup(p, mailbox->data, mailbox->len);
	if (host != NULL)
		a->host = ap_dup(p, host->data, host->len);
}

static void ap_group_end(struct mime_addr_parser *p)
{
	if (!p->in_group)
		return;
	p->in_group = 0;
	/* ap_emit kept a slot for this. */
	if (p->oom || p->n >= p->max)
		return;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 4;
		struct mime_addr *a = realloc(p->addrs, cap * sizeof(*a));
		if (a == NULL) {
			p->oom = 1;
			return;
		}
		p->addrs = a;
		p->cap = cap;
	}
	memset(&p->addrs[p->n++], 0, sizeof(struct mime_addr));
}

/* domain = dot-atom / domain-literal / obs-domain: words glued together as long as no
 * whitespace separates them (except around a "."), so "user@host Junk" stops at host.
 * Leaves the token after it in *t. */
static int ap_domain(struct mime_addr_parser *p, struct buf *host, struct mime_tok *t)
{
	int first = 1;
	ap_next(p, t);
	while (ap_is_word(t)) {
		int dot_join = host->len > 0 && (host->data[host->len - 1] == '.' || t->p[0] == '.');
		if (!first && t->ws_before && !dot_join)
			break;
		if (buf_append(host, t->p, t->len) < 0)
			return -1;
		first = 0;
		ap_next(p, t);
	}
	return 0;
}

/* angle-addr after "<": [obs-route] addr-spec ">" (RFC 5322 3.4, 4.4). */
static int ap_angle(struct mime_addr_parser *p, const struct buf *name)
{
	struct buf adl, mailbox, host;
	struct mime_tok t;
	int has_host = 0, rc = -1;

	buf_init(&adl, 0);
	buf_init(&mailbox, 0);
	buf_init(&host, 0);
	ap_next(p, &t);
	/* obs-route = obs-domain-list ":"; "@a,@b:" kept in adl. */
	if (ap_is(&t, '@')) {
		struct buf route;
		buf_init(&route, 0);
		while (ap_is(&t, '@') || ap_is(&t, ',')) {
			if (buf_append(&route, t.p, 1) < 0)
				goto out_route;
			if (ap_is(&t, '@')) {
				if (ap_domain(p, &route, &t) < 0)
					goto out_route;
			} else {
				ap_next(p, &t);
			}
		}
		if (ap_is(&t, ':')) {
			if (buf_append(&adl, route.data != NULL ? route.data : "", route.len) < 0)
				goto out_route;
			ap_next(p, &t);
		} else {
			/* "<@host>": no local part; take the route as the host. */
			if (route.len > 1 && buf_append(&host, route.data + 1, route.len - 1) < 0)
				goto out_route;
			has_host = route.len > 1;
		}
		buf_deinit(&route);
		goto route_done;
out_route:
		buf_deinit(&route);
		goto out;
	}
route_done:
	while (ap_is_word(&t) && !has_host) {
		/* Local part as sent, quotes included, CFWS dropped (obs-local-part). */
		if (buf_append(&mailbox, t.p, t.len) < 0)
			goto out;
		ap_next(p, &t);
	}
	if (ap_is(&t, '@') && !has_host) {
		has_host = 1;
		if (ap_domain(p, &host, &t) < 0)
			goto out;
	}
	/* Anything else up to the next "," or ";" (the ">" included) is junk. */
	while (t.type != MIME_TOK_END) {
		if (ap_is(&t, ',') || ap_is(&t, ';')) {
			ap_unget(p, &t);
			break;
		}
		ap_next(p, &t);
	}
	ap_emit(p, name, &adl, &mailbox, has_host ? &host : NULL, 0);
	rc = 0;
out:
	buf_deinit(&adl);
	buf_deinit(&mailbox);
	buf_deinit(&host);
	return rc;
}

int mime_addr_parse(const char *value, size_t len, size_t max, struct mime_addr **addrs_r,
		    size_t *n_r)
{
	struct mime_addr_parser p;
	struct buf display, local, host, cname;
	struct mime_tok t;

	memset(&p, 0, sizeof(p));
	p.s = value;
	p.len = len;
	p.max = max;
	buf_init(&display, 0);
	buf_init(&local, 0);
	buf_init(&host, 0);
	buf_init(&cname, 0);
	*addrs_r = NULL;
	*n_r = 0;

	for (;;) {
		buf_reset(&display);
		buf_reset(&local);
		buf_reset(&host);
		buf_reset(&cname);
		p.comment = NULL;
		int words = 0, ok = 1;

		/* A phrase (display name) or a local part: we only know which when we
		 * see what follows it, so both forms are built. */
		ap_next(&p, &t);
		while (ap_is_word(&t) && ok) {
			if (words > 0 && t.ws_before)
				ok = buf_append(&display, " ", 1) == 0;
			if (t.type == MIME_TOK_QUOTED)
				ok = ok && ap_append_unquoted(&display, &t) == 0;
			else
				ok = ok && buf_append(&display, t.p, t.len) == 0;
			ok = ok && buf_append(&local, t.p, t.len) == 0;
			words++;
			ap_next(&p, &t);
		}
		if (!ok) {
			p.oom = 1;
			break;
		}
		if (t.type == MIME_TOK_END || ap_is(&t, ',') || ap_is(&t, ';')) {
			/* A bare word such as "undisclosed-recipients" or "postmaster":
			 * a mailbox without host. */
			if (words > 0)
				ap_emit(&p, NULL, NULL, &local, NULL, 0);
			if (ap_is(&t, ';'))
				ap_group_end(&p);
			if (t.type == MIME_TOK_END)
				break;
		} else if (ap_is(&t, ':')) {
			/* group = display-name ":" [group-list] ";" (3.4); a second ":"
			 * inside a group ends the first one. */
			ap_group_end(&p);
			size_t before = p.n;
			ap_emit(&p, &display, NULL, NULL, NULL, 1);
			if (p.n > before) {
				/* A group start without a name would read as a group end. */
				if (p.addrs[before].name == NULL)
					p.addrs[before].name = ap_dup(&p, "", 0);
				p.in_group = 1;
			}
		} else if (ap_is(&t, '<')) {
			if (ap_angle(&p, words > 0 ? &display : NULL) < 0) {
				p.oom = 1;
				break;
			}
		} else if (ap_is(&t, '@')) {
			/* addr-spec: the phrase was the local part. */
			p.comment = NULL;
			if (ap_domain(&p, &host, &t) < 0) {
				p.oom = 1;
				break;
			}
			/* Junk to the next separator; a comment there names the address. */
			while (t.type != MIME_TOK_END && !ap_is(&t, ',') && !ap_is(&t, ';'))
				ap_next(&p, &t);
			ok = p.comment == NULL ||
			     buf_append(&cname, p.comment, p.comment_len) == 0;
			if (!ok) {
				p.oom = 1;
				break;
			}
			ap_emit(&p, p.comment != NULL ? &cname : NULL, NULL, &local, &host, 0);
			ap_unget(&p, &t);
		}
		/* ">" or "," here is a stray: dropped. */
		if (p.oom)
			break;
	}
	if (!p.oom)
		ap_group_end(&p);
	buf_deinit(&display);
	buf_deinit(&local);
	buf_deinit(&host);
	buf_deinit(&cname);
	if (p.oom) {
		mime_addrs_free(p.addrs, p.n);
		return -1;
	}
	*addrs_r = p.addrs;
	*n_r = p.n;
	return 0;
}

void mime_addrs_free(struct mime_addr *addrs, size_t n)
{
	if (addrs == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(addrs[i].name);
		free(addrs[i].adl);
		free(addrs[i].mailbox);
		free(addrs[i].host);
	}
	free(addrs);
}
