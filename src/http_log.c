/* The access log: a line per request (nginx's combined format, or JSON with --log-json) on
 * stdout. Lines are formatted by hand into one buffer, without stdio, and written once per
 * loop turn (a check handle, run after each poll) or sooner when the buffer fills: under load
 * one write carries the lines of every request the turn answered. ls_http_log_close writes
 * what is left (a graceful stop: SIGTERM, SIGINT, the loop running out). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>

#include "http.h"

#define LOG_BUF_SIZE (64 * 1024)
/* The longest line: the target (1024 escaped bytes), user agent and referer (256 each), the
 * rest (address, time, method, numbers, quotes) well under 512. */
#define LOG_LINE_MAX 2048

static int log_enabled = 1;
static int log_json = 0;
static char log_buf[LOG_BUF_SIZE];
static size_t log_len;
static uv_check_t log_check;
static int log_check_state; /* 0: not made; 1: made, stopped; 2: running */
static int log_closed;      /* after ls_http_log_close: each line is written at once */

void ls_http__set_log_format(int json, int enabled) {
  log_json = json;
  log_enabled = enabled;
}

/* Whether stdout is a pipe, found on the first write (-1: not yet known). */
static int log_to_pipe = -1;

/* Writes the buffer to stdout. To a pipe, in pieces of at most PIPE_BUF bytes ending at a line
 * end: such writes are atomic, so the lines of several workers sharing the pipe never mix (a
 * regular file's writes are whole already). A write error other than EINTR drops the lines (a
 * closed stdout must not stop the server); EAGAIN (a non-blocking pipe that is full) keeps
 * them for the next turn. */
static void log_write(void) {
  size_t off = 0;
  if (log_to_pipe < 0) {
    struct stat st;
    log_to_pipe = fstat(STDOUT_FILENO, &st) == 0 && S_ISFIFO(st.st_mode);
  }
  while (off < log_len) {
    size_t n = log_len - off;
    ssize_t w;
    if (log_to_pipe && n > PIPE_BUF) {
      const char *nl = log_buf + off + PIPE_BUF;
      while (nl > log_buf + off && nl[-1] != '\n')
        nl--;
      n = nl > log_buf + off ? (size_t)(nl - (log_buf + off)) : PIPE_BUF;
    }
    w = write(STDOUT_FILENO, log_buf + off, n);
    if (w > 0) {
      off += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else {
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        memmove(log_buf, log_buf + off, log_len - off);
        log_len -= off;
        return;
      }
      break;
    }
  }
  log_len = 0;
}

static void log_check_cb(uv_check_t *h) {
  log_write();
  if (log_len == 0) {
    uv_check_stop(h);
    log_check_state = 1;
  }
}

void ls_http_log_close(void) {
  log_closed = 1;
  log_write();
  if (log_check_state != 0) {
    uv_close((uv_handle_t *)&log_check, NULL);
    log_check_state = 0;
  }
}

/* ---- formatting --------------------------------------------------------------------------- */

/* Copies s into out (at most `max` bytes) as a log-safe string, so a client cannot forge
 * log lines: quotes, backslashes, control and non-ASCII bytes escaped as \xHH (nginx's
 * style) or, for the JSON format, as \" \\ and \u00HH. Returns how many bytes of s it took;
 * *olen gets the length written. */
static size_t log_escape(char *out, size_t max, const char *s, size_t len, size_t *olen) {
  static const char hex[] = "0123456789abcdef";
  size_t i, o = 0;
  for (i = 0; i < len && o + 7 < max; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\' || ch < 0x20 || ch >= 0x7f) {
      out[o++] = '\\';
      if (log_json && (ch == '"' || ch == '\\')) {
        out[o++] = (char)ch;
        continue;
      }
      if (log_json) {
        memcpy(out + o, "u00", 3);
        o += 3;
      } else {
        out[o++] = 'x';
      }
      out[o++] = hex[ch >> 4];
      out[o++] = hex[ch & 15];
    } else {
      out[o++] = (char)ch;
    }
  }
  out[o] = '\0';
  *olen = o;
  return i;
}

void ls_http__target_text(const ls_http_conn_t *c, char *out, size_t size) {
  size_t n;
  /* A target longer than fits is cut, and says so. */
  if (log_escape(out, size - 3, ls_buf_head(&c->head), c->url_len, &n) < c->url_len)
    memcpy(out + n, "...", 4);
}

/* The time of the line, formatted once a second: "05/Dec/2026:18:40:20 +0000" (local time) or
 * "2026-12-05T18:40:20Z" (UTC, JSON). */
