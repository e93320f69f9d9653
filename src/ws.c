/* A WebSocket connection, either side: a stream taken over (the HTTP connection's once the
 * 101 answer is queued, or a client's luasrv.Conn after the handshake): its events and owner
 * switch to the WebSocket, and when the stream closes they switch back, so the previous owner
 * frees itself as it always does. Here: the frames parsed by ws_frame.c into messages, pings
 * answered, the close handshake, the idle timeout, and the luasrv.WebSocket object.
 *
 * Input is parsed as it arrives, one message at a time: once a whole message waits for
 * ws:receive, parsing stops and the stream reads ahead only up to LS_WS_READ_AHEAD, so a
 * handler that does not read slows its peer down instead of growing memory. */
#include "ws.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>

#include "errors.h"
#include "stream.h"
#include "ws_deflate.h"
#include "ws_frame.h"
#include "ws_internal.h"

static void ws_timer_cb(uv_timer_t *t);

/* ---- life cycle --------------------------------------------------------------------------- */

static void ws_maybe_free(ls_ws_t *ws) {
  if (!ws->stream_gone || !ws->timer_gone)
    return;
  ls_res_unlink(&ws->stop_res);
  if (ws->ud != NULL)
    ws->ud->ws = NULL;
  ls_buf_free(&ws->msg);
  ls_free(ws, sizeof *ws);
}

static void ws_timer_close_cb(uv_handle_t *h) {
  ls_ws_t *ws = h->data;
  ws->timer_gone = 1;
  ws_maybe_free(ws);
}

/* A client's socket holds the loop only while a task waits on it (as a luasrv.Conn made by
 * connect), so a script that is done with it can end; on: one more waiter, else one less. */
static void ws_hold(ls_ws_t *ws, int on) {
  if (!ws->client || ws->s == NULL)
    return;
  if (on ? ws->holds++ == 0 : --ws->holds == 0) {
    if (on)
      uv_ref(&ws->s->u.handle);
    else
      uv_unref(&ws->s->u.handle);
  }
}

/* Wakes whoever waits on the connection; they look at its state when they run. */
static void ws_wake_all(ls_ws_t *ws) {
  if (ws->reader != NULL)
    ls_task_wake(ws->reader);
  if (ws->writer != NULL)
    ls_task_wake(ws->writer);
  if (ws->closer != NULL)
    ls_task_wake(ws->closer);
}

static void ws_set_close(ls_ws_t *ws, int code, const char *reason, size_t len) {
  if (len > sizeof ws->close_reason)
    len = sizeof ws->close_reason;
  ws->close_code = code;
  memcpy(ws->close_reason, reason, len);
  ws->close_reason_len = len;
}

/* The connection is over for Lua: the stream ends politely (what is queued is sent, the
 * socket shut down, the peer's input drained for a moment), as RFC 6455 §7.1.1 asks of the
 * server, which closes the TCP connection first. */
static void ws_finish(ls_ws_t *ws) {
  ws->state = WS_CLOSED;
  uv_timer_stop(&ws->timer);
  if (ws->s != NULL)
    ls_stream_end(ws->s, ws->close_ms, ws->close_ms);
  ws_wake_all(ws);
}

/* The peer went away without the close handshake, or a write failed: close now. */
static void ws_drop(ls_ws_t *ws) {
  if (ws->state != WS_CLOSED && ws->close_code == 0)
    ws_set_close(ws, LS_WS_CLOSE_ABNORMAL, "", 0);
  ws->state = WS_CLOSED;
  uv_timer_stop(&ws->timer);
  if (ws->s != NULL)
    ls_stream_close(ws->s);
  ws_wake_all(ws);
}

/* ---- writing frames ----------------------------------------------------------------------- */

