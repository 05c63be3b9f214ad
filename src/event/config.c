#include "event/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum opt_type { OPT_STRING, OPT_INT, OPT_BOOL, OPT_SIZE, OPT_SECONDS };

struct option {
	const char *section;
	const char *key;
	enum opt_type type;
	size_t offset;
	long long min, max;
	const char *def;     /* default as written in a file; NULL: computed (see doc) */
	const char *dev_def; /* default under --dev, when it differs */
	const char *doc;
};

#define F(field) offsetof(struct tern_config, field)

static const struct option options[] = {
	{ "server", "hostname", OPT_STRING, F(hostname), 0, 0, NULL, NULL,
	  "Name in the SMTP greeting, EHLO and Received headers. Default: the machine's host name." },
	{ "server", "data_dir", OPT_STRING, F(data_dir), 0, 0, "/var/lib/tern", "./var",
	  "Directory for tern.db, queue/, mail/ and tls/. Created when missing." },
	{ "server", "user", OPT_STRING, F(user), 0, 0, "tern", NULL,
	  "Unprivileged user the workers run as when tern is started as root." },
	{ "server", "workers", OPT_INT, F(workers), 0, 256, "0", "2",
	  "Session worker processes; 0 means one per CPU core." },
	{ "server", "log_file", OPT_STRING, F(log_file), 0, 0, "", NULL,
	  "Log file; empty or `-` logs to standard error." },
	{ "server", "log_level", OPT_STRING, F(log_level), 0, 0, "info", NULL,
	  "Least severe level logged: debug, info, warn or error." },
	{ "tls", "cert", OPT_STRING, F(tls_cert), 0, 0, "", NULL,
	  "PEM certificate chain. Empty: DATA_DIR/tls/cert.pem, self-signed and generated on first start." },
	{ "tls", "key", OPT_STRING, F(tls_key), 0, 0, "", NULL,
	  "PEM private key for `cert`. Empty: DATA_DIR/tls/key.pem." },
	{ "smtp", "max_message_size", OPT_SIZE, F(max_message_size), 1024, 1LL << 32, "25M", NULL,
	  "Largest message accepted (advertised as SIZE); larger ones get 552 5.3.4." },
	{ "smtp", "max_recipients", OPT_INT, F(max_recipients), 1, 100000, "100", NULL,
	  "Recipients per message; more get 452 4.5.3." },
	{ "smtp", "max_connections", OPT_INT, F(max_connections), 1, 1000000, "20000", NULL,
	  "Concurrent SMTP connections per worker; more are answered 421 and closed." },
	{ "smtp", "max_connections_per_ip", OPT_INT, F(max_connections_per_ip), 1, 1000000, "50", NULL,
	  "Concurrent connections from one IP address (per worker); more get 421 4.7.0." },
	{ "smtp", "command_timeout", OPT_SECONDS, F(command_timeout), 1, 86400, "5m", NULL,
	  "Idle time allowed while waiting for a command (RFC 5321 4.5.3.2)." },
	{ "smtp", "data_timeout", OPT_SECONDS, F(data_timeout), 1, 86400, "10m", NULL,
	  "Time allowed between two reads of message data." },
	{ "smtp", "auth_plaintext_loopback", OPT_BOOL, F(auth_plaintext_loopback), 0, 1, "no", NULL,
	  "Allow AUTH without TLS for clients on a loopback address." },
	{ "smtp", "auth_max_failures", OPT_INT, F(auth_max_failures), 1, 100000, "10", NULL,
	  "Failed logins per IP address, or per account, within `auth_failure_window` before "
	  "further attempts get 454 4.7.0." },
	{ "smtp", "auth_failure_window", OPT_SECONDS, F(auth_failure_window), 1, 86400, "15m", NULL,
	  "The window for `auth_max_failures`." },
	{ "smtp", "trusted_networks", OPT_STRING, F(trusted_networks), 0, 0, "", NULL,
	  "Space-separated networks (CIDR) whose clients may relay on the smtp role without AUTH." },
	{ "mailbox", "max_connections", OPT_INT, F(mailbox_max_connections), 1, 1000000, "20000", NULL,
	  "Concurrent IMAP and POP3 connections per worker; more are refused and closed." },
	{ "mailbox", "max_connections_per_ip", OPT_INT, F(mailbox_max_connections_per_ip), 1, 1000000,
	  "50", NULL,
	  "Concurrent IMAP and POP3 connections from one IP address (per worker): a household "
	  "behind one NAT runs several clients with several connections each." },
	{ "mailbox", "imap_timeout", OPT_SECONDS, F(imap_timeout), 60, 86400, "30m", NULL,
	  "Idle time allowed between IMAP commands (RFC 9051 5.4: at least 30 minutes)." },
	{ "mailbox", "imap_idle_timeout", OPT_SECONDS, F(imap_idle_timeout), 60, 86400, "29m", NULL,
	  "How long one IDLE may last; clients renew it before this." },
	{ "mailbox", "pop3_timeout", OPT_SECONDS, F(pop3_timeout), 60, 86400, "10m", NULL,
	  "Idle time allowed between POP3 commands (RFC 1939 3: at least 10 minutes)." },
	{ "delivery", "resolver", OPT_STRING, F(resolver), 0, 0, "", NULL,
	  "DNS server for outbound delivery as `ADDR@PORT` (e.g. `127.0.0.1@53`); empty: "
	  "the servers in /etc/resolv.conf." },
	{ "delivery", "port", OPT_INT, F(delivery_port), 1, 65535, "25", NULL,
	  "Port of the remote MX hosts (another port is for tests and special setups)." },
	{ "delivery", "helo_name", OPT_STRING, F(helo_name), 0, 0, "", NULL,
	  "Name sent in EHLO to other servers; empty: `[server] hostname`." },
	{ "delivery", "retry_schedule", OPT_STRING, F(retry_schedule), 0, 0, "5m 10m 20m 40m 1h", NULL,
	  "Waits between delivery attempts after a temporary failure; the last one repeats." },
	{ "delivery", "queue_lifetime", OPT_SECONDS, F(queue_lifetime), 1, 365 * 86400, "5d", NULL,
	  "How long a message is retried before it is bounced." },
	{ "delivery", "delay_warning", OPT_SECONDS, F(delay_warning), 0, 365 * 86400, "4h", NULL,
	  "Tell the sender that a message is delayed after this long; 0: never." },
	{ "delivery", "max_per_destination", OPT_INT, F(max_per_destination), 1, 10000, "20", NULL,
	  "Concurrent outbound connections to one destination domain." },
	{ "delivery", "max_connections", OPT_INT, F(max_outbound), 1, 100000, "100", NULL,
	  "Concurrent outbound connections in all." },
	{ "delivery", "connect_timeout", OPT_SECONDS, F(connect_timeout), 1, 3600, "30s", NULL,
	  "Time allowed to connect to a remote server and get its greeting." },
	{ "delivery", "command_timeout", OPT_SECONDS, F(client_timeout), 1, 3600, "5m", NULL,
	  "Time allowed for each reply of a remote server (RFC 5321 4.5.3.2)." },
	{ "relay", "host", OPT_STRING, F(relay_host), 0, 0, "", NULL,
	  "Smarthost `HOST:PORT` that receives all outbound mail (your provider's SMTP server); "
	  "empty: deliver to each domain's MX." },
	{ "relay", "tls", OPT_STRING, F(relay_tls), 0, 0, "starttls", NULL,
	  "`starttls` (port 587, required), `implicit` (port 465) or `none`." },
	{ "relay", "tls_verify", OPT_BOOL, F(relay_tls_verify), 0, 1, "yes", NULL,
	  "The smarthost's certificate must verify for its host name (else: deferred). "
	  "`no` only for a host with a self-signed certificate you trust otherwise." },
	{ "relay", "username", OPT_STRING, F(relay_username), 0, 0, "", NULL,
	  "Login at the smarthost (AUTH PLAIN, else LOGIN); empty: no login." },
	{ "relay", "password", OPT_STRING, F(relay_password), 0, 0, "", NULL,
	  "Password for `username`. Keep the configuration file unreadable to others." },
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static const struct {
	const char *key;
	const char *doc;
} listener_keys[] = {
	{ "protocol", "`smtp` (port 25, mail from other servers), `submission` (587, STARTTLS "
		      "then AUTH), `submissions` (465, TLS from the first byte), `imap` (143, "
		      "STARTTLS), `imaps` (993, TLS), `pop3` (110, STLS) or `pop3s` (995, TLS)." },
	{ "address", "`HOST:PORT` to listen on; IPv6 as `[::1]:PORT`." },
};

static const struct {
	const char *key;
	const char *doc;
} route_keys[] = {
	{ "host", "`HOST:PORT` that receives all mail for DOMAIN instead of its MX hosts." },
	{ "tls", "`starttls` (required), `implicit` or `none`; default `starttls`." },
	{ "tls_verify", "`yes` (default) or `no`: must the host's certificate verify?" },
	{ "username", "Login at that host; empty: none." },
	{ "password", "Password for `username`." },
};

static char config_error[1280];

static void set_error(struct tern_config *cfg, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

struct parse_ctx {
	struct tern_config *cfg;
	int first_error; /* set once: later errors do not overwrite the first */
	int line;        /* counted by the handler, for listener declarations */
};

static void set_error(struct tern_config *cfg, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(config_error, sizeof(config_error), "%s:%d: %s",
			 cfg->path[0] ? cfg->path : "(built-in)", line, msg);
	else
		snprintf(config_error, sizeof(config_error), "%s: %s",
			 cfg->path[0] ? cfg->path : "(built-in)", msg);
}

static int parse_number(const char *v, enum opt_type type, long long *out, const char **why)
{
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (end == v || errno != 0 || n < 0) {
		*why = "not a non-negative number";
		return -1;
	}
	long long mult = 1;
	if (type == OPT_SIZE) {
		switch (*end) {
		case '\0': break;
		case 'k': case 'K': mult = 1024; end++; break;
		case 'm': case 'M': mult = 1024LL * 1024; end++; break;
		case 'g': case 'G': mult = 1024LL * 1024 * 1024; end++; break;
		default: *why = "unknown size suffix (use K, M or G)"; return -1;
		}
	} else if (type == OPT_SECONDS) {
		switch (*end) {
		case '\0': case 's': break;
		case 'm': mult = 60; break;
		case 'h': mult = 3600; break;
		case 'd': mult = 86400; break;
		default: *why = "unknown time suffix (use s, m, h or d)"; return -1;
		}
		if (*end != '\0')
			end++;
	}
	if (*end != '\0') {
		*why = "trailing characters after the number";
		return -1;
	}
	if (n > LLONG_MAX / mult) {
		*why = "number too large";
		return -1;
	}
	*out = n * mult;
	return 0;
}

static int option_set(struct tern_config *cfg, const struct option *o, const char *value,
		      const char **why)
{
	char *field = (char *)cfg + o->offset;
	long long n;
	switch (o->type) {
	case OPT_STRING: {
		char *copy = strdup(value);
		if (copy == NULL) {
			*why = "out of memory";
			return -1;
		}
		free(*(char **)field);
		*(char **)field = copy;
		return 0;
	}
	case OPT_BOOL:
		if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "true") == 0 ||
		    strcmp(value, "1") == 0 || strcasecmp(value, "on") == 0) {
			*(int *)field = 1;
		} else if (strcasecmp(value, "no") == 0 || strcasecmp(value, "false") == 0 ||
			   strcmp(value, "0") == 0 || strcasecmp(value, "off") == 0) {
			*(int *)field = 0;
		} else {
			*why = "expected yes or no";
			return -1;
		}
		return 0;
	case OPT_INT:
	case OPT_SIZE:
	case OPT_SECONDS:
		if (parse_number(value, o->type, &n, why) < 0)
			return -1;
		if (n < o->min || n > o->max) {
			static char range[128];
			snprintf(range, sizeof(range), "out of range (%lld to %lld)", o->min, o->max);
			*why = range;
			return -1;
		}
		if (o->type == OPT_SIZE)
			*(long long *)field = n;
		else
			*(int *)field = (int)n;
		return 0;
	}
	*why = "bad option type";
	return -1;
}

