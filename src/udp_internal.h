/* What the UDP files share (src/udp.c: sockets, listeners, sending, the other methods;
 * src/udp_client.c: name lookups, sendto/send, connect, recvfrom/recv). Private to them. */
#ifndef LS_UDP_INTERNAL_H
#define LS_UDP_INTERNAL_H

#include <lauxlib.h>

#include "addr.h"
#include "dns.h"
#include "runtime.h"

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

/* A port argument at idx (1 to 65535), or raises. */
int ls__udp_check_port(lua_State *L, int idx);
/* The socket object at argument 1 (raises for anything else), open or not. */
udp_ud_t *ls__udp_check_ud(lua_State *L);
/* The open socket at argument 1, or NULL when it is closed. */
ls_udp_t *ls__udp_check_udp(lua_State *L);
/* Takes a finished name lookup off the socket's list. */
void ls__udp_lookup_unlink(ls_udp_t *u, udp_lookup_t *lk);
/* The socket behind a Lua object, or NULL once it has closed. */
ls_udp_t *ls__udp_ud_socket(udp_ud_t *ud);
/* libuv's buffer for a receive into the socket's own buffer. */
void ls__udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
/* Counts (and logs, at most once per interval) a datagram larger than recv_size. */
void ls__udp_drop_truncated(ls_udp_t *u);
/* Makes the socket's receive buffer. 0 or LS_ENOMEM. */
int ls__udp_make_rbuf(ls_udp_t *u);
/* Sends one datagram (batched or queued as udp.c decides); pushes the call's results. */
int ls__udp_send_buf(lua_State *L, ls_udp_t *u, const char *data, size_t len,
                     const struct sockaddr *to);
/* The methods src/udp_client.c implements: sock:connect, recv, recvfrom, send, sendto. */
int ls__udp_connect(lua_State *L);
int ls__udp_recv(lua_State *L);
int ls__udp_recvfrom(lua_State *L);
int ls__udp_send(lua_State *L);
int ls__udp_sendto(lua_State *L);

#endif
