/* WebSocket framing without I/O (see ws_frame.h): the frame parser with the protocol's rules
 * (masking, reserved bits and opcodes, control frames, fragmentation, UTF-8, the message size
 * limit), the frame-header encoder, masking and UTF-8 validation. */
#include "ws_frame.h"

#include <string.h>

void ls_ws_parser_init(ls_ws_parser_t *p, int server, uint64_t max_message) {
  memset(p, 0, sizeof *p);
  p->server = (unsigned char)(server != 0);
  p->max_message = max_message;
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

/* The state packs the continuation bytes still due (bits 0-7) and the range the next one must
 * fall in (low bound bits 8-15, high bound bits 16-23): only the byte after a lead byte has a
 * narrower range than 0x80-0xBF, which is what rules out overlongs, surrogates and code
 * points past U+10FFFF. */
#define UTF8_STATE(need, lo, hi) ((uint32_t)(need) | ((uint32_t)(lo) << 8) | ((uint32_t)(hi) << 16))

int ls_ws_utf8(uint32_t *state, const uint8_t *p, size_t n) {
  uint32_t st = *state;
  size_t i = 0;
  while (i < n) {
    uint8_t b = p[i];
    if (st == 0) {
      /* ASCII runs are the common case: skip them eight bytes at a time. */
      while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ULL)
          break;
        i += 8;
      }
      if (i == n)
        break;
      b = p[i];
      if (b < 0x80)
        st = 0;
      else if (b >= 0xC2 && b <= 0xDF)
        st = UTF8_STATE(1, 0x80, 0xBF);
      else if (b == 0xE0)
        st = UTF8_STATE(2, 0xA0, 0xBF);
      else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
        st = UTF8_STATE(2, 0x80, 0xBF);
      else if (b == 0xED)
        st = UTF8_STATE(2, 0x80, 0x9F); /* no surrogates */
      else if (b == 0xF0)
        st = UTF8_STATE(3, 0x90, 0xBF);
      else if (b >= 0xF1 && b <= 0xF3)
        st = UTF8_STATE(3, 0x80, 0xBF);
      else if (b == 0xF4)
        st = UTF8_STATE(3, 0x80, 0x8F); /* nothing past U+10FFFF */
      else
        return -1;
    } else {
      uint32_t need = st & 0xFF, lo = (st >> 8) & 0xFF, hi = (st >> 16) & 0xFF;
      if (b < lo || b > hi)
        return -1;
      st = need == 1 ? 0 : UTF8_STATE(need - 1, 0x80, 0xBF);
    }
    i++;
  }
  *state = st;
  return 0;
}

/* ---- masking and headers ------------------------------------------------------------------ */

void ls_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset) {
  uint8_t m[8];
  size_t i = 0, k;
  for (k = 0; k < 8; k++)
    m[k] = mask[(offset + k) & 3];
  if (n >= 8) {
    uint64_t m64, w;
    memcpy(&m64, m, 8);
    for (; i + 8 <= n; i += 8) {
      memcpy(&w, p + i, 8);
      w ^= m64;
      memcpy(p + i, &w, 8);
    }
  }
  for (; i < n; i++)
    p[i] ^= m[i & 7];
}

