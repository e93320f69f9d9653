/* --workers: one master process that runs no Lua, and N worker processes that each run the
 * script on their own loop.
 *
 * The master forks the workers, keeps them alive (a worker that dies is restarted, with an
 * exponential backoff when it dies while starting), passes SIGHUP and --reload changes on as
 * reloads, and SIGTERM/SIGINT as stops. It also owns the listening sockets: when a worker's
 * script calls listen, the worker asks the master over a Unix socket for the socket of that
 * address, and the master opens it the first time (and prints "listening on ...") and hands a
 * descriptor over (SCM_RIGHTS) every time. So `port = 0` means one port, a restarted worker
 * gets the very socket its predecessor had, and connections waiting in it are not lost. TCP
 * and UDP listeners get one socket per worker in a SO_REUSEPORT group, so the kernel spreads
 * new connections evenly; a Unix-domain listener is one socket shared by every worker (see
 * docs/architecture.md, "Workers", for the measurements behind that choice).
 *
 * The worker side: ls_worker_attach connects a worker's runtime to the master's commands, and
 * the ls_worker_bind_* functions are what listeners call instead of binding themselves. Outside
 * a worker (a single process, the module under a stock interpreter) they simply bind. */
#ifndef LS_WORKERS_H
#define LS_WORKERS_H

#include <uv.h>

#include "reload.h"
#include "runtime.h"

typedef struct ls_workers_opts_s {
  unsigned count; /* workers, at least 1 */
  double grace;   /* seconds a graceful stop may take (--grace) */
  int watch;      /* --reload: watch the files the workers report */
} ls_workers_opts_t;

/* Runs the master until the workers are gone; returns the exit status for the command. Each
 * worker is a fork of the calling process that runs worker_main(arg) and exits with what it
 * returns; worker_main sets up its own runtime and calls ls_worker_attach. */
int ls_workers_run(const ls_workers_opts_t *opts, int (*worker_main)(void *arg), void *arg);

/* This process's worker number, 1..N, or 0 when it is not a worker; and N (1 if not). */
unsigned ls_worker_id(void);
unsigned ls_worker_count(void);

/* In a worker: takes commands from the master on rt's loop (reload the app, stop gracefully
 * or at once; a master that went away stops the worker gracefully) and reports to it after
 * each load (started; the files to watch under --reload; the sockets still in use). Does
 * nothing outside a worker. */
void ls_worker_attach(ls_runtime_t *rt, ls_app_t *app);
/* Closes what ls_worker_attach opened (the loop must run afterwards to free it). */
void ls_worker_detach(void);
/* Called when a listener closes: the master is told, on the next turn of the loop, which of
 * its sockets this worker still uses, so that it can close the ones nobody listens on. */
void ls_worker_listener_closed(void);

/* The key of a listener on port 0 (see ls_addr_key): in a worker, appends "#n" to `key`
 * ("http://127.0.0.1:0#2" for the second port-0 HTTP listener on that host in this load) and
 * returns 1, so that a reload takes the listener over as it does for a fixed port (the
 * master's socket, hence the port, stays the same). Elsewhere returns 0: port 0 is never
 * kept. */
int ls_worker_port0_key(char *key, size_t size);
/* Listeners call these instead of binding. In a worker they ask the master for the socket of
 * the address and open it in the handle (already initialised, not yet bound); elsewhere they
 * bind. `scheme` names the listener in the master's "listening on" line ("tcp", "http").
 * Return 0 or a negative libuv error code (the bind's, when the master could not bind). */
int ls_worker_bind_tcp(uv_tcp_t *tcp, const struct sockaddr *addr, const char *scheme);
int ls_worker_bind_udp(uv_udp_t *udp, const struct sockaddr *addr);
/* A Unix-domain socket at `path`; outside a worker a stale socket file there is removed
 * first. */
int ls_worker_bind_pipe(uv_pipe_t *pipe, const char *path);
/* Removes a Unix-domain listener's socket file when it closes, except in a worker: there the
 * file belongs to the master's socket, which other workers still use. */
void ls_worker_unlink_path(const char *path);

#endif
