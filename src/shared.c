#include "shared.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "log.h"

#define ZONE_MAGIC 0x4d48534cu /* "LSHM" */
#define ALIGN 16u
#define MIN_BLOCK 32u          /* a free block: header, two links, footer */
#define NBINS 60               /* size classes: floor(log2(size)) - 5 */
#define SCAN_MAX 64            /* blocks looked at in the exact size class before a larger one */
#define B_INUSE 1u
#define B_PREV_INUSE 2u
#define B_FLAGS 15u
#define LIVE 0x4556494cu       /* "LIVE": the entry is completely written */

/* Keeps the compiler from moving stores across it. The order that matters is the order in
 * which a process that may be killed at any instruction writes: whatever it stored before the
 * kill stays in the shared pages. */
#define ORDER() atomic_signal_fence(memory_order_seq_cst)

/* The zone's header, at offset 0 of the mapping. Every other "pointer" is an offset from it. */
struct ls_shared_s {
  uint32_t magic;
  uint32_t recoveries;     /* rebuilds after a process died holding the lock */
  uint64_t size;           /* bytes mapped */
  pthread_mutex_t lock;    /* process-shared, robust */
  uint64_t buckets;        /* offset of uint64_t[nbuckets]: heads of the hash chains */
  uint64_t nbuckets;       /* a power of two */
  uint64_t heap, heap_end; /* the blocks */
  uint64_t lru_head;       /* most recently used entry; 0: none */
  uint64_t lru_tail;       /* least recently used: evicted first */
  uint64_t bins[NBINS];    /* free lists by size class */
  uint64_t bin_map;        /* bit k: bins[k] is not empty */
  uint64_t free_bytes;
  uint64_t count;          /* entries */
  uint64_t seq;            /* the last entry's sequence number */
};

typedef struct ls_shared_s zone_t;

/* A free block. Its size is also in its last 8 bytes (the footer), for merging with the block
 * after it. A block's header word is its size with the flags in the low bits. */
typedef struct fblock_s {
  uint64_t hdr;
  uint64_t next, prev;
} fblock_t;

/* A block in use: one key and its value. */
typedef struct entry_s {
  uint64_t hdr;
  uint32_t live;    /* LIVE once complete; cleared before the block is freed */
  uint32_t hash;
  uint64_t hnext;   /* hash chain */
  uint64_t lprev, lnext;
  uint64_t expires; /* CLOCK_MONOTONIC in ns; 0: never */
  uint64_t seq;     /* of two entries with one key (a set killed half-way), the newer wins */
  uint64_t val_len;
  union {
    int64_t i;
    double n;
  } num;
  uint32_t key_len;
  uint8_t type;
  uint8_t pad[3];
  char data[];      /* the key, then a string value */
} entry_t;

#define AT(z, off) ((char *)(z) + (off))

static inline entry_t *E(zone_t *z, uint64_t off) { return (entry_t *)AT(z, off); }
static inline fblock_t *F(zone_t *z, uint64_t off) { return (fblock_t *)AT(z, off); }
static inline uint64_t *HDR(zone_t *z, uint64_t off) { return (uint64_t *)AT(z, off); }
static inline uint64_t *FOOTER(zone_t *z, uint64_t off, uint64_t size) {
  return (uint64_t *)AT(z, off + size - 8);
}
static inline uint64_t bsize(uint64_t hdr) { return hdr & ~(uint64_t)B_FLAGS; }
static inline uint64_t *buckets(zone_t *z) { return (uint64_t *)AT(z, z->buckets); }

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The expiry time for a ttl in seconds: 0 (never) for 0 and for a ttl too long to count. */
static uint64_t expiry(double ttl, uint64_t now) {
  if (!(ttl > 0) || ttl >= 1e9)
    return 0;
  return now + (uint64_t)ceil(ttl * 1e9);
}

static inline int is_expired(const entry_t *e, uint64_t now) {
  return e->expires != 0 && now >= e->expires;
}

