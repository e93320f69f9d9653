/* A growable byte buffer with a read cursor: bytes are appended at `end` and consumed from
 * `start`. Used for connection input (line and frame parsing) and pending output. */
#ifndef LS_BUFFER_H
#define LS_BUFFER_H

#include <stddef.h>

typedef struct ls_buf_s {
  char *data;
  size_t start; /* first unconsumed byte */
  size_t end;   /* one past the last byte */
  size_t cap;
  size_t scan;  /* offset from start already searched for a newline */
} ls_buf_t;

void ls_buf_init(ls_buf_t *b);
/* Releases the storage; the buffer is empty and usable again afterwards. */
void ls_buf_free(ls_buf_t *b);

static inline size_t ls_buf_len(const ls_buf_t *b) { return b->end - b->start; }
/* The first unconsumed byte; never NULL, so an empty buffer is a valid zero-length span. */
static inline const char *ls_buf_head(const ls_buf_t *b) {
  return b->data != NULL ? b->data + b->start : "";
}

/* Makes room for at least `n` more bytes at the end, moving the unconsumed bytes to the front
 * or growing the storage. Returns 0, or LS_ENOMEM (the buffer is unchanged). */
int ls_buf_reserve(ls_buf_t *b, size_t n);
int ls_buf_append(ls_buf_t *b, const void *p, size_t n);
/* Drops `n` bytes from the front (n <= length). An emptied buffer rewinds to offset 0 and
 * gives back storage above `keep` bytes. */
void ls_buf_consume(ls_buf_t *b, size_t n);

/* Looks for '\n' among the first `max` unconsumed bytes, resuming where the last search
 * stopped. Returns the line's length including the '\n', or 0 if there is none yet. */
size_t ls_buf_find_line(ls_buf_t *b, size_t max);

#endif
