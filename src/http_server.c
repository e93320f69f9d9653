#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "errors.h"
#include "http.h"
#include "log.h"
#include "workers.h"

#define LS_HTTP_LISTENER_MT "luasrv.HttpListener"
/* Input read ahead of the parser while a handler runs (pipelined requests wait in it). */
#define LS_HTTP_READ_AHEAD (64 * 1024)
/* After the last response of a connection, how long unread input is drained before closing,
 * so the peer is not sent a reset that could destroy the response in flight. */
#define LS_HTTP_LINGER_MS 2000

typedef struct ls_http_listener_ud_s {
  ls_http_listener_t *listener; /* checked with ls_listener_alive before use */
  uint64_t id;                  /* the listener's id when the object was made */
  ls_gen_t *gen;
} listener_ud_t;

static void conn_after_input(ls_http_conn_t *c);
static void conn_timer_cb(uv_timer_t *t);

/* Sets the connection's deadline `ms` from now. The timer is lazy: it is started only when
 * idle and, on firing early, re-armed for what is left, so a busy keep-alive connection
 * costs no timer-heap work per request. No timers on a virtual connection. */
static void conn_deadline(ls_http_conn_t *c, uint64_t ms) {
  if (c->virtual_conn)
    return;
  c->deadline = uv_now(c->rt->loop) + ms;
  if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
    uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

static void conn_no_deadline(ls_http_conn_t *c) { c->deadline = 0; }

/* ---- parser callbacks --------------------------------------------------------------------- */

static ls_http_conn_t *parser_conn(llhttp_t *p) { return p->data; }

static int reject(ls_http_conn_t *c, int status) {
  c->reject_status = status;
  return HPE_USER;
}

static int on_message_begin(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  if (c->state == LS_HTTP_IDLE) {
    c->state = LS_HTTP_HEAD;
    /* A request that follows on a kept-alive connection gets its own head deadline. */
    if (c->seq > 0)
      conn_deadline(c, c->listener->limits.header_timeout_ms);
  }
  c->seq++;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  ls_http_conn_t *c = parser_conn(p);
  if (c->url_len + len > c->listener->limits.line_max)
    return reject(c, 414);
  if (ls_buf_append(&c->head, at, len) != 0)
    return reject(c, 503);
  c->url_len += (uint32_t)len;
  return 0;
}

/* Header lines arrive as pieces of names and values, split wherever reads split the input;
 * llhttp calls a name's or a value's callback only when it has bytes, and marks each end.
 * hdr_state tells a new line from the rest of one: a value that begins while no name has
 * begun has an empty name, which RFC 9110 §5.1 does not allow. */
static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  ls_http_conn_t *c = parser_conn(p);
  ls_http_header_t *h;
  size_t i, off;
  if (c->hdr_state != LS_HDR_NAME) {
    if (c->nheaders == c->listener->limits.header_count)
      return reject(c, 431);
    h = &c->headers[c->nheaders++];
    h->name_off = (uint32_t)ls_buf_len(&c->head);
    h->name_len = 0;
    h->value_off = h->value_len = 0;
    c->hdr_state = LS_HDR_NAME;
  }
  h = &c->headers[c->nheaders - 1];
  if (ls_buf_len(&c->head) - c->url_len + len > c->listener->limits.header_max)
    return reject(c, 431);
  off = ls_buf_len(&c->head);
  if (ls_buf_append(&c->head, at, len) != 0)
    return reject(c, 503);
  /* Names are kept in lower case: lookups are then plain comparisons. */
  for (i = 0; i < len; i++) {
    char *ch = c->head.data + c->head.start + off + i;
    if (*ch >= 'A' && *ch <= 'Z')
      *ch = (char)(*ch + ('a' - 'A'));
  }
  h->name_len += (uint32_t)len;
  return 0;
}

/* 1 if the value piece at `at` starts a continuation line (only spaces or tabs between it and
 * the line feed before it): obsolete line folding, which RFC 9112 lets a server reject. */
static int folded(ls_http_conn_t *c, const char *at) {
  const char *q = at;
  while (q > c->exec_start && (q[-1] == ' ' || q[-1] == '\t'))
    q--;
  if (q > c->exec_start)
    return q[-1] == '\n';
  return c->prev_lf;
}

/* Ends the name of the current header line, if it is still open: its value starts here. */
static int begin_value(ls_http_conn_t *c) {
  if (c->hdr_state == LS_HDR_BETWEEN || c->headers[c->nheaders - 1].name_len == 0)
    return reject(c, 400); /* a value with no name */
  if (c->hdr_state == LS_HDR_NAME) {
    c->hdr_state = LS_HDR_VALUE;
    c->headers[c->nheaders - 1].value_off = (uint32_t)ls_buf_len(&c->head);
  }
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ls_http_conn_t *c = parser_conn(p);
  ls_http_header_t *h;
  if (begin_value(c) != 0)
    return HPE_USER;
  h = &c->headers[c->nheaders - 1];
  if (len > 0 && folded(c, at))
    return reject(c, 400);
  if (ls_buf_len(&c->head) - c->url_len + len > c->listener->limits.header_max)
    return reject(c, 431);
  if (ls_buf_append(&c->head, at, len) != 0)
    return reject(c, 503);
  h->value_len += (uint32_t)len;
  return 0;
}

/* The end of a header line; an empty value (RFC 9110 §5.5 allows it) had no value piece. */
static int on_header_value_complete(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  if (begin_value(c) != 0)
    return HPE_USER;
  c->hdr_state = LS_HDR_BETWEEN;
  return 0;
}

