#include "connect.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "dns.h"
#include "alloc.h"
#include "errors.h"

/* The most addresses of one name that are tried. */
#define LS_CONNECT_MAX_ADDRS 16

typedef struct attempt_s {
  uv_tcp_t tcp;
  uv_connect_t req;
  ls_connect_t *owner;
  unsigned slot;                /* owner->attempts[slot] */
} attempt_t;

struct ls_connect_s {
  uv_loop_t *loop;
  ls_dns_t *lookup;             /* the name lookup in progress, or NULL */
  uv_timer_t delay;             /* the next attempt's start */
  ls_sockaddr_u addrs[LS_CONNECT_MAX_ADDRS];
  attempt_t *attempts[LS_CONNECT_MAX_ADDRS];
  unsigned naddrs, next;        /* addresses, and the next one to try */
  unsigned open;                /* handles not yet closed: the timer and the attempts */
  unsigned active;              /* attempts waiting for an answer */
  int last_err;
  unsigned char finished;       /* the winner is chosen, or every attempt failed */
  unsigned char cancelled;      /* the caller gave up: no callback */
  ls_connect_cb cb;
  void *data;
};

static void maybe_free(ls_connect_t *req) {
  if (req->open == 0)
    ls_free(req, sizeof *req);
}

static void delay_close_cb(uv_handle_t *h) {
  ls_connect_t *req = h->data;
  req->open--;
  maybe_free(req);
}

static void attempt_close_cb(uv_handle_t *h) {
  attempt_t *a = h->data;
  ls_connect_t *req = a->owner;
  ls_free(a, sizeof *a);
  req->open--;
  maybe_free(req);
}

static void attempt_close(attempt_t *a) {
  a->owner->attempts[a->slot] = NULL;
  uv_close((uv_handle_t *)&a->tcp, attempt_close_cb);
}

/* Closes the timer and every attempt; then the callback, unless cancelled. */
static void finish(ls_connect_t *req, int status, uv_os_sock_t fd) {
  unsigned i;
  req->finished = 1;
  uv_close((uv_handle_t *)&req->delay, delay_close_cb);
  for (i = 0; i < req->naddrs; i++)
    if (req->attempts[i] != NULL)
      attempt_close(req->attempts[i]);
  if (!req->cancelled)
    req->cb(req, status, fd, req->data);
  else if (status == 0)
    close(fd);
}

static void start_next(ls_connect_t *req);

static void connect_cb(uv_connect_t *cr, int status) {
  attempt_t *a = cr->data;
  ls_connect_t *req = a->owner;
  if (status == UV_ECANCELED || req->finished)
    return; /* closed by finish(); its close callback frees it */
  req->active--;
  if (status == 0) {
    /* The winner. Its socket is handed over as a descriptor of its own, since the handle
     * here cannot move into the caller's stream; the handle then closes with the rest. */
    uv_os_fd_t fd;
    int copy = -1;
    if (uv_fileno((uv_handle_t *)&a->tcp, &fd) == 0)
      copy = dup(fd);
    if (copy < 0) {
      finish(req, uv_translate_sys_error(errno), -1);
      return;
    }
    finish(req, 0, copy);
    return;
  }
  req->last_err = status;
  attempt_close(a);
  /* A failed attempt frees its turn: the next address starts now rather than when the delay
   * runs out, even while an earlier attempt still waits for an answer (an unanswered ::1,
   * then 127.0.0.1 refused: 127.0.0.2 need not wait). With no address left, start_next
   * reports the last error once nothing is in flight. */
  uv_timer_stop(&req->delay);
  start_next(req);
}

static void delay_cb(uv_timer_t *t) { start_next(t->data); }

/* Starts an attempt on the next address that takes one; with more left, the delay timer
 * starts the one after. No attempt left and none in flight: the last error is the answer. */
