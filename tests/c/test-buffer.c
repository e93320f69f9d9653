#include "../../src/alloc.h"
#include "../../src/buffer.h"
#include "test.h"

static void append_consume(void) {
  ls_buf_t b;
  ls_buf_init(&b);
  CHECK_EQ_INT(ls_buf_append(&b, "hello ", 6), 0);
  CHECK_EQ_INT(ls_buf_append(&b, "world", 5), 0);
  CHECK_EQ_INT(ls_buf_len(&b), 11);
  CHECK_MEM(ls_buf_head(&b), "hello world", 11);
  ls_buf_consume(&b, 6);
  CHECK_EQ_INT(ls_buf_len(&b), 5);
  CHECK_MEM(ls_buf_head(&b), "world", 5);
  ls_buf_consume(&b, 5);
  CHECK_EQ_INT(ls_buf_len(&b), 0);
  CHECK_EQ_INT(b.start, 0); /* an emptied buffer rewinds */
  ls_buf_free(&b);
  CHECK_EQ_INT(ls_core_alloc()->used, 0);
}

static void grows_and_compacts(void) {
  ls_buf_t b;
  char chunk[1000];
  size_t i;
  ls_buf_init(&b);
  for (i = 0; i < sizeof chunk; i++)
    chunk[i] = (char)('a' + i % 26);
  for (i = 0; i < 300; i++)
    CHECK_EQ_INT(ls_buf_append(&b, chunk, sizeof chunk), 0);
  CHECK_EQ_INT(ls_buf_len(&b), 300000);
  CHECK(b.cap >= 300000);
  /* Consume most, then append: the remainder moves to the front instead of growing. */
  ls_buf_consume(&b, 299000);
  {
    size_t cap = b.cap;
    CHECK_EQ_INT(ls_buf_reserve(&b, cap - 2000), 0);
    CHECK_EQ_INT(b.cap, cap);
    CHECK_EQ_INT(b.start, 0);
    CHECK_MEM(ls_buf_head(&b), chunk, 1000);
  }
  /* Emptying a large buffer gives its storage back. */
  ls_buf_consume(&b, ls_buf_len(&b));
  CHECK(b.data == NULL);
  CHECK_EQ_INT(ls_core_alloc()->used, 0);
}

static void find_line_across_appends(void) {
  ls_buf_t b;
  ls_buf_init(&b);
  ls_buf_append(&b, "par", 3);
  CHECK_EQ_INT(ls_buf_find_line(&b, 100), 0);
  ls_buf_append(&b, "tial\nnext\n", 10);
  CHECK_EQ_INT(ls_buf_find_line(&b, 100), 8); /* "partial\n" */
  ls_buf_consume(&b, 8);
  CHECK_EQ_INT(ls_buf_find_line(&b, 100), 5); /* "next\n" */
  ls_buf_free(&b);
}

static void find_line_respects_limit(void) {
  ls_buf_t b;
  ls_buf_init(&b);
  ls_buf_append(&b, "abcdefgh\n", 9);
  CHECK_EQ_INT(ls_buf_find_line(&b, 4), 0);  /* the newline is past the limit */
  CHECK_EQ_INT(ls_buf_find_line(&b, 9), 9);
  ls_buf_free(&b);
}

static void reserve_fails_cleanly(void) {
  ls_buf_t b;
  ls_buf_init(&b);
  ls_buf_append(&b, "keep", 4);
  ls_core_alloc()->fail_after = 0;
  CHECK(ls_buf_append(&b, "x", 1) == 0); /* fits in the first block */
  CHECK(ls_buf_reserve(&b, 1 << 20) != 0);
  ls_core_alloc()->fail_after = -1;
  CHECK_EQ_INT(ls_buf_len(&b), 5);
  CHECK_MEM(ls_buf_head(&b), "keepx", 5);
  ls_buf_free(&b);
  CHECK_EQ_INT(ls_core_alloc()->used, 0);
}

/* An idle buffer gives its block back to the cache, and the next buffer to grow from nothing
 * takes that block instead of allocating; a buffer with bytes in it keeps its block. */
static void release_reuses_blocks(void) {
  ls_buf_t a, b;
  char *block;
  ls_buf_init(&a);
  ls_buf_init(&b);
  CHECK_EQ_INT(ls_buf_append(&a, "request", 7), 0);
  block = a.data;
  ls_buf_release(&a); /* not empty: kept */
  CHECK(a.data == block);
  ls_buf_consume(&a, 7);
  ls_buf_release(&a);
  CHECK(a.data == NULL && a.cap == 0);
  CHECK_EQ_INT(ls_core_alloc()->used, 0); /* a cached block is not counted as used */
  CHECK_EQ_INT(ls_buf_append(&b, "next", 4), 0);
#ifndef LS_NO_POOL /* sanitizer builds do without the cache */
  CHECK(b.data == block);
#endif
  CHECK_MEM(ls_buf_head(&b), "next", 4);
  ls_buf_free(&b);
  CHECK_EQ_INT(ls_core_alloc()->used, 0);
  /* A released buffer takes back the size it had, not 256 bytes to grow again. */
  ls_buf_init(&a);
  CHECK_EQ_INT(ls_buf_reserve(&a, 3000), 0);
  CHECK_EQ_INT(a.cap, 4096);
  ls_buf_release(&a);
  CHECK(a.data == NULL);
  CHECK_EQ_INT(ls_buf_append(&a, "x", 1), 0);
  CHECK_EQ_INT(a.cap, 4096);
  ls_buf_free(&a);
  CHECK_EQ_INT(ls_core_alloc()->used, 0);
}

int main(int argc, char **argv) {
  static const test_case_t cases[] = {{"append_consume", append_consume},
                                      {"grows_and_compacts", grows_and_compacts},
                                      {"find_line_across_appends", find_line_across_appends},
                                      {"find_line_respects_limit", find_line_respects_limit},
                                      {"reserve_fails_cleanly", reserve_fails_cleanly},
                                      {"release_reuses_blocks", release_reuses_blocks},
                                      {NULL, NULL}};
  return test_main(argc, argv, cases);
}
