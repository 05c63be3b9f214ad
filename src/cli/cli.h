/* The `tern` administration subcommands (everything but `serve`). */
#ifndef TERN_CLI_CLI_H
#define TERN_CLI_CLI_H

#include "event/config.h"

/* argv[0] is the subcommand ("domain", "user", "alias", "queue", "reindex", "check",
 * "config").
 * config_path NULL: the default path (or built-in defaults when dev).  Returns the
 * process exit status: 0 ok, 1 failed (message on stderr), 2 usage error. */
int cli_run(const char *config_path, int dev, int argc, char **argv);

/* `tern queue ...` (src/cli/cli_queue.c); argv[0] is "queue". */
int cli_queue(const struct tern_config *cfg, int argc, char **argv);

/* `tern reindex ADDRESS` (src/cli/cli_mailbox.c); argv[0] is "reindex". */
int cli_reindex(const char *config_path, int dev, int argc, char **argv);

/* Prints the usage of every subcommand to out. */
void cli_usage(FILE *out);

#endif
