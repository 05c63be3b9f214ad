/* Delivery status notifications: written as new queue files from the null sender, to
 * the envelope sender (or, for mail from the null sender, to the postmaster). */
#include "delivery/local.h"

#include "base/log.h"
#include "directory/directory.h"
#include "queue/dsn.h"
#include "queue/queue_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DELIVERY_DSN_MAX (10 * 1024 * 1024) /* a report quotes at most this much */

static int dsn_append(void *ctx, const void *data, size_t len)
{
	const char *error = NULL;
	return queue_writer_append(ctx, data, len, &error);
}

/* The address that gets reports about mail from the null sender. */
static int postmaster_address(const struct delivery_ctx *ctx, char *out, size_t cap)
{
	struct directory_targets *t = malloc(sizeof(*t));
	const char *error = NULL;
	if (t == NULL)
		return -1;
	pthread_mutex_lock(ctx->dir_lock);
	int r = directory_resolve(ctx->dir, "postmaster", "", t, &error);
	pthread_mutex_unlock(ctx->dir_lock);
	if (r == 1 && t->n > 0)
		snprintf(out, cap, "%s", t->t[0].address);
	free(t);
	return r == 1 ? 0 : -1;
}

/* Queues a delivery status notification to the sender (or, for the null sender, to
 * the postmaster) as a new message from the null sender. */
void delivery_report(const struct delivery_ctx *ctx, const struct queue_envelope *env, int fd,
		     enum dsn_kind kind, const struct dsn_rcpt *rcpts, int n)
{
	char to[600];
	if (n == 0 || (kind != DSN_FAILURE && env->from[0] == '\0'))
		return;
	if (env->from[0] != '\0') {
		snprintf(to, sizeof(to), "%s", env->from);
	} else if (postmaster_address(ctx, to, sizeof(to)) < 0) {
		log_warn("delivery", "event=bounce_dropped qid=%s reason=\"null sender and no "
				     "postmaster to tell\"", env->id);
		return;
	} else {
		for (int i = 0; i < n; i++) {
			if (strcasecmp(rcpts[i].addr, to) == 0) {
				/* A report about a report to the postmaster: end of the line. */
				log_warn("delivery", "event=bounce_dropped qid=%s reason=\"double "
						     "bounce\"", env->id);
				return;
			}
		}
	}
	char postmaster[300];
	snprintf(postmaster, sizeof(postmaster), "MAILER-DAEMON@%s", ctx->hostname);
	struct dsn_params p = {
		.kind = kind,
		.reporting_mta = ctx->hostname,
		.postmaster = postmaster,
		.to = to,
		.envid = env->envid,
		.arrival = env->arrival,
		.queue_id = env->id,
		.ret_full = env->ret == QUEUE_RET_FULL,
		.smtputf8 = env->smtputf8,
		.rcpts = rcpts,
		.n_rcpts = n,
		.orig_fd = fd,
		.orig_offset = env->data_off,
		.orig_len = env->data_len,
		.max_size = DELIVERY_DSN_MAX,
	};
	struct queue_rcpt qr = { .addr = to, .status = QUEUE_STATUS_PENDING };
	int utf8_to = 0;
	for (const char *c = to; *c; c++)
		if ((unsigned char)*c >= 0x80)
			utf8_to = 1;
	/* The report carries the original's 8-bit or UTF-8 content: flag it the same way. */
	struct queue_envelope denv = {
		.arrival = (long long)time(NULL),
		.smtputf8 = env->smtputf8 || utf8_to,
		.body_8bit = env->body_8bit,
		.from = "",
		.client_addr = "",
		.helo = "",
		.rcpts = &qr,
		.n_rcpts = 1,
	};
	const char *error = NULL;
	struct queue_writer *w = queue_writer_begin(ctx->queue_dir, &denv, &error);
	if (w == NULL) {
		log_error("delivery", "event=dsn_failed qid=%s error=\"%s\"", env->id, error);
		return;
	}
	char dsn_id[QUEUE_ID_MAX];
	snprintf(dsn_id, sizeof(dsn_id), "%s", queue_writer_id(w));
	if (dsn_write(&p, dsn_append, w, &error) < 0) {
		log_error("delivery", "event=dsn_failed qid=%s error=\"%s\"", env->id, error);
		queue_writer_abort(&w);
		return;
	}
	int disk_full = 0;
	if (queue_writer_commit(w, &disk_full, &error) < 0) {
		log_error("delivery", "event=dsn_failed qid=%s error=\"%s\"", env->id, error);
		return;
	}
	log_info("delivery", "event=dsn qid=%s kind=%s to=<%s> dsn_qid=%s rcpts=%d", env->id,
		 kind == DSN_FAILURE ? "failure" : kind == DSN_DELAY ? "delay" : "success", to, dsn_id,
		 n);
}

