#include "tcp.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "buffer.h"
#include "errors.h"
#include "frame.h"
#include "log.h"
#include "workers.h"

#define LS_CONN_MT "luasrv.Conn"
#define LS_LISTENER_MT "luasrv.Listener"

/* Input is read ahead until this much is buffered (or what a waiting reader needs). */
#define LS_READ_HIWAT (256 * 1024)
/* write() yields while more than HIWAT bytes wait to be sent, until fewer than LOWAT do. */
#define LS_WRITE_HIWAT (64 * 1024)
#define LS_WRITE_LOWAT (16 * 1024)
/* How long a closed connection may take to send what it still holds. */
#define LS_LINGER_MS 30000
#define LS_WRITE_MAX_BUFS 16

typedef union {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} ls_stream_u;

typedef struct conn_ud_s conn_ud_t;

/* A connection. The C struct belongs to the core and lives until both of its handles have
 * closed and no name lookup is outstanding; the Lua object (conn_ud_t) only points at it,
 * and that pointer is cleared when the struct goes, so a late call answers "closed". */
typedef struct ls_conn_s {
  ls_stream_u u;
  uv_timer_t linger;       /* bounds the final flush of a closed connection */
  ls_res_t res;
  ls_gen_t *gen;
  conn_ud_t *ud;
  ls_buf_t in;
  ls_buf_t out_pending;    /* bytes accepted from Lua, not yet handed to libuv */
  ls_buf_t out_flight;     /* the bytes of the uv_write in flight */
  uv_write_t wreq;
  uv_shutdown_t sreq;
  uv_connect_t creq;
  uv_getaddrinfo_t gai;
  struct addrinfo *addrs;
  struct addrinfo *next_addr;
  ls_task_t *reader;       /* task waiting for input */
  ls_task_t *writer;       /* task waiting for output to drain */
  ls_task_t *connector;    /* task waiting for connect */
  ls_task_t *handler;      /* task running the listener's handler for this connection */
  int read_err;            /* why input ended: LS_EEOF or a libuv error; 0 while open */
  int write_err;
  int connect_err;
  int64_t timeout_ms;      /* for each read, write and connect; -1: none */
  size_t line_max;
  size_t frame_max;
  size_t want;             /* input bytes the waiting reader needs */
  int open_handles;
  unsigned char is_pipe;
  unsigned char is_client;  /* made by connect: its handle keeps the loop alive only while used */
  unsigned char reading;
  unsigned char writing;
  unsigned char connected;
  unsigned char closed;    /* closed for Lua; the handles may still be flushing */
  unsigned char closing;   /* uv_close called */
  unsigned char shut;      /* shutdown requested */
  unsigned char shutdown_sent;
  unsigned char gai_pending;
} ls_conn_t;

struct conn_ud_s {
  ls_conn_t *conn;
  ls_gen_t *gen;
};

typedef struct listener_ud_s listener_ud_t;

typedef struct ls_listener_s {
  ls_stream_u u;
  ls_listener_base_t base;   /* handler and generation; handed over on reload */
  int64_t timeout_ms;
  size_t line_max;
  size_t frame_max;
  unsigned char is_pipe;
  char *path;              /* Unix socket path, removed on close */
  size_t path_size;
  char url[128];
} ls_listener_t;

struct listener_ud_s {
  ls_listener_t *listener;   /* checked with ls_listener_alive before use */
  uint64_t id;               /* the listener's id when the object was made */
  ls_gen_t *gen;
};

static void conn_close(ls_conn_t *c, int graceful);
static void conn_flush(ls_conn_t *c);

static ls_gen_t *upvalue_gen(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* ---- connection life cycle ---------------------------------------------------------------- */

static void conn_maybe_free(ls_conn_t *c) {
  if (c->open_handles > 0 || c->gai_pending)
    return;
  if (c->ud != NULL)
    c->ud->conn = NULL;
  if (c->handler != NULL)
    c->handler->data = NULL;
  if (c->addrs != NULL)
    uv_freeaddrinfo(c->addrs);
  ls_buf_free(&c->in);
  ls_buf_free(&c->out_pending);
  ls_buf_free(&c->out_flight);
  ls_free(c, sizeof *c);
}

static void conn_close_cb(uv_handle_t *h) {
  ls_conn_t *c = h->data;
  c->open_handles--;
  conn_maybe_free(c);
}

static void conn_res_close(ls_res_t *res) {
  conn_close((ls_conn_t *)((char *)res - offsetof(ls_conn_t, res)), 0);
}

static ls_conn_t *conn_new(ls_gen_t *gen, int is_pipe) {
  ls_conn_t *c = ls_malloc(sizeof *c);
  int err;
  if (c == NULL)
    return NULL;
  memset(c, 0, sizeof *c);
  c->gen = gen;
  c->is_pipe = (unsigned char)is_pipe;
  c->timeout_ms = -1;
  c->line_max = LS_TCP_LINE_MAX;
  c->frame_max = LS_TCP_FRAME_MAX;
  err = is_pipe ? uv_pipe_init(gen->rt->loop, &c->u.pipe, 0) : uv_tcp_init(gen->rt->loop, &c->u.tcp);
  if (err != 0) {
    ls_free(c, sizeof *c);
    return NULL;
  }
  uv_timer_init(gen->rt->loop, &c->linger);
  c->u.handle.data = c;
  c->linger.data = c;
  c->open_handles = 2;
  c->res.close = conn_res_close;
  ls_res_link_gen(&gen->rt->resources, &c->res, gen);
  return c;
}

/* Wakes whoever waits on the connection; they look at its state when they run. */
static void conn_wake_all(ls_conn_t *c) {
  if (c->reader != NULL)
    ls_task_wake(c->reader);
  if (c->writer != NULL)
    ls_task_wake(c->writer);
  if (c->connector != NULL)
    ls_task_wake(c->connector);
}

static void linger_cb(uv_timer_t *t) {
  ls_conn_t *c = t->data;
  conn_close(c, 0);
}

/* Closes the connection for Lua at once. With graceful set and output still queued, the
 * handles close once it is sent (at most LS_LINGER_MS later); otherwise now. */
static void conn_close(ls_conn_t *c, int graceful) {
  int unsent = c->writing || ls_buf_len(&c->out_pending) > 0;
  if (!c->closed) {
    c->closed = 1;
    conn_wake_all(c);
  }
  if (c->closing)
    return;
  if (c->reading) {
    uv_read_stop(&c->u.stream);
    c->reading = 0;
  }
  if (graceful && unsent && c->write_err == 0 && c->connected) {
    if (!uv_is_active((uv_handle_t *)&c->linger)) {
      uv_timer_start(&c->linger, linger_cb, LS_LINGER_MS, 0);
      c->gen->rt->flushing++;
    }
    return;
  }
  if (uv_is_active((uv_handle_t *)&c->linger)) {
    c->gen->rt->flushing--;
    ls_runtime_check_drained(c->gen->rt);
  }
  c->closing = 1;
  ls_res_unlink(&c->res);
  if (c->gai_pending)
    uv_cancel((uv_req_t *)&c->gai);
  uv_close(&c->u.handle, conn_close_cb);
  uv_close((uv_handle_t *)&c->linger, conn_close_cb);
}

/* ---- reading ------------------------------------------------------------------------------ */

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ls_conn_t *c = h->data;
  ls_buf_t *in = &c->in;
  (void)suggested;
  /* Read straight into the connection's buffer when it has room; otherwise into the shared
   * scratch buffer, from which read_cb copies only what arrived. */
  if (in->cap - in->end >= 4096) {
    buf->base = in->data + in->end;
    buf->len = in->cap - in->end;
  } else {
    buf->base = c->gen->rt->scratch;
    buf->len = c->gen->rt->scratch_size;
  }
}

