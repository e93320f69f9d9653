#include "http_gzip.h"

#include <lauxlib.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "alloc.h"
#include "errors.h"

#define LS_GZIP_MAX_TYPES 32
#define LS_GZIP_TYPE_MAX 96

struct ls_gzip_conf_s {
  int level;
  size_t min_size;
  unsigned ntypes;
  char types[LS_GZIP_MAX_TYPES][LS_GZIP_TYPE_MAX]; /* lower case; "text/ ..." with a final star is a prefix */
};

struct ls_gzip_stream_s {
  z_stream z;
};

static const char *const default_types[] = {
    "text/*", "application/json", "application/javascript", "application/xml",
    "image/svg+xml", "+json", "+xml"};

/* ---- configuration ------------------------------------------------------------------------ */

static void add_type(lua_State *L, ls_gzip_conf_t *conf, const char *t, size_t len) {
  size_t i;
  if (conf->ntypes == LS_GZIP_MAX_TYPES || len == 0 || len >= LS_GZIP_TYPE_MAX)
    luaL_error(L, "option 'compress': too many types, or a type too long or empty");
  for (i = 0; i < len; i++)
    conf->types[conf->ntypes][i] = (char)(t[i] >= 'A' && t[i] <= 'Z' ? t[i] + 32 : t[i]);
  conf->types[conf->ntypes][len] = '\0';
  conf->ntypes++;
}

/* Fills conf from the table at idx; runs under lua_pcall (see ls_gzip_conf_read). */
static int read_conf(lua_State *L) {
  ls_gzip_conf_t *conf = lua_touserdata(L, 1);
  unsigned i;
  conf->level = 6;
  conf->min_size = 1024;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "level");
    if (!lua_isnil(L, -1)) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 9)
        luaL_error(L, "option 'compress': level must be a whole number from 1 to 9");
      conf->level = (int)lua_tointeger(L, -1);
    }
    lua_getfield(L, 2, "min_size");
    if (!lua_isnil(L, -1)) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
        luaL_error(L, "option 'compress': min_size must be a whole number of bytes");
      conf->min_size = (size_t)lua_tointeger(L, -1);
    }
    lua_getfield(L, 2, "types");
    if (!lua_isnil(L, -1)) {
      lua_Integer n, k;
      if (!lua_istable(L, -1))
        luaL_error(L, "option 'compress': types must be a list of content types");
      n = (lua_Integer)lua_rawlen(L, -1);
      for (k = 1; k <= n; k++) {
        size_t len;
        const char *t;
        lua_rawgeti(L, -1, k);
        t = lua_tolstring(L, -1, &len);
        if (lua_type(L, -1) != LUA_TSTRING)
          luaL_error(L, "option 'compress': types must be strings");
        add_type(L, conf, t, len);
        lua_pop(L, 1);
      }
      return 0;
    }
  }
  for (i = 0; i < sizeof default_types / sizeof *default_types; i++)
    add_type(L, conf, default_types[i], strlen(default_types[i]));
  return 0;
}

ls_gzip_conf_t *ls_gzip_conf_read(lua_State *L, int opts) {
  ls_gzip_conf_t *conf;
  int field;
  if (opts == 0)
    return NULL;
  lua_getfield(L, opts, "compress");
  field = lua_gettop(L);
  if (lua_isnil(L, field) || (lua_isboolean(L, field) && !lua_toboolean(L, field))) {
    lua_pop(L, 1);
    return NULL;
  }
  if (!lua_istable(L, field) && !lua_isboolean(L, field))
    luaL_error(L, "option 'compress' must be true, false or a table");
  conf = ls_malloc(sizeof *conf);
  if (conf == NULL)
    luaL_error(L, "not enough memory");
  memset(conf, 0, sizeof *conf);
  lua_pushcfunction(L, read_conf);
  lua_pushlightuserdata(L, conf);
  lua_pushvalue(L, field);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    ls_free(conf, sizeof *conf);
    lua_error(L);
  }
  lua_pop(L, 1);
  return conf;
}

