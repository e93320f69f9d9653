#include "udp.h"
#include "udp_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "dns.h"
#include "errors.h"
#include "log.h"
#include "workers.h"


static int udp_handler_done(ls_task_t *task, int status, int nres);
static void udp_batch_flush(ls_udp_t *u);

/* ---- addresses ---------------------------------------------------------------------------- */

int ls__udp_check_port(lua_State *L, int idx) {
  lua_Integer port = luaL_checkinteger(L, idx);
  luaL_argcheck(L, port > 0 && port < 65536, idx, "port out of range");
  return (int)port;
}

/* srv.udp.address(host, port) -> an Address for an IPv4 or IPv6 literal (no lookup). */
static int l_udp_address(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = ls__udp_check_port(L, 2);
  ls_sockaddr_u a;
  if (ls_addr_parse_literal(host, port, &a) != 0)
    return luaL_argerror(L, 1, "expected an IPv4 or IPv6 address");
  ls_addr_push_object(L, &a.sa);
  return 1;
}

/* ---- socket life cycle -------------------------------------------------------------------- */

static void udp_close_cb(uv_handle_t *h) {
  ls_udp_t *u = h->data;
  if (u->ud != NULL)
    u->ud->udp = NULL;
  if (u->rbuf != NULL)
    ls_free(u->rbuf, u->rbuf_size);
  if (u->batch != NULL)
    ls_free(u->batch, sizeof *u->batch);
  ls_free(u, sizeof *u);
}

void ls__udp_lookup_unlink(ls_udp_t *u, udp_lookup_t *lk) {
  if (u == NULL)
    return;
  if (lk->prev != NULL)
    lk->prev->next = lk->next;
  else if (u->lookups == lk)
    u->lookups = lk->next;
  if (lk->next != NULL)
    lk->next->prev = lk->prev;
  lk->next = lk->prev = NULL;
}

/* Closes the socket for Lua at once; the memory goes in the close callback. Handlers still
 * running go on (their sock answers "closed"); waiting calls are woken and answer "closed". */
static void udp_close(ls_udp_t *u) {
  udp_lookup_t *lk;
  if (u->closing)
    return;
  udp_batch_flush(u); /* replies gathered so far still go out */
  u->closing = 1;
  ls_res_unlink(&u->base.res);
  if (u->pending > 0) {
    /* Detach the running handlers (of any generation), whose done callback would otherwise
     * touch freed memory. */
    ls_gen_t *gen;
    for (gen = u->base.gen->rt->gens; gen != NULL; gen = gen->next) {
      unsigned i;
      for (i = 0; i < gen->nslots; i++) {
        ls_task_t *task = gen->slots[i];
        if (task != NULL && task->done == udp_handler_done && task->data == u)
          task->data = NULL;
      }
    }
    u->pending = 0;
  }
  for (lk = u->lookups; lk != NULL;) {
    udp_lookup_t *next = lk->next;
    if (lk->task != NULL)
      ls_task_wake(lk->task); /* it finds the socket closed */
    if (lk->dns != NULL)
      ls_dns_cancel(lk->dns);
    ls_free(lk, sizeof *lk);
    lk = next;
  }
  u->lookups = NULL;
  if (u->reader != NULL)
    ls_task_wake(u->reader);
  ls_listener_release(&u->base);
  uv_close((uv_handle_t *)&u->handle, udp_close_cb);
}

static void udp_res_close(ls_res_t *res) {
  udp_close((ls_udp_t *)((char *)res - offsetof(ls_udp_t, base.res)));
}

