/* The SQLite backend of store/mail_index.h: one database per user (index.db in the
 * user's maildir), WAL so that readers never wait for the writer, and every statement
 * prepared once per connection. */
#include "store/mail_index.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAIL_INDEX_SCHEMA_VERSION 4 /* 3: no msgsnap (list files instead); 4: bulk rows,
				     * partial base and modseq indexes */
/* Rows per statement of msg_insert_many: one statement per row costs more in
 * SQLite's statement machinery than the row itself. */
#define MAIL_INDEX_INSERT_ROWS 64
/* Long enough for a writer importing a large new/ (or an fsync on a slow disk) to
 * finish; IMAP clients wait longer than this before they give up. */
#define MAIL_INDEX_BUSY_MS 10000

static _Thread_local char mail_index_errbuf[1024];

enum mail_index_stmt {
	S_BEGIN_R,
	S_BEGIN_W,
	S_COMMIT,
	S_ROLLBACK,
	S_META_GET,
	S_META_SET,
	S_BOX_GET,
	S_BOX_GET_ID,
	S_BOX_LIST,
	S_BOX_INSERT,
	S_BOX_UPDATE,
	S_BOX_DROP,
	S_CLEAR_MSGS,
	S_CLEAR_EXPUNGED,
	S_CLEAR_KEYWORDS,
	S_CLEAR_CACHE,
	S_MOVE_MSGS,
	S_MOVE_KEYWORDS,
	S_MOVE_CACHE,
	S_MSG_INSERT,
	S_MSG_INSERT_MANY,
	S_MSG_RANGE,
	S_MSG_MODSEQ,
	S_MSG_MODSEQ_ALL,
	S_MSG_BY_BASE,
	S_MSG_FIND_BASE,
	S_MSG_FIRST_FROM,
	S_MSG_SET_FLAGS,
	S_MSG_DELETE,
	S_MSG_CACHE_DELETE,
	S_EXP_INSERT,
	S_EXP_LIST,
	S_EXP_PRUNE,
	S_KW_GET,
	S_KW_ADD,
	S_CACHE_GET,
	S_CACHE_SCAN,
	S_CACHE_PUT,
	S_CACHE_COPY,
	S_SUB_ADD,
	S_SUB_DEL,
	S_SUB_LIST,
	S_COUNT
};

#define BOX_COLS                                                                           \
	"id, name, special, noselect, uidvalidity, uidnext, highestmodseq, expunged_floor, " \
	"cur_mtime, messages, unseen, deleted, size"
#define MSG_COLS "uid, flags, keywords, modseq, size, internaldate, tz, base"

