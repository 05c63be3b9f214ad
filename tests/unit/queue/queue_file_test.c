/* queue_file: round trip, in-place status, refusal of files that were never committed
 * or got damaged, id uniqueness, abort, framing guards, directory scan and cleaning. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "base/file.h"
#include "queue/queue_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fixture {
	char dir[64];   /* DATA_DIR stand-in */
	char queue[128]; /* DATA_DIR/queue */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (test_tmpdir_new(f->dir, sizeof(f->dir), "queue") < 0)
		return -1;
	snprintf(f->queue, sizeof(f->queue), "%s/queue", f->dir);
	if (mkdir(f->queue, 0700) < 0)
		return -1;
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

/* Entries of dir other than "." and ".." (and "tmp" when skip_tmp). */
static int count_entries(const char *dir, int skip_tmp)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (skip_tmp && strcmp(de->d_name, "tmp") == 0)
			continue;
		n++;
	}
	closedir(d);
	return n;
}

static struct queue_rcpt test_rcpts[3];

static void full_envelope(struct queue_envelope *env)
{
	memset(env, 0, sizeof(*env));
	memset(test_rcpts, 0, sizeof(test_rcpts));
	test_rcpts[0].addr = "bob@example.com";
	test_rcpts[0].notify = QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE;
	test_rcpts[0].orcpt = "rfc822;bob@example.com";
	test_rcpts[1].addr = "\"odd local part with spaces and R - 0 \"@example.net";
	test_rcpts[1].notify = QUEUE_NOTIFY_NEVER;
	test_rcpts[2].addr = "jos\xc3\xa9@b\xc3\xbc" "cher.example";
	test_rcpts[2].status = QUEUE_STATUS_PENDING;
	env->arrival = 1767225600;
	env->from = "alice@example.org";
	env->ret = QUEUE_RET_HDRS;
	env->envid = "QQ314159";
	env->smtputf8 = 1;
	env->body_8bit = 1;
	env->auth_user = "alice";
	env->client_addr = "2001:db8::25";
	env->helo = "client.example.org";
	env->rcpts = test_rcpts;
	env->n_rcpts = 3;
}

/* Message bytes that would confuse a careless reader: every byte value, lines that
 * look like records and like the end record, no final newline. */
static unsigned char *test_message(size_t len)
{
	unsigned char *m = malloc(len);
	static const char fake[] = "\nM\nZ 00000000000000000000 00000000000000000012\n"
				   "R - 0 x@y\r\n.\r\n";
	for (size_t i = 0; i < len; i++)
		m[i] = (unsigned char)(i * 131u + (i >> 9));
	for (size_t i = 0; i + sizeof(fake) < len; i += 4099)
		memcpy(m + i, fake, sizeof(fake) - 1);
	return m;
}

static char *commit_message(struct fixture *f, const struct queue_envelope *env,
			    const unsigned char *msg, size_t len, size_t piece)
{
	const char *err = NULL;
	struct queue_writer *w = queue_writer_begin(f->queue, env, &err);
	assert_non_null(w);
	char *id = strdup(queue_writer_id(w));
	assert_true(queue_id_valid(id));
	for (size_t off = 0; off < len; off += piece) {
		size_t n = len - off < piece ? len - off : piece;
		assert_int_equal(queue_writer_append(w, msg + off, n, &err), 0);
	}
	assert_int_equal(queue_writer_size(w), (off_t)len);
	int disk_full = -1;
	assert_int_equal(queue_writer_commit(w, &disk_full, &err), 0);
	assert_int_equal(disk_full, 0);
	return id;
}

static void path_of(const struct fixture *f, const char *id, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", f->queue, id);
}

