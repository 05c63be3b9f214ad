/* IMAP command input (RFC 9051 section 9, with RFC 3501 clients): framing of command
 * lines and literals, the argument tree, and the small grammars the commands share
 * (sequence sets, dates, modified UTF-7 mailbox names, output quoting).  Pure and
 * bounded: bytes in, commands out; the engine does the I/O. */
#ifndef TERN_IMAP_IMAP_PARSE_H
#define TERN_IMAP_IMAP_PARSE_H

#include "base/buf.h"

#include <stddef.h>
#include <stdint.h>

/* ---- framing: one command = its line(s) with their literals -------------------------- */

struct imap_limits {
	size_t line_max;          /* bytes of one line outside literals (8192) */
	size_t literal_max;       /* bytes of one literal (the engine sets it per state: small
				     before login, the message size limit after) */
	size_t command_max;       /* bytes of a whole command, literals included */
	size_t nonsync_max;       /* LITERAL-: non-synchronizing literals up to this (4096) */
	int literal_plus;         /* 1: LITERAL+ (any size {n+} up to literal_max) */
};

enum imap_read_status {
	IMAP_READ_NEED_MORE,      /* everything given was consumed; feed more */
	IMAP_READ_COMMAND,        /* a whole command is ready: imap_reader_command() */
	IMAP_READ_CONTINUE,       /* a synchronizing literal {n} was announced and fits: the
				     engine sends "+ ..." and feeds more */
	IMAP_READ_TOO_BIG,        /* a synchronizing literal over the limit: the engine answers
				     "TAG NO [TOOBIG]" (or BAD); the command was dropped and the
				     client will not send the literal */
	IMAP_READ_TOO_BIG_FATAL,  /* a non-synchronizing literal over the limit, or a line over
				     line_max: the client goes on sending what we cannot take;
				     answer BAD and close the connection */
	IMAP_READ_BAD_LINE,       /* line contains NUL or a bare CR/LF: dropped, answer BAD */
};

struct imap_reader {
	struct imap_limits lim;
	struct buf cmd;           /* the command so far, literals inline */
	size_t literal_left;      /* bytes of the current literal still to come */
	size_t line_start;        /* offset in cmd where the current line began */
	char tag[64];             /* tag of the command being read, "" until known ("*" for
				     errors before a tag could be read) */
	int state;                /* private */
};

void imap_reader_init(struct imap_reader *r, const struct imap_limits *lim);
void imap_reader_deinit(struct imap_reader *r);
/* Feeds len bytes; *consumed_r says how many were taken (the rest must be fed again
 * after the status was handled).  Never buffers more than lim.command_max. */
enum imap_read_status imap_reader_feed(struct imap_reader *r, const char *data, size_t len,
				       size_t *consumed_r);
/* The finished command (after IMAP_READ_COMMAND): borrowed until the next feed or reset;
 * its CRLF is not included. */
struct slice imap_reader_command(const struct imap_reader *r);
/* Starts the next command (after the engine took the last one, or dropped one). */
void imap_reader_reset(struct imap_reader *r);

/* A single raw line (AUTHENTICATE responses, IDLE's DONE), without the command
 * framing: IMAP_READ_NEED_MORE, IMAP_READ_COMMAND (the line is imap_reader_command()),
 * IMAP_READ_TOO_BIG_FATAL or IMAP_READ_BAD_LINE. */
enum imap_read_status imap_reader_feed_line(struct imap_reader *r, const char *data,
					    size_t len, size_t *consumed_r);

/* ---- arguments ---------------------------------------------------------------------- */

enum imap_arg_type {
	IMAP_ARG_ATOM,      /* includes atoms with [...] sections and <...> partials:
			       BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024> is one atom */
	IMAP_ARG_STRING,    /* quoted string, unescaped */
	IMAP_ARG_LITERAL,   /* {n} / {n+}: value is the literal's bytes */
	IMAP_ARG_LITERAL8,  /* ~{n}: binary literal (APPEND with BINARY) */
	IMAP_ARG_NIL,       /* the atom NIL */
	IMAP_ARG_LIST,      /* (...) */
};

