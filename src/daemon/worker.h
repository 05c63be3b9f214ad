/* The processes the master forks: session workers and the delivery worker. */
#ifndef TERN_DAEMON_WORKER_H
#define TERN_DAEMON_WORKER_H

#include "event/config.h"

#include <openssl/ssl.h>

struct counter_table;
#include <sys/types.h>

struct worker_listener {
	int fd;
	enum listener_protocol protocol;
	char name[64];
};

/* Prepares a freshly forked child: default signal handlers, unblocked signals, death
 * signal when the master goes, log process name, privileges dropped to uid:gid (when
 * uid is not 0).  Exits on failure. */
void worker_child_setup(const char *name, uid_t uid, gid_t gid);

/* Runs a session worker on the listening sockets until SIGTERM has drained it.
 * auth_failures is the table shared by all workers.  Returns the exit status. */
int session_worker_run(const struct tern_config *cfg, SSL_CTX *ssl_ctx,
		       const struct worker_listener *listeners, int n_listeners,
		       struct counter_table *auth_failures);

/* Runs the delivery worker until SIGTERM.  Returns the exit status. */
int delivery_worker_run(const struct tern_config *cfg);

#endif
