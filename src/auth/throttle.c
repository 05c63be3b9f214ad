#include "auth/throttle.h"

#include "base/counter.h"

#include <stdio.h>
#include <time.h>

/* Account keys are case-folded: "Alice@Example.test" and "alice@example.test" are one
 * account to the directory, so they must be one to the throttle too. */
static void throttle_key(char key[COUNTER_KEY_MAX], const char *kind, const char *name)
{
	snprintf(key, COUNTER_KEY_MAX, "%s:%s", kind, name);
	for (char *p = key; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
}

int auth_throttle_blocked(const struct auth_throttle *t, const char *ip, const char *user)
{
	char key[COUNTER_KEY_MAX];
	time_t now = time(NULL);
	throttle_key(key, "ip", ip);
	if (counter_get(t->failures, key, now, t->window) >= t->max_failures)
		return 1;
	if (user == NULL)
		return 0;
	throttle_key(key, "user", user);
	return counter_get(t->failures, key, now, t->window) >= t->max_failures;
}

void auth_throttle_failed(const struct auth_throttle *t, const char *ip, const char *user)
{
	char key[COUNTER_KEY_MAX];
	time_t now = time(NULL);
	throttle_key(key, "ip", ip);
	counter_add(t->failures, key, 1, now, t->window);
	throttle_key(key, "user", user);
	counter_add(t->failures, key, 1, now, t->window);
}