/* A client's frame: masked with a new random key (RFC 6455 §5.3), into a copy. */
static int ws_write_masked(ls_ws_t *ws, int opcode, int rsv1, const char *data, size_t len) {
  static ls_buf_t frame; /* reused: one process, one thread */
  uint8_t mask[4], head[LS_WS_HEADER_MAX];
  size_t hlen;
  uv_buf_t buf;
  int err;
  if (RAND_bytes(mask, sizeof mask) != 1)
    return LS_ENOMEM;
  hlen = ls_ws_header(head, 1, rsv1, opcode, len, mask);
  ls_buf_consume(&frame, ls_buf_len(&frame));
  if (ls_buf_append(&frame, head, hlen) != 0 || ls_buf_append(&frame, data, len) != 0)
    return LS_ENOMEM;
  ls_ws_mask((uint8_t *)frame.data + frame.start + hlen, len, mask, 0);
  buf = uv_buf_init(frame.data + frame.start, (unsigned)ls_buf_len(&frame));
  err = ls_stream_write(ws->s, &buf, 1);
  if (frame.cap > 256 * 1024)
    ls_buf_free(&frame);
  return err;
}

/* Queues one frame (rsv1: a compressed message). Returns 0 or the stream's error. */
static int ws_write_frame_rsv(ls_ws_t *ws, int opcode, int rsv1, const char *data, size_t len) {
  uint8_t frame[LS_WS_HEADER_MAX + LS_WS_SMALL_FRAME];
  size_t hlen;
  uv_buf_t bufs[2];
  unsigned n = 1;
  if (ws->s == NULL)
    return LS_ECLOSED;
  if (ws->client)
    return ws_write_masked(ws, opcode, rsv1, data, len);
  hlen = ls_ws_header(frame, 1, rsv1, opcode, len, NULL);
  if (len <= LS_WS_SMALL_FRAME) {
    if (len > 0)
      memcpy(frame + hlen, data, len);
    bufs[0] = uv_buf_init((char *)frame, (unsigned)(hlen + len));
  } else {
    bufs[0] = uv_buf_init((char *)frame, (unsigned)hlen);
    bufs[1] = uv_buf_init((char *)data, (unsigned)len);
    n = 2;
  }
  return ls_stream_write(ws->s, bufs, n);
}

static int ws_write_frame(ls_ws_t *ws, int opcode, const char *data, size_t len) {
  return ws_write_frame_rsv(ws, opcode, 0, data, len);
}

/* Queues a data message, compressed when permessage-deflate is on and it is worth it. */
static int ws_write_message(ls_ws_t *ws, int opcode, const char *data, size_t len) {
  static ls_buf_t packed; /* reused: one process, one thread */
  int err;
  if (ws->deflate_bits == 0 || len < LS_WS_DEFLATE_MIN)
    return ws_write_frame(ws, opcode, data, len);
  ls_buf_consume(&packed, ls_buf_len(&packed));
  if (ls_ws_deflate(data, len, ws->deflate_bits, &packed) != 0)
    return LS_ENOMEM;
  err = ws_write_frame_rsv(ws, opcode, 1, ls_buf_head(&packed), ls_buf_len(&packed));
  if (packed.cap > 256 * 1024)
    ls_buf_free(&packed);
  return err;
}

static void ws_write_close(ls_ws_t *ws, int code, const char *reason, size_t len) {
  char payload[125];
  size_t n = 0;
  if (code != LS_WS_CLOSE_NO_STATUS) {
    payload[0] = (char)(code >> 8);
    payload[1] = (char)code;
    if (len > sizeof payload - 2)
      len = sizeof payload - 2;
    memcpy(payload + 2, reason, len);
    n = 2 + len;
  }
  ws_write_frame(ws, LS_WS_OP_CLOSE, payload, n);
}

/* Starts the closing handshake from this side: our close frame, then a bounded wait for the
 * peer's. */
static void ws_start_close(ls_ws_t *ws, int code, const char *reason, size_t len) {
  if (ws->state != WS_OPEN)
    return;
  ws_set_close(ws, code, reason, len);
  ws_write_close(ws, code, reason, len);
  ws->state = WS_CLOSE_SENT;
  ws->msg_ready = 0;
  ls_buf_consume(&ws->msg, ls_buf_len(&ws->msg));
  uv_timer_start(&ws->timer, ws_timer_cb, ws->close_ms, 0);
}

/* The peer broke the protocol: our close frame with the code, and the connection ends
 * without waiting for its answer (RFC 6455 §7.1.7). */
static void ws_fail(ls_ws_t *ws, int code, const char *reason) {
  if (ws->state == WS_OPEN) {
    ws_set_close(ws, code, reason, strlen(reason));
    ws_write_close(ws, code, reason, strlen(reason));
  }
  ws_finish(ws);
}

