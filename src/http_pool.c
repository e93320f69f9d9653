/* The keep-alive pool of outbound HTTP connections: taking an idle connection and giving it
 * back, for srv.http.request (lua/luasrv/http_client.lua, through lua/luasrv/http_pool.lua)
 * and for srv.http.proxy's relay (src/http_proxy.c), which does both without going back to
 * Lua. http_pool.lua keeps one pool per (scheme, host, port, TLS options); a pool is a user
 * data (luasrv.HTTPPool): its counts and the times its idle connections went idle in C, the
 * luasrv.Conn objects themselves in its user value (a list, the oldest first), which keeps
 * them alive. A take or a give back is then a few Lua API calls, not a dozen table accesses.
 * The limits and the counters are the process's (srv.http.pool_configure, pool_stats). */
#include <lauxlib.h>
#include <string.h>

#include "alloc.h"
#include "http.h"
#include "tcp_internal.h"

typedef struct {
  uint32_t n;          /* idle connections: the user value's [1..n] */
  uint32_t cap;        /* room in since[] */
  lua_Integer active;  /* connections taken (or made) and not given back */
  uint64_t *since;     /* the loop time (ms) each idle one went idle, oldest first */
} pool_t;

static struct {
  lua_Integer max_idle;     /* idle connections kept per pool */
  uint64_t idle_timeout_ms; /* how long one is kept */
  lua_Integer created, reused, retried, closed_idle;
} conf = {16, 4000, 0, 0, 0, 0};

static ls_conn_t *conn_of(lua_State *L, int idx) {
  conn_ud_t *ud = lua_touserdata(L, idx);
  return ud != NULL ? ud->conn : NULL;
}

static void close_conn(lua_State *L, int idx) {
  ls_conn_t *c = conn_of(L, idx);
  if (c != NULL && !c->closed)
    ls__tcp_conn_close(c, 0);
}

static uint64_t loop_now(ls_conn_t *c) { return uv_now(c->gen->rt->loop); }

/* Closes the idle connections of the pool at p that waited the idle timeout or longer (the
 * oldest are first, so the scan stops at the first younger one). */
static void sweep(lua_State *L, int p, uint64_t now) {
  pool_t *P = lua_touserdata(L, p);
  uint32_t k = 0, i;
  int idle;
  if (P->n == 0)
    return;
  lua_getiuservalue(L, p, 1);
  idle = lua_gettop(L);
  while (k < P->n && P->since[k] + conf.idle_timeout_ms <= now) {
    lua_rawgeti(L, idle, (lua_Integer)k + 1);
    close_conn(L, -1);
    lua_pop(L, 1);
    k++;
    conf.closed_idle++;
  }
  if (k > 0) {
    for (i = k; i < P->n; i++) {
      lua_rawgeti(L, idle, (lua_Integer)i + 1);
      lua_rawseti(L, idle, (lua_Integer)(i - k) + 1);
    }
    for (i = P->n - k; i < P->n; i++) {
      lua_pushnil(L);
      lua_rawseti(L, idle, (lua_Integer)i + 1);
    }
    memmove(P->since, P->since + k, (P->n - k) * sizeof *P->since);
    P->n -= k;
  }
  lua_pop(L, 1);
}

int ls_http_pool_take(lua_State *L, int p) {
  pool_t *P = lua_touserdata(L, p);
  while (P->n > 0) {
    ls_conn_t *c;
    lua_getiuservalue(L, p, 1);
    lua_rawgeti(L, -1, P->n); /* the newest: the least likely to have been closed */
    c = conn_of(L, -1);
    if (c != NULL && P->since[0] + conf.idle_timeout_ms <= loop_now(c)) {
      uint64_t now = loop_now(c);
      lua_pop(L, 2);
      sweep(L, p, now);
      continue;
    }
    lua_pushnil(L);
    lua_rawseti(L, -3, P->n);
    lua_remove(L, -2);
    P->n--;
    if (c == NULL || c->closed || c->s.read_err != 0 || ls_buf_len(&c->s.in) > 0) {
      /* Its server closed it (or spoke unasked) while it was idle. */
      close_conn(L, -1);
      lua_pop(L, 1);
      conf.closed_idle++;
      continue;
    }
    P->active++;
    conf.reused++;
    return 1;
  }
  return 0;
}

void ls_http_pool_put(lua_State *L, int p, int conn, int reusable) {
  pool_t *P = lua_touserdata(L, p);
  ls_conn_t *c = conn_of(L, conn);
  uint64_t now;
  P->active--;
  if (!reusable || c == NULL || c->closed || c->s.read_err != 0 || c->s.write_err != 0 ||
      ls_buf_len(&c->s.in) > 0 || ls_stream_unsent(&c->s) > 0) {
    close_conn(L, conn);
    return;
  }
  now = loop_now(c);
  if (P->n > 0 && P->since[0] + conf.idle_timeout_ms <= now)
    sweep(L, p, now);
  if ((lua_Integer)P->n >= conf.max_idle) {
    close_conn(L, conn);
    return;
  }
  if (P->n == P->cap) {
    uint32_t cap = P->cap ? P->cap * 2 : 16;
    uint64_t *since = ls_realloc(P->since, P->cap * sizeof *since, cap * sizeof *since);
    if (since == NULL) {
      close_conn(L, conn);
      return;
    }
    P->since = since;
    P->cap = cap;
  }
  lua_getiuservalue(L, p, 1);
  lua_pushvalue(L, conn);
  lua_rawseti(L, -2, (lua_Integer)P->n + 1);
  lua_pop(L, 1);
  P->since[P->n++] = now;
  /* Read on while it waits (if its answer filled the read-ahead, reading stopped), so that
   * its server's close is seen and take skips it. */
  ls__tcp_conn_want_input(c);
}

