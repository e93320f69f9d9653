/* TCP and Unix-domain stream sockets for Lua: srv.tcp.listen, srv.tcp.connect and the
 * connection object ("luasrv.Conn"). */
#ifndef LS_TCP_H
#define LS_TCP_H

#include "runtime.h"

/* Default limits of a connection; a listener's options override them. */
#define LS_TCP_LINE_MAX (64 * 1024)
#define LS_TCP_FRAME_MAX (1024 * 1024)

/* Adds listen and connect to the table on top of L (the `tcp` table). */
void ls_tcp_open(lua_State *L, ls_gen_t *gen);

#endif
