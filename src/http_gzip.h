/* Response compression for the HTTP server (the listener option `compress`): gzip through
 * zlib, negotiated by Accept-Encoding (RFC 9110 §12.5.3, with q-values), for the types and
 * sizes the listener allows. Whole responses are compressed in one go; streamed ones
 * (res:write) through a deflate stream flushed after each piece, so the client sees each
 * piece at once. zlib's state is allocated through the counting allocator and freed as soon as
 * the response ends; its size is bounded by the window and memory level chosen (at most
 * windowBits 15, memLevel 8: about 256 KiB + 64 KiB per stream, smaller for small bodies). */
#ifndef LS_HTTP_GZIP_H
#define LS_HTTP_GZIP_H

#include <lua.h>
#include <stddef.h>

#include "buffer.h"

typedef struct ls_gzip_conf_s ls_gzip_conf_t;
typedef struct ls_gzip_stream_s ls_gzip_stream_t;

/* Reads the `compress` field of the options table at opts: nil or false (NULL: off), true
 * (the defaults: level 6, min_size 1024, text/ANY, JSON, JavaScript, XML, SVG and +json/+xml
 * types) or { level =, min_size =, types = { ... } }. Raises for a bad value. */
ls_gzip_conf_t *ls_gzip_conf_read(lua_State *L, int opts);
void ls_gzip_conf_free(ls_gzip_conf_t *conf);

/* 1 if a response of this Content-Type (NULL: none) and length (SIZE_MAX: unknown, a stream)
 * may be compressed under conf. */
int ls_gzip_eligible(const ls_gzip_conf_t *conf, const char *ctype, size_t ctype_len,
                     size_t length);
/* 1 if an Accept-Encoding value (NULL: the field is absent) accepts gzip. */
int ls_gzip_accepted(const char *ae, size_t len);

/* Compresses s[0..n) whole into out (appended). Returns 0 or LS_ENOMEM. */
int ls_gzip_compress(const ls_gzip_conf_t *conf, const char *s, size_t n, ls_buf_t *out);

/* Frees the deflate state kept for whole bodies (at the end of the process). */
void ls_gzip_release(void);

/* A deflate stream for a streamed response; NULL when out of memory. */
ls_gzip_stream_t *ls_gzip_stream_new(const ls_gzip_conf_t *conf);
/* Compresses s[0..n) and flushes (or, with finish, ends the gzip member), appending what it
 * produced to out. Returns 0 or LS_ENOMEM. */
int ls_gzip_stream_write(ls_gzip_stream_t *st, const char *s, size_t n, int finish, ls_buf_t *out);
void ls_gzip_stream_free(ls_gzip_stream_t *st);

#endif
