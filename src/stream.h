/* One way bytes move: a connection's socket (TCP or Unix-domain, accepted or connected), its
 * read-ahead buffer, its output queue, its timeouts, shutdown and close. The TCP API (tcp.c)
 * and the HTTP server (http_server.c) each own streams and are told what happens through a
 * small table of events; neither calls uv_read_start, uv_write or uv_close on a socket itself.
 * This is libuv's src/unix/stream.c idea one level up: one read path, one write path, one
 * close path, whatever sits on top.
 *
 * Life cycle: ls_stream_init (the handle is made), then ls_stream_accept or a connect on
 * s->u; reading follows s->read_limit; ls_stream_write / ls_stream_flush send; ls_stream_end
 * finishes politely (send what is queued, shut down, drain, close) and ls_stream_close closes
 * now. Either way events.on_close runs once when the handles are gone: only then may the
 * owner free the memory the stream lives in. */
#ifndef LS_STREAM_H
#define LS_STREAM_H

#include <stdint.h>
#include <uv.h>

#include "buffer.h"
#include "runtime.h"

typedef struct ls_stream_s ls_stream_t;

/* What the owner is told. Each is called from a libuv callback, never from inside a call
 * the owner made, so the owner may call back into the stream (and close it) from them. */
typedef struct ls_stream_events_s {
  /* New bytes were appended to s->in, or input ended (s->read_err set: LS_EEOF or a libuv
   * error). The owner consumes what it can with ls_buf_consume and then calls
   * ls_stream_want_input if it wants more read ahead. */
  void (*on_read)(ls_stream_t *s);
  /* A write finished: the queue is shorter (maybe empty), or s->write_err is set (a failed
   * write, or UV_ETIMEDOUT when the peer took no output for write_timeout_ms). After a write
   * error nothing more is sent; the owner decides when to close (input may still come). A
   * write that fails inside ls_stream_write or ls_stream_flush is not told here: the caller
   * sees s->write_err when the call returns. */
  void (*on_written)(ls_stream_t *s);
  /* The handles are closed: the last call, after which the owner may free the stream. */
  void (*on_close)(ls_stream_t *s);
} ls_stream_events_t;

/* A TCP or Unix-domain libuv stream handle, seen as any of its types. */
typedef union ls_uv_stream_u {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} ls_uv_stream_u;

struct ls_stream_s {
  ls_uv_stream_u u;
  uv_timer_t timer;           /* the write timeout, and the bound on an ending stream */
  uv_write_t wreq;
  ls_runtime_t *rt;
  const ls_stream_events_t *ev;
  void *owner;                /* for the owner's events */
  ls_buf_t in;                /* read ahead, not yet consumed by the owner */
  ls_buf_t out;               /* queued output: the owner may append to it, then flush */
  ls_buf_t out_flight;        /* the bytes of the uv_write in flight */
  void *tls;                  /* the TLS layer (src/tls.c), or NULL for a plain stream */
  size_t read_limit;          /* read while fewer bytes than this are buffered; 0: do not read */
  uint64_t write_timeout_ms;  /* a write in flight longer than this closes the stream; 0: none */
  uint64_t drain_ms;          /* ending: how long input is drained after the shutdown */
  int read_err;               /* why input ended: LS_EEOF, LS_ENOMEM or a libuv error */
  int write_err;              /* the first write failure */
  unsigned char is_pipe;
  unsigned char reading;
  unsigned char writing;      /* a uv_write is in flight (counted in rt->flushing) */
  unsigned char shut;         /* shut down once the queue is sent (ls_stream_shutdown, end) */
  unsigned char shutdown_sent;
  unsigned char ending;       /* ls_stream_end: close after the shutdown and the drain */
  unsigned char closing;      /* uv_close called */
  unsigned char open_handles;
};

/* Makes the stream's handles on rt's loop (a TCP socket, or a Unix-domain one with is_pipe)
 * with nothing read or queued. Returns 0 or a libuv error (nothing to close then). */
int ls_stream_init(ls_stream_t *s, ls_runtime_t *rt, int is_pipe, const ls_stream_events_t *ev,
                   void *owner);
/* Accepts a pending connection of `server` into the stream. Returns 0 or a libuv error (the
 * stream must still be closed). */
int ls_stream_accept(ls_stream_t *s, uv_stream_t *server);
/* Starts or stops reading to match s->read_limit and the buffered input. */
void ls_stream_want_input(ls_stream_t *s);
/* Sends the buffers: straight to the socket when nothing is queued, what it does not take
 * queued (copied). Returns 0, s->write_err, or LS_ENOMEM; LS_ECLOSED once ending or shut. */
int ls_stream_write(ls_stream_t *s, const uv_buf_t *bufs, unsigned nbufs);
/* Hands s->out to the socket, one uv_write at a time; once it is all sent, does what
 * ls_stream_shutdown or ls_stream_end asked for. */
void ls_stream_flush(ls_stream_t *s);
/* Gives back the storage of the empty buffers (an idle connection's): see ls_buf_release. */
void ls_stream_trim(ls_stream_t *s);
/* Output not yet taken by the kernel. */
size_t ls_stream_unsent(const ls_stream_t *s);
/* Shuts down the sending side once the queue is sent; reading goes on (a half-close). */
void ls_stream_shutdown(ls_stream_t *s);
/* Ends the stream politely: what is queued is sent (for at most flush_ms, 0: no bound), the
 * sending side shut down, and input read and dropped until the peer closes or drain_ms
 * pass, so that the peer gets the last bytes rather than a reset; then the stream closes.
 * on_read is not called any more. */
void ls_stream_end(ls_stream_t *s, uint64_t flush_ms, uint64_t drain_ms);
/* Closes now, dropping what is unsent. Idempotent; on_close follows from the loop. */
void ls_stream_close(ls_stream_t *s);
/* The peer's address (0) or a libuv error, as uv_tcp_getpeername; a Unix-domain stream
 * gives UV_ENOTSUP. */
int ls_stream_peer(const ls_stream_t *s, struct sockaddr_storage *ss);

#endif
