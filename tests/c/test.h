/* A minimal harness for the C unit tests: each file lists its cases in a table, ctest runs
 * one case per entry (`test-buffer append_grows`), and a failed check exits non-zero with
 * its place. */
#ifndef LS_TEST_H
#define LS_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct test_case_s {
  const char *name;
  void (*fn)(void);
} test_case_t;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                            \
  do {                                                                                \
    long long a_ = (long long)(a), b_ = (long long)(b);                               \
    if (a_ != b_) {                                                                   \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, \
              #b, a_, b_);                                                            \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

#define CHECK_MEM(p, s, n) CHECK(memcmp((p), (s), (n)) == 0)

/* Runs the case named by argv[1], or every case; prints "N passed, 0 failed". */
static inline int test_main(int argc, char **argv, const test_case_t *cases) {
  int ran = 0;
  for (const test_case_t *c = cases; c->name != NULL; c++) {
    if (argc > 1 && strcmp(argv[1], c->name) != 0)
      continue;
    c->fn();
    ran++;
  }
  if (ran == 0) {
    fprintf(stderr, "no test case named %s\n", argc > 1 ? argv[1] : "(any)");
    return 1;
  }
  printf("%d passed, 0 failed\n", ran);
  return 0;
}

#endif
