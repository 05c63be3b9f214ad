/* The POP3 engine (RFC 1939, CAPA 2449, STLS 2595, AUTH 5034, implicit TLS 8314) for
 * the pop3 (110, STLS) and pop3s (995) listeners.  It serves a user's INBOX from the
 * mail store (store/mstore.h), running every store call on the worker's thread pool;
 * passwords are checked through struct pop3_callbacks, which the daemon installs. */
#ifndef TERN_POP3_POP3_SERVER_H
#define TERN_POP3_POP3_SERVER_H

struct event_base;
struct ssl_ctx_st;
struct counter_table;
struct pool;
struct pop3_server;

struct pop3_settings {
	const char *hostname;
	const char *mail_root;         /* DATA_DIR/mail */
	int max_connections;
	int max_connections_per_ip;
	int timeout;                   /* idle seconds (RFC 1939 3: at least 600) */
	int auth_plaintext_loopback;   /* 1: USER/PASS and AUTH allowed without TLS on loopback */
	int auth_max_failures;
	int auth_failure_window;
	struct counter_table *auth_failures; /* shared by the workers; NULL: own table */
};

/* Login result: ok 1 with the account's mail store location (MAIL_ROOT/domain/user),
 * or ok 0 (wrong user or password: the engine does not say which), or ok -1 (a
 * temporary failure: the engine answers -ERR [SYS/TEMP]). */
typedef void pop3_login_done_fn(void *session, int ok, const char *domain, const char *user);

struct pop3_callbacks {
	void *ctx;
	/* Checks user/password; calls done(session, ...) exactly once, later, on the loop
	 * thread (never from inside this call). */
	void (*login)(void *ctx, const char *user, const char *password, pop3_login_done_fn *done,
		      void *session);
};

struct pop3_server *pop3_server_new(struct event_base *base, struct pool *pool,
				    const struct pop3_settings *set, struct ssl_ctx_st *ssl_ctx,
				    const struct pop3_callbacks *cb);
/* implicit_tls: the pop3s role.  0 or -1. */
int pop3_server_listen(struct pop3_server *srv, int fd, int implicit_tls, const char *name);
/* As conn_server_drain(): graceful lets sessions finish; otherwise sessions are told
 * -ERR and closed (a session inside QUIT's UPDATE state finishes it first). */
void pop3_server_drain(struct pop3_server *srv, int graceful, void (*on_done)(void *arg),
		       void *arg);
void pop3_server_free(struct pop3_server **srv);
int pop3_server_session_count(const struct pop3_server *srv);

#endif
