#include "waiter.h"

#include <math.h>

#include "errors.h"

#define LS_WAITER_MT "luasrv.Waiter"

/* A binary signal: `signalled` is set by wake and taken by wait. At most one task waits; it is
 * recorded in `task` only while it waits (the continuation clears it), and the userdata is on
 * that task's stack meanwhile, so neither can go away under the other. */
typedef struct waiter_s {
  const char *tag; /* &waiter_tag (see ls_tagged) */
  ls_gen_t *gen;
  ls_task_t *task;
  int signalled;
} waiter_t;

static const char waiter_tag = 0;

static waiter_t *check_waiter(lua_State *L) {
  return ls_check_tagged(L, 1, &waiter_tag, sizeof(waiter_t), LS_WAITER_MT);
}

/* Runs on each resume: a wake-up, the timeout, or a spurious resume (which waits again for
 * the time left). Stack: the waiter, nil, and whether the wait has a deadline. */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  waiter_t *w = check_waiter(L);
  ls_task_t *task = (ls_task_t *)ctx;
  int timed_out = ls_task_take_timeout(task);
  int has_deadline = lua_toboolean(L, 3);
  uint64_t left = 0;
  (void)status;
  if (w->signalled) {
    w->signalled = 0;
    w->task = NULL;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (has_deadline && !timed_out)
    left = uv_timer_get_due_in(&task->timer);
  if (timed_out || (has_deadline && left == 0)) {
    w->task = NULL;
    return ls_push_error(L, LS_ETIMEDOUT);
  }
  return ls_task_wait(task, has_deadline ? (int64_t)left : -1, ctx, wait_k);
}

/* w:wait([timeout]) -> true once woken | nil, "timeout", "ETIMEDOUT". A wake that came first
 * is taken at once. */
static int l_waiter_wait(lua_State *L) {
  waiter_t *w = check_waiter(L);
  int64_t ms = -1;
  ls_task_t *task;
  if (!lua_isnoneornil(L, 2)) {
    lua_Number s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s == s, 2, "timeout is NaN");
    if (s >= 0 && !isinf(s))
      ms = (int64_t)ceil(s * 1000.0);
  }
  if (w->signalled) {
    w->signalled = 0;
    lua_pushboolean(L, 1);
    return 1;
  }
  task = ls_task_check(w->gen, L, "wait");
  if (w->task != NULL && w->task != task)
    return luaL_error(L, "wait: another task is already waiting on this waiter");
  w->task = task;
  lua_settop(L, 1);
  lua_pushnil(L);
  lua_pushboolean(L, ms >= 0); /* index 3: whether the wait has a deadline */
  return ls_task_wait(task, ms, (lua_KContext)task, wait_k);
}

/* w:wake() -> true: the waiting task (if any) resumes on the next turn of the loop; otherwise
 * the next wait returns at once. */
static int l_waiter_wake(lua_State *L) {
  waiter_t *w = check_waiter(L);
  w->signalled = 1;
  if (w->task != NULL)
    ls_task_wake(w->task);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.waiter() -> a new waiter, not signalled. */
static int l_waiter(lua_State *L) {
  waiter_t *w = lua_newuserdatauv(L, sizeof *w, 0);
  w->tag = &waiter_tag;
  w->gen = ls_upvalue_gen(L);
  w->task = NULL;
  w->signalled = 0;
  luaL_setmetatable(L, LS_WAITER_MT);
  return 1;
}

void ls_waiter_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg meth[] = {{"wait", l_waiter_wait}, {"wake", l_waiter_wake}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_WAITER_MT)) {
    luaL_newlib(L, meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushlightuserdata(L, gen);
  lua_pushcclosure(L, l_waiter, 1);
  lua_setfield(L, -2, "waiter");
}
