/* Connections: a line-echo engine on a loopback listener, driven by a client socket in
 * the same thread (the loop is turned by hand).  Covers the greeting, pipelined lines,
 * conn_close from inside the input callback, close after output, per-IP limits, a TLS
 * ClientHello on a cleartext port, pause/resume, long output in steps (drained) and a
 * drain for shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "event/conn.h"

#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct echo_session {
	struct conn *c;
	int big_left; /* bytes of the long answer still to write */
	struct event *resume_ev;
};

static struct event_base *base;
static struct conn_server *srv;
static int port;
static int n_open, n_closed, n_drained_calls, n_shutdown, drain_done;
static char last_reason[64];

static void echo_input(void *session);

static void echo_big_step(struct echo_session *s)
{
	if (s->big_left == 0)
		return;
	char chunk[8192];
	memset(chunk, 'x', sizeof(chunk));
	while (s->big_left > 0 && conn_output_pending(s->c) < 64 * 1024) {
		int n = s->big_left < (int)sizeof(chunk) ? s->big_left : (int)sizeof(chunk);
		conn_write(s->c, chunk, (size_t)n);
		s->big_left -= n;
	}
	if (s->big_left == 0) {
		conn_write(s->c, "\r\nEND\r\n", 7);
		echo_input(s); /* what was pipelined behind BIG */
	}
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_session *s = arg;
	conn_write(s->c, "RESUMED\r\n", 9);
	conn_resume(s->c);
}

static void *echo_open(void *ctx, struct conn *c)
{
	struct echo_session *s = calloc(1, sizeof(*s));
	s->c = c;
	s->resume_ev = evtimer_new(base, resume_cb, s);
	n_open++;
	conn_write(c, "HELLO\r\n", 7);
	return s;
}

static void echo_input(void *session)
{
	struct echo_session *s = session;
	for (;;) {
		if (s->big_left > 0)
			return; /* output in progress */
		struct slice in = conn_input(s->c);
		const char *nl = memchr(in.p, '\n', in.len);
		if (nl == NULL)
			return;
		size_t n = (size_t)(nl - in.p) + 1;
		char line[256];
		size_t ll = n < sizeof(line) ? n : sizeof(line) - 1;
		memcpy(line, in.p, ll);
		line[ll] = '\0';
		conn_consume(s->c, n);
		if (strncmp(line, "QUIT", 4) == 0) {
			conn_write(s->c, "BYE\r\n", 5);
			conn_close_after_output(s->c, "quit");
			return;
		}
		if (strncmp(line, "KILL", 4) == 0) {
			conn_close(s->c, "killed");
			conn_write(s->c, "ignored\r\n", 9); /* harmless after close */
			return;
		}
		if (strncmp(line, "PAUSE", 5) == 0) {
			conn_pause(s->c);
			struct timeval tv = {0, 20000};
			evtimer_add(s->resume_ev, &tv);
			return;
		}
		if (strncmp(line, "BIG", 3) == 0) {
			s->big_left = 1024 * 1024;
			echo_big_step(s);
			continue;
		}
		conn_write(s->c, "ECHO ", 5);
		conn_write(s->c, line, ll);
	}
}

static void echo_drained(void *session)
{
	struct echo_session *s = session;
	n_drained_calls++;
	echo_big_step(s);
}

static void echo_shutdown(void *session)
{
	struct echo_session *s = session;
	n_shutdown++;
	conn_write(s->c, "SHUTDOWN\r\n", 10);
	conn_close_after_output(s->c, "shutdown");
}

static void echo_closed(void *session, const char *reason)
{
	struct echo_session *s = session;
	n_closed++;
	snprintf(last_reason, sizeof(last_reason), "%s", reason);
	event_free(s->resume_ev);
	free(s);
}

static const struct conn_handler handler = {
    .open = echo_open,
    .input = echo_input,
    .drained = echo_drained,
    .shutdown = echo_shutdown,
    .closed = echo_closed,
    .limit_reply = "LIMIT\r\n",
    .timeout_reply = "TIMEOUT\r\n",
};

static int setup(void **state)
{
	(void)state;
	log_open(getenv("CONN_TEST_LOG") ? "-" : "/dev/null", LOG_LEVEL_DEBUG, NULL);
	base = event_base_new();
	struct conn_settings set = {
	    .proto = "test",
	    .max_connections = 10,
	    .max_connections_per_ip = 3,
	    .input_max = 4096,
	    .output_max = 64 * 1024,
	    .timeout = 30,
	};
	srv = conn_server_new(base, &set, NULL, &handler);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 16) != 0)
		return -1;
	socklen_t sl = sizeof(sin);
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	port = ntohs(sin.sin_port);
	n_open = n_closed = n_drained_calls = n_shutdown = drain_done = 0;
	last_reason[0] = '\0';
	return conn_server_listen(srv, fd, 0, "test");
}

static int teardown(void **state)
{
	(void)state;
	conn_server_free(&srv);
	event_base_free(base);
	return 0;
}

