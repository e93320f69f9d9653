#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#if defined(__linux__)
#include <linux/openat2.h>
#include <sys/syscall.h>
#endif

#include "alloc.h"

#define LS_DIR_MT "luasrv.Dir"
#define LS_FILE_MT "luasrv.File"
/* A root directory, and a file kept open in a root's cache, is opened again when it is older
 * than this, so replacing it (a deploy that swaps a symlink) takes effect within a second. */
#define LS_DIR_REOPEN_NS 1000000000ull

#ifndef O_PATH
#define O_PATH O_RDONLY
#endif

/* A directory that paths are confined to. Its user values: 1, the path as given; 2, the
 * cache of open files (relative path -> File), when it has one.
 *
 * The cache saves an open and a close per request for the files asked for most (they are
 * most of the cost of serving a small file). A cached file is checked with fstat on every
 * use, so a file written in place is seen at once (size, time and tag come from that fstat)
 * and one deleted or renamed over (no links left) is opened again at once; and it is opened
 * again once it is a second old, which covers the rest (a symlink that now points elsewhere,
 * changed permissions). */
typedef struct dir_ud_s {
  int fd;                /* the directory, or -1 until it could be opened */
  uint64_t opened_ns;    /* uv_hrtime() of that open */
  unsigned cached;       /* files in the cache */
  unsigned cache_max;    /* 0: no cache */
  char real[PATH_MAX];   /* its canonical path, for the fallback check */
  size_t real_len;
} dir_ud_t;

/* An open regular file and what was read from its inode when it was opened (for a cached
 * one: when it was last used). */
typedef struct file_ud_s {
  int fd;
  unsigned char shared;  /* owned by a root's cache: close() leaves it open */
  int64_t size;
  int64_t mtime;         /* seconds */
  uint64_t opened_ns;
  char tag[64];          /* entity tag: inode, size and modification time in ns */
} file_ud_t;

static int sys_err(void) { return uv_translate_sys_error(errno); }

static char *put_hex(char *p, uint64_t v) {
  char tmp[16];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v != 0);
  while (n > 0)
    *p++ = tmp[--n];
  return p;
}

/* An HTTP entity tag, "ino-size-mtime_ns" in hex with the quotes: it changes whenever the
 * file is replaced or written, so it is a strong validator (RFC 9110 §8.8.3). */
static void make_tag(char *out, const struct stat *st) {
  uint64_t ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
  char *p = out;
  *p++ = '"';
  p = put_hex(p, (uint64_t)st->st_ino);
  *p++ = '-';
  p = put_hex(p, (uint64_t)st->st_size);
  *p++ = '-';
  p = put_hex(p, ns);
  *p++ = '"';
  *p = '\0';
}

static const char *kind_of(mode_t mode) {
  if (S_ISREG(mode))
    return "file";
  if (S_ISDIR(mode))
    return "directory";
  return "other";
}

/* ---- files -------------------------------------------------------------------------------- */

/* Opens `path` for reading if it is a regular file: 0 with *fd (the caller closes it) and
 * *size; otherwise a negative error code and nothing is left open. */
int ls_fs_open_regular(const char *path, int *fd, int64_t *size) {
  struct stat st;
  /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
  int f = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (f < 0)
    return sys_err();
  if (fstat(f, &st) != 0) {
    int err = sys_err();
    close(f);
    return err;
  }
  if (!S_ISREG(st.st_mode)) {
    close(f);
    return S_ISDIR(st.st_mode) ? UV_EISDIR : UV_EACCES;
  }
  *fd = f;
  *size = (int64_t)st.st_size;
  return 0;
}

static file_ud_t *check_file(lua_State *L, int idx) { return luaL_checkudata(L, idx, LS_FILE_MT); }

/* The descriptor and size of the open File at idx; raises if it is no File or is closed. The
 * descriptor stays the File's: valid until it is closed or collected. */
int ls_fs_check_file(lua_State *L, int idx, int64_t *size) {
  file_ud_t *f = check_file(L, idx);
  if (f->fd < 0)
    luaL_argerror(L, idx, "the file is closed");
  *size = f->size;
  return f->fd;
}

