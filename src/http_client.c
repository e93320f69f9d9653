/* The HTTP client's response parser (see http_client.h): llhttp in response mode, with the
 * limits of the server's request heads (status line, header section, header count) and the
 * client's body limit. It shares the server's header record (ls_http_header_t), its
 * header-line states (LS_HDR_*); its own state lives here, never in the server's connection.
 * A response's headers are a plain table whose metatable (luasrv.ResponseHeaders) looks names
 * up in any case. */
#include <lauxlib.h>
#include <string.h>

#include "alloc.h"
#include "http.h"
#include "http_client.h"
#include "http_fields.h"

#define LS_RES_HEADERS_MT "luasrv.ResponseHeaders"

/* The server's defaults for request heads (src/http_listen.c), applied to response heads. */
#define LS_HCP_LINE_MAX (8 * 1024)
#define LS_HCP_HEADER_MAX (16 * 1024)
#define LS_HCP_HEADER_COUNT 100


static ls_hcp_t *hcp_of(llhttp_t *p) { return p->data; }

static int refuse(ls_hcp_t *h, const char *why) {
  h->error = why;
  return HPE_USER;
}

static int on_message_begin(llhttp_t *p) {
  ls_hcp_t *h = hcp_of(p);
  ls_buf_consume(&h->head, ls_buf_len(&h->head));
  h->nheaders = 0;
  h->ntrailer_start = 0;
  h->reason_len = 0;
  h->hdr_state = LS_HDR_BETWEEN;
  return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  ls_hcp_t *h = hcp_of(p);
  if (h->reason_len + len > h->line_max)
    return refuse(h, "status line too long");
  if (ls_buf_append(&h->head, at, len) != 0)
    return refuse(h, "out of memory");
  h->reason_len += len;
  return 0;
}

/* Header lines arrive in pieces as the server's do (src/http_fields.h), bounded as a request
 * head is; the reason phrase at the start of the buffer does not count. */
static ls_http_fields_t hcp_fields(llhttp_t *p) {
  ls_hcp_t *h = hcp_of(p);
  ls_http_fields_t f = {&h->head, h->headers, &h->nheaders, h->header_count,
                        &h->hdr_state, h->reason_len, h->header_max};
  return f;
}

static int field_refuse(llhttp_t *p, int why) {
  return refuse(hcp_of(p), why == LS_FIELD_TOO_MANY    ? "too many header fields"
                           : why == LS_FIELD_TOO_LARGE ? "header section too large"
                           : why == LS_FIELD_NOMEM     ? "out of memory"
                                                       : "header value without a name");
}

LS_HTTP_FIELD_CALLBACKS(hcp_fields, field_refuse)

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ls_http_fields_t f = hcp_fields(p);
  int why = ls_http_field_begin_value(&f);
  if (why == 0)
    why = ls_http_field_value(&f, at, len);
  return why == 0 ? 0 : field_refuse(p, why);
}

/* Returns 1 ("no body") for the answers that have none whatever their headers say: a 1xx,
 * 204, 304 and any answer to HEAD (RFC 9112 §6.3). */
static int on_headers_complete(llhttp_t *p) {
  ls_hcp_t *h = hcp_of(p);
  int status = p->status_code;
  if (p->http_major != 1)
    return refuse(h, "unsupported HTTP version");
  if (status == 101)
    return refuse(h, "unexpected 101 Switching Protocols");
  if (status < 200) {
    if (status == 100)
      h->continued = 1;
    return 1;
  }
  h->status = status;
  h->version_minor = p->http_minor;
  h->head_done = 1;
  h->ntrailer_start = h->nheaders;
  h->keep_alive = (unsigned char)llhttp_should_keep_alive(p);
  if (h->is_head || status == 204 || status == 304)
    return 1;
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > h->body_max)
    return refuse(h, "response body too large");
  if (p->flags & F_CHUNKED) {
    h->at_chunk_line = 1;
    return HPE_PAUSED; /* chunk_line() sees the first chunk-size line before llhttp does */
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  ls_hcp_t *h = hcp_of(p);
  h->body_seen += len;
  if (h->body_seen > h->body_max)
    return refuse(h, "response body too large");
  if (ls_buf_append(&h->body, at, len) != 0)
    return refuse(h, "out of memory");
  return 0;
}

/* After each chunk but the last, chunk_line() takes the next chunk-size line. */
static unsigned char *hcp_chunk_flag(llhttp_t *p) { return &hcp_of(p)->at_chunk_line; }
LS_HTTP_CHUNK_CALLBACK(hcp_chunk_flag)