/* Pushes a new socket object and makes its C struct, linked into `list`. Raises on failure. */
static ls_udp_t *udp_new(lua_State *L, ls_gen_t *gen, ls_res_t *list, unsigned flags) {
  udp_ud_t *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ls_udp_t *u;
  int err;
  ud->udp = NULL;
  ud->gen = gen;
  ud->listener = list == &gen->rt->servers;
  luaL_setmetatable(L, LS_UDP_MT);
  u = ls_malloc(sizeof *u);
  if (u == NULL)
    luaL_error(L, "udp: not enough memory");
  memset(u, 0, sizeof *u);
  err = uv_udp_init_ex(gen->rt->loop, &u->handle, AF_UNSPEC | flags);
  if (err != 0) {
    ls_free(u, sizeof *u);
    luaL_error(L, "udp: %s", uv_strerror(err));
  }
  u->handle.data = u;
  u->base.gen = gen;
  u->base.handler_ref = u->base.staged_ref = LUA_NOREF;
  u->timeout_ms = -1;
  u->rbuf_size = u->recv_max = LS_UDP_RECV_SIZE;
  u->max_pending = LS_UDP_MAX_PENDING;
  u->base.res.close = udp_res_close;
  if (ud->listener) {
    ls_listener_number(gen->rt, &u->base);
    ud->id = u->base.id;
    ls_res_link(list, &u->base.res);
  } else {
    ls_res_link_gen(list, &u->base.res, gen);
    u->ud = ud;
  }
  ud->udp = u;
  return u;
}

udp_ud_t *ls__udp_check_ud(lua_State *L) { return luaL_checkudata(L, 1, LS_UDP_MT); }

/* The open socket at argument 1, or NULL when it is closed. */
ls_udp_t *ls__udp_check_udp(lua_State *L) {
  ls_udp_t *u = ls__udp_ud_socket(ls__udp_check_ud(L));
  return u != NULL && !u->closing ? u : NULL;
}

/* The socket behind a Lua object, or NULL once gone: a client socket clears the object's
 * pointer when it is freed; a listener's pointer is checked against the open listeners. */
ls_udp_t *ls__udp_ud_socket(udp_ud_t *ud) {
  if (ud->udp == NULL || (ud->listener && !ls_listener_alive(ud->gen->rt, &ud->udp->base, ud->id)))
    return NULL;
  return ud->udp;
}

/* "udp://127.0.0.1:8888" from the bound address, or "udp://(unbound)". */
static void udp_set_url(ls_udp_t *u) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_udp_getsockname(&u->handle, (struct sockaddr *)&ss, &len) != 0)
    snprintf(u->url, sizeof u->url, "udp://(unbound)");
  else
    ls_addr_url("udp", &ss, u->url, sizeof u->url);
}

/* Counts a dropped datagram and logs it, at most once per interval per kind. */
static void udp_log_drop(ls_udp_t *u, drop_log_t *dl, const char *why) {
  uint64_t now = uv_now(u->base.gen->rt->loop);
  dl->unlogged++;
  if (dl->ever && now - dl->last_ms < LS_UDP_LOG_INTERVAL_MS)
    return;
  if (!u->is_listener)
    udp_set_url(u); /* a client's address may have changed since (bound on first use) */
  ls_log(LS_LOG_WARN, "%s: dropped %llu datagram%s: %s", u->url, (unsigned long long)dl->unlogged,
         dl->unlogged == 1 ? "" : "s", why);
  dl->unlogged = 0;
  dl->last_ms = now;
  dl->ever = 1;
}

void ls__udp_drop_truncated(ls_udp_t *u) {
  char why[96];
  u->dropped_truncated++;
  snprintf(why, sizeof why, "larger than the %zu-byte receive buffer (truncated)", u->recv_max);
  udp_log_drop(u, &u->trunc_log, why);
}

void ls__udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ls_udp_t *u = h->data;
  (void)suggested;
  buf->base = u->rbuf;
  buf->len = u->rbuf_size;
}

int ls__udp_make_rbuf(ls_udp_t *u) {
  if (u->rbuf == NULL && (u->rbuf = ls_malloc(u->rbuf_size)) == NULL)
    return UV_ENOMEM;
  return 0;
}

/* ---- listeners: a task per datagram ------------------------------------------------------- */

