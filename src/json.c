#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"

/* Registry keys: addresses of statics, found without hashing a name. */
static const char array_mt_key, scratch_key;
/* json.empty_array is a light userdata pointing here; json.null is the NULL light userdata. */
static const char empty_array_tag;
/* The error value that tells decode's protected part hit the depth limit. */
static const char too_deep_tag;

/* The scratch buffer kept between encodes (one per Lua state). The buffer lives in a registry
 * userdata, so an error raised halfway through an encode leaves nothing to free; it shrinks
 * back after an encode that needed more than SCRATCH_KEEP bytes. Encoding calls no Lua code
 * (raw table access only), so one buffer per state is never used by two encodes at once. */
#define SCRATCH_KEEP (64 * 1024)
typedef struct scratch_s {
  char *p;
  size_t len, cap;
} scratch_t;

static void push_array_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);
}

static int scratch_gc(lua_State *L) {
  scratch_t *s = lua_touserdata(L, 1);
  if (s->p != NULL)
    ls_free(s->p, s->cap);
  s->p = NULL;
  s->len = s->cap = 0;
  return 0;
}

static scratch_t *get_scratch(lua_State *L) {
  scratch_t *s;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &scratch_key) == LUA_TUSERDATA) {
    s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
  }
  lua_pop(L, 1);
  s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &scratch_key);
  return s;
}

/* ---- encoding ----------------------------------------------------------------------------- */

typedef struct enc_s {
  lua_State *L;
  scratch_t *buf;
  int mt;    /* stack index of array_mt */
  int depth; /* tables entered */
  /* Where the value being encoded sits: at each depth, the stack index of the object key
   * (0 for an array element, -1 while the table's keys are being checked) or the index. */
  struct {
    int key;
    lua_Integer index;
  } path[LS_JSON_MAX_DEPTH + 1];
} enc_t;

/* Appends " (at .a[2].b)" for the current path to the message on top of the stack. */
static void push_path(enc_t *e) {
  char out[256];
  size_t o = 0;
  int d;
  out[0] = '\0';
  for (d = 1; d <= e->depth && o < sizeof out - 48; d++) {
    if (e->path[d].key > 0) {
      size_t n, i, ident = 1;
      const char *k = lua_tolstring(e->L, e->path[d].key, &n);
      for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (i > 0 && c >= '0' && c <= '9')))
          ident = 0;
      }
      if (ident && n > 0 && n <= 32)
        o += (size_t)snprintf(out + o, sizeof out - o, ".%s", k);
      else
        o += (size_t)snprintf(out + o, sizeof out - o, "[\"%.32s%s\"]", k, n > 32 ? "..." : "");
    } else if (e->path[d].key == 0) {
      o += (size_t)snprintf(out + o, sizeof out - o, "[%lld]", (long long)e->path[d].index);
    }
  }
  if (d <= e->depth)
    o += (size_t)snprintf(out + o, sizeof out - o, "...");
  if (o == 0)
    lua_pushliteral(e->L, "");
  else
    lua_pushfstring(e->L, " (at %s)", out);
}

/* Raises "file:line: json: <message> (at <path>)", located at the Lua caller. */
static int fail(enc_t *e, const char *fmt, ...) {
  lua_State *L = e->L;
  va_list ap;
  luaL_where(L, 1);
  lua_pushliteral(L, "json: ");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  push_path(e);
  lua_concat(L, 4);
  return lua_error(L);
}

static void reserve(enc_t *e, size_t n) {
  scratch_t *b = e->buf;
  size_t cap;
  char *p;
  if (b->cap - b->len >= n)
    return;
  cap = b->cap ? b->cap : 256;
  while (cap - b->len < n)
    cap *= 2;
  p = ls_realloc(b->p, b->cap, cap);
  if (p == NULL)
    fail(e, "not enough memory");
  b->p = p;
  b->cap = cap;
}

static void put(enc_t *e, const char *s, size_t n) {
  reserve(e, n);
  memcpy(e->buf->p + e->buf->len, s, n);
  e->buf->len += n;
}

static void put_char(enc_t *e, char c) {
  reserve(e, 1);
  e->buf->p[e->buf->len++] = c;
}

