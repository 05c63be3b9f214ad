/* The user's store: names and folders, the mailbox operations (LIST, CREATE, DELETE,
 * RENAME, SUBSCRIBE), APPEND, the POP3 lock and the index rebuild.  The selected
 * mailbox lives in mstore_sync.c.
 *
 * On disk (MAIL_ROOT/DOMAIN/USER/):
 *   cur/ new/ tmp/        INBOX
 *   .A.B/{cur,new,tmp}    mailbox "A/B"; '.' and '%' in a component are %2E and %25
 *   .A.B/maildirfolder    the Maildir++ marker other tools look for
 *   index.db (+ -wal, -shm)  the index (store/mail_index.h)
 *   pop3.lock             flocked by the POP3 session that holds the maildir */
#include "store/mstore_private.h"

#include "base/file.h"
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---- open ----------------------------------------------------------------------------- */

static const struct {
	const char *name;
	unsigned special;
} mstore_defaults[] = {
	{ "INBOX", 0 },
	{ "Sent", MSTORE_SPECIAL_SENT },
	{ "Drafts", MSTORE_SPECIAL_DRAFTS },
	{ "Trash", MSTORE_SPECIAL_TRASH },
	{ "Junk", MSTORE_SPECIAL_JUNK },
	{ "Archive", MSTORE_SPECIAL_ARCHIVE },
};

/* Inserts mailbox name (normalised, not yet in the index) with its folder unless
 * noselect.  The folder goes to undo. */
