/* `tern queue ...`: what is waiting in DATA_DIR/queue/ and for whom. */
#include "cli/cli.h"

#include "base/privs.h"
#include "queue/queue_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <strings.h>
#include <unistd.h>
#include <utime.h>

static void cli_queue_usage(FILE *out)
{
	fprintf(out, "usage: tern queue list          queued and held messages, their recipients\n"
		     "       tern queue show ID       one message: envelope and header\n"
		     "       tern queue stats         counts by destination and age\n"
		     "       tern queue flush         retry every deferred message now\n"
		     "       tern queue retry ID      retry one message now\n"
		     "       tern queue hold ID       keep a message from being delivered\n"
		     "       tern queue release ID    deliver a held message again\n"
		     "       tern queue delete ID     remove a message without a bounce\n");
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
	case QUEUE_STATUS_WARNED:
		return "pending";
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

static void print_time(const char *label, long long t)
{
	char when[64];
	struct tm tm;
	time_t tt = (time_t)t;
	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(when, sizeof(when), "@%lld", t);
	printf("  %-10s %s\n", label, when);
}

struct cli_queue_totals {
	size_t messages, damaged, pending;
};

/* Lists the messages of one directory (queue/ or queue/hold/). */
static int list_dir(const char *dir, int held, struct cli_queue_totals *tot)
{
	const char *err;
	struct stat st;
	if (stat(dir, &st) < 0 && errno == ENOENT)
		return 0;
	struct cli_queue_ids l = { 0 };
	if (queue_dir_scan(dir, cli_queue_collect, &l, &err) < 0) {
		fprintf(stderr, "tern: %s\n", err);
		return -1;
	}
	if (l.oom) {
		free(l.ids);
		fprintf(stderr, "tern: out of memory listing %s\n", dir);
		return -1;
	}
	time_t now = time(NULL);
	for (size_t i = 0; i < l.n; i++) {
		char path[4096 + QUEUE_ID_MAX];
		struct queue_envelope env;
		int fd;
		snprintf(path, sizeof(path), "%s/%s", dir, l.ids[i]);
		if (queue_file_open(path, &env, &fd, &err) < 0) {
			/* Delivered and removed since the directory was read. */
			if (errno == ENOENT)
				continue;
			printf("%s  damaged: %s\n\n", l.ids[i], err);
			tot->damaged++;
			continue;
		}
		struct stat fst;
		int have_mtime = fstat(fd, &fst) == 0;
		close(fd);
		cli_queue_print(&env);
		if (held)
			printf("  %-10s yes (tern queue release %s)\n", "held", env.id);
		else if (have_mtime && fst.st_mtime > now)
			print_time("next try", (long long)fst.st_mtime);
		putchar('\n');
		for (int r = 0; r < env.n_rcpts; r++)
			if (QUEUE_STATUS_IS_PENDING(env.rcpts[r].status))
				tot->pending++;
		queue_envelope_free(&env);
		tot->messages++;
	}
	free(l.ids);
	return 0;
}

static int cli_queue_list(const char *queue_dir)
{
	char hold_dir[4200];
	struct cli_queue_totals tot = { 0 };
	snprintf(hold_dir, sizeof(hold_dir), "%s/hold", queue_dir);
	if (list_dir(queue_dir, 0, &tot) < 0 || list_dir(hold_dir, 1, &tot) < 0)
		return 1;
	if (tot.messages == 0 && tot.damaged == 0)
		printf("queue is empty\n");
	else if (tot.damaged == 0)
		printf("%zu message%s\n", tot.messages, tot.messages == 1 ? "" : "s");
	else
		printf("%zu message%s, %zu damaged file%s\n", tot.messages,
		       tot.messages == 1 ? "" : "s", tot.damaged, tot.damaged == 1 ? "" : "s");
	return 0;
}

/* Finds ID in queue/ or queue/hold/.  0 with the path, or -1 (message printed). */
static int find_message(const char *queue_dir, const char *id, char *path, size_t cap,
			int *held_r)
{
	if (!queue_id_valid(id)) {
		fprintf(stderr, "tern: '%s' is not a queue id (see tern queue list)\n", id);
		return -1;
	}
	snprintf(path, cap, "%s/%s", queue_dir, id);
	*held_r = 0;
	if (access(path, F_OK) == 0)
		return 0;
	snprintf(path, cap, "%s/hold/%s", queue_dir, id);
	*held_r = 1;
	if (access(path, F_OK) == 0)
		return 0;
	fprintf(stderr, "tern: no message %s in the queue (delivered or removed?)\n", id);
	return -1;
}

static int cli_queue_show(const char *queue_dir, const char *id)
{
	char path[4400];
	int held, fd;
	struct queue_envelope env;
	const char *err;
	if (find_message(queue_dir, id, path, sizeof(path), &held) < 0)
		return 1;
	if (queue_file_open(path, &env, &fd, &err) < 0) {
		fprintf(stderr, "tern: %s\n", err);
		return 1;
	}
	cli_queue_print(&env);
	printf("  %-10s %s\n", "client", env.client_addr[0] ? env.client_addr : "(local)");
	if (env.helo[0] != '\0') {
		printf("  %-10s ", "helo");
		cli_queue_print_escaped(env.helo);
		putchar('\n');
	}
	if (env.envid != NULL) {
		printf("  %-10s ", "envid");
		cli_queue_print_escaped(env.envid);
		putchar('\n');
	}
	if (held)
		printf("  %-10s yes\n", "held");
	printf("\n");
	/* The header section, at most 64 KiB of it. */
	char buf[65536 + 1];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, env.data_off);
	if (n > 0) {
		if (n > env.data_len)
			n = (ssize_t)env.data_len;
		buf[n] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		if (end != NULL)
			end[2] = '\0';
		for (char *line = buf, *next; line != NULL && *line != '\0'; line = next) {
			next = strstr(line, "\r\n");
			if (next != NULL) {
				*next = '\0';
				next += 2;
			}
			printf("  ");
			cli_queue_print_escaped(line);
			putchar('\n');
		}
	}
	close(fd);
	queue_envelope_free(&env);
	return 0;
}

