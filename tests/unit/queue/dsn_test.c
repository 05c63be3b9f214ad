/* dsn: failure, delay and success reports, what part 3 returns (RET, the size cap,
 * originals without a header/body separator, damaged line ends, very long headers,
 * UTF-8), refusals, and the byte-level shape.  Every report is also parsed by
 * Python's email package, a reader nobody here wrote. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_util.h"

#include "base/file.h"
#include "queue/dsn.h"
#include "queue/queue_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"

/* argv: FILE PART3-TYPE ("none": no part 3) SUBJECT-PART TEXT-PART, then one
 * "action|status|final-recipient|original-recipient" per recipient (empty
 * original-recipient: the field must be absent).  TEXT-PART may use \uXXXX escapes. */
static const char check_py[] =
	"import sys, email, email.policy\n"
	"def fail(why):\n"
	"    sys.stderr.write('dsn check: %s\\n' % why)\n"
	"    sys.exit(1)\n"
	"path, want3, subj, want_text = sys.argv[1:5]\n"
	"want_text = want_text.encode('ascii').decode('unicode_escape')\n"
	"want = [a.split('|') for a in sys.argv[5:]]\n"
	"with open(path, 'rb') as f:\n"
	"    m = email.message_from_binary_file(f, policy=email.policy.default)\n"
	"if m.get_content_type() != 'multipart/report':\n"
	"    fail('content type %s' % m.get_content_type())\n"
	"if m.get_param('report-type') != 'delivery-status':\n"
	"    fail('report-type %r' % m.get_param('report-type'))\n"
	"for h in ('From', 'To', 'Subject', 'Date', 'Message-ID', 'MIME-Version'):\n"
	"    if m[h] is None:\n"
	"        fail('no %s' % h)\n"
	"if str(m['Auto-Submitted']) != 'auto-replied':\n"
	"    fail('Auto-Submitted %r' % m['Auto-Submitted'])\n"
	"dt = m['Date'].datetime\n"
	"if dt is None or dt.utcoffset().total_seconds() != 0:\n"
	"    fail('Date %r' % m['Date'])\n"
	"parts = m.get_payload()\n"
	"nparts = 2 if want3 == 'none' else 3\n"
	"if len(parts) != nparts:\n"
	"    fail('%d parts' % len(parts))\n"
	"if parts[0].get_content_type() != 'text/plain':\n"
	"    fail('part 1 is %s' % parts[0].get_content_type())\n"
	"text = parts[0].get_content()\n"
	"if want_text and want_text not in ' '.join(text.split()):\n"
	"    fail('text lacks %r:\\n%s' % (want_text, text))\n"
	"ds = parts[1]\n"
	"if ds.get_content_type() != 'message/delivery-status':\n"
	"    fail('part 2 is %s' % ds.get_content_type())\n"
	"blocks = ds.get_payload()\n"
	"if len(blocks) != 1 + len(want):\n"
	"    fail('%d status blocks' % len(blocks))\n"
	"if not str(blocks[0]['Reporting-MTA']).startswith('dns; '):\n"
	"    fail('Reporting-MTA %r' % blocks[0]['Reporting-MTA'])\n"
	"for b, (action, status, final, orig) in zip(blocks[1:], want):\n"
	"    for name, exp in (('Action', action), ('Status', status),\n"
	"                      ('Final-Recipient', final)):\n"
	"        if b[name] is None or str(b[name]) != exp:\n"
	"            fail('%s %r, want %r' % (name, b[name], exp))\n"
	"    got = b['Original-Recipient']\n"
	"    if (orig and (got is None or str(got) != orig)) or (not orig and got is not None):\n"
	"        fail('Original-Recipient %r, want %r' % (got, orig))\n"
	"if nparts == 3:\n"
	"    p3 = parts[2]\n"
	"    if p3.get_content_type() != want3:\n"
	"        fail('part 3 is %s, want %s' % (p3.get_content_type(), want3))\n"
	"    if want3 == 'text/rfc822-headers':\n"
	"        inner = email.message_from_string(p3.get_content(), policy=email.policy.default)\n"
	"    else:\n"
	"        inner = p3.get_payload()[0]\n"
	"    if inner['Subject'] is None or subj not in str(inner['Subject']):\n"
	"        fail('original Subject %r, want %r' % (inner['Subject'], subj))\n"
	"for part in m.walk():\n"
	"    if part.defects:\n"
	"        fail('defects %r in %s' % (part.defects, part.get_content_type()))\n";

