/* The llhttp glue of the HTTP server: the parser callbacks that copy a request's target and
 * header lines into the connection, the checks llhttp leaves to the server (Host, Expect,
 * Transfer-Encoding codings, empty names, limits), path decoding, chunk-size lines with their
 * extensions, the status a parse error is answered with, and the parser run itself (with the
 * upgrades the server does not take). The request cycle that drives it is http_server.c. */
#include <string.h>

#include "http.h"
#include "http_fields.h"

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
      ls_http__deadline(c, c->listener->limits.header_timeout_ms);
  }
  c->seq++;
  if (c->headers == NULL) {
    /* The header index, from the block cache: an idle connection gives it back. */
    size_t size = c->listener->limits.header_count * sizeof *c->headers;
    c->headers = ls_buf_block_take(&size);
    if (c->headers == NULL)
      return reject(c, 503);
    c->headers_size = (uint32_t)size;
  }
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

/* Header lines arrive as pieces of names and values (src/http_fields.h keeps them, as the
 * client's response parser does); the limits are the listener's, and a refused piece is
 * answered 431 (limits), 503 (memory) or 400 (a value without a name). */
static ls_http_fields_t conn_fields(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  ls_http_fields_t f = {&c->head, c->headers, &c->nheaders, c->listener->limits.header_count,
                        &c->hdr_state, c->url_len, c->listener->limits.header_max};
  return f;
}

static int field_reject(llhttp_t *p, int why) {
  return reject(parser_conn(p), why == LS_FIELD_NOMEM ? 503 : why == LS_FIELD_NO_NAME ? 400 : 431);
}

LS_HTTP_FIELD_CALLBACKS(conn_fields, field_reject)

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

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ls_http_fields_t f = conn_fields(p);
  int why = ls_http_field_begin_value(&f);
  if (why == 0 && len > 0 && folded(parser_conn(p), at))
    return reject(parser_conn(p), 400);
  if (why == 0)
    why = ls_http_field_value(&f, at, len);
  return why == 0 ? 0 : field_reject(p, why);
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

/* Finds the path of the target (origin-form, or absolute-form whose authority is skipped),
 * percent-decodes it after the headers in c->head and records where. Returns 0, or the status
 * for a malformed path. */