/* The end of a 1xx answer lets the next head follow; the end of the final one pauses, so
 * that whatever follows it is counted (and the connection not reused). */
static int on_message_complete(llhttp_t *p) {
  ls_hcp_t *h = hcp_of(p);
  if (!h->head_done)
    return 0;
  h->msg_done = 1;
  return HPE_PAUSED;
}

static const llhttp_settings_t hcp_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    LS_HTTP_FIELD_SETTINGS,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_complete = on_chunk_complete,
    .on_message_complete = on_message_complete,
};

/* Takes a chunk-size line from s[0..n) (*used: the bytes taken) and hands it to llhttp
 * without its extensions, which are checked (ls_http__chunk_ext_valid) and dropped: llhttp
 * 8.1 refuses some valid ones. A line not ended in s is kept for the next feed. */
static llhttp_errno_t chunk_line(ls_hcp_t *h, const char *s, size_t n, size_t *used) {
  const char *nl = memchr(s, '\n', n), *line, *semi;
  size_t line_len, taken = nl != NULL ? (size_t)(nl - s) + 1 : n;
  llhttp_errno_t err;
  *used = taken;
  if (ls_buf_len(&h->line) + taken > LS_HTTP_CHUNK_LINE_MAX)
    return (llhttp_errno_t)refuse(h, "chunk-size line too long");
  if (nl == NULL || ls_buf_len(&h->line) > 0) {
    if (ls_buf_append(&h->line, s, taken) != 0)
      return (llhttp_errno_t)refuse(h, "out of memory");
    if (nl == NULL)
      return HPE_OK;
    line = ls_buf_head(&h->line);
    line_len = ls_buf_len(&h->line);
  } else {
    line = s;
    line_len = taken;
  }
  h->at_chunk_line = 0;
  semi = memchr(line, ';', line_len);
  if (semi == NULL) {
    err = llhttp_execute(&h->parser, line, line_len);
  } else {
    size_t ext_len = (size_t)(line + line_len - semi) - 2; /* up to the "\r\n" */
    if (line_len < 2 || line[line_len - 2] != '\r' || ext_len == 0 ||
        ls_http__chunk_ext_valid(semi, ext_len) != ext_len)
      return (llhttp_errno_t)refuse(h, "bad chunk extension");
    err = llhttp_execute(&h->parser, line, (size_t)(semi - line));
    if (err == HPE_OK)
      err = llhttp_execute(&h->parser, "\r\n", 2);
  }
  ls_buf_consume(&h->line, ls_buf_len(&h->line));
  return err;
}

/* Runs llhttp over data[0..len), chunk-size lines through chunk_line() first. Returns HPE_OK
 * (all taken, or the message ended: h->extra counts what follows it) or llhttp's error. */
static llhttp_errno_t hcp_run(ls_hcp_t *h, const char *data, size_t len) {
  size_t pos = 0;
  while (pos < len) {
    llhttp_errno_t err;
    if (h->at_chunk_line) {
      size_t used;
      err = chunk_line(h, data + pos, len - pos, &used);
      pos += used;
      if (err != HPE_OK)
        return err;
      continue;
    }
    err = llhttp_execute(&h->parser, data + pos, len - pos);
    if (err != HPE_PAUSED)
      return err;
    pos = (size_t)(llhttp_get_error_pos(&h->parser) - data);
    if (h->msg_done) {
      h->extra = len - pos;
      return HPE_OK;
    }
    llhttp_resume(&h->parser);
  }
  return HPE_OK;
}

/* ---- the Lua object ------------------------------------------------------------------------ */

/* The parser at index 1 (its methods have the metatable as their upvalue: ls_check_class). */
static ls_hcp_t *check_hcp(lua_State *L) {
  ls_hcp_t *h = ls_check_class(L, LS_HTTP_PARSER_MT);
  if (h->headers == NULL)
    luaL_error(L, "response parser used after it was closed");
  return h;
}

static uint64_t opt_limit(lua_State *L, int opts, const char *name, uint64_t dflt) {
  lua_Integer v;
  int isnum;
  if (lua_isnil(L, opts))
    return dflt;
  lua_getfield(L, opts, name);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return dflt;
  }
  v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || v <= 0)
    luaL_error(L, "option '%s' must be a positive integer", name);
  lua_pop(L, 1);
  return (uint64_t)v;
}

