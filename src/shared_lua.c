/* srv.shared: the Lua functions over the shared-memory store (src/shared.c).
 *
 * Arguments are checked and converted before the store is locked, and results are pushed
 * after it is unlocked: a Lua error (a bad argument, the memory limit) must never unwind
 * through a held lock. Values are copied out into a stack buffer, or into a userdata made
 * outside the lock when the store says the buffer was too small. */
#include "shared.h"

#include <string.h>

#define KEYS_DEFAULT_MAX 1024

static ls_shared_t *zone_of(lua_State *L) {
  ls_shared_t **slot = lua_touserdata(L, lua_upvalueindex(1));
  if (*slot == NULL) {
    *slot = ls_shared_new(LS_SHARED_DEFAULT_SIZE);
    if (*slot == NULL)
      luaL_error(L, "shared: cannot map %d MiB of shared memory",
                 (int)(LS_SHARED_DEFAULT_SIZE >> 20));
  }
  return *slot;
}

static const char *check_key(lua_State *L, size_t *len) {
  const char *key = luaL_checklstring(L, 1, len);
  if (*len > LS_SHARED_KEY_MAX)
    return NULL;
  return key;
}

/* A number argument as the store's value: an integer stays an integer, as in Lua. */
static void to_number(lua_State *L, int idx, ls_shv_t *v) {
  luaL_checknumber(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) {
    lua_stringtonumber(L, lua_tostring(L, idx));
    lua_replace(L, idx);
  }
  if (lua_isinteger(L, idx)) {
    v->type = LS_SHV_INTEGER;
    v->num.i = lua_tointeger(L, idx);
  } else {
    v->type = LS_SHV_FLOAT;
    v->num.n = lua_tonumber(L, idx);
  }
}

static void check_value(lua_State *L, int idx, ls_shv_t *v) {
  v->str = NULL;
  v->len = 0;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    v->type = LS_SHV_NIL;
    break;
  case LUA_TSTRING:
    v->type = LS_SHV_STRING;
    v->str = lua_tolstring(L, idx, &v->len);
    break;
  case LUA_TNUMBER:
    to_number(L, idx, v);
    break;
  case LUA_TBOOLEAN:
    v->type = LS_SHV_BOOLEAN;
    v->num.i = lua_toboolean(L, idx);
    break;
  default:
    luaL_argerror(L, idx, "expected a string, number, boolean or nil");
  }
}

static lua_Number check_ttl(lua_State *L, int idx) {
  lua_Number ttl = luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, ttl >= 0, idx, "ttl must not be negative");
  return ttl;
}

static void push_value(lua_State *L, const ls_shv_t *v) {
  switch (v->type) {
  case LS_SHV_STRING:
    lua_pushlstring(L, v->str, v->len);
    break;
  case LS_SHV_INTEGER:
    lua_pushinteger(L, (lua_Integer)v->num.i);
    break;
  case LS_SHV_FLOAT:
    lua_pushnumber(L, (lua_Number)v->num.n);
    break;
  case LS_SHV_BOOLEAN:
    lua_pushboolean(L, (int)v->num.i);
    break;
  default:
    lua_pushnil(L);
  }
}

/* nil, message (and forcible, for the writes). */
static int push_failure(lua_State *L, int code, int forcible, int with_forcible) {
  if (code == LS_SH_LOCK_FAILED)
    return luaL_error(L, "shared: %s", ls_shared_strerror(code));
  lua_pushnil(L);
  lua_pushstring(L, ls_shared_strerror(code));
  if (!with_forcible)
    return 2;
  lua_pushboolean(L, forcible);
  return 3;
}

static int key_too_long(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "key too long");
  return 2;
}

/* shared.get(key) -> value, or nil. */
static int l_get(lua_State *L) {
  ls_shared_t *sh = zone_of(L);
  char small[512], *buf = small;
  size_t klen, cap = sizeof small;
  const char *key = check_key(L, &klen);
  ls_shv_t v;
  if (key == NULL)
    return key_too_long(L);
  for (;;) {
    int rc = ls_shared_get(sh, key, klen, &v, buf, cap);
    if (rc == LS_SH_SMALL_BUFFER) {
      cap = v.len;
      buf = lua_newuserdatauv(L, cap, 0);
      continue;
    }
    if (rc == LS_SH_NOT_FOUND) {
      lua_pushnil(L);
      return 1;
    }
    if (rc != LS_SH_OK)
      return push_failure(L, rc, 0, 0);
    push_value(L, &v);
    return 1;
  }
}

