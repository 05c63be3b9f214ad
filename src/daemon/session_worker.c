/* A session worker: one libevent loop serving the SMTP, IMAP and POP3 listeners, with
 * the policy callbacks that connect the engines to the directory, passwords and the
 * queue. */
#include "daemon/worker.h"

#include "auth/password.h"
#include "base/log.h"
#include "base/privs.h"
#include "directory/directory.h"
#include "event/pool.h"
#include "imap/imap_server.h"
#include "pop3/pop3_server.h"
#include "queue/queue_file.h"
#include "smtp/smtp_server.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <unistd.h>

#define WORKER_POOL_THREADS 8 /* fsync-bound: concurrent commits share journal flushes */
#define WORKER_DRAIN_SECONDS 30           /* shutdown: transactions get this long */
#define WORKER_GRACEFUL_SECONDS 120       /* reload: sessions get this long, then shutdown */

struct session_worker {
	const struct tern_config *cfg;
	struct event_base *base;
	struct pool *pool;
	struct directory *dir;
	struct smtp_server *smtp;
	struct imap_server *imap;
	struct pop3_server *pop3;
	int draining_servers;          /* engines still draining */
	char queue_dir[4096];
	char mail_root[4096];
	struct event *ev_term, *ev_int, *ev_usr2, *ev_drain_timeout;
	int draining; /* 1 graceful (reload), 2 shutdown */
};

void worker_child_setup(const char *name, uid_t uid, gid_t gid)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2 };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	/* A worker without its master must not keep serving: nobody would restart or
	 * reload it. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() == 1)
		exit(1);
	log_set_process(name);
	if (uid != 0) {
		const char *error = NULL;
		if (privs_drop(uid, gid, &error) < 0)
			log_fatal("worker", "event=start_failed error=\"%s\"", error);
	}
}

/* ---- policy callbacks ---------------------------------------------------------------- */

static enum smtp_rcpt_verdict cb_rcpt(void *ctx, const struct smtp_session_info *s,
				      const struct mail_addr *rcpt, struct smtp_rcpt_targets *out)
{
	struct session_worker *w = ctx;
	struct directory_targets *targets = malloc(sizeof(*targets));
	const char *error = NULL;
	if (targets == NULL)
		return SMTP_RCPT_TEMPFAIL;
	int r = directory_resolve(w->dir, rcpt->local, rcpt->domain, targets, &error);
	enum smtp_rcpt_verdict v;
	switch (r) {
	case 1:
		for (int i = 0; i < targets->n && i < SMTP_RCPT_MAX_TARGETS; i++)
			snprintf(out->addr[i], sizeof(out->addr[i]), "%s", targets->t[i].address);
		out->n = targets->n < SMTP_RCPT_MAX_TARGETS ? targets->n : SMTP_RCPT_MAX_TARGETS;
		v = SMTP_RCPT_OK;
		break;
	case 2:
		v = SMTP_RCPT_UNKNOWN_USER;
		break;
	case 0: {
		/* Not ours: relaying, only for our users and trusted networks. */
		int trusted = s->auth_user != NULL ||
			      config_network_match(w->cfg->networks, w->cfg->n_networks, s->client_sa);
		if (!trusted || rcpt->domain[0] == '\0' || rcpt->domain[0] == '[') {
			v = SMTP_RCPT_RELAY_DENIED;
			break;
		}
		if (addr_format(rcpt, out->addr[0], sizeof(out->addr[0])) < 0) {
			v = SMTP_RCPT_RELAY_DENIED;
			break;
		}
		out->n = 1;
		v = SMTP_RCPT_OK;
		break;
	}
	default:
		log_error("smtp", "sid=%s event=directory_error error=\"%s\"", s->id,
			  error ? error : "unknown");
		v = SMTP_RCPT_TEMPFAIL;
		break;
	}
	free(targets);
	return v;
}

static int cb_may_send_as(void *ctx, const char *account, const char *from)
{
	struct session_worker *w = ctx;
	return directory_may_send_as(w->dir, account, from);
}

/* A password check on the pool (yescrypt is slow by design): SMTP AUTH, IMAP and POP3
 * logins.  An unknown user costs the same as a known one (a dummy hash), so timing
 * does not tell them apart. */
struct password_job {
	void (*finish)(struct password_job *j); /* on the loop, with ok set */
	void *session;
	/* IMAP and POP3: the engine's completion, and the account's lower-cased address. */
	void (*login_done)(void *session, int ok, const char *domain, const char *user);
	char account[512];
	char password[256];
	char hash[512];
	int have_hash;
	int ok;                                  /* 1, 0, or -1 for a directory error */
};

