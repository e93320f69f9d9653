/* The response object of the HTTP server (luasrv.Response): status and headers, complete
 * answers (res:send, res:json, res:redirect), streaming (res:write, compressed through
 * http_gzip.c when it applies) and res:sendfile (sendfile(2) on a plain stream, read + write
 * over TLS). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/sendfile.h>
#define LS_HAVE_SENDFILE 1 /* Linux's sendfile(2): from a file to a socket, in the kernel */
#else
#define LS_HAVE_SENDFILE 0
#endif

#include "errors.h"
#include "fs.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "tls.h"

/* ---- response ----------------------------------------------------------------------------- */

const char ls__res_tag = 0;

static ls_http_res_ud_t *check_res(lua_State *L) {
  return ls_check_tagged(L, 1, &ls__res_tag, sizeof(ls_http_res_ud_t), LS_RES_MT);
}

/* The connection of a response that can still be changed, or raises. */
static ls_http_conn_t *res_open(lua_State *L, ls_http_res_ud_t *ud, const char *what) {
  if (ud->c == NULL)
    luaL_error(L, "%s: the request has ended", what);
  if (ud->c->answered || ud->c->head_sent)
    luaL_error(L, "%s: the response has already been sent", what);
  return ud->c;
}

int ls_http__check_status(lua_State *L, int idx) {
  lua_Integer status = luaL_checkinteger(L, idx);
  luaL_argcheck(L, status >= 100 && status <= 599, idx, "status must be from 100 to 599");
  return (int)status;
}

/* res:sent() -> true once the response (or the head of a streamed one) is on its way: later
 * status, header and send calls raise, and an error can no longer become a 500. */
static int l_res_sent(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  lua_pushboolean(L, ud->c == NULL || ud->c->answered || ud->c->head_sent);
  return 1;
}

/* res:status(code) -> res */
static int l_res_status(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "status");
  c->status = ls_http__check_status(L, 2);
  lua_settop(L, 1);
  return 1;
}

/* Whether s[0..n) is `lower` in any case (ASCII: header names are tokens). */
static int ascii_ieq(const char *s, const char *lower, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if ((s[i] | 0x20) != lower[i])
      return 0;
  return 1;
}

/* Validates and records one response header line; raises on bad input. */
static void add_header(lua_State *L, ls_http_conn_t *c, int name_idx, int value_idx) {
  size_t nlen, vlen;
  const char *name = luaL_checklstring(L, name_idx, &nlen);
  const char *value;
  char *p;
  if (!ls_http__valid_name(name, nlen))
    luaL_error(L, "invalid header name '%s'", name);
  if (lua_type(L, value_idx) != LUA_TSTRING && lua_type(L, value_idx) != LUA_TNUMBER)
    luaL_error(L, "header '%s': value must be a string or a number, not %s", name,
               luaL_typename(L, value_idx));
  value = lua_tolstring(L, value_idx, &vlen);
  if (!ls_http__valid_value(value, vlen))
    luaL_error(L, "header '%s': value contains CR, LF or NUL", name);
  if (nlen == 12 && ascii_ieq(name, "content-type", 12))
    c->has_ctype = 1;
  else if (nlen == 14 && ascii_ieq(name, "content-length", 14))
    c->has_clen = 1;
  if (ls_buf_reserve(&c->res_headers, nlen + vlen + 4) != 0)
    luaL_error(L, "not enough memory");
  p = c->res_headers.data + c->res_headers.end;
  memcpy(p, name, nlen);
  memcpy(p + nlen, ": ", 2);
  memcpy(p + nlen + 2, value, vlen);
  memcpy(p + nlen + 2 + vlen, "\r\n", 2);
  c->res_headers.end += nlen + vlen + 4;
}

/* Adds the header `name` with `value` (a string, number, or list of them for repeats). */
void ls_http__add_header_value(lua_State *L, ls_http_conn_t *c, int name_idx, int value_idx) {
  if (lua_istable(L, value_idx)) {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, value_idx);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, value_idx, i);
      add_header(L, c, name_idx, lua_gettop(L));
      lua_pop(L, 1);
    }
    return;
  }
  add_header(L, c, name_idx, value_idx);
}

/* res:header(name, value) -> res. Repeated calls add repeated fields. */
static int l_res_header(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "header");
  luaL_checkstring(L, 2);
  luaL_checkany(L, 3);
  ls_http__add_header_value(L, c, 2, 3);
  lua_settop(L, 1);
  return 1;
}