static size_t conn_read_hiwat(const ls_conn_t *c) {
  return c->want > LS_READ_HIWAT ? c->want : LS_READ_HIWAT;
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ls_conn_t *c = s->data;
  if (nread > 0) {
    if (buf->base == c->in.data + c->in.end) {
      c->in.end += (size_t)nread;
    } else if (ls_buf_append(&c->in, buf->base, (size_t)nread) != 0) {
      c->read_err = LS_ENOMEM;
    }
    if (c->read_err != 0 || ls_buf_len(&c->in) >= conn_read_hiwat(c)) {
      uv_read_stop(s);
      c->reading = 0;
    }
  } else if (nread < 0) {
    c->read_err = nread == UV_EOF ? LS_EEOF : (int)nread;
    uv_read_stop(s);
    c->reading = 0;
  } else {
    return;
  }
  if (c->reader != NULL)
    ls_task_resume(c->reader);
}

/* Reads ahead while there is room, so a waiting reader is woken only by new data. */
static void conn_want_input(ls_conn_t *c) {
  if (c->reading || c->read_err != 0 || c->closed || !c->connected)
    return;
  if (ls_buf_len(&c->in) >= conn_read_hiwat(c))
    return;
  if (uv_read_start(&c->u.stream, conn_alloc_cb, conn_read_cb) == 0)
    c->reading = 1;
}

static void conn_consume(ls_conn_t *c, size_t n) {
  ls_buf_consume(&c->in, n);
  conn_want_input(c);
}

/* ---- Lua objects -------------------------------------------------------------------------- */

static conn_ud_t *conn_push_ud(lua_State *L, ls_conn_t *c) {
  conn_ud_t *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->conn = c;
  ud->gen = c->gen;
  c->ud = ud;
  luaL_setmetatable(L, LS_CONN_MT);
  return ud;
}

/* The connection object at argument 1. Methods carry the metatable as their first upvalue, so
 * the usual case is one pointer comparison instead of a registry lookup by name. */
static conn_ud_t *check_conn_ud(lua_State *L) {
  conn_ud_t *ud = lua_touserdata(L, 1);
  if (ud != NULL && lua_getmetatable(L, 1)) {
    int ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ok)
      return ud;
  }
  return luaL_checkudata(L, 1, LS_CONN_MT);
}

/* The open connection at argument 1, or NULL when it is closed for Lua. */
static ls_conn_t *check_conn(lua_State *L) {
  conn_ud_t *ud = check_conn_ud(L);
  return ud->conn != NULL && !ud->conn->closed ? ud->conn : NULL;
}

/* Registers the running task as the reader and yields until input, EOF or a timeout. */
static int conn_wait_input(lua_State *L, ls_conn_t *c, size_t want, const char *what,
                           lua_KFunction k) {
  ls_task_t *task = ls_task_check(c->gen, L, what);
  if (c->reader != NULL && c->reader != task)
    return luaL_error(L, "%s: another task is already reading this connection", what);
  c->reader = task;
  c->want = want;
  conn_want_input(c);
  if (c->is_client)
    uv_ref(&c->u.handle);
  return ls_task_wait(task, c->timeout_ms, 0, k);
}

/* On resuming a read: returns the connection, or NULL after pushing the answer for a closed
 * connection or a timeout. `*answer` is then the number of results. */
static ls_conn_t *conn_resume_read(lua_State *L, int *answer) {
  conn_ud_t *ud = check_conn_ud(L);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_conn_t *c = ud->conn;
  if (c != NULL && c->reader == task) {
    c->reader = NULL;
    if (c->is_client)
      uv_unref(&c->u.handle);
  }
  if (c == NULL || c->closed) {
    *answer = ls_push_error(L, LS_ECLOSED);
    return NULL;
  }
  if (task != NULL && ls_task_take_timeout(task)) {
    c->want = 0;
    *answer = ls_push_error(L, LS_ETIMEDOUT);
    return NULL;
  }
  return c;
}

