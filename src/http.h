/* The HTTP/1.1 server, shared between its three files:
 *   http_server.c   listeners, connections, llhttp glue, limits, timeouts, output batching
 *   http_message.c  response heads: status lines, Date, header validation, error pages
 *   http_lua.c      the Lua request and response objects and running the handler
 *
 * One request at a time per connection: the parser pauses when a request's head is complete,
 * the handler runs in a task, and parsing goes on (its body, then the next pipelined request)
 * only when the handler asks for the body or has answered. Responses therefore leave in
 * request order, and a read that carries many requests yields one write with all their
 * responses when the handlers do not wait. */
#ifndef LS_HTTP_H
#define LS_HTTP_H

#include <llhttp.h>
#include <stdint.h>

#include "buffer.h"
#include "runtime.h"
#include "http_gzip.h"
#include "listener.h"
#include "stream.h"

#define LS_HTTP_MAX_HEADERS_LIMIT 1000

typedef struct ls_http_limits_s {
  size_t line_max;            /* request line (method, target, version): 414 past it */
  size_t header_max;          /* header section bytes: 431 past it */
  unsigned header_count;      /* header fields: 431 past it */
  size_t body_max;            /* request body: 413 past it */
  uint64_t header_timeout_ms; /* whole head, from its first byte: 408 */
  uint64_t keepalive_ms;      /* idle between requests: close */
  uint64_t write_timeout_ms;  /* no progress sending: close */
  uint64_t body_timeout_ms;   /* a waiting req:body() gets no more of the body: 408 */
} ls_http_limits_t;

/* Where the parser is in the header section (ls_http_conn_t.hdr_state). */
enum { LS_HDR_BETWEEN = 0, LS_HDR_NAME = 1, LS_HDR_VALUE = 2 };

typedef struct ls_http_header_s {
  uint32_t name_off, name_len, value_off, value_len; /* into conn->head */
} ls_http_header_t;

typedef struct ls_http_listener_s ls_http_listener_t;
typedef struct ls_http_conn_s ls_http_conn_t;
typedef struct ls_http_req_ud_s ls_http_req_ud_t;
typedef struct ls_http_res_ud_s ls_http_res_ud_t;
typedef struct ls_http_hdr_ud_s ls_http_hdr_ud_t;

/* What the connection cycle (http_server.c) calls upwards, set by the listener's maker
 * (http_listen.c): the Lua side's entry points (ls_http__lua_hooks, http_lua.c). */
typedef struct ls_http_hooks_s {
  void (*dispatch)(ls_http_conn_t *c);    /* a complete head: start its handler */
  void (*end_request)(ls_http_conn_t *c); /* the request is over (also at a close) */
} ls_http_hooks_t;

/* How many idle keep-alive connections of a listener keep their buffers between requests. */
#define LS_HTTP_WARM 64

struct ls_http_listener_s {
  ls_listen_sock_t sock;      /* the listening socket: TCP, or Unix-domain with `path` */
  ls_listener_base_t base;    /* the handler (function or callable app) and its generation */
  ls_http_limits_t limits;    /* as first set: a reload that keeps the listener keeps them */
  ls_gzip_conf_t *gzip;       /* the `compress` option, or NULL (also kept across reloads) */
  const ls_http_hooks_t *hooks;
  unsigned conns;             /* open connections; the struct stays until they are gone */
  /* The connections that went idle last keep their buffers (http_server.c, conn_idle): a
   * ring, the slot to fill next, NULL where a connection left it. */
  ls_http_conn_t *warm[LS_HTTP_WARM];
  unsigned warm_next;
  unsigned char closed;
  char url[128];
};

/* Where a connection is in its request cycle. */
typedef enum {
  LS_HTTP_IDLE,      /* waiting for the first byte of a request */
  LS_HTTP_HEAD,      /* reading a request head */
  LS_HTTP_HANDLER,   /* the head is complete; the handler runs */
  LS_HTTP_DRAIN,     /* the handler answered; the rest of the body is skipped */
  LS_HTTP_CLOSING    /* no more requests: flush, then close */
} ls_http_state_t;