static const char *const mail_index_sql[S_COUNT] = {
	[S_BEGIN_R] = "BEGIN",
	[S_BEGIN_W] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[S_META_SET] = "INSERT INTO meta(key, value) VALUES(?1, ?2) "
		       "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	[S_BOX_GET] = "SELECT " BOX_COLS " FROM mailboxes WHERE name = ?1",
	[S_BOX_GET_ID] = "SELECT " BOX_COLS " FROM mailboxes WHERE id = ?1",
	[S_BOX_LIST] = "SELECT m.id, m.name, m.special, m.noselect, m.uidvalidity, m.uidnext, "
		       "m.highestmodseq, m.expunged_floor, m.cur_mtime, m.messages, m.unseen, "
		       "m.deleted, m.size, s.name IS NOT NULL FROM mailboxes m "
		       "LEFT JOIN subscriptions s ON s.name = m.name ORDER BY m.name",
	[S_BOX_INSERT] = "INSERT INTO mailboxes(name, special, noselect, uidvalidity, uidnext, "
			 "highestmodseq, expunged_floor, cur_mtime, messages, unseen, deleted, "
			 "size) VALUES(?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
	[S_BOX_UPDATE] = "UPDATE mailboxes SET name = ?2, special = ?3, noselect = ?4, "
			 "uidvalidity = ?5, uidnext = ?6, highestmodseq = ?7, "
			 "expunged_floor = ?8, cur_mtime = ?9, messages = ?10, unseen = ?11, "
			 "deleted = ?12, size = ?13 WHERE id = ?1",
	[S_BOX_DROP] = "DELETE FROM mailboxes WHERE id = ?1",
	[S_CLEAR_MSGS] = "DELETE FROM messages WHERE mailbox = ?1",
	[S_CLEAR_EXPUNGED] = "DELETE FROM expunged WHERE mailbox = ?1",
	[S_CLEAR_KEYWORDS] = "DELETE FROM keywords WHERE mailbox = ?1",
	[S_CLEAR_CACHE] = "DELETE FROM cache WHERE mailbox = ?1",
	[S_MOVE_MSGS] = "UPDATE messages SET mailbox = ?2 WHERE mailbox = ?1",
	[S_MOVE_KEYWORDS] = "UPDATE keywords SET mailbox = ?2 WHERE mailbox = ?1",
	[S_MOVE_CACHE] = "UPDATE cache SET mailbox = ?2 WHERE mailbox = ?1",
	[S_MSG_INSERT] = "INSERT INTO messages(mailbox, uid, flags, keywords, modseq, size, "
			 "internaldate, tz, base, bulk) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
			 "?10)",
	[S_MSG_RANGE] = "SELECT " MSG_COLS " FROM messages WHERE mailbox = ?1 AND "
			"uid BETWEEN ?2 AND ?3 AND (flags & ?4) = ?4 ORDER BY uid",
	[S_MSG_INSERT_MANY] = NULL, /* built by mail_index_insert_many_sql */
	/* The modseq index: a CONDSTORE client asks for the few changes since its last
	 * visit, which must not cost a scan of the whole mailbox.  The index leaves out
	 * the first import (see the schema): "modseq > 2" lets SQLite use it. */
	[S_MSG_MODSEQ] = "SELECT " MSG_COLS " FROM messages INDEXED BY messages_changes "
			 "WHERE mailbox = ?1 AND modseq BETWEEN ?2 AND ?3 AND modseq > 2 "
			 "ORDER BY uid",
	[S_MSG_MODSEQ_ALL] = "SELECT " MSG_COLS " FROM messages WHERE mailbox = ?1 AND "
			     "modseq BETWEEN ?2 AND ?3 ORDER BY uid",
	[S_MSG_BY_BASE] = "SELECT " MSG_COLS " FROM messages WHERE mailbox = ?1 ORDER BY base",
	[S_MSG_FIND_BASE] = "SELECT " MSG_COLS " FROM messages WHERE mailbox = ?1 AND base = ?2 "
			    "AND bulk = 0",
	[S_MSG_FIRST_FROM] = "SELECT " MSG_COLS ", bulk FROM messages WHERE mailbox = ?1 AND "
			     "uid >= ?2 ORDER BY uid LIMIT 1",
	[S_MSG_SET_FLAGS] = "UPDATE messages SET flags = ?3, keywords = ?4, modseq = ?5 "
			    "WHERE mailbox = ?1 AND uid = ?2",
	[S_MSG_DELETE] = "DELETE FROM messages WHERE mailbox = ?1 AND uid = ?2",
	[S_MSG_CACHE_DELETE] = "DELETE FROM cache WHERE mailbox = ?1 AND uid = ?2",
	[S_EXP_INSERT] = "INSERT OR REPLACE INTO expunged(mailbox, uid, modseq) VALUES(?1, ?2, ?3)",
	[S_EXP_LIST] = "SELECT uid FROM expunged WHERE mailbox = ?1 AND modseq > ?2 AND "
		       "modseq <= ?3 ORDER BY uid",
	[S_EXP_PRUNE] = "DELETE FROM expunged WHERE mailbox = ?1 AND modseq <= ?2",
	[S_KW_GET] = "SELECT idx, name FROM keywords WHERE mailbox = ?1 ORDER BY idx",
	[S_KW_ADD] = "INSERT INTO keywords(mailbox, idx, name) VALUES(?1, ?2, ?3)",
	[S_CACHE_GET] = "SELECT value FROM cache WHERE mailbox = ?1 AND uid = ?2 AND field = ?3",
	[S_CACHE_SCAN] = "SELECT uid, value FROM cache WHERE mailbox = ?1 AND field = ?2 "
			 "ORDER BY uid",
	/* Only for a message that exists, so that nothing outlives its message. */
	[S_CACHE_PUT] = "INSERT OR REPLACE INTO cache(mailbox, uid, field, value) "
			"SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM messages "
			"WHERE mailbox = ?1 AND uid = ?2)",
	[S_CACHE_COPY] = "INSERT OR REPLACE INTO cache(mailbox, uid, field, value) "
			 "SELECT ?3, ?4, field, value FROM cache WHERE mailbox = ?1 AND uid = ?2",
	[S_SUB_ADD] = "INSERT OR IGNORE INTO subscriptions(name) VALUES(?1)",
	[S_SUB_DEL] = "DELETE FROM subscriptions WHERE name = ?1",
	[S_SUB_LIST] = "SELECT name FROM subscriptions ORDER BY name",
};

static const char mail_index_schema[] =
	"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) "
	"WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS mailboxes ("
	" id INTEGER PRIMARY KEY,"
	" name TEXT NOT NULL UNIQUE,"
	" special INTEGER NOT NULL DEFAULT 0,"
	" noselect INTEGER NOT NULL DEFAULT 0,"
	" uidvalidity INTEGER NOT NULL,"
	" uidnext INTEGER NOT NULL,"
	" highestmodseq INTEGER NOT NULL,"
	" expunged_floor INTEGER NOT NULL DEFAULT 0,"
	" cur_mtime INTEGER NOT NULL,"
	" messages INTEGER NOT NULL DEFAULT 0,"
	" unseen INTEGER NOT NULL DEFAULT 0,"
	" deleted INTEGER NOT NULL DEFAULT 0,"
	" size INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS messages ("
	" mailbox INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" flags INTEGER NOT NULL,"
	" keywords INTEGER NOT NULL,"
	" modseq INTEGER NOT NULL,"
	" size INTEGER NOT NULL,"
	" internaldate INTEGER NOT NULL,"
	" tz INTEGER NOT NULL,"
	" base TEXT NOT NULL,"
	" bulk INTEGER NOT NULL DEFAULT 0,"
	" PRIMARY KEY (mailbox, uid)) WITHOUT ROWID;"
	/* One row per file: a second delivery of the same maildir name is a duplicate.
	 * Bulk rows are what a scan of cur/ found for a mailbox without rows: their UIDs
	 * follow their bases, and every later row has a higher UID, so a search by UID
	 * finds a base among them (msg_find_base) and they need no entry here; at 100,000
	 * messages this index was a third of the time of a first SELECT. */
	"DROP INDEX IF EXISTS messages_base;"
	"CREATE UNIQUE INDEX IF NOT EXISTS messages_file ON messages(mailbox, base) "
	"WHERE bulk = 0;"
	/* By MODSEQ, for CONDSTORE and list files, but without the rows of a mailbox's
	 * first import: a new mailbox starts at HIGHESTMODSEQ 1, so the messages its first
	 * sync finds get MODSEQ 2, and at 100,000 messages this index's share of the
	 * import is a fifth of its time.  "Changed since 2 or later" never wants them;
	 * "since 1" wants (nearly) everything, which a scan gives as well. */
	"DROP INDEX IF EXISTS messages_modseq;"
	"CREATE INDEX IF NOT EXISTS messages_changes ON messages(mailbox, modseq) "
	"WHERE modseq > 2;"
	"CREATE TABLE IF NOT EXISTS expunged ("
	" mailbox INTEGER NOT NULL, uid INTEGER NOT NULL, modseq INTEGER NOT NULL,"
	" PRIMARY KEY (mailbox, uid)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS keywords ("
	" mailbox INTEGER NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL,"
	" PRIMARY KEY (mailbox, idx)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS cache ("
	" mailbox INTEGER NOT NULL, uid INTEGER NOT NULL, field TEXT NOT NULL, value BLOB,"
	" PRIMARY KEY (mailbox, uid, field)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY) WITHOUT ROWID;"
	"DROP TABLE IF EXISTS msgsnap;";

