/* `tern reindex ADDRESS`: rebuilds an account's mailbox index from its Maildir files
 * (after a restore from backup, files copied in by hand, or a damaged index.db). */
#include "cli/cli.h"

#include "base/privs.h"
#include "directory/directory.h"
#include "event/config.h"
#include "store/mstore.h"

#include <stdio.h>
#include <string.h>

int cli_reindex(const char *config_path, int dev, int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "tern: usage: tern reindex ADDRESS\n");
		return 2;
	}
	char account[512];
	snprintf(account, sizeof(account), "%s", argv[1]);
	for (char *p = account; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	char *at = strrchr(account, '@');
	if (at == NULL || at == account || at[1] == '\0') {
		fprintf(stderr, "tern: '%s' is not an address (user@domain)\n", argv[1]);
		return 2;
	}

	const char *error;
	struct tern_config *cfg = config_load(config_path, dev, &error);
	if (cfg == NULL) {
		fprintf(stderr, "tern: %s\n", error);
		return 1;
	}
	/* The index must belong to the workers that write it. */
	if (privs_drop_to(cfg->user, cfg->data_dir, &error) < 0) {
		fprintf(stderr, "tern: %s\n", error);
		config_free(&cfg);
		return 1;
	}
	char mail_root[4096], hash[512];
	snprintf(mail_root, sizeof(mail_root), "%s/mail", cfg->data_dir);
	struct directory *d = directory_open(cfg->data_dir, &error);
	config_free(&cfg);
	if (d == NULL) {
		fprintf(stderr, "tern: %s\n", error);
		return 1;
	}
	int known = directory_account_hash(d, account, hash, sizeof(hash));
	directory_close(&d);
	if (known != 1) {
		fprintf(stderr, "tern: %s is not an account%s\n", account,
			known < 0 ? " (the directory could not be read)" : "");
		return 1;
	}
	*at = '\0';
	size_t n = 0;
	if (mstore_reindex(mail_root, at + 1, account, &n, &error) != MSTORE_OK) {
		fprintf(stderr, "tern: reindex of %s@%s failed: %s\n", account, at + 1, error);
		return 1;
	}
	printf("%s@%s: index rebuilt, %zu messages (clients will resynchronise)\n", account,
	       at + 1, n);
	return 0;
}
