#include "frame.h"

#include <string.h>

int ls_frame_parse_fmt(const char *s, ls_frame_fmt_t *fmt) {
  const char *rest;
  if (s[0] != 'u')
    return -1;
  if (s[1] == '8') {
    fmt->size = 1;
    rest = s + 2;
  } else if (strncmp(s + 1, "16", 2) == 0) {
    fmt->size = 2;
    rest = s + 3;
  } else if (strncmp(s + 1, "32", 2) == 0) {
    fmt->size = 4;
    rest = s + 3;
  } else if (strncmp(s + 1, "64", 2) == 0) {
    fmt->size = 8;
    rest = s + 3;
  } else {
    return -1;
  }
  if (*rest == '\0' || strcmp(rest, "be") == 0)
    fmt->little = 0;
  else if (strcmp(rest, "le") == 0)
    fmt->little = 1;
  else
    return -1;
  return 0;
}

uint64_t ls_frame_decode(const ls_frame_fmt_t *fmt, const unsigned char *p) {
  uint64_t v = 0;
  unsigned i;
  for (i = 0; i < fmt->size; i++) {
    unsigned idx = fmt->little ? fmt->size - 1 - i : i;
    v = (v << 8) | p[idx];
  }
  return v;
}

unsigned ls_frame_encode(const ls_frame_fmt_t *fmt, uint64_t len, unsigned char *out) {
  unsigned i;
  if (fmt->size < 8 && len >> (fmt->size * 8) != 0)
    return 0;
  for (i = 0; i < fmt->size; i++) {
    unsigned char byte = (unsigned char)(len >> (8 * i));
    out[fmt->little ? i : fmt->size - 1 - i] = byte;
  }
  return fmt->size;
}
