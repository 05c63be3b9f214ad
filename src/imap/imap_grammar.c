/* The small grammars IMAP commands share (declared in imap_parse.h): sequence sets,
 * dates, modified UTF-7 mailbox names, and strings in replies. */
#include "imap/imap_parse.h"

#include "base/utf8.h"
#include "msg/base64.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- sequence sets (RFC 9051 9 "sequence-set") ---- */

#define IMAP_SEQSET_MAX 10000

static int imap_range_cmp(const void *a, const void *b)
{
	const struct imap_range *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->hi < y->hi ? -1 : x->hi > y->hi;
}

/* Sorts and merges overlapping and adjacent ranges in place; returns the new count. */
static size_t imap_ranges_merge(struct imap_range *v, size_t n)
{
	size_t o = 0;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), imap_range_cmp);
	for (size_t k = 1; k < n; k++) {
		if (v[k].lo <= v[o].hi || v[k].lo - 1 == v[o].hi) {
			if (v[k].hi > v[o].hi)
				v[o].hi = v[k].hi;
		} else {
			v[++o] = v[k];
		}
	}
	return o + 1;
}

/* seq-number = nz-number / "*"; nz-number = digit-nz *DIGIT, below 2^32. */
static int imap_seq_number(const char *s, size_t len, size_t *i, uint32_t star, uint32_t *v_r)
{
	size_t k = *i;
	uint64_t v = 0;

	if (k < len && s[k] == '*') {
		*v_r = star;
		*i = k + 1;
		return 0;
	}
	if (k >= len || s[k] < '1' || s[k] > '9')
		return -1;
	for (; k < len && s[k] >= '0' && s[k] <= '9'; k++) {
		v = v * 10 + (uint64_t)(s[k] - '0');
		if (v > UINT32_MAX)
			return -1;
	}
	*v_r = (uint32_t)v;
	*i = k;
	return 0;
}

int imap_seqset_parse(const char *s, size_t len, uint32_t star_value,
		      struct imap_range **ranges_r, size_t *n_r)
{
	/* Merged every time this many ranges are pending: memory stays bounded however
	 * long the set, and merging costs O(log n) per range amortised. */
	const size_t batch = 2 * IMAP_SEQSET_MAX;
	struct imap_range *v = NULL;
	size_t n = 0, cap = 0, i = 0;

	*ranges_r = NULL;
	*n_r = 0;
	for (;;) {
		uint32_t a, b;
		if (imap_seq_number(s, len, &i, star_value, &a) < 0)
			goto fail;
		b = a;
		if (i < len && s[i] == ':') {
			i++;
			if (imap_seq_number(s, len, &i, star_value, &b) < 0)
				goto fail;
		}
		if (n == cap) {
			if (n == batch) {
				n = imap_ranges_merge(v, n);
				if (n > IMAP_SEQSET_MAX)
					goto fail;
			}
			if (n == cap) {
				cap = cap != 0 ? cap * 2 : 8;
				struct imap_range *p = realloc(v, cap * sizeof(*v));
				if (p == NULL)
					goto fail;
				v = p;
			}
		}
		/* "*:4" is 4:* (RFC 9051 9 seq-range: the order does not matter). */
		v[n].lo = a < b ? a : b;
		v[n].hi = a < b ? b : a;
		n++;
		if (i == len)
			break;
		if (s[i] != ',')
			goto fail;
		i++;
	}
	n = imap_ranges_merge(v, n);
	if (n > IMAP_SEQSET_MAX)
		goto fail;
	*ranges_r = v;
	*n_r = n;
	return 0;
fail:
	free(v);
	return -1;
}

int imap_seqset_contains(const struct imap_range *ranges, size_t n, uint32_t v)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v < ranges[mid].lo)
			hi = mid;
		else if (v > ranges[mid].hi)
			lo = mid + 1;
		else
			return 1;
	}
	return 0;
}

/* ---- dates (RFC 9051 9 "date", "date-time") ---- */

static const char imap_months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