/* A graceful stop of the server (SIGTERM, SIGINT): the closing handshake with 1001 "going
 * away" (RFC 6455 §7.4.1), so the handler's receive answers closed and its task ends within the
 * grace period, and the client learns why. */
static void ws_stop_cb(ls_res_t *res) {
  ls_ws_t *ws = (ls_ws_t *)((char *)res - offsetof(ls_ws_t, stop_res));
  static const char reason[] = "server stopping";
  ws_start_close(ws, LS_WS_CLOSE_GOING_AWAY, reason, sizeof reason - 1);
}

/* ---- reading frames ----------------------------------------------------------------------- */

static void ws_control(ls_ws_t *ws, const ls_ws_event_t *ev) {
  switch (ev->opcode) {
  case LS_WS_OP_PING:
    if (ws->state == WS_OPEN)
      ws_write_frame(ws, LS_WS_OP_PONG, (const char *)ev->data, ev->len);
    break;
  case LS_WS_OP_CLOSE:
    if (ws->state == WS_OPEN) {
      /* The peer starts the handshake: its code and reason are what receive reports, and
       * the answer echoes them. */
      ws_set_close(ws, ev->code, (const char *)ev->data, ev->len);
      ws_write_close(ws, ev->code, (const char *)ev->data, ev->len);
    }
    ws_finish(ws);
    break;
  default:
    break; /* a pong: nothing to do */
  }
}

/* Replaces the compressed message in ws->msg with its inflated bytes (checked as UTF-8 for
 * text). Returns 0, or fails the connection and returns -1. */
static int ws_inflate_msg(ls_ws_t *ws, int opcode) {
  ls_buf_t plain;
  uint64_t max = ws->parser.max_message > 0 ? ws->parser.max_message : SIZE_MAX - 1;
  int code;
  uint32_t st = 0;
  ls_buf_init(&plain);
  code = ls_ws_inflate(ls_buf_head(&ws->msg), ls_buf_len(&ws->msg), (size_t)max, &plain);
  if (code == 0 && opcode == LS_WS_OP_TEXT &&
      (ls_ws_utf8(&st, (const uint8_t *)ls_buf_head(&plain), ls_buf_len(&plain)) != 0 || st != 0))
    code = LS_WS_CLOSE_BAD_DATA;
  ls_buf_free(&ws->msg);
  ws->msg = plain;
  ws->msg_compressed = 0;
  if (code == 0)
    return 0;
  ws_fail(ws, code, code == LS_WS_CLOSE_TOO_BIG ? "message too big"
                    : code == LS_WS_CLOSE_BAD_DATA ? "bad compressed or text data"
                                                   : "out of memory");
  return -1;
}

/* Parses buffered input until a whole message waits for the handler, the input runs out or
 * the connection ends. */
static void ws_pump(ls_ws_t *ws) {
  while (ws->s != NULL && ws->state != WS_CLOSED && !ws->msg_ready) {
    ls_buf_t *in = &ws->s->in;
    ls_ws_event_t ev;
    size_t used;
    ls_ws_ev_type_t t;
    /* An empty input (after each message taken, mostly) needs more, as the parser would say
     * at more cost; only a failed parser has something else to say then. */
    if (ls_buf_len(in) == 0 && ws->parser.error_code == 0) {
      t = LS_WS_EV_NEED;
      used = 0;
    } else {
      t = ls_ws_parse(&ws->parser, (uint8_t *)in->data + in->start, ls_buf_len(in), &used, &ev);
    }
    if (t == LS_WS_EV_NEED) {
      ls_buf_consume(in, used);
      if (ws->s->read_err != 0) {
        ws_drop(ws);
        return;
      }
      break;
    }
    if (t == LS_WS_EV_ERROR) {
      ws_fail(ws, ev.code, ev.reason);
      return;
    }
    if (t == LS_WS_EV_CONTROL) {
      uint8_t payload[125];
      memcpy(payload, ev.data, ev.len);
      ev.data = payload;
      ls_buf_consume(in, used);
      ws_control(ws, &ev);
      continue;
    }
    if (ws->state == WS_OPEN) {
      if (ev.compressed && ls_buf_len(&ws->msg) + ev.len > ws->parser.max_message + 4096 &&
          ws->parser.max_message > 0) {
        ws_fail(ws, LS_WS_CLOSE_TOO_BIG, "message too big");
        return;
      }
      if (ev.len > 0 && ls_buf_append(&ws->msg, ev.data, ev.len) != 0) {
        ws_fail(ws, LS_WS_CLOSE_INTERNAL, "out of memory");
        return;
      }
      ws->msg_compressed = (unsigned char)ev.compressed;
      if (ev.fin) {
        ls_buf_consume(in, used);
        if (ws->msg_compressed && ws_inflate_msg(ws, ev.opcode) != 0)
          return;
        ws->msg_ready = 1;
        ws->msg_kind = (unsigned char)ev.opcode;
        continue;
      }
    }
    ls_buf_consume(in, used);
  }
  if (ws->s != NULL && ws->state != WS_CLOSED)
    ls_stream_want_input(ws->s);
}