struct mail_index_sqlite {
	struct mail_index ix; /* first: the ops pointer mstore sees */
	sqlite3 *db;
	sqlite3_stmt *stmts[S_COUNT];
	char path[4096];
};

#define SQ(ix) ((struct mail_index_sqlite *)(ix))

static int mail_index_fail(struct mail_index_sqlite *sq, const char **error_r, const char *what)
{
	snprintf(mail_index_errbuf, sizeof(mail_index_errbuf), "index %s: %s: %s", sq->path, what,
		 sq->db != NULL ? sqlite3_errmsg(sq->db) : "out of memory");
	if (error_r != NULL)
		*error_r = mail_index_errbuf;
	return -1;
}

/* The INSERT of MAIL_INDEX_INSERT_ROWS rows (the parameters of S_MSG_INSERT, in turn). */
/* The INSERT of MAIL_INDEX_INSERT_ROWS rows: mailbox ?1 and bulk ?2 for all, then the
 * other eight columns of S_MSG_INSERT of each row in turn. */
static void mail_index_insert_many_sql(char *out, size_t cap)
{
	size_t len = (size_t)snprintf(out, cap, "INSERT INTO messages(mailbox, uid, flags, "
					  "keywords, modseq, size, internaldate, tz, base, bulk) "
					  "VALUES");
	for (int i = 0; i < MAIL_INDEX_INSERT_ROWS && len < cap; i++) {
		int p = 3 + i * 8;
		len += (size_t)snprintf(out + len, cap - len,
					"%s(?1,?%d,?%d,?%d,?%d,?%d,?%d,?%d,?%d,?2)", i > 0 ? "," : "",
					p, p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7);
	}
}

/* The cached statement for id, reset and with no bindings, or NULL (error set). */
static sqlite3_stmt *mail_index_stmt(struct mail_index_sqlite *sq, enum mail_index_stmt id,
				     const char **error_r)
{
	if (sq->stmts[id] == NULL) {
		char many[MAIL_INDEX_INSERT_ROWS * 48 + 160];
		const char *sql = mail_index_sql[id];
		if (id == S_MSG_INSERT_MANY) {
			mail_index_insert_many_sql(many, sizeof(many));
			sql = many;
		}
		if (sqlite3_prepare_v3(sq->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
				       &sq->stmts[id], NULL) != SQLITE_OK) {
			mail_index_fail(sq, error_r, "prepare");
			return NULL;
		}
	}
	return sq->stmts[id];
}

/* Ends a use of a cached statement: a statement left unreset would hold its read
 * snapshot open and block checkpoints. */
static void mail_index_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Runs a statement that returns no rows.  0 or -1. */
static int mail_index_exec_stmt(struct mail_index_sqlite *sq, sqlite3_stmt *s, const char *what,
				const char **error_r)
{
	int rc = sqlite3_step(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		mail_index_fail(sq, error_r, what);
		mail_index_done(s);
		return -1;
	}
	mail_index_done(s);
	return 0;
}

/* A statement of one int64 parameter and no rows (the clear and move family). */
static int mail_index_exec_ids(struct mail_index_sqlite *sq, enum mail_index_stmt id, int64_t a,
			       int64_t b, int nparams, const char **error_r)
{
	sqlite3_stmt *s = mail_index_stmt(sq, id, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, a);
	if (nparams > 1)
		sqlite3_bind_int64(s, 2, b);
	return mail_index_exec_stmt(sq, s, mail_index_sql[id], error_r);
}

static void mail_index_close(struct mail_index *ix)
{
	struct mail_index_sqlite *sq = SQ(ix);
	for (size_t i = 0; i < S_COUNT; i++)
		sqlite3_finalize(sq->stmts[i]);
	sqlite3_close(sq->db);
	free(sq);
}

static int mail_index_begin(struct mail_index *ix, int write, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, write ? S_BEGIN_W : S_BEGIN_R, error_r);
	if (s == NULL)
		return -1;
	return mail_index_exec_stmt(sq, s, write ? "begin immediate" : "begin", error_r);
}

