#include "alloc.h"

#include <stdlib.h>

static ls_alloc_t core_alloc = {0, 0, 0, -1};

void ls_alloc_init(ls_alloc_t *a, size_t limit) {
  a->used = 0;
  a->peak = 0;
  a->limit = limit;
  a->fail_after = -1;
}

/* Decides whether a request that grows a block by `grow` bytes may go ahead. */
static int alloc_admit(ls_alloc_t *a, size_t grow) {
  if (a->fail_after == 0)
    return 0;
  if (a->limit != 0 && a->used + grow > a->limit)
    return 0;
  if (a->fail_after > 0)
    a->fail_after--;
  return 1;
}

static void *alloc_resize(ls_alloc_t *a, void *ptr, size_t osize, size_t nsize) {
  void *p;
  if (nsize == 0) {
    free(ptr);
    a->used -= osize;
    return NULL;
  }
  if (nsize > osize && !alloc_admit(a, nsize - osize))
    return NULL;
  p = realloc(ptr, nsize);
  if (p == NULL)
    return NULL;
  a->used = a->used - osize + nsize;
  if (a->used > a->peak)
    a->peak = a->used;
  return p;
}

void *ls_alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize) {
  /* Lua passes the type tag in osize when ptr is NULL: nothing is in use yet. */
  return alloc_resize(ud, ptr, ptr == NULL ? 0 : osize, nsize);
}

void *ls_malloc(size_t size) { return alloc_resize(&core_alloc, NULL, 0, size); }

void *ls_realloc(void *ptr, size_t old_size, size_t new_size) {
  return alloc_resize(&core_alloc, ptr, ptr == NULL ? 0 : old_size, new_size);
}

void ls_free(void *ptr, size_t size) {
  if (ptr != NULL)
    alloc_resize(&core_alloc, ptr, size, 0);
}

ls_alloc_t *ls_core_alloc(void) { return &core_alloc; }
