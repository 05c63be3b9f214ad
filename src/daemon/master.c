/* The master: reads the configuration, prepares the data directory and TLS, binds the
 * listeners (one SO_REUSEPORT socket per session worker), forks the workers and
 * supervises them.  It keeps root (when started as root) only to bind and fork; it
 * never touches a client connection, a queue file or the directory database itself. */
#include "daemon/master.h"

#include "auth/password.h"
#include "base/file.h"
#include "base/log.h"
#include "base/counter.h"
#include "base/privs.h"
#include "daemon/worker.h"
#include "directory/directory.h"
#include "event/config.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MASTER_MAX_CHILDREN   1024
#define MASTER_STOP_SECONDS   40   /* workers drain for 30 s, then we insist */
#define MASTER_MAX_BACKOFF    30
#define DEV_DOMAIN            "example.test"
#define DEV_USER              "demo@" DEV_DOMAIN

enum child_kind { CHILD_SESSION, CHILD_DELIVERY };

struct child {
	pid_t pid;            /* 0: not running */
	enum child_kind kind;
	int index;
	int retiring;         /* replaced by a reload: not restarted when it exits */
	time_t started;
	int fast_failures;
	time_t restart_at;    /* when pid is 0 and a restart is due */
};

struct master {
	struct tern_config *cfg;
	const char *config_path;
	int dev;
	uid_t uid;
	gid_t gid;
	SSL_CTX *ssl_ctx;
	struct counter_table *auth_failures; /* shared with every session worker */
	struct child children[MASTER_MAX_CHILDREN];
	int n_children;
	int n_workers;
	int stopping;
	time_t stop_deadline;
	int sigfd;
};

static const char *kind_name(enum child_kind k)
{
	return k == CHILD_SESSION ? "session" : "delivery";
}

/* ---- listeners ------------------------------------------------------------------------ */

/* probe: bind only, to check the address (no listen, so no connection is ever queued
 * on a socket that is closed again).  exclusive: without SO_REUSEPORT, so that another
 * program, or another tern, on the same port is found at start-up. */
