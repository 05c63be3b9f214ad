/* smtp/smtp_client: the outbound engine against a scripted fake SMTP server.
 *
 * The fake server is a thread on a loopback socket (127.0.0.1, port 0) with blocking
 * I/O bounded by poll timeouts.  It follows a script: "S:" sends a line, "R:" sends
 * raw bytes, "C:" expects a line from the client exactly, "C~" a line starting with
 * the text, "BODY" reads a DATA body up to its terminator, "TLS" does the server side
 * of a handshake, "QUIET:ms" checks that the client sends nothing meanwhile (no
 * pipelining where the server did not offer it), "SLEEP:ms", "HANG" (read until the
 * client gives up), "EOF" (expect the client to close), "DRAIN:ms" (read until the
 * client closes or is quiet for ms, then close).  It records everything the
 * client sent.  The client runs on a libevent loop in the test's thread; every run is
 * bounded in time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "base/log.h"
#include "smtp/smtp_client.h"
#include "smtp/smtp_parse.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FAKE_IO_TIMEOUT_MS 5000
#define FAKE_BUF_MAX       (4 << 20)
#define RUN_MAX_SECONDS    15

/* ---- time ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the fake server ---- */

struct fake {
	const char *const *script;
	SSL_CTX *ctx;
	int lfd;
	int port;
	int fd;
	SSL *ssl;
	char rbuf[65536];
	size_t rlen;
	char *got; /* everything the client sent (decrypted) */
	size_t got_len;
	char *body; /* the last DATA body as sent: stuffed, without the final ".\r\n" */
	size_t body_len;
	int bodies;
	char err[1024];
	atomic_int finished;
	pthread_t th;
};

__attribute__((format(printf, 2, 3))) static void fake_error(struct fake *f, const char *fmt, ...)
{
	if (f->err[0] != '\0')
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->err, sizeof(f->err), fmt, ap);
	va_end(ap);
}

static void fake_record(struct fake *f, const char *p, size_t n)
{
	if (f->got_len + n > FAKE_BUF_MAX) {
		fake_error(f, "client sent too much");
		return;
	}
	memcpy(f->got + f->got_len, p, n);
	f->got_len += n;
}

/* Reads more into rbuf.  >0: bytes, 0: EOF, -1: timeout or error. */
static int fake_read_more(struct fake *f, int timeout_ms)
{
	if (f->rlen >= sizeof(f->rbuf))
		return -1;
	for (int tries = 0; tries < 100; tries++) {
		if (f->ssl == NULL || SSL_pending(f->ssl) == 0) {
			struct pollfd p = {f->fd, POLLIN, 0};
			int pr = poll(&p, 1, timeout_ms);
			if (pr <= 0)
				return -1;
		}
		ssize_t n;
		if (f->ssl != NULL) {
			int r =
			    SSL_read(f->ssl, f->rbuf + f->rlen, (int)(sizeof(f->rbuf) - f->rlen));
			if (r <= 0) {
				int e = SSL_get_error(f->ssl, r);
				if (e == SSL_ERROR_WANT_READ)
					continue; /* a handshake record, no data yet */
				/* OpenSSL 3 reports a close without close_notify as
				 * SSL_ERROR_SSL ("unexpected eof"): the end all the same. */
				if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ||
				    e == SSL_ERROR_SSL) {
					ERR_clear_error();
					return 0;
				}
				return -1;
			}
			n = r;
		} else {
			n = recv(f->fd, f->rbuf + f->rlen, sizeof(f->rbuf) - f->rlen, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return errno == ECONNRESET ? 0 : -1;
			if (n == 0)
				return 0;
		}
		fake_record(f, f->rbuf + f->rlen, (size_t)n);
		f->rlen += (size_t)n;
		return (int)n;
	}
	return -1;
}

static void fake_consume(struct fake *f, size_t n)
{
	memmove(f->rbuf, f->rbuf + n, f->rlen - n);
	f->rlen -= n;
}

