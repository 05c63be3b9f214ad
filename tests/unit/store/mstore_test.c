/* mstore: default mailboxes, CREATE/DELETE/RENAME, subscriptions, APPEND and load,
 * delivery through new/ picked up by sync and poll, two sessions seeing each other's
 * STORE and EXPUNGE through changes(), CONDSTORE failures, COPY/MOVE UID maps, message
 * files renamed by another session, the cache, a mailbox filled by another program
 * (the import on first open), the POP3 lock, reindex, bad names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "store/maildir.h"
#include "store/mstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fixture {
	char dir[64];
	char root[128]; /* DATA_DIR/mail */
	char user[256]; /* the user's maildir */
	struct mstore *st;
};

static const char msg1[] = "From: a@example.org\r\nSubject: one\r\n\r\nbody one\r\n";
static const char msg2[] = "From: b@example.org\r\nSubject: two\r\n\r\nbody two, longer\r\n";

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *err = NULL;
	/* tmpfs when there is one: the store fsyncs every change, which on a real disk
	 * is most of this test's time and none of its subject. */
	snprintf(f->dir, sizeof(f->dir), "/dev/shm/tern-mstore-test.XXXXXX");
	if (access("/dev/shm", W_OK) < 0 || mkdtemp(f->dir) == NULL) {
		if (test_tmpdir_new(f->dir, sizeof(f->dir), "mstore") < 0)
			return -1;
	}
	snprintf(f->root, sizeof(f->root), "%s/mail", f->dir);
	snprintf(f->user, sizeof(f->user), "%s/example.org/alice", f->root);
	if (mstore_open(f->root, "example.org", "alice", &f->st, &err) != MSTORE_OK) {
		fprintf(stderr, "mstore_open: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	mstore_close(&f->st);
	test_rm_rf(f->dir);
	free(f);
	return 0;
}

static struct mstore *open_second(struct fixture *f)
{
	struct mstore *st = NULL;
	const char *err = NULL;
	assert_int_equal(mstore_open(f->root, "example.org", "alice", &st, &err), MSTORE_OK);
	return st;
}

static const struct mstore_mailbox *find_box(const struct mstore_mailbox *boxes, size_t n,
					     const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(boxes[i].name, name) == 0)
			return &boxes[i];
	return NULL;
}

static int is_dir(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* The only entry of dir (asserting there is exactly one); caller frees. */
static char *only_entry(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	char *name = NULL;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		n++;
		free(name);
		name = strdup(de->d_name);
	}
	closedir(d);
	assert_int_equal(n, 1);
	return name;
}

static uint32_t append(struct mstore *st, const char *box, const char *data, uint32_t flags,
		       const char *kw)
{
	const char *err = NULL;
	uint32_t uv = 0, uid = 0;
	int r = mstore_append(st, box, data, strlen(data), flags, kw, 0, 0, &uv, &uid, &err);
	if (r != MSTORE_OK)
		fail_msg("append to %s: %d %s", box, r, err);
	assert_true(uv != 0);
	return uid;
}

