/* mstore's small parts: errors, the undo log, mailbox and folder names, maildir file
 * names, keywords, folder creation and removal, message lists. */
#include "store/mstore_private.h"

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
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Per thread: the engines run store calls on pool threads. */
static _Thread_local char mstore_errbuf[1536];

int mstore_fail(const char **error_r, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(mstore_errbuf, sizeof(mstore_errbuf), fmt, ap);
	va_end(ap);
	if (error_r != NULL)
		*error_r = mstore_errbuf;
	return status;
}

int mstore_errno_status(int err)
{
	return err == ENOSPC || err == EDQUOT ? MSTORE_NO_SPACE : MSTORE_IO;
}

int mstore_ix_fail(const char **error_r, const char *ix_error)
{
	return mstore_fail(error_r, MSTORE_IO, "%s", ix_error != NULL ? ix_error : "index error");
}

/* ---- undo log ------------------------------------------------------------------------- */

int mstore_undo_add(struct mstore_undo *u, enum mstore_undo_kind kind, const char *a,
		    const char *b)
{
	if (u->n == u->cap) {
		size_t ncap = u->cap == 0 ? 16 : u->cap * 2;
		struct mstore_undo_op *n = realloc(u->ops, ncap * sizeof(*n));
		if (n == NULL)
			return -1;
		u->ops = n;
		u->cap = ncap;
	}
	struct mstore_undo_op *op = &u->ops[u->n];
	op->kind = kind;
	op->a = strdup(a);
	op->b = b != NULL ? strdup(b) : NULL;
	if (op->a == NULL || (b != NULL && op->b == NULL)) {
		free(op->a);
		free(op->b);
		return -1;
	}
	u->n++;
	return 0;
}

void mstore_undo_run(struct mstore_undo *u)
{
	for (size_t i = u->n; i-- > 0;) {
		struct mstore_undo_op *op = &u->ops[i];
		switch (op->kind) {
		case MSTORE_UNDO_UNLINK:
			unlink(op->a);
			break;
		case MSTORE_UNDO_RENAME:
			rename(op->a, op->b);
			break;
		case MSTORE_UNDO_RMTREE:
			mstore_tree_remove(op->a);
			break;
		}
	}
	mstore_undo_free(u);
}

void mstore_undo_free(struct mstore_undo *u)
{
	for (size_t i = 0; i < u->n; i++) {
		free(u->ops[i].a);
		free(u->ops[i].b);
	}
	free(u->ops);
	memset(u, 0, sizeof(*u));
}

/* ---- names ---------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (0 when invalid): overlong forms and
 * surrogates are refused so that each name has exactly one spelling. */
static size_t mstore_utf8_len(const unsigned char *p)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	size_t n;
	unsigned min;
	if ((c & 0xe0) == 0xc0) {
		n = 2;
		min = 0x80;
		c &= 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3;
		min = 0x800;
		c &= 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4;
		min = 0x10000;
		c &= 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	/* C1 controls are as unwelcome in log lines and file names as C0 ones. */
	if (c >= 0x80 && c <= 0x9f)
		return 0;
	return n;
}

/* Bytes of the folder name ".A.B" for mailbox name (without the NUL). */
static size_t mstore_folder_len(const char *name)
{
	size_t n = 1;
	for (const char *p = name; *p != '\0'; p++)
		n += *p == '.' || *p == '%' ? 3 : 1;
	return n;
}