static struct config_listener *listener_find(struct tern_config *cfg, const char *name)
{
	for (int i = 0; i < cfg->n_listeners; i++)
		if (strcmp(cfg->listeners[i].name, name) == 0)
			return &cfg->listeners[i];
	return NULL;
}

static int parse_protocol(const char *v, enum listener_protocol *p)
{
	if (strcmp(v, "smtp") == 0)
		*p = LISTENER_SMTP;
	else if (strcmp(v, "submission") == 0)
		*p = LISTENER_SUBMISSION;
	else if (strcmp(v, "submissions") == 0)
		*p = LISTENER_SUBMISSIONS;
	else if (strcmp(v, "imap") == 0)
		*p = LISTENER_IMAP;
	else if (strcmp(v, "imaps") == 0)
		*p = LISTENER_IMAPS;
	else if (strcmp(v, "pop3") == 0)
		*p = LISTENER_POP3;
	else if (strcmp(v, "pop3s") == 0)
		*p = LISTENER_POP3S;
	else
		return -1;
	return 0;
}

static int parse_relay_tls(const char *v, enum relay_tls *t)
{
	if (strcmp(v, "starttls") == 0)
		*t = RELAY_TLS_STARTTLS;
	else if (strcmp(v, "implicit") == 0)
		*t = RELAY_TLS_IMPLICIT;
	else if (strcmp(v, "none") == 0)
		*t = RELAY_TLS_NONE;
	else
		return -1;
	return 0;
}

