#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/sendfile.h>
#define LS_HAVE_SENDFILE 1 /* Linux's sendfile(2): from a file to a socket, in the kernel */
#else
#define LS_HAVE_SENDFILE 0
#endif

#include "errors.h"
#include "fs.h"
#include "http.h"
#include "json.h"
#include "tls.h"
#include "log.h"

#define LS_REQ_MT "luasrv.Request"
#define LS_RES_MT "luasrv.Response"
#define LS_HEADERS_MT "luasrv.Headers"
#define LS_REQ_METHODS_KEY "luasrv.Request.methods"
/* res:write yields while more than this waits to be sent. */
#define LS_HTTP_WRITE_HIWAT (64 * 1024)

/* The Lua objects point at their connection while the request is current; at its end the
 * pointer is cleared, so a kept reference answers nil, "closed" and never touches a later
 * request's data. They need no finaliser: the handler's task holds them until the request
 * ends, and the end clears both links. Objects with __gc cost every minor collection of the
 * generational collector a walk, so two per request would be a steady price. */
struct ls_http_req_ud_s {
  ls_http_conn_t *c;
};
struct ls_http_res_ud_s {
  ls_http_conn_t *c;
};

/* Registry keys of the two metatables (a light userdata key is found without hashing a
 * name). The function each request's task starts with, http_task_body, is a closure over what
 * it needs on every request, kept in the registry under gen->http_task_ref. */
static const char req_mt_key, res_mt_key;

/* http_task_body's upvalues. */
#define UP_ROUTES lua_upvalueindex(1)  /* the string "routes" */
#define UP_METHODS lua_upvalueindex(2) /* method names, indexed by llhttp's number + 1 */
#define UP_REQ_MT lua_upvalueindex(3)
#define UP_RES_MT lua_upvalueindex(4)

/* ---- helpers ------------------------------------------------------------------------------ */

static ls_http_conn_t *req_conn(lua_State *L, int idx) {
  ls_http_req_ud_t *ud = luaL_checkudata(L, idx, LS_REQ_MT);
  return ud->c;
}

/* Pushes the uservalue cache table of the object at idx, creating it if `create`. Returns 0 if
 * there is none (nothing pushed). */
static int push_cache(lua_State *L, int idx, int create) {
  if (lua_getiuservalue(L, idx, 1) == LUA_TTABLE)
    return 1;
  lua_pop(L, 1);
  if (!create)
    return 0;
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, 1);
  return 1;
}

/* Joins the values of every header named `name` (lower case) with ", " ("; " for cookie).
 * Returns the number pushed (0 or 1). */
static int push_header(lua_State *L, ls_http_conn_t *c, const char *name, size_t name_len) {
  const char *base = ls_buf_head(&c->head);
  const char *sep = name_len == 6 && memcmp(name, "cookie", 6) == 0 ? "; " : ", ";
  unsigned i;
  int found = 0;
  luaL_Buffer b;
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    if (h->name_len != name_len || memcmp(base + h->name_off, name, name_len) != 0)
      continue;
    if (found == 0) {
      luaL_buffinit(L, &b);
    } else {
      luaL_addstring(&b, sep);
    }
    base = ls_buf_head(&c->head); /* luaL_Buffer may run the GC, never our buffers */
    luaL_addlstring(&b, base + h->value_off, h->value_len);
    found++;
  }
  if (found == 0)
    return 0;
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

/* ---- headers table ------------------------------------------------------------------------ */

