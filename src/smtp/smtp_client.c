/* The outbound SMTP client engine.
 *
 * One connection, one state machine (client_states[] below: the name, the RFC 5321
 * 4.5.3.2 timeout that applies while in the state, and the reply handler).  Bytes come
 * from a libevent bufferevent (plain, or OpenSSL after STARTTLS or for implicit TLS);
 * replies are cut out by smtp_reply.c and matched against the commands still waiting
 * for one (c->expect), so that a reply no command asked for is caught as the protocol
 * violation it is instead of being taken as the answer to the next command.
 *
 * Decisions worth knowing (see also smtp_client.h):
 * - Opportunistic TLS (RFC 7435): a server without STARTTLS, or one that answers it
 *   with 4xx/5xx, gets the mail in cleartext on the same connection.  A STARTTLS
 *   handshake that fails leaves the connection unusable (neither side knows what the
 *   other read), so the connection fails with retry_without_tls set and the caller
 *   retries on a new connection in cleartext, as Postfix and Exim do; the engine
 *   never does this by itself, so a policy that requires TLS cannot be downgraded by a
 *   forged failure.  A certificate that does not verify never fails opportunistic
 *   mode (it is still better than cleartext); it is logged and kept in info.
 * - 8-bit body without 8BITMIME: sent as it is, without BODY=, with a log line.
 *   RFC 6152 3 allows converting or bouncing; converting means rewriting MIME (and
 *   breaks DKIM signatures), bouncing loses mail that practically every server of
 *   today accepts anyway; sending as is is what Exim and Postfix do for undeclared
 *   8-bit content.
 * - Bare LF in replies is accepted (see smtp_reply.c); in our own output a bare LF or
 *   CR of the stored message becomes CRLF, so that we never send what we refuse
 *   ourselves as smuggling (RFC 5321 2.3.8, 4.1.1.4).
 * - The end-of-data race (RFC 1047): a connection lost after "." was sent and before
 *   its reply leaves each accepted recipient with a temporary failure; the message
 *   may then be delivered twice, which SMTP accepts as the lesser evil. */
#include "smtp/smtp_client.h"

#include "base/log.h"
#include "msg/base64.h"
#include "smtp/smtp_parse.h"
#include "smtp/smtp_reply.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CLIENT_SUBSYS          "smtp-client"
#define CLIENT_READ_HIGH_WATER (64 * 1024)               /* input buffered, at most */
#define CLIENT_REPLY_WINDOW    (2 * SMTP_REPLY_LINE_MAX) /* holds any whole line */
#define CLIENT_BODY_CHUNK      (16 * 1024)               /* read from the message file at a time */
#define CLIENT_BODY_QUEUE      (64 * 1024)               /* queued output while sending the body */
#define CLIENT_BODY_LOW_WATER  (16 * 1024)               /* refill when the output drains below */
#define CLIENT_CMD_MAX         4096                      /* a command line we build */
#define CLIENT_NAME_MAX        255
#define CLIENT_ADDR_MAX        (ADDR_PATH_MAX * 4) /* UTF-8 addresses of SMTPUTF8 */
#define CLIENT_QUIT_WAIT_MAX   30                  /* seconds for the reply to QUIT */

/* RFC 5321 4.5.3.2 */
#define RFC_CONNECT_TIMEOUT  300
#define RFC_GREETING_TIMEOUT 300
#define RFC_COMMAND_TIMEOUT  300
#define RFC_DATA_TIMEOUT     180
#define RFC_DATA_END_TIMEOUT 600

enum client_state {
	CS_CONNECTING,  /* TCP connect in progress */
	CS_TLS_CONNECT, /* implicit TLS handshake */
	CS_GREETING,
	CS_EHLO,
	CS_HELO,
	CS_STARTTLS,      /* STARTTLS sent, waiting for 220 */
	CS_TLS_HANDSHAKE, /* after 220 to STARTTLS */
	CS_AUTH,
	CS_READY,    /* idle, in sync: a message can be sent */
	CS_TXN,      /* replies to MAIL, RCPTs, DATA */
	CS_BODY,     /* sending the message */
	CS_DATA_END, /* waiting for the reply to "." */
	CS_RSET,
	CS_QUIT,
	CS_DONE, /* failed or closed: no more protocol */
};

enum client_timeout { TO_NONE, TO_CONNECT, TO_GREETING, TO_COMMAND, TO_DATA, TO_DATA_END, TO_QUIT };

/* How a failure is classified, which picks the code of ours a recipient gets. */
enum client_fail_kind {
	FAIL_NET,   /* timeout, reset, EOF, TLS: 451 4.4.2 */
	FAIL_PROTO, /* the server broke the protocol: 451 4.5.0 */
	FAIL_LOCAL, /* our side (reading the message): 451 4.3.0 */
	FAIL_REPLY, /* a well-formed refusal: the connection stays usable for QUIT */
};

enum auth_step { AUTH_PLAIN_SENT, AUTH_LOGIN_SENT, AUTH_LOGIN_USER_SENT, AUTH_LOGIN_PASS_SENT };

enum client_deferred { DEFER_NONE, DEFER_FAILED, DEFER_DONE };

struct smtp_client {
	struct event_base *base;
	enum client_state state;
	evutil_socket_t fd;
	struct bufferevent *bev;
	struct event *ev_connect;
	struct event *ev_timer;
	struct event *ev_defer;
	struct sockaddr_storage sa;
	socklen_t salen;

	struct smtp_client_settings set; /* strings point into the buffers below */
	char helo[CLIENT_NAME_MAX + 1];
	char tls_name[CLIENT_NAME_MAX + 1];
	char auth_user[256];
	char auth_password[256];
	int tls_name_is_ip;

	smtp_client_event_fn *cb;
	void *cb_arg;

	struct smtp_reply_parser rp;
	struct smtp_client_info info;
	struct smtp_client_failure failure;

	int expect; /* replies owed by the server for what we sent */
	int tls_active;
	int starttls_done; /* tried (successfully or refused): never twice */
	enum auth_step auth_step;
	int ready_sent; /* READY was reported */
	int holds;      /* entry points on the stack: free only at 0 */
	int freed;      /* free once holds reaches 0 */
	int quitting;   /* smtp_client_quit(): no callbacks, free after QUIT */
	enum client_deferred deferred;
	int deferred_result;

	/* The transaction; msg != NULL while one is under way (or its done pending). */
	struct smtp_client_msg *msg;
	smtp_client_done_fn *done;
	void *done_arg;
	int *idx; /* indices of the rcpts sent, in order */
	unsigned char *accepted;
	int n_idx;
	int n_sent; /* commands written: 0 MAIL, 1..n_idx RCPT, n_idx + 1 DATA */
	int n_replied;
	int mail_ok;
	int n_accepted;
	int dot_only; /* DATA was accepted without recipients: "." alone (RFC 2920 3.1) */

	/* The body. */
	off_t body_pos;
	int stuff_bol;
	int stuff_cr;
	int body_queued; /* the final "." is in the output */
	char body_in[CLIENT_BODY_CHUNK];
	char body_out[2 * CLIENT_BODY_CHUNK + 8];
};

static void on_greeting(struct smtp_client *c, const struct smtp_reply *r);
static void on_ehlo(struct smtp_client *c, const struct smtp_reply *r);
static void on_helo(struct smtp_client *c, const struct smtp_reply *r);
static void on_starttls(struct smtp_client *c, const struct smtp_reply *r);
static void on_auth(struct smtp_client *c, const struct smtp_reply *r);
static void on_txn(struct smtp_client *c, const struct smtp_reply *r);
static void on_data_end(struct smtp_client *c, const struct smtp_reply *r);
static void on_rset(struct smtp_client *c, const struct smtp_reply *r);
static void on_quit(struct smtp_client *c, const struct smtp_reply *r);

/* The state table: what each state waits for, for how long, and who reads its
 * replies.  A state without a handler takes no replies (any is unsolicited). */
