/* CAPABILITY NOOP LOGOUT STARTTLS LOGIN AUTHENTICATE ENABLE ID NAMESPACE, and the
 * failed-login throttle.
 *
 * LOGIN and AUTHENTICATE run in steps (IMAP_CMD_PENDING): the daemon's login callback
 * checks the password, then the user's mail store is opened on the pool, then the
 * tagged OK carries the new capabilities (RFC 9051 7.2.2 allows it in the OK). */
#include "imap/imap_private.h"

#include "auth/sasl.h"
#include "auth/throttle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- capabilities --------------------------------------------------------------------- */

/* RFC 9051 6.2.3 / RFC 3501 6.2.3: before TLS a cleartext login is disabled unless the
 * configuration allows it for loopback clients. */
static int login_allowed(const struct imap_session *s)
{
	return s->info->tls || (s->info->loopback && s->srv->set.auth_plaintext_loopback);
}

void imap_capabilities(struct imap_session *s, struct buf *out)
{
	buf_append_str(out, "IMAP4rev2 IMAP4rev1");
	if (s->state == IMAP_ST_NOT_AUTH) {
		if (!s->info->tls && s->srv->ssl_ctx != NULL)
			buf_append_str(out, " STARTTLS");
		if (login_allowed(s))
			buf_append_str(out, " AUTH=PLAIN SASL-IR");
		else
			buf_append_str(out, " LOGINDISABLED");
	}
	buf_append_str(out, " LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN "
			    "SPECIAL-USE CREATE-SPECIAL-USE LIST-EXTENDED LIST-STATUS STATUS=SIZE "
			    "CONDSTORE QRESYNC ESEARCH UTF8=ACCEPT MULTIAPPEND");
	if (s->srv->set.max_message_size > 0)
		buf_printf(out, " APPENDLIMIT=%lld", s->srv->set.max_message_size);
}

