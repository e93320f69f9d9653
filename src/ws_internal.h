/* What the WebSocket's two files share (src/ws.c: the connection and luasrv.WebSocket;
 * src/ws_handshake.c: the opening handshake of both sides). Private to them. */
#ifndef LS_WS_INTERNAL_H
#define LS_WS_INTERNAL_H

#include <stdint.h>

#include "buffer.h"
#include "runtime.h"
#include "stream.h"
#include "ws_frame.h"

#define LS_WS_MT "luasrv.WebSocket"
#define LS_WS_READ_AHEAD (64 * 1024)
/* send() yields while more than HIWAT bytes wait to be sent, until fewer than LOWAT do. */
#define LS_WS_WRITE_HIWAT (64 * 1024)
#define LS_WS_WRITE_LOWAT (16 * 1024)
#define LS_WS_DEFAULT_MAX_MESSAGE (1024 * 1024)
#define LS_WS_DEFAULT_IDLE_MS (300 * 1000)
#define LS_WS_DEFAULT_CLOSE_MS (5 * 1000)
/* Frames this small go out as one write of header and payload. */
#define LS_WS_SMALL_FRAME 1024
/* With permessage-deflate, messages shorter than this go out as they are. */
#define LS_WS_DEFLATE_MIN 128

typedef enum {
  WS_OPEN,       /* messages flow both ways */
  WS_CLOSE_SENT, /* our close frame is out; waiting (bounded) for the peer's */
  WS_CLOSED      /* the close handshake is over or failed; the stream ends */
} ws_state_t;

typedef struct ws_ud_s ws_ud_t;

typedef struct ls_ws_s {
  ls_stream_t *s;                   /* the stream taken over; NULL once closed */
  const ls_stream_events_t *prev_ev; /* the stream's events and owner before the takeover */
  void *prev_owner;
  ls_gen_t *gen;
  uv_timer_t timer;                 /* the idle timeout, then the wait for the peer's close */
  ls_ws_parser_t parser;
  ls_buf_t msg;                     /* the message being put together */
  ws_ud_t *ud;
  ls_task_t *reader;                /* task waiting in receive */
  ls_task_t *writer;                /* task waiting for output to drain */
  ls_task_t *closer;                /* task waiting in close for the handshake's end */
  uint64_t idle_ms, close_ms;
  uint64_t last_input;              /* loop time of the last input */
  ws_state_t state;
  int close_code;                   /* the code the connection closed with (1006: none) */
  char close_reason[124];
  size_t close_reason_len;
  char protocol[64];                /* the subprotocol chosen, or "" */
  unsigned char msg_ready;          /* msg holds a whole message of kind msg_kind */
  unsigned char msg_kind;
  unsigned char stream_gone;
  unsigned char timer_gone;
  unsigned char deflate_bits;       /* permessage-deflate: our window bits; 0: not negotiated */
  unsigned char msg_compressed;     /* the message in msg is still compressed */
  unsigned char client;             /* our side is the client: frames go out masked */
  unsigned holds;                   /* a client's waiting tasks (see ws_hold) */
  ls_res_t stop_res;                /* a server side's link in rt->on_stop (1001 at a stop) */
} ls_ws_t;

struct ws_ud_s {
  const char *tag; /* &ls__ws_tag (see ls_tagged) */
  ls_ws_t *ws;     /* NULL once the connection is gone */
  ls_gen_t *gen;
};

extern const char ls__ws_tag;

/* Takes the stream over for a WebSocket (its events and owner switch to it; they are given
 * back when it closes) and pushes the luasrv.WebSocket object. client: our side is the
 * client (frames masked, the server's unmasked); opts: the options table's index (0: none);
 * protocol: the subprotocol agreed (NULL: none); deflate_bits: permessage-deflate's window
 * bits, 0 when not negotiated. NULL (nothing pushed) when out of memory. */
ls_ws_t *ls__ws_new(lua_State *L, ls_gen_t *gen, ls_stream_t *s, int client, int opts,
                    const char *protocol, int deflate_bits);
/* Adds core.ws_accept, ws_client, ws_key and ws_accept_value (src/ws_handshake.c). */
void ls__ws_handshake_open(lua_State *L, ls_gen_t *gen);

#endif
