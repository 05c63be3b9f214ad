/* The directory database: opening, schema migrations and the administration calls.
 * Resolution of recipients is in directory_resolve.c. */
#include "directory/directory_private.h"

#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Long enough for a login to wait out a CLI write, short enough that a wedged writer
 * shows up as an error instead of a hung session. */
#define DIRECTORY_BUSY_TIMEOUT_MS 5000

/* Schema migrations: entry i takes the schema from version i to i + 1.  Append only;
 * never edit an entry that has shipped.  The version is PRAGMA user_version. */
static const char *const directory_migrations[] = {
	/* 1: domains, accounts, aliases.  COLLATE NOCASE folds ASCII only, which is what
	 * case-insensitive addresses mean here (UTF-8 local parts compare as bytes). */
	"CREATE TABLE domains ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE COLLATE NOCASE,"
	"  created INTEGER NOT NULL"
	");"
	"CREATE TABLE accounts ("
	"  id INTEGER PRIMARY KEY,"
	"  domain_id INTEGER NOT NULL REFERENCES domains(id),"
	"  address TEXT NOT NULL UNIQUE COLLATE NOCASE,"
	"  password_hash TEXT NOT NULL,"
	"  created INTEGER NOT NULL,"
	"  password_changed INTEGER NOT NULL"
	");"
	"CREATE INDEX accounts_domain ON accounts(domain_id);"
	"CREATE TABLE aliases ("
	"  id INTEGER PRIMARY KEY,"
	"  domain_id INTEGER NOT NULL REFERENCES domains(id),"
	"  address TEXT NOT NULL COLLATE NOCASE,"
	"  target TEXT NOT NULL COLLATE NOCASE,"
	"  created INTEGER NOT NULL,"
	"  UNIQUE (address, target)"
	");"
	"CREATE INDEX aliases_domain ON aliases(domain_id);",
};

#define DIRECTORY_SCHEMA_VERSION \
	((int)(sizeof(directory_migrations) / sizeof(directory_migrations[0])))

static const char *const directory_sql[DIR_STMT_COUNT] = {
	[DIR_STMT_DOMAIN_ADD] = "INSERT INTO domains (name, created) VALUES (?1, ?2)",
	[DIR_STMT_DOMAIN_DEL] = "DELETE FROM domains WHERE id = ?1",
	[DIR_STMT_DOMAIN_ID] = "SELECT id FROM domains WHERE name = ?1",
	[DIR_STMT_DOMAIN_LIST] = "SELECT name FROM domains ORDER BY name",
	[DIR_STMT_DOMAIN_ACCOUNTS] = "SELECT count(*) FROM accounts WHERE domain_id = ?1",
	[DIR_STMT_DOMAIN_ALIASES] = "SELECT count(*) FROM aliases WHERE domain_id = ?1",
	[DIR_STMT_POSTMASTER_DOMAIN] =
		"SELECT d.name FROM domains d"
		" WHERE EXISTS (SELECT 1 FROM accounts WHERE address = 'postmaster@' || d.name)"
		"    OR EXISTS (SELECT 1 FROM aliases WHERE address = 'postmaster@' || d.name)"
		" ORDER BY d.name LIMIT 1",
	[DIR_STMT_ACCOUNT_ADD] = "INSERT INTO accounts (domain_id, address, password_hash,"
				 " created, password_changed) VALUES (?1, ?2, ?3, ?4, ?4)",
	[DIR_STMT_ACCOUNT_DEL] = "DELETE FROM accounts WHERE address = ?1",
	[DIR_STMT_ACCOUNT_PASSWD] = "UPDATE accounts SET password_hash = ?2,"
				    " password_changed = ?3 WHERE address = ?1",
	[DIR_STMT_ACCOUNT_GET] = "SELECT address, password_hash FROM accounts WHERE address = ?1",
	[DIR_STMT_ACCOUNT_LIST] = "SELECT a.address FROM accounts a"
				  " JOIN domains d ON d.id = a.domain_id"
				  " ORDER BY d.name, a.address",
	[DIR_STMT_ACCOUNT_LIST_DOMAIN] = "SELECT address FROM accounts WHERE domain_id = ?1"
					 " ORDER BY address",
	[DIR_STMT_ALIAS_ADD] = "INSERT INTO aliases (domain_id, address, target, created)"
			       " VALUES (?1, ?2, ?3, ?4)",
	[DIR_STMT_ALIAS_DEL_ONE] = "DELETE FROM aliases WHERE address = ?1 AND target = ?2",
	[DIR_STMT_ALIAS_DEL_ALL] = "DELETE FROM aliases WHERE address = ?1",
	[DIR_STMT_ALIAS_TARGETS] = "SELECT target FROM aliases WHERE address = ?1 ORDER BY id",
	[DIR_STMT_ALIAS_COUNT] = "SELECT count(*) FROM aliases WHERE address = ?1",
	[DIR_STMT_ALIAS_LIST] = "SELECT a.address, a.target FROM aliases a"
				" JOIN domains d ON d.id = a.domain_id"
				" ORDER BY d.name, a.address, a.id",
};

