/* dns: lookups against a real DNS server (Debian's unbound daemon, started here on a
 * free loopback port with local-data records and never recursing outward), plus the
 * MX RDATA parser and the name check on crafted input.  The machine's own resolver is
 * never asked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "dns/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UNBOUND_BIN "/usr/sbin/unbound"

struct fixture {
	char dir[64];
	pid_t unbound;
	char server[32];    /* the test DNS: "127.0.0.1@PORT" */
	char blackhole[32]; /* a bound UDP port that never answers */
	int blackhole_fd;
	struct event_base *base;
	struct event *tick; /* so that EVLOOP_ONCE always returns soon */
};

static struct fixture fx;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A loopback port free for both UDP and TCP right now (unbound listens on both). */
static int free_port(void)
{
	for (int tries = 0; tries < 20; tries++) {
		struct sockaddr_in sin = { .sin_family = AF_INET };
		socklen_t sl = sizeof(sin);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		if (u < 0 || bind(u, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
		    getsockname(u, (struct sockaddr *)&sin, &sl) < 0) {
			if (u >= 0)
				close(u);
			continue;
		}
		int t = socket(AF_INET, SOCK_STREAM, 0);
		int ok = t >= 0 && bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		if (t >= 0)
			close(t);
		close(u);
		if (ok)
			return ntohs(sin.sin_port);
	}
	return -1;
}

/* Sends one raw query for ready.test/A and waits up to 200 ms for any answer: a
 * readiness probe that does not go through libunbound (whose infrastructure cache
 * would remember a server that was not up yet). */
static int probe(int port)
{
	static const unsigned char q[] = {
		0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, /* id, RD, one question */
		5, 'r', 'e', 'a', 'd', 'y', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
	};
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		return 0;
	int ok = 0;
	if (connect(s, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    send(s, q, sizeof(q), 0) == (ssize_t)sizeof(q)) {
		struct pollfd pfd = { .fd = s, .events = POLLIN };
		unsigned char buf[512];
		if (poll(&pfd, 1, 200) == 1) {
			ssize_t n = recv(s, buf, sizeof(buf), 0);
			ok = n >= 12 && buf[0] == 0x12 && buf[1] == 0x34;
		}
	}
	close(s);
	return ok;
}

static int write_config(const char *path, int port, int dead_port)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fprintf(f,
		"server:\n"
		"\tinterface: 127.0.0.1\n"
		"\tport: %d\n"
		"\tdo-daemonize: no\n"
		"\tusername: \"\"\n"
		"\tchroot: \"\"\n"
		"\tdirectory: \"%s\"\n"
		"\tpidfile: \"\"\n"
		"\tuse-syslog: no\n"
		"\tlogfile: \"\"\n"
		"\tverbosity: 1\n"
		"\tdo-ip6: no\n"
		"\tnum-threads: 1\n"
		"\tmodule-config: \"iterator\"\n"
		/* Answer everything from here: unknown names are NXDOMAIN. */
		"\tlocal-zone: \".\" static\n"
		/* Resolved through a forward zone to a dead port: SERVFAIL. */
		"\tlocal-zone: \"fail.test.\" transparent\n"
		"\tlocal-zone: \"refused.test.\" refuse\n"
		/* A from local data, every other type forwarded to the dead port. */
		"\tlocal-zone: \"partial.test.\" typetransparent\n"
		"\tlocal-data: \"partial.test. A 192.0.2.7\"\n"
		"\tlocal-data: \"ready.test. A 127.0.0.1\"\n"
		"\tlocal-data: \"two.test. MX 20 mx2.two.test.\"\n"
		"\tlocal-data: \"two.test. MX 10 MX1.Two.Test.\"\n"
		"\tlocal-data: \"mx1.two.test. A 192.0.2.21\"\n"
		"\tlocal-data: \"equal.test. MX 10 a.equal.test.\"\n"
		"\tlocal-data: \"equal.test. MX 10 b.equal.test.\"\n"
		"\tlocal-data: \"equal.test. MX 10 c.equal.test.\"\n"
		"\tlocal-data: \"equal.test. MX 5 first.equal.test.\"\n"
		"\tlocal-data: \"null.test. MX 0 .\"\n"
		"\tlocal-data: \"mixnull.test. MX 0 .\"\n"
		"\tlocal-data: \"mixnull.test. MX 10 mx.mixnull.test.\"\n"
		"\tlocal-data: \"addronly.test. A 192.0.2.10\"\n"
		"\tlocal-data: \"addronly.test. AAAA 2001:db8::10\"\n"
		"\tlocal-data: \"host.test. A 192.0.2.1\"\n"
		"\tlocal-data: \"host.test. AAAA 2001:db8::1\"\n"
		"\tlocal-data: \"v4only.test. A 192.0.2.4\"\n",
		port, fx.dir);
	/* More records than the result arrays hold. */
	for (int i = 1; i <= 40; i++) {
		fprintf(f, "\tlocal-data: \"many.test. MX %d m%d.many.test.\"\n", 41 - i, i);
		fprintf(f, "\tlocal-data: \"manyaddr.test. A 192.0.2.%d\"\n", i);
		fprintf(f, "\tlocal-data: \"manyaddr.test. AAAA 2001:db8::%x\"\n", i);
	}
	fprintf(f, "forward-zone:\n\tname: \"fail.test.\"\n\tforward-addr: 127.0.0.1@%d\n",
		dead_port);
	fprintf(f, "forward-zone:\n\tname: \"partial.test.\"\n\tforward-addr: 127.0.0.1@%d\n",
		dead_port);
	return fclose(f) == 0 ? 0 : -1;
}

static void stop_unbound(void)
{
	if (fx.unbound <= 0)
		return;
	kill(fx.unbound, SIGTERM);
	for (int i = 0; i < 300; i++) {
		if (waitpid(fx.unbound, NULL, WNOHANG) == fx.unbound) {
			fx.unbound = 0;
			return;
		}
		usleep(10000);
	}
	kill(fx.unbound, SIGKILL);
	waitpid(fx.unbound, NULL, 0);
	fx.unbound = 0;
}

/* Starts unbound on a free port and waits (10 s at most) until it answers. */
static int start_unbound(void)
{
	char conf[128], logpath[128];
	snprintf(conf, sizeof(conf), "%s/unbound.conf", fx.dir);
	snprintf(logpath, sizeof(logpath), "%s/unbound.log", fx.dir);
	for (int attempt = 0; attempt < 3; attempt++) {
		int port = free_port(), dead = free_port();
		if (port < 0 || dead < 0 || port == dead || write_config(conf, port, dead) < 0)
			continue;
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
			execl(UNBOUND_BIN, "unbound", "-d", "-c", conf, (char *)NULL);
			_exit(127);
		}
		fx.unbound = pid;
		long long deadline = now_ms() + 10000;
		while (now_ms() < deadline) {
			if (waitpid(pid, NULL, WNOHANG) == pid) {
				fx.unbound = 0; /* died: port taken meanwhile? try another */
				break;
			}
			if (probe(port)) {
				snprintf(fx.server, sizeof(fx.server), "127.0.0.1@%d", port);
				return 0;
			}
		}
		stop_unbound();
	}
	return -1;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

static int group_setup(void **state)
{
	memset(&fx, 0, sizeof(fx));
	fx.blackhole_fd = -1;
	if (access(UNBOUND_BIN, X_OK) != 0) {
		fprintf(stderr, "dns_test: %s missing (apt-get install unbound)\n", UNBOUND_BIN);
		return -1;
	}
	if (test_tmpdir_new(fx.dir, sizeof(fx.dir), "dns") < 0)
		return -1;
	if (start_unbound() < 0) {
		fprintf(stderr, "dns_test: unbound did not start, see %s/unbound.log\n", fx.dir);
		return -1;
	}
	/* Bound and never read: queries sent there vanish, with no ICMP error either. */
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fx.blackhole_fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fx.blackhole_fd < 0 || bind(fx.blackhole_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    getsockname(fx.blackhole_fd, (struct sockaddr *)&sin, &sl) < 0)
		return -1;
	snprintf(fx.blackhole, sizeof(fx.blackhole), "127.0.0.1@%d", ntohs(sin.sin_port));

	fx.base = event_base_new();
	if (fx.base == NULL)
		return -1;
	fx.tick = event_new(fx.base, -1, EV_PERSIST, tick_cb, NULL);
	struct timeval tv = { 0, 20000 };
	if (fx.tick == NULL || event_add(fx.tick, &tv) < 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	stop_unbound();
	if (fx.tick != NULL)
		event_free(fx.tick);
	if (fx.base != NULL)
		event_base_free(fx.base);
	if (fx.blackhole_fd >= 0)
		close(fx.blackhole_fd);
	if (fx.dir[0] != '\0')
		test_rm_rf(fx.dir);
	return 0;
}

/* Runs the loop until *flag is set or ms have passed; returns *flag. */
static int run_until(const int *flag, int ms)
{
	long long deadline = now_ms() + ms;
	while (!*flag && now_ms() < deadline)
		event_base_loop(fx.base, EVLOOP_ONCE);
	return *flag;
}

static void run_for(int ms)
{
	static const int never = 0;
	run_until(&never, ms);
}

static struct dns_resolver *resolver(const char *server)
{
	const char *error = NULL;
	struct dns_resolver *r = dns_resolver_new(fx.base, server, &error);
	if (r == NULL)
		fail_msg("dns_resolver_new(%s): %s", server ? server : "NULL", error);
	return r;
}

struct mx_wait {
	int calls;
	struct dns_mx_result res;
};

struct addr_wait {
	int calls;
	struct dns_addr_result res;
};

static void mx_done(void *arg, const struct dns_mx_result *res)
{
	struct mx_wait *w = arg;
	w->calls++;
	w->res = *res;
}

static void addr_done(void *arg, const struct dns_addr_result *res)
{
	struct addr_wait *w = arg;
	w->calls++;
	w->res = *res;
}

/* One MX lookup on a fresh resolver pointed at the test DNS. */
static void mx_lookup(const char *domain, struct mx_wait *w)
{
	struct dns_resolver *r = resolver(fx.server);
	memset(w, 0, sizeof(*w));
	assert_non_null(dns_lookup_mx(r, domain, mx_done, w));
	assert_int_equal(w->calls, 0); /* never from inside the call */
	assert_true(run_until(&w->calls, 10000));
	dns_resolver_free(&r);
	assert_null(r);
	assert_int_equal(w->calls, 1);
}

static void addr_lookup(const char *host, struct addr_wait *w)
{
	struct dns_resolver *r = resolver(fx.server);
	memset(w, 0, sizeof(*w));
	assert_non_null(dns_lookup_addrs(r, host, addr_done, w));
	assert_int_equal(w->calls, 0);
	assert_true(run_until(&w->calls, 10000));
	dns_resolver_free(&r);
	assert_int_equal(w->calls, 1);
}

static void check_addr(const struct sockaddr_storage *ss, int family, const char *text)
{
	char buf[INET6_ADDRSTRLEN];
	assert_int_equal(ss->ss_family, family);
	if (family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		assert_int_equal(s6->sin6_port, 0);
		inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		assert_int_equal(s4->sin_port, 0);
		inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf));
	}
	assert_string_equal(buf, text);
}

