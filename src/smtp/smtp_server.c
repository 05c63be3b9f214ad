/* SMTP server engine: connections, the command table, transactions and replies.
 *
 * One session per connection; a transaction (MAIL .. end of data) lives inside it and
 * is ended the same way by RSET, an error, a new EHLO or a commit (txn_end).  Input is
 * read from a libevent bufferevent (plain or OpenSSL) and handled by session_process(),
 * which stops whenever an asynchronous step (password check, durable commit) is
 * pending or replies pile up, and resumes when it completes. */
#include "smtp/smtp_server.h"

#include "base/buf.h"
#include "base/counter.h"
#include "base/log.h"
#include "msg/dotstuff.h"
#include "auth/sasl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SMTP_READ_HIGH_WATER  (64 * 1024)  /* input buffered per connection, at most */
#define SMTP_OUTPUT_MAX       (64 * 1024)  /* stop reading while this much is unsent */
#define SMTP_AUTH_LINE_MAX    2048         /* a SASL response line (RFC 4954 4: 12288 allowed,
					      but PLAIN with 255-octet fields needs ~1 KiB) */
#define SMTP_MAX_ERRORS       20           /* junk commands before we hang up */
#define SMTP_MAX_TARGETS      1000         /* targets per message after alias expansion */
#define SMTP_HEADER_STAGE_MAX (64 * 1024)  /* header block scanned on submission */
#define SMTP_SCRATCH          (SMTP_READ_HIGH_WATER + 4096)

enum smtp_state {
	ST_GREETED = 1 << 0, /* connected, no EHLO/HELO yet */
	ST_READY = 1 << 1,   /* after EHLO/HELO, no transaction */
	ST_MAIL = 1 << 2,    /* after MAIL, no accepted RCPT */
	ST_RCPT = 1 << 3,    /* at least one accepted RCPT */
};
#define ST_ANY (ST_GREETED | ST_READY | ST_MAIL | ST_RCPT)

enum smtp_mode {
	MODE_COMMAND,
	MODE_DATA,
	MODE_BDAT,
	MODE_AUTH_PLAIN,
	MODE_AUTH_LOGIN_USER,
	MODE_AUTH_LOGIN_PASS,
};

struct smtp_listener {
	struct smtp_listener *next;
	struct smtp_server *srv;
	struct evconnlistener *evl;
	enum smtp_role role;
	char name[64];
};

struct smtp_server {
	struct event_base *base;
	struct smtp_settings set;
	char hostname[256];
	SSL_CTX *ssl_ctx;
	struct smtp_callbacks cb;
	struct smtp_listener *listeners;
	struct smtp_session *sessions;
	int n_sessions;
	struct counter_table *per_ip;
	struct counter_table *auth_failures;
	int own_auth_failures;
	unsigned long next_sid;
	int draining;
	int drain_graceful;
	void (*drain_done)(void *arg);
	void *drain_arg;
	char scratch[SMTP_SCRATCH];
};

struct smtp_txn {
	char from[ADDR_PATH_MAX * 4 + 8];
	int from_null;
	struct smtp_mail_params params;
	struct smtp_target *targets;
	int n_targets;
	int cap_targets;
	int n_rcpts;           /* accepted RCPT commands */
	void *msg;             /* queue handle, once DATA/BDAT started */
	char qid[32];
	int bdat;              /* BDAT was used: DATA is refused from now */
	int failed;            /* a BDAT chunk failed: the rest are discarded */
	struct data_decoder dec;
	long long size;
	int too_big;
	int write_failed;
	int disk_full;
	int staging;           /* header block held back (submission adds Date/Message-ID) */
	struct buf stage;
};

struct smtp_session {
	struct smtp_session *prev, *next;
	struct smtp_server *srv;
	struct smtp_session_info info;
	char id[24];
	char addr[INET6_ADDRSTRLEN];
	struct sockaddr_storage sa;
	char helo[256];
	int esmtp;
	char auth_user[256];
	char auth_pending_user[256];
	char listener[64];
	enum smtp_role role;
	evutil_socket_t fd;
	struct bufferevent *bev;
	int tls;
	char tls_desc[160];
	enum smtp_state state;
	enum smtp_mode mode;
	long long bdat_remaining;
	int bdat_last;
	int bdat_discard;
	struct smtp_line_reader lr;
	int busy;              /* an asynchronous callback is pending */
	int dead;              /* connection gone while busy: free on completion */
	int closing;           /* free once the output is flushed */
	int starttls_pending;
	int got_bytes;
	int errors;
	int commands;
	int messages;
	const char *verb;      /* command being handled, for logs */
	const char *close_reason;
	time_t start;
	struct smtp_txn txn;
};

struct smtp_cmd {
	const char *verb;
	void (*handler)(struct smtp_session *s, const char *arg, size_t len);
	unsigned states;
	const char *bad_state_reply;
};

static void session_process(struct smtp_session *s);
static void session_free(struct smtp_session *s);
static void session_start_tls(struct smtp_session *s);
static void bdat_chunk_done(struct smtp_session *s);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);

/* ---- logging and replies ---------------------------------------------------------- */

static void session_log(struct smtp_session *s, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void session_log(struct smtp_session *s, enum log_level level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, "smtp", "sid=%s %s", s->id, line);
}

static void session_write(struct smtp_session *s, const char *data, size_t len)
{
	if (s->bev != NULL)
		bufferevent_write(s->bev, data, len);
}

/* Every reply goes through here; 4xx and 5xx are logged with the command. */
static void reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct smtp_session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	if (line[0] == '4' || line[0] == '5') {
		char q[1100];
		session_log(s, line[0] == '4' ? LOG_LEVEL_INFO : LOG_LEVEL_INFO,
			    "event=reject cmd=%s reply=%s", s->verb ? s->verb : "-",
			    log_quote(q, sizeof(q), line, (size_t)n));
		s->errors++;
	}
	line[n++] = '\r';
	line[n++] = '\n';
	session_write(s, line, (size_t)n);
}