static int fake_send(struct fake *f, const char *p, size_t n)
{
	if (f->ssl != NULL)
		return SSL_write(f->ssl, p, (int)n) == (int)n ? 0 : -1;
	while (n > 0) {
		ssize_t w = send(f->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One line without CRLF into out.  0 or -1. */
static int fake_line(struct fake *f, char *out, size_t cap)
{
	double deadline = now_s() + FAKE_IO_TIMEOUT_MS / 1000.0;
	while (now_s() < deadline) {
		char *e = memmem(f->rbuf, f->rlen, "\r\n", 2);
		if (e != NULL) {
			size_t n = (size_t)(e - f->rbuf);
			snprintf(out, cap, "%.*s", (int)n, f->rbuf);
			fake_consume(f, n + 2);
			return 0;
		}
		if (fake_read_more(f, FAKE_IO_TIMEOUT_MS) <= 0)
			return -1;
	}
	return -1;
}

/* The body up to CRLF "." CRLF (or "." CRLF first), streamed into f->body. */
static int fake_body(struct fake *f)
{
	f->body_len = 0;
	f->bodies++;
	double deadline = now_s() + FAKE_IO_TIMEOUT_MS / 1000.0;
	for (;;) {
		if (f->body_len + f->rlen > FAKE_BUF_MAX)
			return -1;
		size_t before = f->body_len;
		memcpy(f->body + f->body_len, f->rbuf, f->rlen);
		f->body_len += f->rlen;
		f->rlen = 0;
		if (f->body_len >= 3 && memcmp(f->body, ".\r\n", 3) == 0) {
			memcpy(f->rbuf, f->body + 3, f->body_len - 3);
			f->rlen = f->body_len - 3;
			f->body_len = 0;
			return 0;
		}
		size_t from = before >= 4 ? before - 4 : 0;
		char *t = memmem(f->body + from, f->body_len - from, "\r\n.\r\n", 5);
		if (t != NULL) {
			size_t end = (size_t)(t - f->body) + 5;
			memcpy(f->rbuf, f->body + end, f->body_len - end);
			f->rlen = f->body_len - end;
			f->body_len = end - 3;
			return 0;
		}
		if (now_s() > deadline || fake_read_more(f, FAKE_IO_TIMEOUT_MS) <= 0)
			return -1;
	}
}

static void fake_close_conn(struct fake *f)
{
	if (f->ssl != NULL) {
		SSL_free(f->ssl);
		f->ssl = NULL;
	}
	if (f->fd >= 0) {
		close(f->fd);
		f->fd = -1;
	}
	f->rlen = 0;
}

static int fake_accept(struct fake *f)
{
	struct pollfd p = {f->lfd, POLLIN, 0};
	if (poll(&p, 1, FAKE_IO_TIMEOUT_MS) <= 0)
		return -1;
	f->fd = accept(f->lfd, NULL, NULL);
	if (f->fd < 0)
		return -1;
	/* Bounds blocking TLS reads and writes too. */
	struct timeval tv = {FAKE_IO_TIMEOUT_MS / 1000, 0};
	setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(f->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return 0;
}

static void fake_step(struct fake *f, int i, const char *st)
{
	char line[8192];
	if (strncmp(st, "S:", 2) == 0) {
		char out[8200];
		int n = snprintf(out, sizeof(out), "%s\r\n", st + 2);
		if (fake_send(f, out, (size_t)n) < 0)
			fake_error(f, "step %d: cannot send '%s'", i, st);
	} else if (strncmp(st, "R:", 2) == 0) {
		if (fake_send(f, st + 2, strlen(st + 2)) < 0)
			fake_error(f, "step %d: cannot send raw", i);
	} else if (strncmp(st, "C:", 2) == 0 || strncmp(st, "C~", 2) == 0) {
		if (fake_line(f, line, sizeof(line)) < 0) {
			fake_error(f, "step %d: no line, expected '%s'", i, st + 2);
			return;
		}
		int ok = st[1] == ':' ? strcmp(line, st + 2) == 0
		                      : strncmp(line, st + 2, strlen(st + 2)) == 0;
		if (!ok)
			fake_error(f, "step %d: expected '%s', got '%s'", i, st + 2, line);
	} else if (strcmp(st, "BODY") == 0) {
		if (fake_body(f) < 0)
			fake_error(f, "step %d: no complete body", i);
	} else if (strcmp(st, "TLS") == 0) {
		f->ssl = SSL_new(f->ctx);
		if (f->ssl == NULL || SSL_set_fd(f->ssl, f->fd) != 1 || SSL_accept(f->ssl) != 1) {
			char e[256];
			ERR_error_string_n(ERR_get_error(), e, sizeof(e));
			fake_error(f, "step %d: TLS accept failed: %s", i, e);
		}
	} else if (strncmp(st, "QUIET:", 6) == 0) {
		if (f->rlen > 0) {
			fake_error(f, "step %d: client sent more than asked: '%.*s'", i,
			           (int)f->rlen, f->rbuf);
			return;
		}
		int r = fake_read_more(f, atoi(st + 6));
		if (r != -1)
			fake_error(f, "step %d: client did not wait for a reply: '%.*s'", i,
			           (int)f->rlen, f->rbuf);
	} else if (strncmp(st, "SLEEP:", 6) == 0) {
		usleep((useconds_t)atoi(st + 6) * 1000);
	} else if (strcmp(st, "HANG") == 0) {
		double deadline = now_s() + 10;
		f->rlen = 0;
		while (now_s() < deadline && fake_read_more(f, 200) != 0)
			f->rlen = 0;
	} else if (strcmp(st, "EOF") == 0) {
		/* Whatever the client still sends, it must then close. */
		int r = 1;
		double deadline = now_s() + FAKE_IO_TIMEOUT_MS / 1000.0;
		while (r > 0 && now_s() < deadline) {
			f->rlen = 0;
			r = fake_read_more(f, FAKE_IO_TIMEOUT_MS);
		}
		if (r != 0)
			fake_error(f, "step %d: the client did not close", i);
	} else if (strncmp(st, "DRAIN:", 6) == 0) {
		double deadline = now_s() + FAKE_IO_TIMEOUT_MS / 1000.0;
		int r = 1;
		while (r > 0 && now_s() < deadline) {
			f->rlen = 0;
			r = fake_read_more(f, atoi(st + 6));
		}
	} else if (strcmp(st, "ACCEPT") == 0) {
		fake_close_conn(f);
		if (fake_accept(f) < 0)
			fake_error(f, "step %d: no second connection", i);
	} else {
		fake_error(f, "step %d: bad script step '%s'", i, st);
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	if (fake_accept(f) < 0) {
		fake_error(f, "no connection");
	} else {
		for (int i = 0; f->script[i] != NULL && f->err[0] == '\0'; i++)
			fake_step(f, i, f->script[i]);
	}
	fake_close_conn(f);
	atomic_store(&f->finished, 1);
	return NULL;
}

static struct fake *fake_start(const char *const *script, SSL_CTX *ctx)
{
	struct fake *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->got = malloc(FAKE_BUF_MAX);
	f->body = malloc(FAKE_BUF_MAX);
	assert_non_null(f->got);
	assert_non_null(f->body);
	f->script = script;
	f->ctx = ctx;
	f->fd = -1;
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sin, &sl), 0);
	f->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
	return f;
}

/* Joins the thread; the script must have run without error. */
static void fake_finish(struct fake *f)
{
	pthread_join(f->th, NULL);
	close(f->lfd);
	if (f->err[0] != '\0')
		fail_msg("fake server: %s\nclient sent:\n%.*s", f->err,
		         (int)(f->got_len > 3000 ? 3000 : f->got_len), f->got);
}

static void fake_free(struct fake *f)
{
	free(f->got);
	free(f->body);
	free(f);
}

/* ---- the client side ---- */

struct fixture {
	char dir[64];
	char cert[256];
	char key[256];
	char log[256];
	SSL_CTX *server_ctx;
	SSL_CTX *client_ctx;       /* system trust only: the fake's cert does not verify */
	SSL_CTX *client_ctx_trust; /* trusts the fake's self-signed cert */
	int n_files;
};

static struct fixture *fx;

struct run {
	struct event_base *base;
	struct smtp_client *c;
	struct smtp_client_msg *msgs[4];
	int n_msgs;
	int next;
	int results[4];
	int n_results;
	enum smtp_client_event events[4];
	int n_events;
	struct smtp_client_failure failure;
	struct smtp_client_info info;
	int ready_seen;
	int failure_seen;
	int finished;
	int quit_on_failure; /* smtp_client_quit() instead of smtp_client_free() */
	int stay_idle;       /* after the messages: wait for CLOSED instead of QUIT */
	int send_rc;
};

static void run_next(struct run *r);

static void run_event(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	struct run *r = arg;
	assert_ptr_equal(c, r->c);
	if (r->n_events < 4)
		r->events[r->n_events++] = ev;
	r->info = *smtp_client_info(c);
	if (ev == SMTP_CLIENT_READY) {
		r->ready_seen = 1;
		assert_true(smtp_client_is_ready(c));
		run_next(r);
		return;
	}
	r->failure = *smtp_client_failure(c);
	r->failure_seen = 1;
	assert_string_equal(smtp_client_error(c), r->failure.why);
	if (r->quit_on_failure)
		smtp_client_quit(&r->c);
	else
		smtp_client_free(&r->c);
	assert_null(r->c);
	r->finished = 1;
}

static void run_done(struct smtp_client *c, struct smtp_client_msg *m, int result, void *arg)
{
	struct run *r = arg;
	assert_ptr_equal(c, r->c);
	assert_ptr_equal(m, r->msgs[r->n_results]);
	r->results[r->n_results++] = result;
	r->info = *smtp_client_info(c);
	for (int i = 0; i < m->n_rcpts; i++) {
		int cls = m->rcpts[i].code / 100;
		assert_true(cls == 2 || cls == 4 || cls == 5);
	}
	if (result == SMTP_CLIENT_SENT && smtp_client_is_ready(c)) {
		run_next(r);
		return;
	}
	r->failure = *smtp_client_failure(c);
	r->failure_seen = 1;
	smtp_client_free(&r->c);
	r->finished = 1;
}

static void run_next(struct run *r)
{
	if (r->next < r->n_msgs) {
		struct smtp_client_msg *m = r->msgs[r->next++];
		r->send_rc = smtp_client_send(r->c, m, run_done, r);
		assert_int_equal(r->send_rc, 0);
		/* Not ready while a message is under way. */
		assert_false(smtp_client_is_ready(r->c));
		return;
	}
	if (r->stay_idle)
		return;
	smtp_client_quit(&r->c);
	r->finished = 1;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

static struct smtp_client_settings default_settings(void)
{
	struct smtp_client_settings s = {
	    .helo = "client.test",
	    .tls = SMTP_CLIENT_TLS_NONE,
	    .ssl_ctx = fx->client_ctx,
	    .tls_name = "localhost",
	    .connect_timeout = 5,
	    .greeting_timeout = 5,
	    .command_timeout = 5,
	    .data_timeout = 5,
	    .data_end_timeout = 5,
	};
	return s;
}

/* Connects to port and runs the loop until the run finished, the client is gone and
 * the fake server (if any) is done; bounded by RUN_MAX_SECONDS.  Returns the time it
 * took. */
static double run_client(struct run *r, int port, const struct smtp_client_settings *set,
                         struct fake *f)
{
	r->base = event_base_new();
	assert_non_null(r->base);
	struct event *tick = event_new(r->base, -1, EV_PERSIST, tick_cb, NULL);
	struct timeval tv = {0, 20000};
	event_add(tick, &tv);
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	                          .sin_port = htons((uint16_t)port)};
	double t0 = now_s();
	r->c =
	    smtp_client_connect(r->base, (struct sockaddr *)&sin, sizeof(sin), set, run_event, r);
	assert_non_null(r->c);
	/* Never a callback from inside the call. */
	assert_int_equal(r->n_events, 0);
	for (int guard = 0; guard < 100000 && now_s() - t0 < RUN_MAX_SECONDS; guard++) {
		if (r->finished && r->c == NULL && (f == NULL || atomic_load(&f->finished)) &&
		    event_base_get_num_events(r->base, EVENT_BASE_COUNT_ADDED) <= 1)
			break;
		event_base_loop(r->base, EVLOOP_ONCE);
	}
	double took = now_s() - t0;
	assert_true(r->finished);
	/* The client freed itself (after QUIT) or was freed: only the tick is left. */
	assert_int_equal(event_base_get_num_events(r->base, EVENT_BASE_COUNT_ADDED), 1);
	event_free(tick);
	event_base_free(r->base);
	return took;
}

/* A message file with content data; returns an open fd. */
static int msg_file(const char *data, size_t len)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/msg%d", fx->dir, fx->n_files++);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		assert_true(w > 0);
		off += (size_t)w;
	}
	return fd;
}

static void msg_init(struct smtp_client_msg *m, struct smtp_client_rcpt *rc, int n,
                     const char *body)
{
	memset(m, 0, sizeof(*m));
	m->from = "a@example.org";
	m->rcpts = rc;
	m->n_rcpts = n;
	m->fd = msg_file(body, strlen(body));
	m->offset = 0;
	m->len = (off_t)strlen(body);
}

static void msg_deinit(struct smtp_client_msg *m)
{
	close(m->fd);
}

static char *read_log(void)
{
	FILE *fp = fopen(fx->log, "r");
	assert_non_null(fp);
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

/* ---- tests ---- */

#define EHLO_BASIC "S:220 fake.test ESMTP", "C:EHLO client.test"

static void test_pipelining(void **state)
{
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test hello",
	    "S:250-PIPELINING",
	    "S:250-SIZE 100000",
	    "S:250-ENHANCEDSTATUSCODES",
	    "S:250 8BITMIME",
	    /* The server answers nothing before it has MAIL, both RCPTs and DATA:
	     * a client that waited for the MAIL reply would time out here. */
	    "C:MAIL FROM:<a@example.org> SIZE=20 BODY=8BITMIME",
	    "C:RCPT TO:<b@example.net>",
	    "C:RCPT TO:<c@example.net>",
	    "C:DATA",
	    "S:250 2.1.0 Ok",
	    "S:250 2.1.5 Ok",
	    "S:250 2.1.5 Ok",
	    "S:354 End data with <CR><LF>.<CR><LF>",
	    "BODY",
	    "S:250 2.0.0 Ok: queued as ABC",
	    "C:QUIT",
	    "S:221 2.0.0 Bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	/* DSN parameters are given but the server has no DSN: they must not go out. */
	struct smtp_client_rcpt rc[2] = {
	    {.addr = "b@example.net",
	     .orcpt = "rfc822;b@example.net",
	     .notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE},
	    {.addr = "c@example.net", .notify = SMTP_NOTIFY_NEVER},
	};
	struct smtp_client_msg m;
	msg_init(&m, rc, 2, "Subject: x\r\n\r\nhi\xc3\xbc\r\n");
	m.body_8bit = 1;
	m.ret = 1;
	m.envid = "env1";
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);

	assert_int_equal(r.n_results, 1);
	assert_int_equal(r.results[0], SMTP_CLIENT_SENT);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rc[i].code, 250);
		assert_string_equal(rc[i].enhanced, "2.0.0");
		assert_string_equal(rc[i].text, "Ok: queued as ABC");
	}
	assert_true(r.ready_seen);
	assert_true(r.info.esmtp);
	assert_true(r.info.pipelining);
	assert_true(r.info.size_ext);
	assert_int_equal(r.info.max_size, 100000);
	assert_true(r.info.eightbitmime);
	assert_true(r.info.enhanced_codes);
	assert_false(r.info.dsn);
	assert_false(r.info.smtputf8);
	assert_string_equal(r.info.remote_name, "fake.test");
	assert_string_equal(r.info.tls_desc, "");
	assert_int_equal(r.info.messages, 1);
	assert_int_equal(f->body_len, 20);
	assert_memory_equal(f->body, "Subject: x\r\n\r\nhi\xc3\xbc\r\n", 20);
	msg_deinit(&m);
	fake_free(f);
}

