/* The HTTP server's Lua API: srv.http.listen (core.http_listen: options, limits, TLS and
 * compression, the hand-over at a reload), luasrv.HttpListener, and core.http_inject (a
 * request run without a socket, for luasrv.test). The top of the HTTP layers: it joins the
 * connection cycle (http_server.c) to the Lua handler side (http_lua.c) through the
 * listener's hooks, so neither of those calls the other's functions by name upwards. */
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "errors.h"
#include "http.h"
#include "log.h"
#include "tls.h"

#define LS_HTTP_LISTENER_MT "luasrv.HttpListener"

typedef struct ls_http_listener_ud_s {
  ls_http_listener_t *listener; /* checked with ls_listener_alive before use */
  uint64_t id;                  /* the listener's id when the object was made */
  ls_gen_t *gen;
} listener_ud_t;

static double opt_seconds(lua_State *L, int opts, const char *name, uint64_t def_ms) {
  int64_t ms = ls_opt_timeout_field(L, opts, name, (int64_t)def_ms);
  return ms < 0 ? (double)UINT32_MAX * 1000.0 : (double)ms;
}

/* Reads the limits from a listen options table (DESIGN §4 defaults). */
static void read_limits(lua_State *L, int opts, ls_http_limits_t *lim) {
  lim->line_max = ls_opt_size_field(L, opts, "max_line", 8 * 1024);
  lim->header_max = ls_opt_size_field(L, opts, "max_header_size", 16 * 1024);
  lim->header_count = (unsigned)ls_opt_size_field(L, opts, "max_headers", 100);
  lim->body_max = ls_opt_size_field(L, opts, "max_body", 1024 * 1024);
  lim->header_timeout_ms = (uint64_t)opt_seconds(L, opts, "header_timeout", 10000);
  lim->keepalive_ms = (uint64_t)opt_seconds(L, opts, "keepalive_timeout", 5000);
  lim->write_timeout_ms = (uint64_t)opt_seconds(L, opts, "write_timeout", 30000);
  lim->body_timeout_ms = (uint64_t)opt_seconds(L, opts, "body_timeout", 30000);
  if (lim->header_count > LS_HTTP_MAX_HEADERS_LIMIT)
    luaL_error(L, "option 'max_headers' must be at most %d", LS_HTTP_MAX_HEADERS_LIMIT);
}

/* A listener struct with the limits from the options at `opts` (not yet linked anywhere). */
static ls_http_listener_t *listener_alloc(lua_State *L, ls_gen_t *gen, int opts) {
  ls_http_limits_t limits;
  ls_http_listener_t *l;
  ls_gzip_conf_t *gzip;
  read_limits(L, opts, &limits);
  gzip = ls_gzip_conf_read(L, opts);
  l = ls_malloc(sizeof *l);
  if (l == NULL) {
    ls_gzip_conf_free(gzip);
    luaL_error(L, "not enough memory");
  }
  memset(l, 0, sizeof *l);
  l->base.gen = gen;
  l->base.handler_ref = l->base.staged_ref = LUA_NOREF;
  l->limits = limits;
  l->gzip = gzip;
  l->hooks = &ls_http__lua_hooks;
  return l;
}

/* core.http_listen(opts, handler) -> listener. opts: host (default "127.0.0.1"), port (0: any
 * free port), backlog, and the limits max_line, max_header_size, max_headers, max_body,
 * header_timeout, keepalive_timeout, write_timeout. handler(req, res) runs in its own task for
 * each request. Raises if the address cannot be bound. */
static int l_http_listen(lua_State *L) {
  ls_gen_t *gen = lua_touserdata(L, lua_upvalueindex(1));
  ls_listen_opts_t lo;
  struct sockaddr_storage ss;
  int err;
  ls_http_listener_t *l;
  ls_listener_base_t *claimed;
  listener_ud_t *ud;
  ls_tls_ctx_t *tls;
  char key[160], where[200];
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_type(L, 2) != LUA_TFUNCTION) {
    if (!luaL_getmetafield(L, 2, "__call"))
      return luaL_typeerror(L, 2, "function or callable app");
    lua_pop(L, 1);
  }
  ls_listen_opts_read(L, 1, &lo);
  if (lo.path == NULL && ls_addr_parse(lo.host, lo.port, &ss) != 0)
    return luaL_error(L, "listen: '%s' is not an IP address", lo.host);
  lua_getfield(L, 1, "tls");
  tls = lua_isnil(L, -1) ? NULL : ls_tls_server_ctx(L, -1, 1);
  lua_pop(L, 1);
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->listener = NULL;
  ud->gen = gen;
  luaL_setmetatable(L, LS_HTTP_LISTENER_MT);
  ls_listen_opts_key(&lo, "http", key, sizeof key);
  claimed = ls_listener_claim(gen, key);
  if (claimed != NULL) {
    /* A reload listening where the running generation does: keep the socket (and its
     * limits), stage the new handler and certificates for ls_gen_commit. */
    lua_pushvalue(L, 2);
    claimed->staged_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    claimed->staged_gen = gen;
    claimed->staged_tls = tls;
    ud->listener = (ls_http_listener_t *)((char *)claimed - offsetof(ls_http_listener_t, base));
    ud->id = claimed->id;
    return 1;
  }
  l = listener_alloc(L, gen, 1);
  lua_pushvalue(L, 2);
  ls_listener_init(&l->base, gen, luaL_ref(L, LUA_REGISTRYINDEX), key, ls_http__listener_res_close);
  l->base.tls = tls; /* released with the listener */
  err = ls_listen_sock_open(&l->sock, gen->rt->loop, l, &lo, tls != NULL ? "https" : "http",
                            ls_http__listener_connection_cb, where, sizeof where);
  if (err != 0) {
    ls_http__listener_close(l);
    return luaL_error(L, "listen: cannot listen on %s: %s", where, ls_strerror(err));
  }
  ls_listen_sock_url(&l->sock, l->base.tls != NULL ? "https" : "http", l->url, sizeof l->url);
  ud->listener = l;
  ud->id = l->base.id;
  if (gen->rt->announce) {
    printf("listening on %s\n", l->url);
    fflush(stdout);
  }
  return 1;
}

