/* STORE, COPY, MOVE, EXPUNGE and their UID forms (RFC 9051 6.4.3, 6.4.6-6.4.9;
 * UNCHANGEDSINCE, RFC 7162 3.1.3; COPYUID and UID EXPUNGE, RFC 4315; MOVE, RFC 6851).
 * Every change is one store call; the view then takes in what the store says changed
 * (imap_view_update, imap_view_expunged) and the handler announces it itself, so the
 * session's imap_view_sync after the command finds nothing to repeat. */
#include "imap/imap_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- helpers ------------------------------------------------------------------------------ */

int imap_uid_listed(const uint32_t *v, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid] == uid)
			return 1;
		if (v[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

void imap_out_set(struct buf *out, const uint32_t *v, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t j = i;
		while (j + 1 < n && v[j + 1] == v[j] + 1)
			j++;
		if (i > 0)
			buf_append(out, ",", 1);
		if (j == i)
			buf_printf(out, "%u", v[i]);
		else
			buf_printf(out, "%u:%u", v[i], v[j]);
		i = j + 1;
	}
}

/* Index of uid in the view, or -1. */
static long view_find(const struct imap_view *v, uint32_t uid)
{
	size_t lo = 0, hi = v->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->msgs[mid].uid == uid)
			return (long)mid;
		if (v->msgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

void imap_view_expunged(struct imap_session *s, struct imap_cmd *c, const uint32_t *uids, size_t n)
{
	struct imap_view *v = &s->view;
	uint32_t *mine;
	size_t k = 0;

	if (n == 0 || v->n == 0 || imap_view_writable(s) < 0)
		return; /* imap_view_sync announces them the ordinary way */
	mine = malloc(n * sizeof(*mine));
	if (mine == NULL)
		return; /* imap_view_sync will announce them the ordinary way */
	/* One merge pass: both lists ascend. */
	size_t w = 0, j = 0;
	long *seqs = malloc(n * sizeof(*seqs));
	if (seqs == NULL) {
		free(mine);
		return;
	}
	for (size_t i = 0; i < v->n; i++) {
		uint32_t uid = v->msgs[i].uid;
		while (j < n && uids[j] < uid)
			j++;
		if (j < n && uids[j] == uid) {
			seqs[k] = (long)i + 1;
			mine[k++] = uid;
			continue;
		}
		v->msgs[w++] = v->msgs[i];
	}
	v->n = w;
	/* A UID we announce here must not be announced again from view.gone. */
	size_t g = 0;
	for (size_t i = 0; i < v->n_gone; i++) {
		if (!imap_uid_listed(mine, k, v->gone[i]))
			v->gone[g++] = v->gone[i];
	}
	v->n_gone = g;

	if (k > 0 && s->qresync) {
		imap_out(c, "* VANISHED ");
		imap_out_set(&c->out, mine, k);
		imap_out(c, "\r\n");
	} else {
		/* Highest first: each number is still right when the client reads it. */
		for (size_t i = k; i-- > 0;)
			imap_out_untagged(c, "%ld EXPUNGE", seqs[i]);
	}
	free(seqs);
	free(mine);
}

static int view_uids(struct imap_session *s, const size_t *idx, size_t n, uint32_t **uids_r)
{
	uint32_t *u = malloc((n ? n : 1) * sizeof(*u));
	if (u == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		u[i] = s->view.msgs[idx[i]].uid;
	*uids_r = u;
	return 0;
}

/* ---- STORE -------------------------------------------------------------------------------- */

enum imap_cmd_result imap_cmd_store(struct imap_session *s, struct imap_cmd *c)
{
	const struct imap_arg *args = c->parsed.args;
	size_t n_args = c->parsed.n_args, ai = 1;
	uint64_t unchangedsince = 0;
	int have_unchanged = 0;

	if (n_args < 3 || args[0].type != IMAP_ARG_ATOM) {
		imap_cmd_bad(c,
		             "Usage: STORE sequence-set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] "
		             "flags");
		return IMAP_CMD_DONE;
	}
	if (args[1].type == IMAP_ARG_LIST) {
		const struct imap_arg *m = &args[1];
		if (m->n != 2 || m->list[0].type != IMAP_ARG_ATOM ||
		    strcasecmp(m->list[0].s, "UNCHANGEDSINCE") != 0 ||
		    imap_arg_number(&m->list[1], &unchangedsince) < 0) {
			imap_cmd_bad(c, "Invalid STORE modifier");
			return IMAP_CMD_DONE;
		}
		have_unchanged = 1;
		ai = 2;
	}
	const struct imap_arg *item = &args[ai];
	if (item->type != IMAP_ARG_ATOM || ai + 1 >= n_args) {
		imap_cmd_bad(c, "Invalid STORE item");
		return IMAP_CMD_DONE;
	}
	const char *it = item->s;
	enum mstore_store_op op = MSTORE_STORE_SET;
	if (*it == '+') {
		op = MSTORE_STORE_ADD;
		it++;
	} else if (*it == '-') {
		op = MSTORE_STORE_REMOVE;
		it++;
	}
	int silent;
	if (strcasecmp(it, "FLAGS") == 0) {
		silent = 0;
	} else if (strcasecmp(it, "FLAGS.SILENT") == 0) {
		silent = 1;
	} else {
		imap_cmd_bad(c, "Invalid STORE item");
		return IMAP_CMD_DONE;
	}

	/* The flags: one list, or one or more single flags. */
	uint32_t flags = 0;
	char keywords[MSTORE_KEYWORDS_MAX * MSTORE_KEYWORD_LEN] = "";
	for (size_t i = ai + 1; i < n_args; i++) {
		uint32_t f = 0;
		char kw[MSTORE_KEYWORDS_MAX * MSTORE_KEYWORD_LEN];
		kw[0] = '\0';
		if ((args[i].type == IMAP_ARG_LIST && n_args != ai + 2) ||
		    imap_flags_parse(&args[i], &f, kw, sizeof(kw)) < 0) {
			imap_cmd_bad(c, "Invalid flags");
			return IMAP_CMD_DONE;
		}
		flags |= f;
		if (kw[0] != '\0') {
			size_t used = strlen(keywords);
			if (used + strlen(kw) + 2 > sizeof(keywords)) {
				imap_cmd_no(c, "[LIMIT] Too many keywords");
				return IMAP_CMD_DONE;
			}
			if (used > 0)
				strcat(keywords, " ");
			strcat(keywords, kw);
		}
	}

	size_t *idx = NULL, n = 0;
	if (imap_view_set(s, args[0].s, args[0].len, c->parsed.uid, &idx, &n) < 0) {
		imap_cmd_bad(c, "Invalid sequence set");
		return IMAP_CMD_DONE;
	}
	if (have_unchanged)
		s->condstore = 1; /* RFC 7162 3.1: UNCHANGEDSINCE enables CONDSTORE */
	uint32_t *uids = NULL;
	if (view_uids(s, idx, n, &uids) < 0) {
		free(idx);
		imap_cmd_no(c, "[SERVERBUG] Out of memory");
		return IMAP_CMD_DONE;
	}

	struct mstore_msg *changed = NULL;
	uint32_t *failed = NULL;
	size_t n_changed = 0, n_failed = 0;
	const char *error = NULL;
	if (n > 0 && have_unchanged && unchangedsince == 0) {
		/* RFC 7162 3.1.3: UNCHANGEDSINCE 0 always fails (every message has a modseq). */
		failed = uids;
		n_failed = n;
		uids = NULL;
	} else if (n > 0) {
		int status = mstore_box_store(s->view.box, uids, n, op, flags,
		                              keywords[0] != '\0' ? keywords : NULL, unchangedsince,
		                              &changed, &n_changed, &failed, &n_failed, &error);
		if (status != MSTORE_OK) {
			free(idx);
			free(uids);
			free(changed);
			free(failed);
			imap_cmd_store_error(s, c, status, error, 0);
			return IMAP_CMD_DONE;
		}
		imap_view_update(s, changed, n_changed);
	}

	/* RFC 9051 6.4.6: the new flags of every message of the set, unless .SILENT;
	 * RFC 7162 3.1.3: with CONDSTORE their MODSEQ, and even under .SILENT an untagged
	 * FETCH with the MODSEQ of each message that changed. */
	for (size_t i = 0; i < n; i++) {
		const struct mstore_msg *m = &s->view.msgs[idx[i]];
		if (n_failed > 0 && imap_uid_listed(failed, n_failed, m->uid))
			continue;
		int was_changed = 0;
		for (size_t lo = 0, hi = n_changed; lo < hi;) {
			size_t mid = lo + (hi - lo) / 2;
			if (changed[mid].uid == m->uid) {
				was_changed = 1;
				break;
			}
			if (changed[mid].uid < m->uid)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (silent && !(s->condstore && was_changed))
			continue;
		imap_out(c, "* %zu FETCH (", idx[i] + 1);
		const char *sep = "";
		if (!silent) {
			imap_out(c, "FLAGS (");
			imap_view_flags(s, c, m);
			imap_out(c, ")");
			sep = " ";
		}
		if (c->parsed.uid) {
			imap_out(c, "%sUID %u", sep, m->uid);
			sep = " ";
		}
		if (s->condstore)
			imap_out(c, "%sMODSEQ (%llu)", sep, (unsigned long long)m->modseq);
		imap_out(c, ")\r\n");
	}

	if (n_failed > 0) {
		struct buf set;
		buf_init(&set, 0);
		if (!c->parsed.uid) {
			/* Sequence numbers, ascending like the UIDs. */
			for (size_t i = 0; i < n_failed; i++) {
				long k = view_find(&s->view, failed[i]);
				failed[i] = k < 0 ? 0 : (uint32_t)k + 1;
			}
			size_t w = 0;
			for (size_t i = 0; i < n_failed; i++) {
				if (failed[i] != 0)
					failed[w++] = failed[i];
			}
			n_failed = w;
		}
		imap_out_set(&set, failed, n_failed);
		imap_cmd_ok(c, "[MODIFIED %s] Conditional STORE failed",
		            set.data != NULL ? set.data : "");
		buf_deinit(&set);
	} else {
		imap_cmd_ok(c, "Store completed");
	}
	free(idx);
	free(uids);
	free(changed);
	free(failed);
	return IMAP_CMD_DONE;
}

/* ---- COPY and MOVE ------------------------------------------------------------------------ */

enum imap_cmd_result imap_cmd_copy(struct imap_session *s, struct imap_cmd *c)
{
	const struct imap_arg *args = c->parsed.args;
	int move = strcmp(c->parsed.name, "MOVE") == 0;
	const char *verb = move ? "Move" : "Copy";
	char dest[MSTORE_NAME_MAX];

	if (c->parsed.n_args != 2 || args[0].type != IMAP_ARG_ATOM ||
	    !imap_arg_is_astring(&args[1])) {
		imap_cmd_bad(c, "Usage: %s sequence-set mailbox", move ? "MOVE" : "COPY");
		return IMAP_CMD_DONE;
	}
	if (imap_mailbox_arg(s, &args[1], dest) < 0) {
		imap_cmd_no(c, "Invalid mailbox name");
		return IMAP_CMD_DONE;
	}
	if (move && s->view.readonly) {
		imap_cmd_no(c, "[READ-ONLY] The mailbox is read-only");
		return IMAP_CMD_DONE;
	}
	size_t *idx = NULL, n = 0;
	if (imap_view_set(s, args[0].s, args[0].len, c->parsed.uid, &idx, &n) < 0) {
		imap_cmd_bad(c, "Invalid sequence set");
		return IMAP_CMD_DONE;
	}
	if (n == 0) {
		/* RFC 9051 6.4.7 / RFC 4315 3: nothing copied, no COPYUID. */
		free(idx);
		imap_cmd_ok(c, "%s completed", verb);
		return IMAP_CMD_DONE;
	}
	uint32_t *uids = NULL;
	if (view_uids(s, idx, n, &uids) < 0) {
		free(idx);
		imap_cmd_no(c, "[SERVERBUG] Out of memory");
		return IMAP_CMD_DONE;
	}
	free(idx);

	uint32_t dest_uidvalidity = 0, *src = NULL, *dst = NULL;
	size_t n_copied = 0;
	const char *error = NULL;
	int status = mstore_box_copy(s->view.box, uids, n, dest, move, &dest_uidvalidity, &src,
	                             &dst, &n_copied, &error);
	free(uids);
	if (status != MSTORE_OK) {
		free(src);
		free(dst);
		imap_cmd_store_error(s, c, status, error, 1);
		return IMAP_CMD_DONE;
	}

	struct buf code;
	buf_init(&code, 0);
	if (n_copied > 0) {
		/* RFC 4315 3: source and destination sets in the same order.  Both ascend, so
		 * each compresses on its own. */
		buf_printf(&code, "[COPYUID %u ", dest_uidvalidity);
		imap_out_set(&code, src, n_copied);
		buf_append(&code, " ", 1);
		imap_out_set(&code, dst, n_copied);
		buf_append(&code, "] ", 2);
	}
	if (move) {
		/* RFC 6851 4.3: COPYUID untagged before the expunges. */
		if (n_copied > 0)
			imap_out_untagged(c, "OK %sMoved", code.data);
		imap_view_expunged(s, c, src, n_copied);
		imap_cmd_ok(c, "Move completed");
	} else {
		imap_cmd_ok(c, "%sCopy completed", code.data != NULL ? code.data : "");
	}
	buf_deinit(&code);
	free(src);
	free(dst);
	return IMAP_CMD_DONE;
}

/* ---- EXPUNGE / UID EXPUNGE ------------------------------------------------------------------ */

enum imap_cmd_result imap_cmd_expunge(struct imap_session *s, struct imap_cmd *c)
{
	const struct imap_arg *args = c->parsed.args;
	uint32_t *uids = NULL;
	size_t n = 0;

	if (s->view.readonly) {
		imap_cmd_no(c, "[READ-ONLY] The mailbox is read-only");
		return IMAP_CMD_DONE;
	}
	if (c->parsed.uid) {
		/* RFC 4315 2.1: only the messages of the set. */
		size_t *idx = NULL;
		if (c->parsed.n_args != 1 || args[0].type != IMAP_ARG_ATOM ||
		    imap_view_set(s, args[0].s, args[0].len, 1, &idx, &n) < 0) {
			imap_cmd_bad(c, "Usage: UID EXPUNGE uid-set");
			return IMAP_CMD_DONE;
		}
		int r = view_uids(s, idx, n, &uids);
		free(idx);
		if (r < 0) {
			imap_cmd_no(c, "[SERVERBUG] Out of memory");
			return IMAP_CMD_DONE;
		}
	} else {
		if (c->parsed.n_args != 0) {
			imap_cmd_bad(c, "EXPUNGE takes no arguments");
			return IMAP_CMD_DONE;
		}
		/* The messages this session knows: one that arrived since the last sync is
		 * not the client's to remove yet. */
		n = s->view.n;
		uids = malloc((n ? n : 1) * sizeof(*uids));
		if (uids == NULL) {
			imap_cmd_no(c, "[SERVERBUG] Out of memory");
			return IMAP_CMD_DONE;
		}
		for (size_t i = 0; i < n; i++)
			uids[i] = s->view.msgs[i].uid;
	}
	if (n == 0) {
		free(uids);
		imap_cmd_ok(c, "Expunge completed");
		return IMAP_CMD_DONE;
	}
	uint32_t *gone = NULL;
	size_t n_gone = 0;
	const char *error = NULL;
	int status = mstore_box_expunge(s->view.box, uids, n, &gone, &n_gone, &error);
	free(uids);
	if (status != MSTORE_OK) {
		free(gone);
		imap_cmd_store_error(s, c, status, error, 0);
		return IMAP_CMD_DONE;
	}
	imap_view_expunged(s, c, gone, n_gone);
	free(gone);
	imap_cmd_ok(c, "Expunge completed");
	return IMAP_CMD_DONE;
}
