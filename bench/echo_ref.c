/* echo_ref: the reference "practical limit" for the TCP echo benchmark.
 *
 * A plain C libuv server that speaks the same protocol as examples/echo.lua, so bench/echo.sh
 * can compare luasrv against what a careful hand-written libuv program does on the same loop:
 *   - on accept it sends "Welcome!" (no newline, as examples/echo.lua);
 *   - for each complete line L (terminated by "\n", a trailing "\r" stripped) it replies
 *     "Hello, L!\n"; lines may be split across reads and several may arrive in one read;
 *   - the line "exit" closes the connection, as does the end of input (a last unterminated
 *     line is still answered, as conn:lines() returns it);
 *   - a line longer than LINE_MAX bytes drops the connection, as luasrv's default line limit.
 *
 * Usage: echo_ref [port]   (port 0: the OS picks; default 9999). Listens on 127.0.0.1 and
 * prints "listening on tcp://127.0.0.1:PORT" on stdout, flushed, once it accepts connections.
 *
 * How it is built to be fast, and why:
 *   - one fixed read buffer per connection, embedded in the connection struct: alloc_cb hands
 *     out its free tail, so reading never allocates and a line split across reads just waits
 *     in place;
 *   - all replies produced by one read are gathered into one iovec array (no copying: the
 *     "Hello, " and "!\n" pieces are constants, the line points into the read buffer) and sent
 *     with a single uv_try_write, which on an idle socket writes everything at once;
 *   - only what the kernel did not take is copied into a heap request and queued with
 *     uv_write (the read buffer is reused as soon as read_cb returns, so the bytes must be
 *     copied before queuing);
 *   - if the peer stops reading and more than WRITE_QUEUE_MAX bytes are queued, reading pauses
 *     until the queue drains, so a slow client cannot grow the server's memory without bound.
 */
#include <uv.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_BYTES (64 * 1024)      /* as luasrv's default readline limit */
#define READ_BUF_SIZE (LINE_MAX_BYTES + 2) /* a longest line plus "\r\n" */
#define WRITE_QUEUE_MAX (1024 * 1024)   /* pause reading above this many queued bytes */
#define REPLIES_PER_BATCH 64            /* replies gathered before one write */

static const char greeting[] = "Welcome!";
static const char reply_head[] = "Hello, ";
static const char reply_tail[] = "!\n";

typedef struct {
  uv_tcp_t tcp;         /* first member: the handle pointer is the connection pointer */
  uv_shutdown_t shutdown_req;
  size_t len;           /* bytes of buf holding input not yet consumed */
  int reading;          /* uv_read_start is in effect */
  int finishing;        /* a shutdown or close has begun: no more input is processed */
  char buf[READ_BUF_SIZE];
} echo_conn_t;

/* A queued write owns a copy of the bytes it sends; freed in its write_cb. */
typedef struct {
  uv_write_t req;
  size_t len;
  char data[];
} echo_write_t;

static uv_loop_t *loop;
static uv_tcp_t server;

static void conn_close_cb(uv_handle_t *handle) {
  free(handle); /* the tcp handle is the first member of echo_conn_t */
}

/* Closes the connection at once; queued writes are cancelled and their callbacks fire first. */
static void conn_abort(echo_conn_t *c) {
  c->finishing = 1;
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status) {
  echo_conn_t *c = req->data;
  (void)status; /* closing either way */
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

/* Ends the connection gracefully: stop reading, let queued replies go out, then close. */
static void conn_finish(echo_conn_t *c) {
  if (c->finishing)
    return;
  c->finishing = 1;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, conn_shutdown_cb) != 0)
    conn_abort(c);
}

static void conn_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  echo_conn_t *c = (echo_conn_t *)handle;
  (void)suggested;
  buf->base = c->buf + c->len;
  buf->len = sizeof c->buf - c->len;
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_write_cb(uv_write_t *req, int status) {
  echo_write_t *w = (echo_write_t *)req;
  echo_conn_t *c = req->data;
  free(w);
  if (status == UV_ECANCELED)
    return; /* the connection is closing; it may already be gone */
  if (status != 0) {
    conn_abort(c);
    return;
  }
  if (!c->reading && !c->finishing && c->tcp.write_queue_size <= WRITE_QUEUE_MAX / 2) {
    if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) == 0)
      c->reading = 1;
    else
      conn_abort(c);
  }
}

/* Sends bufs in order: as much as the kernel takes right now, the rest copied and queued.
 * Returns 0, or a negative libuv error after which the connection must be aborted. */
