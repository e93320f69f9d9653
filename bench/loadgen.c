/* loadgen: a closed-loop load generator for the echo benchmark (bench/echo.sh).
 *
 * TCP (default): opens --conns connections, reads the "Welcome!" greeting on each, then sends
 * one --size byte line ((size - 1) letters and "\n") and waits for the whole reply
 * "Hello, <letters>!\n" before sending the next: exactly one message in flight per connection.
 * UDP (--udp): each "connection" is a connected UDP socket that sends one --size byte datagram
 * and waits for any reply datagram before sending the next.
 *
 * Round trips that complete in the measured window [warmup, warmup + seconds) are counted and
 * their latency goes into a log-linear histogram (about 1.6% resolution, fixed size, nothing is
 * allocated per message). The result is one line on stdout:
 *   messages/s: 123456.7  p50_us: 80  p99_us: 300  p999_us: 900  max_us: 2100  msgs: 1234567
 *   loadgen_cpu_pct: 85
 * (all on one line; loadgen_cpu_pct is this process's CPU use during the window).
 *
 * After the window no new request is sent: each connection waits for its last reply, then (TCP)
 * half-closes and waits for the server to close, so a run ends cleanly on both sides.
 *
 * It fails loudly, with a message on stderr and exit status 1, on anything unexpected: a
 * connection that cannot be made, is reset or closed by the server, a reply that differs from
 * the expected bytes (checked byte for byte as they arrive), extra bytes, or a connection that
 * waits longer than --timeout seconds for its greeting, a reply or the final close (a stall).
 *
 * WebSocket (--ws PATH): each connection opens a WebSocket on PATH (any 101 answer will do),
 * then sends one masked text frame of --size letters and waits for the same frame back,
 * unmasked, byte for byte; at the end it sends a close frame (1000), half-closes, and expects
 * the server's close frame (1000) and its EOF. With --broadcast, only the first connection
 * sends, and a round ends when every connection has received the frame (a server that
 * publishes each message to all its clients, as bench/ws_broadcast_app.lua): the latencies
 * are those of whole rounds, send to last delivery, and messages/s counts rounds.
 *
 * One thread and level-triggered epoll: the client must cost less than the server it measures,
 * and this keeps it to one read and one write system call per round trip.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GREETING "Welcome!"
#define REPLY_HEAD "Hello, "
#define REPLY_TAIL "!\n"
#define UDP_MAX 65507
#define MAX_EVENTS 256
#define STALL_CHECK_NS 100000000ULL /* scan for stalled connections every 100 ms */

/* ---- latency histogram -------------------------------------------------------------------- */

/* Log-linear buckets over nanoseconds: values below 128 have their own bucket; above, every
 * power of two is split into 64 equal buckets, so a bucket is at most 1/64 of its value wide. */
#define HIST_SUB 64
#define HIST_BUCKETS (HIST_SUB * 58 + HIST_SUB)

typedef struct {
  uint64_t counts[HIST_BUCKETS];
  uint64_t total;
  uint64_t max;
} histogram_t;

static unsigned hist_index(uint64_t v) {
  unsigned msb, shift;
  if (v < 2 * HIST_SUB)
    return (unsigned)v;
  msb = 63u - (unsigned)__builtin_clzll(v);
  shift = msb - 6; /* v >> shift lands in [64, 128) */
  return HIST_SUB * shift + (unsigned)(v >> shift);
}

/* The middle of bucket idx, in the histogram's unit. */
static double hist_value(unsigned idx) {
  unsigned shift;
  uint64_t low;
  if (idx < 2 * HIST_SUB)
    return (double)idx;
  shift = idx / HIST_SUB - 1;
  low = (uint64_t)(idx - HIST_SUB * shift) << shift;
  return (double)low + (double)(1ULL << shift) / 2.0;
}

static void hist_record(histogram_t *h, uint64_t v) {
  h->counts[hist_index(v)]++;
  h->total++;
  if (v > h->max)
    h->max = v;
}

