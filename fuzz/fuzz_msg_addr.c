/* libFuzzer target for msg/addr: addr_parse_path() and addr_parse_mailbox() on
 * arbitrary bytes, and the promise of addr_format(): what it writes parses back to the
 * same local part and domain and is never longer than what was parsed.
 * Input: one byte of flags, then the text. */
#include <stdint.h>

#include "fuzz_check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg/addr.h"


static int has_8bit(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s >= 0x80)
			return 1;
	}
	return 0;
}

static void check_fields(const struct mail_addr *a, unsigned flags)
{
	CHECK(memchr(a->local, '\0', sizeof(a->local)) != NULL);
	CHECK(memchr(a->domain, '\0', sizeof(a->domain)) != NULL);
	CHECK(strlen(a->local) <= ADDR_LOCAL_MAX);
	CHECK(strlen(a->domain) <= ADDR_DOMAIN_MAX);
	CHECK(a->utf8 == (has_8bit(a->local) || has_8bit(a->domain)));
	if (a->utf8)
		CHECK(flags & ADDR_ALLOW_UTF8);
	for (const char *s = a->local; *s != '\0'; s++)
		CHECK((unsigned char)*s >= 0x20 && *s != 0x7f);
	for (const char *s = a->domain; *s != '\0'; s++)
		CHECK(!(*s >= 'A' && *s <= 'Z'));
	if (a->is_null)
		CHECK(a->local[0] == '\0' && a->domain[0] == '\0');
	else
		CHECK(a->local[0] != '\0');
}

/* Formats a, parses the text back (as a path and as a mailbox) and compares. */
static void check_round_trip(const struct mail_addr *a, unsigned flags, size_t orig_len)
{
	char text[1024], path[1030];
	struct mail_addr b;
	size_t used;

	int n = addr_format(a, text, sizeof(text));
	CHECK(n >= 0);
	CHECK((size_t)n == strlen(text));
	CHECK((size_t)n <= orig_len);
	/* Too small a buffer is refused, never overrun. */
	if (n > 0) {
		char small[1024];
		CHECK(addr_format(a, small, (size_t)n) == -1);
	}
	if (a->is_null) {
		CHECK(n == 0);
		return;
	}
	int pn = snprintf(path, sizeof(path), "<%s>", text);
	unsigned pflags = flags & ~(unsigned)ADDR_ALLOW_NULL;
	/* A mailbox may be longer than a path may (320 against 256 octets). */
	if (pn <= ADDR_PATH_MAX) {
		CHECK(addr_parse_path(path, (size_t)pn, pflags, &b, &used) == ADDR_OK);
		CHECK(used == (size_t)pn);
		CHECK(strcmp(a->local, b.local) == 0);
		CHECK(strcmp(a->domain, b.domain) == 0);
	}
	if (a->domain[0] != '\0') {
		CHECK(addr_parse_mailbox(text, (size_t)n, flags, &b) == ADDR_OK);
		CHECK(strcmp(a->local, b.local) == 0);
		CHECK(strcmp(a->domain, b.domain) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mail_addr a;
	size_t used = 12345;

	if (size < 1)
		return 0;
	unsigned flags = data[0] & (ADDR_ALLOW_NULL | ADDR_ALLOW_UTF8);
	/* A copy of exactly the right size, so ASan sees any read past the end. */
	size_t len = size - 1;
	char *s = malloc(len ? len : 1);
	if (s == NULL)
		return 0;
	memcpy(s, data + 1, len);

	enum addr_error e = addr_parse_path(s, len, flags, &a, &used);
	CHECK(addr_error_str(e) != NULL);
	if (e == ADDR_OK) {
		CHECK(used >= 2 && used <= len && used <= ADDR_PATH_MAX);
		CHECK(s[0] == '<' && s[used - 1] == '>');
		check_fields(&a, flags);
		if (a.is_null)
			CHECK(flags & ADDR_ALLOW_NULL);
		if (a.domain[0] == '\0' && !a.is_null)
			CHECK(strcmp(a.local, "postmaster") == 0 && !(flags & ADDR_ALLOW_NULL));
		check_round_trip(&a, flags, used - 2);
		/* The bytes after ">" do not matter. */
		struct mail_addr b;
		size_t used2;
		CHECK(addr_parse_path(s, used, flags, &b, &used2) == ADDR_OK);
		CHECK(used2 == used && memcmp(&a, &b, sizeof(a)) == 0);
	} else {
		CHECK(used == 0);
		CHECK(a.local[0] == '\0' && a.domain[0] == '\0');
		if (e == ADDR_ERR_UTF8_NOT_ALLOWED)
			CHECK(!(flags & ADDR_ALLOW_UTF8));
		if (e == ADDR_ERR_NULL_NOT_ALLOWED)
			CHECK(!(flags & ADDR_ALLOW_NULL));
	}

	e = addr_parse_mailbox(s, len, flags, &a);
	if (e == ADDR_OK) {
		check_fields(&a, flags);
		CHECK(!a.is_null && a.domain[0] != '\0');
		check_round_trip(&a, flags, len);
	} else {
		CHECK(e != ADDR_ERR_NULL_NOT_ALLOWED);
	}
	free(s);
	return 0;
}