static int mail_index_commit(struct mail_index *ix, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_COMMIT, error_r);
	if (s == NULL)
		return -1;
	if (mail_index_exec_stmt(sq, s, "commit", error_r) < 0) {
		if (!sqlite3_get_autocommit(sq->db))
			sqlite3_exec(sq->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static void mail_index_rollback(struct mail_index *ix)
{
	struct mail_index_sqlite *sq = SQ(ix);
	/* After some errors SQLite has already rolled back by itself. */
	if (sqlite3_get_autocommit(sq->db))
		return;
	sqlite3_stmt *s = mail_index_stmt(sq, S_ROLLBACK, NULL);
	if (s != NULL)
		mail_index_exec_stmt(sq, s, "rollback", NULL);
}

static int mail_index_meta_get(struct mail_index_sqlite *sq, const char *key, int64_t *value_r,
			       const char **error_r)
{
	sqlite3_stmt *s = mail_index_stmt(sq, S_META_GET, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	*value_r = 0;
	if (rc == SQLITE_ROW)
		*value_r = sqlite3_column_int64(s, 0);
	else if (rc != SQLITE_DONE) {
		mail_index_fail(sq, error_r, "read meta");
		mail_index_done(s);
		return -1;
	}
	mail_index_done(s);
	return 0;
}

static int mail_index_uidvalidity_last(struct mail_index *ix, uint32_t *uidvalidity_r,
				       const char **error_r)
{
	int64_t v;
	if (mail_index_meta_get(SQ(ix), "uidvalidity", &v, error_r) < 0)
		return -1;
	*uidvalidity_r = v < 0 || v > UINT32_MAX ? 0 : (uint32_t)v;
	return 0;
}

static int mail_index_uidvalidity_next(struct mail_index *ix, uint32_t floor,
				       uint32_t *uidvalidity_r, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	uint32_t last;
	if (mail_index_uidvalidity_last(ix, &last, error_r) < 0)
		return -1;
	uint32_t v = floor > last ? floor : last + 1;
	if (v == 0)
		v = 1; /* UIDVALIDITY is nonzero (RFC 9051 2.3.1.1); wraps in 2106 */
	sqlite3_stmt *s = mail_index_stmt(sq, S_META_SET, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, "uidvalidity", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, v);
	if (mail_index_exec_stmt(sq, s, "write meta", error_r) < 0)
		return -1;
	*uidvalidity_r = v;
	return 0;
}

static void mail_index_box_read(sqlite3_stmt *s, struct mail_index_box *b)
{
	memset(b, 0, sizeof(*b));
	b->id = sqlite3_column_int64(s, 0);
	const unsigned char *name = sqlite3_column_text(s, 1);
	snprintf(b->name, sizeof(b->name), "%s", name != NULL ? (const char *)name : "");
	b->special = (unsigned)sqlite3_column_int64(s, 2);
	b->noselect = sqlite3_column_int(s, 3) != 0;
	b->uidvalidity = (uint32_t)sqlite3_column_int64(s, 4);
	b->uidnext = (uint32_t)sqlite3_column_int64(s, 5);
	b->highestmodseq = (uint64_t)sqlite3_column_int64(s, 6);
	b->expunged_floor = (uint64_t)sqlite3_column_int64(s, 7);
	b->cur_mtime = sqlite3_column_int64(s, 8);
	b->messages = (uint32_t)sqlite3_column_int64(s, 9);
	b->unseen = (uint32_t)sqlite3_column_int64(s, 10);
	b->deleted = (uint32_t)sqlite3_column_int64(s, 11);
	b->size = (uint64_t)sqlite3_column_int64(s, 12);
}

static int mail_index_box_get_stmt(struct mail_index_sqlite *sq, sqlite3_stmt *s,
				   struct mail_index_box *box_r, const char **error_r)
{
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW) {
		mail_index_box_read(s, box_r);
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		ret = mail_index_fail(sq, error_r, "read mailbox");
	}
	mail_index_done(s);
	return ret;
}

static int mail_index_box_get(struct mail_index *ix, const char *name,
			      struct mail_index_box *box_r, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_BOX_GET, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	return mail_index_box_get_stmt(sq, s, box_r, error_r);
}

static int mail_index_box_get_id(struct mail_index *ix, int64_t id, struct mail_index_box *box_r,
				 const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_BOX_GET_ID, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	return mail_index_box_get_stmt(sq, s, box_r, error_r);
}

static int mail_index_box_list(struct mail_index *ix, struct mail_index_box **boxes_r,
			       size_t *n_r, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_BOX_LIST, error_r);
	if (s == NULL)
		return -1;
	struct mail_index_box *boxes = NULL;
	size_t n = 0, cap = 0;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap == 0 ? 16 : cap * 2;
			struct mail_index_box *nb = realloc(boxes, ncap * sizeof(*nb));
			if (nb == NULL) {
				rc = SQLITE_NOMEM;
				break;
			}
			boxes = nb;
			cap = ncap;
		}
		mail_index_box_read(s, &boxes[n]);
		boxes[n].subscribed = sqlite3_column_int(s, 13) != 0;
		n++;
	}
	if (rc != SQLITE_DONE) {
		mail_index_fail(sq, error_r, "list mailboxes");
		mail_index_done(s);
		free(boxes);
		return -1;
	}
	mail_index_done(s);
	*boxes_r = boxes;
	*n_r = n;
	return 0;
}

static void mail_index_box_bind(sqlite3_stmt *s, const struct mail_index_box *b)
{
	sqlite3_bind_int64(s, 1, b->id);
	sqlite3_bind_text(s, 2, b->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, b->special);
	sqlite3_bind_int(s, 4, b->noselect != 0);
	sqlite3_bind_int64(s, 5, b->uidvalidity);
	sqlite3_bind_int64(s, 6, b->uidnext);
	sqlite3_bind_int64(s, 7, (sqlite3_int64)b->highestmodseq);
	sqlite3_bind_int64(s, 8, (sqlite3_int64)b->expunged_floor);
	sqlite3_bind_int64(s, 9, b->cur_mtime);
	sqlite3_bind_int64(s, 10, b->messages);
	sqlite3_bind_int64(s, 11, b->unseen);
	sqlite3_bind_int64(s, 12, b->deleted);
	sqlite3_bind_int64(s, 13, (sqlite3_int64)b->size);
}

static int mail_index_box_insert(struct mail_index *ix, struct mail_index_box *box,
				 const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_BOX_INSERT, error_r);
	if (s == NULL)
		return -1;
	mail_index_box_bind(s, box);
	if (mail_index_exec_stmt(sq, s, "insert mailbox", error_r) < 0)
		return -1;
	box->id = sqlite3_last_insert_rowid(sq->db);
	return 0;
}

static int mail_index_box_update(struct mail_index *ix, const struct mail_index_box *box,
				 const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_BOX_UPDATE, error_r);
	if (s == NULL)
		return -1;
	mail_index_box_bind(s, box);
	return mail_index_exec_stmt(sq, s, "update mailbox", error_r);
}

