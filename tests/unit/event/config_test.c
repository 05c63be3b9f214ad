/* Configuration loading: defaults, every kind of value, errors that name file and line,
 * listeners, routes and the relay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "event/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

static char dir[128];

static int setup(void **state)
{
	(void)state;
	return test_tmpdir_new(dir, sizeof(dir), "config");
}

static int teardown(void **state)
{
	(void)state;
	test_rm_rf(dir);
	return 0;
}

/* Writes text to DIR/tern.conf and loads it. */
static struct tern_config *load(const char *text, const char **error_r)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/tern.conf", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return config_load(path, 0, error_r);
}

#define LISTENER "[listener mx]\nprotocol = smtp\naddress = 127.0.0.1:2525\n"

static void test_defaults(void **state)
{
	(void)state;
	const char *error = NULL;
	struct tern_config *cfg = load(LISTENER, &error);
	assert_non_null(cfg);
	assert_string_equal(cfg->data_dir, "/var/lib/tern");
	assert_int_equal(cfg->max_message_size, 25LL * 1024 * 1024);
	assert_int_equal(cfg->max_recipients, 100);
	assert_int_equal(cfg->command_timeout, 300);
	assert_int_equal(cfg->queue_lifetime, 5 * 86400);
	assert_int_equal(cfg->delay_warning, 4 * 3600);
	assert_int_equal(cfg->n_retry, 5);
	assert_int_equal(cfg->retry[0], 300);
	assert_int_equal(cfg->retry[4], 3600);
	assert_int_equal(cfg->delivery_port, 25);
	assert_null(config_route_for(cfg, "example.com"));
	assert_int_equal(cfg->n_listeners, 1);
	assert_int_equal(cfg->listeners[0].protocol, LISTENER_SMTP);
	config_free(&cfg);
	assert_null(cfg);
}

static void test_dev_defaults(void **state)
{
	(void)state;
	const char *error = NULL;
	struct tern_config *cfg = config_load(NULL, 1, &error);
	assert_non_null(cfg);
	assert_string_equal(cfg->data_dir, "./var");
	assert_int_equal(cfg->n_listeners, 7);
	assert_string_equal(cfg->listeners[1].address, "127.0.0.1:2587");
	assert_int_equal(cfg->listeners[3].protocol, LISTENER_IMAP);
	assert_string_equal(cfg->listeners[3].address, "127.0.0.1:2143");
	assert_int_equal(cfg->listeners[6].protocol, LISTENER_POP3S);
	assert_string_equal(cfg->listeners[6].address, "127.0.0.1:2995");
	assert_int_equal(cfg->imap_timeout, 1800);
	assert_int_equal(cfg->imap_idle_timeout, 29 * 60);
	assert_int_equal(cfg->pop3_timeout, 600);
	config_free(&cfg);
}

static void test_mailbox_listeners(void **state)
{
	(void)state;
	const char *error = NULL;
	struct tern_config *cfg = load("[mailbox]\nimap_idle_timeout = 20m\n"
				       "[listener i]\nprotocol = imaps\naddress = 127.0.0.1:993\n"
				       "[listener p]\nprotocol = pop3\naddress = 127.0.0.1:110\n",
				       &error);
	assert_non_null(cfg);
	assert_int_equal(cfg->n_listeners, 2);
	assert_int_equal(cfg->listeners[0].protocol, LISTENER_IMAPS);
	assert_int_equal(cfg->listeners[1].protocol, LISTENER_POP3);
	assert_string_equal(listener_protocol_name(cfg->listeners[0].protocol), "imaps");
	assert_int_equal(cfg->imap_idle_timeout, 20 * 60);
	config_free(&cfg);
}

static void test_values(void **state)
{
	(void)state;
	const char *error = NULL;
	struct tern_config *cfg = load("[server]\nworkers = 3\n[smtp]\nmax_message_size = 10M\n"
				       "command_timeout = 2m\nauth_plaintext_loopback = yes\n"
				       "trusted_networks = 10.0.0.0/8 ::1\n"
				       "[delivery]\nretry_schedule = 1s, 2s 1h\nresolver = 127.0.0.1@5353\n"
				       LISTENER, &error);
	assert_non_null(cfg);
	assert_int_equal(cfg->workers, 3);
	assert_int_equal(cfg->max_message_size, 10LL * 1024 * 1024);
	assert_int_equal(cfg->command_timeout, 120);
	assert_int_equal(cfg->auth_plaintext_loopback, 1);
	assert_int_equal(cfg->n_networks, 2);
	assert_int_equal(cfg->n_retry, 3);
	assert_int_equal(cfg->retry[2], 3600);
	struct sockaddr_in in;
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
	assert_true(config_network_match(cfg->networks, cfg->n_networks, &in));
	inet_pton(AF_INET, "11.1.2.3", &in.sin_addr);
	assert_false(config_network_match(cfg->networks, cfg->n_networks, &in));
	config_free(&cfg);
}