static int touch_now(const char *path)
{
	/* The delivery worker keeps the next attempt in the mtime, and watches it. */
	return utime(path, NULL);
}

/* Before messages are touched for a retry now: the delivery worker then also tries the
 * destinations it had found dead.  Best effort (the messages are tried anyway). */
static void flush_mark(const char *queue_dir)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/" QUEUE_FLUSH_MARK, queue_dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0)
		close(fd);
	touch_now(path);
}

struct flush_ctx {
	const char *queue_dir;
	size_t n;
};

static void flush_cb(void *ctx, const char *id)
{
	struct flush_ctx *f = ctx;
	char path[4400];
	snprintf(path, sizeof(path), "%s/%s", f->queue_dir, id);
	if (touch_now(path) == 0)
		f->n++;
}

static int cli_queue_flush(const char *queue_dir)
{
	struct flush_ctx f = { queue_dir, 0 };
	const char *err;
	flush_mark(queue_dir);
	if (queue_dir_scan(queue_dir, flush_cb, &f, &err) < 0) {
		fprintf(stderr, "tern: %s\n", err);
		return 1;
	}
	printf("%zu message%s will be tried now\n", f.n, f.n == 1 ? "" : "s");
	return 0;
}

static int cli_queue_act(const char *queue_dir, const char *verb, const char *id)
{
	char path[4400], dest[4400];
	int held;
	if (find_message(queue_dir, id, path, sizeof(path), &held) < 0)
		return 1;
	if (strcmp(verb, "retry") == 0) {
		if (held) {
			fprintf(stderr, "tern: %s is held: tern queue release %s\n", id, id);
			return 1;
		}
		flush_mark(queue_dir);
		if (touch_now(path) < 0) {
			fprintf(stderr, "tern: %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("%s will be tried now\n", id);
	} else if (strcmp(verb, "delete") == 0) {
		if (unlink(path) < 0) {
			fprintf(stderr, "tern: %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("%s deleted (no bounce was sent)\n", id);
	} else if (strcmp(verb, "hold") == 0) {
		if (held) {
			printf("%s is already held\n", id);
			return 0;
		}
		snprintf(dest, sizeof(dest), "%s/hold", queue_dir);
		if (mkdir(dest, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "tern: %s: %s\n", dest, strerror(errno));
			return 1;
		}
		snprintf(dest, sizeof(dest), "%s/hold/%s", queue_dir, id);
		if (rename(path, dest) < 0) {
			fprintf(stderr, "tern: %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("%s held: it will not be delivered until tern queue release %s\n", id, id);
	} else { /* release */
		if (!held) {
			printf("%s is not held\n", id);
			return 0;
		}
		snprintf(dest, sizeof(dest), "%s/%s", queue_dir, id);
		if (touch_now(path) < 0 || rename(path, dest) < 0) {
			fprintf(stderr, "tern: %s: %s\n", path, strerror(errno));
			return 1;
		}
		printf("%s released: it will be tried now\n", id);
	}
	return 0;
}

struct stats_ctx {
	const char *dir;
	size_t messages, rcpts_pending, bytes;
	long long oldest;
	struct { char domain[256]; size_t n; } dom[64];
	int n_dom;
	size_t other_domains;
	size_t age[5]; /* <5m, <1h, <4h, <1d, older */
};

static void stats_cb(void *ctx, const char *id)
{
	struct stats_ctx *st = ctx;
	char path[4400];
	struct queue_envelope env;
	int fd;
	const char *err;
	snprintf(path, sizeof(path), "%s/%s", st->dir, id);
	if (queue_file_open(path, &env, &fd, &err) < 0)
		return;
	close(fd);
	st->messages++;
	st->bytes += (size_t)env.data_len;
	long long age = (long long)time(NULL) - env.arrival;
	if (st->oldest == 0 || env.arrival < st->oldest)
		st->oldest = env.arrival;
	st->age[age < 300 ? 0 : age < 3600 ? 1 : age < 4 * 3600 ? 2 : age < 86400 ? 3 : 4]++;
	for (int i = 0; i < env.n_rcpts; i++) {
		if (!QUEUE_STATUS_IS_PENDING(env.rcpts[i].status))
			continue;
		st->rcpts_pending++;
		const char *at = strrchr(env.rcpts[i].addr, '@');
		const char *d = at ? at + 1 : "";
		int k;
		for (k = 0; k < st->n_dom; k++)
			if (strcasecmp(st->dom[k].domain, d) == 0)
				break;
		if (k == st->n_dom) {
			if (st->n_dom == 64) {
				st->other_domains++;
				continue;
			}
			snprintf(st->dom[k].domain, sizeof(st->dom[k].domain), "%s", d);
			st->n_dom++;
		}
		st->dom[k].n++;
	}
	queue_envelope_free(&env);
}

static int cli_queue_stats(const char *queue_dir)
{
	struct stats_ctx st;
	char hold_dir[4200];
	const char *err;
	memset(&st, 0, sizeof(st));
	st.dir = queue_dir;
	if (queue_dir_scan(queue_dir, stats_cb, &st, &err) < 0) {
		fprintf(stderr, "tern: %s\n", err);
		return 1;
	}
	size_t active = st.messages;
	snprintf(hold_dir, sizeof(hold_dir), "%s/hold", queue_dir);
	st.dir = hold_dir;
	queue_dir_scan(hold_dir, stats_cb, &st, &err);
	printf("messages        %zu (%zu held)\n", st.messages, st.messages - active);
	printf("recipients      %zu waiting\n", st.rcpts_pending);
	printf("size            %zu bytes\n", st.bytes);
	printf("age             %zu under 5m, %zu under 1h, %zu under 4h, %zu under 1d, %zu older\n",
	       st.age[0], st.age[1], st.age[2], st.age[3], st.age[4]);
	if (st.oldest != 0)
		print_time("oldest", st.oldest);
	if (st.n_dom > 0) {
		printf("waiting by destination:\n");
		for (int i = 0; i < st.n_dom; i++)
			printf("  %6zu  %s\n", st.dom[i].n, st.dom[i].domain[0] ? st.dom[i].domain
									 : "(no domain)");
		if (st.other_domains > 0)
			printf("  %6zu  (other domains)\n", st.other_domains);
	}
	return 0;
}

int cli_queue(const struct tern_config *cfg, int argc, char **argv)
{
	static const struct {
		const char *verb;
		int args; /* besides the verb */
	} verbs[] = {
		{ "list", 0 }, { "show", 1 }, { "stats", 0 }, { "flush", 0 }, { "retry", 1 },
		{ "hold", 1 }, { "release", 1 }, { "delete", 1 },
	};
	const char *err;
	char queue_dir[4096];

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
			  strcmp(argv[1], "help") == 0)) {
		cli_queue_usage(stdout);
		return 0;
	}
	size_t v;
	for (v = 0; argc >= 2 && v < sizeof(verbs) / sizeof(verbs[0]); v++)
		if (strcmp(argv[1], verbs[v].verb) == 0)
			break;
	if (argc < 2 || v == sizeof(verbs) / sizeof(verbs[0])) {
		if (argc >= 2)
			fprintf(stderr, "tern queue: unknown subcommand '%s'\n", argv[1]);
		cli_queue_usage(stderr);
		return 2;
	}
	if (argc != 2 + verbs[v].args) {
		if (argc > 2 + verbs[v].args)
			fprintf(stderr, "tern queue %s: unexpected argument '%s'\n", verbs[v].verb,
				argv[2 + verbs[v].args]);
		else
			fprintf(stderr, "tern queue %s: which message? (a queue id)\n", verbs[v].verb);
		cli_queue_usage(stderr);
		return 2;
	}
	/* The queue belongs to the unprivileged user: working on it as that user keeps the
	 * CLI from creating root-owned files there and from reading what the server
	 * could not. */
	if (privs_drop_to(cfg->user, cfg->data_dir, &err) < 0) {
		fprintf(stderr, "tern: %s\n", err);
		return 1;
	}
	snprintf(queue_dir, sizeof(queue_dir), "%s/queue", cfg->data_dir);
	const char *verb = verbs[v].verb;
	if (strcmp(verb, "list") == 0)
		return cli_queue_list(queue_dir);
	if (strcmp(verb, "show") == 0)
		return cli_queue_show(queue_dir, argv[2]);
	if (strcmp(verb, "stats") == 0)
		return cli_queue_stats(queue_dir);
	if (strcmp(verb, "flush") == 0)
		return cli_queue_flush(queue_dir);
	return cli_queue_act(queue_dir, verb, argv[2]);
}
