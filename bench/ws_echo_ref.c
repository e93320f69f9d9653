/* ws_echo_ref: the reference "practical limit" for the WebSocket echo benchmark (scripts/bench
 * ws_echo): a plain C libuv server that does the least RFC 6455 asks of an echo server.
 *   - the opening handshake: reads the request head, takes Sec-WebSocket-Key, answers 101 with
 *     Sec-WebSocket-Accept (SHA-1 and base64 from libcrypto); nothing else is checked;
 *   - frames from the client (masked), up to 64 KiB of payload, unfragmented: text and binary
 *     come back unmasked with the same opcode, a ping gets its pong, a close is echoed and the
 *     connection shut down; anything else (fragments, bigger frames) drops the connection.
 *
 * Usage: ws_echo_ref [port]   (port 0: the OS picks). Listens on 127.0.0.1 and prints
 * "listening on ws://127.0.0.1:PORT" on stdout, flushed.
 *
 * Built as bench/echo_ref.c is: a fixed read buffer in the connection, all the frames one
 * read produces answered with one uv_try_write, only the rest copied and queued. */
#include <uv.h>

#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRAME_MAX (64 * 1024)
#define READ_BUF_SIZE (FRAME_MAX + 14)
#define OUT_BUF_SIZE (2 * READ_BUF_SIZE)

typedef struct {
  uv_tcp_t tcp;    /* first member: the handle pointer is the connection pointer */
  uv_shutdown_t shutdown_req;
  size_t len;      /* bytes of buf not yet consumed */
  int upgraded;    /* the handshake is answered: frames follow */
  int finishing;
  char buf[READ_BUF_SIZE];
  char out[OUT_BUF_SIZE]; /* the answers of one read */
} ws_conn_t;

typedef struct {
  uv_write_t req;
  size_t len;
  char data[];
} ws_write_t;

static uv_loop_t *loop;

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ws_conn_t *c = (ws_conn_t *)h;
  (void)suggested;
  buf->base = c->buf + c->len;
  buf->len = sizeof c->buf - c->len;
}

static void close_cb(uv_handle_t *h) { free(h); }

static void drop(ws_conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, close_cb);
}

static void write_cb(uv_write_t *req, int status) {
  ws_write_t *w = (ws_write_t *)req;
  ws_conn_t *c = req->data;
  free(w);
  if (status < 0)
    drop(c);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  (void)status;
  drop(req->data);
}

/* Sends out[0..n): what the kernel does not take at once is copied and queued. */
static void send_bytes(ws_conn_t *c, const char *out, size_t n) {
  uv_buf_t b = uv_buf_init((char *)out, (unsigned)n);
  int k = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  ws_write_t *w;
  if (k == (int)n)
    return;
  if (k < 0 && k != UV_EAGAIN) {
    drop(c);
    return;
  }
  if (k < 0)
    k = 0;
  w = malloc(sizeof *w + n - (size_t)k);
  if (w == NULL) {
    drop(c);
    return;
  }
  w->len = n - (size_t)k;
  memcpy(w->data, out + k, w->len);
  w->req.data = c;
  b = uv_buf_init(w->data, (unsigned)w->len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
    free(w);
    drop(c);
  }
}

/* Answers the handshake once the head is in; returns the bytes it took, 0 to wait, -1 to
 * drop the connection. */