static void test_no_pipelining(void **state)
{
	/* Without PIPELINING every command waits for its reply (QUIET checks that
	 * nothing else arrives meanwhile). */
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 SIZE",
	    "C:MAIL FROM:<a@example.org> SIZE=3",
	    "QUIET:150",
	    "S:250 ok",
	    "C:RCPT TO:<b@example.net>",
	    "QUIET:150",
	    "S:250 ok",
	    "C:RCPT TO:<c@example.net>",
	    "QUIET:150",
	    "S:250 ok",
	    "C:DATA",
	    "QUIET:150",
	    "S:354 go",
	    "BODY",
	    "S:250 done",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc[2] = {{.addr = "b@example.net"}, {.addr = "c@example.net"}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 2, ".\r\n"); /* a lone dot: stuffed to "..\r\n" */
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.results[0], SMTP_CLIENT_SENT);
	assert_int_equal(rc[0].code, 250);
	assert_int_equal(rc[1].code, 250);
	assert_string_equal(rc[1].text, "done");
	assert_true(r.info.size_ext);
	assert_int_equal(r.info.max_size, 0);
	assert_int_equal(f->body_len, 4);
	assert_memory_equal(f->body, "..\r\n", 4);
	msg_deinit(&m);
	fake_free(f);
}

static void test_helo_fallback(void **state)
{
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:502 5.5.1 EHLO not implemented",
	    "C:HELO client.test",
	    "S:250 old.fake.test",
	    /* No extensions: no SIZE, and 8-bit goes out without BODY= (documented). */
	    "C:MAIL FROM:<a@example.org>",
	    "S:250 ok",
	    "C:RCPT TO:<b@example.net>",
	    "S:250 ok",
	    "C:DATA",
	    "S:354 go",
	    "BODY",
	    "S:250 ok",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc[1] = {{.addr = "b@example.net", .notify = SMTP_NOTIFY_DELAY}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 1, "8bit \xe9\r\n");
	m.body_8bit = 1;
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	set.tls = SMTP_CLIENT_TLS_OPPORTUNISTIC; /* no STARTTLS after HELO: cleartext */
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.results[0], SMTP_CLIENT_SENT);
	assert_int_equal(rc[0].code, 250);
	assert_false(r.info.esmtp);
	assert_string_equal(r.info.remote_name, "old.fake.test");
	assert_non_null(strstr(read_log(), "event=8bit_without_8bitmime"));
	msg_deinit(&m);
	fake_free(f);
}

static void test_size_refused_without_sending(void **state)
{
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250-PIPELINING",
	    "S:250 SIZE 10",
	    /* Nothing of the message: the next thing is QUIT. */
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc[2] = {{.addr = "b@example.net"}, {.addr = "c@example.net"}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 2, "this message is longer than ten octets\r\n");
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.results[0], SMTP_CLIENT_SENT);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rc[i].code, 552);
		assert_string_equal(rc[i].enhanced, "5.3.4");
		assert_non_null(strstr(rc[i].text, "SIZE"));
	}
	msg_deinit(&m);
	fake_free(f);
}

