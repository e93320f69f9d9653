/* The shared-memory store (src/shared.c): its operations, eviction, and what happens across
 * processes: forked children see the same zone, increments from several processes add up
 * exactly, and a process killed while it holds the lock (or in the middle of any operation)
 * neither blocks the others nor leaves the structure inconsistent. */
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../src/shared.h"
#include "test.h"

static ls_shv_t str(const char *s) {
  ls_shv_t v;
  memset(&v, 0, sizeof v);
  v.type = LS_SHV_STRING;
  v.str = s;
  v.len = strlen(s);
  return v;
}

static ls_shv_t integer(int64_t i) {
  ls_shv_t v;
  memset(&v, 0, sizeof v);
  v.type = LS_SHV_INTEGER;
  v.num.i = i;
  return v;
}

static int set(ls_shared_t *sh, const char *key, ls_shv_t v, double ttl, int *forcible) {
  int f;
  return ls_shared_store(sh, LS_SH_SET, key, strlen(key), &v, ttl, forcible ? forcible : &f);
}

/* The integer under key, or -1 when it is missing. */
static int64_t get_int(ls_shared_t *sh, const char *key) {
  ls_shv_t v;
  if (ls_shared_get(sh, key, strlen(key), &v, NULL, 0) != LS_SH_OK)
    return -1;
  CHECK_EQ_INT(v.type, LS_SHV_INTEGER);
  return v.num.i;
}

static int64_t incr(ls_shared_t *sh, const char *key, int64_t by) {
  ls_shv_t b = integer(by), out;
  int f;
  CHECK_EQ_INT(ls_shared_incr(sh, key, strlen(key), &b, NULL, 0, &out, &f), LS_SH_OK);
  return out.num.i;
}

static void operations(void) {
  ls_shared_t *sh = ls_shared_new(1 << 20);
  char buf[64];
  ls_shv_t v = str("value"), out;
  double ttl = -1;
  int f;
  size_t needed, count;
  CHECK(sh != NULL);
  CHECK_EQ_INT(ls_shared_capacity(sh), 1 << 20);
  CHECK_EQ_INT(set(sh, "a", v, 0, NULL), LS_SH_OK);
  CHECK_EQ_INT(ls_shared_get(sh, "a", 1, &out, buf, sizeof buf), LS_SH_OK);
  CHECK_EQ_INT(out.len, 5);
  CHECK_MEM(out.str, "value", 5);
  CHECK_EQ_INT(ls_shared_get(sh, "a", 1, &out, buf, 2), LS_SH_SMALL_BUFFER);
  CHECK_EQ_INT(out.len, 5);
  CHECK_EQ_INT(ls_shared_store(sh, LS_SH_ADD, "a", 1, &v, 0, &f), LS_SH_EXISTS);
  CHECK_EQ_INT(ls_shared_store(sh, LS_SH_REPLACE, "b", 1, &v, 0, &f), LS_SH_NOT_FOUND);
  CHECK_EQ_INT(ls_shared_store(sh, LS_SH_ADD, "b", 1, &v, 0, &f), LS_SH_OK);
  CHECK_EQ_INT(incr(sh, "n", 5), 5);
  CHECK_EQ_INT(incr(sh, "n", -7), -2);
  CHECK_EQ_INT(ls_shared_ttl(sh, "n", 1, &ttl), LS_SH_OK);
  CHECK(ttl == 0);
  CHECK_EQ_INT(ls_shared_expire(sh, "n", 1, 100), LS_SH_OK);
  CHECK_EQ_INT(ls_shared_ttl(sh, "n", 1, &ttl), LS_SH_OK);
  CHECK(ttl > 99 && ttl <= 100);
  CHECK_EQ_INT(ls_shared_keys(sh, 0, buf, sizeof buf, &needed, &count), LS_SH_OK);
  CHECK_EQ_INT(count, 3);
  CHECK_EQ_INT(needed, 3 * 5);
  CHECK_EQ_INT(ls_shared_delete(sh, "a", 1), 1);
  CHECK_EQ_INT(ls_shared_delete(sh, "a", 1), 0);
  CHECK_EQ_INT(ls__shared_check(sh), 0);
  CHECK_EQ_INT(ls_shared_flush_all(sh), LS_SH_OK);
  CHECK_EQ_INT(ls__shared_count(sh), 0);
  CHECK_EQ_INT(ls__shared_check(sh), 0);
  ls_shared_free(sh);
}

