#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "errors.h"
#include "http.h"
#include "log.h"
#include "tls.h"

/* Input read ahead of the parser while a handler runs (pipelined requests wait in it). */
#define LS_HTTP_READ_AHEAD (64 * 1024)
/* After the last response of a connection, how long unread input is drained before closing,
 * so the peer is not sent a reset that could destroy the response in flight. */
#define LS_HTTP_LINGER_MS 2000

static void conn_after_input(ls_http_conn_t *c);
static void conn_timer_cb(uv_timer_t *t);

/* The deadline timer is lazy: it is started only when idle and, on firing early, re-armed
 * for what is left, so a busy keep-alive connection costs no timer-heap work per request. */
void ls_http__deadline(ls_http_conn_t *c, uint64_t ms) {
  if (c->virtual_conn)
    return;
  c->deadline = uv_now(c->rt->loop) + ms;
  if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
    uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}


/* Dotted decimal without printf (uv_ip4_name's snprintf costs more than the rest of a
 * proxied request's X-Forwarded-For). */
static void ip4_text(const struct sockaddr_in *in, char *out, size_t size) {
  const unsigned char *b = (const unsigned char *)&in->sin_addr.s_addr;
  char tmp[16];
  size_t n = 0;
  int i;
  for (i = 0; i < 4; i++) {
    unsigned v = b[i];
    if (v >= 100)
      tmp[n++] = (char)('0' + v / 100);
    if (v >= 10)
      tmp[n++] = (char)('0' + v / 10 % 10);
    tmp[n++] = (char)('0' + v % 10);
    tmp[n++] = '.';
  }
  n--; /* the last dot */
  if (size == 0)
    return;
  if (n >= size)
    n = size - 1;
  memcpy(out, tmp, n);
  out[n] = '\0';
}

void ls_http__peer_name(const ls_http_conn_t *c, char *out, size_t size, const char *def) {
  if (c->peer.sa.sa_family == AF_INET6)
    uv_ip6_name(&c->peer.in6, out, size);
  else if (c->peer.sa.sa_family == AF_INET)
    ip4_text(&c->peer.in4, out, size);
  else
    snprintf(out, size, "%s", c->s.is_pipe ? "unix" : def);
}

/* ---- connection life cycle ---------------------------------------------------------------- */

static void listener_maybe_free(ls_http_listener_t *l);

static void conn_unwarm(ls_http_conn_t *c);

/* The last of the connection's handles is closed: the struct goes. */
void ls_http__conn_free(ls_http_conn_t *c) {
  c->listener->hooks->end_request(c);
  if (c->task != NULL)
    c->task->data = NULL;
  ls_buf_free(&c->head);
  ls_buf_free(&c->body);
  ls_buf_free(&c->res_headers);
  ls_buf_block_give(c->headers, c->headers_size);
  c->listener->conns--;
  listener_maybe_free(c->listener);
  ls_free(c, sizeof *c);
}

/* One of the two things a closing connection waits for (the stream, the timer) is gone. */
static void conn_closed_one(ls_http_conn_t *c) {
  if (--c->closing > 1)
    return;
  ls_http__conn_free(c);
}

static void conn_timer_close_cb(uv_handle_t *h) { conn_closed_one(h->data); }

/* Closes the connection now; the struct goes once the stream and the timer have closed. */
void ls_http__close(ls_http_conn_t *c) {
  if (c->closing)
    return;
  c->closing = 3; /* the stream's on_close and the timer's close callback bring it to 1 */
  c->state = LS_HTTP_CLOSING;
  conn_unwarm(c);
  ls_res_unlink(&c->res);
  if (c->body_waiter != NULL)
    ls_task_wake(c->body_waiter);
  if (c->writer != NULL)
    ls_task_wake(c->writer);
  if (c->virtual_conn) {
    /* No handles: inject_k frees it once it has taken the output, never from under the
     * code that closed it. */
    return;
  }
  ls_stream_close(&c->s);
  uv_close((uv_handle_t *)&c->timer, conn_timer_close_cb);
}

static void http_conn_res_close(ls_res_t *res) {
  ls_http__close((ls_http_conn_t *)((char *)res - offsetof(ls_http_conn_t, res)));
}

static void conn_timer_cb(uv_timer_t *t) {
  ls_http_conn_t *c = t->data;
  uint64_t now = uv_now(c->rt->loop);
  if (c->deadline == 0)
    return; /* no deadline now; the next one starts the timer again */
  if (now < c->deadline) {
    uv_timer_start(&c->timer, conn_timer_cb, c->deadline - now, 0);
    return;
  }
  c->deadline = 0;
  if (c->state == LS_HTTP_HEAD) {
    ls_http__error_response(c, 408, 1);
    ls_http__flush(c);
    return;
  }
  /* An idle keep-alive connection. */
  ls_http__close(c);
}