size_t ls_ws_header(uint8_t *out, int fin, int rsv1, int opcode, uint64_t len,
                    const uint8_t *mask) {
  size_t n = 2;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
  if (len < 126) {
    out[1] = (uint8_t)len;
  } else if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    n = 4;
  } else {
    int i;
    out[1] = 127;
    for (i = 0; i < 8; i++)
      out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    n = 10;
  }
  if (mask != NULL) {
    out[1] |= 0x80;
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

int ls_ws_close_code_valid(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* ---- the parser --------------------------------------------------------------------------- */

static ls_ws_ev_type_t fail(ls_ws_parser_t *p, ls_ws_event_t *ev, int code, const char *reason) {
  if (p->error_code == 0) {
    p->error_code = code;
    p->error_reason = reason;
  }
  ev->type = LS_WS_EV_ERROR;
  ev->code = p->error_code;
  ev->reason = p->error_reason;
  return LS_WS_EV_ERROR;
}

/* Checks a whole control frame's payload; a close frame's code and reason go into ev. */
static ls_ws_ev_type_t control_frame(ls_ws_parser_t *p, ls_ws_event_t *ev, int opcode,
                                     uint8_t *payload, size_t len) {
  ev->type = LS_WS_EV_CONTROL;
  ev->opcode = opcode;
  ev->data = payload;
  ev->len = len;
  if (opcode == LS_WS_OP_CLOSE) {
    uint32_t st = 0;
    if (len == 0) {
      ev->code = LS_WS_CLOSE_NO_STATUS;
      return LS_WS_EV_CONTROL;
    }
    if (len == 1)
      return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload");
    ev->code = (payload[0] << 8) | payload[1];
    if (!ls_ws_close_code_valid(ev->code))
      return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "invalid close code");
    if (ls_ws_utf8(&st, payload + 2, len - 2) != 0 || st != 0)
      return fail(p, ev, LS_WS_CLOSE_BAD_DATA, "close reason is not UTF-8");
    ev->data = payload + 2;
    ev->len = len - 2;
  }
  return LS_WS_EV_CONTROL;
}

ls_ws_ev_type_t ls_ws_parse(ls_ws_parser_t *p, uint8_t *in, size_t len, size_t *used,
                            ls_ws_event_t *ev) {
  size_t pos = 0;
  memset(ev, 0, sizeof *ev);
  *used = 0;
  if (p->error_code != 0)
    return fail(p, ev, p->error_code, p->error_reason);
  for (;;) {
    size_t n;
    uint8_t *piece;
    if (!p->in_frame) {
      const uint8_t *h = in + pos;
      size_t avail = len - pos, hlen = 2;
      int fin, rsv, opcode, masked;
      uint64_t plen;
      if (avail < 2) {
        *used = pos;
        return LS_WS_EV_NEED;
      }
      fin = h[0] >> 7;
      rsv = (h[0] >> 4) & 7;
      opcode = h[0] & 0x0F;
      masked = h[1] >> 7;
      plen = h[1] & 0x7F;
      if (plen == 126)
        hlen += 2;
      else if (plen == 127)
        hlen += 8;
      if (masked)
        hlen += 4;
      if (avail < hlen) {
        *used = pos;
        return LS_WS_EV_NEED;
      }
      if (plen == 126) {
        plen = ((uint64_t)h[2] << 8) | h[3];
      } else if (plen == 127) {
        int i;
        plen = 0;
        for (i = 0; i < 8; i++)
          plen = (plen << 8) | h[2 + i];
        if (plen >> 63)
          return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "frame length with the high bit set");
      }
      if (opcode >= 3 && opcode != LS_WS_OP_CLOSE && opcode != LS_WS_OP_PING &&
          opcode != LS_WS_OP_PONG)
        return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "reserved opcode");
      if ((rsv & 3) != 0)
        return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "reserved bits set");
      if ((rsv & 4) != 0 && (!p->allow_rsv1 || opcode == LS_WS_OP_CONT || opcode >= 8))
        return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "reserved bits set");
      if (masked != p->server)
        return fail(p, ev, LS_WS_CLOSE_PROTOCOL,
                    p->server ? "frame from the client not masked" : "masked frame from the server");
      if (opcode >= 8) {
        if (!fin)
          return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "fragmented control frame");
        if (plen > 125)
          return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "control frame longer than 125 bytes");
        if (avail < hlen + plen) {
          *used = pos;
          return LS_WS_EV_NEED;
        }
        piece = in + pos + hlen;
        if (masked)
          ls_ws_mask(piece, (size_t)plen, h + hlen - 4, 0);
        *used = pos + hlen + (size_t)plen;
        return control_frame(p, ev, opcode, piece, (size_t)plen);
      }
      if (opcode == LS_WS_OP_CONT && p->msg_opcode == 0)
        return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "continuation frame outside a message");
      if (opcode != LS_WS_OP_CONT && p->msg_opcode != 0)
        return fail(p, ev, LS_WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
      if (opcode != LS_WS_OP_CONT) {
        p->msg_opcode = (unsigned char)opcode;
        p->msg_compressed = (unsigned char)((rsv & 4) != 0);
        p->msg_len = 0;
        p->utf8 = 0;
      }
      /* A compressed message is limited by its inflated size, which its reader checks. */
      if (p->max_message > 0 && !p->msg_compressed && plen > p->max_message - p->msg_len)
        return fail(p, ev, LS_WS_CLOSE_TOO_BIG, "message too big");
      p->msg_len += plen;
      p->in_frame = 1;
      p->frame_fin = (unsigned char)fin;
      p->masked = (unsigned char)masked;
      if (masked)
        memcpy(p->mask, h + hlen - 4, 4);
      p->frame_left = plen;
      p->frame_done = 0;
      pos += hlen;
    }
    n = len - pos;
    if (n > p->frame_left)
      n = (size_t)p->frame_left;
    if (n == 0 && p->frame_left > 0) {
      *used = pos;
      return LS_WS_EV_NEED;
    }
    piece = in + pos;
    if (p->masked)
      ls_ws_mask(piece, n, p->mask, p->frame_done);
    p->frame_done += n;
    p->frame_left -= n;
    pos += n;
    if (p->frame_left == 0)
      p->in_frame = 0;
    ev->fin = p->frame_left == 0 && p->frame_fin;
    if (p->msg_opcode == LS_WS_OP_TEXT && !p->msg_compressed &&
        (ls_ws_utf8(&p->utf8, piece, n) != 0 || (ev->fin && p->utf8 != 0)))
      return fail(p, ev, LS_WS_CLOSE_BAD_DATA, "text message is not UTF-8");
    if (n == 0 && !ev->fin)
      continue; /* an empty fragment: nothing to tell */
    ev->type = LS_WS_EV_DATA;
    ev->opcode = p->msg_opcode;
    ev->compressed = p->msg_compressed;
    ev->data = piece;
    ev->len = n;
    if (ev->fin)
      p->msg_opcode = 0;
    *used = pos;
    return LS_WS_EV_DATA;
  }
}