int mstore_name_normalize(const char *name, char *out, const char **error_r)
{
	if (name == NULL || name[0] == '\0')
		return mstore_fail(error_r, MSTORE_BAD_NAME, "empty mailbox name");
	size_t len = strlen(name);
	if (len >= MSTORE_NAME_MAX)
		return mstore_fail(error_r, MSTORE_BAD_NAME, "mailbox name of %zu bytes too long",
				   len);
	const unsigned char *p = (const unsigned char *)name;
	size_t comp_start = 0;
	for (size_t i = 0; i <= len;) {
		if (i == len || p[i] == '/') {
			size_t clen = i - comp_start;
			if (clen == 0)
				return mstore_fail(error_r, MSTORE_BAD_NAME,
						   "mailbox name '%s' has an empty component",
						   name);
			if ((clen == 1 && p[comp_start] == '.') ||
			    (clen == 2 && p[comp_start] == '.' && p[comp_start + 1] == '.'))
				return mstore_fail(error_r, MSTORE_BAD_NAME,
						   "mailbox name '%s' has a '.' or '..' component",
						   name);
			comp_start = i + 1;
			i++;
			continue;
		}
		if (p[i] < 0x20 || p[i] == 0x7f)
			return mstore_fail(error_r, MSTORE_BAD_NAME,
					   "mailbox name contains a control character");
		size_t n = mstore_utf8_len(p + i);
		if (n == 0)
			return mstore_fail(error_r, MSTORE_BAD_NAME,
					   "mailbox name is not valid UTF-8");
		i += n;
	}
	memcpy(out, name, len + 1);
	/* INBOX is case-insensitive, also as the parent of other names. */
	if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == '\0' || out[5] == '/'))
		memcpy(out, "INBOX", 5);
	if (strcmp(out, "INBOX") != 0 && mstore_folder_len(out) >= MSTORE_FILE_MAX)
		return mstore_fail(error_r, MSTORE_BAD_NAME,
				   "mailbox name '%s' too long for a folder name", name);
	return MSTORE_OK;
}

/* ".A.B" for "A/B": the Maildir++ folder; '.' and '%' escaped so that every name
 * round-trips through mstore_folder_decode(). */
