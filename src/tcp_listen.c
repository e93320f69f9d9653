/* srv.tcp.listen and luasrv.Listener: listening sockets (TCP, TLS, Unix-domain), accepting
 * connections and running each one's handler in a task of its own. */
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "errors.h"
#include "log.h"
#include "tcp.h"
#include "tcp_internal.h"

/* ---- listen ------------------------------------------------------------------------------- */

static void listener_close_cb(uv_handle_t *h) {
  ls_listener_t *l = h->data;
  ls_listen_sock_closed(&l->sock);
  ls_free(l, sizeof *l);
}

static void listener_close(ls_listener_t *l) {
  if (uv_is_closing(&l->sock.u.handle))
    return;
  ls_res_unlink(&l->base.res);
  ls_listener_release(&l->base);
  ls_listen_sock_close(&l->sock, listener_close_cb);
}

static void listener_res_close(ls_res_t *res) {
  listener_close((ls_listener_t *)((char *)res - offsetof(ls_listener_t, base.res)));
}

/* Logs a failed handler's error naming its listener and its peer:
 * "tcp handler for tcp://127.0.0.1:9999 (peer 127.0.0.1:51234) failed: MESSAGE". */
static void conn_log_failure(ls_task_t *task, ls_conn_t *c) {
  const char *msg = lua_tostring(task->co, -1);
  const char *where = "a closed listener";
  char peer[INET6_ADDRSTRLEN + 16] = "-";
  struct sockaddr_storage ss;
  if (c->accepted_by != NULL && ls_listener_alive(c->gen->rt, &c->accepted_by->base, c->listener_id))
    where = c->accepted_by->url;
  if (c->s.is_pipe) {
    snprintf(peer, sizeof peer, "unix");
  } else if (ls_stream_peer(&c->s, &ss) == 0) {
    char host[INET6_ADDRSTRLEN];
    const ls_sockaddr_u *a = (const ls_sockaddr_u *)&ss;
    ls_sockaddr_host(a, host, sizeof host);
    snprintf(peer, sizeof peer, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host,
             ls_sockaddr_port(a));
  }
  ls_log(LS_LOG_ERROR, "tcp handler for %s (peer %s) failed: %s", where, peer,
         msg != NULL ? msg : "(an error value that is not a string)");
}

static int conn_handler_done(ls_task_t *task, int status, int nres) {
  ls_conn_t *c = task->data;
  (void)nres;
  if (c == NULL)
    return 0; /* the connection went first: the runtime logs the error as it is */
  c->handler = NULL;
  if (status != LUA_OK)
    conn_log_failure(task, c);
  ls__tcp_conn_close(c, 1);
  return status != LUA_OK;
}

static int conn_task_body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* The body of a connection's task: handler(conn). */
static int conn_task_body(lua_State *L) {
  ls_conn_t *c = lua_touserdata(L, 2);
  lua_settop(L, 1);
  ls__tcp_conn_push_ud(L, c);
  lua_callk(L, 1, 0, 0, conn_task_body_k);
  return 0;
}

/* Starts the listener's handler for an accepted connection, in the listener's current
 * generation (a reload during a TLS handshake hands the connection to the new one). */
void ls__tcp_start_handler(ls_conn_t *c) {
  ls_listener_t *l = c->accepted_by;
  ls_task_t *task;
  c->awaiting_handshake = 0;
  if (!ls_listener_alive(c->gen->rt, &l->base, c->listener_id)) {
    ls__tcp_conn_close(c, 0);
    return;
  }
  if (c->gen != l->base.gen) {
    ls_res_unlink(&c->res);
    c->gen = l->base.gen;
    ls_res_link_gen(&c->gen->rt->resources, &c->res, c->gen);
  }
  task = ls_task_new(l->base.gen, conn_handler_done, c);
  if (task == NULL) {
    ls_log(LS_LOG_ERROR, "%s: out of memory starting a handler", l->url);
    ls__tcp_conn_close(c, 0);
    return;
  }
  c->handler = task;
  task->budgeted = 1;
  /* The connection object is made inside the task, where running out of memory is an error of
   * that task rather than a panic. */
  lua_pushcfunction(task->co, conn_task_body);
  lua_rawgeti(task->co, LUA_REGISTRYINDEX, l->base.handler_ref);
  lua_pushlightuserdata(task->co, c);
  ls__tcp_conn_want_input(c);
  ls_task_start(task, 2);
}

