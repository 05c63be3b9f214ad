/* SMTP paths and mailboxes (RFC 5321 section 4.1.2, with the RFC 6531 SMTPUTF8
 * extensions).  Pure and bounded: no allocation, no I/O, input need not be
 * NUL-terminated; a path parse examines at most ADDR_PATH_MAX bytes, a mailbox parse
 * refuses more than ADDR_LOCAL_MAX + 1 + ADDR_DOMAIN_MAX. */
#ifndef TERN_MSG_ADDR_H
#define TERN_MSG_ADDR_H

#include <stddef.h>

#define ADDR_LOCAL_MAX  64  /* RFC 5321 4.5.3.1.1 */
#define ADDR_DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2 */
#define ADDR_PATH_MAX   256 /* RFC 5321 4.5.3.1.3, from "<" to ">" inclusive */

/* flags */
#define ADDR_ALLOW_NULL 0x1 /* a Reverse-path: "<>" is accepted */
#define ADDR_ALLOW_UTF8 0x2 /* SMTPUTF8 was given: UTF-8 in atoms, qtext, sub-domains */

struct mail_addr {
	/* Decoded local part: quotes removed, quoted-pairs resolved, case kept as given.
	 * NUL-terminated; never contains NUL or control characters.  Non-empty unless
	 * is_null. */
	char local[ADDR_LOCAL_MAX * 4 + 1];
	/* ASCII lower-cased; U-labels kept as UTF-8 (only their ASCII lower-cased); an
	 * address literal kept with its brackets, lower-cased ("[127.0.0.1]",
	 * "[ipv6:::1]").  "" for the null path and for "<postmaster>". */
	char domain[ADDR_DOMAIN_MAX + 1];
	int is_null;   /* "<>" */
	int quoted;    /* the local part was a Quoted-string */
	int had_route; /* an obsolete source route "@a,@b:" was present and dropped */
	int utf8;      /* contains non-ASCII (needs SMTPUTF8) */
};

enum addr_error {
	ADDR_OK = 0,
	ADDR_ERR_SYNTAX,
	ADDR_ERR_TOO_LONG,           /* local part, domain, label or whole path */
	ADDR_ERR_UTF8_NOT_ALLOWED,   /* non-ASCII without ADDR_ALLOW_UTF8 */
	ADDR_ERR_NULL_NOT_ALLOWED,   /* "<>" without ADDR_ALLOW_NULL */
};

/* Parses a "<path>" at the start of s[0..len): a Reverse-path when flags has
 * ADDR_ALLOW_NULL, else a Forward-path.  Angle brackets are required and nothing
 * else is tolerated (no spaces, no comments).  A source route is validated and
 * dropped (had_route).  A Forward-path "<postmaster>" without domain (any case) is
 * accepted as local "postmaster", domain "".  On ADDR_OK, *consumed_r is the number
 * of bytes up to and including the closing ">"; bytes after it are not examined.
 * On error *consumed_r is 0 and *out is cleared. */
enum addr_error addr_parse_path(const char *s, size_t len, unsigned flags, struct mail_addr *out,
				size_t *consumed_r);

/* Parses a bare Mailbox "local@domain" occupying exactly s[0..len) (no brackets, no
 * route, no postmaster special case); ADDR_ALLOW_NULL is ignored.  For the CLI and
 * the directory. */
enum addr_error addr_parse_mailbox(const char *s, size_t len, unsigned flags,
				   struct mail_addr *out);

/* Writes "local@domain" and a NUL to out, quoting the local part (RFC 5321
 * Quoted-string, escaping only '"' and '\') when it is not a valid Dot-string.  The
 * null path gives "" and "<postmaster>" gives "postmaster".  For an address from the
 * parsers, the result parses back to the same local part and domain and is no longer
 * than the original text.  Returns the length written (without the NUL), or -1 when
 * cap is too small. */
int addr_format(const struct mail_addr *a, char *out, size_t cap);

/* Static human text for a reply or log line, e.g. "address too long". */
const char *addr_error_str(enum addr_error e);

#endif