/* ---- Lua: core.http_pool_* (lua/luasrv/http_pool.lua) -------------------------------------- */

/* The pool at idx (its metatable is the functions' upvalue 2; a connection's is 1). */
static int check_pool(lua_State *L, int idx) {
  ls_check_class_at(L, idx, 2, LS_HTTP_POOL_MT);
  return idx;
}

/* core.http_pool_new() -> a new empty pool */
static int l_pool_new(lua_State *L) {
  pool_t *P = lua_newuserdatauv(L, sizeof *P, 1);
  memset(P, 0, sizeof *P);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_setmetatable(L, -2);
  lua_createtable(L, 16, 0);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static int l_pool_gc(lua_State *L) {
  pool_t *P = luaL_checkudata(L, 1, LS_HTTP_POOL_MT);
  ls_free(P->since, P->cap * sizeof *P->since);
  P->since = NULL;
  P->cap = P->n = 0;
  return 0;
}

/* core.http_pool_take(pool) -> conn | nil: an idle connection, now in use. */
static int l_pool_take(lua_State *L) {
  return ls_http_pool_take(L, check_pool(L, 1)) ? 1 : 0;
}

/* core.http_pool_put(pool, conn [, reusable]): no longer in use; kept idle if it can be. */
static int l_pool_put(lua_State *L) {
  check_pool(L, 1);
  ls_check_class_at(L, 2, 1, LS_CONN_MT);
  ls_http_pool_put(L, 1, 2, lua_isnone(L, 3) || lua_toboolean(L, 3));
  return 0;
}

/* core.http_pool_added(pool): a connection made for the pool is in use. */
static int l_pool_added(lua_State *L) {
  pool_t *P = lua_touserdata(L, check_pool(L, 1));
  P->active++;
  conf.created++;
  return 0;
}

/* core.http_pool_info(pool) -> idle, active, after closing those idle for too long. */
static int l_pool_info(lua_State *L) {
  pool_t *P = lua_touserdata(L, check_pool(L, 1));
  if (P->n > 0) {
    ls_conn_t *c;
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, 1);
    c = conn_of(L, -1);
    lua_pop(L, 2);
    if (c != NULL)
      sweep(L, 1, loop_now(c));
  }
  lua_pushinteger(L, P->n);
  lua_pushinteger(L, P->active);
  return 2;
}

/* core.http_pool_close(pool): closes its idle connections. */
static int l_pool_close(lua_State *L) {
  pool_t *P = lua_touserdata(L, check_pool(L, 1));
  uint32_t i;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);
  for (i = 1; i <= P->n; i++) {
    lua_rawgeti(L, 2, i);
    close_conn(L, -1);
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, 2, i);
  }
  P->n = 0;
  return 0;
}

/* core.http_pool_configure(max_idle, idle_timeout_seconds) */
static int l_pool_configure(lua_State *L) {
  lua_Integer max_idle = luaL_checkinteger(L, 1);
  lua_Number timeout = luaL_checknumber(L, 2);
  luaL_argcheck(L, max_idle >= 0, 1, "must not be negative");
  luaL_argcheck(L, timeout >= 0 && timeout < 1e12, 2, "must be from 0 to 1e12 seconds");
  conf.max_idle = max_idle;
  conf.idle_timeout_ms = (uint64_t)(timeout * 1000);
  return 0;
}

/* core.http_pool_counters([counted]) -> created, reused, retried, closed_idle; "retried"
 * counts one more retry first. */
static int l_pool_counters(lua_State *L) {
  const char *what = luaL_optstring(L, 1, NULL);
  if (what != NULL && strcmp(what, "retried") == 0)
    conf.retried++;
  lua_pushinteger(L, conf.created);
  lua_pushinteger(L, conf.reused);
  lua_pushinteger(L, conf.retried);
  lua_pushinteger(L, conf.closed_idle);
  return 4;
}

void ls_http_pool_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"http_pool_new", l_pool_new},
                                 {"http_pool_take", l_pool_take},
                                 {"http_pool_put", l_pool_put},
                                 {"http_pool_added", l_pool_added},
                                 {"http_pool_info", l_pool_info},
                                 {"http_pool_close", l_pool_close},
                                 {"http_pool_configure", l_pool_configure},
                                 {"http_pool_counters", l_pool_counters},
                                 {NULL, NULL}};
  luaL_getmetatable(L, LS_CONN_MT);
  if (luaL_newmetatable(L, LS_HTTP_POOL_MT)) {
    lua_pushcfunction(L, l_pool_gc);
    lua_setfield(L, -2, "__gc");
  }
  luaL_setfuncs(L, fns, 2);
}
