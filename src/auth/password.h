/* Password hashes in crypt(3) form, through libxcrypt.  New hashes are yescrypt; hashes
 * imported from other servers may also be bcrypt or SHA-crypt.  Every call here is slow
 * on purpose (tens of milliseconds): run it on a worker thread, never on an event loop. */
#ifndef TERN_AUTH_PASSWORD_H
#define TERN_AUTH_PASSWORD_H

#include <stddef.h>

/* Big enough for any hash password_hash() makes or password_hash_importable() accepts. */
#define PASSWORD_HASH_MAX 256

/* Hashes password with yescrypt and a fresh random salt into out (cap bytes, at least
 * PASSWORD_HASH_MAX is always enough).  0, or -1 with *error_r (a static string). */
int password_hash(const char *password, char *out, size_t cap, const char **error_r);

/* 1 when password matches hash, 0 when it does not or when hash is not a usable hash of
 * a supported scheme (see password_hash_importable).  The comparison takes the same
 * time wherever the first difference is. */
int password_verify(const char *password, const char *hash);

/* 1 when hash is yescrypt ($y$), bcrypt ($2b$, $2y$, $2a$), SHA-512-crypt ($6$) or
 * SHA-256-crypt ($5$), complete, and with a cost a login can afford; else 0.  Runs the
 * hash once, so it is as slow as a verification. */
int password_hash_importable(const char *hash);

/* Verifies password against a fixed yescrypt hash of the default cost and throws the
 * result away, so that a login for an unknown user takes as long as one for a known
 * user.  Always returns 0. */
int password_dummy_verify(const char *password);

#endif
