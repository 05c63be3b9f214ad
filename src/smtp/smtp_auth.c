/* AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, and the failed-login throttle. */
#include "smtp/smtp_private.h"

#include "auth/sasl.h"
#include "auth/throttle.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int auth_throttled(struct smtp_session *s, const char *user)
{
	struct auth_throttle t = { s->srv->auth_failures, s->srv->set.auth_max_failures,
				   s->srv->set.auth_failure_window };
	return auth_throttle_blocked(&t, s->addr, user);
}

static void auth_record_failure(struct smtp_session *s, const char *user)
{
	struct auth_throttle t = { s->srv->auth_failures, s->srv->set.auth_max_failures,
				   s->srv->set.auth_failure_window };
	auth_throttle_failed(&t, s->addr, user);
}

static void auth_start(struct smtp_session *s, const char *authzid, const char *user,
		       const char *password)
{
	s->mode = MODE_COMMAND;
	if (auth_throttled(s, user)) {
		char q[300];
		smtp_session_log(s, LOG_LEVEL_WARN, "event=auth result=throttled user=%s",
			    log_quote(q, sizeof(q), user, strlen(user)));
		smtp_reply(s, "454 4.7.0 Too many failed logins, try again later");
		return;
	}
	snprintf(s->auth_pending_user, sizeof(s->auth_pending_user), "%s", user);
	if (authzid[0] != '\0' && strcasecmp(authzid, user) != 0) {
		/* Acting for another identity is not offered: same reply as a bad password. */
		auth_record_failure(s, user);
		smtp_reply(s, "535 5.7.8 Authentication credentials invalid");
		return;
	}
	s->busy = 1;
	s->srv->cb.auth(s->srv->cb.ctx, s, user, password);
}

void smtp_session_auth_done(struct smtp_session *s, int ok)
{
	s->busy = 0;
	if (s->dead) {
		smtp_session_free(s);
		return;
	}
	char q[300];
	log_quote(q, sizeof(q), s->auth_pending_user, strlen(s->auth_pending_user));
	if (ok) {
		snprintf(s->auth_user, sizeof(s->auth_user), "%s", s->auth_pending_user);
		s->info.auth_user = s->auth_user;
		smtp_session_log(s, LOG_LEVEL_INFO, "event=auth result=ok user=%s", q);
		smtp_reply(s, "235 2.7.0 Authentication successful");
	} else {
		auth_record_failure(s, s->auth_pending_user);
		smtp_session_log(s, LOG_LEVEL_WARN, "event=auth result=failed user=%s ip=%s", q, s->addr);
		smtp_reply(s, "535 5.7.8 Authentication credentials invalid");
	}
	s->auth_pending_user[0] = '\0';
	smtp_session_process(s);
}

void smtp_cmd_auth(struct smtp_session *s, const char *arg, size_t len)
{
	if (s->role == SMTP_ROLE_MX) {
		smtp_reply(s, "502 5.5.1 AUTH is not offered on this port; mail clients submit on port 587 "
			 "(STARTTLS) or 465 (TLS)");
		return;
	}
	if (s->auth_user[0] != '\0') {
		smtp_reply(s, "503 5.5.1 Already authenticated");
		return;
	}
	if (s->state & (ST_MAIL | ST_RCPT)) {
		smtp_reply(s, "503 5.5.1 AUTH is not allowed during a mail transaction");
		return;
	}
	if (!s->tls && !(s->info.loopback && s->srv->set.auth_plaintext_loopback)) {
		smtp_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	if (auth_throttled(s, NULL)) {
		smtp_session_log(s, LOG_LEVEL_WARN, "event=auth result=throttled ip=%s", s->addr);
		smtp_reply(s, "454 4.7.0 Too many failed logins, try again later");
		return;
	}
	size_t m = 0;
	while (m < len && arg[m] != ' ')
		m++;
	const char *ir = arg + m;
	size_t irlen = len - m;
	while (irlen > 0 && *ir == ' ') {
		ir++;
		irlen--;
	}
	struct slice mech = { arg, m };
	if (m == 0) {
		smtp_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	if (slice_eq_ci(mech, "PLAIN")) {
		if (irlen == 0) {
			s->mode = MODE_AUTH_PLAIN;
			smtp_reply(s, "334 ");
			return;
		}
		char authzid[256], user[256], pass[256];
		const char *error = NULL;
		if (irlen == 1 && ir[0] == '=') {
			smtp_reply(s, "501 5.5.2 Empty PLAIN response");
			return;
		}
		if (sasl_plain_decode(ir, irlen, authzid, user, pass, &error) < 0) {
			smtp_reply(s, "501 5.5.2 Cannot decode AUTH PLAIN response");
			return;
		}
		auth_start(s, authzid, user, pass);
		explicit_bzero(pass, sizeof(pass));
	} else if (slice_eq_ci(mech, "LOGIN")) {
		if (irlen == 0) {
			s->mode = MODE_AUTH_LOGIN_USER;
			smtp_reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
			return;
		}
		const char *error = NULL;
		if (sasl_login_decode(ir, irlen, s->auth_pending_user, &error) < 0) {
			smtp_reply(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
			return;
		}
		s->mode = MODE_AUTH_LOGIN_PASS;
		smtp_reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
	} else {
		smtp_reply(s, "504 5.5.4 Unrecognized authentication type (use PLAIN or LOGIN)");
	}
}

/* A line while a SASL exchange waits for the client's response. */
void smtp_auth_response(struct smtp_session *s, const char *line, size_t len)
{
	enum smtp_mode mode = s->mode;
	s->mode = MODE_COMMAND;
	if (len == 1 && line[0] == '*') {
		s->auth_pending_user[0] = '\0';
		smtp_reply(s, "501 5.0.0 Authentication cancelled");
		return;
	}
	const char *error = NULL;
	if (mode == MODE_AUTH_PLAIN) {
		char authzid[256], user[256], pass[256];
		if (sasl_plain_decode(line, len, authzid, user, pass, &error) < 0) {
			smtp_reply(s, "501 5.5.2 Cannot decode AUTH PLAIN response");
			return;
		}
		auth_start(s, authzid, user, pass);
		explicit_bzero(pass, sizeof(pass));
	} else if (mode == MODE_AUTH_LOGIN_USER) {
		if (sasl_login_decode(line, len, s->auth_pending_user, &error) < 0) {
			smtp_reply(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
			return;
		}
		s->mode = MODE_AUTH_LOGIN_PASS;
		smtp_reply(s, "334 UGFzc3dvcmQ6");
	} else {
		char pass[256], user[256];
		if (sasl_login_decode(line, len, pass, &error) < 0) {
			smtp_reply(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
			return;
		}
		snprintf(user, sizeof(user), "%s", s->auth_pending_user);
		auth_start(s, "", user, pass);
		explicit_bzero(pass, sizeof(pass));
	}
}
