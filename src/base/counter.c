#include "base/counter.h"

#include <stdint.h>
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
	struct counter_entry *e;
	int cap; /* power of two, twice max_entries: open addressing stays short */
	int max_entries;
	int n;
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

struct counter_table *counter_table_new(int max_entries)
{
	struct counter_table *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->cap = 16;
	while (t->cap < max_entries * 2)
		t->cap *= 2;
	t->max_entries = max_entries;
	t->e = calloc((size_t)t->cap, sizeof(*t->e));
	if (t->e == NULL) {
		free(t);
		return NULL;
	}
	return t;
}

void counter_table_free(struct counter_table **tp)
{
	if (*tp == NULL)
		return;
	free((*tp)->e);
	free(*tp);
	*tp = NULL;
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

long counter_get(struct counter_table *t, const char *key, time_t now, int window)
{
	struct counter_entry *e = find(t, key);
	if (e == NULL)
		return 0;
	if (window > 0 && now - e->start >= window)
		return 0;
	return e->value;
}

long counter_add(struct counter_table *t, const char *key, long delta, time_t now, int window)
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
