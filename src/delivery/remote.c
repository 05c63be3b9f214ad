/* One remote delivery attempt: route or MX lookup (RFC 5321 5.1), then every address of
 * every host in preference order until one takes the message. */
#include "delivery/remote.h"

#include "base/log.h"
#include "dns/dns.h"
#include "event/config.h"
#include "smtp/smtp_client.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define REMOTE_REUSE_MAX_MESSAGES 100 /* messages on one connection before a fresh one */
/* A destination none of whose hosts could be talked to is not tried again for a while:
 * 10 s, doubling while it stays so, at most 10 minutes.  Its messages are deferred as
 * after a failed attempt (the retry schedule's next step). */
#define REMOTE_DEAD_FIRST 10
#define REMOTE_DEAD_MAX 600
#define REMOTE_DEAD_ENTRIES 256

/* A destination that could not be reached (see REMOTE_DEAD_FIRST). */
struct remote_dead {
	char key[300];
	time_t until;      /* 0: a free entry */
	int period;        /* seconds, doubled at each new failure */
	char status[16];
	char error[600];
};

struct remote_idle {
	struct remote_idle *next, *prev;
	struct remote_conns *pool;
	char key[300];
	char host[256];
	char addr_text[INET6_ADDRSTRLEN];
	struct smtp_client *client;
	struct event *timer;
};

struct remote_conns {
	struct event_base *base;
	int idle_seconds;
	int max_idle;
	int n;
	struct remote_idle *head;
	struct remote_dead dead[REMOTE_DEAD_ENTRIES];
};

struct remote_hop {
	char host[256];
	int port;
};

struct remote_job {
	const struct remote_ctx *ctx;
	char domain[256];
	const struct remote_msg *msg;
	struct remote_rcpt *rcpts;
	int n;
	remote_done_fn *done;
	void *arg;
	const struct config_route *route;
	struct remote_hop hops[DNS_MAX_MX];
	int n_hops;
	int hop;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];
	int n_addrs;
	int addr_i;
	char addr_text[INET6_ADDRSTRLEN];
	int talked;               /* a host of the destination answered (greeting, EHLO) */
	int unreachable;          /* connections that failed before a transaction */
	int no_tls;               /* retrying this address without STARTTLS (RFC 7435) */
	int reused;               /* the connection came from the idle pool */
	char key[300];            /* the destination, for the idle pool */
	struct dns_query *query;
	struct smtp_client *client;
	struct smtp_client_settings set;
	struct smtp_client_msg cmsg;
	struct smtp_client_rcpt *crcpts;
	/* What went wrong last, for a temporary failure of the whole attempt. */
	char last_status[16];
	char last_error[600];
	struct event *ev_finish;
};

static void try_next_hop(struct remote_job *job);
static void try_next_addr(struct remote_job *job);
static void start_fresh(struct remote_job *job);
static void dead_note(struct remote_job *job);
static void client_event(struct smtp_client *c, enum smtp_client_event ev, void *arg);

/* ---- idle connections ----------------------------------------------------------------- */

static void idle_remove(struct remote_idle *e)
{
	struct remote_conns *pool = e->pool;
	if (e->prev)
		e->prev->next = e->next;
	else
		pool->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	pool->n--;
	event_free(e->timer);
	free(e);
}

static void idle_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct remote_idle *e = arg;
	smtp_client_quit(&e->client);
	idle_remove(e);
}

static void idle_event(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	/* The remote closed an idle connection (or said 421). */
	struct remote_idle *e = arg;
	smtp_client_free(&e->client);
	idle_remove(e);
}

