#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "errors.h"
#include "log.h"

/* Plaintext is decrypted into s->in in pieces of this size. */
#define LS_TLS_READ_PIECE (16 * 1024)
/* Handshake failures of server streams are logged at most once per this many ms. */
#define LS_TLS_LOG_INTERVAL_MS 10000

typedef struct sni_entry_s {
  char *name;                 /* lower case */
  size_t name_size;
  SSL_CTX *ctx;
} sni_entry_t;

struct ls_tls_ctx_s {
  SSL_CTX *ctx;
  int refs;
  int server;
  sni_entry_t *sni;
  unsigned nsni;
  unsigned char alpn[64];     /* wire format: length-prefixed names */
  unsigned alpn_len;
};

typedef struct ls_tls_s {
  SSL *ssl;
  BIO *rbio;                  /* ciphertext from the peer, for OpenSSL to read */
  BIO *wbio;                  /* ciphertext OpenSSL wrote, for the socket */
  ls_tls_ctx_t *ctx;
  ls_buf_t wire;              /* ciphertext waiting for the socket */
  uv_timer_t timer;           /* the handshake's deadline */
  char err[192];
  unsigned char ready;        /* the handshake finished */
  unsigned char notified;     /* close_notify sent */
} ls_tls_t;

static ls_tls_t *tls_of(const ls_stream_t *s) { return (ls_tls_t *)s->tls; }

/* ---- contexts ----------------------------------------------------------------------------- */

/* The first queued OpenSSL error as text (the queue is emptied), or `def`. */
static void take_ssl_error(char *out, size_t size, const char *def) {
  unsigned long e = ERR_get_error();
  const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
  snprintf(out, size, "%s", reason != NULL ? reason : def);
  ERR_clear_error();
}

static SSL_CTX *new_ssl_ctx(int server) {
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL)
    return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* Writes of plaintext go to a memory BIO, which takes all of it: no partial writes and no
   * need to retry with the same buffer. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

/* Loads a certificate chain and its key into ctx; raises with a message naming the files. */
static void load_cert(lua_State *L, SSL_CTX *ctx, const char *cert, const char *key) {
  char why[160];
  if (access(cert, R_OK) != 0)
    luaL_error(L, "tls: cannot load certificate %s: %s", cert, strerror(errno));
  if (access(key, R_OK) != 0)
    luaL_error(L, "tls: cannot load key %s: %s", key, strerror(errno));
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    take_ssl_error(why, sizeof why, "unreadable");
    luaL_error(L, "tls: cannot load certificate %s: %s", cert, why);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    take_ssl_error(why, sizeof why, "unreadable");
    luaL_error(L, "tls: cannot load key %s: %s", key, why);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    luaL_error(L, "tls: key %s does not match certificate %s", key, cert);
  }
}

/* The string field `name` of the table at idx; raises when it is missing or not a string. */
static const char *need_string(lua_State *L, int idx, const char *name, const char *what) {
  const char *v;
  lua_getfield(L, idx, name);
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "%s: '%s' must be a string (a file name)", what, name);
  v = lua_tostring(L, -1);
  lua_pop(L, 1); /* the table holds the string */
  return v;
}

