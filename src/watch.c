#include "watch.h"

#include <limits.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

/* One watched directory and the file names in it that matter. */
struct ls_watch_dir_s {
  uv_fs_event_t event;
  ls_watcher_t *watcher;
  ls_watch_dir_t *next;
  char dir[PATH_MAX];
  char *names;            /* "name\0name\0\0" */
  size_t names_size;
};

static void dir_close_cb(uv_handle_t *h) {
  ls_watch_dir_t *d = h->data;
  ls_free(d->names, d->names_size);
  ls_free(d, sizeof *d);
}

static int dir_has(const ls_watch_dir_t *d, const char *name) {
  const char *p = d->names;
  while (p != NULL && *p != '\0') {
    if (strcmp(p, name) == 0)
      return 1;
    p += strlen(p) + 1;
  }
  return 0;
}

static void debounce_cb(uv_timer_t *t) {
  ls_watcher_t *w = t->data;
  w->changed(w);
}

static void event_cb(uv_fs_event_t *event, const char *filename, int events, int status) {
  ls_watch_dir_t *d = event->data;
  (void)events;
  if (status < 0 || filename == NULL || !dir_has(d, filename))
    return;
  uv_timer_start(&d->watcher->debounce, debounce_cb, LS_WATCH_DEBOUNCE_MS, 0);
}

void ls_watcher_init(ls_watcher_t *w, uv_loop_t *loop, void (*changed)(ls_watcher_t *w),
                     void *data) {
  memset(w, 0, sizeof *w);
  w->loop = loop;
  w->changed = changed;
  w->data = data;
  uv_timer_init(loop, &w->debounce);
  w->debounce.data = w;
}

void ls_watcher_add(ls_watcher_t *w, const char *path) {
  const char *slash = strrchr(path, '/');
  const char *name;
  size_t dir_len, name_len;
  ls_watch_dir_t *d;
  char *names, dir[PATH_MAX];
  if (slash == NULL)
    return;
  name = slash + 1;
  dir_len = (size_t)(slash - path);
  name_len = strlen(name) + 1;
  if (dir_len >= sizeof dir)
    return;
  memcpy(dir, path, dir_len);
  dir[dir_len] = '\0';
  if (dir_len == 0)
    memcpy(dir, "/", 2);
  for (d = w->dirs; d != NULL; d = d->next)
    if (strcmp(d->dir, dir) == 0)
      break;
  if (d == NULL) {
    d = ls_malloc(sizeof *d);
    if (d == NULL)
      return;
    memset(d, 0, sizeof *d);
    d->watcher = w;
    memcpy(d->dir, dir, strlen(dir) + 1);
    uv_fs_event_init(w->loop, &d->event);
    d->event.data = d;
    if (uv_fs_event_start(&d->event, event_cb, d->dir, 0) != 0) {
      ls_log(LS_LOG_WARN, "cannot watch %s for changes", d->dir);
      uv_close((uv_handle_t *)&d->event, dir_close_cb);
      return;
    }
    d->next = w->dirs;
    w->dirs = d;
  }
  if (dir_has(d, name))
    return;
  names = ls_realloc(d->names, d->names_size, (d->names_size ? d->names_size : 1) + name_len);
  if (names == NULL)
    return;
  if (d->names_size == 0)
    d->names_size = 1;
  memcpy(names + d->names_size - 1, name, name_len);
  d->names = names;
  d->names_size += name_len;
  d->names[d->names_size - 1] = '\0';
}

void ls_watcher_clear(ls_watcher_t *w) {
  while (w->dirs != NULL) {
    ls_watch_dir_t *d = w->dirs;
    w->dirs = d->next;
    uv_close((uv_handle_t *)&d->event, dir_close_cb);
  }
}

void ls_watcher_close(ls_watcher_t *w) {
  ls_watcher_clear(w);
  uv_close((uv_handle_t *)&w->debounce, NULL);
}
