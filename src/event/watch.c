/* Change notification with inotify: one descriptor per loop, kernel watches shared by
 * path and counted, callbacks coalesced per batch of events (see watch.h). */
#include "event/watch.h"

#include "base/log.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

/* Names coming and going, and touched (utimes): not writes, which come before a writer
 * is done (writers that others should see rename into place or touch a marker). */
#define WATCH_MASK                                                                       \
	(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | \
	 IN_MOVE_SELF)
/* Distinct kernel watches a batch remembers; more wake every watch. */
#define WATCH_BATCH_WDS 256
#define WATCH_READ_MAX (64 * 1024) /* bytes of events read per wake-up */

struct kwatch {
	int wd;
	int refs;
};

struct watch {
	struct watcher *w;
	int wds[WATCH_MAX_PATHS];
	size_t n;
	watch_fn *cb;
	void *arg;
	size_t idx;  /* in w->subs */
	int fired;
};

struct watcher {
	int fd;
	struct event *ev;
	struct kwatch *k;
	size_t n_k, cap_k;
	struct watch **subs;
	size_t n_subs, cap_subs;
	int dispatching;
	int holes;   /* subs has NULL slots (removed while dispatching) */
};

static struct kwatch *kwatch_find(struct watcher *w, int wd)
{
	for (size_t i = 0; i < w->n_k; i++)
		if (w->k[i].wd == wd)
			return &w->k[i];
	return NULL;
}

static void kwatch_drop(struct watcher *w, int wd)
{
	struct kwatch *k = kwatch_find(w, wd);
	if (k == NULL)
		return;
	if (--k->refs > 0)
		return;
	inotify_rm_watch(w->fd, wd); /* fails harmlessly when the kernel dropped it */
	*k = w->k[--w->n_k];
}

static void subs_compact(struct watcher *w)
{
	size_t j = 0;
	for (size_t i = 0; i < w->n_subs; i++) {
		if (w->subs[i] == NULL)
			continue;
		w->subs[j] = w->subs[i];
		w->subs[j]->idx = j;
		j++;
	}
	w->n_subs = j;
	w->holes = 0;
}

static int wd_in(const int *wds, size_t n, int wd)
{
	for (size_t i = 0; i < n; i++)
		if (wds[i] == wd)
			return 1;
	return 0;
}

static void on_events(evutil_socket_t fd, short what, void *arg)
{
	struct watcher *w = arg;
	_Alignas(struct inotify_event) char buf[WATCH_READ_MAX];
	int wds[WATCH_BATCH_WDS];
	size_t n_wds = 0;
	int all = 0;
	ssize_t len = read(fd, buf, sizeof(buf));
	if (len <= 0)
		return;
	for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= len;) {
		const struct inotify_event *e = (const struct inotify_event *)(buf + off);
		off += (ssize_t)sizeof(*e) + e->len;
		if (e->mask & IN_Q_OVERFLOW || e->wd < 0) {
			all = 1;
			continue;
		}
		/* IN_IGNORED (the directory went) leaves the entry: its removal then fails
		 * harmlessly, and a new watch the kernel gives the same number shares it. */
		if (!wd_in(wds, n_wds, e->wd)) {
			if (n_wds == WATCH_BATCH_WDS)
				all = 1;
			else
				wds[n_wds++] = e->wd;
		}
	}
	w->dispatching = 1;
	for (size_t i = 0; i < w->n_subs; i++) {
		struct watch *s = w->subs[i];
		if (s == NULL)
			continue;
		for (size_t j = 0; j < s->n && !s->fired; j++)
			s->fired = all || wd_in(wds, n_wds, s->wds[j]);
	}
	/* A callback may add or remove watches: subs is read anew each time. */
	for (size_t i = 0; i < w->n_subs; i++) {
		struct watch *s = w->subs[i];
		if (s == NULL || !s->fired)
			continue;
		s->fired = 0;
		s->cb(s->arg);
	}
	w->dispatching = 0;
	if (w->holes)
		subs_compact(w);
}

struct watcher *watcher_new(struct event_base *base)
{
	struct watcher *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return NULL;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		log_debug("watch", "event=inotify_unavailable error=\"%s\"", strerror(errno));
		free(w);
		return NULL;
	}
	w->ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_events, w);
	if (w->ev == NULL || event_add(w->ev, NULL) < 0) {
		if (w->ev != NULL)
			event_free(w->ev);
		close(w->fd);
		free(w);
		return NULL;
	}
	return w;
}

void watcher_free(struct watcher **wp)
{
	struct watcher *w = *wp;
	if (w == NULL)
		return;
	event_free(w->ev);
	close(w->fd); /* drops every kernel watch */
	for (size_t i = 0; i < w->n_subs; i++)
		free(w->subs[i]);
	free(w->subs);
	free(w->k);
	free(w);
	*wp = NULL;
}

struct watch *watch_add(struct watcher *w, const char *const *paths, size_t n, watch_fn *cb,
			void *arg)
{
	if (w == NULL || n == 0 || n > WATCH_MAX_PATHS)
		return NULL;
	struct watch *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->w = w;
	s->cb = cb;
	s->arg = arg;
	if (w->n_subs == w->cap_subs) {
		size_t ncap = w->cap_subs == 0 ? 16 : w->cap_subs * 2;
		struct watch **ns = realloc(w->subs, ncap * sizeof(*ns));
		if (ns == NULL)
			goto fail;
		w->subs = ns;
		w->cap_subs = ncap;
	}
	if (w->cap_k - w->n_k < n) {
		size_t ncap = w->cap_k * 2 > w->n_k + n ? w->cap_k * 2 : w->n_k + n + 16;
		struct kwatch *nk = realloc(w->k, ncap * sizeof(*nk));
		if (nk == NULL)
			goto fail;
		w->k = nk;
		w->cap_k = ncap;
	}
	for (size_t i = 0; i < n; i++) {
		int wd = inotify_add_watch(w->fd, paths[i], WATCH_MASK | IN_MASK_ADD);
		if (wd < 0) {
			log_debug("watch", "event=watch_failed path=\"%s\" error=\"%s\"", paths[i],
				  strerror(errno));
			goto fail;
		}
		struct kwatch *k = kwatch_find(w, wd);
		if (k == NULL) {
			k = &w->k[w->n_k++];
			k->wd = wd;
			k->refs = 0;
		}
		k->refs++;
		s->wds[s->n++] = wd;
	}
	s->idx = w->n_subs;
	w->subs[w->n_subs++] = s;
	return s;
fail:
	for (size_t i = 0; i < s->n; i++)
		kwatch_drop(w, s->wds[i]);
	free(s);
	return NULL;
}

void watch_remove(struct watch **sp)
{
	struct watch *s = *sp;
	if (s == NULL)
		return;
	struct watcher *w = s->w;
	for (size_t i = 0; i < s->n; i++)
		kwatch_drop(w, s->wds[i]);
	if (w->dispatching) {
		w->subs[s->idx] = NULL;
		w->holes = 1;
	} else {
		w->subs[s->idx] = w->subs[--w->n_subs];
		w->subs[s->idx]->idx = s->idx;
	}
	free(s);
	*sp = NULL;
}