/* ---- stream events ------------------------------------------------------------------------ */

static void ws_on_read(ls_stream_t *s) {
  ls_ws_t *ws = s->owner;
  ws->last_input = uv_now(s->rt->loop);
  ws_pump(ws);
  if (ws->reader != NULL && (ws->msg_ready || ws->state != WS_OPEN))
    ls_task_resume(ws->reader);
  if (ws->closer != NULL && ws->state == WS_CLOSED)
    ls_task_resume(ws->closer);
}

static void ws_on_written(ls_stream_t *s) {
  ls_ws_t *ws = s->owner;
  if (s->write_err != 0) {
    ws_drop(ws);
    return;
  }
  if (ws->writer != NULL && ls_stream_unsent(s) <= LS_WS_WRITE_LOWAT)
    ls_task_resume(ws->writer);
}

static void ws_on_close(ls_stream_t *s) {
  ls_ws_t *ws = s->owner;
  if (ws->state != WS_CLOSED && ws->close_code == 0)
    ws_set_close(ws, LS_WS_CLOSE_ABNORMAL, "", 0);
  ws->state = WS_CLOSED;
  ws->s = NULL;
  ws->stream_gone = 1;
  ws_wake_all(ws);
  /* The previous owner (the HTTP connection, a luasrv.Conn) holds the memory the stream
   * lives in: it frees itself now. */
  s->ev = ws->prev_ev;
  s->owner = ws->prev_owner;
  s->ev->on_close(s);
  uv_close((uv_handle_t *)&ws->timer, ws_timer_close_cb);
}

static const ls_stream_events_t ws_events = {ws_on_read, ws_on_written, ws_on_close};

/* The idle timeout while open (re-armed lazily: input only notes its time), then the bound on
 * the wait for the peer's close frame. */
static void ws_timer_cb(uv_timer_t *t) {
  ls_ws_t *ws = t->data;
  uint64_t now = uv_now(t->loop);
  if (ws->state == WS_OPEN) {
    if (now - ws->last_input < ws->idle_ms) {
      uv_timer_start(&ws->timer, ws_timer_cb, ws->idle_ms - (now - ws->last_input), 0);
      return;
    }
    ws_start_close(ws, LS_WS_CLOSE_GOING_AWAY, "idle timeout", 12);
    ws_wake_all(ws);
    return;
  }
  if (ws->state == WS_CLOSE_SENT)
    ws_finish(ws); /* the peer did not answer our close frame in time */
}

/* ---- making one -------------------------------------------------------------------------- */

const char ls__ws_tag = 0;

/* The WebSocket at argument 1 (ws:send runs once per message: a tag, see ls_tagged). */
static ws_ud_t *check_ws_ud(lua_State *L) {
  return ls_check_tagged(L, 1, &ls__ws_tag, sizeof(ws_ud_t), LS_WS_MT);
}

