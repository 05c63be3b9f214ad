/* Connections for the mailbox protocols: see conn.h for the contract.
 *
 * Each connection owns one bufferevent (a socket one, or an OpenSSL one for implicit TLS
 * and after STARTTLS/STLS) and one zero-timeout event, "defer", that runs work which must
 * not happen inside an engine's call stack: freeing the connection (conn_close may be
 * called from the engine's input callback), starting TLS, and delivering input after
 * conn_resume().  Nothing here frees a connection synchronously except conn_server_free.
 *
 * Output back-pressure: the write low watermark is output_max / 2, so the write callback
 * runs whenever a socket write leaves at most that much queued.  Reading stops while
 * output_max or more is unsent; the drained callback runs once the output falls back to
 * half after having reached output_max. */
#include "event/conn.h"

#include "base/counter.h"
#include "base/log.h"

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
#include <time.h>
#include <unistd.h>

#define CONN_CLOSE_FLUSH_SECONDS 10 /* a goodbye line gets this long to leave */
#define CONN_INPUT_MAX_DEFAULT   (64 * 1024)
#define CONN_OUTPUT_MAX_DEFAULT  (256 * 1024)

struct conn_listener {
	struct conn_listener *next;
	struct conn_server *srv;
	struct evconnlistener *evl;
	int implicit_tls;
	char name[64];
};

struct conn_server {
	struct event_base *base;
	struct conn_settings set;
	char proto[16];
	SSL_CTX *ssl_ctx;
	struct conn_handler h;
	struct conn_listener *listeners;
	struct conn *conns; /* every connection not yet freed */
	int n_conns;
	struct counter_table *per_ip;
	int draining;
	int drain_graceful;
	void (*drain_done)(void *arg);
	void *drain_arg;
};

struct conn {
	struct conn *prev, *next;
	struct conn_server *srv;
	struct conn_info info;
	char id[32];
	char addr[INET6_ADDRSTRLEN];
	struct sockaddr_storage sa;
	char listener[64];
	char tls_desc[160];
	evutil_socket_t fd;
	struct bufferevent *bev;
	struct event *defer;
	void *session; /* the engine's, once open() returned it */
	int opened;
	int paused;
	int closing;          /* close once the output has left */
	int dead;             /* closed: freed by the deferred event */
	int starttls_pending; /* STARTTLS asked: waiting for the reply to leave */
	int handshaking;      /* the STARTTLS handshake runs */
	int resume_pending;
	int got_bytes;
	int over_output; /* reached output_max: drained is owed */
	int in_input;    /* inside the engine's input callback */
	int timeout;
	const char *close_reason;
	time_t start;
	unsigned long long bytes_in, bytes_out;
};

static unsigned long conn_next_sid;

static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_setup_bev(struct conn *c);

/* ---- helpers ------------------------------------------------------------------------ */

