/* WebSocket connections (RFC 6455) for Lua, server and client: a stream taken over after the
 * opening handshake, frames parsed by ws_frame.c, and the luasrv.WebSocket object (receive,
 * messages, send, ping, close). The handshake's checks, the route and the client's request
 * live in Lua (lua/luasrv/ws.lua); src/ws_handshake.c answers and takes streams over. */
#ifndef LS_WS_H
#define LS_WS_H

#include <lua.h>

#include "runtime.h"

/* Adds core.ws_accept to the table on top of L and registers the luasrv.WebSocket
 * metatable. */
void ls_ws_open(lua_State *L, ls_gen_t *gen);

#endif
