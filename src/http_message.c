#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"
#include "log.h"

typedef struct status_s {
  int code;
  const char *line;
} status_t;

/* Pre-built status lines, so a response head costs one copy of each piece. */
static const status_t status_lines[] = {
#define S(code, text) {code, "HTTP/1.1 " #code " " text "\r\n"}
    S(100, "Continue"), S(101, "Switching Protocols"), S(200, "OK"), S(201, "Created"),
    S(202, "Accepted"), S(203, "Non-Authoritative Information"), S(204, "No Content"),
    S(205, "Reset Content"), S(206, "Partial Content"), S(300, "Multiple Choices"),
    S(301, "Moved Permanently"), S(302, "Found"), S(303, "See Other"), S(304, "Not Modified"),
    S(307, "Temporary Redirect"), S(308, "Permanent Redirect"), S(400, "Bad Request"),
    S(401, "Unauthorized"), S(402, "Payment Required"), S(403, "Forbidden"), S(404, "Not Found"),
    S(405, "Method Not Allowed"), S(406, "Not Acceptable"), S(408, "Request Timeout"),
    S(409, "Conflict"), S(410, "Gone"), S(411, "Length Required"), S(412, "Precondition Failed"),
    S(413, "Content Too Large"), S(414, "URI Too Long"), S(415, "Unsupported Media Type"),
    S(416, "Range Not Satisfiable"), S(417, "Expectation Failed"), S(418, "I'm a teapot"),
    S(421, "Misdirected Request"), S(422, "Unprocessable Content"), S(425, "Too Early"),
    S(426, "Upgrade Required"), S(428, "Precondition Required"), S(429, "Too Many Requests"),
    S(431, "Request Header Fields Too Large"), S(451, "Unavailable For Legal Reasons"),
    S(500, "Internal Server Error"), S(501, "Not Implemented"), S(502, "Bad Gateway"),
    S(503, "Service Unavailable"), S(504, "Gateway Timeout"),
    S(505, "HTTP Version Not Supported"),
#undef S
    {0, NULL}};

const char *ls_http__status_line(int status, size_t *len) {
  /* Every code's line and length, found by index: registered phrases first, then the bare
   * "HTTP/1.1 NNN " for the rest (the phrase is optional, RFC 9112 §4). Filled once. */
  static char other[600][16];
  static const char *lines[600];
  static unsigned char lens[600];
  if (status < 100 || status > 599)
    return NULL;
  if (lines[status] == NULL) {
    const status_t *s;
    const char *l = NULL;
    for (s = status_lines; s->code != 0 && l == NULL; s++)
      if (s->code == status)
        l = s->line;
    if (l == NULL) {
      snprintf(other[status], sizeof other[status], "HTTP/1.1 %d \r\n", status);
      l = other[status];
    }
    lens[status] = (unsigned char)strlen(l);
    lines[status] = l;
  }
  *len = lens[status];
  return lines[status];
}

const char *ls_http__date(uv_loop_t *loop, size_t *len) {
  static char line[64];
  static size_t line_len;
  static time_t cached = -1;
  time_t now = (time_t)(uv_now(loop) / 1000);
  /* uv_now is monotonic; wall time is read again only when its second may have changed. */
  if (now != cached) {
    time_t wall = time(NULL);
    struct tm tm;
    gmtime_r(&wall, &tm);
    line_len = strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    cached = now;
  }
  *len = line_len;
  return line;
}

int ls_http__append_date(ls_buf_t *b, uv_loop_t *loop) {
  size_t len;
  const char *line = ls_http__date(loop, &len);
  return ls_buf_append(b, line, len);
}

/* RFC 9110 tchar: letters, digits and !#$%&'*+-.^_`|~ (one byte per byte value: a load and a
 * test per character of a name). */
static const unsigned char tchar[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

int ls_http__valid_name(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  if (len == 0)
    return 0;
  while (p < end)
    if (!tchar[*p++])
      return 0;
  return 1;
}

int ls_http__valid_value(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch <= '\r' && (ch == '\r' || ch == '\n' || ch == '\0'))
      return 0;
  }
  return 1;
}

static int status_has_body(int status) { return status >= 200 && status != 204 && status != 304; }

static int append_response(ls_http_conn_t *c, int status, const char *ctype, const char *body,
                           size_t body_len, const char *extra, size_t extra_len);

/* The value of a header the handler set (res_headers), or NULL; the name in lower case. */
static const char *res_header(const ls_http_conn_t *c, const char *name, size_t *len) {
  const char *p = ls_buf_head(&c->res_headers), *end = p + ls_buf_len(&c->res_headers);
  size_t nl = strlen(name);
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL)
      break;
    if ((size_t)(eol - p) > nl + 1 && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
      const char *v = p + nl + 1;
      while (v < eol && *v == ' ')
        v++;
      *len = (size_t)(eol - v) - (eol > v && eol[-1] == '\r');
      return v;
    }
    p = eol + 1;
  }
  return NULL;
}

int ls_http__gzip_decision(ls_http_conn_t *c, int status, const char *ctype, size_t length) {
  const ls_gzip_conf_t *conf = c->listener->gzip;
  const char *ae;
  size_t ctype_len = ctype != NULL ? strlen(ctype) : 0, ae_len, dummy;
  if (conf == NULL || !status_has_body(status) || status == 206 || c->has_clen ||
      res_header(c, "content-encoding", &dummy) != NULL)
    return 0;
  if (c->has_ctype || ctype == NULL)
    ctype = res_header(c, "content-type", &ctype_len);
  if (!ls_gzip_eligible(conf, ctype, ctype_len, length))
    return 0;
  ae = ls_http__header(c, "accept-encoding", 15, &ae_len);
  return ls_gzip_accepted(ae, ae_len) ? 2 : 1;
}

