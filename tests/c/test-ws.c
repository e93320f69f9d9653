/* WebSocket framing (src/ws_frame.c) and permessage-deflate's bounded inflate
 * (src/ws_deflate.c), without sockets. */
#include <stdint.h>
#include <string.h>

#include "../../src/buffer.h"
#include "../../src/ws_deflate.h"
#include "../../src/ws_frame.h"
#include "test.h"

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A masked client frame of `payload` into out; returns its length. */
static size_t client_frame(uint8_t *out, int fin, int opcode, const char *payload, size_t len) {
  size_t h = ls_ws_header(out, fin, 0, opcode, len, MASK);
  memcpy(out + h, payload, len);
  ls_ws_mask(out + h, len, MASK, 0);
  return h + len;
}

static void header_encoding(void) {
  uint8_t h[LS_WS_HEADER_MAX];
  CHECK_EQ_INT(ls_ws_header(h, 1, 0, LS_WS_OP_TEXT, 5, NULL), 2);
  CHECK_MEM(h, "\x81\x05", 2);
  CHECK_EQ_INT(ls_ws_header(h, 0, 1, LS_WS_OP_BINARY, 126, NULL), 4);
  CHECK_MEM(h, "\x42\x7e\x00\x7e", 4);
  CHECK_EQ_INT(ls_ws_header(h, 1, 0, LS_WS_OP_BINARY, 65536, MASK), 14);
  CHECK_MEM(h, "\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00\x37\xfa\x21\x3d", 14);
}

static void parse_masked_text(void) {
  ls_ws_parser_t p;
  ls_ws_event_t ev;
  uint8_t buf[64];
  size_t n = client_frame(buf, 1, LS_WS_OP_TEXT, "Hello", 5), used;
  ls_ws_parser_init(&p, 1, 0);
  /* One byte short: nothing yet, and nothing taken but a header. */
  CHECK_EQ_INT(ls_ws_parse(&p, buf, 1, &used, &ev), LS_WS_EV_NEED);
  CHECK_EQ_INT(used, 0);
  CHECK_EQ_INT(ls_ws_parse(&p, buf, n, &used, &ev), LS_WS_EV_DATA);
  CHECK_EQ_INT(used, n);
  CHECK_EQ_INT(ev.opcode, LS_WS_OP_TEXT);
  CHECK_EQ_INT(ev.fin, 1);
  CHECK_EQ_INT(ev.len, 5);
  CHECK_MEM(ev.data, "Hello", 5);
}

static void fragments_and_control(void) {
  ls_ws_parser_t p;
  ls_ws_event_t ev;
  uint8_t buf[128];
  size_t n = 0, used, off = 0;
  ls_ws_parser_init(&p, 1, 0);
  n += client_frame(buf + n, 0, LS_WS_OP_TEXT, "ab", 2);
  n += client_frame(buf + n, 1, LS_WS_OP_PING, "hi", 2);
  n += client_frame(buf + n, 1, LS_WS_OP_CONT, "cd", 2);
  n += client_frame(buf + n, 1, LS_WS_OP_CLOSE, "\x03\xe8ok", 4);
  CHECK_EQ_INT(ls_ws_parse(&p, buf, n, &used, &ev), LS_WS_EV_DATA);
  CHECK_EQ_INT(ev.fin, 0);
  CHECK_MEM(ev.data, "ab", 2);
  off += used;
  CHECK_EQ_INT(ls_ws_parse(&p, buf + off, n - off, &used, &ev), LS_WS_EV_CONTROL);
  CHECK_EQ_INT(ev.opcode, LS_WS_OP_PING);
  CHECK_MEM(ev.data, "hi", 2);
  off += used;
  CHECK_EQ_INT(ls_ws_parse(&p, buf + off, n - off, &used, &ev), LS_WS_EV_DATA);
  CHECK_EQ_INT(ev.fin, 1);
  CHECK_EQ_INT(ev.opcode, LS_WS_OP_TEXT);
  CHECK_MEM(ev.data, "cd", 2);
  off += used;
  CHECK_EQ_INT(ls_ws_parse(&p, buf + off, n - off, &used, &ev), LS_WS_EV_CONTROL);
  CHECK_EQ_INT(ev.opcode, LS_WS_OP_CLOSE);
  CHECK_EQ_INT(ev.code, 1000);
  CHECK_EQ_INT(ev.len, 2);
  CHECK_MEM(ev.data, "ok", 2);
}

/* The close code the parser fails with for the bytes of one frame (server side). */
static int failure(const uint8_t *frame, size_t n, uint64_t max) {
  ls_ws_parser_t p;
  ls_ws_event_t ev;
  uint8_t buf[256];
  size_t used;
  memcpy(buf, frame, n);
  ls_ws_parser_init(&p, 1, max);
  return ls_ws_parse(&p, buf, n, &used, &ev) == LS_WS_EV_ERROR ? ev.code : 0;
}

