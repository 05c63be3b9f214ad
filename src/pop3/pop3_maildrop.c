/* The maildrop: every mail store call of the POP3 engine, run on the worker's thread
 * pool (store/mstore.h may block).  A session has at most one job at a time; its
 * connection is paused meanwhile and the completion, back on the loop, answers and
 * resumes it.  The job's work touches only the store fields of the session; the loop
 * leaves them alone while s->busy.
 *
 * RFC 1939: the message list is fixed at login (a snapshot of INBOX), DELE only marks,
 * and only QUIT in TRANSACTION (the UPDATE state) removes the marked messages. */
#include "pop3/pop3_private.h"

#include "event/pool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void job_error(struct pop3_session *s, int status, const char *error)
{
	s->job_status = status;
	snprintf(s->job_error, sizeof(s->job_error), "%s", error ? error : "unknown error");
}

/* Closes the message file, the box, the store and the lock (in that order: the lock
 * goes last, so another session that gets it sees our changes). */
static void maildrop_close(struct pop3_session *s)
{
	if (s->retr.fd >= 0) {
		close(s->retr.fd);
		s->retr.fd = -1;
	}
	if (s->box != NULL)
		mstore_box_close(&s->box);
	if (s->store != NULL)
		mstore_close(&s->store);
	if (s->lock_fd >= 0) {
		close(s->lock_fd);
		s->lock_fd = -1;
	}
}

void pop3_maildrop_free(struct pop3_session *s)
{
	maildrop_close(s);
}

/* ---- work (pool threads) ---------------------------------------------------------------- */

static void work_open(struct pop3_session *s)
{
	const char *error = NULL;
	int r = mstore_open(s->srv->mail_root, s->domain, s->local, &s->store, &error);
	if (r != MSTORE_OK) {
		job_error(s, r, error);
		s->store = NULL;
		return;
	}
	r = mstore_pop3_lock(s->store, &s->lock_fd, &error);
	if (r != MSTORE_OK) {
		job_error(s, r, error);
		s->lock_fd = -1;
		maildrop_close(s);
		return;
	}
	r = mstore_box_open(s->store, "INBOX", 0, &s->box, &error);
	if (r == MSTORE_OK) {
		s->uidvalidity = mstore_box_info(s->box)->uidvalidity;
		r = mstore_box_load(s->box, &s->msgs, &s->n_msgs, &error);
	}
	if (r == MSTORE_OK) {
		s->deleted = calloc(s->n_msgs > 0 ? s->n_msgs : 1, 1);
		if (s->deleted == NULL) {
			r = MSTORE_IO;
			error = "out of memory";
		}
	}
	if (r != MSTORE_OK) {
		job_error(s, r, error);
		free(s->msgs);
		s->msgs = NULL;
		s->n_msgs = 0;
		maildrop_close(s);
	}
}

static void work_read(struct pop3_session *s)
{
	const char *error = NULL;
	struct pop3_retr *rt = &s->retr;
	rt->out_len = 0;
	if (rt->fd < 0) {
		int r = mstore_box_msg_open(s->box, rt->uid, &rt->fd, &error);
		if (r != MSTORE_OK) {
			rt->fd = -1;
			job_error(s, r, error);
			return;
		}
	}
	char *in = rt->out + 2 * POP3_READ_CHUNK; /* the read half of the buffer */
	size_t got = 0;
	while (got < POP3_READ_CHUNK) {
		ssize_t n = read(rt->fd, in + got, POP3_READ_CHUNK - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			job_error(s, MSTORE_IO, strerror(errno));
			return;
		}
		if (n == 0) {
			rt->eof = 1;
			break;
		}
		got += (size_t)n;
	}
	size_t consumed = 0;
	rt->out_len = pop3_stuffer_feed(&rt->stuffer, in, got, rt->out, &consumed);
	if (rt->stuffer.done)
		rt->eof = 1;
	if (rt->eof) {
		close(rt->fd);
		rt->fd = -1;
	}
}