static int mail_index_box_clear(struct mail_index *ix, int64_t id, int drop, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	if (mail_index_exec_ids(sq, S_CLEAR_MSGS, id, 0, 1, error_r) < 0 ||
	    mail_index_exec_ids(sq, S_CLEAR_EXPUNGED, id, 0, 1, error_r) < 0 ||
	    mail_index_exec_ids(sq, S_CLEAR_KEYWORDS, id, 0, 1, error_r) < 0 ||
	    mail_index_exec_ids(sq, S_CLEAR_CACHE, id, 0, 1, error_r) < 0)
		return -1;
	if (drop && mail_index_exec_ids(sq, S_BOX_DROP, id, 0, 1, error_r) < 0)
		return -1;
	return 0;
}

static int mail_index_box_move_messages(struct mail_index *ix, int64_t from, int64_t to,
					const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	if (mail_index_exec_ids(sq, S_MOVE_MSGS, from, to, 2, error_r) < 0 ||
	    mail_index_exec_ids(sq, S_CLEAR_KEYWORDS, to, 0, 1, error_r) < 0 ||
	    mail_index_exec_ids(sq, S_MOVE_KEYWORDS, from, to, 2, error_r) < 0 ||
	    mail_index_exec_ids(sq, S_MOVE_CACHE, from, to, 2, error_r) < 0)
		return -1;
	return 0;
}

/* Binds msg's uid ... base (eight parameters) from parameter first on. */
static void mail_index_msg_bind(sqlite3_stmt *s, int first, const struct mail_index_msg *msg)
{
	sqlite3_bind_int64(s, first, msg->m.uid);
	sqlite3_bind_int64(s, first + 1, msg->m.flags);
	sqlite3_bind_int64(s, first + 2, (sqlite3_int64)msg->m.keywords);
	sqlite3_bind_int64(s, first + 3, (sqlite3_int64)msg->m.modseq);
	sqlite3_bind_int64(s, first + 4, (sqlite3_int64)msg->m.size);
	sqlite3_bind_int64(s, first + 5, msg->m.internaldate);
	sqlite3_bind_int(s, first + 6, msg->m.internaldate_tz);
	sqlite3_bind_text(s, first + 7, msg->base, msg->base_len > 0 ? (int)msg->base_len : -1,
			  SQLITE_STATIC);
}

static int mail_index_insert_one(struct mail_index_sqlite *sq, int64_t box,
				 const struct mail_index_msg *msg, int bulk, const char **error_r)
{
	sqlite3_stmt *s = mail_index_stmt(sq, S_MSG_INSERT, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	mail_index_msg_bind(s, 2, msg);
	sqlite3_bind_int(s, 10, bulk);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		mail_index_done(s);
		return 0;
	}
	int ext = sqlite3_extended_errcode(sq->db);
	mail_index_fail(sq, error_r, "insert message");
	mail_index_done(s);
	return ext == SQLITE_CONSTRAINT_UNIQUE ? 1 : -1;
}

static int mail_index_msg_insert(struct mail_index *ix, int64_t box,
				 const struct mail_index_msg *msg, const char **error_r)
{
	return mail_index_insert_one(SQ(ix), box, msg, 0, error_r);
}

static int mail_index_msg_insert_many(struct mail_index *ix, int64_t box,
				      const struct mail_index_msg *msgs, size_t n, int bulk,
				      const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	size_t i = 0;
	while (n - i >= MAIL_INDEX_INSERT_ROWS) {
		sqlite3_stmt *s = mail_index_stmt(sq, S_MSG_INSERT_MANY, error_r);
		if (s == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, box);
		sqlite3_bind_int(s, 2, bulk);
		for (int r = 0; r < MAIL_INDEX_INSERT_ROWS; r++)
			mail_index_msg_bind(s, 3 + r * 8, &msgs[i + (size_t)r]);
		if (mail_index_exec_stmt(sq, s, "insert messages", error_r) < 0)
			return -1;
		i += MAIL_INDEX_INSERT_ROWS;
	}
	for (; i < n; i++) {
		int r = mail_index_insert_one(sq, box, &msgs[i], bulk, error_r);
		if (r != 0)
			return r < 0 ? -1 : mail_index_fail(sq, error_r, "insert messages");
	}
	return 0;
}

static void mail_index_msg_read(sqlite3_stmt *s, struct mail_index_msg *m)
{
	m->base_len = 0;
	m->m.uid = (uint32_t)sqlite3_column_int64(s, 0);
	m->m.flags = (uint32_t)sqlite3_column_int64(s, 1);
	m->m.keywords = (uint64_t)sqlite3_column_int64(s, 2);
	m->m.modseq = (uint64_t)sqlite3_column_int64(s, 3);
	m->m.size = (uint64_t)sqlite3_column_int64(s, 4);
	m->m.internaldate = sqlite3_column_int64(s, 5);
	m->m.internaldate_tz = sqlite3_column_int(s, 6);
	const unsigned char *base = sqlite3_column_text(s, 7);
	m->base = base != NULL ? (const char *)base : "";
}