/* Keeps c for the next message to key.  0, or -1 (the caller closes c). */
static int idle_put(struct remote_conns *pool, const char *key, const char *host,
		    const char *addr_text, struct smtp_client *c)
{
	if (pool == NULL || pool->n >= pool->max_idle)
		return -1;
	struct remote_idle *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -1;
	e->timer = evtimer_new(pool->base, idle_timeout, e);
	if (e->timer == NULL) {
		free(e);
		return -1;
	}
	e->pool = pool;
	snprintf(e->key, sizeof(e->key), "%s", key);
	snprintf(e->host, sizeof(e->host), "%s", host);
	snprintf(e->addr_text, sizeof(e->addr_text), "%s", addr_text);
	e->client = c;
	smtp_client_set_event_cb(c, idle_event, e);
	struct timeval tv = { pool->idle_seconds, 0 };
	evtimer_add(e->timer, &tv);
	e->next = pool->head;
	if (pool->head)
		pool->head->prev = e;
	pool->head = e;
	pool->n++;
	return 0;
}

/* An idle connection to key that can take a message now, or NULL. */
static struct smtp_client *idle_take(struct remote_conns *pool, const char *key, char *host,
				     size_t host_cap, char *addr_text, size_t addr_cap)
{
	if (pool == NULL)
		return NULL;
	for (struct remote_idle *e = pool->head; e != NULL; e = e->next) {
		if (strcasecmp(e->key, key) != 0 || !smtp_client_is_ready(e->client))
			continue;
		struct smtp_client *c = e->client;
		snprintf(host, host_cap, "%s", e->host);
		snprintf(addr_text, addr_cap, "%s", e->addr_text);
		idle_remove(e);
		return c;
	}
	return NULL;
}

struct remote_conns *remote_conns_new(struct event_base *base, int idle_seconds, int max_idle)
{
	struct remote_conns *pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return NULL;
	pool->base = base;
	pool->idle_seconds = idle_seconds;
	pool->max_idle = max_idle;
	return pool;
}

void remote_conns_free(struct remote_conns **poolp)
{
	struct remote_conns *pool = *poolp;
	if (pool == NULL)
		return;
	while (pool->head != NULL) {
		struct remote_idle *e = pool->head;
		smtp_client_quit(&e->client);
		idle_remove(e);
	}
	free(pool);
	*poolp = NULL;
}

static void set_failure(struct remote_job *job, const char *status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_failure(struct remote_job *job, const char *status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(job->last_error, sizeof(job->last_error), fmt, ap);
	va_end(ap);
	snprintf(job->last_status, sizeof(job->last_status), "%s", status);
}

/* Every recipient still without an outcome gets the attempt's failure. */
static void fail_rest(struct remote_job *job, enum remote_outcome outcome)
{
	for (int i = 0; i < job->n; i++) {
		struct remote_rcpt *r = &job->rcpts[i];
		if (r->status[0] != '\0')
			continue;
		r->outcome = outcome;
		snprintf(r->status, sizeof(r->status), "%s", job->last_status);
		snprintf(r->diagnostic, sizeof(r->diagnostic), "X-tern; %s", job->last_error);
	}
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
	struct remote_job *job = arg;
	remote_done_fn *done = job->done;
	void *done_arg = job->arg;
	done(job, done_arg);
	remote_job_cancel(&job);
}

/* Completes the job from the loop, never from inside a call of the caller's. */
static void finish(struct remote_job *job, enum remote_outcome rest)
{
	if (job->last_status[0] == '\0')
		set_failure(job, "4.4.1", "no answer from any host of %s", job->domain);
	fail_rest(job, rest);
	dead_note(job);
	event_active(job->ev_finish, EV_TIMEOUT, 0);
}

static int is_ip_literal(const char *host, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		return 1;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		return 1;
	}
	return 0;
}

static void set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static void addr_to_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)cap);
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out,
			  (socklen_t)cap);
}

/* ---- dead destinations ---------------------------------------------------------------- */

static struct remote_dead *dead_find(struct remote_conns *pool, const char *key)
{
	if (pool == NULL)
		return NULL;
	for (int i = 0; i < REMOTE_DEAD_ENTRIES; i++)
		if (pool->dead[i].until != 0 && strcasecmp(pool->dead[i].key, key) == 0)
			return &pool->dead[i];
	return NULL;
}

