/* The request object of the HTTP server (luasrv.Request): its fields (method, path, query,
 * headers, cookies, peer, scheme, tls...), read lazily from the connection's parsed head, and
 * its body (req:body, req:body_reader, req:json). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"
#include "http.h"
#include "json.h"
#include "tls.h"

/* ---- helpers ------------------------------------------------------------------------------ */

const char ls__req_tag = 0, ls__hdr_tag = 0;

static ls_http_req_ud_t *check_req(lua_State *L, int idx) {
  return ls_check_tagged(L, idx, &ls__req_tag, sizeof(ls_http_req_ud_t), LS_REQ_MT);
}

static ls_http_hdr_ud_t *check_headers(lua_State *L) {
  return ls_check_tagged(L, 1, &ls__hdr_tag, sizeof(ls_http_hdr_ud_t), LS_HEADERS_MT);
}

ls_http_conn_t *ls_http__req_conn(lua_State *L, int idx) {
  return check_req(L, idx)->c;
}

/* Pushes the field cache of the request r at idx (its first user value), creating it if
 * `create`. Returns 0 if there is none (nothing pushed). Whether it exists is kept in the
 * struct, so a read of a request without one costs no user value look-up. */
static int push_cache(lua_State *L, ls_http_req_ud_t *r, int idx, int create) {
  if (r->has_cache) {
    lua_getiuservalue(L, idx, LS_REQ_UV_CACHE);
    return 1;
  }
  if (!create)
    return 0;
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, LS_REQ_UV_CACHE);
  r->has_cache = 1;
  return 1;
}

/* Joins the values of every header named `name` (lower case) with ", " ("; " for cookie).
 * Returns the number pushed (0 or 1). */
static int push_header(lua_State *L, ls_http_conn_t *c, const char *name, size_t name_len) {
  const char *base = ls_buf_head(&c->head);
  const char *sep = name_len == 6 && memcmp(name, "cookie", 6) == 0 ? "; " : ", ";
  unsigned i, first;
  luaL_Buffer b;
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    if (h->name_len == name_len && memcmp(base + h->name_off, name, name_len) == 0)
      break;
  }
  if (i == c->nheaders)
    return 0;
  first = i;
  for (i = first + 1; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    if (h->name_len == name_len && memcmp(base + h->name_off, name, name_len) == 0)
      break;
  }
  if (i == c->nheaders) { /* the usual case: one field of that name */
    lua_pushlstring(L, base + c->headers[first].value_off, c->headers[first].value_len);
    return 1;
  }
  luaL_buffinit(L, &b);
  for (i = first; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    base = ls_buf_head(&c->head); /* luaL_Buffer may run the GC, never our buffers */
    if (h->name_len != name_len || memcmp(base + h->name_off, name, name_len) != 0)
      continue;
    if (i != first)
      luaL_addstring(&b, sep);
    luaL_addlstring(&b, base + h->value_off, h->value_len);
  }
  luaL_pushresult(&b);
  return 1;
}

static const char *lower_name(lua_State *L, int idx, char *buf, size_t size, size_t *len) {
  const char *s = luaL_checklstring(L, idx, len);
  size_t i;
  if (*len >= size)
    return NULL;
  for (i = 0; i < *len; i++)
    buf[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + ('a' - 'A')) : s[i];
  buf[*len] = '\0';
  return buf;
}

/* l_req_index's upvalues (push_headers_view runs in it too): the request methods table, method
 * names by llhttp's number + 1 (interned once: req.method hashes no string), and the
 * metatable of req.headers. */
#define UP_REQ_METHODS lua_upvalueindex(1)
#define UP_METHOD_NAMES lua_upvalueindex(2)
#define UP_HEADERS_MT lua_upvalueindex(3)

/* ---- headers view ------------------------------------------------------------------------- */

/* A table of every field: lower-case names, repeats joined (push_header's rules). */
static void push_headers_table(lua_State *L, ls_http_conn_t *c) {
  const char *base;
  unsigned i;
  lua_createtable(L, 0, (int)c->nheaders);
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    base = ls_buf_head(&c->head);
    lua_pushlstring(L, base + h->name_off, h->name_len);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lua_pop(L, 1);
      continue; /* already joined with its repeats */
    }
    lua_pop(L, 1);
    base = ls_buf_head(&c->head);
    lua_pushlstring(L, base + h->name_off, h->name_len);
    push_header(L, c, base + h->name_off, h->name_len);
    lua_rawset(L, -3);
  }
}