static int udp_handler_done(ls_task_t *task, int status, int nres) {
  ls_udp_t *u = task->data;
  (void)nres;
  if (u == NULL)
    return 0;
  u->pending--;
  if (status == LUA_OK)
    return 0;
  u->handler_errors++;
  ls_log(LS_LOG_ERROR, "%s: handler failed: %s", u->url,
         lua_isstring(task->co, -1) ? lua_tostring(task->co, -1) : "(no message)");
  return 1;
}

static int udp_dispatch_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* The first function of a handler task: turns the datagram into Lua values inside the task, so
 * running out of memory there is the task's error, not a panic, then calls the handler. Runs
 * synchronously from the receive callback, while rx_data and rx_peer are valid. */
static int udp_dispatch(lua_State *L) {
  ls_udp_t *u = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, u->base.handler_ref);
  lua_rawgeti(L, 1, 1);
  lua_pushlstring(L, u->rx_data, u->rx_len);
  ls_addr_push_object(L, u->rx_peer);
  lua_rawgeti(L, 1, 2);
  lua_callk(L, 3, 0, 0, udp_dispatch_k);
  return 0;
}

static void udp_listener_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                                 const struct sockaddr *addr, unsigned flags) {
  ls_udp_t *u = h->data;
  ls_task_t *task;
  if (u->closing)
    return;
  if (addr == NULL) {
    /* The end of a recvmmsg batch, nothing more to read for now, or an error (ICMP errors
     * and the like concern one earlier peer: the socket goes on serving). A zero-length
     * datagram comes with its address. */
    udp_batch_flush(u);
    if (nread < 0)
      ls_log(LS_LOG_DEBUG, "%s: receive failed: %s", u->url, uv_strerror((int)nread));
    return;
  }
  if ((flags & UV_UDP_MMSG_CHUNK) && u->batch != NULL)
    u->batching = 1;
  if ((flags & UV_UDP_PARTIAL) || (size_t)nread > u->recv_max) {
    ls__udp_drop_truncated(u);
    return;
  }
  if (u->pending >= u->max_pending) {
    u->dropped_busy++;
    udp_log_drop(u, &u->busy_log, "too many handlers running (max_pending)");
    return;
  }
  task = ls_task_new(u->base.gen, udp_handler_done, u);
  if (task == NULL) {
    u->dropped_busy++;
    udp_log_drop(u, &u->busy_log, "out of memory starting a handler");
    return;
  }
  u->received++;
  u->pending++;
  task->budgeted = 1;
  u->rx_data = buf->base;
  u->rx_len = (size_t)nread;
  u->rx_peer = addr;
  lua_pushcfunction(task->co, udp_dispatch);
  lua_pushlightuserdata(task->co, u);
  ls_task_start(task, 1);
}

/* The options both kinds of socket share, read before the socket exists so a bad one raises
 * with nothing to undo. */
typedef struct udp_opts_s {
  size_t recv_size;
  int64_t timeout_ms;
} udp_opts_t;

static void udp_read_opts(lua_State *L, int opts, udp_opts_t *o) {
  o->recv_size = ls_opt_size_field(L, opts, "recv_size", LS_UDP_RECV_SIZE);
  if (o->recv_size > LS_UDP_RECV_SIZE)
    luaL_error(L, "option 'recv_size' must be at most %d", LS_UDP_RECV_SIZE);
  o->timeout_ms = ls_opt_timeout_field(L, opts, "timeout", -1);
}

static void udp_apply_opts(ls_udp_t *u, const udp_opts_t *o) {
  u->rbuf_size = u->recv_max = o->recv_size;
  u->timeout_ms = o->timeout_ms;
}

/* Binds the socket to opts.host/opts.port; raises (closing the socket) when it cannot. */
static void udp_bind_opts(lua_State *L, ls_udp_t *u, const char *host, lua_Integer port,
                          const char *what, int listener) {
  struct sockaddr_storage ss;
  int err = ls_addr_parse(host, (int)port, &ss);
  if (err == 0)
    err = listener ? ls_worker_bind_udp(&u->handle, (const struct sockaddr *)&ss)
                   : uv_udp_bind(&u->handle, (const struct sockaddr *)&ss, 0);
  if (err != 0) {
    udp_close(u);
    luaL_error(L, "%s: cannot bind udp %s:%d: %s", what, host, (int)port, uv_strerror(err));
  }
}

