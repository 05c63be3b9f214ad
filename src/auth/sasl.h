/* Decoding of the client messages of the SASL PLAIN (RFC 4616) and LOGIN
 * mechanisms as carried by AUTH (RFC 4954).  Pure: no I/O, no allocation; the
 * credential check is elsewhere.  Buffers that held a password are wiped. */
#ifndef TERN_AUTH_SASL_H
#define TERN_AUTH_SASL_H

#include <stddef.h>

#define SASL_FIELD_MAX 255 /* RFC 4616 2: a server must accept up to 255 octets */

/* Decodes the base64 PLAIN message b64[0..len) and splits
 * "authzid NUL authcid NUL passwd": each at most 255 octets, authcid and passwd
 * non-empty, exactly two NULs.  A lone "=" (the empty initial response of RFC 4954
 * 4) is an empty message and therefore malformed.  The outputs, 256 bytes each, are
 * NUL-terminated on success and "" on failure.  Returns 0, or -1 with *error_r set
 * to static text fit for a log line (never containing the input). */
int sasl_plain_decode(const char *b64, size_t len, char *authzid, char *authcid, char *passwd,
		      const char **error_r);

/* Decodes one base64 LOGIN response (the user name or the password) of at most 255
 * octets into out, NUL-terminated; "=" gives "".  A NUL inside is refused.  Returns 0,
 * or -1 with *error_r and out set to "". */
int sasl_login_decode(const char *b64, size_t len, char out[256], const char **error_r);

#endif