/* clang-format off */
static const struct client_state_def {
	const char *name;
	enum client_timeout timeout;
	const char *stage; /* for failures and logs */
	void (*on_reply)(struct smtp_client *c, const struct smtp_reply *r);
} client_states[] = {
	/* state               name            timeout       stage          replies */
	[CS_CONNECTING] =     { "connecting",   TO_CONNECT,   "connect",     NULL },
	[CS_TLS_CONNECT] =    { "tls-connect",  TO_CONNECT,   "TLS",         NULL },
	[CS_GREETING] =       { "greeting",     TO_GREETING,  "greeting",    on_greeting },
	[CS_EHLO] =           { "ehlo",         TO_COMMAND,   "EHLO",        on_ehlo },
	[CS_HELO] =           { "helo",         TO_COMMAND,   "HELO",        on_helo },
	[CS_STARTTLS] =       { "starttls",     TO_COMMAND,   "STARTTLS",    on_starttls },
	[CS_TLS_HANDSHAKE] =  { "tls",          TO_COMMAND,   "TLS",         NULL },
	[CS_AUTH] =           { "auth",         TO_COMMAND,   "AUTH",        on_auth },
	[CS_READY] =          { "ready",        TO_NONE,      "idle",        NULL },
	[CS_TXN] =            { "transaction",  TO_COMMAND,   "MAIL",        on_txn },
	[CS_BODY] =           { "body",         TO_DATA,      "data",        on_data_end },
	[CS_DATA_END] =       { "data-end",     TO_DATA_END,  "end-of-data", on_data_end },
	[CS_RSET] =           { "rset",         TO_COMMAND,   "RSET",        on_rset },
	[CS_QUIT] =           { "quit",         TO_QUIT,      "QUIT",        on_quit },
	[CS_DONE] =           { "done",         TO_NONE,      "-",           NULL },
};
/* clang-format on */

static const char *const tls_mode_names[] = {"none", "opportunistic", "required", "implicit"};

static unsigned long client_next_id;

/* ---- logging -------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void
client_log(struct smtp_client *c, enum log_level level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, CLIENT_SUBSYS, "cid=%s remote=%s %s", c->info.id, c->info.remote_addr, line);
}

/* Where the transaction is, for logs and failures. */
static const char *client_stage(const struct smtp_client *c)
{
	if (c->state == CS_TXN) {
		if (c->n_replied == 0)
			return "MAIL";
		return c->n_replied <= c->n_idx ? "RCPT" : "DATA";
	}
	return client_states[c->state].stage;
}

static void client_log_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	char q[SMTP_REPLY_TEXT_MAX + 64], rc[600];
	rc[0] = '\0';
	if (c->state == CS_TXN && c->n_replied >= 1 && c->n_replied <= c->n_idx) {
		const char *a = c->msg->rcpts[c->idx[c->n_replied - 1]].addr;
		char qa[CLIENT_ADDR_MAX * 4 + 8];
		snprintf(rc, sizeof(rc), " rcpt=<%s>", log_quote(qa, sizeof(qa), a, strlen(a)));
	}
	client_log(c, LOG_LEVEL_INFO, "event=reply stage=%s%s code=%d enhanced=%s text=%s",
	           client_stage(c), rc, r->code, r->enhanced[0] ? r->enhanced : "-",
	           log_quote(q, sizeof(q), r->text, r->text_len));
}

/* ---- state, timers, writing ------------------------------------------------------------ */

static int client_timeout_seconds(const struct smtp_client *c, enum client_timeout t)
{
	switch (t) {
	case TO_CONNECT:
		return c->set.connect_timeout;
	case TO_GREETING:
		return c->set.greeting_timeout;
	case TO_COMMAND:
		return c->set.command_timeout;
	case TO_DATA:
		return c->set.data_timeout;
	case TO_DATA_END:
		return c->set.data_end_timeout;
	case TO_QUIT:
		return c->set.command_timeout < CLIENT_QUIT_WAIT_MAX ? c->set.command_timeout
		                                                     : CLIENT_QUIT_WAIT_MAX;
	case TO_NONE:
	default:
		return 0;
	}
}

/* (Re)starts the timer of the current state: the budget for what we wait for next. */
static void client_arm_timer(struct smtp_client *c)
{
	int secs = client_timeout_seconds(c, client_states[c->state].timeout);
	if (secs <= 0) {
		evtimer_del(c->ev_timer);
		return;
	}
	struct timeval tv = {secs, 0};
	evtimer_add(c->ev_timer, &tv);
}

static void client_set_state(struct smtp_client *c, enum client_state st)
{
	if (c->state != st)
		client_log(c, LOG_LEVEL_DEBUG, "event=state from=%s to=%s",
		           client_states[c->state].name, client_states[st].name);
	c->state = st;
	client_arm_timer(c);
}

/* Writes one command line; every command earns one reply.  verb is what the debug log
 * shows (never an AUTH payload). */
__attribute__((format(printf, 3, 4))) static void client_cmd(struct smtp_client *c,
                                                             const char *verb, const char *fmt, ...)
{
	char line[CLIENT_CMD_MAX + 2];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	/* Lengths are checked before formatting (client_send_check): a cut line would
	 * be a different command, so this cannot happen; refuse to send one anyway. */
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		n = 0;
	line[n++] = '\r';
	line[n++] = '\n';
	if (c->bev != NULL)
		bufferevent_write(c->bev, line, (size_t)n);
	explicit_bzero(line, sizeof(line));
	c->expect++;
	client_log(c, LOG_LEVEL_DEBUG, "event=send cmd=%s", verb);
}

/* ---- connection teardown and freeing ----------------------------------------------------- */

static void client_close_conn(struct smtp_client *c)
{
	if (c->ev_connect != NULL)
		event_del(c->ev_connect);
	evtimer_del(c->ev_timer);
	if (c->bev != NULL) {
		int owns_fd = bufferevent_openssl_get_ssl(c->bev) != NULL;
		bufferevent_free(c->bev);
		c->bev = NULL;
		if (owns_fd)
			c->fd = -1; /* BEV_OPT_CLOSE_ON_FREE closed it with the SSL */
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
}

static void client_destroy(struct smtp_client *c)
{
	char q[1300];
	client_log(c, LOG_LEVEL_INFO, "event=disconnect messages=%d error=%s", c->info.messages,
	           c->failure.why[0]
	               ? log_quote(q, sizeof(q), c->failure.why, strlen(c->failure.why))
	               : "-");
	client_close_conn(c);
	if (c->ev_connect != NULL)
		event_free(c->ev_connect);
	event_free(c->ev_timer);
	event_free(c->ev_defer);
	free(c->idx);
	free(c->accepted);
	explicit_bzero(c->auth_password, sizeof(c->auth_password));
	free(c);
}

/* Frees c now, or once the entry point on the stack returns. */
static void client_release_later(struct smtp_client *c)
{
	c->cb = NULL;
	c->done = NULL;
	if (c->holds > 0) {
		client_close_conn(c);
		event_del(c->ev_defer);
		c->freed = 1;
		return;
	}
	client_destroy(c);
}

/* Every libevent callback holds c while it runs, so that a user callback that frees c
 * only marks it; the last release frees. */
static void client_hold(struct smtp_client *c)
{
	c->holds++;
}

static void client_release(struct smtp_client *c)
{
	if (--c->holds == 0 && c->freed)
		client_destroy(c);
}

/* ---- results and callbacks ---------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static void
rcpt_set(struct smtp_client_rcpt *rc, int code, const char *enhanced, const char *fmt, ...)
{
	va_list ap;
	rc->code = code;
	snprintf(rc->enhanced, sizeof(rc->enhanced), "%s", enhanced);
	va_start(ap, fmt);
	vsnprintf(rc->text, sizeof(rc->text), fmt, ap);
	va_end(ap);
}

static void rcpt_set_reply(struct smtp_client_rcpt *rc, const struct smtp_reply *r)
{
	rcpt_set(rc, r->code, r->enhanced, "%s", r->text);
}

static void client_emit(struct smtp_client *c, enum smtp_client_event ev)
{
	if (c->cb != NULL && !c->quitting && !c->freed)
		c->cb(c, ev, c->cb_arg);
}

/* Ends the transaction and reports it: the last thing a handler does. */
static void client_finish_msg(struct smtp_client *c, int result)
{
	struct smtp_client_msg *m = c->msg;
	smtp_client_done_fn *done = c->done;
	void *arg = c->done_arg;
	c->msg = NULL;
	c->done = NULL;
	free(c->idx);
	c->idx = NULL;
	free(c->accepted);
	c->accepted = NULL;
	if (result == SMTP_CLIENT_SENT && c->n_sent > 0)
		c->info.messages++;
	if (done != NULL && !c->quitting && !c->freed)
		done(c, m, result, arg);
}

static void client_defer(struct smtp_client *c, enum client_deferred what, int result)
{
	c->deferred = what;
	c->deferred_result = result;
	event_active(c->ev_defer, EV_TIMEOUT, 0);
}

static void client_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;
	enum client_deferred d = c->deferred;
	c->deferred = DEFER_NONE;
	client_hold(c);
	if (d == DEFER_FAILED)
		client_emit(c, SMTP_CLIENT_FAILED);
	else if (d == DEFER_DONE)
		client_finish_msg(c, c->deferred_result);
	client_release(c);
}

