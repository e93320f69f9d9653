/* libFuzzer target: the WebSocket frame parser (src/ws_frame.c). The first byte picks the
 * side (server: masked frames expected), permessage-deflate and a small message limit; the
 * rest is what the peer sent. The input is parsed twice, in one piece and one byte at a time,
 * and both runs must tell the same story: the same messages, control frames and error. Along
 * the way every event must stay inside the input and every message inside the limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/buffer.h"
#include "../../src/ws_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct transcript_s {
  ls_buf_t out; /* what happened, as bytes */
  ls_buf_t msg; /* the message being put together */
} transcript_t;

static void note(transcript_t *t, char what, int a, const void *p, size_t n) {
  uint32_t len = (uint32_t)n;
  ls_buf_append(&t->out, &what, 1);
  ls_buf_append(&t->out, &a, sizeof a);
  ls_buf_append(&t->out, &len, sizeof len);
  ls_buf_append(&t->out, p, n);
}

/* Parses buf[0..*len) as far as it goes; returns 1 once an error ended the stream. */
static int drain(ls_ws_parser_t *p, uint8_t *buf, size_t *len, transcript_t *t) {
  for (;;) {
    ls_ws_event_t ev;
    size_t used;
    ls_ws_ev_type_t type = ls_ws_parse(p, buf, *len, &used, &ev);
    if (used > *len)
      abort();
    if (type == LS_WS_EV_ERROR) {
      if (ev.code != 1002 && ev.code != 1007 && ev.code != 1009)
        abort();
      note(t, 'E', ev.code, "", 0);
      return 1;
    }
    if (type == LS_WS_EV_DATA) {
      if (ev.data < buf || ev.data + ev.len > buf + used)
        abort();
      ls_buf_append(&t->msg, ev.data, ev.len);
      if (p->max_message > 0 && !ev.compressed && ls_buf_len(&t->msg) > p->max_message)
        abort();
      if (ev.fin) {
        note(t, 'M', ev.opcode, ls_buf_head(&t->msg), ls_buf_len(&t->msg));
        ls_buf_consume(&t->msg, ls_buf_len(&t->msg));
      }
    } else if (type == LS_WS_EV_CONTROL) {
      if (ev.len > 125)
        abort();
      note(t, 'C', ev.opcode * 100000 + ev.code, ev.data, ev.len);
    }
    memmove(buf, buf + used, *len - used);
    *len -= used;
    if (type == LS_WS_EV_NEED)
      return 0;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ls_ws_parser_t whole, bytewise;
  transcript_t a, b;
  uint8_t *buf;
  size_t len, i;
  int server, done = 0;
  uint64_t limit;
  if (size < 1)
    return 0;
  server = data[0] & 1;
  limit = (data[0] & 4) ? 300 : 0;
  data++;
  size--;
  ls_ws_parser_init(&whole, server, limit);
  ls_ws_parser_init(&bytewise, server, limit);
  whole.allow_rsv1 = bytewise.allow_rsv1 = (data - 1)[0] & 2 ? 1 : 0;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  buf = malloc(size + 1);
  memcpy(buf, data, size);
  len = size;
  drain(&whole, buf, &len, &a);
  len = 0;
  for (i = 0; i < size && !done; i++) {
    buf[len++] = data[i];
    done = drain(&bytewise, buf, &len, &b);
  }
  if (ls_buf_len(&a.out) != ls_buf_len(&b.out) ||
      memcmp(ls_buf_head(&a.out), ls_buf_head(&b.out), ls_buf_len(&a.out)) != 0)
    abort();
  free(buf);
  ls_buf_free(&a.out);
  ls_buf_free(&a.msg);
  ls_buf_free(&b.out);
  ls_buf_free(&b.msg);
  return 0;
}
