#include "store/maildir.h"

#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAILDIR_PATH_MAX 4096
#define MAILDIR_COPY_BUF (64 * 1024)

/* Per thread: the delivery worker may run several deliveries on pool threads. */
static _Thread_local char maildir_errbuf[1024];

__attribute__((format(printf, 2, 3))) static int maildir_fail(const char **error_r,
							      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(maildir_errbuf, sizeof(maildir_errbuf), fmt, ap);
	va_end(ap);
	if (error_r != NULL)
		*error_r = maildir_errbuf;
	return -1;
}

/* A path component that cannot climb out ("..", "a/b"), hide as a Maildir++ folder
 * (".Sent") or smuggle control characters into log lines and file names. */
static int maildir_name_valid(const char *s)
{
	if (s == NULL || s[0] == '\0' || s[0] == '.')
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return 0;
	return strlen(s) <= 255;
}

static int maildir_is_dir(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int maildir_ensure(const char *mail_root, const char *domain, const char *user, char *path_r,
		   size_t cap, const char **error_r)
{
	static const char *const subdirs[] = { "cur", "new", "tmp" };
	char path[MAILDIR_PATH_MAX], sub[MAILDIR_PATH_MAX + 8];

	if (!maildir_name_valid(domain))
		return maildir_fail(error_r, "invalid mail domain name '%s'",
				    domain != NULL ? domain : "");
	if (!maildir_name_valid(user))
		return maildir_fail(error_r, "invalid mail user name '%s'",
				    user != NULL ? user : "");
	int n = snprintf(path, sizeof(path), "%s/%s/%s", mail_root, domain, user);
	if (n < 0 || (size_t)n >= sizeof(path) || (size_t)n >= cap)
		return maildir_fail(error_r, "maildir path for %s@%s too long", user, domain);

	/* The usual case is an existing maildir: three stats instead of a mkdir walk. */
	int complete = 1;
	for (size_t i = 0; i < 3 && complete; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", path, subdirs[i]);
		complete = maildir_is_dir(sub);
	}
	if (!complete) {
		if (file_mkdir_p(path, 0700) < 0)
			return maildir_fail(error_r, "cannot create %s: %s", path, strerror(errno));
		for (size_t i = 0; i < 3; i++) {
			snprintf(sub, sizeof(sub), "%s/%s", path, subdirs[i]);
			if (mkdir(sub, 0700) < 0 && errno != EEXIST)
				return maildir_fail(error_r, "cannot create %s: %s", sub,
						    strerror(errno));
			if (!maildir_is_dir(sub))
				return maildir_fail(error_r, "%s exists but is not a directory",
						    sub);
		}
	}
	memcpy(path_r, path, (size_t)n + 1);
	return 0;
}

/* Maildir names use '/' and ':' for themselves; a hostname containing them is
 * written with octal escapes as other Maildir writers do. */
static void maildir_host_escape(const char *host, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *p = host; *p != '\0' && o + 5 < cap; p++) {
		if (*p == '/') {
			memcpy(out + o, "\\057", 4);
			o += 4;
		} else if (*p == ':') {
			memcpy(out + o, "\\072", 4);
			o += 4;
		} else if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			out[o++] = '_';
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

static int maildir_unique_valid(const char *s)
{
	if (s == NULL || s[0] == '\0' || strlen(s) > 128)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p == '/' || *p == ':' || *p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* Copies len bytes of src from offset to the current position of dst.  copy_file_range
 * lets the kernel share or copy blocks without a trip through user space; filesystems
 * and kernels that cannot do it fall back to pread/write.  0, or -1 with errno (EIO
 * when src ends early). */
static int maildir_copy(int dst, int src, off_t offset, off_t len)
{
	off_t off = offset, left = len;
	int use_cfr = 1;
	char *buf = NULL;

	while (left > 0) {
		if (use_cfr) {
			size_t chunk = left > (off_t)(1 << 30) ? (size_t)1 << 30 : (size_t)left;
			loff_t in = off;
			ssize_t n = copy_file_range(src, &in, dst, NULL, chunk, 0);
			if (n > 0) {
				off += n;
				left -= n;
				continue;
			}
			if (n == 0) {
				errno = EIO;
				return -1;
			}
			if (errno == EINTR)
				continue;
			if (errno != EXDEV && errno != ENOSYS && errno != EINVAL &&
			    errno != EOPNOTSUPP && errno != EBADF && errno != EPERM)
				return -1;
			use_cfr = 0;
		}
		if (buf == NULL) {
			buf = malloc(MAILDIR_COPY_BUF);
			if (buf == NULL)
				return -1;
		}
		size_t chunk = left > MAILDIR_COPY_BUF ? MAILDIR_COPY_BUF : (size_t)left;
		ssize_t n = pread(src, buf, chunk, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			int saved = errno;
			free(buf);
			errno = saved;
			return -1;
		}
		if (file_write_all(dst, buf, (size_t)n) < 0) {
			int saved = errno;
			free(buf);
			errno = saved;
			return -1;
		}
		off += n;
		left -= n;
	}
	free(buf);
	return 0;
}

int maildir_deliver(const char *maildir, const char *unique, long long arrival,
		    const char *hostname, const void *prefix, size_t prefix_len, int src_fd,
		    off_t offset, off_t len, int *disk_full_r, const char **error_r)
{
	char host[1024], name[1400];
	char tmp_path[MAILDIR_PATH_MAX + 1500], new_path[MAILDIR_PATH_MAX + 1500];
	char new_dir[MAILDIR_PATH_MAX + 8];

	if (disk_full_r != NULL)
		*disk_full_r = 0;
	if (!maildir_unique_valid(unique))
		return maildir_fail(error_r, "invalid unique name part '%s'",
				    unique != NULL ? unique : "");
	if (offset < 0 || len < 0)
		return maildir_fail(error_r, "invalid source range");
	maildir_host_escape(hostname != NULL && hostname[0] != '\0' ? hostname : "localhost",
			    host, sizeof(host));
	/* Maildir++: S= is the file size, so quota and POP3/IMAP sizes need no stat. */
	long long size = (long long)prefix_len + (long long)len;
	snprintf(name, sizeof(name), "%lld.%s.%s,S=%lld", arrival, unique, host, size);
	if ((size_t)snprintf(tmp_path, sizeof(tmp_path), "%s/tmp/%s", maildir, name) >=
		    sizeof(tmp_path) ||
	    (size_t)snprintf(new_path, sizeof(new_path), "%s/new/%s", maildir, name) >=
		    sizeof(new_path))
		return maildir_fail(error_r, "maildir path too long");
	snprintf(new_dir, sizeof(new_dir), "%s/new", maildir);

	/* A repeat after a crash between link() and the queue status update. */
	struct stat st;
	if (lstat(new_path, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return maildir_fail(error_r, "cannot stat %s: %s", new_path, strerror(errno));

	/* The name is deterministic, so a tmp file of the same name can only be the
	 * remains of an interrupted attempt at this very delivery: truncate it. */
	int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		int saved = errno;
		if (disk_full_r != NULL)
			*disk_full_r = saved == ENOSPC || saved == EDQUOT;
		return maildir_fail(error_r, "cannot create %s: %s", tmp_path, strerror(saved));
	}
	const char *step = "write";
	if (prefix_len > 0 && file_write_all(fd, prefix, prefix_len) < 0)
		goto fail;
	step = "copy the message into";
	if (maildir_copy(fd, src_fd, offset, len) < 0)
		goto fail;
	step = "fsync";
	if (fsync(fd) < 0)
		goto fail;
	step = "close";
	int cfd = fd;
	fd = -1;
	if (close(cfd) < 0)
		goto fail;

	/* link() rather than rename(): it fails with EEXIST instead of replacing a copy
	 * that a reader may already have seen. */
	step = "link";
	if (link(tmp_path, new_path) < 0) {
		if (errno == EEXIST) {
			unlink(tmp_path);
			return 0;
		}
		goto fail;
	}
	/* A leftover tmp/ name is harmless (the next attempt truncates it, maildir tmp
	 * cleaning removes it), so a failure here does not undo the delivery. */
	unlink(tmp_path);
	if (file_fsync_dir(new_dir) < 0) {
		int saved = errno;
		if (disk_full_r != NULL)
			*disk_full_r = saved == ENOSPC || saved == EDQUOT;
		return maildir_fail(error_r, "cannot fsync %s: %s", new_dir, strerror(saved));
	}
	return 1;
fail:;
	int saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp_path);
	if (disk_full_r != NULL)
		*disk_full_r = saved == ENOSPC || saved == EDQUOT;
	return maildir_fail(error_r, "cannot %s %s: %s", step, tmp_path, strerror(saved));
}
