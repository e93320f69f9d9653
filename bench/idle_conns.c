/* idle_conns: opens many keep-alive HTTP connections to a server and holds them idle, so that
 * scripts/bench can read the server's memory with that many connections open.
 *
 * Usage: idle_conns --port P [--host 127.0.0.1] [--conns 10000] [--path /] [--hold 1]
 *                   [--parallel 256] [--timeout 10]
 *
 * Each connection sends one "GET PATH HTTP/1.1" and reads the whole 200 response (Content-Length
 * or chunked), so every connection has been through a request and sits in the server's
 * keep-alive state, not in its header-reading state. At most --parallel connections are being
 * opened or are waiting for their response at any time, which keeps the server's accept backlog
 * from overflowing (an overflow costs a SYN retransmit, a whole second). When all are answered
 * it prints, flushed:
 *   ready: 10000  open_s: 0.41
 * then holds them idle for --hold seconds, counting those the server closes, and prints
 *   held: 10000  closed_by_server: 0
 * before closing everything and exiting 0. It raises its own RLIMIT_NOFILE to the hard limit.
 *
 * It fails (a message on stderr, exit status 1) on a refused or reset connection, a response
 * that is not a 200, or when the whole opening phase takes longer than --timeout seconds.
 * SIGTERM or SIGINT during the hold ends the hold early.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
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

#define RESP_MAX 4096
#define MAX_EVENTS 256

enum { CONNECTING, WAIT_RESPONSE, IDLE, CLOSED };

typedef struct {
  int fd;
  int state;
  size_t got;
  char *buf; /* the response so far; freed once it is complete */
} conn_t;

static int epfd;
static volatile sig_atomic_t stop;

