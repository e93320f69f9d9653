/* srv.shared: a key/value store owned by the runtime, so it outlives every generation of Lua
 * state (values survive hot reloads). Keys are strings; values strings, numbers or booleans,
 * optionally expiring. Per process: separate workers have separate stores. */
#ifndef LS_SHARED_H
#define LS_SHARED_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

typedef struct ls_shared_s ls_shared_t;

ls_shared_t *ls_shared_new(uv_loop_t *loop);
void ls_shared_free(ls_shared_t *sh);
/* Pushes a table of get, set, incr, delete, keys working on *slot (the runtime's store). */
void ls_shared_open(lua_State *L, ls_shared_t **slot);

#endif
