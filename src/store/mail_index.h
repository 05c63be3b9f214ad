/* The per-user mailbox index behind mstore: mailboxes, messages, expunged UIDs,
 * keywords, cached strings and subscriptions.  mstore reaches it only through
 * struct mail_index_ops, so that a PostgreSQL backend can replace SQLite; no SQL lives
 * outside the backend's file.
 *
 * The index is a cache of the Maildir files (see store/mstore.h): every operation here
 * is a plain record operation, and the caller decides what is true.  Write operations
 * run inside begin(ix, 1) ... commit(); begin(ix, 1) takes the user's write lock (only
 * one writer per user at a time, across processes), begin(ix, 0) a consistent read
 * snapshot.  Outside a transaction each call is its own.
 *
 * Threads: one connection is used by one thread at a time (it may move between
 * threads).  Error strings point into a per-thread buffer of this file, valid until
 * the next call of this module in the same thread. */
#ifndef TERN_STORE_MAIL_INDEX_H
#define TERN_STORE_MAIL_INDEX_H

#include "store/mstore.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAIL_INDEX_BASE_MAX 256        /* bytes of a maildir base name, NUL included */
#define MAIL_INDEX_MTIME_NONE INT64_MIN /* cur_mtime of a mailbox never scanned */

/* A mailbox row.  The counters are kept by the writers (mstore) in the same
 * transaction as the change, so STATUS and SELECT need no scan of the messages. */
struct mail_index_box {
	int64_t id;
	char name[MSTORE_NAME_MAX];
	unsigned special;
	int noselect;
	int subscribed;            /* filled by box_list only */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint64_t expunged_floor;   /* expunges at or below this modseq are forgotten */
	int64_t cur_mtime;         /* ns; cur/ as the last tern writer left it */
	uint32_t messages;
	uint32_t unseen;
	uint32_t deleted;
	uint64_t size;
};

/* The order of base names in the index (memcmp, the shorter first when one is the
 * other's start): by_base scans, bulk rows and the names a sync sorts all follow it. */
static inline int mail_index_base_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* A message row.  base is the maildir name without its ":2,..." info part; borrowed by
 * msg_each callbacks for the duration of the call.  base_len: its bytes, or 0 when base
 * ends with a NUL (always so in what msg_each hands out). */
struct mail_index_msg {
	struct mstore_msg m;
	const char *base;
	size_t base_len;
};

/* Which messages msg_each visits. */
struct mail_index_query {
	uint32_t uid_min, uid_max;       /* inclusive */
	uint64_t modseq_min, modseq_max; /* inclusive; used when by_modseq */
	uint32_t flags_all;              /* only messages carrying all these flags */
	int by_modseq;                   /* select by modseq range (still ascending UID) */
	int by_base;                     /* every message of the box, ascending base name
					    (memcmp order, shorter first) */
};

/* Returns 0 to go on, -1 to stop (msg_each then returns -1 without touching
 * *error_r: the callback sets its own). */
typedef int mail_index_msg_cb(void *ctx, const struct mail_index_msg *msg);

struct mail_index;

/* Every int function returns 0 (or the count/found value documented) or -1 with
 * *error_r. */
/* One cached string to store (cache_put_many). */
struct mail_index_cache_put {
	uint32_t uid;
	const char *field;
	const void *value;
	size_t len;
};

struct mail_index_ops {
	const char *backend;
	void (*close)(struct mail_index *ix);

	int (*begin)(struct mail_index *ix, int write, const char **error_r);
	int (*commit)(struct mail_index *ix, const char **error_r);
	void (*rollback)(struct mail_index *ix);

	/* A new UIDVALIDITY: at least floor (the caller passes the time) and greater
	 * than any this index handed out before.  Write transaction. */
	int (*uidvalidity_next)(struct mail_index *ix, uint32_t floor, uint32_t *uidvalidity_r,
				const char **error_r);
	/* The largest UIDVALIDITY handed out (0 when none), for a rebuild to exceed. */
	int (*uidvalidity_last)(struct mail_index *ix, uint32_t *uidvalidity_r,
				const char **error_r);

	/* 1 found, 0 not found.  name is compared exactly (the caller normalises). */
	int (*box_get)(struct mail_index *ix, const char *name, struct mail_index_box *box_r,
		       const char **error_r);
	int (*box_get_id)(struct mail_index *ix, int64_t id, struct mail_index_box *box_r,
			  const char **error_r);
	/* Every mailbox in name order (memcmp), with subscribed set; caller frees. */
	int (*box_list)(struct mail_index *ix, struct mail_index_box **boxes_r, size_t *n_r,
			const char **error_r);
	/* Sets box->id.  The name must be new. */
	int (*box_insert)(struct mail_index *ix, struct mail_index_box *box, const char **error_r);
	/* Writes every field but id. */
	int (*box_update)(struct mail_index *ix, const struct mail_index_box *box,
			  const char **error_r);
	/* Removes the box's messages, expunged UIDs, keywords and cached strings;
	 * with drop the row too. */
	int (*box_clear)(struct mail_index *ix, int64_t id, int drop, const char **error_r);
	/* Moves every message (with keywords and cached strings, same UIDs and base
	 * names) of box from to box to, which must be empty. */
	int (*box_move_messages)(struct mail_index *ix, int64_t from, int64_t to,
				 const char **error_r);