/* After an attempt: a destination that answered is alive; one that could not be
 * reached at all is dead for a while (longer each time in a row). */
static void dead_note(struct remote_job *job)
{
	struct remote_conns *pool = job->ctx->conns;
	if (pool == NULL)
		return;
	struct remote_dead *d = dead_find(pool, job->key);
	if (job->talked || job->unreachable == 0) {
		if (d != NULL && job->talked)
			d->until = 0;
		return;
	}
	time_t now = time(NULL);
	if (d != NULL && now > d->until + REMOTE_DEAD_MAX)
		d->period = 0; /* dead long ago, alive in between: start again from the first */
	if (d == NULL) {
		/* A free entry, else the one that ends first. */
		d = &pool->dead[0];
		for (int i = 0; i < REMOTE_DEAD_ENTRIES && d->until != 0; i++)
			if (pool->dead[i].until < d->until)
				d = &pool->dead[i];
		memset(d, 0, sizeof(*d));
		snprintf(d->key, sizeof(d->key), "%s", job->key);
	}
	d->period = d->period == 0 ? REMOTE_DEAD_FIRST
				   : (d->period * 2 > REMOTE_DEAD_MAX ? REMOTE_DEAD_MAX : d->period * 2);
	d->until = now + d->period;
	snprintf(d->status, sizeof(d->status), "%s", job->last_status);
	snprintf(d->error, sizeof(d->error), "%s", job->last_error);
	log_info("delivery", "event=destination_dead destination=%s seconds=%d error=\"%s\"",
		 job->key, d->period, d->error);
}

void remote_conns_revive(struct remote_conns *pool)
{
	if (pool == NULL)
		return;
	for (int i = 0; i < REMOTE_DEAD_ENTRIES; i++)
		pool->dead[i].until = 0;
}

static void send_done(struct smtp_client *c, struct smtp_client_msg *m, int result, void *arg)
{
	struct remote_job *job = arg;
	const struct smtp_client_info *info = smtp_client_info(c);
	const struct remote_hop *hop = &job->hops[job->hop];
	for (int i = 0; i < job->n; i++) {
		struct remote_rcpt *r = &job->rcpts[i];
		const struct smtp_client_rcpt *cr = &job->crcpts[i];
		snprintf(r->remote_mta, sizeof(r->remote_mta), "%s [%s]", hop->host, job->addr_text);
		r->remote_dsn = info->dsn;
		if (info->tls_desc[0] != '\0')
			snprintf(r->tls, sizeof(r->tls), "%s verified=%s", info->tls_desc,
				 info->tls_verified ? "yes" : "no");
		else
			snprintf(r->tls, sizeof(r->tls), "none");
		if (cr->code == 0)
			continue; /* no final answer: the attempt's failure */
		int cls = cr->code / 100;
		r->outcome = cls == 2 ? REMOTE_DELIVERED : cls == 5 ? REMOTE_PERMFAIL : REMOTE_TEMPFAIL;
		if (cr->enhanced[0] != '\0')
			snprintf(r->status, sizeof(r->status), "%s", cr->enhanced);
		else
			snprintf(r->status, sizeof(r->status), "%d.0.0", cls);
		snprintf(r->diagnostic, sizeof(r->diagnostic), "smtp; %d %s%s%s", cr->code,
			 cr->enhanced, cr->enhanced[0] ? " " : "", cr->text);
	}
	if (result < 0 && job->reused) {
		/* A kept connection the remote had dropped meanwhile: not a failure of the
		 * destination.  Once more on a fresh connection. */
		smtp_client_free(&job->client);
		job->reused = 0;
		for (int i = 0; i < job->n; i++) {
			job->rcpts[i].status[0] = '\0';
			job->crcpts[i].code = 0;
		}
		start_fresh(job);
		return;
	}
	if (result < 0)
		set_failure(job, "4.4.2", "connection to %s [%s] lost during the transaction",
			    hop->host, job->addr_text);
	if (result == SMTP_CLIENT_SENT && smtp_client_is_ready(c) &&
	    info->messages < REMOTE_REUSE_MAX_MESSAGES &&
	    idle_put(job->ctx->conns, job->key, hop->host, job->addr_text, c) == 0)
		job->client = NULL; /* kept for the next message to this destination */
	else
		smtp_client_quit(&job->client);
	finish(job, REMOTE_TEMPFAIL);
}