static int mail_index_msg_each(struct mail_index *ix, int64_t box, const struct mail_index_query *q,
			       mail_index_msg_cb *cb, void *ctx, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	enum mail_index_stmt id = q->by_base	   ? S_MSG_BY_BASE :
				  !q->by_modseq	   ? S_MSG_RANGE :
				  q->modseq_min > 2 ? S_MSG_MODSEQ :
						      S_MSG_MODSEQ_ALL;
	sqlite3_stmt *s = mail_index_stmt(sq, id, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	if (id == S_MSG_RANGE) {
		sqlite3_bind_int64(s, 2, q->uid_min);
		sqlite3_bind_int64(s, 3, q->uid_max);
		sqlite3_bind_int64(s, 4, q->flags_all);
	} else if (id == S_MSG_MODSEQ || id == S_MSG_MODSEQ_ALL) {
		sqlite3_bind_int64(s, 2, (sqlite3_int64)(q->modseq_min > INT64_MAX ? INT64_MAX : q->modseq_min));
		sqlite3_bind_int64(s, 3, (sqlite3_int64)(q->modseq_max > INT64_MAX ? INT64_MAX : q->modseq_max));
	}
	int rc;
	struct mail_index_msg m;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		mail_index_msg_read(s, &m);
		if ((id == S_MSG_MODSEQ || id == S_MSG_MODSEQ_ALL) &&
		    (m.m.uid < q->uid_min || m.m.uid > q->uid_max ||
		     (m.m.flags & q->flags_all) != q->flags_all))
			continue;
		if (cb(ctx, &m) < 0) {
			mail_index_done(s);
			return -1;
		}
	}
	if (rc != SQLITE_DONE) {
		mail_index_fail(sq, error_r, "read messages");
		mail_index_done(s);
		return -1;
	}
	mail_index_done(s);
	return 0;
}

/* The bulk row of base, by a binary search over UIDs: bulk rows ascend by base with
 * their UIDs, and every other row's UID is above theirs (see the schema).  1 found,
 * 0 not, -1. */
static int mail_index_find_bulk(struct mail_index_sqlite *sq, int64_t box, const char *base,
				struct mstore_msg *msg_r, const char **error_r)
{
	sqlite3_stmt *s = mail_index_stmt(sq, S_MSG_FIRST_FROM, error_r);
	if (s == NULL)
		return -1;
	size_t blen = strlen(base);
	int64_t lo = 1, hi = UINT32_MAX;
	/* The first probe is at the lowest UID, where bulk rows are when there are any:
	 * a box without them (most) costs one probe. */
	for (int first = 1; lo <= hi; first = 0) {
		int64_t mid = first ? lo : lo + (hi - lo) / 2;
		sqlite3_bind_int64(s, 1, box);
		sqlite3_bind_int64(s, 2, mid);
		int rc = sqlite3_step(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
			mail_index_fail(sq, error_r, "find message");
			mail_index_done(s);
			return -1;
		}
		if (rc == SQLITE_DONE || sqlite3_column_int(s, 8) == 0) {
			hi = mid - 1; /* past the bulk rows */
			mail_index_done(s);
			continue;
		}
		struct mail_index_msg m;
		mail_index_msg_read(s, &m);
		int c = mail_index_base_cmp(m.base, strlen(m.base), base, blen);
		mail_index_done(s);
		if (c == 0) {
			*msg_r = m.m;
			return 1;
		}
		if (c < 0)
			lo = (int64_t)m.m.uid + 1;
		else
			hi = mid - 1;
	}
	return 0;
}

static int mail_index_msg_find_base(struct mail_index *ix, int64_t box, const char *base,
				    struct mstore_msg *msg_r, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_MSG_FIND_BASE, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_text(s, 2, base, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW) {
		struct mail_index_msg m;
		mail_index_msg_read(s, &m);
		*msg_r = m.m;
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		ret = mail_index_fail(sq, error_r, "find message");
	}
	mail_index_done(s);
	if (ret == 0)
		ret = mail_index_find_bulk(sq, box, base, msg_r, error_r);
	return ret;
}

static int mail_index_msg_set_flags(struct mail_index *ix, int64_t box, uint32_t uid,
				    uint32_t flags, uint64_t keywords, uint64_t modseq,
				    const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_MSG_SET_FLAGS, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_int64(s, 2, uid);
	sqlite3_bind_int64(s, 3, flags);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)keywords);
	sqlite3_bind_int64(s, 5, (sqlite3_int64)modseq);
	return mail_index_exec_stmt(sq, s, "update message", error_r);
}

static int mail_index_msg_expunge(struct mail_index *ix, int64_t box, uint32_t uid,
				  uint64_t modseq, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	if (mail_index_exec_ids(sq, S_MSG_DELETE, box, uid, 2, error_r) < 0 ||
	    mail_index_exec_ids(sq, S_MSG_CACHE_DELETE, box, uid, 2, error_r) < 0)
		return -1;
	sqlite3_stmt *s = mail_index_stmt(sq, S_EXP_INSERT, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_int64(s, 2, uid);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)modseq);
	return mail_index_exec_stmt(sq, s, "record expunge", error_r);
}

static int mail_index_expunged_list(struct mail_index *ix, int64_t box, uint64_t since,
				    uint64_t until, uint32_t **uids_r, size_t *n_r,
				    const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_EXP_LIST, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)(since > INT64_MAX ? INT64_MAX : since));
	sqlite3_bind_int64(s, 3, (sqlite3_int64)(until > INT64_MAX ? INT64_MAX : until));
	uint32_t *uids = NULL;
	size_t n = 0, cap = 0;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap == 0 ? 64 : cap * 2;
			uint32_t *nu = realloc(uids, ncap * sizeof(*nu));
			if (nu == NULL) {
				rc = SQLITE_NOMEM;
				break;
			}
			uids = nu;
			cap = ncap;
		}
		uids[n++] = (uint32_t)sqlite3_column_int64(s, 0);
	}
	if (rc != SQLITE_DONE) {
		mail_index_fail(sq, error_r, "list expunged");
		mail_index_done(s);
		free(uids);
		return -1;
	}
	mail_index_done(s);
	*uids_r = uids;
	*n_r = n;
	return 0;
}

static int mail_index_expunged_prune(struct mail_index *ix, int64_t box, uint64_t modseq,
				     const char **error_r)
{
	return mail_index_exec_ids(SQ(ix), S_EXP_PRUNE, box,
				   (int64_t)(modseq > INT64_MAX ? INT64_MAX : modseq), 2, error_r);
}

