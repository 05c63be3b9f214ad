/* Shared by mstore.c (mailboxes, APPEND, administration) and mstore_sync.c (a
 * selected mailbox: sync, poll, STORE, EXPUNGE, COPY). */
#ifndef TERN_STORE_MSTORE_PRIVATE_H
#define TERN_STORE_MSTORE_PRIVATE_H

#include "store/mail_index.h"
#include "store/mstore.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define MSTORE_PATH_MAX 4096
/* Room under the user's root for "/.FOLDER/cur/NAME" (two 255-byte names). */
#define MSTORE_ROOT_MAX (MSTORE_PATH_MAX - 600)
#define MSTORE_FILE_MAX 256          /* a directory entry's name, NUL included */
#define MSTORE_MAILBOXES_MAX 10000   /* per user: LIST stays cheap */
#define MSTORE_TMP_MAX_AGE (36 * 3600) /* a tmp/ file this old was left by a crash */
#define MSTORE_CHANGED_FILE "tern-changed" /* in the user's root: see mstore_touch_changed */
#define MSTORE_TMP_SWEEP_MAX 1000    /* tmp/ entries one sweep looks at */
#define MSTORE_FLAGS_ALL                                                                   \
	(MSTORE_F_SEEN | MSTORE_F_ANSWERED | MSTORE_F_FLAGGED | MSTORE_F_DELETED |         \
	 MSTORE_F_DRAFT)

struct mstore {
	char root[MSTORE_ROOT_MAX];
	struct mail_index *ix;
	/* UIDVALIDITY never below this (a rebuilt index exceeds the old one's). */
	uint32_t uidvalidity_floor;
	char host[128];              /* escaped for maildir names */
};

/* A growing array of messages, filled by mail_index msg_each (mstore_msgvec_cb). */
struct mstore_msgvec {
	struct mstore_msg *v;
	size_t n, cap;
};
int mstore_msgvec_cb(void *ctx, const struct mail_index_msg *msg);

