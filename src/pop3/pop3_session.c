/* POP3 server engine: connections (through event/conn.h), input, replies, login and
 * the server object.
 *
 * One session per connection.  Input is handled line by line by session_process(),
 * which stops whenever an asynchronous step is pending (the daemon's password check, a
 * mail store job on the pool) or a long answer (LIST, UIDL, RETR, TOP) is being written
 * in steps; the step's completion calls pop3_session_continue().  The connection is
 * paused meanwhile, so pipelined commands (RFC 2449 6.6) wait in its buffer. */
#include "pop3/pop3_private.h"

#include "auth/throttle.h"
#include "base/counter.h"
#include "event/pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void session_process(struct pop3_session *s);

/* ---- logging and replies --------------------------------------------------------------- */

void pop3_session_log(struct pop3_session *s, enum log_level level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, "pop3", "sid=%s %s", s->id, line);
}

void pop3_session_write(struct pop3_session *s, const void *data, size_t len)
{
	if (s->conn != NULL)
		conn_write(s->conn, data, len);
}

void pop3_reply(struct pop3_session *s, const char *fmt, ...)
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
	if (line[0] == '-') {
		char q[1100];
		pop3_session_log(s, LOG_LEVEL_INFO, "event=reject cmd=%s reply=%s",
		                 s->verb ? s->verb : "-", log_quote(q, sizeof(q), line, (size_t)n));
		if (strstr(line, "[SYS/TEMP]") == NULL && strstr(line, "[IN-USE]") == NULL)
			s->errors++;
	}
	line[n++] = '\r';
	line[n++] = '\n';
	pop3_session_write(s, line, (size_t)n);
}

void pop3_session_close_after_reply(struct pop3_session *s, const char *reason)
{
	s->closing = 1;
	if (s->conn != NULL)
		conn_close_after_output(s->conn, reason);
}

void pop3_session_set_state(struct pop3_session *s, enum pop3_state st)
{
	static const char *const names[] = {"?", "AUTHORIZATION", "TRANSACTION", "?", "UPDATE"};
	pop3_session_log(s, LOG_LEVEL_DEBUG, "event=state from=%s to=%s", names[s->state & 7],
	                 names[st & 7]);
	s->state = st;
}

/* ---- busy / continue ------------------------------------------------------------------- */

static void session_free(struct pop3_session *s)
{
	free(s->msgs);
	free(s->deleted);
	free(s->retr.out);
	explicit_bzero(s->line, sizeof(s->line));
	free(s);
}

void pop3_session_release(struct pop3_session *s)
{
	if (s->busy)
		return; /* the pending completion calls us again */
	if (s->store != NULL || s->lock_fd >= 0 || s->retr.fd >= 0) {
		/* Closing the store may block (SQLite): a pool job does it, except when the
		 * server itself goes (the process is exiting; the pool may be gone). */
		if (!s->srv->freeing && pop3_job_submit(s, POP3_JOB_CLOSE) == 0)
			return;
		pop3_maildrop_free(s);
	}
	session_free(s);
}

/* The goodbye of a drain, at a point where no answer is half written. */
static int session_drain_check(struct pop3_session *s)
{
	if (!s->shutdown_pending || s->busy || s->closing || s->dead || s->retr.active ||
	    s->listing.active || s->state == POP3_ST_UPDATE)
		return 0;
	s->shutdown_pending = 0;
	s->verb = "-";
	pop3_reply(s, "-ERR [SYS/TEMP] Server shutting down");
	pop3_session_close_after_reply(s, "shutdown");
	return 1;
}

void pop3_session_continue(struct pop3_session *s)
{
	if (s->dead) {
		pop3_session_release(s);
		return;
	}
	if (s->busy || s->retr.active || s->listing.active)
		return;
	if (session_drain_check(s))
		return;
	if (s->conn != NULL && !s->closing)
		conn_resume(s->conn); /* input comes back through the input callback */
}

/* ---- login ------------------------------------------------------------------------------ */

int pop3_session_login_allowed(const struct pop3_session *s)
{
	return s->tls || (s->loopback && s->srv->set.auth_plaintext_loopback);
}

static struct auth_throttle session_throttle(const struct pop3_session *s)
{
	struct auth_throttle t = {s->srv->auth_failures, s->srv->set.auth_max_failures,
	                          s->srv->set.auth_failure_window};
	return t;
}

void pop3_session_login_refused(struct pop3_session *s, const char *user)
{
	char q[300];
	struct auth_throttle t = session_throttle(s);
	auth_throttle_failed(&t, s->addr, user);
	pop3_session_log(s, LOG_LEVEL_WARN, "event=login result=failed user=%s ip=%s",
	                 log_quote(q, sizeof(q), user, strlen(user)), s->addr);
	pop3_reply(s, "-ERR [AUTH] Invalid user name or password");
	s->login_user[0] = '\0';
}

