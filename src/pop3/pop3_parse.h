/* POP3 input and output framing, pure and I/O-free (fuzzed by fuzz/fuzz_pop3_parse.c):
 * the line reader with its limit, the command line (verb and arguments), numbers, the
 * AUTH PLAIN response (RFC 5034 4) and the dot-stuffing writer for RETR and TOP
 * (RFC 1939 3). */
#ifndef TERN_POP3_POP3_PARSE_H
#define TERN_POP3_POP3_PARSE_H

#include "base/buf.h"

#include <stddef.h>
#include <stdint.h>

#define POP3_LINE_MAX      255  /* a command line without its CRLF (RFC 2449 4) */
#define POP3_AUTH_LINE_MAX 2048 /* a SASL response line */
#define POP3_VERB_MAX      15
#define POP3_ARGS_MAX      4

/* ---- lines ------------------------------------------------------------------------------- */

enum pop3_line_status {
	POP3_LINE_NEED_MORE, /* no complete line; *consumed_r bytes may be dropped */
	POP3_LINE_OK,        /* *line_r (CR LF or bare LF stripped) is a line */
	POP3_LINE_TOO_LONG,  /* a line over the limit ended: it was skipped whole */
};

struct pop3_line_reader {
	size_t limit; /* octets of a line without its line end */
	int skipping; /* inside a line over the limit */
};

void pop3_line_reader_init(struct pop3_line_reader *lr, size_t limit);
/* Looks for the next line in data[0..len).  OK: *line_r points into data (len bytes
 * without the line end) and *consumed_r counts through the LF.  NEED_MORE: the caller
 * drops *consumed_r bytes (the part of an overlong line seen so far; 0 otherwise) and
 * calls again with more data.  TOO_LONG: an overlong line ended at *consumed_r.  State
 * carries across calls, so a line may arrive in any number of pieces. */
enum pop3_line_status pop3_line_next(struct pop3_line_reader *lr, const char *data, size_t len,
                                     struct slice *line_r, size_t *consumed_r);

/* ---- commands ---------------------------------------------------------------------------- */

enum pop3_parse_status {
	POP3_PARSE_OK = 0,
	POP3_PARSE_EMPTY = -1,    /* nothing but spaces */
	POP3_PARSE_BAD_VERB = -2, /* not 1..15 letters */
	POP3_PARSE_BAD_CHAR = -3, /* NUL or another control character */
};

struct pop3_command {
	char verb[POP3_VERB_MAX + 1]; /* upper case */
	int n_args;                   /* space-separated words after the verb (may exceed
	                                 POP3_ARGS_MAX: only the first ones are in args) */
	struct slice args[POP3_ARGS_MAX];
	struct slice rest; /* everything after the verb's single space (PASS
	                      takes its argument whole, spaces included: RFC 1939 7) */
};

/* Splits line[0..len).  The slices point into line. */
enum pop3_parse_status pop3_parse_command(const char *line, size_t len, struct pop3_command *cmd_r);
/* A decimal number: 1..10 digits, no sign, at most UINT32_MAX.  0 or -1. */
int pop3_parse_uint(struct slice s, uint32_t *n_r);

enum pop3_auth_status {
	POP3_AUTH_OK,
	POP3_AUTH_CANCEL, /* "*" (RFC 5034 4) */
	POP3_AUTH_BAD,    /* not a valid PLAIN message */
};

/* An AUTH PLAIN response (initial or after "+ "): on OK the three fields (256 bytes
 * each) are NUL-terminated; otherwise "".  Callers wipe passwd. */
enum pop3_auth_status pop3_parse_auth_plain(const char *line, size_t len, char *authzid,
                                            char *authcid, char *passwd);

/* ---- dot-stuffing ------------------------------------------------------------------------ */

struct pop3_stuffer {
	int at_line_start;
	int line_has_text;  /* the current line has an octet other than CR */
	int in_body;        /* the empty line after the header has passed */
	int64_t body_lines; /* TOP: body lines still wanted; -1 for all (RETR) */
	int done;           /* TOP: enough lines; the rest of the message is not sent */
};

/* body_lines: -1 for a whole message (RETR), or the k of TOP n k. */
void pop3_stuffer_init(struct pop3_stuffer *st, int64_t body_lines);
/* Stuffs in[0..len) into out, which has room for 2 * len bytes: a "." opening a line
 * becomes "..", everything else is copied byte for byte.  Returns the bytes written;
 * *consumed_r is len unless TOP's line count was reached (done is set then). */
size_t pop3_stuffer_feed(struct pop3_stuffer *st, const char *in, size_t len, char *out,
                         size_t *consumed_r);
/* The end of the answer: CR LF when the data did not end a line, then ".\r\n".  out has
 * room for 5 bytes; returns the bytes written. */
size_t pop3_stuffer_finish(struct pop3_stuffer *st, char *out);

#endif