static int l_headers_index(lua_State *L) {
  char name[256];
  size_t len;
  if (lua_type(L, 2) != LUA_TSTRING || lower_name(L, 2, name, sizeof name, &len) == NULL)
    return 0;
  lua_pushlstring(L, name, len);
  lua_rawget(L, 1);
  return 1;
}

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
  luaL_setmetatable(L, LS_HEADERS_MT);
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
  /* Only ever called through the Request metatable, so argument 1 is a request. */
  ls_http_conn_t *c = ((ls_http_req_ud_t *)lua_touserdata(L, 1))->c;
  const char *key;
  size_t klen;
  if (push_cache(L, 1, 0)) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
      return 1;
    lua_pop(L, 2);
  }
  key = lua_tolstring(L, 2, &klen);
  if (key == NULL || lua_type(L, 2) != LUA_TSTRING)
    return 0;
  if (c != NULL) {
    const char *path, *query;
    size_t path_len, query_len;
    switch (key[0]) {
    case 'm':
      if (KEY_IS("method")) {
        lua_pushstring(L, llhttp_method_name((llhttp_method_t)c->parser.method));
        return 1;
      }
      break;
    case 'p':
      if (KEY_IS("path")) {
        lua_pushlstring(L, ls_buf_head(&c->head) + c->path_off, c->path_len);
        return 1;
      }
      if (KEY_IS("params")) {
        push_cache(L, 1, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "params");
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
        push_cache(L, 1, 1);
        push_query_table(L, query, query_len);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "query");
        return 1;
      }
      break;
    case 'h':
      if (KEY_IS("headers")) {
        push_cache(L, 1, 1);
        push_headers_table(L, c);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "headers");
        return 1;
      }
      break;
    case 'c':
      if (KEY_IS("cookies")) {
        push_cache(L, 1, 1);
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
  lua_getfield(L, LUA_REGISTRYINDEX, LS_REQ_METHODS_KEY);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* req.x = v stores a field of the request (middleware data, params set by the router). */
static int l_req_newindex(lua_State *L) {
  luaL_checkudata(L, 1, LS_REQ_MT);
  push_cache(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* req:header(name) -> the value (repeats joined with ", "), or nil. */
static int l_req_header(lua_State *L) {
  ls_http_conn_t *c = req_conn(L, 1);
  char name[256];
  size_t len;
  if (lower_name(L, 2, name, sizeof name, &len) == NULL || c == NULL)
    return 0;
  return push_header(L, c, name, len) ? 1 : 0;
}

/* req:header_values(name) -> a list of each field's value, in order. */
static int l_req_header_values(lua_State *L) {
  ls_http_conn_t *c = req_conn(L, 1);
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
  ls_http_req_ud_t *ud = luaL_checkudata(L, 1, LS_REQ_MT);
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
  luaL_checkudata(L, 1, LS_REQ_MT);
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
  luaL_checkudata(L, 1, LS_REQ_MT);
  lua_settop(L, 1);
  lua_pushcfunction(L, l_req_body);
  lua_pushvalue(L, 1);
  lua_callk(L, 1, LUA_MULTRET, 0, json_body_k);
  return json_k(L, LUA_OK, 0);
}

static int l_req_tostring(lua_State *L) {
  ls_http_conn_t *c = req_conn(L, 1);
  if (c == NULL)
    lua_pushliteral(L, "luasrv.Request (ended)");
  else
    lua_pushfstring(L, "luasrv.Request (%s %s)",
                    llhttp_method_name((llhttp_method_t)c->parser.method),
                    lua_pushlstring(L, ls_buf_head(&c->head), c->url_len));
  return 1;
}

/* ---- response ----------------------------------------------------------------------------- */

static ls_http_res_ud_t *check_res(lua_State *L) { return luaL_checkudata(L, 1, LS_RES_MT); }

/* The connection of a response that can still be changed, or raises. */
static ls_http_conn_t *res_open(lua_State *L, ls_http_res_ud_t *ud, const char *what) {
  if (ud->c == NULL)
    luaL_error(L, "%s: the request has ended", what);
  if (ud->c->answered || ud->c->head_sent)
    luaL_error(L, "%s: the response has already been sent", what);
  return ud->c;
}

static int check_status(lua_State *L, int idx) {
  lua_Integer status = luaL_checkinteger(L, idx);
  luaL_argcheck(L, status >= 100 && status <= 599, idx, "status must be from 100 to 599");
  return (int)status;
}

/* res:sent() -> true once the response (or the head of a streamed one) is on its way: later
 * status, header and send calls raise, and an error can no longer become a 500. */
static int l_res_sent(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  lua_pushboolean(L, ud->c == NULL || ud->c->answered || ud->c->head_sent);
  return 1;
}

/* res:status(code) -> res */
static int l_res_status(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "status");
  c->status = check_status(L, 2);
  lua_settop(L, 1);
  return 1;
}

/* Validates and records one response header line; raises on bad input. */
static void add_header(lua_State *L, ls_http_conn_t *c, int name_idx, int value_idx) {
  size_t nlen, vlen;
  const char *name = luaL_checklstring(L, name_idx, &nlen);
  const char *value;
  if (!ls_http__valid_name(name, nlen))
    luaL_error(L, "invalid header name '%s'", name);
  if (lua_type(L, value_idx) != LUA_TSTRING && lua_type(L, value_idx) != LUA_TNUMBER)
    luaL_error(L, "header '%s': value must be a string or a number, not %s", name,
               luaL_typename(L, value_idx));
  value = lua_tolstring(L, value_idx, &vlen);
  if (!ls_http__valid_value(value, vlen))
    luaL_error(L, "header '%s': value contains CR, LF or NUL", name);
  if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0)
    c->has_ctype = 1;
  else if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0)
    c->has_clen = 1;
  if (ls_buf_append(&c->res_headers, name, nlen) || ls_buf_append(&c->res_headers, ": ", 2) ||
      ls_buf_append(&c->res_headers, value, vlen) || ls_buf_append(&c->res_headers, "\r\n", 2))
    luaL_error(L, "not enough memory");
}

/* Adds the header `name` with `value` (a string, number, or list of them for repeats). */
static void add_header_value(lua_State *L, ls_http_conn_t *c, int name_idx, int value_idx) {
  if (lua_istable(L, value_idx)) {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, value_idx);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, value_idx, i);
      add_header(L, c, name_idx, lua_gettop(L));
      lua_pop(L, 1);
    }
    return;
  }
  add_header(L, c, name_idx, value_idx);
}

/* res:header(name, value) -> res. Repeated calls add repeated fields. */
static int l_res_header(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "header");
  luaL_checkstring(L, 2);
  luaL_checkany(L, 3);
  add_header_value(L, c, 2, 3);
  lua_settop(L, 1);
  return 1;
}

/* Writes the whole response now; later return values of the handler are ignored. */
static void res_send(ls_http_res_ud_t *ud, int status, const char *ctype, const char *body,
                     size_t len) {
  ud->c->answered = 1;
  ls_http__append_response(ud->c, status, ctype, body, len);
}

