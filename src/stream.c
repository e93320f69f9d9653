#include "stream.h"

#include <string.h>

#include "alloc.h"
#include "errors.h"
#include "tls.h"

/* Input is read straight into the stream's buffer when it has at least this much room;
 * otherwise into the runtime's scratch buffer, from which only what arrived is copied. */
#define LS_STREAM_DIRECT_READ 4096

static void stream_close_cb(uv_handle_t *h) {
  ls_stream_t *s = h->data;
  if (--s->open_handles > 0)
    return;
  ls_buf_free(&s->in);
  ls_buf_free(&s->out);
  ls_buf_free(&s->out_flight);
  if (s->tls != NULL)
    ls__tls_free(s);
  s->ev->on_close(s);
}

int ls_stream_init(ls_stream_t *s, ls_runtime_t *rt, int is_pipe, const ls_stream_events_t *ev,
                   void *owner) {
  int err;
  memset(s, 0, sizeof *s);
  s->rt = rt;
  s->ev = ev;
  s->owner = owner;
  s->is_pipe = (unsigned char)(is_pipe != 0);
  err = is_pipe ? uv_pipe_init(rt->loop, &s->u.pipe, 0) : uv_tcp_init(rt->loop, &s->u.tcp);
  if (err != 0)
    return err;
  uv_timer_init(rt->loop, &s->timer);
  s->u.handle.data = s;
  s->timer.data = s;
  s->open_handles = 2;
  return 0;
}

int ls_stream_accept(ls_stream_t *s, uv_stream_t *server) {
  int err = uv_accept(server, &s->u.stream);
  if (err == 0 && !s->is_pipe)
    uv_tcp_nodelay(&s->u.tcp, 1);
  return err;
}

/* Stops counting a write in flight, for a graceful stop that waits for output. */
static void stream_write_over(ls_stream_t *s) {
  if (s->writing) {
    s->writing = 0;
    s->rt->flushing--;
    ls_runtime_check_drained(s->rt);
  }
}

void ls_stream_close(ls_stream_t *s) {
  if (s->closing)
    return;
  s->closing = 1;
  s->reading = 0; /* uv_close stops reading */
  stream_write_over(s);
  uv_close(&s->u.handle, stream_close_cb);
  uv_close((uv_handle_t *)&s->timer, stream_close_cb);
  if (s->tls != NULL)
    ls__tls_close(s, stream_close_cb);
}

size_t ls_stream_unsent(const ls_stream_t *s) {
  size_t n = ls_buf_len(&s->out) + ls_buf_len(&s->out_flight);
  if (s->tls != NULL)
    n += ls_buf_len(ls__tls_wire((ls_stream_t *)s));
  return n;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void stream_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ls_stream_t *s = h->data;
  (void)suggested;
  if (!s->ending && s->tls == NULL && s->in.cap - s->in.end >= LS_STREAM_DIRECT_READ) {
    buf->base = s->in.data + s->in.end;
    buf->len = s->in.cap - s->in.end;
  } else {
    buf->base = s->rt->scratch;
    buf->len = s->rt->scratch_size;
  }
}

static void stream_read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  ls_stream_t *s = h->data;
  if (nread == 0)
    return;
  if (s->ending) {
    /* Ending: input is dropped; its end closes the stream once the shutdown went out (until
     * then the last output is still on its way). */
    if (nread < 0) {
      s->read_err = nread == UV_EOF ? LS_EEOF : (int)nread;
      uv_read_stop(h);
      s->reading = 0;
      if (s->shutdown_sent)
        ls_stream_close(s);
    }
    return;
  }
  if (nread > 0) {
    if (s->tls != NULL)
      ls__tls_input(s, buf->base, (size_t)nread); /* plaintext into s->in, or read_err */
    else if (buf->base == s->in.data + s->in.end)
      s->in.end += (size_t)nread;
    else if (ls_buf_append(&s->in, buf->base, (size_t)nread) != 0)
      s->read_err = LS_ENOMEM;
    if (s->closing)
      return;
  } else {
    s->read_err = nread == UV_EOF ? LS_EEOF : (int)nread;
  }
  if (s->read_err != 0 || ls_buf_len(&s->in) >= s->read_limit) {
    uv_read_stop(h);
    s->reading = 0;
  }
  s->ev->on_read(s);
}

