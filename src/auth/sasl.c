#include "auth/sasl.h"

#include <string.h>

#include "msg/base64.h"

/* The longest PLAIN message we accept: three fields and two separators. */
#define SASL_PLAIN_MAX (3 * SASL_FIELD_MAX + 2)
/* Room for whatever base64 of at most BASE64_ENCODED_LEN(max) characters decodes
 * to, so that "too long" is told apart from "invalid base64". */
#define SASL_DECODE_ROOM(max) BASE64_DECODED_MAX(BASE64_ENCODED_LEN(max))

/* RFC 4954 4: "=" stands for an empty response, so that it can be told apart from
 * no initial response at all. */
static int sasl_is_empty_response(const char *b64, size_t len)
{
	return len == 1 && b64[0] == '=';
}

int sasl_plain_decode(const char *b64, size_t len, char *authzid, char *authcid, char *passwd,
		      const char **error_r)
{
	unsigned char msg[SASL_DECODE_ROOM(SASL_PLAIN_MAX)];
	size_t n = 0;
	int ret = -1;

	authzid[0] = authcid[0] = passwd[0] = '\0';
	if (sasl_is_empty_response(b64, len)) {
		*error_r = "empty PLAIN message";
		return -1;
	}
	/* Too long is refused before decoding, so the bound is on work too. */
	if (len > BASE64_ENCODED_LEN(SASL_PLAIN_MAX)) {
		*error_r = "PLAIN message too long";
		return -1;
	}
	if (base64_decode(b64, len, msg, sizeof(msg), &n) < 0) {
		*error_r = "invalid base64";
		goto out;
	}
	if (n > SASL_PLAIN_MAX) {
		*error_r = "PLAIN message too long";
		goto out;
	}

	/* message = [authzid] UTF8NUL authcid UTF8NUL passwd (RFC 4616 2) */
	const unsigned char *nul1 = memchr(msg, '\0', n);
	if (nul1 == NULL) {
		*error_r = "malformed PLAIN message";
		goto out;
	}
	size_t zlen = (size_t)(nul1 - msg);
	const unsigned char *cid = nul1 + 1;
	const unsigned char *nul2 = memchr(cid, '\0', n - zlen - 1);
	if (nul2 == NULL) {
		*error_r = "malformed PLAIN message";
		goto out;
	}
	size_t clen = (size_t)(nul2 - cid);
	const unsigned char *pw = nul2 + 1;
	size_t plen = n - zlen - 1 - clen - 1;
	if (memchr(pw, '\0', plen) != NULL) {
		*error_r = "malformed PLAIN message";
		goto out;
	}
	if (clen == 0 || plen == 0) {
		*error_r = "empty PLAIN user name or password";
		goto out;
	}
	if (zlen > SASL_FIELD_MAX || clen > SASL_FIELD_MAX || plen > SASL_FIELD_MAX) {
		*error_r = "PLAIN field too long";
		goto out;
	}
	memcpy(authzid, msg, zlen);
	authzid[zlen] = '\0';
	memcpy(authcid, cid, clen);
	authcid[clen] = '\0';
	memcpy(passwd, pw, plen);
	passwd[plen] = '\0';
	ret = 0;
out:
	explicit_bzero(msg, sizeof(msg));
	return ret;
}

int sasl_login_decode(const char *b64, size_t len, char out[256], const char **error_r)
{
	unsigned char buf[SASL_DECODE_ROOM(SASL_FIELD_MAX)];
	size_t n = 0;
	int ret = -1;

	out[0] = '\0';
	if (sasl_is_empty_response(b64, len))
		return 0;
	if (len > BASE64_ENCODED_LEN(SASL_FIELD_MAX)) {
		*error_r = "LOGIN response too long";
		return -1;
	}
	if (base64_decode(b64, len, buf, sizeof(buf), &n) < 0) {
		*error_r = "invalid base64";
		goto out;
	}
	if (n > SASL_FIELD_MAX) {
		*error_r = "LOGIN response too long";
		goto out;
	}
	if (memchr(buf, '\0', n) != NULL) {
		*error_r = "NUL in LOGIN response";
		goto out;
	}
	memcpy(out, buf, n);
	out[n] = '\0';
	ret = 0;
out:
	explicit_bzero(buf, sizeof(buf));
	return ret;
}