/* ---- pure functions ---- */

static void test_status_str(void **state)
{
	assert_string_equal(dns_status_str(DNS_OK), "ok");
	assert_string_equal(dns_status_str(DNS_NXDOMAIN), "nxdomain");
	assert_string_equal(dns_status_str(DNS_NODATA), "nodata");
	assert_string_equal(dns_status_str(DNS_TEMPFAIL), "tempfail");
	assert_string_equal(dns_status_str(DNS_NULL_MX), "null-mx");
	assert_string_equal(dns_status_str(DNS_BAD_NAME), "bad-name");
}

/* label(n) repeated with dots, the last label shortened to reach total. */
static void long_name(char *out, size_t total)
{
	size_t o = 0;
	while (o < total) {
		size_t l = total - o > 63 ? 63 : total - o;
		if (total - o > 63 && total - o < 65)
			l = total - o - 2; /* avoid an empty last label */
		memset(out + o, 'a', l);
		o += l;
		if (o < total)
			out[o++] = '.';
	}
	out[o] = '\0';
}

static void test_name_valid(void **state)
{
	static const char *good[] = {
		"example.test", "example.test.", "a", "_dmarc.example.test",
		"xn--bcher-kva.test", "a-b.test", "MX1.Example.TEST", "1.2.3.4",
	};
	static const char *bad[] = {
		"", ".", "..", "a..b", ".a", "a.b..", "b\xc3\xbc" "cher.test", "a b.test", "a@b",
		"exa*mple.test", "tab\t.test", "new\nline.test", "slash/.test",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(dns_name_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(dns_name_valid(bad[i]));

	char name[400];
	memset(name, 'a', 63);
	strcpy(name + 63, ".test");
	assert_true(dns_name_valid(name));
	memset(name, 'a', 64);
	strcpy(name + 64, ".test");
	assert_false(dns_name_valid(name));

	long_name(name, 253);
	assert_int_equal(strlen(name), 253);
	assert_true(dns_name_valid(name));
	strcat(name, ".");
	assert_true(dns_name_valid(name)); /* the trailing dot does not count */
	long_name(name, 254);
	assert_int_equal(strlen(name), 254);
	assert_false(dns_name_valid(name));
	long_name(name, 399);
	assert_false(dns_name_valid(name));
}

static void test_mx_rdata_parse(void **state)
{
	int pref = -1;
	char host[256];

	static const unsigned char ok[] = { 0, 10, 3, 'm', 'x', '1', 4, 't', 'e', 's', 't', 0 };
	assert_int_equal(dns_mx_rdata_parse(ok, sizeof(ok), &pref, host, sizeof(host)), 0);
	assert_int_equal(pref, 10);
	assert_string_equal(host, "mx1.test");

	static const unsigned char upper[] = { 0x12, 0x34, 3, 'M', 'x', '_', 1, '9', 0 };
	assert_int_equal(dns_mx_rdata_parse(upper, sizeof(upper), &pref, host, sizeof(host)), 0);
	assert_int_equal(pref, 0x1234);
	assert_string_equal(host, "mx_.9");

	static const unsigned char root[] = { 0, 0, 0 };
	assert_int_equal(dns_mx_rdata_parse(root, sizeof(root), &pref, host, sizeof(host)), 0);
	assert_int_equal(pref, 0);
	assert_string_equal(host, ".");

	static const unsigned char maxpref[] = { 0xff, 0xff, 1, 'a', 0 };
	assert_int_equal(dns_mx_rdata_parse(maxpref, sizeof(maxpref), &pref, host, 256), 0);
	assert_int_equal(pref, 65535);

	/* Truncated anywhere: every proper prefix of a good record is refused. */
	for (size_t len = 0; len < sizeof(ok); len++) {
		pref = -1;
		assert_int_equal(dns_mx_rdata_parse(ok, len, &pref, host, sizeof(host)), -1);
		assert_int_equal(pref, -1);
		assert_string_equal(host, "");
	}
	assert_int_equal(dns_mx_rdata_parse(NULL, 0, &pref, host, sizeof(host)), -1);

	/* Bytes after the name. */
	static const unsigned char trailing[] = { 0, 10, 1, 'a', 0, 0 };
	assert_int_equal(dns_mx_rdata_parse(trailing, sizeof(trailing), &pref, host, 256), -1);

	/* Compression pointer, alone or after a label; extended label types. */
	static const unsigned char ptr[] = { 0, 10, 0xc0, 0x0c };
	static const unsigned char ptr2[] = { 0, 10, 2, 'm', 'x', 0xc0, 0x0c };
	static const unsigned char ext40[] = { 0, 10, 0x41, 'a', 0 };
	static const unsigned char ext80[] = { 0, 10, 0x81, 'a', 0 };
	assert_int_equal(dns_mx_rdata_parse(ptr, sizeof(ptr), &pref, host, 256), -1);
	assert_int_equal(dns_mx_rdata_parse(ptr2, sizeof(ptr2), &pref, host, 256), -1);
	assert_int_equal(dns_mx_rdata_parse(ext40, sizeof(ext40), &pref, host, 256), -1);
	assert_int_equal(dns_mx_rdata_parse(ext80, sizeof(ext80), &pref, host, 256), -1);

	/* Label of 63 octets is fine, 64 is not (its length byte has 0x40 set). */
	unsigned char big[2 + 1 + 64 + 1];
	big[0] = 0;
	big[1] = 1;
	big[2] = 63;
	memset(big + 3, 'x', 63);
	big[66] = 0;
	assert_int_equal(dns_mx_rdata_parse(big, 67, &pref, host, sizeof(host)), 0);
	assert_int_equal(strlen(host), 63);
	big[2] = 64;
	memset(big + 3, 'x', 64);
	big[67] = 0;
	assert_int_equal(dns_mx_rdata_parse(big, sizeof(big), &pref, host, sizeof(host)), -1);

	/* 255 octets of wire name pass, 257 do not. */
	unsigned char wire[2 + 300];
	size_t w = 2;
	wire[0] = wire[1] = 0;
	for (int i = 0; i < 3; i++) {
		wire[w++] = 63;
		memset(wire + w, 'a' + i, 63);
		w += 63;
	}
	wire[w++] = 61;
	memset(wire + w, 'd', 61);
	w += 61;
	wire[w++] = 0;
	assert_int_equal(w - 2, 255);
	assert_int_equal(dns_mx_rdata_parse(wire, w, &pref, host, sizeof(host)), 0);
	assert_int_equal(strlen(host), 253);
	w = 2;
	for (int i = 0; i < 4; i++) {
		wire[w++] = 63;
		memset(wire + w, 'a' + i, 63);
		w += 63;
	}
	wire[w++] = 0;
	assert_int_equal(dns_mx_rdata_parse(wire, w, &pref, host, sizeof(host)), -1);

	/* Characters no host name has: a dot inside a label, space, NUL, 8-bit. */
	static const unsigned char dot[] = { 0, 10, 3, 'a', '.', 'b', 0 };
	static const unsigned char sp[] = { 0, 10, 3, 'a', ' ', 'b', 0 };
	static const unsigned char nul[] = { 0, 10, 3, 'a', 0, 'b', 0 };
	static const unsigned char high[] = { 0, 10, 2, 0xc3, 0xbc, 0 };
	assert_int_equal(dns_mx_rdata_parse(dot, sizeof(dot), &pref, host, 256), -1);
	assert_int_equal(dns_mx_rdata_parse(sp, sizeof(sp), &pref, host, 256), -1);
	assert_int_equal(dns_mx_rdata_parse(nul, sizeof(nul), &pref, host, 256), -1);
	assert_int_equal(dns_mx_rdata_parse(high, sizeof(high), &pref, host, 256), -1);

	/* The output buffer bounds the name too. */
	assert_int_equal(dns_mx_rdata_parse(ok, sizeof(ok), &pref, host, 9), 0);
	assert_string_equal(host, "mx1.test");
	assert_int_equal(dns_mx_rdata_parse(ok, sizeof(ok), &pref, host, 8), -1);
	assert_int_equal(dns_mx_rdata_parse(ok, sizeof(ok), &pref, host, 4), -1);
	assert_int_equal(dns_mx_rdata_parse(root, sizeof(root), &pref, host, 1), -1);
	assert_int_equal(dns_mx_rdata_parse(ok, sizeof(ok), &pref, host, 0), -1);
}

/* ---- resolver set-up ---- */

static void test_resolver_new(void **state)
{
	const char *error = NULL;
	struct dns_resolver *r;

	static const char *bad[] = { "not-an-address", "127.0.0.1@", "127.0.0.1@99999",
				     "mx.example.test@53", "1.2.3.4.5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		error = NULL;
		r = dns_resolver_new(fx.base, bad[i], &error);
		if (r != NULL)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_non_null(error);
	}
	static const char *good[] = { "::1@5353", "127.0.0.1", "127.0.0.1@53" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		r = resolver(good[i]);
		dns_resolver_free(&r);
		assert_null(r);
	}
	/* The system's configuration: read, but never asked here. */
	if (access("/etc/resolv.conf", R_OK) == 0) {
		r = resolver(NULL);
		dns_resolver_free(&r);
		r = resolver("");
		dns_resolver_free(&r);
	}
	dns_resolver_free(&r); /* NULL-safe */
	struct dns_query *q = NULL;
	dns_cancel(&q);
}

/* ---- MX ---- */

static void test_mx_two_prefs(void **state)
{
	struct mx_wait w;
	mx_lookup("two.test", &w);
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, 2);
	assert_string_equal(w.res.mx[0].host, "mx1.two.test"); /* lower-cased */
	assert_int_equal(w.res.mx[0].pref, 10);
	assert_string_equal(w.res.mx[1].host, "mx2.two.test");
	assert_int_equal(w.res.mx[1].pref, 20);
	assert_int_equal(w.res.secure, 0);
	assert_string_equal(w.res.why, "");

	mx_lookup("Two.Test.", &w); /* any case, trailing dot */
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, 2);
}