static void file_close(file_ud_t *f) {
  if (f->fd >= 0)
    close(f->fd);
  f->fd = -1;
}

/* file:close() -> true. Closing again does nothing, and neither does closing a file that a
 * root's cache holds (the cache closes it). Also __close. */
static int l_file_close(lua_State *L) {
  file_ud_t *f = check_file(L, 1);
  if (!f->shared)
    file_close(f);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_file_gc(lua_State *L) {
  file_close(check_file(L, 1));
  return 0;
}

/* file:stat() -> size, mtime (seconds), tag, as read when the file was opened. */
static int l_file_stat(lua_State *L) {
  file_ud_t *f = check_file(L, 1);
  lua_pushinteger(L, (lua_Integer)f->size);
  lua_pushinteger(L, (lua_Integer)f->mtime);
  lua_pushstring(L, f->tag);
  return 3;
}

static int l_file_tostring(lua_State *L) {
  file_ud_t *f = check_file(L, 1);
  if (f->fd < 0)
    lua_pushliteral(L, "luasrv.File (closed)");
  else
    lua_pushfstring(L, "luasrv.File (%I bytes)", (lua_Integer)f->size);
  return 1;
}

/* ---- roots -------------------------------------------------------------------------------- */

static dir_ud_t *check_dir(lua_State *L) { return luaL_checkudata(L, 1, LS_DIR_MT); }

/* Opens the root again if it is not open or its open is older than LS_DIR_REOPEN_NS. The
 * root's path is the userdata's user value. Returns 0 or a negative error code. */
static int dir_refresh(lua_State *L, dir_ud_t *d) {
  uint64_t now = uv_hrtime();
  const char *path;
  int fd;
  if (d->fd >= 0 && now - d->opened_ns < LS_DIR_REOPEN_NS)
    return 0;
  lua_getiuservalue(L, 1, 1);
  path = lua_tostring(L, -1);
  fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || realpath(path, d->real) == NULL) {
    int err = sys_err();
    lua_pop(L, 1);
    if (fd >= 0)
      close(fd);
    if (d->fd >= 0)
      close(d->fd);
    d->fd = -1;
    return err;
  }
  lua_pop(L, 1);
  if (d->fd >= 0)
    close(d->fd);
  d->fd = fd;
  d->opened_ns = now;
  d->real_len = strlen(d->real);
  return 0;
}

/* The slow way to stay below the root: resolve every symbolic link, then compare prefixes.
 * Used where openat2 is missing (older kernels, other systems, some sandboxes) and for paths
 * openat2 refuses because they leave the root on the way (an absolute symlink that points
 * back inside, say). A path that ends outside the root is reported as not found. */
static int open_checked(dir_ud_t *d, const char *rel, int flags) {
  char full[PATH_MAX], resolved[PATH_MAX];
  int n = snprintf(full, sizeof full, "%s/%s", d->real, rel);
  int fd;
  if (n < 0 || (size_t)n >= sizeof full)
    return UV_ENAMETOOLONG;
  if (realpath(full, resolved) == NULL)
    return sys_err();
  if (d->real_len > 1 && (strncmp(resolved, d->real, d->real_len) != 0 ||
                          (resolved[d->real_len] != '/' && resolved[d->real_len] != '\0')))
    return UV_ENOENT;
  fd = open(resolved, flags);
  return fd >= 0 ? fd : sys_err();
}

/* Opens `rel` below the root with `flags`: a descriptor or a negative error code. On Linux
 * one openat2(RESOLVE_BENEATH) call does it: the kernel refuses any step out of the root,
 * through "..", an absolute path or a symbolic link, with no window for a race. */
