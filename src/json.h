/* srv.json: JSON for Lua values, with OpenResty lua-cjson's array semantics always on.
 *
 * Decoding hands the bytes to jansson (a maintained C parser that validates UTF-8 and refuses
 * NaN/Infinity, as RFC 8259 asks) and turns its tree into Lua values: objects become plain
 * tables, arrays tables carrying `array_mt` (so `[]` encodes back as `[]`), null the `null`
 * sentinel (a NULL light userdata, the same value as cjson.null and ngx.null), integers Lua
 * integers and other numbers floats. Encoding walks the Lua value and writes straight into a
 * per-state scratch buffer. Both refuse nesting deeper than LS_JSON_MAX_DEPTH. */
#ifndef LS_JSON_H
#define LS_JSON_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

#define LS_JSON_MAX_DEPTH 1000

/* Pushes the srv.json table: encode, decode, null, empty_array, array_mt. */
void ls_json_open(lua_State *L);

/* Pushes the JSON text of the value at `idx` and returns it (length in *len, if not NULL).
 * A value JSON cannot carry (a function, a userdata other than null/empty_array, NaN or an
 * infinity, a table with mixed or sparse keys, nesting deeper than LS_JSON_MAX_DEPTH or a
 * cycle, a string that is not UTF-8) raises a Lua error located at the Lua function that
 * called the running C function, naming where in the value the problem is. */
const char *ls_json_encode(lua_State *L, int idx, size_t *len);

/* Decodes `len` bytes of JSON text. Pushes the value and returns 1, or pushes nil and a
 * message with the position of the problem and returns 2 (malformed text, NaN/Infinity,
 * invalid UTF-8, an integer outside 64 bits, nesting too deep). Raises only when memory runs
 * out. */
int ls_json_decode(lua_State *L, const char *s, size_t len);

#endif
