/* The delivery worker: watches the queue directory, hands each queue file to a pool
 * thread for local delivery, and retries what failed for a temporary reason. */
#include "daemon/worker.h"

#include "base/log.h"
#include "delivery/qmgr.h"
#include "directory/directory.h"
#include "dns/dns.h"
#include "event/pool.h"
#include "queue/queue_file.h"
#include "tls/tls.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define DELIVERY_THREADS        16 /* fsync-bound: more in flight, fewer journal waits */
#define DELIVERY_RESCAN_SECONDS 300
#define DELIVERY_STOP_SECONDS   10

struct delivery_worker {
	const struct tern_config *cfg;
	struct event_base *base;
	struct pool *pool;
	struct directory *dir;
	pthread_mutex_t dir_lock;
	struct dns_resolver *dns;
	SSL_CTX *tls_ctx;
	struct qmgr *qmgr;
	char queue_dir[4096];
	char mail_root[4096];
	int inotify_fd;
	struct event *ev_inotify, *ev_rescan, *ev_term, *ev_int, *ev_stop_timeout;
	int stopping;
};

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
	struct delivery_worker *w = arg;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (ev->mask & IN_Q_OVERFLOW)
				qmgr_rescan(w->qmgr);
			else if (ev->len > 0 && strcmp(ev->name, QUEUE_FLUSH_MARK) == 0)
				qmgr_flush_dead(w->qmgr);
			else if (ev->len > 0)
				qmgr_dispatch(w->qmgr, ev->name);
			p += sizeof(struct inotify_event) + ev->len;
		}
	}
}

static void on_rescan(evutil_socket_t fd, short what, void *arg)
{
	struct delivery_worker *w = arg;
	qmgr_rescan(w->qmgr);
}

static void on_idle(void *arg)
{
	struct delivery_worker *w = arg;
	event_base_loopexit(w->base, NULL);
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct delivery_worker *w = arg;
	log_warn("delivery", "event=stop_timeout action=abandon_remote_deliveries");
	event_base_loopexit(w->base, NULL);
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	struct delivery_worker *w = arg;
	if (w->stopping)
		return;
	w->stopping = 1;
	log_info("delivery", "event=stopping running=%d", pool_pending(w->pool));
	struct timeval tv = { DELIVERY_STOP_SECONDS, 0 };
	w->ev_stop_timeout = evtimer_new(w->base, on_stop_timeout, w);
	evtimer_add(w->ev_stop_timeout, &tv);
	qmgr_stop(w->qmgr, on_idle, w);
}

int delivery_worker_run(const struct tern_config *cfg)
{
	struct delivery_worker w;
	const char *error = NULL;
	memset(&w, 0, sizeof(w));
	w.cfg = cfg;
	snprintf(w.queue_dir, sizeof(w.queue_dir), "%s/queue", cfg->data_dir);
	snprintf(w.mail_root, sizeof(w.mail_root), "%s/mail", cfg->data_dir);
	pthread_mutex_init(&w.dir_lock, NULL);
	w.base = event_base_new();
	if (w.base == NULL)
		log_fatal("delivery", "event=start_failed error=\"cannot create the event loop\"");
	w.dir = directory_open(cfg->data_dir, &error);
	if (w.dir == NULL)
		log_fatal("delivery", "event=start_failed error=\"directory: %s\"", error);
	w.pool = pool_new(w.base, DELIVERY_THREADS);
	if (w.pool == NULL)
		log_fatal("delivery", "event=start_failed error=\"cannot start the thread pool\"");
	w.dns = dns_resolver_new(w.base, cfg->resolver, &error);
	if (w.dns == NULL)
		log_fatal("delivery", "event=start_failed error=\"dns: %s\"", error);
	w.tls_ctx = tls_client_ctx_new(&error);
	if (w.tls_ctx == NULL)
		log_fatal("delivery", "event=start_failed error=\"tls: %s\"", error);
	struct qmgr_settings qs = {
		.base = w.base,
		.pool = w.pool,
		.cfg = cfg,
		.dir = w.dir,
		.dir_lock = &w.dir_lock,
		.dns = w.dns,
		.tls_ctx = w.tls_ctx,
		.queue_dir = w.queue_dir,
		.mail_root = w.mail_root,
	};
	w.qmgr = qmgr_new(&qs);
	if (w.qmgr == NULL)
		log_fatal("delivery", "event=start_failed error=\"out of memory\"");

	/* Watch before the first scan, so that nothing committed in between is missed. */
	w.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w.inotify_fd < 0 ||
	    inotify_add_watch(w.inotify_fd, w.queue_dir, IN_MOVED_TO | IN_ATTRIB) < 0)
		log_fatal("delivery", "event=start_failed error=\"inotify on %s: %s\"", w.queue_dir,
			  strerror(errno));
	w.ev_inotify = event_new(w.base, w.inotify_fd, EV_READ | EV_PERSIST, on_inotify, &w);
	event_add(w.ev_inotify, NULL);
	struct timeval scan = { DELIVERY_RESCAN_SECONDS, 0 };
	w.ev_rescan = event_new(w.base, -1, EV_PERSIST, on_rescan, &w);
	event_add(w.ev_rescan, &scan);
	w.ev_term = evsignal_new(w.base, SIGTERM, on_terminate, &w);
	w.ev_int = evsignal_new(w.base, SIGINT, on_terminate, &w);
	evsignal_add(w.ev_term, NULL);
	evsignal_add(w.ev_int, NULL);

	queue_dir_clean_tmp(w.queue_dir, 86400);
	qmgr_rescan(w.qmgr);
	log_info("delivery", "event=ready queued=%d", qmgr_count(w.qmgr));

	event_base_dispatch(w.base);

	/* Local deliveries under way finish; nothing new starts (stopping is set). */
	pool_free(&w.pool);
	qmgr_free(&w.qmgr);
	dns_resolver_free(&w.dns);
	SSL_CTX_free(w.tls_ctx);
	directory_close(&w.dir);
	log_info("delivery", "event=exit");
	return 0;
}
