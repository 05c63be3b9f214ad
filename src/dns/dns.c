/* Asynchronous lookups over libunbound, wired into a libevent loop.
 *
 * How libunbound runs asynchronously: ub_resolve_async() hands each query to a
 * background worker over a pipe, and the answers come back on another pipe whose read
 * end is ub_fd(); ub_process() reads every answer waiting there and runs the callbacks
 * in the calling thread.  The background worker is a forked process with
 * ub_ctx_async(ctx, 0) and a thread with ub_ctx_async(ctx, 1); there is no mode
 * without one (the in-loop alternative, ub_ctx_create_event(), gives raw packets
 * instead of struct ub_result).  Both modes work with ub_fd().  We take the thread:
 * a forked child would be a copy of the whole worker (its listening sockets, TLS keys
 * and heap, forked from a process that already runs pool threads), unknown to the
 * master, and it would outlive nothing useful.  In thread mode ub_cancel() only marks
 * the query: the background thread still resolves it and ub_process() drops the
 * answer without calling back.
 *
 * Callbacks run inside ub_process(), so freeing the resolver from a callback is
 * deferred until ub_process() has returned (it keeps using the context). */
#include "dns/dns.h"

#include "base/log.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

#define DNS_TYPE_A    1 /* RFC 1035 3.2.2 */
#define DNS_TYPE_MX   15
#define DNS_TYPE_AAAA 28 /* RFC 3596 2.1 */
#define DNS_CLASS_IN  1

#define DNS_RCODE_NXDOMAIN 3 /* RFC 1035 4.1.1 */

#define DNS_NAME_TEXT_MAX 253 /* 255 octets in wire format (RFC 1035 2.3.4) */
#define DNS_LABEL_MAX     63

enum dns_kind { DNS_KIND_MX, DNS_KIND_ADDRS };

/* One question sent to libunbound. */
struct dns_sub {
	struct dns_query *q;
	int rrtype;
	int async_id;
	int pending; /* asked, not answered, not cancelled */
	enum dns_status status;
	int secure;
	char why[256];
};

struct dns_query {
	struct dns_resolver *r;
	struct dns_query *prev, *next;
	enum dns_kind kind;
	char name[DNS_NAME_TEXT_MAX + 1]; /* without trailing dot */
	int bad_name;
	char bad_why[256];
	dns_mx_cb *mx_cb;
	dns_addr_cb *addr_cb;
	void *arg;
	/* The deadline; also made active by hand to deliver a result decided before any
	 * question was asked, so that the callback never runs inside dns_lookup_*(). */
	struct event *timer;
	struct dns_sub sub[2]; /* MX: sub[0].  Addresses: sub[0] AAAA, sub[1] A */
	int n_sub;
	struct in6_addr v6[DNS_MAX_ADDRS];
	struct in_addr v4[DNS_MAX_ADDRS];
	int n6, n4;
	union {
		struct dns_mx_result mx;
		struct dns_addr_result addr;
	} res;
};

struct dns_resolver {
	struct event_base *base;
	struct ub_ctx *ctx;
	struct event *ev; /* ub_fd() readable */
	char server[80];  /* for the why texts */
	int timeout_ms;
	struct dns_query *queries; /* pending */
	int in_process;            /* depth of ub_process() calls under way */
	int dead;                  /* freed by the user inside ub_process() */
	int broken;                /* the background worker is gone */
};

const char *dns_status_str(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NODATA:
		return "nodata";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_NULL_MX:
		return "null-mx";
	case DNS_BAD_NAME:
		return "bad-name";
	}
	return "unknown";
}

/* Letters, digits and hyphen are RFC 1123 2.1's host names; '_' is not, but it
 * appears in real MX targets and costs nothing to accept. */
static int dns_host_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

int dns_name_valid(const char *name)
{
	size_t len = strnlen(name, DNS_NAME_TEXT_MAX + 2);
	if (len > 0 && name[len - 1] == '.')
		len--; /* the root label, written or not, is the same name */
	if (len == 0 || len > DNS_NAME_TEXT_MAX)
		return 0;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!dns_host_char(c) || ++label > DNS_LABEL_MAX)
			return 0;
	}
	return label > 0;
}