/* res:send([body]) -> res: the response, with the status set before (default 200). */
static int l_res_send(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "send");
  size_t len = 0;
  const char *body = luaL_optlstring(L, 2, "", &len);
  res_send(ud, c->status ? c->status : 200, "text/html; charset=utf-8", body, len);
  lua_settop(L, 1);
  return 1;
}

/* res:json(value [, status]) -> res: the value encoded as JSON. */
static int l_res_json(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "json");
  size_t len;
  const char *body;
  int status = lua_isnoneornil(L, 3) ? (c->status ? c->status : 200) : check_status(L, 3);
  luaL_checkany(L, 2);
  body = ls_json_encode(L, 2, &len);
  res_send(ud, status, "application/json", body, len);
  lua_settop(L, 1);
  return 1;
}

/* res:redirect(url [, status]) -> res: a redirect (default 302) to url. */
static int l_res_redirect(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "redirect");
  int status = lua_isnoneornil(L, 3) ? 302 : check_status(L, 3);
  luaL_checkstring(L, 2);
  luaL_argcheck(L, status >= 300 && status <= 399, 3, "redirect status must be 3xx");
  lua_pushliteral(L, "Location");
  add_header(L, c, lua_gettop(L), 2);
  res_send(ud, status, "text/plain; charset=utf-8", "", 0);
  lua_settop(L, 1);
  return 1;
}

/* Sends the head of a streamed response: chunked on HTTP/1.1 unless the handler set a
 * Content-Length; on HTTP/1.0 the body ends when the connection closes. */
static void stream_head(ls_http_conn_t *c) {
  ls_buf_t *b = &c->s.out;
  size_t line_len;
  int status = c->status ? c->status : 200;
  const char *line = ls_http__status_line(status, &line_len);
  c->status = status;
  c->head_sent = 1;
  ls_buf_append(b, line, line_len);
  ls_buf_append(b, "Server: luasrv\r\n", 16);
  ls_http__append_date(b, c->rt->loop);
  if (!c->has_ctype)
    ls_buf_append(b, "Content-Type: text/html; charset=utf-8\r\n", 40);
  if (!c->has_clen) {
    if (c->parser.http_minor >= 1) {
      c->chunked = 1;
      ls_buf_append(b, "Transfer-Encoding: chunked\r\n", 28);
    } else {
      c->keep_alive = 0;
    }
  }
  {
    /* A streamed body of an eligible type is compressed as it goes (its length is not
     * known, so min_size does not apply); only with chunked framing, which ends it. */
    int decision = c->chunked ? ls_http__gzip_decision(c, status, c->has_ctype ? NULL :
                                                       "text/html", SIZE_MAX) : 0;
    if (decision == 2 && !c->is_head && (c->gz = ls_gzip_stream_new(c->listener->gzip)) == NULL)
      decision = 1;
    ls_http__append_res_headers(c, b, decision);
  }
  ls_buf_append(b, c->keep_alive ? "" : "Connection: close\r\n", c->keep_alive ? 0 : 19);
  ls_buf_append(b, "\r\n", 2);
}

/* Appends one chunk (or, unchunked, the bytes) of a streamed body; through the deflate
 * stream when the response is compressed (finish: its last output). */
static int stream_piece(ls_http_conn_t *c, const char *s, size_t n, int finish) {
  ls_buf_t *out = &c->s.out;
  ls_buf_t gz;
  char size[24];
  int rc = 0;
  if (c->gz != NULL) {
    ls_buf_init(&gz);
    if (ls_gzip_stream_write(c->gz, s, n, finish, &gz) != 0) {
      ls_buf_free(&gz);
      return -1;
    }
    s = ls_buf_head(&gz);
    n = ls_buf_len(&gz);
  }
  if (n > 0) {
    if (c->chunked) {
      int len = snprintf(size, sizeof size, "%zx\r\n", n);
      rc |= ls_buf_append(out, size, (size_t)len);
    }
    rc |= ls_buf_append(out, s, n);
    if (c->chunked)
      rc |= ls_buf_append(out, "\r\n", 2);
  }
  if (c->gz != NULL)
    ls_buf_free(&gz);
  return rc;
}

static int res_write_k(lua_State *L, int status, lua_KContext ctx) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = ud->c;
  ls_task_t *task;
  (void)status;
  (void)ctx;
  if (c == NULL || c->closing || c->s.write_err != 0) {
    int err = c != NULL && c->s.write_err ? c->s.write_err : LS_ECLOSED;
    return ls_push_error(L, err == UV_ETIMEDOUT ? LS_ETIMEDOUT : err);
  }
  task = ls_task_check(c->gen, L, "write");
  if (c->writer == task)
    c->writer = NULL;
  if (!c->virtual_conn && ls_stream_unsent(&c->s) > LS_HTTP_WRITE_HIWAT) {
    c->writer = task;
    return ls_task_wait(task, -1, 0, res_write_k);
  }
  lua_settop(L, 1);
  return 1;
}

/* res:write(...) -> res: streams the pieces (the head goes first, on the first call). Yields
 * while the client reads slower than the handler writes. */