static void expiry_is_monotonic(void) {
  ls_shared_t *sh = ls_shared_new(1 << 20);
  struct timespec pause = {0, 30 * 1000 * 1000};
  set(sh, "short", integer(1), 0.01, NULL);
  set(sh, "long", integer(2), 60, NULL);
  nanosleep(&pause, NULL);
  CHECK_EQ_INT(get_int(sh, "short"), -1);
  CHECK_EQ_INT(get_int(sh, "long"), 2);
  set(sh, "x", integer(3), 0.01, NULL);
  nanosleep(&pause, NULL);
  CHECK_EQ_INT(ls_shared_flush_expired(sh, 0), 1);
  CHECK_EQ_INT(ls__shared_check(sh), 0);
  ls_shared_free(sh);
}

/* A full zone evicts the least recently used keys, says so, and goes on working. */
static void evicts_least_recently_used(void) {
  ls_shared_t *sh = ls_shared_new(64 * 1024);
  char key[32], value[200], buf[256];
  ls_shv_t out;
  int i, f = 0;
  memset(value, 'v', sizeof value - 1);
  value[sizeof value - 1] = '\0';
  for (i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "k%d", i);
    CHECK_EQ_INT(set(sh, key, str(value), 0, &f), LS_SH_OK);
  }
  CHECK_EQ_INT(ls_shared_get(sh, "k0", 2, &out, buf, sizeof buf), LS_SH_OK); /* k0: recent */
  for (i = 10; i < 1000 && !f; i++) {
    snprintf(key, sizeof key, "k%d", i);
    CHECK_EQ_INT(set(sh, key, str(value), 0, &f), LS_SH_OK);
  }
  CHECK(f);
  CHECK(i > 100);
  CHECK_EQ_INT(ls_shared_get(sh, "k1", 2, &out, buf, sizeof buf), LS_SH_NOT_FOUND);
  CHECK_EQ_INT(ls_shared_get(sh, "k0", 2, &out, buf, sizeof buf), LS_SH_OK);
  CHECK_EQ_INT(ls_shared_get(sh, "k2", 2, &out, buf, sizeof buf), LS_SH_OK);
  snprintf(key, sizeof key, "k%d", i - 1);
  CHECK_EQ_INT(ls_shared_get(sh, key, strlen(key), &out, buf, sizeof buf), LS_SH_OK);
  CHECK_EQ_INT(ls__shared_check(sh), 0);
  ls_shared_free(sh);
}

/* A value larger than the zone fails without evicting anything; after deleting everything,
 * the freed blocks merge and one large value fits. */
static void too_large_and_coalescing(void) {
  size_t size = 256 * 1024, big_len = 200 * 1024, i;
  ls_shared_t *sh = ls_shared_new(size);
  char *big = malloc(size + 1), key[32];
  int f = 0;
  memset(big, 'x', size);
  big[size] = '\0';
  set(sh, "keep", integer(1), 0, NULL);
  CHECK_EQ_INT(set(sh, "huge", str(big), 0, &f), LS_SH_NO_MEMORY);
  CHECK_EQ_INT(f, 0);
  CHECK_EQ_INT(get_int(sh, "keep"), 1);
  for (i = 0; i < 1500; i++) {
    snprintf(key, sizeof key, "small%zu", i);
    set(sh, key, integer((int64_t)i), 0, NULL);
  }
  for (i = 0; i < 1500; i++) {
    snprintf(key, sizeof key, "small%zu", i);
    ls_shared_delete(sh, key, strlen(key));
  }
  big[big_len] = '\0';
  CHECK_EQ_INT(set(sh, "big", str(big), 0, &f), LS_SH_OK);
  CHECK_EQ_INT(f, 0);
  CHECK_EQ_INT(ls__shared_check(sh), 0);
  free(big);
  ls_shared_free(sh);
}