static int conn_send(echo_conn_t *c, const uv_buf_t *bufs, unsigned nbufs) {
  size_t total = 0, skip, off;
  unsigned i;
  int n;
  echo_write_t *w;
  uv_buf_t rest;

  for (i = 0; i < nbufs; i++)
    total += bufs[i].len;
  if (total == 0)
    return 0;
  /* uv_try_write answers UV_EAGAIN while earlier writes are queued, so order is kept. */
  n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
  if (n < 0 && n != UV_EAGAIN)
    return n;
  skip = n > 0 ? (size_t)n : 0;
  if (skip == total)
    return 0;

  w = malloc(sizeof *w + (total - skip));
  if (w == NULL)
    return UV_ENOMEM;
  w->len = total - skip;
  off = 0;
  for (i = 0; i < nbufs; i++) {
    size_t len = bufs[i].len;
    const char *base = bufs[i].base;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    memcpy(w->data + off, base + skip, len - skip);
    off += len - skip;
    skip = 0;
  }
  w->req.data = c;
  rest = uv_buf_init(w->data, (unsigned)w->len);
  n = uv_write(&w->req, (uv_stream_t *)&c->tcp, &rest, 1, conn_write_cb);
  if (n != 0) {
    free(w);
    return n;
  }
  if (c->reading && c->tcp.write_queue_size > WRITE_QUEUE_MAX) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  return 0;
}

/* Answers every complete line in buf[0, len) (and, at end of input, the unterminated rest).
 * Returns 1 to keep the connection, 0 when it was finished or aborted. */
static int conn_process(echo_conn_t *c, int at_eof) {
  uv_buf_t out[REPLIES_PER_BATCH * 3];
  unsigned nout = 0;
  size_t start = 0;
  int keep = 1;

  while (start < c->len) {
    char *line = c->buf + start;
    char *nl = memchr(line, '\n', c->len - start);
    size_t n, text;
    if (nl == NULL) {
      if (!at_eof)
        break;
      n = text = c->len - start; /* the last, unterminated line */
    } else {
      n = (size_t)(nl - line) + 1;
      text = n - 1;
      if (text > 0 && line[text - 1] == '\r')
        text--;
    }
    start += n;
    if (text == 4 && memcmp(line, "exit", 4) == 0) {
      keep = 0;
      break;
    }
    out[nout++] = uv_buf_init((char *)reply_head, sizeof reply_head - 1);
    out[nout++] = uv_buf_init(line, (unsigned)text);
    out[nout++] = uv_buf_init((char *)reply_tail, sizeof reply_tail - 1);
    if (nout == sizeof out / sizeof out[0]) {
      if (conn_send(c, out, nout) != 0) {
        conn_abort(c);
        return 0;
      }
      nout = 0;
    }
  }
  if (nout > 0 && conn_send(c, out, nout) != 0) {
    conn_abort(c);
    return 0;
  }
  /* Keep the unfinished line at the front of the buffer for the next read. */
  c->len -= start;
  if (c->len > 0 && start > 0)
    memmove(c->buf, c->buf + start, c->len);
  if (!keep || at_eof) {
    conn_finish(c);
    return 0;
  }
  if (c->len == sizeof c->buf) {
    conn_abort(c); /* a line longer than the limit */
    return 0;
  }
  return 1;
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  echo_conn_t *c = (echo_conn_t *)stream;
  (void)buf; /* always c->buf + c->len */
  if (c->finishing)
    return;
  if (nread > 0) {
    c->len += (size_t)nread;
    conn_process(c, 0);
  } else if (nread == UV_EOF) {
    conn_process(c, 1);
  } else if (nread < 0) {
    conn_abort(c);
  }
  /* nread == 0: EAGAIN, nothing to do */
}

static void server_connection_cb(uv_stream_t *listener, int status) {
  echo_conn_t *c;
  uv_buf_t hello = uv_buf_init((char *)greeting, sizeof greeting - 1);

  if (status != 0) {
    fprintf(stderr, "echo_ref: accept: %s\n", uv_strerror(status));
    return;
  }
  c = malloc(sizeof *c);
  if (c == NULL) {
    fprintf(stderr, "echo_ref: out of memory\n");
    return;
  }
  c->len = 0;
  c->reading = 0;
  c->finishing = 0;
  uv_tcp_init(loop, &c->tcp);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1); /* as luasrv does for accepted connections */
  if (conn_send(c, &hello, 1) != 0) {
    conn_abort(c);
    return;
  }
  if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) != 0) {
    conn_abort(c);
    return;
  }
  c->reading = 1;
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int namelen = (int)sizeof bound;
  long port = 9999;
  char *end;
  int err;

  if (argc > 2) {
    fprintf(stderr, "usage: echo_ref [port]\n");
    return 2;
  }
  if (argc == 2) {
    port = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
      fprintf(stderr, "echo_ref: bad port '%s'\n", argv[1]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that vanished is an EPIPE from write, not a signal */

  loop = uv_default_loop();
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", (int)port, &addr);
  err = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&server, 511, server_connection_cb);
  if (err == 0)
    err = uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &namelen);
  if (err != 0) {
    fprintf(stderr, "echo_ref: cannot listen on 127.0.0.1:%ld: %s\n", port, uv_strerror(err));
    return 1;
  }
  printf("listening on tcp://127.0.0.1:%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