static void start_next(ls_connect_t *req) {
  while (req->next < req->naddrs) {
    unsigned slot = req->next++;
    attempt_t *a = ls_malloc(sizeof *a);
    int err;
    if (a == NULL) {
      req->last_err = LS_ENOMEM;
      continue;
    }
    memset(a, 0, sizeof *a);
    a->owner = req;
    a->slot = slot;
    uv_tcp_init(req->loop, &a->tcp);
    a->tcp.data = a;
    a->req.data = a;
    req->attempts[slot] = a;
    req->open++;
    err = uv_tcp_connect(&a->req, &a->tcp, &req->addrs[slot].sa, connect_cb);
    if (err != 0) {
      req->last_err = err;
      attempt_close(a);
      continue;
    }
    req->active++;
    if (req->next < req->naddrs)
      uv_timer_start(&req->delay, delay_cb, LS_CONNECT_ATTEMPT_DELAY_MS, 0);
    return;
  }
  if (req->active == 0)
    finish(req, req->last_err != 0 ? req->last_err : UV_EADDRNOTAVAIL, -1);
}

/* Orders the resolver's answer as RFC 8305 §4 asks: the first address's family first, then
 * the families alternating; within a family the resolver's order is kept. */
static void order_addresses(ls_connect_t *req, const struct addrinfo *res) {
  const struct addrinfo *by_family[2][LS_CONNECT_MAX_ADDRS], *ai;
  unsigned count[2] = {0, 0}, taken[2] = {0, 0};
  unsigned turn = 0; /* the family whose turn it is: 0 the first one seen, 1 the other */
  int first = 0;
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    unsigned f;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    if (first == 0)
      first = ai->ai_family;
    f = ai->ai_family == first ? 0 : 1;
    if (count[f] < LS_CONNECT_MAX_ADDRS)
      by_family[f][count[f]++] = ai;
  }
  while (req->naddrs < LS_CONNECT_MAX_ADDRS && (taken[0] < count[0] || taken[1] < count[1])) {
    if (taken[turn] < count[turn]) {
      ai = by_family[turn][taken[turn]++];
      memcpy(&req->addrs[req->naddrs++], ai->ai_addr, ls_sockaddr_size(ai->ai_addr));
    }
    turn = 1 - turn;
  }
}

static void lookup_cb(ls_dns_t *dns, int status, const struct addrinfo *res, void *data) {
  ls_connect_t *req = data;
  (void)dns;
  req->lookup = NULL;
  if (status < 0) {
    finish(req, status, -1);
    return;
  }
  order_addresses(req, res);
  start_next(req);
}

ls_connect_t *ls_connect_start(uv_loop_t *loop, const char *host, int port, ls_connect_cb cb,
                               void *data, int *err) {
  ls_connect_t *req = ls_malloc(sizeof *req);
  if (req == NULL) {
    *err = LS_ENOMEM;
    return NULL;
  }
  memset(req, 0, sizeof *req);
  req->loop = loop;
  req->cb = cb;
  req->data = data;
  uv_timer_init(loop, &req->delay);
  req->delay.data = req;
  req->open = 1;
  if (ls_addr_parse_literal(host, port, &req->addrs[0]) == 0) {
    /* A literal: no lookup. The attempt starts from the loop, so that the callback never
     * runs inside this call. */
    req->naddrs = 1;
    uv_timer_start(&req->delay, delay_cb, 0, 0);
  } else {
    req->lookup = ls_dns_resolve(loop, host, port, AF_UNSPEC, SOCK_STREAM, lookup_cb, req, err);
    if (req->lookup == NULL) {
      req->cancelled = 1;
      uv_close((uv_handle_t *)&req->delay, delay_close_cb);
      return NULL;
    }
  }
  *err = 0;
  return req;
}

void ls_connect_cancel(ls_connect_t *req) {
  req->cancelled = 1;
  if (req->lookup != NULL) {
    ls_dns_cancel(req->lookup);
    req->lookup = NULL;
  }
  if (!req->finished)
    finish(req, LS_ECLOSED, -1);
}
