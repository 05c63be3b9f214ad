/* The SMTP server engine (RFC 5321 and its extensions) for the smtp (MX, port 25),
 * submission (587, STARTTLS) and submissions (465, implicit TLS) roles.
 *
 * The engine owns connections, parsing, state, pipelining and replies.  It reaches the
 * directory, the password check and the queue only through struct smtp_callbacks, which
 * the daemon installs; so the same engine serves every port and can be tested alone. */
#ifndef TERN_SMTP_SMTP_SERVER_H
#define TERN_SMTP_SMTP_SERVER_H

#include "msg/addr.h"
#include "smtp/smtp_parse.h"

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct ssl_ctx_st;
struct counter_table;
struct smtp_server;
struct smtp_session;

enum smtp_role { SMTP_ROLE_MX, SMTP_ROLE_SUBMISSION, SMTP_ROLE_SUBMISSIONS };

struct smtp_settings {
	const char *hostname;
	long long max_message_size;
	int max_recipients;
	int max_connections;
	int max_connections_per_ip;
	int command_timeout;
	int data_timeout;
	int auth_plaintext_loopback;
	int auth_max_failures;
	int auth_failure_window;
	/* Failed logins per IP and per account; shared by the workers so that a limit
	 * holds whichever worker a connection lands on.  NULL: the engine keeps its own. */
	struct counter_table *auth_failures;
};

/* What the policy callbacks may read of a session.  Borrowed: valid during the call. */
struct smtp_session_info {
	const char *id;
	enum smtp_role role;
	const char *client_addr;       /* numeric address */
	const struct sockaddr *client_sa;
	int loopback;
	const char *helo;              /* "" before EHLO/HELO */
	int tls;
	const char *auth_user;         /* NULL when not authenticated */
};

/* One delivery target of a message: a local account address or an external address. */
struct smtp_target {
	char addr[512];
	char orcpt[520];               /* "rfc822;ADDR" or "" */
	unsigned notify;               /* SMTP_NOTIFY_* bits, 0 when not given */
};

#define SMTP_RCPT_MAX_TARGETS 64

enum smtp_rcpt_verdict {
	SMTP_RCPT_OK,
	SMTP_RCPT_UNKNOWN_USER,
	SMTP_RCPT_RELAY_DENIED,
	SMTP_RCPT_TEMPFAIL,
};

/* What the rcpt callback fills: the targets one RCPT expands to. */
struct smtp_rcpt_targets {
	char addr[SMTP_RCPT_MAX_TARGETS][512];
	int n;
};

struct smtp_envelope {
	const char *from;              /* "" for the null sender */
	const struct smtp_mail_params *params;
	const struct smtp_target *targets;
	int n_targets;
	const char *helo;
	const char *client_addr;
	const char *auth_user;         /* "" when not authenticated */
};

struct smtp_callbacks {
	void *ctx;
	/* Expands rcpt into targets, or says why not.  May block briefly (indexed lookup). */
	enum smtp_rcpt_verdict (*rcpt)(void *ctx, const struct smtp_session_info *s,
				       const struct mail_addr *rcpt, struct smtp_rcpt_targets *out);
	/* 1 when the authenticated account may use from as MAIL FROM, 0 not, -1 error. */
	int (*may_send_as)(void *ctx, const char *account, const char *from);
	/* Starts checking a password; must later call smtp_session_auth_done() exactly once,
	 * on the loop thread (never from inside this call). */
	void (*auth)(void *ctx, struct smtp_session *s, const char *user, const char *password);
	/* Opens a new queue file for the envelope.  Returns a handle and writes the queue id
	 * (at most 31 chars) to id_r, or NULL with *error_r. */
	void *(*msg_begin)(void *ctx, const struct smtp_envelope *env, char id_r[32],
			   const char **error_r);
	/* Appends message bytes.  0, or -1 (the message will be refused with 451/452). */
	int (*msg_append)(void *ctx, void *msg, const void *data, size_t len, int *disk_full_r);
	/* Makes the message durable (asynchronously); must later call
	 * smtp_session_commit_done() exactly once, on the loop thread.  Owns msg from now. */
	void (*msg_commit)(void *ctx, struct smtp_session *s, void *msg);
	/* Throws an unfinished message away.  Owns msg from now. */
	void (*msg_abort)(void *ctx, void *msg);
};

struct smtp_server *smtp_server_new(struct event_base *base, const struct smtp_settings *set,
				    struct ssl_ctx_st *ssl_ctx, const struct smtp_callbacks *cb);
/* Accepts connections on an already listening socket fd for role; name is the
 * listener's name for the logs.  0 or -1. */
int smtp_server_listen(struct smtp_server *srv, int fd, enum smtp_role role, const char *name);
/* Stops accepting (connections already queued on the listeners are still taken) and
 * calls on_done (from the loop) once no session is left.  graceful (a reload): sessions
 * go on until the client quits.  Otherwise (shutdown): sessions between transactions
 * get 421 and are closed; one inside a transaction finishes it first.  May be called
 * again to turn a graceful drain into a shutdown. */
void smtp_server_drain(struct smtp_server *srv, int graceful, void (*on_done)(void *arg),
		       void *arg);
/* Closes every session at once (for a hard stop after the drain timeout). */
void smtp_server_free(struct smtp_server **srv);
int smtp_server_session_count(const struct smtp_server *srv);

/* Completions of the asynchronous callbacks. */
void smtp_session_auth_done(struct smtp_session *s, int ok);
/* ok: the message is durable.  Otherwise disk_full selects 452 over 451. */
void smtp_session_commit_done(struct smtp_session *s, int ok, int disk_full, const char *error);

#endif