/* Pushes the request's req.headers (argument idx is the request): its view, made on first
 * use and kept in the request's second user value. */
static void push_headers_view(lua_State *L, int idx, ls_http_conn_t *c) {
  ls_http_hdr_ud_t *h;
  /* The current request's view, once made, is c->hdr_ud: without one there is nothing to
   * look up. */
  if (c == NULL || c->hdr_ud != NULL) {
    if (lua_getiuservalue(L, idx, LS_REQ_UV_HEADERS) == LUA_TUSERDATA)
      return;
    lua_pop(L, 1);
  }
  h = lua_newuserdatauv(L, sizeof *h, 1);
  h->tag = &ls__hdr_tag;
  h->c = c;
  if (c != NULL)
    c->hdr_ud = h;
  lua_pushvalue(L, UP_HEADERS_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, LS_REQ_UV_HEADERS);
}

/* headers[name]: a value assigned to the view, else the field's value (any case). */
static int l_headers_index(lua_State *L) {
  ls_http_hdr_ud_t *h = check_headers(L);
  char name[256];
  size_t len;
  if (lua_type(L, 2) != LUA_TSTRING || lower_name(L, 2, name, sizeof name, &len) == NULL)
    return 0;
  if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushlstring(L, name, len);
    switch (lua_rawget(L, -2)) {
    case LUA_TNIL:
      break;
    case LUA_TBOOLEAN: /* false: a field assigned nil, removed */
      return 0;
    default:
      return 1;
    }
  }
  if (h->c == NULL)
    return 0;
  return push_header(L, h->c, name, len);
}

/* headers[name] = value: kept for the rest of the request (nil removes the field). */
static int l_headers_newindex(lua_State *L) {
  char name[256];
  size_t len;
  check_headers(L);
  if (lower_name(L, 2, name, sizeof name, &len) == NULL)
    return luaL_argerror(L, 2, "header name too long");
  if (!lua_isnil(L, 3) && lua_type(L, 3) != LUA_TSTRING && lua_type(L, 3) != LUA_TNUMBER)
    return luaL_typeerror(L, 3, "string, number or nil");
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
  }
  lua_pushlstring(L, name, len);
  if (lua_isnil(L, 3))
    lua_pushboolean(L, 0);
  else
    lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* pairs(headers): next over a table of the fields as they are now (lower-case names). */
static int l_headers_pairs(lua_State *L) {
  ls_http_hdr_ud_t *h = check_headers(L);
  lua_pushvalue(L, lua_upvalueindex(1)); /* next */
  if (h->c != NULL)
    push_headers_table(L, h->c);
  else
    lua_newtable(L);
  if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      lua_pushvalue(L, -2);
      if (lua_type(L, -2) == LUA_TBOOLEAN)
        lua_pushnil(L);
      else
        lua_pushvalue(L, -2);
      lua_rawset(L, -6);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  return 3;
}

static int l_headers_tostring(lua_State *L) {
  lua_pushliteral(L, "luasrv.Headers");
  return 1;
}

/* ---- query and cookies -------------------------------------------------------------------- */

/* Pushes s[0..len) decoded as application/x-www-form-urlencoded ('+' is a space; a malformed
 * escape stays as it is). */
static void push_form_decoded(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < len; i++) {
    char ch = s[i];
    if (ch == '+') {
      ch = ' ';
    } else if (ch == '%' && i + 2 < len) {
      int hi = ls_http__hexval((unsigned char)s[i + 1]), lo = ls_http__hexval((unsigned char)s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        ch = (char)(hi * 16 + lo);
        i += 2;
      }
    }
    luaL_addchar(&b, ch);
  }
  luaL_pushresult(&b);
}

/* Parses "a=1&b=2&a=3" into t: a single value is a string, repeated keys a list of strings
 * (as ngx.req.get_uri_args does); a key without "=" is true. */
static void push_query_table(lua_State *L, const char *q, size_t len) {
  size_t pos = 0;
  lua_newtable(L);
  while (pos < len) {
    size_t end = pos, eq;
    while (end < len && q[end] != '&')
      end++;
    eq = pos;
    while (eq < end && q[eq] != '=')
      eq++;
    if (end > pos) {
      push_form_decoded(L, q + pos, eq - pos);
      if (eq < end)
        push_form_decoded(L, q + eq + 1, end - eq - 1);
      else
        lua_pushboolean(L, 1);
      lua_pushvalue(L, -2);
      switch (lua_rawget(L, -4)) {
      case LUA_TNIL:
        lua_pop(L, 1);
        lua_rawset(L, -3);
        break;
      case LUA_TTABLE: /* already a list: append */
        lua_insert(L, -2);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        lua_pop(L, 2);
        break;
      default: /* second value: make a list of both */
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 2);
        lua_rawset(L, -3);
        break;
      }
    }
    pos = end + 1;
  }
}

