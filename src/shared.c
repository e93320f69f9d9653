#include "shared.h"

#include <string.h>

#include "alloc.h"

/* One key and its value. The key and a string value live in the same block after the
 * struct. */
typedef struct entry_s {
  struct entry_s *next;
  uint64_t expires;  /* loop time in ms; 0: never */
  uint32_t hash;
  size_t key_len;
  int type;          /* LUA_TSTRING, LUA_TNUMBER, LUA_TBOOLEAN */
  int is_int;
  union {
    lua_Integer i;
    lua_Number n;
    int b;
    size_t str_len;
  } v;
  char data[];       /* key, then the string value */
} entry_t;

struct ls_shared_s {
  entry_t **buckets;
  size_t nbuckets;
  size_t count;
  uv_loop_t *loop;
};

static size_t entry_size(const entry_t *e) {
  return sizeof *e + e->key_len + (e->type == LUA_TSTRING ? e->v.str_len : 0);
}

/* The time now in the loop's clock: refreshed, since the loop may have been idle or busy in
 * Lua since it last looked. */
static uint64_t now_ms(const ls_shared_t *sh) {
  uv_update_time(sh->loop);
  return uv_now(sh->loop);
}

static uint32_t hash_key(const char *s, size_t len) {
  uint32_t h = 2166136261u; /* FNV-1a */
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 16777619u;
  }
  return h;
}

ls_shared_t *ls_shared_new(uv_loop_t *loop) {
  ls_shared_t *sh = ls_malloc(sizeof *sh);
  if (sh == NULL)
    return NULL;
  sh->nbuckets = 64;
  sh->count = 0;
  sh->loop = loop;
  sh->buckets = ls_malloc(sh->nbuckets * sizeof *sh->buckets);
  if (sh->buckets == NULL) {
    ls_free(sh, sizeof *sh);
    return NULL;
  }
  memset(sh->buckets, 0, sh->nbuckets * sizeof *sh->buckets);
  return sh;
}

void ls_shared_free(ls_shared_t *sh) {
  size_t i;
  if (sh == NULL)
    return;
  for (i = 0; i < sh->nbuckets; i++) {
    entry_t *e = sh->buckets[i];
    while (e != NULL) {
      entry_t *next = e->next;
      ls_free(e, entry_size(e));
      e = next;
    }
  }
  ls_free(sh->buckets, sh->nbuckets * sizeof *sh->buckets);
  ls_free(sh, sizeof *sh);
}

static int expired(const ls_shared_t *sh, const entry_t *e) {
  return e->expires != 0 && now_ms(sh) >= e->expires;
}

/* The link that points at the entry for key (or at NULL where it would go). Expired entries
 * met on the way are removed. */
static entry_t **find(ls_shared_t *sh, const char *key, size_t len, uint32_t hash) {
  entry_t **link = &sh->buckets[hash & (sh->nbuckets - 1)];
  while (*link != NULL) {
    entry_t *e = *link;
    if (expired(sh, e)) {
      *link = e->next;
      sh->count--;
      ls_free(e, entry_size(e));
      continue;
    }
    if (e->hash == hash && e->key_len == len && memcmp(e->data, key, len) == 0)
      return link;
    link = &e->next;
  }
  return link;
}

static void grow(ls_shared_t *sh) {
  size_t n = sh->nbuckets * 2, i;
  entry_t **b = ls_malloc(n * sizeof *b);
  if (b == NULL)
    return; /* longer chains, still correct */
  memset(b, 0, n * sizeof *b);
  for (i = 0; i < sh->nbuckets; i++) {
    entry_t *e = sh->buckets[i];
    while (e != NULL) {
      entry_t *next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
      e = next;
    }
  }
  ls_free(sh->buckets, sh->nbuckets * sizeof *sh->buckets);
  sh->buckets = b;
  sh->nbuckets = n;
}

static void push_value(lua_State *L, const entry_t *e) {
  switch (e->type) {
  case LUA_TSTRING:
    lua_pushlstring(L, e->data + e->key_len, e->v.str_len);
    break;
  case LUA_TBOOLEAN:
    lua_pushboolean(L, e->v.b);
    break;
  default:
    if (e->is_int)
      lua_pushinteger(L, e->v.i);
    else
      lua_pushnumber(L, e->v.n);
  }
}

static ls_shared_t *upvalue_shared(lua_State *L) {
  return *(ls_shared_t **)lua_touserdata(L, lua_upvalueindex(1));
}

/* shared.get(key) -> value or nil. */
static int l_get(lua_State *L) {
  ls_shared_t *sh = upvalue_shared(L);
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  entry_t **link = find(sh, key, len, hash_key(key, len));
  if (*link == NULL)
    return 0;
  push_value(L, *link);
  return 1;
}

/* Stores the value at stack index vidx under key (nil deletes), expiring after ttl seconds
 * (0: never). Raises on a value of another type or when memory runs out. */
