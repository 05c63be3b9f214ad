/* Private to src/imap: the server, session, selected-mailbox view and command
 * structures shared by the engine's files.
 *
 *   imap_session.c   connections (event/conn.h), reading commands, dispatch through the
 *                    table, running handlers on the pool, output, IDLE, drain
 *   imap_commands.c  the command table
 *   imap_view.c      the selected mailbox as the session sees it; untagged updates
 *   imap_auth.c      CAPABILITY NOOP LOGOUT STARTTLS LOGIN AUTHENTICATE ENABLE ID NAMESPACE
 *   imap_mailbox.c   SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB
 *                    STATUS APPEND CHECK CLOSE UNSELECT
 *   imap_fetch.c     FETCH (and the ENVELOPE / BODYSTRUCTURE / section renderers)
 *   imap_search.c    SEARCH (ESEARCH for IMAP4rev2 clients)
 *   imap_store.c     STORE COPY MOVE EXPUNGE (and their UID forms)
 *
 * Threads: a handler flagged IMAP_CMD_BLOCKING runs on a pool thread while the session
 * waits (input paused, one command at a time), so it may call the store but must not
 * touch the connection or anything else of the loop: it writes its responses into
 * cmd->out, which the loop sends when the handler returns. */
#ifndef TERN_IMAP_IMAP_PRIVATE_H
#define TERN_IMAP_IMAP_PRIVATE_H

#include "imap/imap_parse.h"
#include "imap/imap_server.h"

#include "base/buf.h"
#include "base/log.h"
#include "event/conn.h"
#include "store/mstore.h"

#include <stddef.h>
#include <stdint.h>

#define IMAP_LINE_MAX        8192        /* a command line outside literals */
#define IMAP_LITERAL_PRE_AUTH 1024       /* literals before login (user names, passwords) */
#define IMAP_LITERAL_MAX     (64 * 1024) /* other literals after login (SEARCH strings) */
#define IMAP_NONSYNC_MAX     4096        /* LITERAL- */
#define IMAP_OUT_STEP        (256 * 1024) /* a handler returns IMAP_CMD_MORE past this much */
#define IMAP_MAX_ERRORS      20          /* BAD commands before we hang up */

enum imap_state {
	IMAP_ST_NOT_AUTH = 1 << 0,
	IMAP_ST_AUTH = 1 << 1,
	IMAP_ST_SELECTED = 1 << 2,
	IMAP_ST_LOGOUT = 1 << 3,
};
#define IMAP_ST_ANY (IMAP_ST_NOT_AUTH | IMAP_ST_AUTH | IMAP_ST_SELECTED)

/* Command flags in the table. */
enum {
	IMAP_CMD_BLOCKING = 1 << 0,   /* runs on the pool: uses the store */
	IMAP_CMD_NO_EXPUNGE = 1 << 1, /* untagged EXPUNGE may not follow (RFC 9051 7.5.1:
					 FETCH, STORE, SEARCH; not their UID forms) */
	IMAP_CMD_READ_WRITE = 1 << 2, /* refused with NO when the mailbox was EXAMINEd */
	IMAP_CMD_UID_OK = 1 << 3,     /* has a UID form */
};

struct imap_session;
struct imap_cmd;

enum imap_cmd_result {
	IMAP_CMD_DONE,
	IMAP_CMD_MORE,
	IMAP_CMD_PENDING, /* inline handlers only: waits for imap_session_resume() (below) */
};

/* A handler: reads c->parsed, writes untagged responses to c->out and ends with
 * imap_cmd_ok/no/bad (exactly once, when it returns IMAP_CMD_DONE).  IMAP_CMD_MORE:
 * c->out is sent and the handler is called again (from the same kind of thread) once
 * the client has taken it, with its progress kept in c->state. */
typedef enum imap_cmd_result imap_cmd_fn(struct imap_session *s, struct imap_cmd *c);

struct imap_cmd_def {
	const char *name;
	imap_cmd_fn *fn;
	unsigned states;               /* IMAP_ST_* where it is allowed */
	unsigned flags;                /* IMAP_CMD_* */
};

