/* `tern domain|user|alias ...`: the administration of the directory (tern.db).
 * One table of commands drives argument checks, dispatch and the usage text. */
#include "cli/cli_directory.h"

#include "auth/password.h"
#include "base/privs.h"
#include "directory/directory.h"
#include "event/config.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

#define CLI_PASSWORD_MAX 1024
#define CLI_OPT_HASH     0x1 /* the command takes --hash HASH */

struct cli_dir_args {
	struct directory *d;
	const char *arg[2];
	int nargs;
	const char *hash; /* --hash, or NULL */
};

struct cli_dir_cmd {
	const char *group;
	const char *verb;
	const char *args;
	int min_args, max_args;
	unsigned flags;
	int (*run)(struct cli_dir_args *a);
	const char *help;
};

static int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int cli_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("tern: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\n", stderr);
	va_end(ap);
	return 1;
}

static int cli_output_done(void)
{
	if (fflush(stdout) != 0)
		return cli_fail("cannot write the output");
	return 0;
}

/* ---- reading a password ---- */

static struct termios cli_tty_saved;
static volatile sig_atomic_t cli_tty_changed;
static const int cli_tty_signals[] = { SIGINT, SIGTERM, SIGQUIT, SIGHUP };
#define CLI_TTY_NSIGNALS (sizeof(cli_tty_signals) / sizeof(cli_tty_signals[0]))

/* Ctrl-C at the prompt must not leave the terminal without echo. */
static void cli_tty_signal(int sig)
{
	if (cli_tty_changed)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &cli_tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* One line from stdin into buf, the newline (and a CR before it) stripped; without echo
 * and after a prompt when tty.  0, or -1 after printing why. */
static int cli_read_line(const char *prompt, char *buf, size_t cap, int tty)
{
	struct sigaction sa, old[CLI_TTY_NSIGNALS];
	if (tty) {
		if (tcgetattr(STDIN_FILENO, &cli_tty_saved) < 0) {
			cli_fail("cannot read the terminal settings");
			return -1;
		}
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = cli_tty_signal;
		sigemptyset(&sa.sa_mask);
		for (size_t i = 0; i < CLI_TTY_NSIGNALS; i++)
			sigaction(cli_tty_signals[i], &sa, &old[i]);
		struct termios quiet = cli_tty_saved;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		quiet.c_lflag |= ECHONL;
		fputs(prompt, stderr);
		fflush(stderr);
		cli_tty_changed = 1;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	char *got = fgets(buf, (int)cap, stdin);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &cli_tty_saved);
		cli_tty_changed = 0;
		for (size_t i = 0; i < CLI_TTY_NSIGNALS; i++)
			sigaction(cli_tty_signals[i], &old[i], NULL);
	}
	if (got == NULL) {
		cli_fail(ferror(stdin) ? "cannot read the password" : "no password given");
		return -1;
	}
	size_t len = strlen(buf);
	if (len > 0 && buf[len - 1] == '\n') {
		buf[--len] = '\0';
		if (len > 0 && buf[len - 1] == '\r')
			buf[--len] = '\0';
	} else if (!feof(stdin)) {
		cli_fail("password longer than %d bytes", CLI_PASSWORD_MAX - 2);
		return -1;
	}
	return 0;
}

/* The hash to store: the --hash given (checked), or a yescrypt hash of a password
 * asked twice on a terminal, else read as one line from stdin. */