static int route_set(struct config_route *r, const char *name, const char *value, char *msg,
		     size_t cap)
{
	char host[256];
	int port;
	if (strcmp(name, "host") == 0) {
		if (config_split_address(value, host, sizeof(host), &port) < 0 || port == 0) {
			snprintf(msg, cap, "[route %s] host '%s' is not HOST:PORT", r->domain, value);
			return -1;
		}
		snprintf(r->host, sizeof(r->host), "%s", value);
	} else if (strcmp(name, "tls") == 0) {
		if (parse_relay_tls(value, &r->tls) < 0) {
			snprintf(msg, cap, "[route %s] tls '%s' is not starttls, implicit or none",
				 r->domain, value);
			return -1;
		}
	} else if (strcmp(name, "tls_verify") == 0) {
		if (strcmp(value, "yes") == 0)
			r->tls_verify = 1;
		else if (strcmp(value, "no") == 0)
			r->tls_verify = 0;
		else {
			snprintf(msg, cap, "[route %s] tls_verify '%s' is not yes or no", r->domain,
				 value);
			return -1;
		}
	} else if (strcmp(name, "username") == 0) {
		snprintf(r->username, sizeof(r->username), "%s", value);
	} else if (strcmp(name, "password") == 0) {
		snprintf(r->password, sizeof(r->password), "%s", value);
	} else {
		snprintf(msg, cap, "unknown key '%s' in [route %s] (known: host, tls, tls_verify, "
			 "username, password)", name, r->domain);
		return -1;
	}
	return 0;
}

