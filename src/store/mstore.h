/* A user's mail store: Maildir++ folders under MAIL_ROOT/DOMAIN/USER/ (INBOX is the
 * root maildir, every other mailbox a dot-folder) and the per-user index
 * MAIL_ROOT/DOMAIN/USER/index.db with UIDVALIDITY, UIDNEXT, UIDs, flags, keywords,
 * MODSEQ, sizes, internal dates and cached protocol strings (ENVELOPE, BODYSTRUCTURE).
 *
 * The Maildir files are the truth: system flags live in the file names (":2,DFRST"),
 * so `tern reindex` (mstore_reindex) rebuilds everything but keywords and cached strings
 * from them.  The index sits behind the small interface of store/mail_index.h so that
 * another backend (PostgreSQL, for several nodes) can replace SQLite.
 *
 * Concurrency: several sessions, in several processes, may open the same user's store.
 * Every change is one index transaction, so they stay consistent; a session learns of
 * other sessions' changes through mstore_box_poll() and mstore_box_changes().
 *
 * Threads: one struct mstore (and the boxes opened from it) is used by one thread at a
 * time; it may move between threads (the engines run their commands on pool threads).
 * Every call may block (disk, SQLite): never call it on an event loop.
 *
 * Mailbox names are UTF-8 with '/' as the hierarchy separator ("Work/2026"); "INBOX"
 * is matched case-insensitively and always spelled "INBOX" in results.  The protocol
 * engines convert from and to modified UTF-7 themselves. */
#ifndef TERN_STORE_MSTORE_H
#define TERN_STORE_MSTORE_H

#include <stddef.h>
#include <stdint.h>

#define MSTORE_NAME_MAX 512     /* bytes of a mailbox name, NUL included */
#define MSTORE_KEYWORDS_MAX 64  /* distinct keywords per mailbox (PERMANENTFLAGS) */
#define MSTORE_KEYWORD_LEN 64   /* bytes of one keyword, NUL included */

/* System flags. */
enum {
	MSTORE_F_SEEN = 1 << 0,
	MSTORE_F_ANSWERED = 1 << 1,
	MSTORE_F_FLAGGED = 1 << 2,
	MSTORE_F_DELETED = 1 << 3,
	MSTORE_F_DRAFT = 1 << 4,
};

/* SPECIAL-USE attributes (RFC 6154). */
enum {
	MSTORE_SPECIAL_SENT = 1 << 0,
	MSTORE_SPECIAL_DRAFTS = 1 << 1,
	MSTORE_SPECIAL_TRASH = 1 << 2,
	MSTORE_SPECIAL_JUNK = 1 << 3,
	MSTORE_SPECIAL_ARCHIVE = 1 << 4,
};

/* Outcomes of the calls below.  Every failing call also sets *error_r to a sentence
 * fit for a log line (not for the client: the engines word their own replies). */
enum mstore_status {
	MSTORE_OK = 0,
	MSTORE_NOT_FOUND = -1,   /* no such mailbox (or message) */
	MSTORE_EXISTS = -2,      /* CREATE / RENAME target exists */
	MSTORE_BAD_NAME = -3,    /* empty, too long, control characters, "..", bad hierarchy,
				    or an operation INBOX does not allow (DELETE INBOX) */
	MSTORE_NO_SPACE = -4,    /* ENOSPC / EDQUOT */
	MSTORE_LIMIT = -5,       /* too many keywords or mailboxes */
	MSTORE_IO = -6,          /* anything else: disk, index */
	MSTORE_IN_USE = -7,      /* mstore_pop3_lock: another session holds it */
};

/* A mailbox as LIST and STATUS see it. */
struct mstore_mailbox {
	char name[MSTORE_NAME_MAX];
	unsigned special;              /* MSTORE_SPECIAL_* */
	int subscribed;
	int noselect;                  /* only a parent of other mailboxes (deleted with
					  inferiors), not selectable */
	int has_children;
	/* Filled by mstore_status() and for mstore_box_info(); zero in mstore_list(). */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint32_t messages;
	uint32_t unseen;               /* messages without \Seen */
	uint32_t deleted;              /* messages with \Deleted */
	uint64_t size;                 /* sum of the messages' sizes */
};

