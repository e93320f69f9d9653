/* Name lookups for the core's clients (TCP connects through connect.c, UDP sendto and
 * connect): uv_getaddrinfo on libuv's thread pool, with a cancel after which no callback
 * comes, so a caller that gives up (a timeout, a closed socket) can forget the request at
 * once. */
#ifndef LS_DNS_H
#define LS_DNS_H

#include <uv.h>

typedef struct ls_dns_s ls_dns_t;

/* Called once from the loop unless cancelled: status 0 with the resolver's answer (valid
 * during the call only), or a libuv error (res NULL). */
typedef void (*ls_dns_cb)(ls_dns_t *req, int status, const struct addrinfo *res, void *data);

/* Resolves host (a name) for port, limited to `family` (AF_UNSPEC: any) and `socktype`.
 * Returns the request, or NULL with *err set (LS_ENOMEM or libuv's error). */
ls_dns_t *ls_dns_resolve(uv_loop_t *loop, const char *host, int port, int family, int socktype,
                         ls_dns_cb cb, void *data, int *err);
/* Gives up: no callback; the request frees itself when the lookup thread is done with it. */
void ls_dns_cancel(ls_dns_t *req);

#endif
