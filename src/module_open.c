/* Entry point of luasrv/core.so for a stock lua5.4 interpreter. */
#include "module.h"

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_luasrv_core(lua_State *L);

int luaopen_luasrv_core(lua_State *L) { return ls_module_open(L); }
