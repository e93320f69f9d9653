/* srv.shared: a key/value store in one fixed-size zone of shared memory, with the semantics of
 * OpenResty's ngx.shared.DICT (get, set, add, replace, incr, delete, ttl, expire, keys,
 * flush_all, free_space, capacity).
 *
 * The zone is mapped MAP_SHARED | MAP_ANONYMOUS. Under --workers the command maps it before
 * forking, so every worker sees the same bytes (at the same address, but nothing in the zone
 * depends on that: it holds offsets, never pointers). Without workers the same zone serves one
 * process. The runtime owns its zone, so values outlive every generation of Lua state (hot
 * reload); the master owns the workers' zone, so they also outlive a worker's restart.
 *
 * Inside: a header, a fixed array of hash buckets, and a heap of blocks (boundary tags,
 * size-class free lists, coalescing). Entries are on a least-recently-used list; when the heap
 * cannot hold a new value, entries are evicted from the cold end. Expiry uses CLOCK_MONOTONIC,
 * which every process on the machine shares.
 *
 * Every operation runs under one process-shared robust mutex. If a process dies holding it
 * (kill -9 in the middle of a set), the next one to lock gets EOWNERDEAD and rebuilds the
 * indexes (hash chains, LRU list, free lists, counters) from a walk of the heap, which is
 * always walkable: each block header changes with one 8-byte store, and an entry becomes
 * visible only after it has been written completely (its `live` word is its last store).
 *
 * Nothing here calls Lua while holding the lock: values are copied into the caller's buffer,
 * and a caller whose buffer is too small is told the size it needs (LS_SH_SMALL_BUFFER). */
#ifndef LS_SHARED_H
#define LS_SHARED_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ls_shared_s ls_shared_t;

#define LS_SHARED_DEFAULT_SIZE ((size_t)16 * 1024 * 1024)
#define LS_SHARED_MIN_SIZE ((size_t)64 * 1024)
#define LS_SHARED_KEY_MAX 65535

/* Results of the store's operations. */
enum {
  LS_SH_OK = 0,
  LS_SH_NOT_FOUND,    /* no such key (or it expired) */
  LS_SH_EXISTS,       /* add: the key is there */
  LS_SH_NO_MEMORY,    /* the value cannot fit in the zone, even after evicting everything */
  LS_SH_NOT_NUMBER,   /* incr of a value that is not a number */
  LS_SH_SMALL_BUFFER, /* the caller's buffer is too small: *needed says how big */
  LS_SH_LOCK_FAILED   /* the mutex is unusable (it cannot happen unless memory is corrupt) */
};

/* The kinds of value. */
enum { LS_SHV_NIL = 0, LS_SHV_STRING, LS_SHV_INTEGER, LS_SHV_FLOAT, LS_SHV_BOOLEAN };

typedef struct ls_shv_s {
  int type;
  union {
    int64_t i; /* LS_SHV_INTEGER, and LS_SHV_BOOLEAN (0 or 1) */
    double n;  /* LS_SHV_FLOAT */
  } num;
  const char *str; /* LS_SHV_STRING: the bytes (for get: in the caller's buffer) */
  size_t len;
} ls_shv_t;

typedef enum { LS_SH_SET, LS_SH_ADD, LS_SH_REPLACE } ls_sh_mode_t;

/* Maps and formats a zone of `size` bytes (at least LS_SHARED_MIN_SIZE). Returns NULL if the
 * mapping or the mutex cannot be made. */
ls_shared_t *ls_shared_new(size_t size);
/* Unmaps the zone from this process (other processes keep their mappings). NULL is ignored. */
void ls_shared_free(ls_shared_t *sh);

/* Looks `key` up. On LS_SH_OK, *out holds the value; a string is copied into buf (cap bytes)
 * and out->str points there. If the string does not fit, returns LS_SH_SMALL_BUFFER with
 * out->len set to its length. A hit makes the entry the most recently used. */
int ls_shared_get(ls_shared_t *sh, const char *key, size_t klen, ls_shv_t *out, char *buf,
                  size_t cap);
/* Stores v under key (v->type LS_SHV_NIL deletes), expiring after ttl seconds (0: never).
 * LS_SH_ADD fails with LS_SH_EXISTS on a key that is there, LS_SH_REPLACE with
 * LS_SH_NOT_FOUND on one that is not. *forcible is set to 1 if live entries were evicted to
 * make room. */
int ls_shared_store(ls_shared_t *sh, ls_sh_mode_t mode, const char *key, size_t klen,
                    const ls_shv_t *v, double ttl, int *forcible);
/* Adds `by` (an integer or float value) to the number under key, with Lua's arithmetic
 * (integers wrap; a float makes a float). A missing key starts from `init` (or 0 when init is
 * NULL) and gets `init_ttl`. *out is the new value. LS_SH_NOT_NUMBER if the key holds a
 * string or a boolean. */
int ls_shared_incr(ls_shared_t *sh, const char *key, size_t klen, const ls_shv_t *by,
                   const ls_shv_t *init, double init_ttl, ls_shv_t *out, int *forcible);
/* Removes key. Returns 1 if it was there (and not expired), 0 if not, or a negative value if
 * the lock failed. */
int ls_shared_delete(ls_shared_t *sh, const char *key, size_t klen);
/* The seconds key has left to live in *ttl (0: it never expires). */
int ls_shared_ttl(ls_shared_t *sh, const char *key, size_t klen, double *ttl);
/* Sets key to expire ttl seconds from now (0: never). */
int ls_shared_expire(ls_shared_t *sh, const char *key, size_t klen, double ttl);
/* Copies up to `max` keys (0: all), most recently used first, into buf as a 4-byte length
 * (host order) followed by the bytes, and sets *count. LS_SH_SMALL_BUFFER sets *needed. */
int ls_shared_keys(ls_shared_t *sh, size_t max, char *buf, size_t cap, size_t *needed,
                   size_t *count);
/* Removes every entry. */
int ls_shared_flush_all(ls_shared_t *sh);
/* Removes up to `max` expired entries (0: all); returns how many, or -1 if the lock failed. */
long ls_shared_flush_expired(ls_shared_t *sh, size_t max);
/* Bytes in free blocks of the heap, and the size of the zone. */
size_t ls_shared_free_space(ls_shared_t *sh);
size_t ls_shared_capacity(ls_shared_t *sh);
/* The message for a result code (for LS_SH_NOT_FOUND: "not found", ...). */
const char *ls_shared_strerror(int code);

/* Pushes the srv.shared table; its functions work on *slot (the runtime's zone), which they
 * map with the default size on first use if it is still NULL. */
void ls_shared_open(lua_State *L, ls_shared_t **slot);

/* For tests: take and release the lock by hand (a test process dies holding it); check every
 * invariant of the structure (returns 0, or the source line of the first broken one); count
 * the entries; how many times the store was rebuilt after a holder died. */
int ls__shared_lock(ls_shared_t *sh);
void ls__shared_unlock(ls_shared_t *sh);
int ls__shared_check(ls_shared_t *sh);
size_t ls__shared_count(ls_shared_t *sh);
unsigned ls__shared_recoveries(ls_shared_t *sh);

#endif