/* The open listener behind the Lua object at argument 1, or NULL once it has closed. */
static ls_http_listener_t *http_check_listener(lua_State *L) {
  listener_ud_t *ud = luaL_checkudata(L, 1, LS_HTTP_LISTENER_MT);
  if (ud->listener == NULL || !ls_listener_alive(ud->gen->rt, &ud->listener->base, ud->id))
    return NULL;
  return ud->listener;
}

/* listener:close() -> true: stops accepting; requests in progress finish. */
static int l_http_listener_close(lua_State *L) {
  ls_http_listener_t *l = http_check_listener(L);
  if (l != NULL)
    ls_http__listener_close(l);
  lua_pushboolean(L, 1);
  return 1;
}

/* listener:address() -> host, port. */
static int l_http_listener_address(lua_State *L) {
  ls_http_listener_t *l = http_check_listener(L);
  int n = l != NULL ? ls_listen_sock_push_address(L, &l->sock) : 0;
  return n > 0 ? n : ls_push_error(L, LS_ECLOSED);
}

/* listener:url() -> "http://127.0.0.1:8080". */
static int l_http_listener_url(lua_State *L) {
  ls_http_listener_t *l = http_check_listener(L);
  if (l == NULL)
    return ls_push_error(L, LS_ECLOSED);
  lua_pushstring(L, l->url);
  return 1;
}

/* ---- in-process requests ------------------------------------------------------------------ */

typedef struct inject_s {
  ls_http_listener_t listener;
  ls_http_conn_t *conn;
} inject_t;

static int inject_k(lua_State *L, int status, lua_KContext ctx) {
  inject_t *in = (inject_t *)ctx;
  ls_http_conn_t *c = in->conn;
  ls_task_t *task = ls_task_current(in->listener.base.gen, L);
  (void)status;
  if (c->state != LS_HTTP_CLOSING || c->task != NULL) {
    /* A handler still runs (it waits for something): look again shortly. */
    return ls_task_wait(task, 1, ctx, inject_k);
  }
  lua_pushlstring(L, ls_buf_head(&c->s.out), ls_buf_len(&c->s.out));
  ls_http__close(c);
  /* No handles, so no close callbacks: free the buffers a stream would, then the struct. */
  ls_buf_free(&c->s.in);
  ls_buf_free(&c->s.out);
  ls_http__conn_free(c);
  luaL_unref(L, LUA_REGISTRYINDEX, in->listener.base.handler_ref);
  ls_free(in, sizeof *in);
  return 1;
}

/* core.http_inject(handler, request_bytes [, opts]) -> response_bytes. Runs the bytes through
 * the same parser, limits and handler machinery as a socket would, without one: the input is
 * treated as everything the client sends, then end of input. Must run in a task. */
static int l_http_inject(lua_State *L) {
  ls_gen_t *gen = lua_touserdata(L, lua_upvalueindex(1));
  size_t len;
  const char *bytes;
  inject_t *in;
  ls_http_conn_t *c;
  int opts = lua_istable(L, 3) ? 3 : 0;
  if (lua_type(L, 1) != LUA_TFUNCTION) {
    if (!luaL_getmetafield(L, 1, "__call"))
      return luaL_typeerror(L, 1, "function or callable app");
    lua_pop(L, 1);
  }
  bytes = luaL_checklstring(L, 2, &len);
  ls_task_check(gen, L, "inject");
  in = ls_malloc(sizeof *in);
  if (in == NULL)
    return luaL_error(L, "not enough memory");
  memset(in, 0, sizeof *in);
  in->listener.base.gen = gen;
  read_limits(L, opts, &in->listener.limits);
  in->listener.hooks = &ls_http__lua_hooks;
  lua_pushvalue(L, 1);
  in->listener.base.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* Not linked anywhere and never closed: inject_k frees it. */
  snprintf(in->listener.url, sizeof in->listener.url, "inject");
  c = ls_http__conn_new(&in->listener, 1);
  if (c == NULL || ls_buf_append(&c->s.in, bytes, len) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, in->listener.base.handler_ref);
    ls_free(in, sizeof *in);
    return luaL_error(L, "not enough memory");
  }
  in->conn = c;
  c->s.read_err = LS_EEOF;
  ls_http__process(c);
  lua_settop(L, 0);
  return inject_k(L, LUA_OK, (lua_KContext)in);
}

void ls_http_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg funcs[] = {{"http_listen", l_http_listen}, {"http_inject", l_http_inject},
                                   {NULL, NULL}};
  static const luaL_Reg meth[] = {{"close", l_http_listener_close}, {"address", l_http_listener_address},
                                  {"url", l_http_listener_url}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_HTTP_LISTENER_MT)) {
    lua_newtable(L);
    luaL_setfuncs(L, meth, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  ls_http__open_lua(L, gen);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
}
