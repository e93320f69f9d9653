#include "runtime.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "shared.h"
#include "tls.h"
#include "workers.h"
#include "watchdog.h"

#define LS_SCRATCH_SIZE (64 * 1024)

static void ready_idle_cb(uv_idle_t *idle);
static void task_timer_cb(uv_timer_t *timer);

/* ---- resources ---------------------------------------------------------------------------- */

void ls_res_link(ls_res_t *list, ls_res_t *res) { ls_res_link_gen(list, res, NULL); }

void ls_res_link_gen(ls_res_t *list, ls_res_t *res, ls_gen_t *gen) {
  res->gen = gen;
  if (gen != NULL)
    gen->nres++;
  res->next = list->next;
  res->prev = list;
  list->next->prev = res;
  list->next = res;
}

void ls_res_unlink(ls_res_t *res) {
  if (res->next == NULL)
    return;
  res->prev->next = res->next;
  res->next->prev = res->prev;
  res->next = res->prev = NULL;
  if (res->gen != NULL) {
    ls_gen_t *gen = res->gen;
    res->gen = NULL;
    gen->nres--;
    ls_gen_maybe_reap(gen);
  }
}

/* ---- listeners across generations --------------------------------------------------------- */

static ls_listener_base_t *base_of(ls_res_t *res) {
  return (ls_listener_base_t *)((char *)res - offsetof(ls_listener_base_t, res));
}

void ls_listener_init(ls_listener_base_t *base, ls_gen_t *gen, int ref, const char *key,
                      void (*close)(ls_res_t *)) {
  base->gen = gen;
  base->handler_ref = ref;
  base->staged_gen = NULL;
  base->staged_ref = LUA_NOREF;
  snprintf(base->key, sizeof base->key, "%s", key);
  ls_listener_number(gen->rt, base);
  base->res.close = close;
  ls_res_link(&gen->rt->servers, &base->res);
}

ls_listener_base_t *ls_listener_claim(ls_gen_t *gen, const char *key) {
  ls_runtime_t *rt = gen->rt;
  ls_res_t *res;
  if (rt->loading != gen || rt->gen == NULL || key[0] == '\0')
    return NULL;
  for (res = rt->servers.next; res != &rt->servers; res = res->next) {
    ls_listener_base_t *base = base_of(res);
    if (base->gen == rt->gen && base->staged_gen == NULL && strcmp(base->key, key) == 0)
      return base;
  }
  return NULL;
}

int ls_listener_alive(ls_runtime_t *rt, const ls_listener_base_t *base, uint64_t id) {
  const ls_res_t *res;
  for (res = rt->servers.next; res != &rt->servers; res = res->next)
    if (res == &base->res)
      return base->id == id;
  return 0;
}

void ls_listener_number(ls_runtime_t *rt, ls_listener_base_t *base) {
  base->id = ++rt->listener_count;
}

void ls_listener_release(ls_listener_base_t *base) {
  ls_worker_listener_closed(); /* under --workers the master learns the socket may be unused */
  if (base->gen != NULL && base->handler_ref != LUA_NOREF)
    luaL_unref(base->gen->L, LUA_REGISTRYINDEX, base->handler_ref);
  if (base->staged_gen != NULL && base->staged_ref != LUA_NOREF)
    luaL_unref(base->staged_gen->L, LUA_REGISTRYINDEX, base->staged_ref);
  base->handler_ref = base->staged_ref = LUA_NOREF;
  base->staged_gen = NULL;
  ls_tls_ctx_release(base->tls);
  ls_tls_ctx_release(base->staged_tls);
  base->tls = base->staged_tls = NULL;
}

/* Closes every resource of `gen` in `list` for which keep() says no. */
static void close_gen_resources(ls_res_t *list, ls_gen_t *gen, int only_on_retire) {
  ls_res_t *res = list->next;
  while (res != list) {
    ls_res_t *next = res->next;
    if (res->gen == gen && (!only_on_retire || res->close_on_retire)) {
      ls_res_unlink(res);
      res->close(res);
      next = list->next; /* closing may unlink others; start over */
    }
    res = next;
  }
}