/* The value below which a fraction q of the samples lie (0 when there are none). */
static double hist_quantile(const histogram_t *h, double q) {
  uint64_t want, seen = 0;
  unsigned i;
  if (h->total == 0)
    return 0.0;
  want = (uint64_t)(q * (double)h->total + 0.999999);
  if (want == 0)
    want = 1;
  for (i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= want)
      return hist_value(i);
  }
  return (double)h->max;
}

/* ---- connections -------------------------------------------------------------------------- */

enum {
  WAIT_GREETING, /* TCP: connected, the greeting not yet complete */
  WAIT_REPLY,    /* a request is (being) sent, its reply not yet complete */
  WAIT_CLOSE,    /* TCP, after the run: half-closed, waiting for the server to close */
  CLOSED
};

typedef struct {
  int fd;
  int index;
  int state;
  int want_out;     /* EPOLLOUT is registered: part of the request is still unsent */
  size_t sent;      /* bytes of the current request written so far */
  size_t got;       /* bytes of the current reply received so far */
  uint64_t sent_ns; /* when the current request was sent (or the connection opened) */
  uint64_t done;    /* round trips completed in the measured window */
  char *rbuf;       /* receive buffer, reused for every reply */
  size_t rcap;
} conn_t;

typedef struct {
  const char *host;
  const char *port;
  int conns;
  size_t size;
  double seconds;
  double warmup;
  double timeout;
  int udp;
  const char *ws_path; /* --ws: WebSocket frames on this path instead of lines */
  int broadcast;       /* --broadcast: one sender, every connection receives */
} options_t;

static options_t opt = {"127.0.0.1", NULL, 50, 64, 10.0, 2.0, 5.0, 0, NULL, 0};
static size_t request_len; /* bytes each request sends: opt.size, or a WebSocket frame */
/* WebSocket: the handshake request, the masked close frame sent at the end and the close
 * frame expected back; --broadcast's round in progress. */
static char *ws_handshake;
static size_t ws_handshake_len;
static const char ws_close_out[] = "\x88\x82\x01\x02\x03\x04\x02\xea";
static const char ws_close_back[] = "\x88\x02\x03\xe8";
static conn_t *all_conns;
static int greeted, round_done;
static uint64_t round_start;
static char *request;     /* the bytes each request sends (the same for every connection) */
static char *expect;      /* the exact TCP reply */
static size_t expect_len;
static int epfd;
static int draining;   /* the run is over: no new requests */
static int open_conns; /* connections not yet CLOSED */
static histogram_t hist;

static void die(const char *fmt, ...) {
  va_list ap;
  fputs("loadgen: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

/* CPU time (user + system) this process has used so far, in nanoseconds. */
static uint64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ULL +
         ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ULL;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Writes the n bytes at s into out (outsize bytes) as a C string with escapes, cut short with
 * "..." if it does not fit; returns out. For error messages. */
static const char *escape(char *out, size_t outsize, const char *s, size_t n) {
  size_t o = 0, i;
  for (i = 0; i < n && o + 5 < outsize; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '\n') {
      out[o++] = '\\';
      out[o++] = 'n';
    } else if (ch == '\r') {
      out[o++] = '\\';
      out[o++] = 'r';
    } else if (ch < 32 || ch >= 127) {
      o += (size_t)snprintf(out + o, outsize - o, "\\x%02x", ch);
    } else {
      out[o++] = (char)ch;
    }
  }
  if (i < n && o + 4 < outsize) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
  return out;
}

static void mismatch(const conn_t *c, const char *want, size_t want_len) {
  char w[200], g[200];
  die("connection %d: protocol mismatch\n  expected: \"%s\"\n  received: \"%s\"", c->index,
      escape(w, sizeof w, want, want_len), escape(g, sizeof g, c->rbuf, c->got));
}

static void set_events(conn_t *c, int want_out) {
  struct epoll_event ev;
  ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
  ev.data.ptr = c;
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
    die("epoll_ctl: %s", strerror(errno));
  c->want_out = want_out;
}

/* Writes what is left of the current request; waits for EPOLLOUT if the kernel takes less. */
static void send_rest(conn_t *c) {
  while (c->sent < request_len) {
    ssize_t n = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (opt.udp)
          die("connection %d: send: %s", c->index, strerror(errno));
        if (!c->want_out)
          set_events(c, 1);
        return;
      }
      die("connection %d: send: %s", c->index, strerror(errno));
    }
    if (opt.udp && (size_t)n != opt.size)
      die("connection %d: short datagram send (%zd of %zu bytes)", c->index, n, opt.size);
    c->sent += (size_t)n;
  }
  if (c->want_out)
    set_events(c, 0);
}

