/* libFuzzer target: request forms (lua/luasrv/form.lua through req:form()). The first input
 * byte picks the kind: multipart/form-data (the input's first line is the boundary, the rest
 * the body) or application/x-www-form-urlencoded (the rest is the body, and also the query
 * string of a second request, for the C query decoder). */
#include <stdint.h>
#include <string.h>

#include "fuzz_app.h"

static const char app_src[] =
    "local app = require('luasrv.http').app()\n"
    "local function touch(f)\n"
    "  for _, v in pairs(f) do\n"
    "    if type(v) == 'table' and v.read then assert(v:read()) end\n"
    "  end\n"
    "  return 'ok'\n"
    "end\n"
    "app:post('/form', function(req) return touch(req:form()) end)\n"
    "app:get('/q', function(req) local n = 0; for _ in pairs(req.query) do n = n + 1 end;\n"
    "  return tostring(n) end)\n"
    "return app\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char req[20000];
  char head[256];
  size_t len = 0, blen, i;
  const char *body;
  if (size < 1 || size > 16000)
    return 0;
  body = (const char *)data + 1;
  blen = size - 1;
  if (data[0] & 1) {
    const char *nl = memchr(body, '\n', blen < 72 ? blen : 72);
    size_t bl = nl != NULL ? (size_t)(nl - body) : 0;
    int h = snprintf(head, sizeof head,
                     "POST /form HTTP/1.1\r\nHost: f\r\nContent-Type: multipart/form-data; "
                     "boundary=%.*s\r\nContent-Length: %zu\r\n\r\n",
                     (int)bl, body, blen - (nl != NULL ? bl + 1 : 0));
    fuzz_put(req, sizeof req, &len, head, (size_t)h);
    if (nl != NULL) {
      body += bl + 1;
      blen -= bl + 1;
    }
    fuzz_put(req, sizeof req, &len, body, blen);
    fuzz_request(app_src, req, len);
    return 0;
  }
  {
    int h = snprintf(head, sizeof head,
                     "POST /form HTTP/1.1\r\nHost: f\r\nContent-Type: "
                     "application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n",
                     blen);
    fuzz_put(req, sizeof req, &len, head, (size_t)h);
    fuzz_put(req, sizeof req, &len, body, blen);
    fuzz_request(app_src, req, len);
  }
  /* The same bytes as a query string (bytes a target may not hold percent-encoded). */
  len = 0;
  fuzz_put(req, sizeof req, &len, "GET /q?", 7);
  for (i = 0; i < blen && len + 16 < sizeof req; i++) {
    unsigned char ch = (unsigned char)body[i];
    if (ch > 0x20 && ch < 0x7f && ch != '#') {
      req[len++] = (char)ch;
    } else {
      len += (size_t)snprintf(req + len, 4, "%%%02X", ch);
    }
  }
  fuzz_put(req, sizeof req, &len, " HTTP/1.1\r\nHost: f\r\n\r\n", 22);
  fuzz_request(app_src, req, len);
  return 0;
}
