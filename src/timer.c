#include "timer.h"

#include <math.h>
#include <string.h>

#include "errors.h"
#include "log.h"

#define LS_TIMER_MT "luasrv.Timer"

/* A repeating or one-shot timer that runs a Lua function in a new task at each expiry. The C
 * struct lives while the timer is armed and goes in the close callback; the Lua object only
 * points at it, so dropping the object does not stop the timer (as with setInterval). */
typedef struct ls_timer_s {
  uv_timer_t handle;
  ls_res_t res;
  ls_gen_t *gen;
  int fn_ref;
  int repeat;
  struct timer_ud_s *ud;
} ls_timer_t;

typedef struct timer_ud_s {
  ls_timer_t *timer;
} timer_ud_t;

static void timer_close_cb(uv_handle_t *h) {
  ls_timer_t *timer = h->data;
  if (timer->ud != NULL)
    timer->ud->timer = NULL;
  ls_free(timer, sizeof *timer);
}

static void timer_close(ls_timer_t *timer) {
  if (uv_is_closing((uv_handle_t *)&timer->handle))
    return;
  ls_res_unlink(&timer->res);
  luaL_unref(timer->gen->L, LUA_REGISTRYINDEX, timer->fn_ref);
  timer->fn_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&timer->handle, timer_close_cb);
}

static void timer_res_close(ls_res_t *res) {
  timer_close((ls_timer_t *)((char *)res - offsetof(ls_timer_t, res)));
}

static void timer_fire_cb(uv_timer_t *handle) {
  ls_timer_t *timer = handle->data;
  ls_task_t *task = ls_task_new(timer->gen, NULL, NULL);
  if (task == NULL) {
    ls_log(LS_LOG_ERROR, "timer: out of memory starting its callback");
  } else {
    task->budgeted = 1; /* a timer callback is a handler: the CPU budget applies */
    lua_rawgeti(task->co, LUA_REGISTRYINDEX, timer->fn_ref);
    /* The one-shot timer is done before its callback runs, so the callback may start others. */
    if (!timer->repeat)
      timer_close(timer);
    ls_task_start(task, 0);
    return;
  }
  if (!timer->repeat)
    timer_close(timer);
}

static uint64_t check_delay_ms(lua_State *L, int idx) {
  lua_Number s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0 && s == s && !isinf(s), idx, "expected a non-negative number of seconds");
  return (uint64_t)ceil(s * 1000.0);
}

static int timer_start(lua_State *L, int repeat) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  uint64_t ms = check_delay_ms(L, 1);
  ls_timer_t *timer;
  timer_ud_t *ud;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (repeat && ms == 0)
    luaL_argerror(L, 1, "interval must be positive");
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->timer = NULL;
  luaL_setmetatable(L, LS_TIMER_MT);
  timer = ls_malloc(sizeof *timer);
  if (timer == NULL)
    return luaL_error(L, "not enough memory");
  memset(timer, 0, sizeof *timer);
  timer->gen = gen;
  timer->repeat = repeat;
  uv_timer_init(gen->rt->loop, &timer->handle);
  timer->handle.data = timer;
  timer->res.close = timer_res_close;
  timer->res.close_on_retire = 1; /* the old code's timers stop when a reload takes over */
  ls_res_link_gen(&gen->rt->resources, &timer->res, gen);
  lua_pushvalue(L, 2);
  timer->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  timer->ud = ud;
  ud->timer = timer;
  uv_update_time(gen->rt->loop); /* count from now, not from the start of this loop turn */
  uv_timer_start(&timer->handle, timer_fire_cb, ms, repeat ? ms : 0);
  return 1;
}

/* srv.after(seconds, fn) -> timer: runs fn once, in its own task. */
static int l_after(lua_State *L) { return timer_start(L, 0); }

/* srv.every(seconds, fn) -> timer: runs fn every interval until timer:cancel(). */
static int l_every(lua_State *L) { return timer_start(L, 1); }

/* timer:cancel() -> true if it was still armed. */
static int l_timer_cancel(lua_State *L) {
  timer_ud_t *ud = luaL_checkudata(L, 1, LS_TIMER_MT);
  int armed = ud->timer != NULL && !uv_is_closing((uv_handle_t *)&ud->timer->handle);
  if (armed)
    timer_close(ud->timer);
  lua_pushboolean(L, armed);
  return 1;
}

static int l_timer_gc(lua_State *L) {
  timer_ud_t *ud = luaL_checkudata(L, 1, LS_TIMER_MT);
  if (ud->timer != NULL)
    ud->timer->ud = NULL;
  ud->timer = NULL;
  return 0;
}

static int l_timer_tostring(lua_State *L) {
  timer_ud_t *ud = luaL_checkudata(L, 1, LS_TIMER_MT);
  int armed = ud->timer != NULL && !uv_is_closing((uv_handle_t *)&ud->timer->handle);
  lua_pushfstring(L, "luasrv.Timer (%s)", armed ? "armed" : "done");
  return 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  ls_task_t *task = (ls_task_t *)ctx;
  uint64_t left;
  (void)L;
  (void)status;
  if (ls_task_take_timeout(task))
    return 0;
  /* Woken early (a plain coroutine.yield() inside the task): sleep for the rest. */
  left = uv_timer_get_due_in(&task->timer);
  if (left > 0)
    return ls_task_wait(task, (int64_t)left, ctx, sleep_k);
  return 0;
}

/* srv.sleep(seconds): suspends the calling task; other tasks run meanwhile. */
static int l_sleep(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  uint64_t ms = check_delay_ms(L, 1);
  ls_task_t *task = ls_task_check(gen, L, "sleep");
  lua_settop(L, 0);
  return ls_task_wait(task, (int64_t)ms, (lua_KContext)task, sleep_k);
}

/* srv.now() -> seconds since the epoch, with microseconds. */
static int l_now(lua_State *L) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6);
  return 1;
}

/* srv.monotime() -> seconds from an arbitrary point, never going backwards. */
static int l_monotime(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

void ls_timer_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg funcs[] = {
      {"sleep", l_sleep}, {"after", l_after},       {"every", l_every},
      {"now", l_now},     {"monotime", l_monotime}, {NULL, NULL}};
  static const luaL_Reg meth[] = {{"cancel", l_timer_cancel}, {NULL, NULL}};
  static const luaL_Reg metameth[] = {
      {"__gc", l_timer_gc}, {"__tostring", l_timer_tostring}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_TIMER_MT)) {
    luaL_setfuncs(L, metameth, 0);
    luaL_newlib(L, meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
}
