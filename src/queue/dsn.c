/* Delivery status notifications (contract in dsn.h).
 *
 * Three steps.  First decide what part 3 returns and scan that range of the original
 * once: the size it takes after line-end repair, whether it has 8-bit bytes, whether
 * the boundary occurs in it.  Then build everything before part 3 in memory (bounded
 * by the recipient list, never by the original).  Then stream that, the original again
 * in chunks, and the closing delimiter.  Reading the original twice costs a second
 * pass through the page cache and buys a boundary that is known not to occur in the
 * content (RFC 2046 5.1.1) without holding the message in memory. */
#include "queue/dsn.h"

#include "base/buf.h"
#include "base/utf8.h"
#include "queue/queue_file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define DSN_CHUNK (64 * 1024)
/* RFC 5322 2.1.1: a line MUST be at most 998 octets without its CRLF and SHOULD be at
 * most 78. */
#define DSN_LINE_MAX 998
#define DSN_FOLD     78
/* Width of the text part: short enough for any mail reader, and for quoted-printable
 * (76, RFC 2045 6.7 rule 5) to need no soft breaks in the common case. */
#define DSN_TEXT_WIDTH 72
/* Longest value we put into one field or one line of text.  With a field name in
 * front it stays under DSN_LINE_MAX even where there is no space to fold at. */
#define DSN_VALUE_MAX 900
/* Random characters in a boundary: 32 of [0-9A-Za-z] are about 190 bits, so a clash
 * with the original is only a matter of malice, and the scan catches that too. */
#define DSN_BOUNDARY_RANDOM 32
#define DSN_BOUNDARY_MAX    64
#define DSN_BOUNDARY_TRIES  8
#define DSN_MSGID_RANDOM    16

static _Thread_local char dsn_errbuf[512];

__attribute__((format(printf, 2, 3))) static int dsn_fail(const char **error_r, const char *fmt,
							  ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dsn_errbuf, sizeof(dsn_errbuf), fmt, ap);
	va_end(ap);
	if (error_r != NULL)
		*error_r = dsn_errbuf;
	return -1;
}

int dsn_wanted(enum dsn_kind kind, unsigned notify)
{
	/* RFC 3461 4.1: without NOTIFY an MTA may act as if FAILURE or FAILURE,DELAY was
	 * given; a delay warning is worth its mail when a message sits for hours. */
	if (notify == 0)
		return kind == DSN_FAILURE || kind == DSN_DELAY;
	if (notify & QUEUE_NOTIFY_NEVER)
		return 0;
	switch (kind) {
	case DSN_FAILURE:
		return (notify & QUEUE_NOTIFY_FAILURE) != 0;
	case DSN_DELAY:
		return (notify & QUEUE_NOTIFY_DELAY) != 0;
	case DSN_SUCCESS:
		return (notify & QUEUE_NOTIFY_SUCCESS) != 0;
	}
	return 0;
}

/* ---- small output helpers ---- */

/* A growable buffer that remembers an allocation failure instead of making every
 * caller check each append. */
struct dsn_buf {
	struct buf b;
	int failed;
};

static void db_add(struct dsn_buf *d, const void *data, size_t len)
{
	if (buf_append(&d->b, data, len) < 0)
		d->failed = 1;
}

static void db_str(struct dsn_buf *d, const char *s)
{
	db_add(d, s, strlen(s));
}

/* For short fixed shapes only (numbers, dates). */
__attribute__((format(printf, 2, 3))) static void db_fmt(struct dsn_buf *d, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		d->failed = 1;
		return;
	}
	db_add(d, tmp, (size_t)n);
}

static const char dsn_b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* n random characters of [0-9A-Za-z] and a NUL.  0 or -1 (no randomness). */
static int dsn_random_b62(char *out, size_t n)
{
	unsigned char rnd[DSN_BOUNDARY_MAX];
	size_t got = 0;

	if (n > sizeof(rnd))
		return -1;
	while (got < n) {
		ssize_t r = getrandom(rnd + got, n - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)r;
	}
	/* The modulo bias (256 % 62) costs a fraction of a bit per character. */
	for (size_t i = 0; i < n; i++)
		out[i] = dsn_b62[rnd[i] % 62];
	out[n] = '\0';
	return 0;
}

/* RFC 5322 3.3 date-time, always in UTC.  The names are spelled out here because
 * strftime's follow the locale. */
static void dsn_date(char *out, size_t cap, long long t)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL) {
		tt = 0;
		gmtime_r(&tt, &tm);
	}
	snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7],
		 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

/* One UTF-8 sequence at s[0..len): its length, with the code point in *cp_r; 0 when
 * the bytes are not well-formed UTF-8 (RFC 3629 4: shortest form, no surrogates, at
 * most U+10FFFF). */
static size_t dsn_utf8_next(const unsigned char *s, size_t len, unsigned long *cp_r)
{
	uint32_t cp;
	if (len == 0)
		return 0;
	size_t n = utf8_decode(s, len, &cp);
	if (n > 0)
		*cp_r = cp;
	return n;
}

