/* A one-task wake-up signal for the Lua half: core.waiter() -> w; w:wait([timeout]) suspends
 * the calling task until another task calls w:wake(). It is how luasrv.redis hands a reply that
 * its reader task parsed to the task that asked for it, without polling. Internal: not part of
 * the srv API. */
#ifndef LS_WAITER_H
#define LS_WAITER_H

#include "runtime.h"

/* Adds `waiter` to the table on top of L (the core table), with `gen` as its upvalue. */
void ls_waiter_open(lua_State *L, ls_gen_t *gen);

#endif
