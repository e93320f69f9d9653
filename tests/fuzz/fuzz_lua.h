/* The Lua state of a fuzz target that calls C functions of the core directly (no app, no
 * loop): made on the first input, kept for the others, never closed (libFuzzer exits). */
#ifndef LS_FUZZ_LUA_H
#define LS_FUZZ_LUA_H

#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>

static inline lua_State *fuzz_lua(void) {
  static lua_State *state;
  if (state == NULL) {
    state = luaL_newstate();
    if (state == NULL)
      abort();
  }
  return state;
}

#endif
