/* IMAP sessions: the server (listeners through event/conn.h), reading commands
 * (imap_reader, with literal limits per state), dispatch through the command table,
 * running handlers inline or on the pool, the order of a command's output (its untagged
 * responses, then what the view owes the client, then the tagged line), IDLE, drain.
 *
 * One command runs at a time; pipelined commands wait in the connection's input (and
 * the reader) until the one before is answered (RFC 9051 5.5 allows more, but the
 * order of untagged responses is what clients rely on).  While a command's handler
 * runs on the pool the connection is paused and nothing else of the session is
 * touched: the handler owns the session until its completion runs on the loop. */
#include "imap/imap_private.h"

#include "base/counter.h"
#include "base/utf8.h"
#include "event/pool.h"
#include "event/watch.h"

#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IMAP_IDLE_POLL_MS 500       /* without change notification, IDLE polls this often */
#define IMAP_IDLE_SAFETY_MS 30000   /* with it: a poll for what the kernel does not report */
#define IMAP_IDLE_FIRST_MS 100      /* IDLE's first poll */
#define IMAP_CMD_MAX_OTHER (1024 * 1024) /* a whole non-APPEND command, literals included */
#define IMAP_CMD_MAX_PRE_AUTH (16 * 1024)

/* A command with what the session keeps beside the handler's view of it. */
struct session_cmd {
	struct imap_cmd c;             /* first: handlers get &sc->c */
	struct imap_session *s;
	struct buf tagged;             /* "TAG OK ..." CRLF, written after the sync */
	int pending;                   /* the handler returned IMAP_CMD_PENDING */
	int want_line;                 /* ... and waits for a client line */
	int more_wait;                 /* IMAP_CMD_MORE: waits for the output to drain */
	int sync_failed;
	const char *sync_error;
	void (*work)(void *arg);       /* imap_session_run_blocking */
	void *work_arg;
};

enum job_kind { JOB_HANDLER, JOB_SYNC, JOB_WORK, JOB_IDLE_POLL };

struct session_priv {
	struct imap_reader rd;
	struct buf line;               /* imap_session_want_line's line */
	int line_bad;
	int job;                       /* a pool job runs: the session is the job's */
	enum job_kind job_kind;
	int dead;                      /* the connection is gone: free when the job ends */
	int closing;                   /* BYE said: nothing more is read */
	int shutdown;                  /* drain: BYE at the next command boundary */
	int starttls;                  /* start TLS once the running command is answered */
	int idle;                      /* an IDLE command runs */
	int idle_line_waiting;         /* DONE arrived while the idle poll ran */
	int idle_again;                /* a change was reported while the idle poll ran */
	struct event *idle_timer;
	struct watch *idle_watch;      /* the selected mailbox's change watch during IDLE */
	int idle_poll_ms;              /* IDLE's poll interval (slow with a watch) */
	int commands;
	time_t start;
	/* s->info points here: a copy that outlives the connection (a pool job may still
	 * log after the connection went). */
	struct conn_info info;
	char id[32], addr[64], listener[64], tls_desc[160];
	struct sockaddr_storage sa;
};

static void session_process(struct imap_session *s);
static void idle_tick(evutil_socket_t fd, short what, void *arg);
static void session_call(struct imap_session *s);
static void session_finish(struct imap_session *s);
static void session_free(struct imap_session *s);

static struct session_priv *priv(const struct imap_session *s)
{
	return s->priv;
}

static struct session_cmd *cur(const struct imap_session *s)
{
	return (struct session_cmd *)s->cmd;
}

static const char *state_name(enum imap_state st)
{
	switch (st) {
	case IMAP_ST_NOT_AUTH: return "not_authenticated";
	case IMAP_ST_AUTH: return "authenticated";
	case IMAP_ST_SELECTED: return "selected";
	case IMAP_ST_LOGOUT: return "logout";
	}
	return "?";
}

/* ---- log and output helpers ----------------------------------------------------------- */

