/* The `luasrv.core` Lua module: the C half of `require "luasrv"`. */
#ifndef LS_MODULE_H
#define LS_MODULE_H

#include "runtime.h"

/* Registry key under which the luasrv command stores its generation, so the module binds to
 * it instead of making a runtime of its own (as it does under a stock interpreter). */
#define LS_GEN_KEY "luasrv.gen"

/* The lua_CFunction behind require "luasrv.core". */
int ls_module_open(lua_State *L);

#endif