static void assert_data(int fd, const struct queue_envelope *env, const unsigned char *msg,
			size_t len)
{
	assert_int_equal(env->data_len, (off_t)len);
	unsigned char *got = malloc(len + 1);
	assert_int_equal(pread(fd, got, len, env->data_off), (ssize_t)len);
	assert_memory_equal(got, msg, len);
	free(got);
}

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in, out;
	const char *err = NULL;
	char path[256];
	int fd;

	full_envelope(&in);
	/* Pieces that straddle the 64 KiB buffer and ones that bypass it. */
	size_t len = 300 * 1024 + 17;
	unsigned char *msg = test_message(len);
	char *id = commit_message(f, &in, msg, len, 1000);
	char *id2 = commit_message(f, &in, msg, len, 100 * 1024);
	assert_string_not_equal(id, id2);

	path_of(f, id, path, sizeof(path));
	assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
	assert_string_equal(out.id, id);
	assert_int_equal(out.arrival, in.arrival);
	assert_string_equal(out.from, in.from);
	assert_int_equal(out.ret, QUEUE_RET_HDRS);
	assert_string_equal(out.envid, in.envid);
	assert_int_equal(out.smtputf8, 1);
	assert_int_equal(out.body_8bit, 1);
	assert_string_equal(out.auth_user, "alice");
	assert_string_equal(out.client_addr, in.client_addr);
	assert_string_equal(out.helo, in.helo);
	assert_int_equal(out.n_rcpts, 3);
	for (int i = 0; i < 3; i++) {
		assert_string_equal(out.rcpts[i].addr, in.rcpts[i].addr);
		assert_int_equal(out.rcpts[i].notify, in.rcpts[i].notify);
		assert_int_equal(out.rcpts[i].status, QUEUE_STATUS_PENDING);
		assert_true(out.rcpts[i].status_off > 0);
		assert_true(out.rcpts[i].status_off < out.data_off);
	}
	assert_string_equal(out.rcpts[0].orcpt, "rfc822;bob@example.com");
	assert_null(out.rcpts[1].orcpt);
	assert_null(out.rcpts[2].orcpt);
	assert_data(fd, &out, msg, len);
	close(fd);
	queue_envelope_free(&out);
	assert_null(out.rcpts);

	path_of(f, id2, path, sizeof(path));
	assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
	assert_data(fd, &out, msg, len);
	close(fd);
	queue_envelope_free(&out);

	/* Committed: nothing left in tmp/, files 0600. */
	char tmp[200];
	snprintf(tmp, sizeof(tmp), "%s/tmp", f->queue);
	assert_int_equal(count_entries(tmp, 0), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(id);
	free(id2);
	free(msg);
}

static void test_minimal_envelope(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in, out;
	struct queue_rcpt r = { .addr = "postmaster" };
	const char *err = NULL;
	char path[256];
	int fd;

	/* Null sender, no DSN, not authenticated, unknown client, empty message. */
	memset(&in, 0, sizeof(in));
	in.from = "";
	in.rcpts = &r;
	in.n_rcpts = 1;
	char *id = commit_message(f, &in, (const unsigned char *)"", 0, 1);
	path_of(f, id, path, sizeof(path));
	assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
	assert_string_equal(out.from, "");
	assert_null(out.envid);
	assert_null(out.auth_user);
	assert_string_equal(out.client_addr, "");
	assert_string_equal(out.helo, "");
	assert_int_equal(out.ret, QUEUE_RET_UNSET);
	assert_int_equal(out.smtputf8, 0);
	assert_int_equal(out.body_8bit, 0);
	assert_int_equal(out.n_rcpts, 1);
	assert_string_equal(out.rcpts[0].addr, "postmaster");
	assert_int_equal(out.rcpts[0].notify, 0);
	assert_int_equal(out.data_len, 0);
	close(fd);
	queue_envelope_free(&out);
	free(id);
}

static void test_status_survives_reopen(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in, out;
	const char *err = NULL;
	char path[256];
	int fd;

	full_envelope(&in);
	size_t len = 5000;
	unsigned char *msg = test_message(len);
	char *id = commit_message(f, &in, msg, len, 777);
	path_of(f, id, path, sizeof(path));

	assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
	assert_int_equal(queue_file_set_status(fd, &out.rcpts[1], QUEUE_STATUS_DELIVERED, 1, &err),
			 0);
	assert_int_equal(out.rcpts[1].status, QUEUE_STATUS_DELIVERED);
	assert_int_equal(queue_file_set_status(fd, &out.rcpts[2], QUEUE_STATUS_FAILED, 1, &err), 0);
	/* Bytes that would break the framing are refused, and nothing is written. */
	assert_int_equal(queue_file_set_status(fd, &out.rcpts[0], '\n', 1, &err), -1);
	assert_int_equal(queue_file_set_status(fd, &out.rcpts[0], ' ', 1, &err), -1);
	/* An offset that is not in a recipient record is refused. */
	struct queue_rcpt bogus = out.rcpts[0];
	bogus.status_off = out.data_off + 10;
	assert_int_equal(queue_file_set_status(fd, &bogus, 'D', 1, &err), -1);
	bogus.status_off = out.rcpts[0].status_off + 1;
	assert_int_equal(queue_file_set_status(fd, &bogus, 'D', 1, &err), -1);
	close(fd);
	queue_envelope_free(&out);

	assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
	assert_int_equal(out.rcpts[0].status, QUEUE_STATUS_PENDING);
	assert_int_equal(out.rcpts[1].status, QUEUE_STATUS_DELIVERED);
	assert_int_equal(out.rcpts[2].status, QUEUE_STATUS_FAILED);
	assert_string_equal(out.rcpts[1].addr, in.rcpts[1].addr);
	assert_data(fd, &out, msg, len);
	/* Back and forth, still one byte. */
	assert_int_equal(queue_file_set_status(fd, &out.rcpts[1], QUEUE_STATUS_PENDING, 1, &err), 0);
	close(fd);
	queue_envelope_free(&out);
	assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
	assert_int_equal(out.rcpts[1].status, QUEUE_STATUS_PENDING);
	assert_data(fd, &out, msg, len);
	close(fd);
	queue_envelope_free(&out);
	free(id);
	free(msg);
}

