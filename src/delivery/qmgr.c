/* The queue manager.  A message goes through these phases:
 *
 *   LOCAL   (pool)  open the queue file, deliver its local recipients
 *   REMOTE  (loop)  one remote job per destination domain, within the limits
 *   FINISH  (pool)  record the outcomes, write delay warnings and bounces, remove the
 *                   file or set its mtime to the next attempt
 *   WAITING         until the next attempt (the file's mtime survives restarts)
 *
 * Nothing about a message is kept between attempts but its id and the time of the next
 * attempt: the queue file is the state. */
#include "delivery/qmgr.h"

#include "base/log.h"
#include "delivery/local.h"
#include "delivery/remote.h"
#include "directory/directory.h"
#include "event/config.h"
#include "event/pool.h"
#include "queue/dsn.h"
#include "queue/queue_file.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#define QMGR_MAX_TRACKED 200000
#define QMGR_HASH_SIZE   4096

enum qjob_state { QJ_LOCAL, QJ_REMOTE, QJ_FINISH, QJ_WAITING };

struct qgroup {
	struct qjob *job;
	char domain[256];
	int first;               /* into job->rrcpts */
	int count;
	struct remote_job *rj;
	struct qgroup *wait_next; /* in the queue for a connection slot */
	int waiting;
};

struct qjob {
	struct qjob *hnext;       /* hash chain */
	char id[QUEUE_ID_MAX];
	enum qjob_state state;
	int again;                /* dispatched while busy: look again afterwards */
	long long next_attempt;
	struct qmgr *q;
	enum delivery_result result;
	struct delivery_pending pending;
	struct remote_msg msg;
	struct remote_rcpt *rrcpts;
	int n_rrcpts;
	struct qgroup *groups;
	int n_groups;
	int groups_left;
	int finished_done;        /* FINISH removed the file */
};

struct qdest {
	struct qdest *next;
	char domain[256];
	int active;
};

struct qmgr {
	struct qmgr_settings set;
	struct delivery_ctx local;
	struct remote_ctx remote;
	struct qjob *hash[QMGR_HASH_SIZE];
	int n_jobs;
	struct qdest *dests;
	int active;               /* remote jobs running */
	struct qgroup *wait_head, *wait_tail;
	struct event *ev_tick;
	int stopping;
	void (*on_idle)(void *arg);
	void *idle_arg;
};

static void job_start(struct qjob *j);
static void start_waiting_groups(struct qmgr *q);

/* ---- bookkeeping ---------------------------------------------------------------------- */

static unsigned hash_id(const char *id)
{
	unsigned h = 5381;
	for (; *id; id++)
		h = h * 33 + (unsigned char)*id;
	return h % QMGR_HASH_SIZE;
}

static struct qjob *job_find(struct qmgr *q, const char *id)
{
	for (struct qjob *j = q->hash[hash_id(id)]; j != NULL; j = j->hnext)
		if (strcmp(j->id, id) == 0)
			return j;
	return NULL;
}

static void job_release_message(struct qjob *j)
{
	delivery_pending_free(&j->pending);
	free(j->rrcpts);
	j->rrcpts = NULL;
	j->n_rrcpts = 0;
	free(j->groups);
	j->groups = NULL;
	j->n_groups = 0;
}

static void job_remove(struct qjob *j)
{
	struct qmgr *q = j->q;
	for (struct qjob **p = &q->hash[hash_id(j->id)]; *p != NULL; p = &(*p)->hnext) {
		if (*p == j) {
			*p = j->hnext;
			break;
		}
	}
	q->n_jobs--;
	job_release_message(j);
	free(j);
}

static struct qdest *dest_get(struct qmgr *q, const char *domain)
{
	for (struct qdest *d = q->dests; d != NULL; d = d->next)
		if (strcasecmp(d->domain, domain) == 0)
			return d;
	struct qdest *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	snprintf(d->domain, sizeof(d->domain), "%s", domain);
	d->next = q->dests;
	q->dests = d;
	return d;
}

static void check_idle(struct qmgr *q)
{
	if (q->stopping && q->active == 0 && q->on_idle != NULL) {
		void (*fn)(void *) = q->on_idle;
		q->on_idle = NULL;
		fn(q->idle_arg);
	}
}

/* ---- retry schedule -------------------------------------------------------------------- */

/* The wait before the next attempt: the schedule's step for a message of this age (the
 * number of attempts is not stored; the age tells it well enough). */