static void start_request(conn_t *c, uint64_t t) {
  c->state = WAIT_REPLY;
  c->sent = 0;
  c->got = 0;
  c->sent_ns = t;
  send_rest(c);
}

static void set_closed(conn_t *c) {
  close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  c->state = CLOSED;
  open_conns--;
}

/* After the run, each connection ends the way a polite client does: TCP half-closes and waits
 * for the server to close in turn (the echo handler's lines() loop ends at EOF), so the server
 * sees no reset and nothing is left unread. */
static void finish(conn_t *c, uint64_t t) {
  if (opt.udp) {
    set_closed(c);
    return;
  }
  if (opt.ws_path != NULL &&
      send(c->fd, ws_close_out, sizeof ws_close_out - 1, MSG_NOSIGNAL) != sizeof ws_close_out - 1)
    die("connection %d: cannot send the close frame: %s", c->index, strerror(errno));
  if (shutdown(c->fd, SHUT_WR) != 0)
    die("connection %d: shutdown: %s", c->index, strerror(errno));
  c->state = WAIT_CLOSE;
  c->got = 0;
  c->sent_ns = t;
}

/* --broadcast: a new round; the first connection sends, every one waits for the frame. */
static void start_round(uint64_t t) {
  int i;
  round_start = t;
  round_done = 0;
  for (i = 0; i < opt.conns; i++) {
    all_conns[i].state = WAIT_REPLY;
    all_conns[i].got = 0;
    all_conns[i].sent = request_len;
    all_conns[i].sent_ns = t;
  }
  start_request(&all_conns[0], t);
}

/* --broadcast: connection c has this round's frame. */
static void round_delivered(conn_t *c, uint64_t t, uint64_t measure_from, uint64_t measure_to) {
  int i;
  c->got = 0;
  if (++round_done < opt.conns)
    return;
  if (t >= measure_from && t < measure_to) {
    hist_record(&hist, t - round_start);
    for (i = 0; i < opt.conns; i++)
      all_conns[i].done++;
  }
  if (!draining) {
    start_round(t);
    return;
  }
  for (i = 0; i < opt.conns; i++)
    finish(&all_conns[i], t);
}

/* WebSocket: the handshake's answer is complete on c. */
static void ws_greeted(conn_t *c, uint64_t t) {
  c->got = 0;
  if (!opt.broadcast) {
    start_request(c, t);
    return;
  }
  c->state = WAIT_REPLY;
  c->sent = request_len;
  if (++greeted == opt.conns)
    start_round(t);
}