/* One message as the index knows it. */
struct mstore_msg {
	uint32_t uid;
	uint32_t flags;                /* MSTORE_F_* */
	uint64_t keywords;             /* bit i: the box's keyword i (mstore_box_keywords) */
	uint64_t modseq;
	uint64_t size;                 /* RFC822.SIZE: the file's bytes (stored with CRLF) */
	int64_t internaldate;          /* seconds since the epoch */
	int internaldate_tz;           /* the date's zone, minutes east of UTC */
};

struct mstore;
struct mstore_box;

/* Opens the store of DOMAIN/USER under mail_root, creating the maildir, the index and
 * the default mailboxes (INBOX, Sent, Drafts, Trash, Junk, Archive, each with its
 * special use, all subscribed) on first use.  domain and user follow maildir_ensure()'s
 * rules.  Returns MSTORE_OK and *st_r, or a failure. */
int mstore_open(const char *mail_root, const char *domain, const char *user,
		struct mstore **st_r, const char **error_r);
void mstore_close(struct mstore **st);
/* The user's maildir (INBOX), borrowed for the store's lifetime. */
const char *mstore_path(const struct mstore *st);

/* ---- mailboxes ------------------------------------------------------------------------ */

/* Every mailbox, INBOX first then in name order, parents included (a parent that
 * exists only because of its children is noselect).  *boxes_r is owned by the caller
 * (free()).  MSTORE_OK or a failure. */
int mstore_list(struct mstore *st, struct mstore_mailbox **boxes_r, size_t *n_r,
		const char **error_r);
/* One mailbox's counters, after taking in new mail (as mstore_box_poll + sync would). */
int mstore_status(struct mstore *st, const char *name, struct mstore_mailbox *mb_r,
		  const char **error_r);
/* CREATE: missing parents are created too.  special: MSTORE_SPECIAL_* (CREATE-SPECIAL-USE). */
int mstore_create(struct mstore *st, const char *name, unsigned special, const char **error_r);
/* DELETE: a mailbox with children becomes noselect (its messages are removed); one
 * without is removed.  INBOX cannot be deleted (MSTORE_BAD_NAME). */
int mstore_delete(struct mstore *st, const char *name, const char **error_r);
/* RENAME, with every child ("A/B" moves with "A").  Renaming INBOX moves its messages
 * into the new mailbox and leaves INBOX empty (RFC 9051 6.3.6). */
int mstore_rename(struct mstore *st, const char *from, const char *to, const char **error_r);
/* SUBSCRIBE / UNSUBSCRIBE; a name that does not exist may be subscribed. */
int mstore_subscribe(struct mstore *st, const char *name, int on, const char **error_r);
/* Subscribed names (mailboxes or not), for LSUB and LIST (SUBSCRIBED); owned by the
 * caller: free each string and the array. */
int mstore_subscriptions(struct mstore *st, char ***names_r, size_t *n_r, const char **error_r);

/* APPEND: stores data (len bytes, a whole RFC 5322 message with CRLF line ends) in
 * mailbox name with flags, keywords (space-separated names; NULL for none) and the
 * internal date (0: now).  Durable (tmp, fsync, rename, fsync dir) before returning.
 * *uidvalidity_r and *uid_r say where it went (APPENDUID).  MSTORE_NOT_FOUND when the
 * mailbox does not exist (the engine answers [TRYCREATE]). */
int mstore_append(struct mstore *st, const char *name, const void *data, size_t len,
		  uint32_t flags, const char *keywords, int64_t internaldate, int tz,
		  uint32_t *uidvalidity_r, uint32_t *uid_r, const char **error_r);
