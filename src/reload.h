/* Loading the entry script into a generation, and reloading it: on SIGHUP, and with --reload
 * when the script or a Lua file it required from the project changes on disk.
 *
 * A load makes a fresh Lua state and runs the script's top level in a task. Listeners it opens
 * on an address the running generation already serves take that listener over (the socket
 * stays open); once the top level returns, the new generation is committed (ls_gen_commit)
 * and serves all new work, while requests and TCP connections in progress finish on the old
 * one. If the load fails, what it opened is closed and the old generation goes on serving. */
#ifndef LS_RELOAD_H
#define LS_RELOAD_H

#include "runtime.h"
#include "watch.h"

typedef struct ls_app_s ls_app_t;

struct ls_app_s {
  ls_runtime_t *rt;
  const char *script;
  int argc;
  char **argv;
  int script_index;       /* argv index of the script */
  size_t memory_limit;    /* bytes per Lua state; 0: none */
  int watch;              /* --reload: watch the files */
  int loading;            /* a load is in progress */
  int again;              /* another change came while loading */
  uint64_t load_started;  /* uv_hrtime() of the load in progress */
  ls_watcher_t watcher;
  uv_signal_t sighup;
  /* If set, called after each load, before a failed generation is dropped: ok is 1 when
   * `gen` was committed (src/workers.c reports to the master from here). */
  void (*loaded)(ls_app_t *app, ls_gen_t *gen, int ok);
};

/* Sets up reloading (SIGHUP always, file watching if app->watch) and starts the first load.
 * Returns 0, or -1 if the script could not be compiled (reported on stderr). The top level
 * then runs on the loop; if it fails, rt->exit_code becomes 1 and the runtime stops. */
int ls_app_start(ls_app_t *app);
/* The directory of luasrv's Lua files (holding luasrv/init.lua): $LUASRV_LUA_DIR, an installed
 * tree beside the binary, the install prefix, or the source tree for a binary in its build
 * directory (see reload.c). */
void ls_find_lua_dir(char *out, size_t size);
/* Starts loading a new generation (or notes that one more is wanted if one is loading). */
void ls_app_reload(ls_app_t *app);
/* Calls fn(ud, path) with the real path of each Lua file the generation's require() found
 * under the script's directory, the script first: the files --reload watches. */
void ls_app_project_files(ls_app_t *app, ls_gen_t *gen, void (*fn)(void *ud, const char *path),
                          void *ud);
/* Stops watching and closes the app's handles. */
void ls_app_close(ls_app_t *app);

#endif
