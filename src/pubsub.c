/* srv.pubsub (see pubsub.h): topics and subscriptions in a process, and the ring that carries
 * messages between workers. */
#include "pubsub.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "buffer.h"
#include "errors.h"
#include "log.h"
#include "workers.h"

#define LS_SUB_MT "luasrv.Subscription"
#define LS_PUBSUB_BUCKETS 256
#define LS_SUB_DEFAULT_QUEUE 256
#define LS_TOPIC_MAX 255

/* ---- messages: one copy per publish, shared by the queues it reaches ---------------------- */

typedef struct msg_s {
  unsigned refs;
  size_t len;
  char data[];
} msg_t;

static msg_t *msg_new(const char *p, size_t n) {
  msg_t *m = ls_malloc(sizeof *m + n);
  if (m == NULL)
    return NULL;
  m->refs = 1;
  m->len = n;
  memcpy(m->data, p, n);
  return m;
}

static void msg_release(msg_t *m) {
  if (--m->refs == 0)
    ls_free(m, sizeof *m + m->len);
}

/* ---- the ring shared by the workers ------------------------------------------------------- */

/* Positions are byte counts since the start (the offset is position % cap); records are
 * 8-aligned, and one that does not fit before the end leaves a wrap mark and starts over at
 * offset 0. The writer makes room by moving `tail` past the oldest records. */
typedef struct ring_s {
  pthread_mutex_t lock;
  uint64_t head, tail; /* the next record's position; the oldest record's */
  uint64_t seq;        /* records written so far: the next record's number */
  uint64_t cap;
  unsigned char data[];
} ring_t;

typedef struct rec_s {
  uint32_t size;      /* the whole record, aligned; REC_WRAP: the rest up to the end is unused */
  uint32_t origin;    /* the worker that published it */
  uint64_t seq;
  uint32_t topic_len;
  uint32_t msg_len;
} rec_t;

#define REC_WRAP 0xFFFFFFFFu
#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

/* Process-wide, as the fork that shares them is: the ring and every worker's eventfd. */
static ring_t *the_ring;
static int *worker_fds;
static unsigned worker_count;

int ls_pubsub_shm_init(unsigned workers, size_t ring_size) {
  pthread_mutexattr_t attr;
  ring_t *r;
  unsigned i;
  size_t bytes = sizeof *r + ring_size;
  r = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED)
    return -errno;
  memset(r, 0, sizeof *r);
  r->cap = ring_size;
  if (pthread_mutexattr_init(&attr) != 0 ||
      pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
      pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0 ||
      pthread_mutex_init(&r->lock, &attr) != 0) {
    munmap(r, bytes);
    return -EINVAL;
  }
  pthread_mutexattr_destroy(&attr);
  worker_fds = ls_malloc(workers * sizeof *worker_fds);
  if (worker_fds == NULL) {
    munmap(r, bytes);
    return -ENOMEM;
  }
  for (i = 0; i < workers; i++) {
    worker_fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (worker_fds[i] < 0) {
      int err = -errno;
      while (i-- > 0)
        close(worker_fds[i]);
      ls_free(worker_fds, workers * sizeof *worker_fds);
      worker_fds = NULL;
      munmap(r, bytes);
      return err;
    }
  }
  worker_count = workers;
  the_ring = r;
  return 0;
}

static void ring_lock(ring_t *r) {
  if (pthread_mutex_lock(&r->lock) == EOWNERDEAD) {
    /* A worker died while writing: what it left may be torn, so the ring starts empty. */
    pthread_mutex_consistent(&r->lock);
    r->tail = r->head;
  }
}

/* Moves tail past the oldest records until n more bytes fit. */
static void ring_make_room(ring_t *r, uint64_t n) {
  while (r->head + n - r->tail > r->cap) {
    uint64_t off = r->tail % r->cap;
    uint32_t size;
    memcpy(&size, r->data + off, sizeof size);
    r->tail += size == REC_WRAP ? r->cap - off : size;
  }
}