struct fixture {
	char dir[64];
	char out_path[128];
	char orig_path[128];
	int orig_fd;
	off_t orig_off;
	off_t orig_len;
	char *out;    /* the last report, NUL-terminated */
	size_t out_len;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (f == NULL || test_tmpdir_new(f->dir, sizeof(f->dir), "dsn") < 0)
		return -1;
	snprintf(f->out_path, sizeof(f->out_path), "%s/dsn.eml", f->dir);
	snprintf(f->orig_path, sizeof(f->orig_path), "%s/queuefile", f->dir);
	f->orig_fd = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (f->orig_fd >= 0)
		close(f->orig_fd);
	free(f->out);
	test_rm_rf(f->dir);
	free(f);
	return 0;
}

/* Puts msg into a stand-in queue file, between an envelope and an end record, as the
 * real queue file has it: the report must take exactly the range it is given. */
static void set_original(struct fixture *f, const char *msg, size_t len)
{
	static const char head[] = "tern-queue 1\nI 0123456789abcdefghij\nM\n";
	static const char tail[] = "Z 0123456789abcdefghij 00000000000000000000\n";

	if (f->orig_fd >= 0)
		close(f->orig_fd);
	f->orig_fd = open(f->orig_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(f->orig_fd >= 0);
	assert_int_equal(file_write_all(f->orig_fd, head, sizeof(head) - 1), 0);
	assert_int_equal(file_write_all(f->orig_fd, msg, len), 0);
	assert_int_equal(file_write_all(f->orig_fd, tail, sizeof(tail) - 1), 0);
	f->orig_off = (off_t)sizeof(head) - 1;
	f->orig_len = (off_t)len;
}

struct out_ctx {
	int fd;
	int calls;
	size_t max_piece;
	int fail_after; /* fail the call after this many; -1: never */
};

static int out_cb(void *ctx, const void *data, size_t len)
{
	struct out_ctx *o = ctx;
	if (o->fail_after >= 0 && o->calls >= o->fail_after)
		return -1;
	o->calls++;
	if (len > o->max_piece)
		o->max_piece = len;
	return file_write_all(o->fd, data, len);
}

static void params_init(struct fixture *f, struct dsn_params *p, enum dsn_kind kind,
			const struct dsn_rcpt *rcpts, int n)
{
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	p->reporting_mta = "mail.example.org";
	p->postmaster = "MAILER-DAEMON@mail.example.org";
	p->to = "alice@example.org";
	p->envid = "QQ314159";
	p->arrival = 1700000000;
	p->queue_id = "0123456789abcdefghij";
	p->rcpts = rcpts;
	p->n_rcpts = n;
	p->orig_fd = f->orig_fd;
	p->orig_offset = f->orig_off;
	p->orig_len = f->orig_len;
}

/* Byte-level shape: CRLF only, no line over 998 octets, CRLF at the end, and ASCII
 * unless 8-bit content is expected. */
static void check_bytes(const char *data, size_t len, int allow_8bit)
{
	size_t line = 0;

	assert_true(len >= 2);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];
		if (c == '\r') {
			if (i + 1 >= len || data[i + 1] != '\n')
				fail_msg("bare CR at %zu", i);
			i++;
			line = 0;
			continue;
		}
		if (c == '\n')
			fail_msg("bare LF at %zu", i);
		if (++line > 998)
			fail_msg("line over 998 octets at %zu", i);
		if (!allow_8bit && c > 0x7f)
			fail_msg("8-bit byte at %zu", i);
	}
	assert_memory_equal(data + len - 2, "\r\n", 2);
}

