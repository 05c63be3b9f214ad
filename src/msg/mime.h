/* RFC 5322 + MIME (RFC 2045-2047, 2231) message structure, for IMAP's ENVELOPE,
 * BODYSTRUCTURE, BODY[section] and SEARCH.  Pure: bytes in, a tree of offsets out; no
 * I/O.  Bounded by struct mime_limits: a message past a bound is still parsed, its
 * deeper or further parts are treated as opaque bodies (never an error, never a crash).
 *
 * Offsets are into the caller's message buffer, which must outlive the tree.  The
 * parser accepts CRLF and bare LF line ends (files written by other programs). */
#ifndef TERN_MSG_MIME_H
#define TERN_MSG_MIME_H

#include <stddef.h>
#include <stdint.h>

struct mime_limits {
	int max_depth;        /* nesting of multiparts and message/rfc822 (default 20) */
	int max_parts;        /* parts in the whole tree (default 1000) */
	int max_headers;      /* header fields per header block (default 1000) */
	size_t max_params;    /* parameters per Content-Type / Content-Disposition (32) */
};

struct mime_param {
	char *name;           /* lower-cased */
	char *value;          /* RFC 2231 continuations joined; charset/language prefix and
				 %-escapes decoded into UTF-8 when the charset is known,
				 else left as sent */
};

struct mime_part {
	/* Offsets into the message. */
	size_t header_start, header_end;  /* header_end: after the blank line ending it */
	size_t body_start, body_end;
	size_t body_lines;                /* lines of the body (for text/ and message/rfc822) */

	/* Content-Type, lower-cased; "text"/"plain" when absent (or "message"/"rfc822"
	 * inside multipart/digest). */
	char *type, *subtype;
	struct mime_param *params;
	size_t n_params;
	char *id, *description, *md5;     /* raw field values (unfolded), NULL when absent */
	char *encoding;                   /* Content-Transfer-Encoding, lower-cased, NULL = 7bit */
	char *disposition;                /* lower-cased, NULL when absent */
	struct mime_param *disp_params;
	size_t n_disp_params;
	char *language;                   /* raw field value or NULL */
	char *location;

	/* Children: the parts of a multipart, or the single message of a message/rfc822
	 * (whose own header is then children[0]'s header). */
	struct mime_part **children;
	size_t n_children;
	struct mime_part *parent;
};

void mime_limits_default(struct mime_limits *lim);

/* Parses msg (len bytes).  Returns the root part (owned by the caller, free with
 * mime_free) or NULL when out of memory. */
struct mime_part *mime_parse(const char *msg, size_t len, const struct mime_limits *lim);
void mime_free(struct mime_part **root);

/* The part addressed by an IMAP section number list ("1.2.3" as {1,2,3}, n numbers);
 * n = 0 is the root.  A message/rfc822 part's number addresses its message's parts as
 * RFC 9051 6.4.5 says.  NULL when there is no such part. */
const struct mime_part *mime_section(const struct mime_part *root, const uint32_t *nums,
				     size_t n);

/* ---- header fields -------------------------------------------------------------------- */

/* Calls cb for each header field of msg[start, end): name and raw value (after the
 * colon, folding CRLFs kept) borrowed from msg.  cb returns 0 to go on, 1 to stop.
 * Stops after max fields. */
void mime_header_each(const char *msg, size_t start, size_t end, int max,
		      int (*cb)(void *ctx, const char *name, size_t name_len,
				const char *value, size_t value_len),
		      void *ctx);
/* The first field named name (case-insensitive) of msg[start, end), unfolded (CRLF
 * + WSP -> the WSP) and trimmed, malloc'd; NULL when absent. */
char *mime_header_get(const char *msg, size_t start, size_t end, const char *name);

/* RFC 2047 encoded-words in a field value decoded to UTF-8 (charsets: UTF-8, US-ASCII,
 * ISO-8859-1..15, Windows-1252, and whatever iconv knows); malloc'd. */
char *mime_decode_words(const char *value, size_t len);

/* ---- addresses (for ENVELOPE) --------------------------------------------------------- */

/* One address of an address-list, or a group start (mailbox NULL, name = group name)
 * or group end (all NULL): IMAP's ENVELOPE representation. */
struct mime_addr {
	char *name;           /* display name as sent (RFC 2047 words not decoded), or NULL */
	char *adl;            /* source route, normally NULL */
	char *mailbox;        /* local part */
	char *host;           /* domain */
};

/* Parses an RFC 5322 address-list (tolerantly: obsolete syntax and common mistakes
 * give best-effort results).  *addrs_r is the caller's (mime_addrs_free); at most max
 * addresses. */
int mime_addr_parse(const char *value, size_t len, size_t max, struct mime_addr **addrs_r,
		    size_t *n_r);
void mime_addrs_free(struct mime_addr *addrs, size_t n);

/* ---- bodies --------------------------------------------------------------------------- */

/* Decodes a part's body by its Content-Transfer-Encoding (base64, quoted-printable; other
 * encodings are copied).  Returns a malloc'd buffer (*len_r bytes) or NULL when out of
 * memory; *bad_r is 1 when the encoding was unknown (IMAP BINARY answers
 * UNKNOWN-CTE). */
char *mime_body_decode(const char *msg, const struct mime_part *part, size_t *len_r,
		       int *bad_r);

/* Text of a part for SEARCH BODY/TEXT: transfer-decoded and converted from its charset
 * to UTF-8 (text/ parts; others give NULL).  malloc'd. */
char *mime_body_text(const char *msg, const struct mime_part *part, size_t *len_r);

/* ---- dates ---------------------------------------------------------------------------- */

/* Parses an RFC 5322 date-time (tolerant of obsolete forms).  0 and *t_r (UTC seconds)
 * and *tz_r (minutes east), or -1. */
int mime_date_parse(const char *value, size_t len, int64_t *t_r, int *tz_r);

#endif