struct imap_cmd {
	struct imap_command parsed;    /* tag, name, uid, args */
	const struct imap_cmd_def *def;
	struct buf out;                /* untagged responses, then the tagged one */
	int done;                      /* the tagged response was written */
	char result[4];                /* "OK", "NO", "BAD" once done (for the log) */
	void *state;                   /* the handler's progress between IMAP_CMD_MORE steps */
	void (*state_free)(void *state); /* frees state if the session dies mid-command */
};

/* The selected mailbox as this session has announced it: sequence number n is msgs[n-1].
 * Only imap_view.c changes it. */
struct imap_view {
	struct mstore_box *box;
	char name[MSTORE_NAME_MAX];
	int readonly;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;        /* as announced to the client */
	struct mstore_msg *msgs;
	size_t n, cap;
	/* Learned from the store but not yet announced (an expunge cannot be announced
	 * during FETCH/STORE/SEARCH): UIDs gone, ascending. */
	uint32_t *gone;
	size_t n_gone;
	/* While not NULL, msgs belongs to this list shared with other sessions and must
	 * not be written: imap_view_writable() makes the view's own copy first. */
	struct imap_snapshot *shared;
};

struct imap_session {
	struct imap_server *srv;
	struct conn *conn;
	const struct conn_info *info;
	enum imap_state state;
	char user[256];                /* login name, once logged in */
	char domain[256], localpart[256]; /* the mail store's location */
	struct mstore *store;          /* once logged in */
	struct imap_view view;         /* when SELECTED */
	/* ENABLEd or implied extensions. */
	int utf8_accept;               /* UTF8=ACCEPT: names and strings in UTF-8 */
	int imap4rev2;                 /* ENABLE IMAP4rev2: rev2 response forms (ESEARCH...) */
	int condstore;                 /* CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), or a
					  command with a MODSEQ item) */
	int qresync;
	int errors;                    /* BAD answers so far */
	struct imap_cmd *cmd;          /* the command running, or NULL */
	/* private to imap_session.c and imap_auth.c beyond this point */
	void *priv;
};

/* ---- helpers for handlers (imap_session.c) -------------------------------------------- */

/* Append to c->out.  imap_out: formatted text (no CRLF added); imap_out_untagged:
 * "* " + text + CRLF; imap_out_string/nstring: an IMAP string or literal of the data
 * (8-bit as quoted UTF-8 only when s->utf8_accept). */
