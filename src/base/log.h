/* One log line per event: "TIMESTAMP LEVEL subsystem key=value ...".
 * Written with one write(2) per line, so lines from several processes sharing
 * the same file or stderr never interleave. */
#ifndef TERN_BASE_LOG_H
#define TERN_BASE_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* path NULL or "" or "-": stderr.  Returns 0 or -1 with *error_r set. */
int log_open(const char *path, enum log_level min_level, const char **error_r);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int log_level_parse(const char *name, enum log_level *level_r);
/* The process name shown in each line (master, worker-0, delivery, cli). */
void log_set_process(const char *name);

void log_msg(enum log_level level, const char *subsys, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level level, const char *subsys, const char *fmt, va_list ap);
_Noreturn void log_fatal(const char *subsys, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_debug(sub, ...) log_msg(LOG_LEVEL_DEBUG, sub, __VA_ARGS__)
#define log_info(sub, ...)  log_msg(LOG_LEVEL_INFO, sub, __VA_ARGS__)
#define log_warn(sub, ...)  log_msg(LOG_LEVEL_WARN, sub, __VA_ARGS__)
#define log_error(sub, ...) log_msg(LOG_LEVEL_ERROR, sub, __VA_ARGS__)

/* Copies s into out (cap bytes) so that it is safe as a key=value value:
 * control characters, quotes, backslashes and spaces are escaped, and the value is
 * quoted when it contains spaces.  Returns out. */
char *log_quote(char *out, size_t cap, const char *s, size_t len);

#endif