const char *ls_http__header(ls_http_conn_t *c, const char *name, size_t name_len, size_t *len) {
  unsigned i;
  const char *base = ls_buf_head(&c->head);
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    if (h->name_len == name_len && memcmp(base + h->name_off, name, name_len) == 0) {
      *len = h->value_len;
      return base + h->value_off;
    }
  }
  return NULL;
}

void ls_http__peer_name(const ls_http_conn_t *c, char *out, size_t size, const char *def) {
  if (c->peer.sa.sa_family == AF_INET6)
    uv_ip6_name(&c->peer.in6, out, size);
  else if (c->peer.sa.sa_family == AF_INET)
    uv_ip4_name(&c->peer.in4, out, size);
  else
    snprintf(out, size, "%s", def);
}

static unsigned header_count(ls_http_conn_t *c, const char *name, size_t name_len) {
  unsigned i, n = 0;
  const char *base = ls_buf_head(&c->head);
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    if (h->name_len == name_len && memcmp(base + h->name_off, name, name_len) == 0)
      n++;
  }
  return n;
}

/* Finds the path of the target (origin-form, or absolute-form whose authority is skipped),
 * percent-decodes it after the headers in c->head and records where. Returns 0, or the status
 * for a malformed path. */
static int decode_path(ls_http_conn_t *c) {
  const char *t = ls_buf_head(&c->head);
  size_t n = c->url_len, i, start = 0, end;
  size_t out;
  if (n == 1 && t[0] == '*') {
    end = 1;
  } else {
    if (n == 0)
      return 400;
    if (t[0] != '/') {
      /* absolute-form: scheme "://" authority [path] */
      const char *sep = memchr(t, ':', n);
      if (sep == NULL || (size_t)(sep - t) + 3 > n || sep[1] != '/' || sep[2] != '/')
        return 400;
      start = (size_t)(sep - t) + 3;
      while (start < n && t[start] != '/' && t[start] != '?')
        start++;
    }
    end = start;
    while (end < n && t[end] != '?' && t[end] != '#')
      end++;
  }
  out = ls_buf_len(&c->head);
  if (ls_buf_reserve(&c->head, end - start + 1) != 0)
    return 503;
  t = ls_buf_head(&c->head);
  c->path_off = (uint32_t)out;
  if (start == end) {
    /* absolute-form without a path means "/" */
    c->head.data[c->head.end++] = '/';
  }
  for (i = start; i < end; i++) {
    char ch = t[i];
    if (ch == '%') {
      int hi, lo;
      if (i + 2 >= end)
        return 400;
      hi = ls_http__hexval(t[i + 1]);
      lo = ls_http__hexval(t[i + 2]);
      if (hi < 0 || lo < 0)
        return 400;
      ch = (char)(hi * 16 + lo);
      if (ch == '\0')
        return 400;
      i += 2;
    }
    c->head.data[c->head.end++] = ch;
  }
  c->path_len = (uint32_t)(ls_buf_len(&c->head) - out);
  return 0;
}

static int ascii_ieq(const char *a, size_t alen, const char *lit) {
  size_t i, n = strlen(lit);
  if (alen != n)
    return 0;
  for (i = 0; i < n; i++) {
    char ch = a[i];
    if (ch >= 'A' && ch <= 'Z')
      ch = (char)(ch + ('a' - 'A'));
    if (ch != lit[i])
      return 0;
  }
  return 1;
}

/* Drops trailing spaces and tabs from every header value (RFC 9112 §5: optional whitespace
 * is not part of the value). */
static void trim_values(ls_http_conn_t *c) {
  const char *base = ls_buf_head(&c->head);
  unsigned i;
  for (i = 0; i < c->nheaders; i++) {
    ls_http_header_t *h = &c->headers[i];
    while (h->value_len > 0 &&
           (base[h->value_off + h->value_len - 1] == ' ' || base[h->value_off + h->value_len - 1] == '\t'))
      h->value_len--;
  }
}

/* Checks the request's Transfer-Encoding (every field line, in order, RFC 9112 §6.1): the
 * codings must end in exactly one "chunked", the only coding this server applies. Returns 0,
 * 400 when the body's length cannot be known (chunked missing, not last or repeated, or an
 * HTTP/1.0 request, where the header is a smuggling vector), or 501 for another coding, which
 * the server does not decode (gzip, identity...). */
static int check_transfer_encoding(ls_http_conn_t *c) {
  const char *base = ls_buf_head(&c->head);
  unsigned i;
  int chunked_last = 0, chunked_seen = 0, other = 0;
  for (i = 0; i < c->nheaders; i++) {
    const ls_http_header_t *h = &c->headers[i];
    const char *v = base + h->value_off, *end = v + h->value_len;
    if (h->name_len != 17 || memcmp(base + h->name_off, "transfer-encoding", 17) != 0)
      continue;
    while (v < end) {
      const char *tok, *tok_end;
      while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
        v++;
      if (v == end)
        break;
      tok = v;
      while (v < end && *v != ',' && *v != ';' && *v != ' ' && *v != '\t')
        v++;
      tok_end = v;
      while (v < end && *v != ',')
        v++; /* parameters of the coding */
      if (ascii_ieq(tok, (size_t)(tok_end - tok), "chunked")) {
        if (chunked_seen++)
          return 400;
        chunked_last = 1;
      } else {
        other = 1;
        chunked_last = 0;
      }
    }
  }
  if (c->parser.http_minor == 0 && c->parser.http_major == 1)
    return 400;
  if (!chunked_last)
    return 400;
  return other ? 501 : 0;
}