/* A read that hit the end of input or an error: nil, message, code [, partial data]. */
static int conn_push_read_error(lua_State *L, ls_conn_t *c, int with_partial) {
  int n = ls_push_error(L, c->read_err);
  if (with_partial && ls_buf_len(&c->in) > 0) {
    lua_pushlstring(L, ls_buf_head(&c->in), ls_buf_len(&c->in));
    conn_consume(c, ls_buf_len(&c->in));
    n++;
  }
  return n;
}

/* ---- conn:read([n | "a"]) ----------------------------------------------------------------- */

static int conn_read_k(lua_State *L, int status, lua_KContext ctx) {
  int answer;
  ls_conn_t *c = conn_resume_read(L, &answer);
  size_t len;
  lua_Integer n;
  (void)status;
  (void)ctx;
  if (c == NULL)
    return answer;
  len = ls_buf_len(&c->in);
  if (lua_type(L, 2) == LUA_TSTRING) {
    /* "a": everything up to the end of input. */
    if (c->read_err == 0)
      return conn_wait_input(L, c, len + 1, "read", conn_read_k);
    if (c->read_err != LS_EEOF)
      return conn_push_read_error(L, c, 1);
    lua_pushlstring(L, ls_buf_head(&c->in), len);
    conn_consume(c, len);
    return 1;
  }
  n = luaL_optinteger(L, 2, 0);
  if (n == 0 && len > 0) {
    lua_pushlstring(L, ls_buf_head(&c->in), len);
    conn_consume(c, len);
    return 1;
  }
  if (n > 0 && len >= (size_t)n) {
    lua_pushlstring(L, ls_buf_head(&c->in), (size_t)n);
    conn_consume(c, (size_t)n);
    return 1;
  }
  if (c->read_err != 0)
    return conn_push_read_error(L, c, 1);
  return conn_wait_input(L, c, n > 0 ? (size_t)n : 1, "read", conn_read_k);
}

/* conn:read() -> the bytes available now (waiting for at least one);
 * conn:read(n) -> exactly n bytes; conn:read("a") -> everything until the peer closes.
 * At the end of input: nil, "closed", "EOF" and, if some bytes came, those as a 4th value. */
static int l_conn_read(lua_State *L) {
  check_conn_ud(L);
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *mode = lua_tostring(L, 2);
    if (mode[0] == '*')
      mode++;
    luaL_argcheck(L, strcmp(mode, "a") == 0, 2, "expected a byte count or \"a\"");
  } else if (!lua_isnoneornil(L, 2)) {
    luaL_argcheck(L, luaL_checkinteger(L, 2) >= 0, 2, "byte count must not be negative");
  }
  lua_settop(L, 2);
  return conn_read_k(L, LUA_OK, 0);
}

/* ---- conn:readline([max]) and conn:lines() ------------------------------------------------ */

/* The line reader shared by readline and the lines iterator. Returns the results, or waits. */
static int conn_readline_step(lua_State *L, ls_conn_t *c, size_t max, lua_KFunction k) {
  size_t n = ls_buf_find_line(&c->in, max + 1);
  size_t len = ls_buf_len(&c->in);
  if (n > 0) {
    size_t text = n - 1;
    if (text > 0 && ls_buf_head(&c->in)[text - 1] == '\r')
      text--;
    lua_pushlstring(L, ls_buf_head(&c->in), text);
    conn_consume(c, n);
    return 1;
  }
  if (len > max) {
    /* The peer sends more than a line may hold: bound memory and drop the connection. */
    conn_close(c, 1);
    return ls_push_error(L, LS_ELINETOOLONG);
  }
  if (c->read_err != 0) {
    if (len > 0 && c->read_err == LS_EEOF) {
      lua_pushlstring(L, ls_buf_head(&c->in), len);
      conn_consume(c, len);
      return 1;
    }
    return conn_push_read_error(L, c, 0);
  }
  return conn_wait_input(L, c, max + 1, "readline", k);
}

static size_t opt_line_max(lua_State *L, int idx, ls_conn_t *c) {
  lua_Integer max;
  if (c == NULL || lua_isnoneornil(L, idx))
    return c != NULL ? c->line_max : LS_TCP_LINE_MAX;
  max = luaL_checkinteger(L, idx);
  luaL_argcheck(L, max > 0, idx, "line limit must be positive");
  return (size_t)max;
}

static int conn_readline_k(lua_State *L, int status, lua_KContext ctx) {
  int answer;
  ls_conn_t *c = conn_resume_read(L, &answer);
  (void)status;
  (void)ctx;
  if (c == NULL)
    return answer;
  return conn_readline_step(L, c, opt_line_max(L, 2, c), conn_readline_k);
}

/* conn:readline([max]) -> the next line without its "\n" or "\r\n". At the end of input a last
 * unterminated line is returned, then nil, "closed", "EOF". A line longer than max bytes
 * (default 64 KiB) gives nil, "line too long" and closes the connection. */
static int l_conn_readline(lua_State *L) {
  check_conn_ud(L);
  if (!lua_isnoneornil(L, 2))
    luaL_argcheck(L, luaL_checkinteger(L, 2) > 0, 2, "line limit must be positive");
  lua_settop(L, 2);
  return conn_readline_k(L, LUA_OK, 0);
}

/* The lines iterator ends quietly at the end of input (or a reset) and raises on any other
 * failure, as io.lines does, so the error reaches the log with its place in the script. */
static int conn_lines_finish(lua_State *L, int nres) {
  const char *msg, *code;
  if (nres == 1)
    return 1;
  msg = lua_tostring(L, -nres + 1);
  code = lua_tostring(L, -nres + 2);
  /* The peer ending the conversation, however abruptly, ends the loop. */
  if (code != NULL && (strcmp(code, "EOF") == 0 || strcmp(code, "ECLOSED") == 0 ||
                       strcmp(code, "ECONNRESET") == 0)) {
    lua_pushnil(L);
    return 1;
  }
  return luaL_error(L, "%s", msg != NULL ? msg : "read failed");
}