static void test_smtputf8(void **state)
{
	/* Not offered: refused permanently, nothing sent. */
	static const char *const script1[] = {
	    EHLO_BASIC, "S:250-fake.test", "S:250 8BITMIME", "C:QUIT", "S:221 bye", NULL,
	};
	struct fake *f = fake_start(script1, NULL);
	struct smtp_client_rcpt rc[1] = {{.addr = "b@example.net"}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 1, "x\r\n");
	m.smtputf8 = 1;
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(rc[0].code, 553);
	assert_string_equal(rc[0].enhanced, "5.6.7");
	assert_string_equal(rc[0].text, "SMTPUTF8 not supported by the remote");
	msg_deinit(&m);
	fake_free(f);

	/* Offered: the parameter goes out, also for a UTF-8 address without the flag. */
	static const char *const script2[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250-8BITMIME",
	    "S:250 SMTPUTF8",
	    "C:MAIL FROM:<\xc3\xbc@example.org> SMTPUTF8",
	    "S:250 ok",
	    "C:RCPT TO:<b@example.net>",
	    "S:250 ok",
	    "C:DATA",
	    "S:354 go",
	    "BODY",
	    "S:250 ok",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	f = fake_start(script2, NULL);
	struct smtp_client_rcpt rc2[1] = {{.addr = "b@example.net"}};
	msg_init(&m, rc2, 1, "x\r\n");
	m.from = "\xc3\xbc@example.org";
	struct run r2 = {.msgs = {&m}, .n_msgs = 1};
	run_client(&r2, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(rc2[0].code, 250);
	assert_true(r2.info.smtputf8);
	msg_deinit(&m);
	fake_free(f);
}

static void test_dsn_params(void **state)
{
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250-PIPELINING",
	    "S:250 DSN",
	    "C:MAIL FROM:<> RET=HDRS ENVID=id+2B1+3D",
	    "C:RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.net",
	    "C:RCPT TO:<c@example.net> NOTIFY=NEVER",
	    "C:RCPT TO:<d@example.net> ORCPT=rfc822;orig@example.net",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:250 ok",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    "S:250 ok",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc[3] = {
	    {.addr = "b@example.net",
	     .orcpt = "rfc822;b+x@example.net",
	     .notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE},
	    {.addr = "c@example.net", .orcpt = "", .notify = SMTP_NOTIFY_NEVER},
	    {.addr = "d@example.net", .orcpt = "orig@example.net"},
	};
	struct smtp_client_msg m;
	msg_init(&m, rc, 3, "");
	m.from = "";
	m.ret = 2;
	m.envid = "id+1=";
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.results[0], SMTP_CLIENT_SENT);
	assert_true(r.info.dsn);
	for (int i = 0; i < 3; i++)
		assert_int_equal(rc[i].code, 250);
	/* The empty message: "." right away. */
	assert_int_equal(f->body_len, 0);
	msg_deinit(&m);
	fake_free(f);
}

/* The stuffing rule written another way: split at CRLF, double a leading dot, join;
 * a last line without CRLF gets one. */
static size_t reference_stuff(const char *in, size_t len, char *out)
{
	size_t o = 0, i = 0;
	while (i < len) {
		const char *e = memmem(in + i, len - i, "\r\n", 2);
		size_t n = e ? (size_t)(e - (in + i)) : len - i;
		if (n > 0 && in[i] == '.')
			out[o++] = '.';
		memcpy(out + o, in + i, n);
		o += n;
		out[o++] = '\r';
		out[o++] = '\n';
		i += n + (e ? 2 : 0);
	}
	return o;
}

static void test_dot_stuffing(void **state)
{
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 PIPELINING",
	    /* 1: dots, no final CRLF */
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    "S:250 ok 1",
	    /* 2: bare LF and CR normalised */
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    "S:250 ok 2",
	    /* 3: large, read in chunks as the output drains */
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    "S:250 ok 3",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc1[1] = {{.addr = "b@example.net"}};
	struct smtp_client_rcpt rc2[1] = {{.addr = "b@example.net"}};
	struct smtp_client_rcpt rc3[1] = {{.addr = "b@example.net"}};
	struct smtp_client_msg m1, m2, m3;

	/* A file with junk around the message: only [offset, offset + len) is sent. */
	static const char m1_file[] =
	    "JUNK\r\nSubject: t\r\n\r\n.\r\n..two\r\n.end.\r\nTRAILER\r\n";
	static const char m1_text[] = "Subject: t\r\n\r\n.\r\n..two\r\n.end";
	msg_init(&m1, rc1, 1, m1_file);
	m1.offset = 6;
	m1.len = (off_t)strlen(m1_text);
	msg_init(&m2, rc2, 1, "a\nb\rc\r\r\n.\n.\rlast\r");

	/* 300 KiB of lines, many starting with dots, a line over 1000 octets. */
	size_t big_cap = 300 * 1024;
	char *big = malloc(big_cap + 1);
	char *expect = malloc(2 * big_cap + 16);
	assert_non_null(big);
	assert_non_null(expect);
	size_t o = 0;
	for (int line = 0; line < 100000; line++) {
		size_t n = line % 97 == 0 ? 1500 : (size_t)(line % 70);
		if (o + n + 2 > big_cap)
			break;
		for (size_t k = 0; k < n; k++)
			big[o++] = (k == 0 && line % 3 == 0) ? '.' : (char)('a' + (line + k) % 26);
		big[o++] = '\r';
		big[o++] = '\n';
	}
	size_t big_len = o;
	big[big_len] = '\0';
	memset(&m3, 0, sizeof(m3));
	m3.from = "a@example.org";
	m3.rcpts = rc3;
	m3.n_rcpts = 1;
	m3.fd = msg_file(big, big_len);
	m3.len = (off_t)big_len;

	struct run r = {.msgs = {&m1, &m2, &m3}, .n_msgs = 3};
	struct smtp_client_settings set = default_settings();

	/* Check each body as it arrives: the fake keeps only the last one, so run the
	 * three through one connection and compare the last, and the first two through
	 * the transcript. */
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.n_results, 3);
	assert_string_equal(rc1[0].text, "ok 1");
	assert_string_equal(rc2[0].text, "ok 2");
	assert_string_equal(rc3[0].text, "ok 3");
	assert_int_equal(f->bodies, 3);
	assert_int_equal(r.info.messages, 3);

	static const char want1[] = "DATA\r\nSubject: t\r\n\r\n..\r\n...two\r\n..end\r\n.\r\n";
	static const char want2[] = "DATA\r\na\r\nb\r\nc\r\n\r\n..\r\n..\r\nlast\r\n.\r\n";
	assert_non_null(memmem(f->got, f->got_len, want1, sizeof(want1) - 1));
	assert_non_null(memmem(f->got, f->got_len, want2, sizeof(want2) - 1));

	size_t elen = reference_stuff(big, big_len, expect);
	assert_int_equal(f->body_len, elen);
	assert_memory_equal(f->body, expect, elen);

	/* The reference agrees on the first message too. */
	char e1[200];
	size_t e1len = reference_stuff(m1_text, strlen(m1_text), e1);
	assert_int_equal(e1len + 6 + 3, sizeof(want1) - 1);
	assert_memory_equal(want1 + 6, e1, e1len);

	free(big);
	free(expect);
	msg_deinit(&m1);
	msg_deinit(&m2);
	msg_deinit(&m3);
	fake_free(f);
}

