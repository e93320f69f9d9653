/* WebSocket connections (RFC 6455) for Lua: an HTTP connection's stream taken over after the
 * 101 answer, frames parsed by ws_frame.c, and the luasrv.WebSocket object (receive,
 * messages, send, ping, close). The handshake's checks and the route live in Lua
 * (lua/luasrv/ws.lua); core.ws_accept here answers it and hands the stream over. */
#ifndef LS_WS_H
#define LS_WS_H

#include <lua.h>

#include "runtime.h"

/* Adds core.ws_accept to the table on top of L and registers the luasrv.WebSocket
 * metatable. */
void ls_ws_open(lua_State *L, ls_gen_t *gen);

#endif
