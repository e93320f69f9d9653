/* WebSocket framing (RFC 6455 §5), without I/O: an incremental parser that turns the bytes a
 * peer sent into message pieces, whole control frames and protocol errors with their close
 * codes; the frame-header encoder; masking; an incremental UTF-8 validator. Pure functions
 * over the caller's buffers, so the libFuzzer target (tests/fuzz/fuzz-ws.c) reaches all of it.
 * src/ws.c puts it on a connection. */
#ifndef LS_WS_FRAME_H
#define LS_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
  LS_WS_OP_CONT = 0x0,
  LS_WS_OP_TEXT = 0x1,
  LS_WS_OP_BINARY = 0x2,
  LS_WS_OP_CLOSE = 0x8,
  LS_WS_OP_PING = 0x9,
  LS_WS_OP_PONG = 0xA
};

/* Close codes the parser and the connection use (RFC 6455 §7.4.1). */
enum {
  LS_WS_CLOSE_NORMAL = 1000,
  LS_WS_CLOSE_GOING_AWAY = 1001,
  LS_WS_CLOSE_PROTOCOL = 1002,
  LS_WS_CLOSE_NO_STATUS = 1005,  /* a close frame without a code (never sent) */
  LS_WS_CLOSE_ABNORMAL = 1006,   /* the connection dropped without a close frame (never sent) */
  LS_WS_CLOSE_BAD_DATA = 1007,   /* text that is not UTF-8 */
  LS_WS_CLOSE_TOO_BIG = 1009,
  LS_WS_CLOSE_INTERNAL = 1011
};

/* The largest frame header: 2 bytes, an 8-byte length, a 4-byte mask. */
#define LS_WS_HEADER_MAX 14

typedef enum {
  LS_WS_EV_NEED = 0, /* nothing more can be parsed until more input comes */
  LS_WS_EV_DATA,     /* a piece of the current data message (maybe empty); `fin`: its last */
  LS_WS_EV_CONTROL,  /* a whole control frame: ping, pong or close */
  LS_WS_EV_ERROR     /* the peer broke the protocol; the connection must close with `code` */
} ls_ws_ev_type_t;

typedef struct ls_ws_event_s {
  ls_ws_ev_type_t type;
  int opcode;            /* DATA: the message's (TEXT or BINARY); CONTROL: the frame's */
  int fin;               /* DATA: this piece ends the message */
  int compressed;        /* DATA: the message has RSV1 set (permessage-deflate) */
  uint8_t *data;         /* DATA, CONTROL: the payload, unmasked in the caller's buffer */
  size_t len;
  int code;              /* CONTROL close: the peer's code (1005: none); ERROR: ours */
  const char *reason;    /* ERROR: what went wrong, for the close frame and the log */
} ls_ws_event_t;

/* The parser's state: the frame and the message in progress. Zeroed by ls_ws_parser_init;
 * settings may be changed between calls. */
typedef struct ls_ws_parser_s {
  uint64_t max_message;      /* payload bytes of one message; 0: no limit */
  unsigned char server;      /* 1: frames must be masked (from a client); 0: must not be */
  unsigned char allow_rsv1;  /* permessage-deflate was negotiated */
  /* The data frame whose payload is being read. */
  unsigned char in_frame;
  unsigned char frame_fin;
  uint8_t mask[4];
  unsigned char masked;
  uint64_t frame_left;       /* payload bytes still to come */
  uint64_t frame_done;       /* payload bytes seen (the mask's phase) */
  /* The data message in progress (opcode 0: none). */
  unsigned char msg_opcode;
  unsigned char msg_compressed;
  uint64_t msg_len;
  uint32_t utf8;             /* ls_ws_utf8 state of a text message */
  /* The first error, repeated by every later call. */
  int error_code;
  const char *error_reason;
} ls_ws_parser_t;

void ls_ws_parser_init(ls_ws_parser_t *p, int server, uint64_t max_message);

/* Parses in[0..len) (which it unmasks in place) up to the next event, and sets *used to the
 * bytes the caller must now drop from its input: a DATA piece or a CONTROL payload points
 * into those bytes, so the caller takes it before dropping them. LS_WS_EV_NEED: *used bytes
 * (a header) were taken and the rest is an incomplete header or control frame, to be passed
 * again with more bytes after it. After an ERROR the parser is done: every call repeats it. */
ls_ws_ev_type_t ls_ws_parse(ls_ws_parser_t *p, uint8_t *in, size_t len, size_t *used,
                            ls_ws_event_t *ev);

/* Writes a frame header into out (LS_WS_HEADER_MAX bytes) and returns its length. With a
 * mask (4 bytes, a client's) the header carries it; the caller masks the payload. */
size_t ls_ws_header(uint8_t *out, int fin, int rsv1, int opcode, uint64_t len,
                    const uint8_t *mask);

/* XORs p[0..n) with the mask, starting at payload offset `offset` (the mask's phase). */
void ls_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* Incremental UTF-8 validation (RFC 3629: no overlongs, surrogates or code points past
 * U+10FFFF). The state starts at 0; a call returns 0 and updates it, or -1 at the first
 * invalid byte. The text is complete and valid when the state is 0 again. */
int ls_ws_utf8(uint32_t *state, const uint8_t *p, size_t n);

/* 1 if a close frame may carry the code (1000-1003, 1007-1014, 3000-4999). */
int ls_ws_close_code_valid(int code);

#endif