/* 1 when s is printable ASCII (space included) throughout. */
static int dsn_is_plain(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

/* 1 when s is an address we can put in a header field: no control characters, and
 * well-formed UTF-8 where it is not ASCII. */
static int dsn_addr_ok(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len = strlen(s);

	for (size_t i = 0; i < len;) {
		unsigned long cp;
		size_t n = dsn_utf8_next(u + i, len - i, &cp);
		if (n == 0 || cp < 0x20 || cp == 0x7f)
			return 0;
		i += n;
	}
	return 1;
}

/* Appends s as one line of printable ASCII for a field or the text: control
 * characters (line ends among them) become spaces and other bytes '?' (a remote
 * server's reply is ASCII by RFC 5321 2.4, anything else is damage), leading and
 * trailing spaces are dropped, at most max bytes are kept. */
static void dsn_clean(struct dsn_buf *d, const char *s, size_t max)
{
	size_t start = d->b.len, n = 0;

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	for (; *s != '\0' && n < max; s++, n++) {
		unsigned char c = (unsigned char)*s;
		char o = (char)c;
		if (c < 0x20 || c == 0x7f)
			o = ' ';
		else if (c > 0x7f)
			o = '?';
		db_add(d, &o, 1);
	}
	if (d->failed)
		return;
	while (d->b.len > start && d->b.data[d->b.len - 1] == ' ')
		d->b.len--;
	d->b.data[d->b.len] = '\0';
}

/* Appends addr in the utf-8-addr-xtext form of RFC 6533 3, the one allowed in a
 * message/delivery-status (which stays ASCII): printable ASCII as itself except
 * '+', '\' and '=', everything else as \x{HEX} of its code point.  A byte that is not
 * well-formed UTF-8 becomes U+FFFD rather than stopping the report. */
static void dsn_xtext(struct dsn_buf *d, const char *addr, size_t max)
{
	const unsigned char *u = (const unsigned char *)addr;
	size_t len = strlen(addr), start = d->b.len;

	for (size_t i = 0; i < len && d->b.len - start < max;) {
		unsigned long cp;
		size_t n = dsn_utf8_next(u + i, len - i, &cp);
		if (n == 0) {
			cp = 0xfffd;
			n = 1;
		}
		if (cp > 0x20 && cp < 0x7f && cp != '+' && cp != '\\' && cp != '=') {
			char c = (char)cp;
			db_add(d, &c, 1);
		} else {
			db_fmt(d, "\\x{%02lX}", cp);
		}
		i += n;
	}
}

/* Appends address-type "; " generic-address (RFC 3464 2.3.1, 2.3.2).  An address that
 * is all printable ASCII keeps type as given ("rfc822"); any other becomes the
 * "utf-8" type of RFC 6533 3 in its ASCII form. */
static void dsn_addr_typed(struct dsn_buf *d, const char *type, const char *addr)
{
	if (dsn_is_plain(addr)) {
		db_str(d, type);
		db_str(d, "; ");
		dsn_clean(d, addr, DSN_VALUE_MAX);
	} else {
		db_str(d, "utf-8; ");
		dsn_xtext(d, addr, DSN_VALUE_MAX);
	}
}

/* An ORCPT as stored ("type;address", RFC 3461 4.2, xtext already decoded). */
static void dsn_orcpt(struct dsn_buf *d, const char *orcpt)
{
	const char *semi = strchr(orcpt, ';');
	char type[32];
	size_t tlen = semi != NULL ? (size_t)(semi - orcpt) : 0;
	int type_ok = semi != NULL && tlen > 0 && tlen < sizeof(type);

	for (size_t i = 0; type_ok && i < tlen; i++) {
		char c = orcpt[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			type_ok = 0;
	}
	if (!type_ok) {
		dsn_addr_typed(d, "rfc822", orcpt);
		return;
	}
	memcpy(type, orcpt, tlen);
	type[tlen] = '\0';
	const char *addr = semi + 1;
	while (*addr == ' ')
		addr++;
	/* A "utf-8" address that is ASCII is in its xtext form already (RFC 6533 3). */
	if (strcasecmp(type, "utf-8") == 0 && dsn_is_plain(addr)) {
		db_str(d, "utf-8; ");
		dsn_clean(d, addr, DSN_VALUE_MAX);
		return;
	}
	dsn_addr_typed(d, type, addr);
}

/* "Name: value" CRLF, value printable ASCII without line ends.  Folded before a space
 * (RFC 5322 2.2.3) where the line would pass 78 columns: folding only inserts CRLF in
 * front of existing white space, so unfolding gives the value back. */
static void dsn_field(struct dsn_buf *d, const char *name, const char *value, size_t len)
{
	size_t col = strlen(name) + 1;

	db_str(d, name);
	db_str(d, ":");
	if (len > 0) {
		db_str(d, " ");
		col++;
	}
	for (size_t i = 0; i < len;) {
		size_t e = i;
		while (e < len && value[e] == ' ')
			e++;
		while (e < len && value[e] != ' ')
			e++;
		if (i > 0 && col + (e - i) > DSN_FOLD) {
			db_str(d, "\r\n");
			col = 0;
		}
		db_add(d, value + i, e - i);
		col += e - i;
		i = e;
	}
	db_str(d, "\r\n");
}

/* A field whose value is built into the scratch buffer tmp first. */
static void dsn_field_tmp(struct dsn_buf *d, const char *name, struct dsn_buf *tmp)
{
	if (tmp->failed)
		d->failed = 1;
	dsn_field(d, name, tmp->b.data != NULL ? tmp->b.data : "", tmp->b.len);
	buf_reset(&tmp->b);
	tmp->failed = 0;
}

/* Appends text as lines of about DSN_TEXT_WIDTH columns, each starting with indent;
 * long words stay whole (every value is capped at DSN_VALUE_MAX). */
static void dsn_wrap(struct dsn_buf *d, const char *indent, const char *text)
{
	size_t ilen = strlen(indent), len = text != NULL ? strlen(text) : 0, col = 0;

	for (size_t i = 0; i < len;) {
		while (i < len && text[i] == ' ')
			i++;
		size_t e = i;
		while (e < len && text[e] != ' ')
			e++;
		if (e == i)
			break;
		if (col > 0 && col + 1 + (e - i) > DSN_TEXT_WIDTH) {
			db_str(d, "\r\n");
			col = 0;
		}
		if (col == 0) {
			db_str(d, indent);
			col = ilen;
		} else {
			db_str(d, " ");
			col++;
		}
		db_add(d, text + i, e - i);
		col += e - i;
		i = e;
	}
	if (col > 0)
		db_str(d, "\r\n");
}

/* Quoted-printable (RFC 2045 6.7) of text whose lines end in CRLF: '=' and bytes
 * outside printable ASCII as =XX, white space before a line end as =XX too, encoded
 * lines kept to 76 octets with soft line breaks. */
static void dsn_qp(struct dsn_buf *d, const char *s, size_t len)
{
	size_t col = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char enc[4];
		size_t n = 1;

		if (c == '\r' && i + 1 < len && s[i + 1] == '\n') {
			db_str(d, "\r\n");
			col = 0;
			i++;
			continue;
		}
		int at_eol = i + 1 == len || s[i + 1] == '\r';
		if ((c > 0x20 && c < 0x7f && c != '=') || ((c == ' ' || c == '\t') && !at_eol)) {
			enc[0] = (char)c;
		} else {
			snprintf(enc, sizeof(enc), "=%02X", c);
			n = 3;
		}
		if (col + n > 75) {
			db_str(d, "=\r\n");
			col = 0;
		}
		db_add(d, enc, n);
		col += n;
	}
}

/* After the "type;" of a typed value ("smtp; 550 ...", "dns; mx.example.com"). */
static const char *dsn_untyped(const char *s)
{
	const char *semi = strchr(s, ';');
	if (semi == NULL)
		return s;
	s = semi + 1;
	while (*s == ' ')
		s++;
	return s;
}

/* ---- the job ---- */

enum dsn_return {
	DSN_RETURN_NONE,        /* no original given */
	DSN_RETURN_FULL,        /* message/rfc822 (or message/global) */
	DSN_RETURN_HEADERS,     /* text/rfc822-headers (or message/global-headers) */
	DSN_RETURN_HEADERS_BIG, /* the same, because the whole would pass max_size */
};

/* What one pass over a range of the original found. */
struct dsn_scan {
	off_t out_len;    /* bytes it takes once line ends are repaired */
	int has_8bit;     /* a byte over 0x7f */
	int has_boundary; /* the boundary occurs in it */
};

struct dsn_job {
	const struct dsn_params *p;
	int (*write_cb)(void *ctx, const void *data, size_t len);
	void *ctx;
	char boundary[DSN_BOUNDARY_MAX];
	enum dsn_return ret;
	off_t ret_len;   /* bytes of the original that part 3 returns */
	off_t hdr_end;   /* end of the header block; -1 until found */
	int hdr_cut;     /* the header block was longer than DSN_HEADERS_MAX */
	struct dsn_scan scan;
	size_t olen;
	char obuf[DSN_CHUNK];
	char rbuf[DSN_CHUNK + DSN_BOUNDARY_MAX];
};

static int dsn_flush(struct dsn_job *j)
{
	if (j->olen > 0 && j->write_cb(j->ctx, j->obuf, j->olen) < 0)
		return -1;
	j->olen = 0;
	return 0;
}

static int dsn_out(struct dsn_job *j, const void *data, size_t len)
{
	const char *s = data;

	while (len > 0) {
		if (j->olen == sizeof(j->obuf) && dsn_flush(j) < 0)
			return -1;
		size_t n = sizeof(j->obuf) - j->olen;
		if (n > len)
			n = len;
		memcpy(j->obuf + j->olen, s, n);
		j->olen += n;
		s += n;
		len -= n;
	}
	return 0;
}

/* Exactly len bytes of the original from rel on. */
static int dsn_read(struct dsn_job *j, char *dst, size_t len, off_t rel, const char **error_r)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(j->p->orig_fd, dst + got, len - got,
				  j->p->orig_offset + rel + (off_t)got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return dsn_fail(error_r, "cannot read the original message: %s",
					strerror(errno));
		}
		if (n == 0)
			return dsn_fail(error_r,
					"the original message ends after %lld of %lld bytes",
					(long long)(rel + (off_t)got), (long long)j->p->orig_len);
		got += (size_t)n;
	}
	return 0;
}

