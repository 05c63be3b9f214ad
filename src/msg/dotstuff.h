/* Incremental decoder for the message body of DATA (dot-stuffed, ended by
 * CRLF "." CRLF: RFC 5321 4.1.1.4 and 4.5.2) and of BDAT (RFC 3030: counted, no
 * stuffing).  It is also the SMTP smuggling defence: only CR LF "." CR LF ends a
 * message; any bare CR or LF is flagged so that the caller refuses the message,
 * while decoding goes on to the real terminator so the client stays in sync. */
#ifndef TERN_MSG_DOTSTUFF_H
#define TERN_MSG_DOTSTUFF_H

#include <stddef.h>

enum data_mode {
	DATA_MODE_DOT, /* DATA: unstuff, stop after CRLF "." CRLF */
	DATA_MODE_RAW, /* BDAT: no terminator, only the line checks */
};

enum data_status {
	DATA_NEED_MORE, /* all input consumed; feed more */
	DATA_DONE,      /* DOT mode: the terminator was consumed */
};

struct data_decoder {
	/* Results, read by the caller; any of the three flags means "refuse". */
	int bare_lf;       /* an LF not preceded by CR */
	int bare_cr;       /* a CR not followed by LF */
	int line_too_long; /* a line longer than line_limit octets including CRLF */
	size_t body_size;  /* decoded bytes so far; saturates at SIZE_MAX */

	/* Private. */
	enum data_mode mode;
	int state;
	size_t line_limit;
	size_t line_len;
};

/* line_limit counts the decoded octets of a line including its CRLF (1000 for RFC
 * 5321 4.5.3.1.6); 0 means no limit. */
void data_decoder_init(struct data_decoder *d, enum data_mode mode, size_t line_limit);

/* Consumes in[0..in_len) and appends the decoded body bytes to out, which must have
 * room for in_len bytes (the output of one call is never longer than its input).
 * Sets *consumed_r and *out_len_r.
 * NEED_MORE: all of the input was consumed.
 * DONE (DOT mode only): the terminating CR LF "." CR LF has been consumed, and
 * *consumed_r counts exactly up to its LF; the bytes after it (a pipelined command)
 * are not consumed.  The CRLF before the dot belongs to the body, the ".\r\n" does
 * not.  ".\r\n" as the very first line ends an empty message.  Calling feed again
 * after DONE consumes nothing and returns DONE.
 * A line starting with "." has that dot removed.  After a bare CR or LF the output is
 * no longer guaranteed to be byte-exact (such a message must be refused anyway). */
enum data_status data_decoder_feed(struct data_decoder *d, const char *in, size_t in_len, char *out,
				   size_t *consumed_r, size_t *out_len_r);

/* RAW mode, after the last chunk (BDAT LAST): flags a CR left dangling at the very
 * end as bare.  Returns 0 when the whole body is clean, -1 when any of bare_lf,
 * bare_cr or line_too_long is set. */
int data_decoder_raw_finish(struct data_decoder *d);

/* Whether the body decoded so far is empty or ends with CRLF; a writer that must end
 * the stored message with a line break (BDAT, RFC 3030 does not require one) asks. */
int data_decoder_at_line_start(const struct data_decoder *d);

#endif
