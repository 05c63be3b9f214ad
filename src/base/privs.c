#include "base/privs.h"

#include "base/file.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char privs_error[512];

int privs_lookup(const char *user, uid_t *uid_r, gid_t *gid_r, const char **error_r)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	int rc = getpwnam_r(user, &pw, buf, sizeof(buf), &res);
	if (rc != 0 || res == NULL) {
		snprintf(privs_error, sizeof(privs_error),
			 "user '%s' does not exist: create it (useradd --system %s) or set "
			 "[server] user", user, user);
		*error_r = privs_error;
		return -1;
	}
	if (pw.pw_uid == 0) {
		snprintf(privs_error, sizeof(privs_error),
			 "[server] user '%s' is root: workers must run unprivileged", user);
		*error_r = privs_error;
		return -1;
	}
	*uid_r = pw.pw_uid;
	*gid_r = pw.pw_gid;
	return 0;
}

int privs_prepare_dir(const char *dir, uid_t uid, gid_t gid, const char **error_r)
{
	if (file_mkdir_p(dir, 0700) < 0) {
		snprintf(privs_error, sizeof(privs_error), "cannot create %s: %s", dir,
			 strerror(errno));
		*error_r = privs_error;
		return -1;
	}
	if (geteuid() != 0)
		return 0;
	if (chown(dir, uid, gid) < 0 || chmod(dir, 0700) < 0) {
		snprintf(privs_error, sizeof(privs_error), "cannot give %s to uid %d: %s", dir,
			 (int)uid, strerror(errno));
		*error_r = privs_error;
		return -1;
	}
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) == 0 && (st.st_uid != uid || st.st_gid != gid))
			if (lchown(path, uid, gid) < 0) {
				/* Not fatal here: the worker will report what it cannot open. */
			}
	}
	closedir(d);
	return 0;
}

int privs_drop(uid_t uid, gid_t gid, const char **error_r)
{
	if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
		snprintf(privs_error, sizeof(privs_error), "cannot drop privileges: %s",
			 strerror(errno));
		*error_r = privs_error;
		return -1;
	}
	if (setuid(0) == 0) {
		snprintf(privs_error, sizeof(privs_error), "privileges were not dropped");
		*error_r = privs_error;
		return -1;
	}
	return 0;
}

int privs_drop_to(const char *user, const char *data_dir, const char **error_r)
{
	uid_t uid = 0;
	gid_t gid = 0;
	if (geteuid() == 0 && privs_lookup(user, &uid, &gid, error_r) < 0)
		return -1;
	if (privs_prepare_dir(data_dir, uid, gid, error_r) < 0)
		return -1;
	if (geteuid() == 0)
		return privs_drop(uid, gid, error_r);
	return 0;
}