static void login_done(void *session, int ok, const char *domain, const char *user)
{
	struct pop3_session *s = session;
	s->busy = 0;
	s->srv->n_busy--;
	if (s->dead) {
		pop3_session_release(s);
		return;
	}
	char q[300];
	log_quote(q, sizeof(q), s->login_user, strlen(s->login_user));
	s->verb = "LOGIN";
	if (ok == 1 && domain != NULL && user != NULL) {
		snprintf(s->domain, sizeof(s->domain), "%s", domain);
		snprintf(s->local, sizeof(s->local), "%s", user);
		if (pop3_job_submit(s, POP3_JOB_OPEN) < 0) {
			pop3_reply(s, "-ERR [SYS/TEMP] Temporary failure, try again later");
			s->login_user[0] = '\0';
		}
		/* The job's completion answers. */
	} else if (ok == 0 || ok == 1) {
		pop3_session_login_refused(s, s->login_user);
	} else {
		pop3_session_log(s, LOG_LEVEL_WARN, "event=login result=tempfail user=%s", q);
		pop3_reply(s, "-ERR [SYS/TEMP] Temporary failure, try again later");
		s->login_user[0] = '\0';
	}
	pop3_session_continue(s);
}

void pop3_session_login(struct pop3_session *s, const char *user, const char *password)
{
	struct auth_throttle t = session_throttle(s);
	if (auth_throttle_blocked(&t, s->addr, user)) {
		char q[300];
		pop3_session_log(s, LOG_LEVEL_WARN, "event=login result=throttled user=%s ip=%s",
		                 log_quote(q, sizeof(q), user, strlen(user)), s->addr);
		pop3_reply(s, "-ERR [AUTH] Too many failed logins, try again later");
		return;
	}
	if (s->srv->cb.login == NULL) {
		pop3_reply(s, "-ERR [SYS/TEMP] Login is not available");
		return;
	}
	snprintf(s->login_user, sizeof(s->login_user), "%s", user);
	s->busy = 1;
	s->srv->n_busy++;
	if (s->conn != NULL)
		conn_pause(s->conn);
	s->srv->cb.login(s->srv->cb.ctx, user, password, login_done, s);
}

/* ---- input -------------------------------------------------------------------------------- */

static int session_can_work(const struct pop3_session *s)
{
	return s->conn != NULL && !s->busy && !s->closing && !s->dead && !s->retr.active &&
	       !s->listing.active && s->state != POP3_ST_UPDATE;
}

static void session_process(struct pop3_session *s)
{
	while (session_can_work(s)) {
		struct slice in = conn_input(s->conn);
		if (in.len == 0)
			break;
		int auth = s->mode == POP3_MODE_AUTH_PLAIN;
		s->lr.limit = auth ? POP3_AUTH_LINE_MAX : POP3_LINE_MAX;
		struct slice line;
		size_t consumed = 0;
		enum pop3_line_status ls = pop3_line_next(&s->lr, in.p, in.len, &line, &consumed);
		if (ls == POP3_LINE_NEED_MORE) {
			if (consumed == 0)
				break;
			conn_consume(s->conn, consumed);
			continue;
		}
		if (ls == POP3_LINE_TOO_LONG) {
			conn_consume(s->conn, consumed);
			s->verb = auth ? "AUTH" : "-";
			if (auth) {
				s->mode = POP3_MODE_COMMAND;
				pop3_reply(s, "-ERR Authentication response too long");
			} else {
				pop3_reply(s, "-ERR Line too long (at most %d octets)",
				           POP3_LINE_MAX);
			}
		} else {
			/* Copied: replies are calls on the connection, which end the borrow. */
			memcpy(s->line, line.p, line.len);
			s->line[line.len] = '\0';
			size_t len = line.len;
			conn_consume(s->conn, consumed);
			s->commands++;
			if (auth)
				pop3_session_auth_response(s, s->line, len);
			else
				pop3_session_command(s, s->line, len);
			explicit_bzero(s->line, len);
		}
		if (s->errors >= POP3_MAX_ERRORS && !s->closing && !s->busy && s->conn != NULL) {
			s->verb = "-";
			pop3_reply(s, "-ERR Too many errors, closing connection");
			pop3_session_close_after_reply(s, "too_many_errors");
		}
		session_drain_check(s);
		if (s->conn != NULL && conn_output_pending(s->conn) >= POP3_OUTPUT_MAX)
			break; /* the connection calls us again once the output has drained */
	}
	session_drain_check(s);
}

/* ---- conn handler ------------------------------------------------------------------------ */

static void *session_open(void *ctx, struct conn *c)
{
	struct pop3_server *srv = ctx;
	const struct conn_info *ci = conn_info(c);
	struct pop3_session *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->srv = srv;
	s->pool = srv->pool;
	s->conn = c;
	s->lock_fd = -1;
	s->retr.fd = -1;
	s->state = POP3_ST_AUTHORIZATION;
	s->start = time(NULL);
	s->loopback = ci->loopback;
	s->tls = ci->tls;
	snprintf(s->id, sizeof(s->id), "%s", ci->id);
	snprintf(s->addr, sizeof(s->addr), "%s", ci->addr);
	pop3_line_reader_init(&s->lr, POP3_LINE_MAX);
	srv->n_sessions++;
	conn_set_timeout(c, srv->set.timeout);
	pop3_reply(s, "+OK %s POP3 ready", srv->hostname);
	return s;
}