enum imap_cmd_result imap_cmd_capability(struct imap_session *s, struct imap_cmd *c)
{
	struct buf b;
	buf_init(&b, 0);
	imap_capabilities(s, &b);
	imap_out_untagged(c, "CAPABILITY %s", b.data ? b.data : "");
	buf_deinit(&b);
	imap_cmd_ok(c, "CAPABILITY completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_noop(struct imap_session *s, struct imap_cmd *c)
{
	imap_cmd_ok(c, "NOOP completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_logout(struct imap_session *s, struct imap_cmd *c)
{
	imap_out_untagged(c, "BYE %s IMAP4rev2 server logging out", s->srv->hostname);
	imap_cmd_ok(c, "LOGOUT completed");
	imap_session_set_state(s, IMAP_ST_LOGOUT);
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_starttls(struct imap_session *s, struct imap_cmd *c)
{
	if (c->parsed.n_args != 0) {
		imap_cmd_bad(c, "STARTTLS takes no arguments");
		return IMAP_CMD_DONE;
	}
	if (s->info->tls) {
		imap_cmd_bad(c, "TLS is already active");
		return IMAP_CMD_DONE;
	}
	if (s->srv->ssl_ctx == NULL) {
		imap_cmd_no(c, "[UNAVAILABLE] TLS is not available");
		return IMAP_CMD_DONE;
	}
	imap_cmd_ok(c, "Begin TLS negotiation now");
	imap_session_start_tls(s);
	return IMAP_CMD_DONE;
}

/* ---- login ---------------------------------------------------------------------------- */

enum login_phase {
	LOGIN_START,
	LOGIN_WAIT_LINE,      /* AUTHENTICATE: waiting for the client's response */
	LOGIN_WAIT_CHECK,     /* the daemon checks the password */
	LOGIN_WAIT_STORE,     /* the store opens on the pool */
};

struct login_state {
	enum login_phase phase;
	struct imap_session *s;
	int ok;
	char user[256];
	char domain[256], local[256];
	struct mstore *store;
	int status;
	char error[256];
};

static void login_state_free(void *arg)
{
	struct login_state *st = arg;
	/* Only when the session died between the store's opening and its use. */
	mstore_close(&st->store);
	explicit_bzero(st, sizeof(*st));
	free(st);
}

static struct auth_throttle session_throttle(const struct imap_session *s)
{
	struct auth_throttle t = { s->srv->auth_failures,
				   s->srv->set.auth_max_failures > 0 ? s->srv->set.auth_max_failures : 10,
				   s->srv->set.auth_failure_window > 0 ? s->srv->set.auth_failure_window
								       : 900 };
	return t;
}

static void login_failed(struct imap_session *s, struct imap_cmd *c, const char *user,
			 const char *why)
{
	struct auth_throttle t = session_throttle(s);
	char q[300];
	auth_throttle_failed(&t, s->info->addr, user);
	imap_session_log(s, LOG_LEVEL_WARN, "event=login_failed login=%s ip=%s reason=%s",
			 log_quote(q, sizeof(q), user, strlen(user)), s->info->addr, why);
	/* One reply for an unknown user and a wrong password. */
	imap_cmd_no(c, "[AUTHENTICATIONFAILED] Invalid credentials");
}

/* The daemon's answer (loop thread, after the login call returned). */
static void login_checked(void *session, int ok, const char *domain, const char *user)
{
	struct imap_session *s = session;
	struct login_state *st = s->cmd != NULL ? s->cmd->state : NULL;
	if (st != NULL && st->phase == LOGIN_WAIT_CHECK) {
		st->ok = ok;
		snprintf(st->domain, sizeof(st->domain), "%s", ok == 1 && domain ? domain : "");
		snprintf(st->local, sizeof(st->local), "%s", ok == 1 && user ? user : "");
	}
	imap_session_resume(s);
}

static void login_open_store(void *arg)
{
	struct login_state *st = arg;
	const char *error = NULL;
	st->status = mstore_open(st->s->srv->mail_root, st->domain, st->local, &st->store, &error);
	snprintf(st->error, sizeof(st->error), "%s", error ? error : "");
}

/* The credentials are in hand: throttle, then ask the daemon. */
static enum imap_cmd_result login_check(struct imap_session *s, struct imap_cmd *c,
					struct login_state *st, const char *authzid,
					const char *user, const char *password)
{
	struct auth_throttle t = session_throttle(s);
	char q[300];
	snprintf(st->user, sizeof(st->user), "%s", user);
	if (auth_throttle_blocked(&t, s->info->addr, user)) {
		imap_session_log(s, LOG_LEVEL_WARN, "event=login_failed login=%s ip=%s reason=throttled",
				 log_quote(q, sizeof(q), user, strlen(user)), s->info->addr);
		imap_cmd_no(c, "[UNAVAILABLE] Too many failed logins, try again later");
		return IMAP_CMD_DONE;
	}
	if (user[0] == '\0' || password[0] == '\0') {
		login_failed(s, c, user, "empty");
		return IMAP_CMD_DONE;
	}
	if (authzid != NULL && authzid[0] != '\0' && strcasecmp(authzid, user) != 0) {
		/* Acting for another identity is not offered: as a wrong password. */
		login_failed(s, c, user, "authzid");
		return IMAP_CMD_DONE;
	}
	st->phase = LOGIN_WAIT_CHECK;
	s->srv->cb.login(s->srv->cb.ctx, user, password, login_checked, s);
	return IMAP_CMD_PENDING;
}

/* The steps after the password check, shared by LOGIN and AUTHENTICATE. */
static enum imap_cmd_result login_continue(struct imap_session *s, struct imap_cmd *c,
					   struct login_state *st)
{
	if (st->phase == LOGIN_WAIT_CHECK) {
		if (st->ok == 0) {
			login_failed(s, c, st->user, "credentials");
			return IMAP_CMD_DONE;
		}
		if (st->ok < 0 || st->domain[0] == '\0' || st->local[0] == '\0') {
			imap_session_log(s, LOG_LEVEL_WARN, "event=login_failed ip=%s reason=temporary",
					 s->info->addr);
			imap_cmd_no(c, "[UNAVAILABLE] Temporary failure, try again later");
			return IMAP_CMD_DONE;
		}
		st->phase = LOGIN_WAIT_STORE;
		st->s = s;
		if (imap_session_run_blocking(s, login_open_store, st) < 0) {
			imap_cmd_no(c, "[UNAVAILABLE] Server busy, try again later");
			return IMAP_CMD_DONE;
		}
		return IMAP_CMD_PENDING;
	}
	/* LOGIN_WAIT_STORE */
	if (st->status != MSTORE_OK || st->store == NULL) {
		char q[300];
		imap_session_log(s, LOG_LEVEL_ERROR, "event=store_open_failed error=%s",
				 log_quote(q, sizeof(q), st->error, strlen(st->error)));
		imap_cmd_no(c, "[UNAVAILABLE] Mailbox not available, try again later");
		return IMAP_CMD_DONE;
	}
	s->store = st->store;
	st->store = NULL;
	snprintf(s->user, sizeof(s->user), "%s", st->user);
	snprintf(s->domain, sizeof(s->domain), "%s", st->domain);
	snprintf(s->localpart, sizeof(s->localpart), "%s", st->local);
	imap_session_set_state(s, IMAP_ST_AUTH);
	imap_session_log(s, LOG_LEVEL_INFO, "event=login ip=%s mech=%s tls=%d", s->info->addr,
			 strcmp(c->parsed.name, "LOGIN") == 0 ? "login" : "plain", s->info->tls);
	struct buf b;
	buf_init(&b, 0);
	imap_capabilities(s, &b);
	imap_cmd_ok(c, "[CAPABILITY %s] Logged in", b.data ? b.data : "");
	buf_deinit(&b);
	return IMAP_CMD_DONE;
}

static struct login_state *login_state_get(struct imap_cmd *c)
{
	if (c->state == NULL) {
		c->state = calloc(1, sizeof(struct login_state));
		c->state_free = login_state_free;
	}
	return c->state;
}

static void wipe_arg(const struct imap_arg *a)
{
	if (a->s != NULL && a->len > 0)
		explicit_bzero((char *)a->s, a->len);
}

enum imap_cmd_result imap_cmd_login(struct imap_session *s, struct imap_cmd *c)
{
	struct login_state *st = login_state_get(c);
	if (st == NULL) {
		imap_cmd_no(c, "[UNAVAILABLE] Out of memory");
		return IMAP_CMD_DONE;
	}
	if (st->phase != LOGIN_START)
		return login_continue(s, c, st);
	if (c->parsed.n_args != 2 || !imap_arg_is_astring(&c->parsed.args[0]) ||
	    !imap_arg_is_astring(&c->parsed.args[1])) {
		imap_cmd_bad(c, "Syntax: LOGIN user password");
		return IMAP_CMD_DONE;
	}
	if (!login_allowed(s)) {
		wipe_arg(&c->parsed.args[1]);
		imap_cmd_no(c, "[PRIVACYREQUIRED] Use STARTTLS first");
		return IMAP_CMD_DONE;
	}
	const struct imap_arg *u = &c->parsed.args[0], *pw = &c->parsed.args[1];
	if (u->len > 255 || pw->len > 1024 || memchr(u->s, '\0', u->len) != NULL ||
	    memchr(pw->s, '\0', pw->len) != NULL) {
		wipe_arg(pw);
		login_failed(s, c, "-", "malformed");
		return IMAP_CMD_DONE;
	}
	enum imap_cmd_result r = login_check(s, c, st, NULL, u->s, pw->s);
	wipe_arg(pw);
	return r;
}

/* AUTHENTICATE PLAIN (RFC 4616) with an initial response (SASL-IR, RFC 4959) or after
 * a "+ " continuation. */
static enum imap_cmd_result authenticate_plain(struct imap_session *s, struct imap_cmd *c,
					       struct login_state *st, const char *b64, size_t len)
{
	char authzid[256], user[256], pass[256];
	const char *error = NULL;
	if (sasl_plain_decode(b64, len, authzid, user, pass, &error) < 0) {
		imap_cmd_bad(c, "Cannot decode the PLAIN response");
		return IMAP_CMD_DONE;
	}
	enum imap_cmd_result r = login_check(s, c, st, authzid, user, pass);
	explicit_bzero(pass, sizeof(pass));
	return r;
}

enum imap_cmd_result imap_cmd_authenticate(struct imap_session *s, struct imap_cmd *c)
{
	struct login_state *st = login_state_get(c);
	if (st == NULL) {
		imap_cmd_no(c, "[UNAVAILABLE] Out of memory");
		return IMAP_CMD_DONE;
	}
	if (st->phase == LOGIN_WAIT_LINE) {
		struct slice l = imap_session_line(s);
		st->phase = LOGIN_START;
		if (l.p == NULL) {
			imap_cmd_bad(c, "Invalid response line");
			return IMAP_CMD_DONE;
		}
		if (l.len == 1 && l.p[0] == '*') {
			imap_cmd_bad(c, "Authentication cancelled");
			return IMAP_CMD_DONE;
		}
		return authenticate_plain(s, c, st, l.p, l.len);
	}
	if (st->phase != LOGIN_START)
		return login_continue(s, c, st);
	if (c->parsed.n_args < 1 || c->parsed.n_args > 2 ||
	    c->parsed.args[0].type != IMAP_ARG_ATOM ||
	    (c->parsed.n_args == 2 && !imap_arg_is_astring(&c->parsed.args[1]))) {
		imap_cmd_bad(c, "Syntax: AUTHENTICATE mechanism [initial-response]");
		return IMAP_CMD_DONE;
	}
	if (strcasecmp(c->parsed.args[0].s, "PLAIN") != 0) {
		imap_cmd_no(c, "Unsupported authentication mechanism (use PLAIN)");
		return IMAP_CMD_DONE;
	}
	if (!login_allowed(s)) {
		if (c->parsed.n_args == 2)
			wipe_arg(&c->parsed.args[1]);
		imap_cmd_no(c, "[PRIVACYREQUIRED] Use STARTTLS first");
		return IMAP_CMD_DONE;
	}
	struct auth_throttle t = session_throttle(s);
	if (auth_throttle_blocked(&t, s->info->addr, NULL)) {
		imap_session_log(s, LOG_LEVEL_WARN, "event=login_failed ip=%s reason=throttled",
				 s->info->addr);
		imap_cmd_no(c, "[UNAVAILABLE] Too many failed logins, try again later");
		return IMAP_CMD_DONE;
	}
	if (c->parsed.n_args == 2) {
		const struct imap_arg *ir = &c->parsed.args[1];
		enum imap_cmd_result r = authenticate_plain(s, c, st, ir->s, ir->len);
		wipe_arg(ir);
		return r;
	}
	st->phase = LOGIN_WAIT_LINE;
	imap_out(c, "+ \r\n");
	imap_session_want_line(s);
	return IMAP_CMD_PENDING;
}

/* ---- ENABLE ID NAMESPACE -------------------------------------------------------------- */

enum imap_cmd_result imap_cmd_enable(struct imap_session *s, struct imap_cmd *c)
{
	if (c->parsed.n_args == 0) {
		imap_cmd_bad(c, "Syntax: ENABLE capability...");
		return IMAP_CMD_DONE;
	}
	struct buf on;
	buf_init(&on, 0);
	for (size_t i = 0; i < c->parsed.n_args; i++) {
		const struct imap_arg *a = &c->parsed.args[i];
		if (a->type != IMAP_ARG_ATOM) {
			buf_deinit(&on);
			imap_cmd_bad(c, "Syntax: ENABLE capability...");
			return IMAP_CMD_DONE;
		}
		const char *name = NULL;
		if (strcasecmp(a->s, "CONDSTORE") == 0) {
			if (!s->condstore)
				name = "CONDSTORE";
			s->condstore = 1;
		} else if (strcasecmp(a->s, "QRESYNC") == 0) {
			/* RFC 7162 3.2.3: QRESYNC implies CONDSTORE. */
			if (!s->qresync)
				name = "QRESYNC";
			s->qresync = 1;
			s->condstore = 1;
		} else if (strcasecmp(a->s, "UTF8=ACCEPT") == 0) {
			if (!s->utf8_accept)
				name = "UTF8=ACCEPT";
			s->utf8_accept = 1;
		} else if (strcasecmp(a->s, "IMAP4rev2") == 0) {
			if (!s->imap4rev2)
				name = "IMAP4rev2";
			s->imap4rev2 = 1;
		}
		if (name != NULL)
			buf_printf(&on, " %s", name);
	}
	imap_out_untagged(c, "ENABLED%s", on.data ? on.data : "");
	buf_deinit(&on);
	imap_cmd_ok(c, "ENABLE completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_id(struct imap_session *s, struct imap_cmd *c)
{
	if (c->parsed.n_args != 1 ||
	    (c->parsed.args[0].type != IMAP_ARG_NIL && c->parsed.args[0].type != IMAP_ARG_LIST)) {
		imap_cmd_bad(c, "Syntax: ID (\"name\" \"value\" ...) or ID NIL");
		return IMAP_CMD_DONE;
	}
	const struct imap_arg *l = &c->parsed.args[0];
	if (l->type == IMAP_ARG_LIST) {
		/* RFC 2971 3.3: at most 30 pairs of bounded strings. */
		if (l->n % 2 != 0 || l->n > 60) {
			imap_cmd_bad(c, "ID takes pairs of strings");
			return IMAP_CMD_DONE;
		}
		for (size_t i = 0; i + 1 < l->n; i += 2) {
			if (imap_arg_is_astring(&l->list[i]) && strcasecmp(l->list[i].s, "name") == 0 &&
			    imap_arg_is_astring(&l->list[i + 1])) {
				char q[200];
				imap_session_log(s, LOG_LEVEL_DEBUG, "event=client_id name=%s",
						 log_quote(q, sizeof(q), l->list[i + 1].s,
							   l->list[i + 1].len < 100 ? l->list[i + 1].len : 100));
			}
		}
	}
	imap_out_untagged(c, "ID (\"name\" \"tern\" \"vendor\" \"tern\" \"support-url\" NIL)");
	imap_cmd_ok(c, "ID completed");
	return IMAP_CMD_DONE;
}

enum imap_cmd_result imap_cmd_namespace(struct imap_session *s, struct imap_cmd *c)
{
	imap_out_untagged(c, "NAMESPACE ((\"\" \"/\")) NIL NIL");
	imap_cmd_ok(c, "NAMESPACE completed");
	return IMAP_CMD_DONE;
}