/* Sets both directories' mtimes into the past, so that poll may trust them. */
static void age_dirs(const char *maildir)
{
	char path[512];
	struct timespec ts[2];
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= 60;
	ts[1] = ts[0];
	snprintf(path, sizeof(path), "%s/new", maildir);
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
	snprintf(path, sizeof(path), "%s/cur", maildir);
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void deliver(const char *maildir, const char *unique, const char *data)
{
	char src[512];
	const char *err = NULL;
	snprintf(src, sizeof(src), "%s/../../src-%s", maildir, unique);
	int fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	assert_int_equal(maildir_deliver(maildir, unique, 1700000000, "mx.example.org", NULL, 0, fd,
					 0, (off_t)strlen(data), NULL, &err),
			 1);
	close(fd);
	unlink(src);
}

static void test_open_creates_defaults(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_mailbox *boxes;
	size_t n;
	char path[512];

	assert_string_equal(mstore_path(f->st), f->user);
	assert_int_equal(mstore_list(f->st, &boxes, &n, &err), MSTORE_OK);
	assert_int_equal(n, 6);
	assert_string_equal(boxes[0].name, "INBOX");
	assert_string_equal(boxes[1].name, "Archive");
	static const struct {
		const char *name;
		unsigned special;
	} want[] = {
		{ "INBOX", 0 },
		{ "Sent", MSTORE_SPECIAL_SENT },
		{ "Drafts", MSTORE_SPECIAL_DRAFTS },
		{ "Trash", MSTORE_SPECIAL_TRASH },
		{ "Junk", MSTORE_SPECIAL_JUNK },
		{ "Archive", MSTORE_SPECIAL_ARCHIVE },
	};
	for (size_t i = 0; i < 6; i++) {
		const struct mstore_mailbox *mb = find_box(boxes, n, want[i].name);
		assert_non_null(mb);
		assert_int_equal(mb->special, want[i].special);
		assert_true(mb->subscribed);
		assert_false(mb->noselect);
		assert_false(mb->has_children);
		if (i > 0) {
			snprintf(path, sizeof(path), "%s/.%s/cur", f->user, want[i].name);
			assert_true(is_dir(path));
		}
	}
	free(boxes);
	struct stat sb;
	snprintf(path, sizeof(path), "%s/index.db", f->user);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/.Sent", f->user);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);

	/* A second open finds them and creates nothing more. */
	struct mstore *st2 = open_second(f);
	assert_int_equal(mstore_list(st2, &boxes, &n, &err), MSTORE_OK);
	assert_int_equal(n, 6);
	free(boxes);
	struct mstore_mailbox mb;
	assert_int_equal(mstore_status(st2, "inbox", &mb, &err), MSTORE_OK);
	assert_string_equal(mb.name, "INBOX");
	assert_int_equal(mb.messages, 0);
	assert_int_equal(mb.uidnext, 1);
	assert_true(mb.uidvalidity > 0);
	mstore_close(&st2);
	assert_null(st2);
}

static void test_create_delete_rename(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_mailbox *boxes;
	size_t n;
	char path[512];

	/* Missing parents are created; names with '.' and '%' round-trip. */
	assert_int_equal(mstore_create(f->st, "Work/2026/Q1", 0, &err), MSTORE_OK);
	assert_int_equal(mstore_create(f->st, "Work", 0, &err), MSTORE_EXISTS);
	assert_int_equal(mstore_create(f->st, "inbox", 0, &err), MSTORE_EXISTS);
	assert_int_equal(mstore_create(f->st, "a.b%c/Ünïcödé", MSTORE_SPECIAL_ARCHIVE, &err),
			 MSTORE_OK);
	snprintf(path, sizeof(path), "%s/.a%%2Eb%%25c.Ünïcödé/cur", f->user);
	assert_true(is_dir(path));
	snprintf(path, sizeof(path), "%s/.Work.2026.Q1/maildirfolder", f->user);
	assert_int_equal(access(path, F_OK), 0);

	assert_int_equal(mstore_list(f->st, &boxes, &n, &err), MSTORE_OK);
	assert_int_equal(n, 6 + 3 + 2);
	assert_true(find_box(boxes, n, "Work")->has_children);
	assert_true(find_box(boxes, n, "Work/2026")->has_children);
	assert_false(find_box(boxes, n, "Work/2026/Q1")->has_children);
	assert_int_equal(find_box(boxes, n, "a.b%c/Ünïcödé")->special, MSTORE_SPECIAL_ARCHIVE);
	free(boxes);

	/* Messages go with a rename, children too. */
	uint32_t uid = append(f->st, "Work/2026/Q1", msg1, MSTORE_F_SEEN, NULL);
	assert_int_equal(uid, 1);
	assert_int_equal(mstore_rename(f->st, "Work", "Work/Sub", &err), MSTORE_BAD_NAME);
	assert_int_equal(mstore_rename(f->st, "Work", "Sent", &err), MSTORE_EXISTS);
	assert_int_equal(mstore_rename(f->st, "Nope", "Other", &err), MSTORE_NOT_FOUND);
	assert_int_equal(mstore_rename(f->st, "Work", "Old/Jobs", &err), MSTORE_OK);
	struct mstore_mailbox mb;
	assert_int_equal(mstore_status(f->st, "Old/Jobs/2026/Q1", &mb, &err), MSTORE_OK);
	assert_int_equal(mb.messages, 1);
	assert_int_equal(mstore_status(f->st, "Work/2026/Q1", &mb, &err), MSTORE_NOT_FOUND);
	snprintf(path, sizeof(path), "%s/.Work.2026.Q1", f->user);
	assert_false(is_dir(path));
	snprintf(path, sizeof(path), "%s/.Old.Jobs.2026.Q1/cur", f->user);
	assert_int_equal(count_entries(path), 1);

	/* DELETE of a parent keeps it as noselect; of a leaf removes it. */
	assert_int_equal(mstore_delete(f->st, "Old/Jobs", &err), MSTORE_OK);
	assert_int_equal(mstore_list(f->st, &boxes, &n, &err), MSTORE_OK);
	const struct mstore_mailbox *jobs = find_box(boxes, n, "Old/Jobs");
	assert_non_null(jobs);
	assert_true(jobs->noselect);
	assert_true(jobs->has_children);
	free(boxes);
	struct mstore_box *box;
	assert_int_equal(mstore_box_open(f->st, "Old/Jobs", 0, &box, &err), MSTORE_NOT_FOUND);
	assert_int_equal(mstore_delete(f->st, "Old/Jobs", &err), MSTORE_BAD_NAME);
	assert_int_equal(mstore_delete(f->st, "Old/Jobs/2026/Q1", &err), MSTORE_OK);
	assert_int_equal(mstore_delete(f->st, "Old/Jobs/2026", &err), MSTORE_OK);
	assert_int_equal(mstore_delete(f->st, "Old/Jobs", &err), MSTORE_OK);
	assert_int_equal(mstore_delete(f->st, "Old/Jobs", &err), MSTORE_NOT_FOUND);
	assert_int_equal(mstore_delete(f->st, "INBOX", &err), MSTORE_BAD_NAME);
	snprintf(path, sizeof(path), "%s/.Old.Jobs.2026.Q1", f->user);
	assert_false(is_dir(path));
	/* Nothing left aside in the root. */
	DIR *d = opendir(f->user);
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		assert_null(strstr(de->d_name, "deleted"));
	closedir(d);

	/* A deleted mailbox comes back with a new UIDVALIDITY. */
	assert_int_equal(mstore_create(f->st, "Tmp", 0, &err), MSTORE_OK);
	struct mstore_mailbox before;
	assert_int_equal(mstore_status(f->st, "Tmp", &before, &err), MSTORE_OK);
	assert_int_equal(mstore_delete(f->st, "Tmp", &err), MSTORE_OK);
	assert_int_equal(mstore_create(f->st, "Tmp", 0, &err), MSTORE_OK);
	assert_int_equal(mstore_status(f->st, "Tmp", &mb, &err), MSTORE_OK);
	assert_true(mb.uidvalidity > before.uidvalidity);

	/* RENAME INBOX: its messages move, INBOX stays, empty, and keeps its UIDs. */
	append(f->st, "INBOX", msg1, 0, NULL);
	uint32_t u2 = append(f->st, "INBOX", msg2, MSTORE_F_FLAGGED, "$Work");
	struct mstore_mailbox inbox_before;
	assert_int_equal(mstore_status(f->st, "INBOX", &inbox_before, &err), MSTORE_OK);
	assert_int_equal(mstore_rename(f->st, "INBOX", "Saved/Inbox", &err), MSTORE_OK);
	assert_int_equal(mstore_status(f->st, "INBOX", &mb, &err), MSTORE_OK);
	assert_int_equal(mb.messages, 0);
	assert_int_equal(mb.uidnext, inbox_before.uidnext);
	assert_int_equal(mb.uidvalidity, inbox_before.uidvalidity);
	snprintf(path, sizeof(path), "%s/cur", f->user);
	assert_int_equal(count_entries(path), 0);
	assert_int_equal(mstore_box_open(f->st, "Saved/Inbox", 0, &box, &err), MSTORE_OK);
	struct mstore_msg *msgs;
	assert_int_equal(mstore_box_load(box, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(msgs[1].uid, u2);
	assert_int_equal(msgs[1].flags, MSTORE_F_FLAGGED);
	size_t n_kw;
	const char *const *kw = mstore_box_keywords(box, &n_kw);
	assert_int_equal(n_kw, 1);
	assert_string_equal(kw[0], "$Work");
	assert_int_equal(msgs[1].keywords, 1);
	int fd;
	assert_int_equal(mstore_box_msg_open(box, u2, &fd, &err), MSTORE_OK);
	close(fd);
	free(msgs);
	mstore_box_close(&box);
	/* INBOX's clients learn that the messages left. */
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	struct mstore_msg *ch;
	uint32_t *exp;
	size_t n_ch, n_exp;
	int complete;
	assert_int_equal(mstore_box_changes(box, inbox_before.highestmodseq, &ch, &n_ch, &exp,
					    &n_exp, &complete, &err),
			 MSTORE_OK);
	assert_int_equal(n_exp, 2);
	assert_int_equal(exp[1], u2);
	assert_true(complete);
	free(ch);
	free(exp);
	mstore_box_close(&box);
}

static void test_subscribe(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char **names;
	size_t n;

	assert_int_equal(mstore_subscribe(f->st, "Sent", 0, &err), MSTORE_OK);
	assert_int_equal(mstore_subscribe(f->st, "Not/There", 1, &err), MSTORE_OK);
	assert_int_equal(mstore_subscribe(f->st, "inbox", 1, &err), MSTORE_OK);
	assert_int_equal(mstore_subscribe(f->st, "bad\001", 1, &err), MSTORE_BAD_NAME);
	assert_int_equal(mstore_subscriptions(f->st, &names, &n, &err), MSTORE_OK);
	static const char *const want[] = { "Archive", "Drafts", "INBOX", "Junk", "Not/There",
					     "Trash" };
	assert_int_equal(n, 6);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(names[i], want[i]);
		free(names[i]);
	}
	free(names);
	struct mstore_mailbox *boxes;
	assert_int_equal(mstore_list(f->st, &boxes, &n, &err), MSTORE_OK);
	assert_false(find_box(boxes, n, "Sent")->subscribed);
	assert_true(find_box(boxes, n, "Trash")->subscribed);
	free(boxes);
}

static void test_append_load(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	uint32_t uv, uid;

	assert_int_equal(mstore_append(f->st, "Nope", msg1, strlen(msg1), 0, NULL, 0, 0, &uv, &uid,
				       &err),
			 MSTORE_NOT_FOUND);
	assert_int_equal(mstore_append(f->st, "INBOX", msg1, strlen(msg1), 0, "bad(kw", 0, 0, &uv,
				       &uid, &err),
			 MSTORE_BAD_NAME);
	assert_int_equal(mstore_append(f->st, "INBOX", msg1, strlen(msg1),
				       MSTORE_F_SEEN | MSTORE_F_DRAFT, "$Label1 Work", 1600000000,
				       120, &uv, &uid, &err),
			 MSTORE_OK);
	assert_int_equal(uid, 1);
	uint32_t uid2;
	assert_int_equal(mstore_append(f->st, "inbox", msg2, strlen(msg2), 0, "work", 0, 0, &uv,
				       &uid2, &err),
			 MSTORE_OK);
	assert_int_equal(uid2, 2);

	struct mstore_box *box;
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	const struct mstore_mailbox *info = mstore_box_info(box);
	assert_int_equal(info->uidvalidity, uv);
	assert_int_equal(info->uidnext, 3);
	assert_int_equal(info->messages, 2);
	assert_int_equal(info->unseen, 1);
	assert_int_equal(info->size, strlen(msg1) + strlen(msg2));
	size_t n_kw;
	const char *const *kw = mstore_box_keywords(box, &n_kw);
	assert_int_equal(n_kw, 2);
	assert_string_equal(kw[0], "$Label1");
	assert_string_equal(kw[1], "Work");

	struct mstore_msg *msgs;
	size_t n;
	assert_int_equal(mstore_box_load(box, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(msgs[0].uid, 1);
	assert_int_equal(msgs[0].flags, MSTORE_F_SEEN | MSTORE_F_DRAFT);
	assert_int_equal(msgs[0].keywords, 3);
	assert_int_equal(msgs[0].size, strlen(msg1));
	assert_int_equal(msgs[0].internaldate, 1600000000);
	assert_int_equal(msgs[0].internaldate_tz, 120);
	assert_true(msgs[0].modseq > 0);
	assert_int_equal(msgs[1].keywords, 2); /* "work" is "Work" */
	assert_true(msgs[1].internaldate > 1700000000);
	assert_true(msgs[1].modseq > msgs[0].modseq);
	free(msgs);

	/* The file: byte-exact, 0600, its flags in the name. */
	int fd;
	char buf[256];
	assert_int_equal(mstore_box_msg_open(box, 1, &fd, &err), MSTORE_OK);
	ssize_t r = read(fd, buf, sizeof(buf));
	assert_int_equal(r, (ssize_t)strlen(msg1));
	assert_memory_equal(buf, msg1, strlen(msg1));
	struct stat sb;
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	close(fd);
	assert_int_equal(mstore_box_msg_open(box, 99, &fd, &err), MSTORE_NOT_FOUND);
	mstore_box_close(&box);
	char path[512];
	snprintf(path, sizeof(path), "%s/tmp", f->user);
	assert_int_equal(count_entries(path), 0);
}

static void test_delivery_sync_poll(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_box *box;

	append(f->st, "INBOX", msg1, 0, NULL);
	age_dirs(f->user);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_poll(box, &err), 0);
	uint64_t modseq = mstore_box_info(box)->highestmodseq;

	deliver(f->user, "q1.0", msg2);
	assert_int_equal(mstore_box_poll(box, &err), 1);
	assert_int_equal(mstore_box_sync(box, &err), MSTORE_OK);
	const struct mstore_mailbox *info = mstore_box_info(box);
	assert_int_equal(info->messages, 2);
	assert_int_equal(info->uidnext, 3);
	assert_true(info->highestmodseq > modseq);
	char path[512];
	snprintf(path, sizeof(path), "%s/new", f->user);
	assert_int_equal(count_entries(path), 0);
	snprintf(path, sizeof(path), "%s/cur", f->user);
	assert_int_equal(count_entries(path), 2);

	struct mstore_msg *ch;
	uint32_t *exp;
	size_t n_ch, n_exp;
	int complete;
	assert_int_equal(mstore_box_changes(box, modseq, &ch, &n_ch, &exp, &n_exp, &complete, &err),
			 MSTORE_OK);
	assert_int_equal(n_ch, 1);
	assert_int_equal(ch[0].uid, 2);
	assert_int_equal(ch[0].size, strlen(msg2));
	assert_int_equal(ch[0].internaldate, 1700000000);
	assert_int_equal(n_exp, 0);
	free(ch);
	free(exp);

	/* Quiet again once the directories are old. */
	age_dirs(f->user);
	assert_int_equal(mstore_box_poll(box, &err), 1); /* cur/ differs from the record */
	assert_int_equal(mstore_box_sync(box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_poll(box, &err), 0);

	/* A delivery already flagged Seen ("name:2,S" in new/) keeps its flag. */
	char src[600], dst[600];
	snprintf(src, sizeof(src), "%s/tmp/1700000001.x.host,S=5", f->user);
	int fd = open(src, O_WRONLY | O_CREAT, 0600);
	assert_int_equal(write(fd, "hello", 5), 5);
	close(fd);
	snprintf(dst, sizeof(dst), "%s/new/1700000001.x.host,S=5:2,S", f->user);
	assert_int_equal(rename(src, dst), 0);
	/* Another session takes it in: this one learns through poll. */
	struct mstore *st2 = open_second(f);
	struct mstore_mailbox mb;
	assert_int_equal(mstore_status(st2, "INBOX", &mb, &err), MSTORE_OK);
	assert_int_equal(mb.messages, 3);
	assert_int_equal(mb.unseen, 2);
	mstore_close(&st2);
	assert_int_equal(mstore_box_poll(box, &err), 1);
	assert_int_equal(mstore_box_sync(box, &err), MSTORE_OK);
	struct mstore_msg *msgs;
	size_t n;
	assert_int_equal(mstore_box_load(box, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 3);
	assert_int_equal(msgs[2].uid, 3);
	assert_int_equal(msgs[2].flags, MSTORE_F_SEEN);
	assert_int_equal(msgs[2].size, 5);
	free(msgs);
	mstore_box_close(&box);
}

static void test_two_sessions_store(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore *st2 = open_second(f);
	struct mstore_box *a, *b;

	for (int i = 0; i < 3; i++)
		append(f->st, "INBOX", msg1, 0, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &a, &err), MSTORE_OK);
	assert_int_equal(mstore_box_open(st2, "INBOX", 0, &b, &err), MSTORE_OK);
	uint64_t seen_b = mstore_box_info(b)->highestmodseq;

	uint32_t uids[] = { 1, 3, 7 };
	struct mstore_msg *changed;
	size_t n_changed;
	uint32_t *failed;
	size_t n_failed;
	assert_int_equal(mstore_box_store(a, uids, 3, MSTORE_STORE_ADD,
					  MSTORE_F_SEEN | MSTORE_F_ANSWERED, "$Important", 0,
					  &changed, &n_changed, &failed, &n_failed, &err),
			 MSTORE_OK);
	assert_int_equal(n_changed, 2);
	assert_int_equal(n_failed, 0);
	assert_int_equal(changed[0].uid, 1);
	assert_int_equal(changed[1].uid, 3);
	assert_int_equal(changed[0].modseq, changed[1].modseq);
	assert_int_equal(changed[0].flags, MSTORE_F_SEEN | MSTORE_F_ANSWERED);
	assert_int_equal(changed[0].keywords, 1);
	uint64_t store_modseq = changed[0].modseq;
	free(changed);
	free(failed);
	/* The names carry the flags. */
	char path[512];
	snprintf(path, sizeof(path), "%s/cur", f->user);
	DIR *d = opendir(path);
	struct dirent *de;
	int rs = 0;
	while ((de = readdir(d)) != NULL)
		rs += strstr(de->d_name, ":2,RS") != NULL;
	closedir(d);
	assert_int_equal(rs, 2);

	/* The other session. */
	assert_int_equal(mstore_box_poll(b, &err), 1);
	assert_int_equal(mstore_box_sync(b, &err), MSTORE_OK);
	assert_int_equal(mstore_box_info(b)->highestmodseq, store_modseq);
	assert_int_equal(mstore_box_info(b)->unseen, 1);
	struct mstore_msg *ch;
	uint32_t *exp;
	size_t n_ch, n_exp;
	int complete;
	assert_int_equal(mstore_box_changes(b, seen_b, &ch, &n_ch, &exp, &n_exp, &complete, &err),
			 MSTORE_OK);
	assert_int_equal(n_ch, 2);
	assert_int_equal(ch[0].uid, 1);
	assert_int_equal(ch[1].uid, 3);
	assert_int_equal(ch[1].flags, MSTORE_F_SEEN | MSTORE_F_ANSWERED);
	assert_int_equal(n_exp, 0);
	free(ch);
	free(exp);
	size_t n_kw;
	const char *const *kw = mstore_box_keywords(b, &n_kw);
	assert_int_equal(n_kw, 1);
	assert_string_equal(kw[0], "$Important");

	/* A STORE that changes nothing keeps the modseq. */
	assert_int_equal(mstore_box_store(b, uids, 2, MSTORE_STORE_ADD, MSTORE_F_SEEN, NULL, 0,
					  &changed, &n_changed, NULL, NULL, &err),
			 MSTORE_OK);
	assert_int_equal(n_changed, 0);
	free(changed);

	/* REMOVE and SET. */
	uint32_t one = 1;
	assert_int_equal(mstore_box_store(b, &one, 1, MSTORE_STORE_REMOVE, MSTORE_F_ANSWERED,
					  "$Important", 0, &changed, &n_changed, NULL, NULL, &err),
			 MSTORE_OK);
	assert_int_equal(n_changed, 1);
	assert_int_equal(changed[0].flags, MSTORE_F_SEEN);
	assert_int_equal(changed[0].keywords, 0);
	assert_true(changed[0].modseq > store_modseq);
	free(changed);
	uint32_t two = 2;
	assert_int_equal(mstore_box_store(b, &two, 1, MSTORE_STORE_SET, MSTORE_F_FLAGGED, "Later",
					  0, &changed, &n_changed, NULL, NULL, &err),
			 MSTORE_OK);
	assert_int_equal(changed[0].flags, MSTORE_F_FLAGGED);
	assert_int_equal(changed[0].keywords, 2);
	free(changed);

	/* The first session sees both through poll and changes(). */
	assert_int_equal(mstore_box_poll(a, &err), 1);
	assert_int_equal(mstore_box_sync(a, &err), MSTORE_OK);
	assert_int_equal(mstore_box_changes(a, store_modseq, &ch, &n_ch, &exp, &n_exp, &complete,
					    &err),
			 MSTORE_OK);
	assert_int_equal(n_ch, 2);
	assert_int_equal(ch[0].uid, 1);
	assert_int_equal(ch[1].uid, 2);
	free(ch);
	free(exp);

	/* Read-only boxes refuse changes. */
	struct mstore_box *ro;
	assert_int_equal(mstore_box_open(st2, "INBOX", 1, &ro, &err), MSTORE_OK);
	assert_int_equal(mstore_box_store(ro, &one, 1, MSTORE_STORE_ADD, MSTORE_F_FLAGGED, NULL, 0,
					  NULL, NULL, NULL, NULL, &err),
			 MSTORE_BAD_NAME);
	mstore_box_close(&ro);
	mstore_box_close(&a);
	mstore_box_close(&b);
	mstore_close(&st2);
}

static void test_unchangedsince(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_box *box;
	for (int i = 0; i < 3; i++)
		append(f->st, "INBOX", msg1, 0, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	uint32_t two = 2, all[] = { 1, 2, 3 };
	struct mstore_msg *changed;
	size_t n_changed, n_failed;
	uint32_t *failed;
	assert_int_equal(mstore_box_store(box, &two, 1, MSTORE_STORE_ADD, MSTORE_F_FLAGGED, NULL, 0,
					  &changed, &n_changed, NULL, NULL, &err),
			 MSTORE_OK);
	uint64_t ms2 = changed[0].modseq;
	free(changed);
	/* Messages 1 and 3 are older than ms2 - 1; message 2 is not. */
	assert_int_equal(mstore_box_store(box, all, 3, MSTORE_STORE_ADD, MSTORE_F_SEEN, NULL,
					  ms2 - 1, &changed, &n_changed, &failed, &n_failed, &err),
			 MSTORE_OK);
	assert_int_equal(n_failed, 1);
	assert_int_equal(failed[0], 2);
	assert_int_equal(n_changed, 2);
	assert_int_equal(changed[0].uid, 1);
	assert_int_equal(changed[1].uid, 3);
	free(changed);
	free(failed);
	struct mstore_msg *msgs;
	size_t n;
	assert_int_equal(mstore_box_load(box, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(msgs[1].flags, MSTORE_F_FLAGGED);
	free(msgs);
	mstore_box_close(&box);
}

static void test_expunge(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore *st2 = open_second(f);
	struct mstore_box *a, *b;
	for (int i = 0; i < 4; i++)
		append(f->st, "INBOX", msg1, i % 2 ? MSTORE_F_DELETED : 0, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &a, &err), MSTORE_OK);
	assert_int_equal(mstore_box_open(st2, "INBOX", 0, &b, &err), MSTORE_OK);
	assert_int_equal(mstore_box_info(a)->deleted, 2);
	uint64_t before = mstore_box_info(b)->highestmodseq;

	/* Only \Deleted ones, and only those asked for. */
	uint32_t some[] = { 1, 2 };
	uint32_t *exp;
	size_t n_exp;
	assert_int_equal(mstore_box_expunge(a, some, 2, &exp, &n_exp, &err), MSTORE_OK);
	assert_int_equal(n_exp, 1);
	assert_int_equal(exp[0], 2);
	free(exp);
	assert_int_equal(mstore_box_expunge(a, NULL, 0, &exp, &n_exp, &err), MSTORE_OK);
	assert_int_equal(n_exp, 1);
	assert_int_equal(exp[0], 4);
	free(exp);
	assert_int_equal(mstore_box_info(a)->messages, 2);
	assert_int_equal(mstore_box_info(a)->deleted, 0);
	char path[512];
	snprintf(path, sizeof(path), "%s/cur", f->user);
	assert_int_equal(count_entries(path), 2);
	int fd;
	assert_int_equal(mstore_box_msg_open(b, 2, &fd, &err), MSTORE_NOT_FOUND);

	assert_int_equal(mstore_box_poll(b, &err), 1);
	assert_int_equal(mstore_box_sync(b, &err), MSTORE_OK);
	struct mstore_msg *ch;
	size_t n_ch;
	int complete;
	assert_int_equal(mstore_box_changes(b, before, &ch, &n_ch, &exp, &n_exp, &complete, &err),
			 MSTORE_OK);
	assert_int_equal(n_ch, 0);
	assert_int_equal(n_exp, 2);
	assert_int_equal(exp[0], 2);
	assert_int_equal(exp[1], 4);
	assert_true(complete);
	free(ch);
	free(exp);
	struct mstore_msg *msgs;
	size_t n;
	assert_int_equal(mstore_box_load(b, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(msgs[0].uid, 1);
	assert_int_equal(msgs[1].uid, 3);
	free(msgs);

	/* A file removed by another program is expunged by the next sync. */
	char *name = NULL;
	DIR *d = opendir(path);
	struct dirent *de;
	while ((de = readdir(d)) != NULL && name == NULL)
		if (de->d_name[0] != '.')
			name = strdup(de->d_name);
	closedir(d);
	char file[800];
	snprintf(file, sizeof(file), "%s/%s", path, name);
	free(name);
	assert_int_equal(unlink(file), 0);
	age_dirs(f->user);
	assert_int_equal(mstore_box_poll(b, &err), 1);
	assert_int_equal(mstore_box_sync(b, &err), MSTORE_OK);
	assert_int_equal(mstore_box_info(b)->messages, 1);
	mstore_box_close(&a);
	mstore_box_close(&b);
	mstore_close(&st2);
}

static void test_copy_move(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_box *box;
	append(f->st, "INBOX", msg1, MSTORE_F_SEEN, "$A");
	append(f->st, "INBOX", msg2, MSTORE_F_FLAGGED, "$B");
	append(f->st, "INBOX", msg1, 0, NULL);
	append(f->st, "Archive", msg1, 0, "$B"); /* Archive's keyword 0 is $B */
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_cache_put(box, 2, "envelope", "(ENV)", 5, &err), MSTORE_OK);

	uint32_t uids[] = { 2, 3, 9 }, dest_uv, *src_uids, *dest_uids;
	size_t n;
	assert_int_equal(mstore_box_copy(box, uids, 3, "Nope", 0, &dest_uv, &src_uids, &dest_uids,
					 &n, &err),
			 MSTORE_NOT_FOUND);
	assert_int_equal(mstore_box_copy(box, uids, 3, "Archive", 0, &dest_uv, &src_uids,
					 &dest_uids, &n, &err),
			 MSTORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(src_uids[0], 2);
	assert_int_equal(src_uids[1], 3);
	assert_int_equal(dest_uids[0], 2);
	assert_int_equal(dest_uids[1], 3);
	free(src_uids);
	free(dest_uids);
	struct mstore_mailbox mb;
	assert_int_equal(mstore_status(f->st, "Archive", &mb, &err), MSTORE_OK);
	assert_int_equal(mb.uidvalidity, dest_uv);
	assert_int_equal(mb.messages, 3);
	assert_int_equal(mstore_box_info(box)->messages, 3);

	/* MOVE of 1 and 2 into Trash: gone here, expunged, there with new UIDs. */
	uint32_t mv[] = { 1, 2 };
	uint64_t before = mstore_box_info(box)->highestmodseq;
	assert_int_equal(mstore_box_copy(box, mv, 2, "Trash", 1, &dest_uv, &src_uids, &dest_uids,
					 &n, &err),
			 MSTORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(dest_uids[0], 1);
	assert_int_equal(dest_uids[1], 2);
	free(src_uids);
	free(dest_uids);
	assert_int_equal(mstore_box_info(box)->messages, 1);
	struct mstore_msg *ch;
	uint32_t *exp;
	size_t n_ch, n_exp;
	int complete;
	assert_int_equal(mstore_box_sync(box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_changes(box, before, &ch, &n_ch, &exp, &n_exp, &complete, &err),
			 MSTORE_OK);
	assert_int_equal(n_exp, 2);
	free(ch);
	free(exp);
	char path[512];
	snprintf(path, sizeof(path), "%s/cur", f->user);
	assert_int_equal(count_entries(path), 1);
	mstore_box_close(&box);

	/* Flags, keywords (by name), dates and the cache went along. */
	struct mstore_box *ar;
	assert_int_equal(mstore_box_open(f->st, "Archive", 0, &ar, &err), MSTORE_OK);
	struct mstore_msg *msgs;
	assert_int_equal(mstore_box_load(ar, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 3);
	assert_int_equal(msgs[1].flags, MSTORE_F_FLAGGED);
	assert_int_equal(msgs[1].keywords, 1); /* $B is Archive's keyword 0 */
	assert_int_equal(msgs[1].size, strlen(msg2));
	char *val;
	size_t len;
	assert_int_equal(mstore_box_cache_get(ar, 2, "envelope", &val, &len, &err), 1);
	assert_string_equal(val, "(ENV)");
	free(val);
	free(msgs);
	int fd;
	char buf[256];
	assert_int_equal(mstore_box_msg_open(ar, 2, &fd, &err), MSTORE_OK);
	assert_int_equal(read(fd, buf, sizeof(buf)), (ssize_t)strlen(msg2));
	close(fd);
	mstore_box_close(&ar);

	struct mstore_box *tr;
	assert_int_equal(mstore_box_open(f->st, "Trash", 0, &tr, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(tr, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(msgs[0].flags, MSTORE_F_SEEN);
	size_t n_kw;
	const char *const *kw = mstore_box_keywords(tr, &n_kw);
	assert_int_equal(n_kw, 2);
	assert_string_equal(kw[msgs[0].keywords == 1 ? 0 : 1], "$A");
	free(msgs);
	mstore_box_close(&tr);
}

static void test_msg_open_after_rename(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore *st2 = open_second(f);
	struct mstore_box *a, *b;
	append(f->st, "INBOX", msg1, 0, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &a, &err), MSTORE_OK);
	assert_int_equal(mstore_box_open(st2, "INBOX", 0, &b, &err), MSTORE_OK);
	uint32_t one = 1;
	assert_int_equal(mstore_box_store(b, &one, 1, MSTORE_STORE_ADD, MSTORE_F_SEEN, NULL, 0,
					  NULL, NULL, NULL, NULL, &err),
			 MSTORE_OK);
	/* a has not synced: it still opens the message. */
	int fd;
	assert_int_equal(mstore_box_msg_open(a, 1, &fd, &err), MSTORE_OK);
	close(fd);

	/* Another program renames it (a new flag letter): found by its base. */
	char cur[512], from[800], to[800];
	snprintf(cur, sizeof(cur), "%s/cur", f->user);
	char *name = only_entry(cur);
	snprintf(from, sizeof(from), "%s/%s", cur, name);
	snprintf(to, sizeof(to), "%s/%s", cur, name);
	strcpy(strstr(to, ":2,"), ":2,FS");
	free(name);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(mstore_box_msg_open(a, 1, &fd, &err), MSTORE_OK);
	close(fd);
	/* And the next sync reads the flag from the name. */
	age_dirs(f->user);
	assert_int_equal(mstore_box_sync(a, &err), MSTORE_OK);
	struct mstore_msg *msgs;
	size_t n;
	assert_int_equal(mstore_box_load(a, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(msgs[0].flags, MSTORE_F_SEEN | MSTORE_F_FLAGGED);
	free(msgs);
	/* Gone entirely: not found. */
	assert_int_equal(unlink(to), 0);
	assert_int_equal(mstore_box_msg_open(a, 1, &fd, &err), MSTORE_NOT_FOUND);
	mstore_box_close(&a);
	mstore_box_close(&b);
	mstore_close(&st2);
}

static void test_cache(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_box *box;
	append(f->st, "INBOX", msg1, MSTORE_F_DELETED, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	char *val;
	size_t len;
	assert_int_equal(mstore_box_cache_get(box, 1, "bodystructure", &val, &len, &err), 0);
	assert_int_equal(mstore_box_cache_put(box, 1, "bodystructure", "(\"TEXT\")", 8, &err),
			 MSTORE_OK);
	assert_int_equal(mstore_box_cache_put(box, 1, "bodystructure", "(\"TEXT\" x)", 10, &err),
			 MSTORE_OK);
	assert_int_equal(mstore_box_cache_get(box, 1, "bodystructure", &val, &len, &err), 1);
	assert_int_equal(len, 10);
	assert_string_equal(val, "(\"TEXT\" x)");
	free(val);
	/* Binary values keep their bytes. */
	assert_int_equal(mstore_box_cache_put(box, 1, "bin", "a\0b", 3, &err), MSTORE_OK);
	assert_int_equal(mstore_box_cache_get(box, 1, "bin", &val, &len, &err), 1);
	assert_int_equal(len, 3);
	assert_memory_equal(val, "a\0b", 3);
	free(val);
	/* Gone with its message. */
	uint32_t *exp;
	size_t n_exp;
	assert_int_equal(mstore_box_expunge(box, NULL, 0, &exp, &n_exp, &err), MSTORE_OK);
	free(exp);
	assert_int_equal(mstore_box_cache_get(box, 1, "bodystructure", &val, &len, &err), 0);
	mstore_box_close(&box);
}

struct scan_seen {
	uint32_t last;
	size_t n;
	int ordered;
};

static int scan_cb(void *ctx, uint32_t uid, const void *value, size_t len)
{
	struct scan_seen *seen = ctx;
	char want[32];
	snprintf(want, sizeof(want), "v%u", uid);
	if (uid <= seen->last || len != strlen(want) || memcmp(value, want, len) != 0)
		seen->ordered = 0;
	seen->last = uid;
	seen->n++;
	return 0;
}

/* Puts are held back and written in batches: visible to get and scan before and after
 * a batch is written, and written by close. */
static void test_cache_batches(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_box *box;
	for (int i = 0; i < 300; i++)
		append(f->st, "INBOX", msg1, 0, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	for (uint32_t uid = 1; uid <= 300; uid++) {
		char v[32];
		snprintf(v, sizeof(v), "v%u", uid);
		assert_int_equal(mstore_box_cache_put(box, uid, "f", v, strlen(v), &err), MSTORE_OK);
	}
	char *val;
	size_t len;
	/* 300 is past the first batch of 256: still held back, and found. */
	assert_int_equal(mstore_box_cache_get(box, 300, "f", &val, &len, &err), 1);
	assert_string_equal(val, "v300");
	free(val);
	struct scan_seen seen = { 0, 0, 1 };
	assert_int_equal(mstore_box_cache_scan(box, "f", scan_cb, &seen, &err), MSTORE_OK);
	assert_int_equal(seen.n, 300);
	assert_true(seen.ordered);
	assert_int_equal(mstore_box_cache_put(box, 7, "g", "late", 4, &err), MSTORE_OK);
	mstore_box_close(&box);
	/* A second handle (another session) reads what close wrote. */
	struct mstore *st2;
	assert_int_equal(mstore_open(f->root, "example.org", "alice", &st2, &err), MSTORE_OK);
	assert_int_equal(mstore_box_open(st2, "INBOX", 1, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_cache_get(box, 7, "g", &val, &len, &err), 1);
	assert_string_equal(val, "late");
	free(val);
	mstore_box_close(&box);
	mstore_close(&st2);
}

/* Loads of a large mailbox start from a checkpoint of the list and replay the changes
 * since: the result must be what reading every row gives. */
static void test_load_from_checkpoint(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_box *box;
	for (int i = 0; i < 600; i++)
		append(f->st, "INBOX", msg1, i % 7 == 0 ? MSTORE_F_SEEN : 0, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	struct mstore_msg *first, *second;
	size_t n1, n2;
	assert_int_equal(mstore_box_load(box, &first, &n1, &err), MSTORE_OK); /* writes it */
	assert_int_equal(n1, 600);
	/* Changes after the checkpoint: flags, expunges, a new message. */
	uint32_t flag_uids[] = { 2, 300, 599 }, del_uids[] = { 10, 11, 450 };
	struct mstore_msg *ch;
	uint32_t *failed, *gone;
	size_t n_ch, n_failed, n_gone;
	assert_int_equal(mstore_box_store(box, flag_uids, 3, MSTORE_STORE_ADD, MSTORE_F_FLAGGED,
					  NULL, 0, &ch, &n_ch, &failed, &n_failed, &err),
			 MSTORE_OK);
	free(ch);
	free(failed);
	assert_int_equal(mstore_box_store(box, del_uids, 3, MSTORE_STORE_ADD, MSTORE_F_DELETED,
					  NULL, 0, &ch, &n_ch, &failed, &n_failed, &err),
			 MSTORE_OK);
	free(ch);
	free(failed);
	assert_int_equal(mstore_box_expunge(box, del_uids, 3, &gone, &n_gone, &err), MSTORE_OK);
	assert_int_equal(n_gone, 3);
	free(gone);
	append(f->st, "INBOX", msg2, MSTORE_F_ANSWERED, NULL);
	mstore_box_close(&box);

	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box, &second, &n2, &err), MSTORE_OK);
	assert_int_equal(n2, 600 - 3 + 1);
	for (size_t i = 1; i < n2; i++)
		assert_true(second[i - 1].uid < second[i].uid);
	for (size_t i = 0; i < n2; i++) {
		uint32_t uid = second[i].uid;
		assert_true(uid != 10 && uid != 11 && uid != 450);
		if (uid == 2 || uid == 300 || uid == 599)
			assert_true(second[i].flags & MSTORE_F_FLAGGED);
		else if (uid <= 600)
			assert_false(second[i].flags & MSTORE_F_FLAGGED);
		if (uid <= 600)
			assert_int_equal(second[i].flags & MSTORE_F_SEEN,
					 (uid - 1) % 7 == 0 ? MSTORE_F_SEEN : 0);
	}
	assert_int_equal(second[n2 - 1].uid, 601);
	assert_int_equal(second[n2 - 1].flags, MSTORE_F_ANSWERED);
	free(first);
	free(second);
	mstore_box_close(&box);

	/* A damaged list file is not believed: a torn one (cut short) and one with another
	 * UIDVALIDITY (as after a reindex) give the index's list. */
	char lpath[512];
	snprintf(lpath, sizeof(lpath), "%s/tern-list", f->user);
	struct stat lst;
	assert_int_equal(stat(lpath, &lst), 0);
	assert_int_equal(truncate(lpath, lst.st_size - 7), 0);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box, &second, &n2, &err), MSTORE_OK);
	assert_int_equal(n2, 598);
	free(second);
	mstore_box_close(&box);
	int lfd = open(lpath, O_WRONLY);
	assert_true(lfd >= 0);
	uint64_t other_uidvalidity = 12345;
	uint32_t bogus_flags = MSTORE_F_FLAGGED; /* shows if the file were believed */
	assert_int_equal(pwrite(lfd, &other_uidvalidity, 8, 16), 8);
	assert_int_equal(pwrite(lfd, &bogus_flags, 4, 64 + offsetof(struct mstore_msg, flags)), 4);
	close(lfd);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box, &second, &n2, &err), MSTORE_OK);
	assert_int_equal(n2, 598);
	assert_false(second[0].flags & MSTORE_F_FLAGGED);
	free(second);
	mstore_box_close(&box);
	/* Written before the last boot (another boot id): the machine may have crashed
	 * before the file reached the disk. */
	lfd = open(lpath, O_WRONLY);
	assert_true(lfd >= 0);
	assert_int_equal(pwrite(lfd, "0123456789abcdef", 16, 40), 16);
	assert_int_equal(pwrite(lfd, &bogus_flags, 4, 64 + offsetof(struct mstore_msg, flags)), 4);
	close(lfd);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	struct mstore_list *list;
	assert_int_equal(mstore_box_list(box, &list, &err), MSTORE_OK);
	const struct mstore_msg *lm = mstore_list_msgs(list, &n2);
	assert_int_equal(n2, 598);
	assert_int_equal(lm[n2 - 1].uid, 601);
	assert_false(lm[0].flags & MSTORE_F_FLAGGED);
	mstore_list_free(&list);
	assert_null(list);
	mstore_box_close(&box);

	/* RENAME INBOX moves every message away: its checkpoint must not bring them back. */
	assert_int_equal(mstore_rename(f->st, "INBOX", "Old", &err), MSTORE_OK);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box, &second, &n2, &err), MSTORE_OK);
	assert_int_equal(n2, 0);
	free(second);
	mstore_box_close(&box);
	assert_int_equal(mstore_box_open(f->st, "Old", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box, &second, &n2, &err), MSTORE_OK);
	assert_int_equal(n2, 598);
	free(second);
	mstore_box_close(&box);
}

static void write_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

/* A mailbox filled by another program (files straight into cur/) is imported on its
 * first open: UIDs in name order, flags and sizes from the names, a duplicate base and
 * a directory skipped.  The list the import hands out is the one the index gives back
 * later, and CONDSTORE still sees the import (MODSEQ 2, which the modseq index leaves
 * out) as well as later changes. */
static void test_import_cur(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	enum { N = 1500 };
	char path[512];
	/* Created in a scrambled order: the UIDs must follow the names, not readdir. */
	for (int k = 0; k < N; k++) {
		int i = (k * 7919) % N;
		char body[64];
		int len = snprintf(body, sizeof(body), "Subject: %d\r\n\r\nbody %d\r\n", i, i);
		if (i % 100 == 5) /* no ",S=": the size comes from a stat */
			snprintf(path, sizeof(path), "%s/cur/%d.M%dP1.host:2,%s", f->user,
				 1600000000 + i, i, i % 3 == 0 ? "S" : "");
		else
			snprintf(path, sizeof(path), "%s/cur/%d.M%dP1.host,S=%d:2,%s", f->user,
				 1600000000 + i, i, len, i % 3 == 0 ? "S" : "");
		write_file(path, body);
	}
	/* A second file of one base (left by a crash) and a directory: neither is a
	 * message of its own. */
	snprintf(path, sizeof(path), "%s/cur/%d.M%dP1.host,S=%d:2,F", f->user, 1600000000 + 7, 7,
		 (int)strlen("Subject: 7\r\n\r\nbody 7\r\n"));
	write_file(path, "Subject: 7\r\n\r\nbody 7\r\n");
	snprintf(path, sizeof(path), "%s/cur/1700000000.dir", f->user);
	assert_int_equal(mkdir(path, 0700), 0);
	age_dirs(f->user);
	/* What a crash left in tmp/ goes when it is 36 hours old; a file in use stays. */
	char stale[512], busy[512];
	snprintf(stale, sizeof(stale), "%s/tmp/tern-list.99999.1", f->user);
	snprintf(busy, sizeof(busy), "%s/tmp/1700000000.P1Q1.host", f->user);
	write_file(stale, "x");
	write_file(busy, "y");
	struct timespec past[2];
	clock_gettime(CLOCK_REALTIME, &past[0]);
	past[0].tv_sec -= 37 * 3600;
	past[1] = past[0];
	assert_int_equal(utimensat(AT_FDCWD, stale, past, 0), 0);

	struct mstore_box *box;
	struct mstore_list *list;
	size_t n;
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_info(box)->messages, N);
	assert_int_equal(mstore_box_info(box)->uidnext, N + 1);
	assert_int_equal(mstore_box_list(box, &list, &err), MSTORE_OK);
	const struct mstore_msg *lm = mstore_list_msgs(list, &n);
	assert_int_equal(n, N);
	for (size_t k = 0; k < n; k++) {
		int i = (int)k; /* the names sort as their numbers: same digit count */
		char body[64];
		int len = snprintf(body, sizeof(body), "Subject: %d\r\n\r\nbody %d\r\n", i, i);
		assert_int_equal(lm[k].uid, k + 1);
		assert_int_equal(lm[k].size, len);
		assert_int_equal(lm[k].internaldate, 1600000000 + i);
		assert_int_equal(lm[k].flags, i % 3 == 0 ? MSTORE_F_SEEN : 0);
		assert_int_equal(lm[k].modseq, 2);
	}
	assert_int_equal(access(stale, F_OK), -1);
	assert_int_equal(access(busy, F_OK), 0);
	snprintf(path, sizeof(path), "%s/tern-list", f->user);
	assert_int_equal(access(path, F_OK), 0);
	/* What a second session reads (list file or index) is the same list. */
	struct mstore *st2 = open_second(f);
	struct mstore_box *box2;
	struct mstore_msg *again;
	size_t n2;
	assert_int_equal(mstore_box_open(st2, "INBOX", 0, &box2, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box2, &again, &n2, &err), MSTORE_OK);
	assert_int_equal(n2, N);
	assert_memory_equal(again, lm, N * sizeof(*again));
	free(again);
	mstore_list_free(&list);

	/* CONDSTORE: the import is "changed since 1", not "since 2"; a STORE after it is
	 * found through the modseq index. */
	struct mstore_msg *ch, *changed;
	uint32_t *failed, *gone;
	size_t n_ch, n_failed, n_gone;
	int complete;
	assert_int_equal(mstore_box_changes(box2, 1, &changed, &n_ch, &gone, &n_gone, &complete,
					    &err),
			 MSTORE_OK);
	assert_int_equal(n_ch, N);
	free(changed);
	free(gone);
	assert_int_equal(mstore_box_changes(box2, 2, &changed, &n_ch, &gone, &n_gone, &complete,
					    &err),
			 MSTORE_OK);
	assert_int_equal(n_ch, 0);
	free(changed);
	free(gone);
	uint32_t uids[] = { 5, 1200 };
	assert_int_equal(mstore_box_store(box, uids, 2, MSTORE_STORE_ADD, MSTORE_F_FLAGGED, NULL,
					  0, &ch, &n_ch, &failed, &n_failed, &err),
			 MSTORE_OK);
	free(ch);
	free(failed);
	assert_int_equal(mstore_box_sync(box2, &err), MSTORE_OK);
	assert_int_equal(mstore_box_changes(box2, 2, &changed, &n_ch, &gone, &n_gone, &complete,
					    &err),
			 MSTORE_OK);
	assert_int_equal(n_ch, 2);
	assert_int_equal(changed[0].uid, 5);
	assert_int_equal(changed[1].uid, 1200);
	assert_true(changed[1].modseq > 2);
	free(changed);
	free(gone);
	mstore_box_close(&box2);
	mstore_close(&st2);

	/* New files of bases the import has (the first, a middle and the last, as a
	 * program redelivering them would leave them) are duplicates; a new base is not. */
	int dups[] = { 0, 777, N - 1 };
	for (size_t k = 0; k < 3; k++) {
		int i = dups[k];
		char body[64];
		int len = snprintf(body, sizeof(body), "Subject: %d\r\n\r\nbody %d\r\n", i, i);
		snprintf(path, sizeof(path), "%s/new/%d.M%dP1.host,S=%d", f->user, 1600000000 + i,
			 i, len);
		write_file(path, body);
	}
	snprintf(path, sizeof(path), "%s/new/1650000000.M1P1.host,S=6", f->user);
	write_file(path, "y\r\n\r\n");
	assert_int_equal(mstore_box_sync(box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_info(box)->messages, N + 1);
	assert_int_equal(mstore_box_info(box)->uidnext, N + 2);
	struct mstore_msg *all;
	assert_int_equal(mstore_box_load(box, &all, &n2, &err), MSTORE_OK);
	assert_int_equal(n2, N + 1);
	assert_int_equal(all[N].uid, N + 1);
	assert_int_equal(all[N].size, 6);
	free(all);
	snprintf(path, sizeof(path), "%s/cur", f->user);
	DIR *cur = opendir(path);
	assert_non_null(cur);
	size_t files = 0;
	for (struct dirent *de; (de = readdir(cur)) != NULL;)
		files += de->d_name[0] != '.';
	closedir(cur);
	assert_int_equal(files, N + 1 /* the crash copy of 7 */ + 1 /* the directory */ + 1);
	mstore_box_close(&box);

	/* Imported, then changed by the same box before its list is read: the list shows
	 * the change (the import's own list is stale by then). */
	assert_int_equal(mstore_create(f->st, "Other", 0, &err), MSTORE_OK);
	char other[512];
	snprintf(other, sizeof(other), "%s/.Other", f->user);
	for (int i = 0; i < 100; i++) {
		snprintf(path, sizeof(path), "%s/cur/%d.M%dP2.host,S=6:2,", other, 1600000000 + i, i);
		write_file(path, "x\r\n\r\n");
	}
	age_dirs(other);
	assert_int_equal(mstore_box_open(f->st, "Other", 0, &box, &err), MSTORE_OK);
	uint32_t one = 3;
	assert_int_equal(mstore_box_store(box, &one, 1, MSTORE_STORE_ADD, MSTORE_F_ANSWERED, NULL,
					  0, &ch, &n_ch, &failed, &n_failed, &err),
			 MSTORE_OK);
	free(ch);
	free(failed);
	assert_int_equal(mstore_box_list(box, &list, &err), MSTORE_OK);
	lm = mstore_list_msgs(list, &n);
	assert_int_equal(n, 100);
	assert_int_equal(lm[2].flags, MSTORE_F_ANSWERED);
	assert_true(lm[2].modseq > 2);
	assert_int_equal(lm[3].flags, 0);
	mstore_list_free(&list);
	mstore_box_close(&box);
}

static void test_pop3_lock(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore *st2 = open_second(f);
	int fd1, fd2;
	assert_int_equal(mstore_pop3_lock(f->st, &fd1, &err), MSTORE_OK);
	assert_int_equal(mstore_pop3_lock(st2, &fd2, &err), MSTORE_IN_USE);
	assert_non_null(err);
	close(fd1);
	assert_int_equal(mstore_pop3_lock(st2, &fd2, &err), MSTORE_OK);
	close(fd2);
	mstore_close(&st2);
}

static void test_reindex(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	append(f->st, "INBOX", msg1, MSTORE_F_SEEN | MSTORE_F_ANSWERED, "$Gone");
	append(f->st, "INBOX", msg2, MSTORE_F_DELETED, NULL);
	assert_int_equal(mstore_create(f->st, "Projects/x.y", 0, &err), MSTORE_OK);
	append(f->st, "Projects/x.y", msg1, MSTORE_F_DRAFT | MSTORE_F_FLAGGED, NULL);
	assert_int_equal(mstore_subscribe(f->st, "Projects/x.y", 1, &err), MSTORE_OK);
	struct mstore_mailbox inbox, proj;
	assert_int_equal(mstore_status(f->st, "INBOX", &inbox, &err), MSTORE_OK);
	assert_int_equal(mstore_status(f->st, "Projects/x.y", &proj, &err), MSTORE_OK);
	deliver(f->user, "q9.0", msg2);
	mstore_close(&f->st);

	size_t n_messages = 0;
	assert_int_equal(mstore_reindex(f->root, "example.org", "alice", &n_messages, &err),
			 MSTORE_OK);
	assert_int_equal(n_messages, 4);
	assert_int_equal(mstore_open(f->root, "example.org", "alice", &f->st, &err), MSTORE_OK);
	struct mstore_mailbox mb;
	assert_int_equal(mstore_status(f->st, "INBOX", &mb, &err), MSTORE_OK);
	assert_true(mb.uidvalidity > inbox.uidvalidity);
	assert_true(mb.uidvalidity > proj.uidvalidity);
	assert_int_equal(mb.messages, 3);
	assert_int_equal(mb.deleted, 1);

	struct mstore_box *box;
	struct mstore_msg *msgs;
	size_t n;
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 3);
	uint32_t all = 0;
	for (size_t i = 0; i < n; i++) {
		all |= msgs[i].flags;
		assert_int_equal(msgs[i].keywords, 0);
	}
	assert_int_equal(all, MSTORE_F_SEEN | MSTORE_F_ANSWERED | MSTORE_F_DELETED);
	free(msgs);
	mstore_box_close(&box);

	struct mstore_mailbox *boxes;
	assert_int_equal(mstore_list(f->st, &boxes, &n, &err), MSTORE_OK);
	const struct mstore_mailbox *p = find_box(boxes, n, "Projects");
	assert_non_null(p);
	assert_true(p->has_children);
	p = find_box(boxes, n, "Projects/x.y");
	assert_non_null(p);
	assert_true(p->subscribed);
	free(boxes);
	assert_int_equal(mstore_box_open(f->st, "Projects/x.y", 0, &box, &err), MSTORE_OK);
	assert_int_equal(mstore_box_load(box, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(msgs[0].flags, MSTORE_F_DRAFT | MSTORE_F_FLAGGED);
	assert_int_equal(msgs[0].size, strlen(msg1));
	free(msgs);
	mstore_box_close(&box);

	char path[512];
	snprintf(path, sizeof(path), "%s/index.db.reindex", f->user);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_bad_names(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char longname[MSTORE_NAME_MAX + 8];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	/* Short enough as a name, but its folder name would pass 255 bytes. */
	char dots[200];
	memset(dots, '.', sizeof(dots) - 1);
	dots[0] = 'x';
	dots[sizeof(dots) - 1] = '\0';
	const char *const bad[] = {
		"", "/", "a/", "/a", "a//b", ".", "..", "a/../b", "a/./b", "ctl\001", "tab\there",
		"del\x7f", "bad\xff utf8", "\xc0\xaf", "\xed\xa0\x80", longname, dots,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		assert_int_equal(mstore_create(f->st, bad[i], 0, &err), MSTORE_BAD_NAME);
		assert_non_null(err);
	}
	struct mstore_box *box;
	assert_int_equal(mstore_box_open(f->st, "..", 0, &box, &err), MSTORE_BAD_NAME);
	assert_int_equal(mstore_rename(f->st, "Sent", "x/../y", &err), MSTORE_BAD_NAME);
	/* Dots inside a component are fine, and are no hierarchy. */
	assert_int_equal(mstore_create(f->st, "a.b", 0, &err), MSTORE_OK);
	assert_int_equal(mstore_create(f->st, "...x", 0, &err), MSTORE_OK);
	assert_int_equal(mstore_create(f->st, "100%", 0, &err), MSTORE_OK);
	struct mstore_mailbox *boxes;
	size_t n;
	assert_int_equal(mstore_list(f->st, &boxes, &n, &err), MSTORE_OK);
	assert_non_null(find_box(boxes, n, "a.b"));
	assert_null(find_box(boxes, n, "a"));
	assert_non_null(find_box(boxes, n, "100%"));
	free(boxes);
	/* User names follow maildir_ensure()'s rules. */
	struct mstore *st;
	assert_int_equal(mstore_open(f->root, "example.org", "../bob", &st, &err), MSTORE_BAD_NAME);
	assert_int_equal(mstore_open(f->root, ".hidden", "bob", &st, &err), MSTORE_BAD_NAME);
	/* Keywords must be atoms. */
	uint32_t uv, uid;
	assert_int_equal(mstore_append(f->st, "INBOX", msg1, strlen(msg1), 0, "\\Seen", 0, 0, &uv,
				       &uid, &err),
			 MSTORE_BAD_NAME);
}

static void test_keyword_limit(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	struct mstore_box *box;
	append(f->st, "INBOX", msg1, 0, NULL);
	assert_int_equal(mstore_box_open(f->st, "INBOX", 0, &box, &err), MSTORE_OK);
	uint32_t one = 1;
	char kw[32];
	for (int i = 0; i < MSTORE_KEYWORDS_MAX; i++) {
		snprintf(kw, sizeof(kw), "k%d", i);
		assert_int_equal(mstore_box_store(box, &one, 1, MSTORE_STORE_ADD, 0, kw, 0, NULL,
						  NULL, NULL, NULL, &err),
				 MSTORE_OK);
	}
	assert_int_equal(mstore_box_store(box, &one, 1, MSTORE_STORE_ADD, 0, "one-more", 0, NULL,
					  NULL, NULL, NULL, &err),
			 MSTORE_LIMIT);
	struct mstore_msg *msgs;
	size_t n;
	assert_int_equal(mstore_box_load(box, &msgs, &n, &err), MSTORE_OK);
	assert_int_equal(msgs[0].keywords, UINT64_MAX);
	free(msgs);
	mstore_box_close(&box);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_delete_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_subscribe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delivery_sync_poll, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_sessions_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unchangedsince, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msg_open_after_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_from_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_cur, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pop3_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reindex, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keyword_limit, setup, teardown),
	};
	return cmocka_run_group_tests_name("mstore", tests, NULL, NULL);
}
