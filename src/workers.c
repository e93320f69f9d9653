/* The --workers master: forks the workers, restarts them, owns the listening sockets, and
 * turns signals and file changes into commands. It runs no Lua. See workers.h.
 *
 * Its loop (a private uv_loop_t; the default loop is left for the workers, which are forks of
 * this process) watches a signalfd for SIGCHLD, SIGHUP, SIGTERM and SIGINT, the request
 * channel of each worker, restart and stop timers, and under --reload the files. No libuv
 * signal handle is used: a fork inherits libuv's process-wide signal state, and a worker must
 * not report its signals into the master's loop. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "alloc.h"
#include "log.h"
#include "watch.h"
#include "workers.h"
#include "workers_proto.h"

#define RESTART_MIN_MS 100     /* the first delay after a worker died while starting */
#define RESTART_MAX_MS 10000
#define STARTED_MS 1000        /* a worker that ran this long and was ready did not die starting */
#define STOP_MARGIN_MS 3000    /* after --grace, workers still running are killed */
#define MAX_HELD 256

typedef struct master_s master_t;

/* The master's end of a worker's request channel, for one incarnation of the worker. */
typedef struct link_s {
  uv_poll_t poll;
  master_t *m;
  struct slot_s *slot;
  int fd;
} link_t;

/* Worker number id (1..N) and its current process, if any. */
typedef struct slot_s {
  unsigned id;
  pid_t pid;              /* 0: not running */
  link_t *link;           /* its request channel */
  int cmd_fd;             /* its command channel */
  int ready;              /* its first generation committed */
  int finished;           /* exited 0 on its own: not restarted */
  uint64_t started_at;    /* loop time of the fork */
  unsigned failures;      /* deaths while starting, in a row */
  uv_timer_t restart;
  uint64_t held[MAX_HELD]; /* inodes of the sockets it last said it holds */
  size_t nheld;
} slot_t;

/* A listening socket the master holds. */
typedef struct sock_s {
  struct sock_s *next;
  char id[208];           /* see ls_listen_msg_t */
  unsigned slot;          /* the worker it is for (SO_REUSEPORT), or 0: shared by all */
  int fd;
  uint64_t ino;
  struct sockaddr_storage bound;
  char path[108];         /* a Unix socket's file, removed when the socket closes */
} sock_t;

struct master_s {
  uv_loop_t loop;
  unsigned count;
  slot_t *slots;
  sock_t *socks;
  int sig_fd;
  uv_poll_t sig_poll;
  uv_timer_t stop_timer;
  sigset_t old_mask;
  double grace;
  int watch;
  ls_watcher_t watcher;
  char *files;            /* the files being watched: "path\0path\0" */
  size_t files_len;
  int stopping;
  int ever_ready;         /* some worker once committed its first generation */
  int exit_code;
  pid_t pid;              /* the master's */
  int (*worker_main)(void *arg);
  void *arg;
  char *buf;              /* LS_MSG_MAX bytes for incoming messages */
};

static void start_worker(master_t *m, slot_t *s);
static void finish_if_done(master_t *m);

static unsigned running(const master_t *m) {
  unsigned i, n = 0;
  for (i = 0; i < m->count; i++)
    n += m->slots[i].pid != 0;
  return n;
}

