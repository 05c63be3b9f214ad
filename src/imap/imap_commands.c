/* The IMAP command table: where each command is allowed and how it runs.  The
 * dispatcher (imap_session.c) checks state, UID form and read-only the same way for
 * every command; handlers hold only semantics. */
#include "imap/imap_private.h"

#include <string.h>

#define AS (IMAP_ST_AUTH | IMAP_ST_SELECTED)
#define B IMAP_CMD_BLOCKING

static const struct imap_cmd_def imap_cmds[] = {
	/* name            handler               states            flags */
	{ "CAPABILITY",   imap_cmd_capability,  IMAP_ST_ANY,      0 },
	{ "NOOP",         imap_cmd_noop,        IMAP_ST_ANY,      0 },
	{ "LOGOUT",       imap_cmd_logout,      IMAP_ST_ANY,      0 },
	{ "ID",           imap_cmd_id,          IMAP_ST_ANY,      0 },
	{ "STARTTLS",     imap_cmd_starttls,    IMAP_ST_NOT_AUTH, 0 },
	{ "LOGIN",        imap_cmd_login,       IMAP_ST_NOT_AUTH, 0 },
	{ "AUTHENTICATE", imap_cmd_authenticate, IMAP_ST_NOT_AUTH, 0 },
	{ "ENABLE",       imap_cmd_enable,      AS,               0 },
	{ "NAMESPACE",    imap_cmd_namespace,   AS,               0 },
	{ "IDLE",         imap_cmd_idle,        AS,               0 },
	{ "SELECT",       imap_cmd_select,      AS,               B },
	{ "EXAMINE",      imap_cmd_select,      AS,               B },
	{ "CREATE",       imap_cmd_create,      AS,               B },
	{ "DELETE",       imap_cmd_delete,      AS,               B },
	{ "RENAME",       imap_cmd_rename,      AS,               B },
	{ "SUBSCRIBE",    imap_cmd_subscribe,   AS,               B },
	{ "UNSUBSCRIBE",  imap_cmd_subscribe,   AS,               B },
	{ "LIST",         imap_cmd_list,        AS,               B },
	{ "LSUB",         imap_cmd_lsub,        AS,               B },
	{ "STATUS",       imap_cmd_status,      AS,               B },
	{ "APPEND",       imap_cmd_append,      AS,               B },
	{ "CHECK",        imap_cmd_check,       IMAP_ST_SELECTED, 0 },
	{ "CLOSE",        imap_cmd_close,       IMAP_ST_SELECTED, B },
	{ "UNSELECT",     imap_cmd_unselect,    IMAP_ST_SELECTED, B },
	/* RFC 9051 7.5.1: no untagged EXPUNGE during FETCH, STORE, SEARCH (their UID forms
	 * may have them). */
	{ "FETCH",        imap_cmd_fetch,       IMAP_ST_SELECTED, B | IMAP_CMD_NO_EXPUNGE | IMAP_CMD_UID_OK },
	{ "SEARCH",       imap_cmd_search,      IMAP_ST_SELECTED, B | IMAP_CMD_NO_EXPUNGE | IMAP_CMD_UID_OK },
	{ "STORE",        imap_cmd_store,       IMAP_ST_SELECTED,
	  B | IMAP_CMD_NO_EXPUNGE | IMAP_CMD_READ_WRITE | IMAP_CMD_UID_OK },
	{ "COPY",         imap_cmd_copy,        IMAP_ST_SELECTED, B | IMAP_CMD_UID_OK },
	{ "MOVE",         imap_cmd_copy,        IMAP_ST_SELECTED, B | IMAP_CMD_READ_WRITE | IMAP_CMD_UID_OK },
	{ "EXPUNGE",      imap_cmd_expunge,     IMAP_ST_SELECTED, B | IMAP_CMD_READ_WRITE | IMAP_CMD_UID_OK },
};

const struct imap_cmd_def *imap_command_find(const char *name)
{
	for (size_t i = 0; i < sizeof(imap_cmds) / sizeof(imap_cmds[0]); i++)
		if (strcmp(imap_cmds[i].name, name) == 0)
			return &imap_cmds[i];
	return NULL;
}
