#include "base/counter.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct counter_entry {
	char key[COUNTER_KEY_MAX];
	long value;
	time_t start;
	int used;
};

struct counter_table {
	int cap; /* power of two, twice max_entries: open addressing stays short */
	int max_entries;
	int n;
	int shared;
	size_t size;
	pthread_mutex_t lock; /* used when shared */
	struct counter_entry e[];
};

static uint32_t hash_key(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

static struct counter_table *table_new(int max_entries, int shared)
{
	int cap = 16;
	while (cap < max_entries * 2)
		cap *= 2;
	size_t size = sizeof(struct counter_table) + (size_t)cap * sizeof(struct counter_entry);
	struct counter_table *t;
	if (shared) {
		t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (t == MAP_FAILED)
			return NULL;
		memset(t, 0, sizeof(*t));
		pthread_mutexattr_t attr;
		pthread_mutexattr_init(&attr);
		pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
		/* A worker killed while holding the lock must not wedge the others. */
		pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
		pthread_mutex_init(&t->lock, &attr);
		pthread_mutexattr_destroy(&attr);
	} else {
		t = calloc(1, size);
		if (t == NULL)
			return NULL;
	}
	t->cap = cap;
	t->max_entries = max_entries;
	t->shared = shared;
	t->size = size;
	return t;
}

struct counter_table *counter_table_new(int max_entries)
{
	return table_new(max_entries, 0);
}

struct counter_table *counter_table_new_shared(int max_entries)
{
	return table_new(max_entries, 1);
}

void counter_table_free(struct counter_table **tp)
{
	struct counter_table *t = *tp;
	if (t == NULL)
		return;
	if (t->shared)
		munmap(t, t->size);
	else
		free(t);
	*tp = NULL;
}

static void table_lock(struct counter_table *t)
{
	if (t->shared && pthread_mutex_lock(&t->lock) == EOWNERDEAD)
		pthread_mutex_consistent(&t->lock); /* counts may be off by one: harmless */
}

static void table_unlock(struct counter_table *t)
{
	if (t->shared)
		pthread_mutex_unlock(&t->lock);
}

static struct counter_entry *find(struct counter_table *t, const char *key)
{
	uint32_t mask = (uint32_t)t->cap - 1;
	for (uint32_t i = hash_key(key) & mask, n = 0; n < (uint32_t)t->cap; i = (i + 1) & mask, n++) {
		if (!t->e[i].used)
			return NULL;
		if (strcmp(t->e[i].key, key) == 0)
			return &t->e[i];
	}
	return NULL;
}

/* Removes an entry and re-inserts the run after it (linear probing deletion). */
static void remove_entry(struct counter_table *t, struct counter_entry *victim)
{
	uint32_t mask = (uint32_t)t->cap - 1;
	uint32_t i = (uint32_t)(victim - t->e);
	t->e[i].used = 0;
	t->n--;
	for (uint32_t j = (i + 1) & mask; t->e[j].used; j = (j + 1) & mask) {
		struct counter_entry moved = t->e[j];
		t->e[j].used = 0;
		t->n--;
		uint32_t k = hash_key(moved.key) & mask;
		while (t->e[k].used)
			k = (k + 1) & mask;
		t->e[k] = moved;
		t->n++;
	}
}

static struct counter_entry *insert(struct counter_table *t, const char *key, time_t now)
{
	if (t->n >= t->max_entries) {
		struct counter_entry *oldest = NULL;
		for (int i = 0; i < t->cap; i++)
			if (t->e[i].used && (oldest == NULL || t->e[i].start < oldest->start))
				oldest = &t->e[i];
		if (oldest)
			remove_entry(t, oldest);
	}
	uint32_t mask = (uint32_t)t->cap - 1;
	uint32_t i = hash_key(key) & mask;
	while (t->e[i].used)
		i = (i + 1) & mask;
	struct counter_entry *e = &t->e[i];
	snprintf(e->key, sizeof(e->key), "%s", key);
	e->value = 0;
	e->start = now;
	e->used = 1;
	t->n++;
	return e;
}

static long get_locked(struct counter_table *t, const char *key, time_t now, int window)
{
	struct counter_entry *e = find(t, key);
	if (e == NULL)
		return 0;
	if (window > 0 && now - e->start >= window)
		return 0;
	return e->value;
}

long counter_get(struct counter_table *t, const char *key, time_t now, int window)
{
	table_lock(t);
	long v = get_locked(t, key, now, window);
	table_unlock(t);
	return v;
}

static long add_locked(struct counter_table *t, const char *key, long delta, time_t now,
		       int window)
{
	struct counter_entry *e = find(t, key);
	if (e != NULL && window > 0 && now - e->start >= window) {
		e->value = 0;
		e->start = now;
	}
	if (e == NULL) {
		if (delta <= 0)
			return 0;
		e = insert(t, key, now);
	}
	e->value += delta;
	long v = e->value;
	if (v <= 0)
		remove_entry(t, e);
	return v < 0 ? 0 : v;
}

long counter_add(struct counter_table *t, const char *key, long delta, time_t now, int window)
{
	table_lock(t);
	long v = add_locked(t, key, delta, now, window);
	table_unlock(t);
	return v;
}
