/* The master process of `tern serve`: binds, forks and supervises the workers. */
#ifndef TERN_DAEMON_MASTER_H
#define TERN_DAEMON_MASTER_H

/* Runs until SIGTERM/SIGINT.  config_path NULL: default path, or built-in defaults
 * with dev.  Returns the process exit status. */
int master_run(const char *config_path, int dev);

#endif
