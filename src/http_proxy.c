/* The relay under srv.http.proxy (lua/luasrv/http_proxy.lua): forwards the current request of
 * a server connection over a client connection (a luasrv.Conn from the pool) and sends the
 * answer back as it arrives. The request head is written from the parsed request's fields,
 * the answer parsed by the client's response parser (src/http_client.c) and written through
 * the response's streaming path (src/http_response.c); no byte passes through Lua, and the
 * handler's task waits in C (as conn:read waits) for the upstream's input or for the client
 * to take its output. Lua keeps the pool, the options and the retry.
 *
 * core.http_relay(pool, conn, req, res, host, prefix, headers, body, flags, timeout_ms)
 *   -> true                        the whole answer is relayed (queued for the client)
 *   -> false, "body"               the request has a body: call again with it (req:body())
 *   -> false, "connect"            no idle connection in the pool (or a fresh one is asked
 *                                  for): call again with a new one as `conn`
 *   -> nil, message, code, retryable, fatal
 * `pool` is a luasrv.HTTPPool (src/http_pool.c). With conn nil, an idle connection is taken
 * from it; whatever the outcome, the connection goes back to the pool or is closed before the
 * call returns.
 * retryable: nothing of an answer came on a reused connection that had been closed (the
 * method decides whether to try again); fatal: the answer's head is already out, so the
 * response can only be aborted, or the headers option was wrong (the caller raises).
 * The connection keeps its response parser in its user value, made on its first relay. */
#include <lauxlib.h>
#include <string.h>

#include "errors.h"
#include "http.h"
#include "http_client.h"
#include "tcp_internal.h"

/* flags (from Lua) and the continuation's context bits. */
#define RELAY_REUSED 1      /* the connection came from the pool */
#define RELAY_XFF 2         /* append the client's address to X-Forwarded-For */
#define RELAY_KEEP_HOST 4   /* send the client's Host instead of the upstream's */
#define RELAY_FRESH 8       /* a new connection is wanted (a retry): none from the pool */
#define RELAY_GOT_BYTES 16  /* some of an answer arrived */

/* The arguments' stack indexes; the connection's parser goes at A_PARSER. */
enum { A_POOL = 1, A_CONN, A_REQ, A_RES, A_HOST, A_PREFIX, A_HEADERS, A_BODY, A_FLAGS,
       A_TIMEOUT, A_PARSER };

/* Whether s[0..n) is `lower` (ASCII, any case). */
static int ieq(const char *s, size_t n, const char *lower, size_t lower_len) {
  size_t i;
  if (n != lower_len)
    return 0;
  for (i = 0; i < n; i++)
    if ((s[i] | 0x20) != lower[i] && s[i] != lower[i])
      return 0;
  return 1;
}

/* Hop-by-hop fields (RFC 9110 §7.6.1), which belong to one connection, and the framing
 * fields the relay writes itself. Names arrive in lower case. */
static int hop_by_hop(const char *name, size_t n) {
  switch (n) {
  case 2:
    return memcmp(name, "te", 2) == 0;
  case 7:
    return memcmp(name, "trailer", 7) == 0 || memcmp(name, "upgrade", 7) == 0;
  case 10:
    return memcmp(name, "connection", 10) == 0 || memcmp(name, "keep-alive", 10) == 0;
  case 14:
    return memcmp(name, "content-length", 14) == 0;
  case 16:
    return memcmp(name, "proxy-connection", 16) == 0;
  case 17:
    return memcmp(name, "transfer-encoding", 17) == 0;
  default:
    return 0;
  }
}

/* Whether `name` is one of the comma-separated options of the Connection fields among
 * fields[0..n) (which then name more hop-by-hop fields). */
static int named_by_connection(const char *base, const ls_http_header_t *fields, unsigned n,
                               const char *name, size_t name_len) {
  unsigned i;
  for (i = 0; i < n; i++) {
    const char *v, *end;
    if (fields[i].name_len != 10 || memcmp(base + fields[i].name_off, "connection", 10) != 0)
      continue;
    v = base + fields[i].value_off;
    end = v + fields[i].value_len;
    while (v < end) {
      const char *tok;
      while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
        v++;
      tok = v;
      while (v < end && *v != ',' && *v != ' ' && *v != '\t')
        v++;
      if (v > tok && ieq(tok, (size_t)(v - tok), name, name_len))
        return 1;
    }
  }
  return 0;
}

