/* What the TCP API's two files share (src/tcp.c: luasrv.Conn, connect; src/tcp_listen.c:
 * srv.tcp.listen, luasrv.Listener, running a connection's handler), and what the proxy's
 * relay (src/http_proxy.c) needs of a connection: its stream and its reader slot. */
#ifndef LS_TCP_INTERNAL_H
#define LS_TCP_INTERNAL_H

#include "connect.h"
#include "listener.h"
#include "runtime.h"
#include "stream.h"
#include "tls.h"

#define LS_CONN_MT "luasrv.Conn"
#define LS_LISTENER_MT "luasrv.Listener"
/* A luasrv.Conn's user values: 1, the response parser the proxy's relay keeps with it. */
#define LS_CONN_UV_PARSER 1
#define LS_CONN_UVALUES 1


typedef struct conn_ud_s conn_ud_t;

/* A connection. The C struct belongs to the core and lives until its stream has closed and
 * no name lookup is outstanding; the Lua object (conn_ud_t) only points at it,
 * and that pointer is cleared when the struct goes, so a late call answers "closed". */
typedef struct ls_conn_s {
  ls_stream_t s;           /* the socket, its input and its output queue */
  ls_res_t res;
  ls_gen_t *gen;
  conn_ud_t *ud;
  uv_connect_t creq;        /* a Unix-domain connect */
  ls_connect_t *connecting; /* a TCP connect in progress (name lookup, attempts) */
  ls_task_t *reader;       /* task waiting for input */
  ls_task_t *writer;       /* task waiting for output to drain */
  ls_task_t *connector;    /* task waiting for connect */
  ls_task_t *handler;      /* task running the listener's handler for this connection */
  int connect_err;
  int64_t timeout_ms;      /* for each read, write and connect; -1: none */
  size_t line_max;
  size_t frame_max;
  size_t want;             /* input bytes the waiting reader needs */
  ls_tls_ctx_t *pending_tls; /* connect: TLS to put on once connected */
  char *tls_name;          /* connect: the name to verify (the host), for pending_tls/starttls */
  size_t tls_name_size;
  struct ls_listener_s *accepted_by; /* the listener that accepted it (NULL: connect) */
  uint64_t listener_id;     /* accepted_by's id, checked before use */
  unsigned char awaiting_handshake; /* TLS: the handler starts when the handshake is done */
  unsigned char is_client;  /* made by connect: its handle keeps the loop alive only while used */
  unsigned char connected;
  unsigned char closed;    /* closed for Lua; the stream may still be sending */
  unsigned char stream_closed; /* the stream's handles are closed */
} ls_conn_t;

struct conn_ud_s {
  ls_conn_t *conn;
  ls_gen_t *gen;
};

typedef struct listener_ud_s listener_ud_t;

typedef struct ls_listener_s {
  ls_listen_sock_t sock;     /* the listening socket (TCP or Unix-domain) */
  ls_listener_base_t base;   /* handler, generation and TLS context; handed over on reload */
  int64_t timeout_ms;
  uint64_t handshake_ms;     /* TLS: how long a client may take to finish its handshake */
  size_t line_max;
  size_t frame_max;
  char url[128];
} ls_listener_t;

struct listener_ud_s {
  ls_listener_t *listener;   /* checked with ls_listener_alive before use */
  uint64_t id;               /* the listener's id when the object was made */
  ls_gen_t *gen;
};

/* A connection on the generation's loop (a TCP or Unix-domain stream), linked as a resource
 * of gen; NULL when out of memory. */
ls_conn_t *ls__tcp_conn_new(ls_gen_t *gen, int is_pipe);
/* Closes the connection for Lua at once; with graceful set and output queued, the stream ends
 * once it is sent (bounded), else it closes now. */
void ls__tcp_conn_close(ls_conn_t *c, int graceful);
/* Reads ahead while there is room (see conn_read_hiwat). */
void ls__tcp_conn_want_input(ls_conn_t *c);
/* Pushes the Lua object of a connection (its metatable is luasrv.Conn). */
conn_ud_t *ls__tcp_conn_push_ud(lua_State *L, ls_conn_t *c);
/* Starts the accepting listener's handler for the connection (src/tcp_listen.c). */
void ls__tcp_start_handler(ls_conn_t *c);
/* The connection object at argument 1. Methods carry the metatable as their first upvalue, so
 * the usual case is one pointer comparison instead of a registry lookup by name. */
conn_ud_t *ls__tcp_check_conn_ud(lua_State *L);
/* The open connection at argument 1, or NULL when it is closed for Lua. */
ls_conn_t *ls__tcp_check_conn(lua_State *L);
/* nil, message, code for a failure of the connection; a TLS failure says what failed
 * ("tls: certificate verify failed (...)", "ETLS"). */
int ls__tcp_push_error(lua_State *L, ls_conn_t *c, int err);
/* conn:starttls([opts]) and conn:tls() (src/tcp_tls.c). */
int ls__tcp_starttls(lua_State *L);
int ls__tcp_tls(lua_State *L);
/* srv.tcp.listen (src/tcp_listen.c), a closure over the generation. */
int ls__tcp_listen(lua_State *L);
/* Registers the luasrv.Listener metatable. */
void ls__tcp_listener_open(lua_State *L);

#endif
