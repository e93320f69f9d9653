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

#define LS_HTTP_PARSER_MT "luasrv.HTTPResponseParser"

/* Sets core.http_response_parser and core.http_fields (raw fields -> headers, fields tables)
 * in the table on top of the stack and registers the parser's metatable. */
void ls_http_client_open(lua_State *L);

/* Feeds a whole response (as bytes from a peer) through a fresh parser, for the fuzzer and
 * tests: returns 0 when it parsed, 1 when it was refused as a bad response. Never raises
 * except for memory. */
int ls_http_client_parse_all(lua_State *L, const char *data, size_t len, int is_head);

#endif