/* The one way a connection fails.  Records why (the first failure wins), gives every
 * recipient without a final answer a temporary failure, closes the connection (a
 * FAIL_REPLY keeps it, unless the reply was 421, for a polite QUIT), and reports:
 * done when a message was under way, CLOSED when idle after READY, FAILED before. */
__attribute__((format(printf, 5, 6))) static void
client_fail(struct smtp_client *c, enum client_fail_kind kind, int temporary,
            const struct smtp_reply *r, const char *fmt, ...)
{
	const char *stage = client_stage(c);
	struct smtp_client_failure *f = &c->failure;
	if (c->state == CS_DONE) {
		client_close_conn(c); /* reported already */
		return;
	}
	if (c->quitting) {
		/* Nobody to tell: a QUIT that went wrong just ends. */
		client_close_conn(c);
		client_release_later(c);
		return;
	}
	if (f->why[0] == '\0') {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(f->why, sizeof(f->why), fmt, ap);
		va_end(ap);
		f->temporary = temporary;
		f->stage = stage;
		if (r != NULL) {
			f->code = r->code;
			snprintf(f->enhanced, sizeof(f->enhanced), "%s", r->enhanced);
			snprintf(f->text, sizeof(f->text), "%s", r->text);
		}
		char q[1300];
		/* Remotes that refuse, time out or close an idle connection are routine for a
		 * relay (the delivery log says what became of the mail): info, not warn. */
		enum log_level lvl = strcmp(stage, "connect") == 0 || strcmp(stage, "idle") == 0
					     ? LOG_LEVEL_INFO
					     : LOG_LEVEL_WARN;
		client_log(c, lvl, "event=failed stage=%s temporary=%d why=%s", stage, temporary,
			   log_quote(q, sizeof(q), f->why, strlen(f->why)));
	}
	/* A refusal leaves the connection in step: keep it for QUIT. */
	int keep =
	    kind == FAIL_REPLY && (r == NULL || r->code != 421) && c->expect == 0 && c->bev != NULL;
	if (!keep)
		client_close_conn(c);
	else
		evtimer_del(c->ev_timer);
	enum client_state was = c->state;
	c->state = CS_DONE;

	if (c->msg != NULL && was == CS_READY)
		return; /* a message refused before sending: its pending done reports */
	if (c->msg != NULL) {
		/* Recipients that got no final answer from the server. */
		static const char *const enh[] = {"4.4.2", "4.5.0", "4.3.0", "4.4.2"};
		struct smtp_client_msg *m = c->msg;
		int broken = 0;
		for (int i = 0; i < m->n_rcpts; i++) {
			struct smtp_client_rcpt *rc = &m->rcpts[i];
			if (rc->code != 0)
				continue;
			broken = 1;
			if (r != NULL && r->code / 100 == 4)
				rcpt_set_reply(rc, r);
			else
				rcpt_set(rc, 451, enh[kind], "%s", f->why);
		}
		client_finish_msg(c, broken ? SMTP_CLIENT_BROKEN : SMTP_CLIENT_SENT);
		return;
	}
	client_emit(c, c->ready_sent ? SMTP_CLIENT_CLOSED : SMTP_CLIENT_FAILED);
}

static void client_ready(struct smtp_client *c)
{
	client_set_state(c, CS_READY);
	if (c->ready_sent)
		return;
	c->ready_sent = 1;
	client_log(c, LOG_LEVEL_INFO,
	           "event=ready name=%s esmtp=%d tls=%d pipelining=%d size=%lld 8bitmime=%d "
	           "smtputf8=%d dsn=%d auth=%d",
	           c->info.remote_name[0] ? c->info.remote_name : "-", c->info.esmtp, c->tls_active,
	           c->info.pipelining, c->info.size_ext ? c->info.max_size : -1LL,
	           c->info.eightbitmime, c->info.smtputf8, c->info.dsn, c->info.authenticated);
	client_emit(c, SMTP_CLIENT_READY);
}

/* ---- input ------------------------------------------------------------------------------- */

/* Up to 60 octets of what the server sent, safe for a log line. */
static void client_peek_text(struct evbuffer *in, char *out, size_t cap)
{
	char raw[61];
	ssize_t n = evbuffer_copyout(in, raw, sizeof(raw) - 1);
	if (n < 0)
		n = 0;
	log_quote(out, cap, raw, (size_t)n);
}

static void client_process_input(struct smtp_client *c)
{
	/* Each round consumes input or stops, and the input is bounded by the read
	 * high-water mark: the loop ends. */
	while (!c->freed && c->bev != NULL) {
		struct evbuffer *in = bufferevent_get_input(c->bev);
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			return;
		if (c->state == CS_DONE) {
			/* After a refusal the server says more or hangs up: nothing to
			 * keep the connection for. */
			client_close_conn(c);
			if (c->quitting)
				client_release_later(c);
			return;
		}
		if (c->state == CS_TLS_CONNECT || c->state == CS_TLS_HANDSHAKE ||
		    c->state == CS_CONNECTING)
			return;
		size_t win = avail < CLIENT_REPLY_WINDOW ? avail : CLIENT_REPLY_WINDOW;
		const char *data = (const char *)evbuffer_pullup(in, (ssize_t)win);
		if (data == NULL)
			return;
		size_t consumed = 0;
		const char *why = NULL;
		enum smtp_reply_status st = smtp_reply_parse(&c->rp, data, win, &consumed, &why);
		if (st == SMTP_REPLY_ERROR) {
			char peek[300];
			client_peek_text(in, peek, sizeof(peek));
			client_log(c, LOG_LEVEL_INFO, "event=protocol_error data=%s", peek);
			client_fail(c, FAIL_PROTO, 1, NULL,
			            "protocol error from the remote (%s): %s", client_stage(c),
			            why);
			return;
		}
		evbuffer_drain(in, consumed);
		if (st == SMTP_REPLY_NEED_MORE) {
			if (c->expect == 0 || client_states[c->state].on_reply == NULL) {
				char peek[300];
				client_peek_text(in, peek, sizeof(peek));
				client_fail(c, FAIL_PROTO, 1, NULL,
				            "unsolicited data from the remote (%s): %s",
				            client_stage(c), peek);
				return;
			}
			if (consumed == 0)
				return;
			continue;
		}
		const struct smtp_reply *r = &c->rp.reply;
		if (c->expect == 0 || client_states[c->state].on_reply == NULL ||
		    (c->state == CS_BODY && !c->body_queued)) {
			char q[SMTP_REPLY_TEXT_MAX + 64];
			client_fail(c, FAIL_PROTO, 1, r->code == 421 ? r : NULL,
			            "unsolicited reply from the remote (%s): %d %s",
			            client_stage(c), r->code,
			            log_quote(q, sizeof(q), r->text, r->text_len));
			return;
		}
		c->expect--;
		if (c->expect == 0 && evbuffer_get_length(in) > 0) {
			/* More than the replies we asked for: a server that is out of step
			 * (or data injected before TLS, RFC 3207 6) would make us take its
			 * next line for the answer to our next command. */
			char peek[300];
			client_peek_text(in, peek, sizeof(peek));
			client_fail(c, FAIL_PROTO, 1, NULL,
			            "unsolicited data after the reply to %s: %s", client_stage(c),
			            peek);
			return;
		}
		if (r->code >= 400)
			client_log_reply(c, r);
		client_states[c->state].on_reply(c, r);
	}
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	client_hold(c);
	client_process_input(c);
	client_release(c);
}

/* ---- the body --------------------------------------------------------------------------- */

/* Dot-stuffs in[0..n) into out (room for 2 n + 2): a "." starting a line gets another
 * (RFC 5321 4.5.2), and a bare LF or CR becomes CRLF (RFC 5321 2.3.8).  Keeps its
 * place across calls. */
static size_t client_stuff(struct smtp_client *c, const char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char b = in[i];
		if (c->stuff_cr) {
			c->stuff_cr = 0;
			out[o++] = '\r';
			out[o++] = '\n';
			c->stuff_bol = 1;
			if (b == '\n')
				continue;
		}
		if (b == '\r') {
			c->stuff_cr = 1;
			continue;
		}
		if (b == '\n') {
			out[o++] = '\r';
			out[o++] = '\n';
			c->stuff_bol = 1;
			continue;
		}
		if (c->stuff_bol && b == '.')
			out[o++] = '.';
		out[o++] = b;
		c->stuff_bol = 0;
	}
	return o;
}

/* Queues more of the body while the output is short, then the terminator.  Reads in
 * chunks as the output drains, so a message never sits in memory whole; the reads are
 * of a file the kernel just wrote (page cache), cheap enough for the loop. */