static int imap_is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int imap_month_days(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	return m == 2 && imap_is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t imap_days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void imap_civil_from_days(int64_t z, int *y_r, int *m_r, int *d_r)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int d = (int)(doy - (153 * mp + 2) / 5 + 1);
	int m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y_r = (int)(yoe + era * 400 + (m <= 2));
	*m_r = m;
	*d_r = d;
}

/* n digits at s[*i] as a number, or -1. */
static int imap_digits(const char *s, size_t len, size_t *i, size_t n)
{
	int v = 0;

	if (len - *i < n)
		return -1;
	for (size_t k = 0; k < n; k++) {
		char c = s[*i + k];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*i += n;
	return v;
}

/* date-text = date-day "-" date-month "-" date-year; the day is 1*2DIGIT, or
 * date-day-fixed (SP DIGIT / 2DIGIT) when fixed.  Months in any case. */
static int imap_date_text(const char *s, size_t len, size_t *i, int fixed, int *y_r, int *m_r,
			  int *d_r)
{
	int d, m, y;

	if (fixed && *i < len && s[*i] == ' ')
		(*i)++;
	if ((d = imap_digits(s, len, i, 1)) < 0)
		return -1;
	if (*i < len && s[*i] >= '0' && s[*i] <= '9')
		d = d * 10 + imap_digits(s, len, i, 1);
	if (*i >= len || s[(*i)++] != '-' || len - *i < 4)
		return -1;
	for (m = 0; m < 12; m++) {
		if (strncasecmp(s + *i, imap_months[m], 3) == 0)
			break;
	}
	if (m == 12)
		return -1;
	m++;
	*i += 3;
	if (*i >= len || s[(*i)++] != '-')
		return -1;
	if ((y = imap_digits(s, len, i, 4)) < 0)
		return -1;
	if (d < 1 || d > imap_month_days(y, m))
		return -1;
	*y_r = y;
	*m_r = m;
	*d_r = d;
	return 0;
}

int imap_date_parse(const char *s, size_t len, int64_t *t_r)
{
	size_t i = 0;
	int y, m, d;

	if (imap_date_text(s, len, &i, 0, &y, &m, &d) < 0 || i != len)
		return -1;
	*t_r = imap_days_from_civil(y, m, d) * 86400;
	return 0;
}

int imap_datetime_parse(const char *s, size_t len, int64_t *t_r, int *tz_r)
{
	size_t i = 0;
	int y, mo, d, h, mi, sec, zh, zm;

	/* date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone
	 * DQUOTE; the quotes went with the string.  A one-digit day without its space
	 * is taken too. */
	if (imap_date_text(s, len, &i, 1, &y, &mo, &d) < 0)
		return -1;
	if (i >= len || s[i++] != ' ')
		return -1;
	if ((h = imap_digits(s, len, &i, 2)) < 0 || i >= len || s[i++] != ':' ||
	    (mi = imap_digits(s, len, &i, 2)) < 0 || i >= len || s[i++] != ':' ||
	    (sec = imap_digits(s, len, &i, 2)) < 0)
		return -1;
	/* 60: a leap second, as RFC 5322 3.3 allows. */
	if (h > 23 || mi > 59 || sec > 60)
		return -1;
	if (i >= len || s[i++] != ' ' || i >= len || (s[i] != '+' && s[i] != '-'))
		return -1;
	int sign = s[i++] == '-' ? -1 : 1;
	if ((zh = imap_digits(s, len, &i, 2)) < 0 || (zm = imap_digits(s, len, &i, 2)) < 0 ||
	    i != len)
		return -1;
	if (zh > 23 || zm > 59)
		return -1;
	int tz = sign * (zh * 60 + zm);
	*t_r = imap_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - tz * 60;
	*tz_r = tz;
	return 0;
}

void imap_datetime_format(int64_t t, int tz, char out[32])
{
	/* Years 0000-9999 keep the fixed width of date-time; clamping also keeps the
	 * arithmetic below far from overflow. */
	const int64_t t_min = -62167219200LL, t_max = 253402300799LL;
	int y, m, d;

	if (tz < -(23 * 60 + 59) || tz > 23 * 60 + 59)
		tz = 0;
	if (t < t_min)
		t = t_min;
	if (t > t_max)
		t = t_max;
	int64_t local = t + (int64_t)tz * 60;
	if (local < t_min)
		local = t_min;
	if (local > t_max)
		local = t_max;
	int64_t days = local >= 0 ? local / 86400 : -((-local + 86399) / 86400);
	int64_t secs = local - days * 86400;
	imap_civil_from_days(days, &y, &m, &d);
	int az = tz < 0 ? -tz : tz;
	snprintf(out, 32, "%2d-%s-%04d %02d:%02d:%02d %c%02d%02d", d, imap_months[m - 1], y,
		 (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60), tz < 0 ? '-' : '+',
		 az / 60, az % 60);
}

/* ---- modified UTF-7 (RFC 3501 5.1.3) ---- */

static const char imap_b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* RFC 3501 5.1.3: modified base64 is RFC 4648's with "," in place of "/". */
static int imap_b64_value(unsigned char c)
{
	return c == ',' ? 63 : c == '/' ? -1 : base64_value(c);
}

static int imap_put_utf8(char *out, size_t cap, size_t *o, uint32_t cp)
{
	unsigned char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | cp >> 6);
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | cp >> 12);
		b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | cp >> 18);
		b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if (cap - *o <= n) /* and the NUL */
		return -1;
	memcpy(out + *o, b, n);
	*o += n;
	return 0;
}

