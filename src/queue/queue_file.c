#include "queue/queue_file.h"

#include "base/buf.h"
#include "base/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAGIC      "tern-queue 1"
#define QUEUE_WRITE_BUF  (64 * 1024)
#define QUEUE_READ_CHUNK (64 * 1024)
/* The envelope of any message we accept is far smaller (recipient limits); a header
 * beyond this is damage, not data, and must not make the reader allocate without end. */
#define QUEUE_HEADER_MAX (16 * 1024 * 1024)
#define QUEUE_LEN_DIGITS 20

/* Per thread: commits run on pool threads while the loop thread opens other files. */
static _Thread_local char queue_errbuf[1024];

__attribute__((format(printf, 2, 3))) static int queue_fail(const char **error_r,
							    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(queue_errbuf, sizeof(queue_errbuf), fmt, ap);
	va_end(ap);
	if (error_r != NULL)
		*error_r = queue_errbuf;
	return -1;
}

static int queue_errno_is_disk_full(int e)
{
	return e == ENOSPC || e == EDQUOT;
}

/* ---- ids ---- */

/* In ASCII order, so that fixed-width numbers written with it sort like the numbers. */
static const char queue_b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static char *queue_b62_put(char *p, unsigned long long v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = queue_b62[v % 62];
		v /= 62;
	}
	return p + width;
}

int queue_id_new(char id[QUEUE_ID_MAX])
{
	static unsigned counter;
	struct timespec ts;
	uint32_t rnd = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
	/* Random bits cover what time, pid and counter cannot: a clock stepped back
	 * across a restart that reused the pid.  Without entropy (early boot) the id is
	 * still unique in every other case, and the writer's O_EXCL catches the rest. */
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (uint32_t)ts.tv_nsec * 2654435761u ^ n;

	/* 6 seconds (until year 3770) + 4 microseconds + 4 pid + 2 counter + 4 random. */
	char *p = id;
	p = queue_b62_put(p, (unsigned long long)ts.tv_sec, 6);
	p = queue_b62_put(p, (unsigned long long)(ts.tv_nsec / 1000), 4);
	p = queue_b62_put(p, (unsigned long long)getpid(), 4);
	p = queue_b62_put(p, n, 2);
	p = queue_b62_put(p, rnd, 4);
	*p = '\0';
	return 0;
}