/* Writes the report to f->out_path and reads it back into f->out. */
static void run_dsn(struct fixture *f, const struct dsn_params *p, int allow_8bit)
{
	struct out_ctx o = { .fail_after = -1 };
	const char *error = NULL;

	o.fd = open(f->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(o.fd >= 0);
	if (dsn_write(p, out_cb, &o, &error) < 0)
		fail_msg("dsn_write: %s", error);
	assert_int_equal(close(o.fd), 0);
	assert_true(o.max_piece <= 64 * 1024);
	free(f->out);
	f->out = NULL;
	assert_int_equal(file_read_all(f->out_path, 64 * 1024 * 1024, &f->out, &f->out_len), 0);
	check_bytes(f->out, f->out_len, allow_8bit);
}

/* Runs the Python check on the last report; the arguments after subj and text are the
 * expected recipient blocks, NULL-terminated. */
static void check_python(struct fixture *f, const char *part3, const char *subj,
			 const char *text, ...)
{
	const char *argv[32];
	int argc = 0;
	va_list ap;

	argv[argc++] = PYTHON;
	argv[argc++] = "-c";
	argv[argc++] = check_py;
	argv[argc++] = f->out_path;
	argv[argc++] = part3;
	argv[argc++] = subj;
	argv[argc++] = text;
	va_start(ap, text);
	for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 31;)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;

	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execv(PYTHON, (char *const *)argv);
		_exit(127);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("Python rejects the report (status 0x%x):\n%s", status, f->out);
}

static int has(const struct fixture *f, const char *s)
{
	return strstr(f->out, s) != NULL;
}

static const char plain_msg[] = "From: Alice <alice@example.org>\r\n"
				"To: bob@example.com, carol@example.net\r\n"
				"Subject: Quarterly figures\r\n"
				"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
				"Message-ID: <q1@example.org>\r\n"
				"\r\n"
				"Hello Bob,\r\n"
				"the figures are below. BODYMARKER\r\n";

static void test_failure_full(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r[2] = {
		{ .addr = "bob@example.com",
		  .orcpt = "rfc822;Bob@Example.com",
		  .action = DSN_ACTION_FAILED,
		  .status = "5.1.1",
		  .remote_mta = "dns; mx.example.com",
		  .diagnostic = "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: "
				"User unknown in virtual mailbox table, please check the spelling "
				"and try again",
		  .last_attempt = 1700003600 },
		{ .addr = "carol@example.net",
		  .action = DSN_ACTION_FAILED,
		  .status = "4.4.7",
		  .remote_mta = "mx.example.net",
		  .diagnostic = "421 4.4.2 mx.example.net timed out",
		  .last_attempt = 1700400000 },
	};
	struct dsn_params p;

	set_original(f, plain_msg, sizeof(plain_msg) - 1);
	params_init(f, &p, DSN_FAILURE, r, 2);
	p.ret_full = 1;
	run_dsn(f, &p, 0);
	check_python(f, "message/rfc822", "Quarterly figures",
		     "Not delivered: the mailbox does not exist",
		     "failed|5.1.1|rfc822; bob@example.com|rfc822; Bob@Example.com",
		     "failed|4.4.7|rfc822; carol@example.net|", NULL);
	assert_true(has(f, "\r\nSubject: Undelivered Mail Returned to Sender\r\n"));
	assert_true(has(f, "\r\nTo: <alice@example.org>\r\n"));
	assert_true(has(f, "From: Mail Delivery System <MAILER-DAEMON@mail.example.org>\r\n"));
	assert_true(has(f, "\r\nAuto-Submitted: auto-replied\r\n"));
	assert_true(has(f, "\r\nOriginal-Envelope-Id: QQ314159\r\nReporting-MTA: dns; "
			   "mail.example.org\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
			   "X-Tern-Queue-ID: 0123456789abcdefghij\r\n"));
	assert_true(has(f, "\r\nRemote-MTA: dns; mx.example.net\r\n"));
	assert_true(has(f, "\r\nDiagnostic-Code: smtp; 421 4.4.2 mx.example.net timed out\r\n"));
	/* A long reply is folded before a space and still says everything. */
	assert_true(has(f, "\r\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: Recipient"));
	assert_true(has(f, "\r\n and try again\r\n") || has(f, " and try again\r\n"));
	assert_true(has(f, "\r\nLast-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n"));
	assert_false(has(f, "Will-Retry-Until"));
	assert_true(has(f, "the figures are below. BODYMARKER\r\n"));
	assert_true(has(f, "Message-ID: <0123456789abcdefghij."));
	/* The given range exactly: nothing of the queue file around it. */
	assert_false(has(f, "tern-queue"));
	assert_false(has(f, "Z 0123456789abcdefghij"));
}