	/* 0 inserted, 1 the box already has a message of this base (nothing done); a
	 * bulk row of the same base is not noticed here (msg_find_base finds it). */
	int (*msg_insert)(struct mail_index *ix, int64_t box, const struct mail_index_msg *msg,
			  const char **error_r);
	/* Inserts n messages whose bases the box does not have (a base it has may fail the
	 * call); many rows per statement, for the import of a whole directory.  bulk: the
	 * box has no rows, msgs ascend by base (memcmp order, shorter first) and UID
	 * alike, and every later message gets a higher UID; such rows cost the index less
	 * to take in. */
	int (*msg_insert_many)(struct mail_index *ix, int64_t box,
			       const struct mail_index_msg *msgs, size_t n, int bulk,
			       const char **error_r);
	int (*msg_each)(struct mail_index *ix, int64_t box, const struct mail_index_query *q,
			mail_index_msg_cb *cb, void *ctx, const char **error_r);
	/* 1 found (msg_r filled), 0 not found. */
	int (*msg_find_base)(struct mail_index *ix, int64_t box, const char *base,
			     struct mstore_msg *msg_r, const char **error_r);
	int (*msg_set_flags)(struct mail_index *ix, int64_t box, uint32_t uid, uint32_t flags,
			     uint64_t keywords, uint64_t modseq, const char **error_r);
	/* Removes the message and its cached strings and remembers uid as expunged at
	 * modseq. */
	int (*msg_expunge)(struct mail_index *ix, int64_t box, uint32_t uid, uint64_t modseq,
			   const char **error_r);

	/* Expunged UIDs with since < modseq <= until, ascending; caller frees. */
	int (*expunged_list)(struct mail_index *ix, int64_t box, uint64_t since, uint64_t until,
			     uint32_t **uids_r, size_t *n_r, const char **error_r);
	/* Forgets expunges at or below modseq (the caller records the floor). */
	int (*expunged_prune)(struct mail_index *ix, int64_t box, uint64_t modseq,
			      const char **error_r);

	/* The box's keywords: names[i] is keyword i; *n_r <= MSTORE_KEYWORDS_MAX. */
	int (*keywords_get)(struct mail_index *ix, int64_t box,
			    char (*names)[MSTORE_KEYWORD_LEN], size_t *n_r, const char **error_r);
	int (*keyword_add)(struct mail_index *ix, int64_t box, size_t idx, const char *name,
			   const char **error_r);

	/* 1 and *value_r (caller's, NUL-terminated), 0 when absent. */
	int (*cache_get)(struct mail_index *ix, int64_t box, uint32_t uid, const char *field,
			 char **value_r, size_t *len_r, const char **error_r);
	int (*cache_put)(struct mail_index *ix, int64_t box, uint32_t uid, const char *field,
			 const void *value, size_t len, const char **error_r);
	/* Several puts in one transaction, without waiting for the disk (cached strings can
	 * be computed again).  Not inside begin()..commit(). */
	int (*cache_put_many)(struct mail_index *ix, int64_t box,
			      const struct mail_index_cache_put *puts, size_t n,
			      const char **error_r);
	/* Every cached value of field in the box, ascending UID: cb returns 0 to go on. */
	int (*cache_scan)(struct mail_index *ix, int64_t box, const char *field,
			  int (*cb)(void *ctx, uint32_t uid, const void *value, size_t len),
			  void *ctx, const char **error_r);
	int (*cache_copy)(struct mail_index *ix, int64_t from_box, uint32_t from_uid,
			  int64_t to_box, uint32_t to_uid, const char **error_r);

	int (*sub_set)(struct mail_index *ix, const char *name, int on, const char **error_r);
	/* Subscribed names in name order; caller frees each and the array. */
	int (*sub_list)(struct mail_index *ix, char ***names_r, size_t *n_r,
			const char **error_r);
};

/* Every backend's connection starts with this. */
struct mail_index {
	const struct mail_index_ops *ops;
};

/* Opens (creating when missing, file mode 0600) the SQLite index at path. */
int mail_index_sqlite_open(const char *path, struct mail_index **ix_r, const char **error_r);

#endif
