/* maildir: directory creation and modes, byte-exact delivery with a prefix, idempotent
 * redelivery, refusal of names that could escape the mail root. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "base/file.h"
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fixture {
	char dir[64];
	char root[128]; /* DATA_DIR/mail */
	char src[128];  /* a stand-in for the queue file */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (test_tmpdir_new(f->dir, sizeof(f->dir), "maildir") < 0)
		return -1;
	snprintf(f->root, sizeof(f->root), "%s/mail", f->dir);
	snprintf(f->src, sizeof(f->src), "%s/source", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	test_rm_rf(f->dir);
	free(f);
	return 0;
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

/* The only entry of dir (asserting there is exactly one), or NULL when empty. */
static char *only_entry(const char *dir, int *count_r)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	char *name = NULL;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		n++;
		free(name);
		name = strdup(de->d_name);
	}
	closedir(d);
	*count_r = n;
	return name;
}

/* A source file: junk, then the message at offset, then more junk. */
static int make_source(const struct fixture *f, const unsigned char *msg, size_t len,
		       off_t offset)
{
	int fd = open(f->src, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	char junk[4096];
	memset(junk, 'J', sizeof(junk));
	for (off_t o = 0; o < offset;) {
		size_t n = offset - o < (off_t)sizeof(junk) ? (size_t)(offset - o) : sizeof(junk);
		assert_int_equal(file_write_all(fd, junk, n), 0);
		o += (off_t)n;
	}
	assert_int_equal(file_write_all(fd, msg, len), 0);
	assert_int_equal(file_write_all(fd, "TRAILING JUNK", 13), 0);
	/* The caller's file offset must not matter. */
	assert_int_equal(lseek(fd, 7, SEEK_SET), 7);
	return fd;
}

static unsigned char *test_message(size_t len)
{
	unsigned char *m = malloc(len);
	for (size_t i = 0; i < len; i++)
		m[i] = (unsigned char)(i * 167u + (i >> 11));
	return m;
}

static void test_ensure_creates_dirs(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char path[512], sub[600];

	assert_int_equal(maildir_ensure(f->root, "example.org", "alice", path, sizeof(path), &err),
			 0);
	char expect[600];
	snprintf(expect, sizeof(expect), "%s/example.org/alice", f->root);
	assert_string_equal(path, expect);
	assert_int_equal(mode_of(f->root), 0700);
	snprintf(sub, sizeof(sub), "%s/example.org", f->root);
	assert_int_equal(mode_of(sub), 0700);
	assert_int_equal(mode_of(path), 0700);
	static const char *const subs[] = { "cur", "new", "tmp" };
	for (int i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", path, subs[i]);
		assert_int_equal(mode_of(sub), 0700);
	}
	/* Again: nothing to do, same answer. */
	char again[512];
	assert_int_equal(
		maildir_ensure(f->root, "example.org", "alice", again, sizeof(again), &err), 0);
	assert_string_equal(again, path);

	/* A half-made maildir gets completed. */
	snprintf(sub, sizeof(sub), "%s/cur", path);
	assert_int_equal(rmdir(sub), 0);
	assert_int_equal(maildir_ensure(f->root, "example.org", "alice", path, sizeof(path), &err),
			 0);
	assert_int_equal(mode_of(sub), 0700);

	/* Too small an output buffer is an error, not a truncated path. */
	char tiny[8];
	assert_int_equal(maildir_ensure(f->root, "example.org", "alice", tiny, sizeof(tiny), &err),
			 -1);
}

static void test_bad_names_refused(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char path[512];
	static const char *const bad[] = {
		"", ".", "..", "../etc", "a/b", "/abs", ".hidden", "x\n", "tab\there", "del\x7f",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(maildir_ensure(f->root, "example.org", bad[i], path, sizeof(path),
						&err),
				 -1);
		assert_non_null(err);
		assert_int_equal(maildir_ensure(f->root, bad[i], "alice", path, sizeof(path), &err),
				 -1);
	}
	assert_int_equal(maildir_ensure(f->root, NULL, "alice", path, sizeof(path), &err), -1);
	/* Nothing was created for any of them. */
	assert_int_equal(access(f->root, F_OK), -1);
	/* Odd but harmless names pass: dots inside, UTF-8, '+'. */
	assert_int_equal(maildir_ensure(f->root, "b\xc3\xbc" "cher.example", "a.b+c", path,
					sizeof(path), &err),
			 0);
}

static void deliver_and_check(struct fixture *f, size_t len, off_t offset, const char *prefix)
{
	const char *err = NULL;
	char md[512], dir[600], file[1200];
	int count, disk_full = -1;

	assert_int_equal(maildir_ensure(f->root, "example.org", "bob", md, sizeof(md), &err), 0);
	unsigned char *msg = test_message(len);
	int src = make_source(f, msg, len, offset);
	size_t plen = strlen(prefix);

	int rc = maildir_deliver(md, "0123456789abcdefghij.0", 1767225600, "mx.example.org",
				 prefix, plen, src, offset, (off_t)len, &disk_full, &err);
	assert_int_equal(rc, 1);
	assert_int_equal(disk_full, 0);
	assert_int_equal(lseek(src, 0, SEEK_CUR), 7);

	snprintf(dir, sizeof(dir), "%s/new", md);
	char *name = only_entry(dir, &count);
	assert_int_equal(count, 1);
	char expect[200];
	snprintf(expect, sizeof(expect), "1767225600.0123456789abcdefghij.0.mx.example.org,S=%zu",
		 plen + len);
	assert_string_equal(name, expect);
	snprintf(dir, sizeof(dir), "%s/tmp", md);
	free(only_entry(dir, &count));
	assert_int_equal(count, 0);

	snprintf(file, sizeof(file), "%s/new/%s", md, name);
	assert_int_equal(mode_of(file), 0600);
	char *data;
	size_t dlen;
	assert_int_equal(file_read_all(file, 64 * 1024 * 1024, &data, &dlen), 0);
	assert_int_equal(dlen, plen + len);
	assert_memory_equal(data, prefix, plen);
	assert_memory_equal(data + plen, msg, len);
	free(data);

	/* The same delivery again (a crash before the queue learned of it). */
	rc = maildir_deliver(md, "0123456789abcdefghij.0", 1767225600, "mx.example.org", prefix,
			     plen, src, offset, (off_t)len, &disk_full, &err);
	assert_int_equal(rc, 0);
	snprintf(dir, sizeof(dir), "%s/new", md);
	free(only_entry(dir, &count));
	assert_int_equal(count, 1);
	snprintf(dir, sizeof(dir), "%s/tmp", md);
	free(only_entry(dir, &count));
	assert_int_equal(count, 0);

	assert_int_equal(unlink(file), 0);
	free(name);
	free(msg);
	close(src);
}

static void test_deliver_byte_exact(void **state)
{
	struct fixture *f = *state;
	deliver_and_check(f, 1234, 500,
			  "Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.org\r\n");
	/* Larger than the copy buffer, at an unaligned offset, no prefix. */
	deliver_and_check(f, 3 * 1024 * 1024 + 11, 70001, "");
	/* Empty message. */
	deliver_and_check(f, 0, 0, "Return-Path: <>\r\n");

	/* A source on another filesystem: copy_file_range gives EXDEV and the pread
	 * fallback does the copy. */
	struct stat st;
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) {
		char saved[sizeof(f->src)];
		memcpy(saved, f->src, sizeof(saved));
		snprintf(f->src, sizeof(f->src), "/dev/shm/tern-maildir-test.%d", (int)getpid());
		deliver_and_check(f, 200 * 1024 + 3, 4097, "X-Test: cross-fs\r\n");
		unlink(f->src);
		memcpy(f->src, saved, sizeof(saved));
	}
}