/* Pushes {handler, sock} from the stack indices: what a listener keeps per generation. */
static void push_handler_pair(lua_State *L, int handler, int sock) {
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, handler);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, sock);
  lua_rawseti(L, -2, 2);
}

/* srv.udp.listen(opts, handler) -> sock. opts: host (default "127.0.0.1"; "::1", "::", "*"),
 * port (0: any free one), max_pending (handlers running at once, default 1024), recv_size
 * (largest datagram taken whole, default and at most 65536), timeout (for name lookups of
 * sock:sendto). handler(data, peer, sock) runs in its own task for each datagram. Raises if
 * the address cannot be bound. Prints "listening on udp://HOST:PORT" under the command. */
static int l_udp_listen(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  const char *host;
  lua_Integer port;
  udp_opts_t o;
  size_t max_pending;
  ls_udp_t *u;
  ls_listener_base_t *claimed;
  char key[160];
  int err;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  host = ls_opt_string_field(L, 1, "host");
  if (host == NULL)
    host = "127.0.0.1";
  lua_getfield(L, 1, "port");
  if (!lua_isinteger(L, -1))
    return luaL_argerror(L, 1, "expected a port (0 for any free one)");
  port = lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_argcheck(L, port >= 0 && port < 65536, 1, "port out of range");
  udp_read_opts(L, 1, &o);
  max_pending = ls_opt_size_field(L, 1, "max_pending", LS_UDP_MAX_PENDING);
  if (max_pending > UINT_MAX)
    return luaL_error(L, "option 'max_pending' is too large");
  lua_settop(L, 2);
  ls_addr_key("udp", host, (int)port, key, sizeof key); /* port 0: never kept */
  claimed = ls_listener_claim(gen, key);
  if (claimed != NULL) {
    /* A reload listening where the running generation does: keep the socket, stage the new
     * handler (with a sock object of the new generation) for ls_gen_commit. */
    udp_ud_t *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    ud->udp = (ls_udp_t *)((char *)claimed - offsetof(ls_udp_t, base));
    ud->gen = gen;
    ud->listener = 1;
    ud->id = claimed->id;
    luaL_setmetatable(L, LS_UDP_MT);
    push_handler_pair(L, 2, 3);
    claimed->staged_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    claimed->staged_gen = gen;
    return 1;
  }
  u = udp_new(L, gen, &gen->rt->servers, UV_UDP_RECVMMSG);
  udp_apply_opts(u, &o);
  /* Under load, one recvmmsg call takes several datagrams: a chunk of 64 KiB each, which
   * libuv fixes; only the pages that datagrams touch are ever made resident. */
  if (uv_udp_using_recvmmsg(&u->handle)) {
    u->rbuf_size = LS_UDP_MMSG_CHUNKS * LS_UDP_RECV_SIZE;
#ifdef LS_UDP_BATCH_SENDS
    u->batch = ls_malloc(sizeof *u->batch); /* without it, replies go out one by one */
    if (u->batch != NULL) {
      u->batch->n = 0;
      u->batch->used = 0;
    }
#endif
  }
  u->max_pending = (unsigned)max_pending;
  udp_bind_opts(L, u, host, port, "listen", 1);
  err = ls__udp_make_rbuf(u);
  if (err == 0)
    err = uv_udp_recv_start(&u->handle, ls__udp_alloc_cb, udp_listener_recv_cb);
  if (err != 0) {
    udp_close(u);
    return luaL_error(L, "listen: cannot receive on udp %s:%d: %s", host, (int)port,
                      uv_strerror(err));
  }
  u->receiving = 1;
  u->is_listener = 1;
  {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_udp_getsockname(&u->handle, (struct sockaddr *)&ss, &len) == 0)
      u->family = ss.ss_family;
  }
  push_handler_pair(L, 2, 3);
  u->base.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  snprintf(u->base.key, sizeof u->base.key, "%s", key);
  udp_set_url(u);
  if (gen->rt->announce) {
    printf("listening on %s\n", u->url);
    fflush(stdout);
  }
  return 1;
}