static void die(const char *fmt, ...) {
  va_list ap;
  fputs("idle_conns: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

/* Is the response in buf[0, len) complete? Dies on a status other than 200. */
static int response_complete(const char *buf, size_t len, int index) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4), *cl;
  size_t head;
  if (end == NULL)
    return 0;
  if (len < 12 || memcmp(buf + 8, " 200", 4) != 0)
    die("connection %d: expected a 200 response, got \"%.*s\"", index,
        (int)(memchr(buf, '\r', len) ? (const char *)memchr(buf, '\r', len) - buf : 0), buf);
  head = (size_t)(end - buf) + 4;
  cl = memmem(buf, head, "\r\nContent-Length:", 17);
  if (cl == NULL)
    cl = memmem(buf, head, "\r\ncontent-length:", 17);
  if (cl != NULL)
    return len >= head + strtoul(cl + 17, NULL, 10);
  /* Chunked: done at the last chunk (no trailers are expected). */
  return len >= head + 5 && memcmp(buf + len - 5, "0\r\n\r\n", 5) == 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'h'},     {"port", required_argument, NULL, 'p'},
      {"conns", required_argument, NULL, 'c'},    {"path", required_argument, NULL, 'P'},
      {"hold", required_argument, NULL, 'H'},     {"parallel", required_argument, NULL, 'j'},
      {"timeout", required_argument, NULL, 't'},  {NULL, 0, NULL, 0}};
  const char *host = "127.0.0.1", *port = NULL, *path = "/";
  long nconns = 10000, parallel = 256;
  double hold = 1.0, timeout = 10.0, start, deadline;
  struct addrinfo hints, *ai;
  struct epoll_event events[MAX_EVENTS];
  struct rlimit rl;
  conn_t *conns;
  char request[512];
  int reqlen, ch, err;
  long next = 0, pending = 0, ready = 0, closed = 0, i;

  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (ch) {
    case 'h': host = optarg; break;
    case 'p': port = optarg; break;
    case 'c': nconns = strtol(optarg, NULL, 10); break;
    case 'P': path = optarg; break;
    case 'H': hold = strtod(optarg, NULL); break;
    case 'j': parallel = strtol(optarg, NULL, 10); break;
    case 't': timeout = strtod(optarg, NULL); break;
    default:
      fputs("usage: idle_conns --port P [--host H] [--conns N] [--path /] [--hold S]"
            " [--parallel N] [--timeout S]\n", stderr);
      return 2;
    }
  }
  if (port == NULL || nconns < 1 || parallel < 1 || optind != argc) {
    fputs("idle_conns: --port is required; --conns and --parallel must be positive\n", stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 16)
    die("the open-file limit (%lu) is too low for %ld connections", (unsigned long)rl.rlim_cur,
        nconns);

  reqlen = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", path, host,
                    port);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  err = getaddrinfo(host, port, &hints, &ai);
  if (err != 0)
    die("cannot resolve %s:%s: %s", host, port, gai_strerror(err));
  epfd = epoll_create1(EPOLL_CLOEXEC);
  conns = calloc((size_t)nconns, sizeof *conns);
  if (epfd < 0 || conns == NULL)
    die("setup failed: %s", strerror(errno));

  start = now_s();
  deadline = start + timeout;
  while (ready < nconns) {
    int n, k;
    /* Keep up to --parallel connections in flight. */
    while (next < nconns && pending < parallel) {
      conn_t *c = &conns[next];
      struct epoll_event ev;
      c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (c->fd < 0)
        die("socket: %s (after %ld connections)", strerror(errno), next);
      if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)
        die("connection %ld: connect: %s", next, strerror(errno));
      c->state = CONNECTING;
      ev.events = EPOLLOUT | EPOLLIN;
      ev.data.u64 = (uint64_t)next;
      if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
      next++;
      pending++;
    }
    if (now_s() > deadline)
      die("only %ld of %ld connections answered within %.1f s", ready, nconns, timeout);
    n = epoll_wait(epfd, events, MAX_EVENTS, 100);
    if (n < 0 && errno != EINTR)
      die("epoll_wait: %s", strerror(errno));
    for (k = 0; k < n; k++) {
      long idx = (long)events[k].data.u64;
      conn_t *c = &conns[idx];
      if (c->state == CONNECTING && (events[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int so_error = 0;
        socklen_t len = sizeof so_error;
        struct epoll_event ev;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
        if (so_error != 0)
          die("connection %ld: connect: %s", idx, strerror(so_error));
        if (send(c->fd, request, (size_t)reqlen, MSG_NOSIGNAL) != reqlen)
          die("connection %ld: send: %s", idx, strerror(errno));
        c->state = WAIT_RESPONSE;
        c->buf = malloc(RESP_MAX);
        if (c->buf == NULL)
          die("out of memory");
        ev.events = EPOLLIN;
        ev.data.u64 = (uint64_t)idx;
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
      } else if (c->state == WAIT_RESPONSE && (events[k].events & (EPOLLIN | EPOLLERR))) {
        ssize_t got = recv(c->fd, c->buf + c->got, RESP_MAX - c->got, 0);
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
          continue;
        if (got <= 0)
          die("connection %ld: %s before the response was complete", idx,
              got == 0 ? "closed by the server" : strerror(errno));
        c->got += (size_t)got;
        if (response_complete(c->buf, c->got, (int)idx)) {
          free(c->buf);
          c->buf = NULL;
          c->state = IDLE;
          pending--;
          ready++;
        } else if (c->got == RESP_MAX) {
          die("connection %ld: response larger than %d bytes", idx, RESP_MAX);
        }
      }
    }
  }
  printf("ready: %ld  open_s: %.2f\n", ready, now_s() - start);
  fflush(stdout);

  /* The hold: only a server closing (EOF or reset) wakes us. */
  deadline = now_s() + hold;
  while (!stop && now_s() < deadline) {
    int n = epoll_wait(epfd, events, MAX_EVENTS, 50), k;
    for (k = 0; k < n; k++) {
      conn_t *c = &conns[events[k].data.u64];
      char scratch[256];
      ssize_t r;
      if (c->state != IDLE)
        continue;
      r = recv(c->fd, scratch, sizeof scratch, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        c->state = CLOSED;
        close(c->fd);
        closed++;
      }
    }
  }
  printf("held: %ld  closed_by_server: %ld\n", nconns - closed, closed);
  fflush(stdout);
  for (i = 0; i < nconns; i++)
    if (conns[i].state != CLOSED)
      close(conns[i].fd);
  free(conns);
  freeaddrinfo(ai);
  return 0;
}