int dns_mx_rdata_parse(const unsigned char *rdata, size_t len, int *pref_r, char *host,
		       size_t cap)
{
	size_t pos = 2, out = 0;
	if (cap == 0)
		return -1;
	host[0] = '\0';
	/* PREFERENCE (16 bits) and at least the root label. */
	if (rdata == NULL || len < 3)
		return -1;
	for (;;) {
		if (pos >= len)
			goto bad; /* the name runs past the RDATA */
		size_t l = rdata[pos++];
		if (l == 0)
			break;
		/* 0xc0 is a compression pointer (RFC 1035 4.1.4), which libunbound has
		 * already expanded; 0x40 and 0x80 are extended label types (RFC 6891 5). */
		if (l & 0xc0)
			goto bad;
		if (l > len - pos)
			goto bad;
		/* RFC 1035 3.1: 255 octets at most, counting the root label. */
		if ((pos - 2) + l + 1 > 255)
			goto bad;
		if (out > 0) {
			if (out + 1 >= cap)
				goto bad;
			host[out++] = '.';
		}
		if (out + l >= cap)
			goto bad;
		for (size_t i = 0; i < l; i++) {
			unsigned char c = rdata[pos + i];
			if (!dns_host_char(c))
				goto bad;
			host[out++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
		}
		pos += l;
	}
	if (pos != len)
		goto bad; /* RDLENGTH covers exactly the two fields */
	if (out == 0) {
		if (cap < 2)
			goto bad;
		host[out++] = '.';
	}
	host[out] = '\0';
	*pref_r = (rdata[0] << 8) | rdata[1];
	return 0;
bad:
	host[0] = '\0';
	return -1;
}

/* The name as it may appear in a log line or a bounce: printable ASCII, shortened. */
static void dns_name_printable(char *out, size_t cap, const char *name)
{
	size_t o = 0;
	for (size_t i = 0; name[i] != '\0' && o + 4 < cap; i++) {
		if (i == 64) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		unsigned char c = (unsigned char)name[i];
		out[o++] = c > 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
	}
	out[o] = '\0';
}

static const char *dns_rcode_name(int rcode)
{
	switch (rcode) { /* RFC 1035 4.1.1 */
	case 1:
		return "FORMERR";
	case 2:
		return "SERVFAIL";
	case 4:
		return "NOTIMP";
	case 5:
		return "REFUSED";
	}
	return NULL;
}

static const char *dns_type_name(int rrtype)
{
	return rrtype == DNS_TYPE_MX ? "MX" : rrtype == DNS_TYPE_AAAA ? "AAAA" : "A";
}

/* Sorts a result of libunbound into a status and a sentence. */
static void dns_sub_classify(struct dns_sub *s, int err, const struct ub_result *res)
{
	const struct dns_query *q = s->q;
	s->secure = 0;
	if (err != 0 || res == NULL) {
		s->status = DNS_TEMPFAIL;
		snprintf(s->why, sizeof(s->why), "%s: resolver error (%s)", q->name,
			 ub_strerror(err));
		return;
	}
	s->secure = res->secure;
	if (res->rcode == DNS_RCODE_NXDOMAIN) {
		/* RFC 5321 5.1: a domain that does not exist cannot take mail, now or later. */
		s->status = DNS_NXDOMAIN;
		snprintf(s->why, sizeof(s->why), "%s: no such domain", q->name);
		return;
	}
	if (res->bogus) {
		/* A forged or broken signed answer: the owner can fix it; retry meanwhile. */
		char text[128];
		dns_name_printable(text, sizeof(text), res->why_bogus ? res->why_bogus : "");
		s->status = DNS_TEMPFAIL;
		snprintf(s->why, sizeof(s->why), "%s: DNSSEC validation failed (%s)", q->name, text);
		return;
	}
	if (res->rcode != 0) {
		/* libunbound also reports an unreachable server as SERVFAIL. */
		const char *rn = dns_rcode_name(res->rcode);
		s->status = DNS_TEMPFAIL;
		if (rn != NULL)
			snprintf(s->why, sizeof(s->why), "%s: %s from %s", q->name, rn,
				 q->r->server);
		else
			snprintf(s->why, sizeof(s->why), "%s: rcode %d from %s", q->name,
				 res->rcode, q->r->server);
		return;
	}
	if (!res->havedata) {
		s->status = DNS_NODATA;
		snprintf(s->why, sizeof(s->why), "%s: no %s record", q->name,
			 dns_type_name(s->rrtype));
		return;
	}
	s->status = DNS_OK;
	s->why[0] = '\0';
}

/* RFC 5321 5.1: lowest preference first; "if there are multiple destinations with the
 * same preference and there is no clear reason to favor one ... the sender-SMTP MUST
 * randomize them to spread the load".  Shuffle everything, then sort stably. */
static void dns_mx_order(struct dns_mx_result *m)
{
	struct dns_mx tmp;
	for (int i = m->n - 1; i > 0; i--) {
		int j = (int)arc4random_uniform((uint32_t)i + 1);
		tmp = m->mx[i];
		m->mx[i] = m->mx[j];
		m->mx[j] = tmp;
	}
	for (int i = 1; i < m->n; i++) {
		tmp = m->mx[i];
		int j = i - 1;
		while (j >= 0 && m->mx[j].pref > tmp.pref) {
			m->mx[j + 1] = m->mx[j];
			j--;
		}
		m->mx[j + 1] = tmp;
	}
}

static void dns_mx_collect(struct dns_sub *s, const struct ub_result *res)
{
	struct dns_query *q = s->q;
	struct dns_mx_result *m = &q->res.mx;
	struct dns_mx one;
	int records = 0, malformed = 0, roots = 0, root_pref = -1;

	m->n = 0;
	for (int i = 0; res->data[i] != NULL; i++) {
		records++;
		if (res->len[i] < 0 ||
		    dns_mx_rdata_parse((const unsigned char *)res->data[i], (size_t)res->len[i],
				       &one.pref, one.host, sizeof(one.host)) < 0) {
			malformed++;
			continue;
		}
		if (strcmp(one.host, ".") == 0) {
			roots++;
			root_pref = one.pref;
			continue;
		}
		if (m->n < DNS_MAX_MX) {
			m->mx[m->n++] = one;
			continue;
		}
		/* Full: keep the most preferred (RFC 5321 5.1 tries those first anyway). */
		int worst = 0;
		for (int k = 1; k < m->n; k++)
			if (m->mx[k].pref > m->mx[worst].pref)
				worst = k;
		if (one.pref < m->mx[worst].pref)
			m->mx[worst] = one;
	}
	if (malformed > 0)
		log_warn("dns", "event=malformed_mx domain=%s records=%d malformed=%d", q->name,
			 records, malformed);

	/* RFC 7505 3: the null MX is the only MX of the domain, preference 0, exchange
	 * the root.  A "." among real exchanges breaks "MUST NOT advertise any other MX
	 * RR"; we then deliver to the real ones (a "." can never be connected to). */
	if (records == 1 && roots == 1 && root_pref == 0) {
		m->n = 0;
		s->status = DNS_NULL_MX;
		snprintf(s->why, sizeof(s->why),
			 "%s: null MX, the domain accepts no mail (RFC 7505)", q->name);
		return;
	}
	if (m->n == 0) {
		/* MX records exist, so falling back to the address of the domain (RFC 5321
		 * 5.1, only when there is no MX) would be wrong; the owner may fix them. */
		s->status = DNS_TEMPFAIL;
		snprintf(s->why, sizeof(s->why), "%s: no usable MX record (%d malformed, %d \".\")",
			 q->name, malformed, roots);
		return;
	}
	dns_mx_order(m);
}

static void dns_addrs_collect(struct dns_sub *s, const struct ub_result *res)
{
	struct dns_query *q = s->q;
	for (int i = 0; res->data[i] != NULL; i++) {
		if (s->rrtype == DNS_TYPE_AAAA && res->len[i] == 16 && q->n6 < DNS_MAX_ADDRS)
			memcpy(&q->v6[q->n6++], res->data[i], 16);
		else if (s->rrtype == DNS_TYPE_A && res->len[i] == 4 && q->n4 < DNS_MAX_ADDRS)
			memcpy(&q->v4[q->n4++], res->data[i], 4);
		/* else malformed or over the limit: skipped */
	}
}

static void dns_addrs_build(struct dns_query *q)
{
	struct dns_addr_result *a = &q->res.addr;
	struct dns_sub *s6 = &q->sub[0], *s4 = &q->sub[1];
	int take6 = q->n6, take4 = q->n4;

	memset(a, 0, sizeof(*a));
	if (take6 + take4 > DNS_MAX_ADDRS) {
		/* Neither family may crowd the other out: an IPv6-only route problem must
		 * still leave IPv4 addresses to try. */
		int half = DNS_MAX_ADDRS / 2;
		if (take4 < half)
			take6 = DNS_MAX_ADDRS - take4;
		else if (take6 < half)
			take4 = DNS_MAX_ADDRS - take6;
		else
			take6 = take4 = half;
	}
	/* IPv6 first: the order ("every address ... IPv6 and IPv4"); interleaving
	 * (RFC 8305) is the connecting side's business. */
	for (int i = 0; i < take6; i++) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->addr[a->n++];
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = q->v6[i];
	}
	for (int i = 0; i < take4; i++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->addr[a->n++];
		sin->sin_family = AF_INET;
		sin->sin_addr = q->v4[i];
	}
	a->secure = s6->secure && s4->secure;

	const struct dns_sub *temp = NULL;
	if (s6->status == DNS_TEMPFAIL)
		temp = s6;
	else if (s4->status == DNS_TEMPFAIL)
		temp = s4;
	if (a->n > 0) {
		a->status = DNS_OK;
		if (temp != NULL) /* kept for the log: one family is missing */
			snprintf(a->why, sizeof(a->why), "%s", temp->why);
	} else if (temp != NULL) {
		a->status = DNS_TEMPFAIL;
		snprintf(a->why, sizeof(a->why), "%s", temp->why);
	} else if (s6->status == DNS_NXDOMAIN && s4->status == DNS_NXDOMAIN) {
		a->status = DNS_NXDOMAIN;
		snprintf(a->why, sizeof(a->why), "%s: no such domain", q->name);
	} else {
		a->status = DNS_NODATA;
		snprintf(a->why, sizeof(a->why), "%s: no A or AAAA record", q->name);
	}
}