static int l_res_write(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = ud->c;
  int i, n = lua_gettop(L);
  size_t total = 0;
  for (i = 2; i <= n; i++) {
    size_t len;
    luaL_checklstring(L, i, &len);
    total += len;
  }
  if (c == NULL || c->closing)
    return ls_push_error(L, LS_ECLOSED);
  if (c->answered)
    return luaL_error(L, "write: the response has already been sent");
  if (!c->head_sent)
    stream_head(c);
  if (total > 0 && !c->is_head) {
    const char *s;
    size_t len;
    if (n > 2)
      lua_concat(L, n - 1); /* the pieces as one chunk */
    s = lua_tolstring(L, 2, &len);
    if (stream_piece(c, s, len, 0) != 0)
      return luaL_error(L, "not enough memory");
    c->bytes_out += total;
  }
  ls_http__flush(c);
  return res_write_k(L, LUA_OK, 0);
}

/* ---- res:sendfile ------------------------------------------------------------------------- */

/* A file of at most this size goes out in one piece with the head (one read, one write for
 * the whole response); a larger one is read in pieces of this size as the client takes them. */
#define LS_SENDFILE_CHUNK (64 * 1024)
/* After this many bytes read without waiting, a file's task gives the loop a turn, so other
 * connections are served and one fast client cannot run the task past its CPU budget. */
#define LS_SENDFILE_TURN (1024 * 1024)
#define LS_SENDFILE_MT "luasrv.SendFile"

/* The state of one res:sendfile, a userdata on the task's stack: it survives the yields and
 * its __gc closes a descriptor the call opened itself, however the task ends. */
typedef struct sendfile_s {
  int fd;
  int own_fd;          /* opened from a path by this call */
  int64_t offset;      /* next byte of the file to read */
  int64_t remaining;   /* bytes still to read */
  int64_t since_turn;  /* bytes read since the task last gave the loop a turn */
} sendfile_t;

/* The stack index of the state (after res, file, offset, length, content type). */
#define LS_SENDFILE_IDX 6

static void sendfile_release(sendfile_t *sf) {
  if (sf->own_fd && sf->fd >= 0)
    close(sf->fd);
  sf->fd = -1;
  sf->own_fd = 0;
}

static int l_sendfile_gc(lua_State *L) {
  sendfile_release(luaL_checkudata(L, 1, LS_SENDFILE_MT));
  return 0;
}

/* Appends `n` bytes of the file from `offset` to the connection's output. Returns 0, or a
 * negative error code (UV_EOF if the file is now shorter). */
static int read_into_out(ls_http_conn_t *c, int fd, int64_t offset, size_t n) {
  if (ls_buf_reserve(&c->s.out, n) != 0)
    return LS_ENOMEM;
  while (n > 0) {
    ssize_t r = pread(fd, c->s.out.data + c->s.out.end, n, (off_t)offset);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return uv_translate_sys_error(errno);
    }
    if (r == 0)
      return UV_EOF;
    c->s.out.end += (size_t)r;
    offset += r;
    n -= (size_t)r;
  }
  return 0;
}

static int sendfile_k(lua_State *L, int status, lua_KContext ctx) {
  ls_http_res_ud_t *ud = check_res(L);
  sendfile_t *sf = luaL_checkudata(L, LS_SENDFILE_IDX, LS_SENDFILE_MT);
  ls_http_conn_t *c = ud->c;
  ls_task_t *task;
  (void)status;
  (void)ctx;
  if (c == NULL || c->closing || c->s.write_err != 0) {
    sendfile_release(sf);
    return ls_push_error(L, c != NULL && c->s.write_err ? c->s.write_err : LS_ECLOSED);
  }
  task = ls_task_current(c->gen, L);
  if (task != NULL && c->writer == task)
    c->writer = NULL;
  while (sf->remaining > 0) {
    size_t n = sf->remaining < LS_SENDFILE_CHUNK ? (size_t)sf->remaining : LS_SENDFILE_CHUNK;
    int err;
    /* sendfile(2) copies from the file to the socket in the kernel: only on a plain stream
     * (over TLS the bytes must be encrypted here, so they go read + write in chunks). */
    int kernel_copy = LS_HAVE_SENDFILE && c->s.tls == NULL;
    if (!c->virtual_conn) {
      if (ls_stream_unsent(&c->s) > LS_HTTP_WRITE_HIWAT ||
          (kernel_copy && (c->s.writing || ls_buf_len(&c->s.out) > 0))) {
        /* With sendfile(2), wait for what is queued to drain before sending more. */
        task = ls_task_check(c->gen, L, "sendfile");
        c->writer = task;
        return ls_task_wait(task, -1, 0, sendfile_k);
      }
      if (sf->since_turn >= LS_SENDFILE_TURN) {
        ls_task_check(c->gen, L, "sendfile");
        sf->since_turn = 0;
        return lua_yieldk(L, 0, 0, sendfile_k); /* the runtime resumes it on the next turn */
      }
#if LS_HAVE_SENDFILE
      if (kernel_copy) {
        /* Nothing is queued, so bytes written to the socket now cannot overtake any: the
         * kernel copies from the page cache to the socket, no pass through this process. */
        size_t want = sf->remaining < LS_SENDFILE_TURN ? (size_t)sf->remaining : LS_SENDFILE_TURN;
        uv_os_fd_t sock;
        off_t off = (off_t)sf->offset;
        ssize_t r = -1;
        if (uv_fileno((uv_handle_t *)&c->s.u.tcp, &sock) == 0) {
          do
            r = sendfile(sock, sf->fd, &off, want);
          while (r < 0 && errno == EINTR);
        }
        if (r > 0) {
          sf->offset += r;
          sf->remaining -= r;
          sf->since_turn += r;
          continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EINVAL && errno != ENOSYS) {
          err = uv_translate_sys_error(errno);
          sendfile_release(sf);
          c->s.write_err = err;
          ls_http__close(c);
          return ls_push_error(L, err);
        }
        /* The socket is full (or sendfile cannot be used here): the next piece goes through
         * the output buffer, whose write completing tells that the socket has room again.
         * A file that ended early (r == 0) fails in that read below. */
      }
#endif
    }
    err = read_into_out(c, sf->fd, sf->offset, n);
    if (err != 0) {
      /* Part of the body is out and its length was promised: the response cannot be
       * finished, so the connection ends here. */
      ls_log(LS_LOG_ERROR, "sendfile: %s after %lld bytes; closing the connection",
             ls_strerror(err), (long long)sf->offset);
      sendfile_release(sf);
      c->keep_alive = 0;
      ls_http__close(c);
      return ls_push_error(L, err);
    }
    sf->offset += (int64_t)n;
    sf->remaining -= (int64_t)n;
    sf->since_turn += (int64_t)n;
    ls_http__flush(c);
  }
  sendfile_release(sf);
  lua_settop(L, 1);
  return 1;
}