static const char *log_time(uv_loop_t *loop, size_t *len) {
  static char stamp[40];
  static size_t stamp_len;
  static time_t cached = -1;
  static int cached_json = -1;
  time_t now = (time_t)(uv_now(loop) / 1000);
  if (now != cached || cached_json != log_json) {
    time_t wall = time(NULL);
    struct tm tm;
    if (log_json) {
      gmtime_r(&wall, &tm);
      stamp_len = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    } else {
      localtime_r(&wall, &tm);
      stamp_len = strftime(stamp, sizeof stamp, "%d/%b/%Y:%H:%M:%S %z", &tm);
    }
    cached = now;
    cached_json = log_json;
  }
  *len = stamp_len;
  return stamp;
}

/* Appends an unsigned number in decimal. */
static char *put_uint(char *p, unsigned long long v) {
  char digits[24], *d = digits + sizeof digits;
  do {
    *--d = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  memcpy(p, d, (size_t)(digits + sizeof digits - d));
  return p + (digits + sizeof digits - d);
}

/* Appends the peer's address: IPv4 by hand (the usual case), the others through
 * ls_http__peer_name. */
static char *put_addr(char *p, const ls_http_conn_t *c) {
  if (c->peer.sa.sa_family == AF_INET) {
    const unsigned char *b = (const unsigned char *)&c->peer.in4.sin_addr;
    int i;
    for (i = 0; i < 4; i++) {
      if (i > 0)
        *p++ = '.';
      p = put_uint(p, b[i]);
    }
    return p;
  }
  ls_http__peer_name(c, p, INET6_ADDRSTRLEN, "-");
  return p + strlen(p);
}

/* Appends a request header's value, escaped and cut to 255 bytes, or "-". */
static char *put_header(char *p, ls_http_conn_t *c, const char *name, size_t name_len) {
  size_t vlen, n;
  const char *v = ls_http__header(c, name, name_len, &vlen);
  if (v == NULL) {
    *p++ = '-';
    return p;
  }
  log_escape(p, 256, v, vlen, &n);
  return p + n;
}

#define PUT(s, n) (memcpy(p, (s), (n)), p += (n))
#define PUTS(lit) PUT(lit, sizeof(lit) - 1)

void ls_http__access_log(ls_http_conn_t *c) {
  const char *method, *stamp;
  size_t stamp_len, n;
  char *p, *line;
  if (!log_enabled || c->virtual_conn || c->logged)
    return;
  c->logged = 1;
  if (LOG_BUF_SIZE - log_len < LOG_LINE_MAX)
    log_write();
  if (LOG_BUF_SIZE - log_len < LOG_LINE_MAX)
    return; /* stdout does not take more now: the line is dropped rather than block */
  if (log_check_state == 0 && !log_closed) {
    atexit(log_write); /* exit() without ls_http_log_close (a script under a stock lua5.4) */
    uv_check_init(c->rt->loop, &log_check);
    uv_unref((uv_handle_t *)&log_check);
    log_check_state = 1;
  }
  if (log_check_state == 1) {
    uv_check_start(&log_check, log_check_cb);
    log_check_state = 2;
  }
  method = c->url_len > 0 ? llhttp_method_name((llhttp_method_t)c->parser.method) : "-";
  stamp = log_time(c->rt->loop, &stamp_len);
  line = p = log_buf + log_len;
  if (log_json) {
    PUTS("{\"time\":\"");
    PUT(stamp, stamp_len);
    PUTS("\",\"remote\":\"");
    p = put_addr(p, c);
    PUTS("\",\"method\":\"");
    PUT(method, strlen(method));
    PUTS("\",\"target\":\"");
  } else {
    p = put_addr(p, c);
    PUTS(" - - [");
    PUT(stamp, stamp_len);
    PUTS("] \"");
    PUT(method, strlen(method));
    *p++ = ' ';
  }
  ls_http__target_text(c, p, 1024);
  p += strlen(p);
  {
    /* What comes before the version, after it, after the status, the bytes, the referer and
     * the user agent, in each format. */
    static const char *const seps[2][6] = {
        {" HTTP/", "\" ", " ", " \"", "\" \"", "\"\n"},
        {"\",\"version\":\"", "\",\"status\":", ",\"bytes\":", ",\"referer\":\"",
         "\",\"user_agent\":\"", "\"}\n"}};
    const char *const *sep = seps[log_json ? 1 : 0];
    PUT(sep[0], strlen(sep[0]));
    p = put_uint(p, c->parser.http_major);
    *p++ = '.';
    p = put_uint(p, c->parser.http_minor);
    PUT(sep[1], strlen(sep[1]));
    p = put_uint(p, (unsigned)c->status);
    PUT(sep[2], strlen(sep[2]));
    p = put_uint(p, c->bytes_out);
    PUT(sep[3], strlen(sep[3]));
    p = put_header(p, c, "referer", 7);
    PUT(sep[4], strlen(sep[4]));
    p = put_header(p, c, "user-agent", 10);
    PUT(sep[5], strlen(sep[5]));
  }
  n = (size_t)(p - line);
  log_len += n;
  if (log_closed)
    log_write();
}