static int cli_new_hash(const struct cli_dir_args *a, const char *address, char *hash,
			size_t cap)
{
	if (a->hash != NULL) {
		if (!password_hash_importable(a->hash))
			return cli_fail("--hash: not a usable yescrypt ($y$), bcrypt ($2b$, $2y$, "
					"$2a$), SHA-512-crypt ($6$) or SHA-256-crypt ($5$) hash");
		if (strlen(a->hash) >= cap)
			return cli_fail("--hash: too long");
		memcpy(hash, a->hash, strlen(a->hash) + 1);
		return 0;
	}

	char pw[CLI_PASSWORD_MAX], again[CLI_PASSWORD_MAX];
	int tty = isatty(STDIN_FILENO);
	int ret = 1;
	char prompt[320];
	const char *error;
	/* Unbuffered, so that no copy of the password stays behind in stdio's buffer. */
	setvbuf(stdin, NULL, _IONBF, 0);
	snprintf(prompt, sizeof(prompt), "Password for %s: ", address);
	if (cli_read_line(prompt, pw, sizeof(pw), tty) < 0)
		goto done;
	if (pw[0] == '\0') {
		cli_fail("empty password refused");
		goto done;
	}
	if (tty) {
		if (cli_read_line("Retype password: ", again, sizeof(again), tty) < 0)
			goto done;
		if (strcmp(pw, again) != 0) {
			cli_fail("the passwords do not match");
			goto done;
		}
	}
	if (password_hash(pw, hash, cap, &error) < 0) {
		cli_fail("%s", error);
		goto done;
	}
	ret = 0;
done:
	explicit_bzero(pw, sizeof(pw));
	explicit_bzero(again, sizeof(again));
	return ret;
}

/* ---- commands ---- */

static void cli_print1(void *ctx, const char *s)
{
	puts(s);
}

static void cli_print_alias(void *ctx, const char *address, const char *target)
{
	printf("%s -> %s\n", address, target);
}

static int cli_domain_add(struct cli_dir_args *a)
{
	const char *error;
	if (directory_domain_add(a->d, a->arg[0], &error) < 0)
		return cli_fail("%s", error);
	return 0;
}

static int cli_domain_del(struct cli_dir_args *a)
{
	const char *error;
	if (directory_domain_del(a->d, a->arg[0], &error) < 0)
		return cli_fail("%s", error);
	return 0;
}

static int cli_domain_list(struct cli_dir_args *a)
{
	const char *error;
	if (directory_domain_list(a->d, cli_print1, NULL, &error) < 0)
		return cli_fail("%s", error);
	return cli_output_done();
}

/* The checks account_add makes too, done before the password prompt so that nobody
 * types a password twice to learn about a typo. */
static int cli_user_precheck(struct directory *d, const char *address)
{
	const char *why;
	char hash[PASSWORD_HASH_MAX];
	if (!directory_address_valid(address, 0, &why))
		return cli_fail("'%s': %s", address, why);
	const char *domain = strrchr(address, '@') + 1;
	switch (directory_domain_exists(d, domain)) {
	case 0:
		return cli_fail("%s is not a local domain: add it first with `tern domain add %s`",
				domain, domain);
	case -1:
		return cli_fail("cannot read tern.db");
	}
	switch (directory_account_hash(d, address, hash, sizeof(hash))) {
	case 0:
		return 0;
	case 1:
		return cli_fail("account %s already exists", address);
	default:
		return cli_fail("cannot read tern.db");
	}
}

static int cli_user_add(struct cli_dir_args *a)
{
	char hash[PASSWORD_HASH_MAX];
	const char *error;
	if (cli_user_precheck(a->d, a->arg[0]) != 0 ||
	    cli_new_hash(a, a->arg[0], hash, sizeof(hash)) != 0)
		return 1;
	if (directory_account_add(a->d, a->arg[0], hash, &error) < 0)
		return cli_fail("%s", error);
	return 0;
}

struct cli_alias_note {
	const char *address;
	int n;
};

static void cli_note_alias(void *ctx, const char *address, const char *target)
{
	struct cli_alias_note *note = ctx;
	if (strcasecmp(target, note->address) == 0) {
		fprintf(stderr, "tern: note: alias %s -> %s still points to it\n", address,
			target);
		note->n++;
	}
}

static int cli_user_del(struct cli_dir_args *a)
{
	const char *error;
	if (directory_account_del(a->d, a->arg[0], &error) < 0)
		return cli_fail("%s", error);
	/* Mail to such an alias would now find nobody: say so while the admin is here. */
	struct cli_alias_note note = { a->arg[0], 0 };
	directory_alias_list(a->d, cli_note_alias, &note, &error);
	return 0;
}