/* Two children each add 1 a hundred thousand times; the total is exact. */
static void concurrent_incr_across_processes(void) {
  ls_shared_t *sh = ls_shared_new(1 << 20);
  pid_t pids[2];
  int i, status;
  for (i = 0; i < 2; i++) {
    pids[i] = fork();
    CHECK(pids[i] >= 0);
    if (pids[i] == 0) {
      int j;
      for (j = 0; j < 100000; j++)
        incr(sh, "total", 1);
      _exit(0);
    }
  }
  for (i = 0; i < 2; i++) {
    CHECK(waitpid(pids[i], &status, 0) == pids[i]);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  CHECK_EQ_INT(get_int(sh, "total"), 200000);
  CHECK_EQ_INT(ls__shared_check(sh), 0);
  ls_shared_free(sh);
}

/* A child takes the lock and is killed: the next operation does not block. */
static void dead_holder_does_not_block(void) {
  ls_shared_t *sh = ls_shared_new(1 << 20);
  pid_t pid;
  int status;
  incr(sh, "n", 41);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    ls__shared_lock(sh);
    raise(SIGKILL);
    _exit(1);
  }
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
  alarm(10); /* a deadlock fails the test instead of hanging it */
  CHECK_EQ_INT(incr(sh, "n", 1), 42);
  alarm(0);
  CHECK_EQ_INT(ls__shared_recoveries(sh), 1);
  CHECK_EQ_INT(ls__shared_check(sh), 0);
  CHECK_EQ_INT(incr(sh, "n", 1), 43);
  ls_shared_free(sh);
}

/* A child runs every kind of write in a loop, on a zone small enough to evict, and is killed
 * at random moments, mostly inside the lock. After each kill the store must check out and
 * the counter must have lost at most the one increment in flight. */
static void killed_mid_operation(void) {
  ls_shared_t *sh = ls_shared_new(64 * 1024);
  int round;
  unsigned seed = 12345;
  alarm(60);
  for (round = 0; round < 150; round++) {
    int64_t before = get_int(sh, "counter"), after;
    pid_t pid = fork();
    int status;
    CHECK(pid >= 0);
    if (pid == 0) {
      char key[32], value[300];
      unsigned r = (unsigned)round * 7919u;
      memset(value, 'a' + round % 26, sizeof value - 1);
      value[sizeof value - 1] = '\0';
      for (;;) {
        r = r * 1103515245u + 12345u;
        snprintf(key, sizeof key, "key%u", (r >> 8) % 400);
        value[(r >> 4) % 250 + 1] = '\0';
        set(sh, key, str(value), (r & 1) ? 0.001 : 0, NULL);
        value[(r >> 4) % 250 + 1] = 'b';
        incr(sh, "counter", 1);
        if ((r & 7) == 0)
          ls_shared_delete(sh, key, strlen(key));
        if ((r & 15) == 3) {
          ls_shv_t f = integer(1);
          int forcible;
          ls_shared_incr(sh, key, strlen(key), &f, &f, 0, &f, &forcible);
        }
      }
    }
    seed = seed * 1103515245u + 12345u;
    {
      struct timespec t = {0, (long)(200000 + (seed >> 8) % 3000000)};
      nanosleep(&t, NULL);
    }
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_EQ_INT(ls__shared_check(sh), 0);
    after = get_int(sh, "counter");
    /* The counter may have been evicted (it is the hottest key, so rarely); otherwise it only
     * grew. */
    CHECK(after == -1 || after >= before);
  }
  alarm(0);
  CHECK(ls__shared_recoveries(sh) > 0);
  ls_shared_free(sh);
}

int main(int argc, char **argv) {
  static const test_case_t cases[] = {
      {"operations", operations},
      {"expiry_is_monotonic", expiry_is_monotonic},
      {"evicts_least_recently_used", evicts_least_recently_used},
      {"too_large_and_coalescing", too_large_and_coalescing},
      {"concurrent_incr_across_processes", concurrent_incr_across_processes},
      {"dead_holder_does_not_block", dead_holder_does_not_block},
      {"killed_mid_operation", killed_mid_operation},
      {NULL, NULL}};
  return test_main(argc, argv, cases);
}
