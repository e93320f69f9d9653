#include "module.h"

#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "http.h"
#include "http_client.h"
#include "json.h"
#include "log.h"
#include "pubsub.h"
#include "shared.h"
#include "tcp.h"
#include "ws.h"
#include "udp.h"
#include "workers.h"
#include "timer.h"
#include "waiter.h"

#define LS_EMBED_MT "luasrv.EmbeddedRuntime"

/* The runtime a stock interpreter gets: its own loop, closed with the Lua state. */
typedef struct embedded_s {
  uv_loop_t loop;
  ls_runtime_t rt;
  int open;
} embedded_t;

static int l_embedded_gc(lua_State *L) {
  embedded_t *e = luaL_checkudata(L, 1, LS_EMBED_MT);
  if (e->open) {
    e->open = 0;
    ls_runtime_close(&e->rt);
    uv_loop_close(&e->loop);
  }
  return 0;
}

/* Makes a runtime for a state the core did not create; the userdata that holds it stays in
 * the registry, so it is finalised when the state closes. */
static ls_gen_t *embedded_gen(lua_State *L) {
  embedded_t *e = lua_newuserdatauv(L, sizeof *e, 0);
  memset(e, 0, sizeof *e);
  if (luaL_newmetatable(L, LS_EMBED_MT)) {
    lua_pushcfunction(L, l_embedded_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (uv_loop_init(&e->loop) != 0)
    luaL_error(L, "luasrv: cannot start an event loop");
  if (ls_runtime_init(&e->rt, &e->loop) != 0) {
    uv_loop_close(&e->loop);
    luaL_error(L, "luasrv: cannot start the runtime");
  }
  e->open = 1;
  e->rt.gen = ls_gen_new(&e->rt, L);
  if (e->rt.gen == NULL)
    luaL_error(L, "luasrv: not enough memory");
  lua_setfield(L, LUA_REGISTRYINDEX, LS_EMBED_MT);
  lua_pushlightuserdata(L, e->rt.gen);
  lua_setfield(L, LUA_REGISTRYINDEX, LS_GEN_KEY);
  return e->rt.gen;
}

/* ---- srv.run ------------------------------------------------------------------------------ */

typedef struct run_state_s {
  int finished;
  int status;
  int results_ref;
} run_state_t;

/* Keeps the finished function's results (or its error) in a table for srv.run to return. */
static int run_done(ls_task_t *task, int status, int nres) {
  run_state_t *st = task->data;
  lua_State *co = task->co;
  int base = lua_gettop(co) - nres;
  int i;
  st->finished = 1;
  st->status = status;
  lua_createtable(co, nres, 1);
  for (i = 1; i <= nres; i++) {
    lua_pushvalue(co, base + i);
    lua_rawseti(co, -2, i);
  }
  lua_pushinteger(co, nres);
  lua_setfield(co, -2, "n");
  st->results_ref = luaL_ref(co, LUA_REGISTRYINDEX);
  return 1; /* srv.run raises the error in its caller */
}

static int run_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return lua_gettop(L) - (int)ctx;
}

/* srv.run(fn, ...) -> fn's results. Runs fn in a task and the loop until fn returns; an error
 * in fn is raised here. Inside a task (e.g. under the luasrv command) it simply calls fn. */
static int l_run(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  ls_runtime_t *rt = gen->rt;
  int nargs = lua_gettop(L) - 1;
  run_state_t st = {0, LUA_OK, LUA_NOREF};
  ls_task_t *task;
  int i, n;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (ls_task_current(gen, L) != NULL) {
    lua_callk(L, nargs, LUA_MULTRET, 0, run_k);
    return run_k(L, LUA_OK, 0);
  }
  if (rt->in_loop)
    return luaL_error(L, "srv.run: the loop is already running (call it from a task instead)");
  task = ls_task_new(gen, run_done, &st);
  if (task == NULL)
    return luaL_error(L, "srv.run: not enough memory");
  lua_xmove(L, task->co, nargs + 1);
  rt->stopping = 0;
  rt->in_loop = 1;
  ls_task_start(task, nargs);
  while (!st.finished && !rt->stopping) {
    if (uv_run(rt->loop, UV_RUN_ONCE) == 0 && !st.finished)
      break;
  }
  rt->in_loop = 0;
  if (!st.finished) {
    if (rt->stopping)
      return luaL_error(L, "srv.run: stopped before the function returned");
    return luaL_error(L, "srv.run: the function waits for something that can never happen "
                         "(nothing is left that could wake it)");
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, st.results_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, st.results_ref);
  if (st.status != LUA_OK) {
    lua_rawgeti(L, -1, 1);
    return lua_error(L);
  }
  lua_getfield(L, -1, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  for (i = 1; i <= n; i++)
    lua_rawgeti(L, -i, i);
  return n;
}

/* srv.loop(): serves until srv.stop() or nothing is left to do. The luasrv command runs the
 * loop itself once the script's top level ends, so there it returns at once. */
static int l_loop(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  ls_runtime_t *rt = gen->rt;
  if (ls_task_current(gen, L) != NULL || rt->in_loop)
    return 0;
  rt->stopping = 0;
  rt->in_loop = 1;
  uv_run(rt->loop, UV_RUN_DEFAULT);
  rt->in_loop = 0;
  return 0;
}

/* srv.stop(): closes the listeners and ends srv.loop / the luasrv command's loop. */
static int l_stop(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  ls_runtime_stop(gen->rt, 0);
  return 0;
}

/* core.log(level, message) with level "info", "warn" or "error". */
static int l_log(lua_State *L) {
  static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
  int level = luaL_checkoption(L, 1, NULL, levels);
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len);
  ls_log_msg((ls_log_level_t)level, msg, len);
  return 0;
}

/* core.memory() -> bytes in use by this Lua state (when the core made it) and by the C core. */
static int l_memory(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  if (gen->owns_state)
    lua_pushinteger(L, (lua_Integer)gen->alloc.used);
  else
    lua_pushinteger(L, (lua_Integer)lua_gc(L, LUA_GCCOUNT, 0) * 1024);
  lua_pushinteger(L, (lua_Integer)ls_core_alloc()->used);
  return 2;
}

int ls_module_open(lua_State *L) {
  static const luaL_Reg funcs[] = {{"run", l_run},   {"loop", l_loop},     {"stop", l_stop},
                                   {"log", l_log},   {"memory", l_memory}, {NULL, NULL}};
  ls_gen_t *gen;
  lua_getfield(L, LUA_REGISTRYINDEX, LS_GEN_KEY);
  gen = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (gen == NULL)
    gen = embedded_gen(L);
  lua_newtable(L);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
  ls_timer_open(L, gen);
  ls_waiter_open(L, gen);
  lua_newtable(L);
  ls_tcp_open(L, gen);
  lua_setfield(L, -2, "tcp");
  ls_http_open(L, gen);
  ls_http_client_open(L);
  ls_http_pool_open(L);
  ls_http_proxy_open(L);
  ls_fs_open(L, gen);
  ls_ws_open(L, gen);
  ls_pubsub_open(L, gen);
  lua_newtable(L);
  ls_udp_open(L, gen);
  lua_setfield(L, -2, "udp");
  ls_shared_open(L, &gen->rt->shared);
  lua_setfield(L, -2, "shared");
  ls_json_open(L);
  lua_setfield(L, -2, "json");
  lua_pushliteral(L, LUASRV_VERSION);
  lua_setfield(L, -2, "version");
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)ls_worker_id());
  lua_setfield(L, -2, "id");
  lua_pushinteger(L, (lua_Integer)ls_worker_count());
  lua_setfield(L, -2, "count");
  lua_setfield(L, -2, "worker");
  return 1;
}
