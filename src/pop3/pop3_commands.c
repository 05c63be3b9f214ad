/* The POP3 command table (RFC 1939, 2449, 2595, 5034) and the handlers.  The
 * dispatcher checks state and the TLS rule the same way for every command; handlers
 * hold only semantics.  Message numbers refer to the maildrop snapshot taken at login. */
#include "pop3/pop3_private.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define ANY_STATE (POP3_ST_AUTHORIZATION | POP3_ST_TRANSACTION)

static const char *const not_logged_in = "-ERR Log in first (USER/PASS or AUTH)";
static const char *const logged_in = "-ERR Already logged in";

/* ---- helpers -------------------------------------------------------------------------- */

/* The message of argument a: 1 and *i_r (0-based), or 0 after an -ERR reply. */
static int msg_arg(struct pop3_session *s, struct slice a, size_t *i_r)
{
	uint32_t n;
	if (pop3_parse_uint(a, &n) < 0) {
		pop3_reply(s, "-ERR Syntax: message number expected");
		return 0;
	}
	if (n == 0 || n > s->n_msgs) {
		pop3_reply(s, "-ERR No such message");
		return 0;
	}
	if (s->deleted[n - 1]) {
		pop3_reply(s, "-ERR Message %" PRIu32 " is deleted", n);
		return 0;
	}
	*i_r = n - 1;
	return 1;
}

static uint64_t drop_size(const struct pop3_session *s)
{
	uint64_t total = 0;
	for (size_t i = 0; i < s->n_msgs; i++)
		total += s->msgs[i].size;
	return total - s->size_deleted;
}

/* ---- AUTHORIZATION --------------------------------------------------------------------- */

static void cmd_capa(struct pop3_session *s, const struct pop3_command *cmd)
{
	struct buf b;
	buf_init(&b, 4096);
	buf_append_str(&b, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
	                   "AUTH-RESP-CODE\r\nPIPELINING\r\n");
	if (s->state == POP3_ST_AUTHORIZATION) {
		if (pop3_session_login_allowed(s))
			buf_append_str(&b, "USER\r\nSASL PLAIN\r\n");
		if (!s->tls && s->srv->ssl_ctx != NULL)
			buf_append_str(&b, "STLS\r\n");
	}
	buf_append_str(&b, "IMPLEMENTATION tern\r\n.\r\n");
	pop3_session_write(s, b.data, b.len);
	buf_deinit(&b);
}

static void cmd_user(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->n_args != 1) {
		pop3_reply(s, "-ERR Syntax: USER name");
		return;
	}
	snprintf(s->user, sizeof(s->user), "%.*s", (int)cmd->args[0].len, cmd->args[0].p);
	/* The same answer for every name: whether it exists shows nowhere. */
	pop3_reply(s, "+OK");
}

static void cmd_pass(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (s->user[0] == '\0') {
		pop3_reply(s, "-ERR USER first");
		return;
	}
	if (cmd->rest.len == 0 || cmd->rest.len > 255) {
		pop3_reply(s, "-ERR Syntax: PASS password");
		return;
	}
	char user[256], pass[256];
	snprintf(user, sizeof(user), "%s", s->user);
	memcpy(pass, cmd->rest.p, cmd->rest.len);
	pass[cmd->rest.len] = '\0';
	s->user[0] = '\0'; /* RFC 1939 7: a failed PASS needs a new USER */
	pop3_session_login(s, user, pass);
	explicit_bzero(pass, sizeof(pass));
}

static void auth_plain(struct pop3_session *s, const char *resp, size_t len)
{
	char authzid[256], user[256], pass[256];
	enum pop3_auth_status st = pop3_parse_auth_plain(resp, len, authzid, user, pass);
	if (st == POP3_AUTH_CANCEL) {
		pop3_reply(s, "-ERR Authentication cancelled");
	} else if (st == POP3_AUTH_BAD) {
		pop3_reply(s, "-ERR Syntax: cannot decode the AUTH PLAIN response");
	} else if (authzid[0] != '\0' && strcasecmp(authzid, user) != 0) {
		/* Acting for another identity is not offered: the same as a bad password. */
		pop3_session_login_refused(s, user);
	} else {
		pop3_session_login(s, user, pass);
	}
	explicit_bzero(pass, sizeof(pass));
}

static void cmd_auth(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->n_args == 0) {
		/* The pre-RFC 5034 listing some clients still ask for. */
		pop3_session_write(s, "+OK\r\nPLAIN\r\n.\r\n", 15);
		return;
	}
	if (cmd->n_args > 2) {
		pop3_reply(s, "-ERR Syntax: AUTH mechanism [initial-response]");
		return;
	}
	if (!slice_eq_ci(cmd->args[0], "PLAIN")) {
		pop3_reply(s, "-ERR Unsupported authentication mechanism (use PLAIN)");
		return;
	}
	if (cmd->n_args == 2) {
		auth_plain(s, cmd->args[1].p, cmd->args[1].len);
		return;
	}
	s->mode = POP3_MODE_AUTH_PLAIN;
	pop3_session_write(s, "+ \r\n", 4);
}

