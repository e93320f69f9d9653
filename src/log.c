#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static ls_log_level_t log_min = LS_LOG_INFO;
static char log_tag[32]; /* after the level: "worker 2: " in --workers workers */
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ls_log_set_level(ls_log_level_t min) { log_min = min; }

void ls_log_set_tag(const char *tag) {
  snprintf(log_tag, sizeof log_tag, "%s%s", tag, tag[0] != '\0' ? ": " : "");
}

/* "2024-01-02 03:04:05 [level] tag: " into out; returns its length. */
static size_t log_prefix(ls_log_level_t level, char *out, size_t size) {
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  int n;
  localtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
  n = snprintf(out, size, "%s [%s] %s", stamp, level_names[level], log_tag);
  return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* Writes prefix, message and newline with one write where it can, so that the lines of
 * several processes sharing stderr (--workers) do not mix. */
static void log_line(ls_log_level_t level, const char *msg, size_t len) {
  char line[2048], *buf = line;
  size_t n = log_prefix(level, line, sizeof line);
  if (n + len + 1 > sizeof line) {
    buf = malloc(n + len + 1);
    if (buf == NULL) {
      fwrite(line, 1, n, stderr);
      fwrite(msg, 1, len, stderr);
      fputc('\n', stderr);
      fflush(stderr);
      return;
    }
    memcpy(buf, line, n);
  }
  memcpy(buf + n, msg, len);
  buf[n + len] = '\n';
  fwrite(buf, 1, n + len + 1, stderr);
  fflush(stderr);
  if (buf != line)
    free(buf);
}

void ls_log(ls_log_level_t level, const char *fmt, ...) {
  char msg[1024], *p = msg;
  va_list ap;
  int n;
  if (level < log_min)
    return;
  va_start(ap, fmt);
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof msg) {
    p = malloc((size_t)n + 1);
    if (p == NULL) {
      p = msg;
      n = (int)sizeof msg - 1;
    } else {
      va_start(ap, fmt);
      vsnprintf(p, (size_t)n + 1, fmt, ap);
      va_end(ap);
    }
  }
  log_line(level, p, (size_t)n);
  if (p != msg)
    free(p);
}

void ls_log_msg(ls_log_level_t level, const char *msg, size_t len) {
  if (level < log_min)
    return;
  log_line(level, msg, len);
}
