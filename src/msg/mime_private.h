/* Helpers shared by the files of msg/mime (mime.c, mime_header.c, mime_addr.c,
 * mime_decode.c, mime_date.c); not for other modules. */
#ifndef TERN_MSG_MIME_PRIVATE_H
#define TERN_MSG_MIME_PRIVATE_H

#include <stddef.h>

#include "base/buf.h"
#include "msg/mime.h"

/* Locale-independent: these are protocol bytes. */
static inline int mime_is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

static inline char mime_lower(int c)
{
	return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

/* 0..15, or -1. */
static inline int mime_hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A malloc'd, NUL-terminated copy of s[0..len), lower-cased when lower; NULL when
 * out of memory. */
char *mime_strndup(const char *s, size_t len, int lower);

/* Appends s[0..len) to out as valid UTF-8: each ill-formed sequence becomes U+FFFD.
 * 0, or -1 when out of memory. */
int mime_utf8_append(struct buf *out, const char *s, size_t len);

/* Appends s[0..len), text in charset, to out as UTF-8.  NULL, "", US-ASCII and UTF-8
 * are validated, ISO-8859-1 is mapped directly, anything else goes through iconv.
 * Returns 0, 1 when the charset is unknown (out is then unchanged), -1 when out of
 * memory. */
int mime_charset_append(struct buf *out, const char *charset, const char *s, size_t len);

/* Tolerant transfer decoders (RFC 2045 6.7 and 6.8) appending to out.  0 or -1 when out
 * of memory. */
int mime_base64_append(struct buf *out, const char *s, size_t len);
int mime_qp_append(struct buf *out, const char *s, size_t len);

/* Content-Type / Content-Disposition parameters (RFC 2045 5.1, RFC 2231) of the
 * unfolded value s[0..len) from just after the type (or disposition); at most max kept.
 * 0 or -1 when out of memory (*params_r is then NULL). */
int mime_params_parse(const char *s, size_t len, size_t max, struct mime_param **params_r,
		      size_t *n_r);
void mime_params_free(struct mime_param *params, size_t n);

/* Content-Type (RFC 2045 5.1) of the unfolded value s into part->type, subtype and
 * params; part->type stays NULL when the value is not "type/subtype".  Content-
 * Disposition (RFC 2183 2) into part->disposition and disp_params.  0 or -1 when out
 * of memory. */
int mime_ctype_parse(const char *s, size_t len, size_t max_params, struct mime_part *part);
int mime_cdisp_parse(const char *s, size_t len, size_t max_params, struct mime_part *part);

/* A raw field value unfolded (line ends removed, RFC 5322 2.2.3) and trimmed of WSP,
 * malloc'd; NULL when out of memory. */
char *mime_value_unfold(const char *v, size_t len);

#endif