/* Appends a record; 0, or LS_ENOMEM when it is larger than a quarter of the ring. */
static int ring_append(ring_t *r, const char *topic, size_t tlen, const char *msg, size_t mlen) {
  size_t need = ALIGN8(sizeof(rec_t) + tlen + mlen);
  uint64_t off;
  rec_t rec;
  if (need > r->cap / 4)
    return LS_ENOMEM;
  ring_lock(r);
  off = r->head % r->cap;
  if (off + need > r->cap) {
    uint32_t wrap = REC_WRAP;
    ring_make_room(r, r->cap - off);
    memcpy(r->data + off, &wrap, sizeof wrap);
    r->head += r->cap - off;
    off = 0;
  }
  ring_make_room(r, need);
  rec.size = (uint32_t)need;
  rec.origin = ls_worker_id();
  rec.seq = r->seq++;
  rec.topic_len = (uint32_t)tlen;
  rec.msg_len = (uint32_t)mlen;
  memcpy(r->data + off, &rec, sizeof rec);
  memcpy(r->data + off + sizeof rec, topic, tlen);
  memcpy(r->data + off + sizeof rec + tlen, msg, mlen);
  r->head += need;
  pthread_mutex_unlock(&r->lock);
  return 0;
}

/* ---- subscriptions ------------------------------------------------------------------------ */

typedef struct ls_pubsub_s ls_pubsub_t;

/* A subscription lives in its Lua userdata; the topic table links it while it is open. */
typedef struct sub_s {
  struct sub_s *next, *prev;  /* in its bucket */
  ls_pubsub_t *ps;            /* NULL once closed */
  ls_gen_t *gen;
  ls_task_t *waiter;
  msg_t **queue;              /* a circular queue of `cap` slots */
  unsigned cap, first, len;
  uint64_t dropped;
  uint32_t hash;
  unsigned char close_on_full;
  unsigned char overflowed;
  size_t topic_len;
  char topic[LS_TOPIC_MAX + 1];
} sub_t;

/* A runtime's subscriptions by topic, and its reading of the ring. */
struct ls_pubsub_s {
  ls_res_t res;
  ls_runtime_t *rt;
  uv_poll_t poll;             /* this worker's eventfd, while there are subscriptions */
  unsigned char polling;
  uint64_t pos, next_seq;     /* where this worker reads the ring next */
  uint64_t published, lost;
  unsigned subs;
  ls_buf_t copy;              /* records copied out of the ring */
  sub_t *buckets[LS_PUBSUB_BUCKETS];
};