static int conn_lines_k(lua_State *L, int status, lua_KContext ctx) {
  int answer;
  ls_conn_t *c;
  int nres;
  (void)status;
  (void)ctx;
  c = conn_resume_read(L, &answer);
  if (c == NULL)
    return conn_lines_finish(L, answer);
  nres = conn_readline_step(L, c, c->line_max, conn_lines_k);
  return conn_lines_finish(L, nres);
}

static int l_conn_lines_iter(lua_State *L) {
  lua_settop(L, 1);
  lua_pushnil(L); /* no per-call limit: the connection's own */
  return conn_lines_k(L, LUA_OK, 0);
}

/* conn:lines() -> an iterator over the lines: `for line in conn:lines() do ... end`. */
static int l_conn_lines(lua_State *L) {
  check_conn_ud(L);
  lua_pushvalue(L, lua_upvalueindex(1)); /* the iterator checks its argument the same way */
  lua_pushcclosure(L, l_conn_lines_iter, 1);
  lua_pushvalue(L, 1);
  return 2;
}

/* ---- conn:read_frame(fmt [, max]) --------------------------------------------------------- */

static ls_frame_fmt_t check_frame_fmt(lua_State *L, int idx) {
  ls_frame_fmt_t fmt;
  if (ls_frame_parse_fmt(luaL_checkstring(L, idx), &fmt) != 0)
    luaL_argerror(L, idx, "expected a length format: u8, u16, u32 or u64, with be or le");
  return fmt;
}

static int conn_read_frame_k(lua_State *L, int status, lua_KContext ctx) {
  int answer;
  ls_conn_t *c = conn_resume_read(L, &answer);
  ls_frame_fmt_t fmt;
  size_t len, max;
  uint64_t size;
  (void)status;
  (void)ctx;
  if (c == NULL)
    return answer;
  fmt = check_frame_fmt(L, 2);
  max = lua_isnoneornil(L, 3) ? c->frame_max : (size_t)luaL_checkinteger(L, 3);
  len = ls_buf_len(&c->in);
  if (len < fmt.size) {
    if (c->read_err != 0)
      return conn_push_read_error(L, c, 0);
    return conn_wait_input(L, c, fmt.size, "read_frame", conn_read_frame_k);
  }
  size = ls_frame_decode(&fmt, (const unsigned char *)ls_buf_head(&c->in));
  if (size > max) {
    conn_close(c, 1);
    return ls_push_error(L, LS_EFRAMETOOLARGE);
  }
  if (len - fmt.size < size) {
    if (c->read_err != 0)
      return conn_push_read_error(L, c, 0);
    return conn_wait_input(L, c, fmt.size + (size_t)size, "read_frame", conn_read_frame_k);
  }
  lua_pushlstring(L, ls_buf_head(&c->in) + fmt.size, (size_t)size);
  conn_consume(c, fmt.size + (size_t)size);
  return 1;
}

/* conn:read_frame(fmt [, max]) -> the payload of the next length-prefixed message. fmt names
 * the length header ("u16" or "u32" big-endian, "u16le", ...). A length above max (default
 * 1 MiB) gives nil, "frame too large" and closes the connection. */
static int l_conn_read_frame(lua_State *L) {
  check_conn_ud(L);
  check_frame_fmt(L, 2);
  if (!lua_isnoneornil(L, 3))
    luaL_argcheck(L, luaL_checkinteger(L, 3) >= 0, 3, "frame limit must not be negative");
  lua_settop(L, 3);
  return conn_read_frame_k(L, LUA_OK, 0);
}

/* ---- writing ------------------------------------------------------------------------------ */

static size_t conn_unsent(const ls_conn_t *c) {
  return ls_buf_len(&c->out_pending) + ls_buf_len(&c->out_flight);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

static void conn_write_cb(uv_write_t *req, int status) {
  ls_conn_t *c = req->data;
  c->writing = 0;
  ls_buf_consume(&c->out_flight, ls_buf_len(&c->out_flight));
  if (status < 0) {
    if (c->write_err == 0)
      c->write_err = status;
    ls_buf_consume(&c->out_pending, ls_buf_len(&c->out_pending));
  }
  if (c->closing)
    return;
  conn_flush(c);
  if (c->writer != NULL)
    ls_task_resume(c->writer);
}

/* Hands pending output to libuv, one write at a time; closes or shuts down when all is sent
 * if that was asked for. */
static void conn_flush(ls_conn_t *c) {
  uv_buf_t buf;
  ls_buf_t swap;
  int err;
  if (c->writing || c->closing)
    return;
  if (ls_buf_len(&c->out_pending) == 0) {
    if (c->closed)
      conn_close(c, 0);
    else if (c->shut && !c->shutdown_sent) {
      c->shutdown_sent = 1;
      uv_shutdown(&c->sreq, &c->u.stream, conn_shutdown_cb);
    }
    return;
  }
  swap = c->out_flight;
  c->out_flight = c->out_pending;
  c->out_pending = swap;
  buf = uv_buf_init((char *)ls_buf_head(&c->out_flight), (unsigned)ls_buf_len(&c->out_flight));
  c->wreq.data = c;
  err = uv_write(&c->wreq, &c->u.stream, &buf, 1, conn_write_cb);
  if (err != 0) {
    c->write_err = err;
    ls_buf_consume(&c->out_flight, ls_buf_len(&c->out_flight));
    if (c->closed)
      conn_close(c, 0);
    return;
  }
  c->writing = 1;
}

static int conn_write_k(lua_State *L, int status, lua_KContext ctx) {
  conn_ud_t *ud = check_conn_ud(L);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_conn_t *c = ud->conn;
  (void)status;
  (void)ctx;
  if (c != NULL && c->writer == task)
    c->writer = NULL;
  if (c == NULL || c->closed)
    return ls_push_error(L, LS_ECLOSED);
  if (c->write_err != 0)
    return ls_push_error(L, c->write_err);
  if (task != NULL && ls_task_take_timeout(task))
    return ls_push_error(L, LS_ETIMEDOUT);
  if (conn_unsent(c) > LS_WRITE_LOWAT) {
    task = ls_task_check(c->gen, L, "write");
    if (c->writer != NULL && c->writer != task)
      return luaL_error(L, "write: another task is already writing this connection");
    c->writer = task;
    return ls_task_wait(task, c->timeout_ms, 0, conn_write_k);
  }
  lua_settop(L, 1);
  return 1;
}

/* Sends the buffers: straight to the socket when nothing is queued, the rest queued. Yields
 * while too much is queued, so a slow reader cannot make memory grow without bound. */
static int conn_write_bufs(lua_State *L, ls_conn_t *c, uv_buf_t *bufs, unsigned nbufs) {
  unsigned i = 0;
  size_t off = 0;
  if (c->shut)
    return ls_push_error(L, LS_ECLOSED);
  if (c->write_err != 0)
    return ls_push_error(L, c->write_err);
  if (!c->writing && ls_buf_len(&c->out_pending) == 0) {
    int n = uv_try_write(&c->u.stream, bufs, nbufs);
    if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
      c->write_err = n;
      return ls_push_error(L, n);
    }
    off = n > 0 ? (size_t)n : 0;
    while (i < nbufs && off >= bufs[i].len) {
      off -= bufs[i].len;
      i++;
    }
  }
  for (; i < nbufs; i++, off = 0) {
    if (ls_buf_append(&c->out_pending, bufs[i].base + off, bufs[i].len - off) != 0)
      return luaL_error(L, "write: not enough memory");
  }
  conn_flush(c);
  if (conn_unsent(c) > LS_WRITE_HIWAT)
    return conn_write_k(L, LUA_OK, 0);
  lua_settop(L, 1);
  return 1;
}

