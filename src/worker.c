/* The worker's side of --workers: this process's number, the commands from the master, the
 * reports after each load, and the listeners' bind hooks. See workers.h. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "alloc.h"
#include "log.h"
#include "workers.h"
#include "workers_proto.h"

/* A listening socket the master gave this process: its descriptor here, and the socket's
 * inode, which tells whether the descriptor still refers to it. */
typedef struct held_s {
  int fd;
  uint64_t ino;
} held_t;

typedef struct worker_s {
  unsigned id, count;
  int req_fd, cmd_fd;
  int report_files; /* --reload: the master watches what the loads required */
  ls_runtime_t *rt;
  ls_app_t *app;
  uv_poll_t cmd_poll;
  uv_timer_t sync_timer;
  int attached;
  int committed;  /* a generation has been committed: the worker is ready */
  int ready_sent;
  held_t *held;
  size_t nheld, held_cap;
  uint64_t *reported; /* the inodes of the last report */
  size_t nreported, reported_cap;
  unsigned port0_gen;  /* the generation whose port-0 listeners port0 counts */
  char port0[16][64];  /* their addresses ("http://127.0.0.1:0"), one entry per listener */
  unsigned nport0;
} worker_t;

/* A process is one worker at most, and signals and fork are per process: this is the one. */
static worker_t the_worker;
static worker_t *self;

void ls__worker_become(unsigned id, unsigned count, int req_fd, int cmd_fd, int report_files) {
  memset(&the_worker, 0, sizeof the_worker);
  the_worker.id = id;
  the_worker.count = count;
  the_worker.req_fd = req_fd;
  the_worker.cmd_fd = cmd_fd;
  the_worker.report_files = report_files;
  self = &the_worker;
  {
    char tag[32];
    snprintf(tag, sizeof tag, "worker %u", id);
    ls_log_set_tag(tag);
  }
}

unsigned ls_worker_id(void) { return self != NULL ? self->id : 0; }
unsigned ls_worker_count(void) { return self != NULL ? self->count : 1; }

/* ---- commands ----------------------------------------------------------------------------- */