void directory_set_error(struct directory *d, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->error, sizeof(d->error), fmt, ap);
	va_end(ap);
}

int directory_db_error(struct directory *d, const char *what)
{
	directory_set_error(d, "%s: %s", what, sqlite3_errmsg(d->db));
	return -1;
}

sqlite3_stmt *directory_stmt(struct directory *d, enum directory_stmt id)
{
	sqlite3_stmt *st = d->stmt[id];
	if (st != NULL) {
		/* A caller that returned early may have left it mid-step. */
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		return st;
	}
	if (sqlite3_prepare_v3(d->db, directory_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st,
			       NULL) != SQLITE_OK) {
		directory_db_error(d, "tern.db: cannot prepare a query");
		return NULL;
	}
	d->stmt[id] = st;
	return st;
}

static int directory_exec(struct directory *d, const char *sql, const char *what)
{
	if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return directory_db_error(d, what);
	return 0;
}

/* Writes that check before they change take the write lock first (IMMEDIATE), so that
 * another process cannot change what was checked in between. */
static int directory_begin(struct directory *d)
{
	return directory_exec(d, "BEGIN IMMEDIATE", "tern.db: cannot start a transaction");
}

static int directory_commit(struct directory *d)
{
	if (directory_exec(d, "COMMIT", "tern.db: cannot commit") < 0) {
		sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static int directory_rollback(struct directory *d)
{
	sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* Runs a "SELECT count(*) ..." bound to one integer or one text. */
static int directory_count(struct directory *d, enum directory_stmt id, long long n,
			   const char *text, long long *count_r)
{
	sqlite3_stmt *st = directory_stmt(d, id);
	if (st == NULL)
		return -1;
	if (text != NULL)
		sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, n);
	if (sqlite3_step(st) != SQLITE_ROW) {
		directory_db_error(d, "tern.db: count failed");
		sqlite3_reset(st);
		return -1;
	}
	*count_r = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return 0;
}

/* Runs a statement that returns no rows; returns the number of rows changed, or -1.
 * On a constraint violation d->error is left for the caller to word. */
static int directory_change(struct directory *d, sqlite3_stmt *st, const char *what,
			    int *constraint_r)
{
	int rc = sqlite3_step(st);
	if (constraint_r != NULL)
		*constraint_r = (rc & 0xff) == SQLITE_CONSTRAINT;
	if (rc != SQLITE_DONE) {
		directory_db_error(d, what);
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return sqlite3_changes(d->db);
}

static int directory_user_version(struct directory *d, int *version_r)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(d->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return directory_db_error(d, "tern.db: cannot read the schema version");
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*version_r = sqlite3_column_int(st, 0);
	else
		directory_db_error(d, "tern.db: cannot read the schema version");
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

static int directory_migrate(struct directory *d)
{
	int version;
	if (directory_user_version(d, &version) < 0)
		return -1;
	/* Readers (every session worker) find the schema current and never take the
	 * write lock. */
	if (version == DIRECTORY_SCHEMA_VERSION)
		return 0;
	if (version > DIRECTORY_SCHEMA_VERSION) {
		directory_set_error(d, "tern.db has schema version %d, newer than this tern knows "
				    "(%d): run the newer tern", version, DIRECTORY_SCHEMA_VERSION);
		return -1;
	}
	if (directory_begin(d) < 0)
		return -1;
	/* Another process may have migrated while this one waited for the lock. */
	if (directory_user_version(d, &version) < 0)
		return directory_rollback(d);
	int from = version;
	for (; version < DIRECTORY_SCHEMA_VERSION; version++) {
		if (sqlite3_exec(d->db, directory_migrations[version], NULL, NULL, NULL) !=
		    SQLITE_OK) {
			directory_set_error(d, "tern.db: migration to schema version %d failed: %s",
					    version + 1, sqlite3_errmsg(d->db));
			return directory_rollback(d);
		}
	}
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", DIRECTORY_SCHEMA_VERSION);
	if (directory_exec(d, sql, "tern.db: cannot set the schema version") < 0)
		return directory_rollback(d);
	if (directory_commit(d) < 0)
		return -1;
	/* Creating a new database is routine (and the CLI's first run); an upgrade is
	 * worth a line in the log. */
	log_msg(from == 0 ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, "directory",
		"event=migrated from=%d to=%d", from, DIRECTORY_SCHEMA_VERSION);
	return 0;
}

static int directory_set_wal(struct directory *d)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(d->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK)
		return directory_db_error(d, "tern.db: cannot set WAL mode");
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		directory_db_error(d, "tern.db: cannot set WAL mode");
		sqlite3_finalize(st);
		return -1;
	}
	const char *mode = (const char *)sqlite3_column_text(st, 0);
	if (mode == NULL || strcmp(mode, "wal") != 0)
		/* Still correct, only readers and the writer now wait for each other (a
		 * file system without shared memory, such as some network mounts). */
		log_warn("directory", "event=no_wal journal_mode=%s", mode ? mode : "?");
	sqlite3_finalize(st);
	return 0;
}

struct directory *directory_open(const char *data_dir, const char **error_r)
{
	char path[4096];
	static _Thread_local char open_error[sizeof(path) + 512];
	struct directory *d = NULL;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, DIRECTORY_DB_NAME) >=
	    sizeof(path)) {
		snprintf(open_error, sizeof(open_error), "data directory path too long");
		goto fail;
	}
	/* SQLite would create the file 0644, and its -wal and -shm files copy the mode of
	 * the database: create it 0600 first. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(open_error, sizeof(open_error), "cannot open %s: %s", path,
			 strerror(errno));
		goto fail;
	}
	close(fd);

	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(open_error, sizeof(open_error), "out of memory");
		goto fail;
	}
	if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL) !=
	    SQLITE_OK) {
		snprintf(open_error, sizeof(open_error), "cannot open %s: %s", path,
			 d->db ? sqlite3_errmsg(d->db) : "out of memory");
		goto fail;
	}
	sqlite3_extended_result_codes(d->db, 1);
	sqlite3_busy_timeout(d->db, DIRECTORY_BUSY_TIMEOUT_MS);
	if (directory_exec(d, "PRAGMA foreign_keys = ON", "tern.db: cannot enable foreign keys") <
		    0 ||
	    directory_set_wal(d) < 0 || directory_migrate(d) < 0) {
		snprintf(open_error, sizeof(open_error), "%s", d->error);
		goto fail;
	}
	return d;
fail:
	directory_close(&d);
	*error_r = open_error;
	return NULL;
}

void directory_close(struct directory **dirp)
{
	struct directory *d = *dirp;
	if (d == NULL)
		return;
	for (int i = 0; i < DIR_STMT_COUNT; i++)
		sqlite3_finalize(d->stmt[i]);
	/* close_v2 finishes even if a statement were somehow still open. */
	sqlite3_close_v2(d->db);
	free(d);
	*dirp = NULL;
}

