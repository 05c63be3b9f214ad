/* Asynchronous DNS lookups for outbound delivery (MX, then A/AAAA), over libunbound,
 * driven by the caller's libevent loop.  One resolver per event loop; everything
 * here runs on that loop's thread (libunbound's own worker thread is hidden inside). */
#ifndef TERN_DNS_DNS_H
#define TERN_DNS_DNS_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct dns_resolver;
struct dns_query; /* a pending lookup: the handle for dns_cancel() */

/* server: "ADDR@PORT" ("127.0.0.1@5353", "::1@5353"; "ADDR" alone means port 53) sends
 * every query to that server only (forwarding: tern does no recursion of its own).
 * NULL or "": the servers of /etc/resolv.conf, plus the names of /etc/hosts.
 * Files are read now, not at each lookup.  Returns NULL with *error_r (a static
 * string) when the address does not parse or libunbound cannot be set up. */
struct dns_resolver *dns_resolver_new(struct event_base *base, const char *server,
				      const char **error_r);
/* Cancels every pending query without calling its callback and clears *r.  May be
 * called from inside a lookup callback.  NULL-safe. */
void dns_resolver_free(struct dns_resolver **r);
/* Upper bound for one lookup, in milliseconds (default DNS_TIMEOUT_MS_DEFAULT; 0 or
 * less: none); a lookup still unanswered then completes with DNS_TEMPFAIL.  Applies to
 * lookups started afterwards.  libunbound gives up on dead servers by itself after about
 * 17 s; this bound is a guard above that, and lets tests be quick. */
#define DNS_TIMEOUT_MS_DEFAULT 30000
void dns_resolver_set_timeout(struct dns_resolver *r, int msecs);

enum dns_status {
	DNS_OK,
	DNS_NXDOMAIN, /* the name does not exist: permanent */
	DNS_NODATA,   /* the name exists, no record of that type */
	DNS_TEMPFAIL, /* SERVFAIL, REFUSED, timeout, DNSSEC failure, no usable record: retry */
	DNS_NULL_MX,  /* RFC 7505: a single MX with preference 0 and exchange "." */
	DNS_BAD_NAME, /* not a valid domain name (checked before asking) */
};
/* "ok", "nxdomain", "nodata", "tempfail", "null-mx", "bad-name": one word for logs. */
const char *dns_status_str(enum dns_status s);

#define DNS_MAX_MX    32
#define DNS_MAX_ADDRS 32

struct dns_mx {
	char host[256]; /* ASCII lower-cased, no trailing dot */
	int pref;
};

struct dns_mx_result {
	enum dns_status status;
	/* DNS_OK only: sorted by preference, equal preferences in random order.  With
	 * more than DNS_MAX_MX records the most preferred are kept.  Records that do not
	 * parse, and an exchange "." next to other records, are left out; when nothing
	 * usable remains the status is DNS_TEMPFAIL. */
	struct dns_mx mx[DNS_MAX_MX];
	int n;
	int secure;    /* DNSSEC-validated (none is yet: no trust anchor is configured) */
	char why[256]; /* for logs and bounces: "example.test: no such domain"; "" when OK */
};

struct dns_addr_result {
	enum dns_status status; /* OK when at least one address; NODATA when no A nor AAAA */
	/* IPv6 addresses first, then IPv4, each family in the order of the answer; port
	 * 0.  When both families have many, each gets at least DNS_MAX_ADDRS / 2 places. */
	struct sockaddr_storage addr[DNS_MAX_ADDRS];
	int n;
	int secure;    /* both answers DNSSEC-validated */
	char why[256]; /* failure text; when OK, names a family that failed ("" if none) */
};

/* The result is borrowed: valid only during the callback.  When the callback runs the
 * query handle is already gone (do not dns_cancel it). */
typedef void dns_mx_cb(void *arg, const struct dns_mx_result *res);
typedef void dns_addr_cb(void *arg, const struct dns_addr_result *res);

/* Looks up the MX records of domain (RFC 5321 5.1).  The callback runs later, on the
 * loop, exactly once, never from inside this call, unless the query is cancelled or
 * the resolver freed first.  A bad name is reported through the callback.  Returns
 * NULL only when out of memory (and then no callback runs). */
struct dns_query *dns_lookup_mx(struct dns_resolver *r, const char *domain, dns_mx_cb *cb,
				void *arg);
/* Looks up A and AAAA of host (both at once; the result waits for both).  When one
 * fails temporarily and the other gives addresses, the result is DNS_OK with those. */
struct dns_query *dns_lookup_addrs(struct dns_resolver *r, const char *host, dns_addr_cb *cb,
				   void *arg);
/* Forgets a pending query: its callback will not run.  Clears *q; NULL-safe. */
void dns_cancel(struct dns_query **q);

/* 1 when name is a domain name tern asks about: ASCII letters, digits, '-' and '_'
 * (seen in the wild), labels of 1..63 octets, at most 253 octets without the optional
 * trailing dot.  Non-ASCII (U-labels) is refused: the caller converts IDNs to A-labels. */
int dns_name_valid(const char *name);

/* Parses the RDATA of one MX record (RFC 1035 3.3.9): a 16-bit preference, then the
 * exchange as an uncompressed wire-format name (libunbound hands out RDATA with names
 * already decompressed; a compression pointer here is malformed).  Writes the exchange
 * in text, lower-cased, without trailing dot ("." for the root) to host (cap bytes).
 * 0, or -1 when the RDATA is truncated, has bytes after the name, a label over 63
 * octets, a pointer or extended label type, a character outside dns_name_valid()'s,
 * or a name that does not fit.  Exposed for the unit test. */
int dns_mx_rdata_parse(const unsigned char *rdata, size_t len, int *pref_r, char *host,
		       size_t cap);

#endif