void ls_gen_commit(ls_gen_t *gen) {
  ls_runtime_t *rt = gen->rt;
  ls_gen_t *old = rt->gen;
  ls_res_t *res = rt->servers.next;
  while (res != &rt->servers) {
    ls_listener_base_t *base = base_of(res);
    ls_res_t *next = res->next;
    if (base->staged_gen == gen) {
      luaL_unref(base->gen->L, LUA_REGISTRYINDEX, base->handler_ref);
      base->gen = gen;
      base->handler_ref = base->staged_ref;
      base->staged_gen = NULL;
      base->staged_ref = LUA_NOREF;
      /* New connections get the new generation's certificates; open ones keep theirs. */
      ls_tls_ctx_release(base->tls);
      base->tls = base->staged_tls;
      base->staged_tls = NULL;
    } else if (old != NULL && base->gen == old) {
      ls_res_unlink(res);
      res->close(res);
      next = rt->servers.next;
    }
    res = next;
  }
  rt->gen = gen;
  if (rt->loading == gen)
    rt->loading = NULL;
  if (old != NULL) {
    old->retired = 1;
    close_gen_resources(&rt->resources, old, 1);
    ls_gen_maybe_reap(old);
  }
}

void ls_gen_abort(ls_gen_t *gen) {
  ls_runtime_t *rt = gen->rt;
  ls_res_t *res = rt->servers.next;
  while (res != &rt->servers) {
    ls_listener_base_t *base = base_of(res);
    ls_res_t *next = res->next;
    if (base->staged_gen == gen) {
      base->staged_gen = NULL;
      base->staged_ref = LUA_NOREF; /* its registry goes with the state */
      ls_tls_ctx_release(base->staged_tls);
      base->staged_tls = NULL;
    } else if (base->gen == gen) {
      ls_res_unlink(res);
      res->close(res);
      next = rt->servers.next;
    }
    res = next;
  }
  if (rt->loading == gen)
    rt->loading = NULL;
  gen->retired = 1;
  close_gen_resources(&rt->resources, gen, 0);
  ls_gen_maybe_reap(gen);
}

static void reap_idle_cb(uv_idle_t *idle) {
  ls_runtime_t *rt = idle->data;
  ls_gen_t **link = &rt->gens;
  uv_idle_stop(idle);
  while (*link != NULL) {
    ls_gen_t *gen = *link;
    if (gen->retired && gen->live_tasks == 0 && gen->nres == 0 && gen != rt->gen) {
      unsigned id = gen->id;
      *link = gen->next;
      ls_gen_free(gen);
      ls_log(LS_LOG_DEBUG, "generation %u freed", id);
    } else {
      link = &gen->next;
    }
  }
}

void ls_gen_maybe_reap(ls_gen_t *gen) {
  ls_runtime_t *rt = gen->rt;
  if (!gen->retired || gen->live_tasks != 0 || rt->closing)
    return;
  if (gen->nres != 0 && !gen->sweeping) {
    /* No code of this generation can run any more (no task, no timer, no listener): what it
     * still holds open (client connections and sockets kept by its top level) goes too. */
    gen->sweeping = 1;
    close_gen_resources(&rt->resources, gen, 0);
    gen->sweeping = 0;
  }
  if (gen->nres == 0)
    uv_idle_start(&rt->reap_idle, reap_idle_cb);
}

static void res_close_all(ls_res_t *list) {
  while (list->next != list) {
    ls_res_t *res = list->next;
    ls_res_unlink(res); /* in case close forgets: the loop must end */
    res->close(res);
  }
}

/* ---- runtime ------------------------------------------------------------------------------ */

