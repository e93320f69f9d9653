#include "addr.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "workers.h"

int ls_addr_parse(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (strcmp(host, "localhost") == 0)
    host = "127.0.0.1";
  else if (strcmp(host, "*") == 0)
    host = "0.0.0.0";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
}

void ls_addr_url(const char *scheme, const struct sockaddr_storage *ss, char *out, size_t size) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, host, sizeof host);
    snprintf(out, size, "%s://[%s]:%d", scheme, host, ntohs(a->sin6_port));
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, host, sizeof host);
    snprintf(out, size, "%s://%s:%d", scheme, host, ntohs(a->sin_port));
  }
}

int ls_addr_push(lua_State *L, const struct sockaddr_storage *ss) {
  char host[INET6_ADDRSTRLEN];
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, host, sizeof host);
    lua_pushstring(L, host);
    lua_pushinteger(L, ntohs(a->sin_port));
    return 2;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, host, sizeof host);
    lua_pushstring(L, host);
    lua_pushinteger(L, ntohs(a->sin6_port));
    return 2;
  }
  return 0;
}

void ls_addr_key(const char *kind, const char *host, int port, char *out, size_t size) {
  struct sockaddr_storage ss;
  if (ls_addr_parse(host, port, &ss) != 0) {
    out[0] = '\0';
    return;
  }
  ls_addr_url(kind, &ss, out, size);
  if (port == 0 && !ls_worker_port0_key(out, size))
    out[0] = '\0'; /* a single process gets a new port at each reload */
}

/* ---- luasrv.Address ----------------------------------------------------------------------- */

#define LS_ADDR_MT "luasrv.Address"

size_t ls_sockaddr_size(const struct sockaddr *sa) {
  return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

int ls_sockaddr_port(const ls_sockaddr_u *a) {
  return ntohs(a->sa.sa_family == AF_INET6 ? a->in6.sin6_port : a->in4.sin_port);
}

void ls_sockaddr_host(const ls_sockaddr_u *a, char *host, size_t size) {
  if (a->sa.sa_family == AF_INET6)
    uv_ip6_name(&a->in6, host, size);
  else
    uv_ip4_name(&a->in4, host, size);
}

int ls_addr_parse_literal(const char *host, int port, ls_sockaddr_u *out) {
  memset(out, 0, sizeof *out);
  if (uv_ip4_addr(host, port, &out->in4) == 0)
    return 0;
  return uv_ip6_addr(host, port, &out->in6);
}

void ls_addr_push_object(lua_State *L, const struct sockaddr *sa) {
  ls_sockaddr_u *a = lua_newuserdatauv(L, sizeof *a, 0);
  memset(a, 0, sizeof *a);
  memcpy(a, sa, ls_sockaddr_size(sa));
  luaL_setmetatable(L, LS_ADDR_MT);
}

ls_sockaddr_u *ls_addr_check(lua_State *L, int idx) { return luaL_checkudata(L, idx, LS_ADDR_MT); }

/* peer.host, peer.port, peer.family ("inet" or "inet6"). */
static int l_addr_index(lua_State *L) {
  ls_sockaddr_u *a = ls_addr_check(L, 1);
  const char *key = lua_tostring(L, 2);
  if (key == NULL) {
    lua_pushnil(L);
  } else if (strcmp(key, "host") == 0) {
    char host[INET6_ADDRSTRLEN];
    ls_sockaddr_host(a, host, sizeof host);
    lua_pushstring(L, host);
  } else if (strcmp(key, "port") == 0) {
    lua_pushinteger(L, ls_sockaddr_port(a));
  } else if (strcmp(key, "family") == 0) {
    lua_pushstring(L, a->sa.sa_family == AF_INET6 ? "inet6" : "inet");
  } else {
    lua_pushnil(L);
  }
  return 1;
}

/* "127.0.0.1:5353" or "[::1]:5353". */
static int l_addr_tostring(lua_State *L) {
  ls_sockaddr_u *a = ls_addr_check(L, 1);
  char host[INET6_ADDRSTRLEN];
  ls_sockaddr_host(a, host, sizeof host);
  if (a->sa.sa_family == AF_INET6)
    lua_pushfstring(L, "[%s]:%d", host, ls_sockaddr_port(a));
  else
    lua_pushfstring(L, "%s:%d", host, ls_sockaddr_port(a));
  return 1;
}

static int l_addr_eq(lua_State *L) {
  ls_sockaddr_u *a = ls_addr_check(L, 1);
  ls_sockaddr_u *b = ls_addr_check(L, 2);
  int same = a->sa.sa_family == b->sa.sa_family;
  if (same && a->sa.sa_family == AF_INET6)
    same = a->in6.sin6_port == b->in6.sin6_port &&
           memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof a->in6.sin6_addr) == 0 &&
           a->in6.sin6_scope_id == b->in6.sin6_scope_id;
  else if (same)
    same = a->in4.sin_port == b->in4.sin_port && a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
  lua_pushboolean(L, same);
  return 1;
}

void ls_addr_open(lua_State *L) {
  static const luaL_Reg addr_metameth[] = {{"__index", l_addr_index},
                                           {"__tostring", l_addr_tostring},
                                           {"__eq", l_addr_eq},
                                           {NULL, NULL}};
  if (luaL_newmetatable(L, LS_ADDR_MT))
    luaL_setfuncs(L, addr_metameth, 0);
  lua_pop(L, 1);
}