int directory_domain_id(struct directory *d, const char *domain, long long *id_r)
{
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_DOMAIN_ID);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), ret;
	if (rc == SQLITE_ROW) {
		*id_r = sqlite3_column_int64(st, 0);
		ret = 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = directory_db_error(d, "tern.db: domain lookup failed");
	}
	sqlite3_reset(st);
	return ret;
}

int directory_account_find(struct directory *d, const char *address, char *addr_r, size_t cap)
{
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ACCOUNT_GET);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), ret;
	if (rc == SQLITE_ROW) {
		ret = 1;
		if (addr_r != NULL) {
			const char *a = (const char *)sqlite3_column_text(st, 0);
			if (a == NULL || strlen(a) >= cap) {
				directory_set_error(d, "tern.db: stored account address too long");
				ret = -1;
			} else {
				memcpy(addr_r, a, strlen(a) + 1);
			}
		}
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = directory_db_error(d, "tern.db: account lookup failed");
	}
	sqlite3_reset(st);
	return ret;
}

static const char *plural(long long n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

/* ---- domains ---- */

int directory_domain_add(struct directory *d, const char *domain, const char **error_r)
{
	char name[DIRECTORY_DOMAIN_MAX + 1];
	*error_r = d->error;
	if (directory_canon_domain(domain, name, sizeof(name)) < 0) {
		directory_set_error(d, "'%s' is not a domain name (letters, digits, hyphens and "
				    "dots)", domain);
		return -1;
	}
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_DOMAIN_ADD);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (long long)time(NULL));
	int constraint;
	if (directory_change(d, st, "tern.db: cannot add the domain", &constraint) < 0) {
		if (constraint)
			directory_set_error(d, "domain %s already exists", name);
		return -1;
	}
	return 0;
}