/* The length of the valid UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF) that starts with the non-ASCII byte at s, or 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0], lo = 0x80, hi = 0xBF;
  size_t len, i;
  if (c < 0xC2 || c > 0xF4)
    return 0;
  len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (c == 0xE0)
    lo = 0xA0;
  else if (c == 0xED)
    hi = 0x9F;
  else if (c == 0xF0)
    lo = 0x90;
  else if (c == 0xF4)
    hi = 0x8F;
  if (n < len || s[1] < lo || s[1] > hi)
    return 0;
  for (i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80)
      return 0;
  return len;
}

/* What each byte needs in a JSON string: 0 copied, 1 escaped (control characters, '"' and
 * '\\'), 2 starts a UTF-8 sequence (checked by utf8_seq). */
/* clang-format off */
#define ROW(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char byte_class[256] = {
  ROW(1), ROW(1),                                   /* 0x00-0x1f */
  0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   /* 0x20-0x2f: '"' */
  ROW(0), ROW(0),                                   /* 0x30-0x4f */
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,   /* 0x50-0x5f: '\\' */
  ROW(0), ROW(0),                                   /* 0x60-0x7f */
  ROW(2), ROW(2), ROW(2), ROW(2), ROW(2), ROW(2), ROW(2), ROW(2)};
#undef ROW
/* clang-format on */

/* Strings go out as UTF-8 with `"`, `\` and control characters escaped; "/" is not escaped
 * (it needs no escape in JSON; lua-cjson's "\/" only made output longer). */
static void encode_string(enc_t *e, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  char *o;
  if (n > (((size_t)-1) - 2) / 6)
    fail(e, "string too long");
  reserve(e, n * 6 + 2); /* the longest form: every byte as \u00XX */
  o = e->buf->p + e->buf->len;
  *o++ = '"';
  while (i < n) {
    unsigned char c = s[i];
    switch (byte_class[c]) {
    case 0:
      *o++ = (char)c;
      i++;
      break;
    case 1:
      *o++ = '\\';
      switch (c) {
      case '"':
        *o++ = '"';
        break;
      case '\\':
        *o++ = '\\';
        break;
      case '\n':
        *o++ = 'n';
        break;
      case '\r':
        *o++ = 'r';
        break;
      case '\t':
        *o++ = 't';
        break;
      case '\b':
        *o++ = 'b';
        break;
      case '\f':
        *o++ = 'f';
        break;
      default:
        *o++ = 'u';
        *o++ = '0';
        *o++ = '0';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
      }
      i++;
      break;
    default: {
      size_t len = utf8_seq(s + i, n - i);
      if (len == 0) {
        char bad[3] = {hex[c >> 4], hex[c & 15], '\0'};
        e->buf->len = (size_t)(o - e->buf->p);
        fail(e, "string is not valid UTF-8 (byte %d is 0x%s)", (int)(i + 1), bad);
      }
      memcpy(o, s + i, len);
      o += len;
      i += len;
    }
    }
  }
  *o++ = '"';
  e->buf->len = (size_t)(o - e->buf->p);
}

/* Writes the shortest of %.15g, %.16g, %.17g that reads back as the same double, so 0.1
 * stays "0.1" and 3.0 becomes "3" (as lua-cjson and JavaScript write it). */
static int format_double(char *out, size_t size, double d) {
  int n = 0, prec;
  char *p;
  for (prec = 15; prec <= 17; prec++) {
    n = snprintf(out, size, "%.*g", prec, d);
    if (strtod(out, NULL) == d)
      break;
  }
  for (p = out; *p; p++) /* a locale's decimal comma */
    if (*p == ',')
      *p = '.';
  return n;
}

static int format_integer(char *out, lua_Integer v) {
  char tmp[24];
  int n = 0, o = 0;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (v < 0)
    out[o++] = '-';
  while (n > 0)
    out[o++] = tmp[--n];
  return o;
}

static void encode_value(enc_t *e, int idx);