static void client_body_pump(struct smtp_client *c)
{
	struct smtp_client_msg *m = c->msg;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	while (!c->body_queued && evbuffer_get_length(out) < CLIENT_BODY_QUEUE) {
		off_t left = m->len - c->body_pos;
		if (left <= 0) {
			char tail[8];
			size_t t = 0;
			if (c->stuff_cr) {
				/* A lone CR at the very end: a line break like any other. */
				c->stuff_cr = 0;
				tail[t++] = '\r';
				tail[t++] = '\n';
				c->stuff_bol = 1;
			}
			/* RFC 5321 4.1.1.4: the terminator is CRLF "." CRLF, whose first
			 * CRLF ends the last line: a message without a final line break
			 * gets one. */
			if (!c->stuff_bol) {
				tail[t++] = '\r';
				tail[t++] = '\n';
			}
			memcpy(tail + t, ".\r\n", 3);
			t += 3;
			evbuffer_add(out, tail, t);
			c->body_queued = 1;
			c->expect++;
			/* From now on the write callback only says "all sent". */
			bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
			return;
		}
		size_t n = left < CLIENT_BODY_CHUNK ? (size_t)left : CLIENT_BODY_CHUNK;
		ssize_t got = pread(m->fd, c->body_in, n, m->offset + c->body_pos);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			/* Without "." the server discards what it got: closing is the only
			 * way SMTP has to abort DATA. */
			client_fail(c, FAIL_LOCAL, 1, NULL,
			            "cannot read the message at offset %lld: %s",
			            (long long)(m->offset + c->body_pos),
			            got < 0 ? strerror(errno) : "file shorter than its length");
			return;
		}
		size_t o = client_stuff(c, c->body_in, (size_t)got, c->body_out);
		evbuffer_add(out, c->body_out, o);
		c->body_pos += got;
	}
}

static void client_start_body(struct smtp_client *c)
{
	c->body_pos = 0;
	c->stuff_bol = 1;
	c->stuff_cr = 0;
	c->body_queued = 0;
	client_set_state(c, CS_BODY);
	bufferevent_setwatermark(c->bev, EV_WRITE, CLIENT_BODY_LOW_WATER, 0);
	client_body_pump(c);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	client_hold(c);
	if (c->state == CS_BODY && c->bev != NULL) {
		if (!c->body_queued) {
			/* RFC 5321 4.5.3.2.5: the data timeout is per block sent. */
			client_arm_timer(c);
			client_body_pump(c);
		} else if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
			client_set_state(c, CS_DATA_END);
		}
	}
	client_release(c);
}

/* ---- TLS ------------------------------------------------------------------------------------ */

static void client_event_cb(struct bufferevent *bev, short what, void *arg);

static void client_setup_bev(struct smtp_client *c)
{
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CLIENT_READ_HIGH_WATER);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* Replaces the connection's bufferevent by an OpenSSL one on the same socket.  0 or
 * -1 with why. */
static int client_start_tls(struct smtp_client *c, const char **why_r)
{
	SSL *ssl = SSL_new(c->set.ssl_ctx);
	if (ssl == NULL) {
		*why_r = "cannot create a TLS session";
		return -1;
	}
	if (c->tls_name[0] != '\0') {
		int ok;
		if (c->tls_name_is_ip) {
			/* RFC 6066 3: no IP literals in SNI; the certificate may still
			 * carry the address. */
			ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->tls_name);
		} else {
			ok = SSL_set_tlsext_host_name(ssl, c->tls_name) == 1 &&
			     SSL_set1_host(ssl, c->tls_name) == 1;
		}
		if (!ok) {
			SSL_free(ssl);
			*why_r = "cannot set the TLS name";
			return -1;
		}
	}
	if (c->bev != NULL) {
		/* The cleartext bufferevent goes (it holds nothing: anything read after
		 * the 220 was refused above); the socket stays. */
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	c->bev = bufferevent_openssl_socket_new(c->base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
	                                        BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		/* libevent 2.1 frees ssl itself when this fails with CLOSE_ON_FREE. */
		*why_r = "cannot set up the TLS connection";
		return -1;
	}
	/* SMTP frames itself; a peer that closes without close_notify lost nothing. */
	bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	client_setup_bev(c);
	return 0;
}

static void client_send_ehlo(struct smtp_client *c)
{
	client_cmd(c, "EHLO", "EHLO %s", c->helo);
	client_set_state(c, CS_EHLO);
}

static void client_tls_established(struct smtp_client *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	c->tls_active = 1;
	tls_describe(ssl, c->info.tls_desc, sizeof(c->info.tls_desc));
	X509 *cert = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
	long res = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_ERR_UNSPECIFIED;
	if (cert == NULL)
		snprintf(c->info.verify_error, sizeof(c->info.verify_error), "no certificate");
	else if (res != X509_V_OK)
		snprintf(c->info.verify_error, sizeof(c->info.verify_error), "%s",
		         X509_verify_cert_error_string(res));
	else if (c->tls_name[0] == '\0')
		snprintf(c->info.verify_error, sizeof(c->info.verify_error), "no name to verify");
	else
		c->info.verify_error[0] = '\0';
	c->info.tls_verified = c->info.verify_error[0] == '\0';
	char q[300];
	client_log(c, LOG_LEVEL_INFO, "event=tls %s verified=%d%s%s", c->info.tls_desc,
	           c->info.tls_verified, c->info.tls_verified ? "" : " verify_error=",
	           c->info.tls_verified ? ""
	                                : log_quote(q, sizeof(q), c->info.verify_error,
	                                            strlen(c->info.verify_error)));
	if (c->set.tls_verify && !c->info.tls_verified) {
		client_fail(c, FAIL_NET, 1, NULL, "TLS certificate of %s does not verify: %s",
		            c->tls_name[0] ? c->tls_name : c->info.remote_addr,
		            c->info.verify_error);
		return;
	}
	if (c->state == CS_TLS_CONNECT) {
		c->expect = 1; /* the greeting, sent over TLS */
		client_set_state(c, CS_GREETING);
	} else {
		/* RFC 3207 4.2: forget everything learnt before TLS, ask again. */
		smtp_reply_parser_init(&c->rp);
		client_send_ehlo(c);
	}
	/* Whatever the handshake's last read brought along is ours to read now. */
	client_process_input(c);
}

/* The most specific reason OpenSSL queued for this bufferevent, else errno's. */
static void client_error_text(struct smtp_client *c, short what, char *out, size_t cap)
{
	unsigned long e, last = 0;
	if (c->bev != NULL) {
		for (int i = 0; i < 16 && (e = bufferevent_get_openssl_error(c->bev)) != 0; i++)
			last = e;
	}
	if (last != 0) {
		const char *reason = ERR_reason_error_string(last);
		if (reason != NULL)
			snprintf(out, cap, "%s", reason);
		else
			ERR_error_string_n(last, out, cap);
	} else if ((what & BEV_EVENT_EOF) || EVUTIL_SOCKET_ERROR() == 0) {
		snprintf(out, cap, "connection closed by the remote");
	} else {
		snprintf(out, cap, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	client_hold(c);
	if (what & BEV_EVENT_CONNECTED) {
		client_tls_established(c);
		client_release(c);
		return;
	}
	if (c->state == CS_QUIT || c->state == CS_DONE) {
		client_close_conn(c);
		if (c->quitting)
			client_release_later(c);
		client_release(c);
		return;
	}
	char err[256];
	client_error_text(c, what, err, sizeof(err));
	if (c->state == CS_TLS_CONNECT || c->state == CS_TLS_HANDSHAKE) {
		if (c->state == CS_TLS_HANDSHAKE && c->set.tls == SMTP_CLIENT_TLS_OPPORTUNISTIC)
			c->failure.retry_without_tls = c->failure.why[0] == '\0';
		client_fail(c, FAIL_NET, 1, NULL, "TLS handshake failed: %s", err);
	} else if (c->state == CS_DATA_END || (c->state == CS_BODY && c->body_queued)) {
		client_fail(c, FAIL_NET, 1, NULL,
		            "%s after the end of data was sent (the message may have been "
		            "delivered; it will be sent again)",
		            err);
	} else if (c->state == CS_READY) {
		client_fail(c, FAIL_NET, 1, NULL, "idle connection ended: %s", err);
	} else {
		client_fail(c, FAIL_NET, 1, NULL, "%s (%s)", err, client_stage(c));
	}
	client_release(c);
}

static void client_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;
	client_hold(c);
	int secs = client_timeout_seconds(c, client_states[c->state].timeout);
	switch (c->state) {
	case CS_QUIT:
		client_close_conn(c);
		client_release_later(c);
		break;
	case CS_CONNECTING:
		client_fail(c, FAIL_NET, 1, NULL, "connect timed out after %d s", secs);
		break;
	case CS_TLS_CONNECT:
	case CS_TLS_HANDSHAKE:
		client_fail(c, FAIL_NET, 1, NULL, "TLS handshake timed out after %d s", secs);
		break;
	case CS_GREETING:
		client_fail(c, FAIL_NET, 1, NULL, "no greeting within %d s", secs);
		break;
	case CS_BODY:
		client_fail(c, FAIL_NET, 1, NULL, "timed out after %d s sending the message", secs);
		break;
	case CS_DATA_END:
		client_fail(c, FAIL_NET, 1, NULL,
		            "no reply to the end of data within %d s (the message may have been "
		            "delivered; it will be sent again)",
		            secs);
		break;
	default:
		client_fail(c, FAIL_NET, 1, NULL, "no reply to %s within %d s", client_stage(c),
		            secs);
		break;
	}
	client_release(c);
}

/* ---- greeting, EHLO, STARTTLS, AUTH ------------------------------------------------------- */

static void client_take_name(struct smtp_client *c, const char *text)
{
	size_t n = strcspn(text, " ");
	if (n > CLIENT_NAME_MAX)
		n = CLIENT_NAME_MAX;
	memcpy(c->info.remote_name, text, n);
	c->info.remote_name[n] = '\0';
}

/* 1 when the reply is 421: the server is closing (RFC 5321 3.8). */
static int client_closing_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	if (r->code != 421)
		return 0;
	client_fail(c, FAIL_REPLY, 1, r, "the remote is closing the connection (%s): %d %s%s%s",
	            client_stage(c), r->code, r->enhanced, r->enhanced[0] ? " " : "", r->text);
	return 1;
}

