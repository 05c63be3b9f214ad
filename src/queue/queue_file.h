/* The spool: one file per accepted message, its envelope as typed records, then the
 * message, then an end record.  Written under QUEUE_DIR/tmp/, committed by fsync and
 * rename into QUEUE_DIR/ (DATA_DIR/queue/).  A file without a valid end record was
 * never accepted: queue_file_open() refuses it.
 *
 * File format, version 1 (every record one line ending in LF; values are raw bytes up
 * to the LF and never contain CR, LF or NUL: the writer refuses them):
 *
 *   tern-queue 1              magic and format version (first line)
 *   I <id>                    queue id, equal to the file name
 *   T <seconds>               arrival time, Unix seconds
 *   F <address>               MAIL FROM reverse-path without <>; empty value: null sender
 *   N <ret>                   DSN RET: 0 not given, 1 FULL, 2 HDRS
 *   E <envid>                 DSN ENVID (xtext decoded)            optional
 *   U <0|1>                   SMTPUTF8 given
 *   8 <0|1>                   BODY=8BITMIME given
 *   A <user>                  authenticated user                    optional
 *   C <address>               client IP address
 *   H <name>                  HELO/EHLO name
 *   R <s> <notify> <address>  a recipient: status byte s at a fixed place (updated in
 *                             place), NOTIFY bitmask in decimal, the address
 *   O <orcpt>                 ORCPT of the R record just before it  optional
 *   M                         end of the envelope: the message follows, byte-exact
 *   <message bytes>
 *   Z <id> <length>           end record: the id again and the message length as
 *                             exactly 20 decimal digits, then LF, at the very end
 *
 * The end record closes the file at a size the reader recomputes, so a truncated file
 * or one whose tail got lost fails.  Records I, T, F, N, U, 8, C, H and at least one R
 * are required, each non-R record at most once; unknown record types are refused
 * (a new type means a new format version). */
#ifndef TERN_QUEUE_QUEUE_FILE_H
#define TERN_QUEUE_QUEUE_FILE_H

#include <stddef.h>
#include <sys/types.h>

#define QUEUE_ID_MAX 32
/* Touched in the queue directory by `tern queue flush` and `retry` before the messages:
 * the delivery worker then tries destinations it had found dead (not a message). */
#define QUEUE_FLUSH_MARK ".flush"
/* Every id queue_id_new() makes has exactly this many characters. */
#define QUEUE_ID_LEN 20
/* Longest value of one record (addresses, ENVID, ORCPT, HELO, user); longer ones are
 * refused by the writer.  Generous next to SMTP's limits (RFC 5321 4.5.3.1). */
#define QUEUE_VALUE_MAX 4000

/* Recipient status bytes. */
#define QUEUE_STATUS_PENDING   '-'
#define QUEUE_STATUS_DELIVERED 'D'
#define QUEUE_STATUS_FAILED    'B' /* bounced or failed permanently: a DSN is due */
#define QUEUE_STATUS_RELAY     'R' /* relayed onward, a relay DSN may be due */
#define QUEUE_STATUS_WARNED    'W' /* still pending; the sender was told of the delay */

/* Pending: not yet delivered or failed ('-' or 'W'). */
#define QUEUE_STATUS_IS_PENDING(c) ((c) == QUEUE_STATUS_PENDING || (c) == QUEUE_STATUS_WARNED)

/* DSN NOTIFY bits (RFC 3461 4.1); 0 means NOTIFY was not given. */
#define QUEUE_NOTIFY_NEVER   0x1u
#define QUEUE_NOTIFY_SUCCESS 0x2u
#define QUEUE_NOTIFY_FAILURE 0x4u
#define QUEUE_NOTIFY_DELAY   0x8u

/* DSN RET (RFC 3461 4.3). */
#define QUEUE_RET_UNSET 0
#define QUEUE_RET_FULL  1
#define QUEUE_RET_HDRS  2

/* 0 (it cannot fail).  A new id: arrival time, pid, a counter and random bits in
 * [0-9A-Za-z], QUEUE_ID_LEN characters; ids of later messages sort after earlier ones
 * (to the microsecond, given a clock that does not step back).  Thread-safe. */
int queue_id_new(char id[QUEUE_ID_MAX]);
/* 1 when s has the shape of a queue id (QUEUE_ID_LEN characters of [0-9A-Za-z]). */
int queue_id_valid(const char *s);

struct queue_rcpt {
	char *addr;
	char *orcpt;     /* NULL: none */
	unsigned notify; /* QUEUE_NOTIFY_* */
	char status;     /* QUEUE_STATUS_* */
	off_t status_off; /* where the status byte is in the file (set by the reader) */
};