static void listener_connection_cb(uv_stream_t *server, int status) {
  ls_listener_t *l = server->data;
  ls_conn_t *c;
  if (status < 0) {
    ls_log(LS_LOG_WARN, "%s: accept failed: %s", l->url, uv_strerror(status));
    return;
  }
  c = ls__tcp_conn_new(l->base.gen, l->sock.is_pipe);
  if (c == NULL) {
    ls_log(LS_LOG_ERROR, "%s: out of memory accepting a connection", l->url);
    return;
  }
  if (ls_stream_accept(&c->s, server) != 0) {
    ls__tcp_conn_close(c, 0);
    return;
  }
  c->connected = 1;
  c->timeout_ms = l->timeout_ms;
  c->line_max = l->line_max;
  c->frame_max = l->frame_max;
  c->accepted_by = l;
  c->listener_id = l->base.id;
  if (l->base.tls == NULL) {
    ls__tcp_start_handler(c);
    return;
  }
  /* TLS: the handler starts when the handshake is done (conn_on_read); a client that never
   * finishes it costs one stream until the handshake timeout. */
  c->awaiting_handshake = 1;
  if (ls_tls_attach(&c->s, l->base.tls, NULL, l->handshake_ms) != 0) {
    ls__tcp_conn_close(c, 0);
    return;
  }
  ls__tcp_conn_want_input(c);
}

/* Fills in the listener's printable address ("tcp://127.0.0.1:9999", "unix:/run/x.sock"). */
static void listener_set_url(ls_listener_t *l) {
  ls_listen_sock_url(&l->sock, l->base.tls != NULL ? "tls" : "tcp", l->url, sizeof l->url);
}

/* srv.tcp.listen(opts, handler) -> listener. opts: host (default "127.0.0.1"), port (0: any
 * free port), or path for a Unix socket; backlog; timeout, line_max, frame_max for each
 * connection. handler(conn) runs in its own task for each connection, which closes when the
 * handler returns. Raises if the address cannot be bound. */
