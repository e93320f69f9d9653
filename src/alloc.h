/* Counting allocators: one for each Lua state (given to lua_newstate) and one for the C core.
 * Both keep the bytes in use and a peak, and can refuse past a limit or after a number of
 * allocations, so tests can cap memory and fail allocations on purpose. */
#ifndef LS_ALLOC_H
#define LS_ALLOC_H

#include <stddef.h>

typedef struct ls_alloc_s {
  size_t used;      /* bytes handed out and not yet freed */
  size_t peak;      /* highest value of used */
  size_t limit;     /* 0: no limit; else a growing request past it fails */
  long fail_after;  /* < 0: never; else this many more growing requests succeed, then all fail */
} ls_alloc_t;

void ls_alloc_init(ls_alloc_t *a, size_t limit);

/* A lua_Alloc: `ud` is the ls_alloc_t. Shrinking and freeing never fail. */
void *ls_alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize);

/* The C core's allocator. Sizes are passed back on free, as with lua_Alloc, so nothing is
 * stored per block. Returns NULL when the process-wide C allocator refuses. */
void *ls_malloc(size_t size);
void *ls_realloc(void *ptr, size_t old_size, size_t new_size);
void ls_free(void *ptr, size_t size);
ls_alloc_t *ls_core_alloc(void);

#endif