/* WebSocket: the bytes read while waiting for the handshake's answer or the close frame. */
static void ws_on_bytes(conn_t *c, size_t n) {
  char g[200];
  if (c->state == WAIT_CLOSE) {
    if (n == 0) {
      if (c->got != sizeof ws_close_back - 1)
        die("connection %d: closed without a whole close frame", c->index);
      set_closed(c);
      return;
    }
    if (c->got + n > sizeof ws_close_back - 1 || memcmp(c->rbuf, ws_close_back + c->got, n) != 0)
      die("connection %d: expected the close frame (1000), got \"%s\"", c->index,
          escape(g, sizeof g, c->rbuf, n));
    c->got += n;
    return;
  }
  if (n == 0)
    die("connection %d: the server closed the connection during the handshake", c->index);
  c->got += n;
  if (memmem(c->rbuf, c->got, "\r\n\r\n", 4) == NULL) {
    if (c->got == c->rcap)
      die("connection %d: handshake answer too long", c->index);
    return;
  }
  if (strncmp(c->rbuf, "HTTP/1.1 101 ", 13) != 0)
    die("connection %d: the handshake was refused: \"%s\"", c->index,
        escape(g, sizeof g, c->rbuf, c->got));
  if ((char *)memmem(c->rbuf, c->got, "\r\n\r\n", 4) + 4 != c->rbuf + c->got)
    die("connection %d: unexpected bytes after the handshake answer", c->index);
  ws_greeted(c, now_ns());
}

/* A reply is complete at time t: count it if it falls in the measured window, send the next. */
static void complete(conn_t *c, uint64_t t, uint64_t measure_from, uint64_t measure_to) {
  if (opt.broadcast && c->state == WAIT_REPLY) {
    round_delivered(c, t, measure_from, measure_to);
    return;
  }
  if (t >= measure_from && t < measure_to) {
    hist_record(&hist, t - c->sent_ns);
    c->done++;
  }
  if (draining)
    finish(c, t);
  else
    start_request(c, t);
}

static void on_readable(conn_t *c, uint64_t measure_from, uint64_t measure_to) {
  const char *want;
  size_t want_len;
  ssize_t n;

  do
    n = recv(c->fd, c->rbuf + (opt.ws_path != NULL && c->state == WAIT_CLOSE ? 0 : c->got),
             c->rcap - (opt.ws_path != NULL && c->state == WAIT_CLOSE ? 0 : c->got), 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return;
    die("connection %d: receive: %s", c->index, strerror(errno));
  }
  if (opt.ws_path != NULL && c->state != WAIT_REPLY) {
    ws_on_bytes(c, (size_t)n);
    return;
  }
  if (c->state == WAIT_CLOSE) {
    if (n > 0) {
      char g[200];
      die("connection %d: unexpected data after the last reply: \"%s\"", c->index,
          escape(g, sizeof g, c->rbuf, (size_t)n));
    }
    set_closed(c); /* the server closed its side: a clean end */
    return;
  }
  if (opt.udp) {
    if (c->state != WAIT_REPLY || c->sent < request_len)
      die("connection %d: datagram received before the request was sent", c->index);
    complete(c, now_ns(), measure_from, measure_to);
    return;
  }
  if (n == 0)
    die("connection %d: the server closed the connection (%s)", c->index,
        c->state == WAIT_GREETING ? "before the greeting was complete" : "while a reply was due");
  if (c->state == WAIT_GREETING) {
    want = GREETING;
    want_len = sizeof GREETING - 1;
  } else {
    want = expect;
    want_len = expect_len;
    if (c->sent < request_len)
      die("connection %d: reply data arrived before the request was sent", c->index);
  }
  /* Check only the newly arrived bytes; anything past the expected end is a mismatch too. */
  if (c->got + (size_t)n > want_len || memcmp(c->rbuf + c->got, want + c->got, (size_t)n) != 0) {
    c->got += (size_t)n;
    mismatch(c, want, want_len);
  }
  c->got += (size_t)n;
  if (c->got == want_len)
    complete(c, now_ns(), c->state == WAIT_GREETING ? UINT64_MAX : measure_from, measure_to);
}