static void work_update(struct pop3_session *s)
{
	const char *error = NULL;
	s->n_expunged = 0;
	uint32_t *uids = NULL;
	size_t n = 0;
	if (s->n_deleted > 0) {
		uids = malloc(s->n_deleted * sizeof(*uids));
		if (uids == NULL) {
			job_error(s, MSTORE_IO, "out of memory");
			maildrop_close(s);
			return;
		}
		for (size_t i = 0; i < s->n_msgs; i++)
			if (s->deleted[i])
				uids[n++] = s->msgs[i].uid; /* ascending: msgs is */
	}
	if (n > 0) {
		int r = mstore_box_store(s->box, uids, n, MSTORE_STORE_ADD, MSTORE_F_DELETED, NULL,
		                         0, NULL, NULL, NULL, NULL, &error);
		if (r == MSTORE_OK) {
			uint32_t *gone = NULL;
			size_t n_gone = 0;
			r = mstore_box_expunge(s->box, uids, n, &gone, &n_gone, &error);
			free(gone);
			if (r == MSTORE_OK) {
				s->n_expunged = n_gone;
			} else {
				/* Nothing is lost; give back the flag where we set it. */
				job_error(s, r, error);
				size_t k = 0;
				for (size_t i = 0; i < s->n_msgs; i++)
					if (s->deleted[i] && !(s->msgs[i].flags & MSTORE_F_DELETED))
						uids[k++] = s->msgs[i].uid;
				if (k > 0)
					mstore_box_store(s->box, uids, k, MSTORE_STORE_REMOVE,
					                 MSTORE_F_DELETED, NULL, 0, NULL, NULL,
					                 NULL, NULL, &error);
			}
		} else {
			job_error(s, r, error);
		}
	}
	free(uids);
	maildrop_close(s);
}

static void job_work(void *arg)
{
	struct pop3_session *s = arg;
	s->job_status = MSTORE_OK;
	s->job_error[0] = '\0';
	switch (s->job) {
	case POP3_JOB_OPEN:
		work_open(s);
		break;
	case POP3_JOB_READ:
		work_read(s);
		break;
	case POP3_JOB_UPDATE:
		work_update(s);
		break;
	case POP3_JOB_CLOSE:
		maildrop_close(s);
		break;
	case POP3_JOB_NONE:
		break;
	}
}

/* ---- completions (loop) ------------------------------------------------------------------ */

static void done_open(struct pop3_session *s)
{
	char q[300];
	log_quote(q, sizeof(q), s->login_user, strlen(s->login_user));
	if (s->job_status == MSTORE_OK) {
		pop3_session_set_state(s, POP3_ST_TRANSACTION);
		pop3_session_log(s, LOG_LEVEL_INFO, "event=login user=%s messages=%zu tls=%d", q,
		                 s->n_msgs, s->tls);
		pop3_reply(s, "+OK Logged in");
		return;
	}
	if (s->job_status == MSTORE_IN_USE) {
		pop3_session_log(s, LOG_LEVEL_INFO, "event=login result=in_use user=%s", q);
		pop3_reply(s, "-ERR [IN-USE] Mailbox is locked by another session");
	} else {
		char e[600];
		pop3_session_log(s, LOG_LEVEL_ERROR, "event=maildrop_failed user=%s error=%s", q,
		                 log_quote(e, sizeof(e), s->job_error, strlen(s->job_error)));
		pop3_reply(s, "-ERR [SYS/TEMP] Cannot open the mailbox, try again later");
	}
	s->login_user[0] = '\0';
}

static void done_read(struct pop3_session *s)
{
	struct pop3_retr *rt = &s->retr;
	if (s->job_status != MSTORE_OK) {
		char e[600];
		pop3_session_log(s, LOG_LEVEL_WARN, "event=retr_failed uid=%" PRIu32 " error=%s",
		                 rt->uid,
		                 log_quote(e, sizeof(e), s->job_error, strlen(s->job_error)));
		rt->active = 0;
		if (rt->sent == 0) {
			if (s->job_status == MSTORE_NOT_FOUND)
				pop3_reply(s, "-ERR Message was removed by another session");
			else
				pop3_reply(
				    s, "-ERR [SYS/TEMP] Cannot read the message, try again later");
			return;
		}
		/* Inside a multi-line answer nothing can say -ERR any more. */
		if (s->conn != NULL)
			conn_close(s->conn, "read_failed");
		return;
	}
	if (rt->sent == 0) {
		size_t i = 0;
		while (i < s->n_msgs && s->msgs[i].uid != rt->uid)
			i++;
		if (rt->stuffer.body_lines < 0)
			pop3_reply(s, "+OK %" PRIu64 " octets",
			           i < s->n_msgs ? s->msgs[i].size : 0);
		else
			pop3_reply(s, "+OK");
		rt->sent = 1;
	}
	pop3_session_write(s, rt->out, rt->out_len);
	rt->sent += rt->out_len;
	if (rt->eof) {
		char end[8];
		size_t n = pop3_stuffer_finish(&rt->stuffer, end);
		pop3_session_write(s, end, n);
		rt->active = 0;
		if (rt->stuffer.body_lines < 0)
			s->n_retrieved++;
		return;
	}
	if (s->conn != NULL && conn_output_pending(s->conn) >= POP3_OUTPUT_MAX) {
		rt->waiting_drain = 1; /* the connection's drained callback goes on */
		return;
	}
	if (pop3_job_submit(s, POP3_JOB_READ) < 0 && s->conn != NULL)
		conn_close(s->conn, "out_of_memory");
}