static void cmd_cb(uv_poll_t *poll, int status, int events) {
  ls_runtime_t *rt = self->rt;
  (void)poll;
  (void)events;
  for (;;) {
    char cmd;
    ssize_t n = status < 0 ? -1 : recv(self->cmd_fd, &cmd, 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    if (n <= 0) {
      /* The master is gone (PR_SET_PDEATHSIG sends SIGTERM as well): stop as SIGTERM would. */
      uv_poll_stop(&self->cmd_poll);
      if (!rt->stopping) {
        ls_log(LS_LOG_WARN, "the master process is gone; stopping");
        ls_runtime_stop(rt, 1);
      }
      return;
    }
    if (cmd == LS_CMD_RELOAD) {
      ls_app_reload(self->app);
    } else if (cmd == LS_CMD_STOP) {
      if (!rt->stopping)
        ls_runtime_stop(rt, 1);
    } else if (cmd == LS_CMD_STOP_NOW) {
      ls_runtime_stop(rt, 0);
    }
  }
}

/* ---- reports ------------------------------------------------------------------------------ */

static int contains(const uint64_t *list, size_t n, uint64_t v) {
  size_t i;
  for (i = 0; i < n; i++)
    if (list[i] == v)
      return 1;
  return 0;
}

/* Tells the master which of its sockets this process still holds (LS_MSG_READY the first
 * time), if that changed since the last report. */
static void sync_cb(uv_timer_t *t) {
  char msg[1 + 256 * sizeof(uint64_t)];
  size_t i, kept = 0, n = 0;
  int changed;
  (void)t;
  if (!self->committed)
    return; /* still starting: the first commit reports (as READY) */
  for (i = 0; i < self->nheld; i++) {
    struct stat st;
    held_t h = self->held[i];
    if (fstat(h.fd, &st) == 0 && S_ISSOCK(st.st_mode) && (uint64_t)st.st_ino == h.ino)
      self->held[kept++] = h;
  }
  self->nheld = kept;
  changed = !self->ready_sent || kept != self->nreported;
  for (i = 0; i < kept && !changed; i++)
    changed = !contains(self->reported, self->nreported, self->held[i].ino);
  if (!changed)
    return;
  msg[0] = self->ready_sent ? LS_MSG_SYNC : LS_MSG_READY;
  if (self->reported_cap < kept) {
    uint64_t *r = ls_realloc(self->reported, self->reported_cap * sizeof *r, kept * sizeof *r);
    if (r != NULL) {
      self->reported = r;
      self->reported_cap = kept;
    }
  }
  self->nreported = 0;
  for (i = 0; i < kept && n < 256; i++) {
    uint64_t ino = self->held[i].ino;
    if (contains(self->reported, self->nreported, ino))
      continue;
    memcpy(msg + 1 + n * sizeof ino, &ino, sizeof ino);
    n++;
    if (self->nreported < self->reported_cap)
      self->reported[self->nreported++] = ino;
  }
  if (send(self->req_fd, msg, 1 + n * sizeof(uint64_t), MSG_NOSIGNAL) >= 0)
    self->ready_sent = 1;
}

typedef struct files_s {
  char *buf;
  size_t len;
  int dropped;
} files_t;

static void add_file(void *ud, const char *path) {
  files_t *f = ud;
  size_t n = strlen(path) + 1;
  if (f->len + n > LS_MSG_MAX) {
    f->dropped = 1;
    return;
  }
  memcpy(f->buf + f->len, path, n);
  f->len += n;
}

static void send_files(ls_app_t *app, ls_gen_t *gen) {
  files_t f;
  f.buf = ls_malloc(LS_MSG_MAX);
  if (f.buf == NULL)
    return;
  f.buf[0] = LS_MSG_FILES;
  f.len = 1;
  f.dropped = 0;
  ls_app_project_files(app, gen, add_file, &f);
  if (f.dropped)
    ls_log(LS_LOG_WARN, "too many files to watch; some are not");
  if (send(self->req_fd, f.buf, f.len, MSG_NOSIGNAL) < 0)
    ls_log(LS_LOG_WARN, "cannot tell the master the files to watch: %s", strerror(errno));
  ls_free(f.buf, LS_MSG_MAX);
}

static void worker_loaded(ls_app_t *app, ls_gen_t *gen, int ok) {
  if (self->report_files)
    send_files(app, gen);
  if (ok) {
    self->committed = 1;
    uv_timer_start(&self->sync_timer, sync_cb, 0, 0);
  }
}

void ls_worker_listener_closed(void) {
  if (self != NULL && self->attached)
    uv_timer_start(&self->sync_timer, sync_cb, 0, 0);
}

void ls_worker_attach(ls_runtime_t *rt, ls_app_t *app) {
  if (self == NULL)
    return;
  self->rt = rt;
  self->app = app;
  app->loaded = worker_loaded;
  uv_poll_init(rt->loop, &self->cmd_poll, self->cmd_fd);
  uv_poll_start(&self->cmd_poll, UV_READABLE, cmd_cb);
  uv_unref((uv_handle_t *)&self->cmd_poll);
  uv_timer_init(rt->loop, &self->sync_timer);
  uv_unref((uv_handle_t *)&self->sync_timer);
  self->attached = 1;
}

void ls_worker_detach(void) {
  if (self == NULL || !self->attached)
    return;
  uv_close((uv_handle_t *)&self->cmd_poll, NULL);
  uv_close((uv_handle_t *)&self->sync_timer, NULL);
  self->attached = 0;
  ls_free(self->held, self->held_cap * sizeof *self->held);
  ls_free(self->reported, self->reported_cap * sizeof *self->reported);
  self->held = NULL;
  self->reported = NULL;
  self->nheld = self->held_cap = self->nreported = self->reported_cap = 0;
}

/* ---- listening ---------------------------------------------------------------------------- */

static void remember(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return;
  if (self->nheld == self->held_cap) {
    size_t cap = self->held_cap ? self->held_cap * 2 : 8;
    held_t *h = ls_realloc(self->held, self->held_cap * sizeof *h, cap * sizeof *h);
    if (h == NULL)
      return; /* not tracked: the master keeps the socket until it stops */
    self->held = h;
    self->held_cap = cap;
  }
  self->held[self->nheld].fd = fd;
  self->held[self->nheld].ino = (uint64_t)st.st_ino;
  self->nheld++;
}

/* Asks the master for the socket msg describes and waits for the answer. On success *fd is a
 * descriptor of it, this process's own. */
static int ask_master(ls_listen_msg_t *msg, int *fd) {
  int32_t err = 0;
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {&err, sizeof err};
  struct msghdr mh;
  struct cmsghdr *cm;
  struct pollfd p;
  ssize_t n;
  msg->type = LS_MSG_LISTEN;
  if (send(self->req_fd, msg, sizeof *msg, MSG_NOSIGNAL) < 0)
    return -errno;
  p.fd = self->req_fd;
  p.events = POLLIN;
  for (;;) {
    int r = poll(&p, 1, 10000);
    if (r > 0)
      break;
    if (r == 0)
      return UV_ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
  }
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  do
    n = recvmsg(self->req_fd, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  if (n != (ssize_t)sizeof err)
    return UV_EPIPE; /* the master went away */
  if (err != 0)
    return err;
  for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      memcpy(fd, CMSG_DATA(cm), sizeof *fd);
      remember(*fd);
      return 0;
    }
  }
  return UV_EPROTO;
}