static int open_conn(const struct addrinfo *ai, int index) {
  int fd, one = 1;
  fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    die("socket: %s", strerror(errno));
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
    die("connection %d: connect to %s:%s: %s", index, opt.host, opt.port, strerror(errno));
  if (!opt.udp && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    die("setsockopt(TCP_NODELAY): %s", strerror(errno));
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
    die("fcntl(O_NONBLOCK): %s", strerror(errno));
  return fd;
}

/* ---- command line ------------------------------------------------------------------------- */

static void usage(FILE *out) {
  fputs("usage: loadgen --port P [--host 127.0.0.1] [--conns 50] [--size 64] [--seconds 10]\n"
        "               [--warmup 2] [--timeout 5] [--udp | --ws PATH [--broadcast]]\n"
        "  --conns N     connections (UDP: sockets), each with one message in flight\n"
        "  --size B      bytes per request: TCP sends B-1 letters and \"\\n\", UDP one datagram\n"
        "  --seconds S   length of the measured window, after the warm-up\n"
        "  --warmup S    seconds of load before measuring starts\n"
        "  --timeout S   fail if any connection waits longer than S seconds for an answer\n"
        "  --udp         UDP instead of TCP (any reply datagram counts as the answer)\n"
        "  --ws PATH     WebSocket text frames of B letters to ws://HOST:PORT/PATH, echoed\n"
        "  --broadcast   with --ws: the first connection sends, every connection receives\n",
        out);
}

static double parse_seconds(const char *name, const char *s, double min) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || !(v >= min) || v > 86400.0) {
    fprintf(stderr, "loadgen: --%s needs a number of seconds >= %g, not '%s'\n", name, min, s);
    exit(2);
  }
  return v;
}

static long parse_long(const char *name, const char *s, long min, long max) {
  char *end;
  long v;
  errno = 0;
  v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max) {
    fprintf(stderr, "loadgen: --%s needs a whole number in [%ld, %ld], not '%s'\n", name, min,
            max, s);
    exit(2);
  }
  return v;
}

static void parse_args(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'h'},    {"port", required_argument, NULL, 'p'},
      {"conns", required_argument, NULL, 'c'},   {"size", required_argument, NULL, 's'},
      {"seconds", required_argument, NULL, 'd'}, {"warmup", required_argument, NULL, 'w'},
      {"timeout", required_argument, NULL, 't'}, {"udp", no_argument, NULL, 'u'},
      {"ws", required_argument, NULL, 'W'},      {"broadcast", no_argument, NULL, 'B'},
      {"help", no_argument, NULL, 'H'},          {NULL, 0, NULL, 0}};
  long size = 64;
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (ch) {
    case 'h': opt.host = optarg; break;
    case 'p': parse_long("port", optarg, 1, 65535); opt.port = optarg; break;
    case 'c': opt.conns = (int)parse_long("conns", optarg, 1, 100000); break;
    case 's': size = parse_long("size", optarg, 1, 1L << 20); break;
    case 'd': opt.seconds = parse_seconds("seconds", optarg, 0.001); break;
    case 'w': opt.warmup = parse_seconds("warmup", optarg, 0.0); break;
    case 't': opt.timeout = parse_seconds("timeout", optarg, 0.001); break;
    case 'u': opt.udp = 1; break;
    case 'W': opt.ws_path = optarg; break;
    case 'B': opt.broadcast = 1; break;
    case 'H': usage(stdout); exit(0);
    default: usage(stderr); exit(2);
    }
  }
  if (optind != argc || opt.port == NULL) {
    usage(stderr);
    exit(2);
  }
  if ((opt.broadcast && opt.ws_path == NULL) || (opt.ws_path != NULL && (opt.udp || size > 65535))) {
    fprintf(stderr, "loadgen: --broadcast needs --ws, which excludes --udp and takes --size up to 65535\n");
    exit(2);
  }
  if (opt.udp && size > UDP_MAX) {
    fprintf(stderr, "loadgen: --size is at most %d for UDP\n", UDP_MAX);
    exit(2);
  }
  opt.size = (size_t)size;
}

/* ---- main --------------------------------------------------------------------------------- */

/* WebSocket: the handshake, the request as a masked text frame of the letters in `request`,
 * and the unmasked frame expected back. */