static int config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *ctx = user;
	struct tern_config *cfg = ctx->cfg;
	const char *why = NULL;
	char msg[512];

	if (strncmp(section, "listener", 8) == 0 && (section[8] == ' ' || section[8] == '\0')) {
		const char *lname = section[8] == ' ' ? section + 9 : "";
		while (*lname == ' ')
			lname++;
		if (*lname == '\0') {
			snprintf(msg, sizeof(msg), "[listener] needs a name: [listener NAME]");
			goto fail;
		}
		struct config_listener *l = listener_find(cfg, lname);
		if (l == NULL) {
			if (cfg->n_listeners >= CONFIG_MAX_LISTENERS) {
				snprintf(msg, sizeof(msg), "too many listeners (at most %d)",
					 CONFIG_MAX_LISTENERS);
				goto fail;
			}
			l = &cfg->listeners[cfg->n_listeners++];
			memset(l, 0, sizeof(*l));
			snprintf(l->name, sizeof(l->name), "%s", lname);
			l->protocol = (enum listener_protocol)-1;
		}
		if (strcmp(name, "protocol") == 0) {
			if (parse_protocol(value, &l->protocol) < 0) {
				snprintf(msg, sizeof(msg),
					 "[listener %s] protocol '%s' is not one of smtp, submission, "
					 "submissions, imap, imaps, pop3, pop3s", lname, value);
				goto fail;
			}
		} else if (strcmp(name, "address") == 0) {
			char host[256];
			int port;
			snprintf(l->address, sizeof(l->address), "%s", value);
			if (config_split_address(value, host, sizeof(host), &port) < 0) {
				snprintf(msg, sizeof(msg),
					 "[listener %s] address '%s' is not HOST:PORT (IPv6: [ADDR]:PORT)",
					 lname, value);
				goto fail;
			}
		} else {
			snprintf(msg, sizeof(msg), "unknown key '%s' in [listener %s] (known: protocol, address)",
				 name, lname);
			goto fail;
		}
		return 1;
	}

	if (strncmp(section, "route", 5) == 0 && (section[5] == ' ' || section[5] == '\0')) {
		const char *dom = section[5] == ' ' ? section + 6 : "";
		while (*dom == ' ')
			dom++;
		if (*dom == '\0') {
			snprintf(msg, sizeof(msg), "[route] needs a domain: [route DOMAIN]");
			goto fail;
		}
		struct config_route *r = NULL;
		for (int i = 0; i < cfg->n_routes; i++)
			if (strcasecmp(cfg->routes[i].domain, dom) == 0)
				r = &cfg->routes[i];
		if (r == NULL) {
			if (cfg->n_routes >= CONFIG_MAX_ROUTES) {
				snprintf(msg, sizeof(msg), "too many routes (at most %d)",
					 CONFIG_MAX_ROUTES);
				goto fail;
			}
			r = &cfg->routes[cfg->n_routes++];
			memset(r, 0, sizeof(*r));
			r->tls_verify = 1;
			snprintf(r->domain, sizeof(r->domain), "%s", dom);
			for (char *p = r->domain; *p; p++)
				if (*p >= 'A' && *p <= 'Z')
					*p = (char)(*p - 'A' + 'a');
		}
		if (route_set(r, name, value, msg, sizeof(msg)) < 0)
			goto fail;
		return 1;
	}

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option *o = &options[i];
		if (strcmp(o->section, section) != 0 || strcmp(o->key, name) != 0)
			continue;
		if (option_set(cfg, o, value, &why) < 0) {
			snprintf(msg, sizeof(msg), "[%s] %s = %s: %s", section, name, value, why);
			goto fail;
		}
		return 1;
	}
	int known_section = strcmp(section, "") == 0;
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (strcmp(options[i].section, section) == 0)
			known_section = 1;
	if (!known_section)
		snprintf(msg, sizeof(msg), "unknown section [%s]", section);
	else if (section[0] == '\0')
		snprintf(msg, sizeof(msg), "'%s' is outside any [section]", name);
	else
		snprintf(msg, sizeof(msg), "unknown key '%s' in [%s]", name, section);
