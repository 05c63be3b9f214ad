/* The selected mailbox as the session has announced it, and the untagged updates that
 * bring the client up to date (RFC 9051 5.2, 7.4.1, 7.5.1; RFC 7162 3.2.10 VANISHED).
 *
 * view.msgs is the client's picture: message n is msgs[n-1].  A sync asks the store
 * what changed since the view's HIGHESTMODSEQ (mstore_box_changes); expunges that
 * cannot be announced yet (during FETCH, STORE, SEARCH) wait in view.gone with the
 * messages still in msgs, so that sequence numbers stay what the client believes. */
#include "imap/imap_private.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static size_t view_find(const struct imap_view *v, uint32_t uid, int *found_r)
{
	size_t lo = 0, hi = v->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->msgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found_r = lo < v->n && v->msgs[lo].uid == uid;
	return lo;
}

uint32_t imap_view_seq(const struct imap_session *s, uint32_t uid)
{
	int found;
	size_t i = view_find(&s->view, uid, &found);
	return found ? (uint32_t)(i + 1) : 0;
}

static int gone_has(const struct imap_view *v, uint32_t uid)
{
	size_t lo = 0, hi = v->n_gone;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->gone[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < v->n_gone && v->gone[lo] == uid;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Adds UIDs (of messages in the view) to view.gone, kept sorted and unique. */
static int gone_add(struct imap_view *v, const uint32_t *uids, size_t n)
{
	size_t add = 0;
	for (size_t i = 0; i < n; i++) {
		int found;
		view_find(v, uids[i], &found);
		if (found && !gone_has(v, uids[i]))
			add++;
	}
	if (add == 0)
		return 0;
	uint32_t *g = realloc(v->gone, (v->n_gone + add) * sizeof(*g));
	if (g == NULL)
		return -1;
	v->gone = g;
	size_t m = v->n_gone;
	for (size_t i = 0; i < n; i++) {
		int found;
		view_find(v, uids[i], &found);
		if (found && !gone_has(v, uids[i]) && m < v->n_gone + add) {
			/* gone_has() only looks at the sorted prefix; duplicates inside uids are
			 * removed below. */
			g[m++] = uids[i];
		}
	}
	qsort(g, m, sizeof(*g), cmp_u32);
	size_t w = 0;
	for (size_t i = 0; i < m; i++)
		if (w == 0 || g[w - 1] != g[i])
			g[w++] = g[i];
	v->n_gone = w;
	return 0;
}

int imap_view_writable(struct imap_session *s)
{
	struct imap_view *v = &s->view;
	if (v->shared == NULL)
		return 0;
	size_t cap = v->n + 16;
	struct mstore_msg *own = malloc(cap * sizeof(*own));
	if (own == NULL)
		return -1;
	if (v->n > 0)
		memcpy(own, v->msgs, v->n * sizeof(*own));
	imap_snapshot_release(s->srv->snapshots, &v->shared);
	v->msgs = own;
	v->cap = cap;
	return 0;
}

static int view_append(struct imap_view *v, const struct mstore_msg *m)
{
	assert(v->shared == NULL); /* callers make the view writable first */
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		struct mstore_msg *p = realloc(v->msgs, cap * sizeof(*p));
		if (p == NULL)
			return -1;
		v->msgs = p;
		v->cap = cap;
	}
	v->msgs[v->n++] = *m;
	return 0;
}

/* ---- open and close ------------------------------------------------------------------- */

int imap_view_open(struct imap_session *s, const char *name, int readonly, const char **error_r)
{
	struct imap_view *v = &s->view;
	struct mstore_box *box = NULL;
	struct imap_snapshot *shared = NULL;
	const struct mstore_msg *msgs = NULL;
	size_t n = 0;
	char owner[sizeof(s->domain) + sizeof(s->localpart) + 2];
	imap_view_close(s);
	int st = mstore_box_open(s->store, name, readonly, &box, error_r);
	if (st != MSTORE_OK)
		return st;
	snprintf(owner, sizeof(owner), "%s/%s", s->domain, s->localpart);
	st = imap_snapshot_get(s->srv->snapshots, owner, box, &shared, &msgs, &n, error_r);
	if (st != MSTORE_OK) {
		mstore_box_close(&box);
		return st;
	}
	const struct mstore_mailbox *info = mstore_box_info(box);
	v->box = box;
	snprintf(v->name, sizeof(v->name), "%s", info->name[0] ? info->name : name);
	v->readonly = readonly;
	v->uidvalidity = info->uidvalidity;
	v->uidnext = info->uidnext;
	v->highestmodseq = info->highestmodseq;
	for (size_t i = 0; i < n; i++)
		if (msgs[i].modseq > v->highestmodseq)
			v->highestmodseq = msgs[i].modseq;
	v->msgs = (struct mstore_msg *)msgs; /* read-only while shared */
	v->shared = shared;
	v->n = n;
	v->cap = n;
	v->gone = NULL;
	v->n_gone = 0;
	return MSTORE_OK;
}

void imap_view_close(struct imap_session *s)
{
	struct imap_view *v = &s->view;
	if (v->box != NULL)
		mstore_box_close(&v->box);
	if (v->shared != NULL)
		imap_snapshot_release(s->srv->snapshots, &v->shared);
	else
		free(v->msgs);
	free(v->gone);
	memset(v, 0, sizeof(*v));
}

/* ---- flags ---------------------------------------------------------------------------- */

static const struct {
	uint32_t bit;
	const char *name;
} system_flags[] = {
	{ MSTORE_F_ANSWERED, "\\Answered" }, { MSTORE_F_FLAGGED, "\\Flagged" },
	{ MSTORE_F_DELETED, "\\Deleted" },   { MSTORE_F_SEEN, "\\Seen" },
	{ MSTORE_F_DRAFT, "\\Draft" },
};

void imap_view_flags(struct imap_session *s, struct imap_cmd *c, const struct mstore_msg *m)
{
	int first = 1;
	for (size_t i = 0; i < sizeof(system_flags) / sizeof(system_flags[0]); i++) {
		if (m->flags & system_flags[i].bit) {
			if (!first)
				imap_out_data(c, " ", 1);
			imap_out_data(c, system_flags[i].name, strlen(system_flags[i].name));
			first = 0;
		}
	}
	if (m->keywords == 0 || s->view.box == NULL)
		return;
	size_t nk = 0;
	const char *const *names = mstore_box_keywords(s->view.box, &nk);
	for (size_t i = 0; i < nk && i < 64; i++) {
		if ((m->keywords >> i) & 1) {
			imap_out(c, "%s%s", first ? "" : " ", names[i]);
			first = 0;
		}
	}
}

/* atom-char minus the list and resp specials (RFC 9051 9 flag-keyword = atom). */
static int keyword_char(unsigned char ch)
{
	if (ch <= 0x20 || ch >= 0x7f)
		return 0;
	return strchr("(){%*\"\\]", ch) == NULL;
}

int imap_flags_parse(const struct imap_arg *arg, uint32_t *flags_r, char *keywords, size_t cap)
{
	const struct imap_arg *items = arg;
	size_t n = 1, used = 0;
	*flags_r = 0;
	if (cap > 0)
		keywords[0] = '\0';
	if (arg->type == IMAP_ARG_LIST) {
		items = arg->list;
		n = arg->n;
	}
	for (size_t i = 0; i < n; i++) {
		const struct imap_arg *a = &items[i];
		if (a->type != IMAP_ARG_ATOM || a->len == 0)
			return -1;
		if (a->s[0] == '\\') {
			size_t k;
			for (k = 0; k < sizeof(system_flags) / sizeof(system_flags[0]); k++)
				if (strcasecmp(a->s, system_flags[k].name) == 0)
					break;
			if (k == sizeof(system_flags) / sizeof(system_flags[0]))
				return -1; /* \Recent cannot be set; other \ flags do not exist */
			*flags_r |= system_flags[k].bit;
			continue;
		}
		if (a->len >= MSTORE_KEYWORD_LEN)
			return -1;
		for (size_t k = 0; k < a->len; k++)
			if (!keyword_char((unsigned char)a->s[k]))
				return -1;
		/* Skip duplicates (case-insensitive, as the store compares them). */
		int dup = 0;
		const char *p = keywords;
		while (used > 0 && *p) {
			const char *e = strchr(p, ' ');
			size_t l = e ? (size_t)(e - p) : strlen(p);
			if (l == a->len && strncasecmp(p, a->s, l) == 0)
				dup = 1;
			p += l;
			if (*p == ' ')
				p++;
		}
		if (dup)
			continue;
		if (used + a->len + 2 > cap)
			return -1;
		if (used > 0)
			keywords[used++] = ' ';
		memcpy(keywords + used, a->s, a->len);
		used += a->len;
		keywords[used] = '\0';
	}
	return 0;
}

/* ---- sets ----------------------------------------------------------------------------- */

int imap_view_set(struct imap_session *s, const char *set, size_t len, int uid, size_t **idx_r,
		  size_t *n_r)
{
	struct imap_view *v = &s->view;
	struct imap_range *r = NULL;
	size_t nr = 0;
	*idx_r = NULL;
	*n_r = 0;
	uint32_t star;
	if (uid)
		star = v->n > 0 ? v->msgs[v->n - 1].uid : (v->uidnext > 0 ? v->uidnext - 1 : 0);
	else
		star = (uint32_t)v->n;
	if (imap_seqset_parse(set, len, star, &r, &nr) < 0)
		return -1;
	if (!uid) {
		/* RFC 9051 6.4.1: a number past the last message (or "*" in an empty mailbox)
		 * is an error. */
		for (size_t i = 0; i < nr; i++) {
			if (r[i].lo == 0 || r[i].hi > v->n) {
				free(r);
				return -1;
			}
		}
	}
	size_t count = 0;
	if (!uid) {
		for (size_t i = 0; i < nr; i++)
			count += (size_t)(r[i].hi - r[i].lo + 1);
	} else {
		for (size_t i = 0; i < nr; i++) {
			int f;
			size_t a = view_find(v, r[i].lo, &f);
			size_t b = view_find(v, r[i].hi, &f);
			count += (b - a) + (f ? 1 : 0);
		}
	}
	size_t *idx = malloc((count ? count : 1) * sizeof(*idx));
	if (idx == NULL) {
		free(r);
		return -1;
	}
	size_t k = 0;
	for (size_t i = 0; i < nr; i++) {
		if (!uid) {
			for (uint64_t q = r[i].lo; q <= r[i].hi; q++)
				idx[k++] = (size_t)(q - 1);
		} else {
			int f;
			size_t a = view_find(v, r[i].lo, &f);
			for (size_t j = a; j < v->n && v->msgs[j].uid <= r[i].hi; j++)
				idx[k++] = j;
		}
	}
	free(r);
	*idx_r = idx;
	*n_r = k;
	return 0;
}

/* ---- sync ----------------------------------------------------------------------------- */

static void view_update_msg(struct imap_view *v, size_t i, const struct mstore_msg *m,
			    uint32_t **changed, size_t *n_changed, size_t *cap_changed)
{
	struct mstore_msg *old = &v->msgs[i];
	if (old->flags != m->flags || old->keywords != m->keywords) {
		if (*n_changed == *cap_changed) {
			size_t cap = *cap_changed ? *cap_changed * 2 : 16;
			uint32_t *p = realloc(*changed, cap * sizeof(*p));
			if (p != NULL) {
				*changed = p;
				*cap_changed = cap;
			}
		}
		if (*n_changed < *cap_changed)
			(*changed)[(*n_changed)++] = m->uid;
	}
	old->flags = m->flags;
	old->keywords = m->keywords;
	if (m->modseq > old->modseq)
		old->modseq = m->modseq;
}

/* VANISHED uses a UID set: "3:5,9". */
static void out_uid_set(struct imap_cmd *c, const uint32_t *uids, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		if (j > i)
			imap_out(c, "%s%u:%u", i ? "," : "", uids[i], uids[j]);
		else
			imap_out(c, "%s%u", i ? "," : "", uids[i]);
		i = j + 1;
	}
}