struct ls_http_conn_s {
  ls_stream_t s;              /* the socket: input (s.in), queued responses (s.out) */
  uv_timer_t timer;           /* header deadline, keep-alive idle */
  ls_res_t res;
  ls_runtime_t *rt;
  ls_gen_t *gen;              /* of the current request only: generations come and go */
  ls_http_listener_t *listener;
  llhttp_t parser;
  ls_buf_t head;              /* target and header bytes of the current request */
  ls_buf_t body;              /* request body received for the handler */
  ls_http_header_t *headers;  /* limits.header_count entries (headers_size bytes), from the
                               * first header of a request until the connection is idle */
  uint32_t headers_size;
  unsigned nheaders;
  uint32_t url_len;           /* the target is head[0 .. url_len) */
  uint32_t path_off, path_len;/* the decoded path, in head after the headers */
  uint64_t body_seen;
  ls_task_t *task;            /* the handler's task for the current request */
  ls_task_t *body_waiter;     /* task waiting in req:body() */
  ls_task_t *writer;          /* task waiting for output to drain (res:write) */
  ls_http_req_ud_t *req_ud;   /* the current request's Lua objects, cleared at its end */
  ls_http_res_ud_t *res_ud;   /* NULL when the handler takes no response object */
  ls_http_hdr_ud_t *hdr_ud;   /* req.headers, once read */
  uint64_t deadline;          /* loop time (ms) the timer acts at; 0: none */
  ls_http_state_t state;
  int reject_status;          /* status to answer with after a parse error */
  char *reject_msg;           /* body of that answer when a handler rejected the request */
  size_t reject_msg_len;
  struct ls_fs_tmp_s *tmpfiles; /* temporary files of the current request, removed at its end */
  uint32_t seq;               /* requests seen */
  /* The current response. */
  int status;
  uint64_t bytes_out;         /* body bytes sent, for the log */
  ls_buf_t res_headers;       /* "Name: value\r\n" lines set through res:header */
  ls_gzip_stream_t *gz;       /* a streamed response being compressed */
  unsigned char head_sent;    /* streaming: the head went out */
  unsigned char answered;     /* the handler wrote a complete response (send, json...) */
  unsigned char chunked;      /* streaming with chunked framing */
  unsigned char has_ctype;
  unsigned char has_clen;
  /* Flags of the current request. */
  unsigned char hdr_state;    /* LS_HDR_*: between header lines, in a name, in a value */
  unsigned char at_chunk_line; /* the next input starts a chunk-size line (see chunk_line) */
  unsigned char msg_done;     /* llhttp reported the end of the message */
  unsigned char keep_alive;   /* the connection may carry another request */
  unsigned char is_head;      /* HEAD: no body in the response */
  unsigned char expect_continue;
  unsigned char continue_sent;
  unsigned char closing;      /* closing: the stream and the timer are being closed */
  unsigned char in_process;   /* ls_http__process is on the stack */
  unsigned char virtual_conn; /* no socket: in-process testing writes into `out` only */
  unsigned char dispatch_pending; /* a head is complete; its handler is to start */
  unsigned char parse_failed; /* the parser stopped on an error: nothing more is parsed */
  unsigned char logged;       /* the current response has its access log line */
  unsigned char prev_lf;      /* the input parsed so far ends in a line feed (and blanks) */
  int16_t warm_slot;          /* its place in listener->warm, or -1 */
  const char *exec_start;     /* the buffer given to the current llhttp_execute */
  union {                     /* the peer's address, taken at accept (family 0: none) */
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
  } peer;
};

/* ---- the Lua objects (src/http_request.c, src/http_response.c, src/http_lua.c) ---------- */

#define LS_REQ_MT "luasrv.Request"
#define LS_RES_MT "luasrv.Response"
#define LS_HEADERS_MT "luasrv.Headers"
#define LS_SENDFILE_MT "luasrv.SendFile"
#define LS_REQ_METHODS_KEY "luasrv.Request.methods"
/* res:write yields while more than this waits to be sent. */
#define LS_HTTP_WRITE_HIWAT (64 * 1024)

/* The Lua objects point at their connection while the request is current; at its end the
 * pointer is cleared, so a kept reference answers nil, "closed" and never touches a later
 * request's data. They need no finaliser: the handler's task holds them until the request
 * ends, and the end clears both links. Objects with __gc cost every minor collection of the
 * generational collector a walk, so two per request would be a steady price. */
/* The Lua objects of a request start with their class's tag (see ls_tagged). */
extern const char ls__req_tag, ls__res_tag, ls__hdr_tag;
struct ls_http_req_ud_s {
  const char *tag; /* &ls__req_tag */
  ls_http_conn_t *c;
  unsigned char has_cache; /* its field cache (user value LS_REQ_UV_CACHE) was made */
};
struct ls_http_res_ud_s {
  const char *tag; /* &ls__res_tag */
  ls_http_conn_t *c;
};
/* The request object's user values: fields set from Lua and cached tables (query,
 * cookies...), req.headers's view, req.params (set by the core's routing or the router). */