/* RFC 5321 5.1: equal preferences come in random order, after the lower one. */
static void test_mx_equal_shuffled(void **state)
{
	struct dns_resolver *r = resolver(fx.server);
	char orders[50][8];
	int distinct = 0;
	for (int i = 0; i < 50; i++) {
		struct mx_wait w = { 0 };
		assert_non_null(dns_lookup_mx(r, "equal.test", mx_done, &w));
		assert_true(run_until(&w.calls, 10000));
		assert_int_equal(w.res.status, DNS_OK);
		assert_int_equal(w.res.n, 4);
		assert_string_equal(w.res.mx[0].host, "first.equal.test");
		assert_int_equal(w.res.mx[0].pref, 5);
		int seen = 0;
		for (int k = 1; k < 4; k++) {
			assert_int_equal(w.res.mx[k].pref, 10);
			const char *h = w.res.mx[k].host;
			assert_true(strlen(h) == strlen("a.equal.test") && strcmp(h + 1, ".equal.test") == 0);
			assert_true(h[0] >= 'a' && h[0] <= 'c');
			seen |= 1 << (h[0] - 'a');
			orders[i][k - 1] = h[0];
		}
		assert_int_equal(seen, 7);
		orders[i][3] = '\0';
		int j;
		for (j = 0; j < i; j++)
			if (strcmp(orders[j], orders[i]) == 0)
				break;
		if (j == i)
			distinct++;
	}
	dns_resolver_free(&r);
	assert_true(distinct > 1);
}