/* Announces and drops the messages in view.gone (RFC 9051 7.5.1: each EXPUNGE renumbers
 * the ones after it, so they go from the highest number down). */
static void view_announce_gone(struct imap_session *s, struct imap_cmd *c)
{
	struct imap_view *v = &s->view;
	if (v->n_gone == 0)
		return;
	if (s->qresync) {
		imap_out_data(c, "* VANISHED ", 11);
		out_uid_set(c, v->gone, v->n_gone);
		imap_out_data(c, "\r\n", 2);
	} else {
		for (size_t k = v->n_gone; k-- > 0;) {
			uint32_t seq = imap_view_seq(s, v->gone[k]);
			if (seq != 0)
				imap_out_untagged(c, "%u EXPUNGE", seq);
		}
	}
	if (imap_view_writable(s) < 0)
		return; /* announced again at the next sync: better twice than wrong */
	size_t w = 0;
	for (size_t i = 0; i < v->n; i++)
		if (!gone_has(v, v->msgs[i].uid))
			v->msgs[w++] = v->msgs[i];
	v->n = w;
	free(v->gone);
	v->gone = NULL;
	v->n_gone = 0;
}

void imap_view_update(struct imap_session *s, const struct mstore_msg *msgs, size_t n)
{
	struct imap_view *v = &s->view;
	if (n == 0 || imap_view_writable(s) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		int found;
		size_t k = view_find(v, msgs[i].uid, &found);
		if (!found)
			continue;
		v->msgs[k].flags = msgs[i].flags;
		v->msgs[k].keywords = msgs[i].keywords;
		if (msgs[i].modseq > v->msgs[k].modseq)
			v->msgs[k].modseq = msgs[i].modseq;
	}
}