int directory_domain_del(struct directory *d, const char *domain, const char **error_r)
{
	char name[DIRECTORY_DOMAIN_MAX + 1];
	long long id, accounts, aliases;
	*error_r = d->error;
	if (directory_canon_domain(domain, name, sizeof(name)) < 0) {
		directory_set_error(d, "no domain %s", domain);
		return -1;
	}
	if (directory_begin(d) < 0)
		return -1;
	int rc = directory_domain_id(d, name, &id);
	if (rc <= 0) {
		if (rc == 0)
			directory_set_error(d, "no domain %s", name);
		return directory_rollback(d);
	}
	if (directory_count(d, DIR_STMT_DOMAIN_ACCOUNTS, id, NULL, &accounts) < 0 ||
	    directory_count(d, DIR_STMT_DOMAIN_ALIASES, id, NULL, &aliases) < 0)
		return directory_rollback(d);
	if (accounts > 0 || aliases > 0) {
		directory_set_error(d, "domain %s still has %lld %s and %lld %s: delete them first",
				    name, accounts, plural(accounts, "account", "accounts"), aliases,
				    plural(aliases, "alias", "aliases"));
		return directory_rollback(d);
	}
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_DOMAIN_DEL);
	if (st == NULL)
		return directory_rollback(d);
	sqlite3_bind_int64(st, 1, id);
	if (directory_change(d, st, "tern.db: cannot delete the domain", NULL) < 0)
		return directory_rollback(d);
	return directory_commit(d);
}

int directory_domain_list(struct directory *d, void (*cb)(void *ctx, const char *domain),
			  void *ctx, const char **error_r)
{
	*error_r = d->error;
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_DOMAIN_LIST);
	if (st == NULL)
		return -1;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb(ctx, (const char *)sqlite3_column_text(st, 0));
	if (rc != SQLITE_DONE)
		directory_db_error(d, "tern.db: cannot list domains");
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int directory_domain_exists(struct directory *d, const char *domain)
{
	char name[DIRECTORY_DOMAIN_MAX + 1];
	long long id;
	if (directory_canon_domain(domain, name, sizeof(name)) < 0)
		return 0;
	return directory_domain_id(d, name, &id);
}