static void test_mx_null(void **state)
{
	struct mx_wait w;
	mx_lookup("null.test", &w);
	assert_int_equal(w.res.status, DNS_NULL_MX);
	assert_int_equal(w.res.n, 0);
	assert_non_null(strstr(w.res.why, "null.test"));
	assert_non_null(strstr(w.res.why, "RFC 7505"));

	/* A "." next to a real exchange is no null MX: the real one is used. */
	mx_lookup("mixnull.test", &w);
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, 1);
	assert_string_equal(w.res.mx[0].host, "mx.mixnull.test");
}

static void test_mx_many(void **state)
{
	struct mx_wait w;
	mx_lookup("many.test", &w); /* 40 records, preferences 1..40 */
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, DNS_MAX_MX);
	for (int i = 0; i < DNS_MAX_MX; i++)
		assert_int_equal(w.res.mx[i].pref, i + 1); /* the most preferred are kept */
	assert_string_equal(w.res.mx[0].host, "m40.many.test");
}

static void test_mx_nodata(void **state)
{
	struct mx_wait w;
	mx_lookup("addronly.test", &w);
	assert_int_equal(w.res.status, DNS_NODATA);
	assert_int_equal(w.res.n, 0);
	assert_string_equal(w.res.why, "addronly.test: no MX record");
}

