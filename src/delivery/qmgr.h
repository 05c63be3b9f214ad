/* The queue manager of the delivery worker: which queue file is worked on when, local
 * delivery on the pool, remote delivery on the loop with concurrency limits per
 * destination and overall, retries with back-off, delay warnings and bounces. */
#ifndef TERN_DELIVERY_QMGR_H
#define TERN_DELIVERY_QMGR_H

#include <pthread.h>

#include <openssl/ssl.h>

struct event_base;
struct pool;
struct directory;
struct dns_resolver;
struct tern_config;
struct qmgr;

struct qmgr_settings {
	struct event_base *base;
	struct pool *pool;
	const struct tern_config *cfg;
	struct directory *dir;        /* used from pool threads under dir_lock */
	pthread_mutex_t *dir_lock;
	struct dns_resolver *dns;
	SSL_CTX *tls_ctx;             /* client context for outbound TLS */
	const char *queue_dir;
	const char *mail_root;
};

struct qmgr *qmgr_new(const struct qmgr_settings *set);
/* A queue file appeared or changed: look at it (a retry time in its mtime is kept). */
void qmgr_dispatch(struct qmgr *q, const char *id);
/* Looks at every queue file (at start, and after an inotify overflow). */
void qmgr_rescan(struct qmgr *q);
/* An administrator asked for the queue to be tried now: destinations found dead are
 * tried again too. */
void qmgr_flush_dead(struct qmgr *q);
/* Messages known to the manager. */
int qmgr_count(const struct qmgr *q);
/* Starts nothing new; on_idle runs (from the loop) once no remote delivery is under way. */
void qmgr_stop(struct qmgr *q, void (*on_idle)(void *arg), void *arg);
/* Frees everything; remote deliveries still under way are abandoned (retried later). */
void qmgr_free(struct qmgr **q);

#endif
