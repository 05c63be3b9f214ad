/* Remote delivery: one attempt to hand the recipients of one queued message that share
 * a destination domain to that domain's MX hosts, or to the configured route or
 * smarthost.  Asynchronous, on the delivery worker's loop. */
#ifndef TERN_DELIVERY_REMOTE_H
#define TERN_DELIVERY_REMOTE_H

#include <sys/types.h>

#include <openssl/ssl.h>

struct event_base;
struct dns_resolver;
struct tern_config;

struct remote_conns;

struct remote_ctx {
	struct event_base *base;
	struct dns_resolver *dns;
	SSL_CTX *tls_ctx; /* client context */
	const struct tern_config *cfg;
	struct remote_conns *conns; /* idle connections for reuse; NULL: none kept */
};

/* Connections kept open for idle_seconds after a message, for the next message to the
 * same destination (at most max_idle in all). */
struct remote_conns *remote_conns_new(struct event_base *base, int idle_seconds, int max_idle);
/* Says QUIT on every idle connection and frees them. */
void remote_conns_free(struct remote_conns **conns);
/* The same object remembers destinations none of whose hosts could be reached: jobs
 * for them fail at once (a temporary failure) for a while.  This forgets them all (an
 * administrator asked for the queue to be tried now). */
void remote_conns_revive(struct remote_conns *conns);

enum remote_outcome {
	REMOTE_TEMPFAIL, /* try again later */
	REMOTE_DELIVERED,
	REMOTE_PERMFAIL, /* bounce */
};

struct remote_rcpt {
	int index;                /* in the queue envelope */
	const char *addr;
	const char *orcpt;
	unsigned notify;
	/* Results, set when the job is done: */
	enum remote_outcome outcome;
	char status[16];          /* enhanced status code, e.g. "5.1.1" */
	char diagnostic[640];     /* "smtp; 550 5.1.1 <x@y>: User unknown", or a text of ours */
	char remote_mta[300];     /* "mx.example.com [192.0.2.1]" or "" */
	char tls[200];            /* "version=... cipher=... verified=yes|no", or "none" */
	int remote_dsn;           /* the accepting server takes DSN (else "relayed") */
};

struct remote_msg {
	const char *id;
	const char *from;
	int smtputf8;
	int body_8bit;
	int ret;
	const char *envid;
	int fd;
	off_t offset;
	off_t len;
};

struct remote_job;

typedef void remote_done_fn(struct remote_job *job, void *arg);

/* Starts delivering rcpts (all of domain) of msg.  Everything passed must stay valid
 * until done runs (later, on the loop, exactly once).  Returns NULL when out of memory. */
struct remote_job *remote_job_start(const struct remote_ctx *ctx, const char *domain,
				    const struct remote_msg *msg, struct remote_rcpt *rcpts, int n,
				    remote_done_fn *done, void *arg);
/* Stops a job; done is not called. */
void remote_job_cancel(struct remote_job **job);

#endif
