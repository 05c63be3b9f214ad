/* Delivery status notifications: bounces, delay warnings and success reports sent to
 * the envelope sender of a queued message, as an RFC 6522 multipart/report holding an
 * RFC 3464 message/delivery-status part.
 *
 * The notification is written as three MIME parts:
 *   1. text/plain: what happened to each recipient and what to do, in plain words;
 *   2. message/delivery-status: the machine-readable report (RFC 3464 2.2, 2.3);
 *   3. the original: the whole message as message/rfc822 only for a failure report of
 *      a message sent with RET=FULL; otherwise (RET=HDRS, RET not given, delay and
 *      success reports, or a whole message over max_size) only its header block as
 *      text/rfc822-headers.  No third part when orig_fd < 0.
 *
 * Everything is written with CRLF line ends and no line over 998 octets, including the
 * returned original (a bare CR or LF in it becomes CRLF, a longer line is broken).
 * Everything that tern writes itself is ASCII: a recipient address that is not ASCII
 * appears in part 2 as "utf-8;" with \x{...} escapes (RFC 6533 3), and part 1 is then
 * UTF-8 in quoted-printable.  Two things can carry 8-bit bytes, and only when the
 * original did: the returned original (then declared Content-Transfer-Encoding: 8bit,
 * and message/global or message/global-headers when p->smtputf8 too: RFC 6532 3.7,
 * RFC 6533 6.3), and the To: field when the sender's own address is not ASCII
 * (RFC 6532 3.2).  So the caller queues the notification with the original's 8BITMIME
 * flag, and with SMTPUTF8 when the original had it or p->to is not ASCII. */
#ifndef TERN_QUEUE_DSN_H
#define TERN_QUEUE_DSN_H

#include <stddef.h>
#include <sys/types.h>

/* The longest header block of the original that is returned; a longer one is cut at
 * the last line end within it (and the text part says so). */
#define DSN_HEADERS_MAX (256 * 1024)

enum dsn_kind {
	DSN_FAILURE, /* bounce: delivery to these recipients has been given up */
	DSN_DELAY,   /* warning: not delivered yet, still trying */
	DSN_SUCCESS, /* NOTIFY=SUCCESS: delivered locally, or relayed to a server without DSN */
};

/* RFC 3464 2.3.3 */
enum dsn_action {
	DSN_ACTION_FAILED,
	DSN_ACTION_DELAYED,
	DSN_ACTION_DELIVERED,
	DSN_ACTION_RELAYED,
	DSN_ACTION_EXPANDED,
};

/* All strings are borrowed for the call of dsn_write(). */
struct dsn_rcpt {
	const char *addr;           /* the recipient as queued; required */
	const char *orcpt;          /* "rfc822;addr" (ORCPT, RFC 3461 4.2) or NULL */
	enum dsn_action action;
	const char *status;         /* enhanced status code "5.1.1" (RFC 3463); NULL or
				     * malformed: 5.0.0, 4.0.0 or 2.0.0 by action */
	const char *remote_mta;     /* "dns; mx.example.com" or NULL; "dns; " is added when
				     * there is no ';' */
	const char *diagnostic;     /* "smtp; 550 5.1.1 <x@y>: User unknown" or NULL; "smtp; "
				     * is added when there is no ';' */
	long long last_attempt;     /* Unix time, 0: unknown (the field is left out) */
	long long will_retry_until; /* Unix time, written for DSN_ACTION_DELAYED when not 0 */
};

struct dsn_params {
	enum dsn_kind kind;
	const char *reporting_mta; /* our host name (letters, digits, '.', '-', '_'); required */
	const char *postmaster;    /* the From: address, e.g. "MAILER-DAEMON@host"; required */
	const char *to;            /* the envelope sender to notify; NULL or "" is refused */
	const char *envid;         /* ENVID (xtext decoded) or NULL */
	long long arrival;         /* queue arrival time, Unix seconds; 0: unknown */
	const char *queue_id;      /* NULL: none ([0-9A-Za-z] only) */
	int ret_full;              /* RET=FULL was given: return the whole message in a failure
				    * report.  0 (RET=HDRS or no RET): headers only, the safer
				    * choice that RFC 3461 4.3 leaves to us. */
	int smtputf8;              /* the original was sent with SMTPUTF8 */
	const struct dsn_rcpt *rcpts;
	int n_rcpts;               /* at least 1 */
	/* The original message: orig_len bytes at orig_offset in orig_fd (read with pread,
	 * in chunks; the offset of orig_fd is not used nor changed).  orig_fd < 0: none. */
	int orig_fd;
	off_t orig_offset;
	off_t orig_len;
	/* When the notification with the whole original would be larger than this, only
	 * the headers are returned and the text says why.  0: no cap. */
	size_t max_size;
};

/* Writes the complete notification (RFC 5322 header fields From, To, Subject, Date,
 * Message-ID, MIME-Version, Auto-Submitted: auto-replied, Content-Type, then the parts
 * above) through write_cb, in pieces of at most 64 KiB; write_cb returns 0, or -1 to
 * stop.  Memory use is bounded by the recipient list, not by the original.  Blocking
 * (pread): for a pool thread, not the event loop.  0, or -1 with *error_r when a
 * parameter is missing or malformed (among them a null sender: <> is never notified,
 * RFC 5321 4.5.5), the original cannot be read, randomness is unavailable or
 * write_cb failed; some output may have been written then. */
int dsn_write(const struct dsn_params *p, int (*write_cb)(void *ctx, const void *data, size_t len),
	      void *ctx, const char **error_r);

/* 1 when a recipient whose RCPT had notify (QUEUE_NOTIFY_* bits, 0: no NOTIFY) wants a
 * notification of this kind (RFC 3461 4.1): without NOTIFY, failures and delays but no
 * success; NOTIFY=NEVER: nothing; else what was listed.  0 otherwise. */
int dsn_wanted(enum dsn_kind kind, unsigned notify);

/* Error strings (*error_r) point into a per-thread buffer, valid until the next call
 * of dsn_write() in the same thread. */

#endif