static void errors_and_codes(void) {
  uint8_t f[64];
  size_t n;
  CHECK_EQ_INT(failure((const uint8_t *)"\x81\x02hi", 4, 0), 1002); /* not masked */
  n = client_frame(f, 1, LS_WS_OP_TEXT, "x", 1);
  f[0] |= 0x40; /* RSV1 without permessage-deflate */
  CHECK_EQ_INT(failure(f, n, 0), 1002);
  n = client_frame(f, 1, 0x3, "", 0);
  CHECK_EQ_INT(failure(f, n, 0), 1002);
  n = client_frame(f, 0, LS_WS_OP_PING, "", 0);
  CHECK_EQ_INT(failure(f, n, 0), 1002);
  n = client_frame(f, 1, LS_WS_OP_CONT, "x", 1);
  CHECK_EQ_INT(failure(f, n, 0), 1002);
  n = client_frame(f, 1, LS_WS_OP_CLOSE, "\x03\xed", 2); /* 1005 may not be sent */
  CHECK_EQ_INT(failure(f, n, 0), 1002);
  n = client_frame(f, 1, LS_WS_OP_CLOSE, "\x03", 1);
  CHECK_EQ_INT(failure(f, n, 0), 1002);
  n = client_frame(f, 1, LS_WS_OP_TEXT, "\xed\xa0\x80", 3);
  CHECK_EQ_INT(failure(f, n, 0), 1007);
  n = client_frame(f, 1, LS_WS_OP_BINARY, "0123456789", 10);
  CHECK_EQ_INT(failure(f, n, 9), 1009);
  CHECK_EQ_INT(failure(f, n, 10), 0);
  CHECK(ls_ws_close_code_valid(4999));
  CHECK(!ls_ws_close_code_valid(1006));
  CHECK(!ls_ws_close_code_valid(2000));
}

static void utf8_validation(void) {
  static const char *const good[] = {"", "ascii only", "\xc2\xa9", "\xe2\x82\xac",
                                     "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf", "\xef\xbb\xbf"};
  static const char *const bad[] = {"\x80", "\xc0\x80", "\xe0\x80\xaf", "\xed\xa0\x80",
                                    "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff"};
  size_t i;
  for (i = 0; i < sizeof good / sizeof *good; i++) {
    uint32_t st = 0;
    CHECK_EQ_INT(ls_ws_utf8(&st, (const uint8_t *)good[i], strlen(good[i])), 0);
    CHECK_EQ_INT(st, 0);
  }
  for (i = 0; i < sizeof bad / sizeof *bad; i++) {
    uint32_t st = 0;
    CHECK_EQ_INT(ls_ws_utf8(&st, (const uint8_t *)bad[i], strlen(bad[i])), -1);
  }
  {
    /* Split anywhere, a sequence goes on across calls; cut short, it is not complete. */
    uint32_t st = 0;
    CHECK_EQ_INT(ls_ws_utf8(&st, (const uint8_t *)"\xf0\x9f", 2), 0);
    CHECK(st != 0);
    CHECK_EQ_INT(ls_ws_utf8(&st, (const uint8_t *)"\x98\x80", 2), 0);
    CHECK_EQ_INT(st, 0);
  }
}

static void inflate_bounds(void) {
  static char zeros[100000];
  ls_buf_t packed, plain;
  ls_buf_init(&packed);
  ls_buf_init(&plain);
  CHECK_EQ_INT(ls_ws_deflate(zeros, sizeof zeros, 15, &packed), 0);
  CHECK(ls_buf_len(&packed) < 1000);
  CHECK_EQ_INT(ls_ws_inflate(ls_buf_head(&packed), ls_buf_len(&packed), sizeof zeros, &plain), 0);
  CHECK_EQ_INT(ls_buf_len(&plain), sizeof zeros);
  ls_buf_consume(&plain, ls_buf_len(&plain));
  /* One byte too many for the limit: it stops there. */
  CHECK_EQ_INT(ls_ws_inflate(ls_buf_head(&packed), ls_buf_len(&packed), sizeof zeros - 1, &plain),
               1009);
  CHECK(ls_buf_len(&plain) <= sizeof zeros);
  ls_buf_consume(&plain, ls_buf_len(&plain));
  CHECK_EQ_INT(ls_ws_inflate("\xff\xff\xff\xff", 4, 1000, &plain), 1007);
  ls_buf_free(&packed);
  ls_buf_free(&plain);
}

int main(int argc, char **argv) {
  static const test_case_t cases[] = {{"header_encoding", header_encoding},
                                      {"parse_masked_text", parse_masked_text},
                                      {"fragments_and_control", fragments_and_control},
                                      {"errors_and_codes", errors_and_codes},
                                      {"utf8_validation", utf8_validation},
                                      {"inflate_bounds", inflate_bounds},
                                      {NULL, NULL}};
  return test_main(argc, argv, cases);
}
