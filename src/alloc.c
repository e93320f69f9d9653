#include "alloc.h"

#include <stdlib.h>
#include <string.h>

static ls_alloc_t core_alloc = {0, 0, 0, -1, {NULL}, NULL, 0};

void ls_alloc_init(ls_alloc_t *a, size_t limit) {
  memset(a, 0, sizeof *a);
  a->limit = limit;
  a->fail_after = -1;
}

void ls_alloc_release(ls_alloc_t *a) {
  while (a->slabs != NULL) {
    void *next = *(void **)a->slabs;
    free(a->slabs);
    a->slabs = next;
  }
  a->slab_bytes = 0;
  memset(a->free_blocks, 0, sizeof a->free_blocks);
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

#ifdef LS_NO_POOL
void *ls_alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize) {
  /* Lua passes the type tag in osize when ptr is NULL: nothing is in use yet. */
  return alloc_resize(ud, ptr, ptr == NULL ? 0 : osize, nsize);
}
#else
/* The size class of a block of 1..LS_POOL_MAX bytes. */
#define POOL_CLASS(size) (((size) - 1) >> 4)

/* Refills an empty free list from a new slab; returns 0 when malloc refuses. The slab's first
 * 16 bytes link it into the list of slabs. */
static int pool_refill(ls_alloc_t *a, unsigned cls) {
  size_t block = (size_t)(cls + 1) << 4, off;
  char *slab = malloc(LS_POOL_SLAB);
  void *list = NULL;
  if (slab == NULL)
    return 0;
  *(void **)slab = a->slabs;
  a->slabs = slab;
  a->slab_bytes += LS_POOL_SLAB;
  for (off = 16; off + block <= LS_POOL_SLAB; off += block) {
    *(void **)(slab + off) = list;
    list = slab + off;
  }
  a->free_blocks[cls] = list;
  return 1;
}

void *ls_alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize) {
  ls_alloc_t *a = ud;
  void *p;
  if (ptr == NULL) {
    /* A new block (Lua passes the type tag in osize). The usual case first: a small one from
     * its free list, with no limit to check. */
    unsigned cls = POOL_CLASS(nsize);
    if (nsize - 1 < LS_POOL_MAX && a->limit == 0 && a->fail_after < 0 &&
        (p = a->free_blocks[cls]) != NULL) {
      a->free_blocks[cls] = *(void **)p;
      a->used += nsize;
      if (a->used > a->peak)
        a->peak = a->used;
      return p;
    }
    osize = 0;
  }
  if (nsize == 0) {
    if (ptr == NULL)
      return NULL;
    if (osize <= LS_POOL_MAX) {
      *(void **)ptr = a->free_blocks[POOL_CLASS(osize)];
      a->free_blocks[POOL_CLASS(osize)] = ptr;
    } else {
      free(ptr);
    }
    a->used -= osize;
    return NULL;
  }
  if (osize > LS_POOL_MAX && nsize > LS_POOL_MAX)
    return alloc_resize(a, ptr, osize, nsize); /* large to large: realloc */
  if (osize != 0 && nsize <= LS_POOL_MAX && POOL_CLASS(osize) == POOL_CLASS(nsize)) {
    a->used = a->used - osize + nsize; /* the same block fits; it never grows past its class */
    if (a->used > a->peak)
      a->peak = a->used;
    return ptr;
  }
  if (nsize > osize && !alloc_admit(a, nsize - osize))
    return NULL;
  if (nsize <= LS_POOL_MAX) {
    unsigned cls = POOL_CLASS(nsize);
    if (a->free_blocks[cls] == NULL && !pool_refill(a, cls)) {
      if (nsize > osize)
        return NULL;
      /* A shrink must not fail: the block stays where it is and, freed later with its new
       * size, joins a smaller class (a malloc'd one then stays with the pool). */
      a->used = a->used - osize + nsize;
      return ptr;
    }
    p = a->free_blocks[cls];
    a->free_blocks[cls] = *(void **)p;
  } else if ((p = malloc(nsize)) == NULL) {
    return NULL;
  }
  if (osize != 0) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    ls_alloc_lua(a, ptr, osize, 0);
  }
  a->used += nsize;
  if (a->used > a->peak)
    a->peak = a->used;
  return p;
}
#endif

void *ls_malloc(size_t size) { return alloc_resize(&core_alloc, NULL, 0, size); }

void *ls_realloc(void *ptr, size_t old_size, size_t new_size) {
  return alloc_resize(&core_alloc, ptr, ptr == NULL ? 0 : old_size, new_size);
}

void ls_free(void *ptr, size_t size) {
  if (ptr != NULL)
    alloc_resize(&core_alloc, ptr, size, 0);
}

ls_alloc_t *ls_core_alloc(void) { return &core_alloc; }