static int open_below(dir_ud_t *d, const char *rel, int flags) {
#if defined(__linux__) && defined(SYS_openat2)
  /* Process-wide: whether the kernel has the call is the same for every root. The variable
   * LUASRV_NO_OPENAT2 forces the fallback, so that tests cover it where openat2 exists. */
  static int no_openat2 = -1;
  if (no_openat2 < 0)
    no_openat2 = getenv("LUASRV_NO_OPENAT2") != NULL;
  if (!no_openat2) {
    struct open_how how;
    long fd;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    fd = syscall(SYS_openat2, d->fd, rel, &how, sizeof how);
    if (fd >= 0)
      return (int)fd;
    /* ENOSYS: an older kernel; EPERM: a sandbox that filters the call (our flags give no
     * other reason for it). Either way it will not work later: remember. */
    if (errno == ENOSYS || errno == EPERM)
      no_openat2 = 1;
    else if (errno != EXDEV)
      return sys_err();
  }
#endif
  return open_checked(d, rel, flags);
}

static int check_rel(lua_State *L, int idx, const char **rel) {
  size_t len;
  *rel = luaL_checklstring(L, idx, &len);
  if (strlen(*rel) != len)
    return luaL_argerror(L, idx, "path contains a NUL byte");
  if (len == 0)
    *rel = ".";
  return 0;
}

static void file_set_stat(file_ud_t *f, const struct stat *st) {
  f->size = (int64_t)st->st_size;
  f->mtime = (int64_t)st->st_mtim.tv_sec;
  make_tag(f->tag, st);
}

static int push_file(lua_State *L, file_ud_t *f) {
  lua_pushinteger(L, (lua_Integer)f->size);
  lua_pushinteger(L, (lua_Integer)f->mtime);
  lua_pushstring(L, f->tag);
  return 4;
}

/* Makes room in the full cache at `idx`: drops the files opened more than two seconds ago.
 * None of those can be in use: a file from the cache is used at once (a transfer that lasts
 * reads a descriptor of its own), and one a second old is opened again before it is handed
 * out. Returns 1 if there is room now. */
static int cache_sweep(lua_State *L, dir_ud_t *d, int idx, uint64_t now) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    file_ud_t *f = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (now - f->opened_ns > 2 * LS_DIR_REOPEN_NS) {
      file_close(f);
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, idx); /* clearing a field during lua_next is allowed */
      d->cached--;
    }
  }
  return d->cached < d->cache_max;
}

/* dir:open(rel) -> file, size, mtime, tag | nil, message, code. Opens the regular file at
 * `rel` below the root for reading; tag is an entity tag for it (with its quotes). A path
 * that leaves the root (through "..", a symbolic link or otherwise) fails as ENOENT; a
 * directory as EISDIR; anything else that is no regular file as EACCES. With a cache, the
 * file may be one the root keeps open for the next calls: use it at once (res:sendfile), do
 * not keep it; its close() does nothing. */