static void test_rcpt_mixed_and_data_5xx(void **state)
{
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 PIPELINING",
	    /* 1: one RCPT 4xx, the others 2xx, then delivered */
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:RCPT TO:<c@example.net>",
	    "C:RCPT TO:<d@example.net>",
	    "C:DATA",
	    "S:250 2.1.0 ok",
	    "S:250 2.1.5 ok",
	    "S:450-4.2.1 mailbox busy",
	    "S:450 4.2.1 try later",
	    "S:550 5.1.1 no such user",
	    "S:354 go",
	    "BODY",
	    "S:250 2.0.0 queued",
	    /* 2: DATA refused: RSET before the next message */
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:554 5.7.1 not today",
	    "C:RSET",
	    "S:250 ok",
	    /* 3: the end of data refused: RSET too */
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    "S:552 5.3.4 too big after all",
	    "C:RSET",
	    "S:250 ok",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc1[3] = {
	    {.addr = "b@example.net"}, {.addr = "c@example.net"}, {.addr = "d@example.net"}};
	struct smtp_client_rcpt rc2[1] = {{.addr = "b@example.net"}};
	struct smtp_client_rcpt rc3[1] = {{.addr = "b@example.net"}};
	struct smtp_client_msg m1, m2, m3;
	msg_init(&m1, rc1, 3, "one\r\n");
	msg_init(&m2, rc2, 1, "two\r\n");
	msg_init(&m3, rc3, 1, "three\r\n");
	struct run r = {.msgs = {&m1, &m2, &m3}, .n_msgs = 3};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.n_results, 3);
	assert_int_equal(rc1[0].code, 250);
	assert_string_equal(rc1[0].text, "queued");
	assert_int_equal(rc1[1].code, 450);
	assert_string_equal(rc1[1].enhanced, "4.2.1");
	assert_string_equal(rc1[1].text, "mailbox busy try later");
	assert_int_equal(rc1[2].code, 550);
	assert_string_equal(rc1[2].enhanced, "5.1.1");
	assert_int_equal(rc2[0].code, 554);
	assert_string_equal(rc2[0].text, "not today");
	assert_int_equal(rc3[0].code, 552);
	assert_int_equal(r.info.messages, 3);
	/* The 4xx/5xx replies are logged with the recipient. */
	assert_non_null(strstr(read_log(), "stage=RCPT rcpt=<c@example.net> code=450"));
	msg_deinit(&m1);
	msg_deinit(&m2);
	msg_deinit(&m3);
	fake_free(f);
}

static void test_all_rcpts_refused(void **state)
{
	/* Pipelined: every RCPT refused, and the server still says 354 to DATA (RFC
	 * 2920 3.1): "." alone, then RSET; then a second message with MAIL refused. */
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 PIPELINING",
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:550 5.1.1 unknown",
	    "S:354 go ahead anyway",
	    "C:.",
	    "S:554 5.5.1 no valid recipients",
	    "C:RSET",
	    "S:250 ok",
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:RCPT TO:<c@example.net>",
	    "C:DATA",
	    "S:451 4.3.0 sender check failed",
	    "S:503 5.5.1 need MAIL",
	    "S:503 5.5.1 need MAIL",
	    "S:503 5.5.1 need MAIL",
	    "C:RSET",
	    "S:250 ok",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc1[1] = {{.addr = "b@example.net"}};
	struct smtp_client_rcpt rc2[2] = {{.addr = "b@example.net"}, {.addr = "c@example.net"}};
	struct smtp_client_msg m1, m2;
	msg_init(&m1, rc1, 1, "x\r\n");
	msg_init(&m2, rc2, 2, "y\r\n");
	struct run r = {.msgs = {&m1, &m2}, .n_msgs = 2};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.n_results, 2);
	assert_int_equal(rc1[0].code, 550);
	/* MAIL's reply for every recipient. */
	assert_int_equal(rc2[0].code, 451);
	assert_int_equal(rc2[1].code, 451);
	assert_string_equal(rc2[1].text, "sender check failed");
	assert_int_equal(r.info.messages, 2);
	msg_deinit(&m1);
	msg_deinit(&m2);
	fake_free(f);
}

static void test_starttls_opportunistic(void **state)
{
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250-SIZE 1000",
	    "S:250 STARTTLS",
	    "C:STARTTLS",
	    "S:220 2.0.0 go ahead",
	    "TLS",
	    "C:EHLO client.test",
	    "S:250-fake.test over tls",
	    "S:250 PIPELINING",
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    "S:250 ok",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, fx->server_ctx);
	struct smtp_client_rcpt rc[1] = {{.addr = "b@example.net"}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 1, "secret body\r\n");
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	set.tls = SMTP_CLIENT_TLS_OPPORTUNISTIC;
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(rc[0].code, 250);
	assert_non_null(strstr(r.info.tls_desc, "version=TLSv1."));
	assert_int_equal(r.info.tls_verified, 0);
	assert_non_null(strstr(r.info.verify_error, "self"));
	/* What was learnt before TLS is forgotten (RFC 3207 4.2). */
	assert_false(r.info.size_ext);
	assert_false(r.info.starttls);
	assert_true(r.info.pipelining);
	assert_string_equal(r.info.remote_name, "fake.test");
	assert_non_null(strstr(read_log(), "event=tls version=TLSv1."));
	msg_deinit(&m);
	fake_free(f);
}

