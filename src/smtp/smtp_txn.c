/* SMTP transactions: MAIL .. end of data, the Received header, the header stage of
 * submission and the hand-over to the queue. */
#include "smtp/smtp_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- transactions --------------------------------------------------------------- */

void smtp_txn_end(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;
	if (t->msg != NULL) {
		s->srv->cb.msg_abort(s->srv->cb.ctx, t->msg);
		t->msg = NULL;
	}
	free(t->targets);
	buf_deinit(&t->stage);
	memset(t, 0, sizeof(*t));
	if (s->state & (ST_MAIL | ST_RCPT))
		s->state = ST_READY;
}

int smtp_txn_add_target(struct smtp_txn *t, const char *addr, const struct smtp_rcpt_params *p,
			  const char *orig)
{
	for (int i = 0; i < t->n_targets; i++)
		if (strcasecmp(t->targets[i].addr, addr) == 0)
			return 0;
	if (t->n_targets >= SMTP_MAX_TARGETS)
		return -1;
	if (t->n_targets == t->cap_targets) {
		int cap = t->cap_targets ? t->cap_targets * 2 : 4;
		struct smtp_target *n = realloc(t->targets, (size_t)cap * sizeof(*n));
		if (n == NULL)
			return -1;
		t->targets = n;
		t->cap_targets = cap;
	}
	struct smtp_target *tg = &t->targets[t->n_targets++];
	memset(tg, 0, sizeof(*tg));
	snprintf(tg->addr, sizeof(tg->addr), "%s", addr);
	tg->notify = p->notify;
	if (p->orcpt[0] != '\0')
		snprintf(tg->orcpt, sizeof(tg->orcpt), "%s", p->orcpt);
	else if (strcasecmp(orig, addr) != 0)
		snprintf(tg->orcpt, sizeof(tg->orcpt), "rfc822;%s", orig);
	return 0;
}

/* Bytes of the message as stored, after the Received header: through the header
 * stage (submission) or straight to the queue file. */
static void txn_store(struct smtp_session *s, const char *data, size_t len)
{
	struct smtp_txn *t = &s->txn;
	if (t->write_failed || t->msg == NULL || len == 0)
		return;
	int disk_full = 0;
	if (s->srv->cb.msg_append(s->srv->cb.ctx, t->msg, data, len, &disk_full) < 0) {
		t->write_failed = 1;
		t->disk_full = disk_full;
	}
}

static int header_present(const char *hdr, size_t len, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i + n <= len;) {
		if (strncasecmp(hdr + i, name, n) == 0)
			return 1;
		const char *nl = memchr(hdr + i, '\n', len - i);
		if (nl == NULL)
			break;
		i = (size_t)(nl - hdr) + 1;
	}
	return 0;
}

/* Ends the header stage: adds Date and Message-ID when the client left them out
 * (RFC 6409 8.2, 8.3), then releases the held bytes. */
static void txn_stage_flush(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;
	if (!t->staging)
		return;
	t->staging = 0;
	const char *h = t->stage.data ? t->stage.data : "";
	size_t hlen = t->stage.len;
	const char *end = hlen >= 2 && memcmp(h, "\r\n", 2) == 0 ? h : NULL;
	if (end == NULL && hlen > 0)
		end = memmem(h, hlen, "\r\n\r\n", 4);
	size_t scan = end ? (size_t)(end - h) : hlen;
	char extra[512];
	size_t elen = 0;
	if (!header_present(h, scan, "date:")) {
		char date[64];
		time_t now = time(NULL);
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
		elen += (size_t)snprintf(extra + elen, sizeof(extra) - elen, "Date: %s\r\n", date);
	}
	if (!header_present(h, scan, "message-id:"))
		elen += (size_t)snprintf(extra + elen, sizeof(extra) - elen,
					 "Message-ID: <%s@%s>\r\n", t->qid, s->srv->hostname);
	txn_store(s, extra, elen);
	txn_store(s, h, hlen);
	buf_deinit(&t->stage);
}

/* Decoded message bytes from DATA or BDAT. */
void smtp_txn_body(struct smtp_session *s, const char *data, size_t len)
{
	struct smtp_txn *t = &s->txn;
	if (len == 0)
		return;
	t->size += (long long)len;
	if (t->size > s->srv->set.max_message_size)
		t->too_big = 1;
	if (t->too_big || t->write_failed)
		return;
	if (!t->staging) {
		txn_store(s, data, len);
		return;
	}
	size_t before = t->stage.len;
	if (buf_append(&t->stage, data, len) < 0) {
		txn_stage_flush(s);
		txn_store(s, data, len);
		return;
	}
	/* Look for the end of the header block around what was just added. */
	size_t from = before >= 3 ? before - 3 : 0;
	if ((t->stage.len >= 2 && memcmp(t->stage.data, "\r\n", 2) == 0) ||
	    memmem(t->stage.data + from, t->stage.len - from, "\r\n\r\n", 4) != NULL ||
	    t->stage.len >= SMTP_HEADER_STAGE_MAX)
		txn_stage_flush(s);
}