static void client_event(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	struct remote_job *job = arg;
	const struct remote_hop *hop = &job->hops[job->hop];
	if (ev == SMTP_CLIENT_READY) {
		job->talked = 1;
		job->cmsg.from = job->msg->from;
		job->cmsg.smtputf8 = job->msg->smtputf8;
		job->cmsg.body_8bit = job->msg->body_8bit;
		job->cmsg.ret = job->msg->ret;
		job->cmsg.envid = job->msg->envid;
		job->cmsg.rcpts = job->crcpts;
		job->cmsg.n_rcpts = job->n;
		job->cmsg.fd = job->msg->fd;
		job->cmsg.offset = job->msg->offset;
		job->cmsg.len = job->msg->len;
		if (smtp_client_send(c, &job->cmsg, send_done, job) < 0) {
			set_failure(job, "4.3.0", "cannot send to %s [%s]", hop->host, job->addr_text);
			smtp_client_free(&job->client);
			finish(job, REMOTE_TEMPFAIL);
		}
		return;
	}
	/* The connection failed before a transaction: the next address or host. */
	const struct smtp_client_failure *f = smtp_client_failure(c);
	if (f != NULL && f->retry_without_tls && !job->no_tls) {
		/* Opportunistic TLS failed: in the clear beats not at all (RFC 7435). */
		log_warn("delivery", "event=tls_fallback qid=%s host=%s addr=%s error=\"%s\"",
			 job->msg->id, hop->host, job->addr_text, f->why);
		smtp_client_free(&job->client);
		job->no_tls = 1;
		try_next_addr(job);
		return;
	}
	const char *why = smtp_client_error(c);
	set_failure(job, "4.4.1", "%s [%s]: %s", hop->host, job->addr_text,
		    why && why[0] ? why : "connection failed");
	log_info("delivery", "event=connect_failed qid=%s host=%s addr=%s error=\"%s\"", job->msg->id,
		 hop->host, job->addr_text, job->last_error);
	smtp_client_free(&job->client);
	job->unreachable++;
	job->addr_i++;
	job->no_tls = 0;
	try_next_addr(job);
}

static void try_next_addr(struct remote_job *job)
{
	const struct remote_hop *hop = &job->hops[job->hop];
	if (job->addr_i >= job->n_addrs) {
		job->hop++;
		try_next_hop(job);
		return;
	}
	struct sockaddr_storage *ss = &job->addrs[job->addr_i];
	set_port(ss, hop->port);
	addr_to_text(ss, job->addr_text, sizeof(job->addr_text));
	const struct config_route *r = job->route;
	memset(&job->set, 0, sizeof(job->set));
	job->set.helo = job->ctx->cfg->helo_name[0] ? job->ctx->cfg->helo_name
						    : job->ctx->cfg->hostname;
	job->set.ssl_ctx = job->ctx->tls_ctx;
	job->set.tls_name = hop->host;
	if (r == NULL)
		job->set.tls = job->no_tls ? SMTP_CLIENT_TLS_NONE : SMTP_CLIENT_TLS_OPPORTUNISTIC;
	else if (r->tls == RELAY_TLS_IMPLICIT)
		job->set.tls = SMTP_CLIENT_TLS_IMPLICIT;
	else if (r->tls == RELAY_TLS_NONE)
		job->set.tls = SMTP_CLIENT_TLS_NONE;
	else
		job->set.tls = SMTP_CLIENT_TLS_REQUIRED;
	/* A route or smarthost is a host we chose: its certificate must be right. */
	job->set.tls_verify = r != NULL && r->tls != RELAY_TLS_NONE && r->tls_verify;
	if (r != NULL && r->username[0] != '\0') {
		job->set.auth_user = r->username;
		job->set.auth_password = r->password;
	}
	int t = job->ctx->cfg->client_timeout;
	job->set.connect_timeout = job->ctx->cfg->connect_timeout;
	job->set.greeting_timeout = job->ctx->cfg->connect_timeout;
	job->set.command_timeout = t;
	job->set.data_timeout = t;
	job->set.data_end_timeout = t * 2;
	socklen_t len = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
						 : sizeof(struct sockaddr_in6);
	job->client = smtp_client_connect(job->ctx->base, (struct sockaddr *)ss, len, &job->set,
					  client_event, job);
	if (job->client == NULL) {
		set_failure(job, "4.3.0", "cannot connect to %s [%s]: out of resources", hop->host,
			    job->addr_text);
		job->addr_i++;
		try_next_addr(job);
	}
}