static int mail_index_keywords_get(struct mail_index *ix, int64_t box,
				   char (*names)[MSTORE_KEYWORD_LEN], size_t *n_r,
				   const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_KW_GET, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	size_t n = 0;
	int rc;
	/* Indexes are dense from 0 (keyword_add appends); anything else is ignored. */
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t idx = sqlite3_column_int64(s, 0);
		if (idx != (int64_t)n || n >= MSTORE_KEYWORDS_MAX)
			continue;
		const unsigned char *name = sqlite3_column_text(s, 1);
		snprintf(names[n], MSTORE_KEYWORD_LEN, "%s", name != NULL ? (const char *)name : "");
		n++;
	}
	if (rc != SQLITE_DONE) {
		mail_index_fail(sq, error_r, "read keywords");
		mail_index_done(s);
		return -1;
	}
	mail_index_done(s);
	*n_r = n;
	return 0;
}

static int mail_index_keyword_add(struct mail_index *ix, int64_t box, size_t idx,
				  const char *name, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_KW_ADD, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)idx);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	return mail_index_exec_stmt(sq, s, "add keyword", error_r);
}

static int mail_index_cache_get(struct mail_index *ix, int64_t box, uint32_t uid,
				const char *field, char **value_r, size_t *len_r,
				const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_CACHE_GET, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_int64(s, 2, uid);
	sqlite3_bind_text(s, 3, field, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW) {
		const void *v = sqlite3_column_blob(s, 0);
		size_t len = (size_t)sqlite3_column_bytes(s, 0);
		char *copy = malloc(len + 1);
		if (copy == NULL) {
			ret = mail_index_fail(sq, error_r, "out of memory for cached value");
		} else {
			if (len > 0)
				memcpy(copy, v, len);
			copy[len] = '\0';
			*value_r = copy;
			*len_r = len;
			ret = 1;
		}
	} else if (rc != SQLITE_DONE) {
		ret = mail_index_fail(sq, error_r, "read cache");
	}
	mail_index_done(s);
	return ret;
}