int ls__tcp_listen(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  ls_listen_opts_t lo;
  ls_listener_t *l, *claimed;
  listener_ud_t *ud;
  ls_tls_ctx_t *tls;
  int64_t handshake_ms, timeout_ms;
  size_t line_max, frame_max;
  char key[160], where[200];
  int err;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  ls_listen_opts_read(L, 1, &lo);
  timeout_ms = ls_opt_timeout_field(L, 1, "timeout", -1);
  line_max = ls_opt_size_field(L, 1, "line_max", LS_TCP_LINE_MAX);
  frame_max = ls_opt_size_field(L, 1, "frame_max", LS_TCP_FRAME_MAX);
  handshake_ms = ls_opt_timeout_field(L, 1, "handshake_timeout", 10000);
  handshake_ms = handshake_ms < 0 ? 0 : handshake_ms; /* 0: no limit */
  lua_getfield(L, 1, "tls");
  tls = lua_isnil(L, -1) ? NULL : ls_tls_server_ctx(L, -1, 0);
  lua_pop(L, 1);
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->listener = NULL;
  ud->gen = gen;
  luaL_setmetatable(L, LS_LISTENER_MT);
  ls_listen_opts_key(&lo, "tcp", key, sizeof key);
  claimed = (ls_listener_t *)ls_listener_claim(gen, key);
  if (claimed != NULL) {
    /* A reload listening where the running generation does: keep the socket, stage the
     * new handler; ls_gen_commit switches to it once the script has loaded. */
    claimed = (ls_listener_t *)((char *)claimed - offsetof(ls_listener_t, base));
    lua_pushvalue(L, 2);
    claimed->base.staged_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    claimed->base.staged_gen = gen;
    claimed->base.staged_tls = tls;
    ud->listener = claimed;
    ud->id = claimed->base.id;
    return 1;
  }
  l = ls_malloc(sizeof *l);
  if (l == NULL) {
    ls_tls_ctx_release(tls);
    return luaL_error(L, "listen: not enough memory");
  }
  memset(l, 0, sizeof *l);
  l->timeout_ms = timeout_ms;
  l->line_max = line_max;
  l->frame_max = frame_max;
  l->handshake_ms = (uint64_t)handshake_ms;
  ls_listener_init(&l->base, gen, LUA_NOREF, key, listener_res_close);
  l->base.tls = tls; /* released with the listener */
  err = ls_listen_sock_open(&l->sock, gen->rt->loop, l, &lo, tls != NULL ? "tls" : "tcp",
                            listener_connection_cb, where, sizeof where);
  if (err != 0) {
    listener_close(l);
    return luaL_error(L, "listen: cannot listen on %s: %s", where, ls_strerror(err));
  }
  lua_pushvalue(L, 2);
  l->base.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ud->listener = l;
  ud->id = l->base.id;
  listener_set_url(l);
  if (gen->rt->announce) {
    printf("listening on %s\n", l->url);
    fflush(stdout);
  }
  return 1;
}

/* The open listener behind the Lua object at argument 1, or NULL once it has closed. */
static ls_listener_t *tcp_check_listener(lua_State *L) {
  listener_ud_t *ud = luaL_checkudata(L, 1, LS_LISTENER_MT);
  if (ud->listener == NULL || !ls_listener_alive(ud->gen->rt, &ud->listener->base, ud->id))
    return NULL;
  return ud->listener;
}

/* listener:close() -> true: stops accepting; running connections go on. */
static int l_tcp_listener_close(lua_State *L) {
  ls_listener_t *l = tcp_check_listener(L);
  if (l != NULL)
    listener_close(l);
  lua_pushboolean(L, 1);
  return 1;
}

/* listener:address() -> host, port (TCP) or path (Unix); nil, "closed" once closed. */
static int l_tcp_listener_address(lua_State *L) {
  ls_listener_t *l = tcp_check_listener(L);
  int n = l != NULL ? ls_listen_sock_push_address(L, &l->sock) : 0;
  return n > 0 ? n : ls_push_error(L, LS_ECLOSED);
}

/* listener:url() -> "tcp://127.0.0.1:9999" as printed at start. */
static int l_tcp_listener_url(lua_State *L) {
  ls_listener_t *l = tcp_check_listener(L);
  if (l == NULL)
    return ls_push_error(L, LS_ECLOSED);
  lua_pushstring(L, l->url);
  return 1;
}

static int l_tcp_listener_tostring(lua_State *L) {
  ls_listener_t *l = tcp_check_listener(L);
  if (l != NULL)
    lua_pushfstring(L, "luasrv.Listener (%s)", l->url);
  else
    lua_pushliteral(L, "luasrv.Listener (closed)");
  return 1;
}

/* Makes a class's metatable; the methods get the metatable as their first upvalue. */
void ls__tcp_listener_open(lua_State *L) {
  static const luaL_Reg listener_meth[] = {{"close", l_tcp_listener_close},
                                           {"address", l_tcp_listener_address},
                                           {"url", l_tcp_listener_url},
                                           {NULL, NULL}};
  static const luaL_Reg listener_metameth[] = {{"__tostring", l_tcp_listener_tostring},
                                               {NULL, NULL}};
  if (luaL_newmetatable(L, LS_LISTENER_MT)) {
    luaL_setfuncs(L, listener_metameth, 0);
    lua_newtable(L);
    luaL_setfuncs(L, listener_meth, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}
