#include "addr.h"

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
