/* Local delivery into Maildir++ folders: DATA_DIR/mail/DOMAIN/USER/{cur,new,tmp}.
 * Directories are 0700 and files 0600; the process umask can only narrow that. */
#ifndef TERN_STORE_MAILDIR_H
#define TERN_STORE_MAILDIR_H

#include <stddef.h>
#include <sys/types.h>

/* Creates mail_root/DOMAIN/USER/ and its cur/ new/ tmp/ when missing and writes that
 * maildir's path to path_r (cap bytes).  domain and user must be non-empty, must not
 * contain '/' or control characters and must not start with '.': such names are
 * refused, so that no name can reach outside mail_root or hide as a dot-folder.
 * 0 or -1 with *error_r. */
int maildir_ensure(const char *mail_root, const char *domain, const char *user, char *path_r,
		   size_t cap, const char **error_r);

/* Delivers one message into maildir/new/: writes prefix (prefix_len bytes, e.g.
 * Return-Path and Delivered-To headers; may be 0) and then len bytes of src_fd from
 * offset (src_fd's own file offset is not used or moved) into tmp/NAME, fsyncs it,
 * links it to new/NAME, removes tmp/NAME and fsyncs new/.
 *
 * NAME is "<arrival>.<unique>.<hostname>,S=<size>" with size = prefix_len + len.
 * unique is the caller's deterministic unique part (the daemon uses queue id and
 * recipient index), so a repeated delivery after a crash finds the same NAME in new/
 * and does not deliver twice.  unique must be non-empty and contain no '/', ':' or
 * control characters; '/' and ':' in hostname are written as \057 and \072 (the
 * Maildir convention).
 *
 * Returns 1 delivered, 0 already delivered (new/NAME existed; nothing written), -1
 * error with *error_r and *disk_full_r (may be NULL) 1 for ENOSPC/EDQUOT.  A message
 * the user has meanwhile moved to cur/ is not recognised as already delivered. */
int maildir_deliver(const char *maildir, const char *unique, long long arrival,
		    const char *hostname, const void *prefix, size_t prefix_len, int src_fd,
		    off_t offset, off_t len, int *disk_full_r, const char **error_r);

/* Error strings (*error_r) of this module point into a per-thread buffer valid until
 * the next call of this module in the same thread: a pool thread that hands one to
 * another thread copies it first. */

#endif
