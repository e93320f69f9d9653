#include <stdint.h>

#include "../../src/frame.h"
#include "test.h"

static void parse_formats(void) {
  ls_frame_fmt_t f;
  CHECK_EQ_INT(ls_frame_parse_fmt("u16", &f), 0);
  CHECK_EQ_INT(f.size, 2);
  CHECK_EQ_INT(f.little, 0);
  CHECK_EQ_INT(ls_frame_parse_fmt("u32le", &f), 0);
  CHECK_EQ_INT(f.size, 4);
  CHECK_EQ_INT(f.little, 1);
  CHECK_EQ_INT(ls_frame_parse_fmt("u8", &f), 0);
  CHECK_EQ_INT(f.size, 1);
  CHECK_EQ_INT(ls_frame_parse_fmt("u64be", &f), 0);
  CHECK_EQ_INT(f.size, 8);
  CHECK(ls_frame_parse_fmt("u24", &f) != 0);
  CHECK(ls_frame_parse_fmt("i16", &f) != 0);
  CHECK(ls_frame_parse_fmt("u16xx", &f) != 0);
  CHECK(ls_frame_parse_fmt("", &f) != 0);
}

static void big_endian_round_trip(void) {
  ls_frame_fmt_t f;
  unsigned char out[8];
  ls_frame_parse_fmt("u32", &f);
  CHECK_EQ_INT(ls_frame_encode(&f, 0x01020304u, out), 4);
  CHECK_MEM(out, "\x01\x02\x03\x04", 4);
  CHECK_EQ_INT(ls_frame_decode(&f, out), 0x01020304u);
  ls_frame_parse_fmt("u16", &f);
  CHECK_EQ_INT(ls_frame_encode(&f, 300, out), 2);
  CHECK_MEM(out, "\x01\x2c", 2);
  CHECK_EQ_INT(ls_frame_decode(&f, out), 300);
}

static void little_endian_round_trip(void) {
  ls_frame_fmt_t f;
  unsigned char out[8];
  ls_frame_parse_fmt("u16le", &f);
  CHECK_EQ_INT(ls_frame_encode(&f, 0x0102, out), 2);
  CHECK_MEM(out, "\x02\x01", 2);
  CHECK_EQ_INT(ls_frame_decode(&f, out), 0x0102);
  ls_frame_parse_fmt("u64le", &f);
  CHECK_EQ_INT(ls_frame_encode(&f, UINT64_C(0x0807060504030201), out), 8);
  CHECK_MEM(out, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
}

static void encode_rejects_overflow(void) {
  ls_frame_fmt_t f;
  unsigned char out[8];
  ls_frame_parse_fmt("u8", &f);
  CHECK_EQ_INT(ls_frame_encode(&f, 255, out), 1);
  CHECK_EQ_INT(ls_frame_encode(&f, 256, out), 0);
  ls_frame_parse_fmt("u16", &f);
  CHECK_EQ_INT(ls_frame_encode(&f, 65536, out), 0);
}

int main(int argc, char **argv) {
  static const test_case_t cases[] = {{"parse_formats", parse_formats},
                                      {"big_endian_round_trip", big_endian_round_trip},
                                      {"little_endian_round_trip", little_endian_round_trip},
                                      {"encode_rejects_overflow", encode_rejects_overflow},
                                      {NULL, NULL}};
  return test_main(argc, argv, cases);
}
