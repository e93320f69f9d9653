#include "listener.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "alloc.h"
#include "errors.h"
#include "runtime.h"
#include "workers.h"

void ls_listen_opts_read(lua_State *L, int idx, ls_listen_opts_t *o) {
  o->path = ls_opt_string_field(L, idx, "path");
  o->host = ls_opt_string_field(L, idx, "host");
  if (o->host == NULL)
    o->host = "127.0.0.1";
  o->port = 0;
  if (o->path == NULL) {
    lua_Integer port;
    lua_getfield(L, idx, "port");
    if (!lua_isinteger(L, -1))
      luaL_argerror(L, 1, "expected a port (0 for any free one) or a path");
    port = lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, port >= 0 && port < 65536, 1, "port out of range");
    o->port = (int)port;
  }
  o->backlog = (int)ls_opt_size_field(L, idx, "backlog", 511);
}

void ls_listen_opts_key(const ls_listen_opts_t *o, const char *kind, char *out, size_t size) {
  if (o->path != NULL)
    snprintf(out, size, "%s+unix:%s", kind, o->path);
  else
    ls_addr_key(kind, o->host, o->port, out, size); /* port 0: never kept */
}

int ls_listen_sock_open(ls_listen_sock_t *ls, uv_loop_t *loop, void *data,
                        const ls_listen_opts_t *o, const char *scheme, uv_connection_cb cb,
                        char *where, size_t where_size) {
  const char *host = o->host, *path = o->path;
  int port = o->port;
  int err;
  memset(ls, 0, sizeof *ls);
  ls->is_pipe = path != NULL;
  err = ls->is_pipe ? uv_pipe_init(loop, &ls->u.pipe, 0) : uv_tcp_init(loop, &ls->u.tcp);
  if (err != 0) {
    /* Nothing was made: a pipe that failed to init cannot be closed; make a TCP handle so
     * the caller's close path stays the same. */
    uv_tcp_init(loop, &ls->u.tcp);
    ls->is_pipe = 0;
  }
  ls->u.handle.data = data;
  if (path != NULL)
    snprintf(where, where_size, "unix:%s", path);
  else
    snprintf(where, where_size, "%s:%d", host, port);
  if (err != 0)
    return err;
  if (path != NULL) {
    /* Under --workers the master binds (and owns the file); otherwise a stale socket file
     * is removed first (src/workers.c). */
    err = ls_worker_bind_pipe(&ls->u.pipe, path);
    if (err == 0) {
      /* Bound: the path is ours to remove at close from now on. */
      ls->path_size = strlen(path) + 1;
      ls->path = ls_malloc(ls->path_size);
      if (ls->path == NULL)
        return LS_ENOMEM;
      memcpy(ls->path, path, ls->path_size);
    }
  } else {
    struct sockaddr_storage ss;
    err = ls_addr_parse(host, port, &ss);
    if (err == 0)
      err = ls_worker_bind_tcp(&ls->u.tcp, (struct sockaddr *)&ss, scheme);
  }
  if (err == 0)
    err = uv_listen(&ls->u.stream, o->backlog, cb);
  return err;
}

void ls_listen_sock_url(const ls_listen_sock_t *ls, const char *scheme, char *out, size_t size) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (ls->is_pipe) {
    snprintf(out, size, "unix:%s", ls->path != NULL ? ls->path : "");
    return;
  }
  memset(&ss, 0, sizeof ss);
  uv_tcp_getsockname(&ls->u.tcp, (struct sockaddr *)&ss, &len);
  ls_addr_url(scheme, &ss, out, size);
}

int ls_listen_sock_push_address(lua_State *L, const ls_listen_sock_t *ls) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (ls->is_pipe) {
    lua_pushstring(L, ls->path != NULL ? ls->path : "");
    return 1;
  }
  if (uv_tcp_getsockname(&ls->u.tcp, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  return ls_addr_push(L, &ss);
}

void ls_listen_sock_close(ls_listen_sock_t *ls, uv_close_cb cb) {
  if (!uv_is_closing(&ls->u.handle))
    uv_close(&ls->u.handle, cb);
}

void ls_listen_sock_closed(ls_listen_sock_t *ls) {
  if (ls->path != NULL) {
    ls_worker_unlink_path(ls->path);
    ls_free(ls->path, ls->path_size);
    ls->path = NULL;
  }
}