ls_ws_t *ls__ws_new(lua_State *L, ls_gen_t *gen, ls_stream_t *s, int client, int opts,
                    const char *protocol, int deflate_bits) {
  size_t max_message = ls_opt_size_field(L, opts, "max_message", LS_WS_DEFAULT_MAX_MESSAGE);
  int64_t idle_ms = ls_opt_timeout_field(L, opts, "idle_timeout", LS_WS_DEFAULT_IDLE_MS);
  int64_t close_ms = ls_opt_timeout_field(L, opts, "close_timeout", LS_WS_DEFAULT_CLOSE_MS);
  ls_ws_t *ws = ls_malloc(sizeof *ws);
  ws_ud_t *ud;
  if (ws == NULL)
    return NULL;
  memset(ws, 0, sizeof *ws);
  ws->s = s;
  ws->prev_ev = s->ev;
  ws->prev_owner = s->owner;
  ws->gen = gen;
  ws->client = (unsigned char)(client != 0);
  ws->idle_ms = idle_ms < 0 ? 0 : (uint64_t)idle_ms;
  ws->close_ms = close_ms <= 0 ? 1 : (uint64_t)close_ms;
  ws->last_input = uv_now(gen->rt->loop);
  if (protocol != NULL)
    snprintf(ws->protocol, sizeof ws->protocol, "%s", protocol);
  ls_ws_parser_init(&ws->parser, !client, max_message);
  if (deflate_bits >= 9 && deflate_bits <= 15) {
    ws->deflate_bits = (unsigned char)deflate_bits;
    ws->parser.allow_rsv1 = 1;
  }
  ls_buf_init(&ws->msg);
  uv_timer_init(gen->rt->loop, &ws->timer);
  ws->timer.data = ws;
  if (ws->idle_ms > 0)
    uv_timer_start(&ws->timer, ws_timer_cb, ws->idle_ms, 0);
  if (client) {
    uv_unref((uv_handle_t *)&ws->timer); /* a client's timers do not hold the loop */
  } else {
    ws->stop_res.close = ws_stop_cb;
    ls_res_link(&gen->rt->on_stop, &ws->stop_res);
  }
  s->ev = &ws_events;
  s->owner = ws;
  s->read_limit = LS_WS_READ_AHEAD;
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->tag = &ls__ws_tag;
  ud->ws = ws;
  ud->gen = gen;
  ws->ud = ud;
  luaL_setmetatable(L, LS_WS_MT);
  /* Frames may have come with the handshake. */
  ws_pump(ws);
  ls_stream_want_input(s);
  return ws;
}

/* ---- ws:receive([timeout]) ---------------------------------------------------------------- */

static int push_closed(lua_State *L, ls_ws_t *ws) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  if (ws == NULL) {
    lua_pushinteger(L, LS_WS_CLOSE_ABNORMAL);
    lua_pushliteral(L, "");
  } else {
    lua_pushinteger(L, ws->close_code);
    lua_pushlstring(L, ws->close_reason, ws->close_reason_len);
  }
  return 4;
}

/* Argument 1 was checked by the method that started the receive (a continuation runs with
 * the same stack), so its user data is taken as it is. ctx: the loop time the wait ends at,
 * or 0 for none. */
static int ws_receive_k(lua_State *L, int status, lua_KContext ctx) {
  ws_ud_t *ud = lua_touserdata(L, 1);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_ws_t *ws = ud->ws;
  (void)status;
  if (ws != NULL && ws->reader == task) {
    ws->reader = NULL;
    ws_hold(ws, 0);
  }
  if (ws == NULL)
    return push_closed(L, NULL);
  /* Input that waited behind the last message is parsed now, not when that message was
   * taken: its handler may still answer before a protocol error behind it closes. */
  if (!ws->msg_ready)
    ws_pump(ws);
  if (ws->msg_ready) {
    lua_pushlstring(L, ls_buf_head(&ws->msg), ls_buf_len(&ws->msg));
    if (ws->msg_kind == LS_WS_OP_TEXT)
      lua_pushliteral(L, "text");
    else
      lua_pushliteral(L, "binary");
    ls_buf_consume(&ws->msg, ls_buf_len(&ws->msg));
    ws->msg_ready = 0;
    return 2;
  }
  if (ws->state != WS_OPEN)
    return push_closed(L, ws);
  if (task != NULL && ls_task_take_timeout(task))
    return ls_push_error(L, LS_ETIMEDOUT);
  task = ls_task_check(ws->gen, L, "receive");
  if (ws->reader != NULL)
    return luaL_error(L, "receive: another task is already receiving on this websocket");
  ws->reader = task;
  ws_hold(ws, 1);
  return ls_task_wait_until(task, ctx, ws_receive_k);
}