void ls_stream_trim(ls_stream_t *s) {
  ls_buf_release(&s->in);
  ls_buf_release(&s->out);
  if (!s->writing)
    ls_buf_release(&s->out_flight);
}

void ls_stream_want_input(ls_stream_t *s) {
  int want;
  if (s->closing)
    return;
  want = s->read_err == 0 && (s->ending || ls_buf_len(&s->in) < s->read_limit);
  if (want && !s->reading) {
    if (uv_read_start(&s->u.stream, stream_alloc_cb, stream_read_cb) == 0)
      s->reading = 1;
  } else if (!want && s->reading) {
    uv_read_stop(&s->u.stream);
    s->reading = 0;
  }
}

/* ---- writing ------------------------------------------------------------------------------ */

static void stream_timer_cb(uv_timer_t *t) {
  ls_stream_t *s = t->data;
  if (s->writing && !s->ending) {
    /* A write that took too long: the owner is told, and closes. */
    s->write_err = UV_ETIMEDOUT;
    s->ev->on_written(s);
    return;
  }
  /* An ending stream past its flush or drain bound. */
  ls_stream_close(s);
}

static void stream_shutdown_cb(uv_shutdown_t *req, int status) {
  ls_stream_t *s = req->data;
  ls_free(req, sizeof *req);
  if (s->closing || !s->ending)
    return;
  if (status < 0 || s->read_err != 0 || s->drain_ms == 0) {
    ls_stream_close(s);
    return;
  }
  /* Read and drop what the peer still sends for a moment, then close. */
  uv_timer_start(&s->timer, stream_timer_cb, s->drain_ms, 0);
  ls_stream_want_input(s);
}

/* What follows an emptied queue: the shutdown asked for, or the close of an ending stream
 * whose output failed. */
static void stream_queue_empty(ls_stream_t *s) {
  uv_shutdown_t *req;
  if (s->ending && s->write_err != 0) {
    ls_stream_close(s);
    return;
  }
  if (!s->shut || s->shutdown_sent)
    return;
  if (s->tls != NULL && ls__tls_close_notify(s)) {
    ls_stream_flush(s); /* the close_notify goes out first, then the shutdown */
    return;
  }
  s->shutdown_sent = 1;
  req = ls_malloc(sizeof *req);
  if (req != NULL) {
    req->data = s;
    if (uv_shutdown(req, &s->u.stream, stream_shutdown_cb) == 0)
      return;
    ls_free(req, sizeof *req);
  }
  if (s->ending)
    ls_stream_close(s);
}

static void stream_write_cb(uv_write_t *req, int status) {
  ls_stream_t *s = req->data;
  stream_write_over(s);
  ls_buf_consume(&s->out_flight, ls_buf_len(&s->out_flight));
  if (s->closing)
    return; /* cancelled by the close */
  if (!s->ending)
    uv_timer_stop(&s->timer);
  if (status < 0) {
    if (s->write_err == 0)
      s->write_err = status;
    ls_buf_consume(&s->out, ls_buf_len(&s->out));
    if (s->ending)
      ls_stream_close(s);
    else
      s->ev->on_written(s);
    return;
  }
  ls_stream_flush(s);
  if (!s->closing)
    s->ev->on_written(s);
}

