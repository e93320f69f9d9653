/* TLS on a stream, with OpenSSL (libssl) through memory BIOs: libuv keeps doing the socket
 * I/O, OpenSSL only turns ciphertext into plaintext and back. A TLS stream looks to its owner
 * like a plain one: s->in holds plaintext, plaintext appended to s->out is encrypted on
 * flush. The ciphertext waiting for the socket is the TLS layer's own `wire` buffer.
 *
 * Contexts (ls_tls_ctx_t) hold an SSL_CTX and what was configured: a server context is made
 * by listen() in the generation that declares the listener (so a reload with new certificate
 * files serves them to new connections); a client context by connect(). They are counted:
 * every stream using one holds a reference.
 *
 * TLS 1.2 is the minimum. A client verifies the peer's chain (the system store, or `ca`) and
 * its host name unless `verify = false` is given explicitly. */
#ifndef LS_TLS_H
#define LS_TLS_H

#include <lua.h>
#include <stdint.h>

#include "stream.h"

typedef struct ls_tls_ctx_s ls_tls_ctx_t;

/* Reads a listener's `tls` option at idx: { cert = path, key = path [, sni = { [name] = {
 * cert = , key = } }] [, alpn = { "proto", ... }] }. `http` offers ALPN "http/1.1" when no alpn
 * list is given. Raises a Lua error (at the caller's level 1) for a bad option, an unreadable
 * file or a key that does not match its certificate. Returns a context with one reference. */
ls_tls_ctx_t *ls_tls_server_ctx(lua_State *L, int idx, int http);
/* Reads a client's `tls` option at idx: true, or { ca = path, server_name = name,
 * alpn = { ... }, verify = true|false }. *server_name gets the name to send and check (NULL:
 * the host connected to). Raises for a bad option. Returns a context with one reference. */
ls_tls_ctx_t *ls_tls_client_ctx(lua_State *L, int idx, const char **server_name);
void ls_tls_ctx_ref(ls_tls_ctx_t *ctx);
void ls_tls_ctx_release(ls_tls_ctx_t *ctx);
/* 1 if the context is a server's. */
int ls_tls_ctx_is_server(const ls_tls_ctx_t *ctx);

/* Puts TLS on a connected stream, as the context's side (server_name: for a client, the SNI
 * name and the name its certificate must carry; NULL to send none and check none). Bytes
 * already in s->in are taken as the first ciphertext (STARTTLS). The handshake starts at once
 * and must finish within handshake_ms; the owner's on_read runs when it has finished
 * (ls_tls_ready) or failed (s->read_err == LS_ETLS, ls_tls_error says why). Returns 0 or
 * LS_ENOMEM. */
int ls_tls_attach(ls_stream_t *s, ls_tls_ctx_t *ctx, const char *server_name,
                  uint64_t handshake_ms);
/* 1 once the handshake has finished. */
int ls_tls_ready(const ls_stream_t *s);
/* Why the TLS layer failed: "tls: certificate verify failed (hostname mismatch)" and the
 * like; "tls: error" when nothing more is known. */
const char *ls_tls_error(const ls_stream_t *s);
/* Pushes { version, cipher, alpn, server_name, peer_subject } for a finished handshake, or
 * nil. */
void ls_tls_push_info(lua_State *L, const ls_stream_t *s);

/* For stream.c only. */
void ls__tls_input(ls_stream_t *s, const char *data, size_t n);
void ls__tls_encrypt(ls_stream_t *s);
int ls__tls_close_notify(ls_stream_t *s);
ls_buf_t *ls__tls_wire(ls_stream_t *s);
void ls__tls_close(ls_stream_t *s, uv_close_cb cb);
void ls__tls_free(ls_stream_t *s);

#endif
