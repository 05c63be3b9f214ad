/* libFuzzer target for msg/mime: mime_parse() on arbitrary bytes, the invariants of
 * the tree (offsets nested and ordered, parent links, limits kept), and every other
 * entry point on what the tree holds: mime_section, mime_header_each/get,
 * mime_decode_words, mime_addr_parse, mime_body_decode, mime_body_text,
 * mime_date_parse.  Strings that promise UTF-8 are checked to be UTF-8.
 * Input: the message itself; its first bytes double as section numbers. */
#include <stdint.h>

#include "fuzz_check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg/mime.h"

static int valid_utf8(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned char c = u[i];
		size_t n;
		unsigned char lo = 0x80, hi = 0xbf;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			if (c == 0xe0)
				lo = 0xa0;
			if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			if (c == 0xf0)
				lo = 0x90;
			if (c == 0xf4)
				hi = 0x8f;
		} else {
			return 0;
		}
		if (len - i < n || u[i + 1] < lo || u[i + 1] > hi)
			return 0;
		for (size_t k = 2; k < n; k++) {
			if (u[i + k] < 0x80 || u[i + k] > 0xbf)
				return 0;
		}
		i += n;
	}
	return 1;
}

static int each_cb(void *ctx, const char *name, size_t name_len, const char *value,
		   size_t value_len)
{
	int *n = ctx;
	CHECK(name_len > 0);
	CHECK(memchr(name, ':', name_len) == NULL);
	(void)value;
	(void)value_len;
	return ++*n >= 50;
}

static void check_params(const struct mime_param *p, size_t n, size_t max)
{
	CHECK(n <= max);
	for (size_t i = 0; i < n; i++) {
		CHECK(p[i].name != NULL && p[i].value != NULL);
		for (const char *s = p[i].name; *s != '\0'; s++)
			CHECK(!(*s >= 'A' && *s <= 'Z'));
	}
}

static void check_addrs(const char *value)
{
	struct mime_addr *a;
	size_t n, max = 20;
	CHECK(mime_addr_parse(value, strlen(value), max, &a, &n) == 0);
	CHECK(n <= max);
	int in_group = 0;
	for (size_t i = 0; i < n; i++) {
		if (a[i].mailbox == NULL) {
			CHECK(a[i].host == NULL && a[i].adl == NULL);
			if (a[i].name != NULL) {
				CHECK(!in_group); /* group start */
				in_group = 1;
			} else {
				CHECK(in_group); /* group end */
				in_group = 0;
			}
		}
	}
	CHECK(!in_group);
	mime_addrs_free(a, n);
}

static void check_part(const char *msg, size_t len, const struct mime_part *p,
		       const struct mime_limits *lim, int *count, int depth)
{
	(*count)++;
	CHECK(depth <= lim->max_depth);
	CHECK(p->header_start <= p->header_end && p->header_end <= p->body_start);
	CHECK(p->body_start <= p->body_end && p->body_end <= len);
	CHECK(p->type != NULL && p->subtype != NULL);
	check_params(p->params, p->n_params, lim->max_params);
	check_params(p->disp_params, p->n_disp_params, lim->max_params);
	if (p->n_children > 0)
		CHECK(strcmp(p->type, "multipart") == 0 || strcmp(p->type, "message") == 0);
	if (strcmp(p->type, "message") == 0)
		CHECK(p->n_children <= 1);
	for (size_t i = 0; i < p->n_children; i++) {
		const struct mime_part *c = p->children[i];
		CHECK(c->parent == p);
		CHECK(c->header_start >= p->body_start && c->body_end <= p->body_end);
		if (i > 0)
			CHECK(c->header_start >= p->children[i - 1]->body_end);
		check_part(msg, len, c, lim, count, depth + 1);
	}

	int n = 0;
	mime_header_each(msg, p->header_start, p->header_end, lim->max_headers, each_cb, &n);

	char *v = mime_header_get(msg, p->header_start, p->header_end, "subject");
	if (v != NULL) {
		char *d = mime_decode_words(v, strlen(v));
		CHECK(d != NULL && valid_utf8(d, strlen(d)));
		free(d);
		free(v);
	}
	static const char *const addr_fields[] = { "from", "to", "cc", "reply-to" };
	for (size_t i = 0; i < sizeof(addr_fields) / sizeof(addr_fields[0]); i++) {
		v = mime_header_get(msg, p->header_start, p->header_end, addr_fields[i]);
		if (v != NULL) {
			check_addrs(v);
			free(v);
		}
	}
	v = mime_header_get(msg, p->header_start, p->header_end, "date");
	if (v != NULL) {
		int64_t t;
		int tz;
		if (mime_date_parse(v, strlen(v), &t, &tz) == 0)
			CHECK(tz > -6000 && tz < 6000);
		free(v);
	}

	size_t dlen;
	int bad;
	char *body = mime_body_decode(msg, p, &dlen, &bad);
	CHECK(body != NULL);
	CHECK(dlen <= p->body_end - p->body_start);
	free(body);
	char *text = mime_body_text(msg, p, &dlen);
	if (strcmp(p->type, "text") == 0) {
		CHECK(text != NULL && valid_utf8(text, dlen));
	} else {
		CHECK(text == NULL && dlen == 0);
	}
	free(text);
}

static void run(const char *msg, size_t len, const struct mime_limits *lim)
{
	struct mime_part *root = mime_parse(msg, len, lim);
	CHECK(root != NULL);
	CHECK(root->header_start == 0 && root->parent == NULL);
	CHECK(root->body_end == len || root->header_end == len);

	int count = 0;
	check_part(msg, len, root, lim, &count, 0);
	CHECK(count <= (lim->max_parts > 1 ? lim->max_parts : 1));

	/* Section numbers from the first bytes; and the children of the root. */
	uint32_t nums[4];
	size_t n = len < 4 ? len : 4;
	for (size_t i = 0; i < n; i++)
		nums[i] = (unsigned char)msg[i] % 5;
	for (size_t k = 0; k <= n; k++) {
		const struct mime_part *s = mime_section(root, nums, k);
		if (k == 0)
			CHECK(s == root);
		(void)s;
	}
	if (strcmp(root->type, "multipart") == 0) {
		for (uint32_t i = 1; i <= root->n_children; i++)
			CHECK(mime_section(root, &i, 1) == root->children[i - 1]);
	} else {
		uint32_t one = 1;
		CHECK(mime_section(root, &one, 1) == root);
	}
	mime_free(&root);
	CHECK(root == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly the right size, so ASan sees any read past the end. */
	char *msg = malloc(size ? size : 1);
	if (msg == NULL)
		return 0;
	memcpy(msg, data, size);

	struct mime_limits lim;
	mime_limits_default(&lim);
	run(msg, size, &lim);
	/* Small limits, to reach the paths where parsing is cut. */
	lim.max_depth = 3;
	lim.max_parts = 8;
	lim.max_headers = 5;
	lim.max_params = 2;
	run(msg, size, &lim);

	/* The whole input as a header value too. */
	char *v = malloc(size + 1);
	if (v != NULL) {
		memcpy(v, data, size);
		v[size] = '\0';
		char *d = mime_decode_words(msg, size);
		CHECK(d != NULL && valid_utf8(d, strlen(d)));
		free(d);
		check_addrs(v);
		int64_t t;
		int tz;
		(void)mime_date_parse(msg, size, &t, &tz);
		free(v);
	}
	free(msg);
	return 0;
}
