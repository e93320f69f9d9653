/* libFuzzer target: arbitrary bytes through srv.json's decoder (jansson, then the tree into Lua
 * values), and what it accepts back through the encoder. Findings: a crash or sanitizer report;
 * a decoded value the encoder refuses (everything decode makes must encode); a round trip
 * decode(encode(v)) that differs from v; the same bytes as a Lua string that encode accepts
 * without reading back equal. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fuzz_lua.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static void finding(const char *what, const char *detail) {
  fprintf(stderr, "fuzz-json: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  abort();
}

/* Equal as JSON values: numbers by value (3.0 goes out as 3 and comes back an integer),
 * tables key by key, arrays with array_mt on both sides. */
static int same(lua_State *S, int a, int b, int depth) {
  int n = 0;
  if (depth > LS_JSON_MAX_DEPTH + 1)
    return 0;
  if (lua_type(S, a) != lua_type(S, b))
    return 0;
  if (lua_type(S, a) != LUA_TTABLE)
    return lua_rawequal(S, a, b);
  luaL_checkstack(S, 8, NULL);
  n = lua_getmetatable(S, a);
  n += lua_getmetatable(S, b);
  lua_pop(S, n);
  if (n == 1)
    return 0;
  n = 0;
  lua_pushnil(S);
  while (lua_next(S, a) != 0) {
    int ok;
    lua_pushvalue(S, -2);
    lua_rawget(S, b);
    ok = same(S, lua_gettop(S) - 1, lua_gettop(S), depth + 1);
    lua_pop(S, 2);
    if (!ok) {
      lua_pop(S, 1);
      return 0;
    }
    n++;
  }
  lua_pushnil(S);
  while (lua_next(S, b) != 0) {
    lua_pop(S, 1);
    n--;
  }
  return n == 0;
}

/* Runs in a pcall: 1 = the input as a string. */
static int check(lua_State *S) {
  size_t len, out_len;
  const char *in = lua_tolstring(S, 1, &len);
  int top;
  if (ls_json_decode(S, in, len) == 2) {
    if (!lua_isstring(S, -1))
      finding("decode failed without a message", NULL);
  } else {
    /* 2 = the value; everything decode makes must encode, and read back the same */
    const char *out = ls_json_encode(S, 2, &out_len); /* raises: a finding (see below) */
    top = lua_gettop(S);
    if (ls_json_decode(S, out, out_len) != 1)
      finding("the encoder's output does not decode", lua_tostring(S, -1));
    lua_settop(S, top + 1);
    if (!same(S, 2, top + 1, 0))
      finding("decode(encode(v)) differs from v", out);
  }
  /* The bytes as a Lua string: encode refuses them only when they are not UTF-8. */
  lua_settop(S, 1);
  lua_pushvalue(S, lua_upvalueindex(1)); /* protected encode of the raw string */
  lua_pushvalue(S, 1);
  if (lua_pcall(S, 1, 1, 0) != LUA_OK) {
    if (strstr(lua_tostring(S, -1), "not valid UTF-8") == NULL)
      finding("encoding a string failed for another reason", lua_tostring(S, -1));
  } else {
    const char *out = lua_tolstring(S, -1, &out_len);
    if (ls_json_decode(S, out, out_len) != 1 || !lua_rawequal(S, 1, -1))
      finding("a string did not come back from encode and decode", out);
  }
  return 0;
}

static int encode_only(lua_State *S) {
  ls_json_encode(S, 1, NULL);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  L = fuzz_lua();
  lua_settop(L, 0);
  lua_pushcfunction(L, encode_only);
  lua_pushcclosure(L, check, 1);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    finding("a decoded value did not encode", lua_tostring(L, -1));
  return 0;
}
