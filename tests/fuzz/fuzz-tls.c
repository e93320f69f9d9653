/* libFuzzer target: arbitrary bytes as what a client sends to a TLS server stream (the
 * ClientHello and whatever follows), through the stream layer and OpenSSL as a luasrv HTTPS
 * or TLS listener runs them. The stream sits on one end of a socketpair, so its handshake
 * replies are really written. Any crash or sanitizer report is a finding; a failed handshake
 * is the expected answer to most inputs. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/runtime.h"
#include "../../src/stream.h"
#include "../../src/tls.h"

static uv_loop_t loop;
static ls_runtime_t rt;
static ls_tls_ctx_t *ctx;
static int closed;

static void on_read(ls_stream_t *s) {
  /* Plaintext after a finished handshake is dropped; an error ends the stream. */
  ls_buf_consume(&s->in, ls_buf_len(&s->in));
  if (s->read_err != 0)
    ls_stream_close(s);
}

static void on_written(ls_stream_t *s) { (void)s; }

static void on_close(ls_stream_t *s) {
  (void)s;
  closed = 1;
}

static const ls_stream_events_t events = {on_read, on_written, on_close};

/* A throwaway certificate for the server side, made once with the openssl command. */
static void setup(void) {
  char dir[] = "/tmp/luasrv-fuzz-tls-XXXXXX", cmd[512];
  lua_State *L;
  if (mkdtemp(dir) == NULL)
    abort();
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
           "-keyout %s/k.pem -out %s/c.pem -subj /CN=fuzz >/dev/null 2>&1",
           dir, dir);
  if (system(cmd) != 0)
    abort();
  uv_loop_init(&loop);
  if (ls_runtime_init(&rt, &loop) != 0)
    abort();
  L = luaL_newstate();
  lua_createtable(L, 0, 2);
  lua_pushfstring(L, "%s/c.pem", dir);
  lua_setfield(L, -2, "cert");
  lua_pushfstring(L, "%s/k.pem", dir);
  lua_setfield(L, -2, "key");
  ctx = ls_tls_server_ctx(L, -1, 1);
  lua_close(L);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static ls_stream_t s;
  int fds[2];
  size_t off = 0;
  if (ctx == NULL)
    setup();
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
    abort();
  closed = 0;
  if (ls_stream_init(&s, &rt, 1, &events, NULL) != 0 || uv_pipe_open(&s.u.pipe, fds[0]) != 0)
    abort();
  s.read_limit = 64 * 1024;
  if (ls_tls_attach(&s, ctx, NULL, 0) != 0)
    abort();
  /* The input in pieces of varying size, as reads would bring it. */
  while (off < size && !s.closing && s.read_err == 0) {
    size_t n = 1 + (size_t)data[off] % 512;
    if (n > size - off)
      n = size - off;
    ls__tls_input(&s, (const char *)data + off, n);
    off += n;
    if (ls_buf_len(&s.in) > 0 || s.read_err != 0)
      on_read(&s);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  ls_stream_close(&s);
  while (!closed)
    uv_run(&loop, UV_RUN_ONCE);
  close(fds[1]);
  return 0;
}