static int on_headers_complete(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  const ls_http_limits_t *lim = &c->listener->limits;
  const char *v;
  size_t vlen;
  unsigned hosts;
  int status;
  if (p->http_major != 1)
    return reject(c, 505);
  if (p->method == HTTP_CONNECT)
    return reject(c, 501);
  hosts = header_count(c, "host", 4);
  if (hosts > 1 || (hosts == 0 && p->http_minor >= 1))
    return reject(c, 400);
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > lim->body_max)
    return reject(c, 413);
  v = ls_http__header(c, "expect", 6, &vlen);
  if (v != NULL) {
    if (!ascii_ieq(v, vlen, "100-continue"))
      return reject(c, 417);
    c->expect_continue = p->http_minor >= 1;
  }
  status = decode_path(c);
  if (status != 0)
    return reject(c, status);
  trim_values(c);
  if (p->flags & F_TRANSFER_ENCODING) {
    status = check_transfer_encoding(c);
    if (status != 0)
      return reject(c, status);
    c->at_chunk_line = 1;
  }
  c->keep_alive = (unsigned char)llhttp_should_keep_alive(p);
  c->is_head = p->method == HTTP_HEAD;
  c->state = LS_HTTP_HANDLER;
  c->dispatch_pending = 1;
  conn_no_deadline(c);
  return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  ls_http_conn_t *c = parser_conn(p);
  c->body_seen += len;
  if (c->body_seen > c->listener->limits.body_max)
    return reject(c, 413);
  if (c->task != NULL && ls_buf_append(&c->body, at, len) != 0)
    return reject(c, 503);
  return 0;
}

/* After each chunk but the last, the parser pauses so that chunk_line() sees the next
 * chunk-size line before llhttp does. */
static int on_chunk_complete(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  if (p->flags & F_TRAILING)
    return 0; /* the last chunk: trailers and the end follow */
  c->at_chunk_line = 1;
  return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  c->msg_done = 1;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_complete = on_chunk_complete,
    .on_message_complete = on_message_complete,
};

/* ---- connection life cycle ---------------------------------------------------------------- */

static void listener_maybe_free(ls_http_listener_t *l);

static void conn_close_cb(uv_handle_t *h) {
  ls_http_conn_t *c = h->data;
  if (--c->closing > 1)
    return;
  ls_http__end_request(c);
  if (c->task != NULL)
    c->task->data = NULL;
  ls_buf_free(&c->in);
  ls_buf_free(&c->head);
  ls_buf_free(&c->body);
  ls_buf_free(&c->out);
  ls_buf_free(&c->out_flight);
  ls_buf_free(&c->res_headers);
  ls_free(c->headers, c->listener->limits.header_count * sizeof *c->headers);
  c->listener->conns--;
  listener_maybe_free(c->listener);
  ls_free(c, sizeof *c);
}

/* Closes the connection now; the struct goes once the three handles have closed. */
void ls_http__close(ls_http_conn_t *c) {
  if (c->closing)
    return;
  c->closing = 4; /* three close callbacks bring it to 1 */
  c->state = LS_HTTP_CLOSING;
  ls_res_unlink(&c->res);
  if (c->body_waiter != NULL)
    ls_task_wake(c->body_waiter);
  if (c->writer != NULL)
    ls_task_wake(c->writer);
  if (c->virtual_conn) {
    /* No handles: inject_k frees it once it has taken the output, never from under the
     * code that closed it. */
    return;
  }
  if (c->writing) {
    c->writing = 0;
    c->rt->flushing--;
    ls_runtime_check_drained(c->rt);
  }
  uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
  uv_close((uv_handle_t *)&c->timer, conn_close_cb);
  uv_close((uv_handle_t *)&c->write_timer, conn_close_cb);
}

static void conn_res_close(ls_res_t *res) {
  ls_http__close((ls_http_conn_t *)((char *)res - offsetof(ls_http_conn_t, res)));
}

static void conn_timer_cb(uv_timer_t *t) {
  ls_http_conn_t *c = t->data;
  uint64_t now = uv_now(c->rt->loop);
  if (c->deadline == 0)
    return; /* no deadline now; the next one starts the timer again */
  if (now < c->deadline) {
    uv_timer_start(&c->timer, conn_timer_cb, c->deadline - now, 0);
    return;
  }
  c->deadline = 0;
  if (c->state == LS_HTTP_HEAD) {
    ls_http__error_response(c, 408, 1);
    ls_http__flush(c);
    return;
  }
  /* Idle keep-alive, or the linger after the last response. */
  ls_http__close(c);
}

static void write_timer_cb(uv_timer_t *t) {
  ls_http_conn_t *c = t->data;
  ls_log(LS_LOG_WARN, "%s: closing a connection that accepted no output for %llu ms",
         c->listener->url, (unsigned long long)c->listener->limits.write_timeout_ms);
  c->write_err = UV_ETIMEDOUT;
  ls_http__close(c);
}

