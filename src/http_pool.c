/* The keep-alive pool of outbound HTTP connections: taking an idle connection and giving it
 * back, for srv.http.request (lua/luasrv/http_client.lua, through lua/luasrv/http_pool.lua)
 * and for srv.http.proxy's relay (src/http_proxy.c), which does both without going back to
 * Lua. The pools themselves are Lua tables kept by http_pool.lua, one per (scheme, host,
 * port, TLS options):
 *   [1] its idle luasrv.Conn objects, the oldest first
 *   [2] the loop time (ms) at which each went idle
 *   [3] how many of its connections are in use
 * The limits and the counters are the process's (srv.http.pool_configure, pool_stats). */
#include <lauxlib.h>

#include "http.h"
#include "tcp_internal.h"

enum { P_IDLE = 1, P_SINCE = 2, P_ACTIVE = 3 };

static struct {
  lua_Integer max_idle;     /* idle connections kept per pool */
  uint64_t idle_timeout_ms; /* how long one is kept */
  lua_Integer created, reused, retried, closed_idle;
} pool = {16, 4000, 0, 0, 0, 0};

static ls_conn_t *conn_of(lua_State *L, int idx) {
  conn_ud_t *ud = lua_touserdata(L, idx);
  return ud != NULL ? ud->conn : NULL;
}

static void close_conn(lua_State *L, int idx) {
  ls_conn_t *c = conn_of(L, idx);
  if (c != NULL && !c->closed)
    ls__tcp_conn_close(c, 0);
}

static void add_active(lua_State *L, int p, lua_Integer d) {
  lua_rawgeti(L, p, P_ACTIVE);
  d += lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_pushinteger(L, d);
  lua_rawseti(L, p, P_ACTIVE);
}

/* Closes the idle connections of the pool at p that waited `timeout` or longer, or that the
 * server closed or sent something on while idle (a connection of neither kind stops the
 * scan: the others are newer). */