static int decode_path(ls_http_conn_t *c) {
  const char *t = ls_buf_head(&c->head);
  size_t n = c->url_len, i, start = 0, end;
  size_t out;
  if (n == 1 && t[0] == '*') {
    if (c->parser.method != HTTP_OPTIONS)
      return 400; /* asterisk-form is for OPTIONS only (RFC 9112 §3.2.4) */
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

/* Whether a Host value can be uri-host [":" port] (RFC 3986 §3.2.2): reg-name characters
 * (unreserved, sub-delims, percent-encoding), an IP literal's brackets and colons, a port. Empty
 * is allowed (a target without an authority). Surrounding blanks are trimmed already. The
 * characters allowed are a table made on the first call (one process, one thread). */
static int valid_host(const char *v, size_t len) {
  static unsigned char allowed[256];
  static int ready;
  size_t i;
  if (!ready) {
    const char *p;
    for (i = 0; i < 256; i++)
      allowed[i] = (unsigned char)((i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z') ||
                                   (i >= '0' && i <= '9'));
    for (p = "-._~%!$&'()*+,;=:[]"; *p != '\0'; p++)
      allowed[(unsigned char)*p] = 1;
    ready = 1;
  }
  for (i = 0; i < len; i++)
    if (!allowed[(unsigned char)v[i]])
      return 0;
  return 1;
}

/* Trims the blanks after each field value (RFC 9112 §5: optional whitespace is not part of
 * the value; llhttp leaves them), counts the Host fields and sets *host to the first one's
 * value: one pass over the fields. */
static unsigned trim_values_find_host(ls_http_conn_t *c, const ls_http_header_t **host) {
  const char *base = ls_buf_head(&c->head);
  unsigned i, hosts = 0;
  *host = NULL;
  for (i = 0; i < c->nheaders; i++) {
    ls_http_header_t *h = &c->headers[i];
    while (h->value_len > 0 &&
           (base[h->value_off + h->value_len - 1] == ' ' || base[h->value_off + h->value_len - 1] == '\t'))
      h->value_len--;
    if (h->name_len == 4 && memcmp(base + h->name_off, "host", 4) == 0 && hosts++ == 0)
      *host = h;
  }
  return hosts;
}

static int on_headers_complete(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  const ls_http_limits_t *lim = &c->listener->limits;
  const char *v;
  size_t vlen;
  const ls_http_header_t *host;
  unsigned hosts;
  int status;
  if (p->http_major != 1)
    return reject(c, 505);
  if (p->method == HTTP_CONNECT)
    return reject(c, 501);
  hosts = trim_values_find_host(c, &host);
  if (hosts > 1 || (hosts == 0 && p->http_minor >= 1))
    return reject(c, 400);
  /* RFC 9110 §7.2: a Host that is not a uri-host [ ":" port ] gets 400. Whitespace inside, and
   * the delimiters of other URI parts, cannot be in one. */
  if (host != NULL && !valid_host(ls_buf_head(&c->head) + host->value_off, host->value_len))
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
  c->deadline = 0;
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

/* After each chunk but the last, ls_http__chunk_line() takes the next chunk-size line. */
static unsigned char *conn_chunk_flag(llhttp_t *p) { return &parser_conn(p)->at_chunk_line; }
LS_HTTP_CHUNK_CALLBACK(conn_chunk_flag)

static int on_message_complete(llhttp_t *p) {
  ls_http_conn_t *c = parser_conn(p);
  c->msg_done = 1;
  return HPE_PAUSED;
}

const llhttp_settings_t ls_http__parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    LS_HTTP_FIELD_SETTINGS,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_complete = on_chunk_complete,
    .on_message_complete = on_message_complete,
};

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Length of the chunk extensions at s[0..n) (RFC 9112 §7.1.1, as strict as llhttp: no blank
 * space): `;name[=token|"quoted"]` any number of times. n if they are well formed, else 0. */
size_t ls_http__chunk_ext_valid(const char *s, size_t n) {
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
int ls_http__chunk_line(ls_http_conn_t *c) {
  char *data = c->s.in.data + c->s.in.start;
  size_t len = ls_buf_len(&c->s.in), scan = len < LS_HTTP_CHUNK_LINE_MAX ? len : LS_HTTP_CHUNK_LINE_MAX;
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
  if (ls_http__chunk_ext_valid(semi, cr - hex_len) == 0)
    return 400;
  cut = cr - hex_len;
  c->body_seen += cut;
  if (c->body_seen > c->listener->limits.body_max)
    return 413;
  memmove(data + cut, data, hex_len);
  ls_buf_consume(&c->s.in, cut);
  return 1;
}

/* 1 if the unparsed input starts with a token and a space: a request line with a method that
 * llhttp does not know (501), rather than bytes that are not HTTP at all (400). */
static int starts_with_method(ls_http_conn_t *c) {
  const char *s = ls_buf_head(&c->s.in);
  size_t n = ls_buf_len(&c->s.in), i = 0;
  while (i < n && (s[i] == '\r' || s[i] == '\n'))
    i++; /* empty lines before a request line are allowed */
  n = i + 20 < n ? i + 20 : n;
  for (; i < n && is_tchar((unsigned char)s[i]); i++)
    ;
  return i > 0 && i < n && s[i] == ' ';
}

int ls_http__parse_error_status(ls_http_conn_t *c, llhttp_errno_t err) {
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
llhttp_errno_t ls_http__parser_execute(ls_http_conn_t *c, const char *s, size_t len,
                                       size_t *used) {
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

