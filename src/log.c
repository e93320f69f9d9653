#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include "log.h"

static ls_log_level_t log_min = LS_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ls_log_set_level(ls_log_level_t min) { log_min = min; }

static void log_prefix(ls_log_level_t level) {
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
  fprintf(stderr, "%s [%s] ", stamp, level_names[level]);
}

void ls_log(ls_log_level_t level, const char *fmt, ...) {
  va_list ap;
  if (level < log_min)
    return;
  log_prefix(level);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

void ls_log_msg(ls_log_level_t level, const char *msg, size_t len) {
  if (level < log_min)
    return;
  log_prefix(level);
  fwrite(msg, 1, len, stderr);
  fputc('\n', stderr);
  fflush(stderr);
}