int queue_id_valid(const char *s)
{
	size_t i;
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		if (i >= QUEUE_ID_LEN ||
		    !((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return 0;
	}
	return i == QUEUE_ID_LEN;
}

void queue_envelope_free(struct queue_envelope *env)
{
	free(env->from);
	free(env->envid);
	free(env->auth_user);
	free(env->client_addr);
	free(env->helo);
	for (int i = 0; i < env->n_rcpts; i++) {
		free(env->rcpts[i].addr);
		free(env->rcpts[i].orcpt);
	}
	free(env->rcpts);
	env->from = env->envid = env->auth_user = env->client_addr = env->helo = NULL;
	env->rcpts = NULL;
	env->n_rcpts = 0;
}

/* ---- writer ---- */

struct queue_writer {
	int fd;
	char id[QUEUE_ID_MAX];
	char *queue_dir;
	char *tmp_path;
	char *final_path;
	char *wbuf; /* QUEUE_WRITE_BUF bytes */
	size_t wlen;
	off_t flushed;  /* bytes already in the file */
	off_t data_off; /* where the message starts */
	int error;      /* errno of a failed write: the file is unusable after it */
};

static char *queue_path_join(const char *dir, const char *a, const char *b)
{
	size_t len = strlen(dir) + strlen(a) + (b != NULL ? strlen(b) + 1 : 0) + 2;
	char *p = malloc(len);
	if (p == NULL)
		return NULL;
	if (b != NULL)
		snprintf(p, len, "%s/%s/%s", dir, a, b);
	else
		snprintf(p, len, "%s/%s", dir, a);
	return p;
}

static off_t queue_writer_pos(const struct queue_writer *w)
{
	return w->flushed + (off_t)w->wlen;
}

static int queue_writer_flush(struct queue_writer *w)
{
	if (w->wlen == 0)
		return 0;
	if (file_write_all(w->fd, w->wbuf, w->wlen) < 0) {
		w->error = errno;
		return -1;
	}
	w->flushed += (off_t)w->wlen;
	w->wlen = 0;
	return 0;
}

static int queue_writer_put(struct queue_writer *w, const void *data, size_t len)
{
	const char *p = data;
	if (w->error != 0) {
		errno = w->error;
		return -1;
	}
	while (len > 0) {
		if (w->wlen == 0 && len >= QUEUE_WRITE_BUF) {
			/* Large pieces skip the copy. */
			if (file_write_all(w->fd, p, len) < 0) {
				w->error = errno;
				return -1;
			}
			w->flushed += (off_t)len;
			return 0;
		}
		size_t n = QUEUE_WRITE_BUF - w->wlen;
		if (n > len)
			n = len;
		memcpy(w->wbuf + w->wlen, p, n);
		w->wlen += n;
		p += n;
		len -= n;
		if (w->wlen == QUEUE_WRITE_BUF && queue_writer_flush(w) < 0)
			return -1;
	}
	return 0;
}

/* The framing is one record per line: a value with CR, LF or NUL would end its record
 * early and let its remainder be read as records of its own. */
static int queue_value_check(const char *what, const char *v, const char **error_r)
{
	size_t len = strlen(v);
	if (len > QUEUE_VALUE_MAX)
		return queue_fail(error_r, "%s longer than %d bytes", what, QUEUE_VALUE_MAX);
	if (strpbrk(v, "\r\n") != NULL)
		return queue_fail(error_r, "%s contains CR or LF", what);
	return 0;
}

/* Writes "T value\n".  len is explicit so that an embedded NUL is seen and refused;
 * the length limit is the caller's (a recipient record holds more than one value). */
static int queue_record(struct queue_writer *w, char type, const char *what, const char *v,
			size_t len, const char **error_r)
{
	for (size_t i = 0; i < len; i++)
		if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
			return queue_fail(error_r, "%s contains CR, LF or NUL", what);
	char head[2] = { type, ' ' };
	if (queue_writer_put(w, head, 2) < 0 || queue_writer_put(w, v, len) < 0 ||
	    queue_writer_put(w, "\n", 1) < 0)
		return queue_fail(error_r, "cannot write %s: %s", w->tmp_path, strerror(errno));
	return 0;
}

static int queue_record_str(struct queue_writer *w, char type, const char *what, const char *v,
			    const char **error_r)
{
	if (v == NULL)
		v = "";
	if (queue_value_check(what, v, error_r) < 0)
		return -1;
	return queue_record(w, type, what, v, strlen(v), error_r);
}

static int queue_status_valid(char s)
{
	return s > ' ' && s <= '~';
}

static int queue_writer_envelope(struct queue_writer *w, const struct queue_envelope *env,
				 const char **error_r)
{
	char num[32];

	if (queue_writer_put(w, QUEUE_MAGIC "\n", sizeof(QUEUE_MAGIC)) < 0)
		return queue_fail(error_r, "cannot write %s: %s", w->tmp_path, strerror(errno));
	if (queue_record_str(w, 'I', "queue id", w->id, error_r) < 0)
		return -1;
	snprintf(num, sizeof(num), "%lld", env->arrival);
	if (queue_record_str(w, 'T', "arrival", num, error_r) < 0 ||
	    queue_record_str(w, 'F', "sender", env->from, error_r) < 0)
		return -1;
	snprintf(num, sizeof(num), "%d", env->ret);
	if (queue_record_str(w, 'N', "RET", num, error_r) < 0)
		return -1;
	if (env->envid != NULL && env->envid[0] != '\0' &&
	    queue_record_str(w, 'E', "ENVID", env->envid, error_r) < 0)
		return -1;
	if (queue_record_str(w, 'U', "SMTPUTF8", env->smtputf8 ? "1" : "0", error_r) < 0 ||
	    queue_record_str(w, '8', "8BITMIME", env->body_8bit ? "1" : "0", error_r) < 0)
		return -1;
	if (env->auth_user != NULL && env->auth_user[0] != '\0' &&
	    queue_record_str(w, 'A', "authenticated user", env->auth_user, error_r) < 0)
		return -1;
	if (queue_record_str(w, 'C', "client address", env->client_addr, error_r) < 0 ||
	    queue_record_str(w, 'H', "HELO name", env->helo, error_r) < 0)
		return -1;

	for (int i = 0; i < env->n_rcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		char status = r->status == '\0' ? QUEUE_STATUS_PENDING : r->status;
		if (!queue_status_valid(status))
			return queue_fail(error_r, "recipient %d: invalid status byte 0x%02x", i,
					  (unsigned char)status);
		if (r->addr == NULL || r->addr[0] == '\0')
			return queue_fail(error_r, "recipient %d: empty address", i);
		if (queue_value_check("recipient address", r->addr, error_r) < 0)
			return -1;
		char rec[QUEUE_VALUE_MAX + 32];
		int n = snprintf(rec, sizeof(rec), "%c %u %s", status, r->notify, r->addr);
		if (queue_record(w, 'R', "recipient", rec, (size_t)n, error_r) < 0)
			return -1;
		if (r->orcpt != NULL && r->orcpt[0] != '\0' &&
		    queue_record_str(w, 'O', "ORCPT", r->orcpt, error_r) < 0)
			return -1;
	}
	if (queue_writer_put(w, "M\n", 2) < 0)
		return queue_fail(error_r, "cannot write %s: %s", w->tmp_path, strerror(errno));
	w->data_off = queue_writer_pos(w);
	return 0;
}

static void queue_writer_free(struct queue_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	free(w->queue_dir);
	free(w->tmp_path);
	free(w->final_path);
	free(w->wbuf);
	free(w);
}

struct queue_writer *queue_writer_begin(const char *queue_dir, const struct queue_envelope *env,
					const char **error_r)
{
	if (env->n_rcpts < 1 || env->rcpts == NULL) {
		queue_fail(error_r, "no recipients");
		return NULL;
	}
	struct queue_writer *w = calloc(1, sizeof(*w));
	if (w == NULL) {
		queue_fail(error_r, "out of memory");
		return NULL;
	}
	w->fd = -1;
	w->queue_dir = strdup(queue_dir);
	w->wbuf = malloc(QUEUE_WRITE_BUF);
	if (w->queue_dir == NULL || w->wbuf == NULL) {
		queue_fail(error_r, "out of memory");
		goto fail;
	}

	/* A collision needs the same pid, microsecond and counter after a clock step and
	 * equal random bits; O_EXCL turns even that into a retry, never an overwrite. */
	int made_tmp_dir = 0;
	for (int attempt = 0; attempt < 8 && w->fd < 0; attempt++) {
		queue_id_new(w->id);
		free(w->tmp_path);
		free(w->final_path);
		w->tmp_path = queue_path_join(queue_dir, "tmp", w->id);
		w->final_path = queue_path_join(queue_dir, w->id, NULL);
		if (w->tmp_path == NULL || w->final_path == NULL) {
			queue_fail(error_r, "out of memory");
			goto fail;
		}
		w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			     0600);
		if (w->fd < 0 && errno == ENOENT && !made_tmp_dir) {
			char tmp_dir[4096];
			made_tmp_dir = 1;
			snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", queue_dir);
			if (file_mkdir_p(tmp_dir, 0700) < 0) {
				queue_fail(error_r, "cannot create %s: %s", tmp_dir,
					   strerror(errno));
				goto fail;
			}
			attempt--;
			continue;
		}
		if (w->fd < 0 && errno != EEXIST) {
			queue_fail(error_r, "cannot create %s: %s", w->tmp_path, strerror(errno));
			goto fail;
		}
	}
	if (w->fd < 0) {
		queue_fail(error_r, "cannot create a unique queue file in %s/tmp", queue_dir);
		goto fail;
	}
	if (queue_writer_envelope(w, env, error_r) < 0) {
		unlink(w->tmp_path);
		goto fail;
	}
	return w;
fail:
	queue_writer_free(w);
	return NULL;
}

int queue_writer_append(struct queue_writer *w, const void *data, size_t len,
			const char **error_r)
{
	if (queue_writer_put(w, data, len) < 0)
		return queue_fail(error_r, "cannot write %s: %s", w->tmp_path, strerror(errno));
	return 0;
}

int queue_writer_commit(struct queue_writer *w, int *disk_full_r, const char **error_r)
{
	const char *step;
	int saved;

	if (disk_full_r != NULL)
		*disk_full_r = 0;
	off_t data_len = queue_writer_pos(w) - w->data_off;
	char trailer[QUEUE_ID_MAX + QUEUE_LEN_DIGITS + 8];
	int n = snprintf(trailer, sizeof(trailer), "Z %s %0*lld\n", w->id, QUEUE_LEN_DIGITS,
			 (long long)data_len);

	step = "write";
	if (queue_writer_put(w, trailer, (size_t)n) < 0 || queue_writer_flush(w) < 0)
		goto fail;
	/* fsync, not fdatasync: the rename below must never point at a file whose size
	 * is not yet on disk. */
	step = "fsync";
	if (fsync(w->fd) < 0)
		goto fail;
	step = "close";
	int fd = w->fd;
	w->fd = -1;
	if (close(fd) < 0)
		goto fail;
	step = "rename";
	if (rename(w->tmp_path, w->final_path) < 0)
		goto fail;
	if (file_fsync_dir(w->queue_dir) < 0) {
		/* The rename may or may not survive a crash; the client is going to hear
		 * 451/452 and retry, so a copy that survived would be delivered twice. */
		saved = errno;
		unlink(w->final_path);
		queue_fail(error_r, "cannot fsync %s: %s", w->queue_dir, strerror(saved));
		if (disk_full_r != NULL)
			*disk_full_r = queue_errno_is_disk_full(saved);
		queue_writer_free(w);
		return -1;
	}
	queue_writer_free(w);
	return 0;
fail:
	saved = errno;
	unlink(w->tmp_path);
	queue_fail(error_r, "cannot %s %s: %s", step, w->tmp_path, strerror(saved));
	if (disk_full_r != NULL)
		*disk_full_r = queue_errno_is_disk_full(saved);
	queue_writer_free(w);
	return -1;
}

void queue_writer_abort(struct queue_writer **wp)
{
	if (wp == NULL || *wp == NULL)
		return;
	unlink((*wp)->tmp_path);
	queue_writer_free(*wp);
	*wp = NULL;
}

const char *queue_writer_id(const struct queue_writer *w)
{
	return w->id;
}

off_t queue_writer_size(const struct queue_writer *w)
{
	return queue_writer_pos(w) - w->data_off;
}

/* ---- reader ---- */

struct queue_reader {
	struct queue_envelope *env;
	int rcpt_cap;
	unsigned seen; /* bit per required/unique record type */
	char last_type;
};

/* Record types that appear at most once; each one's seen-bit is its index here. */
static const char queue_single_types[] = "ITFNEU8ACH";

enum {
	QR_I = 1 << 0,
	QR_T = 1 << 1,
	QR_F = 1 << 2,
	QR_N = 1 << 3,
	QR_E = 1 << 4,
	QR_U = 1 << 5,
	QR_8 = 1 << 6,
	QR_A = 1 << 7,
	QR_C = 1 << 8,
	QR_H = 1 << 9,
	QR_REQUIRED = QR_I | QR_T | QR_F | QR_N | QR_U | QR_8 | QR_C | QR_H,
};

static int queue_parse_ll(const char *s, long long max, long long *v_r)
{
	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return -1;
	*v_r = v;
	return 0;
}

static int queue_parse_flag(const char *v, int *flag_r)
{
	if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
		return -1;
	*flag_r = v[0] == '1';
	return 0;
}

static int queue_dup(char **dst, const char *v)
{
	*dst = strdup(v);
	return *dst == NULL ? -1 : 0;
}

/* One record: line (len bytes, without its LF, NUL-terminated in place) at file
 * offset off.  0 or -1 with a reason in *why_r. */
static int queue_reader_record(struct queue_reader *rd, char *line, size_t len, off_t off,
			       const char **why_r)
{
	struct queue_envelope *env = rd->env;
	long long v;

	if (memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL) {
		*why_r = "CR or NUL byte in a record";
		return -1;
	}
	if (len < 2 || line[1] != ' ') {
		*why_r = "malformed record";
		return -1;
	}
	char type = line[0];
	const char *val = line + 2;
	unsigned bit = 0;
	const char *single = type != '\0' ? strchr(queue_single_types, type) : NULL;
	if (single != NULL) {
		bit = 1u << (single - queue_single_types);
	} else if (type != 'R' && type != 'O') {
		*why_r = "unknown record type";
		return -1;
	}
	if (bit != 0) {
		if ((rd->seen & bit) != 0) {
			*why_r = "repeated record";
			return -1;
		}
		rd->seen |= bit;
	}

	int ok = 0;
	switch (type) {
	case 'I':
		ok = queue_id_valid(val);
		if (ok)
			snprintf(env->id, sizeof(env->id), "%s", val);
		break;
	case 'T':
		ok = queue_parse_ll(val, LLONG_MAX, &env->arrival) == 0;
		break;
	case 'F':
		ok = queue_dup(&env->from, val) == 0;
		break;
	case 'N':
		ok = queue_parse_ll(val, QUEUE_RET_HDRS, &v) == 0;
		env->ret = (int)v;
		break;
	case 'E':
		ok = queue_dup(&env->envid, val) == 0;
		break;
	case 'U':
		ok = queue_parse_flag(val, &env->smtputf8) == 0;
		break;
	case '8':
		ok = queue_parse_flag(val, &env->body_8bit) == 0;
		break;
	case 'A':
		ok = queue_dup(&env->auth_user, val) == 0;
		break;
	case 'C':
		ok = queue_dup(&env->client_addr, val) == 0;
		break;
	case 'H':
		ok = queue_dup(&env->helo, val) == 0;
		break;
	case 'R': {
		/* "s notify address" */
		if (!queue_status_valid(val[0]) || val[1] != ' ') {
			*why_r = "malformed recipient record";
			return -1;
		}
		const char *sp = strchr(val + 2, ' ');
		if (sp == NULL || sp[1] == '\0') {
			*why_r = "malformed recipient record";
			return -1;
		}
		char notify[16];
		size_t nlen = (size_t)(sp - (val + 2));
		if (nlen == 0 || nlen >= sizeof(notify)) {
			*why_r = "malformed recipient record";
			return -1;
		}
		memcpy(notify, val + 2, nlen);
		notify[nlen] = '\0';
		if (queue_parse_ll(notify, UINT_MAX, &v) < 0) {
			*why_r = "malformed recipient NOTIFY";
			return -1;
		}
		if (env->n_rcpts == rd->rcpt_cap) {
			int cap = rd->rcpt_cap == 0 ? 4 : rd->rcpt_cap * 2;
			struct queue_rcpt *p = realloc(env->rcpts, (size_t)cap * sizeof(*p));
			if (p == NULL) {
				*why_r = "out of memory";
				return -1;
			}
			env->rcpts = p;
			rd->rcpt_cap = cap;
		}
		struct queue_rcpt *r = &env->rcpts[env->n_rcpts];
		memset(r, 0, sizeof(*r));
		if (queue_dup(&r->addr, sp + 1) < 0) {
			*why_r = "out of memory";
			return -1;
		}
		env->n_rcpts++;
		r->status = val[0];
		r->notify = (unsigned)v;
		r->status_off = off + 2;
		ok = 1;
		break;
	}
	case 'O':
		if (rd->last_type != 'R' || env->n_rcpts == 0) {
			*why_r = "ORCPT record without its recipient";
			return -1;
		}
		ok = queue_dup(&env->rcpts[env->n_rcpts - 1].orcpt, val) == 0;
		break;
	}
	if (!ok) {
		*why_r = "malformed record value";
		return -1;
	}
	rd->last_type = type;
	return 0;
}

/* Reads records from offset 0 up to and including the M line; *data_off_r is where
 * the message starts. */
static int queue_reader_header(struct queue_reader *rd, int fd, off_t *data_off_r,
			       const char **why_r)
{
	struct buf b;
	size_t line_start = 0;
	int first = 1, ret = -1;

	buf_init(&b, QUEUE_HEADER_MAX);
	for (;;) {
		/* Parse every complete line in the buffer. */
		char *nl;
		while (b.len > line_start &&
		       (nl = memchr(b.data + line_start, '\n', b.len - line_start)) != NULL) {
			char *line = b.data + line_start;
			size_t len = (size_t)(nl - line);
			off_t off = (off_t)line_start;
			*nl = '\0';
			line_start += len + 1;
			if (first) {
				if (strcmp(line, QUEUE_MAGIC) != 0) {
					*why_r = "not a tern queue file (version 1)";
					goto out;
				}
				first = 0;
				continue;
			}
			if (len == 1 && line[0] == 'M') {
				*data_off_r = (off_t)line_start;
				ret = 0;
				goto out;
			}
			if (queue_reader_record(rd, line, len, off, why_r) < 0)
				goto out;
		}
		if (b.len - line_start > QUEUE_VALUE_MAX + 64) {
			*why_r = "record too long";
			goto out;
		}
		char chunk[QUEUE_READ_CHUNK];
		ssize_t n = pread(fd, chunk, sizeof(chunk), (off_t)b.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*why_r = strerror(errno);
			goto out;
		}
		if (n == 0) {
			*why_r = "truncated envelope";
			goto out;
		}
		if (buf_append(&b, chunk, (size_t)n) < 0) {
			*why_r = "envelope too large";
			goto out;
		}
	}
out:
	buf_deinit(&b);
	return ret;
}

int queue_file_open(const char *path, struct queue_envelope *env, int *fd_r,
		    const char **error_r)
{
	const char *why = NULL;
	struct stat st;

	memset(env, 0, sizeof(*env));
	*fd_r = -1;
	int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int saved = errno;
		queue_fail(error_r, "queue file %s: %s", path, strerror(saved));
		errno = saved;
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		why = strerror(errno);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		why = "not a regular file";
		goto fail;
	}

	struct queue_reader rd = { .env = env };
	off_t data_off;
	if (queue_reader_header(&rd, fd, &data_off, &why) < 0)
		goto fail;
	if ((rd.seen & QR_REQUIRED) != QR_REQUIRED) {
		why = "required record missing";
		goto fail;
	}
	if (env->n_rcpts == 0) {
		why = "no recipients";
		goto fail;
	}
	const char *base = strrchr(path, '/');
	base = base != NULL ? base + 1 : path;
	if (strcmp(base, env->id) != 0) {
		why = "file name differs from its queue id";
		goto fail;
	}

	/* The end record's length is known from the id, so its place follows from the
	 * file size, and the length it states must put it exactly there. */
	off_t trailer_len = (off_t)(2 + strlen(env->id) + 1 + QUEUE_LEN_DIGITS + 1);
	if (st.st_size < data_off + trailer_len) {
		why = "no end record (truncated)";
		goto fail;
	}
	off_t data_len = st.st_size - data_off - trailer_len;
	char expect[QUEUE_ID_MAX + QUEUE_LEN_DIGITS + 8], got[sizeof(expect)];
	snprintf(expect, sizeof(expect), "Z %s %0*lld\n", env->id, QUEUE_LEN_DIGITS,
		 (long long)data_len);
	ssize_t n;
	do {
		n = pread(fd, got, (size_t)trailer_len, st.st_size - trailer_len);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		why = strerror(errno);
		goto fail;
	}
	if (n != trailer_len || memcmp(got, expect, (size_t)trailer_len) != 0) {
		why = "no valid end record (truncated or damaged)";
		goto fail;
	}
	env->data_off = data_off;
	env->data_len = data_len;
	if (env->from == NULL || env->client_addr == NULL || env->helo == NULL) {
		why = "out of memory";
		goto fail;
	}
	*fd_r = fd;
	return 0;
fail:
	queue_fail(error_r, "queue file %s: %s", path, why);
	queue_envelope_free(env);
	memset(env, 0, sizeof(*env));
	close(fd);
	errno = EINVAL;
	return -1;
}