static void read_file(const char *path, char **data_r, size_t *len_r)
{
	assert_int_equal(file_read_all(path, 64 * 1024 * 1024, data_r, len_r), 0);
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(file_write_all(fd, data, len), 0);
	close(fd);
}

static void assert_refused(const char *path)
{
	struct queue_envelope env;
	const char *err = NULL;
	int fd = 12345;
	assert_int_equal(queue_file_open(path, &env, &fd, &err), -1);
	assert_non_null(err);
	assert_int_equal(fd, -1);
	assert_null(env.from);
	assert_null(env.rcpts);
}

static void test_without_end_record_refused(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in;
	char path[256];
	char *data;
	size_t len;

	full_envelope(&in);
	unsigned char *msg = test_message(2000);
	char *id = commit_message(f, &in, msg, 2000, 2000);
	path_of(f, id, path, sizeof(path));
	read_file(path, &data, &len);

	/* Everything but the end record. */
	size_t trailer = 2 + strlen(id) + 1 + 20 + 1;
	write_file(path, data, len - trailer);
	assert_refused(path);

	/* An end record whose length does not match where it is. */
	char *bad = malloc(len);
	memcpy(bad, data, len);
	bad[len - 2] = bad[len - 2] == '0' ? '1' : '0';
	write_file(path, bad, len);
	assert_refused(path);

	/* An end record naming another message. */
	memcpy(bad, data, len);
	bad[len - trailer + 2] = bad[len - trailer + 2] == 'A' ? 'B' : 'A';
	write_file(path, bad, len);
	assert_refused(path);

	/* Extra bytes after the end record. */
	memcpy(bad, data, len);
	write_file(path, bad, len);
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	assert_refused(path);

	/* Sanity: the original still opens. */
	write_file(path, data, len);
	struct queue_envelope out;
	const char *err = NULL;
	assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
	close(fd);
	queue_envelope_free(&out);
	free(bad);
	free(data);
	free(id);
	free(msg);
}

static void test_truncated_refused(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in;
	char path[256];
	char *data;
	size_t len;

	full_envelope(&in);
	unsigned char *msg = test_message(600);
	char *id = commit_message(f, &in, msg, 600, 600);
	path_of(f, id, path, sizeof(path));
	read_file(path, &data, &len);
	for (size_t cut = 0; cut < len; cut++) {
		write_file(path, data, cut);
		assert_refused(path);
	}
	free(data);
	free(id);
	free(msg);
}