static void test_delay(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com",
			      .action = DSN_ACTION_DELAYED,
			      .status = "4.4.1",
			      .remote_mta = "dns; mx.example.com",
			      .diagnostic = "smtp; 451 4.4.1 try later",
			      .last_attempt = 1700014400,
			      .will_retry_until = 1700432000 };
	struct dsn_params p;

	set_original(f, plain_msg, sizeof(plain_msg) - 1);
	params_init(f, &p, DSN_DELAY, &r, 1);
	p.ret_full = 1; /* RET is about failure reports: only headers here */
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "Quarterly figures",
		     "will keep trying until Sun, 19 Nov 2023 22:13:20 +0000",
		     "delayed|4.4.1|rfc822; bob@example.com|", NULL);
	assert_true(has(f, "\r\nSubject: Delayed Mail (still being retried)\r\n"));
	assert_true(has(f, "\r\nWill-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n"));
	assert_true(has(f, "Message-ID: <q1@example.org>\r\n"));
	assert_false(has(f, "BODYMARKER"));
}

static void test_success(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r[2] = {
		{ .addr = "bob@example.com", .action = DSN_ACTION_DELIVERED, .status = "2.0.0" },
		{ .addr = "dave@example.net",
		  .orcpt = "rfc822;dave@example.net",
		  .action = DSN_ACTION_RELAYED,
		  .status = "2.0.0",
		  .remote_mta = "dns; mx.example.net",
		  .diagnostic = "smtp; 250 2.0.0 Ok: queued as 4F2B",
		  .last_attempt = 1700000100 },
	};
	struct dsn_params p;

	set_original(f, plain_msg, sizeof(plain_msg) - 1);
	params_init(f, &p, DSN_SUCCESS, r, 2);
	p.envid = NULL;
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "Quarterly figures",
		     "does not send delivery reports",
		     "delivered|2.0.0|rfc822; bob@example.com|",
		     "relayed|2.0.0|rfc822; dave@example.net|rfc822; dave@example.net", NULL);
	assert_true(has(f, "\r\nSubject: Successful Mail Delivery Report\r\n"));
	assert_false(has(f, "Original-Envelope-Id"));
	assert_false(has(f, "Will-Retry-Until"));
	assert_false(has(f, "BODYMARKER"));
}

static void test_headers_only(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com",
			      .action = DSN_ACTION_FAILED,
			      .status = "5.2.2",
			      .diagnostic = "smtp; 552 5.2.2 mailbox full" };
	struct dsn_params p;

	set_original(f, plain_msg, sizeof(plain_msg) - 1);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	p.ret_full = 0; /* RET=HDRS, or no RET */
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "Quarterly figures",
		     "the message itself is not returned",
		     "failed|5.2.2|rfc822; bob@example.com|", NULL);
	assert_true(has(f, "the mailbox is full"));
	assert_true(has(f, "\r\nMessage-ID: <q1@example.org>\r\n"));
	assert_false(has(f, "BODYMARKER"));
	assert_false(has(f, "Hello Bob"));
}

