/* Private to src/smtp: the session, transaction and server structures shared by the
 * engine's files (smtp_session.c: connections and input; smtp_txn.c: transactions and
 * the message; smtp_commands.c: the command table; smtp_auth.c: AUTH). */
#ifndef TERN_SMTP_SMTP_PRIVATE_H
#define TERN_SMTP_SMTP_PRIVATE_H

#include "smtp/smtp_server.h"

#include "base/buf.h"
#include "base/log.h"
#include "msg/dotstuff.h"

#include <arpa/inet.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

struct bufferevent;
struct evconnlistener;

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

/* smtp_session.c */
void smtp_session_log(struct smtp_session *s, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Every reply goes through here; 4xx and 5xx are logged with the command. */
void smtp_reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void smtp_session_write(struct smtp_session *s, const char *data, size_t len);
void smtp_session_close_after_reply(struct smtp_session *s, const char *reason);
/* Handles buffered input until it runs out or an asynchronous step is pending. */
void smtp_session_process(struct smtp_session *s);
/* Frees s now, or once its pending callback completes. */
void smtp_session_free(struct smtp_session *s);

/* smtp_txn.c */
void smtp_txn_end(struct smtp_session *s);
int smtp_txn_add_target(struct smtp_txn *t, const char *addr, const struct smtp_rcpt_params *p,
			const char *orig);
void smtp_txn_body(struct smtp_session *s, const char *data, size_t len);
int smtp_txn_begin(struct smtp_session *s, int bdat);
void smtp_txn_finish(struct smtp_session *s);

/* smtp_commands.c */
void smtp_session_command(struct smtp_session *s, const char *line, size_t len);
void smtp_bdat_chunk_done(struct smtp_session *s);

/* smtp_auth.c */
void smtp_cmd_auth(struct smtp_session *s, const char *arg, size_t len);
void smtp_auth_response(struct smtp_session *s, const char *line, size_t len);

#endif