static void addrs_done(void *arg, const struct dns_addr_result *res)
{
	struct remote_job *job = arg;
	job->query = NULL;
	if (res->status != DNS_OK || res->n == 0) {
		set_failure(job, res->status == DNS_TEMPFAIL ? "4.4.3" : "4.4.4",
			    "cannot find the address of %s: %s", job->hops[job->hop].host, res->why);
		job->hop++;
		try_next_hop(job);
		return;
	}
	job->n_addrs = res->n;
	memcpy(job->addrs, res->addr, (size_t)res->n * sizeof(res->addr[0]));
	job->addr_i = 0;
	try_next_addr(job);
}

static void try_next_hop(struct remote_job *job)
{
	if (job->hop >= job->n_hops) {
		finish(job, REMOTE_TEMPFAIL);
		return;
	}
	struct remote_hop *hop = &job->hops[job->hop];
	if (is_ip_literal(hop->host, &job->addrs[0])) {
		job->n_addrs = 1;
		job->addr_i = 0;
		try_next_addr(job);
		return;
	}
	job->query = dns_lookup_addrs(job->ctx->dns, hop->host, addrs_done, job);
	if (job->query == NULL) {
		set_failure(job, "4.3.0", "out of memory looking up %s", hop->host);
		finish(job, REMOTE_TEMPFAIL);
	}
}

static void mx_done(void *arg, const struct dns_mx_result *res)
{
	struct remote_job *job = arg;
	job->query = NULL;
	int port = job->ctx->cfg->delivery_port;
	switch (res->status) {
	case DNS_OK:
		for (int i = 0; i < res->n && job->n_hops < DNS_MAX_MX; i++) {
			snprintf(job->hops[job->n_hops].host, sizeof(job->hops[0].host), "%s",
				 res->mx[i].host);
			job->hops[job->n_hops++].port = port;
		}
		break;
	case DNS_NODATA:
		/* No MX: the domain itself is the host (RFC 5321 5.1). */
		snprintf(job->hops[0].host, sizeof(job->hops[0].host), "%s", job->domain);
		job->hops[0].port = port;
		job->n_hops = 1;
		break;
	case DNS_NULL_MX:
		set_failure(job, "5.1.10", "%s does not accept mail (null MX, RFC 7505)",
			    job->domain);
		finish(job, REMOTE_PERMFAIL);
		return;
	case DNS_NXDOMAIN:
	case DNS_BAD_NAME:
		set_failure(job, "5.1.2", "the domain %s does not exist (%s)", job->domain,
			    res->why);
		finish(job, REMOTE_PERMFAIL);
		return;
	case DNS_TEMPFAIL:
	default:
		set_failure(job, "4.4.3", "MX lookup for %s failed: %s", job->domain, res->why);
		finish(job, REMOTE_TEMPFAIL);
		return;
	}
	job->hop = 0;
	try_next_hop(job);
}

