#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#define _XOPEN_SOURCE_EXTENDED 1
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "directory/directory.h"

/* Stored as given; the directory does not look inside. */
#define HASH1 "$y$j9T$abcdefghijklmnopqrstuv$0123456789012345678901234567890123456789012"
#define HASH2 "$6$salt$xyz"

struct fixture {
	char dir[64];
	struct directory *d;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *error = NULL;
	assert_int_equal(test_tmpdir_new(f->dir, sizeof(f->dir), "directory"), 0);
	f->d = directory_open(f->dir, &error);
	if (f->d == NULL)
		fail_msg("directory_open: %s", error);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	directory_close(&f->d);
	assert_null(f->d);
	test_rm_rf(f->dir);
	free(f);
	return 0;
}

/* Collects list callbacks into one newline-separated string. */
struct collect {
	char text[8192];
};

static void collect1(void *ctx, const char *s)
{
	struct collect *c = ctx;
	strncat(c->text, s, sizeof(c->text) - strlen(c->text) - 1);
	strncat(c->text, "\n", sizeof(c->text) - strlen(c->text) - 1);
}

static void collect2(void *ctx, const char *a, const char *b)
{
	struct collect *c = ctx;
	char line[600];
	snprintf(line, sizeof(line), "%s -> %s\n", a, b);
	strncat(c->text, line, sizeof(c->text) - strlen(c->text) - 1);
}

static void ok(int rc, const char *error)
{
	if (rc != 0)
		fail_msg("unexpected error: %s", error ? error : "(none)");
}

/* Asserts the call failed and its message contains want. */
#define assert_fails(call, want)                                                              \
	do {                                                                                  \
		const char *error_ = NULL;                                                    \
		const char **error_r = &error_;                                               \
		int rc_ = (call);                                                             \
		assert_int_equal(rc_, -1);                                                    \
		assert_non_null(error_);                                                      \
		if (strstr(error_, (want)) == NULL)                                           \
			fail_msg("error '%s' does not contain '%s'", error_, (want));         \
	} while (0)

/* Sets up example.com and example.org with a few accounts. */
static void populate(struct directory *d)
{
	const char *error = NULL;
	ok(directory_domain_add(d, "example.com", &error), error);
	ok(directory_domain_add(d, "Example.ORG", &error), error);
	ok(directory_account_add(d, "alice@example.com", HASH1, &error), error);
	ok(directory_account_add(d, "Bob@Example.com", HASH2, &error), error);
	ok(directory_account_add(d, "carol@example.org", HASH1, &error), error);
}

