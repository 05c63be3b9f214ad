/* Strict base64 (RFC 4648 section 4): the standard alphabet, canonical padding, no
 * whitespace.  Used by SASL (RFC 4954) where a lenient decoder would let two peers
 * disagree about what was sent. */
#ifndef TERN_MSG_BASE64_H
#define TERN_MSG_BASE64_H

#include <stddef.h>

/* Characters base64_encode() writes for n input bytes (without the NUL).  Only for
 * n well below SIZE_MAX / 4 * 3. */
#define BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)
/* Upper bound on the bytes base64_decode() writes for n input characters. */
#define BASE64_DECODED_MAX(n) (((n) / 4) * 3)

/* Decodes in[0..len) into out (cap bytes).  The input must be a whole number of
 * 4-character groups from the standard alphabet, with "=" padding only at the end
 * and the unused bits of the last group zero; an empty input decodes to nothing.
 * Returns 0 with *out_len_r set, or -1 for malformed input or when the result does
 * not fit in cap bytes (nothing is written to out then).  out is not NUL-terminated. */
int base64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len_r);

/* The value (0-63) of one character of the RFC 4648 table 1 alphabet, or -1 for any
 * other character ("=" included: callers handle padding by position).  For the lenient
 * decoders (MIME bodies) and the variants (modified UTF-7) built on the same table. */
int base64_value(unsigned char c);

/* Encodes in[0..len) into out as a NUL-terminated string, padded with "=".  Returns
 * the number of characters written (without the NUL), or 0 when cap is smaller than
 * BASE64_ENCODED_LEN(len) + 1 (out is then set to "" when cap > 0). */
size_t base64_encode(const unsigned char *in, size_t len, char *out, size_t cap);

#endif
