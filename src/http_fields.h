/* What the server's request parser (src/http_parser.c) and the client's response parser
 * (src/http_client.c) share of llhttp's glue: chunk extensions, and header field lines.
 *
 * Header field lines as llhttp hands them over: names and values arrive in pieces,
 * split wherever reads split the input, and are copied into one buffer as ls_http_header_t
 * offsets, names in lower case (lookups are then plain comparisons), within a count and a
 * byte limit. Inline, so the server's parser callbacks cost what they did before. */
#ifndef LS_HTTP_FIELDS_H
#define LS_HTTP_FIELDS_H

#include "http.h"

/* The longest chunk-size line, extensions included: they are checked and dropped, not kept. */
#define LS_HTTP_CHUNK_LINE_MAX 4096

/* Length of the chunk extensions at s[0..n) (RFC 9112 §7.1.1, as strict as llhttp: no blank
 * space): `;name[=token|"quoted"]` any number of times. n if they are well formed, else 0.
 * llhttp 8.1 itself refuses several extensions when one has a token value (`3;a=b;c=d`), so
 * both parsers check them here and hand llhttp the size alone. (src/http_parser.c) */
size_t ls_http__chunk_ext_valid(const char *s, size_t n);

/* Defines llhttp's on_chunk_complete for an owner whose `chunk_flag(p)` points at the flag
 * "the next input starts a chunk-size line": after each chunk but the last the parser pauses,
 * so that the owner takes that line before llhttp does (and checks its extensions). */
#define LS_HTTP_CHUNK_CALLBACK(chunk_flag)                                                       \
  static int on_chunk_complete(llhttp_t *p) {                                                    \
    if (p->flags & F_TRAILING)                                                                   \
      return 0; /* the last chunk: trailers and the end follow */                                \
    *chunk_flag(p) = 1;                                                                          \
    return HPE_PAUSED;                                                                           \
  }

/* Why a piece was refused. */
enum {
  LS_FIELD_TOO_MANY = 1, /* one field more than `max` */
  LS_FIELD_TOO_LARGE,    /* the section past `max_bytes` */
  LS_FIELD_NOMEM,        /* the buffer could not grow */
  LS_FIELD_NO_NAME       /* a value with no name before it (RFC 9110 §5.1 wants one) */
};

/* Where the fields of one message go; made by the caller for each callback, pointing at its
 * own state. */
typedef struct ls_http_fields_s {
  ls_buf_t *buf;              /* names and values are appended here */
  ls_http_header_t *headers;  /* `max` entries */
  unsigned *count;            /* entries used */
  unsigned max;
  unsigned char *state;       /* LS_HDR_*: between lines, in a name, in a value */
  size_t skip;                /* bytes at the start of buf that are not fields (a target) */
  size_t max_bytes;           /* the field bytes allowed */
} ls_http_fields_t;

/* A piece of a name (llhttp's on_header_field). Returns 0 or LS_FIELD_*. */
static inline int ls_http_field_name(const ls_http_fields_t *f, const char *at, size_t len) {
  ls_http_header_t *h;
  size_t i, off;
  if (*f->state != LS_HDR_NAME) {
    if (*f->count == f->max)
      return LS_FIELD_TOO_MANY;
    h = &f->headers[(*f->count)++];
    h->name_off = (uint32_t)ls_buf_len(f->buf);
    h->name_len = h->value_off = h->value_len = 0;
    *f->state = LS_HDR_NAME;
  }
  h = &f->headers[*f->count - 1];
  if (ls_buf_len(f->buf) - f->skip + len > f->max_bytes)
    return LS_FIELD_TOO_LARGE;
  off = ls_buf_len(f->buf);
  if (ls_buf_append(f->buf, at, len) != 0)
    return LS_FIELD_NOMEM;
  for (i = 0; i < len; i++) {
    char *ch = f->buf->data + f->buf->start + off + i;
    if (*ch >= 'A' && *ch <= 'Z')
      *ch = (char)(*ch + ('a' - 'A'));
  }
  h->name_len += (uint32_t)len;
  return 0;
}

/* Ends the name of the current line, if it is still open: its value starts here (called
 * before each value piece, and at the end of a line whose value is empty). 0 or
 * LS_FIELD_NO_NAME. */
static inline int ls_http_field_begin_value(const ls_http_fields_t *f) {
  if (*f->state == LS_HDR_BETWEEN || f->headers[*f->count - 1].name_len == 0)
    return LS_FIELD_NO_NAME;
  if (*f->state == LS_HDR_NAME) {
    *f->state = LS_HDR_VALUE;
    f->headers[*f->count - 1].value_off = (uint32_t)ls_buf_len(f->buf);
  }
  return 0;
}

/* A piece of the current value, after ls_http_field_begin_value. 0 or LS_FIELD_*. */
static inline int ls_http_field_value(const ls_http_fields_t *f, const char *at, size_t len) {
  if (ls_buf_len(f->buf) - f->skip + len > f->max_bytes)
    return LS_FIELD_TOO_LARGE;
  if (ls_buf_append(f->buf, at, len) != 0)
    return LS_FIELD_NOMEM;
  f->headers[*f->count - 1].value_len += (uint32_t)len;
  return 0;
}

/* The end of a line (llhttp's on_header_value_complete); an empty value (RFC 9110 §5.5
 * allows it) had no value piece. 0 or LS_FIELD_NO_NAME. */
static inline int ls_http_field_end(const ls_http_fields_t *f) {
  int why = ls_http_field_begin_value(f);
  if (why == 0)
    *f->state = LS_HDR_BETWEEN;
  return why;
}

/* Defines llhttp's on_header_field and on_header_value_complete for a parser whose owner
 * gives `fields(p)`, the ls_http_fields_t of the message being parsed, and `refuse(p, why)`,
 * the callback's answer to a refused piece (LS_FIELD_*). on_header_value is each owner's own
 * (the server also refuses obsolete line folding there). */
#define LS_HTTP_FIELD_CALLBACKS(fields, refuse)                                                  \
  static int on_header_field(llhttp_t *p, const char *at, size_t len) {                         \
    ls_http_fields_t f = fields(p);                                                              \
    int why = ls_http_field_name(&f, at, len);                                                   \
    return why == 0 ? 0 : refuse(p, why);                                                        \
  }                                                                                              \
  static int on_header_value_complete(llhttp_t *p) {                                             \
    ls_http_fields_t f = fields(p);                                                              \
    int why = ls_http_field_end(&f);                                                             \
    return why == 0 ? 0 : refuse(p, why);                                                        \
  }

/* The three header entries of an llhttp_settings_t, for an owner that has the callbacks above
 * and its own on_header_value. */
#define LS_HTTP_FIELD_SETTINGS                                                                   \
  .on_header_field = on_header_field, .on_header_value = on_header_value,                        \
  .on_header_value_complete = on_header_value_complete

#endif
