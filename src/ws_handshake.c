/* The WebSocket opening handshake (RFC 6455 §4), the parts that need C: the server's 101
 * answer and the takeover of the HTTP connection's stream, the client's takeover of a
 * connected luasrv.Conn, the key and its Accept value (SHA-1, base64 and random bytes from
 * libcrypto). The checks and the negotiation are Lua (lua/luasrv/ws.lua). */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

#include "errors.h"
#include "http.h"
#include "tcp.h"
#include "ws_internal.h"

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + the protocol's GUID)), 28 characters. */
static void accept_value(const char *key, size_t len, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char input[64 + sizeof guid], digest[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  memcpy(input, key, len);
  memcpy(input + len, guid, sizeof guid - 1);
  EVP_Digest(input, len + sizeof guid - 1, digest, &dlen, EVP_sha1(), NULL);
  EVP_EncodeBlock((unsigned char *)out, digest, (int)dlen);
}

/* core.ws_accept(req, key, protocol, opts [, extensions, deflate_bits]) -> ws. Answers the
 * request with 101 Switching Protocols (the Accept value for `key`, `protocol` and
 * `extensions` when not nil, and any field set with res:header) and takes its connection
 * over; with permessage-deflate negotiated (`extensions` its response), messages go out
 * compressed with a window of 2^deflate_bits. The caller (lua/luasrv/ws.lua) has checked the
 * request. opts: max_message (bytes), idle_timeout and close_timeout (seconds). */
static int l_ws_accept(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  ls_http_conn_t *c = ls_http__req_conn(L, 1);
  size_t key_len, proto_len = 0, ext_len = 0;
  const char *key = luaL_checklstring(L, 2, &key_len);
  const char *proto = luaL_optlstring(L, 3, NULL, &proto_len);
  int opts = lua_istable(L, 4) ? 4 : 0;
  const char *ext = luaL_optlstring(L, 5, NULL, &ext_len);
  lua_Integer deflate_bits = luaL_optinteger(L, 6, 0);
  static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
  char accept[29];
  ls_buf_t out;
  uv_buf_t buf;
  int err;
  luaL_argcheck(L, key_len <= 64, 2, "key too long");
  luaL_argcheck(L, proto_len < 64, 3, "subprotocol name too long");
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (c->virtual_conn)
    return luaL_error(L, "websocket: the request has no connection (luasrv.test)");
  if (c->answered || c->head_sent)
    return luaL_error(L, "websocket: the response has already been sent");
  accept_value(key, key_len, accept);
  ls_buf_init(&out);
  if (ls_buf_append(&out, head, sizeof head - 1) != 0 || ls_buf_append(&out, accept, 28) != 0 ||
      ls_buf_append(&out, "\r\n", 2) != 0 ||
      (proto != NULL && (ls_buf_append(&out, "Sec-WebSocket-Protocol: ", 24) != 0 ||
                         ls_buf_append(&out, proto, proto_len) != 0 ||
                         ls_buf_append(&out, "\r\n", 2) != 0)) ||
      (ext != NULL && (ls_buf_append(&out, "Sec-WebSocket-Extensions: ", 26) != 0 ||
                       ls_buf_append(&out, ext, ext_len) != 0 ||
                       ls_buf_append(&out, "\r\n", 2) != 0)) ||
      ls_buf_append(&out, ls_buf_head(&c->res_headers), ls_buf_len(&c->res_headers)) != 0 ||
      ls_buf_append(&out, "\r\n", 2) != 0) {
    ls_buf_free(&out);
    return luaL_error(L, "websocket: not enough memory");
  }
  buf = uv_buf_init(out.data + out.start, (unsigned)ls_buf_len(&out));
  err = ls_stream_write(&c->s, &buf, 1);
  ls_buf_free(&out);
  if (err != 0)
    return ls_push_error(L, err);
  /* The request is answered, and the connection carries no more HTTP: the request cycle
   * stops parsing it (CLOSING), and once the handler returns it ends the stream if the
   * WebSocket has not already. */
  c->status = 101;
  c->answered = 1;
  c->keep_alive = 0;
  c->state = LS_HTTP_CLOSING;
  if (ls__ws_new(L, gen, &c->s, 0, opts, proto, ext != NULL ? (int)deflate_bits : 0) == NULL) {
    ls_stream_close(&c->s);
    return luaL_error(L, "websocket: not enough memory");
  }
  return 1;
}

/* core.ws_client(conn, opts, protocol) -> ws | nil, message, code: the client's side once the
 * server answered 101 on conn (a connected luasrv.Conn, which is closed for Lua from then on).
 * opts as for core.ws_accept. */
static int l_ws_client(lua_State *L) {
  ls_gen_t *gen = ls_upvalue_gen(L);
  int opts = lua_istable(L, 2) ? 2 : 0;
  const char *proto = luaL_optstring(L, 3, NULL);
  int is_client = 0;
  ls_stream_t *s = ls_tcp_take_stream(L, 1, &is_client);
  if (s == NULL)
    return ls_push_error(L, LS_ECLOSED);
  if (ls__ws_new(L, gen, s, 1, opts, proto, 0) == NULL) {
    ls_stream_close(s);
    return luaL_error(L, "websocket: not enough memory");
  }
  return 1;
}

/* core.ws_key() -> a new Sec-WebSocket-Key: 16 random bytes in base64. */
static int l_ws_key(lua_State *L) {
  unsigned char nonce[16];
  char key[25];
  if (RAND_bytes(nonce, sizeof nonce) != 1)
    return luaL_error(L, "websocket: no random bytes");
  EVP_EncodeBlock((unsigned char *)key, nonce, sizeof nonce);
  lua_pushlstring(L, key, 24);
  return 1;
}

/* core.ws_accept_value(key) -> the Sec-WebSocket-Accept a server must answer `key` with. */
static int l_ws_accept_value(lua_State *L) {
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  char accept[29];
  luaL_argcheck(L, len <= 64, 1, "key too long");
  accept_value(key, len, accept);
  lua_pushlstring(L, accept, 28);
  return 1;
}

void ls__ws_handshake_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg funcs[] = {{"ws_accept", l_ws_accept},
                                   {"ws_client", l_ws_client},
                                   {"ws_key", l_ws_key},
                                   {"ws_accept_value", l_ws_accept_value},
                                   {NULL, NULL}};
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
}