static int cli_user_passwd(struct cli_dir_args *a)
{
	char hash[PASSWORD_HASH_MAX];
	const char *error;
	switch (directory_account_hash(a->d, a->arg[0], hash, sizeof(hash))) {
	case 1:
		break;
	case 0:
		return cli_fail("no account %s", a->arg[0]);
	default:
		return cli_fail("cannot read tern.db");
	}
	if (cli_new_hash(a, a->arg[0], hash, sizeof(hash)) != 0)
		return 1;
	if (directory_account_passwd(a->d, a->arg[0], hash, &error) < 0)
		return cli_fail("%s", error);
	return 0;
}

static int cli_user_list(struct cli_dir_args *a)
{
	const char *error;
	if (directory_account_list(a->d, a->nargs > 0 ? a->arg[0] : NULL, cli_print1, NULL,
				   &error) < 0)
		return cli_fail("%s", error);
	return cli_output_done();
}

static int cli_alias_add(struct cli_dir_args *a)
{
	const char *error;
	if (directory_alias_add(a->d, a->arg[0], a->arg[1], &error) < 0)
		return cli_fail("%s", error);
	/* A target in a local domain that nobody owns is probably a typo, or an account
	 * still to be created; the alias is kept either way. */
	const char *at = strrchr(a->arg[1], '@');
	struct directory_targets *out = malloc(sizeof(*out));
	char local[256];
	if (out != NULL && at != NULL && (size_t)(at - a->arg[1]) < sizeof(local)) {
		memcpy(local, a->arg[1], (size_t)(at - a->arg[1]));
		local[at - a->arg[1]] = '\0';
		if (directory_resolve(a->d, local, at + 1, out, &error) == 2)
			fprintf(stderr, "tern: note: %s is in a local domain but is neither an "
					"account nor an alias yet\n", a->arg[1]);
	}
	free(out);
	return 0;
}

static int cli_alias_del(struct cli_dir_args *a)
{
	const char *error;
	if (directory_alias_del(a->d, a->arg[0], a->nargs > 1 ? a->arg[1] : NULL, &error) < 0)
		return cli_fail("%s", error);
	return 0;
}

static int cli_alias_list(struct cli_dir_args *a)
{
	const char *error;
	if (directory_alias_list(a->d, cli_print_alias, NULL, &error) < 0)
		return cli_fail("%s", error);
	return cli_output_done();
}

static const struct cli_dir_cmd cli_dir_cmds[] = {
	{ "domain", "add", "DOMAIN", 1, 1, 0, cli_domain_add, "add a local domain" },
	{ "domain", "del", "DOMAIN", 1, 1, 0, cli_domain_del,
	  "delete a domain without accounts or aliases" },
	{ "domain", "list", "", 0, 0, 0, cli_domain_list, "list the local domains" },
	{ "user", "add", "ADDRESS [--hash HASH]", 1, 1, CLI_OPT_HASH, cli_user_add,
	  "add an account; asks for a password unless --hash" },
	{ "user", "del", "ADDRESS", 1, 1, 0, cli_user_del, "delete an account (its mail stays)" },
	{ "user", "passwd", "ADDRESS [--hash HASH]", 1, 1, CLI_OPT_HASH, cli_user_passwd,
	  "change an account's password" },
	{ "user", "list", "[DOMAIN]", 0, 1, 0, cli_user_list, "list accounts" },
	{ "alias", "add", "ADDRESS TARGET", 2, 2, 0, cli_alias_add,
	  "send mail for ADDRESS (@DOMAIN: unknown users) to TARGET" },
	{ "alias", "del", "ADDRESS [TARGET]", 1, 2, 0, cli_alias_del,
	  "delete one target of an alias, or all" },
	{ "alias", "list", "", 0, 0, 0, cli_alias_list, "list aliases as ADDRESS -> TARGET" },
};

#define CLI_DIR_NCMDS (sizeof(cli_dir_cmds) / sizeof(cli_dir_cmds[0]))