/* core.http_response_parser([opts]): opts max_line, max_header_size, max_headers, max_body. */
static int l_parser_new(lua_State *L) {
  uint64_t count;
  ls_hcp_t *h;
  if (!lua_isnoneornil(L, 1))
    luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  count = opt_limit(L, 1, "max_headers", LS_HCP_HEADER_COUNT);
  if (count > LS_HTTP_MAX_HEADERS_LIMIT)
    luaL_error(L, "option 'max_headers' must be at most %d", LS_HTTP_MAX_HEADERS_LIMIT);
  h = lua_newuserdatauv(L, sizeof(*h), 0);
  memset(h, 0, sizeof(*h));
  ls_buf_init(&h->head);
  ls_buf_init(&h->body);
  ls_buf_init(&h->line);
  h->line_max = (size_t)opt_limit(L, 1, "max_line", LS_HCP_LINE_MAX);
  h->header_max = (size_t)opt_limit(L, 1, "max_header_size", LS_HCP_HEADER_MAX);
  h->body_max = opt_limit(L, 1, "max_body", UINT64_MAX);
  h->header_count = (unsigned)count;
  luaL_setmetatable(L, LS_HTTP_PARSER_MT);
  h->headers = ls_malloc(sizeof(*h->headers) * h->header_count);
  if (h->headers == NULL)
    return luaL_error(L, "not enough memory");
  llhttp_init(&h->parser, HTTP_RESPONSE, &hcp_settings);
  h->parser.data = h;
  return 1;
}

ls_hcp_t *ls_hcp_push_new(lua_State *L) {
  lua_pushcfunction(L, l_parser_new);
  lua_call(L, 0, 1);
  return lua_touserdata(L, -1);
}

void ls_hcp_start(ls_hcp_t *h, int is_head, uint64_t max_body) {
  llhttp_reset(&h->parser);
  ls_buf_consume(&h->head, ls_buf_len(&h->head));
  ls_buf_consume(&h->body, ls_buf_len(&h->body));
  ls_buf_consume(&h->line, ls_buf_len(&h->line));
  h->at_chunk_line = 0;
  h->nheaders = h->ntrailer_start = 0;
  h->reason_len = h->extra = 0;
  h->body_seen = 0;
  h->error = NULL;
  h->status = h->version_minor = 0;
  h->hdr_state = LS_HDR_BETWEEN;
  h->head_done = h->msg_done = h->keep_alive = h->continued = h->failed = 0;
  h->is_head = (unsigned char)is_head;
  h->body_max = max_body;
}

/* parser:start([is_head [, max_body]]) -> parser */
static int l_parser_start(lua_State *L) {
  ls_hcp_t *h = check_hcp(L);
  uint64_t max_body = h->body_max;
  if (!lua_isnoneornil(L, 3)) {
    lua_Integer max = luaL_checkinteger(L, 3);
    max_body = max < 0 ? UINT64_MAX : (uint64_t)max;
  }
  ls_hcp_start(h, lua_toboolean(L, 2), max_body);
  lua_settop(L, 1);
  return 1;
}

static int push_failure(lua_State *L, ls_hcp_t *h, llhttp_errno_t err) {
  const char *why = ls_hcp_error(h, err);
  h->failed = 1;
  lua_pushnil(L);
  if (strcmp(why, "response body too large") == 0) {
    lua_pushstring(L, why);
    lua_pushliteral(L, "ETOOLARGE");
    return 3;
  }
  lua_pushfstring(L, "bad response: %s", why);
  lua_pushliteral(L, "EPROTO");
  return 3;
}

/* head_done, body, done; at the end also the bytes after the message and whether trailer
 * fields came. */
static int push_progress(lua_State *L, ls_hcp_t *h) {
  lua_pushboolean(L, h->head_done);
  lua_pushlstring(L, ls_buf_head(&h->body), ls_buf_len(&h->body));
  ls_buf_consume(&h->body, ls_buf_len(&h->body));
  lua_pushboolean(L, h->msg_done);
  if (!h->msg_done)
    return 3;
  lua_pushinteger(L, (lua_Integer)h->extra);
  lua_pushboolean(L, h->nheaders > h->ntrailer_start);
  return 5;
}

llhttp_errno_t ls_hcp_feed(ls_hcp_t *h, const char *data, size_t len) {
  llhttp_errno_t err;
  if (h->failed)
    return llhttp_get_errno(&h->parser) != HPE_OK ? llhttp_get_errno(&h->parser) : HPE_USER;
  if (h->msg_done) {
    h->extra += len;
    return HPE_OK;
  }
  err = hcp_run(h, data, len);
  if (err != HPE_OK) {
    h->failed = 1;
    ls_buf_consume(&h->body, ls_buf_len(&h->body));
  }
  return err;
}

