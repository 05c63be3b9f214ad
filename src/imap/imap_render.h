/* Private to src/imap: what FETCH says about a message's contents, computed from the
 * bytes of the message and its MIME tree (msg/mime.h) — ENVELOPE, BODY and
 * BODYSTRUCTURE, and the bytes of BODY[section] / BINARY[section] — and the
 * case-insensitive matching SEARCH uses.  Pure: no I/O, no session; unit-tested on
 * sample messages (tests/unit/imap/imap_render_test.c). */
#ifndef TERN_IMAP_IMAP_RENDER_H
#define TERN_IMAP_IMAP_RENDER_H

#include "base/buf.h"
#include "msg/mime.h"

#include <stddef.h>
#include <stdint.h>

#define IMAP_SECTION_DEPTH_MAX  32  /* part numbers in one section ("1.2.3...") */
#define IMAP_SECTION_FIELDS_MAX 128 /* names in one HEADER.FIELDS list */

/* Where the bytes of the header block msg[0, len) end: just after the empty line that
 * ends it (CRLF or LF), or len when there is none.  *complete_r is 1 when the empty
 * line was seen (0: the caller has only part of the message and should read more). */
size_t imap_header_end(const char *msg, size_t len, int *complete_r);

/* ENVELOPE (RFC 9051 7.5.2) of the header block msg[start, end): "(date subject (from)
 * (sender) (reply-to) (to) (cc) (bcc) in-reply-to message-id)".  Strings as sent (no
 * RFC 2047 decoding); 8-bit text as quoted UTF-8 only when utf8, else as literals.
 * 0, or -1 when out of memory or past out's limit. */
int imap_render_envelope(struct buf *out, const char *msg, size_t start, size_t end, int utf8);

/* BODYSTRUCTURE (extended 1) or BODY (extended 0) of part, whose offsets point into
 * msg.  0 or -1. */
int imap_render_body(struct buf *out, const char *msg, const struct mime_part *part, int extended,
                     int utf8);

/* ---- sections -------------------------------------------------------------------------- */

enum imap_section_text {
	IMAP_SECTION_ALL, /* BODY[] or BODY[1.2]: the part's body (whole message) */
	IMAP_SECTION_HEADER,
	IMAP_SECTION_FIELDS,     /* HEADER.FIELDS (...) */
	IMAP_SECTION_FIELDS_NOT, /* HEADER.FIELDS.NOT (...) */
	IMAP_SECTION_TEXT,
	IMAP_SECTION_MIME,
};

/* BODY[spec]<origin.count> / BINARY[spec]<origin.count> as the client wrote it. */
struct imap_section {
	int binary; /* BINARY / BINARY.PEEK / BINARY.SIZE: only numbers */
	uint32_t nums[IMAP_SECTION_DEPTH_MAX];
	size_t n_nums;
	enum imap_section_text text;
	struct slice fields[IMAP_SECTION_FIELDS_MAX]; /* borrowed from the spec string */
	size_t n_fields;
	int partial; /* <origin.count> was given */
	uint64_t origin, count;
};

/* Parses the section spec between "[" and "]" (spec[0, len), borrowed: fields point into
 * it).  0, or -1 for bad syntax. */
int imap_section_parse(const char *spec, size_t len, int binary, struct imap_section *sec);
/* Parses "<origin.count>" (the whole text including the angle brackets).  0 or -1. */
int imap_partial_parse(const char *s, size_t len, struct imap_section *sec);

/* The bytes a section stands for, before the partial is applied. */
struct imap_section_data {
	int nil;         /* no such part: NIL */
	int unknown_cte; /* BINARY of an encoding we cannot decode */
	const char *p;   /* the bytes: into msg, or into owned */
	size_t len;
	char *owned; /* malloc'd when the bytes were built (caller frees) */
};

/* Finds the section in msg[0, len) whose MIME tree is root.  0, or -1 when out of
 * memory. */
int imap_section_get(const char *msg, size_t len, const struct mime_part *root,
                     const struct imap_section *sec, struct imap_section_data *d);
/* Applies sec's partial to d (p and len move; nothing is copied). */
void imap_section_apply_partial(const struct imap_section *sec, struct imap_section_data *d);

/* The header fields of msg[start, end) that are (not_ 0) or are not (not_ 1) among names,
 * as they appear (folding kept), followed by the empty line.  0 or -1. */
int imap_header_fields(struct buf *out, const char *msg, size_t start, size_t end,
                       const struct slice *names, size_t n, int not_);

/* ---- matching for SEARCH ---------------------------------------------------------------- */

/* Case folding that keeps byte lengths (ASCII, Latin-1, Latin Extended-A, Greek and
 * Cyrillic capitals), so that fold(haystack) contains fold(needle) is SEARCH's
 * "case-insensitive substring".  dst may equal src. */
void imap_fold(char *dst, const char *src, size_t len);
/* 1 when the folded needle occurs in fold(hay); scratch is reused between calls. */
int imap_fold_contains(struct buf *scratch, const char *hay, size_t hay_len,
                       const char *folded_needle, size_t needle_len);

#endif