/* Reads an `alpn` list of protocol names into the wire format. */
static void read_alpn(lua_State *L, int idx, ls_tls_ctx_t *t) {
  lua_Integer i, n;
  lua_getfield(L, idx, "alpn");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "tls: 'alpn' must be a list of protocol names");
  n = (lua_Integer)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *p;
    lua_rawgeti(L, -1, i);
    p = lua_tolstring(L, -1, &len);
    if (p == NULL || len == 0 || len > 255 || t->alpn_len + 1 + len > sizeof t->alpn)
      luaL_error(L, "tls: bad or too many 'alpn' protocol names");
    t->alpn[t->alpn_len++] = (unsigned char)len;
    memcpy(t->alpn + t->alpn_len, p, len);
    t->alpn_len += (unsigned)len;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static int servername_cb(SSL *ssl, int *alert, void *arg) {
  ls_tls_ctx_t *t = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  unsigned i;
  (void)alert;
  if (name == NULL)
    return SSL_TLSEXT_ERR_OK;
  for (i = 0; i < t->nsni; i++) {
    if (strcasecmp(t->sni[i].name, name) == 0) {
      SSL_set_SSL_CTX(ssl, t->sni[i].ctx);
      break;
    }
  }
  return SSL_TLSEXT_ERR_OK; /* an unknown name gets the default certificate */
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned inlen, void *arg) {
  ls_tls_ctx_t *t = arg;
  unsigned char *sel;
  (void)ssl;
  if (SSL_select_next_proto(&sel, outlen, t->alpn, t->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static ls_tls_ctx_t *ctx_alloc(lua_State *L, int server) {
  ls_tls_ctx_t *t = ls_malloc(sizeof *t);
  if (t == NULL)
    luaL_error(L, "tls: not enough memory");
  memset(t, 0, sizeof *t);
  t->refs = 1;
  t->server = server;
  t->ctx = new_ssl_ctx(server);
  if (t->ctx == NULL) {
    ls_free(t, sizeof *t);
    luaL_error(L, "tls: cannot make an OpenSSL context");
  }
  return t;
}

/* Runs a loader under lua_pcall so that a context half made is freed before the error goes
 * on to the caller. */
typedef struct ctx_load_s {
  ls_tls_ctx_t *t;
  int idx;
  int http;
  const char **server_name;
} ctx_load_t;

static int load_server(lua_State *L) {
  ctx_load_t *ld = lua_touserdata(L, 1);
  ls_tls_ctx_t *t = ld->t;
  int idx = ld->idx;
  load_cert(L, t->ctx, need_string(L, idx, "cert", "tls"), need_string(L, idx, "key", "tls"));
  read_alpn(L, idx, t);
  lua_getfield(L, idx, "resumption");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    luaL_error(L, "tls: 'resumption' must be true or false");
  if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
    /* Every client does a full handshake: no session cache, no tickets. */
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(t->ctx, 0);
  }
  lua_pop(L, 1);
  if (t->alpn_len == 0 && ld->http) {
    memcpy(t->alpn, "\x08http/1.1", 9);
    t->alpn_len = 9;
  }
  lua_getfield(L, idx, "sni");
  if (!lua_isnil(L, -1)) {
    int sni = lua_gettop(L);
    unsigned n = 0;
    if (!lua_istable(L, sni))
      luaL_error(L, "tls: 'sni' must be a table of host name -> { cert = , key = }");
    lua_pushnil(L);
    while (lua_next(L, sni) != 0) {
      n++;
      lua_pop(L, 1);
    }
    t->sni = ls_malloc(n * sizeof *t->sni);
    if (n > 0 && t->sni == NULL)
      luaL_error(L, "tls: not enough memory");
    memset(t->sni, 0, n * sizeof *t->sni);
    lua_pushnil(L);
    while (lua_next(L, sni) != 0) {
      sni_entry_t *e = &t->sni[t->nsni];
      size_t len, i;
      const char *name = lua_tolstring(L, -2, &len);
      if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
        luaL_error(L, "tls: 'sni' must map host names to { cert = , key = }");
      t->nsni++; /* counted at once: a failure below leaves it for ls_tls_ctx_release */
      e->ctx = new_ssl_ctx(1);
      e->name = ls_malloc(len + 1);
      e->name_size = len + 1;
      if (e->ctx == NULL || e->name == NULL)
        luaL_error(L, "tls: not enough memory");
      for (i = 0; i < len; i++)
        e->name[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
      e->name[len] = '\0';
      load_cert(L, e->ctx, need_string(L, lua_gettop(L), "cert", "tls sni"),
                need_string(L, lua_gettop(L), "key", "tls sni"));
      if (t->alpn_len > 0)
        SSL_CTX_set_alpn_select_cb(e->ctx, alpn_select_cb, t);
      lua_pop(L, 1);
    }
    SSL_CTX_set_tlsext_servername_callback(t->ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(t->ctx, t);
  }
  lua_pop(L, 1);
  if (t->alpn_len > 0)
    SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select_cb, t);
  return 0;
}

static int load_client(lua_State *L) {
  ctx_load_t *ld = lua_touserdata(L, 1);
  ls_tls_ctx_t *t = ld->t;
  int idx = ld->idx, verify = 1;
  const char *ca = NULL;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "verify");
    if (!lua_isnil(L, -1)) {
      if (!lua_isboolean(L, -1))
        luaL_error(L, "tls: 'verify' must be true or false");
      verify = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "ca");
    if (!lua_isnil(L, -1))
      ca = need_string(L, idx, "ca", "tls");
    lua_pop(L, 1);
    lua_getfield(L, idx, "server_name");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "tls: 'server_name' must be a string");
      *ld->server_name = lua_tostring(L, -1);
    }
    lua_pop(L, 1);
    read_alpn(L, idx, t);
  }
  if (verify) {
    int ok = ca != NULL ? SSL_CTX_load_verify_locations(t->ctx, ca, NULL)
                        : SSL_CTX_set_default_verify_paths(t->ctx);
    if (ok != 1) {
      char why[160];
      take_ssl_error(why, sizeof why, "unreadable");
      luaL_error(L, "tls: cannot load CA certificates %s: %s", ca != NULL ? ca : "(system)", why);
    }
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
  } else {
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
  }
  if (t->alpn_len > 0)
    SSL_CTX_set_alpn_protos(t->ctx, t->alpn, t->alpn_len);
  return 0;
}

