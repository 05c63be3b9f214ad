/* The failed-login throttle every protocol shares (SMTP AUTH, IMAP, POP3): failures are
 * counted per client IP and per account name in a counter table (shared by the session
 * workers), and a key over the limit within the window refuses further attempts. */
#ifndef TERN_AUTH_THROTTLE_H
#define TERN_AUTH_THROTTLE_H

struct counter_table;

struct auth_throttle {
	struct counter_table *failures;
	int max_failures;
	int window;                    /* seconds */
};

/* 1 when the IP or (when user is not NULL) the account has too many recent failures. */
int auth_throttle_blocked(const struct auth_throttle *t, const char *ip, const char *user);
/* Counts one failed login for the IP and the account. */
void auth_throttle_failed(const struct auth_throttle *t, const char *ip, const char *user);

#endif
