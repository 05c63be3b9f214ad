/* A bounded table of counters keyed by short strings ("ip:192.0.2.1"), with an
 * optional time window: used for connections per IP and failed logins. */
#ifndef TERN_BASE_COUNTER_H
#define TERN_BASE_COUNTER_H

#include <time.h>

#define COUNTER_KEY_MAX 128

struct counter_table;

/* max_entries bounds memory: when full, the entry with the oldest window start is
 * reused (a flood of new keys cannot grow the table). */
struct counter_table *counter_table_new(int max_entries);
/* The same, in memory shared with the processes forked afterwards (MAP_SHARED), guarded
 * by a robust process-shared mutex: one table for all session workers. */
struct counter_table *counter_table_new_shared(int max_entries);
void counter_table_free(struct counter_table **t);
/* Current value of key; entries whose window (window > 0) started more than window
 * seconds before now count as 0. */
long counter_get(struct counter_table *t, const char *key, time_t now, int window);
/* Adds delta (may be negative) and returns the new value; a value that reaches 0 frees
 * the entry.  An expired window restarts at now. */
long counter_add(struct counter_table *t, const char *key, long delta, time_t now, int window);

#endif