/* Bytes of the returned original: out with emit, only counted without. */
static int dsn_copy_put(struct dsn_job *j, int emit, struct dsn_scan *s, const void *data,
			size_t len)
{
	s->out_len += (off_t)len;
	return emit ? dsn_out(j, data, len) : 0;
}

/* One pass over the first len bytes of the original.  Line ends are repaired on the
 * way: the DSN goes out by SMTP, where a bare CR or LF is not allowed (RFC 5321
 * 2.3.8) and a line over 998 octets cannot travel (RFC 5322 2.1.1), yet a message
 * received by BDAT may hold either.  A bare CR or LF becomes CRLF, a longer line is
 * broken; the copy is for the sender to read, not to be delivered again.  The last
 * line gets a CRLF if it lacks one.  Without emit, *scan is filled and the boundary
 * looked for (in the raw bytes: repair only inserts CRLF, so it cannot create one);
 * with emit, the bytes go out. */
static int dsn_copy(struct dsn_job *j, off_t len, int emit, struct dsn_scan *scan,
		    const char **error_r)
{
	size_t blen = strlen(j->boundary), carry = 0, col = 0;
	off_t pos = 0;
	int cr = 0;

	memset(scan, 0, sizeof(*scan));
	while (pos < len) {
		size_t n = DSN_CHUNK;
		if ((off_t)n > len - pos)
			n = (size_t)(len - pos);
		if (dsn_read(j, j->rbuf + carry, n, pos, error_r) < 0)
			return -1;
		if (!emit && memmem(j->rbuf, carry + n, j->boundary, blen) != NULL)
			scan->has_boundary = 1;
		const char *s = j->rbuf + carry;
		for (size_t i = 0; i < n;) {
			unsigned char c = (unsigned char)s[i];
			if (cr) {
				cr = 0;
				col = 0;
				if (dsn_copy_put(j, emit, scan, "\r\n", 2) < 0)
					goto write_failed;
				if (c == '\n') {
					i++;
					continue;
				}
			}
			if (c == '\r') {
				cr = 1;
				i++;
				continue;
			}
			if (c == '\n') {
				col = 0;
				if (dsn_copy_put(j, emit, scan, "\r\n", 2) < 0)
					goto write_failed;
				i++;
				continue;
			}
			if (col == DSN_LINE_MAX) {
				col = 0;
				if (dsn_copy_put(j, emit, scan, "\r\n", 2) < 0)
					goto write_failed;
			}
			/* A run of ordinary bytes up to a line end or the length limit. */
			size_t e = i;
			while (e < n && e - i < DSN_LINE_MAX - col && s[e] != '\r' &&
			       s[e] != '\n') {
				if ((unsigned char)s[e] > 0x7f)
					scan->has_8bit = 1;
				e++;
			}
			if (dsn_copy_put(j, emit, scan, s + i, e - i) < 0)
				goto write_failed;
			col += e - i;
			i = e;
		}
		pos += (off_t)n;
		/* Keep the tail, so that a boundary split between two reads is seen. */
		size_t total = carry + n, keep = blen > 0 ? blen - 1 : 0;
		if (keep > total)
			keep = total;
		memmove(j->rbuf, j->rbuf + total - keep, keep);
		carry = keep;
	}
	if ((cr || col > 0) && dsn_copy_put(j, emit, scan, "\r\n", 2) < 0)
		goto write_failed;
	return 0;
write_failed:
	return dsn_fail(error_r, "cannot write the notification");
}