void pop3_session_auth_response(struct pop3_session *s, const char *line, size_t len)
{
	s->mode = POP3_MODE_COMMAND;
	s->verb = "AUTH";
	auth_plain(s, line, len);
}

static void cmd_stls(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->n_args != 0) {
		pop3_reply(s, "-ERR Syntax: STLS");
		return;
	}
	if (s->tls) {
		pop3_reply(s, "-ERR Already using TLS");
		return;
	}
	if (s->srv->ssl_ctx == NULL) {
		pop3_reply(s, "-ERR STLS is not available");
		return;
	}
	pop3_reply(s, "+OK Begin TLS negotiation");
	/* RFC 2595 4: what the client pipelined after STLS is dropped with the cleartext
	 * buffer (conn_start_tls). */
	if (conn_start_tls(s->conn) < 0)
		pop3_session_close_after_reply(s, "tls_setup_failed");
}

static void cmd_quit(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (s->state == POP3_ST_AUTHORIZATION) {
		pop3_reply(s, "+OK Logging out");
		pop3_session_close_after_reply(s, "quit");
		return;
	}
	/* RFC 1939 6: the UPDATE state; the answer comes from the job's completion. */
	pop3_session_set_state(s, POP3_ST_UPDATE);
	if (pop3_job_submit(s, POP3_JOB_UPDATE) < 0) {
		pop3_reply(s, "-ERR [SYS/TEMP] Deleted messages were not removed, try again later");
		pop3_session_close_after_reply(s, "quit");
	}
}

/* ---- TRANSACTION ------------------------------------------------------------------------- */

static void cmd_stat(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->n_args != 0) {
		pop3_reply(s, "-ERR Syntax: STAT");
		return;
	}
	pop3_reply(s, "+OK %zu %" PRIu64, s->n_msgs - s->n_deleted, drop_size(s));
}

void pop3_listing_step(struct pop3_session *s)
{
	char line[64];
	while (s->listing.next < s->n_msgs && s->conn != NULL &&
	       conn_output_pending(s->conn) < POP3_OUTPUT_MAX) {
		size_t i = s->listing.next++;
		if (s->deleted[i])
			continue;
		int n;
		if (s->listing.uidl)
			n = snprintf(line, sizeof(line), "%zu %08" PRIx32 "%08" PRIx32 "\r\n",
			             i + 1, s->uidvalidity, s->msgs[i].uid);
		else
			n = snprintf(line, sizeof(line), "%zu %" PRIu64 "\r\n", i + 1,
			             s->msgs[i].size);
		pop3_session_write(s, line, (size_t)n);
	}
	if (s->listing.next < s->n_msgs && s->conn != NULL)
		return; /* the drained callback continues */
	pop3_session_write(s, ".\r\n", 3);
	s->listing.active = 0;
	pop3_session_continue(s);
}

static void listing(struct pop3_session *s, const struct pop3_command *cmd, int uidl)
{
	if (cmd->n_args > 1) {
		pop3_reply(s, uidl ? "-ERR Syntax: UIDL [message]" : "-ERR Syntax: LIST [message]");
		return;
	}
	if (cmd->n_args == 1) {
		size_t i;
		if (!msg_arg(s, cmd->args[0], &i))
			return;
		if (uidl)
			pop3_reply(s, "+OK %zu %08" PRIx32 "%08" PRIx32, i + 1, s->uidvalidity,
			           s->msgs[i].uid);
		else
			pop3_reply(s, "+OK %zu %" PRIu64, i + 1, s->msgs[i].size);
		return;
	}
	if (uidl)
		pop3_reply(s, "+OK Unique-ID listing follows");
	else
		pop3_reply(s, "+OK %zu messages (%" PRIu64 " octets)", s->n_msgs - s->n_deleted,
		           drop_size(s));
	s->listing.active = 1;
	s->listing.uidl = uidl;
	s->listing.next = 0;
	conn_pause(s->conn);
	pop3_listing_step(s);
}

static void cmd_list(struct pop3_session *s, const struct pop3_command *cmd)
{
	listing(s, cmd, 0);
}

static void cmd_uidl(struct pop3_session *s, const struct pop3_command *cmd)
{
	listing(s, cmd, 1);
}

static void cmd_retr(struct pop3_session *s, const struct pop3_command *cmd)
{
	size_t i;
	if (cmd->n_args != 1) {
		pop3_reply(s, "-ERR Syntax: RETR message");
		return;
	}
	if (!msg_arg(s, cmd->args[0], &i))
		return;
	pop3_retr_start(s, i, -1);
}

