/* Durable file helpers: the tmp -> write -> fsync -> rename -> fsync(dir) protocol. */
#ifndef TERN_BASE_FILE_H
#define TERN_BASE_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* Creates dir and its missing parents with mode.  0 or -1 (errno set). */
int file_mkdir_p(const char *path, mode_t mode);
/* fsync(2) of a directory, so that a rename or create in it is durable. */
int file_fsync_dir(const char *path);
/* write(2) of all len bytes, retrying on EINTR and short writes.  0 or -1 (errno). */
int file_write_all(int fd, const void *data, size_t len);
/* Writes data to path durably: PATH.tmp.PID, fsync, rename, fsync of the directory.
 * 0, or -1 with errno set and no file left behind. */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* Reads a whole file of at most max bytes into a malloc'ed, NUL-terminated buffer
 * (owned by the caller).  0 or -1 (errno; EFBIG when larger than max). */
int file_read_all(const char *path, size_t max, char **data_r, size_t *len_r);
/* The directory part of path in out (cap bytes). */
void file_dirname(const char *path, char *out, size_t cap);

#endif
