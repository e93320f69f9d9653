#include "reload.h"

#include <lualib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "module.h"

/* Registry key of the list of files require() found in a generation. */
#define LS_REQUIRED_KEY "luasrv.required_files"

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

/* Where the Lua half (lua/luasrv) lives, the first of: $LUASRV_LUA_DIR; <dir of the
 * binary>/../share/luasrv/lua (an installed or copied tree); the install prefix the binary
 * was built for; and the source tree, only for a binary that runs from the build directory it
 * was built in. A copied binary therefore never loads the source tree's files by surprise;
 * with none found, the install prefix is named, so require's error lists where it looked. */
void ls_find_lua_dir(char *out, size_t size) {
  const char *env = getenv("LUASRV_LUA_DIR");
  char exe[4000], real_build[4096], real_exe[4096];
  size_t len = sizeof exe;
  int from_build = 0;
  if (env != NULL && *env != '\0') {
    snprintf(out, size, "%s", env);
    return;
  }
  if (uv_exepath(exe, &len) == 0) {
    char *slash = strrchr(exe, '/');
    char probe[4100];
    if (slash != NULL) {
      *slash = '\0';
      snprintf(probe, sizeof probe, "%s/../share/luasrv/lua/luasrv/init.lua", exe);
      if (file_exists(probe)) {
        snprintf(out, size, "%s/../share/luasrv/lua", exe);
        return;
      }
      if (realpath(exe, real_exe) != NULL && realpath(LUASRV_BUILD_DIR, real_build) != NULL)
        from_build = strncmp(real_exe, real_build, strlen(real_build)) == 0;
    }
  }
  if (file_exists(LUASRV_INSTALL_LUA_DIR "/luasrv/init.lua") || !from_build ||
      !file_exists(LUASRV_SOURCE_LUA_DIR "/luasrv/init.lua"))
    snprintf(out, size, "%s", LUASRV_INSTALL_LUA_DIR);
  else
    snprintf(out, size, "%s", LUASRV_SOURCE_LUA_DIR);
}

/* Loads the standard libraries, points package.path at our Lua half and makes
 * require "luasrv.core" bind to this generation. Runs protected. */
static int setup_state(lua_State *L) {
  ls_gen_t *gen = lua_touserdata(L, 1);
  char dir[4096];
  luaL_openlibs(L);
  lua_pushlightuserdata(L, gen);
  lua_setfield(L, LUA_REGISTRYINDEX, LS_GEN_KEY);
  ls_find_lua_dir(dir, sizeof dir);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, ls_module_open);
  lua_setfield(L, -2, "luasrv.core");
  /* Note every Lua file require() finds, loaded or not, so a module that fails to load is
   * watched too: saving a fix to it reloads. */
  if (luaL_loadstring(L, "local files, searchpath = ...\n"
                         "table.insert(package.searchers, 2, function(name)\n"
                         "  local path = searchpath(name, package.path)\n"
                         "  if path then files[#files + 1] = path end\n"
                         "end)\n") != LUA_OK)
    return lua_error(L);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LS_REQUIRED_KEY);
  lua_getfield(L, -4, "searchpath");
  lua_call(L, 2, 0);
  return 0;
}

/* Sets the global `arg` as the stand-alone interpreter does and pushes the script's own
 * arguments; returns how many. */
static int push_script_args(lua_State *L, int argc, char **argv, int script_index) {
  int i;
  lua_createtable(L, argc - script_index - 1, script_index + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script_index);
  }
  lua_setglobal(L, "arg");
  luaL_checkstack(L, argc, "too many arguments");
  for (i = script_index + 1; i < argc; i++)
    lua_pushstring(L, argv[i]);
  return argc - script_index - 1;
}

/* ---- watching ----------------------------------------------------------------------------- */

/* The Lua files the generation's require() found, with the script first; rewatch keeps those
 * under the script's directory (not system or luasrv modules). */
static int list_project_files(lua_State *L) {
  lua_Integer i, n;
  lua_createtable(L, 8, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LS_REQUIRED_KEY);
  n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -3, i + 1);
  }
  lua_pop(L, 1);
  return 1;
}