/* When the store no longer remembers expunges this old: compare with every message. */
static int view_diff_full(struct imap_session *s, uint32_t **changed, size_t *n_changed,
			  size_t *cap_changed, const char **error_r)
{
	struct imap_view *v = &s->view;
	struct mstore_msg *all = NULL;
	size_t n = 0;
	if (imap_view_writable(s) < 0) {
		*error_r = "out of memory";
		return MSTORE_IO;
	}
	int st = mstore_box_load(v->box, &all, &n, error_r);
	if (st != MSTORE_OK)
		return st;
	uint32_t *gone = NULL;
	size_t n_gone = 0;
	if (v->n > 0)
		gone = malloc(v->n * sizeof(*gone));
	size_t j = 0, old_n = v->n;
	uint32_t last = old_n > 0 ? v->msgs[old_n - 1].uid : 0;
	for (size_t i = 0; i < old_n; i++) {
		while (j < n && all[j].uid < v->msgs[i].uid)
			j++;
		if (j < n && all[j].uid == v->msgs[i].uid)
			view_update_msg(v, i, &all[j], changed, n_changed, cap_changed);
		else if (gone != NULL)
			gone[n_gone++] = v->msgs[i].uid;
	}
	for (size_t i = 0; i < n; i++)
		if (all[i].uid > last && view_append(v, &all[i]) < 0)
			break;
	if (n_gone > 0)
		gone_add(v, gone, n_gone);
	free(gone);
	free(all);
	return MSTORE_OK;
}