static void password_job_work(void *arg)
{
	struct password_job *j = arg;
	if (j->have_hash)
		j->ok = password_verify(j->password, j->hash) == 1;
	else
		password_dummy_verify(j->password); /* same cost for unknown users */
	explicit_bzero(j->password, sizeof(j->password));
}

static void password_job_done(void *arg)
{
	struct password_job *j = arg;
	j->finish(j);
	explicit_bzero(j, sizeof(*j));
	free(j);
}

/* Queues the check; the engines expect the answer later, never from inside their
 * callback, so a failure here ends the worker (the master restarts it). */
static void password_job_submit(struct session_worker *w, struct password_job *j,
				const char *subsys)
{
	if (j != NULL && pool_submit(w->pool, password_job_work, password_job_done, j) == 0)
		return;
	if (j != NULL)
		explicit_bzero(j, sizeof(*j));
	free(j);
	log_error(subsys, "event=auth_error error=\"cannot queue the password check\"");
	exit(1);
}

static void smtp_auth_finish(struct password_job *j)
{
	smtp_session_auth_done(j->session, j->ok);
}

static void cb_auth(void *ctx, struct smtp_session *s, const char *user, const char *password)
{
	struct session_worker *w = ctx;
	struct password_job *j = calloc(1, sizeof(*j));
	if (j != NULL) {
		j->finish = smtp_auth_finish;
		j->session = s;
		snprintf(j->password, sizeof(j->password), "%s", password);
		j->have_hash = directory_account_hash(w->dir, user, j->hash, sizeof(j->hash)) == 1;
	}
	password_job_submit(w, j, "smtp");
}

/* IMAP and POP3 logins: the login name is the account's address; the mail store is
 * MAIL_ROOT/DOMAIN/LOCAL of its lower-cased form, as local delivery writes it. */
static void login_finish(struct password_job *j)
{
	char *at = strrchr(j->account, '@');
	if (j->ok == 1 && at != NULL) {
		*at = '\0';
		j->login_done(j->session, 1, at + 1, j->account);
	} else {
		j->login_done(j->session, j->ok < 0 ? -1 : 0, NULL, NULL);
	}
}