llhttp_errno_t ls_hcp_finish(ls_hcp_t *h) {
  llhttp_errno_t err;
  if (h->failed)
    return llhttp_get_errno(&h->parser) != HPE_OK ? llhttp_get_errno(&h->parser) : HPE_USER;
  if (h->msg_done)
    return HPE_OK;
  err = llhttp_finish(&h->parser);
  if ((err != HPE_OK && err != HPE_PAUSED) || !h->msg_done) {
    if (h->error == NULL)
      h->error = h->head_done ? "connection closed before the end of the body"
                              : "connection closed before the end of the head";
    h->failed = 1;
    return err != HPE_OK && err != HPE_PAUSED ? err : HPE_USER;
  }
  return HPE_OK;
}

const char *ls_hcp_error(ls_hcp_t *h, llhttp_errno_t err) {
  const char *why = h->error;
  if (why == NULL)
    why = err == HPE_PAUSED_UPGRADE ? "unexpected upgrade" : llhttp_get_error_reason(&h->parser);
  return why != NULL ? why : llhttp_errno_name(err);
}

/* parser:feed(data) -> head_done, body, done | nil, message, code */
static int l_parser_feed(lua_State *L) {
  ls_hcp_t *h = check_hcp(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  llhttp_errno_t err = ls_hcp_feed(h, data, len);
  return err != HPE_OK ? push_failure(L, h, err) : push_progress(L, h);
}

/* parser:finish() -> as feed: the peer closed the connection. */
static int l_parser_finish(lua_State *L) {
  ls_hcp_t *h = check_hcp(L);
  llhttp_errno_t err = ls_hcp_finish(h);
  return err != HPE_OK ? push_failure(L, h, err) : push_progress(L, h);
}

/* Pushes the fields [from, to) as one string of "name\0value\0" pairs (names in lower case,
 * values without trailing blanks): one copy now, the tables only when the script looks. */
static void push_raw_fields(lua_State *L, ls_hcp_t *h, unsigned from, unsigned to) {
  const char *base = ls_buf_head(&h->head);
  luaL_Buffer b;
  unsigned i;
  luaL_buffinit(L, &b);
  for (i = from; i < to; i++) {
    const ls_http_header_t *f = &h->headers[i];
    size_t vlen = f->value_len;
    const char *v = base + f->value_off;
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
      vlen--;
    luaL_addlstring(&b, base + f->name_off, f->name_len);
    luaL_addchar(&b, '\0');
    luaL_addlstring(&b, v, vlen);
    luaL_addchar(&b, '\0');
  }
  luaL_pushresult(&b);
}

/* core.http_fields(raw) -> headers, fields: from the string push_raw_fields made, a headers
 * table (luasrv.ResponseHeaders: lookups in any case) with repeated names joined with ", " as the
 * request's are, and a flat list name, value, ... of every field in order (header_values).
 * Field values never hold NUL: llhttp refuses it in a header. */
static int l_http_fields(lua_State *L) {
  size_t len, n = 0;
  const char *raw = luaL_checklstring(L, 1, &len), *end = raw + len;
  lua_settop(L, 1);
  lua_createtable(L, 0, 8);
  lua_createtable(L, 16, 0);
  while (raw < end) {
    const char *name = raw, *value = name + strlen(name) + 1;
    if (value >= end)
      break;
    raw = value + strlen(value) + 1;
    lua_pushlstring(L, name, (size_t)(value - 1 - name));
    lua_pushvalue(L, -1);
    lua_rawseti(L, 3, (lua_Integer)++n);
    lua_pushlstring(L, value, (size_t)(raw - 1 - value));
    lua_pushvalue(L, -1);
    lua_rawseti(L, 3, (lua_Integer)++n);
    /* stack: raw, headers, list, name, value */
    lua_pushvalue(L, -2);
    if (lua_rawget(L, 2) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushvalue(L, -3);
      lua_concat(L, 3);
      lua_replace(L, -2);
    } else {
      lua_pop(L, 1);
    }
    lua_rawset(L, 2);
  }
  lua_pushvalue(L, 2);
  luaL_setmetatable(L, LS_RES_HEADERS_MT);
  lua_pop(L, 1);
  return 2;
}

/* parser:head() -> status, raw fields (see core.http_fields), reason, version, keep_alive;
 * nothing before the head */
static int l_parser_head(lua_State *L) {
  ls_hcp_t *h = check_hcp(L);
  if (!h->head_done)
    return 0;
  lua_pushinteger(L, h->status);
  push_raw_fields(L, h, 0, h->ntrailer_start);
  lua_pushlstring(L, ls_buf_head(&h->head), h->reason_len);
  lua_pushstring(L, h->version_minor == 0 ? "1.0" : "1.1");
  lua_pushboolean(L, h->keep_alive);
  return 5;
}

/* parser:trailers() -> headers, fields of the trailer section, or nil */
static int l_parser_trailers(lua_State *L) {
  ls_hcp_t *h = check_hcp(L);
  if (!h->msg_done || h->nheaders == h->ntrailer_start)
    return 0;
  lua_pushcfunction(L, l_http_fields);
  push_raw_fields(L, h, h->ntrailer_start, h->nheaders);
  lua_call(L, 1, 2);
  return 2;
}

static int l_parser_extra(lua_State *L) {
  ls_hcp_t *h = check_hcp(L);
  lua_pushinteger(L, (lua_Integer)h->extra);
  return 1;
}

static int l_parser_continued(lua_State *L) {
  ls_hcp_t *h = check_hcp(L);
  lua_pushboolean(L, h->continued);
  return 1;
}

static int l_parser_gc(lua_State *L) {
  ls_hcp_t *h = luaL_checkudata(L, 1, LS_HTTP_PARSER_MT);
  if (h->headers != NULL) {
    ls_free(h->headers, sizeof(*h->headers) * h->header_count);
    h->headers = NULL;
  }
  ls_buf_free(&h->head);
  ls_buf_free(&h->body);
  ls_buf_free(&h->line);
  return 0;
}

/* headers[name] for a name in another case than the lower case the table holds. */
static int l_res_headers_index(lua_State *L) {
  char name[256];
  size_t len, i;
  const char *key;
  if (lua_type(L, 2) != LUA_TSTRING)
    return 0;
  key = lua_tolstring(L, 2, &len);
  if (len >= sizeof name)
    return 0;
  for (i = 0; i < len; i++)
    name[i] = (key[i] >= 'A' && key[i] <= 'Z') ? (char)(key[i] + ('a' - 'A')) : key[i];
  lua_pushlstring(L, name, len);
  lua_rawget(L, 1);
  return 1;
}

void ls_http_client_open(lua_State *L) {
  static const luaL_Reg meth[] = {{"start", l_parser_start},       {"feed", l_parser_feed},
                                  {"finish", l_parser_finish},     {"head", l_parser_head},
                                  {"trailers", l_parser_trailers}, {"extra", l_parser_extra},
                                  {"continued", l_parser_continued}, {NULL, NULL}};
  static const luaL_Reg metameth[] = {{"__gc", l_parser_gc}, {"__close", l_parser_gc}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_HTTP_PARSER_MT)) {
    luaL_setfuncs(L, metameth, 0);
    luaL_newlibtable(L, meth);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, meth, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LS_RES_HEADERS_MT)) {
    lua_pushcfunction(L, l_res_headers_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_parser_new);
  lua_setfield(L, -2, "http_response_parser");
  lua_pushcfunction(L, l_http_fields);
  lua_setfield(L, -2, "http_fields");
}

