/* udp_echo_ref: the reference "practical limit" for the UDP echo benchmark.
 *
 * A plain C libuv server that does what examples/udp_echo.lua does: every datagram goes back
 * to its sender unchanged (a zero-length one too). It is what a careful hand-written libuv
 * program does on the same loop, so luasrv's datagrams/s can be compared against it with
 * `loadgen --udp`.
 *
 * Usage: udp_echo_ref [--mmsg] [port]   (port 0: the OS picks; default 7777). Binds 127.0.0.1
 * and prints "listening on udp://127.0.0.1:PORT" on stdout, flushed, once it receives. SIGINT
 * or SIGTERM ends it. --mmsg receives with recvmmsg (UV_UDP_RECVMMSG, up to MMSG_CHUNKS
 * datagrams per system call), as luasrv's listeners do; without it, one recvmsg per datagram:
 * the plain libuv server.
 *
 * How it is built to be fast, and why:
 *   - one static 64 KiB receive buffer: alloc_cb never allocates, and a datagram is answered
 *     before recv_cb returns, so the buffer is free again for the next one;
 *   - the reply goes out with uv_udp_try_send, one sendmsg on an idle socket; only when the
 *     kernel's send buffer is full is the datagram copied into a heap request and queued with
 *     uv_udp_send (libuv sends queued datagrams in order);
 *   - truncated datagrams (larger than the buffer, UV_UDP_PARTIAL) are dropped, never echoed
 *     in part; past SEND_QUEUE_MAX queued bytes replies are dropped, so memory stays bounded.
 */
#include <uv.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DGRAM_MAX (64 * 1024)        /* libuv's chunk per datagram in recvmmsg mode */
#define MMSG_CHUNKS 8
#define RECV_BUF_SIZE (MMSG_CHUNKS * DGRAM_MAX)
#define SEND_QUEUE_MAX (1024 * 1024)

typedef struct {
  uv_udp_send_t req;
  char data[];
} echo_send_t;

static uv_loop_t *loop;
static uv_udp_t server;
static uv_signal_t sig_int, sig_term;
static char recv_buf[RECV_BUF_SIZE];
static size_t recv_buf_len = DGRAM_MAX;

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  (void)suggested;
  buf->base = recv_buf;
  buf->len = recv_buf_len;
}

static void send_cb(uv_udp_send_t *req, int status) {
  (void)status; /* a lost reply is a lost datagram */
  free(req);
}

static void recv_cb(uv_udp_t *handle, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags) {
  uv_buf_t reply;
  echo_send_t *s;
  int n;
  if (nread < 0 || addr == NULL || (flags & UV_UDP_PARTIAL))
    return;
  reply = uv_buf_init(buf->base, (unsigned)nread);
  n = uv_udp_try_send(handle, &reply, 1, addr);
  if (n != UV_EAGAIN)
    return; /* sent, or failed for good (the peer is gone) */
  if (uv_udp_get_send_queue_size(handle) + (size_t)nread > SEND_QUEUE_MAX)
    return;
  s = malloc(sizeof *s + (size_t)nread);
  if (s == NULL)
    return;
  memcpy(s->data, buf->base, (size_t)nread);
  reply = uv_buf_init(s->data, (unsigned)nread);
  if (uv_udp_send(&s->req, handle, &reply, 1, addr, send_cb) != 0)
    free(s);
}

static void signal_cb(uv_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
  uv_close((uv_handle_t *)&server, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  uv_close((uv_handle_t *)&sig_term, NULL);
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof bound;
  int mmsg = argc > 1 && strcmp(argv[1], "--mmsg") == 0;
  int port = argc > 1 + mmsg ? atoi(argv[1 + mmsg]) : 7777;
  int err;
  loop = uv_default_loop();
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_udp_init_ex(loop, &server, AF_UNSPEC | (mmsg ? UV_UDP_RECVMMSG : 0));
  if (mmsg && uv_udp_using_recvmmsg(&server))
    recv_buf_len = RECV_BUF_SIZE;
  err = uv_udp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_udp_recv_start(&server, alloc_cb, recv_cb);
  if (err != 0) {
    fprintf(stderr, "udp_echo_ref: cannot listen on 127.0.0.1:%d: %s\n", port, uv_strerror(err));
    return 1;
  }
  uv_udp_getsockname(&server, (struct sockaddr *)&bound, &len);
  printf("listening on udp://127.0.0.1:%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);
  uv_signal_init(loop, &sig_int);
  uv_signal_init(loop, &sig_term);
  uv_signal_start(&sig_int, signal_cb, SIGINT);
  uv_signal_start(&sig_term, signal_cb, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return 0;
}