static int client_connect(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

static void turn(int n)
{
	for (int i = 0; i < n; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Reads until want is seen (or EOF when want is NULL); turns the loop meanwhile.
 * Returns the bytes read into out. */
static size_t client_read(int fd, char *out, size_t cap, const char *want, int *eof_r)
{
	size_t len = 0;
	*eof_r = 0;
	for (int i = 0; i < 20000; i++) {
		turn(1);
		ssize_t r = recv(fd, out + len, cap - 1 - len, MSG_DONTWAIT);
		if (r == 0) {
			*eof_r = 1;
			break;
		}
		if (r > 0) {
			len += (size_t)r;
			out[len] = '\0';
			if (want != NULL && strstr(out, want) != NULL)
				break;
			if (len + 1 >= cap)
				break;
		} else if (errno != EAGAIN) {
			*eof_r = 1;
			break;
		} else {
			usleep(100);
		}
	}
	out[len] = '\0';
	return len;
}

static void test_echo_and_quit(void **state)
{
	int fd = client_connect(), eof;
	char buf[4096];
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	assert_string_equal(buf, "HELLO\r\n");
	const char *pipelined = "one\r\ntwo\r\nQUIT\r\nthree\r\n";
	assert_int_equal(send(fd, pipelined, strlen(pipelined), 0), (ssize_t)strlen(pipelined));
	client_read(fd, buf, sizeof(buf), NULL, &eof);
	assert_true(eof);
	assert_string_equal(buf, "ECHO one\r\nECHO two\r\nBYE\r\n");
	turn(5);
	assert_int_equal(n_closed, 1);
	assert_string_equal(last_reason, "quit");
	assert_int_equal(conn_server_count(srv), 0);
	close(fd);
}

static void test_close_inside_input(void **state)
{
	int fd = client_connect(), eof;
	char buf[4096];
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	send(fd, "a\r\nKILL\r\nb\r\n", 12, 0);
	client_read(fd, buf, sizeof(buf), NULL, &eof);
	assert_true(eof);
	turn(5);
	assert_int_equal(n_closed, 1);
	assert_string_equal(last_reason, "killed");
	close(fd);
}

static void test_peer_gone(void **state)
{
	int fd = client_connect(), eof;
	char buf[64];
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	close(fd);
	for (int i = 0; i < 1000 && n_closed == 0; i++) {
		turn(1);
		usleep(100);
	}
	assert_int_equal(n_closed, 1);
	assert_string_equal(last_reason, "eof");
}

static void test_per_ip_limit(void **state)
{
	int fds[4], eof;
	char buf[64];
	for (int i = 0; i < 3; i++) {
		fds[i] = client_connect();
		client_read(fds[i], buf, sizeof(buf), "HELLO\r\n", &eof);
		assert_string_equal(buf, "HELLO\r\n");
	}
	fds[3] = client_connect();
	client_read(fds[3], buf, sizeof(buf), NULL, &eof);
	assert_true(eof);
	assert_string_equal(buf, "LIMIT\r\n");
	assert_int_equal(conn_server_count(srv), 3);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	for (int i = 0; i < 1000 && conn_server_count(srv) > 0; i++) {
		turn(1);
		usleep(100);
	}
	assert_int_equal(conn_server_count(srv), 0);
	/* The slots are free again. */
	int fd = client_connect();
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	assert_string_equal(buf, "HELLO\r\n");
	close(fd);
}

static void test_client_hello_on_plain_port(void **state)
{
	int fd = client_connect(), eof;
	char buf[64];
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	const unsigned char hello[] = {0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00};
	send(fd, hello, sizeof(hello), 0);
	client_read(fd, buf, sizeof(buf), NULL, &eof);
	assert_true(eof);
	turn(5);
	assert_string_equal(last_reason, "tls_on_plain_port");
	close(fd);
}

static void test_pause_resume(void **state)
{
	int fd = client_connect(), eof;
	char buf[256];
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	send(fd, "PAUSE\r\nafter\r\n", 14, 0);
	client_read(fd, buf, sizeof(buf), "ECHO after\r\n", &eof);
	assert_string_equal(buf, "RESUMED\r\nECHO after\r\n");
	close(fd);
}

static void test_long_output_in_steps(void **state)
{
	int fd = client_connect(), eof;
	char buf[64];
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	send(fd, "BIG\r\nx\r\n", 8, 0);
	size_t total = 0;
	char *big = malloc(2 * 1024 * 1024);
	for (int i = 0; i < 200000; i++) {
		turn(1);
		ssize_t r = recv(fd, big + total, 2 * 1024 * 1024 - 1 - total, MSG_DONTWAIT);
		if (r > 0)
			total += (size_t)r;
		big[total] = '\0';
		if (total > 12 && strstr(big + total - 12, "ECHO x\r\n") != NULL)
			break;
		if (r <= 0)
			usleep(50);
	}
	assert_int_equal(total, 1024 * 1024 + 7 + 8);
	assert_true(n_drained_calls > 0);
	assert_memory_equal(big + 1024 * 1024, "\r\nEND\r\nECHO x\r\n", 15);
	free(big);
	close(fd);
}

static void on_drain_done(void *arg)
{
	drain_done = 1;
}

static void test_drain(void **state)
{
	int fd = client_connect(), eof;
	char buf[64];
	client_read(fd, buf, sizeof(buf), "HELLO\r\n", &eof);
	conn_server_drain(srv, 0, on_drain_done, NULL);
	assert_int_equal(n_shutdown, 1);
	client_read(fd, buf, sizeof(buf), NULL, &eof);
	assert_true(eof);
	assert_string_equal(buf, "SHUTDOWN\r\n");
	turn(5);
	assert_true(drain_done);
	assert_int_equal(n_closed, 1);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_echo_and_quit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_inside_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peer_gone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_per_ip_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_hello_on_plain_port, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_output_in_steps, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
