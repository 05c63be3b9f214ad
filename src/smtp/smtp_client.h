/* The outbound SMTP client engine (RFC 5321 with PIPELINING 2920, SIZE 1870, 8BITMIME
 * 6152, SMTPUTF8 6531, DSN 3461, STARTTLS 3207, AUTH 4954 PLAIN/LOGIN, implicit TLS 8314).
 *
 * One struct smtp_client is one connection to one address.  It connects, reads the
 * greeting, says EHLO (HELO when EHLO is refused), does STARTTLS and AUTH as the
 * settings ask, and then carries any number of messages, one at a time.  Everything is
 * asynchronous on the caller's libevent loop; callbacks always run from the loop, never
 * from inside a call of this API.
 *
 * Callbacks may call any function of this API on the client they were given, including
 * smtp_client_free() and smtp_client_quit(): the engine touches nothing of it after
 * such a call and frees it once the stack has unwound.
 *
 * The process must ignore SIGPIPE (the daemon does): TLS writes go through write(2). */
#ifndef TERN_SMTP_SMTP_CLIENT_H
#define TERN_SMTP_SMTP_CLIENT_H

#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/ssl.h>

struct event_base;

enum smtp_client_tls {
	SMTP_CLIENT_TLS_NONE,
	/* STARTTLS when the server offers it, cleartext otherwise (RFC 7435).  A failed
	 * handshake fails the connection with retry_without_tls set: see
	 * struct smtp_client_failure. */
	SMTP_CLIENT_TLS_OPPORTUNISTIC,
	SMTP_CLIENT_TLS_REQUIRED, /* STARTTLS or fail (temporary) */
	SMTP_CLIENT_TLS_IMPLICIT, /* TLS from the first byte (port 465, RFC 8314) */
};

struct smtp_client_settings {
	const char *helo; /* our name for EHLO/HELO; required */
	enum smtp_client_tls tls;
	SSL_CTX *ssl_ctx; /* from tls_client_ctx_new(); required unless tls is NONE */
	/* SNI (only when it is a DNS name, RFC 6066 3) and the name the certificate is
	 * checked against: the MX host or the smarthost.  NULL: no SNI, and a
	 * certificate never counts as verified. */
	const char *tls_name;
	/* 1: a certificate that does not verify for tls_name fails the connection
	 * (temporary) instead of only being reported in info.  For a smarthost. */
	int tls_verify;
	/* AUTH (RFC 4954) with PLAIN (RFC 4616), else LOGIN.  NULL user: no AUTH. */
	const char *auth_user;
	const char *auth_password;
	/* 0: AUTH only after TLS (the password never crosses the network in clear); a
	 * server without TLS then fails the connection.  1: allow it without TLS. */
	int auth_allow_plaintext;
	/* Seconds; 0 or less takes the RFC 5321 4.5.3.2 value (connect: 5 min, greeting:
	 * 5 min, each command: 5 min, each data block: 3 min, the reply to the final
	 * ".": 10 min).  The TLS handshake counts against the connect timeout (implicit
	 * TLS) or the command timeout (STARTTLS). */
	int connect_timeout;
	int greeting_timeout;
	int command_timeout;
	int data_timeout;
	int data_end_timeout;
};

struct smtp_client;

/* What a session learnt: for the log line and bounces.  Borrowed from the client. */
struct smtp_client_info {
	char id[24];            /* this connection in the log lines ("cid=") */
	char remote_addr[64];   /* "192.0.2.1:25", "[2001:db8::1]:25" */
	char remote_name[256];  /* the name in the EHLO (else HELO, else greeting) reply */
	char tls_desc[160];     /* "" or "version=TLSv1.3 cipher=... bits=256" */
	int tls_verified;       /* 1: the chain verified and matched tls_name */
	char verify_error[128]; /* why not verified; "" when verified or no TLS */
	int esmtp;              /* EHLO was accepted */
	int pipelining, size_ext, eightbitmime, smtputf8, dsn, chunking, starttls;
	int enhanced_codes;         /* ENHANCEDSTATUSCODES */
	int auth_plain, auth_login; /* mechanisms offered */
	long long max_size;         /* SIZE limit; 0: none announced */
	int authenticated;
	int messages; /* transactions completed on this connection (a message
	                 refused before anything was sent does not count) */
};

/* Why a connection failed or closed.  Borrowed from the client. */
struct smtp_client_failure {
	int temporary; /* 1: try again later (or another host); 0: permanent */
	/* 1 only in SMTP_CLIENT_TLS_OPPORTUNISTIC mode when the STARTTLS handshake
	 * failed: usual MTA practice (and what RFC 7435 opportunistic security allows)
	 * is to retry at once on a new connection with SMTP_CLIENT_TLS_NONE, since the
	 * alternative is not to deliver at all.  The engine never does it by itself. */
	int retry_without_tls;
	int code; /* the reply that caused it, 0 when none */
	char enhanced[16];
	char text[512];
	char why[600];     /* one line for logs and DSNs, never empty */
	const char *stage; /* "connect", "greeting", "EHLO", "STARTTLS", "TLS",
	                      "AUTH", "MAIL", "RCPT", "DATA", "data", "end-of-data",
	                      "RSET", "idle" */
};

enum smtp_client_event {
	SMTP_CLIENT_READY,  /* greeted, EHLO/STARTTLS/AUTH done: send now (once) */
	SMTP_CLIENT_FAILED, /* the connection failed before READY: see smtp_client_failure() */
	SMTP_CLIENT_CLOSED, /* an idle READY connection ended (the server closed it, sent
	                       421 or garbage, or the socket failed) */
};