/* Prepares a connection struct for the listener; `virtual_conn` makes one without a socket. */
static ls_http_conn_t *conn_new(ls_http_listener_t *l, int virtual_conn) {
  ls_http_conn_t *c = ls_malloc(sizeof *c);
  if (c == NULL)
    return NULL;
  memset(c, 0, sizeof *c);
  c->headers = ls_malloc(l->limits.header_count * sizeof *c->headers);
  if (c->headers == NULL) {
    ls_free(c, sizeof *c);
    return NULL;
  }
  c->rt = l->base.gen->rt;
  c->gen = l->base.gen;
  c->listener = l;
  c->virtual_conn = (unsigned char)virtual_conn;
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  if (!virtual_conn) {
    uv_tcp_init(l->base.gen->rt->loop, &c->tcp);
    uv_timer_init(l->base.gen->rt->loop, &c->timer);
    uv_timer_init(l->base.gen->rt->loop, &c->write_timer);
  }
  c->tcp.data = c->timer.data = c->write_timer.data = c;
  c->res.close = conn_res_close;
  ls_res_link(&l->base.gen->rt->resources, &c->res);
  l->conns++;
  return c;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ls_http_conn_t *c = h->data;
  (void)suggested;
  if (c->in.cap - c->in.end >= 4096) {
    buf->base = c->in.data + c->in.end;
    buf->len = c->in.cap - c->in.end;
  } else {
    buf->base = c->rt->scratch;
    buf->len = c->rt->scratch_size;
  }
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ls_http_conn_t *c = s->data;
  if (nread > 0) {
    if (c->state == LS_HTTP_CLOSING)
      return; /* lingering: input is dropped */
    if (buf->base == c->in.data + c->in.end)
      c->in.end += (size_t)nread;
    else if (ls_buf_append(&c->in, buf->base, (size_t)nread) != 0)
      c->read_err = LS_ENOMEM;
  } else if (nread < 0) {
    c->read_err = (int)nread;
    uv_read_stop(s);
    c->reading = 0;
    if (c->state == LS_HTTP_CLOSING) {
      ls_http__close(c);
      return;
    }
  } else {
    return;
  }
  ls_http__process(c);
}

static void conn_update_reading(ls_http_conn_t *c) {
  int want;
  if (c->virtual_conn || c->closing)
    return;
  want = c->read_err == 0 && (c->state == LS_HTTP_CLOSING || ls_buf_len(&c->in) < LS_HTTP_READ_AHEAD);
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) == 0)
      c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* ---- the request cycle -------------------------------------------------------------------- */

/* Readies the connection for its next request once the current one has been answered and its
 * body consumed. */
static void conn_next_request(ls_http_conn_t *c) {
  c->state = c->keep_alive ? LS_HTTP_IDLE : LS_HTTP_CLOSING;
  ls_buf_consume(&c->head, ls_buf_len(&c->head));
  ls_buf_consume(&c->body, ls_buf_len(&c->body));
  c->nheaders = 0;
  c->url_len = 0;
  c->path_off = c->path_len = 0;
  c->body_seen = 0;
  c->hdr_state = LS_HDR_BETWEEN;
  c->at_chunk_line = 0;
  c->msg_done = 0;
  c->expect_continue = c->continue_sent = 0;
  c->reject_status = 0;
  c->status = 0;
  c->bytes_out = 0;
  c->head_sent = c->chunked = c->has_ctype = c->has_clen = c->logged = 0;
  ls_buf_consume(&c->res_headers, ls_buf_len(&c->res_headers));
  if (c->state == LS_HTTP_IDLE)
    conn_deadline(c, c->listener->limits.keepalive_ms);
}

/* The longest chunk-size line, extensions included: they are counted, not kept. */
#define LS_HTTP_CHUNK_LINE_MAX 4096

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Length of the chunk extensions at s[0..n) (RFC 9112 §7.1.1, as strict as llhttp: no blank
 * space): `;name[=token|"quoted"]` any number of times. n if they are well formed, else 0. */
static size_t chunk_ext_valid(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t start;
    if (s[i++] != ';')
      return 0;
    for (start = i; i < n && is_tchar((unsigned char)s[i]); i++)
      ;
    if (i == start)
      return 0;
    if (i == n || s[i] == ';')
      continue;
    if (s[i++] != '=' || i == n)
      return 0;
    if (s[i] == '"') {
      for (i++; i < n && s[i] != '"'; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\' && i + 1 < n)
          i++;
        else if (ch < 0x20 && ch != '\t')
          return 0;
      }
      if (i++ == n)
        return 0;
    } else {
      for (start = i; i < n && is_tchar((unsigned char)s[i]); i++)
        ;
      if (i == start)
        return 0;
    }
  }
  return n;
}

/* Called with a chunk-size line at the head of the input. The server ignores chunk
 * extensions, and llhttp 8.1 refuses a line with more than one when a value is a bare token
 * (`3;a=b;c=d`, which RFC 9112 allows): so this checks them itself, counts them against the
 * body limit and strips them, leaving llhttp `3\r\n`. Returns 1 to parse on, 0 to wait for
 * the rest of the line, or a status to refuse the request with. */
static int chunk_line(ls_http_conn_t *c) {
  char *data = c->in.data + c->in.start;
  size_t len = ls_buf_len(&c->in), scan = len < LS_HTTP_CHUNK_LINE_MAX ? len : LS_HTTP_CHUNK_LINE_MAX;
  const char *nl = memchr(data, '\n', scan);
  const char *semi;
  size_t cr, hex_len, cut;
  if (nl == NULL)
    return len >= LS_HTTP_CHUNK_LINE_MAX ? 400 : 0;
  c->at_chunk_line = 0;
  semi = memchr(data, ';', (size_t)(nl - data));
  if (semi == NULL)
    return 1; /* nothing to strip: llhttp checks the line */
  if (nl == data || nl[-1] != '\r')
    return 400;
  cr = (size_t)(nl - data) - 1;
  hex_len = (size_t)(semi - data);
  if (chunk_ext_valid(semi, cr - hex_len) == 0)
    return 400;
  cut = cr - hex_len;
  c->body_seen += cut;
  if (c->body_seen > c->listener->limits.body_max)
    return 413;
  memmove(data + cut, data, hex_len);
  ls_buf_consume(&c->in, cut);
  return 1;
}

