/* libFuzzer target: arbitrary bytes as a server's whole answer, through the HTTP client's
 * response parser (llhttp in response mode and its limits, src/http_client.c), fed in two
 * pieces so that lines split across reads, then ended as a peer that closes. The first byte
 * chooses whether the answer is to a HEAD request. Findings: a crash, a sanitizer report, or
 * a Lua error escaping the parser (a bad answer must come back as nil, "bad response: ...").
 * The same bytes then go through the parser's C functions as the proxy's relay drives them
 * (src/http_proxy.c), and a complete head through the relay's filter of its fields, whose
 * output must be well-formed header lines. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

#include "fuzz_lua.h"
#include "http.h"
#include "http_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse(lua_State *S) {
  size_t len;
  const char *s = lua_tolstring(S, 1, &len);
  lua_pushinteger(S, ls_http_client_parse_all(S, s, len, (int)lua_tointeger(S, 2)));
  return 1;
}

/* Every line of b is "name: value\r\n", with no CR or LF inside. */
static void check_lines(const ls_buf_t *b) {
  const char *p = ls_buf_head(b), *end = p + ls_buf_len(b);
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *colon;
    if (nl == NULL || nl == p || nl[-1] != '\r')
      abort();
    colon = memchr(p, ':', (size_t)(nl - p));
    if (colon == NULL || colon == p || memchr(p, '\r', (size_t)(nl - 1 - p)) != NULL)
      abort();
    p = nl + 1;
  }
}

/* As the relay: feed in two pieces, finish, filter a complete head's fields. */
static int relay(lua_State *S) {
  size_t len, first;
  const char *s = lua_tolstring(S, 1, &len);
  ls_hcp_t *h = ls_hcp_push_new(S);
  ls_buf_t out;
  unsigned char has_clen = 0;
  ls_hcp_start(h, (int)lua_tointeger(S, 2), UINT64_MAX);
  first = len < 11 ? len : 11;
  if (ls_hcp_feed(h, s, first) == HPE_OK && ls_hcp_feed(h, s + first, len - first) == HPE_OK)
    ls_hcp_finish(h);
  if (!h->head_done)
    return 0;
  ls_buf_init(&out);
  if (ls_http__relay_fields(ls_buf_head(&h->head), h->headers, h->ntrailer_start,
                            (h->parser.flags & F_CHUNKED) != 0, &out, &has_clen) == 0)
    check_lines(&out);
  ls_buf_free(&out);
  return 0;
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
  lua_pushcfunction(L, relay);
  lua_pushlstring(L, (const char *)data + 1, size - 1);
  lua_pushinteger(L, data[0] & 1);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "fuzz-http_client: error escaped the relay's parse: %s\n",
            lua_tostring(L, -1));
    abort();
  }
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