/* ws:receive([timeout]) -> message, "text" | "binary"; nil, "closed", code, reason once the
 * connection is closed; nil, "timeout", "ETIMEDOUT" when no message came in time. */
static int l_ws_receive(lua_State *L) {
  ws_ud_t *ud = check_ws_ud(L);
  lua_KContext deadline = ls_task_deadline(ud->gen->rt, ls_opt_timeout_ms(L, 2, -1));
  lua_settop(L, 1);
  return ws_receive_k(L, LUA_OK, deadline);
}

/* The iterator of ws:messages(): receive without a timeout on the WebSocket it holds (its
 * upvalue, checked when the iterator was made; the for loop's values are not looked at); a
 * closed connection ends the loop. */
static int l_ws_next(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  return ws_receive_k(L, LUA_OK, 0);
}

/* ws:messages() -> an iterator over message, kind until the connection closes. */
static int l_ws_messages(lua_State *L) {
  check_ws_ud(L);
  lua_settop(L, 1);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, l_ws_next, 1);
  lua_pushvalue(L, 1);
  return 2;
}

/* ---- ws:send(data [, kind]), ws:ping([data]) ---------------------------------------------- */

/* As ws_receive_k: argument 1 is the checked user data. */
static int ws_send_k(lua_State *L, int status, lua_KContext ctx) {
  ws_ud_t *ud = lua_touserdata(L, 1);
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_ws_t *ws = ud->ws;
  (void)status;
  (void)ctx;
  if (ws != NULL && ws->writer == task) {
    ws->writer = NULL;
    ws_hold(ws, 0);
  }
  if (ws == NULL || ws->s == NULL || ws->s->write_err != 0)
    return push_closed(L, ws);
  if (task != NULL && ls_task_take_timeout(task))
    return ls_push_error(L, LS_ETIMEDOUT);
  if (ls_stream_unsent(ws->s) > LS_WS_WRITE_LOWAT) {
    task = ls_task_current(ud->gen, L);
    if (task == NULL || (ws->writer != NULL && ws->writer != task))
      goto done; /* outside a task, or another task waits already: the queue takes it */
    ws->writer = task;
    ws_hold(ws, 1);
    return ls_task_wait(task, -1, 0, ws_send_k);
  }
done:
  lua_settop(L, 1);
  return 1;
}

/* Sends one frame of the opcode from Lua, then waits while too much is queued. */
static int ws_send(lua_State *L, ls_ws_t *ws, int opcode, const char *data, size_t len) {
  int err;
  if (ws == NULL || ws->state != WS_OPEN)
    return push_closed(L, ws);
  err = opcode == LS_WS_OP_PING ? ws_write_frame(ws, opcode, data, len)
                                : ws_write_message(ws, opcode, data, len);
  if (err == LS_ENOMEM)
    return luaL_error(L, "send: not enough memory");
  if (err != 0)
    return push_closed(L, ws);
  if (ls_stream_unsent(ws->s) > LS_WS_WRITE_HIWAT)
    return ws_send_k(L, LUA_OK, 0);
  lua_settop(L, 1);
  return 1;
}

/* ws:send(data [, "text" | "binary"]) -> ws. Text must be UTF-8. */
static int l_ws_send(lua_State *L) {
  static const char *const kinds[] = {"text", "binary", NULL};
  ws_ud_t *ud = check_ws_ud(L);
  size_t len, klen;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *k = lua_type(L, 3) == LUA_TSTRING ? lua_tolstring(L, 3, &klen) : NULL;
  int kind;
  /* The kind is nearly always one of the two words: compared without luaL_checkoption's
   * string comparisons, which it still does for anything else (and its error message). */
  if (lua_isnoneornil(L, 3) || (k != NULL && klen == 4 && memcmp(k, "text", 4) == 0))
    kind = 0;
  else if (k != NULL && klen == 6 && memcmp(k, "binary", 6) == 0)
    kind = 1;
  else
    kind = luaL_checkoption(L, 3, "text", kinds);
  if (kind == 0) {
    uint32_t st = 0;
    if (ls_ws_utf8(&st, (const uint8_t *)data, len) != 0 || st != 0)
      return luaL_argerror(L, 2, "text is not valid UTF-8 (send it as \"binary\")");
  }
  return ws_send(L, ud->ws, kind == 0 ? LS_WS_OP_TEXT : LS_WS_OP_BINARY, data, len);
}