int ls_http_client_parse_all(lua_State *L, const char *data, size_t len, int is_head) {
  int top = lua_gettop(L), bad = 0;
  size_t off = 0;
  ls_hcp_t *h;
  lua_pushcfunction(L, l_parser_new);
  lua_createtable(L, 0, 1);
  lua_pushinteger(L, 1 << 20);
  lua_setfield(L, -2, "max_body");
  lua_call(L, 1, 1);
  h = lua_touserdata(L, -1);
  ls_hcp_start(h, is_head, h->body_max);
  /* In pieces of up to 7 bytes and then the rest, so that lines split across feeds too. */
  while (off < len && !bad) {
    size_t n = off == 0 ? (len < 7 ? len : 7) : len - off;
    lua_pushcfunction(L, l_parser_feed);
    lua_pushvalue(L, -2);
    lua_pushlstring(L, data + off, n);
    lua_call(L, 2, 3);
    bad = lua_isnil(L, -3);
    if (!bad && lua_toboolean(L, -3)) {
      lua_pushcfunction(L, l_http_fields);
      lua_pushcfunction(L, l_parser_head);
      lua_pushvalue(L, -6);
      lua_call(L, 1, 2);
      lua_remove(L, -2);
      lua_call(L, 1, 2);
      lua_settop(L, top + 1 + 3);
    }
    lua_pop(L, 3);
    off += n;
  }
  if (!bad) {
    lua_pushcfunction(L, l_parser_finish);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 3);
    bad = lua_isnil(L, -3);
    lua_pop(L, 3);
    lua_pushcfunction(L, l_parser_trailers);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
  }
  lua_settop(L, top);
  return bad;
}
