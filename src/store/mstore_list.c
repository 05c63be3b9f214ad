/* A mailbox's message list, fast.
 *
 * A selected mailbox needs every message's UID, flags, MODSEQ, size and date.  Reading
 * them from the index is a row at a time (10,000 rows: 4 ms).  So each mailbox folder
 * keeps a list file, "tern-list": a header and the fixed-size records of the list as
 * of one MODSEQ.  A reader maps it and applies what changed since (the index's MODSEQ
 * index and expunge log): usually nothing, so the mapped file is the list, shared by
 * every process through the page cache and never copied.
 *
 * The file is a cache of the index: replaced whole (tmp, rename; never written in
 * place, so a mapping stays valid), checked on every use (magic, record size,
 * UIDVALIDITY, a MODSEQ the index can still replay from, the boot it was written in),
 * and rewritten when too many changes pile up on top of it.  It is not fsynced: what
 * a crash of tern leaves in the page cache is whole, and only a crash of the machine
 * can tear it, after which the boot id differs and the file is not believed. */
#include "store/mstore_private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LIST_FILE "tern-list"
#define LIST_MAGIC "TERNLST1"
#define LIST_MIN 512           /* smaller mailboxes are read from the index directly */
#define LIST_REWRITE 256       /* changes on top of the file before it is rewritten */

struct list_header {
	char magic[8];
	uint32_t recsize;
	uint32_t reserved;
	uint64_t uidvalidity;
	uint64_t modseq;       /* the list is the mailbox as of this MODSEQ */
	uint64_t count;
	char boot_id[16];      /* the kernel's boot id when it was written */
	uint64_t pad;          /* 64 bytes: records stay aligned */
};

static char list_boot_id[16];
static int list_boot_id_ok;
static pthread_once_t list_boot_once = PTHREAD_ONCE_INIT;

/* /proc/sys/kernel/random/boot_id: a new one after every boot. */
static void list_boot_id_read(void)
{
	char text[64];
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 32)
		return;
	size_t o = 0;
	for (ssize_t i = 0; i < n && o < 2 * sizeof(list_boot_id); i++) {
		char c = text[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (v < 0)
			continue;
		list_boot_id[o / 2] = (char)(list_boot_id[o / 2] << 4 | v);
		o++;
	}
	list_boot_id_ok = o == 2 * sizeof(list_boot_id);
}

/* 0, or -1 when the boot id cannot be read (then no list file is written or used). */
static int list_boot(void)
{
	pthread_once(&list_boot_once, list_boot_id_read);
	return list_boot_id_ok ? 0 : -1;
}

struct mstore_list {
	const struct mstore_msg *msgs;
	size_t n;
	void *map;             /* the mapped file, or NULL */
	size_t map_len;
	struct mstore_msg *own; /* or a list of our own */
};

const struct mstore_msg *mstore_list_msgs(const struct mstore_list *l, size_t *n_r)
{
	*n_r = l->n;
	return l->msgs;
}

void mstore_list_free(struct mstore_list **lp)
{
	struct mstore_list *l = *lp;
	if (l == NULL)
		return;
	if (l->map != NULL)
		munmap(l->map, l->map_len);
	free(l->own);
	free(l);
	*lp = NULL;
}

static void list_path(const struct mstore_box *box, char *path, size_t cap)
{
	snprintf(path, cap, "%s/" LIST_FILE, box->dir);
}

/* Writes msgs as the box's list file as of modseq (best effort: a cache). */
static void list_write(struct mstore_box *box, const struct mstore_msg *msgs, size_t n,
		       uint64_t modseq)
{
	char path[MSTORE_PATH_MAX + 16], tmp[MSTORE_PATH_MAX + 64];
	if (list_boot() < 0)
		return;
	list_path(box, path, sizeof(path));
	/* In the folder's tmp/, where a crash's leftover is swept away in time, under a
	 * name unique per writer: two sessions of one worker may write the same list at
	 * once, each from its own pool thread. */
	static _Atomic unsigned long list_tmp_seq;
	mstore_tmp_sweep(box->dir);
	snprintf(tmp, sizeof(tmp), "%s/tmp/" LIST_FILE ".%ld.%lu", box->dir, (long)getpid(),
		 ++list_tmp_seq);
	struct list_header h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, LIST_MAGIC, sizeof(h.magic));
	h.recsize = sizeof(*msgs);
	h.uidvalidity = box->info.uidvalidity;
	h.modseq = modseq;
	h.count = n;
	memcpy(h.boot_id, list_boot_id, sizeof(h.boot_id));
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return;
	size_t len = n * sizeof(*msgs);
	int ok = write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h);
	for (size_t off = 0; ok && off < len;) {
		ssize_t w = write(fd, (const char *)msgs + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		ok = w > 0;
		if (ok)
			off += (size_t)w;
	}
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) < 0)
		unlink(tmp);
}

