/* Private to src/cli/: the directory commands (`domain`, `user`, `alias`) of
 * cli_directory.c, called by the dispatcher in cli.c. */
#ifndef TERN_CLI_CLI_DIRECTORY_H
#define TERN_CLI_CLI_DIRECTORY_H

#include <stdio.h>

/* argv[0] is "domain", "user" or "alias".  Checks the arguments, loads the
 * configuration, drops privileges, opens the directory and runs the command.  Returns
 * the exit status (0, 1 failed, 2 usage). */
int cli_directory_run(const char *config_path, int dev, int argc, char **argv);

/* Usage lines of group ("domain", "user", "alias"), or of all three when group is NULL. */
void cli_directory_usage(FILE *out, const char *group);

#endif