/* conn:write(...) -> conn. Strings and numbers, sent in order. */
static int l_conn_write(lua_State *L) {
  ls_conn_t *c = check_conn(L);
  int nargs = lua_gettop(L) - 1;
  uv_buf_t bufs[LS_WRITE_MAX_BUFS];
  int i;
  for (i = 1; i <= nargs; i++)
    luaL_checklstring(L, i + 1, NULL);
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (nargs == 0) {
    lua_settop(L, 1);
    return 1;
  }
  if (nargs <= LS_WRITE_MAX_BUFS) {
    char small[512];
    size_t total = 0;
    for (i = 0; i < nargs; i++) {
      size_t len;
      const char *s = lua_tolstring(L, i + 2, &len);
      bufs[i] = uv_buf_init((char *)s, (unsigned)len);
      total += len;
    }
    if (nargs > 1 && total <= sizeof small) {
      /* A few short pieces ("Hello, ", name, "!\n"): one plain write is cheaper than writev. */
      size_t off = 0;
      for (i = 0; i < nargs; i++) {
        memcpy(small + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
      }
      bufs[0] = uv_buf_init(small, (unsigned)total);
      return conn_write_bufs(L, c, bufs, 1);
    }
    return conn_write_bufs(L, c, bufs, (unsigned)nargs);
  }
  /* Many pieces: join them once. */
  lua_concat(L, nargs);
  {
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    bufs[0] = uv_buf_init((char *)s, (unsigned)len);
  }
  return conn_write_bufs(L, c, bufs, 1);
}

/* conn:write_frame(fmt, data) -> conn: data behind its length header. */
static int l_conn_write_frame(lua_State *L) {
  ls_conn_t *c = check_conn(L);
  ls_frame_fmt_t fmt = check_frame_fmt(L, 2);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  unsigned char header[8];
  uv_buf_t bufs[2];
  unsigned hlen = ls_frame_encode(&fmt, len, header);
  luaL_argcheck(L, hlen > 0, 3, "data too long for the length format");
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  bufs[0] = uv_buf_init((char *)header, hlen);
  bufs[1] = uv_buf_init((char *)data, (unsigned)len);
  return conn_write_bufs(L, c, bufs, 2);
}

/* ---- other methods ------------------------------------------------------------------------ */

/* conn:close() -> true. Queued output is still sent; waiting calls answer nil, "closed". */
static int l_conn_close(lua_State *L) {
  ls_conn_t *c = check_conn(L);
  if (c != NULL) {
    conn_close(c, 1);
    conn_flush(c);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:shutdown() -> true: no more output (the peer reads EOF once the queue is sent). */
static int l_conn_shutdown(lua_State *L) {
  ls_conn_t *c = check_conn(L);
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  c->shut = 1;
  conn_flush(c);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:settimeout(seconds | nil) -> conn: the limit for each later read, write or connect. */
static int l_conn_settimeout(lua_State *L) {
  conn_ud_t *ud = check_conn_ud(L);
  int64_t ms = ls_opt_timeout_ms(L, 2, -1);
  if (ud->conn != NULL)
    ud->conn->timeout_ms = ms;
  lua_settop(L, 1);
  return 1;
}

/* conn:peer() -> host, port (TCP) or the socket path (Unix). */
static int l_conn_peer(lua_State *L) {
  ls_conn_t *c = check_conn(L);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  int err;
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (c->is_pipe) {
    char path[256];
    size_t plen = sizeof path;
    err = uv_pipe_getpeername(&c->u.pipe, path, &plen);
    if (err == 0 && plen == 0)
      lua_pushliteral(L, "unix");
    else if (err == 0)
      lua_pushlstring(L, path, plen);
    else
      return ls_push_error(L, err);
    return 1;
  }
  err = uv_tcp_getpeername(&c->u.tcp, (struct sockaddr *)&ss, &len);
  if (err != 0)
    return ls_push_error(L, err);
  return ls_addr_push(L, &ss);
}

static int l_conn_gc(lua_State *L) {
  conn_ud_t *ud = check_conn_ud(L);
  if (ud->conn != NULL) {
    ud->conn->ud = NULL;
    conn_close(ud->conn, 1);
    conn_flush(ud->conn);
    ud->conn = NULL;
  }
  return 0;
}

static int l_conn_tostring(lua_State *L) {
  conn_ud_t *ud = check_conn_ud(L);
  lua_pushfstring(L, "luasrv.Conn (%s)", ud->conn != NULL && !ud->conn->closed ? "open" : "closed");
  return 1;
}

/* ---- connect ------------------------------------------------------------------------------ */

static void conn_connected(ls_conn_t *c, int status) {
  if (status == 0) {
    c->connected = 1;
    if (!c->is_pipe)
      uv_tcp_nodelay(&c->u.tcp, 1);
  } else {
    c->connect_err = status;
  }
  if (c->connector != NULL)
    ls_task_resume(c->connector);
}

static void conn_try_next_addr(ls_conn_t *c, int last_err);

static void conn_connect_cb(uv_connect_t *req, int status) {
  ls_conn_t *c = req->data;
  if (status == UV_ECANCELED || c->closing)
    return;
  if (status < 0 && c->next_addr != NULL) {
    conn_try_next_addr(c, status);
    return;
  }
  conn_connected(c, status);
}

static void conn_try_next_addr(ls_conn_t *c, int last_err) {
  while (c->next_addr != NULL) {
    struct addrinfo *ai = c->next_addr;
    int err;
    c->next_addr = ai->ai_next;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    c->creq.data = c;
    err = uv_tcp_connect(&c->creq, &c->u.tcp, ai->ai_addr, conn_connect_cb);
    if (err == 0)
      return;
    last_err = err;
  }
  conn_connected(c, last_err);
}

static void conn_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  ls_conn_t *c = req->data;
  c->gai_pending = 0;
  if (c->closing) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    conn_maybe_free(c);
    return;
  }
  if (status < 0) {
    conn_connected(c, status);
    return;
  }
  c->addrs = res;
  c->next_addr = res;
  conn_try_next_addr(c, UV_EADDRNOTAVAIL);
}

static int conn_connect_k(lua_State *L, int status, lua_KContext ctx) {
  conn_ud_t *ud = lua_touserdata(L, (int)ctx);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_conn_t *c = ud->conn;
  (void)status;
  if (c != NULL && c->connector == task)
    c->connector = NULL;
  if (c == NULL || c->closed)
    return ls_push_error(L, LS_ECLOSED);
  if (c->connected) {
    /* An open client connection alone does not keep a finished script running; a task
     * waiting on it does (see conn_wait_input). */
    c->is_client = 1;
    uv_unref(&c->u.handle);
    conn_want_input(c);
    lua_pushvalue(L, (int)ctx);
    return 1;
  }
  if (c->connect_err != 0 || (task != NULL && ls_task_take_timeout(task))) {
    int err = c->connect_err != 0 ? c->connect_err : LS_ETIMEDOUT;
    conn_close(c, 0);
    return ls_push_error(L, err);
  }
  c->connector = ls_task_check(c->gen, L, "connect");
  return ls_task_wait(c->connector, c->timeout_ms, ctx, conn_connect_k);
}

/* srv.tcp.connect(host, port [, opts]) or srv.tcp.connect{host=, port= | path=, timeout=}
 * -> conn, or nil, message, code. Host names are resolved through libuv; opts.timeout
 * (seconds, default 30) bounds the lookup and the connect. */
static int l_tcp_connect(lua_State *L) {
  ls_gen_t *gen = upvalue_gen(L);
  int opts = 0;
  const char *host = NULL;
  const char *path = NULL;
  lua_Integer port = 0;
  ls_task_t *task;
  ls_conn_t *c;
  int udx;
  int err;
  if (lua_istable(L, 1)) {
    opts = 1;
    path = ls_opt_string_field(L, 1, "path");
    host = ls_opt_string_field(L, 1, "host");
    if (path == NULL) {
      lua_getfield(L, 1, "port");
      if (!lua_isinteger(L, -1))
        return luaL_argerror(L, 1, "expected a port or a path");
      port = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
  } else {
    host = luaL_checkstring(L, 1);
    port = luaL_checkinteger(L, 2);
    if (!lua_isnoneornil(L, 3)) {
      luaL_checktype(L, 3, LUA_TTABLE);
      opts = 3;
    }
  }
  if (path == NULL && host == NULL)
    return luaL_error(L, "connect: expected a host and a port, or a path");
  if (path == NULL)
    luaL_argcheck(L, port > 0 && port < 65536, opts == 1 ? 1 : 2, "port out of range");
  task = ls_task_check(gen, L, "connect");
  c = conn_new(gen, path != NULL);
  if (c == NULL)
    return luaL_error(L, "connect: not enough memory");
  c->timeout_ms = ls_opt_timeout_field(L, opts, "timeout", 30000);
  c->line_max = ls_opt_size_field(L, opts, "line_max", LS_TCP_LINE_MAX);
  c->frame_max = ls_opt_size_field(L, opts, "frame_max", LS_TCP_FRAME_MAX);
  conn_push_ud(L, c);
  udx = lua_gettop(L);
  c->creq.data = c;
  if (path != NULL) {
    uv_pipe_connect(&c->creq, &c->u.pipe, path, conn_connect_cb);
  } else {
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) == 0) {
      err = uv_tcp_connect(&c->creq, &c->u.tcp, (struct sockaddr *)&ss, conn_connect_cb);
    } else {
      struct addrinfo hints;
      char service[16];
      memset(&hints, 0, sizeof hints);
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      snprintf(service, sizeof service, "%d", (int)port);
      c->gai.data = c;
      err = uv_getaddrinfo(gen->rt->loop, &c->gai, conn_gai_cb, host, service, &hints);
      if (err == 0)
        c->gai_pending = 1;
    }
    if (err != 0) {
      conn_close(c, 0);
      return ls_push_error(L, err);
    }
  }
  c->connector = task;
  return ls_task_wait(task, c->timeout_ms, udx, conn_connect_k);
}

/* ---- listen ------------------------------------------------------------------------------- */

static void listener_close_cb(uv_handle_t *h) {
  ls_listener_t *l = h->data;
  if (l->path != NULL) {
    ls_worker_unlink_path(l->path);
    ls_free(l->path, l->path_size);
  }
  ls_free(l, sizeof *l);
}

static void listener_close(ls_listener_t *l) {
  if (uv_is_closing(&l->u.handle))
    return;
  ls_res_unlink(&l->base.res);
  ls_listener_release(&l->base);
  uv_close(&l->u.handle, listener_close_cb);
}

static void listener_res_close(ls_res_t *res) {
  listener_close((ls_listener_t *)((char *)res - offsetof(ls_listener_t, base.res)));
}

static int conn_handler_done(ls_task_t *task, int status, int nres) {
  ls_conn_t *c = task->data;
  (void)status;
  (void)nres;
  if (c != NULL) {
    c->handler = NULL;
    conn_close(c, 1);
    conn_flush(c);
  }
  return 0;
}

static int conn_task_body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* The body of a connection's task: handler(conn). */
static int conn_task_body(lua_State *L) {
  ls_conn_t *c = lua_touserdata(L, 2);
  lua_settop(L, 1);
  conn_push_ud(L, c);
  lua_callk(L, 1, 0, 0, conn_task_body_k);
  return 0;
}

static void listener_connection_cb(uv_stream_t *server, int status) {
  ls_listener_t *l = server->data;
  ls_conn_t *c;
  ls_task_t *task;
  if (status < 0) {
    ls_log(LS_LOG_WARN, "%s: accept failed: %s", l->url, uv_strerror(status));
    return;
  }
  c = conn_new(l->base.gen, l->is_pipe);
  if (c == NULL) {
    ls_log(LS_LOG_ERROR, "%s: out of memory accepting a connection", l->url);
    return;
  }
  if (uv_accept(server, &c->u.stream) != 0) {
    conn_close(c, 0);
    return;
  }
  c->connected = 1;
  c->timeout_ms = l->timeout_ms;
  c->line_max = l->line_max;
  c->frame_max = l->frame_max;
  if (!c->is_pipe)
    uv_tcp_nodelay(&c->u.tcp, 1);
  task = ls_task_new(l->base.gen, conn_handler_done, c);
  if (task == NULL) {
    ls_log(LS_LOG_ERROR, "%s: out of memory starting a handler", l->url);
    conn_close(c, 0);
    return;
  }
  c->handler = task;
  task->budgeted = 1;
  /* The connection object is made inside the task, where running out of memory is an error of
   * that task rather than a panic. */
  lua_pushcfunction(task->co, conn_task_body);
  lua_rawgeti(task->co, LUA_REGISTRYINDEX, l->base.handler_ref);
  lua_pushlightuserdata(task->co, c);
  conn_want_input(c);
  ls_task_start(task, 2);
}

/* Fills in the listener's printable address ("tcp://127.0.0.1:9999", "unix:/run/x.sock"). */
static void listener_set_url(ls_listener_t *l) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (l->is_pipe) {
    snprintf(l->url, sizeof l->url, "unix:%s", l->path);
    return;
  }
  memset(&ss, 0, sizeof ss);
  uv_tcp_getsockname(&l->u.tcp, (struct sockaddr *)&ss, &len);
  ls_addr_url("tcp", &ss, l->url, sizeof l->url);
}