static ls_tls_ctx_t *ctx_load(lua_State *L, int idx, int server, int http,
                              const char **server_name) {
  ctx_load_t ld;
  idx = lua_absindex(L, idx);
  if (server && !lua_istable(L, idx))
    luaL_error(L, "tls: expected a table { cert = , key = }");
  if (!server && !lua_istable(L, idx) && !lua_isboolean(L, idx))
    luaL_error(L, "tls: expected true or a table of options");
  ld.t = ctx_alloc(L, server);
  ld.idx = 2; /* the options, as the loader's second argument */
  ld.http = http;
  ld.server_name = server_name;
  lua_pushcfunction(L, server ? load_server : load_client);
  lua_pushlightuserdata(L, &ld);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    ls_tls_ctx_release(ld.t);
    /* At the line of the script that called listen() or connect(). */
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
    lua_error(L);
  }
  return ld.t;
}

ls_tls_ctx_t *ls_tls_server_ctx(lua_State *L, int idx, int http) {
  return ctx_load(L, idx, 1, http, NULL);
}

ls_tls_ctx_t *ls_tls_client_ctx(lua_State *L, int idx, const char **server_name) {
  *server_name = NULL;
  return ctx_load(L, idx, 0, 0, server_name);
}

void ls_tls_ctx_ref(ls_tls_ctx_t *ctx) { ctx->refs++; }

int ls_tls_ctx_is_server(const ls_tls_ctx_t *ctx) { return ctx->server; }

void ls_tls_ctx_release(ls_tls_ctx_t *t) {
  unsigned i;
  if (t == NULL || --t->refs > 0)
    return;
  for (i = 0; i < t->nsni; i++) {
    SSL_CTX_free(t->sni[i].ctx);
    ls_free(t->sni[i].name, t->sni[i].name_size);
  }
  ls_free(t->sni, t->nsni * sizeof *t->sni);
  SSL_CTX_free(t->ctx);
  ls_free(t, sizeof *t);
}

/* ---- the engine --------------------------------------------------------------------------- */

/* Moves what OpenSSL wrote into the wire buffer. */
static void drain_wbio(ls_tls_t *t) {
  size_t pending;
  while ((pending = BIO_ctrl_pending(t->wbio)) > 0) {
    int n;
    if (ls_buf_reserve(&t->wire, pending) != 0)
      return;
    n = BIO_read(t->wbio, t->wire.data + t->wire.end, (int)pending);
    if (n <= 0)
      return;
    t->wire.end += (size_t)n;
  }
}

/* Records why the layer failed and fails the stream's input. Server-side handshake failures
 * (scanners, plain HTTP on the TLS port) are logged at most once per interval. */
