/* permessage-deflate: the shared zlib streams (see ws_deflate.h). */
#include "ws_deflate.h"

#include <string.h>
#include <zlib.h>

#include "errors.h"

/* Compression level for messages: zlib's default trades well for short, chatty messages. */
#define LS_WS_DEFLATE_LEVEL 6

static z_stream inflater;
static int inflater_ready;
static z_stream deflaters[16]; /* by window bits, 9 to 15 */
static unsigned char deflater_ready[16];

int ls_ws_inflate(const char *in, size_t n, size_t max, ls_buf_t *out) {
  static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
  size_t start = ls_buf_len(out);
  int pass, rc = Z_OK;
  if (!inflater_ready) {
    if (inflateInit2(&inflater, -15) != Z_OK)
      return 1011;
    inflater_ready = 1;
  } else {
    inflateReset(&inflater);
  }
  for (pass = 0; pass < 2 && rc != Z_STREAM_END; pass++) {
    inflater.next_in = (Bytef *)(pass == 0 ? in : (const char *)tail);
    inflater.avail_in = (uInt)(pass == 0 ? n : sizeof tail);
    for (;;) {
      size_t room, produced = ls_buf_len(out) - start;
      if (produced > max)
        return 1009;
      room = max + 1 - produced; /* one byte past the limit tells that it is over */
      if (room > 64 * 1024)
        room = 64 * 1024;
      if (ls_buf_reserve(out, room) != 0)
        return 1011;
      inflater.next_out = (Bytef *)out->data + out->end;
      inflater.avail_out = (uInt)room;
      rc = inflate(&inflater, Z_SYNC_FLUSH);
      out->end += room - inflater.avail_out;
      if (rc == Z_STREAM_END)
        break; /* a final block: whatever follows it is ignored */
      if (rc != Z_OK && rc != Z_BUF_ERROR)
        return 1007;
      if (inflater.avail_in == 0 && inflater.avail_out > 0)
        break; /* all taken, all given out */
      if (rc == Z_BUF_ERROR && inflater.avail_out > 0)
        return 1007; /* stuck with input and room: not deflate data */
    }
  }
  return ls_buf_len(out) - start > max ? 1009 : 0;
}

int ls_ws_deflate(const char *s, size_t n, int bits, ls_buf_t *out) {
  z_stream *z;
  if (bits < 9 || bits > 15)
    bits = 15;
  z = &deflaters[bits];
  if (!deflater_ready[bits]) {
    /* zlib does not take a window of 8 bits for raw deflate; 9 is the least. */
    if (deflateInit2(z, LS_WS_DEFLATE_LEVEL, Z_DEFLATED, -bits, bits - 7 < 1 ? 1 : bits - 7,
                     Z_DEFAULT_STRATEGY) != Z_OK)
      return LS_ENOMEM;
    deflater_ready[bits] = 1;
  } else {
    deflateReset(z);
  }
  z->next_in = (Bytef *)s;
  z->avail_in = (uInt)n;
  do {
    size_t room = deflateBound(z, z->avail_in) + 16;
    if (ls_buf_reserve(out, room) != 0)
      return LS_ENOMEM;
    z->next_out = (Bytef *)out->data + out->end;
    z->avail_out = (uInt)room;
    deflate(z, Z_SYNC_FLUSH);
    out->end += room - z->avail_out;
  } while (z->avail_out == 0);
  /* The sync flush ends in 00 00 FF FF, which the peer puts back (RFC 7692 §7.2.1). */
  if (ls_buf_len(out) >= 4 && memcmp(out->data + out->end - 4, "\x00\x00\xff\xff", 4) == 0)
    out->end -= 4;
  return 0;
}
