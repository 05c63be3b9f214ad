/* OpenSSL contexts: the server context every TLS listener shares, the outbound client
 * context, and the self-signed certificate generated on first start. */
#ifndef TERN_TLS_TLS_H
#define TERN_TLS_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* A server context: TLS 1.2 and later, the server's cipher order, no compression, no
 * renegotiation, session tickets on.  Loads the PEM chain in cert_file (leaf first) and
 * the PEM key in key_file and checks that they belong together.  Returns a new context
 * owned by the caller (SSL_CTX_free), or NULL with *error_r naming the file and what is
 * wrong.  Create it before forking workers so that they share the ticket keys. */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char **error_r);

/* The outbound SMTP client context: TLS 1.2 and later, the system's trust store loaded.
 * Peer verification does not abort the handshake (SSL_VERIFY_NONE): the caller reads
 * SSL_get_verify_result() and applies its TLS policy (opportunistic, MTA-STS, DANE),
 * and sets SNI and the expected name (SSL_set1_host) per connection.  NULL with
 * *error_r on failure. */
SSL_CTX *tls_client_ctx_new(const char **error_r);

/* Makes sure a certificate and key exist.  When neither file exists: generates an
 * ECDSA P-256 key and a self-signed X.509v3 certificate for hostname (also valid for
 * localhost, 127.0.0.1 and ::1; ten years), writes the key 0600 and the certificate
 * 0644 durably, creating missing parent directories 0700.  When both exist: does
 * nothing (their content is checked by tls_server_ctx_new).  When only one exists: -1,
 * since silently replacing half of a configured pair would hide a mistake.
 * hostname must be a DNS name ([A-Za-z0-9.-_]).  0 or -1 with *error_r. */
int tls_selfsigned_ensure(const char *cert_file, const char *key_file, const char *hostname,
			  const char **error_r);

/* Writes "version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256" for log lines and
 * Received headers; "version=none" when ssl has no session (yet).  Always
 * NUL-terminated when cap > 0. */
void tls_describe(SSL *ssl, char *out, size_t cap);

/* Error strings (*error_r) of this module point into a per-thread buffer valid until
 * the next call of this module in the same thread: a pool thread that hands one to
 * another thread copies it first. */

#endif