static long long next_attempt_time(const struct tern_config *cfg, long long arrival, long long now)
{
	long long age = now - arrival, sum = 0;
	int k = 0;
	while (k < cfg->n_retry - 1 && sum + cfg->retry[k] <= age + 2)
		sum += cfg->retry[k++];
	long long next = now + cfg->retry[k];
	if (next > arrival + cfg->queue_lifetime)
		next = arrival + cfg->queue_lifetime;
	return next > now ? next : now + 1;
}

/* ---- the FINISH phase (pool thread) --------------------------------------------------- */

static void finish_work(void *arg)
{
	struct qjob *j = arg;
	struct qmgr *q = j->q;
	const struct tern_config *cfg = q->set.cfg;
	struct queue_envelope *env = &j->pending.env;
	int fd = j->pending.fd;
	long long now = (long long)time(NULL);
	long long age = now - env->arrival;
	int expired = age >= cfg->queue_lifetime;
	long long next = next_attempt_time(cfg, env->arrival, now);
	const char *error = NULL;
	struct dsn_rcpt *fail = calloc((size_t)j->n_rrcpts + 1, sizeof(*fail));
	struct dsn_rcpt *delay = calloc((size_t)j->n_rrcpts + 1, sizeof(*delay));
	struct dsn_rcpt *ok = calloc((size_t)j->n_rrcpts + 1, sizeof(*ok));
	int n_fail = 0, n_delay = 0, n_ok = 0;
	char next_text[32];
	struct tm tm;
	time_t nt = (time_t)next;
	gmtime_r(&nt, &tm);
	strftime(next_text, sizeof(next_text), "%Y-%m-%dT%H:%M:%SZ", &tm);

	for (int i = 0; i < j->n_rrcpts; i++) {
		struct remote_rcpt *r = &j->rrcpts[i];
		struct queue_rcpt *qr = &env->rcpts[r->index];
		struct dsn_rcpt d = {
			.addr = qr->addr,
			.orcpt = qr->orcpt,
			.status = r->status,
			.remote_mta = r->remote_mta[0] ? r->remote_mta : NULL,
			.diagnostic = r->diagnostic[0] ? r->diagnostic : NULL,
			.last_attempt = now,
			.will_retry_until = env->arrival + cfg->queue_lifetime,
		};
		const char *relay = r->remote_mta[0] ? r->remote_mta : "none";
		const char *tls = r->tls[0] ? r->tls : "none";
		switch (r->outcome) {
		case REMOTE_DELIVERED:
			queue_file_set_status(fd, qr, QUEUE_STATUS_DELIVERED, 0, &error);
			log_info("delivery", "event=sent qid=%s rcpt=<%s> relay=\"%s\" tls=\"%s\" status=%s "
					     "delay=%llds reply=\"%s\"", env->id, qr->addr, relay, tls, r->status,
				 age, r->diagnostic);
			if (ok != NULL && dsn_wanted(DSN_SUCCESS, qr->notify)) {
				d.action = r->remote_dsn ? DSN_ACTION_DELIVERED : DSN_ACTION_RELAYED;
				ok[n_ok++] = d;
			}
			break;
		case REMOTE_PERMFAIL:
			queue_file_set_status(fd, qr, QUEUE_STATUS_FAILED, 0, &error);
			log_warn("delivery", "event=bounced qid=%s rcpt=<%s> relay=\"%s\" tls=\"%s\" status=%s "
					     "delay=%llds reply=\"%s\"", env->id, qr->addr, relay, tls, r->status,
				 age, r->diagnostic);
			if (fail != NULL && dsn_wanted(DSN_FAILURE, qr->notify)) {
				d.action = DSN_ACTION_FAILED;
				fail[n_fail++] = d;
			}
			break;
		case REMOTE_TEMPFAIL:
			if (expired) {
				queue_file_set_status(fd, qr, QUEUE_STATUS_FAILED, 0, &error);
				log_warn("delivery", "event=expired qid=%s rcpt=<%s> relay=\"%s\" "
						     "status=%s delay=%llds reply=\"%s\"", env->id, qr->addr,
					 relay, r->status, age, r->diagnostic);
				if (fail != NULL && dsn_wanted(DSN_FAILURE, qr->notify)) {
					d.action = DSN_ACTION_FAILED;
					fail[n_fail++] = d;
				}
				break;
			}
			log_info("delivery", "event=deferred qid=%s rcpt=<%s> relay=\"%s\" tls=\"%s\" status=%s "
					     "delay=%llds reply=\"%s\" next_retry=%s", env->id, qr->addr,
				 relay, tls, r->status, age, r->diagnostic, next_text);
			if (qr->status == QUEUE_STATUS_PENDING && cfg->delay_warning > 0 &&
			    age >= cfg->delay_warning && delay != NULL &&
			    dsn_wanted(DSN_DELAY, qr->notify)) {
				d.action = DSN_ACTION_DELAYED;
				delay[n_delay++] = d;
				queue_file_set_status(fd, qr, QUEUE_STATUS_WARNED, 0, &error);
			}
			break;
		}
	}
	int pending = 0;
	for (int i = 0; i < env->n_rcpts; i++)
		if (QUEUE_STATUS_IS_PENDING(env->rcpts[i].status))
			pending++;
	/* A file about to be removed needs no sync of its status bytes. */
	if (pending > 0 && fdatasync(fd) < 0)
		log_warn("delivery", "event=sync_failed qid=%s error=\"%s\"", env->id, strerror(errno));
	/* The reports are queued before the original goes, so a crash in between repeats
	 * the attempt rather than losing the report. */
	delivery_report(&q->local, env, fd, DSN_FAILURE, fail, n_fail);
	delivery_report(&q->local, env, fd, DSN_DELAY, delay, n_delay);
	delivery_report(&q->local, env, fd, DSN_SUCCESS, ok, n_ok);
	free(fail);
	free(delay);
	free(ok);

	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", q->set.queue_dir, env->id);
	if (pending == 0) {
		if (unlink(path) == 0 || errno == ENOENT) {
			log_info("delivery", "event=removed qid=%s", env->id);
			j->finished_done = 1;
		}
	} else {
		struct utimbuf ut = { (time_t)now, (time_t)next };
		if (utime(path, &ut) < 0 && errno != ENOENT)
			log_warn("delivery", "event=utime_failed qid=%s error=\"%s\"", env->id,
				 strerror(errno));
		j->next_attempt = next;
	}
	/* Closed here, not on the loop: the last close of an unlinked file frees its blocks,
	 * which can wait on the disk (e.g. with discard). */
	close(j->pending.fd);
	j->pending.fd = -1;
}