/* res:sendfile(file [, offset [, length [, content_type]]]) -> res | nil, message, code.
 * Sends the whole response: the status and headers set before (status 200 by default), a
 * Content-Length, and bytes [offset, offset + length) of the file as the body (none for HEAD,
 * 204 and 304). `file` is a path or a luasrv.File (which stays the caller's to close);
 * `content_type` is used when no Content-Type header was set (default
 * application/octet-stream). A file up to LS_SENDFILE_CHUNK goes out with the head in one
 * piece; a larger one is read in bounded pieces while the client takes them, the task waiting
 * whenever more than LS_HTTP_WRITE_HIWAT bytes are queued, so memory stays flat whatever the
 * file's size. A file that cannot be opened or read before anything was queued returns
 * nil, message, code and leaves the response unsent; a failure later closes the connection.
 * Raises on misuse: a range outside the file, a response already sent, Content-Length set. */
static int l_res_sendfile(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "sendfile");
  lua_Integer offset = luaL_optinteger(L, 3, 0);
  lua_Integer length = luaL_optinteger(L, 4, -1);
  const char *ctype = luaL_optstring(L, 5, "application/octet-stream");
  sendfile_t local, *sf = &local;
  int64_t size;
  size_t mark, n;
  int status, saved_status, err, has_body;
  unsigned char was_head;
  luaL_argcheck(L, offset >= 0, 3, "offset must not be negative");
  if (c->has_clen)
    return luaL_error(L, "sendfile: Content-Length is set by sendfile, not by a header");
  lua_settop(L, LS_SENDFILE_IDX - 1);
  memset(&local, 0, sizeof local);
  if (lua_type(L, 2) == LUA_TSTRING) {
    /* A descriptor this call opens is owned by a userdata from the start, so that it is
     * closed even if something below raises. */
    sf = lua_newuserdatauv(L, sizeof *sf, 0);
    memset(sf, 0, sizeof *sf);
    sf->fd = -1;
    luaL_setmetatable(L, LS_SENDFILE_MT);
    err = ls_fs_open_regular(lua_tostring(L, 2), &sf->fd, &size);
    if (err != 0)
      return ls_push_error(L, err);
    sf->own_fd = 1;
  } else {
    /* The caller's file: the common case (static files) makes no userdata unless the file
     * is large enough to need waiting. */
    sf->fd = ls_fs_check_file(L, 2, &size);
  }
  if (offset > size) {
    sendfile_release(sf);
    return luaL_argerror(L, 3, "offset beyond the end of the file");
  }
  if (length < 0)
    length = size - offset;
  else if (length > size - offset) {
    sendfile_release(sf);
    return luaL_argerror(L, 4, "range beyond the end of the file");
  }
  /* The head, with Content-Length for `length` bytes: append_response writes no body for a
   * HEAD request, so it is asked for a HEAD's head and the body follows from the file. */
  status = c->status ? c->status : 200;
  saved_status = c->status;
  mark = ls_buf_len(&c->s.out);
  was_head = c->is_head;
  c->is_head = 1;
  err = ls_http__append_response(c, status, ctype, NULL, (size_t)length);
  c->is_head = was_head;
  if (err != 0) {
    c->s.out.end = c->s.out.start + mark;
    sendfile_release(sf);
    return luaL_error(L, "not enough memory");
  }
  c->answered = 1;
  has_body = status >= 200 && status != 204 && status != 304;
  if (c->is_head || !has_body || length == 0) {
    sendfile_release(sf);
    lua_settop(L, 1);
    return 1;
  }
  /* The first piece is read before anything can leave, so a file that cannot be read is
   * still a plain failure: the head is taken back and the handler may answer otherwise. */
  n = length < LS_SENDFILE_CHUNK ? (size_t)length : LS_SENDFILE_CHUNK;
  err = read_into_out(c, sf->fd, offset, n);
  if (err == 0 && (int64_t)n < length && sf == &local) {
    /* Large: the transfer outlives this call, and the caller's file may be closed meanwhile
     * (a root's cache closes files it drops), so it reads a descriptor of its own. */
    int fd = fcntl(sf->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      err = uv_translate_sys_error(errno);
    } else {
      sf = lua_newuserdatauv(L, sizeof *sf, 0);
      memset(sf, 0, sizeof *sf);
      sf->fd = fd;
      sf->own_fd = 1;
      luaL_setmetatable(L, LS_SENDFILE_MT);
    }
  }
  if (err != 0) {
    c->s.out.end = c->s.out.start + mark;
    c->status = saved_status;
    c->bytes_out = 0;
    c->answered = 0;
    sendfile_release(sf);
    return ls_push_error(L, err);
  }
  if ((int64_t)n == length) {
    /* Small: it leaves with whatever else this turn of the loop answers. */
    sendfile_release(sf);
    lua_settop(L, 1);
    return 1;
  }
  sf->offset = offset + (int64_t)n;
  sf->remaining = length - (int64_t)n;
  sf->since_turn = (int64_t)n;
  ls_http__flush(c);
  return sendfile_k(L, LUA_OK, 0);
}