static void cmd_top(struct pop3_session *s, const struct pop3_command *cmd)
{
	size_t i;
	uint32_t lines;
	if (cmd->n_args != 2 || pop3_parse_uint(cmd->args[1], &lines) < 0) {
		pop3_reply(s, "-ERR Syntax: TOP message lines");
		return;
	}
	if (!msg_arg(s, cmd->args[0], &i))
		return;
	pop3_retr_start(s, i, lines);
}

static void cmd_dele(struct pop3_session *s, const struct pop3_command *cmd)
{
	size_t i;
	if (cmd->n_args != 1) {
		pop3_reply(s, "-ERR Syntax: DELE message");
		return;
	}
	if (!msg_arg(s, cmd->args[0], &i))
		return;
	s->deleted[i] = 1;
	s->n_deleted++;
	s->size_deleted += s->msgs[i].size;
	pop3_reply(s, "+OK Message %zu deleted", i + 1);
}

static void cmd_rset(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->n_args != 0) {
		pop3_reply(s, "-ERR Syntax: RSET");
		return;
	}
	memset(s->deleted, 0, s->n_msgs);
	s->n_deleted = 0;
	s->size_deleted = 0;
	pop3_reply(s, "+OK Maildrop has %zu messages (%" PRIu64 " octets)", s->n_msgs,
	           drop_size(s));
}

static void cmd_noop(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->n_args != 0) {
		pop3_reply(s, "-ERR Syntax: NOOP");
		return;
	}
	pop3_reply(s, "+OK");
}

/* ---- the table ------------------------------------------------------------------------------ */

#define AUTHZ POP3_ST_AUTHORIZATION
#define TRANS POP3_ST_TRANSACTION

/* clang-format off */
static const struct pop3_cmd pop3_cmds[] = {
	/* verb    handler    states     flags             bad state reply */
	{ "CAPA", cmd_capa, ANY_STATE, POP3_CMD_PRE_TLS, NULL },
	{ "STLS", cmd_stls, AUTHZ,     POP3_CMD_PRE_TLS, "-ERR STLS only before login" },
	{ "USER", cmd_user, AUTHZ,     0,                NULL },
	{ "PASS", cmd_pass, AUTHZ,     POP3_CMD_SECRET,  NULL },
	{ "AUTH", cmd_auth, AUTHZ,     POP3_CMD_SECRET,  NULL },
	{ "QUIT", cmd_quit, ANY_STATE, POP3_CMD_PRE_TLS, NULL },
	{ "STAT", cmd_stat, TRANS,     0,                NULL },
	{ "LIST", cmd_list, TRANS,     0,                NULL },
	{ "UIDL", cmd_uidl, TRANS,     0,                NULL },
	{ "RETR", cmd_retr, TRANS,     0,                NULL },
	{ "TOP",  cmd_top,  TRANS,     0,                NULL },
	{ "DELE", cmd_dele, TRANS,     0,                NULL },
	{ "RSET", cmd_rset, TRANS,     0,                NULL },
	{ "NOOP", cmd_noop, TRANS,     0,                NULL },
};
/* clang-format on */

const struct pop3_cmd *pop3_cmd_find(const char *verb)
{
	for (size_t i = 0; i < sizeof(pop3_cmds) / sizeof(pop3_cmds[0]); i++)
		if (strcmp(pop3_cmds[i].verb, verb) == 0)
			return &pop3_cmds[i];
	return NULL;
}

void pop3_session_command(struct pop3_session *s, const char *line, size_t len)
{
	struct pop3_command cmd;
	s->verb = "-";
	enum pop3_parse_status ps = pop3_parse_command(line, len, &cmd);
	if (ps == POP3_PARSE_EMPTY || ps == POP3_PARSE_BAD_VERB) {
		pop3_reply(s, "-ERR Unknown command");
		return;
	}
	if (ps == POP3_PARSE_BAD_CHAR) {
		pop3_reply(s, "-ERR Syntax: control characters in the command");
		return;
	}
	const struct pop3_cmd *c = pop3_cmd_find(cmd.verb);
	if (c == NULL) {
		pop3_reply(s, "-ERR Unknown command");
		return;
	}
	s->verb = c->verb;
	if (!(c->states & s->state)) {
		if (c->bad_state_reply != NULL)
			pop3_reply(s, "%s", c->bad_state_reply);
		else
			pop3_reply(s, "%s",
			           s->state == POP3_ST_AUTHORIZATION ? not_logged_in : logged_in);
		return;
	}
	if (s->state == POP3_ST_AUTHORIZATION && !(c->flags & POP3_CMD_PRE_TLS) &&
	    !pop3_session_login_allowed(s)) {
		/* RFC 2595 2.4 / DESIGN: no password in the clear. */
		if (s->srv->ssl_ctx != NULL)
			pop3_reply(s, "-ERR [AUTH] Login only over TLS: issue STLS first, or use "
			              "POP3S (port 995)");
		else
			pop3_reply(s, "-ERR [AUTH] Login only over TLS (use POP3S, port 995)");
		return;
	}
	c->handler(s, &cmd);
}
