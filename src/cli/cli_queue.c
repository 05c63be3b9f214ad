/* `tern queue ...`: what is waiting in DATA_DIR/queue/ and for whom. */
#include "cli/cli.h"

#include "base/privs.h"
#include "queue/queue_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void cli_queue_usage(FILE *out)
{
	fprintf(out, "usage: tern queue list    show queued messages and their recipients\n");
}

struct cli_queue_ids {
	char (*ids)[QUEUE_ID_MAX];
	size_t n, cap;
	int oom;
};

static void cli_queue_collect(void *ctx, const char *id)
{
	struct cli_queue_ids *l = ctx;
	if (l->oom)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap == 0 ? 64 : l->cap * 2;
		void *p = realloc(l->ids, cap * sizeof(*l->ids));
		if (p == NULL) {
			l->oom = 1;
			return;
		}
		l->ids = p;
		l->cap = cap;
	}
	snprintf(l->ids[l->n++], QUEUE_ID_MAX, "%s", id);
}

/* Addresses come from the network: control bytes are shown escaped so that a crafted
 * address cannot drive the admin's terminal. */
static void cli_queue_print_escaped(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			printf("\\x%02x", *p);
		else
			putchar(*p);
	}
}

static void cli_queue_print_addr(const char *s)
{
	putchar('<');
	cli_queue_print_escaped(s);
	putchar('>');
}

static const char *cli_queue_status_name(char status)
{
	switch (status) {
	case QUEUE_STATUS_PENDING:
		return "pending";
	case QUEUE_STATUS_DELIVERED:
		return "delivered";
	case QUEUE_STATUS_FAILED:
		return "failed";
	case QUEUE_STATUS_RELAY:
		return "relayed";
	default:
		return NULL;
	}
}

static void cli_queue_print(const struct queue_envelope *env)
{
	char when[64];
	struct tm tm;
	time_t t = (time_t)env->arrival;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(when, sizeof(when), "@%lld", env->arrival);

	printf("%s  arrived %s  size %lld\n", env->id, when, (long long)env->data_len);
	printf("  %-10s ", "from");
	cli_queue_print_addr(env->from);
	if (env->auth_user != NULL) {
		printf("  (authenticated as ");
		cli_queue_print_escaped(env->auth_user);
		printf(")");
	}
	putchar('\n');
	for (int i = 0; i < env->n_rcpts; i++) {
		const char *st = cli_queue_status_name(env->rcpts[i].status);
		char other[32];
		if (st == NULL) {
			snprintf(other, sizeof(other), "status %c", env->rcpts[i].status);
			st = other;
		}
		printf("  %-10s ", st);
		cli_queue_print_addr(env->rcpts[i].addr);
		putchar('\n');
	}
}

static int cli_queue_list(const struct tern_config *cfg)
{
	char queue_dir[4096];
	const char *err;
	struct stat st;

	snprintf(queue_dir, sizeof(queue_dir), "%s/queue", cfg->data_dir);
	if (stat(queue_dir, &st) < 0 && errno == ENOENT) {
		printf("queue is empty\n");
		return 0;
	}
	struct cli_queue_ids l = { 0 };
	if (queue_dir_scan(queue_dir, cli_queue_collect, &l, &err) < 0) {
		fprintf(stderr, "tern: %s\n", err);
		return 1;
	}
	if (l.oom) {
		free(l.ids);
		fprintf(stderr, "tern: out of memory listing %s\n", queue_dir);
		return 1;
	}

	size_t shown = 0, damaged = 0;
	for (size_t i = 0; i < l.n; i++) {
		char path[4096 + QUEUE_ID_MAX];
		struct queue_envelope env;
		int fd;
		snprintf(path, sizeof(path), "%s/%s", queue_dir, l.ids[i]);
		if (queue_file_open(path, &env, &fd, &err) < 0) {
			/* Delivered and removed since the directory was read. */
			if (errno == ENOENT)
				continue;
			printf("%s  damaged: %s\n\n", l.ids[i], err);
			damaged++;
			continue;
		}
		close(fd);
		cli_queue_print(&env);
		putchar('\n');
		queue_envelope_free(&env);
		shown++;
	}
	free(l.ids);

	if (shown == 0 && damaged == 0)
		printf("queue is empty\n");
	else if (damaged == 0)
		printf("%zu message%s\n", shown, shown == 1 ? "" : "s");
	else
		printf("%zu message%s, %zu damaged file%s\n", shown, shown == 1 ? "" : "s",
		       damaged, damaged == 1 ? "" : "s");
	return 0;
}

int cli_queue(const struct tern_config *cfg, int argc, char **argv)
{
	const char *err;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
			  strcmp(argv[1], "help") == 0)) {
		cli_queue_usage(stdout);
		return 0;
	}
	if (argc != 2 || strcmp(argv[1], "list") != 0) {
		if (argc > 2 && strcmp(argv[1], "list") == 0)
			fprintf(stderr, "tern queue list: unexpected argument '%s'\n", argv[2]);
		else if (argc >= 2)
			fprintf(stderr, "tern queue: unknown subcommand '%s'\n", argv[1]);
		cli_queue_usage(stderr);
		return 2;
	}
	/* The queue belongs to the unprivileged user: reading it as that user keeps the
	 * CLI from creating root-owned files there and from reading what the server
	 * could not. */
	if (privs_drop_to(cfg->user, cfg->data_dir, &err) < 0) {
		fprintf(stderr, "tern: %s\n", err);
		return 1;
	}
	return cli_queue_list(cfg);
}