/* ---- rejecting a request, temporary files ------------------------------------------------- */

/* core.http_reject(req, status [, message]): marks the request to be answered with `status`
 * and `message` (plain text; default the status line's text) when its handler raises, which
 * the caller does next: the form parser uses it for a body over a limit (413) or malformed
 * (400). The connection closes after that answer, since the rest of the body is unread. The
 * body can no longer be read. Does nothing once the request has ended. */
static int l_http_reject(lua_State *L) {
  ls_http_conn_t *c = req_conn(L, 1);
  int status = check_status(L, 2);
  size_t len = 0;
  const char *msg = luaL_optlstring(L, 3, NULL, &len);
  if (c == NULL)
    return 0;
  if (c->reject_msg != NULL) {
    ls_free(c->reject_msg, c->reject_msg_len + 1);
    c->reject_msg = NULL;
  }
  if (msg != NULL && (c->reject_msg = ls_malloc(len + 1)) != NULL) {
    memcpy(c->reject_msg, msg, len + 1);
    c->reject_msg_len = len;
  }
  c->reject_status = status;
  return 0;
}

/* Answers a request that core.http_reject marked, with its message. */
static void reject_response(ls_http_conn_t *c) {
  c->keep_alive = 0;
  ls_buf_consume(&c->res_headers, ls_buf_len(&c->res_headers));
  c->has_ctype = c->has_clen = 0;
  ls_http__append_response(c, c->reject_status, "text/plain; charset=utf-8", c->reject_msg,
                           c->reject_msg_len);
  c->state = LS_HTTP_CLOSING;
}

/* core.http_tmpfile(req [, dir]) -> path | nil, message, code: a new empty file (mode 0600)
 * in dir (default $TMPDIR or /tmp), removed when the request ends however it ends. */
static int l_http_tmpfile(lua_State *L) {
  ls_http_conn_t *c = req_conn(L, 1);
  const char *dir = luaL_optstring(L, 2, NULL);
  const char *path;
  int err;
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  path = ls_fs_tmp_create(&c->tmpfiles, dir, &err);
  if (path == NULL)
    return ls_push_error(L, err);
  lua_pushstring(L, path);
  return 1;
}

/* ---- running the handler ------------------------------------------------------------------ */

/* Builds the response from the handler's return values, at stack indices first..top:
 * body | status, body | status, headers, body, where a string body is HTML and a table is
 * JSON. Runs in the handler's task, so a bad value is that task's error (a 500). */
static void finish_from_returns(lua_State *L, ls_http_conn_t *c, int first) {
  int n = lua_gettop(L) - first + 1;
  int idx = first, status = c->status ? c->status : 200;
  const char *ctype = "text/html; charset=utf-8";
  const char *body = "";
  size_t len = 0;
  if (n >= 1 && lua_type(L, first) == LUA_TNUMBER) {
    status = check_status(L, first);
    idx = first + 1;
    if (n >= 3) {
      if (!lua_isnil(L, first + 1)) {
        luaL_checktype(L, first + 1, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, first + 1) != 0) {
          if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "header names must be strings");
          add_header_value(L, c, lua_gettop(L) - 1, lua_gettop(L));
          lua_pop(L, 1);
        }
      }
      idx = first + 2;
    }
  }
  if (idx <= lua_gettop(L)) {
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
      body = lua_tolstring(L, idx, &len);
      break;
    case LUA_TTABLE:
      body = ls_json_encode(L, idx, &len);
      ctype = "application/json";
      break;
    case LUA_TNIL:
    case LUA_TNONE:
      break;
    default:
      luaL_error(L, "handler returned a %s as the body (expected a string or a table)",
                 luaL_typename(L, idx));
    }
  }
  ls_http__append_response(c, status, ctype, body, len);
}