static void test_mx_nxdomain(void **state)
{
	struct mx_wait w;
	mx_lookup("nope.test", &w);
	assert_int_equal(w.res.status, DNS_NXDOMAIN);
	assert_string_equal(w.res.why, "nope.test: no such domain");
	mx_lookup("deeper.nope.example", &w);
	assert_int_equal(w.res.status, DNS_NXDOMAIN);
}

static void test_mx_servfail(void **state)
{
	struct mx_wait w;
	char expect[128];
	/* The test DNS forwards fail.test to a dead port and answers SERVFAIL. */
	mx_lookup("fail.test", &w);
	assert_int_equal(w.res.status, DNS_TEMPFAIL);
	snprintf(expect, sizeof(expect), "fail.test: SERVFAIL from %s", fx.server);
	assert_string_equal(w.res.why, expect);
	/* It REFUSES refused.test; libunbound turns that into SERVFAIL as well. */
	mx_lookup("refused.test", &w);
	assert_int_equal(w.res.status, DNS_TEMPFAIL);
	assert_non_null(strstr(w.res.why, "refused.test: "));
}

static void test_mx_bad_name(void **state)
{
	static const char *bad[] = { "", "a..b", "b\xc3\xbc" "cher.test", "x y.test",
				     "evil\r\n.test" };
	struct dns_resolver *r = resolver(fx.server);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mx_wait w = { 0 };
		assert_non_null(dns_lookup_mx(r, bad[i], mx_done, &w));
		assert_int_equal(w.calls, 0); /* reported later, on the loop */
		assert_true(run_until(&w.calls, 2000));
		assert_int_equal(w.res.status, DNS_BAD_NAME);
		assert_int_equal(w.res.n, 0);
		assert_non_null(strstr(w.res.why, "not a valid domain name"));
		for (const char *p = w.res.why; *p; p++)
			assert_true(*p >= 0x20 && *p < 0x7f); /* safe for a log or a bounce */
		run_for(50);
		assert_int_equal(w.calls, 1); /* exactly once */
	}
	dns_resolver_free(&r);
}

