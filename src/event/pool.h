/* A small thread pool per worker for blocking work (fsync, password hashing, SQLite
 * writes, file copies).  Jobs run on a pool thread; their completion runs back on the
 * event loop thread that owns the pool. */
#ifndef TERN_EVENT_POOL_H
#define TERN_EVENT_POOL_H

struct event_base;
struct pool;

typedef void pool_work_fn(void *arg);  /* runs on a pool thread */
typedef void pool_done_fn(void *arg);  /* runs on the loop thread afterwards */

/* 0 threads is not allowed.  Returns NULL on failure (logged). */
struct pool *pool_new(struct event_base *base, int threads);
/* Waits for queued and running jobs, runs their completions, joins the threads. */
void pool_free(struct pool **pool);
/* Queues a job; done may be NULL.  0, or -1 when out of memory. */
int pool_submit(struct pool *pool, pool_work_fn *work, pool_done_fn *done, void *arg);
/* Jobs queued or running, not yet completed on the loop. */
int pool_pending(const struct pool *pool);

#endif
