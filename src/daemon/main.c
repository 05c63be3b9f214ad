/* tern: one binary for the server (`tern serve`) and its administration commands. */
#include "cli/cli.h"
#include "daemon/master.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TERN_VERSION "0.1.0"

static void usage(FILE *out)
{
	fprintf(out, "usage: tern [-c FILE] [--dev] COMMAND ...\n\n"
		     "  serve                              run the mail server in the foreground\n");
	cli_usage(out);
	fprintf(out, "\n  -c FILE    configuration file (default %s)\n"
		     "  --dev      development defaults: data in ./var, loopback ports 2525/2587/2465 (SMTP),\n"
		     "             2143/2993 (IMAP), 2110/2995 (POP3)\n",
		CONFIG_DEFAULT_PATH);
}

int main(int argc, char **argv)
{
	const char *config_path = NULL;
	int dev = 0;
	char **rest = calloc((size_t)argc + 1, sizeof(char *));
	int n = 0;
	if (rest == NULL)
		return 1;
	/* Global options may stand before or after the command. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "tern: %s needs a file name\n", argv[i]);
				return 2;
			}
			config_path = argv[++i];
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			config_path = argv[i] + 9;
		} else if (strcmp(argv[i], "--dev") == 0) {
			dev = 1;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("tern %s\n", TERN_VERSION);
			return 0;
		} else {
			rest[n++] = argv[i];
		}
	}
	if (n == 0) {
		usage(stderr);
		return 2;
	}
	if (strcmp(rest[0], "serve") == 0) {
		if (n > 1) {
			fprintf(stderr, "tern: serve takes no arguments besides -c FILE and --dev\n");
			return 2;
		}
		return master_run(config_path, dev);
	}
	int rc = cli_run(config_path, dev, n, rest);
	free(rest);
	return rc;
}
