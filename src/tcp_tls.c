/* TLS on a TCP connection after it is open: conn:starttls (client or server side, waiting for
 * the handshake) and conn:tls (the session). The TLS layer itself is src/tls.c. */
#include "errors.h"
#include "tcp_internal.h"
#include "tls.h"

static int conn_starttls_k(lua_State *L, int status, lua_KContext ctx) {
  conn_ud_t *ud = ls__tcp_check_conn_ud(L);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_conn_t *c = ud->conn;
  (void)status;
  (void)ctx;
  if (c != NULL && c->connector == task)
    c->connector = NULL;
  if (c == NULL || c->closed)
    return ls_push_error(L, LS_ECLOSED);
  if (ls_tls_ready(&c->s)) {
    lua_settop(L, 1);
    return 1;
  }
  if (c->s.read_err != 0)
    return ls__tcp_push_error(L, c, c->s.read_err);
  if (task != NULL && ls_task_take_timeout(task)) {
    lua_pushnil(L);
    lua_pushliteral(L, "tls: handshake timeout");
    lua_pushliteral(L, "ETIMEDOUT");
    return 3;
  }
  c->connector = ls_task_check(c->gen, L, "starttls");
  ls__tcp_conn_want_input(c);
  return ls_task_wait(c->connector, c->timeout_ms, 0, conn_starttls_k);
}

/* conn:starttls([opts]) -> conn, or nil, message, code: TLS on an open plain connection, as a
 * client (opts as connect's `tls`: true or { ca, server_name, alpn, verify }) or, with
 * opts.cert, as a server (opts as a listener's `tls`). Waits for the handshake. */
int ls__tcp_starttls(lua_State *L) {
  ls_conn_t *c = ls__tcp_check_conn(L);
  ls_tls_ctx_t *ctx;
  const char *name = NULL;
  int err;
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (c->s.tls != NULL)
    return luaL_error(L, "starttls: the connection already speaks TLS");
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_settop(L, 2);
  if (lua_istable(L, 2) && lua_getfield(L, 2, "cert") != LUA_TNIL) {
    lua_pop(L, 1);
    ctx = ls_tls_server_ctx(L, 2, 0);
  } else {
    lua_settop(L, 2);
    ctx = ls_tls_client_ctx(L, 2, &name);
    if (name == NULL)
      name = c->tls_name;
  }
  lua_settop(L, 1);
  err = ls_tls_attach(&c->s, ctx, name, 0);
  ls_tls_ctx_release(ctx);
  if (err != 0)
    return ls_push_error(L, err);
  return conn_starttls_k(L, LUA_OK, 0);
}

/* conn:tls() -> { version, cipher, alpn, server_name, peer_subject }, or nil (plain). */
int ls__tcp_tls(lua_State *L) {
  ls_conn_t *c = ls__tcp_check_conn(L);
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  ls_tls_push_info(L, &c->s);
  return 1;
}
