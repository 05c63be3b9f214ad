/* Connections for the mailbox protocols (IMAP, POP3): listeners, accept with limits
 * (in all and per client IP), cleartext or implicit-TLS sockets, the STARTTLS/STLS
 * upgrade, a TLS ClientHello on a cleartext port told apart, idle timeouts, output
 * back-pressure, draining, and freeing only after the stack unwinds.
 *
 * A protocol engine sees a connection as bytes in (conn_input/conn_consume) and bytes
 * out (conn_write); it keeps its session in the handler's callbacks.  Everything here
 * runs on the loop thread. */
#ifndef TERN_EVENT_CONN_H
#define TERN_EVENT_CONN_H

#include "base/buf.h"

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct ssl_ctx_st;
struct counter_table;
struct conn_server;
struct conn;

struct conn_settings {
	const char *proto;             /* "imap", "pop3": the log subsystem */
	int max_connections;
	int max_connections_per_ip;
	size_t input_max;              /* bytes read ahead from a client at most (64 KiB) */
	size_t output_max;             /* reading pauses while this much is unsent (256 KiB) */
	int timeout;                   /* idle seconds before the connection is closed; the
					  engine may change it per connection */
};

/* What an engine may read of a connection; borrowed for the connection's lifetime
 * (tls_desc changes after STARTTLS). */
struct conn_info {
	const char *id;                /* session id for log lines */
	const char *addr;              /* numeric client address */
	const struct sockaddr *sa;
	int loopback;
	int tls;                       /* 1 once TLS is up (implicit or after STARTTLS) */
	const char *tls_desc;          /* "TLSv1.3 TLS_AES_256_GCM_SHA384" or "" */
	const char *listener;          /* the listener's name */
	int implicit_tls;              /* the listener is TLS from the first byte */
};

struct conn_handler {
	void *ctx;
	/* A new connection is ready (for implicit TLS: after the handshake).  Returns the
	 * engine's session for it, or NULL to refuse (the connection is closed).  The
	 * engine writes its greeting from here.  limit_reply: when the connection is over
	 * a limit, open is not called; this line (e.g. "* BYE Too many connections\r\n") is
	 * written before closing. */
	void *(*open)(void *ctx, struct conn *c);
	/* Bytes are waiting (conn_input); also called after conn_resume().  The engine
	 * consumes what it handled and may leave the rest. */
	void (*input)(void *session);
	/* The unsent output fell below half of output_max after having been over it: an
	 * engine producing a long answer in steps writes its next step.  May be NULL. */
	void (*drained)(void *session);
	/* The STARTTLS handshake ended (ok 1 or 0; after 0 the connection closes).  Input
	 * read before the handshake has been thrown away (RFC 3207 / 2595 injection). */
	void (*tls_done)(void *session, int ok);
	/* The server drains for a shutdown: the engine says goodbye at its next safe point
	 * and calls conn_close_after_output().  May be NULL (then the connection is simply
	 * closed when the drain times out). */
	void (*shutdown)(void *session);
	/* Last call for the connection (peer gone, timeout, error, conn_close): the engine
	 * frees its session; c is freed after the callback returns. */
	void (*closed)(void *session, const char *reason);
	const char *limit_reply;
	/* Sent before closing an idle connection (e.g. "* BYE Autologout; idle too long"). */
	const char *timeout_reply;
};

struct conn_server *conn_server_new(struct event_base *base, const struct conn_settings *set,
				    struct ssl_ctx_st *ssl_ctx, const struct conn_handler *h);
/* Accepts on an already listening socket; implicit_tls: TLS from the first byte.  The
 * per-IP counts live in a table of this server (per worker process).  0 or -1. */
int conn_server_listen(struct conn_server *srv, int fd, int implicit_tls, const char *name);
/* Stops accepting; calls the handlers' shutdown (unless graceful) and on_done once no
 * connection is left.  May be called again to turn a graceful drain into a shutdown. */
void conn_server_drain(struct conn_server *srv, int graceful, void (*on_done)(void *arg),
		       void *arg);
/* Closes every connection at once ("closed" is called for each). */
void conn_server_free(struct conn_server **srv);
int conn_server_count(const struct conn_server *srv);

const struct conn_info *conn_info(const struct conn *c);
/* The bytes read so far and not consumed: borrowed until the next call on c. */
struct slice conn_input(struct conn *c);
void conn_consume(struct conn *c, size_t n);
/* Queues output.  Large answers go in steps: check conn_output_pending() against the
 * limit and continue from the drained callback. */
void conn_write(struct conn *c, const void *data, size_t len);
void conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t conn_output_pending(const struct conn *c);
/* Stops delivering input (while an asynchronous step runs) and resumes it. */
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);
/* Seconds of inactivity allowed from now on. */
void conn_set_timeout(struct conn *c, int seconds);
/* Starts TLS on a cleartext connection once the output queued so far (the "OK, begin
 * TLS" line) has been sent; tls_done reports the end.  -1 when no TLS context. */
int conn_start_tls(struct conn *c);
/* Closes after the queued output is sent; nothing more is read.  reason goes to the
 * closed callback and the disconnect log line. */
void conn_close_after_output(struct conn *c, const char *reason);
/* Closes now (queued output is dropped). */
void conn_close(struct conn *c, const char *reason);

#endif