static void push_cookies_table(lua_State *L, ls_http_conn_t *c) {
  const char *s;
  size_t len, pos = 0;
  lua_newtable(L);
  if (!push_header(L, c, "cookie", 6))
    return;
  s = lua_tolstring(L, -1, &len);
  while (pos < len) {
    size_t start, end, eq;
    while (pos < len && (s[pos] == ' ' || s[pos] == ';'))
      pos++;
    start = pos;
    while (pos < len && s[pos] != ';')
      pos++;
    end = pos;
    while (end > start && s[end - 1] == ' ')
      end--;
    eq = start;
    while (eq < end && s[eq] != '=')
      eq++;
    if (eq < end && eq > start) {
      size_t vs = eq + 1, ve = end;
      if (ve - vs >= 2 && s[vs] == '"' && s[ve - 1] == '"') {
        vs++;
        ve--;
      }
      lua_pushlstring(L, s + start, eq - start);
      lua_pushlstring(L, s + vs, ve - vs);
      lua_rawset(L, -4);
    }
  }
  lua_pop(L, 1);
}

/* ---- request ------------------------------------------------------------------------------ */

static void target_parts(ls_http_conn_t *c, const char **path, size_t *path_len, const char **query,
                         size_t *query_len) {
  const char *t = ls_buf_head(&c->head);
  size_t n = c->url_len, i = 0, q;
  if (n > 0 && t[0] != '/' && t[0] != '*') {
    /* absolute-form: skip scheme and authority */
    const char *sep = memchr(t, ':', n);
    i = sep != NULL ? (size_t)(sep - t) + 3 : 0;
    while (i < n && t[i] != '/' && t[i] != '?')
      i++;
  }
  q = i;
  while (q < n && t[q] != '?' && t[q] != '#')
    q++;
  *path = t + i;
  *path_len = q - i;
  if (q < n && t[q] == '?') {
    size_t e = q + 1;
    while (e < n && t[e] != '#')
      e++;
    *query = t + q + 1;
    *query_len = e - q - 1;
  } else {
    *query = "";
    *query_len = 0;
  }
}

/* Compares the looked-up key (key, klen) with a literal, length first. */
#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, sizeof(lit) - 1) == 0)

static int l_req_index(lua_State *L) {
  ls_http_req_ud_t *r = check_req(L, 1);
  ls_http_conn_t *c = r->c;
  const char *key;
  size_t klen;
  if (push_cache(L, r, 1, 0)) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
      return 1;
    lua_pop(L, 2);
  }
  key = lua_tolstring(L, 2, &klen);
  if (key == NULL || lua_type(L, 2) != LUA_TSTRING)
    return 0;
  if (KEY_IS("params")) {
    /* The route's parameters (also once the request ended), or a table of none made on first
     * read. */
    if (lua_getiuservalue(L, 1, LS_REQ_UV_PARAMS) != LUA_TNIL)
      return 1;
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, LS_REQ_UV_PARAMS);
    return 1;
  }
  if (c != NULL) {
    const char *path, *query;
    size_t path_len, query_len;
    switch (key[0]) {
    case 'm':
      if (KEY_IS("method")) {
        lua_rawgeti(L, UP_METHOD_NAMES, c->parser.method + 1);
        return 1;
      }
      break;
    case 'p':
      if (KEY_IS("path")) {
        lua_pushlstring(L, ls_buf_head(&c->head) + c->path_off, c->path_len);
        return 1;
      }
      if (KEY_IS("peer")) {
        char host[INET6_ADDRSTRLEN];
        ls_http__peer_name(c, host, sizeof host, "127.0.0.1"); /* virtual: a local test */
        lua_pushstring(L, host);
        return 1;
      }
      break;
    case 'r':
      if (KEY_IS("raw_path")) {
        target_parts(c, &path, &path_len, &query, &query_len);
        lua_pushlstring(L, path, path_len);
        return 1;
      }
      break;
    case 't':
      if (KEY_IS("target")) {
        lua_pushlstring(L, ls_buf_head(&c->head), c->url_len);
        return 1;
      }
      if (KEY_IS("tls")) {
        ls_tls_push_info(L, &c->s); /* nil on a plain connection */
        return 1;
      }
      break;
    case 's':
      if (KEY_IS("scheme")) {
        if (c->s.tls != NULL)
          lua_pushliteral(L, "https");
        else
          lua_pushliteral(L, "http");
        return 1;
      }
      break;
    case 'q':
      if (KEY_IS("query") || KEY_IS("query_string")) {
        target_parts(c, &path, &path_len, &query, &query_len);
        if (key[5] == '_') {
          lua_pushlstring(L, query, query_len);
          return 1;
        }
        push_cache(L, r, 1, 1);
        push_query_table(L, query, query_len);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "query");
        return 1;
      }
      break;
    case 'h':
      if (KEY_IS("headers")) {
        push_headers_view(L, 1, c);
        return 1;
      }
      break;
    case 'c':
      if (KEY_IS("cookies")) {
        push_cache(L, r, 1, 1);
        push_cookies_table(L, c);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "cookies");
        return 1;
      }
      break;
    case 'v':
      if (KEY_IS("version")) {
        lua_pushstring(L, c->parser.http_minor == 0 ? "1.0" : "1.1");
        return 1;
      }
      break;
    default:
      break;
    }
  }
  if (c == NULL && KEY_IS("headers")) {
    push_headers_view(L, 1, NULL); /* ended before it was read: a view of nothing */
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, UP_REQ_METHODS);
  return 1;
}

