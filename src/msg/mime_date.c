/* RFC 5322 3.3 date-time, with the obsolete forms of 4.3 (two- and three-digit
 * years, alphabetic zones, CFWS anywhere) and missing seconds or zone. */
#include "msg/mime.h"

#include <string.h>
#include <strings.h>

#include "msg/mime_private.h"

struct mime_date_parser {
	const char *s;
	size_t len, pos;
};

static int dp_is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int dp_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static void dp_skip_cfws(struct mime_date_parser *p)
{
	while (p->pos < p->len) {
		char c = p->s[p->pos];
		if (mime_is_wsp((unsigned char)c) || c == '\r' || c == '\n') {
			p->pos++;
		} else if (c == '(') {
			int depth = 0;
			for (; p->pos < p->len; p->pos++) {
				if (p->s[p->pos] == '\\' && p->pos + 1 < p->len)
					p->pos++;
				else if (p->s[p->pos] == '(')
					depth++;
				else if (p->s[p->pos] == ')' && --depth == 0)
					break;
			}
			if (p->pos < p->len)
				p->pos++;
		} else {
			break;
		}
	}
}

/* An alphabetic word at pos: its length (0 if none). */
static size_t dp_word(struct mime_date_parser *p, const char **w)
{
	size_t start = p->pos;
	while (p->pos < p->len && dp_is_alpha((unsigned char)p->s[p->pos]))
		p->pos++;
	*w = p->s + start;
	return p->pos - start;
}

/* Up to max digits at pos; -1 when there are none. */
static long dp_number(struct mime_date_parser *p, int max, int *n_digits)
{
	long v = 0;
	int n = 0;
	while (p->pos < p->len && n < max && dp_is_digit((unsigned char)p->s[p->pos])) {
		v = v * 10 + (p->s[p->pos] - '0');
		p->pos++;
		n++;
	}
	if (n_digits != NULL)
		*n_digits = n;
	return n == 0 ? -1 : v;
}

static int dp_is_leap(long y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12). */
static int64_t dp_days(long y, int m, int d)
{
	y -= m <= 2;
	long era = (y >= 0 ? y : y - 399) / 400;
	long yoe = y - era * 400;
	long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return (int64_t)era * 146097 + doe - 719468;
}

/* RFC 5322 4.3 obs-zone: the US zones; military letters were specified with the
 * wrong sign in RFC 822, so they mean "unknown", like -0000. */
static int dp_zone_name(const char *w, size_t n, int *tz_r)
{
	static const struct {
		const char *name;
		int hours;
	} zones[] = {
		{ "UT", 0 },   { "UTC", 0 },  { "GMT", 0 },  { "Z", 0 },
		{ "EST", -5 }, { "EDT", -4 }, { "CST", -6 }, { "CDT", -5 },
		{ "MST", -7 }, { "MDT", -6 }, { "PST", -8 }, { "PDT", -7 },
	};
	for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
		if (strlen(zones[i].name) == n && strncasecmp(zones[i].name, w, n) == 0) {
			*tz_r = zones[i].hours * 60;
			return 0;
		}
	}
	*tz_r = 0;
	return 0;
}

int mime_date_parse(const char *value, size_t len, int64_t *t_r, int *tz_r)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	static const char days[] = "montuewedthufrisatsun";
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	struct mime_date_parser p = { value, len, 0 };
	const char *w;
	size_t wn;
	int nd;

	dp_skip_cfws(&p);
	/* [ day-of-week "," ]: the name is not checked against the date (the date is
	 * what counts); full names and a missing comma are tolerated. */
	wn = dp_word(&p, &w);
	if (wn > 0) {
		int found = 0;
		for (size_t i = 0; wn >= 3 && i < 7 && !found; i++)
			found = strncasecmp(w, days + i * 3, 3) == 0;
		if (!found)
			return -1;
		dp_skip_cfws(&p);
		if (p.pos < p.len && p.s[p.pos] == ',')
			p.pos++;
		dp_skip_cfws(&p);
	}
	long day = dp_number(&p, 2, NULL);
	dp_skip_cfws(&p);
	if (p.pos < p.len && p.s[p.pos] == '-')
		p.pos++;
	dp_skip_cfws(&p);
	wn = dp_word(&p, &w);
	int month = -1;
	for (int i = 0; wn >= 3 && i < 12; i++) {
		if (strncasecmp(w, months + i * 3, 3) == 0)
			month = i;
	}
	dp_skip_cfws(&p);
	if (p.pos < p.len && p.s[p.pos] == '-')
		p.pos++;
	dp_skip_cfws(&p);
	long year = dp_number(&p, 4, &nd);
	if (day < 1 || month < 0 || year < 0)
		return -1;
	/* 4.3: two digits are 1950-2049, three digits are added to 1900. */
	if (nd == 2)
		year += year < 50 ? 2000 : 1900;
	else if (nd == 3)
		year += 1900;
	if (year < 1900)
		return -1;

	dp_skip_cfws(&p);
	long hour = dp_number(&p, 2, NULL), min = -1, sec = 0;
	dp_skip_cfws(&p);
	if (p.pos < p.len && p.s[p.pos] == ':') {
		p.pos++;
		dp_skip_cfws(&p);
		min = dp_number(&p, 2, NULL);
		dp_skip_cfws(&p);
		if (p.pos < p.len && p.s[p.pos] == ':') {
			p.pos++;
			dp_skip_cfws(&p);
			sec = dp_number(&p, 2, NULL);
		}
	}
	int dim = mdays[month] + (month == 1 && dp_is_leap(year));
	/* 3.3: second 60 is a leap second. */
	if (hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 60 || day > dim)
		return -1;

	/* zone = ("+" / "-") 4DIGIT, or obs-zone; absent means unknown (+0000). */
	int tz = 0;
	dp_skip_cfws(&p);
	if (p.pos < p.len && (p.s[p.pos] == '+' || p.s[p.pos] == '-')) {
		int neg = p.s[p.pos] == '-';
		p.pos++;
		long z = dp_number(&p, 4, &nd);
		if (nd != 4 || z % 100 > 59)
			return -1;
		tz = (int)(z / 100 * 60 + z % 100);
		if (neg)
			tz = -tz;
	} else if (p.pos < p.len && dp_is_alpha((unsigned char)p.s[p.pos])) {
		wn = dp_word(&p, &w);
		dp_zone_name(w, wn, &tz);
	}

	*t_r = dp_days(year, month + 1, (int)day) * 86400 + hour * 3600 + min * 60 + sec -
	       (int64_t)tz * 60;
	*tz_r = tz;
	return 0;
}