int imap_view_sync(struct imap_session *s, struct imap_cmd *c, int allow_expunge)
{
	struct imap_view *v = &s->view;
	const char *error = NULL;
	if (v->box == NULL)
		return MSTORE_OK;
	int poll = mstore_box_poll(v->box, &error);
	if (poll < 0) {
		imap_session_log(s, LOG_LEVEL_ERROR, "event=poll_failed error=\"%s\"", error ? error : "?");
		return MSTORE_IO;
	}
	int st;
	if (poll == 1 && (st = mstore_box_sync(v->box, &error)) != MSTORE_OK) {
		imap_session_log(s, LOG_LEVEL_ERROR, "event=sync_failed error=\"%s\"", error ? error : "?");
		return st;
	}
	const struct mstore_mailbox *info = mstore_box_info(v->box);
	size_t announced = v->n; /* what the client counts now */
	uint32_t *changed_uids = NULL;
	size_t n_changed_uids = 0, cap_changed_uids = 0;
	if (poll == 1 || info->highestmodseq != v->highestmodseq || info->uidnext != v->uidnext) {
		struct mstore_msg *ch = NULL;
		uint32_t *ex = NULL;
		size_t n_ch = 0, n_ex = 0;
		int complete = 1;
		uint64_t info_modseq = info->highestmodseq;
		uint32_t info_uidnext = info->uidnext;
		st = mstore_box_changes(v->box, v->highestmodseq, &ch, &n_ch, &ex, &n_ex, &complete,
					&error);
		if (st != MSTORE_OK) {
			imap_session_log(s, LOG_LEVEL_ERROR, "event=sync_failed error=\"%s\"",
					 error ? error : "?");
			return st;
		}
		uint64_t top = info_modseq > v->highestmodseq ? info_modseq : v->highestmodseq;
		if (!complete) {
			st = view_diff_full(s, &changed_uids, &n_changed_uids, &cap_changed_uids, &error);
			if (st != MSTORE_OK) {
				free(ch);
				free(ex);
				free(changed_uids);
				return st;
			}
		} else {
			if (n_ex > 0)
				gone_add(v, ex, n_ex);
			if (n_ch > 0 && imap_view_writable(s) < 0) {
				free(ch);
				free(ex);
				return MSTORE_IO;
			}
			for (size_t i = 0; i < n_ch; i++) {
				int found;
				size_t k = view_find(v, ch[i].uid, &found);
				if (found)
					view_update_msg(v, k, &ch[i], &changed_uids, &n_changed_uids,
							&cap_changed_uids);
				else if (k == v->n && !gone_has(v, ch[i].uid))
					view_append(v, &ch[i]); /* new: above every UID we have */
			}
		}
		for (size_t i = 0; i < n_ch; i++)
			if (ch[i].modseq > top)
				top = ch[i].modseq;
		v->highestmodseq = top;
		if (info_uidnext > v->uidnext)
			v->uidnext = info_uidnext;
		if (v->n > 0 && v->msgs[v->n - 1].uid >= v->uidnext)
			v->uidnext = v->msgs[v->n - 1].uid + 1;
		free(ch);
		free(ex);
	}
	size_t n_gone_before = v->n_gone;
	if (allow_expunge)
		view_announce_gone(s, c);
	size_t removed = n_gone_before - v->n_gone;
	if (v->n + removed > announced)
		imap_out_untagged(c, "%zu EXISTS", v->n);
	for (size_t i = 0; i < n_changed_uids; i++) {
		int found;
		size_t k = view_find(v, changed_uids[i], &found);
		if (!found || gone_has(v, changed_uids[i]))
			continue;
		const struct mstore_msg *m = &v->msgs[k];
		imap_out(c, "* %zu FETCH (", k + 1);
		if (s->qresync)
			imap_out(c, "UID %u ", m->uid);
		imap_out_data(c, "FLAGS (", 7);
		imap_view_flags(s, c, m);
		imap_out_data(c, ")", 1);
		if (s->condstore)
			imap_out(c, " MODSEQ (%llu)", (unsigned long long)m->modseq);
		imap_out_data(c, ")\r\n", 3);
	}
	free(changed_uids);
	return MSTORE_OK;
}
