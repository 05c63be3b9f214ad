/* A selected mailbox: taking in new mail (sync), noticing other sessions (poll),
 * STORE, EXPUNGE, COPY/MOVE, reading messages and the cache of derived strings.
 *
 * Sync is cheap when nothing happened: new/ is read (it is empty between deliveries)
 * and cur/ is only read in full when its mtime differs from the one the last tern
 * writer recorded in the index, i.e. when a program other than tern touched it.  Every
 * tern writer that changes cur/ does so under the index write lock and records the
 * resulting mtime in the same transaction. */
#include "store/mstore_private.h"

#include "base/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Directory mtimes are as coarse as the kernel's clock tick: a change in the same
 * tick as our last look leaves the mtime unchanged, so a directory this recent is
 * "maybe changed" until it is older. */
#define MSTORE_MTIME_SLACK_NS (2LL * 1000000000)
/* Expunged UIDs kept for QRESYNC, counted in modseqs, and how far past that the list
 * may grow before it is trimmed (so that it is not trimmed on every EXPUNGE). */
#define MSTORE_EXPUNGED_KEEP 100000
#define MSTORE_EXPUNGED_SLACK 10000

#define MSTORE_NAME_BUF (MSTORE_PATH_MAX + MSTORE_FILE_MAX + 16)
/* Rows a full scan of cur/ hands to the index at once. */
#define MSTORE_IMPORT_CHUNK 1024

/* ---- directory listings --------------------------------------------------------------- */

struct mstore_ent {
	const char *name;
	size_t base_len;
	uint32_t flags;
	uint64_t key[2]; /* the first 16 bytes of the base, big-endian, NUL-padded */
};

/* One readdir's names in one arena: 100,000 entries are a few allocations. */
struct mstore_dirlist {
	char *arena;
	size_t alen, acap;
	size_t *offs;
	size_t n, cap;
	struct mstore_ent *ents;
};

static void mstore_dirlist_free(struct mstore_dirlist *dl)
{
	free(dl->arena);
	free(dl->offs);
	free(dl->ents);
	memset(dl, 0, sizeof(*dl));
}

/* Reads the entries of path that are not dot-files.  0, or -1 with errno. */
static int mstore_dirlist_read(const char *path, struct mstore_dirlist *dl)
{
	memset(dl, 0, sizeof(*dl));
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		size_t len = strlen(de->d_name) + 1;
		if (dl->n == dl->cap) {
			size_t ncap = dl->cap == 0 ? 256 : dl->cap * 2;
			size_t *no = realloc(dl->offs, ncap * sizeof(*no));
			if (no == NULL)
				goto nomem;
			dl->offs = no;
			dl->cap = ncap;
		}
		if (dl->alen + len > dl->acap) {
			size_t ncap = dl->acap == 0 ? 16384 : dl->acap * 2;
			char *na = realloc(dl->arena, ncap);
			if (na == NULL)
				goto nomem;
			dl->arena = na;
			dl->acap = ncap;
		}
		memcpy(dl->arena + dl->alen, de->d_name, len);
		dl->offs[dl->n++] = dl->alen;
		dl->alen += len;
	}
	if (errno != 0) {
		int saved = errno;
		closedir(d);
		errno = saved;
		return -1;
	}
	closedir(d);
	dl->ents = calloc(dl->n > 0 ? dl->n : 1, sizeof(*dl->ents));
	if (dl->ents == NULL) {
		errno = ENOMEM;
		return -1;
	}
	for (size_t i = 0; i < dl->n; i++) {
		struct mstore_ent *e = &dl->ents[i];
		e->name = dl->arena + dl->offs[i];
		mstore_fname_parse(e->name, &e->base_len, &e->flags);
		for (size_t b = 0; b < 16; b++)
			e->key[b / 8] = e->key[b / 8] << 8 |
					(b < e->base_len ? (unsigned char)e->name[b] : 0);
	}
	return 0;
nomem:
	closedir(d);
	errno = ENOMEM;
	return -1;
}

/* Base order (mail_index_base_cmp), then the whole name.  The keys decide most pairs: file
 * names have no NUL, so a base shorter than 16 bytes pads with what sorts first. */
static int mstore_ent_cmp(const void *x, const void *y)
{
	const struct mstore_ent *a = x, *b = y;
	for (int k = 0; k < 2; k++)
		if (a->key[k] != b->key[k])
			return a->key[k] < b->key[k] ? -1 : 1;
	int c = mail_index_base_cmp(a->name, a->base_len, b->name, b->base_len);
	return c != 0 ? c : strcmp(a->name, b->name);
}

/* Size (",S=") and arrival time (the leading decimal timestamp) from a maildir base
 * name, which saves a stat per message for every writer that follows the convention. */
static void mstore_base_info(const char *base, size_t len, uint64_t *size_r, int *has_size_r,
			     int64_t *time_r, int *has_time_r)
{
	*has_size_r = *has_time_r = 0;
	size_t i = 0;
	int64_t t = 0;
	while (i < len && i < 15 && base[i] >= '0' && base[i] <= '9')
		t = t * 10 + (base[i++] - '0');
	if (i > 0 && i < len && base[i] == '.') {
		*time_r = t;
		*has_time_r = 1;
	}
	for (size_t j = 0; j + 3 < len; j++) {
		if (base[j] != ',' || base[j + 1] != 'S' || base[j + 2] != '=')
			continue;
		size_t k = j + 3, digits = 0;
		uint64_t s = 0;
		while (k < len && digits < 19 && base[k] >= '0' && base[k] <= '9') {
			s = s * 10 + (uint64_t)(base[k++] - '0');
			digits++;
		}
		if (digits > 0 && (k == len || base[k] == ',')) {
			*size_r = s;
			*has_size_r = 1;
		}
		break;
	}
}

/* Finds the file of base in cur/ whatever its info part (another program renamed
 * it).  1 and name_r, 0 when none, -1 with errno. */
static int mstore_cur_find(const char *cur_path, const char *base, char *name_r, size_t cap)
{
	DIR *d = opendir(cur_path);
	if (d == NULL)
		return -1;
	size_t blen = strlen(base);
	struct dirent *de;
	int found = 0;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, base, blen) == 0 &&
		    (de->d_name[blen] == ':' || de->d_name[blen] == '\0')) {
			snprintf(name_r, cap, "%s", de->d_name);
			found = 1;
			break;
		}
	}
	closedir(d);
	return found;
}

static void mstore_msg_fname(const char *base, uint32_t flags, char *out, size_t cap)
{
	char letters[8];
	mstore_flags_letters(flags, letters);
	snprintf(out, cap, "%s:2,%s", base, letters);
}

/* ---- sync ----------------------------------------------------------------------------- */

struct mstore_sync {
	struct mstore *st;
	struct mail_index_box *row;
	int cur_fd;
	uint64_t modseq; /* one new modseq for everything this sync changes */
	size_t n_new;
	int renamed;     /* cur/ changed by us */
	/* The box's whole message list, kept while the index had no rows for it: a first
	 * open then need not read back what it just wrote (see mstore_box_list). */
	struct mstore_msgvec *fresh;
	int changed;     /* row changed */
};

static uint64_t mstore_sync_modseq(struct mstore_sync *s)
{
	if (s->modseq == 0)
		s->modseq = ++s->row->highestmodseq;
	s->changed = 1;
	return s->modseq;
}

/* The row of a file of cur/ (name; base_len bytes of base, flags) under the next
 * UID, not yet inserted.  MSTORE_OK with *skip_r set when it is not a message (gone,
 * not a regular file), or a status. */
static int mstore_sync_row(struct mstore_sync *s, const char *name, size_t base_len,
			   uint32_t flags, uint32_t uid, struct mail_index_msg *m, int *skip_r,
			   const char **error_r)
{
	*skip_r = 0;
	memset(m, 0, sizeof(*m));
	m->base = name;
	m->base_len = base_len;
	int has_size, has_time;
	mstore_base_info(name, base_len, &m->m.size, &has_size, &m->m.internaldate, &has_time);
	if (!has_size || !has_time) {
		struct stat sb;
		if (fstatat(s->cur_fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT) {
				*skip_r = 1; /* another program took it */
				return MSTORE_OK;
			}
			return mstore_fail(error_r, MSTORE_IO, "cannot stat %s in cur/: %s", name,
					   strerror(errno));
		}
		if (!S_ISREG(sb.st_mode)) {
			*skip_r = 1;
			return MSTORE_OK;
		}
		if (!has_size)
			m->m.size = (uint64_t)sb.st_size;
		if (!has_time)
			m->m.internaldate = sb.st_mtim.tv_sec;
	}
	if (uid >= UINT32_MAX)
		return mstore_fail(error_r, MSTORE_LIMIT, "mailbox '%s' has run out of UIDs",
				   s->row->name);
	m->m.uid = uid;
	m->m.flags = flags;
	m->m.modseq = mstore_sync_modseq(s);
	return MSTORE_OK;
}

