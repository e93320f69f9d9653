#include "udp.h"

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

#define LS_UDP_MT "luasrv.UDPSocket"

/* A kind of drop is logged at most once per interval, with the count since the last line. */
#define LS_UDP_LOG_INTERVAL_MS 1000
/* How long a resolved host name is reused by sendto before it is looked up again. */
#define LS_UDP_NAME_TTL_MS 30000
/* The bound on a name lookup when the socket has no timeout of its own. */
#define LS_UDP_LOOKUP_TIMEOUT_MS 30000
#define LS_UDP_HOST_MAX 256
/* Datagrams a listener takes per recvmmsg call (at most 20 in libuv). */
#define LS_UDP_MMSG_CHUNKS 8
/* Replies that handlers send while a listener works through one recvmmsg batch are gathered
 * (up to these limits, each reply at most ITEM_MAX bytes) and go out in one sendmmsg when the
 * batch ends: under load that halves the system calls per datagram. Linux only. */
#if defined(__linux__)
#define LS_UDP_BATCH_SENDS 1
#endif
#define LS_UDP_BATCH_MAX LS_UDP_MMSG_CHUNKS
#define LS_UDP_BATCH_BYTES (16 * 1024)
#define LS_UDP_BATCH_ITEM_MAX 2048


typedef struct udp_ud_s udp_ud_t;
typedef struct udp_lookup_s udp_lookup_t;

typedef struct udp_batch_s {
  unsigned n;
  size_t used;
  struct {
    ls_sockaddr_u to;
    size_t off, len;
  } item[LS_UDP_BATCH_MAX];
  char data[LS_UDP_BATCH_BYTES];
} udp_batch_t;

typedef struct drop_log_s {
  uint64_t last_ms;
  uint64_t unlogged;
  unsigned char ever;
} drop_log_t;

/* A UDP socket. The C struct belongs to the core and lives until the handle's close callback;
 * the Lua object (udp_ud_t) only points at it and is cleared when it goes, so a late call
 * answers "closed". A listener pins its Lua object (self_ref) while open, since every handler
 * gets it as `sock`. */
typedef struct ls_udp_s {
  uv_udp_t handle;
  /* base.gen owns the socket; for a listener, base.handler_ref is a table {handler, sock} in
   * that generation, handed over to a new generation on reload. */
  ls_listener_base_t base;
  udp_ud_t *ud;            /* client sockets: their Lua object, cleared when either goes */
  char *rbuf;              /* receive buffer, made when receiving starts */
  size_t rbuf_size;
  size_t recv_max;         /* the largest datagram taken; larger ones are dropped */
  unsigned max_pending;
  unsigned pending;        /* handler tasks started and not yet finished */
  int64_t timeout_ms;      /* default for recv/recvfrom and name lookups; -1: none */
  /* The datagram being handed over: valid only inside the receive callback. */
  const char *rx_data;
  size_t rx_len;
  const struct sockaddr *rx_peer;
  int rx_err;
  ls_task_t *reader;       /* client sockets: the task waiting in recv/recvfrom */
  udp_lookup_t *lookups;   /* name lookups in flight */
  unsigned char rx_ready;  /* a datagram (or rx_err) waits for the reader */
  unsigned char receiving;
  unsigned char closing;   /* uv_close called */
  unsigned char is_listener;
  unsigned char batching;  /* inside a recvmmsg batch: replies go into `batch` */
  int family;              /* listeners: AF_INET or AF_INET6, as bound */
  udp_batch_t *batch;      /* listeners using recvmmsg */
  /* One resolved name, so a client that keeps sending to "example.org" looks it up once. */
  char cache_host[LS_UDP_HOST_MAX];
  int cache_port;
  uint64_t cache_expiry;
  ls_sockaddr_u cache_addr;
  uint64_t received, sent, dropped_truncated, dropped_busy, handler_errors, send_errors;
  drop_log_t trunc_log, busy_log;
  char url[128];
} ls_udp_t;

struct udp_ud_s {
  ls_udp_t *udp;
  ls_gen_t *gen;
  int listener;            /* a listener's object: checked with ls_listener_alive, no back link */
  uint64_t id;             /* listeners: the listener's id when the object was made */
};

static ls_udp_t *ud_socket(udp_ud_t *ud);