fail:
	if (!ctx->first_error) {
		ctx->first_error = 1;
		set_error(cfg, 0, "%s", msg);
	}
	return 0;
}

static int apply_defaults(struct tern_config *cfg, const char **why)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option *o = &options[i];
		const char *def = cfg->dev && o->dev_def ? o->dev_def : o->def;
		if (def == NULL)
			continue;
		if (option_set(cfg, o, def, why) < 0)
			return -1;
	}
	char host[256];
	if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	cfg->hostname = strdup(host);
	return cfg->hostname ? 0 : -1;
}

static void dev_listeners(struct tern_config *cfg)
{
	static const struct {
		const char *name;
		enum listener_protocol p;
		const char *address;
	} dev[] = {
		{ "smtp", LISTENER_SMTP, "127.0.0.1:2525" },
		{ "submission", LISTENER_SUBMISSION, "127.0.0.1:2587" },
		{ "submissions", LISTENER_SUBMISSIONS, "127.0.0.1:2465" },
		{ "imap", LISTENER_IMAP, "127.0.0.1:2143" },
		{ "imaps", LISTENER_IMAPS, "127.0.0.1:2993" },
		{ "pop3", LISTENER_POP3, "127.0.0.1:2110" },
		{ "pop3s", LISTENER_POP3S, "127.0.0.1:2995" },
	};
	for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) {
		struct config_listener *l = &cfg->listeners[cfg->n_listeners++];
		memset(l, 0, sizeof(*l));
		snprintf(l->name, sizeof(l->name), "%s", dev[i].name);
		l->protocol = dev[i].p;
		snprintf(l->address, sizeof(l->address), "%s", dev[i].address);
	}
}