static void session_input(void *session)
{
	session_process(session);
}

static void session_drained(void *session)
{
	struct pop3_session *s = session;
	if (s->listing.active)
		pop3_listing_step(s);
	else if (s->retr.active && s->retr.waiting_drain)
		pop3_retr_drained(s);
}

static void session_tls_done(void *session, int ok)
{
	struct pop3_session *s = session;
	if (!ok)
		return; /* the connection closes */
	/* RFC 2595 4: forget what was said before TLS. */
	s->tls = 1;
	s->user[0] = '\0';
	s->mode = POP3_MODE_COMMAND;
	pop3_line_reader_init(&s->lr, POP3_LINE_MAX);
}

static void session_shutdown(void *session)
{
	struct pop3_session *s = session;
	s->shutdown_pending = 1;
	session_drain_check(s); /* otherwise when the pending step completes */
}

static void session_closed(void *session, const char *reason)
{
	struct pop3_session *s = session;
	s->conn = NULL;
	s->dead = 1;
	s->srv->n_sessions--;
	if (s->login_user[0] != '\0' && s->state == POP3_ST_TRANSACTION) {
		char q[300];
		/* Without QUIT there is no UPDATE state (RFC 1939 6): DELE marks are lost. */
		pop3_session_log(s, LOG_LEVEL_INFO,
		                 "event=logout user=%s reason=%s retrieved=%zu "
		                 "expunged=0",
		                 log_quote(q, sizeof(q), s->login_user, strlen(s->login_user)),
		                 reason, s->n_retrieved);
	}
	s->retr.waiting_drain = 0;
	pop3_session_release(s); /* a RETR file still open is closed with the store */
}

/* ---- server ------------------------------------------------------------------------------- */

struct pop3_server *pop3_server_new(struct event_base *base, struct pool *pool,
                                    const struct pop3_settings *set, struct ssl_ctx_st *ssl_ctx,
                                    const struct pop3_callbacks *cb)
{
	struct pop3_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return NULL;
	srv->base = base;
	srv->pool = pool;
	srv->set = *set;
	snprintf(srv->hostname, sizeof(srv->hostname), "%s",
	         set->hostname ? set->hostname : "localhost");
	snprintf(srv->mail_root, sizeof(srv->mail_root), "%s",
	         set->mail_root ? set->mail_root : "");
	srv->set.hostname = srv->hostname;
	srv->set.mail_root = srv->mail_root;
	if (srv->set.timeout < 600)
		srv->set.timeout = srv->set.timeout > 0 ? srv->set.timeout : 600;
	if (srv->set.auth_max_failures <= 0)
		srv->set.auth_max_failures = 10;
	if (srv->set.auth_failure_window <= 0)
		srv->set.auth_failure_window = 600;
	srv->ssl_ctx = ssl_ctx;
	srv->cb = *cb;
	srv->auth_failures = set->auth_failures;
	if (srv->auth_failures == NULL) {
		srv->auth_failures = counter_table_new(16384);
		srv->own_auth_failures = 1;
	}
	struct conn_settings cs = {
	    .proto = "pop3",
	    .max_connections = set->max_connections,
	    .max_connections_per_ip = set->max_connections_per_ip,
	    .input_max = POP3_INPUT_MAX,
	    .output_max = POP3_OUTPUT_MAX,
	    .timeout = srv->set.timeout,
	};
	struct conn_handler h = {
	    .ctx = srv,
	    .open = session_open,
	    .input = session_input,
	    .drained = session_drained,
	    .tls_done = session_tls_done,
	    .shutdown = session_shutdown,
	    .closed = session_closed,
	    .limit_reply = "-ERR [SYS/TEMP] Too many connections, try again later\r\n",
	    .timeout_reply = "-ERR Disconnected for inactivity\r\n",
	};
	if (srv->auth_failures != NULL)
		srv->conns = conn_server_new(base, &cs, ssl_ctx, &h);
	if (srv->conns == NULL) {
		if (srv->own_auth_failures)
			counter_table_free(&srv->auth_failures);
		free(srv);
		return NULL;
	}
	return srv;
}

int pop3_server_listen(struct pop3_server *srv, int fd, int implicit_tls, const char *name)
{
	return conn_server_listen(srv->conns, fd, implicit_tls, name);
}

void pop3_server_drain(struct pop3_server *srv, int graceful, void (*on_done)(void *arg), void *arg)
{
	conn_server_drain(srv->conns, graceful, on_done, arg);
}

void pop3_server_free(struct pop3_server **srvp)
{
	struct pop3_server *srv = *srvp;
	if (srv == NULL)
		return;
	*srvp = NULL;
	srv->freeing = 1;
	conn_server_free(&srv->conns);
	if (srv->n_busy > 0)
		return; /* pending completions still use srv; the process is exiting anyway */
	if (srv->own_auth_failures)
		counter_table_free(&srv->auth_failures);
	free(srv);
}

int pop3_server_session_count(const struct pop3_server *srv)
{
	return srv->n_sessions;
}
