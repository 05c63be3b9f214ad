/* Shared by the files of src/directory/: the handle, its statement cache and the
 * name checks. */
#ifndef TERN_DIRECTORY_DIRECTORY_PRIVATE_H
#define TERN_DIRECTORY_DIRECTORY_PRIVATE_H

#include "directory/directory.h"

#include <sqlite3.h>

/* RFC 5321 4.5.3.1: 64 for a local part, 255 for a domain, 256 for a path with its
 * angle brackets; so 254 for a bare address. */
#define DIRECTORY_LOCAL_MAX   64
#define DIRECTORY_DOMAIN_MAX  253
#define DIRECTORY_ADDRESS_MAX 256 /* buffer size, NUL included */

enum directory_stmt {
	DIR_STMT_DOMAIN_ADD,
	DIR_STMT_DOMAIN_DEL,
	DIR_STMT_DOMAIN_ID,
	DIR_STMT_DOMAIN_LIST,
	DIR_STMT_DOMAIN_ACCOUNTS,
	DIR_STMT_DOMAIN_ALIASES,
	DIR_STMT_POSTMASTER_DOMAIN,
	DIR_STMT_ACCOUNT_ADD,
	DIR_STMT_ACCOUNT_DEL,
	DIR_STMT_ACCOUNT_PASSWD,
	DIR_STMT_ACCOUNT_GET,
	DIR_STMT_ACCOUNT_LIST,
	DIR_STMT_ACCOUNT_LIST_DOMAIN,
	DIR_STMT_ALIAS_ADD,
	DIR_STMT_ALIAS_DEL_ONE,
	DIR_STMT_ALIAS_DEL_ALL,
	DIR_STMT_ALIAS_TARGETS,
	DIR_STMT_ALIAS_COUNT,
	DIR_STMT_ALIAS_LIST,
	DIR_STMT_COUNT
};

struct directory {
	sqlite3 *db;
	sqlite3_stmt *stmt[DIR_STMT_COUNT];
	char error[512];
};

/* The cached statement id, prepared on first use and reset; NULL with d->error set. */
sqlite3_stmt *directory_stmt(struct directory *d, enum directory_stmt id);
void directory_set_error(struct directory *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Sets d->error to "what: SQLite's message" and returns -1. */
int directory_db_error(struct directory *d, const char *what);

/* Checks domain and writes its canonical (lower-case) form to out.  0 or -1. */
int directory_canon_domain(const char *domain, char *out, size_t cap);
/* Checks address ("local@domain", or "@domain" when catchall_ok) and writes its
 * canonical form to out; *domain_r points at the domain inside out.  0, or -1 with *why
 * (static). */
int directory_canon_address(const char *address, int catchall_ok, char *out, size_t cap,
			    const char **domain_r, const char **why);
/* Lower-cases the ASCII letters of s in place (UTF-8 bytes are left alone). */
void directory_ascii_lower(char *s);

/* 1 with *id_r, 0 missing, -1 error (d->error).  domain canonical. */
int directory_domain_id(struct directory *d, const char *domain, long long *id_r);
/* Is address (any case) an account?  1 with its canonical address copied to addr_r
 * (may be NULL), 0 no, -1 error. */
int directory_account_find(struct directory *d, const char *address, char *addr_r,
			   size_t cap);

#endif