/* Frees the bufferevent and closes the socket, whichever of the two owns it. */
static void session_close_conn(struct smtp_session *s)
{
	if (s->bev != NULL) {
		int tls_bev = bufferevent_openssl_get_ssl(s->bev) != NULL;
		bufferevent_free(s->bev);
		s->bev = NULL;
		if (tls_bev)
			s->fd = -1; /* BEV_OPT_CLOSE_ON_FREE closed it */
	}
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
}

static void session_close_after_reply(struct smtp_session *s, const char *reason)
{
	s->closing = 1;
	if (s->close_reason == NULL)
		s->close_reason = reason;
	if (s->bev != NULL)
		bufferevent_disable(s->bev, EV_READ);
}

/* ---- transactions --------------------------------------------------------------- */

static void txn_end(struct smtp_session *s)
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

static int txn_add_target(struct smtp_txn *t, const char *addr, const struct smtp_rcpt_params *p,
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
static void txn_body(struct smtp_session *s, const char *data, size_t len)
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
static int txn_begin_message(struct smtp_session *s, int bdat)
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
		session_log(s, LOG_LEVEL_ERROR, "event=queue_error error=\"%s\"",
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
static void txn_finish_message(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;
	if (t->too_big) {
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%lld bytes)",
		      s->srv->set.max_message_size);
		txn_end(s);
		return;
	}
	if (t->dec.bare_lf || t->dec.bare_cr) {
		reply(s, "550 5.6.0 Message refused: it contains a bare %s; lines must end with CRLF",
		      t->dec.bare_lf ? "LF" : "CR");
		txn_end(s);
		return;
	}
	/* RFC 5321 4.5.3.1.6 limits text lines; BDAT chunks are counted octets, not lines,
	 * so long lines there are accepted (as by other servers). */
	if (t->dec.line_too_long && !t->bdat) {
		reply(s, "550 5.6.0 Message refused: a line is longer than 1000 octets (RFC 5321 4.5.3.1.6)");
		txn_end(s);
		return;
	}
	txn_stage_flush(s);
	if (t->write_failed) {
		if (t->disk_full)
			reply(s, "452 4.3.1 Insufficient system storage, try again later");
		else
			reply(s, "451 4.3.0 Local error writing the message, try again later");
		txn_end(s);
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
		session_free(s);
		return;
	}
	struct smtp_txn *t = &s->txn;
	if (ok) {
		char from[600];
		reply(s, "250 2.0.0 Ok: queued as %s", t->qid);
		session_log(s, LOG_LEVEL_INFO,
			    "event=accepted qid=%s from=<%s> rcpts=%d size=%lld tls=%s auth=%s", t->qid,
			    log_quote(from, sizeof(from), t->from, strlen(t->from)), t->n_targets,
			    t->size, s->tls ? "yes" : "no", s->auth_user[0] ? s->auth_user : "-");
		s->messages++;
	} else {
		session_log(s, LOG_LEVEL_ERROR, "event=queue_error qid=%s error=\"%s\"", t->qid,
			    error ? error : "unknown");
		if (disk_full)
			reply(s, "452 4.3.1 Insufficient system storage, try again later");
		else
			reply(s, "451 4.3.0 Local error in processing, try again later");
	}
	txn_end(s);
	session_process(s);
}

/* ---- commands --------------------------------------------------------------------- */

