/* The configuration: one table of options (name, type, bounds, default, field) drives
 * parsing, `tern check` and the generated reference in docs/configuration.md. */
#ifndef TERN_EVENT_CONFIG_H
#define TERN_EVENT_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CONFIG_MAX_LISTENERS 32
#define CONFIG_MAX_NETWORKS  32
#define CONFIG_MAX_ROUTES    64
#define CONFIG_MAX_RETRIES   16
#define CONFIG_DEFAULT_PATH  "/etc/tern/tern.conf"

enum listener_protocol {
	LISTENER_SMTP,        /* port 25, MX role */
	LISTENER_SUBMISSION,  /* port 587, STARTTLS then AUTH */
	LISTENER_SUBMISSIONS, /* port 465, implicit TLS then AUTH */
	LISTENER_IMAP,        /* port 143, STARTTLS then LOGIN */
	LISTENER_IMAPS,       /* port 993, implicit TLS */
	LISTENER_POP3,        /* port 110, STLS then USER/PASS */
	LISTENER_POP3S,       /* port 995, implicit TLS */
};

struct config_listener {
	char name[64];
	enum listener_protocol protocol;
	char address[256]; /* HOST:PORT or [V6]:PORT as written */
	int line;          /* where it was declared, for error messages */
};

enum relay_tls { RELAY_TLS_STARTTLS, RELAY_TLS_IMPLICIT, RELAY_TLS_NONE };

/* A next hop that replaces the MX lookup: [relay] for everything, [route DOMAIN] for one
 * destination domain. */
struct config_route {
	char domain[256];  /* "" for [relay] */
	char host[256];    /* HOST:PORT */
	enum relay_tls tls;
	int tls_verify;    /* the host's certificate must verify for its name */
	char username[256];
	char password[256];
	int line;
};

/* An IPv4 or IPv6 network in CIDR form. */
struct config_network {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int prefix;
};

struct tern_config {
	char path[1024]; /* file it was read from; "" for the built-in defaults */
	int dev;

	/* [server] */
	char *hostname;
	char *data_dir;
	char *user;
	int workers;
	char *log_file;
	char *log_level;

	/* [tls] */
	char *tls_cert;
	char *tls_key;

	/* [smtp] */
	long long max_message_size;
	int max_recipients;
	int max_connections;
	int max_connections_per_ip;
	int command_timeout;
	int data_timeout;
	int auth_plaintext_loopback;
	int auth_max_failures;
	int auth_failure_window;
	char *trusted_networks;
	struct config_network networks[CONFIG_MAX_NETWORKS];
	int n_networks;

	/* [mailbox] */
	int mailbox_max_connections;
	int mailbox_max_connections_per_ip;
	int imap_timeout;
	int imap_idle_timeout;
	int pop3_timeout;

	/* [delivery] */
	char *resolver;
	int delivery_port;
	char *helo_name;
	char *retry_schedule;
	int retry[CONFIG_MAX_RETRIES]; /* seconds between attempts; the last one repeats */
	int n_retry;
	int queue_lifetime;
	int delay_warning;
	int max_per_destination;
	int max_outbound;
	int connect_timeout;
	int client_timeout;

	/* [relay] (the smarthost; host "" when none) */
	char *relay_host;
	char *relay_tls;
	char *relay_username;
	char *relay_password;
	int relay_tls_verify;
	struct config_route relay;

	struct config_route routes[CONFIG_MAX_ROUTES];
	int n_routes;

	struct config_listener listeners[CONFIG_MAX_LISTENERS];
	int n_listeners;
};

/* Reads path (NULL: CONFIG_DEFAULT_PATH, or only the built-in defaults when dev is set
 * and no path is given).  Returns a new config owned by the caller, or NULL with
 * *error_r (a static buffer, "FILE:LINE: what is wrong") set. */
struct tern_config *config_load(const char *path, int dev, const char **error_r);
void config_free(struct tern_config **cfg);

const char *listener_protocol_name(enum listener_protocol p);
/* Splits "HOST:PORT" / "[V6]:PORT" into host and port.  0 or -1. */
int config_split_address(const char *address, char *host, size_t host_cap, int *port_r);
/* Parses "10.0.0.0/8" or "::1" into net.  0 or -1. */
int config_network_parse(const char *s, struct config_network *net);
/* Does the socket address (struct sockaddr *) fall in one of cfg's trusted networks? */
int config_network_match(const struct config_network *nets, int n, const void *sockaddr);

/* The route for a destination domain: its [route DOMAIN], else [relay], else NULL
 * (deliver by MX). */
const struct config_route *config_route_for(const struct tern_config *cfg, const char *domain);

/* Writes the configuration reference (Markdown) generated from the option table. */
void config_write_reference(FILE *out);

#endif