int queue_file_set_status(int fd, struct queue_rcpt *r, char status, int sync,
			  const char **error_r)
{
	if (!queue_status_valid(status))
		return queue_fail(error_r, "invalid status byte 0x%02x", (unsigned char)status);
	if (r->status_off < 2)
		return queue_fail(error_r, "recipient without a status offset");
	/* Cheap guard against a status written into the wrong file or into message data:
	 * the byte must sit inside an "R s " record head. */
	char head[4];
	ssize_t n;
	do {
		n = pread(fd, head, sizeof(head), r->status_off - 2);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return queue_fail(error_r, "cannot read status: %s", strerror(errno));
	if (n != (ssize_t)sizeof(head) || head[0] != 'R' || head[1] != ' ' ||
	    !queue_status_valid(head[2]) || head[3] != ' ')
		return queue_fail(error_r, "status offset %lld is not in a recipient record",
				  (long long)r->status_off);
	do {
		n = pwrite(fd, &status, 1, r->status_off);
	} while (n < 0 && errno == EINTR);
	if (n != 1)
		return queue_fail(error_r, "cannot write status: %s",
				  n < 0 ? strerror(errno) : "short write");
	if (sync && fdatasync(fd) < 0)
		return queue_fail(error_r, "cannot fdatasync status: %s", strerror(errno));
	r->status = status;
	return 0;
}

/* ---- directory ---- */

static int queue_cmp_ids(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

int queue_dir_scan(const char *queue_dir, void (*cb)(void *ctx, const char *id), void *ctx,
		   const char **error_r)
{
	DIR *d = opendir(queue_dir);
	if (d == NULL)
		return queue_fail(error_r, "cannot open %s: %s", queue_dir, strerror(errno));

	char(*ids)[QUEUE_ID_MAX] = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (!queue_id_valid(de->d_name))
			continue;
		unsigned char type = de->d_type;
		if (type == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			type = S_ISREG(st.st_mode) ? DT_REG : DT_DIR;
		}
		if (type != DT_REG)
			continue;
		if (n == cap) {
			size_t ncap = cap == 0 ? 64 : cap * 2;
			void *p = realloc(ids, ncap * sizeof(*ids));
			if (p == NULL) {
				free(ids);
				closedir(d);
				return queue_fail(error_r, "out of memory listing %s", queue_dir);
			}
			ids = p;
			cap = ncap;
		}
		snprintf(ids[n++], QUEUE_ID_MAX, "%s", de->d_name);
		errno = 0;
	}
	if (errno != 0) {
		int saved = errno;
		free(ids);
		closedir(d);
		return queue_fail(error_r, "cannot read %s: %s", queue_dir, strerror(saved));
	}
	closedir(d);
	if (n > 0)
		qsort(ids, n, sizeof(*ids), queue_cmp_ids);
	for (size_t i = 0; i < n; i++)
		cb(ctx, ids[i]);
	free(ids);
	return 0;
}

int queue_dir_clean_tmp(const char *queue_dir, long long older_than_seconds)
{
	char tmp_dir[4096];
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", queue_dir);
	DIR *d = opendir(tmp_dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	time_t limit = time(NULL) - (time_t)older_than_seconds;
	int removed = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode) || st.st_mtime >= limit)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}
