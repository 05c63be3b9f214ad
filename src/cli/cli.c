/* The `tern` administration commands: dispatch, `check` and `config reference`.  The
 * directory commands are in cli_directory.c, the queue commands in cli_queue.c. */
#include "cli/cli.h"

#include "base/log.h"
#include "cli/cli_directory.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Only the command lines: main() puts its own header, `serve` and the global options
 * around them for `tern --help`. */
void cli_usage(FILE *out)
{
	cli_directory_usage(out, NULL);
	fprintf(out,
		"  reindex ADDRESS                    rebuild a mailbox index from the Maildir files\n"
		"  queue list                         show queued messages and their recipients\n"
		"  queue show ID                      one message: envelope and header\n"
		"  queue stats                        counts by destination and age\n"
		"  queue flush                        retry every deferred message now\n"
		"  queue retry|hold|release|delete ID retry, hold back, release or remove one\n"
		"  check                              check the configuration file\n"
		"  config reference                   print the configuration reference (Markdown)\n");
}

/* What `tern help` and a usage error show, as main() does for `tern --help`. */
static void cli_usage_full(FILE *out)
{
	fprintf(out, "usage: tern [-c FILE] [--dev] COMMAND [ARGS]\n"
		     "\n"
		     "  serve                              run the mail server\n");
	cli_usage(out);
	fprintf(out, "\n"
		     "  -c FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"
		     "  --dev     development defaults: data in ./var, listeners on 127.0.0.1\n"
		     "            ports 2525, 2587, 2465 (SMTP), 2143, 2993 (IMAP), 2110, 2995 (POP3)\n");
}

static int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int cli_usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("tern: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\n\n", stderr);
	va_end(ap);
	cli_usage_full(stderr);
	return 2;
}

static int cli_check(const char *config_path, int dev)
{
	const char *error;
	struct tern_config *cfg = config_load(config_path, dev, &error);
	if (cfg == NULL) {
		/* The message already starts with "FILE:LINE:". */
		fprintf(stderr, "tern: %s\n", error);
		return 1;
	}
	printf("%s: ok\n", cfg->path[0] != '\0' ? cfg->path : "(built-in --dev defaults)");
	config_free(&cfg);
	return 0;
}

static int cli_config(int argc, char **argv)
{
	if (argc != 2 || strcmp(argv[1], "reference") != 0)
		return cli_usage_error("the only config command is: tern config reference");
	config_write_reference(stdout);
	return fflush(stdout) == 0 ? 0 : 1;
}

static int cli_queue_run(const char *config_path, int dev, int argc, char **argv)
{
	const char *error;
	struct tern_config *cfg = config_load(config_path, dev, &error);
	if (cfg == NULL) {
		fprintf(stderr, "tern: %s\n", error);
		return 1;
	}
	/* cli_queue checks its arguments and drops privileges itself. */
	int rc = cli_queue(cfg, argc, argv);
	config_free(&cfg);
	return rc;
}

int cli_run(const char *config_path, int dev, int argc, char **argv)
{
	if (argc < 1 || argv[0] == NULL)
		return cli_usage_error("no command given");
	log_set_process("cli");

	const char *cmd = argv[0];
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
		cli_usage_full(stdout);
		return 0;
	}
	if (strcmp(cmd, "domain") == 0 || strcmp(cmd, "user") == 0 || strcmp(cmd, "alias") == 0)
		return cli_directory_run(config_path, dev, argc, argv);
	if (strcmp(cmd, "queue") == 0)
		return cli_queue_run(config_path, dev, argc, argv);
	if (strcmp(cmd, "check") == 0) {
		if (argc != 1)
			return cli_usage_error("check takes no arguments (got '%s')", argv[1]);
		return cli_check(config_path, dev);
	}
	if (strcmp(cmd, "config") == 0)
		return cli_config(argc, argv);
	if (strcmp(cmd, "reindex") == 0)
		return cli_reindex(config_path, dev, argc, argv);
	return cli_usage_error("unknown command '%s'", cmd);
}
