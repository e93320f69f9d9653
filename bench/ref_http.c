/* ref_http: the reference "practical limit" HTTP server for scripts/bench.
 *
 * The same stack as luasrv (libuv for the loop and sockets, llhttp for parsing) with nothing on
 * top: every request, whatever its method or path, gets one fixed 200 response. It shows what
 * one libuv loop on one core can do with this parser, so luasrv's numbers can be read against it.
 *
 * Usage: ref_http [--lua | --lua-handler] [--body TEXT | --body-file PATH] [--content-type TYPE]
 *                 [port]
 *   port 0 (the default): the OS picks. Listens on 127.0.0.1 and prints
 *   "listening on http://127.0.0.1:PORT" on stdout, flushed, once it accepts connections.
 *   --body TEXT         the response body (default "hello world")
 *   --body-file PATH    the body is the file's contents, read once at startup
 *   --content-type T    the Content-Type (default "text/html; charset=utf-8", as luasrv's)
 *   --lua               per request, one lua_pcall of a Lua function that returns the body
 *                       string: the cost of crossing into Lua and back, done as cheaply as it
 *                       can be done (a registry ref to the function, no arguments, no
 *                       traceback handler, the returned string copied straight into the reply).
 *   --lua-handler       per request, bench/bench_app.lua's GET / handler (it reads the Host
 *                       header and the method and returns status, headers and body), given the
 *                       cheapest request a server could give it: a plain table
 *                       { method = ..., headers = { host = ... } } with the Host value taken
 *                       from the request; the returned headers are written with lua_next. The
 *                       floor of any server that runs this handler on this Lua (not a peer:
 *                       it has no request object, router, coroutine or error handling).
 *
 * The response carries Server, Date (refreshed once a second), Content-Type and Content-Length,
 * like luasrv's and nginx's. A request with "Connection: close" (or HTTP/1.0 without keep-alive)
 * is answered with "Connection: close" and the connection is shut down after the reply; a parse
 * error gets a 400 and the same. SIGTERM and SIGINT end it (the default action).
 *
 * How it is built to be fast, and why:
 *   - one static read buffer for all connections: llhttp is a streaming parser and nothing
 *     here keeps a pointer into the input, so a read is parsed completely before read_cb
 *     returns and the buffer is free for the next connection's read; an idle connection costs
 *     only its small struct;
 *   - all responses to one read (16 of them when the client pipelines 16) are appended to one
 *     static output buffer and sent with a single uv_try_write; only what the kernel did not
 *     take is copied into a heap request and queued with uv_write;
 *   - reading pauses while more than WRITE_QUEUE_MAX bytes are queued for a connection, so a
 *     client that pipelines without reading cannot grow the server's memory without bound.
 */
#include <llhttp.h>
#include <uv.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READ_BUF_SIZE (64 * 1024)
#define OUT_BUF_SIZE (64 * 1024)
#define WRITE_QUEUE_MAX (1024 * 1024)
#define HEAD_MAX 512

#define HOST_MAX 256

typedef struct {
  uv_tcp_t tcp; /* first member: the handle pointer is the connection pointer */
  llhttp_t parser;
  uv_shutdown_t shutdown_req;
  int reading;   /* uv_read_start is in effect */
  int finishing; /* a shutdown or close has begun: no more input is processed */
  int close_after; /* the current request asked for the connection to close */
  /* --lua-handler: the current request's Host value */
  char field[5];       /* the first bytes of the field name being read */
  size_t field_len;
  size_t host_len;
  char host[HOST_MAX];
} http_conn_t;

/* A queued write owns a copy of the bytes it sends; freed in its write_cb. */
typedef struct {
  uv_write_t req;
  char data[];
} http_write_t;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_timer_t date_timer;
static llhttp_settings_t settings;

static const char *body = "hello world";
static size_t body_len;
static const char *content_type = "text/html; charset=utf-8";
static lua_State *L; /* --lua: the state holding the body function */
static int body_fn_ref = LUA_NOREF;
static int lua_handler; /* --lua-handler: the function takes a request and returns 3 values */
static char handler_head[HEAD_MAX]; /* --lua-handler: status line, Server, Date */
static size_t handler_head_len;

/* The response up to and including "Content-Length: " (date included), rebuilt every second;
 * with a fixed body also the whole response, so that a fixed reply is one memcpy. */
static char head[HEAD_MAX];
static size_t head_len;
static char *fixed_response;
static size_t fixed_len;

static char read_buf[READ_BUF_SIZE];
static char out_buf[OUT_BUF_SIZE];
static size_t out_len;
static http_conn_t *out_conn; /* the connection out_buf is being filled for */