/* ---- stream events ------------------------------------------------------------------------ */

static void http_conn_on_read(ls_stream_t *s) { ls_http__process(s->owner); }

/* Whether the connection is between requests with nothing of its own in its buffers. */
static int conn_is_idle(const ls_http_conn_t *c) {
  return c->state == LS_HTTP_IDLE && c->task == NULL && !c->closing && !c->virtual_conn &&
         ls_buf_len(&c->s.in) == 0;
}

/* Gives the buffers of an idle connection back to the block cache (src/buffer.c). */
static void conn_trim(ls_http_conn_t *c) {
  ls_buf_release(&c->head);
  ls_buf_release(&c->body);
  ls_buf_release(&c->res_headers);
  if (c->headers != NULL) {
    ls_buf_block_give(c->headers, c->headers_size);
    c->headers = NULL;
  }
  ls_stream_trim(&c->s);
}

/* Takes the connection out of its listener's ring of warm connections. */
static void conn_unwarm(ls_http_conn_t *c) {
  if (c->warm_slot >= 0) {
    c->listener->warm[c->warm_slot] = NULL;
    c->warm_slot = -1;
  }
}

/* A keep-alive connection between requests holds no buffer: its input, output, head and
 * header index go back to the block cache, so thousands of idle connections cost little more
 * than their structs, and the next request takes them from the cache. Except the last
 * LS_HTTP_WARM connections of the listener to go idle, with small buffers: they keep theirs,
 * since a busy keep-alive connection would otherwise give them back and take them again on
 * every request (about 600 instructions). The connection that takes a slot trims the one it
 * pushes out, if that one is idle. So idle connections beyond the ring cost what they did,
 * and the ring holds at most LS_HTTP_WARM times WARM_MAX bytes. */
#define WARM_MAX 4096
static void conn_idle(ls_http_conn_t *c) {
  ls_http_listener_t *l = c->listener;
  ls_http_conn_t *old;
  unsigned slot;
  if (!conn_is_idle(c))
    return;
  if (c->head.cap + c->body.cap + c->res_headers.cap + c->headers_size + c->s.in.cap +
          c->s.out.cap + c->s.out_flight.cap > WARM_MAX) {
    /* (also one already in the ring whose buffers grew since) */
    conn_unwarm(c);
    conn_trim(c);
    return;
  }
  if (c->warm_slot >= 0)
    return;
  slot = l->warm_next;
  l->warm_next = (slot + 1) % LS_HTTP_WARM;
  old = l->warm[slot];
  l->warm[slot] = c;
  c->warm_slot = (int16_t)slot;
  if (old != NULL) {
    old->warm_slot = -1;
    if (conn_is_idle(old))
      conn_trim(old);
  }
}

static void http_conn_on_written(ls_stream_t *s) {
  ls_http_conn_t *c = s->owner;
  if (s->write_err != 0) {
    if (s->write_err == UV_ETIMEDOUT)
      ls_log(LS_LOG_WARN, "%s: closing a connection that accepted no output for %llu ms",
             c->listener->url, (unsigned long long)c->listener->limits.write_timeout_ms);
    ls_http__close(c);
    return;
  }
  if (c->writer != NULL)
    ls_task_resume(c->writer);
  else
    conn_idle(c);
}

static void http_conn_on_close(ls_stream_t *s) {
  ls_http_conn_t *c = s->owner;
  ls_http__close(c); /* when the stream ended by itself (drained, failed) */
  conn_closed_one(c);
}

static const ls_stream_events_t http_conn_events = {http_conn_on_read, http_conn_on_written, http_conn_on_close};