static void cmd_helo_common(struct smtp_session *s, const char *arg, size_t len, int esmtp)
{
	while (len > 0 && (arg[len - 1] == ' ' || arg[len - 1] == '\t'))
		len--;
	if (len == 0) {
		reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	if (len >= sizeof(s->helo))
		len = sizeof(s->helo) - 1;
	/* Keep the first word only: it lands in our Received header. */
	size_t w = 0;
	while (w < len && arg[w] != ' ' && arg[w] != '\t')
		w++;
	memcpy(s->helo, arg, w);
	s->helo[w] = '\0';
	s->esmtp = esmtp;
	txn_end(s);
	s->state = ST_READY;
}

static void cmd_ehlo(struct smtp_session *s, const char *arg, size_t len)
{
	cmd_helo_common(s, arg, len, 1);
	if (s->state != ST_READY)
		return;
	struct buf b;
	buf_init(&b, 0);
	buf_printf(&b, "250-%s Hello %s [%s]\r\n", s->srv->hostname, s->helo, s->addr);
	buf_printf(&b, "250-PIPELINING\r\n250-SIZE %lld\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
		       "250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n",
		   s->srv->set.max_message_size);
	if (!s->tls && s->srv->ssl_ctx != NULL)
		buf_printf(&b, "250-STARTTLS\r\n");
	if (s->role != SMTP_ROLE_MX &&
	    (s->tls || (s->info.loopback && s->srv->set.auth_plaintext_loopback)))
		buf_printf(&b, "250-AUTH PLAIN LOGIN\r\n");
	buf_printf(&b, "250 HELP\r\n");
	session_write(s, b.data, b.len);
	buf_deinit(&b);
}

static void cmd_helo(struct smtp_session *s, const char *arg, size_t len)
{
	cmd_helo_common(s, arg, len, 0);
	if (s->state == ST_READY)
		reply(s, "250 %s", s->srv->hostname);
}

static int auth_required(struct smtp_session *s)
{
	return s->role != SMTP_ROLE_MX && s->auth_user[0] == '\0';
}

static void cmd_mail(struct smtp_session *s, const char *arg, size_t len)
{
	if (auth_required(s)) {
		reply(s, "530 5.7.0 Authentication required: log in (AUTH) before sending mail");
		return;
	}
	struct mail_addr addr;
	struct smtp_txn *t = &s->txn;
	const char *error = "syntax error";
	txn_end(s);
	switch (smtp_parse_mail(arg, len, &addr, &t->params, &error)) {
	case SMTP_PARAM_OK:
		break;
	case SMTP_PARAM_UNKNOWN:
		reply(s, "555 %s", error);
		return;
	case SMTP_PARAM_UTF8_ADDR:
		reply(s, "553 %s", error);
		return;
	default:
		reply(s, "501 %s", error);
		return;
	}
	if (t->params.size > s->srv->set.max_message_size) {
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%lld bytes)",
		      s->srv->set.max_message_size);
		return;
	}
	t->from_null = addr.is_null;
	if (!addr.is_null && addr_format(&addr, t->from, sizeof(t->from)) < 0) {
		reply(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	if (s->auth_user[0] != '\0') {
		int ok = s->srv->cb.may_send_as(s->srv->cb.ctx, s->auth_user, t->from_null ? "" : t->from);
		if (ok < 0) {
			reply(s, "451 4.3.0 Temporary lookup failure, try again later");
			return;
		}
		if (ok == 0) {
			reply(s, "553 5.7.1 <%s>: Sender address not owned by user %s", t->from,
			      s->auth_user);
			return;
		}
	}
	s->state = ST_MAIL;
	reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct smtp_session *s, const char *arg, size_t len)
{
	struct smtp_txn *t = &s->txn;
	struct mail_addr addr;
	struct smtp_rcpt_params p;
	const char *error = "syntax error";
	if (t->n_rcpts >= s->srv->set.max_recipients) {
		reply(s, "452 4.5.3 Too many recipients (at most %d per message)",
		      s->srv->set.max_recipients);
		return;
	}
	switch (smtp_parse_rcpt(arg, len, t->params.smtputf8 ? ADDR_ALLOW_UTF8 : 0, &addr, &p,
				&error)) {
	case SMTP_PARAM_OK:
		break;
	case SMTP_PARAM_UNKNOWN:
		reply(s, "555 %s", error);
		return;
	case SMTP_PARAM_UTF8_ADDR:
		reply(s, "553 %s", error);
		return;
	default:
		reply(s, "501 %s", error);
		return;
	}
	char shown[600];
	if (addr_format(&addr, shown, sizeof(shown)) < 0)
		snprintf(shown, sizeof(shown), "?");
	struct smtp_rcpt_targets *out = malloc(sizeof(*out));
	if (out == NULL) {
		reply(s, "451 4.3.0 Local error, try again later");
		return;
	}
	out->n = 0;
	enum smtp_rcpt_verdict v = s->srv->cb.rcpt(s->srv->cb.ctx, &s->info, &addr, out);
	switch (v) {
	case SMTP_RCPT_OK:
		break;
	case SMTP_RCPT_UNKNOWN_USER:
		reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", shown);
		free(out);
		return;
	case SMTP_RCPT_RELAY_DENIED:
		reply(s, "550 5.7.1 <%s>: Relay access denied", shown);
		free(out);
		return;
	case SMTP_RCPT_TEMPFAIL:
		reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", shown);
		free(out);
		return;
	}
	for (int i = 0; i < out->n; i++) {
		if (txn_add_target(t, out->addr[i], &p, shown) < 0) {
			reply(s, "452 4.5.3 Too many recipients");
			free(out);
			return;
		}
	}
	free(out);
	t->n_rcpts++;
	s->state = ST_RCPT;
	reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct smtp_session *s, const char *arg, size_t len)
{
	if (len > 0) {
		reply(s, "501 5.5.4 Syntax: DATA (no argument)");
		return;
	}
	if (s->state == ST_MAIL) {
		reply(s, "554 5.5.1 No valid recipients");
		return;
	}
	if (s->txn.bdat) {
		reply(s, "503 5.5.1 DATA cannot follow BDAT in one transaction");
		return;
	}
	if (txn_begin_message(s, 0) < 0) {
		reply(s, "451 4.3.0 Local error opening the queue, try again later");
		return;
	}
	s->mode = MODE_DATA;
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_bdat(struct smtp_session *s, const char *arg, size_t len)
{
	/* BDAT size [LAST] (RFC 3030).  Whatever the reply, the chunk's bytes must be
	 * read, or they would be taken for commands. */
	char tmp[64];
	if (len >= sizeof(tmp)) {
		reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	memcpy(tmp, arg, len);
	tmp[len] = '\0';
	char *end;
	errno = 0;
	unsigned long long size = strtoull(tmp, &end, 10);
	if (end == tmp || tmp[0] < '0' || tmp[0] > '9' || errno != 0 || end - tmp > 20) {
		reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	while (*end == ' ')
		end++;
	int last = 0;
	if (strcasecmp(end, "LAST") == 0)
		last = 1;
	else if (*end != '\0') {
		reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	s->bdat_remaining = size > (1ULL << 62) ? (1LL << 62) : (long long)size;
	s->bdat_last = last;
	s->bdat_discard = 0;
	s->mode = MODE_BDAT;
	struct smtp_txn *t = &s->txn;
	if (!(s->state & ST_RCPT) || t->failed || (t->msg == NULL && t->n_targets == 0)) {
		s->bdat_discard = 1;
		if (s->bdat_remaining == 0)
			bdat_chunk_done(s);
		return;
	}
	if (t->msg == NULL && txn_begin_message(s, 1) < 0) {
		s->bdat_discard = 1;
		t->write_failed = 1;
	}
	if (s->bdat_remaining == 0)
		bdat_chunk_done(s); /* "BDAT 0 LAST": no bytes will come to trigger it */
}

/* A BDAT chunk has been read in full. */
static void bdat_chunk_done(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;
	s->mode = MODE_COMMAND;
	if (s->bdat_discard) {
		if (t->write_failed)
			reply(s, "451 4.3.0 Local error opening the queue, try again later");
		else if (t->failed)
			reply(s, "503 5.5.1 Transaction failed earlier; send RSET");
		else if (s->state == ST_MAIL)
			reply(s, "554 5.5.1 No valid recipients");
		else
			reply(s, "503 5.5.1 Need MAIL and RCPT before BDAT");
		if (s->state & (ST_MAIL | ST_RCPT))
			t->failed = 1;
		return;
	}
	if (s->bdat_last) {
		data_decoder_raw_finish(&t->dec);
		txn_finish_message(s);
		return;
	}
	if (t->too_big) {
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%lld bytes)",
		      s->srv->set.max_message_size);
		txn_end(s);
		s->state = ST_READY;
		return;
	}
	reply(s, "250 2.0.0 %lld octets received", t->size);
}

static void cmd_rset(struct smtp_session *s, const char *arg, size_t len)
{
	txn_end(s);
	reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtp_session *s, const char *arg, size_t len)
{
	reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtp_session *s, const char *arg, size_t len)
{
	reply(s, "221 2.0.0 %s closing connection", s->srv->hostname);
	session_close_after_reply(s, "quit");
}

static void cmd_vrfy(struct smtp_session *s, const char *arg, size_t len)
{
	/* RFC 5321 3.5.3: 252 so that address harvesting learns nothing. */
	reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtp_session *s, const char *arg, size_t len)
{
	reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP "
		 "STARTTLS AUTH");
}

static void cmd_starttls(struct smtp_session *s, const char *arg, size_t len)
{
	if (len > 0) {
		reply(s, "501 5.5.4 Syntax: STARTTLS (no argument)");
		return;
	}
	if (s->tls) {
		reply(s, "503 5.5.1 TLS is already active");
		return;
	}
	if (s->srv->ssl_ctx == NULL) {
		reply(s, "454 4.7.0 TLS not available");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	/* RFC 3207 4.2 / DESIGN: whatever the client sent after STARTTLS in cleartext is
	 * thrown away; the switch happens once the 220 is flushed. */
	s->starttls_pending = 1;
	evbuffer_drain(bufferevent_get_input(s->bev), evbuffer_get_length(bufferevent_get_input(s->bev)));
}

static int auth_throttled(struct smtp_session *s, const char *user)
{
	struct smtp_server *srv = s->srv;
	char key[COUNTER_KEY_MAX];
	time_t now = time(NULL);
	snprintf(key, sizeof(key), "ip:%s", s->addr);
	if (counter_get(srv->auth_failures, key, now, srv->set.auth_failure_window) >=
	    srv->set.auth_max_failures)
		return 1;
	if (user != NULL) {
		snprintf(key, sizeof(key), "user:%s", user);
		for (char *p = key; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		if (counter_get(srv->auth_failures, key, now, srv->set.auth_failure_window) >=
		    srv->set.auth_max_failures)
			return 1;
	}
	return 0;
}

static void auth_record_failure(struct smtp_session *s, const char *user)
{
	struct smtp_server *srv = s->srv;
	char key[COUNTER_KEY_MAX];
	time_t now = time(NULL);
	snprintf(key, sizeof(key), "ip:%s", s->addr);
	counter_add(srv->auth_failures, key, 1, now, srv->set.auth_failure_window);
	snprintf(key, sizeof(key), "user:%s", user);
	for (char *p = key; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	counter_add(srv->auth_failures, key, 1, now, srv->set.auth_failure_window);
}

static void auth_start(struct smtp_session *s, const char *authzid, const char *user,
		       const char *password)
{
	s->mode = MODE_COMMAND;
	if (auth_throttled(s, user)) {
		char q[300];
		session_log(s, LOG_LEVEL_WARN, "event=auth result=throttled user=%s",
			    log_quote(q, sizeof(q), user, strlen(user)));
		reply(s, "454 4.7.0 Too many failed logins, try again later");
		return;
	}
	snprintf(s->auth_pending_user, sizeof(s->auth_pending_user), "%s", user);
	if (authzid[0] != '\0' && strcasecmp(authzid, user) != 0) {
		/* Acting for another identity is not offered: same reply as a bad password. */
		auth_record_failure(s, user);
		reply(s, "535 5.7.8 Authentication credentials invalid");
		return;
	}
	s->busy = 1;
	s->srv->cb.auth(s->srv->cb.ctx, s, user, password);
}

void smtp_session_auth_done(struct smtp_session *s, int ok)
{
	s->busy = 0;
	if (s->dead) {
		session_free(s);
		return;
	}
	char q[300];
	log_quote(q, sizeof(q), s->auth_pending_user, strlen(s->auth_pending_user));
	if (ok) {
		snprintf(s->auth_user, sizeof(s->auth_user), "%s", s->auth_pending_user);
		s->info.auth_user = s->auth_user;
		session_log(s, LOG_LEVEL_INFO, "event=auth result=ok user=%s", q);
		reply(s, "235 2.7.0 Authentication successful");
	} else {
		auth_record_failure(s, s->auth_pending_user);
		session_log(s, LOG_LEVEL_WARN, "event=auth result=failed user=%s ip=%s", q, s->addr);
		reply(s, "535 5.7.8 Authentication credentials invalid");
	}
	s->auth_pending_user[0] = '\0';
	session_process(s);
}

static void cmd_auth(struct smtp_session *s, const char *arg, size_t len)
{
	if (s->role == SMTP_ROLE_MX) {
		reply(s, "502 5.5.1 AUTH is not offered on this port; mail clients submit on port 587 "
			 "(STARTTLS) or 465 (TLS)");
		return;
	}
	if (s->auth_user[0] != '\0') {
		reply(s, "503 5.5.1 Already authenticated");
		return;
	}
	if (s->state & (ST_MAIL | ST_RCPT)) {
		reply(s, "503 5.5.1 AUTH is not allowed during a mail transaction");
		return;
	}
	if (!s->tls && !(s->info.loopback && s->srv->set.auth_plaintext_loopback)) {
		reply(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	if (auth_throttled(s, NULL)) {
		session_log(s, LOG_LEVEL_WARN, "event=auth result=throttled ip=%s", s->addr);
		reply(s, "454 4.7.0 Too many failed logins, try again later");
		return;
	}
	size_t m = 0;
	while (m < len && arg[m] != ' ')
		m++;
	const char *ir = arg + m;
	size_t irlen = len - m;
	while (irlen > 0 && *ir == ' ') {
		ir++;
		irlen--;
	}
	struct slice mech = { arg, m };
	if (m == 0) {
		reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	if (slice_eq_ci(mech, "PLAIN")) {
		if (irlen == 0) {
			s->mode = MODE_AUTH_PLAIN;
			reply(s, "334 ");
			return;
		}
		char authzid[256], user[256], pass[256];
		const char *error = NULL;
		if (irlen == 1 && ir[0] == '=') {
			reply(s, "501 5.5.2 Empty PLAIN response");
			return;
		}
		if (sasl_plain_decode(ir, irlen, authzid, user, pass, &error) < 0) {
			reply(s, "501 5.5.2 Cannot decode AUTH PLAIN response");
			return;
		}
		auth_start(s, authzid, user, pass);
		explicit_bzero(pass, sizeof(pass));
	} else if (slice_eq_ci(mech, "LOGIN")) {
		if (irlen == 0) {
			s->mode = MODE_AUTH_LOGIN_USER;
			reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
			return;
		}
		const char *error = NULL;
		if (sasl_login_decode(ir, irlen, s->auth_pending_user, &error) < 0) {
			reply(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
			return;
		}
		s->mode = MODE_AUTH_LOGIN_PASS;
		reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
	} else {
		reply(s, "504 5.5.4 Unrecognized authentication type (use PLAIN or LOGIN)");
	}
}

/* A line while a SASL exchange waits for the client's response. */
static void auth_response(struct smtp_session *s, const char *line, size_t len)
{
	enum smtp_mode mode = s->mode;
	s->mode = MODE_COMMAND;
	if (len == 1 && line[0] == '*') {
		s->auth_pending_user[0] = '\0';
		reply(s, "501 5.0.0 Authentication cancelled");
		return;
	}
	const char *error = NULL;
	if (mode == MODE_AUTH_PLAIN) {
		char authzid[256], user[256], pass[256];
		if (sasl_plain_decode(line, len, authzid, user, pass, &error) < 0) {
			reply(s, "501 5.5.2 Cannot decode AUTH PLAIN response");
			return;
		}
		auth_start(s, authzid, user, pass);
		explicit_bzero(pass, sizeof(pass));
	} else if (mode == MODE_AUTH_LOGIN_USER) {
		if (sasl_login_decode(line, len, s->auth_pending_user, &error) < 0) {
			reply(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
			return;
		}
		s->mode = MODE_AUTH_LOGIN_PASS;
		reply(s, "334 UGFzc3dvcmQ6");
	} else {
		char pass[256], user[256];
		if (sasl_login_decode(line, len, pass, &error) < 0) {
			reply(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
			return;
		}
		snprintf(user, sizeof(user), "%s", s->auth_pending_user);
		auth_start(s, "", user, pass);
		explicit_bzero(pass, sizeof(pass));
	}
}

static const struct smtp_cmd smtp_cmds[] = {
	/* verb        handler        states                 reply when in another state */
	{ "EHLO",     cmd_ehlo,      ST_ANY,                NULL },
	{ "HELO",     cmd_helo,      ST_ANY,                NULL },
	{ "MAIL",     cmd_mail,      ST_READY,              NULL },
	{ "RCPT",     cmd_rcpt,      ST_MAIL | ST_RCPT,     "503 5.5.1 Need MAIL before RCPT" },
	{ "DATA",     cmd_data,      ST_MAIL | ST_RCPT,     "503 5.5.1 Need MAIL and RCPT before DATA" },
	{ "BDAT",     cmd_bdat,      ST_ANY,                NULL },
	{ "RSET",     cmd_rset,      ST_ANY,                NULL },
	{ "NOOP",     cmd_noop,      ST_ANY,                NULL },
	{ "QUIT",     cmd_quit,      ST_ANY,                NULL },
	{ "VRFY",     cmd_vrfy,      ST_ANY,                NULL },
	{ "HELP",     cmd_help,      ST_ANY,                NULL },
	{ "STARTTLS", cmd_starttls,  ST_GREETED | ST_READY, "503 5.5.1 STARTTLS is not allowed during a mail transaction" },
	{ "AUTH",     cmd_auth,      ST_READY,              "503 5.5.1 AUTH is not allowed during a mail transaction" },
};

static void session_command(struct smtp_session *s, const char *line, size_t len)
{
	char verb[16];
	const char *arg;
	size_t arg_len;
	s->commands++;
	s->verb = "-";
	if (len + 2 > SMTP_LINE_MAX) {
		reply(s, "500 5.5.2 Line too long (at most %d octets)", SMTP_LINE_MAX);
		return;
	}
	if (smtp_parse_command(line, len, verb, &arg, &arg_len) < 0) {
		reply(s, "500 5.5.2 Syntax error, command unrecognized");
		return;
	}
	for (size_t i = 0; i < sizeof(smtp_cmds) / sizeof(smtp_cmds[0]); i++) {
		const struct smtp_cmd *c = &smtp_cmds[i];
		if (strcmp(c->verb, verb) != 0)
			continue;
		s->verb = c->verb;
		if (!(c->states & s->state)) {
			if (s->state == ST_GREETED)
				reply(s, "503 5.5.1 Send EHLO first");
			else if (c->bad_state_reply)
				reply(s, "%s", c->bad_state_reply);
			else if (s->state & (ST_MAIL | ST_RCPT))
				reply(s, "503 5.5.1 Nested MAIL command");
			else
				reply(s, "503 5.5.1 Bad sequence of commands");
			return;
		}
		c->handler(s, arg, arg_len);
		return;
	}
	reply(s, "500 5.5.1 Command unrecognized");
}

/* ---- input ------------------------------------------------------------------------ */

static int session_can_work(struct smtp_session *s)
{
	if (s->busy || s->closing || s->dead || s->starttls_pending || s->bev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(s->bev)) < SMTP_OUTPUT_MAX;
}

static void session_drain_check(struct smtp_session *s)
{
	if (s->srv->draining && !s->srv->drain_graceful && !s->closing && !s->busy &&
	    s->mode == MODE_COMMAND &&
	    !(s->state & (ST_MAIL | ST_RCPT))) {
		reply(s, "421 4.3.2 %s Service shutting down, closing connection", s->srv->hostname);
		session_close_after_reply(s, "shutdown");
	}
}

static void session_process(struct smtp_session *s)
{
	while (session_can_work(s)) {
		struct evbuffer *in = bufferevent_get_input(s->bev);
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			break;
		if (avail > SMTP_READ_HIGH_WATER)
			avail = SMTP_READ_HIGH_WATER;
		const char *data = (const char *)evbuffer_pullup(in, (ssize_t)avail);
		if (data == NULL)
			break;
		if (!s->got_bytes) {
			s->got_bytes = 1;
			if ((unsigned char)data[0] == 0x16 && !s->tls) {
				/* A TLS ClientHello on a cleartext port. */
				session_log(s, LOG_LEVEL_WARN,
					    "event=tls_mismatch hint=\"client started TLS on a "
					    "cleartext/STARTTLS port; use port 465 for TLS from the "
					    "first byte, or STARTTLS here\"");
				s->close_reason = "tls_on_plain_port";
				session_free(s);
				return;
			}
		}
		if (s->mode == MODE_DATA) {
			size_t consumed = 0, out_len = 0;
			enum data_status st = data_decoder_feed(&s->txn.dec, data, avail,
								s->srv->scratch, &consumed, &out_len);
			txn_body(s, s->srv->scratch, out_len);
			evbuffer_drain(in, consumed);
			if (st == DATA_DONE) {
				s->mode = MODE_COMMAND;
				txn_finish_message(s);
			}
			continue;
		}
		if (s->mode == MODE_BDAT) {
			size_t n = avail;
			if ((long long)n > s->bdat_remaining)
				n = (size_t)s->bdat_remaining;
			if (!s->bdat_discard) {
				size_t consumed = 0, out_len = 0;
				data_decoder_feed(&s->txn.dec, data, n, s->srv->scratch, &consumed,
						  &out_len);
				txn_body(s, s->srv->scratch, out_len);
			}
			evbuffer_drain(in, n);
			s->bdat_remaining -= (long long)n;
			if (s->bdat_remaining == 0)
				bdat_chunk_done(s);
			continue;
		}
		const char *line;
		size_t line_len, consumed = 0;
		s->lr.limit = s->mode == MODE_COMMAND ? SMTP_LINE_MAX : SMTP_AUTH_LINE_MAX;
		enum smtp_line_status ls = smtp_line_reader_next(&s->lr, data, avail, &line, &line_len,
								 &consumed);
		if (ls == SMTP_LINE_NEED_MORE) {
			evbuffer_drain(in, consumed);
			if (consumed == 0)
				break;
			continue;
		}
		if (ls == SMTP_LINE_TOO_LONG) {
			s->verb = "-";
			if (s->mode != MODE_COMMAND) {
				s->mode = MODE_COMMAND;
				s->auth_pending_user[0] = '\0';
			}
			reply(s, "500 5.5.2 Line too long (at most %d octets)", SMTP_LINE_MAX);
			evbuffer_drain(in, consumed);
		} else if (ls == SMTP_LINE_BARE_LF) {
			s->verb = "-";
			reply(s, "500 5.5.2 Line must end with CRLF (bare LF received)");
			evbuffer_drain(in, consumed);
		} else if (s->mode == MODE_COMMAND) {
			/* The line points into the input buffer: handle it before draining. */
			session_command(s, line, line_len);
			if (!s->starttls_pending)
				evbuffer_drain(in, consumed);
		} else {
			auth_response(s, line, line_len);
			explicit_bzero((void *)line, line_len);
			evbuffer_drain(in, consumed);
		}
		if (s->errors >= SMTP_MAX_ERRORS && !s->closing) {
			reply(s, "421 4.7.0 %s Too many errors, closing connection", s->srv->hostname);
			session_close_after_reply(s, "too_many_errors");
		}
		session_drain_check(s);
	}
	if (s->bev == NULL || s->dead)
		return;
	session_drain_check(s);
	/* Time budget for what we wait for next. */
	struct timeval tv = { s->mode == MODE_DATA || s->mode == MODE_BDAT ? s->srv->set.data_timeout
									     : s->srv->set.command_timeout, 0 };
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	if (s->closing) {
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
			session_free(s);
		return;
	}
	if (s->busy || s->starttls_pending ||
	    evbuffer_get_length(bufferevent_get_output(s->bev)) >= SMTP_OUTPUT_MAX)
		bufferevent_disable(s->bev, EV_READ);
	else
		bufferevent_enable(s->bev, EV_READ);
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	session_process(arg);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	/* Called when the output buffer is empty (low watermark 0). */
	if (s->closing) {
		session_free(s);
		return;
	}
	if (s->starttls_pending) {
		session_start_tls(s);
		return;
	}
	session_process(s);
}

static void session_tls_established(struct smtp_session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	const char *v = ssl ? SSL_get_version(ssl) : "?";
	const SSL_CIPHER *c = ssl ? SSL_get_current_cipher(ssl) : NULL;
	int bits = c ? SSL_CIPHER_get_bits(c, NULL) : 0;
	snprintf(s->tls_desc, sizeof(s->tls_desc), "version=%s cipher=%s bits=%d", v,
		 c ? SSL_CIPHER_get_name(c) : "?", bits);
	s->tls = 1;
	s->info.tls = 1;
	session_log(s, LOG_LEVEL_INFO, "event=tls %s", s->tls_desc);
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		session_tls_established(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->closing) {
			session_free(s);
			return;
		}
		reply(s, "421 4.4.2 %s Error: timeout exceeded", s->srv->hostname);
		session_close_after_reply(s, "timeout");
		/* Give the reply a bounded chance to leave. */
		struct timeval tv = { 5, 0 };
		bufferevent_set_timeouts(s->bev, NULL, &tv);
		bufferevent_enable(s->bev, EV_WRITE);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (e != 0 && !s->tls) {
			char buf[256];
			ERR_error_string_n(e, buf, sizeof(buf));
			const char *hint = "";
			if (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST ||
			    ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER ||
			    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
				hint = " hint=\"the client did not start TLS: cleartext on an "
				       "implicit-TLS port? (use 587 with STARTTLS)\"";
			session_log(s, LOG_LEVEL_WARN, "event=tls_failed error=\"%s\"%s", buf, hint);
			s->close_reason = "tls_failed";
		} else if (s->close_reason == NULL) {
			s->close_reason = (what & BEV_EVENT_EOF) ? "eof" : "error";
		}
	} else if (s->close_reason == NULL) {
		s->close_reason = "eof";
	}
	session_free(s);
}

static void session_setup_bev(struct smtp_session *s)
{
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_READ_HIGH_WATER);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	struct timeval tv = { s->srv->set.command_timeout, 0 };
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

static struct bufferevent *tls_bev_new(struct smtp_session *s)
{
	SSL *ssl = SSL_new(s->srv->ssl_ctx);
	if (ssl == NULL)
		return NULL;
	struct bufferevent *bev = bufferevent_openssl_socket_new(
		s->srv->base, s->fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static void session_start_tls(struct smtp_session *s)
{
	s->starttls_pending = 0;
	/* The cleartext bufferevent goes, with anything it had read; the socket stays. */
	bufferevent_free(s->bev);
	s->bev = tls_bev_new(s);
	if (s->bev == NULL) {
		s->close_reason = "tls_setup_failed";
		session_free(s);
		return;
	}
	/* RFC 3207 4.2: forget what was learnt before TLS. */
	txn_end(s);
	s->state = ST_GREETED;
	s->helo[0] = '\0';
	s->esmtp = 0;
	memset(&s->lr, 0, sizeof(s->lr));
	session_setup_bev(s);
}

/* ---- accept and free ----------------------------------------------------------------- */

static int sa_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return 1;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return in6->sin6_addr.s6_addr[12] == 127;
	}
	return 0;
}

static void refuse_connection(evutil_socket_t fd, const char *line)
{
	ssize_t w = send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w;
	close(fd);
}

static void listener_accept_cb(struct evconnlistener *evl, evutil_socket_t fd,
			       struct sockaddr *sa, int salen, void *arg)
{
	struct smtp_listener *l = arg;
	struct smtp_server *srv = l->srv;
	char addr[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, addr, sizeof(addr));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof(addr));
	char key[COUNTER_KEY_MAX];
	snprintf(key, sizeof(key), "conn:%s", addr);
	if (srv->n_sessions >= srv->set.max_connections) {
		log_warn("smtp", "event=refused ip=%s reason=max_connections", addr);
		refuse_connection(fd, "421 4.3.2 Too many connections, try again later\r\n");
		return;
	}
	if (counter_get(srv->per_ip, key, 0, 0) >= srv->set.max_connections_per_ip) {
		log_warn("smtp", "event=refused ip=%s reason=max_connections_per_ip", addr);
		refuse_connection(fd, "421 4.7.0 Too many connections from your address\r\n");
		return;
	}
	struct smtp_session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		refuse_connection(fd, "421 4.3.0 Out of memory\r\n");
		return;
	}
	counter_add(srv->per_ip, key, 1, 0, 0);
	s->srv = srv;
	s->fd = fd;
	s->role = l->role;
	s->state = ST_GREETED;
	s->start = time(NULL);
	snprintf(s->id, sizeof(s->id), "%x%06lx", (unsigned)getpid(), srv->next_sid++ & 0xffffff);
	snprintf(s->addr, sizeof(s->addr), "%s", addr);
	snprintf(s->listener, sizeof(s->listener), "%s", l->name);
	if ((size_t)salen <= sizeof(s->sa))
		memcpy(&s->sa, sa, (size_t)salen);
	s->info.id = s->id;
	s->info.role = s->role;
	s->info.client_addr = s->addr;
	s->info.client_sa = (const struct sockaddr *)&s->sa;
	s->info.loopback = sa_is_loopback(sa);
	s->info.helo = s->helo;
	s->info.auth_user = NULL;

	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	evutil_make_socket_nonblocking(fd);
	if (l->role == SMTP_ROLE_SUBMISSIONS)
		s->bev = tls_bev_new(s);
	else
		s->bev = bufferevent_socket_new(srv->base, fd, 0);
	if (s->bev == NULL) {
		counter_add(srv->per_ip, key, -1, 0, 0);
		refuse_connection(fd, "421 4.3.0 Cannot set up the connection\r\n");
		free(s);
		return;
	}
	s->next = srv->sessions;
	if (srv->sessions)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->n_sessions++;
	session_log(s, LOG_LEVEL_INFO, "event=connect ip=%s listener=%s role=%s", s->addr, l->name,
		    l->role == SMTP_ROLE_MX ? "smtp" : l->role == SMTP_ROLE_SUBMISSION ? "submission"
									   : "submissions");
	session_setup_bev(s);
	/* With implicit TLS the greeting waits in the buffer until the handshake is done. */
	char greet[300];
	int n = snprintf(greet, sizeof(greet), "220 %s ESMTP tern\r\n", srv->hostname);
	session_write(s, greet, (size_t)n);
}

static void session_free(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	if (s->busy) {
		/* A callback still holds s: finish when it completes. */
		s->dead = 1;
		session_close_conn(s);
		return;
	}
	session_log(s, LOG_LEVEL_INFO, "event=disconnect reason=%s duration=%ld commands=%d "
		    "messages=%d errors=%d", s->close_reason ? s->close_reason : "closed",
		    (long)(time(NULL) - s->start), s->commands, s->messages, s->errors);
	txn_end(s);
	session_close_conn(s);
	char key[COUNTER_KEY_MAX];
	snprintf(key, sizeof(key), "conn:%s", s->addr);
	counter_add(srv->per_ip, key, -1, 0, 0);
	if (s->prev)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	srv->n_sessions--;
	free(s);
	if (srv->draining && srv->n_sessions == 0 && srv->drain_done != NULL) {
		void (*done)(void *) = srv->drain_done;
		srv->drain_done = NULL;
		done(srv->drain_arg);
	}
}

/* ---- server ------------------------------------------------------------------------- */

struct smtp_server *smtp_server_new(struct event_base *base, const struct smtp_settings *set,
				    SSL_CTX *ssl_ctx, const struct smtp_callbacks *cb)
{
	struct smtp_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return NULL;
	srv->base = base;
	srv->set = *set;
	snprintf(srv->hostname, sizeof(srv->hostname), "%s", set->hostname);
	srv->set.hostname = srv->hostname;
	srv->ssl_ctx = ssl_ctx;
	srv->cb = *cb;
	srv->per_ip = counter_table_new(65536);
	srv->auth_failures = set->auth_failures;
	if (srv->auth_failures == NULL) {
		srv->auth_failures = counter_table_new(16384);
		srv->own_auth_failures = 1;
	}
	if (srv->per_ip == NULL || srv->auth_failures == NULL) {
		counter_table_free(&srv->per_ip);
		if (srv->own_auth_failures)
			counter_table_free(&srv->auth_failures);
		free(srv);
		return NULL;
	}
	return srv;
}

int smtp_server_listen(struct smtp_server *srv, int fd, enum smtp_role role, const char *name)
{
	struct smtp_listener *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -1;
	l->srv = srv;
	l->role = role;
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->evl = evconnlistener_new(srv->base, listener_accept_cb, l,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (l->evl == NULL) {
		free(l);
		return -1;
	}
	l->next = srv->listeners;
	srv->listeners = l;
	return 0;
}

/* Closes the listening sockets; with take_pending, the connections the kernel has
 * already queued on them are accepted first (closing would reset them). */
static void close_listeners(struct smtp_server *srv, int take_pending)
{
	while (srv->listeners) {
		struct smtp_listener *l = srv->listeners;
		srv->listeners = l->next;
		evconnlistener_disable(l->evl);
		for (int i = 0; take_pending && i < 10000; i++) {
			struct sockaddr_storage ss;
			socklen_t sslen = sizeof(ss);
			int fd = accept4(evconnlistener_get_fd(l->evl), (struct sockaddr *)&ss, &sslen,
					 SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd < 0)
				break;
			listener_accept_cb(l->evl, fd, (struct sockaddr *)&ss, (int)sslen, l);
		}
		evconnlistener_free(l->evl);
		free(l);
	}
}

void smtp_server_drain(struct smtp_server *srv, int graceful, void (*on_done)(void *arg),
		       void *arg)
{
	srv->draining = 1;
	srv->drain_graceful = graceful;
	srv->drain_done = on_done;
	srv->drain_arg = arg;
	close_listeners(srv, 1);
	struct smtp_session *s = srv->sessions, *next;
	for (; s != NULL; s = next) {
		next = s->next;
		session_drain_check(s);
		if (s->closing && s->bev &&
		    evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
			session_free(s);
	}
	if (srv->n_sessions == 0 && srv->drain_done != NULL) {
		srv->drain_done = NULL;
		on_done(arg);
	}
}

void smtp_server_free(struct smtp_server **srvp)
{
	struct smtp_server *srv = *srvp;
	if (srv == NULL)
		return;
	close_listeners(srv, 0);
	srv->drain_done = NULL;
	int busy = 0;
	struct smtp_session *s = srv->sessions, *next;
	for (; s != NULL; s = next) {
		next = s->next;
		if (s->close_reason == NULL)
			s->close_reason = "shutdown";
		if (s->busy)
			busy++;
		session_free(s); /* a busy one is only disconnected: its callback frees it */
	}
	*srvp = NULL;
	if (busy > 0)
		return; /* the pending callbacks still use srv; the process is exiting anyway */
	counter_table_free(&srv->per_ip);
	if (srv->own_auth_failures)
		counter_table_free(&srv->auth_failures);
	free(srv);
}

int smtp_server_session_count(const struct smtp_server *srv)
{
	return srv->n_sessions;
}