static int listener_bind(ls_listener_t *l, const char *host, int port, const char *path) {
  int err;
  if (path != NULL) {
    err = ls_worker_bind_pipe(&l->u.pipe, path);
  } else {
    struct sockaddr_storage ss;
    err = ls_addr_parse(host, port, &ss);
    if (err == 0)
      err = ls_worker_bind_tcp(&l->u.tcp, (struct sockaddr *)&ss, "tcp");
  }
  return err;
}

/* srv.tcp.listen(opts, handler) -> listener. opts: host (default "127.0.0.1"), port (0: any
 * free port), or path for a Unix socket; backlog; timeout, line_max, frame_max for each
 * connection. handler(conn) runs in its own task for each connection, which closes when the
 * handler returns. Raises if the address cannot be bound. */
static int l_tcp_listen(lua_State *L) {
  ls_gen_t *gen = upvalue_gen(L);
  const char *host, *path;
  lua_Integer port = 0;
  int backlog;
  ls_listener_t *l, *claimed;
  listener_ud_t *ud;
  char key[160];
  int err;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  path = ls_opt_string_field(L, 1, "path");
  host = ls_opt_string_field(L, 1, "host");
  if (host == NULL)
    host = "127.0.0.1";
  if (path == NULL) {
    lua_getfield(L, 1, "port");
    if (!lua_isinteger(L, -1))
      return luaL_argerror(L, 1, "expected a port (0 for any free one) or a path");
    port = lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, port >= 0 && port < 65536, 1, "port out of range");
  }
  backlog = (int)ls_opt_size_field(L, 1, "backlog", 511);
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->listener = NULL;
  ud->gen = gen;
  luaL_setmetatable(L, LS_LISTENER_MT);
  if (path != NULL)
    snprintf(key, sizeof key, "unix:%s", path);
  else
    ls_addr_key("tcp", host, (int)port, key, sizeof key); /* port 0: never kept */
  claimed = (ls_listener_t *)ls_listener_claim(gen, key);
  if (claimed != NULL) {
    /* A reload listening where the running generation does: keep the socket, stage the
     * new handler; ls_gen_commit switches to it once the script has loaded. */
    claimed = (ls_listener_t *)((char *)claimed - offsetof(ls_listener_t, base));
    lua_pushvalue(L, 2);
    claimed->base.staged_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    claimed->base.staged_gen = gen;
    ud->listener = claimed;
    ud->id = claimed->base.id;
    return 1;
  }
  l = ls_malloc(sizeof *l);
  if (l == NULL)
    return luaL_error(L, "listen: not enough memory");
  memset(l, 0, sizeof *l);
  l->is_pipe = path != NULL;
  l->timeout_ms = ls_opt_timeout_field(L, 1, "timeout", -1);
  l->line_max = ls_opt_size_field(L, 1, "line_max", LS_TCP_LINE_MAX);
  l->frame_max = ls_opt_size_field(L, 1, "frame_max", LS_TCP_FRAME_MAX);
  if (path != NULL) {
    l->path_size = strlen(path) + 1;
    l->path = ls_malloc(l->path_size);
    if (l->path == NULL) {
      ls_free(l, sizeof *l);
      return luaL_error(L, "listen: not enough memory");
    }
    memcpy(l->path, path, l->path_size);
  }
  err = l->is_pipe ? uv_pipe_init(gen->rt->loop, &l->u.pipe, 0) : uv_tcp_init(gen->rt->loop, &l->u.tcp);
  if (err != 0) {
    ls_free(l->path, l->path_size);
    ls_free(l, sizeof *l);
    return luaL_error(L, "listen: %s", uv_strerror(err));
  }
  l->u.handle.data = l;
  ls_listener_init(&l->base, gen, LUA_NOREF, key, listener_res_close);
  err = listener_bind(l, host, (int)port, path);
  if (err != 0 && l->path != NULL) {
    /* Nothing was bound: the path is not ours to remove on close. */
    ls_free(l->path, l->path_size);
    l->path = NULL;
  }
  if (err == 0)
    err = uv_listen(&l->u.stream, backlog, listener_connection_cb);
  if (err != 0) {
    char where[128];
    if (path != NULL)
      snprintf(where, sizeof where, "unix:%s", path);
    else
      snprintf(where, sizeof where, "%s:%d", host, (int)port);
    listener_close(l);
    return luaL_error(L, "listen: cannot listen on %s: %s", where, uv_strerror(err));
  }
  lua_pushvalue(L, 2);
  l->base.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ud->listener = l;
  ud->id = l->base.id;
  listener_set_url(l);
  if (gen->rt->announce) {
    printf("listening on %s\n", l->url);
    fflush(stdout);
  }
  return 1;
}

