#include "auth/password.h"

#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A yescrypt hash at the cost password_hash() uses ("j9T"), made once at development
 * time from a password nobody types.  Only its cost matters. */
static const char password_dummy_hash[] =
	"$y$j9T$sw6ouPiWwRjf2NvXUdAsB1$xQrZJZ1309TyVv7Ge6VR1cZdWf3MlYR673LdiRdriBD";

/* Ceilings on the cost of imported hashes: one login with a higher cost would hold a
 * worker thread for seconds, and a stored hash is verified on every login.  bcrypt cost
 * 12 (the usual) takes about 0.25 s; passlib's SHA-512-crypt default is 656000 rounds. */
#define PASSWORD_BCRYPT_MAX_COST 15
#define PASSWORD_SHA_MAX_ROUNDS  1000000UL

/* struct crypt_data is 32 KiB: too big for a worker thread's stack. */
static struct crypt_data *password_data_new(void)
{
	return calloc(1, sizeof(struct crypt_data));
}

static void password_data_free(struct crypt_data *cd)
{
	if (cd == NULL)
		return;
	/* It held the password and intermediate state derived from it. */
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
}

/* crypt_rn() signals failure by NULL, but some builds of the library also hand back the
 * "*0"/"*1" failure tokens; treat both as failure. */
static const char *password_crypt(const char *password, const char *setting,
				  struct crypt_data *cd)
{
	const char *out = crypt_rn(password, setting, cd, (int)sizeof(*cd));
	if (out == NULL || out[0] == '*')
		return NULL;
	return out;
}

static int password_equal_ct(const char *a, const char *b, size_t n)
{
	volatile unsigned char acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= (unsigned char)a[i] ^ (unsigned char)b[i];
	return acc == 0;
}

/* The cheap half of password_hash_importable(): a known scheme at an affordable cost.
 * Whether the rest is well formed only crypt itself can tell. */
static int password_scheme_ok(const char *hash)
{
	if (strncmp(hash, "$y$", 3) == 0)
		/* yescrypt encodes its cost compactly; hashes from crypt_gensalt() at any
		 * count stay well under a second, and no other software writes $y$. */
		return 1;
	if (strncmp(hash, "$2b$", 4) == 0 || strncmp(hash, "$2y$", 4) == 0 ||
	    strncmp(hash, "$2a$", 4) == 0) {
		const char *c = hash + 4;
		if (c[0] < '0' || c[0] > '9' || c[1] < '0' || c[1] > '9' || c[2] != '$')
			return 0;
		int cost = (c[0] - '0') * 10 + (c[1] - '0');
		return cost >= 4 && cost <= PASSWORD_BCRYPT_MAX_COST;
	}
	if (strncmp(hash, "$6$", 3) == 0 || strncmp(hash, "$5$", 3) == 0) {
		const char *r = hash + 3;
		if (strncmp(r, "rounds=", 7) != 0)
			return 1; /* the default, 5000 rounds */
		char *end;
		errno = 0;
		unsigned long rounds = strtoul(r + 7, &end, 10);
		return errno == 0 && end != r + 7 && *end == '$' &&
		       rounds <= PASSWORD_SHA_MAX_ROUNDS;
	}
	return 0;
}

int password_hash(const char *password, char *out, size_t cap, const char **error_r)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	/* No random bytes given: libxcrypt reads the salt from the kernel's generator. */
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, (int)sizeof(setting)) == NULL) {
		*error_r = "cannot make a yescrypt salt (no system randomness?)";
		return -1;
	}
	struct crypt_data *cd = password_data_new();
	if (cd == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	int ret = -1;
	const char *h = password_crypt(password, setting, cd);
	if (h == NULL) {
		*error_r = "yescrypt hashing failed";
	} else if (strlen(h) >= cap) {
		*error_r = "password hash does not fit its buffer";
	} else {
		memcpy(out, h, strlen(h) + 1);
		ret = 0;
	}
	password_data_free(cd);
	return ret;
}

int password_verify(const char *password, const char *hash)
{
	if (!password_scheme_ok(hash))
		return 0;
	struct crypt_data *cd = password_data_new();
	if (cd == NULL)
		return 0;
	int match = 0;
	const char *h = password_crypt(password, hash, cd);
	/* The lengths are those of the scheme, not a secret; the bytes are compared without
	 * stopping at the first difference. */
	size_t n = strlen(hash);
	if (h != NULL && strlen(h) == n)
		match = password_equal_ct(h, hash, n);
	password_data_free(cd);
	return match;
}

int password_hash_importable(const char *hash)
{
	if (strlen(hash) >= PASSWORD_HASH_MAX || !password_scheme_ok(hash))
		return 0;
	struct crypt_data *cd = password_data_new();
	if (cd == NULL)
		return 0;
	/* crypt takes a bare setting ("$6$salt", a bcrypt hash missing characters) as a
	 * salt and returns a complete hash: a usable stored hash is one whose output is as
	 * long as itself. */
	const char *h = password_crypt("tern-import-check", hash, cd);
	int ok = h != NULL && strlen(h) == strlen(hash);
	password_data_free(cd);
	return ok;
}

int password_dummy_verify(const char *password)
{
	(void)password_verify(password, password_dummy_hash);
	return 0;
}
