/* libFuzzer target: the router's path matching (the core's walk of the route trie,
 * src/http_route.c, and lua/luasrv/router.lua's dispatch for what the core leaves to it) and
 * static file lookups (lua/luasrv/static.lua): the input as a request target, against routes
 * with parameters, splats, a mounted app and a static mount on a small directory made once.
 * The first byte picks the method. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_app.h"

static char app_src[2048];

static void make_app(void) {
  char dir[] = "/tmp/luasrv-fuzz-router-XXXXXX", cmd[256];
  if (mkdtemp(dir) == NULL)
    abort();
  snprintf(cmd, sizeof cmd, "mkdir -p %s/sub && echo hi > %s/a.txt && echo x > %s/sub/index.html",
           dir, dir, dir);
  if (system(cmd) != 0)
    abort();
  snprintf(app_src, sizeof app_src,
           "local http = require('luasrv.http')\n"
           "local app = http.app()\n"
           "app:get('/', function() return 'root' end)\n"
           /* Strings, not tables: a parameter may hold any bytes, and srv.json refuses to
            * encode invalid UTF-8 (a 500 that would say nothing about the router). */
           "app:get('/users/:id', function(req) return 'user ' .. req.params.id end)\n"
           "app:get('/users/:id/posts/:post', function(req)\n"
           "  return req.params.id .. '/' .. req.params.post end)\n"
           "app:any('/files/*path', function(req) return req.params.path end)\n"
           "app:post('/items', function() return 201, 'made' end)\n"
           "local sub = http.app()\n"
           "sub:get('/x/:y', function(req) return req.params.y .. (req.mount or '') end)\n"
           "app:mount('/api', sub)\n"
           "app:static('/s', '%s', { listing = true })\n"
           "app:static('/', '%s')\n"
           "return app\n",
           dir, dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *methods[] = {"GET ", "HEAD ", "POST ", "OPTIONS ", "PUT ", "DELETE "};
  static char req[20000];
  size_t len = 0, i;
  const char *m;
  if (size < 1 || size > 4000)
    return 0;
  if (app_src[0] == '\0')
    make_app();
  m = methods[data[0] % 6];
  fuzz_put(req, sizeof req, &len, m, strlen(m));
  req[len++] = '/';
  for (i = 1; i < size; i++) {
    unsigned char ch = data[i];
    if (ch > 0x20 && ch < 0x7f)
      req[len++] = (char)ch;
    else
      len += (size_t)snprintf(req + len, 4, "%%%02X", ch);
  }
  fuzz_put(req, sizeof req, &len, " HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n", 42);
  fuzz_request(app_src, req, len);
  return 0;
}