/* 1 if the unparsed input starts with a token and a space: a request line with a method that
 * llhttp does not know (501), rather than bytes that are not HTTP at all (400). */
static int starts_with_method(ls_http_conn_t *c) {
  const char *s = ls_buf_head(&c->in);
  size_t n = ls_buf_len(&c->in), i = 0;
  while (i < n && (s[i] == '\r' || s[i] == '\n'))
    i++; /* empty lines before a request line are allowed */
  n = i + 20 < n ? i + 20 : n;
  for (; i < n && is_tchar((unsigned char)s[i]); i++)
    ;
  return i > 0 && i < n && s[i] == ' ';
}

static int parse_error_status(ls_http_conn_t *c, llhttp_errno_t err) {
  if (c->reject_status != 0)
    return c->reject_status; /* one of our checks refused it, from whichever callback */
  if (err == HPE_INVALID_METHOD)
    return starts_with_method(c) ? 501 : 400;
  if ((err == HPE_INVALID_VERSION && c->parser.http_major >= 2) || err == HPE_PAUSED_H2_UPGRADE)
    return 505; /* the HTTP/2 preface, "PRI * HTTP/2.0" */
  return 400;
}

/* Runs llhttp over s[0..len) and sets *used to the bytes it took; a pause is resumed at
 * once (the caller looks at the state the callbacks left). An Upgrade that the application
 * did not take (h2c, say) is ignored, as RFC 9110 §7.8 allows: llhttp pauses on it only after
 * the request's end (on_headers_complete never asks it to upgrade at once), so the parser
 * starts afresh on the bytes after it and the connection goes on as HTTP/1.1.
 * Returns HPE_OK, HPE_PAUSED or llhttp's error. */
static llhttp_errno_t parser_execute(ls_http_conn_t *c, const char *s, size_t len, size_t *used) {
  llhttp_errno_t err = llhttp_execute(&c->parser, s, len);
  *used = len;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    *used = (size_t)(llhttp_get_error_pos(&c->parser) - s);
    if (err == HPE_PAUSED) {
      llhttp_resume(&c->parser);
    } else {
      llhttp_reset(&c->parser); /* keeps the settings and c as its data */
      err = HPE_PAUSED;
    }
  }
  return err;
}

/* Stops parsing the connection after a framing error: nothing more is parsed from it. The
 * status goes to the running handler's body read, or out as the answer. */
static void parse_failed(ls_http_conn_t *c, int status) {
  ls_buf_consume(&c->in, ls_buf_len(&c->in));
  c->parse_failed = 1;
  c->keep_alive = 0;
  if (c->state == LS_HTTP_HANDLER && c->task != NULL) {
    c->reject_status = status; /* the waiting req:body() raises it */
    if (c->body_waiter != NULL)
      ls_task_wake(c->body_waiter);
  } else if (c->state == LS_HTTP_DRAIN) {
    c->state = LS_HTTP_CLOSING;
  } else {
    ls_http__error_response(c, status, 1);
  }
}

/* Runs the parser over buffered input as far as the request cycle allows: a complete head
 * dispatches its handler; a body is parsed only while a handler wants it, or is skipped
 * after the handler answered; the next request waits until the current one is done. */
void ls_http__process(ls_http_conn_t *c) {
  int empty_tried = 0;
  if (c->in_process)
    return;
  c->in_process = 1;
  while (!c->closing && c->state != LS_HTTP_CLOSING) {
    const char *start;
    size_t len, used;
    llhttp_errno_t err;
    if (c->state == LS_HTTP_HANDLER) {
      if (c->task != NULL) {
        if (c->body_waiter == NULL || c->msg_done || c->parse_failed)
          break; /* the handler runs; its body is parsed only when asked for */
      } else if (c->msg_done || c->parse_failed || (c->expect_continue && !c->continue_sent)) {
        /* Answered. A body the client holds back for 100 Continue will not come, and one
         * that failed to parse cannot be skipped: either way the connection ends. */
        if (!c->msg_done)
          c->keep_alive = 0;
        conn_next_request(c);
        continue;
      } else {
        c->state = LS_HTTP_DRAIN; /* answered before reading the body: skip it */
      }
    } else if (c->state == LS_HTTP_DRAIN && c->msg_done) {
      conn_next_request(c);
      continue;
    }
    len = ls_buf_len(&c->in);
    if (len == 0 && !empty_tried && c->state != LS_HTTP_IDLE && c->state != LS_HTTP_HEAD) {
      /* A message without a body ends without another byte: let the parser reach its end. */
      empty_tried = 1;
      err = parser_execute(c, "", 0, &used);
      if (c->msg_done) {
        if (c->body_waiter != NULL)
          ls_task_wake(c->body_waiter);
        continue;
      }
    }
    if (len == 0) {
      if (c->read_err != 0) {
        if (c->state == LS_HTTP_HEAD) {
          ls_http__error_response(c, 400, 1);
        } else if (c->state != LS_HTTP_HANDLER) {
          c->state = LS_HTTP_CLOSING;
        } else {
          /* The peer stopped sending while its handler runs: answer, then close. */
          c->keep_alive = 0;
          c->parse_failed = 1;
          if (c->body_waiter != NULL)
            ls_task_wake(c->body_waiter);
        }
      }
      break;
    }
    if (c->at_chunk_line) {
      int status = chunk_line(c);
      if (status == 0)
        break; /* the rest of the line is still to come */
      if (status != 1) {
        parse_failed(c, status);
        break;
      }
      len = ls_buf_len(&c->in);
    }
    start = ls_buf_head(&c->in);
    c->exec_start = start;
    err = parser_execute(c, start, len, &used);
    if (err != HPE_OK && err != HPE_PAUSED) {
      parse_failed(c, parse_error_status(c, err));
      break;
    }
    if (used > 0) {
      /* Whether the consumed bytes end in a line feed and blanks: a value piece at the start
       * of the next read is then a folded line. */
      const char *q = start + used;
      while (q > start && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
      if (q > start)
        c->prev_lf = q[-1] == '\n';
    }
    ls_buf_consume(&c->in, used);
    if (c->body_waiter != NULL && ls_buf_len(&c->body) > 0)
      ls_task_wake(c->body_waiter); /* a body reader takes pieces as they come */
    if (c->dispatch_pending) {
      c->dispatch_pending = 0;
      ls_http__dispatch(c);
      continue;
    }
    if (c->msg_done && c->body_waiter != NULL)
      ls_task_wake(c->body_waiter);
  }
  c->in_process = 0;
  conn_after_input(c);
}

static void conn_after_input(ls_http_conn_t *c) {
  if (c->closing)
    return;
  conn_update_reading(c);
  ls_http__flush(c);
}

void ls_http__want_body(ls_http_conn_t *c) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  if (c->expect_continue && !c->continue_sent) {
    c->continue_sent = 1;
    ls_buf_append(&c->out, cont, sizeof cont - 1);
    ls_http__flush(c);
  }
  ls_http__process(c);
}