void mstore_folder_encode(const char *name, char *out, size_t cap)
{
	size_t o = 0;
	out[o++] = '.';
	for (const char *p = name; *p != '\0' && o + 4 < cap; p++) {
		if (*p == '/') {
			out[o++] = '.';
		} else if (*p == '.') {
			memcpy(out + o, "%2E", 3);
			o += 3;
		} else if (*p == '%') {
			memcpy(out + o, "%25", 3);
			o += 3;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

static int mstore_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The mailbox name of folder ".A.B", or -1 when it is not one of ours. */
int mstore_folder_decode(const char *folder, char *out, size_t cap)
{
	if (folder[0] != '.')
		return -1;
	size_t o = 0;
	for (const char *p = folder + 1; *p != '\0'; p++) {
		if (o + 1 >= cap)
			return -1;
		if (*p == '.') {
			out[o++] = '/';
		} else if (*p == '%') {
			int hi = mstore_hexval(p[1]), lo = hi < 0 ? -1 : mstore_hexval(p[2]);
			if (lo < 0)
				return -1;
			out[o++] = (char)(hi * 16 + lo);
			p += 2;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
	return 0;
}

int mstore_box_path(const struct mstore *st, const char *name, char *out, size_t cap)
{
	if (strcmp(name, "INBOX") == 0)
		return snprintf(out, cap, "%s", st->root) < (int)cap ? 0 : -1;
	char folder[MSTORE_FILE_MAX * 3];
	mstore_folder_encode(name, folder, sizeof(folder));
	return snprintf(out, cap, "%s/%s", st->root, folder) < (int)cap ? 0 : -1;
}

/* ---- maildir names -------------------------------------------------------------------- */

int64_t mstore_mtime_ns(const struct stat *sb)
{
	return (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
}

/* Maildir info letters in ASCII order, as every Maildir reader expects. */
static const struct {
	char letter;
	uint32_t flag;
} mstore_letters[] = {
	{ 'D', MSTORE_F_DRAFT },    { 'F', MSTORE_F_FLAGGED }, { 'R', MSTORE_F_ANSWERED },
	{ 'S', MSTORE_F_SEEN },     { 'T', MSTORE_F_DELETED },
};

void mstore_flags_letters(uint32_t flags, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < sizeof(mstore_letters) / sizeof(mstore_letters[0]); i++)
		if (flags & mstore_letters[i].flag)
			out[o++] = mstore_letters[i].letter;
	out[o] = '\0';
}

void mstore_fname_parse(const char *name, size_t *base_len_r, uint32_t *flags_r)
{
	const char *colon = strchr(name, ':');
	uint32_t flags = 0;
	*base_len_r = colon != NULL ? (size_t)(colon - name) : strlen(name);
	if (colon != NULL && colon[1] == '2' && colon[2] == ',') {
		/* Letters we do not know (other servers' keyword letters) are ignored. */
		for (const char *p = colon + 3; *p != '\0'; p++)
			for (size_t i = 0; i < sizeof(mstore_letters) / sizeof(mstore_letters[0]);
			     i++)
				if (*p == mstore_letters[i].letter)
					flags |= mstore_letters[i].flag;
	}
	*flags_r = flags;
}

static atomic_uint mstore_unique_seq;

void mstore_unique_name(const struct mstore *st, int64_t when, uint64_t size, char *out,
			size_t cap)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (uint64_t)tv.tv_usec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	/* usec, pid and a per-process counter make the name unique on this host even
	 * without randomness; the random part guards against pid reuse in the same
	 * microsecond after a crash and against a shared maildir across hosts. */
	unsigned seq = atomic_fetch_add(&mstore_unique_seq, 1);
	snprintf(out, cap, "%lld.M%06ldP%ldQ%uR%016llx.%s,S=%llu", (long long)when,
		 (long)tv.tv_usec, (long)getpid(), seq, (unsigned long long)rnd, st->host,
		 (unsigned long long)size);
}

int mstore_uidvalidity_new(struct mstore *st, uint32_t *uidvalidity_r, const char **error_r)
{
	const char *ixerr = NULL;
	time_t now = time(NULL);
	uint32_t floor = now > 0 && (uint64_t)now < UINT32_MAX ? (uint32_t)now : 1;
	if (floor < st->uidvalidity_floor)
		floor = st->uidvalidity_floor;
	if (st->ix->ops->uidvalidity_next(st->ix, floor, uidvalidity_r, &ixerr) < 0)
		return mstore_ix_fail(error_r, ixerr);
	return MSTORE_OK;
}

/* ---- keywords ------------------------------------------------------------------------- */

/* An IMAP atom that is not a system flag (RFC 9051 flag-keyword). */
static int mstore_keyword_valid(const char *kw, size_t len)
{
	if (len == 0 || len >= MSTORE_KEYWORD_LEN || kw[0] == '\\')
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)kw[i];
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return 0;
	}
	return 1;
}

int mstore_keywords_parse(const char *s, char (*names)[MSTORE_KEYWORD_LEN], size_t *n_r,
			  const char **error_r)
{
	size_t n = 0;
	*n_r = 0;
	if (s == NULL)
		return MSTORE_OK;
	for (const char *p = s; *p != '\0';) {
		if (*p == ' ') {
			p++;
			continue;
		}
		size_t len = strcspn(p, " ");
		if (!mstore_keyword_valid(p, len))
			return mstore_fail(error_r, MSTORE_BAD_NAME, "invalid keyword '%.*s'",
					   (int)(len > 80 ? 80 : len), p);
		int dup = 0;
		for (size_t i = 0; i < n && !dup; i++)
			dup = strlen(names[i]) == len && strncasecmp(names[i], p, len) == 0;
		if (!dup) {
			if (n == MSTORE_KEYWORDS_MAX)
				return mstore_fail(error_r, MSTORE_LIMIT, "more than %d keywords",
						   MSTORE_KEYWORDS_MAX);
			memcpy(names[n], p, len);
			names[n][len] = '\0';
			n++;
		}
		p += len;
	}
	*n_r = n;
	return MSTORE_OK;
}

int mstore_keywords_bits(struct mail_index *ix, int64_t box, char (*kw)[MSTORE_KEYWORD_LEN],
			 size_t *n_kw, char (*names)[MSTORE_KEYWORD_LEN], size_t n, int create,
			 uint64_t *bits_r, const char **error_r)
{
	uint64_t bits = 0;
	for (size_t i = 0; i < n; i++) {
		size_t j;
		for (j = 0; j < *n_kw; j++)
			if (strcasecmp(kw[j], names[i]) == 0)
				break;
		if (j == *n_kw) {
			if (!create)
				continue;
			if (*n_kw == MSTORE_KEYWORDS_MAX)
				return mstore_fail(error_r, MSTORE_LIMIT,
						   "mailbox already has %d keywords",
						   MSTORE_KEYWORDS_MAX);
			const char *ixerr = NULL;
			if (ix->ops->keyword_add(ix, box, j, names[i], &ixerr) < 0)
				return mstore_ix_fail(error_r, ixerr);
			snprintf(kw[j], MSTORE_KEYWORD_LEN, "%s", names[i]);
			(*n_kw)++;
		}
		bits |= (uint64_t)1 << j;
	}
	*bits_r = bits;
	return MSTORE_OK;
}

void mstore_row_count(struct mail_index_box *row, uint32_t flags, uint64_t size, int sign)
{
	if (sign > 0) {
		row->messages++;
		row->unseen += (flags & MSTORE_F_SEEN) == 0;
		row->deleted += (flags & MSTORE_F_DELETED) != 0;
		row->size += size;
	} else {
		row->messages -= row->messages > 0;
		if ((flags & MSTORE_F_SEEN) == 0 && row->unseen > 0)
			row->unseen--;
		if ((flags & MSTORE_F_DELETED) != 0 && row->deleted > 0)
			row->deleted--;
		row->size -= row->size >= size ? size : row->size;
	}
}

/* ---- folders -------------------------------------------------------------------------- */

int mstore_folder_create(const char *path, const char **error_r)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	char sub[MSTORE_PATH_MAX + 32];
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return mstore_fail(error_r, mstore_errno_status(errno), "cannot create %s: %s",
				   path, strerror(errno));
	for (size_t i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", path, subs[i]);
		if (mkdir(sub, 0700) < 0 && errno != EEXIST)
			return mstore_fail(error_r, mstore_errno_status(errno),
					   "cannot create %s: %s", sub, strerror(errno));
	}
	snprintf(sub, sizeof(sub), "%s/maildirfolder", path);
	int fd = open(sub, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return mstore_fail(error_r, mstore_errno_status(errno), "cannot create %s: %s", sub,
				   strerror(errno));
	close(fd);
	return MSTORE_OK;
}

static int mstore_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

int mstore_tree_remove(const char *path)
{
	return nftw(path, mstore_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void mstore_touch_changed(const struct mstore *st)
{
	char path[MSTORE_PATH_MAX];
	snprintf(path, sizeof(path), "%s/" MSTORE_CHANGED_FILE, st->root);
	if (utimensat(AT_FDCWD, path, NULL, 0) < 0 && errno == ENOENT) {
		int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0)
			close(fd);
	}
}

void mstore_tmp_sweep(const char *folder)
{
	char path[MSTORE_PATH_MAX + 8];
	snprintf(path, sizeof(path), "%s/tmp", folder);
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return;
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return;
	}
	time_t old = time(NULL) - MSTORE_TMP_MAX_AGE;
	struct dirent *de;
	struct stat sb;
	for (int seen = 0; seen < MSTORE_TMP_SWEEP_MAX && (de = readdir(d)) != NULL; seen++) {
		if (de->d_name[0] == '.' ||
		    fstatat(dfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode))
			continue;
		if (sb.st_mtime < old && sb.st_atime < old)
			unlinkat(dfd, de->d_name, 0);
	}
	closedir(d);
}

/* ---- message lists -------------------------------------------------------------------- */

int mstore_msglist_cb(void *ctx, const struct mail_index_msg *msg)
{
	struct mstore_msglist *l = ctx;
	if (l->want != NULL) {
		while (l->want_pos < l->n_want && l->want[l->want_pos] < msg->m.uid)
			l->want_pos++;
		if (l->want_pos == l->n_want || l->want[l->want_pos] != msg->m.uid)
			return 0;
	}
	size_t blen = strlen(msg->base) + 1;
	if (l->n == l->cap) {
		size_t ncap = l->cap == 0 ? 64 : l->cap * 2;
		struct mstore_msg *nm = realloc(l->msgs, ncap * sizeof(*nm));
		if (nm == NULL)
			goto nomem;
		l->msgs = nm;
		size_t *no = realloc(l->base_off, ncap * sizeof(*no));
		if (no == NULL)
			goto nomem;
		l->base_off = no;
		l->cap = ncap;
	}
	if (l->alen + blen > l->acap) {
		size_t ncap = l->acap == 0 ? 4096 : l->acap * 2;
		while (ncap < l->alen + blen)
			ncap *= 2;
		char *na = realloc(l->arena, ncap);
		if (na == NULL)
			goto nomem;
		l->arena = na;
		l->acap = ncap;
	}
	memcpy(l->arena + l->alen, msg->base, blen);
	l->base_off[l->n] = l->alen;
	l->alen += blen;
	l->msgs[l->n++] = msg->m;
	return 0;
nomem:
	l->error = "out of memory for the message list";
	return -1;
}

void mstore_msglist_free(struct mstore_msglist *l)
{
	free(l->msgs);
	free(l->base_off);
	free(l->arena);
	l->msgs = NULL;
	l->base_off = NULL;
	l->arena = NULL;
	l->n = l->cap = l->alen = l->acap = 0;
}
