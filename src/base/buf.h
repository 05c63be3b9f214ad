/* One growable byte buffer type with a hard limit, and one non-owning slice. */
#ifndef TERN_BASE_BUF_H
#define TERN_BASE_BUF_H

#include <stddef.h>
#include <string.h>

/* Owns data.  data is always NUL-terminated past len (when cap > 0), so a buffer of
 * text can be used as a C string.  limit 0 means no limit besides memory. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
	size_t limit;
};

/* A borrowed view: valid only while the memory it points into is. */
struct slice {
	const char *p;
	size_t len;
};

void buf_init(struct buf *b, size_t limit);
void buf_deinit(struct buf *b);
void buf_reset(struct buf *b);
/* 0, or -1 when the result would exceed the limit (nothing is appended then). */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);

static inline struct slice slice_from_str(const char *s)
{
	struct slice sl = { s, strlen(s) };
	return sl;
}
int slice_eq_ci(struct slice a, const char *s);

#endif