static void log_failure(ls_http_conn_t *c, const char *what, const char *msg) {
  char target[1024];
  ls_http__target_text(c, target, sizeof target);
  ls_log(LS_LOG_ERROR, "%s %s: %s: %s", llhttp_method_name((llhttp_method_t)c->parser.method),
         target, what, msg);
}

/* Answers 500 for a failed handler: with the traceback in --dev, a plain page otherwise. */
static void respond_500(ls_http_conn_t *c, const char *trace) {
  ls_buf_consume(&c->res_headers, ls_buf_len(&c->res_headers));
  c->has_ctype = c->has_clen = 0;
  if (c->rt->dev && trace != NULL) {
    ls_http__append_response(c, 500, "text/plain; charset=utf-8", trace, strlen(trace));
  } else {
    static const char page[] = "500 Internal Server Error\n";
    ls_http__append_response(c, 500, "text/plain; charset=utf-8", page, sizeof page - 1);
  }
}

static int http_task_done(ls_task_t *task, int status, int nres) {
  ls_http_conn_t *c = task->data;
  lua_State *co = task->co;
  int answered;
  if (c == NULL)
    return 0; /* the connection went away; the error, if any, is logged */
  answered = c->answered;
  c->task = NULL;
  if (status != LUA_OK && c->reject_status != 0 && !c->head_sent && !answered) {
    /* req:body() found the body too large or malformed, or the handler rejected it (a form
     * over a limit): answer with that status. */
    if (c->reject_msg != NULL)
      reject_response(c);
    else
      ls_http__error_response(c, c->reject_status, 1);
  } else if (status != LUA_OK) {
    const char *trace = lua_tostring(co, -1);
    log_failure(c, "handler failed", trace != NULL ? trace : "(error object)");
    c->keep_alive = 0;
    if (c->head_sent) {
      /* Part of a streamed response is out: all the client can be told is that it is cut
       * short, so the connection is aborted rather than the body ended. */
      ls_http__end_request(c);
      ls_http__close(c);
      return 1;
    }
    if (!answered)
      respond_500(c, trace); /* else the complete response already queued goes out */
  } else if (c->head_sent) {
    if (c->gz != NULL)
      stream_piece(c, "", 0, 1); /* the end of the gzip member */
    if (c->chunked && !c->is_head)
      ls_buf_append(&c->s.out, "0\r\n\r\n", 5);
  }
  ls_http__end_request(c);
  ls_http__process(c);
  return 1;
}

/* After the handler returned: its results are on the stack from index ctx up. Unless the
 * response went out already (res:send, res:json, res:write...), they make it. */
static int http_task_body_k(lua_State *L, int status, lua_KContext ctx) {
  ls_task_t *task = lua_touserdata(L, 1);
  ls_http_conn_t *c = task->data; /* NULL once the connection is gone */
  (void)status;
  if (c != NULL && !c->answered && !c->head_sent) {
    finish_from_returns(L, c, (int)ctx);
    c->answered = 1;
  }
  return 0;
}

/* If the handler at index 2 is an app that offers exact routes (a `routes` table: path ->
 * {METHOD = function}, which luasrv.router keeps while nothing else runs between a request
 * and such a route), and one matches this request, puts its function at index 2 instead:
 * the route is called straight, without the app's dispatch in Lua. */
static void take_route(lua_State *L, ls_http_conn_t *c) {
  if (lua_type(L, 2) != LUA_TTABLE)
    return;
  lua_pushvalue(L, UP_ROUTES);
  if (lua_rawget(L, 2) == LUA_TTABLE) {
    lua_pushlstring(L, ls_buf_head(&c->head) + c->path_off, c->path_len);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
      lua_rawgeti(L, UP_METHODS, c->parser.method + 1);
      if (lua_rawget(L, -2) == LUA_TFUNCTION) {
        lua_replace(L, 2);
        lua_pop(L, 2);
        return;
      }
    }
  }
  lua_settop(L, 2);
}

/* Whether the function at index 2 is a Lua function declared without parameters: nothing it
 * runs can reach the request and response objects, so they are not made. */
static int takes_nothing(lua_State *L) {
  lua_Debug ar;
  if (lua_type(L, 2) != LUA_TFUNCTION)
    return 0; /* a callable table: an app that dispatches with the objects */
  lua_pushvalue(L, 2);
  lua_getinfo(L, ">u", &ar);
  return ar.nparams == 0 && !ar.isvararg;
}

/* The body of a request's task, with the task (light userdata) and the handler on the stack:
 * handler(req, res), whose results http_task_body_k turns into the response. */
