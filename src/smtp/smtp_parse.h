/* SMTP server-side parsing without I/O: the command-line reader, the verb/argument
 * split, MAIL and RCPT arguments with their ESMTP parameters, and xtext.  Every
 * function is bounded by its input length and the limits below; none allocates. */
#ifndef TERN_SMTP_SMTP_PARSE_H
#define TERN_SMTP_SMTP_PARSE_H

#include <stddef.h>

#include "msg/addr.h"

/* A command line including CRLF (RFC 5321 4.5.3.1.4).  AUTH responses may use a
 * larger limit given by the caller. */
#define SMTP_LINE_MAX 512

struct smtp_line_reader {
	size_t limit; /* octets of a line including CRLF */
	/* Private. */
	size_t scanned;  /* bytes of the pending line already searched for LF */
	int skipping;    /* discarding the rest of a too-long line */
};

enum smtp_line_status {
	SMTP_LINE_NEED_MORE,
	SMTP_LINE_OK,
	SMTP_LINE_TOO_LONG,
	SMTP_LINE_BARE_LF,
};

/* limit: at least 3 (a one-byte line and its CRLF); smaller values act as 3. */
void smtp_line_reader_init(struct smtp_line_reader *r, size_t limit);
/* Forgets any partial line, e.g. when buffered input is thrown away after STARTTLS. */
void smtp_line_reader_reset(struct smtp_line_reader *r);

/* Looks for one line at the start of in[0..len), the caller's unconsumed input.
 * After a call, the caller drops the first *consumed_r bytes and calls again with what
 * is left followed by any new input (the reader remembers how far it searched).
 * OK: *line_r / *line_len_r point into in (borrowed, without the CRLF) and
 *   *consumed_r includes the CRLF.
 * NEED_MORE: no complete line yet; *consumed_r is 0, or the bytes discarded while
 *   skipping a too-long line.
 * TOO_LONG: reported once, as soon as limit bytes have been seen without an LF among
 *   them (the line and its LF cannot fit in limit).  The bytes seen are consumed, and
 *   the reader then discards input (consuming it) up to and including the next LF,
 *   after which it continues normally, in the same call if more input follows: a
 *   10 MB line without LF costs no memory and gives exactly one TOO_LONG.
 * BARE_LF: a line ended by LF without CR; consumed (LF included), and *line_r /
 *   *line_len_r show it without the LF.  A CR not followed by LF inside a line is
 *   part of the line (smtp_parse_command() rejects it as a control character).
 * A caller loops until NEED_MORE. */
enum smtp_line_status smtp_line_reader_next(struct smtp_line_reader *r, const char *in, size_t len,
					    const char **line_r, size_t *line_len_r,
					    size_t *consumed_r);

/* Splits a command line (without CRLF) into a verb, upper-cased, 1 to 15 letters
 * A-Z, and its argument: after the verb comes the end of the line or a space, and the
 * argument starts after any further spaces, trailing spaces and tabs removed ("MAIL
 * FROM:<a>" is verb "MAIL", argument "FROM:<a>").  *arg_r points into line (borrowed)
 * and may be empty.  Returns 0, or -1 for an empty line, a NUL or control character
 * other than TAB anywhere (DEL included; bytes >= 0x80 are allowed for SMTPUTF8), or
 * a verb that is not 1 to 15 letters followed by space or end. */
int smtp_parse_command(const char *line, size_t len, char verb[16], const char **arg_r,
		       size_t *arg_len_r);

#define SMTP_NOTIFY_NEVER   1
#define SMTP_NOTIFY_SUCCESS 2
#define SMTP_NOTIFY_FAILURE 4
#define SMTP_NOTIFY_DELAY   8

#define SMTP_ENVID_MAX 100 /* RFC 3461 4.4 */
#define SMTP_ORCPT_MAX 500 /* RFC 3461 4.2, the decoded address */
#define SMTP_AUTH_MAX  512

struct smtp_mail_params {
	long long size; /* SIZE= (RFC 1870); -1 when absent; LLONG_MAX when larger */
	enum { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME } body; /* RFC 6152 */
	int smtputf8;                                                  /* RFC 6531 */
	enum { SMTP_RET_NONE, SMTP_RET_FULL, SMTP_RET_HDRS } ret;      /* RFC 3461 4.3 */
	char envid[SMTP_ENVID_MAX + 1]; /* decoded xtext, printable ASCII; "" when absent */
	char auth[SMTP_AUTH_MAX + 1];   /* AUTH= (RFC 4954 5), decoded xtext, printable
					 * ASCII; "<>" is kept as "<>"; "" when absent */
};

struct smtp_rcpt_params {
	unsigned notify; /* SMTP_NOTIFY_* bits; 0 when absent */
	/* "rfc822;" followed by the xtext-decoded address (printable ASCII, not
	 * checked as an address); "" when absent.  Only the rfc822 type is accepted. */
	char orcpt[520];
};

/* The reply class for each outcome; *error_r is then static text for the reply that
 * starts with its enhanced status code (RFC 3463), e.g. "5.5.4 Invalid SIZE value". */
enum smtp_param_error {
	SMTP_PARAM_OK,
	SMTP_PARAM_SYNTAX,    /* 501: "5.5.4 ..." or "5.1.7" / "5.1.3" for a bad address */
	SMTP_PARAM_UNKNOWN,   /* 555 5.5.4: unrecognised parameter */
	SMTP_PARAM_BAD_VALUE, /* 501 5.5.4 */
	SMTP_PARAM_UTF8_ADDR, /* 553 5.6.7: non-ASCII address without SMTPUTF8 (RFC 6531 3.5) */
};

/* arg is the whole argument after the verb, e.g. "FROM:<a@b> SIZE=100 BODY=8BITMIME".
 * "FROM:" in any case, then at most one space (RFC 5321 allows none; some clients
 * send one), a Reverse-path, then space-separated keyword[=value] parameters,
 * keywords in any case, each at most once.  A non-ASCII address needs the SMTPUTF8
 * parameter.  On SMTP_PARAM_OK fills *addr and *p; otherwise their contents are
 * unspecified and *error_r is set. */
enum smtp_param_error smtp_parse_mail(const char *arg, size_t len, struct mail_addr *addr,
				      struct smtp_mail_params *p, const char **error_r);

/* The same for "TO:<forward-path> NOTIFY=... ORCPT=...".  addr_flags are those of
 * addr_parse_path(): ADDR_ALLOW_UTF8 when the transaction's MAIL had SMTPUTF8
 * (ADDR_ALLOW_NULL is ignored: "<>" is never a recipient).  NOTIFY=NEVER cannot be
 * combined with other values. */
enum smtp_param_error smtp_parse_rcpt(const char *arg, size_t len, unsigned addr_flags,
				      struct mail_addr *addr, struct smtp_rcpt_params *p,
				      const char **error_r);

/* xtext (RFC 3461 4): decodes in[0..len) into out followed by a NUL.  "+" must be
 * followed by two upper-case hex digits; any other byte must be "!".."~" other than
 * "+" and "=".  The decoded bytes may include NUL and controls (the callers check).
 * Returns 0 with *out_len_r (without the NUL), or -1 when malformed or when cap is
 * too small for the result and its NUL. */
int smtp_xtext_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len_r);
/* Encodes in[0..len) as xtext into out followed by a NUL.  Returns the length
 * written (without the NUL), or -1 when cap is too small. */
int smtp_xtext_encode(const char *in, size_t len, char *out, size_t cap);

#endif