/* ---- accounts ---- */

/* Canonical address and the id of its domain, which must be local; 0 or -1 (d->error). */
static int directory_address_in_local_domain(struct directory *d, const char *address,
					     int catchall_ok, char *canon, size_t cap,
					     long long *domain_id_r)
{
	const char *dom, *why;
	if (directory_canon_address(address, catchall_ok, canon, cap, &dom, &why) < 0) {
		directory_set_error(d, "'%s': %s", address, why);
		return -1;
	}
	int rc = directory_domain_id(d, dom, domain_id_r);
	if (rc == 0)
		directory_set_error(d, "%s is not a local domain (add it first)", dom);
	return rc == 1 ? 0 : -1;
}

int directory_account_add(struct directory *d, const char *address, const char *password_hash,
			  const char **error_r)
{
	char addr[DIRECTORY_ADDRESS_MAX];
	long long domain_id, aliases;
	*error_r = d->error;
	if (password_hash == NULL || password_hash[0] == '\0') {
		directory_set_error(d, "empty password hash");
		return -1;
	}
	if (directory_begin(d) < 0)
		return -1;
	if (directory_address_in_local_domain(d, address, 0, addr, sizeof(addr), &domain_id) < 0)
		return directory_rollback(d);
	if (directory_count(d, DIR_STMT_ALIAS_COUNT, 0, addr, &aliases) < 0)
		return directory_rollback(d);
	if (aliases > 0) {
		directory_set_error(d, "%s is an alias: delete the alias first", addr);
		return directory_rollback(d);
	}
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ACCOUNT_ADD);
	if (st == NULL)
		return directory_rollback(d);
	sqlite3_bind_int64(st, 1, domain_id);
	sqlite3_bind_text(st, 2, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, password_hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (long long)time(NULL));
	int constraint;
	if (directory_change(d, st, "tern.db: cannot add the account", &constraint) < 0) {
		if (constraint)
			directory_set_error(d, "account %s already exists", addr);
		return directory_rollback(d);
	}
	return directory_commit(d);
}

int directory_account_del(struct directory *d, const char *address, const char **error_r)
{
	*error_r = d->error;
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ACCOUNT_DEL);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	int n = directory_change(d, st, "tern.db: cannot delete the account", NULL);
	if (n == 0)
		directory_set_error(d, "no account %s", address);
	return n > 0 ? 0 : -1;
}

int directory_account_passwd(struct directory *d, const char *address,
			     const char *password_hash, const char **error_r)
{
	*error_r = d->error;
	if (password_hash == NULL || password_hash[0] == '\0') {
		directory_set_error(d, "empty password hash");
		return -1;
	}
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ACCOUNT_PASSWD);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, password_hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (long long)time(NULL));
	int n = directory_change(d, st, "tern.db: cannot change the password", NULL);
	if (n == 0)
		directory_set_error(d, "no account %s", address);
	return n > 0 ? 0 : -1;
}

int directory_account_list(struct directory *d, const char *domain_or_null,
			   void (*cb)(void *ctx, const char *address), void *ctx,
			   const char **error_r)
{
	sqlite3_stmt *st;
	*error_r = d->error;
	if (domain_or_null != NULL) {
		char name[DIRECTORY_DOMAIN_MAX + 1];
		long long id;
		int rc = directory_canon_domain(domain_or_null, name, sizeof(name)) < 0
				 ? 0
				 : directory_domain_id(d, name, &id);
		if (rc == 0)
			directory_set_error(d, "%s is not a local domain", domain_or_null);
		if (rc <= 0)
			return -1;
		if ((st = directory_stmt(d, DIR_STMT_ACCOUNT_LIST_DOMAIN)) == NULL)
			return -1;
		sqlite3_bind_int64(st, 1, id);
	} else if ((st = directory_stmt(d, DIR_STMT_ACCOUNT_LIST)) == NULL) {
		return -1;
	}
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb(ctx, (const char *)sqlite3_column_text(st, 0));
	if (rc != SQLITE_DONE)
		directory_db_error(d, "tern.db: cannot list accounts");
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int directory_account_hash(struct directory *d, const char *address, char *hash_r, size_t cap)
{
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ACCOUNT_GET);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), ret;
	if (rc == SQLITE_ROW) {
		const char *h = (const char *)sqlite3_column_text(st, 1);
		if (h == NULL || strlen(h) >= cap) {
			directory_set_error(d, "stored password hash of %s does not fit", address);
			ret = -1;
		} else {
			memcpy(hash_r, h, strlen(h) + 1);
			ret = 1;
		}
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		ret = directory_db_error(d, "tern.db: account lookup failed");
	}
	sqlite3_reset(st);
	return ret;
}