static void finish_done(void *arg)
{
	struct qjob *j = arg;
	struct qmgr *q = j->q;
	job_release_message(j);
	if (j->finished_done) {
		job_remove(j);
		return;
	}
	j->state = QJ_WAITING;
	if (j->again && !q->stopping) {
		j->again = 0;
		job_start(j);
	}
}

/* ---- the REMOTE phase (loop) ---------------------------------------------------------- */

static void group_done(struct remote_job *rj, void *arg)
{
	struct qgroup *g = arg;
	struct qjob *j = g->job;
	struct qmgr *q = j->q;
	g->rj = NULL;
	q->active--;
	struct qdest *d = dest_get(q, g->domain);
	if (d != NULL && d->active > 0)
		d->active--;
	if (--j->groups_left == 0) {
		j->state = QJ_FINISH;
		if (pool_submit(q->set.pool, finish_work, finish_done, j) < 0) {
			job_release_message(j);
			j->state = QJ_WAITING;
			j->next_attempt = (long long)time(NULL) + 60;
		}
	}
	start_waiting_groups(q);
	check_idle(q);
}

static int group_can_start(struct qmgr *q, struct qgroup *g)
{
	if (q->active >= q->set.cfg->max_outbound)
		return 0;
	struct qdest *d = dest_get(q, g->domain);
	return d == NULL || d->active < q->set.cfg->max_per_destination;
}

static void group_start(struct qmgr *q, struct qgroup *g)
{
	struct qjob *j = g->job;
	struct qdest *d = dest_get(q, g->domain);
	if (d != NULL)
		d->active++;
	q->active++;
	g->rj = remote_job_start(&q->remote, g->domain, &j->msg, &j->rrcpts[g->first], g->count,
				 group_done, g);
	if (g->rj == NULL) {
		/* Out of memory: count it as done, every recipient deferred. */
		for (int i = 0; i < g->count; i++) {
			struct remote_rcpt *r = &j->rrcpts[g->first + i];
			r->outcome = REMOTE_TEMPFAIL;
			snprintf(r->status, sizeof(r->status), "4.3.0");
			snprintf(r->diagnostic, sizeof(r->diagnostic), "X-tern; out of memory");
		}
		group_done(NULL, g);
	}
}

