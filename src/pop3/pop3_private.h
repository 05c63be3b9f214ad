/* Private to src/pop3: the server and session structures shared by the engine's files
 * (pop3_session.c: connections, input, replies, login; pop3_commands.c: the command
 * table and handlers; pop3_maildrop.c: the mail store jobs on the thread pool). */
#ifndef TERN_POP3_POP3_PRIVATE_H
#define TERN_POP3_POP3_PRIVATE_H

#include "pop3/pop3_parse.h"
#include "pop3/pop3_server.h"

#include "base/buf.h"
#include "base/log.h"
#include "event/conn.h"
#include "store/mstore.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define POP3_MAX_ERRORS 20           /* refused commands before we hang up */
#define POP3_INPUT_MAX  (16 * 1024)  /* read ahead from a client at most */
#define POP3_OUTPUT_MAX (256 * 1024) /* a long answer pauses at this much unsent */
#define POP3_READ_CHUNK (64 * 1024)  /* message bytes read per pool job */

enum pop3_state {
	POP3_ST_AUTHORIZATION = 1 << 0,
	POP3_ST_TRANSACTION = 1 << 1,
	POP3_ST_UPDATE = 1 << 2, /* QUIT's expunge runs; nothing else is read */
};

enum pop3_mode {
	POP3_MODE_COMMAND,
	POP3_MODE_AUTH_PLAIN, /* "+ " sent, waiting for the PLAIN response */
};

/* Command flags (pop3_commands.c's table). */
enum {
	POP3_CMD_PRE_TLS = 1 << 0, /* allowed on a cleartext connection where login is
	                              not (otherwise: "-ERR [AUTH] ... STLS") */
	POP3_CMD_SECRET = 1 << 1,  /* the line carries a password: never logged, wiped */
};

enum pop3_job_kind {
	POP3_JOB_NONE,
	POP3_JOB_OPEN,   /* store, lock, INBOX snapshot */
	POP3_JOB_READ,   /* the next chunk of a RETR/TOP message */
	POP3_JOB_UPDATE, /* QUIT: flag, expunge, close, unlock */
	POP3_JOB_CLOSE,  /* the session ends: close and unlock, then free */
};

struct pop3_server {
	struct event_base *base;
	struct pool *pool;
	struct pop3_settings set;
	char hostname[256];
	char mail_root[4096];
	struct ssl_ctx_st *ssl_ctx;
	struct pop3_callbacks cb;
	struct conn_server *conns;
	struct counter_table *auth_failures;
	int own_auth_failures;
	int n_sessions;
	int n_busy; /* sessions waiting for a login or a pool job */
	int freeing;
};

/* A RETR or TOP answer being streamed. */
struct pop3_retr {
	int active;
	uint32_t uid;
	int fd; /* the message file, -1 until the first job opens it */
	struct pop3_stuffer stuffer;
	int eof;           /* the file (or TOP's line count) is done */
	int waiting_drain; /* the output is full: the next read waits */
	char *out;         /* 2 * POP3_READ_CHUNK: stuffed bytes from a job */
	size_t out_len;
	uint64_t sent;
};

/* LIST or UIDL without an argument, written in steps. */
struct pop3_listing {
	int active;
	int uidl;
	size_t next; /* index into msgs */
};

struct pop3_session {
	struct pop3_server *srv;
	struct pool *pool; /* the server's: completions may outlive srv at exit */
	struct conn *conn; /* NULL once the connection is gone */
	char id[32];
	char addr[64];
	int loopback;
	int tls;
	enum pop3_state state;
	enum pop3_mode mode;
	struct pop3_line_reader lr;
	char line[POP3_AUTH_LINE_MAX + 1];
	const char *verb;     /* command being handled, for logs */
	char user[256];       /* USER's argument, until PASS */
	char login_user[256]; /* the name the client logged in with */
	char domain[256];     /* the account's store location */
	char local[256];
	int busy;             /* a login or a pool job is pending */
	int dead;             /* the connection is gone: free when not busy */
	int closing;          /* the last reply is queued */
	int shutdown_pending; /* drain: say goodbye at the next safe point */
	int errors;
	int commands;
	time_t start;

	/* TRANSACTION: the maildrop as it was at login. */
	struct mstore *store;
	struct mstore_box *box;
	int lock_fd;
	uint32_t uidvalidity;
	struct mstore_msg *msgs;
	size_t n_msgs;
	unsigned char *deleted; /* DELE marks, one per message */
	size_t n_deleted;
	uint64_t size_deleted;
	size_t n_retrieved;

	/* The pending pool job and its outcome. */
	enum pop3_job_kind job;
	int job_status;
	char job_error[256];
	size_t n_expunged;

	struct pop3_retr retr;
	struct pop3_listing listing;
};

struct pop3_cmd {
	const char *verb;
	void (*handler)(struct pop3_session *s, const struct pop3_command *cmd);
	unsigned states;
	unsigned flags;
	const char *bad_state_reply;
};

/* pop3_session.c */
void pop3_session_log(struct pop3_session *s, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Every status line goes through here; -ERR lines are logged with the command and,
 * unless they carry [SYS/TEMP] or [IN-USE], count toward the error limit. */
void pop3_reply(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pop3_session_write(struct pop3_session *s, const void *data, size_t len);
void pop3_session_close_after_reply(struct pop3_session *s, const char *reason);
/* Every state change goes through here (logged old -> new). */
void pop3_session_set_state(struct pop3_session *s, enum pop3_state st);
/* Login is possible on this connection now (TLS, or loopback when allowed). */
int pop3_session_login_allowed(const struct pop3_session *s);
/* USER/PASS and AUTH end here: throttle, then the daemon's callback. */
void pop3_session_login(struct pop3_session *s, const char *user, const char *password);
/* A failed login: counted by the throttle, logged, answered like a wrong password. */
void pop3_session_login_refused(struct pop3_session *s, const char *user);
/* After an asynchronous step: take input again (and honour a pending drain). */
void pop3_session_continue(struct pop3_session *s);
/* The command line table lookup and checks. */
void pop3_session_command(struct pop3_session *s, const char *line, size_t len);
void pop3_session_auth_response(struct pop3_session *s, const char *line, size_t len);
/* Frees s now, or once its pending job or login completes. */
void pop3_session_release(struct pop3_session *s);

/* pop3_commands.c */
const struct pop3_cmd *pop3_cmd_find(const char *verb);
/* Continues LIST/UIDL or RETR/TOP after the output drained. */
void pop3_listing_step(struct pop3_session *s);

/* pop3_maildrop.c */
int pop3_job_submit(struct pop3_session *s, enum pop3_job_kind kind);
void pop3_maildrop_free(struct pop3_session *s);
/* RETR/TOP: starts streaming message index i (TOP: body_lines >= 0). */
void pop3_retr_start(struct pop3_session *s, size_t i, int64_t body_lines);
void pop3_retr_drained(struct pop3_session *s);

#endif
