/* Change notification for directories and files (inotify), on one event loop.
 *
 * A watcher owns one inotify descriptor on its loop.  A watch asks for a callback soon
 * after anything is created, removed, renamed or touched (its times or mode set) in
 * one of its paths, not written: writers that others should see rename into place or
 * touch a marker when they are done; several
 * watches may share a path (one kernel watch, counted).  Events are coalesced: a
 * watch's callback runs at most once per batch the loop reads.  Only what the kernel
 * reports is seen (not changes on another machine's mount); callers keep a slow poll
 * for that, and poll instead when watch_add fails (no inotify, or the per-user limit
 * of watches reached). */
#ifndef TERN_EVENT_WATCH_H
#define TERN_EVENT_WATCH_H

#include <stddef.h>

struct event_base;
struct watcher;
struct watch;

typedef void watch_fn(void *arg); /* on the loop thread */

/* NULL when inotify is not available (logged at debug level). */
struct watcher *watcher_new(struct event_base *base);
/* Every watch must have been removed. */
void watcher_free(struct watcher **w);

#define WATCH_MAX_PATHS 4

/* Watches n (1..WATCH_MAX_PATHS) paths; cb(arg) runs after changes in any of them.
 * NULL when one cannot be watched (the caller polls instead). */
struct watch *watch_add(struct watcher *w, const char *const *paths, size_t n, watch_fn *cb,
			void *arg);
/* Stops the callbacks (none runs after this returns) and frees the watch. */
void watch_remove(struct watch **watch);

#endif