static void dns_query_unlink(struct dns_query *q)
{
	struct dns_resolver *r = q->r;
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		r->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

static void dns_query_destroy(struct dns_query *q)
{
	event_free(q->timer);
	free(q);
}

/* Forgets q without calling back. */
static void dns_query_drop(struct dns_query *q)
{
	for (int i = 0; i < q->n_sub; i++) {
		if (q->sub[i].pending) {
			(void)ub_cancel(q->r->ctx, q->sub[i].async_id);
			q->sub[i].pending = 0;
		}
	}
	dns_query_unlink(q);
	dns_query_destroy(q);
}

/* Delivers the result.  q is unlinked first: the callback may free the resolver,
 * which then no longer sees q; q itself is freed only after the callback. */
static void dns_query_finish(struct dns_query *q)
{
	dns_query_unlink(q);
	if (q->kind == DNS_KIND_MX) {
		struct dns_mx_result *m = &q->res.mx;
		if (q->bad_name) {
			m->status = DNS_BAD_NAME;
			snprintf(m->why, sizeof(m->why), "%s", q->bad_why);
		} else {
			m->status = q->sub[0].status;
			m->secure = q->sub[0].secure;
			snprintf(m->why, sizeof(m->why), "%s", q->sub[0].why);
		}
		if (m->status != DNS_OK)
			m->n = 0;
		q->mx_cb(q->arg, m);
	} else {
		struct dns_addr_result *a = &q->res.addr;
		if (q->bad_name) {
			memset(a, 0, sizeof(*a));
			a->status = DNS_BAD_NAME;
			snprintf(a->why, sizeof(a->why), "%s", q->bad_why);
		} else {
			dns_addrs_build(q);
		}
		q->addr_cb(q->arg, a);
	}
	dns_query_destroy(q);
}

static int dns_query_pending(const struct dns_query *q)
{
	for (int i = 0; i < q->n_sub; i++)
		if (q->sub[i].pending)
			return 1;
	return 0;
}

static void dns_ub_cb(void *arg, int err, struct ub_result *res)
{
	struct dns_sub *s = arg;
	struct dns_query *q = s->q;

	s->pending = 0;
	dns_sub_classify(s, err, res);
	if (s->status == DNS_OK) {
		if (q->kind == DNS_KIND_MX)
			dns_mx_collect(s, res);
		else
			dns_addrs_collect(s, res);
	}
	ub_resolve_free(res);
	if (!dns_query_pending(q))
		dns_query_finish(q); /* its deadline goes with it */
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	for (int i = 0; i < q->n_sub; i++) {
		struct dns_sub *s = &q->sub[i];
		if (!s->pending)
			continue;
		(void)ub_cancel(q->r->ctx, s->async_id);
		s->pending = 0;
		s->status = DNS_TEMPFAIL;
		snprintf(s->why, sizeof(s->why), "%s: no %s answer from %s within %d ms", q->name,
			 dns_type_name(s->rrtype), q->r->server, q->r->timeout_ms);
	}
	dns_query_finish(q);
}

static void dns_fd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;
	r->in_process++;
	int err = ub_process(r->ctx);
	r->in_process--;
	if (r->dead) {
		if (r->in_process == 0) {
			event_free(r->ev);
			ub_ctx_delete(r->ctx);
			free(r);
		}
		return;
	}
	if (err != 0) {
		/* The background thread is gone (UB_PIPE): the pipe would stay readable
		 * forever.  Pending lookups end by their deadline, new ones at once. */
		log_error("dns", "event=resolver_failed server=\"%s\" error=\"%s\"", r->server,
			  ub_strerror(err));
		event_del(r->ev);
		r->broken = 1;
	}
}