/* ---- A/AAAA ---- */

static void test_addrs_both(void **state)
{
	struct addr_wait w;
	addr_lookup("host.test", &w);
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, 2);
	check_addr(&w.res.addr[0], AF_INET6, "2001:db8::1"); /* IPv6 first */
	check_addr(&w.res.addr[1], AF_INET, "192.0.2.1");
	assert_string_equal(w.res.why, "");
}

static void test_addrs_v4only(void **state)
{
	struct addr_wait w;
	addr_lookup("v4only.test", &w);
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, 1);
	check_addr(&w.res.addr[0], AF_INET, "192.0.2.4");
}

/* AAAA fails (SERVFAIL), A answers: OK with the IPv4 address, the failure kept. */
static void test_addrs_partial(void **state)
{
	struct addr_wait w;
	addr_lookup("partial.test", &w);
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, 1);
	check_addr(&w.res.addr[0], AF_INET, "192.0.2.7");
	char expect[128];
	snprintf(expect, sizeof(expect), "partial.test: SERVFAIL from %s", fx.server);
	assert_string_equal(w.res.why, expect);
}

static void test_addrs_many(void **state)
{
	struct addr_wait w;
	addr_lookup("manyaddr.test", &w); /* 40 AAAA and 40 A */
	assert_int_equal(w.res.status, DNS_OK);
	assert_int_equal(w.res.n, DNS_MAX_ADDRS);
	for (int i = 0; i < DNS_MAX_ADDRS; i++)
		assert_int_equal(w.res.addr[i].ss_family, i < DNS_MAX_ADDRS / 2 ? AF_INET6 : AF_INET);
}

