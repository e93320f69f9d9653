#include "buffer.h"

#include <string.h>

#include "alloc.h"
#include "errors.h"

/* Storage above this is returned when the buffer empties, so one large message does not pin
 * memory for the rest of a connection's life. */
#define LS_BUF_KEEP (64 * 1024)

void ls_buf_init(ls_buf_t *b) { memset(b, 0, sizeof *b); }

void ls_buf_free(ls_buf_t *b) {
  ls_free(b->data, b->cap);
  ls_buf_init(b);
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
  cap = b->cap < 256 ? 256 : b->cap;
  while (cap - len < n) {
    if (cap > ((size_t)-1) / 2)
      return LS_ENOMEM;
    cap *= 2;
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

int ls_buf_append(ls_buf_t *b, const void *p, size_t n) {
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