static void sweep(lua_State *L, int p, uint64_t now) {
  lua_Integer n, k = 0, i;
  int idle, since;
  lua_rawgeti(L, p, P_IDLE);
  idle = lua_gettop(L);
  lua_rawgeti(L, p, P_SINCE);
  since = idle + 1;
  n = (lua_Integer)lua_rawlen(L, idle);
  while (k < n) {
    uint64_t t;
    lua_rawgeti(L, since, k + 1);
    t = (uint64_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (t + pool.idle_timeout_ms > now)
      break;
    lua_rawgeti(L, idle, k + 1);
    close_conn(L, -1);
    lua_pop(L, 1);
    k++;
    pool.closed_idle++;
  }
  if (k > 0) {
    for (i = k + 1; i <= n; i++) {
      lua_rawgeti(L, idle, i);
      lua_rawseti(L, idle, i - k);
      lua_rawgeti(L, since, i);
      lua_rawseti(L, since, i - k);
    }
    for (i = n - k + 1; i <= n; i++) {
      lua_pushnil(L);
      lua_rawseti(L, idle, i);
      lua_pushnil(L);
      lua_rawseti(L, since, i);
    }
  }
  lua_pop(L, 2);
}

static uint64_t loop_now(ls_conn_t *c) { return uv_now(c->gen->rt->loop); }

int ls_http_pool_take(lua_State *L, int p) {
  for (;;) {
    int idle;
    lua_Integer n;
    ls_conn_t *c;
    lua_rawgeti(L, p, P_IDLE);
    idle = lua_gettop(L);
    n = (lua_Integer)lua_rawlen(L, idle);
    if (n == 0) {
      lua_pop(L, 1);
      return 0;
    }
    lua_rawgeti(L, idle, n);
    c = conn_of(L, -1);
    if (c != NULL) {
      uint64_t oldest, now = loop_now(c);
      lua_rawgeti(L, p, P_SINCE);
      lua_rawgeti(L, -1, 1);
      oldest = (uint64_t)lua_tointeger(L, -1);
      lua_pop(L, 2);
      if (oldest + pool.idle_timeout_ms <= now) {
        lua_pop(L, 2);
        sweep(L, p, now);
        continue;
      }
    }
    /* The newest goes: the one least likely to have been closed by its server. */
    lua_pushnil(L);
    lua_rawseti(L, idle, n);
    lua_rawgeti(L, p, P_SINCE);
    lua_pushnil(L);
    lua_rawseti(L, -2, n);
    lua_pop(L, 1);
    lua_remove(L, idle);
    if (c == NULL || c->closed || c->s.read_err != 0 || ls_buf_len(&c->s.in) > 0) {
      /* The server closed it (or spoke unasked) while it was idle. */
      close_conn(L, -1);
      lua_pop(L, 1);
      pool.closed_idle++;
      continue;
    }
    add_active(L, p, 1);
    pool.reused++;
    return 1;
  }
}

void ls_http_pool_put(lua_State *L, int p, int conn, int reusable) {
  ls_conn_t *c = conn_of(L, conn);
  lua_Integer n;
  uint64_t now;
  add_active(L, p, -1);
  if (!reusable || c == NULL || c->closed || c->s.read_err != 0 || c->s.write_err != 0 ||
      ls_buf_len(&c->s.in) > 0 || ls_stream_unsent(&c->s) > 0) {
    close_conn(L, conn);
    return;
  }
  now = loop_now(c);
  lua_rawgeti(L, p, P_SINCE);
  if (lua_rawgeti(L, -1, 1) == LUA_TNUMBER &&
      (uint64_t)lua_tointeger(L, -1) + pool.idle_timeout_ms <= now) {
    lua_pop(L, 2);
    sweep(L, p, now);
    lua_rawgeti(L, p, P_SINCE);
  } else {
    lua_pop(L, 1);
  }
  lua_rawgeti(L, p, P_IDLE);
  n = (lua_Integer)lua_rawlen(L, -1);
  if (n >= pool.max_idle) {
    lua_pop(L, 2);
    close_conn(L, conn);
    return;
  }
  lua_pushvalue(L, conn);
  lua_rawseti(L, -2, n + 1);
  lua_pushinteger(L, (lua_Integer)now);
  lua_rawseti(L, -3, n + 1);
  lua_pop(L, 2);
}

/* ---- Lua: core.http_pool_* (lua/luasrv/http_pool.lua) -------------------------------------- */

static int check_pool(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  return 1;
}

/* The luasrv.Conn at idx (its metatable is the function's upvalue), or raises. */
static void check_conn(lua_State *L, int idx) {
  int ok = 0;
  if (lua_touserdata(L, idx) != NULL && lua_getmetatable(L, idx)) {
    ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
  }
  if (!ok)
    luaL_checkudata(L, idx, LS_CONN_MT);
}

/* core.http_pool_take(pool) -> conn | nil */
static int l_pool_take(lua_State *L) {
  return ls_http_pool_take(L, check_pool(L)) ? 1 : 0;
}

/* core.http_pool_put(pool, conn [, reusable]): kept if it can be (else closed); no longer in use. */
static int l_pool_put(lua_State *L) {
  check_pool(L);
  check_conn(L, 2);
  ls_http_pool_put(L, 1, 2, lua_isnone(L, 3) || lua_toboolean(L, 3));
  return 0;
}

/* core.http_pool_sweep(pool): closes the connections idle for too long. */
static int l_pool_sweep(lua_State *L) {
  ls_conn_t *c;
  check_pool(L);
  lua_rawgeti(L, 1, P_IDLE);
  lua_rawgeti(L, -1, 1);
  c = conn_of(L, -1);
  lua_pop(L, 2);
  if (c != NULL)
    sweep(L, 1, loop_now(c));
  return 0;
}

/* core.http_pool_configure(max_idle, idle_timeout_seconds) */
static int l_pool_configure(lua_State *L) {
  lua_Integer max_idle = luaL_checkinteger(L, 1);
  lua_Number timeout = luaL_checknumber(L, 2);
  luaL_argcheck(L, max_idle >= 0, 1, "must not be negative");
  luaL_argcheck(L, timeout >= 0, 2, "must not be negative");
  pool.max_idle = max_idle;
  pool.idle_timeout_ms = (uint64_t)(timeout * 1000);
  return 0;
}

/* core.http_pool_counters([counted]) -> created, reused, retried, closed_idle; "created" or
 * "retried" counts one more of that first. */
static int l_pool_counters(lua_State *L) {
  const char *what = luaL_optstring(L, 1, NULL);
  if (what != NULL && what[0] == 'c')
    pool.created++;
  else if (what != NULL && what[0] == 'r')
    pool.retried++;
  lua_pushinteger(L, pool.created);
  lua_pushinteger(L, pool.reused);
  lua_pushinteger(L, pool.retried);
  lua_pushinteger(L, pool.closed_idle);
  return 4;
}

void ls_http_pool_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"http_pool_take", l_pool_take},
                                 {"http_pool_put", l_pool_put},
                                 {"http_pool_sweep", l_pool_sweep},
                                 {"http_pool_configure", l_pool_configure},
                                 {"http_pool_counters", l_pool_counters},
                                 {NULL, NULL}};
  luaL_getmetatable(L, LS_CONN_MT);
  luaL_setfuncs(L, fns, 1);
}