/* Writes the whole response now; later return values of the handler are ignored. */
static void res_send(ls_http_res_ud_t *ud, int status, const char *ctype, const char *body,
                     size_t len) {
  ud->c->answered = 1;
  ls_http__append_response(ud->c, status, ctype, body, len);
}

/* res:send([body]) -> res: the response, with the status set before (default 200). */
static int l_res_send(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "send");
  size_t len = 0;
  const char *body = luaL_optlstring(L, 2, "", &len);
  res_send(ud, c->status ? c->status : 200, "text/html; charset=utf-8", body, len);
  lua_settop(L, 1);
  return 1;
}

/* res:json(value [, status]) -> res: the value encoded as JSON. */
static int l_res_json(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "json");
  size_t len;
  const char *body;
  int status = lua_isnoneornil(L, 3) ? (c->status ? c->status : 200) : ls_http__check_status(L, 3);
  luaL_checkany(L, 2);
  body = ls_json_encode(L, 2, &len);
  res_send(ud, status, "application/json", body, len);
  lua_settop(L, 1);
  return 1;
}

/* res:redirect(url [, status]) -> res: a redirect (default 302) to url. */
static int l_res_redirect(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "redirect");
  int status = lua_isnoneornil(L, 3) ? 302 : ls_http__check_status(L, 3);
  luaL_checkstring(L, 2);
  luaL_argcheck(L, status >= 300 && status <= 399, 3, "redirect status must be 3xx");
  lua_pushliteral(L, "Location");
  add_header(L, c, lua_gettop(L), 2);
  res_send(ud, status, "text/plain; charset=utf-8", "", 0);
  lua_settop(L, 1);
  return 1;
}

void ls_http__stream_head(ls_http_conn_t *c) {
  ls_buf_t *b = &c->s.out;
  size_t line_len;
  int status = c->status ? c->status : 200;
  const char *line = ls_http__status_line(status, &line_len);
  c->status = status;
  c->head_sent = 1;
  ls_buf_append(b, line, line_len);
  ls_buf_append(b, "Server: luasrv\r\n", 16);
  ls_http__append_date(b, c->rt->loop);
  if (!c->has_ctype)
    ls_buf_append(b, "Content-Type: text/html; charset=utf-8\r\n", 40);
  if (status < 200 || status == 204 || status == 304) {
    /* No body to frame (RFC 9112 §6.1, §6.3): what the handler writes is dropped, as for
     * HEAD. (The flag is the request's; the next request's head sets it again.) */
    c->is_head = 1;
  } else if (!c->has_clen) {
    if (c->parser.http_minor >= 1) {
      c->chunked = 1;
      ls_buf_append(b, "Transfer-Encoding: chunked\r\n", 28);
    } else {
      c->keep_alive = 0;
    }
  }
  {
    /* A streamed body of an eligible type is compressed as it goes (its length is not
     * known, so min_size does not apply); only with chunked framing, which ends it. */
    int decision = c->chunked ? ls_http__gzip_decision(c, status, c->has_ctype ? NULL :
                                                       "text/html", SIZE_MAX) : 0;
    if (decision == 2 && !c->is_head && (c->gz = ls_gzip_stream_new(c->listener->gzip)) == NULL)
      decision = 1;
    ls_http__append_res_headers(c, b, decision);
  }
  ls_buf_append(b, c->keep_alive ? "" : "Connection: close\r\n", c->keep_alive ? 0 : 19);
  ls_buf_append(b, "\r\n", 2);
}

int ls_http__stream_piece(ls_http_conn_t *c, const char *s, size_t n, int finish) {
  ls_buf_t *out = &c->s.out;
  ls_buf_t gz;
  char size[24];
  int rc = 0;
  if (c->gz != NULL) {
    ls_buf_init(&gz);
    if (ls_gzip_stream_write(c->gz, s, n, finish, &gz) != 0) {
      ls_buf_free(&gz);
      return -1;
    }
    s = ls_buf_head(&gz);
    n = ls_buf_len(&gz);
  }
  if (n > 0) {
    if (c->chunked) {
      int len = snprintf(size, sizeof size, "%zx\r\n", n);
      rc |= ls_buf_append(out, size, (size_t)len);
    }
    rc |= ls_buf_append(out, s, n);
    if (c->chunked)
      rc |= ls_buf_append(out, "\r\n", 2);
  }
  if (c->gz != NULL)
    ls_buf_free(&gz);
  return rc;
}