/* ---- aliases ---- */

int directory_alias_add(struct directory *d, const char *address, const char *target,
			const char **error_r)
{
	char addr[DIRECTORY_ADDRESS_MAX], tgt[DIRECTORY_ADDRESS_MAX];
	const char *tdom, *why;
	long long domain_id, targets;
	*error_r = d->error;
	if (directory_canon_address(target, 0, tgt, sizeof(tgt), &tdom, &why) < 0) {
		directory_set_error(d, "target '%s': %s", target, why);
		return -1;
	}
	if (directory_begin(d) < 0)
		return -1;
	if (directory_address_in_local_domain(d, address, 1, addr, sizeof(addr), &domain_id) < 0)
		return directory_rollback(d);
	if (strcmp(addr, tgt) == 0) {
		directory_set_error(d, "%s cannot be an alias of itself", addr);
		return directory_rollback(d);
	}
	int rc = directory_account_find(d, addr, NULL, 0);
	if (rc != 0) {
		if (rc > 0)
			directory_set_error(d, "%s is an account, and mail to an account never "
					    "looks at aliases", addr);
		return directory_rollback(d);
	}
	if (directory_count(d, DIR_STMT_ALIAS_COUNT, 0, addr, &targets) < 0)
		return directory_rollback(d);
	if (targets >= DIRECTORY_MAX_TARGETS) {
		directory_set_error(d, "%s already has %d targets, the most an alias may have",
				    addr, DIRECTORY_MAX_TARGETS);
		return directory_rollback(d);
	}
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ALIAS_ADD);
	if (st == NULL)
		return directory_rollback(d);
	sqlite3_bind_int64(st, 1, domain_id);
	sqlite3_bind_text(st, 2, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, tgt, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (long long)time(NULL));
	int constraint;
	if (directory_change(d, st, "tern.db: cannot add the alias", &constraint) < 0) {
		if (constraint)
			directory_set_error(d, "alias %s -> %s already exists", addr, tgt);
		return directory_rollback(d);
	}
	return directory_commit(d);
}

int directory_alias_del(struct directory *d, const char *address, const char *target_or_null,
			const char **error_r)
{
	*error_r = d->error;
	sqlite3_stmt *st = directory_stmt(d, target_or_null ? DIR_STMT_ALIAS_DEL_ONE
							    : DIR_STMT_ALIAS_DEL_ALL);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	if (target_or_null != NULL)
		sqlite3_bind_text(st, 2, target_or_null, -1, SQLITE_STATIC);
	int n = directory_change(d, st, "tern.db: cannot delete the alias", NULL);
	if (n == 0) {
		if (target_or_null != NULL)
			directory_set_error(d, "no alias %s -> %s", address, target_or_null);
		else
			directory_set_error(d, "no alias %s", address);
	}
	return n > 0 ? 0 : -1;
}

int directory_alias_list(struct directory *d,
			 void (*cb)(void *ctx, const char *address, const char *target), void *ctx,
			 const char **error_r)
{
	*error_r = d->error;
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ALIAS_LIST);
	if (st == NULL)
		return -1;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb(ctx, (const char *)sqlite3_column_text(st, 0),
		   (const char *)sqlite3_column_text(st, 1));
	if (rc != SQLITE_DONE)
		directory_db_error(d, "tern.db: cannot list aliases");
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}