static uint32_t hash_key(const char *s, size_t len) {
  uint32_t h = 2166136261u; /* FNV-1a */
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 16777619u;
  }
  return h;
}

static inline uint64_t *bucket_of(zone_t *z, uint32_t hash) {
  return &buckets(z)[hash & (z->nbuckets - 1)];
}

/* ---- the heap ---------------------------------------------------------------------------- */

static unsigned bin_of(uint64_t size) { return (unsigned)(63 - __builtin_clzll(size)) - 5; }

static void bin_push(zone_t *z, uint64_t off) {
  fblock_t *b = F(z, off);
  unsigned k = bin_of(bsize(b->hdr));
  b->prev = 0;
  b->next = z->bins[k];
  if (b->next != 0)
    F(z, b->next)->prev = off;
  z->bins[k] = off;
  z->bin_map |= (uint64_t)1 << k;
}

static void bin_remove(zone_t *z, uint64_t off) {
  fblock_t *b = F(z, off);
  unsigned k = bin_of(bsize(b->hdr));
  if (b->prev != 0)
    F(z, b->prev)->next = b->next;
  else
    z->bins[k] = b->next;
  if (b->next != 0)
    F(z, b->next)->prev = b->prev;
  if (z->bins[k] == 0)
    z->bin_map &= ~((uint64_t)1 << k);
}

/* Marks the free block at off in use, with `size` bytes (the rest, if big enough, stays a
 * free block). The remainder's header is written before the block shrinks, so a walk of the
 * heap is valid after every single store. */
static void take(zone_t *z, uint64_t off, uint64_t size) {
  uint64_t hdr = *HDR(z, off), total = bsize(hdr);
  bin_remove(z, off);
  E(z, off)->live = 0; /* stale bytes of an earlier entry must never read as complete */
  ORDER();
  if (total - size >= MIN_BLOCK) {
    uint64_t rest = off + size;
    *HDR(z, rest) = (total - size) | B_PREV_INUSE;
    *FOOTER(z, rest, total - size) = total - size;
    ORDER();
    *HDR(z, off) = size | B_INUSE | (hdr & B_PREV_INUSE);
    bin_push(z, rest);
  } else {
    size = total;
    *HDR(z, off) = size | B_INUSE | (hdr & B_PREV_INUSE);
    if (off + size < z->heap_end)
      *HDR(z, off + size) |= B_PREV_INUSE;
  }
  z->free_bytes -= size;
}

/* A block of at least `size` bytes (a multiple of ALIGN), or 0 if none is free. */
static uint64_t heap_alloc(zone_t *z, uint64_t size) {
  unsigned k = bin_of(size), scanned = 0;
  uint64_t off, higher;
  for (off = z->bins[k]; off != 0 && scanned < SCAN_MAX; off = F(z, off)->next, scanned++) {
    if (bsize(F(z, off)->hdr) >= size) {
      take(z, off, size);
      return off;
    }
  }
  higher = k + 1 < NBINS ? z->bin_map & ~(((uint64_t)2 << k) - 1) : 0;
  if (higher == 0)
    return 0;
  off = z->bins[__builtin_ctzll(higher)];
  take(z, off, size);
  return off;
}

/* Frees the block at off, merging it with free neighbours. */
static void heap_free(zone_t *z, uint64_t off) {
  uint64_t hdr = *HDR(z, off), size = bsize(hdr), next;
  E(z, off)->live = 0;
  ORDER();
  *HDR(z, off) = size | (hdr & B_PREV_INUSE);
  ORDER();
  z->free_bytes += size;
  next = off + size;
  if (next < z->heap_end && !(*HDR(z, next) & B_INUSE)) {
    bin_remove(z, next);
    size += bsize(*HDR(z, next));
    *HDR(z, off) = size | (hdr & B_PREV_INUSE);
  }
  if (!(hdr & B_PREV_INUSE)) {
    uint64_t prev = off - *(uint64_t *)AT(z, off - 8);
    bin_remove(z, prev);
    size += off - prev;
    *HDR(z, prev) = size | (*HDR(z, prev) & B_PREV_INUSE);
    off = prev;
  }
  *FOOTER(z, off, size) = size;
  next = off + size;
  if (next < z->heap_end)
    *HDR(z, next) &= ~(uint64_t)B_PREV_INUSE;
  bin_push(z, off);
}