int ls_runtime_init(ls_runtime_t *rt, uv_loop_t *loop) {
  int err;
  /* A peer that closes while we write must give EPIPE, not kill the process. */
  signal(SIGPIPE, SIG_IGN);
  memset(rt, 0, sizeof *rt);
  rt->loop = loop;
  rt->servers.next = rt->servers.prev = &rt->servers;
  rt->resources.next = rt->resources.prev = &rt->resources;
  rt->on_stop.next = rt->on_stop.prev = &rt->on_stop;
  rt->grace = 5.0;
  rt->scratch_size = LS_SCRATCH_SIZE;
  rt->scratch = ls_malloc(rt->scratch_size);
  if (rt->scratch == NULL)
    return UV_ENOMEM;
  err = uv_idle_init(loop, &rt->ready_idle);
  if (err == 0)
    err = uv_idle_init(loop, &rt->reap_idle);
  if (err == 0)
    err = uv_timer_init(loop, &rt->grace_timer);
  if (err != 0) {
    ls_free(rt->scratch, rt->scratch_size);
    return err;
  }
  /* srv.shared: the command maps the zone (--shared-size, or the workers' zone); otherwise
   * srv.shared maps one of the default size on first use. */
  rt->shared = NULL;
  rt->ready_idle.data = rt;
  rt->reap_idle.data = rt;
  rt->grace_timer.data = rt;
  return 0;
}

void ls_runtime_close(ls_runtime_t *rt) {
  ls_gen_t *gen;
  rt->closing = 1;
  res_close_all(&rt->servers);
  res_close_all(&rt->resources);
  /* Let the resources' close callbacks run while the tasks and Lua objects they point at
   * still exist; suspended tasks' timers are stopped so nothing else keeps the loop going. */
  for (gen = rt->gens; gen != NULL; gen = gen->next) {
    unsigned i;
    for (i = 0; i < gen->nslots; i++)
      uv_timer_stop(&gen->slots[i]->timer);
  }
  uv_idle_stop(&rt->ready_idle);
  uv_idle_stop(&rt->reap_idle);
  uv_timer_stop(&rt->grace_timer);
  uv_run(rt->loop, UV_RUN_DEFAULT);
  while ((gen = rt->gens) != NULL) {
    rt->gens = gen->next;
    ls_gen_free(gen);
  }
  rt->gen = NULL;
  uv_close((uv_handle_t *)&rt->reap_idle, NULL);
  uv_close((uv_handle_t *)&rt->ready_idle, NULL);
  uv_close((uv_handle_t *)&rt->grace_timer, NULL);
  /* Let every close callback run so all memory is back before the caller frees the loop. */
  uv_run(rt->loop, UV_RUN_DEFAULT);
  ls_free(rt->scratch, rt->scratch_size);
  rt->scratch = NULL;
  ls_shared_free(rt->shared);
  rt->shared = NULL;
}

static void grace_timer_cb(uv_timer_t *timer) {
  ls_runtime_t *rt = timer->data;
  ls_log(LS_LOG_WARN, "grace period over: stopping with tasks still running");
  uv_stop(rt->loop);
}

void ls_runtime_check_drained(ls_runtime_t *rt) {
  ls_gen_t *gen;
  if (!rt->stopping || rt->flushing != 0)
    return;
  for (gen = rt->gens; gen != NULL; gen = gen->next)
    if (gen->live_tasks != 0)
      return;
  uv_stop(rt->loop);
}

void ls_runtime_stop(ls_runtime_t *rt, int graceful) {
  res_close_all(&rt->servers);
  if (!graceful || rt->stopping) {
    rt->stopping = 1;
    uv_stop(rt->loop);
    return;
  }
  rt->stopping = 1;
  res_close_all(&rt->on_stop); /* each is unlinked before its close runs */
  uv_timer_start(&rt->grace_timer, grace_timer_cb, (uint64_t)(rt->grace * 1000), 0);
  uv_unref((uv_handle_t *)&rt->grace_timer);
  ls_runtime_check_drained(rt);
}

/* ---- generations -------------------------------------------------------------------------- */