static void done_update(struct pop3_session *s)
{
	char q[300];
	log_quote(q, sizeof(q), s->login_user, strlen(s->login_user));
	if (s->job_status == MSTORE_OK) {
		pop3_session_log(s, LOG_LEVEL_INFO,
		                 "event=logout user=%s reason=quit retrieved=%zu "
		                 "expunged=%zu",
		                 q, s->n_retrieved, s->n_expunged);
		pop3_reply(s, "+OK Logging out (%zu messages deleted)", s->n_expunged);
	} else {
		char e[600];
		pop3_session_log(s, LOG_LEVEL_ERROR, "event=update_failed user=%s error=%s", q,
		                 log_quote(e, sizeof(e), s->job_error, strlen(s->job_error)));
		pop3_reply(s, "-ERR [SYS/TEMP] Deleted messages were not removed, try again later");
	}
	s->login_user[0] = '\0'; /* the logout is logged */
	pop3_session_close_after_reply(s, "quit");
}

static void job_done(void *arg)
{
	struct pop3_session *s = arg;
	enum pop3_job_kind kind = s->job;
	s->job = POP3_JOB_NONE;
	s->busy = 0;
	s->srv->n_busy--;
	if (kind == POP3_JOB_CLOSE) {
		s->store = NULL;
		s->lock_fd = -1;
		pop3_session_release(s); /* nothing left open: frees s */
		return;
	}
	if (s->dead) {
		pop3_session_release(s);
		return;
	}
	switch (kind) {
	case POP3_JOB_OPEN:
		done_open(s);
		break;
	case POP3_JOB_READ:
		done_read(s);
		break;
	case POP3_JOB_UPDATE:
		done_update(s);
		break;
	default:
		break;
	}
	pop3_session_continue(s);
}

int pop3_job_submit(struct pop3_session *s, enum pop3_job_kind kind)
{
	if (s->pool == NULL)
		return -1;
	s->job = kind;
	s->busy = 1;
	s->srv->n_busy++;
	if (s->conn != NULL)
		conn_pause(s->conn);
	if (pool_submit(s->pool, job_work, job_done, s) < 0) {
		s->job = POP3_JOB_NONE;
		s->busy = 0;
		s->srv->n_busy--;
		return -1;
	}
	return 0;
}

/* ---- RETR / TOP ---------------------------------------------------------------------------- */

void pop3_retr_start(struct pop3_session *s, size_t i, int64_t body_lines)
{
	struct pop3_retr *rt = &s->retr;
	if (rt->out == NULL) {
		/* Stuffed output (up to twice the input) followed by the read buffer. */
		rt->out = malloc(3 * POP3_READ_CHUNK);
		if (rt->out == NULL) {
			pop3_reply(s, "-ERR [SYS/TEMP] Out of memory");
			return;
		}
	}
	rt->active = 1;
	rt->uid = s->msgs[i].uid;
	rt->fd = -1;
	rt->eof = 0;
	rt->waiting_drain = 0;
	rt->out_len = 0;
	rt->sent = 0;
	pop3_stuffer_init(&rt->stuffer, body_lines);
	if (pop3_job_submit(s, POP3_JOB_READ) < 0) {
		rt->active = 0;
		pop3_reply(s, "-ERR [SYS/TEMP] Out of memory");
	}
}

void pop3_retr_drained(struct pop3_session *s)
{
	s->retr.waiting_drain = 0;
	if (pop3_job_submit(s, POP3_JOB_READ) < 0 && s->conn != NULL)
		conn_close(s->conn, "out_of_memory");
}