/* Empties the store: one store makes the whole heap one free block. */
static void format_heap(zone_t *z) {
  uint64_t size = z->heap_end - z->heap;
  memset(buckets(z), 0, z->nbuckets * sizeof(uint64_t));
  ORDER();
  *HDR(z, z->heap) = size | B_PREV_INUSE;
  ORDER();
  *FOOTER(z, z->heap, size) = size;
  memset(z->bins, 0, sizeof z->bins);
  z->bin_map = 0;
  z->lru_head = z->lru_tail = 0;
  z->count = 0;
  z->free_bytes = size;
  bin_push(z, z->heap);
}

/* ---- entries ------------------------------------------------------------------------------ */

static void lru_unlink(zone_t *z, entry_t *e) {
  if (e->lprev != 0)
    E(z, e->lprev)->lnext = e->lnext;
  else
    z->lru_head = e->lnext;
  if (e->lnext != 0)
    E(z, e->lnext)->lprev = e->lprev;
  else
    z->lru_tail = e->lprev;
}

static void lru_push(zone_t *z, uint64_t off) {
  entry_t *e = E(z, off);
  e->lprev = 0;
  e->lnext = z->lru_head;
  if (z->lru_head != 0)
    E(z, z->lru_head)->lprev = off;
  else
    z->lru_tail = off;
  z->lru_head = off;
}

/* At the cold end: used by the rebuild, which walks the heap in recency order. */
static void lru_append(zone_t *z, uint64_t off) {
  entry_t *e = E(z, off);
  e->lnext = 0;
  e->lprev = z->lru_tail;
  if (z->lru_tail != 0)
    E(z, z->lru_tail)->lnext = off;
  else
    z->lru_head = off;
  z->lru_tail = off;
}

static void lru_touch(zone_t *z, uint64_t off) {
  if (z->lru_head != off) {
    lru_unlink(z, E(z, off));
    lru_push(z, off);
  }
}

/* Unlinks the entry at off (reached through *link) and frees it. */
static void drop(zone_t *z, uint64_t *link, uint64_t off) {
  entry_t *e = E(z, off);
  *link = e->hnext;
  lru_unlink(z, e);
  z->count--;
  heap_free(z, off);
}

static void drop_entry(zone_t *z, uint64_t off) {
  uint64_t *link = bucket_of(z, E(z, off)->hash);
  while (*link != 0 && *link != off)
    link = &E(z, *link)->hnext;
  if (*link == off)
    drop(z, link, off);
}

/* The link (a bucket, or an entry's hnext) that holds key's entry, or that holds 0 if there is
 * none. Expired entries met on the way are removed. */
static uint64_t *find(zone_t *z, const char *key, size_t klen, uint32_t hash, uint64_t now) {
  uint64_t *link = bucket_of(z, hash);
  while (*link != 0) {
    entry_t *e = E(z, *link);
    if (is_expired(e, now)) {
      drop(z, link, *link);
      continue;
    }
    if (e->hash == hash && e->key_len == klen && memcmp(e->data, key, klen) == 0)
      return link;
    link = &e->hnext;
  }
  return link;
}

/* Removes up to n expired entries from the cold end, as ngx does on each write. */
static void expire_tail(zone_t *z, uint64_t now, int n) {
  while (n-- > 0 && z->lru_tail != 0 && is_expired(E(z, z->lru_tail), now))
    drop_entry(z, z->lru_tail);
}

/* A block of `size` bytes, evicting from the cold end until one is free. *forcible is set when
 * an evicted entry had not expired. 0 when even an empty heap is too small. */
