/* The core's shortcut through an app's routes: for a request whose route the app
 * (lua/luasrv/router.lua) would find and call with nothing else in between, the core finds it
 * and calls it straight, without the app's dispatch in Lua. Exact paths are one lookup in
 * app.routes (path -> {METHOD = function}); paths with :param and *splat segments walk the
 * app's segment trie (app.route_tree) as the router's `match` does, in the same order: a fixed
 * segment, then a parameter, then a splat, going back to the next choice when a branch ends
 * without a route. Whatever the walk cannot decide the same way (no route, no handler for the
 * method, more parameters than it keeps) is left to dispatch. */
#include <string.h>

#include "http.h"

/* The most parameters a route walked here may capture; a deeper one goes to dispatch. */
#define MAX_CAPS 16

typedef struct {
  int name;         /* stack index of the parameter's name */
  size_t off, len;  /* its value: a slice of the path */
} route_cap_t;

typedef struct {
  const char *path;
  size_t len;
  route_cap_t caps[MAX_CAPS];
  int n;        /* captures in caps */
  int overflow; /* a branch needed more than MAX_CAPS: the walk's answer is not trusted */
} route_walk_t;

static int walk(lua_State *L, int node, route_walk_t *w, size_t pos, int more);

/* Captures (name of the entry at stack index `entry`, path[off..off+len)) and walks on below
 * entry.node. An entry is a `param` or `splat` table of the trie: {name = ..., node = ...}. */
static int walk_capture(lua_State *L, int entry, route_walk_t *w, size_t off, size_t len,
                        size_t pos, int more) {
  int n = w->n;
  if (n == MAX_CAPS) {
    w->overflow = 1;
    return 0;
  }
  lua_getfield(L, entry, "name");
  w->caps[n].name = lua_gettop(L);
  w->caps[n].off = off;
  w->caps[n].len = len;
  w->n = n + 1;
  if (lua_getfield(L, entry, "node") == LUA_TTABLE &&
      walk(L, lua_gettop(L), w, pos, more))
    return 1;
  w->n = n;
  return 0;
}

/* Finds the handlers table for the path's segments from `pos` (`more` = 0: none left) below
 * the trie node at stack index `node`. Found: 1, with the handlers table on top and the names
 * of the captures below it. Not found: 0, with the stack as it was. */
static int walk(lua_State *L, int node, route_walk_t *w, size_t pos, int more) {
  int top = lua_gettop(L);
  const char *seg, *slash;
  size_t seg_len;
  luaL_checkstack(L, 8, "route too deep");
  if (!more) {
    if (lua_getfield(L, node, "handlers") == LUA_TTABLE)
      return 1;
    /* A splat at the end matches nothing: an empty value. */
    if (lua_getfield(L, node, "splat") == LUA_TTABLE &&
        walk_capture(L, top + 2, w, pos, 0, pos, 0))
      return 1;
    lua_settop(L, top);
    return 0;
  }
  seg = w->path + pos;
  slash = memchr(seg, '/', w->len - pos);
  seg_len = slash != NULL ? (size_t)(slash - seg) : w->len - pos;
  if (lua_getfield(L, node, "children") == LUA_TTABLE) {
    lua_pushlstring(L, seg, seg_len);
    if (lua_rawget(L, -2) == LUA_TTABLE &&
        walk(L, lua_gettop(L), w, pos + seg_len + 1, slash != NULL))
      return 1;
  }
  lua_settop(L, top);
  if (w->overflow)
    return 0;
  if (seg_len > 0 && lua_getfield(L, node, "param") == LUA_TTABLE &&
      walk_capture(L, top + 1, w, pos, seg_len, pos + seg_len + 1, slash != NULL))
    return 1;
  lua_settop(L, top);
  if (w->overflow)
    return 0;
  /* A splat takes the rest of the path, slashes and all. */
  if (lua_getfield(L, node, "splat") == LUA_TTABLE &&
      walk_capture(L, top + 1, w, pos, w->len - pos, 0, 0))
    return 1;
  lua_settop(L, top);
  return 0;
}

/* The function in the handlers table on top for the method, as dispatch chooses it: the
 * method's own, any method's ("*"), or GET's for HEAD. Pushes it and returns 1, or returns 0
 * with nothing pushed. */
static int route_handler(lua_State *L, int methods, int method) {
  lua_rawgeti(L, methods, method + 1);
  if (lua_rawget(L, -2) == LUA_TFUNCTION)
    return 1;
  lua_pop(L, 1);
  if (lua_getfield(L, -1, "*") == LUA_TFUNCTION)
    return 1;
  lua_pop(L, 1);
  if (method == HTTP_HEAD) {
    if (lua_getfield(L, -1, "GET") == LUA_TFUNCTION)
      return 1;
    lua_pop(L, 1);
  }
  return 0;
}

int ls_http__route(lua_State *L, int app, int routes_key, int tree_key, int methods, int method,
                   const char *path, size_t path_len) {
  int top = lua_gettop(L);
  route_walk_t w;
  if (lua_type(L, app) != LUA_TTABLE)
    return 0;
  lua_pushvalue(L, routes_key);
  if (lua_rawget(L, app) != LUA_TTABLE)
    goto not_routed;
  lua_pushlstring(L, path, path_len);
  if (lua_rawget(L, -2) == LUA_TTABLE) {
    /* An exact route: dispatch looks no further either. */
    if (!route_handler(L, methods, method))
      goto not_routed;
    lua_replace(L, app);
    lua_settop(L, top);
    return 1;
  }
  if (path_len == 0 || path[0] != '/')
    goto not_routed;
  lua_pushvalue(L, tree_key);
  if (lua_rawget(L, app) != LUA_TTABLE)
    goto not_routed;
  w.path = path;
  w.len = path_len;
  w.n = 0;
  w.overflow = 0;
  if (!walk(L, lua_gettop(L), &w, 1, 1) || !route_handler(L, methods, method))
    goto not_routed;
  lua_replace(L, app);
  if (w.n == 0) {
    lua_settop(L, top);
    return 1;
  }
  lua_createtable(L, 0, w.n);
  for (int i = 0; i < w.n; i++) {
    lua_pushvalue(L, w.caps[i].name);
    lua_pushlstring(L, path + w.caps[i].off, w.caps[i].len);
    lua_rawset(L, -3);
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 2;
not_routed:
  lua_settop(L, top);
  return 0;
}