void imap_session_log(struct imap_session *s, enum log_level level, const char *fmt, ...)
{
	char line[2048], q[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (s->user[0] != '\0')
		log_quote(q, sizeof(q), s->user, strlen(s->user));
	else
		snprintf(q, sizeof(q), "-");
	log_msg(level, "imap", "sid=%s user=%s %s", s->info ? s->info->id : "-", q, line);
}

void imap_session_set_state(struct imap_session *s, enum imap_state state)
{
	if (s->state == state)
		return;
	imap_session_log(s, LOG_LEVEL_DEBUG, "event=state from=%s to=%s", state_name(s->state),
			 state_name(state));
	s->state = state;
}

void imap_out(struct imap_cmd *c, const char *fmt, ...)
{
	va_list ap;
	char small[512];
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(small)) {
		buf_append(&c->out, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (big == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	buf_append(&c->out, big, (size_t)n);
	free(big);
}

void imap_out_untagged(struct imap_cmd *c, const char *fmt, ...)
{
	va_list ap;
	char small[512];
	buf_append(&c->out, "* ", 2);
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(small)) {
		buf_append(&c->out, small, (size_t)n);
	} else if (n >= 0) {
		char *big = malloc((size_t)n + 1);
		if (big != NULL) {
			va_start(ap, fmt);
			vsnprintf(big, (size_t)n + 1, fmt, ap);
			va_end(ap);
			buf_append(&c->out, big, (size_t)n);
			free(big);
		}
	}
	buf_append(&c->out, "\r\n", 2);
}

void imap_out_data(struct imap_cmd *c, const void *data, size_t len)
{
	buf_append(&c->out, data, len);
}

void imap_out_string(struct imap_session *s, struct imap_cmd *c, const char *str, size_t len)
{
	imap_write_string(&c->out, str, len, s->utf8_accept);
}

void imap_out_nstring(struct imap_session *s, struct imap_cmd *c, const char *str_or_null,
		      size_t len)
{
	imap_write_nstring(&c->out, str_or_null, len, s->utf8_accept);
}

/* The tagged line; NO and BAD are logged with the command's name (never its
 * arguments: LOGIN's are a password). */
static void cmd_tagged(struct imap_cmd *c, const char *result, const char *fmt, va_list ap)
{
	struct session_cmd *sc = (struct session_cmd *)c;
	char text[1024];
	vsnprintf(text, sizeof(text), fmt, ap);
	for (char *p = text; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	if (c->done)
		return; /* a handler bug; the first answer stands */
	buf_reset(&sc->tagged);
	buf_printf(&sc->tagged, "%s %s %s\r\n", c->parsed.tag[0] ? c->parsed.tag : "*", result, text);
	snprintf(c->result, sizeof(c->result), "%s", result);
	c->done = 1;
	if (strcmp(result, "OK") != 0) {
		char q[1100];
		imap_session_log(sc->s, LOG_LEVEL_INFO, "event=command_failed cmd=%s%s result=%s reply=%s",
				 c->parsed.uid ? "UID_" : "", c->parsed.name[0] ? c->parsed.name : "-",
				 result, log_quote(q, sizeof(q), text, strlen(text)));
	}
}

void imap_cmd_ok(struct imap_cmd *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cmd_tagged(c, "OK", fmt, ap);
	va_end(ap);
}

void imap_cmd_no(struct imap_cmd *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cmd_tagged(c, "NO", fmt, ap);
	va_end(ap);
}

void imap_cmd_bad(struct imap_cmd *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cmd_tagged(c, "BAD", fmt, ap);
	va_end(ap);
}

void imap_cmd_store_error(struct imap_session *s, struct imap_cmd *c, int status,
			  const char *error, int trycreate)
{
	char q[600];
	const char *e = error ? error : "?";
	/* The client's mistakes (no such mailbox, name taken) are logged with the NO reply;
	 * the store's own reason only matters when the store failed. */
	if (status != MSTORE_NOT_FOUND && status != MSTORE_EXISTS && status != MSTORE_BAD_NAME)
		imap_session_log(s, status == MSTORE_IO ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO,
				 "event=store_error cmd=%s status=%d error=%s", c->parsed.name,
				 status, log_quote(q, sizeof(q), e, strlen(e)));
	switch (status) {
	case MSTORE_NOT_FOUND:
		if (trycreate)
			imap_cmd_no(c, "[TRYCREATE] No such mailbox");
		else
			imap_cmd_no(c, "[NONEXISTENT] No such mailbox");
		break;
	case MSTORE_EXISTS: imap_cmd_no(c, "[ALREADYEXISTS] Mailbox already exists"); break;
	case MSTORE_BAD_NAME: imap_cmd_no(c, "[CANNOT] Not allowed for this mailbox name"); break;
	case MSTORE_NO_SPACE: imap_cmd_no(c, "[OVERQUOTA] Out of disk space"); break;
	case MSTORE_LIMIT: imap_cmd_no(c, "[LIMIT] Too many mailboxes or keywords"); break;
	case MSTORE_IN_USE: imap_cmd_no(c, "[INUSE] Mailbox in use, try again later"); break;
	default: imap_cmd_no(c, "[SERVERBUG] Internal error, try again later"); break;
	}
}

/* ---- mailbox names ------------------------------------------------------------------- */

int imap_mailbox_arg(struct imap_session *s, const struct imap_arg *arg, char out[MSTORE_NAME_MAX])
{
	if (!imap_arg_is_astring(arg) || arg->len >= MSTORE_NAME_MAX)
		return -1;
	if (memchr(arg->s, '\0', arg->len) != NULL)
		return -1;
	int eight = 0;
	for (size_t i = 0; i < arg->len; i++)
		if ((unsigned char)arg->s[i] >= 0x80)
			eight = 1;
	if (eight) {
		/* UTF-8 (UTF8=ACCEPT, or a client that sends it anyway: RFC 9051 5.1 lets a
		 * server take UTF-8 names from IMAP4rev2 clients). */
		if (!utf8_valid(arg->s, arg->len))
			return -1;
		memcpy(out, arg->s, arg->len);
		out[arg->len] = '\0';
	} else if (s->utf8_accept) {
		memcpy(out, arg->s, arg->len);
		out[arg->len] = '\0';
	} else if (imap_mutf7_to_utf8(arg->s, arg->len, out, MSTORE_NAME_MAX) < 0) {
		return -1;
	}
	size_t n = strlen(out);
	if (n >= 5 && strncasecmp(out, "INBOX", 5) == 0 && (n == 5 || out[5] == '/'))
		memcpy(out, "INBOX", 5);
	return 0;
}

void imap_out_mailbox(struct imap_session *s, struct imap_cmd *c, const char *name)
{
	if (s->utf8_accept) {
		imap_write_string(&c->out, name, strlen(name), 1);
		return;
	}
	char enc[MSTORE_NAME_MAX * 3];
	if (imap_utf8_to_mutf7(name, strlen(name), enc, sizeof(enc)) < 0)
		imap_write_string(&c->out, name, strlen(name), 0);
	else
		imap_write_string(&c->out, enc, strlen(enc), 0);
}

/* ---- commands ------------------------------------------------------------------------ */

static void cmd_free(struct session_cmd *sc)
{
	if (sc == NULL)
		return;
	if (sc->c.state != NULL && sc->c.state_free != NULL)
		sc->c.state_free(sc->c.state);
	imap_command_free(&sc->c.parsed);
	buf_deinit(&sc->c.out);
	buf_deinit(&sc->tagged);
	free(sc);
}

static struct session_cmd *cmd_new(struct imap_session *s)
{
	struct session_cmd *sc = calloc(1, sizeof(*sc));
	if (sc == NULL)
		return NULL;
	sc->s = s;
	buf_init(&sc->c.out, 0);
	buf_init(&sc->tagged, 0);
	return sc;
}

static void session_write(struct imap_session *s, const void *data, size_t len)
{
	if (s->conn != NULL && len > 0 && !priv(s)->closing)
		conn_write(s->conn, data, len);
}

static void session_say_bye(struct imap_session *s, const char *line, const char *reason)
{
	struct session_priv *p = priv(s);
	if (p->closing || s->conn == NULL)
		return;
	session_write(s, line, strlen(line));
	p->closing = 1;
	conn_close_after_output(s->conn, reason);
}

/* An answer from the session itself (no handler ran). */
static void session_reply(struct imap_session *s, const char *tag, const char *result,
			  const char *cmd, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void session_reply(struct imap_session *s, const char *tag, const char *result,
			  const char *cmd, const char *fmt, ...)
{
	char text[600], q[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (s->conn != NULL)
		conn_printf(s->conn, "%s %s %s\r\n", tag[0] ? tag : "*", result, text);
	imap_session_log(s, LOG_LEVEL_INFO, "event=command_failed cmd=%s result=%s reply=%s",
			 cmd[0] ? cmd : "-", result, log_quote(q, sizeof(q), text, strlen(text)));
	if (strcmp(result, "BAD") == 0)
		s->errors++;
}

static void session_errors_check(struct imap_session *s)
{
	if (s->errors >= IMAP_MAX_ERRORS && !priv(s)->closing) {
		imap_session_log(s, LOG_LEVEL_WARN, "event=too_many_errors errors=%d", s->errors);
		session_say_bye(s, "* BYE Too many errors\r\n", "too_many_errors");
	}
}

/* ---- pool jobs ----------------------------------------------------------------------- */

static void job_work(void *arg)
{
	struct imap_session *s = arg;
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cur(s);
	switch (p->job_kind) {
	case JOB_HANDLER: {
		enum imap_cmd_result r = sc->c.def->fn(s, &sc->c);
		if (r == IMAP_CMD_MORE) {
			sc->more_wait = 1;
			return;
		}
		if (r != IMAP_CMD_DONE || !sc->c.done)
			imap_cmd_no(&sc->c, "[SERVERBUG] Internal error");
	}
		/* the view's news before the tagged line */
		__attribute__((fallthrough));
	case JOB_SYNC:
		if (s->state == IMAP_ST_SELECTED && s->view.box != NULL) {
			int allow = !(sc->c.def->flags & IMAP_CMD_NO_EXPUNGE) || sc->c.parsed.uid;
			const char *error;
			/* Strings the command cached (FETCH, SEARCH) go in one transaction. */
			(void)mstore_box_cache_flush(s->view.box, &error);
			if (imap_view_sync(s, &sc->c, allow) != MSTORE_OK)
				sc->sync_failed = 1;
		}
		break;
	case JOB_WORK:
		sc->work(sc->work_arg);
		break;
	case JOB_IDLE_POLL:
		if (s->state == IMAP_ST_SELECTED && s->view.box != NULL &&
		    imap_view_sync(s, &sc->c, 1) != MSTORE_OK)
			sc->sync_failed = 1;
		break;
	}
}

static void job_done(void *arg)
{
	struct imap_session *s = arg;
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cur(s);
	p->job = 0;
	if (p->dead) {
		session_free(s);
		return;
	}
	if (sc->sync_failed) {
		session_write(s, sc->c.out.data, sc->c.out.len);
		buf_reset(&sc->c.out);
		imap_session_log(s, LOG_LEVEL_ERROR, "event=sync_failed mailbox=\"%s\"", s->view.name);
		session_say_bye(s, "* BYE [SERVERBUG] Mailbox index failure, closing connection\r\n",
				"sync_failed");
		return;
	}
	switch (p->job_kind) {
	case JOB_HANDLER:
		if (sc->more_wait) {
			session_write(s, sc->c.out.data, sc->c.out.len);
			buf_reset(&sc->c.out);
			if (s->conn != NULL && conn_output_pending(s->conn) < IMAP_OUT_STEP) {
				sc->more_wait = 0;
				session_call(s);
			}
			return;
		}
		session_finish(s);
		break;
	case JOB_SYNC:
		session_finish(s);
		break;
	case JOB_WORK:
		sc->work = NULL;
		session_call(s);
		break;
	case JOB_IDLE_POLL:
		session_write(s, sc->c.out.data, sc->c.out.len);
		buf_reset(&sc->c.out);
		if (p->idle_line_waiting) {
			p->idle_line_waiting = 0;
			session_process(s);
		} else if (p->idle_again) {
			/* The poll may have looked before that change: once more. */
			p->idle_again = 0;
			idle_tick(-1, 0, s);
		}
		break;
	}
}

static int session_submit(struct imap_session *s, enum job_kind kind)
{
	struct session_priv *p = priv(s);
	p->job = 1;
	p->job_kind = kind;
	if (pool_submit(s->srv->pool, job_work, job_done, s) < 0) {
		p->job = 0;
		return -1;
	}
	if (s->conn != NULL && kind != JOB_IDLE_POLL)
		conn_pause(s->conn);
	return 0;
}

/* ---- running a command --------------------------------------------------------------- */

/* The command is answered: its output, then the tagged line; then the next command. */
static void session_finish(struct imap_session *s)
{
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cur(s);
	if (!sc->c.done)
		imap_cmd_no(&sc->c, "[SERVERBUG] Internal error");
	session_write(s, sc->c.out.data, sc->c.out.len);
	session_write(s, sc->tagged.data, sc->tagged.len);
	if (strcmp(sc->c.result, "BAD") == 0)
		s->errors++;
	p->commands++;
	s->cmd = NULL;
	cmd_free(sc);
	if (s->conn == NULL)
		return;
	if (s->state == IMAP_ST_LOGOUT) {
		p->closing = 1;
		conn_close_after_output(s->conn, "logout");
		return;
	}
	if (p->starttls) {
		p->starttls = 0;
		imap_reader_reset(&p->rd);
		if (conn_start_tls(s->conn) < 0) {
			session_say_bye(s, "* BYE [UNAVAILABLE] TLS not available\r\n", "tls_failed");
			return;
		}
	}
	session_errors_check(s);
	/* Input waits in the connection (paused or not consumed): go on from the loop. */
	conn_resume(s->conn);
}

/* Calls the handler (again) on this thread, or submits it to the pool. */
static void session_call(struct imap_session *s)
{
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cur(s);
	if (sc->c.def->flags & IMAP_CMD_BLOCKING) {
		if (session_submit(s, JOB_HANDLER) < 0) {
			imap_cmd_no(&sc->c, "[UNAVAILABLE] Server busy, try again later");
			session_finish(s);
		}
		return;
	}
	sc->pending = 0;
	enum imap_cmd_result r = sc->c.def->fn(s, &sc->c);
	if (p->dead)
		return;
	if (r == IMAP_CMD_PENDING) {
		sc->pending = 1;
		/* A continuation request ("+ ...") leaves now. */
		session_write(s, sc->c.out.data, sc->c.out.len);
		buf_reset(&sc->c.out);
		if (s->conn != NULL) {
			if (sc->want_line)
				conn_resume(s->conn);
			else if (!p->job)
				conn_pause(s->conn);
		}
		return;
	}
	if (r == IMAP_CMD_MORE) {
		session_write(s, sc->c.out.data, sc->c.out.len);
		buf_reset(&sc->c.out);
		if (s->conn != NULL && conn_output_pending(s->conn) >= IMAP_OUT_STEP) {
			sc->more_wait = 1;
			conn_pause(s->conn);
			return;
		}
		session_call(s); /* an inline handler producing steps: bounded by its own state */
		return;
	}
	if (s->state == IMAP_ST_SELECTED && s->view.box != NULL) {
		if (session_submit(s, JOB_SYNC) == 0)
			return;
	}
	session_finish(s);
}

void imap_session_resume(struct imap_session *s)
{
	struct session_priv *p = priv(s);
	if (p->dead) {
		if (!p->job)
			session_free(s);
		return;
	}
	struct session_cmd *sc = cur(s);
	if (sc == NULL || !sc->pending)
		return;
	session_call(s);
}

int imap_session_run_blocking(struct imap_session *s, void (*work)(void *arg), void *arg)
{
	struct session_cmd *sc = cur(s);
	sc->work = work;
	sc->work_arg = arg;
	if (session_submit(s, JOB_WORK) < 0) {
		sc->work = NULL;
		return -1;
	}
	return 0;
}

void imap_session_want_line(struct imap_session *s)
{
	struct session_cmd *sc = cur(s);
	sc->want_line = 1;
	imap_reader_reset(&priv(s)->rd);
}

struct slice imap_session_line(const struct imap_session *s)
{
	struct session_priv *p = priv(s);
	struct slice l = { NULL, 0 };
	if (p->line_bad)
		return l;
	l.p = p->line.data != NULL ? p->line.data : "";
	l.len = p->line.len;
	return l;
}

void imap_session_start_tls(struct imap_session *s)
{
	priv(s)->starttls = 1;
}

/* Sets the reader's limits for the command that is starting: small literals before
 * login, the message size for APPEND (RFC 7888 4: APPENDLIMIT), IMAP_LITERAL_MAX else.
 * Reads the command name from what the reader holds of the first line and the input. */
static void session_limits(struct imap_session *s, struct slice in)
{
	struct session_priv *p = priv(s);
	struct imap_reader *r = &p->rd;
	if (r->line_start != 0 || r->literal_left != 0)
		return;
	if (s->state == IMAP_ST_NOT_AUTH) {
		r->lim.literal_max = IMAP_LITERAL_PRE_AUTH;
		r->lim.command_max = IMAP_CMD_MAX_PRE_AUTH;
		return;
	}
	char head[96];
	size_t n = 0;
	for (size_t i = 0; i < r->cmd.len && n < sizeof(head) - 1; i++)
		head[n++] = r->cmd.data[i];
	for (size_t i = 0; i < in.len && n < sizeof(head) - 1; i++)
		head[n++] = in.p[i];
	head[n] = '\0';
	char *sp = strchr(head, ' ');
	int append = 0;
	if (sp != NULL) {
		const char *name = sp + 1;
		if (strncasecmp(name, "UID ", 4) == 0)
			name += 4;
		append = strncasecmp(name, "APPEND ", 7) == 0;
	}
	long long max = s->srv->set.max_message_size;
	if (append && max > 0) {
		r->lim.literal_max = (size_t)max;
		r->lim.command_max = (size_t)max + IMAP_LITERAL_MAX;
	} else {
		r->lim.literal_max = IMAP_LITERAL_MAX;
		r->lim.command_max = IMAP_CMD_MAX_OTHER;
	}
}

static const char *not_allowed_text(const struct imap_session *s, const struct imap_cmd_def *d)
{
	if (s->state == IMAP_ST_NOT_AUTH)
		return "not allowed now: log in first";
	if (d->states == IMAP_ST_NOT_AUTH)
		return "not allowed now: already logged in";
	if (d->states == IMAP_ST_SELECTED)
		return "needs a selected mailbox";
	return "not allowed now";
}

/* A whole command was read: parse, check against the table, run. */
static void session_command(struct imap_session *s, struct slice line)
{
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cmd_new(s);
	if (sc == NULL) {
		session_say_bye(s, "* BYE [UNAVAILABLE] Out of memory\r\n", "out_of_memory");
		return;
	}
	const char *error = "Syntax error";
	enum imap_parse_status ps = imap_command_parse(line, &sc->c.parsed, &error);
	if ((strcmp(sc->c.parsed.name, "LOGIN") == 0 || strcmp(sc->c.parsed.name, "AUTHENTICATE") == 0) &&
	    p->rd.cmd.data != NULL)
		explicit_bzero(p->rd.cmd.data, p->rd.cmd.len); /* a password */
	imap_reader_reset(&p->rd);
	if (ps == IMAP_PARSE_NO_TAG) {
		session_reply(s, "*", "BAD", "-", "Missing or invalid tag");
		cmd_free(sc);
		return;
	}
	const char *tag = sc->c.parsed.tag;
	char name[40];
	snprintf(name, sizeof(name), "%s", sc->c.parsed.name[0] ? sc->c.parsed.name : "-");
	if (ps == IMAP_PARSE_BAD) {
		session_reply(s, tag, "BAD", name, "%s", error ? error : "Syntax error");
		cmd_free(sc);
		return;
	}
	const struct imap_cmd_def *d = imap_command_find(sc->c.parsed.name);
	if (d == NULL) {
		session_reply(s, tag, "BAD", "-", "Unknown command");
		cmd_free(sc);
		return;
	}
	if (sc->c.parsed.uid && !(d->flags & IMAP_CMD_UID_OK)) {
		session_reply(s, tag, "BAD", name, "UID %s is not a command", d->name);
		cmd_free(sc);
		return;
	}
	if (!(d->states & s->state)) {
		session_reply(s, tag, "BAD", name, "%s %s", d->name, not_allowed_text(s, d));
		cmd_free(sc);
		return;
	}
	if ((d->flags & IMAP_CMD_READ_WRITE) && s->view.readonly) {
		session_reply(s, tag, "NO", name, "[READ-ONLY] The mailbox was opened with EXAMINE");
		cmd_free(sc);
		return;
	}
	sc->c.def = d;
	s->cmd = &sc->c;
	session_call(s);
}

/* A line for a handler waiting in imap_session_want_line().  0 when more input is needed. */
static int session_input_line(struct imap_session *s)
{
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cur(s);
	struct slice in = conn_input(s->conn);
	size_t used = 0;
	p->rd.lim.line_max = IMAP_LINE_MAX;
	enum imap_read_status st = imap_reader_feed_line(&p->rd, in.p, in.len, &used);
	if (st == IMAP_READ_COMMAND) {
		struct slice l = imap_reader_command(&p->rd);
		buf_reset(&p->line);
		buf_append(&p->line, l.p, l.len);
		p->line_bad = 0;
		if (p->rd.cmd.data != NULL)
			explicit_bzero(p->rd.cmd.data, p->rd.cmd.len); /* a SASL response */
	}
	conn_consume(s->conn, used);
	if (st == IMAP_READ_NEED_MORE)
		return 0;
	if (st == IMAP_READ_TOO_BIG_FATAL) {
		session_say_bye(s, "* BYE Line too long\r\n", "line_too_long");
		return 0;
	}
	if (st == IMAP_READ_BAD_LINE)
		p->line_bad = 1;
	imap_reader_reset(&p->rd);
	sc->want_line = 0;
	session_call(s);
	if (p->line.data != NULL)
		explicit_bzero(p->line.data, p->line.cap);
	buf_reset(&p->line);
	p->line_bad = 0;
	return 1;
}

static void session_process(struct imap_session *s)
{
	struct session_priv *p = priv(s);
	for (int rounds = 0; rounds < 100000; rounds++) {
		if (p->dead || p->closing || s->conn == NULL)
			return;
		struct session_cmd *sc = cur(s);
		if (sc == NULL && p->shutdown) {
			session_say_bye(s, "* BYE [UNAVAILABLE] Server shutting down\r\n", "shutdown");
			return;
		}
		if (sc != NULL && !sc->want_line)
			return; /* pipelined input waits for the running command */
		if (p->job) {
			if (p->job_kind == JOB_IDLE_POLL)
				p->idle_line_waiting = 1;
			return;
		}
		struct slice in = conn_input(s->conn);
		if (in.len == 0)
			return;
		if (sc != NULL) {
			if (!session_input_line(s))
				return;
			continue;
		}
		session_limits(s, in);
		size_t used = 0;
		enum imap_read_status st = imap_reader_feed(&p->rd, in.p, in.len, &used);
		char tag[64];
		snprintf(tag, sizeof(tag), "%s", p->rd.tag[0] ? p->rd.tag : "*");
		switch (st) {
		case IMAP_READ_NEED_MORE:
			conn_consume(s->conn, used);
			if (used == 0)
				return;
			break;
		case IMAP_READ_CONTINUE:
			conn_consume(s->conn, used);
			session_write(s, "+ Ready for literal data\r\n", 26);
			break;
		case IMAP_READ_TOO_BIG:
			conn_consume(s->conn, used);
			imap_reader_reset(&p->rd);
			session_reply(s, tag, "NO", "-", "[TOOBIG] Literal too big (limit %zu)",
				      p->rd.lim.literal_max);
			break;
		case IMAP_READ_TOO_BIG_FATAL:
			conn_consume(s->conn, used);
			session_reply(s, tag, "BAD", "-", "[TOOBIG] Command too long (literal limit %zu, "
				      "line limit %d)", p->rd.lim.literal_max, IMAP_LINE_MAX);
			session_say_bye(s, "* BYE Too much data, closing connection\r\n", "too_big");
			return;
		case IMAP_READ_BAD_LINE:
			conn_consume(s->conn, used);
			imap_reader_reset(&p->rd);
			session_reply(s, tag, "BAD", "-", "Line contains NUL or a bare CR");
			break;
		case IMAP_READ_COMMAND: {
			/* The command lives in the reader's buffer: parse before consuming
			 * more (consuming does not touch it). */
			conn_consume(s->conn, used);
			session_command(s, imap_reader_command(&p->rd));
			break;
		}
		}
		session_errors_check(s);
	}
}

/* ---- IDLE (RFC 2177) ------------------------------------------------------------------ */

static void idle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct imap_session *s = arg;
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cur(s);
	if (p->dead || p->closing || !p->idle || sc == NULL || !sc->want_line)
		return;
	if (s->state != IMAP_ST_SELECTED || s->view.box == NULL)
		return;
	if (p->job) {
		p->idle_again = p->job_kind == JOB_IDLE_POLL;
		return;
	}
	session_submit(s, JOB_IDLE_POLL);
}

/* The kernel reported a change where the selected mailbox lives. */
static void idle_notify(void *arg)
{
	idle_tick(-1, 0, arg);
}

static void idle_timer_fired(evutil_socket_t fd, short what, void *arg)
{
	struct imap_session *s = arg;
	struct session_priv *p = priv(s);
	idle_tick(fd, what, arg);
	if (p->idle && !p->dead) {
		struct timeval tv = { p->idle_poll_ms / 1000, (p->idle_poll_ms % 1000) * 1000 };
		evtimer_add(p->idle_timer, &tv);
	}
}

/* Watches the selected mailbox for IDLE; 0, or -1 (then IDLE polls). */
static int idle_watch_start(struct imap_session *s)
{
	struct session_priv *p = priv(s);
	char paths[3][MSTORE_WATCH_PATH_MAX];
	const char *ptrs[3];
	if (s->srv->watcher == NULL || s->view.box == NULL)
		return -1;
	size_t n = mstore_box_watch_paths(s->view.box, paths, 3);
	for (size_t i = 0; i < n; i++)
		ptrs[i] = paths[i];
	p->idle_watch = n > 0 ? watch_add(s->srv->watcher, ptrs, n, idle_notify, s) : NULL;
	return p->idle_watch != NULL ? 0 : -1;
}

static void idle_stop(struct imap_session *s)
{
	struct session_priv *p = priv(s);
	if (p->idle_timer != NULL)
		evtimer_del(p->idle_timer);
	watch_remove(&p->idle_watch);
	p->idle = 0;
	p->idle_again = 0;
	if (s->conn != NULL)
		conn_set_timeout(s->conn, s->srv->set.timeout);
}

enum imap_cmd_result imap_cmd_idle(struct imap_session *s, struct imap_cmd *c)
{
	struct session_priv *p = priv(s);
	if (!p->idle) {
		if (c->parsed.n_args != 0) {
			imap_cmd_bad(c, "IDLE takes no arguments");
			return IMAP_CMD_DONE;
		}
		if (p->idle_timer == NULL)
			p->idle_timer = event_new(s->srv->base, -1, 0, idle_timer_fired, s);
		if (p->idle_timer == NULL) {
			imap_cmd_no(c, "[UNAVAILABLE] Out of memory");
			return IMAP_CMD_DONE;
		}
		p->idle_poll_ms = idle_watch_start(s) == 0 ? IMAP_IDLE_SAFETY_MS : IMAP_IDLE_POLL_MS;
		/* A first poll soon: for what changed before the watch was in place. */
		struct timeval tv = { 0, IMAP_IDLE_FIRST_MS * 1000 };
		evtimer_add(p->idle_timer, &tv);
		p->idle = 1;
		if (s->conn != NULL)
			conn_set_timeout(s->conn, s->srv->set.idle_timeout > 0 ? s->srv->set.idle_timeout
									  : 29 * 60);
		imap_out(c, "+ idling\r\n");
		imap_session_want_line(s);
		return IMAP_CMD_PENDING;
	}
	struct slice l = imap_session_line(s);
	idle_stop(s);
	if (l.p != NULL && l.len == 4 && strncasecmp(l.p, "DONE", 4) == 0)
		imap_cmd_ok(c, "IDLE terminated");
	else
		imap_cmd_bad(c, "Expected DONE");
	return IMAP_CMD_DONE;
}

/* ---- connection callbacks ------------------------------------------------------------- */

static void session_info_copy(struct session_priv *p, const struct conn_info *ci)
{
	p->info = *ci;
	snprintf(p->id, sizeof(p->id), "%s", ci->id ? ci->id : "-");
	snprintf(p->addr, sizeof(p->addr), "%s", ci->addr ? ci->addr : "?");
	snprintf(p->listener, sizeof(p->listener), "%s", ci->listener ? ci->listener : "?");
	snprintf(p->tls_desc, sizeof(p->tls_desc), "%s", ci->tls_desc ? ci->tls_desc : "");
	if (ci->sa != NULL)
		memcpy(&p->sa, ci->sa,
		       ci->sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	p->info.id = p->id;
	p->info.addr = p->addr;
	p->info.listener = p->listener;
	p->info.tls_desc = p->tls_desc;
	p->info.sa = (const struct sockaddr *)&p->sa;
}

static void *session_open(void *ctx, struct conn *conn)
{
	struct imap_server *srv = ctx;
	struct imap_session *s = calloc(1, sizeof(*s));
	struct session_priv *p = calloc(1, sizeof(*p));
	if (s == NULL || p == NULL) {
		free(s);
		free(p);
		return NULL;
	}
	s->srv = srv;
	s->conn = conn;
	session_info_copy(p, conn_info(conn));
	s->info = &p->info;
	s->state = IMAP_ST_NOT_AUTH;
	s->priv = p;
	p->start = time(NULL);
	struct imap_limits lim = {
		.line_max = IMAP_LINE_MAX,
		.literal_max = IMAP_LITERAL_PRE_AUTH,
		.command_max = IMAP_CMD_MAX_PRE_AUTH,
		.nonsync_max = IMAP_NONSYNC_MAX,
		.literal_plus = 1,
	};
	imap_reader_init(&p->rd, &lim);
	buf_init(&p->line, 0);
	srv->n_sessions++;
	imap_session_log(s, LOG_LEVEL_INFO, "event=session addr=%s listener=%s tls=%d",
			 s->info->addr, s->info->listener, s->info->tls);
	struct buf g;
	buf_init(&g, 0);
	buf_append_str(&g, "* OK [CAPABILITY ");
	imap_capabilities(s, &g);
	buf_printf(&g, "] %s IMAP4rev2 ready\r\n", srv->hostname);
	conn_write(conn, g.data, g.len);
	buf_deinit(&g);
	return s;
}

static void session_input_cb(void *session)
{
	struct imap_session *s = session;
	struct session_priv *p = priv(s);
	struct session_cmd *sc = cur(s);
	if (sc != NULL && sc->more_wait && !p->job) {
		if (s->conn != NULL && conn_output_pending(s->conn) < IMAP_OUT_STEP) {
			sc->more_wait = 0;
			session_call(s);
		}
		return;
	}
	session_process(s);
}

static void session_drained_cb(void *session)
{
	struct imap_session *s = session;
	struct session_cmd *sc = cur(s);
	if (sc != NULL && sc->more_wait && !priv(s)->job) {
		sc->more_wait = 0;
		session_call(s);
	}
}

static void session_tls_done_cb(void *session, int ok)
{
	struct imap_session *s = session;
	imap_reader_reset(&priv(s)->rd);
	if (s->conn != NULL)
		session_info_copy(priv(s), conn_info(s->conn));
	imap_session_log(s, ok ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, "event=starttls result=%s",
			 ok ? "ok" : "failed");
}

static void session_shutdown_cb(void *session)
{
	struct imap_session *s = session;
	struct session_priv *p = priv(s);
	p->shutdown = 1;
	if (p->closing || p->dead)
		return;
	if (s->cmd == NULL || p->idle) {
		/* Between commands, or in IDLE (RFC 2177: the server may end it with BYE). */
		if (p->idle)
			idle_stop(s);
		session_say_bye(s, "* BYE [UNAVAILABLE] Server shutting down\r\n", "shutdown");
	}
}

static void session_closed_cb(void *session, const char *reason)
{
	struct imap_session *s = session;
	struct session_priv *p = priv(s);
	imap_session_log(s, LOG_LEVEL_INFO, "event=session_end reason=%s commands=%d errors=%d",
			 reason ? reason : "closed", p->commands, s->errors);
	s->conn = NULL;
	p->dead = 1;
	if (p->idle_timer != NULL)
		evtimer_del(p->idle_timer);
	watch_remove(&p->idle_watch);
	struct session_cmd *sc = cur(s);
	if (p->job)
		return; /* the job's completion frees */
	if (sc != NULL && sc->pending && !sc->want_line)
		return; /* waits for an outside callback (login): imap_session_resume frees */
	session_free(s);
}

/* ---- freeing ------------------------------------------------------------------------- */

static void server_free_now(struct imap_server *srv)
{
	imap_snapshots_free(&srv->snapshots);
	watcher_free(&srv->watcher);
	if (srv->own_auth_failures)
		counter_table_free(&srv->auth_failures);
	free(srv);
}

static void session_release(struct imap_session *s)
{
	struct imap_server *srv = s->srv;
	struct session_priv *p = priv(s);
	imap_reader_deinit(&p->rd);
	if (p->line.data != NULL)
		explicit_bzero(p->line.data, p->line.cap);
	buf_deinit(&p->line);
	if (p->idle_timer != NULL)
		event_free(p->idle_timer);
	watch_remove(&p->idle_watch);
	free(p);
	free(s);
	srv->n_sessions--;
	if (srv->freeing && srv->n_sessions == 0)
		server_free_now(srv);
}

static void close_store_work(void *arg)
{
	struct imap_session *s = arg;
	imap_view_close(s);
	mstore_close(&s->store);
}

static void close_store_done(void *arg)
{
	session_release(arg);
}

static void session_free(struct imap_session *s)
{
	struct session_cmd *sc = cur(s);
	s->cmd = NULL;
	cmd_free(sc);
	if (s->store != NULL || s->view.box != NULL) {
		/* The store's close may block (SQLite): on the pool when there is one. */
		if (!s->srv->freeing && pool_submit(s->srv->pool, close_store_work, close_store_done, s) == 0)
			return;
		close_store_work(s);
	}
	session_release(s);
}

/* ---- server -------------------------------------------------------------------------- */

struct imap_server *imap_server_new(struct event_base *base, struct pool *pool,
				    const struct imap_settings *set, struct ssl_ctx_st *ssl_ctx,
				    const struct imap_callbacks *cb)
{
	struct imap_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return NULL;
	srv->base = base;
	srv->pool = pool;
	srv->set = *set;
	snprintf(srv->hostname, sizeof(srv->hostname), "%s", set->hostname ? set->hostname : "localhost");
	snprintf(srv->mail_root, sizeof(srv->mail_root), "%s", set->mail_root ? set->mail_root : "");
	srv->set.hostname = srv->hostname;
	srv->set.mail_root = srv->mail_root;
	if (srv->set.timeout <= 0)
		srv->set.timeout = 30 * 60;
	if (srv->set.idle_timeout <= 0)
		srv->set.idle_timeout = 29 * 60;
	srv->ssl_ctx = ssl_ctx;
	srv->cb = *cb;
	srv->auth_failures = set->auth_failures;
	if (srv->auth_failures == NULL) {
		srv->auth_failures = counter_table_new(16384);
		srv->own_auth_failures = 1;
		if (srv->auth_failures == NULL) {
			free(srv);
			return NULL;
		}
	}
	srv->snapshots = imap_snapshots_new();
	if (srv->snapshots == NULL) {
		server_free_now(srv);
		return NULL;
	}
	srv->watcher = watcher_new(base); /* NULL: IDLE polls */
	struct conn_settings cs = {
		.proto = "imap",
		.max_connections = set->max_connections,
		.max_connections_per_ip = set->max_connections_per_ip,
		.input_max = 64 * 1024,
		.output_max = IMAP_OUT_STEP,
		.timeout = srv->set.timeout,
	};
	struct conn_handler h = {
		.ctx = srv,
		.open = session_open,
		.input = session_input_cb,
		.drained = session_drained_cb,
		.tls_done = session_tls_done_cb,
		.shutdown = session_shutdown_cb,
		.closed = session_closed_cb,
		.limit_reply = "* BYE [UNAVAILABLE] Too many connections\r\n",
		.timeout_reply = "* BYE Autologout; idle for too long\r\n",
	};
	srv->conns = conn_server_new(base, &cs, ssl_ctx, &h);
	if (srv->conns == NULL) {
		server_free_now(srv);
		return NULL;
	}
	return srv;
}

int imap_server_listen(struct imap_server *srv, int fd, int implicit_tls, const char *name)
{
	return conn_server_listen(srv->conns, fd, implicit_tls, name);
}

void imap_server_drain(struct imap_server *srv, int graceful, void (*on_done)(void *arg),
		       void *arg)
{
	conn_server_drain(srv->conns, graceful, on_done, arg);
}

void imap_server_free(struct imap_server **srvp)
{
	struct imap_server *srv = *srvp;
	if (srv == NULL)
		return;
	*srvp = NULL;
	srv->freeing = 1;
	srv->n_sessions++; /* hold srv while the connections close */
	conn_server_free(&srv->conns);
	srv->n_sessions--;
	if (srv->n_sessions == 0)
		server_free_now(srv);
	/* else: sessions whose pool job still runs free it with the last one */
}

int imap_server_session_count(const struct imap_server *srv)
{
	return srv != NULL ? srv->n_sessions : 0;
}