/* ---- writing ------------------------------------------------------------------------------ */

static void conn_shutdown_cb(uv_shutdown_t *req, int status) {
  ls_http_conn_t *c = req->data;
  ls_free(req, sizeof *req);
  if (status < 0 || c->read_err != 0) {
    ls_http__close(c);
    return;
  }
  /* Drain what the peer still sends for a moment, then close. */
  conn_deadline(c, LS_HTTP_LINGER_MS);
  conn_update_reading(c);
}

static void conn_finish(ls_http_conn_t *c) {
  uv_shutdown_t *req;
  if (c->virtual_conn || c->task != NULL || c->shut)
    return;
  c->shut = 1;
  req = ls_malloc(sizeof *req);
  if (req == NULL || c->write_err != 0) {
    ls_free(req, sizeof *req);
    ls_http__close(c);
    return;
  }
  req->data = c;
  conn_no_deadline(c);
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, conn_shutdown_cb) != 0) {
    ls_free(req, sizeof *req);
    ls_http__close(c);
  }
}

static void conn_write_cb(uv_write_t *req, int status) {
  ls_http_conn_t *c = req->data;
  if (c->writing) {
    c->writing = 0;
    c->rt->flushing--;
    ls_runtime_check_drained(c->rt);
  }
  uv_timer_stop(&c->write_timer);
  ls_buf_consume(&c->out_flight, ls_buf_len(&c->out_flight));
  if (status < 0) {
    c->write_err = status;
    ls_http__close(c);
    return;
  }
  if (c->closing)
    return;
  ls_http__flush(c);
  if (c->writer != NULL)
    ls_task_resume(c->writer);
}

/* Sends what is in c->out: straight to the socket if it takes it, otherwise with one
 * uv_write at a time. A connection in the CLOSING state shuts down once all is sent. */
void ls_http__flush(ls_http_conn_t *c) {
  uv_buf_t buf;
  ls_buf_t swap;
  if (c->closing || c->writing || c->virtual_conn)
    return;
  if (ls_buf_len(&c->out) > 0 && c->write_err == 0) {
    buf = uv_buf_init((char *)ls_buf_head(&c->out), (unsigned)ls_buf_len(&c->out));
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n > 0)
      ls_buf_consume(&c->out, (size_t)n);
    else if (n < 0 && n != UV_EAGAIN) {
      c->write_err = n;
      ls_http__close(c);
      return;
    }
  }
  if (ls_buf_len(&c->out) == 0) {
    if (c->state == LS_HTTP_CLOSING && c->task == NULL)
      conn_finish(c);
    return;
  }
  swap = c->out_flight;
  c->out_flight = c->out;
  c->out = swap;
  buf = uv_buf_init((char *)ls_buf_head(&c->out_flight), (unsigned)ls_buf_len(&c->out_flight));
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, conn_write_cb) != 0) {
    ls_http__close(c);
    return;
  }
  c->writing = 1;
  c->rt->flushing++; /* a graceful stop waits for it */
  uv_timer_start(&c->write_timer, write_timer_cb, c->listener->limits.write_timeout_ms, 0);
}

/* ---- listeners ---------------------------------------------------------------------------- */

static void listener_free_cb(uv_handle_t *h) {
  ls_http_listener_t *l = h->data;
  l->closed = 2;
  listener_maybe_free(l);
}

static void listener_maybe_free(ls_http_listener_t *l) {
  if (l->closed != 2 || l->conns > 0)
    return;
  ls_free(l, sizeof *l);
}

static void listener_close(ls_http_listener_t *l) {
  if (l->closed)
    return;
  l->closed = 1;
  ls_res_unlink(&l->base.res);
  ls_listener_release(&l->base);
  uv_close((uv_handle_t *)&l->tcp, listener_free_cb);
}

