/* libFuzzer target: the Cookie header (lua/luasrv/cookie.lua through req.cookies), the input
 * as the header's value (bytes a field value may not hold become spaces, so the HTTP parser
 * lets the request through to the cookie parser). */
#include <stdint.h>
#include <string.h>

#include "fuzz_app.h"

static const char app_src[] =
    "local app = require('luasrv.http').app()\n"
    "app:get('/', function(req)\n"
    "  local n = 0\n"
    "  for k, v in pairs(req.cookies) do n = n + #k + #v end\n"
    "  return tostring(n)\n"
    "end)\n"
    "return app\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char req[20000];
  size_t len = 0, i;
  if (size > 8000)
    return 0;
  fuzz_put(req, sizeof req, &len, "GET / HTTP/1.1\r\nHost: c\r\nCookie: ", 33);
  for (i = 0; i < size; i++) {
    unsigned char ch = data[i];
    req[len++] = (char)((ch < 0x20 && ch != '\t') || ch == 0x7f ? ' ' : ch);
  }
  fuzz_put(req, sizeof req, &len, "\r\n\r\n", 4);
  fuzz_request(app_src, req, len);
  return 0;
}