static void test_addrs_nodata(void **state)
{
	struct addr_wait w;
	addr_lookup("two.test", &w); /* MX only */
	assert_int_equal(w.res.status, DNS_NODATA);
	assert_int_equal(w.res.n, 0);
	assert_string_equal(w.res.why, "two.test: no A or AAAA record");
}

static void test_addrs_nxdomain(void **state)
{
	struct addr_wait w;
	addr_lookup("nope.test", &w);
	assert_int_equal(w.res.status, DNS_NXDOMAIN);
	assert_string_equal(w.res.why, "nope.test: no such domain");
	addr_lookup("fail.test", &w);
	assert_int_equal(w.res.status, DNS_TEMPFAIL);
	addr_lookup("..", &w);
	assert_int_equal(w.res.status, DNS_BAD_NAME);
}

/* ---- time bound, cancel, free ---- */

static void test_timeout(void **state)
{
	struct dns_resolver *r = resolver(fx.blackhole);
	dns_resolver_set_timeout(r, 300);
	struct mx_wait mw = { 0 };
	struct addr_wait aw = { 0 };
	long long t0 = now_ms();
	assert_non_null(dns_lookup_mx(r, "two.test", mx_done, &mw));
	assert_non_null(dns_lookup_addrs(r, "host.test", addr_done, &aw));
	assert_true(run_until(&mw.calls, 5000));
	assert_true(run_until(&aw.calls, 5000));
	long long took = now_ms() - t0;
	assert_true(took >= 250 && took < 5000);
	assert_int_equal(mw.res.status, DNS_TEMPFAIL);
	assert_int_equal(aw.res.status, DNS_TEMPFAIL);
	char expect[128];
	snprintf(expect, sizeof(expect), "two.test: no MX answer from %s within 300 ms",
		 fx.blackhole);
	assert_string_equal(mw.res.why, expect);
	assert_non_null(strstr(aw.res.why, "within 300 ms"));
	run_for(100);
	assert_int_equal(mw.calls, 1);
	assert_int_equal(aw.calls, 1);
	dns_resolver_free(&r);
}

static void test_cancel(void **state)
{
	struct dns_resolver *r = resolver(fx.server);
	struct mx_wait m1 = { 0 }, m2 = { 0 }, bad = { 0 };
	struct addr_wait a1 = { 0 };

	struct dns_query *q1 = dns_lookup_mx(r, "two.test", mx_done, &m1);
	struct dns_query *qa = dns_lookup_addrs(r, "host.test", addr_done, &a1);
	struct dns_query *qb = dns_lookup_mx(r, "bad..name", mx_done, &bad);
	assert_non_null(q1);
	assert_non_null(qa);
	assert_non_null(qb);
	dns_cancel(&q1);
	dns_cancel(&qa);
	dns_cancel(&qb); /* its result was decided, not delivered yet */
	assert_null(q1);
	assert_null(qa);
	assert_null(qb);

	/* A later lookup on the same resolver completes; the cancelled ones stay quiet. */
	assert_non_null(dns_lookup_mx(r, "two.test", mx_done, &m2));
	assert_true(run_until(&m2.calls, 10000));
	assert_int_equal(m2.res.status, DNS_OK);
	run_for(200);
	assert_int_equal(m1.calls, 0);
	assert_int_equal(a1.calls, 0);
	assert_int_equal(bad.calls, 0);
	dns_resolver_free(&r);
}