/* The rank of a port-0 listener at `base` ("http://127.0.0.1:0") among this load's port-0
 * listeners of that scheme and host. `take` counts one more (a listen call); otherwise it is
 * the rank of the listen call in progress. Every worker runs the same script, so every
 * worker's n-th `port = 0` at an address gets the same rank, hence the same socket. */
static unsigned port0_rank(const char *base, int take) {
  ls_runtime_t *rt = self->rt;
  ls_gen_t *gen = rt->loading != NULL ? rt->loading : rt->gen;
  unsigned i, rank = 0;
  if (gen != NULL && gen->id != self->port0_gen) {
    self->port0_gen = gen->id;
    self->nport0 = 0;
  }
  for (i = 0; i < self->nport0; i++)
    rank += strcmp(self->port0[i], base) == 0;
  if ((take || rank == 0) && self->nport0 < sizeof self->port0 / sizeof self->port0[0]) {
    snprintf(self->port0[self->nport0++], sizeof self->port0[0], "%s", base);
    rank++;
  }
  return rank == 0 ? 1 : rank;
}

int ls_worker_port0_key(char *key, size_t size) {
  size_t used = strlen(key);
  if (self == NULL || !self->attached)
    return 0;
  snprintf(key + used, size - used, "#%u", port0_rank(key, 1));
  return 1;
}

/* Fills in the request for an IP address: the id is its URL, with the rank of ls_worker_port0_key
 * for port 0. */
static void ip_request(ls_listen_msg_t *msg, int kind, const char *scheme,
                       const struct sockaddr *addr) {
  size_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in);
  int port;
  memset(msg, 0, sizeof *msg);
  msg->kind = (char)kind;
  snprintf(msg->scheme, sizeof msg->scheme, "%s", scheme);
  memcpy(&msg->addr, addr, len);
  ls_addr_url(scheme, &msg->addr, msg->id, sizeof msg->id);
  port = addr->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)addr)->sin6_port)
                                     : ntohs(((const struct sockaddr_in *)addr)->sin_port);
  if (port == 0) {
    size_t used = strlen(msg->id);
    snprintf(msg->id + used, sizeof msg->id - used, "#%u", port0_rank(msg->id, 0));
  }
}

int ls_worker_bind_tcp(uv_tcp_t *tcp, const struct sockaddr *addr, const char *scheme) {
  ls_listen_msg_t msg;
  int fd, err;
  if (self == NULL || !self->attached)
    return uv_tcp_bind(tcp, addr, 0);
  ip_request(&msg, LS_SOCK_TCP, scheme, addr);
  err = ask_master(&msg, &fd);
  if (err == 0 && (err = uv_tcp_open(tcp, fd)) != 0)
    close(fd);
  return err;
}

int ls_worker_bind_udp(uv_udp_t *udp, const struct sockaddr *addr) {
  ls_listen_msg_t msg;
  int fd, err;
  if (self == NULL || !self->attached)
    return uv_udp_bind(udp, addr, 0);
  ip_request(&msg, LS_SOCK_UDP, "udp", addr);
  err = ask_master(&msg, &fd);
  if (err == 0 && (err = uv_udp_open(udp, fd)) != 0)
    close(fd);
  return err;
}

int ls_worker_bind_pipe(uv_pipe_t *pipe, const char *path) {
  ls_listen_msg_t msg;
  int fd, err;
  if (self == NULL || !self->attached) {
    struct stat st;
    /* A socket file left by an earlier run would make bind fail; nothing else is removed. */
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
      unlink(path);
    return uv_pipe_bind(pipe, path);
  }
  if (strlen(path) >= sizeof msg.path)
    return UV_ENAMETOOLONG;
  memset(&msg, 0, sizeof msg);
  msg.kind = LS_SOCK_UNIX;
  snprintf(msg.scheme, sizeof msg.scheme, "unix");
  snprintf(msg.id, sizeof msg.id, "unix:%s", path);
  memcpy(msg.path, path, strlen(path) + 1);
  err = ask_master(&msg, &fd);
  if (err == 0 && (err = uv_pipe_open(pipe, fd)) != 0)
    close(fd);
  return err;
}

void ls_worker_unlink_path(const char *path) {
  if (self == NULL)
    unlink(path);
}
