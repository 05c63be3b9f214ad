/* SMTP server engine: connections, the command table, transactions and replies.
 *
 * One session per connection; a transaction (MAIL .. end of data) lives inside it and
 * is ended the same way by RSET, an error, a new EHLO or a commit (txn_end).  Input is
 * read from a libevent bufferevent (plain or OpenSSL) and handled by smtp_session_process(),
 * which stops whenever an asynchronous step (password check, durable commit) is
 * pending or replies pile up, and resumes when it completes. */
#include "smtp/smtp_private.h"

#include "base/counter.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void session_start_tls(struct smtp_session *s);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);

/* ---- logging and replies ---------------------------------------------------------- */

void smtp_session_log(struct smtp_session *s, enum log_level level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, "smtp", "sid=%s %s", s->id, line);
}

void smtp_session_write(struct smtp_session *s, const char *data, size_t len)
{
	if (s->bev != NULL)
		bufferevent_write(s->bev, data, len);
}

/* Every reply goes through here; 4xx and 5xx are logged with the command. */
void smtp_reply(struct smtp_session *s, const char *fmt, ...)
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
		smtp_session_log(s, line[0] == '4' ? LOG_LEVEL_INFO : LOG_LEVEL_INFO,
			    "event=reject cmd=%s reply=%s", s->verb ? s->verb : "-",
			    log_quote(q, sizeof(q), line, (size_t)n));
		s->errors++;
	}
	line[n++] = '\r';
	line[n++] = '\n';
	smtp_session_write(s, line, (size_t)n);
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

void smtp_session_close_after_reply(struct smtp_session *s, const char *reason)
{
	s->closing = 1;
	if (s->close_reason == NULL)
		s->close_reason = reason;
	if (s->bev != NULL)
		bufferevent_disable(s->bev, EV_READ);
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
		smtp_reply(s, "421 4.3.2 %s Service shutting down, closing connection", s->srv->hostname);
		smtp_session_close_after_reply(s, "shutdown");
	}
}

void smtp_session_process(struct smtp_session *s)
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
				smtp_session_log(s, LOG_LEVEL_WARN,
					    "event=tls_mismatch hint=\"client started TLS on a "
					    "cleartext/STARTTLS port; use port 465 for TLS from the "
					    "first byte, or STARTTLS here\"");
				s->close_reason = "tls_on_plain_port";
				smtp_session_free(s);
				return;
			}
		}
		if (s->mode == MODE_DATA) {
			size_t consumed = 0, out_len = 0;
			enum data_status st = data_decoder_feed(&s->txn.dec, data, avail,
								s->srv->scratch, &consumed, &out_len);
			smtp_txn_body(s, s->srv->scratch, out_len);
			evbuffer_drain(in, consumed);
			if (st == DATA_DONE) {
				s->mode = MODE_COMMAND;
				smtp_txn_finish(s);
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
				smtp_txn_body(s, s->srv->scratch, out_len);
			}
			evbuffer_drain(in, n);
			s->bdat_remaining -= (long long)n;
			if (s->bdat_remaining == 0)
				smtp_bdat_chunk_done(s);
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
			smtp_reply(s, "500 5.5.2 Line too long (at most %d octets)", SMTP_LINE_MAX);
			evbuffer_drain(in, consumed);
		} else if (ls == SMTP_LINE_BARE_LF) {
			s->verb = "-";
			smtp_reply(s, "500 5.5.2 Line must end with CRLF (bare LF received)");
			evbuffer_drain(in, consumed);
		} else if (s->mode == MODE_COMMAND) {
			/* The line points into the input buffer: handle it before draining. */
			smtp_session_command(s, line, line_len);
			if (!s->starttls_pending)
				evbuffer_drain(in, consumed);
		} else {
			smtp_auth_response(s, line, line_len);
			explicit_bzero((void *)line, line_len);
			evbuffer_drain(in, consumed);
		}
		if (s->errors >= SMTP_MAX_ERRORS && !s->closing) {
			smtp_reply(s, "421 4.7.0 %s Too many errors, closing connection", s->srv->hostname);
			smtp_session_close_after_reply(s, "too_many_errors");
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
			smtp_session_free(s);
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
	smtp_session_process(arg);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	/* Called when the output buffer is empty (low watermark 0). */
	if (s->closing) {
		smtp_session_free(s);
		return;
	}
	if (s->starttls_pending) {
		session_start_tls(s);
		return;
	}
	smtp_session_process(s);
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
	smtp_session_log(s, LOG_LEVEL_INFO, "event=tls %s", s->tls_desc);
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
			smtp_session_free(s);
			return;
		}
		smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->srv->hostname);
		smtp_session_close_after_reply(s, "timeout");
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
			smtp_session_log(s, LOG_LEVEL_WARN, "event=tls_failed error=\"%s\"%s", buf, hint);
			s->close_reason = "tls_failed";
		} else if (s->close_reason == NULL) {
			s->close_reason = (what & BEV_EVENT_EOF) ? "eof" : "error";
		}
	} else if (s->close_reason == NULL) {
		s->close_reason = "eof";
	}
	smtp_session_free(s);
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
	if (bev == NULL)
		return NULL; /* libevent has freed ssl already */
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
		smtp_session_free(s);
		return;
	}
	/* RFC 3207 4.2: forget what was learnt before TLS. */
	smtp_txn_end(s);
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
	smtp_session_log(s, LOG_LEVEL_INFO, "event=connect ip=%s listener=%s role=%s", s->addr, l->name,
		    l->role == SMTP_ROLE_MX ? "smtp" : l->role == SMTP_ROLE_SUBMISSION ? "submission"
									   : "submissions");
	session_setup_bev(s);
	/* With implicit TLS the greeting waits in the buffer until the handshake is done. */
	char greet[300];
	int n = snprintf(greet, sizeof(greet), "220 %s ESMTP tern\r\n", srv->hostname);
	smtp_session_write(s, greet, (size_t)n);
}

void smtp_session_free(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	if (s->busy) {
		/* A callback still holds s: finish when it completes. */
		s->dead = 1;
		session_close_conn(s);
		return;
	}
	smtp_session_log(s, LOG_LEVEL_INFO, "event=disconnect reason=%s duration=%ld commands=%d "
		    "messages=%d errors=%d", s->close_reason ? s->close_reason : "closed",
		    (long)(time(NULL) - s->start), s->commands, s->messages, s->errors);
	smtp_txn_end(s);
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
			smtp_session_free(s);
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
		smtp_session_free(s); /* a busy one is only disconnected: its callback frees it */
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