__attribute__((format(printf, 3, 4))) static void
client_refused(struct smtp_client *c, const struct smtp_reply *r, const char *what, ...)
{
	char w[200];
	va_list ap;
	va_start(ap, what);
	vsnprintf(w, sizeof(w), what, ap);
	va_end(ap);
	client_fail(c, FAIL_REPLY, r->code / 100 == 4, r, "%s: %d %s%s%s", w, r->code, r->enhanced,
	            r->enhanced[0] ? " " : "", r->text);
}

static void client_unexpected(struct smtp_client *c, const struct smtp_reply *r)
{
	client_fail(c, FAIL_PROTO, 1, NULL, "unexpected reply to %s: %d %s", client_stage(c),
	            r->code, r->text);
}

static void on_greeting(struct smtp_client *c, const struct smtp_reply *r)
{
	if (client_closing_reply(c, r))
		return;
	if (r->code / 100 == 2) {
		client_take_name(c, r->text);
		client_send_ehlo(c);
		return;
	}
	if (r->code / 100 == 3) {
		client_unexpected(c, r);
		return;
	}
	/* RFC 5321 3.1: 554 instead of 220 means "no service here"; the connection
	 * stays open for our QUIT. */
	client_refused(c, r, "the remote refused the connection");
}

static void client_auth_start(struct smtp_client *c);

/* After EHLO or HELO: STARTTLS, AUTH or ready, as the settings ask. */
static void client_after_hello(struct smtp_client *c)
{
	enum smtp_client_tls mode = c->set.tls;
	if (!c->tls_active && !c->starttls_done &&
	    (mode == SMTP_CLIENT_TLS_OPPORTUNISTIC || mode == SMTP_CLIENT_TLS_REQUIRED)) {
		if (c->info.starttls) {
			c->starttls_done = 1;
			client_cmd(c, "STARTTLS", "STARTTLS");
			client_set_state(c, CS_STARTTLS);
			return;
		}
		if (mode == SMTP_CLIENT_TLS_REQUIRED) {
			client_fail(c, FAIL_REPLY, 1, NULL,
			            "TLS is required but the remote does "
			            "not offer STARTTLS");
			return;
		}
		client_log(c, LOG_LEVEL_INFO, "event=no_starttls");
	}
	if (c->auth_user[0] != '\0' && !c->info.authenticated) {
		client_auth_start(c);
		return;
	}
	client_ready(c);
}

static int keyword_is(const char *l, size_t n, const char *kw)
{
	size_t k = strlen(kw);
	return n >= k && strncasecmp(l, kw, k) == 0 && (n == k || l[k] == ' ' || l[k] == '=');
}

/* RFC 5321 4.1.1.1: after the greeting line, one keyword (with parameters) a line. */
static void client_parse_ehlo(struct smtp_client *c, const struct smtp_reply *r)
{
	struct smtp_client_info *in = &c->info;
	in->esmtp = 1;
	in->pipelining = in->size_ext = in->eightbitmime = in->smtputf8 = in->dsn = 0;
	in->chunking = in->starttls = in->enhanced_codes = in->auth_plain = in->auth_login = 0;
	in->max_size = 0;
	size_t n0;
	const char *l0 = smtp_reply_line(r, 0, &n0);
	if (n0 > 0)
		client_take_name(c, l0);
	for (int i = 1; i < r->n_lines; i++) {
		size_t n;
		const char *l = smtp_reply_line(r, i, &n);
		if (keyword_is(l, n, "PIPELINING")) {
			in->pipelining = 1;
		} else if (keyword_is(l, n, "SIZE")) {
			/* RFC 1870 4: an optional limit, 0 or absent meaning none. */
			in->size_ext = 1;
			long long v = 0;
			for (size_t j = 5; j < n && l[j] >= '0' && l[j] <= '9'; j++) {
				if (v > (1LL << 50))
					break;
				v = v * 10 + (l[j] - '0');
			}
			in->max_size = v;
		} else if (keyword_is(l, n, "8BITMIME")) {
			in->eightbitmime = 1;
		} else if (keyword_is(l, n, "SMTPUTF8")) {
			in->smtputf8 = 1;
		} else if (keyword_is(l, n, "DSN")) {
			in->dsn = 1;
		} else if (keyword_is(l, n, "CHUNKING")) {
			in->chunking = 1;
		} else if (keyword_is(l, n, "STARTTLS")) {
			in->starttls = 1;
		} else if (keyword_is(l, n, "ENHANCEDSTATUSCODES")) {
			in->enhanced_codes = 1;
		} else if (keyword_is(l, n, "AUTH")) {
			/* "AUTH PLAIN LOGIN", or the pre-standard "AUTH=PLAIN LOGIN". */
			size_t j = 4;
			while (j < n) {
				while (j < n && (l[j] == ' ' || l[j] == '='))
					j++;
				size_t s = j;
				while (j < n && l[j] != ' ')
					j++;
				if (j - s == 5 && strncasecmp(l + s, "PLAIN", 5) == 0)
					in->auth_plain = 1;
				else if (j - s == 5 && strncasecmp(l + s, "LOGIN", 5) == 0)
					in->auth_login = 1;
			}
		}
	}
}

static void on_ehlo(struct smtp_client *c, const struct smtp_reply *r)
{
	if (client_closing_reply(c, r))
		return;
	if (r->code / 100 == 2) {
		client_parse_ehlo(c, r);
		client_after_hello(c);
		return;
	}
	if (r->code / 100 == 5) {
		/* RFC 5321 3.2: a server that does not know EHLO still knows HELO. */
		client_cmd(c, "HELO", "HELO %s", c->helo);
		client_set_state(c, CS_HELO);
		return;
	}
	if (r->code / 100 == 3) {
		client_unexpected(c, r);
		return;
	}
	client_refused(c, r, "EHLO refused");
}

static void on_helo(struct smtp_client *c, const struct smtp_reply *r)
{
	if (client_closing_reply(c, r))
		return;
	if (r->code / 100 == 2) {
		struct smtp_client_info *in = &c->info;
		in->esmtp = 0;
		in->pipelining = in->size_ext = in->eightbitmime = in->smtputf8 = in->dsn = 0;
		in->chunking = in->starttls = in->enhanced_codes = in->auth_plain = 0;
		in->auth_login = 0;
		in->max_size = 0;
		if (r->text_len > 0)
			client_take_name(c, r->text);
		client_after_hello(c);
		return;
	}
	if (r->code / 100 == 3) {
		client_unexpected(c, r);
		return;
	}
	client_refused(c, r, "HELO refused");
}