static void tls_fail(ls_stream_t *s, const char *why) {
  static uint64_t last_log, suppressed;
  ls_tls_t *t = tls_of(s);
  long v = SSL_get_verify_result(t->ssl);
  if (!t->ctx->server && v != X509_V_OK)
    snprintf(t->err, sizeof t->err, "tls: certificate verify failed (%s)",
             X509_verify_cert_error_string(v));
  else
    snprintf(t->err, sizeof t->err, "tls: %s", why);
  ERR_clear_error();
  s->read_err = LS_ETLS;
  uv_timer_stop(&t->timer);
  if (t->ctx->server && !t->ready) {
    uint64_t now = uv_now(s->rt->loop);
    if (last_log == 0 || now - last_log >= LS_TLS_LOG_INTERVAL_MS) {
      ls_log(LS_LOG_INFO, "%s in a handshake with a client%s", t->err,
             suppressed ? " (and earlier ones not logged)" : "");
      last_log = now;
      suppressed = 0;
    } else {
      suppressed++;
    }
  }
}

/* The reason for a failed SSL call, from its error code and OpenSSL's queue. */
static void ssl_call_failed(ls_stream_t *s, int ret) {
  ls_tls_t *t = tls_of(s);
  int e = SSL_get_error(t->ssl, ret);
  char why[160];
  if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
    snprintf(why, sizeof why, "unexpected end of the connection");
  else
    take_ssl_error(why, sizeof why, "error");
  tls_fail(s, why);
}

static void handshake_timer_cb(uv_timer_t *timer) {
  ls_stream_t *s = timer->data;
  ls_tls_t *t = tls_of(s);
  if (t->ready || s->read_err != 0 || s->closing)
    return;
  tls_fail(s, "handshake timeout");
  s->ev->on_read(s);
}

/* Drives the handshake, then decrypts what is there into s->in. */
static void tls_pump(ls_stream_t *s) {
  ls_tls_t *t = tls_of(s);
  if (!t->ready) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        ssl_call_failed(s, r);
      return;
    }
    t->ready = 1;
    uv_timer_stop(&t->timer);
  }
  while (s->read_err == 0) {
    int r;
    if (ls_buf_reserve(&s->in, LS_TLS_READ_PIECE) != 0) {
      s->read_err = LS_ENOMEM;
      return;
    }
    r = SSL_read(t->ssl, s->in.data + s->in.end, LS_TLS_READ_PIECE);
    if (r > 0) {
      s->in.end += (size_t)r;
      continue;
    }
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return;
    case SSL_ERROR_ZERO_RETURN:
      s->read_err = LS_EEOF; /* the peer's close_notify */
      return;
    default:
      ssl_call_failed(s, r);
      return;
    }
  }
}

int ls_tls_attach(ls_stream_t *s, ls_tls_ctx_t *ctx, const char *server_name,
                  uint64_t handshake_ms) {
  ls_tls_t *t = ls_malloc(sizeof *t);
  if (t == NULL)
    return LS_ENOMEM;
  memset(t, 0, sizeof *t);
  t->ssl = SSL_new(ctx->ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
    SSL_free(t->ssl);
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    ls_free(t, sizeof *t);
    return LS_ENOMEM;
  }
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  t->ctx = ctx;
  ls_tls_ctx_ref(ctx);
  if (ctx->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (server_name != NULL) {
      struct in6_addr a6;
      struct in_addr a4;
      int is_ip = inet_pton(AF_INET, server_name, &a4) == 1 ||
                  inet_pton(AF_INET6, server_name, &a6) == 1;
      if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name);
      } else {
        SSL_set_tlsext_host_name(t->ssl, server_name);
        SSL_set1_host(t->ssl, server_name);
      }
    }
  }
  uv_timer_init(s->rt->loop, &t->timer);
  t->timer.data = s;
  s->open_handles++;
  s->tls = t;
  if (handshake_ms > 0)
    uv_timer_start(&t->timer, handshake_timer_cb, handshake_ms, 0);
  /* Whatever arrived before (STARTTLS) is the peer's first ciphertext. */
  if (ls_buf_len(&s->in) > 0) {
    BIO_write(t->rbio, ls_buf_head(&s->in), (int)ls_buf_len(&s->in));
    ls_buf_consume(&s->in, ls_buf_len(&s->in));
  }
  tls_pump(s);
  drain_wbio(t);
  ls_stream_flush(s);
  return 0;
}

