#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/alloc.h"
#include "test.h"

static void counts_lua_state(void) {
  ls_alloc_t a;
  lua_State *L;
  ls_alloc_init(&a, 0);
  L = lua_newstate(ls_alloc_lua, &a);
  CHECK(L != NULL);
  CHECK(a.used > 0);
  luaL_openlibs(L);
  CHECK_EQ_INT(luaL_dostring(L, "local t = {} for i = 1, 1000 do t[i] = ('x'):rep(i) end"), 0);
  CHECK(a.peak >= a.used);
  lua_close(L);
  CHECK_EQ_INT(a.used, 0);
}

static void limit_becomes_lua_error(void) {
  ls_alloc_t a;
  lua_State *L;
  ls_alloc_init(&a, 0);
  L = lua_newstate(ls_alloc_lua, &a);
  luaL_openlibs(L);
  a.limit = a.used + 256 * 1024;
  CHECK(luaL_dostring(L, "local t = {} for i = 1, 1e6 do t[i] = ('y'):rep(64) .. i end") != 0);
  CHECK(strstr(lua_tostring(L, -1), "not enough memory") != NULL);
  CHECK(a.used <= a.limit);
  lua_pop(L, 1);
  a.limit = 0;
  /* The state is still usable once the limit is lifted. */
  CHECK_EQ_INT(luaL_dostring(L, "return 1 + 1"), 0);
  lua_close(L);
  CHECK_EQ_INT(a.used, 0);
}

static void fail_after_counts_down(void) {
  void *p, *q;
  ls_core_alloc()->fail_after = 1;
  p = ls_malloc(16);
  CHECK(p != NULL);
  q = ls_malloc(16);
  CHECK(q == NULL);
  ls_core_alloc()->fail_after = -1;
  ls_free(p, 16);
  CHECK_EQ_INT(ls_core_alloc()->used, 0);
}

static void realloc_tracks_sizes(void) {
  char *p = ls_malloc(10);
  memcpy(p, "0123456789", 10);
  p = ls_realloc(p, 10, 100);
  CHECK_EQ_INT(ls_core_alloc()->used, 100);
  CHECK_MEM(p, "0123456789", 10);
  p = ls_realloc(p, 100, 5);
  CHECK_EQ_INT(ls_core_alloc()->used, 5);
  ls_free(p, 5);
  CHECK_EQ_INT(ls_core_alloc()->used, 0);
}

int main(int argc, char **argv) {
  static const test_case_t cases[] = {{"counts_lua_state", counts_lua_state},
                                      {"limit_becomes_lua_error", limit_becomes_lua_error},
                                      {"fail_after_counts_down", fail_after_counts_down},
                                      {"realloc_tracks_sizes", realloc_tracks_sizes},
                                      {NULL, NULL}};
  return test_main(argc, argv, cases);
}
