#include "buffer.h"

#include <string.h>

#include "alloc.h"
#include "errors.h"

/* Storage above this is returned when the buffer empties, so one large message does not pin
 * memory for the rest of a connection's life. */
#define LS_BUF_KEEP (64 * 1024)

/* The block cache: a stack per power of two from 2^8 to 2^14 bytes, each of at most
 * CACHE_DEPTH blocks (so at most about 4 MiB in all), for this process's single thread. */
#define CACHE_MIN_SHIFT 8
#define CACHE_CLASSES 7
#define CACHE_DEPTH 128
#ifdef LS_NO_POOL
#define LS_BLOCK_CACHE 0 /* sanitizer builds: every block through malloc, for ASan to see */
#else
#define LS_BLOCK_CACHE 1
#endif
static struct {
  void *blocks[CACHE_DEPTH];
  unsigned n;
} block_cache[CACHE_CLASSES];

/* The class of a power-of-two size, or -1 for any other size. */
static int cache_class(size_t size) {
  int cls;
  if (size < ((size_t)1 << CACHE_MIN_SHIFT) || (size & (size - 1)) != 0)
    return -1;
  cls = __builtin_ctzl((unsigned long)size) - CACHE_MIN_SHIFT;
  return cls < CACHE_CLASSES ? cls : -1;
}

/* The core allocator's counters: cached blocks count as free. */
static ls_alloc_t *core_counts;

void *ls_buf_block_take(size_t *size) {
  size_t want = *size;
  int cls = cache_class(want);
  if (cls < 0) {
    want = (size_t)1 << CACHE_MIN_SHIFT;
    while (want < *size)
      want <<= 1;
    *size = want;
    cls = cache_class(want);
  }
  if (LS_BLOCK_CACHE && cls >= 0 && block_cache[cls].n > 0) {
    core_counts->used += want; /* set when the block was given */
    return block_cache[cls].blocks[--block_cache[cls].n];
  }
  return ls_malloc(want);
}

void ls_buf_block_give(void *p, size_t size) {
  int cls = cache_class(size);
  if (p == NULL)
    return;
  if (LS_BLOCK_CACHE && cls >= 0 && block_cache[cls].n < CACHE_DEPTH) {
    block_cache[cls].blocks[block_cache[cls].n++] = p;
    if (core_counts == NULL)
      core_counts = ls_core_alloc();
    core_counts->used -= size;
  } else
    ls_free(p, size);
}

void ls_buf_init(ls_buf_t *b) { memset(b, 0, sizeof *b); }

void ls_buf_free(ls_buf_t *b) {
  ls_buf_block_give(b->data, b->cap);
  ls_buf_init(b);
}

void ls_buf_release(ls_buf_t *b) {
  size_t cap = b->cap;
  if (b->data == NULL || b->start != b->end)
    return;
  ls_buf_block_give(b->data, cap);
  b->data = NULL;
  b->start = b->end = b->cap = 0;
  /* Without storage `scan` is unused: it keeps the size to take back, so a buffer that needed
   * 4 KiB last time does not grow from 256 bytes again. */
  b->scan = cap <= LS_BUF_KEEP ? cap : 0;
}

int ls_buf_reserve(ls_buf_t *b, size_t n) {
  size_t len = ls_buf_len(b);
  size_t cap;
  char *p;
  if (b->cap - b->end >= n)
    return 0;
  if (b->cap - len >= n && b->start > 0) {
    memmove(b->data, b->data + b->start, len);
    b->start = 0;
    b->end = len;
    return 0;
  }
  if (b->data == NULL && b->scan >= n && b->scan >= 256) {
    cap = b->scan; /* the size it had before ls_buf_release, and enough */
    if ((p = ls_buf_block_take(&cap)) == NULL)
      return LS_ENOMEM;
    b->data = p;
    b->cap = cap;
    b->start = b->end = b->scan = 0;
    return 0;
  }
  cap = b->cap < 256 ? 256 : b->cap;
  if (b->data == NULL && b->scan > cap)
    cap = b->scan; /* the size it had before ls_buf_release */
  while (cap - len < n) {
    if (cap > ((size_t)-1) / 2)
      return LS_ENOMEM;
    cap *= 2;
  }
  if (b->data == NULL) {
    p = ls_buf_block_take(&cap); /* from the cache of released buffers when it has one */
    if (p == NULL)
      return LS_ENOMEM;
    b->data = p;
    b->cap = cap;
    b->start = b->end = b->scan = 0;
    return 0;
  }
  if (b->start > 0) {
    memmove(b->data, b->data + b->start, len);
    b->start = 0;
    b->end = len;
  }
  p = ls_realloc(b->data, b->cap, cap);
  if (p == NULL)
    return LS_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int ls_buf_append_slow(ls_buf_t *b, const void *p, size_t n) {
  int err;
  if (n == 0)
    return 0;
  err = ls_buf_reserve(b, n);
  if (err)
    return err;
  memcpy(b->data + b->end, p, n);
  b->end += n;
  return 0;
}

void ls_buf_consume(ls_buf_t *b, size_t n) {
  b->start += n;
  b->scan = b->scan > n ? b->scan - n : 0;
  if (b->start == b->end) {
    b->start = b->end = b->scan = 0;
    if (b->cap > LS_BUF_KEEP)
      ls_buf_free(b);
  }
}

size_t ls_buf_find_line(ls_buf_t *b, size_t max) {
  size_t len = ls_buf_len(b);
  size_t limit = len < max ? len : max;
  const char *nl;
  if (b->scan >= limit)
    return 0;
  nl = memchr(b->data + b->start + b->scan, '\n', limit - b->scan);
  if (nl == NULL) {
    b->scan = limit;
    return 0;
  }
  return (size_t)(nl - (b->data + b->start)) + 1;
}