static size_t output_len(const struct conn *c)
{
	if (c->bev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static size_t input_len(const struct conn *c)
{
	if (c->bev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_input(c->bev));
}

static void conn_defer(struct conn *c)
{
	event_active(c->defer, EV_TIMEOUT, 1);
}

static void conn_apply_timeouts(struct conn *c)
{
	if (c->bev == NULL)
		return;
	struct timeval tv = {c->timeout > 0 ? c->timeout : 600, 0};
	bufferevent_set_timeouts(c->bev, &tv, &tv);
}

static const char *tls_port_hint(const char *proto)
{
	if (strcmp(proto, "pop3") == 0)
		return "use port 995 (pop3s) for TLS from the first byte, or STLS here";
	if (strcmp(proto, "imap") == 0)
		return "use port 993 (imaps) for TLS from the first byte, or STARTTLS here";
	return "use the implicit-TLS port for TLS from the first byte, or STARTTLS here";
}

static const char *plain_port_hint(const char *proto)
{
	if (strcmp(proto, "pop3") == 0)
		return "cleartext on an implicit-TLS port? (use 110 with STLS)";
	if (strcmp(proto, "imap") == 0)
		return "cleartext on an implicit-TLS port? (use 143 with STARTTLS)";
	return "cleartext on an implicit-TLS port?";
}

/* Whether reading should be on, given the connection's state. */
static void conn_update_read(struct conn *c)
{
	if (c->bev == NULL || c->dead)
		return;
	if (c->closing || c->paused || c->starttls_pending ||
	    output_len(c) >= c->srv->set.output_max)
		bufferevent_disable(c->bev, EV_READ);
	else
		bufferevent_enable(c->bev, EV_READ);
}

/* ---- input --------------------------------------------------------------------------- */

static int conn_can_deliver(const struct conn *c)
{
	return c->opened && !c->dead && !c->closing && !c->paused && !c->starttls_pending &&
	       !c->handshaking && !c->in_input && c->bev != NULL &&
	       output_len(c) < c->srv->set.output_max;
}

/* Hands buffered input to the engine; again while it consumes and input remains (it
 * may stop early, e.g. at the output limit, and continue here later).  force: call it
 * once even without input (after conn_resume, as conn.h promises). */
static void conn_deliver(struct conn *c, int force)
{
	for (int rounds = 0; rounds < 1000 && conn_can_deliver(c); rounds++) {
		size_t before = input_len(c);
		if (before == 0 && !(force && rounds == 0))
			break;
		if (!c->got_bytes && before > 0) {
			c->got_bytes = 1;
			unsigned char first = 0;
			evbuffer_copyout(bufferevent_get_input(c->bev), &first, 1);
			if (first == 0x16 && !c->info.tls) {
				/* A TLS ClientHello on a cleartext port. */
				log_warn(c->srv->proto,
				         "sid=%s event=tls_mismatch hint=\"client started "
				         "TLS on a cleartext port; %s\"",
				         c->id, tls_port_hint(c->srv->proto));
				conn_close(c, "tls_on_plain_port");
				return;
			}
		}
		c->in_input = 1;
		c->srv->h.input(c->session);
		c->in_input = 0;
		if (c->dead || c->bev == NULL)
			return;
		size_t after = input_len(c);
		if (after == 0 || after >= before)
			break;
	}
	if (!c->dead)
		conn_update_read(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->dead)
		return;
	if (!c->opened) {
		/* Implicit TLS before the handshake completed: nothing to deliver yet. */
		return;
	}
	conn_deliver(c, 0);
}

/* ---- TLS ----------------------------------------------------------------------------- */

static struct bufferevent *conn_tls_bev_new(struct conn *c)
{
	if (c->srv->ssl_ctx == NULL)
		return NULL;
	SSL *ssl = SSL_new(c->srv->ssl_ctx);
	if (ssl == NULL)
		return NULL;
	struct bufferevent *bev = bufferevent_openssl_socket_new(
	    c->srv->base, c->fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return NULL; /* libevent has freed ssl already */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static void conn_tls_established(struct conn *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	const SSL_CIPHER *ci = ssl ? SSL_get_current_cipher(ssl) : NULL;
	snprintf(c->tls_desc, sizeof(c->tls_desc), "%s %s", ssl ? SSL_get_version(ssl) : "?",
	         ci ? SSL_CIPHER_get_name(ci) : "?");
	c->info.tls = 1;
	log_info(c->srv->proto, "sid=%s event=tls version=%s cipher=%s", c->id,
	         ssl ? SSL_get_version(ssl) : "?", ci ? SSL_CIPHER_get_name(ci) : "?");
}

/* The cleartext bufferevent goes, with whatever it had read (RFC 3207 5, RFC 2595 3:
 * nothing sent before the handshake may be acted upon); the socket stays. */
static void conn_do_start_tls(struct conn *c)
{
	c->starttls_pending = 0;
	bufferevent_free(c->bev);
	c->bev = conn_tls_bev_new(c);
	if (c->bev == NULL) {
		/* The socket is still ours: conn_free closes it. */
		if (c->opened && c->srv->h.tls_done != NULL)
			c->srv->h.tls_done(c->session, 0);
		conn_close(c, "tls_setup_failed");
		return;
	}
	c->handshaking = 1; /* until it ends: no input to the engine */
	conn_setup_bev(c);
}

/* ---- free ------------------------------------------------------------------------------ */

static void conn_release_socket(struct conn *c)
{
	if (c->bev != NULL) {
		int owns_fd = bufferevent_openssl_get_ssl(c->bev) != NULL;
		bufferevent_free(c->bev);
		c->bev = NULL;
		if (owns_fd)
			c->fd = -1; /* BEV_OPT_CLOSE_ON_FREE closed it */
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
}

static void conn_drain_check_done(struct conn_server *srv)
{
	if (srv->draining && srv->n_conns == 0 && srv->drain_done != NULL) {
		void (*done)(void *) = srv->drain_done;
		srv->drain_done = NULL;
		done(srv->drain_arg);
	}
}

/* The last step: the engine's closed callback, the log line, the memory. */
static void conn_free(struct conn *c)
{
	struct conn_server *srv = c->srv;
	const char *reason = c->close_reason ? c->close_reason : "closed";
	if (c->bev != NULL) {
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	}
	if (c->opened && srv->h.closed != NULL) {
		c->opened = 0;
		srv->h.closed(c->session, reason);
	}
	c->session = NULL;
	log_info(srv->proto, "sid=%s event=disconnect reason=%s duration=%ld in=%llu out=%llu",
	         c->id, reason, (long)(time(NULL) - c->start), c->bytes_in, c->bytes_out);
	conn_release_socket(c);
	if (c->defer != NULL)
		event_free(c->defer);
	char key[COUNTER_KEY_MAX];
	snprintf(key, sizeof(key), "conn:%s", c->addr);
	counter_add(srv->per_ip, key, -1, 0, 0);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->n_conns--;
	free(c);
}

static void conn_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->dead) {
		struct conn_server *srv = c->srv;
		conn_free(c);
		conn_drain_check_done(srv);
		return;
	}
	if (c->closing && output_len(c) == 0) {
		conn_close(c, c->close_reason);
		return;
	}
	if (c->starttls_pending && output_len(c) == 0) {
		conn_do_start_tls(c);
		return;
	}
	if (c->resume_pending) {
		c->resume_pending = 0;
		if (conn_can_deliver(c))
			conn_deliver(c, 1);
		else
			conn_update_read(c);
	}
}

/* ---- bufferevent callbacks ------------------------------------------------------------- */

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->dead)
		return;
	size_t pending = output_len(c);
	if (c->closing) {
		if (pending == 0)
			conn_close(c, c->close_reason);
		return;
	}
	if (c->starttls_pending) {
		if (pending == 0)
			conn_do_start_tls(c);
		return;
	}
	if (c->over_output && pending <= c->srv->set.output_max / 2) {
		c->over_output = 0;
		if (c->opened && c->srv->h.drained != NULL) {
			c->srv->h.drained(c->session);
			if (c->dead)
				return;
		}
	}
	if (conn_can_deliver(c) && input_len(c) > 0)
		conn_deliver(c, 0);
	else
		conn_update_read(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct conn_server *srv = c->srv;
	if (c->dead)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		conn_tls_established(c);
		if (!c->opened) {
			/* Implicit TLS: the connection is ready now. */
			c->session = srv->h.open(srv->h.ctx, c);
			if (c->session == NULL) {
				conn_close(c, "refused");
				return;
			}
			c->opened = 1;
		} else {
			/* STARTTLS */
			c->handshaking = 0;
			if (srv->h.tls_done != NULL)
				srv->h.tls_done(c->session, 1);
			if (c->dead)
				return;
		}
		conn_apply_timeouts(c);
		conn_update_read(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (c->closing) {
			conn_close(c, c->close_reason ? c->close_reason : "timeout");
			return;
		}
		log_info(srv->proto, "sid=%s event=timeout seconds=%d", c->id, c->timeout);
		if (c->opened && srv->h.timeout_reply != NULL && !c->starttls_pending &&
		    !c->handshaking)
			conn_write(c, srv->h.timeout_reply, strlen(srv->h.timeout_reply));
		conn_close_after_output(c, "timeout");
		return;
	}
	const char *reason = "eof";
	if (what & BEV_EVENT_ERROR) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (e != 0 && !c->info.tls) {
			char buf[256];
			ERR_error_string_n(e, buf, sizeof(buf));
			int r = ERR_GET_REASON(e);
			int plain = r == SSL_R_HTTP_REQUEST || r == SSL_R_WRONG_VERSION_NUMBER;
			if (r == SSL_R_UNEXPECTED_EOF_WHILE_READING)
				/* Gone before a handshake: a port probe, not worth a warning. */
				log_debug(srv->proto, "sid=%s event=tls_failed error=\"%s\"", c->id,
				          buf);
			else if (plain && c->info.implicit_tls && !c->opened)
				log_warn(srv->proto,
				         "sid=%s event=tls_failed error=\"%s\" hint=\"the client "
				         "did not start TLS: %s\"",
				         c->id, buf, plain_port_hint(srv->proto));
			else
				log_warn(srv->proto, "sid=%s event=tls_failed error=\"%s\"", c->id,
				         buf);
			reason = "tls_failed";
		} else {
			int err = EVUTIL_SOCKET_ERROR();
			reason = (what & BEV_EVENT_EOF) ? "eof"
			                                : (err == ECONNRESET ? "reset" : "error");
		}
	}
	if (c->handshaking && c->opened && srv->h.tls_done != NULL) {
		/* The STARTTLS handshake failed. */
		c->handshaking = 0;
		srv->h.tls_done(c->session, 0);
	}
	if (c->close_reason == NULL || !c->closing)
		c->close_reason = reason;
	conn_close(c, c->close_reason);
}

static void conn_setup_bev(struct conn *c)
{
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, c->srv->set.input_max);
	bufferevent_setwatermark(c->bev, EV_WRITE, c->srv->set.output_max / 2, 0);
	conn_apply_timeouts(c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- accept ------------------------------------------------------------------------------ */

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

/* A refusal line on a fresh socket: best effort, never blocks (the socket buffer is
 * empty, a short line fits).  On an implicit-TLS listener nothing is sent: the client
 * expects a handshake, not text. */
static void conn_refuse(struct conn_server *srv, evutil_socket_t fd, int implicit_tls)
{
	const char *line = srv->h.limit_reply;
	if (line != NULL && !implicit_tls) {
		ssize_t w = send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)w;
	}
	close(fd);
}

static void conn_accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                           int salen, void *arg)
{
	struct conn_listener *l = arg;
	struct conn_server *srv = l->srv;
	char addr[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, addr, sizeof(addr));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof(addr));
	char key[COUNTER_KEY_MAX];
	snprintf(key, sizeof(key), "conn:%s", addr);
	if (srv->n_conns >= srv->set.max_connections) {
		log_warn(srv->proto, "event=refused addr=%s listener=%s reason=max_connections",
		         addr, l->name);
		conn_refuse(srv, fd, l->implicit_tls);
		return;
	}
	if (counter_get(srv->per_ip, key, 0, 0) >= srv->set.max_connections_per_ip) {
		log_warn(srv->proto,
		         "event=refused addr=%s listener=%s reason=max_connections_per_ip", addr,
		         l->name);
		conn_refuse(srv, fd, l->implicit_tls);
		return;
	}
	if (l->implicit_tls && srv->ssl_ctx == NULL) {
		log_error(srv->proto, "event=refused addr=%s listener=%s reason=no_tls_context",
		          addr, l->name);
		close(fd);
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		log_error(srv->proto, "event=refused addr=%s reason=out_of_memory", addr);
		close(fd);
		return;
	}
	c->srv = srv;
	c->fd = fd;
	c->start = time(NULL);
	c->timeout = srv->set.timeout;
	snprintf(c->id, sizeof(c->id), "%xm%06lx", (unsigned)getpid(), ++conn_next_sid & 0xffffff);
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	snprintf(c->listener, sizeof(c->listener), "%s", l->name);
	if (salen > 0 && (size_t)salen <= sizeof(c->sa))
		memcpy(&c->sa, sa, (size_t)salen);
	c->info.id = c->id;
	c->info.addr = c->addr;
	c->info.sa = (const struct sockaddr *)&c->sa;
	c->info.loopback = sa_is_loopback(sa);
	c->info.tls = 0;
	c->info.tls_desc = c->tls_desc;
	c->info.listener = c->listener;
	c->info.implicit_tls = l->implicit_tls;

	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	evutil_make_socket_nonblocking(fd);
	c->defer = evtimer_new(srv->base, conn_defer_cb, c);
	if (c->defer != NULL)
		c->bev = l->implicit_tls ? conn_tls_bev_new(c)
		                         : bufferevent_socket_new(srv->base, fd, 0);
	if (c->bev == NULL) {
		log_error(srv->proto, "event=refused addr=%s reason=setup_failed", addr);
		if (c->defer != NULL)
			event_free(c->defer);
		close(fd); /* a failed bufferevent_openssl_socket_new does not close it */
		free(c);
		return;
	}
	counter_add(srv->per_ip, key, 1, 0, 0);
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->n_conns++;
	log_info(srv->proto, "sid=%s event=connect addr=%s listener=%s tls=%d", c->id, c->addr,
	         c->listener, l->implicit_tls);
	conn_setup_bev(c);
	if (!l->implicit_tls) {
		c->session = srv->h.open(srv->h.ctx, c);
		if (c->session == NULL) {
			conn_close(c, "refused");
			return;
		}
		c->opened = 1;
	}
}

