/* The SMTP command table and the handlers of every command but AUTH. */
#include "smtp/smtp_private.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- commands --------------------------------------------------------------------- */

static void cmd_helo_common(struct smtp_session *s, const char *arg, size_t len, int esmtp)
{
	while (len > 0 && (arg[len - 1] == ' ' || arg[len - 1] == '\t'))
		len--;
	if (len == 0) {
		smtp_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	if (len >= sizeof(s->helo))
		len = sizeof(s->helo) - 1;
	/* Keep the first word only: it lands in our Received header. */
	size_t w = 0;
	while (w < len && arg[w] != ' ' && arg[w] != '\t')
		w++;
	memcpy(s->helo, arg, w);
	s->helo[w] = '\0';
	s->esmtp = esmtp;
	smtp_txn_end(s);
	s->state = ST_READY;
}

static void cmd_ehlo(struct smtp_session *s, const char *arg, size_t len)
{
	cmd_helo_common(s, arg, len, 1);
	if (s->state != ST_READY)
		return;
	struct buf b;
	buf_init(&b, 0);
	buf_printf(&b, "250-%s Hello %s [%s]\r\n", s->srv->hostname, s->helo, s->addr);
	buf_printf(&b, "250-PIPELINING\r\n250-SIZE %lld\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
		       "250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n",
		   s->srv->set.max_message_size);
	if (!s->tls && s->srv->ssl_ctx != NULL)
		buf_printf(&b, "250-STARTTLS\r\n");
	if (s->role != SMTP_ROLE_MX &&
	    (s->tls || (s->info.loopback && s->srv->set.auth_plaintext_loopback)))
		buf_printf(&b, "250-AUTH PLAIN LOGIN\r\n");
	buf_printf(&b, "250 HELP\r\n");
	smtp_session_write(s, b.data, b.len);
	buf_deinit(&b);
}

static void cmd_helo(struct smtp_session *s, const char *arg, size_t len)
{
	cmd_helo_common(s, arg, len, 0);
	if (s->state == ST_READY)
		smtp_reply(s, "250 %s", s->srv->hostname);
}

/* Answers a MAIL/RCPT parse failure (error starts with the enhanced code).  1 when it
 * did, 0 for SMTP_PARAM_OK. */
static int reply_param_error(struct smtp_session *s, enum smtp_param_error e, const char *error)
{
	switch (e) {
	case SMTP_PARAM_OK:
		return 0;
	case SMTP_PARAM_UNKNOWN:
		smtp_reply(s, "555 %s", error);
		return 1;
	case SMTP_PARAM_UTF8_ADDR:
		smtp_reply(s, "553 %s", error);
		return 1;
	default:
		smtp_reply(s, "501 %s", error);
		return 1;
	}
}

static int auth_required(struct smtp_session *s)
{
	return s->role != SMTP_ROLE_MX && s->auth_user[0] == '\0';
}

static void cmd_mail(struct smtp_session *s, const char *arg, size_t len)
{
	if (auth_required(s)) {
		smtp_reply(s, "530 5.7.0 Authentication required: log in (AUTH) before sending mail");
		return;
	}
	struct mail_addr addr;
	struct smtp_txn *t = &s->txn;
	const char *error = "syntax error";
	smtp_txn_end(s);
	if (reply_param_error(s, smtp_parse_mail(arg, len, &addr, &t->params, &error), error))
		return;
	if (t->params.size > s->srv->set.max_message_size) {
		smtp_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%lld bytes)",
		      s->srv->set.max_message_size);
		return;
	}
	t->from_null = addr.is_null;
	if (!addr.is_null && addr_format(&addr, t->from, sizeof(t->from)) < 0) {
		smtp_reply(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	if (s->auth_user[0] != '\0') {
		int ok = s->srv->cb.may_send_as(s->srv->cb.ctx, s->auth_user, t->from_null ? "" : t->from);
		if (ok < 0) {
			smtp_reply(s, "451 4.3.0 Temporary lookup failure, try again later");
			return;
		}
		if (ok == 0) {
			smtp_reply(s, "553 5.7.1 <%s>: Sender address not owned by user %s", t->from,
			      s->auth_user);
			return;
		}
	}
	s->state = ST_MAIL;
	smtp_reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct smtp_session *s, const char *arg, size_t len)
{
	struct smtp_txn *t = &s->txn;
	struct mail_addr addr;
	struct smtp_rcpt_params p;
	const char *error = "syntax error";
	if (t->n_rcpts >= s->srv->set.max_recipients) {
		smtp_reply(s, "452 4.5.3 Too many recipients (at most %d per message)",
		      s->srv->set.max_recipients);
		return;
	}
	unsigned flags = t->params.smtputf8 ? ADDR_ALLOW_UTF8 : 0;
	if (reply_param_error(s, smtp_parse_rcpt(arg, len, flags, &addr, &p, &error), error))
		return;
	char shown[600];
	if (addr_format(&addr, shown, sizeof(shown)) < 0)
		snprintf(shown, sizeof(shown), "?");
	struct smtp_rcpt_targets *out = malloc(sizeof(*out));
	if (out == NULL) {
		smtp_reply(s, "451 4.3.0 Local error, try again later");
		return;
	}
	out->n = 0;
	enum smtp_rcpt_verdict v = s->srv->cb.rcpt(s->srv->cb.ctx, &s->info, &addr, out);
	switch (v) {
	case SMTP_RCPT_OK:
		break;
	case SMTP_RCPT_UNKNOWN_USER:
		smtp_reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", shown);
		free(out);
		return;
	case SMTP_RCPT_RELAY_DENIED:
		smtp_reply(s, "550 5.7.1 <%s>: Relay access denied", shown);
		free(out);
		return;
	case SMTP_RCPT_TEMPFAIL:
		smtp_reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", shown);
		free(out);
		return;
	}
	for (int i = 0; i < out->n; i++) {
		if (smtp_txn_add_target(t, out->addr[i], &p, shown) < 0) {
			smtp_reply(s, "452 4.5.3 Too many recipients");
			free(out);
			return;
		}
	}
	free(out);
	t->n_rcpts++;
	s->state = ST_RCPT;
	smtp_reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct smtp_session *s, const char *arg, size_t len)
{
	if (len > 0) {
		smtp_reply(s, "501 5.5.4 Syntax: DATA (no argument)");
		return;
	}
	if (s->state == ST_MAIL) {
		smtp_reply(s, "554 5.5.1 No valid recipients");
		return;
	}
	if (s->txn.bdat) {
		smtp_reply(s, "503 5.5.1 DATA cannot follow BDAT in one transaction");
		return;
	}
	if (smtp_txn_begin(s, 0) < 0) {
		smtp_reply(s, "451 4.3.0 Local error opening the queue, try again later");
		return;
	}
	s->mode = MODE_DATA;
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_bdat(struct smtp_session *s, const char *arg, size_t len)
{
	/* BDAT size [LAST] (RFC 3030).  Whatever the reply, the chunk's bytes must be
	 * read, or they would be taken for commands. */
	char tmp[64];
	if (len >= sizeof(tmp)) {
		smtp_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	memcpy(tmp, arg, len);
	tmp[len] = '\0';
	char *end;
	errno = 0;
	unsigned long long size = strtoull(tmp, &end, 10);
	if (end == tmp || tmp[0] < '0' || tmp[0] > '9' || errno != 0 || end - tmp > 20) {
		smtp_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	while (*end == ' ')
		end++;
	int last = 0;
	if (strcasecmp(end, "LAST") == 0)
		last = 1;
	else if (*end != '\0') {
		smtp_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	s->bdat_remaining = size > (1ULL << 62) ? (1LL << 62) : (long long)size;
	s->bdat_last = last;
	s->bdat_discard = 0;
	s->mode = MODE_BDAT;
	struct smtp_txn *t = &s->txn;
	if (!(s->state & ST_RCPT) || t->failed || (t->msg == NULL && t->n_targets == 0)) {
		s->bdat_discard = 1;
		if (s->bdat_remaining == 0)
			smtp_bdat_chunk_done(s);
		return;
	}
	if (t->msg == NULL && smtp_txn_begin(s, 1) < 0) {
		s->bdat_discard = 1;
		t->write_failed = 1;
	}
	if (s->bdat_remaining == 0)
		smtp_bdat_chunk_done(s); /* "BDAT 0 LAST": no bytes will come to trigger it */
}

/* A BDAT chunk has been read in full. */
void smtp_bdat_chunk_done(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;
	s->mode = MODE_COMMAND;
	if (s->bdat_discard) {
		if (t->write_failed)
			smtp_reply(s, "451 4.3.0 Local error opening the queue, try again later");
		else if (t->failed)
			smtp_reply(s, "503 5.5.1 Transaction failed earlier; send RSET");
		else if (s->state == ST_MAIL)
			smtp_reply(s, "554 5.5.1 No valid recipients");
		else
			smtp_reply(s, "503 5.5.1 Need MAIL and RCPT before BDAT");
		if (s->state & (ST_MAIL | ST_RCPT))
			t->failed = 1;
		return;
	}
	if (s->bdat_last) {
		data_decoder_raw_finish(&t->dec);
		smtp_txn_finish(s);
		return;
	}
	if (t->too_big) {
		smtp_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size (%lld bytes)",
		      s->srv->set.max_message_size);
		smtp_txn_end(s);
		s->state = ST_READY;
		return;
	}
	smtp_reply(s, "250 2.0.0 %lld octets received", t->size);
}

static void cmd_rset(struct smtp_session *s, const char *arg, size_t len)
{
	smtp_txn_end(s);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtp_session *s, const char *arg, size_t len)
{
	smtp_reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtp_session *s, const char *arg, size_t len)
{
	smtp_reply(s, "221 2.0.0 %s closing connection", s->srv->hostname);
	smtp_session_close_after_reply(s, "quit");
}

static void cmd_vrfy(struct smtp_session *s, const char *arg, size_t len)
{
	/* RFC 5321 3.5.3: 252 so that address harvesting learns nothing. */
	smtp_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtp_session *s, const char *arg, size_t len)
{
	smtp_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP "
		 "STARTTLS AUTH");
}

static void cmd_expn(struct smtp_session *s, const char *arg, size_t len)
{
	/* RFC 5321 3.5.2: lists are not disclosed. */
	smtp_reply(s, "502 5.5.1 EXPN is not available");
}

static void cmd_starttls(struct smtp_session *s, const char *arg, size_t len)
{
	if (len > 0) {
		smtp_reply(s, "501 5.5.4 Syntax: STARTTLS (no argument)");
		return;
	}
	if (s->tls) {
		smtp_reply(s, "503 5.5.1 TLS is already active");
		return;
	}
	if (s->srv->ssl_ctx == NULL) {
		smtp_reply(s, "454 4.7.0 TLS not available");
		return;
	}
	smtp_reply(s, "220 2.0.0 Ready to start TLS");
	/* RFC 3207 4.2 / DESIGN: whatever the client sent after STARTTLS in cleartext is
	 * thrown away; the switch happens once the 220 is flushed. */
	s->starttls_pending = 1;
	evbuffer_drain(bufferevent_get_input(s->bev), evbuffer_get_length(bufferevent_get_input(s->bev)));
}

static const struct smtp_cmd smtp_cmds[] = {
	/* verb        handler         states                 reply when in another state */
	{ "EHLO",     cmd_ehlo,       ST_ANY,                NULL },
	{ "HELO",     cmd_helo,       ST_ANY,                NULL },
	{ "MAIL",     cmd_mail,       ST_READY,              NULL },
	{ "RCPT",     cmd_rcpt,       ST_MAIL | ST_RCPT,     "503 5.5.1 Need MAIL before RCPT" },
	{ "DATA",     cmd_data,       ST_MAIL | ST_RCPT,     "503 5.5.1 Need MAIL and RCPT before DATA" },
	{ "BDAT",     cmd_bdat,       ST_ANY,                NULL }, /* must read its chunk anyway */
	{ "RSET",     cmd_rset,       ST_ANY,                NULL },
	{ "NOOP",     cmd_noop,       ST_ANY,                NULL },
	{ "QUIT",     cmd_quit,       ST_ANY,                NULL },
	{ "VRFY",     cmd_vrfy,       ST_ANY,                NULL },
	{ "HELP",     cmd_help,       ST_ANY,                NULL },
	{ "EXPN",     cmd_expn,       ST_ANY,                NULL },
	{ "STARTTLS", cmd_starttls,   ST_GREETED | ST_READY, "503 5.5.1 STARTTLS is not allowed during a mail transaction" },
	{ "AUTH",     smtp_cmd_auth,  ST_READY,              "503 5.5.1 AUTH is not allowed during a mail transaction" },
};

void smtp_session_command(struct smtp_session *s, const char *line, size_t len)
{
	char verb[16];
	const char *arg;
	size_t arg_len;
	s->commands++;
	s->verb = "-";
	if (len + 2 > SMTP_LINE_MAX) {
		smtp_reply(s, "500 5.5.2 Line too long (at most %d octets)", SMTP_LINE_MAX);
		return;
	}
	if (smtp_parse_command(line, len, verb, &arg, &arg_len) < 0) {
		smtp_reply(s, "500 5.5.2 Syntax error, command unrecognized");
		return;
	}
	for (size_t i = 0; i < sizeof(smtp_cmds) / sizeof(smtp_cmds[0]); i++) {
		const struct smtp_cmd *c = &smtp_cmds[i];
		if (strcmp(c->verb, verb) != 0)
			continue;
		s->verb = c->verb;
		if (!(c->states & s->state)) {
			if (s->state == ST_GREETED)
				smtp_reply(s, "503 5.5.1 Send EHLO first");
			else if (c->bad_state_reply)
				smtp_reply(s, "%s", c->bad_state_reply);
			else if (s->state & (ST_MAIL | ST_RCPT))
				smtp_reply(s, "503 5.5.1 Nested MAIL command");
			else
				smtp_reply(s, "503 5.5.1 Bad sequence of commands");
			return;
		}
		c->handler(s, arg, arg_len);
		return;
	}
	smtp_reply(s, "500 5.5.1 Command unrecognized");
}
