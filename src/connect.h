/* Outbound TCP connections, in one place for every client in the core (srv.tcp.connect now;
 * the HTTP client, WebSocket and Redis later): the name lookup, then RFC 8305 "Happy
 * Eyeballs". The resolver's addresses are tried with the families interleaved (the first
 * family of the answer first), each on a handle of its own; the next attempt starts as soon as
 * any attempt fails, or after the Connection Attempt Delay (250 ms) without an answer; the
 * first to connect wins and every other attempt is closed. So a name that resolves to ::1 and
 * 127.0.0.1 (localhost on a stock Debian) reaches a server that listens on either.
 *
 * The caller gets the winner's socket as a file descriptor of its own, to open on its stream's
 * handle (uv_tcp_open), or an error: the last attempt's, or the lookup's. */
#ifndef LS_CONNECT_H
#define LS_CONNECT_H

#include <stdint.h>
#include <uv.h>

/* How long an attempt may go unanswered before the next address is tried as well. */
#define LS_CONNECT_ATTEMPT_DELAY_MS 250

typedef struct ls_connect_s ls_connect_t;

/* Called once, from the loop, unless the connect was cancelled first: status 0 with `fd` a
 * connected socket the callee now owns, or a libuv error (fd is -1). */
typedef void (*ls_connect_cb)(ls_connect_t *req, int status, uv_os_sock_t fd, void *data);

/* Starts connecting to host (a name or an IPv4/IPv6 literal) and port. Returns a request the
 * caller may cancel until its callback has run, or NULL with *err set (LS_ENOMEM, a libuv
 * error for a lookup that cannot start). */
ls_connect_t *ls_connect_start(uv_loop_t *loop, const char *host, int port, ls_connect_cb cb,
                               void *data, int *err);
/* Gives up: the callback will not run; the request frees itself once its handles have
 * closed. Only before the callback has run. */
void ls_connect_cancel(ls_connect_t *req);

#endif