static int res_write_k(lua_State *L, int status, lua_KContext ctx) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = ud->c;
  ls_task_t *task;
  (void)status;
  (void)ctx;
  if (c == NULL || c->closing || c->s.write_err != 0) {
    int err = c != NULL && c->s.write_err ? c->s.write_err : LS_ECLOSED;
    return ls_push_error(L, err == UV_ETIMEDOUT ? LS_ETIMEDOUT : err);
  }
  task = ls_task_check(c->gen, L, "write");
  if (c->writer == task)
    c->writer = NULL;
  if (!c->virtual_conn && ls_stream_unsent(&c->s) > LS_HTTP_WRITE_HIWAT) {
    c->writer = task;
    return ls_task_wait(task, -1, 0, res_write_k);
  }
  lua_settop(L, 1);
  return 1;
}

/* res:write(...) -> res: streams the pieces (the head goes first, on the first call). Yields
 * while the client reads slower than the handler writes. */
static int l_res_write(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = ud->c;
  int i, n = lua_gettop(L);
  size_t total = 0;
  for (i = 2; i <= n; i++) {
    size_t len;
    luaL_checklstring(L, i, &len);
    total += len;
  }
  if (c == NULL || c->closing)
    return ls_push_error(L, LS_ECLOSED);
  if (c->answered)
    return luaL_error(L, "write: the response has already been sent");
  if (!c->head_sent)
    ls_http__stream_head(c);
  if (total > 0 && !c->is_head) {
    const char *s;
    size_t len;
    if (n > 2)
      lua_concat(L, n - 1); /* the pieces as one chunk */
    s = lua_tolstring(L, 2, &len);
    if (ls_http__stream_piece(c, s, len, 0) != 0)
      return luaL_error(L, "not enough memory");
    c->bytes_out += total;
  }
  ls_http__flush(c);
  return res_write_k(L, LUA_OK, 0);
}

/* ---- res:sendfile ------------------------------------------------------------------------- */

/* A file of at most this size goes out in one piece with the head (one read, one write for
 * the whole response); a larger one is read in pieces of this size as the client takes them. */
#define LS_SENDFILE_CHUNK (64 * 1024)
/* After this many bytes read without waiting, a file's task gives the loop a turn, so other
 * connections are served and one fast client cannot run the task past its CPU budget. */
#define LS_SENDFILE_TURN (1024 * 1024)

/* The state of one res:sendfile, a userdata on the task's stack: it survives the yields and
 * its __gc closes a descriptor the call opened itself, however the task ends. */
typedef struct sendfile_s {
  int fd;
  int own_fd;          /* opened from a path by this call */
  int64_t offset;      /* next byte of the file to read */
  int64_t remaining;   /* bytes still to read */
  int64_t since_turn;  /* bytes read since the task last gave the loop a turn */
} sendfile_t;

/* The stack index of the state (after res, file, offset, length, content type). */
#define LS_SENDFILE_IDX 6

static void sendfile_release(sendfile_t *sf) {
  if (sf->own_fd && sf->fd >= 0)
    close(sf->fd);
  sf->fd = -1;
  sf->own_fd = 0;
}

static int l_sendfile_gc(lua_State *L) {
  sendfile_release(luaL_checkudata(L, 1, LS_SENDFILE_MT));
  return 0;
}

/* Appends `n` bytes of the file from `offset` to the connection's output. Returns 0, or a
 * negative error code (UV_EOF if the file is now shorter). */
static int read_into_out(ls_http_conn_t *c, int fd, int64_t offset, size_t n) {
  if (ls_buf_reserve(&c->s.out, n) != 0)
    return LS_ENOMEM;
  while (n > 0) {
    ssize_t r = pread(fd, c->s.out.data + c->s.out.end, n, (off_t)offset);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return uv_translate_sys_error(errno);
    }
    if (r == 0)
      return UV_EOF;
    c->s.out.end += (size_t)r;
    offset += r;
    n -= (size_t)r;
  }
  return 0;
}