static void on_starttls(struct smtp_client *c, const struct smtp_reply *r)
{
	if (client_closing_reply(c, r))
		return;
	if (r->code / 100 == 2) {
		const char *why = NULL;
		client_set_state(c, CS_TLS_HANDSHAKE);
		if (client_start_tls(c, &why) < 0)
			client_fail(c, FAIL_LOCAL, 1, NULL, "%s", why);
		return;
	}
	if (r->code / 100 == 3) {
		client_unexpected(c, r);
		return;
	}
	if (c->set.tls == SMTP_CLIENT_TLS_REQUIRED) {
		client_refused(c, r, "STARTTLS refused and TLS is required");
		return;
	}
	/* RFC 3207 4: after a refused STARTTLS the session goes on in cleartext. */
	client_log(c, LOG_LEVEL_INFO, "event=starttls_refused code=%d", r->code);
	if (c->auth_user[0] != '\0' && !c->info.authenticated) {
		client_auth_start(c);
		return;
	}
	client_ready(c);
}

static void client_auth_start(struct smtp_client *c)
{
	if (!c->tls_active && !c->set.auth_allow_plaintext) {
		client_fail(c, FAIL_REPLY, 1, NULL,
		            "AUTH is configured but the connection is not encrypted (the "
		            "password is never sent in cleartext)");
		return;
	}
	if (!c->info.auth_plain && !c->info.auth_login) {
		client_fail(c, FAIL_REPLY, 1, NULL,
		            "AUTH is configured but the remote offers neither PLAIN nor LOGIN");
		return;
	}
	client_set_state(c, CS_AUTH);
	if (c->info.auth_plain) {
		/* RFC 4616 2: authzid (empty) NUL authcid NUL passwd, sent as the
		 * initial response (RFC 4954 4). */
		unsigned char raw[2 + 255 + 255];
		size_t ul = strlen(c->auth_user), pl = strlen(c->auth_password);
		char b64[BASE64_ENCODED_LEN(sizeof(raw)) + 1];
		raw[0] = '\0';
		memcpy(raw + 1, c->auth_user, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, c->auth_password, pl);
		base64_encode(raw, 2 + ul + pl, b64, sizeof(b64));
		client_cmd(c, "AUTH PLAIN", "AUTH PLAIN %s", b64);
		explicit_bzero(raw, sizeof(raw));
		explicit_bzero(b64, sizeof(b64));
		c->auth_step = AUTH_PLAIN_SENT;
		return;
	}
	client_cmd(c, "AUTH LOGIN", "AUTH LOGIN");
	c->auth_step = AUTH_LOGIN_SENT;
}

static void on_auth(struct smtp_client *c, const struct smtp_reply *r)
{
	if (client_closing_reply(c, r))
		return;
	if (r->code / 100 == 2) {
		c->info.authenticated = 1;
		char q[600];
		client_log(c, LOG_LEVEL_INFO, "event=auth user=%s mech=%s",
		           log_quote(q, sizeof(q), c->auth_user, strlen(c->auth_user)),
		           c->auth_step == AUTH_PLAIN_SENT ? "PLAIN" : "LOGIN");
		client_ready(c);
		return;
	}
	if (r->code == 334 &&
	    (c->auth_step == AUTH_LOGIN_SENT || c->auth_step == AUTH_LOGIN_USER_SENT)) {
		/* LOGIN: the user name, then the password, each as a bare base64 line. */
		const char *v = c->auth_step == AUTH_LOGIN_SENT ? c->auth_user : c->auth_password;
		char b64[BASE64_ENCODED_LEN(255) + 1];
		base64_encode((const unsigned char *)v, strlen(v), b64, sizeof(b64));
		client_cmd(c, "AUTH-response", "%s", b64);
		explicit_bzero(b64, sizeof(b64));
		c->auth_step =
		    c->auth_step == AUTH_LOGIN_SENT ? AUTH_LOGIN_USER_SENT : AUTH_LOGIN_PASS_SENT;
		client_arm_timer(c);
		return;
	}
	if (r->code / 100 == 3) {
		client_unexpected(c, r);
		return;
	}
	/* 535 and friends: permanent by the reply's class.  The smarthost's own words go
	 * to the log and the bounce. */
	client_refused(c, r, "authentication failed");
}

static void on_quit(struct smtp_client *c, const struct smtp_reply *r)
{
	client_close_conn(c);
	client_release_later(c);
}

/* ---- the transaction ----------------------------------------------------------------------- */

/* A string for a command: no control characters (they would end or split the line),
 * at most max octets. */
static int client_text_ok(const char *s, size_t max)
{
	size_t n = 0;
	for (; s[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)s[n];
		if (n >= max || ch < 0x20 || ch == 0x7f)
			return 0;
	}
	return 1;
}

static int client_has_8bit(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s >= 0x80)
			return 1;
	}
	return 0;
}

/* "MAIL FROM:<...> params" into out (cap octets).  0 or -1 when it does not fit. */
static int client_format_mail(struct smtp_client *c, const struct smtp_client_msg *m, int need_utf8,
                              char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "MAIL FROM:<%s>", m->from);
	if (o >= cap)
		return -1;
	if (c->info.size_ext)
		o += (size_t)snprintf(out + o, cap - o, " SIZE=%lld", (long long)m->len);
	if (m->body_8bit && c->info.eightbitmime && o < cap)
		o += (size_t)snprintf(out + o, cap - o, " BODY=8BITMIME");
	if (need_utf8 && o < cap)
		o += (size_t)snprintf(out + o, cap - o, " SMTPUTF8");
	if (c->info.dsn && o < cap) {
		/* RFC 3461 4.3, 4.4: only to a server that has DSN. */
		if (m->ret == 1 || m->ret == 2)
			o += (size_t)snprintf(out + o, cap - o, " RET=%s",
			                      m->ret == 1 ? "FULL" : "HDRS");
		if (m->envid != NULL && m->envid[0] != '\0' && o < cap) {
			char x[3 * SMTP_ENVID_MAX + 1];
			if (smtp_xtext_encode(m->envid, strlen(m->envid), x, sizeof(x)) < 0)
				return -1;
			o += (size_t)snprintf(out + o, cap - o, " ENVID=%s", x);
		}
	}
	return o < cap ? 0 : -1;
}

static int client_format_rcpt(struct smtp_client *c, const struct smtp_client_rcpt *rc, char *out,
                              size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "RCPT TO:<%s>", rc->addr);
	if (o >= cap)
		return -1;
	if (!c->info.dsn)
		return 0;
	/* RFC 3461 4.1: NEVER alone, or a list of the others. */
	if (rc->notify & SMTP_NOTIFY_NEVER) {
		o += (size_t)snprintf(out + o, cap - o, " NOTIFY=NEVER");
	} else if (rc->notify != 0) {
		const char *sep = " NOTIFY=";
		static const struct {
			unsigned bit;
			const char *name;
		} notes[] = {{SMTP_NOTIFY_SUCCESS, "SUCCESS"},
		             {SMTP_NOTIFY_FAILURE, "FAILURE"},
		             {SMTP_NOTIFY_DELAY, "DELAY"}};
		for (size_t i = 0; i < sizeof(notes) / sizeof(notes[0]) && o < cap; i++) {
			if (rc->notify & notes[i].bit) {
				o += (size_t)snprintf(out + o, cap - o, "%s%s", sep, notes[i].name);
				sep = ",";
			}
		}
	}
	if (rc->orcpt != NULL && rc->orcpt[0] != '\0' && o < cap) {
		/* RFC 3461 4.2: addr-type ";" xtext; ours is "type;decoded". */
		const char *semi = strchr(rc->orcpt, ';');
		const char *type = "rfc822", *addr = rc->orcpt;
		size_t tlen = 6;
		if (semi != NULL) {
			type = rc->orcpt;
			tlen = (size_t)(semi - rc->orcpt);
			addr = semi + 1;
		}
		char x[3 * SMTP_ORCPT_MAX + 1];
		for (size_t j = 0; j < tlen; j++) {
			char t = type[j];
			if (!((t >= 'a' && t <= 'z') || (t >= 'A' && t <= 'Z') ||
			      (t >= '0' && t <= '9') || t == '-'))
				tlen = 0;
		}
		if (tlen == 0 || tlen > 32 || strlen(addr) > SMTP_ORCPT_MAX ||
		    smtp_xtext_encode(addr, strlen(addr), x, sizeof(x)) < 0)
			return 0; /* not ours to fix: leave ORCPT out */
		o += (size_t)snprintf(out + o, cap - o, " ORCPT=%.*s;%s", (int)tlen, type, x);
	}
	return o < cap ? 0 : -1;
}

static void client_send_rcpt(struct smtp_client *c, int k)
{
	char line[CLIENT_CMD_MAX];
	if (client_format_rcpt(c, &c->msg->rcpts[c->idx[k]], line, sizeof(line)) < 0)
		line[0] = '\0'; /* checked in smtp_client_send() */
	client_cmd(c, "RCPT", "%s", line);
	c->n_sent++;
}

