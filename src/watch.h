/* Watching files for changes (--reload): one uv_fs_event_t per directory, with the names that
 * matter in it, so that an editor's rename over a file is seen like a write. A burst of
 * changes (editors write in several steps) calls `changed` once, LS_WATCH_DEBOUNCE_MS after
 * the last one. Used by the command's app (src/reload.c) and by the --workers master. */
#ifndef LS_WATCH_H
#define LS_WATCH_H

#include <uv.h>

#define LS_WATCH_DEBOUNCE_MS 30

typedef struct ls_watch_dir_s ls_watch_dir_t;
typedef struct ls_watcher_s ls_watcher_t;

struct ls_watcher_s {
  uv_loop_t *loop;
  ls_watch_dir_t *dirs;
  uv_timer_t debounce;
  void (*changed)(ls_watcher_t *w);
  void *data;
};

/* Sets up an empty watcher on `loop`; changed(w) runs after a burst of changes. */
void ls_watcher_init(ls_watcher_t *w, uv_loop_t *loop, void (*changed)(ls_watcher_t *w),
                     void *data);
/* Watches the file at `path` (absolute, as realpath gives it). Failures are logged; the file
 * is then simply not watched. */
void ls_watcher_add(ls_watcher_t *w, const char *path);
/* Stops watching every file. */
void ls_watcher_clear(ls_watcher_t *w);
/* Stops watching and closes the handles (the loop must run for their memory to go). */
void ls_watcher_close(ls_watcher_t *w);

#endif