/* MULTIAPPEND (RFC 3502): all of msgs or none.  uids_r gets n UIDs, in order. */
struct mstore_append_msg {
	const void *data;
	size_t len;
	uint32_t flags;
	const char *keywords;
	int64_t internaldate;
	int tz;
};
int mstore_append_many(struct mstore *st, const char *name, const struct mstore_append_msg *msgs,
		       size_t n, uint32_t *uidvalidity_r, uint32_t *uids_r, const char **error_r);

/* ---- a selected mailbox --------------------------------------------------------------- */

/* Opens a mailbox for SELECT/EXAMINE/STATUS-like use and takes in new mail.  readonly
 * boxes refuse changes (MSTORE_BAD_NAME).  The box belongs to st and must be closed
 * before it. */
int mstore_box_open(struct mstore *st, const char *name, int readonly,
		    struct mstore_box **box_r, const char **error_r);
void mstore_box_close(struct mstore_box **box);
/* Name, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and counters as of the last sync; borrowed
 * until the next call on the box. */
const struct mstore_mailbox *mstore_box_info(const struct mstore_box *box);
/* Where a change to the box shows first, for a change watch: its new/ (deliveries)
 * and cur/ (flags, expunges, copies by other sessions), and the directory of the
 * user's index (every commit, keywords too).  Returns how many were written (at most
 * max, each at most MSTORE_WATCH_PATH_MAX bytes with the NUL; 0 when one is too
 * long). */
#define MSTORE_WATCH_PATH_MAX 4112
size_t mstore_box_watch_paths(const struct mstore_box *box, char (*paths)[MSTORE_WATCH_PATH_MAX],
			      size_t max);
/* The box's keyword names, index i for bit i of mstore_msg.keywords; borrowed until the
 * next call on the box.  Keywords are created on first use (STORE, APPEND). */
const char *const *mstore_box_keywords(const struct mstore_box *box, size_t *n_r);

/* Cheap check (a stat of new/ and cur/ and one index read): 1 when something may have
 * changed since this box's last sync (new mail in new/, files changed by other
 * programs, changes committed by other sessions), 0 when not, -1 on error. */
int mstore_box_poll(struct mstore_box *box, const char **error_r);
/* Takes in new mail from new/ (moving it to cur/ and giving it UIDs) and notices
 * files that disappeared.  Refreshes mstore_box_info(). */
int mstore_box_sync(struct mstore_box *box, const char **error_r);

/* Every message, ascending UID, as of the last sync.  *msgs_r is the caller's (free()). */
int mstore_box_load(struct mstore_box *box, struct mstore_msg **msgs_r, size_t *n_r,
		    const char **error_r);
/* The same list, read-only and possibly shared: mapped from the mailbox's list file when
 * that is current (no copy, the same pages for every process), else made for the
 * caller.  Valid until mstore_list_free; it does not follow later changes (use
 * mstore_box_changes).  MSTORE_OK or a failure. */
struct mstore_list;
int mstore_box_list(struct mstore_box *box, struct mstore_list **list_r, const char **error_r);
const struct mstore_msg *mstore_list_msgs(const struct mstore_list *list, size_t *n_r);
void mstore_list_free(struct mstore_list **list);

/* What changed after modseq since: messages added or changed (modseq > since, ascending
 * UID) and UIDs expunged (ascending).  Both arrays are the caller's (free()); either may
 * be NULL with a count of 0.  Expunged UIDs are remembered for QRESYNC; when they have
 * been forgotten for a modseq this old, *expunged_complete_r is 0 (the caller then
 * compares the full UID list). */
int mstore_box_changes(struct mstore_box *box, uint64_t since, struct mstore_msg **changed_r,
		       size_t *n_changed_r, uint32_t **expunged_r, size_t *n_expunged_r,
		       int *expunged_complete_r, const char **error_r);

enum mstore_store_op { MSTORE_STORE_SET, MSTORE_STORE_ADD, MSTORE_STORE_REMOVE };

/* STORE on the messages uids (ascending, n of them; UIDs not in the box are skipped).
 * keywords: space-separated names or NULL.  unchangedsince: 0, or only messages whose
 * modseq <= it are changed, the others' UIDs go to *failed_r (caller's, free()).  Every
 * changed message gets one new modseq (the same for the whole call); a message whose
 * flags end up unchanged keeps its modseq.  *changed_r (caller's, may be NULL) gets the
 * changed messages as they are now. */