static int imap_put_byte(char *out, size_t cap, size_t *o, char c)
{
	if (cap - *o <= 1)
		return -1;
	out[(*o)++] = c;
	return 0;
}

static int imap_is_direct(unsigned char c)
{
	return c >= 0x20 && c <= 0x7e;
}

/* Only the canonical form is accepted, so that every name has one spelling (and
 * converting back gives the same bytes): printable ASCII is never encoded, a run holds
 * whole UTF-16 units with zero padding bits, two runs never touch, surrogates pair. */
int imap_mutf7_to_utf8(const char *in, size_t len, char *out, size_t cap)
{
	size_t i = 0, o = 0;
	int after_run = 0;

	if (cap == 0)
		return -1;
	out[0] = '\0';
	while (i < len) {
		unsigned char c = (unsigned char)in[i];
		if (!imap_is_direct(c))
			goto fail;
		if (c != '&') {
			if (imap_put_byte(out, cap, &o, (char)c) < 0)
				goto fail;
			i++;
			after_run = 0;
			continue;
		}
		if (i + 1 < len && in[i + 1] == '-') {
			if (imap_put_byte(out, cap, &o, '&') < 0)
				goto fail;
			i += 2;
			after_run = 0;
			continue;
		}
		if (after_run)
			goto fail;
		uint32_t bits = 0, high = 0;
		int nbits = 0;
		for (i++; i < len && in[i] != '-'; i++) {
			int v = imap_b64_value((unsigned char)in[i]);
			if (v < 0)
				goto fail;
			bits = bits << 6 | (uint32_t)v;
			nbits += 6;
			if (nbits < 16)
				continue;
			nbits -= 16;
			uint32_t u = bits >> nbits & 0xffff;
			bits &= (1u << nbits) - 1;
			if (high != 0) {
				if (u < 0xdc00 || u > 0xdfff)
					goto fail;
				u = 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00);
				high = 0;
			} else if (u >= 0xd800 && u <= 0xdbff) {
				high = u;
				continue;
			} else if (u >= 0xdc00 && u <= 0xdfff) {
				goto fail;
			} else if (u == 0 || (u < 0x80 && imap_is_direct((unsigned char)u))) {
				goto fail;
			}
			if (imap_put_utf8(out, cap, &o, u) < 0)
				goto fail;
		}
		/* Unterminated, an empty or partial unit, nonzero padding, a lone
		 * surrogate. */
		if (i >= len || nbits >= 6 || bits != 0 || high != 0 || in[i - 1] == '&')
			goto fail;
		i++;
		after_run = 1;
	}
	out[o] = '\0';
	return 0;
fail:
	out[0] = '\0';
	return -1;
}

/* One code point of strict UTF-8 (no overlongs, surrogates or values past U+10FFFF),
 * or -1. */