static void store(lua_State *L, ls_shared_t *sh, const char *key, size_t len, int vidx,
                  lua_Number ttl) {
  uint32_t hash = hash_key(key, len);
  int type = lua_type(L, vidx);
  size_t slen = 0;
  entry_t **link, *e;
  luaL_argcheck(L, type == LUA_TSTRING || type == LUA_TNUMBER || type == LUA_TBOOLEAN ||
                       type == LUA_TNIL,
                vidx, "expected a string, number, boolean or nil");
  link = find(sh, key, len, hash);
  if (*link != NULL) {
    e = *link;
    *link = e->next;
    sh->count--;
    ls_free(e, entry_size(e));
  }
  if (type == LUA_TNIL)
    return;
  if (type == LUA_TSTRING)
    lua_tolstring(L, vidx, &slen);
  e = ls_malloc(sizeof *e + len + slen);
  if (e == NULL)
    luaL_error(L, "shared: not enough memory");
  e->hash = hash;
  e->key_len = len;
  e->type = type;
  e->is_int = 0;
  memcpy(e->data, key, len);
  if (type == LUA_TSTRING) {
    e->v.str_len = slen;
    memcpy(e->data + len, lua_tostring(L, vidx), slen);
  } else if (type == LUA_TBOOLEAN) {
    e->v.b = lua_toboolean(L, vidx);
  } else if (lua_isinteger(L, vidx)) {
    e->is_int = 1;
    e->v.i = lua_tointeger(L, vidx);
  } else {
    e->v.n = lua_tonumber(L, vidx);
  }
  /* A ttl too long to count in milliseconds (math.huge, 1e300) never expires. */
  e->expires = ttl > 0 && ttl < 1e12 ? now_ms(sh) + (uint64_t)(ttl * 1000) + 1 : 0;
  if (sh->count >= sh->nbuckets)
    grow(sh);
  link = &sh->buckets[hash & (sh->nbuckets - 1)];
  e->next = *link;
  *link = e;
  sh->count++;
}

/* shared.set(key, value [, ttl_seconds]) -> true. A nil value deletes the key. */
static int l_set(lua_State *L) {
  ls_shared_t *sh = upvalue_shared(L);
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  lua_Number ttl = luaL_optnumber(L, 3, 0);
  luaL_argcheck(L, ttl >= 0, 3, "ttl must not be negative");
  luaL_checkany(L, 2);
  store(L, sh, key, len, 2, ttl);
  lua_pushboolean(L, 1);
  return 1;
}

/* shared.incr(key [, by [, init]]) -> the new value. A missing key starts from init (default
 * 0); by defaults to 1. nil, "not a number" if the key holds something else. */
static int l_incr(lua_State *L) {
  ls_shared_t *sh = upvalue_shared(L);
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  entry_t **link;
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 3);
    lua_pushinteger(L, 1);
    lua_replace(L, 2);
  }
  luaL_checknumber(L, 2);
  link = find(sh, key, len, hash_key(key, len));
  if (*link == NULL) {
    if (lua_isnoneornil(L, 3)) {
      lua_pushinteger(L, 0);
    } else {
      luaL_checknumber(L, 3);
      lua_pushvalue(L, 3);
    }
    lua_pushvalue(L, 2);
    lua_arith(L, LUA_OPADD);
    store(L, sh, key, len, lua_gettop(L), 0);
    return 1;
  }
  if ((*link)->type != LUA_TNUMBER) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a number");
    return 2;
  }
  push_value(L, *link);
  lua_pushvalue(L, 2);
  lua_arith(L, LUA_OPADD);
  if (lua_isinteger(L, -1)) {
    (*link)->is_int = 1;
    (*link)->v.i = lua_tointeger(L, -1);
  } else {
    (*link)->is_int = 0;
    (*link)->v.n = lua_tonumber(L, -1);
  }
  return 1;
}

/* shared.delete(key) -> true if it was there. */
static int l_delete(lua_State *L) {
  ls_shared_t *sh = upvalue_shared(L);
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  entry_t **link = find(sh, key, len, hash_key(key, len));
  entry_t *e = *link;
  if (e != NULL) {
    *link = e->next;
    sh->count--;
    ls_free(e, entry_size(e));
  }
  lua_pushboolean(L, e != NULL);
  return 1;
}

/* shared.keys() -> a list of the keys (in no order). */
static int l_keys(lua_State *L) {
  ls_shared_t *sh = upvalue_shared(L);
  size_t i;
  lua_Integer n = 0;
  lua_createtable(L, (int)sh->count, 0);
  for (i = 0; i < sh->nbuckets; i++) {
    entry_t *e;
    find(sh, "", 0, (uint32_t)i); /* drops expired entries of this bucket */
    for (e = sh->buckets[i]; e != NULL; e = e->next) {
      lua_pushlstring(L, e->data, e->key_len);
      lua_rawseti(L, -2, ++n);
    }
  }
  return 1;
}

void ls_shared_open(lua_State *L, ls_shared_t **slot) {
  static const luaL_Reg funcs[] = {{"get", l_get},       {"set", l_set},   {"incr", l_incr},
                                   {"delete", l_delete}, {"keys", l_keys}, {NULL, NULL}};
  lua_newtable(L);
  lua_pushlightuserdata(L, slot);
  luaL_setfuncs(L, funcs, 1);
}
