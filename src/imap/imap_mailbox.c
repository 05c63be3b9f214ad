/* SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS APPEND
 * CHECK CLOSE UNSELECT (RFC 9051 6.3, 6.4; LIST-EXTENDED 5258, LIST-STATUS 5819,
 * SPECIAL-USE 6154, CONDSTORE/QRESYNC 7162, UIDPLUS 4315, MULTIAPPEND 3502).
 *
 * Every handler here but CHECK runs on the pool (IMAP_CMD_BLOCKING): it may call the
 * store, never the connection.  Names are the store's UTF-8 names; imap_mailbox_arg()
 * and imap_out_mailbox() convert at the edge (mUTF-7 for clients without UTF8=ACCEPT). */
#include "imap/imap_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int arg_is_atom(const struct imap_arg *a, const char *word)
{
	return a->type == IMAP_ARG_ATOM && strcasecmp(a->s, word) == 0;
}

static int arg_number(const struct imap_arg *a, uint64_t max, uint64_t *v_r)
{
	if (a->type != IMAP_ARG_ATOM || a->len == 0 || a->len > 20)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < a->len; i++) {
		if (a->s[i] < '0' || a->s[i] > '9')
			return -1;
		uint64_t d = (uint64_t)(a->s[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*v_r = v;
	return 0;
}

/* A mailbox name argument; on failure the command is answered. */
static int mailbox_arg(struct imap_session *s, struct imap_cmd *c, size_t i, char out[MSTORE_NAME_MAX])
{
	if (i >= c->parsed.n_args || imap_mailbox_arg(s, &c->parsed.args[i], out) < 0) {
		imap_cmd_bad(c, "Invalid mailbox name");
		return -1;
	}
	return 0;
}

static void strip_trailing_delim(char *name)
{
	size_t n = strlen(name);
	while (n > 1 && name[n - 1] == '/')
		name[--n] = '\0';
}

static const struct {
	unsigned bit;
	const char *attr;
} specials[] = {
	{ MSTORE_SPECIAL_SENT, "\\Sent" },       { MSTORE_SPECIAL_DRAFTS, "\\Drafts" },
	{ MSTORE_SPECIAL_TRASH, "\\Trash" },     { MSTORE_SPECIAL_JUNK, "\\Junk" },
	{ MSTORE_SPECIAL_ARCHIVE, "\\Archive" },
};

/* ---- SELECT / EXAMINE ---------------------------------------------------------------- */

static void out_flag_list(struct imap_session *s, struct imap_cmd *c, int permanent)
{
	size_t nk = 0;
	const char *const *kw = mstore_box_keywords(s->view.box, &nk);
	imap_out(c, "(\\Answered \\Flagged \\Deleted \\Seen \\Draft");
	for (size_t i = 0; i < nk; i++)
		imap_out(c, " %s", kw[i]);
	if (permanent && nk < MSTORE_KEYWORDS_MAX)
		imap_out(c, " \\*");
	imap_out(c, ")");
}

/* Writes the UIDs of ranges (sorted, merged) that are not in the view, as a UID set:
 * the messages a QRESYNC client knows of and that are gone (RFC 7162 3.2.5.2, when the
 * store no longer remembers the expunges). */
static void out_missing(struct imap_session *s, struct imap_cmd *c, const struct imap_range *r,
			size_t nr, int *first)
{
	const struct imap_view *v = &s->view;
	size_t j = 0;
	for (size_t i = 0; i < nr; i++) {
		uint64_t lo = r[i].lo ? r[i].lo : 1, hi = r[i].hi;
		if (hi >= v->uidnext)
			hi = v->uidnext ? v->uidnext - 1 : 0;
		while (lo <= hi) {
			while (j < v->n && v->msgs[j].uid < lo)
				j++;
			uint64_t gap_end = j < v->n && v->msgs[j].uid <= hi ? v->msgs[j].uid - 1 : hi;
			if (gap_end >= lo) {
				if (gap_end > lo)
					imap_out(c, "%s%llu:%llu", *first ? "" : ",", (unsigned long long)lo,
						 (unsigned long long)gap_end);
				else
					imap_out(c, "%s%llu", *first ? "" : ",", (unsigned long long)lo);
				*first = 0;
			}
			lo = gap_end + 2; /* past the message that ended the gap */
			if (gap_end >= hi)
				break;
		}
	}
}

static void select_list(struct imap_session *s, struct imap_cmd *c, const char *name);

/* RFC 7162 3.2.5: what changed since the client's last session. */
static int select_qresync(struct imap_session *s, struct imap_cmd *c, uint64_t modseq,
			  const struct imap_arg *known)
{
	struct imap_view *v = &s->view;
	struct mstore_msg *ch = NULL;
	uint32_t *ex = NULL;
	size_t n_ch = 0, n_ex = 0;
	int complete = 1;
	const char *error = NULL;
	struct imap_range *kr = NULL;
	size_t nkr = 0;
	if (known != NULL && imap_seqset_parse(known->s, known->len,
					       v->uidnext ? v->uidnext - 1 : 0, &kr, &nkr) < 0)
		return -1;
	int st = mstore_box_changes(v->box, modseq, &ch, &n_ch, &ex, &n_ex, &complete, &error);
	if (st != MSTORE_OK) {
		free(kr);
		imap_session_log(s, LOG_LEVEL_ERROR, "event=qresync_failed error=\"%s\"", error ? error : "?");
		return 0; /* the client does a full resync after a missing VANISHED; not fatal */
	}
	if (complete) {
		int first = 1;
		for (size_t i = 0; i < n_ex; i++) {
			if (kr != NULL && !imap_seqset_contains(kr, nkr, ex[i]))
				continue;
			if (first)
				imap_out(c, "* VANISHED (EARLIER) ");
			size_t j = i;
			while (j + 1 < n_ex && ex[j + 1] == ex[j] + 1 &&
			       (kr == NULL || imap_seqset_contains(kr, nkr, ex[j + 1])))
				j++;
			if (j > i)
				imap_out(c, "%s%u:%u", first ? "" : ",", ex[i], ex[j]);
			else
				imap_out(c, "%s%u", first ? "" : ",", ex[i]);
			first = 0;
			i = j;
		}
		if (!first)
			imap_out(c, "\r\n");
	} else {
		struct imap_range all = { 1, v->uidnext ? v->uidnext - 1 : 0 };
		int first = 1;
		if (all.hi >= 1 || kr != NULL) {
			size_t mark = c->out.len;
			imap_out(c, "* VANISHED (EARLIER) ");
			size_t after_prefix = c->out.len;
			out_missing(s, c, kr != NULL ? kr : &all, kr != NULL ? nkr : 1, &first);
			if (c->out.len == after_prefix) {
				c->out.len = mark; /* nothing vanished */
				if (c->out.data)
					c->out.data[mark] = '\0';
			} else {
				imap_out(c, "\r\n");
			}
		}
	}
	for (size_t i = 0; i < n_ch; i++) {
		uint32_t seq = imap_view_seq(s, ch[i].uid);
		if (seq == 0)
			continue;
		imap_out(c, "* %u FETCH (UID %u FLAGS (", seq, ch[i].uid);
		imap_view_flags(s, c, &ch[i]);
		imap_out(c, ") MODSEQ (%llu))\r\n", (unsigned long long)ch[i].modseq);
	}
	free(ch);
	free(ex);
	free(kr);
	return 0;
}

enum imap_cmd_result imap_cmd_select(struct imap_session *s, struct imap_cmd *c)
{
	int readonly = strcmp(c->parsed.name, "EXAMINE") == 0;
	char name[MSTORE_NAME_MAX];
	int condstore = 0, qresync = 0;
	uint64_t q_validity = 0, q_modseq = 0;
	const struct imap_arg *q_known = NULL;
	if (c->parsed.n_args < 1 || c->parsed.n_args > 2) {
		imap_cmd_bad(c, "Syntax: %s mailbox [(parameters)]", c->parsed.name);
		return IMAP_CMD_DONE;
	}
	if (mailbox_arg(s, c, 0, name) < 0)
		return IMAP_CMD_DONE;
	if (c->parsed.n_args == 2) {
		const struct imap_arg *p = &c->parsed.args[1];
		if (p->type != IMAP_ARG_LIST) {
			imap_cmd_bad(c, "Syntax: %s mailbox [(parameters)]", c->parsed.name);
			return IMAP_CMD_DONE;
		}
		for (size_t i = 0; i < p->n; i++) {
			if (arg_is_atom(&p->list[i], "CONDSTORE")) {
				condstore = 1;
			} else if (arg_is_atom(&p->list[i], "QRESYNC") && i + 1 < p->n &&
				   p->list[i + 1].type == IMAP_ARG_LIST) {
				const struct imap_arg *q = &p->list[++i];
				if (!s->qresync) {
					imap_cmd_bad(c, "QRESYNC is not enabled (ENABLE QRESYNC first)");
					return IMAP_CMD_DONE;
				}
				if (q->n < 2 || q->n > 4 || arg_number(&q->list[0], UINT32_MAX, &q_validity) < 0 ||
				    q_validity == 0 || arg_number(&q->list[1], INT64_MAX, &q_modseq) < 0 ||
				    (q->n >= 3 && q->list[2].type != IMAP_ARG_ATOM && q->list[2].type != IMAP_ARG_LIST)) {
					imap_cmd_bad(c, "Syntax: QRESYNC (uidvalidity modseq [known-uids [seq-match]])");
					return IMAP_CMD_DONE;
				}
				if (q->n >= 3 && q->list[2].type == IMAP_ARG_ATOM)
					q_known = &q->list[2];
				qresync = 1;
			} else {
				imap_cmd_bad(c, "Unknown SELECT parameter");
				return IMAP_CMD_DONE;
			}
		}
	}
	if (s->state == IMAP_ST_SELECTED) {
		/* RFC 9051 6.3.2: the old mailbox is closed without expunging. */
		imap_view_close(s);
		imap_session_set_state(s, IMAP_ST_AUTH);
		imap_out_untagged(c, "OK [CLOSED] Previous mailbox closed");
	}
	const char *error = NULL;
	int st = imap_view_open(s, name, readonly, &error);
	if (st == MSTORE_NOT_FOUND) {
		imap_cmd_no(c, "[NONEXISTENT] Mailbox does not exist");
		return IMAP_CMD_DONE;
	}
	if (st == MSTORE_BAD_NAME) {
		imap_cmd_no(c, "[CANNOT] Mailbox cannot be selected");
		return IMAP_CMD_DONE;
	}
	if (st != MSTORE_OK) {
		imap_cmd_store_error(s, c, st, error, 0);
		return IMAP_CMD_DONE;
	}
	if (condstore || qresync)
		s->condstore = 1;
	struct imap_view *v = &s->view;
	imap_out(c, "* FLAGS ");
	out_flag_list(s, c, 0);
	imap_out(c, "\r\n* OK [PERMANENTFLAGS ");
	if (readonly)
		imap_out(c, "()");
	else
		out_flag_list(s, c, 1);
	imap_out(c, "] Flags permitted\r\n");
	imap_out_untagged(c, "%zu EXISTS", v->n);
	if (!s->imap4rev2) {
		/* IMAP4rev1 clients expect RECENT and UNSEEN (RFC 3501 6.3.1). */
		imap_out_untagged(c, "0 RECENT");
		for (size_t i = 0; i < v->n; i++) {
			if (!(v->msgs[i].flags & MSTORE_F_SEEN)) {
				imap_out_untagged(c, "OK [UNSEEN %zu] First unseen message", i + 1);
				break;
			}
		}
	}
	imap_out_untagged(c, "OK [UIDVALIDITY %u] UIDs valid", v->uidvalidity);
	imap_out_untagged(c, "OK [UIDNEXT %u] Predicted next UID", v->uidnext);
	imap_out_untagged(c, "OK [HIGHESTMODSEQ %llu] Highest", (unsigned long long)v->highestmodseq);
	if (s->imap4rev2)
		select_list(s, c, v->name);
	if (qresync && q_validity == v->uidvalidity) {
		if (select_qresync(s, c, q_modseq, q_known) < 0) {
			imap_view_close(s);
			imap_cmd_bad(c, "Invalid known-uids in QRESYNC");
			return IMAP_CMD_DONE;
		}
	}
	imap_session_set_state(s, IMAP_ST_SELECTED);
	imap_cmd_ok(c, "[%s] %s completed", readonly ? "READ-ONLY" : "READ-WRITE", c->parsed.name);
	return IMAP_CMD_DONE;
}

/* ---- CREATE DELETE RENAME SUBSCRIBE ------------------------------------------------------ */

enum imap_cmd_result imap_cmd_create(struct imap_session *s, struct imap_cmd *c)
{
	char name[MSTORE_NAME_MAX];
	unsigned special = 0;
	if (c->parsed.n_args < 1 || c->parsed.n_args > 2) {
		imap_cmd_bad(c, "Syntax: CREATE mailbox [(USE (attributes))]");
		return IMAP_CMD_DONE;
	}
	if (mailbox_arg(s, c, 0, name) < 0)
		return IMAP_CMD_DONE;
	if (c->parsed.n_args == 2) {
		/* RFC 6154 3: CREATE-SPECIAL-USE. */
		const struct imap_arg *p = &c->parsed.args[1];
		if (p->type != IMAP_ARG_LIST || p->n != 2 || !arg_is_atom(&p->list[0], "USE") ||
		    p->list[1].type != IMAP_ARG_LIST) {
			imap_cmd_bad(c, "Syntax: CREATE mailbox [(USE (attributes))]");
			return IMAP_CMD_DONE;
		}
		const struct imap_arg *u = &p->list[1];
		for (size_t i = 0; i < u->n; i++) {
			size_t k;
			for (k = 0; k < sizeof(specials) / sizeof(specials[0]); k++)
				if (arg_is_atom(&u->list[i], specials[k].attr))
					break;
			if (k == sizeof(specials) / sizeof(specials[0])) {
				imap_cmd_no(c, "[USEATTR] Unsupported special-use attribute");
				return IMAP_CMD_DONE;
			}
			special |= specials[k].bit;
		}
	}
	strip_trailing_delim(name);
	if (strcmp(name, "INBOX") == 0) {
		imap_cmd_no(c, "[ALREADYEXISTS] INBOX always exists");
		return IMAP_CMD_DONE;
	}
	const char *error = NULL;
	int st = mstore_create(s->store, name, special, &error);
	if (st != MSTORE_OK)
		imap_cmd_store_error(s, c, st, error, 0);
	else
		imap_cmd_ok(c, "CREATE completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_delete(struct imap_session *s, struct imap_cmd *c)
{
	char name[MSTORE_NAME_MAX];
	if (c->parsed.n_args != 1) {
		imap_cmd_bad(c, "Syntax: DELETE mailbox");
		return IMAP_CMD_DONE;
	}
	if (mailbox_arg(s, c, 0, name) < 0)
		return IMAP_CMD_DONE;
	strip_trailing_delim(name);
	if (strcmp(name, "INBOX") == 0) {
		imap_cmd_no(c, "[CANNOT] INBOX cannot be deleted");
		return IMAP_CMD_DONE;
	}
	if (s->state == IMAP_ST_SELECTED && strcmp(s->view.name, name) == 0) {
		/* Deleting the selected mailbox: it goes out of view first. */
		imap_view_close(s);
		imap_session_set_state(s, IMAP_ST_AUTH);
		imap_out_untagged(c, "OK [CLOSED] Mailbox closed");
	}
	const char *error = NULL;
	int st = mstore_delete(s->store, name, &error);
	if (st != MSTORE_OK)
		imap_cmd_store_error(s, c, st, error, 0);
	else
		imap_cmd_ok(c, "DELETE completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_rename(struct imap_session *s, struct imap_cmd *c)
{
	char from[MSTORE_NAME_MAX], to[MSTORE_NAME_MAX];
	if (c->parsed.n_args != 2) {
		imap_cmd_bad(c, "Syntax: RENAME from to");
		return IMAP_CMD_DONE;
	}
	if (mailbox_arg(s, c, 0, from) < 0 || mailbox_arg(s, c, 1, to) < 0)
		return IMAP_CMD_DONE;
	strip_trailing_delim(from);
	strip_trailing_delim(to);
	if (strcmp(to, "INBOX") == 0) {
		imap_cmd_no(c, "[ALREADYEXISTS] INBOX always exists");
		return IMAP_CMD_DONE;
	}
	const char *error = NULL;
	int st = mstore_rename(s->store, from, to, &error);
	if (st != MSTORE_OK)
		imap_cmd_store_error(s, c, st, error, 0);
	else
		imap_cmd_ok(c, "RENAME completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_subscribe(struct imap_session *s, struct imap_cmd *c)
{
	int on = strcmp(c->parsed.name, "SUBSCRIBE") == 0;
	char name[MSTORE_NAME_MAX];
	if (c->parsed.n_args != 1) {
		imap_cmd_bad(c, "Syntax: %s mailbox", c->parsed.name);
		return IMAP_CMD_DONE;
	}
	if (mailbox_arg(s, c, 0, name) < 0)
		return IMAP_CMD_DONE;
	strip_trailing_delim(name);
	const char *error = NULL;
	int st = mstore_subscribe(s->store, name, on, &error);
	if (st == MSTORE_BAD_NAME) {
		imap_cmd_no(c, "[CANNOT] Invalid mailbox name");
		return IMAP_CMD_DONE;
	}
	if (st != MSTORE_OK && !(st == MSTORE_NOT_FOUND && !on)) {
		imap_cmd_store_error(s, c, st, error, 0);
		return IMAP_CMD_DONE;
	}
	imap_cmd_ok(c, "%s completed", c->parsed.name);
	return IMAP_CMD_DONE;
}

/* ---- STATUS --------------------------------------------------------------------------- */

enum {
	ST_MESSAGES = 1 << 0,
	ST_UIDNEXT = 1 << 1,
	ST_UIDVALIDITY = 1 << 2,
	ST_UNSEEN = 1 << 3,
	ST_DELETED = 1 << 4,
	ST_SIZE = 1 << 5,
	ST_RECENT = 1 << 6,
	ST_HIGHESTMODSEQ = 1 << 7,
};

static const struct {
	const char *name;
	unsigned bit;
} status_items[] = {
	{ "MESSAGES", ST_MESSAGES }, { "UIDNEXT", ST_UIDNEXT }, { "UIDVALIDITY", ST_UIDVALIDITY },
	{ "UNSEEN", ST_UNSEEN },     { "DELETED", ST_DELETED }, { "SIZE", ST_SIZE },
	{ "RECENT", ST_RECENT },     { "HIGHESTMODSEQ", ST_HIGHESTMODSEQ },
};

/* The status item list: 0 and *items_r, or -1 (unknown item). */
static int status_items_parse(const struct imap_arg *l, unsigned *items_r)
{
	*items_r = 0;
	if (l->type != IMAP_ARG_LIST || l->n == 0)
		return -1;
	for (size_t i = 0; i < l->n; i++) {
		size_t k;
		for (k = 0; k < sizeof(status_items) / sizeof(status_items[0]); k++)
			if (arg_is_atom(&l->list[i], status_items[k].name))
				break;
		if (k == sizeof(status_items) / sizeof(status_items[0]))
			return -1;
		*items_r |= status_items[k].bit;
	}
	return 0;
}

static void status_out(struct imap_session *s, struct imap_cmd *c, const char *name,
		       const struct mstore_mailbox *mb, unsigned items)
{
	imap_out(c, "* STATUS ");
	imap_out_mailbox(s, c, name);
	imap_out(c, " (");
	const char *sp = "";
	if (items & ST_MESSAGES) {
		imap_out(c, "%sMESSAGES %u", sp, mb->messages);
		sp = " ";
	}
	if (items & ST_UIDNEXT) {
		imap_out(c, "%sUIDNEXT %u", sp, mb->uidnext);
		sp = " ";
	}
	if (items & ST_UIDVALIDITY) {
		imap_out(c, "%sUIDVALIDITY %u", sp, mb->uidvalidity);
		sp = " ";
	}
	if (items & ST_UNSEEN) {
		imap_out(c, "%sUNSEEN %u", sp, mb->unseen);
		sp = " ";
	}
	if (items & ST_DELETED) {
		imap_out(c, "%sDELETED %u", sp, mb->deleted);
		sp = " ";
	}
	if (items & ST_SIZE) {
		imap_out(c, "%sSIZE %llu", sp, (unsigned long long)mb->size);
		sp = " ";
	}
	if (items & ST_RECENT) {
		imap_out(c, "%sRECENT 0", sp);
		sp = " ";
	}
	if (items & ST_HIGHESTMODSEQ)
		imap_out(c, "%sHIGHESTMODSEQ %llu", sp, (unsigned long long)mb->highestmodseq);
	imap_out(c, ")\r\n");
}

enum imap_cmd_result imap_cmd_status(struct imap_session *s, struct imap_cmd *c)
{
	char name[MSTORE_NAME_MAX];
	unsigned items;
	if (c->parsed.n_args != 2) {
		imap_cmd_bad(c, "Syntax: STATUS mailbox (items)");
		return IMAP_CMD_DONE;
	}
	if (mailbox_arg(s, c, 0, name) < 0)
		return IMAP_CMD_DONE;
	if (status_items_parse(&c->parsed.args[1], &items) < 0) {
		imap_cmd_bad(c, "Unknown or missing STATUS items");
		return IMAP_CMD_DONE;
	}
	if (items & ST_HIGHESTMODSEQ)
		s->condstore = 1; /* RFC 7162 3.1: a CONDSTORE enabling command */
	struct mstore_mailbox mb;
	const char *error = NULL;
	int st = mstore_status(s->store, name, &mb, &error);
	if (st == MSTORE_NOT_FOUND) {
		imap_cmd_no(c, "[NONEXISTENT] Mailbox does not exist");
		return IMAP_CMD_DONE;
	}
	if (st == MSTORE_BAD_NAME) {
		imap_cmd_no(c, "[CANNOT] Mailbox cannot be selected");
		return IMAP_CMD_DONE;
	}
	if (st != MSTORE_OK) {
		imap_cmd_store_error(s, c, st, error, 0);
		return IMAP_CMD_DONE;
	}
	status_out(s, c, name, &mb, items);
	imap_cmd_ok(c, "STATUS completed");
	return IMAP_CMD_DONE;
}

/* ---- LIST and LSUB -------------------------------------------------------------------- */

/* RFC 9051 6.3.9: "*" matches anything, "%" anything but the delimiter. */
static int pattern_match(const char *p, const char *n)
{
	while (*p) {
		if (*p == '*' || *p == '%') {
			int star = *p == '*';
			while (*p == '*' || *p == '%') {
				if (*p == '*')
					star = 1;
				p++;
			}
			if (*p == '\0')
				return star || strchr(n, '/') == NULL;
			for (const char *k = n;; k++) {
				if (pattern_match(p, k))
					return 1;
				if (*k == '\0' || (!star && *k == '/'))
					return 0;
			}
		}
		if (*p != *n)
			return 0;
		p++;
		n++;
	}
	return *n == '\0';
}

/* INBOX is case-insensitive: so is a pattern's leading "inbox". */
static void pattern_fix_inbox(char *p)
{
	if (strncasecmp(p, "INBOX", 5) == 0 && (p[5] == '\0' || p[5] == '/'))
		memcpy(p, "INBOX", 5);
}

struct list_opts {
	int sel_subscribed, sel_remote, sel_recursive, sel_special;
	int ret_subscribed, ret_children, ret_special;
	unsigned ret_status;           /* STATUS items; 0: none */
	int lsub;
	char **patterns;
	size_t n_patterns;
};

struct list_entry {
	char name[MSTORE_NAME_MAX];
	const struct mstore_mailbox *box; /* NULL: does not exist */
	int subscribed;
	int child_subscribed;          /* a descendant is subscribed (CHILDINFO) */
};

static int list_matches(const struct list_opts *o, const char *name)
{
	for (size_t i = 0; i < o->n_patterns; i++)
		if (pattern_match(o->patterns[i], name))
			return 1;
	return 0;
}

static int name_in(char **names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return 1;
	return 0;
}

static const struct mstore_mailbox *box_find(const struct mstore_mailbox *boxes, size_t n,
					     const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(boxes[i].name, name) == 0)
			return &boxes[i];
	return NULL;
}

static int has_subscribed_child(char **subs, size_t n, const char *name)
{
	size_t l = strlen(name);
	for (size_t i = 0; i < n; i++)
		if (strncmp(subs[i], name, l) == 0 && subs[i][l] == '/')
			return 1;
	return 0;
}

static void list_out_entry(struct imap_session *s, struct imap_cmd *c, const struct list_opts *o,
			   const struct list_entry *e)
{
	const struct mstore_mailbox *b = e->box;
	imap_out(c, "* %s (", o->lsub ? "LSUB" : "LIST");
	const char *sp = "";
#define ATTR(x)                              \
	do {                                 \
		imap_out(c, "%s%s", sp, x); \
		sp = " ";                    \
	} while (0)
	if (b == NULL) {
		if (o->lsub)
			ATTR("\\Noselect");
		else
			ATTR("\\NonExistent");
	} else {
		if (b->noselect)
			ATTR("\\Noselect");
		if (!o->lsub)
			ATTR(b->has_children ? "\\HasChildren" : "\\HasNoChildren");
		for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++)
			if (!o->lsub && (b->special & specials[k].bit))
				ATTR(specials[k].attr);
	}
	if (!o->lsub && e->subscribed && (o->sel_subscribed || o->ret_subscribed))
		ATTR("\\Subscribed");
#undef ATTR
	imap_out(c, ") \"/\" ");
	imap_out_mailbox(s, c, e->name);
	if (!o->lsub && o->sel_recursive && e->child_subscribed)
		imap_out(c, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
	imap_out(c, "\r\n");
	if (o->ret_status && b != NULL && !b->noselect) {
		struct mstore_mailbox mb;
		const char *error = NULL;
		if (mstore_status(s->store, e->name, &mb, &error) == MSTORE_OK)
			status_out(s, c, e->name, &mb, o->ret_status);
	}
}

/* RFC 9051 6.3.2: SELECT answers an IMAP4rev2 client with the mailbox's LIST line. */
static void select_list(struct imap_session *s, struct imap_cmd *c, const char *name)
{
	struct mstore_mailbox *boxes = NULL;
	size_t n = 0;
	const char *error = NULL;
	if (mstore_list(s->store, &boxes, &n, &error) != MSTORE_OK)
		return;
	const struct mstore_mailbox *b = box_find(boxes, n, name);
	if (b != NULL) {
		struct list_opts o;
		struct list_entry e;
		memset(&o, 0, sizeof(o));
		memset(&e, 0, sizeof(e));
		snprintf(e.name, sizeof(e.name), "%s", name);
		e.box = b;
		list_out_entry(s, c, &o, &e);
	}
	free(boxes);
}

static void add_entry(struct list_entry **v, size_t *n, size_t *cap, const char *name,
		      const struct mstore_mailbox *box, int subscribed, int child_subscribed)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*v)[i].name, name) == 0)
			return;
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 32;
		struct list_entry *p = realloc(*v, nc * sizeof(*p));
		if (p == NULL)
			return;
		*v = p;
		*cap = nc;
	}
	struct list_entry *e = &(*v)[(*n)++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->box = box;
	e->subscribed = subscribed;
	e->child_subscribed = child_subscribed;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct list_entry *x = a, *y = b;
	int xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;
	if (xi != yi)
		return yi - xi;
	return strcmp(x->name, y->name);
}

static void list_run(struct imap_session *s, struct imap_cmd *c, struct list_opts *o)
{
	struct mstore_mailbox *boxes = NULL;
	size_t n_boxes = 0;
	char **subs = NULL;
	size_t n_subs = 0;
	const char *error = NULL;
	int st = mstore_list(s->store, &boxes, &n_boxes, &error);
	int need_subs = o->lsub || o->sel_subscribed || o->ret_subscribed;
	if (st == MSTORE_OK && need_subs)
		st = mstore_subscriptions(s->store, &subs, &n_subs, &error);
	if (st != MSTORE_OK) {
		free(boxes);
		imap_cmd_store_error(s, c, st, error, 0);
		return;
	}
	struct list_entry *v = NULL;
	size_t n = 0, cap = 0;
	if (o->lsub) {
		for (size_t i = 0; i < n_subs; i++) {
			if (list_matches(o, subs[i])) {
				const struct mstore_mailbox *b = box_find(boxes, n_boxes, subs[i]);
				add_entry(&v, &n, &cap, subs[i], b, 1, 0);
				continue;
			}
			/* RFC 3501 6.3.9: with "%", a parent of a subscribed name is listed as
			 * \Noselect when it is not subscribed itself. */
			char parent[MSTORE_NAME_MAX];
			snprintf(parent, sizeof(parent), "%s", subs[i]);
			char *slash;
			while ((slash = strrchr(parent, '/')) != NULL) {
				*slash = '\0';
				if (list_matches(o, parent) && !name_in(subs, n_subs, parent)) {
					add_entry(&v, &n, &cap, parent, NULL, 0, 1);
					break;
				}
			}
		}
	} else if (o->sel_subscribed) {
		for (size_t i = 0; i < n_subs; i++) {
			const struct mstore_mailbox *b = box_find(boxes, n_boxes, subs[i]);
			if (o->sel_special && (b == NULL || b->special == 0))
				continue;
			if (list_matches(o, subs[i]))
				add_entry(&v, &n, &cap, subs[i], b, 1,
					  has_subscribed_child(subs, n_subs, subs[i]));
			if (!o->sel_recursive)
				continue;
			/* RFC 5258 3.5: parents that match, with CHILDINFO. */
			char parent[MSTORE_NAME_MAX];
			snprintf(parent, sizeof(parent), "%s", subs[i]);
			char *slash;
			while ((slash = strrchr(parent, '/')) != NULL) {
				*slash = '\0';
				if (list_matches(o, parent) && !name_in(subs, n_subs, parent))
					add_entry(&v, &n, &cap, parent, box_find(boxes, n_boxes, parent), 0, 1);
			}
		}
	} else {
		for (size_t i = 0; i < n_boxes; i++) {
			if (o->sel_special && boxes[i].special == 0)
				continue;
			if (!list_matches(o, boxes[i].name))
				continue;
			int sub = need_subs && name_in(subs, n_subs, boxes[i].name);
			add_entry(&v, &n, &cap, boxes[i].name, &boxes[i], sub, 0);
		}
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), entry_cmp);
	for (size_t i = 0; i < n; i++)
		list_out_entry(s, c, o, &v[i]);
	free(v);
	for (size_t i = 0; i < n_subs; i++)
		free(subs[i]);
	free(subs);
	free(boxes);
	imap_cmd_ok(c, "%s completed", o->lsub ? "LSUB" : "LIST");
}

static void patterns_free(struct list_opts *o)
{
	for (size_t i = 0; i < o->n_patterns; i++)
		free(o->patterns[i]);
	free(o->patterns);
	o->patterns = NULL;
	o->n_patterns = 0;
}

/* ref + pattern, decoded like a mailbox name.  0 or -1. */
static int pattern_add(struct imap_session *s, struct list_opts *o, const char *ref,
		       const struct imap_arg *pat)
{
	char dec[MSTORE_NAME_MAX];
	if (!imap_arg_is_astring(pat))
		return -1;
	struct imap_arg tmp = *pat;
	if (imap_mailbox_arg(s, &tmp, dec) < 0)
		return -1;
	size_t need = strlen(ref) + strlen(dec) + 1;
	char *full = malloc(need);
	if (full == NULL)
		return -1;
	snprintf(full, need, "%s%s", ref, dec);
	pattern_fix_inbox(full);
	char **p = realloc(o->patterns, (o->n_patterns + 1) * sizeof(*p));
	if (p == NULL) {
		free(full);
		return -1;
	}
	o->patterns = p;
	o->patterns[o->n_patterns++] = full;
	return 0;
}

enum imap_cmd_result imap_cmd_list(struct imap_session *s, struct imap_cmd *c)
{
	struct list_opts o;
	memset(&o, 0, sizeof(o));
	const struct imap_arg *a = c->parsed.args;
	size_t n = c->parsed.n_args, i = 0;
	if (n >= 1 && a[0].type == IMAP_ARG_LIST) {
		for (size_t k = 0; k < a[0].n; k++) {
			const struct imap_arg *x = &a[0].list[k];
			if (arg_is_atom(x, "SUBSCRIBED"))
				o.sel_subscribed = 1;
			else if (arg_is_atom(x, "REMOTE"))
				o.sel_remote = 1;
			else if (arg_is_atom(x, "RECURSIVEMATCH"))
				o.sel_recursive = 1;
			else if (arg_is_atom(x, "SPECIAL-USE"))
				o.sel_special = 1;
			else {
				imap_cmd_bad(c, "Unknown LIST selection option");
				return IMAP_CMD_DONE;
			}
		}
		/* RFC 5258 3.1: RECURSIVEMATCH needs another option it modifies. */
		if (o.sel_recursive && !o.sel_subscribed && !o.sel_special) {
			imap_cmd_bad(c, "RECURSIVEMATCH needs SUBSCRIBED");
			return IMAP_CMD_DONE;
		}
		i = 1;
	}
	if (n < i + 2 || !imap_arg_is_astring(&a[i])) {
		imap_cmd_bad(c, "Syntax: LIST [(options)] reference pattern [RETURN (options)]");
		return IMAP_CMD_DONE;
	}
	char ref[MSTORE_NAME_MAX] = "";
	if (a[i].len > 0) {
		struct imap_arg tmp = a[i];
		if (imap_mailbox_arg(s, &tmp, ref) < 0) {
			imap_cmd_bad(c, "Invalid reference");
			return IMAP_CMD_DONE;
		}
	}
	const struct imap_arg *pats = &a[i + 1];
	size_t after = i + 2;
	if (after < n) {
		if (after + 2 != n || !arg_is_atom(&a[after], "RETURN") || a[after + 1].type != IMAP_ARG_LIST) {
			imap_cmd_bad(c, "Syntax: LIST [(options)] reference pattern [RETURN (options)]");
			return IMAP_CMD_DONE;
		}
		const struct imap_arg *r = &a[after + 1];
		for (size_t k = 0; k < r->n; k++) {
			const struct imap_arg *x = &r->list[k];
			if (arg_is_atom(x, "SUBSCRIBED")) {
				o.ret_subscribed = 1;
			} else if (arg_is_atom(x, "CHILDREN")) {
				o.ret_children = 1;
			} else if (arg_is_atom(x, "SPECIAL-USE")) {
				o.ret_special = 1;
			} else if (arg_is_atom(x, "STATUS") && k + 1 < r->n &&
				   status_items_parse(&r->list[k + 1], &o.ret_status) == 0) {
				k++;
				if (o.ret_status & ST_HIGHESTMODSEQ)
					s->condstore = 1;
			} else {
				imap_cmd_bad(c, "Unknown LIST return option");
				return IMAP_CMD_DONE;
			}
		}
	}
	if (pats->type == IMAP_ARG_LIST) {
		for (size_t k = 0; k < pats->n; k++) {
			if (pattern_add(s, &o, ref, &pats->list[k]) < 0) {
				patterns_free(&o);
				imap_cmd_bad(c, "Invalid mailbox pattern");
				return IMAP_CMD_DONE;
			}
		}
	} else if (imap_arg_is_astring(pats)) {
		if (pats->len == 0 && !o.sel_subscribed && !o.sel_special && !o.ret_status) {
			/* RFC 9051 6.3.9: the delimiter and the root of the reference. */
			imap_out_untagged(c, "LIST (\\Noselect) \"/\" \"\"");
			imap_cmd_ok(c, "LIST completed");
			return IMAP_CMD_DONE;
		}
		if (pattern_add(s, &o, ref, pats) < 0) {
			patterns_free(&o);
			imap_cmd_bad(c, "Invalid mailbox pattern");
			return IMAP_CMD_DONE;
		}
	} else {
		imap_cmd_bad(c, "Invalid mailbox pattern");
		return IMAP_CMD_DONE;
	}
	list_run(s, c, &o);
	patterns_free(&o);
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_lsub(struct imap_session *s, struct imap_cmd *c)
{
	struct list_opts o;
	memset(&o, 0, sizeof(o));
	o.lsub = 1;
	const struct imap_arg *a = c->parsed.args;
	if (c->parsed.n_args != 2 || !imap_arg_is_astring(&a[0]) || !imap_arg_is_astring(&a[1])) {
		imap_cmd_bad(c, "Syntax: LSUB reference pattern");
		return IMAP_CMD_DONE;
	}
	char ref[MSTORE_NAME_MAX] = "";
	if (a[0].len > 0) {
		struct imap_arg tmp = a[0];
		if (imap_mailbox_arg(s, &tmp, ref) < 0) {
			imap_cmd_bad(c, "Invalid reference");
			return IMAP_CMD_DONE;
		}
	}
	if (a[1].len == 0) {
		imap_out_untagged(c, "LSUB (\\Noselect) \"/\" \"\"");
		imap_cmd_ok(c, "LSUB completed");
		return IMAP_CMD_DONE;
	}
	if (pattern_add(s, &o, ref, &a[1]) < 0) {
		imap_cmd_bad(c, "Invalid mailbox pattern");
		return IMAP_CMD_DONE;
	}
	list_run(s, c, &o);
	patterns_free(&o);
	return IMAP_CMD_DONE;
}

/* ---- APPEND --------------------------------------------------------------------------- */

struct append_msg {
	const struct imap_arg *data;
	uint32_t flags;
	char keywords[MSTORE_KEYWORDS_MAX * MSTORE_KEYWORD_LEN];
	int64_t date;
	int tz;
};

#define APPEND_MAX_MESSAGES 1000

enum imap_cmd_result imap_cmd_append(struct imap_session *s, struct imap_cmd *c)
{
	const struct imap_arg *a = c->parsed.args;
	size_t n = c->parsed.n_args;
	char name[MSTORE_NAME_MAX];
	if (n < 2) {
		imap_cmd_bad(c, "Syntax: APPEND mailbox [(flags)] [date-time] literal");
		return IMAP_CMD_DONE;
	}
	if (mailbox_arg(s, c, 0, name) < 0)
		return IMAP_CMD_DONE;
	struct append_msg *msgs = NULL;
	size_t n_msgs = 0;
	size_t i = 1;
	while (i < n) {
		if (n_msgs == APPEND_MAX_MESSAGES) {
			free(msgs);
			imap_cmd_no(c, "[LIMIT] Too many messages in one APPEND");
			return IMAP_CMD_DONE;
		}
		struct append_msg *p = realloc(msgs, (n_msgs + 1) * sizeof(*p));
		if (p == NULL) {
			free(msgs);
			imap_cmd_no(c, "[UNAVAILABLE] Out of memory");
			return IMAP_CMD_DONE;
		}
		msgs = p;
		struct append_msg *m = &msgs[n_msgs];
		memset(m, 0, sizeof(*m));
		if (i < n && a[i].type == IMAP_ARG_LIST) {
			if (imap_flags_parse(&a[i], &m->flags, m->keywords, sizeof(m->keywords)) < 0) {
				free(msgs);
				imap_cmd_bad(c, "Invalid flag list");
				return IMAP_CMD_DONE;
			}
			i++;
		}
		if (i < n && a[i].type == IMAP_ARG_STRING) {
			if (imap_datetime_parse(a[i].s, a[i].len, &m->date, &m->tz) < 0) {
				free(msgs);
				imap_cmd_bad(c, "Invalid date-time");
				return IMAP_CMD_DONE;
			}
			i++;
		}
		if (i >= n || (a[i].type != IMAP_ARG_LITERAL && a[i].type != IMAP_ARG_LITERAL8)) {
			free(msgs);
			imap_cmd_bad(c, "Syntax: APPEND mailbox [(flags)] [date-time] literal");
			return IMAP_CMD_DONE;
		}
		m->data = &a[i++];
		n_msgs++;
	}
	long long max = s->srv->set.max_message_size;
	for (size_t k = 0; k < n_msgs; k++) {
		if (max > 0 && (long long)msgs[k].data->len > max) {
			free(msgs);
			imap_cmd_no(c, "[TOOBIG] Message too big (limit %lld)", max);
			return IMAP_CMD_DONE;
		}
		if (msgs[k].data->len == 0) {
			free(msgs);
			imap_cmd_no(c, "Empty message");
			return IMAP_CMD_DONE;
		}
	}
	/* All or none (RFC 3502): one store call for every message. */
	struct mstore_append_msg *am = calloc(n_msgs, sizeof(*am));
	uint32_t *got = calloc(n_msgs, sizeof(*got));
	if (am == NULL || got == NULL) {
		free(am);
		free(got);
		free(msgs);
		imap_cmd_no(c, "[UNAVAILABLE] Out of memory");
		return IMAP_CMD_DONE;
	}
	for (size_t k = 0; k < n_msgs; k++) {
		am[k].data = msgs[k].data->s;
		am[k].len = msgs[k].data->len;
		am[k].flags = msgs[k].flags;
		am[k].keywords = msgs[k].keywords[0] ? msgs[k].keywords : NULL;
		am[k].internaldate = msgs[k].date;
		am[k].tz = msgs[k].tz;
	}
	const char *error = NULL;
	uint32_t validity = 0;
	int st = mstore_append_many(s->store, name, am, n_msgs, &validity, got, &error);
	free(am);
	free(msgs);
	if (st != MSTORE_OK) {
		free(got);
		if (st == MSTORE_NOT_FOUND)
			imap_cmd_no(c, "[TRYCREATE] Mailbox does not exist");
		else if (st == MSTORE_BAD_NAME)
			imap_cmd_no(c, "[CANNOT] Cannot append to this mailbox");
		else
			imap_cmd_store_error(s, c, st, error, 1);
		return IMAP_CMD_DONE;
	}
	/* APPENDUID's set: consecutive UIDs as ranges (RFC 4315 3). */
	struct buf uids;
	buf_init(&uids, 0);
	uint32_t first_uid = got[0], last_uid = got[0];
	for (size_t k = 1; k < n_msgs; k++) {
		if (got[k] == last_uid + 1) {
			last_uid = got[k];
			continue;
		}
		if (first_uid == last_uid)
			buf_printf(&uids, "%s%u", uids.len ? "," : "", first_uid);
		else
			buf_printf(&uids, "%s%u:%u", uids.len ? "," : "", first_uid, last_uid);
		first_uid = last_uid = got[k];
	}
	free(got);
	if (first_uid == last_uid)
		buf_printf(&uids, "%s%u", uids.len ? "," : "", first_uid);
	else
		buf_printf(&uids, "%s%u:%u", uids.len ? "," : "", first_uid, last_uid);
	imap_cmd_ok(c, "[APPENDUID %u %s] APPEND completed", validity, uids.data ? uids.data : "");
	buf_deinit(&uids);
	return IMAP_CMD_DONE;
}

/* ---- CHECK CLOSE UNSELECT -------------------------------------------------------------- */

enum imap_cmd_result imap_cmd_check(struct imap_session *s, struct imap_cmd *c)
{
	imap_cmd_ok(c, "CHECK completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_close(struct imap_session *s, struct imap_cmd *c)
{
	if (!s->view.readonly && s->view.box != NULL) {
		/* RFC 9051 6.4.1: \Deleted messages go, without EXPUNGE responses. */
		uint32_t *gone = NULL;
		size_t n = 0;
		const char *error = NULL;
		int st = mstore_box_expunge(s->view.box, NULL, 0, &gone, &n, &error);
		free(gone);
		if (st != MSTORE_OK)
			imap_session_log(s, LOG_LEVEL_WARN, "event=close_expunge_failed error=\"%s\"",
					 error ? error : "?");
	}
	imap_view_close(s);
	imap_session_set_state(s, IMAP_ST_AUTH);
	imap_cmd_ok(c, "CLOSE completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_unselect(struct imap_session *s, struct imap_cmd *c)
{
	imap_view_close(s);
	imap_session_set_state(s, IMAP_ST_AUTH);
	imap_cmd_ok(c, "UNSELECT completed");
	return IMAP_CMD_DONE;
}
