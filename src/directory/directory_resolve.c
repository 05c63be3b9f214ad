/* Recipient resolution: which mailboxes and external addresses a local address delivers
 * to, and which envelope senders an account may use. */
#include "directory/directory_private.h"

#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct directory_resolver {
	struct directory *d;
	struct directory_targets *out;
	/* The aliases being expanded, outermost first: a key met again is a loop. */
	char path[DIRECTORY_MAX_DEPTH][DIRECTORY_ADDRESS_MAX];
	int depth;
};

/* One alias's targets, copied out so that the statement is free for the recursion. */
struct directory_alias_targets {
	char t[DIRECTORY_MAX_TARGETS][DIRECTORY_ADDRESS_MAX];
	int n;
};

/* strncasecmp() follows the locale; addresses fold ASCII only. */
static int directory_ascii_ncasecmp(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ca = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] - 'A' + 'a') : a[i];
		char cb = b[i] >= 'A' && b[i] <= 'Z' ? (char)(b[i] - 'A' + 'a') : b[i];
		if (ca != cb || ca == '\0')
			return (unsigned char)ca - (unsigned char)cb;
	}
	return 0;
}

static int directory_ascii_casecmp(const char *a, const char *b)
{
	return directory_ascii_ncasecmp(a, b, (size_t)-1);
}

/* Builds the canonical key "local@domain" (local may be empty: the catch-all).
 * 0, or -1 when it cannot be a stored address (too long). */
static int directory_key(char *key, const char *local, size_t llen, const char *domain)
{
	size_t dlen = strlen(domain);
	if (llen > DIRECTORY_LOCAL_MAX || llen + 1 + dlen >= DIRECTORY_ADDRESS_MAX)
		return -1;
	memcpy(key, local, llen);
	key[llen] = '@';
	memcpy(key + llen + 1, domain, dlen + 1);
	directory_ascii_lower(key);
	return 0;
}

static int directory_target_add(struct directory_resolver *r, int local, const char *address)
{
	struct directory_targets *out = r->out;
	for (int i = 0; i < out->n; i++)
		if (out->t[i].local == local && strcmp(out->t[i].address, address) == 0)
			return 0;
	if (out->n >= DIRECTORY_MAX_TARGETS) {
		directory_set_error(r->d, "%s expands to more than %d targets", r->path[0],
				    DIRECTORY_MAX_TARGETS);
		return -1;
	}
	if (strlen(address) >= sizeof(out->t[0].address)) {
		directory_set_error(r->d, "alias target %s too long", address);
		return -1;
	}
	out->t[out->n].local = local;
	snprintf(out->t[out->n].address, sizeof(out->t[0].address), "%s", address);
	out->n++;
	return 0;
}

/* Targets of the alias key; 0 when key is not an alias. */
static int directory_alias_fetch(struct directory *d, const char *key,
				 struct directory_alias_targets *at)
{
	sqlite3_stmt *st = directory_stmt(d, DIR_STMT_ALIAS_TARGETS);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc;
	at->n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);
		/* directory_alias_add caps the targets; more means someone edited the
		 * database by hand, and a silently shortened list would lose mail. */
		if (at->n >= DIRECTORY_MAX_TARGETS) {
			directory_set_error(d, "alias %s has more than %d targets", key,
					    DIRECTORY_MAX_TARGETS);
			sqlite3_reset(st);
			return -1;
		}
		snprintf(at->t[at->n++], DIRECTORY_ADDRESS_MAX, "%s", t ? t : "");
	}
	if (rc != SQLITE_DONE) {
		directory_db_error(d, "tern.db: alias lookup failed");
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return at->n;
}

static int directory_resolve_local(struct directory_resolver *r, const char *local,
				   const char *domain, int catchall);