/* Raises for the key at key_idx, which cannot be in a JSON array (`in_array`) or object. */
static void fail_key(enc_t *e, int key_idx, int in_array) {
  lua_State *L = e->L;
  if (lua_type(L, key_idx) == LUA_TSTRING)
    fail(e, "table mixes array items and the string key \"%s\"", lua_tostring(L, key_idx));
  if (!in_array && lua_isinteger(L, key_idx) && lua_tointeger(L, key_idx) >= 1)
    fail(e, "table mixes string keys and the key %s", luaL_tolstring(L, key_idx, NULL));
  fail(e, "table has the key %s (JSON keys are strings or array indices 1..n)",
       luaL_tolstring(L, key_idx, NULL));
}

/* The array items t[1..n] (nil as null). */
static void encode_items(enc_t *e, int idx, lua_Integer n) {
  lua_State *L = e->L;
  lua_Integer i;
  put_char(e, '[');
  for (i = 1; i <= n; i++) {
    if (i > 1)
      put_char(e, ',');
    e->path[e->depth].key = 0;
    e->path[e->depth].index = i;
    lua_rawgeti(L, idx, i);
    encode_value(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  put_char(e, ']');
}

/* A table whose first key is an integer, or that carries array_mt (`with_mt`). Items come out
 * as lua_next finds them while the keys run 1, 2, 3...; if one comes out of order, the output
 * is rewound and the keys checked: an array_mt table may have holes up to #t (null), a plain
 * table must have exactly the keys 1..n. */
static void encode_array(enc_t *e, int idx, int with_mt) {
  lua_State *L = e->L;
  size_t mark = e->buf->len;
  lua_Integer expect = 1, max = 0, count = 0;
  put_char(e, '[');
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) != expect) {
      lua_pop(L, 2);
      goto check;
    }
    if (expect > 1)
      put_char(e, ',');
    e->path[e->depth].key = 0;
    e->path[e->depth].index = expect;
    encode_value(e, lua_gettop(L));
    lua_pop(L, 1);
    expect++;
  }
  put_char(e, ']');
  return;

check:
  e->buf->len = mark;
  e->path[e->depth].key = -1;
  max = with_mt ? (lua_Integer)lua_rawlen(L, idx) : 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_Integer k = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : 0;
    lua_pop(L, 1);
    if (k < 1)
      fail_key(e, lua_gettop(L), 1);
    if (with_mt && k > max)
      fail(e, "array_mt table has the key %I beyond its length #t = %I", k, max);
    if (!with_mt && k > max)
      max = k;
    count++;
  }
  if (!with_mt && count != max)
    fail(e,
         "sparse array: keys up to %I but only %I items (use array_mt and json.null "
         "for holes)",
         max, count);
  encode_items(e, idx, max);
}

/* A table whose first key (on the stack at -2, its value at -1) is a string: every key must
 * be a string. */
static void encode_object(enc_t *e, int idx) {
  lua_State *L = e->L;
  int first = 1;
  put_char(e, '{');
  do {
    size_t n;
    const char *k;
    if (lua_type(L, -2) != LUA_TSTRING) {
      e->path[e->depth].key = -1;
      fail_key(e, lua_gettop(L) - 1, 0);
    }
    if (!first)
      put_char(e, ',');
    first = 0;
    k = lua_tolstring(L, -2, &n);
    encode_string(e, k, n);
    put_char(e, ':');
    e->path[e->depth].key = lua_gettop(L) - 1;
    encode_value(e, lua_gettop(L));
    lua_pop(L, 1);
  } while (lua_next(L, idx) != 0);
  put_char(e, '}');
}

static void encode_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  int with_mt = 0;
  if (e->depth >= LS_JSON_MAX_DEPTH)
    fail(e, "nesting deeper than %d levels (a table that contains itself?)", LS_JSON_MAX_DEPTH);
  if (!lua_checkstack(L, 6))
    fail(e, "not enough memory");
  e->depth++;
  e->path[e->depth].key = -1;
  if (lua_getmetatable(L, idx)) {
    with_mt = lua_rawequal(L, -1, e->mt);
    lua_pop(L, 1);
  }
  if (with_mt) {
    encode_array(e, idx, 1);
  } else {
    lua_pushnil(L);
    if (lua_next(L, idx) == 0) {
      put(e, "{}", 2); /* an empty table without array_mt: an object, as in lua-cjson */
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      encode_object(e, idx);
    } else {
      lua_pop(L, 2);
      encode_array(e, idx, 0);
    }
  }
  e->depth--;
}