struct remote_job *remote_job_start(const struct remote_ctx *ctx, const char *domain,
				    const struct remote_msg *msg, struct remote_rcpt *rcpts, int n,
				    remote_done_fn *done, void *arg)
{
	struct remote_job *job = calloc(1, sizeof(*job));
	if (job == NULL)
		return NULL;
	job->crcpts = calloc((size_t)n, sizeof(*job->crcpts));
	job->ev_finish = event_new(ctx->base, -1, 0, on_finish, job);
	if (job->crcpts == NULL || job->ev_finish == NULL) {
		remote_job_cancel(&job);
		return NULL;
	}
	job->ctx = ctx;
	snprintf(job->domain, sizeof(job->domain), "%s", domain);
	job->msg = msg;
	job->rcpts = rcpts;
	job->n = n;
	job->done = done;
	job->arg = arg;
	for (int i = 0; i < n; i++) {
		rcpts[i].status[0] = '\0';
		rcpts[i].diagnostic[0] = '\0';
		rcpts[i].remote_mta[0] = '\0';
		rcpts[i].tls[0] = '\0';
		rcpts[i].outcome = REMOTE_TEMPFAIL;
		job->crcpts[i].addr = rcpts[i].addr;
		job->crcpts[i].orcpt = rcpts[i].orcpt;
		job->crcpts[i].notify = rcpts[i].notify;
	}
	job->route = config_route_for(ctx->cfg, domain);
	snprintf(job->key, sizeof(job->key), "%s", job->route ? job->route->host : domain);
	struct remote_dead *d = dead_find(ctx->conns, job->key);
	if (d != NULL && d->until > time(NULL)) {
		/* No attempt: each would wait out the same failure and hold a slot. */
		char when[32];
		struct tm tm;
		gmtime_r(&d->until, &tm);
		strftime(when, sizeof(when), "%H:%M:%SZ", &tm);
		set_failure(job, d->status, "delivery to %s suspended until %s (%s)", job->key, when,
			    d->error);
		finish(job, REMOTE_TEMPFAIL);
		return job;
	}
	job->client = idle_take(ctx->conns, job->key, job->hops[0].host, sizeof(job->hops[0].host),
				job->addr_text, sizeof(job->addr_text));
	if (job->client != NULL) {
		job->reused = 1;
		job->n_hops = 1;
		smtp_client_set_event_cb(job->client, client_event, job);
		client_event(job->client, SMTP_CLIENT_READY, job);
		return job;
	}
	start_fresh(job);
	return job;
}

/* Route or MX lookup, then the hosts in order. */
static void start_fresh(struct remote_job *job)
{
	const struct remote_ctx *ctx = job->ctx;
	const char *domain = job->domain;
	job->n_hops = 0;
	job->hop = 0;
	if (job->route != NULL) {
		char host[256];
		int port;
		if (config_split_address(job->route->host, host, sizeof(host), &port) < 0) {
			set_failure(job, "4.3.5", "bad route host %s", job->route->host);
			finish(job, REMOTE_TEMPFAIL);
			return;
		}
		snprintf(job->hops[0].host, sizeof(job->hops[0].host), "%s", host);
		job->hops[0].port = port;
		job->n_hops = 1;
		try_next_hop(job);
		return;
	}
	job->query = dns_lookup_mx(ctx->dns, domain, mx_done, job);
	if (job->query == NULL) {
		set_failure(job, "4.3.0", "out of memory looking up %s", domain);
		finish(job, REMOTE_TEMPFAIL);
	}
}

void remote_job_cancel(struct remote_job **jobp)
{
	struct remote_job *job = *jobp;
	if (job == NULL)
		return;
	if (job->query != NULL)
		dns_cancel(&job->query);
	if (job->client != NULL)
		smtp_client_free(&job->client);
	if (job->ev_finish != NULL)
		event_free(job->ev_finish);
	free(job->crcpts);
	free(job);
	*jobp = NULL;
}
