/* Checks of domain names and addresses on their way into the directory.  Deliberately
 * simpler than the RFC 5321 parser in msg/: only dot-atom local parts (plus UTF-8, RFC
 * 6531) and plain host names are stored, so nothing stored ever needs quoting. */
#include "directory/directory_private.h"

#include "base/utf8.h"

#include <string.h>

void directory_ascii_lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

static int directory_is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int directory_local_ok(const char *s, size_t len)
{
	if (len == 0 || len > DIRECTORY_LOCAL_MAX || s[0] == '.' || s[len - 1] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80) {
			size_t n = utf8_seq_len((const unsigned char *)s + i, len - i, NULL);
			if (n == 0)
				return 0;
			i += n - 1;
			continue;
		}
		/* Controls, space and the specials of RFC 5322 3.2.3 would need quoting. */
		if (c <= 0x20 || c == 0x7f || strchr("()<>[]:;@\\,\"", c) != NULL)
			return 0;
		if (c == '.' && s[i + 1] == '.')
			return 0;
	}
	return 1;
}

static int directory_domain_ok(const char *s, size_t len)
{
	if (len == 0 || len > DIRECTORY_DOMAIN_MAX)
		return 0;
	size_t label = 0;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';
		if (c == '.') {
			/* Empty labels and labels with a hyphen at either end are not host
			 * names (RFC 1123 2.1). */
			if (label == 0 || label > 63 || s[i - label] == '-' || s[i - 1] == '-')
				return 0;
			label = 0;
		} else if (directory_is_alnum(c) || c == '-') {
			label++;
		} else {
			return 0;
		}
	}
	return 1;
}

int directory_canon_domain(const char *domain, char *out, size_t cap)
{
	size_t len = strlen(domain);
	if (!directory_domain_ok(domain, len) || len >= cap)
		return -1;
	memcpy(out, domain, len + 1);
	directory_ascii_lower(out);
	return 0;
}

int directory_canon_address(const char *address, int catchall_ok, char *out, size_t cap,
			    const char **domain_r, const char **why)
{
	const char *at = strchr(address, '@');
	if (at == NULL) {
		*why = "not an address (expected user@domain)";
		return -1;
	}
	if (strchr(at + 1, '@') != NULL) {
		*why = "more than one '@'";
		return -1;
	}
	size_t llen = (size_t)(at - address);
	size_t len = strlen(address);
	if (llen == 0 && !catchall_ok) {
		*why = "nothing before the '@'";
		return -1;
	}
	if (llen > 0 && !directory_local_ok(address, llen)) {
		*why = llen > DIRECTORY_LOCAL_MAX
			       ? "local part longer than 64 bytes"
			       : "local part has a space, a control character, one of ()<>[]:;\\,\", "
				 "a misplaced dot or bytes that are not UTF-8";
		return -1;
	}
	if (!directory_domain_ok(at + 1, len - llen - 1)) {
		*why = "the domain is not a host name (letters, digits, hyphens and dots)";
		return -1;
	}
	if (len >= cap || len >= DIRECTORY_ADDRESS_MAX) {
		*why = "address too long";
		return -1;
	}
	memcpy(out, address, len + 1);
	directory_ascii_lower(out);
	*domain_r = out + llen + 1;
	return 0;
}

int directory_address_valid(const char *address, int catchall_ok, const char **why_r)
{
	char canon[DIRECTORY_ADDRESS_MAX];
	const char *dom;
	return directory_canon_address(address, catchall_ok, canon, sizeof(canon), &dom,
				       why_r) == 0;
}
