/* Dropping root: workers and the CLI run as the configured unprivileged user. */
#ifndef TERN_BASE_PRIVS_H
#define TERN_BASE_PRIVS_H

#include <sys/types.h>

/* Looks up user.  0, or -1 with *error_r naming what is wrong (static string). */
int privs_lookup(const char *user, uid_t *uid_r, gid_t *gid_r, const char **error_r);
/* Makes dir (and its missing parents) exist, and makes dir and the entries directly in
 * it owned by uid:gid with owner-only permissions on dir.  Does nothing about ownership
 * when not running as root.  0 or -1 with *error_r. */
int privs_prepare_dir(const char *dir, uid_t uid, gid_t gid, const char **error_r);
/* setgroups/setgid/setuid to uid:gid, checked.  0 or -1 with *error_r. */
int privs_drop(uid_t uid, gid_t gid, const char **error_r);
/* When running as root: look up user, prepare data_dir and drop to user.  Otherwise
 * only prepares data_dir.  0 or -1 with *error_r. */
int privs_drop_to(const char *user, const char *data_dir, const char **error_r);

#endif