static int l_dir_open(lua_State *L) {
  dir_ud_t *d = check_dir(L);
  const char *rel;
  struct stat st;
  file_ud_t *f;
  int fd, err, cache = 0;
  check_rel(L, 2, &rel);
  lua_settop(L, 2);
  if ((err = dir_refresh(L, d)) != 0)
    return ls_push_error(L, err);
  if (d->cache_max > 0 && lua_getiuservalue(L, 1, 2) == LUA_TTABLE) {
    cache = 3;
    lua_pushvalue(L, 2);
    if (lua_rawget(L, cache) == LUA_TUSERDATA) {
      f = lua_touserdata(L, -1);
      if (f->fd >= 0 && uv_hrtime() - f->opened_ns < LS_DIR_REOPEN_NS &&
          fstat(f->fd, &st) == 0 && st.st_nlink > 0 && S_ISREG(st.st_mode)) {
        file_set_stat(f, &st);
        return push_file(L, f);
      }
      /* Stale: forget it. A transfer that still reads it has its own descriptor. */
      file_close(f);
      lua_pushvalue(L, 2);
      lua_pushnil(L);
      lua_rawset(L, cache);
      d->cached--;
    }
    lua_pop(L, 1);
  }
  fd = open_below(d, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    return ls_push_error(L, fd);
  if (fstat(fd, &st) != 0) {
    err = sys_err();
    close(fd);
    return ls_push_error(L, err);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return ls_push_error(L, S_ISDIR(st.st_mode) ? UV_EISDIR : UV_EACCES);
  }
  f = lua_newuserdatauv(L, sizeof *f, 0);
  f->fd = fd;
  f->shared = 0;
  f->opened_ns = uv_hrtime();
  file_set_stat(f, &st);
  luaL_setmetatable(L, LS_FILE_MT);
  /* A full cache that cannot be swept leaves this file to the caller to close. */
  if (cache && (d->cached < d->cache_max || cache_sweep(L, d, cache, f->opened_ns))) {
    f->shared = 1;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
    d->cached++;
  }
  return push_file(L, f);
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* dir:list(rel) -> a list of { name, kind, size, mtime } sorted by name | nil, message, code.
 * Lists the directory `rel` below the root ("." and ".." left out); kind is "file",
 * "directory" or "other", as the entry resolves (symbolic links followed). */
static int l_dir_list(lua_State *L) {
  dir_ud_t *d = check_dir(L);
  const char *rel;
  DIR *dp;
  struct dirent *e;
  int fd, err, n = 0;
  check_rel(L, 2, &rel);
  if ((err = dir_refresh(L, d)) != 0)
    return ls_push_error(L, err);
  fd = open_below(d, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return ls_push_error(L, fd);
  dp = fdopendir(fd);
  if (dp == NULL) {
    err = sys_err();
    close(fd);
    return ls_push_error(L, err);
  }
  lua_newtable(L);
  while ((e = readdir(dp)) != NULL) {
    struct stat st;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (fstatat(fd, e->d_name, &st, 0) != 0)
      continue; /* vanished, or a dangling link */
    lua_createtable(L, 0, 4);
    lua_pushstring(L, e->d_name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, kind_of(st.st_mode));
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec);
    lua_setfield(L, -2, "mtime");
    lua_rawseti(L, -2, ++n);
  }
  closedir(dp);
  /* Sort by name: gather the names, sort them, and rebuild the list in that order. */
  if (n > 1) {
    char **names = lua_newuserdatauv(L, (size_t)n * sizeof *names, 0);
    int i;
    lua_newtable(L); /* name -> entry */
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, -3, i);
      lua_getfield(L, -1, "name");
      names[i - 1] = (char *)lua_tostring(L, -1); /* anchored by the entry */
      lua_insert(L, -2);
      lua_rawset(L, -3);
    }
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (i = 1; i <= n; i++) {
      lua_getfield(L, -1, names[i - 1]);
      lua_rawseti(L, -4, i);
    }
    lua_pop(L, 2);
  }
  return 1;
}

/* dir:path() -> the root's path as given. */
static int l_dir_path(lua_State *L) {
  check_dir(L);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int l_dir_gc(lua_State *L) {
  dir_ud_t *d = check_dir(L);
  if (d->fd >= 0)
    close(d->fd);
  d->fd = -1;
  /* The cached files close with their own __gc, in this cycle or the next. */
  return 0;
}

static int l_dir_tostring(lua_State *L) {
  check_dir(L);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "luasrv.Dir (%s)", lua_tostring(L, -1));
  return 1;
}

/* fs.root(path [, cache]) -> a Dir. `cache` is how many files it may keep open between
 * calls (default 0: none). Nothing is opened yet: the directory may appear later, and it is
 * opened again every second while in use. */
static int l_fs_root(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  lua_Integer cache = luaL_optinteger(L, 2, 0);
  dir_ud_t *d;
  luaL_argcheck(L, len > 0 && strlen(path) == len, 1, "expected a directory path");
  luaL_argcheck(L, cache >= 0 && cache <= 65536, 2, "cache size out of range");
  d = lua_newuserdatauv(L, sizeof *d, 2);
  d->fd = -1;
  d->opened_ns = 0;
  d->cached = 0;
  d->cache_max = (unsigned)cache;
  d->real[0] = '\0';
  d->real_len = 0;
  luaL_setmetatable(L, LS_DIR_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  if (cache > 0) {
    lua_createtable(L, 0, (int)(cache < 64 ? cache : 64));
    lua_setiuservalue(L, -2, 2);
  }
  return 1;
}

/* fs.stat(path) -> kind, size, mtime | nil, message, code. Symbolic links are followed. */
static int l_fs_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0)
    return ls_push_error(L, sys_err());
  lua_pushstring(L, kind_of(st.st_mode));
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec);
  return 3;
}

