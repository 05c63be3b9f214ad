#include "event/pool.h"

#include "base/log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <string.h>
#include <unistd.h>

struct pool_job {
	struct pool_job *next;
	pool_work_fn *work;
	pool_done_fn *done;
	void *arg;
};

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pool_job *waiting_head, *waiting_tail; /* waiting for a thread */
	struct pool_job *done_head, *done_tail; /* waiting for the loop */
	int stopping;
	int pending;
	int n_threads;
	pthread_t *threads;
	int efd; /* eventfd: a thread finished a job */
	struct event *ev;
};

static void *pool_thread(void *p)
{
	struct pool *pool = p;
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (pool->waiting_head == NULL && !pool->stopping)
			pthread_cond_wait(&pool->cond, &pool->lock);
		if (pool->waiting_head == NULL && pool->stopping)
			break;
		struct pool_job *job = pool->waiting_head;
		pool->waiting_head = job->next;
		if (pool->waiting_head == NULL)
			pool->waiting_tail = NULL;
		pthread_mutex_unlock(&pool->lock);

		job->work(job->arg);

		pthread_mutex_lock(&pool->lock);
		job->next = NULL;
		if (pool->done_tail)
			pool->done_tail->next = job;
		else
			pool->done_head = job;
		pool->done_tail = job;
		uint64_t one = 1;
		ssize_t w = write(pool->efd, &one, sizeof(one));
		(void)w; /* the counter cannot overflow in practice; a lost wake-up is impossible */
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void pool_run_done(struct pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	struct pool_job *list = pool->done_head;
	pool->done_head = pool->done_tail = NULL;
	pthread_mutex_unlock(&pool->lock);
	while (list != NULL) {
		struct pool_job *next = list->next;
		pool->pending--;
		if (list->done)
			list->done(list->arg);
		free(list);
		list = next;
	}
}

static void pool_on_event(evutil_socket_t fd, short what, void *p)
{
	uint64_t n;
	ssize_t r = read(fd, &n, sizeof(n));
	(void)r;
	pool_run_done(p);
}

struct pool *pool_new(struct event_base *base, int threads)
{
	struct pool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return NULL;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);
	pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pool->threads = calloc((size_t)threads, sizeof(pthread_t));
	if (pool->efd < 0 || pool->threads == NULL) {
		log_error("pool", "event=pool_failed error=\"%s\"", strerror(errno));
		goto fail;
	}
	pool->ev = event_new(base, pool->efd, EV_READ | EV_PERSIST, pool_on_event, pool);
	if (pool->ev == NULL || event_add(pool->ev, NULL) < 0)
		goto fail;
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&pool->threads[i], NULL, pool_thread, pool) != 0) {
			log_error("pool", "event=pool_failed error=\"cannot start thread\"");
			pool->n_threads = i;
			pool_free(&pool);
			return NULL;
		}
	}
	pool->n_threads = threads;
	return pool;
fail:
	if (pool->ev)
		event_free(pool->ev);
	if (pool->efd >= 0)
		close(pool->efd);
	free(pool->threads);
	free(pool);
	return NULL;
}

void pool_free(struct pool **poolp)
{
	struct pool *pool = *poolp;
	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = 1;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < pool->n_threads; i++)
		pthread_join(pool->threads[i], NULL);
	pool_run_done(pool);
	event_free(pool->ev);
	close(pool->efd);
	free(pool->threads);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
	free(pool);
	*poolp = NULL;
}

int pool_submit(struct pool *pool, pool_work_fn *work, pool_done_fn *done, void *arg)
{
	struct pool_job *job = malloc(sizeof(*job));
	if (job == NULL)
		return -1;
	job->next = NULL;
	job->work = work;
	job->done = done;
	job->arg = arg;
	pthread_mutex_lock(&pool->lock);
	if (pool->waiting_tail)
		pool->waiting_tail->next = job;
	else
		pool->waiting_head = job;
	pool->waiting_tail = job;
	pool->pending++;
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	return 0;
}

int pool_pending(const struct pool *pool)
{
	return pool->pending;
}