void ls_gzip_conf_free(ls_gzip_conf_t *conf) { ls_free(conf, sizeof *conf); }

/* ---- negotiation -------------------------------------------------------------------------- */

int ls_gzip_eligible(const ls_gzip_conf_t *conf, const char *ctype, size_t ctype_len,
                     size_t length) {
  char t[LS_GZIP_TYPE_MAX];
  size_t n = 0, i;
  unsigned k;
  if (conf == NULL || length < conf->min_size || ctype == NULL)
    return 0;
  while (n < ctype_len && n + 1 < sizeof t && ctype[n] != ';' && ctype[n] != ' ') {
    char ch = ctype[n];
    t[n++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  t[n] = '\0';
  for (k = 0; k < conf->ntypes; k++) {
    const char *want = conf->types[k];
    size_t wl = strlen(want);
    if (want[0] == '+') {
      /* a structured syntax suffix: application/ld+json */
      if (n > wl && memcmp(t + n - wl, want, wl) == 0)
        return 1;
    } else if (wl >= 2 && want[wl - 1] == '*') {
      if (n >= wl - 1 && memcmp(t, want, wl - 1) == 0)
        return 1;
    } else if (n == wl && memcmp(t, want, wl) == 0) {
      return 1;
    }
    (void)i;
  }
  return 0;
}

/* The q-value of the coding at s[0..len) ("gzip;q=0.5"), 1000ths; the name's length in *nl. */
static int coding_q(const char *s, size_t len, size_t *nl) {
  size_t i = 0;
  int q = 1000;
  while (i < len && s[i] != ';' && s[i] != ' ' && s[i] != '\t')
    i++;
  *nl = i;
  while (i < len) {
    while (i < len && (s[i] == ';' || s[i] == ' ' || s[i] == '\t'))
      i++;
    if (i + 1 < len && (s[i] == 'q' || s[i] == 'Q') && s[i + 1] == '=') {
      int whole = 0, frac = 0, digits = 0;
      i += 2;
      if (i < len && s[i] >= '0' && s[i] <= '1')
        whole = s[i++] - '0';
      if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9' && digits < 3; i++, digits++)
          frac = frac * 10 + (s[i] - '0');
      }
      while (digits++ < 3)
        frac *= 10;
      q = whole * 1000 + frac;
      if (q > 1000)
        q = 1000;
    }
    while (i < len && s[i] != ';')
      i++;
  }
  return q;
}

int ls_gzip_accepted(const char *ae, size_t len) {
  int gzip_q = -1, star_q = -1;
  size_t i = 0;
  if (ae == NULL)
    return 0;
  while (i < len) {
    size_t start, end, nl;
    int q;
    while (i < len && (ae[i] == ',' || ae[i] == ' ' || ae[i] == '\t'))
      i++;
    start = i;
    while (i < len && ae[i] != ',')
      i++;
    end = i;
    if (end == start)
      continue;
    q = coding_q(ae + start, end - start, &nl);
    if ((nl == 4 && strncasecmp(ae + start, "gzip", 4) == 0) ||
        (nl == 6 && strncasecmp(ae + start, "x-gzip", 6) == 0))
      gzip_q = q;
    else if (nl == 1 && ae[start] == '*')
      star_q = q;
  }
  if (gzip_q >= 0)
    return gzip_q > 0;
  return star_q > 0;
}

/* ---- deflate ------------------------------------------------------------------------------ */

/* zlib allocates through the counting allocator; the size of each block is kept in front of
 * it, since zfree is not told. */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  size_t n = (size_t)items * size + sizeof(size_t);
  size_t *p = ls_malloc(n);
  (void)opaque;
  if (p == NULL)
    return Z_NULL;
  *p = n;
  return p + 1;
}