/* A userdata with a __pairs metamethod (req.headers) is encoded as the table its pairs give. */
static int encode_pairs(enc_t *e, int idx) {
  lua_State *L = e->L;
  int base = lua_gettop(L);
  idx = lua_absindex(L, idx);
  if (!lua_checkstack(L, 8))
    fail(e, "not enough memory");
  if (luaL_getmetafield(L, idx, "__pairs") == LUA_TNIL)
    return 0;
  lua_pushvalue(L, idx);
  lua_call(L, 1, 3);   /* iterator, state, control */
  lua_newtable(L);     /* base + 4: the pairs, collected */
  for (;;) {
    lua_pushvalue(L, base + 1);
    lua_pushvalue(L, base + 2);
    lua_pushvalue(L, base + 3);
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2)) {
      lua_pop(L, 2);
      break;
    }
    lua_pushvalue(L, -2);
    lua_replace(L, base + 3);
    lua_rawset(L, base + 4);
  }
  encode_table(e, base + 4);
  lua_settop(L, base);
  return 1;
}

static void encode_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  char num[40];
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    encode_string(e, s, n);
    break;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      put(e, num, (size_t)format_integer(num, lua_tointeger(L, idx)));
    } else {
      double d = (double)lua_tonumber(L, idx);
      if (isnan(d))
        fail(e, "cannot encode NaN (JSON has no NaN)");
      if (isinf(d))
        fail(e, "cannot encode %s (JSON has no infinities)", d > 0 ? "inf" : "-inf");
      put(e, num, (size_t)format_double(num, sizeof num, d));
    }
    break;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx))
      put(e, "true", 4);
    else
      put(e, "false", 5);
    break;
  case LUA_TNIL:
    put(e, "null", 4);
    break;
  case LUA_TTABLE:
    encode_table(e, idx);
    break;
  case LUA_TLIGHTUSERDATA: {
    const void *p = lua_touserdata(L, idx);
    if (p == NULL) {
      put(e, "null", 4);
      break;
    }
    if (p == &empty_array_tag) {
      put(e, "[]", 2);
      break;
    }
  }
    /* fall through */
  default:
    if (lua_type(L, idx) == LUA_TUSERDATA && encode_pairs(e, idx))
      break;
    fail(e, "cannot encode a %s", luaL_typename(L, idx));
  }
}

const char *ls_json_encode(lua_State *L, int idx, size_t *len) {
  enc_t *e;
  scratch_t *buf;
  const char *out;
  /* The path makes enc_t about 16 KiB: on the heap through a userdata would cost an
   * allocation per encode, so it is on the C stack, which a coroutine shares. */
  enc_t encoder;
  idx = lua_absindex(L, idx);
  e = &encoder;
  e->L = L;
  e->depth = 0;
  e->buf = buf = get_scratch(L);
  buf->len = 0;
  push_array_mt(L);
  e->mt = lua_gettop(L);
  encode_value(e, idx);
  lua_pop(L, 1);
  out = lua_pushlstring(L, buf->p, buf->len);
  if (len != NULL)
    *len = buf->len;
  if (buf->cap > SCRATCH_KEEP) {
    ls_free(buf->p, buf->cap);
    buf->p = NULL;
    buf->cap = 0;
  }
  buf->len = 0;
  return out;
}

/* ---- decoding ----------------------------------------------------------------------------- */

static void push_tree(lua_State *L, json_t *v, int depth, int mt) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    void *it;
    size_t n = json_object_size(v);
    if (depth >= LS_JSON_MAX_DEPTH) {
      lua_pushlightuserdata(L, (void *)&too_deep_tag);
      lua_error(L);
    }
    luaL_checkstack(L, 4, NULL);
    lua_createtable(L, 0, n > 1 << 24 ? 1 << 24 : (int)n);
    for (it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it)) {
      lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
      push_tree(L, json_object_iter_value(it), depth + 1, mt);
      lua_rawset(L, -3);
    }
    break;
  }
  case JSON_ARRAY: {
    size_t i, n = json_array_size(v);
    if (depth >= LS_JSON_MAX_DEPTH) {
      lua_pushlightuserdata(L, (void *)&too_deep_tag);
      lua_error(L);
    }
    luaL_checkstack(L, 4, NULL);
    lua_createtable(L, n > 1 << 24 ? 1 << 24 : (int)n, 0);
    for (i = 0; i < n; i++) {
      push_tree(L, json_array_get(v, i), depth + 1, mt);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    break;
  }
  case JSON_STRING:
    lua_pushlstring(L, json_string_value(v), json_string_length(v));
    break;
  case JSON_INTEGER:
    lua_pushinteger(L, (lua_Integer)json_integer_value(v));
    break;
  case JSON_REAL:
    lua_pushnumber(L, (lua_Number)json_real_value(v));
    break;
  case JSON_TRUE:
    lua_pushboolean(L, 1);
    break;
  case JSON_FALSE:
    lua_pushboolean(L, 0);
    break;
  case JSON_NULL:
    lua_pushlightuserdata(L, NULL);
    break;
  }
}