static int sendfile_k(lua_State *L, int status, lua_KContext ctx) {
  ls_http_res_ud_t *ud = check_res(L);
  sendfile_t *sf = luaL_checkudata(L, LS_SENDFILE_IDX, LS_SENDFILE_MT);
  ls_http_conn_t *c = ud->c;
  ls_task_t *task;
  (void)status;
  (void)ctx;
  if (c == NULL || c->closing || c->s.write_err != 0) {
    sendfile_release(sf);
    return ls_push_error(L, c != NULL && c->s.write_err ? c->s.write_err : LS_ECLOSED);
  }
  task = ls_task_current(c->gen, L);
  if (task != NULL && c->writer == task)
    c->writer = NULL;
  while (sf->remaining > 0) {
    size_t n = sf->remaining < LS_SENDFILE_CHUNK ? (size_t)sf->remaining : LS_SENDFILE_CHUNK;
    int err;
    /* sendfile(2) copies from the file to the socket in the kernel: only on a plain stream
     * (over TLS the bytes must be encrypted here, so they go read + write in chunks). */
    int kernel_copy = LS_HAVE_SENDFILE && c->s.tls == NULL;
    if (!c->virtual_conn) {
      if (ls_stream_unsent(&c->s) > LS_HTTP_WRITE_HIWAT ||
          (kernel_copy && (c->s.writing || ls_buf_len(&c->s.out) > 0))) {
        /* With sendfile(2), wait for what is queued to drain before sending more. */
        task = ls_task_check(c->gen, L, "sendfile");
        c->writer = task;
        return ls_task_wait(task, -1, 0, sendfile_k);
      }
      if (sf->since_turn >= LS_SENDFILE_TURN) {
        ls_task_check(c->gen, L, "sendfile");
        sf->since_turn = 0;
        return lua_yieldk(L, 0, 0, sendfile_k); /* the runtime resumes it on the next turn */
      }
#if LS_HAVE_SENDFILE
      if (kernel_copy) {
        /* Nothing is queued, so bytes written to the socket now cannot overtake any: the
         * kernel copies from the page cache to the socket, no pass through this process. */
        size_t want = sf->remaining < LS_SENDFILE_TURN ? (size_t)sf->remaining : LS_SENDFILE_TURN;
        uv_os_fd_t sock;
        off_t off = (off_t)sf->offset;
        ssize_t r = -1;
        if (uv_fileno((uv_handle_t *)&c->s.u.tcp, &sock) == 0) {
          do
            r = sendfile(sock, sf->fd, &off, want);
          while (r < 0 && errno == EINTR);
        }
        if (r > 0) {
          sf->offset += r;
          sf->remaining -= r;
          sf->since_turn += r;
          continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EINVAL && errno != ENOSYS) {
          err = uv_translate_sys_error(errno);
          sendfile_release(sf);
          c->s.write_err = err;
          ls_http__close(c);
          return ls_push_error(L, err);
        }
        /* The socket is full (or sendfile cannot be used here): the next piece goes through
         * the output buffer, whose write completing tells that the socket has room again.
         * A file that ended early (r == 0) fails in that read below. */
      }
#endif
    }
    err = read_into_out(c, sf->fd, sf->offset, n);
    if (err != 0) {
      /* Part of the body is out and its length was promised: the response cannot be
       * finished, so the connection ends here. */
      ls_log(LS_LOG_ERROR, "sendfile: %s after %lld bytes; closing the connection",
             ls_strerror(err), (long long)sf->offset);
      sendfile_release(sf);
      c->keep_alive = 0;
      ls_http__close(c);
      return ls_push_error(L, err);
    }
    sf->offset += (int64_t)n;
    sf->remaining -= (int64_t)n;
    sf->since_turn += (int64_t)n;
    ls_http__flush(c);
  }
  sendfile_release(sf);
  lua_settop(L, 1);
  return 1;
}

/* res:sendfile(file [, offset [, length [, content_type]]]) -> res | nil, message, code.
 * Sends the whole response: the status and headers set before (status 200 by default), a
 * Content-Length, and bytes [offset, offset + length) of the file as the body (none for HEAD,
 * 204 and 304). `file` is a path or a luasrv.File (which stays the caller's to close);
 * `content_type` is used when no Content-Type header was set (default
 * application/octet-stream). A file up to LS_SENDFILE_CHUNK goes out with the head in one
 * piece; a larger one is read in bounded pieces while the client takes them, the task waiting
 * whenever more than LS_HTTP_WRITE_HIWAT bytes are queued, so memory stays flat whatever the
 * file's size. A file that cannot be opened or read before anything was queued returns
 * nil, message, code and leaves the response unsent; a failure later closes the connection.
 * Raises on misuse: a range outside the file, a response already sent, Content-Length set. */