static void test_errors_name_file_and_line(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		const char *expect;
	} cases[] = {
		{ "[server]\nworkers = 2\nbogus = 1\n" LISTENER, "tern.conf:3: unknown key 'bogus'" },
		{ "[nothing]\nx = 1\n" LISTENER, "tern.conf:2: unknown section [nothing]" },
		{ "[smtp]\nmax_recipients = 0\n" LISTENER, "tern.conf:2: [smtp] max_recipients = 0: out of range" },
		{ "[smtp]\nmax_message_size = 3X\n" LISTENER, "tern.conf:2:" },
		{ "[smtp]\nauth_plaintext_loopback = maybe\n" LISTENER, "expected yes or no" },
		{ "[listener a]\nprotocol = imap4\n", "tern.conf:2: [listener a] protocol 'imap4'" },
		{ "[mailbox]\nimap_timeout = 10s\n" LISTENER,
		  "tern.conf:2: [mailbox] imap_timeout = 10s: out of range" },
		{ "[listener a]\nprotocol = smtp\naddress = localhost\n", "tern.conf:3:" },
		{ "this is not ini\n", "tern.conf:1: syntax error" },
		{ "[server]\nlog_level = loud\n" LISTENER, "log_level 'loud'" },
		{ "[server]\n", "no [listener NAME] section" },
		{ "[delivery]\nretry_schedule = 5m soon\n" LISTENER, "retry_schedule: 'soon'" },
		{ "[delivery]\nresolver = dns.example\n" LISTENER, "[delivery] resolver" },
		{ "[relay]\nhost = smtp.example.com\n" LISTENER, "is not HOST:PORT" },
		{ "[relay]\nhost = smtp.example.com:587\ntls = maybe\n" LISTENER, "tls 'maybe'" },
		{ "[relay]\nhost = smtp.example.com:587\nusername = me\n" LISTENER, "set together" },
		{ "[route example.org]\ntls = none\n" LISTENER, "[route example.org] has no host" },
		{ "[route example.org]\nport = 1\n" LISTENER, "tern.conf:2: unknown key 'port' in [route example.org]" },
		{ "[tls]\ncert = /x.pem\n" LISTENER, "cert and key must be set together" },
		{ "[relay]\nhost = smtp.example.com:25\ntls = none\nusername = u\npassword = p\n" LISTENER,
		  "password in clear" },
		{ "[route a.test]\nhost = 127.0.0.1:25\ntls_verify = maybe\n" LISTENER, "tls_verify 'maybe'" },
		{ "[relay]\ntls_verify = sometimes\n" LISTENER, "expected yes or no" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *error = NULL;
		struct tern_config *cfg = load(cases[i].text, &error);
		if (cfg != NULL || error == NULL || strstr(error, cases[i].expect) == NULL)
			fail_msg("case %zu: expected '%s', got '%s'", i, cases[i].expect,
				 error ? error : "(loaded)");
	}
	const char *error = NULL;
	assert_null(config_load("/nonexistent/tern.conf", 0, &error));
	assert_non_null(strstr(error, "/nonexistent/tern.conf: cannot open"));
}

static void test_routes_and_relay(void **state)
{
	(void)state;
	const char *error = NULL;
	struct tern_config *cfg = load("[relay]\nhost = smtp.provider.test:587\nusername = me\n"
				       "password = secret\n"
				       "[route Example.ORG]\nhost = 127.0.0.2:2525\ntls = none\n" LISTENER,
				       &error);
	assert_non_null(cfg);
	const struct config_route *r = config_route_for(cfg, "example.org");
	assert_non_null(r);
	assert_string_equal(r->host, "127.0.0.2:2525");
	assert_int_equal(r->tls, RELAY_TLS_NONE);
	r = config_route_for(cfg, "elsewhere.test");
	assert_non_null(r);
	assert_string_equal(r->host, "smtp.provider.test:587");
	assert_int_equal(r->tls, RELAY_TLS_STARTTLS);
	assert_int_equal(r->tls_verify, 1);
	assert_string_equal(r->username, "me");
	assert_string_equal(r->password, "secret");
	config_free(&cfg);
}

static void test_split_address(void **state)
{
	(void)state;
	char host[64];
	int port;
	assert_int_equal(config_split_address("127.0.0.1:25", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 25);
	assert_int_equal(config_split_address("[::1]:587", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 587);
	assert_int_equal(config_split_address("::1:25", host, sizeof(host), &port), -1);
	assert_int_equal(config_split_address("host:99999", host, sizeof(host), &port), -1);
	assert_int_equal(config_split_address(":25", host, sizeof(host), &port), -1);
}

static void test_reference_lists_every_section(void **state)
{
	(void)state;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	config_write_reference(f);
	fclose(f);
	const char *want[] = { "## [server]", "## [tls]", "## [smtp]", "## [mailbox]", "## [delivery]", "## [relay]",
			       "## [listener NAME]", "## [route DOMAIN]", "`retry_schedule`" };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strstr(text, want[i]) == NULL)
			fail_msg("reference lacks %s", want[i]);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_dev_defaults),
		cmocka_unit_test(test_mailbox_listeners),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors_name_file_and_line),
		cmocka_unit_test(test_routes_and_relay),
		cmocka_unit_test(test_split_address),
		cmocka_unit_test(test_reference_lists_every_section),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