/* The "with" protocol of RFC 3848 and RFC 6531 7: (UTF8)SMTP/ESMTP + S (TLS) + A (AUTH). */
static void received_with(struct smtp_session *s, char *out, size_t cap)
{
	if (!s->esmtp) {
		snprintf(out, cap, "SMTP");
		return;
	}
	snprintf(out, cap, "%s%s%s", s->txn.params.smtputf8 ? "UTF8SMTP" : "ESMTP",
		 s->tls ? "S" : "", s->auth_user[0] ? "A" : "");
}

/* Opens the queue file and writes the Received header (RFC 5321 4.4). */
int smtp_txn_begin(struct smtp_session *s, int bdat)
{
	struct smtp_txn *t = &s->txn;
	struct smtp_envelope env = {
		.from = t->from_null ? "" : t->from,
		.params = &t->params,
		.targets = t->targets,
		.n_targets = t->n_targets,
		.helo = s->helo,
		.client_addr = s->addr,
		.auth_user = s->auth_user,
	};
	const char *error = NULL;
	t->msg = s->srv->cb.msg_begin(s->srv->cb.ctx, &env, t->qid, &error);
	if (t->msg == NULL) {
		smtp_session_log(s, LOG_LEVEL_ERROR, "event=queue_error error=\"%s\"",
			    error ? error : "unknown");
		return -1;
	}
	data_decoder_init(&t->dec, bdat ? DATA_MODE_RAW : DATA_MODE_DOT, 1000);
	t->bdat = bdat;
	t->size = 0;

	char date[64], hdr[2048], with[16];
	received_with(s, with, sizeof(with));
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	int n = snprintf(hdr, sizeof(hdr), "Received: from %s ([%s])\r\n\tby %s (tern) with %s id %s",
			 s->helo[0] ? s->helo : "unknown", s->addr, s->srv->hostname,
			 with, t->qid);
	if (s->tls)
		n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, "\r\n\t(%s)", s->tls_desc);
	if (t->n_targets == 1)
		n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, "\r\n\tfor <%s>", t->targets[0].addr);
	n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, ";\r\n\t%s\r\n", date);
	txn_store(s, hdr, (size_t)n);
	if (s->role != SMTP_ROLE_MX) {
		t->staging = 1;
		buf_init(&t->stage, SMTP_HEADER_STAGE_MAX);
	}
	return 0;
}

/* The end of DATA or of BDAT LAST: refuse, or hand the message to the queue. */
void smtp_txn_finish(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;
	if (t->too_big) {
		smtp_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%lld bytes)",
		      s->srv->set.max_message_size);
		smtp_txn_end(s);
		return;
	}
	if (t->dec.bare_lf || t->dec.bare_cr) {
		smtp_reply(s, "550 5.6.0 Message refused: it contains a bare %s; lines must end with CRLF",
		      t->dec.bare_lf ? "LF" : "CR");
		smtp_txn_end(s);
		return;
	}
	/* RFC 5321 4.5.3.1.6 limits text lines; BDAT chunks are counted octets, not lines,
	 * so long lines there are accepted (as by other servers). */
	if (t->dec.line_too_long && !t->bdat) {
		smtp_reply(s, "550 5.6.0 Message refused: a line is longer than 1000 octets (RFC 5321 4.5.3.1.6)");
		smtp_txn_end(s);
		return;
	}
	txn_stage_flush(s);
	if (t->write_failed) {
		if (t->disk_full)
			smtp_reply(s, "452 4.3.1 Insufficient system storage, try again later");
		else
			smtp_reply(s, "451 4.3.0 Local error writing the message, try again later");
		smtp_txn_end(s);
		return;
	}
	void *msg = t->msg;
	t->msg = NULL;
	s->busy = 1;
	s->srv->cb.msg_commit(s->srv->cb.ctx, s, msg);
}

void smtp_session_commit_done(struct smtp_session *s, int ok, int disk_full, const char *error)
{
	s->busy = 0;
	if (s->dead) {
		smtp_session_free(s);
		return;
	}
	struct smtp_txn *t = &s->txn;
	if (ok) {
		char from[600];
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", t->qid);
		smtp_session_log(s, LOG_LEVEL_INFO,
			    "event=accepted qid=%s from=<%s> rcpts=%d size=%lld tls=%s auth=%s", t->qid,
			    log_quote(from, sizeof(from), t->from, strlen(t->from)), t->n_targets,
			    t->size, s->tls ? "yes" : "no", s->auth_user[0] ? s->auth_user : "-");
		s->messages++;
	} else {
		smtp_session_log(s, LOG_LEVEL_ERROR, "event=queue_error qid=%s error=\"%s\"", t->qid,
			    error ? error : "unknown");
		if (disk_full)
			smtp_reply(s, "452 4.3.1 Insufficient system storage, try again later");
		else
			smtp_reply(s, "451 4.3.0 Local error in processing, try again later");
	}
	smtp_txn_end(s);
	smtp_session_process(s);
}