static uint64_t alloc_evicting(zone_t *z, uint64_t size, uint64_t now, int *forcible) {
  if (size > z->heap_end - z->heap)
    return 0;
  for (;;) {
    uint64_t off = heap_alloc(z, size);
    if (off != 0)
      return off;
    if (z->lru_tail == 0)
      return 0;
    if (!is_expired(E(z, z->lru_tail), now))
      *forcible = 1;
    drop_entry(z, z->lru_tail);
  }
}

/* Writes a new entry (not yet in the hash or the LRU list) and returns its offset, or 0 when
 * there is no room. It becomes live with its last store. */
static uint64_t write_entry(zone_t *z, const char *key, size_t klen, uint32_t hash,
                            const ls_shv_t *v, uint64_t expires, uint64_t now, int *forcible) {
  size_t vlen = v->type == LS_SHV_STRING ? v->len : 0;
  uint64_t size, off;
  entry_t *e;
  if (vlen > z->size)
    return 0;
  size = (sizeof(entry_t) + klen + vlen + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
  off = alloc_evicting(z, size, now, forcible);
  if (off == 0)
    return 0;
  e = E(z, off);
  e->hash = hash;
  e->hnext = e->lprev = e->lnext = 0;
  e->expires = expires;
  e->seq = ++z->seq;
  e->val_len = vlen;
  e->key_len = (uint32_t)klen;
  e->type = (uint8_t)v->type;
  e->num.i = v->type == LS_SHV_STRING ? 0 : v->num.i;
  memcpy(e->data, key, klen);
  if (vlen != 0)
    memcpy(e->data + klen, v->str, vlen);
  ORDER();
  e->live = LIVE;
  ORDER();
  return off;
}

/* Puts a new entry for key in place of the old one, if any: the new one is complete and live
 * before the old one goes (a process killed in between leaves both, and the rebuild keeps the
 * newer). */
static int replace_entry(zone_t *z, const char *key, size_t klen, uint32_t hash,
                         const ls_shv_t *v, uint64_t expires, uint64_t now, int *forcible) {
  uint64_t off = write_entry(z, key, klen, hash, v, expires, now, forcible), *link;
  if (off == 0)
    return LS_SH_NO_MEMORY;
  link = find(z, key, klen, hash, now); /* eviction may have taken the old entry */
  if (*link != 0)
    drop(z, link, *link);
  link = bucket_of(z, hash);
  E(z, off)->hnext = *link;
  *link = off;
  lru_push(z, off);
  z->count++;
  return LS_SH_OK;
}

static void entry_value(const entry_t *e, ls_shv_t *out) {
  out->type = e->type;
  out->num.i = e->num.i;
  out->len = e->val_len;
  out->str = NULL;
}

/* ---- recovery ----------------------------------------------------------------------------- */

static int entry_sane(const entry_t *e, uint64_t size) {
  return e->type >= LS_SHV_STRING && e->type <= LS_SHV_BOOLEAN &&
         (e->type == LS_SHV_STRING || e->val_len == 0) && e->key_len <= LS_SHARED_KEY_MAX &&
         e->val_len <= size && sizeof(entry_t) + e->key_len + e->val_len <= size;
}

/* Rebuilds every index from the heap after a process died holding the lock. Pass 1 walks the
 * blocks, keeps the complete entries (the newer of two with one key) and frees the others;
 * pass 2 merges free runs and rebuilds the flags, footers, free lists and the LRU list (in heap
 * order: recency is lost, the data is not). A heap that does not walk is emptied. */
static void rebuild(zone_t *z) {
  uint64_t off, size, hdr, prev_inuse = B_PREV_INUSE, max_seq = 0;
  memset(buckets(z), 0, z->nbuckets * sizeof(uint64_t));
  for (off = z->heap; off < z->heap_end; off += size) {
    uint64_t *link;
    entry_t *e = E(z, off);
    hdr = *HDR(z, off);
    size = bsize(hdr);
    if (size < MIN_BLOCK || size > z->heap_end - off) {
      ls_log(LS_LOG_ERROR, "srv.shared: the heap does not walk; the store is emptied");
      format_heap(z);
      return;
    }
    if (!(hdr & B_INUSE))
      continue;
    if (e->live != LIVE || !entry_sane(e, size) || e->hash != hash_key(e->data, e->key_len)) {
      *HDR(z, off) = hdr & ~(uint64_t)B_INUSE;
      continue;
    }
    link = bucket_of(z, e->hash);
    while (*link != 0) {
      entry_t *d = E(z, *link);
      if (d->key_len == e->key_len && memcmp(d->data, e->data, e->key_len) == 0)
        break;
      link = &d->hnext;
    }
    if (*link != 0) {
      entry_t *d = E(z, *link);
      entry_t *loser = d->seq > e->seq ? e : d;
      if (loser == d)
        *link = d->hnext;
      loser->live = 0;
      loser->hdr &= ~(uint64_t)B_INUSE;
      if (loser == e)
        continue;
    }
    if (e->seq > max_seq)
      max_seq = e->seq;
    link = bucket_of(z, e->hash);
    e->hnext = *link;
    *link = off;
  }
  memset(z->bins, 0, sizeof z->bins);
  z->bin_map = 0;
  z->lru_head = z->lru_tail = 0;
  z->count = 0;
  z->free_bytes = 0;
  if (max_seq > z->seq)
    z->seq = max_seq;
  for (off = z->heap; off < z->heap_end; off += size) {
    hdr = *HDR(z, off);
    size = bsize(hdr);
    if (hdr & B_INUSE) {
      *HDR(z, off) = size | B_INUSE | prev_inuse;
      /* Appended at the cold end, so heap order is recency order from the head. */
      lru_append(z, off);
      z->count++;
      prev_inuse = B_PREV_INUSE;
      continue;
    }
    while (off + size < z->heap_end && !(*HDR(z, off + size) & B_INUSE))
      size += bsize(*HDR(z, off + size));
    *HDR(z, off) = size | prev_inuse;
    *FOOTER(z, off, size) = size;
    z->free_bytes += size;
    bin_push(z, off);
    prev_inuse = 0;
  }
}

/* Takes the lock; after a holder died, rebuilds the store and makes the mutex consistent. */
static int zone_lock(zone_t *z) {
  int r = pthread_mutex_lock(&z->lock);
  if (r == EOWNERDEAD) {
    rebuild(z);
    z->recoveries++;
    pthread_mutex_consistent(&z->lock);
    ls_log(LS_LOG_WARN,
           "srv.shared: a process died holding the store's lock; rebuilt it (%llu keys kept)",
           (unsigned long long)z->count);
    return 0;
  }
  return r;
}

static void zone_unlock(zone_t *z) { pthread_mutex_unlock(&z->lock); }

/* ---- the zone ----------------------------------------------------------------------------- */

ls_shared_t *ls_shared_new(size_t size) {
  pthread_mutexattr_t attr;
  zone_t *z;
  uint64_t n = 16;
  if (size < LS_SHARED_MIN_SIZE)
    size = LS_SHARED_MIN_SIZE;
  size &= ~(size_t)4095;
  z = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (z == MAP_FAILED)
    return NULL;
  z->size = size;
  if (pthread_mutexattr_init(&attr) != 0 ||
      pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
      pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0 ||
      pthread_mutex_init(&z->lock, &attr) != 0) {
    munmap(z, size);
    return NULL;
  }
  pthread_mutexattr_destroy(&attr);
  /* One bucket per 512 bytes of zone: chains stay short while entries are small. */
  while (n * 2 <= size / 512)
    n *= 2;
  z->nbuckets = n;
  z->buckets = (sizeof *z + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
  z->heap = z->buckets + n * sizeof(uint64_t);
  z->heap_end = z->heap + ((size - z->heap) & ~(uint64_t)(ALIGN - 1));
  format_heap(z);
  z->magic = ZONE_MAGIC;
  return z;
}

void ls_shared_free(ls_shared_t *sh) {
  /* The mutex is not destroyed: other processes may still use it. */
  if (sh != NULL)
    munmap(sh, sh->size);
}

/* ---- operations --------------------------------------------------------------------------- */

int ls_shared_get(ls_shared_t *z, const char *key, size_t klen, ls_shv_t *out, char *buf,
                  size_t cap) {
  uint32_t hash = hash_key(key, klen);
  uint64_t *link;
  int rc = LS_SH_OK;
  if (zone_lock(z) != 0)
    return LS_SH_LOCK_FAILED;
  link = find(z, key, klen, hash, mono_ns());
  if (*link == 0) {
    rc = LS_SH_NOT_FOUND;
  } else {
    entry_t *e = E(z, *link);
    entry_value(e, out);
    if (e->type == LS_SHV_STRING) {
      if (out->len > cap) {
        rc = LS_SH_SMALL_BUFFER;
      } else {
        memcpy(buf, e->data + klen, out->len);
        out->str = buf;
      }
    }
    lru_touch(z, *link);
  }
  zone_unlock(z);
  return rc;
}

int ls_shared_store(ls_shared_t *z, ls_sh_mode_t mode, const char *key, size_t klen,
                    const ls_shv_t *v, double ttl, int *forcible) {
  uint32_t hash = hash_key(key, klen);
  uint64_t now, *link, expires;
  int rc = LS_SH_OK;
  *forcible = 0;
  if (zone_lock(z) != 0)
    return LS_SH_LOCK_FAILED;
  now = mono_ns();
  expire_tail(z, now, 2);
  link = find(z, key, klen, hash, now);
  expires = expiry(ttl, now);
  if (mode == LS_SH_ADD && *link != 0) {
    rc = LS_SH_EXISTS;
  } else if (mode == LS_SH_REPLACE && *link == 0) {
    rc = LS_SH_NOT_FOUND;
  } else if (v->type == LS_SHV_NIL) {
    if (*link != 0)
      drop(z, link, *link);
  } else if (*link != 0 && v->type != LS_SHV_STRING && E(z, *link)->type == v->type &&
             E(z, *link)->expires == expires) {
    E(z, *link)->num.i = v->num.i; /* one 8-byte store */
    lru_touch(z, *link);
  } else {
    rc = replace_entry(z, key, klen, hash, v, expires, now, forcible);
  }
  zone_unlock(z);
  return rc;
}

/* a + b as Lua adds them: integers wrap around, anything else is a float. */
static void add_numbers(const ls_shv_t *a, const ls_shv_t *b, ls_shv_t *out) {
  memset(out, 0, sizeof *out);
  if (a->type == LS_SHV_INTEGER && b->type == LS_SHV_INTEGER) {
    out->type = LS_SHV_INTEGER;
    out->num.i = (int64_t)((uint64_t)a->num.i + (uint64_t)b->num.i);
  } else {
    double x = a->type == LS_SHV_INTEGER ? (double)a->num.i : a->num.n;
    double y = b->type == LS_SHV_INTEGER ? (double)b->num.i : b->num.n;
    out->type = LS_SHV_FLOAT;
    out->num.n = x + y;
  }
}

int ls_shared_incr(ls_shared_t *z, const char *key, size_t klen, const ls_shv_t *by,
                   const ls_shv_t *init, double init_ttl, ls_shv_t *out, int *forcible) {
  uint32_t hash = hash_key(key, klen);
  uint64_t now, *link;
  int rc = LS_SH_OK;
  *forcible = 0;
  if (zone_lock(z) != 0)
    return LS_SH_LOCK_FAILED;
  now = mono_ns();
  link = find(z, key, klen, hash, now);
  if (*link == 0) {
    ls_shv_t zero;
    memset(&zero, 0, sizeof zero);
    zero.type = LS_SHV_INTEGER;
    add_numbers(init != NULL ? init : &zero, by, out);
    rc = replace_entry(z, key, klen, hash, out, expiry(init_ttl, now), now, forcible);
  } else {
    entry_t *e = E(z, *link);
    ls_shv_t cur;
    if (e->type != LS_SHV_INTEGER && e->type != LS_SHV_FLOAT) {
      rc = LS_SH_NOT_NUMBER;
    } else {
      entry_value(e, &cur);
      add_numbers(&cur, by, out);
      if (out->type == e->type) {
        e->num.i = out->num.i; /* one 8-byte store */
        lru_touch(z, *link);
      } else {
        rc = replace_entry(z, key, klen, hash, out, e->expires, now, forcible);
      }
    }
  }
  zone_unlock(z);
  return rc;
}

int ls_shared_delete(ls_shared_t *z, const char *key, size_t klen) {
  uint64_t *link;
  int found;
  if (zone_lock(z) != 0)
    return -1;
  link = find(z, key, klen, hash_key(key, klen), mono_ns());
  found = *link != 0;
  if (found)
    drop(z, link, *link);
  zone_unlock(z);
  return found;
}

int ls_shared_ttl(ls_shared_t *z, const char *key, size_t klen, double *ttl) {
  uint64_t now, *link;
  int rc = LS_SH_OK;
  if (zone_lock(z) != 0)
    return LS_SH_LOCK_FAILED;
  now = mono_ns();
  link = find(z, key, klen, hash_key(key, klen), now);
  if (*link == 0) {
    rc = LS_SH_NOT_FOUND;
  } else {
    uint64_t expires = E(z, *link)->expires;
    *ttl = expires == 0 ? 0 : (double)(expires - now) / 1e9;
  }
  zone_unlock(z);
  return rc;
}

int ls_shared_expire(ls_shared_t *z, const char *key, size_t klen, double ttl) {
  uint64_t now, *link;
  int rc = LS_SH_OK;
  if (zone_lock(z) != 0)
    return LS_SH_LOCK_FAILED;
  now = mono_ns();
  link = find(z, key, klen, hash_key(key, klen), now);
  if (*link == 0)
    rc = LS_SH_NOT_FOUND;
  else
    E(z, *link)->expires = expiry(ttl, now); /* one 8-byte store */
  zone_unlock(z);
  return rc;
}

int ls_shared_keys(ls_shared_t *z, size_t max, char *buf, size_t cap, size_t *needed,
                   size_t *count) {
  uint64_t now, off;
  size_t n = 0, used = 0;
  if (zone_lock(z) != 0)
    return LS_SH_LOCK_FAILED;
  now = mono_ns();
  for (off = z->lru_head; off != 0 && (max == 0 || n < max); off = E(z, off)->lnext) {
    entry_t *e = E(z, off);
    if (is_expired(e, now))
      continue;
    used += 4 + e->key_len;
    n++;
  }
  *needed = used;
  *count = n;
  if (used > cap) {
    zone_unlock(z);
    return LS_SH_SMALL_BUFFER;
  }
  used = n = 0;
  for (off = z->lru_head; off != 0 && n < *count; off = E(z, off)->lnext) {
    entry_t *e = E(z, off);
    uint32_t len = e->key_len;
    if (is_expired(e, now))
      continue;
    memcpy(buf + used, &len, 4);
    memcpy(buf + used + 4, e->data, len);
    used += 4 + len;
    n++;
  }
  zone_unlock(z);
  return LS_SH_OK;
}

int ls_shared_flush_all(ls_shared_t *z) {
  if (zone_lock(z) != 0)
    return LS_SH_LOCK_FAILED;
  format_heap(z);
  zone_unlock(z);
  return LS_SH_OK;
}

long ls_shared_flush_expired(ls_shared_t *z, size_t max) {
  uint64_t now, off, prev;
  long n = 0;
  if (zone_lock(z) != 0)
    return -1;
  now = mono_ns();
  for (off = z->lru_tail; off != 0 && (max == 0 || (size_t)n < max); off = prev) {
    prev = E(z, off)->lprev;
    if (is_expired(E(z, off), now)) {
      drop_entry(z, off);
      n++;
    }
  }
  zone_unlock(z);
  return n;
}

size_t ls_shared_free_space(ls_shared_t *z) {
  size_t n = 0;
  if (zone_lock(z) == 0) {
    n = z->free_bytes;
    zone_unlock(z);
  }
  return n;
}

size_t ls_shared_capacity(ls_shared_t *z) { return z->size; }

const char *ls_shared_strerror(int code) {
  switch (code) {
  case LS_SH_NOT_FOUND:
    return "not found";
  case LS_SH_EXISTS:
    return "exists";
  case LS_SH_NO_MEMORY:
    return "no memory";
  case LS_SH_NOT_NUMBER:
    return "not a number";
  case LS_SH_LOCK_FAILED:
    return "the shared store's lock is unusable";
  default:
    return "error";
  }
}

/* ---- for tests ---------------------------------------------------------------------------- */

int ls__shared_lock(ls_shared_t *z) { return zone_lock(z); }
void ls__shared_unlock(ls_shared_t *z) { zone_unlock(z); }
unsigned ls__shared_recoveries(ls_shared_t *z) { return z->recoveries; }
size_t ls__shared_count(ls_shared_t *z) { return z->count; }

#define CK(cond)                                                                              \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      rc = __LINE__;                                                                          \
      goto done;                                                                              \
    }                                                                                         \
  } while (0)