/* fs.mkdir(path [, mode]) -> true | nil, message, code (EEXIST if something is there). */
static int l_fs_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_optinteger(L, 2, 0755);
  if (mkdir(path, (mode_t)mode) != 0)
    return ls_push_error(L, sys_err());
  lua_pushboolean(L, 1);
  return 1;
}

/* fs.chmod(path [, mode]) -> true | nil, message, code. Without a mode, the mode a newly
 * created file gets: 0666 less the process's umask. */
static int l_fs_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode;
  if (lua_isnoneornil(L, 2)) {
    mode_t mask = umask(0);
    umask(mask);
    mode = 0666 & ~mask;
  } else {
    mode = luaL_checkinteger(L, 2);
  }
  if (chmod(path, (mode_t)mode) != 0)
    return ls_push_error(L, sys_err());
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- temporary files ---------------------------------------------------------------------- */

struct ls_fs_tmp_s {
  ls_fs_tmp_t *next;
  size_t size; /* of this node, for ls_free */
  char path[];
};

/* Creates the file with mkostemp (so no other process can have or guess it first), closes
 * it and records its path at the head of *list. The path belongs to the list. */
const char *ls_fs_tmp_create(ls_fs_tmp_t **list, const char *dir, int *err) {
  static const char name[] = "/luasrv-XXXXXX";
  size_t size;
  ls_fs_tmp_t *node;
  int fd;
  if (dir == NULL || dir[0] == '\0') {
    dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0')
      dir = "/tmp";
  }
  size = sizeof *node + strlen(dir) + sizeof name;
  node = ls_malloc(size);
  if (node == NULL) {
    *err = UV_ENOMEM;
    return NULL;
  }
  node->size = size;
  snprintf(node->path, size - sizeof *node, "%s%s", dir, name);
  fd = mkostemp(node->path, O_CLOEXEC);
  if (fd < 0) {
    *err = sys_err();
    ls_free(node, size);
    return NULL;
  }
  close(fd);
  node->next = *list;
  *list = node;
  return node->path;
}

/* Unlinks every path of *list (one moved away or removed already is no error), frees the
 * nodes and leaves *list empty. */
void ls_fs_tmp_remove_all(ls_fs_tmp_t **list) {
  ls_fs_tmp_t *node = *list;
  *list = NULL;
  while (node != NULL) {
    ls_fs_tmp_t *next = node->next;
    unlink(node->path);
    ls_free(node, node->size);
    node = next;
  }
}

/* ---- registration ------------------------------------------------------------------------- */

/* Makes the Dir and File metatables and sets t.fs = { root, stat, mkdir } on the table t on
 * top of L (the core module). */
void ls_fs_open(lua_State *L, ls_gen_t *gen) {
  static const luaL_Reg dir_meth[] = {{"open", l_dir_open}, {"list", l_dir_list},
                                      {"path", l_dir_path}, {NULL, NULL}};
  static const luaL_Reg file_meth[] = {{"close", l_file_close}, {"stat", l_file_stat},
                                       {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"root", l_fs_root}, {"stat", l_fs_stat},
                                   {"mkdir", l_fs_mkdir}, {"chmod", l_fs_chmod},
                                   {NULL, NULL}};
  (void)gen;
  if (luaL_newmetatable(L, LS_DIR_MT)) {
    lua_pushcfunction(L, l_dir_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_dir_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, dir_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LS_FILE_MT)) {
    lua_pushcfunction(L, l_file_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_file_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_file_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, file_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "fs");
}