/* srv.udp.socket([opts]) -> sock, a client socket. opts: host and/or port to bind locally
 * (host default "0.0.0.0"; without either the socket binds on first use), timeout (default
 * for recv/recvfrom and name lookups; none by default), recv_size. Raises if it cannot bind. */
static int l_udp_socket(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  int opts = 0;
  const char *host;
  lua_Integer port = 0;
  udp_opts_t o;
  ls_udp_t *u;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    opts = 1;
  }
  lua_settop(L, 1);
  host = ls_opt_string_field(L, opts, "host");
  if (opts != 0) {
    lua_getfield(L, 1, "port");
    if (!lua_isnil(L, -1)) {
      if (!lua_isinteger(L, -1))
        return luaL_argerror(L, 1, "port must be an integer");
      port = lua_tointeger(L, -1);
      luaL_argcheck(L, port >= 0 && port < 65536, 1, "port out of range");
      if (host == NULL)
        host = "0.0.0.0";
    }
    lua_pop(L, 1);
  }
  udp_read_opts(L, opts, &o);
  u = udp_new(L, gen, &gen->rt->resources, 0);
  udp_apply_opts(u, &o);
  if (host != NULL)
    udp_bind_opts(L, u, host, port, "socket", 0);
  return 1;
}

/* ---- sending ------------------------------------------------------------------------------ */

static void udp_send_cb(uv_udp_send_t *req, int status) {
  udp_send_t *s = (udp_send_t *)req;
  ls_udp_t *u = req->handle->data;
  /* Send callbacks run before the close callback, so the socket is still there. */
  if (status == 0)
    u->sent++;
  else if (status != UV_ECANCELED)
    u->send_errors++;
  ls_free(s, s->size);
}

/* Queues a copy of the datagram behind what libuv already holds (up to LS_UDP_SEND_QUEUE_MAX
 * bytes). 0 or an error, counted. */
static int udp_queue_copy(ls_udp_t *u, const char *data, size_t len, const struct sockaddr *to) {
  udp_send_t *s;
  uv_buf_t buf;
  int err;
  if (uv_udp_get_send_queue_size(&u->handle) + len > LS_UDP_SEND_QUEUE_MAX) {
    u->send_errors++;
    return UV_ENOBUFS;
  }
  s = ls_malloc(sizeof *s + len);
  if (s == NULL) {
    u->send_errors++;
    return LS_ENOMEM;
  }
  s->size = sizeof *s + len;
  memcpy(s->data, data, len);
  buf = uv_buf_init(s->data, (unsigned)len);
  err = uv_udp_send(&s->req, &u->handle, &buf, 1, to, udp_send_cb);
  if (err != 0) {
    ls_free(s, s->size);
    u->send_errors++;
  }
  return err;
}

/* Sends what the batch gathered, in order: one sendmmsg, again past a datagram that fails
 * (counted), and a queued copy of the rest when the kernel's buffer is full. */
