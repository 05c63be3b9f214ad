#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static enum log_level log_min = LOG_LEVEL_INFO;
static char log_process[32] = "tern";

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int log_open(const char *path, enum log_level min_level, const char **error_r)
{
	log_min = min_level;
	if (path == NULL || path[0] == '\0' || strcmp(path, "-") == 0) {
		log_fd = 2;
		return 0;
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	if (log_fd > 2)
		close(log_fd);
	log_fd = fd;
	return 0;
}

int log_level_parse(const char *name, enum log_level *level_r)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_set_process(const char *name)
{
	snprintf(log_process, sizeof(log_process), "%s", name);
}

void log_vmsg(enum log_level level, const char *subsys, const char *fmt, va_list ap)
{
	if (level < log_min)
		return;
	char line[4096];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s[%d] %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level], log_process,
			 (int)getpid(), subsys);
	if (n < 0)
		return;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	/* One write per line; a short write on a pipe is not retried line-by-line. */
	ssize_t w;
	do {
		w = write(log_fd, line, len);
	} while (w < 0 && errno == EINTR);
}

void log_msg(enum log_level level, const char *subsys, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, subsys, fmt, ap);
	va_end(ap);
}

void log_fatal(const char *subsys, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_ERROR, subsys, fmt, ap);
	va_end(ap);
	exit(1);
}

char *log_quote(char *out, size_t cap, const char *s, size_t len)
{
	size_t o = 0;
	int quote = 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] == ' ')
			quote = 1;
	if (cap < 4) {
		if (cap > 0)
			out[0] = '\0';
		return out;
	}
	if (quote)
		out[o++] = '"';
	for (size_t i = 0; i < len && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	if (quote)
		out[o++] = '"';
	out[o] = '\0';
	return out;
}