/* req.x = v stores a field of the request (middleware data, params set by the router: those
 * in their own user value, where the core's routing puts them too). */
static int l_req_newindex(lua_State *L) {
  size_t klen;
  const char *key;
  ls_http_req_ud_t *r = check_req(L, 1);
  key = lua_tolstring(L, 2, &klen);
  if (key != NULL && lua_type(L, 2) == LUA_TSTRING && KEY_IS("params")) {
    lua_settop(L, 3);
    lua_setiuservalue(L, 1, LS_REQ_UV_PARAMS);
    return 0;
  }
  push_cache(L, r, 1, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* req:header(name) -> the value (repeats joined with ", "), or nil. */
static int l_req_header(lua_State *L) {
  ls_http_conn_t *c = ls_http__req_conn(L, 1);
  char name[256];
  size_t len;
  if (lower_name(L, 2, name, sizeof name, &len) == NULL || c == NULL)
    return 0;
  return push_header(L, c, name, len) ? 1 : 0;
}

/* req:header_values(name) -> a list of each field's value, in order. */
static int l_req_header_values(lua_State *L) {
  ls_http_conn_t *c = ls_http__req_conn(L, 1);
  char name[256];
  size_t len;
  unsigned i;
  int n = 0;
  lua_newtable(L);
  if (lower_name(L, 2, name, sizeof name, &len) == NULL || c == NULL)
    return 1;
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    const char *base = ls_buf_head(&c->head);
    if (h->name_len == len && memcmp(base + h->name_off, name, len) == 0) {
      lua_pushlstring(L, base + h->value_off, h->value_len);
      lua_rawseti(L, -2, ++n);
    }
  }
  return 1;
}

/* Raises the status the server must answer with after the request body failed (too large,
 * malformed); the handler's task ends and the connection answers with that status. */
static int body_failed(lua_State *L, ls_http_conn_t *c) {
  return luaL_error(L, "request body rejected with status %d", c->reject_status);
}

static int body_k(lua_State *L, int status, lua_KContext ctx) {
  ls_http_req_ud_t *ud = check_req(L, 1);
  ls_http_conn_t *c = ud->c;
  ls_task_t *task;
  (void)status;
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  task = ls_task_check(c->gen, L, "body");
  if (c->body_waiter == task)
    c->body_waiter = NULL;
  if (ls_task_take_timeout(task) && c->reject_status == 0) {
    /* The client stopped sending its body: 408, as for a head that does not come. */
    c->reject_status = 408;
    c->parse_failed = 1;
    c->keep_alive = 0;
  }
  if (c->reject_status != 0)
    return body_failed(L, c);
  if (ctx == 1 && ls_buf_len(&c->body) > 0) {
    /* body_reader: hand over what arrived */
    lua_pushlstring(L, ls_buf_head(&c->body), ls_buf_len(&c->body));
    ls_buf_consume(&c->body, ls_buf_len(&c->body));
    return 1;
  }
  if (c->msg_done) {
    if (ctx == 1)
      return 0;
    lua_pushlstring(L, ls_buf_head(&c->body), ls_buf_len(&c->body));
    return 1;
  }
  if (c->parse_failed || c->closing)
    return ls_push_error(L, LS_ECLOSED);
  if (c->body_waiter != NULL && c->body_waiter != task)
    return luaL_error(L, "body: another task is already reading this request's body");
  c->body_waiter = task;
  ls_http__want_body(c);
  if (c->body_waiter == NULL || c->msg_done || c->reject_status != 0 ||
      (ctx == 1 && ls_buf_len(&c->body) > 0)) {
    c->body_waiter = NULL;
    return body_k(L, LUA_OK, ctx);
  }
  return ls_task_wait(task, (int64_t)c->listener->limits.body_timeout_ms, ctx, body_k);
}

/* req:body() -> the whole request body (at most the listener's max_body; more answers 413). */
static int l_req_body(lua_State *L) {
  lua_settop(L, 1);
  return body_k(L, LUA_OK, 0);
}

static int body_reader_iter(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  return body_k(L, LUA_OK, 1);
}

/* req:body_reader() -> an iterator over the body's pieces as they arrive. */
static int l_req_body_reader(lua_State *L) {
  check_req(L, 1);
  lua_settop(L, 1);
  lua_pushcclosure(L, body_reader_iter, 1);
  return 1;
}

static int json_k(lua_State *L, int status, lua_KContext ctx) {
  size_t len;
  const char *body;
  (void)status;
  (void)ctx;
  /* stack: req, body | nil, err... */
  if (lua_type(L, 2) != LUA_TSTRING)
    return lua_gettop(L) - 1;
  body = lua_tolstring(L, 2, &len);
  return ls_json_decode(L, body, len);
}

static int json_body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return json_k(L, LUA_OK, ctx);
}