static void udp_batch_flush(ls_udp_t *u) {
#ifdef LS_UDP_BATCH_SENDS
  udp_batch_t *b = u->batch;
  struct mmsghdr msgs[LS_UDP_BATCH_MAX];
  struct iovec iov[LS_UDP_BATCH_MAX];
  uv_os_fd_t fd;
  unsigned i;
  u->batching = 0;
  if (b == NULL || b->n == 0)
    return;
  if (uv_fileno((const uv_handle_t *)&u->handle, &fd) != 0) {
    u->send_errors += b->n;
    b->n = 0;
    b->used = 0;
    return;
  }
  memset(msgs, 0, sizeof msgs);
  for (i = 0; i < b->n; i++) {
    iov[i].iov_base = b->data + b->item[i].off;
    iov[i].iov_len = b->item[i].len;
    msgs[i].msg_hdr.msg_name = &b->item[i].to;
    msgs[i].msg_hdr.msg_namelen = (socklen_t)ls_sockaddr_size(&b->item[i].to.sa);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  i = 0;
  while (i < b->n) {
    int sent;
    do
      sent = sendmmsg(fd, msgs + i, b->n - i, 0);
    while (sent < 0 && errno == EINTR);
    if (sent > 0) {
      u->sent += (unsigned)sent;
      i += (unsigned)sent;
    } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      for (; i < b->n; i++)
        udp_queue_copy(u, iov[i].iov_base, iov[i].iov_len, &b->item[i].to.sa);
    } else {
      u->send_errors++; /* this one failed for good (as sendmsg would have said) */
      i++;
    }
  }
  b->n = 0;
  b->used = 0;
#else
  u->batching = 0;
#endif
}

/* Adds a reply to the batch when it fits the batch's rules; 1 if it did. */
static int udp_batch_add(ls_udp_t *u, const char *data, size_t len, const struct sockaddr *to) {
  udp_batch_t *b = u->batch;
  if (to == NULL || to->sa_family != u->family || len > LS_UDP_BATCH_ITEM_MAX ||
      uv_udp_get_send_queue_count(&u->handle) != 0)
    return 0;
  if (b->n == LS_UDP_BATCH_MAX || b->used + len > LS_UDP_BATCH_BYTES)
    udp_batch_flush(u);
  u->batching = 1;
  memcpy(&b->item[b->n].to, to, ls_sockaddr_size(to));
  b->item[b->n].off = b->used;
  b->item[b->n].len = len;
  memcpy(b->data + b->used, data, len);
  b->used += len;
  b->n++;
  return 1;
}

/* Sends one datagram (to `to`, or the connected peer when NULL): into the batch inside a
 * listener's recvmmsg batch, else straight to the socket when it can, else a queued copy.
 * Pushes true or nil, message, code (failures are counted in send_errors). */