/* Finds the end of the original's header block (RFC 5322 2.1): before the first empty
 * line, or before the first line that is neither a field ("name:") nor the
 * continuation of one, which is where a message without the empty line has its body
 * start.  Reads at most DSN_HEADERS_MAX + 2 bytes; a longer block is cut at its last
 * line end within DSN_HEADERS_MAX (hdr_cut). */
static int dsn_header_end(struct dsn_job *j, const char **error_r)
{
	enum { HS_LINE_START, HS_BLANK_CR, HS_NAME, HS_NAME_WSP, HS_VALUE } st = HS_LINE_START;
	off_t limit = j->p->orig_len, pos = 0, line_start = 0, last_ok = 0, end = -1;
	int lines = 0;

	if (j->hdr_end >= 0)
		return 0;
	if (limit > (off_t)DSN_HEADERS_MAX + 2)
		limit = (off_t)DSN_HEADERS_MAX + 2;
	while (pos < limit && end < 0) {
		size_t n = DSN_CHUNK;
		if ((off_t)n > limit - pos)
			n = (size_t)(limit - pos);
		if (dsn_read(j, j->rbuf, n, pos, error_r) < 0)
			return -1;
		for (size_t i = 0; i < n && end < 0; i++) {
			unsigned char c = (unsigned char)j->rbuf[i];
			off_t at = pos + (off_t)i;
			int ftext = c > 0x20 && c < 0x7f && c != ':';
			switch (st) {
			case HS_LINE_START:
				line_start = at;
				if (c == '\r')
					st = HS_BLANK_CR;
				else if ((c == ' ' || c == '\t') && lines > 0)
					st = HS_VALUE;
				else if (ftext)
					st = HS_NAME;
				else
					end = at;
				break;
			case HS_BLANK_CR:
				/* CRLF: the separator.  A CR alone at a line start is no
				 * field either. */
				end = line_start;
				break;
			case HS_NAME:
				if (c == ':')
					st = HS_VALUE;
				else if (c == ' ' || c == '\t')
					st = HS_NAME_WSP; /* obs-optional, RFC 5322 4.5.8 */
				else if (!ftext)
					end = line_start;
				break;
			case HS_NAME_WSP:
				if (c == ':')
					st = HS_VALUE;
				else if (c != ' ' && c != '\t')
					end = line_start;
				break;
			case HS_VALUE:
				if (c == '\n') {
					st = HS_LINE_START;
					lines++;
					if (at + 1 <= (off_t)DSN_HEADERS_MAX)
						last_ok = at + 1;
				}
				break;
			}
		}
		pos += (off_t)n;
	}
	if (end < 0) {
		if (pos < j->p->orig_len)
			end = (off_t)DSN_HEADERS_MAX + 1; /* still going at the limit */
		else if (st == HS_LINE_START)
			end = pos;
		else if (st == HS_VALUE)
			end = pos; /* a last field without a line end: it gets one on the copy */
		else
			end = line_start;
	}
	if (end > (off_t)DSN_HEADERS_MAX) {
		end = last_ok;
		j->hdr_cut = 1;
	}
	j->hdr_end = end;
	return 0;
}

/* ---- the parts before the original ---- */

static const char *dsn_action_name(enum dsn_action a)
{
	switch (a) {
	case DSN_ACTION_FAILED:
		return "failed";
	case DSN_ACTION_DELAYED:
		return "delayed";
	case DSN_ACTION_DELIVERED:
		return "delivered";
	case DSN_ACTION_RELAYED:
		return "relayed";
	case DSN_ACTION_EXPANDED:
		return "expanded";
	}
	return NULL;
}