/* The open listener behind the Lua object at argument 1, or NULL once it has closed. */
static ls_listener_t *check_listener(lua_State *L) {
  listener_ud_t *ud = luaL_checkudata(L, 1, LS_LISTENER_MT);
  if (ud->listener == NULL || !ls_listener_alive(ud->gen->rt, &ud->listener->base, ud->id))
    return NULL;
  return ud->listener;
}

/* listener:close() -> true: stops accepting; running connections go on. */
static int l_listener_close(lua_State *L) {
  ls_listener_t *l = check_listener(L);
  if (l != NULL)
    listener_close(l);
  lua_pushboolean(L, 1);
  return 1;
}

/* listener:address() -> host, port (TCP) or path (Unix); nil, "closed" once closed. */
static int l_listener_address(lua_State *L) {
  ls_listener_t *l = check_listener(L);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (l == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (l->is_pipe) {
    lua_pushstring(L, l->path);
    return 1;
  }
  if (uv_tcp_getsockname(&l->u.tcp, (struct sockaddr *)&ss, &len) != 0)
    return ls_push_error(L, LS_ECLOSED);
  return ls_addr_push(L, &ss);
}

/* listener:url() -> "tcp://127.0.0.1:9999" as printed at start. */
static int l_listener_url(lua_State *L) {
  ls_listener_t *l = check_listener(L);
  if (l == NULL)
    return ls_push_error(L, LS_ECLOSED);
  lua_pushstring(L, l->url);
  return 1;
}

static int l_listener_tostring(lua_State *L) {
  ls_listener_t *l = check_listener(L);
  if (l != NULL)
    lua_pushfstring(L, "luasrv.Listener (%s)", l->url);
  else
    lua_pushliteral(L, "luasrv.Listener (closed)");
  return 1;
}

/* Makes a class's metatable; the methods get the metatable as their first upvalue. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *meth,
                      const luaL_Reg *metameth) {
  if (luaL_newmetatable(L, name)) {
    lua_pushvalue(L, -1);
    luaL_setfuncs(L, metameth, 1);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, meth, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

void ls_tcp_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg conn_meth[] = {
      {"read", l_conn_read},         {"readline", l_conn_readline},
      {"lines", l_conn_lines},       {"read_frame", l_conn_read_frame},
      {"write", l_conn_write},       {"write_frame", l_conn_write_frame},
      {"close", l_conn_close},       {"shutdown", l_conn_shutdown},
      {"peer", l_conn_peer},         {"settimeout", l_conn_settimeout},
      {NULL, NULL}};
  static const luaL_Reg conn_metameth[] = {{"__gc", l_conn_gc},
                                           {"__close", l_conn_gc},
                                           {"__tostring", l_conn_tostring},
                                           {NULL, NULL}};
  static const luaL_Reg listener_meth[] = {{"close", l_listener_close},
                                           {"address", l_listener_address},
                                           {"url", l_listener_url},
                                           {NULL, NULL}};
  static const luaL_Reg listener_metameth[] = {{"__tostring", l_listener_tostring},
                                               {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"listen", l_tcp_listen}, {"connect", l_tcp_connect}, {NULL, NULL}};
  new_class(L, LS_CONN_MT, conn_meth, conn_metameth);
  new_class(L, LS_LISTENER_MT, listener_meth, listener_metameth);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
}
