/* Socket addresses for listeners and clients: parsing listen hosts, naming bound addresses,
 * and the luasrv.Address object UDP handlers get. */
#ifndef LS_ADDR_H
#define LS_ADDR_H

#include <lua.h>
#include <uv.h>

/* Fills `ss` for an IPv4 or IPv6 literal, "localhost" (127.0.0.1) or "*" (0.0.0.0).
 * Returns 0 or a libuv error. */
int ls_addr_parse(const char *host, int port, struct sockaddr_storage *ss);

/* Writes "SCHEME://HOST:PORT" ("[HOST]" for IPv6) for a socket address. */
void ls_addr_url(const char *scheme, const struct sockaddr_storage *ss, char *out, size_t size);

/* The key a listener is matched by across reloads: "KIND://IP:PORT" with the host parsed as
 * ls_addr_parse does ("localhost" and "127.0.0.1" give the same key). An unparsable host
 * gives "" (never matched), and so does port 0 (any free port), except in a --workers worker,
 * where the master keeps the port: there it is "KIND://IP:0#N" (see ls_worker_port0_key). */
void ls_addr_key(const char *kind, const char *host, int port, char *out, size_t size);

/* Pushes host and port; returns 2, or 0 for an address family that has neither. */
int ls_addr_push(lua_State *L, const struct sockaddr_storage *ss);

/* An IPv4 or IPv6 socket address, as any of its types. */
typedef union {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
} ls_sockaddr_u;

/* The length of an AF_INET or AF_INET6 address. */
size_t ls_sockaddr_size(const struct sockaddr *sa);
int ls_sockaddr_port(const ls_sockaddr_u *a);
/* The numeric host ("127.0.0.1", "::1"). */
void ls_sockaddr_host(const ls_sockaddr_u *a, char *host, size_t size);
/* Fills `out` for an IPv4 or IPv6 literal (no name lookup). 0 or a libuv error. */
int ls_addr_parse_literal(const char *host, int port, ls_sockaddr_u *out);

/* luasrv.Address: an address object for Lua (peer.host, peer.port, peer.family, tostring as
 * "127.0.0.1:5353" or "[::1]:5353", == by value). ls_addr_open registers its metatable. */
void ls_addr_open(lua_State *L);
void ls_addr_push_object(lua_State *L, const struct sockaddr *sa);
/* The Address at idx; raises a Lua argument error for anything else. */
ls_sockaddr_u *ls_addr_check(lua_State *L, int idx);

#endif
