/* The CPU budget: a handler that runs longer than the budget without yielding is stopped
 * with a Lua error, and the server goes on.
 *
 * Checking the time in the VM would slow every instruction, so nothing is checked on the hot
 * path: the runtime only notes which coroutine runs (two atomic stores per resume). A
 * watchdog thread looks at that a few times per budget; when the same run has lasted past
 * the budget it signals the main thread, whose handler sets a Lua hook on the running
 * coroutine (lua_sethook is safe from a signal handler, as lua.c uses it for Ctrl-C), and
 * the hook raises the error in that coroutine. Signals are per process, so this state is too. */
#ifndef LS_WATCHDOG_H
#define LS_WATCHDOG_H

#include <lua.h>
#include <stdatomic.h>

extern _Atomic(lua_State *) ls__watchdog_running;
extern atomic_uint ls__watchdog_seq;
/* The coroutine the watchdog suspended for good (main thread only; see budget_hook). */
extern lua_State *ls__watchdog_killed;

/* Starts the watchdog with a budget in milliseconds (0 leaves it off). Returns 0 or -1. */
int ls_watchdog_start(unsigned budget_ms);
void ls_watchdog_stop(void);

/* Marks `co` as running (a budgeted task was resumed) and no longer running. */
static inline void ls_watchdog_enter(lua_State *co) {
  atomic_fetch_add_explicit(&ls__watchdog_seq, 1, memory_order_relaxed);
  atomic_store_explicit(&ls__watchdog_running, co, memory_order_release);
}
static inline void ls_watchdog_leave(void) {
  atomic_store_explicit(&ls__watchdog_running, NULL, memory_order_release);
}

#endif
