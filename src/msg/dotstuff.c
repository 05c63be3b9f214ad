#include "msg/dotstuff.h"

#include <stdint.h>

/* Where we are in the current line. */
enum {
	DS_BOL,    /* at the start of a line: after CRLF, or at the start of the body */
	DS_DOT,    /* DOT mode: a "." at the start of a line was consumed (and dropped) */
	DS_DOT_CR, /* DOT mode: "." CR at the start of a line: LF would end the message */
	DS_TEXT,   /* inside a line */
	DS_CR,     /* a CR was consumed (and written); LF would end the line */
	DS_DONE,
};

void data_decoder_init(struct data_decoder *d, enum data_mode mode, size_t line_limit)
{
	d->bare_lf = 0;
	d->bare_cr = 0;
	d->line_too_long = 0;
	d->body_size = 0;
	d->mode = mode;
	d->state = DS_BOL;
	d->line_limit = line_limit;
	d->line_len = 0;
}

/* Counts one decoded byte of the current line.  Saturates just past the limit so a
 * line of any length cannot wrap the counter. */
static void ds_count(struct data_decoder *d)
{
	if (d->line_limit == 0)
		return;
	if (d->line_len <= d->line_limit)
		d->line_len++;
	if (d->line_len > d->line_limit)
		d->line_too_long = 1;
}

enum data_status data_decoder_feed(struct data_decoder *d, const char *in, size_t in_len, char *out,
				   size_t *consumed_r, size_t *out_len_r)
{
	size_t i = 0, o = 0;
	enum data_status status = DATA_NEED_MORE;

	if (d->state == DS_DONE) {
		*consumed_r = 0;
		*out_len_r = 0;
		return DATA_DONE;
	}
	/* Every consumed byte writes at most one byte: that is what makes "out has
	 * room for in_len" enough.  A CR is written as soon as it is seen (it is body
	 * either way: end of line or bare), and a leading dot is never written. */
	while (i < in_len) {
		char c = in[i];

		switch (d->state) {
		case DS_BOL:
			if (c == '.' && d->mode == DATA_MODE_DOT) {
				d->state = DS_DOT;
				i++;
				continue;
			}
			d->state = DS_TEXT;
			continue; /* the same byte, as line text */
		case DS_DOT:
			if (c == '\r') {
				d->state = DS_DOT_CR;
				i++;
				continue;
			}
			/* Dot-unstuffing (RFC 5321 4.5.2): the first dot is gone, the
			 * rest of the line, even another dot, is text. */
			d->state = DS_TEXT;
			continue;
		case DS_DOT_CR:
			if (c == '\n') {
				/* CR LF "." CR LF (RFC 5321 4.1.1.4), or "." CR LF as the
				 * first line. */
				i++;
				d->state = DS_DONE;
				status = DATA_DONE;
				goto out;
			}
			/* "." CR followed by anything but LF: a bare CR.  The CR is
			 * dropped rather than written late, which would break the one
			 * byte out per byte in rule; the message is refused anyway. */
			d->bare_cr = 1;
			d->state = DS_TEXT;
			continue;
		case DS_CR:
			if (c == '\n') {
				out[o++] = c;
				ds_count(d);
				d->line_len = 0;
				d->state = DS_BOL;
				i++;
				continue;
			}
			d->bare_cr = 1;
			d->state = DS_TEXT;
			continue;
		case DS_TEXT:
			out[o++] = c;
			i++;
			ds_count(d);
			if (c == '\r') {
				d->state = DS_CR;
			} else if (c == '\n') {
				/* A bare LF never starts a line where a dot could end the
				 * message: "\n.\r\n" and "\n.\n" stay body. */
				d->bare_lf = 1;
				d->line_len = 0;
			}
			continue;
		}
	}
out:
	*consumed_r = i;
	*out_len_r = o;
	d->body_size = o > SIZE_MAX - d->body_size ? SIZE_MAX : d->body_size + o;
	return status;
}

int data_decoder_raw_finish(struct data_decoder *d)
{
	if (d->state == DS_CR) {
		/* RFC 3030 chunks may split a CRLF, so a CR at the end of a chunk is
		 * only bare once no chunk follows. */
		d->bare_cr = 1;
		d->state = DS_TEXT;
	}
	return d->bare_lf || d->bare_cr || d->line_too_long ? -1 : 0;
}

int data_decoder_at_line_start(const struct data_decoder *d)
{
	return d->state == DS_BOL || d->state == DS_DONE;
}
