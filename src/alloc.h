/* Counting allocators: one for each Lua state (given to lua_newstate) and one for the C core.
 * Both keep the bytes in use and a peak, and can refuse past a limit or after a number of
 * allocations, so tests can cap memory and fail allocations on purpose. */
#ifndef LS_ALLOC_H
#define LS_ALLOC_H

#include <stddef.h>

/* Lua makes and drops many small objects per request (the request object, tables, closures).
 * Blocks up to LS_POOL_MAX bytes come from free lists, one per 16-byte size class, filled from
 * slabs of LS_POOL_SLAB bytes that stay with the allocator until ls_alloc_release: a block
 * costs a list pop and a push instead of a trip through malloc, and memory is bounded by the
 * peak in use. Sanitizer builds (LS_NO_POOL) use malloc for every block, so ASan sees each. */
#define LS_POOL_MAX 256
#define LS_POOL_CLASSES (LS_POOL_MAX / 16)
#define LS_POOL_SLAB (16 * 1024)

typedef struct ls_alloc_s {
  size_t used;      /* bytes handed out and not yet freed */
  size_t peak;      /* highest value of used */
  size_t limit;     /* 0: no limit; else a growing request past it fails */
  long fail_after;  /* < 0: never; else this many more growing requests succeed, then all fail */
  void *free_blocks[LS_POOL_CLASSES]; /* free lists of the size classes (ls_alloc_lua only) */
  void *slabs;                        /* the slabs, linked through their first word */
  size_t slab_bytes;                  /* their total size */
} ls_alloc_t;

void ls_alloc_init(ls_alloc_t *a, size_t limit);
/* Gives the slabs back (after lua_close of the state that used the allocator). */
void ls_alloc_release(ls_alloc_t *a);

/* A lua_Alloc: `ud` is the ls_alloc_t. Shrinking and freeing never fail. */
void *ls_alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize);

/* The C core's allocator. Sizes are passed back on free, as with lua_Alloc, so nothing is
 * stored per block. Returns NULL when the process-wide C allocator refuses. */
void *ls_malloc(size_t size);
void *ls_realloc(void *ptr, size_t old_size, size_t new_size);
void ls_free(void *ptr, size_t size);
ls_alloc_t *ls_core_alloc(void);

#endif