void ls_app_project_files(ls_app_t *app, ls_gen_t *gen, void (*fn)(void *ud, const char *path),
                          void *ud) {
  lua_State *L = gen->L;
  char root[PATH_MAX], real[PATH_MAX];
  size_t root_len;
  lua_Integer i, n;
  if (realpath(app->script, root) == NULL)
    return;
  *strrchr(root, '/') = '\0';
  root_len = strlen(root);
  lua_pushcfunction(L, list_project_files);
  lua_pushstring(L, app->script);
  if (ls_pcall(L, 1, 1) != LUA_OK) {
    ls_log(LS_LOG_WARN, "cannot list the files to watch: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return;
  }
  n = (lua_Integer)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (realpath(lua_tostring(L, -1), real) != NULL && strncmp(real, root, root_len) == 0 &&
        real[root_len] == '/')
      fn(ud, real);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static void watch_one(void *ud, const char *path) { ls_watcher_add(ud, path); }

static void rewatch(ls_app_t *app, ls_gen_t *gen) {
  ls_watcher_clear(&app->watcher);
  ls_app_project_files(app, gen, watch_one, &app->watcher);
}

static void changed_cb(ls_watcher_t *w) { ls_app_reload(w->data); }

/* ---- loading ------------------------------------------------------------------------------ */

static void load_generation(ls_app_t *app);

static int load_done(ls_task_t *task, int status, int nres) {
  ls_app_t *app = task->data;
  ls_runtime_t *rt = app->rt;
  ls_gen_t *gen = task->gen;
  int first = rt->gen == NULL;
  (void)nres;
  app->loading = 0;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(task->co, -1);
    if (first) {
      /* The script failed at its top level: report it as the interpreter does and exit. */
      fprintf(stderr, "luasrv: %s\n", msg != NULL ? msg : "(error object)");
      fflush(stderr);
      rt->exit_code = 1;
      ls_gen_commit(gen);
      ls_runtime_stop(rt, 0);
      return 1;
    }
    ls_log(LS_LOG_ERROR, "reload of %s failed; generation %u goes on serving: %s", app->script,
           rt->gen->id, msg != NULL ? msg : "(error object)");
    if (app->watch)
      rewatch(app, gen); /* what the failed load required, so saving a fix reloads */
    if (app->loaded != NULL)
      app->loaded(app, gen, 0);
    ls_gen_abort(gen);
  } else {
    ls_gen_commit(gen);
    if (!first)
      ls_log(LS_LOG_INFO, "reloaded %s in %.0f ms (generation %u)", app->script,
             (double)(uv_hrtime() - app->load_started) / 1e6, gen->id);
    if (app->watch)
      rewatch(app, gen);
    if (app->loaded != NULL)
      app->loaded(app, gen, 1);
  }
  if (app->again) {
    app->again = 0;
    load_generation(app);
  }
  return 1;
}

static void load_generation(ls_app_t *app) {
  ls_runtime_t *rt = app->rt;
  ls_gen_t *gen;
  ls_task_t *task;
  lua_State *L;
  int nargs;
  app->load_started = uv_hrtime();
  gen = ls_gen_new(rt, NULL);
  if (gen == NULL) {
    ls_log(LS_LOG_ERROR, "cannot load %s: not enough memory", app->script);
    return;
  }
  gen->alloc.limit = app->memory_limit;
  L = gen->L;
  lua_pushcfunction(L, setup_state);
  lua_pushlightuserdata(L, gen);
  if (ls_pcall(L, 1, 0) != LUA_OK || luaL_loadfile(L, app->script) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (rt->gen == NULL) {
      fprintf(stderr, "luasrv: %s\n", msg != NULL ? msg : "cannot load the script");
      rt->exit_code = 1;
    } else {
      ls_log(LS_LOG_ERROR, "reload of %s failed; generation %u goes on serving: %s",
             app->script, rt->gen->id, msg);
    }
    lua_pop(L, 1);
    ls_gen_abort(gen);
    return;
  }
  task = ls_task_new(gen, load_done, app);
  if (task == NULL) {
    lua_pop(L, 1);
    ls_gen_abort(gen);
    return;
  }
  lua_xmove(L, task->co, 1);
  nargs = push_script_args(task->co, app->argc, app->argv, app->script_index);
  rt->loading = gen;
  app->loading = 1;
  ls_task_start(task, nargs);
}

void ls_app_reload(ls_app_t *app) {
  if (app->rt->stopping)
    return;
  if (app->loading) {
    app->again = 1;
    return;
  }
  load_generation(app);
}

static void sighup_cb(uv_signal_t *sig, int signum) {
  (void)signum;
  ls_app_reload(sig->data);
}

int ls_app_start(ls_app_t *app) {
  ls_watcher_init(&app->watcher, app->rt->loop, changed_cb, app);
  uv_signal_init(app->rt->loop, &app->sighup);
  app->sighup.data = app;
  uv_signal_start(&app->sighup, sighup_cb, SIGHUP);
  uv_unref((uv_handle_t *)&app->sighup);
  load_generation(app);
  return app->rt->exit_code != 0 && app->rt->gen == NULL && !app->loading ? -1 : 0;
}

void ls_app_close(ls_app_t *app) {
  ls_watcher_close(&app->watcher);
  uv_close((uv_handle_t *)&app->sighup, NULL);
}