ls_gen_t *ls_gen_new(ls_runtime_t *rt, lua_State *L) {
  ls_gen_t *gen = ls_malloc(sizeof *gen);
  if (gen == NULL)
    return NULL;
  memset(gen, 0, sizeof *gen);
  gen->rt = rt;
  ls_alloc_init(&gen->alloc, 0);
  if (L == NULL) {
    L = lua_newstate(ls_alloc_lua, &gen->alloc);
    if (L == NULL) {
      ls_free(gen, sizeof *gen);
      return NULL;
    }
    gen->owns_state = 1;
    /* Requests make short-lived garbage: the generational collector handles it for less. */
    lua_gc(L, LUA_GCGEN, 0, 0);
  }
  gen->L = L;
  gen->id = ++rt->gen_count;
  gen->next = rt->gens;
  rt->gens = gen;
  /* Threads copy the main thread's extra space; zero means "not a task". */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  memset(lua_getextraspace(lua_tothread(L, -1)), 0, LUA_EXTRASPACE);
  lua_pop(L, 1);
  return gen;
}

static void task_free_cb(uv_handle_t *h) {
  ls_task_t *task = h->data;
  ls_free(task, sizeof *task);
}

/* Frees the generation's tasks (their timers close on the loop) and, if it is ours, the
 * state. The caller runs the loop afterwards so the close callbacks free the memory. */
void ls_gen_free(ls_gen_t *gen) {
  ls_runtime_t *rt = gen->rt;
  ls_task_t **prev = &rt->ready_head;
  unsigned i;
  /* Drop this generation's tasks from the ready queue. */
  while (*prev != NULL) {
    if ((*prev)->gen == gen)
      *prev = (*prev)->ready_next;
    else
      prev = &(*prev)->ready_next;
  }
  rt->ready_tail = NULL;
  for (ls_task_t *t = rt->ready_head; t != NULL; t = t->ready_next)
    rt->ready_tail = t;
  if (gen->owns_state) {
    lua_close(gen->L);
    ls_alloc_release(&gen->alloc);
  }
  for (i = 0; i < gen->nslots; i++) {
    ls_task_t *task = gen->slots[i];
    if (task != NULL)
      uv_close((uv_handle_t *)&task->timer, task_free_cb);
  }
  ls_free(gen->slots, gen->slots_cap * sizeof *gen->slots);
  ls_free(gen, sizeof *gen);
}

/* ---- protected calls ---------------------------------------------------------------------- */

static int traceback_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int ls_pcall(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  int status;
  lua_pushcfunction(L, traceback_handler);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
}

/* ---- tasks -------------------------------------------------------------------------------- */

/* Makes the coroutine of a new task and anchors it; runs under lua_pcall so that running out
 * of memory is an error, not a panic. */
static int task_make_thread(lua_State *L) {
  ls_task_t *task = lua_touserdata(L, 1);
  task->co = lua_newthread(L);
  task->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Gives a task a fresh coroutine in place of one that ended with an error, under lua_pcall
 * like task_make_thread. */
static int task_renew_thread(lua_State *L) {
  ls_task_t *task = lua_touserdata(L, 1);
  lua_State *co = lua_newthread(L);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_unref(L, LUA_REGISTRYINDEX, task->ref);
  *(uintptr_t *)lua_getextraspace(task->co) = 0;
  task->co = co;
  task->ref = ref;
  *(uintptr_t *)lua_getextraspace(co) = task->slot;
  return 0;
}

static ls_task_t *task_create(ls_gen_t *gen) {
  ls_task_t *task;
  lua_State *L = gen->L;
  if (gen->nslots == gen->slots_cap) {
    unsigned cap = gen->slots_cap ? gen->slots_cap * 2 : 64;
    ls_task_t **slots = ls_realloc(gen->slots, gen->slots_cap * sizeof *slots, cap * sizeof *slots);
    if (slots == NULL)
      return NULL;
    gen->slots = slots;
    gen->slots_cap = cap;
  }
  if (!lua_checkstack(L, 3))
    return NULL;
  task = ls_malloc(sizeof *task);
  if (task == NULL)
    return NULL;
  memset(task, 0, sizeof *task);
  task->gen = gen;
  lua_pushcfunction(L, task_make_thread);
  lua_pushlightuserdata(L, task);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    ls_free(task, sizeof *task);
    return NULL;
  }
  uv_timer_init(gen->rt->loop, &task->timer);
  task->timer.data = task;
  gen->slots[gen->nslots++] = task;
  task->slot = gen->nslots;
  *(uintptr_t *)lua_getextraspace(task->co) = task->slot;
  return task;
}

