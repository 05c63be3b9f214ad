/* Change watches: a file created, renamed, touched or removed in a watched directory
 * calls back on the loop; two watches on one directory share the kernel watch and
 * outlive each other; a watch removed from inside a callback (its own or another's)
 * gets no call after; a path that cannot be watched gives NULL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "event/watch.h"

#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct counter {
	int calls;
	struct watch **remove_on_call; /* a watch to remove from inside the callback */
};

static void count_cb(void *arg)
{
	struct counter *c = arg;
	c->calls++;
	if (c->remove_on_call != NULL)
		watch_remove(c->remove_on_call);
}

/* Turns the loop until *calls moves (or 2 s pass); the calls seen. */
static int turn_until(struct event_base *base, const int *calls, int from)
{
	for (int i = 0; i < 200 && *calls == from; i++) {
		struct timeval tv = { 0, 10000 };
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return *calls;
}

/* Turns the loop for a while (for calls that should not come). */
static void turn_quietly(struct event_base *base)
{
	struct timeval tv = { 0, 100000 };
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void touch(const char *dir, const char *name, const char *data)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

static void test_watch(void **state)
{
	(void)state;
	char dir[64], a[128], b[128], path[256], path2[256];
	assert_int_equal(test_tmpdir_new(dir, sizeof(dir), "watch"), 0);
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	assert_int_equal(mkdir(a, 0700), 0);
	assert_int_equal(mkdir(b, 0700), 0);
	struct event_base *base = event_base_new();
	struct watcher *w = watcher_new(base);
	assert_non_null(w); /* Linux: inotify is there */

	struct counter c1 = { 0 }, c2 = { 0 };
	const char *both[] = { a, b };
	const char *only_a[] = { a };
	struct watch *w1 = watch_add(w, both, 2, count_cb, &c1);
	struct watch *w2 = watch_add(w, only_a, 1, count_cb, &c2);
	assert_non_null(w1);
	assert_non_null(w2);

	/* Creation and writes in a: both; several events in one batch: one call each. */
	touch(a, "f", "x");
	touch(a, "f", "y");
	assert_int_equal(turn_until(base, &c1.calls, 0), 1);
	turn_until(base, &c2.calls, 0);
	assert_int_equal(c2.calls, 1);
	turn_quietly(base);
	assert_int_equal(c1.calls, 1);

	/* A rename into b: only w1 watches b. */
	snprintf(path, sizeof(path), "%s/f", a);
	snprintf(path2, sizeof(path2), "%s/g", b);
	c1.calls = c2.calls = 0;
	assert_int_equal(rename(path, path2), 0); /* a change in a (gone) and in b */
	turn_until(base, &c1.calls, 0);
	turn_quietly(base);
	int c2_after_rename = c2.calls;
	c1.calls = c2.calls = 0;
	touch(b, "h", "z");
	assert_int_equal(turn_until(base, &c1.calls, 0), 1);
	turn_quietly(base);
	assert_int_equal(c2.calls, 0);
	assert_int_equal(c2_after_rename, 1);

	/* w1 goes: the shared watch on a stays for w2. */
	watch_remove(&w1);
	assert_null(w1);
	c1.calls = c2.calls = 0;
	unlink(path2);
	touch(a, "i", "1");
	assert_int_equal(turn_until(base, &c2.calls, 0), 1);
	turn_quietly(base);
	assert_int_equal(c1.calls, 0);

	/* A callback that removes its own watch and then another one: neither calls
	 * again, and the one removed by another's callback is not called in that batch. */
	struct counter c3 = { 0 };
	struct watch *w3 = watch_add(w, only_a, 1, count_cb, &c3);
	assert_non_null(w3);
	c2.remove_on_call = &w3; /* w2 is before w3: its call removes w3 */
	c2.calls = 0;
	touch(a, "j", "2");
	assert_int_equal(turn_until(base, &c2.calls, 0), 1);
	turn_quietly(base);
	assert_null(w3);
	assert_int_equal(c3.calls, 0);
	c2.remove_on_call = &w2;
	touch(a, "k", "3");
	assert_int_equal(turn_until(base, &c2.calls, 1), 2);
	assert_null(w2);
	touch(a, "l", "4");
	turn_quietly(base);
	assert_int_equal(c2.calls, 2);

	/* Writes alone are not changes (writers that others should see rename or touch
	 * when done); a touch is. */
	struct counter c4 = { 0 };
	struct watch *w4 = watch_add(w, only_a, 1, count_cb, &c4);
	assert_non_null(w4);
	touch(a, "l", "5");
	turn_quietly(base);
	assert_int_equal(c4.calls, 0);
	snprintf(path, sizeof(path), "%s/l", a);
	assert_int_equal(utimensat(AT_FDCWD, path, NULL, 0), 0);
	assert_int_equal(turn_until(base, &c4.calls, 0), 1);
	watch_remove(&w4);

	/* What cannot be watched. */
	snprintf(path, sizeof(path), "%s/missing", dir);
	const char *missing[] = { a, path };
	assert_null(watch_add(w, missing, 2, count_cb, &c1));
	assert_null(watch_add(w, only_a, 0, count_cb, &c1));

	watcher_free(&w);
	assert_null(w);
	event_base_free(base);
	test_rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_watch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