/* A host name lookup for sendto or connect. The waiting task owns it and frees it once done;
 * if the task gives up (timeout) or the socket closes first, the lookup is cancelled (no
 * callback comes) and the record freed at once; a waiting task then finds its socket closed
 * and does not look at the record. */
struct udp_lookup_s {
  ls_dns_t *dns;           /* the lookup, until its answer came */
  udp_lookup_t *next, *prev;
  ls_udp_t *u;
  ls_task_t *task;
  int status;
  unsigned char done;
  ls_sockaddr_u addr;
};

/* A queued send: the datagram copied, because Lua may collect its string before libuv sends. */
typedef struct udp_send_s {
  uv_udp_send_t req;
  size_t size;
  char data[];
} udp_send_t;

static int udp_handler_done(ls_task_t *task, int status, int nres);
static void udp_batch_flush(ls_udp_t *u);

/* ---- addresses ---------------------------------------------------------------------------- */

static int check_port(lua_State *L, int idx) {
  lua_Integer port = luaL_checkinteger(L, idx);
  luaL_argcheck(L, port > 0 && port < 65536, idx, "port out of range");
  return (int)port;
}

/* srv.udp.address(host, port) -> an Address for an IPv4 or IPv6 literal (no lookup). */
static int l_udp_address(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = check_port(L, 2);
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

static void lookup_unlink(ls_udp_t *u, udp_lookup_t *lk) {
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

static udp_ud_t *check_ud(lua_State *L) { return luaL_checkudata(L, 1, LS_UDP_MT); }

/* The open socket at argument 1, or NULL when it is closed. */
static ls_udp_t *check_udp(lua_State *L) {
  ls_udp_t *u = ud_socket(check_ud(L));
  return u != NULL && !u->closing ? u : NULL;
}

/* The socket behind a Lua object, or NULL once gone: a client socket clears the object's
 * pointer when it is freed; a listener's pointer is checked against the open listeners. */
static ls_udp_t *ud_socket(udp_ud_t *ud) {
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

static void udp_drop_truncated(ls_udp_t *u) {
  char why[96];
  u->dropped_truncated++;
  snprintf(why, sizeof why, "larger than the %zu-byte receive buffer (truncated)", u->recv_max);
  udp_log_drop(u, &u->trunc_log, why);
}

static void udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ls_udp_t *u = h->data;
  (void)suggested;
  buf->base = u->rbuf;
  buf->len = u->rbuf_size;
}

static int udp_make_rbuf(ls_udp_t *u) {
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
    udp_drop_truncated(u);
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
  err = udp_make_rbuf(u);
  if (err == 0)
    err = uv_udp_recv_start(&u->handle, udp_alloc_cb, udp_listener_recv_cb);
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
static int udp_send_buf(lua_State *L, ls_udp_t *u, const char *data, size_t len,
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
  udp_ud_t *ud = check_ud(L);
  ls_udp_t *u = ud_socket(ud);
  udp_lookup_t *lk = (udp_lookup_t *)ctx;
  ls_task_t *task = ls_task_current(ud->gen, L);
  if (u == NULL || u->closing)
    return ls_push_error(L, LS_ECLOSED); /* the close orphaned the lookup: not ours to touch */
  if (lk->done) {
    int err = lk->status;
    *addr = lk->addr;
    lookup_unlink(u, lk);
    ls_free(lk, sizeof *lk);
    return err != 0 ? ls_push_error(L, err) : 0;
  }
  if (task != NULL && ls_task_take_timeout(task)) {
    ls_dns_cancel(lk->dns);
    lookup_unlink(u, lk);
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
  udp_cache_put(ud_socket(check_ud(L)), lua_tostring(L, 3), (int)lua_tointeger(L, 4), &addr);
  data = lua_tolstring(L, 2, &len);
  return udp_send_buf(L, ud_socket(check_ud(L)), data, len, &addr.sa);
}

/* sock:sendto(data, host, port) or sock:sendto(data, peer) -> true, or nil, message, code.
 * A host name is resolved through libuv (the task waits; the answer is reused for 30 s). */
static int l_udp_sendto(lua_State *L) {
  ls_udp_t *u = check_udp(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *host;
  int port;
  ls_sockaddr_u addr;
  if (lua_type(L, 3) == LUA_TUSERDATA) {
    ls_sockaddr_u *peer = ls_addr_check(L, 3);
    if (u == NULL)
      return ls_push_error(L, LS_ECLOSED);
    return udp_send_buf(L, u, data, len, &peer->sa);
  }
  host = luaL_checkstring(L, 3);
  port = check_port(L, 4);
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (ls_addr_parse_literal(host, port, &addr) == 0 || udp_cache_get(u, host, port, &addr))
    return udp_send_buf(L, u, data, len, &addr.sa);
  lua_settop(L, 4);
  return udp_lookup_start(L, u, host, port, "sendto", udp_sendto_lookup_k);
}

/* sock:send(data [, peer]) -> true, or nil, message, code: to peer (an Address, as handlers
 * get it), or to the connected peer without one. */
static int l_udp_send(lua_State *L) {
  ls_udp_t *u = check_udp(L);
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
  return udp_send_buf(L, u, data, len, to);
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
  return udp_connect_to(L, ud_socket(check_ud(L)), &addr);
}

/* sock:connect(host, port) -> true, or nil, message, code. Afterwards send(data) and recv()
 * talk to that peer only. Not for listening sockets. */
static int l_udp_connect(lua_State *L) {
  ls_udp_t *u = check_udp(L);
  const char *host = luaL_checkstring(L, 2);
  int port = check_port(L, 3);
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
    udp_drop_truncated(u);
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
  udp_ud_t *ud = check_ud(L);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_udp_t *u = ud_socket(ud);
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
    err = udp_make_rbuf(u);
    if (err == 0)
      err = uv_udp_recv_start(&u->handle, udp_alloc_cb, udp_client_recv_cb);
    if (err != 0)
      return ls_push_error(L, err);
    u->receiving = 1;
  }
  u->reader = task;
  return ls_task_wait(task, ls_opt_timeout_ms(L, 2, u->timeout_ms), ctx, udp_recv_k);
}

static int udp_recv_common(lua_State *L, int with_peer) {
  udp_ud_t *ud = check_ud(L);
  if (!lua_isnoneornil(L, 2))
    luaL_checknumber(L, 2);
  lua_settop(L, 2);
  if (ud_socket(ud) != NULL && ud->listener)
    return luaL_error(L, "%s: a listening socket hands its datagrams to its handler",
                      with_peer ? "recvfrom" : "recv");
  return udp_recv_k(L, LUA_OK, with_peer);
}

/* sock:recvfrom([timeout]) -> data, peer; or nil, "timeout" | "closed" | message, code.
 * timeout in seconds (default: the socket's, none unless set). A datagram larger than
 * recv_size is dropped and counted, never returned truncated. */
static int l_udp_recvfrom(lua_State *L) { return udp_recv_common(L, 1); }

/* sock:recv([timeout]) -> data; or nil, message, code. As recvfrom, without the peer. */
static int l_udp_recv(lua_State *L) { return udp_recv_common(L, 0); }

/* ---- other methods ------------------------------------------------------------------------ */

/* sock:close() -> true. Running handlers go on; their sends answer nil, "closed". */
static int l_udp_close(lua_State *L) {
  ls_udp_t *u = check_udp(L);
  if (u != NULL)
    udp_close(u);
  lua_pushboolean(L, 1);
  return 1;
}

/* sock:address() -> host, port of the local end; nil, message, code if closed or unbound. */
static int l_udp_address_method(lua_State *L) {
  ls_udp_t *u = check_udp(L);
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
  ls_udp_t *u = check_udp(L);
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
  ls_udp_t *u = check_udp(L);
  if (u == NULL)
    return ls_push_error(L, LS_ECLOSED);
  udp_set_url(u);
  lua_pushstring(L, u->url);
  return 1;
}

/* sock:settimeout(seconds | nil) -> sock: the default for recv/recvfrom and name lookups. */
static int l_udp_settimeout(lua_State *L) {
  udp_ud_t *ud = check_ud(L);
  int64_t ms = ls_opt_timeout_ms(L, 2, -1);
  if (ud_socket(ud) != NULL)
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
  udp_ud_t *ud = check_ud(L);
  ls_udp_t *u = ud_socket(ud);
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
  udp_ud_t *ud = check_ud(L);
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
  ls_udp_t *u = check_udp(L);
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
      {"send", l_udp_send},         {"sendto", l_udp_sendto},
      {"recv", l_udp_recv},         {"recvfrom", l_udp_recvfrom},
      {"connect", l_udp_connect},   {"close", l_udp_close},
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