static void test_size_cap(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com",
			      .action = DSN_ACTION_FAILED,
			      .status = "5.3.4",
			      .diagnostic = "smtp; 552 5.3.4 message too big" };
	struct dsn_params p;
	size_t body = 300 * 1000, hlen = sizeof(plain_msg) - 1;
	char *msg = malloc(hlen + body);

	assert_non_null(msg);
	memcpy(msg, plain_msg, hlen);
	for (size_t i = 0; i < body; i += 100) {
		memset(msg + hlen + i, 'a' + (int)(i / 100 % 26), 98);
		memcpy(msg + hlen + i + 98, "\r\n", 2);
	}
	set_original(f, msg, hlen + body);
	free(msg);

	params_init(f, &p, DSN_FAILURE, &r, 1);
	p.ret_full = 1;
	p.max_size = 64 * 1024;
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "Quarterly figures", "too large to return in full",
		     "failed|5.3.4|rfc822; bob@example.com|", NULL);
	assert_true(f->out_len < 64 * 1024);
	assert_false(has(f, "BODYMARKER"));

	/* Under the cap, the whole message goes back; the cap counts the whole report. */
	p.max_size = 1024 * 1024;
	run_dsn(f, &p, 0);
	check_python(f, "message/rfc822", "Quarterly figures", "attached below, as it was received",
		     "failed|5.3.4|rfc822; bob@example.com|", NULL);
	assert_true(has(f, "BODYMARKER"));
	assert_true(f->out_len > hlen + body && f->out_len <= 1024 * 1024);

	/* Exactly the size of the full report fits; one byte less does not. */
	size_t full = f->out_len;
	p.max_size = full;
	run_dsn(f, &p, 0);
	assert_true(has(f, "BODYMARKER"));
	p.max_size = full - 1;
	run_dsn(f, &p, 0);
	assert_false(has(f, "BODYMARKER"));
}

static void test_no_separator(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com", .action = DSN_ACTION_FAILED,
			      .status = "5.1.1" };
	struct dsn_params p;
	static const char only_headers[] = "From: alice@example.org\r\n"
					   "Subject: Nothing but headers\r\n"
					   "Message-ID: <h1@example.org>\r\n";
	static const char body_no_blank[] = "From: alice@example.org\r\n"
					    "Subject: No blank line\r\n"
					    "\tcontinued\r\n"
					    "This line is body text. BODYMARKER\r\n"
					    "Another: looks like a field but is body\r\n";
	static const char tail_no_crlf[] = "From: alice@example.org\r\n"
					   "Subject: Ends without CRLF";

	set_original(f, only_headers, sizeof(only_headers) - 1);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "Nothing but headers", "",
		     "failed|5.1.1|rfc822; bob@example.com|", NULL);
	assert_true(has(f, "Message-ID: <h1@example.org>\r\n"));
	p.ret_full = 1;
	run_dsn(f, &p, 0);
	check_python(f, "message/rfc822", "Nothing but headers", "",
		     "failed|5.1.1|rfc822; bob@example.com|", NULL);

	set_original(f, body_no_blank, sizeof(body_no_blank) - 1);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "No blank line", "",
		     "failed|5.1.1|rfc822; bob@example.com|", NULL);
	assert_true(has(f, "Subject: No blank line\r\n\tcontinued\r\n"));
	assert_false(has(f, "BODYMARKER"));
	assert_false(has(f, "looks like a field"));

	set_original(f, tail_no_crlf, sizeof(tail_no_crlf) - 1);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "Ends without CRLF", "",
		     "failed|5.1.1|rfc822; bob@example.com|", NULL);
	assert_true(has(f, "Subject: Ends without CRLF\r\n"));

	/* An empty original: an empty header block, still a well-formed report. */
	set_original(f, "", 0);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	run_dsn(f, &p, 0);
	assert_true(has(f, "Content-Type: text/rfc822-headers\r\n"));
}