/* The protected half of decode: the tree (light userdata at 1) into Lua values. */
static int push_tree_protected(lua_State *L) {
  json_t *root = lua_touserdata(L, 1);
  push_array_mt(L);
  push_tree(L, root, 0, 2);
  return 1;
}

/* The 1-based offset of the bracket that opens nesting level max + 1 (outside strings). */
static size_t too_deep_offset(const char *s, size_t len, int max) {
  size_t i;
  int depth = 0, in_string = 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '[' || c == '{') {
      if (++depth > max)
        return i + 1;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return len;
}

/* jansson quotes the text near the error; keep the message printable UTF-8 whatever the
 * input was, since applications send it back to clients. */
static void push_clean(lua_State *L, const char *text) {
  luaL_Buffer b;
  const unsigned char *s = (const unsigned char *)text;
  size_t n = strlen(text), i = 0;
  luaL_buffinit(L, &b);
  while (i < n) {
    size_t len = s[i] < 0x80 ? (s[i] >= 0x20 && s[i] < 0x7f) : utf8_seq(s + i, n - i);
    if (len == 0) {
      luaL_addchar(&b, '?');
      i++;
    } else {
      luaL_addlstring(&b, text + i, len);
      i += len;
    }
  }
  luaL_pushresult(&b);
}

int ls_json_decode(lua_State *L, const char *s, size_t len) {
  json_error_t err;
  json_t *root = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  int status;
  if (root == NULL) {
    enum json_error_code code = json_error_code(&err);
    lua_pushnil(L);
    if (code == json_error_out_of_memory)
      return luaL_error(L, "json: not enough memory");
    if (code == json_error_stack_overflow) {
      lua_pushfstring(L, "nesting deeper than %d levels at byte %I", LS_JSON_MAX_DEPTH,
                      (lua_Integer)too_deep_offset(s, len, LS_JSON_MAX_DEPTH));
      return 2;
    }
    push_clean(L, err.text);
    lua_pushfstring(L, "%s%s at line %d, column %d (byte %d)",
                    code == json_error_invalid_utf8 ? "invalid UTF-8: " : "", lua_tostring(L, -1),
                    err.line, err.column, err.position);
    lua_remove(L, -2);
    return 2;
  }
  lua_pushcfunction(L, push_tree_protected);
  lua_pushlightuserdata(L, root);
  status = lua_pcall(L, 1, 1, 0);
  json_decref(root);
  if (status == LUA_OK)
    return 1;
  if (lua_touserdata(L, -1) == &too_deep_tag) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushfstring(L, "nesting deeper than %d levels at byte %I", LS_JSON_MAX_DEPTH,
                    (lua_Integer)too_deep_offset(s, len, LS_JSON_MAX_DEPTH));
    return 2;
  }
  return lua_error(L);
}

/* ---- the module --------------------------------------------------------------------------- */

/* json.encode(value) -> string; raises for a value JSON cannot carry. */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  ls_json_encode(L, 1, NULL);
  return 1;
}

/* json.decode(text) -> value | nil, message. */
static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  return ls_json_decode(L, s, len);
}

void ls_json_open(lua_State *L) {
  static const luaL_Reg funcs[] = {{"encode", l_encode}, {"decode", l_decode}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushlightuserdata(L, (void *)&empty_array_tag);
  lua_setfield(L, -2, "empty_array");
  push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
}
