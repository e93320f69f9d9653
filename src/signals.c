#include "signals.h"

#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static ls_runtime_t *signal_rt;
static atomic_uint signals_received; /* stop signals the process got */
static atomic_uint signals_taken;    /* of those, how many the loop has acted on */
static atomic_int interrupted;       /* a SIGINT was among them */
static unsigned backstop_s;          /* seconds a graceful stop may take before the backstop */
static int installed;

static void say(const char *msg) {
  ssize_t n = write(STDERR_FILENO, msg, strlen(msg));
  (void)n;
}

/* Async-signal-safe only: atomics, write, alarm, _exit and uv_async_send (which libuv
 * documents as safe from a signal handler). */
static void on_stop_signal(int sig) {
  unsigned n = atomic_fetch_add(&signals_received, 1) + 1;
  if (sig == SIGINT)
    atomic_store(&interrupted, 1);
  if (n >= 2 && atomic_load(&signals_taken) + 1 < n) {
    say("luasrv: second stop signal while the loop is blocked (a handler that does not "
        "yield?): exiting now\n");
    _exit(128 + sig);
  }
  alarm(n == 1 && sig == SIGTERM ? backstop_s : 2);
  uv_async_send(&signal_rt->stop_async);
}

static void on_backstop(int sig) {
  (void)sig;
  say("luasrv: the stop did not finish in time (a handler that does not yield?): exiting now\n");
  _exit(1);
}

static void stop_async_cb(uv_async_t *async) {
  ls_runtime_t *rt = async->data;
  unsigned n = atomic_load(&signals_received);
  atomic_store(&signals_taken, n);
  /* SIGTERM (a service manager) finishes running handlers; SIGINT (Ctrl-C at a terminal)
   * stops at once, as does a second signal (ls_runtime_stop stops at once when stopping). */
  ls_runtime_stop(rt, !atomic_load(&interrupted) && n == 1);
}

int ls_signals_start(ls_runtime_t *rt) {
  struct sigaction sa;
  int err;
  if (installed)
    return 0;
  err = uv_async_init(rt->loop, &rt->stop_async, stop_async_cb);
  if (err != 0)
    return err;
  rt->stop_async.data = rt;
  /* The watcher alone must not keep a finished script running. */
  uv_unref((uv_handle_t *)&rt->stop_async);
  signal_rt = rt;
  backstop_s = (unsigned)ceil(rt->grace) + 2;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_stop_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_backstop;
  sigaction(SIGALRM, &sa, NULL);
  installed = 1;
  return 0;
}

void ls_signals_close(ls_runtime_t *rt) {
  if (!installed || signal_rt != rt)
    return;
  alarm(0);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGALRM, SIG_DFL);
  uv_close((uv_handle_t *)&rt->stop_async, NULL);
  signal_rt = NULL;
  installed = 0;
}