/* A message received by BDAT may hold bare CR, bare LF and long lines: the copy comes
 * back with CRLF only and lines of at most 998 octets (check_bytes). */
static void test_damaged_lines(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com", .action = DSN_ACTION_FAILED,
			      .status = "5.0.0" };
	struct dsn_params p;
	char msg[4096];
	size_t n = 0;

	n += (size_t)snprintf(msg + n, sizeof(msg) - n,
			      "Subject: Broken lines\nFrom: alice@example.org\r\n\r\n"
			      "bare LF\nbare CR\rCRLF\r\nlong: ");
	memset(msg + n, 'x', 2500);
	n += 2500;
	n += (size_t)snprintf(msg + n, sizeof(msg) - n, "\r\nlast line without end\r");
	set_original(f, msg, n);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	p.ret_full = 1;
	run_dsn(f, &p, 0);
	check_python(f, "message/rfc822", "Broken lines", "",
		     "failed|5.0.0|rfc822; bob@example.com|", NULL);
	assert_true(has(f, "Subject: Broken lines\r\nFrom: alice@example.org\r\n"));
	assert_true(has(f, "bare LF\r\nbare CR\r\nCRLF\r\nlong: xxx"));
	assert_true(has(f, "last line without end\r\n\r\n--tern-dsn-"));

	/* The same in a header block. */
	params_init(f, &p, DSN_FAILURE, &r, 1);
	run_dsn(f, &p, 0);
	assert_true(has(f, "Subject: Broken lines\r\nFrom: alice@example.org\r\n"));
	assert_false(has(f, "bare LF"));
}

/* A clean original comes back byte for byte, also where a CRLF straddles two reads
 * (the original is read in 64 KiB pieces). */
static void test_chunk_edges(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com", .action = DSN_ACTION_FAILED,
			      .status = "5.1.1" };
	struct dsn_params p;
	size_t len = 200 * 1024, n = 0;
	char *msg = malloc(len);

	assert_non_null(msg);
	n += (size_t)snprintf(msg, len, "Subject: Chunk edges\r\n\r\n");
	while (n < len) {
		/* Lines of 80 octets, except those that end right at a 64 KiB edge. */
		size_t next = n + 80, edge = (n / 65536 + 1) * 65536;
		if (next > edge && n + 3 <= edge)
			next = edge + 1; /* CR last of one piece, LF first of the next */
		if (next > len)
			next = len;
		memset(msg + n, 'a' + (int)(n % 26), next - n - 2);
		memcpy(msg + next - 2, "\r\n", 2);
		n = next;
	}
	assert_int_equal(msg[65535], '\r');
	assert_int_equal(msg[65536], '\n');
	set_original(f, msg, len);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	p.ret_full = 1;
	run_dsn(f, &p, 0);
	check_python(f, "message/rfc822", "Chunk edges", "",
		     "failed|5.1.1|rfc822; bob@example.com|", NULL);
	assert_non_null(memmem(f->out, f->out_len, msg, len));
	free(msg);
}

/* Headers beyond DSN_HEADERS_MAX are cut at a line end, and the text says so. */
static void test_long_headers(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com", .action = DSN_ACTION_FAILED,
			      .status = "5.1.1" };
	struct dsn_params p;
	size_t cap = 400 * 1000, n = 0;
	char *msg = malloc(cap);

	assert_non_null(msg);
	n += (size_t)snprintf(msg, cap, "Subject: Many headers\r\n");
	for (int i = 0; n + 200 < cap - 100; i++)
		n += (size_t)snprintf(msg + n, cap - n, "X-Filler-%06d: %0150d\r\n", i, i);
	n += (size_t)snprintf(msg + n, cap - n, "\r\nbody BODYMARKER\r\n");
	set_original(f, msg, n);
	free(msg);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	run_dsn(f, &p, 0);
	check_python(f, "text/rfc822-headers", "Many headers", "have been cut short",
		     "failed|5.1.1|rfc822; bob@example.com|", NULL);
	assert_true(f->out_len < DSN_HEADERS_MAX + 16 * 1024);
	assert_true(f->out_len > DSN_HEADERS_MAX - 1024);
	assert_false(has(f, "BODYMARKER"));
}

