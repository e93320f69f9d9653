/* libFuzzer target: arbitrary bytes as a client's whole input, through the HTTP parser glue,
 * limits, router and response code (in-process, no sockets). Any crash, sanitizer report or
 * Lua error escaping the server is a finding. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../c/http_driver.h"

static const char app_src[] =
    "local app = require('luasrv.http').app()\n"
    "app:get('/', function() return 'hello' end)\n"
    "app:get('/users/:id', function(req) return { id = req.params.id, q = req.query } end)\n"
    "app:get('/files/*path', function(req) return req.params.path end)\n"
    "app:post('/echo', function(req) return req:body() end)\n"
    "app:post('/json', function(req) return { v = req:json() } end)\n"
    "app:any('/inspect', function(req) return { h = req.headers, c = req.cookies,\n"
    "  p = req.path, r = req.raw_path, t = req.target } end)\n"
    "app:get('/stream', function(req, res) res:write('a') res:write('b') end)\n"
    "return app\n";

static http_driver_t driver;
static int ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ready) {
    if (http_driver_init(&driver, app_src) != 0)
      abort();
    ready = 1;
  }
  if (http_driver_run(&driver, (const char *)data, size, NULL, 0) < 0)
    abort(); /* the in-process driver itself failed: the server let an error escape */
  return 0;
}