void imap_out(struct imap_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_out_untagged(struct imap_cmd *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void imap_out_data(struct imap_cmd *c, const void *data, size_t len);
void imap_out_string(struct imap_session *s, struct imap_cmd *c, const char *str, size_t len);
void imap_out_nstring(struct imap_session *s, struct imap_cmd *c, const char *str_or_null,
		      size_t len);
/* The tagged end of the command: "TAG OK text", "TAG NO text", "TAG BAD text" (text may
 * start with a response code "[...]").  NO and BAD are logged with the command. */
void imap_cmd_ok(struct imap_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_cmd_no(struct imap_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_cmd_bad(struct imap_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* NO for a store failure, worded for the client from the status ([TRYCREATE] for
 * MSTORE_NOT_FOUND where the caller says so, [OVERQUOTA]/[LIMIT], [SERVERBUG] for IO...),
 * and a log line with the store's error. */
void imap_cmd_store_error(struct imap_session *s, struct imap_cmd *c, int status,
			  const char *error, int trycreate);
/* A mailbox name argument decoded to the store's UTF-8 form (mUTF-7 unless
 * s->utf8_accept); "INBOX" in any case becomes "INBOX".  0, or -1 (not a valid name). */
int imap_mailbox_arg(struct imap_session *s, const struct imap_arg *arg, char out[MSTORE_NAME_MAX]);
/* Writes a store name as the client expects it (mUTF-7 or UTF-8), as an IMAP string. */
void imap_out_mailbox(struct imap_session *s, struct imap_cmd *c, const char *name);
/* The session's log line helper: "sid=... user=... <text>". */
void imap_session_log(struct imap_session *s, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- the selected mailbox (imap_view.c) ----------------------------------------------- */

/* Opens the mailbox (SELECT/EXAMINE) and fills the view; the caller writes the SELECT
 * responses.  An MSTORE_* status and *error_r. */
int imap_view_open(struct imap_session *s, const char *name, int readonly, const char **error_r);
void imap_view_close(struct imap_session *s);
/* Takes in changes from the store (new mail, other sessions' flag changes and
 * expunges) and writes the untagged updates the client is owed to c->out: EXPUNGE (or
 * VANISHED under QRESYNC) when allow_expunge, else they wait in view.gone; EXISTS;
 * FETCH (FLAGS [MODSEQ]) for changed flags.  Called by the session after every command
 * in the SELECTED state and from IDLE; handlers that change the store call it too, to
 * announce their own changes.  MSTORE_OK or a failure (then the session says BYE). */
int imap_view_sync(struct imap_session *s, struct imap_cmd *c, int allow_expunge);
/* Makes view.msgs the session's own (copied from the shared list) before a change.
 * 0, or -1 when out of memory (the caller leaves the view as it is). */
int imap_view_writable(struct imap_session *s);
/* Sequence number (1-based) of uid in the view, 0 when not there. */
uint32_t imap_view_seq(const struct imap_session *s, uint32_t uid);
/* The messages a sequence set or UID set argument names, as indexes into view.msgs
 * (ascending); "*" is the last message (or UIDNEXT-1 for an empty box with UIDs).  0,
 * or -1 for a bad set (then the caller answers BAD).  *idx_r is the caller's (free()). */
int imap_view_set(struct imap_session *s, const char *set, size_t len, int uid,
		  size_t **idx_r, size_t *n_r);
/* Writes " FLAGS (\Seen ... keyword)" contents for a message (without the FLAGS word). */
void imap_view_flags(struct imap_session *s, struct imap_cmd *c, const struct mstore_msg *m);
/* Parses a flag list ("(\Seen \Flagged $Label1)" or a single flag) into system flags and
 * a space-separated keyword string (buffer of cap bytes).  0, or -1 for an unknown
 * system flag / bad syntax (\Recent may not be set). */
int imap_flags_parse(const struct imap_arg *arg, uint32_t *flags_r, char *keywords,
		     size_t cap);

/* ---- command handlers (one file per family) ------------------------------------------- */

/* imap_auth.c */
imap_cmd_fn imap_cmd_capability, imap_cmd_noop, imap_cmd_logout, imap_cmd_starttls,
	imap_cmd_login, imap_cmd_authenticate, imap_cmd_enable, imap_cmd_id, imap_cmd_namespace;
/* imap_mailbox.c */
imap_cmd_fn imap_cmd_select, imap_cmd_create, imap_cmd_delete, imap_cmd_rename,
	imap_cmd_subscribe, imap_cmd_list, imap_cmd_lsub, imap_cmd_status, imap_cmd_append,
	imap_cmd_check, imap_cmd_close, imap_cmd_unselect, imap_cmd_idle;
/* imap_fetch.c */
imap_cmd_fn imap_cmd_fetch;
/* imap_search.c */
imap_cmd_fn imap_cmd_search;
/* imap_store.c */
imap_cmd_fn imap_cmd_store, imap_cmd_copy, imap_cmd_expunge;

/* The command table (imap_commands.c): NULL when name is unknown. */
const struct imap_cmd_def *imap_command_find(const char *name);
/* The CAPABILITY list for the session's state (imap_auth.c), without "* CAPABILITY". */
void imap_capabilities(struct imap_session *s, struct buf *out);

/* ---- additions: the server and the session's services (imap_session.c) -------------- */

struct counter_table;

struct imap_server {
	struct event_base *base;
	struct pool *pool;
	struct imap_settings set;      /* the strings point at hostname and mail_root */
	char hostname[256];
	char mail_root[4096];
	struct ssl_ctx_st *ssl_ctx;    /* NULL: no STARTTLS */
	struct imap_callbacks cb;
	struct counter_table *auth_failures;
	int own_auth_failures;
	struct conn_server *conns;
	struct imap_snapshots *snapshots; /* message lists shared by the sessions */
	struct watcher *watcher;       /* IDLE's change notification; NULL: IDLE polls */
	int n_sessions;
	int freeing;                   /* imap_server_free() ran: the last session frees it */
};

/* State changes, logged old -> new.  Any thread that runs the session's command. */
void imap_session_set_state(struct imap_session *s, enum imap_state state);
/* Asynchronous steps of inline handlers (loop thread).  A handler that returns
 * IMAP_CMD_PENDING is called again (c->state keeps its progress) when one of these
 * completes:
 *   - its own callback calls imap_session_resume(s) (e.g. the login callback's done);
 *   - imap_session_run_blocking(s, work, arg): work(arg) ran on the pool;
 *   - imap_session_want_line(s): c->out (the "+ ..." continuation) was sent and the
 *     client's next line arrived: imap_session_line(s) (borrowed until the handler
 *     returns; wiped afterwards).
 * imap_session_run_blocking returns 0, or -1 (then the handler answers and returns DONE). */
void imap_session_resume(struct imap_session *s);
int imap_session_run_blocking(struct imap_session *s, void (*work)(void *arg), void *arg);
void imap_session_want_line(struct imap_session *s);
struct slice imap_session_line(const struct imap_session *s);
/* STARTTLS: the handshake starts once the tagged OK of the running command is sent. */
void imap_session_start_tls(struct imap_session *s);

/* (imap_view.c) A handler's own flag changes (STORE results, mstore_box_store's changed
 * messages): the view takes their flags so that the next imap_view_sync() does not
 * announce them again (the handler writes its own FETCH responses). */
void imap_view_update(struct imap_session *s, const struct mstore_msg *msgs, size_t n);

/* ---- view and set helpers for STORE, EXPUNGE, MOVE, FETCH (imap_store.c) -------------- */

/* Removes this session's own expunges (uids ascending, from mstore_box_expunge or a
 * MOVE) from the view and writes "* n EXPUNGE" for each (highest first, so every
 * number is right when it is read) or one "* VANISHED uids" under QRESYNC.  UIDs not in
 * the view are ignored; imap_view_sync must likewise ignore expunged UIDs it no longer
 * has. */
void imap_view_expunged(struct imap_session *s, struct imap_cmd *c, const uint32_t *uids,
			size_t n);
/* ---- message lists shared by a worker's sessions (imap_snapshot.c) ------------------- */

struct imap_snapshot;
struct imap_snapshots;
struct imap_snapshots *imap_snapshots_new(void);
void imap_snapshots_free(struct imap_snapshots **c);
/* The message list of box as of its last sync (what mstore_box_load gives), shared
 * with the other sessions of this worker that see the mailbox of owner ("domain/user")
 * in the same state.  *msgs_r is read-only and valid while *snap_r is held.  Any
 * thread.  MSTORE_OK or a failure. */
int imap_snapshot_get(struct imap_snapshots *c, const char *owner, struct mstore_box *box,
		      struct imap_snapshot **snap_r, const struct mstore_msg **msgs_r, size_t *n_r,
		      const char **error_r);
void imap_snapshot_release(struct imap_snapshots *c, struct imap_snapshot **snap);

/* (imap_search.c) Builds into b the decoded header fields SEARCH matches (sent date,
 * From, To, Cc, Bcc, Subject) from msg's header block [0, hend) and caches them for
 * message uid (imap_cache_put).  FETCH calls it when it reads a
 * header for ENVELOPE anyway.  0 or -1 (out of memory). */
int imap_search_fields_cache(struct imap_session *s, uint32_t uid, const char *msg,
			     size_t hend, struct buf *b);

/* 1 when uid is among v[0..n) (ascending): binary search. */
int imap_uid_listed(const uint32_t *v, size_t n, uint32_t uid);
/* Appends numbers (ascending) to out as a compressed set: "1:3,7,9:10". */
void imap_out_set(struct buf *out, const uint32_t *v, size_t n);

/* mstore_box_cache_put of a derived string (imap_fetch.c), as best effort: a failure
 * only costs a later command the computation. */
void imap_cache_put(struct imap_session *s, uint32_t uid, const char *field, const char *value,
		    size_t len);

#endif