static int mstore_box_insert_locked(struct mstore *st, const char *name, unsigned special,
				    int noselect, struct mstore_undo *undo,
				    struct mail_index_box *row_r, const char **error_r)
{
	struct mail_index_box row;
	const char *ixerr = NULL;
	char path[MSTORE_PATH_MAX];
	memset(&row, 0, sizeof(row));
	snprintf(row.name, sizeof(row.name), "%s", name);
	row.special = special;
	row.noselect = noselect;
	row.uidnext = 1;
	row.highestmodseq = 1;
	/* Never scanned: the first open reads cur/, which may hold files already (a
	 * folder left by another server, or a rebuilt index). */
	row.cur_mtime = MAIL_INDEX_MTIME_NONE;
	int ret = mstore_uidvalidity_new(st, &row.uidvalidity, error_r);
	if (ret != MSTORE_OK)
		return ret;
	if (!noselect && strcmp(name, "INBOX") != 0) {
		if (mstore_box_path(st, name, path, sizeof(path)) < 0)
			return mstore_fail(error_r, MSTORE_BAD_NAME, "path of '%s' too long", name);
		struct stat sb;
		int existed = lstat(path, &sb) == 0;
		ret = mstore_folder_create(path, error_r);
		if (ret != MSTORE_OK)
			return ret;
		if (!existed && undo != NULL && mstore_undo_add(undo, MSTORE_UNDO_RMTREE, path,
								NULL) < 0) {
			mstore_tree_remove(path);
			return mstore_fail(error_r, MSTORE_IO, "out of memory");
		}
	}
	if (st->ix->ops->box_insert(st->ix, &row, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	if (row_r != NULL)
		*row_r = row;
	return MSTORE_OK;
}

/* Makes every ancestor of name exist (selectable, as CREATE does). */
static int mstore_parents_ensure(struct mstore *st, const char *name, struct mstore_undo *undo,
				 const char **error_r)
{
	char parent[MSTORE_NAME_MAX];
	struct mail_index_box row;
	const char *ixerr = NULL;
	for (const char *slash = strchr(name, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
		size_t len = (size_t)(slash - name);
		memcpy(parent, name, len);
		parent[len] = '\0';
		int found = st->ix->ops->box_get(st->ix, parent, &row, &ixerr);
		if (found < 0)
			return mstore_ix_fail(error_r, ixerr);
		if (found)
			continue;
		int ret = mstore_box_insert_locked(st, parent, 0, 0, undo, NULL, error_r);
		if (ret != MSTORE_OK)
			return ret;
	}
	return MSTORE_OK;
}

static int mstore_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Registers the dot-folders already in the user's root: an index created next to
 * existing mail (a lost index.db, a migration, mstore_reindex) must show it. */
static int mstore_folders_discover(struct mstore *st, const char **error_r)
{
	DIR *d = opendir(st->root);
	if (d == NULL)
		return mstore_fail(error_r, MSTORE_IO, "cannot read %s: %s", st->root,
				   strerror(errno));
	char **names = NULL;
	size_t n = 0, cap = 0;
	int ret = MSTORE_OK;
	struct dirent *de;
	char decoded[MSTORE_NAME_MAX * 2], norm[MSTORE_NAME_MAX], sub[MSTORE_PATH_MAX];
	while ((de = readdir(d)) != NULL && ret == MSTORE_OK) {
		if (de->d_name[0] != '.' || de->d_name[1] == '\0' || de->d_name[1] == '.')
			continue;
		if (mstore_folder_decode(de->d_name, decoded, sizeof(decoded)) < 0 ||
		    mstore_name_normalize(decoded, norm, NULL) != MSTORE_OK ||
		    strcmp(norm, "INBOX") == 0)
			continue;
		/* Only a folder that is exactly our spelling of its name, so that two
		 * spellings can never claim the same mailbox. */
		char again[MSTORE_FILE_MAX * 3];
		mstore_folder_encode(norm, again, sizeof(again));
		struct stat sb;
		snprintf(sub, sizeof(sub), "%s/%s/cur", st->root, de->d_name);
		if (strcmp(again, de->d_name) != 0 || stat(sub, &sb) < 0 || !S_ISDIR(sb.st_mode))
			continue;
		if (n == cap) {
			size_t ncap = cap == 0 ? 16 : cap * 2;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (nn == NULL) {
				ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
				break;
			}
			names = nn;
			cap = ncap;
		}
		if (n >= MSTORE_MAILBOXES_MAX || (names[n] = strdup(norm)) == NULL) {
			ret = mstore_fail(error_r, MSTORE_LIMIT, "too many folders in %s", st->root);
			break;
		}
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), mstore_name_cmp);
	/* Sorted, so a parent comes before its children; a missing parent is noselect:
	 * it exists only because of its children. */
	for (size_t i = 0; i < n && ret == MSTORE_OK; i++) {
		struct mail_index_box row;
		const char *ixerr = NULL;
		char parent[MSTORE_NAME_MAX];
		for (const char *slash = strchr(names[i], '/'); slash != NULL && ret == MSTORE_OK;
		     slash = strchr(slash + 1, '/')) {
			size_t len = (size_t)(slash - names[i]);
			memcpy(parent, names[i], len);
			parent[len] = '\0';
			int found = st->ix->ops->box_get(st->ix, parent, &row, &ixerr);
			if (found < 0)
				ret = mstore_ix_fail(error_r, ixerr);
			else if (!found)
				ret = mstore_box_insert_locked(st, parent, 0, 1, NULL, NULL, error_r);
		}
		if (ret != MSTORE_OK)
			break;
		int found = st->ix->ops->box_get(st->ix, names[i], &row, &ixerr);
		if (found < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
		} else if (found && row.noselect) {
			row.noselect = 0;
			if (st->ix->ops->box_update(st->ix, &row, &ixerr) < 0)
				ret = mstore_ix_fail(error_r, ixerr);
		} else if (!found) {
			ret = mstore_box_insert_locked(st, names[i], 0, 0, NULL, NULL, error_r);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return ret;
}

/* First use of an index: existing folders, then the default mailboxes. */
static int mstore_defaults_ensure(struct mstore *st, const char **error_r)
{
	struct mail_index *ix = st->ix;
	struct mail_index_box row;
	const char *ixerr = NULL;
	int found = ix->ops->box_get(ix, "INBOX", &row, &ixerr);
	if (found < 0)
		return mstore_ix_fail(error_r, ixerr);
	if (found)
		return MSTORE_OK;
	if (ix->ops->begin(ix, 1, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	/* Another session may have done it while we waited for the lock. */
	found = ix->ops->box_get(ix, "INBOX", &row, &ixerr);
	int ret = found < 0 ? mstore_ix_fail(error_r, ixerr) : MSTORE_OK;
	if (found == 0)
		ret = mstore_folders_discover(st, error_r);
	for (size_t i = 0; found == 0 && ret == MSTORE_OK &&
			   i < sizeof(mstore_defaults) / sizeof(mstore_defaults[0]);
	     i++) {
		int exists = ix->ops->box_get(ix, mstore_defaults[i].name, &row, &ixerr);
		if (exists < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
		} else if (exists) {
			/* A discovered folder of a default name gets its special use. */
			row.special = mstore_defaults[i].special;
			if (ix->ops->box_update(ix, &row, &ixerr) < 0)
				ret = mstore_ix_fail(error_r, ixerr);
		} else {
			ret = mstore_box_insert_locked(st, mstore_defaults[i].name,
						       mstore_defaults[i].special, 0, NULL, NULL,
						       error_r);
		}
		if (ret == MSTORE_OK && ix->ops->sub_set(ix, mstore_defaults[i].name, 1, &ixerr) < 0)
			ret = mstore_ix_fail(error_r, ixerr);
	}
	if (ret != MSTORE_OK) {
		ix->ops->rollback(ix);
		return ret;
	}
	if (ix->ops->commit(ix, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

/* The same rules as maildir_ensure(), but classified: a bad name is the caller's. */
static int mstore_user_name_valid(const char *s)
{
	if (s == NULL || s[0] == '\0' || s[0] == '.' || strlen(s) > 255)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

static void mstore_host_init(struct mstore *st)
{
	char host[64];
	if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	/* '/' and ':' would change the path or the info part, ',' would fake an S=. */
	size_t o = 0;
	for (const char *p = host; *p != '\0' && o + 5 < sizeof(st->host); p++) {
		if (*p == '/' || *p == ':' || *p == ',') {
			o += (size_t)snprintf(st->host + o, sizeof(st->host) - o, "\\%03o",
					      (unsigned char)*p);
		} else if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			st->host[o++] = '_';
		} else {
			st->host[o++] = *p;
		}
	}
	st->host[o] = '\0';
}

/* A store on root with its index at index_path (mstore_reindex builds a new one). */
static int mstore_open_at(const char *root, const char *index_path, uint32_t uv_floor,
			  struct mstore **st_r, const char **error_r)
{
	struct mstore *st = calloc(1, sizeof(*st));
	const char *ixerr = NULL;
	if (st == NULL)
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	snprintf(st->root, sizeof(st->root), "%s", root);
	st->uidvalidity_floor = uv_floor;
	mstore_host_init(st);
	if (mail_index_sqlite_open(index_path, &st->ix, &ixerr) < 0) {
		free(st);
		return mstore_ix_fail(error_r, ixerr);
	}
	int ret = mstore_defaults_ensure(st, error_r);
	if (ret != MSTORE_OK) {
		mstore_close(&st);
		return ret;
	}
	*st_r = st;
	return MSTORE_OK;
}

static int mstore_root(const char *mail_root, const char *domain, const char *user, char *root,
		       const char **error_r)
{
	const char *merr = NULL;
	if (!mstore_user_name_valid(domain) || !mstore_user_name_valid(user))
		return mstore_fail(error_r, MSTORE_BAD_NAME, "invalid mail user '%s@%s'",
				   user != NULL ? user : "", domain != NULL ? domain : "");
	if (mail_root == NULL || strlen(mail_root) + 600 >= MSTORE_ROOT_MAX)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "mail root path too long");
	if (maildir_ensure(mail_root, domain, user, root, MSTORE_ROOT_MAX, &merr) < 0)
		return mstore_fail(error_r, MSTORE_IO, "%s", merr);
	return MSTORE_OK;
}

int mstore_open(const char *mail_root, const char *domain, const char *user,
		struct mstore **st_r, const char **error_r)
{
	char root[MSTORE_ROOT_MAX], index_path[MSTORE_PATH_MAX];
	int ret = mstore_root(mail_root, domain, user, root, error_r);
	if (ret != MSTORE_OK)
		return ret;
	snprintf(index_path, sizeof(index_path), "%s/index.db", root);
	return mstore_open_at(root, index_path, 0, st_r, error_r);
}

void mstore_close(struct mstore **stp)
{
	struct mstore *st = *stp;
	if (st == NULL)
		return;
	*stp = NULL;
	if (st->ix != NULL)
		st->ix->ops->close(st->ix);
	free(st);
}

const char *mstore_path(const struct mstore *st)
{
	return st->root;
}

/* ---- mailboxes ------------------------------------------------------------------------ */

static int mstore_row_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mail_index_box *)a)->name,
		      ((const struct mail_index_box *)b)->name);
}

int mstore_list(struct mstore *st, struct mstore_mailbox **boxes_r, size_t *n_r,
		const char **error_r)
{
	struct mail_index_box *rows;
	size_t n;
	const char *ixerr = NULL;
	if (st->ix->ops->box_list(st->ix, &rows, &n, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	struct mstore_mailbox *out = calloc(n > 0 ? n : 1, sizeof(*out));
	if (out == NULL) {
		free(rows);
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	/* The index sorts by memcmp, which for NUL-free strings is strcmp: a parent is
	 * found by binary search. */
	int *has_children = calloc(n > 0 ? n : 1, sizeof(*has_children));
	if (has_children == NULL) {
		free(rows);
		free(out);
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		struct mail_index_box key;
		char *slash = strrchr(rows[i].name, '/');
		if (slash == NULL)
			continue;
		size_t len = (size_t)(slash - rows[i].name);
		memcpy(key.name, rows[i].name, len);
		key.name[len] = '\0';
		struct mail_index_box *p = bsearch(&key, rows, n, sizeof(*rows), mstore_row_cmp);
		if (p != NULL)
			has_children[p - rows] = 1;
	}
	size_t o = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			int inbox = strcmp(rows[i].name, "INBOX") == 0;
			if (inbox != (pass == 0))
				continue;
			struct mstore_mailbox *mb = &out[o++];
			snprintf(mb->name, sizeof(mb->name), "%s", rows[i].name);
			mb->special = rows[i].special;
			mb->subscribed = rows[i].subscribed;
			mb->noselect = rows[i].noselect;
			mb->has_children = has_children[i];
		}
	}
	free(has_children);
	free(rows);
	*boxes_r = out;
	*n_r = n;
	return MSTORE_OK;
}

int mstore_status(struct mstore *st, const char *name, struct mstore_mailbox *mb_r,
		  const char **error_r)
{
	struct mstore_box *box;
	int ret = mstore_box_open(st, name, 1, &box, error_r);
	if (ret != MSTORE_OK)
		return ret;
	*mb_r = *mstore_box_info(box);
	mstore_box_close(&box);
	return MSTORE_OK;
}

static int mstore_box_count(struct mstore *st, size_t *n_r, const char **error_r)
{
	struct mail_index_box *rows;
	const char *ixerr = NULL;
	if (st->ix->ops->box_list(st->ix, &rows, n_r, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	free(rows);
	return MSTORE_OK;
}

/* Ends a write transaction: commit, or roll back the index and the files. */
static int mstore_finish(struct mstore *st, int ret, struct mstore_undo *undo,
			 const char **error_r)
{
	const char *ixerr = NULL;
	if (ret == MSTORE_OK && st->ix->ops->commit(st->ix, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	if (ret != MSTORE_OK) {
		st->ix->ops->rollback(st->ix);
		mstore_undo_run(undo);
	} else {
		mstore_undo_free(undo);
		mstore_touch_changed(st);
	}
	return ret;
}

int mstore_create(struct mstore *st, const char *name, unsigned special, const char **error_r)
{
	char norm[MSTORE_NAME_MAX], path[MSTORE_PATH_MAX];
	struct mail_index *ix = st->ix;
	struct mail_index_box row;
	struct mstore_undo undo = { 0 };
	const char *ixerr = NULL;
	int ret = mstore_name_normalize(name, norm, error_r);
	if (ret != MSTORE_OK)
		return ret;
	if (strcmp(norm, "INBOX") == 0)
		return mstore_fail(error_r, MSTORE_EXISTS, "INBOX always exists");
	if (ix->ops->begin(ix, 1, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	int found = ix->ops->box_get(ix, norm, &row, &ixerr);
	size_t count = 0;
	if (found < 0) {
		ret = mstore_ix_fail(error_r, ixerr);
	} else if (found && !row.noselect) {
		ret = mstore_fail(error_r, MSTORE_EXISTS, "mailbox '%s' exists", norm);
	} else if (found) {
		/* A parent left by DELETE becomes a mailbox again. */
		if (mstore_box_path(st, norm, path, sizeof(path)) < 0)
			ret = mstore_fail(error_r, MSTORE_BAD_NAME, "path too long");
		else if ((ret = mstore_folder_create(path, error_r)) == MSTORE_OK &&
			 mstore_undo_add(&undo, MSTORE_UNDO_RMTREE, path, NULL) < 0)
			ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
		row.noselect = 0;
		row.special = special;
		row.cur_mtime = MAIL_INDEX_MTIME_NONE;
		if (ret == MSTORE_OK && ix->ops->box_update(ix, &row, &ixerr) < 0)
			ret = mstore_ix_fail(error_r, ixerr);
	} else if ((ret = mstore_box_count(st, &count, error_r)) != MSTORE_OK) {
		/* ret set */
	} else if (count >= MSTORE_MAILBOXES_MAX) {
		ret = mstore_fail(error_r, MSTORE_LIMIT, "too many mailboxes");
	} else if ((ret = mstore_parents_ensure(st, norm, &undo, error_r)) == MSTORE_OK) {
		ret = mstore_box_insert_locked(st, norm, special, 0, &undo, NULL, error_r);
	}
	return mstore_finish(st, ret, &undo, error_r);
}

/* Whether any mailbox is below name ("name/..."). */
static int mstore_has_children(struct mstore *st, const char *name, int *yes_r,
			       const char **error_r)
{
	struct mail_index_box *rows;
	size_t n;
	const char *ixerr = NULL;
	if (st->ix->ops->box_list(st->ix, &rows, &n, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	size_t len = strlen(name);
	*yes_r = 0;
	for (size_t i = 0; i < n && !*yes_r; i++)
		*yes_r = strncmp(rows[i].name, name, len) == 0 && rows[i].name[len] == '/';
	free(rows);
	return MSTORE_OK;
}

/* Moves a folder aside (atomically, for other sessions) so that it can be removed
 * after the commit, or put back if the commit fails. */
static int mstore_folder_aside(struct mstore *st, const char *path, char *aside, size_t cap,
			       struct mstore_undo *undo, const char **error_r)
{
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	/* "..deleted": the empty first component is no mailbox name, so nothing would
	 * ever register it as one. */
	snprintf(aside, cap, "%s/..deleted.%016llx", st->root, (unsigned long long)rnd);
	if (rename(path, aside) < 0) {
		if (errno == ENOENT) {
			aside[0] = '\0';
			return MSTORE_OK;
		}
		return mstore_fail(error_r, MSTORE_IO, "cannot rename %s: %s", path,
				   strerror(errno));
	}
	if (mstore_undo_add(undo, MSTORE_UNDO_RENAME, aside, path) < 0) {
		rename(aside, path);
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	return MSTORE_OK;
}

int mstore_delete(struct mstore *st, const char *name, const char **error_r)
{
	char norm[MSTORE_NAME_MAX], path[MSTORE_PATH_MAX], aside[MSTORE_PATH_MAX];
	struct mail_index *ix = st->ix;
	struct mail_index_box row;
	struct mstore_undo undo = { 0 };
	const char *ixerr = NULL;
	int ret = mstore_name_normalize(name, norm, error_r);
	if (ret != MSTORE_OK)
		return ret;
	if (strcmp(norm, "INBOX") == 0)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "INBOX cannot be deleted");
	if (mstore_box_path(st, norm, path, sizeof(path)) < 0)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "path too long");
	if (ix->ops->begin(ix, 1, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	aside[0] = '\0';
	int children = 0;
	int found = ix->ops->box_get(ix, norm, &row, &ixerr);
	if (found < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	else if (!found)
		ret = mstore_fail(error_r, MSTORE_NOT_FOUND, "no mailbox '%s'", norm);
	else
		ret = mstore_has_children(st, norm, &children, error_r);
	if (ret == MSTORE_OK && children && row.noselect)
		/* RFC 9051 6.3.5: nothing left to delete but the hierarchy. */
		ret = mstore_fail(error_r, MSTORE_BAD_NAME,
				  "mailbox '%s' has children and is not selectable", norm);
	if (ret == MSTORE_OK && !row.noselect)
		ret = mstore_folder_aside(st, path, aside, sizeof(aside), &undo, error_r);
	if (ret == MSTORE_OK && ix->ops->box_clear(ix, row.id, !children, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	if (ret == MSTORE_OK && children) {
		/* Its messages go; the name stays as the children's parent. */
		row.noselect = 1;
		row.messages = row.unseen = row.deleted = 0;
		row.size = 0;
		row.cur_mtime = MAIL_INDEX_MTIME_NONE;
		if (ix->ops->box_update(ix, &row, &ixerr) < 0)
			ret = mstore_ix_fail(error_r, ixerr);
	}
	ret = mstore_finish(st, ret, &undo, error_r);
	if (ret == MSTORE_OK && aside[0] != '\0')
		mstore_tree_remove(aside);
	return ret;
}

/* RENAME INBOX (RFC 9051 6.3.6): its messages move to a new mailbox "to"; INBOX
 * stays, empty, with its UIDVALIDITY and UIDNEXT (no UID is ever reused). */
static int mstore_rename_inbox(struct mstore *st, const char *to, struct mstore_undo *undo,
			       const char **error_r)
{
	struct mail_index *ix = st->ix;
	struct mail_index_box inbox, dest;
	const char *ixerr = NULL;
	char to_path[MSTORE_PATH_MAX], src[MSTORE_PATH_MAX + MSTORE_FILE_MAX],
		dst[MSTORE_PATH_MAX + MSTORE_FILE_MAX], cur[MSTORE_PATH_MAX];
	int found = ix->ops->box_get(ix, "INBOX", &inbox, &ixerr);
	if (found <= 0)
		return found < 0 ? mstore_ix_fail(error_r, ixerr) :
				   mstore_fail(error_r, MSTORE_NOT_FOUND, "no INBOX in the index");
	/* Mail still in new/ moves too. */
	int ret = mstore_sync_locked(st, &inbox, st->root, NULL, NULL, error_r);
	if (ret != MSTORE_OK)
		return ret;
	if ((ret = mstore_parents_ensure(st, to, undo, error_r)) != MSTORE_OK ||
	    (ret = mstore_box_insert_locked(st, to, 0, 0, undo, &dest, error_r)) != MSTORE_OK)
		return ret;
	if (mstore_box_path(st, to, to_path, sizeof(to_path)) < 0)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "path too long");

	snprintf(cur, sizeof(cur), "%s/cur", st->root);
	DIR *d = opendir(cur);
	if (d == NULL)
		return mstore_fail(error_r, MSTORE_IO, "cannot read %s: %s", cur, strerror(errno));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(src, sizeof(src), "%s/%s", cur, de->d_name);
		snprintf(dst, sizeof(dst), "%s/cur/%s", to_path, de->d_name);
		if (rename(src, dst) < 0) {
			if (errno == ENOENT)
				continue;
			ret = mstore_fail(error_r, MSTORE_IO, "cannot rename %s: %s", src,
					  strerror(errno));
			break;
		}
		if (mstore_undo_add(undo, MSTORE_UNDO_RENAME, dst, src) < 0) {
			rename(dst, src);
			ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
			break;
		}
	}
	closedir(d);
	if (ret != MSTORE_OK)
		return ret;
	/* Every UID of INBOX, to report as expunged there (QRESYNC clients). */
	struct mstore_msglist list = { 0 };
	struct mail_index_query q = { .uid_min = 1, .uid_max = UINT32_MAX };
	if (ix->ops->msg_each(ix, inbox.id, &q, mstore_msglist_cb, &list, &ixerr) < 0) {
		ret = list.error != NULL ? mstore_fail(error_r, MSTORE_IO, "%s", list.error) :
					   mstore_ix_fail(error_r, ixerr);
		mstore_msglist_free(&list);
		return ret;
	}
	if (ix->ops->box_move_messages(ix, inbox.id, dest.id, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	dest.uidnext = inbox.uidnext;
	dest.highestmodseq = inbox.highestmodseq;
	dest.messages = inbox.messages;
	dest.unseen = inbox.unseen;
	dest.deleted = inbox.deleted;
	dest.size = inbox.size;
	inbox.messages = inbox.unseen = inbox.deleted = 0;
	inbox.size = 0;
	inbox.highestmodseq++;
	inbox.cur_mtime = MAIL_INDEX_MTIME_NONE;
	/* msg_expunge on rows that moved away deletes nothing and records the UID. */
	for (size_t i = 0; i < list.n; i++) {
		if (ix->ops->msg_expunge(ix, inbox.id, list.msgs[i].uid, inbox.highestmodseq,
					 &ixerr) < 0) {
			mstore_msglist_free(&list);
			return mstore_ix_fail(error_r, ixerr);
		}
	}
	mstore_msglist_free(&list);
	snprintf(dst, sizeof(dst), "%s/cur", to_path);
	if (file_fsync_dir(dst) < 0 || file_fsync_dir(cur) < 0)
		return mstore_fail(error_r, mstore_errno_status(errno), "cannot fsync %s: %s",
				   dst, strerror(errno));
	if (ix->ops->box_update(ix, &inbox, &ixerr) < 0 ||
	    ix->ops->box_update(ix, &dest, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

int mstore_rename(struct mstore *st, const char *from, const char *to, const char **error_r)
{
	char nfrom[MSTORE_NAME_MAX], nto[MSTORE_NAME_MAX];
	struct mail_index *ix = st->ix;
	struct mail_index_box row;
	struct mstore_undo undo = { 0 };
	const char *ixerr = NULL;
	int ret = mstore_name_normalize(from, nfrom, error_r);
	if (ret == MSTORE_OK)
		ret = mstore_name_normalize(to, nto, error_r);
	if (ret != MSTORE_OK)
		return ret;
	size_t flen = strlen(nfrom);
	if (strcmp(nto, "INBOX") == 0)
		return mstore_fail(error_r, MSTORE_EXISTS, "INBOX always exists");
	if (strcmp(nfrom, nto) == 0 || (strncmp(nto, nfrom, flen) == 0 && nto[flen] == '/'))
		return mstore_fail(error_r, MSTORE_BAD_NAME, "cannot rename '%s' into itself",
				   nfrom);
	if (ix->ops->begin(ix, 1, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	int found = ix->ops->box_get(ix, nto, &row, &ixerr);
	if (found != 0) {
		ret = found < 0 ? mstore_ix_fail(error_r, ixerr) :
				  mstore_fail(error_r, MSTORE_EXISTS, "mailbox '%s' exists", nto);
		return mstore_finish(st, ret, &undo, error_r);
	}
	if (strcmp(nfrom, "INBOX") == 0) {
		ret = mstore_rename_inbox(st, nto, &undo, error_r);
		return mstore_finish(st, ret, &undo, error_r);
	}
	found = ix->ops->box_get(ix, nfrom, &row, &ixerr);
	if (found <= 0) {
		ret = found < 0 ? mstore_ix_fail(error_r, ixerr) :
				  mstore_fail(error_r, MSTORE_NOT_FOUND, "no mailbox '%s'", nfrom);
		return mstore_finish(st, ret, &undo, error_r);
	}

	struct mail_index_box *rows = NULL;
	size_t n = 0;
	if (ix->ops->box_list(ix, &rows, &n, &ixerr) < 0)
		return mstore_finish(st, mstore_ix_fail(error_r, ixerr), &undo, error_r);
	/* Check every new name first: the whole hierarchy moves, or nothing does. */
	char newname[MSTORE_NAME_MAX * 2], norm[MSTORE_NAME_MAX];
	for (size_t i = 0; i < n && ret == MSTORE_OK; i++) {
		if (strncmp(rows[i].name, nfrom, flen) != 0 ||
		    (rows[i].name[flen] != '\0' && rows[i].name[flen] != '/'))
			continue;
		snprintf(newname, sizeof(newname), "%s%s", nto, rows[i].name + flen);
		ret = mstore_name_normalize(newname, norm, error_r);
		struct mail_index_box other;
		found = ret == MSTORE_OK ? ix->ops->box_get(ix, norm, &other, &ixerr) : 0;
		if (found < 0)
			ret = mstore_ix_fail(error_r, ixerr);
		else if (found)
			ret = mstore_fail(error_r, MSTORE_EXISTS, "mailbox '%s' exists", norm);
	}
	if (ret == MSTORE_OK)
		ret = mstore_parents_ensure(st, nto, &undo, error_r);
	char opath[MSTORE_PATH_MAX], npath[MSTORE_PATH_MAX];
	for (size_t i = 0; i < n && ret == MSTORE_OK; i++) {
		if (strncmp(rows[i].name, nfrom, flen) != 0 ||
		    (rows[i].name[flen] != '\0' && rows[i].name[flen] != '/'))
			continue;
		snprintf(newname, sizeof(newname), "%s%s", nto, rows[i].name + flen);
		mstore_name_normalize(newname, norm, NULL);
		if (!rows[i].noselect) {
			if (mstore_box_path(st, rows[i].name, opath, sizeof(opath)) < 0 ||
			    mstore_box_path(st, norm, npath, sizeof(npath)) < 0) {
				ret = mstore_fail(error_r, MSTORE_BAD_NAME, "path too long");
				break;
			}
			/* A mailbox's folder and its children's are siblings in the
			 * root: one rename each. */
			if (rename(opath, npath) < 0) {
				ret = mstore_fail(error_r, mstore_errno_status(errno),
						  "cannot rename %s: %s", opath, strerror(errno));
				break;
			}
			if (mstore_undo_add(&undo, MSTORE_UNDO_RENAME, npath, opath) < 0) {
				rename(npath, opath);
				ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
				break;
			}
		}
		snprintf(rows[i].name, sizeof(rows[i].name), "%s", norm);
		if (ix->ops->box_update(ix, &rows[i], &ixerr) < 0)
			ret = mstore_ix_fail(error_r, ixerr);
	}
	free(rows);

	/* Subscriptions follow the mailboxes, as users expect of their folder list. */
	char **subs = NULL;
	size_t n_subs = 0;
	if (ret == MSTORE_OK && ix->ops->sub_list(ix, &subs, &n_subs, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	for (size_t i = 0; i < n_subs; i++) {
		if (ret == MSTORE_OK && strncmp(subs[i], nfrom, flen) == 0 &&
		    (subs[i][flen] == '\0' || subs[i][flen] == '/')) {
			snprintf(newname, sizeof(newname), "%s%s", nto, subs[i] + flen);
			if (mstore_name_normalize(newname, norm, NULL) == MSTORE_OK &&
			    (ix->ops->sub_set(ix, subs[i], 0, &ixerr) < 0 ||
			     ix->ops->sub_set(ix, norm, 1, &ixerr) < 0))
				ret = mstore_ix_fail(error_r, ixerr);
		}
		free(subs[i]);
	}
	free(subs);
	if (ret == MSTORE_OK && file_fsync_dir(st->root) < 0)
		ret = mstore_fail(error_r, mstore_errno_status(errno), "cannot fsync %s: %s",
				  st->root, strerror(errno));
	return mstore_finish(st, ret, &undo, error_r);
}

int mstore_subscribe(struct mstore *st, const char *name, int on, const char **error_r)
{
	char norm[MSTORE_NAME_MAX];
	const char *ixerr = NULL;
	int ret = mstore_name_normalize(name, norm, error_r);
	if (ret != MSTORE_OK)
		return ret;
	if (st->ix->ops->sub_set(st->ix, norm, on, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

int mstore_subscriptions(struct mstore *st, char ***names_r, size_t *n_r, const char **error_r)
{
	const char *ixerr = NULL;
	if (st->ix->ops->sub_list(st->ix, names_r, n_r, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

/* ---- APPEND --------------------------------------------------------------------------- */

/* The files of one APPEND before they are in the index. */
struct mstore_append_file {
	char base[MSTORE_FILE_MAX];
	uint32_t flags;
	int64_t date;
	int in_tmp;  /* written to tmp/, not yet moved */
};

/* f's file in dir's cur/ (with its flags), or in tmp/. */
static void mstore_append_path(char *out, size_t cap, const char *dir, int in_cur,
			       const struct mstore_append_file *f)
{
	char letters[8];
	mstore_flags_letters(f->flags, letters);
	if (in_cur)
		snprintf(out, cap, "%s/cur/%s:2,%s", dir, f->base, letters);
	else
		snprintf(out, cap, "%s/tmp/%s", dir, f->base);
}

/* Writes and syncs msg as f's file in dir/tmp/ (outside the index lock: other sessions
 * go on meanwhile). */
static int mstore_append_write(struct mstore *st, const char *dir,
			       const struct mstore_append_msg *msg, struct mstore_append_file *f,
			       const char **error_r)
{
	char tmp_path[MSTORE_PATH_MAX + MSTORE_FILE_MAX];
	f->flags = msg->flags & MSTORE_FLAGS_ALL;
	f->date = msg->internaldate > 0 ? msg->internaldate : (int64_t)time(NULL);
	/* The leading timestamp is the internal date, so a rebuilt index keeps it. */
	mstore_unique_name(st, f->date, (uint64_t)msg->len, f->base, sizeof(f->base));
	mstore_append_path(tmp_path, sizeof(tmp_path), dir, 0, f);
	int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return mstore_fail(error_r, mstore_errno_status(errno), "cannot create %s: %s",
				   tmp_path, strerror(errno));
	f->in_tmp = 1;
	if (file_write_all(fd, msg->data, msg->len) < 0 || fsync(fd) < 0) {
		int saved = errno;
		close(fd);
		return mstore_fail(error_r, mstore_errno_status(saved), "cannot write %s: %s",
				   tmp_path, strerror(saved));
	}
	if (close(fd) < 0)
		return mstore_fail(error_r, mstore_errno_status(errno), "cannot close %s: %s",
				   tmp_path, strerror(errno));
	return MSTORE_OK;
}

/* In the write transaction: moves every file into cur/ (undone on failure), then gives
 * them rows under one new MODSEQ. */
static int mstore_append_locked(struct mstore *st, struct mail_index_box *row, const char *dir,
				const struct mstore_append_msg *msgs,
				struct mstore_append_file *files, size_t n, uint32_t *uids_r,
				struct mstore_undo *undo, const char **error_r)
{
	char names[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	char kw[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	char tmp_path[MSTORE_PATH_MAX + MSTORE_FILE_MAX], cur_path[MSTORE_PATH_MAX + MSTORE_FILE_MAX];
	char cur_dir[MSTORE_PATH_MAX + 8];
	struct mail_index *ix = st->ix;
	const char *ixerr = NULL;
	size_t n_names, n_kw;
	struct stat sb;
	snprintf(cur_dir, sizeof(cur_dir), "%s/cur", dir);
	if (row->uidnext + (uint64_t)n > UINT32_MAX)
		return mstore_fail(error_r, MSTORE_LIMIT, "mailbox '%s' has run out of UIDs",
				   row->name);
	/* Only a cur/ as tern left it may be recorded as tern's after this. */
	int clean = stat(cur_dir, &sb) == 0 && mstore_mtime_ns(&sb) == row->cur_mtime;
	if (ix->ops->keywords_get(ix, row->id, kw, &n_kw, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	for (size_t i = 0; i < n; i++) {
		mstore_append_path(tmp_path, sizeof(tmp_path), dir, 0, &files[i]);
		mstore_append_path(cur_path, sizeof(cur_path), dir, 1, &files[i]);
		if (rename(tmp_path, cur_path) < 0)
			return mstore_fail(error_r, mstore_errno_status(errno),
					   "cannot rename %s: %s", tmp_path, strerror(errno));
		files[i].in_tmp = 0;
		if (mstore_undo_add(undo, MSTORE_UNDO_UNLINK, cur_path, NULL) < 0)
			return mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	if (file_fsync_dir(cur_dir) < 0)
		return mstore_fail(error_r, mstore_errno_status(errno), "cannot fsync %s: %s",
				   cur_dir, strerror(errno));
	uint64_t modseq = ++row->highestmodseq;
	for (size_t i = 0; i < n; i++) {
		const struct mstore_append_msg *msg = &msgs[i];
		uint64_t bits = 0;
		int ret = mstore_keywords_parse(msg->keywords, names, &n_names, error_r);
		if (ret == MSTORE_OK)
			ret = mstore_keywords_bits(ix, row->id, kw, &n_kw, names, n_names, 1, &bits,
						   error_r);
		if (ret != MSTORE_OK)
			return ret;
		struct mail_index_msg m = { .base = files[i].base };
		m.m.uid = row->uidnext++;
		m.m.flags = files[i].flags;
		m.m.keywords = bits;
		m.m.modseq = modseq;
		m.m.size = msg->len;
		m.m.internaldate = files[i].date;
		m.m.internaldate_tz = msg->tz;
		if (ix->ops->msg_insert(ix, row->id, &m, &ixerr) != 0)
			return mstore_ix_fail(error_r, ixerr);
		mstore_row_count(row, m.m.flags, msg->len, 1);
		uids_r[i] = m.m.uid;
	}
	if (clean && stat(cur_dir, &sb) == 0)
		row->cur_mtime = mstore_mtime_ns(&sb);
	if (ix->ops->box_update(ix, row, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

int mstore_append_many(struct mstore *st, const char *name, const struct mstore_append_msg *msgs,
		       size_t n, uint32_t *uidvalidity_r, uint32_t *uids_r, const char **error_r)
{
	char norm[MSTORE_NAME_MAX], dir[MSTORE_PATH_MAX];
	char names[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	struct mail_index *ix = st->ix;
	struct mail_index_box row;
	const char *ixerr = NULL;
	size_t n_names;

	int ret = mstore_name_normalize(name, norm, error_r);
	for (size_t i = 0; i < n && ret == MSTORE_OK; i++)
		ret = mstore_keywords_parse(msgs[i].keywords, names, &n_names, error_r);
	if (ret != MSTORE_OK)
		return ret;
	/* Before writing anything: a missing mailbox is the common [TRYCREATE] case. */
	int found = ix->ops->box_get(ix, norm, &row, &ixerr);
	if (found < 0)
		return mstore_ix_fail(error_r, ixerr);
	if (!found || row.noselect)
		return mstore_fail(error_r, MSTORE_NOT_FOUND, "no mailbox '%s'", norm);
	if (mstore_box_path(st, norm, dir, sizeof(dir)) < 0)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "path too long");
	struct mstore_append_file *files = calloc(n > 0 ? n : 1, sizeof(*files));
	if (files == NULL)
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	for (size_t i = 0; i < n && ret == MSTORE_OK; i++)
		ret = mstore_append_write(st, dir, &msgs[i], &files[i], error_r);

	struct mstore_undo undo = { 0 };
	if (ret == MSTORE_OK && ix->ops->begin(ix, 1, &ixerr) < 0) {
		ret = mstore_ix_fail(error_r, ixerr);
	} else if (ret == MSTORE_OK) {
		found = ix->ops->box_get(ix, norm, &row, &ixerr);
		if (found < 0)
			ret = mstore_ix_fail(error_r, ixerr);
		else if (!found || row.noselect)
			ret = mstore_fail(error_r, MSTORE_NOT_FOUND, "no mailbox '%s'", norm);
		else
			ret = mstore_append_locked(st, &row, dir, msgs, files, n, uids_r, &undo,
						   error_r);
		ret = mstore_finish(st, ret, &undo, error_r);
		if (ret == MSTORE_OK && uidvalidity_r != NULL)
			*uidvalidity_r = row.uidvalidity;
	}
	/* What a failure left in tmp/ (the files moved to cur/ were undone). */
	for (size_t i = 0; i < n; i++) {
		char tmp_path[MSTORE_PATH_MAX + MSTORE_FILE_MAX];
		if (!files[i].in_tmp)
			continue;
		mstore_append_path(tmp_path, sizeof(tmp_path), dir, 0, &files[i]);
		unlink(tmp_path);
	}
	free(files);
	return ret;
}

int mstore_append(struct mstore *st, const char *name, const void *data, size_t len,
		  uint32_t flags, const char *keywords, int64_t internaldate, int tz,
		  uint32_t *uidvalidity_r, uint32_t *uid_r, const char **error_r)
{
	struct mstore_append_msg m = { data, len, flags, keywords, internaldate, tz };
	uint32_t uid = 0;
	int ret = mstore_append_many(st, name, &m, 1, uidvalidity_r, &uid, error_r);
	if (ret == MSTORE_OK && uid_r != NULL)
		*uid_r = uid;
	return ret;
}

/* ---- POP3 and administration ---------------------------------------------------------- */

int mstore_pop3_lock(struct mstore *st, int *lock_fd_r, const char **error_r)
{
	char path[MSTORE_PATH_MAX];
	snprintf(path, sizeof(path), "%s/pop3.lock", st->root);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return mstore_fail(error_r, MSTORE_IO, "cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int saved = errno;
		close(fd);
		if (saved == EWOULDBLOCK)
			return mstore_fail(error_r, MSTORE_IN_USE, "%s is locked by another session",
					   path);
		return mstore_fail(error_r, MSTORE_IO, "cannot lock %s: %s", path,
				   strerror(saved));
	}
	*lock_fd_r = fd;
	return MSTORE_OK;
}

static void mstore_index_unlink(const char *path)
{
	char p[MSTORE_PATH_MAX + 8];
	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

int mstore_reindex(const char *mail_root, const char *domain, const char *user,
		   size_t *n_messages_r, const char **error_r)
{
	char root[MSTORE_ROOT_MAX], old_path[MSTORE_PATH_MAX], new_path[MSTORE_PATH_MAX];
	const char *ixerr = NULL;
	int ret = mstore_root(mail_root, domain, user, root, error_r);
	if (ret != MSTORE_OK)
		return ret;
	snprintf(old_path, sizeof(old_path), "%s/index.db", root);
	snprintf(new_path, sizeof(new_path), "%s/index.db.reindex", root);

	/* What the old index can still tell: the UIDVALIDITY to exceed (clients must
	 * see every mailbox change) and the subscriptions.  A broken one tells nothing. */
	uint32_t old_uv = 0;
	char **subs = NULL;
	size_t n_subs = 0;
	struct stat sb;
	if (stat(old_path, &sb) == 0) {
		struct mail_index *old;
		if (mail_index_sqlite_open(old_path, &old, &ixerr) == 0) {
			if (old->ops->uidvalidity_last(old, &old_uv, &ixerr) < 0)
				old_uv = 0;
			if (old->ops->sub_list(old, &subs, &n_subs, &ixerr) < 0) {
				subs = NULL;
				n_subs = 0;
			}
			old->ops->close(old);
		}
	}
	time_t now = time(NULL);
	uint32_t floor = old_uv + 1;
	if (now > 0 && (uint64_t)now < UINT32_MAX && (uint32_t)now > floor)
		floor = (uint32_t)now;

	/* Built beside the old one and renamed over it: a failed rebuild leaves the
	 * old index in place. */
	mstore_index_unlink(new_path);
	struct mstore *st;
	ret = mstore_open_at(root, new_path, floor, &st, error_r);
	struct mail_index_box *rows = NULL;
	size_t n_rows = 0, total = 0;
	if (ret == MSTORE_OK && st->ix->ops->box_list(st->ix, &rows, &n_rows, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	for (size_t i = 0; i < n_rows && ret == MSTORE_OK; i++) {
		char dir[MSTORE_PATH_MAX];
		if (rows[i].noselect || mstore_box_path(st, rows[i].name, dir, sizeof(dir)) < 0)
			continue;
		if (st->ix->ops->begin(st->ix, 1, &ixerr) < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
			break;
		}
		size_t n_new = 0;
		ret = mstore_sync_locked(st, &rows[i], dir, &n_new, NULL, error_r);
		struct mstore_undo none = { 0 };
		ret = mstore_finish(st, ret, &none, error_r);
		total += n_new;
	}
	free(rows);
	for (size_t i = 0; i < n_subs; i++) {
		if (ret == MSTORE_OK && st->ix->ops->sub_set(st->ix, subs[i], 1, &ixerr) < 0)
			ret = mstore_ix_fail(error_r, ixerr);
		free(subs[i]);
	}
	free(subs);
	if (ret != MSTORE_OK) {
		mstore_close(&st);
		mstore_index_unlink(new_path);
		return ret;
	}
	/* Closing the last connection checkpoints and removes the new index's WAL; the
	 * old WAL must go before the rename or SQLite would replay it into the new. */
	mstore_close(&st);
	char p[MSTORE_PATH_MAX + 8];
	snprintf(p, sizeof(p), "%s-wal", old_path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", old_path);
	unlink(p);
	if (rename(new_path, old_path) < 0) {
		int saved = errno;
		mstore_index_unlink(new_path);
		return mstore_fail(error_r, MSTORE_IO, "cannot rename %s: %s", new_path,
				   strerror(saved));
	}
	file_fsync_dir(root);
	if (n_messages_r != NULL)
		*n_messages_r = total;
	return MSTORE_OK;
}
