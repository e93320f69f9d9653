/* TCP and Unix-domain stream sockets for Lua: srv.tcp.listen, srv.tcp.connect and the
 * connection object ("luasrv.Conn"). */
#ifndef LS_TCP_H
#define LS_TCP_H

#include "runtime.h"

/* Default limits of a connection; a listener's options override them. */
#define LS_TCP_LINE_MAX (64 * 1024)
#define LS_TCP_FRAME_MAX (1024 * 1024)

/* Takes the open connection of the luasrv.Conn at idx away from it, for a protocol that runs on
 * its stream (a WebSocket client): the object answers "closed" from then on, and the stream,
 * with whatever input is buffered, is returned (NULL: the connection is closed, or a task is
 * waiting on it). The connection stays until its stream closes: the new owner switches s->ev
 * and s->owner, and gives them back before it calls the old on_close. *is_client tells a
 * connection made by connect, whose handle holds the loop only while someone waits on it. */
struct ls_stream_s *ls_tcp_take_stream(lua_State *L, int idx, int *is_client);

/* Adds listen and connect to the table on top of L (the `tcp` table). */
void ls_tcp_open(lua_State *L, ls_gen_t *gen);

#endif