static void test_malformed_refused(void **state)
{
	struct fixture *f = *state;
	char path[256];
	char id[QUEUE_ID_MAX];
	queue_id_new(id);
	path_of(f, id, path, sizeof(path));

	static const char *const heads[] = {
		/* unknown record type */
		"T 1\nF \nN 0\nU 0\n8 0\nC \nH \nX what\nR - 0 a@b\nM\n",
		/* required record missing (H) */
		"T 1\nF \nN 0\nU 0\n8 0\nC \nR - 0 a@b\nM\n",
		/* no recipient */
		"T 1\nF \nN 0\nU 0\n8 0\nC \nH \nM\n",
		/* repeated sender */
		"T 1\nF a@b\nF c@d\nN 0\nU 0\n8 0\nC \nH \nR - 0 a@b\nM\n",
		/* ORCPT before any recipient */
		"T 1\nF \nN 0\nU 0\n8 0\nC \nH \nO x\nR - 0 a@b\nM\n",
		/* bad flag */
		"T 1\nF \nN 0\nU 2\n8 0\nC \nH \nR - 0 a@b\nM\n",
		/* bad time */
		"T -1\nF \nN 0\nU 0\n8 0\nC \nH \nR - 0 a@b\nM\n",
		/* recipient without address */
		"T 1\nF \nN 0\nU 0\n8 0\nC \nH \nR - 0 \nM\n",
		/* CR inside a record */
		"T 1\nF a\r@b\nN 0\nU 0\n8 0\nC \nH \nR - 0 a@b\nM\n",
		/* well formed (checked last) */
		"T 1\nF \nN 0\nU 0\n8 0\nC \nH \nR - 0 a@b\nO x\nM\n",
	};
	size_t n = sizeof(heads) / sizeof(heads[0]);
	for (size_t i = 0; i < n; i++) {
		char file[512];
		int hl = snprintf(file, sizeof(file), "tern-queue 1\nI %s\n%s", id, heads[i]);
		hl += snprintf(file + hl, sizeof(file) - (size_t)hl, "Z %s %020d\n", id, 0);
		write_file(path, file, (size_t)hl);
		if (i + 1 < n) {
			assert_refused(path);
		} else {
			struct queue_envelope out;
			const char *err = NULL;
			int fd;
			assert_int_equal(queue_file_open(path, &out, &fd, &err), 0);
			assert_string_equal(out.rcpts[0].orcpt, "x");
			close(fd);
			queue_envelope_free(&out);
		}
	}

	/* A committed file under another id's name. */
	char other[QUEUE_ID_MAX], other_path[256];
	queue_id_new(other);
	path_of(f, other, other_path, sizeof(other_path));
	assert_int_equal(rename(path, other_path), 0);
	assert_refused(other_path);

	/* Not a queue file at all, or missing. */
	write_file(path, "hello\n", 6);
	assert_refused(path);
	unlink(path);
	struct queue_envelope out;
	const char *err = NULL;
	int fd;
	assert_int_equal(queue_file_open(path, &out, &fd, &err), -1);
	assert_int_equal(errno, ENOENT);
}