int ls__shared_check(ls_shared_t *z) {
  uint64_t off, size = 0, hdr, free_bytes = 0, nfree = 0, nlive = 0, in_bins = 0, n;
  uint64_t prev_inuse = B_PREV_INUSE, was_free = 0, i;
  int rc = 0;
  unsigned k;
  if (zone_lock(z) != 0)
    return -1;
  CK(z->magic == ZONE_MAGIC);
  for (off = z->heap; off < z->heap_end; off += size) {
    hdr = *HDR(z, off);
    size = bsize(hdr);
    CK(size >= MIN_BLOCK && size <= z->heap_end - off);
    CK((hdr & B_PREV_INUSE) == prev_inuse);
    if (hdr & B_INUSE) {
      entry_t *e = E(z, off);
      CK(e->live == LIVE && entry_sane(e, size));
      nlive++;
      prev_inuse = B_PREV_INUSE;
      was_free = 0;
    } else {
      CK(!was_free); /* two free blocks in a row should have merged */
      CK(*FOOTER(z, off, size) == size);
      free_bytes += size;
      nfree++;
      prev_inuse = 0;
      was_free = 1;
    }
  }
  CK(off == z->heap_end);
  CK(free_bytes == z->free_bytes);
  for (k = 0; k < NBINS; k++) {
    uint64_t prev = 0;
    CK(((z->bin_map >> k) & 1) == (z->bins[k] != 0));
    for (off = z->bins[k]; off != 0; prev = off, off = F(z, off)->next) {
      CK(!(F(z, off)->hdr & B_INUSE) && bin_of(bsize(F(z, off)->hdr)) == k);
      CK(F(z, off)->prev == prev);
      CK(++in_bins <= nfree);
    }
  }
  CK(in_bins == nfree);
  n = 0;
  for (i = 0; i < z->nbuckets; i++) {
    for (off = buckets(z)[i]; off != 0; off = E(z, off)->hnext) {
      entry_t *e = E(z, off);
      CK(*HDR(z, off) & B_INUSE);
      CK(e->live == LIVE && (e->hash & (z->nbuckets - 1)) == i);
      CK(e->hash == hash_key(e->data, e->key_len));
      CK(++n <= nlive);
    }
  }
  CK(n == nlive && n == z->count);
  n = 0;
  for (off = z->lru_head; off != 0; off = E(z, off)->lnext) {
    entry_t *e = E(z, off);
    CK(e->lnext != 0 || z->lru_tail == off);
    CK(e->lprev == 0 ? z->lru_head == off : E(z, e->lprev)->lnext == off);
    CK(++n <= nlive);
  }
  CK(n == nlive);
done:
  zone_unlock(z);
  return rc;
}