static void send_cmd(slot_t *s, char cmd) {
  if (s->pid != 0 && s->cmd_fd >= 0)
    (void)send(s->cmd_fd, &cmd, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void broadcast(master_t *m, char cmd) {
  unsigned i;
  for (i = 0; i < m->count; i++)
    send_cmd(&m->slots[i], cmd);
}

/* ---- sockets ------------------------------------------------------------------------------ */

static void sock_close(master_t *m, sock_t *k) {
  sock_t **p;
  for (p = &m->socks; *p != NULL; p = &(*p)->next) {
    if (*p == k) {
      *p = k->next;
      break;
    }
  }
  close(k->fd);
  if (k->path[0] != '\0') {
    struct stat st;
    if (stat(k->path, &st) == 0 && S_ISSOCK(st.st_mode))
      unlink(k->path);
  }
  ls_free(k, sizeof *k);
}

static void close_all_socks(master_t *m) {
  while (m->socks != NULL)
    sock_close(m, m->socks);
}

/* Closes the sockets that are worker s's own (TCP and UDP), not the shared ones. */
static void close_slot_socks(master_t *m, const slot_t *s) {
  sock_t *k, *next;
  for (k = m->socks; k != NULL; k = next) {
    next = k->next;
    if (k->slot == s->id)
      sock_close(m, k);
  }
}

static int sock_held(const slot_t *s, uint64_t ino) {
  size_t i;
  for (i = 0; i < s->nheld; i++)
    if (s->held[i] == ino)
      return 1;
  return 0;
}

/* Closes the sockets no worker listens on any more (a reload dropped the listener, or the
 * script closed it). A worker's own socket is judged by its last report; a shared one only
 * when every running worker is ready and none holds it. A worker that is starting, or is
 * down, keeps its sockets: the next one asks for the same. */
static void close_unused(master_t *m) {
  sock_t *k = m->socks, *next;
  unsigned i;
  for (; k != NULL; k = next) {
    int used = 0, judged = 1;
    next = k->next;
    if (k->slot != 0) {
      slot_t *s = &m->slots[k->slot - 1];
      judged = s->pid != 0 && s->ready;
      used = sock_held(s, k->ino);
    } else {
      for (i = 0; i < m->count; i++) {
        slot_t *s = &m->slots[i];
        if (s->pid != 0 && !s->ready)
          judged = 0;
        if (s->pid != 0 && sock_held(s, k->ino))
          used = 1;
      }
    }
    if (judged && !used)
      sock_close(m, k);
  }
}

static sock_t *find_sock(master_t *m, const char *id, unsigned slot) {
  sock_t *k;
  for (k = m->socks; k != NULL; k = k->next)
    if (k->slot == slot && strcmp(k->id, id) == 0)
      return k;
  return NULL;
}

/* Opens the socket a worker asked for. For TCP and UDP, each worker gets its own socket in a
 * SO_REUSEPORT group (with port 0, the first one's port is the group's); a Unix-domain socket
 * is one for all. The first socket of an id prints its "listening on" line. */
static int open_sock(master_t *m, const ls_listen_msg_t *req, unsigned slot, sock_t **out) {
  sock_t *k, *sibling = NULL;
  int fd, one = 1, err = 0;
  socklen_t len;
  for (k = m->socks; k != NULL; k = k->next)
    if (strcmp(k->id, req->id) == 0)
      sibling = k;
  k = ls_malloc(sizeof *k);
  if (k == NULL)
    return UV_ENOMEM;
  memset(k, 0, sizeof *k);
  snprintf(k->id, sizeof k->id, "%s", req->id);
  k->slot = slot;
  if (req->kind == LS_SOCK_UNIX) {
    struct sockaddr_un un;
    struct stat st;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    snprintf(un.sun_path, sizeof un.sun_path, "%s", req->path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = -errno;
    } else {
      /* A socket file left by an earlier run would make bind fail; nothing else is removed. */
      if (stat(un.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(un.sun_path);
      if (bind(fd, (struct sockaddr *)&un, sizeof un) != 0 || listen(fd, 511) != 0)
        err = -errno;
      else
        snprintf(k->path, sizeof k->path, "%s", req->path);
    }
  } else {
    struct sockaddr_storage addr = req->addr;
    int family = addr.ss_family, stream = req->kind == LS_SOCK_TCP;
    socklen_t alen = family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                        : sizeof(struct sockaddr_in);
    if (sibling != NULL) /* port 0: the group's port */
      memcpy(&addr, &sibling->bound, alen);
    fd = socket(family, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = -errno;
    } else {
      int zero = 0;
      /* As libuv's uv_tcp_bind does: reuse addresses, and "::" also takes IPv4. */
      if (stream)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (stream && family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      if (slot != 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
      if (bind(fd, (struct sockaddr *)&addr, alen) != 0 || (stream && listen(fd, 511) != 0))
        err = -errno;
    }
  }
  if (err == 0) {
    struct stat st;
    len = sizeof k->bound;
    getsockname(fd, (struct sockaddr *)&k->bound, &len);
    fstat(fd, &st);
    k->ino = (uint64_t)st.st_ino;
  }
  if (err != 0) {
    if (fd >= 0)
      close(fd);
    ls_free(k, sizeof *k);
    return err;
  }
  k->fd = fd;
  k->next = m->socks;
  m->socks = k;
  if (sibling == NULL) {
    char url[sizeof k->id];
    if (req->kind == LS_SOCK_UNIX)
      snprintf(url, sizeof url, "unix:%s", req->path);
    else
      ls_addr_url(req->scheme, &k->bound, url, sizeof url);
    printf("listening on %s\n", url);
    fflush(stdout);
  }
  *out = k;
  return 0;
}

static void answer_listen(master_t *m, slot_t *s, const ls_listen_msg_t *req) {
  unsigned slot = req->kind == LS_SOCK_UNIX ? 0 : s->id;
  sock_t *k;
  int32_t err = 0;
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {&err, sizeof err};
  struct msghdr mh;
  if (m->stopping) {
    err = UV_ECANCELED;
  } else {
    k = find_sock(m, req->id, slot);
    if (k == NULL)
      err = open_sock(m, req, slot, &k);
  }
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (err == 0) {
    struct cmsghdr *cm;
    memset(control, 0, sizeof control);
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &k->fd, sizeof(int));
  }
  if (sendmsg(s->link->fd, &mh, MSG_NOSIGNAL) < 0)
    ls_log(LS_LOG_WARN, "cannot answer worker %u: %s", s->id, strerror(errno));
}

/* ---- the request channel ------------------------------------------------------------------ */

static void watch_changed(ls_watcher_t *w) {
  master_t *m = w->data;
  if (m->stopping)
    return;
  ls_log(LS_LOG_INFO, "a watched file changed: reloading the workers");
  broadcast(m, LS_CMD_RELOAD);
}

static void set_files(master_t *m, const char *files, size_t len) {
  const char *p;
  char *copy;
  if (!m->watch || (len == m->files_len && memcmp(files, m->files, len) == 0))
    return;
  copy = ls_malloc(len + 1);
  if (copy == NULL)
    return;
  memcpy(copy, files, len);
  copy[len] = '\0';
  ls_free(m->files, m->files_len + 1);
  m->files = copy;
  m->files_len = len;
  ls_watcher_clear(&m->watcher);
  for (p = copy; p < copy + len; p += strlen(p) + 1)
    if (*p != '\0')
      ls_watcher_add(&m->watcher, p);
}

static void link_close_cb(uv_handle_t *h) { ls_free(h->data, sizeof(link_t)); }

static void link_close(link_t *l) {
  if (l == NULL || uv_is_closing((uv_handle_t *)&l->poll))
    return;
  uv_close((uv_handle_t *)&l->poll, link_close_cb);
  close(l->fd); /* no longer polled: uv_close took it off the loop */
  l->fd = -1;
}

/* Reads every message waiting on a worker's request channel. */
static void link_read(link_t *l) {
  master_t *m = l->m;
  slot_t *s = l->slot;
  for (;;) {
    ssize_t n = recv(l->fd, m->buf, LS_MSG_MAX, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return;
    if (n <= 0) {
      uv_poll_stop(&l->poll); /* the worker closed it: it is exiting */
      return;
    }
    if (m->buf[0] == LS_MSG_LISTEN && (size_t)n == sizeof(ls_listen_msg_t)) {
      ls_listen_msg_t req;
      memcpy(&req, m->buf, sizeof req);
      req.id[sizeof req.id - 1] = '\0';
      req.scheme[sizeof req.scheme - 1] = '\0';
      req.path[sizeof req.path - 1] = '\0';
      answer_listen(m, s, &req);
    } else if (m->buf[0] == LS_MSG_READY || m->buf[0] == LS_MSG_SYNC) {
      size_t i, count = ((size_t)n - 1) / sizeof(uint64_t);
      if (count > MAX_HELD)
        count = MAX_HELD;
      for (i = 0; i < count; i++)
        memcpy(&s->held[i], m->buf + 1 + i * sizeof(uint64_t), sizeof(uint64_t));
      s->nheld = count;
      if (m->buf[0] == LS_MSG_READY) {
        s->ready = 1;
        m->ever_ready = 1;
      }
      if (!m->stopping)
        close_unused(m);
    } else if (m->buf[0] == LS_MSG_FILES) {
      set_files(m, m->buf + 1, (size_t)n - 1);
    }
  }
}

static void link_cb(uv_poll_t *poll, int status, int events) {
  link_t *l = poll->data;
  (void)events;
  if (status < 0) {
    uv_poll_stop(poll);
    return;
  }
  link_read(l);
}

/* ---- the workers -------------------------------------------------------------------------- */

/* In the child just forked: drops what belongs to the master and runs the worker. */
static void become_worker(master_t *m, slot_t *s, int req_fd, int cmd_fd) {
  sock_t *k;
  unsigned i;
  /* Never outlive the master: its death sends SIGTERM (a graceful stop). It may already have
   * died between fork and prctl. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != m->pid)
    _exit(1);
  close(m->sig_fd);
  close(uv_backend_fd(&m->loop));
  for (k = m->socks; k != NULL; k = k->next)
    close(k->fd);
  for (i = 0; i < m->count; i++) {
    if (m->slots[i].link != NULL && m->slots[i].link->fd >= 0)
      close(m->slots[i].link->fd);
    if (m->slots[i].cmd_fd >= 0)
      close(m->slots[i].cmd_fd);
  }
  sigprocmask(SIG_SETMASK, &m->old_mask, NULL);
  signal(SIGPIPE, SIG_DFL);
  ls__worker_become(s->id, m->count, req_fd, cmd_fd, m->watch);
  exit(m->worker_main(m->arg));
}

static void restart_cb(uv_timer_t *t) {
  slot_t *s = t->data;
  master_t *m = s->restart.loop->data;
  if (!m->stopping && s->pid == 0)
    start_worker(m, s);
}

static void schedule_restart(master_t *m, slot_t *s, uint64_t delay_ms) {
  (void)m;
  uv_timer_start(&s->restart, restart_cb, delay_ms, 0);
}

static void start_worker(master_t *m, slot_t *s) {
  int req[2] = {-1, -1}, cmd[2] = {-1, -1};
  pid_t pid;
  link_t *l;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, req) != 0 ||
      socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cmd) != 0) {
    ls_log(LS_LOG_ERROR, "cannot start worker %u: %s", s->id, strerror(errno));
    if (req[0] >= 0) {
      close(req[0]);
      close(req[1]);
    }
    schedule_restart(m, s, RESTART_MAX_MS);
    return;
  }
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid == 0)
    become_worker(m, s, req[1], cmd[1]);
  close(req[1]);
  close(cmd[1]);
  if (pid < 0) {
    ls_log(LS_LOG_ERROR, "cannot start worker %u: %s", s->id, strerror(errno));
    close(req[0]);
    close(cmd[0]);
    schedule_restart(m, s, RESTART_MAX_MS);
    return;
  }
  l = ls_malloc(sizeof *l);
  if (l == NULL) {
    close(req[0]);
  } else {
    l->m = m;
    l->slot = s;
    l->fd = req[0];
    uv_poll_init(&m->loop, &l->poll, l->fd);
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, link_cb);
  }
  s->link = l;
  s->cmd_fd = cmd[0];
  s->pid = pid;
  s->ready = 0;
  s->nheld = 0;
  s->started_at = uv_now(&m->loop);
}

static void describe_status(int status, char *out, size_t size) {
  if (WIFEXITED(status)) {
    snprintf(out, size, "exited with status %d", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    snprintf(out, size, "was killed by signal %d (%s)%s", WTERMSIG(status),
             strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
  } else {
    snprintf(out, size, "ended (status %d)", status);
  }
}

/* A worker ended: restart it (at once if it had been serving, after a growing delay if it
 * died while starting), unless the master is stopping or the worker finished by itself. */
static void worker_exited(master_t *m, slot_t *s, int status) {
  uint64_t lived = uv_now(&m->loop) - s->started_at, delay;
  pid_t pid = s->pid;
  char how[128];
  if (s->link != NULL) {
    link_read(s->link); /* what it said before it died (ready, say) */
    link_close(s->link);
    s->link = NULL;
  }
  close(s->cmd_fd);
  s->cmd_fd = -1;
  s->pid = 0;
  describe_status(status, how, sizeof how);
  if (m->stopping) {
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      ls_log(LS_LOG_WARN, "worker %u (pid %d) %s while stopping", s->id, (int)pid, how);
    finish_if_done(m);
    return;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    /* srv.stop(), a SIGTERM sent to it alone, or a script that had nothing left to do. Its
     * own sockets go: nobody would accept on them. */
    ls_log(LS_LOG_INFO, "worker %u (pid %d) finished (exit status 0); not restarted", s->id,
           (int)pid);
    s->finished = 1;
    close_slot_socks(m, s);
    finish_if_done(m);
    return;
  }
  if (!s->ready && !m->ever_ready) {
    /* The first start failed (a script error, an address in use): as a single process
     * would, give up with status 1 instead of retrying forever. */
    ls_log(LS_LOG_ERROR, "worker %u (pid %d) %s while starting; stopping", s->id, (int)pid, how);
    m->exit_code = 1;
    m->stopping = 1;
    close_all_socks(m);
    broadcast(m, LS_CMD_STOP_NOW);
    finish_if_done(m);
    return;
  }
  if (s->ready && lived >= STARTED_MS)
    s->failures = 0;
  else
    s->failures++;
  delay = 0;
  if (s->failures > 0) {
    unsigned shift = s->failures - 1 < 10 ? s->failures - 1 : 10;
    delay = (uint64_t)RESTART_MIN_MS << shift;
    if (delay > RESTART_MAX_MS)
      delay = RESTART_MAX_MS;
  }
  if (delay == 0) {
    ls_log(LS_LOG_ERROR, "worker %u (pid %d) %s; restarting it", s->id, (int)pid, how);
  } else {
    ls_log(LS_LOG_ERROR, "worker %u (pid %d) %s while starting; restarting it in %.1f s",
           s->id, (int)pid, how, (double)delay / 1000);
    /* Connections the kernel gives its sockets meanwhile would wait for it: close them, so
     * that the other workers' sockets take all new connections until it is back. */
    close_slot_socks(m, s);
  }
  schedule_restart(m, s, delay);
}

static void reap(master_t *m) {
  for (;;) {
    int status;
    unsigned i;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0)
      return;
    for (i = 0; i < m->count; i++)
      if (m->slots[i].pid == pid)
        worker_exited(m, &m->slots[i], status);
  }
}

/* ---- stopping ----------------------------------------------------------------------------- */

static void finish_if_done(master_t *m) {
  unsigned i;
  if (running(m) != 0)
    return;
  if (!m->stopping) {
    for (i = 0; i < m->count; i++)
      if (!m->slots[i].finished)
        return; /* one is waiting to restart */
  }
  uv_stop(&m->loop);
}

static void stop_timer_cb(uv_timer_t *t) {
  master_t *m = t->data;
  unsigned i;
  for (i = 0; i < m->count; i++) {
    if (m->slots[i].pid != 0) {
      ls_log(LS_LOG_WARN, "worker %u (pid %d) did not stop in time; killing it", m->slots[i].id,
             (int)m->slots[i].pid);
      kill(m->slots[i].pid, SIGKILL);
    }
  }
}

/* SIGTERM: the workers stop accepting and finish what runs, within --grace. SIGINT, or a
 * second signal: they stop at once. The sockets close now, so that new connections are
 * refused rather than left waiting. */
static void stop(master_t *m, int graceful) {
  unsigned i;
  uint64_t wait_ms;
  if (m->stopping)
    graceful = 0;
  m->stopping = 1;
  close_all_socks(m);
  for (i = 0; i < m->count; i++)
    uv_timer_stop(&m->slots[i].restart);
  broadcast(m, graceful ? LS_CMD_STOP : LS_CMD_STOP_NOW);
  wait_ms = (graceful ? (uint64_t)(m->grace * 1000) : 0) + STOP_MARGIN_MS;
  uv_timer_start(&m->stop_timer, stop_timer_cb, wait_ms, 0);
  finish_if_done(m);
}

static void signal_cb(uv_poll_t *poll, int status, int events) {
  master_t *m = poll->data;
  struct signalfd_siginfo si;
  (void)status;
  (void)events;
  while (read(m->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
    switch (si.ssi_signo) {
    case SIGCHLD:
      reap(m);
      break;
    case SIGHUP:
      if (!m->stopping) {
        ls_log(LS_LOG_INFO, "SIGHUP: reloading the workers");
        broadcast(m, LS_CMD_RELOAD);
      }
      break;
    case SIGTERM:
      stop(m, 1);
      break;
    case SIGINT:
      stop(m, 0);
      break;
    default:
      break;
    }
  }
}

/* ---- running ------------------------------------------------------------------------------ */

int ls_workers_run(const ls_workers_opts_t *opts, int (*worker_main)(void *arg), void *arg) {
  master_t m;
  sigset_t set;
  unsigned i;
  memset(&m, 0, sizeof m);
  m.pid = getpid();
  m.count = opts->count;
  m.grace = opts->grace;
  m.watch = opts->watch;
  m.worker_main = worker_main;
  m.arg = arg;
  m.buf = ls_malloc(LS_MSG_MAX);
  m.slots = ls_malloc(m.count * sizeof *m.slots);
  if (m.buf == NULL || m.slots == NULL || uv_loop_init(&m.loop) != 0) {
    fputs("luasrv: cannot start the master process\n", stderr);
    return 1;
  }
  m.loop.data = &m;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  /* Inherited dispositions (a shell ignores SIGINT in background jobs) must not hide them. */
  signal(SIGCHLD, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  sigprocmask(SIG_BLOCK, &set, &m.old_mask);
  signal(SIGPIPE, SIG_IGN);
  m.sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (m.sig_fd < 0) {
    fprintf(stderr, "luasrv: cannot watch signals: %s\n", strerror(errno));
    return 1;
  }
  uv_poll_init(&m.loop, &m.sig_poll, m.sig_fd);
  m.sig_poll.data = &m;
  uv_poll_start(&m.sig_poll, UV_READABLE, signal_cb);
  uv_timer_init(&m.loop, &m.stop_timer);
  m.stop_timer.data = &m;
  uv_unref((uv_handle_t *)&m.stop_timer);
  if (m.watch)
    ls_watcher_init(&m.watcher, &m.loop, watch_changed, &m);
  memset(m.slots, 0, m.count * sizeof *m.slots);
  for (i = 0; i < m.count; i++) {
    slot_t *s = &m.slots[i];
    s->id = i + 1;
    s->cmd_fd = -1;
    uv_timer_init(&m.loop, &s->restart);
    s->restart.data = s;
  }
  for (i = 0; i < m.count; i++)
    start_worker(&m, &m.slots[i]);
  uv_run(&m.loop, UV_RUN_DEFAULT);

  close_all_socks(&m);
  for (i = 0; i < m.count; i++) {
    link_close(m.slots[i].link);
    uv_close((uv_handle_t *)&m.slots[i].restart, NULL);
  }
  uv_close((uv_handle_t *)&m.sig_poll, NULL);
  uv_close((uv_handle_t *)&m.stop_timer, NULL);
  if (m.watch)
    ls_watcher_close(&m.watcher);
  uv_run(&m.loop, UV_RUN_DEFAULT);
  uv_loop_close(&m.loop);
  close(m.sig_fd);
  sigprocmask(SIG_SETMASK, &m.old_mask, NULL);
  ls_free(m.files, m.files_len + 1);
  ls_free(m.slots, m.count * sizeof *m.slots);
  ls_free(m.buf, LS_MSG_MAX);
  fflush(stdout);
  return m.exit_code;
}