/* ---- server --------------------------------------------------------------------------- */

struct conn_server *conn_server_new(struct event_base *base, const struct conn_settings *set,
                                    struct ssl_ctx_st *ssl_ctx, const struct conn_handler *h)
{
	struct conn_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return NULL;
	srv->base = base;
	srv->set = *set;
	snprintf(srv->proto, sizeof(srv->proto), "%s", set->proto ? set->proto : "conn");
	srv->set.proto = srv->proto;
	if (srv->set.input_max == 0)
		srv->set.input_max = CONN_INPUT_MAX_DEFAULT;
	if (srv->set.output_max == 0)
		srv->set.output_max = CONN_OUTPUT_MAX_DEFAULT;
	if (srv->set.max_connections <= 0)
		srv->set.max_connections = 1000;
	if (srv->set.max_connections_per_ip <= 0)
		srv->set.max_connections_per_ip = srv->set.max_connections;
	srv->ssl_ctx = ssl_ctx;
	srv->h = *h;
	srv->per_ip = counter_table_new(65536);
	if (srv->per_ip == NULL) {
		free(srv);
		return NULL;
	}
	return srv;
}

int conn_server_listen(struct conn_server *srv, int fd, int implicit_tls, const char *name)
{
	if (implicit_tls && srv->ssl_ctx == NULL) {
		log_error(srv->proto, "event=listen_failed listener=%s reason=no_tls_context",
		          name);
		return -1;
	}
	struct conn_listener *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -1;
	l->srv = srv;
	l->implicit_tls = implicit_tls;
	/* The listener accepts until EAGAIN: a blocking socket would hang the loop. */
	evutil_make_socket_nonblocking(fd);
	snprintf(l->name, sizeof(l->name), "%s", name ? name : "?");
	l->evl = evconnlistener_new(srv->base, conn_accept_cb, l,
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
static void conn_close_listeners(struct conn_server *srv, int take_pending)
{
	while (srv->listeners) {
		struct conn_listener *l = srv->listeners;
		srv->listeners = l->next;
		evconnlistener_disable(l->evl);
		for (int i = 0; take_pending && i < 10000; i++) {
			struct sockaddr_storage ss;
			socklen_t sslen = sizeof(ss);
			int fd = accept4(evconnlistener_get_fd(l->evl), (struct sockaddr *)&ss,
			                 &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd < 0)
				break;
			conn_accept_cb(l->evl, fd, (struct sockaddr *)&ss, (int)sslen, l);
		}
		evconnlistener_free(l->evl);
		free(l);
	}
}

void conn_server_drain(struct conn_server *srv, int graceful, void (*on_done)(void *arg), void *arg)
{
	srv->draining = 1;
	srv->drain_graceful = graceful;
	srv->drain_done = on_done;
	srv->drain_arg = arg;
	conn_close_listeners(srv, 1);
	if (!graceful) {
		/* Nothing is freed synchronously here (conn_close defers), so the list holds. */
		for (struct conn *c = srv->conns; c != NULL; c = c->next) {
			if (c->dead || c->closing)
				continue;
			if (c->opened && srv->h.shutdown != NULL)
				srv->h.shutdown(c->session);
			else
				conn_close(c, "shutdown");
		}
	}
	conn_drain_check_done(srv);
}

void conn_server_free(struct conn_server **srvp)
{
	struct conn_server *srv = *srvp;
	if (srv == NULL)
		return;
	*srvp = NULL;
	conn_close_listeners(srv, 0);
	srv->drain_done = NULL;
	while (srv->conns != NULL) {
		struct conn *c = srv->conns;
		if (c->close_reason == NULL)
			c->close_reason = "shutdown";
		c->dead = 1;
		conn_free(c);
	}
	counter_table_free(&srv->per_ip);
	free(srv);
}

int conn_server_count(const struct conn_server *srv)
{
	return srv->n_conns;
}

/* ---- the engine's side ------------------------------------------------------------------ */

const struct conn_info *conn_info(const struct conn *c)
{
	return &c->info;
}

struct slice conn_input(struct conn *c)
{
	struct slice s = {"", 0};
	if (c->dead || c->bev == NULL || c->starttls_pending || c->handshaking)
		return s;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t len = evbuffer_get_length(in);
	if (len > c->srv->set.input_max)
		len = c->srv->set.input_max;
	if (len == 0)
		return s;
	const char *p = (const char *)evbuffer_pullup(in, (ssize_t)len);
	if (p == NULL)
		return s;
	s.p = p;
	s.len = len;
	return s;
}

void conn_consume(struct conn *c, size_t n)
{
	if (c->dead || c->bev == NULL)
		return;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t len = evbuffer_get_length(in);
	if (n > len)
		n = len;
	evbuffer_drain(in, n);
	c->bytes_in += n;
}

void conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->dead || c->bev == NULL || len == 0)
		return;
	if (bufferevent_write(c->bev, data, len) != 0) {
		conn_close(c, "out_of_memory");
		return;
	}
	c->bytes_out += len;
	if (output_len(c) >= c->srv->set.output_max) {
		c->over_output = 1;
		bufferevent_disable(c->bev, EV_READ);
	}
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(line)) {
		conn_write(c, line, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (big == NULL) {
		conn_close(c, "out_of_memory");
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	conn_write(c, big, (size_t)n);
	free(big);
}

size_t conn_output_pending(const struct conn *c)
{
	return output_len(c);
}

void conn_pause(struct conn *c)
{
	c->paused = 1;
	if (c->bev != NULL && !c->dead)
		bufferevent_disable(c->bev, EV_READ);
}

void conn_resume(struct conn *c)
{
	if (c->dead)
		return;
	c->paused = 0;
	/* Not from here: the caller may be inside its own input handling. */
	c->resume_pending = 1;
	conn_defer(c);
}

void conn_set_timeout(struct conn *c, int seconds)
{
	c->timeout = seconds;
	if (!c->closing)
		conn_apply_timeouts(c);
}

int conn_start_tls(struct conn *c)
{
	if (c->dead || c->srv->ssl_ctx == NULL || c->info.tls || c->starttls_pending ||
	    c->handshaking)
		return -1;
	c->starttls_pending = 1;
	if (c->bev != NULL)
		bufferevent_disable(c->bev, EV_READ);
	/* The switch happens once the queued reply has left (write callback), or on the
	 * next loop turn when nothing is queued. */
	if (output_len(c) == 0)
		conn_defer(c);
	return 0;
}

void conn_close_after_output(struct conn *c, const char *reason)
{
	if (c->dead)
		return;
	if (!c->closing || c->close_reason == NULL)
		c->close_reason = reason;
	c->closing = 1;
	if (c->bev == NULL) {
		conn_close(c, reason);
		return;
	}
	bufferevent_disable(c->bev, EV_READ);
	/* A client that does not read gets a bounded time for the last line. */
	struct timeval tv = {CONN_CLOSE_FLUSH_SECONDS, 0};
	bufferevent_set_timeouts(c->bev, NULL, &tv);
	bufferevent_enable(c->bev, EV_WRITE);
	if (output_len(c) == 0)
		conn_defer(c);
}

void conn_close(struct conn *c, const char *reason)
{
	if (c->dead)
		return;
	c->dead = 1;
	if (c->close_reason == NULL || !c->closing)
		c->close_reason = reason;
	if (c->bev != NULL)
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	conn_defer(c);
}