int ls_http__append_res_headers(ls_http_conn_t *c, ls_buf_t *b, int gzip_decision) {
  const char *p = ls_buf_head(&c->res_headers), *end = p + ls_buf_len(&c->res_headers);
  if (gzip_decision >= 1 && ls_buf_append(b, "Vary: Accept-Encoding\r\n", 23) != 0)
    return -1;
  if (gzip_decision < 2)
    return ls_buf_append(b, p, (size_t)(end - p));
  if (ls_buf_append(b, "Content-Encoding: gzip\r\n", 24) != 0)
    return -1;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol != NULL ? eol + 1 : end;
    if ((size_t)(next - p) > 7 && strncasecmp(p, "etag: \"", 7) == 0) {
      if (ls_buf_append(b, p, 6) != 0 || ls_buf_append(b, "W/", 2) != 0 ||
          ls_buf_append(b, p + 6, (size_t)(next - p - 6)) != 0)
        return -1;
    } else if (ls_buf_append(b, p, (size_t)(next - p)) != 0) {
      return -1;
    }
    p = next;
  }
  return 0;
}

int ls_http__append_response(ls_http_conn_t *c, int status, const char *ctype, const char *body,
                             size_t body_len) {
  ls_buf_t gz, extra;
  int decision = 0, rc;
  /* A head without its body (body NULL: res:sendfile sends the file itself) stays identity. */
  if (body != NULL && body_len > 0)
    decision = ls_http__gzip_decision(c, status, ctype, body_len);
  if (decision == 0)
    return append_response(c, status, ctype, body, body_len, ls_buf_head(&c->res_headers),
                           ls_buf_len(&c->res_headers));
  ls_buf_init(&gz);
  ls_buf_init(&extra);
  if (decision == 2 && ls_gzip_compress(c->listener->gzip, body, body_len, &gz) != 0)
    decision = 1; /* out of memory: identity */
  rc = ls_http__append_res_headers(c, &extra, decision);
  if (rc == 0) {
    if (decision == 2)
      rc = append_response(c, status, ctype, ls_buf_head(&gz), ls_buf_len(&gz),
                           ls_buf_head(&extra), ls_buf_len(&extra));
    else
      rc = append_response(c, status, ctype, body, body_len, ls_buf_head(&extra),
                           ls_buf_len(&extra));
  }
  ls_buf_free(&gz);
  ls_buf_free(&extra);
  return rc;
}

/* Builds a complete response into c->s.out, with `extra` as the handler's header lines. */
static int append_response(ls_http_conn_t *c, int status, const char *ctype, const char *body,
                           size_t body_len, const char *extra, size_t extra_len) {
  ls_buf_t *b = &c->s.out;
  size_t line_len, date_len, ctype_len = 0;
  const char *line = ls_http__status_line(status, &line_len);
  const char *date = ls_http__date(c->rt->loop, &date_len);
  int has_body = status_has_body(status);
  int send_body = has_body && !c->is_head && body_len > 0;
  char num[24], *p, *digits = num + sizeof num;
  if (line == NULL)
    return -1;
  if (has_body && ctype != NULL && !c->has_ctype)
    ctype_len = strlen(ctype);
  /* Content-Length: digits written backwards, cheaper than snprintf on every response. */
  if (has_body && !c->has_clen) {
    size_t v = body_len;
    do {
      *--digits = (char)('0' + v % 10);
      v /= 10;
    } while (v != 0);
  }
  /* One reservation for the whole response, then plain copies. */
  if (ls_buf_reserve(b, line_len + date_len + ctype_len + extra_len + (send_body ? body_len : 0) +
                            sizeof num + 128) != 0)
    return -1;
  p = b->data + b->end;
#define PUT(s, n) (memcpy(p, (s), (n)), p += (n))
  PUT(line, line_len);
  PUT("Server: luasrv\r\n", 16);
  PUT(date, date_len);
  if (ctype_len > 0) {
    PUT("Content-Type: ", 14);
    PUT(ctype, ctype_len);
    PUT("\r\n", 2);
  }
  if (has_body && !c->has_clen) {
    PUT("Content-Length: ", 16);
    PUT(digits, (size_t)(num + sizeof num - digits));
    PUT("\r\n", 2);
  }
  if (extra_len > 0)
    PUT(extra, extra_len);
  if (!c->keep_alive)
    PUT("Connection: close\r\n", 19);
  else if (c->parser.http_minor == 0)
    PUT("Connection: keep-alive\r\n", 24);
  PUT("\r\n", 2);
  if (send_body)
    PUT(body, body_len);
#undef PUT
  b->end = (size_t)(p - b->data);
  c->status = status;
  c->bytes_out = body_len;
  return 0;
}

void ls_http__error_response(ls_http_conn_t *c, int status, int close) {
  size_t len;
  const char *line = ls_http__status_line(status, &len);
  char body[128];
  int n;
  /* "HTTP/1.1 404 Not Found\r\n" -> "404 Not Found\n" */
  n = snprintf(body, sizeof body, "%.*s\n", (int)(len - 11), line + 9);
  if (close)
    c->keep_alive = 0;
  ls_buf_consume(&c->res_headers, ls_buf_len(&c->res_headers));
  c->has_ctype = c->has_clen = 0;
  ls_http__append_response(c, status, "text/plain; charset=utf-8", body, (size_t)n);
  ls_http__access_log(c);
  if (close)
    c->state = LS_HTTP_CLOSING;
}
