/* The delivery worker: watches the queue directory, hands each queue file to a pool
 * thread for local delivery, and retries what failed for a temporary reason. */
#include "daemon/worker.h"

#include "base/log.h"
#include "delivery/local.h"
#include "directory/directory.h"
#include "event/pool.h"
#include "queue/queue_file.h"

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

#define DELIVERY_THREADS        4
#define DELIVERY_RETRY_SECONDS  60
#define DELIVERY_RESCAN_SECONDS 300
#define DELIVERY_MAX_TRACKED    100000

/* What the worker knows of a queue file it has seen. */
enum job_state { JOB_RUNNING, JOB_RUNNING_AGAIN, JOB_PARKED, JOB_WAITING };

struct job {
	struct job *next;
	char id[QUEUE_ID_MAX];
	enum job_state state;
	enum delivery_result result;
	struct delivery_worker *w;
};

struct delivery_worker {
	const struct tern_config *cfg;
	struct event_base *base;
	struct pool *pool;
	struct directory *dir;
	pthread_mutex_t dir_lock;
	struct delivery_ctx ctx;
	char queue_dir[4096];
	char mail_root[4096];
	int inotify_fd;
	struct event *ev_inotify, *ev_retry, *ev_rescan, *ev_term, *ev_int;
	struct job *jobs; /* every id being worked on, parked or waiting for a retry */
	int n_jobs;
	int stopping;
};

static struct job *job_find(struct delivery_worker *w, const char *id)
{
	for (struct job *j = w->jobs; j != NULL; j = j->next)
		if (strcmp(j->id, id) == 0)
			return j;
	return NULL;
}

static void job_remove(struct delivery_worker *w, struct job *job)
{
	for (struct job **p = &w->jobs; *p != NULL; p = &(*p)->next) {
		if (*p == job) {
			*p = job->next;
			w->n_jobs--;
			free(job);
			return;
		}
	}
}

static void job_work(void *arg)
{
	struct job *j = arg;
	j->result = delivery_local_run(&j->w->ctx, j->id);
}

static void job_start(struct delivery_worker *w, struct job *j);

static void job_done(void *arg)
{
	struct job *j = arg;
	struct delivery_worker *w = j->w;
	if (j->state == JOB_RUNNING_AGAIN && !w->stopping) {
		job_start(w, j);
		return;
	}
	switch (j->result) {
	case DELIVERY_DONE:
	case DELIVERY_GONE:
	case DELIVERY_BROKEN:
		job_remove(w, j);
		break;
	case DELIVERY_PARKED:
		j->state = JOB_PARKED;
		break;
	case DELIVERY_RETRY:
		j->state = JOB_WAITING;
		break;
	}
}

static void job_start(struct delivery_worker *w, struct job *j)
{
	j->state = JOB_RUNNING;
	if (pool_submit(w->pool, job_work, job_done, j) < 0) {
		j->state = JOB_WAITING; /* out of memory: the retry timer tries again */
	}
}

/* A queue file appeared (or may have changed): make sure it gets looked at. */
static void dispatch(struct delivery_worker *w, const char *id, int force)
{
	if (w->stopping || !queue_id_valid(id))
		return;
	struct job *j = job_find(w, id);
	if (j != NULL) {
		if (j->state == JOB_RUNNING)
			j->state = JOB_RUNNING_AGAIN;
		else if ((j->state == JOB_WAITING || (force && j->state == JOB_PARKED)))
			job_start(w, j);
		return;
	}
	if (w->n_jobs >= DELIVERY_MAX_TRACKED)
		return; /* the periodic rescan picks it up later */
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return;
	snprintf(j->id, sizeof(j->id), "%s", id);
	j->w = w;
	j->next = w->jobs;
	w->jobs = j;
	w->n_jobs++;
	job_start(w, j);
}

static void scan_cb(void *ctx, const char *id)
{
	dispatch(ctx, id, 0);
}

static void rescan(struct delivery_worker *w)
{
	const char *error = NULL;
	if (queue_dir_scan(w->queue_dir, scan_cb, w, &error) < 0)
		log_error("delivery", "event=scan_failed error=\"%s\"", error ? error : "unknown");
}

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
				rescan(w);
			else if (ev->len > 0)
				dispatch(w, ev->name, 0);
			p += sizeof(struct inotify_event) + ev->len;
		}
	}
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct delivery_worker *w = arg;
	for (struct job *j = w->jobs; j != NULL; j = j->next)
		if (j->state == JOB_WAITING)
			job_start(w, j);
}

static void on_rescan(evutil_socket_t fd, short what, void *arg)
{
	rescan(arg);
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	struct delivery_worker *w = arg;
	w->stopping = 1;
	log_info("delivery", "event=stopping running=%d", pool_pending(w->pool));
	event_base_loopexit(w->base, NULL);
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
	w.ctx.queue_dir = w.queue_dir;
	w.ctx.mail_root = w.mail_root;
	w.ctx.hostname = cfg->hostname;
	w.ctx.dir = w.dir;
	w.ctx.dir_lock = &w.dir_lock;
	w.pool = pool_new(w.base, DELIVERY_THREADS);
	if (w.pool == NULL)
		log_fatal("delivery", "event=start_failed error=\"cannot start the thread pool\"");

	/* Watch before the first scan, so that nothing committed in between is missed. */
	w.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w.inotify_fd < 0 || inotify_add_watch(w.inotify_fd, w.queue_dir, IN_MOVED_TO) < 0)
		log_fatal("delivery", "event=start_failed error=\"inotify on %s: %s\"", w.queue_dir,
			  strerror(errno));
	w.ev_inotify = event_new(w.base, w.inotify_fd, EV_READ | EV_PERSIST, on_inotify, &w);
	event_add(w.ev_inotify, NULL);
	struct timeval retry = { DELIVERY_RETRY_SECONDS, 0 }, scan = { DELIVERY_RESCAN_SECONDS, 0 };
	w.ev_retry = event_new(w.base, -1, EV_PERSIST, on_retry, &w);
	event_add(w.ev_retry, &retry);
	w.ev_rescan = event_new(w.base, -1, EV_PERSIST, on_rescan, &w);
	event_add(w.ev_rescan, &scan);
	w.ev_term = evsignal_new(w.base, SIGTERM, on_terminate, &w);
	w.ev_int = evsignal_new(w.base, SIGINT, on_terminate, &w);
	evsignal_add(w.ev_term, NULL);
	evsignal_add(w.ev_int, NULL);

	queue_dir_clean_tmp(w.queue_dir, 86400);
	rescan(&w);
	log_info("delivery", "event=ready queued=%d", w.n_jobs);

	event_base_dispatch(w.base);

	/* Deliveries under way finish; nothing new starts (stopping is set). */
	pool_free(&w.pool);
	while (w.jobs)
		job_remove(&w, w.jobs);
	directory_close(&w.dir);
	log_info("delivery", "event=exit");
	return 0;
}
