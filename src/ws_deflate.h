/* permessage-deflate (RFC 7692) for WebSocket messages. The server always negotiates
 * server_no_context_takeover and client_no_context_takeover: each message is compressed and
 * decompressed on its own, so one deflate stream per window size and one inflate stream serve
 * every connection of the process (a connection holds no zlib state at all), reset between
 * messages. A message is inflated whole once its last frame is in, into at most `max` bytes:
 * a message that inflates past that (a "zip bomb") stops there. */
#ifndef LS_WS_DEFLATE_H
#define LS_WS_DEFLATE_H

#include <stddef.h>

#include "buffer.h"

/* Inflates the compressed message in[0..n) (the frames' payloads, without the final
 * 00 00 FF FF, which this adds) and appends it to out. Returns 0, 1009 when it would be larger
 * than max bytes, 1007 for data that is not deflate, or 1011 when out of memory. */
int ls_ws_inflate(const char *in, size_t n, size_t max, ls_buf_t *out);

/* Compresses the message s[0..n) with a window of 2^bits bytes (9 to 15) and appends the
 * result, without the final 00 00 FF FF, to out. Returns 0 or LS_ENOMEM. */
int ls_ws_deflate(const char *s, size_t n, int bits, ls_buf_t *out);

#endif
