/* A growable byte buffer with a read cursor: bytes are appended at `end` and consumed from
 * `start`. Used for connection input (line and frame parsing) and pending output. */
#ifndef LS_BUFFER_H
#define LS_BUFFER_H

#include <stddef.h>
#include <string.h>

typedef struct ls_buf_s {
  char *data;
  size_t start; /* first unconsumed byte */
  size_t end;   /* one past the last byte */
  size_t cap;
  size_t scan;  /* offset from start already searched for a newline; without storage, the
                 * size it had before ls_buf_release */
} ls_buf_t;

void ls_buf_init(ls_buf_t *b);
/* Releases the storage; the buffer is empty and usable again afterwards. */
void ls_buf_free(ls_buf_t *b);
/* Releases the storage of an empty buffer (an idle connection's), keeping nothing per
 * connection: blocks of 256 bytes to 16 KiB go to a process-wide cache that the next buffer
 * to grow from nothing takes from, so a connection that goes idle after each request costs no
 * trip through malloc. A buffer that still holds bytes is left alone. */
void ls_buf_release(ls_buf_t *b);
/* The cache for other blocks of a power-of-two size from 256 bytes to 16 KiB (a connection's
 * header index): *size is rounded up to such a size. NULL when memory is short. */
void *ls_buf_block_take(size_t *size);
void ls_buf_block_give(void *p, size_t size);

static inline size_t ls_buf_len(const ls_buf_t *b) { return b->end - b->start; }
/* The first unconsumed byte; never NULL, so an empty buffer is a valid zero-length span. */
static inline const char *ls_buf_head(const ls_buf_t *b) {
  return b->data != NULL ? b->data + b->start : "";
}

/* Makes room for at least `n` more bytes at the end, moving the unconsumed bytes to the front
 * or growing the storage. Returns 0, or LS_ENOMEM (the buffer is unchanged). */
int ls_buf_reserve(ls_buf_t *b, size_t n);
int ls_buf_append_slow(ls_buf_t *b, const void *p, size_t n);
/* Appends n bytes; inline while they fit (the parser appends every piece of a head). */
static inline int ls_buf_append(ls_buf_t *b, const void *p, size_t n) {
  if (b->cap - b->end >= n && n > 0) {
    memcpy(b->data + b->end, p, n);
    b->end += n;
    return 0;
  }
  return ls_buf_append_slow(b, p, n);
}
/* Drops `n` bytes from the front (n <= length). An emptied buffer rewinds to offset 0 and
 * gives back storage above `keep` bytes. */
void ls_buf_consume(ls_buf_t *b, size_t n);

/* Looks for '\n' among the first `max` unconsumed bytes, resuming where the last search
 * stopped. Returns the line's length including the '\n', or 0 if there is none yet. */
size_t ls_buf_find_line(ls_buf_t *b, size_t max);

#endif
