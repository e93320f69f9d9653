#include "tcp.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "buffer.h"
#include "connect.h"
#include "errors.h"
#include "frame.h"
#include "listener.h"
#include "log.h"
#include "stream.h"
#include "tls.h"
#include "tcp_internal.h"

/* Input is read ahead until this much is buffered (or what a waiting reader needs). */
#define LS_READ_HIWAT (256 * 1024)
/* write() yields while more than HIWAT bytes wait to be sent, until fewer than LOWAT do. */
#define LS_WRITE_HIWAT (64 * 1024)
#define LS_WRITE_LOWAT (16 * 1024)
/* How long a closed connection may take to send what it still holds. */
#define LS_LINGER_MS 30000
#define LS_WRITE_MAX_BUFS 16


/* ---- connection life cycle ---------------------------------------------------------------- */

static void conn_maybe_free(ls_conn_t *c) {
  if (!c->stream_closed)
    return;
  if (c->ud != NULL)
    c->ud->conn = NULL;
  if (c->handler != NULL)
    c->handler->data = NULL;
  ls_tls_ctx_release(c->pending_tls);
  ls_free(c->tls_name, c->tls_name_size);
  ls_free(c, sizeof *c);
}

static void tcp_conn_res_close(ls_res_t *res) {
  ls__tcp_conn_close((ls_conn_t *)((char *)res - offsetof(ls_conn_t, res)), 0);
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


static void tcp_conn_on_read(ls_stream_t *s) {
  ls_conn_t *c = s->owner;
  if (c->awaiting_handshake) {
    /* A TLS connection of a listener: its handler starts once the handshake is done. */
    if (s->read_err != 0)
      ls__tcp_conn_close(c, 0);
    else if (ls_tls_ready(s))
      ls__tcp_start_handler(c);
    return;
  }
  if (c->connector != NULL)
    ls_task_resume(c->connector); /* a handshake finished or failed */
  else if (c->reader != NULL)
    ls_task_resume(c->reader);
}

static void tcp_conn_on_written(ls_stream_t *s) {
  ls_conn_t *c = s->owner;
  if (c->writer != NULL)
    ls_task_resume(c->writer);
}

static void tcp_conn_on_close(ls_stream_t *s) {
  ls_conn_t *c = s->owner;
  ls_res_unlink(&c->res);
  c->stream_closed = 1;
  if (!c->closed) {
    c->closed = 1;
    conn_wake_all(c);
  }
  conn_maybe_free(c);
}

static const ls_stream_events_t tcp_conn_events = {tcp_conn_on_read, tcp_conn_on_written, tcp_conn_on_close};

ls_conn_t *ls__tcp_conn_new(ls_gen_t *gen, int is_pipe) {
  ls_conn_t *c = ls_malloc(sizeof *c);
  if (c == NULL)
    return NULL;
  memset(c, 0, sizeof *c);
  if (ls_stream_init(&c->s, gen->rt, is_pipe, &tcp_conn_events, c) != 0) {
    ls_free(c, sizeof *c);
    return NULL;
  }
  c->gen = gen;
  c->timeout_ms = -1;
  c->line_max = LS_TCP_LINE_MAX;
  c->frame_max = LS_TCP_FRAME_MAX;
  c->s.read_limit = LS_READ_HIWAT;
  c->res.close = tcp_conn_res_close;
  ls_res_link_gen(&gen->rt->resources, &c->res, gen);
  return c;
}

/* Closes the connection for Lua at once. With graceful set and output still queued, the
 * stream ends once it is sent (at most LS_LINGER_MS later); otherwise it closes now. */
void ls__tcp_conn_close(ls_conn_t *c, int graceful) {
  if (!c->closed) {
    c->closed = 1;
    conn_wake_all(c);
  }
  if (c->s.closing)
    return;
  if (c->connecting != NULL) {
    ls_connect_cancel(c->connecting);
    c->connecting = NULL;
  }
  if (graceful && ls_stream_unsent(&c->s) > 0 && c->s.write_err == 0 && c->connected) {
    ls_stream_end(&c->s, LS_LINGER_MS, 0);
    return;
  }
  ls_stream_close(&c->s);
}

/* ---- reading ------------------------------------------------------------------------------ */

static size_t conn_read_hiwat(const ls_conn_t *c) {
  return c->want > LS_READ_HIWAT ? c->want : LS_READ_HIWAT;
}

/* Reads ahead while there is room, so a waiting reader is woken only by new data. */
void ls__tcp_conn_want_input(ls_conn_t *c) {
  if (c->closed || !c->connected)
    return;
  c->s.read_limit = conn_read_hiwat(c);
  ls_stream_want_input(&c->s);
}

static void conn_consume(ls_conn_t *c, size_t n) {
  ls_buf_consume(&c->s.in, n);
  ls__tcp_conn_want_input(c);
}

/* ---- Lua objects -------------------------------------------------------------------------- */

conn_ud_t *ls__tcp_conn_push_ud(lua_State *L, ls_conn_t *c) {
  conn_ud_t *ud = lua_newuserdatauv(L, sizeof *ud, LS_CONN_UVALUES);
  ud->conn = c;
  ud->gen = c->gen;
  c->ud = ud;
  luaL_setmetatable(L, LS_CONN_MT);
  return ud;
}

conn_ud_t *ls__tcp_check_conn_ud(lua_State *L) { return ls_check_class(L, LS_CONN_MT); }

ls_conn_t *ls__tcp_check_conn(lua_State *L) {
  conn_ud_t *ud = ls__tcp_check_conn_ud(L);
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
  ls__tcp_conn_want_input(c);
  if (c->is_client)
    uv_ref(&c->s.u.handle);
  return ls_task_wait(task, c->timeout_ms, 0, k);
}

/* On resuming a read: returns the connection, or NULL after pushing the answer for a closed
 * connection or a timeout. `*answer` is then the number of results. */
static ls_conn_t *conn_resume_read(lua_State *L, int *answer) {
  conn_ud_t *ud = ls__tcp_check_conn_ud(L);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_conn_t *c = ud->conn;
  if (c != NULL && c->reader == task) {
    c->reader = NULL;
    if (c->is_client)
      uv_unref(&c->s.u.handle);
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

int ls__tcp_push_error(lua_State *L, ls_conn_t *c, int err) {
  if (err != LS_ETLS)
    return ls_push_error(L, err);
  lua_pushnil(L);
  lua_pushstring(L, ls_tls_error(&c->s));
  lua_pushliteral(L, "ETLS");
  return 3;
}

/* A read that hit the end of input or an error: nil, message, code [, partial data]. */
static int conn_push_read_error(lua_State *L, ls_conn_t *c, int with_partial) {
  int n = ls__tcp_push_error(L, c, c->s.read_err);
  if (with_partial && ls_buf_len(&c->s.in) > 0) {
    lua_pushlstring(L, ls_buf_head(&c->s.in), ls_buf_len(&c->s.in));
    conn_consume(c, ls_buf_len(&c->s.in));
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
  len = ls_buf_len(&c->s.in);
  if (lua_type(L, 2) == LUA_TSTRING) {
    /* "a": everything up to the end of input. */
    if (c->s.read_err == 0)
      return conn_wait_input(L, c, len + 1, "read", conn_read_k);
    if (c->s.read_err != LS_EEOF)
      return conn_push_read_error(L, c, 1);
    lua_pushlstring(L, ls_buf_head(&c->s.in), len);
    conn_consume(c, len);
    return 1;
  }
  n = luaL_optinteger(L, 2, 0);
  if (n == 0 && len > 0) {
    lua_pushlstring(L, ls_buf_head(&c->s.in), len);
    conn_consume(c, len);
    return 1;
  }
  if (n > 0 && len >= (size_t)n) {
    lua_pushlstring(L, ls_buf_head(&c->s.in), (size_t)n);
    conn_consume(c, (size_t)n);
    return 1;
  }
  if (c->s.read_err != 0)
    return conn_push_read_error(L, c, 1);
  return conn_wait_input(L, c, n > 0 ? (size_t)n : 1, "read", conn_read_k);
}

/* conn:read() -> the bytes available now (waiting for at least one);
 * conn:read(n) -> exactly n bytes; conn:read("a") -> everything until the peer closes.
 * At the end of input: nil, "closed", "EOF" and, if some bytes came, those as a 4th value. */
static int l_conn_read(lua_State *L) {
  ls__tcp_check_conn_ud(L);
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
  size_t n = ls_buf_find_line(&c->s.in, max + 1);
  size_t len = ls_buf_len(&c->s.in);
  if (n > 0) {
    size_t text = n - 1;
    if (text > 0 && ls_buf_head(&c->s.in)[text - 1] == '\r')
      text--;
    lua_pushlstring(L, ls_buf_head(&c->s.in), text);
    conn_consume(c, n);
    return 1;
  }
  if (len > max) {
    /* The peer sends more than a line may hold: bound memory and drop the connection. */
    ls__tcp_conn_close(c, 1);
    return ls_push_error(L, LS_ELINETOOLONG);
  }
  if (c->s.read_err != 0) {
    if (len > 0 && c->s.read_err == LS_EEOF) {
      lua_pushlstring(L, ls_buf_head(&c->s.in), len);
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
  ls__tcp_check_conn_ud(L);
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
  ls__tcp_check_conn_ud(L);
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
  len = ls_buf_len(&c->s.in);
  if (len < fmt.size) {
    if (c->s.read_err != 0)
      return conn_push_read_error(L, c, 0);
    return conn_wait_input(L, c, fmt.size, "read_frame", conn_read_frame_k);
  }
  size = ls_frame_decode(&fmt, (const unsigned char *)ls_buf_head(&c->s.in));
  if (size > max) {
    ls__tcp_conn_close(c, 1);
    return ls_push_error(L, LS_EFRAMETOOLARGE);
  }
  if (len - fmt.size < size) {
    if (c->s.read_err != 0)
      return conn_push_read_error(L, c, 0);
    return conn_wait_input(L, c, fmt.size + (size_t)size, "read_frame", conn_read_frame_k);
  }
  lua_pushlstring(L, ls_buf_head(&c->s.in) + fmt.size, (size_t)size);
  conn_consume(c, fmt.size + (size_t)size);
  return 1;
}

/* conn:read_frame(fmt [, max]) -> the payload of the next length-prefixed message. fmt names
 * the length header ("u16" or "u32" big-endian, "u16le", ...). A length above max (default
 * 1 MiB) gives nil, "frame too large" and closes the connection. */
static int l_conn_read_frame(lua_State *L) {
  ls__tcp_check_conn_ud(L);
  check_frame_fmt(L, 2);
  if (!lua_isnoneornil(L, 3))
    luaL_argcheck(L, luaL_checkinteger(L, 3) >= 0, 3, "frame limit must not be negative");
  lua_settop(L, 3);
  return conn_read_frame_k(L, LUA_OK, 0);
}

/* ---- writing ------------------------------------------------------------------------------ */

static int conn_write_k(lua_State *L, int status, lua_KContext ctx) {
  conn_ud_t *ud = ls__tcp_check_conn_ud(L);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_conn_t *c = ud->conn;
  (void)status;
  (void)ctx;
  if (c != NULL && c->writer == task)
    c->writer = NULL;
  if (c == NULL || c->closed)
    return ls_push_error(L, LS_ECLOSED);
  if (c->s.write_err != 0)
    return ls__tcp_push_error(L, c, c->s.write_err);
  if (task != NULL && ls_task_take_timeout(task))
    return ls_push_error(L, LS_ETIMEDOUT);
  if (ls_stream_unsent(&c->s) > LS_WRITE_LOWAT) {
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
  int err;
  if (c->s.shut)
    return ls_push_error(L, LS_ECLOSED);
  err = ls_stream_write(&c->s, bufs, nbufs);
  if (err == LS_ENOMEM)
    return luaL_error(L, "write: not enough memory");
  if (err != 0)
    return ls__tcp_push_error(L, c, err);
  if (ls_stream_unsent(&c->s) > LS_WRITE_HIWAT)
    return conn_write_k(L, LUA_OK, 0);
  lua_settop(L, 1);
  return 1;
}

/* conn:write(...) -> conn. Strings and numbers, sent in order. */
static int l_conn_write(lua_State *L) {
  ls_conn_t *c = ls__tcp_check_conn(L);
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
  ls_conn_t *c = ls__tcp_check_conn(L);
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
  ls_conn_t *c = ls__tcp_check_conn(L);
  if (c != NULL) {
    ls__tcp_conn_close(c, 1);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:shutdown() -> true: no more output (the peer reads EOF once the queue is sent). */
static int l_conn_shutdown(lua_State *L) {
  ls_conn_t *c = ls__tcp_check_conn(L);
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  ls_stream_shutdown(&c->s);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:settimeout(seconds | nil) -> conn: the limit for each later read, write or connect. */
static int l_conn_settimeout(lua_State *L) {
  conn_ud_t *ud = ls__tcp_check_conn_ud(L);
  int64_t ms = ls_opt_timeout_ms(L, 2, -1);
  if (ud->conn != NULL)
    ud->conn->timeout_ms = ms;
  lua_settop(L, 1);
  return 1;
}

/* conn:peer() -> host, port (TCP) or the socket path (Unix). */
static int l_conn_peer(lua_State *L) {
  ls_conn_t *c = ls__tcp_check_conn(L);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  int err;
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (c->s.is_pipe) {
    char path[256];
    size_t plen = sizeof path;
    err = uv_pipe_getpeername(&c->s.u.pipe, path, &plen);
    if (err == 0 && plen == 0)
      lua_pushliteral(L, "unix");
    else if (err == 0)
      lua_pushlstring(L, path, plen);
    else
      return ls_push_error(L, err);
    return 1;
  }
  err = uv_tcp_getpeername(&c->s.u.tcp, (struct sockaddr *)&ss, &len);
  if (err != 0)
    return ls_push_error(L, err);
  return ls_addr_push(L, &ss);
}

struct ls_stream_s *ls_tcp_take_stream(lua_State *L, int idx, int *is_client) {
  conn_ud_t *ud = luaL_checkudata(L, idx, LS_CONN_MT);
  ls_conn_t *c = ud->conn;
  if (c == NULL || c->closed || c->s.closing || c->reader != NULL || c->writer != NULL ||
      c->connector != NULL)
    return NULL;
  ud->conn = NULL;
  c->ud = NULL;
  *is_client = c->is_client;
  return &c->s;
}

static int l_conn_gc(lua_State *L) {
  conn_ud_t *ud = ls__tcp_check_conn_ud(L);
  if (ud->conn != NULL) {
    ud->conn->ud = NULL;
    ls__tcp_conn_close(ud->conn, 1);
    ud->conn = NULL;
  }
  return 0;
}

static int l_conn_tostring(lua_State *L) {
  conn_ud_t *ud = ls__tcp_check_conn_ud(L);
  lua_pushfstring(L, "luasrv.Conn (%s)", ud->conn != NULL && !ud->conn->closed ? "open" : "closed");
  return 1;
}

/* ---- connect ------------------------------------------------------------------------------ */

/* Keeps a copy of the name a TLS client sends and verifies. Returns 0 or LS_ENOMEM. */
static int conn_set_tls_name(ls_conn_t *c, const char *name) {
  size_t size = strlen(name) + 1;
  char *copy = ls_malloc(size);
  if (copy == NULL)
    return LS_ENOMEM;
  memcpy(copy, name, size);
  ls_free(c->tls_name, c->tls_name_size);
  c->tls_name = copy;
  c->tls_name_size = size;
  return 0;
}

static void conn_connected(ls_conn_t *c, int status) {
  if (status == 0) {
    c->connected = 1;
    if (!c->s.is_pipe)
      uv_tcp_nodelay(&c->s.u.tcp, 1);
    if (c->pending_tls != NULL) {
      /* The connect's own timeout bounds the handshake (conn_connect_k waits for it). */
      int err = ls_tls_attach(&c->s, c->pending_tls, c->tls_name, 0);
      ls_tls_ctx_release(c->pending_tls);
      c->pending_tls = NULL;
      if (err != 0)
        c->connect_err = err;
    }
  } else {
    c->connect_err = status;
  }
  if (c->connector != NULL)
    ls_task_resume(c->connector);
}

/* A Unix-domain connect's answer. */
static void conn_connect_cb(uv_connect_t *req, int status) {
  ls_conn_t *c = req->data;
  if (status == UV_ECANCELED || c->s.closing)
    return;
  conn_connected(c, status);
}

/* A TCP connect's answer (src/connect.c): the winning socket goes on the stream's handle. */
static void conn_connect_done(ls_connect_t *req, int status, uv_os_sock_t fd, void *data) {
  ls_conn_t *c = data;
  (void)req;
  c->connecting = NULL;
  if (status == 0) {
    status = uv_tcp_open(&c->s.u.tcp, fd);
    if (status != 0)
      close(fd);
  }
  conn_connected(c, status);
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
  if (c->connected && c->s.tls != NULL && !ls_tls_ready(&c->s) && c->s.read_err == 0 &&
      !(task != NULL && ls_task_take_timeout(task))) {
    /* Connected; the TLS handshake goes on (tcp_conn_on_read wakes us when it ends). */
    ls__tcp_conn_want_input(c);
    c->connector = ls_task_check(c->gen, L, "connect");
    return ls_task_wait(c->connector, c->timeout_ms, ctx, conn_connect_k);
  }
  if (c->connected && c->s.tls != NULL && !ls_tls_ready(&c->s)) {
    int n = c->s.read_err != 0 ? ls__tcp_push_error(L, c, c->s.read_err) : 0;
    if (n == 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "tls: handshake timeout");
      lua_pushliteral(L, "ETIMEDOUT");
      n = 3;
    }
    ls__tcp_conn_close(c, 0);
    return n;
  }
  if (c->connected) {
    /* An open client connection alone does not keep a finished script running; a task
     * waiting on it does (see conn_wait_input). */
    c->is_client = 1;
    uv_unref(&c->s.u.handle);
    ls__tcp_conn_want_input(c);
    lua_pushvalue(L, (int)ctx);
    return 1;
  }
  if (c->connect_err != 0 || (task != NULL && ls_task_take_timeout(task))) {
    int err = c->connect_err != 0 ? c->connect_err : LS_ETIMEDOUT;
    ls__tcp_conn_close(c, 0);
    return ls_push_error(L, err);
  }
  c->connector = ls_task_check(c->gen, L, "connect");
  return ls_task_wait(c->connector, c->timeout_ms, ctx, conn_connect_k);
}

/* srv.tcp.connect(host, port [, opts]) or srv.tcp.connect{host=, port= | path=, timeout=}
 * -> conn, or nil, message, code. Host names are resolved through libuv; opts.timeout
 * (seconds, default 30) bounds the lookup and the connect. */
static int l_tcp_connect(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
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
  c = ls__tcp_conn_new(gen, path != NULL);
  if (c == NULL)
    return luaL_error(L, "connect: not enough memory");
  c->timeout_ms = ls_opt_timeout_field(L, opts, "timeout", 30000);
  c->line_max = ls_opt_size_field(L, opts, "line_max", LS_TCP_LINE_MAX);
  c->frame_max = ls_opt_size_field(L, opts, "frame_max", LS_TCP_FRAME_MAX);
  ls__tcp_conn_push_ud(L, c);
  udx = lua_gettop(L);
  if (host != NULL) {
    c->tls_name_size = strlen(host) + 1;
    c->tls_name = ls_malloc(c->tls_name_size);
    if (c->tls_name == NULL)
      c->tls_name_size = 0;
    else
      memcpy(c->tls_name, host, c->tls_name_size);
  }
  if (opts != 0) {
    lua_getfield(L, opts, "tls");
    if (!lua_isnil(L, -1) && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1))) {
      const char *name;
      c->pending_tls = ls_tls_client_ctx(L, -1, &name);
      if (name != NULL && conn_set_tls_name(c, name) != 0)
        return luaL_error(L, "connect: not enough memory");
    }
    lua_pop(L, 1);
  }
  c->creq.data = c;
  if (path != NULL) {
    uv_pipe_connect(&c->creq, &c->s.u.pipe, path, conn_connect_cb);
  } else {
    c->connecting = ls_connect_start(gen->rt->loop, host, (int)port, conn_connect_done, c, &err);
    if (c->connecting == NULL) {
      ls__tcp_conn_close(c, 0);
      return ls_push_error(L, err);
    }
  }
  c->connector = task;
  return ls_task_wait(task, c->timeout_ms, udx, conn_connect_k);
}

void ls_tcp_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg conn_meth[] = {
      {"read", l_conn_read},         {"readline", l_conn_readline},
      {"lines", l_conn_lines},       {"read_frame", l_conn_read_frame},
      {"write", l_conn_write},       {"write_frame", l_conn_write_frame},
      {"close", l_conn_close},       {"shutdown", l_conn_shutdown},
      {"peer", l_conn_peer},         {"settimeout", l_conn_settimeout},
      {"starttls", ls__tcp_starttls}, {"tls", ls__tcp_tls},
      {NULL, NULL}};
  static const luaL_Reg conn_metameth[] = {{"__gc", l_conn_gc},
                                           {"__close", l_conn_gc},
                                           {"__tostring", l_conn_tostring},
                                           {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"listen", ls__tcp_listen}, {"connect", l_tcp_connect}, {NULL, NULL}};
  ls_new_class(L, LS_CONN_MT, conn_meth, conn_metameth);
  ls__tcp_listener_open(L);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
}
