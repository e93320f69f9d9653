/* Shared by the fuzz targets that drive an app in-process (tests/c/http_driver.h): one app
 * per target, loaded once, and a request whose answer is checked. The parsers of untrusted
 * bytes that live in Lua (forms, cookies, the router) refuse bad input with a 4xx answer; a
 * 500 means a Lua error escaped from one of them, which is a finding, as is a crash or a
 * sanitizer report. */
#ifndef LS_FUZZ_APP_H
#define LS_FUZZ_APP_H

#include <stdio.h>
#include <stdlib.h>

#include "../c/http_driver.h"

static http_driver_t fuzz_driver;
static int fuzz_ready;

/* Sends one request (the whole input of a client) to the app made from app_src. */
static inline void fuzz_request(const char *app_src, const char *bytes, size_t len) {
  static char head[64];
  long n;
  if (!fuzz_ready) {
    if (http_driver_init(&fuzz_driver, app_src) != 0)
      abort();
    fuzz_ready = 1;
  }
  n = http_driver_run(&fuzz_driver, bytes, len, head, sizeof head);
  if (n < 0)
    abort(); /* the driver itself failed: an error escaped the server */
  if (n >= 12 && memcmp(head, "HTTP/1.1 500", 12) == 0) {
    fprintf(stderr, "a parser let a Lua error escape (500); request: %.*s\n", (int)len, bytes);
    abort();
  }
}

/* Appends s[0..n) to buf at *len (bounded by cap). */
static inline void fuzz_put(char *buf, size_t cap, size_t *len, const char *s, size_t n) {
  if (*len + n > cap)
    n = cap - *len;
  memcpy(buf + *len, s, n);
  *len += n;
}

#endif
