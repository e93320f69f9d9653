/* The HTTP client's response parser: llhttp in response mode, with the server's header
 * limits, as a Lua object the client (lua/luasrv/http_client.lua) feeds with what it reads
 * from a connection. The I/O stays on the connection (srv.tcp.connect: the stream layer,
 * Happy Eyeballs and TLS); this file only turns bytes into a status, headers, body pieces and
 * the end of the message, or a "bad response: ..." error.
 *
 * Lua side (luasrv.core.http_response_parser(opts) -> parser):
 *   parser:start(is_head [, max_body])  a new response; is_head: it answers a HEAD request
 *   parser:feed(data)      -> head, body, done [, extra, has_trailers] | nil, message, code
 *                          (EPROTO; ETOOLARGE for the body limit): head is true once the final
 *                          head is complete (1xx heads are skipped), body the body bytes in
 *                          `data` ("" for none), done true at the end of the message, and then
 *                          the bytes that followed it and whether trailer fields came
 *   parser:finish()        the peer closed: ends a close-delimited body, else an error
 *   parser:head()          -> status, raw fields, reason, version, keep_alive
 *   parser:trailers()      -> the trailer fields as headers, fields tables, or nil
 *   parser:extra()         -> bytes that followed the message in the last feed
 *   parser:continued()     -> true once a 100 Continue arrived for this response */
#ifndef LS_HTTP_CLIENT_H
#define LS_HTTP_CLIENT_H

#include <lua.h>
#include <stddef.h>

#include "http.h"

#define LS_HTTP_PARSER_MT "luasrv.HTTPResponseParser"

/* One parser's state. Read by the proxy's relay (src/http_proxy.c), which drives the same
 * parser from C: a field is a ls_http_header_t into `head` (names in lower case). */
typedef struct ls_hcp_s {
  llhttp_t parser;
  ls_buf_t head;              /* reason phrase, then header names (lower case) and values */
  ls_buf_t body;              /* body bytes of the current feed */
  ls_buf_t line;              /* a chunk-size line split across feeds, so far */
  ls_http_header_t *headers;  /* header_count entries, head and trailer fields */
  unsigned nheaders;
  unsigned ntrailer_start;    /* fields from here on are trailers */
  unsigned header_count;
  size_t line_max, header_max;
  uint64_t body_max, body_seen;
  size_t reason_len;          /* the reason phrase is head[0 .. reason_len) */
  size_t extra;               /* bytes after the end of the message in the last feed */
  const char *error;          /* our own reason to refuse the response */
  int status, version_minor;
  unsigned char hdr_state;    /* LS_HDR_* */
  unsigned char head_done;    /* the final (non-1xx) head is complete */
  unsigned char msg_done;
  unsigned char is_head;
  unsigned char keep_alive;
  unsigned char continued;    /* a 100 Continue came first */
  unsigned char failed;
  unsigned char at_chunk_line; /* the next input starts a chunk-size line (see chunk_line) */
} ls_hcp_t;

/* Pushes a new parser (luasrv.HTTPResponseParser, the server's default limits). */
ls_hcp_t *ls_hcp_push_new(lua_State *L);
/* A new response (parser:start): is_head when it answers a HEAD request. */
void ls_hcp_start(ls_hcp_t *h, int is_head, uint64_t max_body);
/* Parses data[0..len) (parser:feed): body bytes are appended to h->body, h->head_done and
 * h->msg_done say how far it got, h->extra counts bytes after the message. HPE_OK, or the
 * error that refused the response (described by ls_hcp_error); a failed parser stays failed. */
llhttp_errno_t ls_hcp_feed(ls_hcp_t *h, const char *data, size_t len);
/* The peer closed (parser:finish): ends a close-delimited body; else an error. */
llhttp_errno_t ls_hcp_finish(ls_hcp_t *h);
/* Why the response was refused ("response body too large", llhttp's reason...). */
const char *ls_hcp_error(ls_hcp_t *h, llhttp_errno_t err);

/* Sets core.http_response_parser and core.http_fields (raw fields -> headers, fields tables)
 * in the table on top of the stack and registers the parser's metatable. */
void ls_http_client_open(lua_State *L);

/* Feeds a whole response (as bytes from a peer) through a fresh parser, for the fuzzer and
 * tests: returns 0 when it parsed, 1 when it was refused as a bad response. Never raises
 * except for memory. */
int ls_http_client_parse_all(lua_State *L, const char *data, size_t len, int is_head);

#endif
