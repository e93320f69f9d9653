/* Timers for Lua: srv.sleep, srv.after, srv.every, srv.now, srv.monotime. */
#ifndef LS_TIMER_H
#define LS_TIMER_H

#include "runtime.h"

/* Adds the timer functions to the table on top of L; each takes `gen` as its upvalue. */
void ls_timer_open(lua_State *L, ls_gen_t *gen);

#endif