void ls__tls_input(ls_stream_t *s, const char *data, size_t n) {
  ls_tls_t *t = tls_of(s);
  if (BIO_write(t->rbio, data, (int)n) != (int)n) {
    s->read_err = LS_ENOMEM;
    return;
  }
  tls_pump(s);
  drain_wbio(t);
  /* Handshake flights, session tickets, alerts: out they go. */
  if (ls_buf_len(&t->wire) > 0 || (t->ready && ls_buf_len(&s->out) > 0))
    ls_stream_flush(s);
}

void ls__tls_encrypt(ls_stream_t *s) {
  ls_tls_t *t = tls_of(s);
  while (t->ready && ls_buf_len(&s->out) > 0 && s->write_err == 0) {
    size_t len = ls_buf_len(&s->out);
    int r = SSL_write(t->ssl, ls_buf_head(&s->out), len > INT32_MAX ? INT32_MAX : (int)len);
    if (r <= 0) {
      char why[160];
      take_ssl_error(why, sizeof why, "write failed");
      snprintf(t->err, sizeof t->err, "tls: %s", why);
      s->write_err = LS_ETLS;
      break;
    }
    ls_buf_consume(&s->out, (size_t)r);
  }
  drain_wbio(t);
}

int ls__tls_close_notify(ls_stream_t *s) {
  ls_tls_t *t = tls_of(s);
  if (t->notified || !t->ready)
    return 0;
  t->notified = 1;
  SSL_shutdown(t->ssl);
  ERR_clear_error();
  drain_wbio(t);
  return ls_buf_len(&t->wire) > 0;
}

ls_buf_t *ls__tls_wire(ls_stream_t *s) { return &tls_of(s)->wire; }

void ls__tls_close(ls_stream_t *s, uv_close_cb cb) { uv_close((uv_handle_t *)&tls_of(s)->timer, cb); }

void ls__tls_free(ls_stream_t *s) {
  ls_tls_t *t = tls_of(s);
  SSL_free(t->ssl); /* frees both BIOs */
  ls_tls_ctx_release(t->ctx);
  ls_buf_free(&t->wire);
  ls_free(t, sizeof *t);
  s->tls = NULL;
}

int ls_tls_ready(const ls_stream_t *s) { return s->tls != NULL && tls_of(s)->ready; }

const char *ls_tls_error(const ls_stream_t *s) {
  return s->tls != NULL && tls_of(s)->err[0] != '\0' ? tls_of(s)->err : "tls: error";
}

void ls_tls_push_info(lua_State *L, const ls_stream_t *s) {
  ls_tls_t *t = tls_of(s);
  const unsigned char *alpn;
  unsigned alpn_len;
  const char *name;
  X509 *peer;
  if (t == NULL || !t->ready) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 0, 6);
  lua_pushstring(L, SSL_get_version(t->ssl));
  lua_setfield(L, -2, "version");
  lua_pushboolean(L, SSL_session_reused(t->ssl));
  lua_setfield(L, -2, "resumed");
  lua_pushstring(L, SSL_get_cipher_name(t->ssl));
  lua_setfield(L, -2, "cipher");
  SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
  if (alpn_len > 0) {
    lua_pushlstring(L, (const char *)alpn, alpn_len);
    lua_setfield(L, -2, "alpn");
  }
  name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  if (name != NULL) {
    lua_pushstring(L, name);
    lua_setfield(L, -2, "server_name");
  }
  peer = SSL_get1_peer_certificate(t->ssl);
  if (peer != NULL) {
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
    lua_pushstring(L, subject);
    lua_setfield(L, -2, "peer_subject");
    X509_free(peer);
  }
}