static const char bad_request[] = "HTTP/1.1 400 Bad Request\r\nServer: ref_http\r\n"
                                  "Content-Length: 0\r\nConnection: close\r\n\r\n";
static const char server_error[] = "HTTP/1.1 500 Internal Server Error\r\nServer: ref_http\r\n"
                                   "Content-Length: 0\r\nConnection: close\r\n\r\n";

static void die(const char *what, const char *detail) {
  fprintf(stderr, "ref_http: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

static void build_head(void) {
  char date[64];
  time_t now = time(NULL);
  struct tm tm;
  int n;
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  n = snprintf(head, sizeof head,
               "HTTP/1.1 200 OK\r\nServer: ref_http\r\nDate: %s\r\nContent-Type: %s\r\n"
               "Content-Length: ",
               date, content_type);
  if (n < 0 || (size_t)n >= sizeof head)
    die("--content-type is too long", NULL);
  head_len = (size_t)n;
  n = snprintf(handler_head, sizeof handler_head,
               "HTTP/1.1 200 OK\r\nServer: ref_http\r\nDate: %s\r\n", date);
  handler_head_len = (size_t)n;
  if (L == NULL) {
    n = snprintf(fixed_response + head_len, 32, "%zu\r\n\r\n", body_len);
    memcpy(fixed_response, head, head_len);
    memcpy(fixed_response + head_len + (size_t)n, body, body_len);
    fixed_len = head_len + (size_t)n + body_len;
  }
}

static void date_timer_cb(uv_timer_t *timer) {
  (void)timer;
  build_head();
}

static void conn_close_cb(uv_handle_t *handle) {
  free(handle); /* the tcp handle is the first member of http_conn_t */
}

/* Closes at once; queued writes are cancelled and their callbacks fire first. */
static void conn_abort(http_conn_t *c) {
  c->finishing = 1;
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status) {
  http_conn_t *c = req->data;
  (void)status; /* closing either way */
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  (void)suggested;
  buf->base = read_buf;
  buf->len = sizeof read_buf;
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_write_cb(uv_write_t *req, int status) {
  http_conn_t *c = req->data;
  free(req);
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

/* Sends len bytes: as much as the kernel takes now, the rest copied and queued (uv_try_write
 * answers UV_EAGAIN while earlier writes are queued, so order is kept). Returns 0 or a negative
 * libuv error after which the connection must be aborted. */
static int conn_send(http_conn_t *c, const char *data, size_t len) {
  http_write_t *w;
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  int n;

  if (len == 0)
    return 0;
  n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
  if (n < 0 && n != UV_EAGAIN)
    return n;
  if (n > 0) {
    data += n;
    len -= (size_t)n;
  }
  if (len == 0)
    return 0;
  w = malloc(sizeof *w + len);
  if (w == NULL)
    return UV_ENOMEM;
  memcpy(w->data, data, len);
  w->req.data = c;
  buf = uv_buf_init(w->data, (unsigned)len);
  n = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, conn_write_cb);
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

static int flush_out(void) {
  int err = 0;
  if (out_len > 0 && out_conn != NULL)
    err = conn_send(out_conn, out_buf, out_len);
  out_len = 0;
  return err;
}

/* Appends to the output of the read being processed; flushes first when it would not fit, and
 * sends a piece larger than the whole buffer directly. Returns 0 or a negative libuv error. */
static int out_append(const char *data, size_t len) {
  int err;
  if (out_len + len > sizeof out_buf) {
    err = flush_out();
    if (err != 0)
      return err;
    if (len > sizeof out_buf)
      return conn_send(out_conn, data, len);
  }
  memcpy(out_buf + out_len, data, len);
  out_len += len;
  return 0;
}

/* Writes "<len>\r\n[Connection: close\r\n]\r\n" into out (40 bytes are enough) and returns
 * its length: the end of the header section, without printf's cost on every request. */
static int format_tail(char *out, size_t len, int close_after) {
  static const char conn_close[] = "\r\nConnection: close";
  char digits[24];
  int nd = 0, n = 0;
  do {
    digits[nd++] = (char)('0' + len % 10);
    len /= 10;
  } while (len > 0);
  while (nd > 0)
    out[n++] = digits[--nd];
  if (close_after) {
    memcpy(out + n, conn_close, sizeof conn_close - 1);
    n += (int)sizeof conn_close - 1;
  }
  memcpy(out + n, "\r\n\r\n", 4);
  return n + 4;
}

/* --lua-handler: the Host field's value, in one piece or several. */
static int on_message_begin(llhttp_t *parser) {
  http_conn_t *c = parser->data;
  c->host_len = 0;
  c->field_len = 0;
  return 0;
}

static int on_header_field(llhttp_t *parser, const char *at, size_t len) {
  http_conn_t *c = parser->data;
  for (size_t i = 0; i < len; i++, c->field_len++)
    if (c->field_len < sizeof c->field)
      c->field[c->field_len] = (char)(at[i] | 0x20);
  return 0;
}

static int is_host_field(const http_conn_t *c) {
  return c->field_len == 4 && memcmp(c->field, "host", 4) == 0;
}

static int on_header_value(llhttp_t *parser, const char *at, size_t len) {
  http_conn_t *c = parser->data;
  if (is_host_field(c) && c->host_len + len <= HOST_MAX) {
    memcpy(c->host + c->host_len, at, len);
    c->host_len += len;
  }
  return 0;
}

static int on_header_value_complete(llhttp_t *parser) {
  ((http_conn_t *)parser->data)->field_len = 0;
  return 0;
}

/* --lua-handler: calls the handler with the request as a table and appends its answer. */
static int handler_response(llhttp_t *parser, http_conn_t *c) {
  const char *b;
  size_t blen;
  char line[HEAD_MAX], tail[40];
  int n;
  lua_rawgeti(L, LUA_REGISTRYINDEX, body_fn_ref);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, llhttp_method_name((llhttp_method_t)parser->method));
  lua_setfield(L, -2, "method");
  lua_createtable(L, 0, 1);
  lua_pushlstring(L, c->host, c->host_len);
  lua_setfield(L, -2, "host");
  lua_setfield(L, -2, "headers");
  if (lua_pcall(L, 1, 3, 0) != LUA_OK || lua_tointeger(L, -3) != 200 || !lua_istable(L, -2) ||
      (b = lua_tolstring(L, -1, &blen)) == NULL) {
    lua_settop(L, 0);
    c->close_after = 1;
    return out_append(server_error, sizeof server_error - 1);
  }
  if (out_append(handler_head, handler_head_len) != 0)
    return -1;
  lua_pushnil(L);
  while (lua_next(L, -3) != 0) {
    size_t nl, vl;
    const char *name = lua_tolstring(L, -2, &nl), *value = lua_tolstring(L, -1, &vl);
    if (name == NULL || value == NULL || nl + vl + 4 > sizeof line)
      return -1;
    memcpy(line, name, nl);
    memcpy(line + nl, ": ", 2);
    memcpy(line + nl + 2, value, vl);
    memcpy(line + nl + 2 + vl, "\r\n", 2);
    if (out_append(line, nl + vl + 4) != 0)
      return -1;
    lua_pop(L, 1);
  }
  n = format_tail(tail, blen, c->close_after);
  if (out_append("Content-Length: ", 16) != 0 || out_append(tail, (size_t)n) != 0 ||
      out_append(b, blen) != 0)
    return -1;
  lua_settop(L, 0);
  return 0;
}

/* One complete request: append its response. */
static int on_message_complete(llhttp_t *parser) {
  http_conn_t *c = parser->data;
  const char *b = body;
  size_t blen = body_len;
  char tail[40];
  int n;

  if (lua_handler) {
    if (!llhttp_should_keep_alive(parser))
      c->close_after = 1;
    if (handler_response(parser, c) != 0)
      return -1;
    return c->close_after ? HPE_PAUSED : 0;
  }
  if (L != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, body_fn_ref);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK || (b = lua_tolstring(L, -1, &blen)) == NULL) {
      lua_settop(L, 0);
      c->close_after = 1;
      return out_append(server_error, sizeof server_error - 1) == 0 ? HPE_PAUSED : -1;
    }
  }
  if (!llhttp_should_keep_alive(parser))
    c->close_after = 1;
  if (L == NULL && !c->close_after) {
    n = out_append(fixed_response, fixed_len);
  } else {
    n = format_tail(tail, blen, c->close_after);
    if (out_append(head, head_len) != 0 || out_append(tail, (size_t)n) != 0)
      n = -1;
    else
      n = out_append(b, blen);
  }
  if (L != NULL)
    lua_settop(L, 0);
  if (n != 0)
    return -1;
  /* After a "Connection: close" request nothing more is read. */
  return c->close_after ? HPE_PAUSED : 0;
}

/* Ends the connection gracefully: stop reading, let queued replies go out, then close. */
static void conn_finish(http_conn_t *c) {
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

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  http_conn_t *c = (http_conn_t *)stream;
  llhttp_errno_t err;

  if (c->finishing)
    return;
  if (nread < 0) {
    conn_abort(c); /* EOF or an error: nothing is owed to a peer that is gone */
    return;
  }
  if (nread == 0)
    return; /* EAGAIN */
  out_conn = c;
  out_len = 0;
  err = llhttp_execute(&c->parser, buf->base, (size_t)nread);
  if (err != HPE_OK && err != HPE_PAUSED) {
    c->close_after = 1; /* the answers so far, then a 400, then the connection ends */
    if (out_append(bad_request, sizeof bad_request - 1) != 0) {
      out_conn = NULL;
      conn_abort(c);
      return;
    }
  }
  if (flush_out() != 0) {
    out_conn = NULL;
    conn_abort(c);
    return;
  }
  out_conn = NULL;
  if (c->close_after)
    conn_finish(c);
}

static void server_connection_cb(uv_stream_t *listener, int status) {
  http_conn_t *c;

  if (status != 0) {
    fprintf(stderr, "ref_http: accept: %s\n", uv_strerror(status));
    return;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL) {
    fprintf(stderr, "ref_http: out of memory\n");
    return;
  }
  uv_tcp_init(loop, &c->tcp);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1); /* as luasrv and nginx (tcp_nodelay on) do */
  llhttp_init(&c->parser, HTTP_REQUEST, &settings);
  c->parser.data = c;
  if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) != 0) {
    conn_abort(c);
    return;
  }
  c->reading = 1;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *data;
  long size;
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
    die("cannot read --body-file", path);
  data = malloc((size_t)size + 1);
  if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size)
    die("cannot read --body-file", path);
  fclose(f);
  data[size] = '\0';
  *len = (size_t)size;
  return data;
}