/* set / add / replace (key, value [, ttl]) -> true, nil, forcible | nil, message, forcible. */
static int store(lua_State *L, ls_sh_mode_t mode) {
  ls_shared_t *sh = zone_of(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  lua_Number ttl = check_ttl(L, 3);
  ls_shv_t v;
  int forcible, rc;
  luaL_checkany(L, 2);
  check_value(L, 2, &v);
  if (key == NULL)
    return key_too_long(L);
  rc = ls_shared_store(sh, mode, key, klen, &v, ttl, &forcible);
  if (rc != LS_SH_OK)
    return push_failure(L, rc, forcible, 1);
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

static int l_set(lua_State *L) { return store(L, LS_SH_SET); }
static int l_add(lua_State *L) { return store(L, LS_SH_ADD); }
static int l_replace(lua_State *L) { return store(L, LS_SH_REPLACE); }

/* shared.incr(key [, by [, init [, init_ttl]]]) -> new value, nil, forcible. by defaults to 1;
 * a missing key starts from init (default 0). nil, "not a number" for another kind of value. */
static int l_incr(lua_State *L) {
  ls_shared_t *sh = zone_of(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  ls_shv_t by, init, out;
  lua_Number init_ttl;
  int forcible, rc;
  if (lua_isnoneornil(L, 2)) {
    by.type = LS_SHV_INTEGER;
    by.num.i = 1;
  } else {
    to_number(L, 2, &by);
  }
  if (!lua_isnoneornil(L, 3))
    to_number(L, 3, &init);
  init_ttl = check_ttl(L, 4);
  if (key == NULL)
    return key_too_long(L);
  rc = ls_shared_incr(sh, key, klen, &by, lua_isnoneornil(L, 3) ? NULL : &init, init_ttl, &out,
                      &forcible);
  if (rc != LS_SH_OK)
    return push_failure(L, rc, forcible, rc == LS_SH_NO_MEMORY);
  push_value(L, &out);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

/* shared.delete(key) -> true if the key was there, false if not. */
static int l_delete(lua_State *L) {
  ls_shared_t *sh = zone_of(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  int found;
  if (key == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  found = ls_shared_delete(sh, key, klen);
  if (found < 0)
    return push_failure(L, LS_SH_LOCK_FAILED, 0, 0);
  lua_pushboolean(L, found);
  return 1;
}

/* shared.ttl(key) -> seconds left (0: never expires) | nil, "not found". */
static int l_ttl(lua_State *L) {
  ls_shared_t *sh = zone_of(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  double ttl = 0;
  int rc;
  if (key == NULL)
    return key_too_long(L);
  rc = ls_shared_ttl(sh, key, klen, &ttl);
  if (rc != LS_SH_OK)
    return push_failure(L, rc, 0, 0);
  lua_pushnumber(L, (lua_Number)ttl);
  return 1;
}

/* shared.expire(key, ttl) -> true | nil, "not found". A ttl of 0 makes the key permanent. */
static int l_expire(lua_State *L) {
  ls_shared_t *sh = zone_of(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  lua_Number ttl;
  int rc;
  luaL_checknumber(L, 2);
  ttl = check_ttl(L, 2);
  if (key == NULL)
    return key_too_long(L);
  rc = ls_shared_expire(sh, key, klen, ttl);
  if (rc != LS_SH_OK)
    return push_failure(L, rc, 0, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* shared.keys([max]) -> a list of at most max keys (default 1024; 0: all), most recently used
 * first. */
static int l_keys(lua_State *L) {
  ls_shared_t *sh = zone_of(L);
  lua_Integer max = luaL_optinteger(L, 1, KEYS_DEFAULT_MAX);
  char small[2048], *buf = small;
  size_t cap = sizeof small, needed, count, i, pos = 0;
  luaL_argcheck(L, max >= 0, 1, "max must not be negative");
  for (;;) {
    int rc = ls_shared_keys(sh, (size_t)max, buf, cap, &needed, &count);
    if (rc == LS_SH_SMALL_BUFFER) {
      cap = needed + needed / 4 + 256; /* room for keys set meanwhile */
      lua_settop(L, 1);
      buf = lua_newuserdatauv(L, cap, 0);
      continue;
    }
    if (rc != LS_SH_OK)
      return push_failure(L, rc, 0, 0);
    break;
  }
  lua_createtable(L, (int)(count < 1000000 ? count : 1000000), 0);
  for (i = 1; i <= count; i++) {
    uint32_t len;
    memcpy(&len, buf + pos, 4);
    lua_pushlstring(L, buf + pos + 4, len);
    lua_rawseti(L, -2, (lua_Integer)i);
    pos += 4 + len;
  }
  return 1;
}

/* shared.flush_all(): removes every key. */
static int l_flush_all(lua_State *L) {
  int rc = ls_shared_flush_all(zone_of(L));
  if (rc != LS_SH_OK)
    return push_failure(L, rc, 0, 0);
  return 0;
}

/* shared.flush_expired([max]) -> how many expired keys were removed (max 0 or none: all). */
static int l_flush_expired(lua_State *L) {
  ls_shared_t *sh = zone_of(L);
  lua_Integer max = luaL_optinteger(L, 1, 0);
  long n;
  luaL_argcheck(L, max >= 0, 1, "max must not be negative");
  n = ls_shared_flush_expired(sh, (size_t)max);
  if (n < 0)
    return push_failure(L, LS_SH_LOCK_FAILED, 0, 0);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* shared.free_space() -> bytes free in the zone's heap. */
static int l_free_space(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ls_shared_free_space(zone_of(L)));
  return 1;
}

/* shared.capacity() -> the size of the zone in bytes (--shared-size). */
static int l_capacity(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ls_shared_capacity(zone_of(L)));
  return 1;
}

void ls_shared_open(lua_State *L, ls_shared_t **slot) {
  static const luaL_Reg funcs[] = {
      {"get", l_get},           {"set", l_set},
      {"add", l_add},           {"replace", l_replace},
      {"incr", l_incr},         {"delete", l_delete},
      {"ttl", l_ttl},           {"expire", l_expire},
      {"keys", l_keys},         {"flush_all", l_flush_all},
      {"flush_expired", l_flush_expired}, {"free_space", l_free_space},
      {"capacity", l_capacity}, {NULL, NULL}};
  lua_newtable(L);
  lua_pushlightuserdata(L, slot);
  luaL_setfuncs(L, funcs, 1);
}
