#include "delivery/local.h"

#include "base/file.h"
#include "base/log.h"
#include "directory/directory.h"
#include "queue/queue_file.h"
#include "store/maildir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum rcpt_kind { RCPT_LOCAL, RCPT_NO_ACCOUNT, RCPT_REMOTE, RCPT_LOOKUP_FAILED };

static enum rcpt_kind classify(const struct delivery_ctx *ctx, const char *addr)
{
	const char *at = strrchr(addr, '@');
	if (at == NULL)
		return RCPT_NO_ACCOUNT;
	char hash[512];
	pthread_mutex_lock(ctx->dir_lock);
	int local = directory_domain_exists(ctx->dir, at + 1);
	int account = local == 1 ? directory_account_hash(ctx->dir, addr, hash, sizeof(hash)) : 0;
	pthread_mutex_unlock(ctx->dir_lock);
	explicit_bzero(hash, sizeof(hash));
	if (local < 0 || account < 0)
		return RCPT_LOOKUP_FAILED;
	if (local == 0)
		return RCPT_REMOTE;
	return account == 1 ? RCPT_LOCAL : RCPT_NO_ACCOUNT;
}

static void move_aside(const struct delivery_ctx *ctx, const char *id, const char *path)
{
	char dir[4096], dest[4200];
	snprintf(dir, sizeof(dir), "%s/corrupt", ctx->queue_dir);
	file_mkdir_p(dir, 0700);
	snprintf(dest, sizeof(dest), "%s/%s", dir, id);
	if (rename(path, dest) == 0)
		file_fsync_dir(ctx->queue_dir);
}