/* Prepares a connection struct for the listener; `virtual_conn` makes one without a socket. */
ls_http_conn_t *ls_http__conn_new(ls_http_listener_t *l, int virtual_conn) {
  ls_http_conn_t *c = ls_malloc(sizeof *c);
  if (c == NULL)
    return NULL;
  memset(c, 0, sizeof *c);
  c->rt = l->base.gen->rt;
  c->gen = l->base.gen;
  c->listener = l;
  c->warm_slot = -1;
  c->virtual_conn = (unsigned char)virtual_conn;
  llhttp_init(&c->parser, HTTP_REQUEST, &ls_http__parser_settings);
  c->parser.data = c;
  if (!virtual_conn) {
    if (ls_stream_init(&c->s, c->rt, l->sock.is_pipe, &http_conn_events, c) != 0) {
      ls_free(c, sizeof *c);
      return NULL;
    }
    c->s.read_limit = LS_HTTP_READ_AHEAD;
    c->s.write_timeout_ms = l->limits.write_timeout_ms;
    uv_timer_init(c->rt->loop, &c->timer);
  }
  c->timer.data = c;
  c->res.close = http_conn_res_close;
  ls_res_link(&l->base.gen->rt->resources, &c->res);
  l->conns++;
  return c;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void conn_update_reading(ls_http_conn_t *c) {
  if (c->virtual_conn || c->closing)
    return;
  ls_stream_want_input(&c->s);
}

/* ---- the request cycle -------------------------------------------------------------------- */

/* Readies the connection for its next request once the current one has been answered and its
 * body consumed. */
static void conn_next_request(ls_http_conn_t *c) {
  c->state = c->keep_alive ? LS_HTTP_IDLE : LS_HTTP_CLOSING;
  ls_buf_consume(&c->head, ls_buf_len(&c->head));
  ls_buf_consume(&c->body, ls_buf_len(&c->body));
  c->nheaders = 0;
  c->url_len = 0;
  c->path_off = c->path_len = 0;
  c->body_seen = 0;
  c->hdr_state = LS_HDR_BETWEEN;
  c->at_chunk_line = 0;
  c->msg_done = 0;
  c->expect_continue = c->continue_sent = 0;
  c->reject_status = 0;
  c->status = 0;
  c->bytes_out = 0;
  c->head_sent = c->chunked = c->has_ctype = c->has_clen = c->logged = 0;
  ls_buf_consume(&c->res_headers, ls_buf_len(&c->res_headers));
  if (c->state == LS_HTTP_IDLE)
    ls_http__deadline(c, c->listener->limits.keepalive_ms);
}

/* Stops parsing the connection after a framing error: nothing more is parsed from it. The
 * status goes to the running handler's body read, or out as the answer. */
static void parse_failed(ls_http_conn_t *c, int status) {
  ls_buf_consume(&c->s.in, ls_buf_len(&c->s.in));
  c->parse_failed = 1;
  c->keep_alive = 0;
  if (c->state == LS_HTTP_HANDLER && c->task != NULL) {
    c->reject_status = status; /* the waiting req:body() raises it */
    if (c->body_waiter != NULL)
      ls_task_wake(c->body_waiter);
  } else if (c->state == LS_HTTP_DRAIN) {
    c->state = LS_HTTP_CLOSING;
  } else {
    ls_http__error_response(c, status, 1);
  }
}

/* Runs the parser over buffered input as far as the request cycle allows: a complete head
 * dispatches its handler; a body is parsed only while a handler wants it, or is skipped
 * after the handler answered; the next request waits until the current one is done. */
void ls_http__process(ls_http_conn_t *c) {
  int empty_tried = 0;
  if (c->in_process)
    return;
  c->in_process = 1;
  while (!c->closing && c->state != LS_HTTP_CLOSING) {
    const char *start;
    size_t len, used;
    llhttp_errno_t err;
    if (c->state == LS_HTTP_HANDLER) {
      if (c->task != NULL) {
        if (c->body_waiter == NULL || c->msg_done || c->parse_failed)
          break; /* the handler runs; its body is parsed only when asked for */
      } else if (c->msg_done || c->parse_failed || (c->expect_continue && !c->continue_sent)) {
        /* Answered. A body the client holds back for 100 Continue will not come, and one
         * that failed to parse cannot be skipped: either way the connection ends. */
        if (!c->msg_done)
          c->keep_alive = 0;
        conn_next_request(c);
        continue;
      } else {
        c->state = LS_HTTP_DRAIN; /* answered before reading the body: skip it */
      }
    } else if (c->state == LS_HTTP_DRAIN && c->msg_done) {
      conn_next_request(c);
      continue;
    }
    len = ls_buf_len(&c->s.in);
    if (len == 0 && !empty_tried && c->state != LS_HTTP_IDLE && c->state != LS_HTTP_HEAD) {
      /* A message without a body ends without another byte: let the parser reach its end. */
      empty_tried = 1;
      err = ls_http__parser_execute(c, "", 0, &used);
      if (c->msg_done) {
        if (c->body_waiter != NULL)
          ls_task_wake(c->body_waiter);
        continue;
      }
    }
    if (len == 0) {
      if (c->s.read_err != 0) {
        if (c->state == LS_HTTP_HEAD) {
          ls_http__error_response(c, 400, 1);
        } else if (c->state != LS_HTTP_HANDLER) {
          c->state = LS_HTTP_CLOSING;
        } else {
          /* The peer stopped sending while its handler runs: answer, then close. */
          c->keep_alive = 0;
          c->parse_failed = 1;
          if (c->body_waiter != NULL)
            ls_task_wake(c->body_waiter);
        }
      }
      break;
    }
    if (c->at_chunk_line) {
      int status = ls_http__chunk_line(c);
      if (status == 0 && c->s.read_err != 0)
        status = 400; /* the input ended inside a chunk-size line */
      if (status == 0)
        break; /* the rest of the line is still to come */
      if (status != 1) {
        parse_failed(c, status);
        break;
      }
      len = ls_buf_len(&c->s.in);
    }
    start = ls_buf_head(&c->s.in);
    c->exec_start = start;
    err = ls_http__parser_execute(c, start, len, &used);
    if (err != HPE_OK && err != HPE_PAUSED) {
      parse_failed(c, ls_http__parse_error_status(c, err));
      break;
    }
    if (used > 0) {
      /* Whether the consumed bytes end in a line feed and blanks: a value piece at the start
       * of the next read is then a folded line. */
      const char *q = start + used;
      while (q > start && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
      if (q > start)
        c->prev_lf = q[-1] == '\n';
    }
    ls_buf_consume(&c->s.in, used);
    if (c->body_waiter != NULL && ls_buf_len(&c->body) > 0)
      ls_task_wake(c->body_waiter); /* a body reader takes pieces as they come */
    if (c->dispatch_pending) {
      c->dispatch_pending = 0;
      c->listener->hooks->dispatch(c);
      continue;
    }
    if (c->msg_done && c->body_waiter != NULL)
      ls_task_wake(c->body_waiter);
  }
  c->in_process = 0;
  conn_after_input(c);
}

static void conn_after_input(ls_http_conn_t *c) {
  if (c->closing)
    return;
  conn_update_reading(c);
  ls_http__flush(c);
  if (!c->closing)
    conn_idle(c);
}

void ls_http__want_body(ls_http_conn_t *c) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  if (c->expect_continue && !c->continue_sent) {
    c->continue_sent = 1;
    ls_buf_append(&c->s.out, cont, sizeof cont - 1);
    ls_http__flush(c);
  }
  ls_http__process(c);
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Sends what is in c->s.out. A connection in the CLOSING state whose handler is done ends:
 * the stream sends what is queued (within write_timeout), shuts down, and drains the peer's
 * input for a moment before it closes, so the peer is not sent a reset that could destroy
 * the response in flight. */
void ls_http__flush(ls_http_conn_t *c) {
  if (c->closing || c->virtual_conn)
    return;
  if (c->state == LS_HTTP_CLOSING && c->task == NULL) {
    c->deadline = 0;
    ls_stream_end(&c->s, c->listener->limits.write_timeout_ms, LS_HTTP_LINGER_MS);
    return;
  }
  ls_stream_flush(&c->s);
  if (c->s.write_err != 0)
    ls_http__close(c);
}

/* ---- listeners ---------------------------------------------------------------------------- */

static void listener_free_cb(uv_handle_t *h) {
  ls_http_listener_t *l = h->data;
  ls_listen_sock_closed(&l->sock);
  l->closed = 2;
  listener_maybe_free(l);
}

static void listener_maybe_free(ls_http_listener_t *l) {
  if (l->closed != 2 || l->conns > 0)
    return;
  ls_gzip_conf_free(l->gzip);
  ls_free(l, sizeof *l);
}

void ls_http__listener_close(ls_http_listener_t *l) {
  if (l->closed)
    return;
  l->closed = 1;
  ls_res_unlink(&l->base.res);
  ls_listener_release(&l->base);
  ls_listen_sock_close(&l->sock, listener_free_cb);
}

void ls_http__listener_res_close(ls_res_t *res) {
  ls_http__listener_close((ls_http_listener_t *)((char *)res - offsetof(ls_http_listener_t, base.res)));
}

void ls_http__listener_connection_cb(uv_stream_t *server, int status) {
  ls_http_listener_t *l = server->data;
  ls_http_conn_t *c;
  if (status < 0) {
    ls_log(LS_LOG_WARN, "%s: accept failed: %s", l->url, uv_strerror(status));
    return;
  }
  c = ls_http__conn_new(l, 0);
  if (c == NULL) {
    ls_log(LS_LOG_ERROR, "%s: out of memory accepting a connection", l->url);
    return;
  }
  if (ls_stream_accept(&c->s, server) != 0 ||
      (l->base.tls != NULL &&
       ls_tls_attach(&c->s, l->base.tls, NULL, l->limits.header_timeout_ms) != 0)) {
    ls_http__close(c);
    return;
  }
  if (!c->s.is_pipe) {
    int len = sizeof c->peer;
    if (uv_tcp_getpeername(&c->s.u.tcp, &c->peer.sa, &len) != 0)
      c->peer.sa.sa_family = 0;
  }
  ls_http__deadline(c, l->limits.header_timeout_ms);
  conn_update_reading(c);
}

