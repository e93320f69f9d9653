/* Drives the HTTP server without sockets for C tests and fuzzing: a runtime and generation
 * made once, an app loaded from Lua source, and raw request bytes pushed through
 * core.http_inject (the same parser, limits, router and response code as a socket). */
#ifndef LS_TEST_HTTP_DRIVER_H
#define LS_TEST_HTTP_DRIVER_H

#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

#include "../../src/module.h"
#include "../../src/runtime.h"

typedef struct http_driver_s {
  uv_loop_t loop;
  ls_runtime_t rt;
  lua_State *L;
} http_driver_t;

/* Loads `app_source` (a chunk returning a handler or an app) and keeps a function
 * `drive(bytes) -> response` in the global DRIVE. Returns 0 or -1 (message on stderr). */
static inline int http_driver_init(http_driver_t *d, const char *app_source) {
  static const char drive_src[] =
      "local core, app = ...\n"
      "local handler = require('luasrv.http').as_handler(app, 1)\n"
      "DRIVE = function(bytes, limits)\n"
      "  return core.run(function() return core.http_inject(handler, bytes, limits) end)\n"
      "end\n";
  uv_loop_init(&d->loop);
  ls_runtime_init(&d->rt, &d->loop);
  d->rt.gen = ls_gen_new(&d->rt, NULL);
  d->L = d->rt.gen->L;
  luaL_openlibs(d->L);
  lua_pushlightuserdata(d->L, d->rt.gen);
  lua_setfield(d->L, LUA_REGISTRYINDEX, LS_GEN_KEY);
  lua_getglobal(d->L, "package");
  lua_pushstring(d->L, LUASRV_SOURCE_LUA_DIR "/?.lua;" LUASRV_SOURCE_LUA_DIR "/?/init.lua");
  lua_setfield(d->L, -2, "path");
  lua_getfield(d->L, -1, "preload");
  lua_pushcfunction(d->L, ls_module_open);
  lua_setfield(d->L, -2, "luasrv.core");
  lua_pop(d->L, 2);
  if (luaL_loadstring(d->L, drive_src) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(d->L, -1));
    return -1;
  }
  lua_getglobal(d->L, "require");
  lua_pushliteral(d->L, "luasrv.core");
  lua_call(d->L, 1, 1);
  if (luaL_dostring(d->L, app_source) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(d->L, -1));
    return -1;
  }
  if (ls_pcall(d->L, 2, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(d->L, -1));
    return -1;
  }
  return 0;
}

/* Runs one request; the response bytes are copied into out (NUL-terminated, cut at size).
 * Returns the response length, or -1 if the driver raised. */
static inline long http_driver_run(http_driver_t *d, const char *bytes, size_t len, char *out,
                                   size_t size) {
  size_t rlen;
  const char *r;
  long n;
  lua_getglobal(d->L, "DRIVE");
  lua_pushlstring(d->L, bytes, len);
  if (ls_pcall(d->L, 1, 1) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(d->L, -1));
    lua_pop(d->L, 1);
    return -1;
  }
  r = lua_tolstring(d->L, -1, &rlen);
  n = (long)rlen;
  if (out != NULL && size > 0) {
    if (rlen >= size)
      rlen = size - 1;
    memcpy(out, r, rlen);
    out[rlen] = '\0';
  }
  lua_pop(d->L, 1);
  return n;
}

static inline void http_driver_close(http_driver_t *d) {
  ls_runtime_close(&d->rt);
  uv_loop_close(&d->loop);
}

#endif