/* ws:ping([data]) -> ws. The peer's pong is not waited for. */
static int l_ws_ping(lua_State *L) {
  ws_ud_t *ud = check_ws_ud(L);
  size_t len = 0;
  const char *data = luaL_optlstring(L, 2, "", &len);
  luaL_argcheck(L, len <= 125, 2, "ping data longer than 125 bytes");
  return ws_send(L, ud->ws, LS_WS_OP_PING, data, len);
}

/* ---- ws:close([code [, reason]]) ---------------------------------------------------------- */

static int ws_close_k(lua_State *L, int status, lua_KContext ctx) {
  ws_ud_t *ud = lua_touserdata(L, 1); /* checked by l_ws_close */
  ls_task_t *task = ls_task_current(ud->gen, L);
  ls_ws_t *ws = ud->ws;
  (void)status;
  (void)ctx;
  if (ws != NULL && ws->closer == task) {
    ws->closer = NULL;
    ws_hold(ws, 0);
  }
  if (ws != NULL && ws->state != WS_CLOSED && task != NULL && ws->closer == NULL) {
    ws->closer = task;
    ws_hold(ws, 1);
    return ls_task_wait(task, -1, 0, ws_close_k);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:close([code [, reason]]) -> true, once the peer answered our close frame or
 * close_timeout passed (inside a task; elsewhere it returns at once). */
static int l_ws_close(lua_State *L) {
  ws_ud_t *ud = check_ws_ud(L);
  int code = (int)luaL_optinteger(L, 2, LS_WS_CLOSE_NORMAL);
  size_t len = 0;
  const char *reason = luaL_optlstring(L, 3, "", &len);
  uint32_t st = 0;
  luaL_argcheck(L, ls_ws_close_code_valid(code), 2, "invalid close code");
  luaL_argcheck(L, len <= 123, 3, "close reason longer than 123 bytes");
  luaL_argcheck(L, ls_ws_utf8(&st, (const uint8_t *)reason, len) == 0 && st == 0, 3,
                "close reason is not valid UTF-8");
  if (ud->ws != NULL)
    ws_start_close(ud->ws, code, reason, len);
  lua_settop(L, 1);
  return ws_close_k(L, LUA_OK, 0);
}

/* ---- other methods ------------------------------------------------------------------------ */

/* ws:protocol() -> the subprotocol chosen in the handshake, or nil. */
static int l_ws_protocol(lua_State *L) {
  ws_ud_t *ud = check_ws_ud(L);
  if (ud->ws == NULL || ud->ws->protocol[0] == '\0')
    return 0;
  lua_pushstring(L, ud->ws->protocol);
  return 1;
}

static int l_ws_gc(lua_State *L) {
  ws_ud_t *ud = check_ws_ud(L);
  if (ud->ws != NULL) {
    ud->ws->ud = NULL;
    ws_drop(ud->ws);
    ud->ws = NULL;
  }
  return 0;
}

static int l_ws_tostring(lua_State *L) {
  ws_ud_t *ud = check_ws_ud(L);
  lua_pushfstring(L, "luasrv.WebSocket (%s)",
                  ud->ws != NULL && ud->ws->state == WS_OPEN ? "open" : "closed");
  return 1;
}

void ls_ws_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg meth[] = {{"receive", l_ws_receive}, {"messages", l_ws_messages},
                                  {"send", l_ws_send},
                                  {"ping", l_ws_ping},       {"close", l_ws_close},
                                  {"protocol", l_ws_protocol}, {NULL, NULL}};
  static const luaL_Reg metameth[] = {{"__gc", l_ws_gc}, {"__tostring", l_ws_tostring},
                                      {NULL, NULL}};
  ls_new_class(L, LS_WS_MT, meth, metameth);
  ls__ws_handshake_open(L, gen);
}
