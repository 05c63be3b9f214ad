/* SMTP reply parsing for the client side (RFC 5321 4.2, enhanced status codes of RFC
 * 3463 as carried by RFC 2034), without I/O: bytes in, one complete reply out.
 *
 * Incremental and bounded: the caller hands in its unconsumed input, the parser takes
 * whole lines into the reply it is building and reports NEED_MORE, DONE or ERROR.  It
 * never allocates; a reply is at most SMTP_REPLY_LINES_MAX lines of at most
 * SMTP_REPLY_LINE_MAX octets, and its text is kept up to SMTP_REPLY_TEXT_MAX octets
 * (the rest is counted and cut, never stored).  Lines end in CRLF; a bare LF is
 * accepted as a line end too (see smtp_reply.c for why). */
#ifndef TERN_SMTP_SMTP_REPLY_H
#define TERN_SMTP_SMTP_REPLY_H

#include <stddef.h>

/* RFC 5321 4.5.3.1.5 allows 512 octets a reply line including CRLF; real servers send
 * longer ones (long EHLO lines, verbose rejections), so up to this many are accepted
 * and a longer line is a protocol error. */
#define SMTP_REPLY_LINE_MAX 4096
/* Lines of one reply, at most (a multi-line reply longer than this is an error). */
#define SMTP_REPLY_LINES_MAX 100
/* Octets of reply text kept (without the NUL); the rest of a longer reply is cut. */
#define SMTP_REPLY_TEXT_MAX 4096

/* One line of a reply inside smtp_reply.text. */
struct smtp_reply_line {
	unsigned short off;
	unsigned short len;
};

struct smtp_reply {
	int code; /* 200..599 */
	/* "x.y.z" when the first line's text starts with an enhanced status code whose
	 * class is the reply's first digit (RFC 3463 2, RFC 2034 3); else "". */
	char enhanced[16];
	/* The lines' texts (after "250-" / "250 "), each without a leading copy of the
	 * enhanced code, joined by single spaces; NUL-terminated.  Control characters are
	 * replaced by '?' (tabs by spaces), so the text is safe in a log line or a DSN;
	 * octets >= 0x80 are kept as sent. */
	char text[SMTP_REPLY_TEXT_MAX + 1];
	size_t text_len;
	/* Every line received, in order; a line past the text cap has len 0 (and when it
	 * was cut, truncated is set).  For EHLO, line 0 is the greeting and lines 1.. are
	 * the keywords with their parameters (RFC 5321 4.1.1.1). */
	int n_lines;
	struct smtp_reply_line lines[SMTP_REPLY_LINES_MAX];
	int truncated;
	int bare_lf; /* some line ended in LF without CR */
};

enum smtp_reply_status {
	SMTP_REPLY_NEED_MORE,
	SMTP_REPLY_DONE,
	SMTP_REPLY_ERROR,
};

struct smtp_reply_parser {
	/* The reply being built; complete (and valid until the next call) on DONE. */
	struct smtp_reply reply;
	/* Private. */
	size_t scanned;    /* octets of the pending line already searched for LF */
	int complete;      /* reply holds a finished reply: clear it on the next call */
	const char *error; /* set after ERROR: every later call fails the same way */
};

void smtp_reply_parser_init(struct smtp_reply_parser *p);

/* Parses in[0..len), the caller's unconsumed input.  After every call the caller drops
 * the first *consumed_r bytes and calls again with what is left followed by new input
 * (the parser remembers how far it already searched the pending line).
 * NEED_MORE: no complete reply yet.  *consumed_r counts the whole lines taken into the
 *   reply (it may be 0); a partial line is left in the input.
 * DONE: p->reply holds the reply; *consumed_r ends right after its last line, and the
 *   bytes after it (the next pipelined reply) are not examined.
 * ERROR: the input breaks the protocol; *error_r is static text for a log line, e.g.
 *   "reply code differs between lines".  The parser stays failed (the connection has
 *   lost its framing and must be closed); *consumed_r is 0.
 * Errors: a line not starting with three digits, a first digit outside 2-5, a fourth
 * character other than space or "-" (a bare "250" line ends a reply), a code that
 * differs from the reply's first line, a line over SMTP_REPLY_LINE_MAX octets
 * (reported as soon as that many have arrived without LF), more than
 * SMTP_REPLY_LINES_MAX lines, a NUL byte. */
enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p, const char *in, size_t len,
                                        size_t *consumed_r, const char **error_r);

/* Line i of r as a pointer into r->text (borrowed) and its length; i < r->n_lines. */
const char *smtp_reply_line(const struct smtp_reply *r, int i, size_t *len_r);

/* Checks for an enhanced status code (RFC 3463 2: class "." subject "." detail, class 2,
 * 4 or 5, subject and detail 1-3 digits) at the start of s[0..len), followed by a space
 * or the end.  Returns its length (5 to 9), or 0 when there is none. */
size_t smtp_enhanced_code_len(const char *s, size_t len);

#endif
