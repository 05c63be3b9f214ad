/* Message lists shared by the sessions of one worker.
 *
 * A selected mailbox needs its whole message list (UID, flags, MODSEQ, size, date per
 * message: 48 bytes each).  Mail clients keep several connections open on the same
 * mailboxes, and phones reconnect all day.  The store hands out the list mapped from
 * the mailbox's list file when it can (mstore_box_list); either way a list one session
 * got is kept here and handed, read-only, to every other session of this worker that
 * opens the same mailbox in the same state (same
 * UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT and count: any change to a mailbox moves one of
 * them).  A session copies the list before its view first diverges (imap_view.c).
 *
 * Bounded: at most SNAP_MAX_ENTRIES lists and SNAP_MAX_MESSAGES messages are kept for
 * reuse; lists in use by a session are never dropped, unused ones go oldest first.
 * Sessions run their commands on pool threads, hence the mutex. */
#include "imap/imap_private.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_MAX_ENTRIES 64
#define SNAP_MAX_MESSAGES (1000 * 1000) /* 48 MB of lists kept at most */

struct imap_snapshot {
	char *key;                     /* "domain/user" NUL mailbox name */
	size_t key_len;
	uint32_t uidvalidity, uidnext;
	uint64_t highestmodseq;
	struct mstore_list *list;      /* the store's list (often a mapped file) */
	const struct mstore_msg *msgs;
	size_t n;
	int refs;                      /* sessions holding it, plus one while in the table */
	int in_table;
	unsigned long last_used;
};

struct imap_snapshots {
	pthread_mutex_t lock;
	struct imap_snapshot *table[SNAP_MAX_ENTRIES];
	size_t n_messages;             /* in the table */
	unsigned long clock;
};

struct imap_snapshots *imap_snapshots_new(void)
{
	struct imap_snapshots *c = calloc(1, sizeof(*c));
	if (c != NULL && pthread_mutex_init(&c->lock, NULL) != 0) {
		free(c);
		return NULL;
	}
	return c;
}

static void snap_free(struct imap_snapshot *sn)
{
	free(sn->key);
	mstore_list_free(&sn->list);
	free(sn);
}

/* Takes sn out of the table (the caller holds the lock). */
static void snap_unlist(struct imap_snapshots *c, size_t i)
{
	struct imap_snapshot *sn = c->table[i];
	c->table[i] = NULL;
	sn->in_table = 0;
	c->n_messages -= sn->n;
	if (--sn->refs == 0)
		snap_free(sn);
}

void imap_snapshots_free(struct imap_snapshots **cp)
{
	struct imap_snapshots *c = *cp;
	if (c == NULL)
		return;
	for (size_t i = 0; i < SNAP_MAX_ENTRIES; i++)
		if (c->table[i] != NULL)
			snap_unlist(c, i);
	pthread_mutex_destroy(&c->lock);
	free(c);
	*cp = NULL;
}

static int snap_matches(const struct imap_snapshot *sn, const char *key, size_t key_len,
			const struct mstore_mailbox *info)
{
	return sn->key_len == key_len && memcmp(sn->key, key, key_len) == 0 &&
	       sn->uidvalidity == info->uidvalidity && sn->uidnext == info->uidnext &&
	       sn->highestmodseq == info->highestmodseq && sn->n == info->messages;
}

/* Finds a list for this state, or drops the table's older lists of the same mailbox. */
static struct imap_snapshot *snap_lookup(struct imap_snapshots *c, const char *key,
					 size_t key_len, const struct mstore_mailbox *info)
{
	struct imap_snapshot *hit = NULL;
	for (size_t i = 0; i < SNAP_MAX_ENTRIES; i++) {
		struct imap_snapshot *sn = c->table[i];
		if (sn == NULL)
			continue;
		if (snap_matches(sn, key, key_len, info))
			hit = sn;
		else if (sn->key_len == key_len && memcmp(sn->key, key, key_len) == 0)
			snap_unlist(c, i); /* a state nobody new will see again */
	}
	if (hit != NULL) {
		hit->refs++;
		hit->last_used = ++c->clock;
	}
	return hit;
}

