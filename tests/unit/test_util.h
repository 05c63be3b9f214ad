/* Helpers shared by the unit tests: a scratch directory per test. */
#ifndef TERN_TESTS_UNIT_TEST_UTIL_H
#define TERN_TESTS_UNIT_TEST_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int test_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Creates /tmp/tern-NAME-test.XXXXXX into dir (cap bytes).  0 or -1. */
static inline int test_tmpdir_new(char *dir, size_t cap, const char *name)
{
	snprintf(dir, cap, "/tmp/tern-%s-test.XXXXXX", name);
	return mkdtemp(dir) == NULL ? -1 : 0;
}

/* Removes dir and everything below it. */
static inline void test_rm_rf(const char *dir)
{
	nftw(dir, test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