static void test_open_creates(void **state)
{
	struct fixture *f = *state;
	char path[128];
	struct stat st;
	snprintf(path, sizeof(path), "%s/tern.db", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	sqlite3 *db;
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_true(sqlite3_column_int(s, 0) >= 1);
	sqlite3_finalize(s);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	sqlite3_close(db);

	/* SQLite gives the -wal and -shm files the database's mode. */
	const char *error = NULL;
	ok(directory_domain_add(f->d, "example.com", &error), error);
	snprintf(path, sizeof(path), "%s/tern.db-wal", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/tern.db-shm", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	assert_null(directory_open("/nonexistent/tern-dir", &error));
	assert_non_null(strstr(error, "/nonexistent/tern-dir/tern.db"));
}

static void test_newer_schema_refused(void **state)
{
	struct fixture *f = *state;
	char path[128];
	sqlite3 *db;
	const char *error = NULL;
	directory_close(&f->d);
	snprintf(path, sizeof(path), "%s/tern.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), 0);
	sqlite3_close(db);
	assert_null(directory_open(f->dir, &error));
	assert_non_null(strstr(error, "newer"));
}

static void test_domains(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	struct collect c = { "" };

	ok(directory_domain_add(d, "Example.COM", &error), error);
	ok(directory_domain_add(d, "a-b.example.net", &error), error);
	ok(directory_domain_add(d, "localhost", &error), error);
	assert_fails(directory_domain_add(d, "example.com", error_r), "already exists");
	assert_fails(directory_domain_add(d, "", error_r), "not a domain");
	assert_fails(directory_domain_add(d, "exa mple.com", error_r), "not a domain");
	assert_fails(directory_domain_add(d, "example..com", error_r), "not a domain");
	assert_fails(directory_domain_add(d, ".example.com", error_r), "not a domain");
	assert_fails(directory_domain_add(d, "example.com.", error_r), "not a domain");
	assert_fails(directory_domain_add(d, "-x.example.com", error_r), "not a domain");
	assert_fails(directory_domain_add(d, "user@example.com", error_r), "not a domain");
	assert_fails(directory_domain_add(d, "ex\xc3\xa4mple.com", error_r), "not a domain");

	assert_int_equal(directory_domain_exists(d, "example.com"), 1);
	assert_int_equal(directory_domain_exists(d, "EXAMPLE.com"), 1);
	assert_int_equal(directory_domain_exists(d, "example.org"), 0);
	assert_int_equal(directory_domain_exists(d, ""), 0);

	ok(directory_domain_list(d, collect1, &c, &error), error);
	assert_string_equal(c.text, "a-b.example.net\nexample.com\nlocalhost\n");

	ok(directory_domain_del(d, "LOCALHOST", &error), error);
	assert_fails(directory_domain_del(d, "localhost", error_r), "no domain localhost");
	assert_fails(directory_domain_del(d, "nope.example", error_r), "no domain");
	assert_int_equal(directory_domain_exists(d, "localhost"), 0);
}

static void test_domain_del_refused(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	populate(d);
	ok(directory_alias_add(d, "info@example.com", "alice@example.com", &error), error);
	ok(directory_alias_add(d, "@example.com", "bob@example.com", &error), error);
	assert_fails(directory_domain_del(d, "example.com", error_r),
		     "still has 2 accounts and 2 aliases");
	assert_fails(directory_domain_del(d, "example.org", error_r),
		     "still has 1 account and 0 aliases");
	ok(directory_account_del(d, "carol@example.org", &error), error);
	ok(directory_domain_del(d, "example.org", &error), error);
	assert_int_equal(directory_domain_exists(d, "example.com"), 1);
}

static void test_accounts(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	char hash[256];
	struct collect c = { "" };
	populate(d);

	assert_fails(directory_account_add(d, "alice@example.com", HASH1, error_r),
		     "already exists");
	assert_fails(directory_account_add(d, "ALICE@example.COM", HASH1, error_r),
		     "already exists");
	assert_fails(directory_account_add(d, "dave@example.net", HASH1, error_r),
		     "example.net is not a local domain");
	assert_fails(directory_account_add(d, "dave@example.com", "", error_r), "empty");
	assert_fails(directory_account_add(d, "example.com", HASH1, error_r), "not an address");
	assert_fails(directory_account_add(d, "@example.com", HASH1, error_r), "nothing before");
	assert_fails(directory_account_add(d, "a@b@example.com", HASH1, error_r), "more than one");
	assert_fails(directory_account_add(d, "da ve@example.com", HASH1, error_r), "local part");
	assert_fails(directory_account_add(d, "dave.@example.com", HASH1, error_r), "local part");
	assert_fails(directory_account_add(d, "d..ave@example.com", HASH1, error_r), "local part");
	assert_fails(directory_account_add(d, "d\xff@example.com", HASH1, error_r), "local part");
	assert_fails(directory_account_add(d,
					   "a1234567890123456789012345678901234567890123456789012"
					   "345678901234@example.com" /* 65 bytes */,
					   HASH1, error_r),
		     "longer than 64");
	assert_fails(directory_account_add(d, "dave@exa_mple.com", HASH1, error_r), "host name");

	/* Stored lower-case, UTF-8 kept. */
	ok(directory_account_add(d, "J\xc3\xbcrgen.Xy@example.com", HASH1, &error), error);
	ok(directory_account_list(d, NULL, collect1, &c, &error), error);
	assert_string_equal(c.text, "alice@example.com\nbob@example.com\n"
				    "j\xc3\xbcrgen.xy@example.com\ncarol@example.org\n");
	c.text[0] = '\0';
	ok(directory_account_list(d, "EXAMPLE.org", collect1, &c, &error), error);
	assert_string_equal(c.text, "carol@example.org\n");
	assert_fails(directory_account_list(d, "example.net", collect1, &c, error_r),
		     "not a local domain");

	assert_int_equal(directory_account_hash(d, "BOB@example.COM", hash, sizeof(hash)), 1);
	assert_string_equal(hash, HASH2);
	assert_int_equal(directory_account_hash(d, "J\xc3\xbcrgen.XY@example.com", hash,
						sizeof(hash)),
			 1);
	assert_int_equal(directory_account_hash(d, "nobody@example.com", hash, sizeof(hash)), 0);
	assert_int_equal(directory_account_hash(d, "bob@example.com", hash, 4), -1);

	ok(directory_account_passwd(d, "Bob@example.com", HASH1, &error), error);
	assert_int_equal(directory_account_hash(d, "bob@example.com", hash, sizeof(hash)), 1);
	assert_string_equal(hash, HASH1);
	assert_fails(directory_account_passwd(d, "nobody@example.com", HASH1, error_r),
		     "no account");
	assert_fails(directory_account_passwd(d, "bob@example.com", "", error_r), "empty");

	ok(directory_account_del(d, "BOB@example.com", &error), error);
	assert_int_equal(directory_account_hash(d, "bob@example.com", hash, sizeof(hash)), 0);
	assert_fails(directory_account_del(d, "bob@example.com", error_r), "no account");
}

static void test_aliases(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	struct collect c = { "" };
	populate(d);

	ok(directory_alias_add(d, "Info@example.com", "alice@example.com", &error), error);
	ok(directory_alias_add(d, "info@example.com", "Someone@Elsewhere.NET", &error), error);
	ok(directory_alias_add(d, "@example.org", "carol@example.org", &error), error);
	ok(directory_alias_add(d, "sales@example.org", "info@example.com", &error), error);
	assert_fails(directory_alias_add(d, "info@example.com", "ALICE@example.com", error_r),
		     "already exists");
	assert_fails(directory_alias_add(d, "x@example.net", "alice@example.com", error_r),
		     "not a local domain");
	assert_fails(directory_alias_add(d, "@example.net", "alice@example.com", error_r),
		     "not a local domain");
	assert_fails(directory_alias_add(d, "alice@example.com", "x@elsewhere.net", error_r),
		     "is an account");
	assert_fails(directory_alias_add(d, "x@example.com", "X@example.com", error_r),
		     "itself");
	assert_fails(directory_alias_add(d, "x@example.com", "@example.com", error_r), "target");
	assert_fails(directory_alias_add(d, "x@example.com", "not an address", error_r), "target");
	assert_fails(directory_alias_add(d, "x y@example.com", "a@example.com", error_r),
		     "local part");
	/* An alias address cannot then become an account. */
	assert_fails(directory_account_add(d, "INFO@example.com", HASH1, error_r), "is an alias");

	ok(directory_alias_list(d, collect2, &c, &error), error);
	assert_string_equal(c.text, "info@example.com -> alice@example.com\n"
				    "info@example.com -> someone@elsewhere.net\n"
				    "@example.org -> carol@example.org\n"
				    "sales@example.org -> info@example.com\n");

	ok(directory_alias_del(d, "INFO@example.com", "alice@EXAMPLE.com", &error), error);
	assert_fails(directory_alias_del(d, "info@example.com", "alice@example.com", error_r),
		     "no alias info@example.com -> alice@example.com");
	ok(directory_alias_del(d, "@example.org", NULL, &error), error);
	assert_fails(directory_alias_del(d, "@example.org", NULL, error_r), "no alias");
	c.text[0] = '\0';
	ok(directory_alias_list(d, collect2, &c, &error), error);
	assert_string_equal(c.text, "info@example.com -> someone@elsewhere.net\n"
				    "sales@example.org -> info@example.com\n");
}

static void test_alias_target_limit(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	char t[64];
	populate(d);
	for (int i = 0; i < DIRECTORY_MAX_TARGETS; i++) {
		snprintf(t, sizeof(t), "user%d@elsewhere.net", i);
		ok(directory_alias_add(d, "many@example.com", t, &error), error);
	}
	assert_fails(directory_alias_add(d, "many@example.com", "one-more@elsewhere.net", error_r),
		     "already has 64 targets");

	/* Two aliases of 40 targets each, under a third: too many distinct targets. */
	for (int i = 0; i < 40; i++) {
		snprintf(t, sizeof(t), "a%d@elsewhere.net", i);
		ok(directory_alias_add(d, "half1@example.com", t, &error), error);
		snprintf(t, sizeof(t), "b%d@elsewhere.net", i);
		ok(directory_alias_add(d, "half2@example.com", t, &error), error);
	}
	ok(directory_alias_add(d, "both@example.com", "half1@example.com", &error), error);
	ok(directory_alias_add(d, "both@example.com", "half2@example.com", &error), error);
	struct directory_targets out;
	assert_int_equal(directory_resolve(d, "both", "example.com", &out, &error), -1);
	assert_non_null(strstr(error, "more than 64"));
	assert_int_equal(directory_resolve(d, "many", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 64);
}

static const struct directory_target *find(const struct directory_targets *out, const char *a)
{
	for (int i = 0; i < out->n; i++)
		if (strcmp(out->t[i].address, a) == 0)
			return &out->t[i];
	return NULL;
}

static void test_resolve(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	struct directory_targets out;
	populate(d);

	/* Not a local domain. */
	assert_int_equal(directory_resolve(d, "alice", "example.net", &out, &error), 0);
	assert_int_equal(directory_resolve(d, "alice", "", &out, &error), 0);

	/* Accounts, any case. */
	assert_int_equal(directory_resolve(d, "alice", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 1);
	assert_int_equal(out.t[0].local, 1);
	assert_string_equal(out.t[0].address, "alice@example.com");
	assert_int_equal(directory_resolve(d, "ALICE", "Example.COM", &out, &error), 1);
	assert_string_equal(out.t[0].address, "alice@example.com");
	assert_int_equal(directory_resolve(d, "nobody", "example.com", &out, &error), 2);
	assert_int_equal(directory_resolve(d, "", "example.com", &out, &error), 2);

	/* Subaddressing to an account. */
	assert_int_equal(directory_resolve(d, "Alice+Lists", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 1);
	assert_string_equal(out.t[0].address, "alice@example.com");
	assert_int_equal(directory_resolve(d, "alice+a+b", "example.com", &out, &error), 1);
	assert_int_equal(directory_resolve(d, "+alice", "example.com", &out, &error), 2);
	assert_int_equal(directory_resolve(d, "nobody+x", "example.com", &out, &error), 2);

	/* Aliases: local and external targets. */
	ok(directory_alias_add(d, "team@example.com", "alice@example.com", &error), error);
	ok(directory_alias_add(d, "team@example.com", "BOB@example.com", &error), error);
	ok(directory_alias_add(d, "team@example.com", "partner@elsewhere.net", &error), error);
	assert_int_equal(directory_resolve(d, "Team", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 3);
	assert_int_equal(out.t[0].local, 1);
	assert_string_equal(out.t[0].address, "alice@example.com");
	assert_int_equal(out.t[1].local, 1);
	assert_string_equal(out.t[1].address, "bob@example.com");
	assert_int_equal(out.t[2].local, 0);
	assert_string_equal(out.t[2].address, "partner@elsewhere.net");

	/* Subaddressing to an alias, and a full "+" form that is its own alias. */
	assert_int_equal(directory_resolve(d, "team+x", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 3);
	ok(directory_alias_add(d, "alice+special@example.com", "carol@example.org", &error),
	   error);
	assert_int_equal(directory_resolve(d, "alice+special", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 1);
	assert_string_equal(out.t[0].address, "carol@example.org");

	/* Catch-all only for addresses nobody owns. */
	assert_int_equal(directory_resolve(d, "random", "example.org", &out, &error), 2);
	ok(directory_alias_add(d, "@example.org", "alice@example.com", &error), error);
	assert_int_equal(directory_resolve(d, "random", "example.org", &out, &error), 1);
	assert_int_equal(out.n, 1);
	assert_string_equal(out.t[0].address, "alice@example.com");
	assert_int_equal(directory_resolve(d, "carol", "example.org", &out, &error), 1);
	assert_string_equal(out.t[0].address, "carol@example.org");
	assert_int_equal(directory_resolve(d, "carol+tag", "example.org", &out, &error), 1);
	assert_string_equal(out.t[0].address, "carol@example.org");

	/* Chains, with duplicates removed. */
	ok(directory_alias_add(d, "all@example.com", "team@example.com", &error), error);
	ok(directory_alias_add(d, "all@example.com", "carol@example.org", &error), error);
	ok(directory_alias_add(d, "all@example.com", "alice@example.com", &error), error);
	ok(directory_alias_add(d, "all@example.com", "PARTNER@elsewhere.net", &error), error);
	assert_int_equal(directory_resolve(d, "all", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 4);
	assert_non_null(find(&out, "alice@example.com"));
	assert_non_null(find(&out, "bob@example.com"));
	assert_non_null(find(&out, "carol@example.org"));
	assert_int_equal(find(&out, "partner@elsewhere.net")->local, 0);

	/* An alias to an address caught by a catch-all. */
	ok(directory_alias_add(d, "fwd@example.com", "whoever@example.org", &error), error);
	assert_int_equal(directory_resolve(d, "fwd", "example.com", &out, &error), 1);
	assert_string_equal(out.t[0].address, "alice@example.com");

	/* UTF-8 local part. */
	ok(directory_account_add(d, "d\xc3\xa9sir\xc3\xa9" "e@example.com", HASH1, &error), error);
	assert_int_equal(directory_resolve(d, "D\xc3\xa9sir\xc3\xa9" "e", "example.com", &out,
					   &error),
			 1);
	assert_string_equal(out.t[0].address, "d\xc3\xa9sir\xc3\xa9" "e@example.com");
}

static void test_resolve_dead_targets(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	struct directory_targets out;
	populate(d);
	ok(directory_alias_add(d, "two@example.com", "ghost@example.com", &error), error);
	ok(directory_alias_add(d, "two@example.com", "bob@example.com", &error), error);
	ok(directory_alias_add(d, "gone@example.com", "ghost@example.com", &error), error);
	assert_int_equal(directory_resolve(d, "two", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 1);
	assert_string_equal(out.t[0].address, "bob@example.com");
	assert_int_equal(directory_resolve(d, "gone", "example.com", &out, &error), 2);
	assert_int_equal(out.n, 0);
}

static void test_resolve_loops(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	struct directory_targets out;
	char a[64], b[64];
	populate(d);

	ok(directory_alias_add(d, "ping@example.com", "pong@example.com", &error), error);
	ok(directory_alias_add(d, "pong@example.com", "ping@example.com", &error), error);
	assert_int_equal(directory_resolve(d, "ping", "example.com", &out, &error), -1);
	assert_non_null(strstr(error, "loop"));
	assert_non_null(strstr(error, "ping@example.com -> pong@example.com -> ping@example.com"));
	assert_int_equal(out.n, 0);

	/* A loop through subaddressing: self+x reaches self again. */
	ok(directory_alias_add(d, "self@example.com", "self+x@example.com", &error), error);
	assert_int_equal(directory_resolve(d, "self", "example.com", &out, &error), -1);
	assert_non_null(strstr(error, "loop"));

	/* A catch-all whose target falls back into the catch-all. */
	ok(directory_alias_add(d, "@example.org", "nobody@example.org", &error), error);
	assert_int_equal(directory_resolve(d, "x", "example.org", &out, &error), -1);
	assert_non_null(strstr(error, "loop"));
	/* ...but carol still gets her mail. */
	assert_int_equal(directory_resolve(d, "carol", "example.org", &out, &error), 1);

	/* A diamond is not a loop. */
	ok(directory_alias_add(d, "top@example.com", "left@example.com", &error), error);
	ok(directory_alias_add(d, "top@example.com", "right@example.com", &error), error);
	ok(directory_alias_add(d, "left@example.com", "alice@example.com", &error), error);
	ok(directory_alias_add(d, "right@example.com", "alice@example.com", &error), error);
	assert_int_equal(directory_resolve(d, "top", "example.com", &out, &error), 1);
	assert_int_equal(out.n, 1);

	/* Depth: 8 aliases deep reach the account, 9 do not. */
	for (int i = 0; i < 8; i++) {
		snprintf(a, sizeof(a), "c%d@example.com", i);
		snprintf(b, sizeof(b), "c%d@example.com", i + 1);
		ok(directory_alias_add(d, a, i == 7 ? "alice@example.com" : b, &error), error);
	}
	assert_int_equal(directory_resolve(d, "c0", "example.com", &out, &error), 1);
	assert_string_equal(out.t[0].address, "alice@example.com");
	ok(directory_alias_add(d, "deeper@example.com", "c0@example.com", &error), error);
	assert_int_equal(directory_resolve(d, "deeper", "example.com", &out, &error), -1);
	assert_non_null(strstr(error, "deeper than 8"));
}

static void test_postmaster(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	struct directory_targets out;
	populate(d);
	assert_int_equal(directory_resolve(d, "postmaster", "", &out, &error), 2);
	assert_int_equal(directory_resolve(d, "postmaster", "example.com", &out, &error), 2);
	ok(directory_alias_add(d, "postmaster@example.org", "carol@example.org", &error), error);
	assert_int_equal(directory_resolve(d, "PostMaster", "", &out, &error), 1);
	assert_int_equal(out.n, 1);
	assert_string_equal(out.t[0].address, "carol@example.org");
	ok(directory_alias_add(d, "postmaster@example.com", "bob@example.com", &error), error);
	/* The first domain by name that has one. */
	assert_int_equal(directory_resolve(d, "postmaster", "", &out, &error), 1);
	assert_string_equal(out.t[0].address, "bob@example.com");
	assert_int_equal(directory_resolve(d, "POSTMASTER", "example.org", &out, &error), 1);
	assert_string_equal(out.t[0].address, "carol@example.org");
	assert_int_equal(directory_resolve(d, "abuse", "", &out, &error), 0);
}

static void test_may_send_as(void **state)
{
	struct fixture *f = *state;
	struct directory *d = f->d;
	const char *error = NULL;
	populate(d);
	ok(directory_alias_add(d, "sales@example.com", "alice@example.com", &error), error);
	ok(directory_alias_add(d, "sales@example.com", "bob@example.com", &error), error);
	ok(directory_alias_add(d, "all@example.org", "sales@example.com", &error), error);
	ok(directory_alias_add(d, "@example.com", "alice@example.com", &error), error);
	ok(directory_alias_add(d, "ext@example.com", "alice@elsewhere.net", &error), error);

	assert_int_equal(directory_may_send_as(d, "alice@example.com", ""), 1);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "alice@example.com"), 1);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "Alice@Example.COM"), 1);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "alice+x@example.com"), 1);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "sales@example.com"), 1);
	assert_int_equal(directory_may_send_as(d, "bob@example.com", "SALES@example.com"), 1);
	assert_int_equal(directory_may_send_as(d, "bob@example.com", "sales+q3@example.com"), 1);
	assert_int_equal(directory_may_send_as(d, "bob@example.com", "all@example.org"), 1);
	assert_int_equal(directory_may_send_as(d, "carol@example.org", "sales@example.com"), 0);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "bob@example.com"), 0);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "bob+x@example.com"), 0);
	/* The catch-all is not a licence to send as anything in the domain. */
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "anything@example.com"), 0);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "ext@example.com"), 0);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "alice@elsewhere.net"), 0);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "alice"), 0);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "@example.com"), 0);

	ok(directory_alias_add(d, "loop1@example.com", "loop2@example.com", &error), error);
	ok(directory_alias_add(d, "loop2@example.com", "loop1@example.com", &error), error);
	assert_int_equal(directory_may_send_as(d, "alice@example.com", "loop1@example.com"), -1);
}

