/* The directory: local domains, accounts and aliases, in SQLite at DATA_DIR/tern.db.
 *
 * Several processes use the database at once (session workers read, the CLI writes):
 * it runs in WAL mode with a 5 s busy timeout.  One struct directory belongs to one
 * thread at a time (its prepared statements are cached in it); open one per thread.
 * Every call does blocking disk I/O: keep it off event loops.
 *
 * Names are stored in canonical form: domains are ASCII and lower-cased; in local parts
 * ASCII letters are lower-cased and UTF-8 is kept as given.  Lookups accept any case
 * and compare ASCII case-insensitively.
 *
 * Errors: *error_r points into the struct directory (or, for directory_open, a static
 * buffer) and stays valid until the next call on it. */
#ifndef TERN_DIRECTORY_DIRECTORY_H
#define TERN_DIRECTORY_DIRECTORY_H

#include <stddef.h>

#define DIRECTORY_DB_NAME     "tern.db"
#define DIRECTORY_MAX_TARGETS 64
/* Longest alias chain directory_resolve follows (alias -> alias -> ... -> account). */
#define DIRECTORY_MAX_DEPTH   8

struct directory;

/* Opens DATA_DIR/tern.db, creating it (mode 0600) and its schema when missing and
 * migrating an older schema.  data_dir must exist.  NULL with *error_r on failure. */
struct directory *directory_open(const char *data_dir, const char **error_r);
/* Closes and frees *dir and sets it to NULL; does nothing when *dir is NULL. */
void directory_close(struct directory **dir);

/* Would address be accepted by directory_account_add (catchall_ok 0) or as an alias
 * address (catchall_ok 1: "@domain" too)?  Checks the form only, not the database.
 * 1 yes; 0 no, with *why_r (static) saying what is wrong. */
int directory_address_valid(const char *address, int catchall_ok, const char **why_r);

/* Domains.  add: error when it exists or is not a valid domain name.  del: error when it
 * does not exist or when accounts or aliases remain in it (the message says how many). */
int directory_domain_add(struct directory *d, const char *domain, const char **error_r);
int directory_domain_del(struct directory *d, const char *domain, const char **error_r);
/* Calls cb once per domain in name order.  cb must not call into d. */
int directory_domain_list(struct directory *d, void (*cb)(void *ctx, const char *domain),
			  void *ctx, const char **error_r);
/* 1 local, 0 not, -1 error.  Any case. */
int directory_domain_exists(struct directory *d, const char *domain);

/* Accounts.  add: the domain must be local, the address must not already be an account
 * or an alias.  password_hash is stored as given (a crypt(3) string; see auth/password.h). */
int directory_account_add(struct directory *d, const char *address, const char *password_hash,
			  const char **error_r);
int directory_account_del(struct directory *d, const char *address, const char **error_r);
int directory_account_passwd(struct directory *d, const char *address,
			     const char *password_hash, const char **error_r);
/* Calls cb once per account (of one domain when domain_or_null is set, which must then be
 * local), in address order.  cb must not call into d. */
int directory_account_list(struct directory *d, const char *domain_or_null,
			   void (*cb)(void *ctx, const char *address), void *ctx,
			   const char **error_r);
/* Copies the account's password hash into hash_r (cap bytes); 1 found, 0 no such
 * account, -1 error (including a hash longer than cap).  address may be any case. */
int directory_account_hash(struct directory *d, const char *address, char *hash_r, size_t cap);

/* Aliases.  address is "user@dom" or "@dom" (the catch-all of dom), dom local, and not an
 * account address (the account would always win).  target is an address, local or
 * external.  An address may have several targets, at most DIRECTORY_MAX_TARGETS.
 * del with target_or_null NULL removes every target of address. */
int directory_alias_add(struct directory *d, const char *address, const char *target,
			const char **error_r);
int directory_alias_del(struct directory *d, const char *address, const char *target_or_null,
			const char **error_r);
/* Calls cb once per (address, target), ordered by domain, then address.  cb must not
 * call into d. */
int directory_alias_list(struct directory *d,
			 void (*cb)(void *ctx, const char *address, const char *target), void *ctx,
			 const char **error_r);

/* local: address is an account ("user@domain", canonical); else an external address
 * to relay to. */
struct directory_target {
	int local;
	char address[512];
};
struct directory_targets {
	struct directory_target t[DIRECTORY_MAX_TARGETS];
	int n;
};

/* Resolves a recipient (local part as received, domain in any case) to delivery targets.
 * Returns 0 when the domain is not local, 1 resolved (out filled, n >= 1), 2 no such
 * user (the domain is local), -1 error with *error_r.
 *  - Order: the account local@domain; the alias local@domain; for "user+tag", the
 *    account, then the alias "user@domain"; the catch-all alias "@domain".
 *  - Alias targets in a local domain are resolved the same way, at most
 *    DIRECTORY_MAX_DEPTH aliases deep; a loop, a deeper chain or more than
 *    DIRECTORY_MAX_TARGETS distinct targets is an error (-1).  A target that leads
 *    nowhere (a deleted account) is skipped and logged; if none is left the result is 2.
 *  - Duplicate targets are removed; targets keep the order of the aliases.
 *  - "postmaster" with domain "" (RFC 5321 4.5.1) resolves as postmaster@D for the first
 *    local domain D, by name, that has a postmaster account or alias; 2 when none has. */
int directory_resolve(struct directory *d, const char *local, const char *domain,
		      struct directory_targets *out, const char **error_r);

/* May the authenticated account use from as MAIL FROM?  1 yes: from is "" (null
 * sender), the account itself, its "+tag" form, or an alias (or its "+tag" form; not a
 * catch-all) whose targets include the account.  0 no, -1 error. */
int directory_may_send_as(struct directory *d, const char *account, const char *from);

#endif
