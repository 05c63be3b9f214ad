/* Well-formed UTF-8 (RFC 3629 section 4): no overlong forms, no surrogates, nothing
 * above U+10FFFF.  One definition for every module that checks or decodes it. */
#ifndef TERN_BASE_UTF8_H
#define TERN_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1-4) of the well-formed sequence at s (avail bytes, avail >= 1), or 0 when
 * it is malformed: a stray continuation byte, an overlong form, a surrogate, above
 * U+10FFFF, or cut short by avail.  *short_r (may be NULL) is set to 1 when only avail
 * made it fail (more bytes might complete it), else 0. */
size_t utf8_seq_len(const unsigned char *s, size_t avail, int *short_r);
/* As utf8_seq_len(), and the code point in *cp_r. */
size_t utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp_r);
/* 1 when s[0..len) is well-formed UTF-8 throughout (ASCII included). */
int utf8_valid(const char *s, size_t len);

#endif
