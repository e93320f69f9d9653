/* Files for Lua: directory roots that confine the paths opened below them (static files),
 * open files with the metadata HTTP needs, and temporary files that belong to a request.
 *
 * Every call here is synchronous and runs on the loop thread: an open, a stat or a read of a
 * file in the page cache costs microseconds, less than handing it to libuv's thread pool and
 * back. nginx makes the same choice for its opens. A cold disk can stall the loop for the
 * length of one read; files are read in bounded pieces, so never for more than that. */
#ifndef LS_FS_H
#define LS_FS_H

#include <lua.h>
#include <stdint.h>

#include "runtime.h"

/* Temporary files, as a list of paths to remove. */
typedef struct ls_fs_tmp_s ls_fs_tmp_t;

/* Creates an empty file (mode 0600) with a unique name in `dir` (NULL: $TMPDIR or /tmp),
 * adds its path to *list and returns that path (owned by the list, valid until
 * ls_fs_tmp_remove_all). On failure returns NULL with *err set to a negative error code. */
const char *ls_fs_tmp_create(ls_fs_tmp_t **list, const char *dir, int *err);
/* Removes every file of the list (a file already moved away is no error) and frees it. */
void ls_fs_tmp_remove_all(ls_fs_tmp_t **list);

/* The descriptor of the open luasrv.File at `idx`, with its size. Raises a Lua error if the
 * value is not a File or the file was closed. The file stays the caller's to close. */
int ls_fs_check_file(lua_State *L, int idx, int64_t *size);
/* Opens a regular file for reading: 0 with *fd (the caller closes it) and *size, or a negative
 * error code (UV_EISDIR for a directory, UV_EACCES for anything else that is no regular
 * file). */
int ls_fs_open_regular(const char *path, int *fd, int64_t *size);

/* Adds the `fs` table (root, stat, mkdir) to the table on top of L. */
void ls_fs_open(lua_State *L, ls_gen_t *gen);

#endif
