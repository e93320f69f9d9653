/* The client side of UDP sockets: name lookups (through src/dns.c, with a one-name cache),
 * sock:sendto and sock:send, sock:connect, sock:recvfrom and sock:recv. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "errors.h"
#include "log.h"
#include "udp.h"
#include "udp_internal.h"

/* ---- name lookups (sendto and connect with a host name) ----------------------------------- */

static void udp_lookup_cb(ls_dns_t *dns, int status, const struct addrinfo *res, void *data) {
  udp_lookup_t *lk = data;
  (void)dns;
  lk->dns = NULL;
  lk->done = 1;
  lk->status = status;
  if (status == 0) {
    /* Prefer IPv4, as listeners default to 127.0.0.1; the hints already narrowed the family
     * when the socket was bound. */
    const struct addrinfo *pick = NULL, *ai;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
      if (ai->ai_family == AF_INET && (pick == NULL || pick->ai_family != AF_INET))
        pick = ai;
      else if (ai->ai_family == AF_INET6 && pick == NULL)
        pick = ai;
    }
    if (pick != NULL)
      memcpy(&lk->addr, pick->ai_addr, ls_sockaddr_size(pick->ai_addr));
    else
      lk->status = UV_EAI_NONAME;
  }
  ls_task_resume(lk->task);
}

static int64_t udp_lookup_timeout(const ls_udp_t *u) {
  return u->timeout_ms >= 0 ? u->timeout_ms : LS_UDP_LOOKUP_TIMEOUT_MS;
}

/* Starts resolving host and yields; k runs when the lookup ends, gets the lookup as ctx and
 * calls udp_lookup_result. */
static int udp_lookup_start(lua_State *L, ls_udp_t *u, const char *host, int port,
                            const char *what, lua_KFunction k) {
  ls_task_t *task = ls_task_check(u->base.gen, L, what);
  ls_sockaddr_u bound;
  int len = sizeof bound, family = AF_UNSPEC;
  udp_lookup_t *lk;
  int err;
  lk = ls_malloc(sizeof *lk);
  if (lk == NULL)
    return ls_push_error(L, LS_ENOMEM);
  memset(lk, 0, sizeof *lk);
  if (uv_udp_getsockname(&u->handle, &bound.sa, &len) == 0)
    family = bound.sa.sa_family;
  lk->u = u;
  lk->task = task;
  lk->dns = ls_dns_resolve(u->base.gen->rt->loop, host, port, family, SOCK_DGRAM, udp_lookup_cb,
                           lk, &err);
  if (lk->dns == NULL) {
    ls_free(lk, sizeof *lk);
    return ls_push_error(L, err);
  }
  lk->next = u->lookups;
  if (u->lookups != NULL)
    u->lookups->prev = lk;
  u->lookups = lk;
  return ls_task_wait(task, udp_lookup_timeout(u), (lua_KContext)lk, k);
}

/* In a lookup's continuation: 0 with *addr filled in, or the number of results pushed for a
 * failure (closed socket, timeout, unknown name). Waits again after a spurious wake-up. */
static int udp_lookup_result(lua_State *L, lua_KContext ctx, lua_KFunction k, ls_sockaddr_u *addr) {
  udp_ud_t *ud = ls__udp_check_ud(L);
  ls_udp_t *u = ls__udp_ud_socket(ud);
  udp_lookup_t *lk = (udp_lookup_t *)ctx;
  ls_task_t *task = ls_task_current(ud->gen, L);
  if (u == NULL || u->closing)
    return ls_push_error(L, LS_ECLOSED); /* the close orphaned the lookup: not ours to touch */
  if (lk->done) {
    int err = lk->status;
    *addr = lk->addr;
    ls__udp_lookup_unlink(u, lk);
    ls_free(lk, sizeof *lk);
    return err != 0 ? ls_push_error(L, err) : 0;
  }
  if (task != NULL && ls_task_take_timeout(task)) {
    ls_dns_cancel(lk->dns);
    ls__udp_lookup_unlink(u, lk);
    ls_free(lk, sizeof *lk);
    return ls_push_error(L, LS_ETIMEDOUT);
  }
  return ls_task_wait(ls_task_check(u->base.gen, L, "udp lookup"), udp_lookup_timeout(u), ctx, k);
}