typedef void smtp_client_event_fn(struct smtp_client *c, enum smtp_client_event ev, void *arg);

/* Connects (non-blocking) to sa and runs the greeting, EHLO (HELO when EHLO gets a 5xx),
 * STARTTLS per set->tls (then EHLO again), AUTH.  cb runs later on the loop with READY or
 * FAILED, and after READY at most once more, with CLOSED.  After FAILED or CLOSED the
 * caller frees the client (smtp_client_free(), or smtp_client_quit(), which still says
 * QUIT when the connection is in a state to).  set and its strings are copied.
 * FAILED is temporary for connection refused/reset/timeout, a 4xx greeting, a protocol
 * violation, a TLS failure, a missing required extension; permanent for a 5xx
 * greeting, a 5xx to HELO, a 5xx to AUTH.  Returns NULL only when out of memory or
 * set is unusable (no helo, TLS without ssl_ctx, a control character in a name). */
struct smtp_client *smtp_client_connect(struct event_base *base, const struct sockaddr *sa,
                                        socklen_t salen, const struct smtp_client_settings *set,
                                        smtp_client_event_fn *cb, void *arg);

const struct smtp_client_info *smtp_client_info(const struct smtp_client *c);
const struct smtp_client_failure *smtp_client_failure(const struct smtp_client *c);
/* failure->why, or "" when nothing failed. */
const char *smtp_client_error(const struct smtp_client *c);
/* 1 when a message can be sent now (READY and idle). */
int smtp_client_is_ready(const struct smtp_client *c);
/* Hands the connection's events (CLOSED while idle) to another owner, e.g. a pool of
 * idle connections kept for the next message. */
void smtp_client_set_event_cb(struct smtp_client *c, smtp_client_event_fn *cb, void *arg);

/* A recipient of one message.  addr: "local@domain" without brackets.  orcpt: "" or NULL,
 * "rfc822;ADDR" (the decoded address: the engine xtext-encodes it, RFC 3461 4.2), or an
 * address alone (taken as rfc822).  notify: SMTP_NOTIFY_* bits of smtp_parse.h, 0 when
 * not given.  NOTIFY and ORCPT go out only when the server has DSN. */
struct smtp_client_rcpt {
	const char *addr;
	const char *orcpt;
	unsigned notify;
	/* Results: the RCPT reply when it was not 2xx, else the reply to the end of data
	 * (or to DATA when that failed); a code of ours (4xx/5xx, see smtp_client.c) when
	 * no server reply applies.  Always 2xx, 4xx or 5xx after done. */
	int code;
	char enhanced[16];
	char text[512];
};

struct smtp_client_msg {
	const char *from;  /* "local@domain"; "" for the null reverse-path */
	int smtputf8;      /* needs SMTPUTF8 (RFC 6531) */
	int body_8bit;     /* BODY=8BITMIME when the server has 8BITMIME */
	int ret;           /* DSN RET: 0 none, 1 FULL, 2 HDRS (QUEUE_RET_*) */
	const char *envid; /* DSN ENVID, decoded; NULL or "" for none */
	struct smtp_client_rcpt *rcpts;
	int n_rcpts; /* at least 1 */
	/* The message, as stored (CRLF lines, not dot-stuffed): fd is read with pread at
	 * [offset, offset + len) in chunks while the output drains; the engine never
	 * closes it. */
	int fd;
	off_t offset;
	off_t len;
};

/* Results of smtp_client_send()'s done.  SENT: every rcpt has its final code, and c may
 * be READY again (smtp_client_is_ready()).  BROKEN: the connection failed mid-way; the
 * rcpts without a final server answer have a 4xx of ours; free c. */
#define SMTP_CLIENT_SENT   0
#define SMTP_CLIENT_BROKEN (-1)

typedef void smtp_client_done_fn(struct smtp_client *c, struct smtp_client_msg *m, int result,
                                 void *arg);

/* Sends one message on a READY connection: MAIL FROM (SIZE=, BODY=8BITMIME, SMTPUTF8,
 * RET=/ENVID= as the server allows), RCPT TO for each recipient (NOTIFY=/ORCPT=), DATA,
 * the message dot-stuffed on the fly, ".".  With PIPELINING the MAIL, all RCPTs and
 * DATA leave in one write (RFC 2920 3.1) and replies are matched in order.
 * Checked before anything is sent, failing every rcpt permanently: a message larger
 * than the server's SIZE (552 5.3.4), SMTPUTF8 needed but not offered (553 5.6.7,
 * RFC 6531 3.2), a sender or ENVID with a control character or too long (501 5.1.7).
 * A recipient address like that fails alone (501 5.1.3); the others go.
 * done runs exactly once, later on the loop; m and everything it points to must stay
 * valid until then.  After a failed transaction the engine sends RSET before done, so
 * that c is ready for the next message when done runs (smtp_client_is_ready()).
 * Returns 0, or -1 (nothing happens, done will not run) when c is not READY or m is
 * malformed (no rcpts, NULL addresses, fd < 0, negative offset or len). */
int smtp_client_send(struct smtp_client *c, struct smtp_client_msg *m, smtp_client_done_fn *done,
                     void *arg);

/* Says QUIT and frees the client once the reply came (or after a bounded wait) when the
 * connection is idle and in sync; otherwise frees at once.  Clears *c.  No callback
 * runs afterwards.  NULL or *c NULL: nothing. */
void smtp_client_quit(struct smtp_client **c);
/* Closes the connection and frees the client at once.  Clears *c.  No callback runs
 * afterwards.  NULL or *c NULL: nothing. */
void smtp_client_free(struct smtp_client **c);

#endif