ls_task_t *ls_task_new(ls_gen_t *gen, ls_task_done_cb done, void *data) {
  ls_task_t *task = gen->free_tasks;
  if (task != NULL)
    gen->free_tasks = task->next;
  else if ((task = task_create(gen)) == NULL)
    return NULL;
  task->next = NULL;
  task->done = done;
  task->data = data;
  task->timed_out = 0;
  return task;
}

ls_task_t *ls_task_current(ls_gen_t *gen, lua_State *L) {
  uintptr_t slot = *(uintptr_t *)lua_getextraspace(L);
  ls_task_t *task;
  if (slot == 0 || slot > gen->nslots)
    return NULL;
  task = gen->slots[slot - 1];
  return task->co == L && task->running ? task : NULL;
}

ls_task_t *ls_task_check(ls_gen_t *gen, lua_State *L, const char *what) {
  ls_task_t *task = ls_task_current(gen, L);
  if (task == NULL)
    luaL_error(L, "%s must be called from a luasrv task (a handler, a timer callback, the "
                  "script's top level or srv.run), not from another coroutine", what);
  return task;
}

static void task_log_error(ls_task_t *task) {
  size_t len;
  const char *msg = lua_tolstring(task->co, -1, &len);
  if (msg == NULL)
    ls_log(LS_LOG_ERROR, "task failed with a %s error value", luaL_typename(task->co, -1));
  else
    ls_log_msg(LS_LOG_ERROR, msg, len);
}

/* Builds "message\nstack traceback:..." for a failed coroutine (its error value on top). Runs
 * under lua_pcall on the generation's main thread, so running out of memory here is caught. */
static int traceback_of(lua_State *L) {
  lua_State *co = lua_touserdata(L, 1);
  const char *msg = lua_tostring(L, 2);
  if (msg == NULL) {
    if (luaL_callmeta(L, 2, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 2));
  }
  luaL_traceback(L, co, msg, 0);
  return 1;
}

/* Replaces a failed coroutine's state with a clean one holding only the error message with
 * its traceback, so the coroutine can be reused and the message read. */