static void z_free(voidpf opaque, voidpf address) {
  size_t *p = (size_t *)address - 1;
  (void)opaque;
  ls_free(p, *p);
}

/* Starts a gzip deflate stream with a window fitted to the input when its size is known
 * (as nginx's gzip module does): small bodies get small state. */
static int fit_wbits(size_t hint, int *mem) {
  int wbits = 15;
  *mem = 8;
  while (hint != SIZE_MAX && wbits > 9 && hint < ((size_t)1 << (wbits - 1))) {
    wbits--;
    if (*mem > 1)
      (*mem)--;
  }
  return wbits;
}

static int deflate_start(z_stream *z, const ls_gzip_conf_t *conf, size_t hint) {
  int mem, wbits = fit_wbits(hint, &mem);
  memset(z, 0, sizeof *z);
  z->zalloc = z_alloc;
  z->zfree = z_free;
  return deflateInit2(z, conf->level, Z_DEFLATED, 16 + wbits, mem, Z_DEFAULT_STRATEGY) == Z_OK
             ? 0
             : LS_ENOMEM;
}

/* Runs deflate over the input until it is all taken and, for a flush, all output is out. */
static int deflate_into(z_stream *z, const char *s, size_t n, int flush, ls_buf_t *out) {
  z->next_in = (Bytef *)s;
  z->avail_in = (uInt)n;
  for (;;) {
    size_t room;
    int rc;
    if (ls_buf_reserve(out, 4096 + n / 2) != 0)
      return LS_ENOMEM;
    room = out->cap - out->end;
    z->next_out = (Bytef *)(out->data + out->end);
    z->avail_out = (uInt)(room > UINT32_MAX ? UINT32_MAX : room);
    rc = deflate(z, flush);
    out->end += room - z->avail_out;
    if (rc == Z_STREAM_END)
      return 0;
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return LS_ENOMEM;
    if (z->avail_in == 0 && z->avail_out != 0)
      return 0;
  }
}

/* Whole bodies are compressed start to end in one call, never interleaved, so one deflate
 * state serves them all: deflateReset instead of a fresh state (some 300 KiB allocated and
 * freed, through mmap, for every response). It is remade when the level or the window a body
 * wants changes. One per process, as the loop is. */
static z_stream whole;
static int whole_level, whole_wbits, whole_ready;

int ls_gzip_compress(const ls_gzip_conf_t *conf, const char *s, size_t n, ls_buf_t *out) {
  int mem, wbits = fit_wbits(n, &mem);
  if (whole_ready && (whole_level != conf->level || whole_wbits != wbits)) {
    deflateEnd(&whole);
    whole_ready = 0;
  }
  if (!whole_ready) {
    if (deflate_start(&whole, conf, n) != 0)
      return LS_ENOMEM;
    whole_ready = 1;
    whole_level = conf->level;
    whole_wbits = wbits;
  } else if (deflateReset(&whole) != Z_OK) {
    return LS_ENOMEM;
  }
  return deflate_into(&whole, s, n, Z_FINISH, out);
}

void ls_gzip_release(void) {
  if (whole_ready)
    deflateEnd(&whole);
  whole_ready = 0;
}

ls_gzip_stream_t *ls_gzip_stream_new(const ls_gzip_conf_t *conf) {
  ls_gzip_stream_t *st = ls_malloc(sizeof *st);
  if (st == NULL)
    return NULL;
  if (deflate_start(&st->z, conf, SIZE_MAX) != 0) {
    ls_free(st, sizeof *st);
    return NULL;
  }
  return st;
}

int ls_gzip_stream_write(ls_gzip_stream_t *st, const char *s, size_t n, int finish, ls_buf_t *out) {
  return deflate_into(&st->z, s, n, finish ? Z_FINISH : Z_SYNC_FLUSH, out);
}

void ls_gzip_stream_free(ls_gzip_stream_t *st) {
  if (st == NULL)
    return;
  deflateEnd(&st->z);
  ls_free(st, sizeof *st);
}