static uint32_t topic_hash(const char *s, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  size_t i;
  for (i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static void sub_clear_queue(sub_t *s) {
  while (s->len > 0) {
    msg_release(s->queue[s->first]);
    s->first = (s->first + 1) % s->cap;
    s->len--;
  }
}

/* Unlinks the subscription and wakes its waiter; queued messages stay readable. */
static void sub_unlink(sub_t *s) {
  ls_pubsub_t *ps = s->ps;
  if (ps == NULL)
    return;
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    ps->buckets[s->hash % LS_PUBSUB_BUCKETS] = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  s->next = s->prev = NULL;
  s->ps = NULL;
  ps->subs--;
  if (s->waiter != NULL)
    ls_task_wake(s->waiter);
}

static void sub_push(sub_t *s, msg_t *m) {
  if (s->len == s->cap) {
    if (s->close_on_full) {
      s->overflowed = 1;
      sub_clear_queue(s);
      sub_unlink(s);
      return;
    }
    msg_release(s->queue[s->first]);
    s->first = (s->first + 1) % s->cap;
    s->len--;
    s->dropped++;
  }
  m->refs++;
  s->queue[(s->first + s->len) % s->cap] = m;
  s->len++;
  if (s->waiter != NULL)
    ls_task_wake(s->waiter);
}

/* Gives the message to every open subscription of the topic in this runtime. */
static void deliver(ls_pubsub_t *ps, const char *topic, size_t tlen, const char *data, size_t len) {
  uint32_t h = topic_hash(topic, tlen);
  sub_t *s = ps->buckets[h % LS_PUBSUB_BUCKETS], *next;
  msg_t *m = NULL;
  for (; s != NULL; s = next) {
    next = s->next; /* a full queue may close s */
    if (s->hash != h || s->topic_len != tlen || memcmp(s->topic, topic, tlen) != 0)
      continue;
    if (m == NULL && (m = msg_new(data, len)) == NULL) {
      ls_log(LS_LOG_ERROR, "pubsub: out of memory delivering a message on %.*s", (int)tlen, topic);
      return;
    }
    sub_push(s, m);
  }
  if (m != NULL)
    msg_release(m);
}

/* Reads the ring's records since the last time and delivers the other workers' ones. */
static void ps_read_ring(ls_pubsub_t *ps) {
  ring_t *r = the_ring;
  size_t off;
  ring_lock(r);
  if (ps->pos < r->tail)
    ps->pos = r->tail; /* fell a ring behind: the records skipped are counted below */
  while (ps->pos < r->head) {
    uint64_t at = ps->pos % r->cap;
    uint32_t size;
    memcpy(&size, r->data + at, sizeof size);
    if (size == REC_WRAP) {
      ps->pos += r->cap - at;
      continue;
    }
    if (ls_buf_append(&ps->copy, r->data + at, size) != 0)
      break; /* out of memory: the rest waits for the next poke */
    ps->pos += size;
  }
  pthread_mutex_unlock(&r->lock);
  for (off = 0; off < ls_buf_len(&ps->copy);) {
    rec_t rec;
    const char *p = ls_buf_head(&ps->copy) + off;
    memcpy(&rec, p, sizeof rec);
    if (rec.seq > ps->next_seq)
      ps->lost += rec.seq - ps->next_seq;
    ps->next_seq = rec.seq + 1;
    if (rec.origin != ls_worker_id())
      deliver(ps, p + sizeof rec, rec.topic_len, p + sizeof rec + rec.topic_len, rec.msg_len);
    off += rec.size;
  }
  ls_buf_consume(&ps->copy, ls_buf_len(&ps->copy));
}

static void ps_poll_cb(uv_poll_t *poll, int status, int events) {
  ls_pubsub_t *ps = poll->data;
  uint64_t n;
  (void)events;
  if (status < 0)
    return;
  while (read(worker_fds[ls_worker_id() - 1], &n, sizeof n) > 0)
    ;
  ps_read_ring(ps);
}

static void ps_free_cb(uv_handle_t *h) {
  ls_pubsub_t *ps = h->data;
  ls_buf_free(&ps->copy);
  ls_free(ps, sizeof *ps);
}

/* The runtime closes: subscriptions answer "closed" from now on. */
static void ps_res_close(ls_res_t *res) {
  ls_pubsub_t *ps = (ls_pubsub_t *)((char *)res - offsetof(ls_pubsub_t, res));
  unsigned i;
  ls_res_unlink(&ps->res);
  for (i = 0; i < LS_PUBSUB_BUCKETS; i++)
    while (ps->buckets[i] != NULL)
      sub_unlink(ps->buckets[i]);
  ps->rt->pubsub = NULL;
  if (ps->polling) {
    uv_close((uv_handle_t *)&ps->poll, ps_free_cb);
  } else {
    ls_buf_free(&ps->copy);
    ls_free(ps, sizeof *ps);
  }
}

/* The runtime's registry, made on first use (NULL: out of memory). Under --workers it starts
 * reading the ring at its current end. */
static ls_pubsub_t *ps_get(ls_runtime_t *rt) {
  ls_pubsub_t *ps = rt->pubsub;
  if (ps != NULL)
    return ps;
  ps = ls_malloc(sizeof *ps);
  if (ps == NULL)
    return NULL;
  memset(ps, 0, sizeof *ps);
  ps->rt = rt;
  ps->res.close = ps_res_close;
  ls_buf_init(&ps->copy);
  if (the_ring != NULL && ls_worker_id() > 0 && ls_worker_id() <= worker_count) {
    ring_lock(the_ring);
    ps->pos = the_ring->head;
    ps->next_seq = the_ring->seq;
    pthread_mutex_unlock(&the_ring->lock);
    if (uv_poll_init(rt->loop, &ps->poll, worker_fds[ls_worker_id() - 1]) == 0) {
      ps->poll.data = ps;
      ps->polling = 1;
      uv_poll_start(&ps->poll, UV_READABLE, ps_poll_cb);
      uv_unref((uv_handle_t *)&ps->poll);
    }
  }
  ls_res_link(&rt->resources, &ps->res);
  rt->pubsub = ps;
  return ps;
}

/* ---- Lua: srv.pubsub.publish, subscribe, stats -------------------------------------------- */

static const char *check_topic(lua_State *L, int idx, size_t *len) {
  const char *topic = luaL_checklstring(L, idx, len);
  luaL_argcheck(L, *len > 0 && *len <= LS_TOPIC_MAX, idx, "topic must be 1 to 255 bytes");
  return topic;
}

/* srv.pubsub.publish(topic, message) -> true | nil, message, code. */
static int l_publish(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  size_t tlen, len;
  const char *topic = check_topic(L, 1, &tlen);
  const char *data = luaL_checklstring(L, 2, &len);
  ls_pubsub_t *ps = gen->rt->pubsub;
  if (the_ring != NULL && worker_count > 1) {
    unsigned i;
    uint64_t one = 1;
    if (ring_append(the_ring, topic, tlen, data, len) != 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "message too large");
      lua_pushliteral(L, "E2BIG");
      return 3;
    }
    for (i = 0; i < worker_count; i++)
      if (i + 1 != ls_worker_id())
        (void)!write(worker_fds[i], &one, sizeof one);
  }
  if (ps != NULL) {
    ps->published++;
    deliver(ps, topic, tlen, data, len);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* srv.pubsub.subscribe(topic [, { queue = n, on_full = "drop_oldest" | "close" }]) -> sub. */
static int l_subscribe(lua_State *L) {
  static const char *const policies[] = {"drop_oldest", "close", NULL};
  ls_gen_t *gen = ls_upvalue_gen(L);
  size_t tlen;
  const char *topic = check_topic(L, 1, &tlen);
  int opts = lua_istable(L, 2) ? 2 : 0;
  size_t cap = ls_opt_size_field(L, opts, "queue", LS_SUB_DEFAULT_QUEUE);
  int policy = 0;
  ls_pubsub_t *ps;
  sub_t *s;
  luaL_argcheck(L, cap >= 1 && cap <= 1000000, 2, "queue must be 1 to 1000000 messages");
  if (opts) {
    lua_getfield(L, opts, "on_full");
    if (!lua_isnil(L, -1))
      policy = luaL_checkoption(L, -1, NULL, policies);
    lua_pop(L, 1);
  }
  ps = ps_get(gen->rt);
  s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, LS_SUB_MT);
  s->queue = ls_malloc(cap * sizeof *s->queue);
  if (ps == NULL || s->queue == NULL)
    return luaL_error(L, "subscribe: not enough memory");
  s->cap = (unsigned)cap;
  s->gen = gen;
  s->close_on_full = (unsigned char)policy;
  s->topic_len = tlen;
  memcpy(s->topic, topic, tlen);
  s->hash = topic_hash(topic, tlen);
  s->ps = ps;
  s->next = ps->buckets[s->hash % LS_PUBSUB_BUCKETS];
  if (s->next != NULL)
    s->next->prev = s;
  ps->buckets[s->hash % LS_PUBSUB_BUCKETS] = s;
  ps->subs++;
  return 1;
}

/* srv.pubsub.stats() -> { subscriptions, published, lost }: this process's. */
static int l_stats(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  ls_pubsub_t *ps = gen->rt->pubsub;
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, ps != NULL ? (lua_Integer)ps->subs : 0);
  lua_setfield(L, -2, "subscriptions");
  lua_pushinteger(L, ps != NULL ? (lua_Integer)ps->published : 0);
  lua_setfield(L, -2, "published");
  lua_pushinteger(L, ps != NULL ? (lua_Integer)ps->lost : 0);
  lua_setfield(L, -2, "lost");
  return 1;
}

/* ---- Lua: the subscription ---------------------------------------------------------------- */

static sub_t *check_sub(lua_State *L) { return luaL_checkudata(L, 1, LS_SUB_MT); }

/* ctx: the loop time the wait ends at, or 0 for none. */
static int sub_receive_k(lua_State *L, int status, lua_KContext ctx) {
  sub_t *s = check_sub(L);
  ls_task_t *task = ls_task_current(s->gen, L);
  (void)status;
  if (s->waiter == task)
    s->waiter = NULL;
  if (s->len > 0) {
    msg_t *m = s->queue[s->first];
    s->first = (s->first + 1) % s->cap;
    s->len--;
    lua_pushlstring(L, m->data, m->len);
    msg_release(m);
    return 1;
  }
  if (s->ps == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    if (!s->overflowed)
      return 2;
    lua_pushliteral(L, "queue full");
    return 3;
  }
  if (task != NULL && ls_task_take_timeout(task))
    return ls_push_error(L, LS_ETIMEDOUT);
  task = ls_task_check(s->gen, L, "receive");
  if (s->waiter != NULL)
    return luaL_error(L, "receive: another task is already receiving on this subscription");
  s->waiter = task;
  return ls_task_wait_until(task, ctx, sub_receive_k);
}

/* sub:receive([timeout]) -> message | nil, "timeout", "ETIMEDOUT" | nil, "closed" [, why]. */
static int l_sub_receive(lua_State *L) {
  sub_t *s = check_sub(L);
  lua_KContext deadline = ls_task_deadline(s->gen->rt, ls_opt_timeout_ms(L, 2, -1));
  lua_settop(L, 1);
  return sub_receive_k(L, LUA_OK, deadline);
}

/* The iterator of sub:messages(): receive without a timeout (the loop's control value, the
 * last message, is not one). */
static int l_sub_next(lua_State *L) {
  check_sub(L);
  lua_settop(L, 1);
  return sub_receive_k(L, LUA_OK, 0);
}

/* sub:messages() -> an iterator over the messages until the subscription closes. */
static int l_sub_messages(lua_State *L) {
  check_sub(L);
  lua_pushcfunction(L, l_sub_next);
  lua_pushvalue(L, 1);
  return 2;
}

/* sub:close() -> true: no more messages; queued ones are dropped. */
static int l_sub_close(lua_State *L) {
  sub_t *s = check_sub(L);
  sub_clear_queue(s);
  sub_unlink(s);
  lua_pushboolean(L, 1);
  return 1;
}

/* sub:dropped() -> how many messages the full queue dropped. */
static int l_sub_dropped(lua_State *L) {
  sub_t *s = check_sub(L);
  lua_pushinteger(L, (lua_Integer)s->dropped);
  return 1;
}

static int l_sub_gc(lua_State *L) {
  sub_t *s = check_sub(L);
  sub_clear_queue(s);
  sub_unlink(s);
  if (s->queue != NULL) {
    ls_free(s->queue, s->cap * sizeof *s->queue);
    s->queue = NULL;
  }
  return 0;
}

static int l_sub_tostring(lua_State *L) {
  sub_t *s = check_sub(L);
  lua_pushfstring(L, "luasrv.Subscription (%s, %s)", s->topic, s->ps != NULL ? "open" : "closed");
  return 1;
}

void ls_pubsub_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg meth[] = {{"receive", l_sub_receive}, {"messages", l_sub_messages},
                                  {"close", l_sub_close},     {"dropped", l_sub_dropped},
                                  {NULL, NULL}};
  static const luaL_Reg metameth[] = {{"__gc", l_sub_gc}, {"__close", l_sub_close},
                                      {"__tostring", l_sub_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"publish", l_publish}, {"subscribe", l_subscribe},
                                   {"stats", l_stats}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_SUB_MT)) {
    luaL_setfuncs(L, metameth, 0);
    luaL_newlib(L, meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
  lua_setfield(L, -2, "pubsub");
}