static void test_free_pending(void **state)
{
	struct dns_resolver *r = resolver(fx.server);
	struct dns_resolver *dead = resolver(fx.blackhole);
	struct mx_wait m[3] = { { 0 } };
	struct addr_wait a[2] = { { 0 } };

	assert_non_null(dns_lookup_mx(dead, "two.test", mx_done, &m[2]));
	assert_non_null(dns_lookup_addrs(dead, "host.test", addr_done, &a[1]));
	run_for(50); /* libunbound's thread is surely waiting on the blackhole */
	assert_non_null(dns_lookup_mx(r, "two.test", mx_done, &m[0]));
	assert_non_null(dns_lookup_mx(r, "x..y", mx_done, &m[1]));
	assert_non_null(dns_lookup_addrs(r, "host.test", addr_done, &a[0]));

	long long t0 = now_ms();
	dns_resolver_free(&r);
	dns_resolver_free(&dead);
	assert_true(now_ms() - t0 < 2000); /* no waiting for the dead server */
	assert_null(r);
	assert_null(dead);
	run_for(300);
	for (int i = 0; i < 3; i++)
		assert_int_equal(m[i].calls, 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(a[i].calls, 0);
}

/* The callback of one lookup frees the resolver while others are pending, maybe
 * answered in the same ub_process() batch: they must stay quiet, nothing may crash. */
struct free_in_cb {
	struct dns_resolver *r;
	int calls;
};

static void free_in_cb_done(void *arg, const struct dns_mx_result *res)
{
	struct free_in_cb *f = arg;
	f->calls++;
	dns_resolver_free(&f->r);
}

static void test_free_in_callback(void **state)
{
	struct free_in_cb f = { resolver(fx.server), 0 };
	struct mx_wait others[4] = { { 0 } };
	assert_non_null(dns_lookup_mx(f.r, "two.test", free_in_cb_done, &f));
	for (int i = 0; i < 4; i++)
		assert_non_null(dns_lookup_mx(f.r, i % 2 ? "null.test" : "nope.test", mx_done,
					      &others[i]));
	assert_true(run_until(&f.calls, 10000));
	assert_null(f.r);
	run_for(300);
	assert_int_equal(f.calls, 1);
	for (int i = 0; i < 4; i++)
		assert_int_equal(others[i].calls, 0);
}

/* What delivery will do: MX, then from the MX callback the addresses of the first. */
struct chain {
	struct dns_resolver *r;
	struct mx_wait mx;
	struct addr_wait addr;
};

static void chain_mx_done(void *arg, const struct dns_mx_result *res)
{
	struct chain *c = arg;
	mx_done(&c->mx, res);
	if (res->status == DNS_OK)
		assert_non_null(dns_lookup_addrs(c->r, res->mx[0].host, addr_done, &c->addr));
}

static void test_chain_in_callback(void **state)
{
	struct chain c;
	memset(&c, 0, sizeof(c));
	c.r = resolver(fx.server);
	assert_non_null(dns_lookup_mx(c.r, "two.test", chain_mx_done, &c));
	assert_true(run_until(&c.addr.calls, 10000));
	assert_int_equal(c.mx.calls, 1);
	assert_int_equal(c.addr.res.status, DNS_OK);
	assert_int_equal(c.addr.res.n, 1);
	check_addr(&c.addr.res.addr[0], AF_INET, "192.0.2.21");
	dns_resolver_free(&c.r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_str),
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_mx_rdata_parse),
		cmocka_unit_test(test_resolver_new),
		cmocka_unit_test(test_mx_two_prefs),
		cmocka_unit_test(test_mx_equal_shuffled),
		cmocka_unit_test(test_mx_null),
		cmocka_unit_test(test_mx_many),
		cmocka_unit_test(test_mx_nodata),
		cmocka_unit_test(test_mx_nxdomain),
		cmocka_unit_test(test_mx_servfail),
		cmocka_unit_test(test_mx_bad_name),
		cmocka_unit_test(test_addrs_both),
		cmocka_unit_test(test_addrs_v4only),
		cmocka_unit_test(test_addrs_partial),
		cmocka_unit_test(test_addrs_many),
		cmocka_unit_test(test_addrs_nodata),
		cmocka_unit_test(test_addrs_nxdomain),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_free_pending),
		cmocka_unit_test(test_free_in_callback),
		cmocka_unit_test(test_chain_in_callback),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