static void test_starttls_verified_and_required(void **state)
{
	/* Trusting the fake's certificate: verified for its name. */
	static const char *const script[] = {
	    EHLO_BASIC, "S:250-fake.test",    "S:250 STARTTLS",  "C:STARTTLS", "S:220 go ahead",
	    "TLS",      "C:EHLO client.test", "S:250 fake.test", "C:QUIT",     "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, fx->server_ctx);
	struct run r = {0};
	struct smtp_client_settings set = default_settings();
	set.tls = SMTP_CLIENT_TLS_REQUIRED;
	set.ssl_ctx = fx->client_ctx_trust;
	set.tls_verify = 1;
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_true(r.ready_seen);
	assert_int_equal(r.info.tls_verified, 1);
	assert_string_equal(r.info.verify_error, "");
	fake_free(f);

	/* The same certificate for another name: tls_verify fails the connection. */
	static const char *const script2[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 STARTTLS",
	    "C:STARTTLS",
	    "S:220 go ahead",
	    "TLS",
	    "EOF",
	    NULL,
	};
	f = fake_start(script2, fx->server_ctx);
	struct run r2 = {0};
	set.tls_name = "mx.other.test";
	run_client(&r2, f->port, &set, f);
	fake_finish(f);
	assert_false(r2.ready_seen);
	assert_int_equal(r2.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r2.failure.temporary, 1);
	assert_int_equal(r2.failure.retry_without_tls, 0);
	assert_non_null(strstr(r2.failure.why, "does not verify"));
	fake_free(f);

	/* Required but not offered: temporary failure, and QUIT is still said. */
	static const char *const script3[] = {
	    EHLO_BASIC, "S:250 fake.test", "C:QUIT", "S:221 bye", NULL,
	};
	f = fake_start(script3, NULL);
	struct run r3 = {.quit_on_failure = 1};
	set = default_settings();
	set.tls = SMTP_CLIENT_TLS_REQUIRED;
	run_client(&r3, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r3.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r3.failure.temporary, 1);
	assert_non_null(strstr(r3.failure.why, "STARTTLS"));
	fake_free(f);

	/* Required and refused by the server: temporary failure. */
	static const char *const script4[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 STARTTLS",
	    "C:STARTTLS",
	    "S:454 4.7.0 TLS not available",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	f = fake_start(script4, NULL);
	struct run r4 = {.quit_on_failure = 1};
	run_client(&r4, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r4.failure.temporary, 1);
	assert_int_equal(r4.failure.code, 454);
	assert_string_equal(r4.failure.stage, "STARTTLS");
	fake_free(f);

	/* Opportunistic and refused: goes on in cleartext. */
	static const char *const script5[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 STARTTLS",
	    "C:STARTTLS",
	    "S:454 4.7.0 TLS not available",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	f = fake_start(script5, NULL);
	struct run r5 = {0};
	set.tls = SMTP_CLIENT_TLS_OPPORTUNISTIC;
	run_client(&r5, f->port, &set, f);
	fake_finish(f);
	assert_true(r5.ready_seen);
	assert_string_equal(r5.info.tls_desc, "");
	fake_free(f);
}

static void test_starttls_handshake_fails(void **state)
{
	/* 220 to STARTTLS, then no TLS: opportunistic mode says "retry in cleartext". */
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 STARTTLS",
	    "C:STARTTLS",
	    "S:220 go ahead",
	    "SLEEP:50",
	    "R:this is not TLS at all\r\n",
	    "EOF",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct run r = {0};
	struct smtp_client_settings set = default_settings();
	set.tls = SMTP_CLIENT_TLS_OPPORTUNISTIC;
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r.failure.temporary, 1);
	assert_int_equal(r.failure.retry_without_tls, 1);
	assert_non_null(strstr(r.failure.why, "TLS handshake failed"));
	fake_free(f);

	/* Data sent right after the 220 (before the handshake) is an injection attempt
	 * (RFC 3207 6), not the start of TLS. */
	static const char *const script2[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 STARTTLS",
	    "C:STARTTLS",
	    "R:220 go ahead\r\n250 injected\r\n",
	    "EOF",
	    NULL,
	};
	f = fake_start(script2, NULL);
	struct run r2 = {0};
	run_client(&r2, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r2.events[0], SMTP_CLIENT_FAILED);
	assert_non_null(strstr(r2.failure.why, "unsolicited data after the reply to STARTTLS"));
	assert_int_equal(r2.failure.retry_without_tls, 0);
	fake_free(f);
}

static void test_implicit_tls(void **state)
{
	static const char *const script[] = {
	    "TLS", EHLO_BASIC, "S:250-fake.test", "S:250 STARTTLS", "C:QUIT", "S:221 bye", NULL,
	};
	struct fake *f = fake_start(script, fx->server_ctx);
	struct run r = {0};
	struct smtp_client_settings set = default_settings();
	set.tls = SMTP_CLIENT_TLS_IMPLICIT;
	set.ssl_ctx = fx->client_ctx_trust;
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_true(r.ready_seen);
	assert_int_equal(r.info.tls_verified, 1);
	assert_non_null(strstr(r.info.tls_desc, "cipher="));
	fake_free(f);
}

static void test_auth(void **state)
{
	/* PLAIN after STARTTLS.  "AHVzZXIAc2VjcmV0IXB3" is "\0user\0secret!pw". */
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250-AUTH LOGIN",
	    "S:250 STARTTLS",
	    "C:STARTTLS",
	    "S:220 go ahead",
	    "TLS",
	    "C:EHLO client.test",
	    "S:250-fake.test",
	    "S:250 AUTH PLAIN LOGIN",
	    "C:AUTH PLAIN AHVzZXIAc2VjcmV0IXB3",
	    "S:235 2.7.0 Authentication successful",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, fx->server_ctx);
	struct run r = {0};
	struct smtp_client_settings set = default_settings();
	set.tls = SMTP_CLIENT_TLS_REQUIRED;
	set.auth_user = "user";
	set.auth_password = "secret!pw";
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_true(r.ready_seen);
	assert_true(r.info.authenticated);
	assert_true(r.info.auth_plain);
	fake_free(f);

	/* LOGIN when PLAIN is not offered (old-style "AUTH=" too), in cleartext
	 * when allowed. */
	static const char *const script2[] = {
	    EHLO_BASIC,           "S:250-fake.test", "S:250 AUTH=LOGIN",   "C:AUTH LOGIN",
	    "S:334 VXNlcm5hbWU6", "C:dXNlcg==",      "S:334 UGFzc3dvcmQ6", "C:c2VjcmV0IXB3",
	    "S:235 ok",           "C:QUIT",          "S:221 bye",          NULL,
	};
	f = fake_start(script2, NULL);
	struct run r2 = {0};
	set = default_settings();
	set.auth_user = "user";
	set.auth_password = "secret!pw";
	set.auth_allow_plaintext = 1;
	run_client(&r2, f->port, &set, f);
	fake_finish(f);
	assert_true(r2.ready_seen);
	assert_true(r2.info.authenticated);
	assert_true(r2.info.auth_login);
	assert_false(r2.info.auth_plain);
	fake_free(f);

	/* Refused: permanent for 5xx, and QUIT is still said. */
	static const char *const script3[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 AUTH PLAIN",
	    "C:AUTH PLAIN AHVzZXIAc2VjcmV0IXB3",
	    "S:535 5.7.8 Authentication credentials invalid",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	f = fake_start(script3, NULL);
	struct run r3 = {.quit_on_failure = 1};
	run_client(&r3, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r3.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r3.failure.temporary, 0);
	assert_int_equal(r3.failure.code, 535);
	assert_string_equal(r3.failure.enhanced, "5.7.8");
	assert_string_equal(r3.failure.stage, "AUTH");
	fake_free(f);

	/* Without TLS and without permission: the password is not sent. */
	static const char *const script4[] = {
	    EHLO_BASIC, "S:250-fake.test", "S:250 AUTH PLAIN", "C:QUIT", "S:221 bye", NULL,
	};
	f = fake_start(script4, NULL);
	struct run r4 = {.quit_on_failure = 1};
	set.auth_allow_plaintext = 0;
	run_client(&r4, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r4.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r4.failure.temporary, 1);
	assert_non_null(strstr(r4.failure.why, "not encrypted"));
	assert_null(memmem(f->got, f->got_len, "AUTH", 4));
	fake_free(f);

	/* The password never reaches the log, neither plain nor encoded. */
	const char *log = read_log();
	assert_null(strstr(log, "secret!pw"));
	assert_null(strstr(log, "c2VjcmV0IXB3"));
	assert_null(strstr(log, "AHVzZXIAc2VjcmV0IXB3"));
}

static void test_bad_greetings(void **state)
{
	struct smtp_client_settings set = default_settings();

	/* Garbage. */
	static const char *const s1[] = {"R:HTTP/1.1 400 Bad Request\r\n", "EOF", NULL};
	struct fake *f = fake_start(s1, NULL);
	struct run r1 = {0};
	run_client(&r1, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r1.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r1.failure.temporary, 1);
	assert_string_equal(r1.failure.stage, "greeting");
	assert_non_null(strstr(r1.failure.why, "protocol error"));
	fake_free(f);

	/* A line that never ends. */
	static char longline[6000];
	memset(longline, 'x', sizeof(longline) - 1);
	memcpy(longline, "R:220 ", 6);
	static const char *const s2[] = {longline, "EOF", NULL};
	f = fake_start(s2, NULL);
	struct run r2 = {0};
	run_client(&r2, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r2.failure.temporary, 1);
	assert_non_null(strstr(r2.failure.why, "reply line too long"));
	fake_free(f);

	/* A code that changes in the middle of a multi-line greeting. */
	static const char *const s3[] = {"S:220-fake.test", "S:250 surprise", "EOF", NULL};
	f = fake_start(s3, NULL);
	struct run r3 = {0};
	run_client(&r3, f->port, &set, f);
	fake_finish(f);
	assert_non_null(strstr(r3.failure.why, "reply code differs"));
	fake_free(f);

	/* 554 instead of 220: permanent, and QUIT is said (RFC 5321 3.1). */
	static const char *const s4[] = {"S:554 5.7.1 go away", "C:QUIT", "S:221 bye", NULL};
	f = fake_start(s4, NULL);
	struct run r4 = {.quit_on_failure = 1};
	run_client(&r4, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r4.failure.temporary, 0);
	assert_int_equal(r4.failure.code, 554);
	assert_string_equal(r4.failure.text, "go away");
	fake_free(f);

	/* 421: temporary, and the connection is simply closed. */
	static const char *const s5[] = {"S:421 4.3.2 busy", "EOF", NULL};
	f = fake_start(s5, NULL);
	struct run r5 = {.quit_on_failure = 1};
	run_client(&r5, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r5.failure.temporary, 1);
	assert_int_equal(r5.failure.code, 421);
	fake_free(f);

	/* Two replies for one: the second would be taken for the EHLO reply. */
	static const char *const s6[] = {"R:220 hi\r\n250 extra\r\n", "EOF", NULL};
	f = fake_start(s6, NULL);
	struct run r6 = {0};
	run_client(&r6, f->port, &set, f);
	fake_finish(f);
	assert_non_null(strstr(r6.failure.why, "unsolicited"));
	fake_free(f);

	/* EHLO refused with 4xx: temporary. */
	static const char *const s7[] = {EHLO_BASIC, "S:451 4.3.0 later", "C:QUIT", "S:221 bye",
	                                 NULL};
	f = fake_start(s7, NULL);
	struct run r7 = {.quit_on_failure = 1};
	run_client(&r7, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r7.failure.temporary, 1);
	assert_string_equal(r7.failure.stage, "EHLO");
	fake_free(f);
}

static void test_timeouts(void **state)
{
	struct smtp_client_settings set = default_settings();
	set.greeting_timeout = 1;
	set.command_timeout = 1;
	set.data_end_timeout = 1;

	/* No greeting. */
	static const char *const s1[] = {"HANG", NULL};
	struct fake *f = fake_start(s1, NULL);
	struct run r1 = {0};
	double took = run_client(&r1, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r1.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r1.failure.temporary, 1);
	assert_string_equal(r1.failure.why, "no greeting within 1 s");
	assert_true(took < 5);
	fake_free(f);

	/* No reply to RCPT, in a transaction: done with BROKEN, 4xx for everyone. */
	static const char *const s2[] = {
	    EHLO_BASIC, "S:250 fake.test",           "C:MAIL FROM:<a@example.org>",
	    "S:250 ok", "C:RCPT TO:<b@example.net>", "HANG",
	    NULL,
	};
	f = fake_start(s2, NULL);
	struct smtp_client_rcpt rc[1] = {{.addr = "b@example.net"}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 1, "x\r\n");
	struct run r2 = {.msgs = {&m}, .n_msgs = 1};
	took = run_client(&r2, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r2.results[0], SMTP_CLIENT_BROKEN);
	assert_int_equal(rc[0].code, 451);
	assert_string_equal(rc[0].enhanced, "4.4.2");
	assert_non_null(strstr(rc[0].text, "no reply to RCPT"));
	assert_true(took < 5);
	msg_deinit(&m);
	fake_free(f);

	/* No reply after the end of data: temporary, and the text says why a copy may
	 * arrive twice. */
	static const char *const s3[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 PIPELINING",
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    "HANG",
	    NULL,
	};
	f = fake_start(s3, NULL);
	struct smtp_client_rcpt rc3[1] = {{.addr = "b@example.net"}};
	msg_init(&m, rc3, 1, "x\r\n");
	struct run r3 = {.msgs = {&m}, .n_msgs = 1};
	took = run_client(&r3, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r3.results[0], SMTP_CLIENT_BROKEN);
	assert_int_equal(rc3[0].code, 451);
	assert_non_null(strstr(rc3[0].text, "may have been delivered"));
	assert_string_equal(r3.failure.stage, "end-of-data");
	assert_true(took < 5);
	msg_deinit(&m);
	fake_free(f);
}

static void test_connection_lost(void **state)
{
	struct smtp_client_settings set = default_settings();

	/* Closed right after the body: the message may have arrived. */
	static const char *const s1[] = {
	    EHLO_BASIC,
	    "S:250-fake.test",
	    "S:250 PIPELINING",
	    "C:MAIL FROM:<a@example.org>",
	    "C:RCPT TO:<b@example.net>",
	    "C:RCPT TO:<c@example.net>",
	    "C:DATA",
	    "S:250 ok",
	    "S:550 no",
	    "S:250 ok",
	    "S:354 go",
	    "BODY",
	    NULL,
	};
	struct fake *f = fake_start(s1, NULL);
	struct smtp_client_rcpt rc[2] = {{.addr = "b@example.net"}, {.addr = "c@example.net"}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 2, "x\r\n");
	struct run r1 = {.msgs = {&m}, .n_msgs = 1};
	run_client(&r1, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r1.results[0], SMTP_CLIENT_BROKEN);
	assert_int_equal(rc[0].code, 550); /* final already */
	assert_int_equal(rc[1].code, 451);
	assert_non_null(strstr(rc[1].text, "may have been delivered"));
	msg_deinit(&m);
	fake_free(f);

	/* 421 to a RCPT: the reply becomes every open recipient's answer. */
	static const char *const s2[] = {
	    EHLO_BASIC,
	    "S:250 fake.test",
	    "C:MAIL FROM:<a@example.org>",
	    "S:250 ok",
	    "C:RCPT TO:<b@example.net>",
	    "S:421 4.4.2 shutting down",
	    "EOF",
	    NULL,
	};
	f = fake_start(s2, NULL);
	struct smtp_client_rcpt rc2[2] = {{.addr = "b@example.net"}, {.addr = "c@example.net"}};
	msg_init(&m, rc2, 2, "x\r\n");
	struct run r2 = {.msgs = {&m}, .n_msgs = 1};
	run_client(&r2, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r2.results[0], SMTP_CLIENT_BROKEN);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rc2[i].code, 421);
		assert_string_equal(rc2[i].text, "shutting down");
	}
	msg_deinit(&m);
	fake_free(f);

	/* An idle connection the server closes: CLOSED. */
	static const char *const s3[] = {
	    EHLO_BASIC, "S:250 fake.test", "SLEEP:100", "S:421 4.4.2 idle too long", NULL,
	};
	f = fake_start(s3, NULL);
	struct run r3 = {.stay_idle = 1};
	run_client(&r3, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(r3.n_events, 2);
	assert_int_equal(r3.events[0], SMTP_CLIENT_READY);
	assert_int_equal(r3.events[1], SMTP_CLIENT_CLOSED);
	assert_int_equal(r3.failure.code, 421);
	assert_string_equal(r3.failure.stage, "idle");
	fake_free(f);

	/* Garbage, or nothing, in reply to QUIT: the client still goes away (run_client
	 * checks that no event of it is left). */
	static const char *const s4[] = {
	    EHLO_BASIC, "S:250 fake.test", "C:QUIT", "R:garbage\r\n", "EOF", NULL};
	f = fake_start(s4, NULL);
	struct run r4 = {0};
	run_client(&r4, f->port, &set, f);
	fake_finish(f);
	assert_true(r4.ready_seen);
	fake_free(f);
	static const char *const s5[] = {EHLO_BASIC, "S:250 fake.test", "C:QUIT", "HANG", NULL};
	f = fake_start(s5, NULL);
	struct run r5 = {0};
	set.command_timeout = 1;
	double took = run_client(&r5, f->port, &set, f);
	fake_finish(f);
	assert_true(r5.ready_seen);
	assert_true(took < 5);
	fake_free(f);
}

static void test_connect_refused(void **state)
{
	/* A port nobody listens on: bound, then closed. */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
	close(s);
	struct run r = {0};
	struct smtp_client_settings set = default_settings();
	double took = run_client(&r, ntohs(sin.sin_port), &set, NULL);
	assert_int_equal(r.n_events, 1);
	assert_int_equal(r.events[0], SMTP_CLIENT_FAILED);
	assert_int_equal(r.failure.temporary, 1);
	assert_string_equal(r.failure.stage, "connect");
	assert_non_null(strstr(r.failure.why, "refused"));
	assert_true(took < 5);
}

static void test_api_misuse(void **state)
{
	struct event_base *base = event_base_new();
	struct sockaddr_in sin = {
	    .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(9)};
	struct smtp_client_settings set = default_settings();
	struct run r = {0};
	set.helo = "bad name";
	assert_null(
	    smtp_client_connect(base, (struct sockaddr *)&sin, sizeof(sin), &set, run_event, &r));
	set.helo = "ok\r\nRSET";
	assert_null(
	    smtp_client_connect(base, (struct sockaddr *)&sin, sizeof(sin), &set, run_event, &r));
	set = default_settings();
	set.tls = SMTP_CLIENT_TLS_OPPORTUNISTIC;
	set.ssl_ctx = NULL;
	assert_null(
	    smtp_client_connect(base, (struct sockaddr *)&sin, sizeof(sin), &set, run_event, &r));

	/* Not READY: send refuses; free right away never calls back. */
	set = default_settings();
	struct smtp_client *c =
	    smtp_client_connect(base, (struct sockaddr *)&sin, sizeof(sin), &set, run_event, &r);
	assert_non_null(c);
	struct smtp_client_rcpt rc[1] = {{.addr = "b@example.net"}};
	struct smtp_client_msg m = {.from = "a@b", .rcpts = rc, .n_rcpts = 1, .fd = -1};
	assert_int_equal(smtp_client_send(c, &m, run_done, &r), -1);
	assert_false(smtp_client_is_ready(c));
	smtp_client_free(&c);
	assert_null(c);
	smtp_client_free(&c);
	smtp_client_quit(&c);
	for (int i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(r.n_events, 0);
	assert_int_equal(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
	event_base_free(base);
}

static void test_bad_addresses(void **state)
{
	/* A recipient with a line break is refused locally; the others go. */
	static const char *const script[] = {
	    EHLO_BASIC,
	    "S:250 fake.test",
	    "C:MAIL FROM:<a@example.org>",
	    "S:250 ok",
	    "C:RCPT TO:<c@example.net>",
	    "S:250 ok",
	    "C:DATA",
	    "S:354 go",
	    "BODY",
	    "S:250 ok",
	    "C:QUIT",
	    "S:221 bye",
	    NULL,
	};
	struct fake *f = fake_start(script, NULL);
	struct smtp_client_rcpt rc[2] = {{.addr = "b@example.net>\r\nRSET"},
	                                 {.addr = "c@example.net"}};
	struct smtp_client_msg m;
	msg_init(&m, rc, 2, "x\r\n");
	struct run r = {.msgs = {&m}, .n_msgs = 1};
	struct smtp_client_settings set = default_settings();
	run_client(&r, f->port, &set, f);
	fake_finish(f);
	assert_int_equal(rc[0].code, 501);
	assert_int_equal(rc[1].code, 250);
	msg_deinit(&m);
	fake_free(f);
}

/* Random server talk after EHLO, and in the middle of a pipelined transaction: every
 * run must end in exactly one outcome (FAILED, or READY then a done with a 2xx/4xx/5xx
 * per recipient), bounded in time, without a crash (run under ASan in CI). */
static void test_random_replies(void **state)
{
	static const char *const tokens[] = {
	    "250",        "250-",       "250 ",   "220 ",       "354 ",   "421 ",
	    "450 ",       "550-5.1.1 ", "5.7.1 ", "PIPELINING", "SIZE 9", "STARTTLS",
	    "AUTH PLAIN", "\r\n",       "\r\n",   "\n",         "\r",     "x",
	    " ",          "-",          "\xff",   "\x01",
	};
	const size_t n_tokens = sizeof(tokens) / sizeof(tokens[0]);
	unsigned seed = 12345;
	struct smtp_client_settings set = default_settings();
	set.greeting_timeout = 1;
	set.command_timeout = 1;
	set.data_timeout = 1;
	set.data_end_timeout = 1;
	for (int it = 0; it < 40; it++) {
		static char blob[2][600];
		char *b = blob[it & 1];
		size_t o = 2;
		memcpy(b, "R:", 2);
		int n = 1 + (int)(rand_r(&seed) % 30);
		for (int k = 0; k < n && o + 20 < sizeof(blob[0]); k++)
			o += (size_t)snprintf(b + o, sizeof(blob[0]) - o, "%s",
			                      tokens[rand_r(&seed) % n_tokens]);
		b[o] = '\0';
		int in_txn = it % 2;
		const char *script_a[] = {EHLO_BASIC, b, "DRAIN:200", NULL};
		const char *script_b[] = {EHLO_BASIC,
		                          "S:250-fake.test",
		                          "S:250 PIPELINING",
		                          "C~MAIL FROM:",
		                          "C~RCPT TO:",
		                          "C:DATA",
		                          b,
		                          "DRAIN:200",
		                          NULL};
		struct fake *f = fake_start(in_txn ? script_b : script_a, NULL);
		struct smtp_client_rcpt rc[1] = {{.addr = "b@example.net"}};
		struct smtp_client_msg m;
		msg_init(&m, rc, 1, "random\r\n");
		struct run r = {.msgs = {&m}, .n_msgs = in_txn};
		double took = run_client(&r, f->port, &set, f);
		fake_finish(f);
		assert_true(took < 8);
		if (r.ready_seen) {
			assert_int_equal(r.events[0], SMTP_CLIENT_READY);
			assert_int_equal(r.n_results, in_txn);
		} else {
			assert_int_equal(r.n_events, 1);
			assert_int_equal(r.events[0], SMTP_CLIENT_FAILED);
			assert_true(r.failure.why[0] != '\0');
			assert_int_equal(r.n_results, 0);
		}
		msg_deinit(&m);
		fake_free(f);
	}
}

/* ---- setup ---- */

static int group_setup(void **state)
{
	/* As in the daemon: a peer that hangs up must not kill the writer (OpenSSL
	 * writes with write(2), which raises SIGPIPE). */
	signal(SIGPIPE, SIG_IGN);
	fx = calloc(1, sizeof(*fx));
	if (fx == NULL || test_tmpdir_new(fx->dir, sizeof(fx->dir), "smtp-client") < 0)
		return -1;
	snprintf(fx->cert, sizeof(fx->cert), "%s/cert.pem", fx->dir);
	snprintf(fx->key, sizeof(fx->key), "%s/key.pem", fx->dir);
	snprintf(fx->log, sizeof(fx->log), "%s/log", fx->dir);
	const char *err = NULL;
	if (log_open(fx->log, LOG_LEVEL_DEBUG, &err) < 0)
		return -1;
	if (tls_selfsigned_ensure(fx->cert, fx->key, "localhost", &err) < 0)
		return -1;
	fx->server_ctx = tls_server_ctx_new(fx->cert, fx->key, &err);
	fx->client_ctx = tls_client_ctx_new(&err);
	fx->client_ctx_trust = tls_client_ctx_new(&err);
	if (fx->server_ctx == NULL || fx->client_ctx == NULL || fx->client_ctx_trust == NULL)
		return -1;
	if (SSL_CTX_load_verify_locations(fx->client_ctx_trust, fx->cert, NULL) != 1)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	SSL_CTX_free(fx->server_ctx);
	SSL_CTX_free(fx->client_ctx);
	SSL_CTX_free(fx->client_ctx_trust);
	if (getenv("TERN_TEST_KEEP") == NULL)
		test_rm_rf(fx->dir);
	else
		fprintf(stderr, "kept %s\n", fx->dir);
	free(fx);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pipelining),
	    cmocka_unit_test(test_no_pipelining),
	    cmocka_unit_test(test_helo_fallback),
	    cmocka_unit_test(test_size_refused_without_sending),
	    cmocka_unit_test(test_smtputf8),
	    cmocka_unit_test(test_dsn_params),
	    cmocka_unit_test(test_dot_stuffing),
	    cmocka_unit_test(test_rcpt_mixed_and_data_5xx),
	    cmocka_unit_test(test_all_rcpts_refused),
	    cmocka_unit_test(test_starttls_opportunistic),
	    cmocka_unit_test(test_starttls_verified_and_required),
	    cmocka_unit_test(test_starttls_handshake_fails),
	    cmocka_unit_test(test_implicit_tls),
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_bad_greetings),
	    cmocka_unit_test(test_timeouts),
	    cmocka_unit_test(test_connection_lost),
	    cmocka_unit_test(test_connect_refused),
	    cmocka_unit_test(test_api_misuse),
	    cmocka_unit_test(test_bad_addresses),
	    cmocka_unit_test(test_random_replies),
	};
	return cmocka_run_group_tests_name("smtp/smtp_client", tests, group_setup, group_teardown);
}