/* "ADDR" or "ADDR@PORT" with a numeric IPv4 or IPv6 address and a port 1..65535.
 * libunbound's own check takes "127.0.0.1@99999" (the port wraps), so look first. */
static int dns_server_valid(const char *server)
{
	char addr[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *at = strrchr(server, '@');
	size_t alen = at != NULL ? (size_t)(at - server) : strlen(server);
	if (alen == 0 || alen >= sizeof(addr))
		return 0;
	memcpy(addr, server, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1)
		return 0;
	if (at == NULL)
		return 1;
	long port = 0;
	const char *p = at + 1;
	if (*p == '\0')
		return 0;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		port = port * 10 + (*p - '0');
		if (port > 65535)
			return 0;
	}
	return port > 0;
}

struct dns_resolver *dns_resolver_new(struct event_base *base, const char *server,
				      const char **error_r)
{
	struct dns_resolver *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	r->base = base;
	r->timeout_ms = DNS_TIMEOUT_MS_DEFAULT;
	r->ctx = ub_ctx_create();
	if (r->ctx == NULL) {
		*error_r = "cannot create the libunbound context";
		goto fail;
	}
	if (ub_ctx_async(r->ctx, 1) != 0) {
		*error_r = "libunbound: cannot use a background thread";
		goto fail;
	}
	if (server != NULL && server[0] != '\0') {
		if (strlen(server) >= sizeof(r->server)) {
			*error_r = "resolver address too long";
			goto fail;
		}
		/* A root forward zone: libunbound sends every question there with RD set
		 * and never iterates from the root itself. */
		if (!dns_server_valid(server) || ub_ctx_set_fwd(r->ctx, server) != 0) {
			*error_r = "bad resolver address (want ADDR@PORT, e.g. 127.0.0.1@5353)";
			goto fail;
		}
		snprintf(r->server, sizeof(r->server), "%s", server);
	} else {
		if (ub_ctx_resolvconf(r->ctx, NULL) != 0) {
			*error_r = "cannot use /etc/resolv.conf";
			goto fail;
		}
		/* /etc/hosts only adds names; a machine without one still resolves. */
		int err = ub_ctx_hosts(r->ctx, NULL);
		if (err != 0)
			log_warn("dns", "event=hosts_ignored file=/etc/hosts error=\"%s\"",
				 ub_strerror(err));
		snprintf(r->server, sizeof(r->server), "the resolvers of /etc/resolv.conf");
	}
	/* libunbound answers some special-use names itself (RFC 6761 6.2 test., RFC 8375
	 * home.arpa.).  A mail server asks whatever resolver it was given: a test setup or
	 * a home network is exactly where those names are served, so let them through.
	 * ("nodefault" would say so too, but ub_ctx_set_option() mis-parses it in 1.17:
	 * it keeps the whole "NAME nodefault" string as the zone name.) */
	if (ub_ctx_set_option(r->ctx, "local-zone:", "test. transparent") != 0 ||
	    ub_ctx_set_option(r->ctx, "local-zone:", "home.arpa. transparent") != 0) {
		*error_r = "libunbound: cannot set local zones";
		goto fail;
	}
	int fd = ub_fd(r->ctx);
	if (fd < 0) {
		*error_r = "libunbound: no result descriptor";
		goto fail;
	}
	r->ev = event_new(base, fd, EV_READ | EV_PERSIST, dns_fd_cb, r);
	if (r->ev == NULL || event_add(r->ev, NULL) < 0) {
		*error_r = "cannot watch the libunbound descriptor";
		goto fail;
	}
	return r;
fail:
	if (r->ev != NULL)
		event_free(r->ev);
	if (r->ctx != NULL)
		ub_ctx_delete(r->ctx);
	free(r);
	return NULL;
}