/* Delivers to one local account.  1 delivered (or found delivered), 0 retry later. */
static int deliver_one(const struct delivery_ctx *ctx, struct queue_envelope *env, int fd,
		       int index)
{
	struct queue_rcpt *r = &env->rcpts[index];
	const char *at = strrchr(r->addr, '@');
	char user[256], maildir[4096], unique[64], prefix[2048];
	const char *error = NULL;
	snprintf(user, sizeof(user), "%.*s", (int)(at - r->addr), r->addr);
	for (char *p = user; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	if (maildir_ensure(ctx->mail_root, at + 1, user, maildir, sizeof(maildir), &error) < 0) {
		log_error("delivery", "event=deferred qid=%s rcpt=<%s> error=\"%s\"", env->id,
			  r->addr, error);
		return 0;
	}
	/* Deterministic: a repeat after a crash finds the first copy (maildir_deliver). */
	snprintf(unique, sizeof(unique), "%s_%d", env->id, index);
	int n = snprintf(prefix, sizeof(prefix), "Return-Path: <%s>\r\nDelivered-To: %s\r\n",
			 env->from, r->addr);
	if (n < 0 || (size_t)n >= sizeof(prefix))
		n = snprintf(prefix, sizeof(prefix), "Delivered-To: %s\r\n", r->addr);
	int disk_full = 0;
	int rc = maildir_deliver(maildir, unique, env->arrival, ctx->hostname, prefix, (size_t)n, fd,
				 env->data_off, env->data_len, &disk_full, &error);
	if (rc < 0) {
		log_error("delivery", "event=deferred qid=%s rcpt=<%s> error=\"%s\"%s", env->id,
			  r->addr, error, disk_full ? " reason=disk_full" : "");
		return 0;
	}
	/* Not synced: if the mark is lost in a crash, the repeat finds the Maildir copy by
	 * its deterministic name.  One fdatasync covers the file if it stays queued. */
	if (queue_file_set_status(fd, r, QUEUE_STATUS_DELIVERED, 0, &error) < 0) {
		log_error("delivery", "event=deferred qid=%s rcpt=<%s> error=\"%s\"", env->id,
			  r->addr, error);
		return 0;
	}
	log_info("delivery", "event=delivered qid=%s rcpt=<%s> mailbox=%s/%s size=%lld delay=%llds%s",
		 env->id, r->addr, at + 1, user, (long long)env->data_len,
		 (long long)time(NULL) - env->arrival, rc == 0 ? " note=already_delivered" : "");
	return 1;
}

void delivery_pending_free(struct delivery_pending *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	queue_envelope_free(&p->env);
	free(p->remote);
	p->remote = NULL;
}

enum delivery_result delivery_local_run(const struct delivery_ctx *ctx, const char *id,
					struct delivery_pending *pending_r)
{
	char path[4096];
	struct queue_envelope env;
	int fd = -1;
	const char *error = NULL;
	snprintf(path, sizeof(path), "%s/%s", ctx->queue_dir, id);
	memset(&env, 0, sizeof(env));
	if (queue_file_open(path, &env, &fd, &error) < 0) {
		if (access(path, F_OK) < 0 && errno == ENOENT)
			return DELIVERY_GONE;
		log_error("delivery", "event=corrupt qid=%s error=\"%s\" action=moved_to_corrupt",
			  id, error ? error : "unknown");
		move_aside(ctx, id, path);
		return DELIVERY_BROKEN;
	}
	int pending = 0, remote = 0, retry = 0;
	char *remote_flags = calloc((size_t)env.n_rcpts + 1, 1);
	if (remote_flags == NULL) {
		close(fd);
		queue_envelope_free(&env);
		return DELIVERY_RETRY;
	}
	/* Reports due: NOTIFY=SUCCESS deliveries, and accounts gone since acceptance. */
	struct dsn_rcpt *ok = calloc((size_t)env.n_rcpts, sizeof(*ok));
	struct dsn_rcpt *fail = calloc((size_t)env.n_rcpts, sizeof(*fail));
	int n_ok = 0, n_fail = 0;
	long long now = (long long)time(NULL);
	for (int i = 0; i < env.n_rcpts; i++) {
		struct queue_rcpt *r = &env.rcpts[i];
		if (!QUEUE_STATUS_IS_PENDING(r->status))
			continue;
		struct dsn_rcpt d = { .addr = r->addr, .orcpt = r->orcpt, .last_attempt = now,
				      .remote_mta = NULL };
		switch (classify(ctx, r->addr)) {
		case RCPT_LOCAL:
			if (!deliver_one(ctx, &env, fd, i)) {
				retry = 1;
				pending++;
			} else if (ok != NULL && dsn_wanted(DSN_SUCCESS, r->notify)) {
				d.action = DSN_ACTION_DELIVERED;
				d.status = "2.0.0";
				d.diagnostic = "X-tern; delivered to the mailbox";
				ok[n_ok++] = d;
			}
			break;
		case RCPT_NO_ACCOUNT:
			/* The account went away after the message was accepted. */
			if (queue_file_set_status(fd, r, QUEUE_STATUS_FAILED, 1, &error) < 0) {
				retry = 1;
				pending++;
			} else {
				log_warn("delivery", "event=failed qid=%s rcpt=<%s> reason=\"no such "
						     "local account\"", env.id, r->addr);
				if (fail != NULL && dsn_wanted(DSN_FAILURE, r->notify)) {
					d.action = DSN_ACTION_FAILED;
					d.status = "5.1.1";
					d.diagnostic = "X-tern; the mailbox no longer exists";
					fail[n_fail++] = d;
				}
			}
			break;
		case RCPT_REMOTE:
			remote_flags[i] = 1;
			remote++;
			pending++;
			break;
		case RCPT_LOOKUP_FAILED:
			retry = 1;
			pending++;
			break;
		}
	}
	/* Queued before the original may go: a crash repeats rather than loses them. */
	delivery_report(ctx, &env, fd, DSN_SUCCESS, ok, n_ok);
	delivery_report(ctx, &env, fd, DSN_FAILURE, fail, n_fail);
	free(ok);
	free(fail);
	enum delivery_result result;
	if (pending == 0) {
		/* The directory is not fsynced: an unlink lost in a crash only means the file
		 * is looked at again, and every recipient is found done. */
		if (unlink(path) < 0 && errno != ENOENT) {
			log_error("delivery", "event=remove_failed qid=%s error=\"%s\"", env.id,
				  strerror(errno));
			result = DELIVERY_RETRY;
		} else {
			log_info("delivery", "event=removed qid=%s", env.id);
			result = DELIVERY_DONE;
		}
	} else if (remote > 0) {
		result = DELIVERY_PARKED;
	} else {
		result = DELIVERY_RETRY;
	}
	if (pending > 0 && fdatasync(fd) < 0)
		log_warn("delivery", "event=sync_failed qid=%s error=\"%s\"", env.id, strerror(errno));
	if (result == DELIVERY_PARKED && pending_r != NULL) {
		struct stat st;
		pending_r->env = env;
		pending_r->fd = fd;
		pending_r->mtime = fstat(fd, &st) == 0 ? (long long)st.st_mtime : 0;
		pending_r->remote = remote_flags;
		pending_r->n_remote = remote;
		pending_r->local_retry = retry;
		return result;
	}
	free(remote_flags);
	close(fd);
	queue_envelope_free(&env);
	return result;
}