void cli_directory_usage(FILE *out, const char *group)
{
	for (size_t i = 0; i < CLI_DIR_NCMDS; i++) {
		const struct cli_dir_cmd *c = &cli_dir_cmds[i];
		if (group != NULL && strcmp(group, c->group) != 0)
			continue;
		char synopsis[64];
		snprintf(synopsis, sizeof(synopsis), "%s %s %s", c->group, c->verb, c->args);
		fprintf(out, "  %-34s %s\n", synopsis, c->help);
	}
}

static int cli_directory_usage_error(const char *group, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int cli_directory_usage_error(const char *group, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("tern: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\nusage: tern [-c FILE] [--dev] COMMAND\n", stderr);
	va_end(ap);
	cli_directory_usage(stderr, group);
	return 2;
}

/* Fills a from argv[2...]: positionals and, where the command allows it, --hash.
 * 0, or the usage exit status after printing why. */
static int cli_directory_parse(const struct cli_dir_cmd *c, int argc, char **argv,
			       struct cli_dir_args *a)
{
	int options_done = 0;
	for (int i = 2; i < argc; i++) {
		const char *s = argv[i];
		if (!options_done && strcmp(s, "--") == 0) {
			options_done = 1;
		} else if (!options_done && (c->flags & CLI_OPT_HASH) &&
			   strncmp(s, "--hash=", 7) == 0) {
			a->hash = s + 7;
		} else if (!options_done && (c->flags & CLI_OPT_HASH) && strcmp(s, "--hash") == 0) {
			if (i + 1 >= argc)
				return cli_directory_usage_error(c->group, "--hash needs a value");
			a->hash = argv[++i];
		} else if (!options_done && s[0] == '-' && s[1] != '\0') {
			return cli_directory_usage_error(c->group, "%s %s: unknown option '%s'",
							 c->group, c->verb, s);
		} else if (a->nargs >= c->max_args) {
			return cli_directory_usage_error(c->group, "%s %s: unexpected argument '%s'",
							 c->group, c->verb, s);
		} else {
			a->arg[a->nargs++] = s;
		}
	}
	if (a->nargs < c->min_args)
		return cli_directory_usage_error(c->group, "%s %s: missing %s", c->group, c->verb,
						 c->args);
	if (a->hash != NULL && a->hash[0] == '\0')
		return cli_directory_usage_error(c->group, "--hash needs a value");
	return 0;
}

int cli_directory_run(const char *config_path, int dev, int argc, char **argv)
{
	const char *group = argv[0];
	if (argc < 2)
		return cli_directory_usage_error(group, "%s: missing subcommand", group);
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0) {
		printf("usage: tern [-c FILE] [--dev] COMMAND\n");
		cli_directory_usage(stdout, group);
		return 0;
	}
	const struct cli_dir_cmd *c = NULL;
	for (size_t i = 0; i < CLI_DIR_NCMDS; i++)
		if (strcmp(cli_dir_cmds[i].group, group) == 0 &&
		    strcmp(cli_dir_cmds[i].verb, argv[1]) == 0)
			c = &cli_dir_cmds[i];
	if (c == NULL)
		return cli_directory_usage_error(group, "%s: unknown subcommand '%s'", group,
						 argv[1]);
	struct cli_dir_args a = { 0 };
	int rc = cli_directory_parse(c, argc, argv, &a);
	if (rc != 0)
		return rc;

	const char *error;
	struct tern_config *cfg = config_load(config_path, dev, &error);
	if (cfg == NULL)
		return cli_fail("%s", error);
	/* As root, become the server's user before tern.db is created or written, so that
	 * the files belong to the workers that read them. */
	if (privs_drop_to(cfg->user, cfg->data_dir, &error) < 0) {
		config_free(&cfg);
		return cli_fail("%s", error);
	}
	a.d = directory_open(cfg->data_dir, &error);
	config_free(&cfg);
	if (a.d == NULL)
		return cli_fail("%s", error);
	rc = c->run(&a);
	directory_close(&a.d);
	return rc;
}