int ls__udp_send_buf(lua_State *L, ls_udp_t *u, const char *data, size_t len,
                     const struct sockaddr *to) {
  uv_buf_t buf;
  int n;
  if (len > LS_UDP_RECV_SIZE) {
    u->send_errors++;
    return ls_push_error(L, UV_EMSGSIZE);
  }
  if (u->batching) {
    if (udp_batch_add(u, data, len, to))
      goto sent;
    udp_batch_flush(u); /* what was gathered goes first */
  }
  buf = uv_buf_init((char *)data, (unsigned)len);
  n = uv_udp_try_send(&u->handle, &buf, 1, to);
  if (n >= 0) {
    u->sent++;
    goto sent;
  }
  if (n != UV_EAGAIN) {
    u->send_errors++;
    return ls_push_error(L, n);
  }
  n = udp_queue_copy(u, data, len, to);
  if (n != 0)
    return ls_push_error(L, n);
sent:
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- other methods ------------------------------------------------------------------------ */

/* sock:close() -> true. Running handlers go on; their sends answer nil, "closed". */
static int l_udp_close(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  if (u != NULL)
    udp_close(u);
  lua_pushboolean(L, 1);
  return 1;
}

/* sock:address() -> host, port of the local end; nil, message, code if closed or unbound. */
static int l_udp_address_method(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  ls_sockaddr_u a;
  int len = sizeof a;
  int err;
  char host[INET6_ADDRSTRLEN];
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  err = uv_udp_getsockname(&u->handle, &a.sa, &len);
  if (err != 0)
    return ls_push_error(L, err);
  ls_sockaddr_host(&a, host, sizeof host);
  lua_pushstring(L, host);
  lua_pushinteger(L, ls_sockaddr_port(&a));
  return 2;
}

/* sock:peer() -> the connected peer's Address; nil, message, code when not connected. */
static int l_udp_peer(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  ls_sockaddr_u a;
  int len = sizeof a;
  int err;
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  err = uv_udp_getpeername(&u->handle, &a.sa, &len);
  if (err != 0)
    return ls_push_error(L, err);
  ls_addr_push_object(L, &a.sa);
  return 1;
}

/* sock:url() -> "udp://127.0.0.1:8888", as printed at start. */
static int l_udp_url(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  udp_set_url(u);
  lua_pushstring(L, u->url);
  return 1;
}

/* sock:settimeout(seconds | nil) -> sock: the default for recv/recvfrom and name lookups. */
static int l_udp_settimeout(lua_State *L) {
  udp_ud_t *ud = ls__udp_check_ud(L);
  int64_t ms = ls_opt_timeout_ms(L, 2, -1);
  if (ls__udp_ud_socket(ud) != NULL)
    ud->udp->timeout_ms = ms;
  lua_settop(L, 1);
  return 1;
}

static void set_count(lua_State *L, const char *name, uint64_t n) {
  lua_pushinteger(L, (lua_Integer)n);
  lua_setfield(L, -2, name);
}

/* sock:stats() -> { received, sent, dropped_truncated, dropped_busy, handler_errors,
 * send_errors, pending }; counts since the socket opened (zeros once closed). */
static int l_udp_stats(lua_State *L) {
  udp_ud_t *ud = ls__udp_check_ud(L);
  ls_udp_t *u = ls__udp_ud_socket(ud);
  static const ls_udp_t zero;
  if (u == NULL)
    u = (ls_udp_t *)&zero;
  lua_createtable(L, 0, 7);
  set_count(L, "received", u->received);
  set_count(L, "sent", u->sent);
  set_count(L, "dropped_truncated", u->dropped_truncated);
  set_count(L, "dropped_busy", u->dropped_busy);
  set_count(L, "handler_errors", u->handler_errors);
  set_count(L, "send_errors", u->send_errors);
  set_count(L, "pending", u->pending);
  return 1;
}

static int l_udp_gc(lua_State *L) {
  udp_ud_t *ud = ls__udp_check_ud(L);
  /* A listener's object is pinned while its generation serves it; once collected, the
   * listener belongs to another generation or is already gone: leave it alone. */
  if (ud->udp != NULL && !ud->listener) {
    ud->udp->ud = NULL;
    udp_close(ud->udp);
    ud->udp = NULL;
  }
  return 0;
}

static int l_udp_tostring(lua_State *L) {
  ls_udp_t *u = ls__udp_check_udp(L);
  if (u == NULL) {
    lua_pushliteral(L, "luasrv.UDPSocket (closed)");
    return 1;
  }
  udp_set_url(u);
  lua_pushfstring(L, "luasrv.UDPSocket (%s)", u->url);
  return 1;
}

/* Fills the `udp` table on top of L with listen, socket and address, bound to `gen` (an
 * upvalue: the generation whose loop owns every socket they make), and registers the
 * luasrv.UDPSocket and luasrv.Address metatables once per state. Raises only on out of
 * memory. */
void ls_udp_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg udp_meth[] = {
      {"send", ls__udp_send},         {"sendto", ls__udp_sendto},
      {"recv", ls__udp_recv},         {"recvfrom", ls__udp_recvfrom},
      {"connect", ls__udp_connect},   {"close", l_udp_close},
      {"address", l_udp_address_method}, {"peer", l_udp_peer},
      {"url", l_udp_url},           {"settimeout", l_udp_settimeout},
      {"stats", l_udp_stats},       {NULL, NULL}};
  static const luaL_Reg udp_metameth[] = {
      {"__gc", l_udp_gc}, {"__close", l_udp_gc}, {"__tostring", l_udp_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"listen", l_udp_listen}, {"socket", l_udp_socket}, {"address", l_udp_address}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_UDP_MT)) {
    luaL_setfuncs(L, udp_metameth, 0);
    luaL_newlib(L, udp_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  ls_addr_open(L);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
}