static void test_leftover_tmp_is_replaced(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char md[512], path[1200];
	int disk_full;

	assert_int_equal(maildir_ensure(f->root, "example.org", "bob", md, sizeof(md), &err), 0);
	unsigned char *msg = test_message(100);
	int src = make_source(f, msg, 100, 0);
	/* What a crash in the middle of a first attempt leaves behind: a longer file. */
	snprintf(path, sizeof(path), "%s/tmp/5.u1.h,S=100", md);
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	char junk[500];
	memset(junk, 'x', sizeof(junk));
	assert_int_equal(file_write_all(fd, junk, sizeof(junk)), 0);
	close(fd);

	assert_int_equal(maildir_deliver(md, "u1", 5, "h", NULL, 0, src, 0, 100, &disk_full, &err),
			 1);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/new/5.u1.h,S=100", md);
	char *data;
	size_t len;
	assert_int_equal(file_read_all(path, 4096, &data, &len), 0);
	assert_int_equal(len, 100);
	assert_memory_equal(data, msg, 100);
	free(data);
	free(msg);
	close(src);
}

static void test_deliver_errors(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char md[512], dir[600];
	int count, disk_full = -1;

	assert_int_equal(maildir_ensure(f->root, "example.org", "bob", md, sizeof(md), &err), 0);
	unsigned char *msg = test_message(100);
	int src = make_source(f, msg, 100, 0);

	/* The source ends before len: an error, and nothing left anywhere. */
	assert_int_equal(maildir_deliver(md, "u1", 5, "h", "P: x\r\n", 6, src, 0, 100000,
					 &disk_full, &err),
			 -1);
	assert_int_equal(disk_full, 0);
	assert_non_null(err);
	snprintf(dir, sizeof(dir), "%s/new", md);
	free(only_entry(dir, &count));
	assert_int_equal(count, 0);
	snprintf(dir, sizeof(dir), "%s/tmp", md);
	free(only_entry(dir, &count));
	assert_int_equal(count, 0);

	/* Unique parts that would change the directory or the Maildir info part. */
	assert_int_equal(maildir_deliver(md, "../x", 5, "h", NULL, 0, src, 0, 10, NULL, &err), -1);
	assert_int_equal(maildir_deliver(md, "a:2,S", 5, "h", NULL, 0, src, 0, 10, NULL, &err), -1);
	assert_int_equal(maildir_deliver(md, "", 5, "h", NULL, 0, src, 0, 10, NULL, &err), -1);
	assert_int_equal(maildir_deliver(md, "u", 5, "h", NULL, 0, src, -1, 10, NULL, &err), -1);

	/* A hostname with '/' and ':' is escaped, not obeyed. */
	assert_int_equal(maildir_deliver(md, "u2", 5, "a/b:c", NULL, 0, src, 0, 10, NULL, &err),
			 1);
	snprintf(dir, sizeof(dir), "%s/new", md);
	char *name = only_entry(dir, &count);
	assert_int_equal(count, 1);
	assert_string_equal(name, "5.u2.a\\057b\\072c,S=10");
	free(name);

	/* Not a maildir. */
	char nowhere[600];
	snprintf(nowhere, sizeof(nowhere), "%s/none", f->root);
	assert_int_equal(maildir_deliver(nowhere, "u3", 5, "h", NULL, 0, src, 0, 10, NULL, &err),
			 -1);
	free(msg);
	close(src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ensure_creates_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_names_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_byte_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leftover_tmp_is_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_errors, setup, teardown),
	};
	return cmocka_run_group_tests_name("maildir", tests, NULL, NULL);
}