static int validate_delivery(struct tern_config *cfg)
{
	char *list = strdup(cfg->retry_schedule), *save = NULL;
	if (list == NULL)
		return -1;
	cfg->n_retry = 0;
	for (char *tok = strtok_r(list, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
		long long n;
		const char *why = NULL;
		if (cfg->n_retry >= CONFIG_MAX_RETRIES) {
			set_error(cfg, 0, "[delivery] retry_schedule: at most %d steps", CONFIG_MAX_RETRIES);
			free(list);
			return -1;
		}
		if (parse_number(tok, OPT_SECONDS, &n, &why) < 0 || n < 1 || n > 7 * 86400) {
			set_error(cfg, 0, "[delivery] retry_schedule: '%s' is not a duration from 1s "
				  "to 7d (%s)", tok, why ? why : "out of range");
			free(list);
			return -1;
		}
		cfg->retry[cfg->n_retry++] = (int)n;
	}
	free(list);
	if (cfg->n_retry == 0) {
		set_error(cfg, 0, "[delivery] retry_schedule is empty");
		return -1;
	}
	if (cfg->resolver[0] != '\0') {
		const char *at = strchr(cfg->resolver, '@');
		unsigned char tmp[16];
		char addr[64];
		snprintf(addr, sizeof(addr), "%.*s", at ? (int)(at - cfg->resolver) : 63,
			 cfg->resolver);
		if ((inet_pton(AF_INET, addr, tmp) != 1 && inet_pton(AF_INET6, addr, tmp) != 1) ||
		    (at != NULL && (atoi(at + 1) <= 0 || atoi(at + 1) > 65535))) {
			set_error(cfg, 0, "[delivery] resolver '%s' is not ADDRESS or ADDRESS@PORT",
				  cfg->resolver);
			return -1;
		}
	}
	memset(&cfg->relay, 0, sizeof(cfg->relay));
	if (cfg->relay_host[0] != '\0') {
		char msg[512];
		if (route_set(&cfg->relay, "host", cfg->relay_host, msg, sizeof(msg)) < 0 ||
		    route_set(&cfg->relay, "tls", cfg->relay_tls, msg, sizeof(msg)) < 0) {
			set_error(cfg, 0, "%s", msg);
			return -1;
		}
		cfg->relay.tls_verify = cfg->relay_tls_verify;
		snprintf(cfg->relay.username, sizeof(cfg->relay.username), "%s", cfg->relay_username);
		snprintf(cfg->relay.password, sizeof(cfg->relay.password), "%s", cfg->relay_password);
	}
	if ((cfg->relay_username[0] == '\0') != (cfg->relay_password[0] == '\0')) {
		set_error(cfg, 0, "[relay] username and password must be set together");
		return -1;
	}
	if (cfg->relay.host[0] != '\0' && cfg->relay.tls == RELAY_TLS_NONE &&
	    cfg->relay.username[0] != '\0') {
		set_error(cfg, 0, "[relay] username with tls = none would send the password in "
				  "clear: use starttls or implicit");
		return -1;
	}
	for (int i = 0; i < cfg->n_routes; i++) {
		struct config_route *r = &cfg->routes[i];
		if (r->tls == RELAY_TLS_NONE && r->username[0] != '\0') {
			set_error(cfg, 0, "[route %s] username with tls = none would send the "
					  "password in clear", r->domain);
			return -1;
		}
		if (r->host[0] == '\0') {
			set_error(cfg, 0, "[route %s] has no host", r->domain);
			return -1;
		}
		if ((r->username[0] == '\0') != (r->password[0] == '\0')) {
			set_error(cfg, 0, "[route %s] username and password must be set together",
				  r->domain);
			return -1;
		}
	}
	return 0;
}

const struct config_route *config_route_for(const struct tern_config *cfg, const char *domain)
{
	for (int i = 0; i < cfg->n_routes; i++)
		if (strcasecmp(cfg->routes[i].domain, domain) == 0)
			return &cfg->routes[i];
	return cfg->relay.host[0] != '\0' ? &cfg->relay : NULL;
}

static int validate(struct tern_config *cfg)
{
	if (strcmp(cfg->log_level, "debug") != 0 && strcmp(cfg->log_level, "info") != 0 &&
	    strcmp(cfg->log_level, "warn") != 0 && strcmp(cfg->log_level, "error") != 0) {
		set_error(cfg, 0, "[server] log_level '%s' is not debug, info, warn or error",
			  cfg->log_level);
		return -1;
	}
	if (cfg->data_dir[0] == '\0') {
		set_error(cfg, 0, "[server] data_dir must not be empty");
		return -1;
	}
	if ((cfg->tls_cert[0] == '\0') != (cfg->tls_key[0] == '\0')) {
		set_error(cfg, 0, "[tls] cert and key must be set together");
		return -1;
	}
	for (int i = 0; i < cfg->n_listeners; i++) {
		struct config_listener *l = &cfg->listeners[i];
		if ((int)l->protocol == -1) {
			set_error(cfg, 0, "[listener %s] has no protocol", l->name);
			return -1;
		}
		if (l->address[0] == '\0') {
			set_error(cfg, 0, "[listener %s] has no address", l->name);
			return -1;
		}
		for (int j = 0; j < i; j++) {
			if (strcmp(cfg->listeners[j].address, l->address) == 0) {
				set_error(cfg, 0, "[listener %s] and [listener %s] both use %s",
					  cfg->listeners[j].name, l->name, l->address);
				return -1;
			}
		}
	}
	if (cfg->n_listeners == 0) {
		set_error(cfg, 0, "no [listener NAME] section: tern would not accept any mail");
		return -1;
	}
	if (validate_delivery(cfg) < 0)
		return -1;
	char *nets = strdup(cfg->trusted_networks), *save = NULL;
	if (nets == NULL)
		return -1;
	for (char *tok = strtok_r(nets, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
		if (cfg->n_networks >= CONFIG_MAX_NETWORKS) {
			set_error(cfg, 0, "[smtp] trusted_networks: at most %d networks",
				  CONFIG_MAX_NETWORKS);
			free(nets);
			return -1;
		}
		if (config_network_parse(tok, &cfg->networks[cfg->n_networks]) < 0) {
			set_error(cfg, 0, "[smtp] trusted_networks: '%s' is not an address or "
				  "ADDRESS/PREFIX", tok);
			free(nets);
			return -1;
		}
		cfg->n_networks++;
	}
	free(nets);
	return 0;
}

struct tern_config *config_load(const char *path, int dev, const char **error_r)
{
	struct tern_config *cfg = calloc(1, sizeof(*cfg));
	const char *why = "out of memory";
	if (cfg == NULL) {
		*error_r = why;
		return NULL;
	}
	cfg->dev = dev;
	if (path == NULL && !dev)
		path = CONFIG_DEFAULT_PATH;
	if (path != NULL)
		snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	if (apply_defaults(cfg, &why) < 0) {
		set_error(cfg, 0, "%s", why);
		goto fail;
	}
	if (path != NULL) {
		struct parse_ctx ctx = { .cfg = cfg };
		FILE *f = fopen(path, "r");
		if (f == NULL) {
			set_error(cfg, 0, "cannot open: %s", strerror(errno));
			goto fail;
		}
		int line = ini_parse_file(f, config_ini_handler, &ctx);
		fclose(f);
		if (line != 0) {
			if (ctx.first_error) {
				/* Re-prefix the handler's message with the line inih reports. */
				char msg[1024];
				const char *colon = strstr(config_error, ": ");
				snprintf(msg, sizeof(msg), "%s", colon ? colon + 2 : config_error);
				set_error(cfg, line, "%s", msg);
			} else {
				set_error(cfg, line, "syntax error (expected [section] or key = value)");
			}
			goto fail;
		}
	}
	if (cfg->n_listeners == 0 && dev)
		dev_listeners(cfg);
	if (validate(cfg) < 0)
		goto fail;
	return cfg;
fail:
	*error_r = config_error;
	config_free(&cfg);
	return NULL;
}

void config_free(struct tern_config **cfgp)
{
	struct tern_config *cfg = *cfgp;
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (options[i].type == OPT_STRING)
			free(*(char **)((char *)cfg + options[i].offset));
	free(cfg);
	*cfgp = NULL;
}

const char *listener_protocol_name(enum listener_protocol p)
{
	switch (p) {
	case LISTENER_SMTP: return "smtp";
	case LISTENER_SUBMISSION: return "submission";
	case LISTENER_SUBMISSIONS: return "submissions";
	case LISTENER_IMAP: return "imap";
	case LISTENER_IMAPS: return "imaps";
	case LISTENER_POP3: return "pop3";
	case LISTENER_POP3S: return "pop3s";
	}
	return "?";
}

int config_split_address(const char *address, char *host, size_t host_cap, int *port_r)
{
	const char *colon;
	const char *h = address;
	size_t hlen;
	if (address[0] == '[') {
		const char *close = strchr(address, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		h = address + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(address, ':');
		if (colon == NULL || memchr(address, ':', (size_t)(colon - address)) != NULL)
			return -1;
		hlen = (size_t)(colon - address);
	}
	if (hlen == 0 || hlen >= host_cap)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
		return -1;
	*port_r = (int)port;
	return 0;
}

int config_network_parse(const char *s, struct config_network *net)
{
	char addr[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	memset(net, 0, sizeof(*net));
	int maxp;
	if (inet_pton(AF_INET, addr, net->addr) == 1) {
		net->family = AF_INET;
		maxp = 32;
	} else if (inet_pton(AF_INET6, addr, net->addr) == 1) {
		net->family = AF_INET6;
		maxp = 128;
	} else {
		return -1;
	}
	net->prefix = maxp;
	if (slash) {
		char *end;
		long p = strtol(slash + 1, &end, 10);
		if (end == slash + 1 || *end != '\0' || p < 0 || p > maxp)
			return -1;
		net->prefix = (int)p;
	}
	return 0;
}

static int prefix_match(const unsigned char *a, const unsigned char *b, int prefix)
{
	int full = prefix / 8, rest = prefix % 8;
	if (memcmp(a, b, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

int config_network_match(const struct config_network *nets, int n, const void *sa_v)
{
	const struct sockaddr *sa = sa_v;
	unsigned char v4[4];
	const unsigned char *a6 = NULL;
	int is4 = 0;
	if (sa->sa_family == AF_INET) {
		memcpy(v4, &((const struct sockaddr_in *)sa_v)->sin_addr, 4);
		is4 = 1;
	} else if (sa->sa_family == AF_INET6) {
		a6 = ((const struct sockaddr_in6 *)sa_v)->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		if (memcmp(a6, mapped, 12) == 0) {
			memcpy(v4, a6 + 12, 4);
			is4 = 1;
		}
	} else {
		return 0;
	}
	for (int i = 0; i < n; i++) {
		if (nets[i].family == AF_INET && is4 && prefix_match(nets[i].addr, v4, nets[i].prefix))
			return 1;
		if (nets[i].family == AF_INET6 && !is4 && a6 &&
		    prefix_match(nets[i].addr, a6, nets[i].prefix))
			return 1;
	}
	return 0;
}

static const char *type_name(enum opt_type t)
{
	switch (t) {
	case OPT_STRING: return "string";
	case OPT_INT: return "integer";
	case OPT_BOOL: return "yes/no";
	case OPT_SIZE: return "size (K, M, G)";
	case OPT_SECONDS: return "duration (s, m, h, d)";
	}
	return "?";
}

void config_write_reference(FILE *out)
{
	fprintf(out, "# Configuration reference\n\n"
		     "Generated by `tern config reference` from the option table in "
		     "src/event/config.c; do not edit by hand.\n\n"
		     "tern reads one INI file (`-c FILE`, default `%s`). `tern check` "
		     "validates it and names the file and line of the first error. "
		     "`tern serve --dev` without `-c` uses the built-in defaults with the "
		     "`--dev` column and loopback listeners on ports 2525 (smtp), 2587 "
		     "(submission), 2465 (submissions), 2143 (imap), 2993 (imaps), 2110 (pop3) "
		     "and 2995 (pop3s).\n",
		CONFIG_DEFAULT_PATH);
	const char *section = "";
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option *o = &options[i];
		if (strcmp(section, o->section) != 0) {
			section = o->section;
			fprintf(out, "\n## [%s]\n\n| key | type | default | --dev | meaning |\n"
				     "|---|---|---|---|---|\n", section);
		}
		fprintf(out, "| `%s` | %s | %s%s%s | %s%s%s | %s |\n", o->key, type_name(o->type),
			o->def ? "`" : "", o->def ? (o->def[0] ? o->def : "(empty)") : "(see meaning)",
			o->def ? "`" : "", o->dev_def ? "`" : "", o->dev_def ? o->dev_def : "",
			o->dev_def ? "`" : "", o->doc);
	}
	fprintf(out, "\n## [listener NAME]\n\nOne section per listening socket; NAME is yours "
		     "to choose.\n\n| key | meaning |\n|---|---|\n");
	for (size_t i = 0; i < sizeof(listener_keys) / sizeof(listener_keys[0]); i++)
		fprintf(out, "| `%s` | %s |\n", listener_keys[i].key, listener_keys[i].doc);
	fprintf(out, "\n## [route DOMAIN]\n\nSends mail for one destination domain through a "
		     "given host instead of its MX (and instead of [relay]).\n\n| key | meaning |\n"
		     "|---|---|\n");
	for (size_t i = 0; i < sizeof(route_keys) / sizeof(route_keys[0]); i++)
		fprintf(out, "| `%s` | %s |\n", route_keys[i].key, route_keys[i].doc);
}