/* Whether the fields say Connection at all (most requests do not: the scan is skipped). */
static int has_connection(const char *base, const ls_http_header_t *fields, unsigned n) {
  unsigned i;
  for (i = 0; i < n; i++)
    if (fields[i].name_len == 10 && memcmp(base + fields[i].name_off, "connection", 10) == 0)
      return 1;
  return 0;
}

static size_t trimmed(const char *v, size_t n) {
  while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
    n--;
  return n;
}

static int append_field(ls_buf_t *b, const char *name, size_t nlen, const char *value,
                        size_t vlen) {
  char *p;
  if (ls_buf_reserve(b, nlen + vlen + 4) != 0)
    return -1;
  p = b->data + b->end;
  memcpy(p, name, nlen);
  memcpy(p + nlen, ": ", 2);
  memcpy(p + nlen + 2, value, vlen);
  memcpy(p + nlen + 2 + vlen, "\r\n", 2);
  b->end += nlen + vlen + 4;
  return 0;
}

/* Whether the caller's headers table (at A_HEADERS, or none) names the field: lower-case
 * names are looked up as they are, so the table's keys are expected in lower case (the
 * wrapper lowers them once). */
static int overridden(lua_State *L, const char *name, size_t nlen) {
  int t;
  if (lua_isnil(L, A_HEADERS))
    return 0;
  lua_pushlstring(L, name, nlen);
  t = lua_rawget(L, A_HEADERS);
  lua_pop(L, 1);
  return t != LUA_TNIL;
}

/* Appends the caller's headers (name = value, a list of values, or false for none); a bad
 * name or value gives the message, else NULL. */