#define LS_REQ_UV_CACHE 1
#define LS_REQ_UV_HEADERS 2
#define LS_REQ_UV_PARAMS 3
#define LS_REQ_UVALUES 3
/* req.headers: a view of the parsed header fields (a lookup scans them; nothing is built per
 * field), with the values assigned to it kept in its user value (a table, made on the first
 * assignment). */
struct ls_http_hdr_ud_s {
  const char *tag; /* &ls__hdr_tag */
  ls_http_conn_t *c;
};

/* The connection of the request object at idx (NULL once its request ended); raises for
 * anything but a request. */
ls_http_conn_t *ls_http__req_conn(lua_State *L, int idx);
/* Registers the luasrv.Request and luasrv.Headers metatables and the request methods table. */
void ls_http__request_open(lua_State *L);
/* Registers luasrv.Response (and the sendfile state's metatable); sets core.http_sendfile in
 * the table at index `core`. */
void ls_http__response_open(lua_State *L, int core);
/* A status argument at idx: an integer from 100 to 999, or raises. */
int ls_http__check_status(lua_State *L, int idx);
/* Adds a header line "name: value" from the Lua values at the two indexes (validated). */
void ls_http__add_header_value(lua_State *L, ls_http_conn_t *c, int name_idx, int value_idx);
/* Appends the head of a streamed response (status, res_headers) to the output: chunked on
 * HTTP/1.1 unless a Content-Length was set, close-delimited on HTTP/1.0; sets head_sent. */
void ls_http__stream_head(ls_http_conn_t *c);
/* Appends one chunk (or, unchunked, the bytes) of a streamed body; through the deflate
 * stream when the response is compressed (finish: its last output). 0 or -1 (memory). */
int ls_http__stream_piece(ls_http_conn_t *c, const char *s, size_t n, int finish);
/* Ends a streamed response: the last of its compressed output, the last chunk. */
void ls_http__stream_end(ls_http_conn_t *c);

/* The value of a hex digit, or -1. */
static inline int ls_http__hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* ---- http_route.c ---- */
/* If the handler at stack index `app` is an app (luasrv.router) whose route for this request
 * the core can find as its dispatch would, and call straight: replaces it with the route's
 * function and returns 1, or 2 with the table of the route's parameters pushed. Otherwise
 * returns 0 and changes nothing. `routes_key` and `tree_key` are indexes of the strings
 * "routes" and "route_tree"; `methods` the index of the method names by llhttp's number + 1. */
int ls_http__route(lua_State *L, int app, int routes_key, int tree_key, int methods, int method,
                   const char *path, size_t path_len);

/* ---- http_server.c ---- */
/* src/http_parser.c: llhttp's callbacks for requests (a paused parser hands a complete head
 * or the end of a message back to ls_http__process). */
extern const llhttp_settings_t ls_http__parser_settings;
/* Runs llhttp over s[0..len), sets *used to what it took; pauses are resumed, upgrades the app
 * did not take are skipped. Returns HPE_OK, HPE_PAUSED or llhttp's error. */
llhttp_errno_t ls_http__parser_execute(ls_http_conn_t *c, const char *s, size_t len,
                                       size_t *used);
/* With a chunk-size line at the head of c->s.in: checks and strips its extensions. 1: parse
 * on; 0: wait for the rest of the line; else the status to refuse the request with. */
int ls_http__chunk_line(ls_http_conn_t *c);
/* The status a parse error is answered with (400, 501, 505, or a callback's own). */
int ls_http__parse_error_status(ls_http_conn_t *c, llhttp_errno_t err);
/* Sets the connection's deadline (head, keep-alive) `ms` from now; none on a virtual one. */
void ls_http__deadline(ls_http_conn_t *c, uint64_t ms);

/* src/http_server.c, for http_listen.c: a connection struct (virtual_conn: without a
 * socket), its end, and the listener's accept, close and resource-close. */
ls_http_conn_t *ls_http__conn_new(ls_http_listener_t *l, int virtual_conn);
void ls_http__conn_free(ls_http_conn_t *c);
void ls_http__listener_connection_cb(uv_stream_t *server, int status);
void ls_http__listener_close(ls_http_listener_t *l);
void ls_http__listener_res_close(ls_res_t *res);
/* http_lua.c's entry points for the connection cycle. */
extern const ls_http_hooks_t ls_http__lua_hooks;

void ls_http__process(ls_http_conn_t *c);
void ls_http__flush(ls_http_conn_t *c);
void ls_http__close(ls_http_conn_t *c);
/* Starts reading more of the body for a waiting req:body(). */
void ls_http__want_body(ls_http_conn_t *c);
/* The value of the first header named `name` (lower case), or NULL. */
const char *ls_http__header(ls_http_conn_t *c, const char *name, size_t name_len, size_t *len);
/* Writes the peer's address as text into out (INET6_ADDRSTRLEN bytes); "unix" on a
 * Unix-domain socket, `def` when unknown.
 * The address is the one taken at accept, so it is still there after the peer has gone. */