static int mail_index_cache_scan(struct mail_index *ix, int64_t box, const char *field,
				 int (*cb)(void *ctx, uint32_t uid, const void *value, size_t len),
				 void *ctx, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_CACHE_SCAN, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_text(s, 2, field, -1, SQLITE_STATIC);
	int rc, ret = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const void *v = sqlite3_column_blob(s, 1);
		size_t len = (size_t)sqlite3_column_bytes(s, 1);
		if (cb(ctx, (uint32_t)sqlite3_column_int64(s, 0), v != NULL ? v : "", len) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = mail_index_fail(sq, error_r, "scan cache");
	mail_index_done(s);
	return ret;
}

static int mail_index_cache_put(struct mail_index *ix, int64_t box, uint32_t uid,
				const char *field, const void *value, size_t len,
				const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	if (len > INT32_MAX) {
		snprintf(mail_index_errbuf, sizeof(mail_index_errbuf), "cached value too large");
		*error_r = mail_index_errbuf;
		return -1;
	}
	sqlite3_stmt *s = mail_index_stmt(sq, S_CACHE_PUT, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box);
	sqlite3_bind_int64(s, 2, uid);
	sqlite3_bind_text(s, 3, field, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 4, len > 0 ? value : "", (int)len, SQLITE_STATIC);
	/* Cached strings can always be computed again: their commits need not reach the
	 * disk (a fsync each made a first FETCH ENVELOPE of 10,000 messages take 48 s).
	 * WAL frames stay in order, so the next FULL commit makes them durable too and a
	 * UID-bearing commit is never weakened. */
	int autocommit = sqlite3_get_autocommit(sq->db);
	if (autocommit)
		sqlite3_exec(sq->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
	int r = mail_index_exec_stmt(sq, s, "write cache", error_r);
	if (autocommit)
		sqlite3_exec(sq->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
	return r;
}

static int mail_index_cache_put_many(struct mail_index *ix, int64_t box,
				     const struct mail_index_cache_put *puts, size_t n,
				     const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	/* As for one put: no fsync for strings that can be computed again; the next FULL
	 * commit carries these frames to the disk with it. */
	sqlite3_exec(sq->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
	int r = mail_index_begin(ix, 1, error_r);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = mail_index_cache_put(ix, box, puts[i].uid, puts[i].field, puts[i].value,
					 puts[i].len, error_r);
	if (r == 0)
		r = mail_index_commit(ix, error_r);
	else
		mail_index_rollback(ix);
	sqlite3_exec(sq->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
	return r;
}

static int mail_index_cache_copy(struct mail_index *ix, int64_t from_box, uint32_t from_uid,
				 int64_t to_box, uint32_t to_uid, const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_CACHE_COPY, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, from_box);
	sqlite3_bind_int64(s, 2, from_uid);
	sqlite3_bind_int64(s, 3, to_box);
	sqlite3_bind_int64(s, 4, to_uid);
	return mail_index_exec_stmt(sq, s, "copy cache", error_r);
}

static int mail_index_sub_set(struct mail_index *ix, const char *name, int on,
			      const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, on ? S_SUB_ADD : S_SUB_DEL, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	return mail_index_exec_stmt(sq, s, "write subscription", error_r);
}

static int mail_index_sub_list(struct mail_index *ix, char ***names_r, size_t *n_r,
			       const char **error_r)
{
	struct mail_index_sqlite *sq = SQ(ix);
	sqlite3_stmt *s = mail_index_stmt(sq, S_SUB_LIST, error_r);
	if (s == NULL)
		return -1;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap == 0 ? 16 : cap * 2;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (nn == NULL) {
				rc = SQLITE_NOMEM;
				break;
			}
			names = nn;
			cap = ncap;
		}
		const unsigned char *name = sqlite3_column_text(s, 0);
		names[n] = strdup(name != NULL ? (const char *)name : "");
		if (names[n] == NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		n++;
	}
	if (rc != SQLITE_DONE) {
		mail_index_fail(sq, error_r, "list subscriptions");
		mail_index_done(s);
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return -1;
	}
	mail_index_done(s);
	*names_r = names;
	*n_r = n;
	return 0;
}

static const struct mail_index_ops mail_index_sqlite_ops = {
	.backend = "sqlite",
	.close = mail_index_close,
	.begin = mail_index_begin,
	.commit = mail_index_commit,
	.rollback = mail_index_rollback,
	.uidvalidity_next = mail_index_uidvalidity_next,
	.uidvalidity_last = mail_index_uidvalidity_last,
	.box_get = mail_index_box_get,
	.box_get_id = mail_index_box_get_id,
	.box_list = mail_index_box_list,
	.box_insert = mail_index_box_insert,
	.box_update = mail_index_box_update,
	.box_clear = mail_index_box_clear,
	.box_move_messages = mail_index_box_move_messages,
	.msg_insert = mail_index_msg_insert,
	.msg_insert_many = mail_index_msg_insert_many,
	.msg_each = mail_index_msg_each,
	.msg_find_base = mail_index_msg_find_base,
	.msg_set_flags = mail_index_msg_set_flags,
	.msg_expunge = mail_index_msg_expunge,
	.expunged_list = mail_index_expunged_list,
	.expunged_prune = mail_index_expunged_prune,
	.keywords_get = mail_index_keywords_get,
	.keyword_add = mail_index_keyword_add,
	.cache_get = mail_index_cache_get,
	.cache_put = mail_index_cache_put,
	.cache_put_many = mail_index_cache_put_many,
	.cache_scan = mail_index_cache_scan,
	.cache_copy = mail_index_cache_copy,
	.sub_set = mail_index_sub_set,
	.sub_list = mail_index_sub_list,
};

/* Creates the tables once; the user_version check keeps every later open free of a
 * write transaction. */
static int mail_index_schema_ensure(struct mail_index_sqlite *sq, const char **error_r)
{
	sqlite3_stmt *s;
	int version = 0;
	if (sqlite3_prepare_v2(sq->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
		return mail_index_fail(sq, error_r, "read schema version");
	if (sqlite3_step(s) == SQLITE_ROW)
		version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (version == MAIL_INDEX_SCHEMA_VERSION)
		return 0;
	if (version > MAIL_INDEX_SCHEMA_VERSION) {
		snprintf(mail_index_errbuf, sizeof(mail_index_errbuf),
			 "index %s: schema version %d is newer than this tern's %d", sq->path,
			 version, MAIL_INDEX_SCHEMA_VERSION);
		*error_r = mail_index_errbuf;
		return -1;
	}
	if (sqlite3_exec(sq->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return mail_index_fail(sq, error_r, "begin schema");
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", MAIL_INDEX_SCHEMA_VERSION);
	/* Before 4 the messages table had no bulk column (its rows are all not bulk). */
	int old_messages = version > 0 && version < 4;
	if ((old_messages && sqlite3_exec(sq->db, "ALTER TABLE messages ADD COLUMN bulk INTEGER "
						  "NOT NULL DEFAULT 0", NULL, NULL, NULL) != SQLITE_OK) ||
	    sqlite3_exec(sq->db, mail_index_schema, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(sq->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		mail_index_fail(sq, error_r, "create schema");
		sqlite3_exec(sq->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	if (sqlite3_exec(sq->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return mail_index_fail(sq, error_r, "commit schema");
	return 0;
}

int mail_index_sqlite_open(const char *path, struct mail_index **ix_r, const char **error_r)
{
	*error_r = NULL;
	struct mail_index_sqlite *sq = calloc(1, sizeof(*sq));
	if (sq == NULL) {
		snprintf(mail_index_errbuf, sizeof(mail_index_errbuf), "index %s: out of memory",
			 path);
		*error_r = mail_index_errbuf;
		return -1;
	}
	sq->ix.ops = &mail_index_sqlite_ops;
	snprintf(sq->path, sizeof(sq->path), "%s", path);

	/* SQLite would create the file 0644; the -wal and -shm files copy the mode of
	 * the database, so creating it 0600 first keeps them all private. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(mail_index_errbuf, sizeof(mail_index_errbuf), "index %s: open: %s", path,
			 strerror(errno));
		*error_r = mail_index_errbuf;
		free(sq);
		return -1;
	}
	close(fd);

	if (sqlite3_open_v2(path, &sq->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		mail_index_fail(sq, error_r, "open");
		sqlite3_close(sq->db);
		free(sq);
		return -1;
	}
	sqlite3_extended_result_codes(sq->db, 1);
	sqlite3_busy_timeout(sq->db, MAIL_INDEX_BUSY_MS);
	/* cache_size: every IMAP session holds a connection, so its page cache is per-session
	 * memory; 2 MB covers the hot pages and the kernel's page cache does the rest.
	 * synchronous=FULL: a UID handed out must survive a power cut, or the next
	 * session could give the same UID to another message under the same
	 * UIDVALIDITY. */
	if (sqlite3_exec(sq->db,
			 "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
			 "PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; "
			 "PRAGMA cache_size = -2048;",
			 NULL, NULL, NULL) != SQLITE_OK) {
		mail_index_fail(sq, error_r, "configure");
		mail_index_close(&sq->ix);
		return -1;
	}
	if (mail_index_schema_ensure(sq, error_r) < 0) {
		mail_index_close(&sq->ix);
		return -1;
	}
	*ix_r = &sq->ix;
	return 0;
}