/* SMTPUTF8: addresses in part 2 as RFC 6533 "utf-8" xtext, the text part as UTF-8 in
 * quoted-printable, the original as message/global(-headers). */
static void test_utf8(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "jos\xc3\xa9@b\xc3\xbc" "cher.example",
			      .orcpt = "rfc822;Jos\xc3\xa9@b\xc3\xbc" "cher.example",
			      .action = DSN_ACTION_FAILED,
			      .status = "5.1.1",
			      .diagnostic = "smtp; 550 5.1.1 unknown \xc3\xa9 user" };
	struct dsn_params p;
	static const char msg[] = "From: Al\xc3\xaf" "ce <al\xc3\xaf" "ce@example.org>\r\n"
				  "Subject: Gr\xc3\xbc\xc3\x9f" "e UTF8MARK\r\n"
				  "\r\n"
				  "K\xc3\xa4se BODYMARKER\r\n";

	set_original(f, msg, sizeof(msg) - 1);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	p.smtputf8 = 1;
	p.to = "al\xc3\xaf" "ce@example.org";
	run_dsn(f, &p, 1);
	check_python(f, "message/global-headers", "UTF8MARK", "jos\\u00e9@b\\u00fccher.example",
		     "failed|5.1.1|utf-8; jos\\x{E9}@b\\x{FC}cher.example|"
		     "utf-8; Jos\\x{E9}@b\\x{FC}cher.example",
		     NULL);
	assert_true(has(f, "Content-Transfer-Encoding: quoted-printable\r\n"));
	assert_true(has(f, "Diagnostic-Code: smtp; 550 5.1.1 unknown ?? user\r\n"));
	assert_true(has(f, "\r\nTo: <al\xc3\xaf" "ce@example.org>\r\n"));
	assert_false(has(f, "BODYMARKER"));

	p.ret_full = 1;
	run_dsn(f, &p, 1);
	check_python(f, "message/global", "UTF8MARK", "", "failed|5.1.1|utf-8; "
		     "jos\\x{E9}@b\\x{FC}cher.example|utf-8; Jos\\x{E9}@b\\x{FC}cher.example",
		     NULL);
	assert_true(has(f, "K\xc3\xa4se BODYMARKER"));

	/* Without SMTPUTF8 the 8-bit original is message/rfc822, declared 8bit. */
	p.smtputf8 = 0;
	p.to = "alice@example.org";
	run_dsn(f, &p, 1);
	assert_true(has(f, "Content-Type: message/rfc822\r\nContent-Description: Undelivered "
			   "message\r\nContent-Transfer-Encoding: 8bit\r\n"));
}

/* No original at hand: a report of two parts. */
static void test_no_original(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com", .action = DSN_ACTION_FAILED,
			      .status = "5.1.1" };
	struct dsn_params p;

	params_init(f, &p, DSN_FAILURE, &r, 1);
	p.orig_fd = -1;
	run_dsn(f, &p, 0);
	check_python(f, "none", "", "", "failed|5.1.1|rfc822; bob@example.com|", NULL);
}