/* Expands the alias key whose targets are at; 1 done, -1 error. */
static int directory_alias_expand(struct directory_resolver *r, const char *key,
				  const struct directory_alias_targets *at)
{
	for (int i = 0; i < r->depth; i++) {
		if (strcmp(r->path[i], key) == 0) {
			char chain[400] = "";
			for (int j = i; j < r->depth; j++) {
				strncat(chain, r->path[j], sizeof(chain) - strlen(chain) - 1);
				strncat(chain, " -> ", sizeof(chain) - strlen(chain) - 1);
			}
			strncat(chain, key, sizeof(chain) - strlen(chain) - 1);
			directory_set_error(r->d, "alias loop: %s", chain);
			return -1;
		}
	}
	if (r->depth >= DIRECTORY_MAX_DEPTH) {
		directory_set_error(r->d, "aliases from %s nest deeper than %d", r->path[0],
				    DIRECTORY_MAX_DEPTH);
		return -1;
	}
	snprintf(r->path[r->depth++], DIRECTORY_ADDRESS_MAX, "%s", key);

	for (int i = 0; i < at->n; i++) {
		const char *t = at->t[i];
		const char *at_sign = strrchr(t, '@');
		long long id;
		int rc = at_sign ? directory_domain_id(r->d, at_sign + 1, &id) : 0;
		if (rc < 0)
			return -1;
		if (rc == 0) {
			if (directory_target_add(r, 0, t) < 0)
				return -1;
			continue;
		}
		char tlocal[DIRECTORY_LOCAL_MAX + 1];
		size_t llen = (size_t)(at_sign - t);
		if (llen >= sizeof(tlocal)) {
			rc = 2;
		} else {
			memcpy(tlocal, t, llen);
			tlocal[llen] = '\0';
			rc = directory_resolve_local(r, tlocal, at_sign + 1, 1);
		}
		if (rc < 0)
			return -1;
		if (rc == 2)
			/* Usually an account deleted while aliases still name it: the other
			 * targets still get the mail, and the admin learns from the log. */
			log_warn("directory", "event=dead_alias_target alias=%s target=%s", key, t);
	}
	r->depth--;
	return 1;
}

/* Looks key up as an account, then as an alias.  1 found (and added or expanded), 0 not
 * found, -1 error. */
static int directory_resolve_key(struct directory_resolver *r, const char *key)
{
	char addr[DIRECTORY_ADDRESS_MAX];
	int rc = directory_account_find(r->d, key, addr, sizeof(addr));
	if (rc < 0)
		return -1;
	if (rc == 1)
		return directory_target_add(r, 1, addr) < 0 ? -1 : 1;
	/* ~16 KiB: on the heap, as the recursion may hold DIRECTORY_MAX_DEPTH of them. */
	struct directory_alias_targets *at = malloc(sizeof(*at));
	if (at == NULL) {
		directory_set_error(r->d, "out of memory");
		return -1;
	}
	rc = directory_alias_fetch(r->d, key, at);
	if (rc > 0)
		rc = directory_alias_expand(r, key, at);
	free(at);
	return rc;
}

/* Resolves local@domain, domain being local.  1 found, 2 no such user, -1 error. */
static int directory_resolve_local(struct directory_resolver *r, const char *local,
				   const char *domain, int catchall)
{
	char key[DIRECTORY_ADDRESS_MAX];
	size_t llen = strlen(local);
	int rc;

	if (llen == 0)
		return 2;
	if (directory_key(key, local, llen, domain) == 0 &&
	    (rc = directory_resolve_key(r, key)) != 0)
		return rc;
	/* Subaddressing (RFC 5233): "user+tag" reaches "user" when nobody owns the full
	 * form; the first '+' starts the tag. */
	const char *plus = strchr(local, '+');
	if (plus != NULL && plus > local &&
	    directory_key(key, local, (size_t)(plus - local), domain) == 0 &&
	    (rc = directory_resolve_key(r, key)) != 0)
		return rc;
	if (catchall && directory_key(key, "", 0, domain) == 0 &&
	    (rc = directory_resolve_key(r, key)) != 0)
		return rc;
	return 2;
}

