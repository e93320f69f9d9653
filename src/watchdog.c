#include "watchdog.h"

#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <uv.h>

#define LS_WATCHDOG_SIGNAL SIGVTALRM

_Atomic(lua_State *) ls__watchdog_running;
atomic_uint ls__watchdog_seq;

static atomic_uint fired_seq;
static atomic_uint fire_count;   /* signals sent for the run fired_seq */
lua_State *ls__watchdog_killed;
static atomic_int stop_flag;
static unsigned budget_ms;
static int started;
static uv_thread_t thread;
static pthread_t main_thread;

/* Runs in the overrunning coroutine, unless the run it was set for is over: the first time
 * it raises an error there; if the code caught that and went on, the next time it suspends
 * the coroutine for good (a yield no pcall can catch), and the runtime ends the task. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (atomic_load(&ls__watchdog_running) != L ||
      atomic_load(&fired_seq) != atomic_load(&ls__watchdog_seq))
    return;
  if (atomic_load(&fire_count) >= 2 && lua_isyieldable(L)) {
    ls__watchdog_killed = L;
    lua_yield(L, 0);
    return;
  }
  luaL_error(L, "handler exceeded its CPU budget of %d ms without yielding", (int)budget_ms);
}

static void on_signal(int sig) {
  lua_State *co = atomic_load(&ls__watchdog_running);
  (void)sig;
  /* A count hook: the only kind that may yield, should it come to that. */
  if (co != NULL)
    lua_sethook(co, budget_hook, LUA_MASKCOUNT, 1);
}

static void watch(void *arg) {
  unsigned tick = budget_ms / 4;
  unsigned last_seq = 0, elapsed = 0;
  (void)arg;
  if (tick < 5)
    tick = 5;
  if (tick > 100)
    tick = 100;
  while (!atomic_load(&stop_flag)) {
    lua_State *co;
    unsigned seq;
    uv_sleep(tick);
    co = atomic_load(&ls__watchdog_running);
    seq = atomic_load(&ls__watchdog_seq);
    if (co == NULL || seq != last_seq) {
      last_seq = seq;
      elapsed = 0;
      continue;
    }
    elapsed += tick;
    if (elapsed >= budget_ms) {
      /* Again after each further budget, in case the error was caught. */
      if (atomic_load(&fired_seq) != seq) {
        atomic_store(&fire_count, 0);
        atomic_store(&fired_seq, seq);
      }
      atomic_fetch_add(&fire_count, 1);
      elapsed = 0;
      pthread_kill(main_thread, LS_WATCHDOG_SIGNAL);
    }
  }
}

int ls_watchdog_start(unsigned ms) {
  struct sigaction sa;
  if (ms == 0 || started)
    return 0;
  budget_ms = ms;
  main_thread = pthread_self();
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(LS_WATCHDOG_SIGNAL, &sa, NULL) != 0)
    return -1;
  atomic_store(&stop_flag, 0);
  if (uv_thread_create(&thread, watch, NULL) != 0)
    return -1;
  started = 1;
  return 0;
}

void ls_watchdog_stop(void) {
  if (!started)
    return;
  atomic_store(&stop_flag, 1);
  uv_thread_join(&thread);
  started = 0;
}