static void test_reopen_and_concurrent(void **state)
{
	struct fixture *f = *state;
	const char *error = NULL;
	char hash[256];
	struct directory_targets out;
	populate(f->d);
	ok(directory_alias_add(f->d, "info@example.com", "alice@example.com", &error), error);

	/* A second handle, as another process would have, sees writes at once. */
	struct directory *d2 = directory_open(f->dir, &error);
	assert_non_null(d2);
	assert_int_equal(directory_resolve(d2, "info", "example.com", &out, &error), 1);
	ok(directory_account_add(f->d, "eve@example.com", HASH2, &error), error);
	assert_int_equal(directory_account_hash(d2, "eve@example.com", hash, sizeof(hash)), 1);
	ok(directory_account_del(d2, "eve@example.com", &error), error);
	assert_int_equal(directory_account_hash(f->d, "eve@example.com", hash, sizeof(hash)), 0);
	directory_close(&d2);

	directory_close(&f->d);
	f->d = directory_open(f->dir, &error);
	assert_non_null(f->d);
	assert_int_equal(directory_domain_exists(f->d, "example.org"), 1);
	assert_int_equal(directory_account_hash(f->d, "bob@example.com", hash, sizeof(hash)), 1);
	assert_string_equal(hash, HASH2);
	assert_int_equal(directory_resolve(f->d, "info", "example.com", &out, &error), 1);
	assert_string_equal(out.t[0].address, "alice@example.com");
}