static int l_res_sendfile(lua_State *L) {
  ls_http_res_ud_t *ud = check_res(L);
  ls_http_conn_t *c = res_open(L, ud, "sendfile");
  lua_Integer offset = luaL_optinteger(L, 3, 0);
  lua_Integer length = luaL_optinteger(L, 4, -1);
  const char *ctype = luaL_optstring(L, 5, "application/octet-stream");
  sendfile_t local, *sf = &local;
  int64_t size;
  size_t mark, n;
  int status, saved_status, err, has_body;
  unsigned char was_head;
  luaL_argcheck(L, offset >= 0, 3, "offset must not be negative");
  if (c->has_clen)
    return luaL_error(L, "sendfile: Content-Length is set by sendfile, not by a header");
  lua_settop(L, LS_SENDFILE_IDX - 1);
  memset(&local, 0, sizeof local);
  if (lua_type(L, 2) == LUA_TSTRING) {
    /* A descriptor this call opens is owned by a userdata from the start, so that it is
     * closed even if something below raises. */
    sf = lua_newuserdatauv(L, sizeof *sf, 0);
    memset(sf, 0, sizeof *sf);
    sf->fd = -1;
    luaL_setmetatable(L, LS_SENDFILE_MT);
    err = ls_fs_open_regular(lua_tostring(L, 2), &sf->fd, &size);
    if (err != 0)
      return ls_push_error(L, err);
    sf->own_fd = 1;
  } else {
    /* The caller's file: the common case (static files) makes no userdata unless the file
     * is large enough to need waiting. */
    sf->fd = ls_fs_check_file(L, 2, &size);
  }
  if (offset > size) {
    sendfile_release(sf);
    return luaL_argerror(L, 3, "offset beyond the end of the file");
  }
  if (length < 0)
    length = size - offset;
  else if (length > size - offset) {
    sendfile_release(sf);
    return luaL_argerror(L, 4, "range beyond the end of the file");
  }
  /* The head, with Content-Length for `length` bytes: append_response writes no body for a
   * HEAD request, so it is asked for a HEAD's head and the body follows from the file. */
  status = c->status ? c->status : 200;
  saved_status = c->status;
  mark = ls_buf_len(&c->s.out);
  was_head = c->is_head;
  c->is_head = 1;
  err = ls_http__append_response(c, status, ctype, NULL, (size_t)length);
  c->is_head = was_head;
  if (err != 0) {
    c->s.out.end = c->s.out.start + mark;
    sendfile_release(sf);
    return luaL_error(L, "not enough memory");
  }
  c->answered = 1;
  has_body = status >= 200 && status != 204 && status != 304;
  if (c->is_head || !has_body || length == 0) {
    sendfile_release(sf);
    lua_settop(L, 1);
    return 1;
  }
  /* The first piece is read before anything can leave, so a file that cannot be read is
   * still a plain failure: the head is taken back and the handler may answer otherwise. */
  n = length < LS_SENDFILE_CHUNK ? (size_t)length : LS_SENDFILE_CHUNK;
  err = read_into_out(c, sf->fd, offset, n);
  if (err == 0 && (int64_t)n < length && sf == &local) {
    /* Large: the transfer outlives this call, and the caller's file may be closed meanwhile
     * (a root's cache closes files it drops), so it reads a descriptor of its own. */
    int fd = fcntl(sf->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      err = uv_translate_sys_error(errno);
    } else {
      sf = lua_newuserdatauv(L, sizeof *sf, 0);
      memset(sf, 0, sizeof *sf);
      sf->fd = fd;
      sf->own_fd = 1;
      luaL_setmetatable(L, LS_SENDFILE_MT);
    }
  }
  if (err != 0) {
    c->s.out.end = c->s.out.start + mark;
    c->status = saved_status;
    c->bytes_out = 0;
    c->answered = 0;
    sendfile_release(sf);
    return ls_push_error(L, err);
  }
  if ((int64_t)n == length) {
    /* Small: it leaves with whatever else this turn of the loop answers. */
    sendfile_release(sf);
    lua_settop(L, 1);
    return 1;
  }
  sf->offset = offset + (int64_t)n;
  sf->remaining = length - (int64_t)n;
  sf->since_turn = (int64_t)n;
  ls_http__flush(c);
  return sendfile_k(L, LUA_OK, 0);
}

void ls_http__stream_end(ls_http_conn_t *c) {
  if (c->gz != NULL)
    ls_http__stream_piece(c, "", 0, 1); /* the end of the gzip member */
  if (c->chunked && !c->is_head)
    ls_buf_append(&c->s.out, "0\r\n\r\n", 5);
}

void ls_http__response_open(lua_State *L, int core) {
  static const luaL_Reg res_meth[] = {{"status", l_res_status}, {"sent", l_res_sent},
                                      {"header", l_res_header},
                                      {"write", l_res_write},   {"send", l_res_send},
                                      {"json", l_res_json},     {"redirect", l_res_redirect},
                                      {"sendfile", l_res_sendfile}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_RES_MT)) {
    lua_newtable(L);
    luaL_setfuncs(L, res_meth, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LS_SENDFILE_MT)) {
    lua_pushcfunction(L, l_sendfile_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_res_sendfile); /* also here: lua/luasrv/http.lua wraps the method */
  lua_setfield(L, core, "http_sendfile");
}
