/* Local delivery of one queue file: every pending recipient that is a local account
 * gets the message in its Maildir; the queue file goes once nobody is left pending. */
#ifndef TERN_DELIVERY_LOCAL_H
#define TERN_DELIVERY_LOCAL_H

#include <pthread.h>

#include "queue/dsn.h"
#include "queue/queue_file.h"

struct directory;

struct delivery_ctx {
	const char *queue_dir;
	const char *mail_root;
	const char *hostname;
	struct directory *dir;      /* shared by the pool threads: used under dir_lock */
	pthread_mutex_t *dir_lock;
};

enum delivery_result {
	DELIVERY_DONE,    /* every recipient settled; the queue file is gone */
	DELIVERY_PARKED,  /* remote recipients are left (outbound delivery) */
	DELIVERY_RETRY,   /* a temporary failure: try again later */
	DELIVERY_GONE,    /* the file was not there (already handled) */
	DELIVERY_BROKEN,  /* not a valid queue file: moved to QUEUE_DIR/corrupt/ */
};

/* What is left of a message for remote delivery. */
struct delivery_pending {
	struct queue_envelope env;  /* owned: queue_envelope_free() */
	int fd;                     /* the queue file, open read-write: close() */
	long long mtime;            /* the file's mtime: not before this time (next retry) */
	char *remote;               /* remote[i] set: recipient i is pending and not local */
	int n_remote;
	int local_retry;            /* a local recipient failed temporarily */
};

/* Blocking (runs on a pool thread).  Safe to repeat after a crash at any point: a
 * recipient already delivered is not delivered twice.  On DELIVERY_PARKED, when
 * pending_r is not NULL, the file stays open and *pending_r is the caller's (free it
 * with delivery_pending_free()). */
enum delivery_result delivery_local_run(const struct delivery_ctx *ctx, const char *id,
					struct delivery_pending *pending_r);
void delivery_pending_free(struct delivery_pending *p);

/* Queues a delivery status notification of kind about rcpts of the message env (read
 * from fd) as a new message.  Never to the null sender: reports about mail from <> go to
 * the postmaster, and a report about a report to the postmaster is dropped (logged).
 * Blocking: runs on a pool thread. */
void delivery_report(const struct delivery_ctx *ctx, const struct queue_envelope *env, int fd,
		     enum dsn_kind kind, const struct dsn_rcpt *rcpts, int n);

#endif