/* Counts rows that were inserted (in UID order) in the box row and the fresh list. */
static int mstore_sync_took(struct mstore_sync *s, const struct mail_index_msg *msgs, size_t n,
			    const char **error_r)
{
	if (s->fresh != NULL && s->fresh->cap - s->fresh->n < n) {
		size_t ncap = s->fresh->cap * 2 > s->fresh->n + n ? s->fresh->cap * 2 :
								    s->fresh->n + n;
		struct mstore_msg *nv = realloc(s->fresh->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return mstore_fail(error_r, MSTORE_IO, "out of memory");
		s->fresh->v = nv;
		s->fresh->cap = ncap;
	}
	for (size_t i = 0; i < n; i++) {
		s->row->uidnext = msgs[i].m.uid + 1;
		mstore_row_count(s->row, msgs[i].m.flags, msgs[i].m.size, 1);
		if (s->fresh != NULL && mstore_msgvec_cb(s->fresh, &msgs[i]) < 0)
			return mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	s->n_new += n;
	return MSTORE_OK;
}

/* Gives a UID to the file name (in cur/, base_len bytes of base, flags) unless the
 * index already has the base (*dup_r).  0 or a status. */
static int mstore_sync_add(struct mstore_sync *s, const char *name, size_t base_len,
			   uint32_t flags, int *dup_r, const char **error_r)
{
	const char *ixerr = NULL;
	struct mail_index *ix = s->st->ix;
	struct mail_index_msg m;
	int skip;
	*dup_r = 0;
	int ret = mstore_sync_row(s, name, base_len, flags, s->row->uidnext, &m, &skip, error_r);
	if (ret != MSTORE_OK || skip)
		return ret;
	int ins = ix->ops->msg_insert(ix, s->row->id, &m, &ixerr);
	if (ins < 0)
		return mstore_ix_fail(error_r, ixerr);
	if (ins == 1) {
		*dup_r = 1;
		return MSTORE_OK;
	}
	return mstore_sync_took(s, &m, 1, error_r);
}

/* A row of the index compared with the file of the same base. */
struct mstore_fix {
	uint32_t uid;
	uint32_t old_flags, new_flags;
	uint64_t keywords;
	uint64_t size;
};

struct mstore_fixes {
	struct mstore_fix *v;
	size_t n, cap;
};

static int mstore_fixes_push(struct mstore_fixes *f, const struct mstore_fix *x)
{
	if (f->n == f->cap) {
		size_t ncap = f->cap == 0 ? 64 : f->cap * 2;
		struct mstore_fix *nv = realloc(f->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		f->v = nv;
		f->cap = ncap;
	}
	f->v[f->n++] = *x;
	return 0;
}

/* Merge of cur/ (sorted by base) with the index rows (by base). */
struct mstore_scan {
	struct mstore_ent *ents;
	size_t n, pos;
	size_t rows;                   /* index rows seen */
	unsigned char *known;          /* per entry: the index has it */
	struct mstore_fixes changed;   /* flags in the name differ */
	struct mstore_fixes vanished;  /* no file any more */
	const char *error;
};

/* The current entry's base against base (len bytes); 1 past the last entry. */
static int mstore_scan_cmp(const struct mstore_scan *sc, const char *base, size_t len)
{
	if (sc->pos >= sc->n)
		return 1;
	return mail_index_base_cmp(sc->ents[sc->pos].name, sc->ents[sc->pos].base_len, base, len);
}

static int mstore_scan_cb(void *ctx, const struct mail_index_msg *msg)
{
	struct mstore_scan *sc = ctx;
	size_t rlen = strlen(msg->base);
	sc->rows++;
	while (mstore_scan_cmp(sc, msg->base, rlen) < 0)
		sc->pos++;
	struct mstore_fix fx = { msg->m.uid, msg->m.flags, msg->m.flags, msg->m.keywords,
				 msg->m.size };
	if (mstore_scan_cmp(sc, msg->base, rlen) == 0) {
		struct mstore_ent *e = &sc->ents[sc->pos];
		/* Two files of one base (a copy left by a crash): the first one is the
		 * message, the others are left alone. */
		while (mstore_scan_cmp(sc, msg->base, rlen) == 0)
			sc->known[sc->pos++] = 1;
		if (e->flags == msg->m.flags)
			return 0;
		fx.new_flags = e->flags;
		if (mstore_fixes_push(&sc->changed, &fx) < 0)
			goto nomem;
		return 0;
	}
	if (mstore_fixes_push(&sc->vanished, &fx) < 0)
		goto nomem;
	return 0;
nomem:
	sc->error = "out of memory scanning cur/";
	return -1;
}

/* Reads all of cur/ and makes the index agree with it. */
static int mstore_sync_cur(struct mstore_sync *s, const char *cur_path, const char **error_r)
{
	struct mail_index *ix = s->st->ix;
	struct mstore_dirlist dl;
	const char *ixerr = NULL;
	if (mstore_dirlist_read(cur_path, &dl) < 0) {
		int saved = errno;
		mstore_dirlist_free(&dl);
		return mstore_fail(error_r, MSTORE_IO, "cannot read %s: %s", cur_path,
				   strerror(saved));
	}
	if (dl.n > 1)
		qsort(dl.ents, dl.n, sizeof(*dl.ents), mstore_ent_cmp);
	struct mstore_scan sc = { .ents = dl.ents, .n = dl.n };
	sc.known = calloc(dl.n > 0 ? dl.n : 1, 1);
	int ret = MSTORE_OK;
	struct mail_index_query q = { .by_base = 1 };
	if (sc.known == NULL)
		ret = mstore_fail(error_r, MSTORE_IO, "out of memory scanning %s", cur_path);
	else if (ix->ops->msg_each(ix, s->row->id, &q, mstore_scan_cb, &sc, &ixerr) < 0)
		ret = sc.error != NULL ? mstore_fail(error_r, MSTORE_IO, "%s", sc.error) :
					 mstore_ix_fail(error_r, ixerr);
	for (size_t i = 0; i < sc.changed.n && ret == MSTORE_OK; i++) {
		struct mstore_fix *fx = &sc.changed.v[i];
		if (ix->ops->msg_set_flags(ix, s->row->id, fx->uid, fx->new_flags, fx->keywords,
					   mstore_sync_modseq(s), &ixerr) < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
			break;
		}
		mstore_row_count(s->row, fx->old_flags, fx->size, -1);
		mstore_row_count(s->row, fx->new_flags, fx->size, 1);
	}
	for (size_t i = 0; i < sc.vanished.n && ret == MSTORE_OK; i++) {
		struct mstore_fix *fx = &sc.vanished.v[i];
		if (ix->ops->msg_expunge(ix, s->row->id, fx->uid, mstore_sync_modseq(s), &ixerr) < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
			break;
		}
		mstore_row_count(s->row, fx->old_flags, fx->size, -1);
	}
	/* An index without rows for the box: the files go in as bulk rows (they ascend by
	 * base and UID alike), and they are the whole list. */
	int bulk = ret == MSTORE_OK && sc.rows == 0;
	if (!bulk)
		s->fresh = NULL;
	/* Files the index does not know, in name order: the leading timestamps make
	 * that arrival order, which is the order UIDs should follow.  They go in many
	 * rows per statement (a first open of a large mailbox is this loop). */
	struct mail_index_msg *rows = NULL;
	size_t n_rows = 0;
	if (ret == MSTORE_OK && dl.n > 0 &&
	    (rows = malloc(MSTORE_IMPORT_CHUNK * sizeof(*rows))) == NULL)
		ret = mstore_fail(error_r, MSTORE_IO, "out of memory scanning %s", cur_path);
	for (size_t i = 0; i <= dl.n && ret == MSTORE_OK; i++) {
		/* Every base is new to the index and unique here (known and duplicates
		 * were skipped), under the write lock: nothing can conflict. */
		if (n_rows == MSTORE_IMPORT_CHUNK || (i == dl.n && n_rows > 0)) {
			if (ix->ops->msg_insert_many(ix, s->row->id, rows, n_rows, bulk,
						     &ixerr) < 0)
				ret = mstore_ix_fail(error_r, ixerr);
			else
				ret = mstore_sync_took(s, rows, n_rows, error_r);
			n_rows = 0;
		}
		if (i == dl.n || ret != MSTORE_OK)
			break;
		struct mstore_ent *e = &dl.ents[i];
		if (sc.known[i] || e->base_len == 0 || e->base_len >= MSTORE_FILE_MAX)
			continue;
		if (i > 0 && mail_index_base_cmp(e->name, e->base_len, dl.ents[i - 1].name,
					     dl.ents[i - 1].base_len) == 0)
			continue;
		int skip;
		ret = mstore_sync_row(s, e->name, e->base_len, e->flags,
				      s->row->uidnext + (uint32_t)n_rows, &rows[n_rows], &skip,
				      error_r);
		if (ret == MSTORE_OK && !skip)
			n_rows++;
	}
	free(rows);
	free(sc.known);
	free(sc.changed.v);
	free(sc.vanished.v);
	mstore_dirlist_free(&dl);
	return ret;
}

/* Moves new/ into cur/ with UIDs in name order. */
static int mstore_sync_new(struct mstore_sync *s, const char *new_path, const char *cur_path,
			   const char **error_r)
{
	struct mail_index *ix = s->st->ix;
	struct mstore_dirlist dl;
	const char *ixerr = NULL;
	if (mstore_dirlist_read(new_path, &dl) < 0) {
		int saved = errno;
		mstore_dirlist_free(&dl);
		return mstore_fail(error_r, MSTORE_IO, "cannot read %s: %s", new_path,
				   strerror(saved));
	}
	int new_fd = -1, ret = MSTORE_OK;
	if (dl.n > 0) {
		qsort(dl.ents, dl.n, sizeof(*dl.ents), mstore_ent_cmp);
		new_fd = open(new_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (new_fd < 0)
			ret = mstore_fail(error_r, MSTORE_IO, "cannot open %s: %s", new_path,
					  strerror(errno));
	}
	char target[MSTORE_FILE_MAX + 16], base[MSTORE_FILE_MAX];
	for (size_t i = 0; i < dl.n && ret == MSTORE_OK; i++) {
		struct mstore_ent *e = &dl.ents[i];
		if (e->base_len == 0 || e->base_len >= MSTORE_FILE_MAX - 8)
			continue;
		memcpy(base, e->name, e->base_len);
		base[e->base_len] = '\0';
		/* The name is kept, its info part written the one way tern reads it back. */
		mstore_msg_fname(base, e->flags, target, sizeof(target));
		if (renameat(new_fd, e->name, s->cur_fd, target) < 0) {
			if (errno == ENOENT)
				continue; /* another session took it */
			ret = mstore_fail(error_r, mstore_errno_status(errno),
					  "cannot move %s/%s to cur/: %s", new_path, e->name,
					  strerror(errno));
			break;
		}
		s->renamed = 1;
		/* A second delivery of a message the index has: keep the first. */
		struct mstore_msg old;
		int found = ix->ops->msg_find_base(ix, s->row->id, base, &old, &ixerr);
		if (found < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
			break;
		}
		int dup = found;
		if (!found) {
			ret = mstore_sync_add(s, target, e->base_len, e->flags, &dup, error_r);
			if (ret == MSTORE_OK && dup) {
				found = ix->ops->msg_find_base(ix, s->row->id, base, &old, &ixerr);
				if (found < 0) {
					ret = mstore_ix_fail(error_r, ixerr);
					break;
				}
			}
		}
		if (ret == MSTORE_OK && dup) {
			char old_name[MSTORE_FILE_MAX + 16];
			mstore_msg_fname(base, found ? old.flags : e->flags, old_name,
					 sizeof(old_name));
			if (strcmp(old_name, target) != 0)
				unlinkat(s->cur_fd, target, 0);
		}
	}
	if (new_fd >= 0)
		close(new_fd);
	mstore_dirlist_free(&dl);
	(void)cur_path;
	return ret;
}

int mstore_sync_locked(struct mstore *st, struct mail_index_box *row, const char *dir,
		       size_t *n_new_r, struct mstore_msgvec *fresh_r, const char **error_r)
{
	char cur_path[MSTORE_PATH_MAX + 8], new_path[MSTORE_PATH_MAX + 8];
	const char *ixerr = NULL;
	snprintf(cur_path, sizeof(cur_path), "%s/cur", dir);
	snprintf(new_path, sizeof(new_path), "%s/new", dir);
	int cur_fd = open(cur_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cur_fd < 0)
		return mstore_fail(error_r, errno == ENOENT ? MSTORE_NOT_FOUND : MSTORE_IO,
				   "cannot open %s: %s", cur_path, strerror(errno));
	struct mstore_sync s = { .st = st, .row = row, .cur_fd = cur_fd, .fresh = fresh_r };
	if (fresh_r != NULL)
		fresh_r->n = 0;
	struct stat sb;
	int ret = MSTORE_OK;
	if (fstat(cur_fd, &sb) < 0) {
		ret = mstore_fail(error_r, MSTORE_IO, "cannot stat %s: %s", cur_path,
				  strerror(errno));
	} else {
		/* cur/ first: a first open then reads only the files that were there,
		 * not again the ones it is about to move in from new/. */
		int full = row->cur_mtime == MAIL_INDEX_MTIME_NONE ||
			   row->cur_mtime != mstore_mtime_ns(&sb);
		if (full) {
			ret = mstore_sync_cur(&s, cur_path, error_r);
			s.renamed = 1;
		} else {
			s.fresh = NULL;
		}
		if (ret == MSTORE_OK)
			ret = mstore_sync_new(&s, new_path, cur_path, error_r);
	}
	if (ret == MSTORE_OK && s.renamed) {
		if (s.n_new > 0 && file_fsync_dir(cur_path) < 0)
			ret = mstore_fail(error_r, mstore_errno_status(errno),
					  "cannot fsync %s: %s", cur_path, strerror(errno));
		else if (fstat(cur_fd, &sb) == 0) {
			row->cur_mtime = mstore_mtime_ns(&sb);
			s.changed = 1;
		}
	}
	close(cur_fd);
	if (ret == MSTORE_OK && s.changed && st->ix->ops->box_update(st->ix, row, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	if (n_new_r != NULL)
		*n_new_r = s.n_new;
	if (fresh_r != NULL && (ret != MSTORE_OK || s.fresh == NULL)) {
		free(fresh_r->v);
		memset(fresh_r, 0, sizeof(*fresh_r));
	}
	return ret;
}

/* ---- the box -------------------------------------------------------------------------- */

static void mstore_box_set_row(struct mstore_box *box, const struct mail_index_box *row)
{
	struct mstore_mailbox *mb = &box->info;
	mb->special = row->special;
	mb->noselect = row->noselect;
	mb->uidvalidity = row->uidvalidity;
	mb->uidnext = row->uidnext;
	mb->highestmodseq = row->highestmodseq;
	mb->messages = row->messages;
	mb->unseen = row->unseen;
	mb->deleted = row->deleted;
	mb->size = row->size;
	box->expunged_floor = row->expunged_floor;
}

static int mstore_box_keywords_load(struct mstore_box *box, const char **error_r)
{
	const char *ixerr = NULL;
	if (box->st->ix->ops->keywords_get(box->st->ix, box->id, box->kw, &box->n_kw, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	for (size_t i = 0; i < box->n_kw; i++)
		box->kw_ptrs[i] = box->kw[i];
	box->kw_ptrs[box->n_kw] = NULL;
	return MSTORE_OK;
}

static int64_t mstore_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int mstore_box_stat(const struct mstore_box *box, const char *sub, int64_t *mtime_r,
			   const char **error_r)
{
	char path[MSTORE_PATH_MAX + 8];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/%s", box->dir, sub);
	if (stat(path, &sb) < 0)
		return mstore_fail(error_r, errno == ENOENT ? MSTORE_NOT_FOUND : MSTORE_IO,
				   "cannot stat %s: %s", path, strerror(errno));
	*mtime_r = mstore_mtime_ns(&sb);
	return MSTORE_OK;
}

int mstore_box_sync(struct mstore_box *box, const char **error_r)
{
	struct mail_index *ix = box->st->ix;
	struct mail_index_box row;
	const char *ixerr = NULL;
	int64_t new_m, cur_m;
	free(box->fresh.v);
	memset(&box->fresh, 0, sizeof(box->fresh));
	int ret = mstore_box_stat(box, "new", &new_m, error_r);
	if (ret == MSTORE_OK)
		ret = mstore_box_stat(box, "cur", &cur_m, error_r);
	if (ret != MSTORE_OK)
		return ret;
	int found = ix->ops->box_get_id(ix, box->id, &row, &ixerr);
	if (found <= 0)
		return found < 0 ? mstore_ix_fail(error_r, ixerr) :
				   mstore_fail(error_r, MSTORE_NOT_FOUND, "mailbox '%s' was deleted",
					       box->info.name);
	/* Without the write lock first: the usual sync finds new/ empty and cur/ as
	 * tern left it, and must not queue behind other sessions' writes for that. */
	int busy = row.cur_mtime != cur_m;
	if (!busy) {
		char new_path[MSTORE_PATH_MAX + 8];
		snprintf(new_path, sizeof(new_path), "%s/new", box->dir);
		DIR *d = opendir(new_path);
		if (d == NULL)
			return mstore_fail(error_r, MSTORE_IO, "cannot read %s: %s", new_path,
					   strerror(errno));
		struct dirent *de;
		while (!busy && (de = readdir(d)) != NULL)
			busy = de->d_name[0] != '.';
		closedir(d);
	}
	if (busy) {
		if (ix->ops->begin(ix, 1, &ixerr) < 0)
			return mstore_ix_fail(error_r, ixerr);
		found = ix->ops->box_get_id(ix, box->id, &row, &ixerr);
		if (found <= 0)
			ret = found < 0 ? mstore_ix_fail(error_r, ixerr) :
					  mstore_fail(error_r, MSTORE_NOT_FOUND,
						      "mailbox '%s' was deleted", box->info.name);
		else
			ret = mstore_sync_locked(box->st, &row, box->dir, NULL, &box->fresh,
						 error_r);
		if (ret == MSTORE_OK && ix->ops->commit(ix, &ixerr) < 0)
			ret = mstore_ix_fail(error_r, ixerr);
		if (ret != MSTORE_OK) {
			ix->ops->rollback(ix);
			return ret;
		}
		/* What poll compares with: new/ as our renames left it. */
		if (mstore_box_stat(box, "new", &new_m, error_r) != MSTORE_OK ||
		    mstore_box_stat(box, "cur", &cur_m, error_r) != MSTORE_OK)
			return MSTORE_IO;
	}
	int64_t now = mstore_now_ns();
	box->seen_new_mtime = new_m;
	box->seen_cur_mtime = cur_m;
	box->seen_hot = new_m > now - MSTORE_MTIME_SLACK_NS || cur_m > now - MSTORE_MTIME_SLACK_NS;
	mstore_box_set_row(box, &row);
	box->fresh_modseq = row.highestmodseq;
	return mstore_box_keywords_load(box, error_r);
}

int mstore_box_open(struct mstore *st, const char *name, int readonly,
		    struct mstore_box **box_r, const char **error_r)
{
	char norm[MSTORE_NAME_MAX];
	struct mail_index_box row;
	const char *ixerr = NULL;
	int ret = mstore_name_normalize(name, norm, error_r);
	if (ret != MSTORE_OK)
		return ret;
	int found = st->ix->ops->box_get(st->ix, norm, &row, &ixerr);
	if (found < 0)
		return mstore_ix_fail(error_r, ixerr);
	if (!found || row.noselect)
		return mstore_fail(error_r, MSTORE_NOT_FOUND, "no selectable mailbox '%s'", norm);
	struct mstore_box *box = calloc(1, sizeof(*box));
	if (box == NULL)
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	box->st = st;
	box->id = row.id;
	box->readonly = readonly;
	snprintf(box->info.name, sizeof(box->info.name), "%s", norm);
	if (mstore_box_path(st, norm, box->dir, sizeof(box->dir)) < 0) {
		free(box);
		return mstore_fail(error_r, MSTORE_BAD_NAME, "path of '%s' too long", norm);
	}
	mstore_box_set_row(box, &row);
	ret = mstore_box_sync(box, error_r);
	if (ret != MSTORE_OK) {
		free(box);
		return ret;
	}
	*box_r = box;
	return MSTORE_OK;
}

void mstore_box_close(struct mstore_box **boxp)
{
	struct mstore_box *box = *boxp;
	if (box == NULL)
		return;
	const char *error;
	(void)mstore_box_cache_flush(box, &error); /* best effort: a cache */
	free(box->pending);
	free(box->fresh.v);
	free(box);
	*boxp = NULL;
}

const struct mstore_mailbox *mstore_box_info(const struct mstore_box *box)
{
	return &box->info;
}

size_t mstore_box_watch_paths(const struct mstore_box *box, char (*paths)[MSTORE_WATCH_PATH_MAX],
			      size_t max)
{
	const char *const base[] = { box->dir, box->dir, box->st->root };
	const char *const sub[] = { "/new", "/cur", "" };
	size_t n = max < 3 ? max : 3;
	for (size_t i = 0; i < n; i++) {
		int len = snprintf(paths[i], MSTORE_WATCH_PATH_MAX, "%s%s", base[i], sub[i]);
		if (len < 0 || len >= MSTORE_WATCH_PATH_MAX)
			return 0;
	}
	return n;
}

const char *const *mstore_box_keywords(const struct mstore_box *box, size_t *n_r)
{
	*n_r = box->n_kw;
	return box->kw_ptrs;
}

int mstore_box_poll(struct mstore_box *box, const char **error_r)
{
	struct mail_index_box row;
	const char *ixerr = NULL;
	int64_t new_m, cur_m;
	/* A vanished folder is a change: the sync that follows reports it. */
	if (mstore_box_stat(box, "new", &new_m, NULL) != MSTORE_OK ||
	    mstore_box_stat(box, "cur", &cur_m, NULL) != MSTORE_OK)
		return 1;
	if (box->seen_hot || new_m != box->seen_new_mtime)
		return 1;
	int found = box->st->ix->ops->box_get_id(box->st->ix, box->id, &row, &ixerr);
	if (found < 0) {
		mstore_ix_fail(error_r, ixerr);
		return -1;
	}
	/* cur/ is compared with what the last tern writer recorded: a change by another
	 * session moves both, a change by another program only the directory. */
	if (!found || row.cur_mtime != cur_m || row.uidnext != box->info.uidnext ||
	    row.highestmodseq != box->info.highestmodseq)
		return 1;
	return 0;
}

/* ---- reading -------------------------------------------------------------------------- */

int mstore_msgvec_cb(void *ctx, const struct mail_index_msg *msg)
{
	struct mstore_msgvec *mv = ctx;
	if (mv->n == mv->cap) {
		size_t ncap = mv->cap == 0 ? 64 : mv->cap * 2;
		struct mstore_msg *nv = realloc(mv->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		mv->v = nv;
		mv->cap = ncap;
	}
	mv->v[mv->n++] = msg->m;
	return 0;
}

int mstore_box_read_all(struct mstore_box *box, struct mstore_msg **msgs_r, size_t *n_r,
			const char **error_r)
{
	struct mstore_msgvec mv = { NULL, 0, 0 };
	const char *ixerr = NULL;
	*msgs_r = NULL;
	*n_r = 0;
	if (box->info.uidnext <= 1)
		return MSTORE_OK;
	/* Sized from our own counter (bounded), so that 100,000 rows are one
	 * allocation; it grows if other sessions added more. */
	mv.cap = (box->info.messages < (1u << 24) ? box->info.messages : (1u << 24)) + 16;
	mv.v = malloc(mv.cap * sizeof(*mv.v));
	if (mv.v == NULL)
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	/* As of the last sync: messages added since then have UIDs >= its UIDNEXT. */
	struct mail_index_query q = { .uid_min = 1, .uid_max = box->info.uidnext - 1 };
	if (box->st->ix->ops->msg_each(box->st->ix, box->id, &q, mstore_msgvec_cb, &mv, &ixerr) <
	    0) {
		free(mv.v);
		return ixerr != NULL ? mstore_ix_fail(error_r, ixerr) :
				       mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	*msgs_r = mv.v;
	*n_r = mv.n;
	return MSTORE_OK;
}

int mstore_box_changes(struct mstore_box *box, uint64_t since, struct mstore_msg **changed_r,
		       size_t *n_changed_r, uint32_t **expunged_r, size_t *n_expunged_r,
		       int *expunged_complete_r, const char **error_r)
{
	struct mail_index *ix = box->st->ix;
	struct mstore_msgvec mv = { NULL, 0, 0 };
	const char *ixerr = NULL;
	*changed_r = NULL;
	*expunged_r = NULL;
	*n_changed_r = *n_expunged_r = 0;
	*expunged_complete_r = since >= box->expunged_floor;
	uint64_t until = box->info.highestmodseq;
	if (since >= until)
		return MSTORE_OK;
	/* Up to the last sync's HIGHESTMODSEQ: later changes come with the next sync,
	 * so nothing is reported twice or skipped. */
	struct mail_index_query q = { .uid_min = 1, .uid_max = UINT32_MAX,
				      .modseq_min = since + 1, .modseq_max = until,
				      .by_modseq = 1 };
	if (ix->ops->msg_each(ix, box->id, &q, mstore_msgvec_cb, &mv, &ixerr) < 0) {
		free(mv.v);
		return ixerr != NULL ? mstore_ix_fail(error_r, ixerr) :
				       mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	if (ix->ops->expunged_list(ix, box->id, since, until, expunged_r, n_expunged_r, &ixerr) <
	    0) {
		free(mv.v);
		return mstore_ix_fail(error_r, ixerr);
	}
	*changed_r = mv.v;
	*n_changed_r = mv.n;
	return MSTORE_OK;
}

/* ---- writing -------------------------------------------------------------------------- */

/* A write transaction on the box: its row as of the lock, and whether cur/ was as tern
 * left it (only then may the writer record cur/'s new mtime as tern's). */
struct mstore_wtx {
	struct mail_index_box row, before;
	int clean;
	int cur_fd;
	char cur_path[MSTORE_PATH_MAX + 8];
	uint64_t modseq;
	int renamed;
};

static int mstore_wtx_begin(struct mstore *st, int64_t id, const char *dir, struct mstore_wtx *w,
			    const char **error_r)
{
	struct mail_index *ix = st->ix;
	const char *ixerr = NULL;
	memset(w, 0, sizeof(*w));
	w->cur_fd = -1;
	snprintf(w->cur_path, sizeof(w->cur_path), "%s/cur", dir);
	if (ix->ops->begin(ix, 1, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	int found = ix->ops->box_get_id(ix, id, &w->row, &ixerr);
	if (found <= 0) {
		ix->ops->rollback(ix);
		return found < 0 ? mstore_ix_fail(error_r, ixerr) :
				   mstore_fail(error_r, MSTORE_NOT_FOUND, "mailbox was deleted");
	}
	w->before = w->row;
	w->cur_fd = open(w->cur_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat sb;
	if (w->cur_fd < 0 || fstat(w->cur_fd, &sb) < 0) {
		int saved = errno;
		ix->ops->rollback(ix);
		if (w->cur_fd >= 0)
			close(w->cur_fd);
		return mstore_fail(error_r, MSTORE_IO, "cannot open %s: %s", w->cur_path,
				   strerror(saved));
	}
	w->clean = mstore_mtime_ns(&sb) == w->row.cur_mtime;
	return MSTORE_OK;
}

static uint64_t mstore_wtx_modseq(struct mstore_wtx *w)
{
	if (w->modseq == 0)
		w->modseq = ++w->row.highestmodseq;
	return w->modseq;
}

/* Records cur/'s mtime when ours to record and writes the row. */
static int mstore_wtx_row_save(struct mstore *st, struct mstore_wtx *w, const char **error_r)
{
	const char *ixerr = NULL;
	struct stat sb;
	if (w->renamed && w->clean && fstat(w->cur_fd, &sb) == 0)
		w->row.cur_mtime = mstore_mtime_ns(&sb);
	if (memcmp(&w->row, &w->before, sizeof(w->row)) == 0)
		return MSTORE_OK;
	if (st->ix->ops->box_update(st->ix, &w->row, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

static int mstore_wtx_end(struct mstore *st, struct mstore_wtx *w, int ret,
			  struct mstore_undo *undo, const char **error_r)
{
	const char *ixerr = NULL;
	if (ret == MSTORE_OK && st->ix->ops->commit(st->ix, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	if (ret != MSTORE_OK) {
		st->ix->ops->rollback(st->ix);
		if (undo != NULL)
			mstore_undo_run(undo);
	} else {
		if (undo != NULL)
			mstore_undo_free(undo);
		mstore_touch_changed(st);
	}
	if (w->cur_fd >= 0)
		close(w->cur_fd);
	w->cur_fd = -1;
	return ret;
}

/* After our own write: when the box had seen everything before it, it has now seen
 * this too (the caller got the result), so poll does not report our own change. */
static void mstore_box_view_advance(struct mstore_box *box, const struct mstore_wtx *w)
{
	if (w->before.uidnext != box->info.uidnext ||
	    w->before.highestmodseq != box->info.highestmodseq ||
	    w->row.uidnext != w->before.uidnext)
		return;
	mstore_box_set_row(box, &w->row);
	box->seen_cur_mtime = w->row.cur_mtime;
}

/* Renames message base's file for new flags.  1 done, 0 the file is gone, or a
 * failure status. */
static int mstore_msg_rename(struct mstore_wtx *w, const char *base, uint32_t old_flags,
			     uint32_t new_flags, const char **error_r)
{
	char from[MSTORE_FILE_MAX + 16], to[MSTORE_FILE_MAX + 16];
	mstore_msg_fname(base, old_flags, from, sizeof(from));
	mstore_msg_fname(base, new_flags, to, sizeof(to));
	if (renameat(w->cur_fd, from, w->cur_fd, to) == 0) {
		w->renamed = 1;
		return 1;
	}
	if (errno != ENOENT)
		return mstore_fail(error_r, MSTORE_IO, "cannot rename %s/%s: %s", w->cur_path,
				   from, strerror(errno));
	/* Renamed behind our back (another program): find it by its base. */
	int found = mstore_cur_find(w->cur_path, base, from, sizeof(from));
	if (found < 0)
		return mstore_fail(error_r, MSTORE_IO, "cannot read %s: %s", w->cur_path,
				   strerror(errno));
	if (found == 0)
		return 0;
	if (renameat(w->cur_fd, from, w->cur_fd, to) < 0)
		return errno == ENOENT ? 0 :
					 mstore_fail(error_r, MSTORE_IO, "cannot rename %s/%s: %s",
						     w->cur_path, from, strerror(errno));
	w->renamed = 1;
	return 1;
}

static int mstore_u32_push(uint32_t **v, size_t *n, size_t *cap, uint32_t x)
{
	if (*n == *cap) {
		size_t ncap = *cap == 0 ? 64 : *cap * 2;
		uint32_t *nv = realloc(*v, ncap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		*v = nv;
		*cap = ncap;
	}
	(*v)[(*n)++] = x;
	return 0;
}

/* The messages of uids (ascending) that the index has, with their base names. */
static int mstore_collect(struct mstore *st, int64_t box, const uint32_t *uids, size_t n,
			  uint32_t flags_all, struct mstore_msglist *l, const char **error_r)
{
	const char *ixerr = NULL;
	struct mail_index_query q = { .uid_min = 1, .uid_max = UINT32_MAX, .flags_all = flags_all };
	memset(l, 0, sizeof(*l));
	if (uids != NULL) {
		if (n == 0)
			return MSTORE_OK;
		q.uid_min = uids[0];
		q.uid_max = uids[n - 1];
		l->want = uids;
		l->n_want = n;
	}
	if (st->ix->ops->msg_each(st->ix, box, &q, mstore_msglist_cb, l, &ixerr) < 0) {
		int ret = l->error != NULL ? mstore_fail(error_r, MSTORE_IO, "%s", l->error) :
					     mstore_ix_fail(error_r, ixerr);
		mstore_msglist_free(l);
		return ret;
	}
	return MSTORE_OK;
}

int mstore_box_store(struct mstore_box *box, const uint32_t *uids, size_t n,
		     enum mstore_store_op op, uint32_t flags, const char *keywords,
		     uint64_t unchangedsince, struct mstore_msg **changed_r, size_t *n_changed_r,
		     uint32_t **failed_r, size_t *n_failed_r, const char **error_r)
{
	struct mstore *st = box->st;
	struct mail_index *ix = st->ix;
	char names[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	size_t n_names;
	const char *ixerr = NULL;
	struct mstore_msgvec changed = { NULL, 0, 0 };
	uint32_t *failed = NULL;
	size_t n_failed = 0, cap_failed = 0;
	if (changed_r != NULL) {
		*changed_r = NULL;
		*n_changed_r = 0;
	}
	if (failed_r != NULL) {
		*failed_r = NULL;
		*n_failed_r = 0;
	}
	if (box->readonly)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "mailbox '%s' is read-only",
				   box->info.name);
	int ret = mstore_keywords_parse(keywords, names, &n_names, error_r);
	if (ret != MSTORE_OK || n == 0)
		return ret;
	flags &= MSTORE_FLAGS_ALL;

	struct mstore_wtx w;
	ret = mstore_wtx_begin(st, box->id, box->dir, &w, error_r);
	if (ret != MSTORE_OK)
		return ret;
	char kw[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	size_t n_kw = 0;
	uint64_t bits = 0;
	struct mstore_msglist l = { 0 };
	if (ix->ops->keywords_get(ix, box->id, kw, &n_kw, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	else
		ret = mstore_keywords_bits(ix, box->id, kw, &n_kw, names, n_names,
					   op != MSTORE_STORE_REMOVE, &bits, error_r);
	if (ret == MSTORE_OK)
		ret = mstore_collect(st, box->id, uids, n, 0, &l, error_r);
	for (size_t i = 0; i < l.n && ret == MSTORE_OK; i++) {
		struct mstore_msg *m = &l.msgs[i];
		/* RFC 7162 3.1.3: a message changed since the client looked fails,
		 * whatever this STORE would have done to it. */
		if (unchangedsince != 0 && m->modseq > unchangedsince) {
			if (mstore_u32_push(&failed, &n_failed, &cap_failed, m->uid) < 0)
				ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
			continue;
		}
		uint32_t nf = m->flags;
		uint64_t nk = m->keywords;
		switch (op) {
		case MSTORE_STORE_SET:
			nf = flags;
			nk = bits;
			break;
		case MSTORE_STORE_ADD:
			nf |= flags;
			nk |= bits;
			break;
		case MSTORE_STORE_REMOVE:
			nf &= ~flags;
			nk &= ~bits;
			break;
		}
		if (nf == m->flags && nk == m->keywords)
			continue;
		if (nf != m->flags) {
			int r = mstore_msg_rename(&w, mstore_msglist_base(&l, i), m->flags, nf,
						  error_r);
			if (r < 0) {
				ret = r;
				break;
			}
			if (r == 0)
				continue; /* gone: the next full sync expunges it */
		}
		uint64_t ms = mstore_wtx_modseq(&w);
		if (ix->ops->msg_set_flags(ix, box->id, m->uid, nf, nk, ms, &ixerr) < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
			break;
		}
		mstore_row_count(&w.row, m->flags, m->size, -1);
		mstore_row_count(&w.row, nf, m->size, 1);
		m->flags = nf;
		m->keywords = nk;
		m->modseq = ms;
		if (changed_r != NULL) {
			struct mail_index_msg im = { .m = *m, .base = "" };
			if (mstore_msgvec_cb(&changed, &im) < 0)
				ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
		}
	}
	mstore_msglist_free(&l);
	if (ret == MSTORE_OK)
		ret = mstore_wtx_row_save(st, &w, error_r);
	/* A rename already done stays: the file names are the truth, and cur/'s mtime
	 * was not recorded, so the next sync reads them back. */
	ret = mstore_wtx_end(st, &w, ret, NULL, error_r);
	if (ret != MSTORE_OK) {
		free(changed.v);
		free(failed);
		return ret;
	}
	mstore_box_view_advance(box, &w);
	ret = mstore_box_keywords_load(box, error_r);
	if (ret != MSTORE_OK) {
		free(changed.v);
		free(failed);
		return ret;
	}
	if (changed_r != NULL) {
		*changed_r = changed.v;
		*n_changed_r = changed.n;
	}
	if (failed_r != NULL) {
		*failed_r = failed;
		*n_failed_r = n_failed;
	} else {
		free(failed);
	}
	return MSTORE_OK;
}

/* Forgets the oldest expunges once they span more than MSTORE_EXPUNGED_KEEP modseqs. */
static int mstore_expunged_trim(struct mstore *st, struct mail_index_box *row,
				const char **error_r)
{
	const char *ixerr = NULL;
	if (row->highestmodseq < row->expunged_floor + MSTORE_EXPUNGED_KEEP + MSTORE_EXPUNGED_SLACK)
		return MSTORE_OK;
	uint64_t floor = row->highestmodseq - MSTORE_EXPUNGED_KEEP;
	if (st->ix->ops->expunged_prune(st->ix, row->id, floor, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	row->expunged_floor = floor;
	return MSTORE_OK;
}

/* Unlinks message base's file.  0 done or already gone, or a failure status. */
static int mstore_msg_unlink(struct mstore_wtx *w, const char *base, uint32_t flags,
			     const char **error_r)
{
	char name[MSTORE_FILE_MAX + 16];
	mstore_msg_fname(base, flags, name, sizeof(name));
	if (unlinkat(w->cur_fd, name, 0) == 0) {
		w->renamed = 1;
		return MSTORE_OK;
	}
	if (errno != ENOENT)
		return mstore_fail(error_r, MSTORE_IO, "cannot unlink %s/%s: %s", w->cur_path, name,
				   strerror(errno));
	int found = mstore_cur_find(w->cur_path, base, name, sizeof(name));
	if (found < 0)
		return mstore_fail(error_r, MSTORE_IO, "cannot read %s: %s", w->cur_path,
				   strerror(errno));
	if (found && unlinkat(w->cur_fd, name, 0) < 0 && errno != ENOENT)
		return mstore_fail(error_r, MSTORE_IO, "cannot unlink %s/%s: %s", w->cur_path, name,
				   strerror(errno));
	w->renamed = 1;
	return MSTORE_OK;
}

int mstore_box_expunge(struct mstore_box *box, const uint32_t *uids, size_t n,
		       uint32_t **expunged_r, size_t *n_r, const char **error_r)
{
	const char *flush_error;
	/* Held-back cached strings first: they must go (or go along) with the messages. */
	(void)mstore_box_cache_flush(box, &flush_error);
	struct mstore *st = box->st;
	struct mail_index *ix = st->ix;
	const char *ixerr = NULL;
	uint32_t *out = NULL;
	size_t n_out = 0, cap_out = 0;
	*expunged_r = NULL;
	*n_r = 0;
	if (box->readonly)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "mailbox '%s' is read-only",
				   box->info.name);
	if (uids != NULL && n == 0)
		return MSTORE_OK;
	struct mstore_wtx w;
	int ret = mstore_wtx_begin(st, box->id, box->dir, &w, error_r);
	if (ret != MSTORE_OK)
		return ret;
	struct mstore_msglist l;
	ret = mstore_collect(st, box->id, uids, n, MSTORE_F_DELETED, &l, error_r);
	for (size_t i = 0; i < l.n && ret == MSTORE_OK; i++) {
		struct mstore_msg *m = &l.msgs[i];
		/* The file first: a row without a file is found by the next full sync,
		 * a file without a row would come back as a new message. */
		ret = mstore_msg_unlink(&w, mstore_msglist_base(&l, i), m->flags, error_r);
		if (ret != MSTORE_OK)
			break;
		if (ix->ops->msg_expunge(ix, box->id, m->uid, mstore_wtx_modseq(&w), &ixerr) < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
			break;
		}
		mstore_row_count(&w.row, m->flags, m->size, -1);
		if (mstore_u32_push(&out, &n_out, &cap_out, m->uid) < 0)
			ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	mstore_msglist_free(&l);
	/* An unlink lost in a crash would bring the message back with a new UID. */
	if (ret == MSTORE_OK && n_out > 0 && fsync(w.cur_fd) < 0)
		ret = mstore_fail(error_r, MSTORE_IO, "cannot fsync %s: %s", w.cur_path,
				  strerror(errno));
	if (ret == MSTORE_OK && n_out > 0)
		ret = mstore_expunged_trim(st, &w.row, error_r);
	if (ret == MSTORE_OK)
		ret = mstore_wtx_row_save(st, &w, error_r);
	ret = mstore_wtx_end(st, &w, ret, NULL, error_r);
	if (ret != MSTORE_OK) {
		free(out);
		return ret;
	}
	mstore_box_view_advance(box, &w);
	*expunged_r = out;
	*n_r = n_out;
	return MSTORE_OK;
}

/* Copies file src to dst through tmp_path (another filesystem, where link and rename
 * cannot go): write, fsync, rename.  0 or a failure status. */
static int mstore_file_copy(const char *src, const char *tmp_path, const char *dst,
			    const char **error_r)
{
	int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return errno == ENOENT ? MSTORE_NOT_FOUND :
					 mstore_fail(error_r, MSTORE_IO, "cannot open %s: %s", src,
						     strerror(errno));
	int out = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0) {
		int saved = errno;
		close(in);
		return mstore_fail(error_r, mstore_errno_status(saved), "cannot create %s: %s",
				   tmp_path, strerror(saved));
	}
	char buf[65536];
	ssize_t r;
	int ok = 1;
	while ((r = read(in, buf, sizeof(buf))) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || file_write_all(out, buf, (size_t)r) < 0) {
			ok = 0;
			break;
		}
	}
	int saved = errno;
	if (ok && fsync(out) < 0) {
		ok = 0;
		saved = errno;
	}
	close(in);
	if (close(out) < 0 && ok) {
		ok = 0;
		saved = errno;
	}
	if (ok && rename(tmp_path, dst) < 0) {
		ok = 0;
		saved = errno;
	}
	if (!ok) {
		unlink(tmp_path);
		return mstore_fail(error_r, mstore_errno_status(saved), "cannot copy %s to %s: %s",
				   src, dst, strerror(saved));
	}
	return MSTORE_OK;
}

/* Puts message file src (in src_dir's cur/, possibly renamed since) at dst: link for
 * COPY, rename for MOVE, a copy across filesystems.  1 done (*copied_r when the
 * source is still to be removed after the commit), 0 the source is gone, or a
 * failure status. */
static int mstore_msg_transfer(const char *src_cur, const char *src_name, const char *base,
			       const char *dst, const char *dst_tmp, int move, int *copied_r,
			       char *src_path, size_t cap, const char **error_r)
{
	char name[MSTORE_FILE_MAX + 16];
	snprintf(name, sizeof(name), "%s", src_name);
	*copied_r = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		snprintf(src_path, cap, "%s/%s", src_cur, name);
		int r = move ? rename(src_path, dst) : link(src_path, dst);
		if (r == 0)
			return 1;
		if (errno == ENOENT && attempt == 0) {
			int found = mstore_cur_find(src_cur, base, name, sizeof(name));
			if (found <= 0)
				return found < 0 ? mstore_fail(error_r, MSTORE_IO,
							       "cannot read %s: %s", src_cur,
							       strerror(errno)) :
						   0;
			continue;
		}
		if (errno == ENOENT)
			return 0;
		if (errno == EXDEV || errno == EPERM || errno == EMLINK || errno == EOPNOTSUPP) {
			int ret = mstore_file_copy(src_path, dst_tmp, dst, error_r);
			if (ret == MSTORE_NOT_FOUND)
				return 0;
			if (ret != MSTORE_OK)
				return ret;
			*copied_r = move;
			return 1;
		}
		return mstore_fail(error_r, mstore_errno_status(errno), "cannot %s %s to %s: %s",
				   move ? "move" : "link", src_path, dst, strerror(errno));
	}
	return 0;
}

int mstore_box_copy(struct mstore_box *box, const uint32_t *uids, size_t n, const char *dest,
		    int move, uint32_t *dest_uidvalidity_r, uint32_t **src_uids_r,
		    uint32_t **dest_uids_r, size_t *n_r, const char **error_r)
{
	const char *flush_error;
	/* Held-back cached strings first: they must go (or go along) with the messages. */
	(void)mstore_box_cache_flush(box, &flush_error);
	struct mstore *st = box->st;
	struct mail_index *ix = st->ix;
	char norm[MSTORE_NAME_MAX], ddir[MSTORE_PATH_MAX];
	const char *ixerr = NULL;
	*src_uids_r = *dest_uids_r = NULL;
	*n_r = 0;
	if (move && box->readonly)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "mailbox '%s' is read-only",
				   box->info.name);
	int ret = mstore_name_normalize(dest, norm, error_r);
	if (ret != MSTORE_OK)
		return ret;
	if (mstore_box_path(st, norm, ddir, sizeof(ddir)) < 0)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "path of '%s' too long", norm);

	struct mstore_wtx w;
	ret = mstore_wtx_begin(st, box->id, box->dir, &w, error_r);
	if (ret != MSTORE_OK)
		return ret;
	struct mail_index_box drow_own;
	int found = ix->ops->box_get(ix, norm, &drow_own, &ixerr);
	if (found < 0)
		return mstore_wtx_end(st, &w, mstore_ix_fail(error_r, ixerr), NULL, error_r);
	if (!found || drow_own.noselect)
		return mstore_wtx_end(st, &w,
				      mstore_fail(error_r, MSTORE_NOT_FOUND, "no mailbox '%s'", norm),
				      NULL, error_r);
	int same = drow_own.id == box->id;
	struct mail_index_box *drow = same ? &w.row : &drow_own;
	struct mail_index_box dbefore = *drow;
	char dcur[MSTORE_PATH_MAX + 8];
	snprintf(dcur, sizeof(dcur), "%s/cur", ddir);
	struct stat sb;
	int dclean = same ? w.clean :
			    stat(dcur, &sb) == 0 && mstore_mtime_ns(&sb) == drow->cur_mtime;
	uint64_t dmodseq_own = 0, *dmodseq = same ? &w.modseq : &dmodseq_own;

	char skw[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN], dkw[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	char names[MSTORE_KEYWORDS_MAX][MSTORE_KEYWORD_LEN];
	size_t n_skw = 0, n_dkw = 0;
	if (ix->ops->keywords_get(ix, box->id, skw, &n_skw, &ixerr) < 0 ||
	    ix->ops->keywords_get(ix, drow->id, dkw, &n_dkw, &ixerr) < 0)
		return mstore_wtx_end(st, &w, mstore_ix_fail(error_r, ixerr), NULL, error_r);

	struct mstore_msglist l;
	ret = mstore_collect(st, box->id, uids, n, 0, &l, error_r);
	if (ret != MSTORE_OK)
		return mstore_wtx_end(st, &w, ret, NULL, error_r);
	uint32_t *src_uids = calloc(l.n > 0 ? l.n : 1, sizeof(*src_uids));
	uint32_t *dst_uids = calloc(l.n > 0 ? l.n : 1, sizeof(*dst_uids));
	/* Sources copied across filesystems by MOVE: removed only after the commit. */
	struct mstore_undo undo = { 0 }, later = { 0 };
	size_t n_out = 0;
	int transferred = 0;
	if (src_uids == NULL || dst_uids == NULL)
		ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
	char base[MSTORE_FILE_MAX], sname[MSTORE_FILE_MAX + 16], dst[MSTORE_NAME_BUF],
		dtmp[MSTORE_NAME_BUF], spath[MSTORE_NAME_BUF], letters[8];
	for (size_t i = 0; i < l.n && ret == MSTORE_OK; i++) {
		struct mstore_msg *m = &l.msgs[i];
		if (drow->uidnext >= UINT32_MAX) {
			ret = mstore_fail(error_r, MSTORE_LIMIT, "mailbox '%s' has run out of UIDs",
					  norm);
			break;
		}
		/* The source's keywords by name in the destination's table. */
		size_t n_names = 0;
		for (size_t k = 0; k < n_skw; k++)
			if (m->keywords & ((uint64_t)1 << k))
				snprintf(names[n_names++], MSTORE_KEYWORD_LEN, "%s", skw[k]);
		uint64_t dbits = 0;
		ret = mstore_keywords_bits(ix, drow->id, dkw, &n_dkw, names, n_names, 1, &dbits,
					   error_r);
		if (ret != MSTORE_OK)
			break;
		/* A new name: the same base twice in one folder would be one message. */
		mstore_unique_name(st, m->internaldate, m->size, base, sizeof(base));
		mstore_flags_letters(m->flags, letters);
		mstore_msg_fname(mstore_msglist_base(&l, i), m->flags, sname, sizeof(sname));
		snprintf(dst, sizeof(dst), "%s/%s:2,%s", dcur, base, letters);
		snprintf(dtmp, sizeof(dtmp), "%s/tmp/%s", ddir, base);
		int copied;
		int r = mstore_msg_transfer(w.cur_path, sname, mstore_msglist_base(&l, i), dst,
					    dtmp, move, &copied, spath, sizeof(spath), error_r);
		if (r < 0) {
			ret = r;
			break;
		}
		if (r == 0)
			continue;
		transferred = 1;
		int undo_fail = move && !copied ?
					mstore_undo_add(&undo, MSTORE_UNDO_RENAME, dst, spath) :
					mstore_undo_add(&undo, MSTORE_UNDO_UNLINK, dst, NULL);
		if (undo_fail == 0 && copied)
			undo_fail = mstore_undo_add(&later, MSTORE_UNDO_UNLINK, spath, NULL);
		if (undo_fail < 0) {
			ret = mstore_fail(error_r, MSTORE_IO, "out of memory");
			break;
		}
		if (*dmodseq == 0)
			*dmodseq = ++drow->highestmodseq;
		struct mail_index_msg dm = { .m = *m, .base = base };
		dm.m.uid = drow->uidnext;
		dm.m.keywords = dbits;
		dm.m.modseq = *dmodseq;
		int ins = ix->ops->msg_insert(ix, drow->id, &dm, &ixerr);
		if (ins != 0 ||
		    ix->ops->cache_copy(ix, box->id, m->uid, drow->id, dm.m.uid, &ixerr) < 0) {
			ret = mstore_ix_fail(error_r, ixerr);
			break;
		}
		drow->uidnext++;
		mstore_row_count(drow, m->flags, m->size, 1);
		if (move) {
			if (ix->ops->msg_expunge(ix, box->id, m->uid, mstore_wtx_modseq(&w), &ixerr) <
			    0) {
				ret = mstore_ix_fail(error_r, ixerr);
				break;
			}
			mstore_row_count(&w.row, m->flags, m->size, -1);
			w.renamed = 1;
		}
		src_uids[n_out] = m->uid;
		dst_uids[n_out] = dm.m.uid;
		n_out++;
	}
	mstore_msglist_free(&l);
	if (ret == MSTORE_OK && transferred) {
		if (file_fsync_dir(dcur) < 0 || (move && file_fsync_dir(w.cur_path) < 0))
			ret = mstore_fail(error_r, mstore_errno_status(errno), "cannot fsync %s: %s",
					  dcur, strerror(errno));
		if (same)
			w.renamed = 1;
		else if (dclean && stat(dcur, &sb) == 0)
			drow->cur_mtime = mstore_mtime_ns(&sb);
	}
	if (ret == MSTORE_OK && move)
		ret = mstore_expunged_trim(st, &w.row, error_r);
	if (ret == MSTORE_OK && !same && memcmp(drow, &dbefore, sizeof(dbefore)) != 0 &&
	    ix->ops->box_update(ix, drow, &ixerr) < 0)
		ret = mstore_ix_fail(error_r, ixerr);
	if (ret == MSTORE_OK)
		ret = mstore_wtx_row_save(st, &w, error_r);
	ret = mstore_wtx_end(st, &w, ret, &undo, error_r);
	if (ret != MSTORE_OK) {
		mstore_undo_free(&later);
		free(src_uids);
		free(dst_uids);
		return ret;
	}
	/* Committed: the copies are the messages now, the originals can go. */
	mstore_undo_run(&later);
	if (!same)
		mstore_box_view_advance(box, &w);
	if (dest_uidvalidity_r != NULL)
		*dest_uidvalidity_r = drow->uidvalidity;
	*src_uids_r = src_uids;
	*dest_uids_r = dst_uids;
	*n_r = n_out;
	return MSTORE_OK;
}

/* ---- message files and the cache ------------------------------------------------------ */

int mstore_box_msg_open(struct mstore_box *box, uint32_t uid, int *fd_r, const char **error_r)
{
	struct mstore_msglist l;
	char cur[MSTORE_PATH_MAX + 8], name[MSTORE_FILE_MAX + 16], path[MSTORE_NAME_BUF];
	int ret = mstore_collect(box->st, box->id, &uid, 1, 0, &l, error_r);
	if (ret != MSTORE_OK)
		return ret;
	if (l.n == 0) {
		mstore_msglist_free(&l);
		return mstore_fail(error_r, MSTORE_NOT_FOUND, "no message %u in '%s'", uid,
				   box->info.name);
	}
	snprintf(cur, sizeof(cur), "%s/cur", box->dir);
	mstore_msg_fname(mstore_msglist_base(&l, 0), l.msgs[0].flags, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", cur, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		/* Renamed since the index said so (another program, or a STORE not yet
		 * committed): the base still finds it. */
		int found = mstore_cur_find(cur, mstore_msglist_base(&l, 0), name, sizeof(name));
		if (found > 0) {
			snprintf(path, sizeof(path), "%s/%s", cur, name);
			fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		} else {
			errno = found == 0 ? ENOENT : errno;
		}
	}
	mstore_msglist_free(&l);
	if (fd < 0)
		return mstore_fail(error_r, errno == ENOENT ? MSTORE_NOT_FOUND : MSTORE_IO,
				   "cannot open %s: %s", path, strerror(errno));
	*fd_r = fd;
	return MSTORE_OK;
}

int mstore_box_cache_get(struct mstore_box *box, uint32_t uid, const char *field,
			 char **value_r, size_t *len_r, const char **error_r)
{
	const char *ixerr = NULL;
	for (size_t i = box->n_pending; i-- > 0;) {
		const struct mail_index_cache_put *p = &box->pending[i];
		if (p->uid != uid || strcmp(p->field, field) != 0)
			continue;
		char *v = malloc(p->len + 1);
		if (v == NULL)
			return mstore_fail(error_r, MSTORE_IO, "out of memory");
		memcpy(v, p->value, p->len);
		v[p->len] = '\0';
		*value_r = v;
		*len_r = p->len;
		return 1;
	}
	int r = box->st->ix->ops->cache_get(box->st->ix, box->id, uid, field, value_r, len_r,
					     &ixerr);
	if (r < 0)
		return mstore_ix_fail(error_r, ixerr);
	return r;
}

int mstore_box_cache_scan(struct mstore_box *box, const char *field,
			  int (*cb)(void *ctx, uint32_t uid, const void *value, size_t len),
			  void *ctx, const char **error_r)
{
	const char *ixerr = NULL;
	int st = mstore_box_cache_flush(box, error_r); /* what is held back counts too */
	if (st != MSTORE_OK)
		return st;
	if (box->st->ix->ops->cache_scan(box->st->ix, box->id, field, cb, ctx, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

/* Puts are held back and written together: one transaction per message would spend
 * most of a first FETCH ENVELOPE on locking and writing the log. */
#define MSTORE_CACHE_PENDING_MAX 256
#define MSTORE_CACHE_PENDING_BYTES (1024 * 1024)

static void mstore_cache_pending_clear(struct mstore_box *box)
{
	for (size_t i = 0; i < box->n_pending; i++) {
		free((char *)box->pending[i].field);
		free((void *)box->pending[i].value);
	}
	box->n_pending = 0;
	box->pending_bytes = 0;
}

int mstore_box_cache_flush(struct mstore_box *box, const char **error_r)
{
	const char *ixerr = NULL;
	if (box->n_pending == 0)
		return MSTORE_OK;
	int r = box->st->ix->ops->cache_put_many(box->st->ix, box->id, box->pending,
						 box->n_pending, &ixerr);
	mstore_cache_pending_clear(box);
	return r < 0 ? mstore_ix_fail(error_r, ixerr) : MSTORE_OK;
}

int mstore_box_cache_put(struct mstore_box *box, uint32_t uid, const char *field,
			 const char *value, size_t len, const char **error_r)
{
	if (box->pending == NULL) {
		box->pending = calloc(MSTORE_CACHE_PENDING_MAX, sizeof(*box->pending));
		if (box->pending == NULL)
			return mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	char *f = strdup(field), *v = malloc(len + 1);
	if (f == NULL || v == NULL) {
		free(f);
		free(v);
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	}
	memcpy(v, value, len);
	v[len] = '\0';
	box->pending[box->n_pending++] = (struct mail_index_cache_put){ uid, f, v, len };
	box->pending_bytes += len;
	if (box->n_pending == MSTORE_CACHE_PENDING_MAX ||
	    box->pending_bytes >= MSTORE_CACHE_PENDING_BYTES)
		return mstore_box_cache_flush(box, error_r);
	return MSTORE_OK;
}
