/* libFuzzer target: arbitrary bytes as a server's whole answer, through the HTTP client's
 * response parser (llhttp in response mode and its limits, src/http_client.c), fed in two
 * pieces so that lines split across reads, then ended as a peer that closes. The first byte
 * chooses whether the answer is to a HEAD request. Findings: a crash, a sanitizer report, or
 * a Lua error escaping the parser (a bad answer must come back as nil, "bad response: ..."). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_lua.h"
#include "http_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse(lua_State *S) {
  size_t len;
  const char *s = lua_tolstring(S, 1, &len);
  lua_pushinteger(S, ls_http_client_parse_all(S, s, len, (int)lua_tointeger(S, 2)));
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  lua_State *L = fuzz_lua();
  if (!ready) {
    lua_newtable(L); /* registers the parser's metatable; the table of functions is dropped */
    ls_http_client_open(L);
    lua_pop(L, 1);
    ready = 1;
  }
  if (size == 0)
    return 0;
  lua_pushcfunction(L, parse);
  lua_pushlstring(L, (const char *)data + 1, size - 1);
  lua_pushinteger(L, data[0] & 1);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    fprintf(stderr, "fuzz-http_client: error escaped: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