/* Two processes adding accounts at the same time: the busy timeout and IMMEDIATE
 * transactions make both succeed. */
static void test_two_writers(void **state)
{
	struct fixture *f = *state;
	const char *error = NULL;
	ok(directory_domain_add(f->d, "example.com", &error), error);
	directory_close(&f->d);
	pid_t pid = fork();
	assert_true(pid >= 0);
	struct directory *d = directory_open(f->dir, &error);
	int failures = d == NULL;
	for (int i = 0; d != NULL && i < 100; i++) {
		char a[64];
		snprintf(a, sizeof(a), "%s%d@example.com", pid == 0 ? "child" : "parent", i);
		if (directory_account_add(d, a, HASH1, &error) < 0)
			failures++;
	}
	directory_close(&d);
	if (pid == 0)
		_exit(failures == 0 ? 0 : 1);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(failures, 0);

	f->d = directory_open(f->dir, &error);
	assert_non_null(f->d);
	struct collect c = { "" };
	ok(directory_account_list(f->d, "example.com", collect1, &c, &error), error);
	int lines = 0;
	for (const char *p = c.text; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 200);
}

static void test_address_valid(void **state)
{
	const char *why = NULL;
	assert_int_equal(directory_address_valid("a.b-c+d@example.com", 0, &why), 1);
	assert_int_equal(directory_address_valid("\xc3\xa9@example.com", 0, &why), 1);
	assert_int_equal(directory_address_valid("@example.com", 1, &why), 1);
	assert_int_equal(directory_address_valid("@example.com", 0, &why), 0);
	assert_int_equal(directory_address_valid("a@", 0, &why), 0);
	assert_int_equal(directory_address_valid("a", 0, &why), 0);
	assert_int_equal(directory_address_valid("a\"b@example.com", 0, &why), 0);
	assert_int_equal(directory_address_valid("\xc3@example.com", 0, &why), 0);     /* cut */
	assert_int_equal(directory_address_valid("\xed\xa0\x80@example.com", 0, &why), 0); /* surrogate */
	assert_int_equal(directory_address_valid("\xc0\xaf@example.com", 0, &why), 0); /* overlong */
	assert_int_equal(directory_address_valid("a@ex ample.com", 0, &why), 0);
	assert_non_null(why);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_domains, setup, teardown),
		cmocka_unit_test_setup_teardown(test_domain_del_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aliases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alias_target_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_dead_targets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_loops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_postmaster, setup, teardown),
		cmocka_unit_test_setup_teardown(test_may_send_as, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_and_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_writers, setup, teardown),
		cmocka_unit_test(test_address_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