/* req:json() -> the body decoded by srv.json, or nil, message for a malformed one. */
static int l_req_json(lua_State *L) {
  check_req(L, 1);
  lua_settop(L, 1);
  lua_pushcfunction(L, l_req_body);
  lua_pushvalue(L, 1);
  lua_callk(L, 1, LUA_MULTRET, 0, json_body_k);
  return json_k(L, LUA_OK, 0);
}

static int l_req_tostring(lua_State *L) {
  ls_http_conn_t *c = ls_http__req_conn(L, 1);
  if (c == NULL)
    lua_pushliteral(L, "luasrv.Request (ended)");
  else
    lua_pushfstring(L, "luasrv.Request (%s %s)",
                    llhttp_method_name((llhttp_method_t)c->parser.method),
                    lua_pushlstring(L, ls_buf_head(&c->head), c->url_len));
  return 1;
}


void ls_http__request_open(lua_State *L) {
  static const luaL_Reg req_meth[] = {{"header", l_req_header},
                                      {"header_values", l_req_header_values},
                                      {"body", l_req_body},
                                      {"body_reader", l_req_body_reader},
                                      {"json", l_req_json},
                                      {NULL, NULL}};
  static const luaL_Reg req_metameth[] = {{"__newindex", l_req_newindex},
                                          {"__tostring", l_req_tostring},
                                          {NULL, NULL}};
  static const luaL_Reg hdr_metameth[] = {{"__index", l_headers_index},
                                          {"__newindex", l_headers_newindex},
                                          {"__tostring", l_headers_tostring},
                                          {NULL, NULL}};
  int m;
  if (luaL_newmetatable(L, LS_HEADERS_MT)) {
    luaL_setfuncs(L, hdr_metameth, 0);
    lua_getglobal(L, "next");
    lua_pushcclosure(L, l_headers_pairs, 1);
    lua_setfield(L, -2, "__pairs");
  }
  lua_newtable(L);
  luaL_setfuncs(L, req_meth, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LS_REQ_METHODS_KEY);
  lua_createtable(L, HTTP_FLUSH + 1, 0); /* HTTP_FLUSH: llhttp's last method */
  for (m = 0; m <= HTTP_FLUSH; m++) {
    lua_pushstring(L, llhttp_method_name((llhttp_method_t)m));
    lua_rawseti(L, -2, m + 1);
  }
  lua_rotate(L, -3, -1); /* methods, names, headers metatable: l_req_index's upvalues */
  luaL_newmetatable(L, LS_REQ_MT);
  luaL_setfuncs(L, req_metameth, 0);
  lua_insert(L, -4);
  lua_pushcclosure(L, l_req_index, 3);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
