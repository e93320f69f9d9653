/* The listening socket that TCP and HTTP listeners share: TCP on an address or Unix-domain
 * on a path, bound and listening, its printable URL and its address for Lua, and the removal
 * of the socket file when it closes. (What a listener serves, and its hand-over at a reload,
 * is ls_listener_base_t in runtime.h.) */
#ifndef LS_LISTENER_H
#define LS_LISTENER_H

#include <lua.h>
#include <uv.h>

#include "stream.h"

typedef struct ls_listen_sock_s {
  ls_uv_stream_u u;
  char *path;                 /* a Unix socket's path, removed at close; NULL for TCP */
  size_t path_size;
  unsigned char is_pipe;
} ls_listen_sock_t;

/* Where a listener listens, as its options table says. */
typedef struct ls_listen_opts_s {
  const char *host;           /* default "127.0.0.1" */
  const char *path;           /* a Unix socket instead, or NULL */
  int port;
  int backlog;                /* default 511 */
} ls_listen_opts_t;

/* Reads host, port or path, and backlog from the options table at idx (strings stay owned by
 * the table). Raises "bad argument #1 to 'listen' (...)" for a missing or bad port. */
void ls_listen_opts_read(lua_State *L, int idx, ls_listen_opts_t *o);
/* The key that matches a listener across reloads: "KIND://host:port" or "KIND+unix:path". */
void ls_listen_opts_key(const ls_listen_opts_t *o, const char *kind, char *out, size_t size);

/* Makes the socket (u.handle.data = data), binds it to o's host:port, or to o->path (a socket
 * file left by an earlier run is removed first; nothing else is), and listens. Under
 * --workers the master binds and hands the socket over (src/workers.c); `scheme` ("tcp",
 * "tls", "http", "https") names it in the master's "listening on" line.
 * Returns 0, or a libuv error with `where` ("127.0.0.1:80", "unix:/x.sock") filled in; either
 * way the handle exists and is closed with ls_listen_sock_close. */
int ls_listen_sock_open(ls_listen_sock_t *ls, uv_loop_t *loop, void *data,
                        const ls_listen_opts_t *o, const char *scheme, uv_connection_cb cb,
                        char *where, size_t where_size);
/* "scheme://127.0.0.1:8080", "scheme://[::1]:8080" or "unix:/run/app.sock". */
void ls_listen_sock_url(const ls_listen_sock_t *ls, const char *scheme, char *out, size_t size);
/* Pushes host, port (2) or the path (1), as listener:address() answers; 0 if unknown. */
int ls_listen_sock_push_address(lua_State *L, const ls_listen_sock_t *ls);
/* Closes the handle; cb runs when it is closed. The socket file is removed and the path freed
 * then (ls_listen_sock_closed, which cb must call first). */
void ls_listen_sock_close(ls_listen_sock_t *ls, uv_close_cb cb);
void ls_listen_sock_closed(ls_listen_sock_t *ls);

#endif