static int cmp_ids(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static void test_ids_unique(void **state)
{
	(void)state;
	enum { N = 100000 };
	char(*ids)[QUEUE_ID_MAX] = malloc(N * sizeof(*ids));
	for (int i = 0; i < N; i++) {
		assert_int_equal(queue_id_new(ids[i]), 0);
		assert_int_equal(strlen(ids[i]), QUEUE_ID_LEN);
		assert_true(queue_id_valid(ids[i]));
	}
	/* Later ids sort after earlier ones (seconds apart, whatever the clock does in
	 * between microseconds). */
	char later[QUEUE_ID_MAX];
	struct timespec ts = { 1, 100 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	queue_id_new(later);
	assert_true(strcmp(later, ids[0]) > 0);

	qsort(ids, N, sizeof(*ids), cmp_ids);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(ids[i - 1], ids[i]);
	free(ids);

	assert_false(queue_id_valid("tmp"));
	assert_false(queue_id_valid(""));
	assert_false(queue_id_valid("0123456789abcdefghi/"));
	assert_false(queue_id_valid("0123456789abcdefghijK"));
	assert_true(queue_id_valid("0123456789abcdefghij"));
}

static void test_abort_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in;
	const char *err = NULL;
	char tmp[200];
	snprintf(tmp, sizeof(tmp), "%s/tmp", f->queue);

	full_envelope(&in);
	struct queue_writer *w = queue_writer_begin(f->queue, &in, &err);
	assert_non_null(w);
	unsigned char *msg = test_message(100000);
	assert_int_equal(queue_writer_append(w, msg, 100000, &err), 0);
	assert_int_equal(count_entries(tmp, 0), 1);
	queue_writer_abort(&w);
	assert_null(w);
	queue_writer_abort(&w); /* harmless twice */
	assert_int_equal(count_entries(tmp, 0), 0);
	assert_int_equal(count_entries(f->queue, 1), 0);
	free(msg);
}

static void test_framing_guards(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in;
	const char *err = NULL;
	char tmp[200];
	snprintf(tmp, sizeof(tmp), "%s/tmp", f->queue);

	full_envelope(&in);
	in.from = "alice@example.org\r\nR - 0 victim@example.com";
	assert_null(queue_writer_begin(f->queue, &in, &err));
	assert_non_null(strstr(err, "CR"));

	full_envelope(&in);
	test_rcpts[1].addr = "bob@example.com\nM";
	assert_null(queue_writer_begin(f->queue, &in, &err));

	full_envelope(&in);
	in.helo = "evil\rhelo";
	assert_null(queue_writer_begin(f->queue, &in, &err));

	full_envelope(&in);
	test_rcpts[0].orcpt = "rfc822;x\n";
	assert_null(queue_writer_begin(f->queue, &in, &err));

	full_envelope(&in);
	in.envid = "\r";
	assert_null(queue_writer_begin(f->queue, &in, &err));

	full_envelope(&in);
	test_rcpts[2].status = '\n';
	assert_null(queue_writer_begin(f->queue, &in, &err));

	full_envelope(&in);
	test_rcpts[2].addr = "";
	assert_null(queue_writer_begin(f->queue, &in, &err));

	full_envelope(&in);
	char *huge = malloc(QUEUE_VALUE_MAX + 2);
	memset(huge, 'a', QUEUE_VALUE_MAX + 1);
	huge[QUEUE_VALUE_MAX + 1] = '\0';
	test_rcpts[0].addr = huge;
	assert_null(queue_writer_begin(f->queue, &in, &err));
	free(huge);

	full_envelope(&in);
	in.n_rcpts = 0;
	assert_null(queue_writer_begin(f->queue, &in, &err));

	/* None of the refusals left a file. */
	assert_int_equal(count_entries(tmp, 0), 0);
	assert_int_equal(count_entries(f->queue, 1), 0);
}

struct scan_result {
	char ids[8][QUEUE_ID_MAX];
	int n;
};

static void scan_cb(void *ctx, const char *id)
{
	struct scan_result *r = ctx;
	assert_true(r->n < 8);
	snprintf(r->ids[r->n++], QUEUE_ID_MAX, "%s", id);
}

static void test_scan_and_clean(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope in;
	const char *err = NULL;
	char path[256];

	full_envelope(&in);
	char *a = commit_message(f, &in, (const unsigned char *)"a", 1, 1);
	char *b = commit_message(f, &in, (const unsigned char *)"b", 1, 1);
	/* Noise that is not a committed message. */
	struct queue_writer *w = queue_writer_begin(f->queue, &in, &err);
	assert_non_null(w);
	path_of(f, "README", path, sizeof(path));
	write_file(path, "x", 1);
	path_of(f, ".0123456789abcdefghi", path, sizeof(path));
	write_file(path, "x", 1);
	path_of(f, "0123456789abcdefghij", path, sizeof(path));
	assert_int_equal(mkdir(path, 0700), 0);

	struct scan_result r = { .n = 0 };
	assert_int_equal(queue_dir_scan(f->queue, scan_cb, &r, &err), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.ids[0], strcmp(a, b) < 0 ? a : b);
	assert_string_equal(r.ids[1], strcmp(a, b) < 0 ? b : a);

	/* Cleaning: the writer's fresh tmp file stays, an old one goes. */
	char old[256];
	snprintf(old, sizeof(old), "%s/tmp/0000000000000000000X", f->queue);
	write_file(old, "stale", 5);
	struct timespec times[2] = { { time(NULL) - 2 * 86400, 0 }, { time(NULL) - 2 * 86400, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, old, times, 0), 0);
	assert_int_equal(queue_dir_clean_tmp(f->queue, 86400), 1);
	assert_int_equal(access(old, F_OK), -1);
	char tmp[200];
	snprintf(tmp, sizeof(tmp), "%s/tmp", f->queue);
	assert_int_equal(count_entries(tmp, 0), 1);
	queue_writer_abort(&w);

	assert_int_equal(queue_dir_scan("/nonexistent/tern-queue", scan_cb, &r, &err), -1);
	assert_int_equal(queue_dir_clean_tmp("/nonexistent/tern-queue", 1), 0);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_minimal_envelope, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_survives_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_without_end_record_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_refused, setup, teardown),
		cmocka_unit_test(test_ids_unique),
		cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_framing_guards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_and_clean, setup, teardown),
	};
	return cmocka_run_group_tests_name("queue_file", tests, NULL, NULL);
}
