/* The llhttp glue, driven through in-process requests: statuses for well-formed and
 * malformed input, pipelining order, and that nothing is parsed after a framing error. */
#include "http_driver.h"
#include "test.h"

static const char app_src[] =
    "local app = require('luasrv.http').app()\n"
    "app:get('/', function() return 'hello' end)\n"
    "app:get('/n/:id', function(req) return req.params.id end)\n"
    "app:post('/echo', function(req) return req:body() end)\n"
    "return app\n";

static http_driver_t driver;
static char out[65536];

static long run(const char *req) { return http_driver_run(&driver, req, strlen(req), out, sizeof out); }

static int starts(const char *prefix) { return strncmp(out, prefix, strlen(prefix)) == 0; }

static int count(const char *needle) {
  int n = 0;
  const char *p = out;
  while ((p = strstr(p, needle)) != NULL) {
    n++;
    p += strlen(needle);
  }
  return n;
}

static void simple_get(void) {
  CHECK(run("GET / HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
  CHECK(starts("HTTP/1.1 200 OK\r\n"));
  CHECK(strstr(out, "Content-Length: 5\r\n") != NULL);
  CHECK(strstr(out, "\r\n\r\nhello") != NULL);
}

static void pipelined_in_order(void) {
  run("GET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /n/2 HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
      "GET /n/3 HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK_EQ_INT(count("HTTP/1.1 200 OK"), 4);
  {
    const char *a = strstr(out, "\r\n\r\n1"), *b = strstr(out, "\r\n\r\n2");
    const char *c = strstr(out, "\r\n\r\nabc"), *d = strstr(out, "\r\n\r\n3");
    CHECK(a && b && c && d && a < b && b < c && c < d);
  }
}

static void chunked_body(void) {
  run("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  CHECK(starts("HTTP/1.1 200 OK\r\n"));
  CHECK(strstr(out, "\r\n\r\nabcde") != NULL);
}

static void status_for(const char *req, const char *status_line) {
  run(req);
  if (!starts(status_line)) {
    fprintf(stderr, "request %s\nwanted %s\ngot %s\n", req, status_line, out);
    exit(1);
  }
}

static void limits_and_errors(void) {
  static char long_target[10000];
  static char req[11000];
  memset(long_target, 'a', sizeof long_target - 1);
  snprintf(req, sizeof req, "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", long_target);
  status_for(req, "HTTP/1.1 414 ");
  status_for("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 ");
  status_for("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400 ");
  status_for("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
             "\r\n\r\n0\r\n\r\n",
             "HTTP/1.1 400 ");
  status_for("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", "HTTP/1.1 413 ");
  status_for("GET / HTTP/2.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505 ");
  status_for("BREW / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 501 ");
  status_for("GET / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n", "HTTP/1.1 417 ");
  status_for("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", "HTTP/1.1 400 ");
  status_for("GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 ");
}

static void too_many_headers(void) {
  static char req[8192];
  size_t n = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: x\r\n");
  int i;
  for (i = 0; i < 120; i++)
    n += (size_t)snprintf(req + n, sizeof req - n, "X-%d: y\r\n", i);
  snprintf(req + n, sizeof req - n, "\r\n");
  status_for(req, "HTTP/1.1 431 ");
}

static void nothing_after_framing_error(void) {
  run("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(starts("HTTP/1.1 400 "));
  CHECK_EQ_INT(count("HTTP/1.1 "), 1);
  CHECK(strstr(out, "Connection: close\r\n") != NULL);
}

static void not_found_and_head(void) {
  status_for("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 ");
  run("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(starts("HTTP/1.1 200 OK\r\n"));
  CHECK(strstr(out, "Content-Length: 5\r\n") != NULL);
  CHECK(strstr(out, "hello") == NULL);
}

int main(int argc, char **argv) {
  static const test_case_t cases[] = {{"simple_get", simple_get},
                                      {"pipelined_in_order", pipelined_in_order},
                                      {"chunked_body", chunked_body},
                                      {"limits_and_errors", limits_and_errors},
                                      {"too_many_headers", too_many_headers},
                                      {"nothing_after_framing_error", nothing_after_framing_error},
                                      {"not_found_and_head", not_found_and_head},
                                      {NULL, NULL}};
  int rc;
  if (http_driver_init(&driver, app_src) != 0)
    return 1;
  rc = test_main(argc, argv, cases);
  http_driver_close(&driver);
  return rc;
}