static int32_t imap_utf8_next(const unsigned char *s, size_t len, size_t *i)
{
	uint32_t cp;
	size_t n = utf8_decode(s + *i, len - *i, &cp);
	if (n == 0)
		return -1;
	*i += n;
	return (int32_t)cp;
}

int imap_utf8_to_mutf7(const char *in, size_t len, char *out, size_t cap)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0, o = 0;

	if (cap == 0)
		return -1;
	out[0] = '\0';
	while (i < len) {
		if (imap_is_direct(s[i])) {
			if (imap_put_byte(out, cap, &o, (char)s[i]) < 0 ||
			    (s[i] == '&' && imap_put_byte(out, cap, &o, '-') < 0))
				goto fail;
			i++;
			continue;
		}
		/* A run of everything up to the next printable ASCII character. */
		uint32_t bits = 0;
		int nbits = 0;
		if (imap_put_byte(out, cap, &o, '&') < 0)
			goto fail;
		while (i < len && !imap_is_direct(s[i])) {
			int32_t cp = imap_utf8_next(s, len, &i);
			uint32_t units[2];
			int nu = 1;
			if (cp <= 0)
				goto fail;
			if (cp >= 0x10000) {
				units[0] = 0xd800 + (((uint32_t)cp - 0x10000) >> 10);
				units[1] = 0xdc00 + (((uint32_t)cp - 0x10000) & 0x3ff);
				nu = 2;
			} else {
				units[0] = (uint32_t)cp;
			}
			for (int k = 0; k < nu; k++) {
				bits = bits << 16 | units[k];
				nbits += 16;
				while (nbits >= 6) {
					nbits -= 6;
					if (imap_put_byte(out, cap, &o,
							  imap_b64[bits >> nbits & 0x3f]) < 0)
						goto fail;
				}
				bits &= (1u << nbits) - 1;
			}
		}
		if (nbits > 0 &&
		    imap_put_byte(out, cap, &o, imap_b64[bits << (6 - nbits) & 0x3f]) < 0)
			goto fail;
		if (imap_put_byte(out, cap, &o, '-') < 0)
			goto fail;
	}
	out[o] = '\0';
	return 0;
fail:
	out[0] = '\0';
	return -1;
}

/* ---- strings in replies (RFC 9051 4.3) ---- */

/* Below this a quoted string; above, a literal is easier on clients' line limits. */
#define IMAP_QUOTED_MAX 1024

static int imap_quotable(const char *s, size_t len, int utf8)
{
	const unsigned char *u = (const unsigned char *)s;

	if (len >= IMAP_QUOTED_MAX)
		return 0;
	for (size_t i = 0; i < len;) {
		if (u[i] == '\0' || u[i] == '\r' || u[i] == '\n')
			return 0;
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		/* IMAP4rev2 quoted strings may carry UTF-8 (RFC 9051 9 QUOTED-CHAR), only
		 * well-formed, and only to clients that enabled it. */
		if (!utf8 || imap_utf8_next(u, len, &i) < 0)
			return 0;
	}
	return 1;
}

int imap_write_string(struct buf *out, const char *s, size_t len, int utf8)
{
	size_t old = out->len;

	if (s == NULL)
		return buf_append(out, "NIL", 3);
	if (imap_quotable(s, len, utf8)) {
		size_t from = 0;
		if (buf_append(out, "\"", 1) < 0)
			goto fail;
		for (size_t i = 0; i < len; i++) {
			if (s[i] != '"' && s[i] != '\\')
				continue;
			if (buf_append(out, s + from, i - from) < 0 || buf_append(out, "\\", 1) < 0)
				goto fail;
			from = i;
		}
		if (buf_append(out, s + from, len - from) < 0 || buf_append(out, "\"", 1) < 0)
			goto fail;
		return 0;
	}
	if (buf_printf(out, "{%zu}\r\n", len) < 0 || buf_append(out, s, len) < 0)
		goto fail;
	return 0;
fail:
	out->len = old;
	if (out->data != NULL)
		out->data[old] = '\0';
	return -1;
}

int imap_write_nstring(struct buf *out, const char *s_or_null, size_t len, int utf8)
{
	return imap_write_string(out, s_or_null, len, utf8);
}