static void client_send_rset(struct smtp_client *c)
{
	client_cmd(c, "RSET", "RSET");
	client_set_state(c, CS_RSET);
}

/* Every reply of a failed transaction is in: RSET, then done. */
static void client_txn_failed(struct smtp_client *c)
{
	if (c->n_replied < c->n_sent) {
		client_arm_timer(c);
		return; /* pipelined replies still to come */
	}
	client_send_rset(c);
}

static void on_txn(struct smtp_client *c, const struct smtp_reply *r)
{
	struct smtp_client_msg *m = c->msg;
	int pos = c->n_replied;
	if (r->code == 421) {
		/* Counted as this command's answer for the stage name, then every
		 * recipient still open gets the 421 (temporary). */
		client_closing_reply(c, r);
		return;
	}
	if (r->code / 100 == 3 && !(pos == c->n_idx + 1 && r->code == 354)) {
		client_unexpected(c, r);
		return;
	}
	c->n_replied++;
	if (pos == 0) {
		/* MAIL */
		if (r->code / 100 == 2) {
			c->mail_ok = 1;
		} else {
			for (int k = 0; k < c->n_idx; k++)
				rcpt_set_reply(&m->rcpts[c->idx[k]], r);
		}
		if (!c->info.pipelining && c->mail_ok) {
			client_send_rcpt(c, 0);
			client_arm_timer(c);
			return;
		}
		if (!c->mail_ok)
			client_txn_failed(c);
		else
			client_arm_timer(c);
		return;
	}
	if (pos <= c->n_idx) {
		/* RCPT */
		int i = c->idx[pos - 1];
		if (c->mail_ok) {
			if (r->code / 100 == 2) {
				c->accepted[i] = 1;
				c->n_accepted++;
			} else {
				rcpt_set_reply(&m->rcpts[i], r);
			}
		}
		if (c->info.pipelining) {
			client_arm_timer(c);
			return;
		}
		if (pos < c->n_idx) {
			client_send_rcpt(c, pos);
			client_arm_timer(c);
			return;
		}
		if (c->n_accepted == 0) {
			client_txn_failed(c);
			return;
		}
		client_cmd(c, "DATA", "DATA");
		c->n_sent++;
		client_arm_timer(c);
		return;
	}
	/* DATA */
	if (r->code == 354) {
		if (c->mail_ok && c->n_accepted > 0) {
			client_start_body(c);
			return;
		}
		/* RFC 2920 3.1: DATA was accepted though no RCPT was: a "." alone
		 * ends the empty message, which then has nowhere to go. */
		c->dot_only = 1;
		bufferevent_write(c->bev, ".\r\n", 3);
		c->expect++;
		client_set_state(c, CS_DATA_END);
		return;
	}
	if (r->code / 100 == 2) {
		client_unexpected(c, r);
		return;
	}
	if (c->mail_ok) {
		for (int k = 0; k < c->n_idx; k++) {
			int i = c->idx[k];
			if (c->accepted[i])
				rcpt_set_reply(&m->rcpts[i], r);
		}
	}
	client_txn_failed(c);
}

static void on_data_end(struct smtp_client *c, const struct smtp_reply *r)
{
	struct smtp_client_msg *m = c->msg;
	if (c->dot_only) {
		c->dot_only = 0;
		client_send_rset(c);
		return;
	}
	if (r->code / 100 == 3) {
		client_unexpected(c, r);
		return;
	}
	for (int k = 0; k < c->n_idx; k++) {
		int i = c->idx[k];
		if (c->accepted[i])
			rcpt_set_reply(&m->rcpts[i], r);
	}
	if (r->code == 421) {
		/* Every recipient has its answer; the connection is gone. */
		client_closing_reply(c, r);
		return;
	}
	if (r->code / 100 == 2) {
		/* RFC 5321 4.1.1.4: a completed transaction needs no RSET. */
		client_ready(c);
		client_finish_msg(c, SMTP_CLIENT_SENT);
		return;
	}
	client_send_rset(c);
}

static void on_rset(struct smtp_client *c, const struct smtp_reply *r)
{
	if (r->code / 100 != 2) {
		/* Every recipient has its answer already: done says SENT, but the
		 * connection is not fit for another message. */
		client_fail(c, r->code == 421 ? FAIL_REPLY : FAIL_PROTO, 1, r,
		            "RSET refused: %d %s", r->code, r->text);
		return;
	}
	client_ready(c);
	client_finish_msg(c, SMTP_CLIENT_SENT);
}

/* ---- public API ------------------------------------------------------------------------------ */

int smtp_client_send(struct smtp_client *c, struct smtp_client_msg *m, smtp_client_done_fn *done,
                     void *arg)
{
	if (!smtp_client_is_ready(c) || m == NULL || m->rcpts == NULL || m->n_rcpts < 1 ||
	    m->from == NULL || m->fd < 0 || m->len < 0 || m->offset < 0 || done == NULL)
		return -1;
	for (int i = 0; i < m->n_rcpts; i++) {
		if (m->rcpts[i].addr == NULL)
			return -1;
	}
	int *idx = calloc((size_t)m->n_rcpts, sizeof(*idx));
	unsigned char *acc = calloc((size_t)m->n_rcpts, 1);
	if (idx == NULL || acc == NULL) {
		free(idx);
		free(acc);
		return -1;
	}
	c->msg = m;
	c->done = done;
	c->done_arg = arg;
	c->idx = idx;
	c->accepted = acc;
	c->n_idx = 0;
	c->n_sent = c->n_replied = 0;
	c->mail_ok = 0;
	c->n_accepted = 0;
	c->dot_only = 0;
	c->body_queued = 0;
	for (int i = 0; i < m->n_rcpts; i++) {
		struct smtp_client_rcpt *rc = &m->rcpts[i];
		rc->code = 0;
		rc->enhanced[0] = '\0';
		rc->text[0] = '\0';
	}

	/* Checks that fail the whole message before anything is sent. */
	int need_utf8 = m->smtputf8 || client_has_8bit(m->from);
	const char *refusal = NULL, *enh = NULL;
	int code = 0;
	char text[300];
	char line[CLIENT_CMD_MAX];
	if (!client_text_ok(m->from, CLIENT_ADDR_MAX) ||
	    (m->envid != NULL && !client_text_ok(m->envid, SMTP_ENVID_MAX)) ||
	    client_format_mail(c, m, 0, line, sizeof(line)) < 0) {
		code = 501;
		enh = "5.1.7";
		refusal = "invalid sender address or ENVID";
	}
	for (int i = 0; refusal == NULL && i < m->n_rcpts; i++) {
		struct smtp_client_rcpt *rc = &m->rcpts[i];
		if (!client_text_ok(rc->addr, CLIENT_ADDR_MAX) ||
		    (rc->orcpt != NULL && !client_text_ok(rc->orcpt, SMTP_ORCPT_MAX + 40)) ||
		    client_format_rcpt(c, rc, line, sizeof(line)) < 0) {
			rcpt_set(rc, 501, "5.1.3", "invalid recipient address");
			continue;
		}
		if (client_has_8bit(rc->addr))
			need_utf8 = 1;
		c->idx[c->n_idx++] = i;
	}
	if (refusal == NULL && c->n_idx == 0) {
		client_defer(c, DEFER_DONE, SMTP_CLIENT_SENT);
		return 0;
	}
	if (refusal == NULL && need_utf8 && !c->info.smtputf8) {
		/* RFC 6531 3.2: no downgrade without the extension; the message cannot
		 * go through this server. */
		code = 553;
		enh = "5.6.7";
		refusal = "SMTPUTF8 not supported by the remote";
	}
	if (refusal == NULL && c->info.size_ext && c->info.max_size > 0 &&
	    (long long)m->len > c->info.max_size) {
		/* RFC 1870 6.1: do not send what the server said it would refuse. */
		code = 552;
		enh = "5.3.4";
		snprintf(text, sizeof(text),
		         "message size %lld exceeds the remote's limit of %lld octets (SIZE)",
		         (long long)m->len, c->info.max_size);
		refusal = text;
	}
	if (refusal != NULL) {
		for (int i = 0; i < m->n_rcpts; i++) {
			if (m->rcpts[i].code == 0)
				rcpt_set(&m->rcpts[i], code, enh, "%s", refusal);
		}
		char q[400];
		client_log(c, LOG_LEVEL_INFO, "event=refused_locally code=%d enhanced=%s why=%s",
		           code, enh, log_quote(q, sizeof(q), refusal, strlen(refusal)));
		client_defer(c, DEFER_DONE, SMTP_CLIENT_SENT);
		return 0;
	}
	if (m->body_8bit && !c->info.eightbitmime)
		client_log(c, LOG_LEVEL_INFO, "event=8bit_without_8bitmime action=sent_as_is");

	if (client_format_mail(c, m, need_utf8, line, sizeof(line)) < 0) {
		/* Only the SMTPUTF8 keyword was added; it still fits in practice. */
		line[0] = '\0';
	}
	client_cmd(c, "MAIL", "%s", line);
	c->n_sent = 1;
	if (c->info.pipelining) {
		/* RFC 2920 3.1: MAIL, the RCPTs and DATA (last in the group) in one
		 * write; the replies come back in order. */
		for (int k = 0; k < c->n_idx; k++)
			client_send_rcpt(c, k);
		client_cmd(c, "DATA", "DATA");
		c->n_sent++;
	}
	client_set_state(c, CS_TXN);
	return 0;
}