static void start_waiting_groups(struct qmgr *q)
{
	struct qgroup **p = &q->wait_head, *prev = NULL;
	while (*p != NULL && !q->stopping) {
		struct qgroup *g = *p;
		if (!group_can_start(q, g)) {
			prev = g;
			p = &g->wait_next;
			continue;
		}
		*p = g->wait_next;
		if (q->wait_tail == g)
			q->wait_tail = prev;
		g->waiting = 0;
		g->wait_next = NULL;
		group_start(q, g);
	}
}

static int cmp_domain(const void *a, const void *b)
{
	const struct remote_rcpt *x = a, *y = b;
	const char *dx = strrchr(x->addr, '@'), *dy = strrchr(y->addr, '@');
	return strcasecmp(dx ? dx + 1 : "", dy ? dy + 1 : "");
}

/* Splits the remote recipients by domain and starts (or queues) one job per domain. */
static void remote_phase(struct qjob *j)
{
	struct qmgr *q = j->q;
	struct queue_envelope *env = &j->pending.env;
	j->rrcpts = calloc((size_t)j->pending.n_remote, sizeof(*j->rrcpts));
	j->groups = calloc((size_t)j->pending.n_remote, sizeof(*j->groups));
	if (j->rrcpts == NULL || j->groups == NULL) {
		job_release_message(j);
		j->state = QJ_WAITING;
		j->next_attempt = (long long)time(NULL) + 60;
		return;
	}
	for (int i = 0; i < env->n_rcpts; i++) {
		if (!j->pending.remote[i])
			continue;
		struct remote_rcpt *r = &j->rrcpts[j->n_rrcpts++];
		r->index = i;
		r->addr = env->rcpts[i].addr;
		r->orcpt = env->rcpts[i].orcpt;
		r->notify = env->rcpts[i].notify;
	}
	qsort(j->rrcpts, (size_t)j->n_rrcpts, sizeof(*j->rrcpts), cmp_domain);
	for (int i = 0; i < j->n_rrcpts;) {
		const char *dom = strrchr(j->rrcpts[i].addr, '@');
		dom = dom ? dom + 1 : "";
		struct qgroup *g = &j->groups[j->n_groups++];
		g->job = j;
		snprintf(g->domain, sizeof(g->domain), "%s", dom);
		g->first = i;
		while (i < j->n_rrcpts) {
			const char *d2 = strrchr(j->rrcpts[i].addr, '@');
			if (strcasecmp(d2 ? d2 + 1 : "", dom) != 0)
				break;
			i++;
		}
		g->count = i - g->first;
	}
	j->msg.id = env->id;
	j->msg.from = env->from;
	j->msg.smtputf8 = env->smtputf8;
	j->msg.body_8bit = env->body_8bit;
	j->msg.ret = env->ret;
	j->msg.envid = env->envid;
	j->msg.fd = j->pending.fd;
	j->msg.offset = env->data_off;
	j->msg.len = env->data_len;
	j->state = QJ_REMOTE;
	j->groups_left = j->n_groups;
	for (int i = 0; i < j->n_groups; i++) {
		struct qgroup *g = &j->groups[i];
		if (group_can_start(q, g) && q->wait_head == NULL) {
			group_start(q, g);
			continue;
		}
		g->waiting = 1;
		if (q->wait_tail)
			q->wait_tail->wait_next = g;
		else
			q->wait_head = g;
		q->wait_tail = g;
	}
}

/* ---- the LOCAL phase (pool) ------------------------------------------------------------ */

static void local_work(void *arg)
{
	struct qjob *j = arg;
	memset(&j->pending, 0, sizeof(j->pending));
	j->pending.fd = -1;
	j->result = delivery_local_run(&j->q->local, j->id, &j->pending);
}

static void local_done(void *arg)
{
	struct qjob *j = arg;
	struct qmgr *q = j->q;
	long long now = (long long)time(NULL);
	switch (j->result) {
	case DELIVERY_DONE:
	case DELIVERY_GONE:
	case DELIVERY_BROKEN:
		job_remove(j);
		return;
	case DELIVERY_RETRY:
		j->state = QJ_WAITING;
		j->next_attempt = now + q->set.cfg->retry[0];
		break;
	case DELIVERY_PARKED:
		j->again = 0;
		if (q->stopping || j->pending.mtime > now + 1) {
			/* Not due yet (a retry time kept in the file's mtime). */
			j->next_attempt = j->pending.mtime;
			job_release_message(j);
			j->state = QJ_WAITING;
			break;
		}
		remote_phase(j);
		return;
	}
	if (j->again && !q->stopping) {
		j->again = 0;
		job_start(j);
	}
}