int mstore_box_store(struct mstore_box *box, const uint32_t *uids, size_t n,
		     enum mstore_store_op op, uint32_t flags, const char *keywords,
		     uint64_t unchangedsince, struct mstore_msg **changed_r, size_t *n_changed_r,
		     uint32_t **failed_r, size_t *n_failed_r, const char **error_r);
/* EXPUNGE: removes the messages of uids (ascending; NULL: every message) that carry
 * \Deleted.  *expunged_r (caller's, free()) gets the UIDs really removed, ascending. */
int mstore_box_expunge(struct mstore_box *box, const uint32_t *uids, size_t n,
		       uint32_t **expunged_r, size_t *n_r, const char **error_r);
/* COPY (move 0) or MOVE (move 1) of uids (ascending) into mailbox dest, keeping flags,
 * keywords and internal dates.  *dest_uids_r (caller's, free()) holds the new UIDs in
 * the order of the source UIDs that existed, *src_uids_r (caller's) those source UIDs
 * (COPYUID).  MOVE expunges the sources.  Durable before returning.  MSTORE_NOT_FOUND
 * when dest does not exist. */
int mstore_box_copy(struct mstore_box *box, const uint32_t *uids, size_t n, const char *dest,
		    int move, uint32_t *dest_uidvalidity_r, uint32_t **src_uids_r,
		    uint32_t **dest_uids_r, size_t *n_r, const char **error_r);

/* Opens message uid for reading.  MSTORE_NOT_FOUND when another session expunged it
 * (or the file vanished).  *fd_r is the caller's (close()). */
int mstore_box_msg_open(struct mstore_box *box, uint32_t uid, int *fd_r, const char **error_r);

/* Cached derived strings (the engines' ENVELOPE and BODYSTRUCTURE renderings) by field
 * name.  get: 1 and *value_r (caller's, free(), NUL-terminated, *len_r bytes), 0 when
 * not cached, or a failure.  put: MSTORE_OK or a failure; best effort for callers. */
int mstore_box_cache_get(struct mstore_box *box, uint32_t uid, const char *field,
			 char **value_r, size_t *len_r, const char **error_r);
int mstore_box_cache_put(struct mstore_box *box, uint32_t uid, const char *field,
			 const char *value, size_t len, const char **error_r);
/* Every cached value of field in the box, ascending UID (one index read instead of one
 * per message: SEARCH over a whole mailbox).  cb returns 0 to go on, 1 to stop; value
 * is borrowed for the call. */
int mstore_box_cache_scan(struct mstore_box *box, const char *field,
			  int (*cb)(void *ctx, uint32_t uid, const void *value, size_t len),
			  void *ctx, const char **error_r);
/* Puts are held back (at most 256 or 1 MB of them, visible to cache_get meanwhile) and
 * written in one transaction: here, when the batch is full, and at mstore_box_close.
 * A command that computed strings flushes when it ends. */
int mstore_box_cache_flush(struct mstore_box *box, const char **error_r);

/* ---- POP3 and administration ---------------------------------------------------------- */

/* Takes the user's exclusive POP3 lock (an flock on a file in the maildir, so it holds
 * across processes and goes with the process).  MSTORE_OK and *lock_fd_r (close() it to
 * release), MSTORE_IN_USE, or a failure. */
int mstore_pop3_lock(struct mstore *st, int *lock_fd_r, const char **error_r);

/* Rebuilds DOMAIN/USER's index from the Maildir files: mailboxes from the dot-folders,
 * messages and system flags from cur/ and new/, a new UIDVALIDITY for every mailbox
 * (clients resynchronise).  Keywords and cached strings are lost.  *n_messages_r (may
 * be NULL) gets the number of messages found. */
int mstore_reindex(const char *mail_root, const char *domain, const char *user,
		   size_t *n_messages_r, const char **error_r);

#endif