void dns_resolver_free(struct dns_resolver **rp)
{
	struct dns_resolver *r = *rp;
	if (r == NULL)
		return;
	*rp = NULL;
	while (r->queries != NULL)
		dns_query_drop(r->queries);
	if (r->in_process > 0) {
		/* Inside ub_process(): it still reads from the context; dns_fd_cb()
		 * finishes the job.  The queries are cancelled already, so no callback of
		 * ours runs meanwhile. */
		r->dead = 1;
		return;
	}
	event_free(r->ev);
	ub_ctx_delete(r->ctx);
	free(r);
}

void dns_resolver_set_timeout(struct dns_resolver *r, int msecs)
{
	r->timeout_ms = msecs > 0 ? msecs : 0;
}

static struct dns_query *dns_query_new(struct dns_resolver *r, enum dns_kind kind,
				       const char *name, void *arg)
{
	struct dns_query *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	q->timer = evtimer_new(r->base, dns_timer_cb, q);
	if (q->timer == NULL) {
		free(q);
		return NULL;
	}
	q->r = r;
	q->kind = kind;
	q->arg = arg;
	q->next = r->queries;
	if (r->queries != NULL)
		r->queries->prev = q;
	r->queries = q;

	if (!dns_name_valid(name)) {
		char text[80];
		dns_name_printable(text, sizeof(text), name);
		q->bad_name = 1;
		snprintf(q->bad_why, sizeof(q->bad_why), "\"%s\": not a valid domain name", text);
	} else {
		size_t len = strlen(name);
		if (name[len - 1] == '.')
			len--;
		memcpy(q->name, name, len);
		q->name[len] = '\0';
	}
	return q;
}