int directory_resolve(struct directory *d, const char *local, const char *domain,
		      struct directory_targets *out, const char **error_r)
{
	char dom[DIRECTORY_DOMAIN_MAX + 1];
	long long id;
	*error_r = d->error;
	out->n = 0;

	if (domain[0] == '\0') {
		/* RFC 5321 4.5.1: "postmaster" without a domain must be accepted. */
		if (directory_ascii_casecmp(local, "postmaster") != 0)
			return 0;
		sqlite3_stmt *st = directory_stmt(d, DIR_STMT_POSTMASTER_DOMAIN);
		if (st == NULL)
			return -1;
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			snprintf(dom, sizeof(dom), "%s", (const char *)sqlite3_column_text(st, 0));
		else if (rc != SQLITE_DONE)
			directory_db_error(d, "tern.db: postmaster lookup failed");
		sqlite3_reset(st);
		if (rc != SQLITE_ROW)
			return rc == SQLITE_DONE ? 2 : -1;
	} else if (strlen(domain) >= sizeof(dom)) {
		return 0;
	} else {
		memcpy(dom, domain, strlen(domain) + 1);
		directory_ascii_lower(dom);
	}

	int rc = directory_domain_id(d, dom, &id);
	if (rc <= 0)
		return rc;
	/* ~18 KiB of loop-detection path: keep it off small worker-thread stacks. */
	struct directory_resolver *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		directory_set_error(d, "out of memory");
		return -1;
	}
	r->d = d;
	r->out = out;
	if (directory_key(r->path[0], local, strlen(local), dom) < 0)
		snprintf(r->path[0], sizeof(r->path[0]), "@%s", dom);
	rc = directory_resolve_local(r, local, dom, 1);
	free(r);
	if (rc < 0) {
		out->n = 0;
		return -1;
	}
	return out->n > 0 ? 1 : 2;
}

int directory_may_send_as(struct directory *d, const char *account, const char *from)
{
	if (from[0] == '\0')
		return 1;
	if (directory_ascii_casecmp(account, from) == 0)
		return 1;
	const char *at = strrchr(from, '@');
	const char *acct_at = strrchr(account, '@');
	if (at == NULL || at == from || acct_at == NULL)
		return 0;
	const char *plus = memchr(from, '+', (size_t)(at - from));
	/* user+tag@domain for the account user@domain. */
	if (plus != NULL && plus > from && (size_t)(plus - from) == (size_t)(acct_at - account) &&
	    directory_ascii_ncasecmp(from, account, (size_t)(plus - from)) == 0 &&
	    directory_ascii_casecmp(at, acct_at) == 0)
		return 1;

	char local[DIRECTORY_LOCAL_MAX + 1];
	size_t llen = (size_t)(at - from);
	if (llen >= sizeof(local))
		return 0;
	memcpy(local, from, llen);
	local[llen] = '\0';
	long long id;
	char dom[DIRECTORY_DOMAIN_MAX + 1];
	if (strlen(at + 1) >= sizeof(dom))
		return 0;
	snprintf(dom, sizeof(dom), "%s", at + 1);
	directory_ascii_lower(dom);
	int rc = directory_domain_id(d, dom, &id);
	if (rc <= 0)
		return rc;

	struct directory_targets *out = calloc(1, sizeof(*out));
	struct directory_resolver *r = calloc(1, sizeof(*r));
	int ret = -1;
	if (out == NULL || r == NULL)
		goto done;
	r->d = d;
	r->out = out;
	snprintf(r->path[0], sizeof(r->path[0]), "%s", from);
	/* Without the catch-all: it would let an account send as anything in its domain. */
	rc = directory_resolve_local(r, local, dom, 0);
	if (rc < 0)
		goto done;
	ret = 0;
	for (int i = 0; rc == 1 && i < out->n; i++)
		if (out->t[i].local && directory_ascii_casecmp(out->t[i].address, account) == 0)
			ret = 1;
done:
	free(out);
	free(r);
	return ret;
}