/* Strings are owned by the struct when filled by queue_file_open() (free with
 * queue_envelope_free()); the writer only reads them. */
struct queue_envelope {
	char id[QUEUE_ID_MAX];
	long long arrival;
	char *from;      /* "" for the null sender; never NULL when read */
	int ret;         /* QUEUE_RET_* */
	char *envid;     /* NULL: none */
	int smtputf8;
	int body_8bit;
	char *auth_user; /* NULL: not authenticated */
	char *client_addr; /* never NULL when read ("" when unknown) */
	char *helo;        /* never NULL when read */
	struct queue_rcpt *rcpts;
	int n_rcpts;
	off_t data_off; /* where the message starts in the file */
	off_t data_len;
};

/* Frees the strings and rcpts and clears them; does not free env itself. */
void queue_envelope_free(struct queue_envelope *env);

struct queue_writer;

/* Creates QUEUE_DIR/tmp/ID (and QUEUE_DIR/tmp/ when missing) and writes the envelope
 * records.  The id is generated here, never taken from env->id (which is ignored):
 * read it with queue_writer_id().  For writing, NULL strings count as empty, and an
 * empty envid, auth_user or orcpt is written as absent.  Refuses values with CR, LF or
 * NUL or longer than QUEUE_VALUE_MAX, and an envelope without recipients.  Returns the
 * writer, or NULL with *error_r. */
struct queue_writer *queue_writer_begin(const char *queue_dir, const struct queue_envelope *env,
					const char **error_r);
/* Appends message bytes (as they are to be delivered: dot-unstuffed, CRLF kept).
 * Buffered, written in 64 KiB pieces.  0 or -1 with *error_r; after -1 the only thing
 * left to do is queue_writer_abort(). */
int queue_writer_append(struct queue_writer *w, const void *data, size_t len,
			const char **error_r);
/* Blocking: flushes, writes the end record, fsyncs, renames the file into QUEUE_DIR/
 * and fsyncs QUEUE_DIR.  Only after 0 may the client be told 250.  On failure no file
 * is left behind (neither in tmp/ nor in QUEUE_DIR/), *error_r says what failed and
 * *disk_full_r (may be NULL) is 1 for ENOSPC/EDQUOT (answer 452, else 451).  Frees w
 * either way.  May run on another thread than the one that appended, as long as only
 * one thread uses w at a time. */
int queue_writer_commit(struct queue_writer *w, int *disk_full_r, const char **error_r);
/* Removes the tmp file and frees *w; sets *w to NULL.  NULL or *w NULL: nothing. */
void queue_writer_abort(struct queue_writer **w);
/* The id of the message being written; borrowed until commit or abort. */
const char *queue_writer_id(const struct queue_writer *w);
/* Bytes of message appended so far. */
off_t queue_writer_size(const struct queue_writer *w);

/* Reads and validates the committed file at path (its name must be its id): fills
 * *env (owned by the caller: queue_envelope_free()), and returns in *fd_r an fd open
 * O_RDWR on the file for reading the message (pread at env->data_off) and updating
 * statuses.  0, or -1 with *error_r (env then holds nothing, no fd open) when the file
 * cannot be read, is malformed or lacks its end record; errno is ENOENT when the file
 * does not exist (delivered and removed meanwhile). */
int queue_file_open(const char *path, struct queue_envelope *env, int *fd_r,
		    const char **error_r);
/* Sets the status byte of r in the file (pwrite at r->status_off, then fdatasync when
 * sync is set) and r->status.  status must be a printable ASCII character other than
 * space (so that the record framing stays intact).  Without sync the caller either
 * removes the file next or calls fdatasync itself.  0 or -1 with *error_r. */
int queue_file_set_status(int fd, struct queue_rcpt *r, char status, int sync,
			  const char **error_r);

/* Calls cb for each committed message in queue_dir, in id order (so roughly arrival
 * order); skips tmp/ and every name that is not a queue id.  id is borrowed for the
 * call.  0, or -1 with *error_r when the directory cannot be read. */
int queue_dir_scan(const char *queue_dir, void (*cb)(void *ctx, const char *id), void *ctx,
		   const char **error_r);
/* Removes files in QUEUE_DIR/tmp/ last modified more than older_than_seconds ago:
 * leftovers of a crash or a dropped connection.  Returns how many were removed, or -1
 * when tmp/ exists but cannot be read. */
int queue_dir_clean_tmp(const char *queue_dir, long long older_than_seconds);

/* Error strings (*error_r) of this module point into a per-thread buffer valid until
 * the next call of this module in the same thread: a pool thread that hands one to
 * another thread copies it first. */

#endif