/* Makes room for n more messages and one entry by dropping unused lists, oldest first.
 * The index of a free slot, or -1 when the lists in use leave no room. */
static int snap_make_room(struct imap_snapshots *c, size_t n)
{
	if (n > SNAP_MAX_MESSAGES)
		return -1;
	for (;;) {
		int free_slot = -1, oldest = -1;
		for (int i = 0; i < SNAP_MAX_ENTRIES; i++) {
			struct imap_snapshot *sn = c->table[i];
			if (sn == NULL) {
				if (free_slot < 0)
					free_slot = i;
			} else if (sn->refs == 1 &&
				   (oldest < 0 || sn->last_used < c->table[oldest]->last_used)) {
				oldest = i;
			}
		}
		if (free_slot >= 0 && c->n_messages + n <= SNAP_MAX_MESSAGES)
			return free_slot;
		if (oldest < 0)
			return -1;
		snap_unlist(c, (size_t)oldest);
	}
}

int imap_snapshot_get(struct imap_snapshots *c, const char *owner, struct mstore_box *box,
		      struct imap_snapshot **snap_r, const struct mstore_msg **msgs_r, size_t *n_r,
		      const char **error_r)
{
	const struct mstore_mailbox *info = mstore_box_info(box);
	size_t owner_len = strlen(owner), name_len = strlen(info->name);
	size_t key_len = owner_len + 1 + name_len;
	char *key = malloc(key_len + 1);
	if (key == NULL) {
		*error_r = "out of memory";
		return MSTORE_IO;
	}
	memcpy(key, owner, owner_len + 1);
	memcpy(key + owner_len + 1, info->name, name_len + 1);

	pthread_mutex_lock(&c->lock);
	struct imap_snapshot *sn = snap_lookup(c, key, key_len, info);
	pthread_mutex_unlock(&c->lock);
	if (sn != NULL) {
		free(key);
		*snap_r = sn;
		*msgs_r = sn->msgs;
		*n_r = sn->n;
		return MSTORE_OK;
	}

	/* Loaded without the lock: other sessions go on meanwhile. */
	struct mstore_mailbox state = *info;
	struct mstore_list *list = NULL;
	int st = mstore_box_list(box, &list, error_r);
	if (st != MSTORE_OK) {
		free(key);
		return st;
	}
	size_t n = 0;
	const struct mstore_msg *msgs = mstore_list_msgs(list, &n);
	sn = calloc(1, sizeof(*sn));
	if (sn == NULL) {
		free(key);
		mstore_list_free(&list);
		*error_r = "out of memory";
		return MSTORE_IO;
	}
	sn->list = list;
	sn->key = key;
	sn->key_len = key_len;
	sn->uidvalidity = state.uidvalidity;
	sn->uidnext = state.uidnext;
	sn->highestmodseq = state.highestmodseq;
	sn->msgs = msgs;
	sn->n = n;
	sn->refs = 1;

	pthread_mutex_lock(&c->lock);
	/* The count is checked too: a list that does not match its state is not shared. */
	struct imap_snapshot *other = n == state.messages ? snap_lookup(c, key, key_len, &state)
							  : NULL;
	if (other != NULL) {
		snap_free(sn); /* another session loaded the same state meanwhile */
		sn = other;
	} else if (n == state.messages) {
		int slot = snap_make_room(c, n);
		if (slot >= 0) {
			c->table[slot] = sn;
			sn->in_table = 1;
			sn->refs++;
			sn->last_used = ++c->clock;
			c->n_messages += n;
		}
	}
	pthread_mutex_unlock(&c->lock);
	*snap_r = sn;
	*msgs_r = sn->msgs;
	*n_r = sn->n;
	return MSTORE_OK;
}

void imap_snapshot_release(struct imap_snapshots *c, struct imap_snapshot **snp)
{
	struct imap_snapshot *sn = *snp;
	if (sn == NULL)
		return;
	*snp = NULL;
	pthread_mutex_lock(&c->lock);
	int last = --sn->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (last)
		snap_free(sn);
}