static void test_refusals(void **state)
{
	struct fixture *f = *state;
	struct dsn_rcpt r = { .addr = "bob@example.com", .action = DSN_ACTION_FAILED,
			      .status = "5.1.1" };
	struct dsn_params p;
	struct out_ctx o = { .fd = -1, .fail_after = -1 };
	const char *error = NULL;

	set_original(f, plain_msg, sizeof(plain_msg) - 1);
	params_init(f, &p, DSN_FAILURE, &r, 1);
	p.to = "";
	assert_int_equal(dsn_write(&p, out_cb, &o, &error), -1);
	assert_non_null(strstr(error, "null sender"));
	p.to = NULL;
	assert_int_equal(dsn_write(&p, out_cb, &o, &error), -1);
	p.to = "alice@example.org\r\nBcc: x@y";
	assert_int_equal(dsn_write(&p, out_cb, &o, &error), -1);
	p.to = "alice@example.org";
	p.reporting_mta = "mail example";
	assert_int_equal(dsn_write(&p, out_cb, &o, &error), -1);
	p.reporting_mta = "mail.example.org";
	p.n_rcpts = 0;
	assert_int_equal(dsn_write(&p, out_cb, &o, &error), -1);
	p.n_rcpts = 1;
	assert_int_equal(o.calls, 0);

	/* A range that runs past the end of the file. */
	p.orig_len = f->orig_len + 1000;
	p.ret_full = 1;
	o.fd = open("/dev/null", O_WRONLY);
	assert_int_equal(dsn_write(&p, out_cb, &o, &error), -1);
	assert_non_null(strstr(error, "original"));

	/* The output callback's failure stops it. */
	p.orig_len = f->orig_len;
	o.fail_after = 0;
	assert_int_equal(dsn_write(&p, out_cb, &o, &error), -1);
	assert_non_null(strstr(error, "cannot write"));
	close(o.fd);
}

/* A missing or malformed status code does not cost the report: the action's generic
 * code stands in. */
static void test_bad_status(void **state)
{
	struct fixture *f = *state;
	static const char *bad[] = { "5.1", "6.1.1", "5.1.1 ", "5..1", "5.1.1234", "", NULL };
	struct dsn_rcpt r[2] = { { .addr = "bob@example.com", .action = DSN_ACTION_FAILED },
				 { .addr = "carol@example.net", .action = DSN_ACTION_DELAYED } };
	struct dsn_params p;

	set_original(f, plain_msg, sizeof(plain_msg) - 1);
	params_init(f, &p, DSN_FAILURE, r, 2);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r[0].status = r[1].status = bad[i];
		run_dsn(f, &p, 0);
		assert_true(has(f, "\r\nAction: failed\r\nStatus: 5.0.0\r\n"));
		assert_true(has(f, "\r\nAction: delayed\r\nStatus: 4.0.0\r\n"));
	}
	check_python(f, "text/rfc822-headers", "Quarterly figures", "",
		     "failed|5.0.0|rfc822; bob@example.com|",
		     "delayed|4.0.0|rfc822; carol@example.net|", NULL);
}

static void test_wanted(void **state)
{
	const unsigned never = QUEUE_NOTIFY_NEVER, success = QUEUE_NOTIFY_SUCCESS,
		       failure = QUEUE_NOTIFY_FAILURE, delay = QUEUE_NOTIFY_DELAY;

	(void)state;
	/* No NOTIFY: failures and delays. */
	assert_true(dsn_wanted(DSN_FAILURE, 0));
	assert_true(dsn_wanted(DSN_DELAY, 0));
	assert_false(dsn_wanted(DSN_SUCCESS, 0));
	assert_false(dsn_wanted(DSN_FAILURE, never));
	assert_false(dsn_wanted(DSN_DELAY, never));
	assert_false(dsn_wanted(DSN_SUCCESS, never));
	assert_true(dsn_wanted(DSN_SUCCESS, success));
	assert_false(dsn_wanted(DSN_FAILURE, success));
	assert_true(dsn_wanted(DSN_FAILURE, failure));
	assert_false(dsn_wanted(DSN_DELAY, failure));
	assert_true(dsn_wanted(DSN_DELAY, delay | failure));
	assert_true(dsn_wanted(DSN_SUCCESS, success | failure | delay));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_failure_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_success, setup, teardown),
		cmocka_unit_test_setup_teardown(test_headers_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_separator, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunk_edges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_utf8, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_original, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_status, setup, teardown),
		cmocka_unit_test(test_wanted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