static void dns_query_start(struct dns_query *q, const int *types, int n)
{
	struct dns_resolver *r = q->r;
	q->n_sub = n;
	for (int i = 0; i < n; i++) {
		struct dns_sub *s = &q->sub[i];
		s->q = q;
		s->rrtype = types[i];
		if (q->bad_name)
			continue;
		if (r->broken) {
			s->status = DNS_TEMPFAIL;
			snprintf(s->why, sizeof(s->why), "%s: resolver not working", q->name);
			continue;
		}
		int err = ub_resolve_async(r->ctx, q->name, types[i], DNS_CLASS_IN, s, dns_ub_cb,
					   &s->async_id);
		if (err != 0) {
			s->status = DNS_TEMPFAIL;
			snprintf(s->why, sizeof(s->why), "%s: resolver error (%s)", q->name,
				 ub_strerror(err));
			continue;
		}
		s->pending = 1;
	}
	if (!dns_query_pending(q)) {
		/* Decided already: deliver on the next loop turn, not from in here. */
		event_active(q->timer, EV_TIMEOUT, 1);
		return;
	}
	if (r->timeout_ms > 0) {
		struct timeval tv = { r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000 };
		evtimer_add(q->timer, &tv);
	}
}

struct dns_query *dns_lookup_mx(struct dns_resolver *r, const char *domain, dns_mx_cb *cb,
				void *arg)
{
	static const int types[] = { DNS_TYPE_MX };
	struct dns_query *q = dns_query_new(r, DNS_KIND_MX, domain, arg);
	if (q == NULL)
		return NULL;
	q->mx_cb = cb;
	dns_query_start(q, types, 1);
	return q;
}

struct dns_query *dns_lookup_addrs(struct dns_resolver *r, const char *host, dns_addr_cb *cb,
				   void *arg)
{
	static const int types[] = { DNS_TYPE_AAAA, DNS_TYPE_A };
	struct dns_query *q = dns_query_new(r, DNS_KIND_ADDRS, host, arg);
	if (q == NULL)
		return NULL;
	q->addr_cb = cb;
	dns_query_start(q, types, 2);
	return q;
}

void dns_cancel(struct dns_query **qp)
{
	struct dns_query *q = *qp;
	if (q == NULL)
		return;
	*qp = NULL;
	dns_query_drop(q);
}