struct mstore_box {
	struct mstore *st;
	int64_t id;
	int readonly;
	char dir[MSTORE_PATH_MAX];   /* the mailbox's maildir */
	struct mstore_mailbox info;
	uint64_t expunged_floor;
	char kw[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	const char *kw_ptrs[MSTORE_KEYWORDS_MAX + 1];
	size_t n_kw;
	/* What the last sync saw, for mstore_box_poll(). */
	int64_t seen_new_mtime;
	int64_t seen_cur_mtime;
	int seen_hot;                /* an mtime was too recent to trust */
	/* Cached strings not written yet: they go in one transaction (see
	 * mstore_box_cache_flush). */
	struct mail_index_cache_put *pending;
	size_t n_pending, pending_bytes;
	/* The whole list as the sync that imported the mailbox into an empty index made
	 * it (v NULL otherwise): the first mstore_box_list takes it instead of reading
	 * the rows back.  Valid while the box's state is still that sync's. */
	struct mstore_msgvec fresh;
	uint64_t fresh_modseq;
};

/* (mstore_list.c) Every row of the box below the last sync's UIDNEXT, read from the
 * index (the slow way: a row at a time).  *msgs_r is the caller's. */
int mstore_box_read_all(struct mstore_box *box, struct mstore_msg **msgs_r, size_t *n_r,
			const char **error_r);

/* Undo log of file operations, replayed backwards when the index transaction that
 * they belong to fails, so that the files stay what the index says. */
enum mstore_undo_kind { MSTORE_UNDO_UNLINK, MSTORE_UNDO_RENAME, MSTORE_UNDO_RMTREE };
struct mstore_undo_op {
	enum mstore_undo_kind kind;
	char *a; /* unlink a; rename a back to b; remove tree a */
	char *b;
};
struct mstore_undo {
	struct mstore_undo_op *ops;
	size_t n, cap;
};
int mstore_undo_add(struct mstore_undo *u, enum mstore_undo_kind kind, const char *a,
		    const char *b);
void mstore_undo_run(struct mstore_undo *u);
void mstore_undo_free(struct mstore_undo *u);

/* Sets *error_r (per-thread buffer) and returns status. */
int mstore_fail(const char **error_r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* MSTORE_NO_SPACE for ENOSPC/EDQUOT, else MSTORE_IO. */
int mstore_errno_status(int err);
/* An index failure: its message, MSTORE_IO. */
int mstore_ix_fail(const char **error_r, const char *ix_error);

/* Validates a mailbox name and writes it with INBOX spelled "INBOX" to out
 * (MSTORE_NAME_MAX).  MSTORE_OK or MSTORE_BAD_NAME. */
int mstore_name_normalize(const char *name, char *out, const char **error_r);
/* ".A.B" for "A/B" ('.' and '%' in components as %2E and %25), and back (-1 when
 * folder is not one of ours). */
void mstore_folder_encode(const char *name, char *out, size_t cap);
int mstore_folder_decode(const char *folder, char *out, size_t cap);
/* The maildir of mailbox name (normalised) in out. */
int mstore_box_path(const struct mstore *st, const char *name, char *out, size_t cap);

int64_t mstore_mtime_ns(const struct stat *sb);
/* ":2," info letters for flags (at most 6 bytes with NUL). */
void mstore_flags_letters(uint32_t flags, char *out);
/* Base length (up to ':') and flags (from ":2,") of a maildir file name. */
void mstore_fname_parse(const char *name, size_t *base_len_r, uint32_t *flags_r);
/* A new unique maildir base name: "<time>.M<usec>P<pid>Q<n>R<random>.<host>,S=<size>". */
void mstore_unique_name(const struct mstore *st, int64_t when, uint64_t size, char *out,
			size_t cap);
/* A new UIDVALIDITY (write transaction). */
int mstore_uidvalidity_new(struct mstore *st, uint32_t *uidvalidity_r, const char **error_r);

/* Keywords: parses a space-separated list (atoms only) into names. */
int mstore_keywords_parse(const char *s, char (*names)[MSTORE_KEYWORD_LEN], size_t *n_r,
			  const char **error_r);
/* Bits for names in the box's keyword table (kw, *n_kw, loaded in this write
 * transaction); create adds missing ones (MSTORE_LIMIT past MSTORE_KEYWORDS_MAX),
 * otherwise they are ignored. */
int mstore_keywords_bits(struct mail_index *ix, int64_t box, char (*kw)[MSTORE_KEYWORD_LEN],
			 size_t *n_kw, char (*names)[MSTORE_KEYWORD_LEN], size_t n, int create,
			 uint64_t *bits_r, const char **error_r);

/* Messages collected from mail_index msg_each (mstore_msglist_cb with the list as
 * ctx), with their base names; when want is set only those UIDs (ascending). */
struct mstore_msglist {
	struct mstore_msg *msgs;
	size_t *base_off;
	char *arena;
	size_t n, cap, alen, acap;
	const uint32_t *want;
	size_t n_want, want_pos;
	const char *error; /* set when the callback failed */
};
int mstore_msglist_cb(void *ctx, const struct mail_index_msg *msg);
void mstore_msglist_free(struct mstore_msglist *l);
static inline const char *mstore_msglist_base(const struct mstore_msglist *l, size_t i)
{
	return l->arena + l->base_off[i];
}

/* Counter upkeep in a mailbox row for one message added (sign 1) or removed (-1). */
void mstore_row_count(struct mail_index_box *row, uint32_t flags, uint64_t size, int sign);

/* Takes in new/ and, when cur/ changed behind tern's back (or was never scanned),
 * all of cur/ for the mailbox whose row is *row (read in this write transaction) and
 * whose maildir is dir.  Updates *row in memory and in the index.  *n_new_r (may be
 * NULL) gets the number of messages given UIDs.  fresh_r (may be NULL): when the index
 * had no rows for the box, it gets the box's whole list (ascending UIDs), else it is
 * emptied (v NULL). */
int mstore_sync_locked(struct mstore *st, struct mail_index_box *row, const char *dir,
		       size_t *n_new_r, struct mstore_msgvec *fresh_r, const char **error_r);

/* Maildir++ folder operations. */
int mstore_folder_create(const char *path, const char **error_r);
/* Removes a directory tree (a deleted mailbox's folder).  0 or -1. */
int mstore_tree_remove(const char *path);
/* Removes what a crash left in the folder's tmp/: files untouched for 36 hours (the
 * Maildir rule; a writer that is still busy touches its file).  Best effort. */
void mstore_tmp_sweep(const char *folder);
/* After a commit that others should see: touches the user's change marker, which
 * IDLE sessions watch (mstore_box_watch_paths); the index's own writes come before
 * the commit is visible.  Best effort. */
void mstore_touch_changed(const struct mstore *st);

#endif