/* class "." subject "." detail, RFC 3463 2: class 2, 4 or 5, then 1-3 digits twice. */
static int dsn_status_ok(const char *s)
{
	if ((s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	s += 2;
	for (int part = 0; part < 2; part++) {
		int n = 0;
		while (*s >= '0' && *s <= '9' && n < 4) {
			s++;
			n++;
		}
		if (n == 0 || n > 3)
			return 0;
		if (part == 0 && *s++ != '.')
			return 0;
	}
	return *s == '\0';
}

/* What an enhanced status code means, in words a sender understands (after RFC 3463
 * 3, RFC 6531 for X.6.7 and X.6.9, RFC 7505 3 for X.1.10); looked up by
 * subject.detail first, then by subject alone. */
static const struct {
	const char *code;
	const char *text;
} dsn_phrases[] = {
	{ "1.1", "the mailbox does not exist" },
	{ "1.2", "the recipient's domain does not exist or does not receive mail" },
	{ "1.3", "the address is not valid" },
	{ "1.6", "the mailbox has moved and left no forwarding address" },
	{ "1.10", "the recipient's domain says that it does not accept mail" },
	{ "2.1", "the mailbox is disabled" },
	{ "2.2", "the mailbox is full" },
	{ "2.3", "the message is larger than the recipient accepts" },
	{ "3.4", "the message is larger than the receiving system accepts" },
	{ "4.1", "the receiving mail server did not answer" },
	{ "4.2", "the connection to the receiving mail server broke off" },
	{ "4.3", "looking up the recipient's domain failed" },
	{ "4.4", "no mail server could be found for the recipient's domain" },
	{ "4.6", "the message was going round in a loop between mail servers" },
	{ "4.7", "the message could not be delivered in the time allowed" },
	{ "6.7", "the receiving system does not accept addresses with international characters" },
	{ "6.9", "the receiving system cannot handle the international characters in the message" },
	{ "7.1", "the receiving mail server refused the message by its rules" },
	{ "1", "there is a problem with the address" },
	{ "2", "there is a problem with the recipient's mailbox" },
	{ "3", "the receiving mail system has a problem" },
	{ "4", "there is a network or routing problem" },
	{ "5", "the mail servers could not understand each other" },
	{ "6", "the content of the message was not accepted" },
	{ "7", "the message was refused for security or policy reasons" },
};

/* The recipient's status code; a missing or malformed one (a remote server without
 * ENHANCEDSTATUSCODES, a caller's slip) becomes the generic code of its action, because
 * refusing would lose the whole report. */
static const char *dsn_rcpt_status(const struct dsn_rcpt *r)
{
	if (r->status != NULL && dsn_status_ok(r->status))
		return r->status;
	switch (r->action) {
	case DSN_ACTION_FAILED:
		return "5.0.0";
	case DSN_ACTION_DELAYED:
		return "4.0.0";
	default:
		return "2.0.0";
	}
}

static const char *dsn_phrase(const char *status)
{
	const char *sd = status + 2; /* after "C." (dsn_status_ok held) */
	size_t subj = strcspn(sd, ".");

	for (size_t i = 0; i < sizeof(dsn_phrases) / sizeof(dsn_phrases[0]); i++)
		if (strcmp(dsn_phrases[i].code, sd) == 0)
			return dsn_phrases[i].text;
	for (size_t i = 0; i < sizeof(dsn_phrases) / sizeof(dsn_phrases[0]); i++)
		if (strlen(dsn_phrases[i].code) == subj &&
		    strncmp(dsn_phrases[i].code, sd, subj) == 0)
			return dsn_phrases[i].text;
	if (status[0] == '5')
		return "the delivery failed for good";
	if (status[0] == '4')
		return "a temporary problem prevented delivery";
	return NULL;
}

/* A recipient address for the text part: as it is when it is well-formed (the part is
 * UTF-8 then), else its escaped form. */
static void dsn_text_addr(struct dsn_buf *d, const char *addr)
{
	if (dsn_addr_ok(addr) && strlen(addr) <= DSN_VALUE_MAX)
		db_str(d, addr);
	else
		dsn_xtext(d, addr, DSN_VALUE_MAX);
}

static void dsn_text_rcpt(struct dsn_buf *d, struct dsn_buf *tmp, const struct dsn_rcpt *r)
{
	const char *status = dsn_rcpt_status(r);
	const char *phrase = dsn_phrase(status);
	char date[64];

	db_str(d, "  ");
	dsn_text_addr(d, r->addr);
	db_str(d, "\r\n");
	buf_reset(&tmp->b);
	switch (r->action) {
	case DSN_ACTION_FAILED:
		db_str(tmp, "Not delivered: ");
		db_str(tmp, phrase != NULL ? phrase : "the delivery failed");
		db_str(tmp, ".");
		/* Given up on a temporary failure: the queue lifetime ran out.  X.4.7 says
		 * that already. */
		if (status[0] == '4' && strcmp(status + 1, ".4.7") != 0)
			db_str(tmp, " The mail system kept trying for as long as it is allowed to"
				    " and has now given up.");
		break;
	case DSN_ACTION_DELAYED:
		db_str(tmp, "Not delivered yet: ");
		db_str(tmp, phrase != NULL ? phrase : "a temporary problem prevented delivery");
		db_str(tmp, ".");
		if (r->will_retry_until != 0) {
			dsn_date(date, sizeof(date), r->will_retry_until);
			db_str(tmp, " The mail system will keep trying until ");
			db_str(tmp, date);
			db_str(tmp, ".");
		}
		break;
	case DSN_ACTION_DELIVERED:
		db_str(tmp, "Delivered.");
		break;
	case DSN_ACTION_RELAYED:
		db_str(tmp, "Passed on to the next mail server, which does not send delivery"
			    " reports: this is the last report you will get for this recipient.");
		break;
	case DSN_ACTION_EXPANDED:
		db_str(tmp, "Delivered to a mailing list or forwarding address, which passed"
			    " the message on to other addresses: you will get no further reports"
			    " for them.");
		break;
	}
	dsn_wrap(d, "    ", tmp->b.data);
	if (r->diagnostic != NULL && r->diagnostic[0] != '\0') {
		buf_reset(&tmp->b);
		if (r->remote_mta != NULL && r->remote_mta[0] != '\0') {
			db_str(tmp, "The mail server ");
			dsn_clean(tmp, dsn_untyped(r->remote_mta), 255);
			db_str(tmp, " answered:");
		} else {
			db_str(tmp, "Details:");
		}
		dsn_wrap(d, "    ", tmp->b.data);
		buf_reset(&tmp->b);
		dsn_clean(tmp, dsn_untyped(r->diagnostic), DSN_VALUE_MAX);
		dsn_wrap(d, "      ", tmp->b.data);
	} else if (r->remote_mta != NULL && r->remote_mta[0] != '\0') {
		buf_reset(&tmp->b);
		db_str(tmp, "Mail server: ");
		dsn_clean(tmp, dsn_untyped(r->remote_mta), 255);
		dsn_wrap(d, "    ", tmp->b.data);
	}
	if (r->last_attempt != 0 && r->action != DSN_ACTION_DELIVERED) {
		dsn_date(date, sizeof(date), r->last_attempt);
		buf_reset(&tmp->b);
		db_str(tmp, "Last attempt: ");
		db_str(tmp, date);
		dsn_wrap(d, "    ", tmp->b.data);
	}
	db_str(d, "\r\n");
}

/* Part 1, unencoded: lines ending in CRLF, ASCII except for addresses. */
static void dsn_text(struct dsn_job *j, struct dsn_buf *d, struct dsn_buf *tmp)
{
	const struct dsn_params *p = j->p;
	char date[64];

	buf_reset(&tmp->b);
	db_str(tmp, "This is the mail system at ");
	db_str(tmp, p->reporting_mta);
	db_str(tmp, ".");
	dsn_wrap(d, "", tmp->b.data);
	db_str(d, "\r\n");
	switch (p->kind) {
	case DSN_FAILURE:
		dsn_wrap(d, "", "Your message could not be delivered to one or more of its"
				" recipients. The mail system has given up on the recipients"
				" below and will not try again.");
		break;
	case DSN_DELAY:
		dsn_wrap(d, "", "Your message has not been delivered yet to the recipients"
				" below. This is only a warning: the mail system is still"
				" trying, and you do not need to send the message again.");
		break;
	case DSN_SUCCESS:
		dsn_wrap(d, "", "This is the delivery report that was asked for when your message"
				" was sent. Your message reached the recipients below.");
		break;
	}
	db_str(d, "\r\n");
	for (int i = 0; i < p->n_rcpts; i++)
		dsn_text_rcpt(d, tmp, &p->rcpts[i]);
	switch (p->kind) {
	case DSN_FAILURE:
		dsn_wrap(d, "", "What you can do: check the addresses above for typing mistakes,"
				" and send the message again to a corrected address. If an"
				" address is right, the problem is on the recipient's side: try"
				" again later, or reach the recipient another way. If you ask"
				" your mail administrator for help, include this whole report.");
		db_str(d, "\r\n");
		break;
	case DSN_DELAY:
		dsn_wrap(d, "", "What you can do: nothing for now. If the mail system finally"
				" gives up, you will get another report. If the message is"
				" urgent, reach the recipient another way.");
		db_str(d, "\r\n");
		break;
	case DSN_SUCCESS:
		break;
	}

	dsn_wrap(d, "", "For your mail administrator:");
	buf_reset(&tmp->b);
	db_str(tmp, "Reporting mail system: ");
	db_str(tmp, p->reporting_mta);
	dsn_wrap(d, "  ", tmp->b.data);
	if (p->queue_id != NULL && p->queue_id[0] != '\0') {
		buf_reset(&tmp->b);
		db_str(tmp, "Queue ID: ");
		db_str(tmp, p->queue_id);
		dsn_wrap(d, "  ", tmp->b.data);
	}
	if (p->arrival != 0) {
		dsn_date(date, sizeof(date), p->arrival);
		buf_reset(&tmp->b);
		db_str(tmp, "Received: ");
		db_str(tmp, date);
		dsn_wrap(d, "  ", tmp->b.data);
	}
	if (p->envid != NULL && p->envid[0] != '\0') {
		buf_reset(&tmp->b);
		db_str(tmp, "Envelope ID: ");
		dsn_clean(tmp, p->envid, DSN_VALUE_MAX);
		dsn_wrap(d, "  ", tmp->b.data);
	}
	db_str(d, "\r\n");

	switch (j->ret) {
	case DSN_RETURN_NONE:
		break;
	case DSN_RETURN_FULL:
		dsn_wrap(d, "", "Your message is attached below, as it was received.");
		break;
	case DSN_RETURN_HEADERS:
		dsn_wrap(d, "", "The headers of your message are attached below; the message"
				" itself is not returned.");
		break;
	case DSN_RETURN_HEADERS_BIG:
		buf_reset(&tmp->b);
		db_fmt(tmp,
		       "Your message was too large to return in full (%lld bytes; this report may"
		       " be at most %zu bytes), so only its headers are attached below.",
		       (long long)p->orig_len, p->max_size);
		dsn_wrap(d, "", tmp->b.data);
		break;
	}
	if (j->ret != DSN_RETURN_NONE && j->ret != DSN_RETURN_FULL && j->hdr_cut) {
		buf_reset(&tmp->b);
		db_fmt(tmp,
		       "The headers of your message were longer than %d bytes and have been"
		       " cut short.",
		       DSN_HEADERS_MAX);
		dsn_wrap(d, "", tmp->b.data);
	}
}

/* Part 2: RFC 3464 2.2 per-message fields, then 2.3 per-recipient fields, each group
 * in the order of the RFC's grammar. */
static void dsn_status(struct dsn_job *j, struct dsn_buf *d, struct dsn_buf *tmp)
{
	const struct dsn_params *p = j->p;
	char date[64];

	buf_reset(&tmp->b);
	if (p->envid != NULL && p->envid[0] != '\0') {
		dsn_clean(tmp, p->envid, DSN_VALUE_MAX);
		dsn_field_tmp(d, "Original-Envelope-Id", tmp);
	}
	db_str(tmp, "dns; ");
	db_str(tmp, p->reporting_mta);
	dsn_field_tmp(d, "Reporting-MTA", tmp);
	if (p->arrival != 0) {
		dsn_date(date, sizeof(date), p->arrival);
		db_str(tmp, date);
		dsn_field_tmp(d, "Arrival-Date", tmp);
	}
	/* An extension field (RFC 3464 2.2, "X-"): lets an administrator find the
	 * message in the queue and the log. */
	if (p->queue_id != NULL && p->queue_id[0] != '\0') {
		db_str(tmp, p->queue_id);
		dsn_field_tmp(d, "X-Tern-Queue-ID", tmp);
	}

	for (int i = 0; i < p->n_rcpts; i++) {
		const struct dsn_rcpt *r = &p->rcpts[i];
		db_str(d, "\r\n");
		if (r->orcpt != NULL && r->orcpt[0] != '\0') {
			dsn_orcpt(tmp, r->orcpt);
			dsn_field_tmp(d, "Original-Recipient", tmp);
		}
		dsn_addr_typed(tmp, "rfc822", r->addr);
		dsn_field_tmp(d, "Final-Recipient", tmp);
		db_str(tmp, dsn_action_name(r->action));
		dsn_field_tmp(d, "Action", tmp);
		db_str(tmp, dsn_rcpt_status(r));
		dsn_field_tmp(d, "Status", tmp);
		if (r->remote_mta != NULL && r->remote_mta[0] != '\0') {
			if (strchr(r->remote_mta, ';') == NULL)
				db_str(tmp, "dns; ");
			dsn_clean(tmp, r->remote_mta, DSN_VALUE_MAX);
			dsn_field_tmp(d, "Remote-MTA", tmp);
		}
		if (r->diagnostic != NULL && r->diagnostic[0] != '\0') {
			if (strchr(r->diagnostic, ';') == NULL)
				db_str(tmp, "smtp; ");
			dsn_clean(tmp, r->diagnostic, DSN_VALUE_MAX);
			dsn_field_tmp(d, "Diagnostic-Code", tmp);
		}
		if (r->last_attempt != 0) {
			dsn_date(date, sizeof(date), r->last_attempt);
			db_str(tmp, date);
			dsn_field_tmp(d, "Last-Attempt-Date", tmp);
		}
		/* RFC 3464 2.3.9: only for a delayed recipient. */
		if (r->action == DSN_ACTION_DELAYED && r->will_retry_until != 0) {
			dsn_date(date, sizeof(date), r->will_retry_until);
			db_str(tmp, date);
			dsn_field_tmp(d, "Will-Retry-Until", tmp);
		}
	}
}

static const char *dsn_subject(enum dsn_kind kind)
{
	switch (kind) {
	case DSN_FAILURE:
		return "Undelivered Mail Returned to Sender";
	case DSN_DELAY:
		return "Delayed Mail (still being retried)";
	case DSN_SUCCESS:
		return "Successful Mail Delivery Report";
	}
	return NULL;
}

/* Everything before the original's bytes: the message header, part 1, part 2 and the
 * header of part 3. */
static int dsn_prefix(struct dsn_job *j, struct dsn_buf *d, int *clash_r, const char **error_r)
{
	const struct dsn_params *p = j->p;
	struct dsn_buf tmp = { 0 }, text = { 0 };
	char date[64], rnd[DSN_MSGID_RANDOM + 1];
	int eightbit = j->ret != DSN_RETURN_NONE && j->scan.has_8bit;
	int global = eightbit && p->smtputf8;

	buf_init(&tmp.b, 0);
	buf_init(&text.b, 0);
	buf_reset(&d->b);
	d->failed = 0;
	if (dsn_random_b62(rnd, DSN_MSGID_RANDOM) < 0)
		return dsn_fail(error_r, "no system randomness for a Message-ID");

	db_str(d, "From: Mail Delivery System <");
	db_str(d, p->postmaster);
	db_str(d, ">\r\n");
	/* The sender's own address, UTF-8 included when it is so (RFC 6532 3.2): such a
	 * notification travels with SMTPUTF8 anyway, its envelope recipient being UTF-8. */
	db_str(d, "To: <");
	db_str(d, p->to);
	db_str(d, ">\r\n");
	db_str(d, "Subject: ");
	db_str(d, dsn_subject(p->kind));
	db_str(d, "\r\n");
	dsn_date(date, sizeof(date), (long long)time(NULL));
	db_str(d, "Date: ");
	db_str(d, date);
	db_str(d, "\r\n");
	/* Unique: the queue id is, and the random part keeps two reports on one message
	 * (a delay warning, then the bounce) apart. */
	db_str(d, "Message-ID: <");
	if (p->queue_id != NULL && p->queue_id[0] != '\0') {
		db_str(d, p->queue_id);
		db_str(d, ".");
	}
	db_str(d, rnd);
	db_str(d, ".dsn@");
	db_str(d, p->reporting_mta);
	db_str(d, ">\r\n");
	db_str(d, "MIME-Version: 1.0\r\n");
	/* RFC 3834 5: so that vacation responders and the like do not answer it. */
	db_str(d, "Auto-Submitted: auto-replied\r\n");
	/* RFC 6522 3, RFC 3464 2. */
	db_str(d, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		  "\tboundary=\"");
	db_str(d, j->boundary);
	db_str(d, "\"\r\n");
	if (eightbit)
		db_str(d, "Content-Transfer-Encoding: 8bit\r\n");
	db_str(d, "\r\n");
	db_str(d, "This is a delivery status notification in MIME format.\r\n");

	/* Part 1: 7bit when ASCII, else UTF-8 in quoted-printable so that the whole
	 * report tern writes stays ASCII on the wire. */
	dsn_text(j, &text, &tmp);
	int text_8bit = 0;
	for (size_t i = 0; i < text.b.len; i++)
		if ((unsigned char)text.b.data[i] > 0x7f)
			text_8bit = 1;
	db_str(d, "\r\n--");
	db_str(d, j->boundary);
	db_str(d, "\r\n");
	if (text_8bit) {
		db_str(d, "Content-Type: text/plain; charset=utf-8\r\n"
			  "Content-Transfer-Encoding: quoted-printable\r\n");
	} else {
		db_str(d, "Content-Type: text/plain; charset=us-ascii\r\n"
			  "Content-Transfer-Encoding: 7bit\r\n");
	}
	db_str(d, "Content-Description: Notification\r\n\r\n");
	size_t body1 = d->b.len;
	if (text_8bit)
		dsn_qp(d, text.b.data, text.b.len);
	else
		db_add(d, text.b.data, text.b.len);

	/* Part 2 always message/delivery-status, never message/global-delivery-status:
	 * every reader understands it, and RFC 6533 3's escaped "utf-8" addresses keep it
	 * ASCII. */
	size_t body1_end = d->b.len;
	db_str(d, "\r\n--");
	db_str(d, j->boundary);
	db_str(d, "\r\nContent-Type: message/delivery-status\r\n"
		  "Content-Description: Delivery report\r\n\r\n");
	size_t body2 = d->b.len;
	dsn_status(j, d, &tmp);
	size_t body2_end = d->b.len;

	/* Part 3.  message/rfc822 admits only 7bit, 8bit or binary (RFC 2046 5.2.1), so
	 * 8-bit content is declared, not encoded.  Header fields in UTF-8 (SMTPUTF8) make it
	 * message/global or message/global-headers (RFC 6532 3.7, RFC 6533 6.3). */
	if (j->ret != DSN_RETURN_NONE) {
		db_str(d, "\r\n--");
		db_str(d, j->boundary);
		db_str(d, "\r\n");
		if (j->ret == DSN_RETURN_FULL) {
			db_str(d, global ? "Content-Type: message/global\r\n"
					 : "Content-Type: message/rfc822\r\n");
			db_str(d, p->kind == DSN_FAILURE
					  ? "Content-Description: Undelivered message\r\n"
					  : "Content-Description: Message\r\n");
		} else {
			db_str(d, global ? "Content-Type: message/global-headers\r\n"
					 : "Content-Type: text/rfc822-headers\r\n");
			db_str(d, p->kind == DSN_FAILURE
					  ? "Content-Description: Undelivered message headers\r\n"
					  : "Content-Description: Message headers\r\n");
		}
		db_str(d, eightbit ? "Content-Transfer-Encoding: 8bit\r\n"
				   : "Content-Transfer-Encoding: 7bit\r\n");
		db_str(d, "\r\n");
	}

	int failed = d->failed || tmp.failed || text.failed;
	buf_deinit(&tmp.b);
	buf_deinit(&text.b);
	if (failed)
		return dsn_fail(error_r, "out of memory");
	/* Addresses and replies come from outside: the boundary must not be in the parts
	 * they went into (the header above does not count, RFC 2046 5.1.1). */
	size_t blen = strlen(j->boundary);
	*clash_r = memmem(d->b.data + body1, body1_end - body1, j->boundary, blen) != NULL ||
		   memmem(d->b.data + body2, body2_end - body2, j->boundary, blen) != NULL;
	return 0;
}

/* ---- checks and the entry point ---- */

static int dsn_check(const struct dsn_params *p, const char **error_r)
{
	if (p->to == NULL || p->to[0] == '\0')
		return dsn_fail(error_r, "no notification to the null sender (RFC 5321 4.5.5)");
	if (strlen(p->to) > DSN_VALUE_MAX || !dsn_addr_ok(p->to))
		return dsn_fail(error_r, "sender address not usable in a To: field");
	if (p->kind != DSN_FAILURE && p->kind != DSN_DELAY && p->kind != DSN_SUCCESS)
		return dsn_fail(error_r, "unknown notification kind %d", (int)p->kind);
	if (p->reporting_mta == NULL || p->reporting_mta[0] == '\0' ||
	    strlen(p->reporting_mta) > 255)
		return dsn_fail(error_r, "reporting MTA name missing or too long");
	for (const char *s = p->reporting_mta; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_'))
			return dsn_fail(error_r, "reporting MTA name is not a host name");
	if (p->postmaster == NULL || p->postmaster[0] == '\0' ||
	    strlen(p->postmaster) > DSN_VALUE_MAX || !dsn_is_plain(p->postmaster) ||
	    strpbrk(p->postmaster, "<>") != NULL)
		return dsn_fail(error_r, "postmaster address missing or not plain ASCII");
	if (p->queue_id != NULL) {
		if (strlen(p->queue_id) > 64)
			return dsn_fail(error_r, "queue id too long");
		for (const char *s = p->queue_id; *s != '\0'; s++)
			if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			      (*s >= '0' && *s <= '9')))
				return dsn_fail(error_r, "queue id is not [0-9A-Za-z]");
	}
	if (p->rcpts == NULL || p->n_rcpts < 1)
		return dsn_fail(error_r, "no recipients to report on");
	for (int i = 0; i < p->n_rcpts; i++) {
		const struct dsn_rcpt *r = &p->rcpts[i];
		if (r->addr == NULL || r->addr[0] == '\0')
			return dsn_fail(error_r, "recipient %d: no address", i);
		if (dsn_action_name(r->action) == NULL)
			return dsn_fail(error_r, "recipient %d: unknown action %d", i,
					(int)r->action);
	}
	if (p->orig_fd >= 0 && p->orig_len < 0)
		return dsn_fail(error_r, "negative original length");
	return 0;
}

/* Chooses a boundary, decides and scans part 3, builds the prefix into d. */
static int dsn_prepare(struct dsn_job *j, struct dsn_buf *d, const char **error_r)
{
	const struct dsn_params *p = j->p;
	static const char prefix[] = "tern-dsn-";
	int clash = 0;

	j->hdr_end = -1;
	/* The whole message only for a failure with RET=FULL: RET is about failed DSNs
	 * (RFC 3461 4.3), and a delay or success report has no use for the body. */
	if (p->orig_fd < 0) {
		j->ret = DSN_RETURN_NONE;
	} else if (p->kind == DSN_FAILURE && p->ret_full) {
		j->ret = DSN_RETURN_FULL;
		j->ret_len = p->orig_len;
	} else {
		if (dsn_header_end(j, error_r) < 0)
			return -1;
		j->ret = DSN_RETURN_HEADERS;
		j->ret_len = j->hdr_end;
	}

	for (int tries = 0; tries < DSN_BOUNDARY_TRIES; tries++) {
		memcpy(j->boundary, prefix, sizeof(prefix) - 1);
		if (dsn_random_b62(j->boundary + sizeof(prefix) - 1, DSN_BOUNDARY_RANDOM) < 0)
			return dsn_fail(error_r, "no system randomness for a MIME boundary");
		memset(&j->scan, 0, sizeof(j->scan));
		if (j->ret != DSN_RETURN_NONE) {
			if (dsn_copy(j, j->ret_len, 0, &j->scan, error_r) < 0)
				return -1;
			if (j->scan.has_boundary)
				continue;
		}
		if (dsn_prefix(j, d, &clash, error_r) < 0)
			return -1;
		if (j->ret == DSN_RETURN_FULL && p->max_size > 0) {
			/* CRLF "--" boundary "--" CRLF */
			size_t tail = 4 + strlen(j->boundary) + 4;
			unsigned long long total = (unsigned long long)d->b.len +
						   (unsigned long long)j->scan.out_len + tail;
			if (total > p->max_size) {
				/* The header block is the start of the range just scanned: the
				 * boundary is not in it either. */
				if (dsn_header_end(j, error_r) < 0)
					return -1;
				j->ret = DSN_RETURN_HEADERS_BIG;
				j->ret_len = j->hdr_end;
				if (dsn_copy(j, j->ret_len, 0, &j->scan, error_r) < 0 ||
				    dsn_prefix(j, d, &clash, error_r) < 0)
					return -1;
			}
		}
		if (clash)
			continue;
		return 0;
	}
	return dsn_fail(error_r, "no MIME boundary found that is not in the message");
}

int dsn_write(const struct dsn_params *p, int (*write_cb)(void *ctx, const void *data, size_t len),
	      void *ctx, const char **error_r)
{
	struct dsn_buf d = { 0 };
	struct dsn_job *j;
	int ret = -1;

	if (p == NULL || write_cb == NULL)
		return dsn_fail(error_r, "no parameters or no output");
	if (dsn_check(p, error_r) < 0)
		return -1;
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return dsn_fail(error_r, "out of memory");
	j->p = p;
	j->write_cb = write_cb;
	j->ctx = ctx;
	buf_init(&d.b, 0);

	if (dsn_prepare(j, &d, error_r) < 0)
		goto out;
	if (dsn_out(j, d.b.data, d.b.len) < 0) {
		dsn_fail(error_r, "cannot write the notification");
		goto out;
	}
	if (j->ret != DSN_RETURN_NONE) {
		struct dsn_scan again;
		if (dsn_copy(j, j->ret_len, 1, &again, error_r) < 0)
			goto out;
		/* The file under us is not supposed to change; if it did, the headers
		 * written for part 3 may be wrong (8bit), so say so rather than hide it. */
		if (again.out_len != j->scan.out_len) {
			dsn_fail(error_r, "the original message changed while being read");
			goto out;
		}
	}
	buf_reset(&d.b);
	db_str(&d, "\r\n--");
	db_str(&d, j->boundary);
	db_str(&d, "--\r\n");
	if (d.failed) {
		dsn_fail(error_r, "out of memory");
		goto out;
	}
	if (dsn_out(j, d.b.data, d.b.len) < 0 || dsn_flush(j) < 0) {
		dsn_fail(error_r, "cannot write the notification");
		goto out;
	}
	ret = 0;
out:
	buf_deinit(&d.b);
	free(j);
	return ret;
}