static int udp_cache_get(ls_udp_t *u, const char *host, int port, ls_sockaddr_u *addr) {
  if (u->cache_port != port || strcmp(u->cache_host, host) != 0)
    return 0;
  if (uv_now(u->base.gen->rt->loop) >= u->cache_expiry)
    return 0;
  *addr = u->cache_addr;
  return 1;
}

static void udp_cache_put(ls_udp_t *u, const char *host, int port, const ls_sockaddr_u *addr) {
  size_t len = strlen(host);
  if (len >= sizeof u->cache_host)
    return;
  memcpy(u->cache_host, host, len + 1);
  u->cache_port = port;
  u->cache_addr = *addr;
  u->cache_expiry = uv_now(u->base.gen->rt->loop) + LS_UDP_NAME_TTL_MS;
}

/* ---- sock:sendto, sock:send --------------------------------------------------------------- */

static int udp_sendto_lookup_k(lua_State *L, int status, lua_KContext ctx) {
  ls_sockaddr_u addr;
  size_t len;
  const char *data;
  int n;
  (void)status;
  n = udp_lookup_result(L, ctx, udp_sendto_lookup_k, &addr);
  if (n != 0)
    return n;
  udp_cache_put(ls__udp_ud_socket(ls__udp_check_ud(L)), lua_tostring(L, 3), (int)lua_tointeger(L, 4), &addr);
  data = lua_tolstring(L, 2, &len);
  return ls__udp_send_buf(L, ls__udp_ud_socket(ls__udp_check_ud(L)), data, len, &addr.sa);
}

/* sock:sendto(data, host, port) or sock:sendto(data, peer) -> true, or nil, message, code.
 * A host name is resolved through libuv (the task waits; the answer is reused for 30 s). */
int ls__udp_sendto(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *host;
  int port;
  ls_sockaddr_u addr;
  if (lua_type(L, 3) == LUA_TUSERDATA) {
    ls_sockaddr_u *peer = ls_addr_check(L, 3);
    if (u == NULL)
      return ls_push_error(L, LS_ECLOSED);
    return ls__udp_send_buf(L, u, data, len, &peer->sa);
  }
  host = luaL_checkstring(L, 3);
  port = ls__udp_check_port(L, 4);
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (ls_addr_parse_literal(host, port, &addr) == 0 || udp_cache_get(u, host, port, &addr))
    return ls__udp_send_buf(L, u, data, len, &addr.sa);
  lua_settop(L, 4);
  return udp_lookup_start(L, u, host, port, "sendto", udp_sendto_lookup_k);
}

/* sock:send(data [, peer]) -> true, or nil, message, code: to peer (an Address, as handlers
 * get it), or to the connected peer without one. */
int ls__udp_send(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const struct sockaddr *to = NULL;
  if (!lua_isnoneornil(L, 3))
    to = &ls_addr_check(L, 3)->sa;
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (to == NULL) {
    ls_sockaddr_u peer;
    int plen = sizeof peer;
    if (uv_udp_getpeername(&u->handle, &peer.sa, &plen) != 0)
      return luaL_argerror(L, 3, "a peer address is needed: the socket is not connected");
  }
  return ls__udp_send_buf(L, u, data, len, to);
}

/* ---- sock:connect ------------------------------------------------------------------------- */