/* Maps the box's list file when it is usable.  0, or -1 (none, damaged, stale). */
static int list_map(struct mstore_box *box, struct mstore_list *l, uint64_t *modseq_r)
{
	char path[MSTORE_PATH_MAX + 16];
	if (list_boot() < 0)
		return -1;
	list_path(box, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	struct stat st;
	void *map = MAP_FAILED;
	if (fstat(fd, &st) == 0 && st.st_size >= (off_t)sizeof(struct list_header))
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return -1;
	const struct list_header *h = map;
	size_t len = (size_t)st.st_size;
	if (memcmp(h->magic, LIST_MAGIC, sizeof(h->magic)) != 0 ||
	    memcmp(h->boot_id, list_boot_id, sizeof(h->boot_id)) != 0 ||
	    h->recsize != sizeof(struct mstore_msg) || h->uidvalidity != box->info.uidvalidity ||
	    h->modseq < box->expunged_floor || h->modseq > box->info.highestmodseq ||
	    h->count > (len - sizeof(*h)) / sizeof(struct mstore_msg) ||
	    sizeof(*h) + h->count * sizeof(struct mstore_msg) != len) {
		munmap(map, len);
		return -1;
	}
	l->map = map;
	l->map_len = len;
	l->msgs = (const struct mstore_msg *)(h + 1);
	l->n = (size_t)h->count;
	*modseq_r = h->modseq;
	return 0;
}

/* Applies the changes after modseq to the mapped list: none leaves it as it is; a few
 * make a list of our own (a merge of three ascending lists).  0, or -1 when there are
 * too many to be worth it (or the index cannot say). */
static int list_apply_changes(struct mstore_box *box, struct mstore_list *l, uint64_t modseq,
			      size_t *n_changes_r)
{
	struct mail_index *ix = box->st->ix;
	const char *ixerr = NULL;
	struct mstore_msgvec ch = { NULL, 0, 0 };
	uint32_t *ex = NULL;
	size_t n_ex = 0;
	/* Current rows below UIDNEXT, as a read from the index would give them. */
	struct mail_index_query q = { .uid_min = 1, .uid_max = box->info.uidnext - 1,
				      .modseq_min = modseq + 1, .modseq_max = UINT64_MAX,
				      .by_modseq = 1 };
	if (ix->ops->msg_each(ix, box->id, &q, mstore_msgvec_cb, &ch, &ixerr) < 0 ||
	    ix->ops->expunged_list(ix, box->id, modseq, UINT64_MAX, &ex, &n_ex, &ixerr) < 0 ||
	    ch.n + n_ex > l->n / 4 + 64) {
		free(ch.v);
		free(ex);
		return -1;
	}
	*n_changes_r = ch.n + n_ex;
	if (ch.n == 0 && n_ex == 0) {
		free(ch.v);
		free(ex);
		return 0;
	}
	struct mstore_msg *out = malloc((l->n + ch.n + 1) * sizeof(*out));
	if (out == NULL) {
		free(ch.v);
		free(ex);
		return -1;
	}
	const struct mstore_msg *base = l->msgs;
	size_t i = 0, j = 0, k = 0, n = 0;
	while (i < l->n || j < ch.n) {
		const struct mstore_msg *m;
		if (j == ch.n || (i < l->n && base[i].uid < ch.v[j].uid)) {
			m = &base[i++];
		} else {
			if (i < l->n && base[i].uid == ch.v[j].uid)
				i++;
			m = &ch.v[j++];
		}
		while (k < n_ex && ex[k] < m->uid)
			k++;
		if ((k < n_ex && ex[k] == m->uid) || m->uid >= box->info.uidnext)
			continue;
		if (n > 0 && out[n - 1].uid >= m->uid)
			continue; /* a damaged file never yields a disordered list */
		out[n++] = *m;
	}
	free(ch.v);
	free(ex);
	munmap(l->map, l->map_len);
	l->map = NULL;
	l->own = out;
	l->msgs = out;
	l->n = n;
	return 0;
}

int mstore_box_list(struct mstore_box *box, struct mstore_list **list_r, const char **error_r)
{
	struct mstore_list *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return mstore_fail(error_r, MSTORE_IO, "out of memory");
	uint64_t modseq = 0;
	size_t changes = 0;
	if (box->fresh.v != NULL) {
		/* The import's own list: still the box's state unless the box wrote since. */
		struct mstore_msgvec fresh = box->fresh;
		memset(&box->fresh, 0, sizeof(box->fresh));
		if (box->fresh_modseq == box->info.highestmodseq) {
			l->own = fresh.v;
			l->msgs = l->own;
			l->n = fresh.n;
			if (l->n >= LIST_MIN)
				list_write(box, l->msgs, l->n, box->info.highestmodseq);
			*list_r = l;
			return MSTORE_OK;
		}
		free(fresh.v);
	}
	if (box->info.messages >= LIST_MIN && list_map(box, l, &modseq) == 0) {
		if (list_apply_changes(box, l, modseq, &changes) == 0) {
			if (changes > LIST_REWRITE)
				list_write(box, l->msgs, l->n, box->info.highestmodseq);
			*list_r = l;
			return MSTORE_OK;
		}
		munmap(l->map, l->map_len);
		memset(l, 0, sizeof(*l));
	}
	int st = mstore_box_read_all(box, &l->own, &l->n, error_r);
	if (st != MSTORE_OK) {
		free(l);
		return st;
	}
	l->msgs = l->own;
	/* Its MODSEQ is the last sync's: rows read here may be newer still, and replaying
	 * their changes onto them again is harmless. */
	if (l->n >= LIST_MIN)
		list_write(box, l->msgs, l->n, box->info.highestmodseq);
	*list_r = l;
	return MSTORE_OK;
}

int mstore_box_load(struct mstore_box *box, struct mstore_msg **msgs_r, size_t *n_r,
		    const char **error_r)
{
	struct mstore_list *l = NULL;
	*msgs_r = NULL;
	*n_r = 0;
	int st = mstore_box_list(box, &l, error_r);
	if (st != MSTORE_OK)
		return st;
	if (l->own != NULL) {
		*msgs_r = l->own; /* ours already: handed over */
		l->own = NULL;
	} else if (l->n > 0) {
		*msgs_r = malloc(l->n * sizeof(**msgs_r));
		if (*msgs_r == NULL) {
			mstore_list_free(&l);
			return mstore_fail(error_r, MSTORE_IO, "out of memory");
		}
		memcpy(*msgs_r, l->msgs, l->n * sizeof(**msgs_r));
	}
	*n_r = l->n;
	mstore_list_free(&l);
	return MSTORE_OK;
}