static void cb_login(void *ctx, const char *user, const char *password,
		     void (*done)(void *session, int ok, const char *domain, const char *user),
		     void *session)
{
	struct session_worker *w = ctx;
	struct password_job *j = calloc(1, sizeof(*j));
	if (j != NULL) {
		j->finish = login_finish;
		j->login_done = done;
		j->session = session;
		snprintf(j->password, sizeof(j->password), "%s", password);
		snprintf(j->account, sizeof(j->account), "%s", user);
		for (char *p = j->account; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		int r = strchr(j->account, '@') != NULL
				? directory_account_hash(w->dir, j->account, j->hash, sizeof(j->hash))
				: 0;
		j->have_hash = r == 1;
		if (r < 0)
			j->ok = -1;
	}
	password_job_submit(w, j, "worker");
}

static void *cb_msg_begin(void *ctx, const struct smtp_envelope *env, char id_r[32],
			  const char **error_r)
{
	struct session_worker *w = ctx;
	struct queue_envelope qe;
	memset(&qe, 0, sizeof(qe));
	qe.arrival = (long long)time(NULL);
	qe.from = (char *)env->from;
	qe.ret = env->params->ret == SMTP_RET_FULL   ? QUEUE_RET_FULL
		 : env->params->ret == SMTP_RET_HDRS ? QUEUE_RET_HDRS
						     : QUEUE_RET_UNSET;
	qe.envid = (char *)env->params->envid;
	qe.smtputf8 = env->params->smtputf8;
	qe.body_8bit = env->params->body == SMTP_BODY_8BITMIME;
	qe.auth_user = (char *)env->auth_user;
	qe.client_addr = (char *)env->client_addr;
	qe.helo = (char *)env->helo;
	qe.n_rcpts = env->n_targets;
	qe.rcpts = calloc((size_t)env->n_targets, sizeof(*qe.rcpts));
	if (qe.rcpts == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	for (int i = 0; i < env->n_targets; i++) {
		qe.rcpts[i].addr = (char *)env->targets[i].addr;
		qe.rcpts[i].orcpt = (char *)env->targets[i].orcpt;
		qe.rcpts[i].notify = env->targets[i].notify;
		qe.rcpts[i].status = QUEUE_STATUS_PENDING;
	}
	struct queue_writer *qw = queue_writer_begin(w->queue_dir, &qe, error_r);
	free(qe.rcpts);
	if (qw == NULL)
		return NULL;
	snprintf(id_r, 32, "%s", queue_writer_id(qw));
	return qw;
}

static int cb_msg_append(void *ctx, void *msg, const void *data, size_t len, int *disk_full_r)
{
	const char *error = NULL;
	if (queue_writer_append(msg, data, len, &error) == 0)
		return 0;
	*disk_full_r = error != NULL && (strstr(error, "No space") != NULL ||
					  strstr(error, "quota") != NULL);
	log_error("queue", "event=write_failed error=\"%s\"", error ? error : "unknown");
	return -1;
}

struct commit_job {
	struct smtp_session *session;
	struct queue_writer *writer;
	int ok;
	int disk_full;
	char error[256];
};

static void commit_job_work(void *arg)
{
	struct commit_job *j = arg;
	const char *error = NULL;
	j->ok = queue_writer_commit(j->writer, &j->disk_full, &error) == 0;
	j->writer = NULL;
	if (!j->ok)
		snprintf(j->error, sizeof(j->error), "%s", error ? error : "unknown");
}

static void commit_job_done(void *arg)
{
	struct commit_job *j = arg;
	smtp_session_commit_done(j->session, j->ok, j->disk_full, j->error);
	free(j);
}

static void cb_msg_commit(void *ctx, struct smtp_session *s, void *msg)
{
	struct session_worker *w = ctx;
	struct commit_job *j = calloc(1, sizeof(*j));
	if (j != NULL) {
		j->session = s;
		j->writer = msg;
	}
	if (j == NULL || pool_submit(w->pool, commit_job_work, commit_job_done, j) < 0) {
		log_error("queue", "event=commit_failed error=\"cannot queue the commit\"");
		exit(1); /* nothing was acknowledged; the master restarts us */
	}
}

static void cb_msg_abort(void *ctx, void *msg)
{
	struct queue_writer *qw = msg;
	queue_writer_abort(&qw);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Each engine reports once it has no session left; the loop ends with the last. */
static void on_drained(void *arg)
{
	struct session_worker *w = arg;
	if (--w->draining_servers <= 0)
		event_base_loopexit(w->base, NULL);
}

static int sessions(const struct session_worker *w)
{
	return smtp_server_session_count(w->smtp) + imap_server_session_count(w->imap) +
	       pop3_server_session_count(w->pop3);
}

static void drain(struct session_worker *w, int graceful);

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct session_worker *w = arg;
	if (w->draining == 1) {
		drain(w, 0);
		return;
	}
	log_warn("worker", "event=drain_timeout sessions=%d", sessions(w));
	event_base_loopexit(w->base, NULL);
}

static void drain(struct session_worker *w, int graceful)
{
	int mode = graceful ? 1 : 2;
	if (w->draining >= mode)
		return;
	w->draining = mode;
	log_info("worker", "event=draining mode=%s sessions=%d", graceful ? "graceful" : "shutdown",
		 sessions(w));
	struct timeval tv = { graceful ? WORKER_GRACEFUL_SECONDS : WORKER_DRAIN_SECONDS, 0 };
	if (w->ev_drain_timeout == NULL)
		w->ev_drain_timeout = evtimer_new(w->base, on_drain_timeout, w);
	evtimer_add(w->ev_drain_timeout, &tv);
	/* A second call (reload, then shutdown) re-arms all three. */
	w->draining_servers = 3;
	smtp_server_drain(w->smtp, graceful, on_drained, w);
	imap_server_drain(w->imap, graceful, on_drained, w);
	pop3_server_drain(w->pop3, graceful, on_drained, w);
}

/* SIGTERM: shut down.  SIGUSR2 (from the master on reload): stop accepting and let the
 * sessions finish. */
static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	drain(arg, sig == SIGUSR2);
}

int session_worker_run(const struct tern_config *cfg, SSL_CTX *ssl_ctx,
		       const struct worker_listener *listeners, int n_listeners,
		       struct counter_table *auth_failures)
{
	struct session_worker w;
	const char *error = NULL;
	memset(&w, 0, sizeof(w));
	w.cfg = cfg;
	snprintf(w.queue_dir, sizeof(w.queue_dir), "%s/queue", cfg->data_dir);
	snprintf(w.mail_root, sizeof(w.mail_root), "%s/mail", cfg->data_dir);
	w.base = event_base_new();
	if (w.base == NULL)
		log_fatal("worker", "event=start_failed error=\"cannot create the event loop\"");
	w.pool = pool_new(w.base, WORKER_POOL_THREADS);
	if (w.pool == NULL)
		log_fatal("worker", "event=start_failed error=\"cannot start the thread pool\"");
	w.dir = directory_open(cfg->data_dir, &error);
	if (w.dir == NULL)
		log_fatal("worker", "event=start_failed error=\"directory: %s\"", error);

	struct smtp_settings set = {
		.hostname = cfg->hostname,
		.max_message_size = cfg->max_message_size,
		.max_recipients = cfg->max_recipients,
		.max_connections = cfg->max_connections,
		.max_connections_per_ip = cfg->max_connections_per_ip,
		.command_timeout = cfg->command_timeout,
		.data_timeout = cfg->data_timeout,
		.auth_plaintext_loopback = cfg->auth_plaintext_loopback,
		.auth_max_failures = cfg->auth_max_failures,
		.auth_failure_window = cfg->auth_failure_window,
		.auth_failures = auth_failures,
	};
	struct smtp_callbacks cb = {
		.ctx = &w,
		.rcpt = cb_rcpt,
		.may_send_as = cb_may_send_as,
		.auth = cb_auth,
		.msg_begin = cb_msg_begin,
		.msg_append = cb_msg_append,
		.msg_commit = cb_msg_commit,
		.msg_abort = cb_msg_abort,
	};
	w.smtp = smtp_server_new(w.base, &set, ssl_ctx, &cb);
	if (w.smtp == NULL)
		log_fatal("worker", "event=start_failed error=\"out of memory\"");
	struct imap_settings iset = {
		.hostname = cfg->hostname,
		.mail_root = w.mail_root,
		.max_connections = cfg->mailbox_max_connections,
		.max_connections_per_ip = cfg->mailbox_max_connections_per_ip,
		.timeout = cfg->imap_timeout,
		.idle_timeout = cfg->imap_idle_timeout,
		.max_message_size = cfg->max_message_size,
		.auth_plaintext_loopback = cfg->auth_plaintext_loopback,
		.auth_max_failures = cfg->auth_max_failures,
		.auth_failure_window = cfg->auth_failure_window,
		.auth_failures = auth_failures,
	};
	struct imap_callbacks icb = { .ctx = &w, .login = cb_login };
	w.imap = imap_server_new(w.base, w.pool, &iset, ssl_ctx, &icb);
	struct pop3_settings pset = {
		.hostname = cfg->hostname,
		.mail_root = w.mail_root,
		.max_connections = cfg->mailbox_max_connections,
		.max_connections_per_ip = cfg->mailbox_max_connections_per_ip,
		.timeout = cfg->pop3_timeout,
		.auth_plaintext_loopback = cfg->auth_plaintext_loopback,
		.auth_max_failures = cfg->auth_max_failures,
		.auth_failure_window = cfg->auth_failure_window,
		.auth_failures = auth_failures,
	};
	struct pop3_callbacks pcb = { .ctx = &w, .login = cb_login };
	w.pop3 = pop3_server_new(w.base, w.pool, &pset, ssl_ctx, &pcb);
	if (w.imap == NULL || w.pop3 == NULL)
		log_fatal("worker", "event=start_failed error=\"out of memory\"");
	for (int i = 0; i < n_listeners; i++) {
		const struct worker_listener *l = &listeners[i];
		int r;
		switch (l->protocol) {
		case LISTENER_SMTP: r = smtp_server_listen(w.smtp, l->fd, SMTP_ROLE_MX, l->name); break;
		case LISTENER_SUBMISSION:
			r = smtp_server_listen(w.smtp, l->fd, SMTP_ROLE_SUBMISSION, l->name);
			break;
		case LISTENER_SUBMISSIONS:
			r = smtp_server_listen(w.smtp, l->fd, SMTP_ROLE_SUBMISSIONS, l->name);
			break;
		case LISTENER_IMAP: r = imap_server_listen(w.imap, l->fd, 0, l->name); break;
		case LISTENER_IMAPS: r = imap_server_listen(w.imap, l->fd, 1, l->name); break;
		case LISTENER_POP3: r = pop3_server_listen(w.pop3, l->fd, 0, l->name); break;
		case LISTENER_POP3S: r = pop3_server_listen(w.pop3, l->fd, 1, l->name); break;
		default: r = -1; break;
		}
		if (r < 0)
			log_fatal("worker", "event=start_failed error=\"cannot listen on %s\"", l->name);
	}
	w.ev_term = evsignal_new(w.base, SIGTERM, on_signal, &w);
	w.ev_int = evsignal_new(w.base, SIGINT, on_signal, &w);
	w.ev_usr2 = evsignal_new(w.base, SIGUSR2, on_signal, &w);
	evsignal_add(w.ev_term, NULL);
	evsignal_add(w.ev_int, NULL);
	evsignal_add(w.ev_usr2, NULL);

	event_base_dispatch(w.base);

	/* Jobs still running (a commit) finish before we go: a 250 may depend on them. */
	pool_free(&w.pool);
	smtp_server_free(&w.smtp);
	imap_server_free(&w.imap);
	pop3_server_free(&w.pop3);
	directory_close(&w.dir);
	log_info("worker", "event=exit");
	return 0;
}