static void listener_res_close(ls_res_t *res) {
  listener_close((ls_http_listener_t *)((char *)res - offsetof(ls_http_listener_t, base.res)));
}

static void listener_connection_cb(uv_stream_t *server, int status) {
  ls_http_listener_t *l = server->data;
  ls_http_conn_t *c;
  if (status < 0) {
    ls_log(LS_LOG_WARN, "%s: accept failed: %s", l->url, uv_strerror(status));
    return;
  }
  c = conn_new(l, 0);
  if (c == NULL) {
    ls_log(LS_LOG_ERROR, "%s: out of memory accepting a connection", l->url);
    return;
  }
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    ls_http__close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  {
    int len = sizeof c->peer;
    if (uv_tcp_getpeername(&c->tcp, &c->peer.sa, &len) != 0)
      c->peer.sa.sa_family = 0;
  }
  conn_deadline(c, l->limits.header_timeout_ms);
  conn_update_reading(c);
}

static double opt_seconds(lua_State *L, int opts, const char *name, uint64_t def_ms) {
  int64_t ms = ls_opt_timeout_field(L, opts, name, (int64_t)def_ms);
  return ms < 0 ? (double)UINT32_MAX * 1000.0 : (double)ms;
}

/* Reads the limits from a listen options table (DESIGN §4 defaults). */
static void read_limits(lua_State *L, int opts, ls_http_limits_t *lim) {
  lim->line_max = ls_opt_size_field(L, opts, "max_line", 8 * 1024);
  lim->header_max = ls_opt_size_field(L, opts, "max_header_size", 16 * 1024);
  lim->header_count = (unsigned)ls_opt_size_field(L, opts, "max_headers", 100);
  lim->body_max = ls_opt_size_field(L, opts, "max_body", 1024 * 1024);
  lim->header_timeout_ms = (uint64_t)opt_seconds(L, opts, "header_timeout", 10000);
  lim->keepalive_ms = (uint64_t)opt_seconds(L, opts, "keepalive_timeout", 5000);
  lim->write_timeout_ms = (uint64_t)opt_seconds(L, opts, "write_timeout", 30000);
  lim->body_timeout_ms = (uint64_t)opt_seconds(L, opts, "body_timeout", 30000);
  if (lim->header_count > LS_HTTP_MAX_HEADERS_LIMIT)
    luaL_error(L, "option 'max_headers' must be at most %d", LS_HTTP_MAX_HEADERS_LIMIT);
}

/* A listener struct with the limits from the options at `opts` (not yet linked anywhere). */
static ls_http_listener_t *listener_alloc(lua_State *L, ls_gen_t *gen, int opts) {
  ls_http_limits_t limits;
  ls_http_listener_t *l;
  read_limits(L, opts, &limits);
  l = ls_malloc(sizeof *l);
  if (l == NULL)
    luaL_error(L, "not enough memory");
  memset(l, 0, sizeof *l);
  l->base.gen = gen;
  l->base.handler_ref = l->base.staged_ref = LUA_NOREF;
  l->limits = limits;
  l->tcp.data = l;
  return l;
}

/* core.http_listen(opts, handler) -> listener. opts: host (default "127.0.0.1"), port (0: any
 * free port), backlog, and the limits max_line, max_header_size, max_headers, max_body,
 * header_timeout, keepalive_timeout, write_timeout. handler(req, res) runs in its own task for
 * each request. Raises if the address cannot be bound. */
static int l_http_listen(lua_State *L) {
  ls_gen_t *gen = lua_touserdata(L, lua_upvalueindex(1));
  const char *host;
  lua_Integer port;
  struct sockaddr_storage ss;
  int backlog, err;
  ls_http_listener_t *l;
  ls_listener_base_t *claimed;
  listener_ud_t *ud;
  char key[160];
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_type(L, 2) != LUA_TFUNCTION) {
    if (!luaL_getmetafield(L, 2, "__call"))
      return luaL_typeerror(L, 2, "function or callable app");
    lua_pop(L, 1);
  }
  host = ls_opt_string_field(L, 1, "host");
  if (host == NULL)
    host = "127.0.0.1";
  lua_getfield(L, 1, "port");
  if (!lua_isinteger(L, -1))
    return luaL_argerror(L, 1, "expected a port (0 for any free one)");
  port = lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_argcheck(L, port >= 0 && port < 65536, 1, "port out of range");
  backlog = (int)ls_opt_size_field(L, 1, "backlog", 511);
  if (ls_addr_parse(host, (int)port, &ss) != 0)
    return luaL_error(L, "listen: '%s' is not an IP address", host);
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->listener = NULL;
  ud->gen = gen;
  luaL_setmetatable(L, LS_HTTP_LISTENER_MT);
  ls_addr_key("http", host, (int)port, key, sizeof key); /* port 0: never kept */
  claimed = ls_listener_claim(gen, key);
  if (claimed != NULL) {
    /* A reload listening where the running generation does: keep the socket (and its
     * limits), stage the new handler for ls_gen_commit. */
    lua_pushvalue(L, 2);
    claimed->staged_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    claimed->staged_gen = gen;
    ud->listener = (ls_http_listener_t *)((char *)claimed - offsetof(ls_http_listener_t, base));
    ud->id = claimed->id;
    return 1;
  }
  l = listener_alloc(L, gen, 1);
  uv_tcp_init(gen->rt->loop, &l->tcp);
  lua_pushvalue(L, 2);
  ls_listener_init(&l->base, gen, luaL_ref(L, LUA_REGISTRYINDEX), key, listener_res_close);
  err = ls_worker_bind_tcp(&l->tcp, (struct sockaddr *)&ss, "http");
  if (err == 0)
    err = uv_listen((uv_stream_t *)&l->tcp, backlog, listener_connection_cb);
  if (err != 0) {
    listener_close(l);
    return luaL_error(L, "listen: cannot listen on %s:%d: %s", host, (int)port, uv_strerror(err));
  }
  {
    int len = sizeof ss;
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
    ls_addr_url("http", &ss, l->url, sizeof l->url);
  }
  ud->listener = l;
  ud->id = l->base.id;
  if (gen->rt->announce) {
    printf("listening on %s\n", l->url);
    fflush(stdout);
  }
  return 1;
}

