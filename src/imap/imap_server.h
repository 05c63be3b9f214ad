/* The IMAP engine (IMAP4rev2, RFC 9051, serving IMAP4rev1 (RFC 3501) clients too) for
 * the imap (143, STARTTLS) and imaps (993) listeners.  It serves a user's mailboxes from
 * the mail store (store/mstore.h), running every store call on the worker's thread
 * pool; passwords are checked through struct imap_callbacks, which the daemon
 * installs. */
#ifndef TERN_IMAP_IMAP_SERVER_H
#define TERN_IMAP_IMAP_SERVER_H

struct event_base;
struct ssl_ctx_st;
struct counter_table;
struct pool;
struct imap_server;

struct imap_settings {
	const char *hostname;
	const char *mail_root;         /* DATA_DIR/mail */
	int max_connections;
	int max_connections_per_ip;
	int timeout;                   /* idle seconds (RFC 9051 5.4: at least 30 minutes) */
	int idle_timeout;              /* seconds an IDLE may last before BYE (29 minutes) */
	long long max_message_size;    /* APPEND literal limit */
	int auth_plaintext_loopback;   /* 1: LOGIN/AUTHENTICATE allowed without TLS on loopback */
	int auth_max_failures;
	int auth_failure_window;
	struct counter_table *auth_failures; /* shared by the workers; NULL: own table */
};

/* Login result: ok 1 with the account's mail store location (MAIL_ROOT/domain/user),
 * ok 0 (wrong user or password: the engine does not say which) or ok -1 (temporary
 * failure: NO [UNAVAILABLE]). */
typedef void imap_login_done_fn(void *session, int ok, const char *domain, const char *user);

struct imap_callbacks {
	void *ctx;
	/* Checks user/password; calls done(session, ...) exactly once, later, on the loop
	 * thread (never from inside this call). */
	void (*login)(void *ctx, const char *user, const char *password, imap_login_done_fn *done,
		      void *session);
};

struct imap_server *imap_server_new(struct event_base *base, struct pool *pool,
				    const struct imap_settings *set, struct ssl_ctx_st *ssl_ctx,
				    const struct imap_callbacks *cb);
/* implicit_tls: the imaps role.  0 or -1. */
int imap_server_listen(struct imap_server *srv, int fd, int implicit_tls, const char *name);
/* As conn_server_drain(): graceful lets sessions finish; otherwise sessions get
 * "* BYE" at their next command boundary and are closed. */
void imap_server_drain(struct imap_server *srv, int graceful, void (*on_done)(void *arg),
		       void *arg);
void imap_server_free(struct imap_server **srv);
int imap_server_session_count(const struct imap_server *srv);

#endif