static long handshake(ws_conn_t *c) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4), *p, *key, *eol;
  unsigned char input[128], digest[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  char reply[256];
  size_t klen, n;
  if (end == NULL)
    return c->len == sizeof c->buf ? -1 : 0;
  *end = '\0';
  key = NULL;
  for (p = c->buf; (p = strstr(p, "\r\n")) != NULL; p += 2) {
    if (strncasecmp(p + 2, "sec-websocket-key:", 18) == 0) {
      key = p + 20;
      break;
    }
  }
  if (key == NULL)
    return -1;
  while (*key == ' ')
    key++;
  eol = strstr(key, "\r\n");
  klen = eol != NULL ? (size_t)(eol - key) : strlen(key);
  if (klen == 0 || klen > 64)
    return -1;
  memcpy(input, key, klen);
  memcpy(input + klen, guid, sizeof guid - 1);
  EVP_Digest(input, klen + sizeof guid - 1, digest, &dlen, EVP_sha1(), NULL);
  memcpy(reply, head, sizeof head - 1);
  n = sizeof head - 1;
  n += (size_t)EVP_EncodeBlock((unsigned char *)reply + n, digest, (int)dlen);
  memcpy(reply + n, "\r\n\r\n", 4);
  send_bytes(c, reply, n + 4);
  c->upgraded = 1;
  return (long)(end + 4 - c->buf);
}

/* Answers every whole frame in the buffer; returns the bytes taken, or -1 to drop. */
static long frames(ws_conn_t *c) {
  size_t pos = 0, out = 0;
  while (c->len - pos >= 2) {
    unsigned char *f = (unsigned char *)c->buf + pos;
    size_t avail = c->len - pos, hlen = 6, plen = f[1] & 0x7f, i;
    int opcode = f[0] & 0x0f;
    unsigned char *mask, *payload;
    if ((f[0] & 0xf0) != 0x80 || !(f[1] & 0x80) || plen == 127)
      return -1; /* fragmented, reserved bits, unmasked or past 64 KiB: not for this server */
    if (plen == 126) {
      if (avail < 4)
        break;
      plen = ((size_t)f[2] << 8) | f[3];
      hlen = 8;
    }
    if (avail < hlen + plen)
      break;
    mask = f + hlen - 4;
    payload = f + hlen;
    for (i = 0; i < plen; i++)
      payload[i] ^= mask[i & 3];
    if (opcode == 0x9)
      opcode = 0xA;
    if (opcode == 0xA && (f[0] & 0x0f) == 0xA) {
      pos += hlen + plen; /* a pong: nothing to answer */
      continue;
    }
    if (out + 4 + plen > sizeof c->out) {
      send_bytes(c, c->out, out);
      out = 0;
    }
    c->out[out++] = (char)(0x80 | opcode);
    if (plen < 126) {
      c->out[out++] = (char)plen;
    } else {
      c->out[out++] = 126;
      c->out[out++] = (char)(plen >> 8);
      c->out[out++] = (char)plen;
    }
    memcpy(c->out + out, payload, plen);
    out += plen;
    pos += hlen + plen;
    if (opcode == 0x8) {
      send_bytes(c, c->out, out);
      c->finishing = 1;
      c->shutdown_req.data = c;
      if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb) != 0)
        drop(c);
      return (long)pos;
    }
  }
  if (out > 0)
    send_bytes(c, c->out, out);
  return (long)pos;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ws_conn_t *c = (ws_conn_t *)s;
  long used;
  (void)buf;
  if (nread < 0) {
    drop(c);
    return;
  }
  if (c->finishing)
    return;
  c->len += (size_t)nread;
  do {
    used = c->upgraded ? frames(c) : handshake(c);
    if (used < 0) {
      drop(c);
      return;
    }
    memmove(c->buf, c->buf + used, c->len - (size_t)used);
    c->len -= (size_t)used;
  } while (used > 0 && c->len > 0 && !c->finishing);
}

static void connection_cb(uv_stream_t *server, int status) {
  ws_conn_t *c;
  if (status < 0)
    return;
  c = malloc(sizeof *c);
  if (c == NULL)
    return;
  c->len = 0;
  c->upgraded = c->finishing = 0;
  uv_tcp_init(loop, &c->tcp);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    drop(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

int main(int argc, char **argv) {
  uv_tcp_t server;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof bound, port = argc > 1 ? atoi(argv[1]) : 9998;
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", port, &addr);
  if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 1024, connection_cb) != 0) {
    fprintf(stderr, "ws_echo_ref: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
  printf("listening on ws://127.0.0.1:%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
