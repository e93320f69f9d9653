/* libFuzzer target: length-prefixed framing (src/frame.c), what conn:read_frame and
 * write_frame use: the input's first line as a format name, the rest as a header. A format
 * that parses must decode any header, and a decoded length must encode back to the same
 * bytes when it fits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char fmt_text[16];
  const uint8_t *nl = memchr(data, '\n', size < sizeof fmt_text ? size : sizeof fmt_text);
  ls_frame_fmt_t fmt;
  unsigned char out[8];
  uint64_t len;
  size_t n;
  if (nl == NULL)
    return 0;
  n = (size_t)(nl - data);
  memcpy(fmt_text, data, n);
  fmt_text[n] = '\0';
  if (ls_frame_parse_fmt(fmt_text, &fmt) != 0)
    return 0;
  if (fmt.size != 1 && fmt.size != 2 && fmt.size != 4 && fmt.size != 8)
    abort();
  data += n + 1;
  size -= n + 1;
  if (size < fmt.size)
    return 0;
  len = ls_frame_decode(&fmt, data);
  if (ls_frame_encode(&fmt, len, out) != fmt.size || memcmp(out, data, fmt.size) != 0)
    abort();
  return 0;
}