void ls_stream_flush(ls_stream_t *s) {
  uv_buf_t buf;
  ls_buf_t swap;
  ls_buf_t *wire = &s->out; /* the bytes for the socket: plaintext, or TLS's ciphertext */
  if (s->closing || s->writing)
    return;
  if (s->tls != NULL) {
    ls__tls_encrypt(s);
    wire = ls__tls_wire(s);
  }
  if (ls_buf_len(wire) > 0 && s->write_err == 0) {
    int n;
    buf = uv_buf_init((char *)ls_buf_head(wire), (unsigned)ls_buf_len(wire));
    n = uv_try_write(&s->u.stream, &buf, 1);
    if (n > 0)
      ls_buf_consume(wire, (size_t)n);
    else if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS)
      s->write_err = n;
  }
  if (s->write_err != 0) {
    ls_buf_consume(wire, ls_buf_len(wire));
    ls_buf_consume(&s->out, ls_buf_len(&s->out));
  }
  if (ls_buf_len(wire) == 0) {
    /* With TLS, plaintext may wait in s->out for the handshake to finish. */
    if (ls_buf_len(&s->out) == 0)
      stream_queue_empty(s);
    return;
  }
  swap = s->out_flight;
  s->out_flight = *wire;
  *wire = swap;
  buf = uv_buf_init((char *)ls_buf_head(&s->out_flight), (unsigned)ls_buf_len(&s->out_flight));
  s->wreq.data = s;
  if (uv_write(&s->wreq, &s->u.stream, &buf, 1, stream_write_cb) != 0) {
    ls_buf_consume(&s->out_flight, ls_buf_len(&s->out_flight));
    s->write_err = UV_EPIPE;
    stream_queue_empty(s);
    return;
  }
  s->writing = 1;
  s->rt->flushing++; /* a graceful stop waits for it */
  if (s->write_timeout_ms > 0 && !s->ending)
    uv_timer_start(&s->timer, stream_timer_cb, s->write_timeout_ms, 0);
}

int ls_stream_write(ls_stream_t *s, const uv_buf_t *bufs, unsigned nbufs) {
  unsigned i = 0;
  size_t off = 0;
  if (s->closing || s->shut)
    return LS_ECLOSED;
  if (s->write_err != 0)
    return s->write_err;
  if (!s->writing && ls_buf_len(&s->out) == 0 && s->tls == NULL) {
    int n = uv_try_write(&s->u.stream, bufs, nbufs);
    if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
      s->write_err = n;
      return n;
    }
    off = n > 0 ? (size_t)n : 0;
    while (i < nbufs && off >= bufs[i].len) {
      off -= bufs[i].len;
      i++;
    }
  }
  for (; i < nbufs; i++, off = 0) {
    if (ls_buf_append(&s->out, bufs[i].base + off, bufs[i].len - off) != 0)
      return LS_ENOMEM;
  }
  ls_stream_flush(s);
  return 0;
}

void ls_stream_shutdown(ls_stream_t *s) {
  s->shut = 1;
  ls_stream_flush(s);
}

void ls_stream_end(ls_stream_t *s, uint64_t flush_ms, uint64_t drain_ms) {
  if (s->closing || s->ending)
    return;
  s->ending = 1;
  s->shut = 1;
  s->drain_ms = drain_ms;
  /* Input from now on is drained, not kept, so a peer that sends on while it waits for the
   * last response is not held up by a full buffer. */
  ls_buf_consume(&s->in, ls_buf_len(&s->in));
  ls_stream_want_input(s);
  if (flush_ms > 0)
    uv_timer_start(&s->timer, stream_timer_cb, flush_ms, 0);
  else
    uv_timer_stop(&s->timer);
  if (s->shutdown_sent) {
    /* Shut down before (a half-close): only the drain is left. */
    if (s->read_err != 0 || drain_ms == 0) {
      ls_stream_close(s);
      return;
    }
    uv_timer_start(&s->timer, stream_timer_cb, drain_ms, 0);
    ls_stream_want_input(s);
    return;
  }
  ls_stream_flush(s);
}

int ls_stream_peer(const ls_stream_t *s, struct sockaddr_storage *ss) {
  int len = sizeof *ss;
  if (s->is_pipe)
    return UV_ENOTSUP;
  return uv_tcp_getpeername(&s->u.tcp, (struct sockaddr *)ss, &len);
}