static int http_task_body(lua_State *L) {
  ls_task_t *task = lua_touserdata(L, 1);
  ls_http_conn_t *c = task->data;
  ls_http_req_ud_t *req;
  ls_http_res_ud_t *res;
  take_route(L, c);
  if (takes_nothing(L)) {
    lua_pushvalue(L, 2);
    lua_callk(L, 0, LUA_MULTRET, 3, http_task_body_k);
    return http_task_body_k(L, LUA_OK, 3);
  }
  /* The objects stay at indexes 3 and 4 for the whole request: the connection points at
   * them, so they must outlive whatever the handler keeps. */
  req = lua_newuserdatauv(L, sizeof *req, 1);
  req->c = c;
  lua_pushvalue(L, UP_REQ_MT);
  lua_setmetatable(L, -2);
  res = lua_newuserdatauv(L, sizeof *res, 0);
  res->c = c;
  lua_pushvalue(L, UP_RES_MT);
  lua_setmetatable(L, -2);
  c->req_ud = req;
  c->res_ud = res;
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  lua_callk(L, 2, LUA_MULTRET, 5, http_task_body_k);
  return http_task_body_k(L, LUA_OK, 5);
}

void ls_http__dispatch(ls_http_conn_t *c) {
  ls_task_t *task;
  if (c->listener->closed) {
    /* The listener went away in a reload: nothing serves this address any more. Close as an
     * idle keep-alive connection closes, so a client retries (and finds nothing there). */
    ls_http__close(c);
    return;
  }
  /* Each request goes to the generation serving the listener now (after a reload, the new
   * one), even on a connection accepted before. */
  c->gen = c->listener->base.gen;
  task = ls_task_new(c->gen, http_task_done, c);
  if (task == NULL) {
    ls_http__error_response(c, 503, 1);
    return;
  }
  c->task = task;
  c->answered = 0;
  task->budgeted = 1;
  lua_rawgeti(task->co, LUA_REGISTRYINDEX, c->gen->http_task_ref);
  lua_pushlightuserdata(task->co, task);
  lua_rawgeti(task->co, LUA_REGISTRYINDEX, c->listener->base.handler_ref);
  ls_task_start(task, 2);
}

void ls_http__end_request(ls_http_conn_t *c) {
  if (c->gz != NULL) {
    ls_gzip_stream_free(c->gz);
    c->gz = NULL;
  }
  if (c->tmpfiles != NULL)
    ls_fs_tmp_remove_all(&c->tmpfiles);
  if (c->reject_msg != NULL) {
    ls_free(c->reject_msg, c->reject_msg_len + 1);
    c->reject_msg = NULL;
  }
  if (c->req_ud != NULL) {
    c->req_ud->c = NULL;
    c->req_ud = NULL;
  }
  if (c->res_ud != NULL) {
    c->res_ud->c = NULL;
    c->res_ud = NULL;
  }
  if (c->status != 0 && c->url_len > 0)
    ls_http__access_log(c);
}

void ls_http__open_lua(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg req_meth[] = {{"header", l_req_header},
                                      {"header_values", l_req_header_values},
                                      {"body", l_req_body},
                                      {"body_reader", l_req_body_reader},
                                      {"json", l_req_json},
                                      {NULL, NULL}};
  static const luaL_Reg req_metameth[] = {{"__index", l_req_index},
                                          {"__newindex", l_req_newindex},
                                          {"__tostring", l_req_tostring},
                                          {NULL, NULL}};
  static const luaL_Reg res_meth[] = {{"status", l_res_status}, {"sent", l_res_sent},
                                      {"header", l_res_header},
                                      {"write", l_res_write},   {"send", l_res_send},
                                      {"json", l_res_json},     {"redirect", l_res_redirect},
                                      {"sendfile", l_res_sendfile}, {NULL, NULL}};
  int core = lua_gettop(L);
  if (luaL_newmetatable(L, LS_REQ_MT))
    luaL_setfuncs(L, req_metameth, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &req_mt_key);
  lua_newtable(L);
  luaL_setfuncs(L, req_meth, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, LS_REQ_METHODS_KEY);
  if (luaL_newmetatable(L, LS_RES_MT)) {
    lua_newtable(L);
    luaL_setfuncs(L, res_meth, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &res_mt_key);
  if (luaL_newmetatable(L, LS_HEADERS_MT)) {
    lua_pushcfunction(L, l_headers_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushliteral(L, "routes");
  lua_createtable(L, HTTP_FLUSH + 1, 0); /* HTTP_FLUSH: llhttp's last method */
  for (int m = 0; m <= HTTP_FLUSH; m++) {
    lua_pushstring(L, llhttp_method_name((llhttp_method_t)m));
    lua_rawseti(L, -2, m + 1);
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &req_mt_key);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &res_mt_key);
  lua_pushcclosure(L, http_task_body, 4);
  gen->http_task_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (luaL_newmetatable(L, LS_SENDFILE_MT)) {
    lua_pushcfunction(L, l_sendfile_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  /* The method tables, for lua/luasrv/http.lua to add the methods written in Lua (req:form,
   * res:cookie), and the helpers those use. */
  lua_getfield(L, LUA_REGISTRYINDEX, LS_REQ_METHODS_KEY);
  lua_setfield(L, core, "http_request_methods");
  luaL_getmetatable(L, LS_RES_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, core, "http_response_methods");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_res_sendfile); /* also here: lua/luasrv/http.lua wraps the method */
  lua_setfield(L, core, "http_sendfile");
  lua_pushcfunction(L, l_http_reject);
  lua_setfield(L, core, "http_reject");
  lua_pushcfunction(L, l_http_tmpfile);
  lua_setfield(L, core, "http_tmpfile");
}