static void task_take_error(ls_task_t *task, int status) {
  lua_State *L = task->gen->L;
  lua_State *co = task->co;
  int ok;
  if (status == LUA_ERRMEM) {
    /* Drop the coroutine's stack first: what it holds is likely what filled the memory. */
    lua_resetthread(co);
    lua_pushliteral(co, "not enough memory (the Lua state reached its memory limit)");
    return;
  }
  if (!lua_checkstack(L, 4)) {
    lua_resetthread(co);
    lua_pushliteral(co, "error (no stack space left to describe it)");
    return;
  }
  lua_pushcfunction(L, traceback_of);
  lua_pushlightuserdata(L, co);
  lua_xmove(co, L, 1);
  ok = lua_pcall(L, 2, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING;
  lua_resetthread(co);
  if (ok) {
    lua_xmove(L, co, 1);
  } else {
    lua_pop(L, 1);
    lua_pushliteral(co, "error (not enough memory to describe it)");
  }
}

/* Replaces the task's coroutine with a new one. Returns 1, or 0 when out of memory. */
static int task_renew(ls_task_t *task) {
  lua_State *L = task->gen->L;
  if (!lua_checkstack(L, 3))
    return 0;
  lua_pushcfunction(L, task_renew_thread);
  lua_pushlightuserdata(L, task);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

static void task_finish(ls_task_t *task, int status, int nres) {
  ls_gen_t *gen = task->gen;
  int handled = 0;
  if (status != LUA_OK) {
    task_take_error(task, status);
    nres = 1;
  }
  task->running = 0;
  task->waiting = 0;
  if (task->timer_on) {
    uv_timer_stop(&task->timer);
    task->timer_on = 0;
  }
  if (task->done != NULL)
    handled = task->done(task, status, nres);
  if (status != LUA_OK && !handled)
    task_log_error(task);
  lua_settop(task->co, 0);
  task->done = NULL;
  task->data = NULL;
  task->budgeted = 0;
  gen->live_tasks--;
  /* A coroutine that ended with an error is not reused: Lua 5.4.4 leaves an error raised
   * inside a hook (the CPU budget's) with the thread's hooks disabled for good, and
   * lua_resetthread does not enable them again, so the budget would never fire in it again.
   * Errors are rare; a new coroutine costs one allocation. If even that fails, the task is
   * left out of the free list (its slot stays until the generation is freed). */
  if (status == LUA_OK || task_renew(task)) {
    task->next = gen->free_tasks;
    gen->free_tasks = task;
  }
  ls_runtime_check_drained(gen->rt);
  ls_gen_maybe_reap(gen);
}

static void task_after_resume(ls_task_t *task, int status, int nres) {
  if (status == LUA_YIELD && ls__watchdog_killed == task->co) {
    /* Over its CPU budget twice, the error caught the first time: end it here. */
    ls__watchdog_killed = NULL;
    lua_pop(task->co, nres);
    lua_pushliteral(task->co, "handler stopped: it went on past its CPU budget after the "
                              "budget error was caught");
    task->waiting = 0;
    task_finish(task, LUA_ERRRUN, 1);
    return;
  }
  if (status == LUA_YIELD) {
    lua_pop(task->co, nres);
    if (!task->waiting) {
      /* A plain coroutine.yield() from the task: run it again on the next turn. */
      task->waiting = 1;
      ls_task_wake(task);
    }
    return;
  }
  task_finish(task, status, nres);
}

void ls_task_start(ls_task_t *task, int nargs) {
  int nres = 0;
  int status;
  task->running = 1;
  task->waiting = 0;
  task->gen->live_tasks++;
  if (task->budgeted)
    ls_watchdog_enter(task->co);
  status = lua_resume(task->co, NULL, nargs, &nres);
  if (task->budgeted)
    ls_watchdog_leave();
  /* Lua may have run for a while: timers due meanwhile must see the time it is now. */
  uv_update_time(task->gen->rt->loop);
  task_after_resume(task, status, nres);
}

int ls_task_wait(ls_task_t *task, int64_t timeout_ms, lua_KContext ctx, lua_KFunction k) {
  task->waiting = 1;
  task->timed_out = 0;
  if (timeout_ms >= 0) {
    /* The loop's cached time is from before whatever Lua ran since: count from now. */
    uv_update_time(task->gen->rt->loop);
    uv_timer_start(&task->timer, task_timer_cb, (uint64_t)timeout_ms, 0);
    task->timer_on = 1;
  }
  return lua_yieldk(task->co, 0, ctx, k);
}

lua_KContext ls_task_deadline(ls_runtime_t *rt, int64_t timeout_ms) {
  if (timeout_ms < 0)
    return 0;
  uv_update_time(rt->loop);
  return (lua_KContext)(uv_now(rt->loop) + (uint64_t)timeout_ms + 1);
}

int ls_task_wait_until(ls_task_t *task, lua_KContext deadline, lua_KFunction k) {
  int64_t wait_ms = -1;
  if (deadline != 0) {
    uint64_t now = uv_now(task->gen->rt->loop);
    wait_ms = (uint64_t)deadline > now ? (int64_t)((uint64_t)deadline - now) : 0;
  }
  return ls_task_wait(task, wait_ms, deadline, k);
}

static void task_timer_cb(uv_timer_t *timer) {
  ls_task_t *task = timer->data;
  task->timer_on = 0;
  if (!task->waiting)
    return;
  task->timed_out = 1;
  ls_task_resume(task);
}

void ls_task_resume(ls_task_t *task) {
  int nres = 0;
  int status;
  if (!task->waiting)
    return;
  task->waiting = 0;
  if (task->timer_on) {
    uv_timer_stop(&task->timer);
    task->timer_on = 0;
  }
  if (task->budgeted)
    ls_watchdog_enter(task->co);
  status = lua_resume(task->co, NULL, 0, &nres);
  if (task->budgeted)
    ls_watchdog_leave();
  /* Lua may have run for a while: timers due meanwhile must see the time it is now. */
  uv_update_time(task->gen->rt->loop);
  task_after_resume(task, status, nres);
}

void ls_task_wake(ls_task_t *task) {
  ls_runtime_t *rt = task->gen->rt;
  if (task->queued || !task->waiting)
    return;
  task->queued = 1;
  task->ready_next = NULL;
  if (rt->ready_tail != NULL)
    rt->ready_tail->ready_next = task;
  else
    rt->ready_head = task;
  rt->ready_tail = task;
  if (!uv_is_active((uv_handle_t *)&rt->ready_idle))
    uv_idle_start(&rt->ready_idle, ready_idle_cb);
}

static void ready_idle_cb(uv_idle_t *idle) {
  ls_runtime_t *rt = idle->data;
  /* Run only what was queued before this turn, so a task that yields in a loop does not
   * starve the rest of the loop. */
  ls_task_t *task = rt->ready_head;
  rt->ready_head = rt->ready_tail = NULL;
  while (task != NULL) {
    ls_task_t *next = task->ready_next;
    task->queued = 0;
    task->ready_next = NULL;
    ls_task_resume(task);
    task = next;
  }
  if (rt->ready_head == NULL)
    uv_idle_stop(idle);
}

/* ---- helpers for bindings ----------------------------------------------------------------- */

int ls_push_error(lua_State *L, int err) {
  lua_pushnil(L);
  lua_pushstring(L, ls_strerror(err));
  lua_pushstring(L, ls_err_name(err));
  return 3;
}

int64_t ls_opt_timeout_ms(lua_State *L, int idx, int64_t def) {
  lua_Number s;
  if (lua_isnoneornil(L, idx))
    return def;
  s = luaL_checknumber(L, idx);
  if (s < 0 || isinf(s))
    return -1;
  if (s != s)
    luaL_argerror(L, idx, "timeout is NaN");
  return (int64_t)ceil(s * 1000.0);
}

int64_t ls_opt_timeout_field(lua_State *L, int opts, const char *name, int64_t def) {
  int64_t ms = def;
  if (opts == 0)
    return def;
  if (lua_getfield(L, opts, name) != LUA_TNIL) {
    if (!lua_isnumber(L, -1))
      luaL_error(L, "option '%s' must be a number of seconds", name);
    ms = ls_opt_timeout_ms(L, -1, def);
  }
  lua_pop(L, 1);
  return ms;
}

size_t ls_opt_size_field(lua_State *L, int opts, const char *name, size_t def) {
  size_t v = def;
  if (opts == 0)
    return def;
  if (lua_getfield(L, opts, name) != LUA_TNIL) {
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (!ok || n <= 0)
      luaL_error(L, "option '%s' must be a positive integer", name);
    v = (size_t)n;
  }
  lua_pop(L, 1);
  return v;
}

const char *ls_opt_string_field(lua_State *L, int opts, const char *name) {
  const char *s = NULL;
  if (opts == 0)
    return NULL;
  if (lua_getfield(L, opts, name) != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "option '%s' must be a string", name);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1); /* the options table keeps the string alive */
  return s;
}

void ls_new_class(lua_State *L, const char *name, const luaL_Reg *meth,
                  const luaL_Reg *metameth) {
  if (luaL_newmetatable(L, name)) {
    lua_pushvalue(L, -1);
    luaL_setfuncs(L, metameth, 1);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, meth, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

void *ls_check_class_at(lua_State *L, int idx, int up, const char *name) {
  void *ud = lua_touserdata(L, idx);
  if (ud != NULL && lua_getmetatable(L, idx)) {
    int ok = lua_rawequal(L, -1, lua_upvalueindex(up));
    lua_pop(L, 1);
    if (ok)
      return ud;
  }
  return luaL_checkudata(L, idx, name);
}

void *ls_check_class(lua_State *L, const char *name) { return ls_check_class_at(L, 1, 1, name); }
