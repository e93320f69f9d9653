#include "dns.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "errors.h"

struct ls_dns_s {
  uv_getaddrinfo_t req;
  ls_dns_cb cb;
  void *data;
  int cancelled;
};

static void dns_cb(uv_getaddrinfo_t *gai, int status, struct addrinfo *res) {
  ls_dns_t *req = gai->data;
  if (!req->cancelled)
    req->cb(req, status, status == 0 ? res : NULL, req->data);
  if (res != NULL)
    uv_freeaddrinfo(res);
  ls_free(req, sizeof *req);
}

ls_dns_t *ls_dns_resolve(uv_loop_t *loop, const char *host, int port, int family, int socktype,
                         ls_dns_cb cb, void *data, int *err) {
  ls_dns_t *req = ls_malloc(sizeof *req);
  struct addrinfo hints;
  char service[16];
  if (req == NULL) {
    *err = LS_ENOMEM;
    return NULL;
  }
  memset(req, 0, sizeof *req);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family;
  hints.ai_socktype = socktype;
  snprintf(service, sizeof service, "%d", port);
  req->cb = cb;
  req->data = data;
  req->req.data = req;
  *err = uv_getaddrinfo(loop, &req->req, dns_cb, host, service, &hints);
  if (*err != 0) {
    ls_free(req, sizeof *req);
    return NULL;
  }
  return req;
}

void ls_dns_cancel(ls_dns_t *req) {
  req->cancelled = 1;
  uv_cancel((uv_req_t *)&req->req); /* if it has not started; else its callback is ignored */
}