static void ws_prepare(void) {
  static const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
  size_t hlen = opt.size < 126 ? 2 : 4, i;
  char *frame = malloc(hlen + 4 + opt.size);
  size_t cap = strlen(opt.ws_path) + strlen(opt.host) + 256;
  expect = malloc(hlen + opt.size);
  ws_handshake = malloc(cap);
  if (frame == NULL || expect == NULL || ws_handshake == NULL)
    die("out of memory");
  frame[0] = expect[0] = (char)0x81;
  if (hlen == 2) {
    frame[1] = (char)(0x80 | opt.size);
    expect[1] = (char)opt.size;
  } else {
    frame[1] = (char)(0x80 | 126);
    expect[1] = 126;
    frame[2] = expect[2] = (char)(opt.size >> 8);
    frame[3] = expect[3] = (char)opt.size;
  }
  memcpy(frame + hlen, mask, 4);
  for (i = 0; i < opt.size; i++)
    frame[hlen + 4 + i] = (char)(request[i] ^ mask[i & 3]);
  memcpy(expect + hlen, request, opt.size);
  expect_len = hlen + opt.size;
  free(request);
  request = frame;
  request_len = hlen + 4 + opt.size;
  ws_handshake_len = (size_t)snprintf(ws_handshake, cap,
      "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      opt.ws_path, opt.host);
}

int main(int argc, char **argv) {
  struct addrinfo hints, *ai;
  struct epoll_event events[MAX_EVENTS];
  conn_t *conns;
  uint64_t start, measure_from, measure_to, now, next_check, stall_ns;
  uint64_t cpu_from = 0, cpu_to = 0, wall_from = 0, wall_to = 0;
  size_t i;
  int err, zero_conns = 0;

  parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);

  /* The request: letters only, so it never contains "exit", "\r" or a stray "\n". */
  request = malloc(opt.size);
  if (request == NULL)
    die("out of memory");
  for (i = 0; i < opt.size; i++)
    request[i] = (char)('a' + i % 26);
  request_len = opt.size;
  if (opt.ws_path != NULL) {
    ws_prepare();
  } else if (!opt.udp) {
    request[opt.size - 1] = '\n';
    expect_len = (sizeof REPLY_HEAD - 1) + (opt.size - 1) + (sizeof REPLY_TAIL - 1);
    expect = malloc(expect_len);
    if (expect == NULL)
      die("out of memory");
    memcpy(expect, REPLY_HEAD, sizeof REPLY_HEAD - 1);
    memcpy(expect + sizeof REPLY_HEAD - 1, request, opt.size - 1);
    memcpy(expect + expect_len - (sizeof REPLY_TAIL - 1), REPLY_TAIL, sizeof REPLY_TAIL - 1);
  }

  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = opt.udp ? SOCK_DGRAM : SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  err = getaddrinfo(opt.host, opt.port, &hints, &ai);
  if (err != 0)
    die("cannot resolve %s:%s: %s", opt.host, opt.port, gai_strerror(err));

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0)
    die("epoll_create1: %s", strerror(errno));
  conns = calloc((size_t)opt.conns, sizeof *conns);
  if (conns == NULL)
    die("out of memory");

  /* Connect everything first (a blocking connect to a local listener is immediate; each socket
   * turns non-blocking afterwards), so that connection setup is not part of the measurement. */
  for (i = 0; i < (size_t)opt.conns; i++) {
    conn_t *c = &conns[i];
    struct epoll_event ev;
    c->index = (int)i;
    c->fd = open_conn(ai, c->index);
    /* Room for a whole expected answer and more, so that extra bytes are seen, not left. */
    c->rcap = opt.udp ? UDP_MAX + 1 : expect_len + sizeof GREETING + 64;
    if (opt.ws_path != NULL && c->rcap < 4096)
      c->rcap = 4096; /* the handshake's answer */
    c->rbuf = malloc(c->rcap);
    if (c->rbuf == NULL)
      die("out of memory");
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
      die("epoll_ctl: %s", strerror(errno));
  }
  freeaddrinfo(ai);
  all_conns = conns;

  start = now_ns();
  measure_from = start + (uint64_t)(opt.warmup * 1e9);
  measure_to = measure_from + (uint64_t)(opt.seconds * 1e9);
  stall_ns = (uint64_t)(opt.timeout * 1e9);
  for (i = 0; i < (size_t)opt.conns; i++) {
    conns[i].sent_ns = start;
    if (opt.udp)
      start_request(&conns[i], start);
    else
      conns[i].state = WAIT_GREETING;
    if (opt.ws_path != NULL &&
        send(conns[i].fd, ws_handshake, ws_handshake_len, MSG_NOSIGNAL) != (ssize_t)ws_handshake_len)
      die("connection %d: cannot send the handshake: %s", conns[i].index, strerror(errno));
  }

  /* The run, then the drain: once the window closes no new request is sent; each connection
   * waits for its last reply, half-closes and waits for the server's EOF, all within the same
   * --timeout that catches a stalled server during the run. */
  open_conns = opt.conns;
  next_check = start + STALL_CHECK_NS;
  now = start;
  while (open_conns > 0) {
    int timeout_ms = (int)(STALL_CHECK_NS / 1000000), n, k;
    if (wall_from == 0 && now >= measure_from) {
      wall_from = now;
      cpu_from = cpu_ns();
    }
    if (!draining && now >= measure_to) {
      draining = 1;
      wall_to = now;
      cpu_to = cpu_ns();
    }
    if (!draining && measure_to - now < STALL_CHECK_NS)
      timeout_ms = (int)((measure_to - now + 999999) / 1000000);
    n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_wait: %s", strerror(errno));
    }
    for (k = 0; k < n; k++) {
      conn_t *c = events[k].data.ptr;
      if (c->state != CLOSED && (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        on_readable(c, measure_from, measure_to);
      if (c->state != CLOSED && (events[k].events & EPOLLOUT) && c->want_out)
        send_rest(c);
    }
    now = now_ns();
    if (now >= next_check) {
      next_check = now + STALL_CHECK_NS;
      for (i = 0; i < (size_t)opt.conns; i++) {
        const conn_t *c = &conns[i];
        static const char *const waiting_for[] = {"greeting", "reply", "close (EOF)", ""};
        if (c->state != CLOSED && now - c->sent_ns > stall_ns)
          die("connection %d: no %s after %.1f s (%zu bytes of it received)%s", c->index,
              waiting_for[c->state], (double)(now - c->sent_ns) / 1e9, c->got,
              c->state == WAIT_CLOSE ? " after the client half-closed" : ": the server stalled");
      }
    }
  }

  for (i = 0; i < (size_t)opt.conns; i++) {
    if (conns[i].done == 0)
      zero_conns++;
    free(conns[i].rbuf);
  }
  free(conns);
  free(expect);
  free(request);
  free(ws_handshake);
  close(epfd);
  if (hist.total == 0)
    die("no round trip completed in the measured window");
  if (zero_conns > 0)
    fprintf(stderr, "loadgen: warning: %d of %d connections completed no round trip in the "
            "measured window\n", zero_conns, opt.conns);

  /* loadgen_cpu_pct: how busy this process was during the window. Near 100, the client and not
   * the server may be what limits the rate. */
  printf("messages/s: %.1f  p50_us: %.0f  p99_us: %.0f  p999_us: %.0f  max_us: %.0f  msgs: %llu"
         "  loadgen_cpu_pct: %.0f\n",
         (double)hist.total / opt.seconds, hist_quantile(&hist, 0.50) / 1000.0,
         hist_quantile(&hist, 0.99) / 1000.0, hist_quantile(&hist, 0.999) / 1000.0,
         (double)hist.max / 1000.0, (unsigned long long)hist.total,
         wall_to > wall_from ? 100.0 * (double)(cpu_to - cpu_from) / (double)(wall_to - wall_from)
                             : 0.0);
  return 0;
}