static int udp_connect_to(lua_State *L, ls_udp_t *u, const ls_sockaddr_u *addr) {
  int err = uv_udp_connect(&u->handle, &addr->sa);
  if (err != 0)
    return ls_push_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int udp_connect_lookup_k(lua_State *L, int status, lua_KContext ctx) {
  ls_sockaddr_u addr;
  int n;
  (void)status;
  n = udp_lookup_result(L, ctx, udp_connect_lookup_k, &addr);
  if (n != 0)
    return n;
  return udp_connect_to(L, ls__udp_ud_socket(ls__udp_check_ud(L)), &addr);
}

/* sock:connect(host, port) -> true, or nil, message, code. Afterwards send(data) and recv()
 * talk to that peer only. Not for listening sockets. */
int ls__udp_connect(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  const char *host = luaL_checkstring(L, 2);
  int port = ls__udp_check_port(L, 3);
  ls_sockaddr_u addr;
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (u->is_listener)
    return luaL_error(L, "connect: a listening socket answers many peers; use srv.udp.socket()");
  if (ls_addr_parse_literal(host, port, &addr) == 0)
    return udp_connect_to(L, u, &addr);
  lua_settop(L, 3);
  return udp_lookup_start(L, u, host, port, "connect", udp_connect_lookup_k);
}

/* ---- client receive: sock:recvfrom, sock:recv --------------------------------------------- */

/* Client sockets receive only while a task waits, so datagrams that arrive in between stay in
 * the kernel's buffer (bounded) instead of a queue of ours. */
static void udp_reader_left(ls_udp_t *u) {
  if (u->reader == NULL && u->receiving) {
    uv_udp_recv_stop(&u->handle);
    u->receiving = 0;
  }
}

static void udp_client_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                               const struct sockaddr *addr, unsigned flags) {
  ls_udp_t *u = h->data;
  if (u->closing || (nread == 0 && addr == NULL))
    return;
  if (nread >= 0 && ((flags & UV_UDP_PARTIAL) || (size_t)nread > u->recv_max)) {
    ls__udp_drop_truncated(u);
    return;
  }
  if (u->reader == NULL) {
    udp_reader_left(u); /* not expected: receiving runs only for a reader */
    return;
  }
  if (nread < 0) {
    u->rx_err = (int)nread;
  } else {
    u->rx_data = buf->base;
    u->rx_len = (size_t)nread;
    u->rx_peer = addr;
  }
  u->rx_ready = 1;
  ls_task_resume(u->reader);
  /* The reader has taken it; the struct lives at least until the close callback. */
  u->rx_ready = 0;
  u->rx_err = 0;
}

static int udp_recv_k(lua_State *L, int status, lua_KContext ctx) {
  udp_ud_t *ud = ls__udp_check_ud(L);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_udp_t *u = ls__udp_ud_socket(ud);
  const char *what = ctx ? "recvfrom" : "recv";
  int err;
  (void)status;
  if (u != NULL && task != NULL && u->reader == task)
    u->reader = NULL;
  if (u == NULL || u->closing)
    return ls_push_error(L, LS_ECLOSED);
  if (u->rx_ready) {
    u->rx_ready = 0;
    udp_reader_left(u);
    if (u->rx_err != 0) {
      err = u->rx_err;
      u->rx_err = 0;
      return ls_push_error(L, err);
    }
    u->received++;
    lua_pushlstring(L, u->rx_data, u->rx_len);
    if (!ctx)
      return 1;
    ls_addr_push_object(L, u->rx_peer);
    return 2;
  }
  if (task != NULL && ls_task_take_timeout(task)) {
    udp_reader_left(u);
    return ls_push_error(L, LS_ETIMEDOUT);
  }
  task = ls_task_check(u->base.gen, L, what);
  if (u->reader != NULL)
    return luaL_error(L, "%s: another task is already receiving on this socket", what);
  if (!u->receiving) {
    err = ls__udp_make_rbuf(u);
    if (err == 0)
      err = uv_udp_recv_start(&u->handle, ls__udp_alloc_cb, udp_client_recv_cb);
    if (err != 0)
      return ls_push_error(L, err);
    u->receiving = 1;
  }
  u->reader = task;
  return ls_task_wait(task, ls_opt_timeout_ms(L, 2, u->timeout_ms), ctx, udp_recv_k);
}

static int udp_recv_common(lua_State *L, int with_peer) {
  udp_ud_t *ud = ls__udp_check_ud(L);
  if (!lua_isnoneornil(L, 2))
    luaL_checknumber(L, 2);
  lua_settop(L, 2);
  if (ls__udp_ud_socket(ud) != NULL && ud->listener)
    return luaL_error(L, "%s: a listening socket hands its datagrams to its handler",
                      with_peer ? "recvfrom" : "recv");
  return udp_recv_k(L, LUA_OK, with_peer);
}

/* sock:recvfrom([timeout]) -> data, peer; or nil, "timeout" | "closed" | message, code.
 * timeout in seconds (default: the socket's, none unless set). A datagram larger than
 * recv_size is dropped and counted, never returned truncated. */
int ls__udp_recvfrom(lua_State *L) { return udp_recv_common(L, 1); }

/* sock:recv([timeout]) -> data; or nil, message, code. As recvfrom, without the peer. */
int ls__udp_recv(lua_State *L) { return udp_recv_common(L, 0); }