/* Writes the request target for a log line into out: escaped (log_escape's rules) and cut
 * to fit `size`, ending in "..." when cut. */
void ls_http__target_text(const ls_http_conn_t *c, char *out, size_t size);
void ls_http__peer_name(const ls_http_conn_t *c, char *out, size_t size, const char *def);

/* ---- http_message.c ---- */
/* "HTTP/1.1 404 Not Found\r\n" for a status, or NULL for one outside 100..599. */
const char *ls_http__status_line(int status, size_t *len);
/* Appends "Date: ...\r\n" (cached for the second). */
int ls_http__append_date(ls_buf_t *b, uv_loop_t *loop);
/* The "Date: ...\r\n" line for now (cached for the current second). */
const char *ls_http__date(uv_loop_t *loop, size_t *len);
/* 1 if the name is an RFC 9110 token; 1 if the value has no CR, LF or NUL. */
int ls_http__valid_name(const char *s, size_t len);
int ls_http__valid_value(const char *s, size_t len);
/* Appends a complete response head (and body unless is_head) with the given body. */
int ls_http__append_response(ls_http_conn_t *c, int status, const char *ctype, const char *body,
                             size_t body_len);
/* A complete error response (plain text), marking the connection to close if `close`. */
void ls_http__error_response(ls_http_conn_t *c, int status, int close);
/* For a response about to get its head, with Content-Type ctype (NULL: the one in
 * res_headers) and body length `length` (SIZE_MAX: streamed): 0 when compression does not
 * apply, 1 when it applies but the client does not take gzip (a Vary header is still due),
 * 2 to compress. */
int ls_http__gzip_decision(ls_http_conn_t *c, int status, const char *ctype, size_t length);
/* Appends res_headers to b, plus "Vary: Accept-Encoding" for a decision >= 1 and, for 2,
 * "Content-Encoding: gzip" with a strong ETag made weak (the compressed variant is another
 * representation, RFC 9110 §8.8.1). */
int ls_http__append_res_headers(ls_http_conn_t *c, ls_buf_t *b, int gzip_decision);

/* ---- http_log.c ---- */
/* Buffers the access log line of the finished request (written once per loop turn). */
void ls_http__access_log(ls_http_conn_t *c);
void ls_http__set_log_format(int json, int enabled);
/* Writes the buffered lines (at exit; also safe when nothing was logged). */
void ls_http_log_close(void);

/* ---- http_lua.c ---- */
/* Starts the handler task for the current request (its head is complete). */
void ls_http__dispatch(ls_http_conn_t *c);
/* Detaches the Lua objects of the current request. */
void ls_http__end_request(ls_http_conn_t *c);
/* Makes the request and response metatables, and adds to the table on top of L (the core
 * module) http_request_methods and http_response_methods (for methods written in Lua),
 * http_sendfile (res:sendfile itself), http_reject and http_tmpfile. */
void ls_http__open_lua(lua_State *L, ls_gen_t *gen);

/* ---- public ---- */
/* Sets core.http_relay (src/http_proxy.c, under srv.http.proxy) in the table on top of L. */
void ls_http_proxy_open(lua_State *L);
/* The proxy's filter of an upstream answer's fields (names in lower case, at `base`): each
 * kept one appended to `out` as a "name: value\r\n" line, less the hop-by-hop ones (those
 * RFC 9110 §7.6.1 names and those its Connection fields name) and Date and Server, which the
 * server writes itself; Content-Length is kept (and *has_clen set) unless `chunked`. 0, or -1
 * when out of memory. */
int ls_http__relay_fields(const char *base, const ls_http_header_t *fields, unsigned n,
                          int chunked, ls_buf_t *out, unsigned char *has_clen);
/* src/http_pool.c: the keep-alive pool of outbound connections, a luasrv.HTTPPool object.
 * take: pushes an idle connection (now in use) and returns 1, or returns 0. put: the
 * connection at `conn` is no longer in use; kept idle if `reusable` and it can be, else
 * closed. open: sets core.http_pool_* in the table on top of L (after ls_tcp_open). */
#define LS_HTTP_POOL_MT "luasrv.HTTPPool"
int ls_http_pool_take(lua_State *L, int pool);
void ls_http_pool_put(lua_State *L, int pool, int conn, int reusable);
void ls_http_pool_open(lua_State *L);
/* Adds srv.http functions (listen, inject) to the table on top of L. */
void ls_http_open(lua_State *L, ls_gen_t *gen);

#endif