static int client_name_ok(const char *s)
{
	return s != NULL && s[0] != '\0' && client_text_ok(s, CLIENT_NAME_MAX) &&
	       strchr(s, ' ') == NULL;
}

static void client_sockaddr_text(const struct sockaddr *sa, char *out, size_t cap)
{
	char a[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
		snprintf(out, cap, "%s:%u", a, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
		snprintf(out, cap, "[%s]:%u", a, ntohs(in6->sin6_port));
	} else {
		snprintf(out, cap, "family-%d", sa->sa_family);
	}
}

static void client_connected(struct smtp_client *c)
{
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	client_log(c, LOG_LEVEL_DEBUG, "event=connected");
	if (c->set.tls == SMTP_CLIENT_TLS_IMPLICIT) {
		const char *why = NULL;
		client_set_state(c, CS_TLS_CONNECT);
		if (client_start_tls(c, &why) < 0)
			client_fail(c, FAIL_LOCAL, 1, NULL, "%s", why);
		return;
	}
	c->bev = bufferevent_socket_new(c->base, c->fd, 0);
	if (c->bev == NULL) {
		client_fail(c, FAIL_LOCAL, 1, NULL, "cannot set up the connection");
		return;
	}
	client_setup_bev(c);
	c->expect = 1; /* the greeting */
	client_set_state(c, CS_GREETING);
}

static void client_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;
	client_hold(c);
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0)
		client_fail(c, FAIL_NET, 1, NULL, "connect failed: %s", strerror(err));
	else
		client_connected(c);
	client_release(c);
}

struct smtp_client *smtp_client_connect(struct event_base *base, const struct sockaddr *sa,
                                        socklen_t salen, const struct smtp_client_settings *set,
                                        smtp_client_event_fn *cb, void *arg)
{
	if (base == NULL || sa == NULL || set == NULL || cb == NULL ||
	    salen > (socklen_t)sizeof(struct sockaddr_storage) || !client_name_ok(set->helo) ||
	    (set->tls != SMTP_CLIENT_TLS_NONE && set->ssl_ctx == NULL) ||
	    (set->tls_name != NULL && set->tls_name[0] != '\0' && !client_name_ok(set->tls_name)) ||
	    (set->tls < SMTP_CLIENT_TLS_NONE || set->tls > SMTP_CLIENT_TLS_IMPLICIT))
		return NULL;
	if (set->auth_user != NULL &&
	    (set->auth_user[0] == '\0' || strlen(set->auth_user) > 255 ||
	     set->auth_password == NULL || strlen(set->auth_password) > 255))
		return NULL;
	struct smtp_client *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->base = base;
	c->fd = -1;
	c->state = CS_CONNECTING;
	c->set = *set;
	snprintf(c->helo, sizeof(c->helo), "%s", set->helo);
	snprintf(c->tls_name, sizeof(c->tls_name), "%s", set->tls_name ? set->tls_name : "");
	if (set->auth_user != NULL) {
		snprintf(c->auth_user, sizeof(c->auth_user), "%s", set->auth_user);
		snprintf(c->auth_password, sizeof(c->auth_password), "%s", set->auth_password);
	}
	c->set.helo = c->helo;
	c->set.tls_name = c->tls_name;
	c->set.auth_user = c->auth_user;
	c->set.auth_password = NULL; /* only in c->auth_password */
	if (c->set.connect_timeout <= 0)
		c->set.connect_timeout = RFC_CONNECT_TIMEOUT;
	if (c->set.greeting_timeout <= 0)
		c->set.greeting_timeout = RFC_GREETING_TIMEOUT;
	if (c->set.command_timeout <= 0)
		c->set.command_timeout = RFC_COMMAND_TIMEOUT;
	if (c->set.data_timeout <= 0)
		c->set.data_timeout = RFC_DATA_TIMEOUT;
	if (c->set.data_end_timeout <= 0)
		c->set.data_end_timeout = RFC_DATA_END_TIMEOUT;
	unsigned char ipbuf[sizeof(struct in6_addr)];
	c->tls_name_is_ip = inet_pton(AF_INET, c->tls_name, ipbuf) == 1 ||
	                    inet_pton(AF_INET6, c->tls_name, ipbuf) == 1;
	c->cb = cb;
	c->cb_arg = arg;
	memcpy(&c->sa, sa, salen);
	c->salen = salen;
	smtp_reply_parser_init(&c->rp);
	snprintf(c->info.id, sizeof(c->info.id), "%x%06lx", (unsigned)getpid(),
	         client_next_id++ & 0xffffff);
	client_sockaddr_text(sa, c->info.remote_addr, sizeof(c->info.remote_addr));

	c->ev_timer = evtimer_new(base, client_timer_cb, c);
	c->ev_defer = event_new(base, -1, 0, client_defer_cb, c);
	if (c->ev_timer == NULL || c->ev_defer == NULL) {
		if (c->ev_timer != NULL)
			event_free(c->ev_timer);
		if (c->ev_defer != NULL)
			event_free(c->ev_defer);
		free(c);
		return NULL;
	}
	client_log(c, LOG_LEVEL_INFO, "event=connect tls=%s name=%s", tls_mode_names[set->tls],
	           c->tls_name[0] ? c->tls_name : "-");
	client_arm_timer(c);

	c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err = c->fd < 0 ? errno : 0;
	if (err == 0 && connect(c->fd, sa, salen) < 0 && errno != EINPROGRESS)
		err = errno;
	if (err == 0) {
		c->ev_connect = event_new(base, c->fd, EV_WRITE, client_connect_cb, c);
		if (c->ev_connect == NULL) {
			client_destroy(c);
			return NULL;
		}
		/* Also when connect() succeeded at once: the first step runs from the
		 * loop either way. */
		event_add(c->ev_connect, NULL);
		return c;
	}
	/* Refused at once (or no socket): reported from the loop like any failure. */
	client_close_conn(c);
	snprintf(c->failure.why, sizeof(c->failure.why), "connect failed: %s", strerror(err));
	c->failure.temporary = 1;
	c->failure.stage = "connect";
	client_log(c, LOG_LEVEL_INFO, "event=failed stage=connect temporary=1 why=\"%s\"",
	           c->failure.why);
	c->state = CS_DONE;
	client_defer(c, DEFER_FAILED, 0);
	return c;
}

const struct smtp_client_info *smtp_client_info(const struct smtp_client *c)
{
	return &c->info;
}

const struct smtp_client_failure *smtp_client_failure(const struct smtp_client *c)
{
	return &c->failure;
}

const char *smtp_client_error(const struct smtp_client *c)
{
	return c->failure.why;
}

void smtp_client_set_event_cb(struct smtp_client *c, smtp_client_event_fn *cb, void *arg)
{
	c->cb = cb;
	c->cb_arg = arg;
}

int smtp_client_is_ready(const struct smtp_client *c)
{
	return c != NULL && !c->freed && !c->quitting && c->state == CS_READY && c->msg == NULL &&
	       c->bev != NULL;
}

void smtp_client_quit(struct smtp_client **cp)
{
	struct smtp_client *c = cp != NULL ? *cp : NULL;
	if (c == NULL)
		return;
	*cp = NULL;
	c->cb = NULL;
	c->done = NULL;
	c->quitting = 1;
	event_del(c->ev_defer);
	if (c->bev != NULL && c->expect == 0 && (c->state == CS_READY || c->state == CS_DONE)) {
		/* RFC 5321 4.1.1.10: QUIT, and wait for 221 before closing, so that the
		 * server does not count a dropped connection. */
		client_cmd(c, "QUIT", "QUIT");
		client_set_state(c, CS_QUIT);
		return;
	}
	client_release_later(c);
}

void smtp_client_free(struct smtp_client **cp)
{
	struct smtp_client *c = cp != NULL ? *cp : NULL;
	if (c == NULL)
		return;
	*cp = NULL;
	client_release_later(c);
}