static void job_start(struct qjob *j)
{
	j->state = QJ_LOCAL;
	if (pool_submit(j->q->set.pool, local_work, local_done, j) < 0) {
		j->state = QJ_WAITING;
		j->next_attempt = (long long)time(NULL) + 60;
	}
}

/* ---- public ----------------------------------------------------------------------------- */

void qmgr_dispatch(struct qmgr *q, const char *id)
{
	if (q->stopping || !queue_id_valid(id))
		return;
	struct qjob *j = job_find(q, id);
	if (j != NULL) {
		/* A waiting message is looked at again: the LOCAL phase reads the retry time
		 * from the file's mtime, which `tern queue flush` may have changed. */
		if (j->state != QJ_WAITING)
			j->again = 1;
		else
			job_start(j);
		return;
	}
	if (q->n_jobs >= QMGR_MAX_TRACKED)
		return; /* the periodic rescan picks it up later */
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return;
	snprintf(j->id, sizeof(j->id), "%s", id);
	j->q = q;
	j->pending.fd = -1;
	unsigned h = hash_id(id);
	j->hnext = q->hash[h];
	q->hash[h] = j;
	q->n_jobs++;
	job_start(j);
}

static void scan_cb(void *ctx, const char *id)
{
	qmgr_dispatch(ctx, id);
}

void qmgr_flush_dead(struct qmgr *q)
{
	remote_conns_revive(q->remote.conns);
	log_info("delivery", "event=flush_requested");
}

void qmgr_rescan(struct qmgr *q)
{
	const char *error = NULL;
	if (queue_dir_scan(q->set.queue_dir, scan_cb, q, &error) < 0)
		log_error("delivery", "event=scan_failed error=\"%s\"", error ? error : "unknown");
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr *q = arg;
	long long now = (long long)time(NULL);
	if (q->stopping)
		return;
	for (int h = 0; h < QMGR_HASH_SIZE; h++)
		for (struct qjob *j = q->hash[h]; j != NULL; j = j->hnext)
			if (j->state == QJ_WAITING && j->next_attempt <= now)
				job_start(j);
}

struct qmgr *qmgr_new(const struct qmgr_settings *set)
{
	struct qmgr *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	q->set = *set;
	q->local.queue_dir = set->queue_dir;
	q->local.mail_root = set->mail_root;
	q->local.hostname = set->cfg->hostname;
	q->local.dir = set->dir;
	q->local.dir_lock = set->dir_lock;
	q->remote.base = set->base;
	q->remote.dns = set->dns;
	q->remote.tls_ctx = set->tls_ctx;
	q->remote.cfg = set->cfg;
	/* A connection stays open a few seconds for the next message to the same place. */
	q->remote.conns = remote_conns_new(set->base, 5, 100);
	q->ev_tick = event_new(set->base, -1, EV_PERSIST, on_tick, q);
	struct timeval one = { 1, 0 };
	if (q->ev_tick == NULL || event_add(q->ev_tick, &one) < 0) {
		free(q);
		return NULL;
	}
	return q;
}

int qmgr_count(const struct qmgr *q)
{
	return q->n_jobs;
}

void qmgr_stop(struct qmgr *q, void (*on_idle)(void *arg), void *arg)
{
	q->stopping = 1;
	q->on_idle = on_idle;
	q->idle_arg = arg;
	/* Groups waiting for a slot will not start: their messages stay queued. */
	q->wait_head = q->wait_tail = NULL;
	check_idle(q);
}

void qmgr_free(struct qmgr **qp)
{
	struct qmgr *q = *qp;
	if (q == NULL)
		return;
	for (int h = 0; h < QMGR_HASH_SIZE; h++) {
		while (q->hash[h] != NULL) {
			struct qjob *j = q->hash[h];
			for (int i = 0; i < j->n_groups; i++)
				remote_job_cancel(&j->groups[i].rj);
			q->hash[h] = j->hnext;
			job_release_message(j);
			free(j);
		}
	}
	while (q->dests) {
		struct qdest *d = q->dests;
		q->dests = d->next;
		free(d);
	}
	remote_conns_free(&q->remote.conns);
	event_free(q->ev_tick);
	free(q);
	*qp = NULL;
}