static const char *append_own_headers(lua_State *L, ls_buf_t *b) {
  if (lua_isnil(L, A_HEADERS))
    return NULL;
  lua_pushnil(L);
  while (lua_next(L, A_HEADERS) != 0) {
    size_t nlen, vlen;
    const char *name, *value;
    lua_Integer i, n = 1;
    int list = lua_type(L, -1) == LUA_TTABLE;
    if (lua_type(L, -2) != LUA_TSTRING)
      return "proxy: header names must be strings";
    name = lua_tolstring(L, -2, &nlen);
    if (!ls_http__valid_name(name, nlen))
      return lua_pushfstring(L, "proxy: invalid header name '%s'", name);
    if (list)
      n = (lua_Integer)lua_rawlen(L, -1);
    else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
      n = 0;
    for (i = 1; i <= n; i++) {
      if (list)
        lua_rawgeti(L, -1, i);
      else
        lua_pushvalue(L, -1);
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        return lua_pushfstring(L, "proxy: header '%s': value must be a string or a number",
                               name);
      value = lua_tolstring(L, -1, &vlen);
      if (!ls_http__valid_value(value, vlen))
        return lua_pushfstring(L, "proxy: header '%s': value contains CR, LF or NUL", name);
      if (append_field(b, name, nlen, value, vlen) != 0)
        return "proxy: not enough memory";
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  return NULL;
}

/* The request head (and body) for the upstream, appended to b. */
static const char *build_request(lua_State *L, ls_http_conn_t *c, ls_buf_t *b, int flags) {
  const char *base = ls_buf_head(&c->head), *method;
  const char *prefix, *host, *xff = NULL, *body;
  size_t prefix_len = 0, host_len, xff_len = 0, body_len = 0;
  int conn_listed = has_connection(base, c->headers, c->nheaders);
  unsigned i;
  char peer[64], num[32];
  method = llhttp_method_name((llhttp_method_t)c->parser.method);
  prefix = lua_tolstring(L, A_PREFIX, &prefix_len);
  if (prefix == NULL || base[0] != '/')
    prefix_len = 0;
  host = lua_tolstring(L, A_HOST, &host_len);
  body = lua_tolstring(L, A_BODY, &body_len);
  if (ls_buf_append(b, method, strlen(method)) != 0 || ls_buf_append(b, " ", 1) != 0 ||
      (prefix_len > 0 && ls_buf_append(b, prefix, prefix_len) != 0) ||
      ls_buf_append(b, base, c->url_len) != 0 || ls_buf_append(b, " HTTP/1.1\r\n", 11) != 0)
    return "proxy: not enough memory";
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *f = &c->headers[i];
    const char *name = base + f->name_off, *value = base + f->value_off;
    size_t nlen = f->name_len, vlen = trimmed(value, f->value_len);
    if (hop_by_hop(name, nlen) || (nlen == 6 && memcmp(name, "expect", 6) == 0))
      continue;
    if (nlen == 4 && memcmp(name, "host", 4) == 0) {
      if (flags & RELAY_KEEP_HOST)
        host = value, host_len = vlen;
      continue;
    }
    if ((flags & RELAY_XFF) && nlen == 15 && memcmp(name, "x-forwarded-for", 15) == 0) {
      xff = value, xff_len = vlen; /* (the last one: repeated fields are unusual here) */
      continue;
    }
    if ((conn_listed && named_by_connection(base, c->headers, c->nheaders, name, nlen)) ||
        overridden(L, name, nlen))
      continue;
    if (append_field(b, name, nlen, value, vlen) != 0)
      return "proxy: not enough memory";
  }
  if (host != NULL && !overridden(L, "host", 4) && append_field(b, "Host", 4, host, host_len) != 0)
    return "proxy: not enough memory";
  if ((flags & RELAY_XFF) && !overridden(L, "x-forwarded-for", 15)) {
    ls_http__peer_name(c, peer, sizeof peer, "unknown");
    if (ls_buf_append(b, "X-Forwarded-For: ", 17) != 0 ||
        (xff_len > 0 && (ls_buf_append(b, xff, xff_len) != 0 || ls_buf_append(b, ", ", 2) != 0)) ||
        ls_buf_append(b, peer, strlen(peer)) != 0 || ls_buf_append(b, "\r\n", 2) != 0)
      return "proxy: not enough memory";
  }
  {
    const char *why = append_own_headers(L, b);
    if (why != NULL)
      return why;
  }
  if (body != NULL) {
    int n = snprintf(num, sizeof num, "Content-Length: %zu\r\n", body_len);
    if (ls_buf_append(b, num, (size_t)n) != 0)
      return "proxy: not enough memory";
  }
  if (ls_buf_append(b, "\r\n", 2) != 0 || (body_len > 0 && ls_buf_append(b, body, body_len) != 0))
    return "proxy: not enough memory";
  return NULL;
}

int ls_http__relay_fields(const char *base, const ls_http_header_t *fields, unsigned n,
                          int chunked, ls_buf_t *out, unsigned char *has_clen) {
  int conn_listed = has_connection(base, fields, n);
  unsigned i;
  for (i = 0; i < n; i++) {
    const ls_http_header_t *f = &fields[i];
    const char *name = base + f->name_off, *value = base + f->value_off;
    size_t nlen = f->name_len, vlen = trimmed(value, f->value_len);
    if (nlen == 14 && memcmp(name, "content-length", 14) == 0) {
      if (chunked)
        continue;
      *has_clen = 1;
    } else if (hop_by_hop(name, nlen) || (nlen == 4 && memcmp(name, "date", 4) == 0) ||
               (nlen == 6 && memcmp(name, "server", 6) == 0) ||
               (conn_listed && named_by_connection(base, fields, n, name, nlen))) {
      continue;
    }
    if (append_field(out, name, nlen, value, vlen) != 0)
      return -1;
  }
  return 0;
}

/* The answer's head as the response's (see ls_http__relay_fields), written with the status. */
static int relay_head(ls_http_conn_t *c, ls_hcp_t *h) {
  if (h->status > 599)
    return -1;
  c->status = h->status;
  c->has_ctype = 1; /* none from the upstream means none: no default type is added */
  if (ls_http__relay_fields(ls_buf_head(&h->head), h->headers, h->ntrailer_start,
                            (h->parser.flags & F_CHUNKED) != 0, &c->res_headers,
                            &c->has_clen) != 0)
    return -1;
  ls_http__stream_head(c);
  return 0;
}

/* nil, message, code, retryable, fatal; the connection is closed. */
static int relay_fail(lua_State *L, const char *msg, const char *code, int retryable,
                      int fatal) {
  if (lua_touserdata(L, A_CONN) != NULL) {
    ls_http_pool_put(L, A_POOL, A_CONN, 0);
    lua_pushnil(L);
    lua_replace(L, A_CONN);
  }
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  lua_pushboolean(L, retryable);
  lua_pushboolean(L, fatal);
  return 5;
}

static int relay_error(lua_State *L, ls_conn_t *up, ls_http_conn_t *c, int err, int ctx) {
  int retryable = (ctx & RELAY_REUSED) && !(ctx & RELAY_GOT_BYTES) &&
                  (err == LS_EEOF || err == UV_ECONNRESET || err == UV_EPIPE);
  const char *msg = err == LS_ETLS && up != NULL ? ls_tls_error(&up->s) : ls_strerror(err);
  return relay_fail(L, msg, ls_err_name(err), retryable, c != NULL && c->head_sent);
}

static int relay_bad(lua_State *L, ls_http_conn_t *c, ls_hcp_t *h, llhttp_errno_t err) {
  lua_pushfstring(L, "bad response: %s", ls_hcp_error(h, err));
  return relay_fail(L, lua_tostring(L, -1), "EPROTO", 0, c->head_sent);
}

static int relay_k(lua_State *L, int status, lua_KContext kctx);

/* Takes what the upstream sent, passes it on, and waits for more or returns. */
static int relay_step(lua_State *L, ls_task_t *task, ls_conn_t *up, ls_hcp_t *h,
                      ls_http_conn_t *c, int ctx) {
  ls_buf_t *in;
  if (c == NULL || c->closing)
    return relay_fail(L, "client closed", "ECLOSED", 0, 0);
  if (up == NULL || up->closed)
    return relay_error(L, up, c, LS_ECLOSED, ctx);
  in = &up->s.in;
  if (ls_buf_len(in) > 0 && !h->msg_done) {
    size_t len = ls_buf_len(in), used;
    llhttp_errno_t err;
    ctx |= RELAY_GOT_BYTES;
    err = ls_hcp_feed(h, ls_buf_head(in), len);
    used = h->msg_done ? len - h->extra : len;
    ls_buf_consume(in, used);
    if (err != HPE_OK)
      return relay_bad(L, c, h, err);
    if (h->head_done && !c->head_sent && relay_head(c, h) != 0) {
      lua_pushfstring(L, "bad response: status %d", h->status);
      return relay_fail(L, lua_tostring(L, -1), "EPROTO", 0, 0);
    }
    if (ls_buf_len(&h->body) > 0) {
      if (!c->is_head &&
          ls_http__stream_piece(c, ls_buf_head(&h->body), ls_buf_len(&h->body), 0) != 0)
        return relay_error(L, up, c, LS_ENOMEM, ctx);
      c->bytes_out += ls_buf_len(&h->body);
      ls_buf_consume(&h->body, ls_buf_len(&h->body));
    }
  }
  if (!h->msg_done && ls_buf_len(in) == 0 && up->s.read_err != 0) {
    if (up->s.read_err == LS_EEOF && (ctx & RELAY_GOT_BYTES)) {
      llhttp_errno_t err = ls_hcp_finish(h); /* a close-delimited body ends here */
      if (err != HPE_OK)
        return relay_bad(L, c, h, err);
    } else {
      return relay_error(L, up, c, up->s.read_err, ctx);
    }
  }
  if (h->msg_done) {
    /* Left for the handler's end to send (with the last chunk): one write per answer. */
    ls_http_pool_put(L, A_POOL, A_CONN, h->keep_alive && !h->failed);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (up->s.write_err != 0 && !(ctx & RELAY_GOT_BYTES))
    return relay_error(L, up, c, up->s.write_err, ctx);
  if (c->head_sent) {
    ls_http__flush(c);
    if (c->closing)
      return relay_fail(L, "client closed", "ECLOSED", 0, 0);
    if (ls_stream_unsent(&c->s) > LS_HTTP_WRITE_HIWAT) {
      /* The client reads slower than the upstream sends: stop reading it until it catches
       * up (the write timeout closes a client that takes nothing, which wakes us). */
      c->writer = task;
      return ls_task_wait(task, -1, ctx, relay_k);
    }
  }
  up->reader = task;
  up->want = 1;
  ls__tcp_conn_want_input(up);
  if (up->is_client)
    uv_ref(&up->s.u.handle);
  return ls_task_wait(task, (int64_t)lua_tointeger(L, A_TIMEOUT), ctx, relay_k);
}

static int relay_k(lua_State *L, int status, lua_KContext kctx) {
  conn_ud_t *cud = lua_touserdata(L, A_CONN);
  ls_http_req_ud_t *rud = lua_touserdata(L, A_REQ);
  ls_task_t *task = ls_task_current(cud->gen, L);
  ls_conn_t *up = cud->conn;
  ls_http_conn_t *c = rud->c;
  int ctx = (int)kctx;
  (void)status;
  if (up != NULL && up->reader == task) {
    up->reader = NULL;
    if (up->is_client)
      uv_unref(&up->s.u.handle);
  }
  if (c != NULL && c->writer == task)
    c->writer = NULL;
  if (task != NULL && ls_task_take_timeout(task))
    return relay_fail(L, "timeout", "ETIMEDOUT", 0, c != NULL && c->head_sent);
  return relay_step(L, task, up, lua_touserdata(L, A_PARSER), c, ctx);
}

/* Whether the request has a body (a length above 0, or chunked). */
static int has_body(const ls_http_conn_t *c) {
  return (c->parser.flags & F_CHUNKED) ||
         ((c->parser.flags & F_CONTENT_LENGTH) && (c->parser.content_length > 0 || c->body_seen > 0));
}

static int l_http_relay(lua_State *L) {
  ls_http_conn_t *c = ls_http__req_conn(L, A_REQ);
  ls_http_res_ud_t *res = ls_check_tagged(L, A_RES, &ls__res_tag, sizeof *res, LS_RES_MT);
  int flags = (int)luaL_checkinteger(L, A_FLAGS);
  conn_ud_t *cud;
  ls_hcp_t *h;
  ls_conn_t *up;
  ls_task_t *task;
  const char *why;
  ls_check_class_at(L, A_POOL, 2, LS_HTTP_POOL_MT);
  luaL_checkinteger(L, A_TIMEOUT);
  lua_settop(L, A_TIMEOUT);
  if (c == NULL || c->closing)
    return relay_fail(L, "client closed", "ECLOSED", 0, 0);
  if (res->c != c)
    return luaL_argerror(L, A_RES, "not the response of this request");
  if (c->answered || c->head_sent) {
    luaL_where(L, 2); /* the caller of srv.http.proxy, not its Lua side */
    lua_pushliteral(L, "proxy: the response has already been sent");
    lua_concat(L, 2);
    return lua_error(L);
  }
  task = ls_task_check(c->gen, L, "proxy");
  if (lua_isnil(L, A_BODY) && has_body(c)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "body");
    return 2;
  }
  flags &= RELAY_XFF | RELAY_KEEP_HOST | RELAY_FRESH;
  if (lua_isnil(L, A_CONN)) {
    if ((flags & RELAY_FRESH) || !ls_http_pool_take(L, A_POOL)) {
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "connect");
      return 2;
    }
    lua_replace(L, A_CONN);
    flags |= RELAY_REUSED;
  }
  cud = ls_check_class_at(L, A_CONN, 1, LS_CONN_MT);
  up = cud->conn;
  if (lua_getiuservalue(L, A_CONN, LS_CONN_UV_PARSER) == LUA_TUSERDATA) {
    h = lua_touserdata(L, A_PARSER);
  } else {
    lua_pop(L, 1);
    h = ls_hcp_push_new(L);
    lua_pushvalue(L, A_PARSER);
    lua_setiuservalue(L, A_CONN, LS_CONN_UV_PARSER);
  }
  if (up == NULL || up->closed)
    return relay_error(L, up, c, LS_ECLOSED, flags);
  why = build_request(L, c, &up->s.out, flags);
  if (why != NULL) {
    ls_buf_consume(&up->s.out, ls_buf_len(&up->s.out));
    return relay_fail(L, why, "EINVAL", 0, 1);
  }
  ls_hcp_start(h, c->is_head, UINT64_MAX);
  ls_stream_flush(&up->s);
  return relay_step(L, task, up, h, c, flags);
}

void ls_http_proxy_open(lua_State *L) {
  luaL_getmetatable(L, LS_CONN_MT);
  luaL_getmetatable(L, LS_HTTP_POOL_MT);
  lua_pushcclosure(L, l_http_relay, 2);
  lua_setfield(L, -2, "http_relay");
}