/* --lua: a state with the standard libraries and one function, `return body`, whose body is
 * an upvalue; kept in the registry so that a request costs one rawgeti and one pcall. */
static void setup_lua(void) {
  static const char body_chunk[] = "local body = ...\nreturn function() return body end\n";
  /* bench/bench_app.lua's GET / handler, as written there */
  static const char handler_chunk[] =
      "return function(req)\n"
      "  local host = req.headers.host or \"unknown\"\n"
      "  return 200, { [\"Content-Type\"] = \"text/plain\" }, \"Hello from \" .. host .. \" (\" .. "
      "req.method .. \")\\n\"\n"
      "end\n";
  const char *chunk = lua_handler ? handler_chunk : body_chunk;
  size_t chunk_len = lua_handler ? sizeof handler_chunk - 1 : sizeof body_chunk - 1;
  L = luaL_newstate();
  if (L == NULL)
    die("cannot create a Lua state", NULL);
  luaL_openlibs(L);
  if (luaL_loadbuffer(L, chunk, chunk_len, "=ref_http") != LUA_OK)
    die("cannot load the body function", lua_tostring(L, -1));
  lua_pushlstring(L, body, body_len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    die("cannot create the body function", lua_tostring(L, -1));
  body_fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void usage(void) {
  fprintf(stderr, "usage: ref_http [--lua | --lua-handler] [--body TEXT | --body-file PATH] "
                  "[--content-type TYPE] [port]\n");
  exit(2);
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int namelen = (int)sizeof bound;
  long port = 0;
  int use_lua = 0, i, err;
  char *end;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--lua") == 0) {
      use_lua = 1;
    } else if (strcmp(argv[i], "--lua-handler") == 0) {
      use_lua = lua_handler = 1;
    } else if (strcmp(argv[i], "--body") == 0 && i + 1 < argc) {
      body = argv[++i];
      body_len = strlen(body);
    } else if (strcmp(argv[i], "--body-file") == 0 && i + 1 < argc) {
      body = read_file(argv[++i], &body_len);
    } else if (strcmp(argv[i], "--content-type") == 0 && i + 1 < argc) {
      content_type = argv[++i];
    } else if (argv[i][0] != '-' && i == argc - 1) {
      port = strtol(argv[i], &end, 10);
      if (*end != '\0' || port < 0 || port > 65535)
        usage();
    } else {
      usage();
    }
  }
  if (body_len == 0)
    body_len = strlen(body);
  signal(SIGPIPE, SIG_IGN); /* a peer that vanished is an EPIPE from write, not a signal */

  if (use_lua)
    setup_lua();
  else if ((fixed_response = malloc(HEAD_MAX + 32 + body_len)) == NULL)
    die("out of memory", NULL);
  build_head();

  llhttp_settings_init(&settings);
  settings.on_message_complete = on_message_complete;
  if (lua_handler) {
    settings.on_message_begin = on_message_begin;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
  }

  loop = uv_default_loop();
  uv_timer_init(loop, &date_timer);
  uv_timer_start(&date_timer, date_timer_cb, 1000, 1000);
  uv_unref((uv_handle_t *)&date_timer);
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", (int)port, &addr);
  err = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&server, 511, server_connection_cb);
  if (err == 0)
    err = uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &namelen);
  if (err != 0)
    die("cannot listen on 127.0.0.1", uv_strerror(err));
  printf("listening on http://127.0.0.1:%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