struct imap_arg {
	enum imap_arg_type type;
	const char *s;              /* ATOM, STRING, LITERAL: NUL-terminated copy, len bytes
				       (a literal may contain NULs only when LITERAL8) */
	size_t len;
	struct imap_arg *list;      /* LIST: its elements */
	size_t n;                   /* LIST: element count */
};

struct imap_command {
	char tag[64];
	char name[32];              /* upper-cased; "FETCH" for "UID FETCH" */
	int uid;                    /* 1 for "UID xxx" */
	struct imap_arg *args;      /* the arguments after the name */
	size_t n_args;
	void *mem;                  /* private: one arena holding all of the above */
};

enum imap_parse_status {
	IMAP_PARSE_OK,
	IMAP_PARSE_NO_TAG,          /* answer "* BAD" */
	IMAP_PARSE_BAD,             /* answer "TAG BAD <*error_r>" */
};

/* Parses a framed command (imap_reader_command()) into tag, name and argument tree;
 * lists nest at most 32 deep and a command has at most 100,000 arguments in all.
 * On IMAP_PARSE_BAD the tag is still filled in when it could be read. */
enum imap_parse_status imap_command_parse(struct slice line, struct imap_command *cmd_r,
					  const char **error_r);
void imap_command_free(struct imap_command *cmd);

/* 1 when arg is an astring (atom, string or literal): the common "string argument". */
int imap_arg_is_astring(const struct imap_arg *arg);
/* 1 when arg is an nstring (astring or NIL). */
int imap_arg_is_nstring(const struct imap_arg *arg);
/* A number atom (RFC 9051 "number64": MODSEQ, UNCHANGEDSINCE, LARGER...): 0 and *v_r,
 * or -1 when arg is not one or does not fit in 64 bits. */
int imap_arg_number(const struct imap_arg *arg, uint64_t *v_r);

/* ---- shared grammars ---------------------------------------------------------------- */

/* A sequence set (RFC 9051 9 "sequence-set"); '*' stands for star_value (the highest
 * sequence number or UID in the mailbox); ranges are normalised low:high.  "$"
 * (SEARCHRES) is not supported (-1).  The result is the caller's (free()), sorted and
 * merged, at most 10,000 ranges. */
struct imap_range {
	uint32_t lo, hi;
};
int imap_seqset_parse(const char *s, size_t len, uint32_t star_value,
		      struct imap_range **ranges_r, size_t *n_r);
/* 1 when v lies in one of the (sorted, merged) ranges (binary search). */
int imap_seqset_contains(const struct imap_range *ranges, size_t n, uint32_t v);

/* "27-Nov-2026" (SEARCH dates): 0 and *t_r (00:00 UTC that day), or -1. */
int imap_date_parse(const char *s, size_t len, int64_t *t_r);
/* "27-Nov-2026 10:38:34 +0100" (APPEND date-time, also with a leading space for days
 * 1-9): 0 and *t_r (UTC seconds), *tz_r (minutes east), or -1. */
int imap_datetime_parse(const char *s, size_t len, int64_t *t_r, int *tz_r);
/* Writes t in zone tz as "27-Nov-2026 10:38:34 +0100" (26 bytes + NUL). */
void imap_datetime_format(int64_t t, int tz, char out[32]);

/* Modified UTF-7 (RFC 3501 5.1.3) <-> UTF-8 for IMAP4rev1 clients' mailbox names.
 * 0, or -1 for invalid input (*out untouched beyond cap).  Results are NUL-terminated. */
int imap_mutf7_to_utf8(const char *in, size_t len, char *out, size_t cap);
int imap_utf8_to_mutf7(const char *in, size_t len, char *out, size_t cap);

/* Appends s to out as an IMAP string: an atom-safe quoted string "..." when it can be
 * one (no CR, LF, NUL, 8-bit only when utf8 is set, short), else a literal {n}CRLF...;
 * NIL for NULL.  0 or -1 (buffer limit). */
int imap_write_string(struct buf *out, const char *s, size_t len, int utf8);
int imap_write_nstring(struct buf *out, const char *s_or_null, size_t len, int utf8);

#endif