static int listener_bind(const struct config_listener *l, int probe, int exclusive, char *error,
			 size_t cap)
{
	char host[256];
	int port;
	if (config_split_address(l->address, host, sizeof(host), &port) < 0) {
		snprintf(error, cap, "listener %s: bad address %s", l->name, l->address);
		return -1;
	}
	struct sockaddr_storage ss;
	socklen_t sslen;
	memset(&ss, 0, sizeof(ss));
	const char *bind_host = strcmp(host, "*") == 0 ? "0.0.0.0" : host;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, bind_host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		sslen = sizeof(*in4);
	} else if (inet_pton(AF_INET6, bind_host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		sslen = sizeof(*in6);
	} else {
		snprintf(error, cap, "listener %s: '%s' is not an IP address (write 127.0.0.1:%d, "
				     "[::1]:%d or *:%d)", l->name, host, port, port, port);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(error, cap, "listener %s: socket: %s", l->name, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (!exclusive)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
		int e = errno;
		const char *hint = "";
		if (e == EACCES && port < 1024)
			hint = " (ports below 1024 need tern to be started as root)";
		else if (e == EADDRINUSE)
			hint = " (another program, or another tern, listens there)";
		else if (e == EADDRNOTAVAIL)
			hint = " (this machine has no such address)";
		snprintf(error, cap, "cannot listen on %s for [listener %s]: %s%s", l->address, l->name,
			 strerror(e), hint);
		close(fd);
		return -1;
	}
	if (!probe && listen(fd, 1024) < 0) {
		snprintf(error, cap, "listener %s: listen: %s", l->name, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Binds one socket per listener for a new session worker (or, with probe, only checks
 * that they can be bound).  0 or -1 (logged). */
static int bind_all(struct master *m, struct worker_listener *out, int probe, int exclusive)
{
	char error[512];
	for (int i = 0; i < m->cfg->n_listeners; i++) {
		out[i].fd = listener_bind(&m->cfg->listeners[i], probe, exclusive, error,
					  sizeof(error));
		if (out[i].fd < 0) {
			log_error("master", "event=bind_failed error=\"%s\"", error);
			while (--i >= 0)
				close(out[i].fd);
			return -1;
		}
		out[i].protocol = m->cfg->listeners[i].protocol;
		snprintf(out[i].name, sizeof(out[i].name), "%s", m->cfg->listeners[i].name);
	}
	return 0;
}

/* ---- children ------------------------------------------------------------------------ */

static int spawn(struct master *m, struct child *c)
{
	struct worker_listener ls[CONFIG_MAX_LISTENERS];
	int n = 0;
	if (c->kind == CHILD_SESSION) {
		if (bind_all(m, ls, 0, 0) < 0)
			return -1;
		n = m->cfg->n_listeners;
	}
	pid_t pid = fork();
	if (pid < 0) {
		log_error("master", "event=fork_failed error=\"%s\"", strerror(errno));
		for (int i = 0; i < n; i++)
			close(ls[i].fd);
		return -1;
	}
	if (pid == 0) {
		char name[32];
		close(m->sigfd);
		if (c->kind == CHILD_SESSION)
			snprintf(name, sizeof(name), "worker-%d", c->index);
		else
			snprintf(name, sizeof(name), "delivery");
		worker_child_setup(name, m->uid, m->gid);
		int rc = c->kind == CHILD_SESSION ? session_worker_run(m->cfg, m->ssl_ctx, ls, n,
									     m->auth_failures)
						  : delivery_worker_run(m->cfg);
		_exit(rc);
	}
	for (int i = 0; i < n; i++)
		close(ls[i].fd);
	c->pid = pid;
	c->started = time(NULL);
	c->restart_at = 0;
	log_info("master", "event=worker_started kind=%s index=%d pid=%d", kind_name(c->kind),
		 c->index, (int)pid);
	return 0;
}

static struct child *child_add(struct master *m, enum child_kind kind, int index)
{
	if (m->n_children >= MASTER_MAX_CHILDREN)
		return NULL;
	struct child *c = &m->children[m->n_children++];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->index = index;
	return c;
}

static void child_remove(struct master *m, struct child *c)
{
	*c = m->children[--m->n_children];
}

static int delivery_running(struct master *m)
{
	for (int i = 0; i < m->n_children; i++)
		if (m->children[i].kind == CHILD_DELIVERY && m->children[i].pid != 0)
			return 1;
	return 0;
}

static void schedule_restart(struct child *c)
{
	time_t now = time(NULL);
	if (now - c->started < 5)
		c->fast_failures++;
	else
		c->fast_failures = 0;
	int delay = c->fast_failures == 0 ? 0 : 1 << (c->fast_failures - 1);
	if (delay > MASTER_MAX_BACKOFF)
		delay = MASTER_MAX_BACKOFF;
	c->restart_at = now + delay;
	if (delay > 0)
		log_warn("master", "event=worker_restart_delayed kind=%s index=%d delay=%ds",
			 kind_name(c->kind), c->index, delay);
}

static void reap(struct master *m)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct child *c = NULL;
		for (int i = 0; i < m->n_children; i++)
			if (m->children[i].pid == pid)
				c = &m->children[i];
		if (c == NULL)
			continue; /* a bootstrap helper */
		char how[64];
		if (WIFSIGNALED(status))
			snprintf(how, sizeof(how), "signal=%d", WTERMSIG(status));
		else
			snprintf(how, sizeof(how), "exit=%d", WEXITSTATUS(status));
		int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		log_msg(clean || m->stopping || c->retiring ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR, "master",
			"event=worker_exited kind=%s index=%d pid=%d %s", kind_name(c->kind), c->index,
			(int)pid, how);
		c->pid = 0;
		if (m->stopping || c->retiring) {
			child_remove(m, c);
			continue;
		}
		schedule_restart(c);
	}
}

static void start_due(struct master *m)
{
	time_t now = time(NULL);
	for (int i = 0; i < m->n_children; i++) {
		struct child *c = &m->children[i];
		if (c->pid != 0 || c->restart_at > now)
			continue;
		/* One delivery worker at a time: a retiring one finishes first. */
		if (c->kind == CHILD_DELIVERY && delivery_running(m))
			continue;
		if (spawn(m, c) < 0) {
			c->started = now;
			schedule_restart(c);
		}
	}
}

static int next_timeout_ms(struct master *m)
{
	time_t now = time(NULL), next = 0;
	for (int i = 0; i < m->n_children; i++) {
		struct child *c = &m->children[i];
		if (c->pid == 0 && (next == 0 || c->restart_at < next))
			next = c->restart_at;
	}
	if (m->stopping)
		next = next == 0 || m->stop_deadline < next ? m->stop_deadline : next;
	if (next == 0)
		return -1;
	if (next <= now)
		return 200; /* e.g. waiting for the old delivery worker */
	return (int)(next - now) * 1000;
}

static void signal_children(struct master *m, int sig)
{
	for (int i = 0; i < m->n_children; i++)
		if (m->children[i].pid != 0)
			kill(m->children[i].pid, sig);
}

/* ---- setup ---------------------------------------------------------------------------- */

static int prepare_data_dir(struct master *m)
{
	const char *error = NULL;
	const char *subdirs[] = { "", "/queue", "/queue/tmp", "/mail", "/tls" };
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s%s", m->cfg->data_dir, subdirs[i]);
		if (privs_prepare_dir(path, m->uid, m->gid, &error) < 0) {
			log_error("master", "event=start_failed error=\"%s\"", error);
			return -1;
		}
	}
	char real[PATH_MAX];
	if (realpath(m->cfg->data_dir, real) == NULL) {
		log_error("master", "event=start_failed error=\"%s: %s\"", m->cfg->data_dir,
			  strerror(errno));
		return -1;
	}
	free(m->cfg->data_dir);
	m->cfg->data_dir = strdup(real);
	if (m->uid != 0) {
		/* Every parent must be traversable by the unprivileged user. */
		char parent[PATH_MAX];
		snprintf(parent, sizeof(parent), "%s", real);
		for (char *slash = strrchr(parent, '/'); slash && slash != parent;
		     slash = strrchr(parent, '/')) {
			*slash = '\0';
			struct stat st;
			if (stat(parent, &st) == 0 && !(st.st_mode & S_IXOTH) && st.st_uid != m->uid) {
				log_error("master", "event=start_failed error=\"user %s cannot reach %s: "
						    "%s is not searchable by others (chmod o+x %s)\"",
					  m->cfg->user, real, parent, parent);
				return -1;
			}
		}
	}
	return 0;
}

static SSL_CTX *load_tls(struct master *m, int *selfsigned_r)
{
	char cert[4096], key[4096];
	const char *error = NULL;
	*selfsigned_r = 0;
	if (m->cfg->tls_cert[0] != '\0') {
		snprintf(cert, sizeof(cert), "%s", m->cfg->tls_cert);
		snprintf(key, sizeof(key), "%s", m->cfg->tls_key);
	} else {
		snprintf(cert, sizeof(cert), "%s/tls/cert.pem", m->cfg->data_dir);
		snprintf(key, sizeof(key), "%s/tls/key.pem", m->cfg->data_dir);
		if (tls_selfsigned_ensure(cert, key, m->cfg->hostname, &error) < 0) {
			log_error("master", "event=start_failed error=\"tls: %s\"", error);
			return NULL;
		}
		*selfsigned_r = 1;
	}
	SSL_CTX *ctx = tls_server_ctx_new(cert, key, &error);
	if (ctx == NULL)
		log_error("master", "event=start_failed error=\"tls: %s\"", error);
	return ctx;
}

static void random_password(char *out, size_t len)
{
	static const char alphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
	unsigned char rnd[64];
	if (len > sizeof(rnd))
		len = sizeof(rnd);
	if (getrandom(rnd, len, 0) != (ssize_t)len)
		log_fatal("master", "event=start_failed error=\"no randomness\"");
	for (size_t i = 0; i + 1 < len; i++)
		out[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
	out[len - 1] = '\0';
}

static void noop_cb(void *ctx, const char *s)
{
	*(int *)ctx += 1;
}

/* Runs as the unprivileged user in a short-lived child: creates the directory schema
 * and, in development mode, the demo domain and user.  The password (when one was made)
 * is written to fd. */
static int bootstrap_child(struct master *m, int fd)
{
	const char *error = NULL;
	struct directory *dir = directory_open(m->cfg->data_dir, &error);
	if (dir == NULL) {
		log_error("master", "event=start_failed error=\"directory: %s\"", error);
		return 1;
	}
	if (m->dev) {
		int n = 0;
		if (directory_domain_list(dir, noop_cb, &n, &error) < 0) {
			log_error("master", "event=start_failed error=\"directory: %s\"", error);
			return 1;
		}
		if (n == 0) {
			char password[17], hash[512];
			random_password(password, sizeof(password));
			if (password_hash(password, hash, sizeof(hash), &error) < 0 ||
			    directory_domain_add(dir, DEV_DOMAIN, &error) < 0 ||
			    directory_account_add(dir, DEV_USER, hash, &error) < 0 ||
			    directory_alias_add(dir, "postmaster@" DEV_DOMAIN, DEV_USER, &error) < 0) {
				log_error("master", "event=start_failed error=\"demo user: %s\"", error);
				return 1;
			}
			log_info("master", "event=dev_bootstrap domain=%s user=%s", DEV_DOMAIN, DEV_USER);
			ssize_t w = write(fd, password, strlen(password));
			(void)w;
		}
	}
	directory_close(&dir);
	return 0;
}

static int bootstrap(struct master *m, char *password, size_t cap)
{
	int p[2];
	password[0] = '\0';
	if (pipe(p) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(p[0]);
		worker_child_setup("bootstrap", m->uid, m->gid);
		_exit(bootstrap_child(m, p[1]));
	}
	close(p[1]);
	size_t len = 0;
	ssize_t r;
	while (len + 1 < cap && (r = read(p[0], password + len, cap - 1 - len)) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		len += (size_t)r;
	}
	password[len] = '\0';
	close(p[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static const char *listener_host(const struct config_listener *l, char *host, size_t cap, int *port)
{
	if (config_split_address(l->address, host, cap, port) < 0)
		snprintf(host, cap, "?");
	if (strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
		return "this server's name";
	return host;
}

/* The table a provider's help page would show (stdout, for the person who ran us). */
static void print_settings(struct master *m, const char *password, int selfsigned)
{
	printf("\ntern is running%s. Mail client settings:\n\n", m->dev ? " (development mode)" : "");
	printf("  %-10s %-22s %-6s %-16s %-16s %s\n", "Protocol", "Server", "Port", "Encryption",
	       "Authentication", "Username");
	for (int i = 0; i < m->cfg->n_listeners; i++) {
		const struct config_listener *l = &m->cfg->listeners[i];
		char hostbuf[256];
		int port = 0;
		const char *host = listener_host(l, hostbuf, sizeof(hostbuf), &port);
		const char *what = "SMTP", *tls = "SSL/TLS";
		switch (l->protocol) {
		case LISTENER_SMTP: continue;
		case LISTENER_SUBMISSION: tls = "STARTTLS"; break;
		case LISTENER_SUBMISSIONS: break;
		case LISTENER_IMAP: what = "IMAP"; tls = "STARTTLS"; break;
		case LISTENER_IMAPS: what = "IMAP"; break;
		case LISTENER_POP3: what = "POP3"; tls = "STARTTLS"; break;
		case LISTENER_POP3S: what = "POP3"; break;
		}
		printf("  %-10s %-22s %-6d %-16s %-16s %s\n", what, host, port, tls, "Normal password",
		       m->dev ? DEV_USER : "your full email address");
	}
	printf("\n  (SMTP sends mail; IMAP or POP3 reads it)\n");
	if (password[0] != '\0')
		printf("\n  Password for %s: %s\n  (shown only now; change it with: tern --dev user "
		       "passwd %s)\n", DEV_USER, password, DEV_USER);
	else if (m->dev)
		printf("\n  Password for %s: shown on the first start only (reset it with: tern "
		       "--dev user passwd %s)\n", DEV_USER, DEV_USER);
	for (int i = 0; i < m->cfg->n_listeners; i++) {
		const struct config_listener *l = &m->cfg->listeners[i];
		char hostbuf[256];
		int port = 0;
		const char *host = listener_host(l, hostbuf, sizeof(hostbuf), &port);
		if (l->protocol == LISTENER_SMTP)
			printf("\n  Other mail servers deliver to %s port %d (SMTP, no login).\n", host,
			       port);
	}
	if (selfsigned)
		printf("  The certificate is self-signed (%s/tls/cert.pem): mail clients will ask you "
		       "to accept it.\n", m->cfg->data_dir);
	printf("  Data: %s   Stop: Ctrl-C\n\n", m->cfg->data_dir);
	fflush(stdout);
}

/* ---- the loop ------------------------------------------------------------------------- */

static void start_generation(struct master *m)
{
	m->n_workers = m->cfg->workers > 0 ? m->cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (m->n_workers < 1)
		m->n_workers = 1;
	for (int i = 0; i < m->n_workers; i++) {
		struct child *c = child_add(m, CHILD_SESSION, i);
		if (c != NULL && spawn(m, c) < 0) {
			c->started = time(NULL);
			schedule_restart(c);
		}
	}
	struct child *d = child_add(m, CHILD_DELIVERY, 0);
	if (d != NULL && !delivery_running(m))
		spawn(m, d);
}

static void reload(struct master *m)
{
	const char *error = NULL;
	struct tern_config *cfg = config_load(m->config_path, m->dev, &error);
	if (cfg == NULL) {
		log_error("master", "event=reload_failed error=\"%s\" action=kept_old_config", error);
		return;
	}
	struct tern_config *old = m->cfg;
	SSL_CTX *old_ctx = m->ssl_ctx;
	m->cfg = cfg;
	int selfsigned;
	if (prepare_data_dir(m) < 0 || (m->ssl_ctx = load_tls(m, &selfsigned)) == NULL) {
		log_error("master", "event=reload_failed action=kept_old_config");
		config_free(&m->cfg);
		m->cfg = old;
		m->ssl_ctx = old_ctx;
		return;
	}
	/* Every listener must be bindable before anything is replaced. */
	struct worker_listener probe[CONFIG_MAX_LISTENERS];
	if (bind_all(m, probe, 1, 0) < 0) {
		log_error("master", "event=reload_failed action=kept_old_config");
		SSL_CTX_free(m->ssl_ctx);
		config_free(&m->cfg);
		m->cfg = old;
		m->ssl_ctx = old_ctx;
		return;
	}
	for (int i = 0; i < m->cfg->n_listeners; i++)
		close(probe[i].fd);
	/* The new generation listens before the old one stops: no connection is refused. */
	for (int i = m->n_children - 1; i >= 0; i--) {
		m->children[i].retiring = 1;
		if (m->children[i].pid == 0)
			child_remove(m, &m->children[i]);
	}
	int old_count = m->n_children;
	start_generation(m);
	for (int i = 0; i < old_count; i++) {
		struct child *c = &m->children[i];
		if (c->retiring && c->pid != 0)
			kill(c->pid, c->kind == CHILD_SESSION ? SIGUSR2 : SIGTERM);
	}
	config_free(&old);
	SSL_CTX_free(old_ctx);
	log_info("master", "event=reloaded workers=%d", m->n_workers);
}

int master_run(const char *config_path, int dev)
{
	struct master m;
	const char *error = NULL;
	memset(&m, 0, sizeof(m));
	m.config_path = config_path;
	m.dev = dev;
	log_set_process("master");
	m.cfg = config_load(config_path, dev, &error);
	if (m.cfg == NULL) {
		fprintf(stderr, "tern: %s\n", error);
		return 1;
	}
	enum log_level level = LOG_LEVEL_INFO;
	log_level_parse(m.cfg->log_level, &level);
	if (log_open(m.cfg->log_file, level, &error) < 0) {
		fprintf(stderr, "tern: cannot open log file %s: %s\n", m.cfg->log_file, error);
		return 1;
	}
	if (geteuid() == 0 && privs_lookup(m.cfg->user, &m.uid, &m.gid, &error) < 0) {
		log_error("master", "event=start_failed error=\"%s\"", error);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Each connection is a descriptor: allow as many as the hard limit does. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	/* Signals arrive through a signalfd; children unblock them after fork. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	m.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (m.sigfd < 0) {
		log_error("master", "event=start_failed error=\"signalfd: %s\"", strerror(errno));
		return 1;
	}
	if (prepare_data_dir(&m) < 0)
		return 1;
	m.auth_failures = counter_table_new_shared(16384);
	if (m.auth_failures == NULL) {
		log_error("master", "event=start_failed error=\"cannot map shared memory\"");
		return 1;
	}
	int selfsigned = 0;
	m.ssl_ctx = load_tls(&m, &selfsigned);
	if (m.ssl_ctx == NULL)
		return 1;
	char password[64];
	if (bootstrap(&m, password, sizeof(password)) < 0) {
		log_error("master", "event=start_failed error=\"cannot prepare the directory (see "
				    "above)\"");
		return 1;
	}
	/* Bind once up front so that a port problem stops us with a clear message. */
	struct worker_listener probe[CONFIG_MAX_LISTENERS];
	if (bind_all(&m, probe, 1, 1) < 0) {
		fprintf(stderr, "tern: cannot start: a listener cannot be bound (see the log)\n");
		return 1;
	}
	for (int i = 0; i < m.cfg->n_listeners; i++)
		close(probe[i].fd);

	start_generation(&m);
	for (int i = 0; i < m.cfg->n_listeners; i++)
		log_info("master", "event=listening listener=%s protocol=%s address=%s",
			 m.cfg->listeners[i].name, listener_protocol_name(m.cfg->listeners[i].protocol),
			 m.cfg->listeners[i].address);
	log_info("master", "event=ready workers=%d data_dir=%s hostname=%s", m.n_workers,
		 m.cfg->data_dir, m.cfg->hostname);
	if (m.dev || isatty(1))
		print_settings(&m, password, selfsigned);
	explicit_bzero(password, sizeof(password));

	for (;;) {
		struct pollfd pfd = { m.sigfd, POLLIN, 0 };
		int timeout = next_timeout_ms(&m);
		int r = poll(&pfd, 1, timeout);
		if (r < 0 && errno != EINTR)
			log_fatal("master", "event=poll_failed error=\"%s\"", strerror(errno));
		struct signalfd_siginfo si;
		while (read(m.sigfd, &si, sizeof(si)) == sizeof(si)) {
			switch (si.ssi_signo) {
			case SIGCHLD:
				break; /* reaped below */
			case SIGHUP:
				if (!m.stopping) {
					log_info("master", "event=reload");
					reload(&m);
				}
				break;
			case SIGTERM:
			case SIGINT:
				if (!m.stopping) {
					log_info("master", "event=stopping signal=%d", (int)si.ssi_signo);
					m.stopping = 1;
					m.stop_deadline = time(NULL) + MASTER_STOP_SECONDS;
					signal_children(&m, SIGTERM);
				}
				break;
			}
		}
		reap(&m);
		if (m.stopping) {
			/* Children never started (waiting for a restart) are simply forgotten. */
			for (int i = m.n_children - 1; i >= 0; i--)
				if (m.children[i].pid == 0)
					child_remove(&m, &m.children[i]);
			if (m.n_children == 0)
				break;
			if (time(NULL) >= m.stop_deadline) {
				log_warn("master", "event=stop_timeout action=kill workers=%d",
					 m.n_children);
				signal_children(&m, SIGKILL);
				m.stop_deadline = time(NULL) + 5;
			}
			continue;
		}
		start_due(&m);
	}
	log_info("master", "event=exit");
	SSL_CTX_free(m.ssl_ctx);
	config_free(&m.cfg);
	return 0;
}