/* The open listener behind the Lua object at argument 1, or NULL once it has closed. */
static ls_http_listener_t *check_listener(lua_State *L) {
  listener_ud_t *ud = luaL_checkudata(L, 1, LS_HTTP_LISTENER_MT);
  if (ud->listener == NULL || !ls_listener_alive(ud->gen->rt, &ud->listener->base, ud->id))
    return NULL;
  return ud->listener;
}

/* listener:close() -> true: stops accepting; requests in progress finish. */
static int l_listener_close(lua_State *L) {
  ls_http_listener_t *l = check_listener(L);
  if (l != NULL)
    listener_close(l);
  lua_pushboolean(L, 1);
  return 1;
}

/* listener:address() -> host, port. */
static int l_listener_address(lua_State *L) {
  ls_http_listener_t *l = check_listener(L);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (l == NULL || uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) != 0)
    return ls_push_error(L, LS_ECLOSED);
  return ls_addr_push(L, &ss);
}

/* listener:url() -> "http://127.0.0.1:8080". */
static int l_listener_url(lua_State *L) {
  ls_http_listener_t *l = check_listener(L);
  if (l == NULL)
    return ls_push_error(L, LS_ECLOSED);
  lua_pushstring(L, l->url);
  return 1;
}

/* ---- in-process requests ------------------------------------------------------------------ */

typedef struct inject_s {
  ls_http_listener_t listener;
  ls_http_conn_t *conn;
} inject_t;

static int inject_k(lua_State *L, int status, lua_KContext ctx) {
  inject_t *in = (inject_t *)ctx;
  ls_http_conn_t *c = in->conn;
  ls_task_t *task = ls_task_current(in->listener.base.gen, L);
  (void)status;
  if (c->state != LS_HTTP_CLOSING || c->task != NULL) {
    /* A handler still runs (it waits for something): look again shortly. */
    return ls_task_wait(task, 1, ctx, inject_k);
  }
  lua_pushlstring(L, ls_buf_head(&c->out), ls_buf_len(&c->out));
  ls_http__close(c);
  c->closing = 2; /* no handles: run the last close callback by hand */
  conn_close_cb((uv_handle_t *)&c->tcp);
  luaL_unref(L, LUA_REGISTRYINDEX, in->listener.base.handler_ref);
  ls_free(in, sizeof *in);
  return 1;
}

/* core.http_inject(handler, request_bytes [, opts]) -> response_bytes. Runs the bytes through
 * the same parser, limits and handler machinery as a socket would, without one: the input is
 * treated as everything the client sends, then end of input. Must run in a task. */
static int l_http_inject(lua_State *L) {
  ls_gen_t *gen = lua_touserdata(L, lua_upvalueindex(1));
  size_t len;
  const char *bytes;
  inject_t *in;
  ls_http_conn_t *c;
  int opts = lua_istable(L, 3) ? 3 : 0;
  if (lua_type(L, 1) != LUA_TFUNCTION) {
    if (!luaL_getmetafield(L, 1, "__call"))
      return luaL_typeerror(L, 1, "function or callable app");
    lua_pop(L, 1);
  }
  bytes = luaL_checklstring(L, 2, &len);
  ls_task_check(gen, L, "inject");
  in = ls_malloc(sizeof *in);
  if (in == NULL)
    return luaL_error(L, "not enough memory");
  memset(in, 0, sizeof *in);
  in->listener.base.gen = gen;
  read_limits(L, opts, &in->listener.limits);
  lua_pushvalue(L, 1);
  in->listener.base.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* Not linked anywhere and never closed: conn_close_cb leaves it to inject_k to free. */
  snprintf(in->listener.url, sizeof in->listener.url, "inject");
  c = conn_new(&in->listener, 1);
  if (c == NULL || ls_buf_append(&c->in, bytes, len) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, in->listener.base.handler_ref);
    ls_free(in, sizeof *in);
    return luaL_error(L, "not enough memory");
  }
  in->conn = c;
  c->read_err = UV_EOF;
  ls_http__process(c);
  lua_settop(L, 0);
  return inject_k(L, LUA_OK, (lua_KContext)in);
}

void ls_http_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg funcs[] = {{"http_listen", l_http_listen}, {"http_inject", l_http_inject},
                                   {NULL, NULL}};
  static const luaL_Reg meth[] = {{"close", l_listener_close}, {"address", l_listener_address},
                                  {"url", l_listener_url}, {NULL, NULL}};
  if (luaL_newmetatable(L, LS_HTTP_LISTENER_MT)) {
    lua_newtable(L);
    luaL_setfuncs(L, meth, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  ls_http__open_lua(L, gen);
  lua_pushlightuserdata(L, gen);
  luaL_setfuncs(L, funcs, 1);
}
