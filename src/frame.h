/* Length-prefixed framing: a fixed-size unsigned length header, then that many bytes.
 * Pure functions, shared by conn:read_frame/write_frame and tested on their own. */
#ifndef LS_FRAME_H
#define LS_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef struct ls_frame_fmt_s {
  unsigned size;  /* header bytes: 1, 2, 4 or 8 */
  int little;     /* 1 for little-endian */
} ls_frame_fmt_t;

/* Parses "u8", "u16", "u32", "u64", optionally followed by "be" (the default) or "le".
 * Returns 0, or -1 for an unknown format. */
int ls_frame_parse_fmt(const char *s, ls_frame_fmt_t *fmt);

/* Reads a header from `p` (at least fmt->size bytes). */
uint64_t ls_frame_decode(const ls_frame_fmt_t *fmt, const unsigned char *p);

/* Writes the header for `len` into `out` (8 bytes of room). Returns the header size, or 0 when
 * `len` does not fit the format. */
unsigned ls_frame_encode(const ls_frame_fmt_t *fmt, uint64_t len, unsigned char *out);

#endif
